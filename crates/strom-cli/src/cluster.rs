//! `strom cluster …`: brokers and controller, health, broker configs, log
//! directories.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use rdkafka::admin::{AlterConfig, ResourceSpecifier};
use rdkafka::client::Client;
use rdkafka::consumer::Consumer;
use serde::Serialize;
use serde_json::json;

use crate::kafka;
use crate::output::{print_json, Table};
use crate::topic::{describe_configs, kv};
use crate::Ctx;

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Cluster id, controller and brokers.
    Info,
    /// Brokers, controller, under-replicated and offline partitions; exits 1
    /// when unhealthy.
    Health,
    /// Broker configs.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Log directories and their sizes (DescribeLogDirs).
    Logdirs {
        /// Broker id (default: every broker).
        #[arg(long)]
        broker: Option<i32>,
    },
    /// Every partition's leader, replicas and ISR, and whether it is
    /// under-replicated or offline.
    Partitions {
        /// Only these topics (default: every topic, internal ones included).
        #[arg(long = "topic", short = 't')]
        topics: Vec<String>,
        /// Only partitions whose ISR is smaller than their replica set.
        #[arg(long)]
        under_replicated: bool,
        /// Only partitions without a leader.
        #[arg(long)]
        offline: bool,
    },
    /// The metadata quorum (DescribeQuorum): leader, epoch, high watermark,
    /// and each voter's and observer's log end offset and lag.
    Quorum,
    /// Move partitions' replicas (AlterPartitionReassignments), as
    /// kafka-reassign-partitions: `--topic T --partition P --replicas 1,2,3`
    /// or `--json-file` in its format, with `--execute` (the default),
    /// `--verify` (exits 1 while any move is unfinished), `--cancel` or
    /// `--list` (every reassignment in progress).
    Reassign(ReassignArgs),
    /// Elect leaders (ElectLeaders), as kafka-leader-election: the preferred
    /// replica, or with UNCLEAN any live replica even out of the ISR.
    ElectLeaders(ElectLeadersArgs),
}

#[derive(clap::Args)]
pub struct ReassignArgs {
    /// The topic of the partition to move.
    #[arg(long, short = 't', requires = "partition")]
    topic: Option<String>,
    /// The partition to move.
    #[arg(long, short = 'p', requires = "topic")]
    partition: Option<i32>,
    /// Its new replicas, preferred leader first: `1,2,3`.
    #[arg(long, value_delimiter = ',', requires = "topic")]
    replicas: Vec<i32>,
    /// A kafka-reassign-partitions JSON file:
    /// `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2,3]}]}`.
    #[arg(
        long = "json-file",
        visible_alias = "reassignment-json-file",
        conflicts_with = "topic"
    )]
    json_file: Option<std::path::PathBuf>,
    /// Start the reassignment (the default).
    #[arg(long, conflicts_with_all = ["verify", "cancel", "list"])]
    execute: bool,
    /// Whether the reassignment is done: replicas equal the target and no
    /// move is in progress.
    #[arg(long, conflicts_with_all = ["cancel", "list"])]
    verify: bool,
    /// Cancel the reassignment of these partitions (back to the original replicas).
    #[arg(long, conflicts_with = "list")]
    cancel: bool,
    /// List every reassignment in progress.
    #[arg(long)]
    list: bool,
}

