//! The `strom` client commands against a real `strom server`: output checked,
//! records round-tripped (and read back by kcat), perf figures consistent
//! with the log, metrics matching what was written, errors on one line.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, TestServer};
use serde_json::Value;

fn strom_cmd(bootstrap: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strom"));
    c.args(args)
        .env("STROM_BROKERS", bootstrap)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs `strom ARGS` against `server`; returns the output whatever the exit.
fn strom(server: &TestServer, args: &[&str]) -> Output {
    strom_cmd(&server.bootstrap(), args)
        .output()
        .expect("run strom")
}

/// Runs `strom ARGS` and asserts success; returns stdout.
fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = strom(server, args);
    assert!(
        out.status.success(),
        "strom {args:?} failed ({}):\nstdout: {}\nstderr: {}\n--- server ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let s = ok(server, &a);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("strom {a:?}: not JSON ({e}): {s}"))
}

/// Asserts a failed command: non-zero exit, exactly one line on stderr
/// containing `needle`, no backtrace.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line on stderr, got: {stderr:?}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Sum of the latest offsets of a topic, from `topic describe --json`.
fn latest_total(server: &TestServer, topic: &str) -> i64 {
    let d = json(server, &["topic", "describe", topic, "--no-configs"]);
    d[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest"].as_i64().unwrap())
        .sum()
}

#[test]
fn topic_create_list_describe_delete() {
    let server = TestServer::start();
    let out = ok(
        &server,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
    );
    assert_eq!(out.trim(), "created topic 'orders'");
    let v = json(&server, &["topic", "create", "events", "-p", "2"]);
    assert_eq!(v["created"][0], "events");

    let out = ok(&server, &["topic", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "PARTITIONS", "REPLICAS"]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3", "1"]),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["events", "2", "1"]),
        "{out}"
    );
    let v = json(&server, &["topic", "list"]);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["events", "orders"]);

    // Existing topic: an error unless --if-not-exists.
    let out = strom(&server, &["topic", "create", "orders"]);
    assert_one_line_error(&out, "orders");
    ok(&server, &["topic", "create", "orders", "--if-not-exists"]);

    let input = (0..7).map(|i| format!("v{i}\n")).collect::<String>();
    produce_stdin(&server, &["topic", "produce", "orders", "-p", "1"], &input);
    let d = json(&server, &["topic", "describe", "orders"]);
    let parts = d[0]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        assert_eq!(p["leader"], common::NODE_ID);
        assert_eq!(p["replicas"], serde_json::json!([common::NODE_ID]));
        assert_eq!(p["isr"], serde_json::json!([common::NODE_ID]));
        assert_eq!(p["earliest"], 0);
        let expect = if p["partition"] == 1 { 7 } else { 0 };
        assert_eq!(p["latest"], expect, "{p}");
    }
    let text = ok(&server, &["topic", "describe", "orders"]);
    assert!(
        text.starts_with("TOPIC orders  PARTITIONS 3  REPLICAS 1\n"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "1", "1", "1", "0", "7"]),
        "{text}"
    );

    let out = ok(&server, &["topic", "delete", "orders", "events"]);
    assert_eq!(out, "deleted topic 'orders'\ndeleted topic 'events'\n");
    let v = json(&server, &["topic", "list"]);
    assert_eq!(v, serde_json::json!([]));
    let out = strom(&server, &["topic", "delete", "orders"]);
    assert_one_line_error(&out, "unknown topic 'orders'");
}

