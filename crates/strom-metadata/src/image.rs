//! The metadata image: the state the metadata log describes, built only by
//! replaying [`MetadataRecord`]s in log order (pure and deterministic, so every
//! node that applies the same log holds an equal image).
//!
//! Owner: the quorum's state machine, which replays each committed entry into
//! a fresh image and publishes it as an `Arc<MetadataImage>` (a watch channel).
//! Readers never lock: they hold an immutable snapshot. Each part (topics,
//! brokers, configs, …) sits behind its own `Arc`, so cloning an image is a
//! handful of reference-count bumps and replaying a batch copies only the
//! parts it touches (copy-on-write with `Arc::make_mut`).
//!
//! A batch is applied atomically: [`MetadataImage::replay_batch`] either
//! applies every record or none (and says which record was invalid), so a bad
//! proposal can never leave the image half-changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::*;

/// One partition's registration: replicas, ISR, leader and epochs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRegistration {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub removing_replicas: Vec<i32>,
    pub adding_replicas: Vec<i32>,
    /// `-1` when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A topic with its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: BTreeMap<i32, PartitionRegistration>,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    pub broker_epoch: i64,
    pub endpoints: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

/// A resource configs belong to (Kafka's `ConfigResource`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigResource {
    pub resource_type: i8,
    pub name: String,
}

/// A user's SCRAM credential for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// The producer-id blocks handed out so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsImage {
    /// The first id of the next block to hand out.
    pub next_producer_id: i64,
    /// The broker that took the last block (-1: none yet).
    pub last_broker_id: i32,
    pub last_broker_epoch: i64,
}

/// Why a record cannot be applied to the image. A batch with such a record is
/// not applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic id {0} already exists")]
    TopicIdExists(Uuid),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("unknown partition {partition} of topic id {topic_id}")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    #[error("broker {broker_id}: {reason}")]
    Broker { broker_id: i32, reason: String },
    #[error("producer id block must grow: next {next} <= current {current}")]
    ProducerIdsNotIncreasing { next: i64, current: i64 },
    #[error("ACL {0} already exists")]
    AclExists(Uuid),
    #[error("unknown ACL {0}")]
    UnknownAcl(Uuid),
    #[error("no SCRAM credential of user {name} for mechanism {mechanism}")]
    UnknownScramCredential { name: String, mechanism: i8 },
}

/// An immutable, cheaply cloned view of cluster metadata; see the module doc.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataImage {
    // `Arc<str>` keys: copying a map on write then costs reference counts,
    // not a string allocation per topic.
    topics: Arc<BTreeMap<Arc<str>, Arc<TopicImage>>>,
    topic_names: Arc<BTreeMap<Uuid, Arc<str>>>,
    brokers: Arc<BTreeMap<i32, Arc<BrokerRegistration>>>,
    configs: Arc<BTreeMap<ConfigResource, Arc<BTreeMap<String, String>>>>,
    acls: Arc<BTreeMap<Uuid, Arc<AccessControlEntryRecord>>>,
    scram: Arc<BTreeMap<String, BTreeMap<i8, ScramCredential>>>,
    quotas: Arc<BTreeMap<Vec<EntityData>, BTreeMap<String, f64>>>,
    features: Arc<BTreeMap<String, i16>>,
    producer_ids: ProducerIdsImage,
}

