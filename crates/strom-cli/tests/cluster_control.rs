//! The broker control plane on three real `strom server` processes sharing
//! one metadata quorum (the test-cluster config of issue 7): every broker
//! registers and every node's Metadata lists all three with one cluster id;
//! CreateTopics on one node places replicas on three brokers and is visible
//! on the others; a replication factor above the live brokers is refused
//! with INVALID_REPLICATION_FACTOR; FindCoordinator answers the leader of
//! the group's `__consumer_offsets` partition, from any node; producer ids
//! come from blocks the controller hands each broker, never twice; a
//! transaction over partitions led by all three brokers commits and aborts
//! (markers sent to the other leaders) as an `rdkafka` client sees it, and
//! a transactional copy commits its offsets through a group coordinator on
//! another broker than its transaction coordinator;
//! SIGTERM of a group's coordinator is a controlled shutdown: its
//! leaderships move before it exits and the new coordinator serves the
//! group's committed offsets; a broker hosts logs (directories, DescribeLogDirs
//! entries) only for the partitions it replicates.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_for, RawClient};
use kafka_protocol::messages::{
    FindCoordinatorRequest, InitProducerIdRequest, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

const NONE: i16 = 0;
const INVALID_REPLICATION_FACTOR: i16 = 38;

/// One node of the test cluster: broker and controller (combined mode),
/// or broker only (an observer of the metadata log).
struct Node {
    id: i32,
    voter: bool,
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("server.stderr")
    }

    fn spawn(&mut self, voters: &str) {
        let config = self.dir.path().join("server.properties");
        let props = format!(
            "node.id={id}\n\
             process.roles={roles}\n\
             listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{p}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.quorum.voters={voters}\n\
             log.dirs={dir}\n\
             strom.admin.listener=127.0.0.1:0\n\
             broker.session.timeout.ms=3000\n\
             broker.heartbeat.interval.ms=500\n\
             offsets.topic.num.partitions=5\n\
             transaction.state.log.num.partitions=5\n",
            id = self.id,
            roles = if self.voter {
                "broker,controller"
            } else {
                "broker"
            },
            p = self.port,
            c = self.controller_port,
            dir = self.dir.path().join("data").display(),
        );
        std::fs::write(&config, props).expect("write server.properties");
        let stderr = File::create(self.stderr_path()).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_strom"))
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn strom server");
        self.child = Some(child);
    }

    fn connect(&self) -> RawClient {
        RawClient::connect(self.addr())
    }

    fn metadata(&self, topics: Option<&[&str]>) -> MetadataResponse {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(common::topic_name(t)))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.connect().call(&req, 12)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "--- node {} stderr (last 60 lines) ---\n{tail}\n--- end ---",
                self.id
            );
        }
    }
}

/// Starts three combined-mode nodes together and waits until each answers.
fn start_cluster() -> Vec<Node> {
    start_nodes(3, 0)
}

/// Starts `voters` combined-mode nodes (ids 1..) and `brokers` broker-only
/// ones (the following ids) together; waits until each answers.
fn start_nodes(voters: i32, brokers: i32) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=voters + brokers)
        .map(|id| Node {
            id,
            voter: id <= voters,
            dir: tempfile::Builder::new()
                .prefix("strom-cluster-")
                .tempdir()
                .unwrap(),
            port: free_port(),
            controller_port: free_port(),
            child: None,
        })
        .collect();
    let voters = nodes
        .iter()
        .filter(|n| n.voter)
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
        .collect::<Vec<_>>()
        .join(",");
    for n in &mut nodes {
        n.spawn(&voters);
    }
    wait_ready(&mut nodes);
    nodes
}

