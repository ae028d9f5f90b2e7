use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use strom_protocol::batch::{BatchIter, BatchView, Compression};
use strom_protocol::records::{decode_records, encode_batch, Record};

use super::*;

/// A producer-style batch of `n` records with timestamps `ts, ts+1, ...`.
fn batch(n: usize, ts: i64, value_len: usize) -> Vec<u8> {
    batch_with(n, |i| ts + i as i64, value_len, Compression::None)
}

fn batch_with(
    n: usize,
    ts: impl Fn(usize) -> i64,
    value_len: usize,
    codec: Compression,
) -> Vec<u8> {
    let recs: Vec<Record> = (0..n)
        .map(|i| {
            let v = vec![(i % 251) as u8; value_len];
            Record::new(
                Offset(i as i64),
                ts(i),
                Some(format!("k{i}").as_bytes()),
                Some(&v),
            )
        })
        .collect();
    encode_batch(&recs, codec, Offset(0))
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2000,
        index_interval_bytes: 300,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, cfg: LogConfig) -> Log {
    Log::open(dir.join("t-0"), cfg, false).unwrap()
}

fn append(log: &Log, b: Vec<u8>) -> LogAppendInfo {
    log.append_as_leader(&b, LeaderEpoch(0), 1_000).unwrap()
}

/// `(base, last)` of every batch in `bytes`, asserting they are whole and valid.
fn batches_of(bytes: &[u8]) -> Vec<(i64, i64)> {
    BatchIter::new(bytes)
        .map(|b| {
            let b = b.expect("whole batches");
            b.verify_crc().unwrap();
            (b.base_offset().0, b.last_offset().0)
        })
        .collect()
}

/// Appends batches of 1..=5 records, returns `(base, last)` of each.
fn fill(log: &Log, n: usize) -> Vec<(i64, i64)> {
    (0..n)
        .map(|i| {
            let info = append(
                log,
                batch(1 + i % 5, 10_000 + i as i64 * 10, 20 + (i * 37) % 90),
            );
            (info.first_offset.0, info.last_offset.0)
        })
        .collect()
}

#[test]
fn append_read_round_trip_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let expected = fill(&log, 150);
    assert!(
        log.segment_count() > 10,
        "segments: {}",
        log.segment_count()
    );
    let end = log.log_end_offset();
    assert_eq!(end.0, expected.last().unwrap().1 + 1);
    // every offset: the first batch returned holds it, then everything after it
    for o in 0..end.0 {
        let r = log.read(Offset(o), usize::MAX, end, false).unwrap();
        let got = batches_of(&r.records);
        let first = expected
            .iter()
            .position(|(b, l)| *b <= o && o <= *l)
            .unwrap();
        assert_eq!(got, expected[first..], "offset {o}");
    }
    // small max_bytes: a prefix of whole batches
    for o in (0..end.0).step_by(7) {
        let r = log.read(Offset(o), 500, end, true).unwrap();
        assert!(r.records.len() <= 500 || BatchIter::new(&r.records).count() == 1);
        let got = batches_of(&r.records);
        let first = expected
            .iter()
            .position(|(b, l)| *b <= o && o <= *l)
            .unwrap();
        assert!(!got.is_empty());
        assert_eq!(got, expected[first..first + got.len()]);
    }
    let r = log.read(end, 1000, end, false).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.log_end_offset, end);
    assert_eq!(r.high_watermark, Offset(0)); // opened empty; nobody advanced it
    log.update_high_watermark(Offset(i64::MAX));
    assert_eq!(log.high_watermark(), end);
}

