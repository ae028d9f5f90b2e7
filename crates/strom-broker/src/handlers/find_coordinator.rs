//! FindCoordinator (key 10): which broker coordinates a group (key type 0)
//! or a transactional id (key type 1): the leader of the key's partition of
//! `__consumer_offsets` / `__transaction_state` (created on first use),
//! COORDINATOR_NOT_AVAILABLE while that partition has no leader.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{live_brokers, BrokerView};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};
use crate::txn::TRANSACTION_STATE;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = ctx.version();
    let keys = if version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let error = match req.key_type {
        0 => broker
            .groups
            .ensure_started(broker)
            .await
            .err()
            .map(|e| (e.code(), e.to_string())),
        1 => broker
            .transactions
            .ensure_started(broker)
            .await
            .err()
            .map(|e| (e, format!("{TRANSACTION_STATE} is not available"))),
        t => Some((
            ResponseError::InvalidRequest,
            format!("Unknown coordinator type {t}"),
        )),
    };
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            // Kafka: Describe on the group or transactional id.
            let denied = match req.key_type {
                0 if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Group, &key) => {
                    Some(ResponseError::GroupAuthorizationFailed)
                }
                1 if !ctx.authorize(
                    broker,
                    AclOperation::Describe,
                    ResourceType::TransactionalId,
                    &key,
                ) =>
                {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                }
                _ => None,
            };
            (
                key,
                denied.map(|e| (e, e.to_string())).or_else(|| error.clone()),
            )
        })
        .map(|(key, error)| {
            let error = error.map(Err).unwrap_or_else(|| {
                coordinator_of(broker, &ctx.listener, req.key_type, &key).ok_or((
                    ResponseError::CoordinatorNotAvailable,
                    "The coordinator is not available.".to_string(),
                ))
            });
            (key, error)
        })
        .map(|(key, found)| match found {
            Ok(b) => Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port),
            Err((code, msg)) => Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::default())
                .with_port(-1)
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg))),
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinators.into_iter().next().unwrap_or_default();
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp.error_message = c.error_message;
    }
    resp
}

/// The broker leading the partition of `key` (a group id for key type 0,
/// a transactional id for 1), with its endpoint for `listener`; `None`
/// while that partition has no live leader.
fn coordinator_of(broker: &Broker, listener: &str, key_type: i8, key: &str) -> Option<BrokerView> {
    let topic = if key_type == 0 {
        crate::group::CONSUMER_OFFSETS
    } else {
        TRANSACTION_STATE
    };
    let image = broker.metadata.image();
    let t = image.topic(topic)?;
    let p = crate::group::partition_for(key, t.partitions);
    let leader = t.registration(p).map_or(broker.node_id(), |r| r.leader);
    live_brokers(broker, &image, listener)
        .into_iter()
        .find(|b| b.id == leader)
}