/// The `controller.quorum.voters` of these nodes.
fn voters_of(nodes: &[Node]) -> String {
    nodes
        .iter()
        .filter(|n| n.voter)
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Waits until every node answers ApiVersions (it serves once registered).
fn wait_ready(nodes: &mut [Node]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in nodes.iter_mut() {
        loop {
            if let Some(status) = n.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("node {} exited during start-up: {status}", n.id);
            }
            let ready = TcpStream::connect_timeout(&n.addr(), Duration::from_millis(500))
                .ok()
                .and_then(|_| {
                    let mut c = RawClient::connect(n.addr());
                    c.set_read_timeout(Duration::from_secs(5));
                    c.try_call(&common::api_versions_request(), 3).ok()
                });
            if ready.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "node {} not ready", n.id);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn broker_ids(md: &MetadataResponse) -> Vec<i32> {
    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort();
    ids
}

/// Java's `String.hashCode` and Kafka's `partitionFor` (the coordinator's
/// placement of a group).
fn partition_for(key: &str, partitions: i32) -> i32 {
    let h = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

#[test]
fn three_brokers_register_share_topics_and_coordinators() {
    let nodes = start_cluster();

    // Every broker registers; every node lists all three, with one cluster id.
    let mut cluster_ids = Vec::new();
    for n in &nodes {
        let md = wait_for(Duration::from_secs(30), "three live brokers", || {
            let md = n.metadata(Some(&[]));
            (broker_ids(&md) == vec![1, 2, 3]).then_some(md)
        });
        for b in &md.brokers {
            let owner = nodes.iter().find(|o| o.id == b.node_id.0).unwrap();
            assert_eq!(
                (b.host.as_str(), b.port),
                ("127.0.0.1", i32::from(owner.port)),
                "broker {} advertises its PLAINTEXT listener",
                b.node_id.0
            );
        }
        assert!([1, 2, 3].contains(&md.controller_id.0), "{md:?}");
        cluster_ids.push(md.cluster_id.clone().expect("cluster id"));
    }
    assert!(
        cluster_ids.windows(2).all(|w| w[0] == w[1]),
        "{cluster_ids:?}"
    );
    for n in &nodes {
        let props = std::fs::read_to_string(n.dir.path().join("data/meta.properties")).unwrap();
        assert!(
            props.contains(&format!("cluster.id={}", cluster_ids[0])),
            "node {}: {props}",
            n.id
        );
    }

    // CreateTopics RF 3 on node 2: at once visible there, soon on node 3.
    let resp = nodes[1].connect().create_topics(&["rf3"], 3, 3, false);
    assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    let md = nodes[1].metadata(Some(&["rf3"]));
    assert_eq!(md.topics[0].error_code, NONE, "{md:?}");
    assert_eq!(md.topics[0].partitions.len(), 3);
    let md = wait_for(Duration::from_secs(10), "rf3 on node 3", || {
        let md = nodes[2].metadata(Some(&["rf3"]));
        (md.topics[0].error_code == NONE).then_some(md)
    });
    let mut leaders = Vec::new();
    for p in &md.topics[0].partitions {
        let mut replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
        replicas.sort();
        assert_eq!(replicas, vec![1, 2, 3], "{p:?}");
        assert!(replicas.contains(&p.leader_id.0), "{p:?}");
        assert_eq!(p.isr_nodes.len(), 3, "{p:?}");
        assert!(p.offline_replicas.is_empty(), "{p:?}");
        leaders.push(p.leader_id.0);
    }
    // Placement spreads the leaders (Kafka's round robin over the brokers).
    leaders.sort();
    leaders.dedup();
    assert_eq!(leaders.len(), 3, "leaders of rf3: {leaders:?}");
    // Each node hosts a log for every partition it replicates (created by
    // its image follower as the change arrives).
    for n in &nodes {
        wait_for(
            Duration::from_secs(10),
            "the rf3 logs on every node",
            || {
                (0..3)
                    .all(|p| n.dir.path().join(format!("data/rf3-{p}")).is_dir())
                    .then_some(())
            },
        );
    }

    // RF above the live brokers: refused by the controller, nothing created.
    let resp = nodes[0].connect().create_topics(&["rf4"], 1, 4, false);
    assert_eq!(
        resp.topics[0].error_code, INVALID_REPLICATION_FACTOR,
        "{resp:?}"
    );
    let md = nodes[0].metadata(Some(&["rf4"]));
    assert_ne!(md.topics[0].error_code, NONE, "{md:?}");

    // FindCoordinator from any node names the leader of the group's
    // __consumer_offsets partition (created on first use with RF 3).
    let group = "cluster-control-group";
    let find = |n: &Node| {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("cluster-control-group"))
            .with_key_type(0);
        n.connect().call(&req, 3)
    };
    let first = wait_for(Duration::from_secs(20), "a group coordinator", || {
        let r = find(&nodes[2]);
        (r.error_code == NONE).then_some(r)
    });
    let offsets = nodes[0].metadata(Some(&["__consumer_offsets"]));
    let t = &offsets.topics[0];
    assert_eq!(t.error_code, NONE, "{offsets:?}");
    assert_eq!(t.partitions.len(), 5);
    let p = partition_for(group, 5);
    let part = t
        .partitions
        .iter()
        .find(|x| x.partition_index == p)
        .unwrap();
    assert_eq!(part.replica_nodes.len(), 3, "{part:?}");
    assert_eq!(first.node_id.0, part.leader_id.0, "{first:?} vs {part:?}");
    let leader = nodes.iter().find(|n| n.id == part.leader_id.0).unwrap();
    assert_eq!(first.port, i32::from(leader.port));
    for n in &nodes {
        let r = find(n);
        assert_eq!(
            (r.error_code, r.node_id.0),
            (NONE, part.leader_id.0),
            "{r:?}"
        );
    }

    // Producer ids: every broker takes its own block from the controller.
    let mut ids = Vec::new();
    for n in &nodes {
        let mut c = n.connect();
        for _ in 0..2 {
            let req = InitProducerIdRequest::default()
                .with_transaction_timeout_ms(60_000)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            let r = c.call(&req, 4);
            assert_eq!(r.error_code, NONE, "node {}: {r:?}", n.id);
            ids.push(r.producer_id.0);
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "producer ids issued twice: {ids:?}");
}

#[test]
fn a_transaction_over_three_leaders_commits_and_aborts() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use rdkafka::Message;

    let nodes = start_cluster();
    for n in &nodes {
        wait_for(Duration::from_secs(30), "three live brokers", || {
            (broker_ids(&n.metadata(Some(&[]))) == vec![1, 2, 3]).then_some(())
        });
    }
    let resp = nodes[0].connect().create_topics(&["tx"], 3, 3, false);
    assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    let bootstrap = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    let timeout = Duration::from_secs(30);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", "cluster-tx")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    producer
        .init_transactions(timeout)
        .expect("init_transactions");
    let send_all = |what: &str| {
        for p in 0..3 {
            let value = format!("{what}-{p}");
            producer
                .send(BaseRecord::to("tx").partition(p).key("k").payload(&value))
                .expect("send");
        }
        producer.flush(timeout).expect("flush");
    };
    producer.begin_transaction().unwrap();
    send_all("committed");
    producer.commit_transaction(timeout).expect("commit");
    producer.begin_transaction().unwrap();
    send_all("aborted");
    producer.abort_transaction(timeout).expect("abort");
    producer.begin_transaction().unwrap();
    send_all("after");
    producer
        .commit_transaction(timeout)
        .expect("commit after abort");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "cluster-tx-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("tx", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    while seen.len() < 6 && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            seen.push((m.partition(), v));
        }
    }
    seen.sort();
    let want: Vec<(i32, String)> = (0..3)
        .flat_map(|p| [(p, format!("after-{p}")), (p, format!("committed-{p}"))])
        .collect();
    assert_eq!(
        seen, want,
        "read_committed sees both commits, no aborted record"
    );
}

