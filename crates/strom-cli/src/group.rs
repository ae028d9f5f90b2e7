//! `strom group …`: list, describe (committed offsets, log end offsets, lag,
//! members), seek (like `kafka-consumer-groups.sh --reset-offsets`), delete
//! and offset-delete.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use bytes::{Buf, Bytes};
use clap::{ArgGroup, Subcommand};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::groups::GroupInfo;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use crate::kafka::{self, ConnectOpts};
use crate::output::{print_json, Table};
use crate::raw;
use crate::Ctx;

#[derive(Subcommand)]
pub enum GroupCmd {
    /// List consumer groups.
    List,
    /// Members, committed offsets, log end offsets and lag per partition.
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Reset a group's committed offsets (the group must have no members).
    #[command(group(ArgGroup::new("to").required(true).args(
        ["to_earliest", "to_latest", "to_offset", "to_timestamp", "shift_by"])))]
    Seek {
        group: String,
        /// Topic to reset (default: every topic the group has offsets for).
        #[arg(long, short = 't')]
        topic: Option<String>,
        /// Only these partitions, repeatable (needs --topic).
        #[arg(long, short = 'p', requires = "topic")]
        partition: Vec<i32>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long, allow_negative_numbers = false)]
        to_offset: Option<i64>,
        /// The first offset at or after this time (ms since the epoch).
        #[arg(long)]
        to_timestamp: Option<i64>,
        /// Move by N (negative: back), clamped to the log.
        #[arg(long, allow_negative_numbers = true)]
        shift_by: Option<i64>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a group's committed offsets for a topic (OffsetDelete).
    OffsetDelete {
        group: String,
        #[arg(long, short = 't')]
        topic: String,
        /// Only these partitions (default: all), repeatable.
        #[arg(long, short = 'p')]
        partition: Vec<i32>,
    },
}

pub fn run(ctx: &Ctx, cmd: GroupCmd) -> Result<ExitCode> {
    ctx.format.check_no_template()?;
    match cmd {
        GroupCmd::List => list(ctx),
        GroupCmd::Describe { groups } => describe(ctx, &groups),
        GroupCmd::Seek {
            group,
            topic,
            partition,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
            shift_by,
            dry_run,
        } => {
            let target = if to_earliest {
                Target::Earliest
            } else if to_latest {
                Target::Latest
            } else if let Some(o) = to_offset {
                Target::Offset(o)
            } else if let Some(t) = to_timestamp {
                Target::Timestamp(t)
            } else if let Some(n) = shift_by {
                Target::Shift(n)
            } else {
                bail!("give one of --to-earliest, --to-latest, --to-offset, --to-timestamp, --shift-by")
            };
            seek(ctx, &group, topic.as_deref(), &partition, target, dry_run)
        }
        GroupCmd::Delete { groups } => delete(ctx, &groups),
        GroupCmd::OffsetDelete {
            group,
            topic,
            partition,
        } => offset_delete(ctx, &group, &topic, &partition),
    }
}

fn fetch_groups(opts: &ConnectOpts, group: Option<&str>) -> Result<Vec<GroupSummary>> {
    let client = opts.metadata_client()?;
    // Reachability first, so an unreachable cluster gets the usual message.
    opts.metadata(&client, None)?;
    let list = client
        .client()
        .fetch_group_list(group, opts.timeout())
        .map_err(|e| anyhow!("cannot list groups: {e}"))?;
    Ok(list.groups().iter().map(GroupSummary::from).collect())
}

#[derive(Serialize, Clone)]
struct Member {
    id: String,
    client_id: String,
    host: String,
    /// topic → partitions
    assignment: BTreeMap<String, Vec<i32>>,
}

