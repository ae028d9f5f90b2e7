//! Strom's cluster metadata log (KRaft's idea, ARCHITECTURE §4): topics,
//! partitions, brokers, configs, ACLs, SCRAM users, quotas and producer-id
//! blocks are [`MetadataRecord`]s in a log replicated by a Raft quorum of
//! controller voters; every node replays the committed log into a
//! [`MetadataImage`].
//!
//! # Why openraft
//! It is a maintained, async (tokio) Raft with the pieces a metadata quorum
//! needs — leader election, log replication with conflict truncation,
//! learners (our observers), snapshots with chunked InstallSnapshot, and log
//! purging after a snapshot — while leaving the log store, state machine and
//! transport to us. So the log is ours (CRC'd
//! segment files, fsync before acknowledging, torn-tail recovery like the
//! partition log) and the transport is a plain TCP listener. Pinned to
//! `=0.9.25` because 0.10 is alpha.
//!
//! # Files
//! All under `<metadata.log.dir>/__cluster_metadata-0/`:
//! `<20-digit index>.log` segments, `quorum-state` (the vote),
//! `log-start-offset` (last purged log id), `committed` (a hint), and the
//! newest snapshot `<20-digit end index>-<10-digit term>.checkpoint`
//! (see [`storage`] and [`state_machine`]).
//!
//! Measured on this 2-core machine under load (release, fsync on every
//! append, `examples/propose_rate`): one voter ~930 sequential commits/s
//! (p50 0.7 ms), three voters ~440/s (p50 1.7 ms), ~1,000-1,500/s with 32
//! concurrent proposers; failover after the leader stops ~2-2.5 s with
//! 600-1200 ms election timeouts. Through the controller
//! (`examples/controller_rate`, three voters, release, under load): a
//! heartbeat (no write) p50 0.03 ms, CreateTopics (one committed batch)
//! p50 0.9 ms / p99 1.6-2.2 ms, the same from the leader or forwarded from
//! a follower.
//!
//! # How brokers follow it
//! [`MetadataQuorum::image`] returns the current image and
//! [`MetadataQuorum::subscribe`] a `watch::Receiver` that changes after every
//! applied batch, so a broker swaps in the new `Arc<MetadataImage>` and diffs
//! it against the old one (topics created/removed, leaders moved). Brokers
//! write through [`MetadataQuorum::controller_call`] from any node;
//! [`MetadataQuorum::propose`] appends directly and works only on the Raft
//! leader (elsewhere it answers [`ProposeError::NotLeader`] with the
//! leader's id and address).
//!
//! # The active controller
//! The Raft leader also runs the controller ([`controller`]): brokers send
//! it [`ControllerRequest`]s (registration, heartbeats, AlterPartition,
//! producer-id blocks, CreateTopics/CreatePartitions, ElectLeaders,
//! reassignments, and any other change as a validated record batch) through
//! [`MetadataQuorum::controller_call`] on their own node, which forwards
//! over the controller listener and follows leader changes (a call in
//! flight to a controller that stopped answering is re-sent as soon as Raft
//! knows another leader, so brokers keep their sessions with the new one
//! while the old one hangs). It fences
//! brokers that stop heartbeating and re-elects leaders from the ISR in the
//! same batch, runs controlled shutdown, places replicas rack-aware with
//! balanced leaders, and moves leadership back to preferred replicas.
//!
//! Failover timing (3 `strom server`s, session 3 s, heartbeat 0.5 s, debug
//! build): a SIGKILLed partition leader's partitions move ~3 s after the
//! kill (its session); a SIGSTOPped or killed active controller is replaced
//! in 1.5-2 s and its partitions move a session later (~5 s): Kafka's bound
//! of election plus session timeout.
//!
//! # What remains for issue 7
//! - Not built: KIP-966 eligible leader replicas,
//!   `leader.imbalance.per.broker.percentage` (every imbalanced partition
//!   moves at each check), unregistering brokers (UnregisterBroker), broker
//!   feature/version negotiation in registration, reassignment throttles,
//!   controller metrics.
//! - Process-level fault tests (SIGKILL/SIGSTOP of `strom server`s) live
//!   with the broker; the in-process tests here cover graceful stop,
//!   restart, a partition, controller failover and a hung controller.

