//! Broker configuration: Kafka's `server.properties` names and defaults.
//!
//! `strom server --config FILE --override k=v` reads a Java properties file,
//! applies overrides, and turns the keys Strom understands into a typed
//! [`BrokerConfig`]. Keys Strom does not know are reported (logged) and
//! ignored, never silently dropped; keys it knows with a bad value are errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::security::SecurityProtocol;
use strom_protocol::TimestampType;
use strom_storage::{FlushMode, LogConfig};
use thiserror::Error;

/// A bad configuration: which key, and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("--override expects key=value, got {0:?}")]
    BadOverride(String),
}

/// One entry of `listeners` / `advertised.listeners`: `NAME://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// From `listener.security.protocol.map` (a listener named after a
    /// protocol, e.g. `SSL`, defaults to it).
    pub security_protocol: SecurityProtocol,
}

/// `strom.admin.listener`: where `/metrics` and `/health` are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminListener {
    pub host: String,
    pub port: u16,
}

/// The effective broker configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    /// `log.retention.*`, kept for the retention task (issue 3); parsed and
    /// validated now so a user's file is checked.
    pub log_retention_ms: Option<i64>,
    pub log_retention_bytes: Option<i64>,
    /// `log.flush.scheduler.interval.ms`: how often `flush.ms` is checked.
    pub log_flush_scheduler_interval_ms: u64,
    /// Defaults for every partition's log (`log.segment.bytes`, `log.flush.*`, …).
    pub log: LogConfig,
    /// The group coordinator's settings (`group.*`, `offsets.*`).
    pub group: crate::group::GroupConfig,
    /// Producer ids and transactions (`transaction.*`, `producer.id.*`).
    pub txn: crate::txn::TxnConfig,
    /// Client quota windows (`quota.window.*`, `controller.quota.window.*`).
    pub quota: crate::quota::QuotaConfig,
    /// `strom.admin.listener` (`host:port`, default `127.0.0.1:9644`; empty
    /// disables it).
    pub admin_listener: Option<AdminListener>,
    /// Whether `strom.admin.listener` was given (a bind failure is then fatal).
    pub admin_listener_explicit: bool,
    /// `authorizer.class.name`, `super.users`, `allow.everyone.if.no.acl.found`.
    pub authorizer: crate::security::authorizer::AuthorizerConfig,
    /// SASL mechanisms and credentials per SASL listener, `connections.max.reauth.ms`.
    pub sasl: crate::security::sasl::SaslConfig,
    /// `process.roles`, `controller.quorum.voters`, the controller listener
    /// and `metadata.log.dir`: this node's part in the metadata quorum.
    pub quorum: crate::metadata::QuorumSettings,
    /// `replica.*`: follower fetching and ISR maintenance.
    pub replication: crate::replication::ReplicationConfig,
    /// Every key given, after overrides (for the start-up line).
    pub raw: BTreeMap<String, String>,
    /// Keys given that Strom does not use.
    pub ignored: Vec<String>,
}

/// Keys Strom reads; everything else is reported as ignored.
const KNOWN_KEYS: &[&str] = &[
    // client quotas (issue 8)
    "quota.window.num",
    "quota.window.size.seconds",
    "controller.quota.window.num",
    "controller.quota.window.size.seconds",
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    // replica fetchers connect to the leader's inter-broker listener
    "inter.broker.listener.name",
    "controller.listener.names",
    "process.roles",
    // broker lifecycle (issue 7)
    "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms",
    "broker.rack",
    "controlled.shutdown.enable",
    // the active controller's policy (issue 7)
    "leader.imbalance.check.interval.seconds",
    "auto.leader.rebalance.enable",
    "controller.quorum.voters",
    "metadata.log.dir",
    "log.dirs",
    "log.dir",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "message.max.bytes",
    "socket.request.max.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.index.size.max.bytes",
    "log.index.interval.bytes",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.flush.scheduler.interval.ms",
    "log.message.timestamp.type",
    "strom.flush.mode",
    "group.initial.rebalance.delay.ms",
    "group.consumer.session.timeout.ms",
    "group.consumer.heartbeat.interval.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.topic.segment.bytes",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offset.metadata.max.bytes",
    "strom.admin.listener",
    "transaction.max.timeout.ms",
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "transaction.state.log.segment.bytes",
    "transactional.id.expiration.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "producer.id.expiration.ms",
    "producer.id.expiration.check.interval.ms",
    // topic-config synonyms and the log cleaner (issue 3)
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.backoff.ms",
    "log.cleaner.enable",
    "log.segment.delete.delay.ms",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "log.preallocate",
    "log.roll.jitter.ms",
    "log.roll.jitter.hours",
    "compression.type",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    // the authorizer (issue 8)
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
];

