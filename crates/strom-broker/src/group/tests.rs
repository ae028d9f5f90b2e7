//! State-machine tests with a fake clock: the shard is driven exactly as the
//! runtime drives it (operation → records appended to a fake log → replayed
//! → replies delivered), but without tasks or I/O.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;

use super::records::CoordinatorRecord;
use super::state::*;
use super::GroupConfig;

struct Harness {
    shard: GroupShard,
    now: i64,
    log: Vec<CoordinatorRecord>,
    next_token: Token,
    replies: HashMap<Token, Reply>,
}

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 100,
        ..GroupConfig::default()
    }
}

impl Harness {
    fn new() -> Self {
        Harness {
            shard: GroupShard::new(config(), 1_000_000),
            now: 1_000_000,
            log: Vec::new(),
            next_token: 1,
            replies: HashMap::new(),
        }
    }

    fn apply(&mut self, mut fx: Effects) {
        for r in &fx.records {
            self.shard
                .replay(self.now, r, ReplayMode::Live, &mut fx.replies);
        }
        self.log.extend(fx.records);
        for (t, r) in fx.replies {
            assert!(self.replies.insert(t, r).is_none(), "two replies for {t}");
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        let mut fx = Effects::default();
        self.shard.tick(self.now, &mut fx);
        self.apply(fx);
    }

    fn join_req(&self, member: &str, instance: Option<&str>, version: i16) -> JoinRequest {
        JoinRequest {
            version,
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: vec![
                // ConsumerProtocolSubscription v0: topics ["t"], no user data.
                (
                    "range".into(),
                    Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff]),
                ),
                ("roundrobin".into(), Bytes::from_static(b"rr-meta")),
            ],
        }
    }

    fn join_with(&mut self, req: JoinRequest) -> Token {
        let t = self.next_token;
        self.next_token += 1;
        let mut fx = Effects::default();
        self.shard.join_group(self.now, t, req, &mut fx);
        self.apply(fx);
        t
    }

    fn join(&mut self, member: &str) -> Token {
        let req = self.join_req(member, None, 9);
        self.join_with(req)
    }

    fn take_join(&mut self, t: Token) -> Option<JoinResponse> {
        match self.replies.remove(&t)? {
            Reply::Join(j) => Some(j),
            r => panic!("expected a join reply, got {r:?}"),
        }
    }

    fn take_sync(&mut self, t: Token) -> Option<SyncResponse> {
        match self.replies.remove(&t)? {
            Reply::Sync(s) => Some(s),
            r => panic!("expected a sync reply, got {r:?}"),
        }
    }

    /// A new dynamic member through the KIP-394 round trip; returns its
    /// pending join token and member id.
    fn join_new(&mut self) -> (Token, String) {
        let t = self.join("");
        let r = self.take_join(t).expect("MEMBER_ID_REQUIRED at once");
        assert_eq!(r.error, E::MemberIdRequired.code());
        let id = r.member_id.clone();
        assert!(!id.is_empty());
        (self.join(&id), id)
    }

    fn sync(&mut self, member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> Token {
        let t = self.next_token;
        self.next_token += 1;
        let req = SyncRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a)))
                .collect(),
        };
        let mut fx = Effects::default();
        self.shard.sync_group(self.now, t, req, &mut fx);
        self.apply(fx);
        t
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> i16 {
        self.shard
            .heartbeat(self.now, "g", generation, member, None)
    }

    fn state(&self) -> GroupState {
        self.shard
            .group("g")
            .map(|g| g.state)
            .unwrap_or(GroupState::Dead)
    }

    fn commit(&mut self, member: &str, generation: i32, offset: i64) -> Result<Vec<i16>, i16> {
        let req = CommitRequest {
            version: 8,
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset,
                leader_epoch: 0,
                metadata: Some("m".into()),
            }],
        };
        let mut fx = Effects::default();
        let r = self.shard.commit_offsets(self.now, &req, &mut fx);
        self.apply(fx);
        r
    }

    /// Two dynamic members through a complete first rebalance.
    fn stable_pair(&mut self) -> (String, String) {
        let (t1, m1) = self.join_new();
        let (t2, m2) = self.join_new();
        assert_eq!(self.state(), GroupState::PreparingRebalance);
        assert!(self.replies.is_empty(), "the initial delay holds the joins");
        self.advance(100);
        assert!(
            self.replies.is_empty(),
            "a member arrived during the delay: it is extended once more"
        );
        self.advance(100);
        let j1 = self.take_join(t1).expect("join completes after the delay");
        let j2 = self.take_join(t2).expect("join completes after the delay");
        assert_eq!((j1.error, j2.error), (0, 0));
        assert_eq!(j1.generation_id, 1);
        assert_eq!(j1.protocol_name.as_deref(), Some("range"));
        assert_eq!(j1.leader, m1);
        assert_eq!(j1.members.len(), 2, "the leader gets every member");
        assert!(j2.members.is_empty());
        assert_eq!(self.state(), GroupState::CompletingRebalance);
        let s2 = self.sync(&m2, 1, &[]);
        assert!(self.replies.is_empty(), "followers wait for the leader");
        let s1 = self.sync(&m1, 1, &[(&m1, b"a1"), (&m2, b"a2")]);
        assert_eq!(
            self.take_sync(s1).unwrap().assignment,
            Bytes::from_static(b"a1")
        );
        assert_eq!(
            self.take_sync(s2).unwrap().assignment,
            Bytes::from_static(b"a2")
        );
        assert_eq!(self.state(), GroupState::Stable);
        (m1, m2)
    }

    /// The state a fresh shard rebuilds from this shard's log.
    fn replayed(&self) -> GroupShard {
        let mut fresh = GroupShard::new(config(), self.now);
        let mut ignored = Vec::new();
        for r in &self.log {
            fresh.replay(self.now, r, ReplayMode::Load, &mut ignored);
        }
        fresh
    }
}

