//! `strom quota …`: client quotas (AlterClientQuotas /
//! DescribeClientQuotas), with `kafka-configs`' entity flags:
//! `--entity-type users|clients --entity-name x | --entity-default`, or the
//! shorthands `--user x`, `--user-defaults`, `--client x`,
//! `--client-defaults` (a user and a client together make one entity).
//! librdkafka's admin API has no client-quota calls, so this uses the thin
//! client in `raw` (authenticating with `-X sasl.*` where asked).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use crate::output::{print_json, Table};
use crate::Ctx;

#[derive(Subcommand)]
pub enum QuotaCmd {
    /// Set (`--add-config k=v,…`) or remove (`--delete-config k,…`) quotas
    /// of one entity. Keys: producer_byte_rate, consumer_byte_rate,
    /// request_percentage, controller_mutation_rate.
    Alter {
        #[command(flatten)]
        entity: EntityArgs,
        /// `key=value[,key=value…]`.
        #[arg(long = "add-config", value_name = "K=V,…")]
        add: Vec<String>,
        /// `key[,key…]`.
        #[arg(long = "delete-config", value_name = "K,…")]
        delete: Vec<String>,
        /// Check only; change nothing.
        #[arg(long)]
        validate_only: bool,
    },
    /// Configured quotas: all of them, or those of the entity given
    /// (`--entity-type users` alone: every user entity).
    Describe {
        #[command(flatten)]
        entity: EntityArgs,
    },
}

/// Which entity: kafka-configs' flags.
#[derive(Args, Default)]
pub struct EntityArgs {
    /// `users` or `clients`.
    #[arg(long = "entity-type")]
    entity_type: Option<String>,
    /// The user or client-id name.
    #[arg(long = "entity-name", conflicts_with = "entity_default")]
    entity_name: Option<String>,
    /// The default user or client-id.
    #[arg(long = "entity-default")]
    entity_default: bool,
    /// A user (principal name).
    #[arg(long, conflicts_with = "user_defaults")]
    user: Option<String>,
    /// The default user.
    #[arg(long)]
    user_defaults: bool,
    /// A client-id.
    #[arg(long, conflicts_with = "client_defaults")]
    client: Option<String>,
    /// The default client-id.
    #[arg(long)]
    client_defaults: bool,
}

/// An entity component: type, and name (`None` = default; for describe,
/// `Some(None)` with `any` = every name).
struct Component {
    ty: &'static str,
    name: Option<String>,
    any: bool,
}

impl EntityArgs {
    fn components(&self) -> Result<Vec<Component>> {
        let mut out = Vec::new();
        if let Some(t) = &self.entity_type {
            let ty = match t.as_str() {
                "users" | "user" => "user",
                "clients" | "client" | "client-id" => "client-id",
                other => bail!("unknown --entity-type {other} (users or clients)"),
            };
            out.push(Component {
                ty,
                name: self.entity_name.clone(),
                any: self.entity_name.is_none() && !self.entity_default,
            });
        } else if self.entity_name.is_some() || self.entity_default {
            bail!("--entity-name/--entity-default need --entity-type");
        }
        let mut push = |ty: &'static str, name: &Option<String>, default: bool| -> Result<()> {
            if name.is_none() && !default {
                return Ok(());
            }
            if out.iter().any(|c| c.ty == ty) {
                bail!("{ty} given twice");
            }
            out.push(Component {
                ty,
                name: name.clone(),
                any: false,
            });
            Ok(())
        };
        push("user", &self.user, self.user_defaults)?;
        push("client-id", &self.client, self.client_defaults)?;
        // the wire order: user before client-id
        out.sort_by_key(|c| c.ty != "user");
        Ok(out)
    }
}

fn entity_label(components: &[(String, Option<String>)]) -> String {
    components
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(",")
}

fn error_name(code: i16) -> String {
    kafka_protocol::error::ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"))
}

fn parse_ops(add: &[String], delete: &[String]) -> Result<Vec<OpData>> {
    let mut ops = Vec::new();
    for kv in add
        .iter()
        .flat_map(|a| a.split(','))
        .filter(|s| !s.trim().is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--add-config expects key=value, got {kv:?}"))?;
        let value: f64 = v
            .trim()
            .parse()
            .map_err(|_| anyhow!("the value of {} is not a number: {v:?}", k.trim()))?;
        ops.push(
            OpData::default()
                .with_key(StrBytes::from_string(k.trim().to_string()))
                .with_value(value),
        );
    }
    for k in delete
        .iter()
        .flat_map(|d| d.split(','))
        .filter(|s| !s.trim().is_empty())
    {
        ops.push(
            OpData::default()
                .with_key(StrBytes::from_string(k.trim().to_string()))
                .with_remove(true),
        );
    }
    Ok(ops)
}

