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
    under_replicated: Vec<String>,
    offline: Vec<String>,
}

fn health(ctx: &Ctx) -> Result<ExitCode> {
    let (info, md) = cluster_info(ctx)?;
    let mut under = Vec::new();
    let mut offline = Vec::new();
    for t in md.topics() {
        for p in t.partitions() {
            let name = format!("{}-{}", t.name(), p.id());
            if p.leader() < 0 {
                offline.push(name);
            } else if p.isr().len() < p.replicas().len() {
                under.push(name);
            }
        }
    }
    let h = Health {
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
        println!("controller: {}", h.controller);
        println!("brokers: {}", crate::output::ids(&h.brokers));
        println!("under-replicated partitions: {}", list(&h.under_replicated));
        println!("offline partitions: {}", list(&h.offline));
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
