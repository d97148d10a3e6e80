//! A whole answer (status, content type and body) as the gateway passes it on: an agent's
//! answer as the agent gave it, or the gateway's own error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use inferpool_protocol::cache::CACHE_HEADER;

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    /// The status.
    pub status: StatusCode,
    /// Its content type (`None`: JSON).
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
    /// `Retry-After` in seconds, if any (a refusal for load, a pool scaling up).
    pub retry_after: Option<u32>,
    /// The agent's `x-inferpool-cache`, passed on.
    pub cache: Option<String>,
}

impl IntoResponse for Complete {
    fn into_response(self) -> Response {
        // An agent's content type that is no valid header value is replaced by JSON's.
        let content_type = self
            .content_type
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
            .unwrap_or(HeaderValue::from_static("application/json"));
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, content_type)],
            self.body,
        )
            .into_response();
        if let Some(value) = self.cache.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(CACHE_HEADER, value);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
