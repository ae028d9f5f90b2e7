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

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use strom_protocol::Offset;
use strom_storage::LogError;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Outcome, RequestContext};
use crate::broker::Broker;
use crate::errors::log_error_code;
use crate::fetch_session::{
    PartitionKey, SessionError, SessionPartition, FINAL_EPOCH, INITIAL_EPOCH,
};
use crate::partition::{IsolationLevel, Partition};
use crate::replica_manager::missing_partition_error;
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
    // A follower's fetch: v15+ carry the id in `replica_state`.
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let follower = replica_id >= 0;
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
                    .ok_or_else(|| missing_partition_error(broker, &key.0, key.1)),
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
        let (parts, total, has_error) = read_all(
            broker,
            &targets,
            max_bytes,
            isolation,
            incremental,
            replica_id,
        );
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
    broker: &Arc<Broker>,
    targets: &[Target],
    max_bytes: usize,
    isolation: IsolationLevel,
    incremental: bool,
    replica_id: i32,
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
            Ok(p) if replica_id >= 0 => {
                let budget = (t.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                match follower_read(broker, p, t, replica_id, budget, total == 0) {
                    Ok(records) => {
                        total += records.len();
                        d.records = Some(records);
                    }
                    Err(code) => {
                        d.error_code = code.code();
                        has_error = true;
                    }
                }
                d.high_watermark = p.high_watermark().0;
                d.last_stable_offset = p.last_stable_offset().0;
                d.log_start_offset = p.log_start_offset().0;
            }
            Ok(p) => {
                d.high_watermark = p.high_watermark().0;
                d.last_stable_offset = p.last_stable_offset().0;
                d.log_start_offset = p.log_start_offset().0;
                if isolation == IsolationLevel::ReadCommitted {
                    d.aborted_transactions = Some(Vec::new());
                }
                // no KIP-392 follower fetching: consumers read the leader
                let epoch_error = epoch_error(t.current_leader_epoch, p)
                    .or_else(|| (!p.is_leader()).then_some(ResponseError::NotLeaderOrFollower));
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

/// Kafka's fencing of a fetch by the sender's `current_leader_epoch`
/// (`-1`: not checked).
fn epoch_error(current_leader_epoch: i32, p: &Partition) -> Option<ResponseError> {
    match current_leader_epoch {
        -1 => None,
        e if e < p.leader_epoch().0 => Some(ResponseError::FencedLeaderEpoch),
        e if e > p.leader_epoch().0 => Some(ResponseError::UnknownLeaderEpoch),
        _ => None,
    }
}

/// A follower's fetch on the leader (Kafka's `Partition.fetchRecords` from
/// a follower): the epoch is checked, this broker must lead and the sender
/// be a replica; the read goes up to the log end offset, and the fetch
/// offset becomes the follower's log end offset (moving the high
/// watermark, and asking to add a caught-up follower to the ISR).
fn follower_read(
    broker: &Arc<Broker>,
    p: &Arc<Partition>,
    t: &Target,
    replica_id: i32,
    budget: usize,
    min_one_batch: bool,
) -> Result<Bytes, ResponseError> {
    if let Some(code) = epoch_error(t.current_leader_epoch, p) {
        return Err(code);
    }
    if !p.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let info = p
        .read_for_follower(t.fetch_offset, budget, min_one_batch)
        .map_err(|e| {
            if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                tracing::warn!(partition = %p.topic_partition, error = %e, "follower fetch read failed");
            }
            log_error_code(&e)
        })?;
    let now = crate::broker::now_ms();
    if !p.update_follower_fetch_state(replica_id, t.fetch_offset, now) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    if let Some(change) = p.isr_expansion_for(replica_id, now) {
        tracing::info!(partition = %p.topic_partition, new_isr = ?change.new_isr, "expanding the ISR");
        tokio::spawn(crate::replication::isr::alter_isr(
            broker.clone(),
            p.clone(),
            change,
        ));
    }
    Ok(info.records)
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

/// Record sets smaller than this are copied into the frame: a separate
/// write buffer costs more than copying a few KiB.
const MIN_ZERO_COPY: usize = 16 * 1024;

/// Encodes a Fetch response frame as a list of buffers: the fields go into
/// small buffers, and each partition's records are the very `Bytes` the log
/// read (no copy into the frame); the connection writes the parts in order.
pub fn encode_response_parts(correlation_id: i32, version: i16, resp: &FetchResponse) -> Outcome {
    let header_version = FetchResponse::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = match (
        header.compute_size(header_version),
        resp.compute_size(version),
    ) {
        (Ok(h), Ok(b)) => h + b,
        (Err(e), _) | (_, Err(e)) => return Outcome::Close(format!("cannot size response: {e}")),
    };
    let records: Vec<Bytes> = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= MIN_ZERO_COPY)
        .collect();
    let copied: usize = records.iter().map(Bytes::len).sum();
    let mut buf = PartsBuf {
        parts: Vec::with_capacity(2 * records.len() + 1),
        cur: BytesMut::with_capacity(4 + size - copied),
        before_cur: 0,
        records: records.into_iter(),
        next: None,
    };
    buf.next = buf.records.next();
    buf.put_i32(size as i32);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|_| resp.encode(&mut buf, version))
    {
        return Outcome::Close(format!("cannot encode response: {e}"));
    }
    let mut parts = buf.parts;
    if !buf.cur.is_empty() {
        parts.push(buf.cur.freeze());
    }
    Outcome::RespondParts(parts)
}

