//! The OpenAI API the gateway serves (an axum router, served by the `http` layer): chat
//! and text completions, embeddings, the model list, the gateway's metrics and liveness.
//! Handlers check requests, hand them to `dispatch`, and shape its answers.

pub mod access;
pub mod checks;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod held;
pub mod relay;
pub mod reply;
pub mod whole;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inferpool_protocol::openai::ModelList;

use crate::gateway::dispatch::gateway::{Gateway, PoolRoute};
use crate::gateway::metrics::PoolLoad;

/// The gateway's routes. Bodies are bounded (size and time) by the server in front
/// (see `http::limits`), so the router sets no limit of its own.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::disable())
        .with_state(gateway)
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let routes = gateway.routes();
    for route in &routes {
        observe(&gateway, route);
    }
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    gateway.metrics.retain_pools(&names);
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &gateway.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// Refreshes the gauges of `route`'s pool and agents from the pool's view.
fn observe(gateway: &Gateway, route: &PoolRoute) {
    let m = &gateway.metrics;
    if let Some(agents) = route.pool.with_view(|v| v.snapshot()) {
        m.observe_agents(&route.name, &agents);
    }
    if let Some(devices) = route.pool.with_view(|v| v.device_counts()) {
        m.observe_devices(&route.name, &devices);
    }
    let reports = route.pool.with_view(|v| v.reports()).unwrap_or_default();
    m.observe_pool(&route.name, &PoolLoad::of(route.pool.waiting(), &reports));
}

async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let key = match access::identify(&gateway, &headers) {
        Ok(key) => key,
        Err(refused) => return refused.into_response(),
    };
    let names = gateway.model_names();
    // A key sees only the models it may use: the others are not revealed.
    let refs: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| key.as_ref().is_none_or(|k| k.allows(name)))
        .collect();
    axum::Json(ModelList::of(&refs, gateway.created, "inferpool")).into_response()
}
