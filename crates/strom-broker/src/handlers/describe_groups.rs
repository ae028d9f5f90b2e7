//! DescribeGroups (key 15): state, protocol and members of groups (member
//! metadata and assignments only while Stable, as Kafka).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::OPERATIONS_NOT_REQUESTED;
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

/// READ, DELETE and DESCRIBE (Kafka's AclOperation codes) on a group.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = ctx.version();
    let mut resp = DescribeGroupsResponse::default();
    for gid in req.groups {
        let id = gid.0.to_string();
        let mut out = DescribedGroup::default().with_group_id(gid);
        if version >= 3 {
            out.authorized_operations = if req.include_authorized_operations {
                GROUP_OPERATIONS
            } else {
                OPERATIONS_NOT_REQUESTED
            };
        }
        if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Group, &id) {
            out.error_code = ResponseError::GroupAuthorizationFailed.code();
            resp.groups.push(out);
            continue;
        }
        if version >= 3 && req.include_authorized_operations && broker.authorizer.enabled() {
            out.authorized_operations = ctx.authorized_operations(
                broker,
                ResourceType::Group,
                &id,
                crate::security::check::GROUP_OPERATIONS,
            );
        }
        let described = match broker.groups.existing_shard_for(broker, &id).await {
            Ok(Some(shard)) => {
                let gid = id.clone();
                shard
                    .read(move |st| match st.consumer.get(&gid) {
                        Some(g) => Some(Err(g.state_name())),
                        None => st.describe(&gid).map(Ok),
                    })
                    .await
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match described {
            Err(e) => out.error_code = e.code().code(),
            Ok(None) => {
                out.group_state = StrBytes::from_static_str("Dead");
                if version >= 6 {
                    out.error_code = ResponseError::GroupIdNotFound.code();
                    out.error_message =
                        Some(StrBytes::from_string(format!("Group {id} not found.")));
                }
            }
            Ok(Some(Err(state))) => {
                // A KIP-848 group: Kafka answers with its state and type, and
                // the members only through ConsumerGroupDescribe.
                out.group_state = StrBytes::from_static_str(state);
                out.protocol_type = StrBytes::from_static_str("consumer");
            }
            Ok(Some(Ok(d))) => {
                out.group_state = StrBytes::from_static_str(d.state.name());
                out.protocol_type = StrBytes::from_string(d.protocol_type);
                out.protocol_data = StrBytes::from_string(d.protocol);
                out.members = d
                    .members
                    .into_iter()
                    .map(|(member_id, instance, client_id, host, meta, asg)| {
                        DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(member_id))
                            .with_group_instance_id(if version >= 4 {
                                instance.map(StrBytes::from_string)
                            } else {
                                None
                            })
                            .with_client_id(StrBytes::from_string(client_id))
                            .with_client_host(StrBytes::from_string(host))
                            .with_member_metadata(meta)
                            .with_member_assignment(asg)
                    })
                    .collect();
            }
        }
        resp.groups.push(out);
    }
    resp
}
