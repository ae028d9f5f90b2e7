//! One partition's log: an ordered set of segments, the last one active.
//!
//! Concurrency (all methods take `&self`, all block):
//! ```text
//!   writer: Mutex<()>        one appender / roller / truncater at a time
//!   state:  RwLock<LogState> segment metadata; readers hold it only to take a
//!                            snapshot, the writer only to publish (never
//!                            during the data write or an fsync)
//!   sync:   Mutex<Offset>    group commit: "durable below this offset"
//! ```
//! Lock order: writer → sync → state. An append writes its bytes with one
//! positional write while holding only `writer`, then publishes size, end
//! offset and index entries under a short `state` write lock, so a reader
//! never sees bytes that are not fully written. Reads use positional reads on
//! a snapshot `(file, size)`, so they never wait for the writer.
//!
//! Invariants (checked in debug builds): flushed ≤ log end; every published
//! byte of the active segment is a whole, CRC-checked batch.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use strom_protocol::batch::{
    batch_size, BatchIter, BatchMut, BatchView, HEADER_SIZE, LOG_OVERHEAD,
};
use strom_protocol::records::decode_records;
use strom_protocol::{LeaderEpoch, Offset, ProducerId, TimestampType};
use tracing::{info, warn};

use crate::checkpoint;
use crate::index::{self, segment_path, IndexState};
use crate::producer_state::{
    self, AbortedTxn, BatchCheck, BatchProducerInfo, ProducerStateEntry, ProducerStateManager,
    StagedAppend,
};
use crate::scan::{self, pread_full, read_header, ScanOutcome};
use crate::{FetchDataInfo, FlushMode, LogAppendInfo, LogConfig, LogError, TopicPartition};

const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
pub(crate) const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";

/// The active segment's extra state: its open file and in-memory indexes.
struct Active {
    file: Arc<File>,
    idx: IndexState,
    /// Index entries already written to the `.index` / `.timeindex` files.
    index_written: usize,
    time_index_written: usize,
    /// Time `segment.ms` counts from.
    rolling_ts: Option<i64>,
}

/// One run of batches for [`Log::write_and_publish`].
struct SegmentWrite<'a> {
    /// The bytes written, from the first batch's start to the last's end.
    span: &'a [u8],
    /// `(position in span, size)` of each batch.
    batches: &'a [(usize, usize)],
    /// Each batch's header as written (offsets and epoch assigned).
    headers: &'a [[u8; HEADER_SIZE]],
    /// `(position in span, last offset, max timestamp, size)` per batch.
    metas: &'a [(u64, Offset, i64, u64)],
    /// Leader epochs starting in these batches, ascending.
    epochs: &'a [(LeaderEpoch, Offset)],
    first: Offset,
    last: Offset,
    staged: Option<StagedAppend>,
}

struct Segment {
    base: Offset,
    size: u64,
    /// Largest batch max timestamp; `i64::MIN` when unknown/empty.
    max_ts: i64,
    /// Last offset of the first batch that reached `max_ts`.
    offset_of_max_ts: Offset,
    active: Option<Active>,
}

impl Segment {
    /// A new, empty segment that takes appends.
    fn new_active(base: Offset, file: Arc<File>) -> Segment {
        Segment {
            base,
            size: 0,
            max_ts: i64::MIN,
            offset_of_max_ts: Offset::NONE,
            active: Some(Active {
                file,
                idx: IndexState::new(),
                index_written: 0,
                time_index_written: 0,
                rolling_ts: None,
            }),
        }
    }
}

struct LogState {
    segments: BTreeMap<i64, Segment>,
    log_start: Offset,
    log_end: Offset,
    epochs: Vec<(LeaderEpoch, Offset)>,
    /// Rolled segments whose data (and indexes) still need an fsync.
    pending_sync: Vec<(Offset, Arc<File>)>,
    /// A segment file was created or removed since the last directory fsync.
    dir_dirty: bool,
    /// `epochs` gained an entry the leader-epoch checkpoint lacks (a leader
    /// change or an append of a new epoch); the next flush writes it before
    /// the recovery point passes data of that epoch.
    epochs_dirty: bool,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
}

/// One partition's log (Kafka's `UnifiedLog`).
///
/// Owned by the [`crate::LogManager`] and shared as `Arc<Log>`; `Send + Sync`.
/// Every method blocks on disk I/O: call from `spawn_blocking`. After
/// [`Log::close`] appends fail with [`LogError::Closed`]; reads keep working
/// until the files are deleted.
pub struct Log {
    dir: PathBuf,
    /// Replaced whole by [`Log::set_config`]; readers take an `Arc` clone.
    config: RwLock<Arc<LogConfig>>,
    writer: Mutex<()>,
    state: RwLock<LogState>,
    sync: Mutex<Offset>,
    /// Mirror of `*sync` for lock-free policy checks.
    flushed_to: AtomicI64,
    high_watermark: AtomicI64,
    /// `i64::MIN` until the first `flush_if_due` call sets the baseline.
    last_flush_ms: AtomicI64,
    closed: AtomicBool,
    /// Segments removed from the log, renamed `.deleted`, waiting for
    /// `file.delete.delay.ms`: (due time, base offset).
    doomed: Mutex<Vec<(i64, Offset)>>,
    /// The log cleaner's position: offsets below were compacted already
    /// (Kafka's cleaner checkpoint; in memory, so a restart re-cleans once).
    pub(crate) first_dirty: AtomicI64,
    /// When the oldest tombstone the cleaner kept reaches
    /// `delete.retention.ms`, or the earliest delete horizon of a
    /// transaction marker it kept (KIP-534): a clean log is cleaned again
    /// then, to drop it. `i64::MAX`: none pending.
    pub(crate) tombstone_due: AtomicI64,
    /// Idempotence and transaction state (lock order: writer → producers;
    /// readers take it alone and briefly).
    producers: Mutex<ProducerStateManager>,
    /// First offset of the oldest open transaction; `i64::MAX`: none.
    first_unstable: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

fn corrupt_io(e: io::Error) -> LogError {
    if e.kind() == io::ErrorKind::InvalidData {
        LogError::CorruptRecord(e.to_string())
    } else {
        LogError::Io(e)
    }
}

/// Snapshot of one segment for a read outside the locks.
/// What the cleaner sees of one segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentInfo {
    pub base: Offset,
    pub size: u64,
    /// `i64::MIN` when the segment is empty.
    pub max_ts: i64,
    pub active: bool,
}

struct SegSnap {
    base: Offset,
    file: Arc<File>,
    size: u64,
    next_base: Option<i64>,
    /// Index lookup result, when it could be done in memory (active segment).
    pos: Option<u64>,
}

/// Where a snapshot's index lookup comes from.
enum IndexPos {
    /// Computed in memory (active segment).
    Known(u64),
    /// The segment's offset index, opened with its log file (None: missing).
    File(Option<File>),
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

/// Parses `<20 digits>.log` into a base offset.
fn parse_segment_name(name: &str, ext: &str) -> Option<Offset> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

impl Log {
    /// Opens (creating if absent) the log in `dir`. With `needs_recovery`
    /// (unclean shutdown) segments from the recovery point on are re-read
    /// and CRC-checked, a torn or corrupt tail is truncated (and later
    /// segments deleted), and their indexes rebuilt. The recovery point comes
    /// from `<parent>/recovery-point-offset-checkpoint` if it names this log.
    pub fn open(dir: PathBuf, config: LogConfig, needs_recovery: bool) -> Result<Log, LogError> {
        let recovery_point = if needs_recovery {
            let parent = dir.parent().map(|p| p.join(RECOVERY_POINT_CHECKPOINT));
            let tp = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(TopicPartition::from_dir_name);
            match (parent, tp) {
                (Some(p), Some(tp)) => read_recovery_points(&p)?
                    .into_iter()
                    .find(|(t, _)| *t == tp)
                    .map(|(_, o)| o),
                _ => None,
            }
        } else {
            None
        };
        Log::open_with_recovery_point(dir, config, needs_recovery, recovery_point)
    }