impl BrokerConfig {
    /// Reads `path` (if any) and applies `overrides` (`key=value`).
    pub fn load(path: Option<&std::path::Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut raw = BTreeMap::new();
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            raw.extend(parse_properties(&text));
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
            raw.insert(k.trim().to_string(), v.trim().to_string());
        }
        Self::from_map(raw)
    }

    /// Builds the typed config from key/value pairs, applying Kafka's defaults.
    pub fn from_map(raw: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| raw.get(k).map(|s| s.as_str());
        let node_id = match get("node.id").or(get("broker.id")) {
            Some(v) => parse_num::<i32>("node.id", v)?,
            None => 1,
        };
        let protocol_map = parse_protocol_map(get("listener.security.protocol.map"))?;
        let mut listeners = parse_listeners(
            "listeners",
            get("listeners").unwrap_or("PLAINTEXT://localhost:9092"),
        )?;
        let mut advertised_listeners = match get("advertised.listeners") {
            Some(v) => parse_listeners("advertised.listeners", v)?,
            None => listeners.clone(),
        };
        for l in listeners.iter_mut().chain(advertised_listeners.iter_mut()) {
            l.security_protocol = match protocol_map.get(&l.name) {
                Some(p) => *p,
                None => SecurityProtocol::parse(&l.name).ok_or_else(|| {
                    invalid(
                        "listener.security.protocol.map",
                        get("listener.security.protocol.map").unwrap_or(""),
                        &format!("no security protocol for listener {}", l.name),
                    )
                })?,
            };
        }
        check_listener_names(&raw, &listeners, &advertised_listeners, &protocol_map)?;
        let log_dirs: Vec<PathBuf> = get("log.dirs")
            .or(get("log.dir"))
            .unwrap_or("./strom-data")
            .split(',')
            .map(|s| PathBuf::from(s.trim()))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if log_dirs.is_empty() {
            return Err(invalid(
                "log.dirs",
                "",
                "at least one directory is required",
            ));
        }
        let num_partitions = opt_num("num.partitions", get("num.partitions"))?.unwrap_or(1);
        if num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                &num_partitions.to_string(),
                "must be at least 1",
            ));
        }
        let default_replication_factor = opt_num(
            "default.replication.factor",
            get("default.replication.factor"),
        )?
        .unwrap_or(1);
        if default_replication_factor < 1 {
            return Err(invalid(
                "default.replication.factor",
                &default_replication_factor.to_string(),
                "must be at least 1",
            ));
        }
        let auto_create_topics_enable = match get("auto.create.topics.enable") {
            Some(v) => parse_bool("auto.create.topics.enable", v)?,
            None => true,
        };
        let message_max_bytes =
            opt_num::<usize>("message.max.bytes", get("message.max.bytes"))?.unwrap_or(1_048_588);
        let socket_request_max_bytes =
            opt_num::<usize>("socket.request.max.bytes", get("socket.request.max.bytes"))?
                .unwrap_or(104_857_600);

        let mut log = LogConfig {
            max_message_bytes: message_max_bytes,
            ..LogConfig::default()
        };
        if let Some(v) = opt_num::<u64>("log.segment.bytes", get("log.segment.bytes"))? {
            if v < 14 {
                return Err(invalid(
                    "log.segment.bytes",
                    &v.to_string(),
                    "must be at least 14",
                ));
            }
            log.segment_bytes = v;
        }
        let roll_ms = opt_num::<u64>("log.roll.ms", get("log.roll.ms"))?.or(opt_num::<u64>(
            "log.roll.hours",
            get("log.roll.hours"),
        )?
        .map(|h| h * 3_600_000));
        if let Some(ms) = roll_ms {
            log.segment_ms = Some(ms);
        }
        if let Some(v) =
            opt_num::<u64>("log.index.size.max.bytes", get("log.index.size.max.bytes"))?
        {
            log.segment_index_bytes = v;
        }
        if let Some(v) =
            opt_num::<u64>("log.index.interval.bytes", get("log.index.interval.bytes"))?
        {
            log.index_interval_bytes = v;
        }
        log.flush_messages = opt_num::<u64>(
            "log.flush.interval.messages",
            get("log.flush.interval.messages"),
        )?
        .filter(|&n| n != i64::MAX as u64);
        log.flush_ms = opt_num::<u64>("log.flush.interval.ms", get("log.flush.interval.ms"))?;
        if let Some(v) = get("log.message.timestamp.type") {
            log.timestamp_type = TimestampType::from_config(v).ok_or_else(|| {
                invalid(
                    "log.message.timestamp.type",
                    v,
                    "expected CreateTime or LogAppendTime",
                )
            })?;
        }
        if let Some(v) = get("strom.flush.mode") {
            log.flush_mode = match v {
                "policy" => FlushMode::Policy,
                "always" => FlushMode::Always,
                _ => return Err(invalid("strom.flush.mode", v, "expected policy or always")),
            };
        }
        // the broker synonyms of topic configs (log.retention.*, log.cleanup.policy, …)
        crate::topic::apply_broker_synonyms(&mut log, &raw)
            .map_err(|(key, value, reason)| invalid(&key, &value, &reason))?;
        for key in ["log.retention.check.interval.ms", "log.cleaner.backoff.ms"] {
            if opt_num::<u64>(key, get(key))? == Some(0) {
                return Err(invalid(key, "0", "must be at least 1"));
            }
        }
        opt_num::<u64>(
            "log.cleaner.dedupe.buffer.size",
            get("log.cleaner.dedupe.buffer.size"),
        )?;
        if let Some(v) = get("log.cleaner.enable") {
            parse_bool("log.cleaner.enable", v)?;
        }
        let log_retention_ms = opt_num::<i64>("log.retention.ms", get("log.retention.ms"))?
            .or(
                opt_num::<i64>("log.retention.minutes", get("log.retention.minutes"))?
                    .map(|m| m * 60_000),
            )
            .or(
                opt_num::<i64>("log.retention.hours", get("log.retention.hours"))?
                    .map(|h| h * 3_600_000),
            )
            .or(Some(7 * 24 * 3_600_000))
            .filter(|&ms| ms >= 0);
        let log_retention_bytes =
            opt_num::<i64>("log.retention.bytes", get("log.retention.bytes"))?.filter(|&b| b >= 0);
        let log_flush_scheduler_interval_ms = opt_num::<u64>(
            "log.flush.scheduler.interval.ms",
            get("log.flush.scheduler.interval.ms"),
        )?
        .unwrap_or(1000);

        let admin_listener_explicit = raw.contains_key("strom.admin.listener");
        let admin_listener = parse_admin_listener(get("strom.admin.listener"))?;

        let group = group_config(&raw)?;
        let txn = txn_config(&raw)?;
        let authorizer = crate::security::authorizer::AuthorizerConfig::from_raw(&raw)
            .map_err(|(key, value, reason)| invalid(&key, &value, &reason))?;
        let quota = crate::quota::QuotaConfig::from_raw(&raw)
            .map_err(|(key, value, reason)| invalid(&key, &value, &reason))?;
        let sasl = crate::security::sasl::SaslConfig::from_raw(&raw, &listeners)?;
        let quorum = quorum_settings(
            &raw,
            node_id,
            &protocol_map,
            &mut listeners,
            &mut advertised_listeners,
        )?;
        let replication = crate::replication::ReplicationConfig::from_raw(&raw)
            .map_err(|(key, value, reason)| invalid(&key, &value, &reason))?;
        let ignored = raw
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .filter(|k| !crate::replication::REPLICATION_KEYS.contains(&k.as_str()))
            .filter(|k| !crate::security::sasl::is_sasl_key(k))
            .filter(|k| !crate::security::tls::is_tls_key(k))
            .cloned()
            .collect();
        Ok(BrokerConfig {
            node_id,
            listeners,
            advertised_listeners,
            log_dirs,
            num_partitions,
            default_replication_factor,
            auto_create_topics_enable,
            message_max_bytes,
            socket_request_max_bytes,
            log_retention_ms,
            log_retention_bytes,
            log_flush_scheduler_interval_ms,
            log,
            group,
            txn,
            quota,
            admin_listener,
            admin_listener_explicit,
            authorizer,
            sasl,
            quorum,
            replication,
            raw,
            ignored,
        })
    }

    /// `inter.broker.listener.name`: the listener replicas fetch from (by
    /// default the first of `listeners` that is not a controller listener).
    pub fn inter_broker_listener(&self) -> String {
        self.raw
            .get("inter.broker.listener.name")
            .map(|v| v.trim().to_string())
            .or_else(|| self.listeners.first().map(|l| l.name.clone()))
            .unwrap_or_else(|| "PLAINTEXT".into())
    }

    /// The advertised address for the listener called `name`.
    pub fn advertised_for(&self, name: &str) -> Option<&Listener> {
        self.advertised_listeners
            .iter()
            .find(|l| l.name == name)
            .or_else(|| self.advertised_listeners.first())
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse::<T>()
        .map_err(|_| invalid(key, v, "not a valid number"))
}