pub fn run(ctx: &Ctx, cmd: QuotaCmd) -> Result<ExitCode> {
    // SASL (and TLS) as the -X properties say: with an authorizer, quotas
    // are managed by a user with ALTER_CONFIGS on the cluster.
    let mut c = crate::raw::connect(
        &ctx.connect.bootstrap(),
        &ctx.connect.props,
        ctx.connect.timeout(),
    )?;
    match cmd {
        QuotaCmd::Alter {
            entity,
            add,
            delete,
            validate_only,
        } => {
            let components = entity.components()?;
            if components.is_empty() {
                bail!("name an entity: --entity-type users|clients with --entity-name or --entity-default, or --user/--client");
            }
            if components.iter().any(|c| c.any) {
                bail!("alter needs --entity-name or --entity-default");
            }
            let ops = parse_ops(&add, &delete)?;
            if ops.is_empty() {
                bail!("nothing to change: give --add-config and/or --delete-config");
            }
            let req = AlterClientQuotasRequest::default()
                .with_validate_only(validate_only)
                .with_entries(vec![EntryData::default()
                    .with_entity(
                        components
                            .iter()
                            .map(|c| {
                                EntityData::default()
                                    .with_entity_type(StrBytes::from_static_str(c.ty))
                                    .with_entity_name(c.name.clone().map(StrBytes::from_string))
                            })
                            .collect(),
                    )
                    .with_ops(ops)]);
            let resp = c.call(&req, 1)?;
            let label = entity_label(
                &components
                    .iter()
                    .map(|c| (c.ty.to_string(), c.name.clone()))
                    .collect::<Vec<_>>(),
            );
            for e in &resp.entries {
                if e.error_code != 0 {
                    let msg = e.error_message.as_deref().unwrap_or("");
                    bail!(
                        "cannot alter the quotas of {label}: {}: {msg}",
                        error_name(e.error_code)
                    );
                }
            }
            if ctx.format.is_json() {
                print_json(&json!({"entity": label, "validate_only": validate_only}))?;
            } else if validate_only {
                println!("quotas of {label} are valid (nothing changed)");
            } else {
                println!("quotas of {label} altered");
            }
        }
        QuotaCmd::Describe { entity } => {
            let components = entity.components()?;
            let strict = !components.is_empty();
            let req = DescribeClientQuotasRequest::default()
                .with_strict(strict)
                .with_components(
                    components
                        .iter()
                        .map(|c| {
                            let (match_type, m) = match (&c.name, c.any) {
                                (_, true) => (2, None),
                                (None, false) => (1, None),
                                (Some(n), false) => (0, Some(StrBytes::from_string(n.clone()))),
                            };
                            ComponentData::default()
                                .with_entity_type(StrBytes::from_static_str(c.ty))
                                .with_match_type(match_type)
                                .with_match(m)
                        })
                        .collect(),
                );
            let resp = c.call(&req, 1)?;
            if resp.error_code != 0 {
                bail!(
                    "{}: {}",
                    error_name(resp.error_code),
                    resp.error_message.as_deref().unwrap_or("")
                );
            }
            let mut rows = Vec::new();
            for e in resp.entries.unwrap_or_default() {
                let entity: Vec<(String, Option<String>)> = e
                    .entity
                    .iter()
                    .map(|c| {
                        (
                            c.entity_type.to_string(),
                            c.entity_name.as_ref().map(|n| n.to_string()),
                        )
                    })
                    .collect();
                let values: Vec<(String, f64)> = e
                    .values
                    .iter()
                    .map(|v| (v.key.to_string(), v.value))
                    .collect();
                rows.push((entity, values));
            }
            if ctx.format.is_json() {
                print_json(
                    &rows
                        .iter()
                        .map(|(entity, values)| {
                            json!({
                                "entity": entity.iter().map(|(t, n)| json!({"type": t, "name": n})).collect::<Vec<_>>(),
                                "quotas": values.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                            })
                        })
                        .collect::<Vec<_>>(),
                )?;
            } else {
                let mut t = Table::new(&["ENTITY", "QUOTAS"]);
                for (entity, values) in &rows {
                    t.row(vec![
                        entity_label(entity),
                        values
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]);
                }
                t.print()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
