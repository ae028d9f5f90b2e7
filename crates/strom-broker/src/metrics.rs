//! The broker's Prometheus metrics, named as the JMX exporter renders
//! Kafka's MBeans, so existing dashboards and alerts keep working.
//!
//! Owner: [`crate::Broker`] holds one [`BrokerMetrics`]; the admin listener
//! builds one `prometheus_client` registry per broker from it
//! ([`BrokerMetrics::registry`]), so several brokers can share a process.
//!
//! Two kinds of metric:
//! - event counters and histograms updated on the hot path (messages/bytes
//!   in and out per topic, request time per API). They are atomics (request
//!   histograms: a short uncontended lock); per-topic handles are cached in a
//!   map keyed by topic name and looked up with a `&str` (no allocation) once
//!   per topic per request;
//! - state gauges (partition counts, log sizes, lag) computed at scrape time
//!   from the broker's own state by [`BrokerCollector`], so they can never
//!   drift from it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use kafka_protocol::messages::ApiKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::broker::Broker;

type Labels = Vec<(&'static str, String)>;

/// Upper bounds (ms) of the request-time histogram buckets.
const REQUEST_TIME_BUCKETS_MS: [f64; 17] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0, 30000.0,
];

/// Counters of one topic (`BrokerTopicMetrics`), shared with the families
/// they are registered in: incrementing a handle is one atomic add.
#[derive(Clone, Default)]
pub struct TopicMetrics {
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

impl TopicMetrics {
    /// Records one successful append.
    pub fn record_append(&self, record_count: i64, bytes: usize) {
        self.messages_in.inc_by(record_count.max(0) as u64);
        self.bytes_in.inc_by(bytes as u64);
    }
}

/// One consumer group's lag on one partition (committed offset → high
/// watermark), as reported by a [`GroupLagSource`].
#[derive(Clone, Debug)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset.
    pub committed: i64,
    pub lag: i64,
}

/// Where consumer-group lag comes from at scrape time. The broker installs
/// [`crate::group_lag::LagSource`] with [`BrokerMetrics::set_group_lag_source`]; until
/// then no lag series is exported.
pub trait GroupLagSource: Send + Sync + 'static {
    fn group_lag(&self) -> Vec<GroupLag>;
}

/// The broker's metrics. See the module doc.
pub struct BrokerMetrics {
    messages_in: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    topics: RwLock<HashMap<String, Arc<TopicMetrics>>>,
    request_time: Family<Labels, Histogram, fn() -> Histogram>,
    /// Handles into `request_time`, indexed by API key.
    request_time_by_key: Vec<Option<Histogram>>,
    group_lag: OnceLock<Box<dyn GroupLagSource>>,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_TIME_BUCKETS_MS)
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> Self {
        let request_time: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_histogram);
        let max_key = crate::handlers::SUPPORTED_APIS
            .iter()
            .map(|(k, _, _)| *k as i16 as usize)
            .max()
            .unwrap_or(0);
        let mut by_key = vec![None; max_key + 1];
        for (key, _, _) in crate::handlers::SUPPORTED_APIS {
            let labels = vec![("request", api_name(*key).to_string())];
            by_key[*key as i16 as usize] = Some(request_time.get_or_create(&labels).clone());
        }
        BrokerMetrics {
            messages_in: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            topics: RwLock::new(HashMap::new()),
            request_time,
            request_time_by_key: by_key,
            group_lag: OnceLock::new(),
        }
    }

    /// The counters of `topic`, created on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        if let Some(t) = self.topics.read().unwrap().get(topic) {
            return t.clone();
        }
        let mut topics = self.topics.write().unwrap();
        topics
            .entry(topic.to_string())
            .or_insert_with(|| {
                let labels = vec![("topic", topic.to_string())];
                Arc::new(TopicMetrics {
                    messages_in: self.messages_in.get_or_create(&labels).clone(),
                    bytes_in: self.bytes_in.get_or_create(&labels).clone(),
                    bytes_out: self.bytes_out.get_or_create(&labels).clone(),
                })
            })
            .clone()
    }

    /// Drops a deleted topic's series (Kafka removes them too).
    pub fn forget_topic(&self, topic: &str) {
        self.topics.write().unwrap().remove(topic);
        let labels = vec![("topic", topic.to_string())];
        self.messages_in.remove(&labels);
        self.bytes_in.remove(&labels);
        self.bytes_out.remove(&labels);
    }

    /// Records how long a request of `key` took, in milliseconds.
    pub fn observe_request(&self, key: ApiKey, elapsed: std::time::Duration) {
        if let Some(Some(h)) = self.request_time_by_key.get(key as i16 as usize) {
            h.observe(elapsed.as_secs_f64() * 1000.0);
        }
    }

    /// Installs the consumer-group lag source (once; later calls are ignored).
    pub fn set_group_lag_source(&self, source: Box<dyn GroupLagSource>) {
        let _ = self.group_lag.set(source);
    }

    /// A registry holding this broker's metrics, for one admin listener.
    pub fn registry(broker: &Arc<Broker>) -> Registry {
        let m = &broker.metrics;
        let mut r = Registry::default();
        r.register(
            "kafka_server_brokertopicmetrics_messagesin",
            "Records appended, per topic",
            m.messages_in.clone(),
        );
        r.register(
            "kafka_server_brokertopicmetrics_bytesin",
            "Bytes appended (record batches as sent by producers), per topic",
            m.bytes_in.clone(),
        );
        r.register(
            "kafka_server_brokertopicmetrics_bytesout",
            "Record bytes returned to fetchers, per topic",
            m.bytes_out.clone(),
        );
        r.register(
            "kafka_network_requestmetrics_totaltimems",
            "Time from a request's arrival to its response, in milliseconds, per API",
            m.request_time.clone(),
        );
        r.register_collector(Box::new(BrokerCollector {
            broker: Arc::downgrade(broker),
        }));
        r
    }
}

