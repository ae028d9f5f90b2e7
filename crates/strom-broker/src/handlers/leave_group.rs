//! LeaveGroup (key 13): members leave (v3+: several at once, by member id or
//! `group.instance.id`) and the group rebalances.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let version = ctx.version();
    let group_id = req.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let members = leaving.clone();
    let result = if group_id.is_empty() {
        Err(kafka_protocol::error::ResponseError::InvalidGroupId.code())
    } else if !ctx.authorize(broker, AclOperation::Read, ResourceType::Group, &group_id) {
        Err(kafka_protocol::error::ResponseError::GroupAuthorizationFailed.code())
    } else {
        match broker.groups.shard_for(broker, &group_id).await {
            Ok(shard) => shard
                .write(move |st, now, fx| st.leave_group(now, &group_id, &members, fx))
                .await
                .unwrap_or_else(|e| Err(e.code().code())),
            Err(e) => Err(e.code().code()),
        }
    };
    let mut resp = LeaveGroupResponse::default();
    match result {
        Err(code) => resp.error_code = code,
        Ok(codes) if version >= 3 => {
            resp.members = leaving
                .into_iter()
                .zip(codes)
                .map(|((member_id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(member_id))
                        .with_group_instance_id(instance.map(StrBytes::from_string))
                        .with_error_code(code)
                })
                .collect();
        }
        Ok(codes) => resp.error_code = codes.first().copied().unwrap_or(0),
    }
    resp
}