/// An encode target that references known `Bytes` instead of copying them:
/// when the encoder puts a slice that *is* the next expected record set
/// (same address and length), the bytes so far and that `Bytes` become
/// parts of their own. Anything else is copied as usual.
struct PartsBuf {
    parts: Vec<Bytes>,
    cur: BytesMut,
    /// Bytes in `parts` (so offsets stay those of the whole frame).
    before_cur: usize,
    records: std::vec::IntoIter<Bytes>,
    next: Option<Bytes>,
}

// SAFETY: every method delegates to the inner `BytesMut`, whose contract
// this upholds; `put_slice` only adds whole parts around it.
unsafe impl BufMut for PartsBuf {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }
    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.cur.advance_mut(cnt)
    }
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }
    fn put_slice(&mut self, src: &[u8]) {
        if let Some(next) = &self.next {
            if next.as_ptr() == src.as_ptr() && next.len() == src.len() {
                let before = self.cur.split().freeze();
                self.before_cur += before.len() + src.len();
                if !before.is_empty() {
                    self.parts.push(before);
                }
                self.parts.push(self.next.take().unwrap());
                self.next = self.records.next();
                return;
            }
        }
        self.cur.extend_from_slice(src);
    }
}

impl ByteBufMut for PartsBuf {
    fn offset(&self) -> usize {
        self.before_cur + self.cur.len()
    }
    // Gaps (back-patched lengths) only ever lie in the current buffer: the
    // Fetch schema has none, and a referenced part is never revisited.
    fn seek(&mut self, offset: usize) {
        self.cur.resize(offset.saturating_sub(self.before_cur), 0);
    }
    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.cur[r.start - self.before_cur..r.end - self.before_cur]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::encode_response;

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(1_000 + i as i64)
                    .with_records(Some(r.clone()))
            })
            .collect();
        FetchResponse::default()
            .with_session_id(7)
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_topic_id(Uuid::from_u128(5))
                .with_partitions(partitions)])
    }

    #[test]
    fn parts_are_the_copied_frame_and_reference_large_record_sets() {
        let big = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let big2 = Bytes::from(vec![9u8; MIN_ZERO_COPY]);
        let small = Bytes::from_static(b"tiny records");
        let records = [big.clone(), small, Bytes::new(), big2.clone()];
        for version in [7, 11, 12, 13, 16, 17] {
            let resp = response(&records);
            let copied = match encode_response(42, version, &resp) {
                Outcome::Respond(frame) => frame,
                Outcome::Close(why) => panic!("v{version}: {why}"),
                _ => panic!("v{version}: no frame"),
            };
            let Outcome::RespondParts(parts) = encode_response_parts(42, version, &resp) else {
                panic!("v{version}: no parts");
            };
            assert_eq!(parts.concat(), copied.to_vec(), "v{version}");
            // the large record sets are the log's buffers themselves
            let referenced: Vec<_> = parts.iter().map(|p| p.as_ptr()).collect();
            assert!(referenced.contains(&big.as_ptr()), "v{version}");
            assert!(referenced.contains(&big2.as_ptr()), "v{version}");
        }
    }
}
