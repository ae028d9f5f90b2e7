//! ListPartitionReassignments (key 46, KIP-455): the reassignments in
//! progress (replicas, adding, removing), as the active controller sees
//! them.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_metadata::controller_api::{ControllerRequest, ControllerResponse};

use super::elect_leaders::forward_error;
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let fail = |code: ResponseError, msg: String| {
        ListPartitionReassignmentsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(msg)))
    };
    // Kafka: Describe on the cluster, else the whole request fails.
    if !ctx.authorize_cluster(broker, AclOperation::Describe) {
        return fail(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        );
    }
    let partitions = req.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partition_indexes.iter().map(|&p| (t.name.to_string(), p)))
            .collect()
    });
    let call = broker
        .metadata
        .quorum()
        .controller_call(ControllerRequest::ListPartitionReassignments { partitions });
    match call.await {
        Ok(ControllerResponse::ListPartitionReassignments { error, partitions }) => {
            if error.error_code != 0 {
                let code = ResponseError::try_from_code(error.error_code)
                    .unwrap_or(ResponseError::UnknownServerError);
                return fail(code, error.message.unwrap_or_default());
            }
            let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect();
            let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
            for (topic, partition, replicas, adding, removing) in partitions {
                let p = OngoingPartitionReassignment::default()
                    .with_partition_index(partition)
                    .with_replicas(ids(replicas))
                    .with_adding_replicas(ids(adding))
                    .with_removing_replicas(ids(removing));
                match topics.last_mut().filter(|t| t.name.as_str() == topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        OngoingTopicReassignment::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            ListPartitionReassignmentsResponse::default().with_topics(topics)
        }
        Ok(other) => fail(
            ResponseError::UnknownServerError,
            format!("the controller answered ListPartitionReassignments with {other:?}"),
        ),
        Err(e) => {
            let (code, msg) = forward_error(&e);
            fail(code, msg)
        }
    }
}
