//! DescribeCluster (key 60): cluster id, controller and brokers.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{listed_brokers, CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{ResourceType, CLUSTER_NAME};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    // Controllers are not reachable on broker listeners: both endpoint
    // types list the brokers (as a combined-mode cluster answers).
    let (brokers, controller_id) = listed_brokers(broker, &ctx.listener, |id, host, port, rack| {
        DescribeClusterBroker::default()
            .with_broker_id(id)
            .with_host(host)
            .with_port(port)
            .with_rack(rack)
    });
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
