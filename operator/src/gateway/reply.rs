//! The gateway's answer to a completion request. Most are whole (status, content type and
//! body): the workers' server writes those in one write without building a response
//! (see `server`), and axum gets them as a response like any other. Streams are
//! responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// An answer to a completion request.
#[derive(Debug)]
pub enum Reply {
    /// A whole answer.
    Complete(Complete),
    /// Anything else (a stream of server-sent events).
    Response(Response),
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    /// The status.
    pub status: StatusCode,
    /// Its content type (`None`: JSON).
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
    /// Whether to say `retry-after: 1` (a refusal for load).
    pub retry_after: bool,
}

impl Complete {
    /// The content type to send: the given one when it is a valid header value, else
    /// JSON.
    pub fn content_type(&self) -> &str {
        self.content_type
            .as_deref()
            .filter(|t| HeaderValue::from_str(t).is_ok())
            .unwrap_or("application/json")
    }
}

impl IntoResponse for Complete {
    fn into_response(self) -> Response {
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
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Self::Complete(complete) => complete.into_response(),
            Self::Response(response) => response,
        }
    }
}
