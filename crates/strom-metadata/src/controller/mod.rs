//! The active controller (Kafka's `QuorumController`, our size): the task on
//! the Raft leader that turns [`ControllerRequest`]s into metadata records.
//!
//! ```text
//!   controller_call (any node) ──frame──▶ serve ─┐
//!   controller_call (the leader itself) ─────────┴─▶ mpsc ─▶ run(): one request at a time
//!                                                            │ validate against the image
//!                                                            │ build records (ControllerState)
//!                                                            │ propose, wait for commit + apply
//!                                                            ▼ answer (with the log index)
//! ```
//!
//! Requests are handled one at a time and each proposal is applied to the
//! local image before the next request is looked at, so every decision sees
//! the effect of the previous one (no pending-records bookkeeping needed).
//! The same task runs a periodic tick: broker session expiry (fencing, with
//! leaders re-elected in the same batch), leaderless partitions whose ISR has
//! a live member again, and the auto leader rebalance.
//!
//! Lifecycle: one task per quorum member, for its whole life. It is the
//! active controller only while its node is the Raft leader; on each new
//! leadership term it first waits until everything committed before is
//! applied, then starts afresh from the image (`ControllerState::new`
//! grants every registered broker a new session, as Kafka does on
//! failover). On other nodes it answers NOT_CONTROLLER.
//!
//! The decision logic lives in `ControllerState` (pure: an image and a
//! clock in, records and an answer out), split by Kafka's managers:
//! `cluster` (ClusterControlManager/BrokerHeartbeatManager) and
//! `replication` (ReplicationControlManager), with `placement`
//! (StripedReplicaPlacer) and `election` (PartitionChangeBuilder).

pub(crate) mod election;
pub(crate) mod placement;

mod cluster;
mod replication;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use tokio::sync::{mpsc, oneshot, watch};

use crate::controller_api::{ControllerRequest, ControllerResponse};
use crate::image::MetadataImage;
use crate::records::{resource_type, MetadataRecord};
use crate::{NodeId, ProposeError, PublishedImage, TypeConfig};

/// How often the controller checks sessions and leaderless partitions: a
/// broker is fenced at most this long after its session expired, and a new
/// controller activates within it. An idle tick only compares a few
/// instants, so a short period costs nothing.
const TICK: Duration = Duration::from_millis(100);

/// A request and where its answer goes.
pub(crate) type Call = (
    ControllerRequest,
    oneshot::Sender<Result<ControllerResponse, ProposeError>>,
);

/// The controller's timing and policy (from [`crate::QuorumConfig`]).
#[derive(Clone, Debug)]
pub(crate) struct ControllerConfig {
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `leader.imbalance.check.interval.seconds`.
    pub imbalance_check_interval: Duration,
    /// `auto.leader.rebalance.enable` (a cluster-wide dynamic config overrides it).
    pub auto_leader_rebalance: bool,
    /// `unclean.leader.election.enable` (cluster and topic configs override it).
    pub unclean_leader_election: bool,
}

/// What the controller remembers of a broker between requests (not in the
/// log: rebuilt on every takeover).
#[derive(Clone, Debug)]
struct Session {
    last_contact: Instant,
    /// A heartbeat or registration reached this controller (a session only
    /// granted at takeover does not count as proof the broker is alive).
    heard: bool,
    /// Log index of the controlled-shutdown change; the broker may stop once
    /// it has applied that far.
    shutdown_offset: Option<u64>,
    /// Log index of its registration: it is unfenced only once it has
    /// applied that far (the epoch is a lower bound of it).
    registration_offset: Option<u64>,
}

/// The in-memory state of the active controller for one leadership term;
/// see the module doc.
pub(crate) struct ControllerState {
    config: ControllerConfig,
    sessions: BTreeMap<NodeId, Session>,
    last_rebalance: Instant,
    /// The applied index at which every partition was last found in line
    /// with broker liveness (only a log change can undo that).
    reconciled_at: Option<u64>,
}

/// The image and clock one decision is made against.
pub(crate) struct Ctx<'a> {
    pub image: &'a MetadataImage,
    /// Index of the last entry applied to `image`.
    pub applied_index: u64,
    pub now: Instant,
}

