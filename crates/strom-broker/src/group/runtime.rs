//! The coordinator runtime (Kafka's `CoordinatorRuntime`, one shard per
//! `__consumer_offsets` partition): a task that owns a [`GroupShard`], runs
//! operations on it one at a time, appends the records they return through
//! the partition façade, waits until the high watermark covers them, replays
//! them, and only then answers. Timers (sessions, rebalances, offset expiry)
//! are ticks of the same task, so the shard never needs a lock.
//!
//! Loading is replay: on start the task reads its partition from the log
//! start offset to the high watermark before it serves anything; requests
//! that arrive meanwhile queue up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use strom_protocol::batch::{BatchIter, Compression};
use strom_protocol::records::{
    decode_records, encode_batch, encode_batch_with, BatchOptions, Record,
};
use strom_protocol::{Offset, ProducerEpoch, ProducerId};
use strom_storage::producer_state::{encode_marker, parse_marker, ControlType, Marker};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::coordinator::CoordinatorError;
use super::records::CoordinatorRecord;
use super::state::{Effects, GroupShard, ReplayMode, Reply, Token};
use super::GroupConfig;
use crate::broker::now_ms;
use crate::group_lag::CommittedOffsets;
use crate::partition::Partition;

type Completion = Box<dyn FnOnce(Result<(), CoordinatorError>) + Send>;
type WriteOp = Box<dyn FnOnce(&mut GroupShard, i64, &mut Effects) -> Completion + Send>;
type DeferredOp = Box<dyn FnOnce(&mut GroupShard, i64, Token, &mut Effects) + Send>;

enum Command {
    Write(WriteOp),
    Deferred(DeferredOp, oneshot::Sender<Reply>),
    Txn(TxnWrite, oneshot::Sender<Result<(), CoordinatorError>>),
}

/// A write of the transaction coordinator to this partition
/// (`super::txn_offsets`).
pub enum TxnWrite {
    /// TxnOffsetCommit: offset records as a transactional batch of the
    /// producer; pending until the marker.
    Offsets {
        producer_id: i64,
        producer_epoch: i16,
        records: Vec<CoordinatorRecord>,
    },
    /// The transaction's COMMIT/ABORT marker.
    Marker {
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    },
}

/// A handle to one shard's task. Cheap to clone; the task stops when every
/// handle is dropped.
#[derive(Clone)]
pub struct ShardHandle {
    pub partition: i32,
    tx: mpsc::UnboundedSender<Command>,
}

impl ShardHandle {
    /// Starts the task of `partition`: it loads the partition, then serves.
    pub fn start(
        partition: Arc<Partition>,
        config: GroupConfig,
        committed: Arc<CommittedOffsets>,
    ) -> ShardHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let index = partition.topic_partition.partition;
        tokio::spawn(run(partition, config, committed, rx));
        ShardHandle {
            partition: index,
            tx,
        }
    }

    /// Runs `op`; its records are durable and replayed before the result
    /// comes back.
    pub async fn write<R: Send + 'static>(
        &self,
        op: impl FnOnce(&mut GroupShard, i64, &mut Effects) -> R + Send + 'static,
    ) -> Result<R, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        let cmd: WriteOp = Box::new(move |shard, now, fx| {
            let r = op(shard, now, fx);
            Box::new(move |res: Result<(), CoordinatorError>| {
                let _ = tx.send(res.map(|()| r));
            })
        });
        self.tx
            .send(Command::Write(cmd))
            .map_err(|_| CoordinatorError::NotAvailable)?;
        rx.await.map_err(|_| CoordinatorError::NotAvailable)?
    }

    /// Runs a read-only `f` in order with the writes.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&GroupShard) -> R + Send + 'static,
    ) -> Result<R, CoordinatorError> {
        self.write(move |shard, _, _| f(shard)).await
    }

    /// Appends a transactional write, waits for it, replays it.
    pub async fn txn(&self, w: TxnWrite) -> Result<(), CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Txn(w, tx))
            .map_err(|_| CoordinatorError::NotAvailable)?;
        rx.await.map_err(|_| CoordinatorError::NotAvailable)?
    }

    /// Runs an operation whose reply may come later (JoinGroup, SyncGroup).
    pub async fn deferred(
        &self,
        op: impl FnOnce(&mut GroupShard, i64, Token, &mut Effects) + Send + 'static,
    ) -> Result<Reply, CoordinatorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Deferred(Box::new(op), tx))
            .map_err(|_| CoordinatorError::NotAvailable)?;
        rx.await.map_err(|_| CoordinatorError::NotAvailable)
    }
}

