//! A minimal Kafka-protocol client for broker-to-broker requests (a
//! follower's Fetch and OffsetForLeaderEpoch to its leader): one TCP
//! connection, one request in flight, frames encoded with `kafka-protocol`.
//! Responses are decoded from one `Bytes` frame, so fetched record sets are
//! slices of it (no copy before the log append).

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection to another broker.
pub struct BrokerClient {
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
    /// Largest response frame accepted.
    max_frame: usize,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl BrokerClient {
    /// Connects to `addr` (`host:port`) within `timeout`.
    pub async fn connect(addr: &str, client_id: String, timeout: Duration) -> io::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(BrokerClient {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
            max_frame: 256 << 20,
        })
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
