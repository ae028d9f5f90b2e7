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
