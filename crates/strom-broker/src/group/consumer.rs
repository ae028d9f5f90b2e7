//! KIP-848 consumer groups (Kafka's `ConsumerGroup` with its
//! `CurrentAssignmentBuilder`): the server computes a target assignment
//! with a server-side assignor (`uniform`, `range`) whenever the group epoch
//! moves past the assignment epoch, and every member converges on its target
//! through its heartbeats. A partition goes to a new owner only after its
//! previous owner has revoked it (its heartbeat no longer lists it).
//!
//! Pure state like [`super::state`]: every call gets `now`.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError as E;
use uuid::Uuid;

/// Topic name → (topic id, partition count), from the metadata image.
pub type TopicsImage = BTreeMap<String, (Uuid, i32)>;

/// Topic id → partitions.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

pub const DEFAULT_ASSIGNOR: &str = "uniform";
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Settings of consumer groups (Kafka's names).
#[derive(Clone, Debug)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`
    pub heartbeat_interval_ms: i32,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

#[derive(Clone, Debug)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    /// What the member owns as far as the coordinator knows.
    pub assigned: Assignment,
    /// Partitions the member must give up before others may get them.
    pub revoking: Assignment,
    session_deadline: i64,
    revocation_deadline: Option<i64>,
    /// The assignment last sent to the member (resent only on change).
    last_sent: Option<Assignment>,
}

impl ConsumerMember {
    fn subscribes(&self, topic: &str) -> bool {
        self.subscribed_topic_names.iter().any(|t| t == topic)
            || self
                .subscribed_topic_regex
                .as_deref()
                .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
                .is_some_and(|re| re.is_match(topic))
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics the target was built for.
    subscribed_metadata: BTreeMap<String, (Uuid, i32)>,
    pub state_timestamp: i64,
}

impl ConsumerGroup {
    fn new(group_id: &str, now: i64) -> Self {
        ConsumerGroup {
            group_id: group_id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_metadata: BTreeMap::new(),
            state_timestamp: now,
        }
    }

    /// An empty group, for answers about an id that holds no consumer group.
    pub fn placeholder(group_id: &str) -> Self {
        ConsumerGroup::new(group_id, -1)
    }

    /// Kafka's consumer group states.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.member_epoch != -2
                && (m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Topics any member subscribes to (that exist).
    fn subscribed(&self, topics: &TopicsImage) -> BTreeMap<String, (Uuid, i32)> {
        topics
            .iter()
            .filter(|(t, _)| self.members.values().any(|m| m.subscribes(t)))
            .map(|(t, v)| (t.clone(), *v))
            .collect()
    }

    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.subscribed_metadata.keys().cloned().collect()
    }

    fn assignor(&self) -> &str {
        self.members
            .values()
            .find_map(|m| m.server_assignor.as_deref())
            .unwrap_or(DEFAULT_ASSIGNOR)
    }

    /// Partitions owned (assigned or being revoked) by members other than `me`.
    fn owned_by_others(&self, me: &str) -> BTreeSet<(Uuid, i32)> {
        self.members
            .values()
            .filter(|m| m.member_id != me)
            .flat_map(|m| flatten(&m.assigned).chain(flatten(&m.revoking)))
            .collect()
    }

    fn compute_target(&mut self, topics: &TopicsImage) {
        let subscribed = self.subscribed(topics);
        let range = self.assignor() == "range";
        self.target = assign(&self.members, &self.target, &subscribed, range);
        self.subscribed_metadata = subscribed;
        self.assignment_epoch = self.group_epoch;
    }

    /// Kafka's `CurrentAssignmentBuilder` for one member. `owned` is what
    /// the member's heartbeat says it owns (`None`: unchanged).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: i64) {
        let others = self.owned_by_others(member_id);
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        if !m.revoking.is_empty() {
            let still = owned.is_none_or(|o| flatten(&m.revoking).any(|(t, p)| contains(o, t, p)));
            if still {
                return;
            }
            m.revoking.clear();
            m.revocation_deadline = None;
        }
        // Give up what the target no longer holds first.
        let to_revoke: Assignment = filter(&m.assigned, |t, p| !contains(&target, t, p));
        if !to_revoke.is_empty() {
            m.assigned = filter(&m.assigned, |t, p| contains(&target, t, p));
            m.revoking = to_revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revocation_deadline = Some(now + i64::from(m.rebalance_timeout_ms.max(1)));
            return;
        }
        // Then take what is free.
        let mut unreleased = false;
        for (t, p) in flatten(&target) {
            if contains(&m.assigned, t, p) {
                continue;
            }
            if others.contains(&(t, p)) {
                unreleased = true;
            } else {
                m.assigned.entry(t).or_default().insert(p);
            }
        }
        if m.member_epoch != epoch {
            m.previous_member_epoch = m.member_epoch;
            m.member_epoch = epoch;
        }
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }
}

