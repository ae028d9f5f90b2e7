//! Consumer groups end to end: librdkafka (the `rdkafka` crate) consumers
//! that subscribe and commit, and raw-frame requests that must get Kafka's
//! exact error codes without disturbing the group.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::{
    delete_groups_request::DeleteGroupsRequest,
    find_coordinator_request::FindCoordinatorRequest,
    heartbeat_request::HeartbeatRequest,
    join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol},
    offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    },
    offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics},
    sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment},
    GroupId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const FAST: &[(&str, &str)] = &[("group.initial.rebalance.delay.ms", "100")];

// Kafka error codes used below.
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const INVALID_GROUP_ID: i16 = 24;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

fn produce_ids(server: &TestServer, topic: &str, partitions: i32, per_partition: usize) {
    let mut c = server.connect();
    assert_eq!(c.create_topic(topic, partitions), 0);
    for p in 0..partitions {
        let values: Vec<String> = (0..per_partition).map(|i| format!("{p}-{i}")).collect();
        let recs: Vec<(&[u8], &[u8])> = values
            .iter()
            .map(|v| (b"k".as_slice(), v.as_bytes()))
            .collect();
        let r = c.produce(topic, p, record_batch(&recs), -1);
        assert_eq!(r.error_code, 0, "{r:?}");
    }
}

fn consumer_config(server: &TestServer, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", server.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300");
    c
}

#[test]
fn stream_consumer_subscribes_commits_and_resumes() {
    let server = TestServer::start_with(FAST);
    produce_ids(&server, "stream", 4, 50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let c: StreamConsumer = consumer_config(&server, "g-stream")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()
            .expect("consumer");
        c.subscribe(&["stream"]).unwrap();
        let mut seen = HashSet::new();
        while seen.len() < 150 {
            let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
                .await
                .expect("a record within 30 s")
                .expect("no consumer error");
            seen.insert(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            c.commit_message(&m, CommitMode::Sync).unwrap();
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition("stream", p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                // a partition none of the 150 records came from
                Offset::Invalid => 0,
                other => panic!("unexpected committed offset: {other:?}"),
            })
            .sum();
        assert_eq!(total, 150);
        seen
    });
    // A new consumer of the group resumes from the commits: 50 records left.
    rt.block_on(async {
        let c: StreamConsumer = consumer_config(&server, "g-stream").create().unwrap();
        c.subscribe(&["stream"]).unwrap();
        let mut n = 0;
        while n < 50 {
            let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
                .await
                .expect("a record")
                .unwrap();
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            assert!(!seen.contains(&v), "record {v} was committed already");
            n += 1;
        }
    });
}

#[test]
fn base_consumers_split_partitions() {
    let server = TestServer::start_with(FAST);
    produce_ids(&server, "split", 6, 10);
    let a: BaseConsumer = consumer_config(&server, "g-split").create().unwrap();
    let b: BaseConsumer = consumer_config(&server, "g-split").create().unwrap();
    a.subscribe(&["split"]).unwrap();
    b.subscribe(&["split"]).unwrap();
    let owned = |c: &BaseConsumer| -> BTreeSet<i32> {
        c.assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = 0;
    loop {
        for c in [&a, &b] {
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                m.expect("no consumer error");
                records += 1;
            }
        }
        let (x, y) = (owned(&a), owned(&b));
        if x.len() == 3 && y.len() == 3 && x.is_disjoint(&y) && records >= 60 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 3/3 split: {x:?} {y:?}, {records} records\n{}",
            server.stderr()
        );
    }
}

fn join(
    c: &mut RawClient,
    group_id: &str,
    member_id: &str,
    session_ms: i32,
) -> kafka_protocol::messages::JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0\0\0\0\0"))]);
    c.call(&req, 5)
}

fn commit(c: &mut RawClient, version: i16, group_id: &str, generation: i32, member: &str) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name("raw"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(7)
                .with_committed_metadata(Some(s("meta")))])]);
    let resp = c.call(&req, version);
    resp.topics[0].partitions[0].error_code
}

