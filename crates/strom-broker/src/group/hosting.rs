//! Which coordinator partitions this broker serves, shared by the group
//! coordinator (`__consumer_offsets`) and the transaction coordinator
//! (`__transaction_state`): a partition is loaded when this broker becomes
//! its leader (Kafka's `onElection`) and dropped when it stops being it
//! (`onResignation`).
//!
//! Callers serialize calls per coordinator (its `init` mutex), so the
//! loaded set is only changed by one call at a time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use tracing::info;

use crate::broker::Broker;
use crate::metadata::TopicMetadata;
use crate::partition::Partition;

/// The partitions of `topic` (`t` in the current image) this broker leads
/// and hosts, by partition index; `None` where another broker leads or the
/// partition is not hosted here.
pub(crate) fn led_partitions(
    broker: &Broker,
    topic: &str,
    t: &TopicMetadata,
) -> Vec<Option<Arc<Partition>>> {
    let me = broker.node_id();
    let mut hosted = broker.replicas.topic_partitions(topic);
    let unhosted_lead = (0..t.partitions).any(|p| {
        t.registration(p).is_some_and(|r| r.leader == me)
            && hosted
                .as_ref()
                .is_none_or(|h| h.get(p as usize).is_none_or(|s| s.is_none()))
    });
    if unhosted_lead {
        // The image is ahead of the hosted partitions (a request
        // racing the image follower): host them now.
        if let Err(e) = broker.apply_image() {
            tracing::warn!(error = %e, "cannot apply the metadata image");
        }
        hosted = broker.replicas.topic_partitions(topic);
    }
    (0..t.partitions)
        .map(|p| {
            let leads = t.registration(p).is_none_or(|r| r.leader == me);
            hosted
                .as_ref()
                .and_then(|h| h.get(p as usize)?.as_ref())
                .filter(|_| leads)
                .cloned()
        })
        .collect()
}

/// Brings `shards` (the loaded partitions of `topic`, by index) in line
/// with `led` (from [`led_partitions`]): each led partition not loaded yet
/// is loaded with `load` (`None`: it could not be, the next call tries
/// again), each loaded one no longer led is dropped, as are those beyond
/// the partition count. Returns the shards it loaded. `coordinator` names
/// the coordinator in the log.
pub(crate) async fn sync_shards<S, F, Fut>(
    shards: &RwLock<BTreeMap<i32, S>>,
    led: Vec<Option<Arc<Partition>>>,
    coordinator: &str,
    topic: &str,
    mut load: F,
) -> Vec<S>
where
    S: Clone,
    F: FnMut(i32, Arc<Partition>) -> Fut,
    Fut: Future<Output = Option<S>>,
{
    let count = led.len() as i32;
    let mut loaded = Vec::new();
    for (p, part) in (0..count).zip(led) {
        let present = shards.read().unwrap().contains_key(&p);
        match (part, present) {
            (Some(part), false) => {
                if let Some(shard) = load(p, part).await {
                    shards.write().unwrap().insert(p, shard.clone());
                    loaded.push(shard);
                }
            }
            (None, true) => {
                info!(partition = p, "{coordinator}: unloading {topic} partition");
                shards.write().unwrap().remove(&p);
            }
            _ => {}
        }
    }
    shards.write().unwrap().retain(|p, _| *p < count);
    loaded
}