fn flatten(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn contains(a: &Assignment, t: Uuid, p: i32) -> bool {
    a.get(&t).is_some_and(|ps| ps.contains(&p))
}

fn filter(a: &Assignment, keep: impl Fn(Uuid, i32) -> bool) -> Assignment {
    let mut out = Assignment::new();
    for (t, p) in flatten(a) {
        if keep(t, p) {
            out.entry(t).or_default().insert(p);
        }
    }
    out
}

/// The server-side assignors. `uniform`: balanced and sticky (previous
/// target kept where it does not unbalance); `range`: per topic, contiguous
/// ranges over the subscribed members in id order.
fn assign(
    members: &BTreeMap<String, ConsumerMember>,
    previous: &BTreeMap<String, Assignment>,
    subscribed: &BTreeMap<String, (Uuid, i32)>,
    range: bool,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    if range {
        for (topic, (id, n)) in subscribed {
            let subs: Vec<&String> = members
                .values()
                .filter(|m| m.subscribes(topic))
                .map(|m| &m.member_id)
                .collect();
            if subs.is_empty() {
                continue;
            }
            let k = subs.len() as i32;
            let (per, extra) = (n / k, n % k);
            let mut next = 0;
            for (i, m) in subs.iter().enumerate() {
                let count = per + i32::from((i as i32) < extra);
                let parts = out.get_mut(*m).unwrap().entry(*id).or_default();
                parts.extend(next..next + count);
                next += count;
            }
        }
        out.retain(|_, a| {
            a.retain(|_, p| !p.is_empty());
            true
        });
        return out;
    }
    let all: Vec<(String, Uuid, i32)> = subscribed
        .iter()
        .flat_map(|(t, (id, n))| (0..*n).map(move |p| (t.clone(), *id, p)))
        .collect();
    let eligible = |m: &ConsumerMember, topic: &str| m.subscribes(topic);
    let cap = all.len().div_ceil(members.len());
    let mut count: BTreeMap<&String, usize> = members.keys().map(|m| (m, 0)).collect();
    let mut free = Vec::new();
    // Sticky pass.
    for (topic, id, p) in &all {
        let prev = previous
            .iter()
            .find(|(_, a)| contains(a, *id, *p))
            .map(|(m, _)| m);
        match prev.and_then(|m| members.get_key_value(m)) {
            Some((m, mm)) if eligible(mm, topic) && count[m] < cap => {
                *count.get_mut(m).unwrap() += 1;
                out.get_mut(m).unwrap().entry(*id).or_default().insert(*p);
            }
            _ => free.push((topic.clone(), *id, *p)),
        }
    }
    // Fill: least loaded eligible member (ties by id).
    for (topic, id, p) in free {
        let best = members
            .values()
            .filter(|m| eligible(m, &topic))
            .min_by_key(|m| (count[&m.member_id], m.member_id.clone()));
        if let Some(m) = best {
            *count.get_mut(&m.member_id).unwrap() += 1;
            out.get_mut(&m.member_id)
                .unwrap()
                .entry(id)
                .or_default()
                .insert(p);
        }
    }
    out
}

/// A ConsumerGroupHeartbeat, decoded.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error: i16,
    pub error_message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    fn error(e: E, msg: &str) -> Self {
        HeartbeatResponse {
            error: e.code(),
            error_message: Some(msg.to_string()),
            ..Default::default()
        }
    }
}

/// The consumer groups of one shard.
#[derive(Default)]
pub struct ConsumerGroups {
    pub config: ConsumerGroupConfig,
    pub groups: BTreeMap<String, ConsumerGroup>,
}

impl ConsumerGroups {
    pub fn get(&self, id: &str) -> Option<&ConsumerGroup> {
        self.groups.get(id)
    }

