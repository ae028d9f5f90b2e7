//! `strom perf produce` and the producer half of `e2e`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{
    ensure_topic, latency_histogram, payload, producer_config, throttle, Latency, ProduceArgs,
    Progress, Report, Reporter,
};
use crate::Ctx;

/// Delivery reports: send→ack latency and counts. Runs on the producer's
/// polling thread only, so the histogram lock is never contended.
pub struct PerfContext {
    base: Instant,
    record_bytes: u64,
    progress: Arc<Progress>,
    pub latency: Mutex<Histogram<u64>>,
    pub first_error: Mutex<Option<String>>,
    /// When the last acknowledgement arrived (ns since `base`).
    pub last_ack_ns: std::sync::atomic::AtomicU64,
}

impl ClientContext for PerfContext {}

impl ProducerContext for PerfContext {
    /// The send time, in ns since `base`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.base.elapsed().as_nanos() as u64;
        match result {
            Ok(_) => {
                let us = now.saturating_sub(sent_ns as u64) / 1000;
                self.latency.lock().unwrap().saturating_record(us.max(1));
                self.progress.done.fetch_add(1, Ordering::Relaxed);
                self.progress
                    .bytes
                    .fetch_add(self.record_bytes, Ordering::Relaxed);
                self.last_ack_ns.store(now, Ordering::Relaxed);
            }
            Err((e, _)) => {
                if self.progress.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    *self.first_error.lock().unwrap() = Some(e.to_string());
                }
            }
        }
    }
}

/// What the producer loop measured.
pub struct ProducerRun {
    pub sent: u64,
    pub elapsed: Duration,
    pub context: Arc<PerfContext>,
}

/// Sends records per `a` until the count or duration is reached, then waits
/// for every acknowledgement. `stamp` writes the send time (ns since `base`)
/// into the first 8 bytes of each value (for e2e).
pub fn produce_loop(
    ctx: &Ctx,
    a: &ProduceArgs,
    base: Instant,
    progress: Arc<Progress>,
    stamp: bool,
) -> Result<ProducerRun> {
    let context = PerfContext {
        base,
        record_bytes: a.record_size as u64,
        progress: progress.clone(),
        latency: Mutex::new(latency_histogram()),
        first_error: Mutex::new(None),
        last_ack_ns: Default::default(),
    };
    let producer: ThreadedProducer<PerfContext> = producer_config(&ctx.connect, a)?
        .create_with_context(context)
        .map_err(|e| anyhow!("cannot create the producer: {e}"))?;
    let mut value = payload(a.record_size);
    let limit = a.length.num_records.unwrap_or(u64::MAX);
    let duration = a.length.duration();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < limit {
        let elapsed = start.elapsed();
        if duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        throttle(a.throughput, sent, elapsed);
        let now_ns = base.elapsed().as_nanos() as u64;
        if stamp {
            value[..8].copy_from_slice(&now_ns.to_be_bytes());
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&a.topic, now_ns as usize).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue is full: let the polling thread drain it.
                    record = r;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err((e, _)) => return Err(anyhow!("cannot send to '{}': {e}", a.topic)),
            }
        }
        sent += 1;
        if sent & 0xff == 0 {
            progress.sent.store(sent, Ordering::Relaxed);
        }
    }
    progress.sent.store(sent, Ordering::Relaxed);
    producer
        .flush(Duration::from_secs(300))
        .map_err(|e| anyhow!("records still unacknowledged after 300 s: {e}"))?;
    let context = producer.context().clone();
    // The run ends at the last acknowledgement, not when flush noticed it.
    let last_ack = Duration::from_nanos(context.last_ack_ns.load(Ordering::Relaxed));
    let elapsed = last_ack
        .checked_sub(start.duration_since(base))
        .unwrap_or_else(|| start.elapsed());
    drop(producer);
    Ok(ProducerRun {
        sent,
        elapsed,
        context,
    })
}

pub fn run(ctx: &Ctx, a: &ProduceArgs) -> Result<Report> {
    a.length.check()?;
    ensure_topic(&ctx.connect, a)?;
    let progress = Arc::new(Progress::default());
    let reporter = Reporter::start(
        progress.clone(),
        ctx.format.is_json(),
        a.length.num_records,
        a.length.duration(),
        "acked",
    );
    let base = Instant::now();
    let result = produce_loop(ctx, a, base, progress.clone(), false);
    reporter.stop();
    let r = result?;
    let acked = progress.done.load(Ordering::Relaxed);
    let mut report = Report::new(
        "produce",
        &a.topic,
        acked,
        acked * a.record_size as u64,
        r.elapsed,
    );
    report.sent = Some(r.sent);
    report.errors = progress.errors.load(Ordering::Relaxed);
    report.first_error = r.context.first_error.lock().unwrap().clone();
    report.latency_ms = Some(Latency::from_us(&r.context.latency.lock().unwrap()));
    Ok(report)
}
