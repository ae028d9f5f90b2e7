//! The active controller end to end: in-process quorums on real loopback
//! TCP, brokers played by test tasks that register and heartbeat through
//! `controller_call` on whichever node they live on (as a broker process
//! does through its own quorum member).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_metadata::controller_api::error_codes as ec;
use strom_metadata::controller_api::*;
use strom_metadata::image::PartitionRegistration;
use strom_metadata::records::*;
use strom_metadata::{MetadataImage, MetadataQuorum, NodeId, QuorumConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

fn test_config() -> QuorumConfig {
    QuorumConfig {
        election_timeout_min: Duration::from_millis(600),
        election_timeout_max: Duration::from_millis(1200),
        heartbeat_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(300),
        propose_timeout: Duration::from_secs(10),
        broker_session_timeout: Duration::from_millis(1500),
        ..Default::default()
    }
}

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Voters 1..=n on loopback, each behind an `Arc` so broker tasks can use it.
struct Cluster {
    tmp: tempfile::TempDir,
    voters: BTreeMap<NodeId, String>,
    nodes: BTreeMap<NodeId, Arc<MetadataQuorum>>,
}

impl Cluster {
    async fn start(n: i32, config: QuorumConfig) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let voters: BTreeMap<NodeId, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, l) in listeners {
            let dir = tmp.path().join(format!("node-{id}"));
            let q =
                MetadataQuorum::start_with_listener(id, voters.clone(), &dir, config.clone(), l)
                    .await
                    .unwrap();
            nodes.insert(id, Arc::new(q));
        }
        let c = Cluster { tmp, voters, nodes };
        c.leader().await;
        c
    }

    fn node(&self, id: NodeId) -> &Arc<MetadataQuorum> {
        &self.nodes[&id]
    }

    async fn leader(&self) -> NodeId {
        let mut agreed = None;
        wait_until("an agreed leader", Duration::from_secs(10), || {
            let leaders: Vec<_> = self
                .nodes
                .values()
                .map(|q| q.leader().map(|l| l.0))
                .collect();
            agreed = leaders[0]
                .filter(|l| leaders.iter().all(|x| *x == Some(*l)) && self.nodes.contains_key(l));
            agreed.is_some_and(|l| self.node(l).is_leader())
        })
        .await;
        agreed.unwrap()
    }

    fn follower(&self, leader: NodeId) -> NodeId {
        *self.nodes.keys().find(|id| **id != leader).unwrap()
    }

    /// The image of the leader (what the controller decides on).
    fn image(&self) -> Arc<MetadataImage> {
        let leader = self
            .nodes
            .values()
            .find(|q| q.is_leader())
            .expect("a leader");
        leader.image()
    }

    /// Stops node `id`; its broker tasks must have been stopped (an aborted
    /// task lets go of its handle a moment later).
    async fn stop(&mut self, id: NodeId) {
        let mut q = self.nodes.remove(&id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let q = loop {
            match Arc::try_unwrap(q) {
                Ok(q) => break q,
                Err(back) if Instant::now() < deadline => {
                    q = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => panic!("node {id} is still in use"),
            }
        };
        q.shutdown().await;
    }

    async fn shutdown(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

/// A broker played by the test: registered through its node, heartbeating
/// from a task until stopped.
struct TestBroker {
    id: NodeId,
    epoch: i64,
    heartbeats: Option<JoinHandle<()>>,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }
}

fn endpoint(id: NodeId) -> BrokerEndpoint {
    BrokerEndpoint {
        name: "PLAINTEXT".into(),
        host: "127.0.0.1".into(),
        port: 9000 + id as u16,
        security_protocol: 0,
    }
}

async fn register(
    q: &MetadataQuorum,
    id: NodeId,
    incarnation: Uuid,
    rack: Option<&str>,
) -> (ApiError, i64) {
    match q
        .controller_call(ControllerRequest::RegisterBroker {
            broker_id: id,
            incarnation_id: incarnation,
            endpoints: vec![endpoint(id)],
            rack: rack.map(Into::into),
            observer_addr: None,
        })
        .await
        .unwrap()
    {
        ControllerResponse::RegisterBroker {
            error,
            broker_epoch,
        } => (error, broker_epoch),
        other => panic!("{other:?}"),
    }
}

async fn heartbeat(
    q: &MetadataQuorum,
    id: NodeId,
    epoch: i64,
    want_shutdown: bool,
) -> (ApiError, bool, bool, bool) {
    let offset = q.subscribe().borrow().last_applied_index.unwrap_or(0) as i64;
    match q
        .controller_call(ControllerRequest::BrokerHeartbeat {
            broker_id: id,
            broker_epoch: epoch,
            current_metadata_offset: offset,
            want_fence: false,
            want_shutdown,
        })
        .await
        .unwrap()
    {
        ControllerResponse::BrokerHeartbeat {
            error,
            is_caught_up,
            is_fenced,
            should_shutdown,
        } => (error, is_caught_up, is_fenced, should_shutdown),
        other => panic!("{other:?}"),
    }
}

fn spawn_heartbeats(q: Arc<MetadataQuorum>, id: NodeId, epoch: i64) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Errors (a controller moving) are retried on the next beat.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), heartbeat(&q, id, epoch, false)).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

