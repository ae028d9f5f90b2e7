//! `strom user …`: SCRAM users (AlterUserScramCredentials /
//! DescribeUserScramCredentials), like `kafka-configs --entity-type users
//! --alter --add-config 'SCRAM-SHA-512=[password=…]'`.
//!
//! The password never leaves this process: as Kafka's tools do, the CLI
//! picks a random salt and sends the PBKDF2-salted password. librdkafka's
//! admin API has no SCRAM calls, so this uses the thin client in `raw`,
//! over PLAINTEXT or SASL_PLAINTEXT (`-X security.protocol=SASL_PLAINTEXT
//! -X sasl.mechanism=PLAIN -X sasl.username=admin -X sasl.password=…`).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use clap::Subcommand;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use strom_broker::security::sasl::scram::ScramMechanism;

use crate::output::{print_json, Table};
use crate::raw;
use crate::Ctx;

#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a SCRAM user, or replace its password.
    Create {
        /// The user name (the principal is `User:<name>`).
        #[arg(long)]
        name: String,
        /// The password (or set STROM_USER_PASSWORD).
        #[arg(long, env = "STROM_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both.
        #[arg(long = "mechanism", default_value = "SCRAM-SHA-512")]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations (Kafka accepts 4096..=16384).
        #[arg(long, default_value_t = 8192)]
        iterations: i32,
    },
    /// Delete a user's SCRAM credentials (all its mechanisms unless given).
    Delete {
        #[arg(long)]
        name: String,
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
    },
    /// SCRAM users and their mechanisms (never the credentials).
    List {
        /// Only these users.
        names: Vec<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: UserCmd) -> Result<ExitCode> {
    let mut c = raw::connect(
        &ctx.connect.bootstrap(),
        &ctx.connect.props,
        ctx.connect.timeout(),
    )?;
    match cmd {
        UserCmd::Create {
            name,
            password,
            mechanisms,
            iterations,
        } => {
            if password.is_empty() {
                bail!("the password must not be empty");
            }
            // One request per mechanism: Kafka refuses two changes of one
            // user in one request (DUPLICATE_RESOURCE).
            for m in parse_mechanisms(&mechanisms)? {
                let mut salt = [0u8; 32];
                getrandom::fill(&mut salt).map_err(|e| anyhow!("no random source: {e}"))?;
                let salted =
                    m.salted_password(password.as_bytes(), &salt, iterations.max(1) as u32);
                let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_mechanism(m.code())
                        .with_iterations(iterations)
                        .with_salt(Bytes::copy_from_slice(&salt))
                        .with_salted_password(Bytes::from(salted)),
                ]);
                check(
                    c.call(&req, 0)?
                        .results
                        .iter()
                        .map(|r| (r.error_code, &r.error_message)),
                )
                .map_err(|e| anyhow!("cannot set the {} credential of {name}: {e}", m.name()))?;
                if !ctx.format.is_json() {
                    println!("{} credential of user {name} set", m.name());
                }
            }
            if ctx.format.is_json() {
                print_json(&json!({"user": name, "mechanisms": mechanisms}))?;
            }
        }
        UserCmd::Delete { name, mechanisms } => {
            let mechanisms = if mechanisms.is_empty() {
                let d = c.call(
                    &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                        UserName::default().with_name(StrBytes::from_string(name.clone())),
                    ])),
                    0,
                )?;
                let r = d
                    .results
                    .first()
                    .ok_or_else(|| anyhow!("no answer for {name}"))?;
                check([(r.error_code, &r.error_message)].into_iter())
                    .map_err(|e| anyhow!("user {name}: {e}"))?;
                r.credential_infos
                    .iter()
                    .filter_map(|i| ScramMechanism::from_code(i.mechanism))
                    .collect()
            } else {
                parse_mechanisms(&mechanisms)?
            };
            for m in mechanisms {
                let req = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                    ScramCredentialDeletion::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_mechanism(m.code()),
                ]);
                check(
                    c.call(&req, 0)?
                        .results
                        .iter()
                        .map(|r| (r.error_code, &r.error_message)),
                )
                .map_err(|e| anyhow!("cannot delete the {} credential of {name}: {e}", m.name()))?;
                if !ctx.format.is_json() {
                    println!("{} credential of user {name} deleted", m.name());
                }
            }
        }
        UserCmd::List { names } => {
            let users = (!names.is_empty()).then(|| {
                names
                    .iter()
                    .map(|n| UserName::default().with_name(StrBytes::from_string(n.clone())))
                    .collect()
            });
            let d = c.call(
                &DescribeUserScramCredentialsRequest::default().with_users(users),
                0,
            )?;
            check([(d.error_code, &d.error_message)].into_iter())?;
            let mut rows = Vec::new();
            for r in &d.results {
                check([(r.error_code, &r.error_message)].into_iter())
                    .map_err(|e| anyhow!("user {}: {e}", r.user.as_str()))?;
                for i in &r.credential_infos {
                    let m = ScramMechanism::from_code(i.mechanism).map_or_else(
                        || format!("UNKNOWN({})", i.mechanism),
                        |m| m.name().to_string(),
                    );
                    rows.push((r.user.to_string(), m, i.iterations));
                }
            }
            if ctx.format.is_json() {
                print_json(
                    &rows
                        .iter()
                        .map(|(u, m, i)| json!({"user": u, "mechanism": m, "iterations": i}))
                        .collect::<Vec<_>>(),
                )?;
            } else {
                let mut t = Table::new(&["USER", "MECHANISM", "ITERATIONS"]);
                for (u, m, i) in rows {
                    t.row(vec![u, m, i.to_string()]);
                }
                t.print()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_mechanisms(names: &[String]) -> Result<Vec<ScramMechanism>> {
    let mut out = Vec::new();
    for n in names {
        let m = ScramMechanism::parse(n).ok_or_else(|| {
            anyhow!("unknown SCRAM mechanism {n} (SCRAM-SHA-256 or SCRAM-SHA-512)")
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

fn check<'a>(results: impl Iterator<Item = (i16, &'a Option<StrBytes>)>) -> Result<()> {
    for (code, message) in results {
        if code != 0 {
            let name = kafka_protocol::error::ResponseError::try_from_code(code)
                .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
            match message {
                Some(m) => bail!("{name}: {m}"),
                None => bail!("{name}"),
            }
        }
    }
    Ok(())
}

/// The client side of a SCRAM exchange (RFC 5802), for authenticating the
/// CLI's own connection; `step` sends a token and returns the answer.
pub fn scram_client(
    mechanism: &str,
    user: &str,
    password: &str,
    step: &mut dyn FnMut(Vec<u8>) -> Result<Bytes>,
) -> Result<()> {
    let m = ScramMechanism::parse(mechanism).ok_or_else(|| anyhow!("not SCRAM: {mechanism}"))?;
    let mut nonce = [0u8; 18];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("no random source: {e}"))?;
    let client_nonce = B64.encode(nonce);
    let bare = format!(
        "n={},r={client_nonce}",
        user.replace('=', "=3D").replace(',', "=2C")
    );
    let server_first = String::from_utf8(step(format!("n,,{bare}").into_bytes())?.to_vec())?;
    let mut nonce = None;
    let mut salt = None;
    let mut iterations = None;
    for attr in server_first.split(',') {
        if let Some(v) = attr.strip_prefix("r=") {
            nonce = Some(v.to_string());
        } else if let Some(v) = attr.strip_prefix("s=") {
            salt = B64.decode(v).ok();
        } else if let Some(v) = attr.strip_prefix("i=") {
            iterations = v.parse::<u32>().ok();
        }
    }
    let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
        bail!("invalid SCRAM server-first message");
    };
    if !nonce.starts_with(&client_nonce) || iterations < 4096 {
        bail!("the server's SCRAM nonce or iteration count is not acceptable");
    }
    let salted = m.salted_password(password.as_bytes(), &salt, iterations);
    let client_key = m.hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={nonce}");
    let auth = format!("{bare},{server_first},{without_proof}");
    let signature = m.hmac(&m.hash(&client_key), auth.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_final = step(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())?;
    let expected = m.hmac(&m.hmac(&salted, b"Server Key"), auth.as_bytes());
    if server_final.as_ref() != format!("v={}", B64.encode(expected)).as_bytes() {
        bail!(
            "the server's SCRAM signature does not match: not the broker holding this credential"
        );
    }
    Ok(())
}
