//! The partition log (Kafka's `UnifiedLog`/`LogSegment`/`LogManager`).
//!
//! On-disk layout is Kafka's: `<log.dir>/<topic>-<partition>/` holds
//! `<20-digit base offset>.log` (record batches, verbatim), `.index`,
//! `.timeindex` and a `leader-epoch-checkpoint`; each log dir holds a
//! `recovery-point-offset-checkpoint` and, after a clean shutdown, the
//! `.kafka_cleanshutdown` marker. Storage never decodes protocol messages:
//! it sees batches through `strom_protocol::batch` and, where it must look at
//! records (timestamp lookups), `strom_protocol::records`.

mod checkpoint;
mod cleaner;
mod index;
pub mod leader_epoch;
mod log;
mod manager;
pub mod producer_state;
mod scan;

use std::fmt;

use strom_protocol::batch::BatchError;
pub use strom_protocol::batch::Compression;
pub use strom_protocol::{LeaderEpoch, Offset, TimestampType};
use thiserror::Error;

pub use crate::cleaner::{CleanStats, OffsetMap};
pub use crate::log::Log;
pub use crate::manager::LogManager;
pub use crate::producer_state::{AbortedTxn, ProducerStateEntry, ProducerStateError};

/// A topic partition; its log directory is named `"{topic}-{partition}"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    /// Convenience constructor.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// Parses a log directory name: the partition follows the *last* `-`
    /// (topics may contain `-` and `.`). `None` for names that are not logs
    /// (hidden, `-delete` suffix, no partition number).
    pub fn from_dir_name(name: &str) -> Option<TopicPartition> {
        if name.starts_with('.') || name.ends_with("-delete") {
            return None;
        }
        let (topic, part) = name.rsplit_once('-')?;
        if topic.is_empty() || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let partition = part.parse().ok()?;
        Some(TopicPartition::new(topic, partition))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// When appended data is fsynced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushMode {
    /// Kafka's `flush.messages` / `flush.ms` (by default: never; rely on
    /// replication and the OS page cache).
    #[default]
    Policy,
    /// fsync before an append returns, with group commit: one fsync covers
    /// every append that finished writing before it started.
    Always,
}

/// Per-log configuration (Kafka's topic-level log configs).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed it.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older.
    pub segment_ms: Option<u64>,
    /// `segment.index.bytes`: roll when the offset index would exceed it.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes between offset-index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync after this many unflushed records.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the last flush is older (see [`Log::flush_if_due`]).
    pub flush_ms: Option<u64>,
    pub flush_mode: FlushMode,
    /// `max.message.bytes`: largest accepted batch.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `cleanup.policy`: which of retention (`delete`) and compaction
    /// (`compact`) apply.
    pub cleanup_policy: CleanupPolicy,
    /// `retention.ms`: delete rolled segments whose largest timestamp is
    /// older (`None`: keep forever).
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete the oldest rolled segments while the log is
    /// larger (`None`: no size limit).
    pub retention_bytes: Option<u64>,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is compacted
    /// whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `file.delete.delay.ms`: how long a deleted segment lingers as
    /// `.deleted` (readers that opened it finish first).
    pub file_delete_delay_ms: i64,
    /// `compression.type`: the codec the topic's batches are stored with
    /// (the broker recompresses producer batches of another codec); `None`
    /// is `producer` (batches are kept as produced).
    pub compression: Option<Compression>,
    /// `min.insync.replicas`: in-sync replicas an `acks=all` append needs.
    /// The log does not replicate; it carries the value for the partition
    /// that does (as Kafka's `LogConfig` does).
    pub min_insync_replicas: u32,
}

/// Kafka's `cleanup.policy`: `delete`, `compact` or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    /// Parses Kafka's list syntax (`"compact,delete"`); `None` for unknown items.
    pub fn parse(s: &str) -> Option<CleanupPolicy> {
        let mut p = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => return None,
            }
        }
        Some(p)
    }
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy {
            delete: true,
            compact: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 60 * 60 * 1000),
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: None,
            flush_mode: FlushMode::Policy,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::default(),
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            file_delete_delay_ms: 60_000,
            compression: None,
            min_insync_replicas: 1,
        }
    }
}

/// Errors of the log. Each maps to one Kafka error code at the edge.
#[derive(Debug, Error)]
pub enum LogError {
    /// Bad CRC, bad framing, trailing bytes, magic != 2, empty input
    /// (CORRUPT_MESSAGE).
    #[error("corrupt record: {0}")]
    CorruptRecord(String),
    /// Well-framed but semantically invalid batch: no records, record count
    /// disagreeing with the offset range, unknown compression codec
    /// (INVALID_RECORD).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// One batch is larger than `max.message.bytes` (MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// The whole append is larger than a segment (RECORD_LIST_TOO_LARGE).
    #[error("append of {size} bytes exceeds segment.bytes {max}")]
    RecordBatchTooLarge { size: usize, max: u64 },
    /// A read or truncation outside `[log_start, log_end]` (OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// The log was closed or deleted; the partition is gone from this
    /// broker (NOT_LEADER_OR_FOLLOWER / KAFKA_STORAGE_ERROR at the edge).
    #[error("log {0} is closed")]
    Closed(String),
    /// Two log dirs hold the same partition, or a log dir is unusable
    /// (KAFKA_STORAGE_ERROR).
    #[error("log directory problem: {0}")]
    LogDir(String),
    /// Disk I/O failed (KAFKA_STORAGE_ERROR).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A producer's batch breaks idempotence or transaction rules
    /// (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, …).
    #[error("{0}")]
    Producer(#[from] ProducerStateError),
}

impl From<BatchError> for LogError {
    fn from(e: BatchError) -> Self {
        LogError::CorruptRecord(e.to_string())
    }
}

/// What an append did (Kafka's `LogAppendInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogAppendInfo {
    pub first_offset: Offset,
    pub last_offset: Offset,
    /// The broker time stamped on the batches, or -1 with `CreateTime`.
    pub log_append_time: i64,
    pub log_start_offset: Offset,
    pub max_timestamp: i64,
    pub record_count: i64,
    pub bytes: usize,
    /// The batch was a retry of one already in the log (same producer,
    /// epoch and sequences): nothing was written, and the offsets are the
    /// original ones.
    pub duplicate: bool,
}

/// What a read returned (Kafka's `FetchDataInfo` plus the offsets a Fetch
/// response carries).
#[derive(Clone, Debug)]
pub struct FetchDataInfo {
    /// Whole batches, verbatim.
    pub records: bytes::Bytes,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;
