//! Request handlers, one module per Kafka API, and the registry that drives
//! both dispatch and the ApiVersions answer (so the two cannot disagree).
//!
//! Each handler reads like the protocol spec: take the decoded request, act
//! on the broker's domain objects, return the response struct. Framing,
//! header versions and encoding are done here, once.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::broker::Broker;
use crate::network::Session;
use crate::security::KafkaPrincipal;

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
mod forward;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

/// Who sent a request and how.
pub struct RequestContext {
    pub header: RequestHeader,
    /// Name of the listener the connection came in on (e.g. `PLAINTEXT`).
    pub listener: String,
    pub peer: SocketAddr,
    /// The authenticated identity of the connection (`User:ANONYMOUS` on a
    /// PLAINTEXT listener).
    pub principal: Arc<KafkaPrincipal>,
}

impl RequestContext {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }
}

/// What the connection does after a request.
pub enum Outcome {
    /// Send this frame (length prefix included).
    Respond(BytesMut),
    /// Send this frame as consecutive parts (length prefix in the first):
    /// large record sets are referenced, not copied (Fetch).
    RespondParts(Vec<Bytes>),
    /// Send what this resolves to once it does (Produce waiting for an
    /// fsync). The connection may handle its next requests meanwhile; answers
    /// still go out in request order.
    Deferred(std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>),
    /// Send nothing (Produce with acks=0).
    NoResponse,
    /// Close the connection, logging why (Kafka's answer to requests it cannot
    /// parse, unknown APIs and unsupported versions other than ApiVersions').
    Close(String),
}

/// A handler's result: a response, or (Produce acks=0) possibly none.
pub trait IntoOutcome {
    fn into_outcome(self, ctx: &RequestContext) -> Outcome;
}

impl<T: Encodable + HeaderVersion + 'static> IntoOutcome for T {
    fn into_outcome(self, ctx: &RequestContext) -> Outcome {
        // Fetch responses reference the records they carry instead of
        // copying them into the frame (the copy was a third of the CPU a
        // consumer costs the broker).
        if let Some(fetch) = (&self as &dyn std::any::Any).downcast_ref::<FetchResponse>() {
            return fetch::encode_response_parts(ctx.header.correlation_id, ctx.version(), fetch);
        }
        encode_response(ctx.header.correlation_id, ctx.version(), &self)
    }
}

/// What a deferred answer waits for: a patch applied to the response
/// before it is sent (the errors of flushes that failed).
pub type ResponsePatch<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Box<dyn FnOnce(&mut T) + Send>> + Send>>;

/// `None` means "no response to send"; a `Some` error means close.
pub enum ProduceReply<T> {
    Response(T),
    /// The response, to be sent after the future resolves and its patch
    /// (errors of flushes that failed) is applied: fsync before ack.
    Deferred(T, ResponsePatch<T>),
    NoResponse,
    Close(String),
}

impl<T: Encodable + HeaderVersion + Send + 'static> IntoOutcome for ProduceReply<T> {
    fn into_outcome(self, ctx: &RequestContext) -> Outcome {
        match self {
            ProduceReply::Response(r) => r.into_outcome(ctx),
            ProduceReply::Deferred(mut r, durable) => {
                let (correlation_id, version) = (ctx.header.correlation_id, ctx.version());
                Outcome::Deferred(Box::pin(async move {
                    (durable.await)(&mut r);
                    encode_response(correlation_id, version, &r)
                }))
            }
            ProduceReply::NoResponse => Outcome::NoResponse,
            ProduceReply::Close(why) => Outcome::Close(why),
        }
    }
}

/// Encodes a response frame: length, header (the version the API's response
/// uses at `version`), body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    resp: &R,
) -> Outcome {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = match (
        header.compute_size(header_version),
        resp.compute_size(version),
    ) {
        (Ok(h), Ok(b)) => h + b,
        (Err(e), _) | (_, Err(e)) => return Outcome::Close(format!("cannot size response: {e}")),
    };
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    if let Err(e) = header
        .encode(&mut buf, header_version)
        .and_then(|_| resp.encode(&mut buf, version))
    {
        return Outcome::Close(format!("cannot encode response: {e}"));
    }
    Outcome::Respond(buf)
}

