//! ElectLeaders (key 43, KIP-183/KIP-460): preferred or unclean leader
//! election, forwarded to the active controller, which elects and commits
//! the new leaders before answering. Also the helpers the other forwarded
//! cluster admin APIs (AlterPartitionReassignments,
//! ListPartitionReassignments) share: error mapping and how long to wait for
//! this node's image to catch up with the controller's answer.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_metadata::controller_api::{
    ApiError, ControllerRequest, ControllerResponse, ElectionType,
};
use strom_metadata::ProposeError;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;

/// How long a forwarded request waits for this node to replay the
/// controller's change when the client gave no timeout.
const DEFAULT_APPLY_WAIT: Duration = Duration::from_secs(30);

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let version = ctx.version();
    // v0 has no election type: it always asked for the preferred leader.
    let election_type = match (version, req.election_type) {
        (0, _) | (_, 0) => Some(ElectionType::Preferred),
        (_, 1) => Some(ElectionType::Unclean),
        _ => None,
    };
    let requested: Option<Vec<(String, i32)>> = req.topic_partitions.as_ref().map(|tps| {
        let mut v: Vec<(String, i32)> = tps
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
            .collect();
        v.sort();
        v.dedup();
        v
    });
    let fail_all = |code: ResponseError, msg: String| {
        let partitions = requested.clone().unwrap_or_default();
        ElectLeadersResponse::default()
            .with_error_code(if version >= 1 { code.code() } else { 0 })
            .with_replica_election_results(results(partitions.into_iter().map(|(t, p)| {
                (
                    t,
                    p,
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
    let Some(election_type) = election_type else {
        return fail_all(
            ResponseError::InvalidRequest,
            format!("Unknown election type {}", req.election_type),
        );
    };
    let quorum = broker.metadata.quorum();
    let call = quorum.controller_call(ControllerRequest::ElectLeaders {
        election_type,
        partitions: requested.clone(),
    });
    match call.await {
        Ok(ControllerResponse::ElectLeaders {
            error,
            partitions,
            log_index,
        }) => {
            if error.error_code != 0 {
                let code = ResponseError::try_from_code(error.error_code)
                    .unwrap_or(ResponseError::UnknownServerError);
                return fail_all(code, error.message.unwrap_or_default());
            }
            // A client reading metadata from this broker right after the
            // answer sees the change it asked for.
            broker
                .metadata
                .wait_for_index(log_index, apply_wait(req.timeout_ms))
                .await;
            ElectLeadersResponse::default()
                .with_replica_election_results(results(partitions.into_iter()))
        }
        Ok(other) => fail_all(
            ResponseError::UnknownServerError,
            format!("the controller answered ElectLeaders with {other:?}"),
        ),
        Err(e) => {
            let (code, msg) = forward_error(&e);
            fail_all(code, msg)
        }
    }
}

/// Groups (topic, partition, error) by topic in Kafka's response shape.
fn results(
    partitions: impl Iterator<Item = (String, i32, ApiError)>,
) -> Vec<ReplicaElectionResult> {
    let mut out: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, error) in partitions {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(error.error_code)
            .with_error_message(
                (error.error_code != 0)
                    .then(|| error.message.map(StrBytes::from_string))
                    .flatten(),
            );
        match out.last_mut().filter(|r| r.topic.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => out.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    out
}

/// The Kafka error a client gets when the controller could not be reached
/// or did not commit in time.
pub(crate) fn forward_error(e: &ProposeError) -> (ResponseError, String) {
    let code = match e {
        ProposeError::NotLeader { .. } => ResponseError::NotController,
        ProposeError::Timeout(_) => ResponseError::RequestTimedOut,
        ProposeError::Rejected { .. } | ProposeError::Unavailable(_) => {
            ResponseError::UnknownServerError
        }
    };
    (code, e.to_string())
}

/// The client's `timeout_ms` as the time to wait for the local image (a
/// non-positive one means our default).
pub(crate) fn apply_wait(timeout_ms: i32) -> Duration {
    if timeout_ms > 0 {
        Duration::from_millis(timeout_ms as u64)
    } else {
        DEFAULT_APPLY_WAIT
    }
}
