//! Codecs of the `__consumer_offsets` records, byte-compatible with Kafka's
//! (`group-coordinator/src/main/resources/common/message/*.json`), so a log
//! written by Kafka replays here and the other way round.
//!
//! ```text
//! key   = version i16 | OffsetCommitKey (0, 1) {group, topic, partition i32}
//!                     | GroupMetadataKey (2)   {group}
//! value = version i16 | OffsetCommitValue v0..v4 | GroupMetadataValue v0..v4
//!         (null value = tombstone: delete the key)
//! ```
//! Versions 4+ of the values are "flexible" (compact strings, tagged fields).
//! We write OffsetCommitValue v3 and GroupMetadataValue v3 (what Kafka writes
//! for classic groups) and read every version. Key versions ≥ 3 belong to the
//! KIP-848 consumer-group records: 3–8 are kept as raw bytes
//! ([`CoordinatorRecord::Consumer`], codecs in `super::consumer`), the rest
//! (share groups) are reported as [`CoordinatorRecord::Unknown`].

use bytes::{BufMut, Bytes, BytesMut};

/// A malformed `__consumer_offsets` record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    #[error("invalid length {0}")]
    InvalidLength(i64),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("record has no key")]
    NoKey,
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: i16 },
}

/// OffsetCommitValue: one committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Only in v1 (per-commit retention, removed since); -1 otherwise.
    pub expire_timestamp: i64,
}

/// GroupMetadataValue.MemberMetadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// GroupMetadataValue: a classic group after a rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadata>,
}

/// One decoded `__consumer_offsets` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorRecord {
    /// `value: None` is a tombstone (the offset is deleted).
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetCommitValue>,
    },
    /// `value: None` is a tombstone (the group is deleted).
    GroupMetadata {
        group: String,
        value: Option<GroupMetadataValue>,
    },
    /// A record type this coordinator does not handle (KIP-848, share
    /// groups); kept so replay can skip it without failing the load.
    Unknown { key_version: i16 },
    /// A KIP-848 consumer-group record (key versions 3–8), encoded and
    /// decoded by `super::consumer`.
    Consumer { key: Bytes, value: Option<Bytes> },
}

pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

// ---- writing ----

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}
fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => put_str(b, s),
    }
}
fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

impl CoordinatorRecord {
    /// The record's key and value (`None`: tombstone) as Kafka lays them out.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        match self {
            CoordinatorRecord::OffsetCommit {
                group,
                topic,
                partition,
                value,
            } => {
                let mut k = BytesMut::new();
                k.put_i16(1);
                put_str(&mut k, group);
                put_str(&mut k, topic);
                k.put_i32(*partition);
                let v = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(OFFSET_COMMIT_VALUE_VERSION);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp);
                    b.freeze()
                });
                (k.freeze(), v)
            }
            CoordinatorRecord::GroupMetadata { group, value } => {
                let mut k = BytesMut::new();
                k.put_i16(2);
                put_str(&mut k, group);
                let v = value.as_ref().map(|g| {
                    let mut b = BytesMut::new();
                    b.put_i16(GROUP_METADATA_VALUE_VERSION);
                    put_str(&mut b, &g.protocol_type);
                    b.put_i32(g.generation);
                    put_nullable_str(&mut b, g.protocol.as_deref());
                    put_nullable_str(&mut b, g.leader.as_deref());
                    b.put_i64(g.current_state_timestamp);
                    b.put_i32(g.members.len() as i32);
                    for m in &g.members {
                        put_str(&mut b, &m.member_id);
                        put_nullable_str(&mut b, m.group_instance_id.as_deref());
                        put_str(&mut b, &m.client_id);
                        put_str(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout);
                        b.put_i32(m.session_timeout);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (k.freeze(), v)
            }
            CoordinatorRecord::Unknown { key_version } => {
                (Bytes::copy_from_slice(&key_version.to_be_bytes()), None)
            }
            CoordinatorRecord::Consumer { key, value } => (key.clone(), value.clone()),
        }
    }

    /// Decodes a record read back from the log.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, RecordError> {
        let key = key.ok_or(RecordError::NoKey)?;
        let mut k = Reader::new(key);
        let key_version = k.i16()?;
        match key_version {
            0 | 1 => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset_commit_value).transpose()?;
                Ok(CoordinatorRecord::OffsetCommit {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group = k.string()?;
                let value = value.map(decode_group_metadata_value).transpose()?;
                Ok(CoordinatorRecord::GroupMetadata { group, value })
            }
            3..=8 => Ok(CoordinatorRecord::Consumer {
                key: Bytes::copy_from_slice(key),
                value: value.map(Bytes::copy_from_slice),
            }),
            v => Ok(CoordinatorRecord::Unknown { key_version: v }),
        }
    }
}

fn decode_offset_commit_value(v: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let mut r = Reader::new(v);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "OffsetCommitValue",
            version,
        });
    }
    r.flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    let expire_timestamp = if version == 1 { r.i64()? } else { -1 };
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

