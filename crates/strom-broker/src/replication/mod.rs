//! Partition data replication, the Kafka way: followers fetch from their
//! leader ([`fetcher`], Kafka's ReplicaFetcherThread/AbstractFetcherManager,
//! after truncating with OffsetForLeaderEpoch), and leaders shrink and
//! expand the ISR through the controller ([`isr`], Kafka's
//! `maybeShrinkIsr`/`maybeExpandIsr` with AlterPartition). The leader side
//! of follower fetches (follower state, high watermark) lives in
//! [`crate::partition::Partition`].

pub mod client;
pub mod fetcher;
pub mod isr;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::Broker;
use crate::partition::{Partition, Role};

/// Kafka's replication settings (names and defaults as Kafka's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower not caught up for this long
    /// leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: a follower fetch's long poll.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.min.bytes`.
    pub replica_fetch_min_bytes: i32,
    /// `replica.fetch.max.bytes`: per partition.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per fetch.
    pub replica_fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: pause after a fetch error.
    pub replica_fetch_backoff_ms: u64,
    /// `num.replica.fetchers` (one fetcher per leader broker is used).
    pub num_replica_fetchers: u32,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_min_bytes: 1,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_response_max_bytes: 10_485_760,
            replica_fetch_backoff_ms: 1_000,
            num_replica_fetchers: 1,
        }
    }
}

/// The config keys [`ReplicationConfig::from_raw`] reads.
pub const REPLICATION_KEYS: &[&str] = &[
    "replica.lag.time.max.ms",
    "replica.fetch.wait.max.ms",
    "replica.fetch.min.bytes",
    "replica.fetch.max.bytes",
    "replica.fetch.response.max.bytes",
    "replica.fetch.backoff.ms",
    "num.replica.fetchers",
];

impl ReplicationConfig {
    /// Reads the `replica.*` keys; `Err((key, value, reason))` on a bad one.
    pub fn from_raw(raw: &BTreeMap<String, String>) -> Result<Self, (String, String, String)> {
        let mut c = ReplicationConfig::default();
        fn num(
            raw: &BTreeMap<String, String>,
            key: &str,
            min: i64,
        ) -> Result<Option<i64>, (String, String, String)> {
            let Some(v) = raw.get(key) else {
                return Ok(None);
            };
            match v.trim().parse::<i64>() {
                Ok(n) if n >= min && n <= i32::MAX as i64 => Ok(Some(n)),
                Ok(_) => Err((
                    key.into(),
                    v.clone(),
                    format!("must be between {min} and {}", i32::MAX),
                )),
                Err(_) => Err((key.into(), v.clone(), "not a number".into())),
            }
        }
        if let Some(n) = num(raw, "replica.lag.time.max.ms", 1)? {
            c.replica_lag_time_max_ms = n as u64;
        }
        if let Some(n) = num(raw, "replica.fetch.wait.max.ms", 0)? {
            c.replica_fetch_wait_max_ms = n as u64;
        }
        if let Some(n) = num(raw, "replica.fetch.min.bytes", 1)? {
            c.replica_fetch_min_bytes = n as i32;
        }
        if let Some(n) = num(raw, "replica.fetch.max.bytes", 0)? {
            c.replica_fetch_max_bytes = n as i32;
        }
        if let Some(n) = num(raw, "replica.fetch.response.max.bytes", 0)? {
            c.replica_fetch_response_max_bytes = n as i32;
        }
        if let Some(n) = num(raw, "replica.fetch.backoff.ms", 0)? {
            c.replica_fetch_backoff_ms = n as u64;
        }
        if let Some(n) = num(raw, "num.replica.fetchers", 1)? {
            c.num_replica_fetchers = n as u32;
        }
        // Kafka: the fetch wait must stay below the lag limit, or every
        // idle follower would drop out of the ISR
        if c.replica_fetch_wait_max_ms > c.replica_lag_time_max_ms {
            return Err((
                "replica.fetch.wait.max.ms".into(),
                c.replica_fetch_wait_max_ms.to_string(),
                "should always be less than or equal to replica.lag.time.max.ms".into(),
            ));
        }
        Ok(c)
    }
}

/// Acts on a role change applied by
/// [`crate::replica_manager::ReplicaManager::apply_partition_states`]: a
/// leader stops fetching (and starts ISR maintenance), a follower is handed
/// to the fetcher of its leader (truncating first on a new epoch), a
/// non-replica stops fetching.
pub fn on_role_change(broker: &Arc<Broker>, partition: &Arc<Partition>, role: Role) {
    let fetchers = &broker.replicas.fetchers;
    match role {
        Role::Leader => {
            fetchers.remove(&partition.topic_partition);
            isr::ensure_started(broker);
        }
        Role::Follower { leader, new_epoch } if leader >= 0 => {
            fetchers.add(broker, partition, leader, new_epoch);
        }
        Role::Follower { .. } | Role::NotReplica => {
            fetchers.remove(&partition.topic_partition);
        }
    }
}

#[cfg(test)]
mod tests;