#[test]
fn max_bytes_min_one_batch_and_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let a = append(&log, batch(3, 1, 400)); // 0..=2
    let b = append(&log, batch(2, 1, 400)); // 3..=4
    append(&log, batch(1, 1, 10)); // 5
    let end = log.log_end_offset();
    // first batch larger than max_bytes
    let r = log.read(Offset(1), 10, end, true).unwrap();
    assert_eq!(batches_of(&r.records), vec![(0, 2)]);
    assert_eq!(r.records.len(), a.bytes);
    let r = log.read(Offset(1), 10, end, false).unwrap();
    assert!(r.records.is_empty());
    let r = log.read(Offset(0), 0, end, true).unwrap();
    assert_eq!(batches_of(&r.records), vec![(0, 2)]);
    // exactly two batches fit
    let r = log.read(Offset(0), a.bytes + b.bytes, end, false).unwrap();
    assert_eq!(batches_of(&r.records), vec![(0, 2), (3, 4)]);
    let r = log
        .read(Offset(0), a.bytes + b.bytes - 1, end, true)
        .unwrap();
    assert_eq!(batches_of(&r.records), vec![(0, 2)]);
    // max_offset: only batches that end below it
    let r = log.read(Offset(0), usize::MAX, Offset(5), true).unwrap();
    assert_eq!(batches_of(&r.records), vec![(0, 2), (3, 4)]);
    let r = log.read(Offset(0), usize::MAX, Offset(4), true).unwrap();
    assert_eq!(batches_of(&r.records), vec![(0, 2)]);
    let r = log.read(Offset(0), usize::MAX, Offset(2), true).unwrap();
    assert!(r.records.is_empty());
    let r = log.read(Offset(3), usize::MAX, Offset(3), true).unwrap();
    assert!(r.records.is_empty());
}

#[test]
fn offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    append(&log, batch(3, 1, 10));
    for o in [-1, 4, 100] {
        match log.read(Offset(o), 100, Offset(100), true) {
            Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            }) => {
                assert_eq!(
                    (offset, log_start, log_end),
                    (Offset(o), Offset(0), Offset(3))
                )
            }
            other => panic!("{o}: {other:?}"),
        }
    }
    log.truncate_to(Offset(-5)).unwrap(); // empties the log, restarting at 0
    assert_eq!(log.log_end_offset(), Offset(0));
}

#[test]
fn invalid_appends_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_message_bytes: 1000,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg);
    append(&log, batch(2, 1, 10));
    let size = log.size_bytes();
    let good = batch(2, 1, 10);
    // corrupt CRC in the second batch
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let req = [good.clone(), bad].concat();
    assert!(matches!(
        log.append_as_leader(&req, LeaderEpoch(0), 0),
        Err(LogError::CorruptRecord(_))
    ));
    // trailing partial batch
    let req = [good.clone(), good[..30].to_vec()].concat();
    assert!(matches!(
        log.append_as_leader(&req, LeaderEpoch(0), 0),
        Err(LogError::CorruptRecord(_))
    ));
    // empty
    assert!(matches!(
        log.append_as_leader(&[], LeaderEpoch(0), 0),
        Err(LogError::CorruptRecord(_))
    ));
    // magic 1
    let mut m = good.clone();
    m[16] = 1;
    assert!(matches!(
        log.append_as_leader(&m, LeaderEpoch(0), 0),
        Err(LogError::CorruptRecord(_))
    ));
    // second batch too large
    let req = [good.clone(), batch(1, 1, 2000)].concat();
    match log.append_as_leader(&req, LeaderEpoch(0), 0) {
        Err(LogError::RecordTooLarge { size, max }) => assert!(size > 2000 && max == 1000),
        other => panic!("{other:?}"),
    }
    // no records
    let empty = encode_batch(&[], Compression::None, Offset(0));
    assert!(matches!(
        log.append_as_leader(&empty, LeaderEpoch(0), 0),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.log_end_offset(), Offset(2));
    // a good multi-batch append gets contiguous offsets
    let req = [good.clone(), good].concat();
    let info = log.append_as_leader(&req, LeaderEpoch(0), 0).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.record_count),
        (Offset(2), Offset(5), 4)
    );
    let r = log.read(Offset(2), usize::MAX, Offset(100), false).unwrap();
    assert_eq!(batches_of(&r.records), vec![(2, 3), (4, 5)]);
}