macro_rules! api_registry {
    ($( $key:ident => $module:ident :: $req:ident, $min:literal ..= $max:literal; )*) => {
        /// Every API this broker implements and the versions it accepts, with
        /// Kafka 4.0's minimums (KIP-896).
        pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[ $( (ApiKey::$key, $min, $max), )* ];

        async fn dispatch(broker: &Arc<Broker>, ctx: &RequestContext, key: ApiKey, body: &mut Bytes, quota: &mut crate::quota::SessionQuota) -> Outcome {
            let version = ctx.version();
            let frame_len = body.len();
            match key {
                $( ApiKey::$key => {
                    #[allow(unused_mut)]
                    let mut req = match kafka_protocol::messages::$req::decode(body, version) {
                        Ok(r) => r,
                        Err(e) => return Outcome::Close(format!("cannot decode {key:?} v{version}: {e}")),
                    };
                    let quota_exempt = {
                        #[allow(unused_imports)] // each arm uses one of the two
                        use crate::quota::{ViaNoQuotaRequest as _, ViaQuotaRequest as _};
                        let mut slot = crate::quota::QuotaSlot(&mut req);
                        crate::quota::prepare(broker, ctx, quota, (&mut slot).quota_request())
                    };
                    let measure = broker.quotas.enabled(crate::quota::QuotaType::Request);
                    let (mut reply, nanos) = crate::quota::timed(measure, $module::handle(broker, ctx, req)).await;
                    {
                        #[allow(unused_imports)] // each arm uses one of the two
                        use crate::quota::{ViaNoQuotaResponse as _, ViaQuotaResponse as _};
                        let mut slot = crate::quota::QuotaSlot(&mut reply);
                        let response = (&mut slot).quota_response();
                        if !quota_exempt {
                            crate::quota::settle(broker, ctx, quota, key, frame_len, nanos, response);
                        }
                    }
                    match reply.into_outcome(ctx) {
                        Outcome::Close(why) => Outcome::Close(format!("{key:?} v{version}: {why}")),
                        other => other,
                    }
                } )*
                _ => Outcome::Close(format!("unsupported API {key:?}")),
            }
        }
    };
}

