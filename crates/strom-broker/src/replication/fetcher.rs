//! Follower side: one [`ReplicaFetcher`] task per leader broker (Kafka's
//! ReplicaFetcherThread with `num.replica.fetchers`=1), managed by the
//! [`ReplicaFetcherManager`] (Kafka's AbstractFetcherManager).
//!
//! A partition added to a fetcher first truncates (KIP-101/279): it asks
//! the leader, with OffsetForLeaderEpoch, where its latest leader epoch
//! ends, truncates to the smaller of that and its own end for that epoch
//! (repeating while the epochs differ), or to its high watermark when the
//! leader answers UNDEFINED. Then it fetches from its log end with its
//! replica id, long-polling `replica.fetch.wait.max.ms`, and appends what
//! arrives as follower (offsets and epochs as the leader wrote them). The
//! high watermark and log start offset follow the leader's. Errors back off
//! `replica.fetch.backoff.ms` and wait for the next image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_protocol::{LeaderEpoch, Offset};
use strom_storage::TopicPartition;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::BrokerClient;
use crate::broker::{now_ms, Broker};
use crate::partition::Partition;

/// The Fetch version followers send (topic ids, so a topic recreated under
/// the same name is never mixed up; `replica_id` field).
const FETCH_VERSION: i16 = 13;
/// OffsetForLeaderEpoch v4 (flexible, `replica_id`).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;

/// One partition a fetcher serves.
#[derive(Clone)]
struct FetchState {
    partition: Arc<Partition>,
    /// The leader epoch this follower state belongs to.
    leader_epoch: i32,
    /// Truncation (OffsetForLeaderEpoch) pending before fetching.
    truncating: bool,
    /// Backing off after an error until then.
    delayed_until: Option<Instant>,
}

/// The partitions of one leader broker, shared with its fetcher task.
struct FetcherShared {
    leader: i32,
    partitions: Mutex<HashMap<TopicPartition, FetchState>>,
    /// Wakes an idle fetcher when partitions are added.
    added: Notify,
}

impl FetcherShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, FetchState>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the partition's state if it is still the one of `epoch`.
    fn update(&self, tp: &TopicPartition, epoch: i32, f: impl FnOnce(&mut FetchState)) {
        if let Some(s) = self.lock().get_mut(tp) {
            if s.leader_epoch == epoch {
                f(s);
            }
        }
    }
}

struct ReplicaFetcher {
    shared: Arc<FetcherShared>,
    task: JoinHandle<()>,
}

/// The fetchers of this broker, one per leader broker.
#[derive(Default)]
pub struct ReplicaFetcherManager {
    fetchers: Mutex<HashMap<i32, ReplicaFetcher>>,
}

