//! Retention, DeleteRecords, live config changes and compaction (with
//! crashes in the middle of a clean).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use strom_protocol::batch::{BatchIter, BatchView, Compression};
use strom_protocol::records::{decode_records, encode_batch, Record};

use super::*;

/// The cleaner stops at the last stable offset, so at the high watermark:
/// set it to the log end first, as a single-node broker keeps it.
fn clean_log(
    log: &Log,
    map: &mut OffsetMap,
    now_ms: i64,
    cancel: &AtomicBool,
) -> Result<Option<crate::cleaner::CleanStats>, LogError> {
    log.update_high_watermark(log.log_end_offset());
    crate::cleaner::clean_log(log, map, now_ms, cancel)
}

const NOW: i64 = 1_000_000_000;

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 200,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn compact_cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        min_cleanable_dirty_ratio: 0.0,
        ..cfg(segment_bytes)
    }
}

/// `(key, value)` records, one batch, record timestamps `ts`.
fn kv_batch(recs: &[(Option<&str>, Option<&str>)], ts: i64, codec: Compression) -> Vec<u8> {
    let recs: Vec<Record> = recs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            Record::new(
                Offset(i as i64),
                ts,
                k.map(str::as_bytes),
                v.map(str::as_bytes),
            )
        })
        .collect();
    encode_batch(&recs, codec, Offset(0))
}

fn append_at(log: &Log, b: Vec<u8>, now: i64) -> LogAppendInfo {
    log.append_as_leader(&b, LeaderEpoch(0), now).unwrap()
}

/// Every record readable from the log start, checking batch validity.
fn all_records(log: &Log) -> Vec<Record> {
    let r = log
        .read(
            log.log_start_offset(),
            usize::MAX,
            log.log_end_offset(),
            false,
        )
        .unwrap();
    let mut out = Vec::new();
    let mut iter = BatchIter::new(&r.records).peekable();
    while let Some(b) = iter.next() {
        let b = b.unwrap();
        b.verify_crc().unwrap();
        let recs = decode_records(&b).unwrap();
        // only the log's last batch may be empty (kept by the cleaner)
        assert!(!recs.is_empty() || (iter.peek().is_none() && b.record_count() == 0));
        assert!(recs.last().is_none_or(|r| r.offset <= b.last_offset()));
        out.extend(recs);
    }
    out
}

fn files_with(dir: &Path, suffix: &str) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

#[test]
fn time_retention_deletes_old_segments_and_moves_log_start() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path().join("t-0"),
        LogConfig {
            retention_ms: Some(1_000),
            file_delete_delay_ms: 500,
            ..cfg(600)
        },
        false,
    )
    .unwrap();
    // 10 old batches, then 10 fresh ones
    for i in 0..20 {
        let ts = if i < 10 { NOW - 5_000 } else { NOW };
        append_at(
            &log,
            kv_batch(
                &[(Some("k"), Some(&"v".repeat(100)))],
                ts,
                Compression::None,
            ),
            NOW,
        );
    }
    let segs = log.segment_count();
    assert!(segs > 4, "{segs}");
    let n = log.delete_retained_segments(NOW).unwrap();
    assert!(n > 0);
    assert_eq!(log.segment_count(), segs - n);
    let start = log.log_start_offset();
    assert!(start > Offset(0) && start <= Offset(10), "{start:?}");
    assert!(matches!(
        log.read(Offset(0), 1 << 20, log.log_end_offset(), false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // every remaining record is readable; none older than the retention
    let recs = all_records(&log);
    assert_eq!(recs.last().unwrap().offset, Offset(19));
    // files linger as .deleted until file.delete.delay.ms
    assert_eq!(files_with(log.dir(), ".log.deleted"), n);
    assert_eq!(log.delete_expired_files(NOW + 100).unwrap(), 0);
    assert_eq!(log.delete_expired_files(NOW + 500).unwrap(), n);
    assert_eq!(files_with(log.dir(), ".deleted"), 0);
    // the active segment is never deleted, even when all is expired
    log.delete_retained_segments(NOW + 1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), Offset(20));
}

#[test]
fn quiet_active_segment_is_rolled_by_segment_ms_then_retained() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path().join("t-0"),
        LogConfig {
            retention_ms: Some(1_000),
            segment_ms: Some(500),
            ..cfg(1 << 20)
        },
        false,
    )
    .unwrap();
    assert!(!log.roll_if_due(NOW).unwrap(), "empty segments never roll");
    append_at(
        &log,
        kv_batch(&[(Some("a"), Some("1"))], NOW, Compression::None),
        NOW,
    );
    assert!(!log.roll_if_due(NOW + 400).unwrap());
    assert!(log.roll_if_due(NOW + 501).unwrap());
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.delete_retained_segments(NOW + 900).unwrap(), 0);
    assert_eq!(log.delete_retained_segments(NOW + 1_001).unwrap(), 1);
    assert_eq!(log.log_start_offset(), Offset(1));
    assert_eq!(log.log_end_offset(), Offset(1));
}

