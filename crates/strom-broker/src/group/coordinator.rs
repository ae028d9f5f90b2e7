//! [`GroupCoordinator`]: the entry point handlers use. Maps a group id to
//! its `__consumer_offsets` partition (Kafka's placement) and to the shard
//! task of that partition, creating the topic on first use as Kafka does.
//!
//! Owner: [`crate::Broker`]. Concurrency: shared; the shard list is set once
//! (under `init`) and then only read.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kafka_protocol::error::ResponseError;
use strom_storage::LogError;
use tracing::info;

use super::hosting::{led_partitions, sync_shards};
use super::runtime::ShardHandle;
use super::{partition_for, GroupConfig, CONSUMER_OFFSETS};
use crate::broker::{Broker, NewTopic, TopicError};
use crate::group_lag::CommittedOffsets;

/// Why the coordinator cannot serve a request.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("the group coordinator is not available")]
    NotAvailable,
    /// Another broker leads the group's `__consumer_offsets` partition (or
    /// this one stopped leading it): the client finds the coordinator again.
    #[error("this broker is not the coordinator of the group")]
    NotCoordinator,
    #[error("cannot create {CONSUMER_OFFSETS}: {0}")]
    Topic(#[from] TopicError),
    #[error("__consumer_offsets log: {0}")]
    Log(#[from] LogError),
}

impl CoordinatorError {
    /// Kafka's error code for it.
    pub fn code(&self) -> ResponseError {
        crate::errors::coordinator_error_code(self)
    }
}

/// The group coordinator of this broker: one shard per `__consumer_offsets`
/// partition this broker leads (Kafka's `onElection`: loaded by replaying
/// the partition; `onResignation`: dropped, its task stops).
pub struct GroupCoordinator {
    config: GroupConfig,
    /// Loaded shards by partition.
    shards: RwLock<BTreeMap<i32, ShardHandle>>,
    init: tokio::sync::Mutex<()>,
    /// Published by the shards for the lag metrics (`crate::group_lag`).
    committed: Arc<CommittedOffsets>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            shards: RwLock::new(BTreeMap::new()),
            init: tokio::sync::Mutex::new(()),
            committed: Arc::default(),
        }
    }

    /// Committed offsets of every loaded group, for the lag metrics.
    pub fn committed_offsets(&self) -> &Arc<CommittedOffsets> {
        &self.committed
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// At broker start: loads the `__consumer_offsets` partitions this
    /// broker leads (the topic is created on first use).
    pub async fn startup(&self, broker: &Broker) {
        self.on_leadership(broker).await;
    }

    /// After a metadata change: loads the partitions this broker now leads,
    /// drops those it no longer leads.
    pub async fn on_leadership(&self, broker: &Broker) {
        let _guard = self.init.lock().await;
        let image = broker.metadata.image();
        let Some(t) = image.topic(CONSUMER_OFFSETS) else {
            if !self.shards.read().unwrap().is_empty() {
                self.shards.write().unwrap().clear();
            }
            return;
        };
        let led = led_partitions(broker, CONSUMER_OFFSETS, t);
        let load = |p, part| {
            info!(
                partition = p,
                "group coordinator: loading {CONSUMER_OFFSETS} partition"
            );
            let h = ShardHandle::start(part, self.config.clone(), self.committed.clone());
            std::future::ready(Some(h))
        };
        sync_shards(
            &self.shards,
            led,
            "group coordinator",
            CONSUMER_OFFSETS,
            load,
        )
        .await;
    }

    /// Creates `__consumer_offsets` (Kafka's `offsets.topic.*` settings,
    /// the replication factor capped to the live brokers) unless it exists.
    async fn ensure_topic(&self, broker: &Broker) -> Result<(), CoordinatorError> {
        if broker.metadata.image().topic(CONSUMER_OFFSETS).is_some() {
            return Ok(());
        }
        let new = NewTopic {
            name: CONSUMER_OFFSETS.to_string(),
            num_partitions: self.config.offsets_topic_num_partitions,
            replication_factor: broker
                .internal_replication_factor("offsets.topic.replication.factor"),
            assignments: BTreeMap::new(),
            configs: BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "segment.bytes".to_string(),
                    self.config.offsets_topic_segment_bytes.to_string(),
                ),
                ("compression.type".to_string(), "producer".to_string()),
            ]),
        };
        match broker.create_topic(new, false).await {
            Ok(_) => info!(
                partitions = self.config.offsets_topic_num_partitions,
                "created {CONSUMER_OFFSETS}"
            ),
            Err(TopicError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.on_leadership(broker).await;
        Ok(())
    }

    /// Makes sure `__consumer_offsets` exists; FindCoordinator calls it.
    pub async fn ensure_started(&self, broker: &Broker) -> Result<(), CoordinatorError> {
        self.ensure_topic(broker).await
    }

    /// The `__consumer_offsets` partition of `group_id`, if the topic exists.
    pub fn partition_of(&self, broker: &Broker, group_id: &str) -> Option<i32> {
        let n = broker.metadata.image().topic(CONSUMER_OFFSETS)?.partitions;
        Some(partition_for(group_id, n))
    }

    fn loaded(&self, broker: &Broker, group_id: &str) -> Result<ShardHandle, CoordinatorError> {
        let p = self
            .partition_of(broker, group_id)
            .ok_or(CoordinatorError::NotAvailable)?;
        self.shards
            .read()
            .unwrap()
            .get(&p)
            .cloned()
            .ok_or(CoordinatorError::NotCoordinator)
    }

    /// The shard that owns `group_id` (creating `__consumer_offsets` on
    /// first use); NOT_COORDINATOR when another broker leads its partition.
    pub async fn shard_for(
        &self,
        broker: &Broker,
        group_id: &str,
    ) -> Result<ShardHandle, CoordinatorError> {
        self.ensure_topic(broker).await?;
        match self.loaded(broker, group_id) {
            Err(CoordinatorError::NotCoordinator) => {
                // Leadership may have arrived before its callback ran.
                self.on_leadership(broker).await;
                self.loaded(broker, group_id)
            }
            other => other,
        }
    }

    /// The shard that owns `group_id`, without creating `__consumer_offsets`
    /// (`None`: the topic does not exist, so neither does the group).
    pub async fn existing_shard_for(
        &self,
        broker: &Broker,
        group_id: &str,
    ) -> Result<Option<ShardHandle>, CoordinatorError> {
        if self.partition_of(broker, group_id).is_none() {
            return Ok(None);
        }
        match self.loaded(broker, group_id) {
            Err(CoordinatorError::NotCoordinator) => {
                self.on_leadership(broker).await;
                self.loaded(broker, group_id).map(Some)
            }
            other => other.map(Some),
        }
    }

    /// The shard of `__consumer_offsets` partition `p`, if this broker
    /// leads it (transaction markers for the partition go through it).
    pub async fn loaded_shard(&self, broker: &Broker, p: i32) -> Option<ShardHandle> {
        if let Some(h) = self.shards.read().unwrap().get(&p) {
            return Some(h.clone());
        }
        self.on_leadership(broker).await;
        self.shards.read().unwrap().get(&p).cloned()
    }

    /// Every loaded shard (the groups this broker coordinates); empty while
    /// `__consumer_offsets` does not exist (listing groups must not create it).
    pub async fn all_shards(
        &self,
        broker: &Broker,
    ) -> Result<Arc<[ShardHandle]>, CoordinatorError> {
        if broker.metadata.image().topic(CONSUMER_OFFSETS).is_some()
            && self.shards.read().unwrap().is_empty()
        {
            self.on_leadership(broker).await;
        }
        Ok(self.shards.read().unwrap().values().cloned().collect())
    }
}
