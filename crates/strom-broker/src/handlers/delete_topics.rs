//! DeleteTopics (key 20): delete topics by name (v1+) or id (v6+).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::topic_error_code;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // Up to v5 the request lists names; v6 lists (name | id) states.
    let wanted: Vec<(Option<TopicName>, Uuid)> = if ctx.version() >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut mutation = broker.quotas.controller_mutation(ctx);
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let fail = |code: ResponseError, msg: Option<String>| {
            result
                .clone()
                .with_error_code(code.code())
                .with_error_message(msg.map(StrBytes::from_string))
        };
        let resolved = match (&name, id.is_nil()) {
            (Some(_), false) => {
                responses.push(fail(
                    ResponseError::InvalidRequest,
                    Some("Provide either a topic name or id, not both".into()),
                ));
                continue;
            }
            (Some(n), true) => Some(n.to_string()),
            (None, false) => broker
                .metadata
                .image()
                .topic_by_id(&id)
                .map(|t| t.name.clone()),
            (None, true) => None,
        };
        let Some(topic) = resolved else {
            let code = if name.is_none() && !id.is_nil() {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            responses.push(fail(code, None));
            continue;
        };
        if !ctx.authorize(broker, AclOperation::Delete, ResourceType::Topic, &topic) {
            responses.push(fail(ResponseError::TopicAuthorizationFailed, None));
            continue;
        }
        if let Some(mq) = mutation.as_mut() {
            let partitions = broker
                .metadata
                .image()
                .topic(&topic)
                .map_or(0, |m| m.partitions);
            // KIP-599: v5+ refuses topics beyond the quota.
            if mq
                .record(partitions.max(0) as u32, ctx.version() >= 5)
                .is_err()
            {
                responses.push(fail(
                    ResponseError::ThrottlingQuotaExceeded,
                    Some(crate::quota::THROTTLING_QUOTA_EXCEEDED_MESSAGE.into()),
                ));
                continue;
            }
        }
        match broker.delete_topic(&topic).await {
            Ok(deleted_id) => responses.push(
                result
                    .with_name(Some(TopicName(StrBytes::from_string(topic))))
                    .with_topic_id(deleted_id),
            ),
            Err(e) => responses.push(fail(topic_error_code(&e), Some(e.to_string()))),
        }
    }
    DeleteTopicsResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(mutation.map_or(0, |m| m.throttle_time_ms()))
}
