//! SyncGroup (key 14): the leader hands in the assignment; every member gets
//! its share once the assignment is durable in `__consumer_offsets`.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::state::{Reply, SyncRequest};
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = ctx.version();
    if req.group_id.0.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    if !ctx.authorize(
        broker,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id,
    ) {
        return SyncGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let sync = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        protocol_type: req.protocol_type.map(|p| p.to_string()),
        protocol_name: req.protocol_name.map(|p| p.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let reply = match broker.groups.shard_for(broker, &sync.group_id).await {
        Ok(shard) => {
            shard
                .deferred(move |st, now, token, fx| st.sync_group(now, token, sync, fx))
                .await
        }
        Err(e) => Err(e),
    };
    let mut resp = SyncGroupResponse::default();
    match reply {
        Ok(Reply::Sync(r)) => {
            resp.error_code = r.error;
            resp.assignment = r.assignment;
            if version >= 5 {
                resp.protocol_type = r.protocol_type.map(StrBytes::from_string);
                resp.protocol_name = r.protocol_name.map(StrBytes::from_string);
            }
        }
        Ok(Reply::Join(_)) => resp.error_code = ResponseError::UnknownServerError.code(),
        Err(e) => resp.error_code = e.code().code(),
    }
    resp
}