impl MetadataImage {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }
    /// The topic with id `id`.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }
    /// Topics in name order.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topics.values()
    }
    /// The registration of broker `id`.
    pub fn broker(&self, id: i32) -> Option<&Arc<BrokerRegistration>> {
        self.brokers.get(&id)
    }
    /// Registered brokers in id order, fenced ones included.
    pub fn brokers(&self) -> impl Iterator<Item = &Arc<BrokerRegistration>> {
        self.brokers.values()
    }
    /// The configs set explicitly on a resource.
    pub fn configs(&self, resource_type: i8, name: &str) -> Option<&BTreeMap<String, String>> {
        self.configs
            .get(&ConfigResource {
                resource_type,
                name: name.to_string(),
            })
            .map(|c| &**c)
    }
    /// All ACL bindings by id.
    pub fn acls(&self) -> &BTreeMap<Uuid, Arc<AccessControlEntryRecord>> {
        &self.acls
    }
    /// The SCRAM credential of `user` for `mechanism`.
    pub fn scram_credential(&self, user: &str, mechanism: i8) -> Option<&ScramCredential> {
        self.scram.get(user).and_then(|m| m.get(&mechanism))
    }
    /// Users with SCRAM credentials and their credentials by mechanism.
    pub fn scram_users(&self) -> &BTreeMap<String, BTreeMap<i8, ScramCredential>> {
        &self.scram
    }
    /// Client quotas by entity.
    pub fn quotas(&self) -> &BTreeMap<Vec<EntityData>, BTreeMap<String, f64>> {
        &self.quotas
    }
    /// A finalized feature's level (absent = level 0).
    pub fn feature_level(&self, name: &str) -> Option<i16> {
        self.features.get(name).copied()
    }
    /// Producer-id blocks handed out so far.
    pub fn producer_ids(&self) -> &ProducerIdsImage {
        &self.producer_ids
    }

    /// Replays a batch (one log entry) atomically: all records or, on the
    /// first invalid one, none — `self` is untouched and the error names the
    /// record's position in the batch.
    pub fn replay_batch(&mut self, records: &[MetadataRecord]) -> Result<(), (usize, ReplayError)> {
        // The backup only holds references: parts are copied when first
        // written, as they would be anyway while a reader shares them.
        let backup = self.clone();
        self.replay_all(records).inspect_err(|_| *self = backup)
    }

    /// Replays records in order, stopping at the first invalid one (which is
    /// returned with its position); earlier records stay applied.
    pub(crate) fn replay_all(
        &mut self,
        records: &[MetadataRecord],
    ) -> Result<(), (usize, ReplayError)> {
        for (i, r) in records.iter().enumerate() {
            self.replay(r).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// Replays one record. On error the image may be partly changed: callers
    /// that need atomicity use [`Self::replay_batch`].
    pub fn replay(&mut self, record: &MetadataRecord) -> Result<(), ReplayError> {
        match record {
            MetadataRecord::Topic(r) => {
                if self.topics.contains_key(r.name.as_str()) {
                    return Err(ReplayError::TopicExists(r.name.clone()));
                }
                if self.topic_names.contains_key(&r.topic_id) {
                    return Err(ReplayError::TopicIdExists(r.topic_id));
                }
                let key: Arc<str> = Arc::from(r.name.as_str());
                Arc::make_mut(&mut self.topic_names).insert(r.topic_id, key.clone());
                Arc::make_mut(&mut self.topics).insert(
                    key,
                    Arc::new(TopicImage {
                        name: r.name.clone(),
                        id: r.topic_id,
                        partitions: BTreeMap::new(),
                    }),
                );
            }
            MetadataRecord::Partition(r) => {
                let topic = self.topic_mut(&r.topic_id)?;
                topic.partitions.insert(
                    r.partition_id,
                    PartitionRegistration {
                        replicas: r.replicas.clone(),
                        isr: r.isr.clone(),
                        removing_replicas: r.removing_replicas.clone(),
                        adding_replicas: r.adding_replicas.clone(),
                        leader: r.leader,
                        leader_epoch: r.leader_epoch,
                        partition_epoch: r.partition_epoch,
                    },
                );
            }
            MetadataRecord::PartitionChange(r) => {
                let topic = self.topic_mut(&r.topic_id)?;
                let p = topic.partitions.get_mut(&r.partition_id).ok_or(
                    ReplayError::UnknownPartition {
                        topic_id: r.topic_id,
                        partition: r.partition_id,
                    },
                )?;
                if let Some(isr) = &r.isr {
                    p.isr = isr.clone();
                }
                if let Some(replicas) = &r.replicas {
                    p.replicas = replicas.clone();
                }
                if let Some(v) = &r.removing_replicas {
                    p.removing_replicas = v.clone();
                }
                if let Some(v) = &r.adding_replicas {
                    p.adding_replicas = v.clone();
                }
                if r.leader != NO_LEADER_CHANGE {
                    p.leader = r.leader;
                    p.leader_epoch += 1;
                }
                p.partition_epoch += 1;
            }
            MetadataRecord::RemoveTopic(r) => {
                let name = Arc::make_mut(&mut self.topic_names)
                    .remove(&r.topic_id)
                    .ok_or(ReplayError::UnknownTopicId(r.topic_id))?;
                Arc::make_mut(&mut self.topics).remove(&*name);
                // Kafka drops a deleted topic's configs with it, so a topic
                // re-created under the same name starts from the defaults.
                Arc::make_mut(&mut self.configs).remove(&ConfigResource {
                    resource_type: resource_type::TOPIC,
                    name: name.to_string(),
                });
            }
            MetadataRecord::RegisterBroker(r) => {
                Arc::make_mut(&mut self.brokers).insert(
                    r.broker_id,
                    Arc::new(BrokerRegistration {
                        broker_id: r.broker_id,
                        incarnation_id: r.incarnation_id,
                        broker_epoch: r.broker_epoch,
                        endpoints: r.endpoints.clone(),
                        rack: r.rack.clone(),
                        fenced: r.fenced,
                        in_controlled_shutdown: r.in_controlled_shutdown,
                    }),
                );
            }
            MetadataRecord::UnregisterBroker(r) => {
                self.broker_mut(r.broker_id, r.broker_epoch)?;
                Arc::make_mut(&mut self.brokers).remove(&r.broker_id);
            }
            MetadataRecord::FenceBroker(r) => self.broker_mut(r.id, r.epoch)?.fenced = true,
            MetadataRecord::UnfenceBroker(r) => self.broker_mut(r.id, r.epoch)?.fenced = false,
            MetadataRecord::BrokerRegistrationChange(r) => {
                let b = self.broker_mut(r.broker_id, r.broker_epoch)?;
                match r.fenced {
                    1 => b.fenced = true,
                    -1 => b.fenced = false,
                    _ => {}
                }
                if r.in_controlled_shutdown == 1 {
                    b.in_controlled_shutdown = true;
                }
            }
            MetadataRecord::Config(r) => {
                let key = ConfigResource {
                    resource_type: r.resource_type,
                    name: r.resource_name.clone(),
                };
                let configs = Arc::make_mut(&mut self.configs);
                match &r.value {
                    Some(v) => {
                        Arc::make_mut(configs.entry(key).or_default())
                            .insert(r.name.clone(), v.clone());
                    }
                    None => {
                        if let Some(c) = configs.get_mut(&key) {
                            Arc::make_mut(c).remove(&r.name);
                            if c.is_empty() {
                                configs.remove(&key);
                            }
                        }
                    }
                }
            }
            MetadataRecord::ProducerIds(r) => {
                if r.next_producer_id <= self.producer_ids.next_producer_id {
                    return Err(ReplayError::ProducerIdsNotIncreasing {
                        next: r.next_producer_id,
                        current: self.producer_ids.next_producer_id,
                    });
                }
                self.producer_ids = ProducerIdsImage {
                    next_producer_id: r.next_producer_id,
                    last_broker_id: r.broker_id,
                    last_broker_epoch: r.broker_epoch,
                };
            }
            MetadataRecord::AccessControlEntry(r) => {
                if self.acls.contains_key(&r.id) {
                    return Err(ReplayError::AclExists(r.id));
                }
                Arc::make_mut(&mut self.acls).insert(r.id, Arc::new(r.clone()));
            }
            MetadataRecord::RemoveAccessControlEntry(r) => {
                Arc::make_mut(&mut self.acls)
                    .remove(&r.id)
                    .ok_or(ReplayError::UnknownAcl(r.id))?;
            }
            MetadataRecord::UserScramCredential(r) => {
                Arc::make_mut(&mut self.scram)
                    .entry(r.name.clone())
                    .or_default()
                    .insert(
                        r.mechanism,
                        ScramCredential {
                            salt: r.salt.clone(),
                            stored_key: r.stored_key.clone(),
                            server_key: r.server_key.clone(),
                            iterations: r.iterations,
                        },
                    );
            }
            MetadataRecord::RemoveUserScramCredential(r) => {
                let unknown = || ReplayError::UnknownScramCredential {
                    name: r.name.clone(),
                    mechanism: r.mechanism,
                };
                let scram = Arc::make_mut(&mut self.scram);
                let user = scram.get_mut(&r.name).ok_or_else(unknown)?;
                user.remove(&r.mechanism).ok_or_else(unknown)?;
                if user.is_empty() {
                    scram.remove(&r.name);
                }
            }
            MetadataRecord::ClientQuota(r) => {
                let quotas = Arc::make_mut(&mut self.quotas);
                if r.remove {
                    if let Some(q) = quotas.get_mut(&r.entity) {
                        q.remove(&r.key);
                        if q.is_empty() {
                            quotas.remove(&r.entity);
                        }
                    }
                } else {
                    quotas
                        .entry(r.entity.clone())
                        .or_default()
                        .insert(r.key.clone(), r.value);
                }
            }
            MetadataRecord::FeatureLevel(r) => {
                let features = Arc::make_mut(&mut self.features);
                if r.feature_level == 0 {
                    features.remove(&r.name);
                } else {
                    features.insert(r.name.clone(), r.feature_level);
                }
            }
        }
        Ok(())
    }

    fn topic_mut(&mut self, id: &Uuid) -> Result<&mut TopicImage, ReplayError> {
        let name = self
            .topic_names
            .get(id)
            .ok_or(ReplayError::UnknownTopicId(*id))?
            .clone();
        let topic = Arc::make_mut(&mut self.topics)
            .get_mut(&*name)
            .expect("topic_names and topics agree");
        Ok(Arc::make_mut(topic))
    }

    fn broker_mut(&mut self, id: i32, epoch: i64) -> Result<&mut BrokerRegistration, ReplayError> {
        let b = Arc::make_mut(&mut self.brokers)
            .get_mut(&id)
            .ok_or(ReplayError::Broker {
                broker_id: id,
                reason: "not registered".into(),
            })?;
        if b.broker_epoch != epoch {
            return Err(ReplayError::Broker {
                broker_id: id,
                reason: format!(
                    "epoch {epoch} does not match registration epoch {}",
                    b.broker_epoch
                ),
            });
        }
        Ok(Arc::make_mut(b))
    }

    /// The image in a serializable form (for Raft snapshots).
    pub(crate) fn to_snapshot(&self) -> ImageSnapshot {
        ImageSnapshot {
            topics: self.topics.values().map(|t| (**t).clone()).collect(),
            brokers: self.brokers.values().map(|b| (**b).clone()).collect(),
            configs: self
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), (**v).clone()))
                .collect(),
            acls: self.acls.values().map(|a| (**a).clone()).collect(),
            scram: self
                .scram
                .iter()
                .flat_map(|(u, m)| m.iter().map(move |(mech, c)| (u.clone(), *mech, c.clone())))
                .collect(),
            quotas: self
                .quotas
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            features: (*self.features).clone(),
            producer_ids: self.producer_ids.clone(),
        }
    }

    /// Rebuilds an image from its snapshot form.
    pub(crate) fn from_snapshot(s: ImageSnapshot) -> Self {
        let mut scram: BTreeMap<String, BTreeMap<i8, ScramCredential>> = BTreeMap::new();
        for (user, mech, cred) in s.scram {
            scram.entry(user).or_default().insert(mech, cred);
        }
        Self {
            topic_names: Arc::new(
                s.topics
                    .iter()
                    .map(|t| (t.id, Arc::from(t.name.as_str())))
                    .collect(),
            ),
            topics: Arc::new(
                s.topics
                    .into_iter()
                    .map(|t| (Arc::from(t.name.as_str()), Arc::new(t)))
                    .collect(),
            ),
            brokers: Arc::new(
                s.brokers
                    .into_iter()
                    .map(|b| (b.broker_id, Arc::new(b)))
                    .collect(),
            ),
            configs: Arc::new(
                s.configs
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(v)))
                    .collect(),
            ),
            acls: Arc::new(s.acls.into_iter().map(|a| (a.id, Arc::new(a))).collect()),
            scram: Arc::new(scram),
            quotas: Arc::new(s.quotas.into_iter().collect()),
            features: Arc::new(s.features),
            producer_ids: s.producer_ids,
        }
    }
}