    /// ConsumerGroupHeartbeat. `classic_exists`: a classic group with
    /// members holds the id (GROUP_ID_NOT_FOUND as Kafka without upgrade).
    pub fn heartbeat(
        &mut self,
        now: i64,
        req: HeartbeatRequest,
        topics: &TopicsImage,
        classic_exists: bool,
    ) -> HeartbeatResponse {
        if req.group_id.is_empty() {
            return HeartbeatResponse::error(E::InvalidRequest, "GroupId can't be empty.");
        }
        if req.member_epoch > 0 && req.member_id.is_empty() {
            return HeartbeatResponse::error(E::InvalidRequest, "MemberId can't be empty.");
        }
        if req.member_epoch < -2 {
            return HeartbeatResponse::error(E::InvalidRequest, "MemberEpoch is invalid.");
        }
        if req.member_epoch == 0
            && (req.rebalance_timeout_ms <= 0
                || (req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none()))
        {
            return HeartbeatResponse::error(
                E::InvalidRequest,
                "RebalanceTimeoutMs and SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
        if let Some(a) = &req.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return HeartbeatResponse::error(
                    E::UnsupportedAssignor,
                    &format!("ServerAssignor {a} is not supported."),
                );
            }
        }
        if let Some(r) = &req.subscribed_topic_regex {
            if regex::Regex::new(r).is_err() {
                return HeartbeatResponse::error(
                    E::InvalidRegularExpression,
                    &format!("SubscribedTopicRegex `{r}` is not a valid regular expression."),
                );
            }
        }
        let interval = self.config.heartbeat_interval_ms;
        let session = i64::from(self.config.session_timeout_ms);
        if req.member_epoch < 0 {
            let epoch = req.member_epoch;
            let Some(g) = self.groups.get_mut(&req.group_id) else {
                return HeartbeatResponse::error(E::UnknownMemberId, "unknown member");
            };
            let Some(m) = g.members.get_mut(&req.member_id) else {
                return HeartbeatResponse::error(E::UnknownMemberId, "unknown member");
            };
            if epoch == -2 && m.instance_id.is_some() {
                // A static member leaving for a while (KIP-345 semantics):
                // it keeps its partitions until its session expires, and the
                // same instance id rejoining takes them over.
                m.member_epoch = -2;
                return HeartbeatResponse {
                    member_id: Some(req.member_id),
                    member_epoch: epoch,
                    heartbeat_interval_ms: interval,
                    ..Default::default()
                };
            }
            g.members.remove(&req.member_id);
            g.target.remove(&req.member_id);
            g.group_epoch += 1;
            g.state_timestamp = now;
            g.compute_target(topics);
            return HeartbeatResponse {
                member_id: Some(req.member_id),
                member_epoch: epoch,
                heartbeat_interval_ms: interval,
                ..Default::default()
            };
        }
        if classic_exists && !self.groups.contains_key(&req.group_id) {
            return HeartbeatResponse::error(
                E::GroupIdNotFound,
                &format!("Group {} is not a consumer group.", req.group_id),
            );
        }
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| ConsumerGroup::new(&req.group_id, now));
        let mut bump = false;
        let member_id = if req.member_epoch == 0 {
            let id = if req.member_id.is_empty() {
                Uuid::new_v4().to_string()
            } else {
                req.member_id.clone()
            };
            // A static member replaces its previous incarnation.
            if let Some(inst) = &req.instance_id {
                let old: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| m.instance_id.as_deref() == Some(inst) && m.member_id != id)
                    .map(|m| m.member_id.clone())
                    .collect();
                for o in old {
                    // Its partitions are free for the new incarnation (the
                    // old one is gone), and its target becomes the new one's.
                    g.members.remove(&o);
                    if let Some(t) = g.target.remove(&o) {
                        g.target.insert(id.clone(), t);
                    }
                }
            }
            if let Some(existing) = g.members.get_mut(&id) {
                // Rejoining with epoch 0: the member lost its assignment.
                existing.assigned.clear();
                existing.revoking.clear();
                existing.last_sent = None;
                existing.member_epoch = 0;
            } else {
                g.members.insert(
                    id.clone(),
                    ConsumerMember {
                        member_id: id.clone(),
                        instance_id: req.instance_id.clone(),
                        rack_id: req.rack_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        rebalance_timeout_ms: req.rebalance_timeout_ms,
                        subscribed_topic_names: Vec::new(),
                        subscribed_topic_regex: None,
                        server_assignor: None,
                        member_epoch: 0,
                        previous_member_epoch: -1,
                        state: MemberState::Stable,
                        assigned: Assignment::new(),
                        revoking: Assignment::new(),
                        session_deadline: now + session,
                        revocation_deadline: None,
                        last_sent: None,
                    },
                );
                bump = true;
            }
            id
        } else {
            let Some(m) = g.members.get(&req.member_id) else {
                return HeartbeatResponse::error(
                    E::UnknownMemberId,
                    &format!(
                        "Member {} is not a member of group {}.",
                        req.member_id, req.group_id
                    ),
                );
            };
            if req.member_epoch != m.member_epoch
                && !(req.member_epoch == m.previous_member_epoch && req.owned.is_some())
            {
                return HeartbeatResponse::error(
                    E::FencedMemberEpoch,
                    &format!(
                        "The member epoch {} does not match the expected epoch {}.",
                        req.member_epoch, m.member_epoch
                    ),
                );
            }
            req.member_id.clone()
        };
        let m = g.members.get_mut(&member_id).unwrap();
        m.session_deadline = now + session;
        if req.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if names != m.subscribed_topic_names {
                m.subscribed_topic_names = names;
                bump = true;
            }
        }
        if let Some(r) = &req.subscribed_topic_regex {
            let r = (!r.is_empty()).then(|| r.clone());
            if r != m.subscribed_topic_regex {
                m.subscribed_topic_regex = r;
                bump = true;
            }
        }
        if let Some(a) = &req.server_assignor {
            if m.server_assignor.as_ref() != Some(a) {
                m.server_assignor = Some(a.clone());
                bump = true;
            }
        }
        if g.subscribed(topics) != g.subscribed_metadata {
            bump = true;
        }
        if bump {
            g.group_epoch += 1;
            g.state_timestamp = now;
        }
        if g.group_epoch > g.assignment_epoch {
            g.compute_target(topics);
        }
        g.reconcile(&member_id, req.owned.as_ref(), now);
        let m = g.members.get_mut(&member_id).unwrap();
        let assignment = if req.member_epoch == 0 || m.last_sent.as_ref() != Some(&m.assigned) {
            m.last_sent = Some(m.assigned.clone());
            Some(m.assigned.clone())
        } else {
            None
        };
        HeartbeatResponse {
            error: 0,
            error_message: None,
            member_id: Some(member_id),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: interval,
            assignment,
        }
    }

    /// OffsetCommit from a member of a consumer group (`None`: not a
    /// consumer group, the classic rules apply).
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
    ) -> Option<Result<(), E>> {
        let g = self.groups.get(group)?;
        if member_id.is_empty() && epoch < 0 {
            return Some(if g.members.is_empty() {
                Ok(())
            } else {
                Err(E::UnknownMemberId)
            });
        }
        let Some(m) = g.members.get(member_id) else {
            return Some(Err(E::UnknownMemberId));
        };
        if epoch > m.member_epoch || epoch < m.previous_member_epoch.max(0).min(m.member_epoch) {
            return Some(Err(E::StaleMemberEpoch));
        }
        Some(Ok(()))
    }

    /// Earliest deadline (session or revocation).
    pub fn next_deadline(&self) -> i64 {
        let mut next = i64::MAX;
        for g in self.groups.values() {
            for m in g.members.values() {
                next = next.min(m.session_deadline);
                if let Some(d) = m.revocation_deadline {
                    next = next.min(d);
                }
            }
        }
        next
    }

    /// Expires members whose session (or revocation) timed out.
    pub fn tick(&mut self, now: i64, topics: Option<&TopicsImage>) -> bool {
        let mut changed = false;
        for g in self.groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now)
                })
                .map(|m| m.member_id.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            for id in expired {
                tracing::info!(group = %g.group_id, member = %id, "consumer group member expired");
                g.members.remove(&id);
                g.target.remove(&id);
            }
            g.group_epoch += 1;
            g.state_timestamp = now;
            match topics {
                Some(t) => g.compute_target(t),
                None => {
                    let t = g.subscribed_metadata.clone();
                    g.compute_target(&t);
                }
            }
            changed = true;
        }
        changed
    }

    /// DeleteGroups: `Some(code)` if this is a consumer group.
    pub fn delete(&mut self, group: &str) -> Option<i16> {
        let g = self.groups.get(group)?;
        if !g.members.is_empty() {
            return Some(E::NonEmptyGroup.code());
        }
        self.groups.remove(group);
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> TopicsImage {
        let mut t = TopicsImage::new();
        t.insert("a".into(), (Uuid::from_u128(1), 6));
        t.insert("b".into(), (Uuid::from_u128(2), 3));
        t
    }

    fn join(id: &str, names: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(names.iter().map(|s| s.to_string()).collect()),
            owned: Some(Assignment::new()),
            ..Default::default()
        }
    }

    fn hb(id: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: id.into(),
            member_epoch: epoch,
            owned: Some(owned.clone()),
            ..Default::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(|p| p.len()).sum()
    }

    #[test]
    fn partitions_move_only_after_revocation() {
        let mut cg = ConsumerGroups::default();
        let t = topics();
        let r1 = cg.heartbeat(0, join("m1", &["a"]), &t, false);
        assert_eq!(r1.error, 0);
        assert_eq!(r1.member_epoch, 1);
        let a1 = r1.assignment.unwrap();
        assert_eq!(count(&a1), 6);
        let r2 = cg.heartbeat(1, join("m2", &["a"]), &t, false);
        assert_eq!(r2.member_epoch, 2);
        // m1 still owns everything: m2 gets nothing yet.
        assert_eq!(count(&r2.assignment.clone().unwrap_or_default()), 0);
        // m1 is asked to revoke three.
        let r = cg.heartbeat(2, hb("m1", 1, &a1), &t, false);
        let kept = r.assignment.unwrap();
        assert_eq!(count(&kept), 3);
        assert_eq!(r.member_epoch, 1);
        // Before m1 confirms, m2 still gets nothing.
        let r = cg.heartbeat(3, hb("m2", 2, &Assignment::new()), &t, false);
        assert!(r.assignment.is_none_or(|a| count(&a) == 0));
        // m1 confirms the revocation.
        let r = cg.heartbeat(4, hb("m1", 1, &kept), &t, false);
        assert_eq!(r.member_epoch, 2);
        let r = cg.heartbeat(5, hb("m2", 2, &Assignment::new()), &t, false);
        let got = r.assignment.unwrap();
        assert_eq!(count(&got), 3);
        let mine: BTreeSet<_> = flatten(&kept).collect();
        assert!(flatten(&got).all(|x| !mine.contains(&x)));
        assert_eq!(cg.get("g").unwrap().state_name(), "Stable");
        // m1 leaves: m2 takes all.
        let r = cg.heartbeat(6, hb("m1", -1, &kept), &t, false);
        assert_eq!(r.member_epoch, -1);
        let r = cg.heartbeat(7, hb("m2", 2, &got), &t, false);
        assert_eq!(count(&r.assignment.unwrap()), 6);
    }

    #[test]
    fn static_member_leaves_and_its_instance_takes_the_partitions_back() {
        let mut cg = ConsumerGroups::default();
        let t = topics();
        let mut j = join("s1", &["a"]);
        j.instance_id = Some("inst".into());
        let a = cg.heartbeat(0, j, &t, false).assignment.unwrap();
        assert_eq!(count(&a), 6);
        let r = cg.heartbeat(1, hb("s1", -2, &a), &t, false);
        assert_eq!((r.error, r.member_epoch), (0, -2));
        // Another member gets nothing while the static member is away.
        let r = cg.heartbeat(2, join("m2", &["a"]), &t, false);
        assert_eq!(count(&r.assignment.unwrap_or_default()), 0);
        // The instance comes back with a new member id and its partitions.
        let mut back = join("s1-new", &["a"]);
        back.instance_id = Some("inst".into());
        let r = cg.heartbeat(3, back, &t, false);
        assert_eq!(r.error, 0);
        assert!(!cg.get("g").unwrap().members.contains_key("s1"));
        assert!(count(&r.assignment.unwrap()) >= 3);
    }

    #[test]
    fn stale_epoch_and_unknown_member() {
        let mut cg = ConsumerGroups::default();
        let t = topics();
        cg.heartbeat(0, join("m1", &["a"]), &t, false);
        let r = cg.heartbeat(1, hb("m1", 7, &Assignment::new()), &t, false);
        assert_eq!(r.error, E::FencedMemberEpoch.code());
        let r = cg.heartbeat(1, hb("nobody", 1, &Assignment::new()), &t, false);
        assert_eq!(r.error, E::UnknownMemberId.code());
        assert_eq!(cg.validate_commit("g", "m1", 1), Some(Ok(())));
        assert_eq!(
            cg.validate_commit("g", "m1", 2),
            Some(Err(E::StaleMemberEpoch))
        );
        assert_eq!(
            cg.validate_commit("g", "x", 1),
            Some(Err(E::UnknownMemberId))
        );
    }

    #[test]
    fn session_timeout_and_regex_and_range() {
        let mut cg = ConsumerGroups::default();
        let t = topics();
        let mut j = join("m1", &[]);
        j.subscribed_topic_names = None;
        j.subscribed_topic_regex = Some("a|b".into());
        j.server_assignor = Some("range".into());
        let r = cg.heartbeat(0, j, &t, false);
        assert_eq!(count(&r.assignment.unwrap()), 9);
        assert_eq!(cg.next_deadline(), 45_000);
        assert!(cg.tick(45_000, Some(&t)));
        assert_eq!(cg.get("g").unwrap().state_name(), "Empty");
        let mut bad = join("m2", &["a"]);
        bad.server_assignor = Some("nope".into());
        assert_eq!(
            cg.heartbeat(0, bad, &t, false).error,
            E::UnsupportedAssignor.code()
        );
    }
}

