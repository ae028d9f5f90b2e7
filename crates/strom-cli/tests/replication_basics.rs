//! Replication groundwork a single leader must already get right (issue 7):
//! OffsetForLeaderEpoch answered from the leader-epoch cache, and
//! `min.insync.replicas` refusing `acks=all` writes the ISR cannot cover —
//! on the wire and through librdkafka.

mod common;

use std::time::Duration;

use common::*;
use kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::OffsetForLeaderEpochRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_CONFIG: i16 = 40;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// Moves every partition of `topic` to leader epoch `epoch` the way a
/// cluster does: each clean restart is a controlled shutdown (the partitions
/// lose their leader: epoch + 1) and a re-election once the broker is back
/// (epoch + 1). Waits until partition 0 leads again at exactly `epoch`.
fn move_leader_epoch(server: &mut TestServer, topic: &str, epoch: i32) {
    use kafka_protocol::messages::MetadataRequest;
    let current = |server: &TestServer| {
        let mut c = server.connect();
        let md = c.call(&MetadataRequest::default().with_topics(None), 12);
        let t = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
            .expect("topic in metadata")
            .clone();
        t.partitions
            .iter()
            .all(|p| p.leader_id.0 >= 0)
            .then(|| t.partitions[0].leader_epoch)
    };
    loop {
        let now = wait_for(Duration::from_secs(20), "partition leaders", || {
            current(server)
        });
        if now >= epoch {
            assert_eq!(now, epoch, "leader epoch overshot");
            return;
        }
        server.terminate();
        server.restart();
    }
}

/// One OffsetForLeaderEpoch partition query: (topic, partition,
/// current_leader_epoch, leader_epoch).
fn epoch_end(
    client: &mut RawClient,
    version: i16,
    replica_id: i32,
    q: (&str, i32, i32, i32),
) -> EpochEndOffset {
    let (topic, partition, current, requested) = q;
    let mut req =
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(requested)])]);
    if version >= 3 {
        req = req.with_replica_id(replica_id.into());
    }
    let resp = client.call(&req, version);
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    assert_eq!(resp.topics[0].topic.0.as_str(), topic);
    assert_eq!(resp.topics[0].partitions.len(), 1, "{resp:?}");
    let p = resp.topics[0].partitions[0].clone();
    assert_eq!(p.partition, partition);
    p
}

/// (error, leader_epoch, end_offset) of a consumer's (replica -1) v4 query.
fn ask(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    current: i32,
    requested: i32,
) -> (i16, i32, i64) {
    let p = epoch_end(client, 4, -1, (topic, partition, current, requested));
    (p.error_code, p.leader_epoch, p.end_offset)
}

fn batch_of(n: usize) -> bytes::Bytes {
    let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    record_batch(&refs)
}

/// CreateTopics v7 of one topic with one config; returns the error code.
fn create_with_config(client: &mut RawClient, name: &str, key: &str, value: &str) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string())))])])
        .with_timeout_ms(10_000);
    let resp = client.call(&req, CREATE_TOPICS_V);
    resp.topics[0].error_code
}