fn opt_num<T: std::str::FromStr>(key: &str, v: Option<&str>) -> Result<Option<T>, ConfigError> {
    v.map(|v| parse_num(key, v)).transpose()
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, v, "expected true or false")),
    }
}

/// Parses `strom.admin.listener`: `host:port` (port 0: any free port),
/// optionally with an `http://` prefix; empty disables the listener.
fn parse_admin_listener(v: Option<&str>) -> Result<Option<AdminListener>, ConfigError> {
    const KEY: &str = "strom.admin.listener";
    let v = v.unwrap_or("127.0.0.1:9644").trim();
    if v.is_empty() {
        return Ok(None);
    }
    let addr = v.strip_prefix("http://").unwrap_or(v);
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid(KEY, v, "expected host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| invalid(KEY, v, "bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Some(AdminListener {
        host: if host.is_empty() { "0.0.0.0" } else { host }.to_string(),
        port,
    }))
}

/// The transaction coordinator's and producer-state keys, with Kafka's
/// defaults and lower bounds (all 1).
fn txn_config(raw: &BTreeMap<String, String>) -> Result<crate::txn::TxnConfig, ConfigError> {
    let mut c = crate::txn::TxnConfig::default();
    for key in [
        "transaction.max.timeout.ms",
        "transaction.state.log.num.partitions",
        "transaction.state.log.segment.bytes",
        "transactional.id.expiration.ms",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "producer.id.expiration.ms",
        "producer.id.expiration.check.interval.ms",
    ] {
        let Some(v) = opt_num::<i64>(key, raw.get(key).map(|s| s.as_str()))? else {
            continue;
        };
        if v < 1 {
            return Err(invalid(key, &v.to_string(), "must be at least 1"));
        }
        let as_i32 =
            |v: i64| i32::try_from(v).map_err(|_| invalid(key, &v.to_string(), "out of range"));
        match key {
            "transaction.max.timeout.ms" => c.max_timeout_ms = as_i32(v)?,
            "transaction.state.log.num.partitions" => c.state_log_num_partitions = as_i32(v)?,
            "transaction.state.log.segment.bytes" => c.state_log_segment_bytes = v,
            "transactional.id.expiration.ms" => c.transactional_id_expiration_ms = v,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                c.abort_timed_out_interval_ms = v
            }
            "producer.id.expiration.ms" => c.producer_id_expiration_ms = v,
            _ => c.producer_id_expiration_check_interval_ms = v,
        }
    }
    Ok(c)
}

