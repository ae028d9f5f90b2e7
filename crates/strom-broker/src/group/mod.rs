//! The group coordinator (Kafka's `GroupCoordinator`): consumer groups and
//! committed offsets, kept in the compacted internal topic
//! `__consumer_offsets`.
//!
//! - [`records`]: the record formats of `__consumer_offsets` (Kafka's own).
//! - [`state`]: the pure state machine of one partition (no I/O, fake-clock
//!   testable).
//! - [`runtime`]: one task per partition that runs operations, appends their
//!   records through the [`crate::partition::Partition`] façade, waits for
//!   the high watermark, replays, then answers; loading is replay.
//! - [`coordinator`]: routes a group to its partition and creates the topic
//!   on first use.
//! - [`hosting`]: which partitions this broker loads (those it leads), also
//!   used by the transaction coordinator.

pub mod consumer;
pub mod coordinator;
pub(crate) mod hosting;
pub mod records;
pub mod runtime;
pub mod state;
pub mod txn_offsets;

pub use coordinator::{CoordinatorError, GroupCoordinator};

/// The internal topic holding groups and offsets.
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";

/// Broker settings of the group coordinator (Kafka's names in comments).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
    /// `offsets.retention.minutes`, in ms
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.segment.bytes`
    pub offsets_topic_segment_bytes: i64,
    /// `group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`
    pub consumer: consumer::ConsumerGroupConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            offsets_retention_ms: 10_080 * 60_000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            offsets_topic_num_partitions: 50,
            offsets_topic_segment_bytes: 104_857_600,
            consumer: Default::default(),
        }
    }
}

/// Java's `String.hashCode` (over UTF-16 code units), so groups land on the
/// same partition as in Kafka.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Kafka's `partitionFor(groupId)`: `Utils.abs(hashCode) % partitions`, where
/// `Utils.abs(Integer.MIN_VALUE)` is 0.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn java_hash_matches_kafka() {
        // Values from Java: "".hashCode() = 0, "hello".hashCode() = 99162322,
        // "polygenelubricants".hashCode() = Integer.MIN_VALUE,
        // "ü€".hashCode() = 252*31 + 8364.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_string_hash("ü€"), 252 * 31 + 8364);
        // A surrogate pair counts as two code units.
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
        // "console-consumer-1" and a negative hash.
        let h = java_string_hash("my-group-negative-hash-xyz");
        assert_eq!(
            partition_for("my-group-negative-hash-xyz", 50),
            h.unsigned_abs() as i32 % 50
        );
    }
}
