//! ElectLeaders (key 43, KIP-183/KIP-460): preferred or unclean leader
//! election, forwarded to the active controller, which elects and commits
//! the new leaders before answering.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use strom_metadata::controller_api::{ApiError, ControllerRequest, ElectionType};

use super::forward::{by_topic, error_message, forward_partition_change};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;

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
    let request = ControllerRequest::ElectLeaders {
        election_type,
        partitions: requested.clone(),
    };
    let answer = forward_partition_change(broker, "ElectLeaders", request, req.timeout_ms);
    match answer.await {
        Ok(partitions) => ElectLeadersResponse::default()
            .with_replica_election_results(results(partitions.into_iter())),
        Err((code, msg)) => fail_all(code, msg),
    }
}

/// Groups (topic, partition, error) by topic in Kafka's response shape.
fn results(
    partitions: impl Iterator<Item = (String, i32, ApiError)>,
) -> Vec<ReplicaElectionResult> {
    let entries = partitions.map(|(topic, partition, error)| {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(error.error_code)
            .with_error_message(error_message(error));
        (topic, result)
    });
    by_topic(entries)
        .into_iter()
        .map(|(topic, results)| {
            ReplicaElectionResult::default()
                .with_topic(topic)
                .with_partition_result(results)
        })
        .collect()
}