// ------------------------------------------------------------ persistence
//
// Kafka's records (group-coordinator/src/main/resources/common/message):
// keys (not flexible) `version i16 | GroupId string [| MemberId string]`,
// values flexible v0 (compact strings and arrays, tagged fields):
//   3 ConsumerGroupMetadata            {Epoch i32}
//   5 ConsumerGroupMemberMetadata      {InstanceId?, RackId?, ClientId, ClientHost,
//                                       SubscribedTopicNames [], SubscribedTopicRegex?,
//                                       RebalanceTimeoutMs i32, ServerAssignor?}
//   6 ConsumerGroupTargetAssignmentMetadata {AssignmentEpoch i32}
//   7 ConsumerGroupTargetAssignmentMember   {TopicPartitions [{TopicId uuid, Partitions []i32}]}
//   8 ConsumerGroupCurrentMemberAssignment  {MemberEpoch, PreviousMemberEpoch i32, State i8,
//                                            AssignedPartitions [], PartitionsPendingRevocation []}
// (4, ConsumerGroupPartitionMetadata, is not written: the subscribed topics'
// metadata is re-read from the metadata image, so a load re-checks it.)

use bytes::{BufMut, Bytes, BytesMut};

use super::records::CoordinatorRecord;

fn key(version: i16, group: &str, member: Option<&str>) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(version);
    b.put_i16(group.len() as i16);
    b.put_slice(group.as_bytes());
    if let Some(m) = member {
        b.put_i16(m.len() as i16);
        b.put_slice(m.as_bytes());
    }
    b.freeze()
}

