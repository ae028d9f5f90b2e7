//! Raft RPCs between controller voters, and brokers' requests to the
//! active controller, over TCP or TLS (the controller listener; TLS when
//! [`crate::QuorumConfig::tls`] is set, on both the accepting and the
//! dialling side, see [`Transport`]).
//!
//! Frames are `[u32 BE length][JSON]`; JSON because `serde_json` is already
//! in the build and metadata traffic is small. A request is one of
//! AppendEntries, Vote, InstallSnapshot (a chunk), or a
//! [`ControllerRequest`]; the reply carries openraft's result for it, or
//! the controller's answer (`Err(NotLeader)` when this node is not the
//! active controller: Kafka's NOT_CONTROLLER, the caller re-resolves). A connection carries one request at a time:
//! openraft opens one client per target and stream, so this is its natural
//! unit.
//!
//! Owner: openraft creates one [`PeerClient`] per target through
//! [`NetworkFactory`]. A client connects lazily, and on any I/O error or
//! timeout drops its connection and reports `Unreachable`, so the next call
//! reconnects (openraft backs off between tries). The server side,
//! `serve`, runs one task per accepted connection until the peer closes it
//! or the quorum shuts down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::controller::Call;
use crate::controller_api::{ControllerRequest, ControllerResponse};
use crate::storage::Nid;
use crate::{ProposeError, QuorumTls, TypeConfig};

/// How often a peer that stays unreachable is logged (openraft retries it
/// every 500 ms and logs each failure; strom-cli filters openraft's
/// replication target out of the default log filter for that reason).
const UNREACHABLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long an accepted connection may take over its TLS handshake (a
/// peer that connects and stays silent would hold its task otherwise).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bigger frames are refused (a snapshot chunk or an entries batch is far smaller).
const MAX_FRAME: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<Nid>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A broker's request to the active controller (see [`crate::controller`]).
    Controller(ControllerRequest),
}

#[derive(Serialize, Deserialize)]
enum Reply {
    AppendEntries(Result<AppendEntriesResponse<Nid>, RaftError<Nid>>),
    Vote(Result<VoteResponse<Nid>, RaftError<Nid>>),
    InstallSnapshot(Result<InstallSnapshotResponse<Nid>, RaftError<Nid, InstallSnapshotError>>),
    /// `Err(NotLeader)` is Kafka's NOT_CONTROLLER: re-resolve and retry.
    Controller(Result<ControllerResponse, ProposeError>),
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    w.write_all(payload).await?;
    w.flush().await
}

async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the leader saw of each voter's replication, for DescribeQuorum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTimes {
    /// Wall-clock ms of the last AppendEntries the voter accepted (-1: never).
    pub last_fetch_ms: i64,
    /// Wall-clock ms of the last accepted AppendEntries that reached the
    /// leader's log end as it was then (-1: never).
    pub last_caught_up_ms: i64,
}

/// Replication timestamps shared by the clients and the quorum handle.
#[derive(Debug)]
pub(crate) struct PeerStats {
    times: Mutex<BTreeMap<Nid, PeerTimes>>,
    /// The local log's last index (`u64::MAX`: empty), kept current by the
    /// quorum's metrics task, to judge "caught up".
    pub(crate) leader_last_index: AtomicU64,
}

impl PeerStats {
    pub(crate) fn new() -> Self {
        Self {
            times: Mutex::new(BTreeMap::new()),
            leader_last_index: AtomicU64::new(u64::MAX),
        }
    }
    pub(crate) fn get(&self, id: Nid) -> Option<PeerTimes> {
        self.times.lock().unwrap().get(&id).copied()
    }
    fn accepted(&self, id: Nid, end_index: Option<u64>) {
        let now = now_ms();
        let last = self.leader_last_index.load(Ordering::Relaxed);
        let mut times = self.times.lock().unwrap();
        let t = times.entry(id).or_insert(PeerTimes {
            last_fetch_ms: -1,
            last_caught_up_ms: -1,
        });
        t.last_fetch_ms = now;
        let caught_up = match end_index {
            Some(e) => last == u64::MAX || e >= last,
            None => last == u64::MAX,
        };
        if caught_up {
            t.last_caught_up_ms = now;
        }
    }
}

