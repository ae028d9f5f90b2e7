//! DescribeClientQuotas (key 48): the configured quotas whose entity
//! matches the request's filter (Kafka's `ClientQuotasImage.describe`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::quota::{FilterError, QuotaFilter};
use crate::security::acl::AclOperation;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    if !ctx.authorize_cluster(broker, AclOperation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "Cluster authorization failed.",
            )))
            .with_entries(None);
    }
    let filter = QuotaFilter::new(
        req.components
            .iter()
            .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref())),
        req.strict,
    );
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            let (code, msg) = match e {
                FilterError::Invalid(m) => (ResponseError::InvalidRequest, m),
                FilterError::Unsupported(m) => (ResponseError::UnsupportedVersion, m),
            };
            return DescribeClientQuotasResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(msg)))
                .with_entries(None);
        }
    };
    let image = broker.metadata.image();
    let entries = image
        .client_quotas
        .matching(&filter)
        .map(|(entity, values)| {
            EntryData::default()
                .with_entity(
                    entity
                        .components()
                        .map(|(ty, name)| {
                            EntityData::default()
                                .with_entity_type(StrBytes::from_static_str(ty))
                                .with_entity_name(
                                    name.as_wire().map(|n| StrBytes::from_string(n.to_string())),
                                )
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| {
                            ValueData::default()
                                .with_key(StrBytes::from_string(k.clone()))
                                .with_value(*v)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}