/// What handling one request produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Records to propose as one batch (empty: answer at once).
    pub records: Vec<MetadataRecord>,
    pub response: ControllerResponse,
    /// A broker-only node to add as an observer before proposing.
    pub observer: Option<(NodeId, String)>,
    /// A broker entering controlled shutdown: remember the log index.
    pub shutdown_of: Option<NodeId>,
    /// A broker registering: remember the log index.
    pub registered: Option<NodeId>,
}

impl Outcome {
    fn answer(response: ControllerResponse) -> Self {
        Self {
            records: Vec::new(),
            response,
            observer: None,
            shutdown_of: None,
            registered: None,
        }
    }
    fn with_records(response: ControllerResponse, records: Vec<MetadataRecord>) -> Self {
        Self {
            records,
            ..Self::answer(response)
        }
    }
}

/// `image` with `records` applied (for deciding on what a batch will make).
pub(crate) fn project(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
    let mut next = image.clone();
    if let Err((i, e)) = next.replay_batch(records) {
        // The controller builds only valid batches; if one is not, the
        // proposal will be rejected whole and the caller sees the error.
        tracing::error!(record = i, error = %e, "controller built an invalid batch");
    }
    next
}

/// A boolean config: the topic's, else the cluster-wide dynamic default,
/// else `static_default`.
fn bool_config(
    image: &MetadataImage,
    topic: Option<&str>,
    name: &str,
    static_default: bool,
) -> bool {
    let topic_value = topic
        .and_then(|t| image.configs(resource_type::TOPIC, t))
        .and_then(|c| c.get(name));
    let cluster_value = || {
        image
            .configs(resource_type::BROKER, "")
            .and_then(|c| c.get(name))
    };
    topic_value
        .or_else(cluster_value)
        .and_then(|v| v.trim().parse::<bool>().ok())
        .unwrap_or(static_default)
}

impl ControllerState {
    /// A controller taking over with `image`: every registered broker gets a
    /// fresh session (as Kafka's controller does on activation), so none is
    /// fenced merely because the controller moved.
    pub(crate) fn new(config: ControllerConfig, image: &MetadataImage, now: Instant) -> Self {
        let sessions = image
            .brokers()
            .map(|b| {
                (
                    b.broker_id,
                    Session {
                        last_contact: now,
                        heard: false,
                        shutdown_offset: None,
                        registration_offset: None,
                    },
                )
            })
            .collect();
        Self {
            config,
            sessions,
            last_rebalance: now,
            reconciled_at: None,
        }
    }

    /// Decides one request.
    pub(crate) fn handle(&mut self, ctx: &Ctx, req: ControllerRequest) -> Outcome {
        match req {
            ControllerRequest::RegisterBroker {
                broker_id,
                incarnation_id,
                endpoints,
                rack,
                observer_addr,
            } => self.register_broker(
                ctx,
                broker_id,
                incarnation_id,
                endpoints,
                rack,
                observer_addr,
            ),
            ControllerRequest::BrokerHeartbeat {
                broker_id,
                broker_epoch,
                current_metadata_offset,
                want_fence,
                want_shutdown,
            } => self.broker_heartbeat(
                ctx,
                broker_id,
                broker_epoch,
                current_metadata_offset,
                want_fence,
                want_shutdown,
            ),
            ControllerRequest::AlterPartition {
                broker_id,
                broker_epoch,
                topics,
            } => self.alter_partition(ctx, broker_id, broker_epoch, &topics),
            ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => self.allocate_producer_ids(ctx, broker_id, broker_epoch),
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => self.create_topics(ctx, &topics, validate_only),
            ControllerRequest::CreatePartitions {
                topic,
                count,
                assignments,
                validate_only,
            } => self.create_partitions(ctx, &topic, count, assignments.as_deref(), validate_only),
            ControllerRequest::ElectLeaders {
                election_type,
                partitions,
            } => self.elect_leaders(ctx, election_type, partitions.as_deref()),
            ControllerRequest::AlterPartitionReassignments { reassignments } => {
                self.alter_partition_reassignments(ctx, &reassignments)
            }
            ControllerRequest::ListPartitionReassignments { partitions } => {
                self.list_partition_reassignments(ctx, partitions.as_deref())
            }
            ControllerRequest::Propose { records } => self.propose_records(ctx, records),
        }
    }

