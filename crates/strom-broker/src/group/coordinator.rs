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

use super::runtime::ShardHandle;
use super::{partition_for, GroupConfig, CONSUMER_OFFSETS};
use crate::broker::{Broker, NewTopic, TopicError};
use crate::group_lag::CommittedOffsets;

/// Why the coordinator cannot serve a request.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("the group coordinator is not available")]
    NotAvailable,
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

/// The group coordinator of this broker (leader of every
/// `__consumer_offsets` partition while there is one node).
pub struct GroupCoordinator {
    config: GroupConfig,
    shards: RwLock<Option<Arc<[ShardHandle]>>>,
    init: tokio::sync::Mutex<()>,
    /// Published by the shards for the lag metrics (`crate::group_lag`).
    committed: Arc<CommittedOffsets>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            shards: RwLock::new(None),
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

    /// At broker start: loads every partition of `__consumer_offsets` if the
    /// topic exists (otherwise it is created on first use).
    pub async fn startup(&self, broker: &Broker) {
        if broker.replicas.topic_partitions(CONSUMER_OFFSETS).is_some() {
            if let Err(e) = self.shards(broker, false).await {
                tracing::warn!(error = %e, "group coordinator did not start");
            }
        }
    }

    async fn shards(
        &self,
        broker: &Broker,
        create: bool,
    ) -> Result<Arc<[ShardHandle]>, CoordinatorError> {
        if let Some(s) = self.shards.read().unwrap().clone() {
            return Ok(s);
        }
        let _guard = self.init.lock().await;
        if let Some(s) = self.shards.read().unwrap().clone() {
            return Ok(s);
        }
        if broker.replicas.topic_partitions(CONSUMER_OFFSETS).is_none() {
            if !create {
                return Err(CoordinatorError::NotAvailable);
            }
            let new = NewTopic {
                name: CONSUMER_OFFSETS.to_string(),
                num_partitions: self.config.offsets_topic_num_partitions,
                replication_factor: 1,
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
                Ok(_) | Err(TopicError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            info!(
                partitions = self.config.offsets_topic_num_partitions,
                "created {CONSUMER_OFFSETS}"
            );
        }
        let parts = broker
            .replicas
            .topic_partitions(CONSUMER_OFFSETS)
            .ok_or(CoordinatorError::NotAvailable)?;
        let handles: Arc<[ShardHandle]> = parts
            .iter()
            .map(|p| ShardHandle::start(p.clone(), self.config.clone(), self.committed.clone()))
            .collect();
        *self.shards.write().unwrap() = Some(handles.clone());
        Ok(handles)
    }

    /// Makes sure the coordinator runs (creating `__consumer_offsets` if
    /// needed); FindCoordinator calls it.
    pub async fn ensure_started(&self, broker: &Broker) -> Result<(), CoordinatorError> {
        self.shards(broker, true).await.map(|_| ())
    }

    /// The shard that owns `group_id`.
    pub async fn shard_for(
        &self,
        broker: &Broker,
        group_id: &str,
    ) -> Result<ShardHandle, CoordinatorError> {
        let shards = self.shards(broker, true).await?;
        let p = partition_for(group_id, shards.len() as i32) as usize;
        Ok(shards[p].clone())
    }

    /// The shard that owns `group_id`, without creating `__consumer_offsets`
    /// (`None`: the topic does not exist, so neither does the group).
    pub async fn existing_shard_for(
        &self,
        broker: &Broker,
        group_id: &str,
    ) -> Result<Option<ShardHandle>, CoordinatorError> {
        let shards = self.all_shards(broker).await?;
        if shards.is_empty() {
            return Ok(None);
        }
        let p = partition_for(group_id, shards.len() as i32) as usize;
        Ok(Some(shards[p].clone()))
    }

    /// Every shard; empty while `__consumer_offsets` does not exist (listing
    /// groups must not create it).
    pub async fn all_shards(
        &self,
        broker: &Broker,
    ) -> Result<Arc<[ShardHandle]>, CoordinatorError> {
        match self.shards(broker, false).await {
            Err(CoordinatorError::NotAvailable)
                if broker.replicas.topic_partitions(CONSUMER_OFFSETS).is_none() =>
            {
                Ok(Arc::from(Vec::new()))
            }
            other => other,
        }
    }
}
