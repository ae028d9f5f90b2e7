//! The one mapping from Strom's typed errors to Kafka error codes. Every
//! variant is listed (no catch-all arm), so a new error must pick its code.

use kafka_protocol::error::ResponseError;
use strom_storage::{LogError, ProducerStateError};

use crate::broker::TopicError;
use crate::group::CoordinatorError;
use crate::metadata::MetadataError;

/// Kafka's error code for a log error on the produce/fetch path.
pub fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::CorruptRecord(_) => ResponseError::CorruptMessage,
        LogError::InvalidRecord(_) => ResponseError::InvalidRecord,
        LogError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::RecordBatchTooLarge { .. } => ResponseError::RecordListTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Closed(_) => ResponseError::NotLeaderOrFollower,
        LogError::LogDir(_) | LogError::Io(_) => ResponseError::KafkaStorageError,
        LogError::Producer(p) => producer_error_code(p),
    }
}

/// Kafka's error code for a batch refused by the producer state.
pub fn producer_error_code(e: &ProducerStateError) -> ResponseError {
    match e {
        ProducerStateError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        ProducerStateError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        ProducerStateError::ProducerFenced(_) => ResponseError::ProducerFenced,
        ProducerStateError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        ProducerStateError::CoordinatorFenced(_) => ResponseError::TransactionCoordinatorFenced,
    }
}

/// Kafka's error code for a failed topic create/delete.
pub fn topic_error_code(e: &TopicError) -> ResponseError {
    match e {
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::InvalidRequest(_) => ResponseError::InvalidRequest,
        TopicError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        TopicError::Storage(e) => log_error_code(e),
        TopicError::Metadata(e) => metadata_error_code(e),
        TopicError::Rejected(e) => {
            ResponseError::try_from_code(e.error_code).unwrap_or(ResponseError::UnknownServerError)
        }
    }
}

/// Kafka's error code when the metadata image cannot be changed.
pub fn metadata_error_code(e: &MetadataError) -> ResponseError {
    match e {
        MetadataError::Controller(e) => {
            ResponseError::try_from_code(e.error_code).unwrap_or(ResponseError::UnknownServerError)
        }
        MetadataError::InconsistentClusterId { .. } => ResponseError::InconsistentClusterId,
        MetadataError::Io { .. }
        | MetadataError::Corrupt { .. }
        | MetadataError::NodeIdMismatch { .. }
        | MetadataError::Quorum(_) => ResponseError::KafkaStorageError,
        MetadataError::NotController { .. } => ResponseError::NotController,
        MetadataError::Timeout(_) => ResponseError::RequestTimedOut,
    }
}

/// Kafka's error code when the group coordinator cannot serve a request.
pub fn coordinator_error_code(e: &CoordinatorError) -> ResponseError {
    match e {
        CoordinatorError::NotAvailable | CoordinatorError::Topic(_) => {
            ResponseError::CoordinatorNotAvailable
        }
        CoordinatorError::NotCoordinator => ResponseError::NotCoordinator,
        // The partition is gone or closing: the client looks up the
        // coordinator again.
        CoordinatorError::Log(LogError::Closed(_)) => ResponseError::NotCoordinator,
        CoordinatorError::Log(_) => ResponseError::CoordinatorNotAvailable,
    }
}
