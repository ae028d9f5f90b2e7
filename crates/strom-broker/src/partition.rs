//! The partition façade: the only way handlers touch a partition's data.
//!
//! A [`Partition`] is this broker's replica of one topic partition. It owns
//! the log handle and the high watermark, and wakes waiting fetches when the
//! high watermark moves (Kafka's delayed-fetch purgatory, keyed by partition).
//! Replication (issue 7) will live behind this same API: appends will wait for
//! the ISR, and the high watermark will follow the followers' fetches.
//!
//! Concurrency: shared as `Arc<Partition>`; the log serializes appends itself,
//! and appends run on the blocking pool so an fsync never stalls the async
//! workers. Reads are positional reads from the page cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use strom_protocol::batch::{BatchIter, Compression};
use strom_protocol::records::{decode_records, encode_batch_with, BatchOptions};
use strom_protocol::{LeaderEpoch, Offset};
use strom_storage::{FetchDataInfo, Log, LogAppendInfo, LogError, TopicPartition};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Which records a fetch may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Up to the high watermark.
    ReadUncommitted,
    /// Up to the last stable offset (below every open transaction), skipping
    /// aborted transactions with the Fetch response's `aborted_transactions`.
    ReadCommitted,
}

impl IsolationLevel {
    pub fn from_wire(v: i8) -> Self {
        if v == 1 {
            IsolationLevel::ReadCommitted
        } else {
            IsolationLevel::ReadUncommitted
        }
    }
}

/// Rewrites the producer batches of `records` whose codec is not `target`
/// (`None`: every batch already uses it, nothing is decoded or copied).
/// Header fields other than the codec are kept: base offset, leader epoch,
/// timestamp type, producer id/epoch, base sequence, transactional flag;
/// timestamps and offset deltas are kept per record. Control and empty
/// batches are copied verbatim. A batch that cannot be framed or decoded is
/// CORRUPT_MESSAGE, as the log would report it.
pub fn recompress(records: &[u8], target: Compression) -> Result<Option<Vec<u8>>, LogError> {
    let corrupt = |e: &dyn std::fmt::Display| LogError::CorruptRecord(e.to_string());
    let mut needs = false;
    for b in BatchIter::new(records) {
        let b = b.map_err(|e| corrupt(&e))?;
        if b.has_valid_compression() && b.compression() != target && !b.is_control() {
            needs = true;
            break;
        }
    }
    if !needs {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    for b in BatchIter::new(records) {
        let b = b.map_err(|e| corrupt(&e))?;
        if !b.has_valid_compression()
            || b.compression() == target
            || b.is_control()
            || b.record_count() == 0
        {
            out.extend_from_slice(b.bytes());
            continue;
        }
        b.verify_crc().map_err(|e| corrupt(&e))?;
        let recs = decode_records(&b).map_err(|e| corrupt(&e))?;
        out.extend_from_slice(&encode_batch_with(
            &recs,
            &BatchOptions {
                compression: target,
                base_offset: b.base_offset(),
                partition_leader_epoch: b.partition_leader_epoch(),
                timestamp_type: b.timestamp_type(),
                producer_id: b.producer_id(),
                producer_epoch: b.producer_epoch(),
                base_sequence: b.base_sequence(),
                transactional: b.is_transactional(),
                control: false,
            },
        ));
    }
    Ok(Some(out))
}

/// A partition's registration in the metadata image, as the replica
/// manager applies it (Kafka's `PartitionState` of LeaderAndIsr).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl From<&strom_metadata::image::PartitionRegistration> for PartitionState {
    fn from(r: &strom_metadata::image::PartitionRegistration) -> Self {
        PartitionState {
            leader: r.leader,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            replicas: r.replicas.clone(),
            isr: r.isr.clone(),
            adding_replicas: r.adding_replicas.clone(),
            removing_replicas: r.removing_replicas.clone(),
        }
    }
}

/// What the leader knows of one follower (Kafka's `Replica` state).
#[derive(Clone, Copy, Debug)]
pub struct FollowerState {
    /// The follower's log end offset: its last fetch offset (`-1` unknown).
    pub log_end_offset: Offset,
    /// The last time the follower was caught up to the leader's log end
    /// (Kafka's `lastCaughtUpTimeMs`): what ISR shrinking measures.
    pub last_caught_up_ms: i64,
    /// The leader's log end offset at the follower's previous fetch.
    last_fetch_leader_leo: Offset,
    last_fetch_ms: i64,
}

