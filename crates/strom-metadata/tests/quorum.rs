//! The metadata quorum end to end: real TCP on loopback between voters, real
//! temp dirs, nodes shut down and restarted from their directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_metadata::records::*;
use strom_metadata::{MetadataImage, MetadataQuorum, NodeId, ProposeError, QuorumConfig};
use tokio::net::TcpListener;
use uuid::Uuid;

fn test_config() -> QuorumConfig {
    QuorumConfig {
        // Short enough for quick failover tests, long enough that a loaded
        // 2-core CI machine does not miss heartbeats and start elections.
        election_timeout_min: Duration::from_millis(600),
        election_timeout_max: Duration::from_millis(1200),
        heartbeat_interval: Duration::from_millis(100),
        snapshot_interval_entries: 1_000,
        log_entries_kept_after_snapshot: 10,
        segment_bytes: 4 << 10,
        connect_timeout: Duration::from_millis(300),
        snapshot_chunk_bytes: 1 << 10,
        propose_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn topic(name: &str, partitions: i32) -> Vec<MetadataRecord> {
    let id = Uuid::new_v4();
    let mut v = vec![MetadataRecord::Topic(TopicRecord {
        name: name.into(),
        topic_id: id,
    })];
    for p in 0..partitions {
        v.push(MetadataRecord::Partition(PartitionRecord {
            partition_id: p,
            topic_id: id,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            removing_replicas: vec![],
            adding_replicas: vec![],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }));
    }
    v
}

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    voters: BTreeMap<NodeId, String>,
    nodes: BTreeMap<NodeId, Option<MetadataQuorum>>,
    config: QuorumConfig,
}

impl Cluster {
    async fn start(n: i32, config: QuorumConfig) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, l);
        }
        let voters: BTreeMap<NodeId, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let mut c = Cluster {
            _tmp: tmp,
            voters,
            nodes: BTreeMap::new(),
            config,
        };
        for (id, l) in listeners {
            let q = MetadataQuorum::start_with_listener(
                id,
                c.voters.clone(),
                &c.dir(id),
                c.config.clone(),
                l,
            )
            .await
            .unwrap();
            c.nodes.insert(id, Some(q));
        }
        c
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self._tmp.path().join(format!("node-{id}"))
    }

    fn node(&self, id: NodeId) -> &MetadataQuorum {
        self.nodes[&id].as_ref().expect("node is running")
    }

    fn running(&self) -> impl Iterator<Item = &MetadataQuorum> {
        self.nodes.values().flatten()
    }

    /// The leader every running node agrees on.
    async fn leader(&self) -> NodeId {
        let mut agreed = None;
        wait_until("an agreed leader", Duration::from_secs(10), || {
            let leaders: Vec<_> = self.running().map(|q| q.leader().map(|l| l.0)).collect();
            agreed = leaders[0].filter(|l| {
                leaders.iter().all(|x| *x == Some(*l))
                    && self.nodes.get(l).is_some_and(|n| n.is_some())
            });
            agreed.is_some_and(|l| self.node(l).is_leader())
        })
        .await;
        agreed.unwrap()
    }

    /// Proposes on the current leader, following NotLeader during elections.
    async fn propose(&self, records: Vec<MetadataRecord>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.leader().await;
            match self.node(leader).propose(records.clone()).await {
                Ok(i) => return i,
                Err(ProposeError::NotLeader { .. }) | Err(ProposeError::Unavailable(_))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("propose: {e}"),
            }
        }
    }

    async fn stop(&mut self, id: NodeId) {
        let q = self.nodes.get_mut(&id).unwrap().take().unwrap();
        q.shutdown().await;
    }

    async fn restart(&mut self, id: NodeId) {
        // The old listener is closed by shutdown; its port may take a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let q = loop {
            match MetadataQuorum::start(id, self.voters.clone(), &self.dir(id), self.config.clone())
                .await
            {
                Ok(q) => break q,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart {id}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restart {id}: {e}"),
            }
        };
        self.nodes.insert(id, Some(q));
    }

    /// Waits until every running node has applied through `index`.
    async fn wait_applied(&self, index: u64) {
        wait_until("all nodes applied", Duration::from_secs(10), || {
            self.running().all(|q| {
                q.subscribe()
                    .borrow()
                    .last_applied_index
                    .is_some_and(|i| i >= index)
            })
        })
        .await;
    }

    fn images(&self) -> Vec<Arc<MetadataImage>> {
        self.running().map(|q| q.image()).collect()
    }

    async fn shutdown(mut self) {
        for id in self.voters.keys().copied().collect::<Vec<_>>() {
            if self.nodes[&id].is_some() {
                self.stop(id).await;
            }
        }
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("__cluster_metadata-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_elects_itself_and_applies_proposals() {
    let c = Cluster::start(1, test_config()).await;
    assert_eq!(c.leader().await, 1);
    let i1 = c.node(1).propose(topic("orders", 3)).await.unwrap();
    let i2 = c.node(1).propose(topic("payments", 1)).await.unwrap();
    assert!(i2 > i1);
    // propose returns once applied: the image already shows it.
    let img = c.node(1).image();
    assert_eq!(img.topic("orders").unwrap().partitions.len(), 3);
    assert!(img.topic("payments").is_some());
    let info = c.node(1).describe();
    assert_eq!(info.leader_id, 1);
    assert!(info.leader_epoch >= 1);
    assert_eq!(info.high_watermark, i2 as i64 + 1);
    assert_eq!(info.voters.len(), 1);
    wait_until("log end in metrics", Duration::from_secs(5), || {
        c.node(1).describe().voters[0].log_end_offset == i2 as i64 + 1
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_and_images_agree() {
    let c = Cluster::start(3, test_config()).await;
    let leader = c.leader().await;
    let mut last = 0;
    for i in 0..20 {
        last = c.propose(topic(&format!("t{i}"), 2)).await;
    }
    c.wait_applied(last).await;
    let images = c.images();
    assert_eq!(images[0].topics().count(), 20);
    assert!(images.iter().all(|i| **i == *images[0]), "all images equal");

    // A follower refuses proposals and names the leader.
    let follower = c.voters.keys().copied().find(|id| *id != leader).unwrap();
    match c.node(follower).propose(topic("x", 1)).await {
        Err(ProposeError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr.as_deref(), Some(c.voters[&leader].as_str()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // A batch replay rejects is committed but changes nothing anywhere.
    let before = c.node(leader).image();
    let mut bad = topic("half", 1);
    bad.push(MetadataRecord::RemoveTopic(RemoveTopicRecord {
        topic_id: Uuid::new_v4(),
    }));
    match c.node(leader).propose(bad).await {
        Err(ProposeError::Rejected { index, reason }) => {
            assert!(reason.contains("record 2"), "{reason}");
            c.wait_applied(index).await;
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(c
        .images()
        .iter()
        .all(|i| **i == *before && i.topic("half").is_none()));

    // DescribeQuorum data on the leader: every voter caught up.
    wait_until(
        "followers' replication seen",
        Duration::from_secs(5),
        || {
            let info = c.node(leader).describe();
            info.voters
                .iter()
                .all(|v| v.log_end_offset == info.high_watermark && v.last_caught_up_timestamp > 0)
        },
    )
    .await;
    let info = c.node(leader).describe();
    assert_eq!(info.leader_id, leader);
    assert_eq!(
        info.voters.iter().map(|v| v.replica_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_shutdown_elects_a_new_leader_and_proposals_continue() {
    let mut c = Cluster::start(3, test_config()).await;
    let old = c.leader().await;
    let old_epoch = c.node(old).describe().leader_epoch;
    let before = c.propose(topic("before", 1)).await;
    c.wait_applied(before).await;

    let t0 = Instant::now();
    c.stop(old).await;
    let new = c.leader().await;
    let idx = c.propose(topic("after", 1)).await;
    let failover = t0.elapsed();
    eprintln!("failover: new leader {new} committed after {failover:?}");
    assert_ne!(new, old);
    assert!(
        failover < Duration::from_secs(6),
        "failover took {failover:?}"
    );
    assert!(c.node(new).describe().leader_epoch > old_epoch);
    c.wait_applied(idx).await;
    for img in c.images() {
        assert!(img.topic("before").is_some() && img.topic("after").is_some());
    }

    // The old leader comes back as a follower and catches up.
    c.restart(old).await;
    let idx = c.propose(topic("later", 1)).await;
    c.wait_applied(idx).await;
    let images = c.images();
    assert_eq!(images.len(), 3);
    assert!(images
        .iter()
        .all(|i| **i == *images[0] && i.topic("after").is_some()));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_recover_log_and_snapshot() {
    let mut config = test_config();
    config.snapshot_interval_entries = 15;
    let mut c = Cluster::start(3, config).await;
    let mut last = 0;
    for i in 0..40 {
        last = c.propose(topic(&format!("t{i}"), 1)).await;
    }
    c.wait_applied(last).await;
    wait_until("snapshots on every node", Duration::from_secs(10), || {
        c.running().all(|q| q.snapshot_index().is_some())
    })
    .await;
    let expected = c.node(1).image();

    // Every node down at once, then all back from their directories.
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
    for id in [1, 2, 3] {
        c.restart(id).await;
    }
    c.leader().await;
    // Before any new proposal, each node's image is its snapshot plus its log.
    wait_until("state recovered", Duration::from_secs(10), || {
        c.images().iter().all(|i| **i == *expected)
    })
    .await;
    let idx = c.propose(topic("after-restart", 1)).await;
    c.wait_applied(idx).await;
    assert!(c.images().iter().all(|i| i.topics().count() == 41));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_voter_catches_up_by_install_snapshot_and_log_stays_short() {
    let mut config = test_config();
    config.snapshot_interval_entries = 20;
    config.log_entries_kept_after_snapshot = 5;
    config.segment_bytes = 2 << 10;
    let mut c = Cluster::start(3, config).await;
    let leader = c.leader().await;
    let lagging = c.voters.keys().copied().find(|id| *id != leader).unwrap();
    c.stop(lagging).await;

    let mut last = 0;
    for i in 0..120 {
        last = c.propose(topic(&format!("t{i}"), 2)).await;
    }
    c.wait_applied(last).await;
    // The leader snapshotted and purged past everything the lagging voter has.
    wait_until("leader purged its log", Duration::from_secs(10), || {
        c.node(leader).purged_index().is_some_and(|p| p > 50)
    })
    .await;
    let segments = segment_files(&c.dir(leader));
    assert!(segments <= 6, "log stays short: {segments} segments");

    c.restart(lagging).await;
    c.wait_applied(last).await;
    let node = c.node(lagging);
    assert!(
        node.snapshot_index().is_some_and(|s| s > 50),
        "caught up through a snapshot (snapshot at {:?})",
        node.snapshot_index()
    );
    assert_eq!(*node.image(), *c.node(leader).image());
    // And keeps following the log afterwards.
    let idx = c.propose(topic("after", 1)).await;
    c.wait_applied(idx).await;
    assert!(c.node(lagging).image().topic("after").is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_of_the_log_file_is_cut_on_restart() {
    let mut c = Cluster::start(1, test_config()).await;
    let idx = c.propose(topic("kept", 1)).await;
    c.stop(1).await;
    // A crash mid-append leaves half a frame (never acknowledged) at the end.
    let dir = c.dir(1).join("__cluster_metadata-0");
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef, b'{']);
    std::fs::write(&seg, &bytes).unwrap();

    c.restart(1).await;
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "torn tail truncated"
    );
    c.leader().await;
    wait_until("replayed", Duration::from_secs(5), || {
        c.node(1)
            .subscribe()
            .borrow()
            .last_applied_index
            .is_some_and(|i| i >= idx)
    })
    .await;
    assert!(c.node(1).image().topic("kept").is_some());
    let idx = c.propose(topic("next", 1)).await;
    assert!(idx > 0 && c.node(1).image().topic("next").is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_controller_listener_closes_that_connection_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(3, test_config()).await;
    let leader = c.leader().await;
    let addr = c.node(leader).local_addr();
    for junk in [
        vec![0xff, 0xff, 0xff, 0xff],                   // a 4 GiB frame
        vec![0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'], // not a request
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&junk).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the server closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "no reply to garbage");
    }
    let idx = c.propose(topic("still-fine", 1)).await;
    c.wait_applied(idx).await;
    assert!(c.images().iter().all(|i| i.topic("still-fine").is_some()));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_recovers_from_its_own_snapshot_and_log() {
    let mut config = test_config();
    config.snapshot_interval_entries = 15;
    let mut c = Cluster::start(1, config).await;
    let mut last = 0;
    for i in 0..40 {
        last = c.propose(topic(&format!("t{i}"), 1)).await;
    }
    wait_until("a snapshot", Duration::from_secs(10), || {
        c.node(1).snapshot_index().is_some()
    })
    .await;
    let snapshot = c.node(1).snapshot_index().unwrap();
    assert!(
        snapshot < last,
        "entries after the snapshot live only in the log"
    );
    let expected = c.node(1).image();
    c.stop(1).await;
    // With one voter nobody else holds the state: it must come from the dir.
    c.restart(1).await;
    assert!(c.node(1).snapshot_index().is_some_and(|s| s >= snapshot));
    wait_until("replayed to the old end", Duration::from_secs(10), || {
        c.node(1)
            .subscribe()
            .borrow()
            .last_applied_index
            .is_some_and(|i| i >= last)
    })
    .await;
    assert_eq!(*c.node(1).image(), *expected);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_proposals_time_out_and_resume_when_it_returns() {
    let mut config = test_config();
    config.propose_timeout = Duration::from_millis(800);
    let mut c = Cluster::start(3, config).await;
    let leader = c.leader().await;
    let idx = c.propose(topic("before", 1)).await;
    c.wait_applied(idx).await;
    let followers: Vec<_> = c
        .voters
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in &followers {
        c.stop(*id).await;
    }
    // Alone, the leader cannot commit: the proposal times out, nothing applied.
    match c.node(leader).propose(topic("lonely", 1)).await {
        Err(ProposeError::Timeout(_)) | Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(c.node(leader).image().topic("lonely").is_none());
    // One follower back: a majority again, proposals commit.
    c.restart(followers[0]).await;
    let idx = c.propose(topic("after", 1)).await;
    c.wait_applied(idx).await;
    for img in c.images() {
        assert!(img.topic("before").is_some() && img.topic("after").is_some());
    }
    c.shutdown().await;
}

/// Cut links between voters: a proxy in front of each voter's controller
/// listener reads each request frame, finds the sending node in its vote
/// (`leader_id.node_id`: the leader or the candidate), and drops the
/// connection when that link is cut — a network partition at frame level.
mod partition {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub type Cuts = Arc<Mutex<HashSet<(i32, i32)>>>;

    async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let len = s.read_u32().await? as usize;
        let mut buf = vec![0; len];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write_frame(s: &mut TcpStream, b: &[u8]) -> std::io::Result<()> {
        s.write_u32(b.len() as u32).await?;
        s.write_all(b).await
    }

    fn sender(frame: &[u8]) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_slice(frame).ok()?;
        let (_, req) = v.as_object()?.iter().next()?;
        req.get("vote")?
            .get("leader_id")?
            .get("node_id")?
            .as_i64()
            .map(|n| n as i32)
    }

    /// Starts a proxy for voter `dst` forwarding to `target`; returns its address.
    pub async fn proxy(dst: i32, target: String, cuts: Cuts) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = l.accept().await else {
                    return;
                };
                let (target, cuts) = (target.clone(), cuts.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    loop {
                        let Ok(req) = read_frame(&mut client).await else {
                            return;
                        };
                        let src = sender(&req).expect("every request names its sender");
                        if cuts.lock().unwrap().contains(&(src, dst)) {
                            return; // both connections dropped
                        }
                        if write_frame(&mut server, &req).await.is_err() {
                            return;
                        }
                        let Ok(reply) = read_frame(&mut server).await else {
                            return;
                        };
                        // A reply on a link cut meanwhile is lost too.
                        if cuts.lock().unwrap().contains(&(dst, src)) {
                            return;
                        }
                        if write_frame(&mut client, &reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_cannot_commit_and_its_divergent_tail_is_truncated_after_healing() {
    let mut config = test_config();
    config.propose_timeout = Duration::from_millis(1500);
    let tmp = tempfile::tempdir().unwrap();
    let cuts: partition::Cuts = Default::default();
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = l.local_addr().unwrap().to_string();
        voters.insert(id, partition::proxy(id, real, cuts.clone()).await);
        listeners.insert(id, l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let dir = tmp.path().join(format!("node-{id}"));
        let q = MetadataQuorum::start_with_listener(id, voters.clone(), &dir, config.clone(), l)
            .await
            .unwrap();
        nodes.insert(id, q);
    }
    let c = Cluster {
        _tmp: tmp,
        voters: voters.clone(),
        nodes: nodes.into_iter().map(|(id, q)| (id, Some(q))).collect(),
        config,
    };
    let old = c.leader().await;
    let idx = c.propose(topic("before", 1)).await;
    c.wait_applied(idx).await;

    // Cut the leader off in both directions.
    for other in voters.keys().copied().filter(|id| *id != old) {
        cuts.lock().unwrap().extend([(old, other), (other, old)]);
    }
    let isolated = c.node(old).propose(topic("isolated", 1)).await;
    assert!(
        isolated.is_err(),
        "an isolated leader cannot commit: {isolated:?}"
    );
    assert!(c.node(old).image().topic("isolated").is_none());

    // The majority side elects a new leader and goes on.
    let majority: Vec<_> = voters.keys().copied().filter(|id| *id != old).collect();
    let mut new = None;
    wait_until(
        "a leader on the majority side",
        Duration::from_secs(10),
        || {
            new = majority.iter().copied().find(|id| c.node(*id).is_leader());
            new.is_some()
        },
    )
    .await;
    let new = new.unwrap();
    let idx = c.node(new).propose(topic("majority", 1)).await.unwrap();

    // Heal: the old leader steps down, drops its uncommitted entry, follows.
    cuts.lock().unwrap().clear();
    c.wait_applied(idx).await;
    wait_until("images converge", Duration::from_secs(10), || {
        let images = c.images();
        images.iter().all(|i| **i == *images[0])
    })
    .await;
    for img in c.images() {
        assert!(img.topic("majority").is_some() && img.topic("isolated").is_none());
    }
    assert_eq!(c.leader().await, new);
    assert!(c.node(old).describe().leader_epoch > 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_follow_the_log_without_voting() {
    let mut config = test_config();
    config.propose_timeout = Duration::from_millis(800);
    let mut c = Cluster::start(3, config.clone()).await;
    let before = c.propose(topic("before", 2)).await;

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let obs_dir = c._tmp.path().join("observer-4");
    let observer = MetadataQuorum::start_observer(4, c.voters.clone(), &obs_dir, config.clone(), l)
        .await
        .unwrap();
    // Only the leader adds observers.
    let leader = c.leader().await;
    let follower = c.voters.keys().copied().find(|id| *id != leader).unwrap();
    assert!(matches!(
        c.node(follower).add_observer(4, addr.clone()).await,
        Err(ProposeError::NotLeader { leader_id: Some(l), .. }) if l == leader
    ));
    assert!(
        c.node(leader).add_observer(1, addr.clone()).await.is_err(),
        "a voter is no observer"
    );
    c.node(leader).add_observer(4, addr).await.unwrap();
    let idx = c.propose(topic("after", 1)).await;
    assert!(idx > before);
    wait_until("observer applied", Duration::from_secs(10), || {
        observer
            .subscribe()
            .borrow()
            .last_applied_index
            .is_some_and(|i| i >= idx)
    })
    .await;
    assert_eq!(*observer.image(), *c.node(leader).image());
    // It knows the leader but cannot write, and is reported as an observer.
    match observer.propose(topic("x", 1)).await {
        Err(ProposeError::NotLeader {
            leader_id,
            leader_addr,
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr.as_deref(), Some(c.voters[&leader].as_str()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    wait_until("observer in DescribeQuorum", Duration::from_secs(5), || {
        let info = c.node(leader).describe();
        info.voters.len() == 3
            && info.observers.len() == 1
            && info.observers[0].replica_id == 4
            && info.observers[0].log_end_offset > idx as i64
    })
    .await;

    // Restarted from its directory (same address), the observer goes on
    // following without being added again.
    let obs_addr = observer.local_addr();
    observer.shutdown().await;
    let idx = c.propose(topic("while-observer-down", 1)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let l = loop {
        match TcpListener::bind(obs_addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebind {obs_addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("rebind {obs_addr}: {e}"),
        }
    };
    let observer = MetadataQuorum::start_observer(4, c.voters.clone(), &obs_dir, config.clone(), l)
        .await
        .unwrap();
    wait_until(
        "restarted observer caught up",
        Duration::from_secs(10),
        || {
            observer
                .subscribe()
                .borrow()
                .last_applied_index
                .is_some_and(|i| i >= idx)
        },
    )
    .await;
    assert!(observer.image().topic("while-observer-down").is_some());

    // An observer does not make a majority: with two voters down the leader
    // (if it still is one) cannot commit.
    let down: Vec<_> = c
        .voters
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in &down {
        c.stop(*id).await;
    }
    assert!(c
        .node(leader)
        .propose(topic("no-majority", 1))
        .await
        .is_err());
    assert!(observer.image().topic("no-majority").is_none());
    observer.shutdown().await;
    c.shutdown().await;
}
