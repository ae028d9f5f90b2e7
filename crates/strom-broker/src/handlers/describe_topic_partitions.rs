//! DescribeTopicPartitions (key 75): topics and their partitions, paged by
//! a (topic, partition) cursor and `response_partition_limit`.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{is_internal, partition_view, TOPIC_OPERATIONS};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

/// Kafka's `max.request.partition.size.limit` default.
const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.metadata.image();
    // Kafka: all topics means those the principal may Describe; a named
    // one without Describe gets TOPIC_AUTHORIZATION_FAILED.
    let mut names: Vec<String> = if req.topics.is_empty() {
        image
            .topics()
            .filter(|t| ctx.may(broker, AclOperation::Describe, ResourceType::Topic, &t.name))
            .map(|t| t.name.clone())
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    if let Some(ct) = &cursor_topic {
        if !req.topics.is_empty() && !names.contains(ct) {
            // Kafka: the cursor must name a requested topic
            return DescribeTopicPartitionsResponse::default().with_topics(vec![
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(ct.clone()))))
                    .with_error_code(ResponseError::InvalidRequest.code()),
            ]);
        }
    }
    let mut budget = req
        .response_partition_limit
        .clamp(1, MAX_PARTITIONS_PER_RESPONSE);
    let me = broker.node_id();
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if cursor_topic.as_ref().is_some_and(|ct| name < *ct) {
            continue;
        }
        let first = if cursor_topic.as_ref() == Some(&name) {
            cursor_partition
        } else {
            0
        };
        let tn = TopicName(StrBytes::from_string(name.clone()));
        if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Topic, &name) {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(tn))
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
            );
            continue;
        }
        let Some(t) = image.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(tn))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(tn)
                    .with_partition_index(first),
            );
            break;
        }
        let mut partitions = Vec::new();
        let mut p = first;
        while p < t.partitions {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(tn.clone())
                        .with_partition_index(p),
                );
                break;
            }
            let v = partition_view(&image, t, p, me);
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p)
                    .with_error_code(v.error_code())
                    .with_leader_id(BrokerId(v.leader))
                    .with_leader_epoch(v.leader_epoch)
                    .with_replica_nodes(ids(v.replicas))
                    .with_isr_nodes(ids(v.isr))
                    .with_offline_replicas(ids(v.offline))
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![])),
            );
            budget -= 1;
            p += 1;
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(tn))
                .with_topic_id(t.id)
                .with_is_internal(is_internal(&t.name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(if broker.authorizer.enabled() {
                    ctx.authorized_operations(
                        broker,
                        ResourceType::Topic,
                        &t.name,
                        crate::security::check::TOPIC_OPERATIONS,
                    )
                } else {
                    TOPIC_OPERATIONS
                }),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
