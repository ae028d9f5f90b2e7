//! A minimal Kafka-protocol client for broker-to-broker requests (a
//! follower's Fetch and OffsetForLeaderEpoch to its leader): one TCP
//! connection, one request in flight, frames encoded with `kafka-protocol`.
//! Responses are decoded from one `Bytes` frame, so fetched record sets are
//! slices of it (no copy before the log append).
//!
//! The connection speaks the inter-broker listener's security protocol
//! ([`InterBrokerSecurity`]): TLS with the broker's own key and trust
//! stores, then SASL (SaslHandshake, SaslAuthenticate) with the
//! inter-broker mechanism, before the first request.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::Broker;
use crate::security::sasl::client::{SaslClient, SaslCredentials};
use crate::security::SecurityProtocol;

/// How this broker connects to the others: the inter-broker listener's
/// security protocol, with its TLS client config and SASL credentials.
pub struct InterBrokerSecurity {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslCredentials>,
}

impl InterBrokerSecurity {
    /// Built from the broker's config for `inter.broker.listener.name`;
    /// the error names the setting that is missing or wrong.
    pub fn from_config(broker: &Broker) -> Result<Self, String> {
        let name = broker.config.inter_broker_listener();
        let protocol = broker
            .config
            .listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.security_protocol)
            .or_else(|| SecurityProtocol::parse(&name))
            .unwrap_or(SecurityProtocol::Plaintext);
        let tls = match protocol {
            SecurityProtocol::Ssl | SecurityProtocol::SaslSsl => Some(
                crate::security::tls::listener_client_config(&broker.config, &name)
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let sasl = match protocol {
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => Some(
                crate::security::sasl::client::inter_broker_credentials(&broker.config.raw, &name)?,
            ),
            _ => None,
        };
        Ok(InterBrokerSecurity { tls, sasl })
    }
}

/// A byte stream to another broker: TCP or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection to another broker.
pub struct BrokerClient {
    stream: Box<dyn Stream>,
    correlation_id: i32,
    client_id: StrBytes,
    /// Largest response frame accepted.
    max_frame: usize,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl BrokerClient {
    /// Connects to `host:port` within `timeout`, then secures and
    /// authenticates the connection as `security` says.
    pub async fn connect(
        host: &str,
        port: u16,
        client_id: String,
        timeout: Duration,
        security: &InterBrokerSecurity,
    ) -> io::Result<Self> {
        let setup = async {
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Stream> = match &security.tls {
                None => Box::new(tcp),
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from(
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_string(),
                    )
                    .map_err(invalid)?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
                    Box::new(tls)
                }
            };
            let mut client = BrokerClient {
                stream,
                correlation_id: 0,
                client_id: StrBytes::from_string(client_id),
                max_frame: 256 << 20,
            };
            if let Some(sasl) = &security.sasl {
                client.authenticate(sasl, timeout).await?;
            }
            Ok::<_, io::Error>(client)
        };
        tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// SaslHandshake v1 for the mechanism, then SaslAuthenticate v2 rounds
    /// until the mechanism is done (KIP-152).
    async fn authenticate(&mut self, c: &SaslCredentials, timeout: Duration) -> io::Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let denied = |m: String| io::Error::new(io::ErrorKind::PermissionDenied, m);
        let hs = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(c.mechanism.name()));
        let r = self.send(&hs, 1, timeout).await?;
        if r.error_code != 0 {
            return Err(denied(format!(
                "SASL mechanism {} refused (error {}; the other broker enables {:?})",
                c.mechanism.name(),
                r.error_code,
                r.mechanisms.iter().map(|m| m.as_str()).collect::<Vec<_>>()
            )));
        }
        let mut client = SaslClient::new(c);
        let mut token = client.start();
        loop {
            let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let r = self.send(&req, 2, timeout).await?;
            if r.error_code != 0 {
                return Err(denied(format!(
                    "SASL {} authentication as {:?} failed: {}",
                    c.mechanism.name(),
                    c.username,
                    r.error_message.as_deref().unwrap_or("(no message)")
                )));
            }
            match client.step(&r.auth_bytes).map_err(denied)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// Sends `req` at `version` and reads its response within `timeout`.
    pub async fn send<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> io::Result<R::Response> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(invalid)?;
        req.encode(&mut buf, version).map_err(invalid)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let len = self.stream.read_i32().await?;
            if len < 0 || len as usize > self.max_frame {
                return Err(invalid(format!("response frame of {len} bytes")));
            }
            let mut frame = BytesMut::zeroed(len as usize);
            self.stream.read_exact(&mut frame).await?;
            Ok::<Bytes, io::Error>(frame.freeze())
        };
        let mut frame = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))??;
        let rh = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(invalid)?;
        if rh.correlation_id != self.correlation_id {
            return Err(invalid(format!(
                "correlation id {} answers request {}",
                rh.correlation_id, self.correlation_id
            )));
        }
        R::Response::decode(&mut frame, version).map_err(invalid)
    }
}
