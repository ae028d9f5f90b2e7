//! Per-partition producer state (Kafka's `ProducerStateManager`): for every
//! idempotent/transactional producer that wrote to the partition, its epoch,
//! the sequence and offset ranges of its last [`MAX_CACHED_BATCHES`] batches
//! (duplicate detection), its coordinator epoch and its open transaction.
//! Also the partition's open transactions (for the last stable offset) and
//! its aborted transactions (the `.txnindex` contents, for read_committed
//! fetches).
//!
//! Everything here works on batch headers only: one map lookup per batch,
//! nothing per record.
//!
//! Owner: the [`crate::Log`], which keeps it under its writer lock (appends,
//! truncation, recovery) and takes snapshots `<offset>.snapshot` at segment
//! roll and clean shutdown, in Kafka's snapshot layout.
//!
//! ```text
//!  producer entry:   (no entry) --batch--> epoch e, batches[..5]
//!                    epoch e --batch with epoch e' > e--> epoch e', batches cleared
//!  transaction:      idle --transactional batch--> ongoing(first offset)
//!                    ongoing --COMMIT/ABORT marker--> idle (ABORT: + aborted index)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use strom_protocol::{Offset, ProducerEpoch, ProducerId};

/// How many batches per producer are remembered for duplicate detection
/// (the producer's `max.in.flight.requests.per.connection` limit).
pub const MAX_CACHED_BATCHES: usize = 5;

/// Kafka's snapshot file version.
const SNAPSHOT_VERSION: i16 = 1;
/// Bytes of one snapshot entry.
const SNAPSHOT_ENTRY: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;
/// Bytes of one `.txnindex` entry (version, pid, first, last, lso).
pub(crate) const TXN_ENTRY: usize = 2 + 8 + 8 + 8 + 8;

/// The producer fields of one batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchProducerInfo {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    pub base_sequence: i32,
    /// `lastOffsetDelta`: the batch holds `last_offset_delta + 1` records.
    pub last_offset_delta: i32,
    pub transactional: bool,
    pub control: bool,
    pub max_timestamp: i64,
}

impl BatchProducerInfo {
    /// Reads the producer fields from a batch's first 61 bytes.
    pub fn from_header(h: &[u8]) -> BatchProducerInfo {
        let attrs = i16::from_be_bytes([h[21], h[22]]);
        BatchProducerInfo {
            producer_id: ProducerId(i64::from_be_bytes(h[43..51].try_into().unwrap())),
            epoch: ProducerEpoch(i16::from_be_bytes([h[51], h[52]])),
            base_sequence: i32::from_be_bytes(h[53..57].try_into().unwrap()),
            last_offset_delta: i32::from_be_bytes(h[23..27].try_into().unwrap()),
            transactional: attrs & 0x10 != 0,
            control: attrs & 0x20 != 0,
            max_timestamp: i64::from_be_bytes(h[35..43].try_into().unwrap()),
        }
    }

    /// The last sequence of the batch (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// The marker a control batch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

/// A COMMIT/ABORT marker: its type and the coordinator epoch that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub control: ControlType,
    pub coordinator_epoch: i32,
}

/// One remembered batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub timestamp: i64,
}

/// What the partition knows of one producer. Fixed size (no heap), so
/// staging a copy during an append costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStateEntry {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    /// Oldest first; `len` are valid.
    batches: [BatchMetadata; MAX_CACHED_BATCHES],
    len: usize,
    pub coordinator_epoch: i32,
    pub last_timestamp: i64,
    /// First offset of the producer's open transaction on this partition.
    pub current_txn_first_offset: Option<Offset>,
}

