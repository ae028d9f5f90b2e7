//! Log compaction (Kafka's `LogCleaner`): keep the latest record per key.
//!
//! One pass over a log with `cleanup.policy` containing `compact`:
//! ```text
//!   [log start ........ first dirty ........ end) [uncleanable...] [active]
//!    \__ cleaned before _/ \____ dirty ____/
//! ```
//! 1. Pick `end`: the base of the first segment that is active or younger
//!    than `min.compaction.lag.ms`. Skip the pass unless the dirty share of
//!    `[log start, end)` reaches `min.cleanable.dirty.ratio` (or the oldest
//!    dirty segment is older than `max.compaction.lag.ms`).
//! 2. Build an [`OffsetMap`] (hash of key → latest offset) over the dirty
//!    segments, whole segments only, as far as the map's memory allows.
//! 3. Rewrite every rolled segment below the mapped end: a record survives
//!    unless the map holds a later offset for its key, or it is a tombstone
//!    older than `delete.retention.ms`. Batches keep their base offset, last
//!    offset delta, producer fields and codec; untouched batches are copied
//!    verbatim, emptied ones dropped (offsets get gaps, never move).
//!
//! Transactions (Kafka's `CleanedTransactionMetadata`): both passes walk
//! batches in offset order with the log's aborted transactions (the
//! `.txnindex` data), so they know which transactional batches were
//! aborted. The map skips aborted batches and markers, so an aborted value
//! never shadows a committed one; the rewrite drops aborted batches. A
//! COMMIT/ABORT marker goes once no batch of its transaction is left (none
//! kept by this pass, which reads from the log start): the first such
//! pass stamps its delete horizon (now + `delete.retention.ms`, KIP-534's
//! batch attribute), a pass after the horizon drops it, so a consumer that
//! read the data had `delete.retention.ms` to reach the marker. The batch
//! holding a live producer's last sequence (or, with no data, its marker
//! of the current epoch) is kept, emptied if need be, for producer state.
//! Only segments wholly below the last stable offset are cleaned: open
//! transactions are never touched. A cleaned segment's `.txnindex` keeps the
//! aborted transactions whose data is still there.
//!
//! Crash safety (Kafka's protocol): a segment is rewritten into
//! `<base>.{log,index,timeindex,txnindex}.cleaned`, fsynced, renamed to
//! `.swap` (index files first, the log file last), then under the log's
//! locks renamed over the live files (log file last). At open,
//! [`finish_interrupted_swaps`] discards `.cleaned` files, completes a
//! `<base>.log.swap` (the rewrite was whole, its `.txnindex.swap` too) and
//! drops any offset/time index files it cannot vouch for so they are
//! rebuilt from the log; a `.txnindex.swap` without a `.log.swap` belongs
//! to an unfinished rewrite and is discarded. A reader opens a
//! segment's files under the state lock the swap holds, so it never sees a
//! half-cleaned segment.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use strom_protocol::batch::{BatchMut, BatchView, Compression};
use strom_protocol::records::{decode_records, encode_batch_with, BatchOptions, Record};
use strom_protocol::Offset;
use tracing::{info, warn};

use crate::checkpoint;
use crate::index::{self, segment_path, IndexState};
use crate::log::SegmentInfo;
use crate::producer_state::{parse_marker, AbortedTxn, ControlType, TXN_ENTRY};
use crate::scan::{self, read_header};
use crate::{Log, LogError};

/// Bytes one map entry is accounted for: a 16-byte key hash and an 8-byte
/// offset, as in Kafka's `SkimpyOffsetMap`.
const ENTRY_BYTES: usize = 24;
/// Kafka's `log.cleaner.io.buffer.load.factor`.
const LOAD_FACTOR: f64 = 0.9;

/// The cleaner's key → latest offset map, bounded by a byte budget
/// (`log.cleaner.dedupe.buffer.size`). Keys are stored as 128-bit hashes,
/// never as bytes, so memory depends only on the number of distinct keys.
///
/// Owned by one cleaner thread and reused across passes.
pub struct OffsetMap {
    map: HashMap<u128, i64>,
    max_entries: usize,
}

impl OffsetMap {
    /// A map that holds at most `buffer_bytes / 24 * 0.9` keys.
    pub fn new(buffer_bytes: usize) -> OffsetMap {
        let max_entries = ((buffer_bytes / ENTRY_BYTES) as f64 * LOAD_FACTOR) as usize;
        OffsetMap {
            map: HashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// How many distinct keys fit.
    pub fn capacity(&self) -> usize {
        self.max_entries
    }

    fn hash(key: &[u8]) -> u128 {
        let mut a = DefaultHasher::new();
        a.write_u8(0x5a);
        a.write(key);
        let mut b = DefaultHasher::new();
        b.write_u8(0xa5);
        b.write(key);
        ((a.finish() as u128) << 64) | b.finish() as u128
    }

    /// Records `offset` as the latest for `key`; false if the key is new
    /// and the map is full.
    fn put(&mut self, key: &[u8], offset: Offset) -> bool {
        let h = Self::hash(key);
        if let Some(o) = self.map.get_mut(&h) {
            *o = (*o).max(offset.0);
            return true;
        }
        if self.map.len() >= self.max_entries {
            return false;
        }
        self.map.insert(h, offset.0);
        true
    }

    fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(&Self::hash(key)).copied()
    }

    fn clear(&mut self) {
        self.map.clear();
    }
}

/// What one cleaning pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten or removed.
    pub segments: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// Offsets below this are now clean (the cleaner's checkpoint).
    pub end_offset: Offset,
}