#[test]
fn join_sync_heartbeat() {
    let mut h = Harness::new();
    let (m1, m2) = h.stable_pair();
    assert_eq!(h.heartbeat(&m1, 1), 0);
    assert_eq!(h.heartbeat(&m2, 1), 0);
    assert_eq!(h.heartbeat(&m2, 0), E::IllegalGeneration.code());
    assert_eq!(h.heartbeat("nobody", 1), E::UnknownMemberId.code());
    // A follower rejoining with the same protocols gets the current generation.
    let t = h.join(&m2);
    let j = h.take_join(t).unwrap();
    assert_eq!((j.error, j.generation_id), (0, 1));
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn rebalance_on_leave() {
    let mut h = Harness::new();
    let (m1, m2) = h.stable_pair();
    let mut fx = Effects::default();
    let codes = h
        .shard
        .leave_group(h.now, "g", &[(m1.clone(), None)], &mut fx)
        .unwrap();
    h.apply(fx);
    assert_eq!(codes, vec![0]);
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&m2, 1), E::RebalanceInProgress.code());
    // Commits of the old generation are still accepted while preparing.
    assert_eq!(h.commit(&m2, 1, 5), Ok(vec![0]));
    let t = h.join(&m2);
    let j = h
        .take_join(t)
        .expect("the only member rejoined: complete at once");
    assert_eq!((j.generation_id, j.leader.as_str()), (2, m2.as_str()));
    let s = h.sync(&m2, 2, &[(&m2, b"all")]);
    assert_eq!(
        h.take_sync(s).unwrap().assignment,
        Bytes::from_static(b"all")
    );
    // Last member leaves: Empty, recorded.
    let mut fx = Effects::default();
    h.shard
        .leave_group(h.now, "g", &[(m2.clone(), None)], &mut fx)
        .unwrap();
    h.apply(fx);
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.shard.group("g").unwrap().generation, 3);
    // Unknown members leaving are reported per member.
    let mut fx = Effects::default();
    assert_eq!(
        h.shard
            .leave_group(h.now, "g", &[("x".into(), None)], &mut fx),
        Ok(vec![E::UnknownMemberId.code()])
    );
}

#[test]
fn rebalance_on_session_expiry_and_join() {
    let mut h = Harness::new();
    let (m1, m2) = h.stable_pair();
    // m1 keeps heartbeating, m2 goes silent.
    let mut codes = Vec::new();
    for _ in 0..4 {
        h.advance(3_000);
        codes.push(h.heartbeat(&m1, 1));
    }
    // Until m2's session ends all is well; then m1 learns of the rebalance.
    assert_eq!(codes, vec![0, 0, 0, E::RebalanceInProgress.code()]);
    assert_eq!(h.state(), GroupState::PreparingRebalance, "m2 expired");
    assert!(h.shard.group("g").unwrap().member(&m2).is_none());
    assert_eq!(h.heartbeat(&m2, 1), E::UnknownMemberId.code());
    let t = h.join(&m1);
    assert_eq!(h.take_join(t).unwrap().generation_id, 2);

    // A new member joining a Stable group makes everyone rejoin.
    h.sync(&m1, 2, &[(&m1, b"x")]);
    assert_eq!(h.state(), GroupState::Stable);
    let (t3, m3) = h.join_new();
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(h.take_join(t3).is_none(), "waits for m1");
    assert_eq!(h.heartbeat(&m1, 2), E::RebalanceInProgress.code());
    let t1 = h.join(&m1);
    let j1 = h.take_join(t1).unwrap();
    let j3 = h.take_join(t3).unwrap();
    assert_eq!((j1.generation_id, j3.generation_id), (3, 3));
    assert_eq!(j3.member_id, m3);

    // A member that never rejoins is dropped at the rebalance timeout.
    h.sync(&m1, 3, &[]);
    let t1 = h.join(&m1); // m1 changes nothing but is the leader: rebalance
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.heartbeat(&m3, 3);
    h.advance(i64::from(REBALANCE));
    let j1 = h.take_join(t1).unwrap();
    assert_eq!(j1.generation_id, 4);
    assert_eq!(j1.members.len(), 1, "m3 did not rejoin in time");
}