#[test]
fn size_retention_keeps_the_log_bounded() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path().join("t-0"),
        LogConfig {
            retention_ms: None,
            retention_bytes: Some(2_000),
            ..cfg(500)
        },
        false,
    )
    .unwrap();
    for i in 0..100 {
        append_at(
            &log,
            kv_batch(
                &[(Some("k"), Some(&"x".repeat(150)))],
                NOW + i,
                Compression::None,
            ),
            NOW,
        );
        log.delete_retained_segments(NOW).unwrap();
        // bounded by retention.bytes plus at most one segment
        assert!(log.size_bytes() <= 2_000 + 500, "{}", log.size_bytes());
    }
    assert!(log.log_start_offset() > Offset(80));
    // compact-only topics ignore retention.*
    log.set_config(LogConfig {
        retention_bytes: Some(1),
        cleanup_policy: CleanupPolicy::parse("compact").unwrap(),
        ..log.config().as_ref().clone()
    });
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 0);
}

#[test]
fn delete_records_moves_log_start_and_survives_restart() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a")];
    let c = cfg(400);
    let tp = TopicPartition::new("t", 0);
    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    let log = mgr.create_log(&tp, c.clone()).unwrap();
    for _ in 0..30 {
        append_at(
            &log,
            kv_batch(
                &[(Some("k"), Some(&"x".repeat(60)))],
                NOW,
                Compression::None,
            ),
            NOW,
        );
    }
    log.update_high_watermark(log.log_end_offset());
    let segs = log.segment_count();
    // beyond the high watermark: rejected, nothing changes
    assert!(matches!(
        mgr.delete_records(&tp, Offset(31), NOW),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(log.delete_records_before(Offset(-5), NOW).is_err());
    assert_eq!(log.log_start_offset(), Offset(0));
    assert_eq!(log.segment_count(), segs);
    // inside a segment: the start moves exactly there, older segments go
    assert_eq!(
        mgr.delete_records(&tp, Offset(17), NOW).unwrap(),
        Offset(17)
    );
    assert!(log.segment_count() < segs);
    assert!(matches!(
        log.read(Offset(16), 1 << 20, Offset(30), false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(all_records(&log).first().unwrap().offset.0 <= 17);
    // never backwards
    assert_eq!(mgr.delete_records(&tp, Offset(3), NOW).unwrap(), Offset(17));
    drop(log);
    mgr.shutdown().unwrap();
    drop(mgr);
    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    mgr.load_logs(|_| c.clone()).unwrap();
    let log = mgr.get(&tp).unwrap();
    assert_eq!(log.log_start_offset(), Offset(17));
    // and after a crash (the checkpoint was written by delete_records)
    assert_eq!(
        mgr.delete_records(&tp, Offset(20), NOW).unwrap(),
        Offset(20)
    );
    drop(log);
    drop(mgr);
    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    mgr.load_logs(|_| c.clone()).unwrap();
    assert_eq!(mgr.get(&tp).unwrap().log_start_offset(), Offset(20));
    // DeleteRecords up to the log end empties the readable range
    let log = mgr.get(&tp).unwrap();
    assert_eq!(
        log.delete_records_before(Offset(30), NOW).unwrap(),
        Offset(30)
    );
    assert!(all_records(&log).is_empty());
}

#[test]
fn set_config_applies_to_the_live_log() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path().join("t-0"), cfg(1 << 20), false).unwrap();
    for _ in 0..5 {
        append_at(
            &log,
            kv_batch(&[(Some("k"), Some("v"))], NOW, Compression::None),
            NOW,
        );
    }
    assert_eq!(log.segment_count(), 1);
    log.set_config(cfg(100));
    append_at(
        &log,
        kv_batch(&[(Some("k"), Some("v"))], NOW, Compression::None),
        NOW,
    );
    append_at(
        &log,
        kv_batch(&[(Some("k"), Some("v"))], NOW, Compression::None),
        NOW,
    );
    assert!(log.segment_count() > 1);
    assert_eq!(log.config().segment_bytes, 100);
    // a keyless record is fine until the topic becomes compacted
    log.set_config(compact_cfg(1 << 20));
    let b = kv_batch(
        &[(Some("k"), Some("v")), (None, Some("v"))],
        NOW,
        Compression::Lz4,
    );
    let end = log.log_end_offset();
    assert!(matches!(
        log.append_as_leader(&b, LeaderEpoch(0), NOW),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), end);
}

/// Appends `rounds` versions of `keys` keys (batches of 10 records), then a
/// tombstone for every 10th key, then one more record to roll past them.
fn fill_compacted(log: &Log, keys: usize, rounds: usize, ts: i64, codec: Compression) {
    let mut pending: Vec<(String, Option<String>)> = Vec::new();
    let flush = |pending: &mut Vec<(String, Option<String>)>| {
        if pending.is_empty() {
            return;
        }
        let recs: Vec<(Option<&str>, Option<&str>)> = pending
            .iter()
            .map(|(k, v)| (Some(k.as_str()), v.as_deref()))
            .collect();
        append_at(log, kv_batch(&recs, ts, codec), ts);
        pending.clear();
    };
    for r in 0..rounds {
        for k in 0..keys {
            pending.push((format!("key-{k}"), Some(format!("value-{k}-{r}"))));
            if pending.len() == 10 {
                flush(&mut pending);
            }
        }
    }
    for k in (0..keys).step_by(10) {
        pending.push((format!("key-{k}"), None));
    }
    flush(&mut pending);
}

/// key → (offset, value) of the latest record per key.
fn latest(recs: &[Record]) -> BTreeMap<Bytes, (Offset, Option<Bytes>)> {
    let mut m = BTreeMap::new();
    for r in recs {
        m.insert(r.key.clone().unwrap(), (r.offset, r.value.clone()));
    }
    m
}

#[test]
fn compaction_keeps_latest_per_key_and_drops_old_tombstones() {
    for codec in [Compression::None, Compression::Zstd, Compression::Gzip] {
        let d = tempfile::tempdir().unwrap();
        let c = LogConfig {
            delete_retention_ms: 1_000,
            ..compact_cfg(4_000)
        };
        let log = Log::open(d.path().join("t-0"), c, false).unwrap();
        fill_compacted(&log, 100, 8, NOW, codec);
        // roll so the tombstones are in a cleanable segment
        append_at(
            &log,
            kv_batch(&[(Some("tail"), Some("x"))], NOW, codec),
            NOW,
        );
        log.roll_if_due(i64::MAX).unwrap();
        let before = all_records(&log);
        let want = latest(&before);
        let size_before = log.size_bytes();
        let end = log.log_end_offset();

        let cancel = AtomicBool::new(false);
        let mut map = OffsetMap::new(1 << 20);
        let stats = clean_log(&log, &mut map, NOW, &cancel).unwrap().unwrap();
        assert!(stats.records_removed > 0);
        let after = all_records(&log);
        // exactly one record per key: the latest, same offset and value; tombstones kept
        assert_eq!(after.len(), want.len(), "{codec:?}");
        assert!(after.windows(2).all(|w| w[0].offset < w[1].offset));
        assert_eq!(latest(&after), want);
        assert_eq!(after.iter().filter(|r| r.value.is_none()).count(), 10);
        assert!(log.size_bytes() < size_before / 3);
        assert_eq!(log.log_end_offset(), end);
        // every batch keeps its codec
        let r = log.read(Offset(0), usize::MAX, end, false).unwrap();
        for b in BatchIter::new(&r.records) {
            assert_eq!(b.unwrap().compression(), codec);
        }
        // nothing new: no pass (ratio 0 dirty)
        let again = clean_log(&log, &mut map, NOW, &cancel).unwrap();
        assert!(again.is_none() || again.unwrap().records_removed == 0);

        // tombstones go once delete.retention.ms has passed, with no new data
        assert!(clean_log(&log, &mut map, NOW + 999, &cancel)
            .unwrap()
            .is_none());
        clean_log(&log, &mut map, NOW + 2_000, &cancel)
            .unwrap()
            .unwrap();
        let after = all_records(&log);
        assert_eq!(after.len(), want.len() - 10);
        assert!(after.iter().all(|r| r.value.is_some()));

        // the cleaned log reopens identically (indexes valid)
        let recs = all_records(&log);
        log.close().unwrap();
        drop(log);
        let log = Log::open(d.path().join("t-0"), compact_cfg(4_000), true).unwrap();
        assert_eq!(all_records(&log), recs);
        assert_eq!(log.log_end_offset(), end);
        // timestamp lookups still work on cleaned segments
        assert!(log.fetch_offset_by_timestamp(NOW).unwrap().is_some());
    }
}

#[test]
fn cleaner_keeps_the_last_batch_of_the_log_empty() {
    let d = tempfile::tempdir().unwrap();
    let c = LogConfig {
        delete_retention_ms: 1_000,
        ..compact_cfg(1 << 20)
    };
    let log = Log::open(d.path().join("t-0"), c, false).unwrap();
    for codec in [Compression::Zstd, Compression::None] {
        append_at(
            &log,
            kv_batch(
                &[(Some("a"), Some("1")), (Some("b"), Some("2"))],
                NOW,
                codec,
            ),
            NOW,
        );
    }
    // the log ends with a batch of tombstones only, then an empty active segment
    append_at(
        &log,
        kv_batch(
            &[(Some("b"), None), (Some("c"), None)],
            NOW,
            Compression::Zstd,
        ),
        NOW,
    );
    log.roll_if_due(i64::MAX).unwrap();
    let end = log.log_end_offset();
    assert_eq!(end, Offset(6));
    let cancel = AtomicBool::new(false);
    let mut map = OffsetMap::new(1 << 20);
    clean_log(&log, &mut map, NOW + 5_000, &cancel)
        .unwrap()
        .unwrap();
    let check = |log: &Log| {
        let r = log.read(Offset(0), usize::MAX, end, false).unwrap();
        let batches: Vec<_> = BatchIter::new(&r.records).map(|b| b.unwrap()).collect();
        let last = batches.last().unwrap();
        // a reader still reaches the end of the log through the emptied batch
        assert_eq!(last.next_offset(), end);
        assert_eq!((last.base_offset(), last.record_count()), (Offset(4), 0));
        let recs = all_records(log);
        let kv: Vec<_> = recs.iter().map(|r| (r.offset.0, r.value.clone())).collect();
        assert_eq!(kv, vec![(2, Some(Bytes::from("1")))]);
        // fetching inside the emptied batch returns it (not nothing)
        let r = log.read(Offset(5), usize::MAX, end, false).unwrap();
        assert_eq!(BatchIter::new(&r.records).count(), 1);
    };
    check(&log);
    // a second pass keeps it too, and it survives a reopen
    clean_log(&log, &mut map, NOW + 10_000, &cancel).unwrap();
    check(&log);
    log.close().unwrap();
    drop(log);
    let log = Log::open(d.path().join("t-0"), compact_cfg(1 << 20), true).unwrap();
    assert_eq!(log.log_end_offset(), end);
    check(&log);
}

#[test]
fn compaction_respects_lag_ratio_and_active_segment() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path().join("t-0"),
        LogConfig {
            min_compaction_lag_ms: 10_000,
            ..compact_cfg(3_000)
        },
        false,
    )
    .unwrap();
    fill_compacted(&log, 20, 10, NOW, Compression::None);
    let cancel = AtomicBool::new(false);
    let mut map = OffsetMap::new(1 << 20);
    let n = all_records(&log).len();
    // too young
    assert!(clean_log(&log, &mut map, NOW + 5_000, &cancel)
        .unwrap()
        .is_none());
    assert_eq!(all_records(&log).len(), n);
    // old enough, but the active segment is untouched
    let active_before: Vec<Record> = {
        let (segs, _) = log.segment_infos();
        let base = segs.last().unwrap().base;
        all_records(&log)
            .into_iter()
            .filter(|r| r.offset >= base)
            .collect()
    };
    clean_log(&log, &mut map, NOW + 20_000, &cancel)
        .unwrap()
        .unwrap();
    let after = all_records(&log);
    assert!(after.len() < n);
    let tail: Vec<Record> = after
        .into_iter()
        .filter(|r| r.offset >= active_before[0].offset)
        .collect();
    assert_eq!(tail, active_before);
    // min.cleanable.dirty.ratio = 1: a clean log with a little new dirt is skipped
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio: 1.0,
        min_compaction_lag_ms: 0,
        ..log.config().as_ref().clone()
    });
    log.roll_if_due(i64::MAX).unwrap();
    assert!(clean_log(&log, &mut map, NOW + 20_000, &cancel)
        .unwrap()
        .is_none());
    // …unless max.compaction.lag.ms forces it
    log.set_config(LogConfig {
        max_compaction_lag_ms: 1,
        ..log.config().as_ref().clone()
    });
    assert!(clean_log(&log, &mut map, NOW + 20_000, &cancel)
        .unwrap()
        .is_some());
}

