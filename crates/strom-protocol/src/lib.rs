//! Strom's view of the Kafka wire protocol.
//!
//! Message structs come from the `kafka-protocol` crate (generated from Kafka's
//! JSON schemas); this crate adds what the broker needs around them: the
//! newtypes for offsets and ids, a zero-copy view of record-batch headers,
//! request framing and the error-code table.

pub mod batch;
pub mod records;
pub mod types;

pub use kafka_protocol;
pub use types::*;
