//! Latency of `controller_call` on loopback with fsync: heartbeats (answered
//! without a write) and CreateTopics (one committed batch), from the leader
//! itself and forwarded from a follower:
//! `cargo run --release -p strom-metadata --example controller_rate -- [voters] [calls]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_metadata::controller_api::{ControllerRequest, ControllerResponse, CreatableTopic};
use strom_metadata::{MetadataQuorum, QuorumConfig};
use tokio::net::TcpListener;
use uuid::Uuid;

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, {:.0} calls/s",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v.len() as f64 / v.iter().sum::<Duration>().as_secs_f64()
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let voters_n = *args.first().unwrap_or(&3) as i32;
    let calls = *args.get(1).unwrap_or(&500);
    let tmp = tempfile::tempdir().unwrap();
    let mut listeners = BTreeMap::new();
    for id in 1..=voters_n {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let voters: BTreeMap<_, _> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let config = QuorumConfig {
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        heartbeat_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let dir = tmp.path().join(format!("node-{id}"));
        let q = MetadataQuorum::start_with_listener(id, voters.clone(), &dir, config.clone(), l)
            .await
            .unwrap();
        nodes.insert(id, Arc::new(q));
    }
    let leader = loop {
        if let Some(q) = nodes.values().find(|q| q.is_leader()) {
            break q.node_id();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = *nodes.keys().find(|id| **id != leader).unwrap_or(&leader);
    // One broker per node, registered through its own node.
    let mut epochs = BTreeMap::new();
    for (id, q) in &nodes {
        let r = q
            .controller_call(ControllerRequest::RegisterBroker {
                broker_id: *id,
                incarnation_id: Uuid::new_v4(),
                endpoints: vec![],
                rack: None,
                observer_addr: None,
            })
            .await
            .unwrap();
        let ControllerResponse::RegisterBroker { broker_epoch, .. } = r else {
            panic!("{r:?}")
        };
        epochs.insert(*id, broker_epoch);
    }
    // Heartbeat each until the controller unfences it (it has applied its
    // registration); then every broker counts for placement.
    for (id, q) in &nodes {
        loop {
            let offset = q.subscribe().borrow().last_applied_index.unwrap_or(0) as i64;
            let r = q
                .controller_call(ControllerRequest::BrokerHeartbeat {
                    broker_id: *id,
                    broker_epoch: epochs[id],
                    current_metadata_offset: offset,
                    want_fence: false,
                    want_shutdown: false,
                })
                .await
                .unwrap();
            if matches!(
                r,
                ControllerResponse::BrokerHeartbeat {
                    is_fenced: false,
                    ..
                }
            ) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!("{voters_n} voter(s), leader {leader}, {calls} sequential calls each");
    for (what, node) in [("leader", leader), ("follower", follower)] {
        let q = &nodes[&node];
        let mut heartbeat = Vec::with_capacity(calls);
        for _ in 0..calls {
            let offset = q.subscribe().borrow().last_applied_index.unwrap_or(0) as i64;
            let t = Instant::now();
            q.controller_call(ControllerRequest::BrokerHeartbeat {
                broker_id: node,
                broker_epoch: epochs[&node],
                current_metadata_offset: offset,
                want_fence: false,
                want_shutdown: false,
            })
            .await
            .unwrap();
            heartbeat.push(t.elapsed());
        }
        println!(
            "  BrokerHeartbeat from the {what}: {}",
            percentiles(heartbeat)
        );
        let mut create = Vec::with_capacity(calls);
        for i in 0..calls {
            let t = Instant::now();
            let r = q
                .controller_call(ControllerRequest::CreateTopics {
                    topics: vec![CreatableTopic {
                        name: format!("{what}-{i}"),
                        num_partitions: 1,
                        replication_factor: voters_n as i16,
                        assignments: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    }],
                    validate_only: false,
                })
                .await
                .unwrap();
            create.push(t.elapsed());
            let ControllerResponse::CreateTopics { topics, .. } = r else {
                panic!("{r:?}")
            };
            assert_eq!(topics[0].error.error_code, 0, "{:?}", topics[0].error);
        }
        println!("  CreateTopics from the {what}: {}", percentiles(create));
    }
    for (_, q) in nodes {
        if let Ok(q) = Arc::try_unwrap(q) {
            q.shutdown().await;
        }
    }
}
