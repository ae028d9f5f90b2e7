//! The replicas this broker hosts (Kafka's ReplicaManager), by topic.
//!
//! Lookups happen on every produce and fetch, so the map is keyed by topic
//! name (`&str` lookups, no allocation) and each topic holds its partitions
//! in a slice indexed by partition number.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::partition::Partition;

/// The hosted partitions. Writers: topic create/delete. Readers: handlers.
#[derive(Default)]
pub struct ReplicaManager {
    topics: RwLock<HashMap<String, Arc<[Arc<Partition>]>>>,
}

impl ReplicaManager {
    /// The partition, if this broker hosts it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap();
        let parts = topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| parts.get(i))
            .cloned()
    }

    /// All partitions of a topic, in partition order.
    pub fn topic_partitions(&self, topic: &str) -> Option<Arc<[Arc<Partition>]>> {
        self.topics.read().unwrap().get(topic).cloned()
    }

    pub fn add_topic(&self, topic: &str, partitions: Vec<Arc<Partition>>) {
        self.topics
            .write()
            .unwrap()
            .insert(topic.to_string(), partitions.into());
    }

    pub fn remove_topic(&self, topic: &str) -> Option<Arc<[Arc<Partition>]>> {
        self.topics.write().unwrap().remove(topic)
    }

    /// Number of hosted partitions.
    pub fn partition_count(&self) -> usize {
        self.topics.read().unwrap().values().map(|p| p.len()).sum()
    }
}
