//! Topic rules shared by CreateTopics, auto-creation and (later) configs:
//! Kafka's legal topic names and the table of topic-level configs.

use std::collections::BTreeMap;

use strom_protocol::TimestampType;
use strom_storage::{CleanupPolicy, Compression, LogConfig};

/// Kafka's `Topic.MAX_NAME_LENGTH`.
pub const MAX_NAME_LENGTH: usize = 249;

/// Why a topic name is illegal (Kafka's `InvalidTopicException` messages).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_NAME_LENGTH} characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Kafka treats `.` and `_` as the same in metric names, so two topics that
/// differ only there collide.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Long { min: i64 },
    Int { min: i64 },
    Double { min: f64, max: f64 },
    Bool,
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
}

/// One topic-level config: Kafka's name, type, default, documentation and
/// the broker configs (`server.properties`) that set its default, highest
/// precedence first, each with the factor that turns its unit into the
/// topic config's (`log.retention.hours` × 3 600 000 = `retention.ms`).
pub struct TopicConfigDef {
    pub name: &'static str,
    kind: Kind,
    pub default: &'static str,
    pub synonyms: &'static [(&'static str, i64)],
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    synonyms: &'static [(&'static str, i64)],
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        default,
        synonyms,
        doc,
    }
}

const MAX_LONG: &str = "9223372036854775807";

/// Topic-level configs Kafka 4.0 defines, with types, bounds, defaults and
/// broker synonyms.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", Kind::ListOf(&["delete", "compact"]), "delete", &[("log.cleanup.policy", 1)], "\"delete\" discards old segments by retention time or size; \"compact\" keeps the latest value of each key."),
    def("compression.type", Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]), "producer", &[("compression.type", 1)], "Final compression of the topic's data; \"producer\" keeps the producer's codec."),
    def("compression.gzip.level", Kind::Int { min: -1 }, "-1", &[("compression.gzip.level", 1)], "Gzip level when compression.type is gzip."),
    def("compression.lz4.level", Kind::Int { min: 1 }, "9", &[("compression.lz4.level", 1)], "LZ4 level when compression.type is lz4."),
    def("compression.zstd.level", Kind::Int { min: -131072 }, "3", &[("compression.zstd.level", 1)], "Zstandard level when compression.type is zstd."),
    def("delete.retention.ms", Kind::Long { min: 0 }, "86400000", &[("log.cleaner.delete.retention.ms", 1)], "How long tombstones are kept on compacted topics."),
    def("file.delete.delay.ms", Kind::Long { min: 0 }, "60000", &[("log.segment.delete.delay.ms", 1)], "Time to wait before deleting a segment's files."),
    def("flush.messages", Kind::Long { min: 1 }, MAX_LONG, &[("log.flush.interval.messages", 1)], "fsync after this many messages."),
    def("flush.ms", Kind::Long { min: 0 }, MAX_LONG, &[("log.flush.interval.ms", 1)], "fsync when the last one is older than this."),
    def("follower.replication.throttled.replicas", Kind::ListOf(&["", "*"]), "", &[], "Replicas throttled on the follower side."),
    def("index.interval.bytes", Kind::Int { min: 0 }, "4096", &[("log.index.interval.bytes", 1)], "Bytes between offset-index entries."),
    def("leader.replication.throttled.replicas", Kind::ListOf(&["", "*"]), "", &[], "Replicas throttled on the leader side."),
    def("local.retention.bytes", Kind::Long { min: -2 }, "-2", &[("log.local.retention.bytes", 1)], "Local retention size with tiered storage (-2: retention.bytes)."),
    def("local.retention.ms", Kind::Long { min: -2 }, "-2", &[("log.local.retention.ms", 1)], "Local retention time with tiered storage (-2: retention.ms)."),
    def("max.compaction.lag.ms", Kind::Long { min: 1 }, MAX_LONG, &[("log.cleaner.max.compaction.lag.ms", 1)], "Longest a record stays uncompacted."),
    def("max.message.bytes", Kind::Int { min: 0 }, "1048588", &[("message.max.bytes", 1)], "Largest record batch accepted."),
    def("message.timestamp.after.max.ms", Kind::Long { min: 0 }, "3600000", &[("log.message.timestamp.after.max.ms", 1)], "Largest allowed future skew of a CreateTime timestamp."),
    def("message.timestamp.before.max.ms", Kind::Long { min: 0 }, MAX_LONG, &[("log.message.timestamp.before.max.ms", 1)], "Largest allowed past skew of a CreateTime timestamp."),
    def("message.timestamp.type", Kind::OneOf(&["CreateTime", "LogAppendTime"]), "CreateTime", &[("log.message.timestamp.type", 1)], "Whether record timestamps are the producer's or the broker's."),
    def("min.cleanable.dirty.ratio", Kind::Double { min: 0.0, max: 1.0 }, "0.5", &[("log.cleaner.min.cleanable.ratio", 1)], "Dirty share of the log that triggers compaction."),
    def("min.compaction.lag.ms", Kind::Long { min: 0 }, "0", &[("log.cleaner.min.compaction.lag.ms", 1)], "Shortest time a record stays uncompacted."),
    def("min.insync.replicas", Kind::Int { min: 1 }, "1", &[("min.insync.replicas", 1)], "Replicas that must acknowledge an acks=all write."),
    def("preallocate", Kind::Bool, "false", &[("log.preallocate", 1)], "Preallocate segment files."),
    def("remote.storage.enable", Kind::Bool, "false", &[], "Tiered storage for the topic."),
    def("retention.bytes", Kind::Long { min: -1 }, "-1", &[("log.retention.bytes", 1)], "Largest partition size before old segments are deleted (-1: unlimited)."),
    def("retention.ms", Kind::Long { min: -1 }, "604800000", &[("log.retention.ms", 1), ("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)], "How long segments are kept (-1: forever)."),
    def("segment.bytes", Kind::Int { min: 14 }, "1073741824", &[("log.segment.bytes", 1)], "Segment file size."),
    def("segment.index.bytes", Kind::Int { min: 4 }, "10485760", &[("log.index.size.max.bytes", 1)], "Offset index size of a segment."),
    def("segment.jitter.ms", Kind::Long { min: 0 }, "0", &[("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", 3_600_000)], "Random jitter subtracted from segment.ms."),
    def("segment.ms", Kind::Long { min: 1 }, "604800000", &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)], "Roll the active segment after this long, even if not full."),
    def("unclean.leader.election.enable", Kind::Bool, "false", &[("unclean.leader.election.enable", 1)], "Allow out-of-sync replicas to become leader."),
];