impl ProducerStateEntry {
    fn new(producer_id: ProducerId, epoch: ProducerEpoch) -> Self {
        ProducerStateEntry {
            producer_id,
            epoch,
            batches: [BatchMetadata::default(); MAX_CACHED_BATCHES],
            len: 0,
            coordinator_epoch: -1,
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }

    /// The remembered batches, oldest first.
    pub fn batches(&self) -> &[BatchMetadata] {
        &self.batches[..self.len]
    }

    /// Last sequence written, -1 if none.
    pub fn last_sequence(&self) -> i32 {
        self.batches().last().map_or(-1, |b| b.last_seq)
    }

    /// Offset of the last batch written, -1 if none.
    pub fn last_offset(&self) -> Offset {
        self.batches()
            .last()
            .map_or(Offset::NONE, |b| b.last_offset)
    }

    fn push(&mut self, b: BatchMetadata) {
        if self.len == MAX_CACHED_BATCHES {
            self.batches.copy_within(1.., 0);
            self.len -= 1;
        }
        self.batches[self.len] = b;
        self.len += 1;
    }

    fn find_duplicate(&self, info: &BatchProducerInfo) -> Option<BatchMetadata> {
        if info.epoch != self.epoch {
            return None;
        }
        let last = info.last_sequence();
        self.batches()
            .iter()
            .find(|b| b.first_seq == info.base_sequence && b.last_seq == last)
            .copied()
    }
}

/// An aborted transaction of this partition (a `.txnindex` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    /// Offset of the ABORT marker.
    pub last_offset: Offset,
    /// The last stable offset right after the marker.
    pub last_stable_offset: Offset,
}

impl AbortedTxn {
    pub(crate) fn encode(&self) -> [u8; TXN_ENTRY] {
        let mut b = [0u8; TXN_ENTRY];
        b[0..2].copy_from_slice(&0i16.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.0.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.0.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.0.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.0.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> AbortedTxn {
        let l = |r: std::ops::Range<usize>| i64::from_be_bytes(b[r].try_into().unwrap());
        AbortedTxn {
            producer_id: ProducerId(l(2..10)),
            first_offset: Offset(l(10..18)),
            last_offset: Offset(l(18..26)),
            last_stable_offset: Offset(l(26..34)),
        }
    }
}

/// Why a producer's batch is refused. Each maps to one Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// INVALID_PRODUCER_EPOCH (Kafka ≥ 2.7 answers a stale epoch on produce
    /// with it rather than PRODUCER_FENCED, so the client can abort and retry).
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// PRODUCER_FENCED: a marker with an older producer epoch.
    #[error("{0}")]
    ProducerFenced(String),
    /// INVALID_TXN_STATE: a non-transactional batch inside a transaction,
    /// or a transactional batch the coordinator does not know about.
    #[error("{0}")]
    InvalidTxnState(String),
    /// TRANSACTION_COORDINATOR_FENCED: a marker from an older coordinator.
    #[error("{0}")]
    CoordinatorFenced(String),
}

/// The outcome of checking a batch against the producer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchCheck {
    /// New data: append it.
    Append,
    /// Already written at these offsets: acknowledge, don't write.
    Duplicate(BatchMetadata),
}

fn in_sequence(last: i32, next: i32) -> bool {
    next as i64 == last as i64 + 1 || (next == 0 && last == i32::MAX)
}

/// The producer state of one partition.
#[derive(Clone, Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerStateEntry>,
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, by marker offset (ascending).
    aborted: Vec<AbortedTxn>,
}

/// Changes of one append, applied only once its data is written.
#[derive(Default)]
pub struct StagedAppend {
    entries: Vec<ProducerStateEntry>,
    /// `(first offset, producer id, marker offset, abort?)` of completed transactions.
    completed: Vec<(Offset, ProducerId, Offset, bool)>,
    started: Vec<(Offset, ProducerId)>,
}

impl StagedAppend {
    fn entry(&self, pid: ProducerId) -> Option<&ProducerStateEntry> {
        self.entries.iter().rev().find(|e| e.producer_id == pid)
    }
    fn put(&mut self, e: ProducerStateEntry) {
        match self
            .entries
            .iter_mut()
            .find(|x| x.producer_id == e.producer_id)
        {
            Some(x) => *x = e,
            None => self.entries.push(e),
        }
    }
    /// Whether the append touched producer state at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ProducerStateManager {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of `pid`, if the partition knows it.
    pub fn entry(&self, pid: ProducerId) -> Option<&ProducerStateEntry> {
        self.producers.get(&pid.0)
    }

    /// Every known producer.
    pub fn entries(&self) -> impl Iterator<Item = &ProducerStateEntry> {
        self.producers.values()
    }

