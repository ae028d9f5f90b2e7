//! DeleteRecords (key 21): advance partitions' log start offsets (Kafka's
//! low watermark). An offset beyond the high watermark is
//! OFFSET_OUT_OF_RANGE and changes nothing; -1 means "up to the high
//! watermark".

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::log_error_code;
use crate::handlers::metadata::is_internal;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        let authorized = ctx.authorize(broker, AclOperation::Delete, ResourceType::Topic, &t.name);
        for p in &t.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let part = broker
                .replicas
                .partition(t.name.as_str(), p.partition_index);
            partitions.push(match part {
                _ if !authorized => {
                    result.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                None => result.with_error_code(
                    crate::replica_manager::missing_partition_error(
                        broker,
                        t.name.as_str(),
                        p.partition_index,
                    )
                    .code(),
                ),
                Some(_) if is_internal(t.name.as_str()) => {
                    result.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                // the leader moves the log start; followers follow it when they fetch
                Some(part) if !part.is_leader() => {
                    result.with_error_code(ResponseError::NotLeaderOrFollower.code())
                }
                Some(_) if p.offset < -1 => {
                    result.with_error_code(ResponseError::OffsetOutOfRange.code())
                }
                Some(part) => match broker.delete_records(&part, p.offset).await {
                    Ok(low) => result.with_low_watermark(low.0),
                    Err(e) => result.with_error_code(log_error_code(&e).code()),
                },
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
