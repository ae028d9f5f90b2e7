//! OffsetCommit (key 8): store consumed positions in `__consumer_offsets`,
//! checked against the group's generation and members (or, with generation
//! -1, a "simple" commit outside group management).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::group::state::{CommitPartition, CommitRequest};
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = ctx.version();
    let image = broker.metadata.image();
    // (topic index, partition index) of each partition sent to the group.
    let mut sent = Vec::new();
    let mut partitions = Vec::new();
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::with_capacity(req.topics.len());
    let group_ok = ctx.authorize(
        broker,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id,
    );
    for (ti, t) in req.topics.iter().enumerate() {
        let topic_ok =
            group_ok && ctx.authorize(broker, AclOperation::Read, ResourceType::Topic, &t.name);
        let meta = image.topic(t.name.as_str());
        let mut rt = OffsetCommitResponseTopic::default().with_name(t.name.clone());
        for (pi, p) in t.partitions.iter().enumerate() {
            let known = meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index));
            let code = if !group_ok {
                ResponseError::GroupAuthorizationFailed.code()
            } else if !topic_ok {
                ResponseError::TopicAuthorizationFailed.code()
            } else if known {
                sent.push((ti, pi));
                partitions.push(CommitPartition {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
                0
            } else {
                ResponseError::UnknownTopicOrPartition.code()
            };
            rt.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(rt);
    }
    if partitions.is_empty() {
        return OffsetCommitResponse::default().with_topics(topics);
    }
    let commit = CommitRequest {
        version,
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        partitions,
    };
    let result = if commit.group_id.is_empty() {
        Err(ResponseError::InvalidGroupId.code())
    } else {
        match broker.groups.shard_for(broker, &commit.group_id).await {
            Ok(shard) => shard
                .write(move |st, now, fx| st.commit_offsets(now, &commit, fx))
                .await
                .unwrap_or_else(|e| Err(e.code().code())),
            Err(e) => Err(e.code().code()),
        }
    };
    for (i, (ti, pi)) in sent.into_iter().enumerate() {
        topics[ti].partitions[pi].error_code = match &result {
            Ok(codes) => codes[i],
            Err(code) => *code,
        };
    }
    OffsetCommitResponse::default().with_topics(topics)
}
