//! The metadata quorum behind a real `strom server`: DescribeQuorum and
//! `strom cluster quorum` show the single voter leading with its high
//! watermark moving as metadata is written; topics acknowledged before a
//! SIGKILL survive it; an old JSON metadata image is imported into the log.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{record_batch, topic_name, wait_for, RawClient, TestServer, NODE_ID};
use kafka_protocol::messages::describe_quorum_request::{
    DescribeQuorumRequest, PartitionData, TopicData,
};
use kafka_protocol::messages::describe_quorum_response::PartitionData as QuorumPartition;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use serde_json::Value;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;

fn describe_quorum(
    c: &mut RawClient,
    topic: &str,
    partition: i32,
    version: i16,
) -> QuorumPartition {
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(topic))
        .with_partitions(vec![
            PartitionData::default().with_partition_index(partition)
        ])]);
    let resp = c.call(&req, version);
    assert_eq!(resp.error_code, NONE, "{resp:?}");
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    resp.topics[0].partitions[0].clone()
}

fn strom_json(server: &TestServer, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(args)
        .args(["--format", "json"])
        .env("STROM_BROKERS", server.bootstrap())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run strom");
    assert!(
        out.status.success(),
        "strom {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// Topic name → (id, partition count) from Metadata v12.
fn topics(c: &mut RawClient) -> Vec<(String, String, usize)> {
    let resp = c.call(&MetadataRequest::default().with_topics(None), 12);
    resp.topics
        .into_iter()
        .map(|t| {
            (
                t.name.unwrap().to_string(),
                t.topic_id.to_string(),
                t.partitions.len(),
            )
        })
        .collect()
}

#[test]
fn describe_quorum_shows_this_node_leading_and_the_high_watermark_advancing() {
    let server = TestServer::start();
    let mut c = server.connect();
    for v in 0..=2 {
        let p = describe_quorum(&mut c, "__cluster_metadata", 0, v);
        assert_eq!(p.error_code, NONE, "v{v}: {p:?}");
        assert_eq!(p.leader_id.0, NODE_ID, "v{v}");
        assert!(p.leader_epoch >= 1, "v{v}: {p:?}");
        assert_eq!(p.current_voters.len(), 1, "v{v}: {p:?}");
        assert_eq!(p.current_voters[0].replica_id.0, NODE_ID);
        assert!(p.observers.is_empty());
    }
    let before = describe_quorum(&mut c, "__cluster_metadata", 0, 1);
    assert_eq!(c.create_topic("q1", 3), NONE);
    let after = describe_quorum(&mut c, "__cluster_metadata", 0, 1);
    assert!(
        after.high_watermark > before.high_watermark,
        "HW {} -> {}",
        before.high_watermark,
        after.high_watermark
    );
    // The leader's own log end is at least the committed end.
    assert!(after.current_voters[0].log_end_offset >= after.high_watermark);
    assert!(after.current_voters[0].last_caught_up_timestamp > 0);

    // Only __cluster_metadata-0 exists for DescribeQuorum.
    assert_eq!(
        describe_quorum(&mut c, "__cluster_metadata", 1, 1).error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        describe_quorum(&mut c, "q1", 0, 1).error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // The metadata log's name is not a topic one can create (Kafka: INVALID_REQUEST).
    assert_eq!(c.create_topic("__cluster_metadata", 1), INVALID_REQUEST);

    let q = strom_json(&server, &["cluster", "quorum"]);
    assert_eq!(q["leader_id"], NODE_ID, "{q}");
    let hw = q["high_watermark"].as_i64().unwrap();
    assert!(hw >= after.high_watermark, "{q}");
    let r = &q["replicas"][0];
    assert_eq!(
        (r["id"].as_i64(), r["role"].as_str()),
        (Some(NODE_ID as i64), Some("leader")),
        "{q}"
    );
    assert_eq!(r["lag"], 0, "{q}");
    assert_eq!(c.create_topic("q2", 1), NONE);
    let q2 = strom_json(&server, &["cluster", "quorum"]);
    assert!(q2["high_watermark"].as_i64().unwrap() > hw, "{q} then {q2}");
}

#[test]
fn sigkill_during_topic_creation_loses_no_acknowledged_topic() {
    let mut server = TestServer::start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let creator = {
        let mut c = server.connect();
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let name = format!("t{i}");
                // A connection reset from the kill ends the loop.
                match c.try_call(
                    &kafka_protocol::messages::CreateTopicsRequest::default()
                        .with_topics(vec![
                            kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                                .with_name(topic_name(&name))
                                .with_num_partitions(2)
                                .with_replication_factor(1),
                        ])
                        .with_timeout_ms(10_000),
                    7,
                ) {
                    Ok(r) if r.topics[0].error_code == NONE => acked.lock().unwrap().push(name),
                    Ok(r) => panic!("create {name}: {r:?}"),
                    Err(_) => return,
                }
            }
        })
    };
    wait_for(Duration::from_secs(60), "20 topics created", || {
        (acked.lock().unwrap().len() >= 20).then_some(())
    });
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    creator.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    server.restart();
    let mut c = server.connect();
    let present = topics(&mut c);
    for name in &acked {
        let t = present.iter().find(|t| &t.0 == name);
        assert!(
            t.is_some_and(|t| t.2 == 2),
            "acknowledged topic {name} lost: {present:?}"
        );
    }
    // And the log goes on accepting metadata after the crash.
    assert_eq!(c.create_topic("after-crash", 1), NONE);
}

