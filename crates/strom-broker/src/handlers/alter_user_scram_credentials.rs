//! AlterUserScramCredentials (key 51): upsert or delete SCRAM credentials.
//! The client sends the salted password (PBKDF2 done client-side, as
//! kafka-configs and `strom user` do); the broker keeps only the derived
//! stored and server keys, in the metadata image.
//!
//! Validation as Kafka's controller does it: one operation per user per
//! request (DUPLICATE_RESOURCE), a non-empty user name and known mechanism
//! (UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM), 4096..=16384
//! iterations (UNACCEPTABLE_CREDENTIAL), deleting only what exists
//! (RESOURCE_NOT_FOUND). Users whose operation is valid are changed
//! together in one metadata update; the others not at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};

use super::RequestContext;
use crate::broker::Broker;
use crate::security::acl::AclOperation;
use crate::security::sasl::scram::{
    ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS,
};

enum Op {
    Delete(ScramMechanism),
    Upsert(ScramMechanism, ScramCredential),
}

type Failure = (ResponseError, &'static str);

fn mechanism(user: &str, code: i8) -> Result<ScramMechanism, Failure> {
    if user.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "Username must not be empty",
        ));
    }
    ScramMechanism::from_code(code).ok_or((
        ResponseError::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism",
    ))
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Kafka: ALTER on the cluster, else every user's result says so.
    if !ctx.authorize_cluster(broker, AclOperation::Alter) {
        let mut users: Vec<&StrBytes> = Vec::new();
        let names = req.deletions.iter().map(|d| &d.name);
        for u in names.chain(req.upsertions.iter().map(|u| &u.name)) {
            if !users.contains(&u) {
                users.push(u);
            }
        }
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .into_iter()
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(u.clone())
                        .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                })
                .collect(),
        );
    }
    let image = broker.metadata.image();
    // Users in the order they first appear, each with its one operation or
    // the reason it is refused.
    let mut order: Vec<String> = Vec::new();
    let mut ops: BTreeMap<String, Result<Op, Failure>> = BTreeMap::new();
    let duplicate = (
        ResponseError::DuplicateResource,
        "A user credential cannot be altered twice in the same request",
    );
    let mut add = |user: String, op: Result<Op, Failure>| match ops.get_mut(&user) {
        Some(existing) => *existing = Err(duplicate),
        None => {
            order.push(user.clone());
            ops.insert(user, op);
        }
    };
    for d in &req.deletions {
        let user = d.name.to_string();
        let op = mechanism(&user, d.mechanism).and_then(|m| {
            if image.scram_credential(&user, m).is_some() {
                Ok(Op::Delete(m))
            } else {
                Err((
                    ResponseError::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist",
                ))
            }
        });
        add(user, op);
    }
    for u in &req.upsertions {
        let user = u.name.to_string();
        let op = mechanism(&user, u.mechanism).and_then(|m| {
            if u.iterations < MIN_ITERATIONS {
                Err((ResponseError::UnacceptableCredential, "Too few iterations"))
            } else if u.iterations > MAX_ITERATIONS {
                Err((ResponseError::UnacceptableCredential, "Too many iterations"))
            } else if u.salt.is_empty() || u.salted_password.is_empty() {
                Err((
                    ResponseError::UnacceptableCredential,
                    "Salt and salted password must not be empty",
                ))
            } else {
                Ok(Op::Upsert(
                    m,
                    ScramCredential::from_salted_password(
                        m,
                        &u.salt,
                        &u.salted_password,
                        u.iterations,
                    ),
                ))
            }
        });
        add(user, op);
    }
    let valid: Vec<(&String, &Op)> = ops
        .iter()
        .filter_map(|(u, op)| op.as_ref().ok().map(|op| (u, op)))
        .collect();
    let mut stored = Ok(());
    if !valid.is_empty() {
        stored = broker
            .metadata
            .update_scram_credentials(|creds| {
                for (user, op) in &valid {
                    match op {
                        Op::Delete(m) => {
                            if let Some(by_m) = creds.get_mut(*user) {
                                by_m.remove(m);
                                if by_m.is_empty() {
                                    creds.remove(*user);
                                }
                            }
                        }
                        Op::Upsert(m, c) => {
                            creds
                                .entry((*user).clone())
                                .or_default()
                                .insert(*m, c.clone());
                        }
                    }
                }
            })
            .map(|_| ());
    }
    if let Err(e) = &stored {
        warn!(error = %e, "cannot persist SCRAM credentials");
    }
    let results = order
        .iter()
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()));
            match (&ops[user], &stored) {
                (Err((e, message)), _) => r
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_static_str(message))),
                (Ok(_), Err(e)) => r
                    .with_error_code(ResponseError::UnknownServerError.code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                (Ok(op), Ok(())) => {
                    let (action, m) = match op {
                        Op::Delete(m) => ("deleted", m),
                        Op::Upsert(m, _) => ("upserted", m),
                    };
                    info!(
                        target: "strom::audit",
                        event = "scram_credential",
                        action,
                        user = %user,
                        mechanism = m.name(),
                        by = %ctx.principal,
                        peer = %ctx.peer,
                    );
                    r
                }
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