#[test]
fn log_append_time_is_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg);
    let b = batch(3, 5, 10);
    let info = log.append_as_leader(&b, LeaderEpoch(2), 99_000).unwrap();
    assert_eq!(info.log_append_time, 99_000);
    assert_eq!(info.max_timestamp, 99_000);
    let r = log.read(Offset(0), usize::MAX, Offset(10), false).unwrap();
    let v = BatchView::parse(&r.records).unwrap();
    v.verify_crc().unwrap();
    assert_eq!(v.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(v.partition_leader_epoch(), LeaderEpoch(2));
    assert_eq!(
        log.fetch_offset_by_timestamp(6).unwrap(),
        Some((Offset(0), 99_000))
    );
    assert_eq!(
        log.max_timestamp_and_offset().unwrap(),
        Some((Offset(0), 99_000))
    );
    // CreateTime keeps the producer's timestamps and reports -1
    let log2 = Log::open(dir.path().join("u-0"), LogConfig::default(), false).unwrap();
    let info = append(&log2, batch(3, 5, 10));
    assert_eq!((info.log_append_time, info.max_timestamp), (-1, 7));
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let expected = fill(&log, 60);
    let end = log.log_end_offset();
    let segs = log.segment_count();
    let max = log.max_timestamp_and_offset().unwrap();
    log.close().unwrap();
    assert!(matches!(
        log.append_as_leader(&batch(1, 1, 1), LeaderEpoch(0), 0),
        Err(LogError::Closed(_))
    ));
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.segment_count(), segs);
    assert_eq!(log.recovery_point(), end);
    assert_eq!(log.max_timestamp_and_offset().unwrap(), max);
    let r = log.read(Offset(0), usize::MAX, end, false).unwrap();
    assert_eq!(batches_of(&r.records), expected);
    let info = append(&log, batch(2, 1, 10));
    assert_eq!(info.first_offset, end);
    assert_eq!(
        log.leader_epoch_start_offsets(),
        vec![(LeaderEpoch(0), Offset(0))]
    );
}

fn active_log_file(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn recovery_truncates_garbage_tail() {
    for needs_recovery in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config());
        let expected = fill(&log, 40);
        let end = log.log_end_offset();
        drop(log); // crash: no close
        let ldir = dir.path().join("t-0");
        let mut f = OpenOptions::new()
            .append(true)
            .open(active_log_file(&ldir))
            .unwrap();
        f.write_all(&[0x5a; 100]).unwrap();
        drop(f);
        let log = Log::open(ldir.clone(), small_config(), needs_recovery).unwrap();
        assert_eq!(log.log_end_offset(), end, "needs_recovery={needs_recovery}");
        let r = log.read(Offset(0), usize::MAX, end, false).unwrap();
        assert_eq!(batches_of(&r.records), expected);
        let info = append(&log, batch(2, 1, 10));
        assert_eq!(info.first_offset, end);
        let r = log.read(end, usize::MAX, Offset(i64::MAX), false).unwrap();
        assert_eq!(batches_of(&r.records), vec![(end.0, end.0 + 1)]);
    }
}

#[test]
fn recovery_truncates_torn_batch_and_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let expected = fill(&log, 60);
    drop(log);
    let ldir = dir.path().join("t-0");
    // tear the active segment mid-batch
    let active = active_log_file(&ldir);
    let len = fs::metadata(&active).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let log = Log::open(ldir.clone(), small_config(), true).unwrap();
    let end = log.log_end_offset();
    let kept: Vec<_> = expected
        .iter()
        .copied()
        .filter(|(_, l)| *l < end.0)
        .collect();
    assert_eq!(kept.len(), expected.len() - 1);
    assert_eq!(
        batches_of(&log.read(Offset(0), usize::MAX, end, false).unwrap().records),
        kept
    );
    drop(log);

    // corrupt a byte in the middle of an older segment: it and everything after go
    let mut logs: Vec<_> = fs::read_dir(&ldir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let victim = &logs[2];
    let mut bytes = fs::read(victim).unwrap();
    // flip a byte under the CRC of the middle batch (baseOffset is not covered)
    let starts: Vec<usize> = {
        let mut it = BatchIter::new(&bytes);
        let mut v = vec![0];
        while it.next().is_some() {
            v.push(it.position());
        }
        v
    };
    let mid = starts[starts.len() / 2] + 61;
    bytes[mid] ^= 0xff;
    fs::write(victim, &bytes).unwrap();
    let log = Log::open(ldir.clone(), small_config(), true).unwrap();
    assert_eq!(log.segment_count(), 3);
    let end = log.log_end_offset();
    let r = log.read(Offset(0), usize::MAX, end, false).unwrap();
    let got = batches_of(&r.records);
    assert_eq!(got, expected[..got.len()]);
    assert_eq!(got.last().unwrap().1 + 1, end.0);
    let info = append(&log, batch(1, 1, 1));
    assert_eq!(info.first_offset, end);
}

