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
    AllocateProducerIds {
        broker_id: NodeId,
        broker_epoch: i64,
    },
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
        partitions: Vec<OngoingReassignment>,
    },
    Propose {
        error: ApiError,
        log_index: u64,
    },
}

/// ListPartitionReassignments' per-partition answer: (topic, partition,
/// replicas, adding replicas, removing replicas).
pub type OngoingReassignment = (String, i32, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>);

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

/// The Kafka error codes the controller answers with (Kafka's `Errors`).
pub mod error_codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
    pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
    pub const ELECTION_NOT_NEEDED: i16 = 84;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const INELIGIBLE_REPLICA: i16 = 107;
    pub const INVALID_UPDATE_VERSION: i16 = 108;
}

impl ApiError {
    /// No error.
    pub const NONE: ApiError = ApiError {
        error_code: 0,
        message: None,
    };

    /// An error code with Kafka's message for it.
    pub fn new(error_code: i16, message: impl Into<String>) -> Self {
        Self {
            error_code,
            message: Some(message.into()),
        }
    }

    /// True for `error_code == 0`.
    pub fn is_none(&self) -> bool {
        self.error_code == 0
    }
}

impl ControllerResponse {
    /// Sets the metadata log index of the change this answer reports, for
    /// the variants that carry one.
    pub(crate) fn set_log_index(&mut self, index: u64) {
        match self {
            ControllerResponse::AlterPartition { log_index, .. }
            | ControllerResponse::CreateTopics { log_index, .. }
            | ControllerResponse::CreatePartitions { log_index, .. }
            | ControllerResponse::ElectLeaders { log_index, .. }
            | ControllerResponse::AlterPartitionReassignments { log_index, .. }
            | ControllerResponse::Propose { log_index, .. } => *log_index = index,
            ControllerResponse::RegisterBroker { .. }
            | ControllerResponse::BrokerHeartbeat { .. }
            | ControllerResponse::AllocateProducerIds { .. }
            | ControllerResponse::ListPartitionReassignments { .. } => {}
        }
    }
}
