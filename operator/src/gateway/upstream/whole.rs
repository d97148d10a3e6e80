//! Whole answers from an agent's own OpenAI API over hyper's pooled HTTP/1.1 client (over
//! TLS through hyper-rustls when the agents serve it, see `tls`): the
//! client's checked body goes as it is, and the agent's answer comes back as it is. A
//! whole answer needs nothing of gRPC's framing, and the agent's HTTP server costs it
//! less per request; kept-alive connections are pooled per agent and per thread: the
//! gateway serves on one single-threaded runtime per CPU, and a connection whose task ran
//! on another thread's runtime would cost two cross-thread wake-ups per request.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use inferpool_protocol::cache::CACHE_HEADER;
use tokio::time::Instant;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::channel::UpstreamSettings;

/// An idle pooled connection older than this is closed rather than reused.
const IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per agent.
const MAX_IDLE_PER_AGENT: usize = 64;
/// The largest answer accepted.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// One request to an agent's HTTP API.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    /// Extra headers (the caller checked them).
    pub headers: &'a [(&'a str, &'a str)],
    /// The JSON body.
    pub body: &'a Bytes,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its content type, if it said one.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Bytes,
    /// How the agent's response cache took part (`x-inferpool-cache`), if it said.
    pub cache: Option<String>,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection failed (or could not be made) before the whole answer arrived.
    #[error("agent connection: {0}")]
    Lost(String),
    /// What came back was not an acceptable HTTP answer.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// No answer by the deadline.
    #[error("no answer in time")]
    Timeout,
}

/// The pooled client of the agents' HTTP APIs (cheap to clone): its connections belong to
/// the thread that uses them (see `local_client`).
#[derive(Debug, Clone)]
pub struct WholeClient {
    settings: UpstreamSettings,
}

type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    /// This thread's client (and the settings it was made with), made on first use.
    static LOCAL: RefCell<Option<(UpstreamSettings, PooledClient)>> = const { RefCell::new(None) };
}

impl WholeClient {
    /// A client with the connect and request timeouts of `settings`.
    pub fn new(settings: &UpstreamSettings) -> Self {
        Self {
            settings: settings.clone(),
        }
    }

    /// This thread's pooled client (a new one when the settings differ).
    fn local_client(&self) -> Result<PooledClient, CallError> {
        LOCAL.with_borrow_mut(|local| match local {
            Some((settings, client)) if *settings == self.settings => Ok(client.clone()),
            _ => {
                let client = pooled_client(&self.settings)?;
                *local = Some((self.settings.clone(), client.clone()));
                Ok(client)
            }
        })
    }

    /// Posts `post` to the agent at `addr` and reads its whole answer, by `deadline`.
    pub async fn post(
        &self,
        addr: SocketAddr,
        post: Post<'_>,
        deadline: Instant,
    ) -> Result<Answer, CallError> {
        let until = deadline.min(Instant::now() + self.settings.request_timeout);
        let request = request(addr, post, self.settings.tls.is_some())?;
        tokio::time::timeout_at(until, self.call(request))
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    async fn call(&self, request: Request<Full<Bytes>>) -> Result<Answer, CallError> {
        let response = self.local_client()?.request(request).await.map_err(|e| {
            if e.is_connect() {
                CallError::Lost(e.to_string())
            } else {
                classify(&e)
            }
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let cache = response
            .headers()
            .get(CACHE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::Lost(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
            cache,
        })
    }
}

/// A client of kept-alive connections with the timeouts and TLS of `settings`.
fn pooled_client(settings: &UpstreamSettings) -> Result<PooledClient, CallError> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(settings.connect_timeout));
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(settings.keep_alive_interval));
    // hyper-rustls does TLS over it for `https` addresses.
    tcp.enforce_http(false);
    let connector = match &settings.tls {
        Some(tls) => HttpsConnectorBuilder::new()
            .with_tls_config((*tls.http).clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()))
            .enable_http1()
            .wrap_connector(tcp),
        // Plain text only: the addresses are `http`, so no handshake is ever made.
        None => HttpsConnectorBuilder::new()
            .with_tls_config(no_tls()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp),
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE)
        .pool_max_idle_per_host(MAX_IDLE_PER_AGENT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

/// A failed call: the agent's answer could not be parsed, or the connection failed.
fn classify(e: &hyper_util::client::legacy::Error) -> CallError {
    let parse = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_parse);
    if parse {
        CallError::Malformed(e.to_string())
    } else {
        CallError::Lost(e.to_string())
    }
}

/// A client config that trusts nobody, for the plain-text client's unused TLS side.
fn no_tls() -> Result<ClientConfig, CallError> {
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::Lost(format!("TLS setup: {e}")))?;
    Ok(builder
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn request(addr: SocketAddr, post: Post<'_>, tls: bool) -> Result<Request<Full<Bytes>>, CallError> {
    let scheme = if tls { "https" } else { "http" };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{addr}{}", post.path))
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in post.headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(post.body.clone()))
        .map_err(|e| CallError::Malformed(e.to_string()))
}