/// [`MetadataImage`] as plain lists, because JSON maps need string keys.
#[derive(Serialize, Deserialize)]
pub(crate) struct ImageSnapshot {
    topics: Vec<TopicImage>,
    brokers: Vec<BrokerRegistration>,
    configs: Vec<(ConfigResource, BTreeMap<String, String>)>,
    acls: Vec<AccessControlEntryRecord>,
    scram: Vec<(String, i8, ScramCredential)>,
    quotas: Vec<(Vec<EntityData>, BTreeMap<String, f64>)>,
    features: BTreeMap<String, i16>,
    producer_ids: ProducerIdsImage,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn create_topic(name: &str, id: Uuid, partitions: i32) -> Vec<MetadataRecord> {
        let mut v = vec![MetadataRecord::Topic(TopicRecord {
            name: name.into(),
            topic_id: id,
        })];
        for p in 0..partitions {
            v.push(MetadataRecord::Partition(PartitionRecord {
                partition_id: p,
                topic_id: id,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                removing_replicas: vec![],
                adding_replicas: vec![],
                leader: 1 + p % 3,
                leader_epoch: 0,
                partition_epoch: 0,
            }));
        }
        v
    }

    fn register(id: i32, epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: id,
            incarnation_id: tid(100 + id as u128),
            broker_epoch: epoch,
            endpoints: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: "localhost".into(),
                port: 9092 + id as u16,
                security_protocol: 0,
            }],
            rack: Some(format!("r{}", id % 2)),
            fenced: true,
            in_controlled_shutdown: false,
        })
    }

    #[test]
    fn topics_and_partitions_by_name_and_id() {
        let mut img = MetadataImage::default();
        img.replay_batch(&create_topic("a", tid(1), 3)).unwrap();
        img.replay_batch(&create_topic("b", tid(2), 1)).unwrap();
        assert_eq!(img.topic("a").unwrap().id, tid(1));
        assert_eq!(img.topic_by_id(&tid(2)).unwrap().name, "b");
        assert_eq!(img.topic("a").unwrap().partitions.len(), 3);
        assert_eq!(img.topic("a").unwrap().partitions[&2].leader, 3);
        let names: Vec<_> = img.topics().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // Same name or same id again: the whole batch is rejected, nothing applied.
        let before = img.clone();
        let err = img.replay_batch(&create_topic("a", tid(9), 1)).unwrap_err();
        assert_eq!(err, (0, ReplayError::TopicExists("a".into())));
        let err = img.replay_batch(&create_topic("c", tid(1), 1)).unwrap_err();
        assert_eq!(err, (0, ReplayError::TopicIdExists(tid(1))));
        assert_eq!(img, before);
    }

    #[test]
    fn partition_change_bumps_epochs_like_kafka() {
        let mut img = MetadataImage::default();
        img.replay_batch(&create_topic("a", tid(1), 1)).unwrap();
        // ISR shrink only: partition epoch moves, leader epoch does not.
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: tid(1),
            partition_id: 0,
            isr: Some(vec![1, 2]),
            ..Default::default()
        }))
        .unwrap();
        let p = img.topic("a").unwrap().partitions[&0].clone();
        assert_eq!(
            (
                p.isr.as_slice(),
                p.leader,
                p.leader_epoch,
                p.partition_epoch
            ),
            (&[1, 2][..], 1, 0, 1)
        );
        // New leader: both epochs move.
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: tid(1),
            partition_id: 0,
            leader: 2,
            isr: Some(vec![2]),
            ..Default::default()
        }))
        .unwrap();
        let p = &img.topic("a").unwrap().partitions[&0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
        assert_eq!(p.replicas, [1, 2, 3]);
        // Unknown partition / topic.
        let e = img
            .replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
                topic_id: tid(1),
                partition_id: 5,
                ..Default::default()
            }))
            .unwrap_err();
        assert!(matches!(
            e,
            ReplayError::UnknownPartition { partition: 5, .. }
        ));
        let e = img
            .replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
                topic_id: tid(7),
                ..Default::default()
            }))
            .unwrap_err();
        assert_eq!(e, ReplayError::UnknownTopicId(tid(7)));
    }

    #[test]
    fn remove_topic_drops_its_configs_and_frees_the_name() {
        let mut img = MetadataImage::default();
        img.replay_batch(&create_topic("a", tid(1), 2)).unwrap();
        let set = |name: &str, v: Option<&str>| {
            MetadataRecord::Config(ConfigRecord {
                resource_type: resource_type::TOPIC,
                resource_name: "a".into(),
                name: name.into(),
                value: v.map(Into::into),
            })
        };
        img.replay_batch(&[
            set("retention.ms", Some("1000")),
            set("cleanup.policy", Some("compact")),
        ])
        .unwrap();
        img.replay(&set("cleanup.policy", None)).unwrap();
        assert_eq!(
            img.configs(resource_type::TOPIC, "a")
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            [(&"retention.ms".to_string(), &"1000".to_string())]
        );
        img.replay(&MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: tid(1),
        }))
        .unwrap();
        assert!(img.topic("a").is_none() && img.topic_by_id(&tid(1)).is_none());
        assert!(img.configs(resource_type::TOPIC, "a").is_none());
        img.replay_batch(&create_topic("a", tid(3), 1)).unwrap();
        assert_eq!(img.topic("a").unwrap().id, tid(3));
        assert_eq!(
            img.replay(&MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: tid(1)
            })),
            Err(ReplayError::UnknownTopicId(tid(1)))
        );
    }

    #[test]
    fn brokers_register_fence_unfence_with_epoch_checks() {
        let mut img = MetadataImage::default();
        img.replay_batch(&[register(1, 10), register(2, 11)])
            .unwrap();
        assert!(img.broker(1).unwrap().fenced);
        img.replay(&MetadataRecord::UnfenceBroker(UnfenceBrokerRecord {
            id: 1,
            epoch: 10,
        }))
        .unwrap();
        assert!(!img.broker(1).unwrap().fenced);
        // Stale epoch: rejected (a broker that re-registered is a new incarnation).
        assert!(img
            .replay(&MetadataRecord::FenceBroker(FenceBrokerRecord {
                id: 1,
                epoch: 9
            }))
            .is_err());
        img.replay(&MetadataRecord::BrokerRegistrationChange(
            BrokerRegistrationChangeRecord {
                broker_id: 1,
                broker_epoch: 10,
                fenced: 1,
                in_controlled_shutdown: 1,
            },
        ))
        .unwrap();
        let b = img.broker(1).unwrap();
        assert!(b.fenced && b.in_controlled_shutdown);
        // Re-registration replaces the old incarnation.
        img.replay(&register(1, 20)).unwrap();
        assert_eq!(img.broker(1).unwrap().broker_epoch, 20);
        assert!(!img.broker(1).unwrap().in_controlled_shutdown);
        img.replay(&MetadataRecord::UnregisterBroker(UnregisterBrokerRecord {
            broker_id: 2,
            broker_epoch: 11,
        }))
        .unwrap();
        assert_eq!(img.brokers().map(|b| b.broker_id).collect::<Vec<_>>(), [1]);
        assert!(img
            .replay(&MetadataRecord::UnfenceBroker(UnfenceBrokerRecord {
                id: 2,
                epoch: 11
            }))
            .is_err());
    }

    #[test]
    fn acls_scram_quotas_features_producer_ids() {
        let mut img = MetadataImage::default();
        let acl = AccessControlEntryRecord {
            id: tid(5),
            resource_type: 2,
            resource_name: "t".into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 3,
            permission_type: 3,
        };
        img.replay(&MetadataRecord::AccessControlEntry(acl.clone()))
            .unwrap();
        assert_eq!(*img.acls()[&tid(5)], acl);
        assert_eq!(
            img.replay(&MetadataRecord::AccessControlEntry(acl)),
            Err(ReplayError::AclExists(tid(5)))
        );
        img.replay(&MetadataRecord::RemoveAccessControlEntry(
            RemoveAccessControlEntryRecord { id: tid(5) },
        ))
        .unwrap();
        assert!(img.acls().is_empty());

        let cred = |mech| {
            MetadataRecord::UserScramCredential(UserScramCredentialRecord {
                name: "alice".into(),
                mechanism: mech,
                salt: vec![1],
                stored_key: vec![2],
                server_key: vec![3],
                iterations: 4096,
            })
        };
        img.replay_batch(&[cred(1), cred(2)]).unwrap();
        assert_eq!(img.scram_credential("alice", 2).unwrap().iterations, 4096);
        let rm = |mech| {
            MetadataRecord::RemoveUserScramCredential(RemoveUserScramCredentialRecord {
                name: "alice".into(),
                mechanism: mech,
            })
        };
        img.replay(&rm(1)).unwrap();
        assert!(img.scram_credential("alice", 1).is_none());
        img.replay(&rm(2)).unwrap();
        assert!(img.scram_users().is_empty());
        assert!(img.replay(&rm(2)).is_err());

        let user = vec![EntityData {
            entity_type: "user".into(),
            entity_name: Some("alice".into()),
        }];
        let quota = |key: &str, value, remove| {
            MetadataRecord::ClientQuota(ClientQuotaRecord {
                entity: user.clone(),
                key: key.into(),
                value,
                remove,
            })
        };
        img.replay_batch(&[
            quota("producer_byte_rate", 1024.0, false),
            quota("consumer_byte_rate", 2048.0, false),
        ])
        .unwrap();
        assert_eq!(img.quotas()[&user]["producer_byte_rate"], 1024.0);
        img.replay_batch(&[
            quota("producer_byte_rate", 0.0, true),
            quota("consumer_byte_rate", 0.0, true),
        ])
        .unwrap();
        assert!(img.quotas().is_empty());

        let feature = |level| {
            MetadataRecord::FeatureLevel(FeatureLevelRecord {
                name: "metadata.version".into(),
                feature_level: level,
            })
        };
        img.replay(&feature(21)).unwrap();
        assert_eq!(img.feature_level("metadata.version"), Some(21));
        img.replay(&feature(0)).unwrap();
        assert_eq!(img.feature_level("metadata.version"), None);

        let pids = |next| {
            MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: 1,
                broker_epoch: 3,
                next_producer_id: next,
            })
        };
        img.replay(&pids(1000)).unwrap();
        assert_eq!(img.producer_ids().next_producer_id, 1000);
        assert!(img.replay(&pids(1000)).is_err());
    }

    #[test]
    fn replay_is_deterministic_and_snapshot_round_trips() {
        let mut batches = vec![
            create_topic("x", tid(1), 4),
            vec![register(1, 1), register(2, 2)],
        ];
        batches.push(vec![MetadataRecord::Config(ConfigRecord {
            resource_type: resource_type::BROKER,
            resource_name: String::new(),
            name: "log.retention.ms".into(),
            value: Some("5".into()),
        })]);
        batches.push(vec![MetadataRecord::UserScramCredential(
            UserScramCredentialRecord {
                name: "bob".into(),
                mechanism: 1,
                salt: vec![9; 16],
                stored_key: vec![8; 32],
                server_key: vec![7; 32],
                iterations: 8192,
            },
        )]);
        let build = || {
            let mut img = MetadataImage::default();
            for b in &batches {
                img.replay_batch(b).unwrap();
            }
            img
        };
        let a = build();
        assert_eq!(a, build());
        let json = serde_json::to_vec(&a.to_snapshot()).unwrap();
        let back = MetadataImage::from_snapshot(serde_json::from_slice(&json).unwrap());
        assert_eq!(back, a);
        // Copy-on-write: replaying into a clone leaves the original as it was.
        let mut b = a.clone();
        b.replay_batch(&create_topic("y", tid(2), 1)).unwrap();
        assert!(a.topic("y").is_none() && b.topic("y").is_some());
        assert!(Arc::ptr_eq(&a.brokers, &b.brokers));
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        /// Records over a small universe of names and ids, so that batches
        /// often collide (duplicate topics, unknown ids, stale epochs).
        fn record() -> impl Strategy<Value = MetadataRecord> {
            let id = (0u128..3).prop_map(Uuid::from_u128);
            let name = (0u8..3).prop_map(|n| format!("t{n}"));
            prop_oneof![
                (name.clone(), id.clone()).prop_map(|(name, topic_id)| MetadataRecord::Topic(
                    TopicRecord { name, topic_id }
                )),
                (id.clone(), 0i32..3, 1i32..4).prop_map(|(topic_id, partition_id, leader)| {
                    MetadataRecord::Partition(PartitionRecord {
                        partition_id,
                        topic_id,
                        replicas: vec![1, 2, 3],
                        isr: vec![leader],
                        removing_replicas: vec![],
                        adding_replicas: vec![],
                        leader,
                        leader_epoch: 0,
                        partition_epoch: 0,
                    })
                }),
                (
                    id.clone(),
                    0i32..3,
                    -2i32..4,
                    proptest::option::of(Just(vec![1, 2]))
                )
                    .prop_map(|(topic_id, partition_id, leader, isr)| {
                        MetadataRecord::PartitionChange(PartitionChangeRecord {
                            partition_id,
                            topic_id,
                            isr,
                            leader,
                            ..Default::default()
                        })
                    }),
                id.clone()
                    .prop_map(|topic_id| MetadataRecord::RemoveTopic(RemoveTopicRecord {
                        topic_id
                    })),
                (1i32..4, 0i64..3).prop_map(|(id, epoch)| super::register(id, epoch)),
                (1i32..4, 0i64..3).prop_map(|(id, epoch)| MetadataRecord::UnfenceBroker(
                    UnfenceBrokerRecord { id, epoch }
                )),
                (name, proptest::option::of("[a-z]{1,3}")).prop_map(|(resource_name, value)| {
                    MetadataRecord::Config(ConfigRecord {
                        resource_type: resource_type::TOPIC,
                        resource_name,
                        name: "retention.ms".into(),
                        value,
                    })
                }),
                (0i64..2000).prop_map(|next_producer_id| MetadataRecord::ProducerIds(
                    ProducerIdsRecord {
                        broker_id: 1,
                        broker_epoch: 1,
                        next_producer_id,
                    }
                )),
            ]
        }

        proptest! {
            /// A failed batch changes nothing; a snapshot taken anywhere and
            /// replayed onward ends equal to the image that never snapshotted
            /// (what a node restarting from a snapshot, or installing one, relies on).
            #[test]
            fn snapshots_are_transparent_and_batches_atomic(
                batches in proptest::collection::vec(proptest::collection::vec(record(), 1..4), 1..40),
                cut in 0usize..40,
            ) {
                let mut direct = MetadataImage::default();
                let mut via_snapshot = MetadataImage::default();
                for (i, b) in batches.iter().enumerate() {
                    let before = direct.clone();
                    if direct.replay_batch(b).is_err() {
                        prop_assert_eq!(&direct, &before);
                    }
                    let _ = via_snapshot.replay_batch(b);
                    if i == cut {
                        let json = serde_json::to_vec(&via_snapshot.to_snapshot()).unwrap();
                        via_snapshot = MetadataImage::from_snapshot(serde_json::from_slice(&json).unwrap());
                    }
                    prop_assert_eq!(&direct, &via_snapshot);
                }
            }
        }
    }
}
