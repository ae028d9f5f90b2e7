//! AddOffsetsToTxn (key 25): add the group's `__consumer_offsets` partition
//! to the transaction, so TxnOffsetCommit may follow.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::group::{partition_for, CONSUMER_OFFSETS};
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    if !ctx.authorize(
        broker,
        AclOperation::Write,
        ResourceType::TransactionalId,
        &req.transactional_id,
    ) {
        return AddOffsetsToTxnResponse::default().with_error_code(
            kafka_protocol::error::ResponseError::TransactionalIdAuthorizationFailed.code(),
        );
    }
    if !ctx.authorize(
        broker,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id,
    ) {
        return AddOffsetsToTxnResponse::default().with_error_code(
            kafka_protocol::error::ResponseError::GroupAuthorizationFailed.code(),
        );
    }
    if let Err(e) = broker.groups.ensure_started(broker).await {
        return AddOffsetsToTxnResponse::default().with_error_code(e.code().code());
    }
    let n = broker.groups.config().offsets_topic_num_partitions;
    let part = (
        CONSUMER_OFFSETS.to_string(),
        partition_for(req.group_id.as_str(), n),
    );
    let code = match broker
        .transactions
        .add_partitions(
            broker,
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            &[part],
            false,
        )
        .await
    {
        Ok(codes) => codes[0],
        Err(e) => e.code(),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
