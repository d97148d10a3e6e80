use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

// mimalloc: request handling allocates many small, short-lived buffers on several threads
// (HTTP, JSON, protobuf, HTTP/2 frames); glibc's malloc was a tenth of the gateway's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The inferpool operator.
#[derive(Debug, Parser)]
#[command(name = "inferpool-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the InferencePool CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller against the cluster of the current kubeconfig or service account
    /// (one replica leads through a Lease and reconciles; the others stand by).
    Run(Box<RunArgs>),
    /// Serve the gateway (the pools' OpenAI endpoint) for the pools of the cluster: the
    /// data plane alone, every replica serving, no lease.
    Gateway(Box<GatewayArgs>),
    /// Print the controller's ClusterRole and (leader Lease) Role and the gateway's
    /// ClusterRole as YAML.
    Rbac {
        /// The operator's namespace, for the Role.
        #[arg(long, default_value = "inferpool-system")]
        namespace: String,
        /// Print only the rules of one role (`cluster` or `lease` of the controller,
        /// `gateway`), as the chart includes them.
        #[arg(long, value_parser = ["cluster", "lease", "gateway"])]
        rules_of: Option<String>,
    },
    /// Run the pools of a manifest on this machine without Kubernetes: agents on
    /// 127.0.0.1 and the gateway in front of them.
    Local(Box<inferpool_operator::local::LocalArgs>),
    /// Check InferencePool manifests with the schema's rules, without a cluster.
    Validate {
        /// Manifest files (YAML, several documents allowed).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Agent image for CPU pools.
    #[arg(
        long,
        env = "INFERPOOL_AGENT_IMAGE",
        default_value = "ghcr.io/inferpool/agent:0.1.0"
    )]
    agent_image: String,
    /// Agent image for GPU pools.
    #[arg(
        long,
        env = "INFERPOOL_AGENT_CUDA_IMAGE",
        default_value = "ghcr.io/inferpool/agent-cuda:0.1.0"
    )]
    agent_cuda_image: String,
    /// CPU for agents of pools that set none (e.g. `2`).
    #[arg(long, env = "INFERPOOL_AGENT_DEFAULT_CPU")]
    agent_default_cpu: Option<String>,
    /// Memory for agents of pools that set none (e.g. `4Gi`).
    #[arg(long, env = "INFERPOOL_AGENT_DEFAULT_MEMORY")]
    agent_default_memory: Option<String>,
    /// Give each pool's agents a NetworkPolicy that admits gRPC only from the gateway's
    /// pods (in the lease namespace, i.e. the release's own).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    agent_network_policy: bool,
    /// Base URL of the gateway that serves the pools, written to `status.endpoint`.
    #[arg(long, env = "INFERPOOL_GATEWAY_URL")]
    gateway_url: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "INFERPOOL_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: std::net::SocketAddr,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "inferpool-operator")]
    lease_name: String,
    /// Seconds a leader's lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// This replica's identity in the Lease (defaults to the pod name, else host-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Serve the agents' API ports over TLS with this Secret (tls.crt, tls.key, ca.crt),
    /// which must exist in every pool's namespace; probes move to a plain health port.
    /// Empty: plain HTTP and h2c.
    #[arg(long, env = "INFERPOOL_AGENT_TLS_SECRET")]
    agent_tls_secret: Option<String>,
    /// With --agent-tls-secret: agents require client certificates signed by its ca.crt.
    #[arg(
        long,
        env = "INFERPOOL_AGENT_TLS_MUTUAL",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    agent_tls_mutual: bool,
    /// How the controller dials the agents (the autoscaler follows their load): the
    /// gateway's flags, TLS included.
    #[command(flatten)]
    upstream: inferpool_operator::gateway::upstream::channel::UpstreamFlags,
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// Address of the gateway (the pools' OpenAI endpoint and the gateway's /metrics).
    #[arg(long, env = "INFERPOOL_GATEWAY_ADDR", default_value = "0.0.0.0:8000")]
    gateway_addr: std::net::SocketAddr,
    /// Address of /healthz and /readyz (ready once the pools and agents are listed).
    #[arg(long, env = "INFERPOOL_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: std::net::SocketAddr,
    /// Longest a request waits at the gateway for a free agent before a 429.
    #[arg(long, default_value_t = 10)]
    gateway_queue_wait_seconds: u64,
    /// Gateway listening sockets, one accept loop each (default: one per CPU the process
    /// may use).
    #[arg(long, env = "INFERPOOL_GATEWAY_WORKERS")]
    gateway_workers: Option<usize>,
    #[command(flatten)]
    http: inferpool_operator::gateway::http::limits::HttpSettings,
    #[command(flatten)]
    upstream: inferpool_operator::gateway::upstream::channel::UpstreamFlags,
    #[command(flatten)]
    auth: inferpool_operator::gateway::auth::AuthFlags,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(*args)?,
        Command::Gateway(args) => gateway(*args)?,
        Command::Local(args) => local(*args)?,
        Command::Crd => {
            let yaml = inferpool_operator::crd::crd_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
        }
        Command::Validate { files } => validate(&files)?,
        Command::Rbac {
            namespace,
            rules_of,
        } => print_rbac(&namespace, rules_of.as_deref())?,
    }
    Ok(())
}

