use clap::{Parser, Subcommand};
use inferpool_agent::server::run::{ServeArgs, serve};

// mimalloc: a request makes many small, short-lived allocations (tokenizing a prompt alone
// makes hundreds); with glibc's malloc they were a third of a cached request's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The inferpool node agent.
#[derive(Debug, Parser)]
#[command(name = "inferpool-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Discover this node's GPUs (or the CPU fallback) with their NVML readings.
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// CPU devices to list when there is no GPU.
        #[arg(long, default_value_t = 1)]
        cpu_devices: u32,
    },
    /// Load the pool's model and serve it over HTTP and gRPC until SIGTERM.
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devices { json, cpu_devices } => {
            let host = inferpool_agent::server::devices::host_memory();
            let inventory = inferpool_agent::gpu::discover(cpu_devices, host);
            let report = inferpool_agent::gpu::report::NodeReport::read(inventory);
            match json {
                true => println!("{}", serde_json::to_string_pretty(&report)?),
                false => print!("{}", report.table()),
            }
        }
        Command::Serve(args) => {
            init_tracing();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(args))?;
        }
    }
    Ok(())
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
