//! Bad input on the wire: hand-made and corrupted Kafka frames. Each test checks
//! the exact answer Apache Kafka gives, then that the broker is still fine: a new
//! connection completes an ApiVersions round trip and data written before the bad
//! request is intact.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::{
    api_versions_response::ApiVersionsResponse, metadata_request::MetadataRequest,
    metadata_request::MetadataRequestTopic, metadata_response::MetadataResponse,
    produce_response::ProduceResponse, ApiKey, ApiVersionsRequest, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;

const UNSUPPORTED_VERSION: i16 = 35;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const INVALID_TOPIC_EXCEPTION: i16 = 17;

const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Data written before the bad input, checked again afterwards.
struct Seed {
    topic: &'static str,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

fn seed(server: &TestServer) -> Seed {
    let topic = "seed";
    let mut c = server.connect();
    assert_eq!(c.create_topic(topic, 1), 0, "create seed topic");
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("seed-key-{i}").into_bytes(),
                format!("seed-value-{i}").into_bytes(),
            )
        })
        .collect();
    let batch = batch_of(&records);
    let p = c.produce(topic, 0, batch, -1);
    assert_eq!(p.error_code, 0, "seed produce: {p:?}");
    assert_eq!(p.base_offset, 0);
    Seed { topic, records }
}

fn batch_of(records: &[(Vec<u8>, Vec<u8>)]) -> Bytes {
    let refs: Vec<(&[u8], &[u8])> = records
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    record_batch(&refs)
}

/// Health check plus: the seed partition holds exactly the seed records.
fn assert_intact(server: &mut TestServer, seed: &Seed) {
    server.assert_healthy();
    let mut c = server.connect();
    assert_eq!(
        c.latest_offset(seed.topic, 0),
        seed.records.len() as i64,
        "log end offset of the seed partition changed"
    );
    let p = c.fetch(seed.topic, 0, 0, 0, 1);
    assert_eq!(p.error_code, 0, "fetch seed: {p:?}");
    let got: Vec<(Vec<u8>, Vec<u8>)> = decode_records(p.records)
        .into_iter()
        .map(|r| (r.key.unwrap().to_vec(), r.value.unwrap().to_vec()))
        .collect();
    assert_eq!(got, seed.records, "seed records changed");
}

/// A v1 request header (non-flexible) followed by `body`, with length prefix.
fn frame_v1(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(correlation_id);
    b.put_i16(8);
    b.put_slice(b"strom-it");
    b.put_slice(body);
    with_len(&b)
}

fn with_len(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + 4);
    f.extend_from_slice(&(body.len() as i32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

// (a) KIP-511: an ApiVersions request at a version the broker does not know is
// answered with a v0 response carrying UNSUPPORTED_VERSION and the ApiVersions
// range the broker does support, so the client can retry at a version it knows.
#[test]
fn api_versions_unsupported_version_gets_v0_error_response() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();

    // Header v2 (flexible, as for ApiVersions v3+) and a v3-shaped body.
    let mut b = BytesMut::new();
    b.put_i16(18);
    b.put_i16(127);
    b.put_i32(4242);
    b.put_i16(8);
    b.put_slice(b"strom-it");
    b.put_u8(0); // header tagged fields
    b.put_u8(9); // compact string "strom-it"
    b.put_slice(b"strom-it");
    b.put_u8(6); // compact string "0.1.0"
    b.put_slice(b"0.1.0");
    b.put_u8(0); // body tagged fields
    c.send_raw(&with_len(&b)).unwrap();

    let mut resp = c.read_frame().expect("a response, not a closed connection");
    let header = ResponseHeader::decode(&mut resp, 0).unwrap();
    assert_eq!(header.correlation_id, 4242);
    let body = ApiVersionsResponse::decode(&mut resp, 0).expect("v0-encoded ApiVersionsResponse");
    assert_eq!(
        resp.remaining(),
        0,
        "response must be encoded at v0 (no throttle_time_ms, no tagged fields)"
    );
    assert_eq!(body.error_code, UNSUPPORTED_VERSION, "{body:?}");
    let av = body
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .unwrap_or_else(|| panic!("api_keys must list ApiVersions: {body:?}"));
    assert_eq!(
        (av.min_version, av.max_version),
        (0, 4),
        "advertised ApiVersions range"
    );

    // The connection stays usable: the client retries at a supported version.
    let retry = c.call(&api_versions_request(), 3);
    assert_eq!(retry.error_code, 0);
    assert_intact(&mut server, &seed);
}

// (b) An API key the broker does not know: Kafka cannot parse the header and
// closes the connection.
#[test]
fn unknown_api_key_closes_connection() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    c.send_raw(&frame_v1(9999, 0, 1, &[])).unwrap();
    c.expect_closed(CLOSE_WITHIN)
        .expect("unknown api key 9999 must close the connection");
    assert_intact(&mut server, &seed);
}

