//! ISR maintenance on the leader (Kafka's `Partition.maybeShrinkIsr` /
//! `maybeExpandIsr`): every `replica.lag.time.max.ms`/2 the leader drops
//! followers that have not caught up for `replica.lag.time.max.ms`; a
//! follower that caught up is added back as soon as its fetch shows it. Each
//! change goes to the controller as AlterPartition; until it answers, the
//! high watermark waits for the maximal ISR, and on success the leader
//! adopts the committed ISR and partition epoch. A refused change
//! (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION, …) is dropped: the next
//! image brings the current registration.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use strom_metadata::controller_api::{AlterPartitionItem, AlterPartitionTopic};
use strom_metadata::{ControllerRequest, ControllerResponse};
use tracing::{info, warn};

use crate::broker::{now_ms, Broker};
use crate::partition::{IsrChange, Partition};

/// Pause after a failed ISR change (Kafka's AlterPartition retry backoff
/// is of this order).
const RETRY_MS: i64 = 1_000;

/// Starts this broker's ISR-shrink task once (when it first leads a partition).
pub fn ensure_started(broker: &Arc<Broker>) {
    if broker
        .replicas
        .isr_task_started
        .swap(true, Ordering::AcqRel)
    {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        broker
            .replicas
            .isr_task_started
            .store(false, Ordering::Release);
        return;
    };
    rt.spawn(shrink_loop(Arc::downgrade(broker)));
}

async fn shrink_loop(broker: Weak<Broker>) {
    loop {
        let period = match broker.upgrade() {
            Some(b) => {
                Duration::from_millis((b.config.replication.replica_lag_time_max_ms / 2).max(1))
            }
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(b) = broker.upgrade() else {
            return;
        };
        let lag = b.config.replication.replica_lag_time_max_ms as i64;
        let now = now_ms();
        for p in b.replicas.all_partitions() {
            if !p.is_leader() {
                continue;
            }
            if let Some(change) = p.isr_shrink(now, lag) {
                info!(partition = %p.topic_partition, new_isr = ?change.new_isr, "shrinking the ISR");
                tokio::spawn(alter_isr(b.clone(), p.clone(), change));
            }
        }
    }
}

/// Sends one AlterPartition for `partition` and applies the answer.
pub async fn alter_isr(broker: Arc<Broker>, partition: Arc<Partition>, change: IsrChange) {
    let tp = &partition.topic_partition;
    let req = ControllerRequest::AlterPartition {
        broker_id: broker.node_id(),
        broker_epoch: broker.broker_epoch(),
        topics: vec![AlterPartitionTopic {
            topic_id: partition.topic_id,
            partitions: vec![AlterPartitionItem {
                partition: tp.partition,
                leader_epoch: change.leader_epoch,
                new_isr: change.new_isr.clone(),
                partition_epoch: change.partition_epoch,
            }],
        }],
    };
    let answer = broker.metadata.quorum().controller_call(req).await;
    let result = match answer {
        Ok(ControllerResponse::AlterPartition { error, topics, .. }) if error.error_code == 0 => {
            topics
                .into_iter()
                .filter(|(id, _)| *id == partition.topic_id)
                .flat_map(|(_, r)| r)
                .find(|r| r.partition == tp.partition)
                .ok_or_else(|| "no answer for the partition".to_string())
        }
        Ok(ControllerResponse::AlterPartition { error, .. }) => Err(format!(
            "error {} {}",
            error.error_code,
            error.message.unwrap_or_default()
        )),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(r) if r.error.error_code == 0 => {
            info!(partition = %tp, isr = ?r.isr, partition_epoch = r.partition_epoch, "ISR updated");
            partition.adopt_isr(r.leader_epoch, r.partition_epoch, r.isr);
        }
        Ok(r) => {
            warn!(partition = %tp, code = r.error.error_code, message = ?r.error.message, "AlterPartition refused; waiting for the metadata image");
            partition.isr_change_failed(now_ms() + RETRY_MS);
        }
        Err(why) => {
            warn!(partition = %tp, error = %why, "AlterPartition failed");
            partition.isr_change_failed(now_ms() + RETRY_MS);
        }
    }
}