#[derive(clap::Args)]
pub struct ElectLeadersArgs {
    /// PREFERRED or UNCLEAN.
    #[arg(long = "election-type", default_value = "PREFERRED")]
    election_type: String,
    /// The topic of the partition (with --partition).
    #[arg(long, short = 't', requires = "partition")]
    topic: Option<String>,
    /// The partition (with --topic).
    #[arg(long, short = 'p', requires = "topic")]
    partition: Option<i32>,
    /// Every partition of every topic.
    #[arg(long = "all-topic-partitions", conflicts_with_all = ["topic", "path_to_json_file"])]
    all_topic_partitions: bool,
    /// A kafka-leader-election JSON file:
    /// `{"partitions":[{"topic":"t","partition":0}]}`.
    #[arg(long = "path-to-json-file", conflicts_with = "topic")]
    path_to_json_file: Option<std::path::PathBuf>,
    /// Shorthand for `--election-type PREFERRED`.
    #[arg(long, conflicts_with = "unclean")]
    preferred: bool,
    /// Shorthand for `--election-type UNCLEAN`.
    #[arg(long)]
    unclean: bool,
}

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Show a broker's configs (non-default ones unless --all).
    Get {
        /// Broker id (default: the first broker in metadata).
        #[arg(long)]
        broker: Option<i32>,
        /// Only these keys.
        keys: Vec<String>,
        /// Include defaults.
        #[arg(long)]
        all: bool,
    },
    /// Set dynamic broker configs (AlterConfigs).
    Set {
        /// Broker id (default: the first broker in metadata).
        #[arg(long)]
        broker: Option<i32>,
        /// `KEY=VALUE` pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: ClusterCmd) -> Result<ExitCode> {
    ctx.format.check_no_template()?;
    match cmd {
        ClusterCmd::Info => info(ctx),
        ClusterCmd::Health => health(ctx),
        ClusterCmd::Config(ConfigCmd::Get { broker, keys, all }) => {
            config_get(ctx, broker, &keys, all)
        }
        ClusterCmd::Config(ConfigCmd::Set { broker, pairs }) => config_set(ctx, broker, &pairs),
        ClusterCmd::Logdirs { broker } => logdirs(ctx, broker),
        ClusterCmd::Partitions {
            topics,
            under_replicated,
            offline,
        } => partitions(ctx, &topics, under_replicated, offline),
        ClusterCmd::Quorum => quorum(ctx),
        ClusterCmd::Reassign(args) => reassign(ctx, args),
        ClusterCmd::ElectLeaders(args) => elect_leaders(ctx, args),
    }
}

#[derive(Serialize)]
struct BrokerInfo {
    id: i32,
    host: String,
    port: i32,
}

#[derive(Serialize)]
struct ClusterInfo {
    cluster_id: Option<String>,
    controller: i32,
    brokers: Vec<BrokerInfo>,
    topics: usize,
    partitions: usize,
}