fn produce_stdin(server: &TestServer, args: &[&str], input: &str) -> String {
    let mut child = strom_cmd(&server.bootstrap(), args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strom");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "strom {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn produce_consume_10k_with_keys_and_headers_and_kcat_agrees() {
    let server = TestServer::start();
    ok(&server, &["topic", "create", "rt", "-p", "3"]);
    const N: usize = 10_000;
    let input: String = (0..N).map(|i| format!("key-{i}\tvalue {i} ü\n")).collect();
    let out = produce_stdin(
        &server,
        &[
            "topic",
            "produce",
            "rt",
            "-k",
            "\t",
            "-H",
            "source=cli",
            "-H",
            "trace=abc",
            "--compression",
            "zstd",
        ],
        &input,
    );
    assert_eq!(out.trim(), format!("produced {N} records to 'rt'"));
    assert_eq!(latest_total(&server, "rt"), N as i64);

    // Our consumer, JSON lines.
    let out = ok(
        &server,
        &[
            "topic",
            "consume",
            "rt",
            "--from-beginning",
            "-n",
            "10000",
            "--json",
        ],
    );
    let mut ours = BTreeMap::new();
    for line in out.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "source", "value": "cli"}, {"key": "trace", "value": "abc"}])
        );
        let key = r["key"].as_str().unwrap().to_string();
        let value = r["value"].as_str().unwrap().to_string();
        assert_eq!(value, format!("value {} ü", &key[4..]));
        assert!(ours
            .insert(
                key,
                (
                    r["partition"].as_i64().unwrap(),
                    r["offset"].as_i64().unwrap()
                )
            )
            .is_none());
    }
    assert_eq!(ours.len(), N);

    // A template.
    let out = ok(
        &server,
        &[
            "topic",
            "consume",
            "rt",
            "-p",
            "0",
            "-o",
            "0",
            "-n",
            "1",
            "--format",
            "%k|%v|%h|%p|%o",
        ],
    );
    let f: Vec<&str> = out.trim_end().split('|').collect();
    assert_eq!(f[2], "source=cli,trace=abc");
    assert_eq!((f[3], f[4]), ("0", "0"));
    assert_eq!(ours[f[0]], (0, 0));

    // kcat reads the same records at the same places.
    let kcat = Command::new("/usr/bin/kcat")
        .args([
            "-C",
            "-b",
            &server.bootstrap(),
            "-t",
            "rt",
            "-e",
            "-q",
            "-f",
            "%k\t%s\t%p\t%o\t%h\n",
        ])
        .output()
        .expect("run kcat");
    assert!(
        kcat.status.success(),
        "{}",
        String::from_utf8_lossy(&kcat.stderr)
    );
    let text = String::from_utf8(kcat.stdout).unwrap();
    let mut seen = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f[1], format!("value {} ü", &f[0][4..]));
        assert_eq!(f[4], "source=cli,trace=abc");
        assert_eq!(
            ours[f[0]],
            (f[2].parse().unwrap(), f[3].parse().unwrap()),
            "{line}"
        );
        seen += 1;
    }
    assert_eq!(seen, N);

    // -o -N: the last 2 records of each partition; -e stops at the end.
    let out = ok(&server, &["topic", "consume", "rt", "-o", "-2", "-e"]);
    assert_eq!(out.lines().count(), 6, "{out}");
}

#[test]
fn perf_produce_json_matches_the_log() {
    let server = TestServer::start();
    let v = json(
        &server,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--partitions",
            "2",
            "--num-records",
            "20000",
            "--record-size",
            "100",
        ],
    );
    assert_eq!(v["mode"], "produce");
    assert_eq!(v["records"], 20000);
    assert_eq!(v["sent"], 20000);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["bytes"], 2_000_000);
    assert!(v["records_per_sec"].as_f64().unwrap() > 0.0);
    let lat = &v["latency_ms"];
    let (p50, p99, max) = (
        lat["p50"].as_f64().unwrap(),
        lat["p99"].as_f64().unwrap(),
        lat["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
    assert_eq!(latest_total(&server, "perf"), 20000);

    // Consume them back, and an end-to-end run on top.
    let v = json(
        &server,
        &[
            "perf",
            "consume",
            "--topic",
            "perf",
            "--num-records",
            "20000",
        ],
    );
    assert_eq!(v["records"], 20000);
    assert_eq!(v["errors"], 0);
    let v = json(
        &server,
        &[
            "perf",
            "e2e",
            "--topic",
            "perf",
            "--num-records",
            "2000",
            "--record-size",
            "64",
            "--throughput",
            "4000",
        ],
    );
    assert_eq!(v["records"], 2000);
    assert_eq!(v["errors"], 0);
    assert!(v["latency_ms"]["max"].as_f64().unwrap() > 0.0);
    assert_eq!(latest_total(&server, "perf"), 22000);

    // A human-readable run prints Kafka's wording.
    let out = ok(
        &server,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--num-records",
            "100",
            "--record-size",
            "10",
        ],
    );
    assert!(out.starts_with("100 records sent in "), "{out}");
    assert!(
        out.contains("records/sec") && out.contains("p99.9"),
        "{out}"
    );
}

