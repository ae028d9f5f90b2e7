//! The transaction coordinator (Kafka's `TransactionCoordinator`): one
//! state machine per `__transaction_state` partition, changed only by
//! replaying its records. An operation validates against the state, builds
//! the new [`TxnMetadata`], appends it with the group coordinator's shared
//! append (`group::runtime::append_kv`: append, wait for the high
//! watermark), replays it, then answers. Loading is replay
//! (`group::runtime::replay_kv`). Operations of one partition run one at a
//! time (a per-partition async mutex plays the runtime task's queue).
//!
//! ```text
//!  Empty ──AddPartitions──> Ongoing ──EndTxn(commit)──> PrepareCommit ──markers──> CompleteCommit
//!    ^                        │  └────EndTxn(abort) / timeout / fence──> PrepareAbort ──markers──> CompleteAbort
//!    └──── InitProducerId (epoch + 1) <──────────── Complete* ─────────────────────────────────┘
//! ```
//! A Prepare* state found at load (crash between the two records) is
//! completed by writing its markers again (markers are idempotent).
//!
//! Offsets sent with TxnOffsetCommit are written by the group's shard to
//! `__consumer_offsets` as a transactional batch of the producer; the
//! transaction's marker goes to that partition too (it is among the
//! transaction's partitions since AddOffsetsToTxn), and the shard's replay
//! materializes or drops them (`group::txn_offsets`), at load as well.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use strom_protocol::records::{encode_batch_with, BatchOptions, Record};
use strom_protocol::{Offset, ProducerEpoch, ProducerId};
use strom_storage::producer_state::{encode_marker, ControlType, Marker};
use tracing::{info, warn};

use super::{TxnConfig, TRANSACTION_STATE};
use crate::broker::{now_ms, Broker, NewTopic, TopicError};
use crate::group::hosting::{led_partitions, sync_shards};
use crate::group::records::{CoordinatorRecord, OffsetCommitValue};
use crate::group::runtime::{append_kv, replay_kv, TxnWrite};
use crate::group::{partition_for, CONSUMER_OFFSETS};
use crate::partition::Partition;

/// Kafka's `TransactionState`, with its on-disk ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    fn from_i8(v: i8) -> Option<TxnState> {
        use TxnState::*;
        Some(match v {
            0 => Empty,
            1 => Ongoing,
            2 => PrepareCommit,
            3 => PrepareAbort,
            4 => CompleteCommit,
            5 => CompleteAbort,
            6 => Dead,
            7 => PrepareEpochFence,
            _ => return None,
        })
    }
    /// Kafka's name (DescribeTransactions / ListTransactions).
    pub fn name(self) -> &'static str {
        use TxnState::*;
        match self {
            Empty => "Empty",
            Ongoing => "Ongoing",
            PrepareCommit => "PrepareCommit",
            PrepareAbort => "PrepareAbort",
            CompleteCommit => "CompleteCommit",
            CompleteAbort => "CompleteAbort",
            Dead => "Dead",
            PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// One transactional id's state (Kafka's `TransactionMetadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

/// `__transaction_state` key (version 0): the transactional id.
fn encode_key(tid: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + tid.len());
    b.put_i16(0);
    b.put_i16(tid.len() as i16);
    b.put_slice(tid.as_bytes());
    b.freeze()
}

/// `__transaction_state` value (version 0, Kafka's `TransactionLogValue`).
fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state as i8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    b.put_i32(by_topic.len() as i32);
    for (t, ps) in by_topic {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

struct Cur<'a>(&'a [u8]);
impl Cur<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.i16()?;
        String::from_utf8(self.take(n.max(0) as usize)?.to_vec()).ok()
    }
}

fn decode_key(k: &[u8]) -> Option<String> {
    let mut c = Cur(k);
    if c.i16()? != 0 {
        return None;
    }
    c.string()
}