/// An old data dir: topics, configs, ACLs, SCRAM users and quotas in
/// `__cluster_metadata/image.json`, partition logs beside it.
#[test]
fn an_old_json_metadata_image_is_imported_into_the_log() {
    let mut server = TestServer::start_with(&[
        (
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ),
        ("super.users", "User:ANONYMOUS"),
    ]);
    let mut c = server.connect();
    assert_eq!(c.create_topic("legacy", 2), NONE);
    assert_eq!(
        c.produce(
            "legacy",
            1,
            record_batch(&[(b"k", b"v"), (b"k2", b"v2")]),
            -1
        )
        .error_code,
        NONE
    );
    let (_, id, _) = topics(&mut c)
        .into_iter()
        .find(|t| t.0 == "legacy")
        .unwrap();
    drop(c);
    server.terminate();

    // What an older Strom kept: no metadata log, one JSON image.
    let data = server.data_dir();
    std::fs::remove_dir_all(data.join("__cluster_metadata-0")).unwrap();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let old = serde_json::json!({
        "version": 1,
        "cluster_id": "q7L2m4RkS8WwqWnIhXg3Aw",
        "client_quotas": [
            {"entity": {"user": {"Name": "alice"}, "client_id": null},
             "values": {"producer_byte_rate": 1024.0}}
        ],
        "topics": [{
            "name": "legacy", "id": id, "partitions": 2,
            "replication_factor": 1, "configs": {"retention.ms": "123456"},
            "leader_epoch": 0
        }],
        "acls": [{
            "pattern": {"resource_type": "TOPIC", "name": "legacy", "pattern_type": "LITERAL"},
            "entry": {"principal": "User:alice", "host": "*", "operation": "READ", "permission": "ALLOW"}
        }],
        "scram_credentials": {"alice": {"SCRAM-SHA-256": {
            "salt": "c2FsdA==", "stored_key": key, "server_key": key, "iterations": 8192
        }}}
    });
    let file = data.join("__cluster_metadata/image.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    server.restart();

    assert!(!file.exists(), "image.json is renamed aside after import");
    assert!(data.join("__cluster_metadata/image.json.migrated").exists());
    let check = |server: &TestServer| {
        let mut c = server.connect();
        let t = topics(&mut c);
        assert!(
            t.iter().any(|t| t.0 == "legacy" && t.1 == id && t.2 == 2),
            "{t:?}"
        );
        assert_eq!(
            c.latest_offset("legacy", 1),
            2,
            "the partition's data is still there"
        );
        let cfg = strom_json(server, &["topic", "describe", "legacy"]);
        assert!(
            cfg.to_string().contains("123456"),
            "retention.ms kept: {cfg}"
        );
        let acls = strom_json(server, &["acl", "list"]);
        assert!(acls.to_string().contains("User:alice"), "ACL kept: {acls}");
        let users = strom_json(server, &["user", "list", "alice"]);
        assert!(
            users.to_string().contains("8192"),
            "SCRAM user kept: {users}"
        );
        let quotas = strom_json(server, &["quota", "describe"]);
        assert!(quotas.to_string().contains("1024"), "quota kept: {quotas}");
    };
    check(&server);
    // Imported once: a restart reads the log, the renamed file is ignored.
    server.terminate();
    server.restart();
    check(&server);
    let mut c = server.connect();
    let p = describe_quorum(&mut c, "__cluster_metadata", 0, 0);
    assert_eq!(p.leader_id.0, NODE_ID);
}