#[test]
fn unreachable_broker_and_unknown_topic_fail_on_one_line() {
    let server = TestServer::start();
    let dead = format!("127.0.0.1:{}", free_port());
    for args in [
        &["topic", "list"][..],
        &["topic", "describe", "x"],
        &["cluster", "info"],
        &["perf", "produce", "--topic", "x", "--num-records", "1"],
    ] {
        let started = Instant::now();
        let out = strom_cmd(&dead, args).output().unwrap();
        assert_one_line_error(&out, "cannot reach the cluster");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    for args in [
        &["topic", "describe", "nope"][..],
        &["topic", "consume", "nope", "-n", "1"],
        &["topic", "produce", "nope"],
        &["perf", "consume", "--topic", "nope", "--num-records", "1"],
    ] {
        assert_one_line_error(&strom(&server, args), "unknown topic 'nope'");
    }
    assert_one_line_error(
        &strom(&server, &["topic", "list", "--format", "%v"]),
        "--format must be json or table",
    );
}

#[test]
fn cluster_info_and_health() {
    let server = TestServer::start();
    let v = json(&server, &["cluster", "info"]);
    assert_eq!(v["controller"], common::NODE_ID);
    assert_eq!(v["brokers"][0]["id"], common::NODE_ID);
    assert_eq!(v["brokers"][0]["port"], server.port());
    assert!(
        v["cluster_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    let text = ok(&server, &["cluster", "info"]);
    assert!(text.starts_with("CLUSTER "), "{text}");
    let v = json(&server, &["cluster", "health"]);
    assert_eq!(v["healthy"], true);
    assert_eq!(v["under_replicated"], serde_json::json!([]));
    let text = ok(&server, &["cluster", "health"]);
    assert!(text.starts_with("healthy: true\n"), "{text}");
    assert!(
        text.contains(&format!("controller: {}\n", common::NODE_ID)),
        "{text}"
    );
    assert!(
        text.contains("under-replicated partitions: 0 (none)\n"),
        "{text}"
    );
    assert!(text.contains("offline partitions: 0 (none)\n"), "{text}");

    ok(&server, &["topic", "create", "hp", "-p", "3"]);
    let v = json(&server, &["cluster", "health"]);
    assert_eq!(v["controller"], common::NODE_ID);
    assert_eq!(v["partitions"], 3);
    assert_eq!(v["under_replicated_count"], 0);
    assert_eq!(v["offline_count"], 0);
    assert_eq!(v["offline"], serde_json::json!([]));
}

#[test]
fn cluster_partitions() {
    let server = TestServer::start();
    ok(&server, &["topic", "create", "pa", "-p", "3"]);
    ok(&server, &["topic", "create", "pb", "-p", "1"]);
    let v = json(&server, &["cluster", "partitions"]);
    let rows: Vec<(String, i64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap().to_string(),
                p["partition"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("pa", 0), ("pa", 1), ("pa", 2), ("pb", 0)]
            .map(|(t, p)| (t.to_string(), p))
            .to_vec()
    );
    for p in v.as_array().unwrap() {
        assert_eq!(p["leader"], common::NODE_ID, "{p}");
        assert_eq!(p["replicas"], serde_json::json!([common::NODE_ID]), "{p}");
        assert_eq!(p["isr"], serde_json::json!([common::NODE_ID]), "{p}");
        assert_eq!(p["under_replicated"], false, "{p}");
        assert_eq!(p["offline"], false, "{p}");
    }
    let v = json(&server, &["cluster", "partitions", "--topic", "pb"]);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["topic"], "pb");

    // Nothing is under-replicated or offline on a healthy single node.
    let v = json(&server, &["cluster", "partitions", "--under-replicated"]);
    assert_eq!(v, serde_json::json!([]));
    let v = json(&server, &["cluster", "partitions", "--offline"]);
    assert_eq!(v, serde_json::json!([]));

    let text = ok(&server, &["cluster", "partitions", "-t", "pa"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TOPIC",
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "OFFLINE",
            "STATUS"
        ]
    );
    let id = common::NODE_ID.to_string();
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        row,
        ["pa", "1", id.as_str(), id.as_str(), id.as_str(), "-", "ok"]
    );

    let out = strom(&server, &["cluster", "partitions", "--topic", "nope"]);
    assert_one_line_error(&out, "unknown topic 'nope'");
}

/// GET `path` from the admin listener; returns (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect admin listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn admin_listener_serves_metrics_and_health() {
    let admin = free_port();
    let server = TestServer::start_with(&[("strom.admin.listener", &format!("127.0.0.1:{admin}"))]);
    let (status, body) = http_get(admin, "/health");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body.trim(), "ready");

    ok(&server, &["topic", "create", "m", "-p", "2"]);
    let v = json(
        &server,
        &[
            "perf",
            "produce",
            "--topic",
            "m",
            "--num-records",
            "500",
            "--record-size",
            "50",
        ],
    );
    assert_eq!(v["records"], 500);
    ok(
        &server,
        &["topic", "consume", "m", "--from-beginning", "-n", "500"],
    );

    let (status, body) = http_get(admin, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(
        metric(
            &body,
            "kafka_server_brokertopicmetrics_messagesin_total{topic=\"m\"}"
        ),
        Some(500.0),
        "{body}"
    );
    let bytes_in = metric(
        &body,
        "kafka_server_brokertopicmetrics_bytesin_total{topic=\"m\"}",
    )
    .unwrap();
    // Batches carry the 25 000 value bytes plus batch and record headers.
    assert!(bytes_in > 25_000.0, "{bytes_in}");
    let bytes_out = metric(
        &body,
        "kafka_server_brokertopicmetrics_bytesout_total{topic=\"m\"}",
    )
    .unwrap();
    assert!(bytes_out >= bytes_in, "out {bytes_out} < in {bytes_in}");
    let log_size: f64 = (0..2)
        .map(|p| {
            metric(
                &body,
                &format!("kafka_log_log_size{{topic=\"m\",partition=\"{p}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(log_size, bytes_in, "every appended byte is in the log");
    // Every hosted partition (__consumer_offsets too, once a consumer asked
    // for a coordinator) has a log-size series.
    let series = body
        .lines()
        .filter(|l| l.starts_with("kafka_log_log_size{"))
        .count();
    assert!(series >= 2);
    assert_eq!(
        metric(&body, "kafka_server_replicamanager_partitioncount"),
        Some(series as f64)
    );
    assert_eq!(
        metric(
            &body,
            "kafka_controller_kafkacontroller_activecontrollercount"
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &body,
            "kafka_network_requestmetrics_totaltimems_count{request=\"Produce\"}"
        )
        .unwrap()
            >= 1.0,
        "{body}"
    );
    assert!(body.trim_end().ends_with("# EOF"));

    // A deleted topic's series go away.
    ok(&server, &["topic", "delete", "m"]);
    let (_, body) = http_get(admin, "/metrics");
    assert!(!body.contains("topic=\"m\""), "{body}");
}

#[test]
fn group_describe_lag_seek_and_delete() {
    let server = TestServer::start();
    ok(&server, &["topic", "create", "g", "-p", "1"]);
    let input: String = (0..100).map(|i| format!("{i}\n")).collect();
    produce_stdin(&server, &["topic", "produce", "g"], &input);

    // A group consumer reads 30 records and commits.
    let out = ok(
        &server,
        &[
            "topic",
            "consume",
            "g",
            "--group",
            "readers",
            "--from-beginning",
            "-n",
            "30",
        ],
    );
    assert_eq!(out.lines().count(), 30);
    let v = json(&server, &["group", "list"]);
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "readers")
        .expect("group listed");
    assert_eq!(g["members"], 0);

    let v = json(&server, &["group", "describe", "readers"]);
    let p = &v[0]["partitions"][0];
    assert_eq!(
        (p["topic"].as_str(), p["partition"].as_i64()),
        (Some("g"), Some(0))
    );
    assert_eq!(p["committed"], 30);
    assert_eq!(p["log_end_offset"], 100);
    assert_eq!(p["lag"], 70);
    assert_eq!(v[0]["total_lag"], 70);
    let text = ok(&server, &["group", "describe", "readers"]);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["g", "0", "30", "100", "70", "-", "-"]),
        "{text}"
    );

    // Dry run changes nothing; --to-earliest makes the lag the topic size.
    let v = json(
        &server,
        &["group", "seek", "readers", "--to-earliest", "--dry-run"],
    );
    assert_eq!(v["partitions"][0]["new"], 0);
    assert_eq!(
        json(&server, &["group", "describe", "readers"])[0]["total_lag"],
        70
    );
    ok(&server, &["group", "seek", "readers", "--to-earliest"]);
    assert_eq!(
        json(&server, &["group", "describe", "readers"])[0]["total_lag"],
        100
    );
    ok(
        &server,
        &[
            "group",
            "seek",
            "readers",
            "--topic",
            "g",
            "--shift-by",
            "25",
        ],
    );
    assert_eq!(
        json(&server, &["group", "describe", "readers"])[0]["total_lag"],
        75
    );
    ok(&server, &["group", "seek", "readers", "--to-latest"]);
    assert_eq!(
        json(&server, &["group", "describe", "readers"])[0]["total_lag"],
        0
    );

    ok(
        &server,
        &["group", "offset-delete", "readers", "--topic", "g"],
    );
    let v = json(&server, &["group", "describe", "readers"]);
    assert_eq!(v[0]["partitions"], serde_json::json!([]));
    let out = ok(&server, &["group", "delete", "readers"]);
    assert_eq!(out.trim(), "deleted group 'readers'");
}
