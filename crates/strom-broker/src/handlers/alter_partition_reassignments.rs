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
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_metadata::controller_api::{ApiError, ControllerRequest, ControllerResponse};

use super::elect_leaders::{apply_wait, forward_error};
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
    let quorum = broker.metadata.quorum();
    let call = quorum.controller_call(ControllerRequest::AlterPartitionReassignments {
        reassignments: requested.clone(),
    });
    match call.await {
        Ok(ControllerResponse::AlterPartitionReassignments {
            error,
            partitions,
            log_index,
        }) => {
            if error.error_code != 0 {
                let code = ResponseError::try_from_code(error.error_code)
                    .unwrap_or(ResponseError::UnknownServerError);
                return fail_all(code, error.message.unwrap_or_default());
            }
            broker
                .metadata
                .wait_for_index(log_index, apply_wait(req.timeout_ms))
                .await;
            AlterPartitionReassignmentsResponse::default()
                .with_responses(responses(partitions.into_iter()))
        }
        Ok(other) => fail_all(
            ResponseError::UnknownServerError,
            format!("the controller answered AlterPartitionReassignments with {other:?}"),
        ),
        Err(e) => {
            let (code, msg) = forward_error(&e);
            fail_all(code, msg)
        }
    }
}

/// Groups (topic, partition, error) by topic in Kafka's response shape.
fn responses(
    partitions: impl Iterator<Item = (String, i32, ApiError)>,
) -> Vec<ReassignableTopicResponse> {
    let mut out: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, error) in partitions {
        let p = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(error.error_code)
            .with_error_message(
                (error.error_code != 0)
                    .then(|| error.message.map(StrBytes::from_string))
                    .flatten(),
            );
        match out.last_mut().filter(|r| r.name.as_str() == topic) {
            Some(r) => r.partitions.push(p),
            None => out.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    out
}