fn decode_value(v: &[u8]) -> Option<TxnMetadata> {
    let mut c = Cur(v);
    let version = c.i16()?;
    if version != 0 {
        return None;
    }
    let producer_id = c.i64()?;
    let producer_epoch = c.i16()?;
    let timeout_ms = c.i32()?;
    let state = TxnState::from_i8(c.i8()?)?;
    let mut partitions = BTreeSet::new();
    let n = c.i32()?;
    for _ in 0..n.max(0) {
        let t = c.string()?;
        let k = c.i32()?;
        for _ in 0..k.max(0) {
            partitions.insert((t.clone(), c.i32()?));
        }
    }
    Some(TxnMetadata {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: c.i64()?,
        start_ms: c.i64()?,
    })
}

struct ShardState {
    txns: HashMap<String, TxnMetadata>,
}

struct Shard {
    partition: Arc<Partition>,
    state: tokio::sync::Mutex<ShardState>,
}

/// The transaction coordinator of this broker.
///
/// Owner: [`crate::Broker`]. Concurrency: shared; shards are created once
/// (under `init`), each serializes its own operations.
pub struct TransactionCoordinator {
    config: TxnConfig,
    /// Loaded shards by partition: those this broker leads.
    shards: RwLock<BTreeMap<i32, Arc<Shard>>>,
    init: tokio::sync::Mutex<()>,
    /// Partitions of `__transaction_state` (0 while it does not exist).
    partition_count: std::sync::atomic::AtomicI32,
}

type Res<T> = Result<T, E>;