/// The group coordinator's keys, with Kafka's defaults and bounds.
fn group_config(raw: &BTreeMap<String, String>) -> Result<crate::group::GroupConfig, ConfigError> {
    let mut c = crate::group::GroupConfig::default();
    let get = |k: &str| raw.get(k).map(|s| s.as_str());
    let at_least = |k: &str, v: i64, min: i64| {
        if v < min {
            Err(invalid(
                k,
                &v.to_string(),
                &format!("must be at least {min}"),
            ))
        } else {
            Ok(v)
        }
    };
    for (key, min) in [
        ("group.initial.rebalance.delay.ms", 0),
        ("group.consumer.session.timeout.ms", 1),
        ("group.consumer.heartbeat.interval.ms", 1),
        ("group.min.session.timeout.ms", 0),
        ("group.max.session.timeout.ms", 0),
        ("group.max.size", 1),
        ("offsets.topic.num.partitions", 1),
        ("offsets.topic.replication.factor", 1),
        ("offsets.topic.segment.bytes", 1),
        ("offsets.retention.minutes", 1),
        ("offsets.retention.check.interval.ms", 1),
        ("offset.metadata.max.bytes", 0),
    ] {
        let Some(v) = opt_num::<i64>(key, get(key))? else {
            continue;
        };
        let v = at_least(key, v, min)?;
        let as_i32 =
            |v: i64| i32::try_from(v).map_err(|_| invalid(key, &v.to_string(), "out of range"));
        match key {
            "group.initial.rebalance.delay.ms" => c.initial_rebalance_delay_ms = as_i32(v)?,
            "group.min.session.timeout.ms" => c.min_session_timeout_ms = as_i32(v)?,
            "group.consumer.session.timeout.ms" => c.consumer.session_timeout_ms = as_i32(v)?,
            "group.consumer.heartbeat.interval.ms" => c.consumer.heartbeat_interval_ms = as_i32(v)?,
            "group.max.session.timeout.ms" => c.max_session_timeout_ms = as_i32(v)?,
            "group.max.size" => c.max_size = v as usize,
            "offsets.topic.num.partitions" => c.offsets_topic_num_partitions = as_i32(v)?,
            "offsets.topic.segment.bytes" => c.offsets_topic_segment_bytes = v,
            "offsets.retention.minutes" => c.offsets_retention_ms = v.saturating_mul(60_000),
            "offsets.retention.check.interval.ms" => c.offsets_retention_check_interval_ms = v,
            "offset.metadata.max.bytes" => c.offset_metadata_max_bytes = v as usize,
            // One node: the replication factor of the internal topic is 1.
            _ => {}
        }
    }
    Ok(c)
}

