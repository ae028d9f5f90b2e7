//! Shared harness for the integration tests: a real `strom server` process on a
//! loopback port with its own data directory, and a tiny synchronous Kafka client
//! built on `kafka-protocol` for tests that must control every byte on the wire.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    api_versions_request::ApiVersionsRequest,
    create_topics_request::{CreatableTopic, CreateTopicsRequest},
    create_topics_response::CreateTopicsResponse,
    fetch_request::{FetchPartition, FetchRequest, FetchTopic},
    fetch_response::{FetchResponse, PartitionData},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic},
    produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
    produce_response::PartitionProduceResponse,
    ApiKey, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The node id every test server runs with unless a test overrides `node.id`.
pub const NODE_ID: i32 = 1;

/// How long a server gets to become ready (first ApiVersions round trip).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A `strom server` child process with a private data directory and port.
pub struct TestServer {
    dir: tempfile::TempDir,
    port: u16,
    overrides: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl TestServer {
    /// Starts a server with the default settings.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `--override key=value` settings.
    pub fn start_with(overrides: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("strom-it-")
            .tempdir()
            .expect("create temp dir");
        let port = free_port();
        let mut server = TestServer {
            dir,
            port,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("server.stderr")
    }

    /// The server's stderr so far (all starts), for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Opens a raw protocol connection to this server. If that fails, says
    /// whether the server process is still alive (a crash is the usual cause).
    pub fn connect(&self) -> RawClient {
        match TcpStream::connect_timeout(&self.addr(), Duration::from_secs(5)) {
            Ok(stream) => RawClient::from_stream(stream, Duration::from_secs(30)),
            Err(e) => {
                let pid = self.child.as_ref().map(|c| c.id());
                let alive = pid.is_some_and(|pid| {
                    // A reaped-or-zombie check without needing `&mut self`.
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .map(|s| !s.contains(") Z "))
                        .unwrap_or(false)
                });
                panic!(
                    "connect to {}: {e}; server process {}",
                    self.addr(),
                    if alive {
                        "alive"
                    } else {
                        "DIED (see its stderr below)"
                    }
                );
            }
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let config = self.dir.path().join("server.properties");
        std::fs::write(&config, format!("node.id={NODE_ID}\n")).expect("write server.properties");
        std::fs::create_dir_all(self.data_dir()).expect("create data dir");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open stderr file");
        self.starts += 1;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
        cmd.arg("server")
            .arg("--config")
            .arg(&config)
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir().display()));
        // Parallel test servers must not fight over the default admin port
        // (127.0.0.1:9644): an ephemeral one unless the test picks its own.
        if !self
            .overrides
            .iter()
            .any(|(k, _)| k == "strom.admin.listener")
        {
            cmd.arg("--override")
                .arg("strom.admin.listener=127.0.0.1:0");
        }
        for (k, v) in &self.overrides {
            cmd.arg("--override").arg(format!("{k}={v}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn strom server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until an ApiVersions round trip succeeds; panics (with the server's
    /// stderr) if the process exits or the deadline passes.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "strom server exited during startup with {status} (its stderr is printed below)"
                );
            }
            let last_err = match try_api_versions(self.addr()) {
                Ok(()) => return,
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "strom server not ready on {} after {READY_TIMEOUT:?}: {last_err}",
                    self.addr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for the process to exit; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "strom server did not exit within 30 s of SIGTERM (its stderr is printed below)"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    /// One line on the server's state, for failure messages: dead, alive but
    /// not answering, or answering ApiVersions.
    pub fn probe(&mut self) -> String {
        if !self.is_running() {
            return "server process DIED".to_string();
        }
        match try_api_versions(self.addr()) {
            Ok(()) => "server alive and answering ApiVersions".to_string(),
            Err(e) => format!("server alive but NOT answering ApiVersions: {e}"),
        }
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Asserts the server is still healthy: process alive and a fresh connection
    /// completes an ApiVersions round trip.
    pub fn assert_healthy(&mut self) {
        assert!(
            self.is_running(),
            "strom server DIED (its stderr is printed below)"
        );
        if let Err(e) = try_api_versions(self.addr()) {
            panic!("strom server alive but no longer answers ApiVersions: {e}");
        }
        // A handler may catch its own panic and keep serving; that is still a bug.
        assert!(
            !self.stderr().contains("panicked at"),
            "strom server logged a panic (its stderr is printed below)"
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.stderr();
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                let from = lines.len().saturating_sub(200);
                lines[from..].join("\n")
            };
            eprintln!(
                "--- strom server stderr (last 200 lines, {} start(s), port {}) ---\n{tail}\n--- end ---",
                self.starts, self.port
            );
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn try_api_versions(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = RawClient::from_stream(stream, Duration::from_secs(2));
    let resp = client
        .try_call(&api_versions_request(), 3)
        .map_err(|e| format!("ApiVersions: {e}"))?;
    if resp.error_code != 0 {
        return Err(format!("ApiVersions error_code {}", resp.error_code));
    }
    Ok(())
}

/// Versions the raw client uses for each API (all inside the server contract).
pub const PRODUCE_V: i16 = 9;
pub const FETCH_V: i16 = 12;
pub const LIST_OFFSETS_V: i16 = 7;
pub const METADATA_V: i16 = 12;
pub const CREATE_TOPICS_V: i16 = 7;

/// A synchronous Kafka connection: one request at a time, or pipelined by hand.
pub struct RawClient {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        RawClient::from_stream(stream, Duration::from_secs(30))
    }

    fn from_stream(stream: TcpStream, read_timeout: Duration) -> RawClient {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RawClient {
            stream,
            next_correlation_id: 1,
        }
    }

    pub fn set_read_timeout(&mut self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Encodes `req` at `version` into a complete frame (length prefix included)
    /// with this connection's next correlation id.
    pub fn frame<R: Request>(&mut self, req: &R, version: i16) -> (i32, BytesMut) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        (correlation_id, encode_frame(req, version, correlation_id))
    }

    /// Sends `req` without waiting; returns its correlation id.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> i32 {
        let (id, frame) = self.frame(req, version);
        self.stream.write_all(&frame).expect("write request");
        id
    }

    /// Reads one response frame and decodes it as `R::Response` at `version`.
    pub fn receive<R: Request>(&mut self, version: i16) -> (i32, R::Response) {
        self.try_receive::<R>(version)
            .unwrap_or_else(|e| panic!("receive {:?}: {e}", ApiKey::try_from(R::KEY)))
    }

    pub fn try_receive<R: Request>(&mut self, version: i16) -> Result<(i32, R::Response), String> {
        let api_key = ApiKey::try_from(R::KEY).expect("known api key");
        let mut buf = self.read_frame().map_err(|e| format!("read frame: {e}"))?;
        let header = ResponseHeader::decode(&mut buf, api_key.response_header_version(version))
            .map_err(|e| format!("decode response header: {e}"))?;
        let resp = R::Response::decode(&mut buf, version)
            .map_err(|e| format!("decode {api_key:?} v{version} response: {e}"))?;
        if buf.has_remaining() {
            return Err(format!(
                "{} trailing bytes after {api_key:?} v{version} response",
                buf.remaining()
            ));
        }
        Ok((header.correlation_id, resp))
    }

    /// One request, one response, correlation id checked.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.try_call(req, version)
            .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", ApiKey::try_from(R::KEY)))
    }

    pub fn try_call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, String> {
        let (id, frame) = self.frame(req, version);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("write: {e}"))?;
        let (got, resp) = self.try_receive::<R>(version)?;
        if got != id {
            return Err(format!("correlation id {got}, expected {id}"));
        }
        Ok(resp)
    }

    /// Writes hand-made bytes as they are (the caller includes any length prefix).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one length-prefixed frame and returns its body.
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=256 * 1024 * 1024).contains(&len) {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("bad response length {len}"),
            ));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Waits until the server closes the connection. Fails if the server sends
    /// anything instead, or keeps the connection open past `within`.
    pub fn expect_closed(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "connection still open after {within:?} ({} bytes received)",
                    received.len()
                ));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    continue
                }
                Err(e) => return Err(format!("read error {e}")),
            }
        }
        if received.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "server sent {} bytes before closing: {:02x?}",
                received.len(),
                &received[..received.len().min(64)]
            ))
        }
    }

    // ---- convenience wrappers over the APIs the tests use ----

    /// CreateTopics v7; returns the topic's error code.
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> i16 {
        let resp = self.create_topics(&[name], partitions, 1, false);
        assert_eq!(resp.topics.len(), 1, "{resp:?}");
        resp.topics[0].error_code
    }

    pub fn create_topics(
        &mut self,
        names: &[&str],
        partitions: i32,
        replication_factor: i16,
        validate_only: bool,
    ) -> CreateTopicsResponse {
        let req = CreateTopicsRequest::default()
            .with_topics(
                names
                    .iter()
                    .map(|n| {
                        CreatableTopic::default()
                            .with_name(topic_name(n))
                            .with_num_partitions(partitions)
                            .with_replication_factor(replication_factor)
                    })
                    .collect(),
            )
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only);
        self.call(&req, CREATE_TOPICS_V)
    }

    /// Produce v9 of one batch to one partition.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> PartitionProduceResponse {
        let req = produce_request(&[(topic, partition, records)], acks);
        let resp = self.call(&req, PRODUCE_V);
        let mut parts: Vec<_> = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partition_responses)
            .collect();
        assert_eq!(parts.len(), 1, "one partition response expected: {parts:?}");
        parts.pop().unwrap()
    }

    /// ListOffsets v7 for one partition (`timestamp` -1 latest, -2 earliest).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let resp = self.call(&req, LIST_OFFSETS_V);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.offset)
    }

    /// Latest offset (log end), asserting no error.
    pub fn latest_offset(&mut self, topic: &str, partition: i32) -> i64 {
        let (err, off) = self.list_offset(topic, partition, -1);
        assert_eq!(err, 0, "ListOffsets latest {topic}-{partition}");
        off
    }

    /// Fetch v12 of one partition.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> PartitionData {
        let req = fetch_request(&[(topic, partition, offset)], max_wait_ms, min_bytes);
        let resp: FetchResponse = self.call(&req, FETCH_V);
        assert_eq!(resp.error_code, 0, "fetch top-level error: {resp:?}");
        let mut parts: Vec<_> = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .collect();
        assert_eq!(parts.len(), 1, "one partition expected: {parts:?}");
        parts.pop().unwrap()
    }
}

