//! Partition data replication across real `strom server` processes: three
//! combined broker+controller nodes, a topic with replication factor 3.
//! An `rdkafka` producer writes with `acks=all`; every replica's log ends up
//! byte-identical; with a follower SIGKILLed `acks=all` keeps working at
//! `min.insync.replicas=2` and fails with NOT_ENOUGH_REPLICAS at 3 once the
//! ISR has shrunk; the restarted follower truncates, catches up and rejoins
//! the ISR.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::MetadataRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const NONE: i16 = 0;
const NOT_ENOUGH_REPLICAS: i16 = 19;
/// `replica.fetch.wait.max.ms` of the test cluster.
const FETCH_WAIT_MS: u64 = 200;

/// One node of the test cluster.
struct Node {
    id: i32,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("server.stderr"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strom"))
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn strom server");
        self.child = Some(child);
    }

    /// SIGSTOP (`true`) or SIGCONT: a hung broker.
    fn pause(&mut self, stop: bool) {
        let pid = self.child.as_ref().expect("running").id();
        let sig = if stop { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // a stopped process dies of SIGKILL too, but say so for clarity
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.stderr")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("strom-repl-")
            .tempdir()
            .unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for (i, (p, c)) in ports.iter().enumerate() {
            let id = i as i32 + 1;
            let dir = tmp.path().join(format!("node{id}"));
            std::fs::create_dir_all(dir.join("data")).unwrap();
            let config = dir.join("server.properties");
            std::fs::write(
                &config,
                format!(
                    "node.id={id}\nprocess.roles=broker,controller\n\
                     listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}\n\
                     advertised.listeners=PLAINTEXT://127.0.0.1:{p}\n\
                     listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                     controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                     controller.quorum.voters={}\nlog.dirs={}\n\
                     strom.admin.listener=127.0.0.1:0\n\
                     broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=500\n\
                     replica.lag.time.max.ms=3000\nlog.segment.bytes=65536\n\
                     replica.fetch.wait.max.ms={FETCH_WAIT_MS}\n",
                    voters.join(","),
                    dir.join("data").display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                id,
                port: *p,
                dir,
                config,
                child: None,
            });
        }
        for n in nodes.iter_mut() {
            n.spawn();
        }
        let c = Cluster { _tmp: tmp, nodes };
        for n in &c.nodes {
            c.wait(
                Duration::from_secs(60),
                &format!("node {} lists 3 brokers", n.id),
                || {
                    c.try_metadata(n.id, None)
                        .filter(|m| m.brokers.len() == c.nodes.len())
                        .map(|_| ())
                },
            );
        }
        c
    }

    fn node(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits for `f`, failing with every node's stderr tail.
    fn wait<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                for n in &self.nodes {
                    let err = n.stderr();
                    let tail: String = err
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    eprintln!("--- node {} stderr (tail) ---\n{tail}", n.id);
                }
                panic!("timed out after {timeout:?} waiting for: {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_metadata(
        &self,
        id: i32,
        topics: Option<Vec<&str>>,
    ) -> Option<kafka_protocol::messages::MetadataResponse> {
        let addr = self.nodes[id as usize - 1].addr();
        // probe first: RawClient::connect panics on a refused connection
        drop(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?);
        let mut c = RawClient::connect(addr);
        c.set_read_timeout(Duration::from_secs(5));
        let req = MetadataRequest::default().with_topics(topics.map(|ts| {
            ts.into_iter()
                .map(|t| {
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic_name(t)))
                })
                .collect()
        }));
        c.try_call(&req, 12).ok()
    }

    /// (leader, leader epoch, isr) of `topic`-0 as node `via` sees it.
    fn partition_state(&self, via: i32, topic: &str) -> Option<(i32, i32, Vec<i32>)> {
        let m = self.try_metadata(via, Some(vec![topic]))?;
        let t = m.topics.first()?;
        let p = t.partitions.iter().find(|p| p.partition_index == 0)?;
        (t.error_code == NONE && p.error_code == NONE).then(|| {
            let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            isr.sort();
            (p.leader_id.0, p.leader_epoch, isr)
        })
    }

    /// Creates `name` (1 partition, RF 3), waiting while the cluster cannot
    /// place it yet (brokers still fenced just after start-up).
    fn create_topic(&self, name: &str, min_isr: &str) {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(1)
                .with_replication_factor(3)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_value(Some(StrBytes::from_string(min_isr.into())))])])
            .with_timeout_ms(30_000);
        let mut last: Option<i16> = None;
        self.wait(Duration::from_secs(30), &format!("create {name}"), || {
            let mut c = RawClient::connect(self.nodes[0].addr());
            let resp = c.call(&req, CREATE_TOPICS_V);
            let code = resp.topics[0].error_code;
            // TOPIC_ALREADY_EXISTS after REQUEST_TIMED_OUT: the earlier
            // attempt created it
            let done = code == NONE || (code == 36 && last == Some(7));
            last = Some(code);
            done.then_some(())
        });
    }

    /// Waits until every live node reports `topic`-0 with this ISR.
    fn wait_isr(&self, topic: &str, isr: &[i32]) -> (i32, i32) {
        self.wait(
            Duration::from_secs(60),
            &format!("{topic} ISR {isr:?}"),
            || {
                let states: Vec<_> = self
                    .nodes
                    .iter()
                    .filter(|n| n.child.is_some())
                    .map(|n| self.partition_state(n.id, topic))
                    .collect();
                let first = states.first()?.clone()?;
                (first.2 == isr && states.iter().all(|s| s.as_ref() == Some(&first)))
                    .then_some((first.0, first.1))
            },
        )
    }
}

