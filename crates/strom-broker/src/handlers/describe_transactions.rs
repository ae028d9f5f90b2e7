//! DescribeTransactions (key 65): the coordinator's view of transactional ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let all: BTreeMap<String, _> = broker
        .transactions
        .snapshot(broker)
        .await
        .into_iter()
        .collect();
    let states = req
        .transactional_ids
        .into_iter()
        .map(|tid| {
            let base = TransactionState::default().with_transactional_id(tid.clone());
            if !ctx.authorize(
                broker,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                &tid,
            ) {
                return base
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
            }
            match all.get(tid.as_str()) {
                None => base
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
                Some(m) => {
                    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    // Kafka leaves out the topics the caller may not Describe.
                    for (t, p) in m.partitions.iter().filter(|(t, _)| {
                        ctx.may(broker, AclOperation::Describe, ResourceType::Topic, t)
                    }) {
                        by_topic.entry(t.as_str()).or_default().push(*p);
                    }
                    base.with_transaction_state(StrBytes::from_static_str(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(
                            by_topic
                                .into_iter()
                                .map(|(t, ps)| {
                                    TopicData::default()
                                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                                        .with_partitions(ps)
                                })
                                .collect(),
                        )
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
