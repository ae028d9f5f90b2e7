//! Fetch long polling (delayed fetch in purgatory) and incremental fetch
//! sessions (KIP-227), on raw frames.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::{
    fetch_request::{FetchPartition, FetchTopic},
    fetch_response::FetchResponse,
    FetchRequest,
};

/// A fetch waiting on an empty partition is answered as soon as a record
/// arrives, not when max_wait_ms runs out.
#[test]
fn long_poll_returns_when_data_arrives() {
    let mut server = TestServer::start();
    let mut admin = server.connect();
    assert_eq!(admin.create_topic("lp", 1), 0);

    let mut fetcher = server.connect();
    let req = fetch_request(&[("lp", 0, 0)], 5000, 1);
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let resp: FetchResponse = fetcher.call(&req, FETCH_V);
        tx.send(Instant::now()).unwrap();
        resp
    });

    // Give the fetch time to reach the broker and park.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "fetch on an empty partition with min_bytes=1 returned before any data"
    );
    let mut producer = server.connect();
    let p = producer.produce("lp", 0, record_batch(&[(b"k", b"wake up")]), -1);
    let acked = Instant::now();
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{p:?}");

    let answered = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("fetch response");
    let resp = handle.join().unwrap();
    let ack_ms = acked.duration_since(start).as_millis();
    let fetch_ms = answered.duration_since(start).as_millis();
    println!("long poll: produce acked at {ack_ms} ms, fetch answered at {fetch_ms} ms (max_wait 5000 ms)");

    assert_eq!(resp.error_code, 0);
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0, "{part:?}");
    assert_eq!(part.high_watermark, 1);
    let recs = decode_records(part.records.clone());
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].value.as_deref(), Some(&b"wake up"[..]));
    assert!(
        fetch_ms <= ack_ms + 500,
        "fetch answered {fetch_ms} ms after start, produce acked at {ack_ms} ms: the waiting \
         fetch was not woken by the append"
    );
    server.assert_healthy();
}

/// With nothing to return, the fetch waits about max_wait_ms and returns empty.
#[test]
fn long_poll_times_out_after_max_wait() {
    let mut server = TestServer::start();
    let mut c = server.connect();
    assert_eq!(c.create_topic("idle", 1), 0);
    let start = Instant::now();
    let part = c.fetch("idle", 0, 0, 300, 1);
    let ms = start.elapsed().as_millis();
    println!("idle fetch with max_wait 300 ms returned after {ms} ms");
    assert_eq!(part.error_code, 0, "{part:?}");
    assert!(decode_records(part.records).is_empty());
    assert!(ms >= 250, "returned after {ms} ms, before max_wait_ms=300");
    assert!(
        ms < 2000,
        "returned after {ms} ms, far after max_wait_ms=300"
    );

    // min_bytes=0 (or max_wait 0) never waits.
    let start = Instant::now();
    let part = c.fetch("idle", 0, 0, 5000, 0);
    let ms = start.elapsed().as_millis();
    assert_eq!(part.error_code, 0);
    assert!(ms < 1000, "fetch with min_bytes=0 waited {ms} ms");
    server.assert_healthy();
}

