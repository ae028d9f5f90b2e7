//! DescribeProducers (key 61): the producer state of partitions (active
//! producers, their last sequence and open transactions).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let authorized =
                ctx.authorize(broker, AclOperation::Read, ResourceType::Topic, &t.name);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let r = PartitionResponse::default().with_partition_index(p);
                    match broker.replicas.partition(t.name.as_str(), p) {
                        _ if !authorized => {
                            r.with_error_code(ResponseError::TopicAuthorizationFailed.code())
                        }
                        None => r.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                        Some(part) => {
                            let mut producers: Vec<ProducerState> = part
                                .log()
                                .producer_states()
                                .into_iter()
                                .map(|e| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(e.producer_id.0))
                                        .with_producer_epoch(i32::from(e.epoch.0))
                                        .with_last_sequence(e.last_sequence())
                                        .with_last_timestamp(e.last_timestamp)
                                        .with_coordinator_epoch(e.coordinator_epoch)
                                        .with_current_txn_start_offset(
                                            e.current_txn_first_offset.map_or(-1, |o| o.0),
                                        )
                                })
                                .collect();
                            producers.sort_by_key(|p| p.producer_id.0);
                            r.with_active_producers(producers)
                        }
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
