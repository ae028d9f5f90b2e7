//! InitProducerId (key 22): a producer id and epoch for an idempotent
//! producer, or — with a `transactional.id` — from the transaction
//! coordinator (fencing older incarnations).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let tid = req.transactional_id.as_ref().filter(|t| !t.is_empty());
    // Kafka: Write on the transactional id; an idempotent producer needs
    // IdempotentWrite on the cluster or Write on some topic.
    match tid {
        Some(t)
            if !ctx.authorize(
                broker,
                AclOperation::Write,
                ResourceType::TransactionalId,
                t,
            ) =>
        {
            return resp.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
        }
        None if !ctx.may(
            broker,
            AclOperation::IdempotentWrite,
            ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        ) && !ctx.authorize_any(broker, AclOperation::Write, ResourceType::Topic) =>
        {
            return resp.with_error_code(ResponseError::ClusterAuthorizationFailed.code());
        }
        _ => {}
    }
    match tid {
        // Kafka hands an idempotent producer a fresh id every time, even
        // when it passes its old id and epoch (KIP-360): nothing to fence.
        None => match broker.producer_ids.generate(broker).await {
            Ok(id) => resp
                .with_producer_id(ProducerId(id.0))
                .with_producer_epoch(0),
            Err(e) => {
                // Kafka's answer while no block is available; clients retry.
                warn!(error = %e, "cannot take a producer id block");
                resp.with_error_code(ResponseError::CoordinatorLoadInProgress.code())
            }
        },
        Some(tid) => match broker
            .transactions
            .init_producer_id(
                broker,
                tid.as_str(),
                req.transaction_timeout_ms,
                req.producer_id.0,
                req.producer_epoch,
            )
            .await
        {
            Ok((pid, epoch)) => resp
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(code) => resp.with_error_code(code.code()),
        },
    }
}
