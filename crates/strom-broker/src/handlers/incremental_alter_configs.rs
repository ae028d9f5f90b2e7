//! IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT on
//! single topic configs; list configs (`cleanup.policy`) may be appended to
//! or subtracted from, starting from their effective value.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::BROKER_READ_ONLY;
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::RequestContext;
use crate::broker::{Broker, TopicError};
use crate::errors::topic_error_code;
use crate::security::acl::AclOperation;
use crate::topic;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let ops: Vec<(String, i8, Option<String>)> = res
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        if let Some(e) = ctx.authorize_config_resource(
            broker,
            AclOperation::AlterConfigs,
            res.resource_type,
            res.resource_name.as_str(),
        ) {
            responses.push(resp.with_error_code(e.code()));
            continue;
        }
        let result = match res.resource_type {
            RESOURCE_TOPIC => match check_ops(&ops) {
                Err(e) => Err(e),
                Ok(()) => {
                    let b = broker.clone();
                    broker
                        .alter_topic_configs(res.resource_name.as_str(), req.validate_only, |cur| {
                            let mut next = cur.clone();
                            for (name, op, value) in &ops {
                                let current = b.effective_topic_config(&next, name);
                                match *op {
                                    SET => {
                                        next.insert(
                                            name.clone(),
                                            value.clone().unwrap_or_default(),
                                        );
                                    }
                                    DELETE => {
                                        next.remove(name);
                                    }
                                    APPEND | SUBTRACT => {
                                        let mut items: Vec<String> = current
                                            .unwrap_or_default()
                                            .split(',')
                                            .map(|i| i.trim().to_string())
                                            .filter(|i| !i.is_empty())
                                            .collect();
                                        let given = value.clone().unwrap_or_default();
                                        for v in given
                                            .split(',')
                                            .map(str::trim)
                                            .filter(|v| !v.is_empty())
                                        {
                                            if *op == APPEND {
                                                if !items.iter().any(|i| i == v) {
                                                    items.push(v.to_string());
                                                }
                                            } else {
                                                items.retain(|i| i != v);
                                            }
                                        }
                                        next.insert(name.clone(), items.join(","));
                                    }
                                    _ => {} // rejected by check_ops
                                }
                            }
                            Ok(next)
                        })
                        .await
                }
            },
            RESOURCE_BROKER if ops.is_empty() => Ok(()),
            RESOURCE_BROKER => Err(TopicError::InvalidRequest(BROKER_READ_ONLY.into())),
            other => Err(TopicError::InvalidRequest(format!(
                "Unsupported resource type {other}"
            ))),
        };
        responses.push(match result {
            Ok(()) => resp,
            Err(e) => resp
                .with_error_code(topic_error_code(&e).code())
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Kafka's request-level checks: no duplicate names, known operations, a
/// value for SET, known config names, APPEND/SUBTRACT only on lists.
fn check_ops(ops: &[(String, i8, Option<String>)]) -> Result<(), TopicError> {
    let mut seen = HashSet::new();
    for (name, op, value) in ops {
        if !seen.insert(name.as_str()) {
            return Err(TopicError::InvalidRequest(format!(
                "Error due to duplicate config keys: {name}"
            )));
        }
        if !(SET..=SUBTRACT).contains(op) {
            return Err(TopicError::InvalidRequest(format!(
                "Unknown config operation {op} for {name}"
            )));
        }
        let Some(def) = topic::topic_config_def(name) else {
            return Err(TopicError::InvalidConfig(format!(
                "Unknown topic config name: {name}"
            )));
        };
        if *op != DELETE && value.is_none() {
            return Err(TopicError::InvalidRequest(format!(
                "Null value not supported for : {name}"
            )));
        }
        if (*op == APPEND || *op == SUBTRACT) && !def.is_list() {
            let what = if *op == APPEND { "append" } else { "subtract" };
            return Err(TopicError::InvalidConfig(format!(
                "Config value {what} is not allowed for config key: {name}"
            )));
        }
    }
    Ok(())
}