#[test]
fn small_offset_map_converges_over_several_passes() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path().join("t-0"), compact_cfg(1_000), false).unwrap();
    fill_compacted(&log, 150, 4, NOW, Compression::None);
    log.roll_if_due(i64::MAX).unwrap();
    let want = latest(&all_records(&log));
    let cancel = AtomicBool::new(false);
    // room for 60 keys: about one segment per pass
    let mut map = OffsetMap::new(60 * 24 * 10 / 9 + 24);
    assert_eq!(map.capacity(), 60);
    let mut passes = 0;
    while let Some(s) = clean_log(&log, &mut map, NOW, &cancel).unwrap() {
        passes += 1;
        assert!(passes < 100);
        if s.end_offset >= log.log_end_offset() {
            break;
        }
    }
    assert!(passes > 1);
    let after = all_records(&log);
    assert_eq!(latest(&after), want);
    assert_eq!(after.len(), want.len());
}

/// Two identical logs; the first is cleaned, and its cleaned files are
/// planted in the second as a crash would leave them.
fn twin_logs(root: &Path) -> (Log, Log) {
    let a = Log::open(root.join("a-0"), compact_cfg(3_000), false).unwrap();
    let b = Log::open(root.join("b-0"), compact_cfg(3_000), false).unwrap();
    for log in [&a, &b] {
        fill_compacted(log, 30, 5, NOW, Compression::Lz4);
        log.roll_if_due(i64::MAX).unwrap();
        log.flush().unwrap();
    }
    (a, b)
}