#[test]
fn offset_for_leader_epoch_answers_from_the_epoch_cache() {
    let mut server = TestServer::start();
    let mut c = server.connect();
    assert_eq!(c.create_topic("ofle", 2), NONE);
    for _ in 0..3 {
        assert_eq!(c.produce("ofle", 0, batch_of(2), -1).error_code, NONE);
    }
    assert_eq!(c.latest_offset("ofle", 0), 6);

    // epoch 0 is current: it ends at the log end offset, in every version
    // and for a follower's query (replica id ≥ 0) as for a consumer's
    for (version, replica) in [(2, -1), (3, -1), (3, 7), (4, -1), (4, 7)] {
        let p = epoch_end(&mut c, version, replica, ("ofle", 0, 0, 0));
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            (NONE, 0, 6),
            "v{version} replica {replica}"
        );
    }
    assert_eq!(
        ask(&mut c, "ofle", 0, -1, 0),
        (NONE, 0, 6),
        "no current epoch given"
    );
    // above every known epoch: UNDEFINED_EPOCH_OFFSET
    assert_eq!(ask(&mut c, "ofle", 0, -1, 1), (NONE, -1, -1));
    // an empty partition: becoming leader started epoch 0 at offset 0
    // (Kafka's makeLeader assigns the epoch's start offset)
    assert_eq!(ask(&mut c, "ofle", 1, 0, 0), (NONE, 0, 0));
    // a sender that knows of a newer leader epoch than this broker
    assert_eq!(ask(&mut c, "ofle", 0, 1, 0).0, UNKNOWN_LEADER_EPOCH);
    assert_eq!(ask(&mut c, "ofle", 0, 1, 0).2, -1);
    // unknown topic or partition
    assert_eq!(
        ask(&mut c, "no-such-topic", 0, -1, 0).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(ask(&mut c, "ofle", 2, -1, 0).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(ask(&mut c, "ofle", -1, -1, 0).0, UNKNOWN_TOPIC_OR_PARTITION);
    drop(c);

    // Leaders do not move on one node yet: move this one to epoch 2.
    move_leader_epoch(&mut server, "ofle", 2);

    let mut c = server.connect();
    assert_eq!(c.produce("ofle", 0, batch_of(2), -1).error_code, NONE);
    assert_eq!(c.latest_offset("ofle", 0), 8);
    // epoch 0 now ends where epoch 2 starts; 1 was never used: the largest
    // epoch below it (0) and the same end
    assert_eq!(ask(&mut c, "ofle", 0, 2, 0), (NONE, 0, 6));
    assert_eq!(ask(&mut c, "ofle", 0, 2, 1), (NONE, 0, 6));
    assert_eq!(ask(&mut c, "ofle", 0, 2, 2), (NONE, 2, 8));
    assert_eq!(ask(&mut c, "ofle", 0, 2, 3), (NONE, -1, -1));
    // the cache survived the restart, and a query with a stale current epoch is fenced
    assert_eq!(ask(&mut c, "ofle", 0, 0, 0).0, FENCED_LEADER_EPOCH);
    assert_eq!(ask(&mut c, "ofle", 0, 1, 2).0, FENCED_LEADER_EPOCH);
    assert_eq!(ask(&mut c, "ofle", 0, 3, 2).0, UNKNOWN_LEADER_EPOCH);
    // partition 1 never got a record in epoch 0: below its earliest epoch
    // Kafka answers the requested epoch ending at the earliest one's start
    assert_eq!(c.produce("ofle", 1, batch_of(1), 1).error_code, NONE);
    assert_eq!(ask(&mut c, "ofle", 1, 2, 0), (NONE, 0, 0));
    assert_eq!(ask(&mut c, "ofle", 1, 2, 2), (NONE, 2, 1));
    server.assert_healthy();
}

#[test]
fn min_insync_replicas_refuses_acks_all_and_appends_nothing() {
    let mut server = TestServer::start();
    let mut c = server.connect();
    // validated: at least 1
    assert_eq!(
        create_with_config(&mut c, "misr-bad", "min.insync.replicas", "0"),
        INVALID_CONFIG
    );
    assert_eq!(
        create_with_config(&mut c, "misr-bad", "min.insync.replicas", "two"),
        INVALID_CONFIG
    );
    assert_eq!(
        c.create_topic("misr-bad", 1),
        NONE,
        "nothing of the refused topic was left behind"
    );

    assert_eq!(
        create_with_config(&mut c, "misr", "min.insync.replicas", "2"),
        NONE
    );
    let r = c.produce("misr", 0, batch_of(3), -1);
    assert_eq!(r.error_code, NOT_ENOUGH_REPLICAS, "{r:?}");
    assert_eq!(r.base_offset, -1);
    let msg = r
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    assert!(msg.contains("min.isr requirement of 2"), "{msg}");
    assert_eq!(
        c.latest_offset("misr", 0),
        0,
        "a refused acks=all write appended nothing"
    );
    assert_eq!(
        c.fetch("misr", 0, 0, 0, 1).records.map_or(0, |r| r.len()),
        0
    );

    // acks=1 and acks=0 do not wait for the ISR (Kafka)
    let r = c.produce("misr", 0, batch_of(3), 1);
    assert_eq!((r.error_code, r.base_offset), (NONE, 0));
    c.send(&produce_request(&[("misr", 0, batch_of(2))], 0), PRODUCE_V);
    wait_for(Duration::from_secs(10), "the acks=0 write", || {
        (c.latest_offset("misr", 0) == 5).then_some(())
    });
    assert_eq!(
        c.produce("misr", 0, batch_of(1), -1).error_code,
        NOT_ENOUGH_REPLICAS
    );
    assert_eq!(c.latest_offset("misr", 0), 5);

    // the default (1) lets acks=all through on one node
    assert_eq!(c.produce("misr-bad", 0, batch_of(1), -1).error_code, NONE);
    server.assert_healthy();
}

#[test]
fn broker_default_min_insync_replicas_applies_to_new_topics() {
    let mut server = TestServer::start_with(&[("min.insync.replicas", "2")]);
    let mut c = server.connect();
    assert_eq!(c.create_topic("dflt", 1), NONE);
    assert_eq!(
        c.produce("dflt", 0, batch_of(1), -1).error_code,
        NOT_ENOUGH_REPLICAS
    );
    // a topic override below the broker default wins
    assert_eq!(
        create_with_config(&mut c, "over", "min.insync.replicas", "1"),
        NONE
    );
    assert_eq!(c.produce("over", 0, batch_of(1), -1).error_code, NONE);
    server.assert_healthy();
}

#[test]
fn rdkafka_acks_all_reports_not_enough_replicas() {
    let mut server = TestServer::start();
    let mut c = server.connect();
    assert_eq!(
        create_with_config(&mut c, "misr-rd", "min.insync.replicas", "2"),
        NONE
    );
    let producer = |acks: &str, retries: &str| -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", server.bootstrap())
            .set("broker.address.family", "v4")
            .set("acks", acks)
            .set("message.send.max.retries", retries)
            .set("message.timeout.ms", "3000")
            .set("retry.backoff.ms", "100")
            .create()
            .expect("producer")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |p: &FutureProducer, payload: &str| {
        rt.block_on(p.send(
            FutureRecord::to("misr-rd").key("k").payload(payload),
            Duration::from_secs(10),
        ))
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
    };

    // Without retries the delivery report carries the broker's error.
    match send(&producer("all", "0"), "refused") {
        Err(KafkaError::MessageProduction(code)) => {
            assert_eq!(code, RDKafkaErrorCode::NotEnoughReplicas)
        }
        other => panic!("acks=all to a min.insync.replicas=2 topic: {other:?}"),
    }
    // With retries librdkafka treats it as retriable (a fatal error would be
    // reported at once, with its code): it retries until the message times out.
    match send(&producer("all", "1000"), "refused again") {
        Err(KafkaError::MessageProduction(code)) => {
            assert_eq!(code, RDKafkaErrorCode::MessageTimedOut)
        }
        other => panic!("acks=all with retries: {other:?}"),
    }
    assert_eq!(
        c.latest_offset("misr-rd", 0),
        0,
        "no refused attempt appended"
    );

    let delivered =
        send(&producer("1", "0"), "accepted").expect("acks=1 is not held to min.insync.replicas");
    assert_eq!(delivered, (0, 0));
    assert_eq!(c.latest_offset("misr-rd", 0), 1);
    server.assert_healthy();
}

/// The `_count` of the request-time histogram of `api` on the server's
/// admin listener (/metrics), found from the last start's log line.
fn requests_handled(server: &TestServer, api: &str) -> u64 {
    // the log may be coloured: drop ANSI escapes (ESC [ … m) first
    let mut log = String::new();
    let mut in_escape = false;
    for ch in server.stderr().chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => log.push(c),
        }
    }
    let admin = log
        .lines()
        .rev()
        .find_map(|l| {
            l.split("admin listener (/metrics, /health) address=")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .expect("admin listener address in the server log")
        .to_string();
    let mut s = std::net::TcpStream::connect(&admin).expect("connect admin listener");
    use std::io::{Read, Write};
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let key = format!("kafka_network_requestmetrics_totaltimems_count{{request=\"{api}\"}}");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// KIP-320 with librdkafka: after the partition's leader epoch moves, a
/// consumer validates its position with OffsetForLeaderEpoch and, finding
/// no truncation, goes on consuming where it was.
#[test]
fn rdkafka_consumer_validates_its_position_after_an_epoch_change() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    let mut server = TestServer::start();
    let mut c = server.connect();
    assert_eq!(c.create_topic("kip320", 1), NONE);
    assert_eq!(c.produce("kip320", 0, batch_of(6), -1).error_code, NONE);
    drop(c);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", "kip320")
        .set("enable.auto.commit", "false")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "200")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("kip320", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut offsets = Vec::new();
    let consume_until = |want: i64, offsets: &mut Vec<i64>| {
        wait_for(Duration::from_secs(30), "records", || {
            // transport errors while the broker restarts are expected
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                offsets.push(m.offset());
            }
            (offsets.last() == Some(&(want - 1))).then_some(())
        })
    };
    consume_until(6, &mut offsets);
    assert_eq!(offsets, (0..6).collect::<Vec<_>>());

    move_leader_epoch(&mut server, "kip320", 2);
    let mut c = server.connect();
    assert_eq!(c.produce("kip320", 0, batch_of(2), -1).error_code, NONE);

    consume_until(8, &mut offsets);
    assert_eq!(
        offsets,
        (0..8).collect::<Vec<_>>(),
        "no record lost or repeated"
    );
    assert!(
        requests_handled(&server, "OffsetForLeaderEpoch") >= 1,
        "librdkafka did not validate its position with OffsetForLeaderEpoch"
    );
    server.assert_healthy();
}

