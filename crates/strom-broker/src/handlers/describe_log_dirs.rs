//! DescribeLogDirs (key 35): each log directory and the size of every
//! partition in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // Kafka: Describe on the cluster, else an empty answer (with the error
    // from v3 on).
    if !ctx.authorize_cluster(broker, AclOperation::Describe) {
        return DescribeLogDirsResponse::default().with_error_code(
            kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code(),
        );
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect()
    });
    let lm = broker.log_manager();
    let mut per_dir: Vec<BTreeMap<String, Vec<DescribeLogDirsPartition>>> =
        vec![BTreeMap::new(); lm.log_dirs().len()];
    for (tp, log) in lm.all_logs() {
        if let Some(w) = &wanted {
            if !w
                .iter()
                .any(|(t, ps)| *t == tp.topic && ps.contains(&tp.partition))
            {
                continue;
            }
        }
        let Some(i) = lm
            .log_dirs()
            .iter()
            .position(|d| log.dir().parent() == Some(d.as_path()))
        else {
            continue;
        };
        per_dir[i].entry(tp.topic.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(tp.partition)
                .with_partition_size(log.size_bytes() as i64)
                .with_offset_lag(0)
                .with_is_future_key(false),
        );
    }
    let results = lm
        .log_dirs()
        .iter()
        .zip(per_dir)
        .map(|(dir, topics)| {
            DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_string(dir.display().to_string()))
                // no statvfs binding here: Kafka's "unknown" (v4)
                .with_total_bytes(-1)
                .with_usable_bytes(-1)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, mut parts)| {
                            parts.sort_by_key(|p| p.partition_index);
                            DescribeLogDirsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(name)))
                                .with_partitions(parts)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}
