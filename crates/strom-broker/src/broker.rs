//! The broker's shared state and its topic lifecycle.
//!
//! [`Broker`] is created once at start-up and shared (`Arc`) by every
//! connection. It owns the metadata image, the log manager and the hosted
//! partitions, and is the one place where topics are created and deleted, so
//! that the image, the logs and the partition map change together.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use strom_protocol::LeaderEpoch;
use strom_storage::{LogError, LogManager, TopicPartition};
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{BrokerConfig, Listener};
use crate::fetch_session::FetchSessionCache;
use crate::metadata::{MetadataError, MetadataStore, TopicMetadata};
use crate::metrics::BrokerMetrics;
use crate::partition::Partition;
use crate::replica_manager::ReplicaManager;
use crate::topic;

/// Why a topic could not be created or deleted. Mapped to Kafka error codes
/// in `crate::errors`.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("{0}")]
    InvalidName(String),
    #[error("Topic '{0}' already exists.")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("This server does not host this topic-partition.")]
    UnknownTopic,
    #[error("storage error: {0}")]
    Storage(#[from] LogError),
    #[error("metadata error: {0}")]
    Metadata(#[from] MetadataError),
}

/// What a CreateTopics entry (or auto-creation) asks for.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1: the broker default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Manual assignment: partition → replica node ids.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// The running broker's state.
pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataStore,
    pub replicas: ReplicaManager,
    pub fetch_sessions: FetchSessionCache,
    /// Consumer groups and committed offsets (`__consumer_offsets`).
    pub groups: crate::group::GroupCoordinator,
    /// Transactions (`__transaction_state`).
    pub transactions: crate::txn::TransactionCoordinator,
    /// Producer ids, never reused (a block reservation file in the first log dir).
    pub producer_ids: crate::txn::producer_ids::ProducerIdManager,
    /// Counters and histograms served on the admin listener's `/metrics`.
    pub metrics: BrokerMetrics,
    /// ACL checks (`authorizer.class.name`); the ACLs are in the metadata image.
    pub authorizer: crate::security::authorizer::Authorizer,
    /// Client quotas: configuration resolved per entity, rate sensors.
    pub quotas: crate::quota::QuotaManager,
    log_manager: LogManager,
    /// Addresses clients are told to use, per listener name (ports resolved
    /// after binding, so `:0` works in tests).
    advertised: RwLock<Vec<Listener>>,
    /// Serializes topic creation and deletion.
    admin_lock: tokio::sync::Mutex<()>,
    /// When idle producers were last expired.
    last_producer_expiry: std::sync::atomic::AtomicI64,
    /// This broker's epoch from its registration with the active controller
    /// (-1 until registered); sent with heartbeats and AlterPartition.
    broker_epoch: std::sync::atomic::AtomicI64,
}

