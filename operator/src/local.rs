//! `inferpool-operator local -f pool.yaml`: a whole pool on this machine without
//! Kubernetes. Each pool's agents run as child processes on 127.0.0.1 (restarted when one
//! dies), the gateway serves them through static discovery, and Ctrl-C or SIGTERM stops
//! everything cleanly (agents get SIGTERM and drain). A pool with `spec.autoscaling`
//! starts and stops its agents by its load instead (see `local_scale`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use inferpool_protocol::listen::WorkerSockets;
use tokio::sync::watch;

use crate::api::InferencePool;
use crate::controller::config::{ResolvedSource, agent_config, persistent_cache, render};
use crate::gateway::auth::AuthFlags;
use crate::gateway::core::view::Endpoint;
use crate::gateway::discovery::{Discovery as _, StaticDiscovery};
use crate::gateway::dispatch::gateway::Gateway;
use crate::gateway::http::limits::HttpSettings;
use crate::gateway::runtime;
use crate::gateway::upstream::channel::UpstreamFlags;
use crate::local_agent::{AgentSlot, LocalTls, supervise};
use crate::local_scale::{self, ScaledPool};

/// Settings of local mode.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// InferencePool manifests (YAML, several documents allowed).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// The agent binary (default: `inferpool-agent` beside this binary).
    #[arg(long, env = "INFERPOOL_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,
    /// Where `hack/fetch-models` put the models (`bundled` resolves here).
    #[arg(long, env = "INFERPOOL_MODELS")]
    pub models: Option<PathBuf>,
    /// Longest a request waits for a free agent before a 429.
    #[arg(long, default_value_t = 10)]
    pub queue_wait_seconds: u64,
    /// How long a stopped agent may take to finish its requests (its
    /// `--drain-grace-seconds`).
    #[arg(long, default_value_t = 30)]
    pub drain_grace_seconds: u64,
    /// Serve the (single) pool with agents already running at these addresses (each its
    /// gRPC address, a comma, its HTTP address), named `<pool>-0`, `<pool>-1`, ... in this
    /// order, instead of starting agents (static discovery; loopback only).
    #[arg(long = "agent", value_name = "GRPC_ADDR,HTTP_ADDR", value_parser = agent_addrs)]
    pub agents: Vec<(SocketAddr, SocketAddr)>,
    /// Gateway listening sockets, one accept loop each (default: one agent's CPU share
    /// beside agents it starts, every CPU with `--agent`).
    #[arg(long)]
    pub gateway_workers: Option<usize>,
    /// The gateway's HTTP limits and TLS.
    #[command(flatten)]
    pub http: HttpSettings,
    /// Timeouts and TLS of the gateway's links to the agents (with `--upstream-tls-dir`
    /// the agents started here serve that directory's certificate).
    #[command(flatten)]
    pub upstream: UpstreamFlags,
    /// With `--upstream-tls-dir`: the agents started here require the gateway's client
    /// certificate (mutual TLS).
    #[arg(long, requires = "upstream_tls_dir")]
    pub agent_tls_mutual: bool,
    /// The gateway's API keys.
    #[command(flatten)]
    pub auth: AuthFlags,
}

/// The TLS of the agents local mode starts: the gateway's upstream directory, if any.
fn local_tls(args: &LocalArgs) -> Option<LocalTls> {
    let dir = args.upstream.upstream_tls_dir.clone()?;
    Some(LocalTls {
        dir,
        mutual: args.agent_tls_mutual,
    })
}

/// The CPUs each of `agents` agents gets of those this process may use: an equal share,
/// at least one.
pub fn cpu_share(agents: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus / agents.max(1)).max(1)
}

/// Agents the pools start (at most, for autoscaled ones).
fn agents_in(pools: &[InferencePool]) -> usize {
    pools.iter().map(|p| agents_of(p) as usize).sum()
}

/// Agents one pool runs: its replicas (0 too: a pool scaled to zero holds its requests
/// until their deadline, as in a cluster), or for an autoscaled pool its `maxReplicas`.
fn agents_of(pool: &InferencePool) -> i32 {
    match &pool.spec.autoscaling {
        Some(a) => a.max_replicas.max(1),
        None => pool.spec.replicas.max(0),
    }
}