/// Encodes a request (header at the right version for the API, client id
/// "strom-it") into a complete length-prefixed frame.
pub fn encode_frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> BytesMut {
    let api_key = ApiKey::try_from(R::KEY).expect("known api key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strom-it")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api_key.request_header_version(version))
        .expect("encode request header");
    req.encode(&mut body, version)
        .unwrap_or_else(|e| panic!("encode {api_key:?} v{version}: {e}"));
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    frame
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A non-transactional ProduceRequest; `parts` is (topic, partition, batch).
pub fn produce_request(parts: &[(&str, i32, Bytes)], acks: i16) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (topic, partition, records) in parts {
        let pd = PartitionProduceData::default()
            .with_index(*partition)
            .with_records(Some(records.clone()));
        match topics.iter_mut().find(|t| t.name.0.as_str() == *topic) {
            Some(t) => t.partition_data.push(pd),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_partition_data(vec![pd]),
            ),
        }
    }
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(topics)
}

/// A full FetchRequest (no session); `parts` is (topic, partition, offset).
pub fn fetch_request(parts: &[(&str, i32, i64)], max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (topic, partition, offset) in parts {
        let fp = FetchPartition::default()
            .with_partition(*partition)
            .with_fetch_offset(*offset)
            .with_current_leader_epoch(-1)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(1024 * 1024);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == *topic) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 * 1024 * 1024)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Encodes one uncompressed magic-2 record batch the way a non-idempotent