#[test]
fn missing_and_corrupt_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 5000,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone());
    let expected = fill(&log, 80);
    let end = log.log_end_offset();
    let ts_answer = log.fetch_offset_by_timestamp(10_355).unwrap();
    log.close().unwrap();
    drop(log);
    let ldir = dir.path().join("t-0");
    let mut idx: Vec<_> = fs::read_dir(&ldir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .collect();
    idx.sort();
    let originals: Vec<_> = idx.iter().map(|p| fs::read(p).unwrap()).collect();
    fs::remove_file(&idx[0]).unwrap(); // an old segment's offset index
    fs::write(&idx[3], b"garbage").unwrap(); // an old segment's time index: bad length
    let n = idx.len();
    fs::write(&idx[n - 2], [0xff; 16]).unwrap(); // active offset index: positions past the end
    let log = Log::open(ldir.clone(), cfg, false).unwrap();
    for (p, orig) in idx.iter().zip(&originals) {
        assert_eq!(
            &fs::read(p).unwrap(),
            orig,
            "{} not rebuilt identically",
            p.display()
        );
    }
    for o in (0..end.0).step_by(3) {
        let r = log.read(Offset(o), 300, end, true).unwrap();
        let got = batches_of(&r.records);
        let first = expected
            .iter()
            .position(|(b, l)| *b <= o && o <= *l)
            .unwrap();
        assert_eq!(got[0], expected[first]);
    }
    assert_eq!(log.fetch_offset_by_timestamp(10_355).unwrap(), ts_answer);
}

#[test]
fn timestamp_lookup_is_exact_for_every_codec() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1500,
            index_interval_bytes: 200,
            ..LogConfig::default()
        };
        let log = open(dir.path(), cfg);
        // batch i holds 4 records with timestamps 100*i + {30, 10, 20, 40}: not
        // sorted inside a batch, increasing across batches
        let deltas = [30, 10, 20, 40];
        let mut all = Vec::new();
        for i in 0..40i64 {
            let info = log
                .append_as_leader(
                    &batch_with(4, |j| 100 * i + deltas[j], 30, codec),
                    LeaderEpoch(0),
                    0,
                )
                .unwrap();
            for (j, d) in deltas.iter().enumerate() {
                all.push((info.first_offset.0 + j as i64, 100 * i + d));
            }
        }
        assert!(log.segment_count() > 3, "{codec:?}");
        let model = |t: i64| -> Option<(Offset, i64)> {
            // earliest offset whose timestamp >= t
            all.iter()
                .find(|(_, ts)| *ts >= t)
                .map(|(o, ts)| (Offset(*o), *ts))
        };
        for t in (-5..4100).step_by(5) {
            assert_eq!(
                log.fetch_offset_by_timestamp(t).unwrap(),
                model(t),
                "{codec:?} t={t}"
            );
        }
        assert_eq!(
            log.max_timestamp_and_offset().unwrap(),
            Some((Offset(159), 3940)),
            "{codec:?}"
        );
        // and decoding what read returns gives the same records
        let r = log
            .read(Offset(0), usize::MAX, Offset(i64::MAX), false)
            .unwrap();
        let mut decoded = Vec::new();
        for b in BatchIter::new(&r.records) {
            decoded.extend(
                decode_records(&b.unwrap())
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.offset.0, r.timestamp)),
            );
        }
        assert_eq!(decoded, all);
    }
}

#[test]
fn max_timestamp_prefers_earliest_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.max_timestamp_and_offset().unwrap(), None);
    assert_eq!(log.fetch_offset_by_timestamp(0).unwrap(), None);
    append(
        &log,
        batch_with(3, |i| [5, 50, 7][i], 10, Compression::None),
    ); // 0..=2
    append(
        &log,
        batch_with(3, |i| [50, 1, 50][i], 10, Compression::Gzip),
    ); // 3..=5
    for _ in 0..30 {
        append(&log, batch(2, 10, 50));
    }
    assert_eq!(
        log.max_timestamp_and_offset().unwrap(),
        Some((Offset(1), 50))
    );
    append(&log, batch_with(2, |i| [60, 61][i], 10, Compression::None));
    let end = log.log_end_offset().0;
    assert_eq!(
        log.max_timestamp_and_offset().unwrap(),
        Some((Offset(end - 1), 61))
    );
    assert_eq!(log.fetch_offset_by_timestamp(62).unwrap(), None);
    assert_eq!(
        log.fetch_offset_by_timestamp(51).unwrap(),
        Some((Offset(end - 2), 60))
    );
}