/// The bundled model, relative to the models folder.
const BUNDLED: &str = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The embedding model, relative to the models folder.
const EMBEDDING: &str = "all-minilm-l6-v2";

/// Runs the pools until Ctrl-C or SIGTERM.
pub async fn run_local(args: LocalArgs) -> anyhow::Result<()> {
    let pools = read_pools(&args.files)?;
    let state = tempdir_for_run()?;
    let upstream = args.upstream.settings().context("the agent links' TLS")?;
    let gateway = Gateway::with_upstream(upstream);
    if let Some(auth) = args.auth.load()? {
        gateway.set_auth(auth);
    }
    let (stop, stopped) = watch::channel(false);
    let mut supervisors = Vec::new();
    let mut routed = Vec::new();
    let mut scaled = Vec::new();
    if args.agents.is_empty() {
        let models = args.models.clone().unwrap_or_else(default_models_dir);
        let binary = agent_binary(args.agent_binary.as_deref())?;
        let cpus = cpu_share(agents_in(&pools));
        for pool in &pools {
            let mut slots = prepare_pool(pool, &models, &binary, &state)?;
            for (slot, _) in &mut slots {
                slot.drain_grace_seconds = args.drain_grace_seconds;
                slot.cpus = cpus;
                slot.tls = local_tls(&args);
            }
            if let Some(spec) = pool.spec.autoscaling.clone() {
                routed.push((pool.clone(), Vec::new()));
                scaled.push(ScaledPool::new(pool, spec, slots));
                continue;
            }
            let endpoints = slots.iter().map(|(_, e)| e.clone()).collect();
            routed.push((pool.clone(), endpoints));
            for (slot, _) in slots {
                supervisors.push(tokio::spawn(supervise(slot, stopped.clone())));
            }
        }
    } else {
        routed.push(running_agents(&pools, &args)?);
    }
    let queue_wait = Duration::from_secs(args.queue_wait_seconds);
    let discovery = StaticDiscovery {
        pools: routed,
        queue_wait,
    };
    discovery.run(gateway.clone()).await;
    let scaler = local_scale::run(gateway.clone(), scaled, stopped.clone());
    supervisors.push(tokio::spawn(scaler));
    // Beside the agents it starts, the gateway takes one agent's share of the CPUs; with
    // agents running elsewhere (`--agent`) the CPUs are all its own.
    let count = args.gateway_workers.unwrap_or_else(|| {
        if args.agents.is_empty() {
            cpu_share(agents_in(&pools))
        } else {
            inferpool_protocol::listen::default_workers()
        }
    });
    let bound =
        WorkerSockets::bind(args.addr, count).with_context(|| format!("binding {}", args.addr))?;
    tracing::info!(addr = %bound.addr(), pools = pools.len(), workers = count, "gateway listening");
    let (stop_serving, serving) = watch::channel(false);
    let workers = runtime::start_with(bound, &gateway, &serving, args.http.clone())?;
    crate::run::wait_for_signal().await;
    let _ = stop_serving.send(true);
    workers.join().await?;
    tracing::info!("stopping agents");
    let _ = stop.send(true);
    for s in supervisors {
        let _ = s.await;
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn read_pools(files: &[PathBuf]) -> anyhow::Result<Vec<InferencePool>> {
    let mut pools = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        pools.extend(
            crate::manifest::parse_pools(&text).with_context(|| file.display().to_string())?,
        );
    }
    anyhow::ensure!(!pools.is_empty(), "no InferencePool in the given files");
    Ok(pools)
}

/// `$INFERPOOL_CACHE`, or `~/.cache/inferpool`.
fn cache_root() -> PathBuf {
    std::env::var_os("INFERPOOL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/inferpool")
        })
}

fn default_models_dir() -> PathBuf {
    cache_root().join("models")
}

fn agent_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()?.with_file_name("inferpool-agent"),
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build inferpool-agent first",
        path.display()
    );
    Ok(path)
}

