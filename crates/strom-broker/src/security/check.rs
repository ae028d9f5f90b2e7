//! The one-line authorization checks handlers use, e.g.
//! `ctx.authorize(broker, AclOperation::Write, ResourceType::Topic, name)`.

use super::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::handlers::RequestContext;

/// Operations reported in a topic's `topic_authorized_operations`.
pub const TOPIC_OPERATIONS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Write,
    AclOperation::Create,
    AclOperation::Delete,
    AclOperation::Alter,
    AclOperation::Describe,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
];
/// …in `cluster_authorized_operations`.
pub const CLUSTER_OPERATIONS: &[AclOperation] = &[
    AclOperation::Create,
    AclOperation::Alter,
    AclOperation::Describe,
    AclOperation::ClusterAction,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
    AclOperation::IdempotentWrite,
];
/// …in a group's `authorized_operations`.
pub const GROUP_OPERATIONS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Describe,
    AclOperation::Delete,
];

impl RequestContext {
    /// May this request's principal, from its peer address, perform `op`
    /// on the named resource? Denials are audited.
    pub fn authorize(
        &self,
        broker: &Broker,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.check(broker, op, resource_type, name, true)
    }

    /// Like [`RequestContext::authorize`] but without an audit line on
    /// denial: for filtering what a listing shows.
    pub fn may(
        &self,
        broker: &Broker,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.check(broker, op, resource_type, name, false)
    }

    fn check(
        &self,
        broker: &Broker,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
        audit_denial: bool,
    ) -> bool {
        let authorizer = &broker.authorizer;
        if !authorizer.enabled() {
            return true;
        }
        let image = broker.metadata.image();
        let (acls, principal, host) = (image.acls(), &self.principal, self.peer.ip());
        if audit_denial {
            authorizer.authorize(acls, principal, host, op, resource_type, name)
        } else {
            authorizer.is_allowed(acls, principal, host, op, resource_type, name)
        }
    }

    /// `op` on the CLUSTER resource (`kafka-cluster`).
    pub fn authorize_cluster(&self, broker: &Broker, op: AclOperation) -> bool {
        self.authorize(broker, op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Kafka's `authorizeByResourceType`: `op` on at least one resource of
    /// `resource_type`.
    pub fn authorize_any(
        &self,
        broker: &Broker,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        let authorizer = &broker.authorizer;
        if !authorizer.enabled() {
            return true;
        }
        authorizer.authorize_any(
            broker.metadata.image().acls(),
            &self.principal,
            self.peer.ip(),
            op,
            resource_type,
        )
    }

    /// Kafka's authorized-operations bit set (bit = `AclOperation` code)
    /// over `candidates`, for Metadata, DescribeGroups, DescribeCluster.
    pub fn authorized_operations(
        &self,
        broker: &Broker,
        resource_type: ResourceType,
        name: &str,
        candidates: &[AclOperation],
    ) -> i32 {
        candidates
            .iter()
            .filter(|&&op| self.may(broker, op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

impl RequestContext {
    /// The describe/alter-configs check: `op` on the topic, or on the
    /// cluster for broker (and broker-logger) resources. `Some(error)` if
    /// denied.
    pub fn authorize_config_resource(
        &self,
        broker: &Broker,
        op: AclOperation,
        config_resource_type: i8,
        name: &str,
    ) -> Option<kafka_protocol::error::ResponseError> {
        use kafka_protocol::error::ResponseError;
        // Kafka's ConfigResource.Type codes.
        const TOPIC: i8 = 2;
        const GROUP: i8 = 32;
        let (ok, error) = match config_resource_type {
            TOPIC => (
                self.authorize(broker, op, ResourceType::Topic, name),
                ResponseError::TopicAuthorizationFailed,
            ),
            GROUP => (
                self.authorize(broker, op, ResourceType::Group, name),
                ResponseError::GroupAuthorizationFailed,
            ),
            _ => (
                self.authorize_cluster(broker, op),
                ResponseError::ClusterAuthorizationFailed,
            ),
        };
        (!ok).then_some(error)
    }
}
