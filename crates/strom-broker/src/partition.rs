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

use std::sync::{Arc, Mutex};

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

/// This broker's replica of one partition (always the leader for now).
pub struct Partition {
    pub topic_partition: TopicPartition,
    pub topic_id: Uuid,
    pub leader_epoch: LeaderEpoch,
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
/// however many partitions it carries.
pub fn start_appends(
    appends: Vec<(Arc<Partition>, Bytes)>,
    now_ms: i64,
) -> JoinHandle<Vec<Result<LogAppendInfo, LogError>>> {
    tokio::task::spawn_blocking(move || append_all(&appends, now_ms))
}

impl Partition {
    pub fn new(
        topic_partition: TopicPartition,
        topic_id: Uuid,
        leader_epoch: LeaderEpoch,
        log: Arc<Log>,
    ) -> Self {
        // A single node: everything in the log is committed once written.
        log.update_high_watermark(log.log_end_offset());
        Partition {
            topic_partition,
            topic_id,
            leader_epoch,
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
            let info = this
                .log
                .append_control(&records, this.leader_epoch, now_ms)?;
            this.advance_high_watermark(info.last_offset.plus(1));
            Ok(info)
        })
    }

    /// Writes producer batches as leader, without the flush policy's fsync
    /// (see [`Partition::complete_append`]). Blocks: blocking pool only.
    fn write_append(&self, records: &[u8], now_ms: i64) -> Result<LogAppendInfo, LogError> {
        let log = &self.log;
        // `compression.type` other than `producer`: batches of another
        // codec are recompressed (the only produce-path decompression).
        match log.config().compression {
            Some(target) => match recompress(records, target)? {
                Some(converted) => {
                    log.append_as_leader_unflushed(&converted, self.leader_epoch, now_ms)
                }
                None => log.append_as_leader_unflushed(records, self.leader_epoch, now_ms),
            },
            None => log.append_as_leader_unflushed(records, self.leader_epoch, now_ms),
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

    fn advance_high_watermark(&self, hw: Offset) {
        let _g = self.hw_lock.lock().unwrap();
        if hw > self.log.high_watermark() {
            self.log.update_high_watermark(hw);
        }
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
    /// Size of the in-sync replica set (`Isr`). One node: the leader alone;
    /// replication will track followers here.
    pub fn isr_len(&self) -> usize {
        1
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
