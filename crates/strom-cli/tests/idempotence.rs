//! Idempotent producers (issue 5): librdkafka with `enable.idempotence=true`
//! across broker restarts (SIGKILL and SIGTERM), and raw-frame checks of the
//! producer-state rules: duplicates acknowledged with their original offset
//! and written once, sequence gaps, stale epochs.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

const RECORDS: usize = 200_000;
const PARTITIONS: i32 = 4;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

#[derive(Default)]
struct Counts {
    delivered: AtomicUsize,
    failed: AtomicUsize,
}

struct Ctx(Arc<Counts>);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                eprintln!("delivery failed: {e}");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[test]
fn idempotent_producer_survives_two_restarts_exactly_once_in_order() {
    let mut server = TestServer::start();
    let mut raw = server.connect();
    assert_eq!(raw.create_topic("idem", PARTITIONS), 0);
    drop(raw);

    let counts = Arc::new(Counts::default());
    let producer: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("broker.address.family", "v4")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "500")
        .set("message.timeout.ms", "300000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Ctx(counts.clone()))
        .expect("idempotent producer");

    // Restart once a third (SIGKILL) and two thirds (SIGTERM) are acknowledged,
    // while the rest is still being sent.
    let restarts = [(RECORDS / 3, true), (2 * RECORDS / 3, false)];
    let mut next_restart = 0;
    for i in 0..RECORDS {
        let p = (i % PARTITIONS as usize) as i32;
        let value = (i as u64).to_be_bytes();
        let mut rec = BaseRecord::<(), [u8]>::to("idem")
            .partition(p)
            .payload(&value[..]);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    // queue full: let deliveries drain
                    assert!(format!("{e}").contains("Queue full"), "send failed: {e}");
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        if next_restart < restarts.len() && i == restarts[next_restart].0 + 20_000 {
            let (at, kill) = restarts[next_restart];
            wait_for(
                Duration::from_secs(120),
                "deliveries before restart",
                || (counts.delivered.load(Ordering::Relaxed) >= at).then_some(()),
            );
            if kill {
                server.kill9();
            } else {
                let status = server.terminate();
                assert!(status.success(), "SIGTERM exit status {status:?}");
            }
            server.restart();
            next_restart += 1;
        }
    }
    assert_eq!(next_restart, 2, "both restarts happened");
    producer
        .flush(Duration::from_secs(300))
        .expect("flush all records");
    assert_eq!(
        counts.failed.load(Ordering::Relaxed),
        0,
        "no delivery may fail"
    );
    assert_eq!(counts.delivered.load(Ordering::Relaxed), RECORDS);
    drop(producer);

    // Every record exactly once, in send order per partition.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("broker.address.family", "v4")
        .set("group.id", "idem-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("idem", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: HashMap<i32, Vec<u64>> = HashMap::new();
    let mut total = 0;
    wait_for(Duration::from_secs(120), "all records consumed", || {
        while let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            let v = u64::from_be_bytes(m.payload().unwrap().try_into().unwrap());
            seen.entry(m.partition()).or_default().push(v);
            total += 1;
        }
        (total >= RECORDS).then_some(())
    });
    // nothing beyond the expected count arrives
    while let Some(m) = consumer.poll(Duration::from_millis(500)) {
        m.expect("consume");
        total += 1;
    }
    assert_eq!(total, RECORDS, "duplicates in the topic");
    for p in 0..PARTITIONS {
        let got = &seen[&p];
        let want: Vec<u64> = (0..RECORDS as u64)
            .filter(|i| (*i % PARTITIONS as u64) as i32 == p)
            .collect();
        assert_eq!(got.len(), want.len(), "partition {p} record count");
        assert!(got == &want, "partition {p} out of order or wrong records");
    }
    server.assert_healthy();
}

fn init_producer_id(raw: &mut RawClient) -> (i64, i16) {
    let resp: InitProducerIdResponse = raw.call(
        &InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
        4,
    );
    assert_eq!(resp.error_code, 0, "{resp:?}");
    assert_eq!(resp.producer_epoch, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

/// A record batch with producer id, epoch and base sequence.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                format!("v{}", seq as usize + i).into_bytes(),
            )
        })
        .collect();
    let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let mut b = record_batch(&refs).to_vec();
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    fix_crc(&mut b);
    Bytes::from(b)
}