fn uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn cstr(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => uvarint(b, 0),
        Some(s) => {
            uvarint(b, s.len() as u64 + 1);
            b.put_slice(s.as_bytes());
        }
    }
}

fn cassignment(b: &mut BytesMut, a: &Assignment) {
    uvarint(b, a.len() as u64 + 1);
    for (t, ps) in a {
        b.put_slice(t.as_bytes());
        uvarint(b, ps.len() as u64 + 1);
        for p in ps {
            b.put_i32(*p);
        }
        uvarint(b, 0);
    }
}

fn value(f: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    f(&mut b);
    uvarint(&mut b, 0);
    b.freeze()
}

fn member_state_code(s: MemberState) -> i8 {
    match s {
        MemberState::Stable => 1,
        MemberState::UnrevokedPartitions => 2,
        MemberState::UnreleasedPartitions => 4,
    }
}

/// Every record that describes `g` now (key → value).
fn snapshot(g: &ConsumerGroup) -> BTreeMap<Bytes, Bytes> {
    let id = &g.group_id;
    let mut out = BTreeMap::new();
    out.insert(key(3, id, None), value(|b| b.put_i32(g.group_epoch)));
    out.insert(key(6, id, None), value(|b| b.put_i32(g.assignment_epoch)));
    for m in g.members.values() {
        let mid = Some(m.member_id.as_str());
        out.insert(
            key(5, id, mid),
            value(|b| {
                cstr(b, m.instance_id.as_deref());
                cstr(b, m.rack_id.as_deref());
                cstr(b, Some(&m.client_id));
                cstr(b, Some(&m.client_host));
                uvarint(b, m.subscribed_topic_names.len() as u64 + 1);
                for t in &m.subscribed_topic_names {
                    cstr(b, Some(t));
                }
                cstr(b, m.subscribed_topic_regex.as_deref());
                b.put_i32(m.rebalance_timeout_ms);
                cstr(b, m.server_assignor.as_deref());
            }),
        );
        out.insert(
            key(8, id, mid),
            value(|b| {
                b.put_i32(m.member_epoch);
                b.put_i32(m.previous_member_epoch);
                b.put_i8(member_state_code(m.state));
                cassignment(b, &m.assigned);
                cassignment(b, &m.revoking);
            }),
        );
    }
    for (mid, a) in &g.target {
        out.insert(key(7, id, Some(mid)), value(|b| cassignment(b, a)));
    }
    out
}

