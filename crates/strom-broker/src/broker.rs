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
use crate::metadata::{MetadataError, MetadataStore, PartitionRegistration, TopicMetadata};
use crate::metrics::BrokerMetrics;
use crate::partition::{Partition, PartitionState};
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
    /// The active controller refused it (a Kafka error code and message).
    #[error("{}", .0.message.clone().unwrap_or_default())]
    Rejected(strom_metadata::controller_api::ApiError),
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
    /// What [`Broker::apply_image`] last made of the metadata image.
    hosted: std::sync::Mutex<Hosted>,
    /// This broker itself, for the replica manager's hook (set in `open`).
    this: std::sync::OnceLock<std::sync::Weak<Broker>>,
}

struct HostedTopic {
    id: Uuid,
    registrations: Vec<PartitionRegistration>,
    configs: BTreeMap<String, String>,
}

/// Whether `node` is (or is becoming) a replica of the partition.
fn is_replica(r: &PartitionRegistration, node: i32) -> bool {
    r.replicas.contains(&node) || r.adding_replicas.contains(&node)
}

/// Whether `node` replicates any partition of `t` (then it hosts the topic:
/// the replica manager keeps a slot per partition, filled only for the
/// partitions `node` replicates).
fn replicates(t: &TopicMetadata, node: i32) -> bool {
    t.registrations.iter().any(|r| is_replica(r, node))
}

