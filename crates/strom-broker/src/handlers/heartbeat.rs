//! Heartbeat (key 12): keeps a member's session alive and tells it when the
//! group rebalances.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let instance = req.group_instance_id.map(|i| i.to_string());
    let generation = req.generation_id;
    if group_id.is_empty() {
        return HeartbeatResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::InvalidGroupId.code());
    }
    if !ctx.authorize(broker, AclOperation::Read, ResourceType::Group, &group_id) {
        return HeartbeatResponse::default().with_error_code(
            kafka_protocol::error::ResponseError::GroupAuthorizationFailed.code(),
        );
    }
    let code = match broker.groups.shard_for(broker, &group_id).await {
        Ok(shard) => shard
            .write(move |st, now, _| {
                st.heartbeat(now, &group_id, generation, &member_id, instance.as_deref())
            })
            .await
            .unwrap_or_else(|e| e.code().code()),
        Err(e) => e.code().code(),
    };
    HeartbeatResponse::default().with_error_code(code)
}