    /// [`Log::open`] with the recovery point given by the caller (the
    /// LogManager reads the checkpoint once for all its logs). `None` means
    /// "recover every segment".
    pub fn open_with_recovery_point(
        dir: PathBuf,
        config: LogConfig,
        needs_recovery: bool,
        recovery_point: Option<Offset>,
    ) -> Result<Log, LogError> {
        fs::create_dir_all(&dir)?;
        let mut config = config;
        config.segment_bytes = config.segment_bytes.clamp(1, i32::MAX as u64);
        let interval = config.index_interval_bytes;

        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        crate::cleaner::finish_interrupted_swaps(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(".deleted") || name.ends_with(".cleaned") || name.ends_with(".tmp") {
                // leftovers of an interrupted delete/clean/atomic write
                fs::remove_file(entry.path())?;
            } else if let Some(b) = parse_segment_name(&name, "log") {
                bases.push(b);
            } else if let Some(b) = parse_segment_name(&name, "index")
                .or_else(|| parse_segment_name(&name, "timeindex"))
            {
                index_files.push((b, entry.path()));
            }
        }
        bases.sort();
        for (b, path) in index_files {
            if bases.binary_search(&b).is_err() {
                fs::remove_file(path)?;
            }
        }
        let mut epochs = read_epoch_checkpoint(&dir)?;
        if bases.is_empty() {
            File::create(segment_path(&dir, Offset(0), "log"))?;
            index::write_index_files(&dir, Offset(0), &[], &[])?;
            checkpoint::sync_dir(&dir)?;
            bases.push(Offset(0));
        }

        let recover_from = if needs_recovery {
            let rp = recovery_point.unwrap_or(Offset(0));
            bases.iter().rposition(|b| *b <= rp).unwrap_or(0)
        } else {
            bases.len()
        };

        let mut segments = BTreeMap::new();
        // the last segment's scan, the index entries already in its files, and
        // whether the scan started at position 0
        let mut active_scan: Option<(ScanOutcome, (usize, usize), bool)> = None;
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let is_last = i + 1 == bases.len();
            let path = segment_path(&dir, base, "log");
            let file = open_rw(&path, false)?;
            let size = file.metadata()?.len();
            if i >= recover_from {
                if i == recover_from {
                    // the scan below rebuilds every epoch that starts in the
                    // recovered range (Kafka's assign during segment recovery);
                    // the checkpoint may hold stale entries there, as it is
                    // written without fsync until a flush needs it
                    epochs.retain(|(_, o)| *o < base);
                }
                let out =
                    scan::scan_segment(&file, base, 0, base, IndexState::new(), interval, true)?;
                let mut stop = false;
                if let Some(err) = &out.error {
                    warn!(
                        "truncated {} bytes of torn tail at offset {} in {}: {err}",
                        out.file_len - out.valid_bytes,
                        out.next_offset,
                        path.display()
                    );
                    file.set_len(out.valid_bytes)?;
                    stop = true;
                }
                file.sync_data()?;
                index::write_index_files(&dir, base, &out.idx.index, &out.idx.time_index)?;
                for (e, o) in &out.epochs {
                    if epochs.last().is_none_or(|(le, _)| e > le) {
                        epochs.push((*e, *o));
                    }
                }
                if stop && !is_last {
                    for later in &bases[i + 1..] {
                        warn!(
                            "deleting segment {} after corrupt tail in {}",
                            later,
                            path.display()
                        );
                        for ext in ["log", "index", "timeindex", "txnindex"] {
                            remove_if_exists(&segment_path(&dir, *later, ext))?;
                        }
                    }
                    bases.truncate(i + 1);
                    checkpoint::sync_dir(&dir)?;
                }
                let is_last = i + 1 == bases.len();
                segments.insert(
                    base.0,
                    Segment {
                        base,
                        size: out.valid_bytes,
                        max_ts: out.idx.max_ts,
                        offset_of_max_ts: out.idx.offset_of_max_ts,
                        active: None,
                    },
                );
                if is_last {
                    let written = (out.idx.index.len(), out.idx.time_index.len());
                    active_scan = Some((out, written, true));
                }
            } else if !is_last {
                let last_time = match index::check_inactive(&dir, base, size)? {
                    Some(t) => t,
                    None => {
                        info!("rebuilding indexes of {}", path.display());
                        let out = scan::scan_segment(
                            &file,
                            base,
                            0,
                            base,
                            IndexState::new(),
                            interval,
                            false,
                        )?;
                        let mut idx = out.idx;
                        idx.maybe_time_entry(base);
                        index::write_index_files(&dir, base, &idx.index, &idx.time_index)?;
                        idx.time_index.last().copied()
                    }
                };
                segments.insert(
                    base.0,
                    Segment {
                        base,
                        size,
                        max_ts: last_time.map_or(i64::MIN, |t| t.ts),
                        offset_of_max_ts: last_time
                            .map_or(Offset::NONE, |t| Offset(base.0 + t.rel as i64)),
                        active: None,
                    },
                );
            } else {
                // clean shutdown: trust the files, but check the active segment's
                // indexes and re-validate the batches after its last index entry
                let loaded = index::read_offset_index(&segment_path(&dir, base, "index"))?.zip(
                    index::read_time_index(&segment_path(&dir, base, "timeindex"))?,
                );
                let mut start = None;
                if let Some((offs, times)) = loaded {
                    let mut idx = IndexState::new();
                    idx.index = offs;
                    idx.time_index = times;
                    if let Some(t) = idx.time_index.last() {
                        idx.max_ts = t.ts;
                        idx.offset_of_max_ts = Offset(base.0 + t.rel as i64);
                    }
                    if idx.is_consistent(size) {
                        let pos = idx.index.last().map_or(0, |e| e.pos as u64);
                        let next = match idx.index.last() {
                            // the indexed batch itself is re-scanned; offsets before it are known
                            Some(_) => read_header(&file, pos, size).ok().flatten().map(|h| h.base),
                            None => Some(base),
                        };
                        if let Some(next) = next {
                            start = Some((pos, next, idx));
                        }
                    }
                }
                let (pos, next, idx, rebuilt) = match start {
                    Some((p, n, idx)) => (p, n, idx, false),
                    None => {
                        info!("rebuilding indexes of active segment {}", path.display());
                        (0, base, IndexState::new(), true)
                    }
                };
                let n_off = idx.index.len();
                let n_time = idx.time_index.len();
                let mut out = scan::scan_segment(&file, base, pos, next, idx, interval, true)?;
                let mut from_zero = pos == 0;
                if let Some(err) = out.error.clone() {
                    warn!(
                        "truncated {} bytes of torn tail at offset {} in {}: {err}",
                        out.file_len - out.valid_bytes,
                        out.next_offset,
                        path.display()
                    );
                    file.set_len(out.valid_bytes)?;
                    file.sync_data()?;
                    // rebuild the indexes from scratch so no entry points past the new end
                    out = scan::scan_segment(
                        &file,
                        base,
                        0,
                        base,
                        IndexState::new(),
                        interval,
                        false,
                    )?;
                    out.error = Some(err);
                    from_zero = true;
                }
                let written = if rebuilt || out.error.is_some() {
                    index::write_index_files(&dir, base, &out.idx.index, &out.idx.time_index)?;
                    (out.idx.index.len(), out.idx.time_index.len())
                } else {
                    (n_off, n_time)
                };
                segments.insert(
                    base.0,
                    Segment {
                        base,
                        size: out.valid_bytes,
                        max_ts: out.idx.max_ts,
                        offset_of_max_ts: out.idx.offset_of_max_ts,
                        active: None,
                    },
                );
                active_scan = Some((out, written, from_zero));
            }
            i += 1;
        }

        // make the last segment active
        let (out, (index_written, time_index_written), from_zero) =
            active_scan.expect("last segment scanned");
        let (&last_base, _) = segments.iter().next_back().expect("at least one segment");
        let base = Offset(last_base);
        let file = Arc::new(open_rw(&segment_path(&dir, base, "log"), false)?);
        let rolling_ts = if from_zero {
            out.first_batch_max_ts
        } else {
            read_header(&file, 0, out.valid_bytes)
                .ok()
                .flatten()
                .map(|h| h.max_ts)
        };
        let log_end = out.next_offset;
        let seg = segments.get_mut(&last_base).unwrap();
        seg.active = Some(Active {
            file,
            idx: out.idx,
            index_written,
            time_index_written,
            rolling_ts,
        });
        let log_start = Offset(*segments.keys().next().unwrap());
        epochs.retain(|(_, o)| *o < log_end);
        let state = LogState {
            segments,
            log_start,
            log_end,
            epochs,
            pending_sync: Vec::new(),
            dir_dirty: false,
            epochs_dirty: false,
        };
        let log = Log {
            config: RwLock::new(Arc::new(config)),
            doomed: Mutex::new(Vec::new()),
            first_dirty: AtomicI64::new(log_start.0),
            tombstone_due: AtomicI64::new(i64::MAX),
            producers: Mutex::new(ProducerStateManager::new()),
            first_unstable: AtomicI64::new(i64::MAX),
            writer: Mutex::new(()),
            sync: Mutex::new(log_end),
            flushed_to: AtomicI64::new(log_end.0),
            high_watermark: AtomicI64::new(log_end.0),
            last_flush_ms: AtomicI64::new(i64::MIN),
            closed: AtomicBool::new(false),
            state: RwLock::new(state),
            dir,
        };
        // Entries dropped only because they start at the log end (an epoch
        // that never received data, e.g. an empty partition's) are dropped
        // again at every load, so the file is left as it is: rewriting it
        // cost two fsyncs per empty partition at every start (10 s for 10,000).
        if needs_recovery {
            log.write_epoch_checkpoint()?;
        }

        log.load_producer_state(!needs_recovery)?;
        Ok(log)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's current configuration.
    pub fn config(&self) -> Arc<LogConfig> {
        read(&self.config).clone()
    }

    /// `min.insync.replicas` of the current config, read in place (Produce
    /// with `acks=all` asks on every request; no `Arc` clone).
    pub fn min_insync_replicas(&self) -> u32 {
        read(&self.config).min_insync_replicas
    }

    /// Applies a new configuration to the live log (AlterConfigs). Appends
    /// already in progress finish under the old one; the next roll,
    /// retention pass and clean use the new one.
    pub fn set_config(&self, config: LogConfig) {
        let mut config = config;
        config.segment_bytes = config.segment_bytes.clamp(1, i32::MAX as u64);
        *write(&self.config) = Arc::new(config);
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        read(&self.state).log_start
    }

    /// Offset the next append gets.
    pub fn log_end_offset(&self) -> Offset {
        read(&self.state).log_end
    }

    /// Offsets below this are durable (fsynced); recovery after a crash
    /// starts from the segment holding it.
    pub fn recovery_point(&self) -> Offset {
        Offset(self.flushed_to.load(Ordering::Acquire))
    }

    /// The high watermark. Starts at the log end offset when the log is
    /// opened; replication lowers/raises it with [`Log::update_high_watermark`].
    pub fn high_watermark(&self) -> Offset {
        Offset(self.high_watermark.load(Ordering::Acquire))
    }

    /// Sets the high watermark, clamped to `[log_start, log_end]`.
    pub fn update_high_watermark(&self, hw: Offset) {
        let st = read(&self.state);
        let hw = hw.clamp(st.log_start, st.log_end);
        self.high_watermark.store(hw.0, Ordering::Release);
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        read(&self.state).segments.values().map(|s| s.size).sum()
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        read(&self.state).segments.len()
    }

    /// The leader-epoch cache: `(epoch, first offset written in it)`.
    pub fn leader_epoch_start_offsets(&self) -> Vec<(LeaderEpoch, Offset)> {
        read(&self.state).epochs.clone()
    }

    /// OffsetForLeaderEpoch's answer for `requested`: `(largest epoch ≤
    /// requested, its end offset)`, `None` for UNDEFINED_EPOCH_OFFSET (see
    /// [`crate::leader_epoch::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let st = read(&self.state);
        crate::leader_epoch::end_offset_for(&st.epochs, requested, st.log_end)
    }