struct Runtime {
    partition: Arc<Partition>,
    shard: GroupShard,
    waiting: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
    committed: Arc<CommittedOffsets>,
}

async fn run(
    partition: Arc<Partition>,
    config: GroupConfig,
    committed: Arc<CommittedOffsets>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let started = std::time::Instant::now();
    let p = partition.clone();
    let loaded =
        tokio::task::spawn_blocking(move || load(&p, GroupShard::new(config, now_ms()))).await;
    let shard = match loaded {
        Ok(Ok((shard, n))) => {
            if n > 0 {
                info!(partition = %partition.topic_partition, records = n, ms = started.elapsed().as_millis() as u64, "loaded group coordinator state");
            }
            shard
        }
        Ok(Err(e)) => {
            warn!(partition = %partition.topic_partition, error = %e, "cannot load group coordinator state; groups of this partition are unavailable");
            return;
        }
        Err(e) => {
            warn!(partition = %partition.topic_partition, error = %e, "group coordinator load task failed");
            return;
        }
    };
    committed.publish_all(&shard);
    let mut rt = Runtime {
        partition,
        shard,
        waiting: HashMap::new(),
        next_token: 1,
        committed,
    };
    loop {
        let wait = (rt.shard.next_deadline() - now_ms()).clamp(0, 60_000) as u64;
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Write(op)) => {
                    let mut fx = Effects::default();
                    let done = op(&mut rt.shard, now_ms(), &mut fx);
                    let res = rt.apply(fx).await;
                    done(res);
                }
                Some(Command::Deferred(op, reply)) => {
                    let token = rt.next_token;
                    rt.next_token += 1;
                    rt.waiting.insert(token, reply);
                    let mut fx = Effects::default();
                    op(&mut rt.shard, now_ms(), token, &mut fx);
                    let _ = rt.apply(fx).await;
                }
                Some(Command::Txn(w, reply)) => {
                    let _ = reply.send(rt.apply_txn(w).await);
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                let mut fx = Effects::default();
                rt.shard.tick(now_ms(), &mut fx);
                let _ = rt.apply(fx).await;
            }
        }
        rt.waiting.retain(|_, tx| !tx.is_closed());
    }
}

impl Runtime {
    /// Appends, waits for the high watermark, replays, answers.
    async fn apply(&mut self, mut fx: Effects) -> Result<(), CoordinatorError> {
        let mut result = Ok(());
        if !fx.records.is_empty() {
            match append(&self.partition, &fx.records).await {
                Ok(()) => {
                    let now = now_ms();
                    for r in &fx.records {
                        self.shard.replay(now, r, ReplayMode::Live, &mut fx.replies);
                    }
                    self.committed.publish_touched(&self.shard, &fx.records);
                }
                Err(e) => {
                    warn!(partition = %self.partition.topic_partition, error = %e, "cannot append group coordinator records");
                    let code = e.code().code();
                    fx.replies = fx
                        .replies
                        .into_iter()
                        .map(|(t, r)| (t, r.failed(code)))
                        .collect();
                    result = Err(e);
                }
            }
        }
        for (token, reply) in fx.replies {
            if let Some(tx) = self.waiting.remove(&token) {
                let _ = tx.send(reply);
            }
        }
        result
    }
}

