//! The metadata records, modelled on KRaft's (`metadata/src/main/resources/
//! common/metadata/*.json` in Kafka): every change to cluster metadata is one
//! of these, appended to the metadata log and replayed into a
//! [`crate::MetadataImage`].
//!
//! The field names and sentinels follow Kafka's (`leader = -1` is no leader,
//! `PartitionChangeRecord.leader = -2` is no change, a `None` list is "no
//! change"). The encoding is our own (serde, tagged by record type); Kafka's
//! binary record format is not needed because only Strom nodes read this log.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `PartitionRecord.leader` / `PartitionChangeRecord.leader`: no leader.
pub const NO_LEADER: i32 = -1;
/// `PartitionChangeRecord.leader`: the leader does not change.
pub const NO_LEADER_CHANGE: i32 = -2;

/// One change to cluster metadata. A batch of them is one Raft entry and is
/// applied atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    Topic(TopicRecord),
    Partition(PartitionRecord),
    PartitionChange(PartitionChangeRecord),
    RemoveTopic(RemoveTopicRecord),
    RegisterBroker(RegisterBrokerRecord),
    UnregisterBroker(UnregisterBrokerRecord),
    FenceBroker(FenceBrokerRecord),
    UnfenceBroker(UnfenceBrokerRecord),
    BrokerRegistrationChange(BrokerRegistrationChangeRecord),
    Config(ConfigRecord),
    ProducerIds(ProducerIdsRecord),
    AccessControlEntry(AccessControlEntryRecord),
    RemoveAccessControlEntry(RemoveAccessControlEntryRecord),
    UserScramCredential(UserScramCredentialRecord),
    RemoveUserScramCredential(RemoveUserScramCredentialRecord),
    ClientQuota(ClientQuotaRecord),
    FeatureLevel(FeatureLevelRecord),
}

/// A new topic (KRaft `TopicRecord`); its partitions follow as `PartitionRecord`s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
}

/// A partition's full registration (KRaft `PartitionRecord`), written on
/// creation; later changes are `PartitionChangeRecord`s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub partition_id: i32,
    pub topic_id: Uuid,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    #[serde(default)]
    pub removing_replicas: Vec<i32>,
    #[serde(default)]
    pub adding_replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A change to one partition (KRaft `PartitionChangeRecord`). `None` / `-2`
/// fields are unchanged. Replay bumps `partition_epoch` always and
/// `leader_epoch` when the leader field is set (as Kafka's
/// `PartitionRegistration.merge` does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionChangeRecord {
    pub partition_id: i32,
    pub topic_id: Uuid,
    #[serde(default)]
    pub isr: Option<Vec<i32>>,
    #[serde(default = "no_leader_change")]
    pub leader: i32,
    #[serde(default)]
    pub replicas: Option<Vec<i32>>,
    #[serde(default)]
    pub removing_replicas: Option<Vec<i32>>,
    #[serde(default)]
    pub adding_replicas: Option<Vec<i32>>,
}

fn no_leader_change() -> i32 {
    NO_LEADER_CHANGE
}

impl Default for PartitionChangeRecord {
    /// A change of nothing: callers set the fields that change.
    fn default() -> Self {
        Self {
            partition_id: 0,
            topic_id: Uuid::nil(),
            isr: None,
            leader: NO_LEADER_CHANGE,
            replicas: None,
            removing_replicas: None,
            adding_replicas: None,
        }
    }
}

/// A topic and its partitions and configs are removed (KRaft `RemoveTopicRecord`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveTopicRecord {
    pub topic_id: Uuid,
}

/// One listener a broker advertises (KRaft `BrokerEndpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's `SecurityProtocol` id (0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub security_protocol: i16,
}

/// A broker (re)registers (KRaft `RegisterBrokerRecord`). A new incarnation
/// replaces the old registration; it starts fenced until its first heartbeat
/// shows it caught up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterBrokerRecord {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    pub broker_epoch: i64,
    pub endpoints: Vec<BrokerEndpoint>,
    #[serde(default)]
    pub rack: Option<String>,
    #[serde(default = "fenced_default")]
    pub fenced: bool,
    #[serde(default)]
    pub in_controlled_shutdown: bool,
}

