//! Consumer-group lag computed by the broker, for the metrics collector
//! (`kafka_consumergroup_lag`, `kafka_consumergroup_current_offset`).
//!
//! The group coordinator's shards are owned by async tasks, but a scrape is
//! synchronous, so each shard task publishes the committed offsets of the
//! groups it just changed (after every replay, and all of them after its
//! load) into one shared [`CommittedOffsets`]. A scrape reads that map under
//! a read lock and pairs each offset with the partition's high watermark.
//!
//! Owner: [`crate::group::GroupCoordinator`] holds the `Arc`; shard tasks
//! write it, [`LagSource`] (installed in the broker's metrics) reads it.
//! A group lives on exactly one shard, so per-group replacement never races
//! between shards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, Weak};

use crate::broker::Broker;
use crate::group::records::CoordinatorRecord;
use crate::group::state::GroupShard;
use crate::metrics::{GroupLag, GroupLagSource};

/// One group's committed offsets: `(topic, partition) → offset`.
type GroupOffsets = BTreeMap<(String, i32), i64>;

/// Committed offsets per group.
#[derive(Default)]
pub struct CommittedOffsets {
    groups: RwLock<BTreeMap<String, GroupOffsets>>,
}

impl CommittedOffsets {
    /// Replaces `group`'s committed offsets (none: the group is forgotten).
    pub fn publish(&self, group: &str, offsets: BTreeMap<(String, i32), i64>) {
        let mut groups = self.groups.write().unwrap();
        if offsets.is_empty() {
            groups.remove(group);
        } else {
            groups.insert(group.to_string(), offsets);
        }
    }

    /// Copies `group`'s committed offsets out of `shard` (the authority).
    pub fn publish_from(&self, shard: &GroupShard, group: &str) {
        let mut offsets = BTreeMap::new();
        for (topic, parts) in shard.fetch_offsets(group, None) {
            for (p, o) in parts {
                if let Some(o) = o.filter(|o| o.offset >= 0) {
                    offsets.insert((topic.clone(), p), o.offset);
                }
            }
        }
        self.publish(group, offsets);
    }

    /// After a shard's load: publishes every group the shard holds.
    pub fn publish_all(&self, shard: &GroupShard) {
        let (_, offsets) = shard.durable_view();
        for group in offsets.keys() {
            self.publish_from(shard, group);
        }
    }

    /// After a replay of `records`: refreshes the groups they touch.
    pub fn publish_touched(&self, shard: &GroupShard, records: &[CoordinatorRecord]) {
        let touched: BTreeSet<&str> = records
            .iter()
            .filter_map(|r| match r {
                CoordinatorRecord::OffsetCommit { group, .. }
                | CoordinatorRecord::GroupMetadata { group, .. } => Some(group.as_str()),
                _ => None,
            })
            .collect();
        for group in touched {
            self.publish_from(shard, group);
        }
    }

    /// `(group, topic, partition, committed offset)`, sorted.
    pub fn snapshot(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.read().unwrap();
        groups
            .iter()
            .flat_map(|(g, offs)| {
                offs.iter()
                    .map(move |((t, p), o)| (g.clone(), t.clone(), *p, *o))
            })
            .collect()
    }
}

/// The broker's [`GroupLagSource`]: committed offsets against high
/// watermarks, as `strom group describe` computes lag
/// (`max(0, high watermark − committed)`). Partitions this broker does not
/// host (deleted topics) are left out.
pub struct LagSource {
    pub offsets: Arc<CommittedOffsets>,
    pub broker: Weak<Broker>,
}

impl GroupLagSource for LagSource {
    fn group_lag(&self) -> Vec<GroupLag> {
        let Some(broker) = self.broker.upgrade() else {
            return Vec::new();
        };
        self.offsets
            .snapshot()
            .into_iter()
            .filter_map(|(group, topic, partition, committed)| {
                let p = broker.replicas.partition(&topic, partition)?;
                let high = p.high_watermark().0;
                Some(GroupLag {
                    group,
                    topic,
                    partition,
                    committed,
                    lag: (high - committed).max(0),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_and_forgets_a_group() {
        let c = CommittedOffsets::default();
        c.publish(
            "g",
            BTreeMap::from([(("t".to_string(), 0), 5), (("t".to_string(), 1), 7)]),
        );
        c.publish("h", BTreeMap::from([(("u".to_string(), 0), 1)]));
        assert_eq!(
            c.snapshot(),
            vec![
                ("g".into(), "t".into(), 0, 5),
                ("g".into(), "t".into(), 1, 7),
                ("h".into(), "u".into(), 0, 1),
            ]
        );
        c.publish("g", BTreeMap::from([(("t".to_string(), 1), 9)]));
        c.publish("h", BTreeMap::new());
        assert_eq!(c.snapshot(), vec![("g".into(), "t".into(), 1, 9)]);
    }
}