/// The records that turn `before` into `after`: changed values, and
/// tombstones for what is gone (the group's own last).
fn diff(
    before: &BTreeMap<Bytes, Bytes>,
    after: &BTreeMap<Bytes, Bytes>,
    out: &mut Vec<CoordinatorRecord>,
) {
    let mut tombstones = Vec::new();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            out.push(CoordinatorRecord::Consumer {
                key: k.clone(),
                value: Some(v.clone()),
            });
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        tombstones.push(CoordinatorRecord::Consumer {
            key: k.clone(),
            value: None,
        });
    }
    // Member records (5, 7, 8) before the group's (3, 6).
    tombstones.sort_by_key(|r| match r {
        CoordinatorRecord::Consumer { key, .. } => {
            std::cmp::Reverse(matches!(key.get(1), Some(5 | 7 | 8)))
        }
        _ => std::cmp::Reverse(false),
    });
    out.extend(tombstones);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.i16()?;
        String::from_utf8(self.take(usize::try_from(n).ok()?)?.to_vec()).ok()
    }
    fn cstr(&mut self) -> Option<Option<String>> {
        let n = self.uvarint()?;
        if n == 0 {
            return Some(None);
        }
        let s = self.take(usize::try_from(n - 1).ok()?)?;
        Some(Some(String::from_utf8(s.to_vec()).ok()?))
    }
    fn carray_len(&mut self) -> Option<usize> {
        let n = self.uvarint()?;
        usize::try_from(n.saturating_sub(1)).ok()
    }
    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            let _tag = self.uvarint()?;
            let len = self.uvarint()?;
            self.take(usize::try_from(len).ok()?)?;
        }
        Some(())
    }
    fn assignment(&mut self) -> Option<Assignment> {
        let mut a = Assignment::new();
        for _ in 0..self.carray_len()? {
            let id = Uuid::from_slice(self.take(16)?).ok()?;
            let n = self.carray_len()?;
            let mut ps = BTreeSet::new();
            for _ in 0..n {
                ps.insert(self.i32()?);
            }
            self.skip_tags()?;
            if !ps.is_empty() {
                a.insert(id, ps);
            }
        }
        Some(a)
    }
}