#[test]
fn static_member_rejoins_without_rebalance_and_fences_old_id() {
    let mut h = Harness::new();
    let req = h.join_req("", Some("instance-1"), 5);
    let t = h.join_with(req);
    h.advance(100);
    let j = h.take_join(t).unwrap();
    let old = j.member_id.clone();
    assert!(old.starts_with("instance-1-"));
    h.sync(&old, 1, &[(&old, b"mine")]);
    assert_eq!(h.state(), GroupState::Stable);
    let mut follower = h.join_req("", Some("instance-2"), 5);
    follower.protocols.truncate(1);
    // instance-2 joins: rebalance to gen 2 with both.
    let t2 = h.join_with(follower.clone());
    let t1 = h.join(&old);
    let j1 = h.take_join(t1).unwrap();
    let j2 = h.take_join(t2).unwrap();
    let m2 = j2.member_id.clone();
    h.sync(&old, 2, &[(&old, b"a1"), (&m2, b"a2")]);
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(j1.generation_id, 2);

    // instance-2 restarts: no member id, same instance id → same generation,
    // its assignment kept, no rebalance.
    let t = h.join_with(follower);
    let j = h.take_join(t).expect("answered without a rebalance");
    assert_eq!((j.error, j.generation_id), (0, 2));
    assert_ne!(j.member_id, m2);
    assert_eq!(h.state(), GroupState::Stable);
    let s = h.sync(&j.member_id.clone(), 2, &[]);
    assert_eq!(
        h.take_sync(s).unwrap().assignment,
        Bytes::from_static(b"a2")
    );
    // The old incarnation is fenced.
    assert_eq!(
        h.shard.heartbeat(h.now, "g", 2, &m2, Some("instance-2")),
        E::FencedInstanceId.code()
    );
    // Replay gives the same durable state (new member id included).
    assert_eq!(h.replayed().durable_view(), h.shard.durable_view());
}

#[test]
fn error_codes() {
    let mut h = Harness::new();
    let mut bad = h.join_req("", None, 9);
    bad.session_timeout_ms = 10;
    let t = h.join_with(bad);
    assert_eq!(
        h.take_join(t).unwrap().error,
        E::InvalidSessionTimeout.code()
    );
    assert!(
        h.shard.group("g").is_none(),
        "a failed join leaves no group"
    );
    let mut empty = h.join_req("", None, 9);
    empty.group_id = String::new();
    let t = h.join_with(empty);
    assert_eq!(h.take_join(t).unwrap().error, E::InvalidGroupId.code());
    let t = h.join("made-up-id");
    assert_eq!(h.take_join(t).unwrap().error, E::UnknownMemberId.code());

    let (m1, _m2) = h.stable_pair();
    // Another protocol type cannot join.
    let mut other = h.join_req("", None, 9);
    other.protocol_type = "connect".into();
    let t = h.join_with(other);
    assert_eq!(
        h.take_join(t).unwrap().error,
        E::InconsistentGroupProtocol.code()
    );
    // Sync with a stale generation.
    let t = h.sync(&m1, 7, &[]);
    assert_eq!(h.take_sync(t).unwrap().error, E::IllegalGeneration.code());
    // Commits: unknown member, wrong generation, simple commit refused on a
    // group with members, accepted for an unknown group.
    assert_eq!(h.commit("ghost", 1, 1), Err(E::UnknownMemberId.code()));
    assert_eq!(h.commit(&m1, 9, 1), Err(E::IllegalGeneration.code()));
    assert_eq!(h.commit("", -1, 1), Err(E::UnknownMemberId.code()));
    assert_eq!(h.commit(&m1, 1, 42), Ok(vec![0]));
    // DeleteGroups of a group with members.
    let mut fx = Effects::default();
    assert_eq!(h.shard.delete_group("g", &mut fx), E::NonEmptyGroup.code());
    assert_eq!(
        h.shard.delete_group("nope", &mut fx),
        E::GroupIdNotFound.code()
    );
    assert!(fx.records.is_empty());
    // OffsetDelete of a topic the group subscribes to is refused.
    assert_eq!(
        h.shard.delete_offsets(
            "g",
            &[("t".into(), vec![0]), ("u".into(), vec![0])],
            &mut fx
        ),
        Ok(vec![
            ("t".to_string(), vec![(0, E::GroupSubscribedToTopic.code())]),
            ("u".to_string(), vec![(0, 0)])
        ])
    );
    assert!(
        fx.records.is_empty(),
        "nothing committed for u: nothing to delete"
    );
    // Group max size.
    let mut small = Harness::new();
    small.shard = GroupShard::new(
        GroupConfig {
            max_size: 1,
            ..config()
        },
        small.now,
    );
    small.join_new();
    let t = small.join("");
    assert_eq!(
        small.take_join(t).unwrap().error,
        E::GroupMaxSizeReached.code()
    );
}