    /// First offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.ongoing.keys().next().map(|o| Offset(*o))
    }

    /// Aborted transactions whose marker is at or after `from` and whose
    /// data starts before `upper`.
    pub fn aborted_transactions(&self, from: Offset, upper: Offset) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < upper)
            .copied()
            .collect()
    }

    /// Every aborted transaction (oldest first).
    pub(crate) fn all_aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Replaces the aborted-transaction list (loaded from `.txnindex` files).
    pub(crate) fn set_aborted(&mut self, mut aborted: Vec<AbortedTxn>) {
        aborted.sort_by_key(|a| a.last_offset);
        aborted.dedup();
        self.aborted = aborted;
    }

    /// Checks a batch appended as leader at `first_offset`, staging its
    /// effect in `staged` (earlier batches of the same append included).
    /// `marker` must be given for control batches.
    pub fn check_and_stage(
        &self,
        staged: &mut StagedAppend,
        info: &BatchProducerInfo,
        first_offset: Offset,
        marker: Option<Marker>,
    ) -> Result<BatchCheck, ProducerStateError> {
        let pid = info.producer_id;
        let current = staged.entry(pid).or_else(|| self.producers.get(&pid.0));
        // NO_SEQUENCE (-1): written by a coordinator on behalf of the
        // producer (transactional offsets in `__consumer_offsets`); Kafka
        // skips sequence and duplicate checks for such appends.
        let no_seq = info.base_sequence < 0 && info.transactional;
        if !info.control && !no_seq {
            if let Some(dup) = current.and_then(|c| c.find_duplicate(info)) {
                return Ok(BatchCheck::Duplicate(dup));
            }
        }
        let mut entry = current
            .copied()
            .unwrap_or_else(|| ProducerStateEntry::new(pid, ProducerEpoch(-1)));
        let known_epoch = entry.epoch;
        // epoch
        if info.epoch < known_epoch {
            let msg = format!(
                "Epoch of producer {} at offset {} is {}, which is smaller than the last seen epoch {}",
                pid.0, first_offset.0, info.epoch.0, known_epoch.0
            );
            return Err(if info.control {
                ProducerStateError::ProducerFenced(msg)
            } else {
                ProducerStateError::InvalidProducerEpoch(msg)
            });
        }
        let last_offset = first_offset.plus(info.last_offset_delta as i64);
        if let Some(m) = marker {
            if m.coordinator_epoch < entry.coordinator_epoch {
                return Err(ProducerStateError::CoordinatorFenced(format!(
                    "Coordinator epoch {} of the marker for producer {} is older than {}",
                    m.coordinator_epoch, pid.0, entry.coordinator_epoch
                )));
            }
            if info.epoch > entry.epoch {
                entry.epoch = info.epoch;
                entry.len = 0;
            }
            entry.coordinator_epoch = m.coordinator_epoch;
            entry.last_timestamp = info.max_timestamp;
            if let Some(first) = entry.current_txn_first_offset.take() {
                staged
                    .completed
                    .push((first, pid, last_offset, m.control == ControlType::Abort));
            }
            staged.put(entry);
            return Ok(BatchCheck::Append);
        }
        // sequence (Kafka's ProducerAppendInfo.checkSequence)
        let seq = info.base_sequence;
        if info.epoch != known_epoch {
            if !no_seq && seq != 0 && known_epoch.0 != -1 {
                return Err(ProducerStateError::OutOfOrderSequence(format!(
                    "Invalid sequence number for new epoch of producer {}: {} (request epoch), {} (seq. number), {} (current producer epoch)",
                    pid.0, info.epoch.0, seq, known_epoch.0
                )));
            }
        } else if !no_seq {
            let last = entry.last_sequence();
            // Nothing known of this epoch (e.g. retention removed its data,
            // or the entry was expired): accept any sequence, as Kafka does
            // since KIP-360 — the broker no longer answers UNKNOWN_PRODUCER_ID.
            if known_epoch.0 != -1 && entry.len > 0 && !in_sequence(last, seq) {
                return Err(ProducerStateError::OutOfOrderSequence(format!(
                    "Out of order sequence number for producer {} at offset {} in partition: {} (incoming seq. number), {} (current end sequence number)",
                    pid.0, first_offset.0, seq, last
                )));
            }
        }
        // transactions
        if info.transactional {
            if entry.current_txn_first_offset.is_none() {
                entry.current_txn_first_offset = Some(first_offset);
                staged.started.push((first_offset, pid));
            }
        } else if entry.current_txn_first_offset.is_some() {
            return Err(ProducerStateError::InvalidTxnState(format!(
                "Expected transactional write from producer {} at offset {}",
                pid.0, first_offset.0
            )));
        }
        if info.epoch > entry.epoch {
            entry.epoch = info.epoch;
            entry.len = 0;
        }
        if !no_seq {
            entry.push(BatchMetadata {
                first_seq: seq,
                last_seq: info.last_sequence(),
                first_offset,
                last_offset,
                timestamp: info.max_timestamp,
            });
        }
        entry.last_timestamp = info.max_timestamp;
        staged.put(entry);
        Ok(BatchCheck::Append)
    }

    /// Stages a batch a follower copied from its leader (Kafka's
    /// `AppendOrigin.REPLICATION`): nothing is validated (the leader did),
    /// the entry just follows the batch — epoch, sequences, open and
    /// completed transactions — so duplicates are recognized later.
    pub fn stage_replicated(
        &self,
        staged: &mut StagedAppend,
        info: &BatchProducerInfo,
        first_offset: Offset,
        marker: Option<Marker>,
    ) {
        let pid = info.producer_id;
        let mut entry = staged
            .entry(pid)
            .or_else(|| self.producers.get(&pid.0))
            .copied()
            .unwrap_or_else(|| ProducerStateEntry::new(pid, ProducerEpoch(-1)));
        let last_offset = first_offset.plus(info.last_offset_delta as i64);
        if info.epoch > entry.epoch {
            entry.epoch = info.epoch;
            entry.len = 0;
        }
        entry.last_timestamp = info.max_timestamp;
        if let Some(m) = marker {
            entry.coordinator_epoch = entry.coordinator_epoch.max(m.coordinator_epoch);
            if let Some(first) = entry.current_txn_first_offset.take() {
                staged
                    .completed
                    .push((first, pid, last_offset, m.control == ControlType::Abort));
            }
            staged.put(entry);
            return;
        }
        if info.transactional && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(first_offset);
            staged.started.push((first_offset, pid));
        }
        if !(info.base_sequence < 0 && info.transactional) {
            entry.push(BatchMetadata {
                first_seq: info.base_sequence,
                last_seq: info.last_sequence(),
                first_offset,
                last_offset,
                timestamp: info.max_timestamp,
            });
        }
        staged.put(entry);
    }

    /// Applies a staged append whose data is now in the log. Returns the
    /// aborted transactions it completed (for the `.txnindex`).
    pub fn apply(&mut self, staged: StagedAppend) -> Vec<AbortedTxn> {
        for e in staged.entries {
            self.producers.insert(e.producer_id.0, e);
        }
        for (first, pid) in staged.started {
            self.ongoing.insert(first.0, pid.0);
        }
        let mut aborted = Vec::new();
        for (first, pid, marker, abort) in staged.completed {
            self.ongoing.remove(&first.0);
            if abort {
                let lso = self.first_unstable_offset().unwrap_or(marker.plus(1));
                let a = AbortedTxn {
                    producer_id: pid,
                    first_offset: first,
                    last_offset: marker,
                    last_stable_offset: lso,
                };
                self.aborted.push(a);
                aborted.push(a);
            }
        }
        aborted
    }

    /// Removes producers idle for longer than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), except those with an open transaction.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Replaces the aborted transactions whose marker is in `[from, to)`
    /// (one segment's `.txnindex`, rewritten by the cleaner).
    pub(crate) fn replace_aborted(&mut self, from: Offset, to: Offset, entries: &[AbortedTxn]) {
        self.aborted
            .retain(|a| a.last_offset < from || a.last_offset >= to);
        self.aborted.extend_from_slice(entries);
        self.aborted.sort_by_key(|a| a.last_offset);
    }

    /// Forgets aborted transactions wholly below the log start offset.
    pub fn truncate_head(&mut self, log_start: Offset) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Serializes the state in Kafka's snapshot layout. Each remembered
    /// batch is one entry (oldest first); Kafka's reader keeps the last entry
    /// of a producer, ours all of them.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut n = 0i32;
        let mut pids: Vec<&ProducerStateEntry> = self.producers.values().collect();
        pids.sort_by_key(|e| e.producer_id);
        for e in pids {
            let txn = e.current_txn_first_offset.map_or(-1, |o| o.0);
            let mut put = |seq: i32, last: i64, delta: i32, ts: i64| {
                body.extend_from_slice(&e.producer_id.0.to_be_bytes());
                body.extend_from_slice(&e.epoch.0.to_be_bytes());
                body.extend_from_slice(&seq.to_be_bytes());
                body.extend_from_slice(&last.to_be_bytes());
                body.extend_from_slice(&delta.to_be_bytes());
                body.extend_from_slice(&ts.to_be_bytes());
                body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
                body.extend_from_slice(&txn.to_be_bytes());
                n += 1;
            };
            if e.len == 0 {
                put(-1, -1, 0, e.last_timestamp);
            }
            for b in e.batches() {
                put(
                    b.last_seq,
                    b.last_offset.0,
                    (b.last_offset.0 - b.first_offset.0) as i32,
                    b.timestamp,
                );
            }
        }
        let mut crc_part = Vec::with_capacity(4 + body.len());
        crc_part.extend_from_slice(&n.to_be_bytes());
        crc_part.extend_from_slice(&body);
        let mut out = Vec::with_capacity(6 + crc_part.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&crc_part).to_be_bytes());
        out.extend_from_slice(&crc_part);
        out
    }

    /// Parses a snapshot written by [`Self::encode_snapshot`] (or Kafka).
    pub fn decode_snapshot(b: &[u8]) -> Result<ProducerStateManager, String> {
        if b.len() < 10 {
            return Err("snapshot too short".into());
        }
        let version = i16::from_be_bytes([b[0], b[1]]);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let crc = u32::from_be_bytes(b[2..6].try_into().unwrap());
        if crc32c::crc32c(&b[6..]) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let n = i32::from_be_bytes(b[6..10].try_into().unwrap());
        if n < 0 || b.len() != 10 + n as usize * SNAPSHOT_ENTRY {
            return Err("snapshot length disagrees with its entry count".into());
        }
        let mut st = ProducerStateManager::new();
        for c in b[10..].chunks_exact(SNAPSHOT_ENTRY) {
            let pid = ProducerId(i64::from_be_bytes(c[0..8].try_into().unwrap()));
            let epoch = ProducerEpoch(i16::from_be_bytes([c[8], c[9]]));
            let last_seq = i32::from_be_bytes(c[10..14].try_into().unwrap());
            let last_offset = i64::from_be_bytes(c[14..22].try_into().unwrap());
            let delta = i32::from_be_bytes(c[22..26].try_into().unwrap());
            let ts = i64::from_be_bytes(c[26..34].try_into().unwrap());
            let coord = i32::from_be_bytes(c[34..38].try_into().unwrap());
            let txn = i64::from_be_bytes(c[38..46].try_into().unwrap());
            let e = st
                .producers
                .entry(pid.0)
                .or_insert_with(|| ProducerStateEntry::new(pid, epoch));
            if epoch > e.epoch {
                e.epoch = epoch;
                e.len = 0;
            }
            e.coordinator_epoch = coord;
            e.last_timestamp = ts;
            e.current_txn_first_offset = (txn >= 0).then_some(Offset(txn));
            if last_seq >= 0 || last_offset >= 0 {
                let first_seq = if last_seq < 0 {
                    -1
                } else {
                    let f = last_seq as i64 - delta as i64;
                    if f < 0 {
                        (f + i32::MAX as i64 + 1) as i32
                    } else {
                        f as i32
                    }
                };
                e.push(BatchMetadata {
                    first_seq,
                    last_seq,
                    first_offset: Offset(last_offset - delta as i64),
                    last_offset: Offset(last_offset),
                    timestamp: ts,
                });
            }
            if txn >= 0 {
                st.ongoing.insert(txn, pid.0);
            }
        }
        Ok(st)
    }
}

