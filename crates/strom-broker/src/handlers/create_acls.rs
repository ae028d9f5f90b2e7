//! CreateAcls (key 30): add ACL bindings (Alter on CLUSTER).
//!
//! Every creation is validated first; the valid ones are added in one
//! metadata change, so a bad entry never half-applies the others.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::acl::{
    AccessControlEntry, AclBinding, AclOperation, PatternType, PermissionType, ResourcePattern,
    ResourceType,
};

/// Kafka's message when ACL APIs are called without an authorizer.
pub const NO_AUTHORIZER: &str = "No Authorizer is configured.";

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let all_failed = |code: ResponseError, msg: Option<&str>| {
        let r = AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(msg.map(|m| StrBytes::from_string(m.to_string())));
        CreateAclsResponse::default().with_results(vec![r; req.creations.len()])
    };
    if !ctx.authorize_cluster(broker, AclOperation::Alter) {
        return all_failed(ResponseError::ClusterAuthorizationFailed, None);
    }
    if !broker.authorizer.enabled() {
        return all_failed(ResponseError::SecurityDisabled, Some(NO_AUTHORIZER));
    }

    let checked: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|c| {
            let b = binding(c);
            b.validate().map(|()| b)
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|r| r.clone().ok()).collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        broker
            .metadata
            .update_acls(|acls| (acls.with_added(valid.iter().cloned()), ()))
    };
    let results = checked
        .into_iter()
        .map(|r| match (r, &stored) {
            (Err(why), _) => AclCreationResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(StrBytes::from_string(why))),
            (Ok(_), Err(e)) => AclCreationResult::default()
                .with_error_code(metadata_error_code(e).code())
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            (Ok(b), Ok(())) => {
                tracing::info!(target: "strom::audit", principal = %ctx.principal, acl = %b, "ACL created");
                AclCreationResult::default()
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

fn binding(c: &AclCreation) -> AclBinding {
    AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::from_code(c.resource_type),
            name: c.resource_name.to_string(),
            pattern_type: PatternType::from_code(c.resource_pattern_type),
        },
        entry: AccessControlEntry {
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: AclOperation::from_code(c.operation),
            permission: PermissionType::from_code(c.permission_type),
        },
    }
}
