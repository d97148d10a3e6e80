//! The gateway's errors as clients see them: OpenAI's error shape with a stable `type`,
//! whichever layer refused (a check here, or the pool through `ForwardError`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::ErrorBody;

use super::reply::Complete;
use crate::gateway::core::policy::ForwardError;

/// An error answered in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    pub(super) kind: String,
    message: String,
    /// Seconds to wait before a retry, when the refusal knows them.
    retry_after: Option<u32>,
}

impl ApiError {
    pub(super) fn new(status: u16, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same, telling the client to retry after `seconds`.
    pub(super) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The gateway's own error of type `kind`, with its status.
    pub(super) fn of(kind: ErrorType, message: impl Into<String>) -> Self {
        Self::new(kind.status(), kind.name(), message)
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::of(ErrorType::InvalidRequest, message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(&self.kind, &self.message, None)
    }
}

impl From<ForwardError> for ApiError {
    fn from(e: ForwardError) -> Self {
        Self::new(e.status(), e.error_type(), e.to_string())
    }
}

impl ApiError {
    /// The answer: the error in OpenAI's shape, `retry-after` with a 429.
    pub fn complete(&self) -> Complete {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        Complete {
            status: StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY),
            content_type: None,
            cache: None,
            body: body.into(),
            retry_after: self
                .retry_after
                .or_else(|| retry_after(self.status, &self.kind)),
        }
    }
}

/// Seconds a client should wait before retrying: a refusal for load (429) clears in about a
/// second; a pool that is scaling needs an agent to start and load its model.
fn retry_after(status: u16, kind: &str) -> Option<u32> {
    if status == 429 {
        Some(1)
    } else if kind == ErrorType::PoolScaling.name() {
        Some(SCALING_RETRY_AFTER)
    } else {
        None
    }
}

/// `Retry-After` of a `pool_scaling` answer, in seconds.
pub const SCALING_RETRY_AFTER: u32 = 10;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.complete().into_response()
    }
}
