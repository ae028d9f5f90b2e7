//! openraft's state machine for the metadata log: replays committed entries
//! into the [`MetadataImage`], publishes each new image, and keeps snapshots.
//!
//! Snapshots live next to the log as Kafka names them,
//! `<20-digit next index>-<10-digit term>.checkpoint`, as
//! `[u32 BE CRC-32C of the rest][u32 BE meta length][meta JSON][image JSON]`,
//! written atomically; only the newest is kept. On open the newest valid one
//! seeds the image, and openraft re-applies the log after it.
//!
//! Owner: openraft's state-machine task. Readers follow the published image
//! through a `watch` channel; the snapshot builder works on its own clone of
//! the image (cheap: `Arc`'d parts), so applying never waits for it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use crate::image::{ImageSnapshot, MetadataImage};
use crate::storage::{write_atomically, Nid};
use crate::{ApplyResult, MetadataBatch, PublishedImage, TypeConfig};

type Meta = SnapshotMeta<Nid, BasicNode>;

/// A snapshot as stored and as sent: its meta and the serialized image.
#[derive(Clone)]
struct StoredSnapshot {
    meta: Meta,
    data: Arc<Vec<u8>>,
}

/// The state machine; see the module doc.
pub struct StateMachine {
    dir: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, BasicNode>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    publish: watch::Sender<PublishedImage>,
}