impl TransactionCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        TransactionCoordinator {
            config,
            shards: RwLock::new(BTreeMap::new()),
            init: tokio::sync::Mutex::new(()),
            partition_count: std::sync::atomic::AtomicI32::new(0),
        }
    }

    /// At broker start: loads the `__transaction_state` partitions this
    /// broker leads, finishing transactions caught between their prepare
    /// and complete records.
    pub async fn startup(&self, broker: &Broker) {
        self.on_leadership(broker).await;
    }

    /// Makes sure `__transaction_state` exists (creating it);
    /// FindCoordinator calls it.
    pub async fn ensure_started(&self, broker: &Broker) -> Res<()> {
        if broker.metadata.image().topic(TRANSACTION_STATE).is_some() {
            return Ok(());
        }
        let mut configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.state_log_segment_bytes.to_string(),
            ),
        ]);
        let rf = broker.internal_replication_factor("transaction.state.log.replication.factor");
        // `transaction.state.log.min.isr` (2), capped like the replication factor.
        let min_isr = broker
            .config
            .raw
            .get("transaction.state.log.min.isr")
            .and_then(|v| v.trim().parse::<i16>().ok())
            .unwrap_or(2)
            .clamp(1, rf.max(1));
        configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
        let new = NewTopic {
            name: TRANSACTION_STATE.to_string(),
            num_partitions: self.config.state_log_num_partitions,
            replication_factor: rf,
            assignments: BTreeMap::new(),
            configs,
        };
        match broker.create_topic(new, false).await {
            Ok(_) => info!("created {TRANSACTION_STATE}"),
            Err(TopicError::AlreadyExists(_)) => {}
            Err(e) => {
                warn!(error = %e, "cannot create {TRANSACTION_STATE}");
                return Err(E::CoordinatorNotAvailable);
            }
        }
        self.on_leadership(broker).await;
        Ok(())
    }

    /// After a metadata change (Kafka's `onElection`/`onResignation`):
    /// loads the partitions this broker now leads by replaying them and
    /// completes their interrupted transactions; drops those it no longer
    /// leads.
    pub async fn on_leadership(&self, broker: &Broker) {
        let _guard = self.init.lock().await;
        let image = broker.metadata.image();
        let Some(t) = image.topic(TRANSACTION_STATE) else {
            self.shards.write().unwrap().clear();
            self.partition_count
                .store(0, std::sync::atomic::Ordering::Release);
            return;
        };
        self.partition_count
            .store(t.partitions, std::sync::atomic::Ordering::Release);
        let led = led_partitions(broker, TRANSACTION_STATE, t);
        let load_shard = |p, part: Arc<Partition>| async move {
            let p2 = part.clone();
            let txns = match tokio::task::spawn_blocking(move || load(&p2)).await {
                Ok(Ok(txns)) => txns,
                other => {
                    warn!(partition = p, result = ?other.map(|r| r.map(|_| ())), "cannot load {TRANSACTION_STATE} partition");
                    return None;
                }
            };
            info!(
                partition = p,
                "transaction coordinator: loaded {TRANSACTION_STATE} partition"
            );
            Some(Arc::new(Shard {
                partition: part,
                state: tokio::sync::Mutex::new(ShardState { txns }),
            }))
        };
        let loaded = sync_shards(
            &self.shards,
            led,
            "transaction coordinator",
            TRANSACTION_STATE,
            load_shard,
        )
        .await;
        // finish what a crash (or the previous coordinator) interrupted
        for shard in loaded {
            let mut st = shard.state.lock().await;
            let stuck: Vec<String> = st
                .txns
                .iter()
                .filter(|(_, m)| {
                    matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for tid in stuck {
                let commit = st.txns[&tid].state == TxnState::PrepareCommit;
                if let Err(e) = complete(broker, &shard, &mut st, &tid, commit).await {
                    warn!(transactional_id = tid, error = ?e, "cannot complete transaction after restart");
                }
            }
        }
    }

    /// The `__transaction_state` partition of `tid`, if the topic exists.
    pub fn partition_of(&self, broker: &Broker, tid: &str) -> Option<i32> {
        let n = broker.metadata.image().topic(TRANSACTION_STATE)?.partitions;
        Some(partition_for(tid, n))
    }

    fn loaded(&self) -> Vec<Arc<Shard>> {
        self.shards.read().unwrap().values().cloned().collect()
    }

    /// The loaded shard of `tid`; NOT_COORDINATOR when another broker leads
    /// its partition.
    async fn shard_for(&self, broker: &Broker, tid: &str) -> Res<Arc<Shard>> {
        self.ensure_started(broker).await?;
        let p = self
            .partition_of(broker, tid)
            .ok_or(E::CoordinatorNotAvailable)?;
        if let Some(s) = self.shards.read().unwrap().get(&p) {
            return Ok(s.clone());
        }
        // Leadership may have arrived before its callback ran.
        self.on_leadership(broker).await;
        self.shards
            .read()
            .unwrap()
            .get(&p)
            .cloned()
            .ok_or(E::NotCoordinator)
    }

    /// InitProducerId with a transactional id: a new producer id, or the
    /// known one with its epoch bumped (fencing older incarnations and
    /// aborting their open transaction).
    pub async fn init_producer_id(
        &self,
        broker: &Broker,
        tid: &str,
        timeout_ms: i32,
        expected_pid: i64,
        expected_epoch: i16,
    ) -> Res<(i64, i16)> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(E::InvalidTransactionTimeout);
        }
        let shard = self.shard_for(broker, tid).await?;
        let mut st = shard.state.lock().await;
        let now = now_ms();
        // No block available yet: Kafka's COORDINATOR_LOAD_IN_PROGRESS (retried).
        let new_pid = || async {
            broker
                .producer_ids
                .generate(broker)
                .await
                .map(|p| p.0)
                .map_err(|_| E::CoordinatorLoadInProgress)
        };
        let mut meta = match st.txns.get(tid).cloned() {
            None => TxnMetadata {
                producer_id: new_pid().await?,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now,
                start_ms: -1,
            },
            Some(m) => {
                if expected_pid != -1
                    && (expected_pid != m.producer_id || expected_epoch != m.producer_epoch)
                {
                    // KIP-360: only the current incarnation may bump its epoch
                    return Err(E::ProducerFenced);
                }
                let mut m = m;
                if m.state == TxnState::Ongoing {
                    // fence the old producer and abort its transaction
                    m.producer_epoch = bump(m.producer_epoch);
                    m.state = TxnState::PrepareAbort;
                    m.last_update_ms = now;
                    write(&shard, &mut st, tid, m.clone()).await?;
                    complete(broker, &shard, &mut st, tid, false).await?;
                    m = st.txns[tid].clone();
                }
                if m.producer_epoch >= i16::MAX - 1 {
                    m.producer_id = new_pid().await?;
                    m.producer_epoch = 0;
                } else {
                    m.producer_epoch += 1;
                }
                m
            }
        };
        meta.timeout_ms = timeout_ms;
        meta.state = TxnState::Empty;
        meta.partitions.clear();
        meta.last_update_ms = now;
        meta.start_ms = -1;
        write(&shard, &mut st, tid, meta.clone()).await?;
        Ok((meta.producer_id, meta.producer_epoch))
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets
    /// partition). With `verify_only` (KIP-890 part 1) nothing changes: the
    /// answer says whether the partitions are in the transaction. Returns
    /// one code per partition, or a whole-transaction error.
    pub async fn add_partitions(
        &self,
        broker: &Broker,
        tid: &str,
        pid: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        verify_only: bool,
    ) -> Res<Vec<i16>> {
        let shard = self.shard_for(broker, tid).await?;
        let mut st = shard.state.lock().await;
        let m = check_producer(&st, tid, pid, epoch)?;
        if verify_only {
            return Ok(partitions
                .iter()
                .map(|p| {
                    if m.state == TxnState::Ongoing && m.partitions.contains(p) {
                        0
                    } else {
                        E::InvalidTxnState.code()
                    }
                })
                .collect());
        }
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(E::ConcurrentTransactions)
            }
            TxnState::Dead => return Err(E::InvalidTxnState),
            _ => {}
        }
        let image = broker.metadata.image();
        let unknown: Vec<bool> = partitions
            .iter()
            .map(|(t, p)| {
                !image
                    .topic(t)
                    .is_some_and(|meta| (0..meta.partitions).contains(p))
            })
            .collect();
        if unknown.iter().any(|u| *u) {
            return Ok(unknown
                .iter()
                .map(|u| {
                    if *u {
                        E::UnknownTopicOrPartition.code()
                    } else {
                        E::OperationNotAttempted.code()
                    }
                })
                .collect());
        }
        let mut m = m.clone();
        let now = now_ms();
        if m.state != TxnState::Ongoing {
            m.start_ms = now;
            m.partitions.clear();
        }
        let before = m.partitions.len();
        m.partitions.extend(partitions.iter().cloned());
        if m.state != TxnState::Ongoing || m.partitions.len() != before {
            m.state = TxnState::Ongoing;
            m.last_update_ms = now;
            write(&shard, &mut st, tid, m).await?;
        }
        Ok(vec![0; partitions.len()])
    }

    /// Whether `(topic, partition)` is in the open transaction of `pid`
    /// at `epoch` (KIP-890 part 1 produce verification). Idempotent-only
    /// producers have no transactional id: the produce path asks with the
    /// producer id, so the lookup scans the shards' open transactions.
    pub async fn verify_partition(
        &self,
        pid: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Res<()> {
        let loaded = self.loaded();
        for shard in loaded.iter() {
            let st = shard.state.lock().await;
            if let Some(m) = st.txns.values().find(|m| m.producer_id == pid) {
                if epoch < m.producer_epoch {
                    return Err(E::InvalidProducerEpoch);
                }
                let key = (topic.to_string(), partition);
                return if m.state == TxnState::Ongoing && m.partitions.contains(&key) {
                    Ok(())
                } else {
                    Err(E::InvalidTxnState)
                };
            }
        }
        // The producer's coordinator may be another broker: Kafka's leader
        // asks it (AddPartitionsToTxn, verify only), which is not built;
        // until then only transactions coordinated here are verified.
        let partitions = self
            .partition_count
            .load(std::sync::atomic::Ordering::Acquire);
        if (loaded.len() as i32) < partitions {
            return Ok(());
        }
        Err(E::InvalidTxnState)
    }

    /// TxnOffsetCommit: validates the producer and keeps the offsets until
    /// the transaction ends.
    pub async fn stage_offsets(
        &self,
        broker: &Broker,
        tid: &str,
        pid: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<((String, i32), OffsetCommitValue)>,
    ) -> Res<()> {
        // TxnOffsetCommit goes to the group coordinator. When this broker
        // also coordinates the transaction, the producer and the
        // transaction's partitions are checked here; otherwise (another
        // broker coordinates it) the producer epoch is checked by the
        // `__consumer_offsets` partition's producer state, as in Kafka.
        let shard = match self.shard_for(broker, tid).await {
            Ok(shard) => Some(shard),
            Err(E::NotCoordinator) => None,
            Err(e) => return Err(e),
        };
        let _checked = match &shard {
            Some(shard) => {
                let st = shard.state.lock().await;
                let m = check_producer(&st, tid, pid, epoch)?;
                let groups = broker.groups.config().offsets_topic_num_partitions;
                let key = (CONSUMER_OFFSETS.to_string(), partition_for(group, groups));
                if m.state != TxnState::Ongoing || !m.partitions.contains(&key) {
                    // AddOffsetsToTxn must come first
                    return Err(E::InvalidTxnState);
                }
                Some(st)
            }
            None => None,
        };
        // Kafka's way: a transactional batch of the producer in the group's
        // `__consumer_offsets` partition, pending until the marker there.
        let records = offsets
            .into_iter()
            .map(
                |((topic, partition), value)| CoordinatorRecord::OffsetCommit {
                    group: group.to_string(),
                    topic,
                    partition,
                    value: Some(value),
                },
            )
            .collect();
        let gshard = broker
            .groups
            .shard_for(broker, group)
            .await
            .map_err(|e| e.code())?;
        gshard
            .txn(TxnWrite::Offsets {
                producer_id: pid,
                producer_epoch: epoch,
                records,
            })
            .await
            .map_err(|e| e.code())
    }

    /// EndTxn: commit or abort the open transaction, writing markers to
    /// every partition in it.
    pub async fn end_txn(
        &self,
        broker: &Broker,
        tid: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
    ) -> Res<()> {
        let shard = self.shard_for(broker, tid).await?;
        let mut st = shard.state.lock().await;
        let m = check_producer(&st, tid, pid, epoch)?.clone();
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {}
            // a retry of an EndTxn that completed
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(E::ConcurrentTransactions)
            }
            // never begun, or ended the other way: no marker
            _ => return Err(E::InvalidTxnState),
        }
        let mut m = m;
        m.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        m.last_update_ms = now_ms();
        write(&shard, &mut st, tid, m).await?;
        complete(broker, &shard, &mut st, tid, commit).await
    }

    /// Aborts transactions open for longer than their timeout, bumping the
    /// epoch so the producer is fenced (Kafka's
    /// `abortTimedOutTransactions`). Returns how many.
    pub async fn abort_timed_out(&self, broker: &Broker) -> usize {
        let now = now_ms();
        let mut n = 0;
        for shard in self.loaded().iter() {
            let mut st = shard.state.lock().await;
            let expired: Vec<String> = st
                .txns
                .iter()
                .filter(|(_, m)| {
                    m.state == TxnState::Ongoing
                        && m.start_ms >= 0
                        && now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for tid in expired {
                let mut m = st.txns[&tid].clone();
                info!(
                    transactional_id = tid,
                    producer_id = m.producer_id,
                    "aborting timed-out transaction"
                );
                m.producer_epoch = bump(m.producer_epoch);
                m.state = TxnState::PrepareAbort;
                m.last_update_ms = now;
                let res = match write(shard, &mut st, &tid, m).await {
                    Ok(()) => complete(broker, shard, &mut st, &tid, false).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(()) => n += 1,
                    Err(e) => {
                        warn!(transactional_id = tid, error = ?e, "cannot abort timed-out transaction")
                    }
                }
            }
        }
        n
    }

    /// Every transaction (DescribeTransactions / ListTransactions), with
    /// `None` for partitions not loaded. `Err` when the topic does not exist.
    pub async fn snapshot(&self, broker: &Broker) -> Vec<(String, TxnMetadata)> {
        let _ = broker;
        let mut out = Vec::new();
        for shard in self.loaded().iter() {
            let st = shard.state.lock().await;
            out.extend(st.txns.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}

fn bump(epoch: i16) -> i16 {
    if epoch >= i16::MAX - 1 {
        epoch
    } else {
        epoch + 1
    }
}

fn check_producer<'a>(st: &'a ShardState, tid: &str, pid: i64, epoch: i16) -> Res<&'a TxnMetadata> {
    let m = st.txns.get(tid).ok_or(E::InvalidProducerIdMapping)?;
    if m.producer_id != pid {
        return Err(E::InvalidProducerIdMapping);
    }
    if m.producer_epoch != epoch {
        return Err(E::ProducerFenced);
    }
    Ok(m)
}

/// Appends the new metadata of `tid`, waits for it, replays it.
async fn write(shard: &Shard, st: &mut ShardState, tid: &str, m: TxnMetadata) -> Res<()> {
    let rec = (encode_key(tid), Some(encode_value(&m)));
    append_kv(&shard.partition, vec![rec])
        .await
        .map_err(|e| e.code())?;
    st.txns.insert(tid.to_string(), m);
    Ok(())
}

/// Second half of EndTxn: markers to every partition, the transaction's
/// offsets (on commit), then the Complete* record.
async fn complete(
    broker: &Broker,
    shard: &Shard,
    st: &mut ShardState,
    tid: &str,
    commit: bool,
) -> Res<()> {
    let m = st.txns[tid].clone();
    write_markers(
        broker,
        m.producer_id,
        m.producer_epoch,
        commit,
        &m.partitions,
    )
    .await?;
    let mut done = m;
    done.state = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    done.partitions.clear();
    done.last_update_ms = now_ms();
    write(shard, st, tid, done).await
}

/// How long the coordinator keeps retrying a transaction's markers while
/// their partitions' leaders move (Kafka retries until they are written).
const MARKER_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes the COMMIT/ABORT marker to every partition of a transaction: on
/// this broker for the partitions it leads, with WriteTxnMarkers to the
/// leader of the others (Kafka's `TransactionMarkerChannelManager`),
/// retrying while leaders move.
async fn write_markers(
    broker: &Broker,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    partitions: &BTreeSet<(String, i32)>,
) -> Res<()> {
    let deadline = tokio::time::Instant::now() + MARKER_RETRY;
    let mut pending: BTreeSet<(String, i32)> = partitions.clone();
    loop {
        let image = broker.metadata.image();
        let me = broker.node_id();
        let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        let mut last_error = E::UnknownServerError;
        for (topic, p) in pending.clone() {
            let Some(t) = image.topic(&topic) else {
                // deleted meanwhile: nothing to mark
                pending.remove(&(topic, p));
                continue;
            };
            let leader = t.registration(p).map_or(me, |r| r.leader);
            if leader == me {
                match write_marker_here(broker, &topic, p, producer_id, producer_epoch, commit)
                    .await
                {
                    Ok(()) => {
                        pending.remove(&(topic, p));
                    }
                    Err(e) if retriable(e) => last_error = e,
                    Err(e) => return Err(e),
                }
            } else if leader >= 0 {
                remote.entry(leader).or_default().push((topic, p));
            } else {
                last_error = E::NotLeaderOrFollower;
            }
        }
        for (leader, parts) in remote {
            match send_markers(broker, leader, producer_id, producer_epoch, commit, &parts).await {
                Ok(results) => {
                    for ((topic, p), code) in parts.into_iter().zip(results) {
                        match code {
                            0 => {
                                pending.remove(&(topic, p));
                            }
                            c => {
                                let e = E::try_from_code(c).unwrap_or(E::UnknownServerError);
                                if !retriable(e) {
                                    warn!(topic, partition = p, error = ?e, "transaction marker refused");
                                    return Err(e);
                                }
                                last_error = e;
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(broker = leader, error = %e, "cannot send transaction markers");
                    last_error = E::CoordinatorNotAvailable;
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(partitions = ?pending, error = ?last_error, "transaction markers not written in time");
            return Err(last_error);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Errors a marker write is retried after (leadership moving, a leader
/// not yet caught up, a broker restarting).
fn retriable(e: E) -> bool {
    matches!(
        e,
        E::NotLeaderOrFollower
            | E::UnknownTopicOrPartition
            | E::NotEnoughReplicas
            | E::NotEnoughReplicasAfterAppend
            | E::RequestTimedOut
            | E::CoordinatorNotAvailable
            | E::NotCoordinator
            | E::CoordinatorLoadInProgress
            | E::KafkaStorageError
    )
}

/// Sends WriteTxnMarkers (v1) for `parts` to broker `leader` on the
/// inter-broker listener; one error code per partition, in order.
async fn send_markers(
    broker: &Broker,
    leader: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    parts: &[(String, i32)],
) -> std::io::Result<Vec<i16>> {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{TopicName, WriteTxnMarkersRequest};
    use kafka_protocol::protocol::StrBytes;
    let image = broker.metadata.image();
    let listener = broker.config.inter_broker_listener();
    let (host, port) = image
        .broker(leader)
        .and_then(|b| b.endpoints.iter().find(|e| e.name == listener))
        .map(|e| (e.host.clone(), e.port))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("broker {leader} has no {listener} endpoint"),
            )
        })?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id).0.into())
        .with_producer_epoch(producer_epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(0)
        .with_topics(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(ps.clone())
                })
                .collect(),
        )]);
    let timeout = std::time::Duration::from_secs(10);
    let client_id = format!("broker-{}-txn-markers", broker.node_id());
    // The inter-broker listener's TLS/SASL, as the replica fetchers use.
    let security = broker
        .replicas
        .inter_broker_security(broker)
        .map_err(std::io::Error::other)?;
    let mut client = crate::replication::client::BrokerClient::connect(
        &host, port, client_id, timeout, &security,
    )
    .await?;
    let resp = client.send(&req, 1, timeout).await?;
    let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for m in resp.markers {
        for t in m.topics {
            for p in t.partitions {
                codes.insert((t.name.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    Ok(parts
        .iter()
        .map(|k| {
            codes
                .get(k)
                .copied()
                .unwrap_or(E::UnknownServerError.code())
        })
        .collect())
}

/// Writes one transaction marker to a partition this broker leads:
/// `__consumer_offsets` through its group shard (which replays it: the
/// transaction's offsets materialized or dropped), any other partition as
/// a control batch. WriteTxnMarkers and the local coordinator both use it.
pub async fn write_marker_here(
    broker: &Broker,
    topic: &str,
    p: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Res<()> {
    if topic == CONSUMER_OFFSETS {
        let g = broker
            .groups
            .loaded_shard(broker, p)
            .await
            .ok_or(E::NotLeaderOrFollower)?;
        return g
            .txn(TxnWrite::Marker {
                producer_id,
                producer_epoch,
                commit,
            })
            .await
            .map_err(|e| e.code());
    }
    let Some(part) = broker.replicas.partition(topic, p) else {
        return Err(E::UnknownTopicOrPartition);
    };
    if !part.is_leader() {
        return Err(E::NotLeaderOrFollower);
    }
    let marker = Marker {
        control: if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        },
        coordinator_epoch: 0,
    };
    let (k, v) = encode_marker(marker);
    let now = now_ms();
    let batch = encode_batch_with(
        &[Record::new(Offset(0), now, Some(&k), Some(&v))],
        &BatchOptions {
            producer_id: ProducerId(producer_id),
            producer_epoch: ProducerEpoch(producer_epoch),
            transactional: true,
            control: true,
            ..BatchOptions::default()
        },
    );
    // acks=all, as Kafka writes markers: a marker the ISR lacks could be
    // lost with this leader while the transaction is already complete
    match part
        .append_control_replicated(
            BytesMut::from(&batch[..]),
            now,
            std::time::Duration::from_secs(30),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(code) => {
            warn!(partition = %part.topic_partition, error = ?code, "cannot write transaction marker");
            Err(code)
        }
    }
}

/// Replays one `__transaction_state` partition.
fn load(
    partition: &Partition,
) -> Result<HashMap<String, TxnMetadata>, crate::group::CoordinatorError> {
    let mut txns = HashMap::new();
    replay_kv(partition, |key, value, offset| {
        let Some(tid) = key.and_then(decode_key) else {
            warn!(partition = %partition.topic_partition, offset = offset.0, "undecodable transaction key skipped");
            return false;
        };
        match value {
            None => {
                txns.remove(&tid);
                true
            }
            Some(v) => match decode_value(v) {
                Some(m) => {
                    txns.insert(tid, m);
                    true
                }
                None => {
                    warn!(partition = %partition.topic_partition, offset = offset.0, "undecodable transaction value skipped");
                    false
                }
            },
        }
    })?;
    Ok(txns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let m = TxnMetadata {
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: BTreeSet::from([
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]),
            last_update_ms: 5,
            start_ms: 4,
        };
        assert_eq!(decode_value(&encode_value(&m)), Some(m));
        assert_eq!(decode_key(&encode_key("tx-1")).as_deref(), Some("tx-1"));
        assert_eq!(decode_value(&[0, 1]), None);
    }
}