#[test]
fn bad_group_requests_get_kafkas_error_codes() {
    let mut server = TestServer::start_with(FAST);
    let mut c = server.connect();
    assert_eq!(c.create_topic("raw", 1), 0);

    // FindCoordinator v4 (batched keys): this node for every key.
    let fc = c.call(
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s("g"), s("other")]),
        4,
    );
    assert_eq!(fc.coordinators.len(), 2);
    for k in &fc.coordinators {
        assert_eq!(
            (k.error_code, k.node_id.0, k.port),
            (0, NODE_ID, server.port() as i32)
        );
    }

    // Session timeout below group.min.session.timeout.ms (6000).
    let r = join(&mut c, "g", "", 1000);
    assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT);
    // Empty group id.
    assert_eq!(join(&mut c, "", "", 10_000).error_code, INVALID_GROUP_ID);

    // KIP-394 round trip, then a real join (the initial delay is 100 ms).
    let r = join(&mut c, "g", "", 10_000);
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    let me = r.member_id.to_string();
    let r = join(&mut c, "g", &me, 10_000);
    assert_eq!((r.error_code, r.generation_id), (0, 1), "{r:?}");
    assert_eq!(r.leader.as_str(), me);

    let sync = |c: &mut RawClient, generation: i32| {
        let req = SyncGroupRequest::default()
            .with_group_id(group("g"))
            .with_generation_id(generation)
            .with_member_id(s(&me))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&me))
                .with_assignment(Bytes::from_static(b"assignment"))]);
        c.call(&req, 3)
    };
    assert_eq!(sync(&mut c, 2).error_code, ILLEGAL_GENERATION);
    let ok = sync(&mut c, 1);
    assert_eq!(ok.error_code, 0);
    assert_eq!(&ok.assignment[..], b"assignment");

    let hb = |c: &mut RawClient, member: &str, generation: i32| {
        c.call(
            &HeartbeatRequest::default()
                .with_group_id(group("g"))
                .with_generation_id(generation)
                .with_member_id(s(member)),
            3,
        )
        .error_code
    };
    assert_eq!(hb(&mut c, "unknown-member", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(hb(&mut c, &me, 0), ILLEGAL_GENERATION);
    assert_eq!(hb(&mut c, &me, 1), 0);

    let del = c.call(
        &DeleteGroupsRequest::default().with_groups_names(vec![group("g"), group("missing")]),
        2,
    );
    let codes: Vec<i16> = del.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]);

    // OffsetCommit: unknown member of a group with a generation, stale
    // generation, and a generation for a group that does not exist.
    assert_eq!(commit(&mut c, 8, "g", 1, "stranger"), UNKNOWN_MEMBER_ID);
    assert_eq!(commit(&mut c, 8, "g", 5, &me), ILLEGAL_GENERATION);
    assert_eq!(commit(&mut c, 8, "nogroup", 3, "m"), ILLEGAL_GENERATION);
    assert_eq!(commit(&mut c, 9, "nogroup", 3, "m"), GROUP_ID_NOT_FOUND);
    assert_eq!(commit(&mut c, 8, "g", 1, &me), 0);

    // OffsetFetch v8: the commit is there; an unknown group has -1, no error.
    let fetch = c.call(
        &OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group("g"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(topic_name("raw"))
                    .with_partition_indexes(vec![0])])),
            OffsetFetchRequestGroup::default()
                .with_group_id(group("never"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(topic_name("raw"))
                    .with_partition_indexes(vec![0])])),
        ]),
        8,
    );
    let g = &fetch.groups[0].topics[0].partitions[0];
    assert_eq!(
        (g.committed_offset, g.metadata.as_deref()),
        (7, Some("meta"))
    );
    let n = &fetch.groups[1];
    assert_eq!(
        (n.error_code, n.topics[0].partitions[0].committed_offset),
        (0, -1)
    );

    // The group was not disturbed by any of it.
    assert_eq!(hb(&mut c, &me, 1), 0);
    server.assert_healthy();
}

fn commit_to(
    c: &mut RawClient,
    group_id: &str,
    generation: i32,
    member: &str,
    topic: &str,
    metadata: &str,
) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(99)
                .with_committed_metadata(Some(s(metadata)))])]);
    c.call(&req, 8).topics[0].partitions[0].error_code
}

fn committed(c: &mut RawClient, group_id: &str) -> (i16, i64, Option<String>) {
    let fetch = c.call(
        &OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(group(group_id))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name("raw"))
                .with_partition_indexes(vec![0])]))]),
        8,
    );
    let g = &fetch.groups[0];
    let p = &g.topics[0].partitions[0];
    (
        g.error_code,
        p.committed_offset,
        p.metadata.as_ref().map(|m| m.to_string()),
    )
}

fn describe(c: &mut RawClient, group_id: &str) -> (String, Vec<String>) {
    use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
    let d = c.call(
        &DescribeGroupsRequest::default().with_groups(vec![group(group_id)]),
        5,
    );
    let g = &d.groups[0];
    (
        g.group_state.to_string(),
        g.members.iter().map(|m| m.member_id.to_string()).collect(),
    )
}

