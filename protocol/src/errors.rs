//! The stable error types clients see (OpenAI's `type`, also the metrics' outcome labels),
//! each with the HTTP status it is answered with, and the one table that carries a status
//! across gRPC: the agent turns its HTTP status into a gRPC code, and the gateway turns the
//! code back into the same HTTP status, so both directions read the same rows.

use tonic::Code;

/// A stable error type, as the agent or the gateway answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// The request is malformed or out of range.
    InvalidRequest,
    /// The body exceeds the limit.
    RequestTooLarge,
    /// The body was not sent in time.
    RequestTimeout,
    /// No model of that name is served.
    ModelNotFound,
    /// The prompt does not fit the model's context (or its KV cache).
    ContextLengthExceeded,
    /// The agent's queue for the priority is full.
    QueueFull,
    /// The agent is shutting down.
    Draining,
    /// The agent's model is still loading.
    NotReady,
    /// The request's deadline passed while it was queued on the agent.
    DeadlineExceeded,
    /// The agent failed (engine, embedding model).
    ServerError,
    /// Every agent of the pool is busy.
    PoolSaturated,
    /// No agent of the pool is up.
    NoHealthyAgent,
    /// The pool has no agent yet (scaled to zero, or all restarting) and none became ready
    /// before the request's deadline: retry after `Retry-After`.
    PoolScaling,
    /// The request ran past the gateway's timeout.
    Timeout,
    /// The agent failed in a way that has no type of its own.
    UpstreamError,
    /// No API key, or one the gateway does not know.
    InvalidApiKey,
    /// The API key may not use the model.
    ModelNotAllowed,
    /// The API key's requests or tokens per minute are used up: retry after `Retry-After`.
    RateLimitExceeded,
}

impl ErrorType {
    /// Every type.
    pub const ALL: [Self; 18] = [
        Self::InvalidRequest,
        Self::RequestTooLarge,
        Self::RequestTimeout,
        Self::ModelNotFound,
        Self::ContextLengthExceeded,
        Self::QueueFull,
        Self::Draining,
        Self::NotReady,
        Self::DeadlineExceeded,
        Self::ServerError,
        Self::PoolSaturated,
        Self::NoHealthyAgent,
        Self::PoolScaling,
        Self::Timeout,
        Self::InvalidApiKey,
        Self::ModelNotAllowed,
        Self::RateLimitExceeded,
        // Last: the gateway's metrics count any unknown outcome as this one.
        Self::UpstreamError,
    ];

    /// The `type` on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::ModelNotFound => "model_not_found",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::QueueFull => "queue_full",
            Self::Draining => "draining",
            Self::NotReady => "not_ready",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ServerError => "server_error",
            Self::PoolSaturated => "pool_saturated",
            Self::NoHealthyAgent => "no_healthy_agent",
            Self::PoolScaling => "pool_scaling",
            Self::Timeout => "timeout",
            Self::UpstreamError => "upstream_error",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::RateLimitExceeded => "rate_limit_exceeded",
        }
    }

    /// The HTTP status it is answered with by whoever raised it.
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InvalidApiKey => 401,
            Self::ModelNotAllowed => 403,
            Self::ModelNotFound => 404,
            Self::RequestTimeout => 408,
            Self::RequestTooLarge | Self::ContextLengthExceeded => 413,
            Self::QueueFull | Self::PoolSaturated | Self::RateLimitExceeded => 429,
            Self::ServerError => 500,
            Self::UpstreamError => 502,
            Self::Draining | Self::NotReady | Self::NoHealthyAgent | Self::PoolScaling => 503,
            Self::DeadlineExceeded | Self::Timeout => 504,
        }
    }
}

/// The HTTP statuses that cross gRPC, each with its code. A status not here has no code of
/// its own (the agent sends `Internal`), and a code not here has no status of its own (the
/// gateway answers `502`): each side picks its fallback, since only it knows whose failure
/// that is.
pub const STATUS_CODES: [(u16, Code); 6] = [
    (400, Code::InvalidArgument),
    (404, Code::NotFound),
    (413, Code::OutOfRange),
    (429, Code::ResourceExhausted),
    (503, Code::Unavailable),
    (504, Code::DeadlineExceeded),
];

/// The gRPC code that carries HTTP `status`, if the table has one.
pub fn code_for_status(status: u16) -> Option<Code> {
    STATUS_CODES
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, code)| *code)
}

/// The HTTP status that gRPC `code` carries, if the table has one.
pub fn status_for_code(code: Code) -> Option<u16> {
    STATUS_CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(status, _)| *status)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_row_round_trips_both_ways() {
        for (status, code) in STATUS_CODES {
            assert_eq!(code_for_status(status), Some(code), "{status}");
            assert_eq!(status_for_code(code), Some(status), "{code:?}");
        }
        let statuses: HashSet<_> = STATUS_CODES.iter().map(|(s, _)| s).collect();
        let codes: HashSet<_> = STATUS_CODES.iter().map(|(_, c)| *c as i32).collect();
        assert_eq!(statuses.len(), STATUS_CODES.len(), "a status twice");
        assert_eq!(codes.len(), STATUS_CODES.len(), "a code twice");
    }

    #[test]
    fn what_the_table_lacks_is_left_to_the_caller() {
        assert_eq!(code_for_status(500), None);
        assert_eq!(code_for_status(502), None);
        assert_eq!(status_for_code(Code::Internal), None);
        assert_eq!(status_for_code(Code::Ok), None);
    }

    #[test]
    fn an_error_type_crosses_grpc_with_its_status() {
        for kind in ErrorType::ALL {
            if let Some(code) = code_for_status(kind.status()) {
                assert_eq!(status_for_code(code), Some(kind.status()), "{kind:?}");
            }
        }
        assert_eq!(
            code_for_status(ErrorType::QueueFull.status()),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(
            code_for_status(ErrorType::Draining.status()),
            Some(Code::Unavailable)
        );
        assert_eq!(code_for_status(ErrorType::ServerError.status()), None);
    }

    #[test]
    fn error_type_names_are_distinct_snake_case() {
        let names: HashSet<_> = ErrorType::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ErrorType::ALL.len());
        for name in names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
        assert_eq!(ErrorType::InvalidRequest.name(), "invalid_request_error");
        assert_eq!(ErrorType::InvalidRequest.status(), 400);
    }
}