fn cluster_info(ctx: &Ctx) -> Result<(ClusterInfo, rdkafka::metadata::Metadata)> {
    let opts = &ctx.connect;
    let client = opts.metadata_client()?;
    let md = opts.metadata(&client, None)?;
    let inner: &Client<_> = client.client();
    let cluster_id = inner.fetch_cluster_id(opts.timeout());
    let controller = kafka::controller_id(inner, opts.timeout());
    let mut brokers: Vec<BrokerInfo> = md
        .brokers()
        .iter()
        .map(|b| BrokerInfo {
            id: b.id(),
            host: b.host().to_string(),
            port: b.port(),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let info = ClusterInfo {
        cluster_id,
        controller,
        brokers,
        topics: md.topics().len(),
        partitions: md.topics().iter().map(|t| t.partitions().len()).sum(),
    };
    Ok((info, md))
}

fn info(ctx: &Ctx) -> Result<ExitCode> {
    let (info, _) = cluster_info(ctx)?;
    if ctx.format.is_json() {
        print_json(&info)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "CLUSTER {}  CONTROLLER {}  TOPICS {}  PARTITIONS {}",
        info.cluster_id.as_deref().unwrap_or("?"),
        info.controller,
        info.topics,
        info.partitions
    );
    let mut t = Table::new(&["ID", "HOST", "PORT", "CONTROLLER"]);
    for b in &info.brokers {
        t.row(vec![
            b.id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            if b.id == info.controller { "*" } else { "" }.to_string(),
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Health {
    healthy: bool,
    controller: i32,
    brokers: Vec<i32>,
    partitions: usize,
    under_replicated_count: usize,
    offline_count: usize,
    under_replicated: Vec<String>,
    offline: Vec<String>,
}

/// One partition as `cluster partitions` shows it.
#[derive(Serialize)]
struct PartitionState {
    topic: String,
    partition: i32,
    /// -1 when the partition has no leader.
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// Replicas not in the ISR.
    out_of_sync: Vec<i32>,
    /// Replicas on brokers the cluster does not list as live (kafka-topics'
    /// `Offline:`).
    offline_replicas: Vec<i32>,
    under_replicated: bool,
    offline: bool,
}

impl PartitionState {
    fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl PartitionState {
    fn new(
        topic: &str,
        partition: i32,
        leader: i32,
        replicas: &[i32],
        isr: &[i32],
        live: &[i32],
    ) -> Self {
        let offline = leader < 0;
        PartitionState {
            topic: topic.to_string(),
            partition,
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            out_of_sync: replicas
                .iter()
                .copied()
                .filter(|r| !isr.contains(r))
                .collect(),
            offline_replicas: replicas
                .iter()
                .copied()
                .filter(|r| !live.contains(r))
                .collect(),
            // As Kafka counts them: an offline partition is offline only.
            under_replicated: !offline && isr.len() < replicas.len(),
            offline,
        }
    }
}

/// Every partition in `md`, sorted by topic and partition.
fn partition_states(md: &rdkafka::metadata::Metadata) -> Vec<PartitionState> {
    let live: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
    let live = &live;
    let mut out: Vec<PartitionState> = md
        .topics()
        .iter()
        .flat_map(|t| {
            t.partitions().iter().map(move |p| {
                PartitionState::new(t.name(), p.id(), p.leader(), p.replicas(), p.isr(), live)
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

/// `--under-replicated` / `--offline` (either condition when both are given;
/// every partition when neither is).
fn selected(p: &PartitionState, under_replicated: bool, offline: bool) -> bool {
    (!under_replicated && !offline)
        || (under_replicated && p.under_replicated)
        || (offline && p.offline)
}

fn partitions(
    ctx: &Ctx,
    topics: &[String],
    under_replicated: bool,
    offline: bool,
) -> Result<ExitCode> {
    let (_, md) = cluster_info(ctx)?;
    for t in topics {
        if !md.topics().iter().any(|m| m.name() == t) {
            bail!("unknown topic '{t}'");
        }
    }
    let shown: Vec<PartitionState> = partition_states(&md)
        .into_iter()
        .filter(|p| topics.is_empty() || topics.contains(&p.topic))
        .filter(|p| selected(p, under_replicated, offline))
        .collect();
    if ctx.format.is_json() {
        print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "TOPIC",
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "OFFLINE",
        "STATUS",
    ]);
    for p in &shown {
        let status = if p.offline {
            "offline".to_string()
        } else if p.under_replicated {
            format!(
                "under-replicated (out of sync: {})",
                crate::output::ids(&p.out_of_sync)
            )
        } else {
            "ok".to_string()
        };
        t.row(vec![
            p.topic.clone(),
            p.partition.to_string(),
            if p.offline {
                "none".to_string()
            } else {
                p.leader.to_string()
            },
            crate::output::ids(&p.replicas),
            crate::output::ids(&p.isr),
            // "-" rather than an empty cell, so the columns stay aligned
            if p.offline_replicas.is_empty() {
                "-".to_string()
            } else {
                crate::output::ids(&p.offline_replicas)
            },
            status,
        ]);
    }
    t.print()?;
    Ok(ExitCode::SUCCESS)
}

fn health(ctx: &Ctx) -> Result<ExitCode> {
    let (info, md) = cluster_info(ctx)?;
    let states = partition_states(&md);
    let under: Vec<String> = states
        .iter()
        .filter(|p| p.under_replicated)
        .map(PartitionState::name)
        .collect();
    let offline: Vec<String> = states
        .iter()
        .filter(|p| p.offline)
        .map(PartitionState::name)
        .collect();
    let h = Health {
        partitions: states.len(),
        under_replicated_count: under.len(),
        offline_count: offline.len(),
        healthy: info.controller >= 0
            && !info.brokers.is_empty()
            && under.is_empty()
            && offline.is_empty(),
        controller: info.controller,
        brokers: info.brokers.iter().map(|b| b.id).collect(),
        under_replicated: under,
        offline,
    };
    if ctx.format.is_json() {
        print_json(&h)?;
    } else {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        println!("healthy: {}", h.healthy);
        println!(
            "controller: {}",
            if h.controller >= 0 {
                h.controller.to_string()
            } else {
                "none".to_string()
            }
        );
        println!("brokers: {}", crate::output::ids(&h.brokers));
        println!("partitions: {}", h.partitions);
        println!(
            "under-replicated partitions: {} ({})",
            h.under_replicated_count,
            list(&h.under_replicated)
        );
        println!(
            "offline partitions: {} ({})",
            h.offline_count,
            list(&h.offline)
        );
    }
    Ok(if h.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn default_broker(ctx: &Ctx, broker: Option<i32>) -> Result<i32> {
    if let Some(b) = broker {
        return Ok(b);
    }
    let (info, _) = cluster_info(ctx)?;
    info.brokers
        .first()
        .map(|b| b.id)
        .ok_or_else(|| anyhow!("the cluster reports no brokers"))
}

fn config_get(ctx: &Ctx, broker: Option<i32>, keys: &[String], all: bool) -> Result<ExitCode> {
    let id = default_broker(ctx, broker)?;
    let configs = describe_configs(&ctx.connect, ResourceSpecifier::Broker(id))?;
    let shown: BTreeMap<_, _> = configs
        .into_iter()
        .filter(|(k, v)| {
            if keys.is_empty() {
                all || !v.default
            } else {
                keys.contains(k)
            }
        })
        .collect();
    for k in keys {
        if !shown.contains_key(k) {
            bail!("broker {id} has no config '{k}'");
        }
    }
    if ctx.format.is_json() {
        print_json(&json!({ "broker": id, "configs": shown }))?;
    } else {
        let mut t = Table::new(&["KEY", "VALUE", "SOURCE"]);
        for (k, v) in shown {
            let value = if v.sensitive {
                "(sensitive)".to_string()
            } else {
                v.value.unwrap_or_default()
            };
            t.row(vec![k, value, v.source]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn config_set(ctx: &Ctx, broker: Option<i32>, pairs: &[String]) -> Result<ExitCode> {
    let id = default_broker(ctx, broker)?;
    let opts = &ctx.connect;
    // AlterConfigs replaces the broker's dynamic set: keep the others.
    let current = describe_configs(opts, ResourceSpecifier::Broker(id))?;
    let mut values: BTreeMap<String, String> = current
        .into_iter()
        .filter(|(_, v)| v.source.starts_with("DynamicBroker") && !v.sensitive)
        .filter_map(|(k, v)| v.value.map(|v| (k, v)))
        .collect();
    for p in pairs {
        let (k, v) = kv(p)?;
        values.insert(k, v);
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Broker(id));
    for (k, v) in &values {
        alter = alter.set(k, v);
    }
    let admin = opts.admin()?;
    let res = kafka::block_on(admin.alter_configs([&alter], &opts.admin_options()))?
        .map_err(|e| anyhow!("{e}"))?;
    for r in res {
        if let Err((_, code)) = r {
            bail!("cannot alter the configs of broker {id}: {code}");
        }
    }
    if ctx.format.is_json() {
        print_json(&json!({ "broker": id, "configs": values }))?;
    } else {
        println!("altered the configs of broker {id}");
    }
    Ok(ExitCode::SUCCESS)
}

fn logdirs(ctx: &Ctx, broker: Option<i32>) -> Result<ExitCode> {
    let (info, _) = cluster_info(ctx)?;
    let targets: Vec<&BrokerInfo> = info
        .brokers
        .iter()
        .filter(|b| broker.is_none_or(|id| id == b.id))
        .collect();
    if targets.is_empty() {
        bail!("no broker {}", broker.unwrap_or(-1));
    }
    let mut rows = Vec::new();
    for b in targets {
        let addr = format!("{}:{}", b.host, b.port);
        let dirs = crate::raw::describe_log_dirs(&addr, ctx.connect.timeout())
            .map_err(|e| anyhow!("broker {} ({addr}): {e}", b.id))?;
        for d in dirs {
            rows.push(json!({
                "broker": b.id,
                "dir": d.dir,
                "error": d.error,
                "partitions": d.partitions.len(),
                "size": d.partitions.iter().map(|p| p.2).sum::<i64>(),
                "topics": d.partitions.iter().map(|p| json!({"topic": p.0, "partition": p.1, "size": p.2})).collect::<Vec<_>>(),
            }));
        }
    }
    if ctx.format.is_json() {
        print_json(&rows)?;
    } else {
        let mut t = Table::new(&["BROKER", "DIR", "PARTITIONS", "SIZE", "ERROR"]);
        for r in &rows {
            t.row(vec![
                r["broker"].to_string(),
                r["dir"].as_str().unwrap_or("").to_string(),
                r["partitions"].to_string(),
                r["size"].to_string(),
                r["error"].as_str().unwrap_or("").to_string(),
            ]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn quorum(ctx: &Ctx) -> Result<ExitCode> {
    let mut c = crate::raw::connect(
        &ctx.connect.bootstrap(),
        &ctx.connect.props,
        ctx.connect.timeout(),
    )?;
    let q = crate::raw::describe_quorum(&mut c)?;
    let replica = |r: &crate::raw::QuorumReplica, role: &str| {
        // Lag behind the leader's high watermark (Kafka's
        // kafka-metadata-quorum --replication); unknown offsets stay -1.
        let lag = if r.log_end_offset < 0 {
            -1
        } else {
            (q.high_watermark - r.log_end_offset).max(0)
        };
        json!({
            "id": r.id,
            "role": role,
            "log_end_offset": r.log_end_offset,
            "lag": lag,
            "last_fetch_timestamp": r.last_fetch_timestamp,
            "last_caught_up_timestamp": r.last_caught_up_timestamp,
        })
    };
    let replicas: Vec<_> = q
        .voters
        .iter()
        .map(|r| {
            replica(
                r,
                if r.id == q.leader_id {
                    "leader"
                } else {
                    "follower"
                },
            )
        })
        .chain(q.observers.iter().map(|r| replica(r, "observer")))
        .collect();
    if ctx.format.is_json() {
        print_json(&json!({
            "leader_id": q.leader_id,
            "leader_epoch": q.leader_epoch,
            "high_watermark": q.high_watermark,
            "replicas": replicas,
        }))?;
    } else {
        println!("LeaderId:      {}", q.leader_id);
        println!("LeaderEpoch:   {}", q.leader_epoch);
        println!("HighWatermark: {}", q.high_watermark);
        println!(
            "CurrentVoters: [{}]",
            q.voters
                .iter()
                .map(|v| v.id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut t = Table::new(&["NODE", "ROLE", "LOG-END-OFFSET", "LAG"]);
        for r in &replicas {
            t.row(vec![
                r["id"].to_string(),
                r["role"].as_str().unwrap_or("").to_string(),
                r["log_end_offset"].to_string(),
                r["lag"].to_string(),
            ]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A raw connection to the first bootstrap broker that answers (the others
/// may be down: these commands are used while nodes fail).
fn connect_any(ctx: &Ctx) -> Result<crate::raw::RawClient> {
    let mut last = None;
    for addr in ctx.connect.bootstrap().split(',').map(str::trim) {
        if addr.is_empty() {
            continue;
        }
        match crate::raw::connect(addr, &ctx.connect.props, ctx.connect.timeout()) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no bootstrap address")))
}

/// Kafka's name of an error code (`NONE` for 0).
fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        _ if code == 0 => "NONE".into(),
        Some(e) => format!("{e:?}"),
        None => format!("error code {code}"),
    }
}

/// "NAME: message" for a failed partition or request.
fn error_line(code: i16, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{}: {m}", error_name(code)),
        None => error_name(code),
    }
}

/// One partition of a kafka-reassign-partitions JSON file.
#[derive(serde::Deserialize, Serialize, Clone, Debug, PartialEq)]
struct ReassignEntry {
    topic: String,
    partition: i32,
    #[serde(default)]
    replicas: Vec<i32>,
}

#[derive(serde::Deserialize)]
struct ReassignFile {
    #[serde(default)]
    partitions: Vec<ReassignEntry>,
}

fn read_json_file<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn reassign_entries(args: &ReassignArgs) -> Result<Vec<ReassignEntry>> {
    if let Some(path) = &args.json_file {
        let file: ReassignFile = read_json_file(path)?;
        if file.partitions.is_empty() {
            bail!("{}: no partitions to reassign", path.display());
        }
        return Ok(file.partitions);
    }
    match (&args.topic, args.partition) {
        (Some(topic), Some(partition)) => Ok(vec![ReassignEntry {
            topic: topic.clone(),
            partition,
            replicas: args.replicas.clone(),
        }]),
        _ => {
            bail!("name the partitions: --topic T --partition P [--replicas 1,2,3] or --json-file")
        }
    }
}

/// (topic, partition, replicas, adding, removing) of reassignments in
/// progress; `None`: all of them.
type Ongoing = Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)>;

fn list_reassignments(
    c: &mut crate::raw::RawClient,
    ctx: &Ctx,
    partitions: Option<&[ReassignEntry]>,
) -> Result<Ongoing> {
    use kafka_protocol::messages::list_partition_reassignments_request::{
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsTopics,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    let topics = partitions.map(|ps| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for p in ps {
            by_topic.entry(&p.topic).or_default().push(p.partition);
        }
        by_topic
            .into_iter()
            .map(|(t, idx)| {
                ListPartitionReassignmentsTopics::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partition_indexes(idx)
            })
            .collect()
    });
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(ctx.connect.timeout().as_millis() as i32)
        .with_topics(topics);
    let resp = c.call(&req, 0)?;
    if resp.error_code != 0 {
        bail!(
            "ListPartitionReassignments: {}",
            error_line(resp.error_code, resp.error_message.as_deref())
        );
    }
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect())
}

fn reassign(ctx: &Ctx, args: ReassignArgs) -> Result<ExitCode> {
    let mut c = connect_any(ctx)?;
    if args.list {
        let ongoing = list_reassignments(&mut c, ctx, None)?;
        if ctx.format.is_json() {
            print_json(
                &ongoing
                    .iter()
                    .map(|(t, p, r, a, rm)| {
                        json!({"topic": t, "partition": p, "replicas": r, "adding": a, "removing": rm})
                    })
                    .collect::<Vec<_>>(),
            )?;
        } else {
            let mut t = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
            for (topic, p, r, a, rm) in &ongoing {
                t.row(vec![
                    topic.clone(),
                    p.to_string(),
                    crate::output::ids(r),
                    crate::output::ids(a),
                    crate::output::ids(rm),
                ]);
            }
            t.print()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let entries = reassign_entries(&args)?;
    if args.verify {
        return reassign_verify(ctx, &mut c, &entries);
    }
    if !args.cancel {
        if let Some(e) = entries.iter().find(|e| e.replicas.is_empty()) {
            bail!(
                "no target replicas for {}-{} (--replicas 1,2,3)",
                e.topic,
                e.partition
            );
        }
    }
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
    for e in &entries {
        by_topic.entry(&e.topic).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(e.partition)
                .with_replicas(
                    (!args.cancel).then(|| e.replicas.iter().map(|&b| BrokerId(b)).collect()),
                ),
        );
    }
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(ctx.connect.timeout().as_millis() as i32)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReassignableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = c.call(&req, 0)?;
    if resp.error_code != 0 {
        bail!(
            "AlterPartitionReassignments: {}",
            error_line(resp.error_code, resp.error_message.as_deref())
        );
    }
    let results: Vec<(String, i32, Option<String>)> = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    (p.error_code != 0)
                        .then(|| error_line(p.error_code, p.error_message.as_deref())),
                )
            })
        })
        .collect();
    let failed = results.iter().filter(|r| r.2.is_some()).count();
    let verb = if args.cancel { "cancel" } else { "start" };
    if ctx.format.is_json() {
        print_json(
            &results
                .iter()
                .map(|(t, p, e)| json!({"topic": t, "partition": p, "error": e}))
                .collect::<Vec<_>>(),
        )?;
    } else {
        for (t, p, e) in &results {
            match e {
                None if args.cancel => println!("Cancelled the reassignment of {t}-{p}"),
                None => println!("Started the reassignment of {t}-{p}"),
                Some(e) => println!("Cannot {verb} the reassignment of {t}-{p}: {e}"),
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Kafka's `--verify`: a partition is done when no reassignment is in
/// progress and its replicas are the target (in order).
fn reassign_verify(
    ctx: &Ctx,
    c: &mut crate::raw::RawClient,
    entries: &[ReassignEntry],
) -> Result<ExitCode> {
    let ongoing = list_reassignments(c, ctx, Some(entries))?;
    let (_, md) = cluster_info(ctx)?;
    let current = |topic: &str, partition: i32| -> Option<Vec<i32>> {
        md.topics()
            .iter()
            .find(|t| t.name() == topic)?
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.replicas().to_vec())
    };
    let mut rows = Vec::new();
    for e in entries {
        let status = if ongoing.iter().any(|o| o.0 == e.topic && o.1 == e.partition) {
            "in progress"
        } else {
            match current(&e.topic, e.partition) {
                None => "unknown partition",
                Some(r) if e.replicas.is_empty() || r == e.replicas => "complete",
                Some(_) => "not started or failed",
            }
        };
        rows.push((e, status));
    }
    let done = rows.iter().all(|(_, s)| *s == "complete");
    if ctx.format.is_json() {
        print_json(&json!({
            "complete": done,
            "partitions": rows.iter().map(|(e, s)| json!({
                "topic": e.topic, "partition": e.partition, "replicas": e.replicas, "status": s,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for (e, s) in &rows {
            match *s {
                "complete" => println!(
                    "Reassignment of partition {}-{} is completed.",
                    e.topic, e.partition
                ),
                "in progress" => println!(
                    "Reassignment of partition {}-{} is still in progress.",
                    e.topic, e.partition
                ),
                other => println!(
                    "Reassignment of partition {}-{}: {other} (replicas {:?}).",
                    e.topic,
                    e.partition,
                    current(&e.topic, e.partition).unwrap_or_default()
                ),
            }
        }
    }
    Ok(if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(serde::Deserialize)]
struct ElectionFile {
    partitions: Vec<ElectionEntry>,
}

#[derive(serde::Deserialize)]
struct ElectionEntry {
    topic: String,
    partition: i32,
}

/// Kafka's ElectionType from the command line (0 preferred, 1 unclean).
fn election_type(args: &ElectLeadersArgs) -> Result<(i8, &'static str)> {
    if args.unclean {
        return Ok((1, "UNCLEAN"));
    }
    if args.preferred {
        return Ok((0, "PREFERRED"));
    }
    match args.election_type.to_ascii_uppercase().as_str() {
        "PREFERRED" => Ok((0, "PREFERRED")),
        "UNCLEAN" => Ok((1, "UNCLEAN")),
        other => bail!("--election-type must be PREFERRED or UNCLEAN, not {other}"),
    }
}

fn elect_leaders(ctx: &Ctx, args: ElectLeadersArgs) -> Result<ExitCode> {
    use kafka_protocol::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    let (kind, kind_name) = election_type(&args)?;
    let partitions: Option<Vec<(String, i32)>> = if args.all_topic_partitions {
        None
    } else if let Some(path) = &args.path_to_json_file {
        let file: ElectionFile = read_json_file(path)?;
        Some(
            file.partitions
                .into_iter()
                .map(|e| (e.topic, e.partition))
                .collect(),
        )
    } else if let (Some(t), Some(p)) = (&args.topic, args.partition) {
        Some(vec![(t.clone(), p)])
    } else {
        bail!("name the partitions: --topic T --partition P, --path-to-json-file or --all-topic-partitions");
    };
    let topics = partitions.map(|ps| {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in ps {
            by_topic.entry(t).or_default().push(p);
        }
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t)))
                    .with_partitions(ps)
            })
            .collect()
    });
    let req = ElectLeadersRequest::default()
        .with_election_type(kind)
        .with_topic_partitions(topics)
        .with_timeout_ms(ctx.connect.timeout().as_millis() as i32);
    let mut c = connect_any(ctx)?;
    let resp = c.call(&req, 2)?;
    if resp.error_code != 0 {
        bail!("ElectLeaders: {}", error_name(resp.error_code));
    }
    const ELECTION_NOT_NEEDED: i16 = 84;
    let mut elected = Vec::new();
    let mut not_needed = Vec::new();
    let mut failed = Vec::new();
    for t in &resp.replica_election_results {
        for p in &t.partition_result {
            let name = format!("{}-{}", t.topic.as_str(), p.partition_id);
            match p.error_code {
                0 => elected.push(name),
                ELECTION_NOT_NEEDED => not_needed.push(name),
                code => failed.push((name, error_line(code, p.error_message.as_deref()))),
            }
        }
    }
    if ctx.format.is_json() {
        print_json(&json!({
            "election_type": kind_name,
            "elected": elected,
            "not_needed": not_needed,
            "failed": failed.iter().map(|(n, e)| json!({"partition": n, "error": e})).collect::<Vec<_>>(),
        }))?;
    } else {
        // kafka-leader-election's wording.
        if !elected.is_empty() {
            println!(
                "Successfully completed leader election ({kind_name}) for partitions {}",
                elected.join(", ")
            );
        }
        if !not_needed.is_empty() {
            println!(
                "Valid replica already elected for partitions {}",
                not_needed.join(", ")
            );
        }
        for (name, e) in &failed {
            println!("Error completing leader election ({kind_name}) for partition: {name}: {e}");
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_tool_json_files() {
        // kafka-reassign-partitions' format, log_dirs and version ignored
        let f: ReassignFile = serde_json::from_str(
            r#"{"version":1,"partitions":[{"topic":"t","partition":2,"replicas":[4,2],"log_dirs":["any","any"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            f.partitions,
            vec![ReassignEntry {
                topic: "t".into(),
                partition: 2,
                replicas: vec![4, 2]
            }]
        );
        // kafka-leader-election's format
        let e: ElectionFile =
            serde_json::from_str(r#"{"partitions":[{"topic":"t","partition":0}]}"#).unwrap();
        assert_eq!(
            (e.partitions[0].topic.as_str(), e.partitions[0].partition),
            ("t", 0)
        );
    }

    #[test]
    fn election_types_and_error_names() {
        let args = |t: &str, preferred, unclean| ElectLeadersArgs {
            election_type: t.into(),
            topic: None,
            partition: None,
            all_topic_partitions: true,
            path_to_json_file: None,
            preferred,
            unclean,
        };
        assert_eq!(
            election_type(&args("PREFERRED", false, false)).unwrap().0,
            0
        );
        assert_eq!(election_type(&args("unclean", false, false)).unwrap().0, 1);
        assert_eq!(election_type(&args("PREFERRED", false, true)).unwrap().0, 1);
        assert!(election_type(&args("ANY", false, false)).is_err());
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(84), "ElectionNotNeeded");
        assert_eq!(
            error_line(31, Some("Cluster authorization failed.")),
            "ClusterAuthorizationFailed: Cluster authorization failed."
        );
    }

    #[test]
    fn partition_states_and_filters() {
        let live = [1, 2, 3];
        let ok = PartitionState::new("t", 0, 1, &[1, 2, 3], &[3, 1, 2], &live);
        let under = PartitionState::new("t", 1, 2, &[1, 2, 3], &[2], &[2, 3]);
        let offline = PartitionState::new("t", 2, -1, &[1, 2], &[], &live);
        assert!(ok.offline_replicas.is_empty());
        assert_eq!(under.offline_replicas, vec![1]);
        assert!(!ok.under_replicated && !ok.offline && ok.out_of_sync.is_empty());
        assert!(under.under_replicated && !under.offline);
        assert_eq!(under.out_of_sync, vec![1, 3]);
        assert!(offline.offline && !offline.under_replicated);
        let all = [&ok, &under, &offline];
        let pick = |u, o| {
            all.iter()
                .filter(|p| selected(p, u, o))
                .map(|p| p.partition)
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(false, false), vec![0, 1, 2]);
        assert_eq!(pick(true, false), vec![1]);
        assert_eq!(pick(false, true), vec![2]);
        assert_eq!(pick(true, true), vec![1, 2]);
    }
}