/// A byte stream on the controller listener: TCP, or TLS over TCP. Not the
/// data path, so a boxed stream is cheap enough.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// One connection, buffered both ways.
type Conn = BufStream<Box<dyn Stream>>;

/// How this node dials and accepts controller-listener connections: plain
/// TCP, or TLS with the listener's [`QuorumTls`]. Cloned into every client
/// and the accept loop (it holds only `Arc`s).
#[derive(Clone)]
pub(crate) struct Transport {
    connect_timeout: Duration,
    tls: Option<QuorumTls>,
}

impl Transport {
    pub(crate) fn new(connect_timeout: Duration, tls: Option<QuorumTls>) -> Self {
        Self {
            connect_timeout,
            tls,
        }
    }

    /// Connects to `addr` (`host:port`), with the TLS handshake when the
    /// listener uses TLS (the host is the name the certificate must carry),
    /// all within the connect timeout.
    async fn connect(&self, addr: &str) -> std::io::Result<Conn> {
        let setup = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Stream> = match &self.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                    let name = rustls::pki_types::ServerName::try_from(
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_string(),
                    )
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let stream = tokio_rustls::TlsConnector::from(tls.client.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| {
                            std::io::Error::new(e.kind(), format!("TLS handshake: {e}"))
                        })?;
                    Box::new(stream)
                }
            };
            Ok(BufStream::new(stream))
        };
        tokio::time::timeout(self.connect_timeout, setup)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// The server side of an accepted connection: as is, or after the TLS
    /// handshake (which checks the client certificate per `ssl.client.auth`).
    async fn accept(&self, tcp: TcpStream) -> std::io::Result<Conn> {
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let accept = tokio_rustls::TlsAcceptor::from(tls.server.clone()).accept(tcp);
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept)
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })?
                    .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
                Box::new(stream)
            }
        };
        Ok(BufStream::new(stream))
    }
}

/// Creates a [`PeerClient`] per target.
pub struct NetworkFactory {
    pub(crate) stats: Arc<PeerStats>,
    pub(crate) transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: Nid, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            conn: None,
            stats: self.stats.clone(),
            transport: self.transport.clone(),
            unreachable_logged: None,
        }
    }
}

/// One voter's client connection.
pub struct PeerClient {
    target: Nid,
    addr: String,
    conn: Option<Conn>,
    stats: Arc<PeerStats>,
    transport: Transport,
    /// When its unreachability was last logged (`None`: it answered since).
    unreachable_logged: Option<std::time::Instant>,
}

impl PeerClient {
    async fn call(&mut self, req: &Request, ttl: Duration) -> std::io::Result<Reply> {
        let payload = serde_json::to_vec(req).map_err(std::io::Error::other)?;
        let res = tokio::time::timeout(ttl, async {
            if self.conn.is_none() {
                self.conn = Some(self.transport.connect(&self.addr).await?);
            }
            let conn = self.conn.as_mut().unwrap();
            write_frame(conn, &payload).await?;
            let bytes = read_frame(conn).await?;
            serde_json::from_slice::<Reply>(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "RPC timed out",
            ))
        });
        if res.is_err() {
            // The stream may hold a late reply: never reuse it.
            self.conn = None;
        } else if self.unreachable_logged.take().is_some() {
            tracing::info!(target_node = self.target, addr = %self.addr, "metadata quorum peer reachable again");
        }
        res
    }

    fn unreachable<E: std::error::Error>(
        &mut self,
        e: std::io::Error,
    ) -> RPCError<Nid, BasicNode, E> {
        let due = self
            .unreachable_logged
            .is_none_or(|t| t.elapsed() >= UNREACHABLE_LOG_INTERVAL);
        if due {
            self.unreachable_logged = Some(std::time::Instant::now());
            tracing::warn!(target_node = self.target, addr = %self.addr, error = %e, "metadata quorum peer unreachable (logged every 10 s while it lasts)");
        } else {
            tracing::debug!(target_node = self.target, addr = %self.addr, error = %e, "metadata RPC failed");
        }
        RPCError::Unreachable(Unreachable::new(&e))
    }

    fn unexpected<E: std::error::Error>(&mut self) -> RPCError<Nid, BasicNode, E> {
        self.conn = None;
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "reply does not match the request",
        );
        RPCError::Unreachable(Unreachable::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid>>> {
        let end = rpc
            .entries
            .last()
            .map(|e| e.log_id.index)
            .or(rpc.prev_log_id.map(|l| l.index));
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::AppendEntries(Ok(resp))) => {
                if matches!(resp, AppendEntriesResponse::Success) {
                    self.stats.accepted(self.target, end);
                } else if let AppendEntriesResponse::PartialSuccess(m) = &resp {
                    self.stats.accepted(self.target, m.map(|l| l.index));
                }
                Ok(resp)
            }
            Ok(Reply::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<Nid>,
        RPCError<Nid, BasicNode, RaftError<Nid, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(Reply::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.unreachable(e)),
        }
    }
}

