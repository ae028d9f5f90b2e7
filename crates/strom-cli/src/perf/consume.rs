//! `strom perf consume`: read a topic from the beginning as fast as a single
//! librdkafka consumer can.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{ConsumeArgs, Progress, Report, Reporter};
use crate::kafka::{self, apply_props};
use crate::Ctx;

pub fn run(ctx: &Ctx, a: &ConsumeArgs) -> Result<Report> {
    a.length.check()?;
    let opts = &ctx.connect;
    let partitions = {
        let client = opts.metadata_client()?;
        kafka::require_topic(opts, &client, &a.topic)?
    };
    let mut c = opts.config()?;
    c.set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "262144");
    // librdkafka wants a group.id even to assign partitions; without --group
    // none is joined and nothing is committed.
    c.set(
        "group.id",
        a.group.as_deref().unwrap_or("strom-perf-consume"),
    );
    apply_props(&mut c, &a.consumer_props)?;
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| anyhow!("cannot create the consumer: {e}"))?;
    if a.group.is_some() {
        consumer
            .subscribe(&[&a.topic])
            .map_err(|e| anyhow!("cannot subscribe to '{}': {e}", a.topic))?;
    } else {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&a.topic, p, Offset::Beginning)?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| anyhow!("cannot assign '{}': {e}", a.topic))?;
    }

    let progress = Arc::new(Progress::default());
    let reporter = Reporter::start(
        progress.clone(),
        ctx.format.is_json(),
        a.length.num_records,
        a.length.duration(),
        "consumed",
    );
    let limit = a.length.num_records.unwrap_or(u64::MAX);
    let duration = a.length.duration();
    let idle = Duration::from_secs_f64(a.idle_timeout.max(0.1));
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = start;
    let (mut n, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    while n < limit {
        if duration.is_some_and(|d| start.elapsed() >= d) || last.elapsed() >= idle {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                n += 1;
                bytes += (m.payload_len() + m.key().map_or(0, |k| k.len())) as u64;
                if n & 0xff == 0 {
                    progress.done.store(n, Ordering::Relaxed);
                    progress.bytes.store(bytes, Ordering::Relaxed);
                }
            }
            Some(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    reporter.stop();
    let elapsed = last.duration_since(first.unwrap_or(start));
    let mut report = Report::new("consume", &a.topic, n, bytes, elapsed);
    report.errors = errors;
    report.first_error = first_error;
    report.first_record_ms = first.map(|f| f.duration_since(start).as_secs_f64() * 1000.0);
    Ok(report)
}
