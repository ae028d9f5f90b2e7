//! Produce (key 0): append producer batches to partition logs.
//!
//! Batches stay opaque: the log checks framing and CRC, assigns offsets and
//! writes them verbatim, straight from the request frame (no copy). All
//! partitions of one request are appended by one blocking-pool task; each
//! gets its own error code, and one bad partition never fails another.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use strom_protocol::{LeaderEpoch, Offset};
use strom_storage::{LogAppendInfo, LogError};
use tracing::warn;

use super::{ProduceReply, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::errors::log_error_code;
use crate::handlers::metadata::is_internal;
use crate::metrics::TopicMetrics;
use crate::partition::{complete_all, start_appends, write_all, Partition};
use crate::replica_manager::missing_partition_error;
use crate::security::acl::{AclOperation, ResourceType};

/// The appends of one request, handed back by the append task.
type Appends = Vec<(Arc<Partition>, Bytes)>;
type AppendResult = Result<LogAppendInfo, LogError>;

enum Pending {
    /// Index into the request's appends.
    Appending(usize),
    Failed(ResponseError, Option<String>),
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> ProduceReply<ProduceResponse> {
    let acks = req.acks;
    let acks_valid = (-1..=1).contains(&acks);
    let now = now_ms();

    // Check every partition first, then append the valid ones in one task.
    let mut pending: Vec<(usize, i32, Pending)> = Vec::new();
    let mut appends: Vec<(Arc<Partition>, Bytes)> = Vec::new();
    let txn_authorized = req.transactional_id.as_ref().is_none_or(|id| {
        ctx.authorize(
            broker,
            AclOperation::Write,
            ResourceType::TransactionalId,
            id,
        )
    });
    for (ti, topic) in req.topic_data.iter().enumerate() {
        let authorized = ctx.authorize(
            broker,
            AclOperation::Write,
            ResourceType::Topic,
            &topic.name,
        );
        for p in &topic.partition_data {
            let state = if !acks_valid {
                Pending::Failed(ResponseError::InvalidRequiredAcks, None)
            } else if !txn_authorized {
                Pending::Failed(ResponseError::TransactionalIdAuthorizationFailed, None)
            } else if !authorized {
                Pending::Failed(ResponseError::TopicAuthorizationFailed, None)
            } else if is_internal(topic.name.as_str()) {
                Pending::Failed(
                    ResponseError::InvalidTopicException,
                    Some(format!(
                        "Cannot append to internal topic {}",
                        topic.name.as_str()
                    )),
                )
            } else {
                match broker.replicas.partition(topic.name.as_str(), p.index) {
                    None => Pending::Failed(
                        missing_partition_error(broker, topic.name.as_str(), p.index),
                        None,
                    ),
                    Some(partition) if !partition.is_leader() => {
                        Pending::Failed(ResponseError::NotLeaderOrFollower, None)
                    }
                    Some(partition) => match &p.records {
                        None => Pending::Failed(
                            ResponseError::CorruptMessage,
                            Some("null records".into()),
                        ),
                        Some(_) if acks == -1 && partition.insufficient_isr().is_some() => {
                            not_enough_replicas(&partition)
                        }
                        Some(records) => {
                            match verify_transaction(broker, records, &partition).await {
                                Err(code) => Pending::Failed(code, None),
                                Ok(()) => {
                                    // a reference to the frame, not a copy
                                    appends.push((partition, records.clone()));
                                    Pending::Appending(appends.len() - 1)
                                }
                            }
                        }
                    },
                }
            };
            pending.push((ti, p.index, state));
        }
    }

    // With fsync before ack, the answer waits for the fsync but the
    // connection need not: the writes happen now, the flush is awaited by a
    // deferred answer, so the client's next request is written while this
    // one's fsync runs (and one fsync covers both).
    let defer = acks != 0 && appends.iter().any(|(p, _)| p.flushes_before_ack());
    // The task hands the appends back: acks=all needs their partitions to
    // wait on, without cloning them for every request.
    let task = if defer {
        tokio::task::spawn_blocking(move || {
            let r = write_all(&appends, now);
            (appends, r)
        })
    } else if appends.is_empty() {
        tokio::task::spawn_blocking(|| (Vec::new(), Vec::new()))
    } else {
        start_appends(appends, now)
    };
    let (appended, mut results): (Appends, Vec<Option<AppendResult>>) = match task.await {
        Ok((appended, results)) => (appended, results.into_iter().map(Some).collect()),
        Err(join) => {
            // a panic in the append task: every append of it is unknown
            warn!(error = %join, "append task failed");
            (Vec::new(), Vec::new())
        }
    };
    // acks=all appends the ISR has yet to replicate (Kafka's
    // DelayedProduce): (slot, partition, required high watermark, epoch).
    let mut replicating: Vec<(usize, Arc<Partition>, Offset, LeaderEpoch)> = Vec::new();
    // Appends written but not yet durable: (append index, partition, info),
    // and where each one's answer sits in `responses`.
    let mut written: Vec<(usize, Arc<Partition>, LogAppendInfo)> = Vec::new();
    let mut slots: Vec<(usize, usize)> = Vec::new();

    let mut responses: Vec<TopicProduceResponse> = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
        })
        .collect();
    let mut first_error: Option<String> = None;
    // Per-topic counters, looked up once per topic of the request.
    let mut topic_metrics: Vec<Option<Arc<TopicMetrics>>> = vec![None; responses.len()];
    for (ti, index, state) in pending {
        let mut pr = PartitionProduceResponse::default().with_index(index);
        match state {
            Pending::Failed(code, msg) => {
                pr.error_code = code.code();
                pr.base_offset = -1;
                pr.error_message = msg.map(StrBytes::from_string);
            }
            Pending::Appending(i) => match results.get_mut(i).and_then(Option::take) {
                Some(Ok(info)) => {
                    let p = &appended[i].0;
                    // one atomic load: a leader alone in its ISR has moved
                    // the high watermark already
                    let wait_isr = acks == -1 && p.waits_for_followers();
                    if defer || wait_isr {
                        slots.push((ti, responses[ti].partition_responses.len()));
                    }
                    if defer {
                        written.push((slots.len() - 1, p.clone(), info.clone()));
                    }
                    if wait_isr {
                        replicating.push((
                            slots.len() - 1,
                            p.clone(),
                            info.last_offset.plus(1),
                            p.leader_epoch(),
                        ));
                    }
                    topic_metrics[ti]
                        .get_or_insert_with(|| broker.metrics.topic(responses[ti].name.as_str()))
                        .record_append(info.record_count, info.bytes);
                    pr.base_offset = info.first_offset.0;
                    pr.log_append_time_ms = info.log_append_time;
                    pr.log_start_offset = info.log_start_offset.0;
                }
                Some(Err(e)) => {
                    pr.error_code = log_error_code(&e).code();
                    pr.base_offset = -1;
                    pr.error_message = Some(StrBytes::from_string(e.to_string()));
                }
                None => {
                    pr.error_code = ResponseError::UnknownServerError.code();
                    pr.base_offset = -1;
                }
            },
        }
        if pr.error_code != 0 {
            let topic = responses[ti].name.as_str().to_string();
            if let Some(suppressed) = crate::network::PRODUCE_REJECTED.allow() {
                warn!(client = ?ctx.header.client_id, topic, partition = index, code = pr.error_code, message = ?pr.error_message, suppressed, "produce rejected");
            }
            first_error.get_or_insert_with(|| {
                format!(
                    "produce to {topic}-{index} failed with error {}",
                    pr.error_code
                )
            });
        }
        responses[ti].partition_responses.push(pr);
    }

    if acks == 0 {
        // The client waits for nothing, so an error can only be signalled by
        // closing the connection (as Kafka does).
        return match first_error {
            Some(why) => ProduceReply::Close(why),
            None => ProduceReply::NoResponse,
        };
    }
    let response = ProduceResponse::default().with_responses(responses);
    if written.is_empty() && replicating.is_empty() {
        return ProduceReply::Response(response);
    }
    let durable =
        (!written.is_empty()).then(|| tokio::task::spawn_blocking(move || complete_all(&written)));
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    ProduceReply::Deferred(
        response,
        Box::pin(async move {
            let failed = match durable {
                Some(durable) => durable.await,
                None => Ok(Vec::new()),
            };
            // then the ISR: each partition's high watermark must pass its append
            let mut replication_failed: Vec<(usize, i16, Option<String>)> = Vec::new();
            for (slot, p, required, epoch) in replicating {
                if let Err(code) = p.wait_for_high_watermark(required, epoch, deadline).await {
                    replication_failed.push((slot, code.code(), None));
                }
            }
            let patch: Box<dyn FnOnce(&mut ProduceResponse) + Send> =
                Box::new(move |resp: &mut ProduceResponse| {
                    let mut failed: Vec<(usize, i16, Option<String>)> = match failed {
                        Ok(failed) => failed
                            .into_iter()
                            .map(|(slot, e)| (slot, log_error_code(&e).code(), Some(e.to_string())))
                            .collect(),
                        Err(join) => {
                            // durability unknown: no partition may be acknowledged
                            warn!(error = %join, "flush task failed");
                            let code = ResponseError::UnknownServerError.code();
                            (0..slots.len()).map(|slot| (slot, code, None)).collect()
                        }
                    };
                    failed.extend(replication_failed);
                    for (slot, code, message) in failed {
                        let (ti, pi) = slots[slot];
                        let pr = &mut resp.responses[ti].partition_responses[pi];
                        pr.error_code = code;
                        pr.base_offset = -1;
                        pr.error_message = message.map(StrBytes::from_string);
                    }
                });
            patch
        }),
    )
}

