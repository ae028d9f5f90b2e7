//! ConsumerGroupHeartbeat (key 68, KIP-848): joins, heartbeats, reconciles
//! and leaves a consumer group; the assignment is computed by the server.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as WireAssignment, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::consumer::{Assignment, HeartbeatRequest, TopicsImage};
use crate::security::acl::{AclOperation, ResourceType};

/// Topic name → (id, partitions) of every topic, for the assignors.
pub fn topics_image(broker: &Broker) -> TopicsImage {
    broker
        .metadata
        .image()
        .topics()
        .map(|t| (t.name.clone(), (t.id, t.partitions)))
        .collect()
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let hb = HeartbeatRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|v| v.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: req.server_assignor.map(|s| s.to_string()),
        owned: req.topic_partitions.map(|tps| {
            let mut a = Assignment::new();
            for tp in tps {
                a.entry(tp.topic_id).or_default().extend(tp.partitions);
            }
            a.retain(|_, p| !p.is_empty());
            a
        }),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    if !ctx.authorize(
        broker,
        AclOperation::Read,
        ResourceType::Group,
        &hb.group_id,
    ) {
        return ConsumerGroupHeartbeatResponse::default().with_error_code(
            kafka_protocol::error::ResponseError::GroupAuthorizationFailed.code(),
        );
    }
    // Kafka: Describe on every topic the member subscribes to by name.
    if let Some(names) = &hb.subscribed_topic_names {
        if names
            .iter()
            .any(|t| !ctx.authorize(broker, AclOperation::Describe, ResourceType::Topic, t))
        {
            return ConsumerGroupHeartbeatResponse::default().with_error_code(
                kafka_protocol::error::ResponseError::TopicAuthorizationFailed.code(),
            );
        }
    }
    let topics = topics_image(broker);
    let group_id = hb.group_id.clone();
    let result = match broker.groups.shard_for(broker, &group_id).await {
        Ok(shard) => shard
            .write(move |st, now, fx| {
                let classic = st
                    .group(&hb.group_id)
                    .is_some_and(|g| !g.members.is_empty() || g.protocol_type.is_some());
                st.consumer
                    .heartbeat_durable(now, hb, &topics, classic, &mut fx.records)
            })
            .await
            .map_err(|e| e.code().code()),
        Err(e) => Err(e.code().code()),
    };
    let r = match result {
        Ok(r) => r,
        Err(code) => return ConsumerGroupHeartbeatResponse::default().with_error_code(code),
    };
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(r.error)
        .with_error_message(r.error_message.map(StrBytes::from_string))
        .with_member_id(r.member_id.map(StrBytes::from_string))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
        .with_assignment(r.assignment.map(|a| {
            WireAssignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(id)
                            .with_partitions(ps.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}