#[test]
fn group_commit_with_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush_mode: FlushMode::Always,
        segment_bytes: 20_000,
        ..LogConfig::default()
    };
    let log = Arc::new(open(dir.path(), cfg.clone()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..50 {
                    let info = log
                        .append_as_leader(&batch(1 + (i + t) % 3, i as i64, 40), LeaderEpoch(0), 0)
                        .unwrap();
                    // durable before returning
                    assert!(log.recovery_point() > info.last_offset);
                    got.push((info.first_offset.0, info.last_offset.0));
                }
                got
            })
        })
        .collect();
    let mut all: Vec<(i64, i64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    for w in all.windows(2) {
        assert_eq!(w[0].1 + 1, w[1].0, "offsets contiguous, no overlap");
    }
    let end = log.log_end_offset();
    assert_eq!(end.0, all.last().unwrap().1 + 1);
    assert_eq!(log.recovery_point(), end);
    let r = log.read(Offset(0), usize::MAX, end, false).unwrap();
    assert_eq!(batches_of(&r.records), all);
    drop(log);
    // a crash now loses nothing
    let log = Log::open(dir.path().join("t-0"), cfg, true).unwrap();
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn flush_policies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush_messages: Some(5),
        flush_ms: Some(1000),
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg);
    append(&log, batch(3, 1, 10));
    assert_eq!(log.recovery_point(), Offset(0));
    append(&log, batch(2, 1, 10));
    assert_eq!(log.recovery_point(), Offset(5));
    append(&log, batch(1, 1, 10));
    log.flush_if_due(10_000).unwrap(); // baseline
    assert_eq!(log.recovery_point(), Offset(5));
    log.flush_if_due(10_999).unwrap();
    assert_eq!(log.recovery_point(), Offset(5));
    log.flush_if_due(11_000).unwrap();
    assert_eq!(log.recovery_point(), Offset(6));
    append(&log, batch(1, 1, 10));
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), Offset(7));
}

#[test]
fn rolled_segments_are_flushed_by_the_ticker() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    fill(&log, 30);
    assert_eq!(log.recovery_point(), Offset(0));
    log.flush_if_due(0).unwrap();
    let rp = log.recovery_point();
    assert!(rp > Offset(0) && rp < log.log_end_offset());
}

#[test]
fn segment_ms_and_index_size_roll() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: Some(1000),
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg);
    log.append_as_leader(&batch(1, 1, 1), LeaderEpoch(0), 10_000)
        .unwrap();
    log.append_as_leader(&batch(1, 1, 1), LeaderEpoch(0), 11_000)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_as_leader(&batch(1, 1, 1), LeaderEpoch(0), 11_001)
        .unwrap();
    assert_eq!(log.segment_count(), 2);
    let cfg = LogConfig {
        segment_index_bytes: 24, // three offset-index entries
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("x-1"), cfg, false).unwrap();
    for _ in 0..9 {
        append(&log, batch(1, 1, 1));
    }
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn truncate_to_drops_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config());
    let expected = fill(&log, 60);
    log.update_high_watermark(log.log_end_offset());
    let segs = log.segment_count();
    // truncate mid-batch: the whole batch goes
    let (b, l) = expected[30];
    assert!(l > b || expected[31].1 > expected[31].0);
    let (b, _) = if l > b { (b, l) } else { expected[31] };
    log.truncate_to(Offset(b + 1)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(b));
    assert_eq!(log.high_watermark(), Offset(b));
    assert!(log.segment_count() < segs);
    let kept: Vec<_> = expected.iter().copied().filter(|(_, l)| *l < b).collect();
    assert_eq!(
        batches_of(
            &log.read(Offset(0), usize::MAX, Offset(b), false)
                .unwrap()
                .records
        ),
        kept
    );
    assert!(log
        .read(Offset(b + 1), 10, Offset(i64::MAX), false)
        .is_err());
    let info = append(&log, batch(2, 1, 10));
    assert_eq!(info.first_offset, Offset(b));
    // survives a reopen (clean and unclean)
    let end = log.log_end_offset();
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), end);
    drop(log);
    let log = Log::open(dir.path().join("t-0"), small_config(), true).unwrap();
    assert_eq!(log.log_end_offset(), end);
    // back to the first batch, then to nothing
    assert_eq!(expected[0], (0, 0));
    log.truncate_to(Offset(1)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(1));
    assert_eq!(log.segment_count(), 1);
    log.truncate_to(Offset(0)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(0));
    append(&log, batch(1, 1, 1));
    assert_eq!(log.log_end_offset(), Offset(1));
}

