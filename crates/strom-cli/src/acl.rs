//! `strom acl add|list|remove`: ACLs with kafka-acls' flags
//! (`--allow-principal User:alice --operation Read --topic a
//! --resource-pattern-type prefixed`, `--group g`, `--cluster`,
//! `--transactional-id t`, `--deny-principal …`, `--allow-host …`).
//! librdkafka's admin API has ACL calls but the `rdkafka` crate does not
//! expose them, so this uses the thin client in `raw`.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use strom_broker::security::acl::{
    AclOperation, PatternType, PermissionType, ResourceType, CLUSTER_NAME, WILDCARD,
};

use crate::output::{print_json, Table};
use crate::raw::RawClient;
use crate::Ctx;

/// The version of CreateAcls/DescribeAcls/DeleteAcls spoken.
const VERSION: i16 = 3;

#[derive(Subcommand)]
pub enum AclCmd {
    /// Add ACLs: every principal × host × operation on every resource given.
    Add(AclArgs),
    /// List ACLs (all, or those on the resources / of the principal given).
    List(AclArgs),
    /// Remove the ACLs matching the flags (unset flags match anything).
    Remove(AclArgs),
}

/// kafka-acls' flags.
#[derive(Args)]
pub struct AclArgs {
    /// Principal to allow (`User:alice`), repeatable.
    #[arg(long = "allow-principal")]
    allow_principals: Vec<String>,
    /// Principal to deny, repeatable.
    #[arg(long = "deny-principal")]
    deny_principals: Vec<String>,
    /// Principal to list ACLs of (`list` only).
    #[arg(long)]
    principal: Option<String>,
    /// Host (IP) the allow entries apply to (default `*`).
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Host (IP) the deny entries apply to (default `*`).
    #[arg(long = "deny-host")]
    deny_hosts: Vec<String>,
    /// Operation, repeatable: Read, Write, Create, Delete, Alter, Describe,
    /// ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, All.
    #[arg(long = "operation")]
    operations: Vec<String>,
    /// Topic name (`*` for all), repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// Consumer group id (`*` for all), repeatable.
    #[arg(long)]
    group: Vec<String>,
    /// The cluster resource.
    #[arg(long)]
    cluster: bool,
    /// Transactional id (`*` for all), repeatable.
    #[arg(long = "transactional-id")]
    transactional_id: Vec<String>,
    /// Delegation token id, repeatable.
    #[arg(long = "delegation-token")]
    delegation_token: Vec<String>,
    /// literal (default for add/remove), prefixed; for list also any
    /// (default) and match.
    #[arg(long = "resource-pattern-type")]
    pattern_type: Option<String>,
    /// kafka-acls' shorthand (add): Write, Describe, Create on the topics,
    /// Write and Describe on the transactional ids.
    #[arg(long)]
    producer: bool,
    /// With --producer: IdempotentWrite on the cluster too.
    #[arg(long)]
    idempotent: bool,
    /// kafka-acls' shorthand (add): Read and Describe on the topics, Read on
    /// the groups.
    #[arg(long)]
    consumer: bool,
}

fn parse<T>(what: &str, v: &str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
    f(v).ok_or_else(|| anyhow!("unknown {what} {v:?}"))
}

impl AclArgs {
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let mut out = Vec::new();
        let mut add = |t: ResourceType, names: &[String]| {
            out.extend(names.iter().map(|n| (t, n.clone())));
        };
        add(ResourceType::Topic, &self.topic);
        add(ResourceType::Group, &self.group);
        add(ResourceType::TransactionalId, &self.transactional_id);
        add(ResourceType::DelegationToken, &self.delegation_token);
        if self.cluster {
            out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        out
    }

    fn pattern_type(&self, default: PatternType) -> Result<PatternType> {
        match &self.pattern_type {
            None => Ok(default),
            Some(p) => parse("resource pattern type", p, PatternType::parse),
        }
    }

    fn operations(&self) -> Result<Vec<AclOperation>> {
        self.operations
            .iter()
            .map(|o| parse("operation", o, AclOperation::parse))
            .collect()
    }

    /// (principal, host, permission) entries from the allow/deny flags.
    fn entries(&self) -> Vec<(String, String, PermissionType)> {
        let hosts = |h: &[String]| {
            if h.is_empty() {
                vec![WILDCARD.to_string()]
            } else {
                h.to_vec()
            }
        };
        let mut out = Vec::new();
        for (principals, hs, perm) in [
            (
                &self.allow_principals,
                &self.allow_hosts,
                PermissionType::Allow,
            ),
            (
                &self.deny_principals,
                &self.deny_hosts,
                PermissionType::Deny,
            ),
        ] {
            for p in principals {
                for h in hosts(hs) {
                    out.push((p.clone(), h, perm));
                }
            }
        }
        out
    }
}

