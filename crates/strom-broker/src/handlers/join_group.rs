//! JoinGroup (key 11): a member joins a classic group; the answer waits
//! until the rebalance completes (or comes at once for errors and KIP-394's
//! MEMBER_ID_REQUIRED).

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::state::{JoinRequest, JoinResponse, Reply};
use crate::security::acl::{AclOperation, ResourceType};

fn s(v: String) -> StrBytes {
    StrBytes::from_string(v)
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = ctx.version();
    let join = JoinRequest {
        version,
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
    };
    let member_id = join.member_id.clone();
    let reply = if !ctx.authorize(
        broker,
        AclOperation::Read,
        ResourceType::Group,
        &join.group_id,
    ) {
        Ok(Reply::Join(error(
            &member_id,
            kafka_protocol::error::ResponseError::GroupAuthorizationFailed.code(),
        )))
    } else {
        match broker.groups.shard_for(broker, &join.group_id).await {
            Ok(shard) => {
                shard
                    .deferred(move |st, now, token, fx| st.join_group(now, token, join, fx))
                    .await
            }
            Err(e) => Err(e),
        }
    };
    let r = match reply {
        Ok(Reply::Join(r)) => r,
        Ok(Reply::Sync(_)) => error(
            &member_id,
            kafka_protocol::error::ResponseError::UnknownServerError.code(),
        ),
        Err(e) => error(&member_id, e.code().code()),
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation_id)
        .with_protocol_name(Some(s(r.protocol_name.unwrap_or_default())))
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(m.member_id))
                        .with_group_instance_id(if version >= 5 {
                            m.group_instance_id.map(s)
                        } else {
                            None
                        })
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    if version >= 7 {
        resp.protocol_type = r.protocol_type.map(s);
        if r.error != 0 {
            resp.protocol_name = None;
        }
    }
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp
}

fn error(member_id: &str, code: i16) -> JoinResponse {
    JoinResponse {
        error: code,
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: member_id.to_string(),
        members: Vec::new(),
    }
}