#[test]
fn leader_epoch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    log.append_as_leader(&batch(2, 1, 1), LeaderEpoch(1), 0)
        .unwrap();
    log.append_as_leader(&batch(2, 1, 1), LeaderEpoch(1), 0)
        .unwrap();
    log.append_as_leader(&batch(2, 1, 1), LeaderEpoch(3), 0)
        .unwrap();
    log.append_as_leader(&batch(2, 1, 1), LeaderEpoch(4), 0)
        .unwrap();
    let want = vec![
        (LeaderEpoch(1), Offset(0)),
        (LeaderEpoch(3), Offset(4)),
        (LeaderEpoch(4), Offset(6)),
    ];
    assert_eq!(log.leader_epoch_start_offsets(), want);
    // the file is written by the flush that makes data of the epochs durable
    assert!(!dir.path().join("t-0/leader-epoch-checkpoint").exists());
    log.flush().unwrap();
    let text = fs::read_to_string(dir.path().join("t-0/leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n3\n1 0\n3 4\n4 6\n");
    drop(log);
    // rebuilt from the batches if the checkpoint is lost
    fs::remove_file(dir.path().join("t-0/leader-epoch-checkpoint")).unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default(), true).unwrap();
    assert_eq!(log.leader_epoch_start_offsets(), want);
    log.truncate_to(Offset(6)).unwrap();
    assert_eq!(log.leader_epoch_start_offsets(), want[..2]);
    log.truncate_to(Offset(5)).unwrap(); // drops the whole batch 4..=5
    assert_eq!(log.leader_epoch_start_offsets(), want[..1]);
}

/// The leader-epoch checkpoint is written at flushes, not at each leader
/// change, so after a crash the file may hold entries the data above the
/// recovery point contradicts: recovery rebuilds that range from the
/// batches. An epoch that never received data is never written.
#[test]
fn leader_epoch_checkpoint_above_the_recovery_point_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let ckpt = path.join("leader-epoch-checkpoint");
    let log = open(dir.path(), LogConfig::default());
    log.append_as_leader(&batch(2, 1, 1), LeaderEpoch(1), 0)
        .unwrap();
    log.flush().unwrap();
    log.append_as_leader(&batch(2, 1, 1), LeaderEpoch(2), 0)
        .unwrap();
    drop(log);
    // an OS crash kept a stale version claiming epoch 5 starts at offset 2
    fs::write(&ckpt, "0\n2\n1 0\n5 2\n").unwrap();
    let log =
        Log::open_with_recovery_point(path.clone(), LogConfig::default(), true, Some(Offset(2)))
            .unwrap();
    let want = vec![(LeaderEpoch(1), Offset(0)), (LeaderEpoch(2), Offset(2))];
    assert_eq!(log.leader_epoch_start_offsets(), want);
    // a new leader epoch at the log end, then a clean close: the entry has no
    // data, so it is not written (a load would drop it)
    log.assign_leader_epoch(LeaderEpoch(7), Offset(4));
    log.close().unwrap();
    drop(log);
    let before = fs::read_to_string(&ckpt).unwrap();
    assert_eq!(before, "0\n2\n1 0\n2 2\n");
    let log = Log::open(path.clone(), LogConfig::default(), false).unwrap();
    assert_eq!(log.leader_epoch_start_offsets(), want);
    assert_eq!(fs::read_to_string(&ckpt).unwrap(), before);
    // data of a new epoch makes it part of the file again
    log.assign_leader_epoch(LeaderEpoch(8), Offset(4));
    log.append_as_leader(&batch(1, 1, 1), LeaderEpoch(8), 0)
        .unwrap();
    log.close().unwrap();
    drop(log);
    assert_eq!(fs::read_to_string(&ckpt).unwrap(), "0\n3\n1 0\n2 2\n8 4\n");
}

#[test]
fn topic_partition_dir_names() {
    let tp = TopicPartition::from_dir_name("my-topic.v2-17").unwrap();
    assert_eq!(tp, TopicPartition::new("my-topic.v2", 17));
    assert_eq!(tp.to_string(), "my-topic.v2-17");
    for bad in [
        "foo",
        "foo-",
        "-3",
        ".hidden-0",
        "t-0.abc-delete",
        "t-x",
        "t-+1",
        "t-99999999999",
    ] {
        assert_eq!(TopicPartition::from_dir_name(bad), None, "{bad}");
    }
}

