//! Listeners and connections.
//!
//! One task per connection reads size-prefixed frames, handles them one at a
//! time and writes the answers in request order (Kafka's per-connection
//! ordering). A frame above `socket.request.max.bytes`, a malformed request,
//! an unknown API or an unsupported version closes that connection with a
//! log line; no other connection is affected.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::handlers::{handle_frame, Outcome};
use crate::security::sasl::{Gate, SaslConnection};
use crate::security::tls::TlsListener;
use crate::security::{KafkaPrincipal, SecurityProtocol};

/// What one connection knows about its peer; requests are handled against
/// it, and the connection layer (TLS, SASL) fills in the principal.
pub struct Session {
    /// Name of the listener the connection came in on.
    pub listener: String,
    pub peer: SocketAddr,
    /// The listener's `listener.security.protocol.map` entry.
    pub security_protocol: SecurityProtocol,
    pub principal: Arc<KafkaPrincipal>,
    /// Client quota state: cached resolution, and the mute owed after a
    /// throttled response.
    pub quota: crate::quota::SessionQuota,
}

/// Accepts connections until `shutdown` flips to true; `tls` is the
/// listener's TLS state when its security protocol is SSL or SASL_SSL.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    name: String,
    tls: Option<Arc<TlsListener>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = broker.clone();
                    let name = name.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(broker, stream, peer, name, tls, shutdown).await {
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
    tls: Option<Arc<TlsListener>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let security_protocol = broker
        .config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .map_or(SecurityProtocol::Plaintext, |l| l.security_protocol);
    let mut session = Session {
        listener,
        peer,
        security_protocol,
        principal: Arc::new(KafkaPrincipal::anonymous()),
        quota: Default::default(),
    };
    let Some(tls) = tls else {
        return serve_stream(broker, stream, session, shutdown).await;
    };
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                if let Some(suppressed) = TLS_FAILED.allow() {
                    warn!(%peer, listener = %session.listener, error = %e, suppressed, "closing connection: TLS handshake failed");
                }
                return Ok(());
            }
            Err(_) => {
                if let Some(suppressed) = TLS_FAILED.allow() {
                    warn!(%peer, listener = %session.listener, timeout_ms = TLS_HANDSHAKE_TIMEOUT.as_millis() as u64, suppressed, "closing connection: TLS handshake timed out");
                }
                return Ok(());
            }
        },
        _ = shutdown.changed() => return Ok(()),
    };
    // On SASL_SSL the principal is SASL's; on SSL it is the certificate's.
    if session.security_protocol == SecurityProtocol::Ssl {
        match tls.principal(stream.get_ref().1.peer_certificates()) {
            Ok(p) => session.principal = Arc::new(p),
            Err(reason) => {
                if let Some(suppressed) = TLS_FAILED.allow() {
                    warn!(%peer, listener = %session.listener, %reason, suppressed, "closing connection: SSL authentication failed");
                }
                return Ok(());
            }
        }
        debug!(%peer, principal = %session.principal, "SSL client authenticated");
    }
    serve_stream(broker, stream, session, shutdown).await
}