fn decode_group_metadata_value(v: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut r = Reader::new(v);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedVersion {
            what: "GroupMetadataValue",
            version,
        });
    }
    r.flexible = version >= 4;
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let n = r.array_len()?;
    let mut members = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout = if version >= 1 { Some(r.i32()?) } else { None };
        let session_timeout = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        if r.flexible {
            r.skip_tagged_fields()?;
        }
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout: rebalance_timeout.unwrap_or(session_timeout),
            session_timeout,
            subscription,
            assignment,
        });
    }
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// A bounds-checked reader of Kafka's classic and flexible encodings.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            flexible: false,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() - self.pos < n {
            return Err(RecordError::Truncated(self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::InvalidLength(-1))
    }
    /// Length of a string/bytes/array: `None` for null.
    fn len(&mut self, wide: bool) -> Result<Option<usize>, RecordError> {
        let n: i64 = if self.flexible {
            self.uvarint()? as i64 - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::InvalidLength(n)),
            n => Ok(Some(n as usize)),
        }
    }
    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        match self.len(false)? {
            None => Ok(None),
            Some(n) => String::from_utf8(self.take(n)?.to_vec())
                .map(Some)
                .map_err(|_| RecordError::NotUtf8),
        }
    }
    fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?
            .ok_or(RecordError::InvalidLength(-1))
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        match self.len(true)? {
            None => Ok(Bytes::new()),
            Some(n) => Ok(Bytes::copy_from_slice(self.take(n)?)),
        }
    }
    fn array_len(&mut self) -> Result<usize, RecordError> {
        Ok(self.len(true)?.unwrap_or(0))
    }
    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len)?;
        }
        Ok(())
    }
}

/// The topics of a `consumer` protocol subscription
/// (ConsumerProtocolSubscription: version i16, topics [string], …); `None`
/// when the metadata is not a consumer subscription.
pub fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader::new(metadata);
    let version = r.i16().ok()?;
    if version < 0 {
        return None;
    }
    let n = r.i32().ok()?;
    if n < 0 {
        return Some(Vec::new());
    }
    (0..n).map(|_| r.string().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_round_trip() {
        let rec = CoordinatorRecord::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
            value: Some(OffsetCommitValue {
                offset: 42,
                leader_epoch: 3,
                metadata: "meta".into(),
                commit_timestamp: 1000,
                expire_timestamp: -1,
            }),
        };
        let (k, v) = rec.encode();
        // Kafka's layout: key v1 = 00 01 | 00 01 'g' | 00 01 't' | 00 00 00 07
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        assert_eq!(&v.as_ref().unwrap()[..2], &[0, 3]);
        assert_eq!(
            CoordinatorRecord::decode(Some(&k), v.as_deref()).unwrap(),
            rec
        );
        let tomb = CoordinatorRecord::decode(Some(&k), None).unwrap();
        assert!(matches!(
            tomb,
            CoordinatorRecord::OffsetCommit { value: None, .. }
        ));
    }

    #[test]
    fn group_metadata_round_trip_and_old_versions() {
        let rec = CoordinatorRecord::GroupMetadata {
            group: "grp".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                current_state_timestamp: 99,
                members: vec![MemberMetadata {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout: 300000,
                    session_timeout: 45000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                }],
            }),
        };
        let (k, v) = rec.encode();
        assert_eq!(
            CoordinatorRecord::decode(Some(&k), v.as_deref()).unwrap(),
            rec
        );

        // v0 value: no currentStateTimestamp, instance id nor rebalance timeout.
        let mut b = BytesMut::new();
        b.put_i16(0);
        put_str(&mut b, "consumer");
        b.put_i32(1);
        put_nullable_str(&mut b, Some("range"));
        put_nullable_str(&mut b, Some("m"));
        b.put_i32(1);
        put_str(&mut b, "m");
        put_str(&mut b, "c");
        put_str(&mut b, "h");
        b.put_i32(10000);
        put_bytes(&mut b, b"s");
        put_bytes(&mut b, b"a");
        let got = decode_group_metadata_value(&b).unwrap();
        assert_eq!(got.members[0].rebalance_timeout, 10000);
        assert_eq!(got.current_state_timestamp, -1);
    }

    #[test]
    fn flexible_v4_values_decode() {
        // OffsetCommitValue v4: compact string + tagged fields.
        let mut b = BytesMut::new();
        b.put_i16(4);
        b.put_i64(10);
        b.put_i32(-1);
        b.put_u8(3); // "ab" as a compact string (len + 1)
        b.put_slice(b"ab");
        b.put_i64(5);
        b.put_u8(0); // no tagged fields
        let v = decode_offset_commit_value(&b).unwrap();
        assert_eq!((v.offset, v.metadata.as_str()), (10, "ab"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[][..], &[0], &[0, 1, 0, 9, b'x'], &[0, 2, 0xff, 0xfe]] {
            assert!(
                CoordinatorRecord::decode(Some(bad), None).is_err(),
                "{bad:?}"
            );
        }
        assert!(CoordinatorRecord::decode(None, None).is_err());
        assert_eq!(
            CoordinatorRecord::decode(Some(&[0, 9, 0, 0]), None).unwrap(),
            CoordinatorRecord::Unknown { key_version: 9 }
        );
    }

    #[test]
    fn subscription_topics() {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i32(2);
        put_str(&mut b, "a");
        put_str(&mut b, "bb");
        b.put_i32(-1);
        assert_eq!(
            consumer_subscription_topics(&b).unwrap(),
            vec!["a".to_string(), "bb".to_string()]
        );
    }
}
