//! What the cluster admin APIs answered by the active controller
//! (ElectLeaders, AlterPartitionReassignments, ListPartitionReassignments)
//! share: the call, the mapping of its failures to Kafka errors, the wait
//! for this node's image to catch up with a change the controller made, and
//! the per-partition answer grouped by topic. Not a Kafka API of its own.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use strom_metadata::controller_api::{ApiError, ControllerRequest, ControllerResponse};
use strom_metadata::ProposeError;

use crate::broker::Broker;

/// How long a forwarded request waits for this node to replay the
/// controller's change when the client gave no timeout.
const DEFAULT_APPLY_WAIT: Duration = Duration::from_secs(30);

/// The error of a whole forwarded request: the code and message every
/// partition of the response carries.
pub(crate) type ForwardError = (ResponseError, String);

/// Sends `req` to the active controller and returns what `answer` takes from
/// its reply: the controller's error for the whole request and the result.
/// `answer` gives back a reply of another variant than the request's, which
/// is an UNKNOWN_SERVER_ERROR naming `api`.
pub(crate) async fn forward<T>(
    broker: &Broker,
    api: &str,
    req: ControllerRequest,
    answer: impl FnOnce(ControllerResponse) -> Result<(ApiError, T), ControllerResponse>,
) -> Result<T, ForwardError> {
    let reply = broker
        .metadata
        .quorum()
        .controller_call(req)
        .await
        .map_err(|e| forward_error(&e))?;
    match answer(reply) {
        Ok((error, result)) if error.error_code == 0 => Ok(result),
        Ok((error, _)) => {
            let code = ResponseError::try_from_code(error.error_code)
                .unwrap_or(ResponseError::UnknownServerError);
            Err((code, error.message.unwrap_or_default()))
        }
        Err(other) => Err((
            ResponseError::UnknownServerError,
            format!("the controller answered {api} with {other:?}"),
        )),
    }
}

/// [`forward`] for ElectLeaders and AlterPartitionReassignments, which
/// change existing partitions and answer per partition: after the answer
/// this waits (up to the client's `timeout_ms`) until this node's image has
/// applied the change, so a client reading metadata from this broker right
/// after the answer sees the change it asked for.
pub(crate) async fn forward_partition_change(
    broker: &Broker,
    api: &str,
    req: ControllerRequest,
    timeout_ms: i32,
) -> Result<Vec<(String, i32, ApiError)>, ForwardError> {
    use ControllerRequest as Asked;
    use ControllerResponse as Answer;
    // the reply must be of the request's kind
    let elect = matches!(req, Asked::ElectLeaders { .. });
    let (partitions, log_index) = forward(broker, api, req, |reply| match (elect, reply) {
        (
            true,
            Answer::ElectLeaders {
                error,
                partitions,
                log_index,
            },
        )
        | (
            false,
            Answer::AlterPartitionReassignments {
                error,
                partitions,
                log_index,
            },
        ) => Ok((error, (partitions, log_index))),
        (_, other) => Err(other),
    })
    .await?;
    broker
        .metadata
        .wait_for_index(log_index, apply_wait(timeout_ms))
        .await;
    Ok(partitions)
}

/// Groups per-partition entries by topic in Kafka's response shape, in the
/// order given (the controller answers in request order, so a topic's
/// partitions are adjacent).
pub(crate) fn by_topic<P>(
    entries: impl IntoIterator<Item = (String, P)>,
) -> Vec<(TopicName, Vec<P>)> {
    let mut out: Vec<(TopicName, Vec<P>)> = Vec::new();
    for (topic, entry) in entries {
        match out.last_mut().filter(|(t, _)| t.as_str() == topic) {
            Some((_, entries)) => entries.push(entry),
            None => out.push((TopicName(StrBytes::from_string(topic)), vec![entry])),
        }
    }
    out
}

/// A partition's error message in a response: only when it has an error.
pub(crate) fn error_message(error: ApiError) -> Option<StrBytes> {
    (error.error_code != 0)
        .then(|| error.message.map(StrBytes::from_string))
        .flatten()
}

/// The Kafka error a client gets when the controller could not be reached
/// or did not commit in time.
fn forward_error(e: &ProposeError) -> ForwardError {
    let code = match e {
        ProposeError::NotLeader { .. } => ResponseError::NotController,
        ProposeError::Timeout(_) => ResponseError::RequestTimedOut,
        ProposeError::Rejected { .. } | ProposeError::Unavailable(_) => {
            ResponseError::UnknownServerError
        }
    };
    (code, e.to_string())
}

/// The client's `timeout_ms` as the time to wait for the local image (a
/// non-positive one means our default).
fn apply_wait(timeout_ms: i32) -> Duration {
    if timeout_ms > 0 {
        Duration::from_millis(timeout_ms as u64)
    } else {
        DEFAULT_APPLY_WAIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_wait_uses_the_client_timeout_or_the_default() {
        assert_eq!(apply_wait(1500), Duration::from_millis(1500));
        assert_eq!(apply_wait(0), DEFAULT_APPLY_WAIT);
        assert_eq!(apply_wait(-1), DEFAULT_APPLY_WAIT);
    }

    #[test]
    fn by_topic_keeps_the_order_and_groups_adjacent_partitions() {
        let grouped = by_topic([("a".to_string(), 0), ("a".into(), 1), ("b".into(), 0)]);
        let names: Vec<(&str, Vec<i32>)> = grouped
            .iter()
            .map(|(t, ps)| (t.as_str(), ps.clone()))
            .collect();
        assert_eq!(names, vec![("a", vec![0, 1]), ("b", vec![0])]);
    }

    #[test]
    fn error_message_only_with_an_error() {
        assert_eq!(error_message(ApiError::new(0, "ignored")), None);
        assert_eq!(
            error_message(ApiError::new(84, "not needed")).as_deref(),
            Some("not needed")
        );
    }

    #[test]
    fn controller_failures_map_to_kafka_errors() {
        let not_leader = ProposeError::NotLeader {
            leader_id: Some(2),
            leader_addr: None,
        };
        assert_eq!(forward_error(&not_leader).0, ResponseError::NotController);
        let timeout = ProposeError::Timeout(Duration::from_secs(5));
        assert_eq!(forward_error(&timeout).0, ResponseError::RequestTimedOut);
    }
}