// (c) A length prefix above socket.request.max.bytes: the connection is closed
// as soon as the prefix is read, without waiting for (or buffering) the body.
#[test]
fn oversized_length_prefix_closes_connection_without_reading_body() {
    let mut server = TestServer::start_with(&[("socket.request.max.bytes", "1048576")]);
    let seed = seed(&server);
    let mut c = server.connect();
    let mut f = Vec::new();
    f.extend_from_slice(&(2 * 1024 * 1024i32).to_be_bytes());
    f.extend_from_slice(&frame_v1(18, 3, 1, &[0; 64])[4..]);
    c.send_raw(&f).unwrap();
    // Only ~80 of the announced 2 MiB were sent: a server that waits for the body
    // keeps the connection open and fails this.
    c.expect_closed(CLOSE_WITHIN)
        .expect("request larger than socket.request.max.bytes must close the connection");

    // A large request below the limit is read and answered normally.
    let mut ok = server.connect();
    assert_eq!(ok.create_topic("big", 1), 0);
    let big: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"k".to_vec(), vec![7u8; 512 * 1024])];
    let p = ok.produce("big", 0, batch_of(&big), -1);
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{p:?}");
    assert_intact(&mut server, &seed);
}

// (d) A frame whose length is valid but whose content is truncated or garbage:
// Kafka cannot parse the request and closes the connection. One server per
// case, so a crash in one case does not hide the others.

/// Sends `frame` on a fresh connection to a fresh server, expects the server to
/// close that connection without answering, and to be fine afterwards.
fn assert_frame_closes_connection(what: &str, frame: impl FnOnce(&Seed) -> Vec<u8>) {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    c.send_raw(&frame(&seed)).unwrap();
    if let Err(e) = c.expect_closed(CLOSE_WITHIN) {
        panic!("{what}: connection must be closed: {e}; {}", server.probe());
    }
    assert_intact(&mut server, &seed);
}

/// A Metadata v12 frame (flexible header v2) whose body is `body`.
fn metadata_v12_frame(body: &[u8]) -> Vec<u8> {
    let mut h = BytesMut::new();
    h.put_i16(ApiKey::Metadata as i16);
    h.put_i16(12);
    h.put_i32(9);
    h.put_i16(8);
    h.put_slice(b"strom-it");
    h.put_u8(0);
    h.put_slice(body);
    with_len(&h)
}

#[test]
fn truncated_header_closes_connection() {
    assert_frame_closes_connection("header cut after the correlation id", |_| {
        let mut h = BytesMut::new();
        h.put_i16(ApiKey::Metadata as i16);
        h.put_i16(12);
        h.put_i32(7);
        with_len(&h)
    });
}

#[test]
fn client_id_past_end_of_frame_closes_connection() {
    assert_frame_closes_connection("client id length past the frame end", |_| {
        let mut h = BytesMut::new();
        h.put_i16(ApiKey::Metadata as i16);
        h.put_i16(1);
        h.put_i32(8);
        h.put_i16(1000);
        h.put_slice(b"short");
        with_len(&h)
    });
}

#[test]
fn garbage_varint_body_closes_connection() {
    // 0xff x 7 is an unsigned varint longer than 5 bytes: not a valid length.
    assert_frame_closes_connection("over-long varint in a Metadata v12 body", |_| {
        metadata_v12_frame(&[0xff; 7])
    });
}

#[test]
fn huge_compact_array_length_closes_connection() {
    // Compact array length 2^31-1 in a 20-byte frame: a decoder that allocates
    // for the announced count before checking the bytes left runs out of memory.
    assert_frame_closes_connection("compact array length 2^31-1", |_| {
        metadata_v12_frame(&[0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x00, 0x00])
    });
}

