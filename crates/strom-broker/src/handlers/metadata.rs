//! Metadata (key 3): brokers, the controller, topics and their partitions.
//! Auto-creates requested topics when the client and the broker allow it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::{Broker, NewTopic};
use crate::errors::topic_error_code;
use crate::metadata::TopicMetadata;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::security::check;

/// Kafka's AclOperation codes as a bit set: what an unauthorized-free broker
/// allows on a topic (READ..ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS).
pub const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// …and on the cluster (CREATE, ALTER, DESCRIBE, CLUSTER_ACTION,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE).
pub const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// Kafka's "authorized operations not requested" marker.
pub const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// Whether a topic is one of Kafka's internal topics.
pub fn is_internal(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let version = ctx.version();
    let listener = broker.advertised_listener(&ctx.listener);
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(StrBytes::from_string(listener.host))
        .with_port(listener.port as i32)];
    let topic_ops = if req.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        OPERATIONS_NOT_REQUESTED
    };

    let all_topics = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let mut topics = Vec::new();
    if all_topics {
        let image = broker.metadata.image();
        // Kafka lists only the topics the principal may Describe.
        for t in image.topics() {
            if ctx.may(broker, AclOperation::Describe, ResourceType::Topic, &t.name) {
                topics.push(topic_response(broker, t, topic_ops));
            }
        }
    } else {
        let auto_create = req.allow_auto_topic_creation && broker.config.auto_create_topics_enable;
        for requested in req.topics.unwrap_or_default() {
            topics.push(match requested.name {
                Some(name)
                    if !ctx.authorize(
                        broker,
                        AclOperation::Describe,
                        ResourceType::Topic,
                        &name,
                    ) =>
                {
                    MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                }
                Some(name) => named_topic(broker, ctx, name, auto_create, topic_ops).await,
                None => by_id(broker, ctx, requested.topic_id, topic_ops),
            });
        }
    }

    let mut resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(
            broker.metadata.image().cluster_id.clone(),
        )))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_topics(topics);
    if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations = ctx.authorized_operations(
            broker,
            ResourceType::Cluster,
            CLUSTER_NAME,
            check::CLUSTER_OPERATIONS,
        );
    }
    if req.include_topic_authorized_operations && broker.authorizer.enabled() {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = t.name.as_ref().map_or("", |n| n.as_str());
            t.topic_authorized_operations = ctx.authorized_operations(
                broker,
                ResourceType::Topic,
                name,
                check::TOPIC_OPERATIONS,
            );
        }
    }
    resp
}

async fn named_topic(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    name: TopicName,
    auto_create: bool,
    ops: i32,
) -> MetadataResponseTopic {
    if let Some(t) = broker.metadata.image().topic(name.as_str()) {
        return topic_response(broker, t, ops);
    }
    let error = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(name.clone()))
            .with_error_code(code.code())
    };
    if let Err(_why) = crate::topic::validate_name(name.as_str()) {
        return error(ResponseError::InvalidTopicException);
    }
    if !auto_create {
        return error(ResponseError::UnknownTopicOrPartition);
    }
    if name.as_str() == crate::group::CONSUMER_OFFSETS {
        // Created by the group coordinator, with its partition count and
        // configs, never as an ordinary auto-created topic.
        return match broker.groups.ensure_started(broker).await {
            Ok(()) => match broker.metadata.image().topic(name.as_str()) {
                Some(t) => topic_response(broker, t, ops),
                None => error(ResponseError::LeaderNotAvailable),
            },
            Err(e) => error(e.code()),
        };
    }
    // Auto-creation needs Create on the cluster or on the topic.
    if !ctx.may(
        broker,
        AclOperation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) && !ctx.authorize(broker, AclOperation::Create, ResourceType::Topic, &name)
    {
        return error(ResponseError::TopicAuthorizationFailed);
    }
    let new = NewTopic {
        name: name.to_string(),
        num_partitions: -1,
        replication_factor: -1,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    };
    match broker.create_topic(new, false).await {
        Ok(t) => topic_response(broker, &t, ops),
        // Another request created it in the meantime.
        Err(crate::broker::TopicError::AlreadyExists(_)) => {
            match broker.metadata.image().topic(name.as_str()) {
                Some(t) => topic_response(broker, t, ops),
                None => error(ResponseError::LeaderNotAvailable),
            }
        }
        Err(e) => error(topic_error_code(&e)),
    }
}

fn by_id(broker: &Arc<Broker>, ctx: &RequestContext, id: Uuid, ops: i32) -> MetadataResponseTopic {
    match broker.metadata.image().topic_by_id(&id) {
        Some(t) if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Topic, &t.name) => {
            MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(ResponseError::TopicAuthorizationFailed.code())
        }
        Some(t) => topic_response(broker, t, ops),
        None => MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code()),
    }
}

fn topic_response(broker: &Arc<Broker>, t: &TopicMetadata, ops: i32) -> MetadataResponseTopic {
    let me = BrokerId(broker.node_id());
    let partitions = (0..t.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(me)
                .with_leader_epoch(t.leader_epoch)
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops)
}
