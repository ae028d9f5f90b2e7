//! Transactional offsets (TxnOffsetCommit) in a group shard, the Kafka way:
//! they are written to `__consumer_offsets` as a transactional batch of the
//! transaction's producer, kept pending per producer id while replaying,
//! and materialized (COMMIT marker) or dropped (ABORT marker) when the
//! transaction's marker reaches the same partition — at load too, so a
//! broker restart in the middle of a transaction loses nothing.

use std::collections::BTreeMap;

use super::records::CoordinatorRecord;
use super::state::{GroupShard, ReplayMode, Reply, Token};

/// Producer id → its pending offset records, in log order.
#[derive(Default, Debug)]
pub struct PendingTxnOffsets {
    by_producer: BTreeMap<i64, Vec<CoordinatorRecord>>,
}

impl GroupShard {
    /// Replays a transactional batch of offset records of `pid`.
    pub fn stage_txn_offsets(&mut self, pid: i64, records: Vec<CoordinatorRecord>) {
        self.txn_offsets
            .by_producer
            .entry(pid)
            .or_default()
            .extend(records);
    }

    /// Replays a COMMIT/ABORT marker of `pid`: its pending offsets become
    /// committed offsets or are dropped. Returns the materialized records.
    pub fn complete_txn_offsets(
        &mut self,
        now: i64,
        pid: i64,
        commit: bool,
        mode: ReplayMode,
        replies: &mut Vec<(Token, Reply)>,
    ) -> Vec<CoordinatorRecord> {
        let records = self
            .txn_offsets
            .by_producer
            .remove(&pid)
            .unwrap_or_default();
        if !commit {
            return Vec::new();
        }
        for r in &records {
            self.replay(now, r, mode, replies);
        }
        records
    }

    /// Partitions of `group` with transactional offsets not yet committed
    /// or aborted (OffsetFetch `require_stable`: UNSTABLE_OFFSET_COMMIT).
    pub fn pending_txn_offsets(&self, group: &str) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for records in self.txn_offsets.by_producer.values() {
            for r in records {
                if let CoordinatorRecord::OffsetCommit {
                    group: g,
                    topic,
                    partition,
                    ..
                } = r
                {
                    if g == group && !out.contains(&(topic.clone(), *partition)) {
                        out.push((topic.clone(), *partition));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::records::OffsetCommitValue;
    use crate::group::GroupConfig;

    fn commit(group: &str, partition: i32, offset: i64) -> CoordinatorRecord {
        CoordinatorRecord::OffsetCommit {
            group: group.to_string(),
            topic: "t".to_string(),
            partition,
            value: Some(OffsetCommitValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 1,
                expire_timestamp: -1,
            }),
        }
    }

    fn offset(shard: &GroupShard, group: &str, partition: i32) -> Option<i64> {
        let got = shard.fetch_offsets(group, Some(&[("t".to_string(), vec![partition])]));
        got[0].1[0].1.as_ref().map(|o| o.offset)
    }

    #[test]
    fn pending_until_the_marker_then_committed_or_dropped() {
        let mut shard = GroupShard::new(GroupConfig::default(), 0);
        let mut replies = Vec::new();
        shard.replay(0, &commit("g", 0, 5), ReplayMode::Load, &mut replies);
        // two producers' transactions interleaved in the log
        shard.stage_txn_offsets(7, vec![commit("g", 0, 10)]);
        shard.stage_txn_offsets(8, vec![commit("g", 1, 20)]);
        shard.stage_txn_offsets(7, vec![commit("g", 0, 11)]);
        assert_eq!(
            offset(&shard, "g", 0),
            Some(5),
            "invisible before the marker"
        );
        assert_eq!(offset(&shard, "g", 1), None);
        let mut pending = shard.pending_txn_offsets("g");
        pending.sort();
        assert_eq!(pending, vec![("t".to_string(), 0), ("t".to_string(), 1)]);
        assert!(shard.pending_txn_offsets("other").is_empty());

        let done = shard.complete_txn_offsets(0, 8, false, ReplayMode::Load, &mut replies);
        assert!(done.is_empty());
        assert_eq!(offset(&shard, "g", 1), None, "aborted: dropped");
        let done = shard.complete_txn_offsets(0, 7, true, ReplayMode::Load, &mut replies);
        assert_eq!(done.len(), 2);
        assert_eq!(
            offset(&shard, "g", 0),
            Some(11),
            "committed: the last one wins"
        );
        assert!(shard.pending_txn_offsets("g").is_empty());
        // a marker without pending offsets (AddOffsetsToTxn only) changes nothing
        assert!(shard
            .complete_txn_offsets(0, 9, true, ReplayMode::Load, &mut replies)
            .is_empty());
        assert_eq!(offset(&shard, "g", 0), Some(11));
    }
}