#[test]
fn huge_int32_array_length_closes_connection() {
    // Metadata v1 (non-flexible): topics is an INT32-counted array.
    assert_frame_closes_connection("int32 array length 2^31-1", |_| {
        frame_v1(
            ApiKey::Metadata as i16,
            1,
            10,
            &0x7fff_ffffi32.to_be_bytes(),
        )
    });
}

#[test]
fn truncated_produce_body_closes_connection() {
    // A real Produce v9 frame cut in half (length prefix adjusted): the body
    // ends inside the record batch bytes.
    assert_frame_closes_connection("Produce v9 body cut in half", |seed| {
        let records = vec![(b"k".to_vec(), vec![1u8; 200])];
        let req = produce_request(&[(seed.topic, 0, batch_of(&records))], -1);
        let frame = encode_frame(&req, PRODUCE_V, 1);
        let body = &frame[4..];
        with_len(&body[..body.len() / 2])
    });
}

// (e) Kafka 4.0 removed Produce v0-v2 (KIP-896). A request at an unsupported
// version of any API other than ApiVersions closes the connection.
#[test]
fn produce_v2_closes_connection_and_writes_nothing() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();

    let batch = batch_of(&[(b"v2-key".to_vec(), b"v2-value".to_vec())]);
    let mut body = BytesMut::new();
    body.put_i16(1); // acks
    body.put_i32(5000); // timeout
    body.put_i32(1); // topics
    body.put_i16(seed.topic.len() as i16);
    body.put_slice(seed.topic.as_bytes());
    body.put_i32(1); // partitions
    body.put_i32(0);
    body.put_i32(batch.len() as i32);
    body.put_slice(&batch);
    c.send_raw(&frame_v1(ApiKey::Produce as i16, 2, 1, &body))
        .unwrap();
    c.expect_closed(CLOSE_WITHIN)
        .expect("Produce v2 must close the connection");
    assert_intact(&mut server, &seed);
}

// (f) A batch whose CRC-32C does not match: CORRUPT_MESSAGE, nothing appended.
#[test]
fn corrupt_crc_is_rejected_and_nothing_written() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    let good = batch_of(&[
        (b"k1".to_vec(), b"v1".to_vec()),
        (b"k2".to_vec(), b"v2".to_vec()),
    ]);
    let p = c.produce(seed.topic, 0, corrupt_crc(&good), -1);
    assert_eq!(p.error_code, CORRUPT_MESSAGE, "{p:?}");
    assert_eq!(c.latest_offset(seed.topic, 0), 3, "nothing may be written");

    // A flipped payload byte (CRC field intact) is caught the same way.
    let mut flipped = good.to_vec();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x55;
    let p = c.produce(seed.topic, 0, Bytes::from(flipped), -1);
    assert_eq!(p.error_code, CORRUPT_MESSAGE, "{p:?}");
    assert_eq!(c.latest_offset(seed.topic, 0), 3, "nothing may be written");

    // The same connection keeps working for good data afterwards.
    let p = c.produce(seed.topic, 0, good, -1);
    assert_eq!((p.error_code, p.base_offset), (0, 3), "{p:?}");
    server.assert_healthy();
}

// (g) A batch larger than message.max.bytes: MESSAGE_TOO_LARGE, nothing appended.
#[test]
fn batch_above_message_max_bytes_is_rejected() {
    let mut server = TestServer::start_with(&[("message.max.bytes", "10000")]);
    let seed = seed(&server);
    let mut c = server.connect();
    let big = batch_of(&[(b"big".to_vec(), vec![0xabu8; 20_000])]);
    assert!(big.len() > 10_000);
    let p = c.produce(seed.topic, 0, big, -1);
    assert_eq!(p.error_code, MESSAGE_TOO_LARGE, "{p:?}");
    assert_eq!(c.latest_offset(seed.topic, 0), 3, "nothing may be written");

    // Below the limit is fine.
    let ok = batch_of(&[(b"ok".to_vec(), vec![0xcdu8; 5_000])]);
    assert!(ok.len() < 10_000);
    let p = c.produce(seed.topic, 0, ok, -1);
    assert_eq!((p.error_code, p.base_offset), (0, 3), "{p:?}");
    server.assert_healthy();
}