#[test]
fn offsets_simple_commit_fetch_delete_and_expiry() {
    let mut h = Harness::new();
    // Unknown group: generation ≥ 0 is refused (v8: ILLEGAL_GENERATION).
    assert_eq!(h.commit("m", 3, 1), Err(E::IllegalGeneration.code()));
    assert_eq!(h.commit("", -1, 17), Ok(vec![0]));
    let f = h
        .shard
        .fetch_offsets("g", Some(&[("t".into(), vec![0, 1])]));
    assert_eq!(f[0].1[0].1.as_ref().unwrap().offset, 17);
    assert_eq!(f[0].1[0].1.as_ref().unwrap().metadata, "m");
    assert!(f[0].1[1].1.is_none());
    assert_eq!(h.shard.fetch_offsets("g", None)[0].1.len(), 1);
    assert!(h.shard.fetch_offsets("other", None).is_empty());
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.replayed().durable_view(), h.shard.durable_view());

    let mut fx = Effects::default();
    let r = h
        .shard
        .delete_offsets("g", &[("t".into(), vec![0])], &mut fx)
        .unwrap();
    assert_eq!(r, vec![("t".to_string(), vec![(0, 0)])]);
    h.apply(fx);
    assert!(h.shard.fetch_offsets("g", None).is_empty());

    // Retention: the offset and then the group expire.
    h.commit("", -1, 18).unwrap();
    h.advance(config().offsets_retention_ms + config().offsets_retention_check_interval_ms);
    assert!(h.shard.fetch_offsets("g", None).is_empty());
    assert!(
        h.shard.group("g").is_none(),
        "an empty group with no offsets is removed"
    );
    assert_eq!(h.replayed().durable_view(), h.shard.durable_view());
}

#[test]
fn delete_group_and_replay_equivalence() {
    let mut h = Harness::new();
    let (m1, m2) = h.stable_pair();
    h.commit(&m1, 1, 100).unwrap();
    // Loaded state equals live state: groups (generation, protocol, leader,
    // members, assignments) and offsets.
    let loaded = h.replayed();
    assert_eq!(loaded.durable_view(), h.shard.durable_view());
    let g = loaded.group("g").unwrap();
    assert_eq!(g.state, GroupState::Stable);
    // Loaded members keep heartbeating into the same generation.
    let mut loaded_h = Harness::new();
    loaded_h.shard = loaded;
    assert_eq!(loaded_h.heartbeat(&m2, 1), 0);

    for m in [&m1, &m2] {
        let mut fx = Effects::default();
        h.shard
            .leave_group(h.now, "g", &[(m.clone(), None)], &mut fx)
            .unwrap();
        h.apply(fx);
    }
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.replayed().durable_view(), h.shard.durable_view());
    let mut fx = Effects::default();
    assert_eq!(h.shard.delete_group("g", &mut fx), 0);
    h.apply(fx);
    assert!(h.shard.group("g").is_none());
    assert!(h.shard.fetch_offsets("g", None).is_empty());
    assert!(h.replayed().group("g").is_none());
}

#[test]
fn kip394_pending_member_expires() {
    let mut h = Harness::new();
    let t = h.join("");
    let id = h.take_join(t).unwrap().member_id;
    h.advance(i64::from(SESSION) + 1);
    // The pending id expired: rejoining with it is unknown.
    let t = h.join(&id);
    assert_eq!(h.take_join(t).unwrap().error, E::UnknownMemberId.code());
}