impl ConsumerGroups {
    /// Runs [`Self::heartbeat`] and adds the records of what changed.
    pub fn heartbeat_durable(
        &mut self,
        now: i64,
        req: HeartbeatRequest,
        topics: &TopicsImage,
        classic_exists: bool,
        out: &mut Vec<CoordinatorRecord>,
    ) -> HeartbeatResponse {
        let id = req.group_id.clone();
        let before = self.groups.get(&id).map(snapshot).unwrap_or_default();
        let r = self.heartbeat(now, req, topics, classic_exists);
        let after = self.groups.get(&id).map(snapshot).unwrap_or_default();
        diff(&before, &after, out);
        r
    }

    /// Expires members and adds the records of what changed.
    pub fn tick_durable(&mut self, now: i64, out: &mut Vec<CoordinatorRecord>) {
        let before: BTreeMap<String, BTreeMap<Bytes, Bytes>> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                g.members.values().any(|m| {
                    m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now)
                })
            })
            .map(|(id, g)| (id.clone(), snapshot(g)))
            .collect();
        if before.is_empty() {
            return;
        }
        self.tick(now, None);
        for (id, b) in before {
            let after = self.groups.get(&id).map(snapshot).unwrap_or_default();
            diff(&b, &after, out);
        }
    }

    /// DeleteGroups of a consumer group, with its tombstones.
    pub fn delete_durable(&mut self, group: &str, out: &mut Vec<CoordinatorRecord>) -> Option<i16> {
        let before = self.groups.get(group).map(snapshot).unwrap_or_default();
        let code = self.delete(group)?;
        if code == 0 {
            diff(&before, &BTreeMap::new(), out);
        }
        Some(code)
    }

    /// Loading: applies one consumer-group record (malformed ones are
    /// skipped with a warning).
    pub fn replay(&mut self, now: i64, k: &[u8], v: Option<&[u8]>) {
        if self.replay_inner(now, k, v).is_none() {
            tracing::warn!("malformed consumer group record skipped while loading");
        }
    }

    fn replay_inner(&mut self, now: i64, k: &[u8], v: Option<&[u8]>) -> Option<()> {
        let mut kr = Reader(k);
        let version = kr.i16()?;
        let group = kr.str16()?;
        let member = if matches!(version, 5 | 7 | 8) {
            Some(kr.str16()?)
        } else {
            None
        };
        let Some(v) = v else {
            match (version, member) {
                (3, _) => {
                    self.groups.remove(&group);
                }
                (5, Some(m)) => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.members.remove(&m);
                    }
                }
                (7, Some(m)) => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.target.remove(&m);
                    }
                }
                _ => {}
            }
            return Some(());
        };
        let mut r = Reader(v);
        let _value_version = r.i16()?;
        let session = i64::from(self.config.session_timeout_ms);
        let g = self
            .groups
            .entry(group.clone())
            .or_insert_with(|| ConsumerGroup::new(&group, now));
        fn member_entry<'g>(
            g: &'g mut ConsumerGroup,
            id: &str,
            now: i64,
            session: i64,
        ) -> &'g mut ConsumerMember {
            g.members
                .entry(id.to_string())
                .or_insert_with(|| ConsumerMember {
                    member_id: id.to_string(),
                    instance_id: None,
                    rack_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    rebalance_timeout_ms: -1,
                    subscribed_topic_names: Vec::new(),
                    subscribed_topic_regex: None,
                    server_assignor: None,
                    member_epoch: 0,
                    previous_member_epoch: -1,
                    state: MemberState::Stable,
                    assigned: Assignment::new(),
                    revoking: Assignment::new(),
                    session_deadline: now + session,
                    revocation_deadline: None,
                    last_sent: None,
                })
        }
        match (version, member) {
            (3, _) => g.group_epoch = r.i32()?,
            (6, _) => g.assignment_epoch = r.i32()?,
            (5, Some(id)) => {
                let instance_id = r.cstr()?;
                let rack_id = r.cstr()?;
                let client_id = r.cstr()?.unwrap_or_default();
                let client_host = r.cstr()?.unwrap_or_default();
                let mut names = Vec::new();
                for _ in 0..r.carray_len()? {
                    names.push(r.cstr()?.unwrap_or_default());
                }
                let regex = r.cstr()?;
                let rebalance = r.i32()?;
                let assignor = r.cstr()?;
                let m = member_entry(g, &id, now, session);
                m.instance_id = instance_id;
                m.rack_id = rack_id;
                m.client_id = client_id;
                m.client_host = client_host;
                m.subscribed_topic_names = names;
                m.subscribed_topic_regex = regex;
                m.rebalance_timeout_ms = rebalance;
                m.server_assignor = assignor;
            }
            (7, Some(id)) => {
                let a = r.assignment()?;
                g.target.insert(id, a);
            }
            (8, Some(id)) => {
                let epoch = r.i32()?;
                let previous = r.i32()?;
                let state = r.i8()?;
                let assigned = r.assignment()?;
                let revoking = r.assignment()?;
                let m = member_entry(g, &id, now, session);
                m.member_epoch = epoch;
                m.previous_member_epoch = previous;
                m.state = match state {
                    2 => MemberState::UnrevokedPartitions,
                    4 => MemberState::UnreleasedPartitions,
                    _ => MemberState::Stable,
                };
                m.revocation_deadline =
                    (!revoking.is_empty()).then(|| now + i64::from(m.rebalance_timeout_ms.max(1)));
                m.assigned = assigned;
                m.revoking = revoking;
            }
            _ => {}
        }
        Some(())
    }
}

