//! Record-level decoding and encoding of magic-2 record batches.
//!
//! The broker keeps batches opaque on the hot path ([`crate::batch`]); this
//! module is for the places that must look inside one: exact timestamp
//! lookups (ListOffsets), compaction, key validation, and tests that need to
//! build real batches.
//!
//! Record layout (inside the batch's records section, possibly compressed):
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//! keyLength varint | key | valueLength varint | value
//! headerCount varint | (keyLength varint | key | valueLength varint | value)*
//! ```
//! Varints are zigzag-encoded (protobuf style), as in Kafka's `ByteUtils`.

use std::io::{Read, Write};

use bytes::Bytes;
use thiserror::Error;

use crate::batch::{BatchView, Compression, HEADER_SIZE, LOG_OVERHEAD};
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampType};

/// Upper bound on the decompressed size of one batch's records, so a
/// malicious "zip bomb" batch cannot exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_BLOCK: usize = 32 * 1024;

/// One record of a batch, with its absolute offset and timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `baseOffset + offsetDelta`.
    pub offset: Offset,
    /// `baseTimestamp + timestampDelta`, or the batch's `maxTimestamp` when
    /// the batch uses `LogAppendTime`.
    pub timestamp: i64,
    /// `None` is a null key.
    pub key: Option<Bytes>,
    /// `None` is a null value (a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// Header keys are kept as bytes (Kafka requires UTF-8, but decoding
    /// must stay lossless for compaction); duplicate keys are preserved.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl Record {
    /// A record without headers, built from slices (handy in tests).
    pub fn new(offset: Offset, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        Record {
            offset,
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        }
    }
}

/// Why the records of a batch could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordsError {
    /// The records section ended in the middle of a record.
    #[error("records truncated at byte {0}")]
    Truncated(usize),
    /// A varint longer than its type allows.
    #[error("invalid varint at byte {0}")]
    InvalidVarint(usize),
    /// A negative length other than -1, or a record length that disagrees with its fields.
    #[error("invalid length {len} at byte {at}")]
    InvalidLength { len: i64, at: usize },
    /// Bytes left over after `recordCount` records.
    #[error("{0} bytes remain after the last record")]
    TrailingBytes(usize),
    /// The compression bits name no codec.
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(i16),
    /// The codec rejected the compressed stream.
    #[error("{codec:?} decompression failed: {msg}")]
    Decompression { codec: Compression, msg: String },
    /// The decompressed records exceed [`MAX_DECOMPRESSED_BYTES`].
    #[error("decompressed records exceed {0} bytes")]
    TooLarge(usize),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Result<u8, RecordsError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(RecordsError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn uvarint(&mut self, max_bytes: usize) -> Result<u64, RecordsError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.u8()?;
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordsError::InvalidVarint(start))
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        let start = self.pos;
        let v = self.uvarint(5)?;
        if v > u32::MAX as u64 {
            return Err(RecordsError::InvalidVarint(start));
        }
        let v = v as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let v = self.uvarint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], RecordsError> {
        if self.buf.len() - self.pos < len {
            return Err(RecordsError::Truncated(self.buf.len()));
        }
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    /// A varint length followed by that many bytes; -1 is null.
    fn nullable(&mut self, src: &Bytes) -> Result<Option<Bytes>, RecordsError> {
        let at = self.pos;
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(RecordsError::InvalidLength {
                len: len as i64,
                at,
            });
        }
        let start = self.pos;
        self.bytes(len as usize)?;
        Ok(Some(src.slice(start..start + len as usize)))
    }
}

fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let err = |e: &dyn std::fmt::Display| RecordsError::Decompression {
        codec,
        msg: e.to_string(),
    };
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    let mut out = Vec::new();
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(input)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| err(&e))?;
        }
        Compression::Snappy => out = snappy_decompress(input).map_err(|e| err(&e))?,
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(input)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| err(&e))?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(input)
                .map_err(|e| err(&e))?
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| err(&e))?;
        }
    }
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(RecordsError::TooLarge(MAX_DECOMPRESSED_BYTES));
    }
    Ok(out)
}

