//! CreateTopics (key 19): create topics, or only validate them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::{Broker, NewTopic};
use crate::errors::topic_error_code;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

/// Kafka's ConfigSource.DYNAMIC_TOPIC_CONFIG.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();

    let mut mutation = broker.quotas.controller_mutation(ctx);
    let mut results = Vec::with_capacity(req.topics.len());
    // Kafka: Create on the cluster covers every topic; otherwise Create on
    // each topic.
    let cluster_create = ctx.may(
        broker,
        AclOperation::Create,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    for t in req.topics {
        let failed = |code: ResponseError, msg: String| {
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        };
        if duplicates.contains(t.name.as_str()) {
            results.push(failed(
                ResponseError::InvalidRequest,
                format!(
                    "Create topics request from client contains a duplicate topic {}",
                    t.name.as_str()
                ),
            ));
            continue;
        }
        if !cluster_create
            && !ctx.authorize(broker, AclOperation::Create, ResourceType::Topic, &t.name)
        {
            results.push(failed(
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".into(),
            ));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut null_config = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => null_config = Some(c.name.to_string()),
            }
        }
        if let Some(name) = null_config {
            results.push(failed(
                ResponseError::InvalidConfig,
                format!("Null value not supported for topic configs: {name}"),
            ));
            continue;
        }
        if let Some(mq) = mutation.as_mut().filter(|_| !req.validate_only) {
            let n = match (t.assignments.len(), t.num_partitions) {
                (0, -1) => broker.config.num_partitions,
                (0, n) => n,
                (n, _) => n as i32,
            };
            // KIP-599: v6+ refuses topics beyond the quota; older versions
            // are throttled silently.
            if mq.record(n.max(0) as u32, ctx.version() >= 6).is_err() {
                results.push(failed(
                    ResponseError::ThrottlingQuotaExceeded,
                    crate::quota::THROTTLING_QUOTA_EXCEEDED_MESSAGE.into(),
                ));
                continue;
            }
        }
        let new = NewTopic {
            name: t.name.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs,
        };
        match broker.create_topic(new, req.validate_only).await {
            // The configs are shown only to who may DescribeConfigs the topic.
            Ok(meta)
                if !ctx.may(
                    broker,
                    AclOperation::DescribeConfigs,
                    ResourceType::Topic,
                    &t.name,
                ) =>
            {
                results.push(
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_topic_id(if req.validate_only {
                            Default::default()
                        } else {
                            meta.id
                        })
                        .with_num_partitions(meta.partitions)
                        .with_replication_factor(meta.replication_factor)
                        .with_topic_config_error_code(
                            ResponseError::TopicAuthorizationFailed.code(),
                        ),
                );
            }
            Ok(meta) => {
                let configs = meta
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                            .with_config_source(DYNAMIC_TOPIC_CONFIG)
                    })
                    .collect();
                results.push(
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_topic_id(if req.validate_only {
                            Default::default()
                        } else {
                            meta.id
                        })
                        .with_num_partitions(meta.partitions)
                        .with_replication_factor(meta.replication_factor)
                        .with_configs(Some(configs)),
                );
            }
            Err(e) => results.push(failed(topic_error_code(&e), e.to_string())),
        }
    }
    CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(mutation.map_or(0, |m| m.throttle_time_ms()))
}