pub mod controller;
pub mod controller_api;
pub mod image;
pub mod network;
pub mod records;
pub mod state_machine;
pub mod storage;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use controller_api::{ControllerRequest, ControllerResponse};
pub use image::MetadataImage;
pub use records::MetadataRecord;

use network::{NetworkFactory, PeerStats};
use state_machine::StateMachine;
use storage::{LogStore, Nid};

/// A batch of records: the application data of one Raft entry, applied
/// atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetadataBatch(pub Vec<MetadataRecord>);

/// What applying one entry did: `Some(reason)` when its batch was rejected
/// (and so applied nothing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult(pub Option<String>);

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata log.
    pub TypeConfig:
        D = MetadataBatch,
        R = ApplyResult,
        NodeId = u64,
        Node = BasicNode,
);

/// Kafka's `node.id`.
pub type NodeId = i32;

/// The image as of a log index, as published to followers of the log.
#[derive(Clone, Debug)]
pub struct PublishedImage {
    /// Index of the last applied entry (`None`: nothing applied yet).
    pub last_applied_index: Option<u64>,
    pub image: Arc<MetadataImage>,
}

/// Tunables of the quorum. Defaults follow Kafka's KRaft timing: a voter
/// that hears no leader for `controller.quorum.fetch.timeout.ms` (2000)
/// stands for election, a failed election is retried within
/// `controller.quorum.election.backoff.max.ms` (1000).
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// A candidate retries its election after a random time in
    /// `[election_timeout_min, election_timeout_max)`. A follower stands
    /// for election after hearing no leader for `election_timeout_max`
    /// (openraft's leader lease, during which it also refuses other
    /// candidates) plus that random time: 1.5-2 s with the defaults, as
    /// Kafka's 2 s fetch timeout.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Leader heartbeat period (must be well below the election timeout).
    pub heartbeat_interval: Duration,
    /// Build a snapshot after this many entries since the last one (Kafka
    /// counts bytes, `metadata.log.max.record.bytes.between.snapshots`).
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind the snapshot, so a briefly lagging
    /// voter catches up from the log rather than a snapshot.
    pub log_entries_kept_after_snapshot: u64,
    /// Metadata log segment size (`metadata.log.segment.bytes`).
    pub segment_bytes: u64,
    /// TCP connect timeout to another voter.
    pub connect_timeout: Duration,
    /// Snapshot chunk size for InstallSnapshot.
    pub snapshot_chunk_bytes: u64,
    /// How long [`MetadataQuorum::propose`] waits for the commit (a leader
    /// cut off from the majority keeps waiting otherwise), and
    /// [`MetadataQuorum::controller_call`] for an answer.
    pub propose_timeout: Duration,
    /// The active controller fences a broker that has not heartbeated for
    /// this long (`broker.session.timeout.ms`, Kafka: 9000).
    pub broker_session_timeout: Duration,
    /// How often the controller moves leadership back to preferred replicas
    /// (`leader.imbalance.check.interval.seconds`, Kafka: 300).
    pub leader_imbalance_check_interval: Duration,
    /// `auto.leader.rebalance.enable` (Kafka: true); a cluster-wide dynamic
    /// broker config of that name overrides it.
    pub auto_leader_rebalance_enable: bool,
    /// `unclean.leader.election.enable` (Kafka: false); cluster-wide and
    /// topic configs of that name override it.
    pub unclean_leader_election_enable: bool,
    /// TLS on the controller listener (its security protocol is SSL);
    /// `None`: plaintext.
    pub tls: Option<QuorumTls>,
}

/// The controller listener's TLS, built by the node from that listener's
/// `ssl.*` settings (Kafka's): `server` accepts voters, brokers and the
/// leader's replication to observers (it enforces `ssl.client.auth`);
/// `client` is what this node dials other nodes' controller listeners with
/// (their trust store, and its key store as client certificate). Shared
/// read-only by every connection.
#[derive(Clone)]
pub struct QuorumTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for QuorumTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuorumTls")
    }
}