#[cfg(test)]
mod persistence_tests {
    use super::*;

    #[test]
    fn replaying_the_records_rebuilds_the_group() {
        let mut t = TopicsImage::new();
        t.insert("a".into(), (Uuid::from_u128(1), 6));
        let mut live = ConsumerGroups::default();
        let mut log = Vec::new();
        for (i, id) in ["m1", "m2"].iter().enumerate() {
            let req = HeartbeatRequest {
                group_id: "g".into(),
                member_id: id.to_string(),
                member_epoch: 0,
                rebalance_timeout_ms: 30_000,
                subscribed_topic_names: Some(vec!["a".into()]),
                instance_id: Some(format!("i{i}")),
                client_id: "c".into(),
                ..Default::default()
            };
            assert_eq!(live.heartbeat_durable(0, req, &t, false, &mut log).error, 0);
        }
        let mut loaded = ConsumerGroups::default();
        for r in &log {
            let (k, v) = r.encode();
            let CoordinatorRecord::Consumer { .. } =
                CoordinatorRecord::decode(Some(&k), v.as_deref()).unwrap()
            else {
                panic!("not a consumer record");
            };
            loaded.replay(0, &k, v.as_deref());
        }
        let (a, b) = (live.get("g").unwrap(), loaded.get("g").unwrap());
        assert_eq!(snapshot(a), snapshot(b));
        assert_eq!(b.members.len(), 2);
        assert_eq!(b.group_epoch, 2);
        // Deleting needs an empty group; its tombstones remove it on load.
        assert_eq!(
            live.delete_durable("g", &mut log),
            Some(E::NonEmptyGroup.code())
        );
        live.tick_durable(45_000, &mut log);
        assert_eq!(live.delete_durable("g", &mut log), Some(0));
        let mut reloaded = ConsumerGroups::default();
        for r in &log {
            let (k, v) = r.encode();
            reloaded.replay(0, &k, v.as_deref());
        }
        assert!(reloaded.get("g").is_none());
    }
}
