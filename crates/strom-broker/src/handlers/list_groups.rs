//! ListGroups (key 16): every group this coordinator owns, filtered by state
//! (v4+) and type (v5+: `classic`, or `consumer` for KIP-848 groups).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let version = ctx.version();
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut resp = ListGroupsResponse::default();
    // Describe on the cluster lists every group; otherwise only the groups
    // the principal may Describe.
    let all_groups = ctx.may(
        broker,
        AclOperation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let shards = match broker.groups.all_shards(broker).await {
        Ok(s) => s,
        Err(e) => return resp.with_error_code(e.code().code()),
    };
    for shard in shards.iter() {
        let listed = shard
            .read(|st| {
                let mut l: Vec<_> = st
                    .groups()
                    .filter(|g| st.consumer.get(&g.group_id).is_none())
                    .map(|g| {
                        (
                            g.group_id.clone(),
                            g.protocol_type.clone().unwrap_or_default(),
                            g.state.name(),
                            "classic",
                        )
                    })
                    .collect();
                l.extend(st.consumer.groups.values().map(|g| {
                    (
                        g.group_id.clone(),
                        "consumer".to_string(),
                        g.state_name(),
                        "consumer",
                    )
                }));
                l
            })
            .await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => return resp.with_error_code(e.code().code()),
        };
        for (id, protocol_type, state, group_type) in listed {
            if !all_groups && !ctx.may(broker, AclOperation::Describe, ResourceType::Group, &id) {
                continue;
            }
            if !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == group_type) {
                continue;
            }
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            if version >= 4 {
                g.group_state = StrBytes::from_static_str(state);
            }
            if version >= 5 {
                g.group_type = StrBytes::from_static_str(group_type);
            }
            resp.groups.push(g);
        }
    }
    resp
}