impl Runtime {
    async fn apply_txn(&mut self, w: TxnWrite) -> Result<(), CoordinatorError> {
        match w {
            TxnWrite::Offsets {
                producer_id,
                producer_epoch,
                records,
            } => {
                let kv = records.iter().map(|r| r.encode()).collect();
                append_kv_as(&self.partition, kv, Some((producer_id, producer_epoch))).await?;
                self.shard.stage_txn_offsets(producer_id, records);
            }
            TxnWrite::Marker {
                producer_id,
                producer_epoch,
                commit,
            } => {
                // no restating before an ABORT: the log cleaner knows aborted
                // transactions and never lets their records shadow committed ones
                append_marker(&self.partition, producer_id, producer_epoch, commit).await?;
                let mut replies = Vec::new();
                let done = self.shard.complete_txn_offsets(
                    now_ms(),
                    producer_id,
                    commit,
                    ReplayMode::Live,
                    &mut replies,
                );
                self.committed.publish_touched(&self.shard, &done);
            }
        }
        Ok(())
    }
}

/// Writes a COMMIT/ABORT marker of the producer and waits for the high
/// watermark to cover it.
pub(crate) async fn append_marker(
    partition: &Arc<Partition>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), CoordinatorError> {
    let (k, v) = encode_marker(Marker {
        control: if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        },
        coordinator_epoch: 0,
    });
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
    let info = partition
        .start_append_control(BytesMut::from(&batch[..]), now)
        .await
        .map_err(|_| CoordinatorError::NotAvailable)??;
    wait_hw(partition, info.last_offset.plus(1)).await
}

async fn append(
    partition: &Arc<Partition>,
    records: &[CoordinatorRecord],
) -> Result<(), CoordinatorError> {
    append_kv(partition, records.iter().map(|r| r.encode()).collect()).await
}

/// Appends `(key, value)` records of a coordinator as one batch through the
/// partition façade and waits until the high watermark covers them. Shared
/// by every coordinator on an internal topic (groups, transactions).
pub(crate) async fn append_kv(
    partition: &Arc<Partition>,
    records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
) -> Result<(), CoordinatorError> {
    append_kv_as(partition, records, None).await
}

/// [`append_kv`], as a transactional batch of `(producer id, epoch)` when
/// given (no sequence: the coordinator writes on the producer's behalf).
pub(crate) async fn append_kv_as(
    partition: &Arc<Partition>,
    records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
    producer: Option<(i64, i16)>,
) -> Result<(), CoordinatorError> {
    let now = now_ms();
    let recs: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            offset: Offset(i as i64),
            timestamp: now,
            key: Some(key),
            value,
            headers: Vec::new(),
        })
        .collect();
    let batch = match producer {
        None => encode_batch(&recs, Compression::None, Offset(0)),
        Some((pid, epoch)) => encode_batch_with(
            &recs,
            &BatchOptions {
                producer_id: ProducerId(pid),
                producer_epoch: ProducerEpoch(epoch),
                base_sequence: -1,
                transactional: true,
                ..BatchOptions::default()
            },
        ),
    };
    let info = partition
        .start_append(BytesMut::from(&batch[..]), now)
        .await
        .map_err(|_| CoordinatorError::NotAvailable)??;
    wait_hw(partition, info.last_offset.plus(1)).await
}

/// The façade resolves once the high watermark covers the batch; with
/// replication that becomes a real wait, so check rather than assume.
async fn wait_hw(partition: &Arc<Partition>, target: Offset) -> Result<(), CoordinatorError> {
    while partition.high_watermark() < target {
        let changed = partition.changed().notified();
        if partition.high_watermark() >= target {
            break;
        }
        if tokio::time::timeout(Duration::from_secs(30), changed)
            .await
            .is_err()
        {
            return Err(CoordinatorError::NotAvailable);
        }
    }
    Ok(())
}

