//! DeleteGroups (key 42): delete empty groups and their offsets (tombstones
//! in `__consumer_offsets`); a group with members is NON_EMPTY_GROUP.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for gid in req.groups_names {
        let id = gid.0.to_string();
        let code = if !ctx.authorize(broker, AclOperation::Delete, ResourceType::Group, &id) {
            ResponseError::GroupAuthorizationFailed.code()
        } else {
            match broker.groups.existing_shard_for(broker, &id).await {
                Ok(Some(shard)) => shard
                    .write(move |st, _, fx| st.delete_group(&id, fx))
                    .await
                    .unwrap_or_else(|e| e.code().code()),
                Ok(None) if id.is_empty() => ResponseError::InvalidGroupId.code(),
                Ok(None) => ResponseError::GroupIdNotFound.code(),
                Err(e) => e.code().code(),
            }
        };
        resp.results.push(
            DeletableGroupResult::default()
                .with_group_id(gid)
                .with_error_code(code),
        );
    }
    resp
}
