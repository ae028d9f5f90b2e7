//! The metadata log on disk: openraft's [`RaftLogStorage`] over segment files
//! in `<metadata.log.dir>/__cluster_metadata-0/`.
//!
//! Layout (Kafka's names where Kafka has one):
//! - `<20-digit first index>.log`: segments of frames
//!   `[u32 BE length][u32 BE CRC-32C of payload][payload = JSON Entry]`,
//!   rolled at `segment_bytes`;
//! - `quorum-state`: the vote (term + voted-for + committed flag), replaced
//!   atomically (temp file, fsync, rename, fsync dir) before it is used;
//! - `log-start-offset`: the last purged log id, so a purged prefix stays
//!   purged even if its segment file outlived the purge;
//! - `committed`: the last committed log id, a hint that lets a restarted node
//!   re-apply its own committed entries before hearing from a leader.
//!
//! Owner: openraft's log task (append, truncate, purge, vote) plus any number
//! of [`LogReader`]s (replication streams). The non-purged entries are also
//! held in memory — snapshots keep the metadata log short — so readers never
//! touch the files; they share that cache behind an `RwLock`, and the writer
//! updates it only after the bytes are fsynced.
//!
//! Recovery on open scans every segment; the first frame with a bad length,
//! CRC, encoding or a non-contiguous index ends the log: the segment is
//! truncated there and later segments are deleted (a torn tail after a crash,
//! as in the partition log). Nothing after that point was acknowledged,
//! because appends report success to openraft only after `fsync`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::TypeConfig;

/// Node ids inside openraft (Kafka's `node.id`, never negative).
pub(crate) type Nid = u64;
type LogEntry = Entry<TypeConfig>;

const FRAME_HEADER: usize = 8;
/// Bigger frames are corruption, not entries: a metadata batch is small.
const MAX_ENTRY_BYTES: usize = 64 << 20;
const VOTE_FILE: &str = "quorum-state";
const PURGED_FILE: &str = "log-start-offset";
const COMMITTED_FILE: &str = "committed";
/// The hint is padded to a fixed size so a shorter value overwrites a longer one.
const COMMITTED_BYTES: usize = 128;

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync
/// the directory, so a crash leaves either the old or the new content.
pub(crate) fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durable: bool,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("openraft and record types serialize to JSON")
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// One segment file and where each of its entries starts.
struct Segment {
    base: u64,
    path: PathBuf,
    len: u64,
    /// Entry index → byte position of its frame.
    positions: BTreeMap<u64, u64>,
}

/// State only the writer (openraft's log task) touches.
struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// Open handle on the last segment.
    active: Option<File>,
}

/// The entries readers see: exactly the durable, non-purged log.
#[derive(Default)]
struct Cache {
    entries: BTreeMap<u64, LogEntry>,
    last_purged: Option<LogId<Nid>>,
}

/// The metadata log; see the module doc.
pub struct LogStore {
    writer: Arc<Mutex<Writer>>,
    cache: Arc<RwLock<Cache>>,
    vote: Option<Vote<Nid>>,
    /// The `committed` hint, rewritten in place (see `save_committed`).
    committed: Arc<File>,
}

