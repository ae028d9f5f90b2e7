//! `strom perf produce|consume|e2e`: load generators on librdkafka whose
//! figures compare with Kafka's `kafka-producer-perf-test` and
//! `kafka-consumer-perf-test`.
//!
//! The tool must not be the bottleneck: the payload is built once (e2e
//! overwrites its first 8 bytes with the send time), the send time travels
//! as the delivery opaque (a `usize`, no allocation per record), and
//! delivery reports are handled on librdkafka's polling thread.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::kafka::{self, apply_props, ConnectOpts};
use crate::Ctx;

mod consume;
mod e2e;
mod produce;

#[derive(Subcommand)]
pub enum PerfCmd {
    /// Produce as fast as allowed; report throughput and send→ack latency.
    Produce(ProduceArgs),
    /// Consume a topic from the beginning; report throughput.
    Consume(ConsumeArgs),
    /// Produce and consume at once; report send→receive latency.
    E2e(ProduceArgs),
}

/// How long a run lasts: a record count or a duration.
#[derive(Args, Clone, Debug)]
pub struct RunLength {
    /// Records to send (or read).
    #[arg(long, conflicts_with = "duration")]
    pub num_records: Option<u64>,
    /// Run for this many seconds instead.
    #[arg(long)]
    pub duration: Option<f64>,
}

impl RunLength {
    fn check(&self) -> Result<()> {
        if self.num_records.is_none() && self.duration.is_none() {
            bail!("give --num-records or --duration");
        }
        if self.duration.is_some_and(|d| d <= 0.0) {
            bail!("--duration must be positive");
        }
        Ok(())
    }
    fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }
}

#[derive(Args, Clone, Debug)]
pub struct ProduceArgs {
    /// Topic to write to.
    #[arg(long, short = 't')]
    pub topic: String,
    #[command(flatten)]
    pub length: RunLength,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// all (-1), 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// linger.ms (librdkafka's default if not given).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// batch.size in bytes (librdkafka's default if not given).
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// Target records/s; -1 is unlimited.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    pub throughput: f64,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor for a topic created by --partitions (-1: broker default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub replication_factor: i32,
    /// Producer property, repeatable (`linger.ms=0`, `queue.buffering.max.kbytes=…`).
    #[arg(long = "producer-prop", value_name = "KEY=VALUE")]
    pub producer_props: Vec<String>,
    /// Consumer property for e2e, repeatable.
    #[arg(long = "consumer-prop", value_name = "KEY=VALUE")]
    pub consumer_props: Vec<String>,
}

#[derive(Args, Clone, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, short = 't')]
    pub topic: String,
    #[command(flatten)]
    pub length: RunLength,
    /// Consume in this group (subscribe) instead of assigning every partition.
    #[arg(long)]
    pub group: Option<String>,
    /// Stop when no record arrives for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub idle_timeout: f64,
    /// Consumer property, repeatable.
    #[arg(long = "consumer-prop", value_name = "KEY=VALUE")]
    pub consumer_props: Vec<String>,
}

