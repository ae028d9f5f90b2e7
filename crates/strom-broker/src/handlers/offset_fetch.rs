//! OffsetFetch (key 9): committed offsets of one group (v1–v7) or several
//! (v8+). Unknown groups and partitions answer offset -1 without error.
//! `require_stable` (v7+): a partition with offsets staged by an open
//! transaction answers UNSTABLE_OFFSET_COMMIT (the client retries).

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::state::OffsetAndMetadata;
use crate::security::acl::{AclOperation, ResourceType};

type Fetched = Vec<(String, Vec<(i32, Option<OffsetAndMetadata>)>)>;

const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// The partitions of `group` whose offsets are pending in a transaction,
/// when the request asks for stable offsets.
async fn unstable(broker: &Arc<Broker>, group: &str, require_stable: bool) -> Vec<(String, i32)> {
    if !require_stable {
        return Vec::new();
    }
    let group = group.to_string();
    match broker.groups.existing_shard_for(broker, &group).await {
        Ok(Some(shard)) => shard
            .read(move |st| st.pending_txn_offsets(&group))
            .await
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn fetch(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<(Fetched, Vec<String>), i16> {
    if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Group, &group) {
        return Err(kafka_protocol::error::ResponseError::GroupAuthorizationFailed.code());
    }
    let all_topics = topics.is_none();
    let mut fetched = fetch_authorized_group(broker, group, topics).await?;
    if all_topics {
        // Kafka leaves out the topics the principal may not Describe...
        fetched.retain(|(t, _)| ctx.may(broker, AclOperation::Describe, ResourceType::Topic, t));
        return Ok((fetched, Vec::new()));
    }
    // ...and answers TOPIC_AUTHORIZATION_FAILED for those it asked for.
    let mut denied = Vec::new();
    for (t, ps) in fetched.iter_mut() {
        if !ctx.authorize(broker, AclOperation::Describe, ResourceType::Topic, t) {
            ps.iter_mut().for_each(|(_, o)| *o = None);
            denied.push(t.clone());
        }
    }
    Ok((fetched, denied))
}

async fn fetch_authorized_group(
    broker: &Arc<Broker>,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, i16> {
    let unknown = |topics: Option<Vec<(String, Vec<i32>)>>| -> Fetched {
        topics
            .unwrap_or_default()
            .into_iter()
            .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
            .collect()
    };
    match broker.groups.existing_shard_for(broker, &group).await {
        Ok(None) => Ok(unknown(topics)),
        Ok(Some(shard)) => shard
            .read(move |st| st.fetch_offsets(&group, topics.as_deref()))
            .await
            .map_err(|e| e.code().code()),
        Err(e) => Err(e.code().code()),
    }
}

fn offset_fields(o: &Option<OffsetAndMetadata>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.clone()),
        None => (-1, -1, String::new()),
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = ctx.version();
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            let pending = unstable(broker, g.group_id.as_str(), req.require_stable).await;
            match fetch(broker, ctx, g.group_id.0.to_string(), topics).await {
                Ok((fetched, denied)) => {
                    out.topics = fetched
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(t.clone())))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|(p, o)| {
                                            let busy = pending.contains(&(t.clone(), p));
                                            let o = if busy { None } else { o };
                                            let (off, epoch, meta) = offset_fields(&o);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(off)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(StrBytes::from_string(meta)))
                                                .with_error_code(if denied.contains(&t) {
                                                    TOPIC_AUTHORIZATION_FAILED
                                                } else if busy {
                                                    UNSTABLE_OFFSET_COMMIT
                                                } else {
                                                    0
                                                })
                                        })
                                        .collect(),
                                )
                        })
                        .collect()
                }
                Err(code) => out.error_code = code,
            }
            groups.push(out);
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }

    let group: GroupId = req.group_id;
    let topics: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let requested = topics.clone();
    let pending = unstable(broker, group.as_str(), version >= 7 && req.require_stable).await;
    let mut resp = OffsetFetchResponse::default();
    let part = |p: i32, o: &Option<OffsetAndMetadata>, code: i16| {
        let (off, epoch, meta) = offset_fields(o);
        let mut r = OffsetFetchResponsePartition::default()
            .with_partition_index(p)
            .with_committed_offset(off)
            .with_metadata(Some(StrBytes::from_string(meta)))
            .with_error_code(code);
        if version >= 5 {
            r.committed_leader_epoch = epoch;
        }
        r
    };
    let fetched = match fetch(broker, ctx, group.0.to_string(), topics).await {
        Ok(f) => f,
        Err(code) => {
            if version >= 2 {
                resp.error_code = code;
                return resp;
            }
            // v1 has no top-level error: report it on every partition.
            resp.topics = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps.into_iter().map(|p| part(p, &None, code)).collect())
                })
                .collect();
            return resp;
        }
    };
    let (fetched, denied) = fetched;
    resp.topics = fetched
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(
                    ps.iter()
                        .map(|(p, o)| {
                            if denied.contains(&t) {
                                part(*p, &None, TOPIC_AUTHORIZATION_FAILED)
                            } else if pending.contains(&(t.clone(), *p)) {
                                part(*p, &None, UNSTABLE_OFFSET_COMMIT)
                            } else {
                                part(*p, o, 0)
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    resp
}
