//! The follower side of the log: appends copied from a leader, epochs,
//! producer state, truncation.

use strom_protocol::batch::BatchIter;
use strom_protocol::records::{encode_batch_with, BatchOptions, Record};
use strom_protocol::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

use crate::{Log, LogConfig, LogError};

fn idempotent(pid: i64, seq: i32, n: usize) -> Vec<u8> {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record::new(Offset(i as i64), 1_000 + i as i64, Some(b"k"), Some(b"v")))
        .collect();
    encode_batch_with(
        &recs,
        &BatchOptions {
            producer_id: ProducerId(pid),
            producer_epoch: ProducerEpoch(0),
            base_sequence: seq,
            ..BatchOptions::default()
        },
    )
}

fn open(dir: &std::path::Path, name: &str, segment_bytes: u64) -> Log {
    Log::open(
        dir.join(name),
        LogConfig {
            segment_bytes,
            ..LogConfig::default()
        },
        false,
    )
    .unwrap()
}

/// Everything in the log, as stored.
fn all_bytes(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let got = log.read(at, 1 << 20, log.log_end_offset(), true).unwrap();
        let last = BatchIter::new(&got.records)
            .map(|b| b.unwrap().next_offset())
            .last()
            .unwrap();
        out.extend_from_slice(&got.records);
        at = last;
    }
    out
}

#[test]
fn follower_append_keeps_offsets_and_epochs_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), "leader-0", 1 << 20);
    let follower = open(dir.path(), "follower-0", 200);
    for (epoch, seq) in [(0, 0), (0, 3), (2, 6), (2, 9), (5, 12)] {
        leader
            .append_as_leader(&idempotent(7, seq, 3), LeaderEpoch(epoch), 5)
            .unwrap();
    }
    let fetched = leader
        .read(Offset(0), 1 << 20, leader.log_end_offset(), true)
        .unwrap();
    // a fetch may end inside a batch: the partial tail is ignored
    let cut = fetched.records.len() - 10;
    let info = follower
        .append_as_follower(&fetched.records[..cut], 5)
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset),
        (Offset(0), Offset(11))
    );
    // the rest, refetched from an offset inside what we have: overlap skipped
    let again = leader
        .read(Offset(9), 1 << 20, leader.log_end_offset(), true)
        .unwrap();
    let more = follower
        .append_as_follower(&again.records, 5)
        .unwrap()
        .unwrap();
    assert_eq!(
        (more.first_offset, more.last_offset),
        (Offset(12), Offset(14))
    );
    assert!(follower
        .append_as_follower(&again.records, 5)
        .unwrap()
        .is_none());

    assert_eq!(follower.log_end_offset(), Offset(15));
    assert!(follower.segment_count() > 1, "small segments rolled");
    assert_eq!(all_bytes(&follower), all_bytes(&leader));
    assert_eq!(
        follower.leader_epoch_start_offsets(),
        vec![
            (LeaderEpoch(0), Offset(0)),
            (LeaderEpoch(2), Offset(6)),
            (LeaderEpoch(5), Offset(12))
        ]
    );
    assert_eq!(
        follower.end_offset_for_epoch(LeaderEpoch(3)),
        Some((LeaderEpoch(2), Offset(12)))
    );
    // the epochs survive a restart (checkpoint written)
    let dir_f = follower.dir().to_path_buf();
    follower.close().unwrap();
    let reopened = Log::open(dir_f, LogConfig::default(), false).unwrap();
    assert_eq!(reopened.leader_epoch_start_offsets().len(), 3);
}

#[test]
fn follower_producer_state_dedupes_after_becoming_leader() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), "leader-0", 1 << 20);
    let follower = open(dir.path(), "follower-0", 1 << 20);
    leader
        .append_as_leader(&idempotent(9, 0, 2), LeaderEpoch(1), 5)
        .unwrap();
    leader
        .append_as_leader(&idempotent(9, 2, 2), LeaderEpoch(1), 5)
        .unwrap();
    let fetched = leader
        .read(Offset(0), 1 << 20, leader.log_end_offset(), true)
        .unwrap();
    follower.append_as_follower(&fetched.records, 5).unwrap();
    let entry = follower.producer_state(ProducerId(9)).unwrap();
    assert_eq!(entry.last_sequence(), 3);

    // promoted: the producer's retry of its last batch is a duplicate with
    // the original offsets, and the next sequence is accepted in order
    follower.assign_leader_epoch(LeaderEpoch(2), follower.log_end_offset());
    let dup = follower
        .append_as_leader(&idempotent(9, 2, 2), LeaderEpoch(2), 6)
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.first_offset, dup.last_offset), (Offset(2), Offset(3)));
    let next = follower
        .append_as_leader(&idempotent(9, 4, 1), LeaderEpoch(2), 6)
        .unwrap();
    assert_eq!(next.first_offset, Offset(4));
    assert!(matches!(
        follower.append_as_leader(&idempotent(9, 9, 1), LeaderEpoch(2), 6),
        Err(LogError::Producer(_))
    ));
    assert_eq!(
        follower.leader_epoch_start_offsets(),
        vec![(LeaderEpoch(1), Offset(0)), (LeaderEpoch(2), Offset(4))]
    );
}

#[test]
fn follower_refuses_corrupt_batches_and_gaps_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), "leader-0", 1 << 20);
    let follower = open(dir.path(), "follower-0", 1 << 20);
    leader
        .append_as_leader(&idempotent(3, 0, 4), LeaderEpoch(0), 5)
        .unwrap();
    let fetched = leader
        .read(Offset(0), 1 << 20, leader.log_end_offset(), true)
        .unwrap();
    let mut bad = fetched.records.to_vec();
    let n = bad.len();
    bad[n - 2] ^= 0x55;
    assert!(matches!(
        follower.append_as_follower(&bad, 5),
        Err(LogError::CorruptRecord(_))
    ));
    assert_eq!(follower.log_end_offset(), Offset(0));
    follower.append_as_follower(&fetched.records, 5).unwrap();
    assert_eq!(follower.log_end_offset(), Offset(4));
}

#[test]
fn truncation_of_a_divergent_tail_and_reset_to_the_leader_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), "t-0", 1 << 20);
    log.append_as_leader(&idempotent(1, 0, 3), LeaderEpoch(1), 5)
        .unwrap();
    log.append_as_leader(&idempotent(1, 3, 3), LeaderEpoch(2), 5)
        .unwrap();
    // the new leader's epoch 2 ended at 3: our epoch-2 tail diverges
    log.truncate_to(Offset(3)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(3));
    assert_eq!(
        log.leader_epoch_start_offsets(),
        vec![(LeaderEpoch(1), Offset(0))]
    );
    assert_eq!(
        log.producer_state(ProducerId(1)).unwrap().last_sequence(),
        2
    );
    // the leader's log start passed our end: start over there
    log.truncate_fully_and_start_at(Offset(40)).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(40), Offset(40))
    );
    assert!(log.leader_epoch_start_offsets().is_empty());
    // assign_leader_epoch: a later epoch only, replacing an empty one
    log.assign_leader_epoch(LeaderEpoch(3), Offset(40));
    log.assign_leader_epoch(LeaderEpoch(4), Offset(40));
    log.assign_leader_epoch(LeaderEpoch(2), Offset(40));
    assert_eq!(
        log.leader_epoch_start_offsets(),
        vec![(LeaderEpoch(4), Offset(40))]
    );
}
