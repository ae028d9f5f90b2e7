//! ListPartitionReassignments (key 46, KIP-455): the reassignments in
//! progress (replicas, adding, removing), as the active controller sees
//! them.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use strom_metadata::controller_api::{ControllerRequest, ControllerResponse};

use super::forward::{by_topic, forward};
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
    let request = ControllerRequest::ListPartitionReassignments { partitions };
    let answer = forward(broker, "ListPartitionReassignments", request, |r| match r {
        ControllerResponse::ListPartitionReassignments { error, partitions } => {
            Ok((error, partitions))
        }
        other => Err(other),
    });
    let partitions = match answer.await {
        Ok(partitions) => partitions,
        Err((code, msg)) => return fail(code, msg),
    };
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect();
    let entries = partitions
        .into_iter()
        .map(|(topic, partition, replicas, adding, removing)| {
            let p = OngoingPartitionReassignment::default()
                .with_partition_index(partition)
                .with_replicas(ids(replicas))
                .with_adding_replicas(ids(adding))
                .with_removing_replicas(ids(removing));
            (topic, p)
        });
    let topics = by_topic(entries)
        .into_iter()
        .map(|(topic, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(topic)
                .with_partitions(partitions)
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
