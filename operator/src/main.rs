use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
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
    /// Check InferencePool manifests with the schema's rules, without a cluster.
    Validate {
        /// Manifest files (YAML, several documents allowed).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            let yaml = inferpool_operator::crd::crd_yaml()?;
            std::io::stdout().lock().write_all(yaml.as_bytes())?;
        }
        Command::Validate { files } => validate(&files)?,
    }
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
