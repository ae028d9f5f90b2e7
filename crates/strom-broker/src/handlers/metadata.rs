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
use crate::metadata::{MetadataImage, TopicMetadata};
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

/// A broker as a client connected on one listener sees it.
pub struct BrokerView {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The unfenced registered brokers with their endpoint for `listener` (a
/// broker without that listener is left out, as Kafka does). Before any
/// broker has registered (no active controller yet) this node alone.
pub fn live_brokers(broker: &Broker, image: &MetadataImage, listener: &str) -> Vec<BrokerView> {
    if image.brokers().next().is_none() {
        let l = broker.advertised_listener(listener);
        return vec![BrokerView {
            id: broker.node_id(),
            host: l.host,
            port: i32::from(l.port),
            rack: broker.config.raw.get("broker.rack").cloned(),
        }];
    }
    image
        .live_brokers()
        .filter_map(|b| {
            let e = b.endpoints.iter().find(|e| e.name == listener)?;
            Some(BrokerView {
                id: b.broker_id,
                host: e.host.clone(),
                port: i32::from(e.port),
                rack: b.rack.clone(),
            })
        })
        .collect()
}

/// The controller id clients are told: the active controller when it is one
/// of the listed brokers, otherwise (a dedicated controller, which clients
/// cannot reach) a listed broker, as KRaft brokers answer.
pub fn controller_id(broker: &Broker, listed: &[BrokerView]) -> i32 {
    let leader = broker.metadata.quorum().leader().map(|(id, _)| id);
    match leader {
        Some(id) if listed.iter().any(|b| b.id == id) => id,
        _ => listed.first().map_or(-1, |b| b.id),
    }
}

/// What Metadata and DescribeCluster tell a client connected on `listener`:
/// the live brokers with their endpoint for that listener, each made into
/// the response's broker entry by `entry` (id, host, port, rack), and the
/// controller id.
pub fn listed_brokers<B>(
    broker: &Broker,
    listener: &str,
    entry: impl Fn(BrokerId, StrBytes, i32, Option<StrBytes>) -> B,
) -> (Vec<B>, i32) {
    let live = live_brokers(broker, &broker.metadata.image(), listener);
    let controller_id = controller_id(broker, &live);
    let brokers = live
        .into_iter()
        .map(|b| {
            entry(
                BrokerId(b.id),
                StrBytes::from_string(b.host),
                b.port,
                b.rack.map(StrBytes::from_string),
            )
        })
        .collect();
    (brokers, controller_id)
}

/// One partition as clients see it.
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on fenced or unregistered brokers.
    pub offline: Vec<i32>,
}

impl PartitionView {
    /// LEADER_NOT_AVAILABLE while the partition has no leader, as Kafka.
    pub fn error_code(&self) -> i16 {
        if self.leader < 0 {
            ResponseError::LeaderNotAvailable.code()
        } else {
            0
        }
    }
}

/// Partition `p` of `t` from its registration; replicas count as offline
/// only once brokers register (before, this node alone answers).
pub fn partition_view(image: &MetadataImage, t: &TopicMetadata, p: i32, me: i32) -> PartitionView {
    let Some(r) = t.registration(p) else {
        return PartitionView {
            leader: me,
            leader_epoch: t.leader_epoch,
            replicas: vec![me],
            isr: vec![me],
            offline: vec![],
        };
    };
    let registered = image.brokers().next().is_some();
    PartitionView {
        leader: r.leader,
        leader_epoch: r.leader_epoch,
        replicas: r.replicas.clone(),
        isr: r.isr.clone(),
        offline: r
            .replicas
            .iter()
            .copied()
            .filter(|id| registered && !image.is_live(*id))
            .collect(),
    }
}

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
    let (brokers, controller_id) = listed_brokers(broker, &ctx.listener, |id, host, port, rack| {
        MetadataResponseBroker::default()
            .with_node_id(id)
            .with_host(host)
            .with_port(port)
            .with_rack(rack)
    });
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
        .with_controller_id(BrokerId(controller_id))
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
    let image = broker.metadata.image();
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let partitions = (0..t.partitions)
        .map(|p| {
            let v = partition_view(&image, t, p, broker.node_id());
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(v.error_code())
                .with_leader_id(BrokerId(v.leader))
                .with_leader_epoch(v.leader_epoch)
                .with_replica_nodes(ids(v.replicas))
                .with_isr_nodes(ids(v.isr))
                .with_offline_replicas(ids(v.offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops)
}