/// CreateAcls v3 of one LITERAL ALLOW binding for `principal` on any host.
fn allow(client: &mut RawClient, resource_type: i8, name: &str, principal: &str, operation: i8) {
    use kafka_protocol::messages::create_acls_request::{AclCreation, CreateAclsRequest};
    let req = CreateAclsRequest::default().with_creations(vec![AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_resource_pattern_type(3) // LITERAL
        .with_principal(StrBytes::from_string(principal.to_string()))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(operation)
        .with_permission_type(3)]); // ALLOW
    let resp = client.call(&req, 3);
    assert_eq!(resp.results[0].error_code, NONE, "{resp:?}");
}

/// Kafka's rule: ClusterAction on the cluster covers every topic; without
/// it, Describe on each topic (a follower's replica id changes nothing).
#[test]
fn offset_for_leader_epoch_authorization() {
    const TOPIC: i8 = 2;
    const CLUSTER: i8 = 4;
    const READ: i8 = 3;
    const CLUSTER_ACTION: i8 = 9;
    const ALTER: i8 = 7;
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    let mut server = TestServer::start_with(&[
        (
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ),
        ("allow.everyone.if.no.acl.found", "true"),
    ]);
    let mut c = server.connect();
    assert_eq!(c.create_topic("open", 1), NONE);
    assert_eq!(c.create_topic("closed", 1), NONE);
    assert_eq!(c.produce("closed", 0, batch_of(2), 1).error_code, NONE);
    // ACLs on the cluster (ANONYMOUS may Alter it, so it can go on adding
    // ACLs, but no longer holds ClusterAction) and on "closed" (not ours:
    // ANONYMOUS may no longer describe it)
    allow(&mut c, CLUSTER, "kafka-cluster", "User:ANONYMOUS", ALTER);
    allow(&mut c, TOPIC, "closed", "User:alice", READ);
    // an empty partition: its leader started epoch 0 at offset 0
    assert_eq!(ask(&mut c, "open", 0, -1, 0), (NONE, 0, 0));
    let denied = ask(&mut c, "closed", 0, -1, 0);
    assert_eq!(denied, (TOPIC_AUTHORIZATION_FAILED, -1, -1));
    let p = epoch_end(&mut c, 4, 2, ("closed", 0, -1, 0));
    assert_eq!(
        p.error_code, TOPIC_AUTHORIZATION_FAILED,
        "follower without ClusterAction"
    );
    // ClusterAction (what brokers hold) answers for every topic
    allow(
        &mut c,
        CLUSTER,
        "kafka-cluster",
        "User:ANONYMOUS",
        CLUSTER_ACTION,
    );
    assert_eq!(ask(&mut c, "closed", 0, -1, 0), (NONE, 0, 2));
    server.assert_healthy();
}
