//! A view of a magic-2 record batch header, read and patched in place.
//!
//! The broker keeps every batch as the bytes the producer sent: it reads the
//! 61-byte header, checks the CRC-32C, and patches `baseOffset`,
//! `partitionLeaderEpoch` (outside the CRC) and, for `LogAppendTime`, the
//! timestamp fields (inside the CRC, so the CRC is recomputed). Records are
//! never decoded here.
//!
//! Layout (big-endian):
//! ```text
//!  0 baseOffset i64        | 21 attributes i16       | 43 producerId i64
//!  8 batchLength i32       | 23 lastOffsetDelta i32  | 51 producerEpoch i16
//! 12 partitionLeaderEpoch  | 27 baseTimestamp i64    | 53 baseSequence i32
//! 16 magic i8              | 35 maxTimestamp i64     | 57 recordCount i32
//! 17 crc u32 (covers 21..) |                         | 61 records…
//! ```

use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampType};
use thiserror::Error;

/// Bytes before `batchLength`'s payload starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header.
pub const HEADER_SIZE: usize = 61;
const CRC_START: usize = 21;
const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a byte range is not a valid record batch.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or than `batchLength` says.
    #[error("record batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    /// `batchLength` smaller than a header or negative.
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    /// Only magic 2 is supported (Kafka 4.0 dropped v0/v1 message formats).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC-32C does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc { stored: u32, computed: u32 },
    /// `recordCount` / `lastOffsetDelta` are inconsistent or negative.
    #[error("invalid record count {count} with last offset delta {last_offset_delta}")]
    InvalidRecordCount { count: i32, last_offset_delta: i32 },
}

/// Compression codec from the batch attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Read-only view of one complete record batch.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Size of the batch that starts at `buf[0]` (from its `batchLength`), if the
/// length field itself is present. Does not check that the bytes are there.
pub fn batch_size(buf: &[u8]) -> Result<usize, BatchError> {
    if buf.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD,
            have: buf.len(),
        });
    }
    let len = be_i32(buf, 8);
    if len < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
        return Err(BatchError::InvalidLength(len));
    }
    Ok(LOG_OVERHEAD + len as usize)
}

impl<'a> BatchView<'a> {
    /// Views the batch at the start of `buf`, checking its framing, magic and
    /// counts (not the CRC: see [`BatchView::verify_crc`]). `buf` may hold more
    /// bytes after the batch; [`BatchView::size`] says where it ends.
    pub fn parse(buf: &'a [u8]) -> Result<Self, BatchError> {
        let size = batch_size(buf)?;
        if buf.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                have: buf.len(),
            });
        }
        let view = BatchView {
            bytes: &buf[..size],
        };
        if view.magic() != 2 {
            return Err(BatchError::UnsupportedMagic(view.magic()));
        }
        let count = view.record_count();
        let lod = view.last_offset_delta();
        if count < 0 || lod < 0 || (count > 0 && lod < count - 1) {
            return Err(BatchError::InvalidRecordCount {
                count,
                last_offset_delta: lod,
            });
        }
        Ok(view)
    }

    /// The whole batch, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Total size in bytes (`12 + batchLength`).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> Offset {
        Offset(be_i64(self.bytes, 0))
    }
    /// Offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset().0 + self.last_offset_delta() as i64)
    }
    /// Offset after this batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }
    pub fn partition_leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(be_i32(self.bytes, 12))
    }
    pub fn magic(&self) -> i8 {
        self.bytes[16] as i8
    }
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(self.bytes[17..21].try_into().unwrap())
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, 21)
    }
    pub fn compression(&self) -> Compression {
        match self.attributes() & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            _ => Compression::Zstd,
        }
    }
    /// Whether the compression bits name a codec Kafka knows (0..=4).
    pub fn has_valid_compression(&self) -> bool {
        (self.attributes() & ATTR_COMPRESSION_MASK) <= 4
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, 23)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, 27)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, 35)
    }
    pub fn producer_id(&self) -> ProducerId {
        ProducerId(be_i64(self.bytes, 43))
    }
    pub fn producer_epoch(&self) -> ProducerEpoch {
        ProducerEpoch(be_i16(self.bytes, 51))
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, 53)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.bytes, 57)
    }

    /// Computes the CRC-32C over `attributes..end` and compares it.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = crc32c::crc32c(&self.bytes[CRC_START..]);
        let stored = self.crc();
        if computed == stored {
            Ok(())
        } else {
            Err(BatchError::CorruptCrc { stored, computed })
        }
    }
}

