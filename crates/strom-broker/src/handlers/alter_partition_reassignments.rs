//! AlterPartitionReassignments (key 45, KIP-455): start or cancel moving a
//! partition's replicas, forwarded to the active controller. The controller
//! adds the target replicas, lets them catch up and only then switches the
//! assignment and drops the removed ones.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::StrBytes;
use strom_metadata::controller_api::{ApiError, ControllerRequest};

use super::forward::{by_topic, error_message, forward_partition_change};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let requested: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let fail_all = |code: ResponseError, msg: String| {
        AlterPartitionReassignmentsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(msg.clone())))
            .with_responses(responses(requested.iter().map(|(t, p, _)| {
                (
                    t.clone(),
                    *p,
                    ApiError {
                        error_code: code.code(),
                        message: Some(msg.clone()),
                    },
                )
            })))
    };
    // Kafka: Alter on the cluster, else the whole request fails.
    if !ctx.authorize_cluster(broker, AclOperation::Alter) {
        return fail_all(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        );
    }
    let request = ControllerRequest::AlterPartitionReassignments {
        reassignments: requested.clone(),
    };
    let answer = forward_partition_change(
        broker,
        "AlterPartitionReassignments",
        request,
        req.timeout_ms,
    );
    match answer.await {
        Ok(partitions) => AlterPartitionReassignmentsResponse::default()
            .with_responses(responses(partitions.into_iter())),
        Err((code, msg)) => fail_all(code, msg),
    }
}

/// Groups (topic, partition, error) by topic in Kafka's response shape.
fn responses(
    partitions: impl Iterator<Item = (String, i32, ApiError)>,
) -> Vec<ReassignableTopicResponse> {
    let entries = partitions.map(|(topic, partition, error)| {
        let response = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(error.error_code)
            .with_error_message(error_message(error));
        (topic, response)
    });
    by_topic(entries)
        .into_iter()
        .map(|(topic, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(topic)
                .with_partitions(partitions)
        })
        .collect()
}