/// The same configuration objects (certificates are not compared).
impl PartialEq for QuorumTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.server, &other.server) && Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Default for QuorumConfig {
    fn default() -> Self {
        Self {
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(250),
            snapshot_interval_entries: 20_000,
            log_entries_kept_after_snapshot: 1_000,
            segment_bytes: 8 << 20,
            connect_timeout: Duration::from_millis(1000),
            snapshot_chunk_bytes: 1 << 20,
            // Kafka's request.timeout.ms.
            propose_timeout: Duration::from_secs(30),
            broker_session_timeout: Duration::from_millis(9000),
            leader_imbalance_check_interval: Duration::from_secs(300),
            auto_leader_rebalance_enable: true,
            unclean_leader_election_enable: false,
            tls: None,
        }
    }
}

/// Errors starting the quorum or parsing its configuration.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid controller.quorum.voters {value:?}: {reason}")]
    InvalidVoters { value: String, reason: String },
    #[error("node.id {0} is not one of controller.quorum.voters")]
    NotAVoter(NodeId),
    #[error("metadata log in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid quorum config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal was not committed (also sent back over the controller
/// listener for a forwarded [`ControllerRequest`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// This node is not the active controller; forward to the leader, if one
    /// is known (Kafka's NOT_CONTROLLER).
    #[error("not the active controller (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The batch was committed at `index` but rejected by replay, so nothing
    /// of it applied (the controller should have validated it).
    #[error("metadata batch at index {index} rejected: {reason}")]
    Rejected { index: u64, reason: String },
    /// Not committed within `propose_timeout` (no majority reachable). The
    /// batch may still commit later, as after Kafka's REQUEST_TIMED_OUT.
    #[error("metadata proposal not committed within {0:?}")]
    Timeout(Duration),
    /// The quorum is shutting down or hit a fatal storage error.
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
}

/// One voter's state as DescribeQuorum reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub replica_id: NodeId,
    /// Next offset of its log as the leader knows it (-1: unknown).
    pub log_end_offset: i64,
    /// Wall-clock ms of its last accepted replication request (-1: unknown).
    pub last_fetch_timestamp: i64,
    /// Wall-clock ms it was last caught up to the leader's log end (-1: unknown).
    pub last_caught_up_timestamp: i64,
}

/// What DescribeQuorum needs, seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumInfo {
    /// The leader this node knows of (-1: none).
    pub leader_id: NodeId,
    /// The Raft term (KRaft's leader epoch).
    pub leader_epoch: i32,
    /// Next offset after the last applied entry — on the leader that is the
    /// committed end of the log.
    pub high_watermark: i64,
    /// Every voter; log end offsets and timestamps are filled on the leader.
    pub voters: Vec<ReplicaState>,
    /// Non-voting members following the log (see [`MetadataQuorum::start_observer`]).
    pub observers: Vec<ReplicaState>,
}

/// Parses Kafka's `controller.quorum.voters`: `1@host:port,2@[::1]:port`.
pub fn parse_quorum_voters(value: &str) -> Result<BTreeMap<NodeId, String>, QuorumError> {
    let bad = |reason: String| QuorumError::InvalidVoters {
        value: value.to_string(),
        reason,
    };
    let mut voters = BTreeMap::new();
    for part in value.split(',').map(str::trim) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| bad(format!("{part:?} is not id@host:port")))?;
        let id: NodeId = id
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .ok_or_else(|| bad(format!("{id:?} is not a node id")))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{addr:?} has no port")))?;
        if host.is_empty() || host == "[]" {
            return Err(bad(format!("{addr:?} has no host")));
        }
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("{port:?} is not a port")))?;
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(bad(format!("node id {id} appears twice")));
        }
    }
    Ok(voters)
}

/// A running member of the metadata quorum: its Raft node, the controller
/// listener serving the other voters, and the published image.
///
/// Owner: the broker/controller process, one per node. Cheap handles
/// (`image`, `subscribe`) may be used from any task; `propose` may be called
/// concurrently. `shutdown` stops Raft and closes the listener.
pub struct MetadataQuorum {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    voters: BTreeMap<NodeId, String>,
    image: watch::Receiver<PublishedImage>,
    stats: Arc<PeerStats>,
    local_addr: SocketAddr,
    propose_timeout: Duration,
    /// This node's controller task (active only while it is the leader).
    controller: tokio::sync::mpsc::Sender<controller::Call>,
    /// The connection to the active controller when it is elsewhere.
    controller_client: network::ControllerClient,
    tasks: Vec<JoinHandle<()>>,
}