fn error_text(code: i16, message: Option<&StrBytes>) -> Option<String> {
    if code == 0 {
        return None;
    }
    let name = kafka_protocol::error::ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    Some(
        match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
            Some(m) => format!("{name}: {m}"),
            None => name,
        },
    )
}

pub fn run(ctx: &Ctx, cmd: AclCmd) -> Result<ExitCode> {
    // SASL (and TLS) as the -X properties say: ACLs are usually managed by a
    // super user over an authenticated listener.
    let mut c = crate::raw::connect(
        &ctx.connect.bootstrap(),
        &ctx.connect.props,
        ctx.connect.timeout(),
    )?;
    match cmd {
        AclCmd::Add(a) => add(ctx, &mut c, &a),
        AclCmd::List(a) => list(ctx, &mut c, &a),
        AclCmd::Remove(a) => remove(ctx, &mut c, &a),
    }
}

/// What `add` grants: (resource type, name, operation) — every operation on
/// every resource, or kafka-acls' `--producer` / `--consumer` sets.
fn add_targets(a: &AclArgs) -> Result<Vec<(ResourceType, String, AclOperation)>> {
    use AclOperation as O;
    let mut out = Vec::new();
    if a.producer || a.consumer {
        if a.topic.is_empty() {
            bail!("--producer and --consumer need --topic");
        }
        if a.consumer && a.group.is_empty() {
            bail!("--consumer needs --group");
        }
        let mut grant = |t: ResourceType, names: &[String], ops: &[O]| {
            for n in names {
                out.extend(ops.iter().map(|&op| (t, n.clone(), op)));
            }
        };
        if a.producer {
            grant(
                ResourceType::Topic,
                &a.topic,
                &[O::Write, O::Describe, O::Create],
            );
            grant(
                ResourceType::TransactionalId,
                &a.transactional_id,
                &[O::Write, O::Describe],
            );
            if a.idempotent {
                grant(
                    ResourceType::Cluster,
                    &[CLUSTER_NAME.to_string()],
                    &[O::IdempotentWrite],
                );
            }
        }
        if a.consumer {
            grant(ResourceType::Topic, &a.topic, &[O::Read, O::Describe]);
            grant(ResourceType::Group, &a.group, &[O::Read]);
        }
        return Ok(out);
    }
    let resources = a.resources();
    let ops = a.operations()?;
    if resources.is_empty() {
        bail!("name a resource: --topic, --group, --cluster, --transactional-id or --delegation-token");
    }
    if ops.is_empty() {
        bail!("give at least one --operation (or --producer / --consumer)");
    }
    for (rt, name) in resources {
        out.extend(ops.iter().map(|&op| (rt, name.clone(), op)));
    }
    Ok(out)
}

