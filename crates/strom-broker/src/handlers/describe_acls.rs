//! DescribeAcls (key 29): list the ACL bindings a filter matches
//! (Describe on CLUSTER), grouped by resource pattern.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::create_acls::NO_AUTHORIZER;
use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{
    AclBindingFilter, AclOperation, PatternType, PermissionType, ResourceType,
};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let error = |code: ResponseError, msg: &str| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(msg.to_string())))
    };
    if !ctx.authorize_cluster(broker, AclOperation::Describe) {
        return error(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
    }
    if !broker.authorizer.enabled() {
        return error(ResponseError::SecurityDisabled, NO_AUTHORIZER);
    }
    let filter = AclBindingFilter {
        resource_type: ResourceType::from_code(req.resource_type_filter),
        name: req.resource_name_filter.map(|s| s.to_string()),
        pattern_type: PatternType::from_code(req.pattern_type_filter),
        principal: req.principal_filter.map(|s| s.to_string()),
        host: req.host_filter.map(|s| s.to_string()),
        operation: AclOperation::from_code(req.operation),
        permission: PermissionType::from_code(req.permission_type),
    };
    if let Some(why) = filter.unknown_element() {
        return error(ResponseError::InvalidRequest, why);
    }

    let image = broker.metadata.image();
    // Bindings are sorted by pattern first, so one pass groups them.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    let mut last = None;
    for b in image.acls().bindings().filter(|b| filter.matches(b)) {
        if last != Some(&b.pattern) {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.pattern.resource_type.code())
                    .with_resource_name(StrBytes::from_string(b.pattern.name.clone()))
                    .with_pattern_type(b.pattern.pattern_type.code()),
            );
            last = Some(&b.pattern);
        }
        let e = &b.entry;
        resources.last_mut().expect("pushed above").acls.push(
            AclDescription::default()
                .with_principal(StrBytes::from_string(e.principal.clone()))
                .with_host(StrBytes::from_string(e.host.clone()))
                .with_operation(e.operation.code())
                .with_permission_type(e.permission.code()),
        );
    }
    DescribeAclsResponse::default().with_resources(resources)
}
