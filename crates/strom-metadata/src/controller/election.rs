//! Leader election and ISR upkeep for one partition (the part of Kafka's
//! `PartitionChangeBuilder` this controller needs), as pure functions over
//! a registration and a liveness test, so they unit-test without a quorum.
//!
//! "Live" is Kafka's "eligible leader": registered, unfenced and not in
//! controlled shutdown. "Gone" is a registered broker that is fenced or
//! shutting down; a broker id that is not registered at all is neither
//! (metadata written before brokers registered names such ids, and the
//! controller leaves those partitions alone rather than orphan them).

use crate::image::{MetadataImage, PartitionRegistration};
use crate::records::{PartitionChangeRecord, NO_LEADER, NO_LEADER_CHANGE};

/// Who may lead or stay in an ISR, as the image says.
pub(crate) trait Liveness {
    /// Registered, unfenced, not in controlled shutdown.
    fn live(&self, id: i32) -> bool;
    /// Registered and fenced or in controlled shutdown.
    fn gone(&self, id: i32) -> bool;
}

impl Liveness for MetadataImage {
    fn live(&self, id: i32) -> bool {
        self.broker(id)
            .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
    }
    fn gone(&self, id: i32) -> bool {
        self.broker(id)
            .is_some_and(|b| b.fenced || b.in_controlled_shutdown)
    }
}

/// The outcome of an election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Election {
    /// A live ISR member, the first in assignment order.
    Clean(i32),
    /// A live replica outside the ISR (unclean: the ISR becomes just it).
    Unclean(i32),
    /// Nobody eligible.
    None,
}

/// Kafka's election: the first replica in assignment order that is in the
/// ISR and live; failing that, with `unclean`, the first live replica.
pub(crate) fn elect_leader(
    replicas: &[i32],
    isr: &[i32],
    live: &impl Liveness,
    unclean: bool,
) -> Election {
    if let Some(l) = replicas.iter().find(|r| isr.contains(r) && live.live(**r)) {
        return Election::Clean(*l);
    }
    if unclean {
        if let Some(l) = replicas.iter().find(|r| live.live(**r)) {
            return Election::Unclean(*l);
        }
    }
    Election::None
}

/// Brings one partition in line with broker liveness: gone brokers leave the
/// ISR (but the last ISR member stays, as in Kafka — it may hold the only
/// copy of committed data), and a partition whose leader is gone or absent
/// gets a new one by [`elect_leader`] (or `-1`). `None` when nothing changes.
/// `unclean` (a config lookup) is asked only when no ISR member can lead.
pub(crate) fn reconcile(
    p: &PartitionRegistration,
    live: &impl Liveness,
    unclean: impl FnOnce() -> bool,
) -> Option<(Vec<i32>, i32)> {
    let mut isr: Vec<i32> = p.isr.iter().copied().filter(|r| !live.gone(*r)).collect();
    if isr.is_empty() {
        isr = p.isr.clone();
    }
    let mut leader = p.leader;
    let leader_ok = leader != NO_LEADER && !live.gone(leader);
    if !leader_ok {
        let clean = elect_leader(&p.replicas, &isr, live, false);
        let election = if clean == Election::None && unclean() {
            elect_leader(&p.replicas, &isr, live, true)
        } else {
            clean
        };
        match election {
            Election::Clean(l) => leader = l,
            Election::Unclean(l) => {
                leader = l;
                isr = vec![l];
            }
            Election::None => leader = NO_LEADER,
        }
    }
    (isr != p.isr || leader != p.leader).then_some((isr, leader))
}

/// A change record setting the ISR and (when it moves) the leader.
pub(crate) fn change_record(
    topic_id: uuid::Uuid,
    partition_id: i32,
    old: &PartitionRegistration,
    isr: Vec<i32>,
    leader: i32,
) -> PartitionChangeRecord {
    PartitionChangeRecord {
        partition_id,
        topic_id,
        isr: (isr != old.isr).then_some(isr),
        leader: if leader != old.leader {
            leader
        } else {
            NO_LEADER_CHANGE
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// broker id → (fenced, in controlled shutdown); absent = unregistered.
    struct Brokers(BTreeMap<i32, (bool, bool)>);
    impl Liveness for Brokers {
        fn live(&self, id: i32) -> bool {
            self.0.get(&id).is_some_and(|(f, s)| !f && !s)
        }
        fn gone(&self, id: i32) -> bool {
            self.0.get(&id).is_some_and(|(f, s)| *f || *s)
        }
    }
    fn brokers(states: &[(i32, bool, bool)]) -> Brokers {
        Brokers(states.iter().map(|(i, f, s)| (*i, (*f, *s))).collect())
    }
    fn reg(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionRegistration {
        PartitionRegistration {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            removing_replicas: vec![],
            adding_replicas: vec![],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    #[test]
    fn elects_first_live_isr_member_in_assignment_order() {
        let b = brokers(&[(1, true, false), (2, false, false), (3, false, false)]);
        assert_eq!(
            elect_leader(&[1, 3, 2], &[1, 2, 3], &b, false),
            Election::Clean(3)
        );
        // Not in the ISR: only an unclean election may pick it.
        assert_eq!(elect_leader(&[1, 2], &[1], &b, false), Election::None);
        assert_eq!(elect_leader(&[1, 2], &[1], &b, true), Election::Unclean(2));
        // Shutting down is not eligible either.
        let b = brokers(&[(1, false, true), (2, false, false)]);
        assert_eq!(
            elect_leader(&[1, 2], &[1, 2], &b, false),
            Election::Clean(2)
        );
    }

    #[test]
    fn fencing_the_leader_moves_leadership_and_shrinks_the_isr() {
        let b = brokers(&[(1, true, false), (2, false, false), (3, false, false)]);
        assert_eq!(
            reconcile(&reg(&[1, 2, 3], &[1, 2, 3], 1), &b, || false),
            Some((vec![2, 3], 2))
        );
        // A follower fenced: ISR shrinks, leader stays.
        assert_eq!(
            reconcile(&reg(&[2, 1, 3], &[2, 1, 3], 2), &b, || false),
            Some((vec![2, 3], 2))
        );
        // Nothing to do.
        assert_eq!(reconcile(&reg(&[2, 3], &[2, 3], 2), &b, || false), None);
    }

    #[test]
    fn last_isr_member_stays_and_the_partition_goes_leaderless_then_returns() {
        let down = brokers(&[(1, true, false), (2, false, false)]);
        // Only 1 was in sync: keep it in the ISR, no leader (2 may lack data).
        let p = reg(&[1, 2], &[1], 1);
        assert_eq!(reconcile(&p, &down, || false), Some((vec![1], NO_LEADER)));
        // Unclean: 2 leads with an ISR of itself.
        assert_eq!(reconcile(&p, &down, || true), Some((vec![2], 2)));
        // 1 returns (unfenced): it leads again.
        let up = brokers(&[(1, false, false), (2, false, false)]);
        assert_eq!(
            reconcile(&reg(&[1, 2], &[1], NO_LEADER), &up, || false),
            Some((vec![1], 1))
        );
        // Still leaderless, nothing changes: no record.
        assert_eq!(
            reconcile(&reg(&[1, 2], &[1], NO_LEADER), &down, || false),
            None
        );
    }

    #[test]
    fn unregistered_brokers_are_left_alone() {
        let b = brokers(&[(2, false, false)]);
        assert_eq!(reconcile(&reg(&[1, 2], &[1, 2], 1), &b, || false), None);
    }
}
