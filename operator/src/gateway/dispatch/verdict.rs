//! What an agent's answer means for a request, on either link: a gRPC status (streams,
//! embeddings) or an HTTP answer (whole completions) is the agent's verdict on the request
//! (passed on), a healthy agent turning it away (another may take it), the agent's own
//! failure (retried elsewhere, its breaker told), or the agent gone. The request's slot
//! learns which.

use inferpool_protocol::agent::ErrorInfo;
use inferpool_protocol::errors::{ErrorType, status_for_code};
use inferpool_protocol::openai::ErrorBody;
use prost::Message as _;
use tonic::{Code, Status};

use super::pool::InFlight;
use crate::gateway::core::policy::{Attempt, ForwardError};
use crate::gateway::core::view::{Busy, Outcome};
use crate::gateway::upstream::whole::{Answer, CallError};

/// Classifies a gRPC refusal on the agent of `slot`.
pub fn classify(mut slot: InFlight, status: &Status) -> Attempt {
    // tonic keeps the transport's error under a status it made itself (the connection
    // refused, reset, closed under the call, a PING unanswered); an agent's own status,
    // read from its answer, has none.
    if std::error::Error::source(status).is_some() {
        return unreachable(slot);
    }
    let error = refused(status);
    let typed = is_typed(status);
    let (outcome, attempt) = match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::OutOfRange => {
            (Outcome::Success, Attempt::Fatal(error))
        }
        // A full queue or a draining agent is healthy: try another, breaker untouched.
        Code::ResourceExhausted if typed => (Outcome::Success, Attempt::Busy(Busy::Full, error)),
        Code::Unavailable if typed => (Outcome::Success, Attempt::Busy(Busy::Draining, error)),
        // The agent types every status it sends: an untyped "unavailable" is not its own.
        Code::Unavailable => (Outcome::Lost, Attempt::Lost(ForwardError::Unavailable)),
        _ => (
            Outcome::Failure,
            Attempt::Retryable(ForwardError::Unavailable),
        ),
    };
    slot.set_outcome(outcome);
    attempt
}

fn is_typed(status: &Status) -> bool {
    ErrorInfo::decode(status.details()).is_ok_and(|i| !i.r#type.is_empty())
}

/// The agent's refusal as an HTTP error with its type: the HTTP status the agent's code
/// stands for, `502` for a code that stands for none (the agent failed).
pub fn refused(status: &Status) -> ForwardError {
    let info = ErrorInfo::decode(status.details()).unwrap_or_default();
    let http = status_for_code(status.code()).unwrap_or(ErrorType::UpstreamError.status());
    let kind = if info.r#type.is_empty() {
        ErrorType::UpstreamError.name().to_owned()
    } else {
        info.r#type
    };
    ForwardError::Refused {
        status: http,
        kind,
        message: status.message().to_owned(),
    }
}

/// The agent of `slot` is lost (no connection) or down: the request moves on.
pub fn unreachable(mut slot: InFlight) -> Attempt {
    slot.set_outcome(Outcome::Lost);
    Attempt::Lost(ForwardError::Unavailable)
}

/// A whole-answer call that got no answer: the agent is lost when its connection failed,
/// and failed when it answered what is not HTTP (or not in time).
pub fn call_failed(mut slot: InFlight, e: &CallError) -> Attempt {
    if let CallError::Lost(_) = e {
        return unreachable(slot);
    }
    slot.set_outcome(Outcome::Failure);
    Attempt::Retryable(ForwardError::Unavailable)
}

/// What an HTTP answer means for the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Passed on to the client: a success, or the agent's verdict on the request.
    Answer,
    /// The agent is healthy but cannot take it now (full queue, draining): another may.
    Busy(Busy, ForwardError),
    /// The agent failed: another may answer, and its breaker learns of it.
    AgentFailed,
}

/// The verdict of an agent's HTTP `answer`.
pub fn judge(answer: &Answer) -> Verdict {
    match answer.status {
        200..=299 => Verdict::Answer,
        429 | 503 => match error_of(&answer.body) {
            Some((kind, message)) => {
                let busy = if answer.status == 429 {
                    Busy::Full
                } else {
                    Busy::Draining
                };
                let status = answer.status;
                let e = ForwardError::Refused {
                    status,
                    kind,
                    message,
                };
                Verdict::Busy(busy, e)
            }
            None => Verdict::AgentFailed,
        },
        400..=499 => Verdict::Answer,
        _ => Verdict::AgentFailed,
    }
}

/// The type and message of an error in OpenAI's shape, if it is one.
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let error: ErrorBody = serde_json::from_slice(body).ok()?;
    Some((error.error.kind, error.error.message))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: Some("application/json".into()),
            cache: None,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn error(kind: &str) -> String {
        serde_json::to_string(&ErrorBody::new(kind, "m", None)).unwrap()
    }

    #[test]
    fn answers_are_passed_on_busy_agents_retried_and_failures_counted() {
        assert_eq!(judge(&answer(200, "{}")), Verdict::Answer);
        assert_eq!(
            judge(&answer(400, &error("invalid_request_error"))),
            Verdict::Answer,
            "the request's own fault: passed on, the agent is fine"
        );
        let full = ForwardError::Refused {
            status: 429,
            kind: "queue_full".into(),
            message: "m".into(),
        };
        assert_eq!(
            judge(&answer(429, &error("queue_full"))),
            Verdict::Busy(Busy::Full, full)
        );
        assert!(matches!(
            judge(&answer(503, &error("draining"))),
            Verdict::Busy(Busy::Draining, ForwardError::Refused { status: 503, .. })
        ));
        assert_eq!(judge(&answer(503, "<html>")), Verdict::AgentFailed);
        assert_eq!(
            judge(&answer(500, &error("internal"))),
            Verdict::AgentFailed
        );
        assert_eq!(judge(&answer(502, "")), Verdict::AgentFailed);
    }
}
