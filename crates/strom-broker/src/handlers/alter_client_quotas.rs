//! AlterClientQuotas (key 49): set or remove quota values per entity.
//!
//! Each entry is checked whole (entity types, keys, values) and fails alone
//! with INVALID_REQUEST; the valid entries are applied together and
//! persisted before any takes effect. `validate_only` checks and changes
//! nothing.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};

use super::RequestContext;
use crate::broker::Broker;
use crate::errors::topic_error_code;
use crate::quota::{ClientQuotas, QuotaEntity, QuotaOp};
use crate::security::acl::AclOperation;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let authorized = ctx.authorize_cluster(broker, AclOperation::AlterConfigs);
    // Serialized with other metadata changes: read, modify, persist.
    let _admin = broker.admin_lock().lock().await;
    let image = broker.metadata.image();
    let mut next: ClientQuotas = (*image.client_quotas).clone();
    let mut results = Vec::with_capacity(req.entries.len());
    let mut changed = false;
    for entry in &req.entries {
        let echo: Vec<EntityData> = entry
            .entity
            .iter()
            .map(|e| {
                EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect();
        let ops: Vec<QuotaOp> = entry
            .ops
            .iter()
            .map(|o| QuotaOp {
                key: o.key.to_string(),
                value: (!o.remove).then_some(o.value),
            })
            .collect();
        let checked = QuotaEntity::from_components(
            entry
                .entity
                .iter()
                .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
        )
        .and_then(|entity| ClientQuotas::validate(&ops).map(|()| entity));
        let result = EntryData::default().with_entity(echo);
        if !authorized {
            results.push(
                result
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Cluster authorization failed.",
                    ))),
            );
            continue;
        }
        match checked {
            Err(msg) => results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(msg))),
            ),
            Ok(entity) => {
                if !req.validate_only {
                    next.apply(&entity, &ops);
                    changed = true;
                }
                results.push(result);
            }
        }
    }
    if changed {
        match broker.metadata.set_client_quotas(next) {
            Ok(image) => {
                broker.quotas.update(&image.client_quotas);
                info!(principal = %ctx.principal, entries = req.entries.len(), "client quotas altered");
            }
            Err(e) => {
                // Nothing was applied: every entry that would have been fails.
                warn!(error = %e, "cannot persist client quotas");
                let code = topic_error_code(&crate::broker::TopicError::Metadata(e));
                for r in &mut results {
                    if r.error_code == 0 {
                        r.error_code = code.code();
                    }
                }
            }
        }
    }
    AlterClientQuotasResponse::default().with_entries(results)
}