impl FollowerState {
    fn new(now_ms: i64) -> Self {
        FollowerState {
            log_end_offset: Offset(-1),
            // a new leader gives every follower a full lag period
            last_caught_up_ms: now_ms,
            last_fetch_leader_leo: Offset(-1),
            last_fetch_ms: now_ms,
        }
    }
}

/// The replication side of a partition: role, epochs, ISR, followers.
/// Guarded by one mutex that the single-node hot path never takes.
#[derive(Debug)]
pub struct ReplicaSet {
    /// This broker's id; `-1` until the first applied state.
    pub local_id: i32,
    /// The leader's id (`-1`: none).
    pub leader: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
    /// The committed ISR (empty until the first apply: the local node alone).
    pub isr: Vec<i32>,
    /// An AlterPartition in flight: the ISR asked for. Until it commits the
    /// high watermark uses the maximal ISR (committed ∪ asked), as Kafka does.
    pub pending_isr: Option<Vec<i32>>,
    /// Leader only: each follower's fetch state.
    pub followers: HashMap<i32, FollowerState>,
    /// First offset of the current leader epoch on this leader.
    pub epoch_start_offset: Offset,
    /// After a refused or failed AlterPartition, no new ISR change is asked
    /// before this time (ms), so a follower's every fetch does not retry it.
    pub isr_retry_at_ms: i64,
}

impl ReplicaSet {
    /// The ISR the high watermark waits for: committed ∪ pending.
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut out = self.isr.clone();
        if let Some(p) = &self.pending_isr {
            for r in p {
                if !out.contains(r) {
                    out.push(*r);
                }
            }
        }
        out
    }
}

/// This broker's replica of one partition: the leader (serving clients,
/// tracking followers) or a follower (fed by a replica fetcher).
pub struct Partition {
    pub topic_partition: TopicPartition,
    pub topic_id: Uuid,
    leader_epoch: AtomicI32,
    /// The hot path's role check (one atomic load).
    is_leader: AtomicBool,
    /// Leader whose maximal ISR is itself alone: an append moves the high
    /// watermark at once (the single-node path: no lock, no wait).
    solo: AtomicBool,
    /// Size of the committed ISR (`min.insync.replicas` checks).
    isr_size: AtomicUsize,
    replica_set: Mutex<ReplicaSet>,
    /// Leader appends (shared) against role changes (exclusive); lock order:
    /// this, then `replica_set`, then the log's own locks.
    leader_appends: std::sync::RwLock<()>,
    log: Arc<Log>,
    /// Serializes high-watermark moves so concurrent appends never move it back.
    hw_lock: Mutex<()>,
    /// Notified (all waiters) whenever the high watermark advances.
    changed: Notify,
}

/// Appends the producer batches of one request: every partition's write
/// first, then each one's flush policy (so with fsync-before-ack the
/// fsyncs come after all the writes) and high-watermark move. Returns one
/// result per append, in order. Blocks: blocking pool only.
pub fn append_all(
    appends: &[(Arc<Partition>, Bytes)],
    now_ms: i64,
) -> Vec<Result<LogAppendInfo, LogError>> {
    let mut results = write_all(appends, now_ms);
    for ((p, _), r) in appends.iter().zip(results.iter_mut()) {
        if let Ok(info) = r {
            if let Err(e) = p.complete_append(info) {
                *r = Err(e);
            }
        }
    }
    results
}

/// The first half of [`append_all`]: every partition's write, no flush and
/// no high-watermark move (see [`complete_all`]). Blocks.
pub fn write_all(
    appends: &[(Arc<Partition>, Bytes)],
    now_ms: i64,
) -> Vec<Result<LogAppendInfo, LogError>> {
    appends
        .iter()
        .map(|(p, records)| p.write_append(records, now_ms))
        .collect()
}

/// The second half of [`append_all`], for appends written by [`write_all`]:
/// the flush policy (with fsync-before-ack, one fsync per partition covers
/// every append written before it started: group commit) and the
/// high-watermark move. Returns the appends whose flush failed, by their
/// index in `written`. Blocks.
pub fn complete_all(written: &[(usize, Arc<Partition>, LogAppendInfo)]) -> Vec<(usize, LogError)> {
    written
        .iter()
        .filter_map(|(i, p, info)| p.complete_append(info).err().map(|e| (*i, e)))
        .collect()
}

