//! Topic administration on a running broker and the log-lifecycle
//! background work: config changes applied to live logs, partition
//! additions, DeleteRecords, the retention task and the log cleaner.
//!
//! Every change goes through [`Broker::admin_lock`], is validated whole
//! before anything moves, and is persisted in the metadata image before it
//! becomes visible, so a failed request leaves nothing half-applied.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strom_protocol::Offset;
use strom_storage::{LogError, OffsetMap};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::broker::{now_ms, Broker, TopicError};
use crate::metadata::TopicMetadata;
use crate::partition::Partition;
use crate::topic;

/// Kafka's defaults for the background tasks' broker configs.
const RETENTION_CHECK_INTERVAL_MS: u64 = 300_000;
const CLEANER_BACKOFF_MS: u64 = 15_000;
const CLEANER_DEDUPE_BUFFER_SIZE: usize = 128 * 1024 * 1024;

impl Broker {
    /// A broker config from `server.properties` parsed as a number (values
    /// were validated at start-up).
    fn broker_num<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.config.raw.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// The effective value of a topic config: the topic's override, else
    /// the broker's synonym, else Kafka's default.
    pub fn effective_topic_config(
        &self,
        overrides: &BTreeMap<String, String>,
        name: &str,
    ) -> Option<String> {
        if let Some(v) = overrides.get(name) {
            return Some(v.clone());
        }
        let d = topic::topic_config_def(name)?;
        Some(
            d.broker_value(&self.config.raw)
                .map(|(_, _, v)| v)
                .unwrap_or_else(|| d.default.to_string()),
        )
    }

    /// Replaces a topic's config overrides with what `change` computes from
    /// the current ones (AlterConfigs replaces all, IncrementalAlterConfigs
    /// edits), validates the result, persists it and applies it to every
    /// live partition log. With `validate_only` nothing changes.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TopicError>,
    ) -> Result<(), TopicError> {
        let _guard = self.admin_lock().lock().await;
        let Some(t) = self.metadata.image().topic(name).cloned() else {
            return Err(TopicError::UnknownTopic);
        };
        let configs = change(&t.configs)?;
        topic::validate_configs(&configs).map_err(TopicError::InvalidConfig)?;
        if validate_only || configs == t.configs {
            return Ok(());
        }
        let log_config = topic::log_config(&self.config.log, &configs);
        self.metadata.update_topic(TopicMetadata {
            configs: configs.clone(),
            ..(*t).clone()
        })?;
        for p in self.replicas.hosted_partitions(name) {
            p.log().set_config(log_config.clone());
        }
        info!(topic = name, configs = ?configs, "altered topic configs");
        Ok(())
    }

    /// CreatePartitions: grows `name` to `count` partitions. Kafka's rules:
    /// only increases; a manual assignment names one replica list per new
    /// partition, each as long as the replication factor, of live brokers.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let _guard = self.admin_lock().lock().await;
        let Some(t) = self.metadata.image().topic(name).cloned() else {
            return Err(TopicError::UnknownTopic);
        };
        if count == t.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic already has {} partitions.",
                t.partitions
            )));
        }
        if count < t.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "Topic currently has {} partitions, which is higher than the requested {count}.",
                t.partitions
            )));
        }
        if let Some(a) = &assignments {
            let added = count - t.partitions;
            if a.len() as i32 != added {
                return Err(TopicError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    a.len()
                )));
            }
            for replicas in a {
                if replicas.len() != t.replication_factor as usize {
                    return Err(TopicError::InvalidReplicaAssignment(format!(
                        "Inconsistent replication factor between partitions, partition 0 has {} while partitions [{}] have replication factors [{}], respectively.",
                        t.replication_factor,
                        t.partitions,
                        replicas.len()
                    )));
                }
            }
        }
        // The active controller checks the brokers and places the replicas.
        self.metadata
            .create_partitions(name, count, assignments, validate_only)
            .map_err(|e| match e {
                crate::metadata::MetadataError::Controller(e) => TopicError::Rejected(e),
                e => e.into(),
            })?;
        if validate_only {
            return Ok(());
        }
        self.apply_image()?;
        info!(
            topic = name,
            from = t.partitions,
            to = count,
            "added partitions"
        );
        Ok(())
    }

    /// DeleteRecords on one partition: `offset` -1 means the high
    /// watermark. Returns the new log start offset (low watermark).
    pub async fn delete_records(
        self: &Arc<Self>,
        partition: &Arc<Partition>,
        offset: i64,
    ) -> Result<Offset, LogError> {
        let target = if offset == -1 {
            partition.high_watermark()
        } else {
            Offset(offset)
        };
        let this = self.clone();
        let tp = partition.topic_partition.clone();
        tokio::task::spawn_blocking(move || {
            this.log_manager().delete_records(&tp, target, now_ms())
        })
        .await
        .map_err(|e| LogError::LogDir(format!("delete-records task failed: {e}")))?
    }

    /// One retention pass (blocking; the retention task calls it).
    pub fn retention_pass(&self) -> usize {
        self.log_manager().retention_pass(now_ms())
    }
}

/// Starts the retention task (every `log.retention.check.interval.ms`) and,
/// unless `log.cleaner.enable=false`, the log cleaner (a pass every
/// `log.cleaner.backoff.ms`, with one offset map of
/// `log.cleaner.dedupe.buffer.size` bytes reused across passes). Both run
/// on the blocking pool, off the request path, and stop when `stop` flips.
pub fn spawn_log_tasks(broker: Arc<Broker>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let retention_ms = broker
        .broker_num::<u64>("log.retention.check.interval.ms")
        .unwrap_or(RETENTION_CHECK_INTERVAL_MS)
        .max(1);
    tasks.push(tick(
        broker.clone(),
        stop.clone(),
        retention_ms,
        |b: &Broker| {
            b.retention_pass();
        },
    ));
    let enabled = broker
        .config
        .raw
        .get("log.cleaner.enable")
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("true"));
    if enabled {
        let backoff = broker
            .broker_num::<u64>("log.cleaner.backoff.ms")
            .unwrap_or(CLEANER_BACKOFF_MS)
            .max(1);
        let buffer = broker
            .broker_num::<usize>("log.cleaner.dedupe.buffer.size")
            .unwrap_or(CLEANER_DEDUPE_BUFFER_SIZE);
        let map = Arc::new(Mutex::new(OffsetMap::new(buffer)));
        let cancel = Arc::new(AtomicBool::new(false));
        let c2 = cancel.clone();
        let mut stop2 = stop.clone();
        tokio::spawn(async move {
            let _ = stop2.changed().await;
            c2.store(true, Ordering::Release);
        });
        tasks.push(tick(broker, stop, backoff, move |b: &Broker| {
            let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
            for (tp, stats) in b.log_manager().clean_pass(&mut map, now_ms(), &cancel) {
                if stats.segments > 0 {
                    info!(partition = %tp, removed = stats.records_removed, bytes_before = stats.bytes_before, bytes_after = stats.bytes_after, "log cleaner pass");
                }
            }
        }));
    }
    tasks
}

fn tick(
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
    period_ms: u64,
    work: impl Fn(&Broker) + Send + Sync + 'static,
) -> JoinHandle<()> {
    let work = Arc::new(work);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(period_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: skip it
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let (b, w) = (broker.clone(), work.clone());
                    if let Err(e) = tokio::task::spawn_blocking(move || w(&b)).await {
                        error!(error = %e, "log background task panicked");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}