api_registry! {
    Produce => produce::ProduceRequest, 3..=12;
    Fetch => fetch::FetchRequest, 4..=17;
    ListOffsets => list_offsets::ListOffsetsRequest, 1..=10;
    Metadata => metadata::MetadataRequest, 0..=13;
    ApiVersions => api_versions::ApiVersionsRequest, 0..=4;
    CreateTopics => create_topics::CreateTopicsRequest, 2..=7;
    DeleteTopics => delete_topics::DeleteTopicsRequest, 1..=6;
    DescribeCluster => describe_cluster::DescribeClusterRequest, 0..=2;
    DescribeQuorum => describe_quorum::DescribeQuorumRequest, 0..=2;
    DescribeConfigs => describe_configs::DescribeConfigsRequest, 1..=4;
    AlterConfigs => alter_configs::AlterConfigsRequest, 0..=2;
    IncrementalAlterConfigs => incremental_alter_configs::IncrementalAlterConfigsRequest, 0..=1;
    CreatePartitions => create_partitions::CreatePartitionsRequest, 0..=3;
    DeleteRecords => delete_records::DeleteRecordsRequest, 0..=2;
    DescribeLogDirs => describe_log_dirs::DescribeLogDirsRequest, 1..=4;
    ElectLeaders => elect_leaders::ElectLeadersRequest, 0..=2;
    AlterPartitionReassignments => alter_partition_reassignments::AlterPartitionReassignmentsRequest, 0..=0;
    ListPartitionReassignments => list_partition_reassignments::ListPartitionReassignmentsRequest, 0..=0;
    OffsetForLeaderEpoch => offset_for_leader_epoch::OffsetForLeaderEpochRequest, 2..=4;
    DescribeTopicPartitions => describe_topic_partitions::DescribeTopicPartitionsRequest, 0..=0;
    OffsetCommit => offset_commit::OffsetCommitRequest, 2..=9;
    OffsetFetch => offset_fetch::OffsetFetchRequest, 1..=9;
    FindCoordinator => find_coordinator::FindCoordinatorRequest, 0..=6;
    JoinGroup => join_group::JoinGroupRequest, 0..=9;
    Heartbeat => heartbeat::HeartbeatRequest, 0..=4;
    LeaveGroup => leave_group::LeaveGroupRequest, 0..=5;
    SyncGroup => sync_group::SyncGroupRequest, 0..=5;
    DescribeGroups => describe_groups::DescribeGroupsRequest, 0..=6;
    ListGroups => list_groups::ListGroupsRequest, 0..=5;
    DeleteGroups => delete_groups::DeleteGroupsRequest, 0..=2;
    OffsetDelete => offset_delete::OffsetDeleteRequest, 0..=0;
    InitProducerId => init_producer_id::InitProducerIdRequest, 0..=5;
    AddPartitionsToTxn => add_partitions_to_txn::AddPartitionsToTxnRequest, 0..=5;
    AddOffsetsToTxn => add_offsets_to_txn::AddOffsetsToTxnRequest, 0..=4;
    EndTxn => end_txn::EndTxnRequest, 0..=4;
    TxnOffsetCommit => txn_offset_commit::TxnOffsetCommitRequest, 0..=4;
    WriteTxnMarkers => write_txn_markers::WriteTxnMarkersRequest, 1..=1;
    DescribeProducers => describe_producers::DescribeProducersRequest, 0..=0;
    DescribeTransactions => describe_transactions::DescribeTransactionsRequest, 0..=0;
    ListTransactions => list_transactions::ListTransactionsRequest, 0..=1;
    ConsumerGroupHeartbeat => consumer_group_heartbeat::ConsumerGroupHeartbeatRequest, 0..=1;
    ConsumerGroupDescribe => consumer_group_describe::ConsumerGroupDescribeRequest, 0..=1;
    SaslHandshake => sasl_handshake::SaslHandshakeRequest, 0..=1;
    SaslAuthenticate => sasl_authenticate::SaslAuthenticateRequest, 0..=2;
    DescribeUserScramCredentials => describe_user_scram_credentials::DescribeUserScramCredentialsRequest, 0..=0;
    AlterUserScramCredentials => alter_user_scram_credentials::AlterUserScramCredentialsRequest, 0..=0;
    DescribeAcls => describe_acls::DescribeAclsRequest, 1..=3;
    CreateAcls => create_acls::CreateAclsRequest, 1..=3;
    DeleteAcls => delete_acls::DeleteAclsRequest, 1..=3;
    DescribeClientQuotas => describe_client_quotas::DescribeClientQuotasRequest, 0..=1;
    AlterClientQuotas => alter_client_quotas::AlterClientQuotasRequest, 0..=1;
}

/// The version range this broker accepts for `key`, if any.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Handles one request frame (without its length prefix).
pub async fn handle_frame(
    broker: &Arc<Broker>,
    session: &mut Session,
    mut frame: Bytes,
) -> Outcome {
    if frame.len() < 8 {
        return Outcome::Close(format!(
            "request of {} bytes is too short for a header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown API key {raw_key}"));
    };
    let supported = supported_versions(key);
    let in_range = supported.is_some_and(|(min, max)| (min..=max).contains(&version));
    if !in_range && key != ApiKey::ApiVersions {
        return Outcome::Close(match supported {
            Some((min, max)) => {
                format!("unsupported version {version} of {key:?} (supported {min}..={max})")
            }
            None => format!("unsupported API {key:?}"),
        });
    }
    let header = match RequestHeader::decode(&mut frame, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => {
            return Outcome::Close(format!(
                "cannot decode request header of {key:?} v{version}: {e}"
            ))
        }
    };
    if !in_range {
        // KIP-511: an ApiVersions version we don't know gets a v0 answer with
        // UNSUPPORTED_VERSION and our ranges, so the client can retry.
        return encode_response(
            header.correlation_id,
            0,
            &api_versions::unsupported_version_response(),
        );
    }
    let ctx = RequestContext {
        header,
        listener: session.listener.clone(),
        peer: session.peer,
        principal: session.principal.clone(),
    };
    let started = std::time::Instant::now();
    let outcome = dispatch(broker, &ctx, key, &mut frame, &mut session.quota).await;
    broker.metrics.observe_request(key, started.elapsed());
    outcome
}