// (h) A partition the topic does not have.
#[test]
fn produce_to_missing_partition_is_unknown_topic_or_partition() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    let p = c.produce(
        seed.topic,
        99,
        batch_of(&[(b"k".to_vec(), b"v".to_vec())]),
        -1,
    );
    assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "{p:?}");
    assert_eq!(p.index, 99);
    assert_intact(&mut server, &seed);
}

// (i) One request, two partitions, one corrupt batch: the error is per
// partition; the good partition is appended.
#[test]
fn corrupt_batch_fails_only_its_partition() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    assert_eq!(c.create_topic("two", 2), 0);
    let good_records: Vec<(Vec<u8>, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("g{i}").into_bytes(),
                format!("good-{i}").into_bytes(),
            )
        })
        .collect();
    let good = batch_of(&good_records);
    let bad = corrupt_crc(&batch_of(&[(b"b".to_vec(), b"bad".to_vec())]));
    let req = produce_request(&[("two", 0, good), ("two", 1, bad)], -1);
    let resp: ProduceResponse = c.call(&req, PRODUCE_V);
    let mut parts: Vec<_> = resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 2, "{resp:?}");
    assert_eq!((parts[0].0, parts[0].1, parts[0].2), (0, 0, 0), "{resp:?}");
    assert_eq!((parts[1].0, parts[1].1), (1, CORRUPT_MESSAGE), "{resp:?}");

    assert_eq!(c.latest_offset("two", 0), 4);
    assert_eq!(c.latest_offset("two", 1), 0);
    let p = c.fetch("two", 0, 0, 0, 1);
    let got: Vec<(Vec<u8>, Vec<u8>)> = decode_records(p.records)
        .into_iter()
        .map(|r| (r.key.unwrap().to_vec(), r.value.unwrap().to_vec()))
        .collect();
    assert_eq!(got, good_records);
    assert_intact(&mut server, &seed);
}

// (j) Fetch below the log start or above the log end: OFFSET_OUT_OF_RANGE.
// Fetching exactly at the log end is legal and returns nothing.
#[test]
fn fetch_out_of_range_offsets() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    let leo = seed.records.len() as i64;

    for offset in [-5, -1, leo + 1, 1_000_000] {
        let p = c.fetch(seed.topic, 0, offset, 0, 1);
        assert_eq!(
            p.error_code, OFFSET_OUT_OF_RANGE,
            "fetch at offset {offset}: {p:?}"
        );
        assert!(decode_records(p.records).is_empty());
    }
    let p = c.fetch(seed.topic, 0, leo, 0, 1);
    assert_eq!(p.error_code, 0, "fetch at the log end: {p:?}");
    assert_eq!(p.high_watermark, leo);
    assert!(decode_records(p.records).is_empty());
    assert_intact(&mut server, &seed);
}

// (k) CreateTopics with illegal names: INVALID_TOPIC_EXCEPTION, nothing created.
#[test]
fn create_topics_invalid_names() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    let long = "a".repeat(250);
    let bad = [
        "bad name!",
        long.as_str(),
        ".",
        "..",
        "",
        "slash/topic",
        "ümlaut",
    ];
    for name in bad {
        let resp = c.create_topics(&[name], 1, 1, false);
        assert_eq!(resp.topics.len(), 1, "{resp:?}");
        assert_eq!(
            resp.topics[0].error_code, INVALID_TOPIC_EXCEPTION,
            "topic name {name:?}: {resp:?}"
        );
    }
    // 249 characters is the longest legal name; dots, dashes, underscores are legal.
    let longest = "b".repeat(249);
    for name in [longest.as_str(), "a.b-c_D9"] {
        let resp = c.create_topics(&[name], 1, 1, false);
        assert_eq!(
            resp.topics[0].error_code, 0,
            "topic name {name:?}: {resp:?}"
        );
    }

    let md: MetadataResponse = c.call(&MetadataRequest::default().with_topics(None), METADATA_V);
    let names: Vec<String> = md
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    for name in bad {
        assert!(
            !names.iter().any(|n| n == name),
            "invalid topic {name:?} was created: {names:?}"
        );
    }
    assert!(names.iter().any(|n| n == &longest), "{names:?}");
    assert_intact(&mut server, &seed);
}

/// Kafka 4.0's lowest supported version of each API (KIP-896) is the minimum
/// of kafka-protocol's generated ranges (Kafka 4.1 schemas).
fn kafka_min(key: ApiKey) -> i16 {
    key.valid_versions().min
}

