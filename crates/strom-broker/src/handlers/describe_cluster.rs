//! DescribeCluster (key 60): cluster id, controller and brokers.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{controller_id, live_brokers, CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{ResourceType, CLUSTER_NAME};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = broker.metadata.image();
    let live = live_brokers(broker, &image, &ctx.listener);
    // Controllers are not reachable on broker listeners: both endpoint
    // types list the brokers (as a combined-mode cluster answers).
    let controller_id = controller_id(broker, &live);
    let brokers = live
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(
            broker.metadata.image().cluster_id.clone(),
        ))
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            if broker.authorizer.enabled() {
                ctx.authorized_operations(
                    broker,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                    crate::security::check::CLUSTER_OPERATIONS,
                )
            } else {
                CLUSTER_OPERATIONS
            }
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}
