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
//! Crash safety (Kafka's protocol): a segment is rewritten into
//! `<base>.{log,index,timeindex}.cleaned`, fsynced, renamed to `.swap`
//! (index files first, the log file last), then under the log's locks
//! renamed over the live files (log file last). At open,
//! [`finish_interrupted_swaps`] discards `.cleaned` files, completes a
//! `<base>.log.swap` (the rewrite was whole) and drops any index files it
//! cannot vouch for so they are rebuilt from the log. A reader opens a
//! segment's files under the state lock the swap holds, so it never sees a
//! half-cleaned segment.

use std::collections::HashMap;
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
    let mut rebuild = Vec::new();
    for stem in &swaps {
        let (base, ext) = stem.rsplit_once('.').unwrap_or((stem.as_str(), ""));
        let target = dir.join(stem);
        if ext == "log" {
            warn!("completing interrupted compaction of {}", target.display());
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
    // rolled segments old enough to compact: [0, n_cleanable)
    let n_cleanable = segments
        .iter()
        .position(|s| {
            s.active
                || (cfg.min_compaction_lag_ms > 0
                    && s.max_ts != i64::MIN
                    && now_ms.saturating_sub(s.max_ts) < cfg.min_compaction_lag_ms)
        })
        .unwrap_or(segments.len());
    let cleanable = &segments[..n_cleanable];
    let next_base =
        |i: usize| -> Offset { segments.get(i + 1).map_or(Offset(i64::MAX), |s| s.base) };
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

    // 2. the offset map over whole dirty segments
    map.clear();
    let mut map_end = first_dirty;
    for &(i, seg) in &dirty {
        let mut full = false;
        for_each_batch(log, seg.base, |b| {
            let view = BatchView::parse(b)?;
            if view.is_control() || view.last_offset() < first_dirty || full {
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
    if map_end == first_dirty && !dirty.is_empty() && !tombstones_due {
        warn!(
            "log cleaner: one segment of {} has more keys than the offset map holds ({}); raise log.cleaner.dedupe.buffer.size",
            log.dir().display(),
            map.capacity()
        );
        return Ok(None);
    }

    // 3. rewrite the rolled segments below map_end
    let tombstone_horizon = now_ms.saturating_sub(cfg.delete_retention_ms);
    let mut stats = CleanStats {
        end_offset: map_end,
        ..CleanStats::default()
    };
    // the earliest record timestamp of a tombstone kept by this pass
    let mut kept_tombstone = i64::MAX;
    for (i, seg) in cleanable.iter().enumerate() {
        if seg.base >= map_end {
            break;
        }
        if cancel.load(Ordering::Acquire) {
            return Ok(Some(stats));
        }
        // the segment holding the log's last batch (only empty ones follow)
        let tail = segments[i + 1..].iter().all(|s| s.size == 0);
        clean_segment(
            log,
            seg.base,
            map,
            tombstone_horizon,
            now_ms,
            tail,
            &mut stats,
            &mut kept_tombstone,
        )?;
    }
    log.first_dirty.fetch_max(map_end.0, Ordering::AcqRel);
    log.tombstone_due.store(
        kept_tombstone
            .saturating_add(cfg.delete_retention_ms)
            .max(now_ms + 1),
        Ordering::Release,
    );
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

/// Rewrites one segment (see the module docs); no-op if nothing is removed.
/// With `tail`, the segment holds the log's last batch, which is kept
/// (emptied) if its records go.
fn clean_segment(
    log: &Log,
    base: Offset,
    map: &OffsetMap,
    tombstone_horizon: i64,
    now_ms: i64,
    tail: bool,
    stats: &mut CleanStats,
    kept_tombstone: &mut i64,
) -> Result<(), LogError> {
    let mut out: Vec<u8> = Vec::new();
    let mut removed = 0u64;
    // The last batch of the log is never removed (as Kafka's cleaner keeps
    // it): emptied, it stays as a batch without records, so a consumer
    // still reads up to the high watermark. Set while the segment's last
    // batch read so far was dropped whole.
    let mut dropped_last: Option<Vec<u8>> = None;
    let mut keep = |r: &Record| -> bool {
        let Some(k) = &r.key else {
            return true;
        };
        if map.get(k).is_some_and(|latest| latest > r.offset.0) {
            return false;
        }
        if r.value.is_none() {
            if r.timestamp <= tombstone_horizon {
                return false;
            }
            *kept_tombstone = (*kept_tombstone).min(r.timestamp);
        }
        true
    };
    let read_size = for_each_batch(log, base, |b| {
        let view = BatchView::parse(b)?;
        dropped_last = None;
        if view.is_control() {
            out.extend_from_slice(b);
            return Ok(());
        }
        let records = decode(&view, log)?;
        let total = records.len();
        let kept: Vec<Record> = records.into_iter().filter(|r| keep(r)).collect();
        removed += (total - kept.len()) as u64;
        if kept.len() == total {
            out.extend_from_slice(b);
        } else if kept.is_empty() {
            if tail {
                let opts = BatchOptions {
                    compression: Compression::None,
                    ..batch_options(&view)
                };
                let mut nb = encode_batch_with(&[], &opts);
                BatchMut::new(&mut nb).set_last_offset_delta(view.last_offset_delta());
                dropped_last = Some(nb);
            }
        } else {
            let mut nb = encode_batch_with(
                &kept,
                &BatchOptions {
                    compression: view.compression(),
                    base_offset: view.base_offset(),
                    partition_leader_epoch: view.partition_leader_epoch(),
                    timestamp_type: view.timestamp_type(),
                    producer_id: view.producer_id(),
                    producer_epoch: view.producer_epoch(),
                    base_sequence: view.base_sequence(),
                    transactional: view.is_transactional(),
                    control: false,
                },
            );
            BatchMut::new(&mut nb).set_last_offset_delta(view.last_offset_delta());
            out.extend_from_slice(&nb);
        }
        Ok(())
    })?;
    let Some(read_size) = read_size else {
        return Ok(()); // deleted meanwhile
    };
    if let Some(empty) = dropped_last {
        out.extend_from_slice(&empty);
    }
    if removed == 0 {
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
            for p in [&log_path] {
                let _ = fs::remove_file(cleaned_path(p));
            }
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
        for p in [&idx_path, &time_path, &log_path] {
            fs::rename(cleaned_path(p), swap_path(p))?;
        }
        checkpoint::sync_dir(dir)?;
        Some((out.len() as u64, idx.max_ts, idx.offset_of_max_ts))
    };
    if log.replace_segment(base, read_size, replacement, now_ms)? {
        stats.segments += 1;
        stats.bytes_before += read_size;
        stats.bytes_after += out.len() as u64;
        stats.records_removed += removed;
    } else {
        for ext in ["index", "timeindex", "log"] {
            let _ = fs::remove_file(swap_path(&segment_path(dir, base, ext)));
        }
    }
    Ok(())
}
