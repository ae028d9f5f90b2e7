//! Topics and partitions: creation and placement, ISR changes from leaders
//! (AlterPartition), leader elections, reassignments, producer-id blocks and
//! forwarded record batches (Kafka's `ReplicationControlManager` and
//! `ProducerIdControlManager`).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::election::{change_record, elect_leader, reconcile, Election, Liveness};
use super::placement::{place, PlacementError, UsableBroker};
use super::{bool_config, ControllerState, Ctx, Outcome};
use crate::controller_api::{
    error_codes as ec, AlterPartitionResult, AlterPartitionTopic, ApiError, ControllerResponse,
    CreatableTopic, CreatedTopic, ElectionType,
};
use crate::image::{MetadataImage, PartitionRegistration, ReplayError};
use crate::records::*;
use crate::NodeId;

/// Producer ids per AllocateProducerIds block (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub(crate) const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

const UNCLEAN: &str = "unclean.leader.election.enable";

fn usable_brokers(image: &MetadataImage) -> Vec<UsableBroker> {
    image
        .brokers()
        .filter(|b| !b.fenced && !b.in_controlled_shutdown)
        .map(|b| UsableBroker {
            id: b.broker_id,
            rack: b.rack.clone(),
        })
        .collect()
}

fn seed_of(id: &Uuid) -> u64 {
    let v = id.as_u128();
    (v as u64) ^ ((v >> 64) as u64)
}

fn placement_error(e: PlacementError) -> ApiError {
    match e {
        PlacementError::ReplicationFactor(m) => ApiError::new(ec::INVALID_REPLICATION_FACTOR, m),
        PlacementError::Partitions(m) => ApiError::new(ec::INVALID_PARTITIONS, m),
    }
}

/// Checks a manual assignment of one partition; returns its initial ISR
/// (the live replicas).
fn check_manual_replicas(
    image: &MetadataImage,
    partition: i32,
    replicas: &[i32],
) -> Result<Vec<i32>, ApiError> {
    let bad = |m: String| ApiError::new(ec::INVALID_REPLICA_ASSIGNMENT, m);
    if replicas.is_empty() {
        return Err(bad(format!(
            "The manual partition assignment includes an empty replica list for partition {partition}."
        )));
    }
    if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
        return Err(bad(format!(
            "The manual partition assignment includes the partition {partition} with duplicate replicas."
        )));
    }
    if let Some(unknown) = replicas.iter().find(|r| image.broker(**r).is_none()) {
        return Err(bad(format!(
            "The manual partition assignment includes broker {unknown}, but no such broker is registered."
        )));
    }
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|r| image.live(*r))
        .collect();
    if isr.is_empty() {
        return Err(bad(format!(
            "All brokers specified in the manual partition assignment for partition {partition} \
             are fenced or in controlled shutdown."
        )));
    }
    Ok(isr)
}

fn partition_record(
    topic_id: Uuid,
    partition_id: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
) -> MetadataRecord {
    MetadataRecord::Partition(PartitionRecord {
        partition_id,
        topic_id,
        leader: isr[0],
        replicas,
        isr,
        removing_replicas: vec![],
        adding_replicas: vec![],
        leader_epoch: 0,
        partition_epoch: 0,
    })
}

fn unknown_partition(topic: &str, partition: i32) -> ApiError {
    ApiError::new(
        ec::UNKNOWN_TOPIC_OR_PARTITION,
        format!("The partition {topic}-{partition} does not exist."),
    )
}

impl ControllerState {
    fn unclean(&self, image: &MetadataImage, topic: &str) -> bool {
        bool_config(
            image,
            Some(topic),
            UNCLEAN,
            self.config.unclean_leader_election,
        )
    }