fn print_rbac(namespace: &str, rules_of: Option<&str>) -> anyhow::Result<()> {
    use inferpool_operator::rbac::{Rules, rbac_yaml, rules_yaml};
    let text = match rules_of {
        Some("cluster") => rules_yaml(Rules::Controller)?,
        Some("lease") => rules_yaml(Rules::Lease)?,
        Some(_) => rules_yaml(Rules::Gateway)?,
        None => rbac_yaml(namespace)?,
    };
    print!("{text}");
    Ok(())
}

fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let pools = inferpool_operator::manifest::parse_pools(&text)
            .with_context(|| file.display().to_string())?;
        for pool in pools {
            let name = pool.metadata.name.unwrap_or_default();
            println!("{}: InferencePool {name} is valid", file.display());
        }
    }
    Ok(())
}

/// Logs to stderr, filtered by RUST_LOG (default info); JSON lines in a cluster.
fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[tokio::main]
async fn local(args: inferpool_operator::local::LocalArgs) -> anyhow::Result<()> {
    init_tracing(false);
    inferpool_operator::local::run_local(args).await
}

#[tokio::main]
async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    init_tracing(true);
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server")?;
    let config = inferpool_operator::gateway_run::GatewayConfig {
        addr: args.gateway_addr,
        health_addr: args.health_addr,
        queue_wait: std::time::Duration::from_secs(args.gateway_queue_wait_seconds),
        workers: args
            .gateway_workers
            .unwrap_or_else(inferpool_protocol::listen::default_workers),
        http: args.http,
        upstream: args.upstream.settings().context("the agent links' TLS")?,
        auth: args.auth,
    };
    inferpool_operator::gateway_run::serve(client, config).await
}

#[tokio::main]
async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(true);
    // Flags first: a bad TLS setting fails before the cluster is reached.
    let config = run_config(args)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server")?;
    inferpool_operator::run::run(client, config).await
}

fn run_config(args: RunArgs) -> anyhow::Result<inferpool_operator::run::RunConfig> {
    use inferpool_operator::controller::tls::AgentTls;
    use inferpool_operator::leader::LeaseSettings;
    let agent_tls = AgentTls::from_flags(args.agent_tls_secret.as_deref(), args.agent_tls_mutual)?;
    let upstream = args.upstream.settings().context("the agent links' TLS")?;
    let settings = controller_settings(&args, agent_tls, upstream);
    let identity = args.identity.unwrap_or_else(default_identity);
    Ok(inferpool_operator::run::RunConfig {
        settings,
        lease: LeaseSettings {
            name: args.lease_name,
            namespace: args.lease_namespace,
            identity,
            duration: std::time::Duration::from_secs(args.lease_duration_seconds),
        },
        health_addr: args.health_addr,
    })
}

fn controller_settings(
    args: &RunArgs,
    agent_tls: Option<inferpool_operator::controller::tls::AgentTls>,
    upstream: inferpool_operator::gateway::upstream::channel::UpstreamSettings,
) -> inferpool_operator::controller::run::ControllerSettings {
    use inferpool_operator::controller::deployment::{AgentImages, DefaultResources};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    inferpool_operator::controller::run::ControllerSettings {
        images: AgentImages {
            cpu: args.agent_image.clone(),
            cuda: args.agent_cuda_image.clone(),
        },
        resources: DefaultResources {
            cpu: args.agent_default_cpu.clone().map(Quantity),
            memory: args.agent_default_memory.clone().map(Quantity),
        },
        gateway: args.gateway_url.clone(),
        network_policy_for: args
            .agent_network_policy
            .then(|| args.lease_namespace.clone()),
        agent_tls,
        upstream,
        fence: Default::default(),
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn flags_do_not_collide() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_agent_tls_flags() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => Some(run),
            _ => None,
        };
        let on = parse(&[
            "inferpool-operator",
            "run",
            "--agent-tls-secret=agent-tls",
            "--agent-tls-mutual",
            "--upstream-tls-dir=/etc/inferpool/agent-tls",
            "--upstream-tls-server-name=agents.example",
        ])
        .unwrap();
        assert_eq!(on.agent_tls_secret.as_deref(), Some("agent-tls"));
        assert!(on.agent_tls_mutual);
        assert_eq!(on.upstream.upstream_tls_server_name, "agents.example");
        let off = parse(&["inferpool-operator", "run", "--agent-tls-mutual=false"]).unwrap();
        assert!(!off.agent_tls_mutual);
        assert_eq!(off.upstream.upstream_tls_dir, None);
    }
}
