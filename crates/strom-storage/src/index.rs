//! Kafka's sparse segment indexes, in Kafka's file format.
//!
//! `.index`: 8-byte entries `(relativeOffset i32 BE, position i32 BE)`, where
//! the offset is the *last* offset of the batch that starts at `position`
//! (Kafka 3.x), so a floor lookup for any target gives a batch at or before
//! the one holding it.
//! `.timeindex`: 12-byte entries `(timestamp i64 BE, relativeOffset i32 BE)`:
//! the segment's running max timestamp and the last offset of the batch that
//! first reached it. Both strictly increase in timestamp, never decrease in
//! offset. Every batch before an entry's offset has a smaller timestamp.
//!
//! The active segment keeps its entries in memory (and writes them lazily);
//! older segments are searched in the file with positional reads, so memory
//! stays bounded with many partitions.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strom_protocol::Offset;

pub(crate) const OFFSET_ENTRY: usize = 8;
pub(crate) const TIME_ENTRY: usize = 12;
/// Index files up to this size are read whole for a lookup (one syscall);
/// larger ones are binary-searched with positional reads.
const READ_WHOLE_LIMIT: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub ts: i64,
    pub rel: u32,
}

impl OffsetEntry {
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel: u32::from_be_bytes(b[0..4].try_into().unwrap()),
            pos: u32::from_be_bytes(b[4..8].try_into().unwrap()),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel.to_be_bytes());
        out.extend_from_slice(&self.pos.to_be_bytes());
    }
}

impl TimeEntry {
    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            ts: i64::from_be_bytes(b[0..8].try_into().unwrap()),
            rel: u32::from_be_bytes(b[8..12].try_into().unwrap()),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ts.to_be_bytes());
        out.extend_from_slice(&self.rel.to_be_bytes());
    }
}

/// `<dir>/<20-digit base offset>.<ext>`
pub(crate) fn segment_path(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(format!("{:020}.{ext}", base.0))
}

/// Index entries and running maxima of one segment, maintained exactly as
/// Kafka's `LogSegment.append` does, so rebuilt indexes equal written ones.
#[derive(Clone, Debug)]
pub(crate) struct IndexState {
    pub index: Vec<OffsetEntry>,
    pub time_index: Vec<TimeEntry>,
    /// Largest batch max timestamp seen; `i64::MIN` when empty.
    pub max_ts: i64,
    /// Last offset of the first batch that reached `max_ts`; NONE when empty.
    pub offset_of_max_ts: Offset,
    pub bytes_since_index: u64,
}

impl IndexState {
    pub fn new() -> Self {
        IndexState {
            index: Vec::new(),
            time_index: Vec::new(),
            max_ts: i64::MIN,
            offset_of_max_ts: Offset::NONE,
            bytes_since_index: 0,
        }
    }