/// Registers broker `id` through node `home` and keeps it heartbeating;
/// returns once the controller has unfenced it.
async fn start_broker(c: &Cluster, home: NodeId, id: NodeId, rack: Option<&str>) -> TestBroker {
    let q = c.node(home).clone();
    let (error, epoch) = register(&q, id, Uuid::new_v4(), rack).await;
    assert!(error.is_none(), "{error:?}");
    let broker = TestBroker {
        id,
        epoch,
        heartbeats: Some(spawn_heartbeats(q, id, epoch)),
    };
    wait_until("broker unfenced", Duration::from_secs(10), || {
        c.image().broker(id).is_some_and(|b| !b.fenced)
    })
    .await;
    broker
}

fn topic_request(name: &str, partitions: i32, rf: i16) -> ControllerRequest {
    ControllerRequest::CreateTopics {
        topics: vec![CreatableTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: rf,
            assignments: BTreeMap::new(),
            configs: BTreeMap::new(),
        }],
        validate_only: false,
    }
}

async fn create_topic(q: &MetadataQuorum, req: ControllerRequest) -> Vec<CreatedTopic> {
    match q.controller_call(req).await.unwrap() {
        ControllerResponse::CreateTopics { topics, log_index } => {
            wait_applied(q, log_index).await;
            topics
        }
        other => panic!("{other:?}"),
    }
}

async fn wait_applied(q: &MetadataQuorum, index: u64) {
    wait_until("index applied", Duration::from_secs(10), || {
        q.subscribe()
            .borrow()
            .last_applied_index
            .is_some_and(|i| i >= index)
    })
    .await;
}

