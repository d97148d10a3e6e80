use clap::{Parser, Subcommand};

/// The inferpool node agent.
#[derive(Debug, Parser)]
#[command(name = "inferpool-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Discover this node's GPUs (or the CPU fallback) and print them as JSON.
    Devices,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devices => {
            let inventory = inferpool_agent::gpu::discover();
            println!("{}", serde_json::to_string_pretty(&inventory)?);
        }
    }
    Ok(())
}