/// Reads the metadata quorum's settings. A listener named in
/// `controller.listener.names` carries Raft traffic only, so it is taken out
/// of the Kafka listeners (as in Kafka). Without `controller.quorum.voters`
/// this node is the only voter, at its controller listener or, if none is
/// configured, at an ephemeral loopback port (the embedded default).
fn quorum_settings(
    raw: &BTreeMap<String, String>,
    node_id: i32,
    protocol_map: &BTreeMap<String, SecurityProtocol>,
    listeners: &mut Vec<Listener>,
    advertised: &mut Vec<Listener>,
) -> Result<crate::metadata::QuorumSettings, ConfigError> {
    let mut s = crate::metadata::QuorumSettings::default();
    if let Some(v) = raw.get("process.roles") {
        let roles: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        if roles.is_empty() || roles.iter().any(|r| *r != "broker" && *r != "controller") {
            return Err(invalid(
                "process.roles",
                v,
                "must be broker, controller or broker,controller",
            ));
        }
        s.broker = roles.contains(&"broker");
        s.controller = roles.contains(&"controller");
    }
    let controller_names: Vec<String> = raw
        .get("controller.listener.names")
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for name in &controller_names {
        let protocol = listeners
            .iter()
            .find(|l| &l.name == name)
            .map(|l| l.security_protocol)
            .or_else(|| protocol_map.get(name).copied())
            .or_else(|| SecurityProtocol::parse(name))
            .unwrap_or(SecurityProtocol::Plaintext);
        // The quorum's transport speaks TCP or TLS, not SASL: refusing is
        // better than serving a listener the user believes authenticated.
        if !matches!(
            protocol,
            SecurityProtocol::Plaintext | SecurityProtocol::Ssl
        ) {
            return Err(invalid(
                "listener.security.protocol.map",
                raw.get("listener.security.protocol.map")
                    .map_or(name.as_str(), |v| v.as_str()),
                &format!(
                    "controller listener {name}: SASL on the controller listener is not supported yet; use PLAINTEXT or SSL"
                ),
            ));
        }
        if s.controller_listener.is_none() {
            s.controller_listener = Some(name.clone());
            s.controller_protocol = protocol;
        }
    }
    if let Some(l) = listeners
        .iter()
        .find(|l| controller_names.contains(&l.name))
    {
        let host = if l.host.is_empty() {
            "0.0.0.0"
        } else {
            &l.host
        };
        s.controller_addr = format!("{host}:{}", l.port);
    }
    // Only take controller listeners out if a Kafka listener remains.
    if listeners
        .iter()
        .any(|l| !controller_names.contains(&l.name))
    {
        listeners.retain(|l| !controller_names.contains(&l.name));
        advertised.retain(|l| !controller_names.contains(&l.name));
    }
    if let Some(v) = raw.get("controller.quorum.voters") {
        let voters = strom_metadata::parse_quorum_voters(v)
            .map_err(|e| invalid("controller.quorum.voters", v, &e.to_string()))?;
        match voters.get(&node_id) {
            // The voter binds where the others dial it unless a controller
            // listener says otherwise.
            Some(addr) if s.controller && !listeners_named(raw) => {
                s.controller_addr = addr.clone();
            }
            Some(_) if s.controller => {}
            None if s.controller => {
                return Err(invalid(
                    "controller.quorum.voters",
                    v,
                    &format!("node.id {node_id} has the controller role but is not a voter"),
                ))
            }
            Some(_) => {
                return Err(invalid(
                    "controller.quorum.voters",
                    v,
                    &format!("node.id {node_id} is a voter but process.roles has no controller"),
                ))
            }
            None => {}
        }
        s.voters = Some(voters);
    } else if !s.controller {
        return Err(invalid(
            "process.roles",
            raw.get("process.roles").map_or("", |v| v.as_str()),
            "a broker-only node needs controller.quorum.voters",
        ));
    }
    if let Some(d) = raw.get("metadata.log.dir") {
        s.log_dir = Some(PathBuf::from(d.trim()));
    }
    let policy = &mut s.controller_policy;
    if let Some(v) = raw.get("broker.session.timeout.ms") {
        let ms: u64 = parse_num("broker.session.timeout.ms", v)?;
        policy.broker_session_timeout = Duration::from_millis(ms);
    }
    if let Some(v) = raw.get("leader.imbalance.check.interval.seconds") {
        let secs: u64 = parse_num("leader.imbalance.check.interval.seconds", v)?;
        policy.leader_imbalance_check_interval = Duration::from_secs(secs.max(1));
    }
    for (key, flag) in [
        (
            "auto.leader.rebalance.enable",
            &mut policy.auto_leader_rebalance_enable,
        ),
        (
            "unclean.leader.election.enable",
            &mut policy.unclean_leader_election_enable,
        ),
    ] {
        if let Some(v) = raw.get(key) {
            *flag = match v.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid(key, v, "must be true or false")),
            };
        }
    }
    Ok(s)
}