fn read_uvarint(buf: &mut Bytes) -> u32 {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = buf.get_u8();
        v |= ((b & 0x7f) as u32) << shift;
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("varint too long")
}

// (l) ApiVersions v3: every advertised range is one Kafka 4.0 defines (min at
// least Kafka's minimum), the contract's APIs are covered, and the flexible
// encoding leaves out tagged fields that hold their default value.
#[test]
fn api_versions_v3_ranges_and_encoding() {
    let mut server = TestServer::start();
    let mut c = server.connect();
    let (id, frame) = c.frame(&api_versions_request(), 3);
    c.send_raw(&frame).unwrap();
    let raw = c.read_frame().unwrap();

    // Cross-check with the generated decoder.
    let mut whole = raw.clone();
    let header = ResponseHeader::decode(&mut whole, 0).unwrap();
    assert_eq!(header.correlation_id, id);
    let decoded = ApiVersionsResponse::decode(&mut whole, 3).unwrap();
    assert_eq!(whole.remaining(), 0, "trailing bytes");
    assert_eq!(decoded.error_code, 0);

    // Hand decode to look at the tag sections themselves.
    let mut b = raw;
    assert_eq!(b.get_i32(), id, "ApiVersions responses use header v0");
    assert_eq!(b.get_i16(), 0);
    let n = read_uvarint(&mut b) as usize - 1;
    let mut ranges = Vec::new();
    for _ in 0..n {
        let key = b.get_i16();
        let min = b.get_i16();
        let max = b.get_i16();
        let tags = read_uvarint(&mut b);
        assert_eq!(tags, 0, "api key {key}: unexpected tagged fields");
        ranges.push((key, min, max));
    }
    let _throttle = b.get_i32();
    let ntags = read_uvarint(&mut b);
    let mut last_tag = None;
    for _ in 0..ntags {
        let tag = read_uvarint(&mut b);
        let size = read_uvarint(&mut b) as usize;
        let mut val = b.split_to(size);
        assert!(last_tag < Some(tag), "tags must be unique and ascending");
        last_tag = Some(tag);
        match tag {
            // SupportedFeatures, FinalizedFeatures: compact arrays; default empty.
            0 | 2 => {
                let len = read_uvarint(&mut val);
                assert!(
                    len > 1,
                    "tag {tag}: an empty array is the default and must be omitted"
                );
            }
            // FinalizedFeaturesEpoch: default -1.
            1 => assert_ne!(
                val.get_i64(),
                -1,
                "FinalizedFeaturesEpoch -1 must be omitted"
            ),
            // ZkMigrationReady: default false.
            3 => assert_ne!(val.get_u8(), 0, "ZkMigrationReady=false must be omitted"),
            other => panic!("unknown top-level tag {other} in ApiVersionsResponse"),
        }
    }
    assert_eq!(b.remaining(), 0, "trailing bytes after tagged fields");

    let mut seen = std::collections::HashSet::new();
    for &(key, min, max) in &ranges {
        assert!(seen.insert(key), "api key {key} listed twice");
        let api = ApiKey::try_from(key)
            .unwrap_or_else(|_| panic!("advertised api key {key} is not a Kafka API"));
        assert!(min <= max, "{api:?}: empty range {min}..{max}");
        assert!(
            min >= kafka_min(api),
            "{api:?}: advertised min v{min} is below Kafka 4.0's minimum v{}",
            kafka_min(api)
        );
        assert!(
            max <= api.valid_versions().max,
            "{api:?}: advertised max v{max} is above Kafka's newest v{}",
            api.valid_versions().max
        );
    }
    // What the server contract says is implemented today.
    let contract = [
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::Metadata, 0, 13),
        (ApiKey::Produce, 3, 12),
        (ApiKey::Fetch, 4, 17),
        (ApiKey::ListOffsets, 1, 10),
        (ApiKey::CreateTopics, 2, 7),
        (ApiKey::DeleteTopics, 1, 6),
        (ApiKey::DescribeCluster, 0, 1),
    ];
    for (api, min, max) in contract {
        let r = ranges
            .iter()
            .find(|r| r.0 == api as i16)
            .unwrap_or_else(|| panic!("{api:?} not advertised: {ranges:?}"));
        assert!(
            r.1 <= min && r.2 >= max,
            "{api:?}: advertised v{}..v{}, contract v{min}..v{max}",
            r.1,
            r.2
        );
    }
    server.assert_healthy();
}

