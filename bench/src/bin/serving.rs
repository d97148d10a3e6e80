//! Serving benchmark: the inferpool agent against llama.cpp's own server (continuous
//! batching with 16 parallel slots), same GGUF, same threads, driven by the same load
//! generator over loopback HTTP (streaming chat completions). One server runs at a time so
//! they never share the cores, and each is started fresh for every column of every round.
//!
//! It prints the CPU and the vector extensions the kernels pick from, the prompts' sizes
//! (as the agent counts them), then up to four markdown tables (`--phases`), each cell
//! holding every round's figure ("70.1 / 74.3", rounds alternating the servers) so that
//! the machine's drift shows beside the gap between them:
//! - short prompts at 1, 4 and 16 streams: single-stream decode and prompt tokens/s, and
//!   per load aggregate output tokens/s, TTFT and latency p50/p99, then peak RSS; the
//!   agent with an f32 KV cache runs the 16-stream load beside the default f16 one;
//! - long prompts (~1100 tokens, 16 streams): peak RSS after them first, with TTFT and
//!   throughput, for the agent's f16 and f32 KV caches and llama.cpp;
//! - a shared prefix (16 streams, one ~600-token system prompt, a distinct user turn each,
//!   after one warm-up request): TTFT p50/p99 and aggregate tokens/s for the agent with
//!   prefix caching on and off and llama.cpp with `cache_prompt`;
//! - the agent alone under every `batching.strategy` with every `batching.padding`, on the
//!   16-stream short-prompt load: a row per setting.

#[path = "../serving/jobs.rs"]
mod jobs;
#[path = "../serving/load.rs"]
mod load;
#[path = "../serving/report.rs"]
mod report;
#[path = "../serving/servers.rs"]
mod servers;
#[path = "../serving/workloads.rs"]
mod workloads;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use jobs::{Job, LONG_MAX_TOKENS, SCENARIOS};
use report::Figures;
use servers::{Batching, SLOT_CONTEXT, SLOTS, Setup, Spec};
use workloads::{Prompts, SHARED_MAX_TOKENS};

#[derive(Debug, Parser)]
struct Args {
    /// The inferpool-agent binary (release build).
    #[arg(long)]
    agent: PathBuf,
    /// The llama-server binary.
    #[arg(long)]
    llama_server: PathBuf,
    /// The GGUF both serve.
    #[arg(long)]
    model: PathBuf,
    /// Threads for both.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds: each runs every server once, in the tables' column order.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// The tables to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "streams,long-prompt,shared-prefix,strategy-padding"
    )]
    phases: Vec<PhaseName>,
}

/// The tables, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PhaseName {
    Streams,
    LongPrompt,
    SharedPrefix,
    StrategyPadding,
}

/// One table: the servers in its columns and what each runs.
struct Phase {
    title: String,
    note: String,
    columns: Vec<Column>,
    /// How the table is laid out.
    layout: Layout,
}

/// A table against llama.cpp (a column per server, the last llama.cpp, with a ratio
/// column), or the agent's settings compared among themselves (a row per setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    AgainstLlama,
    Settings,
}

struct Column {
    label: String,
    spec: Spec,
    job: Job,
}

fn column(label: &str, spec: Spec, job: Job) -> Column {
    Column {
        label: label.to_owned(),
        spec,
        job,
    }
}

const fn inferpool(kv_cache_dtype: &'static str, prefix_caching: bool) -> Spec {
    Spec::Inferpool(Batching {
        kv_cache_dtype,
        prefix_caching,
        ..Batching::DEFAULT
    })
}

fn streams_phase() -> Phase {
    let llama = Spec::Llama {
        slot_context: SLOT_CONTEXT,
    };
    Phase {
        title: "Short prompts at 1, 4 and 16 streams".into(),
        note: format!(
            "Requests × tokens: 4 × 128 at 1 stream, 8 × 64 at 4, 32 × 64 at 16. llama.cpp: \
             -np {SLOTS} -c {}. The KV f32 column runs only the 16-stream load.",
            SLOTS * SLOT_CONTEXT
        ),
        columns: vec![
            column(
                "inferpool",
                inferpool("f16", true),
                Job::Streams(&SCENARIOS),
            ),
            column(
                "inferpool (KV f32)",
                inferpool("f32", true),
                Job::Streams(&SCENARIOS[2..]),
            ),
            column("llama.cpp server", llama, Job::Streams(&SCENARIOS)),
        ],
        layout: Layout::AgainstLlama,
    }
}

fn long_prompt_phase(p: &Prompts) -> Phase {
    // llama.cpp refuses a prompt over its slot's context, and allocates every slot's
    // KV at start: the slots are sized to the prompt (and a margin for its own chat
    // template's count), not larger, so that its RSS is not inflated.
    let slot_context = (p.long_tokens + LONG_MAX_TOKENS as usize + 64).next_multiple_of(128);
    let job = Job::LongPrompt;
    Phase {
        title: format!("Long prompts: {SLOTS} streams of ~{} tokens", p.long_tokens),
        note: format!(
            "One request a stream, each prompt distinct from its first line ({} paragraphs), \
             {LONG_MAX_TOKENS} tokens out. Peak RSS is the server process's VmHWM. \
             llama.cpp: -np {SLOTS} -c {} ({slot_context} tokens a slot).",
            p.long_repeats,
            SLOTS * slot_context
        ),
        columns: vec![
            column("inferpool", inferpool("f16", true), job),
            column("inferpool (KV f32)", inferpool("f32", true), job),
            column("llama.cpp server", Spec::Llama { slot_context }, job),
        ],
        layout: Layout::AgainstLlama,
    }
}