pub fn run(ctx: &Ctx, cmd: PerfCmd) -> Result<ExitCode> {
    ctx.format.check_no_template()?;
    let report = match cmd {
        PerfCmd::Produce(a) => produce::run(ctx, &a)?,
        PerfCmd::Consume(a) => consume::run(ctx, &a)?,
        PerfCmd::E2e(a) => e2e::run(ctx, &a)?,
    };
    if ctx.format.is_json() {
        crate::output::print_json(&report)?;
    } else {
        println!("{}", report.human());
    }
    Ok(if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Latency figures in milliseconds.
#[derive(Serialize, Debug, Clone)]
pub struct Latency {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    fn from_us(h: &Histogram<u64>) -> Latency {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            avg: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What a run measured; `--json` prints it as is.
#[derive(Serialize, Debug)]
pub struct Report {
    pub mode: &'static str,
    pub topic: String,
    /// Records acknowledged (produce), read (consume) or received (e2e).
    pub records: u64,
    /// Records sent by the producer (produce, e2e).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    pub errors: u64,
    pub bytes: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// produce: send → ack; e2e: send → consumer receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// e2e: the producer's send → ack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_latency_ms: Option<Latency>,
    /// consume: time until the first record arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_record_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    fn new(mode: &'static str, topic: &str, records: u64, bytes: u64, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            mode,
            topic: topic.to_string(),
            records,
            sent: None,
            errors: 0,
            bytes,
            elapsed_secs: secs,
            records_per_sec: records as f64 / secs,
            mb_per_sec: bytes as f64 / secs / (1024.0 * 1024.0),
            latency_ms: None,
            ack_latency_ms: None,
            first_record_ms: None,
            first_error: None,
        }
    }

    /// One line in Kafka's perf-test wording.
    fn human(&self) -> String {
        let verb = match self.mode {
            "produce" => "sent",
            "consume" => "consumed",
            _ => "received",
        };
        let mut s = format!(
            "{} records {verb} in {:.2} s, {:.1} records/sec ({:.2} MB/sec)",
            self.records, self.elapsed_secs, self.records_per_sec, self.mb_per_sec
        );
        let lat = |l: &Latency| {
            format!(
                "{:.2} ms avg latency, {:.2} ms p50, {:.2} ms p95, {:.2} ms p99, {:.2} ms p99.9, {:.2} ms max",
                l.avg, l.p50, l.p95, l.p99, l.p999, l.max
            )
        };
        if let Some(l) = &self.latency_ms {
            let what = if self.mode == "e2e" {
                "end-to-end"
            } else {
                "send→ack"
            };
            s.push_str(&format!("\n{what}: {}", lat(l)));
        }
        if let Some(l) = &self.ack_latency_ms {
            s.push_str(&format!("\nsend→ack: {}", lat(l)));
        }
        if let Some(ms) = self.first_record_ms {
            s.push_str(&format!("\nfirst record after {ms:.1} ms"));
        }
        if self.errors > 0 {
            s.push_str(&format!(
                "\n{} errors (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        s
    }
}

/// A histogram of microseconds from 1 µs to one hour, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Counters the hot loop and the callbacks share with the progress reporter.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub done: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub finished: AtomicBool,
}

/// Shows progress while a run lasts: a bar on a terminal, a line every 5 s
/// on stderr otherwise, nothing with `--json`.
struct Reporter {
    thread: Option<std::thread::JoinHandle<()>>,
    progress: Arc<Progress>,
}

impl Reporter {
    fn start(
        progress: Arc<Progress>,
        json: bool,
        total: Option<u64>,
        duration: Option<Duration>,
        what: &'static str,
    ) -> Reporter {
        let p = progress.clone();
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let thread = (!json).then(|| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let bar = tty.then(|| {
                    let len = match (total, duration) {
                        (Some(n), _) => n,
                        (None, Some(d)) => d.as_millis() as u64,
                        _ => 0,
                    };
                    let bar = ProgressBar::new(len);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {wide_bar:.cyan/blue} {percent:>3}% {msg}",
                        )
                        .expect("valid template"),
                    );
                    bar
                });
                let (mut last_t, mut last_n, mut last_b) = (start, 0u64, 0u64);
                let mut last_line = start;
                while !p.finished.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(200));
                    let now = Instant::now();
                    let n = p.done.load(Ordering::Relaxed);
                    let b = p.bytes.load(Ordering::Relaxed);
                    let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
                    let rate = (n - last_n) as f64 / dt;
                    let mbs = (b - last_b) as f64 / dt / (1024.0 * 1024.0);
                    if let Some(bar) = &bar {
                        match total {
                            Some(_) => bar.set_position(n),
                            None => bar.set_position(now.duration_since(start).as_millis() as u64),
                        }
                        bar.set_message(format!("{n} {what}, {rate:.0} rec/s, {mbs:.1} MB/s"));
                        (last_t, last_n, last_b) = (now, n, b);
                    } else if now.duration_since(last_line) >= Duration::from_secs(5) {
                        eprintln!("{n} records {what}, {rate:.1} records/sec ({mbs:.2} MB/sec)");
                        (last_t, last_n, last_b) = (now, n, b);
                        last_line = now;
                    }
                }
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
            })
        });
        Reporter { thread, progress }
    }

    fn stop(mut self) {
        self.progress.finished.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A value of `size` printable bytes, the same for every record (as Kafka's
/// perf test does with a random payload).
fn payload(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

/// The producer config of a perf run.
fn producer_config(opts: &ConnectOpts, a: &ProduceArgs) -> Result<ClientConfig> {
    let mut c = opts.config()?;
    c.set("acks", kafka::acks(&a.acks)?)
        .set("compression.type", kafka::compression(&a.compression)?)
        // Like Kafka's perf tool: never give up on a record while the run lasts.
        .set("message.timeout.ms", "300000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000");
    if let Some(l) = a.linger_ms {
        c.set("linger.ms", l.to_string());
    }
    if let Some(b) = a.batch_size {
        c.set("batch.size", b.to_string());
    }
    apply_props(&mut c, &a.producer_props)?;
    Ok(c)
}

/// Creates the topic when `--partitions` is given and it does not exist;
/// fails on an unknown topic otherwise. Returns the partition count.
fn ensure_topic(opts: &ConnectOpts, a: &ProduceArgs) -> Result<usize> {
    let client = opts.metadata_client()?;
    let md = opts.metadata(&client, None)?;
    let existing = md
        .topics()
        .iter()
        .find(|t| t.name() == a.topic && !t.partitions().is_empty());
    if let Some(t) = existing {
        return Ok(t.partitions().len());
    }
    let Some(parts) = a.partitions else {
        bail!(
            "unknown topic '{}' (give --partitions N to create it)",
            a.topic
        );
    };
    let admin = opts.admin()?;
    let new = NewTopic::new(
        &a.topic,
        parts,
        TopicReplication::Fixed(a.replication_factor),
    );
    let res = kafka::block_on(admin.create_topics([&new], &opts.admin_options()))?
        .map_err(|e| anyhow::anyhow!("cannot create topic '{}': {e}", a.topic))?;
    for r in res {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("cannot create topic '{name}': {code}");
            }
        }
    }
    // Wait until the new topic shows in metadata with its partitions.
    let deadline = Instant::now() + opts.timeout();
    loop {
        if let Ok(n) = kafka::require_topic(opts, &client, &a.topic) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!(
                "topic '{}' was created but does not show in metadata",
                a.topic
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sleeps as needed so `sent` records take at least `sent / rate` seconds
/// (Kafka's ThroughputThrottler).
#[inline]
fn throttle(rate: f64, sent: u64, elapsed: Duration) {
    if rate <= 0.0 {
        return;
    }
    let due = Duration::from_secs_f64(sent as f64 / rate);
    if due > elapsed {
        let ahead = due - elapsed;
        if ahead > Duration::from_micros(200) {
            std::thread::sleep(ahead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_printable_and_sized() {
        let p = payload(100);
        assert_eq!(p.len(), 100);
        assert!(p.iter().all(|b| b.is_ascii_uppercase()));
    }

    #[test]
    fn latency_in_ms() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = Latency::from_us(&h);
        assert!((l.p50 - 0.5).abs() < 0.01, "{l:?}");
        assert!((l.max - 1.0).abs() < 0.01, "{l:?}");
    }
}