/// Builds a snapshot of the image as of one applied log id.
pub struct SnapshotBuilder {
    dir: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, BasicNode>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

fn snapshot_file_name(last: Option<LogId<Nid>>) -> String {
    // Kafka names a checkpoint by the offset after it (its end offset) and epoch.
    let (end, term) = last.map_or((0, 0), |l| (l.index + 1, l.leader_id.term));
    format!("{end:020}-{term:010}.checkpoint")
}

fn encode_file(s: &StoredSnapshot) -> Vec<u8> {
    let meta = serde_json::to_vec(&s.meta).expect("snapshot meta serializes");
    let mut body = Vec::with_capacity(4 + meta.len() + s.data.len());
    body.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    body.extend_from_slice(&meta);
    body.extend_from_slice(&s.data);
    let mut out = crc32c::crc32c(&body).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn decode_file(bytes: &[u8]) -> Option<(StoredSnapshot, MetadataImage)> {
    let body = bytes.get(4..)?;
    if crc32c::crc32c(body) != u32::from_be_bytes(bytes[..4].try_into().ok()?) {
        return None;
    }
    let meta_len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let meta: Meta = serde_json::from_slice(body.get(4..4 + meta_len)?).ok()?;
    let data = body.get(4 + meta_len..)?.to_vec();
    let image = decode_image(&data)?;
    Some((
        StoredSnapshot {
            meta,
            data: Arc::new(data),
        },
        image,
    ))
}

fn decode_image(data: &[u8]) -> Option<MetadataImage> {
    serde_json::from_slice::<ImageSnapshot>(data)
        .ok()
        .map(MetadataImage::from_snapshot)
}

/// Makes `s` the current snapshot unless a newer one already is (a slow
/// build can finish after a newer snapshot was installed from the leader):
/// writes its file, deletes older ones. Returns whether `s` became current.
fn persist_if_newer(
    dir: &Path,
    current: &Mutex<Option<StoredSnapshot>>,
    s: &StoredSnapshot,
) -> std::io::Result<bool> {
    let mut current = current.lock().unwrap();
    if current
        .as_ref()
        .is_some_and(|c| c.meta.last_log_id > s.meta.last_log_id)
    {
        return Ok(false);
    }
    persist(dir, s)?;
    *current = Some(s.clone());
    Ok(true)
}

/// Writes the snapshot file and deletes older ones.
fn persist(dir: &Path, s: &StoredSnapshot) -> std::io::Result<()> {
    let name = snapshot_file_name(s.meta.last_log_id);
    write_atomically(dir, &name, &encode_file(s), true)?;
    for e in std::fs::read_dir(dir)? {
        let other = e?.file_name().to_string_lossy().into_owned();
        if other.ends_with(".checkpoint") && other != name {
            let _ = std::fs::remove_file(dir.join(other));
        }
    }
    Ok(())
}

impl StateMachine {
    /// Opens the state machine in `dir`, seeded by the newest valid snapshot.
    pub fn open(dir: &Path) -> std::io::Result<(Self, watch::Receiver<PublishedImage>)> {
        std::fs::create_dir_all(dir)?;
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".checkpoint"))
            .collect();
        names.sort_unstable();
        let mut loaded = None;
        for name in names.iter().rev() {
            match decode_file(&std::fs::read(dir.join(name))?) {
                Some(s) => {
                    loaded = Some(s);
                    break;
                }
                None => tracing::warn!(file = %name, "ignoring a corrupt metadata snapshot"),
            }
        }
        let (current, image, last_applied, membership) = match loaded {
            Some((s, image)) => (
                Some(s.clone()),
                image,
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (
                None,
                MetadataImage::default(),
                None,
                StoredMembership::default(),
            ),
        };
        let image = Arc::new(image);
        let (tx, rx) = watch::channel(PublishedImage {
            last_applied_index: last_applied.map(|l| l.index),
            image: image.clone(),
        });
        Ok((
            Self {
                dir: dir.to_path_buf(),
                image,
                last_applied,
                membership,
                current: Arc::new(Mutex::new(current)),
                publish: tx,
            },
            rx,
        ))
    }

    fn publish(&self) {
        self.publish.send_replace(PublishedImage {
            last_applied_index: self.last_applied.map(|l| l.index),
            image: self.image.clone(),
        });
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<Nid>> {
        let data = serde_json::to_vec(&self.image.to_snapshot())
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_file_name(self.last_applied),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        let (dir, current, s) = (self.dir.clone(), self.current.clone(), stored.clone());
        let written = tokio::task::spawn_blocking(move || persist_if_newer(&dir, &current, &s))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let data = (*stored.data).clone();
        if written {
            tracing::info!(snapshot = %meta.snapshot_id, "metadata snapshot written");
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, BasicNode>), StorageError<Nid>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // One working copy per call: the parts a batch touches are copied
        // from the published image once, later batches write in place.
        let mut image: Option<MetadataImage> = None;
        // This call's applied batches, to rebuild the working copy if a later
        // batch fails half-way (rare: the controller validates first).
        let mut applied: Vec<MetadataBatch> = Vec::new();
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(ApplyResult(None)),
                EntryPayload::Normal(batch) => {
                    let img = image.get_or_insert_with(|| (*self.image).clone());
                    match img.replay_all(&batch.0) {
                        Ok(()) => {
                            applied.push(batch);
                            out.push(ApplyResult(None));
                        }
                        Err((i, e)) => {
                            // Deterministic on every node: the batch is skipped whole.
                            let mut fresh = (*self.image).clone();
                            for b in &applied {
                                fresh
                                    .replay_all(&b.0)
                                    .expect("a batch that applied applies again to the same state");
                            }
                            *img = fresh;
                            tracing::warn!(index = entry.log_id.index, record = i, error = %e, "metadata batch rejected");
                            out.push(ApplyResult(Some(format!("record {i}: {e}"))));
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(ApplyResult(None));
                }
            }
        }
        if let Some(img) = image {
            self.image = Arc::new(img);
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            image: self.image.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let data = snapshot.into_inner();
        let image = decode_image(&data).ok_or_else(|| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "metadata snapshot does not decode",
                ),
            )
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        let (dir, current, s) = (self.dir.clone(), self.current.clone(), stored.clone());
        tokio::task::spawn_blocking(move || persist_if_newer(&dir, &current, &s))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "metadata snapshot installed from the leader");
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<Nid>> {
        Ok(self.current.lock().unwrap().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new((*s.data).clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use uuid::Uuid;

    use super::*;
    use crate::records::{MetadataRecord, RemoveTopicRecord, TopicRecord};

    fn entry(index: u64, records: Vec<MetadataRecord>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(MetadataBatch(records)),
        }
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic(TopicRecord {
            name: name.into(),
            topic_id: Uuid::new_v4(),
        })
    }

    #[tokio::test]
    async fn a_rejected_batch_between_good_ones_applies_nothing_of_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, rx) = StateMachine::open(dir.path()).unwrap();
        let bad = vec![
            topic("b"),
            MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: Uuid::new_v4(),
            }),
        ];
        let out = sm
            .apply(vec![
                entry(1, vec![topic("a")]),
                entry(2, bad),
                entry(3, vec![topic("c")]),
            ])
            .await
            .unwrap();
        assert_eq!(out[0], ApplyResult(None));
        assert!(out[1].0.as_ref().unwrap().starts_with("record 1:"));
        assert_eq!(out[2], ApplyResult(None));
        let published = rx.borrow().clone();
        assert_eq!(published.last_applied_index, Some(3));
        let names: Vec<_> = published.image.topics().map(|t| t.name.clone()).collect();
        assert_eq!(names, ["a", "c"]);

        // A snapshot of that state reopens to the same image.
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let (mut reopened, rx2) = StateMachine::open(dir.path()).unwrap();
        assert_eq!(*rx2.borrow().image, *published.image);
        assert_eq!(reopened.applied_state().await.unwrap().0.unwrap().index, 3);
    }
}
