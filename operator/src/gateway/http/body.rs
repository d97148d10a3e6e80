//! Each request as the router gets it: its body read whole within the size and time
//! limits (a 413 or 408 in OpenAI's error shape otherwise, and the connection closed), and
//! the request counted in flight on its connection until its answer is written or dropped.
//! The gateway's endpoints all take whole JSON bodies, so reading first costs nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::ErrorBody;
use tower::ServiceExt as _;

use super::activity::Activity;

/// Body limits.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body.
    pub max_bytes: usize,
    /// Longest its reading may take.
    pub read_timeout: Duration,
}

/// The router behind the limits, on one connection.
#[derive(Debug, Clone)]
pub struct Bounded<S> {
    inner: S,
    limits: BodyLimits,
    activity: Arc<Activity>,
}

impl<S> Bounded<S> {
    /// `inner` behind `limits`, its requests counted on `activity`.
    pub fn new(inner: S, limits: BodyLimits, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            limits,
            activity,
        }
    }
}

impl<S> hyper::service::Service<Request<Incoming>> for Bounded<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = self.activity.start();
        let (inner, limits) = (self.inner.clone(), self.limits);
        Box::pin(async move {
            let response = match read_whole(request, limits).await {
                Ok(request) => inner.oneshot(request).await?,
                Err(refusal) => refusal.response(),
            };
            // The request is in flight until its answer's body is done with.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        })
    }
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// Not sent in time.
    #[error("the request body was not sent within {0:?}")]
    Timeout(Duration),
    /// The body broke off or was malformed.
    #[error("the request body could not be read")]
    Broken,
}

impl Refusal {
    /// The answer, in OpenAI's error shape; the connection closes after it (the rest of
    /// the body is not read).
    pub fn response(self) -> Response<Body> {
        let kind = match self {
            Self::TooLarge(_) => ErrorType::RequestTooLarge,
            Self::Timeout(_) => ErrorType::RequestTimeout,
            Self::Broken => ErrorType::InvalidRequest,
        };
        let body = ErrorBody::new(kind.name(), &self.to_string(), None);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(Body::from(Bytes::from(body)));
        *response.status_mut() =
            StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// `request` with its body read whole, or why not.
async fn read_whole(
    request: Request<Incoming>,
    limits: BodyLimits,
) -> Result<Request<Body>, Refusal> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(Refusal::TooLarge(limits.max_bytes));
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, limits.max_bytes).collect();
    let collected = tokio::time::timeout(limits.read_timeout, read)
        .await
        .map_err(|_| Refusal::Timeout(limits.read_timeout))?;
    let bytes = collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Refusal::TooLarge(limits.max_bytes)
            } else {
                Refusal::Broken
            }
        })?
        .to_bytes();
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