    /// Checks every batch of a produce request without touching the log.
    /// Returns `(position, size)` of each batch.
    fn validate(&self, cfg: &LogConfig, records: &[u8]) -> Result<Vec<(usize, usize)>, LogError> {
        if records.is_empty() {
            return Err(LogError::CorruptRecord("empty record set".into()));
        }
        let mut out = Vec::new();
        let mut pos = 0;
        for b in BatchIter::new(records) {
            // a batch too large to even be there is "too large", not "truncated"
            if let Err(strom_protocol::batch::BatchError::Truncated { .. }) = &b {
                if let Ok(size) = batch_size(&records[pos..]) {
                    if size > cfg.max_message_bytes {
                        return Err(LogError::RecordTooLarge {
                            size,
                            max: cfg.max_message_bytes,
                        });
                    }
                }
            }
            let b = b?;
            if b.size() > cfg.max_message_bytes {
                return Err(LogError::RecordTooLarge {
                    size: b.size(),
                    max: cfg.max_message_bytes,
                });
            }
            b.verify_crc()?;
            if b.record_count() == 0 {
                return Err(LogError::InvalidRecord(
                    "record batch has no records".into(),
                ));
            }
            if b.last_offset_delta() != b.record_count() - 1 {
                return Err(LogError::InvalidRecord(format!(
                    "record count {} disagrees with last offset delta {}",
                    b.record_count(),
                    b.last_offset_delta()
                )));
            }
            if !b.has_valid_compression() {
                return Err(LogError::InvalidRecord(format!(
                    "unknown compression codec {}",
                    b.attributes() & 0x07
                )));
            }
            if cfg.cleanup_policy.compact && !b.is_control() {
                // the cleaner keys on the record key: a keyless record could
                // never be compacted away (Kafka rejects it the same way)
                let recs = decode_records(&b)
                    .map_err(|e| LogError::CorruptRecord(format!("batch {}: {e}", out.len())))?;
                if recs.iter().any(|r| r.key.is_none()) {
                    return Err(LogError::InvalidRecord(format!(
                        "Compacted topic cannot accept message without key in topic partition {}.",
                        self.dir
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    )));
                }
            }
            out.push((pos, b.size()));
            pos += b.size();
        }
        if records.len() as u64 > cfg.segment_bytes {
            return Err(LogError::RecordBatchTooLarge {
                size: records.len(),
                max: cfg.segment_bytes,
            });
        }
        Ok(out)
    }

