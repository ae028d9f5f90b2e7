//! Listeners and connections.
//!
//! One task per connection reads size-prefixed frames, handles them one at a
//! time and writes the answers in request order (Kafka's per-connection
//! ordering). A frame above `socket.request.max.bytes`, a malformed request,
//! an unknown API or an unsupported version closes that connection with a
//! log line; no other connection is affected.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::handlers::{handle_frame, Outcome};

/// Accepts connections until `shutdown` flips to true.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    name: String,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = broker.clone();
                    let name = name.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(broker, stream, peer, name, shutdown).await {
                            debug!(%peer, error = %e, "connection ended with an I/O error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let mut writer = BufWriter::with_capacity(64 * 1024, wr);
    let max = broker.config.socket_request_max_bytes;
    loop {
        let size = tokio::select! {
            r = reader.read_i32() => match r {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            },
            _ = shutdown.changed() => return Ok(()),
        };
        if size < 0 || size as usize > max {
            warn!(%peer, size, max, "closing connection: request size outside 0..=socket.request.max.bytes");
            return Ok(());
        }
        let mut frame = BytesMut::zeroed(size as usize);
        if let Err(e) = reader.read_exact(&mut frame).await {
            warn!(%peer, size, error = %e, "closing connection: truncated request frame");
            return Ok(());
        }
        match handle_frame(&broker, &listener, peer, frame.freeze()).await {
            Outcome::Respond(bytes) => writer.write_all(&bytes).await?,
            Outcome::NoResponse => {}
            Outcome::Close(why) => {
                writer.flush().await?;
                warn!(%peer, reason = %why, "closing connection");
                return Ok(());
            }
        }
        // Coalesce answers to pipelined requests; flush once nothing is queued.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// Binds every configured listener. A `:0` port binds an ephemeral port,
/// which is then advertised.
pub async fn bind_listeners(broker: &Arc<Broker>) -> std::io::Result<Vec<(String, TcpListener)>> {
    let mut out = Vec::new();
    for l in &broker.config.listeners {
        let host = if l.host.is_empty() {
            "0.0.0.0"
        } else {
            l.host.as_str()
        };
        let listener = TcpListener::bind((host, l.port)).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind listener {}://{}:{}: {e}", l.name, host, l.port),
            )
        })?;
        let local = listener.local_addr()?;
        broker.set_bound_port(&l.name, local.port());
        info!(listener = %l.name, address = %local, "listening");
        out.push((l.name.clone(), listener));
    }
    Ok(out)
}
