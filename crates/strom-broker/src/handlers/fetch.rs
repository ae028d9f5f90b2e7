//! Fetch (key 1): read batches from partitions, long-polling until
//! `min_bytes` are available or `max_wait_ms` passes.
//!
//! Waiting is event-driven: before reading, the fetch registers with every
//! partition's change notifier, so an append that lands after the read wakes
//! it at once (no polling). Incremental fetch sessions (KIP-227) decide which
//! partitions are considered and which are reported.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_protocol::Offset;
use strom_storage::LogError;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::log_error_code;
use crate::fetch_session::{
    PartitionKey, SessionError, SessionPartition, FINAL_EPOCH, INITIAL_EPOCH,
};
use crate::partition::{IsolationLevel, Partition};
use crate::security::acl::{AclOperation, ResourceType};

/// One partition the fetch considers, resolved against the image.
struct Target {
    key: PartitionKey,
    topic_id: Uuid,
    fetch_offset: Offset,
    max_bytes: i32,
    current_leader_epoch: i32,
    /// What the session last reported (incremental fetches omit unchanged
    /// partitions).
    last_high_watermark: Offset,
    last_log_start_offset: Offset,
    partition: Result<Arc<Partition>, ResponseError>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: FetchRequest,
) -> FetchResponse {
    let version = ctx.version();
    let image = broker.metadata.image();
    let by_id = version >= 13;

    // Resolve the request's partitions (topic ids from v13).
    let mut requested: Vec<(PartitionKey, SessionPartition, i32, Option<ResponseError>)> =
        Vec::new();
    for t in &req.topics {
        let (name, id, topic_error) = if by_id {
            match image.topic_by_id(&t.topic_id) {
                Some(m) => (m.name.clone(), t.topic_id, None),
                None => (
                    String::new(),
                    t.topic_id,
                    Some(ResponseError::UnknownTopicId),
                ),
            }
        } else {
            let id = image
                .topic(t.topic.as_str())
                .map(|m| m.id)
                .unwrap_or_default();
            (t.topic.to_string(), id, None)
        };
        for p in &t.partitions {
            let sp = SessionPartition {
                topic_id: id,
                fetch_offset: Offset(p.fetch_offset),
                max_bytes: p.partition_max_bytes,
                last_high_watermark: Offset(-1),
                last_log_start_offset: Offset(-1),
            };
            requested.push((
                (name.clone(), p.partition),
                sp,
                p.current_leader_epoch,
                topic_error,
            ));
        }
    }
    let forgotten: Vec<PartitionKey> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|f| {
            let name = if by_id {
                image
                    .topic_by_id(&f.topic_id)
                    .map(|m| m.name.clone())
                    .unwrap_or_default()
            } else {
                f.topic.to_string()
            };
            f.partitions.iter().map(move |&p| (name.clone(), p))
        })
        .collect();

    // Session handling (see the table in `fetch_session`).
    let sessions = &broker.fetch_sessions;
    let (incremental, mut session_id, targets_in) = match (req.session_id, req.session_epoch) {
        (id, FINAL_EPOCH) => {
            if id != 0 {
                sessions.remove(id);
            }
            (false, 0, requested)
        }
        (id, INITIAL_EPOCH) => {
            if id != 0 {
                sessions.remove(id);
            }
            (false, -1, requested)
        }
        (id, epoch) => {
            let mut leader_epochs: BTreeMap<PartitionKey, i32> = BTreeMap::new();
            let mut updates = Vec::new();
            for (k, sp, e, _) in requested {
                leader_epochs.insert(k.clone(), e);
                updates.push((k, sp));
            }
            match sessions.update(id, epoch, updates, &forgotten) {
                Ok(parts) => (
                    true,
                    id,
                    parts
                        .into_iter()
                        .map(|(k, sp)| {
                            let e = leader_epochs.get(&k).copied().unwrap_or(-1);
                            (k, sp, e, None)
                        })
                        .collect(),
                ),
                Err(e) => {
                    let code = match e {
                        SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                        SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
                    };
                    return FetchResponse::default().with_error_code(code.code());
                }
            }
        }
    };

    // Kafka: a follower needs ClusterAction, a consumer Read on each topic
    // (checked on every fetch, session partitions included).
    let follower = req.replica_id.0.max(req.replica_state.replica_id.0) >= 0;
    let follower_ok = !follower || ctx.authorize_cluster(broker, AclOperation::ClusterAction);
    let mut last_auth: Option<(String, bool)> = None;
    let targets: Vec<Target> = targets_in
        .into_iter()
        .map(|(key, sp, current_leader_epoch, topic_error)| {
            let authorized = follower_ok
                && (follower
                    || match &last_auth {
                        Some((t, ok)) if *t == key.0 => *ok,
                        _ => {
                            let ok = ctx.authorize(
                                broker,
                                AclOperation::Read,
                                ResourceType::Topic,
                                &key.0,
                            );
                            last_auth = Some((key.0.clone(), ok));
                            ok
                        }
                    });
            let partition = match topic_error {
                Some(e) => Err(e),
                None if !authorized => Err(ResponseError::TopicAuthorizationFailed),
                None => broker
                    .replicas
                    .partition(&key.0, key.1)
                    .ok_or(ResponseError::UnknownTopicOrPartition),
            };
            Target {
                topic_id: sp.topic_id,
                fetch_offset: sp.fetch_offset,
                max_bytes: sp.max_bytes,
                current_leader_epoch,
                last_high_watermark: sp.last_high_watermark,
                last_log_start_offset: sp.last_log_start_offset,
                key,
                partition,
            }
        })
        .collect();

    let isolation = IsolationLevel::from_wire(req.isolation_level);
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = req.max_bytes.max(0) as usize;
    let live: Vec<Arc<Partition>> = targets
        .iter()
        .filter_map(|t| t.partition.as_ref().ok().cloned())
        .collect();

    let parts = loop {
        // Register for wake-ups before reading, so no append slips between.
        let mut waits: Vec<Pin<Box<Notified<'_>>>> = live
            .iter()
            .map(|p| Box::pin(p.changed().notified()))
            .collect();
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        let (parts, total, has_error) = read_all(&targets, max_bytes, isolation, incremental);
        if total >= min_bytes || has_error || max_wait.is_zero() || Instant::now() >= deadline {
            break parts;
        }
        let any = poll_fn(|cx| {
            for w in waits.iter_mut() {
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        let _ = tokio::time::timeout_at(deadline, any).await;
    };

    if session_id == -1 {
        // A new session: remember every partition and what we just reported.
        let state = targets
            .iter()
            .map(|t| {
                let (hw, lso) = parts
                    .iter()
                    .find(|(k, _)| *k == t.key)
                    .map(|(_, d)| (Offset(d.high_watermark), Offset(d.log_start_offset)))
                    .unwrap_or((Offset(-1), Offset(-1)));
                (
                    t.key.clone(),
                    SessionPartition {
                        topic_id: t.topic_id,
                        fetch_offset: t.fetch_offset,
                        max_bytes: t.max_bytes,
                        last_high_watermark: hw,
                        last_log_start_offset: lso,
                    },
                )
            })
            .collect();
        session_id = sessions.create(state);
    } else if session_id != 0 {
        let reported: Vec<_> = parts
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    Offset(d.high_watermark),
                    Offset(d.log_start_offset),
                )
            })
            .collect();
        sessions.record_sent(session_id, &reported);
    }

    // Group partitions by topic, keeping request order.
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut topic_metrics: Option<Arc<crate::metrics::TopicMetrics>> = None;
    for (key, data) in parts {
        let topic_id = targets
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.topic_id)
            .unwrap_or_default();
        let same = responses.last().is_some_and(|r| {
            if by_id {
                r.topic_id == topic_id
            } else {
                r.topic.as_str() == key.0
            }
        });
        if !same {
            topic_metrics = None;
        }
        let bytes = data.records.as_ref().map_or(0, |r| r.len());
        if bytes > 0 {
            // Consecutive partitions of one topic share one lookup.
            topic_metrics
                .get_or_insert_with(|| broker.metrics.topic(&key.0))
                .bytes_out
                .inc_by(bytes as u64);
        }
        if !same {
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(key.0.clone())))
                    .with_topic_id(topic_id),
            );
        }
        responses.last_mut().unwrap().partitions.push(data);
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses)
}

