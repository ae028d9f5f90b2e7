//! The broker's metadata image: cluster id, topics (name, id, partition
//! count, configs), ACLs, SCRAM credentials and client quotas.
//!
//! Owner: [`crate::Broker`]. The metadata lives in the Raft-replicated
//! metadata log of `strom-metadata` (ARCHITECTURE §4): this node runs a
//! [`MetadataQuorum`] member (a voter in combined mode, an observer when
//! `process.roles=broker`), every mutation here becomes one proposed batch of
//! records, and [`MetadataStore::image`] is the quorum's published image
//! converted into the shape handlers use. A single node is a quorum of one
//! voter — the same code path.
//!
//! The quorum runs on its own small tokio runtime so the synchronous API the
//! handlers use (they call `add_topic` etc. without `.await`) can wait for a
//! commit without needing a multi-threaded caller runtime.
//!
//! An `image.json` from an older Strom (the JSON image this module used to
//! persist) is imported once as records at start and renamed
//! `image.json.migrated`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use strom_metadata::controller_api::{
    ApiError, ControllerRequest, ControllerResponse, CreatableTopic, CreatedTopic,
};
pub use strom_metadata::image::{BrokerRegistration, PartitionRegistration};
use strom_metadata::records::{self as rec, resource_type, MetadataRecord};
use strom_metadata::{MetadataQuorum, ProposeError, PublishedImage, QuorumConfig};
use tokio::sync::watch;
use uuid::Uuid;

use crate::quota::{ClientQuotas, EntityName, QuotaEntity};
use crate::security::acl::{
    AccessControlEntry, AclBinding, AclOperation, PatternType, PermissionType, ResourcePattern,
    ResourceType,
};
use crate::security::authorizer::AclIndex;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};

/// One topic as every broker sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopicMetadata {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level config overrides (Kafka names), only those set explicitly.
    pub configs: BTreeMap<String, String>,
    /// The highest leader epoch of its partitions (a fallback; each
    /// partition's own is in `registrations`).
    pub leader_epoch: i32,
    /// Each partition's registration (replicas, ISR, leader, epochs),
    /// indexed by partition number; empty only in an image not yet written
    /// to the metadata log (validate-only answers, the legacy import).
    #[serde(default)]
    pub registrations: Vec<PartitionRegistration>,
}

impl TopicMetadata {
    /// Partition `p`'s registration.
    pub fn registration(&self, p: i32) -> Option<&PartitionRegistration> {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.registrations.get(i))
    }
}

/// An immutable snapshot of cluster metadata.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// Client quotas (user / client-id entities), see `crate::quota`.
    pub client_quotas: Arc<crate::quota::ClientQuotas>,
    topics: BTreeMap<String, Arc<TopicMetadata>>,
    by_id: HashMap<Uuid, String>,
    /// ACLs, indexed for the authorizer (rebuilt only when they change).
    acls: Arc<AclIndex>,
    /// SCRAM credentials per user and mechanism (AlterUserScramCredentials).
    scram: Arc<ScramCredentials>,
    /// Registered brokers (fenced ones included), by id.
    brokers: Arc<BTreeMap<i32, Arc<BrokerRegistration>>>,
    /// The metadata log index this image reflects (`None`: nothing applied).
    pub applied_index: Option<u64>,
}

/// SCRAM credentials: user → mechanism → salt, stored key, server key,
/// iterations (never the password).
pub type ScramCredentials = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMetadata>> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }
    /// Topics in name order.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicMetadata>> {
        self.topics.values()
    }
    /// Every ACL, indexed for authorization.
    pub fn acls(&self) -> &AclIndex {
        &self.acls
    }
    /// Every user's SCRAM credentials, by user name.
    pub fn scram_credentials(&self) -> &ScramCredentials {
        &self.scram
    }
    /// `user`'s SCRAM credential for `mechanism`.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram.get(user)?.get(&mechanism)
    }
    /// The registration of broker `id`.
    pub fn broker(&self, id: i32) -> Option<&Arc<BrokerRegistration>> {
        self.brokers.get(&id)
    }
    /// Registered brokers in id order, fenced ones included.
    pub fn brokers(&self) -> impl Iterator<Item = &Arc<BrokerRegistration>> {
        self.brokers.values()
    }
    /// Registered brokers that are not fenced (Kafka's "alive" brokers:
    /// what Metadata lists and what placement may use).
    pub fn live_brokers(&self) -> impl Iterator<Item = &Arc<BrokerRegistration>> {
        self.brokers.values().filter(|b| !b.fenced)
    }
    /// Whether broker `id` is registered and unfenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }
    fn insert(&mut self, t: TopicMetadata) {
        self.by_id.insert(t.id, t.name.clone());
        self.topics.insert(t.name.clone(), Arc::new(t));
    }
    fn remove(&mut self, name: &str) -> Option<Arc<TopicMetadata>> {
        let t = self.topics.remove(name)?;
        self.by_id.remove(&t.id);
        Some(t)
    }
}

/// The JSON image of Strom before the metadata log; read only to migrate it.
#[derive(Serialize, Deserialize)]
struct PersistedImage {
    version: u32,
    cluster_id: String,
    #[serde(default)]
    client_quotas: crate::quota::ClientQuotas,
    topics: Vec<TopicMetadata>,
    #[serde(default)]
    acls: Vec<AclBinding>,
    #[serde(default)]
    scram_credentials: ScramCredentials,
}

/// Errors loading or changing metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("log dir {path} belongs to node.id {stored}, but this broker is node.id {configured}")]
    NodeIdMismatch {
        path: PathBuf,
        stored: i32,
        configured: i32,
    },
    /// This node is not the active controller (Kafka's NOT_CONTROLLER);
    /// forwarding writes to it is a later step.
    #[error("not the active controller (leader: {leader:?})")]
    NotController { leader: Option<i32> },
    /// The active controller refused the change (a Kafka error code).
    #[error("{}", .0.message.clone().unwrap_or_else(|| format!("controller error {}", .0.error_code)))]
    Controller(ApiError),
    /// The metadata log belongs to another cluster than this node's log dirs
    /// (Kafka's INCONSISTENT_CLUSTER_ID).
    #[error("INCONSISTENT_CLUSTER_ID: {path} has cluster.id {stored}, but the metadata quorum's cluster id is {quorum}; this node belongs to another cluster (empty its log dirs to join this one)")]
    InconsistentClusterId {
        path: PathBuf,
        stored: String,
        quorum: String,
    },
    /// Not committed in time (no majority); it may still commit later.
    #[error("metadata change not committed in time: {0}")]
    Timeout(String),
    /// The quorum failed to start, stopped, or rejected the batch.
    #[error("metadata quorum: {0}")]
    Quorum(String),
}

