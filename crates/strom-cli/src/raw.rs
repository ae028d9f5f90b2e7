//! A thin synchronous Kafka client on `kafka-protocol` for the few APIs
//! librdkafka's admin API lacks (DescribeLogDirs, OffsetDelete,
//! FindCoordinator). One connection, one request at a time; over TLS when
//! the security protocol asks for it ([`crate::client_tls`]).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{ApiKey, GroupId, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// One broker connection.
pub struct RawClient {
    stream: Box<dyn crate::client_tls::Conn>,
    next_id: i32,
}

impl RawClient {
    pub fn connect(addr: &str, timeout: Duration) -> Result<RawClient> {
        let sa = addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr}"))?
            .next()
            .ok_or_else(|| anyhow!("cannot resolve {addr}"))?;
        let stream = TcpStream::connect_timeout(&sa, timeout)
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_read_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        stream.set_write_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        stream.set_nodelay(true)?;
        let stream: Box<dyn crate::client_tls::Conn> = match crate::client_tls::current() {
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                Box::new(crate::client_tls::wrap(tls, stream, host)?)
            }
            None => Box::new(stream),
        };
        Ok(RawClient { stream, next_id: 1 })
    }

    /// Sends `req` at `version` and decodes the answer.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("strom-cli")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .and_then(|_| req.encode(&mut body, version))
            .map_err(|e| anyhow!("cannot encode {key:?}: {e}"))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .with_context(|| format!("no {key:?} answer (the broker may not support it)"))?;
        let mut buf = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
        self.stream.read_exact(&mut buf)?;
        let mut buf = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut buf, key.response_header_version(version))
            .map_err(|e| anyhow!("cannot decode the {key:?} header: {e}"))?;
        if h.correlation_id != id {
            bail!("{key:?}: correlation id {} != {id}", h.correlation_id);
        }
        let resp = R::Response::decode(&mut buf, version)
            .map_err(|e| anyhow!("cannot decode the {key:?} answer: {e}"))?;
        let _ = buf.remaining();
        Ok(resp)
    }
}

fn error_text(code: i16) -> Option<String> {
    (code != 0).then(|| match ResponseError::try_from_code(code) {
        Some(e) => format!("{e}"),
        None => format!("error code {code}"),
    })
}

/// One log directory of one broker.
pub struct LogDir {
    pub dir: String,
    pub error: Option<String>,
    /// (topic, partition, size in bytes)
    pub partitions: Vec<(String, i32, i64)>,
}

/// DescribeLogDirs (v2) against one broker, for every partition.
pub fn describe_log_dirs(addr: &str, timeout: Duration) -> Result<Vec<LogDir>> {
    let mut c = RawClient::connect(addr, timeout)?;
    let resp = c.call(&DescribeLogDirsRequest::default().with_topics(None), 2)?;
    if let Some(e) = error_text(resp.error_code) {
        bail!("DescribeLogDirs: {e}");
    }
    Ok(resp
        .results
        .into_iter()
        .map(|r| LogDir {
            dir: r.log_dir.to_string(),
            error: error_text(r.error_code),
            partitions: r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.name.to_string(), p.partition_index, p.partition_size))
                })
                .collect(),
        })
        .collect())
}

/// One voter's or observer's progress in DescribeQuorum.
pub struct QuorumReplica {
    pub id: i32,
    pub log_end_offset: i64,
    pub last_fetch_timestamp: i64,
    pub last_caught_up_timestamp: i64,
}

/// The metadata quorum as DescribeQuorum reports it.
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// DescribeQuorum (v1) for `__cluster_metadata-0` on an open connection.
pub fn describe_quorum(c: &mut RawClient) -> Result<QuorumDescription> {
    use kafka_protocol::messages::describe_quorum_request::{
        DescribeQuorumRequest, PartitionData, TopicData,
    };
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let resp = c.call(&req, 1)?;
    if let Some(e) = error_text(resp.error_code) {
        bail!("DescribeQuorum: {e}");
    }
    let p = resp
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .next()
        .ok_or_else(|| anyhow!("DescribeQuorum: empty answer"))?;
    if let Some(e) = error_text(p.error_code) {
        bail!("DescribeQuorum: {e} (leader {})", p.leader_id.0);
    }
    let replicas = |v: Vec<kafka_protocol::messages::describe_quorum_response::ReplicaState>| {
        v.into_iter()
            .map(|r| QuorumReplica {
                id: r.replica_id.0,
                log_end_offset: r.log_end_offset,
                last_fetch_timestamp: r.last_fetch_timestamp,
                last_caught_up_timestamp: r.last_caught_up_timestamp,
            })
            .collect()
    };
    Ok(QuorumDescription {
        leader_id: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters: replicas(p.current_voters),
        observers: replicas(p.observers),
    })
}

/// The `host:port` of `group`'s coordinator (FindCoordinator v3).
pub fn find_coordinator(bootstrap: &str, group: &str, timeout: Duration) -> Result<String> {
    let first = bootstrap
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("no bootstrap address"))?;
    let mut c = RawClient::connect(first, timeout)?;
    let resp = c.call(
        &FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0),
        3,
    )?;
    if let Some(e) = error_text(resp.error_code) {
        bail!("cannot find the coordinator of group '{group}': {e}");
    }
    Ok(format!("{}:{}", resp.host, resp.port))
}