    /// The partition changes that bring every partition in line with broker
    /// liveness in `image` (see [`reconcile`]).
    pub(super) fn reconcile_partitions(&self, image: &MetadataImage) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        // one line for all partitions going offline (a lone broker's
        // shutdown takes every partition it leads): the first few by name
        let mut offline = Vec::new();
        for t in image.topics() {
            for (id, p) in &t.partitions {
                if let Some((isr, leader)) = reconcile(p, image, || self.unclean(image, &t.name)) {
                    if leader == NO_LEADER && p.leader != NO_LEADER {
                        offline.push((&t.name, *id));
                    }
                    out.push(MetadataRecord::PartitionChange(change_record(
                        t.id, *id, p, isr, leader,
                    )));
                }
            }
        }
        if !offline.is_empty() {
            const NAMED: usize = 5;
            let named: Vec<String> = offline
                .iter()
                .take(NAMED)
                .map(|(t, p)| format!("{t}-{p}"))
                .collect();
            let more = offline.len().saturating_sub(NAMED);
            tracing::warn!(
                count = offline.len(),
                "no in-sync replica is live: partitions offline: {}{}",
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        out
    }

    /// Leadership back to the preferred (first) replica wherever it is live
    /// and in sync.
    pub(super) fn preferred_leader_rebalance(&self, image: &MetadataImage) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        for t in image.topics() {
            for (id, p) in &t.partitions {
                if let Some(&preferred) = p.replicas.first() {
                    if preferred != p.leader && p.isr.contains(&preferred) && image.live(preferred)
                    {
                        out.push(MetadataRecord::PartitionChange(PartitionChangeRecord {
                            partition_id: *id,
                            topic_id: t.id,
                            leader: preferred,
                            ..Default::default()
                        }));
                    }
                }
            }
        }
        out
    }

    pub(super) fn create_topics(
        &mut self,
        ctx: &Ctx,
        topics: &[CreatableTopic],
        validate_only: bool,
    ) -> Outcome {
        let image = ctx.image;
        let usable = usable_brokers(image);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in topics {
            *counts.entry(t.name.as_str()).or_default() += 1;
        }
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(topics.len());
        for t in topics {
            let failed = |error: ApiError| CreatedTopic {
                name: t.name.clone(),
                error,
                topic_id: Uuid::nil(),
                num_partitions: -1,
                replication_factor: -1,
            };
            if counts[t.name.as_str()] > 1 {
                results.push(failed(ApiError::new(
                    ec::INVALID_REQUEST,
                    format!(
                        "Found multiple entries for topic {} in the request.",
                        t.name
                    ),
                )));
                continue;
            }
            if image.topic(&t.name).is_some() {
                results.push(failed(ApiError::new(
                    ec::TOPIC_ALREADY_EXISTS,
                    format!("Topic '{}' already exists.", t.name),
                )));
                continue;
            }
            let topic_id = Uuid::new_v4();
            let partitions = if t.assignments.is_empty() {
                place(
                    &usable,
                    0,
                    t.num_partitions,
                    t.replication_factor,
                    seed_of(&topic_id),
                )
                .map_err(placement_error)
                .map(|a| a.into_iter().map(|r| (r.clone(), r)).collect::<Vec<_>>())
            } else {
                manual_assignment(image, &t.assignments)
            };
            let partitions = match partitions {
                Ok(p) => p,
                Err(e) => {
                    results.push(failed(e));
                    continue;
                }
            };
            let rf = partitions[0].0.len() as i16;
            results.push(CreatedTopic {
                name: t.name.clone(),
                error: ApiError::NONE,
                topic_id: if validate_only { Uuid::nil() } else { topic_id },
                num_partitions: partitions.len() as i32,
                replication_factor: rf,
            });
            records.push(MetadataRecord::Topic(TopicRecord {
                name: t.name.clone(),
                topic_id,
            }));
            for (i, (replicas, isr)) in partitions.into_iter().enumerate() {
                records.push(partition_record(topic_id, i as i32, replicas, isr));
            }
            for (name, value) in &t.configs {
                records.push(MetadataRecord::Config(ConfigRecord {
                    resource_type: resource_type::TOPIC,
                    resource_name: t.name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                }));
            }
        }
        if validate_only {
            records.clear();
        }
        Outcome::with_records(
            ControllerResponse::CreateTopics {
                topics: results,
                log_index: 0,
            },
            records,
        )
    }

