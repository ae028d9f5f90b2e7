//! The requests brokers send to the active controller, and its answers
//! (Kafka's broker→controller RPCs: BrokerRegistration, BrokerHeartbeat,
//! AlterPartition, AllocateProducerIds, and the forwarded admin writes:
//! CreateTopics, CreatePartitions, ElectLeaders, AlterPartitionReassignments,
//! ListPartitionReassignments, and any other metadata change as validated
//! records).
//!
//! They travel over the controller listener as JSON frames next to the Raft
//! RPCs (see [`crate::network`]); a node that is itself the active controller
//! handles them in-process. The controller handles one request at a time
//! against its latest image, turns it into records, proposes them and answers
//! once they are committed — so a broker that gets an answer will see the
//! change in its own image as soon as it has replayed that far
//! (`ControllerResponse`s that change metadata carry the log index).
//!
//! Errors are Kafka error codes (`error_code`, with Kafka's message where it
//! has one), because they go back to Kafka clients unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{BrokerEndpoint, MetadataRecord};
use crate::NodeId;

/// One request to the active controller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// Kafka's BrokerRegistration: a broker (re)starting. A new
    /// `incarnation_id` gets a new broker epoch; the broker starts fenced.
    /// `observer_addr` is the controller-listener address of a broker-only
    /// node (`process.roles=broker`), which the controller adds as an
    /// observer of the metadata log; voters send `None`.
    RegisterBroker {
        broker_id: NodeId,
        incarnation_id: Uuid,
        endpoints: Vec<BrokerEndpoint>,
        rack: Option<String>,
        observer_addr: Option<String>,
    },
    /// Kafka's BrokerHeartbeat, every `broker.heartbeat.interval.ms`.
    /// `current_metadata_offset` is the last metadata log index the broker
    /// has applied (its catch-up test for unfencing).
    BrokerHeartbeat {
        broker_id: NodeId,
        broker_epoch: i64,
        current_metadata_offset: i64,
        want_fence: bool,
        want_shutdown: bool,
    },
    /// Kafka's AlterPartition, sent by a partition leader to shrink or expand
    /// the ISR.
    AlterPartition {
        broker_id: NodeId,
        broker_epoch: i64,
        topics: Vec<AlterPartitionTopic>,
    },
    /// Kafka's AllocateProducerIds: a block of producer ids for one broker.
    AllocateProducerIds { broker_id: NodeId, broker_epoch: i64 },
    /// CreateTopics, validated by the broker that received it (names,
    /// configs); the controller checks existence, replication factor against
    /// the unfenced brokers, manual assignments, and places replicas.
    CreateTopics {
        topics: Vec<CreatableTopic>,
        validate_only: bool,
    },
    /// CreatePartitions for one topic: grow to `count` partitions.
    CreatePartitions {
        topic: String,
        count: i32,
        /// Replicas of each new partition, or `None` to let the controller place them.
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
    },
    /// ElectLeaders; `partitions: None` means every partition.
    ElectLeaders {
        election_type: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments; a `None` target cancels a reassignment.
    AlterPartitionReassignments {
        reassignments: Vec<(String, i32, Option<Vec<NodeId>>)>,
    },
    /// ListPartitionReassignments; `None` lists all ongoing ones.
    ListPartitionReassignments {
        partitions: Option<Vec<(String, i32)>>,
    },
    /// Any other metadata change (configs, topic deletion, ACLs, SCRAM
    /// credentials, quotas), computed by a broker against its image. The
    /// controller checks the records still apply to its own image (replay on
    /// a copy) and proposes them as one batch.
    Propose { records: Vec<MetadataRecord> },
}

/// Kafka's `ElectionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// The first live replica of the assignment that is in the ISR.
    Preferred = 0,
    /// Any live replica, even out of the ISR (data loss possible).
    Unclean = 1,
}

/// AlterPartition's per-topic part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlterPartitionTopic {
    pub topic_id: Uuid,
    pub partitions: Vec<AlterPartitionItem>,
}

/// One partition's requested ISR, with the epochs the leader saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlterPartitionItem {
    pub partition: i32,
    pub leader_epoch: i32,
    pub new_isr: Vec<NodeId>,
    pub partition_epoch: i32,
}

/// CreateTopics' per-topic part; `num_partitions`/`replication_factor` are
/// already resolved from the broker defaults when `assignments` is empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatableTopic {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Manual assignment: partition → replicas (Kafka's `assignments`).
    pub assignments: BTreeMap<i32, Vec<NodeId>>,
    pub configs: BTreeMap<String, String>,
}

/// A Kafka error code with its message (`error_code == 0`: no error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error_code: i16,
    pub message: Option<String>,
}

/// The answer to one [`ControllerRequest`], variant for variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControllerResponse {
    RegisterBroker {
        error: ApiError,
        broker_epoch: i64,
    },
    BrokerHeartbeat {
        error: ApiError,
        is_caught_up: bool,
        is_fenced: bool,
        should_shutdown: bool,
    },
    AlterPartition {
        error: ApiError,
        /// Per topic id, per partition: the error or the new registration.
        topics: Vec<(Uuid, Vec<AlterPartitionResult>)>,
        /// Metadata log index of the change (the broker waits to replay it).
        log_index: u64,
    },
    AllocateProducerIds {
        error: ApiError,
        producer_id_start: i64,
        producer_id_len: i32,
    },
    CreateTopics {
        /// One per requested topic, in request order.
        topics: Vec<CreatedTopic>,
        log_index: u64,
    },
    CreatePartitions {
        error: ApiError,
        log_index: u64,
    },
    ElectLeaders {
        error: ApiError,
        /// Per (topic, partition): NONE, ELECTION_NOT_NEEDED,
        /// ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION…
        partitions: Vec<(String, i32, ApiError)>,
        log_index: u64,
    },
    AlterPartitionReassignments {
        error: ApiError,
        partitions: Vec<(String, i32, ApiError)>,
        log_index: u64,
    },
    ListPartitionReassignments {
        error: ApiError,
        /// (topic, partition, replicas, adding, removing)
        partitions: Vec<(String, i32, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>)>,
    },
    Propose {
        error: ApiError,
        log_index: u64,
    },
}

/// AlterPartition's per-partition answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlterPartitionResult {
    pub partition: i32,
    pub error: ApiError,
    pub leader_id: NodeId,
    pub leader_epoch: i32,
    pub isr: Vec<NodeId>,
    pub partition_epoch: i32,
}

/// CreateTopics' per-topic answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub name: String,
    pub error: ApiError,
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
}