#[test]
fn crash_before_swap_discards_cleaned_files() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = twin_logs(d.path());
    let before = all_records(&b);
    let cancel = AtomicBool::new(false);
    clean_log(&a, &mut OffsetMap::new(1 << 20), NOW, &cancel)
        .unwrap()
        .unwrap();
    // plant a's cleaned first segment in b as `.cleaned` (not yet swappable)
    for ext in ["log", "index", "timeindex"] {
        let name = format!("{:020}.{ext}", 0);
        fs::copy(a.dir().join(&name), b.dir().join(format!("{name}.cleaned"))).unwrap();
    }
    // and a torn `.cleaned` of another segment
    fs::write(b.dir().join(format!("{:020}.log.cleaned", 77)), b"junk").unwrap();
    b.close().unwrap();
    drop(b);
    let b = Log::open(d.path().join("b-0"), compact_cfg(3_000), true).unwrap();
    assert_eq!(all_records(&b), before);
    assert_eq!(files_with(b.dir(), ".cleaned"), 0);
}

#[test]
fn crash_during_swap_completes_it() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = twin_logs(d.path());
    let cancel = AtomicBool::new(false);
    clean_log(&a, &mut OffsetMap::new(1 << 20), NOW, &cancel)
        .unwrap()
        .unwrap();
    let first = |log: &Log| format!("{:020}", log.segment_infos().0[0].base.0);
    let seg = first(&a);
    assert_eq!(seg, first(&b));
    let cleaned_first: Vec<Record> = {
        let next = a.segment_infos().0[1].base;
        all_records(&a)
            .into_iter()
            .filter(|r| r.offset < next)
            .collect()
    };
    let b_next = b.segment_infos().0[1].base;
    let rest: Vec<Record> = all_records(&b)
        .into_iter()
        .filter(|r| r.offset >= b_next)
        .collect();
    // case 1: the log file is `.swap`, the index files were already swapped
    // in from a different generation (stale against the old log)
    fs::copy(
        a.dir().join(format!("{seg}.log")),
        b.dir().join(format!("{seg}.log.swap")),
    )
    .unwrap();
    fs::write(
        b.dir().join(format!("{seg}.index")),
        [0u8, 0, 0, 9, 0, 0, 7, 0],
    )
    .unwrap();
    fs::write(
        b.dir().join(format!("{seg}.timeindex.swap")),
        b"garbage!garbage!",
    )
    .unwrap();
    b.close().unwrap();
    drop(b);
    let b = Log::open(d.path().join("b-0"), compact_cfg(3_000), false).unwrap();
    assert_eq!(files_with(b.dir(), ".swap"), 0);
    let mut want = cleaned_first.clone();
    want.extend(rest.clone());
    assert_eq!(all_records(&b), want);
    // reads in the middle of the cleaned segment use the rebuilt index
    for r in &cleaned_first {
        let got = b.read(r.offset, 1, b.log_end_offset(), true).unwrap();
        let v = BatchView::parse(&got.records[..]).unwrap();
        assert!(v.base_offset() <= r.offset && r.offset <= v.last_offset());
    }
    // case 2: only index `.swap` files remain (crash before the log's rename
    // to `.swap`): the old log stays, its indexes are rebuilt
    let (c, e) = twin_logs(&d.path().join("second"));
    let before = all_records(&e);
    clean_log(&c, &mut OffsetMap::new(1 << 20), NOW, &cancel)
        .unwrap()
        .unwrap();
    fs::copy(
        c.dir().join(format!("{seg}.index")),
        e.dir().join(format!("{seg}.index.swap")),
    )
    .unwrap();
    fs::write(e.dir().join(format!("{seg}.log.cleaned")), b"partial").unwrap();
    e.close().unwrap();
    drop(e);
    let e = Log::open(
        d.path().join("second").join("b-0"),
        compact_cfg(3_000),
        false,
    )
    .unwrap();
    assert_eq!(all_records(&e), before);
    for r in before.iter().step_by(7) {
        let got = e.read(r.offset, 1, e.log_end_offset(), true).unwrap();
        let v = BatchView::parse(&got.records[..]).unwrap();
        assert!(v.base_offset() <= r.offset && r.offset <= v.last_offset());
    }
}

