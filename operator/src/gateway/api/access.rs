//! API keys in front of the handlers (see `gateway::auth`): who asks (401), for which model
//! (403) and how much (429 with `Retry-After`), each outcome counted by the key's id. A
//! gateway without `--api-keys` admits every request.

use std::time::Instant;

use axum::http::HeaderMap;
use inferpool_protocol::errors::ErrorType;

use super::error::ApiError;
use crate::gateway::auth::Denied;
use crate::gateway::auth::keys::Key;
use crate::gateway::auth::quota::Exceeded;
use crate::gateway::dispatch::gateway::Gateway;

/// Answer tokens charged for a request without `max_tokens` (it may run to the context).
pub const UNBOUNDED_ANSWER_ESTIMATE: u32 = 1024;

/// Tokens a request is charged at admission: its body's bytes over four (about a token's
/// worth of text) plus its `max_tokens`, or `UNBOUNDED_ANSWER_ESTIMATE` without one.
pub fn estimate(body_bytes: usize, max_tokens: Option<u32>) -> u32 {
    let prompt = u32::try_from(body_bytes.div_ceil(4)).unwrap_or(u32::MAX);
    prompt.saturating_add(max_tokens.unwrap_or(UNBOUNDED_ANSWER_ESTIMATE))
}

/// Admits a request for `model` estimated at `tokens` under the gateway's keys.
pub fn admit(
    gateway: &Gateway,
    headers: &HeaderMap,
    model: &str,
    tokens: u32,
) -> Result<(), ApiError> {
    let Some(auth) = gateway.auth() else {
        return Ok(());
    };
    let keys = &gateway.metrics.keys;
    let key = auth.identify(headers).map_err(|denied| {
        keys.unauthenticated(reason(&denied));
        refusal(&denied)
    })?;
    match auth.admit(&key, model, tokens, Instant::now()) {
        Ok(()) => {
            keys.admitted(&key.id, tokens);
            Ok(())
        }
        Err(denied) => {
            keys.outcome(&key.id, outcome(&denied));
            Err(refusal(&denied))
        }
    }
}

/// Refuses a request without a valid key (counted); the handlers call it before anything
/// else, and alone for the model list. The key, when the gateway has keys.
pub fn identify(gateway: &Gateway, headers: &HeaderMap) -> Result<Option<Key>, ApiError> {
    let Some(auth) = gateway.auth() else {
        return Ok(None);
    };
    auth.identify(headers).map(Some).map_err(|denied| {
        gateway.metrics.keys.unauthenticated(reason(&denied));
        refusal(&denied)
    })
}

fn reason(denied: &Denied) -> &'static str {
    match denied {
        Denied::Missing => "missing",
        _ => "unknown",
    }
}

fn outcome(denied: &Denied) -> &'static str {
    match denied {
        Denied::Model { .. } => "model_not_allowed",
        Denied::OverQuota { over, .. } if over.exceeded == Exceeded::Tokens => "over_tokens_quota",
        Denied::OverQuota { .. } => "over_requests_quota",
        Denied::Missing | Denied::Unknown => "unauthenticated",
    }
}

fn refusal(denied: &Denied) -> ApiError {
    let message = denied.to_string();
    match denied {
        Denied::Missing | Denied::Unknown => ApiError::of(ErrorType::InvalidApiKey, message),
        Denied::Model { .. } => ApiError::of(ErrorType::ModelNotAllowed, message),
        Denied::OverQuota { over, .. } => {
            let seconds = u32::try_from(over.retry_after.as_secs()).unwrap_or(u32::MAX);
            ApiError::of(ErrorType::RateLimitExceeded, message).retry_after(seconds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_charged_its_prompt_estimate_and_its_answer_limit() {
        assert_eq!(estimate(400, Some(16)), 116);
        assert_eq!(estimate(1, Some(0)), 1);
        assert_eq!(estimate(0, None), UNBOUNDED_ANSWER_ESTIMATE);
        assert_eq!(estimate(usize::MAX, Some(5)), u32::MAX);
    }
}