/// Open file descriptors of a process (sockets included).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A client that disconnects while its fetch waits (here: max_wait_ms of
/// i32::MAX on an empty partition) frees its connection at once, as in
/// Kafka; it must not pin a socket until the wait would have ended.
#[test]
fn a_waiting_fetch_is_dropped_when_its_client_disconnects() {
    const CLIENTS: usize = 20;
    let mut server = TestServer::start();
    let pid = server.pid().expect("running");
    let mut admin = server.connect();
    assert_eq!(admin.create_topic("gone", 1), 0);
    let before = open_fds(pid);

    let mut waiting: Vec<RawClient> = (0..CLIENTS).map(|_| server.connect()).collect();
    for c in &mut waiting {
        c.send(&fetch_request(&[("gone", 0, 0)], i32::MAX, 1), FETCH_V);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < before + CLIENTS {
        assert!(Instant::now() < deadline, "connections never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(waiting);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = open_fds(pid);
        if now <= before + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} fds open 5 s after {CLIENTS} waiting fetchers disconnected (before: {before})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A fetch followed by a pipelined request on a live connection still
    // gets both answers, in order.
    let mut c = server.connect();
    let first = c.send(&fetch_request(&[("gone", 0, 0)], 200, 1), FETCH_V);
    let second = c.send(&fetch_request(&[("gone", 0, 0)], 0, 0), FETCH_V);
    assert_eq!(c.receive::<FetchRequest>(FETCH_V).0, first);
    assert_eq!(c.receive::<FetchRequest>(FETCH_V).0, second);
    server.assert_healthy();
}

fn session_partition(partition: i32, offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(offset)
        .with_current_leader_epoch(-1)
        .with_last_fetched_epoch(-1)
        .with_log_start_offset(-1)
        .with_partition_max_bytes(1024 * 1024)
}

fn session_fetch(
    session_id: i32,
    epoch: i32,
    topics: Vec<FetchTopic>,
    max_wait_ms: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

fn partitions_in(resp: &FetchResponse) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), p.partition_index))
        })
        .collect();
    v.sort();
    v
}

/// KIP-227: a full fetch with session id 0 / epoch 0 opens a session; an
/// incremental fetch naming no partitions returns only partitions that changed.
#[test]
fn incremental_fetch_session_returns_only_changed_partitions() {
    let mut server = TestServer::start();
    let mut c = server.connect();
    assert_eq!(c.create_topic("sess", 2), 0);

    let full = session_fetch(
        0,
        0,
        vec![FetchTopic::default()
            .with_topic(topic_name("sess"))
            .with_partitions(vec![session_partition(0, 0), session_partition(1, 0)])],
        100,
    );
    let r1: FetchResponse = c.call(&full, FETCH_V);
    assert_eq!(r1.error_code, 0, "{r1:?}");
    assert_ne!(
        r1.session_id, 0,
        "a full fetch with epoch 0 must open a session"
    );
    assert_eq!(
        partitions_in(&r1),
        vec![("sess".to_string(), 0), ("sess".to_string(), 1)],
        "a full fetch response lists every requested partition"
    );
    let session = r1.session_id;

    let mut producer = server.connect();
    let p = producer.produce("sess", 1, record_batch(&[(b"k", b"only p1")]), -1);
    assert_eq!(p.error_code, 0, "{p:?}");

    // Epoch 1, no partitions named: the session remembers both at offset 0.
    let r2: FetchResponse = c.call(&session_fetch(session, 1, vec![], 2000), FETCH_V);
    assert_eq!(r2.error_code, 0, "{r2:?}");
    assert_eq!(r2.session_id, session);
    assert_eq!(
        partitions_in(&r2),
        vec![("sess".to_string(), 1)],
        "incremental response must hold only the partition with new data: {r2:?}"
    );
    let p1 = &r2.responses[0].partitions[0];
    assert_eq!(p1.high_watermark, 1);
    let recs = decode_records(p1.records.clone());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].value.as_deref(), Some(&b"only p1"[..]));

    // Epoch 2 moves p1's fetch offset past the record; nothing changed since,
    // so after max_wait the response lists no partitions.
    let r3: FetchResponse = c.call(
        &session_fetch(
            session,
            2,
            vec![FetchTopic::default()
                .with_topic(topic_name("sess"))
                .with_partitions(vec![session_partition(1, 1)])],
            200,
        ),
        FETCH_V,
    );
    assert_eq!(r3.error_code, 0, "{r3:?}");
    assert_eq!(r3.session_id, session);
    assert!(
        partitions_in(&r3).is_empty(),
        "no partition changed, none may be listed: {r3:?}"
    );

    // A stale epoch is refused with INVALID_FETCH_SESSION_EPOCH (71).
    let r4: FetchResponse = c.call(&session_fetch(session, 2, vec![], 0), FETCH_V);
    assert_eq!(r4.error_code, 71, "{r4:?}");
    server.assert_healthy();
}
