//! SaslAuthenticate (key 36) as the request handlers see it. During a SASL
//! exchange the connection's SASL gate (`crate::security::sasl`) answers it;
//! one that reaches this handler came after authentication finished or over
//! a listener without SASL, and gets Kafka's ILLEGAL_SASL_STATE.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};

use super::RequestContext;
use crate::broker::Broker;

pub async fn handle(
    _broker: &Arc<Broker>,
    _ctx: &RequestContext,
    _req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(ResponseError::IllegalSaslState.code())
        .with_error_message(Some(
            "SaslAuthenticate request received outside a SASL exchange".into(),
        ))
}