/// Accepts voter connections on the controller listener and hands their
/// requests to `raft`. Runs until the task is aborted; aborting it also
/// closes every connection it accepted (they live in its `JoinSet`).
pub(crate) async fn serve(
    listener: TcpListener,
    transport: Transport,
    raft: Raft<TypeConfig>,
    controller: mpsc::Sender<Call>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let raft = raft.clone();
                    let controller = controller.clone();
                    let transport = transport.clone();
                    conns.spawn(async move {
                        let served = match transport.accept(stream).await {
                            Ok(conn) => serve_connection(conn, raft, controller).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = served {
                            tracing::debug!(%peer, error = %e, "controller connection closed");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "controller listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection(
    mut conn: Conn,
    raft: Raft<TypeConfig>,
    controller: mpsc::Sender<Call>,
) -> std::io::Result<()> {
    loop {
        let bytes = match read_frame(&mut conn).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let req: Request = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let reply = match req {
            Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Reply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            Request::Controller(req) => {
                Reply::Controller(local_controller_call(&controller, req).await)
            }
        };
        let payload = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        write_frame(&mut conn, &payload).await?;
    }
}

/// Hands `req` to this node's controller task and waits for its answer
/// (which says NOT_CONTROLLER unless this node is the leader).
pub(crate) async fn local_controller_call(
    controller: &mpsc::Sender<Call>,
    req: ControllerRequest,
) -> Result<ControllerResponse, ProposeError> {
    let stopped = || ProposeError::Unavailable("the controller has stopped".into());
    let (tx, rx) = oneshot::channel();
    controller.send((req, tx)).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// A node's connection to the active controller, for
/// [`crate::MetadataQuorum::controller_call`]: one idle connection kept
/// while the controller stays at the same address. A call takes it out of
/// the slot (or opens another when it is in use), so concurrent calls never
/// queue behind one stuck on a hung controller.
pub(crate) struct ControllerClient {
    idle: std::sync::Mutex<Option<(String, Conn)>>,
    transport: Transport,
}

impl ControllerClient {
    pub(crate) fn new(transport: Transport) -> Self {
        Self {
            idle: std::sync::Mutex::new(None),
            transport,
        }
    }

    /// Sends `req` to the node at `addr`; an `Err` is a transport failure
    /// (the connection is dropped, the next call reconnects).
    pub(crate) async fn call(
        &self,
        addr: &str,
        req: &ControllerRequest,
        ttl: Duration,
    ) -> std::io::Result<Result<ControllerResponse, ProposeError>> {
        let payload =
            serde_json::to_vec(&Request::Controller(req.clone())).map_err(std::io::Error::other)?;
        // The connection is out of the slot while in use and put back only
        // after a whole exchange, so a call cut short (error, timeout, or
        // abandoned for a new controller) never leaves a late reply on a
        // stream the next call would read.
        tokio::time::timeout(ttl, async {
            let idle = self.idle.lock().unwrap().take();
            let mut conn = match idle {
                Some((a, c)) if a == addr => c,
                _ => self.transport.connect(addr).await?,
            };
            write_frame(&mut conn, &payload).await?;
            let bytes = read_frame(&mut conn).await?;
            let result = match serde_json::from_slice::<Reply>(&bytes) {
                Ok(Reply::Controller(result)) => result,
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "reply does not match the request",
                    ))
                }
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            };
            let mut slot = self.idle.lock().unwrap();
            if slot.is_none() {
                *slot = Some((addr.to_string(), conn));
            }
            Ok(result)
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "controller call timed out",
            ))
        })
    }
}
