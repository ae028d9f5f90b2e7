//! EndTxn (key 26): commit or abort the producer's open transaction.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::RequestContext;
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    req: EndTxnRequest,
) -> EndTxnResponse {
    let code = match broker
        .transactions
        .end_txn(
            broker,
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await
    {
        Ok(()) => 0,
        Err(e) => e.code(),
    };
    EndTxnResponse::default().with_error_code(code)
}
