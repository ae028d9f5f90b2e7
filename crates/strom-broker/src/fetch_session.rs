//! Incremental fetch sessions (KIP-227).
//!
//! A consumer or follower that fetches many partitions can open a session:
//! the broker remembers the partitions and what it last told the client, so
//! later requests list only changed partitions and responses carry only
//! partitions with news. Owner: [`crate::Broker`]; one cache per broker,
//! behind a mutex held only for map updates (never across I/O).
//!
//! ```text
//! session_id  epoch   meaning
//!     0        -1     sessionless full fetch
//!     0         0     full fetch, open a new session
//!     S         0     close S, open a new session (full)
//!     S        -1     close S, sessionless full fetch
//!     S        N>0    incremental fetch in S (N must equal S's next epoch)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use strom_protocol::Offset;
use uuid::Uuid;

/// Kafka's `FetchMetadata.INITIAL_EPOCH` / `FINAL_EPOCH`.
pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

/// What a session remembers of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPartition {
    pub topic_id: Uuid,
    pub fetch_offset: Offset,
    pub max_bytes: i32,
    /// What the last response said (so unchanged partitions can be omitted).
    pub last_high_watermark: Offset,
    pub last_log_start_offset: Offset,
}

/// (topic name, partition)
pub type PartitionKey = (String, i32);

struct Session {
    next_epoch: i32,
    partitions: BTreeMap<PartitionKey, SessionPartition>,
    last_used: Instant,
}

/// Why a session request was refused (Kafka's error codes 70 and 71).
#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
}

/// Bounded cache of open sessions (Kafka's
/// `max.incremental.fetch.session.cache.slots`, default 1000); when full, the
/// least recently used session is evicted.
pub struct FetchSessionCache {
    slots: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    sessions: HashMap<i32, Session>,
    next_id: i32,
}

impl FetchSessionCache {
    pub fn new(slots: usize) -> Self {
        FetchSessionCache {
            slots,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                next_id: 1,
            }),
        }
    }

    /// Opens a session over `partitions`; returns its id (0 if the cache has no
    /// room, which makes the client fall back to full fetches).
    pub fn create(&self, partitions: BTreeMap<PartitionKey, SessionPartition>) -> i32 {
        if self.slots == 0 {
            return 0;
        }
        let mut inner = self.inner.lock().unwrap();
        if inner.sessions.len() >= self.slots {
            if let Some(&oldest) = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| id)
            {
                inner.sessions.remove(&oldest);
            }
        }
        let mut id = inner.next_id;
        while id == 0 || inner.sessions.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        inner.next_id = id.wrapping_add(1).max(1);
        inner.sessions.insert(
            id,
            Session {
                next_epoch: 1,
                partitions,
                last_used: Instant::now(),
            },
        );
        id
    }

    pub fn remove(&self, id: i32) {
        self.inner.lock().unwrap().sessions.remove(&id);
    }

    /// Applies an incremental request to session `id` at `epoch`: `updates`
    /// are added or replace entries, `forgotten` are dropped. Returns the
    /// session's partitions after the change.
    pub fn update(
        &self,
        id: i32,
        epoch: i32,
        updates: Vec<(PartitionKey, SessionPartition)>,
        forgotten: &[PartitionKey],
    ) -> Result<BTreeMap<PartitionKey, SessionPartition>, SessionError> {
        let mut inner = self.inner.lock().unwrap();
        let s = inner.sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if s.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        for k in forgotten {
            s.partitions.remove(k);
        }
        for (k, mut v) in updates {
            if let Some(old) = s.partitions.get(&k) {
                v.last_high_watermark = old.last_high_watermark;
                v.last_log_start_offset = old.last_log_start_offset;
            }
            s.partitions.insert(k, v);
        }
        s.next_epoch = if s.next_epoch == i32::MAX {
            1
        } else {
            s.next_epoch + 1
        };
        s.last_used = Instant::now();
        Ok(s.partitions.clone())
    }

    /// Records what a response told the client about each partition.
    pub fn record_sent(&self, id: i32, sent: &[(PartitionKey, Offset, Offset)]) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(s) = inner.sessions.get_mut(&id) {
            for (k, hw, lso) in sent {
                if let Some(p) = s.partitions.get_mut(k) {
                    p.last_high_watermark = *hw;
                    p.last_log_start_offset = *lso;
                }
            }
        }
    }

    /// Drops a deleted topic from every session.
    pub fn forget_topic(&self, topic: &str) {
        let mut inner = self.inner.lock().unwrap();
        for s in inner.sessions.values_mut() {
            s.partitions.retain(|(t, _), _| t != topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(offset: i64) -> SessionPartition {
        SessionPartition {
            topic_id: Uuid::nil(),
            fetch_offset: Offset(offset),
            max_bytes: 1000,
            last_high_watermark: Offset(-1),
            last_log_start_offset: Offset(-1),
        }
    }

    #[test]
    fn epochs_and_updates() {
        let c = FetchSessionCache::new(2);
        let id = c.create(BTreeMap::from([
            (("t".into(), 0), sp(0)),
            (("t".into(), 1), sp(0)),
        ]));
        assert_ne!(id, 0);
        assert_eq!(
            c.update(id, 2, vec![], &[]),
            Err(SessionError::InvalidEpoch)
        );
        let parts = c
            .update(id, 1, vec![(("t".into(), 0), sp(5))], &[("t".into(), 1)])
            .unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[&("t".to_string(), 0)].fetch_offset, Offset(5));
        assert!(c.update(id, 2, vec![], &[]).is_ok());
        assert_eq!(c.update(999, 1, vec![], &[]), Err(SessionError::NotFound));
    }

    #[test]
    fn evicts_least_recently_used() {
        let c = FetchSessionCache::new(2);
        let a = c.create(BTreeMap::new());
        let b = c.create(BTreeMap::new());
        c.update(a, 1, vec![], &[]).unwrap();
        let _c3 = c.create(BTreeMap::new());
        assert_eq!(c.update(b, 1, vec![], &[]), Err(SessionError::NotFound));
        assert!(c.update(a, 2, vec![], &[]).is_ok());
    }
}