#[test]
fn producer_ids_are_never_reused_after_restart() {
    let mut server = TestServer::start();
    let mut raw = server.connect();
    let (a, _) = init_producer_id(&mut raw);
    let (b, _) = init_producer_id(&mut raw);
    assert!(b > a);
    drop(raw);
    server.kill9();
    server.restart();
    let mut raw = server.connect();
    let (c, _) = init_producer_id(&mut raw);
    assert!(c > b, "id {c} reused after a crash (had {a}, {b})");
}

#[test]
fn duplicate_batch_is_acknowledged_with_its_original_offset_and_written_once() {
    let mut server = TestServer::start();
    let mut raw = server.connect();
    assert_eq!(raw.create_topic("dup", 1), 0);
    let (pid, epoch) = init_producer_id(&mut raw);
    let first = raw.produce("dup", 0, idempotent_batch(pid, epoch, 0, 3), -1);
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    let second = raw.produce("dup", 0, idempotent_batch(pid, epoch, 3, 2), -1);
    assert_eq!((second.error_code, second.base_offset), (0, 3));
    // retries of both batches: original offsets, nothing appended
    let retry = raw.produce("dup", 0, idempotent_batch(pid, epoch, 0, 3), -1);
    assert_eq!((retry.error_code, retry.base_offset), (0, 0));
    let retry = raw.produce("dup", 0, idempotent_batch(pid, epoch, 3, 2), -1);
    assert_eq!((retry.error_code, retry.base_offset), (0, 3));
    assert_eq!(raw.latest_offset("dup", 0), 5);

    // still a duplicate after a clean restart and after a crash
    drop(raw);
    assert!(server.terminate().success());
    server.restart();
    let mut raw = server.connect();
    let retry = raw.produce("dup", 0, idempotent_batch(pid, epoch, 3, 2), -1);
    assert_eq!((retry.error_code, retry.base_offset), (0, 3));
    let next = raw.produce("dup", 0, idempotent_batch(pid, epoch, 5, 1), -1);
    assert_eq!((next.error_code, next.base_offset), (0, 5));
    drop(raw);
    server.kill9();
    server.restart();
    let mut raw = server.connect();
    let retry = raw.produce("dup", 0, idempotent_batch(pid, epoch, 5, 1), -1);
    assert_eq!((retry.error_code, retry.base_offset), (0, 5));
    assert_eq!(raw.latest_offset("dup", 0), 6);
    let data = raw.fetch("dup", 0, 0, 0, 1);
    assert_eq!(decode_records(data.records).len(), 6, "each record once");
}

#[test]
fn sequence_gap_and_stale_epoch_are_refused() {
    let server = TestServer::start();
    let mut raw = server.connect();
    assert_eq!(raw.create_topic("seq", 1), 0);
    let (pid, _) = init_producer_id(&mut raw);
    assert_eq!(
        raw.produce("seq", 0, idempotent_batch(pid, 0, 0, 2), -1)
            .error_code,
        0
    );
    // a gap: sequence 5 after 0..=1
    let gap = raw.produce("seq", 0, idempotent_batch(pid, 0, 5, 1), -1);
    assert_eq!(gap.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "{gap:?}");
    assert_eq!(gap.base_offset, -1);
    // a new epoch restarts at sequence 0; the old epoch is then stale
    assert_eq!(
        raw.produce("seq", 0, idempotent_batch(pid, 1, 0, 1), -1)
            .error_code,
        0
    );
    let stale = raw.produce("seq", 0, idempotent_batch(pid, 0, 2, 1), -1);
    assert_eq!(stale.error_code, INVALID_PRODUCER_EPOCH, "{stale:?}");
    // a new epoch must start at 0
    let bad = raw.produce("seq", 0, idempotent_batch(pid, 2, 7, 1), -1);
    assert_eq!(bad.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "{bad:?}");
    assert_eq!(
        raw.latest_offset("seq", 0),
        3,
        "refused batches are not written"
    );
}
