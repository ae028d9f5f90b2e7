//! DescribeUserScramCredentials (key 50): which SCRAM mechanisms (and
//! iteration counts) each user has, never the credentials themselves.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::metadata::ScramCredentials;
use crate::security::acl::AclOperation;

fn described(user: &str, creds: &ScramCredentials) -> Option<DescribeUserScramCredentialsResult> {
    let by_mechanism = creds.get(user).filter(|m| !m.is_empty())?;
    Some(
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_credential_infos(
                by_mechanism
                    .iter()
                    .map(|(m, c)| {
                        CredentialInfo::default()
                            .with_mechanism(m.code())
                            .with_iterations(c.iterations)
                    })
                    .collect(),
            ),
    )
}

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    // Kafka: DESCRIBE on the cluster, else the error at the top and for each
    // user asked about (`getErrorResponse`), with a message: librdkafka 2.x
    // crashes on this error without one.
    if !ctx.authorize_cluster(broker, AclOperation::Describe) {
        let e = ResponseError::ClusterAuthorizationFailed;
        let message = || Some(StrBytes::from_static_str("Cluster authorization failed."));
        let results = req
            .users
            .iter()
            .flatten()
            .map(|u| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(u.name.clone())
                    .with_error_code(e.code())
                    .with_error_message(message())
            })
            .collect();
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(e.code())
            .with_error_message(message())
            .with_results(results);
    }
    let image = broker.metadata.image();
    let creds = image.scram_credentials();
    let results = match req.users.filter(|u| !u.is_empty()) {
        // null or empty: every user that has a credential.
        None => creds.keys().filter_map(|u| described(u, creds)).collect(),
        Some(users) => {
            let mut seen = BTreeSet::new();
            let mut duplicated = BTreeSet::new();
            for u in &users {
                if !seen.insert(u.name.as_str()) {
                    duplicated.insert(u.name.as_str());
                }
            }
            let mut reported = BTreeSet::new();
            users
                .iter()
                .filter(|u| reported.insert(u.name.as_str()))
                .map(|u| {
                    let name = u.name.as_str();
                    let error = |e: ResponseError, message: &str| {
                        DescribeUserScramCredentialsResult::default()
                            .with_user(u.name.clone())
                            .with_error_code(e.code())
                            .with_error_message(Some(StrBytes::from_string(message.to_string())))
                    };
                    if duplicated.contains(name) {
                        error(
                            ResponseError::DuplicateResource,
                            "Cannot describe SCRAM credentials for the same user twice in a single request",
                        )
                    } else {
                        described(name, creds).unwrap_or_else(|| {
                            error(
                                ResponseError::ResourceNotFound,
                                "Attempt to describe a user credential that does not exist",
                            )
                        })
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
