//! The operator's own HTTP endpoints: `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What the endpoints read.
#[derive(Debug)]
pub struct HealthState {
    /// Prometheus registry of every metric of the process.
    pub registry: Registry,
    /// Set once the process is initialised (controller: connected, lease loop running;
    /// gateway: pools and agents listed).
    pub ready: Arc<AtomicBool>,
}

/// Serves `/healthz`, `/readyz` (as `ready` says) and `/metrics` of `registry` on `addr`.
pub async fn serve_health(
    addr: SocketAddr,
    registry: Registry,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let health = Arc::new(HealthState { registry, ready });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "health and metrics endpoints listening");
    tokio::spawn(axum::serve(listener, router(health)).into_future());
    Ok(())
}

/// The router for the health and metrics endpoints.
pub fn router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
