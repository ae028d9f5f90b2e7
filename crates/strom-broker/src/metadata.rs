//! The broker's metadata image: cluster id, topics (name, id, partition
//! count, configs) and the live brokers.
//!
//! Owner: [`crate::Broker`]. Until the Raft metadata quorum lands (issue 7)
//! the image is persisted as one JSON file, replaced atomically (write temp,
//! fsync, rename, fsync dir) on every change, in the first log dir under
//! `__cluster_metadata/`. The rest of the broker only sees [`MetadataImage`]
//! snapshots, so swapping the persistence for a replicated log later does not
//! touch the handlers. Readers take a cheap `Arc` clone of the current image;
//! writers (topic create/delete) are serialized by the caller.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::acl::AclBinding;
use crate::security::authorizer::AclIndex;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};

/// One topic as every broker sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopicMetadata {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level config overrides (Kafka names), only those set explicitly.
    pub configs: BTreeMap<String, String>,
    /// Leader epoch of every partition (one node: stays 0 until leaders move).
    pub leader_epoch: i32,
}

/// An immutable snapshot of cluster metadata.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// Client quotas (user / client-id entities), see `crate::quota`.
    pub client_quotas: Arc<crate::quota::ClientQuotas>,
    topics: BTreeMap<String, Arc<TopicMetadata>>,
    by_id: HashMap<Uuid, String>,
    /// ACLs, indexed for the authorizer (rebuilt only when they change).
    acls: Arc<AclIndex>,
    /// SCRAM credentials per user and mechanism (AlterUserScramCredentials).
    scram: Arc<ScramCredentials>,
}

/// SCRAM credentials: user → mechanism → salt, stored key, server key,
/// iterations (never the password).
pub type ScramCredentials = BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>;

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMetadata>> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMetadata>> {
        self.by_id.get(id).and_then(|n| self.topics.get(n))
    }
    /// Topics in name order.
    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicMetadata>> {
        self.topics.values()
    }
    /// Every ACL, indexed for authorization.
    pub fn acls(&self) -> &AclIndex {
        &self.acls
    }
    /// Every user's SCRAM credentials, by user name.
    pub fn scram_credentials(&self) -> &ScramCredentials {
        &self.scram
    }
    /// `user`'s SCRAM credential for `mechanism`.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram.get(user)?.get(&mechanism)
    }
    fn insert(&mut self, t: TopicMetadata) {
        self.by_id.insert(t.id, t.name.clone());
        self.topics.insert(t.name.clone(), Arc::new(t));
    }
    fn remove(&mut self, name: &str) -> Option<Arc<TopicMetadata>> {
        let t = self.topics.remove(name)?;
        self.by_id.remove(&t.id);
        Some(t)
    }
}

#[derive(Serialize, Deserialize)]
struct PersistedImage {
    version: u32,
    cluster_id: String,
    #[serde(default)]
    client_quotas: crate::quota::ClientQuotas,
    topics: Vec<TopicMetadata>,
    #[serde(default)]
    acls: Vec<AclBinding>,
    #[serde(default)]
    scram_credentials: ScramCredentials,
}

/// Errors loading or saving metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("log dir {path} belongs to node.id {stored}, but this broker is node.id {configured}")]
    NodeIdMismatch {
        path: PathBuf,
        stored: i32,
        configured: i32,
    },
}

/// Holds the current image and persists changes.
pub struct MetadataStore {
    file: PathBuf,
    image: RwLock<Arc<MetadataImage>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetadataError + '_ {
    move |source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A Kafka-style cluster id: 16 random bytes in URL-safe base64, no padding.
fn new_cluster_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes())
}

impl MetadataStore {
    /// Loads the image from `log_dirs[0]`, or starts a new cluster. Writes or
    /// checks Kafka's `meta.properties` in every log dir.
    pub fn open(log_dirs: &[PathBuf], node_id: i32) -> Result<Self, MetadataError> {
        let dir = log_dirs[0].join("__cluster_metadata");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let file = dir.join("image.json");
        let mut image = MetadataImage::default();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let p: PersistedImage =
                    serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                        path: file.clone(),
                        reason: e.to_string(),
                    })?;
                image.cluster_id = p.cluster_id;
                image.client_quotas = Arc::new(p.client_quotas);
                for t in p.topics {
                    image.insert(t);
                }
                image.acls = Arc::new(AclIndex::new(p.acls));
                image.scram = Arc::new(p.scram_credentials);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                image.cluster_id = existing_cluster_id(log_dirs).unwrap_or_else(new_cluster_id);
            }
            Err(e) => {
                return Err(MetadataError::Io {
                    path: file,
                    source: e,
                })
            }
        }
        for d in log_dirs {
            write_meta_properties(d, node_id, &image.cluster_id)?;
        }
        let store = MetadataStore {
            file,
            image: RwLock::new(Arc::new(image)),
        };
        store.persist(&store.image())?;
        Ok(store)
    }

    /// The current snapshot.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap().clone()
    }

    /// Adds a topic and persists the image before it becomes visible.
    pub fn add_topic(&self, t: TopicMetadata) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| img.insert(t))
    }

    /// Replaces a topic's entry (configs, partition count), persisted
    /// before it becomes visible.
    pub fn update_topic(&self, t: TopicMetadata) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| img.insert(t))
    }

    /// Replaces the client quotas, persisted before they take effect.
    pub fn set_client_quotas(
        &self,
        quotas: crate::quota::ClientQuotas,
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| img.client_quotas = Arc::new(quotas))
    }

    /// Removes a topic (persisted before it disappears from the image).
    pub fn remove_topic(&self, name: &str) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| {
            img.remove(name);
        })
    }

    /// Replaces the ACL set with what `f` makes of the current one,
    /// persisted before it takes effect; `f`'s other result is passed back.
    pub fn update_acls<R>(
        &self,
        f: impl FnOnce(&AclIndex) -> (AclIndex, R),
    ) -> Result<R, MetadataError> {
        let mut out = None;
        self.update(|img| {
            let (next, r) = f(&img.acls);
            img.acls = Arc::new(next);
            out = Some(r);
        })?;
        Ok(out.expect("update ran"))
    }

    /// Replaces the SCRAM credentials with what `f` makes of them, persisted
    /// before they take effect.
    pub fn update_scram_credentials(
        &self,
        f: impl FnOnce(&mut ScramCredentials),
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        self.update(|img| f(Arc::make_mut(&mut img.scram)))
    }

    fn update(
        &self,
        f: impl FnOnce(&mut MetadataImage),
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        let mut guard = self.image.write().unwrap();
        let mut next = (**guard).clone();
        f(&mut next);
        let next = Arc::new(next);
        self.persist(&next)?;
        *guard = next.clone();
        Ok(next)
    }

    fn persist(&self, img: &MetadataImage) -> Result<(), MetadataError> {
        let p = PersistedImage {
            version: 1,
            cluster_id: img.cluster_id.clone(),
            client_quotas: (*img.client_quotas).clone(),
            topics: img.topics().map(|t| (**t).clone()).collect(),
            acls: img.acls.bindings().cloned().collect(),
            scram_credentials: (*img.scram).clone(),
        };
        let bytes = serde_json::to_vec_pretty(&p).expect("metadata serializes");
        write_atomically(&self.file, &bytes).map_err(io_err(&self.file))
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new content: temp file, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_properties(path: &Path) -> Option<BTreeMap<String, String>> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| crate::config::parse_properties(&t))
}

