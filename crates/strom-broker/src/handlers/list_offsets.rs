//! ListOffsets (key 2): offsets by timestamp, plus the special timestamps
//! EARLIEST (-2), LATEST (-1), MAX_TIMESTAMP (-3, v7+), EARLIEST_LOCAL (-4,
//! v8+) and LATEST_TIERED (-5, v9+).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::log_error_code;
use crate::partition::{IsolationLevel, Partition};
use crate::replica_manager::missing_partition_error;
use crate::security::acl::{AclOperation, ResourceType};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = ctx.version();
    let isolation = IsolationLevel::from_wire(req.isolation_level);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let authorized =
                ctx.authorize(broker, AclOperation::Describe, ResourceType::Topic, &t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    if !authorized {
                        return base
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    match broker
                        .replicas
                        .partition(t.name.as_str(), p.partition_index)
                    {
                        None => base.with_error_code(
                            missing_partition_error(broker, t.name.as_str(), p.partition_index)
                                .code(),
                        ),
                        Some(part) => match lookup(
                            &part,
                            p.timestamp,
                            p.current_leader_epoch,
                            version,
                            isolation,
                        ) {
                            Ok((offset, timestamp)) => {
                                let r = base.with_offset(offset).with_timestamp(timestamp);
                                // leader_epoch exists from v4 on.
                                if version >= 4 && offset >= 0 {
                                    r.with_leader_epoch(part.leader_epoch().0)
                                } else {
                                    r
                                }
                            }
                            Err(code) => base.with_error_code(code.code()),
                        },
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; -1s when no record matches.
fn lookup(
    p: &Partition,
    timestamp: i64,
    current_leader_epoch: i32,
    version: i16,
    isolation: IsolationLevel,
) -> Result<(i64, i64), ResponseError> {
    if current_leader_epoch != -1 {
        if current_leader_epoch < p.leader_epoch().0 {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if current_leader_epoch > p.leader_epoch().0 {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
    }
    // offsets are the leader's to tell (its high watermark)
    if !p.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let visible_end = match isolation {
        IsolationLevel::ReadUncommitted => p.high_watermark(),
        IsolationLevel::ReadCommitted => p.last_stable_offset(),
    };
    let found = |r: Option<(strom_protocol::Offset, i64)>| match r {
        Some((o, ts)) if o < visible_end => (o.0, ts),
        _ => (-1, -1),
    };
    match timestamp {
        LATEST => Ok((visible_end.0, -1)),
        EARLIEST => Ok((p.log_start_offset().0, -1)),
        EARLIEST_LOCAL if version >= 8 => Ok((p.log_start_offset().0, -1)),
        MAX_TIMESTAMP if version >= 7 => p
            .log()
            .max_timestamp_and_offset()
            .map(found)
            .map_err(|e| log_error_code(&e)),
        // No tiered storage: nothing is tiered.
        LATEST_TIERED if version >= 9 => Ok((-1, -1)),
        MAX_TIMESTAMP | EARLIEST_LOCAL | LATEST_TIERED => Err(ResponseError::UnsupportedVersion),
        t => p
            .log()
            .fetch_offset_by_timestamp(t)
            .map(found)
            .map_err(|e| log_error_code(&e)),
    }
}
