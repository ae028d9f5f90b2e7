//! Compatibility with a client Strom did not write: librdkafka 2.x through the
//! `rdkafka` crate. Admin (create/delete topics), metadata, keyed produce with
//! headers under every codec, assign-based consumption, watermarks and
//! offsets-for-times.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 8;
const TIMEOUT: Duration = Duration::from_secs(15);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn base_config(server: &TestServer) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", server.bootstrap())
        .set("client.id", "strom-compat")
        .set("broker.address.family", "v4");
    c
}

fn admin(server: &TestServer) -> AdminClient<DefaultClientContext> {
    base_config(server).create().expect("admin client")
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT))
}

fn consumer(server: &TestServer) -> BaseConsumer {
    base_config(server)
        .set("group.id", "strom-compat")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("consumer")
}

fn producer(server: &TestServer, codec: &str) -> FutureProducer {
    base_config(server)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// Creates topics through the admin API and asserts each succeeded.
fn create_topics(server: &TestServer, topics: &[(&str, i32)]) {
    let admin = admin(server);
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let res = runtime()
        .block_on(admin.create_topics(new.iter(), &admin_opts()))
        .expect("CreateTopics");
    for r in res {
        r.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code:?}"));
    }
}

/// The record number `i` of a run: keys repeat (1,000 distinct) so the
/// partitioner's choice can be checked for consistency; values vary in length
/// and content, some are null, some empty; both headers carry binary values.
struct Rec {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    headers: [(&'static str, Vec<u8>); 2],
}

fn gen(codec: &str, i: usize) -> Rec {
    let key = format!("key-{:04}", i % 1000).into_bytes();
    let value = if i.is_multiple_of(997) {
        None
    } else if i.is_multiple_of(991) {
        Some(Vec::new())
    } else {
        let len = 10 + (i * 7919) % 400;
        let mut v = format!("value-{i}-{codec}-").into_bytes();
        let mut x = i as u32 ^ 0x9e37_79b9;
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half repetitive text, half noise: compressible, not trivial.
            if (v.len() / 16) % 2 == 0 {
                v.push(b'a' + (v.len() % 26) as u8);
            } else {
                v.push(x as u8);
            }
        }
        Some(v)
    };
    Rec {
        key,
        value,
        headers: [
            ("seq", (i as u64).to_be_bytes().to_vec()),
            (
                "origin",
                format!("strom-compat/{codec}/\u{1F980}").into_bytes(),
            ),
        ],
    }
}

fn roundtrip(codec: &str) {
    let mut server = TestServer::start();
    let topic = format!("compat-{codec}");
    create_topics(&server, &[(&topic, PARTITIONS)]);
    let rt = runtime();

    // Produce.
    let started = Instant::now();
    let producer = producer(&server, codec);
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let r = gen(codec, i);
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: r.headers[0].0,
                value: Some(&r.headers[0].1),
            })
            .insert(Header {
                key: r.headers[1].0,
                value: Some(&r.headers[1].1),
            });
        let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&topic)
            .key(&r.key)
            .headers(headers);
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce #{i}: {e}"),
            }
        }
    }
    let delivered = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(180), async {
            let mut out = Vec::with_capacity(RECORDS);
            for (i, f) in pending.into_iter().enumerate() {
                match f.await.expect("delivery future canceled") {
                    Ok(d) => out.push((d.partition, d.offset)),
                    Err((e, _)) => panic!("delivery of #{i} failed: {e}"),
                }
            }
            out
        })
        .await
    });
    let delivered: Vec<(i32, i64)> = delivered
        .unwrap_or_else(|_| panic!("deliveries not done within 180 s; {}", server.probe()));
    let produce_ms = started.elapsed().as_millis();

    // Delivery reports: every partition got a contiguous range from 0, in
    // production order, and a key always lands on the same partition.
    let mut by_pos: HashMap<(i32, i64), usize> = HashMap::with_capacity(RECORDS);
    let mut per_partition: Vec<Vec<i64>> = vec![Vec::new(); PARTITIONS as usize];
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    for (i, &(p, off)) in delivered.iter().enumerate() {
        assert!(
            (0..PARTITIONS).contains(&p),
            "#{i} delivered to partition {p}"
        );
        assert!(
            by_pos.insert((p, off), i).is_none(),
            "offset {p}/{off} given twice"
        );
        per_partition[p as usize].push(off);
        let k = gen(codec, i).key;
        let prev = *key_partition.entry(k).or_insert(p);
        assert_eq!(prev, p, "key of #{i} moved from partition {prev} to {p}");
    }
    for (p, offs) in per_partition.iter().enumerate() {
        let expect: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(
            offs, &expect,
            "partition {p}: offsets not contiguous from 0 in production order"
        );
    }
    assert!(
        per_partition.iter().filter(|o| !o.is_empty()).count() == PARTITIONS as usize,
        "keyed records should spread over all partitions"
    );

    // Consume everything back with assign from offset 0.
    let started = Instant::now();
    let consumer = consumer(&server);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut next: Vec<i64> = vec![0; PARTITIONS as usize];
    let mut received = 0usize;
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while received < RECORDS {
        if Instant::now() > deadline {
            panic!(
                "consumed {received}/{RECORDS} in 180 s; next offsets {next:?}; errors {errors:?}; {}",
                server.probe()
            );
        }
        let msg = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(e)) => {
                errors.push(e.to_string());
                assert!(errors.len() < 50, "consumer errors: {errors:?}");
                continue;
            }
            Some(Ok(m)) => m,
        };
        assert_eq!(msg.topic(), topic);
        let (p, off) = (msg.partition(), msg.offset());
        assert_eq!(
            off, next[p as usize],
            "partition {p}: got offset {off}, expected {}",
            next[p as usize]
        );
        next[p as usize] += 1;
        let i = *by_pos
            .get(&(p, off))
            .unwrap_or_else(|| panic!("consumed {p}/{off}, which was never produced"));
        let want = gen(codec, i);
        assert_eq!(msg.key(), Some(&want.key[..]), "key at {p}/{off} (#{i})");
        assert_eq!(
            msg.payload(),
            want.value.as_deref(),
            "value at {p}/{off} (#{i})"
        );
        let hs = msg
            .headers()
            .unwrap_or_else(|| panic!("headers missing at {p}/{off} (#{i})"));
        let got: Vec<(String, Option<Vec<u8>>)> = hs
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
            .collect();
        let expect: Vec<(String, Option<Vec<u8>>)> = want
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone())))
            .collect();
        assert_eq!(got, expect, "headers at {p}/{off} (#{i})");
        received += 1;
    }
    let consume_ms = started.elapsed().as_millis();
    for p in 0..PARTITIONS {
        assert_eq!(next[p as usize], per_partition[p as usize].len() as i64);
        let (lo, hi) = consumer
            .fetch_watermarks(&topic, p, TIMEOUT)
            .unwrap_or_else(|e| panic!("watermarks of partition {p}: {e}; {}", server.probe()));
        assert_eq!(
            (lo, hi),
            (0, next[p as usize]),
            "watermarks of partition {p}"
        );
    }
    println!(
        "{codec}: produced {RECORDS} in {produce_ms} ms, consumed in {consume_ms} ms, per partition {:?}, consumer errors {errors:?}",
        next
    );
}