    pub(super) fn create_partitions(
        &mut self,
        ctx: &Ctx,
        topic: &str,
        count: i32,
        assignments: Option<&[Vec<NodeId>]>,
        validate_only: bool,
    ) -> Outcome {
        let answer = |error| ControllerResponse::CreatePartitions {
            error,
            log_index: 0,
        };
        let Some(t) = ctx.image.topic(topic) else {
            return Outcome::answer(answer(ApiError::new(
                ec::UNKNOWN_TOPIC_OR_PARTITION,
                format!("The topic '{topic}' does not exist."),
            )));
        };
        let current = t.partitions.len() as i32;
        if count < current {
            return Outcome::answer(answer(ApiError::new(
                ec::INVALID_PARTITIONS,
                format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
            )));
        }
        if count == current {
            return Outcome::answer(answer(ApiError::new(
                ec::INVALID_PARTITIONS,
                format!("Topic already has {current} partitions."),
            )));
        }
        let rf = t
            .partitions
            .values()
            .next()
            .map_or(1, |p| p.replicas.len() - p.adding_replicas.len());
        let added = count - current;
        let partitions = match assignments {
            None => place(&usable_brokers(ctx.image), current, added, rf as i16, seed_of(&t.id))
                .map_err(placement_error)
                .map(|a| a.into_iter().map(|r| (r.clone(), r)).collect::<Vec<_>>()),
            Some(a) if a.len() as i32 != added => Err(ApiError::new(
                ec::INVALID_REPLICA_ASSIGNMENT,
                format!("Increasing the number of partitions by {added} but {} assignments provided.", a.len()),
            )),
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(i, replicas)| {
                    if replicas.len() != rf {
                        return Err(ApiError::new(
                            ec::INVALID_REPLICA_ASSIGNMENT,
                            format!(
                                "The manual partition assignment includes a partition with {} replica(s), \
                                 but this is not consistent with previous partitions, which have {rf} replica(s).",
                                replicas.len()
                            ),
                        ));
                    }
                    check_manual_replicas(ctx.image, current + i as i32, replicas)
                        .map(|isr| (replicas.clone(), isr))
                })
                .collect(),
        };
        let partitions = match partitions {
            Ok(p) => p,
            Err(e) => return Outcome::answer(answer(e)),
        };
        let records = if validate_only {
            Vec::new()
        } else {
            partitions
                .into_iter()
                .enumerate()
                .map(|(i, (replicas, isr))| {
                    partition_record(t.id, current + i as i32, replicas, isr)
                })
                .collect()
        };
        Outcome::with_records(answer(ApiError::NONE), records)
    }

    /// Kafka's AlterPartition (`ReplicationControlManager.alterPartition`):
    /// the leader's ISR change, checked against its epochs and the
    /// eligibility of new members; completes a reassignment whose adding
    /// replicas have all joined the ISR.
    pub(super) fn alter_partition(
        &mut self,
        ctx: &Ctx,
        broker_id: NodeId,
        broker_epoch: i64,
        topics: &[AlterPartitionTopic],
    ) -> Outcome {
        let image = ctx.image;
        if image
            .broker(broker_id)
            .is_none_or(|b| b.broker_epoch != broker_epoch)
        {
            return Outcome::answer(ControllerResponse::AlterPartition {
                error: ApiError::new(
                    ec::STALE_BROKER_EPOCH,
                    format!("Broker {broker_id} epoch {broker_epoch} is not the registered one."),
                ),
                topics: Vec::new(),
                log_index: 0,
            });
        }
        let mut records = Vec::new();
        let mut results = Vec::new();
        for topic in topics {
            let mut out = Vec::new();
            let t = image.topic_by_id(&topic.topic_id);
            for item in &topic.partitions {
                let err = |error: ApiError| AlterPartitionResult {
                    partition: item.partition,
                    error,
                    leader_id: -1,
                    leader_epoch: -1,
                    isr: vec![],
                    partition_epoch: -1,
                };
                let Some(t) = t else {
                    out.push(err(ApiError::new(
                        ec::UNKNOWN_TOPIC_ID,
                        format!("No topic with id {}", topic.topic_id),
                    )));
                    continue;
                };
                let Some(p) = t.partitions.get(&item.partition) else {
                    out.push(err(unknown_partition(&t.name, item.partition)));
                    continue;
                };
                match self.alter_one(image, &t.name, t.id, item.partition, p, broker_id, item) {
                    Ok((record, reg)) => {
                        records.extend(record);
                        out.push(AlterPartitionResult {
                            partition: item.partition,
                            error: ApiError::NONE,
                            leader_id: reg.leader,
                            leader_epoch: reg.leader_epoch,
                            isr: reg.isr,
                            partition_epoch: reg.partition_epoch,
                        });
                    }
                    Err(e) => out.push(err(e)),
                }
            }
            results.push((topic.topic_id, out));
        }
        Outcome::with_records(
            ControllerResponse::AlterPartition {
                error: ApiError::NONE,
                topics: results,
                log_index: 0,
            },
            records,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn alter_one(
        &self,
        image: &MetadataImage,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        p: &PartitionRegistration,
        broker_id: NodeId,
        item: &crate::controller_api::AlterPartitionItem,
    ) -> Result<(Option<MetadataRecord>, PartitionRegistration), ApiError> {
        if p.leader != broker_id {
            return Err(ApiError::new(
                ec::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "Broker {broker_id} is not the leader of {topic}-{partition} (leader: {}).",
                    p.leader
                ),
            ));
        }
        if item.leader_epoch != p.leader_epoch {
            return Err(ApiError::new(
                ec::FENCED_LEADER_EPOCH,
                format!(
                    "Leader epoch {} of {topic}-{partition} is not the current {}.",
                    item.leader_epoch, p.leader_epoch
                ),
            ));
        }
        if item.partition_epoch != p.partition_epoch {
            return Err(ApiError::new(
                ec::INVALID_UPDATE_VERSION,
                format!(
                    "Partition epoch {} of {topic}-{partition} is not the current {}.",
                    item.partition_epoch, p.partition_epoch
                ),
            ));
        }
        let new_isr = &item.new_isr;
        if !new_isr.contains(&p.leader)
            || new_isr.iter().collect::<BTreeSet<_>>().len() != new_isr.len()
        {
            return Err(ApiError::new(
                ec::INVALID_REQUEST,
                format!("Invalid ISR {new_isr:?} for {topic}-{partition}: it must hold the leader and no duplicates."),
            ));
        }
        if let Some(bad) = new_isr
            .iter()
            .find(|r| !p.replicas.contains(r) || !image.live(**r))
        {
            return Err(ApiError::new(
                ec::INELIGIBLE_REPLICA,
                format!("Replica {bad} of {topic}-{partition} is not eligible for the ISR (not a replica, fenced or shutting down)."),
            ));
        }
        let mut change = PartitionChangeRecord {
            partition_id: partition,
            topic_id,
            isr: (*new_isr != p.isr).then(|| new_isr.clone()),
            ..Default::default()
        };
        complete_reassignment_if_done(image, p, new_isr, &mut change);
        if change
            == (PartitionChangeRecord {
                partition_id: partition,
                topic_id,
                ..Default::default()
            })
        {
            return Ok((None, p.clone()));
        }
        let reg = apply_change(p, &change);
        Ok((Some(MetadataRecord::PartitionChange(change)), reg))
    }

    pub(super) fn allocate_producer_ids(
        &mut self,
        ctx: &Ctx,
        broker_id: NodeId,
        broker_epoch: i64,
    ) -> Outcome {
        if ctx
            .image
            .broker(broker_id)
            .is_none_or(|b| b.broker_epoch != broker_epoch)
        {
            return Outcome::answer(ControllerResponse::AllocateProducerIds {
                error: ApiError::new(
                    ec::STALE_BROKER_EPOCH,
                    format!("Broker {broker_id} epoch {broker_epoch} is not the registered one."),
                ),
                producer_id_start: -1,
                producer_id_len: 0,
            });
        }
        let start = ctx.image.producer_ids().next_producer_id;
        Outcome::with_records(
            ControllerResponse::AllocateProducerIds {
                error: ApiError::NONE,
                producer_id_start: start,
                producer_id_len: PRODUCER_ID_BLOCK_SIZE,
            },
            vec![MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id,
                broker_epoch,
                next_producer_id: start + PRODUCER_ID_BLOCK_SIZE as i64,
            })],
        )
    }

    /// Kafka's ElectLeaders. Without a partition list every partition is
    /// considered and only those that needed an election are reported.
    pub(super) fn elect_leaders(
        &mut self,
        ctx: &Ctx,
        election_type: ElectionType,
        partitions: Option<&[(String, i32)]>,
    ) -> Outcome {
        let image = ctx.image;
        let all: Vec<(String, i32)>;
        let wanted = match partitions {
            Some(p) => p,
            None => {
                all = image
                    .topics()
                    .flat_map(|t| t.partitions.keys().map(|p| (t.name.clone(), *p)))
                    .collect();
                &all
            }
        };
        let mut records = Vec::new();
        let mut results = Vec::new();
        for (topic, partition) in wanted {
            let Some((t, p)) = image
                .topic(topic)
                .and_then(|t| t.partitions.get(partition).map(|p| (t, p)))
            else {
                results.push((
                    topic.clone(),
                    *partition,
                    unknown_partition(topic, *partition),
                ));
                continue;
            };
            let result = match election_type {
                ElectionType::Preferred => {
                    let preferred = p.replicas.first().copied().unwrap_or(NO_LEADER);
                    if p.leader == preferred {
                        Err(ApiError::new(
                            ec::ELECTION_NOT_NEEDED,
                            "Leader election not needed for topic partition.",
                        ))
                    } else if !p.isr.contains(&preferred) || !image.live(preferred) {
                        Err(ApiError::new(
                            ec::PREFERRED_LEADER_NOT_AVAILABLE,
                            format!("Failed to elect leader for partition {topic}-{partition} under strategy PreferredReplicaPartitionLeaderElectionStrategy"),
                        ))
                    } else {
                        Ok((p.isr.clone(), preferred))
                    }
                }
                ElectionType::Unclean => {
                    if p.leader != NO_LEADER && image.live(p.leader) {
                        Err(ApiError::new(
                            ec::ELECTION_NOT_NEEDED,
                            "Leader election not needed for topic partition.",
                        ))
                    } else {
                        match elect_leader(&p.replicas, &p.isr, image, true) {
                            Election::Clean(l) => Ok((p.isr.clone(), l)),
                            Election::Unclean(l) => Ok((vec![l], l)),
                            Election::None => Err(ApiError::new(
                                ec::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                                format!("Failed to elect leader for partition {topic}-{partition} under strategy UncleanLeaderElectionStrategy"),
                            )),
                        }
                    }
                }
            };
            match result {
                Ok((isr, leader)) => {
                    records.push(MetadataRecord::PartitionChange(change_record(
                        t.id, *partition, p, isr, leader,
                    )));
                    results.push((topic.clone(), *partition, ApiError::NONE));
                }
                Err(e) if partitions.is_none() && e.error_code == ec::ELECTION_NOT_NEEDED => {}
                Err(e) => results.push((topic.clone(), *partition, e)),
            }
        }
        Outcome::with_records(
            ControllerResponse::ElectLeaders {
                error: ApiError::NONE,
                partitions: results,
                log_index: 0,
            },
            records,
        )
    }

    /// KIP-455 reassignment: replicas become target ∪ current with the
    /// difference in adding/removing; it completes (here, or later on
    /// AlterPartition) once every target replica is in the ISR.
    pub(super) fn alter_partition_reassignments(
        &mut self,
        ctx: &Ctx,
        reassignments: &[(String, i32, Option<Vec<NodeId>>)],
    ) -> Outcome {
        let image = ctx.image;
        let mut records = Vec::new();
        let mut results = Vec::new();
        for (topic, partition, target) in reassignments {
            let Some((t, p)) = image
                .topic(topic)
                .and_then(|t| t.partitions.get(partition).map(|p| (t, p)))
            else {
                results.push((
                    topic.clone(),
                    *partition,
                    unknown_partition(topic, *partition),
                ));
                continue;
            };
            match reassign(image, p, target.as_deref(), topic, *partition) {
                Ok(Some(mut change)) => {
                    change.topic_id = t.id;
                    change.partition_id = *partition;
                    records.push(MetadataRecord::PartitionChange(change));
                    results.push((topic.clone(), *partition, ApiError::NONE));
                }
                Ok(None) => results.push((topic.clone(), *partition, ApiError::NONE)),
                Err(e) => results.push((topic.clone(), *partition, e)),
            }
        }
        Outcome::with_records(
            ControllerResponse::AlterPartitionReassignments {
                error: ApiError::NONE,
                partitions: results,
                log_index: 0,
            },
            records,
        )
    }

    pub(super) fn list_partition_reassignments(
        &mut self,
        ctx: &Ctx,
        partitions: Option<&[(String, i32)]>,
    ) -> Outcome {
        let ongoing = |p: &PartitionRegistration| {
            !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty()
        };
        let mut out = Vec::new();
        for t in ctx.image.topics() {
            for (id, p) in &t.partitions {
                let asked =
                    partitions.is_none_or(|ps| ps.iter().any(|(n, i)| *n == t.name && i == id));
                if asked && ongoing(p) {
                    out.push((
                        t.name.clone(),
                        *id,
                        p.replicas.clone(),
                        p.adding_replicas.clone(),
                        p.removing_replicas.clone(),
                    ));
                }
            }
        }
        Outcome::answer(ControllerResponse::ListPartitionReassignments {
            error: ApiError::NONE,
            partitions: out,
        })
    }

    /// A batch computed by a broker: proposed if it still applies to the
    /// controller's image.
    pub(super) fn propose_records(&mut self, ctx: &Ctx, records: Vec<MetadataRecord>) -> Outcome {
        let answer = |error| ControllerResponse::Propose {
            error,
            log_index: 0,
        };
        if records.is_empty() {
            return Outcome::answer(answer(ApiError::NONE));
        }
        let mut check = ctx.image.clone();
        if let Err((i, e)) = check.replay_batch(&records) {
            let code = match &e {
                ReplayError::TopicExists(_) => ec::TOPIC_ALREADY_EXISTS,
                ReplayError::UnknownTopicId(_) => ec::UNKNOWN_TOPIC_ID,
                ReplayError::UnknownPartition { .. } => ec::UNKNOWN_TOPIC_OR_PARTITION,
                _ => ec::INVALID_REQUEST,
            };
            return Outcome::answer(answer(ApiError::new(code, format!("record {i}: {e}"))));
        }
        Outcome::with_records(answer(ApiError::NONE), records)
    }
}