/// Reads every target once. Returns the partitions to report, the bytes
/// read, and whether any partition has an error (which answers at once).
fn read_all(
    targets: &[Target],
    max_bytes: usize,
    isolation: IsolationLevel,
    incremental: bool,
) -> (Vec<(PartitionKey, PartitionData)>, usize, bool) {
    let mut out = Vec::with_capacity(targets.len());
    let mut total = 0usize;
    let mut has_error = false;
    for t in targets {
        let mut d = PartitionData::default()
            .with_partition_index(t.key.1)
            .with_records(Some(Bytes::new()));
        match &t.partition {
            Err(code) => {
                d.error_code = code.code();
                d.high_watermark = -1;
                has_error = true;
            }
            Ok(p) => {
                d.high_watermark = p.high_watermark().0;
                d.last_stable_offset = p.last_stable_offset().0;
                d.log_start_offset = p.log_start_offset().0;
                if isolation == IsolationLevel::ReadCommitted {
                    d.aborted_transactions = Some(Vec::new());
                }
                let epoch_error = match t.current_leader_epoch {
                    -1 => None,
                    e if e < p.leader_epoch.0 => Some(ResponseError::FencedLeaderEpoch),
                    e if e > p.leader_epoch.0 => Some(ResponseError::UnknownLeaderEpoch),
                    _ => None,
                };
                if let Some(code) = epoch_error {
                    d.error_code = code.code();
                    has_error = true;
                } else {
                    let budget = (t.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                    match p.read(t.fetch_offset, budget, total == 0, isolation) {
                        Ok(info) => {
                            if isolation == IsolationLevel::ReadCommitted
                                && !info.records.is_empty()
                            {
                                d.aborted_transactions =
                                    Some(aborted(p, t.fetch_offset, &info.records));
                            }
                            total += info.records.len();
                            d.records = Some(info.records);
                        }
                        Err(e @ LogError::OffsetOutOfRange { .. }) => {
                            d.error_code = log_error_code(&e).code();
                            has_error = true;
                        }
                        Err(e) => {
                            tracing::warn!(partition = %p.topic_partition, error = %e, "fetch read failed");
                            d.error_code = log_error_code(&e).code();
                            has_error = true;
                        }
                    }
                }
            }
        }
        let changed = d.error_code != 0
            || d.records.as_ref().is_some_and(|r| !r.is_empty())
            || d.high_watermark != t.last_high_watermark.0
            || d.log_start_offset != t.last_log_start_offset.0;
        if !incremental || changed {
            out.push((t.key.clone(), d));
        }
    }
    (out, total, has_error)
}

/// The aborted transactions overlapping the batches read from `from`.
fn aborted(p: &Partition, from: Offset, records: &Bytes) -> Vec<AbortedTransaction> {
    let upper = strom_protocol::batch::BatchIter::new(records)
        .filter_map(|b| b.ok())
        .last()
        .map_or(from, |b| b.next_offset());
    p.aborted_transactions(from, upper)
        .into_iter()
        .map(|(pid, first)| {
            AbortedTransaction::default()
                .with_producer_id(kafka_protocol::messages::ProducerId(pid))
                .with_first_offset(first.0)
        })
        .collect()
}
