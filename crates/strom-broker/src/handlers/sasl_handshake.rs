//! SaslHandshake (key 17) as the request handlers see it. On a SASL
//! listener the connection's SASL gate (`crate::security::sasl`) answers
//! every SaslHandshake itself, including KIP-368 re-authentication; a
//! handshake that reaches this handler came over a listener without SASL,
//! where Kafka answers ILLEGAL_SASL_STATE.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use super::RequestContext;
use crate::broker::Broker;

pub async fn handle(
    _broker: &Arc<Broker>,
    _ctx: &RequestContext,
    _req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    SaslHandshakeResponse::default().with_error_code(ResponseError::IllegalSaslState.code())
}