fn fenced_default() -> bool {
    true
}

/// A broker is removed (KRaft `UnregisterBrokerRecord`); ignored unless the
/// epoch matches the current registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnregisterBrokerRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
}

/// KRaft `FenceBrokerRecord`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FenceBrokerRecord {
    pub id: i32,
    pub epoch: i64,
}

/// KRaft `UnfenceBrokerRecord`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnfenceBrokerRecord {
    pub id: i32,
    pub epoch: i64,
}

/// KRaft `BrokerRegistrationChangeRecord`: `fenced` is 1 fence, -1 unfence,
/// 0 no change; `in_controlled_shutdown` is 1 entering, 0 no change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerRegistrationChangeRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
    #[serde(default)]
    pub fenced: i8,
    #[serde(default)]
    pub in_controlled_shutdown: i8,
}

/// Kafka's `ConfigResource.Type` ids, as in `ConfigRecord.resourceType`.
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
    pub const CLIENT_METRICS: i8 = 16;
    pub const GROUP: i8 = 32;
}

/// Sets (or with `value: None` deletes) one config of a resource (KRaft
/// `ConfigRecord`). An empty `resource_name` for BROKER is the cluster default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub resource_type: i8,
    pub resource_name: String,
    pub name: String,
    pub value: Option<String>,
}

/// A broker took the producer-id block ending before `next_producer_id`
/// (KRaft `ProducerIdsRecord`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProducerIdsRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub next_producer_id: i64,
}

/// One ACL binding (KRaft `AccessControlEntryRecord`); the numeric fields are
/// Kafka's `ResourceType`, `PatternType`, `AclOperation`, `AclPermissionType` ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessControlEntryRecord {
    pub id: Uuid,
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

/// KRaft `RemoveAccessControlEntryRecord`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveAccessControlEntryRecord {
    pub id: Uuid,
}

/// A SCRAM credential of a user for one mechanism (KRaft
/// `UserScramCredentialRecord`; mechanism 1 = SCRAM-SHA-256, 2 = SCRAM-SHA-512).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserScramCredentialRecord {
    pub name: String,
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// KRaft `RemoveUserScramCredentialRecord`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveUserScramCredentialRecord {
    pub name: String,
    pub mechanism: i8,
}

/// One part of a quota entity: `entity_type` is `user`, `client-id` or `ip`;
/// `entity_name: None` is the default entity of that type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityData {
    pub entity_type: String,
    pub entity_name: Option<String>,
}

/// Sets or removes one quota of an entity (KRaft `ClientQuotaRecord`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientQuotaRecord {
    pub entity: Vec<EntityData>,
    pub key: String,
    pub value: f64,
    #[serde(default)]
    pub remove: bool,
}

/// A feature's finalized level (KRaft `FeatureLevelRecord`); level 0 removes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureLevelRecord {
    pub name: String,
    pub feature_level: i16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_defaults_apply() {
        let r = MetadataRecord::PartitionChange(PartitionChangeRecord {
            partition_id: 3,
            topic_id: Uuid::from_u128(7),
            isr: Some(vec![1, 2]),
            ..Default::default()
        });
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), r);
        // Absent fields take Kafka's defaults: no leader change, fenced on register.
        let r: MetadataRecord = serde_json::from_str(
            r#"{"type":"PartitionChange","partition_id":0,"topic_id":"00000000-0000-0000-0000-000000000001"}"#,
        )
        .unwrap();
        match r {
            MetadataRecord::PartitionChange(c) => {
                assert_eq!(c.leader, NO_LEADER_CHANGE);
                assert_eq!(c.isr, None);
            }
            other => panic!("{other:?}"),
        }
        let r: MetadataRecord = serde_json::from_str(
            r#"{"type":"RegisterBroker","broker_id":1,"incarnation_id":"00000000-0000-0000-0000-000000000001","broker_epoch":5,"endpoints":[]}"#,
        )
        .unwrap();
        match r {
            MetadataRecord::RegisterBroker(b) => assert!(b.fenced),
            other => panic!("{other:?}"),
        }
    }
}