/// Bad input of the issue, each answered with Kafka's code while the group
/// (state, members, generation, committed offsets) stays as it was.
#[test]
fn bad_commits_and_group_ids_leave_the_group_unchanged() {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    let mut server = TestServer::start_with(FAST);
    let mut c = server.connect();
    assert_eq!(c.create_topic("raw", 1), 0);
    let me = join(&mut c, "g2", "", 10_000).member_id.to_string();
    let r = join(&mut c, "g2", &me, 10_000);
    assert_eq!((r.error_code, r.generation_id), (0, 1), "{r:?}");
    let sync = c.call(
        &SyncGroupRequest::default()
            .with_group_id(group("g2"))
            .with_generation_id(1)
            .with_member_id(s(&me))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&me))
                .with_assignment(Bytes::from_static(b"a"))]),
        3,
    );
    assert_eq!(sync.error_code, 0);
    assert_eq!(commit_to(&mut c, "g2", 1, &me, "raw", "ok"), 0);
    let before = (describe(&mut c, "g2"), committed(&mut c, "g2"));
    assert_eq!(before.0, ("Stable".to_string(), vec![me.clone()]));
    assert_eq!(before.1, (0, 99, Some("ok".to_string())));

    // Metadata over offset.metadata.max.bytes (4096).
    let big = "x".repeat(4097);
    assert_eq!(
        commit_to(&mut c, "g2", 1, &me, "raw", &big),
        OFFSET_METADATA_TOO_LARGE
    );
    // A topic that does not exist.
    assert_eq!(
        commit_to(&mut c, "g2", 1, &me, "no-such-topic", "m"),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // Unknown member, stale generation.
    assert_eq!(
        commit_to(&mut c, "g2", 1, "stranger", "raw", "m"),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        commit_to(&mut c, "g2", 0, &me, "raw", "m"),
        ILLEGAL_GENERATION
    );
    // Empty group ids.
    assert_eq!(commit_to(&mut c, "", -1, "", "raw", "m"), INVALID_GROUP_ID);
    let hb = c.call(
        &HeartbeatRequest::default()
            .with_group_id(group(""))
            .with_generation_id(1)
            .with_member_id(s(&me)),
        3,
    );
    assert_eq!(hb.error_code, INVALID_GROUP_ID);
    let sync = c.call(
        &SyncGroupRequest::default()
            .with_group_id(group(""))
            .with_generation_id(1)
            .with_member_id(s(&me)),
        3,
    );
    assert_eq!(sync.error_code, INVALID_GROUP_ID);
    use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
    let leave = c.call(
        &LeaveGroupRequest::default()
            .with_group_id(group(""))
            .with_members(vec![MemberIdentity::default().with_member_id(s(&me))]),
        4,
    );
    assert_eq!(leave.error_code, INVALID_GROUP_ID);

    let after = (describe(&mut c, "g2"), committed(&mut c, "g2"));
    assert_eq!(before, after, "bad input changed the group");
    server.assert_healthy();
}

/// KIP-848 ConsumerGroupHeartbeat bad input: Kafka's codes, group unchanged.
#[test]
fn bad_consumer_group_heartbeats_get_kafkas_error_codes() {
    use kafka_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
    use kafka_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
    const INVALID_REQUEST: i16 = 42;
    const UNSUPPORTED_ASSIGNOR: i16 = 112;
    const FENCED_MEMBER_EPOCH: i16 = 110;
    const STALE_MEMBER_EPOCH: i16 = 113;
    let mut server = TestServer::start_with(FAST);
    let mut c = server.connect();
    assert_eq!(c.create_topic("raw", 3), 0);
    let hb = |g: &str, member: &str, epoch: i32| {
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group(g))
            .with_member_id(s(member))
            .with_member_epoch(epoch);
        if epoch == 0 {
            req = req
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![topic_name("raw")]))
                .with_topic_partitions(Some(vec![]));
        }
        req
    };
    let join = c.call(&hb("cg", "m-1", 0), 1);
    assert_eq!((join.error_code, join.member_epoch), (0, 1), "{join:?}");
    let parts: usize = join
        .assignment
        .as_ref()
        .map(|a| a.topic_partitions.iter().map(|t| t.partitions.len()).sum())
        .unwrap_or(0);
    assert_eq!(parts, 3);

    assert_eq!(c.call(&hb("", "m-1", 1), 1).error_code, INVALID_REQUEST);
    assert_eq!(
        c.call(&hb("cg", "stranger", 1), 1).error_code,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.call(&hb("cg", "m-1", 5), 1).error_code,
        FENCED_MEMBER_EPOCH
    );
    let bad_assignor = hb("cg", "m-2", 0).with_server_assignor(Some(s("nope")));
    assert_eq!(c.call(&bad_assignor, 1).error_code, UNSUPPORTED_ASSIGNOR);
    let no_subscription = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group("cg"))
        .with_member_id(s("m-3"))
        .with_member_epoch(0);
    assert_eq!(c.call(&no_subscription, 1).error_code, INVALID_REQUEST);
    // A commit with a member epoch ahead of the member's.
    let commit = OffsetCommitRequest::default()
        .with_group_id(group("cg"))
        .with_generation_id_or_member_epoch(7)
        .with_member_id(s("m-1"))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name("raw"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    assert_eq!(
        c.call(&commit, 9).topics[0].partitions[0].error_code,
        STALE_MEMBER_EPOCH
    );
    let ok = commit.clone().with_generation_id_or_member_epoch(1);
    assert_eq!(c.call(&ok, 9).topics[0].partitions[0].error_code, 0);

    // Still one member at epoch 1 with all three partitions.
    let d = c.call(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group("cg")]),
        1,
    );
    let g = &d.groups[0];
    assert_eq!(
        (g.error_code, g.group_state.as_str(), g.group_epoch),
        (0, "Stable", 1)
    );
    assert_eq!(g.members.len(), 1);
    assert_eq!(
        (g.members[0].member_id.as_str(), g.members[0].member_epoch),
        ("m-1", 1)
    );
    // Leaving empties the group.
    let leave = c.call(&hb("cg", "m-1", -1), 1);
    assert_eq!((leave.error_code, leave.member_epoch), (0, -1));
    server.assert_healthy();
}