/// `path` with `.swap` appended.
pub(crate) fn swap_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".swap");
    PathBuf::from(p)
}

fn cleaned_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".cleaned");
    PathBuf::from(p)
}

/// Recovery of a clean interrupted by a crash (called when a log opens,
/// before segments are listed): `.cleaned` files are incomplete and
/// removed; a `<base>.log.swap` is a complete rewrite and replaces
/// `<base>.log`; index files of a segment with any `.swap` left are removed
/// (with their `.swap`) so the open rebuilds them from the log file.
pub(crate) fn finish_interrupted_swaps(dir: &Path) -> io::Result<()> {
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".cleaned") {
            fs::remove_file(entry.path())?;
        } else if let Some(stem) = name.strip_suffix(".swap") {
            swaps.push(stem.to_string());
        }
    }
    if swaps.is_empty() {
        return Ok(());
    }
    // segments whose rewrite is whole: the log file reached `.swap` last
    let whole: HashSet<&str> = swaps
        .iter()
        .filter_map(|s| s.strip_suffix(".log"))
        .collect();
    let mut rebuild = Vec::new();
    for stem in &swaps {
        let (base, ext) = stem.rsplit_once('.').unwrap_or((stem.as_str(), ""));
        let target = dir.join(stem);
        if ext == "log" {
            warn!("completing interrupted compaction of {}", target.display());
            fs::rename(swap_path(&target), &target)?;
        } else if ext == "txnindex" && whole.contains(base) {
            // cannot be rebuilt from the log file alone (the aborted
            // transactions' data may be gone): it must be the rewrite's own
            fs::rename(swap_path(&target), &target)?;
        } else {
            fs::remove_file(swap_path(&target))?;
        }
        rebuild.push(base.to_string());
    }
    for base in rebuild {
        for ext in ["index", "timeindex"] {
            match fs::remove_file(dir.join(format!("{base}.{ext}"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    checkpoint::sync_dir(dir)
}

/// Reads the batches of a rolled segment one at a time.
fn for_each_batch(
    log: &Log,
    base: Offset,
    mut f: impl FnMut(&[u8]) -> Result<(), LogError>,
) -> Result<Option<u64>, LogError> {
    let Some((file, size)) = log.open_segment(base)? else {
        return Ok(None);
    };
    let mut pos = 0u64;
    while let Some(h) = read_header(&file, pos, size).map_err(|e| {
        LogError::CorruptRecord(format!("segment {base} of {}: {e}", log.dir().display()))
    })? {
        let mut buf = vec![0u8; h.size as usize];
        if scan::pread_full(&file, &mut buf, pos)? < buf.len() {
            return Err(LogError::CorruptRecord(format!(
                "segment {base} of {}: batch at {pos} truncated",
                log.dir().display()
            )));
        }
        f(&buf)?;
        pos += h.size;
    }
    Ok(Some(size))
}

fn decode(view: &BatchView, log: &Log) -> Result<Vec<Record>, LogError> {
    decode_records(view).map_err(|e| {
        LogError::CorruptRecord(format!(
            "batch at offset {} of {}: {e}",
            view.base_offset(),
            log.dir().display()
        ))
    })
}

/// Attribute bit of a batch whose `baseTimestamp` holds its delete horizon
/// (KIP-534).
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// The delete horizon an earlier pass stamped on `view`, if any.
fn delete_horizon(view: &BatchView) -> Option<i64> {
    (view.attributes() & ATTR_DELETE_HORIZON != 0).then(|| view.base_timestamp())
}

/// A copy of `batch` (a marker) carrying the delete horizon `horizon`: the
/// attribute bit and `baseTimestamp`, CRC recomputed. Record timestamp deltas
/// are left as they are (Kafka rebases them; clients never see a control
/// record's timestamp).
fn with_delete_horizon(batch: &[u8], horizon: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    let attrs = i16::from_be_bytes([b[21], b[22]]) | ATTR_DELETE_HORIZON;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    b[27..35].copy_from_slice(&horizon.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Which transactional batches of a pass belong to aborted transactions
/// (Kafka's `CleanedTransactionMetadata`). Fed every batch in offset order.
struct CleanedTransactionMetadata {
    /// Aborted transactions not reached yet, first offset descending (the
    /// next one last).
    pending: Vec<AbortedTxn>,
    /// Producers inside an aborted transaction: it, and whether a batch of
    /// it stays.
    ongoing_aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers inside a transaction not aborted of which a batch stays.
    ongoing_committed: HashSet<i64>,
}

impl CleanedTransactionMetadata {
    fn new(mut aborted: Vec<AbortedTxn>) -> Self {
        aborted.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
        CleanedTransactionMetadata {
            pending: aborted,
            ongoing_aborted: HashMap::new(),
            ongoing_committed: HashSet::new(),
        }
    }

    fn consume_up_to(&mut self, offset: Offset) {
        while self
            .pending
            .last()
            .is_some_and(|a| a.first_offset <= offset)
        {
            let a = self.pending.pop().expect("checked");
            self.ongoing_aborted
                .entry(a.producer_id.0)
                .or_insert((a, false));
        }
    }

    /// A data batch: true if it belongs to an aborted transaction.
    fn on_batch_read(&mut self, view: &BatchView) -> bool {
        self.consume_up_to(view.last_offset());
        view.is_transactional() && self.ongoing_aborted.contains_key(&view.producer_id().0)
    }

    /// A data batch read by [`Self::on_batch_read`] stays in the log (maybe
    /// emptied): its transaction's marker must stay too. Kafka counts every
    /// batch read; counting only those kept lets a marker start its delete
    /// horizon in the very pass that removes its transaction's data.
    fn on_batch_kept(&mut self, view: &BatchView) {
        if !view.is_transactional() {
            return;
        }
        let pid = view.producer_id().0;
        match self.ongoing_aborted.get_mut(&pid) {
            Some((_, kept)) => *kept = true,
            None => {
                self.ongoing_committed.insert(pid);
            }
        }
    }

    /// A marker: whether no batch of its transaction stays (the marker may
    /// go), and for an ABORT whose data remains, its aborted transaction
    /// (kept in the cleaned `.txnindex`).
    fn on_control_batch_read(
        &mut self,
        view: &BatchView,
        control: Option<ControlType>,
    ) -> (bool, Option<AbortedTxn>) {
        self.consume_up_to(view.last_offset());
        let pid = view.producer_id().0;
        match control {
            Some(ControlType::Abort) => {
                self.ongoing_committed.remove(&pid);
                match self.ongoing_aborted.remove(&pid) {
                    Some((a, true)) => (false, Some(a)),
                    _ => (true, None),
                }
            }
            Some(ControlType::Commit) => (!self.ongoing_committed.remove(&pid), None),
            // unknown control type: keep it, as Kafka does
            None => (false, None),
        }
    }
}

/// The marker type of a control batch (`None`: not a COMMIT/ABORT).
fn control_type(view: &BatchView, log: &Log) -> Result<Option<ControlType>, LogError> {
    Ok(decode(view, log)?
        .first()
        .and_then(|r| parse_marker(r.key.as_deref(), r.value.as_deref()))
        .map(|m| m.control))
}

/// One compaction pass over `log` if it is due (see the module docs).
/// `Ok(None)`: nothing to do. `cancel` stops the pass between segments
/// (every segment swap is whole, so a partial pass is a valid log).
pub fn clean_log(
    log: &Log,
    map: &mut OffsetMap,
    now_ms: i64,
    cancel: &AtomicBool,
) -> Result<Option<CleanStats>, LogError> {
    let cfg = log.config();
    if !cfg.cleanup_policy.compact {
        return Ok(None);
    }
    let (segments, log_start) = log.segment_infos();
    let first_dirty = Offset(log.first_dirty.load(Ordering::Acquire).max(log_start.0));
    let next_base =
        |i: usize| -> Offset { segments.get(i + 1).map_or(Offset(i64::MAX), |s| s.base) };
    // open transactions (and anything above the high watermark) are not
    // touched: only segments wholly below the last stable offset
    let stable = log.last_stable_offset();
    // rolled segments old enough to compact: [0, n_cleanable)
    let n_cleanable = segments
        .iter()
        .enumerate()
        .position(|(i, s)| {
            s.active
                || next_base(i) > stable
                || (cfg.min_compaction_lag_ms > 0
                    && s.max_ts != i64::MIN
                    && now_ms.saturating_sub(s.max_ts) < cfg.min_compaction_lag_ms)
        })
        .unwrap_or(segments.len());
    let cleanable = &segments[..n_cleanable];
    let dirty: Vec<(usize, &SegmentInfo)> = cleanable
        .iter()
        .enumerate()
        .filter(|(i, _)| next_base(*i) > first_dirty)
        .collect();
    let tombstones_due = log.tombstone_due.load(Ordering::Acquire) <= now_ms;
    if dirty.is_empty() && !tombstones_due {
        return Ok(None);
    }
    let total: u64 = cleanable.iter().map(|s| s.size).sum();
    let dirty_bytes: u64 = dirty.iter().map(|(_, s)| s.size).sum();
    let ratio = if total == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total as f64
    };
    let oldest_dirty_ts = dirty.iter().map(|(_, s)| s.max_ts).find(|t| *t != i64::MIN);
    let forced =
        oldest_dirty_ts.is_some_and(|t| now_ms.saturating_sub(t) > cfg.max_compaction_lag_ms);
    if ratio < cfg.min_cleanable_dirty_ratio && !forced && !tombstones_due {
        return Ok(None);
    }

    info!(
        "cleaning {}: {} dirty of {} cleanable segments, dirty from offset {}",
        log.dir().display(),
        dirty.len(),
        cleanable.len(),
        first_dirty
    );

    // 2. the offset map over whole dirty segments, without aborted data
    // and markers
    map.clear();
    let mut map_end = first_dirty;
    if let Some((_, first_seg)) = dirty.first() {
        let mut txns = CleanedTransactionMetadata::new(
            log.aborted_transactions(first_seg.base, Offset(i64::MAX)),
        );
        for &(i, seg) in &dirty {
            let mut full = false;
            for_each_batch(log, seg.base, |b| {
                let view = BatchView::parse(b)?;
                if full {
                    return Ok(());
                }
                if view.is_control() {
                    let control = control_type(&view, log)?;
                    txns.on_control_batch_read(&view, control);
                    return Ok(());
                }
                if txns.on_batch_read(&view) || view.last_offset() < first_dirty {
                    return Ok(());
                }
                for r in decode(&view, log)? {
                    if let Some(k) = &r.key {
                        if r.offset >= first_dirty && !map.put(k, r.offset) {
                            full = true;
                            break;
                        }
                    }
                }
                Ok(())
            })?;
            if full {
                break;
            }
            map_end = next_base(i);
        }
    }
    if map_end == first_dirty && !dirty.is_empty() && !tombstones_due {
        warn!(
            "log cleaner: one segment of {} has more keys than the offset map holds ({}); raise log.cleaner.dedupe.buffer.size",
            log.dir().display(),
            map.capacity()
        );
        return Ok(None);
    }

    // 3. rewrite the rolled segments below map_end, from the log start so
    // every batch of a transaction is seen before its marker
    let all_aborted = log.aborted_transactions(Offset(0), Offset(i64::MAX));
    let mut pass = Pass {
        map,
        txns: CleanedTransactionMetadata::new(all_aborted.clone()),
        all_aborted,
        last_records: log
            .producer_states()
            .iter()
            .map(|e| {
                let last = e.last_offset();
                (
                    e.producer_id.0,
                    ((last != Offset::NONE).then_some(last.0), e.epoch.0),
                )
            })
            .collect(),
        now_ms,
        delete_retention_ms: cfg.delete_retention_ms,
        tombstone_horizon: now_ms.saturating_sub(cfg.delete_retention_ms),
        next_due: i64::MAX,
        stats: CleanStats {
            end_offset: map_end,
            ..CleanStats::default()
        },
    };
    for (i, seg) in cleanable.iter().enumerate() {
        if seg.base >= map_end {
            break;
        }
        if cancel.load(Ordering::Acquire) {
            return Ok(Some(pass.stats));
        }
        // the segment holding the log's last batch (only empty ones follow)
        let tail = segments[i + 1..].iter().all(|s| s.size == 0);
        clean_segment(log, seg.base, next_base(i), tail, &mut pass)?;
    }
    log.first_dirty.fetch_max(map_end.0, Ordering::AcqRel);
    log.tombstone_due
        .store(pass.next_due.max(now_ms + 1), Ordering::Release);
    let stats = pass.stats;
    if stats.segments > 0 {
        info!(
            "cleaned {}: {} segments, {} -> {} bytes, {} records removed, clean up to offset {}",
            log.dir().display(),
            stats.segments,
            stats.bytes_before,
            stats.bytes_after,
            stats.records_removed,
            map_end
        );
    }
    Ok(Some(stats))
}

/// The state of one rewrite pass, shared by its segments.
struct Pass<'a> {
    map: &'a OffsetMap,
    txns: CleanedTransactionMetadata,
    /// The log's aborted transactions when the pass started.
    all_aborted: Vec<AbortedTxn>,
    /// Live producers: last data offset (`None`: none remembered) and epoch.
    last_records: HashMap<i64, (Option<i64>, i16)>,
    now_ms: i64,
    delete_retention_ms: i64,
    /// Tombstones with a record timestamp at or below go.
    tombstone_horizon: i64,
    /// When the earliest tombstone or marker kept by this pass may go.
    next_due: i64,
    stats: CleanStats,
}

impl Pass<'_> {
    /// Kafka's `isBatchLastRecordOfProducer`: the batch holding a live
    /// producer's last sequence, or with no data remembered, its marker of
    /// the current epoch (fencing needs the epoch). Kept, if need be empty.
    fn is_last_of_producer(&self, view: &BatchView) -> bool {
        let pid = view.producer_id().0;
        pid >= 0
            && self
                .last_records
                .get(&pid)
                .is_some_and(|(last, epoch)| match last {
                    Some(o) => view.last_offset().0 == *o,
                    None => view.is_control() && view.producer_epoch().0 == *epoch,
                })
    }

    /// Whether `r` (of a batch not aborted) survives.
    fn keep_record(&mut self, r: &Record) -> bool {
        let Some(k) = &r.key else {
            return true;
        };
        if self.map.get(k).is_some_and(|latest| latest > r.offset.0) {
            return false;
        }
        if r.value.is_none() {
            if r.timestamp <= self.tombstone_horizon {
                return false;
            }
            self.next_due = self
                .next_due
                .min(r.timestamp.saturating_add(self.delete_retention_ms));
        }
        true
    }
}

/// The header fields of `view` for a rewrite of its batch (same codec).
fn batch_options(view: &BatchView) -> BatchOptions {
    BatchOptions {
        compression: view.compression(),
        base_offset: view.base_offset(),
        partition_leader_epoch: view.partition_leader_epoch(),
        timestamp_type: view.timestamp_type(),
        producer_id: view.producer_id(),
        producer_epoch: view.producer_epoch(),
        base_sequence: view.base_sequence(),
        transactional: view.is_transactional(),
        control: false,
    }
}

/// `view`'s batch without records: same offsets and producer fields.
fn emptied(view: &BatchView) -> Vec<u8> {
    let opts = BatchOptions {
        compression: Compression::None,
        ..batch_options(view)
    };
    let mut nb = encode_batch_with(&[], &opts);
    BatchMut::new(&mut nb).set_last_offset_delta(view.last_offset_delta());
    nb
}

/// Rewrites one segment `[base, end)` (see the module docs); no-op if
/// nothing changes. With `tail`, the segment holds the log's last batch,
/// which is kept (emptied) if its records go.
fn clean_segment(
    log: &Log,
    base: Offset,
    end: Offset,
    tail: bool,
    pass: &mut Pass,
) -> Result<(), LogError> {
    let mut out: Vec<u8> = Vec::new();
    let mut removed = 0u64;
    // a marker got its delete horizon
    let mut stamped = false;
    // the aborted transactions of this segment whose data remains
    let mut txn_entries: Vec<AbortedTxn> = Vec::new();
    // The last batch of the log is never removed (as Kafka's cleaner keeps
    // it): emptied, it stays as a batch without records, so a consumer
    // still reads up to the high watermark; a marker stays as it is. Set
    // while the segment's last batch read so far was dropped whole: (what
    // replaces it, records that puts back).
    let mut dropped_last: Option<(Vec<u8>, u64)> = None;
    let read_size = for_each_batch(log, base, |b| {
        let view = BatchView::parse(b)?;
        dropped_last = None;
        if view.is_control() {
            let control = control_type(&view, log)?;
            let (data_gone, entry) = pass.txns.on_control_batch_read(&view, control);
            txn_entries.extend(entry);
            if !data_gone || pass.is_last_of_producer(&view) {
                out.extend_from_slice(b);
                return Ok(());
            }
            match delete_horizon(&view) {
                Some(h) if h <= pass.now_ms => {
                    removed += view.record_count().max(0) as u64;
                    if tail {
                        dropped_last = Some((b.to_vec(), view.record_count().max(0) as u64));
                    }
                }
                Some(h) => {
                    pass.next_due = pass.next_due.min(h);
                    out.extend_from_slice(b);
                }
                None => {
                    let h = pass.now_ms.saturating_add(pass.delete_retention_ms);
                    pass.next_due = pass.next_due.min(h);
                    out.extend_from_slice(&with_delete_horizon(b, h));
                    stamped = true;
                }
            }
            return Ok(());
        }
        let kept: Vec<Record> = if pass.txns.on_batch_read(&view) {
            // aborted: every record goes, without decoding
            removed += view.record_count().max(0) as u64;
            Vec::new()
        } else {
            let records = decode(&view, log)?;
            let total = records.len();
            let kept: Vec<Record> = records
                .into_iter()
                .filter(|r| pass.keep_record(r))
                .collect();
            if kept.len() == total {
                pass.txns.on_batch_kept(&view);
                out.extend_from_slice(b);
                return Ok(());
            }
            removed += (total - kept.len()) as u64;
            kept
        };
        if kept.is_empty() {
            if pass.is_last_of_producer(&view) {
                pass.txns.on_batch_kept(&view);
                out.extend_from_slice(&emptied(&view));
            } else if tail {
                dropped_last = Some((emptied(&view), 0));
            }
        } else {
            pass.txns.on_batch_kept(&view);
            let mut nb = encode_batch_with(&kept, &batch_options(&view));
            BatchMut::new(&mut nb).set_last_offset_delta(view.last_offset_delta());
            out.extend_from_slice(&nb);
        }
        Ok(())
    })?;
    let Some(read_size) = read_size else {
        return Ok(()); // deleted meanwhile
    };
    if let Some((last, restored)) = dropped_last {
        out.extend_from_slice(&last);
        removed -= restored;
    }
    let old_entries: Vec<AbortedTxn> = pass
        .all_aborted
        .iter()
        .filter(|a| a.last_offset >= base && a.last_offset < end)
        .copied()
        .collect();
    txn_entries.sort_by_key(|a| a.last_offset);
    if removed == 0 && !stamped && txn_entries == old_entries {
        return Ok(());
    }
    let dir = log.dir();
    // An emptied segment is dropped (its offsets become a gap), except the
    // log's first one: it stays, empty, so the log start offset does not move.
    let first = log.segment_infos().0.first().map(|s| s.base) == Some(base);
    let replacement = if out.is_empty() && !first {
        None
    } else {
        let log_path = segment_path(dir, base, "log");
        let idx_path = segment_path(dir, base, "index");
        let time_path = segment_path(dir, base, "timeindex");
        let txn_path = segment_path(dir, base, "txnindex");
        let write = |path: &Path, bytes: &[u8]| -> io::Result<File> {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(cleaned_path(path))?;
            f.write_all(bytes)?;
            f.sync_all()?;
            Ok(f)
        };
        let file = write(&log_path, &out)?;
        let scanned = scan::scan_segment(
            &file,
            base,
            0,
            base,
            IndexState::new(),
            log.config().index_interval_bytes,
            true,
        )?;
        if let Some(e) = scanned.error {
            let _ = fs::remove_file(cleaned_path(&log_path));
            return Err(LogError::CorruptRecord(format!(
                "cleaned segment {base} of {} does not verify: {e}",
                dir.display()
            )));
        }
        let mut idx = scanned.idx;
        idx.maybe_time_entry(base);
        let (ib, tb) = index::encode_index_files(&idx.index, &idx.time_index);
        write(&idx_path, &ib)?;
        write(&time_path, &tb)?;
        let mut renames = vec![&idx_path, &time_path];
        if !txn_entries.is_empty() || !old_entries.is_empty() || txn_path.exists() {
            let mut tb = Vec::with_capacity(txn_entries.len() * TXN_ENTRY);
            for a in &txn_entries {
                tb.extend_from_slice(&a.encode());
            }
            write(&txn_path, &tb)?;
            renames.push(&txn_path);
        }
        renames.push(&log_path);
        for p in renames {
            fs::rename(cleaned_path(p), swap_path(p))?;
        }
        checkpoint::sync_dir(dir)?;
        Some((out.len() as u64, idx.max_ts, idx.offset_of_max_ts))
    };
    if log.replace_segment(base, read_size, replacement, &txn_entries, pass.now_ms)? {
        pass.stats.segments += 1;
        pass.stats.bytes_before += read_size;
        pass.stats.bytes_after += out.len() as u64;
        pass.stats.records_removed += removed;
    } else {
        for ext in ["index", "timeindex", "txnindex", "log"] {
            let _ = fs::remove_file(swap_path(&segment_path(dir, base, ext)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use strom_protocol::batch::BatchIter;
    use strom_protocol::records::encode_batch;
    use strom_protocol::{LeaderEpoch, ProducerEpoch, ProducerId};

    use super::*;
    use crate::producer_state::{encode_marker, list_snapshots, snapshot_path, Marker};
    use crate::{CleanupPolicy, LogConfig};

    const NOW: i64 = 1_000_000_000;
    const RETENTION: i64 = 10_000;

    fn cfg() -> LogConfig {
        LogConfig {
            index_interval_bytes: 200,
            file_delete_delay_ms: 0,
            cleanup_policy: CleanupPolicy {
                delete: false,
                compact: true,
            },
            min_cleanable_dirty_ratio: 0.0,
            delete_retention_ms: RETENTION,
            ..LogConfig::default()
        }
    }

    fn recs(kv: &[(&str, &str)]) -> Vec<Record> {
        kv.iter()
            .enumerate()
            .map(|(i, (k, v))| {
                Record::new(
                    Offset(i as i64),
                    1000,
                    Some(k.as_bytes()),
                    Some(v.as_bytes()),
                )
            })
            .collect()
    }

    fn plain(log: &Log, kv: &[(&str, &str)]) {
        let b = encode_batch(&recs(kv), Compression::None, Offset(0));
        log.append_as_leader(&b, LeaderEpoch(0), NOW).unwrap();
    }

    fn txn(log: &Log, pid: i64, seq: i32, kv: &[(&str, &str)]) {
        let b = encode_batch_with(
            &recs(kv),
            &BatchOptions {
                compression: Compression::Lz4,
                producer_id: ProducerId(pid),
                producer_epoch: ProducerEpoch(0),
                base_sequence: seq,
                transactional: true,
                ..BatchOptions::default()
            },
        );
        log.append_as_leader(&b, LeaderEpoch(0), NOW).unwrap();
    }

    fn end_txn(log: &Log, pid: i64, control: ControlType) {
        let (k, v) = encode_marker(Marker {
            control,
            coordinator_epoch: 0,
        });
        let b = encode_batch_with(
            &[Record::new(Offset(0), 1000, Some(&k), Some(&v))],
            &BatchOptions {
                producer_id: ProducerId(pid),
                producer_epoch: ProducerEpoch(0),
                transactional: true,
                control: true,
                ..BatchOptions::default()
            },
        );
        log.append_control(&b, LeaderEpoch(0), NOW).unwrap();
    }

    fn roll(log: &Log) {
        assert!(log.roll_if_due(i64::MAX).unwrap());
    }

    /// A pass as the broker runs it: high watermark at the log end.
    fn clean(log: &Log, now: i64) -> Option<CleanStats> {
        log.update_high_watermark(log.log_end_offset());
        clean_log(
            log,
            &mut OffsetMap::new(1 << 20),
            now,
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    fn batches(log: &Log) -> Vec<Vec<u8>> {
        let r = log
            .read(
                log.log_start_offset(),
                usize::MAX,
                log.log_end_offset(),
                false,
            )
            .unwrap();
        BatchIter::new(&r.records)
            .map(|b| {
                let b = b.unwrap();
                b.verify_crc().unwrap();
                b.bytes().to_vec()
            })
            .collect()
    }

    /// The data records a consumer sees: with `read_committed`, without the
    /// batches of the aborted transactions the log reports (what a client
    /// does with Fetch's list).
    fn visible(log: &Log, read_committed: bool) -> Vec<(i64, String, String)> {
        let aborted = log.aborted_transactions(Offset(0), log.log_end_offset());
        let mut out = Vec::new();
        for b in batches(log) {
            let b = BatchView::parse(&b).unwrap();
            if b.is_control() {
                continue;
            }
            if read_committed
                && b.is_transactional()
                && aborted.iter().any(|a| {
                    a.producer_id == b.producer_id()
                        && a.first_offset <= b.base_offset()
                        && b.last_offset() < a.last_offset
                })
            {
                continue;
            }
            for r in decode_records(&b).unwrap() {
                let s = |x: Option<Bytes>| String::from_utf8(x.unwrap().to_vec()).unwrap();
                out.push((r.offset.0, s(r.key), s(r.value)));
            }
        }
        out
    }

    /// The markers left: (offset, delete horizon).
    fn markers(log: &Log) -> Vec<(i64, Option<i64>)> {
        batches(log)
            .iter()
            .map(|b| BatchView::parse(b).unwrap())
            .filter(|b| b.is_control())
            .map(|b| (b.base_offset().0, delete_horizon(&b)))
            .collect()
    }

    fn want(v: &[(i64, &str, &str)]) -> Vec<(i64, String, String)> {
        v.iter()
            .map(|(o, k, v)| (*o, k.to_string(), v.to_string()))
            .collect()
    }

    fn aborted(log: &Log) -> Vec<(i64, i64, i64)> {
        log.aborted_transactions(Offset(0), Offset(i64::MAX))
            .iter()
            .map(|a| (a.producer_id.0, a.first_offset.0, a.last_offset.0))
            .collect()
    }

    use bytes::Bytes;

    /// Committed and aborted transactions interleaved with plain writes on
    /// the same keys (offsets in comments).
    fn interleaved(log: &Log) {
        plain(log, &[("k1", "a0"), ("k2", "b0")]); // 0-1
        txn(log, 5, 0, &[("k1", "a1"), ("k2", "b1")]); // 2-3
        end_txn(log, 5, ControlType::Commit); // 4
        txn(log, 6, 0, &[("k1", "X1"), ("k2", "X2")]); // 5-6
        end_txn(log, 6, ControlType::Abort); // 7
        plain(log, &[("k3", "c0")]); // 8
        txn(log, 5, 2, &[("k3", "Z")]); // 9
        end_txn(log, 5, ControlType::Abort); // 10
        txn(log, 7, 0, &[("k2", "b2")]); // 11
        end_txn(log, 7, ControlType::Commit); // 12
        roll(log);
    }

    #[test]
    fn aborted_data_never_wins_and_markers_go_after_their_horizon() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t-0");
        let log = Log::open(path.clone(), cfg(), false).unwrap();
        interleaved(&log);
        assert_eq!(aborted(&log), vec![(6, 5, 7), (5, 9, 10)]);

        // pass 1: the producers are live, so the batch holding each one's
        // last sequence stays, emptied (6's and 5's aborted ones), and the
        // ABORT markers and aborted index entries of their transactions too
        let s = clean(&log, NOW).unwrap();
        assert_eq!(s.records_removed, 2 + 2 + 1 + 1);
        let latest = want(&[(2, "k1", "a1"), (8, "k3", "c0"), (11, "k2", "b2")]);
        assert_eq!(visible(&log, false), latest);
        assert_eq!(visible(&log, true), latest);
        assert_eq!(markers(&log).len(), 4);
        assert_eq!(aborted(&log), vec![(6, 5, 7), (5, 9, 10)]);
        let empties: Vec<i64> = batches(&log)
            .iter()
            .map(|b| BatchView::parse(b).unwrap())
            .filter(|b| b.record_count() == 0)
            .map(|b| b.base_offset().0)
            .collect();
        assert_eq!(empties, vec![5, 9]);
        // a crash now, with no snapshot: replay rebuilds the same aborted
        // index from the emptied batches and their markers, nothing left open
        drop(log);
        for s in list_snapshots(&path).unwrap() {
            fs::remove_file(snapshot_path(&path, s)).unwrap();
        }
        let log = Log::open(path.clone(), cfg(), true).unwrap();
        assert_eq!(aborted(&log), vec![(6, 5, 7), (5, 9, 10)]);
        assert_eq!(log.first_unstable_offset(), None);
        assert_eq!(visible(&log, true), latest);

        // pass 2: the producers expired; a new committed value of k1
        // supersedes producer 5's committed batch
        assert_eq!(log.expire_producers(NOW, 0), 3);
        txn(&log, 9, 0, &[("k1", "a2")]); // 13
        end_txn(&log, 9, ControlType::Commit); // 14
        plain(&log, &[("k4", "d")]); // 15
        roll(&log);
        let t2 = NOW + 1;
        clean(&log, t2).unwrap();
        let latest = want(&[
            (8, "k3", "c0"),
            (11, "k2", "b2"),
            (13, "k1", "a2"),
            (15, "k4", "d"),
        ]);
        assert_eq!(visible(&log, false), latest);
        assert_eq!(visible(&log, true), latest);
        // no data of transactions 2-4, 5-7 and 9-10 is left: their markers
        // got a delete horizon; their index entries are gone
        let horizon = Some(t2 + RETENTION);
        assert_eq!(
            markers(&log),
            vec![
                (4, horizon),
                (7, horizon),
                (10, horizon),
                (12, None),
                (14, None)
            ]
        );
        assert_eq!(aborted(&log), vec![]);
        // the horizon holds: nothing to do before it, the markers go at it
        assert!(clean(&log, t2 + RETENTION - 1).is_none());
        assert_eq!(markers(&log).len(), 5);
        clean(&log, t2 + RETENTION).unwrap();
        assert_eq!(markers(&log), vec![(12, None), (14, None)]);
        assert_eq!(visible(&log, false), latest);

        // restarts (clean, then from the log alone) see the same
        log.close().unwrap();
        drop(log);
        let log = Log::open(path.clone(), cfg(), false).unwrap();
        assert_eq!(visible(&log, true), latest);
        assert_eq!(aborted(&log), vec![]);
        drop(log);
        for s in list_snapshots(&path).unwrap() {
            fs::remove_file(snapshot_path(&path, s)).unwrap();
        }
        let log = Log::open(path.clone(), cfg(), true).unwrap();
        assert_eq!(visible(&log, false), latest);
        assert_eq!(aborted(&log), vec![]);
        assert_eq!(log.first_unstable_offset(), None);
    }

    #[test]
    fn nothing_at_or_above_the_last_stable_offset_is_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::open(d.path().join("t-0"), cfg(), false).unwrap();
        plain(&log, &[("k1", "a")]); // 0
        plain(&log, &[("k1", "b")]); // 1
        roll(&log);
        txn(&log, 8, 0, &[("k1", "X")]); // 2, open
        roll(&log);
        plain(&log, &[("k1", "c")]); // 3
        roll(&log);
        let all = want(&[
            (0, "k1", "a"),
            (1, "k1", "b"),
            (2, "k1", "X"),
            (3, "k1", "c"),
        ]);
        // the high watermark bounds it too: nothing below it is rolled
        log.update_high_watermark(Offset(1));
        let cancel = AtomicBool::new(false);
        assert!(clean_log(&log, &mut OffsetMap::new(1 << 20), NOW, &cancel)
            .unwrap()
            .is_none());
        assert_eq!(visible(&log, false), all);
        // the open transaction at 2: only the first segment is cleaned, and
        // neither the open value nor the later "c" shadows "b"
        assert_eq!(log.first_unstable_offset(), Some(Offset(2)));
        let s = clean(&log, NOW).unwrap();
        assert_eq!((s.records_removed, s.end_offset), (1, Offset(2)));
        assert_eq!(visible(&log, false), all[1..].to_vec());
        // committed, the transaction's value is superseded by "c"; producer
        // 8 is live, so its batch stays, empty, with its marker
        end_txn(&log, 8, ControlType::Commit); // 4
        roll(&log);
        clean(&log, NOW).unwrap();
        assert_eq!(visible(&log, false), want(&[(3, "k1", "c")]));
        assert_eq!(visible(&log, true), want(&[(3, "k1", "c")]));
        assert_eq!(markers(&log), vec![(4, None)]);
    }

    /// Two identical logs holding [`interleaved`] with expired producers;
    /// the first is cleaned (its `.txnindex` becomes empty).
    fn twin_logs(root: &Path) -> (Log, Log) {
        let a = Log::open(root.join("a-0"), cfg(), false).unwrap();
        let b = Log::open(root.join("b-0"), cfg(), false).unwrap();
        for log in [&a, &b] {
            interleaved(log);
            log.expire_producers(NOW, 0);
        }
        clean(&a, NOW).unwrap();
        assert_eq!(aborted(&a), vec![]);
        assert_eq!(aborted(&b).len(), 2);
        (a, b)
    }

    #[test]
    fn crash_during_swap_keeps_the_txn_index_with_its_log() {
        let d = tempfile::tempdir().unwrap();
        let seg = format!("{:020}", 0);
        // the log file reached `.swap`: the rewrite is whole, its
        // `.txnindex.swap` replaces the old index
        let (a, b) = twin_logs(&d.path().join("whole"));
        for ext in ["log", "txnindex"] {
            fs::copy(
                a.dir().join(format!("{seg}.{ext}")),
                b.dir().join(format!("{seg}.{ext}.swap")),
            )
            .unwrap();
        }
        b.close().unwrap();
        drop(b);
        let b = Log::open(d.path().join("whole").join("b-0"), cfg(), false).unwrap();
        assert_eq!(visible(&b, false), visible(&a, false));
        assert_eq!(visible(&b, true), visible(&a, true));
        assert_eq!(aborted(&b), vec![]);
        assert!(!b.dir().join(format!("{seg}.txnindex.swap")).exists());

        // only the `.txnindex` reached `.swap`: the old log and index stay
        let (a, b) = twin_logs(&d.path().join("partial"));
        let before = visible(&b, false);
        fs::copy(
            a.dir().join(format!("{seg}.txnindex")),
            b.dir().join(format!("{seg}.txnindex.swap")),
        )
        .unwrap();
        b.close().unwrap();
        drop(b);
        let b = Log::open(d.path().join("partial").join("b-0"), cfg(), false).unwrap();
        assert_eq!(visible(&b, false), before);
        assert_eq!(aborted(&b), vec![(6, 5, 7), (5, 9, 10)]);
        assert_eq!(
            visible(&b, true),
            want(&[
                (0, "k1", "a0"),
                (1, "k2", "b0"),
                (2, "k1", "a1"),
                (3, "k2", "b1"),
                (8, "k3", "c0"),
                (11, "k2", "b2")
            ])
        );
        assert!(!b.dir().join(format!("{seg}.txnindex.swap")).exists());
    }
}
