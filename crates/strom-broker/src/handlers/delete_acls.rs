//! DeleteAcls (key 31): remove the ACL bindings each filter matches (Alter
//! on CLUSTER). All valid filters apply in one metadata change.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::create_acls::NO_AUTHORIZER;
use super::RequestContext;
use crate::broker::Broker;
use crate::errors::metadata_error_code;
use crate::security::acl::{
    AclBinding, AclBindingFilter, AclOperation, PatternType, PermissionType, ResourceType,
};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |code: ResponseError, msg: Option<String>| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(msg.map(StrBytes::from_string))
    };
    let all_failed = |code: ResponseError, msg: Option<&str>| {
        DeleteAclsResponse::default().with_filter_results(vec![
            failed(code, msg.map(str::to_string));
            req.filters.len()
        ])
    };
    if !ctx.authorize_cluster(broker, AclOperation::Alter) {
        return all_failed(ResponseError::ClusterAuthorizationFailed, None);
    }
    if !broker.authorizer.enabled() {
        return all_failed(ResponseError::SecurityDisabled, Some(NO_AUTHORIZER));
    }

    let filters: Vec<AclBindingFilter> = req.filters.iter().map(filter).collect();
    let valid: Vec<AclBindingFilter> = filters
        .iter()
        .filter(|f| f.unknown_element().is_none())
        .cloned()
        .collect();
    // Nothing to remove: answer from the current image without rewriting it.
    let image = broker.metadata.image();
    let nothing = valid
        .iter()
        .all(|f| !image.acls().bindings().any(|b| f.matches(b)));
    let removed = if nothing {
        Ok(vec![Vec::new(); valid.len()])
    } else {
        broker
            .metadata
            .update_acls(|acls| acls.with_removed(&valid))
    };
    let mut removed = match removed {
        Ok(r) => r.into_iter(),
        Err(e) => {
            let code = metadata_error_code(&e);
            return DeleteAclsResponse::default().with_filter_results(
                filters
                    .iter()
                    .map(|_| failed(code, Some(e.to_string())))
                    .collect(),
            );
        }
    };
    let results = filters
        .iter()
        .map(|f| match f.unknown_element() {
            Some(why) => failed(ResponseError::InvalidRequest, Some(why.to_string())),
            None => {
                let matched = removed.next().unwrap_or_default();
                for b in &matched {
                    tracing::info!(target: "strom::audit", principal = %ctx.principal, acl = %b, "ACL deleted");
                }
                DeleteAclsFilterResult::default()
                    .with_matching_acls(matched.iter().map(matching).collect())
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

fn filter(f: &DeleteAclsFilter) -> AclBindingFilter {
    AclBindingFilter {
        resource_type: ResourceType::from_code(f.resource_type_filter),
        name: f.resource_name_filter.as_ref().map(|s| s.to_string()),
        pattern_type: PatternType::from_code(f.pattern_type_filter),
        principal: f.principal_filter.as_ref().map(|s| s.to_string()),
        host: f.host_filter.as_ref().map(|s| s.to_string()),
        operation: AclOperation::from_code(f.operation),
        permission: PermissionType::from_code(f.permission_type),
    }
}

fn matching(b: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(b.pattern.resource_type.code())
        .with_resource_name(StrBytes::from_string(b.pattern.name.clone()))
        .with_pattern_type(b.pattern.pattern_type.code())
        .with_principal(StrBytes::from_string(b.entry.principal.clone()))
        .with_host(StrBytes::from_string(b.entry.host.clone()))
        .with_operation(b.entry.operation.code())
        .with_permission_type(b.entry.permission.code())
}