/// Kafka's name of an API (`Produce`, `Fetch`, …), as its request metrics use.
pub fn api_name(key: ApiKey) -> String {
    format!("{key:?}")
}

/// Gauges computed from the broker's state at scrape time.
struct BrokerCollector {
    broker: Weak<Broker>,
}

impl fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerCollector")
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(e)
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), fmt::Error> {
    let mut e = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(e.encode_family(labels)?)?;
    }
    Ok(())
}

/// Partition-state counts from the metadata image, as Kafka's
/// ReplicaManager and controller gauges count them.
#[derive(Debug, Default, PartialEq, Eq)]
struct ClusterCounts {
    /// Partitions whose leader is this node.
    leaders: i64,
    /// Of those, the ones whose ISR is smaller than their replica set.
    under_replicated: i64,
    /// Partitions with no leader (cluster-wide).
    offline: i64,
}

impl ClusterCounts {
    fn of(image: &strom_metadata::image::MetadataImage, node_id: i32) -> Self {
        let mut c = ClusterCounts::default();
        for t in image.topics() {
            for p in t.partitions.values() {
                if p.leader < 0 {
                    c.offline += 1;
                } else if p.leader == node_id {
                    c.leaders += 1;
                    if p.isr.len() < p.replicas.len() {
                        c.under_replicated += 1;
                    }
                }
            }
        }
        c
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(broker) = self.broker.upgrade() else {
            return Ok(());
        };
        let image = broker.metadata.image();
        let registrations = broker.metadata.quorum().image();
        let node_id = broker.node_id();
        let mut partitions = 0i64;
        let mut under_min_isr = 0i64;
        let mut size = Vec::new();
        let mut end = Vec::new();
        let mut start = Vec::new();
        for t in image.topics() {
            let Some(parts) = broker.replicas.topic_partitions(&t.name) else {
                continue;
            };
            let topic = registrations.topic(&t.name);
            for p in parts.iter().flatten() {
                partitions += 1;
                let led = topic
                    .and_then(|ti| ti.partitions.get(&p.topic_partition.partition))
                    .filter(|r| r.leader == node_id);
                if led.is_some_and(|r| (r.isr.len() as u32) < p.log().min_insync_replicas()) {
                    under_min_isr += 1;
                }
                let labels = vec![
                    ("topic", t.name.clone()),
                    ("partition", p.topic_partition.partition.to_string()),
                ];
                size.push((labels.clone(), p.log().size_bytes() as i64));
                end.push((labels.clone(), p.log_end_offset().0));
                start.push((labels, p.log_start_offset().0));
            }
        }
        let cluster = ClusterCounts::of(&registrations, node_id);
        let leaders = cluster.leaders;
        let under_replicated = cluster.under_replicated;
        // Kafka reports offline partitions (and the controller count) on the
        // active controller only, so that summing over brokers counts once.
        let active_controller = broker
            .metadata
            .quorum()
            .leader()
            .is_some_and(|(id, _)| id == node_id);
        let offline = if active_controller {
            cluster.offline
        } else {
            0
        };
        gauge(
            &mut encoder,
            "kafka_server_replicamanager_partitioncount",
            "Partitions hosted by this broker",
            partitions,
        )?;
        gauge(
            &mut encoder,
            "kafka_server_replicamanager_leadercount",
            "Partitions this broker leads",
            leaders,
        )?;
        gauge(
            &mut encoder,
            "kafka_server_replicamanager_underreplicatedpartitions",
            "Led partitions whose ISR is smaller than their replica set",
            under_replicated,
        )?;
        gauge(
            &mut encoder,
            "kafka_server_replicamanager_underminisrpartitioncount",
            "Led partitions whose ISR is smaller than their min.insync.replicas",
            under_min_isr,
        )?;
        gauge(
            &mut encoder,
            "kafka_controller_kafkacontroller_activecontrollercount",
            "1 if this node is the active controller",
            active_controller as i64,
        )?;
        gauge(
            &mut encoder,
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            "Partitions without a live leader",
            offline,
        )?;
        gauge_family(
            &mut encoder,
            "kafka_log_log_size",
            "Bytes of all segments of a partition's log",
            &size,
        )?;
        gauge_family(
            &mut encoder,
            "kafka_log_log_logendoffset",
            "Next offset to be written in a partition",
            &end,
        )?;
        gauge_family(
            &mut encoder,
            "kafka_log_log_logstartoffset",
            "First offset still in a partition's log",
            &start,
        )?;
        if let Some(source) = broker.metrics.group_lag.get() {
            let mut lag = Vec::new();
            let mut current = Vec::new();
            for l in source.group_lag() {
                let labels: Labels = vec![
                    ("group", l.group),
                    ("topic", l.topic),
                    ("partition", l.partition.to_string()),
                ];
                current.push((labels.clone(), l.committed));
                lag.push((labels, l.lag));
            }
            gauge_family(
                &mut encoder,
                "kafka_consumergroup_lag",
                "High watermark minus the group's committed offset (0 if negative)",
                &lag,
            )?;
            gauge_family(
                &mut encoder,
                "kafka_consumergroup_current_offset",
                "The group's committed offset",
                &current,
            )?;
        }
        crate::quota::encode_metrics(&broker, &mut encoder)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_handles_share_the_registered_counters() {
        let m = BrokerMetrics::new();
        m.topic("a").record_append(3, 100);
        m.topic("a").record_append(2, 50);
        m.topic("b").bytes_out.inc_by(7);
        let mut r = Registry::default();
        r.register("in", "", m.messages_in.clone());
        r.register("out", "", m.bytes_out.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("in_total{topic=\"a\"} 5"), "{text}");
        assert!(text.contains("out_total{topic=\"b\"} 7"), "{text}");
        m.forget_topic("a");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(!text.contains("topic=\"a\""), "{text}");
    }

    #[test]
    fn cluster_counts_follow_the_partition_registrations() {
        use strom_metadata::records::{MetadataRecord, PartitionRecord, TopicRecord};
        let topic_id = uuid::Uuid::new_v4();
        let part = |id, leader, replicas: &[i32], isr: &[i32]| {
            MetadataRecord::Partition(PartitionRecord {
                partition_id: id,
                topic_id,
                replicas: replicas.to_vec(),
                isr: isr.to_vec(),
                removing_replicas: vec![],
                adding_replicas: vec![],
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
            })
        };
        let mut image = strom_metadata::image::MetadataImage::default();
        image
            .replay_batch(&[
                MetadataRecord::Topic(TopicRecord {
                    name: "t".into(),
                    topic_id,
                }),
                part(0, 1, &[1, 2, 3], &[1, 2, 3]),
                part(1, 1, &[1, 2, 3], &[1, 3]),
                part(2, 2, &[2, 1, 3], &[2]),
                part(3, -1, &[3, 1], &[3]),
            ])
            .unwrap();
        let counts = |node| ClusterCounts::of(&image, node);
        assert_eq!(
            counts(1),
            ClusterCounts {
                leaders: 2,
                under_replicated: 1,
                offline: 1
            }
        );
        assert_eq!(
            counts(2),
            ClusterCounts {
                leaders: 1,
                under_replicated: 1,
                offline: 1
            }
        );
        assert_eq!(counts(3).leaders, 0);
    }

    #[test]
    fn every_supported_api_has_a_request_histogram() {
        let m = BrokerMetrics::new();
        for (key, _, _) in crate::handlers::SUPPORTED_APIS {
            assert!(m.request_time_by_key[*key as i16 as usize].is_some());
            m.observe_request(*key, std::time::Duration::from_micros(300));
        }
    }
}