#[test]
fn a_stopping_coordinator_hands_over_leaderships_and_committed_offsets() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::{FindCoordinatorResponse, GroupId};

    let mut nodes = start_cluster();
    for n in &nodes {
        wait_for(Duration::from_secs(30), "three live brokers", || {
            (broker_ids(&n.metadata(Some(&[]))) == vec![1, 2, 3]).then_some(())
        });
    }
    let resp = nodes[0].connect().create_topics(&["data"], 3, 3, false);
    assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    let group = "failover-group";
    let find = |n: &Node| -> FindCoordinatorResponse {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("failover-group"))
            .with_key_type(0);
        n.connect().call(&req, 3)
    };
    let coordinator = wait_for(Duration::from_secs(20), "a group coordinator", || {
        let r = find(&nodes[0]);
        (r.error_code == NONE).then_some(r.node_id.0)
    });
    // Nodes are started with ids 1..=3 in order.
    let at = |id: i32| (id - 1) as usize;
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("failover-group")))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(common::topic_name("data"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)])]);
    let r = nodes[at(coordinator)].connect().call(&commit, 8);
    assert_eq!(r.topics[0].partitions[0].error_code, NONE, "{r:?}");
    // Another broker is not the coordinator: NOT_COORDINATOR (16).
    let other = nodes.iter().find(|n| n.id != coordinator).unwrap();
    let r = other.connect().call(&commit, 8);
    assert_eq!(r.topics[0].partitions[0].error_code, 16, "{r:?}");

    // SIGTERM: a controlled shutdown, then a clean exit.
    let stopping = at(coordinator);
    let mut child = nodes[stopping].child.take().unwrap();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    let log = std::fs::read_to_string(nodes[stopping].stderr_path()).unwrap();
    assert!(log.contains("controlled shutdown complete"), "{log}");

    // The survivors: no partition led by the stopped broker, which is no
    // longer listed, and a new coordinator with the committed offset.
    let survivor = nodes.iter().find(|n| n.id != coordinator).unwrap();
    let md = wait_for(
        Duration::from_secs(20),
        "the stopped broker unlisted",
        || {
            let md = survivor.metadata(Some(&["data", "__consumer_offsets"]));
            (!broker_ids(&md).contains(&coordinator)).then_some(md)
        },
    );
    for t in &md.topics {
        for p in &t.partitions {
            assert_ne!(p.leader_id.0, coordinator, "{t:?}");
            assert!(p.leader_id.0 >= 0, "{t:?}");
        }
    }
    let next = wait_for(Duration::from_secs(20), "a new coordinator", || {
        let r = find(survivor);
        (r.error_code == NONE && r.node_id.0 != coordinator).then_some(r.node_id.0)
    });
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(StrBytes::from_static_str(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(common::topic_name("data"))
            .with_partition_indexes(vec![0])]))]);
    let r = wait_for(Duration::from_secs(20), "the committed offset", || {
        let r = nodes[at(next)].connect().call(&fetch, 8);
        (r.groups[0].error_code == NONE).then_some(r)
    });
    assert_eq!(
        r.groups[0].topics[0].partitions[0].committed_offset, 42,
        "{r:?}"
    );
}