/// Runs [`append_all`] on the blocking pool: one task per produce request,
/// however many partitions it carries. The appends come back with the
/// results (a caller may wait on their partitions).
#[allow(clippy::type_complexity)]
pub fn start_appends(
    appends: Vec<(Arc<Partition>, Bytes)>,
    now_ms: i64,
) -> JoinHandle<(
    Vec<(Arc<Partition>, Bytes)>,
    Vec<Result<LogAppendInfo, LogError>>,
)> {
    tokio::task::spawn_blocking(move || {
        let results = append_all(&appends, now_ms);
        (appends, results)
    })
}

/// An ISR change a leader asks the controller for (AlterPartition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// What [`Partition::apply_state`] made of this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// `new_epoch`: the leader epoch changed, so the follower must truncate
    /// (OffsetForLeaderEpoch) before fetching.
    Follower {
        leader: i32,
        new_epoch: bool,
    },
    /// Not in the assignment any more: stop fetching.
    NotReplica,
}

impl Partition {
    pub fn new(
        topic_partition: TopicPartition,
        topic_id: Uuid,
        leader_epoch: LeaderEpoch,
        log: Arc<Log>,
    ) -> Self {
        // The log's high watermark is what its checkpoint restored (the log
        // end without one); becoming a solo leader raises it to the end.
        Partition {
            topic_partition,
            topic_id,
            leader_epoch: AtomicI32::new(leader_epoch.0),
            is_leader: AtomicBool::new(true),
            solo: AtomicBool::new(true),
            isr_size: AtomicUsize::new(1),
            replica_set: Mutex::new(ReplicaSet {
                local_id: -1,
                leader: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
                isr: Vec::new(),
                pending_isr: None,
                followers: HashMap::new(),
                epoch_start_offset: log.log_end_offset(),
                isr_retry_at_ms: 0,
            }),
            leader_appends: std::sync::RwLock::new(()),
            log,
            hw_lock: Mutex::new(()),
            changed: Notify::new(),
        }
    }

    /// Starts appending producer batches as leader on the blocking pool. The
    /// returned task resolves once the batches are durable per the flush
    /// policy and the high watermark covers them.
    pub fn start_append(
        self: &Arc<Self>,
        records: impl Into<Bytes>,
        now_ms: i64,
    ) -> JoinHandle<Result<LogAppendInfo, LogError>> {
        let appends = vec![(self.clone(), records.into())];
        tokio::task::spawn_blocking(move || {
            append_all(&appends, now_ms)
                .pop()
                .expect("one result per append")
        })
    }

    /// Appends coordinator batches (transaction markers included) as leader;
    /// resolves like [`Partition::start_append`].
    pub fn start_append_control(
        self: &Arc<Self>,
        records: impl Into<Bytes>,
        now_ms: i64,
    ) -> JoinHandle<Result<LogAppendInfo, LogError>> {
        let (this, records) = (self.clone(), records.into());
        tokio::task::spawn_blocking(move || {
            let info = {
                let _leading = this.leader_append_lock();
                this.check_leader()?;
                this.log
                    .append_control(&records, this.leader_epoch(), now_ms)?
            };
            this.advance_high_watermark(info.last_offset.plus(1));
            Ok(info)
        })
    }

