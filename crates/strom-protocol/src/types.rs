//! Newtypes for the numbers Kafka passes around, so an offset can never be
//! handed where an epoch or a node id is expected.

use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

newtype!(
    /// A position in a partition's log (Kafka's `offset`, an `i64`).
    Offset(i64)
);
newtype!(
    /// The epoch of a partition's leadership; bumps on every leader change.
    LeaderEpoch(i32)
);
newtype!(
    /// Identity of an idempotent/transactional producer.
    ProducerId(i64)
);
newtype!(
    /// Epoch of a producer id; bumps fence older incarnations.
    ProducerEpoch(i16)
);
newtype!(
    /// A broker's or controller's `node.id`.
    NodeId(i32)
);

impl Offset {
    /// Kafka's "no offset" sentinel.
    pub const NONE: Offset = Offset(-1);

    /// The offset `n` past this one.
    pub fn plus(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }
}

impl LeaderEpoch {
    /// Kafka's "no epoch known" sentinel (`RecordBatch.NO_PARTITION_LEADER_EPOCH`).
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);
}

impl ProducerId {
    /// A batch written by a producer with no id (not idempotent).
    pub const NONE: ProducerId = ProducerId(-1);
}

/// Where a record's timestamp comes from (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamp is kept.
    #[default]
    CreateTime,
    /// The broker stamps the batch with its clock when it appends it.
    LogAppendTime,
}

impl TimestampType {
    /// Parses Kafka's config value (`CreateTime` or `LogAppendTime`).
    pub fn from_config(s: &str) -> Option<Self> {
        match s {
            "CreateTime" => Some(Self::CreateTime),
            "LogAppendTime" => Some(Self::LogAppendTime),
            _ => None,
        }
    }
}
