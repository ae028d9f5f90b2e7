//! The leader/follower machinery of one partition, in process: high
//! watermark from the ISR, follower fetch state, ISR shrink and expansion,
//! acks=all waits, and a follower copying the leader's log.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use strom_protocol::records::{encode_batch_with, BatchOptions, Record};
use strom_protocol::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};
use strom_storage::{Log, LogConfig, TopicPartition};
use uuid::Uuid;

use crate::partition::{append_all, Partition, PartitionState, Role};

fn partition(dir: &std::path::Path, name: &str, min_isr: u32) -> Arc<Partition> {
    let log = Log::open(
        dir.join(name),
        LogConfig {
            min_insync_replicas: min_isr,
            ..LogConfig::default()
        },
        false,
    )
    .unwrap();
    Arc::new(Partition::new(
        TopicPartition::new("t", 0),
        Uuid::nil(),
        LeaderEpoch(0),
        Arc::new(log),
    ))
}

/// A new `Partition` over `p`'s log, as a restart builds one over the log
/// the log manager loaded (high watermark as the log holds it).
fn reopened(p: Arc<Partition>) -> Arc<Partition> {
    let log = p.log().clone();
    drop(p);
    Arc::new(Partition::new(
        TopicPartition::new("t", 0),
        Uuid::nil(),
        LeaderEpoch(0),
        log,
    ))
}

fn batch(pid: i64, seq: i32, n: usize) -> bytes::Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record::new(Offset(i as i64), 1_000, Some(b"k"), Some(b"value")))
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
    .into()
}

fn produce(p: &Arc<Partition>, records: bytes::Bytes) -> Offset {
    let info = append_all(&[(p.clone(), records)], 1_000)
        .pop()
        .unwrap()
        .unwrap();
    info.last_offset.plus(1)
}

fn state(leader: i32, epoch: i32, pepoch: i32, replicas: &[i32], isr: &[i32]) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch: epoch,
        partition_epoch: pepoch,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        ..PartitionState::default()
    }
}

#[test]
fn a_new_partition_is_a_solo_leader_and_the_hw_follows_each_append() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 1);
    assert!(p.is_leader() && !p.waits_for_followers());
    assert_eq!(produce(&p, batch(-1, -1, 3)), Offset(3));
    assert_eq!(p.high_watermark(), Offset(3));
    // registered as the only replica: still solo
    let role = p.apply_state(1, &state(1, 1, 0, &[1], &[1]), 0);
    assert_eq!(role, Some(Role::Leader));
    assert!(!p.waits_for_followers());
    produce(&p, batch(-1, -1, 2));
    assert_eq!(p.high_watermark(), Offset(5));
    assert_eq!(p.leader_epoch(), LeaderEpoch(1));
}

#[test]
fn the_hw_is_the_smallest_log_end_of_the_isr_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 2);
    assert_eq!(
        p.apply_state(1, &state(1, 3, 5, &[1, 2, 3], &[1, 2, 3]), 0),
        Some(Role::Leader)
    );
    assert!(p.waits_for_followers());
    assert_eq!(produce(&p, batch(-1, -1, 10)), Offset(10));
    // followers have not fetched in this epoch: unknown, HW stays
    assert_eq!(p.high_watermark(), Offset(0));
    assert!(p.update_follower_fetch_state(2, Offset(10), 10));
    assert_eq!(p.high_watermark(), Offset(0));
    assert!(p.update_follower_fetch_state(3, Offset(4), 10));
    assert_eq!(p.high_watermark(), Offset(4));
    assert!(p.update_follower_fetch_state(3, Offset(10), 11));
    assert_eq!(p.high_watermark(), Offset(10));
    // a follower that truncated and refetches from below does not lower it
    assert!(p.update_follower_fetch_state(3, Offset(7), 12));
    assert_eq!(p.high_watermark(), Offset(10));
    // a non-replica's fetch is refused
    assert!(!p.update_follower_fetch_state(9, Offset(0), 12));
    // the epoch starts at the log end it had when elected
    assert_eq!(
        p.log().leader_epoch_start_offsets(),
        vec![(LeaderEpoch(3), Offset(0))]
    );
    // a stale registration (older leader epoch / partition epoch) is ignored
    assert_eq!(p.apply_state(1, &state(2, 2, 9, &[1, 2, 3], &[2]), 0), None);
    assert_eq!(p.apply_state(1, &state(1, 3, 4, &[1, 2, 3], &[1]), 0), None);
    assert!(p.is_leader());
}

