//! Process lifecycle: SIGTERM is a clean shutdown with exit status 0, and data
//! acknowledged before a SIGTERM or a SIGKILL is there after a restart.

mod common;

use common::*;

fn produce_n(server: &TestServer, topic: &str, from: usize, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut c = server.connect();
    let records: Vec<(Vec<u8>, Vec<u8>)> = (from..from + n)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    for (k, v) in &records {
        let p = c.produce(topic, 0, record_batch(&[(k, v)]), -1);
        assert_eq!(p.error_code, 0, "{p:?}");
    }
    records
}

fn read_all(server: &TestServer, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut c = server.connect();
    let end = c.latest_offset(topic, 0);
    let mut out = Vec::new();
    while (out.len() as i64) < end {
        let p = c.fetch(topic, 0, out.len() as i64, 0, 1);
        assert_eq!(p.error_code, 0, "{p:?}");
        let recs = decode_records(p.records);
        assert!(!recs.is_empty(), "no progress at offset {}", out.len());
        for r in recs {
            if r.offset >= out.len() as i64 {
                assert_eq!(r.offset, out.len() as i64, "offset gap");
                out.push((r.key.unwrap().to_vec(), r.value.unwrap().to_vec()));
            }
        }
    }
    out
}

#[test]
fn sigterm_is_clean_and_data_survives_restart_and_sigkill() {
    let mut server = TestServer::start();
    assert_eq!(server.connect().create_topic("life", 1), 0);
    let mut expect = produce_n(&server, "life", 0, 50);

    let status = server.terminate();
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}\n{}",
        server.stderr()
    );
    server.restart();
    assert_eq!(read_all(&server, "life"), expect, "after SIGTERM + restart");

    expect.extend(produce_n(&server, "life", 50, 50));
    server.kill9();
    server.restart();
    assert_eq!(read_all(&server, "life"), expect, "after SIGKILL + restart");

    // Appends continue at the right offset after recovery.
    let mut c = server.connect();
    let p = c.produce("life", 0, record_batch(&[(b"after", b"recovery")]), -1);
    assert_eq!((p.error_code, p.base_offset), (0, 100), "{p:?}");
    server.assert_healthy();
}