/// Every segment file of a partition's log, concatenated in offset order.
fn log_bytes(dir: &Path, topic: &str) -> Vec<u8> {
    let pdir = dir.join(format!("{topic}-0"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect()
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        // below the test's small log.segment.bytes
        .set("batch.size", "16000")
        .create()
        .expect("producer")
}

fn produce_all(p: &FutureProducer, topic: &str, from: usize, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in from..from + n {
            let key = format!("k{i}");
            let value = format!("value-{i}-{}", "x".repeat(i % 200));
            pending.push(
                p.send_result(FutureRecord::to(topic).key(&key).payload(&value))
                    .unwrap(),
            );
        }
        for (i, f) in pending.into_iter().enumerate() {
            let r = f.await.expect("delivery future");
            if let Err((e, _)) = r {
                panic!("record {} not acknowledged: {e}", from + i);
            }
        }
    });
}

#[test]
fn acks_all_replicates_to_every_replica_and_survives_a_follower_kill() {
    let mut cluster = Cluster::start(3);
    cluster.create_topic("rep", "2");
    cluster.create_topic("strict", "3");
    let (leader, _) = cluster.wait_isr("rep", &[1, 2, 3]);
    cluster.wait_isr("strict", &[1, 2, 3]);

    let p = producer(&cluster.bootstrap());
    produce_all(&p, "rep", 0, 3_000);
    // every replica holds exactly the leader's bytes
    let leader_dir = cluster.node(leader).log_dir();
    cluster.wait(Duration::from_secs(30), "replicas byte-identical", || {
        let want = log_bytes(&leader_dir, "rep");
        (!want.is_empty()
            && cluster
                .nodes
                .iter()
                .all(|n| log_bytes(&n.log_dir(), "rep") == want))
        .then_some(())
    });

    // SIGKILL a follower of both topics' leader... of "rep"
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(follower).kill9();
    // min.insync=2: acks=all keeps working (after the ISR drops the follower)
    produce_all(&p, "rep", 3_000, 500);
    let rest: Vec<i32> = (1..=3).filter(|id| *id != follower).collect();
    let (leader_now, _) = cluster.wait_isr("rep", &rest);
    assert_eq!(leader_now, leader, "the leader stayed");
    // min.insync=3: NOT_ENOUGH_REPLICAS once "strict"'s ISR has shrunk
    let (strict_leader, _) = cluster.wait_isr(
        "strict",
        &(1..=3).filter(|id| *id != follower).collect::<Vec<_>>(),
    );
    let mut raw = RawClient::connect(cluster.node(strict_leader).addr());
    let r = raw.produce("strict", 0, record_batch(&[(b"k", b"v")]), -1);
    assert_eq!(r.error_code, NOT_ENOUGH_REPLICAS, "{r:?}");
    // acks=1 is not bound by min.insync.replicas
    assert_eq!(
        raw.produce("strict", 0, record_batch(&[(b"k", b"v")]), 1)
            .error_code,
        NONE
    );

    // the follower returns: it catches up and rejoins both ISRs
    cluster.node(follower).spawn();
    cluster.wait_isr("rep", &[1, 2, 3]);
    cluster.wait_isr("strict", &[1, 2, 3]);
    let r = raw.produce("strict", 0, record_batch(&[(b"k", b"v")]), -1);
    assert_eq!(r.error_code, NONE, "{r:?}");
    produce_all(&p, "rep", 3_500, 500);
    let leader_dir = cluster.node(leader).log_dir();
    let follower_dir = cluster.node(follower).log_dir();
    cluster.wait(
        Duration::from_secs(30),
        "the restarted follower caught up",
        || {
            let want = log_bytes(&leader_dir, "rep");
            (log_bytes(&follower_dir, "rep") == want).then_some(())
        },
    );
}