#[test]
fn isr_shrinks_after_the_lag_and_expands_when_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 1);
    p.apply_state(1, &state(1, 1, 0, &[1, 2, 3], &[1, 2, 3]), 1_000);
    produce(&p, batch(-1, -1, 5));
    assert!(p.update_follower_fetch_state(2, Offset(5), 1_100));
    assert!(p.update_follower_fetch_state(3, Offset(2), 1_100));
    // within the lag nobody leaves
    assert_eq!(p.isr_shrink(5_000, 10_000), None);
    // follower 3 never caught up: out after the lag; 2 is at the log end
    let change = p.isr_shrink(12_000, 10_000).unwrap();
    assert_eq!(change.new_isr, vec![1, 2]);
    assert_eq!((change.leader_epoch, change.partition_epoch), (1, 0));
    // one change in flight at a time; the HW still waits for the maximal ISR
    assert_eq!(p.isr_shrink(30_000, 10_000), None);
    assert_eq!(p.high_watermark(), Offset(2));
    p.adopt_isr(1, 1, vec![1, 2]);
    assert_eq!(p.isr_len(), 2);
    assert_eq!(p.high_watermark(), Offset(5));

    // 3 catches up: asked to join once, HW waits for it meanwhile
    assert_eq!(p.isr_expansion_for(3, 30_500), None, "behind the HW");
    assert!(p.update_follower_fetch_state(3, Offset(5), 31_000));
    let change = p.isr_expansion_for(3, 31_000).unwrap();
    assert_eq!(change.new_isr, vec![1, 2, 3]);
    assert_eq!(p.isr_expansion_for(3, 31_000), None);
    // refused: asked again only after the retry time
    p.isr_change_failed(32_000);
    assert_eq!(p.isr_expansion_for(3, 31_500), None);
    assert_eq!(p.isr_expansion_for(3, 32_000).unwrap(), change);
    produce(&p, batch(-1, -1, 1));
    assert!(p.update_follower_fetch_state(2, Offset(6), 31_100));
    assert_eq!(p.high_watermark(), Offset(5), "maximal ISR includes 3");
    p.adopt_isr(1, 2, vec![1, 2, 3]);
    assert!(p.update_follower_fetch_state(3, Offset(6), 31_200));
    assert_eq!(p.high_watermark(), Offset(6));
    assert_eq!(p.replication().partition_epoch, 2);

    // an answer for an older leader epoch is ignored
    p.adopt_isr(0, 7, vec![1]);
    assert_eq!(p.isr_len(), 3);
}

#[test]
fn a_follower_catching_up_slowly_counts_as_caught_up_at_its_previous_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 1);
    p.apply_state(1, &state(1, 1, 0, &[1, 2], &[1, 2]), 0);
    produce(&p, batch(-1, -1, 5));
    assert!(p.update_follower_fetch_state(2, Offset(0), 1_000));
    produce(&p, batch(-1, -1, 5));
    // reached the leader's end as of its previous fetch (5): caught up then
    assert!(p.update_follower_fetch_state(2, Offset(5), 20_000));
    assert_eq!(p.replication().followers[&2].last_caught_up_ms, 1_000);
    assert!(p.update_follower_fetch_state(2, Offset(10), 25_000));
    assert_eq!(p.replication().followers[&2].last_caught_up_ms, 25_000);
}

#[tokio::test]
async fn acks_all_waits_for_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 2);
    p.apply_state(1, &state(1, 1, 0, &[1, 2], &[1, 2]), 0);
    let end = produce(&p, batch(-1, -1, 4));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            p.wait_for_high_watermark(end, LeaderEpoch(1), deadline)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    assert!(p.update_follower_fetch_state(2, end, 10));
    assert_eq!(waiter.await.unwrap(), Ok(()));

    // nobody fetches: REQUEST_TIMED_OUT at the deadline
    let end = produce(&p, batch(-1, -1, 1));
    let soon = tokio::time::Instant::now() + Duration::from_millis(100);
    assert_eq!(
        p.wait_for_high_watermark(end, LeaderEpoch(1), soon).await,
        Err(ResponseError::RequestTimedOut)
    );

    // the ISR shrinks to the leader: the HW passes, but below min.insync
    let change = p.isr_shrink(100_000, 10).unwrap();
    p.adopt_isr(1, change.partition_epoch + 1, change.new_isr);
    assert_eq!(
        p.wait_for_high_watermark(end, LeaderEpoch(1), deadline)
            .await,
        Err(ResponseError::NotEnoughReplicasAfterAppend)
    );
    assert!(p.insufficient_isr().is_some());

    // leadership moves while waiting: NOT_LEADER_OR_FOLLOWER
    p.apply_state(1, &state(1, 2, 0, &[1, 2], &[1, 2]), 0);
    let end = produce(&p, batch(-1, -1, 1));
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            p.wait_for_high_watermark(end, LeaderEpoch(2), deadline)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        p.apply_state(1, &state(2, 3, 0, &[1, 2], &[2]), 0),
        Some(Role::Follower {
            leader: 2,
            new_epoch: true
        })
    );
    assert_eq!(
        waiter.await.unwrap(),
        Err(ResponseError::NotLeaderOrFollower)
    );
    // a follower refuses local appends
    assert!(append_all(&[(p.clone(), batch(-1, -1, 1))], 0)[0].is_err());
}

