//! Commit rate and latency of the metadata quorum on loopback, with fsync:
//! `cargo run --release -p strom-metadata --example propose_rate -- [voters] [proposals] [concurrency]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_metadata::records::{MetadataRecord, TopicRecord};
use strom_metadata::{MetadataQuorum, QuorumConfig};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let voters_n = *args.first().unwrap_or(&3) as i32;
    let total = *args.get(1).unwrap_or(&2000) as usize;
    let concurrency = *args.get(2).unwrap_or(&1) as usize;
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
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        let dir = tmp.path().join(format!("node-{id}"));
        nodes.push(Arc::new(
            MetadataQuorum::start_with_listener(id, voters.clone(), &dir, config.clone(), l)
                .await
                .unwrap(),
        ));
    }
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.is_leader()) {
            break n.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..total).step_by(concurrency) {
                let t = Instant::now();
                leader
                    .propose(vec![MetadataRecord::Topic(TopicRecord {
                        name: format!("topic-{i}"),
                        topic_id: uuid::Uuid::new_v4(),
                    })])
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{voters_n} voter(s), {total} proposals, concurrency {concurrency}: {:.0} commits/s, p50 {:?}, p99 {:?}",
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
    drop(leader);
    for n in nodes {
        if let Ok(n) = Arc::try_unwrap(n) {
            n.shutdown().await;
        }
    }
}