#[test]
fn a_broker_only_node_registers_as_an_observer_and_hosts_replicas() {
    let nodes = start_nodes(3, 1);
    let four = &nodes[3];
    let md = wait_for(Duration::from_secs(30), "four live brokers", || {
        let md = four.metadata(Some(&[]));
        (broker_ids(&md) == vec![1, 2, 3, 4]).then_some(md)
    });
    let voter = nodes[0].metadata(Some(&[]));
    assert_eq!(md.cluster_id, voter.cluster_id);
    let props = std::fs::read_to_string(four.dir.path().join("data/meta.properties")).unwrap();
    assert!(
        props.contains(&format!("cluster.id={}", voter.cluster_id.clone().unwrap())),
        "{props}"
    );

    // Created on the broker-only node (forwarded to the controller), with
    // a replica on every broker.
    let resp = four.connect().create_topics(&["four"], 2, 4, false);
    assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    let md = four.metadata(Some(&["four"]));
    for p in &md.topics[0].partitions {
        assert_eq!(p.replica_nodes.len(), 4, "{p:?}");
    }
    for n in &nodes {
        wait_for(Duration::from_secs(10), "the replica logs", || {
            (0..2)
                .all(|p| n.dir.path().join(format!("data/four-{p}")).is_dir())
                .then_some(())
        });
    }

    // Deleted from the broker-only node: every broker drops its logs.
    let req = kafka_protocol::messages::DeleteTopicsRequest::default()
        .with_topic_names(vec![common::topic_name("four")])
        .with_timeout_ms(10_000);
    let r = four.connect().call(&req, 4);
    assert_eq!(r.responses[0].error_code, NONE, "{r:?}");
    for n in &nodes {
        wait_for(Duration::from_secs(10), "the replica logs deleted", || {
            (0..2)
                .all(|p| !n.dir.path().join(format!("data/four-{p}")).exists())
                .then_some(())
        });
        let md = n.metadata(Some(&["four"]));
        assert_ne!(md.topics[0].error_code, NONE, "node {}: {md:?}", n.id);
    }
}