fn listeners_named(raw: &BTreeMap<String, String>) -> bool {
    raw.get("controller.listener.names").is_some_and(|names| {
        raw.get("listeners").is_some_and(|l| {
            names
                .split(',')
                .map(str::trim)
                .any(|n| !n.is_empty() && l.contains(&format!("{n}://")))
        })
    })
}

/// `inter.broker.listener.name` must be an advertised listener (as Kafka
/// requires); each of `controller.listener.names` a listener or an entry of
/// the protocol map.
fn check_listener_names(
    raw: &BTreeMap<String, String>,
    listeners: &[Listener],
    advertised: &[Listener],
    protocol_map: &BTreeMap<String, SecurityProtocol>,
) -> Result<(), ConfigError> {
    if let Some(v) = raw.get("inter.broker.listener.name") {
        if !advertised.iter().any(|l| l.name == v.trim()) {
            return Err(invalid(
                "inter.broker.listener.name",
                v,
                "must be the name of a listener in advertised.listeners",
            ));
        }
    }
    if let Some(v) = raw.get("controller.listener.names") {
        let names: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return Err(invalid(
                "controller.listener.names",
                v,
                "no listener name given",
            ));
        }
        for n in names {
            if !listeners.iter().any(|l| l.name == n) && !protocol_map.contains_key(n) {
                return Err(invalid(
                    "controller.listener.names",
                    v,
                    &format!("{n} is neither in listeners nor in listener.security.protocol.map"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses `listener.security.protocol.map` (`NAME:PROTOCOL,…`).
fn parse_protocol_map(v: Option<&str>) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    const KEY: &str = "listener.security.protocol.map";
    let mut out = BTreeMap::new();
    for item in v
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (name, proto) = item
            .split_once(':')
            .ok_or_else(|| invalid(KEY, item, "expected NAME:PROTOCOL"))?;
        let p = SecurityProtocol::parse(proto.trim()).ok_or_else(|| {
            invalid(
                KEY,
                item,
                "protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            )
        })?;
        out.insert(name.trim().to_string(), p);
    }
    Ok(out)
}

/// Parses `NAME://host:port[,…]` (security protocols are set afterwards). An empty host (`PLAINTEXT://:9092`) means
/// all interfaces, as in Kafka.
pub fn parse_listeners(key: &str, v: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, addr) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, item, "expected NAME://host:port"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, item, "missing :port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid(key, item, "bad port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        out.push(Listener {
            name: name.to_string(),
            host,
            port,
            security_protocol: SecurityProtocol::Plaintext,
        });
    }
    if out.is_empty() {
        return Err(invalid(key, v, "no listener given"));
    }
    Ok(out)
}

/// Parses Java `.properties` text: `key=value` or `key: value` or
/// `key value`, `#`/`!` comments, `\` line continuations.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with('!') || line.is_empty())
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            logical.push_str(stripped);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let sep = entry
            .find(['=', ':'])
            .or_else(|| entry.find(char::is_whitespace));
        let (k, v) = match sep {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry.as_str(), ""),
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config of these key/value pairs.
    fn m(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn listener_security_protocols_come_from_the_map_or_the_name() {
        let c = m(&[
            ("listeners", "SSL://:1,INTERNAL://:2"),
            ("listener.security.protocol.map", "INTERNAL:SASL_PLAINTEXT"),
        ])
        .unwrap();
        assert_eq!(c.listeners[0].security_protocol, SecurityProtocol::Ssl);
        assert_eq!(
            c.listeners[1].security_protocol,
            SecurityProtocol::SaslPlaintext
        );
        assert!(m(&[("listeners", "INTERNAL://:2")]).is_err());
        assert!(m(&[
            ("listeners", "A://:2"),
            ("listener.security.protocol.map", "A:KERBEROS")
        ])
        .is_err());
    }

    #[test]
    fn the_controller_listener_is_plaintext_or_ssl() {
        let with = |map: &str| {
            m(&[
                (
                    "listeners",
                    "PLAINTEXT://:19092,CONTROLLER://127.0.0.1:19093",
                ),
                ("listener.security.protocol.map", map),
                ("controller.listener.names", "CONTROLLER"),
            ])
        };
        let c = with("PLAINTEXT:PLAINTEXT,CONTROLLER:SSL").unwrap();
        assert_eq!(c.quorum.controller_listener.as_deref(), Some("CONTROLLER"));
        assert_eq!(c.quorum.controller_protocol, SecurityProtocol::Ssl);
        let c = with("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT").unwrap();
        assert_eq!(c.quorum.controller_protocol, SecurityProtocol::Plaintext);
        for sasl in ["SASL_SSL", "SASL_PLAINTEXT"] {
            let e = with(&format!("PLAINTEXT:PLAINTEXT,CONTROLLER:{sasl}"))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("listener.security.protocol.map"), "{e}");
            assert!(
                e.contains(
                    "SASL on the controller listener is not supported yet; use PLAINTEXT or SSL"
                ),
                "{e}"
            );
        }
        // A broker-only node names the controller listener in the map only.
        let e = m(&[
            ("process.roles", "broker"),
            ("node.id", "4"),
            ("controller.quorum.voters", "1@127.0.0.1:19093"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("SASL on the controller listener"), "{e}");
    }

    #[test]
    fn quorum_roles_voters_and_the_controller_listener() {
        // Embedded default: combined mode, one voter on an ephemeral loopback port.
        let c = m(&[]).unwrap();
        assert!(c.quorum.broker && c.quorum.controller);
        assert_eq!(c.quorum.voters, None);
        assert_eq!(c.quorum.controller_addr, "127.0.0.1:0");
        // The controller listener carries Raft only: not a Kafka listener.
        let c = m(&[
            ("node.id", "2"),
            (
                "listeners",
                "PLAINTEXT://:19092,CONTROLLER://127.0.0.1:19093",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("controller.listener.names", "CONTROLLER"),
            (
                "controller.quorum.voters",
                "1@h1:9093,2@127.0.0.1:19093,3@h3:9093",
            ),
            ("metadata.log.dir", "/m"),
        ])
        .unwrap();
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "PLAINTEXT");
        assert_eq!(c.quorum.controller_addr, "127.0.0.1:19093");
        assert_eq!(c.quorum.voters.as_ref().unwrap().len(), 3);
        assert_eq!(c.quorum.log_dir, Some(PathBuf::from("/m")));
        // Without a controller listener, a voter binds its voters entry.
        let c = m(&[
            ("node.id", "1"),
            ("controller.quorum.voters", "1@127.0.0.1:29093"),
        ])
        .unwrap();
        assert_eq!(c.quorum.controller_addr, "127.0.0.1:29093");
        // A broker-only node observes: it must not be a voter, and needs voters.
        let c = m(&[
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", "1@h1:9093"),
        ])
        .unwrap();
        assert!(c.quorum.broker && !c.quorum.controller);
        assert!(m(&[("process.roles", "broker")]).is_err());
        assert!(m(&[
            ("node.id", "1"),
            ("process.roles", "broker"),
            ("controller.quorum.voters", "1@h1:9093")
        ])
        .is_err());
        // A controller must be a voter.
        assert!(m(&[("node.id", "5"), ("controller.quorum.voters", "1@h1:9093")]).is_err());
        let c = m(&[("process.roles", "controller")]).unwrap();
        assert!(!c.quorum.broker && c.quorum.controller);
        for bad in ["", "zookeeper", "broker,proxy"] {
            assert!(m(&[("process.roles", bad)]).is_err(), "{bad:?}");
        }
        assert!(m(&[("controller.quorum.voters", "1@h")]).is_err());
    }

    #[test]
    fn inter_broker_and_controller_listener_names_must_name_listeners() {
        let listeners = ("listeners", "PLAINTEXT://:1,CONTROLLER://:2");
        let map = (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        );
        let c = m(&[
            listeners,
            map,
            ("inter.broker.listener.name", "PLAINTEXT"),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .unwrap();
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        assert!(m(&[listeners, map, ("inter.broker.listener.name", "INTERNAL")]).is_err());
        assert!(m(&[listeners, map, ("controller.listener.names", "CTRL")]).is_err());
        assert!(m(&[listeners, map, ("controller.listener.names", " ")]).is_err());
    }

    #[test]
    fn ssl_keys_and_their_listener_prefix_are_known() {
        let c = BrokerConfig::from_map(BTreeMap::from([
            ("ssl.keystore.location".to_string(), "/x".to_string()),
            (
                "listener.name.ssl.ssl.client.auth".to_string(),
                "required".to_string(),
            ),
            (
                "listener.name.ssl.ssl.keystore.locaton".to_string(),
                "typo".to_string(),
            ),
        ]))
        .unwrap();
        assert_eq!(
            c.ignored,
            vec!["listener.name.ssl.ssl.keystore.locaton".to_string()]
        );
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::from_map(BTreeMap::new()).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(
            c.listeners[0],
            Listener {
                name: "PLAINTEXT".into(),
                host: "localhost".into(),
                port: 9092,
                security_protocol: SecurityProtocol::Plaintext,
            }
        );
        assert_eq!(c.log_dirs, vec![PathBuf::from("./strom-data")]);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert!(c.auto_create_topics_enable);
        assert_eq!(
            c.admin_listener,
            Some(AdminListener {
                host: "127.0.0.1".into(),
                port: 9644
            })
        );
        assert!(!c.admin_listener_explicit);
    }

    #[test]
    fn admin_listener() {
        let m = |v: &str| BTreeMap::from([("strom.admin.listener".to_string(), v.to_string())]);
        let c = BrokerConfig::from_map(m("0.0.0.0:0")).unwrap();
        assert_eq!(c.admin_listener.unwrap().port, 0);
        assert!(c.admin_listener_explicit);
        assert!(BrokerConfig::from_map(m(""))
            .unwrap()
            .admin_listener
            .is_none());
        assert!(BrokerConfig::from_map(m("localhost")).is_err());
    }

    #[test]
    fn properties_and_overrides() {
        let text = "# comment\nnode.id=3\nlisteners = PLAINTEXT://127.0.0.1:19092\nlog.dirs=/a,/b\nsome.unknown.key=1\nlog.segment.bytes: 1048576\nlong.key=a\\\n  b\n";
        let mut m = parse_properties(text);
        assert_eq!(m.get("long.key").unwrap(), "ab");
        m.insert("num.partitions".into(), "4".into());
        let c = BrokerConfig::from_map(m).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listeners[0].port, 19092);
        assert_eq!(c.log_dirs.len(), 2);
        assert_eq!(c.log.segment_bytes, 1_048_576);
        assert_eq!(c.num_partitions, 4);
        assert!(c.ignored.contains(&"some.unknown.key".to_string()));
    }

    #[test]
    fn bad_values_are_errors() {
        for (k, v) in [
            ("num.partitions", "x"),
            ("num.partitions", "0"),
            ("listeners", "localhost:9092"),
            ("auto.create.topics.enable", "yes"),
            ("strom.flush.mode", "sometimes"),
            ("broker.session.timeout.ms", "soon"),
            ("unclean.leader.election.enable", "maybe"),
        ] {
            let m = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert!(
                BrokerConfig::from_map(m).is_err(),
                "{k}={v} must be rejected"
            );
        }
    }

    #[test]
    fn controller_policy_reaches_the_quorum_settings() {
        let c = BrokerConfig::from_map(BTreeMap::new()).unwrap();
        assert_eq!(
            c.quorum.controller_policy.broker_session_timeout,
            Duration::from_millis(9000)
        );
        let m = BTreeMap::from(
            [
                ("broker.session.timeout.ms", "3000"),
                ("leader.imbalance.check.interval.seconds", "5"),
                ("auto.leader.rebalance.enable", "false"),
                ("unclean.leader.election.enable", "true"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let p = BrokerConfig::from_map(m).unwrap().quorum.controller_policy;
        assert_eq!(p.broker_session_timeout, Duration::from_millis(3000));
        assert_eq!(p.leader_imbalance_check_interval, Duration::from_secs(5));
        assert!(!p.auto_leader_rebalance_enable);
        assert!(p.unclean_leader_election_enable);
    }
}
