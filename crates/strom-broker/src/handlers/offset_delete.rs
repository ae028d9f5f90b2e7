//! OffsetDelete (key 47): remove a group's committed offsets, refused for
//! topics the (non-empty) group still subscribes to.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    if !ctx.authorize(broker, AclOperation::Delete, ResourceType::Group, &group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let image = broker.metadata.image();
    let mut unknown: Vec<(String, i32)> = Vec::new();
    let mut denied: Vec<(String, i32)> = Vec::new();
    let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
    for t in &req.topics {
        let meta = image.topic(t.name.as_str());
        let mut ps = Vec::new();
        let authorized = ctx.authorize(broker, AclOperation::Read, ResourceType::Topic, &t.name);
        for p in &t.partitions {
            if !authorized {
                denied.push((t.name.to_string(), p.partition_index));
            } else if meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                ps.push(p.partition_index);
            } else {
                unknown.push((t.name.to_string(), p.partition_index));
            }
        }
        topics.push((t.name.to_string(), ps));
    }
    let mut resp = OffsetDeleteResponse::default();
    let result = match broker.groups.existing_shard_for(broker, &group).await {
        Ok(Some(shard)) => shard
            .write(move |st, _, fx| st.delete_offsets(&group, &topics, fx))
            .await
            .unwrap_or_else(|e| Err(e.code().code())),
        Ok(None) => Err(ResponseError::GroupIdNotFound.code()),
        Err(e) => Err(e.code().code()),
    };
    match result {
        Err(code) => resp.error_code = code,
        Ok(done) => {
            for (t, ps) in done {
                let mut rt = OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.clone())));
                for (p, code) in ps {
                    rt.partitions.push(
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(code),
                    );
                }
                for (_, p) in unknown.iter().filter(|(ut, _)| *ut == t) {
                    rt.partitions.push(
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(*p)
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    );
                }
                for (_, p) in denied.iter().filter(|(dt, _)| *dt == t) {
                    rt.partitions.push(
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(*p)
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                    );
                }
                resp.topics.push(rt);
            }
        }
    }
    resp
}