/// (replicas, initial ISR) of each new partition, in partition order.
type NewPartitions = Vec<(Vec<i32>, Vec<i32>)>;

/// A validated manual assignment.
fn manual_assignment(
    image: &MetadataImage,
    assignments: &BTreeMap<i32, Vec<NodeId>>,
) -> Result<NewPartitions, ApiError> {
    let bad = |m: String| ApiError::new(ec::INVALID_REPLICA_ASSIGNMENT, m);
    if assignments.keys().copied().ne(0..assignments.len() as i32) {
        return Err(bad(
            "Partitions in the manual assignment must be numbered consecutively from 0.".into(),
        ));
    }
    let rf = assignments[&0].len();
    let mut out = Vec::new();
    for (p, replicas) in assignments {
        if replicas.len() != rf {
            return Err(bad("All partitions in the manual partition assignment must have the same number of replicas.".into()));
        }
        let isr = check_manual_replicas(image, *p, replicas)?;
        out.push((replicas.clone(), isr));
    }
    Ok(out)
}

/// The registration `change` makes of `p` (as replay will).
fn apply_change(p: &PartitionRegistration, c: &PartitionChangeRecord) -> PartitionRegistration {
    let mut r = p.clone();
    if let Some(v) = &c.isr {
        r.isr = v.clone();
    }
    if let Some(v) = &c.replicas {
        r.replicas = v.clone();
    }
    if let Some(v) = &c.adding_replicas {
        r.adding_replicas = v.clone();
    }
    if let Some(v) = &c.removing_replicas {
        r.removing_replicas = v.clone();
    }
    if c.leader != NO_LEADER_CHANGE {
        r.leader = c.leader;
        r.leader_epoch += 1;
    }
    r.partition_epoch += 1;
    r
}

