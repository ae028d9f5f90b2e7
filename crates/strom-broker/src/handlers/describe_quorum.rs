//! DescribeQuorum (key 55, KIP-595/KIP-836/KIP-853): the metadata quorum's
//! leader, epoch, high watermark and every voter's and observer's progress,
//! from this node's [`strom_metadata::MetadataQuorum::describe`].

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;

/// The metadata log's topic-partition, the only one DescribeQuorum answers for.
const METADATA_TOPIC: &str = "__cluster_metadata";
const METADATA_PARTITION: i32 = 0;
/// The name the controller listener has when none is configured.
const DEFAULT_CONTROLLER_LISTENER: &str = "CONTROLLER";

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    // Kafka: Describe on the cluster, else a top-level error.
    if !ctx.authorize_cluster(broker, AclOperation::Describe) {
        return DescribeQuorumResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let quorum = broker.metadata.quorum();
    let info = quorum.describe();
    let leader = info.leader_id == quorum.node_id();
    let version = ctx.version();
    let replica = |r: &strom_metadata::ReplicaState| {
        let state = ReplicaState::default()
            .with_replica_id(BrokerId(r.replica_id))
            .with_log_end_offset(r.log_end_offset);
        // The timestamps exist from v1 (KIP-836); v0 cannot carry them.
        if version >= 1 {
            state
                .with_last_fetch_timestamp(r.last_fetch_timestamp)
                .with_last_caught_up_timestamp(r.last_caught_up_timestamp)
        } else {
            state
        }
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let ours = t.topic_name.as_str() == METADATA_TOPIC;
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let part = PartitionData::default().with_partition_index(p.partition_index);
                    if !ours || p.partition_index != METADATA_PARTITION {
                        part.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    } else if !leader {
                        // Kafka answers from the leader only; followers'
                        // views of others' progress are not kept.
                        part.with_error_code(ResponseError::NotLeaderOrFollower.code())
                            .with_leader_id(BrokerId(info.leader_id))
                            .with_leader_epoch(info.leader_epoch)
                    } else {
                        part.with_leader_id(BrokerId(info.leader_id))
                            .with_leader_epoch(info.leader_epoch)
                            .with_high_watermark(info.high_watermark)
                            .with_current_voters(info.voters.iter().map(replica).collect())
                            .with_observers(info.observers.iter().map(replica).collect())
                    }
                })
                .collect();
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_string(t.topic_name.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    // v2 names the voters' endpoints; this node knows its own listener.
    let addr = quorum.local_addr();
    let me = Node::default()
        .with_node_id(BrokerId(quorum.node_id()))
        .with_listeners(vec![Listener::default()
            .with_name(StrBytes::from_static_str(DEFAULT_CONTROLLER_LISTENER))
            .with_host(StrBytes::from_string(addr.ip().to_string()))
            .with_port(addr.port())]);
    DescribeQuorumResponse::default()
        .with_topics(topics)
        .with_nodes(if leader && version >= 2 {
            vec![me]
        } else {
            vec![]
        })
}
