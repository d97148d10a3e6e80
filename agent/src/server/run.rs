//! `inferpool-agent serve`: bind both ports at once (health answers while the model
//! loads), load and warm up the model, serve, and on SIGTERM drain: readiness and health go
//! false, load reports say draining, new requests get 503, in-flight ones finish within the
//! grace period, then the process exits 0.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use candle_core::Device;
use inferpool_protocol::agent::agent_server::AgentServer;
use inferpool_protocol::listen::{WorkerSockets, default_workers};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::ServerTlsConfig;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::caching::{self, ServedModels};
use super::grpc::{GrpcAgent, set_health};
use super::tls::AgentTls;
use crate::config::AgentConfig;
use crate::engine::embed::Embedder;
use crate::engine::rows::Padding;
use crate::gpu::Inventory;
use crate::scheduler::embed_batcher::EmbedHandle;
use crate::serving::{Agent, Served};

/// Settings of the process that the pool's config does not carry.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The pool's `agent.json`.
    #[arg(long)]
    pub config: PathBuf,
    /// Address to bind both ports on.
    #[arg(long, env = "INFERPOOL_AGENT_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Overrides the config's HTTP port.
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Overrides the config's gRPC port.
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Directory of the embedding model (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = "INFERPOOL_EMBEDDING_MODEL")]
    pub embedding_model: Option<PathBuf>,
    /// Name of the embedding model in requests (default: its directory's name).
    #[arg(long)]
    pub embedding_name: Option<String>,
    /// Memory for the KV cache in bytes (default: 1 GiB on CPU, 40 % of GPU memory).
    #[arg(long, env = "INFERPOOL_KV_CACHE_BYTES")]
    pub kv_cache_bytes: Option<u64>,
    /// Longest wait for in-flight requests after SIGTERM, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_grace_seconds: u64,
    /// gRPC worker threads (default: one per CPU the process may use).
    #[arg(long, env = "INFERPOOL_GRPC_WORKERS")]
    pub grpc_workers: Option<usize>,
    /// Serve both API ports over TLS with this directory's `tls.crt` and `tls.key` (a
    /// mounted Secret; its `ca.crt` is the client CA under `--tls-mutual`).
    #[arg(long, env = "INFERPOOL_AGENT_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// With `--tls-dir`: refuse clients that present no certificate signed by its `ca.crt`.
    #[arg(long, requires = "tls_dir")]
    pub tls_mutual: bool,
    /// A plain-HTTP port serving only /healthz, /readyz and /metrics (kubelet's gRPC
    /// probes cannot speak TLS, and its HTTPS probes present no client certificate).
    #[arg(long)]
    pub health_port: Option<u16>,
}

/// How long the servers may take to close their connections once drained.
const SERVERS_CLOSE: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM (or SIGINT) and a drain.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = AgentConfig::read(&args.config)?;
    #[cfg(feature = "fault-injection")]
    tracing::warn!("built with fault injection: POST /admin/faults breaks devices on request");
    let inventory = super::devices::inventory(&config);
    tracing::info!(devices = ?inventory.devices, fallback = ?inventory.cpu_fallback_reason, "devices");
    let agent = Agent::new(
        inventory.clone(),
        config.batching.max_batch_size,
        config.devices.restart_after_failures.max(1),
    );
    let (stop, stopped) = watch::channel(false);
    let servers = start_servers(&agent, &args, &config, stopped).await?;
    let loading = tokio::spawn(load_and_warm(
        agent.clone(),
        config.clone(),
        args.clone(),
        inventory,
    ));
    shutdown_signal().await;
    tracing::info!(in_flight = agent.in_flight.count(), "draining");
    agent.drain();
    loading.abort();
    let idle = agent
        .in_flight
        .wait_idle(Duration::from_secs(args.drain_grace_seconds))
        .await;
    tracing::info!(idle, "drained; stopping");
    caching::save_at_drain(agent.response_cache(), &config).await?;
    let _ = stop.send(true);
    // Bounded as a whole: a client that keeps a connection open does not hold the exit.
    let closed = futures::future::join_all(servers);
    if tokio::time::timeout(SERVERS_CLOSE, closed).await.is_err() {
        tracing::warn!("connections still open after {SERVERS_CLOSE:?}; exiting anyway");
    }
    Ok(())
}

async fn start_servers(
    agent: &Arc<Agent>,
    args: &ServeArgs,
    config: &AgentConfig,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let tls = args
        .tls_dir
        .as_deref()
        .map(|dir| AgentTls::new(dir, args.tls_mutual))
        .transpose()
        .context("the agent's TLS certificate")?;
    let http_addr = SocketAddr::new(args.host, args.http_port.unwrap_or(config.http_port));
    let grpc_addr = SocketAddr::new(args.host, args.grpc_port.unwrap_or(config.grpc_port));
    let http = bind(http_addr).await?;
    let workers = args.grpc_workers.unwrap_or_else(default_workers);
    let grpc =
        WorkerSockets::bind(grpc_addr, workers).with_context(|| format!("binding {grpc_addr}"))?;
    let (tls_on, mutual) = (tls.is_some(), args.tls_mutual);
    tracing::info!(http = %http.local_addr()?, grpc = %grpc.addr(), workers, tls = tls_on, mutual, "listening");
    let router = super::http::router(agent.clone());
    let mut tasks = vec![serve_http(http, router, tls.as_ref(), stopped.clone())?];
    if let Some(port) = args.health_port {
        let health = bind(SocketAddr::new(args.host, port)).await?;
        let router = super::http::health_router(agent.clone());
        tasks.push(serve_http(health, router, None, stopped.clone())?);
    }
    let grpc_tls = tls.as_ref().map(AgentTls::grpc).transpose();
    let grpc_tls = grpc_tls.context("the agent's TLS certificate")?;
    tasks.push(serve_grpc(agent, grpc, grpc_tls, stopped).await?);
    Ok(tasks)
}