/// Snappy as Kafka clients write it: Java clients use xerial's framing
/// (a magic header, then length-prefixed raw blocks), librdkafka and most
/// others write one raw snappy block.
fn snappy_decompress(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut dec = snap::raw::Decoder::new();
    let mut raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if out.len() + n > MAX_DECOMPRESSED_BYTES {
            return Err("decompressed records too large".into());
        }
        let start = out.len();
        out.resize(start + n, 0);
        let got = dec
            .decompress(block, &mut out[start..])
            .map_err(|e| e.to_string())?;
        out.truncate(start + got);
        Ok(())
    };
    let mut out = Vec::new();
    if input.len() >= 16 && input[..8] == XERIAL_MAGIC {
        let mut pos = 16;
        while pos < input.len() {
            if input.len() - pos < 4 {
                return Err("truncated xerial block length".into());
            }
            let len = u32::from_be_bytes(input[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 4;
            if input.len() - pos < len {
                return Err("truncated xerial block".into());
            }
            raw(&input[pos..pos + len], &mut out)?;
            pos += len;
        }
    } else {
        raw(input, &mut out)?;
    }
    Ok(out)
}

fn compress(codec: Compression, input: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => input.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(input).expect("write to Vec");
            enc.finish().expect("write to Vec")
        }
        Compression::Snappy => {
            // xerial framing, as the Java client writes it
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_BLOCK) {
                let block = enc.compress_vec(chunk).expect("snappy compress");
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(input).expect("write to Vec");
            enc.finish().expect("write to Vec")
        }
        Compression::Zstd => zstd::bulk::compress(input, 3).expect("zstd compress"),
    }
}

/// Decodes every record of a magic-2 batch, decompressing if needed.
///
/// Checks that the records section holds exactly `recordCount` well-formed
/// records. Does not check the CRC (see [`BatchView::verify_crc`]).
pub fn decode_records(batch: &BatchView) -> Result<Vec<Record>, RecordsError> {
    if !batch.has_valid_compression() {
        return Err(RecordsError::UnsupportedCompression(
            batch.attributes() & 0x07,
        ));
    }
    let section = &batch.bytes()[HEADER_SIZE..];
    let data = Bytes::from(decompress(batch.compression(), section)?);
    let base_offset = batch.base_offset().0;
    let base_ts = batch.base_timestamp();
    let append_time = batch.timestamp_type() == TimestampType::LogAppendTime;
    let count = batch.record_count().max(0) as usize;
    let mut cur = Cursor { buf: &data, pos: 0 };
    // cap the preallocation: record_count is untrusted
    let mut records = Vec::with_capacity(count.min(data.len() / 7 + 1));
    for _ in 0..count {
        let at = cur.pos;
        let len = cur.varint()?;
        if len < 0 {
            return Err(RecordsError::InvalidLength {
                len: len as i64,
                at,
            });
        }
        let body_start = cur.pos;
        if data.len() - body_start < len as usize {
            return Err(RecordsError::Truncated(data.len()));
        }
        let _attributes = cur.u8()?;
        let ts_delta = cur.varlong()?;
        let offset_delta = cur.varint()?;
        let key = cur.nullable(&data)?;
        let value = cur.nullable(&data)?;
        let hat = cur.pos;
        let header_count = cur.varint()?;
        if header_count < 0 {
            return Err(RecordsError::InvalidLength {
                len: header_count as i64,
                at: hat,
            });
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(64));
        for _ in 0..header_count {
            let kat = cur.pos;
            let hkey = cur
                .nullable(&data)?
                .ok_or(RecordsError::InvalidLength { len: -1, at: kat })?;
            let hval = cur.nullable(&data)?;
            headers.push((hkey, hval));
        }
        if cur.pos - body_start != len as usize {
            return Err(RecordsError::InvalidLength {
                len: len as i64,
                at,
            });
        }
        records.push(Record {
            offset: Offset(base_offset.wrapping_add(offset_delta as i64)),
            timestamp: if append_time {
                batch.max_timestamp()
            } else {
                base_ts.wrapping_add(ts_delta)
            },
            key,
            value,
            headers,
        });
    }
    if cur.pos != data.len() {
        return Err(RecordsError::TrailingBytes(data.len() - cur.pos));
    }
    Ok(records)
}

