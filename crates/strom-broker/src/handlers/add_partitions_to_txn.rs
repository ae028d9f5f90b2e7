//! AddPartitionsToTxn (key 24): add partitions to a producer's open
//! transaction. v4+ carries several transactions and the `verify_only`
//! check of KIP-890 part 1.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::{AclOperation, ResourceType};

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.version() <= 3 {
        let results = one(
            broker,
            ctx,
            req.v3_and_below_transactional_id.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // v4+ comes from brokers verifying a transaction (KIP-890).
    if !ctx.authorize_cluster(broker, AclOperation::ClusterAction) {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results = one(
            broker,
            ctx,
            t.transactional_id.as_str(),
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(out)
}

async fn one(
    broker: &Broker,
    ctx: &RequestContext,
    tid: &str,
    pid: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let parts: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    // Kafka: Write on the transactional id, then on every topic; if one
    // topic is denied, nothing is added (the others: OPERATION_NOT_ATTEMPTED).
    let denied: Vec<&str> = topics
        .iter()
        .map(|t| t.name.as_str())
        .filter(|t| !ctx.authorize(broker, AclOperation::Write, ResourceType::Topic, t))
        .collect();
    let codes = if !ctx.authorize(
        broker,
        AclOperation::Write,
        ResourceType::TransactionalId,
        tid,
    ) {
        vec![ResponseError::TransactionalIdAuthorizationFailed.code(); parts.len()]
    } else if !denied.is_empty() {
        parts
            .iter()
            .map(|(t, _)| {
                if denied.contains(&t.as_str()) {
                    ResponseError::TopicAuthorizationFailed.code()
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            })
            .collect()
    } else {
        match broker
            .transactions
            .add_partitions(broker, tid, pid, epoch, &parts, verify_only)
            .await
        {
            Ok(c) => c,
            Err(e) => vec![e.code(); parts.len()],
        }
    };
    let mut i = 0;
    topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|p| {
                    let r = AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(codes[i]);
                    i += 1;
                    r
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}