#[test]
fn log_manager_lifecycle() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a"), root.path().join("b")];
    let cfg = small_config();
    let tps = [
        TopicPartition::new("orders", 0),
        TopicPartition::new("orders", 1),
        TopicPartition::new("my-topic.v2", 0),
        TopicPartition::new("__consumer_offsets", 12),
    ];
    let mgr = LogManager::open(dirs.clone(), cfg.clone()).unwrap();
    assert!(mgr.load_logs(|_| cfg.clone()).unwrap().is_empty());
    for tp in &tps {
        let log = mgr.create_log(tp, cfg.clone()).unwrap();
        append(&log, batch(3, 1, 10));
    }
    // balanced across the two dirs
    for d in &dirs {
        assert_eq!(fs::read_dir(d).unwrap().count(), 2, "{}", d.display());
    }
    assert!(Arc::ptr_eq(
        &mgr.create_log(&tps[0], cfg.clone()).unwrap(),
        &mgr.get(&tps[0]).unwrap()
    ));
    mgr.delete_log(&tps[1]).unwrap();
    assert!(mgr.get(&tps[1]).is_none());
    mgr.flush_due(0);
    mgr.shutdown().unwrap();
    for d in &dirs {
        assert!(d.join(".kafka_cleanshutdown").exists());
        assert!(d.join("recovery-point-offset-checkpoint").exists());
        assert!(fs::read_dir(d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("-delete")));
    }
    drop(mgr);

    // clean restart: marker consumed, logs loaded, no recovery needed
    fs::create_dir_all(dirs[0].join("t-0.abc-delete")).unwrap();
    fs::create_dir_all(dirs[0].join("not_a_log")).unwrap();
    let mgr = LogManager::open(dirs.clone(), cfg.clone()).unwrap();
    for d in &dirs {
        assert!(!d.join(".kafka_cleanshutdown").exists());
    }
    let mut loaded: Vec<_> = mgr
        .load_logs(|_| cfg.clone())
        .unwrap()
        .into_iter()
        .map(|(tp, l)| (tp, l.log_end_offset()))
        .collect();
    loaded.sort();
    let mut want: Vec<_> = [&tps[0], &tps[2], &tps[3]]
        .into_iter()
        .map(|tp| (tp.clone(), Offset(3)))
        .collect();
    want.sort();
    assert_eq!(loaded, want);
    assert!(!dirs[0].join("t-0.abc-delete").exists());
    // crash (no shutdown) after garbage hits a log: recovered on the next load
    let log = mgr.get(&tps[2]).unwrap();
    append(&log, batch(2, 1, 10));
    let path = active_log_file(log.dir());
    drop(log);
    drop(mgr);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[1, 2, 3])
        .unwrap();
    let mgr = LogManager::open(dirs.clone(), cfg.clone()).unwrap();
    mgr.load_logs(|_| cfg.clone()).unwrap();
    assert_eq!(mgr.get(&tps[2]).unwrap().log_end_offset(), Offset(5));
    // the garbage is gone from the file
    let r = mgr
        .get(&tps[2])
        .unwrap()
        .read(Offset(0), usize::MAX, Offset(5), false)
        .unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), r.records.len() as u64);
}