/// producer does (producer id/epoch/base sequence -1, leader epoch -1).
pub fn record_batch(records: &[(&[u8], &[u8])]) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder splits batches where offset - sequence changes, so keep
            // them in step here and patch the base sequence to -1 below.
            sequence: i as i32,
            timestamp: now,
            key: Some(Bytes::copy_from_slice(k)),
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode record batch");
    buf[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4].copy_from_slice(&(-1i32).to_be_bytes());
    fix_crc(&mut buf);
    assert_eq!(
        batch_count(&buf),
        1,
        "record_batch must produce exactly one batch"
    );
    buf.freeze()
}

/// Byte positions in a magic-2 batch header.
pub const BATCH_LENGTH_POS: usize = 8;
pub const MAGIC_POS: usize = 16;
pub const CRC_POS: usize = 17;
pub const ATTRIBUTES_POS: usize = 21;
pub const BASE_SEQUENCE_POS: usize = 53;
pub const RECORDS_COUNT_POS: usize = 57;
pub const BATCH_HEADER_LEN: usize = 61;

fn batch_count(buf: &[u8]) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while pos + 12 <= buf.len() {
        let len = i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().unwrap()) as usize;
        pos += 12 + len;
        n += 1;
    }
    n
}

/// Recomputes the CRC-32C of a single batch (covers attributes .. end).
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c(&batch[ATTRIBUTES_POS..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A copy of `batch` with its CRC field inverted (so it cannot match).
pub fn corrupt_crc(batch: &Bytes) -> Bytes {
    let mut b = batch.to_vec();
    for byte in &mut b[CRC_POS..CRC_POS + 4] {
        *byte ^= 0xff;
    }
    Bytes::from(b)
}

/// CRC-32C (Castagnoli), bitwise; test data is small.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Decodes every batch of a fetched record set.
pub fn decode_records(records: Option<Bytes>) -> Vec<Record> {
    let Some(mut buf) = records else {
        return Vec::new();
    };
    if buf.is_empty() {
        return Vec::new();
    }
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("decode fetched record batches")
        .into_iter()
        .flat_map(|set| set.records)
        .collect()
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An ApiVersions request as a well-behaved client sends it (KIP-511 requires a
/// valid client software name and version from v3 on).
pub fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("strom-it"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"))
}