#[test]
fn readers_during_cleaning_see_whole_batches() {
    let d = tempfile::tempdir().unwrap();
    let log =
        std::sync::Arc::new(Log::open(d.path().join("t-0"), compact_cfg(3_000), false).unwrap());
    fill_compacted(&log, 40, 10, NOW, Compression::None);
    log.roll_if_due(i64::MAX).unwrap();
    let want = latest(&all_records(&log));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) || reads < 50 {
                let start = Offset(reads % 300);
                let r = log.read(start, 5_000, log.log_end_offset(), true).unwrap();
                for b in BatchIter::new(&r.records) {
                    let b = b.unwrap();
                    b.verify_crc().unwrap();
                    decode_records(&b).unwrap();
                }
                reads += 1;
            }
        })
    };
    let cancel = AtomicBool::new(false);
    clean_log(&log, &mut OffsetMap::new(1 << 20), NOW, &cancel)
        .unwrap()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    reader.join().unwrap();
    assert_eq!(latest(&all_records(&log)), want);
}

/// The high watermark survives a restart through Kafka's
/// `replication-offset-checkpoint` (written at shutdown and every 5 s by
/// `flush_due`), so a restarted leader does not expose records beyond it;
/// a log dir without the file (an earlier version's) starts at the log end.
#[test]
fn high_watermark_checkpoint_survives_restart() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a")];
    let c = cfg(1 << 20);
    let tp = TopicPartition::new("t", 0);
    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    let log = mgr.create_log(&tp, c.clone()).unwrap();
    let one = || kv_batch(&[(Some("k"), Some("v"))], NOW, Compression::None);
    for _ in 0..10 {
        append_at(&log, one(), NOW);
    }
    log.update_high_watermark(Offset(6));
    drop(log);
    mgr.shutdown().unwrap();
    drop(mgr);
    let ckpt = dirs[0].join("replication-offset-checkpoint");
    assert_eq!(fs::read_to_string(&ckpt).unwrap(), "0\n1\nt 0 6\n");

    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    mgr.load_logs(|_| c.clone()).unwrap();
    let log = mgr.get(&tp).unwrap();
    assert_eq!(log.log_end_offset(), Offset(10));
    assert_eq!(log.high_watermark(), Offset(6));
    // the periodic write: first call sets the baseline and writes, an
    // unchanged high watermark is not rewritten, a moved one is
    log.update_high_watermark(Offset(8));
    mgr.flush_due(NOW);
    assert_eq!(fs::read_to_string(&ckpt).unwrap(), "0\n1\nt 0 8\n");
    log.update_high_watermark(Offset(9));
    mgr.flush_due(NOW + 1_000);
    assert_eq!(fs::read_to_string(&ckpt).unwrap(), "0\n1\nt 0 8\n");
    mgr.flush_due(NOW + 5_000);
    assert_eq!(fs::read_to_string(&ckpt).unwrap(), "0\n1\nt 0 9\n");
    // a crash after that: the checkpointed value, not the log end
    drop(log);
    drop(mgr);
    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    mgr.load_logs(|_| c.clone()).unwrap();
    assert_eq!(mgr.get(&tp).unwrap().high_watermark(), Offset(9));
    drop(mgr);

    // no file at all: the log end, as before the checkpoint existed
    fs::remove_file(&ckpt).unwrap();
    let mgr = LogManager::open(dirs.clone(), c.clone()).unwrap();
    mgr.load_logs(|_| c.clone()).unwrap();
    assert_eq!(mgr.get(&tp).unwrap().high_watermark(), Offset(10));
}