#[test]
fn a_divergent_tail_of_a_deposed_leader_is_truncated() {
    let mut cluster = Cluster::start(3);
    cluster.create_topic("div", "1");
    let (old, epoch) = cluster.wait_isr("div", &[1, 2, 3]);
    let mut raw = RawClient::connect(cluster.node(old).addr());
    for i in 0..20 {
        let v = format!("committed-{i}");
        let r = raw.produce("div", 0, record_batch(&[(b"k", v.as_bytes())]), -1);
        assert_eq!(r.error_code, NONE, "{r:?}");
    }
    // Both followers hang: the leader still takes acks=1 writes, which
    // never reach them (and the ISR cannot shrink: no controller quorum).
    // A follower's long poll already waiting at the leader would carry
    // such writes to it when it resumes (its answer sits in the socket), so
    // the writes come after those polls ended: a timer in the leader
    // (replica.fetch.wait.max.ms), nothing a test can observe.
    let followers: Vec<i32> = (1..=3).filter(|id| *id != old).collect();
    for f in &followers {
        cluster.node(*f).pause(true);
    }
    std::thread::sleep(Duration::from_millis(4 * FETCH_WAIT_MS));
    for i in 0..5 {
        let v = format!("divergent-{i}");
        let r = raw.produce("div", 0, record_batch(&[(b"k", v.as_bytes())]), 1);
        assert_eq!(r.error_code, NONE, "{r:?}");
    }
    drop(raw);
    let diverged = log_bytes(&cluster.node(old).log_dir(), "div");
    cluster.node(old).kill9();
    for f in &followers {
        cluster.node(*f).pause(false);
    }
    // one of the followers is elected (it was in the ISR) in a new epoch
    let via = followers[0];
    let (new, new_epoch) = cluster.wait(Duration::from_secs(60), "a new leader", || {
        cluster
            .partition_state(via, "div")
            .filter(|(l, e, _)| *l != old && *l >= 0 && *e > epoch)
            .map(|(l, e, _)| (l, e))
    });
    let mut raw = RawClient::connect(cluster.node(new).addr());
    for i in 0..10 {
        let v = format!("after-{i}");
        cluster.wait(
            Duration::from_secs(30),
            "acks=all on the new leader",
            || {
                let r = raw.produce("div", 0, record_batch(&[(b"k", v.as_bytes())]), -1);
                (r.error_code == NONE).then_some(())
            },
        );
    }
    // the deposed leader returns: it truncates its divergent tail and
    // copies the new leader's log
    cluster.node(old).spawn();
    cluster.wait_isr("div", &[1, 2, 3]);
    let new_dir = cluster.node(new).log_dir();
    let old_dir = cluster.node(old).log_dir();
    cluster.wait(
        Duration::from_secs(30),
        "logs identical after truncation",
        || {
            let want = log_bytes(&new_dir, "div");
            (log_bytes(&old_dir, "div") == want
                && cluster
                    .nodes
                    .iter()
                    .all(|n| log_bytes(&n.log_dir(), "div") == want))
            .then_some(())
        },
    );
    let now = log_bytes(&old_dir, "div");
    assert_ne!(now, diverged);
    let text = String::from_utf8_lossy(&now);
    assert!(
        !text.contains("divergent-"),
        "the divergent records are gone"
    );
    assert!(text.contains("committed-19") && text.contains("after-9"));
    assert!(new_epoch > epoch);
}

/// The batches of `log` (concatenated segment files) from `offset` on.
fn batches_from(log: &[u8], offset: i64) -> &[u8] {
    let mut pos = 0;
    while pos + 12 <= log.len() {
        let base = i64::from_be_bytes(log[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(log[pos + 8..pos + 12].try_into().unwrap()) as usize;
        if base >= offset {
            return &log[pos..];
        }
        pos += 12 + len;
    }
    &[]
}

#[test]
fn a_follower_behind_the_leaders_log_start_restarts_its_log_there() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
    };
    let mut cluster = Cluster::start(3);
    cluster.create_topic("del", "1");
    let (leader, _) = cluster.wait_isr("del", &[1, 2, 3]);
    let mut raw = RawClient::connect(cluster.node(leader).addr());
    let value = vec![b'x'; 1000];
    for _ in 0..100 {
        let r = raw.produce("del", 0, record_batch(&[(b"k", &value)]), -1);
        assert_eq!(r.error_code, NONE, "{r:?}");
    }
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(follower).kill9();
    let rest: Vec<i32> = (1..=3).filter(|id| *id != follower).collect();
    cluster.wait_isr("del", &rest);
    for _ in 0..100 {
        let r = raw.produce("del", 0, record_batch(&[(b"k", &value)]), -1);
        assert_eq!(r.error_code, NONE, "{r:?}");
    }
    // the leader's log now starts past everything the follower has
    let req = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name("del"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(150)])])
        .with_timeout_ms(10_000);
    let resp = raw.call(&req, 2);
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (NONE, 150), "{resp:?}");

    // the follower's fetch from offset 100 is out of range: it empties its
    // log, restarts it at 150, copies the rest and rejoins the ISR
    cluster.node(follower).spawn();
    cluster.wait_isr("del", &[1, 2, 3]);
    let leader_dir = cluster.node(leader).log_dir();
    let follower_dir = cluster.node(follower).log_dir();
    cluster.wait(
        Duration::from_secs(30),
        "the follower's log = the leader's from 150",
        || {
            let want = log_bytes(&leader_dir, "del");
            let got = log_bytes(&follower_dir, "del");
            (!got.is_empty() && got == batches_from(&want, 150)).then_some(())
        },
    );
    assert!(follower_dir
        .join("del-0")
        .join(format!("{:020}.log", 150))
        .exists());
}