/// Replays the partition from its log start into `shard`; returns it and
/// the number of records read.
fn load(
    partition: &Partition,
    mut shard: GroupShard,
) -> Result<(GroupShard, usize), CoordinatorError> {
    let mut ignored = Vec::new();
    let count = replay_log(partition, |item| {
        let (key, value, offset, txn) = match item {
            Replayed::Marker {
                producer_id,
                commit,
            } => {
                let done = shard.complete_txn_offsets(
                    now_ms(),
                    producer_id,
                    commit,
                    ReplayMode::Load,
                    &mut ignored,
                );
                return !done.is_empty();
            }
            Replayed::Data {
                key,
                value,
                offset,
                txn,
            } => (key, value, offset, txn),
        };
        match CoordinatorRecord::decode(key, value) {
            Ok(rec) => {
                match txn {
                    Some(pid) => shard.stage_txn_offsets(pid, vec![rec]),
                    None => shard.replay(now_ms(), &rec, ReplayMode::Load, &mut ignored),
                }
                true
            }
            Err(e) => {
                warn!(partition = %partition.topic_partition, offset = offset.0, error = %e, "undecodable record skipped while loading");
                false
            }
        }
    })?;
    Ok((shard, count))
}

/// One item of [`replay_log`].
pub(crate) enum Replayed<'a> {
    /// A data record; `txn`: the producer id of a transactional batch.
    Data {
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        offset: Offset,
        txn: Option<i64>,
    },
    /// A COMMIT/ABORT marker of a producer.
    Marker { producer_id: i64, commit: bool },
}

/// Feeds every data record of the partition, from its log start to the
/// high watermark, to `f(key, value, offset)` (loading a coordinator);
/// returns how many `f` accepted. Control batches are skipped.
pub(crate) fn replay_kv(
    partition: &Partition,
    mut f: impl FnMut(Option<&[u8]>, Option<&[u8]>, Offset) -> bool,
) -> Result<usize, CoordinatorError> {
    replay_log(partition, |item| match item {
        Replayed::Data {
            key, value, offset, ..
        } => f(key, value, offset),
        Replayed::Marker { .. } => false,
    })
}

/// Feeds every record of the partition, from its log start to its log
/// end, to `f` (data records with their batch's transactional
/// producer, markers); returns how many `f` accepted.
pub(crate) fn replay_log(
    partition: &Partition,
    mut f: impl FnMut(Replayed<'_>) -> bool,
) -> Result<usize, CoordinatorError> {
    // To the log end, as Kafka's coordinator loader: a new leader's high
    // watermark lags until its followers fetch again, but it keeps every
    // record of its log (followers truncate to it), so what the previous
    // coordinator acknowledged is all there.
    let mut offset = partition.log_start_offset();
    let end = partition.log_end_offset();
    let mut count = 0;
    while offset < end {
        let data = partition.log().read(offset, 1 << 20, end, true)?;
        if data.records.is_empty() {
            break;
        }
        for batch in BatchIter::new(&data.records) {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(partition = %partition.topic_partition, offset = offset.0, error = %e, "unreadable batch while loading; stopping the load here");
                    return Ok(count);
                }
            };
            offset = batch.next_offset();
            if batch.is_control() {
                let producer_id = batch.producer_id().0;
                if let Ok(records) = decode_records(&batch) {
                    for r in records {
                        if let Some(m) = parse_marker(r.key.as_deref(), r.value.as_deref()) {
                            let commit = m.control == ControlType::Commit;
                            if f(Replayed::Marker {
                                producer_id,
                                commit,
                            }) {
                                count += 1;
                            }
                        }
                    }
                }
                continue;
            }
            let txn = batch.is_transactional().then(|| batch.producer_id().0);
            let records = match decode_records(&batch) {
                Ok(r) => r,
                Err(e) => {
                    warn!(partition = %partition.topic_partition, offset = batch.base_offset().0, error = %e, "undecodable batch skipped while loading");
                    continue;
                }
            };
            for r in records {
                if f(Replayed::Data {
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                    offset: r.offset,
                    txn,
                }) {
                    count += 1;
                }
            }
        }
    }
    Ok(count)
}