/// `process.roles` and the quorum's addresses, from the broker config.
#[derive(Clone, Debug, PartialEq)]
pub struct QuorumSettings {
    /// `process.roles` contains `broker`.
    pub broker: bool,
    /// `process.roles` contains `controller` (a voter).
    pub controller: bool,
    /// `controller.quorum.voters`; `None`: this node alone at `controller_addr`.
    pub voters: Option<BTreeMap<i32, String>>,
    /// Where this node's controller listener binds (`host:port`). The
    /// embedded default, `127.0.0.1:0`, is an ephemeral loopback port: enough
    /// for a quorum of this one voter, which never dials itself.
    pub controller_addr: String,
    /// `metadata.log.dir` (default: the first of `log.dirs`).
    pub log_dir: Option<PathBuf>,
    /// The active controller's timing and election policy
    /// (`broker.session.timeout.ms`, `leader.imbalance.check.interval.seconds`,
    /// `auto.leader.rebalance.enable`, `unclean.leader.election.enable`).
    pub controller_policy: ControllerPolicy,
    /// The first of `controller.listener.names` (`None`: not set), whose
    /// settings the controller listener is served and dialled with.
    pub controller_listener: Option<String>,
    /// Its security protocol: PLAINTEXT or SSL (config.rs refuses SASL).
    pub controller_protocol: crate::security::SecurityProtocol,
    /// Its TLS, built from the certificates at start-up
    /// ([`crate::security::tls::controller_tls`]); `None`: plaintext.
    pub tls: Option<strom_metadata::QuorumTls>,
}

/// What the active controller needs from the node's configuration, with
/// Kafka's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerPolicy {
    pub broker_session_timeout: Duration,
    pub leader_imbalance_check_interval: Duration,
    pub auto_leader_rebalance_enable: bool,
    pub unclean_leader_election_enable: bool,
}

impl Default for ControllerPolicy {
    fn default() -> Self {
        let q = QuorumConfig::default();
        ControllerPolicy {
            broker_session_timeout: q.broker_session_timeout,
            leader_imbalance_check_interval: q.leader_imbalance_check_interval,
            auto_leader_rebalance_enable: q.auto_leader_rebalance_enable,
            unclean_leader_election_enable: q.unclean_leader_election_enable,
        }
    }
}

impl Default for QuorumSettings {
    fn default() -> Self {
        QuorumSettings {
            broker: true,
            controller: true,
            voters: None,
            controller_addr: "127.0.0.1:0".into(),
            log_dir: None,
            controller_policy: ControllerPolicy::default(),
            controller_listener: None,
            controller_protocol: crate::security::SecurityProtocol::Plaintext,
            tls: None,
        }
    }
}

/// Holds this node's quorum member and the broker-shaped image of its log.
pub struct MetadataStore {
    /// The cluster id this node proposes, shown until the log carries one.
    cluster_id: String,
    log_dirs: Vec<PathBuf>,
    node_id: i32,
    quorum: Arc<MetadataQuorum>,
    published: watch::Receiver<PublishedImage>,
    /// The converted image and the log index it reflects.
    cache: RwLock<(Option<u64>, Arc<MetadataImage>)>,
    /// One writer at a time: a change is computed against the image it
    /// replaces, so concurrent writers must not interleave.
    writer: Mutex<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetadataError + '_ {
    move |source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A Kafka-style cluster id: 16 random bytes in URL-safe base64, no padding.
fn new_cluster_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes())
}

/// How long start-up waits for a leader before serving anyway (reads work
/// without one; writes answer NOT_CONTROLLER until one is elected).
const LEADER_WAIT: Duration = Duration::from_secs(15);

impl MetadataStore {
    /// Opens the metadata log with the embedded default: this node is the
    /// only voter (combined mode) on an ephemeral loopback controller port.
    pub fn open(log_dirs: &[PathBuf], node_id: i32) -> Result<Self, MetadataError> {
        Self::open_with(log_dirs, node_id, &QuorumSettings::default())
    }