fn raft_config(c: &QuorumConfig) -> Result<openraft::Config, QuorumError> {
    let config = openraft::Config {
        cluster_name: "strom-metadata".into(),
        election_timeout_min: c.election_timeout_min.as_millis() as u64,
        election_timeout_max: c.election_timeout_max.as_millis() as u64,
        heartbeat_interval: c.heartbeat_interval.as_millis() as u64,
        install_snapshot_timeout: (c.election_timeout_max.as_millis() as u64).max(1000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(c.snapshot_interval_entries),
        max_in_snapshot_log_to_keep: c.log_entries_kept_after_snapshot,
        snapshot_max_chunk_size: c.snapshot_chunk_bytes,
        purge_batch_size: 1,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))
}

impl MetadataQuorum {
    /// Starts this node's voter: opens (or recovers) the log and snapshot in
    /// `<log_dir>/__cluster_metadata-0/`, binds the controller listener at
    /// `voters[node_id]`, and joins the quorum. A fresh quorum forms from the
    /// static voter set (every voter proposes the same initial membership,
    /// which Raft makes safe); a single voter elects itself.
    pub async fn start(
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        log_dir: &Path,
        config: QuorumConfig,
    ) -> Result<Self, QuorumError> {
        let addr = voters
            .get(&node_id)
            .ok_or(QuorumError::NotAVoter(node_id))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| QuorumError::Io {
                path: PathBuf::from(addr),
                source,
            })?;
        Self::start_with_listener(node_id, voters, log_dir, config, listener).await
    }

    /// [`Self::start`] on an already bound controller listener (tests bind
    /// ephemeral ports first, then tell every voter the addresses).
    pub async fn start_with_listener(
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        log_dir: &Path,
        config: QuorumConfig,
        listener: TcpListener,
    ) -> Result<Self, QuorumError> {
        if !voters.contains_key(&node_id) {
            return Err(QuorumError::NotAVoter(node_id));
        }
        Self::start_inner(node_id, voters, log_dir, config, listener, true).await
    }

    /// Starts a node that follows the metadata log without voting (a broker
    /// that is not a controller; KRaft's observer). It serves the leader's
    /// replication on `listener` and applies the log like a voter, but never
    /// counts toward a majority nor stands for election. It receives entries
    /// once the leader [`Self::add_observer`]s it; after a restart it goes on
    /// from its own directory.
    pub async fn start_observer(
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        log_dir: &Path,
        config: QuorumConfig,
        listener: TcpListener,
    ) -> Result<Self, QuorumError> {
        if voters.contains_key(&node_id) {
            return Err(QuorumError::Config(format!(
                "node.id {node_id} is a voter, not an observer"
            )));
        }
        Self::start_inner(node_id, voters, log_dir, config, listener, false).await
    }

    async fn start_inner(
        node_id: NodeId,
        voters: BTreeMap<NodeId, String>,
        log_dir: &Path,
        config: QuorumConfig,
        listener: TcpListener,
        voter: bool,
    ) -> Result<Self, QuorumError> {
        if node_id < 0 || voters.keys().any(|id| *id < 0) {
            return Err(QuorumError::Config("node ids must not be negative".into()));
        }
        let dir = log_dir.join("__cluster_metadata-0");
        let io = |source| QuorumError::Io {
            path: dir.clone(),
            source,
        };
        let raft_config = Arc::new(raft_config(&config)?);
        let log = LogStore::open(&dir, config.segment_bytes).map_err(io)?;
        let (sm, image) = StateMachine::open(&dir).map_err(io)?;
        let stats = Arc::new(PeerStats::new());
        let transport = network::Transport::new(config.connect_timeout, config.tls.clone());
        let network = NetworkFactory {
            stats: stats.clone(),
            transport: transport.clone(),
        };
        let raft = Raft::new(node_id as Nid, raft_config, network, log, sm)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let local_addr = listener.local_addr().map_err(io)?;
        // Deep enough for every broker's heartbeat at once; senders wait beyond.
        let (controller_tx, controller_rx) = tokio::sync::mpsc::channel(256);
        let runner = controller::Runner {
            raft: raft.clone(),
            voters: voters.clone(),
            image: image.clone(),
            propose_timeout: config.propose_timeout,
            config: controller::ControllerConfig {
                session_timeout: config.broker_session_timeout,
                imbalance_check_interval: config.leader_imbalance_check_interval,
                auto_leader_rebalance: config.auto_leader_rebalance_enable,
                unclean_leader_election: config.unclean_leader_election_enable,
            },
        };
        let mut tasks = vec![
            tokio::spawn(network::serve(
                listener,
                transport.clone(),
                raft.clone(),
                controller_tx.clone(),
            )),
            tokio::spawn(runner.run(controller_rx)),
        ];

        let members: BTreeMap<Nid, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id as Nid, BasicNode { addr: addr.clone() }))
            .collect();
        // Observers never form a quorum: they wait for the leader to add them.
        // A restarted voter's log already holds the membership: asking again
        // only makes openraft log "Can not initialize" at ERROR.
        let pristine = voter && !raft.is_initialized().await.unwrap_or(false);
        let formed = if pristine {
            raft.initialize(members).await
        } else {
            Ok(())
        };
        match formed {
            Ok(()) if pristine => tracing::info!(
                node_id,
                "metadata quorum formed from controller.quorum.voters"
            ),
            Ok(()) => {}
            // Already part of a formed quorum (a restart): nothing to do.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => {
                for t in &tasks {
                    t.abort();
                }
                let _ = raft.shutdown().await;
                return Err(QuorumError::Raft(e.to_string()));
            }
        }
        tasks.push(tokio::spawn(track_log_end(raft.clone(), stats.clone())));
        Ok(Self {
            node_id,
            raft,
            voters,
            image,
            stats,
            local_addr,
            propose_timeout: config.propose_timeout,
            controller: controller_tx,
            controller_client: network::ControllerClient::new(transport),
            tasks,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address the controller listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Appends `records` as one batch and waits until it is committed and
    /// applied here; returns its log index. Only the leader accepts proposals.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, ProposeError> {
        propose_on(&self.raft, self.propose_timeout, records).await
    }

    /// Sends `req` to the active controller (handled here when this node is
    /// it) and returns its answer once any records it made are committed.
    ///
    /// Works on every node, voter or observer. A leader change shows as
    /// latency, not as an error: on NOT_CONTROLLER or a broken connection
    /// it re-resolves the leader (its own view, the hint in the answer, or
    /// else each voter in turn — an observer not yet added does not know
    /// the leader) and retries with a short backoff for up to
    /// `propose_timeout`. Kafka errors of the request itself are in the
    /// response; `Err` means no controller answered in time
    /// ([`ProposeError::NotLeader`] / [`ProposeError::Unavailable`]), or
    /// the controller's proposal timed out or was rejected.
    pub async fn controller_call(
        &self,
        req: ControllerRequest,
    ) -> Result<ControllerResponse, ProposeError> {
        self.controller_call_with_timeout(req, self.propose_timeout)
            .await
    }

    /// [`Self::controller_call`] bounded by `timeout` rather than
    /// `propose_timeout`: broker heartbeats use a timeout well below
    /// `broker.session.timeout.ms` (Kafka's BrokerLifecycleManager), so one
    /// heartbeat lost to a hung controller leaves time for the next.
    ///
    /// An attempt in flight is abandoned and sent again as soon as Raft's
    /// known leader changes: a controller that hangs (a stopped process
    /// accepts connections and never answers) would otherwise hold the call
    /// until its timeout while a new controller, which granted every broker
    /// a fresh session on takeover, hears nothing and fences them all. A
    /// request abandoned that way may still have been decided by the old
    /// controller, as after Kafka's NOT_CONTROLLER.
    pub async fn controller_call_with_timeout(
        &self,
        req: ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerResponse, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Duration::from_millis(20);
        let mut hint: Option<String> = None;
        let mut next_voter = 0usize;
        let mut last_error = ProposeError::Unavailable("no active controller found".into());
        let mut metrics = self.raft.metrics();
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(last_error);
            }
            let known_leader = metrics.borrow_and_update().current_leader;
            let attempt = async {
                if self.is_leader() {
                    match tokio::time::timeout(
                        remaining,
                        network::local_controller_call(&self.controller, req.clone()),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(ProposeError::Timeout(timeout)),
                    }
                } else {
                    let addr = match self.leader().map(|l| l.1).or_else(|| hint.take()) {
                        Some(addr) => addr,
                        None => {
                            // Nobody known: ask the voters in turn (their answer names the leader).
                            let addrs: Vec<&String> = self.voters.values().collect();
                            next_voter += 1;
                            addrs[next_voter % addrs.len()].clone()
                        }
                    };
                    match self.controller_client.call(&addr, &req, remaining).await {
                        Ok(r) => r,
                        Err(e) => Err(ProposeError::Unavailable(format!(
                            "controller at {addr}: {e}"
                        ))),
                    }
                }
            };
            let leader_changed = async {
                loop {
                    if metrics.changed().await.is_err() {
                        // Raft stopped: only the attempt's own timeout ends it.
                        std::future::pending::<()>().await;
                    }
                    if metrics.borrow_and_update().current_leader != known_leader {
                        return;
                    }
                }
            };
            let result = tokio::select! {
                r = attempt => r,
                () = leader_changed => {
                    tracing::debug!(
                        "the active controller changed: sending the request to the new one"
                    );
                    last_error = ProposeError::Unavailable("the active controller changed".into());
                    backoff = Duration::from_millis(20);
                    continue;
                }
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(ProposeError::NotLeader {
                    leader_id,
                    leader_addr,
                }) => {
                    hint = leader_addr.clone();
                    last_error = ProposeError::NotLeader {
                        leader_id,
                        leader_addr,
                    };
                }
                Err(e @ ProposeError::Unavailable(_)) => last_error = e,
                Err(e) => return Err(e),
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(Duration::from_millis(400));
        }
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().image.clone()
    }

    /// Follows the image: the receiver changes after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<PublishedImage> {
        self.image.clone()
    }

    /// The leader (active controller) this node knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let id = self.raft.metrics().borrow().current_leader?;
        let id = id as NodeId;
        Some((id, self.voters.get(&id)?.clone()))
    }

    /// On the leader: makes node `id`, listening at `addr`, an observer that
    /// the leader replicates the log to (a membership change in the log, so
    /// it survives leader changes). Returns its log index once committed;
    /// adding a known observer again just updates its address.
    pub async fn add_observer(&self, id: NodeId, addr: String) -> Result<u64, ProposeError> {
        add_observer_on(&self.raft, &self.voters, self.propose_timeout, id, addr).await
    }

    /// True while this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Waits until some leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, String)> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if rx.borrow().current_leader.is_some() {
                return self.leader();
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Index of the newest snapshot this node holds (`None`: none yet).
    pub fn snapshot_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().snapshot.map(|l| l.index)
    }

    /// Index of the last purged entry: the log starts after it.
    pub fn purged_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().purged.map(|l| l.index)
    }

    /// Quorum state for DescribeQuorum.
    pub fn describe(&self) -> QuorumInfo {
        let m = self.raft.metrics().borrow().clone();
        let next = |i: Option<u64>| i.map_or(0, |i| i as i64 + 1);
        let leader = m.state == ServerState::Leader;
        let replica = |id: Nid| {
            let nid = id as NodeId;
            if id == m.id {
                return ReplicaState {
                    replica_id: nid,
                    log_end_offset: next(m.last_log_index),
                    last_fetch_timestamp: if leader { now_ms() } else { -1 },
                    last_caught_up_timestamp: if leader { now_ms() } else { -1 },
                };
            }
            let matched = m.replication.as_ref().and_then(|r| r.get(&id));
            let times = self.stats.get(id).filter(|_| leader);
            ReplicaState {
                replica_id: nid,
                log_end_offset: matched.map_or(-1, |l| next(l.map(|l| l.index))),
                last_fetch_timestamp: times.map_or(-1, |t| t.last_fetch_ms),
                last_caught_up_timestamp: times.map_or(-1, |t| t.last_caught_up_ms),
            }
        };
        let membership = m.membership_config.membership();
        QuorumInfo {
            leader_id: m.current_leader.map_or(-1, |l| l as NodeId),
            leader_epoch: m.current_term as i32,
            // The published image, not the metrics: it is current the moment
            // `propose` returns, metrics follow a little later.
            high_watermark: next(self.image.borrow().last_applied_index),
            voters: membership.voter_ids().map(replica).collect(),
            observers: membership.learner_ids().map(replica).collect(),
        }
    }

    /// Asks Raft to build a snapshot now (tests and admin tooling).
    pub async fn trigger_snapshot(&self) -> Result<(), ProposeError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    /// Stops this voter: Raft, the controller listener and its connections.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum shutdown");
        }
    }
}