/// Serves `router` on `listener` (over `tls` when given) until `stopped`.
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&AgentTls>,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let stop = until_stopped(stopped);
    let served: futures::future::BoxFuture<'static, std::io::Result<()>> = match tls {
        None => {
            let serve = axum::serve(listener.tap_io(no_delay), router);
            Box::pin(serve.with_graceful_shutdown(stop).into_future())
        }
        Some(tls) => {
            let serve = axum::serve(tls.listen(listener)?, router);
            Box::pin(serve.with_graceful_shutdown(stop).into_future())
        }
    };
    Ok(tokio::spawn(async move {
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
}

/// Serves the `Agent` service and grpc.health.v1 (following the agent's phase) on the
/// worker sockets (over `tls` when given) until `stopped`.
async fn serve_grpc(
    agent: &Arc<Agent>,
    sockets: WorkerSockets,
    tls: Option<ServerTlsConfig>,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    tokio::spawn(follow_phase(agent.clone(), reporter.clone()));
    let service = AgentServer::new(GrpcAgent::new(agent.clone(), reporter, stopped.clone()));
    let serve = move |listener: TcpListener| {
        let (health, service) = (health.clone(), service.clone());
        let (tls, stopped) = (tls.clone(), stopped.clone());
        async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
            }
            let served = builder
                .add_service(health)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming(listener), until_stopped(stopped));
            if let Err(e) = served.await {
                tracing::error!(error = %e, "gRPC server failed");
            }
            Ok(())
        }
    };
    super::workers::start(sockets.into_sockets(), serve)
}

/// Small responses (tokens, load reports) go out at once: with Nagle's algorithm a frame
/// written after another waits for the peer's (delayed) acknowledgement.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// The gRPC listener's connections, with `TCP_NODELAY` (tonic applies its own setting
/// only to listeners it binds itself).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|mut stream| {
            no_delay(&mut stream);
            stream
        })
    })
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// grpc.health.v1 follows the phase and the devices: serving only while ready with a
/// healthy device (the pool's load watch also changes when a device's health does).
async fn follow_phase(agent: Arc<Agent>, reporter: HealthReporter) {
    let mut phase = agent.watch_phase();
    let mut load = None;
    let mut last = None;
    loop {
        phase.borrow_and_update();
        let status = match agent.serving() {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        // The load watch changes with every engine step: only a new status is sent.
        if last != Some(status) {
            set_health(&reporter, status).await;
            last = Some(status);
        }
        if load.is_none() {
            load = agent.watch_load();
        }
        let load_changed = async {
            match load.as_mut() {
                Some(l) => l.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return },
            _ = load_changed => {}
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Loads the model (and the embedding model), starts the replicas (each warmed up), then
/// marks the agent ready. A model that cannot load ends the process.
async fn load_and_warm(
    agent: Arc<Agent>,
    config: AgentConfig,
    args: ServeArgs,
    inventory: Inventory,
) {
    match load_and_warm_inner(&config, &args, inventory).await {
        Ok(served) => {
            tracing::info!(model = %served.name, context = served.context, "ready");
            agent.ready(served);
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "the model could not be loaded");
            std::process::exit(1);
        }
    }
}

async fn load_and_warm_inner(
    config: &AgentConfig,
    args: &ServeArgs,
    inventory: Inventory,
) -> anyhow::Result<Served> {
    // The embedding model runs on the first device of the inventory.
    let embed_device = inventory
        .devices
        .first()
        .map(crate::replicas::candle_device)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or(Device::Cpu);
    // Side by side: the embedding model loads on a blocking thread of its own while the
    // generation model loads and warms up (bench/scale: most of a second off a cold start).
    let (started, embedder) = tokio::try_join!(
        super::devices::start(config, args.kv_cache_bytes, inventory),
        load_embedder(args, &embed_device, config.batching.padding),
    )?;
    let models = ServedModels {
        generation: (&config.served_name, &config.model_path),
        embedding: embedder
            .as_ref()
            .zip(args.embedding_model.as_deref())
            .map(|((name, _), dir)| (name.as_str(), dir)),
    };
    let cache = caching::build(config, &models).await?;
    if let Some(cache) = &cache {
        tracing::info!(settings = ?cache.settings(), "response cache");
    }
    let engines = started.engines;
    let context = started.context.min(engines.capacity_tokens());
    Ok(Served {
        name: config.served_name.clone(),
        engine: engines,
        tokenizer: Arc::new(started.tokenizer),
        template: Arc::new(started.template),
        context,
        embedder,
        cache,
    })
}

async fn load_embedder(
    args: &ServeArgs,
    device: &Device,
    padding: Padding,
) -> anyhow::Result<Option<(String, EmbedHandle)>> {
    let Some(dir) = args.embedding_model.clone() else {
        return Ok(None);
    };
    let name = args.embedding_name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "embedding".to_owned())
    });
    let dev = device.clone();
    let embedder = tokio::task::spawn_blocking(move || Embedder::load(&dir, &dev)).await??;
    Ok(Some((name, EmbedHandle::start(embedder, padding))))
}