/// If `p` is being reassigned and every target replica is in `isr`, sets
/// `change` to finish it: replicas = target, ISR limited to it, the leader
/// re-elected when it is not among them (Kafka's
/// `PartitionChangeBuilder.completeReassignmentIfNeeded`).
fn complete_reassignment_if_done(
    image: &MetadataImage,
    p: &PartitionRegistration,
    isr: &[i32],
    change: &mut PartitionChangeRecord,
) {
    if p.adding_replicas.is_empty() && p.removing_replicas.is_empty() {
        return;
    }
    let target: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.removing_replicas.contains(r))
        .collect();
    if !target.iter().all(|r| isr.contains(r)) {
        return;
    }
    let new_isr: Vec<i32> = isr.iter().copied().filter(|r| target.contains(r)).collect();
    change.replicas = Some(target.clone());
    change.adding_replicas = Some(vec![]);
    change.removing_replicas = Some(vec![]);
    change.isr = (new_isr != p.isr).then(|| new_isr.clone());
    if !target.contains(&p.leader) {
        change.leader = match elect_leader(&target, &new_isr, image, false) {
            Election::Clean(l) => l,
            _ => NO_LEADER,
        };
    }
}

/// The change starting, re-targeting or cancelling a reassignment of `p`
/// (`None`: nothing to change). Only `isr`/`leader`/replica fields are set.
fn reassign(
    image: &MetadataImage,
    p: &PartitionRegistration,
    target: Option<&[i32]>,
    topic: &str,
    partition: i32,
) -> Result<Option<PartitionChangeRecord>, ApiError> {
    let bad = |m: String| ApiError::new(ec::INVALID_REPLICA_ASSIGNMENT, m);
    // The replicas before any ongoing reassignment.
    let original: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect();
    let ongoing = !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty();
    let (replicas, adding, removing, target) = match target {
        None => {
            if !ongoing {
                return Err(ApiError::new(
                    ec::NO_REASSIGNMENT_IN_PROGRESS,
                    format!("No ongoing reassignment for partition {topic}-{partition}."),
                ));
            }
            (original.clone(), vec![], vec![], original.clone())
        }
        Some(target) => {
            if target.is_empty() {
                return Err(bad(format!(
                    "The target replica list of {topic}-{partition} is empty."
                )));
            }
            if target.iter().collect::<BTreeSet<_>>().len() != target.len() {
                return Err(bad(format!(
                    "The target replica list of {topic}-{partition} has duplicates."
                )));
            }
            if let Some(unknown) = target.iter().find(|r| image.broker(**r).is_none()) {
                return Err(bad(format!(
                    "The manual partition assignment includes broker {unknown}, but no such broker is registered."
                )));
            }
            if !ongoing && target == original.as_slice() {
                return Ok(None);
            }
            let mut replicas = target.to_vec();
            replicas.extend(original.iter().filter(|r| !target.contains(r)));
            let adding: Vec<i32> = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            let removing: Vec<i32> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            (replicas, adding, removing, target.to_vec())
        }
    };
    let mut isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(bad(format!(
            "No replica of {topic}-{partition} in the ISR {:?} would remain.",
            p.isr
        )));
    }
    let mut reg = PartitionRegistration {
        replicas,
        isr: isr.clone(),
        adding_replicas: adding,
        removing_replicas: removing,
        ..p.clone()
    };
    // Finished at once when every target replica is already in sync
    // (a reorder, a removal, or a cancel).
    if target.iter().all(|r| isr.contains(r)) {
        isr.retain(|r| target.contains(r));
        reg = PartitionRegistration {
            replicas: target.clone(),
            isr,
            adding_replicas: vec![],
            removing_replicas: vec![],
            ..reg
        };
    }
    let leader = if reg.replicas.contains(&p.leader) && reg.isr.contains(&p.leader) {
        NO_LEADER_CHANGE
    } else {
        match elect_leader(&reg.replicas, &reg.isr, image, false) {
            Election::Clean(l) => l,
            _ => NO_LEADER,
        }
    };
    Ok(Some(PartitionChangeRecord {
        isr: (reg.isr != p.isr).then_some(reg.isr),
        replicas: (reg.replicas != p.replicas).then_some(reg.replicas),
        adding_replicas: (reg.adding_replicas != p.adding_replicas).then_some(reg.adding_replicas),
        removing_replicas: (reg.removing_replicas != p.removing_replicas)
            .then_some(reg.removing_replicas),
        leader: if leader == p.leader {
            NO_LEADER_CHANGE
        } else {
            leader
        },
        ..Default::default()
    }))
}
