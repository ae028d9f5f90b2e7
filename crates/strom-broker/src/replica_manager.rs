//! The replicas this broker hosts (Kafka's ReplicaManager), by topic.
//!
//! Lookups happen on every produce and fetch, so the map is keyed by topic
//! name (`&str` lookups, no allocation) and each topic holds its partitions
//! in a slice indexed by partition number. A slot is `None` for a partition
//! of the topic that this broker does not replicate: no log, no directory.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use crate::broker::{now_ms, Broker};
use crate::partition::{Partition, PartitionState};
use crate::replication::client::InterBrokerSecurity;

/// Kafka's answer for a partition this broker does not host: the topic
/// and partition exist (another broker leads it) → NOT_LEADER_OR_FOLLOWER,
/// so the client refreshes its metadata; otherwise
/// UNKNOWN_TOPIC_OR_PARTITION.
pub fn missing_partition_error(
    broker: &Broker,
    topic: &str,
    partition: i32,
) -> kafka_protocol::error::ResponseError {
    use kafka_protocol::error::ResponseError;
    let known = broker
        .metadata
        .image()
        .topic(topic)
        .is_some_and(|t| (0..t.partitions).contains(&partition));
    if known {
        ResponseError::NotLeaderOrFollower
    } else {
        ResponseError::UnknownTopicOrPartition
    }
}

/// A topic's partitions by number; `None` where this broker is no replica.
pub type PartitionSlots = Arc<[Option<Arc<Partition>>]>;

/// The hosted partitions. Writers: topic create/delete. Readers: handlers.
#[derive(Default)]
pub struct ReplicaManager {
    topics: RwLock<HashMap<String, PartitionSlots>>,
    /// The replica fetchers of the partitions this broker follows.
    pub fetchers: crate::replication::fetcher::ReplicaFetcherManager,
    /// Whether the ISR-shrink task runs (started when first leading).
    pub(crate) isr_task_started: AtomicBool,
    /// How the replica fetchers connect to leaders (built on first use).
    inter_broker: std::sync::OnceLock<Result<Arc<InterBrokerSecurity>, String>>,
}

impl ReplicaManager {
    /// The partition, if this broker hosts it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap();
        let parts = topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| parts.get(i))
            .and_then(|slot| slot.clone())
    }

    /// A topic's partition slots, indexed by partition number (`None`: not
    /// replicated here).
    pub fn topic_partitions(&self, topic: &str) -> Option<PartitionSlots> {
        self.topics.read().unwrap().get(topic).cloned()
    }

    /// The partitions of a topic this broker hosts, in partition order.
    pub fn hosted_partitions(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .unwrap()
            .get(topic)
            .map(|parts| parts.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Sets a topic's partition slots (replacing any before).
    pub fn add_topic(&self, topic: &str, partitions: Vec<Option<Arc<Partition>>>) {
        self.topics
            .write()
            .unwrap()
            .insert(topic.to_string(), partitions.into());
    }

    /// Removes a topic; its partitions stop fetching.
    pub fn remove_topic(&self, topic: &str) -> Option<PartitionSlots> {
        let removed = self.topics.write().unwrap().remove(topic);
        for p in removed.iter().flat_map(|parts| parts.iter().flatten()) {
            self.fetchers.remove(&p.topic_partition);
        }
        removed
    }

    /// Makes each partition the leader or a follower as the metadata image
    /// now registers it (Kafka's `applyDelta` / LeaderAndIsr): B's lifecycle
    /// calls this after every applied image change with the hosted
    /// partitions whose registration changed, and once with all of them at
    /// start-up. A new leader starts its epoch at its log end and tracks its
    /// followers; a follower stops serving clients and is handed to the
    /// replica fetchers (truncation first, then fetching); a partition this
    /// broker no longer replicates stops fetching (the log is deleted by the
    /// caller). Stale states (older epochs than applied) are ignored.
    /// Call it inside the broker's Tokio runtime: fetchers and the ISR task
    /// are spawned on it.
    pub fn apply_partition_states(
        &self,
        broker: &Arc<Broker>,
        changes: Vec<(Arc<Partition>, PartitionState)>,
    ) {
        let local = broker.node_id();
        let now = now_ms();
        for (partition, state) in changes {
            match partition.apply_state(local, &state, now) {
                None => {}
                Some(role) => crate::replication::on_role_change(broker, &partition, role),
            }
        }
    }

    /// The inter-broker listener's TLS and SASL settings for the replica
    /// fetchers, read from the config once; a bad setting is an error every
    /// fetcher reports (naming the key).
    pub fn inter_broker_security(
        &self,
        broker: &Broker,
    ) -> Result<Arc<InterBrokerSecurity>, String> {
        self.inter_broker
            .get_or_init(|| InterBrokerSecurity::from_config(broker).map(Arc::new))
            .clone()
    }

    /// Every hosted partition.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .unwrap()
            .values()
            .flat_map(|p| p.iter().flatten().cloned())
            .collect()
    }

    /// Number of hosted partitions.
    pub fn partition_count(&self) -> usize {
        self.topics
            .read()
            .unwrap()
            .values()
            .map(|p| p.iter().flatten().count())
            .sum()
    }
}