    /// Starts this node's quorum member, imports an old `image.json` once,
    /// and writes or checks Kafka's `meta.properties` in every log dir.
    pub fn open_with(
        log_dirs: &[PathBuf],
        node_id: i32,
        settings: &QuorumSettings,
    ) -> Result<Self, MetadataError> {
        let legacy_file = log_dirs[0].join("__cluster_metadata").join("image.json");
        let legacy =
            match std::fs::read(&legacy_file) {
                Ok(bytes) => Some(serde_json::from_slice::<PersistedImage>(&bytes).map_err(
                    |e| MetadataError::Corrupt {
                        path: legacy_file.clone(),
                        reason: e.to_string(),
                    },
                )?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&legacy_file)(e)),
            };
        // meta.properties gets the cluster id once the metadata log agrees
        // on one (see `adopt_cluster_id`); until then this is only proposed.
        let cluster_id = existing_cluster_id(log_dirs)
            .or_else(|| legacy.as_ref().map(|l| l.cluster_id.clone()))
            .unwrap_or_else(new_cluster_id);
        for d in log_dirs {
            check_node_id(d, node_id)?;
        }
        let log_dir = settings
            .log_dir
            .clone()
            .unwrap_or_else(|| log_dirs[0].clone());
        std::fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strom-metadata")
            .enable_all()
            .build()
            .map_err(io_err(&log_dir))?;
        let is_voter = settings.controller;
        let settings = settings.clone();
        let quorum = run_blocking(&runtime, async move {
            start_quorum(node_id, &settings, &log_dir).await
        })?;
        let quorum = Arc::new(quorum);
        let published = quorum.subscribe();
        let store = MetadataStore {
            cluster_id,
            log_dirs: log_dirs.to_vec(),
            node_id,
            quorum,
            published,
            cache: RwLock::new((None, Arc::new(MetadataImage::default()))),
            writer: Mutex::new(()),
            runtime: Some(runtime),
        };
        *store.cache.write().unwrap() = store.convert_published();
        // A voter agrees on the cluster id now (the first leader writes its
        // own into the log); a broker-only node receives the log only once
        // registered, and its lifecycle adopts the id then.
        if is_voter {
            let (quorum, proposal) = (store.quorum.clone(), store.cluster_id.clone());
            let runtime = store.runtime.as_ref().expect("runtime lives until drop");
            match run_blocking(runtime, agree_cluster_id(quorum, proposal, LEADER_WAIT)) {
                Some(id) => store.adopt_cluster_id(&id)?,
                None => tracing::warn!(
                    "the metadata log has no cluster id yet (no quorum leader); meta.properties is written once it has"
                ),
            }
        }
        if let Some(old) = legacy {
            store.migrate(old, &legacy_file)?;
        }
        Ok(store)
    }

    /// Checks the metadata log's cluster id against `meta.properties` and
    /// writes it there if the dirs have none yet: a node whose dirs belong
    /// to another cluster must not join this one (INCONSISTENT_CLUSTER_ID).
    pub fn adopt_cluster_id(&self, id: &str) -> Result<(), MetadataError> {
        for d in &self.log_dirs {
            let path = d.join("meta.properties");
            if let Some(stored) = read_properties(&path).and_then(|m| m.get("cluster.id").cloned())
            {
                if stored != id {
                    return Err(MetadataError::InconsistentClusterId {
                        path,
                        stored,
                        quorum: id.to_string(),
                    });
                }
            }
        }
        for d in &self.log_dirs {
            write_meta_properties(d, self.node_id, id)?;
        }
        Ok(())
    }

    /// The cluster id the metadata log carries, if any yet.
    pub fn log_cluster_id(&self) -> Option<String> {
        log_cluster_id(&self.quorum.image()).cloned()
    }

    /// This node's quorum member (DescribeQuorum, tests).
    pub fn quorum(&self) -> &MetadataQuorum {
        &self.quorum
    }

    /// Moves an old JSON image into the log, then renames it aside. What the
    /// file holds is merged over the log's image (on a first start the log
    /// is empty): its topics replace same-named ones, its ACLs, SCRAM
    /// credentials and quotas are added. Safe to repeat after a crash in
    /// between: the second diff is empty.
    fn migrate(&self, old: PersistedImage, file: &Path) -> Result<(), MetadataError> {
        self.update(|img| {
            for t in old.topics {
                if let Some(prev) = img.topics.get(&t.name).filter(|p| p.id != t.id) {
                    let prev = prev.name.clone();
                    img.remove(&prev);
                }
                img.insert(t);
            }
            img.acls = Arc::new(img.acls.with_added(old.acls));
            let scram = Arc::make_mut(&mut img.scram);
            for (user, mechs) in old.scram_credentials {
                scram.entry(user).or_default().extend(mechs);
            }
            let quotas: ClientQuotas = img
                .client_quotas
                .iter()
                .chain(old.client_quotas.iter())
                .map(|(e, v)| (e.clone(), v.clone()))
                .collect();
            img.client_quotas = Arc::new(quotas);
        })?;
        let aside = file.with_extension("json.migrated");
        std::fs::rename(file, &aside).map_err(io_err(file))?;
        tracing::info!(file = %aside.display(), "imported the JSON metadata image into the metadata log");
        Ok(())
    }

    /// The current snapshot.
    pub fn image(&self) -> Arc<MetadataImage> {
        let applied = self.published.borrow().last_applied_index;
        {
            let c = self.cache.read().unwrap();
            if c.0 == applied {
                return c.1.clone();
            }
        }
        let fresh = self.convert_published();
        let mut c = self.cache.write().unwrap();
        // Another reader may have converted a newer one meanwhile.
        if c.0.is_none() || fresh.0 >= c.0 {
            *c = fresh;
        }
        c.1.clone()
    }

    fn convert_published(&self) -> (Option<u64>, Arc<MetadataImage>) {
        let p = self.published.borrow().clone();
        (
            p.last_applied_index,
            Arc::new(from_log_image(
                &p.image,
                &self.cluster_id,
                p.last_applied_index,
            )),
        )
    }

    /// Adds a topic; it is visible once committed to the metadata log.
    pub fn add_topic(&self, t: TopicMetadata) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| img.insert(t))
    }

    /// Replaces a topic's entry (configs, partition count).
    pub fn update_topic(&self, t: TopicMetadata) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| img.insert(t))
    }

    /// Replaces the client quotas.
    pub fn set_client_quotas(
        &self,
        quotas: crate::quota::ClientQuotas,
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| img.client_quotas = Arc::new(quotas))
    }

    /// Removes a topic.
    pub fn remove_topic(&self, name: &str) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| {
            img.remove(name);
        })
    }

    /// Replaces the ACL set with what `f` makes of the current one,
    /// committed before it takes effect; `f`'s other result is passed back.
    pub fn update_acls<R>(
        &self,
        f: impl FnOnce(&AclIndex) -> (AclIndex, R),
    ) -> Result<R, MetadataError> {
        let mut out = None;
        self.update(|img| {
            let (next, r) = f(&img.acls);
            img.acls = Arc::new(next);
            out = Some(r);
        })?;
        Ok(out.expect("update ran"))
    }

    /// Replaces the SCRAM credentials with what `f` makes of them.
    pub fn update_scram_credentials(
        &self,
        f: impl FnOnce(&mut ScramCredentials),
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| f(Arc::make_mut(&mut img.scram)))
    }

    /// Applies `f` to a copy of the image, proposes the difference as one
    /// batch of records and returns the image once it is applied here.
    fn update(
        &self,
        f: impl FnOnce(&mut MetadataImage),
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        let _one_writer = self.writer.lock().unwrap();
        let current = self.image();
        let mut next = (*current).clone();
        f(&mut next);
        let log_image = self.quorum.image();
        let records = diff(&current, &next, &log_image, self.node_id);
        if records.is_empty() {
            return Ok(current);
        }
        let quorum = self.quorum.clone();
        run_blocking(self.rt(), async move {
            let index = submit(&quorum, records).await?;
            wait_applied(&quorum, index).await
        })?;
        Ok(self.image())
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    /// Runs `fut` on the metadata runtime (its own small runtime, so the
    /// broker lifecycle's heartbeats keep their pace however busy the
    /// request workers are).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(fut)
    }

    /// Sends `req` to the active controller (in-process when this node is
    /// it, forwarded otherwise) and returns its answer. Callable from any
    /// runtime.
    pub async fn controller_call(
        &self,
        req: ControllerRequest,
    ) -> Result<ControllerResponse, ProposeError> {
        let quorum = self.quorum.clone();
        self.spawn(async move { quorum.controller_call(req).await })
            .await
            .unwrap_or_else(|e| Err(ProposeError::Unavailable(e.to_string())))
    }

    /// Proposes `records` through the active controller (which checks they
    /// apply to its image) and waits until this node has applied them.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, MetadataError> {
        let quorum = self.quorum.clone();
        self.spawn(async move {
            let index = submit(&quorum, records).await?;
            wait_applied(&quorum, index).await.map(|_| index)
        })
        .await
        .unwrap_or_else(|e| Err(MetadataError::Quorum(e.to_string())))
    }

    /// Waits until this node's image has applied the metadata log up to
    /// `index` (an answer's `log_index`); false on timeout.
    pub async fn wait_for_index(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.published.clone();
        let reached = |p: &PublishedImage| p.last_applied_index.is_some_and(|i| i >= index);
        let wait = async {
            loop {
                if reached(&rx.borrow_and_update()) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// CreateTopics through the active controller, which checks existence
    /// and the replication factor against the live brokers and places the
    /// replicas. Returns once this node's image shows the new topics.
    pub fn create_topics(
        &self,
        topics: Vec<CreatableTopic>,
        validate_only: bool,
    ) -> Result<Vec<CreatedTopic>, MetadataError> {
        let _one_writer = self.writer.lock().unwrap();
        let quorum = self.quorum.clone();
        let node_id = self.node_id;
        run_blocking(self.rt(), async move {
            let req = ControllerRequest::CreateTopics {
                topics: topics.clone(),
                validate_only,
            };
            let (created, index) = match quorum.controller_call(req).await {
                Ok(ControllerResponse::CreateTopics { topics, log_index }) => (topics, log_index),
                Ok(other) => return Err(unexpected(other)),
                Err(ProposeError::Unavailable(_)) if quorum.is_leader() => {
                    create_topics_here(&quorum, node_id, topics, validate_only).await?
                }
                Err(e) => return Err(propose_error(e)),
            };
            if !validate_only && created.iter().any(|t| t.error.error_code == 0) {
                wait_applied(&quorum, index).await?;
            }
            Ok(created)
        })
    }

    /// CreatePartitions through the active controller; returns once this
    /// node's image shows the new partitions.
    pub fn create_partitions(
        &self,
        topic: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), MetadataError> {
        let _one_writer = self.writer.lock().unwrap();
        let quorum = self.quorum.clone();
        let req = ControllerRequest::CreatePartitions {
            topic: topic.to_string(),
            count,
            assignments: assignments.clone(),
            validate_only,
        };
        let answer = run_blocking(self.rt(), async move { quorum.controller_call(req).await });
        let index = match answer {
            Ok(ControllerResponse::CreatePartitions { error, log_index }) => {
                check(error)?;
                log_index
            }
            Ok(other) => return Err(unexpected(other)),
            Err(ProposeError::Unavailable(_)) if self.quorum.is_leader() => {
                drop(_one_writer);
                // No controller in this build: one node places every new
                // partition on itself.
                if let Some(bad) = assignments
                    .iter()
                    .flatten()
                    .flatten()
                    .find(|&&id| id != self.node_id)
                {
                    return Err(MetadataError::Controller(ApiError {
                        error_code: 39,
                        message: Some(format!("Unknown broker id {bad} in the replica assignment")),
                    }));
                }
                if validate_only {
                    return Ok(());
                }
                let Some(t) = self.image().topic(topic).cloned() else {
                    return Err(MetadataError::Controller(ApiError {
                        error_code: 3,
                        message: None,
                    }));
                };
                self.update_topic(TopicMetadata {
                    partitions: count,
                    ..(*t).clone()
                })?;
                return Ok(());
            }
            Err(e) => return Err(propose_error(e)),
        };
        if !validate_only {
            let quorum = self.quorum.clone();
            run_blocking(self.rt(), async move { wait_applied(&quorum, index).await })?;
        }
        Ok(())
    }
}

/// How long a write waits for this node to replay its own change.
const APPLY_WAIT: Duration = Duration::from_secs(30);

fn propose_error(e: ProposeError) -> MetadataError {
    match e {
        ProposeError::NotLeader { leader_id, .. } => {
            MetadataError::NotController { leader: leader_id }
        }
        ProposeError::Timeout(_) => MetadataError::Timeout(e.to_string()),
        e => MetadataError::Quorum(e.to_string()),
    }
}

fn unexpected(answer: ControllerResponse) -> MetadataError {
    MetadataError::Quorum(format!("unexpected controller answer {answer:?}"))
}

fn check(error: ApiError) -> Result<(), MetadataError> {
    if error.error_code == 0 {
        Ok(())
    } else {
        Err(MetadataError::Controller(error))
    }
}

/// Sends records computed against this node's image to the active
/// controller, which checks they still apply and commits them. While no
/// controller answers in this build (`Unavailable` on the Raft leader), the
/// leader proposes them itself.
async fn submit(
    quorum: &MetadataQuorum,
    records: Vec<MetadataRecord>,
) -> Result<u64, MetadataError> {
    let req = ControllerRequest::Propose {
        records: records.clone(),
    };
    match quorum.controller_call(req).await {
        Ok(ControllerResponse::Propose { error, log_index }) => check(error).map(|_| log_index),
        Ok(other) => Err(unexpected(other)),
        Err(ProposeError::Unavailable(_)) if quorum.is_leader() => {
            quorum.propose(records).await.map_err(propose_error)
        }
        Err(e) => Err(propose_error(e)),
    }
}

/// Waits until `quorum`'s image has applied `index`.
async fn wait_applied(quorum: &MetadataQuorum, index: u64) -> Result<(), MetadataError> {
    let mut rx = quorum.subscribe();
    let wait = async {
        loop {
            if rx
                .borrow_and_update()
                .last_applied_index
                .is_some_and(|i| i >= index)
            {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::time::timeout(APPLY_WAIT, wait).await.map_err(|_| {
        MetadataError::Timeout(format!(
            "metadata log index {index} not applied here in time"
        ))
    })
}

/// CreateTopics without a controller (the interim single-node path): every
/// replica on this node, so a replication factor above one is refused.
async fn create_topics_here(
    quorum: &MetadataQuorum,
    node_id: i32,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> Result<(Vec<CreatedTopic>, u64), MetadataError> {
    let image = quorum.image();
    let mut records = Vec::new();
    let mut created = Vec::with_capacity(topics.len());
    for t in topics {
        let fail = |code: i16, msg: String| CreatedTopic {
            name: t.name.clone(),
            error: ApiError {
                error_code: code,
                message: Some(msg),
            },
            topic_id: Uuid::nil(),
            num_partitions: -1,
            replication_factor: -1,
        };
        let (partitions, rf) = if t.assignments.is_empty() {
            (t.num_partitions, t.replication_factor)
        } else {
            let rf = t.assignments.values().next().map_or(0, |r| r.len());
            (t.assignments.len() as i32, rf as i16)
        };
        if image.topic(&t.name).is_some() {
            created.push(fail(36, format!("Topic '{}' already exists.", t.name)));
            continue;
        }
        if let Some(bad) = t.assignments.values().flatten().find(|&&id| id != node_id) {
            created.push(fail(
                39,
                format!("Unknown broker id {bad} in the replica assignment"),
            ));
            continue;
        }
        if rf > 1 {
            created.push(fail(38, format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."
            )));
            continue;
        }
        let id = Uuid::new_v4();
        let meta = TopicMetadata {
            name: t.name.clone(),
            id,
            partitions,
            replication_factor: rf,
            configs: t.configs.clone(),
            leader_epoch: 0,
            registrations: vec![],
        };
        records.push(MetadataRecord::Topic(rec::TopicRecord {
            name: t.name.clone(),
            topic_id: id,
        }));
        records.extend((0..partitions).map(|p| partition_record(&meta, p, node_id)));
        records.extend(
            t.configs
                .iter()
                .map(|(k, v)| config_record(&t.name, k, Some(v))),
        );
        created.push(CreatedTopic {
            name: t.name,
            error: ApiError {
                error_code: 0,
                message: None,
            },
            topic_id: id,
            num_partitions: partitions,
            replication_factor: rf,
        });
    }
    let index = if validate_only || records.is_empty() {
        0
    } else {
        quorum.propose(records).await.map_err(propose_error)?
    };
    Ok((created, index))
}

impl Drop for MetadataStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Blocking in drop is not allowed inside a runtime; every append
            // was fsynced before it was acknowledged, so nothing is lost by
            // stopping the quorum's tasks without waiting.
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

/// Runs `fut` on the quorum's runtime and waits for it from any thread,
/// including a task of another runtime (it blocks that thread meanwhile,
/// like the file write it replaces).
fn run_blocking<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .expect("metadata runtime stopped while a call was pending")
}

/// Waits (up to `wait`) until the metadata log carries a cluster id; while
/// this node leads and the log has none, it writes `proposal` (so the first
/// leader of a new cluster names it).
async fn agree_cluster_id(
    quorum: Arc<MetadataQuorum>,
    proposal: String,
    wait: Duration,
) -> Option<String> {
    let mut rx = quorum.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(id) = log_cluster_id(&rx.borrow_and_update().image) {
            return Some(id.clone());
        }
        if quorum.is_leader() {
            let record = MetadataRecord::Config(rec::ConfigRecord {
                resource_type: resource_type::BROKER,
                resource_name: String::new(),
                name: CLUSTER_ID_CONFIG.into(),
                value: Some(proposal.clone()),
            });
            match quorum.propose(vec![record]).await {
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the cluster id to the metadata log")
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        // Leadership changes do not touch the image: poll as well.
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
    }
}

async fn start_quorum(
    node_id: i32,
    s: &QuorumSettings,
    log_dir: &Path,
) -> Result<MetadataQuorum, MetadataError> {
    let quorum_err = |e: strom_metadata::QuorumError| MetadataError::Quorum(e.to_string());
    let listener = tokio::net::TcpListener::bind(&s.controller_addr)
        .await
        .map_err(|source| MetadataError::Io {
            path: PathBuf::from(&s.controller_addr),
            source,
        })?;
    let voters = match &s.voters {
        Some(v) => v.clone(),
        None => {
            let addr = listener.local_addr().map_err(io_err(log_dir))?;
            BTreeMap::from([(node_id, addr.to_string())])
        }
    };
    let p = &s.controller_policy;
    let config = QuorumConfig {
        broker_session_timeout: p.broker_session_timeout,
        leader_imbalance_check_interval: p.leader_imbalance_check_interval,
        auto_leader_rebalance_enable: p.auto_leader_rebalance_enable,
        unclean_leader_election_enable: p.unclean_leader_election_enable,
        tls: s.tls.clone(),
        ..QuorumConfig::default()
    };
    if s.controller {
        let q = MetadataQuorum::start_with_listener(node_id, voters, log_dir, config, listener)
            .await
            .map_err(quorum_err)?;
        if q.wait_for_leader(LEADER_WAIT).await.is_none() {
            tracing::warn!(
                "no metadata quorum leader yet; metadata writes fail until one is elected"
            );
        }
        Ok(q)
    } else {
        // A broker-only node follows the log once the active controller adds
        // it as an observer (broker registration, a later step).
        MetadataQuorum::start_observer(node_id, voters, log_dir, config, listener)
            .await
            .map_err(quorum_err)
    }
}

fn acl_to_record(b: &AclBinding, id: Uuid) -> rec::AccessControlEntryRecord {
    rec::AccessControlEntryRecord {
        id,
        resource_type: b.pattern.resource_type.code(),
        resource_name: b.pattern.name.clone(),
        pattern_type: b.pattern.pattern_type.code(),
        principal: b.entry.principal.clone(),
        host: b.entry.host.clone(),
        operation: b.entry.operation.code(),
        permission_type: b.entry.permission.code(),
    }
}

fn acl_from_record(r: &rec::AccessControlEntryRecord) -> AclBinding {
    AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::from_code(r.resource_type),
            name: r.resource_name.clone(),
            pattern_type: PatternType::from_code(r.pattern_type),
        },
        entry: AccessControlEntry {
            principal: r.principal.clone(),
            host: r.host.clone(),
            operation: AclOperation::from_code(r.operation),
            permission: PermissionType::from_code(r.permission_type),
        },
    }
}

const QUOTA_USER: &str = "user";
const QUOTA_CLIENT_ID: &str = "client-id";

fn quota_entity_to_log(e: &QuotaEntity) -> Vec<rec::EntityData> {
    let part = |ty: &str, n: &Option<EntityName>| {
        n.as_ref().map(|n| rec::EntityData {
            entity_type: ty.into(),
            entity_name: n.as_wire().map(str::to_string),
        })
    };
    [
        part(QUOTA_USER, &e.user),
        part(QUOTA_CLIENT_ID, &e.client_id),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn quota_entity_from_log(parts: &[rec::EntityData]) -> QuotaEntity {
    let mut e = QuotaEntity {
        user: None,
        client_id: None,
    };
    for p in parts {
        let name = p
            .entity_name
            .clone()
            .map_or(EntityName::Default, EntityName::Name);
        match p.entity_type.as_str() {
            QUOTA_USER => e.user = Some(name),
            QUOTA_CLIENT_ID => e.client_id = Some(name),
            _ => {}
        }
    }
    e
}

/// The config (on BROKER "", the cluster-wide resource) that carries the
/// cluster id in the metadata log, so every node agrees on it.
pub const CLUSTER_ID_CONFIG: &str = "cluster.id";

/// The cluster id the metadata log holds, if it has one yet.
pub fn log_cluster_id(log: &strom_metadata::MetadataImage) -> Option<&String> {
    log.configs(resource_type::BROKER, "")
        .and_then(|c| c.get(CLUSTER_ID_CONFIG))
}

/// The broker's view of the log's image; `cluster_id` is used until the log
/// carries one.
fn from_log_image(
    log: &strom_metadata::MetadataImage,
    cluster_id: &str,
    applied_index: Option<u64>,
) -> MetadataImage {
    let mut img = MetadataImage {
        cluster_id: log_cluster_id(log).map_or(cluster_id, |c| c).to_string(),
        applied_index,
        brokers: Arc::new(log.brokers().map(|b| (b.broker_id, b.clone())).collect()),
        ..Default::default()
    };
    for t in log.topics() {
        let first = t.partitions.values().next();
        // Partition ids are dense (0..n) in a valid log; a gap would be a
        // controller bug, shown as a partition without leader or replicas.
        let count = t.partitions.keys().next_back().map_or(0, |p| p + 1);
        let registrations = (0..count)
            .map(|p| {
                t.partitions
                    .get(&p)
                    .cloned()
                    .unwrap_or(PartitionRegistration {
                        replicas: vec![],
                        isr: vec![],
                        removing_replicas: vec![],
                        adding_replicas: vec![],
                        leader: -1,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
            })
            .collect();
        img.insert(TopicMetadata {
            registrations,
            name: t.name.to_string(),
            id: t.id,
            partitions: count,
            replication_factor: first.map_or(1, |p| p.replicas.len().max(1) as i16),
            configs: log
                .configs(resource_type::TOPIC, &t.name)
                .cloned()
                .unwrap_or_default(),
            leader_epoch: t
                .partitions
                .values()
                .map(|p| p.leader_epoch)
                .max()
                .unwrap_or(0),
        });
    }
    img.acls = Arc::new(AclIndex::new(
        log.acls().values().map(|r| acl_from_record(r)),
    ));
    let mut scram = ScramCredentials::new();
    for (user, mechs) in log.scram_users() {
        for (code, c) in mechs {
            if let Some(m) = ScramMechanism::from_code(*code) {
                scram.entry(user.clone()).or_default().insert(
                    m,
                    ScramCredential {
                        salt: c.salt.clone(),
                        stored_key: c.stored_key.clone(),
                        server_key: c.server_key.clone(),
                        iterations: c.iterations,
                    },
                );
            }
        }
    }
    img.scram = Arc::new(scram);
    img.client_quotas = Arc::new(
        log.quotas()
            .iter()
            .map(|(e, v)| (quota_entity_from_log(e), v.clone()))
            .collect::<ClientQuotas>(),
    );
    img
}

fn partition_record(t: &TopicMetadata, p: i32, node_id: i32) -> MetadataRecord {
    MetadataRecord::Partition(rec::PartitionRecord {
        partition_id: p,
        topic_id: t.id,
        replicas: vec![node_id],
        isr: vec![node_id],
        removing_replicas: vec![],
        adding_replicas: vec![],
        leader: node_id,
        leader_epoch: t.leader_epoch,
        partition_epoch: 0,
    })
}

fn config_record(topic: &str, name: &str, value: Option<&String>) -> MetadataRecord {
    MetadataRecord::Config(rec::ConfigRecord {
        resource_type: resource_type::TOPIC,
        resource_name: topic.to_string(),
        name: name.to_string(),
        value: value.cloned(),
    })
}

/// The records that turn `old` into `new` (`log` supplies the ids of
/// existing ACLs). One node places every replica on itself.
fn diff(
    old: &MetadataImage,
    new: &MetadataImage,
    log: &strom_metadata::MetadataImage,
    node_id: i32,
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for t in old.topics() {
        if new.topic(&t.name).is_none_or(|n| n.id != t.id) {
            out.push(MetadataRecord::RemoveTopic(rec::RemoveTopicRecord {
                topic_id: t.id,
            }));
        }
    }
    for t in new.topics() {
        match old.topic(&t.name).filter(|o| o.id == t.id) {
            None => {
                out.push(MetadataRecord::Topic(rec::TopicRecord {
                    name: t.name.clone(),
                    topic_id: t.id,
                }));
                out.extend((0..t.partitions).map(|p| partition_record(t, p, node_id)));
                out.extend(
                    t.configs
                        .iter()
                        .map(|(k, v)| config_record(&t.name, k, Some(v))),
                );
            }
            Some(o) if **o != **t => {
                out.extend((o.partitions..t.partitions).map(|p| partition_record(t, p, node_id)));
                // Replay bumps the leader epoch by one per leader change.
                for _ in o.leader_epoch..t.leader_epoch {
                    out.extend((0..o.partitions.min(t.partitions)).map(|p| {
                        MetadataRecord::PartitionChange(rec::PartitionChangeRecord {
                            partition_id: p,
                            topic_id: t.id,
                            leader: node_id,
                            ..Default::default()
                        })
                    }));
                }
                for (k, v) in &t.configs {
                    if o.configs.get(k) != Some(v) {
                        out.push(config_record(&t.name, k, Some(v)));
                    }
                }
                for k in o.configs.keys().filter(|k| !t.configs.contains_key(*k)) {
                    out.push(config_record(&t.name, k, None));
                }
            }
            Some(_) => {}
        }
    }

    let old_acls: BTreeSet<&AclBinding> = old.acls.bindings().collect();
    let new_acls: BTreeSet<&AclBinding> = new.acls.bindings().collect();
    for gone in old_acls.difference(&new_acls) {
        for (id, r) in log.acls() {
            if acl_from_record(r) == **gone {
                out.push(MetadataRecord::RemoveAccessControlEntry(
                    rec::RemoveAccessControlEntryRecord { id: *id },
                ));
            }
        }
    }
    for added in new_acls.difference(&old_acls) {
        out.push(MetadataRecord::AccessControlEntry(acl_to_record(
            added,
            Uuid::new_v4(),
        )));
    }

    for (user, mechs) in old.scram.iter() {
        for m in mechs.keys() {
            if new.scram_credential(user, *m).is_none() {
                out.push(MetadataRecord::RemoveUserScramCredential(
                    rec::RemoveUserScramCredentialRecord {
                        name: user.clone(),
                        mechanism: m.code(),
                    },
                ));
            }
        }
    }
    for (user, mechs) in new.scram.iter() {
        for (m, c) in mechs {
            if old.scram_credential(user, *m) != Some(c) {
                out.push(MetadataRecord::UserScramCredential(
                    rec::UserScramCredentialRecord {
                        name: user.clone(),
                        mechanism: m.code(),
                        salt: c.salt.clone(),
                        stored_key: c.stored_key.clone(),
                        server_key: c.server_key.clone(),
                        iterations: c.iterations,
                    },
                ));
            }
        }
    }

    let quota = |e: &QuotaEntity, key: &str, value: f64, remove: bool| {
        MetadataRecord::ClientQuota(rec::ClientQuotaRecord {
            entity: quota_entity_to_log(e),
            key: key.to_string(),
            value,
            remove,
        })
    };
    for (e, values) in old.client_quotas.iter() {
        let now = new.client_quotas.get(e);
        for k in values.keys() {
            if now.is_none_or(|n| !n.contains_key(k)) {
                out.push(quota(e, k, 0.0, true));
            }
        }
    }
    for (e, values) in new.client_quotas.iter() {
        let before = old.client_quotas.get(e);
        for (k, v) in values {
            if before.and_then(|b| b.get(k)) != Some(v) {
                out.push(quota(e, k, *v, false));
            }
        }
    }
    out
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new content: temp file, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_properties(path: &Path) -> Option<BTreeMap<String, String>> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| crate::config::parse_properties(&t))
}

fn existing_cluster_id(log_dirs: &[PathBuf]) -> Option<String> {
    log_dirs
        .iter()
        .filter_map(|d| read_properties(&d.join("meta.properties")))
        .find_map(|m| m.get("cluster.id").cloned())
}

/// Refuses a dir whose `meta.properties` belongs to another node id, as Kafka does.
fn check_node_id(dir: &Path, node_id: i32) -> Result<(), MetadataError> {
    let path = dir.join("meta.properties");
    if let Some(stored) =
        read_properties(&path).and_then(|m| m.get("node.id").and_then(|v| v.parse::<i32>().ok()))
    {
        if stored != node_id {
            return Err(MetadataError::NodeIdMismatch {
                path,
                stored,
                configured: node_id,
            });
        }
    }
    Ok(())
}

/// Kafka's `meta.properties` (version 1, KRaft), written once per dir.
fn write_meta_properties(dir: &Path, node_id: i32, cluster_id: &str) -> Result<(), MetadataError> {
    check_node_id(dir, node_id)?;
    let path = dir.join("meta.properties");
    if read_properties(&path).is_some_and(|m| m.contains_key("node.id")) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let directory_id =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
    let text = format!(
        "#\n#Written by Strom\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\ndirectory.id={directory_id}\n"
    );
    write_atomically(&path, text.as_bytes()).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicMetadata {
        TopicMetadata {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::from([("segment.bytes".into(), "1000".into())]),
            leader_epoch: 0,
            registrations: vec![],
        }
    }

    #[test]
    fn topics_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let cid = s.image().cluster_id.clone();
        assert_eq!(cid.len(), 22);
        let a = topic("a");
        s.add_topic(a.clone()).unwrap();
        s.add_topic(topic("b")).unwrap();
        s.remove_topic("b").unwrap();
        drop(s);
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let img = s.image();
        assert_eq!(img.cluster_id, cid);
        let got = img.topic("a").unwrap();
        assert_eq!(
            (got.id, got.partitions, &got.configs),
            (a.id, 3, &a.configs)
        );
        let r = got.registration(2).unwrap();
        assert_eq!((r.leader, &r.replicas, &r.isr), (1, &vec![1], &vec![1]));
        assert_eq!(img.topic_by_id(&a.id).unwrap().name, "a");
        assert!(img.topic("b").is_none());
    }

    #[test]
    fn acls_survive_reopen() {
        use crate::security::acl::*;
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let acl = |name: &str| AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::Topic,
                name: name.into(),
                pattern_type: PatternType::Prefixed,
            },
            entry: AccessControlEntry {
                principal: "User:alice".into(),
                host: "*".into(),
                operation: AclOperation::Read,
                permission: PermissionType::Allow,
            },
        };
        s.update_acls(|a| (a.with_added([acl("x-"), acl("y-")]), ()))
            .unwrap();
        let mut y = AclBindingFilter::any();
        y.name = Some("y-".into());
        s.update_acls(|a| a.with_removed(&[y])).unwrap();
        drop(s);
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let kept: Vec<_> = s.image().acls().bindings().cloned().collect();
        assert_eq!(kept, vec![acl("x-")]);
    }

    #[test]
    fn scram_credentials_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let m = ScramMechanism::Sha512;
        let salted = m.salted_password(b"pw", b"salt", 4096);
        let cred = ScramCredential::from_salted_password(m, b"salt", &salted, 4096);
        s.update_scram_credentials(|c| {
            c.entry("alice".into()).or_default().insert(m, cred.clone());
        })
        .unwrap();
        drop(s);
        let s = MetadataStore::open(&dirs, 1).unwrap();
        assert_eq!(s.image().scram_credential("alice", m), Some(&cred));
        assert!(s
            .image()
            .scram_credential("alice", ScramMechanism::Sha256)
            .is_none());
    }

    #[test]
    fn an_old_json_image_is_imported_once_and_renamed_aside() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let meta = d.path().join("__cluster_metadata");
        std::fs::create_dir_all(&meta).unwrap();
        let t = topic("old");
        let m = ScramMechanism::Sha256;
        let salted = m.salted_password(b"pw", b"salt", 4096);
        let cred = ScramCredential::from_salted_password(m, b"salt", &salted, 4096);
        let old = PersistedImage {
            version: 1,
            cluster_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            client_quotas: Default::default(),
            topics: vec![TopicMetadata {
                leader_epoch: 2,
                ..t.clone()
            }],
            acls: vec![],
            scram_credentials: BTreeMap::from([(
                "bob".to_string(),
                BTreeMap::from([(m, cred.clone())]),
            )]),
        };
        std::fs::write(meta.join("image.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let img = s.image();
        assert_eq!(img.cluster_id, "AAAAAAAAAAAAAAAAAAAAAA");
        let got = img.topic("old").unwrap();
        assert_eq!((got.id, got.partitions, got.leader_epoch), (t.id, 3, 2));
        assert_eq!(got.configs, t.configs);
        assert_eq!(img.scram_credential("bob", m), Some(&cred));
        assert!(!meta.join("image.json").exists());
        assert!(meta.join("image.json.migrated").exists());
        drop(s);
        // Reopening reads the log, not the renamed file.
        let s = MetadataStore::open(&dirs, 1).unwrap();
        assert_eq!(s.image().topic("old").unwrap().leader_epoch, 2);
        assert!(s.quorum().describe().high_watermark > 0);
    }

    #[test]
    fn the_cluster_id_lives_in_the_log_and_another_clusters_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let cid = s.image().cluster_id.clone();
        assert_eq!(s.log_cluster_id().as_deref(), Some(cid.as_str()));
        drop(s);
        // meta.properties naming another cluster: INCONSISTENT_CLUSTER_ID.
        let meta = d.path().join("meta.properties");
        let text = std::fs::read_to_string(&meta).unwrap();
        std::fs::write(&meta, text.replace(&cid, "BBBBBBBBBBBBBBBBBBBBBB")).unwrap();
        assert!(matches!(
            MetadataStore::open(&dirs, 1),
            Err(MetadataError::InconsistentClusterId { .. })
        ));
        // A fresh dir on a log that has an id adopts the log's.
        std::fs::remove_file(&meta).unwrap();
        let s = MetadataStore::open(&dirs, 1).unwrap();
        assert_eq!(s.image().cluster_id, cid);
        assert!(std::fs::read_to_string(&meta)
            .unwrap()
            .contains(&format!("cluster.id={cid}")));
    }

    #[test]
    fn the_log_image_becomes_partition_registrations_and_live_brokers() {
        let id = Uuid::new_v4();
        let broker = |n: i32, fenced: bool| {
            MetadataRecord::RegisterBroker(rec::RegisterBrokerRecord {
                broker_id: n,
                incarnation_id: Uuid::new_v4(),
                broker_epoch: 10 + i64::from(n),
                endpoints: vec![rec::BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + n as u16,
                    security_protocol: 0,
                }],
                rack: Some(format!("r{n}")),
                fenced,
                in_controlled_shutdown: false,
            })
        };
        let partition = |p: i32, leader: i32| {
            MetadataRecord::Partition(rec::PartitionRecord {
                partition_id: p,
                topic_id: id,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
                removing_replicas: vec![],
                adding_replicas: vec![],
                leader,
                leader_epoch: 4,
                partition_epoch: 7,
            })
        };
        let mut log = strom_metadata::MetadataImage::default();
        log.replay_batch(&[
            broker(1, false),
            broker(2, false),
            broker(3, true),
            MetadataRecord::Topic(rec::TopicRecord {
                name: "t".into(),
                topic_id: id,
            }),
            partition(0, 2),
            partition(1, -1),
            MetadataRecord::Config(rec::ConfigRecord {
                resource_type: resource_type::BROKER,
                resource_name: String::new(),
                name: CLUSTER_ID_CONFIG.into(),
                value: Some("the-log-id".into()),
            }),
        ])
        .unwrap();
        let img = from_log_image(&log, "local-fallback", Some(9));
        assert_eq!(img.cluster_id, "the-log-id");
        assert_eq!(img.applied_index, Some(9));
        let t = img.topic("t").unwrap();
        assert_eq!(
            (t.partitions, t.replication_factor, t.leader_epoch),
            (2, 3, 4)
        );
        let r = t.registration(0).unwrap();
        assert_eq!(
            (
                r.leader,
                &r.replicas,
                &r.isr,
                r.leader_epoch,
                r.partition_epoch
            ),
            (2, &vec![1, 2, 3], &vec![1, 2], 4, 7)
        );
        assert_eq!(t.registration(1).unwrap().leader, -1);
        assert!(t.registration(2).is_none());
        let live: Vec<i32> = img.live_brokers().map(|b| b.broker_id).collect();
        assert_eq!(live, vec![1, 2]);
        assert!(img.is_live(2) && !img.is_live(3) && !img.is_live(4));
        assert_eq!(img.broker(3).unwrap().rack.as_deref(), Some("r3"));
        // Before the log carries a cluster id, the local one shows.
        let empty = strom_metadata::MetadataImage::default();
        assert_eq!(from_log_image(&empty, "local", None).cluster_id, "local");
    }

    #[test]
    fn refuses_another_nodes_dir() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        MetadataStore::open(&dirs, 1).unwrap();
        assert!(matches!(
            MetadataStore::open(&dirs, 2),
            Err(MetadataError::NodeIdMismatch { .. })
        ));
    }
}
