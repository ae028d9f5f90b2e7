//! `strom`: the Strom server and its tools in one binary.
//!
//! Every command but `server` is a Kafka client (librdkafka), so the tools
//! work against Apache Kafka too. Errors are one line on stderr and a
//! non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod acl;
mod client_tls;
mod cluster;
mod group;
mod kafka;
mod output;
mod perf;
mod quota;
mod raw;
mod server;
mod topic;
mod user;

use kafka::ConnectOpts;
use output::Format;

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "Strom: a Kafka-compatible event-streaming platform"
)]
struct Cli {
    #[command(flatten)]
    connect: ConnectOpts,
    /// Output format: `table` (default) or `json`; `topic consume` also takes
    /// a template such as `%k=%v (%p@%o)`.
    #[arg(long, global = true)]
    format: Option<String>,
    /// Same as `--format json`.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. With no arguments: one node on localhost:9092, data in ./strom-data.
    Server {
        /// A Kafka server.properties file.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Override one config key (repeatable): --override log.dirs=/data
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Create, inspect, write to and read from topics.
    #[command(subcommand)]
    Topic(topic::TopicCmd),
    /// Brokers, controller, health and broker configs.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Consumer groups: members, committed offsets, lag; reset and delete.
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Benchmarks on librdkafka, like kafka-producer-perf-test / kafka-consumer-perf-test.
    #[command(subcommand)]
    Perf(perf::PerfCmd),
    /// ACLs: add, list, remove (like kafka-acls).
    #[command(subcommand)]
    Acl(acl::AclCmd),
    /// Client quotas: alter, describe (like kafka-configs --entity-type users|clients).
    #[command(subcommand)]
    Quota(quota::QuotaCmd),
    /// SCRAM users: create, delete, list (AlterUserScramCredentials).
    #[command(subcommand)]
    User(user::UserCmd),
}

/// What a client command gets: where the cluster is and how to print.
pub struct Ctx {
    pub connect: ConnectOpts,
    pub format: Format,
}

/// Applies `--command-config` and sets up the raw client's TLS (client
/// commands only).
fn client_setup(mut connect: ConnectOpts, is_server: bool) -> anyhow::Result<ConnectOpts> {
    if !is_server {
        connect.load_command_config()?;
        client_tls::install(&connect.props)?;
    }
    Ok(connect)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_server = matches!(cli.command, Command::Server { .. });
    // Client commands stay quiet unless RUST_LOG asks: librdkafka's own
    // connection errors would otherwise repeat what the one-line error says.
    // openraft logs every failed replication attempt and heartbeat to an
    // unreachable peer (ERROR and WARN, every 500 ms); strom-metadata logs it
    // once per 10 s instead.
    let default_filter = if is_server {
        "info,openraft::replication=off,openraft::engine::handler::replication_handler=error"
    } else {
        "off"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let ctx = Ctx {
        connect: match client_setup(cli.connect, is_server) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("strom: {e:#}");
                return ExitCode::from(2);
            }
        },
        format: Format::parse(cli.format.as_deref(), cli.json),
    };
    let result = match cli.command {
        Command::Server { config, overrides } => return server::run(config, overrides),
        Command::Topic(cmd) => topic::run(&ctx, cmd),
        Command::Cluster(cmd) => cluster::run(&ctx, cmd),
        Command::Group(cmd) => group::run(&ctx, cmd),
        Command::Perf(cmd) => perf::run(&ctx, cmd),
        Command::User(cmd) => user::run(&ctx, cmd),
        Command::Quota(cmd) => quota::run(&ctx, cmd),
        Command::Acl(cmd) => acl::run(&ctx, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("strom: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
