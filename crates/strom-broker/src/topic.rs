//! Topic rules shared by CreateTopics, auto-creation and (later) configs:
//! Kafka's legal topic names and the table of topic-level configs.

use std::collections::BTreeMap;

use strom_protocol::TimestampType;
use strom_storage::LogConfig;

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

#[derive(Clone, Copy)]
enum Kind {
    Long { min: i64 },
    Int { min: i64 },
    Double { min: f64, max: f64 },
    Bool,
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
}

/// Topic-level configs Kafka 4.0 defines, with their types and bounds.
const TOPIC_CONFIGS: &[(&str, Kind)] = &[
    ("cleanup.policy", Kind::ListOf(&["delete", "compact"])),
    (
        "compression.type",
        Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    ("compression.gzip.level", Kind::Int { min: -1 }),
    ("compression.lz4.level", Kind::Int { min: 1 }),
    ("compression.zstd.level", Kind::Int { min: -131072 }),
    ("delete.retention.ms", Kind::Long { min: 0 }),
    ("file.delete.delay.ms", Kind::Long { min: 0 }),
    ("flush.messages", Kind::Long { min: 1 }),
    ("flush.ms", Kind::Long { min: 0 }),
    (
        "follower.replication.throttled.replicas",
        Kind::OneOf(&["", "*"]),
    ),
    ("index.interval.bytes", Kind::Int { min: 0 }),
    (
        "leader.replication.throttled.replicas",
        Kind::OneOf(&["", "*"]),
    ),
    ("local.retention.bytes", Kind::Long { min: -2 }),
    ("local.retention.ms", Kind::Long { min: -2 }),
    ("max.compaction.lag.ms", Kind::Long { min: 1 }),
    ("max.message.bytes", Kind::Int { min: 0 }),
    ("message.timestamp.after.max.ms", Kind::Long { min: 0 }),
    ("message.timestamp.before.max.ms", Kind::Long { min: 0 }),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    (
        "min.cleanable.dirty.ratio",
        Kind::Double { min: 0.0, max: 1.0 },
    ),
    ("min.compaction.lag.ms", Kind::Long { min: 0 }),
    ("min.insync.replicas", Kind::Int { min: 1 }),
    ("preallocate", Kind::Bool),
    ("remote.storage.enable", Kind::Bool),
    ("retention.bytes", Kind::Long { min: -1 }),
    ("retention.ms", Kind::Long { min: -1 }),
    ("segment.bytes", Kind::Int { min: 14 }),
    ("segment.index.bytes", Kind::Int { min: 4 }),
    ("segment.jitter.ms", Kind::Long { min: 0 }),
    ("segment.ms", Kind::Long { min: 1 }),
    ("unclean.leader.election.enable", Kind::Bool),
];

/// Checks one topic config; the error is the INVALID_CONFIG message.
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    let Some((_, kind)) = TOPIC_CONFIGS.iter().find(|(n, _)| *n == name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let bad = |why: &str| {
        Err(format!(
            "Invalid value {value} for configuration {name}: {why}"
        ))
    };
    let v = value.trim();
    match *kind {
        Kind::Long { min } | Kind::Int { min } => {
            let parsed = if matches!(kind, Kind::Int { .. }) {
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

/// The log settings of a topic: the broker defaults with the topic's overrides.
/// Configs are validated before they are stored, so parsing cannot fail here.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut c = defaults.clone();
    let num = |k: &str| overrides.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    if let Some(v) = num("segment.bytes") {
        c.segment_bytes = v as u64;
    }
    if let Some(v) = num("segment.ms") {
        c.segment_ms = Some(v as u64);
    }
    if let Some(v) = num("segment.index.bytes") {
        c.segment_index_bytes = v as u64;
    }
    if let Some(v) = num("index.interval.bytes") {
        c.index_interval_bytes = v as u64;
    }
    if let Some(v) = num("flush.messages") {
        c.flush_messages = (v != i64::MAX).then_some(v as u64);
    }
    if let Some(v) = num("flush.ms") {
        c.flush_ms = (v != i64::MAX).then_some(v as u64);
    }
    if let Some(v) = num("max.message.bytes") {
        c.max_message_bytes = v as usize;
    }
    if let Some(t) = overrides
        .get("message.timestamp.type")
        .and_then(|v| TimestampType::from_config(v))
    {
        c.timestamp_type = t;
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
    }
}
