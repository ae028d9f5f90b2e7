//! TxnOffsetCommit (key 28): offsets consumed in a transaction; they become
//! visible in the group only when the transaction commits.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::RequestContext;
use crate::broker::{now_ms, Broker};
use crate::group::records::OffsetCommitValue;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let image = broker.metadata.image();
    let now = now_ms();
    let max_meta = broker.groups.config().offset_metadata_max_bytes;
    let mut codes: Vec<Vec<i16>> = Vec::new();
    let mut offsets = Vec::new();
    // Kafka: Write on the transactional id, Read on the group, then Read
    // on each topic.
    let denied = if !ctx.authorize(
        broker,
        AclOperation::Write,
        ResourceType::TransactionalId,
        &req.transactional_id,
    ) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !ctx.authorize(
        broker,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id,
    ) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    for t in &req.topics {
        let meta = image.topic(t.name.as_str());
        let denied = denied.or_else(|| {
            (!ctx.authorize(broker, AclOperation::Read, ResourceType::Topic, &t.name))
                .then_some(ResponseError::TopicAuthorizationFailed)
        });
        let mut tc = Vec::new();
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let code = if let Some(e) = denied {
                e.code()
            } else if !meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                ResponseError::UnknownTopicOrPartition.code()
            } else if metadata.len() > max_meta {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                offsets.push((
                    (t.name.to_string(), p.partition_index),
                    OffsetCommitValue {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp: now,
                        expire_timestamp: -1,
                    },
                ));
                0
            };
            tc.push(code);
        }
        codes.push(tc);
    }
    let result = if offsets.is_empty() {
        Ok(())
    } else {
        broker
            .transactions
            .stage_offsets(
                broker,
                req.transactional_id.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                req.group_id.as_str(),
                offsets,
            )
            .await
    };
    let topics = req
        .topics
        .iter()
        .zip(codes)
        .map(|(t, tc)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(tc)
                        .map(|(p, c)| {
                            let c = match (&result, c) {
                                (Err(e), 0) => e.code(),
                                (_, c) => c,
                            };
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
