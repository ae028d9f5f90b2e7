//! ListGroups (key 16): every group this coordinator owns, filtered by state
//! (v4+) and type (v5+; all groups here are `classic`).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;

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
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return resp;
    }
    let shards = match broker.groups.all_shards(broker).await {
        Ok(s) => s,
        Err(e) => return resp.with_error_code(e.code().code()),
    };
    for shard in shards.iter() {
        let listed = shard
            .read(|st| {
                st.groups()
                    .map(|g| {
                        (
                            g.group_id.clone(),
                            g.protocol_type.clone().unwrap_or_default(),
                            g.state.name(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => return resp.with_error_code(e.code().code()),
        };
        for (id, protocol_type, state) in listed {
            if !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
                continue;
            }
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            if version >= 4 {
                g.group_state = StrBytes::from_static_str(state);
            }
            if version >= 5 {
                g.group_type = StrBytes::from_static_str("classic");
            }
            resp.groups.push(g);
        }
    }
    resp
}