/// Mutable access to one batch's header, for the fields the broker assigns.
pub struct BatchMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> BatchMut<'a> {
    /// Wraps a slice that holds exactly one batch already checked by
    /// [`BatchView::parse`].
    pub fn new(bytes: &'a mut [u8]) -> Self {
        debug_assert!(bytes.len() >= HEADER_SIZE);
        BatchMut { bytes }
    }
    /// Sets `baseOffset` (not covered by the CRC).
    pub fn set_base_offset(&mut self, offset: Offset) {
        self.bytes[0..8].copy_from_slice(&offset.0.to_be_bytes());
    }
    /// Sets `partitionLeaderEpoch` (not covered by the CRC).
    pub fn set_partition_leader_epoch(&mut self, epoch: LeaderEpoch) {
        self.bytes[12..16].copy_from_slice(&epoch.0.to_be_bytes());
    }
    /// Sets `lastOffsetDelta` and recomputes the CRC. Compaction uses it to
    /// keep a rewritten batch's offset range (and so the producer's sequence
    /// range) when it drops the batch's last records, as Kafka does.
    pub fn set_last_offset_delta(&mut self, delta: i32) {
        self.bytes[23..27].copy_from_slice(&delta.to_be_bytes());
        let crc = crc32c::crc32c(&self.bytes[CRC_START..]);
        self.bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    /// Stamps the batch with the broker's time (`LogAppendTime`): sets the
    /// timestamp-type bit and `maxTimestamp`, then recomputes the CRC, as Kafka
    /// does. Records keep their deltas; consumers use `maxTimestamp`.
    pub fn set_log_append_time(&mut self, now_ms: i64) {
        let attrs = be_i16(self.bytes, 21) | ATTR_TIMESTAMP_TYPE;
        self.bytes[21..23].copy_from_slice(&attrs.to_be_bytes());
        self.bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&self.bytes[CRC_START..]);
        self.bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    /// [`BatchMut::set_log_append_time`] on a copy of the 61-byte header of a
    /// batch of `batch_size` bytes whose records stay elsewhere, without
    /// reading them: the header must carry the batch's valid CRC, and CRC-32C
    /// being affine, the new CRC is the old one plus the CRC of the header's
    /// change shifted over the records' length.
    pub fn set_log_append_time_detached(&mut self, now_ms: i64, batch_size: usize) {
        let old: [u8; HEADER_SIZE - CRC_START] =
            self.bytes[CRC_START..HEADER_SIZE].try_into().unwrap();
        let old_crc = u32::from_be_bytes(self.bytes[17..21].try_into().unwrap());
        let attrs = be_i16(self.bytes, 21) | ATTR_TIMESTAMP_TYPE;
        self.bytes[21..23].copy_from_slice(&attrs.to_be_bytes());
        self.bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
        let mut delta = [0u8; HEADER_SIZE - CRC_START];
        for (d, (o, n)) in delta
            .iter_mut()
            .zip(old.iter().zip(&self.bytes[CRC_START..HEADER_SIZE]))
        {
            *d = o ^ n;
        }
        // crc(a ^ b) = crc(a) ^ crc(b) ^ crc(0) for equal lengths; the zero
        // message's CRC cancels the init/final xor of the delta's.
        let shifted = crc32c::crc32c(&delta) ^ crc32c::crc32c(&[0u8; HEADER_SIZE - CRC_START]);
        let crc = old_crc ^ crc32c::crc32c_combine(shifted, 0, batch_size - HEADER_SIZE);
        self.bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Iterates the complete batches of a buffer of concatenated batches.
/// Yields an error for the first malformed or truncated batch, then stops.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
        }
    }
    /// Byte position of the next batch (after the last one yielded).
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchView<'a>, BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match BatchView::parse(&self.buf[self.pos..]) {
            Ok(v) => {
                self.pos += v.size();
                Some(Ok(v))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal valid batch with `count` empty-ish records' worth of
    /// header (records section is opaque filler of `payload` bytes).
    pub fn make_batch(count: i32, payload: usize, ts: i64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE + payload];
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&ts.to_be_bytes());
        b[35..43].copy_from_slice(&ts.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        for (i, x) in b[HEADER_SIZE..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn parse_and_patch() {
        let mut b = make_batch(3, 10, 1000);
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.record_count(), 3);
        assert_eq!(v.last_offset(), Offset(2));
        v.verify_crc().unwrap();
        let mut m = BatchMut::new(&mut b);
        m.set_base_offset(Offset(100));
        m.set_partition_leader_epoch(LeaderEpoch(7));
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.base_offset(), Offset(100));
        assert_eq!(v.next_offset(), Offset(103));
        assert_eq!(v.partition_leader_epoch(), LeaderEpoch(7));
        v.verify_crc().unwrap();
    }

    #[test]
    fn log_append_time_keeps_crc_valid() {
        let mut b = make_batch(1, 4, 5);
        BatchMut::new(&mut b).set_log_append_time(42);
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(v.max_timestamp(), 42);
        v.verify_crc().unwrap();
    }

    #[test]
    fn log_append_time_on_a_header_copy_matches_the_in_place_stamp() {
        for payload in [0, 1, 700, 100_000] {
            let b = make_batch(3, payload, 5);
            let mut header: [u8; HEADER_SIZE] = b[..HEADER_SIZE].try_into().unwrap();
            BatchMut::new(&mut header).set_log_append_time_detached(42, b.len());
            let mut in_place = b.clone();
            BatchMut::new(&mut in_place).set_log_append_time(42);
            assert_eq!(&header[..], &in_place[..HEADER_SIZE], "payload {payload}");
            BatchView::parse(&in_place).unwrap().verify_crc().unwrap();
        }
    }

    #[test]
    fn corrupt_crc_detected() {
        let mut b = make_batch(1, 4, 5);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            BatchView::parse(&b).unwrap().verify_crc(),
            Err(BatchError::CorruptCrc { .. })
        ));
    }

    #[test]
    fn truncation_and_bad_magic() {
        let b = make_batch(1, 4, 5);
        assert!(matches!(
            BatchView::parse(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            BatchView::parse(&b[..5]),
            Err(BatchError::Truncated { .. })
        ));
        let mut m = b.clone();
        m[16] = 1;
        assert_eq!(
            BatchView::parse(&m).err(),
            Some(BatchError::UnsupportedMagic(1))
        );
        let mut two = b.clone();
        two.extend_from_slice(&b);
        two.extend_from_slice(&b[..20]);
        let res: Vec<_> = BatchIter::new(&two).collect();
        assert_eq!(res.len(), 3);
        assert!(res[2].is_err());
    }
}
