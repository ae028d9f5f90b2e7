//! ConsumerGroupDescribe (key 69, KIP-848): epochs, members, their current
//! and target assignments.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as WireAssignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::OPERATIONS_NOT_REQUESTED;
use super::RequestContext;
use crate::broker::Broker;
use crate::group::consumer::{Assignment, ConsumerGroup, DEFAULT_ASSIGNOR};
use crate::metadata::MetadataImage;
use crate::security::acl::{AclOperation, ResourceType};

fn wire(a: &Assignment, image: &MetadataImage) -> WireAssignment {
    WireAssignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, ps)| {
                let name = image
                    .topic_by_id(id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let image = broker.metadata.image();
    let mut resp = ConsumerGroupDescribeResponse::default();
    for gid in req.group_ids {
        let id = gid.0.to_string();
        let mut out = DescribedGroup::default()
            .with_group_id(gid)
            .with_authorized_operations(if req.include_authorized_operations {
                ctx.authorized_operations(
                    broker,
                    ResourceType::Group,
                    &id,
                    crate::security::check::GROUP_OPERATIONS,
                )
            } else {
                OPERATIONS_NOT_REQUESTED
            });
        if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Group, &id) {
            out.error_code = ResponseError::GroupAuthorizationFailed.code();
            resp.groups.push(out);
            continue;
        }
        let found: Result<Option<(ConsumerGroup, bool)>, _> =
            match broker.groups.existing_shard_for(broker, &id).await {
                Ok(Some(shard)) => {
                    let gid = id.clone();
                    shard
                        .read(move |st| {
                            let classic = st.group(&gid).is_some_and(|g| g.protocol_type.is_some());
                            match st.consumer.get(&gid) {
                                Some(g) => Some((g.clone(), false)),
                                None if classic => Some((
                                    crate::group::consumer::ConsumerGroup::placeholder(&gid),
                                    true,
                                )),
                                None => None,
                            }
                        })
                        .await
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
        match found {
            Err(e) => out.error_code = e.code().code(),
            Ok(None) => {
                out.error_code = ResponseError::GroupIdNotFound.code();
                out.error_message = Some(StrBytes::from_string(format!("Group {id} not found.")));
            }
            Ok(Some((_, true))) => {
                out.error_code = ResponseError::GroupIdNotFound.code();
                out.error_message = Some(StrBytes::from_string(format!(
                    "Group {id} is not a consumer group."
                )));
            }
            Ok(Some((g, false))) => {
                out.group_state = StrBytes::from_static_str(g.state_name());
                out.group_epoch = g.group_epoch;
                out.assignment_epoch = g.assignment_epoch;
                out.assignor_name = StrBytes::from_string(
                    g.members
                        .values()
                        .find_map(|m| m.server_assignor.clone())
                        .unwrap_or_else(|| DEFAULT_ASSIGNOR.to_string()),
                );
                out.members = g
                    .members
                    .values()
                    .map(|m| {
                        Member::default()
                            .with_member_id(StrBytes::from_string(m.member_id.clone()))
                            .with_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                            .with_rack_id(m.rack_id.clone().map(StrBytes::from_string))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(StrBytes::from_string(m.client_id.clone()))
                            .with_client_host(StrBytes::from_string(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.subscribed_topic_names
                                    .iter()
                                    .map(|t| TopicName(StrBytes::from_string(t.clone())))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(
                                m.subscribed_topic_regex.clone().map(StrBytes::from_string),
                            )
                            .with_assignment(wire(&m.assigned, &image))
                            .with_target_assignment(wire(
                                &g.target.get(&m.member_id).cloned().unwrap_or_default(),
                                &image,
                            ))
                            .with_member_type(1)
                    })
                    .collect();
            }
        }
        resp.groups.push(out);
    }
    resp
}