// (m) 50 requests written back to back on one connection: 50 responses, in
// request order.
#[test]
fn pipelined_requests_answered_in_order() {
    assert_pipelined_answered_in_order(TestServer::start());
}

// (m') the same with fsync before ack: produce answers are deferred until
// their fsync while the next requests are handled, and still go out in order.
#[test]
fn pipelined_requests_answered_in_order_with_fsync_before_ack() {
    assert_pipelined_answered_in_order(TestServer::start_with(&[("strom.flush.mode", "always")]));
}

fn assert_pipelined_answered_in_order(mut server: TestServer) {
    let seed = seed(&server);
    let mut c = server.connect();
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(seed.topic))),
    ]));
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    for i in 0..50 {
        if i % 2 == 0 {
            let (id, f) = c.frame(&metadata, METADATA_V);
            sent.push((id, ApiKey::Metadata, i));
            wire.extend_from_slice(&f);
        } else {
            let batch = batch_of(&[(
                format!("p{i}").into_bytes(),
                format!("pipelined-{i}").into_bytes(),
            )]);
            let (id, f) = c.frame(&produce_request(&[(seed.topic, 0, batch)], -1), PRODUCE_V);
            sent.push((id, ApiKey::Produce, i));
            wire.extend_from_slice(&f);
        }
    }
    c.send_raw(&wire).unwrap();

    let mut next_offset = seed.records.len() as i64;
    for (id, api, i) in &sent {
        let mut raw = c
            .read_frame()
            .unwrap_or_else(|e| panic!("response #{i}: {e}"));
        let hv = api.response_header_version(if *api == ApiKey::Metadata {
            METADATA_V
        } else {
            PRODUCE_V
        });
        let h = ResponseHeader::decode(&mut raw, hv).unwrap();
        assert_eq!(h.correlation_id, *id, "response #{i} out of order");
        match api {
            ApiKey::Metadata => {
                let m = MetadataResponse::decode(&mut raw, METADATA_V).unwrap();
                assert_eq!(m.topics.len(), 1);
                assert_eq!(m.topics[0].error_code, 0);
            }
            _ => {
                let p = ProduceResponse::decode(&mut raw, PRODUCE_V).unwrap();
                let pr = &p.responses[0].partition_responses[0];
                assert_eq!(pr.error_code, 0, "{pr:?}");
                assert_eq!(pr.base_offset, next_offset, "produce #{i}");
                next_offset += 1;
            }
        }
    }
    assert_eq!(c.latest_offset(seed.topic, 0), next_offset);
    server.assert_healthy();
}

// (n) acks=0: the broker writes the data and sends no response at all.
#[test]
fn acks_zero_gets_no_response_but_is_written() {
    let mut server = TestServer::start();
    let seed = seed(&server);
    let mut c = server.connect();
    let records = vec![
        (b"a0-k1".to_vec(), b"acks-zero-1".to_vec()),
        (b"a0-k2".to_vec(), b"acks-zero-2".to_vec()),
    ];
    let produce_id = c.send(
        &produce_request(&[(seed.topic, 0, batch_of(&records))], 0),
        PRODUCE_V,
    );
    let av_id = c.send(&api_versions_request(), 3);
    let (got, resp) = c.receive::<ApiVersionsRequest>(3);
    assert_ne!(got, produce_id, "acks=0 produce must not be answered");
    assert_eq!(got, av_id);
    assert_eq!(resp.error_code, 0);

    let mut other = server.connect();
    wait_for(
        Duration::from_secs(10),
        "acks=0 records to be appended",
        || (other.latest_offset(seed.topic, 0) == 5).then_some(()),
    );
    let p = other.fetch(seed.topic, 0, 3, 0, 1);
    let got: Vec<(Vec<u8>, Vec<u8>)> = decode_records(p.records)
        .into_iter()
        .map(|r| (r.key.unwrap().to_vec(), r.value.unwrap().to_vec()))
        .collect();
    assert_eq!(got, records);
    // Still nothing else pending on the first connection.
    let again = c.call(&api_versions_request(), 3);
    assert_eq!(again.error_code, 0);
    server.assert_healthy();
}