/// Header fields of a batch built by [`encode_batch_with`].
#[derive(Clone, Debug)]
pub struct BatchOptions {
    pub compression: Compression,
    /// Record offsets are stored as deltas from this.
    pub base_offset: Offset,
    pub partition_leader_epoch: LeaderEpoch,
    pub timestamp_type: TimestampType,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            compression: Compression::None,
            base_offset: Offset(0),
            partition_leader_epoch: LeaderEpoch::NONE,
            timestamp_type: TimestampType::CreateTime,
            producer_id: ProducerId::NONE,
            producer_epoch: ProducerEpoch(-1),
            base_sequence: -1,
            transactional: false,
            control: false,
        }
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}
fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}
fn put_nullable(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Builds a magic-2 batch of `records` as a producer would (offsets are
/// deltas from `base_offset`, CRC-32C over attributes..end).
pub fn encode_batch(records: &[Record], compression: Compression, base_offset: Offset) -> Vec<u8> {
    encode_batch_with(
        records,
        &BatchOptions {
            compression,
            base_offset,
            ..BatchOptions::default()
        },
    )
}

/// Builds a magic-2 batch with every header field chosen by `opts`.
/// `baseTimestamp` is the first record's timestamp, `maxTimestamp` the
/// largest; `lastOffsetDelta` is the last record's delta.
pub fn encode_batch_with(records: &[Record], opts: &BatchOptions) -> Vec<u8> {
    let base = opts.base_offset.0;
    let base_ts = records.first().map(|r| r.timestamp).unwrap_or(-1);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let mut plain = Vec::new();
    let mut body = Vec::new();
    for r in records {
        body.clear();
        body.push(0); // record attributes: unused
        put_varlong(&mut body, r.timestamp - base_ts);
        put_varint(&mut body, (r.offset.0 - base) as i32);
        put_nullable(&mut body, r.key.as_deref());
        put_nullable(&mut body, r.value.as_deref());
        put_varint(&mut body, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_nullable(&mut body, Some(k));
            put_nullable(&mut body, v.as_deref());
        }
        put_varint(&mut plain, body.len() as i32);
        plain.extend_from_slice(&body);
    }
    let section = compress(opts.compression, &plain);
    let last_delta = records
        .last()
        .map(|r| (r.offset.0 - base) as i32)
        .unwrap_or(0);
    let codec: i16 = match opts.compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    let mut attrs = codec;
    if opts.timestamp_type == TimestampType::LogAppendTime {
        attrs |= 0x08;
    }
    if opts.transactional {
        attrs |= 0x10;
    }
    if opts.control {
        attrs |= 0x20;
    }
    let mut b = Vec::with_capacity(HEADER_SIZE + section.len());
    b.extend_from_slice(&base.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + section.len()) as i32).to_be_bytes());
    b.extend_from_slice(&opts.partition_leader_epoch.0.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]); // crc, filled below
    b.extend_from_slice(&attrs.to_be_bytes());
    b.extend_from_slice(&last_delta.to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&opts.producer_id.0.to_be_bytes());
    b.extend_from_slice(&opts.producer_epoch.0.to_be_bytes());
    b.extend_from_slice(&opts.base_sequence.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    debug_assert_eq!(b.len(), HEADER_SIZE);
    b.extend_from_slice(&section);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchMut;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let key = format!("k{i}");
                let value = [i as u8; 50];
                let mut r = Record::new(
                    Offset(i as i64),
                    1_000 + (i as i64 * 7) % 13 - 3,
                    if i % 3 == 0 {
                        None
                    } else {
                        Some(key.as_bytes())
                    },
                    if i % 5 == 4 { None } else { Some(&value[..]) },
                );
                if i % 2 == 0 {
                    r.headers
                        .push((Bytes::from_static(b"h"), Some(Bytes::from(vec![i as u8]))));
                    r.headers.push((Bytes::from_static(b"h"), None));
                }
                r
            })
            .collect()
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in CODECS {
            let recs = sample(40);
            let b = encode_batch(&recs, codec, Offset(0));
            let v = BatchView::parse(&b).unwrap();
            v.verify_crc().unwrap();
            assert_eq!(v.compression(), codec);
            assert_eq!(v.record_count(), 40);
            assert_eq!(v.last_offset_delta(), 39);
            assert_eq!(
                v.max_timestamp(),
                recs.iter().map(|r| r.timestamp).max().unwrap()
            );
            assert_eq!(decode_records(&v).unwrap(), recs, "{codec:?}");
        }
    }

    #[test]
    fn offsets_follow_patched_base_offset() {
        let recs = sample(3);
        let mut b = encode_batch(&recs, Compression::Lz4, Offset(0));
        BatchMut::new(&mut b).set_base_offset(Offset(100));
        let got = decode_records(&BatchView::parse(&b).unwrap()).unwrap();
        assert_eq!(
            got.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
            vec![100, 101, 102]
        );
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let mut b = encode_batch(&sample(4), Compression::None, Offset(0));
        BatchMut::new(&mut b).set_log_append_time(777);
        let got = decode_records(&BatchView::parse(&b).unwrap()).unwrap();
        assert!(got.iter().all(|r| r.timestamp == 777));
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it() {
        let recs = sample(10);
        let plain = encode_batch(&recs, Compression::None, Offset(0));
        let raw = snap::raw::Encoder::new()
            .compress_vec(&plain[HEADER_SIZE..])
            .unwrap();
        let mut b = plain[..HEADER_SIZE].to_vec();
        b.extend_from_slice(&raw);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[22] |= 2; // attributes low byte: snappy
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.compression(), Compression::Snappy);
        assert_eq!(decode_records(&v).unwrap(), recs);
    }

    #[test]
    fn negative_deltas_and_extreme_varints() {
        let recs = vec![
            Record::new(Offset(0), i64::MAX / 4, Some(b""), Some(b"")),
            Record::new(Offset(1), -5, None, None),
            Record::new(Offset(9), 0, Some(&[1; 300]), None),
        ];
        let b = encode_batch(&recs, Compression::None, Offset(0));
        assert_eq!(
            decode_records(&BatchView::parse(&b).unwrap()).unwrap(),
            recs
        );
    }

    fn with_section(template: &[u8], section: &[u8], count: i32) -> Vec<u8> {
        let mut b = template[..HEADER_SIZE].to_vec();
        b.extend_from_slice(section);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        b[23..27].copy_from_slice(&(count - 1).max(0).to_be_bytes());
        b
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = encode_batch(&sample(3), Compression::None, Offset(0));
        let section = good[HEADER_SIZE..].to_vec();
        // too few records for the count
        let b = with_section(&good, &section, 4);
        assert!(matches!(
            decode_records(&BatchView::parse(&b).unwrap()),
            Err(RecordsError::Truncated(_))
        ));
        // trailing bytes
        let mut s = section.clone();
        s.push(0);
        let b = with_section(&good, &s, 3);
        assert_eq!(
            decode_records(&BatchView::parse(&b).unwrap()),
            Err(RecordsError::TrailingBytes(1))
        );
        // every truncation of the section fails cleanly
        for cut in 0..section.len() {
            let b = with_section(&good, &section[..cut], 3);
            assert!(decode_records(&BatchView::parse(&b).unwrap()).is_err());
        }
        // overlong varint
        let b = with_section(&good, &[0xff; 12], 1);
        assert!(matches!(
            decode_records(&BatchView::parse(&b).unwrap()),
            Err(RecordsError::InvalidVarint(_))
        ));
        // garbage compressed data
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = with_section(
                &good,
                &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
                3,
            );
            b[22] |= codec as u8;
            let v = BatchView::parse(&b).unwrap();
            assert!(decode_records(&v).is_err(), "{codec:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(section in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), count in 0i32..5, codec in 0u8..5) {
            let good = encode_batch(&sample(1), Compression::None, Offset(0));
            let mut b = with_section(&good, &section, count);
            b[22] |= codec;
            let _ = decode_records(&BatchView::parse(&b).unwrap());
        }
    }
}