fn partitions(image: &MetadataImage, topic: &str) -> BTreeMap<i32, PartitionRegistration> {
    image.topic(topic).expect("topic exists").partitions.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_call_from_a_follower_and_an_observer_reaches_the_leader() {
    let config = test_config();
    let c = Cluster::start(3, config.clone()).await;
    let leader = c.leader().await;
    let follower = c.follower(leader);

    // From a follower: forwarded over the controller listener.
    let (error, epoch) = register(c.node(follower), 1, Uuid::new_v4(), None).await;
    assert!(error.is_none(), "{error:?}");
    assert!(epoch > 0);
    wait_until("registration replicated", Duration::from_secs(10), || {
        c.node(follower).image().broker(1).is_some()
    })
    .await;
    let b = c.node(follower).image().broker(1).unwrap().clone();
    assert!(b.fenced, "a broker starts fenced");
    assert_eq!(b.broker_epoch, epoch);
    assert_eq!(b.endpoints, vec![endpoint(1)]);

    // A broker-only node: an observer the leader has never heard of. It
    // finds the controller by asking the voters, and its registration adds
    // it to the log's members, so it starts receiving the log.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let obs_addr = l.local_addr().unwrap().to_string();
    let observer = MetadataQuorum::start_observer(
        4,
        c.voters.clone(),
        &c.tmp.path().join("observer-4"),
        config.clone(),
        l,
    )
    .await
    .unwrap();
    assert!(observer.leader().is_none());
    let reply = observer
        .controller_call(ControllerRequest::RegisterBroker {
            broker_id: 4,
            incarnation_id: Uuid::new_v4(),
            endpoints: vec![endpoint(4)],
            rack: None,
            observer_addr: Some(obs_addr),
        })
        .await
        .unwrap();
    let ControllerResponse::RegisterBroker {
        error,
        broker_epoch: epoch4,
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(error.is_none(), "{error:?}");
    assert!(epoch4 > epoch, "epochs grow: {epoch4} > {epoch}");
    wait_until("observer follows the log", Duration::from_secs(10), || {
        observer
            .image()
            .broker(4)
            .is_some_and(|b| b.broker_epoch == epoch4)
    })
    .await;
    assert_eq!(observer.leader().map(|l| l.0), Some(leader));
    assert!(c
        .node(leader)
        .describe()
        .observers
        .iter()
        .any(|o| o.replica_id == 4));

    // Heartbeats from the observer unfence it once it has applied its own
    // registration; a wrong epoch is STALE_BROKER_EPOCH.
    let (error, caught_up, fenced, _) = heartbeat(&observer, 4, epoch4, false).await;
    assert!(
        error.is_none() && caught_up && !fenced,
        "{error:?} {caught_up} {fenced}"
    );
    let (error, ..) = heartbeat(&observer, 4, epoch4 - 1, false).await;
    assert_eq!(error.error_code, ec::STALE_BROKER_EPOCH);

    // A second process with the same node.id while the first is alive.
    let (error, _) = register(c.node(follower), 4, Uuid::new_v4(), None).await;
    assert_eq!(error.error_code, ec::DUPLICATE_BROKER_REGISTRATION);
    // The same incarnation retrying gets its epoch back.
    let inc = c.image().broker(4).unwrap().incarnation_id;
    assert_eq!(
        register(c.node(follower), 4, inc, None).await,
        (ApiError::NONE, epoch4)
    );

    // The broker-only node restarts on another port: its new incarnation is
    // registered once the old session lapses, and the log follows it there.
    observer.shutdown().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let new_addr = l.local_addr().unwrap().to_string();
    let observer = MetadataQuorum::start_observer(
        4,
        c.voters.clone(),
        &c.tmp.path().join("observer-4"),
        config.clone(),
        l,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let epoch4b = loop {
        let reply = observer
            .controller_call(ControllerRequest::RegisterBroker {
                broker_id: 4,
                incarnation_id: Uuid::new_v4(),
                endpoints: vec![endpoint(4)],
                rack: None,
                observer_addr: Some(new_addr.clone()),
            })
            .await
            .unwrap();
        match reply {
            ControllerResponse::RegisterBroker {
                error,
                broker_epoch,
            } if error.is_none() => break broker_epoch,
            ControllerResponse::RegisterBroker { error, .. } => {
                assert_eq!(error.error_code, ec::DUPLICATE_BROKER_REGISTRATION);
                assert!(Instant::now() < deadline, "old session never lapsed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    };
    wait_until(
        "restarted observer follows the log",
        Duration::from_secs(10),
        || {
            observer
                .image()
                .broker(4)
                .is_some_and(|b| b.broker_epoch == epoch4b)
        },
    )
    .await;

    observer.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_places_replicas_across_racks_with_balanced_leaders() {
    let c = Cluster::start(1, test_config()).await;
    let q = c.node(1).clone();
    let _b: Vec<TestBroker> = vec![
        start_broker(&c, 1, 1, Some("a")).await,
        start_broker(&c, 1, 2, Some("b")).await,
        start_broker(&c, 1, 3, Some("c")).await,
    ];
    let created = create_topic(&q, topic_request("t", 6, 3)).await;
    assert_eq!(created.len(), 1);
    assert!(created[0].error.is_none(), "{:?}", created[0].error);
    assert_eq!(
        (created[0].num_partitions, created[0].replication_factor),
        (6, 3)
    );
    let img = q.image();
    assert_eq!(img.topic("t").unwrap().id, created[0].topic_id);
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for p in partitions(&img, "t").values() {
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        *leaders.entry(p.leader).or_default() += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(1, 2), (2, 2), (3, 2)]));

    // Too few brokers: Kafka's INVALID_REPLICATION_FACTOR and message.
    let r = create_topic(&q, topic_request("big", 1, 4)).await;
    assert_eq!(r[0].error.error_code, ec::INVALID_REPLICATION_FACTOR);
    assert!(r[0]
        .error
        .message
        .as_deref()
        .unwrap()
        .contains("only 3 broker(s) are registered"));
    let r = create_topic(&q, topic_request("t", 1, 1)).await;
    assert_eq!(r[0].error.error_code, ec::TOPIC_ALREADY_EXISTS);
    let r = create_topic(&q, topic_request("zero", 0, 1)).await;
    assert_eq!(r[0].error.error_code, ec::INVALID_PARTITIONS);
    // Manual assignments: unknown or duplicate brokers are refused.
    let manual = |a: Vec<Vec<i32>>| ControllerRequest::CreateTopics {
        topics: vec![CreatableTopic {
            name: "manual".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: a
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i as i32, r))
                .collect(),
            configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
        }],
        validate_only: false,
    };
    for bad in [
        vec![vec![1, 9]],
        vec![vec![1, 1]],
        vec![vec![1, 2], vec![3]],
    ] {
        let r = create_topic(&q, manual(bad.clone())).await;
        assert_eq!(
            r[0].error.error_code,
            ec::INVALID_REPLICA_ASSIGNMENT,
            "{bad:?}"
        );
    }
    assert!(q.image().topic("manual").is_none(), "nothing half-applied");
    let r = create_topic(&q, manual(vec![vec![3, 1], vec![2, 3]])).await;
    assert!(r[0].error.is_none());
    let img = q.image();
    let p = partitions(&img, "manual");
    assert_eq!((p[&0].replicas.clone(), p[&0].leader), (vec![3, 1], 3));
    assert_eq!(
        img.configs(resource_type::TOPIC, "manual").unwrap()["cleanup.policy"],
        "compact"
    );
    // validate_only proposes nothing.
    let mut req = topic_request("dry", 3, 2);
    if let ControllerRequest::CreateTopics { validate_only, .. } = &mut req {
        *validate_only = true;
    }
    let r = create_topic(&q, req).await;
    assert!(r[0].error.is_none());
    assert!(q.image().topic("dry").is_none());

    // CreatePartitions continues the placement; shrinking is refused.
    let grow = |count| ControllerRequest::CreatePartitions {
        topic: "t".into(),
        count,
        assignments: None,
        validate_only: false,
    };
    let ControllerResponse::CreatePartitions { error, log_index } =
        q.controller_call(grow(9)).await.unwrap()
    else {
        panic!()
    };
    assert!(error.is_none(), "{error:?}");
    wait_applied(&q, log_index).await;
    let p = partitions(&q.image(), "t");
    assert_eq!(p.len(), 9);
    assert!(p.values().all(|p| p.replicas.len() == 3));
    for (count, code) in [(9, ec::INVALID_PARTITIONS), (2, ec::INVALID_PARTITIONS)] {
        let ControllerResponse::CreatePartitions { error, .. } =
            q.controller_call(grow(count)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(error.error_code, code);
    }
    drop(_b);
    drop(q);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_is_fenced_and_its_leaderships_move_within_the_isr() {
    let c = Cluster::start(3, test_config()).await;
    let leader = c.leader().await;
    let q = c.node(c.follower(leader)).clone();
    let b1 = start_broker(&c, 1, 1, None).await;
    let _b2 = start_broker(&c, 2, 2, None).await;
    let _b3 = start_broker(&c, 3, 3, None).await;
    create_topic(&q, topic_request("t", 6, 3)).await;
    // A partition whose only in-sync replica is broker 1.
    let r = create_topic(
        &q,
        ControllerRequest::CreateTopics {
            topics: vec![CreatableTopic {
                name: "solo".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: BTreeMap::from([(0, vec![1, 2])]),
                configs: BTreeMap::new(),
            }],
            validate_only: false,
        },
    )
    .await;
    let solo_id = r[0].topic_id;
    let shrink = ControllerRequest::AlterPartition {
        broker_id: 1,
        broker_epoch: b1.epoch,
        topics: vec![AlterPartitionTopic {
            topic_id: solo_id,
            partitions: vec![AlterPartitionItem {
                partition: 0,
                leader_epoch: 0,
                new_isr: vec![1],
                partition_epoch: 0,
            }],
        }],
    };
    let ControllerResponse::AlterPartition { topics, .. } =
        q.controller_call(shrink).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(topics[0].1[0].isr, vec![1]);
    let led_by_1: Vec<i32> = partitions(&c.image(), "t")
        .iter()
        .filter(|(_, p)| p.leader == 1)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(led_by_1.len(), 2);

    // Broker 1 stops heartbeating: fenced after the session timeout, its
    // leaderships go to the next in-sync replica and it leaves every ISR —
    // except where it is the last one: that partition has no leader.
    let epoch1 = b1.epoch;
    let silent_at = Instant::now();
    drop(b1);
    wait_until("broker 1 fenced", Duration::from_secs(10), || {
        c.image().broker(1).is_some_and(|b| b.fenced)
    })
    .await;
    let took = silent_at.elapsed();
    assert!(took >= Duration::from_millis(1400), "fenced after {took:?}");
    let img = c.image();
    for (id, p) in partitions(&img, "t") {
        assert_ne!(p.leader, 1, "partition {id}");
        assert!(p.isr.contains(&p.leader) && !p.isr.contains(&1), "{p:?}");
        if led_by_1.contains(&id) {
            let expected = *p.replicas.iter().find(|r| **r != 1).unwrap();
            assert_eq!(
                p.leader, expected,
                "first live ISR member in assignment order"
            );
            assert_eq!(p.leader_epoch, 1);
        }
    }
    let solo = &partitions(&img, "solo")[&0];
    assert_eq!((solo.leader, solo.isr.clone()), (NO_LEADER, vec![1]));

    // It comes back (same incarnation, heartbeating again): unfenced, and it
    // leads the partition it alone holds in sync.
    let b1 = TestBroker {
        id: 1,
        epoch: epoch1,
        heartbeats: Some(spawn_heartbeats(c.node(1).clone(), 1, epoch1)),
    };
    wait_until(
        "broker 1 unfenced and leading solo",
        Duration::from_secs(10),
        || {
            let img = c.image();
            !img.broker(1).unwrap().fenced && partitions(&img, "solo")[&0].leader == 1
        },
    )
    .await;
    drop((b1, _b2, _b3));
    drop(q);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_before_saying_stop() {
    let c = Cluster::start(1, test_config()).await;
    let q = c.node(1).clone();
    let mut b1 = start_broker(&c, 1, 1, None).await;
    let _b2 = start_broker(&c, 1, 2, None).await;
    let _b3 = start_broker(&c, 1, 3, None).await;
    create_topic(&q, topic_request("t", 6, 3)).await;
    assert!(partitions(&q.image(), "t").values().any(|p| p.leader == 1));
    // The broker drives its own heartbeats now.
    b1.heartbeats.take().unwrap().abort();
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (error, _, _, should_shutdown) = heartbeat(&q, 1, b1.epoch, true).await;
        assert!(error.is_none());
        answers.push(should_shutdown);
        if should_shutdown {
            break;
        }
        assert!(Instant::now() < deadline, "never told to shut down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not at the first heartbeat: only once the moves were applied.
    assert!(!answers[0]);
    let img = q.image();
    assert!(img.broker(1).unwrap().in_controlled_shutdown);
    for p in partitions(&img, "t").values() {
        assert!(p.leader != 1 && !p.isr.contains(&1), "{p:?}");
    }
    // A broker in controlled shutdown is not eligible for new replicas.
    let r = create_topic(&q, topic_request("after", 1, 3)).await;
    assert_eq!(r[0].error.error_code, ec::INVALID_REPLICATION_FACTOR);
    // Restarting (a new incarnation) is allowed at once and starts fenced.
    let (error, epoch) = register(&q, 1, Uuid::new_v4(), None).await;
    assert!(error.is_none() && epoch > b1.epoch, "{error:?}");
    let b = q.image().broker(1).unwrap().clone();
    assert!(b.fenced && !b.in_controlled_shutdown);
    drop((b1, _b2, _b3));
    drop(q);
    c.shutdown().await;
}

fn alter(
    broker: &TestBroker,
    topic_id: Uuid,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<i32>,
) -> ControllerRequest {
    ControllerRequest::AlterPartition {
        broker_id: broker.id,
        broker_epoch: broker.epoch,
        topics: vec![AlterPartitionTopic {
            topic_id,
            partitions: vec![AlterPartitionItem {
                partition: 0,
                leader_epoch,
                new_isr,
                partition_epoch,
            }],
        }],
    }
}

async fn alter_result(q: &MetadataQuorum, req: ControllerRequest) -> AlterPartitionResult {
    match q.controller_call(req).await.unwrap() {
        ControllerResponse::AlterPartition {
            error,
            mut topics,
            log_index,
        } => {
            assert!(error.is_none(), "{error:?}");
            wait_applied(q, log_index).await;
            topics.remove(0).1.remove(0)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_partition_checks_epochs_and_eligibility_and_completes_reassignments() {
    let c = Cluster::start(1, test_config()).await;
    let q = c.node(1).clone();
    let b: BTreeMap<i32, TestBroker> = {
        let mut m = BTreeMap::new();
        for id in 1..=4 {
            m.insert(id, start_broker(&c, 1, id, None).await);
        }
        m
    };
    let r = create_topic(
        &q,
        ControllerRequest::CreateTopics {
            topics: vec![CreatableTopic {
                name: "t".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: BTreeMap::from([(0, vec![1, 2, 3])]),
                configs: BTreeMap::new(),
            }],
            validate_only: false,
        },
    )
    .await;
    let tid = r[0].topic_id;

    // The error cases, each leaving the partition as it was.
    let code = |r: AlterPartitionResult| r.error.error_code;
    assert_eq!(
        code(alter_result(&q, alter(&b[&2], tid, 0, 0, vec![2, 3])).await),
        ec::NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        code(alter_result(&q, alter(&b[&1], tid, 5, 0, vec![1, 2])).await),
        ec::FENCED_LEADER_EPOCH
    );
    assert_eq!(
        code(alter_result(&q, alter(&b[&1], tid, 0, 7, vec![1, 2])).await),
        ec::INVALID_UPDATE_VERSION
    );
    assert_eq!(
        code(alter_result(&q, alter(&b[&1], tid, 0, 0, vec![2, 3])).await),
        ec::INVALID_REQUEST
    );
    assert_eq!(
        code(alter_result(&q, alter(&b[&1], tid, 0, 0, vec![1, 4])).await),
        ec::INELIGIBLE_REPLICA
    );
    assert_eq!(
        code(alter_result(&q, alter(&b[&1], Uuid::new_v4(), 0, 0, vec![1])).await),
        ec::UNKNOWN_TOPIC_ID
    );
    let stale = TestBroker {
        id: 1,
        epoch: b[&1].epoch - 1,
        heartbeats: None,
    };
    let ControllerResponse::AlterPartition { error, .. } = q
        .controller_call(alter(&stale, tid, 0, 0, vec![1]))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(error.error_code, ec::STALE_BROKER_EPOCH);
    assert_eq!(partitions(&q.image(), "t")[&0].partition_epoch, 0);

    // Shrink, then expand: partition epoch moves, leader epoch does not.
    let r = alter_result(&q, alter(&b[&1], tid, 0, 0, vec![1, 2])).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        (
            r.leader_id,
            r.leader_epoch,
            r.isr.clone(),
            r.partition_epoch
        ),
        (1, 0, vec![1, 2], 1)
    );
    assert_eq!(partitions(&q.image(), "t")[&0].isr, vec![1, 2]);
    // A fenced broker may not join the ISR (broker 3 asks to be fenced,
    // after its heartbeat task, which would unfence it again, stops).
    let mut b = b;
    b.get_mut(&3).unwrap().heartbeats.take().unwrap().abort();
    q.controller_call(ControllerRequest::BrokerHeartbeat {
        broker_id: 3,
        broker_epoch: b[&3].epoch,
        current_metadata_offset: i64::MAX,
        want_fence: true,
        want_shutdown: false,
    })
    .await
    .unwrap();
    assert!(q.image().broker(3).unwrap().fenced);
    assert_eq!(
        code(alter_result(&q, alter(&b[&1], tid, 0, 1, vec![1, 2, 3])).await),
        ec::INELIGIBLE_REPLICA
    );

    // Reassign [1,2,3] → [4,2]: replicas = target ∪ current while 4 catches up.
    let reassign = |target: Option<Vec<i32>>| ControllerRequest::AlterPartitionReassignments {
        reassignments: vec![("t".into(), 0, target)],
    };
    let ControllerResponse::AlterPartitionReassignments {
        partitions: res,
        log_index,
        ..
    } = q.controller_call(reassign(Some(vec![4, 2]))).await.unwrap()
    else {
        panic!()
    };
    assert!(res[0].2.is_none(), "{:?}", res[0].2);
    wait_applied(&q, log_index).await;
    let p = partitions(&q.image(), "t")[&0].clone();
    assert_eq!(p.replicas, vec![4, 2, 1, 3]);
    assert_eq!(
        (p.adding_replicas.clone(), p.removing_replicas.clone()),
        (vec![4], vec![1, 3])
    );
    let ControllerResponse::ListPartitionReassignments {
        partitions: listed, ..
    } = q
        .controller_call(ControllerRequest::ListPartitionReassignments { partitions: None })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        listed,
        vec![("t".to_string(), 0, vec![4, 2, 1, 3], vec![4], vec![1, 3])]
    );
    // Errors: unknown partition, unknown broker, cancelling nothing.
    let ControllerResponse::AlterPartitionReassignments {
        partitions: res, ..
    } = q
        .controller_call(ControllerRequest::AlterPartitionReassignments {
            reassignments: vec![
                ("t".into(), 9, Some(vec![1])),
                ("t".into(), 0, Some(vec![1, 99])),
            ],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(res[0].2.error_code, ec::UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(res[1].2.error_code, ec::INVALID_REPLICA_ASSIGNMENT);

    // The leader adds 4 to the ISR: the reassignment completes in the same
    // change, and leadership leaves broker 1, which is no longer a replica.
    let r = alter_result(&q, alter(&b[&1], tid, 0, p.partition_epoch, vec![1, 2, 4])).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!((r.leader_id, r.isr.clone()), (4, vec![2, 4]));
    let p = partitions(&q.image(), "t")[&0].clone();
    assert_eq!(p.replicas, vec![4, 2]);
    assert!(p.adding_replicas.is_empty() && p.removing_replicas.is_empty());
    assert_eq!((p.leader, p.leader_epoch), (4, 1));
    let ControllerResponse::AlterPartitionReassignments {
        partitions: res, ..
    } = q.controller_call(reassign(None)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(res[0].2.error_code, ec::NO_REASSIGNMENT_IN_PROGRESS);

    // Start one more and cancel it: back to the original replicas.
    let ControllerResponse::AlterPartitionReassignments { log_index, .. } = q
        .controller_call(reassign(Some(vec![4, 2, 1])))
        .await
        .unwrap()
    else {
        panic!()
    };
    wait_applied(&q, log_index).await;
    assert_eq!(partitions(&q.image(), "t")[&0].adding_replicas, vec![1]);
    let ControllerResponse::AlterPartitionReassignments {
        partitions: res,
        log_index,
        ..
    } = q.controller_call(reassign(None)).await.unwrap()
    else {
        panic!()
    };
    assert!(res[0].2.is_none());
    wait_applied(&q, log_index).await;
    let p = partitions(&q.image(), "t")[&0].clone();
    assert_eq!(
        (p.replicas, p.adding_replicas, p.leader),
        (vec![4, 2], vec![], 4)
    );
    drop(b);
    drop(q);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_and_producer_id_blocks() {
    let c = Cluster::start(1, test_config()).await;
    let q = c.node(1).clone();
    let b1 = start_broker(&c, 1, 1, None).await;
    let _b2 = start_broker(&c, 1, 2, None).await;
    let _b3 = start_broker(&c, 1, 3, None).await;
    let r = create_topic(
        &q,
        ControllerRequest::CreateTopics {
            topics: vec![CreatableTopic {
                name: "t".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: BTreeMap::from([(0, vec![1, 2]), (1, vec![2, 3])]),
                configs: BTreeMap::new(),
            }],
            validate_only: false,
        },
    )
    .await;
    let tid = r[0].topic_id;
    // Move leadership of t-0 off its preferred replica by a (fake) fence of 1…
    let ControllerResponse::ElectLeaders {
        partitions: res, ..
    } = q
        .controller_call(ControllerRequest::ElectLeaders {
            election_type: ElectionType::Preferred,
            partitions: Some(vec![("t".into(), 0), ("t".into(), 7)]),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(res[0].2.error_code, ec::ELECTION_NOT_NEEDED);
    assert_eq!(res[1].2.error_code, ec::UNKNOWN_TOPIC_OR_PARTITION);
    // …by a reassignment reorder: preferred becomes 2 while 1 leads.
    let ControllerResponse::AlterPartitionReassignments { log_index, .. } = q
        .controller_call(ControllerRequest::AlterPartitionReassignments {
            reassignments: vec![("t".into(), 0, Some(vec![2, 1]))],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    wait_applied(&q, log_index).await;
    let p = partitions(&q.image(), "t")[&0].clone();
    assert_eq!((p.replicas.clone(), p.leader), (vec![2, 1], 1));
    let elect = |partitions| ControllerRequest::ElectLeaders {
        election_type: ElectionType::Preferred,
        partitions,
    };
    // All partitions: only the ones that needed an election are reported.
    let ControllerResponse::ElectLeaders {
        partitions: res,
        log_index,
        ..
    } = q.controller_call(elect(None)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(res, vec![("t".to_string(), 0, ApiError::NONE)]);
    wait_applied(&q, log_index).await;
    assert_eq!(partitions(&q.image(), "t")[&0].leader, 2);
    // Preferred replica out of the ISR: PREFERRED_LEADER_NOT_AVAILABLE.
    let p = partitions(&q.image(), "t")[&1].clone();
    let shrink = alter_result(
        &q,
        ControllerRequest::AlterPartition {
            broker_id: 2,
            broker_epoch: _b2.epoch,
            topics: vec![AlterPartitionTopic {
                topic_id: tid,
                partitions: vec![AlterPartitionItem {
                    partition: 1,
                    leader_epoch: p.leader_epoch,
                    new_isr: vec![2],
                    partition_epoch: p.partition_epoch,
                }],
            }],
        },
    )
    .await;
    assert!(shrink.error.is_none());
    let ControllerResponse::ElectLeaders { .. } = q.controller_call(elect(None)).await.unwrap()
    else {
        panic!()
    };
    // Unclean election when the leader is live: not needed.
    let ControllerResponse::ElectLeaders {
        partitions: res, ..
    } = q
        .controller_call(ControllerRequest::ElectLeaders {
            election_type: ElectionType::Unclean,
            partitions: Some(vec![("t".into(), 1)]),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(res[0].2.error_code, ec::ELECTION_NOT_NEEDED);

    // Producer-id blocks: consecutive, 1000 each, epoch-checked.
    let alloc = |epoch| ControllerRequest::AllocateProducerIds {
        broker_id: 1,
        broker_epoch: epoch,
    };
    let mut starts = Vec::new();
    for _ in 0..2 {
        let ControllerResponse::AllocateProducerIds {
            error,
            producer_id_start,
            producer_id_len,
        } = q.controller_call(alloc(b1.epoch)).await.unwrap()
        else {
            panic!()
        };
        assert!(error.is_none());
        assert_eq!(producer_id_len, 1000);
        starts.push(producer_id_start);
    }
    assert_eq!(starts[1], starts[0] + 1000);
    let ControllerResponse::AllocateProducerIds { error, .. } =
        q.controller_call(alloc(b1.epoch + 100)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(error.error_code, ec::STALE_BROKER_EPOCH);

    // Forwarded record batches: checked against the controller's image.
    let ControllerResponse::Propose { error, .. } = q
        .controller_call(ControllerRequest::Propose {
            records: vec![MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: Uuid::new_v4(),
            })],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(error.error_code, ec::UNKNOWN_TOPIC_ID);
    let ControllerResponse::Propose { error, log_index } = q
        .controller_call(ControllerRequest::Propose {
            records: vec![MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: tid,
            })],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(error.is_none());
    wait_applied(&q, log_index).await;
    assert!(q.image().topic("t").is_none());
    drop((b1, _b2, _b3));
    drop(q);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_leader_rebalance_returns_leadership_to_the_preferred_replica() {
    let mut config = test_config();
    config.leader_imbalance_check_interval = Duration::from_millis(500);
    let c = Cluster::start(1, config).await;
    let q = c.node(1).clone();
    let b1 = start_broker(&c, 1, 1, None).await;
    let _b2 = start_broker(&c, 1, 2, None).await;
    create_topic(
        &q,
        ControllerRequest::CreateTopics {
            topics: vec![CreatableTopic {
                name: "t".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: BTreeMap::from([(0, vec![1, 2])]),
                configs: BTreeMap::new(),
            }],
            validate_only: false,
        },
    )
    .await;
    // Broker 1 goes silent: 2 leads.
    let epoch1 = b1.epoch;
    drop(b1);
    wait_until("2 leads", Duration::from_secs(10), || {
        partitions(&q.image(), "t")[&0].leader == 2
    })
    .await;
    // 1 returns and the leader lets it back into the ISR; the rebalance then
    // hands leadership back to it.
    let _b1 = TestBroker {
        id: 1,
        epoch: epoch1,
        heartbeats: Some(spawn_heartbeats(q.clone(), 1, epoch1)),
    };
    wait_until("1 unfenced", Duration::from_secs(10), || {
        !q.image().broker(1).unwrap().fenced
    })
    .await;
    let p = partitions(&q.image(), "t")[&0].clone();
    assert_eq!(p.isr, vec![2]);
    let r = alter_result(
        &q,
        ControllerRequest::AlterPartition {
            broker_id: 2,
            broker_epoch: _b2.epoch,
            topics: vec![AlterPartitionTopic {
                topic_id: q.image().topic("t").unwrap().id,
                partitions: vec![AlterPartitionItem {
                    partition: 0,
                    leader_epoch: p.leader_epoch,
                    new_isr: vec![2, 1],
                    partition_epoch: p.partition_epoch,
                }],
            }],
        },
    )
    .await;
    assert!(r.error.is_none(), "{:?}", r.error);
    wait_until("preferred leader back", Duration::from_secs(10), || {
        partitions(&q.image(), "t")[&0].leader == 1
    })
    .await;
    drop((_b1, _b2));
    drop(q);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_failover_grants_fresh_sessions_and_keeps_answering() {
    let mut c = Cluster::start(3, test_config()).await;
    let leader = c.leader().await;
    // One broker per node, heartbeating through its own node.
    let mut brokers: BTreeMap<NodeId, TestBroker> = BTreeMap::new();
    for id in 1..=3 {
        brokers.insert(id, start_broker(&c, id, id, None).await);
    }
    let q = c.node(c.follower(leader)).clone();
    create_topic(&q, topic_request("t", 3, 3)).await;
    drop(q);

    // The active controller's node goes away, with its broker.
    drop(brokers.remove(&leader));
    let stopped_at = Instant::now();
    c.stop(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    // The new controller answers (through a follower if there is one left).
    let q = c.node(*c.nodes.keys().next().unwrap()).clone();
    let created = create_topic(&q, topic_request("after-failover", 2, 2)).await;
    assert!(created[0].error.is_none(), "{:?}", created[0].error);
    // The survivors keep heartbeating and stay unfenced; the dead broker is
    // fenced a session timeout after the takeover (not before: a fresh
    // session), and its leaderships move.
    wait_until("dead broker fenced", Duration::from_secs(15), || {
        c.image().broker(leader).is_some_and(|b| b.fenced)
    })
    .await;
    assert!(stopped_at.elapsed() >= Duration::from_millis(1500));
    let img = c.image();
    for id in brokers.keys() {
        assert!(
            !img.broker(*id).unwrap().fenced,
            "broker {id} stayed unfenced"
        );
    }
    for p in partitions(&img, "t").values() {
        assert!(p.leader != leader && !p.isr.contains(&leader), "{p:?}");
    }
    drop(q);
    drop(brokers);
    c.shutdown().await;
}