#[test]
fn roundtrip_none() {
    roundtrip("none");
}

#[test]
fn roundtrip_gzip() {
    roundtrip("gzip");
}

#[test]
fn roundtrip_snappy() {
    roundtrip("snappy");
}

#[test]
fn roundtrip_lz4() {
    roundtrip("lz4");
}

#[test]
fn roundtrip_zstd() {
    roundtrip("zstd");
}

fn topic_names(c: &BaseConsumer) -> Vec<String> {
    let md = c.fetch_metadata(None, TIMEOUT).expect("metadata");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

#[test]
fn metadata_lists_broker_topics_partitions_and_delete_topic() {
    let server = TestServer::start_with(&[("node.id", "3")]);
    create_topics(&server, &[("md-a", 8), ("md-b", 3)]);
    let c = consumer(&server);

    let md = c.fetch_metadata(None, TIMEOUT).expect("metadata");
    let brokers: Vec<(i32, String, i32)> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    assert_eq!(
        brokers,
        vec![(3, "127.0.0.1".to_string(), server.port() as i32)],
        "brokers"
    );
    for (name, n) in [("md-a", 8), ("md-b", 3)] {
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("topic {name} not listed"));
        assert!(t.error().is_none(), "{name}: {:?}", t.error());
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort();
        assert_eq!(ids, (0..n).collect::<Vec<_>>(), "{name} partitions");
        for p in t.partitions() {
            assert!(p.error().is_none(), "{name}/{}: {:?}", p.id(), p.error());
            assert_eq!(p.leader(), 3, "{name}/{} leader", p.id());
            assert_eq!(p.replicas(), &[3], "{name}/{} replicas", p.id());
            assert_eq!(p.isr(), &[3], "{name}/{} isr", p.id());
        }
    }

    // One topic by name.
    let one = c
        .fetch_metadata(Some("md-a"), TIMEOUT)
        .expect("metadata md-a");
    assert_eq!(one.topics().len(), 1);
    assert_eq!(one.topics()[0].partitions().len(), 8);

    // Delete md-b.
    let admin = admin(&server);
    let rt = runtime();
    let res = rt
        .block_on(admin.delete_topics(&["md-b"], &admin_opts()))
        .expect("DeleteTopics");
    assert_eq!(res, vec![Ok("md-b".to_string())]);
    wait_for(TIMEOUT, "md-b to disappear from metadata", || {
        let names = topic_names(&c);
        assert!(
            names.iter().any(|n| n == "md-a"),
            "md-a vanished: {names:?}"
        );
        (!names.iter().any(|n| n == "md-b")).then_some(())
    });

    // Deleting it again: UNKNOWN_TOPIC_OR_PARTITION.
    let res = rt
        .block_on(admin.delete_topics(&["md-b"], &admin_opts()))
        .expect("DeleteTopics");
    assert_eq!(
        res,
        vec![Err((
            "md-b".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );
}

#[test]
fn watermarks_and_offsets_for_times() {
    let server = TestServer::start();
    create_topics(&server, &[("times", 1), ("empty", 2)]);
    let rt = runtime();
    let producer = producer(&server, "none");
    // Whole seconds, an hour ago: well inside retention, clear of "now".
    let base = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 1000
        - 3600)
        * 1000;
    let mut futures = Vec::new();
    for i in 0..20i64 {
        let value = format!("t{i}");
        let rec = FutureRecord::<(), String>::to("times")
            .partition(0)
            .payload(&value)
            .timestamp(base + i * 1000);
        futures.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    let offsets: Vec<i64> = rt.block_on(async {
        let mut out = Vec::new();
        for f in futures {
            out.push(f.await.unwrap().expect("delivered").offset);
        }
        out
    });
    assert_eq!(offsets, (0..20).collect::<Vec<_>>());

    let c = consumer(&server);
    assert_eq!(c.fetch_watermarks("times", 0, TIMEOUT).unwrap(), (0, 20));
    assert_eq!(c.fetch_watermarks("empty", 0, TIMEOUT).unwrap(), (0, 0));
    assert_eq!(c.fetch_watermarks("empty", 1, TIMEOUT).unwrap(), (0, 0));

    // (timestamp asked, offset expected): the first record whose timestamp is
    // at or after the one asked for, at record (not batch) granularity.
    let cases = [
        (base - 10_000, Offset::Offset(0)),
        (base, Offset::Offset(0)),
        (base + 1, Offset::Offset(1)),
        (base + 5_500, Offset::Offset(6)),
        (base + 19_000, Offset::Offset(19)),
        (base + 19_001, Offset::End),
    ];
    for (ts, want) in cases {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, Offset::Offset(ts))
            .unwrap();
        let got = c
            .offsets_for_times(tpl, TIMEOUT)
            .expect("offsets_for_times");
        let e = got.elements();
        assert_eq!(e.len(), 1);
        assert!(e[0].error().is_ok(), "{:?}", e[0].error());
        assert_eq!(
            e[0].offset(),
            want,
            "offsets_for_times at base{:+} ms",
            ts - base
        );
    }
}

#[test]
fn create_topics_errors_and_validate_only() {
    let server = TestServer::start();
    let admin = admin(&server);
    let rt = runtime();
    let create = |topics: &[NewTopic], opts: &AdminOptions| {
        rt.block_on(admin.create_topics(topics.iter(), opts))
            .expect("CreateTopics")
    };
    let fixed = |name: &'static str, rf: i32| NewTopic::new(name, 1, TopicReplication::Fixed(rf));

    assert_eq!(
        create(&[fixed("dup", 1)], &admin_opts()),
        vec![Ok("dup".to_string())]
    );
    assert_eq!(
        create(&[fixed("dup", 1)], &admin_opts()),
        vec![Err((
            "dup".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
    assert_eq!(
        create(&[fixed("rf3", 3)], &admin_opts()),
        vec![Err((
            "rf3".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))]
    );

    let long: &'static str = Box::leak("x".repeat(250).into_boxed_str());
    for name in ["bad name!", long, ".", ".."] {
        assert_eq!(
            create(&[fixed(name, 1)], &admin_opts()),
            vec![Err((name.to_string(), RDKafkaErrorCode::InvalidTopic))],
            "topic name {name:?}"
        );
    }

    // validate_only answers as a real create would, and creates nothing.
    let validate = admin_opts().validate_only(true);
    assert_eq!(
        create(&[fixed("vo", 1)], &validate),
        vec![Ok("vo".to_string())]
    );
    assert_eq!(
        create(&[fixed("dup", 1)], &validate),
        vec![Err((
            "dup".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
    assert_eq!(
        create(&[fixed("bad name!", 1)], &validate),
        vec![Err((
            "bad name!".to_string(),
            RDKafkaErrorCode::InvalidTopic
        ))]
    );

    let c = consumer(&server);
    let names = topic_names(&c);
    assert!(names.iter().any(|n| n == "dup"), "{names:?}");
    for absent in ["vo", "rf3", "bad name!", ".", "..", long] {
        assert!(
            !names.iter().any(|n| n == absent),
            "{absent:?} must not exist: {names:?}"
        );
    }
    // And "vo" can still really be created afterwards.
    assert_eq!(
        create(&[fixed("vo", 1)], &admin_opts()),
        vec![Ok("vo".to_string())]
    );
}
