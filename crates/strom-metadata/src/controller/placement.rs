//! Replica placement for new partitions, after Kafka's rack-aware assignment
//! (`StripedReplicaPlacer` / the classic `AdminUtils` striping):
//!
//! - brokers are listed rack-alternated (`r1b1 r2b1 r3b1 r1b2 …`), so walking
//!   the list meets every rack before any rack twice;
//! - partition `k`'s first replica (its preferred leader) is entry
//!   `(start + k) % n`, so leaders go round-robin over the brokers from a
//!   random start per topic (balanced leaders, and topics do not all pile
//!   their partition 0 on the same broker);
//! - the other replicas follow the first at a shift that changes every `n`
//!   partitions (so follower sets vary too), taking brokers of racks the
//!   partition does not use yet while there are any.
//!
//! Only usable brokers are passed in: fenced and shutting-down ones are
//! excluded by the caller, as Kafka's placer sees only unfenced brokers.

use std::collections::{BTreeMap, BTreeSet};

/// A broker new replicas may go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UsableBroker {
    pub id: i32,
    pub rack: Option<String>,
}

/// Why replicas cannot be placed (INVALID_REPLICATION_FACTOR / INVALID_PARTITIONS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PlacementError {
    ReplicationFactor(String),
    Partitions(String),
}

/// Replicas for partitions `first_partition .. first_partition + count`;
/// `seed` picks the round-robin start (random per topic).
pub(crate) fn place(
    brokers: &[UsableBroker],
    first_partition: i32,
    count: i32,
    replication_factor: i16,
    seed: u64,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if count <= 0 {
        return Err(PlacementError::Partitions(
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if replication_factor <= 0 {
        return Err(PlacementError::ReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    let rf = replication_factor as usize;
    if rf > brokers.len() {
        return Err(PlacementError::ReplicationFactor(format!(
            "Unable to replicate the partition {rf} time(s): The target replication factor of \
             {rf} cannot be reached because only {} broker(s) are registered.",
            brokers.len()
        )));
    }
    let list = rack_alternated(brokers);
    let racks: BTreeMap<i32, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let rack_count = racks.values().collect::<BTreeSet<_>>().len();
    let n = list.len();
    let start = (seed % n as u64) as usize;
    let shift_base = ((seed >> 32) % n as u64) as usize;
    let mut out = Vec::with_capacity(count as usize);
    for k in first_partition as usize..(first_partition + count) as usize {
        let first = (start + k) % n;
        let mut replicas = vec![list[first]];
        if rf > 1 {
            let shift = shift_base + k / n;
            let candidates: Vec<i32> = (0..n - 1)
                .map(|j| list[(first + 1 + (shift + j) % (n - 1)) % n])
                .collect();
            let mut used: BTreeSet<Option<&str>> = BTreeSet::from([racks[&list[first]]]);
            // Racks not used yet first, then whatever is left, in candidate order.
            for c in &candidates {
                if replicas.len() == rf || used.len() == rack_count {
                    break;
                }
                if used.insert(racks[c]) {
                    replicas.push(*c);
                }
            }
            for c in &candidates {
                if replicas.len() == rf {
                    break;
                }
                if !replicas.contains(c) {
                    replicas.push(*c);
                }
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

/// Broker ids interleaved by rack: the first of each rack (racks in name
/// order, brokers in id order), then the second of each, and so on.
fn rack_alternated(brokers: &[UsableBroker]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|i| by_rack.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(i32, Option<&str>)]) -> Vec<UsableBroker> {
        spec.iter()
            .map(|(id, rack)| UsableBroker {
                id: *id,
                rack: rack.map(Into::into),
            })
            .collect()
    }

    fn leaders_per_broker(a: &[Vec<i32>]) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for r in a {
            *m.entry(r[0]).or_default() += 1;
        }
        m
    }

    #[test]
    fn leaders_are_balanced_and_replicas_distinct() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        for seed in 0..10 {
            let a = place(&b, 0, 6, 3, seed).unwrap();
            assert_eq!(a.len(), 6);
            for r in &a {
                assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{a:?}");
            }
            assert!(leaders_per_broker(&a).values().all(|n| *n == 2), "{a:?}");
        }
        // The seed moves the start: not every topic leads from broker 1.
        let starts: BTreeSet<i32> = (0..10)
            .map(|s| place(&b, 0, 1, 1, s).unwrap()[0][0])
            .collect();
        assert!(starts.len() > 1);
    }

    #[test]
    fn replicas_of_a_partition_span_racks() {
        // Two racks, unevenly filled: every RF-2 partition uses both.
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
            (5, Some("b")),
        ]);
        for seed in 0..20 {
            for r in place(&b, 0, 10, 2, seed).unwrap() {
                let racks: BTreeSet<_> = r
                    .iter()
                    .map(|id| if *id <= 3 { "a" } else { "b" })
                    .collect();
                assert_eq!(racks.len(), 2, "{r:?}");
            }
        }
        // Three racks, RF 3: one replica per rack.
        let b = brokers(&[
            (1, Some("x")),
            (2, Some("y")),
            (3, Some("z")),
            (4, Some("x")),
            (5, Some("y")),
            (6, Some("z")),
        ]);
        let a = place(&b, 0, 12, 3, 7).unwrap();
        for r in &a {
            let racks: BTreeSet<_> = r.iter().map(|id| id % 3).collect();
            assert_eq!(racks.len(), 3, "{r:?}");
        }
        assert!(leaders_per_broker(&a).values().all(|n| *n == 2), "{a:?}");
    }

    #[test]
    fn too_few_brokers_or_bad_counts_are_refused_with_kafkas_words() {
        let b = brokers(&[(1, None), (2, None)]);
        match place(&b, 0, 1, 3, 0) {
            Err(PlacementError::ReplicationFactor(m)) => assert!(
                m.contains("target replication factor of 3 cannot be reached because only 2 broker(s) are registered"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            place(&b, 0, 0, 1, 0),
            Err(PlacementError::Partitions(_))
        ));
        assert!(matches!(
            place(&b, 0, 1, 0, 0),
            Err(PlacementError::ReplicationFactor(_))
        ));
        // Growing a topic continues the stripe where it stopped.
        let all = place(&b, 0, 4, 2, 3).unwrap();
        assert_eq!(place(&b, 2, 2, 2, 3).unwrap(), all[2..].to_vec());
    }
}
