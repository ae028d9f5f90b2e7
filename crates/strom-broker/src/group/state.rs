//! The group coordinator's state machine for one `__consumer_offsets`
//! partition (Kafka's `GroupCoordinatorShard` with its classic groups and
//! offsets). Pure: no I/O, no clock of its own (every call gets `now`), no
//! tasks. The runtime (`super::runtime`) owns one per partition and drives it.
//!
//! What is durable reaches this state only by [`GroupShard::replay`]:
//! committed offsets, and a group's generation, protocol, leader, members and
//! assignments as of its last completed rebalance (GroupMetadata records).
//! Loading a partition is replaying it into an empty shard.
//!
//! What Kafka never persists is kept live and changed by the operations:
//! which members have (re)joined during a rebalance, the responses they are
//! waiting for (as [`Token`]s the runtime maps to connections), session and
//! rebalance deadlines. An operation returns its records and replies through
//! [`Effects`]; the runtime appends the records, replays them, and only then
//! sends the replies, so a client never sees a result that is not durable.
//!
//! Classic group states (Kafka's `ClassicGroupState`):
//! ```text
//!             join                all joined / rebalance timeout
//!   Empty ──────────────▶ Preparing ─────────────────────▶ Completing
//!     ▲   (initial delay)  Rebalance ◀──────┐              Rebalance
//!     │                      ▲   │ no members│join/leave/      │ leader's SyncGroup
//!     │                      │   ▼           │expiry           ▼ (record replayed)
//!     └──────────────────────┴── Empty       └────────────── Stable
//!   DeleteGroups / offsets expired: tombstone ──▶ (Dead: removed)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;

use super::records::{
    consumer_subscription_topics, CoordinatorRecord, GroupMetadataValue, MemberMetadata,
    OffsetCommitValue,
};
use super::GroupConfig;

/// Identifies a request whose response is deferred (JoinGroup, SyncGroup);
/// allocated by the runtime.
pub type Token = u64;

/// How long a new member may wait in a rebalance before it is dropped
/// (Kafka's `NewMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

const NONE: i16 = 0;

/// Kafka's classic group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups/ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One member of a classic group.
#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    awaiting_join: Option<(Token, i16)>,
    awaiting_sync: Option<Token>,
    session_deadline: i64,
    /// Joined during the current rebalance and never completed one.
    is_new: bool,
    join_time: i64,
}