fn tempdir_for_run() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("inferpool-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `GRPC_ADDR,HTTP_ADDR`.
fn agent_addrs(text: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (grpc, http) = text
        .split_once(',')
        .ok_or_else(|| format!("{text:?}: expected GRPC_ADDR,HTTP_ADDR"))?;
    let parse = |a: &str| {
        a.trim()
            .parse::<SocketAddr>()
            .map_err(|e| format!("{a:?}: {e}"))
    };
    Ok((parse(grpc)?, parse(http)?))
}

/// Writes each agent's config and returns the slots to supervise with their addresses.
fn prepare_pool(
    pool: &InferencePool,
    models: &Path,
    binary: &Path,
    state: &Path,
) -> anyhow::Result<Vec<(AgentSlot, Endpoint)>> {
    let name = pool
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "pool".to_owned());
    let model = model_path(&pool.spec.model.source, models)?;
    let (rendered, _) = render(&agent_config(
        pool,
        &ResolvedSource::Path(model.display().to_string()),
    ));
    let replicas = agents_of(pool);
    let mut slots = Vec::new();
    // Every listener stays open until the pool's ports are all chosen: a port is free
    // again once its probe closes, and two agents (or one agent's two servers) given the
    // same one would fail to start.
    let mut probes = Vec::new();
    for i in 0..replicas {
        let (http, grpc) = (free_port(&mut probes)?, free_port(&mut probes)?);
        let health = free_port(&mut probes)?;
        let mut config: serde_json::Value = serde_json::from_str(&rendered)?;
        config["httpPort"] = http.port().into();
        config["grpcPort"] = grpc.port().into();
        if persistent_cache(pool) {
            // As a pod keeps its volume, agent i keeps its directory across runs.
            let dir = cache_root().join("local").join(format!("{name}-{i}"));
            config["cacheDir"] = dir.display().to_string().into();
        }
        let path = state.join(format!("{name}-{i}.json"));
        std::fs::write(&path, config.to_string())?;
        let embedding = Some(models.join(EMBEDDING)).filter(|p| p.is_dir());
        let id = format!("{name}-{i}");
        slots.push((
            AgentSlot {
                id: id.clone(),
                binary: binary.to_owned(),
                config: path,
                embedding,
                drain_grace_seconds: 30,
                cpus: 1,
                tls: None,
                health,
            },
            Endpoint { id, grpc, http },
        ));
    }
    Ok(slots)
}

/// The one pool and the agents named by `--agent`.
fn running_agents(
    pools: &[InferencePool],
    args: &LocalArgs,
) -> anyhow::Result<(InferencePool, Vec<Endpoint>)> {
    let [pool] = pools else {
        anyhow::bail!(
            "--agent serves exactly one pool; the files hold {}",
            pools.len()
        );
    };
    let name = pool.metadata.name.as_deref().unwrap_or("pool");
    anyhow::ensure!(
        args.agents
            .iter()
            .all(|(grpc, http)| grpc.ip().is_loopback() && http.ip().is_loopback()),
        "--agent takes loopback addresses only"
    );
    let endpoints: Vec<Endpoint> = args
        .agents
        .iter()
        .enumerate()
        .map(|(i, &(grpc, http))| Endpoint {
            id: format!("{name}-{i}"),
            grpc,
            http,
        })
        .collect();
    Ok((pool.clone(), endpoints))
}

fn model_path(source: &str, models: &Path) -> anyhow::Result<PathBuf> {
    if source == crate::api::BUNDLED_SOURCE {
        return Ok(models.join(BUNDLED));
    }
    anyhow::ensure!(
        source.starts_with('/'),
        "local mode serves `bundled` or an absolute path, not {source:?}"
    );
    Ok(PathBuf::from(source))
}

/// A port free on loopback, distinct from those of the probes in `held` (kept open).
fn free_port(held: &mut Vec<std::net::TcpListener>) -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = probe.local_addr()?;
    held.push(probe);
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_gets_an_equal_share_of_at_least_one_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(cpu_share(1), cpus);
        assert_eq!(cpu_share(0), cpus);
        assert_eq!(cpu_share(2), (cpus / 2).max(1));
        assert_eq!(cpu_share(cpus * 4), 1);
    }
}