/// The request loop of one connection, over any byte stream (plain TCP or
/// TLS).
async fn serve_stream<S: AsyncRead + AsyncWrite + Send + 'static>(
    broker: Arc<Broker>,
    stream: S,
    mut session: Session,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let peer = session.peer;
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let mut writer = BufWriter::with_capacity(64 * 1024, wr);
    let max = broker.config.socket_request_max_bytes;
    let mut sasl = SaslConnection::for_session(&broker, &session);
    let mut pending: VecDeque<Deferred> = VecDeque::new();
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
            if let Some(suppressed) = OVERSIZED.allow() {
                warn!(%peer, size, max, suppressed, "closing connection: request size outside 0..=socket.request.max.bytes");
            }
            return Ok(());
        }
        let frame = match read_frame(&mut reader, size as usize).await {
            Ok(frame) => frame,
            Err(e) => {
                if let Some(suppressed) = TRUNCATED.allow() {
                    warn!(%peer, size, error = %e, suppressed, "closing connection: truncated request frame");
                }
                return Ok(());
            }
        };
        let frame = frame.freeze();
        // On a SASL listener nothing but ApiVersions and the SASL exchange
        // is processed before authentication, nor after the session expires.
        if let Some(gate) = sasl.as_mut() {
            match gate.on_frame(&broker, &mut session, &frame) {
                Gate::Pass => {}
                Gate::Respond(bytes) => {
                    if !write_deferred(&mut pending, &mut writer, peer).await? {
                        return Ok(());
                    }
                    writer.write_all(&bytes).await?;
                    writer.flush().await?;
                    continue;
                }
                Gate::Close { response, reason } => {
                    if !write_deferred(&mut pending, &mut writer, peer).await? {
                        return Ok(());
                    }
                    if let Some(bytes) = response {
                        writer.write_all(&bytes).await?;
                    }
                    writer.flush().await?;
                    if let Some(suppressed) = REJECTED.allow() {
                        warn!(%peer, %reason, suppressed, "closing connection");
                    }
                    return Ok(());
                }
            }
        }
        let outcome = if is_fetch(&frame) {
            // A long-poll Fetch may wait up to its max_wait_ms: if the client
            // goes away meanwhile, stop waiting and close (as Kafka does)
            // instead of holding the socket until the wait ends.
            let handling = handle_frame(&broker, &mut session, frame);
            tokio::pin!(handling);
            let mut more_input = !reader.buffer().is_empty();
            loop {
                tokio::select! {
                    outcome = &mut handling => break outcome,
                    read = reader.fill_buf(), if !more_input => match read {
                        Ok([]) => return Ok(()),
                        Ok(_) => more_input = true,
                        Err(e) => return Err(e),
                    },
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        } else {
            handle_frame(&broker, &mut session, frame).await
        };
        // answers go out in request order: deferred ones before this one
        if !matches!(outcome, Outcome::Deferred(_))
            && !write_deferred(&mut pending, &mut writer, peer).await?
        {
            return Ok(());
        }
        match outcome {
            Outcome::Deferred(answer) => pending.push_back(answer),
            Outcome::Respond(bytes) => writer.write_all(&bytes).await?,
            Outcome::RespondParts(parts) => {
                // large parts bypass the buffer: no copy in user space
                for part in &parts {
                    writer.write_all(part).await?;
                }
            }
            Outcome::NoResponse => {}
            Outcome::Close(why) => {
                writer.flush().await?;
                if let Some(suppressed) = REJECTED.allow() {
                    warn!(%peer, reason = %why, suppressed, "closing connection");
                }
                return Ok(());
            }
        }
        // Deferred answers (fsync before ack) go out as they resolve, but
        // the client's next request is handled as soon as it arrives, so its
        // write overlaps the fsync. Bounded, as each holds partition state.
        if !pending.is_empty()
            && !serve_deferred(&mut pending, &mut writer, &mut reader, peer).await?
        {
            return Ok(());
        }
        // Coalesce answers to pipelined requests; flush once nothing is queued.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
        // A throttled client: send its answer, then read nothing more until
        // the throttle time has passed (Kafka mutes the channel).
        if let Some(mute) = session.quota.take_mute() {
            if !write_deferred(&mut pending, &mut writer, peer).await? {
                return Ok(());
            }
            writer.flush().await?;
            tokio::select! {
                _ = tokio::time::sleep(mute) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

/// Whether a request frame is a Fetch: the one request that may wait long
/// for data and is safe to abandon (it changes nothing).
fn is_fetch(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Fetch as i16
}

/// An answer the connection owes once it resolves (see [`Outcome::Deferred`]).
type Deferred = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// Most deferred answers a connection holds before it waits for them.
const MAX_DEFERRED: usize = 16;

/// Waits for the deferred answers in order and writes them. `Ok(false)`:
/// one of them closes the connection (logged here).
async fn write_deferred<W: AsyncWrite + Unpin>(
    pending: &mut VecDeque<Deferred>,
    writer: &mut W,
    peer: SocketAddr,
) -> std::io::Result<bool> {
    while let Some(answer) = pending.pop_front() {
        if !write_answer(answer.await, writer, peer).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes one resolved deferred answer. `Ok(false)`: close the connection.
async fn write_answer<W: AsyncWrite + Unpin>(
    answer: Outcome,
    writer: &mut W,
    peer: SocketAddr,
) -> std::io::Result<bool> {
    match answer {
        Outcome::Respond(bytes) => writer.write_all(&bytes).await?,
        Outcome::RespondParts(parts) => {
            for part in &parts {
                writer.write_all(part).await?;
            }
        }
        Outcome::NoResponse => {}
        // a deferred answer never defers again; never leave it unanswered
        Outcome::Deferred(_) | Outcome::Close(_) => {
            writer.flush().await?;
            if let Some(suppressed) = REJECTED.allow() {
                warn!(%peer, suppressed, "closing connection: a deferred answer failed");
            }
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes deferred answers in order as they resolve, until none is left or
/// the next request arrives (`fill_buf` keeps what it reads, so abandoning
/// it loses nothing). At [`MAX_DEFERRED`] it waits for the oldest answer
/// first; at EOF it sends them all. `Ok(false)`: close the connection.
async fn serve_deferred<R, W>(
    pending: &mut VecDeque<Deferred>,
    writer: &mut W,
    reader: &mut R,
    peer: SocketAddr,
) -> std::io::Result<bool>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    loop {
        let room = pending.len() < MAX_DEFERRED;
        let Some(head) = pending.front_mut() else {
            return Ok(true);
        };
        tokio::select! {
            biased;
            r = reader.fill_buf(), if room => {
                if !r?.is_empty() {
                    return Ok(true);
                }
                // EOF: the client may still read its answers
                return write_deferred(pending, writer, peer).await;
            }
            answer = head.as_mut() => {
                pending.pop_front();
                if !write_answer(answer, writer, peer).await? {
                    return Ok(false);
                }
                writer.flush().await?;
            }
        }
    }
}

/// Reads one request frame of `size` bytes into a buffer's spare capacity:
/// no zeroing of memory the read overwrites anyway (it cost 4% of the
/// broker's CPU under a produce load), and a huge announced size reserves
/// address space instead of touching it.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> std::io::Result<BytesMut> {
    let mut frame = BytesMut::with_capacity(size);
    let mut limited = reader.take(size as u64);
    while frame.len() < size {
        if limited.read_buf(&mut frame).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(frame)
}

/// A rate limit for the warning of one class of rejected request, so a
/// misbehaving client cannot flood the log: at most [`WarnLimiter::BURST`]
/// lines per [`WarnLimiter::WINDOW_MS`]; the next line allowed says how
/// many were suppressed. Lock-free; meant for `static`s.
pub struct WarnLimiter {
    /// Start of the current window (ms since the epoch).
    window: AtomicU64,
    /// Lines in the current window (allowed or not).
    count: AtomicU64,
    /// Suppressed since the last line allowed.
    suppressed: AtomicU64,
}

impl WarnLimiter {
    pub const BURST: u64 = 10;
    pub const WINDOW_MS: u64 = 10_000;

    pub const fn new() -> Self {
        WarnLimiter {
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed so far)` if this line may be logged.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(crate::broker::now_ms().max(0) as u64)
    }

    fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let start = self.window.load(Ordering::Relaxed);
        if now_ms.saturating_sub(start) >= Self::WINDOW_MS
            && self
                .window
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < Self::BURST {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for WarnLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// Rejected-request warning classes (process-wide).
static OVERSIZED: WarnLimiter = WarnLimiter::new();
static TRUNCATED: WarnLimiter = WarnLimiter::new();
static REJECTED: WarnLimiter = WarnLimiter::new();
/// Failed or timed-out TLS handshakes (garbage, plaintext on a TLS port,
/// untrusted client certificates).
static TLS_FAILED: WarnLimiter = WarnLimiter::new();

/// How long a client may take to complete the TLS handshake; a peer that
/// connects and stays silent must not hold a task and socket forever.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Produce partitions rejected with an error code.
pub static PRODUCE_REJECTED: WarnLimiter = WarnLimiter::new();

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

#[cfg(test)]
mod tests {
    use super::WarnLimiter;

    #[test]
    fn warn_limiter_allows_a_burst_per_window_and_counts_the_rest() {
        let l = WarnLimiter::new();
        let t0 = 1_000_000;
        for _ in 0..WarnLimiter::BURST {
            assert_eq!(l.allow_at(t0), Some(0));
        }
        assert_eq!(l.allow_at(t0 + 1), None);
        assert_eq!(l.allow_at(t0 + 2), None);
        assert_eq!(l.allow_at(t0 + WarnLimiter::WINDOW_MS), Some(2));
        assert_eq!(l.allow_at(t0 + WarnLimiter::WINDOW_MS + 1), Some(0));
    }
}