    /// The periodic work: fence brokers whose session expired, bring every
    /// partition in line with broker liveness, and (every
    /// `leader.imbalance.check.interval`) move leadership back to preferred
    /// replicas. Returns the records to propose.
    pub(crate) fn tick(&mut self, ctx: &Ctx) -> Vec<MetadataRecord> {
        let mut records = self.expire_sessions(ctx);
        // An idle tick looks at the brokers only: partitions fall out of
        // line with liveness through the log or through this tick's fencing.
        if !records.is_empty() || self.reconciled_at != Some(ctx.applied_index) {
            let next = project(ctx.image, &records);
            records.extend(self.reconcile_partitions(&next));
            if records.is_empty() {
                self.reconciled_at = Some(ctx.applied_index);
            }
        }
        if records.is_empty()
            && ctx.now.duration_since(self.last_rebalance) >= self.config.imbalance_check_interval
        {
            self.last_rebalance = ctx.now;
            if bool_config(
                ctx.image,
                None,
                "auto.leader.rebalance.enable",
                self.config.auto_leader_rebalance,
            ) {
                records = self.preferred_leader_rebalance(ctx.image);
                if !records.is_empty() {
                    tracing::info!(
                        partitions = records.len(),
                        "auto leader rebalance: moving leadership to preferred replicas"
                    );
                }
            }
        }
        records
    }
}

/// Everything the controller task needs of its quorum member.
pub(crate) struct Runner {
    pub raft: Raft<TypeConfig>,
    pub voters: BTreeMap<NodeId, String>,
    pub image: watch::Receiver<PublishedImage>,
    pub propose_timeout: Duration,
    pub config: ControllerConfig,
}