/// A reader of the log for one replication stream.
#[derive(Clone)]
pub struct LogReader {
    cache: Arc<RwLock<Cache>>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, truncating a torn tail.
    pub fn open(dir: &Path, segment_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let vote: Option<Vote<Nid>> = read_json(&dir.join(VOTE_FILE))?;
        let last_purged: Option<LogId<Nid>> = read_json(&dir.join(PURGED_FILE))?;
        let mut bases = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|b| b.parse::<u64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let mut cache = Cache {
            entries: BTreeMap::new(),
            last_purged,
        };
        let mut segments = Vec::new();
        let mut next_index: Option<u64> = None;
        let mut broken = false;
        for base in bases {
            let path = dir.join(segment_name(base));
            if broken {
                tracing::warn!(path = %path.display(), "deleting metadata log segment after a corrupt one");
                std::fs::remove_file(&path)?;
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut seg = Segment {
                base,
                path,
                len: 0,
                positions: BTreeMap::new(),
            };
            let mut pos = 0usize;
            while pos < bytes.len() {
                let Some(entry) = decode_frame(&bytes[pos..]) else {
                    broken = true;
                    break;
                };
                let (entry, frame_len) = entry;
                let index = entry.get_log_id().index;
                let expected = next_index.unwrap_or(base);
                if index != expected || (seg.positions.is_empty() && index != base) {
                    broken = true;
                    break;
                }
                seg.positions.insert(index, pos as u64);
                next_index = Some(index + 1);
                if last_purged.is_none_or(|p| index > p.index) {
                    cache.entries.insert(index, entry);
                }
                pos += frame_len;
            }
            if broken {
                tracing::warn!(
                    path = %seg.path.display(),
                    valid_bytes = pos,
                    file_bytes = bytes.len(),
                    "metadata log: truncating at the first bad entry"
                );
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(pos as u64)?;
                f.sync_all()?;
            }
            seg.len = pos as u64;
            if seg.positions.is_empty() {
                // An empty segment has no entries to name it by: drop it.
                std::fs::remove_file(&seg.path)?;
            } else {
                segments.push(seg);
            }
        }
        // Segments wholly purged (a crash between recording a purge and
        // deleting its files) go now: the next append must continue a
        // segment that holds the entry just before it, or start a new one.
        if let Some(p) = last_purged {
            while segments.first().is_some_and(|s| {
                s.positions
                    .keys()
                    .next_back()
                    .is_some_and(|&l| l <= p.index)
            }) {
                std::fs::remove_file(&segments.remove(0).path)?;
            }
        }
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(p);
            }
        }
        let active = match segments.last() {
            Some(s) => Some(OpenOptions::new().append(true).open(&s.path)?),
            None => None,
        };
        Ok(Self {
            writer: Arc::new(Mutex::new(Writer {
                dir: dir.to_path_buf(),
                segment_bytes,
                segments,
                active,
            })),
            cache: Arc::new(RwLock::new(cache)),
            vote,
            committed: Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join(COMMITTED_FILE))?,
            ),
        })
    }

    /// Appends entries durably (written and fsynced before returning).
    pub(crate) fn append_sync(&self, entries: Vec<LogEntry>) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut w = self.writer.lock().unwrap();
        let w = &mut *w;
        let mut buf = Vec::new();
        let mut pending: Vec<(u64, u64)> = Vec::new();
        for e in &entries {
            let index = e.get_log_id().index;
            let need_roll = match w.segments.last() {
                None => true,
                // Never roll an empty segment: one oversized entry still fits.
                Some(s) => {
                    s.len + buf.len() as u64 >= w.segment_bytes
                        && !(s.positions.is_empty() && pending.is_empty())
                }
            };
            if need_roll {
                w.flush_pending(&mut buf, &mut pending)?;
                let path = w.dir.join(segment_name(index));
                let f = OpenOptions::new().create(true).append(true).open(&path)?;
                // A leftover of an earlier incarnation of this segment is not ours.
                f.set_len(0)?;
                File::open(&w.dir)?.sync_all()?;
                w.segments.push(Segment {
                    base: index,
                    path,
                    len: 0,
                    positions: BTreeMap::new(),
                });
                w.active = Some(f);
            }
            let payload = to_json(e);
            let start = w.segments.last().unwrap().len + buf.len() as u64;
            buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            buf.extend_from_slice(&payload);
            pending.push((index, start));
        }
        w.flush_pending(&mut buf, &mut pending)?;
        let mut cache = self.cache.write().unwrap();
        for e in entries {
            cache.entries.insert(e.get_log_id().index, e);
        }
        Ok(())
    }

    /// Removes every entry with index >= `index` (a conflict with the leader).
    pub(crate) fn truncate_sync(&self, index: u64) -> std::io::Result<()> {
        // Readers must stop seeing the entries before their bytes go.
        self.cache.write().unwrap().entries.split_off(&index);
        let mut w = self.writer.lock().unwrap();
        while let Some(seg) = w.segments.last_mut() {
            if seg.base >= index {
                let path = seg.path.clone();
                w.segments.pop();
                w.active = None;
                std::fs::remove_file(&path)?;
                continue;
            }
            if let Some(&pos) = seg.positions.get(&index) {
                seg.positions.split_off(&index);
                seg.len = pos;
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(pos)?;
                f.sync_all()?;
            }
            break;
        }
        let reopen = w.segments.last().map(|s| s.path.clone());
        w.active = match reopen {
            Some(p) => Some(OpenOptions::new().append(true).open(p)?),
            None => None,
        };
        File::open(&w.dir)?.sync_all()?;
        Ok(())
    }

    /// Drops entries up to and including `log_id` (already in a snapshot).
    pub(crate) fn purge_sync(&self, log_id: LogId<Nid>) -> std::io::Result<()> {
        let w = self.writer.lock().unwrap();
        // Record the purge first: segments it leaves behind after a crash are
        // skipped on open.
        write_atomically(&w.dir, PURGED_FILE, &to_json(&log_id), true)?;
        {
            let mut cache = self.cache.write().unwrap();
            cache.entries = cache.entries.split_off(&(log_id.index + 1));
            cache.last_purged = Some(log_id);
        }
        let mut w = w;
        // Whole segments go; the one holding the first kept entry stays. When
        // everything is purged (a snapshot installed past our log end) no
        // segment stays, so the next append starts a fresh, contiguous one.
        while w.segments.first().is_some_and(|s| {
            s.positions
                .keys()
                .next_back()
                .is_none_or(|&l| l <= log_id.index)
        }) {
            let seg = w.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
        }
        if w.segments.is_empty() {
            w.active = None;
        }
        Ok(())
    }

    /// Number of segment files (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.writer.lock().unwrap().segments.len()
    }

    fn dir(&self) -> PathBuf {
        self.writer.lock().unwrap().dir.clone()
    }

    fn log_state(&self) -> LogState<TypeConfig> {
        let cache = self.cache.read().unwrap();
        let last = cache.entries.values().next_back().map(|e| *e.get_log_id());
        LogState {
            last_purged_log_id: cache.last_purged,
            last_log_id: last.or(cache.last_purged),
        }
    }
}