impl Drop for MetadataQuorum {
    fn drop(&mut self) {
        // The listener and connections must not outlive the handle.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// [`MetadataQuorum::propose`] on a Raft handle (shared with the controller task).
pub(crate) async fn propose_on(
    raft: &Raft<TypeConfig>,
    timeout: Duration,
    records: Vec<MetadataRecord>,
) -> Result<u64, ProposeError> {
    let write = raft.client_write(MetadataBatch(records));
    let Ok(result) = tokio::time::timeout(timeout, write).await else {
        return Err(ProposeError::Timeout(timeout));
    };
    match result {
        Ok(resp) => match resp.data.0 {
            None => Ok(resp.log_id.index),
            Some(reason) => Err(ProposeError::Rejected {
                index: resp.log_id.index,
                reason,
            }),
        },
        Err(e) => Err(write_error(e)),
    }
}

/// [`MetadataQuorum::add_observer`] on a Raft handle.
pub(crate) async fn add_observer_on(
    raft: &Raft<TypeConfig>,
    voters: &BTreeMap<NodeId, String>,
    timeout: Duration,
    id: NodeId,
    addr: String,
) -> Result<u64, ProposeError> {
    if id < 0 || voters.contains_key(&id) {
        return Err(ProposeError::Rejected {
            index: 0,
            reason: format!("node {id} cannot be an observer"),
        });
    }
    let known = {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        membership.get_node(&(id as Nid)).map(|n| {
            (
                n.addr.clone(),
                m.membership_config.log_id().map_or(0, |l| l.index),
            )
        })
    };
    let node = BasicNode { addr };
    let result = match known {
        // Already following at that address: nothing to write.
        Some((known_addr, index)) if known_addr == node.addr => return Ok(index),
        // openraft's AddNodes keeps a known node's old address; a broker-only
        // node that comes back elsewhere needs SetNodes.
        Some(_) => {
            let set = raft.change_membership(
                openraft::ChangeMembers::SetNodes(BTreeMap::from([(id as Nid, node)])),
                true,
            );
            tokio::time::timeout(timeout, set).await
        }
        None => tokio::time::timeout(timeout, raft.add_learner(id as Nid, node, false)).await,
    };
    let Ok(result) = result else {
        return Err(ProposeError::Timeout(timeout));
    };
    match result {
        Ok(resp) => Ok(resp.log_id.index),
        Err(e) => Err(write_error(e)),
    }
}

fn write_error(e: RaftError<Nid, ClientWriteError<Nid, BasicNode>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader_id: f.leader_id.map(|i| i as NodeId),
            leader_addr: f.leader_node.map(|n| n.addr),
        },
        e => ProposeError::Unavailable(e.to_string()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Keeps the network's view of the local log end current, so a follower's
/// accepted AppendEntries can be judged "caught up".
async fn track_log_end(raft: Raft<TypeConfig>, stats: Arc<PeerStats>) {
    let mut rx = raft.metrics();
    loop {
        let last = rx.borrow().last_log_index.unwrap_or(u64::MAX);
        stats.leader_last_index.store(last, Ordering::Relaxed);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_controller_quorum_voters() {
        let v = parse_quorum_voters("1@localhost:9093, 2@10.0.0.2:9093,3@[::1]:19093").unwrap();
        assert_eq!(v[&1], "localhost:9093");
        assert_eq!(v[&2], "10.0.0.2:9093");
        assert_eq!(v[&3], "[::1]:19093");
        for bad in [
            "",
            "1@",
            "x@h:1",
            "-1@h:1",
            "1@h",
            "1@:9093",
            "1@h:0",
            "1@h:99999",
            "1@h:1,1@g:2",
            "1h:1",
        ] {
            assert!(
                matches!(
                    parse_quorum_voters(bad),
                    Err(QuorumError::InvalidVoters { .. })
                ),
                "{bad:?} should be rejected"
            );
        }
    }
}