impl Runner {
    /// The controller task; see the module doc. Ends when every sender of
    /// `calls` is gone.
    pub(crate) async fn run(self, mut calls: mpsc::Receiver<Call>) {
        let mut metrics = self.raft.metrics();
        let mut active: Option<(u64, ControllerState)> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                call = calls.recv() => {
                    let Some((req, reply)) = call else { return };
                    let result = match self.activate(&mut active).await {
                        Some(state) => self.handle(state, req).await,
                        None => Err(self.not_leader()),
                    };
                    if matches!(result, Err(ProposeError::NotLeader { .. })) {
                        active = None;
                    }
                    let _ = reply.send(result);
                }
                _ = tick.tick() => {
                    if let Some(state) = self.activate(&mut active).await {
                        let (image, applied_index) = self.current();
                        let ctx = Ctx { image: &image, applied_index, now: Instant::now() };
                        let records = state.tick(&ctx);
                        if !records.is_empty() {
                            if let Err(e) = self.propose(records).await {
                                tracing::warn!(error = %e, "controller tick: proposal failed");
                                if matches!(e, ProposeError::NotLeader { .. }) {
                                    active = None;
                                }
                            }
                        }
                    }
                }
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let m = metrics.borrow_and_update();
                    let still = m.state == ServerState::Leader
                        && active.as_ref().is_some_and(|(term, _)| *term == m.current_term);
                    if !still && active.is_some() {
                        tracing::info!(node_id = m.id, "no longer the active controller");
                        active = None;
                    }
                }
            }
        }
    }

    fn current(&self) -> (std::sync::Arc<MetadataImage>, u64) {
        let p = self.image.borrow();
        (p.image.clone(), p.last_applied_index.unwrap_or(0))
    }

    fn not_leader(&self) -> ProposeError {
        let leader = self.raft.metrics().borrow().current_leader;
        let leader_id = leader.map(|l| l as NodeId);
        ProposeError::NotLeader {
            leader_id,
            leader_addr: leader_id.and_then(|id| self.voters.get(&id).cloned()),
        }
    }

    /// The controller state when this node is the leader, created on the
    /// first call of a new term once the log committed before it is applied.
    async fn activate<'a>(
        &self,
        active: &'a mut Option<(u64, ControllerState)>,
    ) -> Option<&'a mut ControllerState> {
        let (is_leader, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state == ServerState::Leader, m.current_term)
        };
        if !is_leader {
            *active = None;
            return None;
        }
        if active.as_ref().is_some_and(|(t, _)| *t == term) {
            return active.as_mut().map(|(_, s)| s);
        }
        // Decide only on a complete image: wait for everything committed
        // by earlier leaders (up to this term's first entry) to be applied.
        match tokio::time::timeout(self.propose_timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "not activating the controller");
                return None;
            }
            Err(_) => return None,
        }
        let (image, _) = self.current();
        tracing::info!(
            term,
            brokers = image.brokers().count(),
            "this node is the active controller"
        );
        *active = Some((
            term,
            ControllerState::new(self.config.clone(), &image, Instant::now()),
        ));
        active.as_mut().map(|(_, s)| s)
    }

    async fn handle(
        &self,
        state: &mut ControllerState,
        req: ControllerRequest,
    ) -> Result<ControllerResponse, ProposeError> {
        let (image, applied_index) = self.current();
        let ctx = Ctx {
            image: &image,
            applied_index,
            now: Instant::now(),
        };
        let mut out = state.handle(&ctx, req);
        // Voters follow the log already; only broker-only nodes are added.
        if let Some((id, addr)) = out
            .observer
            .take()
            .filter(|(id, _)| !self.voters.contains_key(id))
        {
            crate::add_observer_on(&self.raft, &self.voters, self.propose_timeout, id, addr)
                .await?;
        }
        if out.records.is_empty() {
            out.response.set_log_index(applied_index);
            return Ok(out.response);
        }
        let index = self.propose(out.records).await?;
        out.response.set_log_index(index);
        if let Some(id) = out.shutdown_of {
            state.controlled_shutdown_started(id, index);
        }
        if let Some(id) = out.registered {
            state.registered_at(id, index);
        }
        Ok(out.response)
    }

    async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, ProposeError> {
        crate::propose_on(&self.raft, self.propose_timeout, records).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller_api::error_codes as ec;
    use crate::controller_api::CreatableTopic;
    use crate::records::{BrokerEndpoint, ConfigRecord, NO_LEADER};
    use uuid::Uuid;

    fn config() -> ControllerConfig {
        ControllerConfig {
            session_timeout: Duration::from_millis(9000),
            imbalance_check_interval: Duration::from_secs(300),
            auto_leader_rebalance: true,
            unclean_leader_election: false,
        }
    }

    /// A controller and its image, driven by hand: each outcome's records
    /// are applied as the quorum would.
    struct Harness {
        state: ControllerState,
        image: MetadataImage,
        index: u64,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            let now = Instant::now();
            let image = MetadataImage::default();
            Self {
                state: ControllerState::new(config(), &image, now),
                image,
                index: 0,
                now,
            }
        }
        fn apply(&mut self, records: &[MetadataRecord]) {
            if !records.is_empty() {
                self.image.replay_batch(records).expect("valid batch");
                self.index += 1;
            }
        }
        fn handle(&mut self, req: ControllerRequest) -> ControllerResponse {
            let ctx = Ctx {
                image: &self.image.clone(),
                applied_index: self.index,
                now: self.now,
            };
            let out = self.state.handle(&ctx, req);
            self.apply(&out.records);
            if let Some(id) = out.registered {
                self.state.registered_at(id, self.index);
            }
            if let Some(id) = out.shutdown_of {
                self.state.controlled_shutdown_started(id, self.index);
            }
            out.response
        }
        fn tick(&mut self) -> usize {
            let ctx = Ctx {
                image: &self.image.clone(),
                applied_index: self.index,
                now: self.now,
            };
            let records = self.state.tick(&ctx);
            self.apply(&records);
            records.len()
        }
        fn register(&mut self, id: i32) -> i64 {
            match self.handle(ControllerRequest::RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid::new_v4(),
                endpoints: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 1,
                    security_protocol: 0,
                }],
                rack: None,
                observer_addr: None,
            }) {
                ControllerResponse::RegisterBroker {
                    error,
                    broker_epoch,
                } if error.is_none() => broker_epoch,
                other => panic!("{other:?}"),
            }
        }
        fn heartbeat(&mut self, id: i32, epoch: i64) -> ControllerResponse {
            self.handle(ControllerRequest::BrokerHeartbeat {
                broker_id: id,
                broker_epoch: epoch,
                current_metadata_offset: self.index as i64,
                want_fence: false,
                want_shutdown: false,
            })
        }
        fn create(&mut self, name: &str, assignment: Vec<i32>, configs: &[(&str, &str)]) {
            let r = self.handle(ControllerRequest::CreateTopics {
                topics: vec![CreatableTopic {
                    name: name.into(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: [(0, assignment)].into_iter().collect(),
                    configs: configs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }],
                validate_only: false,
            });
            match r {
                ControllerResponse::CreateTopics { topics, .. } => {
                    assert!(topics[0].error.is_none(), "{:?}", topics[0].error)
                }
                other => panic!("{other:?}"),
            }
        }
        fn partition(&self, name: &str) -> crate::image::PartitionRegistration {
            self.image.topic(name).unwrap().partitions[&0].clone()
        }
    }

    #[test]
    fn sessions_expire_at_the_timeout_and_heartbeats_renew_them() {
        let mut h = Harness::new();
        let e1 = h.register(1);
        let e2 = h.register(2);
        assert!(e2 > e1);
        for (id, e) in [(1, e1), (2, e2)] {
            match h.heartbeat(id, e) {
                ControllerResponse::BrokerHeartbeat {
                    error,
                    is_caught_up: true,
                    is_fenced: false,
                    should_shutdown: false,
                } if error.is_none() => {}
                other => panic!("{other:?}"),
            }
        }
        h.create("t", vec![1, 2], &[]);
        assert_eq!(h.partition("t").leader, 1);
        // 2 keeps beating, 1 does not.
        h.now += Duration::from_millis(8000);
        h.heartbeat(2, e2);
        assert_eq!(h.tick(), 0);
        h.now += Duration::from_millis(1000);
        assert!(h.tick() > 0, "broker 1 fenced at 9 s");
        assert!(h.image.broker(1).unwrap().fenced && !h.image.broker(2).unwrap().fenced);
        let p = h.partition("t");
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
        // A stale epoch does not renew anything.
        match h.heartbeat(2, e2 + 1) {
            ControllerResponse::BrokerHeartbeat { error, .. } => {
                assert_eq!(error.error_code, ec::STALE_BROKER_EPOCH)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_controller_grants_fresh_sessions() {
        let mut h = Harness::new();
        let e1 = h.register(1);
        h.heartbeat(1, e1);
        h.now += Duration::from_secs(60);
        // Takeover long after the last heartbeat: not fenced at once…
        h.state = ControllerState::new(config(), &h.image, h.now);
        assert_eq!(h.tick(), 0);
        // …only a session after the takeover.
        h.now += Duration::from_secs(8);
        assert_eq!(h.tick(), 0);
        h.now += Duration::from_secs(1);
        assert!(h.tick() > 0);
        assert!(h.image.broker(1).unwrap().fenced);
    }

    #[test]
    fn duplicate_registration_is_refused_while_the_old_one_is_alive() {
        let mut h = Harness::new();
        let e1 = h.register(1);
        h.heartbeat(1, e1);
        match h.handle(ControllerRequest::RegisterBroker {
            broker_id: 1,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![],
            rack: None,
            observer_addr: None,
        }) {
            ControllerResponse::RegisterBroker { error, .. } => {
                assert_eq!(error.error_code, ec::DUPLICATE_BROKER_REGISTRATION)
            }
            other => panic!("{other:?}"),
        }
        // Once its session has lapsed, the newcomer wins.
        h.now += Duration::from_secs(10);
        assert!(h.register(1) > e1);
    }

    #[test]
    fn unclean_election_follows_the_topic_config() {
        let mut h = Harness::new();
        let e1 = h.register(1);
        let e2 = h.register(2);
        h.heartbeat(1, e1);
        h.heartbeat(2, e2);
        h.create("clean", vec![1, 2], &[]);
        h.create(
            "dirty",
            vec![1, 2],
            &[("unclean.leader.election.enable", "true")],
        );
        // Only 1 in sync on both, then 1 goes silent.
        for t in ["clean", "dirty"] {
            let p = h.partition(t);
            let id = h.image.topic(t).unwrap().id;
            h.apply(&[MetadataRecord::PartitionChange(
                crate::records::PartitionChangeRecord {
                    topic_id: id,
                    partition_id: 0,
                    isr: Some(vec![1]),
                    ..Default::default()
                },
            )]);
            assert_eq!(p.leader, 1);
        }
        h.now += Duration::from_secs(5);
        h.heartbeat(2, e2);
        h.now += Duration::from_secs(5);
        h.tick();
        let clean = h.partition("clean");
        assert_eq!((clean.leader, clean.isr), (NO_LEADER, vec![1]));
        let dirty = h.partition("dirty");
        assert_eq!((dirty.leader, dirty.isr), (2, vec![2]));
        // A cluster-wide default turns it on for every topic.
        h.apply(&[MetadataRecord::Config(ConfigRecord {
            resource_type: resource_type::BROKER,
            resource_name: String::new(),
            name: "unclean.leader.election.enable".into(),
            value: Some("true".into()),
        })]);
        h.tick();
        assert_eq!(h.partition("clean").leader, 2);
    }

    #[test]
    fn create_partitions_checks_manual_assignments_and_keeps_existing_ones() {
        let mut h = Harness::new();
        for id in 1..=3 {
            let e = h.register(id);
            h.heartbeat(id, e);
        }
        h.create("t", vec![1, 2], &[]);
        let grow = |h: &mut Harness, a: Option<Vec<Vec<i32>>>| match h.handle(
            ControllerRequest::CreatePartitions {
                topic: "t".into(),
                count: 3,
                assignments: a,
                validate_only: false,
            },
        ) {
            ControllerResponse::CreatePartitions { error, .. } => error.error_code,
            other => panic!("{other:?}"),
        };
        for bad in [
            vec![vec![1, 2]],
            vec![vec![1, 2], vec![3]],
            vec![vec![1, 2], vec![3, 9]],
            vec![vec![1, 2], vec![3, 3]],
        ] {
            assert_eq!(
                grow(&mut h, Some(bad.clone())),
                ec::INVALID_REPLICA_ASSIGNMENT,
                "{bad:?}"
            );
        }
        assert_eq!(h.image.topic("t").unwrap().partitions.len(), 1);
        assert_eq!(grow(&mut h, Some(vec![vec![2, 3], vec![3, 1]])), ec::NONE);
        let t = h.image.topic("t").unwrap();
        assert_eq!(t.partitions[&0].replicas, vec![1, 2]);
        assert_eq!(
            (t.partitions[&2].replicas.clone(), t.partitions[&2].leader),
            (vec![3, 1], 3)
        );
        let unknown = h.handle(ControllerRequest::CreatePartitions {
            topic: "nope".into(),
            count: 3,
            assignments: None,
            validate_only: false,
        });
        assert!(matches!(
            unknown,
            ControllerResponse::CreatePartitions { error, .. }
                if error.error_code == ec::UNKNOWN_TOPIC_OR_PARTITION
        ));
    }

    #[test]
    fn controlled_shutdown_of_the_last_in_sync_replica_leaves_the_partition_leaderless() {
        let mut h = Harness::new();
        let e1 = h.register(1);
        let e2 = h.register(2);
        h.heartbeat(1, e1);
        h.heartbeat(2, e2);
        h.create("t", vec![1, 2], &[]);
        let id = h.image.topic("t").unwrap().id;
        h.apply(&[MetadataRecord::PartitionChange(
            crate::records::PartitionChangeRecord {
                topic_id: id,
                partition_id: 0,
                isr: Some(vec![1]),
                ..Default::default()
            },
        )]);
        let shutdown = |h: &mut Harness| match h.handle(ControllerRequest::BrokerHeartbeat {
            broker_id: 1,
            broker_epoch: e1,
            current_metadata_offset: h.index as i64,
            want_fence: false,
            want_shutdown: true,
        }) {
            ControllerResponse::BrokerHeartbeat {
                should_shutdown, ..
            } => should_shutdown,
            other => panic!("{other:?}"),
        };
        assert!(!shutdown(&mut h));
        let p = h.partition("t");
        // Kafka keeps the last ISR member: 2 may lack committed data.
        assert_eq!((p.leader, p.isr), (NO_LEADER, vec![1]));
        assert!(shutdown(&mut h));
    }
}
