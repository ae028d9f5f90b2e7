//! OffsetForLeaderEpoch (key 23, v2–v4): where a leader epoch ends in this
//! leader's log. Followers use it to truncate a divergent tail after a
//! leader change; consumers (KIP-320) to detect truncation below their
//! position.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use strom_protocol::LeaderEpoch;

use super::RequestContext;
use crate::broker::Broker;
use crate::partition::Partition;
use crate::replica_manager::missing_partition_error;
use crate::security::acl::{AclOperation, ResourceType};

/// Kafka's `NO_PARTITION_LEADER_EPOCH`: the sender does not know the
/// partition's current epoch, so it is not checked.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    // Kafka: ClusterAction (what followers hold) covers every topic and is
    // checked without an audit line; otherwise Describe on each topic, as
    // consumers need since KIP-320. `replica_id` does not change the rules.
    let cluster_action = ctx.may(
        broker,
        AclOperation::ClusterAction,
        ResourceType::Cluster,
        crate::security::acl::CLUSTER_NAME,
    );
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let authorized = cluster_action
                || ctx.authorize(
                    broker,
                    AclOperation::Describe,
                    ResourceType::Topic,
                    &t.topic,
                );
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    if !authorized {
                        return base
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    match broker.replicas.partition(t.topic.as_str(), p.partition) {
                        Some(part) => {
                            match end_offset(&part, p.current_leader_epoch, p.leader_epoch) {
                                Ok(Some((epoch, offset))) => {
                                    base.with_leader_epoch(epoch).with_end_offset(offset)
                                }
                                // UNDEFINED_EPOCH_OFFSET: the defaults, -1 and -1
                                Ok(None) => base,
                                Err(code) => base.with_error_code(code.code()),
                            }
                        }
                        None => base.with_error_code(
                            missing_partition_error(broker, t.topic.as_str(), p.partition).code(),
                        ),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// `(epoch, end offset)` of `requested` in the partition's leader-epoch
/// cache, after fencing on the sender's idea of the current epoch.
fn end_offset(
    p: &Partition,
    current_leader_epoch: i32,
    requested: i32,
) -> Result<Option<(i32, i64)>, ResponseError> {
    check_current_epoch(current_leader_epoch, p.leader_epoch().0)?;
    // followers truncate against the leader's cache, consumers ask the
    // leader too (Kafka serves it from the leader only)
    if !p.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(p.end_offset_for_epoch(LeaderEpoch(requested))
        .map(|(e, o)| (e.0, o.0)))
}

/// Kafka's fencing: a sender behind the leader's epoch is fenced, one ahead
/// of it knows of a leader change this broker has not seen yet.
fn check_current_epoch(current: i32, partition: i32) -> Result<(), ResponseError> {
    if current == NO_PARTITION_LEADER_EPOCH {
        Ok(())
    } else if current < partition {
        Err(ResponseError::FencedLeaderEpoch)
    } else if current > partition {
        Err(ResponseError::UnknownLeaderEpoch)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_on_current_leader_epoch() {
        assert_eq!(check_current_epoch(-1, 3), Ok(()));
        assert_eq!(check_current_epoch(3, 3), Ok(()));
        assert_eq!(
            check_current_epoch(2, 3),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            check_current_epoch(4, 3),
            Err(ResponseError::UnknownLeaderEpoch)
        );
    }
}
