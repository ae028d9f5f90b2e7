//! DescribeCluster (key 60): cluster id, controller and brokers.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{CLUSTER_OPERATIONS, OPERATIONS_NOT_REQUESTED};
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{ResourceType, CLUSTER_NAME};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let listener = broker.advertised_listener(&ctx.listener);
    // One combined broker+controller node answers for both endpoint types.
    let me = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id()))
        .with_host(StrBytes::from_string(listener.host))
        .with_port(listener.port as i32);
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(
            broker.metadata.image().cluster_id.clone(),
        ))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_brokers(vec![me])
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
