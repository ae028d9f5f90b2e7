//! DescribeConfigs (key 32): topic configs (overrides, broker synonyms and
//! Kafka's defaults, with their sources) and broker configs (read-only:
//! Strom has no dynamic broker configs yet).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;
use crate::topic::{self, TOPIC_CONFIGS};

/// Kafka's `ConfigResource.Type`.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's `DescribeConfigsResponse.ConfigSource`.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// Broker configs described besides the topic configs' synonyms: name,
/// Kafka's default (None: no default), type.
const BROKER_CONFIGS: &[(&str, Option<&str>, i8)] = &[
    ("node.id", Some("-1"), TYPE_INT),
    ("listeners", Some("PLAINTEXT://:9092"), TYPE_STRING),
    ("advertised.listeners", None, TYPE_STRING),
    ("log.dirs", None, TYPE_LIST),
    ("log.dir", Some("/tmp/kafka-logs"), TYPE_STRING),
    ("num.partitions", Some("1"), TYPE_INT),
    ("default.replication.factor", Some("1"), TYPE_INT),
    ("auto.create.topics.enable", Some("true"), TYPE_BOOLEAN),
    ("socket.request.max.bytes", Some("104857600"), TYPE_INT),
    ("log.retention.check.interval.ms", Some("300000"), TYPE_LONG),
    (
        "log.flush.scheduler.interval.ms",
        Some("9223372036854775807"),
        TYPE_LONG,
    ),
    ("log.cleaner.enable", Some("true"), TYPE_BOOLEAN),
    ("log.cleaner.threads", Some("1"), TYPE_INT),
    ("log.cleaner.backoff.ms", Some("15000"), TYPE_LONG),
    (
        "log.cleaner.dedupe.buffer.size",
        Some("134217728"),
        TYPE_LONG,
    ),
];

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = ctx.version();
    let opts = Opts {
        synonyms: req.include_synonyms && version >= 1,
        documentation: req.include_documentation && version >= 3,
        types: version >= 3,
    };
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let keys: Option<Vec<String>> = res
                .configuration_keys
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
            let name = res.resource_name.as_str();
            if let Some(e) = ctx.authorize_config_resource(
                broker,
                AclOperation::DescribeConfigs,
                res.resource_type,
                name,
            ) {
                return base.with_error_code(e.code());
            }
            match res.resource_type {
                RESOURCE_TOPIC => match broker.metadata.image().topic(name) {
                    Some(t) => base.with_configs(
                        topic_configs(broker, &t.configs, &opts)
                            .into_iter()
                            .filter(|c| wanted(c.name.as_str()))
                            .collect(),
                    ),
                    None if topic::validate_name(name).is_err() => {
                        failed(base, ResponseError::InvalidTopicException, name)
                    }
                    None => failed(base, ResponseError::UnknownTopicOrPartition, name),
                },
                RESOURCE_BROKER => {
                    if !name.is_empty() && name != broker.node_id().to_string() {
                        return base
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Unexpected broker id, expected {} but received {name}",
                                broker.node_id()
                            ))));
                    }
                    base.with_configs(
                        broker_configs(broker, &opts)
                            .into_iter()
                            .filter(|c| wanted(c.name.as_str()))
                            .collect(),
                    )
                }
                other => base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Unsupported resource type {other}: Strom describes topic (2) and broker (4) configs"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn failed(base: DescribeConfigsResult, code: ResponseError, name: &str) -> DescribeConfigsResult {
    base.with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(format!(
            "Topic {name} does not exist or is invalid"
        ))))
}

struct Opts {
    synonyms: bool,
    documentation: bool,
    types: bool,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(s(name))
        .with_value(Some(s(value)))
        .with_source(source)
}

/// Every topic config with its effective value and source; synonyms in
/// Kafka's precedence order (topic override, broker config, default).
fn topic_configs(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
    opts: &Opts,
) -> Vec<DescribeConfigsResourceResult> {
    let raw = &broker.config.raw;
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(d.name) {
                synonyms.push(synonym(d.name, v, SOURCE_TOPIC));
            }
            for &(syn, _) in d.synonyms {
                if let Some(v) = raw.get(syn) {
                    synonyms.push(synonym(syn, v.trim(), SOURCE_STATIC_BROKER));
                }
            }
            let default_name = d.synonyms.first().map_or(d.name, |(n, _)| n);
            synonyms.push(synonym(default_name, d.default, SOURCE_DEFAULT));
            let (value, source) = match overrides.get(d.name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => match d.broker_value(raw) {
                    Some((_, _, v)) => (v, SOURCE_STATIC_BROKER),
                    None => (d.default.to_string(), SOURCE_DEFAULT),
                },
            };
            let mut r = DescribeConfigsResourceResult::default()
                .with_name(s(d.name))
                .with_value(Some(s(value)))
                .with_read_only(false)
                .with_config_source(source)
                .with_is_sensitive(false);
            if opts.synonyms {
                r.synonyms = synonyms;
            }
            if opts.types {
                r.config_type = d.type_code();
            }
            if opts.documentation {
                r.documentation = Some(s(d.doc));
            }
            r
        })
        .collect()
}

/// The broker's configs: what `server.properties` set (STATIC_BROKER_CONFIG)
/// or Kafka's default. All read-only until dynamic broker configs exist.
fn broker_configs(broker: &Broker, opts: &Opts) -> Vec<DescribeConfigsResourceResult> {
    let raw = &broker.config.raw;
    let mut entries: Vec<(String, Option<String>, i8, Option<&str>)> = BROKER_CONFIGS
        .iter()
        .map(|&(n, d, t)| (n.to_string(), d.map(str::to_string), t, None))
        .collect();
    for d in TOPIC_CONFIGS {
        for (i, &(syn, _)) in d.synonyms.iter().enumerate() {
            if entries.iter().any(|e| e.0 == syn) {
                continue;
            }
            // only the first synonym carries the default (log.retention.ms's
            // unit); the others appear when set
            let default = (i == 0).then(|| d.default.to_string());
            if default.is_none() && !raw.contains_key(syn) {
                continue;
            }
            let t = if d.type_code() == TYPE_INT && i > 0 {
                TYPE_INT
            } else {
                d.type_code()
            };
            entries.push((syn.to_string(), default, t, Some(d.doc)));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .map(|(name, default, t, doc)| {
            let (value, source) = match raw.get(&name) {
                Some(v) => (Some(v.trim().to_string()), SOURCE_STATIC_BROKER),
                None => (default, SOURCE_DEFAULT),
            };
            let mut r = DescribeConfigsResourceResult::default()
                .with_name(s(name.clone()))
                .with_value(value.clone().map(s))
                .with_read_only(true)
                .with_config_source(source)
                .with_is_sensitive(false);
            if opts.synonyms {
                if let Some(v) = &value {
                    r.synonyms = vec![synonym(&name, v, source)];
                }
            }
            if opts.types {
                r.config_type = t;
            }
            if opts.documentation {
                r.documentation = doc.map(s);
            }
            r
        })
        .collect()
}