/// Kafka's answer to `acks=all` when the ISR is below
/// `min.insync.replicas`: NOT_ENOUGH_REPLICAS, and nothing is appended.
fn not_enough_replicas(partition: &Partition) -> Pending {
    let (isr, min) = partition.insufficient_isr().unwrap_or((0, 0));
    let tp = &partition.topic_partition;
    Pending::Failed(
        ResponseError::NotEnoughReplicas,
        Some(format!(
            "The size of the current ISR {isr} is insufficient to satisfy the min.isr requirement of {min} for partition {}-{}",
            tp.topic, tp.partition
        )),
    )
}

/// KIP-890 part 1: a transactional batch is accepted only for a partition
/// the coordinator added to the producer's open transaction (otherwise
/// INVALID_TXN_STATE), so a late write of a finished transaction cannot
/// leave a partition unstable forever. Only the header of the first batch
/// is read; non-transactional produce pays one byte test.
async fn verify_transaction(
    broker: &Broker,
    records: &[u8],
    partition: &crate::partition::Partition,
) -> Result<(), ResponseError> {
    if records.len() < strom_protocol::batch::HEADER_SIZE || records[22] & 0x10 == 0 {
        return Ok(());
    }
    let pid = i64::from_be_bytes(records[43..51].try_into().unwrap());
    let epoch = i16::from_be_bytes([records[51], records[52]]);
    let tp = &partition.topic_partition;
    broker
        .transactions
        .verify_partition(pid, epoch, &tp.topic, tp.partition)
        .await
}