#[test]
fn all_nodes_killed_and_restarted_at_once_come_back_with_their_topics() {
    let mut nodes = start_cluster();
    for n in &nodes {
        wait_for(Duration::from_secs(30), "three live brokers", || {
            (broker_ids(&n.metadata(Some(&[]))) == vec![1, 2, 3]).then_some(())
        });
    }
    let resp = nodes[2].connect().create_topics(&["survivor"], 3, 3, false);
    assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    let cluster_id = nodes[0].metadata(Some(&[])).cluster_id;
    for n in &mut nodes {
        let mut c = n.child.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
    let voters = voters_of(&nodes);
    for n in &mut nodes {
        n.spawn(&voters);
    }
    wait_ready(&mut nodes);
    for n in &nodes {
        let md = wait_for(Duration::from_secs(30), "leaders after the restart", || {
            let md = n.metadata(Some(&["survivor"]));
            (broker_ids(&md) == vec![1, 2, 3]
                && md.topics[0].error_code == NONE
                && md.topics[0].partitions.iter().all(|p| p.leader_id.0 >= 0))
            .then_some(md)
        });
        assert_eq!(md.cluster_id, cluster_id, "node {}", n.id);
        assert_eq!(md.topics[0].partitions.len(), 3);
    }
}

#[test]
fn a_transactional_copy_commits_offsets_through_another_brokers_group_coordinator() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use rdkafka::Message;

    let nodes = start_cluster();
    for n in &nodes {
        wait_for(Duration::from_secs(30), "three live brokers", || {
            (broker_ids(&n.metadata(Some(&[]))) == vec![1, 2, 3]).then_some(())
        });
    }
    for t in ["src", "dst"] {
        let resp = nodes[0].connect().create_topics(&[t], 1, 3, false);
        assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    }
    let coordinator = |key: &str, key_type: i8| {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(key.to_string()))
            .with_key_type(key_type);
        wait_for(Duration::from_secs(20), "a coordinator", || {
            let r = nodes[0].connect().call(&req, 3);
            (r.error_code == NONE).then_some(r.node_id.0)
        })
    };
    let tid = "copy-tx";
    let txn_coordinator = coordinator(tid, 1);
    let group = (0..50)
        .map(|i| format!("copy-group-{i}"))
        .find(|g| coordinator(g, 0) != txn_coordinator)
        .expect("a group coordinated elsewhere");

    let bootstrap = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    let timeout = Duration::from_secs(30);
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..10 {
        let v = format!("v{i}");
        plain
            .send(BaseRecord::to("src").partition(0).key("k").payload(&v))
            .unwrap();
    }
    plain.flush(timeout).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("src", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + timeout;
    while values.len() < 10 && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            values.push(m.unwrap().payload().unwrap().to_vec());
        }
    }
    assert_eq!(values.len(), 10);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", tid)
        .create()
        .unwrap();
    producer.init_transactions(timeout).unwrap();
    producer.begin_transaction().unwrap();
    for v in &values {
        producer
            .send(BaseRecord::to("dst").partition(0).key("k").payload(v))
            .unwrap();
    }
    let position = consumer.position().unwrap();
    let meta = consumer.group_metadata().expect("group metadata");
    producer
        .send_offsets_to_transaction(&position, &meta, timeout)
        .expect("offsets through the group coordinator");
    producer.commit_transaction(timeout).expect("commit");

    let committed = consumer.committed(timeout).unwrap();
    let offset = committed.find_partition("src", 0).unwrap().offset();
    assert_eq!(offset, Offset::Offset(10), "group {group}");
}