/// Wall-clock milliseconds since the epoch (Kafka timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// The epoch the active controller gave this broker's registration (-1: not registered).
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records the epoch of a new registration.
    pub fn set_broker_epoch(&self, epoch: i64) {
        self.broker_epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
    }

    /// Opens the log dirs, loads the metadata image and every partition's log
    /// (recovering them after an unclean shutdown).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, TopicError> {
        let log_manager = LogManager::open(config.log_dirs.clone(), config.log.clone())?;
        let metadata = MetadataStore::open_with(&config.log_dirs, config.node_id, &config.quorum)?;
        let image = metadata.image();
        let defaults = config.log.clone();
        let logs = log_manager.load_logs(|tp| {
            let overrides = image
                .topic(&tp.topic)
                .map(|t| t.configs.clone())
                .unwrap_or_default();
            topic::log_config(&defaults, &overrides)
        })?;
        let mut by_tp: BTreeMap<(String, i32), _> = logs
            .into_iter()
            .map(|(tp, log)| ((tp.topic.clone(), tp.partition), log))
            .collect();
        let replicas = ReplicaManager::default();
        for t in image.topics() {
            let mut parts = Vec::with_capacity(t.partitions as usize);
            for p in 0..t.partitions {
                let tp = TopicPartition {
                    topic: t.name.clone(),
                    partition: p,
                };
                let log = match by_tp.remove(&(t.name.clone(), p)) {
                    Some(log) => log,
                    None => {
                        warn!(partition = %tp, "partition directory missing; creating an empty log");
                        log_manager.create_log(&tp, topic::log_config(&defaults, &t.configs))?
                    }
                };
                parts.push(Arc::new(Partition::new(
                    tp,
                    t.id,
                    LeaderEpoch(t.leader_epoch),
                    log,
                )));
            }
            replicas.add_topic(&t.name, parts);
        }
        for ((topic, p), log) in by_tp {
            warn!(topic, partition = p, dir = %log.dir().display(), "log directory of an unknown topic left untouched");
        }
        let advertised = RwLock::new(config.advertised_listeners.clone());
        let groups = crate::group::GroupCoordinator::new(config.group.clone());
        let transactions = crate::txn::TransactionCoordinator::new(config.txn.clone());
        let producer_ids = crate::txn::producer_ids::ProducerIdManager::open(&config.log_dirs[0])
            .map_err(LogError::Io)?;
        let quotas = crate::quota::QuotaManager::new(config.quota.clone(), &image.client_quotas);
        let authorizer = crate::security::authorizer::Authorizer::new(config.authorizer.clone());
        let broker = Arc::new(Broker {
            authorizer,
            quotas,
            config,
            metadata,
            replicas,
            fetch_sessions: FetchSessionCache::new(1000),
            groups,
            transactions,
            producer_ids,
            metrics: BrokerMetrics::new(),
            log_manager,
            advertised,
            admin_lock: tokio::sync::Mutex::new(()),
            last_producer_expiry: std::sync::atomic::AtomicI64::new(now_ms()),
            broker_epoch: std::sync::atomic::AtomicI64::new(-1),
        });
        broker
            .metrics
            .set_group_lag_source(Box::new(crate::group_lag::LagSource {
                offsets: broker.groups.committed_offsets().clone(),
                broker: Arc::downgrade(&broker),
            }));
        Ok(broker)
    }

    /// The log directories and their logs (topic administration, retention
    /// and the log cleaner live in `crate::topic_admin`).
    pub fn log_manager(&self) -> &LogManager {
        &self.log_manager
    }

    /// Serializes topic-shape changes (create, delete, configs, partitions).
    pub(crate) fn admin_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.admin_lock
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The address to advertise to a client that connected on `listener`.
    pub fn advertised_listener(&self, listener: &str) -> Listener {
        let adv = self.advertised.read().unwrap();
        adv.iter()
            .find(|l| l.name == listener)
            .or_else(|| adv.first())
            .cloned()
            .expect("at least one listener")
    }

    /// Records the port actually bound for `listener` when it was configured
    /// as `:0`.
    pub fn set_bound_port(&self, listener: &str, port: u16) {
        for l in self.advertised.write().unwrap().iter_mut() {
            if l.name == listener && l.port == 0 {
                l.port = port;
            }
        }
    }

    /// Validates and creates a topic (or only validates, for `validate_only`).
    pub async fn create_topic(
        &self,
        req: NewTopic,
        validate_only: bool,
    ) -> Result<Arc<TopicMetadata>, TopicError> {
        topic::validate_name(&req.name).map_err(TopicError::InvalidName)?;
        // Its partition directory is the metadata log's (Kafka's message).
        if req.name == "__cluster_metadata" {
            return Err(TopicError::InvalidRequest(
                "Creation of internal topic __cluster_metadata is prohibited.".into(),
            ));
        }
        let (num_partitions, replication_factor) = self.validate_layout(&req)?;
        topic::validate_configs(&req.configs).map_err(TopicError::InvalidConfig)?;
        let _guard = self.admin_lock.lock().await;
        let image = self.metadata.image();
        if image.topic(&req.name).is_some() {
            return Err(TopicError::AlreadyExists(req.name));
        }
        let key = topic::collision_key(&req.name);
        if let Some(other) = image
            .topics()
            .find(|t| topic::collision_key(&t.name) == key)
        {
            return Err(TopicError::InvalidName(format!(
                "Topic '{}' collides with existing topic: {}",
                req.name, other.name
            )));
        }
        let meta = TopicMetadata {
            name: req.name.clone(),
            id: Uuid::new_v4(),
            partitions: num_partitions,
            replication_factor,
            configs: req.configs.clone(),
            leader_epoch: 0,
        };
        if validate_only {
            return Ok(Arc::new(meta));
        }
        let log_config = topic::log_config(&self.config.log, &meta.configs);
        let mut parts = Vec::with_capacity(num_partitions as usize);
        for p in 0..num_partitions {
            let tp = TopicPartition {
                topic: meta.name.clone(),
                partition: p,
            };
            let log = self.log_manager.create_log(&tp, log_config.clone())?;
            parts.push(Arc::new(Partition::new(tp, meta.id, LeaderEpoch(0), log)));
        }
        self.metadata.add_topic(meta.clone())?;
        self.replicas.add_topic(&meta.name, parts);
        info!(topic = %meta.name, partitions = num_partitions, id = %meta.id, "created topic");
        Ok(Arc::new(meta))
    }

    /// Partition count and replication factor after defaults, checked
    /// against the live brokers (one, for now).
    fn validate_layout(&self, req: &NewTopic) -> Result<(i32, i16), TopicError> {
        let live_brokers = 1;
        if !req.assignments.is_empty() {
            if req.num_partitions != -1 || req.replication_factor != -1 {
                return Err(TopicError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            let n = req.assignments.len() as i32;
            if req.assignments.keys().copied().ne(0..n) {
                return Err(TopicError::InvalidReplicaAssignment(
                    "Partitions should be a consecutive 0-based integer sequence".into(),
                ));
            }
            let rf = req
                .assignments
                .values()
                .next()
                .map(|r| r.len())
                .unwrap_or(0);
            for replicas in req.assignments.values() {
                if replicas.is_empty() || replicas.len() != rf {
                    return Err(TopicError::InvalidReplicaAssignment(
                        "All partitions should have the same number of replicas".into(),
                    ));
                }
                if let Some(bad) = replicas.iter().find(|&&id| id != self.node_id()) {
                    return Err(TopicError::InvalidReplicaAssignment(format!(
                        "Unknown broker id {bad} in the replica assignment"
                    )));
                }
            }
            return Ok((n, rf as i16));
        }
        let partitions = if req.num_partitions == -1 {
            self.config.num_partitions
        } else {
            req.num_partitions
        };
        if partitions <= 0 {
            return Err(TopicError::InvalidPartitions(
                "Number of partitions must be larger than 0.".into(),
            ));
        }
        let rf = if req.replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            req.replication_factor
        };
        if rf <= 0 {
            return Err(TopicError::InvalidReplicationFactor(
                "Replication factor must be larger than 0.".into(),
            ));
        }
        if rf as i32 > live_brokers {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live_brokers} broker(s) are registered."
            )));
        }
        Ok((partitions, rf))
    }

    /// Deletes a topic: it leaves the image first (so no new request finds
    /// it), then its logs are removed.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, TopicError> {
        let _guard = self.admin_lock.lock().await;
        let image = self.metadata.image();
        let Some(t) = image.topic(name).cloned() else {
            return Err(TopicError::UnknownTopic);
        };
        self.metadata.remove_topic(name)?;
        self.replicas.remove_topic(name);
        self.fetch_sessions.forget_topic(name);
        self.metrics.forget_topic(name);
        for p in 0..t.partitions {
            let tp = TopicPartition {
                topic: name.to_string(),
                partition: p,
            };
            if let Err(e) = self.log_manager.delete_log(&tp) {
                warn!(partition = %tp, error = %e, "failed to delete log of deleted topic");
            }
        }
        info!(topic = name, id = %t.id, "deleted topic");
        Ok(t.id)
    }

    /// Flushes logs whose `flush.ms` is due (called by a ticker), and
    /// expires idle producers every `producer.id.expiration.check.interval.ms`.
    pub fn flush_due(&self) {
        let now = now_ms();
        self.log_manager.flush_due(now);
        let every = self.config.txn.producer_id_expiration_check_interval_ms;
        let last = self
            .last_producer_expiry
            .load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= every {
            self.last_producer_expiry
                .store(now, std::sync::atomic::Ordering::Relaxed);
            for (_, log) in self.log_manager.all_logs() {
                log.expire_producers(now, self.config.txn.producer_id_expiration_ms);
            }
        }
    }

    /// Closes every log and writes the clean-shutdown marker.
    pub fn shutdown(&self) -> Result<(), LogError> {
        self.log_manager.shutdown()
    }
}