/// The definition of a topic config, if Kafka has one by that name.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

impl TopicConfigDef {
    /// Kafka's `ConfigType` code for DescribeConfigs.
    pub fn type_code(&self) -> i8 {
        match self.kind {
            Kind::Bool => 1,
            Kind::OneOf(_) => 2,
            Kind::Int { .. } => 3,
            Kind::Long { .. } => 5,
            Kind::Double { .. } => 6,
            Kind::ListOf(_) => 7,
        }
    }

    /// Whether IncrementalAlterConfigs may APPEND/SUBTRACT it.
    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::ListOf(_))
    }

    /// The value the broker's `server.properties` gives it, if any: the
    /// first synonym set, converted to this config's unit, with its name.
    pub fn broker_value(
        &self,
        broker: &BTreeMap<String, String>,
    ) -> Option<(&'static str, String, String)> {
        self.synonyms.iter().find_map(|&(syn, factor)| {
            let raw = broker.get(syn)?;
            let value = if factor == 1 {
                raw.trim().to_string()
            } else {
                match raw.trim().parse::<i64>() {
                    Ok(n) if n < 0 => n.to_string(),
                    Ok(n) => n.saturating_mul(factor).to_string(),
                    Err(_) => raw.trim().to_string(),
                }
            };
            Some((syn, raw.clone(), value))
        })
    }
}