    /// Accounts for one batch appended at `pos`.
    pub fn on_batch(
        &mut self,
        base: Offset,
        pos: u64,
        last: Offset,
        max_ts: i64,
        size: u64,
        interval: u64,
    ) {
        if max_ts > self.max_ts || self.offset_of_max_ts == Offset::NONE {
            self.max_ts = max_ts;
            self.offset_of_max_ts = last;
        }
        if self.bytes_since_index > interval {
            self.index.push(OffsetEntry {
                rel: (last.0 - base.0) as u32,
                pos: pos as u32,
            });
            self.maybe_time_entry(base);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
    }

    /// Appends a time entry for the current max if it is new (also done when
    /// a segment stops being active, so its last entry is its max).
    pub fn maybe_time_entry(&mut self, base: Offset) {
        if self.offset_of_max_ts == Offset::NONE {
            return;
        }
        if self.time_index.last().is_none_or(|e| self.max_ts > e.ts) {
            self.time_index.push(TimeEntry {
                ts: self.max_ts,
                rel: (self.offset_of_max_ts.0 - base.0) as u32,
            });
        }
    }

    /// Whether the entries are ordered and point inside the segment.
    pub fn is_consistent(&self, size: u64) -> bool {
        let offsets_ok = self
            .index
            .windows(2)
            .all(|w| w[0].rel < w[1].rel && w[0].pos < w[1].pos)
            && self.index.last().is_none_or(|e| (e.pos as u64) < size);
        let times_ok = self
            .time_index
            .windows(2)
            .all(|w| w[0].ts < w[1].ts && w[0].rel <= w[1].rel);
        offsets_ok && times_ok
    }
}

/// Floor lookup: position of the last indexed batch whose last offset is
/// `<= rel`, or 0.
pub(crate) fn lookup_offset_mem(entries: &[OffsetEntry], rel: i64) -> u64 {
    let n = entries.partition_point(|e| (e.rel as i64) <= rel);
    if n == 0 {
        0
    } else {
        entries[n - 1].pos as u64
    }
}

/// Relative offset of the last entry whose timestamp is `< target`.
pub(crate) fn lookup_time_mem(entries: &[TimeEntry], target: i64) -> Option<u32> {
    let n = entries.partition_point(|e| e.ts < target);
    (n > 0).then(|| entries[n - 1].rel)
}

pub(crate) fn open_if_exists(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Binary search over a file of fixed-size entries for the number of
/// entries satisfying `pred` (which must be monotone true→false).
fn partition_point_file(
    file: &File,
    entry: usize,
    pred: impl Fn(&[u8]) -> bool,
) -> io::Result<(usize, Vec<u8>)> {
    let len = file.metadata()?.len();
    let n = (len / entry as u64) as usize;
    if len <= READ_WHOLE_LIMIT {
        let mut buf = vec![0u8; n * entry];
        file.read_exact_at(&mut buf, 0)?;
        let pp = buf.chunks_exact(entry).take_while(|c| pred(c)).count();
        let last = if pp > 0 {
            buf[(pp - 1) * entry..pp * entry].to_vec()
        } else {
            Vec::new()
        };
        return Ok((pp, last));
    }
    let (mut lo, mut hi) = (0usize, n);
    let mut b = vec![0u8; entry];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        file.read_exact_at(&mut b, (mid * entry) as u64)?;
        if pred(&b) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo > 0 {
        file.read_exact_at(&mut b, ((lo - 1) * entry) as u64)?;
        Ok((lo, b))
    } else {
        Ok((0, Vec::new()))
    }
}

/// [`lookup_offset_mem`] on an index file; a missing file gives 0 (scan from
/// the segment start: slower, still correct).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn lookup_offset_file(path: &Path, rel: i64) -> io::Result<u64> {
    let Some(f) = open_if_exists(path)? else {
        return Ok(0);
    };
    lookup_offset_open(&f, rel)
}

/// [`lookup_offset_file`] on an already opened index (so the lookup sees the
/// same segment generation as the log file opened with it).
pub(crate) fn lookup_offset_open(f: &File, rel: i64) -> io::Result<u64> {
    let (n, last) = partition_point_file(f, OFFSET_ENTRY, |b| {
        (OffsetEntry::decode(b).rel as i64) <= rel
    })?;
    Ok(if n == 0 {
        0
    } else {
        OffsetEntry::decode(&last).pos as u64
    })
}

/// [`lookup_time_mem`] on a time index file.
pub(crate) fn lookup_time_file(path: &Path, target: i64) -> io::Result<Option<u32>> {
    let Some(f) = open_if_exists(path)? else {
        return Ok(None);
    };
    let (n, last) = partition_point_file(&f, TIME_ENTRY, |b| TimeEntry::decode(b).ts < target)?;
    Ok((n > 0).then(|| TimeEntry::decode(&last).rel))
}

/// Reads a whole offset index; `None` if missing or not a whole number of entries.
pub(crate) fn read_offset_index(path: &Path) -> io::Result<Option<Vec<OffsetEntry>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() % OFFSET_ENTRY != 0 {
        return Ok(None);
    }
    Ok(Some(
        bytes
            .chunks_exact(OFFSET_ENTRY)
            .map(OffsetEntry::decode)
            .collect(),
    ))
}

/// Reads a whole time index; `None` if missing or not a whole number of entries.
pub(crate) fn read_time_index(path: &Path) -> io::Result<Option<Vec<TimeEntry>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() % TIME_ENTRY != 0 {
        return Ok(None);
    }
    Ok(Some(
        bytes
            .chunks_exact(TIME_ENTRY)
            .map(TimeEntry::decode)
            .collect(),
    ))
}