fn add(ctx: &Ctx, c: &mut RawClient, a: &AclArgs) -> Result<ExitCode> {
    let targets = add_targets(a)?;
    let entries = a.entries();
    if entries.is_empty() {
        bail!("give --allow-principal and/or --deny-principal");
    }
    let pattern = a.pattern_type(PatternType::Literal)?;
    let mut creations = Vec::new();
    let mut described = Vec::new();
    for (rt, name, op) in &targets {
        for (principal, host, perm) in &entries {
            creations.push(
                AclCreation::default()
                    .with_resource_type(rt.code())
                    .with_resource_name(StrBytes::from_string(name.clone()))
                    .with_resource_pattern_type(pattern.code())
                    .with_principal(StrBytes::from_string(principal.clone()))
                    .with_host(StrBytes::from_string(host.clone()))
                    .with_operation(op.code())
                    .with_permission_type(perm.code()),
            );
            described.push(format!(
                "{} {} {}:{name} for {principal} from {host}: {}",
                perm.name(),
                op.name(),
                rt.name(),
                pattern.name()
            ));
        }
    }
    let resp = c.call(
        &CreateAclsRequest::default().with_creations(creations),
        VERSION,
    )?;
    let mut failed = 0;
    let mut results = Vec::new();
    for (r, what) in resp.results.iter().zip(&described) {
        let error = error_text(r.error_code, r.error_message.as_ref());
        if let Some(e) = &error {
            failed += 1;
            eprintln!("strom: cannot add {what}: {e}");
        }
        results.push(json!({"acl": what, "error": error}));
    }
    if ctx.format.is_json() {
        print_json(&results)?;
    } else {
        println!(
            "added {} ACL(s){}",
            results.len() - failed,
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn list(ctx: &Ctx, c: &mut RawClient, a: &AclArgs) -> Result<ExitCode> {
    let resources = a.resources();
    let pattern = a.pattern_type(PatternType::Any)?;
    let ops = a.operations()?;
    if resources.len() > 1 || ops.len() > 1 {
        bail!("list takes at most one resource and one --operation");
    }
    let principal = a
        .principal
        .clone()
        .or_else(|| a.allow_principals.first().cloned())
        .or_else(|| a.deny_principals.first().cloned());
    let (rt, name) = match resources.first() {
        Some((t, n)) => (*t, Some(n.clone())),
        None => (ResourceType::Any, None),
    };
    let req = DescribeAclsRequest::default()
        .with_resource_type_filter(rt.code())
        .with_resource_name_filter(name.map(StrBytes::from_string))
        .with_pattern_type_filter(pattern.code())
        .with_principal_filter(principal.map(StrBytes::from_string))
        .with_host_filter(None)
        .with_operation(ops.first().copied().unwrap_or(AclOperation::Any).code())
        .with_permission_type(PermissionType::Any.code());
    let resp = c.call(&req, VERSION)?;
    if let Some(e) = error_text(resp.error_code, resp.error_message.as_ref()) {
        bail!("cannot list ACLs: {e}");
    }
    let mut rows = Vec::new();
    for r in &resp.resources {
        for acl in &r.acls {
            rows.push([
                ResourceType::from_code(r.resource_type).name().to_string(),
                r.resource_name.to_string(),
                PatternType::from_code(r.pattern_type).name().to_string(),
                acl.principal.to_string(),
                acl.host.to_string(),
                AclOperation::from_code(acl.operation).name().to_string(),
                PermissionType::from_code(acl.permission_type)
                    .name()
                    .to_string(),
            ]);
        }
    }
    if ctx.format.is_json() {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"resource_type": r[0], "resource_name": r[1], "pattern_type": r[2],
                    "principal": r[3], "host": r[4], "operation": r[5], "permission": r[6]})
            })
            .collect();
        print_json(&v)?;
    } else {
        let mut t = Table::new(&[
            "RESOURCE_TYPE",
            "NAME",
            "PATTERN",
            "PRINCIPAL",
            "HOST",
            "OPERATION",
            "PERMISSION",
        ]);
        for r in rows {
            t.row(r.to_vec());
        }
        t.print()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &Ctx, c: &mut RawClient, a: &AclArgs) -> Result<ExitCode> {
    let resources = a.resources();
    if resources.is_empty() {
        bail!("name a resource: --topic, --group, --cluster, --transactional-id or --delegation-token");
    }
    let pattern = a.pattern_type(PatternType::Literal)?;
    let ops = a.operations()?;
    let ops: Vec<AclOperation> = if ops.is_empty() {
        vec![AclOperation::Any]
    } else {
        ops
    };
    // With no principal, every entry on the resource goes (as kafka-acls).
    let entries: Vec<(Option<String>, Option<String>, PermissionType)> = {
        let e = a.entries();
        if e.is_empty() {
            vec![(None, None, PermissionType::Any)]
        } else {
            let hosts_given = !a.allow_hosts.is_empty() || !a.deny_hosts.is_empty();
            e.into_iter()
                .map(|(p, h, perm)| (Some(p), hosts_given.then_some(h), perm))
                .collect()
        }
    };
    let mut filters = Vec::new();
    for (rt, name) in &resources {
        for (principal, host, perm) in &entries {
            for op in &ops {
                filters.push(
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(rt.code())
                        .with_resource_name_filter(Some(StrBytes::from_string(name.clone())))
                        .with_pattern_type_filter(pattern.code())
                        .with_principal_filter(principal.clone().map(StrBytes::from_string))
                        .with_host_filter(host.clone().map(StrBytes::from_string))
                        .with_operation(op.code())
                        .with_permission_type(perm.code()),
                );
            }
        }
    }
    let resp = c.call(&DeleteAclsRequest::default().with_filters(filters), VERSION)?;
    let mut removed = Vec::new();
    let mut failed = 0;
    for r in &resp.filter_results {
        if let Some(e) = error_text(r.error_code, r.error_message.as_ref()) {
            failed += 1;
            eprintln!("strom: cannot remove ACLs: {e}");
            continue;
        }
        for m in &r.matching_acls {
            removed.push(json!({
                "resource_type": ResourceType::from_code(m.resource_type).name(),
                "resource_name": m.resource_name.as_str(),
                "pattern_type": PatternType::from_code(m.pattern_type).name(),
                "principal": m.principal.as_str(),
                "host": m.host.as_str(),
                "operation": AclOperation::from_code(m.operation).name(),
                "permission": PermissionType::from_code(m.permission_type).name(),
            }));
        }
    }
    if ctx.format.is_json() {
        print_json(&removed)?;
    } else {
        println!("removed {} ACL(s)", removed.len());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
