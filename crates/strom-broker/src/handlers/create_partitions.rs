//! CreatePartitions (key 37): add partitions to existing topics (never
//! fewer: Kafka's INVALID_PARTITIONS).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::topic_error_code;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let mut mutation = broker.quotas.controller_mutation(ctx);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let fail = |code: ResponseError, msg: String| {
            result
                .clone()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)))
        };
        if duplicates.contains(t.name.as_str()) {
            results.push(fail(
                ResponseError::InvalidRequest,
                format!("Duplicate topic in request: {}", t.name.as_str()),
            ));
            continue;
        }
        if !ctx.authorize(broker, AclOperation::Alter, ResourceType::Topic, &t.name) {
            results.push(fail(
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".into(),
            ));
            continue;
        }
        if let Some(mq) = mutation.as_mut().filter(|_| !req.validate_only) {
            let current = broker
                .metadata
                .image()
                .topic(t.name.as_str())
                .map_or(t.count, |m| m.partitions);
            // KIP-599: v3+ refuses topics beyond the quota.
            if mq
                .record((t.count - current).max(0) as u32, ctx.version() >= 3)
                .is_err()
            {
                results.push(fail(
                    ResponseError::ThrottlingQuotaExceeded,
                    crate::quota::THROTTLING_QUOTA_EXCEEDED_MESSAGE.into(),
                ));
                continue;
            }
        }
        let assignments = t.assignments.map(|a| {
            a.into_iter()
                .map(|x| x.broker_ids.into_iter().map(|b| b.0).collect())
                .collect()
        });
        match broker
            .create_partitions(t.name.as_str(), t.count, assignments, req.validate_only)
            .await
        {
            Ok(()) => results.push(result),
            Err(e) => results.push(fail(topic_error_code(&e), e.to_string())),
        }
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(mutation.map_or(0, |m| m.throttle_time_ms()))
}