#[derive(Serialize, Clone)]
struct GroupSummary {
    group: String,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

impl From<&GroupInfo> for GroupSummary {
    fn from(g: &GroupInfo) -> Self {
        let consumer = g.protocol_type() == "consumer";
        GroupSummary {
            group: g.name().to_string(),
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            protocol: g.protocol().to_string(),
            members: g
                .members()
                .iter()
                .map(|m| Member {
                    id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    assignment: m
                        .assignment()
                        .filter(|_| consumer)
                        .map(decode_assignment)
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Decodes a consumer-protocol assignment (version i16, then the body).
fn decode_assignment(b: &[u8]) -> BTreeMap<String, Vec<i32>> {
    let mut buf = Bytes::copy_from_slice(b);
    if buf.remaining() < 2 {
        return BTreeMap::new();
    }
    let version = buf.get_i16();
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn list(ctx: &Ctx) -> Result<ExitCode> {
    let mut groups = fetch_groups(&ctx.connect, None)?;
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    if ctx.format.is_json() {
        let v: Vec<_> = groups
            .iter()
            .map(|g| json!({"group": g.group, "state": g.state, "protocol_type": g.protocol_type, "members": g.members.len()}))
            .collect();
        print_json(&v)?;
    } else {
        let mut t = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "MEMBERS"]);
        for g in &groups {
            t.row(vec![
                g.group.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
                g.members.len().to_string(),
            ]);
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end_offset: i64,
    lag: Option<i64>,
    member: Option<String>,
    client_id: Option<String>,
}

#[derive(Serialize)]
struct GroupDescription {
    #[serde(flatten)]
    summary: GroupSummary,
    partitions: Vec<PartitionLag>,
    total_lag: i64,
}

fn describe_one(opts: &ConnectOpts, group: &str) -> Result<GroupDescription> {
    let summary = fetch_groups(opts, Some(group))?
        .into_iter()
        .find(|g| g.group == group)
        .ok_or_else(|| anyhow!("unknown group '{group}'"))?;
    let committed = raw::offset_fetch_all(&opts.bootstrap(), group, opts.timeout())?;
    if summary.state == "Dead" && committed.is_empty() {
        bail!("unknown group '{group}'");
    }
    // Every partition either committed or assigned.
    let mut owner: BTreeMap<(String, i32), &Member> = BTreeMap::new();
    for m in &summary.members {
        for (t, ps) in &m.assignment {
            for &p in ps {
                owner.insert((t.clone(), p), m);
            }
        }
    }
    let mut keys: BTreeSet<(String, i32)> = owner.keys().cloned().collect();
    let committed: BTreeMap<(String, i32), i64> =
        committed.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
    keys.extend(committed.keys().cloned());
    let client = opts.metadata_client()?;
    let mut partitions = Vec::new();
    let mut total = 0;
    for (t, p) in keys {
        let high = client
            .fetch_watermarks(&t, p, opts.timeout())
            .map(|(_, h)| h)
            .unwrap_or(-1);
        let c = committed.get(&(t.clone(), p)).copied();
        let lag = c.filter(|_| high >= 0).map(|c| (high - c).max(0));
        total += lag.unwrap_or(0);
        let m = owner.get(&(t.clone(), p));
        partitions.push(PartitionLag {
            topic: t,
            partition: p,
            committed: c,
            log_end_offset: high,
            lag,
            member: m.map(|m| m.id.clone()),
            client_id: m.map(|m| m.client_id.clone()),
        });
    }
    Ok(GroupDescription {
        summary,
        partitions,
        total_lag: total,
    })
}

fn describe(ctx: &Ctx, groups: &[String]) -> Result<ExitCode> {
    let descs: Vec<GroupDescription> = groups
        .iter()
        .map(|g| describe_one(&ctx.connect, g))
        .collect::<Result<_>>()?;
    if ctx.format.is_json() {
        print_json(&descs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    for (i, d) in descs.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&format!(
            "GROUP {}  STATE {}  MEMBERS {}  TOTAL-LAG {}\n",
            d.summary.group,
            d.summary.state,
            d.summary.members.len(),
            d.total_lag
        ));
        let mut t = Table::new(&[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
            "CLIENT-ID",
        ]);
        let dash = || "-".to_string();
        for p in &d.partitions {
            t.row(vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed.map_or_else(dash, |o| o.to_string()),
                p.log_end_offset.to_string(),
                p.lag.map_or_else(dash, |l| l.to_string()),
                p.member.clone().unwrap_or_else(dash),
                p.client_id.clone().unwrap_or_else(dash),
            ]);
        }
        s.push_str(&t.render());
    }
    use std::io::Write;
    std::io::stdout().lock().write_all(s.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
    Shift(i64),
}

fn seek(
    ctx: &Ctx,
    group: &str,
    topic: Option<&str>,
    only: &[i32],
    target: Target,
    dry_run: bool,
) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let summary = fetch_groups(opts, Some(group))?.into_iter().next();
    if let Some(s) = &summary {
        if !s.members.is_empty() {
            bail!(
                "group '{group}' has {} active members; stop its consumers before resetting offsets",
                s.members.len()
            );
        }
    }
    let committed: BTreeMap<(String, i32), i64> =
        raw::offset_fetch_all(&opts.bootstrap(), group, opts.timeout())?
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect();
    let client = opts.metadata_client()?;
    let mut parts: Vec<(String, i32)> = match topic {
        Some(t) => {
            let n = kafka::require_topic(opts, &client, t)?;
            if only.is_empty() {
                (0..n as i32).map(|p| (t.to_string(), p)).collect()
            } else {
                for &p in only {
                    if p < 0 || p as usize >= n {
                        bail!("topic '{t}' has no partition {p} (it has {n})");
                    }
                }
                only.iter().map(|&p| (t.to_string(), p)).collect()
            }
        }
        None => committed.keys().cloned().collect(),
    };
    parts.sort();
    if parts.is_empty() {
        bail!("group '{group}' has no committed offsets; name a --topic");
    }
    let consumer: BaseConsumer = opts
        .config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| anyhow!("cannot create the consumer: {e}"))?;
    let by_time = if let Target::Timestamp(ts) = target {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &parts {
            tpl.add_partition_offset(t, *p, Offset::Offset(ts))?;
        }
        Some(
            consumer
                .offsets_for_times(tpl, opts.timeout())
                .map_err(|e| anyhow!("cannot look up offsets by time: {e}"))?,
        )
    } else {
        None
    };
    let mut rows = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &parts {
        let (low, high) = consumer
            .fetch_watermarks(t, *p, opts.timeout())
            .map_err(|e| anyhow!("cannot read the offsets of {t}-{p}: {e}"))?;
        let old = committed.get(&(t.clone(), *p)).copied();
        let new = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offset(o) => o.clamp(low, high),
            Target::Shift(n) => (old.unwrap_or(low) + n).clamp(low, high),
            Target::Timestamp(_) => {
                let e = by_time
                    .as_ref()
                    .and_then(|l| l.find_partition(t, *p))
                    .map(|e| e.offset());
                match e {
                    Some(Offset::Offset(o)) if o >= 0 => o,
                    _ => high,
                }
            }
        };
        tpl.add_partition_offset(t, *p, Offset::Offset(new))?;
        rows.push((t.clone(), *p, old, new));
    }
    if !dry_run {
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| anyhow!("cannot commit the new offsets of group '{group}': {e}"))?;
    }
    if ctx.format.is_json() {
        let v: Vec<_> = rows
            .iter()
            .map(|(t, p, o, n)| json!({"topic": t, "partition": p, "old": o, "new": n}))
            .collect();
        print_json(&json!({"group": group, "dry_run": dry_run, "partitions": v}))?;
    } else {
        let mut tb = Table::new(&["TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET"]);
        for (t, p, o, n) in rows {
            tb.row(vec![
                t,
                p.to_string(),
                o.map_or_else(|| "-".to_string(), |o| o.to_string()),
                n.to_string(),
            ]);
        }
        tb.print()?;
        if dry_run {
            println!("(dry run: nothing committed)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(ctx: &Ctx, groups: &[String]) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let admin = opts.admin()?;
    let names: Vec<&str> = groups.iter().map(|s| s.as_str()).collect();
    let res = kafka::block_on(admin.delete_groups(&names, &opts.admin_options()))?
        .map_err(|e| opts.unreachable(e))?;
    let mut done = Vec::new();
    for r in res {
        match r {
            Ok(g) => done.push(g),
            Err((g, code)) => bail!("cannot delete group '{g}': {code}"),
        }
    }
    if ctx.format.is_json() {
        print_json(&json!({ "deleted": done }))?;
    } else {
        for g in done {
            println!("deleted group '{g}'");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn offset_delete(ctx: &Ctx, group: &str, topic: &str, only: &[i32]) -> Result<ExitCode> {
    let opts = &ctx.connect;
    let client = opts.metadata_client()?;
    let n = kafka::require_topic(opts, &client, topic)?;
    let parts: Vec<i32> = if only.is_empty() {
        (0..n as i32).collect()
    } else {
        only.to_vec()
    };
    let res = raw::offset_delete(&opts.bootstrap(), group, topic, &parts, opts.timeout())?;
    if let Some((p, Some(e))) = res.iter().find(|(_, e)| e.is_some()) {
        bail!("cannot delete the offset of group '{group}' on {topic}-{p}: {e}");
    }
    if ctx.format.is_json() {
        print_json(&json!({"group": group, "topic": topic, "partitions": parts}))?;
    } else {
        println!(
            "deleted the offsets of group '{group}' on {} partitions of '{topic}'",
            parts.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