impl Member {
    /// Metadata for `protocol`, empty if the member does not support it.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
struct InitialDelay {
    delay_ms: i64,
    remaining_ms: i64,
    new_member_added: bool,
}

/// A classic group (Kafka's `ClassicGroup`).
#[derive(Clone, Debug)]
pub struct ClassicGroup {
    pub group_id: String,
    pub state: GroupState,
    /// When the group entered `state` (Kafka's `currentStateTimestamp`).
    pub state_timestamp: i64,
    pub generation: i32,
    /// `None` for a "simple" group that only holds offsets.
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order (Kafka's LinkedHashMap): the first is the leader candidate.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, and their deadline.
    pending_members: HashMap<String, i64>,
    join_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    /// `group.initial.rebalance.delay.ms`, copied from the shard's config.
    initial_rebalance_delay_ms: i32,
}

impl ClassicGroup {
    fn new(group_id: &str, now: i64, initial_rebalance_delay_ms: i32) -> Self {
        ClassicGroup {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp: now,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending_members: HashMap::new(),
            join_deadline: None,
            initial_delay: None,
            initial_rebalance_delay_ms,
        }
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == id)
    }
    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.member_id == id)
    }
    fn has_member(&self, id: &str) -> bool {
        self.member(id).is_some()
    }
    fn static_member_id(&self, instance: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(instance))
            .map(|m| m.member_id.as_str())
    }

    fn transition(&mut self, to: GroupState, now: i64) {
        self.state = to;
        self.state_timestamp = now;
    }

    /// Kafka's `supportsProtocols`.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports,
    /// each member votes for its most preferred; most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in &self.members {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| *c == name) {
                    v.1 += 1;
                }
            }
        }
        // max_by_key returns the last maximum; prefer the first (the leader
        // candidate's preference) on ties.
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes
            .into_iter()
            .find(|(_, n)| *n == best)
            .map(|(c, _)| c.clone())
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// Kafka's `validateMember`.
    fn validate_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), E> {
        match instance {
            Some(inst) => match self.static_member_id(inst) {
                None => Err(E::UnknownMemberId),
                Some(id) if id != member_id => Err(E::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if !self.has_member(member_id) => Err(E::UnknownMemberId),
            None => Ok(()),
        }
    }

    /// The GroupMetadata record of the group as it is now.
    fn record(&self) -> CoordinatorRecord {
        CoordinatorRecord::GroupMetadata {
            group: self.group_id.clone(),
            value: Some(GroupMetadataValue {
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                generation: self.generation,
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                current_state_timestamp: self.state_timestamp,
                members: self
                    .members
                    .iter()
                    .map(|m| MemberMetadata {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout: m.rebalance_timeout_ms,
                        session_timeout: m.session_timeout_ms,
                        subscription: m.metadata(self.protocol.as_deref()),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            }),
        }
    }

    /// Topics the members subscribe to (consumer protocol only).
    fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let mut out = BTreeSet::new();
        for m in &self.members {
            out.extend(
                consumer_subscription_topics(&m.metadata(self.protocol.as_deref()))
                    .unwrap_or_default(),
            );
        }
        Some(out)
    }
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// JoinGroup as the state machine needs it (any version).
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub version: i16,
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// v0 has none: the session timeout is used.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// One member in the leader's JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    fn error(e: E, member_id: &str) -> Self {
        JoinResponse {
            error: e.code(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(e: E) -> Self {
        SyncResponse {
            error: e.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A deferred response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResponse),
    Sync(SyncResponse),
}

impl Reply {
    /// The same reply turned into an error (the records it depended on
    /// could not be written).
    pub fn failed(self, code: i16) -> Reply {
        match self {
            Reply::Join(j) => Reply::Join(JoinResponse {
                error: code,
                ..JoinResponse::error(E::UnknownServerError, &j.member_id)
            }),
            Reply::Sync(_) => Reply::Sync(SyncResponse {
                error: code,
                ..SyncResponse::error(E::UnknownServerError)
            }),
        }
    }
}

/// What an operation asks the runtime to do: append `records`, then send
/// `replies`.
#[derive(Default, Debug)]
pub struct Effects {
    pub records: Vec<CoordinatorRecord>,
    pub replies: Vec<(Token, Reply)>,
}

/// One partition of an OffsetCommit.
#[derive(Clone, Debug)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub version: i16,
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

/// Whether a replayed record comes from loading the log or from this
/// shard's own operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayMode {
    Load,
    Live,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

/// The state of one `__consumer_offsets` partition: its classic groups and
/// committed offsets. Owned by one runtime task; not shared.
pub struct GroupShard {
    config: GroupConfig,
    groups: BTreeMap<String, ClassicGroup>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), OffsetAndMetadata>>,
    next_expiry_check: i64,
    /// KIP-848 consumer groups (`super::consumer`).
    pub consumer: super::consumer::ConsumerGroups,
    /// Transactional offsets awaiting their marker (`super::txn_offsets`).
    pub(crate) txn_offsets: super::txn_offsets::PendingTxnOffsets,
}

impl GroupShard {
    pub fn new(config: GroupConfig, now: i64) -> Self {
        let next_expiry_check = now + config.offsets_retention_check_interval_ms;
        let consumer_config = config.consumer.clone();
        GroupShard {
            config,
            groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
            next_expiry_check,
            consumer: super::consumer::ConsumerGroups {
                config: consumer_config,
                groups: BTreeMap::new(),
            },
            txn_offsets: Default::default(),
        }
    }

    pub fn group(&self, id: &str) -> Option<&ClassicGroup> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &ClassicGroup> {
        self.groups.values()
    }

    // ---------------------------------------------------------------- replay

    /// Applies one record of the partition.
    pub fn replay(
        &mut self,
        now: i64,
        record: &CoordinatorRecord,
        mode: ReplayMode,
        replies: &mut Vec<(Token, Reply)>,
    ) {
        match record {
            CoordinatorRecord::OffsetCommit {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    self.groups.entry(group.clone()).or_insert_with(|| {
                        ClassicGroup::new(group, now, self.config.initial_rebalance_delay_ms)
                    });
                    self.offsets.entry(group.clone()).or_default().insert(
                        (topic.clone(), *partition),
                        OffsetAndMetadata {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata.clone(),
                            commit_timestamp: v.commit_timestamp,
                        },
                    );
                }
                None => {
                    if let Some(o) = self.offsets.get_mut(group) {
                        o.remove(&(topic.clone(), *partition));
                        if o.is_empty() {
                            self.offsets.remove(group);
                        }
                    }
                }
            },
            CoordinatorRecord::GroupMetadata { group, value: None } => {
                if let Some(g) = self.groups.remove(group) {
                    // Anyone still waiting learns the group is gone.
                    for m in g.members {
                        if let Some((t, _)) = m.awaiting_join {
                            replies.push((
                                t,
                                Reply::Join(JoinResponse::error(E::UnknownMemberId, &m.member_id)),
                            ));
                        }
                        if let Some(t) = m.awaiting_sync {
                            replies.push((t, Reply::Sync(SyncResponse::error(E::UnknownMemberId))));
                        }
                    }
                }
                self.offsets.remove(group);
            }
            CoordinatorRecord::GroupMetadata {
                group,
                value: Some(v),
            } => {
                let live = mode == ReplayMode::Live;
                match self.groups.get_mut(group) {
                    Some(g)
                        if live
                            && g.state == GroupState::CompletingRebalance
                            && g.generation == v.generation =>
                    {
                        // The leader's assignment is durable: hand it out.
                        for mm in &v.members {
                            if let Some(m) = g.member_mut(&mm.member_id) {
                                m.assignment = mm.assignment.clone();
                                m.session_deadline = now + i64::from(m.session_timeout_ms);
                                if let Some(t) = m.awaiting_sync.take() {
                                    replies.push((
                                        t,
                                        Reply::Sync(SyncResponse {
                                            error: NONE,
                                            protocol_type: g.protocol_type.clone(),
                                            protocol_name: g.protocol.clone(),
                                            assignment: mm.assignment.clone(),
                                        }),
                                    ));
                                }
                            }
                        }
                        g.transition(GroupState::Stable, now);
                    }
                    // Our own record of a state the operation already set.
                    Some(_) if live => {}
                    _ => {
                        let g = group_from_record(
                            group,
                            v,
                            now,
                            self.config.initial_rebalance_delay_ms,
                        );
                        self.groups.insert(group.clone(), g);
                    }
                }
            }
            CoordinatorRecord::Unknown { .. } => {}
            // Consumer-group operations change the state themselves; their
            // records only rebuild it when loading.
            CoordinatorRecord::Consumer { key, value } => {
                if mode == ReplayMode::Load {
                    self.consumer.replay(now, key, value.as_deref());
                }
            }
        }
    }

    // ------------------------------------------------------------- JoinGroup

    /// JoinGroup: the reply for `token` is pushed to `fx` now or later.
    pub fn join_group(&mut self, now: i64, token: Token, req: JoinRequest, fx: &mut Effects) {
        let fail = |fx: &mut Effects, e: E| {
            fx.replies
                .push((token, Reply::Join(JoinResponse::error(e, &req.member_id))));
        };
        if req.group_id.is_empty() {
            return fail(fx, E::InvalidGroupId);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(fx, E::InvalidSessionTimeout);
        }
        let unknown = req.member_id.is_empty();
        if !self.groups.contains_key(&req.group_id) {
            if !unknown {
                return fail(fx, E::UnknownMemberId);
            }
            self.groups.insert(
                req.group_id.clone(),
                ClassicGroup::new(&req.group_id, now, self.config.initial_rebalance_delay_ms),
            );
        }
        let max_size = self.config.max_size;
        let g = self.groups.get_mut(&req.group_id).expect("just ensured");
        let result = if g.state == GroupState::Dead {
            Err(E::CoordinatorNotAvailable)
        } else if !g.supports(&req.protocol_type, &req.protocols) {
            Err(E::InconsistentGroupProtocol)
        } else if unknown {
            new_member_join(g, now, token, req.clone(), max_size, fx)
        } else {
            current_member_join(g, now, token, req.clone(), fx)
        };
        if let Err(e) = result {
            fail(fx, e);
        }
        self.remove_if_unused(&req.group_id);
    }

    /// A group that a failed join created holds nothing: forget it.
    fn remove_if_unused(&mut self, id: &str) {
        if let Some(g) = self.groups.get(id) {
            if g.state == GroupState::Empty
                && g.members.is_empty()
                && g.pending_members.is_empty()
                && g.generation == 0
                && g.protocol_type.is_none()
                && !self.offsets.contains_key(id)
            {
                self.groups.remove(id);
            }
        }
    }

    // ------------------------------------------------------------- SyncGroup

    pub fn sync_group(&mut self, now: i64, token: Token, req: SyncRequest, fx: &mut Effects) {
        let reply = |fx: &mut Effects, r: SyncResponse| fx.replies.push((token, Reply::Sync(r)));
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return reply(fx, SyncResponse::error(E::UnknownMemberId));
        };
        if g.state == GroupState::Dead {
            return reply(fx, SyncResponse::error(E::CoordinatorNotAvailable));
        }
        if let Err(e) = g.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return reply(fx, SyncResponse::error(e));
        }
        if req.generation_id != g.generation {
            return reply(fx, SyncResponse::error(E::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != g.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != g.protocol.as_ref())
        {
            return reply(fx, SyncResponse::error(E::InconsistentGroupProtocol));
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => {
                reply(fx, SyncResponse::error(E::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                reply(fx, SyncResponse::error(E::RebalanceInProgress))
            }
            GroupState::CompletingRebalance => {
                let is_leader = g.leader.as_deref() == Some(req.member_id.as_str());
                let m = g.member_mut(&req.member_id).expect("validated");
                if let Some(old) = m.awaiting_sync.replace(token) {
                    fx.replies.push((
                        old,
                        Reply::Sync(SyncResponse::error(E::RebalanceInProgress)),
                    ));
                }
                m.session_deadline = now + i64::from(m.session_timeout_ms);
                if is_leader {
                    // The assignment becomes the group's when this record is
                    // replayed (members the leader left out get none).
                    let mut staged = g.clone();
                    for m in &mut staged.members {
                        m.assignment = req
                            .assignments
                            .iter()
                            .find(|(id, _)| *id == m.member_id)
                            .map(|(_, a)| a.clone())
                            .unwrap_or_default();
                    }
                    fx.records.push(staged.record());
                }
            }
            GroupState::Stable => {
                let m = g.member_mut(&req.member_id).expect("validated");
                m.session_deadline = now + i64::from(m.session_timeout_ms);
                let assignment = m.assignment.clone();
                reply(
                    fx,
                    SyncResponse {
                        error: NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol_name: g.protocol.clone(),
                        assignment,
                    },
                )
            }
        }
    }

    // ------------------------------------------------------------- Heartbeat

    pub fn heartbeat(
        &mut self,
        now: i64,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> i16 {
        let Some(g) = self.groups.get_mut(group_id) else {
            return E::UnknownMemberId.code();
        };
        if g.state == GroupState::Dead {
            return E::CoordinatorNotAvailable.code();
        }
        if let Err(e) = g.validate_member(member_id, instance) {
            return e.code();
        }
        if generation_id != g.generation {
            return E::IllegalGeneration.code();
        }
        let state = g.state;
        if let Some(m) = g.member_mut(member_id) {
            m.session_deadline = now + i64::from(m.session_timeout_ms);
        }
        match state {
            GroupState::Empty | GroupState::Dead => E::UnknownMemberId.code(),
            GroupState::PreparingRebalance => E::RebalanceInProgress.code(),
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    // ------------------------------------------------------------ LeaveGroup

    /// LeaveGroup for `(member id, instance id)` pairs: a top-level error, or
    /// one error code per member.
    pub fn leave_group(
        &mut self,
        now: i64,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        fx: &mut Effects,
    ) -> Result<Vec<i16>, i16> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return Err(E::UnknownMemberId.code());
        };
        if g.state == GroupState::Dead {
            return Err(E::CoordinatorNotAvailable.code());
        }
        let mut out = Vec::with_capacity(leaving.len());
        for (member_id, instance) in leaving {
            let code = match instance {
                Some(inst) => match g.static_member_id(inst).map(str::to_string) {
                    None => E::UnknownMemberId.code(),
                    Some(id) if !member_id.is_empty() && id != *member_id => {
                        E::FencedInstanceId.code()
                    }
                    Some(id) => {
                        remove_member_and_update_group(g, now, &id, fx);
                        NONE
                    }
                },
                None if g.pending_members.remove(member_id).is_some() => {
                    try_complete_join(g, now, fx);
                    NONE
                }
                None if g.has_member(member_id) => {
                    remove_member_and_update_group(g, now, member_id, fx);
                    NONE
                }
                None => E::UnknownMemberId.code(),
            };
            out.push(code);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- timers

    /// The earliest time [`Self::tick`] has something to do.
    pub fn next_deadline(&self) -> i64 {
        let mut next = self.next_expiry_check.min(self.consumer.next_deadline());
        for g in self.groups.values() {
            if let Some(d) = g.join_deadline {
                next = next.min(d);
            }
            for &d in g.pending_members.values() {
                next = next.min(d);
            }
            for m in &g.members {
                if m.awaiting_join.is_none() && m.awaiting_sync.is_none() {
                    next = next.min(m.session_deadline);
                } else if m.is_new && m.awaiting_join.is_some() {
                    next = next.min(m.join_time + NEW_MEMBER_JOIN_TIMEOUT_MS);
                }
            }
        }
        next
    }

    /// Runs every timer due at `now`: session expiry, rebalance and initial
    /// delays, offset retention.
    pub fn tick(&mut self, now: i64, fx: &mut Effects) {
        self.consumer.tick_durable(now, &mut fx.records);
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            let expired_pending: Vec<String> = g
                .pending_members
                .iter()
                .filter(|(_, &d)| d <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for p in &expired_pending {
                g.pending_members.remove(p);
            }
            if !expired_pending.is_empty() {
                try_complete_join(g, now, fx);
            }
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|m| {
                    (m.awaiting_join.is_none()
                        && m.awaiting_sync.is_none()
                        && m.session_deadline <= now)
                        || (m.is_new
                            && m.awaiting_join.is_some()
                            && m.join_time + NEW_MEMBER_JOIN_TIMEOUT_MS <= now)
                })
                .map(|m| m.member_id.clone())
                .collect();
            for m in expired {
                tracing::info!(group = %g.group_id, member = %m, "member session expired");
                remove_member_and_update_group(g, now, &m, fx);
            }
            if g.state == GroupState::PreparingRebalance
                && g.join_deadline.is_some_and(|d| d <= now)
            {
                match &mut g.initial_delay {
                    Some(d) if d.new_member_added && d.remaining_ms > 0 => {
                        // Members are still arriving: wait a little longer.
                        let step = d.delay_ms.min(d.remaining_ms);
                        d.remaining_ms -= step;
                        d.new_member_added = false;
                        g.join_deadline = Some(now + step);
                    }
                    _ => complete_join(g, now, fx),
                }
            }
        }
        if now >= self.next_expiry_check {
            self.next_expiry_check = now + self.config.offsets_retention_check_interval_ms;
            self.expire_offsets(now, fx);
        }
    }

    /// Offsets of Empty groups older than `offsets.retention.minutes` (from
    /// when the group became empty, or the commit for simple groups) go,
    /// and a group left with nothing goes with them.
    pub fn expire_offsets(&mut self, now: i64, fx: &mut Effects) {
        let retention = self.config.offsets_retention_ms;
        for (id, g) in &self.groups {
            if g.state != GroupState::Empty {
                continue;
            }
            let offsets = self.offsets.get(id);
            let mut left = 0;
            for ((topic, partition), o) in offsets.into_iter().flatten() {
                let base = if g.protocol_type.is_some() && g.state_timestamp >= 0 {
                    g.state_timestamp
                } else {
                    o.commit_timestamp
                };
                if base.saturating_add(retention) <= now {
                    fx.records.push(CoordinatorRecord::OffsetCommit {
                        group: id.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                } else {
                    left += 1;
                }
            }
            if left == 0 && g.members.is_empty() && g.pending_members.is_empty() {
                fx.records.push(CoordinatorRecord::GroupMetadata {
                    group: id.clone(),
                    value: None,
                });
            }
        }
    }

    // --------------------------------------------------------------- offsets

    /// OffsetCommit: a whole-request error, or one code per partition (in
    /// request order). Records for the accepted partitions go to `fx`.
    pub fn commit_offsets(
        &mut self,
        now: i64,
        req: &CommitRequest,
        fx: &mut Effects,
    ) -> Result<Vec<i16>, i16> {
        let consumer =
            self.consumer
                .validate_commit(&req.group_id, &req.member_id, req.generation_id);
        match self.groups.get_mut(&req.group_id) {
            _ if consumer.is_some() => consumer.unwrap().map_err(|e| e.code())?,
            None if req.generation_id < 0 => {}
            None if req.version >= 9 => return Err(E::GroupIdNotFound.code()),
            None => return Err(E::IllegalGeneration.code()),
            Some(g) => {
                if g.state == GroupState::Dead {
                    return Err(E::CoordinatorNotAvailable.code());
                }
                if !(req.generation_id < 0 && g.state == GroupState::Empty) {
                    g.validate_member(&req.member_id, req.group_instance_id.as_deref())
                        .map_err(|e| e.code())?;
                    if req.generation_id != g.generation {
                        return Err(E::IllegalGeneration.code());
                    }
                    if g.state == GroupState::CompletingRebalance {
                        return Err(E::RebalanceInProgress.code());
                    }
                    if let Some(m) = g.member_mut(&req.member_id) {
                        m.session_deadline = now + i64::from(m.session_timeout_ms);
                    }
                }
            }
        }
        let mut codes = Vec::with_capacity(req.partitions.len());
        for p in &req.partitions {
            let metadata = p.metadata.clone().unwrap_or_default();
            if metadata.len() > self.config.offset_metadata_max_bytes {
                codes.push(E::OffsetMetadataTooLarge.code());
                continue;
            }
            fx.records.push(CoordinatorRecord::OffsetCommit {
                group: req.group_id.clone(),
                topic: p.topic.clone(),
                partition: p.partition,
                value: Some(OffsetCommitValue {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata,
                    commit_timestamp: now,
                    expire_timestamp: -1,
                }),
            });
            codes.push(NONE);
        }
        Ok(codes)
    }

    /// Committed offsets of `group`: the requested partitions (missing ones
    /// as `None`), or all of them when `topics` is `None`.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, Vec<(i32, Option<OffsetAndMetadata>)>)> {
        let committed = self.offsets.get(group);
        match topics {
            Some(topics) => topics
                .iter()
                .map(|(t, parts)| {
                    let ps = parts
                        .iter()
                        .map(|&p| (p, committed.and_then(|c| c.get(&(t.clone(), p))).cloned()))
                        .collect();
                    (t.clone(), ps)
                })
                .collect(),
            None => {
                let mut out: Vec<(String, Vec<(i32, Option<OffsetAndMetadata>)>)> = Vec::new();
                for ((t, p), o) in committed.into_iter().flatten() {
                    match out.last_mut() {
                        Some((lt, ps)) if lt == t => ps.push((*p, Some(o.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(o.clone()))])),
                    }
                }
                out
            }
        }
    }

    /// OffsetDelete: a group-level error or a code per partition.
    #[allow(clippy::type_complexity)]
    pub fn delete_offsets(
        &mut self,
        group: &str,
        topics: &[(String, Vec<i32>)],
        fx: &mut Effects,
    ) -> Result<Vec<(String, Vec<(i32, i16)>)>, i16> {
        let Some(g) = self.groups.get(group) else {
            return Err(E::GroupIdNotFound.code());
        };
        if g.state == GroupState::Dead {
            return Err(E::GroupIdNotFound.code());
        }
        let subscribed = if let Some(cg) = self.consumer.get(group) {
            cg.subscribed_topic_names()
        } else if g.state == GroupState::Empty {
            BTreeSet::new()
        } else {
            match g.subscribed_topics() {
                Some(s) => s,
                None => return Err(E::NonEmptyGroup.code()),
            }
        };
        let committed = self.offsets.get(group);
        let mut out = Vec::new();
        for (t, parts) in topics {
            let mut ps = Vec::new();
            for &p in parts {
                if subscribed.contains(t) {
                    ps.push((p, E::GroupSubscribedToTopic.code()));
                    continue;
                }
                if committed.is_some_and(|c| c.contains_key(&(t.clone(), p))) {
                    fx.records.push(CoordinatorRecord::OffsetCommit {
                        group: group.to_string(),
                        topic: t.clone(),
                        partition: p,
                        value: None,
                    });
                }
                ps.push((p, NONE));
            }
            out.push((t.clone(), ps));
        }
        Ok(out)
    }

    // ----------------------------------------------------------------- admin

    /// DeleteGroups for one group.
    pub fn delete_group(&mut self, group: &str, fx: &mut Effects) -> i16 {
        if group.is_empty() {
            return E::InvalidGroupId.code();
        }
        let consumer = self.consumer.delete_durable(group, &mut fx.records);
        if consumer.is_some_and(|c| c != NONE) {
            return consumer.unwrap();
        }
        let Some(g) = self.groups.get(group) else {
            return consumer.unwrap_or(E::GroupIdNotFound.code());
        };
        match g.state {
            GroupState::Dead => return E::GroupIdNotFound.code(),
            GroupState::Empty => {}
            _ => return E::NonEmptyGroup.code(),
        }
        for (topic, partition) in self.offsets.get(group).into_iter().flat_map(|o| o.keys()) {
            fx.records.push(CoordinatorRecord::OffsetCommit {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
                value: None,
            });
        }
        fx.records.push(CoordinatorRecord::GroupMetadata {
            group: group.to_string(),
            value: None,
        });
        NONE
    }

    /// DescribeGroups for one group (`None`: unknown).
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group)?;
        let stable = g.state == GroupState::Stable;
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                g.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: g
                .members
                .iter()
                .map(|m| {
                    let (meta, asg) = if stable {
                        (m.metadata(g.protocol.as_deref()), m.assignment.clone())
                    } else {
                        (Bytes::new(), Bytes::new())
                    };
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        meta,
                        asg,
                    )
                })
                .collect(),
        })
    }

    /// What replay would rebuild: each group's durable fields and the
    /// offsets (for tests and diagnostics).
    #[allow(clippy::type_complexity)]
    pub fn durable_view(
        &self,
    ) -> (
        Vec<(
            String,
            i32,
            Option<String>,
            Option<String>,
            Vec<(String, Bytes)>,
        )>,
        BTreeMap<String, BTreeMap<(String, i32), OffsetAndMetadata>>,
    ) {
        let groups = self
            .groups
            .values()
            .map(|g| {
                let mut members: Vec<(String, Bytes)> = g
                    .members
                    .iter()
                    .map(|m| (m.member_id.clone(), m.assignment.clone()))
                    .collect();
                members.sort();
                (
                    g.group_id.clone(),
                    g.generation,
                    g.protocol.clone(),
                    g.leader.clone(),
                    members,
                )
            })
            .collect();
        (groups, self.offsets.clone())
    }
}

fn group_from_record(id: &str, v: &GroupMetadataValue, now: i64, delay: i32) -> ClassicGroup {
    let mut g = ClassicGroup::new(id, now, delay);
    g.generation = v.generation;
    g.protocol_type = (!v.protocol_type.is_empty()).then(|| v.protocol_type.clone());
    g.protocol = v.protocol.clone();
    g.leader = v.leader.clone();
    g.state_timestamp = if v.current_state_timestamp >= 0 {
        v.current_state_timestamp
    } else {
        now
    };
    g.state = if v.members.is_empty() {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
    g.members = v
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            rebalance_timeout_ms: m.rebalance_timeout,
            session_timeout_ms: m.session_timeout,
            protocols: vec![(
                v.protocol.clone().unwrap_or_default(),
                m.subscription.clone(),
            )],
            assignment: m.assignment.clone(),
            awaiting_join: None,
            awaiting_sync: None,
            // Kafka reschedules every loaded member's session from load time.
            session_deadline: now + i64::from(m.session_timeout),
            is_new: false,
            join_time: now,
        })
        .collect();
    g
}

fn new_member(req: &JoinRequest, member_id: String, now: i64, token: Token) -> Member {
    Member {
        member_id,
        group_instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        session_timeout_ms: req.session_timeout_ms,
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        awaiting_join: Some((token, req.version)),
        awaiting_sync: None,
        session_deadline: now + i64::from(req.session_timeout_ms),
        is_new: true,
        join_time: now,
    }
}

/// Kafka's `doNewMemberJoin` (no member id yet).
fn new_member_join(
    g: &mut ClassicGroup,
    now: i64,
    token: Token,
    req: JoinRequest,
    max_size: usize,
    fx: &mut Effects,
) -> Result<(), E> {
    let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
    let member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
    if let Some(inst) = req.group_instance_id.clone() {
        if let Some(old) = g.static_member_id(&inst).map(str::to_string) {
            return replace_static_member(g, now, token, req, &old, member_id, fx);
        }
    }
    if g.members.len() + g.pending_members.len() >= max_size {
        return Err(E::GroupMaxSizeReached);
    }
    if req.group_instance_id.is_none() && req.version >= 4 {
        // KIP-394: hand out the id first, so a client that retries after a
        // lost response does not leave a ghost member behind.
        g.pending_members
            .insert(member_id.clone(), now + i64::from(req.session_timeout_ms));
        fx.replies.push((
            token,
            Reply::Join(JoinResponse::error(E::MemberIdRequired, &member_id)),
        ));
        return Ok(());
    }
    add_member_and_rebalance(g, now, token, &req, member_id, fx);
    Ok(())
}

/// Kafka's `doCurrentMemberJoin`.
fn current_member_join(
    g: &mut ClassicGroup,
    now: i64,
    token: Token,
    req: JoinRequest,
    fx: &mut Effects,
) -> Result<(), E> {
    if g.pending_members.contains_key(&req.member_id) {
        let id = req.member_id.clone();
        add_member_and_rebalance(g, now, token, &req, id, fx);
        return Ok(());
    }
    g.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
    let is_leader = g.leader.as_deref() == Some(req.member_id.as_str());
    let same_protocols = g
        .member(&req.member_id)
        .is_some_and(|m| m.protocols == req.protocols);
    match g.state {
        GroupState::PreparingRebalance => {
            update_member_and_rebalance(g, now, token, &req, fx);
        }
        GroupState::CompletingRebalance if same_protocols => {
            // A retry of a join whose response was lost: same answer again.
            let resp = join_response(g, &req.member_id, is_leader, false);
            fx.replies.push((token, Reply::Join(resp)));
        }
        GroupState::Stable if !is_leader && same_protocols => {
            let resp = join_response(g, &req.member_id, false, false);
            fx.replies.push((token, Reply::Join(resp)));
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            update_member_and_rebalance(g, now, token, &req, fx);
        }
        GroupState::Empty | GroupState::Dead => return Err(E::UnknownMemberId),
    }
    Ok(())
}

/// A static member came back with a new member id (a restart): it takes
/// over the old id's place; a Stable group keeps its assignment when nothing
/// else changed (KIP-345), otherwise the group rebalances.
fn replace_static_member(
    g: &mut ClassicGroup,
    now: i64,
    token: Token,
    req: JoinRequest,
    old_id: &str,
    new_id: String,
    fx: &mut Effects,
) -> Result<(), E> {
    let idx = g
        .members
        .iter()
        .position(|m| m.member_id == old_id)
        .expect("static member exists");
    let old = g.members[idx].clone();
    if let Some((t, _)) = old.awaiting_join {
        fx.replies.push((
            t,
            Reply::Join(JoinResponse::error(E::FencedInstanceId, old_id)),
        ));
    }
    if let Some(t) = old.awaiting_sync {
        fx.replies
            .push((t, Reply::Sync(SyncResponse::error(E::FencedInstanceId))));
    }
    let protocols_changed = old.protocols != req.protocols;
    let mut m = new_member(&req, new_id.clone(), now, token);
    m.assignment = old.assignment.clone();
    m.is_new = false;
    m.awaiting_join = None;
    g.members[idx] = m;
    let was_leader = g.leader.as_deref() == Some(old_id);
    if was_leader {
        g.leader = Some(new_id.clone());
    }
    let still_selected = g
        .protocol
        .as_ref()
        .is_some_and(|p| req.protocols.iter().any(|(n, _)| n == p));
    match g.state {
        GroupState::Stable
            if still_selected && !protocols_changed && (!was_leader || req.version >= 9) =>
        {
            // No rebalance: persist the new id, then answer with the
            // current generation (the leader, v9+, gets the members but is
            // told to skip the assignment).
            fx.records.push(g.record());
            let resp = join_response(g, &new_id, was_leader, was_leader);
            fx.replies.push((token, Reply::Join(resp)));
        }
        _ => {
            let mm = g.member_mut(&new_id).expect("just inserted");
            mm.awaiting_join = Some((token, req.version));
            maybe_prepare_rebalance(g, now, fx);
            try_complete_join(g, now, fx);
        }
    }
    Ok(())
}

fn add_member_and_rebalance(
    g: &mut ClassicGroup,
    now: i64,
    token: Token,
    req: &JoinRequest,
    member_id: String,
    fx: &mut Effects,
) {
    g.pending_members.remove(&member_id);
    if g.state == GroupState::Empty {
        g.protocol_type = Some(req.protocol_type.clone());
    }
    if g.leader.is_none() {
        g.leader = Some(member_id.clone());
    }
    g.members.push(new_member(req, member_id, now, token));
    if let Some(d) = &mut g.initial_delay {
        d.new_member_added = true;
    }
    maybe_prepare_rebalance(g, now, fx);
    try_complete_join(g, now, fx);
}

fn update_member_and_rebalance(
    g: &mut ClassicGroup,
    now: i64,
    token: Token,
    req: &JoinRequest,
    fx: &mut Effects,
) {
    let m = g.member_mut(&req.member_id).expect("validated");
    m.protocols = req.protocols.clone();
    m.session_timeout_ms = req.session_timeout_ms;
    m.rebalance_timeout_ms = req.rebalance_timeout_ms;
    m.client_id = req.client_id.clone();
    m.client_host = req.client_host.clone();
    m.session_deadline = now + i64::from(req.session_timeout_ms);
    if let Some((old, _)) = m.awaiting_join.replace((token, req.version)) {
        fx.replies.push((
            old,
            Reply::Join(JoinResponse::error(E::RebalanceInProgress, &req.member_id)),
        ));
    }
    maybe_prepare_rebalance(g, now, fx);
    try_complete_join(g, now, fx);
}

fn maybe_prepare_rebalance(g: &mut ClassicGroup, now: i64, fx: &mut Effects) {
    if matches!(
        g.state,
        GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
    ) {
        prepare_rebalance(g, now, fx);
    }
}

fn prepare_rebalance(g: &mut ClassicGroup, now: i64, fx: &mut Effects) {
    if g.state == GroupState::CompletingRebalance {
        // The assignment being synced is void: everyone rejoins.
        for m in &mut g.members {
            m.assignment = Bytes::new();
            if let Some(t) = m.awaiting_sync.take() {
                fx.replies
                    .push((t, Reply::Sync(SyncResponse::error(E::RebalanceInProgress))));
            }
        }
    }
    let rebalance_timeout = g.max_rebalance_timeout();
    if g.state == GroupState::Empty {
        let delay = i64::from(g.initial_rebalance_delay_ms);
        g.initial_delay = Some(InitialDelay {
            delay_ms: delay,
            remaining_ms: (rebalance_timeout - delay).max(0),
            new_member_added: false,
        });
        g.join_deadline = Some(now + delay);
    } else {
        g.initial_delay = None;
        g.join_deadline = Some(now + rebalance_timeout);
    }
    g.transition(GroupState::PreparingRebalance, now);
}

fn try_complete_join(g: &mut ClassicGroup, now: i64, fx: &mut Effects) {
    if g.state == GroupState::PreparingRebalance
        && g.initial_delay.is_none()
        && g.all_members_joined()
    {
        complete_join(g, now, fx);
    }
}

/// Kafka's `onCompleteJoin`: drop who did not rejoin, start the next
/// generation, answer every join.
fn complete_join(g: &mut ClassicGroup, now: i64, fx: &mut Effects) {
    g.join_deadline = None;
    g.initial_delay = None;
    let (joined, gone): (Vec<Member>, Vec<Member>) = std::mem::take(&mut g.members)
        .into_iter()
        .partition(|m| m.awaiting_join.is_some());
    for m in gone {
        tracing::info!(group = %g.group_id, member = %m.member_id, "member did not rejoin in time; removed");
        if let Some(t) = m.awaiting_sync {
            fx.replies
                .push((t, Reply::Sync(SyncResponse::error(E::RebalanceInProgress))));
        }
    }
    g.members = joined;
    if !g
        .leader
        .as_ref()
        .is_some_and(|l| g.members.iter().any(|m| &m.member_id == l))
    {
        g.leader = g.members.first().map(|m| m.member_id.clone());
    }
    g.generation += 1;
    if g.members.is_empty() {
        g.protocol = None;
        g.leader = None;
        g.transition(GroupState::Empty, now);
        fx.records.push(g.record());
        return;
    }
    g.protocol = g.select_protocol();
    g.transition(GroupState::CompletingRebalance, now);
    let leader = g.leader.clone();
    let ids: Vec<String> = g.members.iter().map(|m| m.member_id.clone()).collect();
    for id in ids {
        let is_leader = leader.as_deref() == Some(id.as_str());
        let resp = join_response(g, &id, is_leader, false);
        let m = g.member_mut(&id).expect("member");
        let (token, _) = m.awaiting_join.take().expect("joined");
        m.is_new = false;
        m.session_deadline = now + i64::from(m.session_timeout_ms);
        fx.replies.push((token, Reply::Join(resp)));
    }
}

fn join_response(
    g: &ClassicGroup,
    member_id: &str,
    with_members: bool,
    skip: bool,
) -> JoinResponse {
    JoinResponse {
        error: NONE,
        generation_id: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol.clone(),
        leader: g.leader.clone().unwrap_or_default(),
        skip_assignment: skip,
        member_id: member_id.to_string(),
        members: if with_members {
            g.members
                .iter()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(g.protocol.as_deref()),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// Kafka's `removeMemberAndUpdateGroup`.
fn remove_member_and_update_group(
    g: &mut ClassicGroup,
    now: i64,
    member_id: &str,
    fx: &mut Effects,
) {
    let Some(idx) = g.members.iter().position(|m| m.member_id == member_id) else {
        return;
    };
    let m = g.members.remove(idx);
    if let Some((t, _)) = m.awaiting_join {
        fx.replies.push((
            t,
            Reply::Join(JoinResponse::error(E::UnknownMemberId, member_id)),
        ));
    }
    if let Some(t) = m.awaiting_sync {
        fx.replies
            .push((t, Reply::Sync(SyncResponse::error(E::UnknownMemberId))));
    }
    if g.leader.as_deref() == Some(member_id) {
        g.leader = g
            .members
            .iter()
            .find(|m| m.awaiting_join.is_some())
            .or(g.members.first())
            .map(|m| m.member_id.clone());
    }
    match g.state {
        GroupState::Dead | GroupState::Empty => {}
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(g, now, fx);
            try_complete_join(g, now, fx);
        }
        GroupState::PreparingRebalance => try_complete_join(g, now, fx),
    }
}
