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
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::caching::{self, ServedModels};
use super::grpc::{GrpcAgent, set_health};
use crate::config::AgentConfig;
use crate::engine::embed::Embedder;
use crate::engine::kv::{BlockBudget, KvCacheDtype};
use crate::engine::load::{LoadedModel, load};
use crate::engine::rows::Padding;
use crate::engine::sampling::SamplingParams;
use crate::generation::{GenerationEvent, GenerationRequest, Priority};
use crate::gpu::Inventory;
use crate::scheduler::batcher::EngineHandle;
use crate::scheduler::embed_batcher::EmbedHandle;
use crate::serving::{Agent, Phase, Served};

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
}

/// How long the servers may take to close their connections once drained.
const SERVERS_CLOSE: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM (or SIGINT) and a drain.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = AgentConfig::read(&args.config)?;
    let inventory = crate::gpu::discover();
    let device = pick_device(&inventory, config.gpus);
    tracing::info!(device = ?device, devices = ?inventory.devices, fallback = ?inventory.cpu_fallback_reason, "devices");
    let agent = Agent::new(inventory, config.batching.max_batch_size);
    let (stop, stopped) = watch::channel(false);
    let servers = start_servers(&agent, &args, &config, stopped).await?;
    let loading = tokio::spawn(load_and_warm(
        agent.clone(),
        config.clone(),
        args.clone(),
        device,
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

fn pick_device(inventory: &Inventory, gpus: u32) -> Device {
    if gpus == 0 || !inventory.has_gpu() {
        return Device::Cpu;
    }
    match Device::new_cuda(0) {
        Ok(device) => device,
        Err(e) => {
            tracing::warn!(error = %e, "a GPU is present but this build cannot use it; running on CPU");
            Device::Cpu
        }
    }
}

async fn start_servers(
    agent: &Arc<Agent>,
    args: &ServeArgs,
    config: &AgentConfig,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let http_addr = SocketAddr::new(args.host, args.http_port.unwrap_or(config.http_port));
    let grpc_addr = SocketAddr::new(args.host, args.grpc_port.unwrap_or(config.grpc_port));
    let http = bind(http_addr).await?;
    let workers = args.grpc_workers.unwrap_or_else(default_workers);
    let grpc =
        WorkerSockets::bind(grpc_addr, workers).with_context(|| format!("binding {grpc_addr}"))?;
    tracing::info!(http = %http.local_addr()?, grpc = %grpc.addr(), workers, "listening");
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    tokio::spawn(follow_phase(agent.watch_phase(), reporter.clone()));
    let router = super::http::router(agent.clone());
    let http_stop = until_stopped(stopped.clone());
    let http_task = tokio::spawn(async move {
        let served = axum::serve(http.tap_io(no_delay), router).with_graceful_shutdown(http_stop);
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let grpc_agent = GrpcAgent::new(agent.clone(), reporter, stopped.clone());
    let grpc_service = AgentServer::new(grpc_agent);
    let serve_grpc = move |listener: TcpListener| {
        let (health, service) = (health.clone(), grpc_service.clone());
        let stopped = stopped.clone();
        async move {
            let served = tonic::transport::Server::builder()
                .add_service(health)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming(listener), until_stopped(stopped));
            if let Err(e) = served.await {
                tracing::error!(error = %e, "gRPC server failed");
            }
            Ok(())
        }
    };
    let grpc_task = super::workers::start(grpc.into_sockets(), serve_grpc)?;
    Ok(vec![http_task, grpc_task])
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

/// grpc.health.v1 follows the phase: serving only while ready.
async fn follow_phase(mut phase: watch::Receiver<Phase>, reporter: HealthReporter) {
    loop {
        let status = match *phase.borrow_and_update() {
            Phase::Ready => ServingStatus::Serving,
            Phase::Loading | Phase::Draining => ServingStatus::NotServing,
        };
        set_health(&reporter, status).await;
        if phase.changed().await.is_err() {
            return;
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

/// Loads the model (and the embedding model), starts the engine, runs one warm-up
/// generation, then marks the agent ready. A model that cannot load ends the process.
async fn load_and_warm(agent: Arc<Agent>, config: AgentConfig, args: ServeArgs, device: Device) {
    match load_and_warm_inner(&config, &args, device).await {
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
    device: Device,
) -> anyhow::Result<Served> {
    let (path, format) = (config.model_path.clone(), config.model_format);
    let template = config.chat_template.clone();
    let dev = device.clone();
    let loaded: LoadedModel =
        tokio::task::spawn_blocking(move || load(&path, format, template.as_deref(), &dev))
            .await??;
    let embedder = load_embedder(args, &device, config.batching.padding).await?;
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
    let budget = kv_budget(&loaded, args, &device, config.batching.kv_cache_dtype);
    let engine = EngineHandle::start(loaded.model.clone(), config.batcher(budget.total()));
    let context = loaded.model.config.context.min(budget.capacity_tokens());
    tracing::info!(kv_blocks = budget.total(), "KV cache");
    warm_up(&engine, &loaded).await?;
    Ok(Served {
        name: config.served_name.clone(),
        engine,
        tokenizer: Arc::new(loaded.tokenizer),
        template: Arc::new(loaded.template),
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

const DEFAULT_CPU_KV_BYTES: u64 = 1 << 30;

fn kv_budget(
    loaded: &LoadedModel,
    args: &ServeArgs,
    device: &Device,
    dtype: KvCacheDtype,
) -> BlockBudget {
    let c = &loaded.model.config;
    let bytes_per_token = (c.layers * 2 * c.kv_heads * c.head_dim()) as u64 * dtype.bytes();
    let bytes = args.kv_cache_bytes.unwrap_or(match device {
        Device::Cpu => DEFAULT_CPU_KV_BYTES,
        _ => gpu_memory(device) / 5 * 2,
    });
    BlockBudget::from_bytes(bytes, bytes_per_token)
}

/// Memory of GPU 0, the one the engine runs on.
fn gpu_memory(_device: &Device) -> u64 {
    crate::gpu::discover()
        .devices
        .first()
        .map_or(DEFAULT_CPU_KV_BYTES, |d| d.memory_total_bytes)
}

/// One short greedy generation through the whole path, so that the first real request
/// does not pay for first-touch allocations.
async fn warm_up(engine: &EngineHandle, loaded: &LoadedModel) -> anyhow::Result<()> {
    let request = GenerationRequest {
        prompt: loaded.tokenizer.encode("Hello")?,
        max_tokens: 2,
        stop_tokens: vec![loaded.tokenizer.eos],
        deadline: None,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        priority: Priority::Critical,
    };
    let mut events = engine.generate(request).await?;
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Token(_) => {}
            GenerationEvent::Finished { .. } => return Ok(()),
            GenerationEvent::Failed(e) => anyhow::bail!("warm-up failed: {e}"),
            GenerationEvent::Expired => anyhow::bail!("warm-up expired"),
        }
    }
    anyhow::bail!("the engine stopped during warm-up")
}
