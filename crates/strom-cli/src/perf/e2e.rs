//! `strom perf e2e`: a producer stamps each value with its send time, a
//! consumer in the same process measures send → receipt.
//!
//! The consumer is assigned every partition at its current end offset
//! before the first record is sent, so it sees exactly this run's records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::produce::produce_loop;
use super::{ensure_topic, latency_histogram, Latency, ProduceArgs, Progress, Report, Reporter};
use crate::kafka::{self, apply_props};
use crate::Ctx;

/// How long the consumer waits for stragglers after the producer is done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(ctx: &Ctx, a: &ProduceArgs) -> Result<Report> {
    a.length.check()?;
    if a.record_size < 8 {
        bail!("--record-size must be at least 8 for e2e (the send time travels in the value)");
    }
    let opts = &ctx.connect;
    let partitions = ensure_topic(opts, a)?;
    let client = opts.metadata_client()?;
    let ends = kafka::watermarks(opts, &client, &a.topic, partitions)?;
    drop(client);

    let mut c = opts.config()?;
    c.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        // Needed to assign partitions; the group is never joined.
        .set("group.id", "strom-perf-e2e");
    apply_props(&mut c, &a.consumer_props)?;
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| anyhow!("cannot create the consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for (p, (_, high)) in ends.iter().enumerate() {
        tpl.add_partition_offset(&a.topic, p as i32, Offset::Offset(*high))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| anyhow!("cannot assign '{}': {e}", a.topic))?;

    let base = Instant::now();
    let progress = Arc::new(Progress::default());
    // Set by the producer when done: the number of records the consumer
    // must see (u64::MAX while unknown).
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let producer_done = Arc::new(AtomicBool::new(false));
    let consumer_thread = {
        let progress = progress.clone();
        let expected = expected.clone();
        let producer_done = producer_done.clone();
        let record_size = a.record_size as u64;
        std::thread::spawn(move || {
            let mut hist = latency_histogram();
            let (mut n, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            let mut done_at: Option<Instant> = None;
            loop {
                if n >= expected.load(Ordering::Acquire) {
                    break;
                }
                if producer_done.load(Ordering::Acquire) {
                    let t = *done_at.get_or_insert_with(Instant::now);
                    if t.elapsed() > DRAIN_TIMEOUT {
                        break;
                    }
                }
                match consumer.poll(Duration::from_millis(50)) {
                    None => {}
                    Some(Ok(m)) => {
                        let now = base.elapsed().as_nanos() as u64;
                        if let Some(v) = m.payload().and_then(|v| v.get(..8)) {
                            let sent = u64::from_be_bytes(v.try_into().expect("8 bytes"));
                            hist.saturating_record((now.saturating_sub(sent) / 1000).max(1));
                        }
                        let t = Instant::now();
                        first.get_or_insert(t);
                        last = t;
                        n += 1;
                        if n & 0xff == 0 {
                            progress.done.store(n, Ordering::Relaxed);
                            progress.bytes.store(n * record_size, Ordering::Relaxed);
                        }
                    }
                    Some(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            progress.done.store(n, Ordering::Relaxed);
            let span = first.map_or(Duration::ZERO, |f| last.duration_since(f));
            (n, errors, first_error, hist, span)
        })
    };

    let reporter = Reporter::start(
        progress.clone(),
        ctx.format.is_json(),
        a.length.num_records,
        a.length.duration(),
        "received",
    );
    // The producer's own progress counters stay apart from the consumer's.
    let producer_progress = Arc::new(Progress::default());
    let produced = produce_loop(ctx, a, base, producer_progress.clone(), true);
    let acked = producer_progress.done.load(Ordering::Relaxed);
    expected.store(acked, Ordering::Release);
    producer_done.store(true, Ordering::Release);
    let (received, consume_errors, consume_error, hist, span) = consumer_thread
        .join()
        .map_err(|_| anyhow!("the consumer thread panicked"))?;
    reporter.stop();
    let produced = produced?;

    let elapsed = span.max(produced.elapsed);
    let mut report = Report::new(
        "e2e",
        &a.topic,
        received,
        received * a.record_size as u64,
        elapsed,
    );
    report.sent = Some(produced.sent);
    let produce_errors = producer_progress.errors.load(Ordering::Relaxed);
    let missing = acked.saturating_sub(received);
    report.errors = produce_errors + consume_errors + missing;
    report.first_error = produced
        .context
        .first_error
        .lock()
        .unwrap()
        .clone()
        .or(consume_error)
        .or_else(|| {
            (missing > 0).then(|| {
                format!(
                    "{missing} acknowledged records not received within {} s",
                    DRAIN_TIMEOUT.as_secs()
                )
            })
        });
    report.latency_ms = Some(Latency::from_us(&hist));
    report.ack_latency_ms = Some(Latency::from_us(&produced.context.latency.lock().unwrap()));
    Ok(report)
}