#[test]
fn recovery_point_checkpoint_limits_recovery() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a")];
    let cfg = small_config();
    let tp = TopicPartition::new("t", 0);
    let mgr = LogManager::open(dirs.clone(), cfg.clone()).unwrap();
    let log = mgr.create_log(&tp, cfg.clone()).unwrap();
    fill(&log, 40);
    log.flush().unwrap();
    let end = log.log_end_offset();
    mgr.flush_due(0);
    mgr.flush_due(60_000); // writes the checkpoint
    let text = fs::read_to_string(dirs[0].join("recovery-point-offset-checkpoint")).unwrap();
    assert_eq!(text, format!("0\n1\nt 0 {}\n", end.0));
    drop(log);
    drop(mgr);
    // corrupt an old segment below the recovery point: trusted, not rescanned
    let ldir = dirs[0].join("t-0");
    let mut logs: Vec<_> = fs::read_dir(&ldir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut bytes = fs::read(&logs[0]).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&logs[0], &bytes).unwrap();
    let mgr = LogManager::open(dirs.clone(), cfg.clone()).unwrap();
    mgr.load_logs(|_| cfg.clone()).unwrap();
    assert_eq!(mgr.get(&tp).unwrap().log_end_offset(), end);
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            batches: Vec<(usize, usize)>,
        },
        Read {
            at: u16,
            max_bytes: u16,
            min_one: bool,
        },
        Truncate {
            at: u16,
        },
        Reopen {
            clean: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec((1usize..6, 0usize..100), 1..4).prop_map(|batches| Op::Append { batches }),
            3 => (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(at, max_bytes, min_one)| Op::Read { at, max_bytes: max_bytes % 3000, min_one }),
            1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
            1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = LogConfig { segment_bytes: 2500, index_interval_bytes: 150, ..LogConfig::default() };
            let path = dir.path().join("m-0");
            let mut log = Log::open(path.clone(), cfg.clone(), false).unwrap();
            // model: stored batches in order
            let mut model: Vec<Vec<u8>> = Vec::new();
            let end = |m: &Vec<Vec<u8>>| m.last().map_or(0, |b| BatchView::parse(b).unwrap().next_offset().0);
            for op in ops {
                match op {
                    Op::Append { batches } => {
                        let req: Vec<u8> = batches.iter().map(|(n, v)| batch(*n, 5, *v)).collect::<Vec<_>>().concat();
                        let info = log.append_as_leader(&req, LeaderEpoch(0), 0).unwrap();
                        prop_assert_eq!(info.first_offset.0, end(&model));
                        // the log stores the batches with offsets and epoch assigned
                        // (the request buffer itself is left as sent)
                        let mut next = info.first_offset;
                        for b in BatchIter::new(&req) {
                            let mut stored = b.unwrap().bytes().to_vec();
                            let mut m = strom_protocol::batch::BatchMut::new(&mut stored);
                            m.set_base_offset(next);
                            m.set_partition_leader_epoch(LeaderEpoch(0));
                            next = BatchView::parse(&stored).unwrap().next_offset();
                            model.push(stored);
                        }
                        prop_assert_eq!(log.log_end_offset().0, end(&model));
                    }
                    Op::Read { at, max_bytes, min_one } => {
                        let e = end(&model);
                        let at = if e == 0 { 0 } else { at as i64 % (e + 1) };
                        let r = log.read(Offset(at), max_bytes as usize, Offset(e), min_one).unwrap();
                        let first = model.iter().position(|b| BatchView::parse(b).unwrap().last_offset().0 >= at);
                        let mut want = Vec::new();
                        if let Some(first) = first {
                            for b in &model[first..] {
                                if want.len() + b.len() > max_bytes as usize {
                                    if want.is_empty() && min_one { want.extend_from_slice(b); }
                                    break;
                                }
                                want.extend_from_slice(b);
                            }
                        }
                        prop_assert_eq!(&r.records[..], &want[..], "read at {} max {}", at, max_bytes);
                    }
                    Op::Truncate { at } => {
                        let e = end(&model);
                        let at = at as i64 % (e + 2);
                        log.truncate_to(Offset(at)).unwrap();
                        model.retain(|b| BatchView::parse(b).unwrap().last_offset().0 < at);
                        prop_assert_eq!(log.log_end_offset().0, end(&model));
                    }
                    Op::Reopen { clean } => {
                        if clean { log.close().unwrap(); }
                        drop(log);
                        log = Log::open(path.clone(), cfg.clone(), !clean).unwrap();
                        prop_assert_eq!(log.log_end_offset().0, end(&model));
                    }
                }
            }
        }
    }
}

#[test]
fn concurrent_readers_see_only_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), small_config()));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || fill(&log, 300))
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let end = log.log_end_offset();
        let start = Offset(end.0 / 2);
        let r = log.read(start, 4000, Offset(i64::MAX), true).unwrap();
        let got = batches_of(&r.records);
        for w in got.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
        if let Some((b, l)) = got.first() {
            assert!(*b <= start.0.max(*b) && *l >= start.0);
        }
        reads += 1;
    }
    let expected = writer.join().unwrap();
    let r = log
        .read(Offset(0), usize::MAX, log.log_end_offset(), false)
        .unwrap();
    assert_eq!(batches_of(&r.records), expected);
}
