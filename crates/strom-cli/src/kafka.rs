//! Client plumbing shared by the commands: the global connection options,
//! librdkafka configs built from them, and errors phrased for a person.
//!
//! Every command except `server` is a plain Kafka client (librdkafka), so it
//! works against Apache Kafka as well as Strom.

use std::net::ToSocketAddrs;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::ClientConfig;

/// Connection options every client command takes.
#[derive(Args, Clone, Debug)]
pub struct ConnectOpts {
    /// Bootstrap brokers, `host:port[,host:port…]` (also `--bootstrap-server`,
    /// as Kafka's tools spell it).
    #[arg(
        long,
        short = 'b',
        visible_alias = "bootstrap-server",
        alias = "bootstrap",
        global = true,
        env = "STROM_BROKERS",
        default_value = "localhost:9092"
    )]
    pub brokers: String,
    /// A client property, repeatable: `-X brokers=host:port` or any librdkafka
    /// property (`-X security.protocol=SSL`, `-X debug=protocol`).
    #[arg(
        short = 'X',
        long = "property",
        value_name = "KEY=VALUE",
        global = true
    )]
    pub props: Vec<String>,
    /// How long to wait for the cluster before giving up, in seconds.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub timeout: f64,
    /// A client properties file, as Kafka's tools take it
    /// (`security.protocol=SSL`, `ssl.truststore.location=…`); `-X` wins.
    #[arg(long = "command-config", value_name = "FILE", global = true)]
    pub command_config: Option<std::path::PathBuf>,
}

impl ConnectOpts {
    /// Puts the `--command-config` file's properties before the `-X` ones
    /// (later entries win).
    pub fn load_command_config(&mut self) -> Result<()> {
        let Some(path) = &self.command_config else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--command-config: cannot read {}", path.display()))?;
        let mut props: Vec<String> = strom_broker::config::parse_properties(&text)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        props.append(&mut self.props);
        self.props = props;
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }

    /// The bootstrap list after `-X brokers=…` overrides.
    pub fn bootstrap(&self) -> String {
        self.props
            .iter()
            .filter_map(|p| p.split_once('='))
            .filter(|(k, _)| k.trim() == "brokers" || k.trim() == "bootstrap.servers")
            .map(|(_, v)| v.trim().to_string())
            .next_back()
            .unwrap_or_else(|| self.brokers.clone())
    }

    /// A librdkafka config: bootstrap servers, quiet logging, then every
    /// `-X` property.
    pub fn config(&self) -> Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("client.id", "strom-cli")
            .set("log.connection.close", "false")
            // A bad address must fail in seconds, not after librdkafka's
            // default reconnect back-off dance.
            .set("socket.connection.setup.timeout.ms", "5000");
        apply_props(&mut c, &self.props)?;
        Ok(c)
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.config()?
            .create()
            .map_err(|e| anyhow!("cannot create the admin client: {e}"))
    }

    pub fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout()))
            .operation_timeout(Some(self.timeout()))
    }

    /// A consumer for metadata and offset queries (no group).
    pub fn metadata_client(&self) -> Result<BaseConsumer> {
        self.config()?
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| anyhow!("cannot create the client: {e}"))
    }

    /// Cluster metadata (one topic or all), with a person-readable error when
    /// the cluster cannot be reached.
    pub fn metadata(&self, client: &BaseConsumer, topic: Option<&str>) -> Result<Metadata> {
        client
            .fetch_metadata(topic, self.timeout())
            .map_err(|e| self.unreachable(e))
    }

    /// Turns a failed first request into "cannot reach …", probing the
    /// bootstrap addresses so the message says why.
    pub fn unreachable(&self, e: KafkaError) -> anyhow::Error {
        let bootstrap = self.bootstrap();
        let probe = probe_tcp(&bootstrap, self.timeout().min(Duration::from_secs(3)));
        match probe {
            Err(why) => anyhow!("cannot reach the cluster at {bootstrap}: {why}"),
            Ok(()) => anyhow!("no answer from the cluster at {bootstrap}: {e}"),
        }
    }
}

/// Applies `key=value` properties to a librdkafka config (`brokers` is the
/// bootstrap list, handled by [`ConnectOpts::bootstrap`]).
pub fn apply_props(c: &mut ClientConfig, props: &[String]) -> Result<()> {
    for p in props {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("property {p:?} is not KEY=VALUE"))?;
        let k = k.trim();
        if k == "brokers" {
            c.set("bootstrap.servers", v.trim());
        } else {
            c.set(k, v.trim());
        }
    }
    Ok(())
}

/// Tries a TCP connection to each bootstrap address; Ok if any accepts.
fn probe_tcp(bootstrap: &str, timeout: Duration) -> std::result::Result<(), String> {
    let mut last = String::from("no address given");
    for hp in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let hp = hp.rsplit_once("://").map_or(hp, |(_, a)| a);
        let addrs = match hp.to_socket_addrs() {
            Ok(a) => a,
            Err(e) => {
                last = format!("cannot resolve {hp}: {e}");
                continue;
            }
        };
        for a in addrs {
            match std::net::TcpStream::connect_timeout(&a, timeout) {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
    }
    Err(last)
}

/// Runs an admin future to completion on a small runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    Ok(rt.block_on(f))
}

/// Fails with "unknown topic" unless `topic` exists; returns its partition
/// count.
pub fn require_topic(opts: &ConnectOpts, client: &BaseConsumer, topic: &str) -> Result<usize> {
    let md = opts.metadata(client, Some(topic))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("unknown topic '{topic}'");
    };
    if let Some(e) = t.error() {
        let e = rdkafka::types::RDKafkaErrorCode::from(e);
        if e == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
            || e == rdkafka::types::RDKafkaErrorCode::UnknownTopic
        {
            bail!("unknown topic '{topic}'");
        }
        bail!("topic '{topic}': {e}");
    }
    if t.partitions().is_empty() {
        bail!("unknown topic '{topic}'");
    }
    Ok(t.partitions().len())
}

/// Parses `acks` as librdkafka takes it.
pub fn acks(v: &str) -> Result<&'static str> {
    Ok(match v {
        "all" | "-1" => "all",
        "1" => "1",
        "0" => "0",
        _ => bail!("--acks must be all, -1, 0 or 1 (got {v:?})"),
    })
}

/// Checks a compression codec name.
pub fn compression(v: &str) -> Result<&str> {
    match v {
        "none" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(v),
        _ => bail!("--compression must be none, gzip, snappy, lz4 or zstd (got {v:?})"),
    }
}

/// The partitions of `topic` and their `(low, high)` watermarks.
pub fn watermarks(
    opts: &ConnectOpts,
    client: &BaseConsumer,
    topic: &str,
    partitions: usize,
) -> Result<Vec<(i64, i64)>> {
    (0..partitions as i32)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, opts.timeout())
                .map_err(|e| anyhow!("cannot read the offsets of {topic}-{p}: {e}"))
        })
        .collect()
}

/// The cluster's controller id, or -1 if unknown.
pub fn controller_id<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    timeout: Duration,
) -> i32 {
    // SAFETY: the pointer is the live handle owned by `client`; the call only
    // reads cached metadata (or waits for it up to timeout_ms).
    unsafe {
        rdkafka::bindings::rd_kafka_controllerid(client.native_ptr(), timeout.as_millis() as i32)
    }
}
