//! WriteTxnMarkers (key 27): a transaction coordinator on another broker
//! asks this one, as the leader of some of the transaction's partitions, to
//! write their COMMIT/ABORT markers (Kafka's broker-to-broker request;
//! ClusterAction on the cluster required).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = ctx.authorize(
        broker,
        AclOperation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let code = if !allowed {
                    ResponseError::ClusterAuthorizationFailed.code()
                } else {
                    match crate::txn::coordinator::write_marker_here(
                        broker,
                        t.name.as_str(),
                        p,
                        m.producer_id.0,
                        m.producer_epoch,
                        m.transaction_result,
                    )
                    .await
                    {
                        Ok(()) => 0,
                        Err(e) => e.code(),
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