impl Writer {
    fn flush_pending(
        &mut self,
        buf: &mut Vec<u8>,
        pending: &mut Vec<(u64, u64)>,
    ) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let f = self
            .active
            .as_mut()
            .expect("a segment is open while entries are pending");
        f.write_all(buf)?;
        f.sync_data()?;
        let seg = self.segments.last_mut().unwrap();
        seg.len += buf.len() as u64;
        seg.positions.extend(pending.drain(..));
        buf.clear();
        Ok(())
    }
}

/// Decodes one frame; `None` when it is torn, corrupt or not an entry.
fn decode_frame(bytes: &[u8]) -> Option<(LogEntry, usize)> {
    if bytes.len() < FRAME_HEADER {
        return None;
    }
    let len = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
    if len > MAX_ENTRY_BYTES || bytes.len() < FRAME_HEADER + len {
        return None;
    }
    let payload = &bytes[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let entry = serde_json::from_slice(payload).ok()?;
    Some((entry, FRAME_HEADER + len))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}

fn read_range(cache: &RwLock<Cache>, range: impl RangeBounds<u64>) -> Vec<LogEntry> {
    cache
        .read()
        .unwrap()
        .entries
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<Nid>> {
        Ok(read_range(&self.cache, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError<Nid>> {
        Ok(read_range(&self.cache, range))
    }
}

/// Shares the store with a blocking task (the writer lock serializes).
fn shared(s: &LogStore) -> LogStore {
    LogStore {
        writer: s.writer.clone(),
        cache: s.cache.clone(),
        vote: s.vote,
        committed: s.committed.clone(),
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<Nid>> {
        Ok(self.log_state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            cache: self.cache.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<Nid>) -> Result<(), StorageError<Nid>> {
        // openraft requires the vote durable before it is acted upon.
        let dir = self.dir();
        let bytes = to_json(vote);
        blocking(move || write_atomically(&dir, VOTE_FILE, &bytes, true))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Nid>>, StorageError<Nid>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<Nid>>,
    ) -> Result<(), StorageError<Nid>> {
        // A hint only (a stale or torn value just means re-learning the commit
        // from the leader), and it is written on every commit: one small
        // in-place write, no fsync, no rename, no blocking-pool hop.
        use std::os::unix::fs::FileExt;
        let mut buf = to_json(&committed);
        buf.resize(COMMITTED_BYTES.max(buf.len()), b' ');
        self.committed
            .write_all_at(&buf, 0)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Nid>>, StorageError<Nid>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; COMMITTED_BYTES];
        let n = self
            .committed
            .read_at(&mut buf, 0)
            .map_err(|e| StorageIOError::read(&e))?;
        // An unreadable hint is no hint.
        let committed: Option<LogId<Nid>> =
            serde_json::from_slice::<Option<LogId<Nid>>>(buf[..n].trim_ascii_end())
                .ok()
                .flatten();
        // Never claim more than the log holds after a torn tail was cut.
        let last = self.log_state().last_log_id;
        Ok(committed.filter(|c| last.is_some_and(|l| l.index >= c.index)))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<Nid>>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<LogEntry> = entries.into_iter().collect();
        let store = shared(self);
        let res = blocking(move || store.append_sync(entries)).await;
        let ret = res
            .as_ref()
            .map(|_| ())
            .map_err(|e| StorageIOError::write_logs(e).into());
        callback.log_io_completed(res);
        ret
    }

    async fn truncate(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let store = shared(self);
        blocking(move || store.truncate_sync(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let store = shared(self);
        blocking(move || store.purge_sync(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::records::{FeatureLevelRecord, MetadataRecord};
    use crate::MetadataBatch;

    fn entry(term: u64, index: u64) -> LogEntry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataBatch(vec![MetadataRecord::FeatureLevel(
                FeatureLevelRecord {
                    name: format!("f{index}"),
                    feature_level: 1,
                },
            )])),
        }
    }

    fn indexes(s: &LogStore) -> Vec<u64> {
        s.cache.read().unwrap().entries.keys().copied().collect()
    }

    #[test]
    fn append_reopen_roll_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path(), 300).unwrap();
        s.append_sync((0..10).map(|i| entry(1, i)).collect())
            .unwrap();
        assert!(s.segment_count() > 1, "300-byte segments roll");
        drop(s);
        let s = LogStore::open(dir.path(), 300).unwrap();
        assert_eq!(indexes(&s), (0..10).collect::<Vec<_>>());
        assert_eq!(s.log_state().last_log_id.unwrap().index, 9);
        // A conflict at 4: entries 4.. go, from files too.
        s.truncate_sync(4).unwrap();
        s.append_sync(vec![entry(2, 4)]).unwrap();
        drop(s);
        let s = LogStore::open(dir.path(), 300).unwrap();
        assert_eq!(indexes(&s), (0..5).collect::<Vec<_>>());
        assert_eq!(s.cache.read().unwrap().entries[&4].log_id.leader_id.term, 2);
    }

    #[test]
    fn torn_tail_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        s.append_sync((0..5).map(|i| entry(1, i)).collect())
            .unwrap();
        drop(s);
        let seg = dir.path().join(segment_name(0));
        let full = std::fs::metadata(&seg).unwrap().len();
        // Cut the last entry in half, as a crash mid-write would.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 10).unwrap();
        drop(f);
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&s), [0, 1, 2, 3]);
        let good = std::fs::metadata(&seg).unwrap().len();
        assert!(good < full - 10, "the torn frame is cut from the file");
        // Appending after recovery continues the log cleanly.
        s.append_sync(vec![entry(1, 4)]).unwrap();
        drop(s);
        // Garbage after the last frame, and a flipped byte inside a frame.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0xff; 13]).unwrap();
        drop(f);
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&s), [0, 1, 2, 3, 4]);
        drop(s);
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = s_pos(&bytes, 1);
        bytes[second + FRAME_HEADER + 3] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap();
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&s), [0], "a bad CRC ends the log there");
        assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, second);
    }

    /// Byte position of the `n`th frame.
    fn s_pos(bytes: &[u8], n: usize) -> usize {
        let mut pos = 0;
        for _ in 0..n {
            pos +=
                FRAME_HEADER + u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        }
        pos
    }

    #[test]
    fn a_purge_recorded_past_the_log_end_survives_a_crash_before_the_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        s.append_sync((0..5).map(|i| entry(1, i)).collect())
            .unwrap();
        drop(s);
        // An installed snapshot up to 9 was recorded, then the process died
        // before deleting the old segment.
        let purged = LogId::new(CommittedLeaderId::new(2, 1), 9);
        write_atomically(dir.path(), PURGED_FILE, &to_json(&purged), true).unwrap();
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.log_state().last_log_id, Some(purged));
        s.append_sync(vec![entry(2, 10), entry(2, 11)]).unwrap();
        drop(s);
        let s = LogStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&s), [10, 11], "no gap is mistaken for corruption");
    }

    #[test]
    fn purge_deletes_whole_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path(), 300).unwrap();
        s.append_sync((0..20).map(|i| entry(1, i)).collect())
            .unwrap();
        let before = s.segment_count();
        s.purge_sync(LogId::new(CommittedLeaderId::new(1, 1), 14))
            .unwrap();
        assert!(s.segment_count() < before);
        assert_eq!(indexes(&s), (15..20).collect::<Vec<_>>());
        let st = s.log_state();
        assert_eq!(st.last_purged_log_id.unwrap().index, 14);
        assert_eq!(st.last_log_id.unwrap().index, 19);
        drop(s);
        let s = LogStore::open(dir.path(), 300).unwrap();
        assert_eq!(indexes(&s), (15..20).collect::<Vec<_>>());
        // Everything purged: the last log id is the purged one.
        s.purge_sync(LogId::new(CommittedLeaderId::new(1, 1), 19))
            .unwrap();
        assert_eq!(s.log_state().last_log_id.unwrap().index, 19);
        s.append_sync(vec![entry(1, 20)]).unwrap();
        drop(s);
        let s = LogStore::open(dir.path(), 300).unwrap();
        assert_eq!(indexes(&s), [20]);
    }
}