/// Checks one topic config; the error is the INVALID_CONFIG message.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    let Some(d) = topic_config_def(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let bad = |why: &str| {
        Err(format!(
            "Invalid value {value} for configuration {name}: {why}"
        ))
    };
    let v = value.trim();
    match d.kind {
        Kind::Long { min } | Kind::Int { min } => {
            let parsed = if matches!(d.kind, Kind::Int { .. }) {
                v.parse::<i32>().map(i64::from).ok()
            } else {
                v.parse::<i64>().ok()
            };
            match parsed {
                None => bad("Not a number of the right type"),
                Some(n) if n < min => bad(&format!("Value must be at least {min}")),
                Some(_) => Ok(()),
            }
        }
        Kind::Double { min, max } => match v.parse::<f64>() {
            Ok(x) if (min..=max).contains(&x) => Ok(()),
            Ok(_) => bad(&format!("Value must be between {min} and {max}")),
            Err(_) => bad("Not a number of type DOUBLE"),
        },
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad("Expected value to be either true or false"),
        },
        Kind::OneOf(allowed) => {
            if allowed.contains(&v) {
                Ok(())
            } else {
                bad(&format!("String must be one of: {}", allowed.join(", ")))
            }
        }
        Kind::ListOf(allowed) => {
            let items: Vec<&str> = v.split(',').map(str::trim).collect();
            if !items.is_empty() && items.iter().all(|i| allowed.contains(i)) {
                Ok(())
            } else {
                bad(&format!("Value must be a list of: {}", allowed.join(", ")))
            }
        }
    }
}

/// Checks a whole set of overrides together (rules across configs).
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in configs {
        validate_config(k, v)?;
    }
    let num = |k: &str| configs.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    if let (Some(min), Some(max)) = (num("min.compaction.lag.ms"), num("max.compaction.lag.ms")) {
        if min > max {
            return Err(format!(
                "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
            ));
        }
    }
    Ok(())
}

/// Applies one (validated) topic config value to a log config. Configs the
/// log does not use (replication, compression levels, tiered storage) are only
/// stored and described.
fn apply(c: &mut LogConfig, name: &str, value: &str) {
    let v = value.trim();
    let num = v.parse::<i64>().ok();
    match (name, num) {
        ("segment.bytes", Some(n)) => c.segment_bytes = n as u64,
        ("segment.ms", Some(n)) => c.segment_ms = Some(n as u64),
        ("segment.index.bytes", Some(n)) => c.segment_index_bytes = n as u64,
        ("index.interval.bytes", Some(n)) => c.index_interval_bytes = n as u64,
        ("flush.messages", Some(n)) => c.flush_messages = (n != i64::MAX).then_some(n as u64),
        ("flush.ms", Some(n)) => c.flush_ms = (n != i64::MAX).then_some(n as u64),
        ("max.message.bytes", Some(n)) => c.max_message_bytes = n as usize,
        ("retention.ms", Some(n)) => c.retention_ms = (n >= 0).then_some(n),
        ("retention.bytes", Some(n)) => c.retention_bytes = (n >= 0).then_some(n as u64),
        ("delete.retention.ms", Some(n)) => c.delete_retention_ms = n,
        ("min.compaction.lag.ms", Some(n)) => c.min_compaction_lag_ms = n,
        ("max.compaction.lag.ms", Some(n)) => c.max_compaction_lag_ms = n,
        ("file.delete.delay.ms", Some(n)) => c.file_delete_delay_ms = n,
        ("min.insync.replicas", Some(n)) => c.min_insync_replicas = n as u32,
        ("min.cleanable.dirty.ratio", _) => {
            if let Ok(x) = v.parse::<f64>() {
                c.min_cleanable_dirty_ratio = x;
            }
        }
        ("cleanup.policy", _) => {
            if let Some(p) = CleanupPolicy::parse(v) {
                c.cleanup_policy = p;
            }
        }
        ("message.timestamp.type", _) => {
            if let Some(t) = TimestampType::from_config(v) {
                c.timestamp_type = t;
            }
        }
        ("compression.type", _) => {
            c.compression = match v {
                "uncompressed" => Some(Compression::None),
                "gzip" => Some(Compression::Gzip),
                "snappy" => Some(Compression::Snappy),
                "lz4" => Some(Compression::Lz4),
                "zstd" => Some(Compression::Zstd),
                _ => None,
            }
        }
        _ => {}
    }
}

