use std::io::Write;

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            let yaml = inferpool_operator::crd::crd_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
        }
    }
    Ok(())
}