impl ReplicaFetcherManager {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, ReplicaFetcher>> {
        self.fetchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the fetcher of `leader` fetch `partition` (moving it from any
    /// other fetcher). With `new_epoch`, or when newly added, it truncates
    /// first.
    pub fn add(
        &self,
        broker: &Arc<Broker>,
        partition: &Arc<Partition>,
        leader: i32,
        new_epoch: bool,
    ) {
        let tp = &partition.topic_partition;
        let epoch = partition.leader_epoch().0;
        let mut fetchers = self.lock();
        fetchers.retain(|l, f| {
            if *l != leader {
                f.shared.lock().remove(tp);
            }
            let keep = *l == leader || !f.shared.lock().is_empty();
            if !keep {
                f.task.abort();
            }
            keep
        });
        let f = fetchers.entry(leader).or_insert_with(|| {
            let shared = Arc::new(FetcherShared {
                leader,
                partitions: Mutex::new(HashMap::new()),
                added: Notify::new(),
            });
            let task = tokio::spawn(run(Arc::downgrade(broker), shared.clone()));
            ReplicaFetcher { shared, task }
        });
        {
            let mut parts = f.shared.lock();
            let truncating = new_epoch
                || parts
                    .get(tp)
                    .is_none_or(|s| s.truncating || s.leader_epoch != epoch);
            parts.insert(
                tp.clone(),
                FetchState {
                    partition: partition.clone(),
                    leader_epoch: epoch,
                    truncating,
                    delayed_until: None,
                },
            );
        }
        f.shared.added.notify_one();
    }

    /// Stops fetching `tp`; a fetcher left without partitions ends.
    pub fn remove(&self, tp: &TopicPartition) {
        self.lock().retain(|_, f| {
            let mut parts = f.shared.lock();
            parts.remove(tp);
            let keep = !parts.is_empty();
            drop(parts);
            if !keep {
                f.task.abort();
            }
            keep
        });
    }

    /// Whether `tp` is being fetched, and from which leader (tests, health).
    pub fn fetching_from(&self, tp: &TopicPartition) -> Option<i32> {
        self.lock()
            .values()
            .find(|f| f.shared.lock().contains_key(tp))
            .map(|f| f.shared.leader)
    }

    /// Stops every fetcher (broker shutdown).
    pub fn shutdown(&self) {
        for (_, f) in self.lock().drain() {
            f.task.abort();
        }
    }
}

/// Why a fetch round failed as a whole.
enum RoundError {
    /// The connection is unusable: reconnect after the backoff.
    Connection(String),
    /// No address for the leader yet (not registered / no such listener).
    NoEndpoint,
}

/// The fetcher task of one leader broker.
async fn run(broker: Weak<Broker>, shared: Arc<FetcherShared>) {
    let mut client: Option<BrokerClient> = None;
    let mut last_error: Option<String> = None;
    loop {
        let Some(b) = broker.upgrade() else {
            return;
        };
        let backoff = Duration::from_millis(b.config.replication.replica_fetch_backoff_ms.max(1));
        let now = Instant::now();
        let ready: Vec<(TopicPartition, FetchState)> = shared
            .lock()
            .iter()
            .filter(|(_, s)| s.delayed_until.is_none_or(|t| t <= now))
            .map(|(tp, s)| (tp.clone(), s.clone()))
            .collect();
        if ready.is_empty() {
            drop(b);
            let _ = tokio::time::timeout(backoff, shared.added.notified()).await;
            continue;
        }
        let result = round(&b, &shared, &mut client, ready).await;
        drop(b);
        match result {
            Ok(()) => last_error = None,
            Err(e) => {
                client = None;
                let why = match e {
                    RoundError::Connection(why) => why,
                    RoundError::NoEndpoint => "no endpoint registered for the leader".into(),
                };
                // one line per distinct problem, not one per retry
                if last_error.as_ref() != Some(&why) {
                    warn!(leader = shared.leader, error = %why, "replica fetcher: backing off");
                    last_error = Some(why);
                }
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// The leader's address on the inter-broker listener, from the image's
/// broker registrations.
fn leader_address(broker: &Broker, leader: i32) -> Option<(String, u16)> {
    let image = broker.metadata.quorum().image();
    let reg = image.broker(leader)?;
    let name = broker.config.inter_broker_listener();
    let ep = reg.endpoints.iter().find(|e| e.name == name)?;
    Some((ep.host.clone(), ep.port))
}

/// One truncation pass and one fetch.
async fn round(
    broker: &Arc<Broker>,
    shared: &FetcherShared,
    client: &mut Option<BrokerClient>,
    ready: Vec<(TopicPartition, FetchState)>,
) -> Result<(), RoundError> {
    let cfg = broker.config.replication.clone();
    if client.is_none() {
        let (host, port) = leader_address(broker, shared.leader).ok_or(RoundError::NoEndpoint)?;
        let addr = format!("{host}:{port}");
        let security = broker
            .replicas
            .inter_broker_security(broker)
            .map_err(RoundError::Connection)?;
        let c = BrokerClient::connect(
            &host,
            port,
            format!("strom-replica-fetcher-{}", broker.node_id()),
            Duration::from_secs(10),
            &security,
        )
        .await
        .map_err(|e| RoundError::Connection(format!("connect to {addr}: {e}")))?;
        debug!(leader = shared.leader, addr, "replica fetcher connected");
        *client = Some(c);
    }
    let c = client.as_mut().expect("connected");
    let (truncating, fetching): (Vec<_>, Vec<_>) =
        ready.into_iter().partition(|(_, s)| s.truncating);
    if !truncating.is_empty() {
        truncate(broker, shared, c, truncating).await?;
        // partitions that finished truncating fetch in the next round
        return Ok(());
    }
    fetch(broker, shared, c, fetching, &cfg).await
}

/// KIP-101/279 truncation of each partition, one OffsetForLeaderEpoch
/// request for all of them.
async fn truncate(
    broker: &Arc<Broker>,
    shared: &FetcherShared,
    client: &mut BrokerClient,
    parts: Vec<(TopicPartition, FetchState)>,
) -> Result<(), RoundError> {
    let mut asked: Vec<(TopicPartition, FetchState, i32)> = Vec::new();
    for (tp, s) in parts {
        match s.partition.log().leader_epoch_start_offsets().last() {
            // nothing to compare: the high watermark is safe
            None => {
                let hw = s.partition.high_watermark();
                finish_truncation(shared, &tp, &s, hw).await;
            }
            Some((e, _)) => asked.push((tp, s, e.0)),
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for (tp, s, e) in &asked {
        if topics.last().is_none_or(|t| t.topic.as_str() != tp.topic) {
            topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone()))),
            );
        }
        topics.last_mut().unwrap().partitions.push(
            OffsetForLeaderPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(s.leader_epoch)
                .with_leader_epoch(*e),
        );
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(broker.node_id()))
        .with_topics(topics);
    let resp = client
        .send(
            &req,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| RoundError::Connection(format!("OffsetForLeaderEpoch: {e}")))?;
    let backoff = Duration::from_millis(broker.config.replication.replica_fetch_backoff_ms);
    for (tp, s, asked_epoch) in asked {
        let answer = resp
            .topics
            .iter()
            .filter(|t| t.topic.as_str() == tp.topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == tp.partition);
        let Some(a) = answer else {
            delay(shared, &tp, &s, backoff);
            continue;
        };
        if a.error_code != 0 {
            debug!(partition = %tp, code = a.error_code, "OffsetForLeaderEpoch refused; retrying after the backoff");
            delay(shared, &tp, &s, retry_after(a.error_code, backoff));
            continue;
        }
        let leo = s.partition.log_end_offset();
        if a.leader_epoch < 0 || a.end_offset < 0 {
            // UNDEFINED_EPOCH_OFFSET: the leader knows no epoch this old
            let hw = s.partition.high_watermark();
            finish_truncation(shared, &tp, &s, hw).await;
        } else if a.leader_epoch == asked_epoch {
            finish_truncation(shared, &tp, &s, Offset(a.end_offset).min(leo)).await;
        } else {
            // The leader's largest epoch ≤ ours is older: our tail from
            // there on is divergent. Truncate to where both agree; if we do
            // not have the leader's epoch either, ask again (KIP-279).
            let own = s
                .partition
                .end_offset_for_epoch(LeaderEpoch(a.leader_epoch));
            let to = own.map_or(Offset(a.end_offset), |(_, o)| o.min(Offset(a.end_offset)));
            let to = to.min(leo);
            if own.is_some_and(|(e, _)| e.0 == a.leader_epoch) {
                finish_truncation(shared, &tp, &s, to).await;
            } else {
                truncate_to(shared, &tp, &s, to).await;
            }
        }
    }
    Ok(())
}

async fn truncate_to(
    shared: &FetcherShared,
    tp: &TopicPartition,
    s: &FetchState,
    to: Offset,
) -> bool {
    let (p, epoch) = (s.partition.clone(), s.leader_epoch);
    match tokio::task::spawn_blocking(move || p.truncate_as_follower(to, epoch)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            warn!(partition = %tp, error = %e, "follower truncation failed");
            delay(shared, tp, s, Duration::from_secs(1));
            false
        }
        Err(_) => false,
    }
}

async fn finish_truncation(
    shared: &FetcherShared,
    tp: &TopicPartition,
    s: &FetchState,
    to: Offset,
) {
    if truncate_to(shared, tp, s, to).await {
        shared.update(tp, s.leader_epoch, |st| st.truncating = false);
    }
}

/// How long to wait before asking the leader again after `error_code`.
/// Right after a leader change the follower often learns of the new epoch
/// before the new leader has applied it: the leader answers
/// UNKNOWN_LEADER_EPOCH (or NOT_LEADER_OR_FOLLOWER) for a moment, so those
/// retry soon instead of after a whole `replica.fetch.backoff.ms` — that wait
/// delayed every acks=all write after a failover by about a second.
fn retry_after(error_code: i16, backoff: Duration) -> Duration {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    const UNKNOWN_LEADER_EPOCH: i16 = 75;
    match error_code {
        NOT_LEADER_OR_FOLLOWER | UNKNOWN_LEADER_EPOCH => backoff.min(Duration::from_millis(50)),
        _ => backoff,
    }
}

fn delay(shared: &FetcherShared, tp: &TopicPartition, s: &FetchState, backoff: Duration) {
    shared.update(tp, s.leader_epoch, |st| {
        st.delayed_until = Some(Instant::now() + backoff)
    });
}

/// One Fetch to the leader for every ready partition, and the appends.
async fn fetch(
    broker: &Arc<Broker>,
    shared: &FetcherShared,
    client: &mut BrokerClient,
    parts: Vec<(TopicPartition, FetchState)>,
    cfg: &super::ReplicationConfig,
) -> Result<(), RoundError> {
    if parts.is_empty() {
        return Ok(());
    }
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut sorted = parts;
    sorted.sort_by(|a, b| {
        (a.1.partition.topic_id, a.0.partition).cmp(&(b.1.partition.topic_id, b.0.partition))
    });
    for (tp, s) in &sorted {
        let id = s.partition.topic_id;
        if topics.last().is_none_or(|t| t.topic_id != id) {
            topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_topic_id(id),
            );
        }
        topics.last_mut().unwrap().partitions.push(
            FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(s.leader_epoch)
                .with_fetch_offset(s.partition.log_end_offset().0)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(s.partition.log_start_offset().0)
                .with_partition_max_bytes(cfg.replica_fetch_max_bytes),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(broker.node_id()))
        .with_max_wait_ms(cfg.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(cfg.replica_fetch_min_bytes)
        .with_max_bytes(cfg.replica_fetch_response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let timeout = Duration::from_millis(cfg.replica_fetch_wait_max_ms) + Duration::from_secs(30);
    let resp = client
        .send(&req, FETCH_VERSION, timeout)
        .await
        .map_err(|e| RoundError::Connection(format!("Fetch: {e}")))?;
    if resp.error_code != 0 {
        return Err(RoundError::Connection(format!(
            "Fetch answered error {}",
            resp.error_code
        )));
    }
    let backoff = Duration::from_millis(cfg.replica_fetch_backoff_ms);
    for t in resp.responses {
        for d in t.partitions {
            let Ok(i) = sorted.binary_search_by(|(k, s)| {
                (s.partition.topic_id, k.partition).cmp(&(t.topic_id, d.partition_index))
            }) else {
                continue;
            };
            let (tp, s) = (&sorted[i].0, &sorted[i].1);
            match ResponseError::try_from_code(d.error_code) {
                None => {
                    let records = d.records.unwrap_or_default();
                    let (p, epoch) = (s.partition.clone(), s.leader_epoch);
                    let (hw, start) = (Offset(d.high_watermark), Offset(d.log_start_offset));
                    let appended = tokio::task::spawn_blocking(move || {
                        p.append_as_follower(&records, epoch, hw, start, now_ms())
                    })
                    .await;
                    match appended {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            warn!(partition = %tp, error = %e, "follower append failed");
                            delay(shared, tp, s, backoff);
                        }
                        Err(_) => delay(shared, tp, s, backoff),
                    }
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    let start = Offset(d.log_start_offset);
                    if start.0 >= 0 && s.partition.log_end_offset() < start {
                        // the leader deleted what we would need: start over at its log start
                        let (p, epoch) = (s.partition.clone(), s.leader_epoch);
                        let _ =
                            tokio::task::spawn_blocking(move || p.reset_as_follower(start, epoch))
                                .await;
                    } else {
                        // we are ahead of the leader: find where we diverge
                        info!(partition = %tp, "fetch offset beyond the leader's log end; truncating");
                        shared.update(tp, s.leader_epoch, |st| st.truncating = true);
                    }
                }
                Some(e) => {
                    // NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH,
                    // UNKNOWN_TOPIC_OR_PARTITION…: the image will tell
                    debug!(partition = %tp, error = ?e, "follower fetch refused; backing off");
                    delay(shared, tp, s, retry_after(d.error_code, backoff));
                }
            }
        }
    }
    Ok(())
}