/// Applies the broker's `server.properties` synonyms of topic configs
/// (`log.retention.hours`, `log.cleanup.policy`, …) to the default log
/// config. A bad value is an error naming the broker key.
pub fn apply_broker_synonyms(
    log: &mut LogConfig,
    broker: &BTreeMap<String, String>,
) -> Result<(), (String, String, String)> {
    for d in TOPIC_CONFIGS {
        if let Some((syn, raw, value)) = d.broker_value(broker) {
            validate_config(d.name, &value).map_err(|why| (syn.to_string(), raw, why))?;
            apply(log, d.name, &value);
        }
    }
    Ok(())
}

/// The log settings of a topic: the broker defaults with the topic's overrides.
/// Configs are validated before they are stored, so parsing cannot fail here.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut c = defaults.clone();
    for (k, v) in overrides {
        apply(&mut c, k, v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(249)).is_ok());
        assert!(validate_name(&"a".repeat(250)).is_err());
        assert_eq!(collision_key("a.b"), collision_key("a_b"));
    }

    #[test]
    fn configs() {
        assert!(validate_config("retention.ms", "-1").is_ok());
        assert!(validate_config("retention.ms", "-2").is_err());
        assert!(validate_config("segment.bytes", "99999999999").is_err());
        assert!(validate_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_config("cleanup.policy", "forever").is_err());
        assert!(validate_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_config("no.such.config", "1").is_err());
        let c = log_config(
            &LogConfig::default(),
            &BTreeMap::from([
                ("segment.bytes".to_string(), "1024".to_string()),
                (
                    "message.timestamp.type".to_string(),
                    "LogAppendTime".to_string(),
                ),
            ]),
        );
        assert_eq!(c.segment_bytes, 1024);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        let c = log_config(
            &LogConfig::default(),
            &BTreeMap::from([
                ("retention.ms".to_string(), "-1".to_string()),
                ("retention.bytes".to_string(), "5000".to_string()),
                ("cleanup.policy".to_string(), "compact,delete".to_string()),
                ("min.cleanable.dirty.ratio".to_string(), "0.01".to_string()),
            ]),
        );
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.retention_bytes, Some(5000));
        assert!(c.cleanup_policy.compact && c.cleanup_policy.delete);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.01);
        // min.insync.replicas: at least 1, carried to the partition
        assert!(validate_config("min.insync.replicas", "0").is_err());
        let c = log_config(
            &LogConfig::default(),
            &BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
        );
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(LogConfig::default().min_insync_replicas, 1);
        // every default is itself valid
        for d in TOPIC_CONFIGS {
            assert!(validate_config(d.name, d.default).is_ok(), "{}", d.name);
        }
        assert!(validate_configs(&BTreeMap::from([
            ("min.compaction.lag.ms".to_string(), "10".to_string()),
            ("max.compaction.lag.ms".to_string(), "5".to_string()),
        ]))
        .is_err());
    }

    #[test]
    fn broker_synonyms() {
        let broker = BTreeMap::from([
            ("log.retention.hours".to_string(), "2".to_string()),
            ("log.cleanup.policy".to_string(), "compact".to_string()),
        ]);
        let mut c = LogConfig::default();
        apply_broker_synonyms(&mut c, &broker).unwrap();
        assert_eq!(c.retention_ms, Some(7_200_000));
        assert!(c.cleanup_policy.compact && !c.cleanup_policy.delete);
        let d = topic_config_def("retention.ms").unwrap();
        assert_eq!(
            d.broker_value(&broker).unwrap(),
            (
                "log.retention.hours",
                "2".to_string(),
                "7200000".to_string()
            )
        );
        // log.retention.ms wins over hours
        let mut b2 = broker.clone();
        b2.insert("log.retention.ms".into(), "5".into());
        assert_eq!(d.broker_value(&b2).unwrap().2, "5");
        let bad = BTreeMap::from([("log.cleanup.policy".to_string(), "forever".to_string())]);
        assert!(apply_broker_synonyms(&mut c, &bad).is_err());
    }
}