/// OffsetDelete (v0): drops `group`'s committed offsets for these
/// partitions. Returns per-partition errors.
pub fn offset_delete(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i32, Option<String>)>> {
    let coordinator = find_coordinator(bootstrap, group, timeout)?;
    let mut c = RawClient::connect(&coordinator, timeout)?;
    let req = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                    .collect(),
            )]);
    let resp = c.call(&req, 0)?;
    if let Some(e) = error_text(resp.error_code) {
        bail!("OffsetDelete for group '{group}': {e}");
    }
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, error_text(p.error_code)))
        })
        .collect())
}

/// Every committed offset of `group` (OffsetFetch v7, all topics):
/// (topic, partition, offset).
pub fn offset_fetch_all(
    bootstrap: &str,
    group: &str,
    timeout: Duration,
) -> Result<Vec<(String, i32, i64)>> {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
    let coordinator = find_coordinator(bootstrap, group, timeout)?;
    let mut c = RawClient::connect(&coordinator, timeout)?;
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let resp = c.call(&req, 7)?;
    if let Some(e) = error_text(resp.error_code) {
        bail!("cannot read the offsets of group '{group}': {e}");
    }
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if let Some(e) = error_text(p.error_code) {
                bail!(
                    "cannot read the offset of group '{group}' on {}-{}: {e}",
                    t.name.as_str(),
                    p.partition_index
                );
            }
            if p.committed_offset >= 0 {
                out.push((t.name.to_string(), p.partition_index, p.committed_offset));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The SASL settings of a raw connection, from the librdkafka-style `-X`
/// properties (`security.protocol`, `sasl.mechanism`, `sasl.username`,
/// `sasl.password`).
pub struct SaslLogin {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl SaslLogin {
    /// `None` for PLAINTEXT; an error for what this client cannot do.
    pub fn from_props(props: &[String]) -> Result<Option<SaslLogin>> {
        let get = |key: &str| {
            props
                .iter()
                .filter_map(|p| p.split_once('='))
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .next_back()
        };
        let protocol = get("security.protocol")
            .unwrap_or_else(|| "PLAINTEXT".into())
            .to_ascii_uppercase();
        match protocol.as_str() {
            // TLS itself is set up by `crate::client_tls`.
            "PLAINTEXT" | "SSL" => return Ok(None),
            "SASL_PLAINTEXT" | "SASL_SSL" => {}
            other => bail!("unsupported security.protocol {other}"),
        }
        // librdkafka's sasl.username/sasl.password, or the username/password
        // options of a Java client's sasl.jaas.config (a kafka-configs
        // --command-config file).
        let jaas = match get("sasl.jaas.config") {
            Some(text) => strom_broker::security::sasl::jaas::parse(&text)
                .map_err(|e| anyhow!("sasl.jaas.config: {e}"))?
                .into_iter()
                .flat_map(|e| e.options)
                .collect(),
            None => std::collections::BTreeMap::new(),
        };
        let username = get("sasl.username").or_else(|| jaas.get("username").cloned());
        let password = get("sasl.password").or_else(|| jaas.get("password").cloned());
        Ok(Some(SaslLogin {
            // Kafka's and librdkafka's default is GSSAPI, which Strom has not.
            mechanism: get("sasl.mechanism")
                .or_else(|| get("sasl.mechanisms"))
                .unwrap_or_else(|| "PLAIN".into()),
            username: username.ok_or_else(|| anyhow!("sasl.username is not set"))?,
            password: password.ok_or_else(|| anyhow!("sasl.password is not set"))?,
        }))
    }
}

impl RawClient {
    /// Authenticates the connection (SaslHandshake v1, SaslAuthenticate v2)
    /// with PLAIN or SCRAM-SHA-256/512.
    pub fn authenticate(&mut self, login: &SaslLogin) -> Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mechanism = login.mechanism.to_ascii_uppercase();
        let hs = self.call(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(mechanism.clone())),
            1,
        )?;
        if let Some(e) = error_text(hs.error_code) {
            let enabled: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            bail!(
                "SASL mechanism {mechanism} refused: {e} (enabled: {})",
                enabled.join(",")
            );
        }
        let mut step = |token: Vec<u8>| -> Result<Bytes> {
            let r = self.call(
                &SaslAuthenticateRequest::default().with_auth_bytes(token.into()),
                2,
            )?;
            if r.error_code != 0 {
                bail!(
                    "authentication failed: {}",
                    r.error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .or_else(|| error_text(r.error_code))
                        .unwrap_or_default()
                );
            }
            Ok(r.auth_bytes)
        };
        match mechanism.as_str() {
            "PLAIN" => {
                step(format!("\0{}\0{}", login.username, login.password).into_bytes())?;
                Ok(())
            }
            "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                crate::user::scram_client(&mechanism, &login.username, &login.password, &mut step)
            }
            other => bail!("this command cannot authenticate with SASL mechanism {other}"),
        }
    }
}

/// A connection to the first bootstrap address, authenticated if the `-X`
/// properties ask for SASL.
pub fn connect(bootstrap: &str, props: &[String], timeout: Duration) -> Result<RawClient> {
    let first = bootstrap
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("no bootstrap address"))?;
    let login = SaslLogin::from_props(props)?;
    let mut c = RawClient::connect(first, timeout)?;
    if let Some(login) = login {
        c.authenticate(&login)?;
    }
    Ok(c)
}
