//! The response cache benchmark (see `inferpool_bench::cache`): precision and recall of
//! semantic matching by threshold, a cache of 100,000 entries in process, and that cache's
//! snapshot served by a real agent, timed at its HTTP API and through the gateway.

use std::path::PathBuf;

use candle_core::Device;
use clap::Parser;
use inferpool_agent::cache::ModelId;
use inferpool_agent::engine::embed::Embedder;
use inferpool_agent::server::caching::generation_revision;
use inferpool_bench::cache::{filled, pairs, served};
use inferpool_e2e::parts::ScratchDir;

#[derive(Debug, Parser)]
struct Args {
    /// The inferpool-agent binary (release build).
    #[arg(long)]
    agent: PathBuf,
    /// The inferpool-operator binary (release build).
    #[arg(long)]
    operator: PathBuf,
    /// The GGUF the agent serves.
    #[arg(long)]
    model: PathBuf,
    /// The embedding model's directory (all-MiniLM-L6-v2).
    #[arg(long)]
    embedding: PathBuf,
    /// The labelled pairs.
    #[arg(long, default_value = "bench/data/semantic-pairs.jsonl")]
    pairs: PathBuf,
    /// Labelled pairs written after the check was tuned, never used to tune it.
    #[arg(long, default_value = "bench/data/semantic-pairs-heldout.jsonl")]
    heldout: PathBuf,
    /// Entries of the filled cache (0: the precision and recall table only).
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Timed requests per hit kind and path.
    #[arg(long, default_value_t = 500)]
    requests: usize,
}

const MODEL: &str = "smollm2";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("# bench/cache\n\n{}", inferpool_bench::cpu_header());
    let embedder = Embedder::load(&args.embedding, &Device::Cpu)?;
    let tuned = pairs::read(&args.pairs)?;
    pairs::report("the pairs the check was tuned on", &embedder, &tuned, 0.95)?;
    let heldout = pairs::read(&args.heldout)?;
    pairs::report("held-out pairs", &embedder, &heldout, 0.95)?;
    if args.entries == 0 {
        return Ok(());
    }
    let model = ModelId {
        name: MODEL.to_owned(),
        revision: generation_revision(&args.model, "", Some(&args.embedding)),
    };
    let dir = ScratchDir::new("bench-cache")?;
    filled::report(
        &embedder,
        &model,
        args.entries,
        &dir.path().join("response-cache.snapshot"),
    )?;
    drop(embedder);
    let binaries = served::Binaries {
        agent: args.agent,
        operator: args.operator,
        model: args.model,
        embedding: args.embedding,
    };
    served::report(&binaries, MODEL, dir.path(), args.requests)
}
