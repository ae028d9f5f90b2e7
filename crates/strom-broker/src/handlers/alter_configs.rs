//! AlterConfigs (key 33): replace a topic's whole set of config overrides
//! (configs not named go back to their defaults). Broker configs are
//! read-only in Strom for now.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::RequestContext;
use crate::broker::{Broker, TopicError};
use crate::errors::topic_error_code;
use crate::security::acl::AclOperation;

/// What Strom answers to a change of broker configs.
pub const BROKER_READ_ONLY: &str = "Strom does not support dynamic broker configs yet: broker configs are read-only at run time (set them in server.properties)";

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for res in req.resources {
        let resp = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
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
            RESOURCE_TOPIC => {
                let mut seen = HashSet::new();
                let mut configs = BTreeMap::new();
                let mut bad = None;
                for c in &res.configs {
                    let name = c.name.to_string();
                    if !seen.insert(name.clone()) {
                        bad = Some(TopicError::InvalidRequest(format!(
                            "Error due to duplicate config keys: {name}"
                        )));
                        break;
                    }
                    match &c.value {
                        Some(v) => {
                            configs.insert(name, v.to_string());
                        }
                        None => {
                            bad = Some(TopicError::InvalidRequest(format!(
                                "Null value not supported for : {name}"
                            )));
                            break;
                        }
                    }
                }
                match bad {
                    Some(e) => Err(e),
                    None => {
                        broker
                            .alter_topic_configs(
                                res.resource_name.as_str(),
                                req.validate_only,
                                |_| Ok(configs),
                            )
                            .await
                    }
                }
            }
            RESOURCE_BROKER if res.configs.is_empty() => Ok(()),
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
    AlterConfigsResponse::default().with_responses(responses)
}