/// A broker hosts only the partitions it replicates: with an RF 1 topic of
/// six partitions spread over three brokers, each node's data dir holds a
/// directory for its own partitions and none for the others, DescribeLogDirs
/// lists only those, produce and fetch work on every leader, and another
/// broker answers NOT_LEADER_OR_FOLLOWER for a partition it does not host.
#[test]
fn a_broker_creates_logs_only_for_the_partitions_it_replicates() {
    use kafka_protocol::messages::DescribeLogDirsRequest;
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let mut nodes = start_cluster();
    for n in &nodes {
        wait_for(Duration::from_secs(30), "three live brokers", || {
            (broker_ids(&n.metadata(Some(&[]))) == vec![1, 2, 3]).then_some(())
        });
    }
    let resp = nodes[0].connect().create_topics(&["rf1"], 6, 1, false);
    assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    let md = nodes[0].metadata(Some(&["rf1"]));
    let leaders: Vec<i32> = {
        let mut parts = md.topics[0].partitions.clone();
        parts.sort_by_key(|p| p.partition_index);
        parts.iter().map(|p| p.leader_id.0).collect()
    };
    assert_eq!(leaders.len(), 6, "{md:?}");
    for n in &nodes {
        assert!(
            leaders.contains(&n.id),
            "node {} leads none: {leaders:?}",
            n.id
        );
    }
    for n in &nodes {
        let own: Vec<i32> = (0..6).filter(|&p| leaders[p as usize] == n.id).collect();
        wait_for(Duration::from_secs(10), "the node's own rf1 logs", || {
            own.iter()
                .all(|p| n.dir.path().join(format!("data/rf1-{p}")).is_dir())
                .then_some(())
        });
        let mut dirs: Vec<String> = std::fs::read_dir(n.dir.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("rf1-"))
            .collect();
        dirs.sort();
        let expected: Vec<String> = own.iter().map(|p| format!("rf1-{p}")).collect();
        assert_eq!(dirs, expected, "node {} data dir", n.id);

        let req = DescribeLogDirsRequest::default().with_topics(None);
        let resp = n.connect().call(&req, 4);
        let mut listed: Vec<i32> = resp
            .results
            .iter()
            .flat_map(|r| r.topics.iter())
            .filter(|t| t.name.as_str() == "rf1")
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
            .collect();
        listed.sort();
        assert_eq!(listed, own, "node {} DescribeLogDirs: {resp:?}", n.id);
    }

    for p in 0..6 {
        let leader = nodes.iter().find(|n| n.id == leaders[p as usize]).unwrap();
        let value = format!("value-{p}");
        let batch = common::record_batch(&[(b"k".as_slice(), value.as_bytes())]);
        let r = leader.connect().produce("rf1", p, batch.clone(), -1);
        assert_eq!(r.error_code, NONE, "produce rf1-{p}: {r:?}");
        let data = leader.connect().fetch("rf1", p, 0, 100, 1);
        assert_eq!(data.error_code, NONE, "fetch rf1-{p}: {data:?}");
        let records = common::decode_records(data.records);
        assert_eq!(records.len(), 1, "rf1-{p}");
        assert_eq!(records[0].value.as_deref(), Some(value.as_bytes()));
        let other = nodes.iter().find(|n| n.id != leaders[p as usize]).unwrap();
        let r = other.connect().produce("rf1", p, batch, -1);
        assert_eq!(
            r.error_code, NOT_LEADER_OR_FOLLOWER,
            "rf1-{p} on node {}",
            other.id
        );
    }

    // An empty placeholder log that an earlier version left for a partition
    // the node does not replicate is deleted when it restarts; its own logs
    // and records stay.
    let foreign = (0..6).find(|&p| leaders[p as usize] != 1).unwrap();
    let own = (0..6).find(|&p| leaders[p as usize] == 1).unwrap();
    let mut c = nodes[0].child.take().unwrap();
    let _ = c.kill();
    let _ = c.wait();
    let placeholder = nodes[0].dir.path().join(format!("data/rf1-{foreign}"));
    std::fs::create_dir(&placeholder).unwrap();
    let voters = voters_of(&nodes);
    nodes[0].spawn(&voters);
    wait_ready(&mut nodes[..1]);
    assert!(
        !placeholder.exists(),
        "the placeholder survived the restart"
    );
    let data = wait_for(Duration::from_secs(30), "node 1 leads again", || {
        let data = nodes[0].connect().fetch("rf1", own, 0, 100, 1);
        (data.error_code == NONE).then_some(data)
    });
    assert_eq!(common::decode_records(data.records).len(), 1, "rf1-{own}");
}
