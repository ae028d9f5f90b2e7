//! `strom topic …`: create, list, describe, delete, alter configs, add
//! partitions, trim, produce and consume.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Subcommand;
use rdkafka::admin::{AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use crate::kafka::{self, ConnectOpts};
use crate::output::{ids, print_json, Format, Table};
use crate::Ctx;

#[derive(Subcommand)]
pub enum TopicCmd {
    /// Create topics.
    Create {
        #[arg(required = true)]
        topics: Vec<String>,
        /// Partitions (-1: the broker's num.partitions).
        #[arg(long, short = 'p', default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (-1: the broker's default.replication.factor).
        #[arg(long, short = 'r', default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i32,
        /// Topic config, repeatable: `-c retention.ms=60000`.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
        /// Only validate the request.
        #[arg(long)]
        dry_run: bool,
    },
    /// List topics.
    List {
        /// Include internal topics (`__consumer_offsets`, …).
        #[arg(long, short = 'i')]
        internal: bool,
    },
    /// Partitions, leaders, replicas, ISR, offsets and configs.
    Describe {
        #[arg(required = true)]
        topics: Vec<String>,
        /// Skip the configs (DescribeConfigs).
        #[arg(long)]
        no_configs: bool,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Change topic configs (others keep their values).
    AlterConfig {
        topic: String,
        /// Set a config, repeatable: `--set retention.ms=60000`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove an override (back to the broker default), repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Add partitions to a topic.
    AddPartitions {
        topic: String,
        /// Partitions to add.
        #[arg(long, short = 'n', conflicts_with = "total")]
        num: Option<usize>,
        /// The new total partition count.
        #[arg(long)]
        total: Option<usize>,
    },
    /// Delete records before an offset (DeleteRecords), moving the log start.
    TrimPrefix {
        topic: String,
        /// New start offset: a number, or `end` for the high watermark.
        #[arg(long, short = 'o')]
        offset: String,
        /// Only these partitions (default: all), repeatable.
        #[arg(long, short = 'p')]
        partition: Vec<i32>,
    },
    /// Produce lines from stdin (or a file) as records.
    Produce {
        topic: String,
        /// Read lines from this file instead of stdin.
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// Split each line at the first SEP into key and value.
        #[arg(long, short = 'k', value_name = "SEP")]
        key_separator: Option<String>,
        /// A header for every record, repeatable: `-H source=cli`.
        #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// all (-1), 1 or 0.
        #[arg(long, default_value = "all")]
        acks: String,
        /// none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none")]
        compression: String,
        /// Write every record to this partition (default: the partitioner's choice).
        #[arg(long, short = 'p')]
        partition: Option<i32>,
    },
    /// Print records.
    Consume {
        topic: String,
        /// Start at the beginning of each partition.
        #[arg(long, conflicts_with = "offset")]
        from_beginning: bool,
        /// Where to start: beginning|end|N|-N (N before the end)|@TIMESTAMP_MS.
        #[arg(long, short = 'o', allow_hyphen_values = true)]
        offset: Option<String>,
        /// Stop after this many records.
        #[arg(long, short = 'n')]
        num: Option<u64>,
        /// Stop at the end of every partition.
        #[arg(long, short = 'e')]
        exit_at_end: bool,
        /// Only this partition, repeatable.
        #[arg(long, short = 'p')]
        partition: Vec<i32>,
        /// Consume as this group (subscribe, commit) instead of assigning partitions.
        #[arg(long, short = 'g')]
        group: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: TopicCmd) -> Result<ExitCode> {
    if !matches!(cmd, TopicCmd::Consume { .. }) {
        ctx.format.check_no_template()?;
    }
    match cmd {
        TopicCmd::Create {
            topics,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
            dry_run,
        } => create(
            ctx,
            &topics,
            partitions,
            replication_factor,
            &configs,
            if_not_exists,
            dry_run,
        ),
        TopicCmd::List { internal } => list(ctx, internal),
        TopicCmd::Describe { topics, no_configs } => describe(ctx, &topics, !no_configs),
        TopicCmd::Delete { topics } => delete(ctx, &topics),
        TopicCmd::AlterConfig { topic, set, delete } => alter_config(ctx, &topic, &set, &delete),
        TopicCmd::AddPartitions { topic, num, total } => add_partitions(ctx, &topic, num, total),
        TopicCmd::TrimPrefix {
            topic,
            offset,
            partition,
        } => trim_prefix(ctx, &topic, &offset, &partition),
        TopicCmd::Produce {
            topic,
            file,
            key_separator,
            headers,
            acks,
            compression,
            partition,
        } => produce(
            ctx,
            &topic,
            file,
            key_separator.as_deref(),
            &headers,
            &acks,
            &compression,
            partition,
        ),
        TopicCmd::Consume {
            topic,
            from_beginning,
            offset,
            num,
            exit_at_end,
            partition,
            group,
        } => {
            let start = match (from_beginning, offset) {
                (true, _) => Start::Beginning,
                (false, Some(o)) => Start::parse(&o)?,
                (false, None) => Start::End,
            };
            consume(
                ctx,
                &topic,
                start,
                num,
                exit_at_end,
                &partition,
                group.as_deref(),
            )
        }
    }
}

/// `key=value` → (key, value).
pub fn kv(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("{s:?} is not KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

/// Fails with the per-topic error of an admin operation.
fn check_topic_results(
    what: &str,
    results: Vec<rdkafka::admin::TopicResult>,
    ok_codes: &[RDKafkaErrorCode],
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for r in results {
        match r {
            Ok(name) => done.push(name),
            Err((name, code)) if ok_codes.contains(&code) => done.push(name),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                bail!("unknown topic '{name}'")
            }
            Err((name, code)) => bail!("cannot {what} topic '{name}': {code}"),
        }
    }
    Ok(done)
}

fn create(
    ctx: &Ctx,
    topics: &[String],
    partitions: i32,
    rf: i32,
    configs: &[String],
    if_not_exists: bool,
    dry_run: bool,
) -> Result<ExitCode> {
    let configs: Vec<(String, String)> = configs.iter().map(|c| kv(c)).collect::<Result<_>>()?;
    let admin = ctx.connect.admin()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            let mut n = NewTopic::new(t, partitions, TopicReplication::Fixed(rf));
            for (k, v) in &configs {
                n = n.set(k, v);
            }
            n
        })
        .collect();
    let opts = ctx.connect.admin_options().validate_only(dry_run);
    let res = kafka::block_on(admin.create_topics(&new, &opts))?
        .map_err(|e| admin_error(&ctx.connect, e))?;
    let ok: &[RDKafkaErrorCode] = if if_not_exists {
        &[RDKafkaErrorCode::TopicAlreadyExists]
    } else {
        &[]
    };
    let done = check_topic_results("create", res, ok)?;
    if ctx.format.is_json() {
        print_json(&json!({ "created": done, "dry_run": dry_run }))?;
    } else {
        for t in done {
            println!(
                "{} topic '{t}'",
                if dry_run { "validated" } else { "created" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Admin errors that happen before any broker answered are reachability
/// problems: say so.
fn admin_error(opts: &ConnectOpts, e: KafkaError) -> anyhow::Error {
    match e {
        KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut)
        | KafkaError::AdminOp(RDKafkaErrorCode::AllBrokersDown)
        | KafkaError::AdminOp(RDKafkaErrorCode::BrokerTransportFailure) => opts.unreachable(e),
        e => anyhow!("{e}"),
    }
}

#[derive(Serialize)]
struct TopicSummary {
    name: String,
    partitions: usize,
    replicas: usize,
    internal: bool,
}

fn list(ctx: &Ctx, internal: bool) -> Result<ExitCode> {
    let client = ctx.connect.metadata_client()?;
    let md = ctx.connect.metadata(&client, None)?;
    let mut topics: Vec<TopicSummary> = md
        .topics()
        .iter()
        .map(|t| TopicSummary {
            name: t.name().to_string(),
            partitions: t.partitions().len(),
            replicas: t.partitions().first().map_or(0, |p| p.replicas().len()),
            internal: t.name().starts_with("__"),
        })
        .filter(|t| internal || !t.internal)
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if ctx.format.is_json() {
        print_json(&topics)?;
    } else {
        let mut t = Table::new(&["NAME", "PARTITIONS", "REPLICAS"]);
        for s in &topics {
            t.row(vec![
                s.name.clone(),
                s.partitions.to_string(),
                s.replicas.to_string(),
            ]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct PartitionInfo {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    earliest: i64,
    latest: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct TopicDescription {
    name: String,
    partitions: Vec<PartitionInfo>,
    /// Non-default configs (all configs with `--format json`), when the
    /// cluster answers DescribeConfigs.
    #[serde(skip_serializing_if = "Option::is_none")]
    configs: Option<BTreeMap<String, ConfigValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configs_error: Option<String>,
}

#[derive(Serialize, Clone)]
pub struct ConfigValue {
    pub value: Option<String>,
    pub source: String,
    pub default: bool,
    pub read_only: bool,
    pub sensitive: bool,
}

/// DescribeConfigs for one resource.
pub fn describe_configs(
    opts: &ConnectOpts,
    spec: ResourceSpecifier<'_>,
) -> Result<BTreeMap<String, ConfigValue>> {
    let admin = opts.admin()?;
    let res = kafka::block_on(admin.describe_configs([&spec], &opts.admin_options()))?
        .map_err(|e| admin_error(opts, e))?;
    let r = res
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("empty DescribeConfigs answer"))?
        .map_err(|e| anyhow!("{e}"))?;
    Ok(r.entries
        .into_iter()
        .map(|e| {
            (
                e.name,
                ConfigValue {
                    value: e.value,
                    source: format!("{:?}", e.source),
                    default: e.is_default,
                    read_only: e.is_read_only,
                    sensitive: e.is_sensitive,
                },
            )
        })
        .collect())
}

fn describe(ctx: &Ctx, topics: &[String], with_configs: bool) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let client = opts.metadata_client()?;
    let mut out = Vec::new();
    for topic in topics {
        let n = kafka::require_topic(opts, &client, topic)?;
        let md = opts.metadata(&client, Some(topic))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| anyhow!("unknown topic '{topic}'"))?;
        let marks = kafka::watermarks(opts, &client, topic, n)?;
        let mut partitions: Vec<PartitionInfo> = t
            .partitions()
            .iter()
            .map(|p| {
                let (earliest, latest) = marks.get(p.id() as usize).copied().unwrap_or((-1, -1));
                PartitionInfo {
                    partition: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                    earliest,
                    latest,
                    error: p.error().map(|e| RDKafkaErrorCode::from(e).to_string()),
                }
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        let (configs, configs_error) = if with_configs {
            match describe_configs(opts, ResourceSpecifier::Topic(topic)) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            }
        } else {
            (None, None)
        };
        out.push(TopicDescription {
            name: topic.clone(),
            partitions,
            configs,
            configs_error,
        });
    }
    if ctx.format.is_json() {
        print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    for (i, d) in out.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let rf = d.partitions.first().map_or(0, |p| p.replicas.len());
        s.push_str(&format!(
            "TOPIC {}  PARTITIONS {}  REPLICAS {}\n",
            d.name,
            d.partitions.len(),
            rf
        ));
        let mut t = Table::new(&[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "EARLIEST",
            "LATEST",
        ]);
        for p in &d.partitions {
            t.row(vec![
                p.partition.to_string(),
                p.leader.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                p.earliest.to_string(),
                p.latest.to_string(),
            ]);
        }
        s.push_str(&t.render());
        match (&d.configs, &d.configs_error) {
            (Some(c), _) => {
                let set: Vec<_> = c.iter().filter(|(_, v)| !v.default).collect();
                if !set.is_empty() {
                    s.push_str("CONFIGS\n");
                    let mut t = Table::new(&["KEY", "VALUE", "SOURCE"]);
                    for (k, v) in set {
                        t.row(vec![
                            k.clone(),
                            v.value.clone().unwrap_or_default(),
                            v.source.clone(),
                        ]);
                    }
                    s.push_str(&t.render());
                }
            }
            (None, Some(e)) => s.push_str(&format!("CONFIGS unavailable: {e}\n")),
            _ => {}
        }
    }
    std::io::stdout().lock().write_all(s.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn delete(ctx: &Ctx, topics: &[String]) -> Result<ExitCode> {
    let admin = ctx.connect.admin()?;
    let names: Vec<&str> = topics.iter().map(|s| s.as_str()).collect();
    let res = kafka::block_on(admin.delete_topics(&names, &ctx.connect.admin_options()))?
        .map_err(|e| admin_error(&ctx.connect, e))?;
    let done = check_topic_results("delete", res, &[])?;
    if ctx.format.is_json() {
        print_json(&json!({ "deleted": done }))?;
    } else {
        for t in done {
            println!("deleted topic '{t}'");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn alter_config(ctx: &Ctx, topic: &str, set: &[String], delete: &[String]) -> Result<ExitCode> {
    if set.is_empty() && delete.is_empty() {
        bail!("give --set KEY=VALUE or --delete KEY");
    }
    let opts = &ctx.connect;
    let client = opts.metadata_client()?;
    kafka::require_topic(opts, &client, topic)?;
    // AlterConfigs replaces a topic's whole override set: start from the
    // current overrides so the ones not named here are kept.
    let current = describe_configs(opts, ResourceSpecifier::Topic(topic))
        .context("cannot read the current configs")?;
    let mut values: BTreeMap<String, String> = current
        .into_iter()
        .filter(|(_, v)| v.source == "Topic" || v.source == "DynamicTopic")
        .filter_map(|(k, v)| v.value.map(|v| (k, v)))
        .collect();
    for s in set {
        let (k, v) = kv(s)?;
        values.insert(k, v);
    }
    for k in delete {
        values.remove(k);
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in &values {
        alter = alter.set(k, v);
    }
    let admin = opts.admin()?;
    let res = kafka::block_on(admin.alter_configs([&alter], &opts.admin_options()))?
        .map_err(|e| admin_error(opts, e))?;
    for r in res {
        if let Err((_, code)) = r {
            bail!("cannot alter the configs of '{topic}': {code}");
        }
    }
    if ctx.format.is_json() {
        print_json(&json!({ "topic": topic, "configs": values }))?;
    } else {
        println!("altered the configs of topic '{topic}'");
    }
    Ok(ExitCode::SUCCESS)
}

fn add_partitions(
    ctx: &Ctx,
    topic: &str,
    num: Option<usize>,
    total: Option<usize>,
) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let client = opts.metadata_client()?;
    let current = kafka::require_topic(opts, &client, topic)?;
    let new_total = match (num, total) {
        (Some(n), None) => current + n,
        (None, Some(t)) => t,
        _ => bail!("give --num N (partitions to add) or --total N"),
    };
    if new_total <= current {
        bail!("topic '{topic}' already has {current} partitions; the new total must be larger");
    }
    let admin = opts.admin()?;
    let np = NewPartitions::new(topic, new_total);
    let res = kafka::block_on(admin.create_partitions([&np], &opts.admin_options()))?
        .map_err(|e| admin_error(opts, e))?;
    check_topic_results("add partitions to", res, &[])?;
    if ctx.format.is_json() {
        print_json(&json!({ "topic": topic, "partitions": new_total }))?;
    } else {
        println!("topic '{topic}' now has {new_total} partitions");
    }
    Ok(ExitCode::SUCCESS)
}

fn trim_prefix(ctx: &Ctx, topic: &str, offset: &str, only: &[i32]) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let client = opts.metadata_client()?;
    let n = kafka::require_topic(opts, &client, topic)?;
    let marks = kafka::watermarks(opts, &client, topic, n)?;
    let parts: Vec<i32> = if only.is_empty() {
        (0..n as i32).collect()
    } else {
        only.to_vec()
    };
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let Some(&(_, high)) = marks.get(p as usize) else {
            bail!("topic '{topic}' has no partition {p}");
        };
        let o = match offset {
            "end" | "latest" => high,
            n => n
                .parse::<i64>()
                .map_err(|_| anyhow!("--offset must be a number or `end`, got {n:?}"))?,
        };
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    let admin = opts.admin()?;
    let res = kafka::block_on(admin.delete_records(&tpl, &opts.admin_options()))?
        .map_err(|e| admin_error(opts, e))?;
    let mut rows = Vec::new();
    for e in res.elements() {
        if let Err(err) = e.error() {
            bail!("cannot trim {topic}-{}: {err}", e.partition());
        }
        rows.push((e.partition(), e.offset().to_raw().unwrap_or(-1)));
    }
    if ctx.format.is_json() {
        let v: Vec<_> = rows
            .iter()
            .map(|(p, o)| json!({ "partition": p, "start_offset": o }))
            .collect();
        print_json(&json!({ "topic": topic, "partitions": v }))?;
    } else {
        let mut t = Table::new(&["PARTITION", "START-OFFSET"]);
        for (p, o) in rows {
            t.row(vec![p.to_string(), o.to_string()]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Delivery reports of `topic produce`: count failures, keep the first.
#[derive(Default)]
struct ProduceContext {
    failed: std::sync::atomic::AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for ProduceContext {}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if self
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                == 0
            {
                *self.first_error.lock().unwrap() = Some(e.to_string());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn produce(
    ctx: &Ctx,
    topic: &str,
    file: Option<PathBuf>,
    key_separator: Option<&str>,
    headers: &[String],
    acks: &str,
    compression: &str,
    partition: Option<i32>,
) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let headers: Vec<(String, String)> = headers.iter().map(|h| kv(h)).collect::<Result<_>>()?;
    {
        let client = opts.metadata_client()?;
        let n = kafka::require_topic(opts, &client, topic)?;
        if let Some(p) = partition {
            if p < 0 || p as usize >= n {
                bail!("topic '{topic}' has no partition {p} (it has {n})");
            }
        }
    }
    let mut c = opts.config()?;
    c.set("acks", kafka::acks(acks)?)
        .set("compression.type", kafka::compression(compression)?)
        .set("linger.ms", "5");
    let producer: ThreadedProducer<ProduceContext> = c
        .create_with_context(ProduceContext::default())
        .map_err(|e| anyhow!("cannot create the producer: {e}"))?;
    let input: Box<dyn BufRead> = match &file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut count = 0u64;
    for line in input.lines() {
        let line = line.context("cannot read input")?;
        let (key, value) = match key_separator.and_then(|sep| line.split_once(sep)) {
            Some((k, v)) => (Some(k), v),
            None => (None, line.as_str()),
        };
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in &headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                });
            }
            record = record.headers(h);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("cannot send to '{topic}': {e}"),
            }
        }
        count += 1;
    }
    producer
        .flush(Duration::from_secs(60).max(opts.timeout()))
        .map_err(|e| anyhow!("records still unacknowledged: {e}"))?;
    let cx = producer.context();
    let failed = cx.failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "{failed} of {count} records were not written to '{topic}': {}",
            cx.first_error.lock().unwrap().clone().unwrap_or_default()
        );
    }
    if ctx.format.is_json() {
        print_json(&json!({ "topic": topic, "records": count }))?;
    } else {
        println!("produced {count} records to '{topic}'");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `topic consume` starts in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    /// N records before the end.
    Tail(i64),
    /// The first record at or after this time (ms).
    Timestamp(i64),
}

impl Start {
    pub fn parse(s: &str) -> Result<Start> {
        Ok(match s {
            "beginning" | "earliest" | "oldest" => Start::Beginning,
            "end" | "latest" | "newest" => Start::End,
            s if s.starts_with('@') => Start::Timestamp(
                s[1..]
                    .parse()
                    .map_err(|_| anyhow!("bad timestamp in -o {s:?} (ms since the epoch)"))?,
            ),
            s => match s.parse::<i64>() {
                Ok(n) if n < 0 => Start::Tail(-n),
                Ok(n) => Start::Offset(n),
                Err(_) => bail!("-o takes beginning, end, N, -N or @TIMESTAMP_MS (got {s:?})"),
            },
        })
    }
}

fn consume(
    ctx: &Ctx,
    topic: &str,
    start: Start,
    num: Option<u64>,
    exit_at_end: bool,
    only: &[i32],
    group: Option<&str>,
) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let n = {
        let client = opts.metadata_client()?;
        kafka::require_topic(opts, &client, topic)?
    };
    let parts: Vec<i32> = if only.is_empty() {
        (0..n as i32).collect()
    } else {
        for &p in only {
            if p < 0 || p as usize >= n {
                bail!("topic '{topic}' has no partition {p} (it has {n})");
            }
        }
        only.to_vec()
    };
    let mut c = opts.config()?;
    c.set(
        "enable.partition.eof",
        if exit_at_end { "true" } else { "false" },
    )
    .set(
        "auto.offset.reset",
        if start == Start::Beginning {
            "earliest"
        } else {
            "latest"
        },
    );
    match group {
        // Offsets are stored by hand once a record is printed, so a commit
        // covers exactly what was output.
        Some(g) => c
            .set("group.id", g)
            .set("enable.auto.offset.store", "false"),
        // Needed to assign partitions; without --group none is joined.
        None => c
            .set("group.id", "strom-cli-consume")
            .set("enable.auto.commit", "false"),
    };
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| anyhow!("cannot create the consumer: {e}"))?;
    // A group consumer subscribes and resumes from its committed offsets;
    // the start position only applies where it has none.
    let subscribe =
        group.is_some() && only.is_empty() && matches!(start, Start::Beginning | Start::End);
    if subscribe {
        consumer
            .subscribe(&[topic])
            .map_err(|e| anyhow!("cannot subscribe to '{topic}': {e}"))?;
    } else {
        let mut tpl = TopicPartitionList::new();
        for &p in &parts {
            let o = match start {
                Start::Beginning => Offset::Beginning,
                Start::End => Offset::End,
                Start::Offset(o) => Offset::Offset(o),
                Start::Tail(n) => Offset::OffsetTail(n),
                Start::Timestamp(ts) => Offset::Offset(ts),
            };
            tpl.add_partition_offset(topic, p, o)?;
        }
        if let Start::Timestamp(_) = start {
            tpl = consumer
                .offsets_for_times(tpl, opts.timeout())
                .map_err(|e| anyhow!("cannot look up offsets by time: {e}"))?;
            // No record at or after the time: start at the end.
            for e in tpl.clone().elements() {
                if matches!(e.offset(), Offset::Invalid | Offset::Offset(-1)) {
                    tpl.set_partition_offset(topic, e.partition(), Offset::End)?;
                }
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| anyhow!("cannot assign '{topic}': {e}"))?;
    }

    let template = match &ctx.format {
        Format::Template(t) => Some(Template::parse(t)),
        Format::Table => Some(Template::parse("%v")),
        Format::Json => None,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let limit = num.unwrap_or(u64::MAX);
    let mut seen = 0u64;
    let mut at_end = std::collections::BTreeSet::new();
    let mut line = Vec::with_capacity(1024);
    let mut last_flush = Instant::now();
    while seen < limit {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                out.flush()?;
            }
            Some(Ok(m)) => {
                line.clear();
                match &template {
                    Some(t) => t.render(&m, &mut line),
                    None => {
                        serde_json::to_writer(&mut line, &record_json(&m))?;
                        line.push(b'\n');
                    }
                }
                out.write_all(&line)?;
                if group.is_some() {
                    consumer
                        .store_offset_from_message(&m)
                        .map_err(|e| anyhow!("cannot store the offset: {e}"))?;
                }
                seen += 1;
                at_end.remove(&m.partition());
                if last_flush.elapsed() > Duration::from_millis(100) {
                    out.flush()?;
                    last_flush = Instant::now();
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if exit_at_end && at_end.len() >= parts.len() {
                    break;
                }
            }
            Some(Err(e)) => {
                out.flush()?;
                bail!("consuming '{topic}': {e}");
            }
        }
    }
    out.flush()?;
    if group.is_some() && seen > 0 {
        consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| anyhow!("cannot commit the group's offsets: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One record as a JSON object (`--format json`).
fn record_json(m: &BorrowedMessage<'_>) -> serde_json::Value {
    let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    let headers: Vec<_> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| json!({ "key": h.key, "value": s(h.value) }))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": s(m.key()),
        "value": s(m.payload()),
        "headers": headers,
    })
}

/// A `--format` template: `%k` key, `%v` value, `%h` headers (`k=v,…`),
/// `%p` partition, `%o` offset, `%t` timestamp (ms), `%T` topic, `%%`;
/// `\n`, `\t`, `\\` escapes. A newline ends each record unless the template
/// already ends with one.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Key,
    Value,
    Headers,
    Partition,
    Offset,
    Timestamp,
    Topic,
}

struct Template(Vec<Piece>);

impl Template {
    fn parse(t: &str) -> Template {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            let piece = match (c, chars.peek().copied()) {
                ('%', Some(n)) => {
                    let p = match n {
                        'k' => Some(Piece::Key),
                        'v' => Some(Piece::Value),
                        'h' => Some(Piece::Headers),
                        'p' => Some(Piece::Partition),
                        'o' => Some(Piece::Offset),
                        't' => Some(Piece::Timestamp),
                        'T' => Some(Piece::Topic),
                        '%' => {
                            text.push(b'%');
                            None
                        }
                        _ => {
                            text.push(b'%');
                            text.extend(n.to_string().as_bytes());
                            None
                        }
                    };
                    chars.next();
                    p
                }
                ('\\', Some(n)) => {
                    match n {
                        'n' => text.push(b'\n'),
                        't' => text.push(b'\t'),
                        '\\' => text.push(b'\\'),
                        _ => {
                            text.push(b'\\');
                            text.extend(n.to_string().as_bytes());
                        }
                    }
                    chars.next();
                    None
                }
                (c, _) => {
                    let mut b = [0; 4];
                    text.extend(c.encode_utf8(&mut b).as_bytes());
                    None
                }
            };
            if let Some(p) = piece {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(p);
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        match pieces.last_mut() {
            Some(Piece::Text(t)) if t.ends_with(b"\n") => {}
            Some(Piece::Text(t)) => t.push(b'\n'),
            _ => pieces.push(Piece::Text(b"\n".to_vec())),
        }
        Template(pieces)
    }

    fn render(&self, m: &BorrowedMessage<'_>, out: &mut Vec<u8>) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Key => out.extend_from_slice(m.key().unwrap_or_default()),
                Piece::Value => out.extend_from_slice(m.payload().unwrap_or_default()),
                Piece::Headers => {
                    if let Some(h) = m.headers() {
                        for (i, h) in h.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(h.key.as_bytes());
                            out.push(b'=');
                            out.extend_from_slice(h.value.unwrap_or_default());
                        }
                    }
                }
                Piece::Partition => out.extend_from_slice(m.partition().to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(m.offset().to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(
                    m.timestamp()
                        .to_millis()
                        .unwrap_or(-1)
                        .to_string()
                        .as_bytes(),
                ),
                Piece::Topic => out.extend_from_slice(m.topic().as_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets() {
        assert_eq!(Start::parse("beginning").unwrap(), Start::Beginning);
        assert_eq!(Start::parse("end").unwrap(), Start::End);
        assert_eq!(Start::parse("42").unwrap(), Start::Offset(42));
        assert_eq!(Start::parse("-10").unwrap(), Start::Tail(10));
        assert_eq!(
            Start::parse("@1700000000000").unwrap(),
            Start::Timestamp(1_700_000_000_000)
        );
        assert!(Start::parse("soon").is_err());
    }

    #[test]
    fn templates() {
        let t = Template::parse("%k=%v\\t%%");
        assert_eq!(
            t.0,
            vec![
                Piece::Key,
                Piece::Text(b"=".to_vec()),
                Piece::Value,
                Piece::Text(b"\t%\n".to_vec()),
            ]
        );
        let t = Template::parse("%v\\n");
        assert_eq!(t.0, vec![Piece::Value, Piece::Text(b"\n".to_vec())]);
    }
}