/// Checks an inactive segment's index files cheaply (sizes only) and returns
/// the time index's last entry. `None` means "rebuild".
pub(crate) fn check_inactive(
    dir: &Path,
    base: Offset,
    log_size: u64,
) -> io::Result<Option<Option<TimeEntry>>> {
    let idx = match fs::metadata(segment_path(dir, base, "index")) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(tf) = open_if_exists(&segment_path(dir, base, "timeindex"))? else {
        return Ok(None);
    };
    let tlen = tf.metadata()?.len();
    if idx % OFFSET_ENTRY as u64 != 0 || tlen % TIME_ENTRY as u64 != 0 {
        return Ok(None);
    }
    if tlen == 0 {
        // a segment with batches always ends with its max-timestamp entry
        return Ok(if log_size == 0 { Some(None) } else { None });
    }
    let mut b = [0u8; TIME_ENTRY];
    tf.read_exact_at(&mut b, tlen - TIME_ENTRY as u64)?;
    Ok(Some(Some(TimeEntry::decode(&b))))
}

/// Appends entries to an index file (creating it).
pub(crate) fn append_entries(
    dir: &Path,
    base: Offset,
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
) -> io::Result<()> {
    if !offsets.is_empty() {
        let mut buf = Vec::with_capacity(offsets.len() * OFFSET_ENTRY);
        offsets.iter().for_each(|e| e.encode(&mut buf));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, base, "index"))?
            .write_all(&buf)?;
    }
    if !times.is_empty() {
        let mut buf = Vec::with_capacity(times.len() * TIME_ENTRY);
        times.iter().for_each(|e| e.encode(&mut buf));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, base, "timeindex"))?
            .write_all(&buf)?;
    }
    Ok(())
}

/// The bytes of an offset index and a time index holding these entries.
pub(crate) fn encode_index_files(
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
) -> (Vec<u8>, Vec<u8>) {
    let mut o = Vec::with_capacity(offsets.len() * OFFSET_ENTRY);
    offsets.iter().for_each(|e| e.encode(&mut o));
    let mut t = Vec::with_capacity(times.len() * TIME_ENTRY);
    times.iter().for_each(|e| e.encode(&mut t));
    (o, t)
}

/// Replaces both index files of a segment atomically (temp, fsync, rename).
pub(crate) fn write_index_files(
    dir: &Path,
    base: Offset,
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(offsets.len() * OFFSET_ENTRY);
    offsets.iter().for_each(|e| e.encode(&mut buf));
    crate::checkpoint::write_atomic_no_dir_sync(&segment_path(dir, base, "index"), &buf)?;
    let mut buf = Vec::with_capacity(times.len() * TIME_ENTRY);
    times.iter().for_each(|e| e.encode(&mut buf));
    crate::checkpoint::write_atomic_no_dir_sync(&segment_path(dir, base, "timeindex"), &buf)?;
    Ok(())
}

/// fsyncs a segment's index files if present.
pub(crate) fn sync_index_files(dir: &Path, base: Offset) -> io::Result<()> {
    for ext in ["index", "timeindex"] {
        if let Some(f) = open_if_exists(&segment_path(dir, base, ext))? {
            f.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_memory_lookups_agree() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0usize, 1, 2, 7, 9000] {
            let offs: Vec<_> = (0..n)
                .map(|i| OffsetEntry {
                    rel: (i * 3 + 2) as u32,
                    pos: (i * 100 + 50) as u32,
                })
                .collect();
            let times: Vec<_> = (0..n)
                .map(|i| TimeEntry {
                    ts: (i * 10) as i64,
                    rel: (i * 3 + 2) as u32,
                })
                .collect();
            write_index_files(dir.path(), Offset(0), &offs, &times).unwrap();
            let ip = segment_path(dir.path(), Offset(0), "index");
            let tp = segment_path(dir.path(), Offset(0), "timeindex");
            for t in [-1i64, 0, 1, 2, 3, 4, 5, 100, 26_999, 27_000, 1 << 40] {
                assert_eq!(
                    lookup_offset_file(&ip, t).unwrap(),
                    lookup_offset_mem(&offs, t),
                    "n={n} t={t}"
                );
                assert_eq!(
                    lookup_time_file(&tp, t).unwrap(),
                    lookup_time_mem(&times, t),
                    "n={n} t={t}"
                );
            }
            assert_eq!(read_offset_index(&ip).unwrap().unwrap(), offs);
            assert_eq!(read_time_index(&tp).unwrap().unwrap(), times);
        }
        assert_eq!(
            lookup_offset_file(&dir.path().join("missing"), 5).unwrap(),
            0
        );
    }
}
