//! A hung active controller (a SIGSTOPped process: its sockets stay open,
//! the kernel still accepts connections, nothing answers). Each voter runs
//! on its own single-threaded runtime on its own thread, and "hanging" a
//! node blocks that thread, which freezes its Raft, controller and listener
//! at once as a stopped process would.
//!
//! What must hold (issue 7): brokers whose heartbeats were in flight to the
//! hung controller re-send them to the newly elected one at once, so it
//! fences only the hung node's broker, a session timeout after it took over.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_metadata::controller_api::*;
use strom_metadata::records::BrokerEndpoint;
use strom_metadata::{MetadataQuorum, NodeId, QuorumConfig};
use tokio::runtime::Handle;
use uuid::Uuid;

const SESSION: Duration = Duration::from_millis(2000);

fn config() -> QuorumConfig {
    QuorumConfig {
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        heartbeat_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(300),
        // Longer than the whole hang: only abandoning the call on a leader
        // change can keep the brokers' sessions alive.
        propose_timeout: Duration::from_secs(20),
        broker_session_timeout: SESSION,
        ..Default::default()
    }
}

/// A voter on its own thread and runtime.
struct Node {
    quorum: Arc<MetadataQuorum>,
    runtime: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(
        id: NodeId,
        voters: BTreeMap<NodeId, String>,
        dir: std::path::PathBuf,
        listener: std::net::TcpListener,
    ) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let q = MetadataQuorum::start_with_listener(id, voters, &dir, config(), listener)
                    .await
                    .unwrap();
                ready_tx.send((Arc::new(q), Handle::current())).unwrap();
                let _ = stop_rx.await;
            });
        });
        let (quorum, runtime) = ready_rx.recv().unwrap();
        Node {
            quorum,
            runtime,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Blocks the node's only thread for `d`: everything on it stops.
    fn hang(&self, d: Duration) {
        self.runtime.spawn(async move { std::thread::sleep(d) });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat_request(q: &MetadataQuorum, id: NodeId, epoch: i64) -> ControllerRequest {
    ControllerRequest::BrokerHeartbeat {
        broker_id: id,
        broker_epoch: epoch,
        current_metadata_offset: q.subscribe().borrow().last_applied_index.unwrap_or(0) as i64,
        want_fence: false,
        want_shutdown: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_stuck_on_a_hung_controller_move_to_the_new_one_and_stay_unfenced() {
    let tmp = tempfile::tempdir().unwrap();
    let listeners: BTreeMap<NodeId, std::net::TcpListener> = (1..=3)
        .map(|id| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            (id, l)
        })
        .collect();
    let voters: BTreeMap<NodeId, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let nodes: BTreeMap<NodeId, Node> = listeners
        .into_iter()
        .map(|(id, l)| {
            let dir = tmp.path().join(format!("node-{id}"));
            (id, Node::start(id, voters.clone(), dir, l))
        })
        .collect();
    let mut leader = None;
    wait_until("an agreed leader", Duration::from_secs(10), || {
        let seen: Vec<_> = nodes
            .values()
            .map(|n| n.quorum.leader().map(|l| l.0))
            .collect();
        leader = seen[0].filter(|l| seen.iter().all(|s| *s == Some(*l)));
        leader.is_some_and(|l| nodes[&l].quorum.is_leader())
    })
    .await;
    let hung = leader.unwrap();

    // Broker N lives on node N and heartbeats through it every 150 ms with
    // the plain controller_call (whose timeout outlasts the hang).
    let mut beats = Vec::new();
    for (&id, node) in &nodes {
        let q = node.quorum.clone();
        let answer = q
            .controller_call(ControllerRequest::RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid::new_v4(),
                endpoints: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + id as u16,
                    security_protocol: 0,
                }],
                rack: None,
                observer_addr: None,
            })
            .await
            .unwrap();
        let ControllerResponse::RegisterBroker {
            error,
            broker_epoch,
        } = answer
        else {
            panic!("{answer:?}")
        };
        assert!(error.is_none(), "{error:?}");
        beats.push(tokio::spawn(async move {
            loop {
                let _ = q
                    .controller_call(heartbeat_request(&q, id, broker_epoch))
                    .await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }
    let survivor = nodes.keys().copied().find(|id| *id != hung).unwrap();
    let watched = nodes[&survivor].quorum.clone();
    wait_until("every broker unfenced", Duration::from_secs(10), || {
        let img = watched.image();
        (1..=3).all(|id| img.broker(id).is_some_and(|b| !b.fenced))
    })
    .await;

    // Every image the survivor applies from now on is checked: no broker but
    // the hung node's may ever be fenced.
    let wrongly_fenced = Arc::new(AtomicBool::new(false));
    let checker = {
        let mut rx = watched.subscribe();
        let wrongly_fenced = wrongly_fenced.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let img = rx.borrow_and_update().image.clone();
                if img.brokers().any(|b| b.broker_id != hung && b.fenced) {
                    wrongly_fenced.store(true, Ordering::SeqCst);
                }
            }
        })
    };

    let hang = Duration::from_secs(8);
    let hung_at = Instant::now();
    nodes[&hung].hang(hang);
    wait_until(
        "the hung node's broker fenced by a new controller",
        Duration::from_secs(8),
        || watched.image().broker(hung).is_some_and(|b| b.fenced),
    )
    .await;
    let fenced_after = hung_at.elapsed();
    // A new controller grants a full session on takeover, and the election
    // needs at least openraft's lease (election_timeout_max).
    assert!(fenced_after >= SESSION, "fenced after {fenced_after:?}");
    // Let the survivors' next heartbeats land (a fencing of theirs would
    // show within a session too).
    tokio::time::sleep(SESSION).await;
    assert!(
        !wrongly_fenced.load(Ordering::SeqCst),
        "a broker whose heartbeats were stuck on the hung controller was fenced"
    );
    let img = watched.image();
    for id in nodes.keys().filter(|id| **id != hung) {
        assert!(!img.broker(*id).unwrap().fenced, "broker {id} fenced");
    }
    eprintln!("hung controller {hung}: its broker fenced after {fenced_after:?}");

    checker.abort();
    for b in beats {
        b.abort();
    }
    // The hung thread wakes up before the nodes are dropped (joined).
    tokio::time::sleep(hang.saturating_sub(hung_at.elapsed())).await;
    drop(watched);
    let _ = tokio::task::spawn_blocking(move || drop(nodes)).await;
}