fn shared_prefix_phase(p: &Prompts) -> Phase {
    let job = Job::SharedPrefix;
    let llama = Spec::Llama {
        slot_context: SLOT_CONTEXT,
    };
    Phase {
        title: format!(
            "Shared prefix: {SLOTS} streams, one ~{}-token system prompt",
            p.system_tokens
        ),
        note: format!(
            "One warm-up request with the system prompt, then {SLOTS} at once, each with its \
             own user turn ({} prompt tokens in all), {SHARED_MAX_TOKENS} tokens out. \
             llama.cpp: cache_prompt on (its per-slot prompt cache), -np {SLOTS} -c {}.",
            p.shared_tokens,
            SLOTS * SLOT_CONTEXT
        ),
        columns: vec![
            column("inferpool (prefix cache)", inferpool("f16", true), job),
            column("inferpool (no prefix cache)", inferpool("f16", false), job),
            column("llama.cpp (cache_prompt)", llama, job),
        ],
        layout: Layout::AgainstLlama,
    }
}

/// Every `batching.strategy` with every `batching.padding` on one load: the short prompts
/// at 16 streams.
fn strategy_padding_phase() -> Phase {
    const STRATEGIES: [&str; 4] = ["continuous", "dynamic", "adaptive", "static"];
    const PADDINGS: [&str; 3] = ["none", "longest", "bucket"];
    let job = Job::Streams(&SCENARIOS[2..]);
    let columns = STRATEGIES
        .iter()
        .flat_map(|&strategy| PADDINGS.iter().map(move |&padding| (strategy, padding)))
        .map(|(strategy, padding)| {
            let batching = Batching {
                strategy,
                padding,
                ..Batching::DEFAULT
            };
            column(
                &format!("{strategy}, {padding}"),
                Spec::Inferpool(batching),
                job,
            )
        })
        .collect();
    Phase {
        title: "Batching strategy x padding: the agent at 16 streams".into(),
        note: "Short prompts, 32 requests x 64 tokens at 16 streams; every other setting \
               the agent's default (maxWaitMilliseconds 10; adaptive with targets of 2 s \
               to first token and 100 ms a token)."
            .into(),
        columns,
        layout: Layout::Settings,
    }
}

fn phase(name: PhaseName, prompts: &Prompts) -> Phase {
    match name {
        PhaseName::Streams => streams_phase(),
        PhaseName::LongPrompt => long_prompt_phase(prompts),
        PhaseName::SharedPrefix => shared_prefix_phase(prompts),
        PhaseName::StrategyPadding => strategy_padding_phase(),
    }
}

/// Every round's figures, `[phase][column][round]`.
fn run_rounds(
    setup: &Setup,
    phases: &[Phase],
    prompts: &Prompts,
    rounds: u16,
) -> anyhow::Result<Vec<Vec<Vec<Figures>>>> {
    let mut results: Vec<Vec<Vec<Figures>>> = phases
        .iter()
        .map(|p| p.columns.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 1..=rounds {
        for (phase, out) in phases.iter().zip(&mut results) {
            for (column, out) in phase.columns.iter().zip(out.iter_mut()) {
                let what = || format!("round {round}, {}: {}", phase.title, column.label);
                let server = servers::start(setup, column.spec).with_context(what)?;
                out.push(jobs::measure(&server, column.job, prompts).with_context(what)?);
                eprintln!("{} done", what());
            }
        }
    }
    Ok(results)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let setup = Setup {
        agent: args.agent,
        llama_server: args.llama_server,
        model: args.model,
        threads: args.threads,
    };
    println!("{}", inferpool_bench::cpu_header());
    // The long texts are sized once, on an agent of their own, before anything is timed.
    let probe = servers::start(&setup, inferpool("f16", true)).context("the sizing agent")?;
    let prompts = workloads::calibrate(&probe.target)?;
    drop(probe);
    println!(
        "model: {}, {} threads, {} rounds (each cell: round 1 / round 2 / ...; every server \
         started fresh per column and round, one at a time, in column order)",
        setup.model.display(),
        setup.threads,
        args.rounds
    );
    println!(
        "prompt tokens (usage.prompt_tokens, agent): long prompt {}, shared-prefix request {} \
         (system prompt ~{}) + {SHARED_MAX_TOKENS} out",
        prompts.long_tokens, prompts.shared_tokens, prompts.system_tokens
    );
    let phases: Vec<Phase> = args.phases.iter().map(|&n| phase(n, &prompts)).collect();
    let results = run_rounds(&setup, &phases, &prompts, args.rounds)?;
    for (phase, rounds) in phases.iter().zip(&results) {
        let labels: Vec<String> = phase.columns.iter().map(|c| c.label.clone()).collect();
        match phase.layout {
            Layout::AgainstLlama => report::table(&phase.title, &phase.note, &labels, rounds),
            Layout::Settings => report::rows(&phase.title, &phase.note, &labels, rounds),
        }
    }
    Ok(())
}