fn existing_cluster_id(log_dirs: &[PathBuf]) -> Option<String> {
    log_dirs
        .iter()
        .filter_map(|d| read_properties(&d.join("meta.properties")))
        .find_map(|m| m.get("cluster.id").cloned())
}

/// Kafka's `meta.properties` (version 1, KRaft): refuses a dir that belongs to
/// another node id, as Kafka does.
fn write_meta_properties(dir: &Path, node_id: i32, cluster_id: &str) -> Result<(), MetadataError> {
    let path = dir.join("meta.properties");
    if let Some(m) = read_properties(&path) {
        if let Some(stored) = m.get("node.id").and_then(|v| v.parse::<i32>().ok()) {
            if stored != node_id {
                return Err(MetadataError::NodeIdMismatch {
                    path,
                    stored,
                    configured: node_id,
                });
            }
            return Ok(());
        }
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let directory_id =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
    let text = format!(
        "#\n#Written by Strom\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\ndirectory.id={directory_id}\n"
    );
    write_atomically(&path, text.as_bytes()).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicMetadata {
        TopicMetadata {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::from([("segment.bytes".into(), "1000".into())]),
            leader_epoch: 0,
        }
    }

    #[test]
    fn topics_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let cid = s.image().cluster_id.clone();
        assert_eq!(cid.len(), 22);
        let a = topic("a");
        s.add_topic(a.clone()).unwrap();
        s.add_topic(topic("b")).unwrap();
        s.remove_topic("b").unwrap();
        drop(s);
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let img = s.image();
        assert_eq!(img.cluster_id, cid);
        assert_eq!(**img.topic("a").unwrap(), a);
        assert_eq!(img.topic_by_id(&a.id).unwrap().name, "a");
        assert!(img.topic("b").is_none());
    }

    #[test]
    fn acls_survive_reopen() {
        use crate::security::acl::*;
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let acl = |name: &str| AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::Topic,
                name: name.into(),
                pattern_type: PatternType::Prefixed,
            },
            entry: AccessControlEntry {
                principal: "User:alice".into(),
                host: "*".into(),
                operation: AclOperation::Read,
                permission: PermissionType::Allow,
            },
        };
        s.update_acls(|a| (a.with_added([acl("x-"), acl("y-")]), ()))
            .unwrap();
        let mut y = AclBindingFilter::any();
        y.name = Some("y-".into());
        s.update_acls(|a| a.with_removed(&[y])).unwrap();
        drop(s);
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let kept: Vec<_> = s.image().acls().bindings().cloned().collect();
        assert_eq!(kept, vec![acl("x-")]);
    }

    #[test]
    fn scram_credentials_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let s = MetadataStore::open(&dirs, 1).unwrap();
        let m = ScramMechanism::Sha512;
        let salted = m.salted_password(b"pw", b"salt", 4096);
        let cred = ScramCredential::from_salted_password(m, b"salt", &salted, 4096);
        s.update_scram_credentials(|c| {
            c.entry("alice".into()).or_default().insert(m, cred.clone());
        })
        .unwrap();
        drop(s);
        let s = MetadataStore::open(&dirs, 1).unwrap();
        assert_eq!(s.image().scram_credential("alice", m), Some(&cred));
        assert!(s
            .image()
            .scram_credential("alice", ScramMechanism::Sha256)
            .is_none());
        // The file holds keys derived from the password, never the password.
        let text = std::fs::read_to_string(d.path().join("__cluster_metadata/image.json")).unwrap();
        assert!(text.contains("SCRAM-SHA-512") && !text.contains("\"pw\""));
    }

    #[test]
    fn refuses_another_nodes_dir() {
        let d = tempfile::tempdir().unwrap();
        let dirs = vec![d.path().to_path_buf()];
        MetadataStore::open(&dirs, 1).unwrap();
        assert!(matches!(
            MetadataStore::open(&dirs, 2),
            Err(MetadataError::NodeIdMismatch { .. })
        ));
    }
}