/// The hosted topics as of the last applied image: each topic's id and the
/// registrations its partitions were last given to the replica manager.
#[derive(Default)]
struct Hosted {
    topics: BTreeMap<String, HostedTopic>,
    /// Set once the broker registered (or gave up waiting for a
    /// controller): from then on registration changes reach the replica
    /// manager; before, partitions keep `Partition::new`'s leader role.
    applying: bool,
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
        let replicas = ReplicaManager::default();
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
            hosted: std::sync::Mutex::new(Hosted::default()),
            this: std::sync::OnceLock::new(),
        });
        let _ = broker.this.set(Arc::downgrade(&broker));
        broker.apply_image()?;
        for (tp, log) in logs {
            if broker.replicas.partition(&tp.topic, tp.partition).is_some() {
                continue;
            }
            // An empty log of a partition this broker does not replicate is
            // the placeholder earlier versions created for the other
            // partitions of a hosted topic: nothing to keep.
            if log.log_start_offset().0 == 0 && log.log_end_offset().0 == 0 {
                match broker.log_manager.delete_log(&tp) {
                    Ok(()) => {
                        info!(partition = %tp, "empty log of a partition this broker does not replicate deleted")
                    }
                    Err(e) => {
                        warn!(partition = %tp, error = %e, "cannot delete an empty log of a partition this broker does not replicate")
                    }
                }
                continue;
            }
            warn!(partition = %tp, dir = %log.dir().display(), "log directory of a partition this broker does not replicate left untouched");
        }
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

    /// Every advertised listener, with the ports actually bound.
    pub fn advertised_listeners(&self) -> Vec<Listener> {
        self.advertised.read().unwrap().clone()
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
        let topic = strom_metadata::controller_api::CreatableTopic {
            name: req.name.clone(),
            num_partitions,
            replication_factor,
            assignments: req.assignments.clone(),
            configs: req.configs.clone(),
        };
        let created = self
            .metadata
            .create_topics(vec![topic], validate_only)?
            .into_iter()
            .next()
            .ok_or_else(|| TopicError::InvalidRequest("no answer for the topic".into()))?;
        if created.error.error_code != 0 {
            return Err(match created.error.error_code {
                36 => TopicError::AlreadyExists(req.name),
                _ => TopicError::Rejected(created.error),
            });
        }
        let meta = TopicMetadata {
            name: req.name.clone(),
            id: created.topic_id,
            partitions: created.num_partitions,
            replication_factor: created.replication_factor,
            configs: req.configs.clone(),
            leader_epoch: 0,
            registrations: vec![],
        };
        if validate_only {
            return Ok(Arc::new(meta));
        }
        self.apply_image()?;
        info!(topic = %meta.name, partitions = meta.partitions, replication_factor = meta.replication_factor, id = %meta.id, "created topic");
        Ok(self
            .metadata
            .image()
            .topic(&req.name)
            .cloned()
            .unwrap_or_else(|| Arc::new(meta)))
    }

    /// Partition count and replication factor after defaults (the active
    /// controller checks them against the live brokers).
    fn validate_layout(&self, req: &NewTopic) -> Result<(i32, i16), TopicError> {
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
        // The image no longer has it: its partitions stop and their logs go.
        self.apply_image()?;
        info!(topic = name, id = %t.id, "deleted topic");
        Ok(t.id)
    }

    /// Makes the hosted partitions follow the metadata image (Kafka's
    /// `ReplicaManager.applyDelta`): creates the logs and partitions of
    /// topics this node now replicates, stops and deletes those it no longer
    /// does (deleted topics included), applies changed topic configs, and
    /// hands every partition whose registration changed to the replica
    /// manager (leader/follower). Idempotent; called after each applied
    /// image change and by this node's own topic writes.
    pub fn apply_image(&self) -> Result<(), TopicError> {
        let mut hosted = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
        let image = self.metadata.image();
        let me = self.node_id();
        let gone: Vec<String> = hosted
            .topics
            .iter()
            .filter(|(name, h)| {
                image
                    .topic(name)
                    .is_none_or(|t| t.id != h.id || !replicates(t, me))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let h = hosted.topics.remove(&name).expect("listed above");
            self.unhost_topic(&name, &h, hosted.applying);
        }
        let mut changes = Vec::new();
        for t in image.topics().filter(|t| replicates(t, me)) {
            let prev = hosted.topics.remove(&t.name);
            let log_config = topic::log_config(&self.config.log, &t.configs);
            // A slot per partition; only partitions with this node among
            // their replicas get a log (no directory for the others).
            let mut parts: Vec<Option<Arc<Partition>>> = self
                .replicas
                .topic_partitions(&t.name)
                .map(|p| p.to_vec())
                .unwrap_or_default();
            parts.resize(t.registrations.len().max(parts.len()), None);
            let mut reshaped = false;
            for (i, reg) in t.registrations.iter().enumerate() {
                let before = prev.as_ref().and_then(|h| h.registrations.get(i));
                let tp = TopicPartition::new(&t.name, i as i32);
                match (&parts[i], is_replica(reg, me)) {
                    (None, true) => {
                        let log = self.log_manager.create_log(&tp, log_config.clone())?;
                        let p =
                            Arc::new(Partition::new(tp, t.id, LeaderEpoch(reg.leader_epoch), log));
                        changes.push((p.clone(), PartitionState::from(reg)));
                        parts[i] = Some(p);
                        reshaped = true;
                    }
                    (Some(p), true) => {
                        if before != Some(reg) {
                            changes.push((p.clone(), PartitionState::from(reg)));
                        }
                    }
                    (Some(p), false) => {
                        // Reassigned away while the topic stays: the
                        // replica stops and Kafka deletes its log.
                        changes.push((p.clone(), PartitionState::from(reg)));
                        if let Err(e) = self.log_manager.delete_log(&tp) {
                            warn!(partition = %tp, error = %e, "failed to delete the log of a replica moved away");
                        }
                        info!(partition = %tp, "replica moved away: log deleted");
                        parts[i] = None;
                        reshaped = true;
                    }
                    (None, false) => {}
                }
            }
            if reshaped {
                self.replicas.add_topic(&t.name, parts);
            }
            if prev.as_ref().is_some_and(|h| h.configs != t.configs) {
                for p in self.replicas.hosted_partitions(&t.name) {
                    p.log().set_config(log_config.clone());
                }
            }
            hosted.topics.insert(
                t.name.clone(),
                HostedTopic {
                    id: t.id,
                    registrations: t.registrations.clone(),
                    configs: t.configs.clone(),
                },
            );
        }
        if hosted.applying && !changes.is_empty() {
            if let Some(this) = self.this.get().and_then(|w| w.upgrade()) {
                self.replicas.apply_partition_states(&this, changes);
            }
        }
        Ok(())
    }

    /// From now on registrations reach the replica manager; every hosted
    /// partition gets its current one (the lifecycle calls this once the
    /// broker is registered). Later calls just apply the image.
    pub fn start_applying_image(&self) -> Result<(), TopicError> {
        let mut hosted = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
        if hosted.applying {
            drop(hosted);
            return self.apply_image();
        }
        hosted.applying = true;
        let mut changes = Vec::new();
        for (name, h) in &hosted.topics {
            if let Some(parts) = self.replicas.topic_partitions(name) {
                for (p, reg) in parts.iter().zip(&h.registrations) {
                    if let Some(p) = p {
                        changes.push((p.clone(), PartitionState::from(reg)));
                    }
                }
            }
        }
        drop(hosted);
        if let Some(this) = self.this.get().and_then(|w| w.upgrade()) {
            self.replicas.apply_partition_states(&this, changes);
        }
        self.apply_image()
    }

    /// Stops a topic's partitions (they stop leading and fetching) and
    /// deletes their logs, as Kafka does for a replica it no longer has.
    fn unhost_topic(&self, name: &str, h: &HostedTopic, applying: bool) {
        if let Some(parts) = self.replicas.remove_topic(name) {
            if applying {
                let stop = parts
                    .iter()
                    .zip(&h.registrations)
                    .filter_map(|(p, r)| Some((p.as_ref()?, r)))
                    .map(|(p, r)| {
                        let state = PartitionState {
                            leader: -1,
                            leader_epoch: r.leader_epoch,
                            partition_epoch: r.partition_epoch + 1,
                            ..Default::default()
                        };
                        (p.clone(), state)
                    })
                    .collect();
                if let Some(this) = self.this.get().and_then(|w| w.upgrade()) {
                    self.replicas.apply_partition_states(&this, stop);
                }
            }
        }
        self.fetch_sessions.forget_topic(name);
        self.metrics.forget_topic(name);
        for p in 0..h.registrations.len() {
            let tp = TopicPartition::new(name, p as i32);
            if let Err(e) = self.log_manager.delete_log(&tp) {
                warn!(partition = %tp, error = %e, "failed to delete log of a partition no longer hosted");
            }
        }
        info!(topic = name, id = %h.id, "stopped hosting topic");
    }

    /// After an image change: the group and transaction coordinators load
    /// the `__consumer_offsets` / `__transaction_state` partitions this
    /// node now leads and unload those it no longer leads.
    pub async fn on_partition_leadership(&self) {
        self.groups.on_leadership(self).await;
        self.transactions.on_leadership(self).await;
    }

    /// The replication factor of an internal topic created on demand: the
    /// configured one (`offsets.topic.replication.factor`,
    /// `transaction.state.log.replication.factor`, Kafka's default 3)
    /// capped to the live brokers, with a warning, so that one node works.
    pub fn internal_replication_factor(&self, key: &str) -> i16 {
        let configured = self
            .config
            .raw
            .get(key)
            .and_then(|v| v.trim().parse::<i16>().ok())
            .unwrap_or(3);
        let live = self.metadata.image().live_brokers().count().max(1);
        let rf = configured.min(live as i16).max(1);
        if rf < configured {
            warn!(key, configured, live_brokers = live, "fewer live brokers than the configured replication factor; creating the internal topic with {rf}");
        }
        rf
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
