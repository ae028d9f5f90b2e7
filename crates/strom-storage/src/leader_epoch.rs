//! Lookups in the leader-epoch cache (`(epoch, start offset)` pairs, epochs
//! and offsets increasing), as Kafka's `LeaderEpochFileCache.endOffsetFor`
//! answers them for OffsetForLeaderEpoch.

use strom_protocol::{LeaderEpoch, Offset};

/// The end offset of `requested` in the cache `epochs`: the largest epoch
/// ≤ `requested` and the start offset of the next higher epoch, or
/// `log_end` when `requested` is the latest epoch. `None` is Kafka's
/// UNDEFINED_EPOCH_OFFSET: an undefined (negative) epoch, an empty cache, or
/// an epoch above every known one.
///
/// An epoch below the earliest known gets `(requested, first start offset)`,
/// as in Kafka: that data is gone, and a follower truncating to it restarts
/// from the leader's earliest epoch.
pub fn end_offset_for(
    epochs: &[(LeaderEpoch, Offset)],
    requested: LeaderEpoch,
    log_end: Offset,
) -> Option<(LeaderEpoch, Offset)> {
    if requested.0 < 0 {
        return None;
    }
    let &(latest, _) = epochs.last()?;
    if latest == requested {
        return Some((requested, log_end));
    }
    // first entry with an epoch above the requested one
    let higher = epochs.partition_point(|(e, _)| *e <= requested);
    let &(_, next_start) = epochs.get(higher)?;
    match higher.checked_sub(1) {
        None => Some((requested, next_start)),
        Some(floor) => Some((epochs[floor].0, next_start)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32, offset: i64) -> (LeaderEpoch, Offset) {
        (LeaderEpoch(epoch), Offset(offset))
    }

    fn at(epochs: &[(LeaderEpoch, Offset)], requested: i32) -> Option<(i32, i64)> {
        end_offset_for(epochs, LeaderEpoch(requested), Offset(100)).map(|(e, o)| (e.0, o.0))
    }

    #[test]
    fn kafka_end_offset_for() {
        let cache = [e(2, 10), e(4, 30), e(7, 60)];
        // the latest epoch ends at the log end offset
        assert_eq!(at(&cache, 7), Some((7, 100)));
        // a known older epoch ends where the next one starts
        assert_eq!(at(&cache, 2), Some((2, 30)));
        assert_eq!(at(&cache, 4), Some((4, 60)));
        // an epoch in a gap answers with the largest epoch below it
        assert_eq!(at(&cache, 3), Some((2, 30)));
        assert_eq!(at(&cache, 6), Some((4, 60)));
        // below the earliest: the requested epoch, ending where the cache starts
        assert_eq!(at(&cache, 1), Some((1, 10)));
        assert_eq!(at(&cache, 0), Some((0, 10)));
        // above the latest, undefined, or nothing cached: UNDEFINED_EPOCH_OFFSET
        assert_eq!(at(&cache, 8), None);
        assert_eq!(at(&cache, -1), None);
        assert_eq!(at(&[], 0), None);
        assert_eq!(at(&[e(0, 0)], 0), Some((0, 100)));
    }
}