#[test]
fn a_follower_copies_the_leader_and_takes_over_with_its_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let leader = partition(dir.path(), "leader-0", 1);
    let follower = partition(dir.path(), "follower-0", 1);
    leader.apply_state(1, &state(1, 1, 0, &[1, 2], &[1, 2]), 0);
    assert_eq!(
        follower.apply_state(2, &state(1, 1, 0, &[1, 2], &[1, 2]), 0),
        Some(Role::Follower {
            leader: 1,
            new_epoch: true
        })
    );
    assert!(!follower.is_leader());
    produce(&leader, batch(7, 0, 3));
    produce(&leader, batch(7, 3, 3));
    // the follower's fetch: from its log end, up to the leader's log end
    let got = leader
        .read_for_follower(follower.log_end_offset(), 1 << 20, true)
        .unwrap();
    assert!(leader.update_follower_fetch_state(2, follower.log_end_offset(), 5));
    assert!(follower
        .append_as_follower(&got.records, 1, leader.high_watermark(), Offset(0), 5)
        .unwrap());
    assert_eq!(follower.log_end_offset(), Offset(6));
    assert_eq!(follower.high_watermark(), Offset(0));
    // next fetch: the leader's HW moves, the follower learns it
    assert!(leader.update_follower_fetch_state(2, Offset(6), 6));
    assert_eq!(leader.high_watermark(), Offset(6));
    follower
        .append_as_follower(&[], 1, leader.high_watermark(), Offset(0), 6)
        .unwrap();
    assert_eq!(follower.high_watermark(), Offset(6));
    // an append for an older epoch than the follower's is dropped
    assert!(!follower
        .append_as_follower(&got.records, 0, Offset(6), Offset(0), 7)
        .unwrap());

    // the follower becomes the leader: the producer's retry is deduped
    follower.apply_state(2, &state(2, 2, 1, &[1, 2], &[2]), 10);
    assert!(follower.is_leader());
    let dup = append_all(&[(follower.clone(), batch(7, 3, 3))], 11)
        .pop()
        .unwrap()
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.first_offset, Offset(3));
    assert_eq!(
        follower.end_offset_for_epoch(LeaderEpoch(1)),
        Some((LeaderEpoch(1), Offset(6)))
    );
}

#[test]
fn a_restarted_leader_keeps_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 1);
    produce(&p, batch(-1, -1, 6));
    // reopened with a high-watermark checkpoint of 2 (what the log manager
    // restores): the followers had only offsets 0 and 1 when it stopped
    p.log().update_high_watermark(Offset(2));
    let p = reopened(p);
    assert_eq!(p.high_watermark(), Offset(2), "not reset to the log end");
    // elected again with a follower in the ISR that has not fetched yet:
    // nothing above the checkpoint becomes visible
    p.apply_state(1, &state(1, 1, 0, &[1, 2], &[1, 2]), 0);
    assert_eq!(p.high_watermark(), Offset(2));
    // the follower reaches offset 4, then the log end
    assert!(p.update_follower_fetch_state(2, Offset(4), 10));
    assert_eq!(p.high_watermark(), Offset(4));
    assert!(p.update_follower_fetch_state(2, Offset(6), 11));
    assert_eq!(p.high_watermark(), Offset(6));
}

#[test]
fn a_restarted_follower_takes_the_leaders_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let p = partition(dir.path(), "t-0", 1);
    produce(&p, batch(-1, -1, 6));
    // reopened: no HW checkpoint, so the HW starts at the log end
    let p = reopened(p);
    assert_eq!(p.high_watermark(), Offset(6));
    p.apply_state(2, &state(1, 1, 0, &[1, 2], &[1, 2]), 0);
    assert!(p
        .append_as_follower(&[], 1, Offset(2), Offset(0), 0)
        .unwrap());
    assert_eq!(
        p.high_watermark(),
        Offset(2),
        "only what the leader committed"
    );
}
