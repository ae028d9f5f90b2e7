//! ListTransactions (key 66): transactional ids, filtered by state,
//! producer id and (v1) minimum running time.

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::{now_ms, Broker};
use crate::security::acl::{AclOperation, ResourceType};

const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let mut states: Vec<TransactionState> = broker
        .transactions
        .snapshot(broker)
        .await
        .into_iter()
        // Kafka lists only the transactional ids the caller may Describe.
        .filter(|(tid, _)| {
            ctx.may(
                broker,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                tid,
            )
        })
        .filter(|(_, m)| {
            (req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == m.state.name()))
                && (req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
                && (req.duration_filter < 0
                    || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter))
        })
        .map(|(tid, m)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(tid)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
        })
        .collect();
    states.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