    /// Appends coordinator batches (transaction markers) and resolves once
    /// the ISR has them (Kafka writes markers with `acks=all`), or with the
    /// error of [`Partition::wait_for_high_watermark`] after `timeout`.
    pub async fn append_control_replicated(
        self: &Arc<Self>,
        records: impl Into<Bytes>,
        now_ms: i64,
        timeout: std::time::Duration,
    ) -> Result<LogAppendInfo, kafka_protocol::error::ResponseError> {
        use kafka_protocol::error::ResponseError;
        let deadline = tokio::time::Instant::now() + timeout;
        let epoch = self.leader_epoch();
        let info = match self.start_append_control(records, now_ms).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(crate::errors::log_error_code(&e)),
            Err(_) => return Err(ResponseError::UnknownServerError),
        };
        self.wait_for_high_watermark(info.last_offset.plus(1), epoch, deadline)
            .await
            .or_else(|e| match e {
                // markers are written whatever min.insync.replicas says
                ResponseError::NotEnoughReplicasAfterAppend => Ok(()),
                e => Err(e),
            })?;
        Ok(info)
    }

    /// Writes producer batches as leader, without the flush policy's fsync
    /// (see [`Partition::complete_append`]). Blocks: blocking pool only.
    fn write_append(&self, records: &[u8], now_ms: i64) -> Result<LogAppendInfo, LogError> {
        let _leading = self.leader_append_lock();
        self.check_leader()?;
        let log = &self.log;
        // `compression.type` other than `producer`: batches of another
        // codec are recompressed (the only produce-path decompression).
        match log.config().compression {
            Some(target) => match recompress(records, target)? {
                Some(converted) => {
                    log.append_as_leader_unflushed(&converted, self.leader_epoch(), now_ms)
                }
                None => log.append_as_leader_unflushed(records, self.leader_epoch(), now_ms),
            },
            None => log.append_as_leader_unflushed(records, self.leader_epoch(), now_ms),
        }
    }

    /// Makes a written append durable per the flush policy, then moves the
    /// high watermark over it (so consumers never see what an fsync-before-ack
    /// log has not synced). Blocks: blocking pool only.
    fn complete_append(&self, info: &LogAppendInfo) -> Result<(), LogError> {
        self.log.flush_appended(info)?;
        self.advance_high_watermark(info.last_offset.plus(1));
        Ok(())
    }

    /// After a local append: with the leader alone in the ISR the high
    /// watermark covers the append at once (one atomic load on the hot
    /// path); otherwise it moves when the ISR has the data too.
    fn advance_high_watermark(&self, hw: Offset) {
        if self.solo.load(Ordering::Acquire) {
            self.raise_high_watermark(hw);
        } else {
            let rs = self.replica_set();
            self.maybe_increment_high_watermark(&rs);
        }
        // followers long-poll on the log end offset, consumers on the HW
        self.changed.notify_waiters();
    }

    /// Held (shared) by a leader append from its leadership check to the
    /// end of its write; role changes take it exclusively.
    fn leader_append_lock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.leader_appends
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A follower refuses local appends (NOT_LEADER_OR_FOLLOWER at the edge).
    fn check_leader(&self) -> Result<(), LogError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(LogError::Closed(format!(
                "{} (this broker is not its leader)",
                self.topic_partition
            )))
        }
    }

    /// Moves the high watermark up to `hw` (never back).
    fn raise_high_watermark(&self, hw: Offset) -> bool {
        let _g = self.hw_lock.lock().unwrap();
        if hw > self.log.high_watermark() {
            self.log.update_high_watermark(hw);
            true
        } else {
            false
        }
    }

    fn replica_set(&self) -> MutexGuard<'_, ReplicaSet> {
        self.replica_set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leader: the high watermark becomes the smallest log end offset of
    /// the maximal ISR (Kafka's `maybeIncrementLeaderHW`), never lower than
    /// before. A follower that has not fetched since the election counts
    /// as unknown and holds it.
    fn maybe_increment_high_watermark(&self, rs: &ReplicaSet) -> bool {
        if !self.is_leader() {
            return false;
        }
        let mut hw = self.log.log_end_offset();
        for r in rs.maximal_isr() {
            if r == rs.local_id {
                continue;
            }
            match rs.followers.get(&r) {
                Some(f) => hw = hw.min(f.log_end_offset),
                None => return false,
            }
        }
        self.raise_high_watermark(hw)
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch.load(Ordering::Acquire))
    }

    /// Whether this replica is the leader (serves produce and consumer
    /// fetches).
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    /// The replication state (role, ISR, followers), locked.
    pub fn replication(&self) -> MutexGuard<'_, ReplicaSet> {
        self.replica_set()
    }

    /// Applies a registration from the metadata image. Returns what this
    /// replica became, or `None` when `state` is stale (an older leader or
    /// partition epoch than already applied) and was ignored.
    pub fn apply_state(&self, local_id: i32, state: &PartitionState, now_ms: i64) -> Option<Role> {
        // in-flight leader appends finish first (Kafka's leaderIsrUpdateLock):
        // none lands after this replica became a follower and truncated
        let _roles = self
            .leader_appends
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut rs = self.replica_set();
        let epoch = self.leader_epoch.load(Ordering::Acquire);
        let known = rs.partition_epoch >= 0;
        if known
            && (state.leader_epoch < epoch
                || (state.leader_epoch == epoch && state.partition_epoch < rs.partition_epoch))
        {
            return None;
        }
        let new_epoch = !known || state.leader_epoch != epoch;
        rs.local_id = local_id;
        rs.partition_epoch = state.partition_epoch;
        rs.replicas = state.replicas.clone();
        rs.adding_replicas = state.adding_replicas.clone();
        rs.removing_replicas = state.removing_replicas.clone();
        rs.isr = state.isr.clone();
        rs.pending_isr = None;
        rs.leader = state.leader;
        self.isr_size.store(state.isr.len(), Ordering::Release);
        let role = if state.leader == local_id {
            if new_epoch || !self.is_leader() {
                // Kafka's makeLeader: the epoch starts at the log end; every
                // follower's state is reset and must fetch again.
                let leo = self.log.log_end_offset();
                rs.epoch_start_offset = leo;
                rs.followers = state
                    .replicas
                    .iter()
                    .filter(|r| **r != local_id)
                    .map(|r| (*r, FollowerState::new(now_ms)))
                    .collect();
                self.log
                    .assign_leader_epoch(LeaderEpoch(state.leader_epoch), leo);
            } else {
                // same epoch (ISR or assignment change): keep what is known
                let replicas = state.replicas.clone();
                rs.followers.retain(|r, _| replicas.contains(r));
                for r in replicas.iter().filter(|r| **r != local_id) {
                    rs.followers
                        .entry(*r)
                        .or_insert_with(|| FollowerState::new(now_ms));
                }
            }
            self.leader_epoch
                .store(state.leader_epoch, Ordering::Release);
            self.is_leader.store(true, Ordering::Release);
            let solo = rs.maximal_isr().iter().all(|r| *r == local_id);
            self.solo.store(solo, Ordering::Release);
            self.maybe_increment_high_watermark(&rs);
            Role::Leader
        } else {
            self.is_leader.store(false, Ordering::Release);
            self.solo.store(false, Ordering::Release);
            self.leader_epoch
                .store(state.leader_epoch, Ordering::Release);
            rs.followers.clear();
            if state.replicas.contains(&local_id) {
                Role::Follower {
                    leader: state.leader,
                    new_epoch,
                }
            } else {
                Role::NotReplica
            }
        };
        drop(rs);
        // waiting fetches and acks=all produces re-check their conditions
        self.changed.notify_waiters();
        Some(role)
    }

    /// Leader: records a follower's fetch (Kafka's
    /// `updateFollowerFetchState`): its log end offset is the fetch offset,
    /// and it was caught up at this fetch if it reached the log end offset
    /// the leader had at its previous fetch. Moves the high watermark.
    /// `false` when `replica_id` is not a replica of this partition.
    #[must_use]
    pub fn update_follower_fetch_state(
        &self,
        replica_id: i32,
        fetch_offset: Offset,
        now_ms: i64,
    ) -> bool {
        let leo = self.log.log_end_offset();
        let mut rs = self.replica_set();
        let Some(f) = rs.followers.get_mut(&replica_id) else {
            return false;
        };
        if fetch_offset >= leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= f.last_fetch_leader_leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_leo = leo;
        f.last_fetch_ms = now_ms;
        f.log_end_offset = fetch_offset;
        if self.maybe_increment_high_watermark(&rs) {
            drop(rs);
            self.changed.notify_waiters();
        }
        true
    }

    /// Leader: reads for a follower's fetch, up to the log end offset (a
    /// follower copies what is not committed yet).
    pub fn read_for_follower(
        &self,
        fetch_offset: Offset,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<FetchDataInfo, LogError> {
        self.log.read(
            fetch_offset,
            max_bytes,
            self.log.log_end_offset(),
            min_one_batch,
        )
    }

    /// Leader, after a follower's fetch: the ISR to ask for when that
    /// follower has caught up and is not in it (Kafka's `maybeExpandIsr`:
    /// its log end offset reached the high watermark and the current
    /// epoch's start). Marks the request pending, so it is asked once.
    pub fn isr_expansion_for(&self, replica_id: i32, now_ms: i64) -> Option<IsrChange> {
        let mut rs = self.replica_set();
        if !self.is_leader()
            || rs.pending_isr.is_some()
            || rs.isr.contains(&replica_id)
            || now_ms < rs.isr_retry_at_ms
        {
            return None;
        }
        let f = rs.followers.get(&replica_id)?;
        if f.log_end_offset < self.log.high_watermark() || f.log_end_offset < rs.epoch_start_offset
        {
            return None;
        }
        let mut new_isr = rs.isr.clone();
        new_isr.push(replica_id);
        rs.pending_isr = Some(new_isr.clone());
        self.solo.store(false, Ordering::Release);
        Some(IsrChange {
            leader_epoch: self.leader_epoch.load(Ordering::Acquire),
            partition_epoch: rs.partition_epoch,
            new_isr,
        })
    }

    /// Leader: the ISR without the followers that have not caught up for
    /// `max_lag_ms` (Kafka's `maybeShrinkIsr`), marked pending; `None` when
    /// all keep up or a change is already in flight.
    pub fn isr_shrink(&self, now_ms: i64, max_lag_ms: i64) -> Option<IsrChange> {
        let mut rs = self.replica_set();
        if !self.is_leader() || rs.pending_isr.is_some() || now_ms < rs.isr_retry_at_ms {
            return None;
        }
        let leo = self.log.log_end_offset();
        let out: Vec<i32> = rs
            .isr
            .iter()
            .copied()
            .filter(|r| *r != rs.local_id)
            .filter(|r| match rs.followers.get(r) {
                Some(f) => f.log_end_offset != leo && now_ms - f.last_caught_up_ms > max_lag_ms,
                None => true,
            })
            .collect();
        if out.is_empty() {
            return None;
        }
        let new_isr: Vec<i32> = rs
            .isr
            .iter()
            .copied()
            .filter(|r| !out.contains(r))
            .collect();
        rs.pending_isr = Some(new_isr.clone());
        Some(IsrChange {
            leader_epoch: self.leader_epoch.load(Ordering::Acquire),
            partition_epoch: rs.partition_epoch,
            new_isr,
        })
    }

    /// Follower: appends batches fetched from the leader, if this replica is
    /// still its follower in `leader_epoch` (role changes wait for the
    /// append); then the high watermark becomes the leader's (capped by our
    /// log end) and the log start offset follows the leader's. `Ok(false)`: not following
    /// in that epoch any more, nothing appended.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        leader_epoch: i32,
        leader_high_watermark: Offset,
        leader_log_start: Offset,
        now_ms: i64,
    ) -> Result<bool, LogError> {
        let rs = self.replica_set();
        if self.is_leader() || self.leader_epoch.load(Ordering::Acquire) != leader_epoch {
            return Ok(false);
        }
        if !records.is_empty() {
            self.log.append_as_follower(records, now_ms)?;
        }
        // Set, not raised: a log opened after a restart starts with its HW
        // at its log end (no HW checkpoint), which may be above what was
        // committed; the leader's word replaces it.
        let hw = leader_high_watermark.min(self.log.log_end_offset());
        {
            let _g = self.hw_lock.lock().unwrap();
            self.log.update_high_watermark(hw);
        }
        if leader_log_start > self.log.log_start_offset() && leader_log_start <= hw {
            self.log.delete_records_before(leader_log_start, now_ms)?;
        }
        drop(rs);
        self.changed.notify_waiters();
        Ok(true)
    }

    /// Follower: truncates the log to `offset` (a divergent tail after a
    /// leader change, or below the leader's end), if still following in
    /// `leader_epoch`.
    pub fn truncate_as_follower(
        &self,
        offset: Offset,
        leader_epoch: i32,
    ) -> Result<bool, LogError> {
        let _rs = self.replica_set();
        if self.is_leader() || self.leader_epoch.load(Ordering::Acquire) != leader_epoch {
            return Ok(false);
        }
        if offset < self.log.log_end_offset() {
            tracing::info!(partition = %self.topic_partition, offset = offset.0, log_end = self.log.log_end_offset().0, "truncating the follower's log");
            self.log.truncate_to(offset)?;
        }
        Ok(true)
    }

    /// Follower whose log end fell below the leader's log start: empties
    /// the log and restarts it there.
    pub fn reset_as_follower(&self, offset: Offset, leader_epoch: i32) -> Result<bool, LogError> {
        let _rs = self.replica_set();
        if self.is_leader() || self.leader_epoch.load(Ordering::Acquire) != leader_epoch {
            return Ok(false);
        }
        tracing::info!(partition = %self.topic_partition, offset = offset.0, "follower restarts its log at the leader's log start");
        self.log.truncate_fully_and_start_at(offset)?;
        Ok(true)
    }

    /// Whether an `acks=all` append must wait for followers (the leader is
    /// not alone in its maximal ISR). One atomic load.
    pub fn waits_for_followers(&self) -> bool {
        !self.solo.load(Ordering::Acquire)
    }

    /// Kafka's DelayedProduce for one partition: resolves once the high
    /// watermark reaches `required` (then NOT_ENOUGH_REPLICAS_AFTER_APPEND
    /// if the ISR shrank below `min.insync.replicas` meanwhile), when this
    /// replica stops leading in `leader_epoch` (NOT_LEADER_OR_FOLLOWER), or
    /// at `deadline` (REQUEST_TIMED_OUT).
    pub async fn wait_for_high_watermark(
        &self,
        required: Offset,
        leader_epoch: LeaderEpoch,
        deadline: tokio::time::Instant,
    ) -> Result<(), kafka_protocol::error::ResponseError> {
        use kafka_protocol::error::ResponseError;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_leader() || self.leader_epoch() != leader_epoch {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            if self.high_watermark() >= required {
                return if self.insufficient_isr().is_some() {
                    Err(ResponseError::NotEnoughReplicasAfterAppend)
                } else {
                    Ok(())
                };
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ResponseError::RequestTimedOut);
            }
        }
    }

    /// Leader: an AlterPartition ended without a committed change; the next
    /// one may be asked from `retry_at_ms` on (the image meanwhile brings
    /// the current registration).
    pub fn isr_change_failed(&self, retry_at_ms: i64) {
        let mut rs = self.replica_set();
        rs.pending_isr = None;
        rs.isr_retry_at_ms = retry_at_ms;
        let solo = self.is_leader() && rs.maximal_isr().iter().all(|r| *r == rs.local_id);
        self.solo.store(solo, Ordering::Release);
    }

    /// Leader: adopts the ISR the controller committed for our AlterPartition.
    pub fn adopt_isr(&self, leader_epoch: i32, partition_epoch: i32, isr: Vec<i32>) {
        let mut rs = self.replica_set();
        if leader_epoch != self.leader_epoch.load(Ordering::Acquire)
            || partition_epoch < rs.partition_epoch
        {
            return;
        }
        rs.partition_epoch = partition_epoch;
        self.isr_size.store(isr.len(), Ordering::Release);
        rs.isr = isr;
        rs.pending_isr = None;
        let solo = self.is_leader() && rs.isr.iter().all(|r| *r == rs.local_id);
        self.solo.store(solo, Ordering::Release);
        self.maybe_increment_high_watermark(&rs);
        drop(rs);
        self.changed.notify_waiters();
    }

    /// Reads whole batches from `fetch_offset`, bounded by what `isolation`
    /// may see.
    pub fn read(
        &self,
        fetch_offset: Offset,
        max_bytes: usize,
        min_one_batch: bool,
        isolation: IsolationLevel,
    ) -> Result<FetchDataInfo, LogError> {
        let upper = match isolation {
            IsolationLevel::ReadUncommitted => self.high_watermark(),
            IsolationLevel::ReadCommitted => self.last_stable_offset(),
        };
        self.log.read(fetch_offset, max_bytes, upper, min_one_batch)
    }

    pub fn high_watermark(&self) -> Offset {
        self.log.high_watermark()
    }
    /// Whether an acknowledged append must wait for an fsync
    /// (`strom.flush.mode=always`), so an answer can be deferred.
    pub fn flushes_before_ack(&self) -> bool {
        self.log.config().flush_mode == strom_storage::FlushMode::Always
    }
    /// The high watermark, or the first offset of the oldest open
    /// transaction below it.
    pub fn last_stable_offset(&self) -> Offset {
        self.log.last_stable_offset()
    }
    /// Aborted transactions a read_committed fetch of `[from, upper)` must
    /// skip: `(producer id, first offset)`.
    pub fn aborted_transactions(&self, from: Offset, upper: Offset) -> Vec<(i64, Offset)> {
        self.log
            .aborted_transactions(from, upper)
            .into_iter()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect()
    }
    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }
    pub fn log_end_offset(&self) -> Offset {
        self.log.log_end_offset()
    }
    /// OffsetForLeaderEpoch: `(largest epoch ≤ requested, its end offset)`
    /// from the leader-epoch cache; `None` is UNDEFINED_EPOCH_OFFSET.
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.log.end_offset_for_epoch(requested)
    }
    /// Size of the committed in-sync replica set (`Isr`).
    pub fn isr_len(&self) -> usize {
        self.isr_size.load(Ordering::Acquire).max(1)
    }
    /// `Some((isr, min.insync.replicas))` when the ISR is too small for an
    /// `acks=all` append (NOT_ENOUGH_REPLICAS), checked before writing.
    pub fn insufficient_isr(&self) -> Option<(usize, u32)> {
        let isr = self.isr_len();
        let min = self.log.min_insync_replicas();
        (isr < min as usize).then_some((isr, min))
    }
    /// Notified whenever the high watermark moves; fetches wait on it.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use strom_protocol::batch::BatchView;
    use strom_protocol::records::Record;
    use strom_protocol::{ProducerEpoch, ProducerId, TimestampType};

    use super::*;

    fn batch(codec: Compression, base: i64, control: bool) -> Vec<u8> {
        let recs: Vec<Record> = (0..5)
            .map(|i| {
                Record::new(
                    Offset(base + i),
                    1_000 + i * 7,
                    Some(format!("k{i}").as_bytes()),
                    Some(format!("value-{i}-{}", "x".repeat(40)).as_bytes()),
                )
            })
            .collect();
        encode_batch_with(
            &recs,
            &BatchOptions {
                compression: codec,
                base_offset: Offset(base),
                timestamp_type: TimestampType::CreateTime,
                producer_id: ProducerId(42),
                producer_epoch: ProducerEpoch(3),
                base_sequence: 17,
                transactional: control,
                control,
                ..BatchOptions::default()
            },
        )
    }

    #[test]
    fn recompress_rewrites_only_other_codecs_and_keeps_headers() {
        // all batches already in the target codec: nothing is decoded or copied
        let zstd = [
            batch(Compression::Zstd, 0, false),
            batch(Compression::Zstd, 5, false),
        ]
        .concat();
        assert!(recompress(&zstd, Compression::Zstd).unwrap().is_none());

        let input = [
            batch(Compression::Gzip, 0, false),
            batch(Compression::Zstd, 5, false),
            batch(Compression::None, 10, true),
        ]
        .concat();
        let out = recompress(&input, Compression::Zstd).unwrap().unwrap();
        let before: Vec<BatchView> = BatchIter::new(&input).map(|b| b.unwrap()).collect();
        let after: Vec<BatchView> = BatchIter::new(&out).map(|b| b.unwrap()).collect();
        assert_eq!(after.len(), 3);
        for (a, b) in before.iter().zip(&after) {
            b.verify_crc().unwrap();
            assert_eq!(decode_records(a).unwrap(), decode_records(b).unwrap());
            assert_eq!(
                (a.base_offset(), a.last_offset_delta(), a.producer_id()),
                (b.base_offset(), b.last_offset_delta(), b.producer_id())
            );
            assert_eq!(
                (a.producer_epoch(), a.base_sequence(), a.is_transactional()),
                (b.producer_epoch(), b.base_sequence(), b.is_transactional())
            );
            assert_eq!(
                (a.base_timestamp(), a.max_timestamp(), a.timestamp_type()),
                (b.base_timestamp(), b.max_timestamp(), b.timestamp_type())
            );
        }
        assert_eq!(after[0].compression(), Compression::Zstd);
        // the matching batch and the control batch are copied verbatim
        assert_eq!(after[1].bytes(), before[1].bytes());
        assert_eq!(after[2].bytes(), before[2].bytes());

        // a corrupt batch is CORRUPT_MESSAGE, not silently passed on
        let mut bad = batch(Compression::Gzip, 0, false);
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        assert!(matches!(
            recompress(&bad, Compression::Zstd),
            Err(LogError::CorruptRecord(_))
        ));
    }
}