/// `<dir>/<20-digit offset>.snapshot`.
pub(crate) fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}.snapshot", offset.0))
}

/// The offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> io::Result<Vec<Offset>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(o) = stem.parse() {
                    out.push(Offset(o));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses a control record's key (`version: int16, type: int16`) and value
/// (`version: int16, coordinator_epoch: int32`).
pub fn parse_marker(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<Marker> {
    let k = key?;
    if k.len() < 4 {
        return None;
    }
    let control = match i16::from_be_bytes([k[2], k[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => return None,
    };
    let coordinator_epoch = value
        .filter(|v| v.len() >= 6)
        .map_or(0, |v| i32::from_be_bytes(v[2..6].try_into().unwrap()));
    Some(Marker {
        control,
        coordinator_epoch,
    })
}

/// The key and value of a control record for `marker` (version 0 each).
pub fn encode_marker(marker: Marker) -> (Vec<u8>, Vec<u8>) {
    let t: i16 = match marker.control {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&t.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    (key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: i64, epoch: i16, seq: i32, n: i32) -> BatchProducerInfo {
        BatchProducerInfo {
            producer_id: ProducerId(pid),
            epoch: ProducerEpoch(epoch),
            base_sequence: seq,
            last_offset_delta: n - 1,
            transactional: false,
            control: false,
            max_timestamp: 1000,
        }
    }

    fn append(
        st: &mut ProducerStateManager,
        i: BatchProducerInfo,
        at: i64,
    ) -> Result<BatchCheck, ProducerStateError> {
        let mut s = StagedAppend::default();
        let r = st.check_and_stage(&mut s, &i, Offset(at), None)?;
        st.apply(s);
        Ok(r)
    }

    #[test]
    fn coordinator_batches_without_sequence_are_never_duplicates() {
        // transactional offsets written by the group coordinator: -1
        let mut st = ProducerStateManager::default();
        let mut i = info(7, 0, -1, 1);
        i.transactional = true;
        assert!(matches!(append(&mut st, i, 0), Ok(BatchCheck::Append)));
        assert!(matches!(append(&mut st, i, 1), Ok(BatchCheck::Append)));
        i.epoch = ProducerEpoch(1);
        assert!(matches!(append(&mut st, i, 2), Ok(BatchCheck::Append)));
        // a client's non-transactional batch without sequence is still checked
        let j = info(8, 0, 0, 1);
        assert!(matches!(append(&mut st, j, 3), Ok(BatchCheck::Append)));
        assert!(matches!(
            append(&mut st, j, 4),
            Ok(BatchCheck::Duplicate(_))
        ));
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut st = ProducerStateManager::new();
        assert_eq!(
            append(&mut st, info(7, 0, 0, 10), 0),
            Ok(BatchCheck::Append)
        );
        assert_eq!(
            append(&mut st, info(7, 0, 10, 5), 10),
            Ok(BatchCheck::Append)
        );
        // a retry of the first batch is a duplicate with its original offsets
        match append(&mut st, info(7, 0, 0, 10), 15).unwrap() {
            BatchCheck::Duplicate(b) => {
                assert_eq!((b.first_offset, b.last_offset), (Offset(0), Offset(9)))
            }
            other => panic!("{other:?}"),
        }
        // a gap
        assert!(matches!(
            append(&mut st, info(7, 0, 16, 1), 15),
            Err(ProducerStateError::OutOfOrderSequence(_))
        ));
        // a stale epoch after a bump
        assert_eq!(
            append(&mut st, info(7, 1, 0, 1), 15),
            Ok(BatchCheck::Append)
        );
        assert!(matches!(
            append(&mut st, info(7, 0, 15, 1), 16),
            Err(ProducerStateError::InvalidProducerEpoch(_))
        ));
        // a new epoch must start at 0
        assert!(matches!(
            append(&mut st, info(7, 2, 5, 1), 16),
            Err(ProducerStateError::OutOfOrderSequence(_))
        ));
        // an unknown producer may start anywhere (KIP-360)
        assert_eq!(
            append(&mut st, info(8, 3, 42, 1), 16),
            Ok(BatchCheck::Append)
        );
        // only the last 5 batches are remembered
        for i in 0..6 {
            append(&mut st, info(9, 0, i, 1), 20 + i as i64).unwrap();
        }
        assert!(matches!(
            append(&mut st, info(9, 0, 0, 1), 30),
            Err(ProducerStateError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            append(&mut st, info(9, 0, 1, 1), 30),
            Ok(BatchCheck::Duplicate(_))
        ));
    }

    #[test]
    fn sequence_wraps() {
        let mut st = ProducerStateManager::new();
        append(&mut st, info(1, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(st.entry(ProducerId(1)).unwrap().last_sequence(), i32::MAX);
        assert_eq!(append(&mut st, info(1, 0, 0, 1), 2), Ok(BatchCheck::Append));
    }

    #[test]
    fn transactions_lso_and_aborted_index() {
        let mut st = ProducerStateManager::new();
        let mut t = info(5, 0, 0, 3);
        t.transactional = true;
        append(&mut st, t, 10).unwrap();
        assert_eq!(st.first_unstable_offset(), Some(Offset(10)));
        // a non-transactional batch inside the transaction
        assert!(matches!(
            append(&mut st, info(5, 0, 3, 1), 13),
            Err(ProducerStateError::InvalidTxnState(_))
        ));
        let mut m = info(5, 0, -1, 1);
        m.control = true;
        let mut s = StagedAppend::default();
        st.check_and_stage(
            &mut s,
            &m,
            Offset(13),
            Some(Marker {
                control: ControlType::Abort,
                coordinator_epoch: 0,
            }),
        )
        .unwrap();
        let ab = st.apply(s);
        assert_eq!(ab.len(), 1);
        assert_eq!(st.first_unstable_offset(), None);
        assert_eq!(
            st.aborted_transactions(Offset(0), Offset(100))[0].first_offset,
            Offset(10)
        );
        assert!(st.aborted_transactions(Offset(14), Offset(100)).is_empty());
        // a fenced marker
        let mut s = StagedAppend::default();
        let mut old = m;
        old.epoch = ProducerEpoch(-1);
        assert!(st
            .check_and_stage(
                &mut s,
                &old,
                Offset(14),
                Some(Marker {
                    control: ControlType::Commit,
                    coordinator_epoch: 0
                })
            )
            .is_err());
    }

    #[test]
    fn snapshot_round_trip() {
        let mut st = ProducerStateManager::new();
        for i in 0..7 {
            append(&mut st, info(3, 2, i * 2, 2), i as i64 * 2).unwrap();
        }
        let mut t = info(4, 0, 0, 1);
        t.transactional = true;
        append(&mut st, t, 100).unwrap();
        let back = ProducerStateManager::decode_snapshot(&st.encode_snapshot()).unwrap();
        assert_eq!(back.entry(ProducerId(3)), st.entry(ProducerId(3)));
        assert_eq!(back.entry(ProducerId(4)), st.entry(ProducerId(4)));
        assert_eq!(back.first_unstable_offset(), Some(Offset(100)));
        let mut bad = st.encode_snapshot();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(ProducerStateManager::decode_snapshot(&bad).is_err());
    }

    mod log_level {
        use strom_protocol::batch::Compression;
        use strom_protocol::records::{encode_batch_with, BatchOptions, Record};
        use strom_protocol::LeaderEpoch;

        use super::super::*;
        use crate::{Log, LogConfig};

        fn batch(pid: i64, epoch: i16, seq: i32, n: usize, txn: bool) -> Vec<u8> {
            let recs: Vec<Record> = (0..n)
                .map(|i| Record::new(Offset(i as i64), 1000, Some(b"k"), Some(b"v")))
                .collect();
            encode_batch_with(
                &recs,
                &BatchOptions {
                    compression: Compression::None,
                    producer_id: ProducerId(pid),
                    producer_epoch: ProducerEpoch(epoch),
                    base_sequence: seq,
                    transactional: txn,
                    ..BatchOptions::default()
                },
            )
        }

        fn marker(pid: i64, epoch: i16, control: ControlType) -> Vec<u8> {
            let (k, v) = encode_marker(Marker {
                control,
                coordinator_epoch: 0,
            });
            encode_batch_with(
                &[Record::new(Offset(0), 1000, Some(&k), Some(&v))],
                &BatchOptions {
                    producer_id: ProducerId(pid),
                    producer_epoch: ProducerEpoch(epoch),
                    transactional: true,
                    control: true,
                    ..BatchOptions::default()
                },
            )
        }

        fn app(log: &Log, b: Vec<u8>) -> Result<crate::LogAppendInfo, crate::LogError> {
            log.append_as_leader(&b, LeaderEpoch(0), 1000)
        }

        #[test]
        fn duplicates_survive_clean_and_unclean_restarts() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            let cfg = LogConfig {
                segment_bytes: 400,
                ..LogConfig::default()
            };
            {
                let log = Log::open(path.clone(), cfg.clone(), false).unwrap();
                for i in 0..10 {
                    let info = app(&log, batch(1, 0, i * 3, 3, false)).unwrap();
                    assert_eq!(info.first_offset, Offset(i as i64 * 3));
                }
                // a retry of the last batch: the same offsets, nothing written
                let dup = app(&log, batch(1, 0, 27, 3, false)).unwrap();
                assert!(dup.duplicate);
                assert_eq!(dup.first_offset, Offset(27));
                assert_eq!(log.log_end_offset(), Offset(30));
                assert!(matches!(
                    app(&log, batch(1, 0, 31, 1, false)),
                    Err(crate::LogError::Producer(
                        ProducerStateError::OutOfOrderSequence(_)
                    ))
                ));
                assert!(log.segment_count() > 1, "segments rolled");
                log.close().unwrap();
            }
            assert!(!list_snapshots(&path).unwrap().is_empty());
            {
                // clean restart: from the snapshot
                let log = Log::open(path.clone(), cfg.clone(), false).unwrap();
                let dup = app(&log, batch(1, 0, 24, 3, false)).unwrap();
                assert!(dup.duplicate);
                assert_eq!(dup.first_offset, Offset(24));
                app(&log, batch(1, 0, 30, 2, false)).unwrap();
                // crash: no close
            }
            for s in list_snapshots(&path).unwrap() {
                // also without any snapshot, recovery replays the whole log
                fs::remove_file(snapshot_path(&path, s)).unwrap();
            }
            let log = Log::open(path.clone(), cfg, true).unwrap();
            let dup = app(&log, batch(1, 0, 30, 2, false)).unwrap();
            assert!(dup.duplicate);
            assert_eq!(dup.first_offset, Offset(30));
            assert_eq!(log.log_end_offset(), Offset(32));
            assert!(matches!(
                app(&log, batch(1, 0, 0, 1, false)),
                Err(crate::LogError::Producer(
                    ProducerStateError::OutOfOrderSequence(_)
                ))
            ));
        }

        #[test]
        fn transactions_set_lso_and_aborted_index_survives_recovery() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            {
                let log = Log::open(path.clone(), LogConfig::default(), false).unwrap();
                app(&log, batch(9, 0, 0, 2, false)).unwrap();
                app(&log, batch(5, 0, 0, 3, true)).unwrap();
                log.update_high_watermark(log.log_end_offset());
                assert_eq!(log.first_unstable_offset(), Some(Offset(2)));
                assert_eq!(log.last_stable_offset(), Offset(2));
                // clients cannot write markers
                assert!(app(&log, marker(5, 0, ControlType::Abort)).is_err());
                let m = marker(5, 0, ControlType::Abort);
                log.append_control(&m, LeaderEpoch(0), 1000).unwrap();
                log.update_high_watermark(log.log_end_offset());
                assert_eq!(log.last_stable_offset(), Offset(6));
                let ab = log.aborted_transactions(Offset(0), Offset(6));
                assert_eq!(ab.len(), 1);
                assert_eq!(
                    (ab[0].first_offset, ab[0].last_offset),
                    (Offset(2), Offset(5))
                );
                // a second, open transaction, then a crash
                app(&log, batch(5, 0, 3, 1, true)).unwrap();
            }
            let log = Log::open(path.clone(), LogConfig::default(), true).unwrap();
            assert_eq!(log.aborted_transactions(Offset(0), Offset(7)).len(), 1);
            assert_eq!(log.first_unstable_offset(), Some(Offset(6)));
            assert!(segment_path_exists(&path));
        }

        fn segment_path_exists(dir: &Path) -> bool {
            crate::index::segment_path(dir, Offset(0), "txnindex").exists()
        }
    }
}
