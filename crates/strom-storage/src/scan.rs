//! Sequential validation of a segment's batches (recovery, index rebuild)
//! and small positional-read helpers shared by the read paths.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use strom_protocol::batch::{batch_size, BatchView, HEADER_SIZE, LOG_OVERHEAD};
use strom_protocol::{LeaderEpoch, Offset};

use crate::index::IndexState;

const SCAN_CHUNK: usize = 1 << 20;

/// What a scan of a segment found.
pub(crate) struct ScanOutcome {
    /// Bytes from the file start that hold valid batches.
    pub valid_bytes: u64,
    pub file_len: u64,
    /// Offset after the last valid batch (the segment base if none).
    pub next_offset: Offset,
    pub idx: IndexState,
    /// Max timestamp of the first batch scanned, for `segment.ms`.
    pub first_batch_max_ts: Option<i64>,
    /// `(epoch, first offset)` where a batch carried a higher epoch than any before.
    pub epochs: Vec<(LeaderEpoch, Offset)>,
    /// Why the scan stopped before the end of the file.
    pub error: Option<String>,
}

/// Reads as much of `buf` as the file has at `pos` (short only at EOF).
pub(crate) fn pread_full(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The header fields the read paths need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub base: Offset,
    pub last: Offset,
    pub size: u64,
    pub max_ts: i64,
}

/// Reads the batch header at `pos` if a whole header lies below `limit`.
/// Errors on a length field that cannot be a batch.
pub(crate) fn read_header(file: &File, pos: u64, limit: u64) -> io::Result<Option<Header>> {
    if pos + HEADER_SIZE as u64 > limit {
        return Ok(None);
    }
    let mut b = [0u8; HEADER_SIZE];
    if pread_full(file, &mut b, pos)? < HEADER_SIZE {
        return Ok(None);
    }
    Ok(Some(parse_header(&b).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("batch at position {pos}: {e}"),
        )
    })?))
}

/// Header fields from the first 61 bytes of a batch.
pub(crate) fn parse_header(b: &[u8]) -> Result<Header, String> {
    let size = batch_size(b).map_err(|e| e.to_string())? as u64;
    let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
    let lod = i32::from_be_bytes(b[23..27].try_into().unwrap());
    if lod < 0 {
        return Err(format!("negative last offset delta {lod}"));
    }
    Ok(Header {
        base: Offset(base),
        last: Offset(base + lod as i64),
        size,
        max_ts: i64::from_be_bytes(b[35..43].try_into().unwrap()),
    })
}

/// Scans batches from `start_pos` to the end of the file, checking framing,
/// magic, CRC (if `verify_crc`) and offset order, and feeding `idx` as an
/// append would. Stops at the first bad or torn batch. Never modifies the file.
pub(crate) fn scan_segment(
    file: &File,
    base: Offset,
    start_pos: u64,
    start_next: Offset,
    mut idx: IndexState,
    interval: u64,
    verify_crc: bool,
) -> io::Result<ScanOutcome> {
    let file_len = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = start_pos; // file position of buf[0]
    let mut pos = start_pos;
    let mut next = start_next;
    let mut epochs: Vec<(LeaderEpoch, Offset)> = Vec::new();
    let mut first_ts = None;
    let mut error = None;
    // ensures buf holds file bytes [pos, pos + need); false at EOF
    let fill = |buf: &mut Vec<u8>, buf_pos: &mut u64, pos: u64, need: usize| -> io::Result<bool> {
        let have_end = *buf_pos + buf.len() as u64;
        if have_end >= pos + need as u64 {
            return Ok(true);
        }
        if pos + need as u64 > file_len {
            return Ok(false);
        }
        buf.drain(..(pos - *buf_pos) as usize);
        *buf_pos = pos;
        let want = need.max(SCAN_CHUNK).min((file_len - pos) as usize);
        let old = buf.len();
        buf.resize(want, 0);
        let n = pread_full(file, &mut buf[old..], pos + old as u64)?;
        buf.truncate(old + n);
        Ok(buf.len() >= need)
    };
    while pos < file_len {
        if !fill(&mut buf, &mut buf_pos, pos, LOG_OVERHEAD)? {
            error = Some(format!("torn batch header at position {pos}"));
            break;
        }
        let off = (pos - buf_pos) as usize;
        let size = match batch_size(&buf[off..]) {
            Ok(s) => s,
            Err(e) => {
                error = Some(format!("bad batch length at position {pos}: {e}"));
                break;
            }
        };
        if pos + size as u64 > file_len || !fill(&mut buf, &mut buf_pos, pos, size)? {
            error = Some(format!(
                "torn batch at position {pos}: needs {size} bytes, file has {}",
                file_len - pos
            ));
            break;
        }
        let off = (pos - buf_pos) as usize;
        let view = match BatchView::parse(&buf[off..off + size]) {
            Ok(v) => v,
            Err(e) => {
                error = Some(format!("invalid batch at position {pos}: {e}"));
                break;
            }
        };
        if verify_crc {
            if let Err(e) = view.verify_crc() {
                error = Some(format!("batch at position {pos}: {e}"));
                break;
            }
        }
        if view.base_offset() < next || view.last_offset().0 - base.0 > i32::MAX as i64 {
            error = Some(format!(
                "batch at position {pos} has offsets {}..={} out of order (expected >= {next})",
                view.base_offset(),
                view.last_offset()
            ));
            break;
        }
        let epoch = view.partition_leader_epoch();
        if epoch.0 >= 0 && epochs.last().is_none_or(|(e, _)| epoch > *e) {
            epochs.push((epoch, view.base_offset()));
        }
        first_ts.get_or_insert(view.max_timestamp());
        idx.on_batch(
            base,
            pos,
            view.last_offset(),
            view.max_timestamp(),
            size as u64,
            interval,
        );
        next = view.next_offset();
        pos += size as u64;
    }
    Ok(ScanOutcome {
        valid_bytes: pos,
        file_len,
        next_offset: next,
        idx,
        first_batch_max_ts: first_ts,
        epochs,
        error,
    })
}
