//! Producer ids and the transaction coordinator (Kafka's
//! `TransactionCoordinator`), whose state lives in the compacted internal
//! topic `__transaction_state`.
//!
//! - [`producer_ids`]: producer ids in persisted blocks, never reused.

pub mod coordinator;
pub mod producer_ids;

pub use coordinator::TransactionCoordinator;

/// The internal topic holding transaction state.
pub const TRANSACTION_STATE: &str = "__transaction_state";

/// Broker settings of producers and transactions (Kafka's names in comments).
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transaction.state.log.num.partitions`
    pub state_log_num_partitions: i32,
    /// `transaction.state.log.segment.bytes`
    pub state_log_segment_bytes: i64,
    /// `transactional.id.expiration.ms`
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_timed_out_interval_ms: i64,
    /// `producer.id.expiration.ms`
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`
    pub producer_id_expiration_check_interval_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            state_log_num_partitions: 50,
            state_log_segment_bytes: 104_857_600,
            transactional_id_expiration_ms: 604_800_000,
            abort_timed_out_interval_ms: 10_000,
            producer_id_expiration_ms: 86_400_000,
            producer_id_expiration_check_interval_ms: 600_000,
        }
    }
}