    /// Appends the batches of a produce request as leader: validates all of
    /// them (nothing is written on error), assigns offsets from the log end,
    /// stamps the leader epoch (and `LogAppendTime`), writes them with one
    /// write, and fsyncs per the flush mode. `records` is not modified: the
    /// patched headers are written from copies, the records verbatim.
    ///
    /// Batches with a producer id are checked against the producer state
    /// first (per batch, from the header): a retry of a batch still in the
    /// last five of its producer is acknowledged with its original offsets
    /// and not written again (`duplicate`); sequence gaps, stale epochs and
    /// transaction misuse are refused. Control batches are refused: only
    /// [`Log::append_control`] writes transaction markers.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        let info = self.append_inner(records, leader_epoch, now_ms, false)?;
        self.flush_appended(&info)?;
        Ok(info)
    }

    /// [`Log::append_as_leader`] without the flush: the batches are written
    /// and visible to [`Log::log_end_offset`], but not durable under
    /// `strom.flush.mode=always` until [`Log::flush_appended`] returns. Lets a
    /// caller write the next appends while an fsync runs (group commit).
    pub fn append_as_leader_unflushed(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        self.append_inner(records, leader_epoch, now_ms, false)
    }

    /// Applies the flush policy to an append made with
    /// [`Log::append_as_leader_unflushed`]: with `strom.flush.mode=always`,
    /// returns once everything up to the append's last offset is fsynced
    /// (one fsync covers every append written before it started; a
    /// duplicate waits for its original); with `flush.messages`, fsyncs when
    /// that many messages are unflushed.
    pub fn flush_appended(&self, info: &LogAppendInfo) -> Result<(), LogError> {
        let next = info.last_offset.plus(1);
        match self.config().flush_mode {
            FlushMode::Always => self.flush_to(next, true, false),
            FlushMode::Policy => match self.config().flush_messages {
                Some(n) if next.0 - self.flushed_to.load(Ordering::Acquire) >= n as i64 => {
                    self.flush_to(next, true, false)
                }
                _ => Ok(()),
            },
        }
    }

    /// Appends coordinator-written batches, COMMIT/ABORT markers included
    /// (Kafka's `AppendOrigin.COORDINATOR`).
    pub fn append_control(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        let info = self.append_inner(records, leader_epoch, now_ms, true)?;
        self.flush_appended(&info)?;
        Ok(info)
    }

    /// Appends batches fetched from the leader (Kafka's `appendAsFollower`):
    /// offsets and `partitionLeaderEpoch` stay as the leader wrote them (the
    /// leader-epoch cache follows the batches), CRCs are checked, and the
    /// producer state is updated without sequence validation (the leader
    /// did it), so this replica dedupes retries if it becomes the leader.
    /// Batches wholly below the log end are skipped (a refetch); a trailing
    /// partial batch is ignored. Segments roll as for the leader; the flush
    /// policy applies. `None`: nothing was appended.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<Option<LogAppendInfo>, LogError> {
        let cfg = self.config();
        let guard = lock(&self.writer);
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed(self.dir.display().to_string()));
        }
        let log_end = read(&self.state).log_end;
        // (position, size) of each batch to append
        let mut batches: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0;
        let mut next = log_end;
        for b in BatchIter::new(records) {
            let b = match b {
                Ok(b) => b,
                // a fetch response may end inside a batch
                Err(strom_protocol::batch::BatchError::Truncated { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let (p, size) = (pos, b.size());
            pos += size;
            if b.last_offset() < log_end {
                continue;
            }
            if b.base_offset() < next {
                return Err(LogError::InvalidRecord(format!(
                    "fetched batch at offset {} overlaps the log end {}",
                    b.base_offset(),
                    next
                )));
            }
            b.verify_crc()?;
            next = b.next_offset();
            batches.push((p, size));
        }
        if batches.is_empty() {
            return Ok(None);
        }
        let mut first_info: Option<LogAppendInfo> = None;
        let mut start = 0;
        while start < batches.len() {
            // one write per run of batches that fits a segment
            let mut end = start + 1;
            let mut bytes = batches[start].1 as u64;
            while end < batches.len() && bytes + batches[end].1 as u64 <= cfg.segment_bytes {
                bytes += batches[end].1 as u64;
                end += 1;
            }
            let info = self.write_replicated(&cfg, records, &batches[start..end], now_ms)?;
            match &mut first_info {
                None => first_info = Some(info),
                Some(f) => {
                    f.last_offset = info.last_offset;
                    f.max_timestamp = f.max_timestamp.max(info.max_timestamp);
                    f.record_count += info.record_count;
                    f.bytes += info.bytes;
                    f.log_start_offset = info.log_start_offset;
                }
            }
            start = end;
        }
        drop(guard);
        let info = first_info.expect("at least one batch");
        self.flush_appended(&info)?;
        Ok(Some(info))
    }

    /// Writes one run of replicated batches verbatim (writer lock held).
    fn write_replicated(
        &self,
        cfg: &LogConfig,
        records: &[u8],
        batches: &[(usize, usize)],
        now_ms: i64,
    ) -> Result<LogAppendInfo, LogError> {
        let mut headers: Vec<[u8; HEADER_SIZE]> = Vec::with_capacity(batches.len());
        let mut metas = Vec::with_capacity(batches.len());
        let mut epochs: Vec<(LeaderEpoch, Offset)> = Vec::new();
        let mut staged: Option<StagedAppend> = None;
        let mut max_ts = i64::MIN;
        let mut record_count = 0i64;
        let mut size = 0u64;
        let first = BatchView::parse(&records[batches[0].0..])?.base_offset();
        let mut last = first;
        {
            let ps = lock(&self.producers);
            for &(bpos, bsize) in batches {
                let bytes = &records[bpos..bpos + bsize];
                let v = BatchView::parse(bytes)?;
                headers.push(bytes[..HEADER_SIZE].try_into().unwrap());
                metas.push((size, v.last_offset(), v.max_timestamp(), bsize as u64));
                let e = v.partition_leader_epoch();
                if e.0 >= 0 && epochs.last().is_none_or(|(le, _)| e > *le) {
                    epochs.push((e, v.base_offset()));
                }
                let info = BatchProducerInfo::from_header(bytes);
                if info.producer_id.0 >= 0 {
                    let marker = if info.control {
                        Some(marker_of(bytes)?)
                    } else {
                        None
                    };
                    let st = staged.get_or_insert_with(StagedAppend::default);
                    ps.stage_replicated(st, &info, v.base_offset(), marker);
                }
                max_ts = max_ts.max(v.max_timestamp());
                record_count += v.record_count() as i64;
                size += bsize as u64;
                last = v.last_offset();
            }
        }
        // relative positions: the write starts at the first batch
        let origin = batches[0].0;
        let rel: Vec<(usize, usize)> = batches.iter().map(|&(p, s)| (p - origin, s)).collect();
        let end = batches.last().map_or(origin, |&(p, s)| p + s);
        let log_start = self.write_and_publish(
            cfg,
            SegmentWrite {
                span: &records[origin..end],
                batches: &rel,
                headers: &headers,
                metas: &metas,
                epochs: &epochs,
                first,
                last,
                staged,
            },
            now_ms,
        )?;
        Ok(LogAppendInfo {
            first_offset: first,
            last_offset: last,
            log_append_time: -1,
            log_start_offset: log_start,
            max_timestamp: max_ts,
            record_count,
            bytes: size as usize,
            duplicate: false,
        })
    }

    /// The tail leader and follower appends share (writer lock held): roll
    /// if the batches do not fit, write them at the active segment's end
    /// with one `pwritev` (patched headers + bodies from the caller's
    /// buffer), then publish them — new leader epochs, index entries, sizes,
    /// the log end, producer state. Returns the log start offset.
    fn write_and_publish(
        &self,
        cfg: &LogConfig,
        w: SegmentWrite<'_>,
        now_ms: i64,
    ) -> Result<Offset, LogError> {
        let size = w.span.len() as u64;
        if self.should_roll(size, w.last, now_ms) {
            self.roll(w.first)?;
        }
        // the data write: writer lock only
        let (file, pos, base) = {
            let st = read(&self.state);
            let seg = st.active();
            (
                seg.active.as_ref().unwrap().file.clone(),
                seg.size,
                seg.base,
            )
        };
        if let Err(e) = write_batches_at(&file, pos, w.span, w.batches, w.headers) {
            let _ = file.set_len(pos);
            return Err(e.into());
        }
        let log_start = {
            let mut st = write(&self.state);
            for &(e, o) in w.epochs {
                if st.epochs.last().is_none_or(|(le, _)| e > *le) {
                    st.epochs.push((e, o));
                    st.epochs_dirty = true;
                }
            }
            let seg = st.active_mut();
            let act = seg.active.as_mut().unwrap();
            for &(bpos, blast, bts, bsize) in w.metas {
                act.idx.on_batch(
                    base,
                    pos + bpos,
                    blast,
                    bts,
                    bsize,
                    cfg.index_interval_bytes,
                );
            }
            act.rolling_ts.get_or_insert(now_ms);
            seg.max_ts = act.idx.max_ts;
            seg.offset_of_max_ts = act.idx.offset_of_max_ts;
            seg.size += size;
            st.log_end = w.last.plus(1);
            st.log_start
        };
        if let Some(staged) = w.staged {
            self.apply_producers(staged, base);
        }
        Ok(log_start)
    }

    /// Records that leader epoch `epoch` starts at `offset` (Kafka's
    /// `LeaderEpochFileCache.assign`, done by a new leader at its log end),
    /// unless a later epoch is already known.
    pub fn assign_leader_epoch(&self, epoch: LeaderEpoch, offset: Offset) {
        let _guard = lock(&self.writer);
        {
            let mut st = write(&self.state);
            if epoch.0 < 0 || st.epochs.last().is_some_and(|(e, _)| *e >= epoch) {
                return;
            }
            // an earlier entry at the same offset never received data
            while st.epochs.last().is_some_and(|(_, o)| *o >= offset) {
                st.epochs.pop();
            }
            st.epochs.push((epoch, offset));
            st.epochs_dirty = true;
        }
    }

    /// Empties the log and restarts it at `offset` (a follower whose fetch
    /// offset fell below the leader's log start, Kafka's
    /// `truncateFullyAndStartAt`).
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), LogError> {
        let _guard = lock(&self.writer);
        let bases: Vec<i64> = read(&self.state).segments.keys().copied().collect();
        self.truncate_fully(offset, &bases)
    }

    /// Validates, assigns offsets and writes; no flush (see
    /// [`Log::flush_appended`]).
    fn append_inner(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
        allow_control: bool,
    ) -> Result<LogAppendInfo, LogError> {
        let cfg = self.config();
        let batches = self.validate(&cfg, records)?;
        let append_time = cfg.timestamp_type == TimestampType::LogAppendTime;
        let guard = lock(&self.writer);
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed(self.dir.display().to_string()));
        }
        let first = read(&self.state).log_end;
        let staged = match self.check_producers(records, &batches, first, allow_control)? {
            Ok(staged) => staged,
            Err(dup) => {
                return Ok(LogAppendInfo {
                    first_offset: dup.first_offset,
                    last_offset: dup.last_offset,
                    log_append_time: -1,
                    log_start_offset: read(&self.state).log_start,
                    max_timestamp: dup.timestamp,
                    record_count: 0,
                    bytes: 0,
                    duplicate: true,
                })
            }
        };
        let mut next = first;
        let mut max_ts = i64::MIN;
        let mut record_count = 0i64;
        let mut metas = Vec::with_capacity(batches.len());
        // The request's buffer stays read-only (no copy of the data): each
        // batch's header is patched in a copy and written in its place.
        let mut headers: Vec<[u8; HEADER_SIZE]> = Vec::with_capacity(batches.len());
        for &(pos, size) in &batches {
            let bytes = &records[pos..pos + size];
            let v = BatchView::parse(bytes)?;
            let mut header: [u8; HEADER_SIZE] = bytes[..HEADER_SIZE].try_into().unwrap();
            let mut m = BatchMut::new(&mut header);
            m.set_base_offset(next);
            m.set_partition_leader_epoch(leader_epoch);
            let batch_max_ts = if append_time {
                // the CRC is adjusted, not recomputed: one pass per batch
                m.set_log_append_time_detached(now_ms, size);
                now_ms
            } else {
                v.max_timestamp()
            };
            headers.push(header);
            let batch_last = next.plus(v.last_offset_delta() as i64);
            metas.push((pos as u64, batch_last, batch_max_ts, size as u64));
            max_ts = max_ts.max(batch_max_ts);
            record_count += v.record_count() as i64;
            next = batch_last.plus(1);
        }
        let last = next.plus(-1);

        let epochs = [(leader_epoch, first)];
        let log_start = self.write_and_publish(
            &cfg,
            SegmentWrite {
                span: records,
                batches: &batches,
                headers: &headers,
                metas: &metas,
                epochs: if leader_epoch.0 >= 0 { &epochs } else { &[] },
                first,
                last,
                staged,
            },
            now_ms,
        )?;
        drop(guard);

        Ok(LogAppendInfo {
            first_offset: first,
            last_offset: last,
            log_append_time: if append_time { now_ms } else { -1 },
            log_start_offset: log_start,
            max_timestamp: max_ts,
            record_count,
            bytes: records.len(),
            duplicate: false,
        })
    }

    /// Checks every producer batch of an append against the producer state.
    /// `Ok(Err(dup))`: the append is a retry of the batch `dup`.
    #[allow(clippy::type_complexity)]
    fn check_producers(
        &self,
        records: &[u8],
        batches: &[(usize, usize)],
        first: Offset,
        allow_control: bool,
    ) -> Result<Result<Option<StagedAppend>, producer_state::BatchMetadata>, LogError> {
        let mut staged: Option<StagedAppend> = None;
        let mut next = first;
        let ps = lock(&self.producers);
        for &(pos, size) in batches {
            let info = BatchProducerInfo::from_header(&records[pos..pos + size]);
            if info.control && !allow_control {
                return Err(LogError::InvalidRecord(
                    "control batches cannot be produced by clients".into(),
                ));
            }
            if info.producer_id.0 >= 0 {
                let marker = if info.control {
                    Some(marker_of(&records[pos..pos + size])?)
                } else {
                    None
                };
                let st = staged.get_or_insert_with(StagedAppend::default);
                if let BatchCheck::Duplicate(dup) = ps.check_and_stage(st, &info, next, marker)? {
                    return Ok(Err(dup));
                }
            } else if info.transactional {
                return Err(LogError::InvalidRecord(
                    "transactional batch without a producer id".into(),
                ));
            }
            next = next.plus(info.last_offset_delta as i64 + 1);
        }
        Ok(Ok(staged))
    }

    /// Applies an append's producer-state changes (writer lock held); the
    /// aborted transactions it completed go to the `.txnindex` of `segment`.
    fn apply_producers(&self, staged: StagedAppend, segment: Offset) {
        let mut ps = lock(&self.producers);
        let aborted = ps.apply(staged);
        let fu = ps.first_unstable_offset().map_or(i64::MAX, |o| o.0);
        self.first_unstable.store(fu, Ordering::Release);
        drop(ps);
        if !aborted.is_empty() {
            if let Err(e) = append_txn_index(&self.dir, segment, &aborted) {
                warn!(
                    "failed to write the transaction index of {}: {e}",
                    self.dir.display()
                );
            }
        }
    }

    /// The first offset of the oldest open transaction, if any.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        match self.first_unstable.load(Ordering::Acquire) {
            i64::MAX => None,
            o => Some(Offset(o)),
        }
    }

    /// Kafka's last stable offset: the high watermark, or the first offset
    /// of an open transaction below it.
    pub fn last_stable_offset(&self) -> Offset {
        let hw = self.high_watermark();
        Offset(hw.0.min(self.first_unstable.load(Ordering::Acquire)))
    }

    /// Aborted transactions a read_committed fetch from `from` up to
    /// `upper` must skip (`(producer id, first offset)` in Fetch).
    pub fn aborted_transactions(&self, from: Offset, upper: Offset) -> Vec<AbortedTxn> {
        lock(&self.producers).aborted_transactions(from, upper)
    }

    /// The producer state entry of `pid` (DescribeProducers, tests).
    pub fn producer_state(&self, pid: ProducerId) -> Option<ProducerStateEntry> {
        lock(&self.producers).entry(pid).copied()
    }

    /// Every producer this partition knows (DescribeProducers).
    pub fn producer_states(&self) -> Vec<ProducerStateEntry> {
        lock(&self.producers).entries().copied().collect()
    }

    /// Forgets producers idle for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        let _guard = lock(&self.writer);
        let log_start = read(&self.state).log_start;
        let mut ps = lock(&self.producers);
        ps.truncate_head(log_start);
        ps.expire(now_ms, expiration_ms)
    }

    /// Writes `<log end>.snapshot` of the producer state and removes
    /// snapshots but the newest two and those below the log start. Caller
    /// holds the writer lock.
    fn take_producer_snapshot(&self, at: Offset) -> io::Result<()> {
        let bytes = lock(&self.producers).encode_snapshot();
        checkpoint::write_atomic(&producer_state::snapshot_path(&self.dir, at), &bytes)?;
        let log_start = read(&self.state).log_start;
        let snaps = producer_state::list_snapshots(&self.dir)?;
        let keep_from = snaps.len().saturating_sub(2);
        for (i, o) in snaps.iter().enumerate() {
            if (i < keep_from && *o < at) || *o < log_start {
                remove_if_exists(&producer_state::snapshot_path(&self.dir, *o))?;
            }
        }
        Ok(())
    }

    /// Rebuilds the producer state: loads the newest snapshot at or below
    /// the log end and replays the batches after it (Kafka's
    /// `loadProducerState`). With `trust_empty` (clean shutdown) and no
    /// snapshot at all, starts empty at the log end instead of replaying
    /// the whole log. Aborted transactions come from the `.txnindex` files
    /// below the replay start and from the replay above it.
    fn load_producer_state(&self, trust_empty: bool) -> Result<(), LogError> {
        let (log_start, log_end, bases) = {
            let st = read(&self.state);
            (
                st.log_start,
                st.log_end,
                st.segments.keys().copied().collect::<Vec<_>>(),
            )
        };
        let snaps = producer_state::list_snapshots(&self.dir)?;
        let mut state = None;
        let mut from = log_start;
        for o in snaps.iter().rev() {
            let path = producer_state::snapshot_path(&self.dir, *o);
            if *o > log_end {
                remove_if_exists(&path)?;
                continue;
            }
            if *o < log_start {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| ProducerStateManager::decode_snapshot(&b))
            {
                Ok(s) => {
                    state = Some(s);
                    from = *o;
                    break;
                }
                Err(e) => {
                    warn!("ignoring producer snapshot {}: {e}", path.display());
                    remove_if_exists(&path)?;
                }
            }
        }
        if state.is_none() && trust_empty {
            from = log_end;
        }
        let mut ps = state.unwrap_or_default();
        let mut aborted = Vec::new();
        for b in &bases {
            aborted.extend(
                read_txn_index(&segment_path(&self.dir, Offset(*b), "txnindex"))?
                    .into_iter()
                    .filter(|a| a.last_offset < from),
            );
        }
        ps.set_aborted(aborted);
        let replayed = self.replay_producers(&mut ps, from, log_end)?;
        let fu = ps.first_unstable_offset().map_or(i64::MAX, |o| o.0);
        *lock(&self.producers) = ps;
        self.first_unstable.store(fu, Ordering::Release);
        if replayed > 0 || from < log_end {
            // the replayed range's `.txnindex` files now match memory
            let first_seg = bases.iter().rev().find(|b| **b <= from.0).copied();
            let all = lock(&self.producers).all_aborted().to_vec();
            for (i, b) in bases.iter().enumerate() {
                if first_seg.is_some_and(|f| *b < f) {
                    continue;
                }
                let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
                let mine: Vec<AbortedTxn> = all
                    .iter()
                    .filter(|a| a.last_offset.0 >= *b && a.last_offset.0 < end)
                    .copied()
                    .collect();
                let path = segment_path(&self.dir, Offset(*b), "txnindex");
                if mine.is_empty() {
                    remove_if_exists(&path)?;
                } else {
                    let bytes: Vec<u8> = mine.iter().flat_map(|a| a.encode()).collect();
                    checkpoint::write_atomic_no_dir_sync(&path, &bytes)?;
                }
            }
            if replayed > 0 {
                info!(
                    "rebuilt producer state of {} from offset {} ({replayed} producer batches)",
                    self.dir.display(),
                    from
                );
            }
        }
        Ok(())
    }

    /// Feeds the producer batches in `[from, end)` to `ps` as a replica
    /// would (errors are logged, not fatal). Returns how many were applied.
    fn replay_producers(
        &self,
        ps: &mut ProducerStateManager,
        from: Offset,
        end: Offset,
    ) -> Result<usize, LogError> {
        if from >= end {
            return Ok(0);
        }
        let mut key = read(&self.state)
            .segments
            .range(..=from.0)
            .next_back()
            .map(|(k, _)| *k);
        let mut n = 0;
        while let Some(k) = key {
            let Some(snap) = self.snapshot(k, Some(from))? else {
                break;
            };
            let mut pos = snap.pos.unwrap_or(0);
            let mut hdr = [0u8; strom_protocol::batch::HEADER_SIZE];
            while let Some(h) = read_header(&snap.file, pos, snap.size).map_err(corrupt_io)? {
                if h.last >= from && h.base < end {
                    pread_full(&snap.file, &mut hdr, pos)?;
                    let info = BatchProducerInfo::from_header(&hdr);
                    if info.producer_id.0 >= 0 {
                        let marker = if info.control {
                            let batch = read_batch(&snap.file, pos, h.size)?;
                            Some(marker_of(&batch)?)
                        } else {
                            None
                        };
                        let mut staged = StagedAppend::default();
                        match ps.check_and_stage(&mut staged, &info, h.base, marker) {
                            Ok(BatchCheck::Append) => {
                                ps.apply(staged);
                                n += 1;
                            }
                            Ok(BatchCheck::Duplicate(_)) => {}
                            Err(e) => warn!(
                                "producer state replay of {} at offset {}: {e}",
                                self.dir.display(),
                                h.base
                            ),
                        }
                    }
                }
                pos += h.size;
            }
            key = snap.next_base;
        }
        Ok(n)
    }

    fn should_roll(&self, bytes: u64, last: Offset, now_ms: i64) -> bool {
        let cfg = self.config();
        let st = read(&self.state);
        let seg = st.active();
        if seg.size == 0 {
            return false;
        }
        let act = seg.active.as_ref().unwrap();
        let max_index = (cfg.segment_index_bytes / index::OFFSET_ENTRY as u64).max(1) as usize;
        let max_time = (cfg.segment_index_bytes / index::TIME_ENTRY as u64).max(1) as usize;
        seg.size + bytes > cfg.segment_bytes
            || cfg
                .segment_ms
                .zip(act.rolling_ts)
                .is_some_and(|(ms, t)| now_ms.saturating_sub(t) > ms as i64)
            || act.idx.index.len() >= max_index
            || act.idx.time_index.len() >= max_time
            || last.0 - seg.base.0 > i32::MAX as i64
    }

    /// Starts a new active segment at `new_base` (the log end). Caller holds
    /// the writer lock.
    fn roll(&self, new_base: Offset) -> Result<(), LogError> {
        // Kafka snapshots producer state at every roll, so recovery replays
        // at most the active segment.
        if let Err(e) = self.take_producer_snapshot(new_base) {
            warn!(
                "failed to snapshot producer state of {}: {e}",
                self.dir.display()
            );
        }
        let file = Arc::new(open_rw(&segment_path(&self.dir, new_base, "log"), true)?);
        file.set_len(0)?;
        index::write_index_files(&self.dir, new_base, &[], &[])?;
        let mut st = write(&self.state);
        let old = st.active_mut();
        let old_base = old.base;
        let mut act = old.active.take().expect("active segment");
        act.idx.maybe_time_entry(old_base);
        if let Err(e) = index::append_entries(
            &self.dir,
            old_base,
            &act.idx.index[act.index_written..],
            &act.idx.time_index[act.time_index_written..],
        ) {
            old.active = Some(act);
            return Err(e.into());
        }
        old.max_ts = act.idx.max_ts;
        old.offset_of_max_ts = act.idx.offset_of_max_ts;
        st.pending_sync.push((old_base, act.file));
        st.segments
            .insert(new_base.0, Segment::new_active(new_base, file));
        st.dir_dirty = true;
        Ok(())
    }

    /// fsyncs up to at least `target` with group commit: if another thread's
    /// fsync already covered `target`, returns at once. With
    /// `include_active == false` only rolled segments are synced. `force`
    /// also syncs rolled segments when the offset is already covered.
    fn flush_to(&self, target: Offset, include_active: bool, force: bool) -> Result<(), LogError> {
        let mut flushed = lock(&self.sync);
        let must_sync_rolled = force && !read(&self.state).pending_sync.is_empty();
        if *flushed >= target && !must_sync_rolled {
            return Ok(());
        }
        let (pending, active, end, dir_dirty, epochs_dirty) = {
            let mut st = write(&self.state);
            let act = st.active();
            let (file, base) = (act.active.as_ref().unwrap().file.clone(), act.base);
            let end = if include_active { st.log_end } else { base };
            let dd = std::mem::take(&mut st.dir_dirty);
            let ed = std::mem::take(&mut st.epochs_dirty);
            (
                std::mem::take(&mut st.pending_sync),
                include_active.then_some(file),
                end,
                dd,
                ed,
            )
        };
        let res = (|| -> io::Result<()> {
            for (base, f) in &pending {
                f.sync_data()?;
                index::sync_index_files(&self.dir, *base)?;
            }
            if let Some(f) = &active {
                f.sync_data()?;
            }
            if epochs_dirty {
                checkpoint::write_atomic_no_dir_sync(
                    &self.dir.join(EPOCH_CHECKPOINT),
                    &checkpoint::render(&self.epoch_lines()),
                )?;
            }
            if dir_dirty || epochs_dirty {
                checkpoint::sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let mut st = write(&self.state);
            let mut pending = pending;
            pending.append(&mut st.pending_sync);
            st.pending_sync = pending;
            st.dir_dirty |= dir_dirty;
            st.epochs_dirty |= epochs_dirty;
            return Err(e.into());
        }
        if end > *flushed {
            *flushed = end;
            self.flushed_to.store(end.0, Ordering::Release);
        }
        debug_assert!(*flushed <= read(&self.state).log_end);
        Ok(())
    }

    /// fsyncs everything written so far (including segments rolled since
    /// the last flush) and advances the recovery point.
    pub fn flush(&self) -> Result<(), LogError> {
        self.flush_to(self.log_end_offset(), true, true)
    }

    /// Kafka's `flush.ms`: fsyncs when the last flush is older than
    /// `flush_ms` and there is unflushed data. Also fsyncs segments rolled
    /// since the last flush (Kafka flushes a rolled segment in the background).
    /// The first call only records `now_ms` as the baseline.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), LogError> {
        if !read(&self.state).pending_sync.is_empty() {
            let base = read(&self.state).active().base;
            self.flush_to(base, false, false)?;
        }
        let Some(ms) = self.config().flush_ms else {
            return Ok(());
        };
        let last = self.last_flush_ms.load(Ordering::Acquire);
        if last == i64::MIN {
            self.last_flush_ms.store(now_ms, Ordering::Release);
            return Ok(());
        }
        if now_ms.saturating_sub(last) >= ms as i64 {
            if self.log_end_offset() > self.recovery_point() {
                self.flush()?;
            }
            self.last_flush_ms.store(now_ms, Ordering::Release);
        }
        Ok(())
    }

    /// Takes a snapshot of the segment with base `key`, computing the index
    /// position of `target` in memory if it is the active segment.
    fn snapshot(&self, key: i64, target: Option<Offset>) -> Result<Option<SegSnap>, LogError> {
        let (base, file, size, next_base, pos) = {
            let st = read(&self.state);
            let Some(seg) = st.segments.get(&key) else {
                return Ok(None);
            };
            let next_base = st
                .segments
                .range((Bound::Excluded(key), Bound::Unbounded))
                .next()
                .map(|(k, _)| *k);
            match &seg.active {
                Some(a) => {
                    let pos = match target {
                        Some(t) => IndexPos::Known(index::lookup_offset_mem(
                            &a.idx.index,
                            t.0 - seg.base.0,
                        )),
                        None => IndexPos::File(None),
                    };
                    (seg.base, a.file.clone(), seg.size, next_base, pos)
                }
                None => {
                    // opened under the state lock: the cleaner swaps segment
                    // files under the write lock, so log and index are one
                    // generation and match `size`
                    let f = match File::open(segment_path(&self.dir, seg.base, "log")) {
                        Ok(f) => Arc::new(f),
                        // removed by a concurrent truncation or deletion
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(e.into()),
                    };
                    let idx = match target {
                        Some(_) => {
                            index::open_if_exists(&segment_path(&self.dir, seg.base, "index"))?
                        }
                        None => None,
                    };
                    (seg.base, f, seg.size, next_base, IndexPos::File(idx))
                }
            }
        };
        let pos = match (pos, target) {
            (IndexPos::Known(p), _) => Some(p),
            (IndexPos::File(Some(f)), Some(t)) => {
                Some(index::lookup_offset_open(&f, t.0 - base.0)?)
            }
            (IndexPos::File(None), Some(_)) => Some(0),
            (_, None) => None,
        };
        Ok(Some(SegSnap {
            base,
            file,
            size,
            next_base,
            pos,
        }))
    }

    /// Reads whole batches starting with the one holding `start_offset`,
    /// up to `max_bytes` (but at least one batch if `min_one_batch`), only
    /// batches that end below `max_offset`.
    pub fn read(
        &self,
        start_offset: Offset,
        max_bytes: usize,
        max_offset: Offset,
        min_one_batch: bool,
    ) -> Result<FetchDataInfo, LogError> {
        let (log_start, log_end, first_key) = {
            let st = read(&self.state);
            let key = st
                .segments
                .range(..=start_offset.0)
                .next_back()
                .map(|(k, _)| *k);
            (
                st.log_start,
                st.log_end,
                key.or_else(|| st.segments.keys().next().copied()),
            )
        };
        let hw = self.high_watermark();
        if start_offset < log_start || start_offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset: start_offset,
                log_start,
                log_end,
            });
        }
        let info = |records: Vec<u8>| FetchDataInfo {
            records: Bytes::from(records),
            high_watermark: hw,
            log_start_offset: log_start,
            log_end_offset: log_end,
        };
        let mut out: Vec<u8> = Vec::new();
        if start_offset == log_end || start_offset >= max_offset {
            return Ok(info(out));
        }
        let mut key = first_key;
        let mut first = true;
        while let Some(k) = key {
            let Some(snap) = self.snapshot(k, first.then_some(start_offset))? else {
                break;
            };
            let mut pos = snap.pos.unwrap_or(0);
            if first {
                // skip batches before the one holding start_offset
                loop {
                    match read_header(&snap.file, pos, snap.size).map_err(corrupt_io)? {
                        Some(h) if h.last < start_offset => pos += h.size,
                        Some(_) => break,
                        None => {
                            pos = snap.size;
                            break;
                        }
                    }
                }
                first = false;
            }
            let avail = snap.size.saturating_sub(pos);
            let budget = max_bytes.saturating_sub(out.len()) as u64;
            let want = avail.min(budget) as usize;
            let mut buf = pread_vec(&snap.file, want, pos)?;
            let mut p = 0usize;
            let mut done = false;
            while p + LOG_OVERHEAD <= buf.len() {
                let size = batch_size(&buf[p..])?;
                if p + size > buf.len() {
                    break;
                }
                let h = scan::parse_header(&buf[p..]).map_err(LogError::CorruptRecord)?;
                if h.last >= max_offset {
                    done = true;
                    break;
                }
                p += size;
            }
            if out.is_empty() && p == 0 && !done && min_one_batch && avail > 0 {
                // the first batch alone exceeds max_bytes: return it whole
                if let Some(h) = read_header(&snap.file, pos, snap.size).map_err(corrupt_io)? {
                    if h.last < max_offset && pos + h.size <= snap.size {
                        out = pread_vec(&snap.file, h.size as usize, pos)?;
                    }
                }
                break;
            }
            if out.is_empty() {
                // The usual case (one segment): hand the read buffer over
                // instead of copying every fetched byte a second time.
                buf.truncate(p);
                out = buf;
            } else {
                out.extend_from_slice(&buf[..p]);
            }
            if done || (p as u64) < avail {
                break;
            }
            key = snap.next_base;
        }
        Ok(info(out))
    }

    /// Kafka ListOffsets by timestamp: the earliest record whose timestamp is
    /// `>= timestamp`, as `(offset, timestamp)`.
    pub fn fetch_offset_by_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let candidates: Vec<i64> = {
            let st = read(&self.state);
            st.segments
                .values()
                .filter(|s| s.max_ts >= timestamp && s.offset_of_max_ts != Offset::NONE)
                .map(|s| s.base.0)
                .collect()
        };
        for key in candidates {
            // the time index gives a batch before which all timestamps are smaller
            let rel = {
                let st = read(&self.state);
                let Some(seg) = st.segments.get(&key) else {
                    continue;
                };
                seg.active
                    .as_ref()
                    .map(|a| index::lookup_time_mem(&a.idx.time_index, timestamp))
            };
            let rel = match rel {
                Some(r) => r,
                None => index::lookup_time_file(
                    &segment_path(&self.dir, Offset(key), "timeindex"),
                    timestamp,
                )?,
            };
            let target = Offset(key + rel.map_or(0, |r| r as i64));
            let Some(snap) = self.snapshot(key, Some(target))? else {
                continue;
            };
            let mut pos = snap.pos.unwrap_or(0);
            while let Some(h) = read_header(&snap.file, pos, snap.size).map_err(corrupt_io)? {
                if h.max_ts >= timestamp {
                    let batch = read_batch(&snap.file, pos, h.size)?;
                    let view = BatchView::parse(&batch)?;
                    let recs = decode_records(&view).map_err(|e| {
                        LogError::CorruptRecord(format!("batch at offset {}: {e}", h.base))
                    })?;
                    if let Some(r) = recs.iter().find(|r| r.timestamp >= timestamp) {
                        return Ok(Some((r.offset, r.timestamp)));
                    }
                }
                pos += h.size;
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (the earliest among equals),
    /// for ListOffsets `MAX_TIMESTAMP`.
    pub fn max_timestamp_and_offset(&self) -> Result<Option<(Offset, i64)>, LogError> {
        let best = {
            let st = read(&self.state);
            let mut best: Option<(i64, i64, Offset)> = None; // (ts, seg key, offset)
            for s in st.segments.values() {
                if s.offset_of_max_ts == Offset::NONE {
                    continue;
                }
                if best.is_none_or(|(ts, _, _)| s.max_ts > ts) {
                    best = Some((s.max_ts, s.base.0, s.offset_of_max_ts));
                }
            }
            best
        };
        let Some((ts, key, offset)) = best else {
            return Ok(None);
        };
        let Some(snap) = self.snapshot(key, Some(offset))? else {
            return Ok(None);
        };
        let mut pos = snap.pos.unwrap_or(0);
        while let Some(h) = read_header(&snap.file, pos, snap.size).map_err(corrupt_io)? {
            if h.last >= offset {
                let batch = read_batch(&snap.file, pos, h.size)?;
                let view = BatchView::parse(&batch)?;
                let recs = decode_records(&view).map_err(|e| {
                    LogError::CorruptRecord(format!("batch at offset {}: {e}", h.base))
                })?;
                let exact = recs.iter().find(|r| r.timestamp == h.max_ts);
                let best = exact.or_else(|| recs.iter().max_by_key(|r| (r.timestamp, -r.offset.0)));
                return Ok(Some(best.map_or((h.last, ts), |r| (r.offset, r.timestamp))));
            }
            pos += h.size;
        }
        Ok(None)
    }

    /// Drops every batch at or after `offset` (the batch holding `offset` is
    /// dropped whole, so the new log end may be below `offset`). Below the
    /// log start the log is emptied and restarts at `offset`.
    pub fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        let _guard = lock(&self.writer);
        let (log_start, log_end, bases) = {
            let st = read(&self.state);
            (
                st.log_start,
                st.log_end,
                st.segments.keys().copied().collect::<Vec<_>>(),
            )
        };
        if offset >= log_end {
            return Ok(());
        }
        let interval = self.config().index_interval_bytes;
        if offset <= log_start {
            return self.truncate_fully(offset, &bases);
        }
        let key = *bases
            .iter()
            .rev()
            .find(|b| **b < offset.0)
            .expect("offset > log start");
        let snap = self
            .snapshot(key, Some(offset))?
            .ok_or_else(|| LogError::LogDir("segment vanished".into()))?;
        let mut pos = snap.pos.unwrap_or(0);
        while let Some(h) = read_header(&snap.file, pos, snap.size).map_err(corrupt_io)? {
            if h.last >= offset {
                break;
            }
            pos += h.size;
        }
        let file = Arc::new(open_rw(&segment_path(&self.dir, snap.base, "log"), false)?);
        file.set_len(pos)?;
        let out = scan::scan_segment(
            &file,
            snap.base,
            0,
            snap.base,
            IndexState::new(),
            interval,
            false,
        )?;
        index::write_index_files(&self.dir, snap.base, &out.idx.index, &out.idx.time_index)?;
        let later: Vec<i64> = bases.iter().copied().filter(|b| *b > key).collect();
        let new_end = out.next_offset;
        let rolling_ts = out.first_batch_max_ts;
        {
            let mut flushed = lock(&self.sync);
            let mut st = write(&self.state);
            for b in &later {
                st.segments.remove(b);
            }
            st.pending_sync.retain(|(b, _)| b.0 < key);
            let seg = st.segments.get_mut(&key).unwrap();
            seg.size = out.valid_bytes;
            seg.max_ts = out.idx.max_ts;
            seg.offset_of_max_ts = out.idx.offset_of_max_ts;
            seg.active = Some(Active {
                file,
                index_written: out.idx.index.len(),
                time_index_written: out.idx.time_index.len(),
                idx: out.idx,
                rolling_ts,
            });
            st.log_end = new_end;
            st.epochs.retain(|(_, o)| *o < new_end);
            st.dir_dirty = true;
            if *flushed > new_end {
                *flushed = new_end;
                self.flushed_to.store(new_end.0, Ordering::Release);
            }
            let hw = self.high_watermark.load(Ordering::Acquire).min(new_end.0);
            self.high_watermark.store(hw, Ordering::Release);
        }
        for b in later {
            for ext in ["log", "index", "timeindex", "txnindex"] {
                remove_if_exists(&segment_path(&self.dir, Offset(b), ext))?;
            }
        }
        self.write_epoch_checkpoint()?;
        self.load_producer_state(false)?;
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset`.
    fn truncate_fully(&self, offset: Offset, bases: &[i64]) -> Result<(), LogError> {
        let new_base = offset.max(Offset(0));
        // the new segment may reuse a base name: remove the old files first
        for b in bases {
            for ext in ["log", "index", "timeindex", "txnindex"] {
                remove_if_exists(&segment_path(&self.dir, Offset(*b), ext))?;
            }
        }
        let file = Arc::new(open_rw(&segment_path(&self.dir, new_base, "log"), true)?);
        file.set_len(0)?;
        index::write_index_files(&self.dir, new_base, &[], &[])?;
        let mut flushed = lock(&self.sync);
        let mut st = write(&self.state);
        st.segments.clear();
        st.pending_sync.clear();
        st.segments
            .insert(new_base.0, Segment::new_active(new_base, file));
        st.log_start = new_base;
        st.log_end = new_base;
        st.epochs.clear();
        st.dir_dirty = true;
        *flushed = new_base;
        self.flushed_to.store(new_base.0, Ordering::Release);
        self.high_watermark.store(new_base.0, Ordering::Release);
        drop(st);
        drop(flushed);
        self.write_epoch_checkpoint()?;
        self.load_producer_state(false)?;
        Ok(())
    }

    /// Rolls the active segment when `segment.ms` has passed since its first
    /// append, even without a new append, so that time retention and
    /// compaction reach quiet partitions. Empty segments are never rolled.
    pub fn roll_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        let cfg = self.config();
        let _guard = lock(&self.writer);
        if self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let (due, end) = {
            let st = read(&self.state);
            let seg = st.active();
            let act = seg.active.as_ref().unwrap();
            let due = seg.size > 0
                && cfg
                    .segment_ms
                    .zip(act.rolling_ts)
                    .is_some_and(|(ms, t)| now_ms.saturating_sub(t) > ms as i64);
            (due, st.log_end)
        };
        if due {
            self.roll(end)?;
        }
        Ok(due)
    }

    /// Kafka's retention pass: deletes the oldest rolled segments while they
    /// lie wholly below the log start offset (DeleteRecords), or — with
    /// `cleanup.policy` containing `delete` — while their largest timestamp
    /// is older than `retention.ms` or the log exceeds `retention.bytes` by
    /// at least their size. Never the active segment. The log start offset
    /// moves to the first remaining segment. Returns how many were deleted.
    pub fn delete_retained_segments(&self, now_ms: i64) -> Result<usize, LogError> {
        let cfg = self.config();
        let _guard = lock(&self.writer);
        if self.closed.load(Ordering::Acquire) {
            return Ok(0);
        }
        let doomed: Vec<i64> = {
            let st = read(&self.state);
            let keys: Vec<i64> = st.segments.keys().copied().collect();
            let total: u64 = st.segments.values().map(|s| s.size).sum();
            let mut excess = cfg
                .retention_bytes
                .filter(|_| cfg.cleanup_policy.delete)
                .map(|rb| total.saturating_sub(rb));
            let mut out = Vec::new();
            for (i, seg) in st.segments.values().enumerate() {
                if seg.active.is_some() {
                    break;
                }
                let next_base = keys[i + 1];
                let below_start = next_base <= st.log_start.0;
                let by_time = cfg.cleanup_policy.delete
                    && cfg.retention_ms.is_some_and(|ms| {
                        seg.max_ts == i64::MIN || now_ms.saturating_sub(seg.max_ts) > ms
                    });
                let by_size = excess.is_some_and(|e| e >= seg.size);
                if !(below_start || by_time || by_size) {
                    break;
                }
                if let Some(e) = excess.as_mut() {
                    *e = e.saturating_sub(seg.size);
                }
                out.push(seg.base.0);
            }
            out
        };
        self.remove_segments(&doomed, now_ms, cfg.file_delete_delay_ms)?;
        Ok(doomed.len())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (at most the
    /// high watermark) and deletes the rolled segments wholly below it.
    /// Returns the new log start offset (Kafka's low watermark).
    pub fn delete_records_before(&self, offset: Offset, now_ms: i64) -> Result<Offset, LogError> {
        let cfg = self.config();
        let _guard = lock(&self.writer);
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed(self.dir.display().to_string()));
        }
        let hw = self.high_watermark();
        let doomed: Vec<i64> = {
            let mut st = write(&self.state);
            if offset.0 < 0 || offset > hw {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: st.log_start,
                    log_end: hw,
                });
            }
            if offset > st.log_start {
                st.log_start = offset;
            }
            let keys: Vec<i64> = st.segments.keys().copied().collect();
            keys.windows(2)
                .take_while(|w| w[1] <= st.log_start.0)
                .map(|w| w[0])
                .collect()
        };
        self.first_dirty.fetch_max(offset.0, Ordering::AcqRel);
        self.remove_segments(&doomed, now_ms, cfg.file_delete_delay_ms)?;
        Ok(self.log_start_offset())
    }

    /// Raises the log start offset to a checkpointed value (from Kafka's
    /// `log-start-offset-checkpoint`) if it lies inside the log.
    pub(crate) fn restore_log_start(&self, offset: Offset) {
        let mut st = write(&self.state);
        if offset > st.log_start && offset <= st.log_end {
            st.log_start = offset;
            self.first_dirty.fetch_max(offset.0, Ordering::AcqRel);
            let hw = self.high_watermark.load(Ordering::Acquire).max(offset.0);
            self.high_watermark.store(hw, Ordering::Release);
        }
    }

    /// Takes rolled segments out of the log (caller holds the writer lock):
    /// they vanish from the state first, then their files are renamed
    /// `.deleted` (readers that already opened them finish undisturbed) and
    /// removed by [`Log::delete_expired_files`] after `delay_ms`.
    pub(crate) fn remove_segments(
        &self,
        bases: &[i64],
        now_ms: i64,
        delay_ms: i64,
    ) -> Result<(), LogError> {
        if bases.is_empty() {
            return Ok(());
        }
        {
            let mut st = write(&self.state);
            for b in bases {
                debug_assert!(st.segments.get(b).is_some_and(|s| s.active.is_none()));
                st.segments.remove(b);
            }
            let first = Offset(*st.segments.keys().next().expect("active segment remains"));
            if st.log_start < first {
                st.log_start = first;
            }
            st.pending_sync.retain(|(b, _)| !bases.contains(&b.0));
            st.dir_dirty = true;
            let hw = self
                .high_watermark
                .load(Ordering::Acquire)
                .max(st.log_start.0);
            self.high_watermark.store(hw, Ordering::Release);
            self.first_dirty.fetch_max(st.log_start.0, Ordering::AcqRel);
        }
        for b in bases {
            for ext in ["log", "index", "timeindex", "txnindex"] {
                let path = segment_path(&self.dir, Offset(*b), ext);
                let mut doomed = path.as_os_str().to_owned();
                doomed.push(".deleted");
                match fs::rename(&path, &doomed) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            info!(
                "scheduled segment {} of {} for deletion",
                b,
                self.dir.display()
            );
        }
        checkpoint::sync_dir(&self.dir)?;
        lock(&self.doomed).extend(
            bases
                .iter()
                .map(|b| (now_ms.saturating_add(delay_ms), Offset(*b))),
        );
        Ok(())
    }

    /// Removes `.deleted` segment files whose `file.delete.delay.ms` passed.
    pub fn delete_expired_files(&self, now_ms: i64) -> Result<usize, LogError> {
        let due: Vec<Offset> = {
            let mut d = lock(&self.doomed);
            let (due, keep): (Vec<_>, Vec<_>) = d.drain(..).partition(|(t, _)| *t <= now_ms);
            *d = keep;
            due.into_iter().map(|(_, b)| b).collect()
        };
        for b in &due {
            for ext in ["log", "index", "timeindex", "txnindex"] {
                remove_if_exists(&segment_path(&self.dir, *b, &format!("{ext}.deleted")))?;
            }
        }
        Ok(due.len())
    }

    /// The segments as the cleaner and retention see them, oldest first.
    pub(crate) fn segment_infos(&self) -> (Vec<SegmentInfo>, Offset) {
        let st = read(&self.state);
        let infos = st
            .segments
            .values()
            .map(|s| SegmentInfo {
                base: s.base,
                size: s.size,
                max_ts: s.max_ts,
                active: s.active.is_some(),
            })
            .collect();
        (infos, st.log_start)
    }

    /// Opens a rolled segment's log file for the cleaner: `(file, size)`.
    pub(crate) fn open_segment(&self, base: Offset) -> Result<Option<(Arc<File>, u64)>, LogError> {
        Ok(self.snapshot(base.0, None)?.map(|s| (s.file, s.size)))
    }

    /// Swaps in a cleaned segment (its `.swap` files are complete and
    /// fsynced), or removes the segment when cleaning left it empty
    /// (`replacement == None`). `aborted`: the segment's aborted
    /// transactions from now on (its `.txnindex`). Aborts (returns false) if
    /// the segment changed since the cleaner read it (deleted by retention,
    /// truncated).
    pub(crate) fn replace_segment(
        &self,
        base: Offset,
        read_size: u64,
        replacement: Option<(u64, i64, Offset)>,
        aborted: &[AbortedTxn],
        now_ms: i64,
    ) -> Result<bool, LogError> {
        let delay = self.config().file_delete_delay_ms;
        let _guard = lock(&self.writer);
        let unchanged = read(&self.state)
            .segments
            .get(&base.0)
            .is_some_and(|s| s.active.is_none() && s.size == read_size);
        if !unchanged || self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let end = read(&self.state)
            .segments
            .range(base.0 + 1..)
            .next()
            .map_or(Offset(i64::MAX), |(b, _)| Offset(*b));
        // read_committed fetches see the cleaned `.txnindex` at once
        lock(&self.producers).replace_aborted(base, end, aborted);
        let Some((size, max_ts, offset_of_max_ts)) = replacement else {
            self.remove_segments(&[base.0], now_ms, delay)?;
            return Ok(true);
        };
        {
            let mut st = write(&self.state);
            // the log file last: recovery treats a remaining `.log.swap` as
            // "finish the swap and rebuild the indexes"
            for ext in ["index", "timeindex", "txnindex", "log"] {
                let to = segment_path(&self.dir, base, ext);
                match fs::rename(crate::cleaner::swap_path(&to), &to) {
                    // a rewrite without a `.txnindex`
                    Err(e) if ext == "txnindex" && e.kind() == io::ErrorKind::NotFound => {}
                    r => r?,
                }
            }
            let seg = st.segments.get_mut(&base.0).expect("checked above");
            seg.size = size;
            seg.max_ts = max_ts;
            seg.offset_of_max_ts = offset_of_max_ts;
        }
        checkpoint::sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Flushes, writes the active segment's pending index entries (ending
    /// with its max-timestamp entry) and the leader-epoch checkpoint. Later
    /// appends fail with [`LogError::Closed`].
    pub fn close(&self) -> Result<(), LogError> {
        let _guard = lock(&self.writer);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let mut st = write(&self.state);
            let seg = st.active_mut();
            let base = seg.base;
            let act = seg.active.as_mut().unwrap();
            act.idx.maybe_time_entry(base);
            // unchanged index files were synced when written (last close,
            // roll or recovery): a partition without new entries skips this
            if act.index_written < act.idx.index.len()
                || act.time_index_written < act.idx.time_index.len()
            {
                index::append_entries(
                    &self.dir,
                    base,
                    &act.idx.index[act.index_written..],
                    &act.idx.time_index[act.time_index_written..],
                )?;
                act.index_written = act.idx.index.len();
                act.time_index_written = act.idx.time_index.len();
                index::sync_index_files(&self.dir, base)?;
            }
        }
        // writes the leader-epoch checkpoint too if data came after its last
        // change; an epoch still unwritten after this never received data,
        // and the next load would drop it anyway
        self.flush()?;
        let end = self.log_end_offset();
        // Kafka's takeSnapshot: nothing new since the snapshot at the log end
        if !producer_state::snapshot_path(&self.dir, end).exists() {
            self.take_producer_snapshot(end)?;
        }
        Ok(())
    }

    /// Marks the log closed without flushing (its directory is about to be deleted).
    pub(crate) fn mark_closed(&self) {
        let _guard = lock(&self.writer);
        self.closed.store(true, Ordering::Release);
    }

    fn epoch_lines(&self) -> Vec<String> {
        read(&self.state)
            .epochs
            .iter()
            .map(|(e, o)| format!("{} {}", e.0, o.0))
            .collect()
    }

    fn write_epoch_checkpoint(&self) -> io::Result<()> {
        checkpoint::write_atomic(
            &self.dir.join(EPOCH_CHECKPOINT),
            &checkpoint::render(&self.epoch_lines()),
        )
    }
}

/// Writes the batches of `records` at `pos` with one `pwritev` (more only
/// past `IOV_MAX` pieces or on a short write): each batch's first
/// [`HEADER_SIZE`] bytes come from `headers`, the rest from `records`.
fn write_batches_at(
    file: &File,
    mut pos: u64,
    records: &[u8],
    batches: &[(usize, usize)],
    headers: &[[u8; HEADER_SIZE]],
) -> io::Result<()> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(2 * batches.len());
    for (&(bpos, size), header) in batches.iter().zip(headers) {
        iov.push(IoSlice::new(header));
        if size > HEADER_SIZE {
            iov.push(IoSlice::new(&records[bpos + HEADER_SIZE..bpos + size]));
        }
    }
    // Linux's IOV_MAX.
    const IOV_MAX: usize = 1024;
    let mut rest: &mut [IoSlice<'_>] = &mut iov;
    while !rest.is_empty() {
        let n = rest.len().min(IOV_MAX);
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and the
        // slices borrow live buffers for the duration of the call.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                rest.as_ptr() as *const libc::iovec,
                n as libc::c_int,
                pos as libc::off_t,
            )
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        pos += written as u64;
        IoSlice::advance_slices(&mut rest, written as usize);
    }
    Ok(())
}

/// Reads up to `len` bytes at `pos` (fewer only at the end of the file)
/// into a new buffer without zeroing it first: the fetch path reads
/// megabytes per request, and the memset cost as much as the copy.
fn pread_vec(file: &File, len: usize, pos: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let spare = buf.spare_capacity_mut();
        // SAFETY: the kernel writes at most `spare.len()` bytes into the
        // spare capacity; only the bytes it reports written become part of
        // the vector.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr() as *mut libc::c_void,
                spare.len(),
                (pos + buf.len() as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: `n` bytes were just initialized by pread.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok(buf)
}

fn read_batch(file: &File, pos: u64, size: u64) -> Result<Vec<u8>, LogError> {
    let mut b = vec![0u8; size as usize];
    let n = pread_full(file, &mut b, pos)?;
    if n < b.len() {
        return Err(LogError::CorruptRecord(format!(
            "batch at position {pos} truncated"
        )));
    }
    Ok(b)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_epoch_checkpoint(dir: &Path) -> io::Result<Vec<(LeaderEpoch, Offset)>> {
    let path = dir.join(EPOCH_CHECKPOINT);
    let lines = match checkpoint::parse(&path)? {
        None => return Ok(Vec::new()),
        Some(Err(e)) => {
            warn!("ignoring malformed {}: {e}", path.display());
            return Ok(Vec::new());
        }
        Some(Ok(l)) => l,
    };
    let mut out: Vec<(LeaderEpoch, Offset)> = Vec::new();
    for l in lines {
        let mut it = l.split_whitespace();
        match (
            it.next().and_then(|e| e.parse().ok()),
            it.next().and_then(|o| o.parse().ok()),
        ) {
            (Some(e), Some(o))
                if out
                    .last()
                    .is_none_or(|(le, lo)| LeaderEpoch(e) > *le && Offset(o) >= *lo) =>
            {
                out.push((LeaderEpoch(e), Offset(o)))
            }
            _ => {
                warn!("ignoring malformed {}: bad line {l:?}", path.display());
                return Ok(Vec::new());
            }
        }
    }
    Ok(out)
}

/// Parses a log dir's `recovery-point-offset-checkpoint`. Malformed files
/// are ignored with a warning (recovery then scans everything).
pub(crate) fn read_recovery_points(path: &Path) -> io::Result<Vec<(TopicPartition, Offset)>> {
    let lines = match checkpoint::parse(path)? {
        None => return Ok(Vec::new()),
        Some(Err(e)) => {
            warn!("ignoring malformed {}: {e}", path.display());
            return Ok(Vec::new());
        }
        Some(Ok(l)) => l,
    };
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let mut it = l.split_whitespace();
        match (
            it.next(),
            it.next().and_then(|p| p.parse().ok()),
            it.next().and_then(|o| o.parse().ok()),
        ) {
            (Some(t), Some(p), Some(o)) => out.push((TopicPartition::new(t, p), Offset(o))),
            _ => {
                warn!("ignoring malformed {}: bad line {l:?}", path.display());
                return Ok(Vec::new());
            }
        }
    }
    Ok(out)
}

/// The marker of a control batch (its one record's key and value).
fn marker_of(batch: &[u8]) -> Result<producer_state::Marker, LogError> {
    let view = BatchView::parse(batch)?;
    let recs = decode_records(&view)
        .map_err(|e| LogError::CorruptRecord(format!("control batch: {e}")))?;
    recs.first()
        .and_then(|r| producer_state::parse_marker(r.key.as_deref(), r.value.as_deref()))
        .ok_or_else(|| LogError::InvalidRecord("control batch without a valid marker".into()))
}

fn read_txn_index(path: &Path) -> io::Result<Vec<AbortedTxn>> {
    match fs::read(path) {
        Ok(b) => Ok(b
            .chunks_exact(producer_state::TXN_ENTRY)
            .map(AbortedTxn::decode)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn append_txn_index(dir: &Path, segment: Offset, aborted: &[AbortedTxn]) -> io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, segment, "txnindex"))?;
    for a in aborted {
        f.write_all(&a.encode())?;
    }
    Ok(())
}
