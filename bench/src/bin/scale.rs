//! The autoscaling benchmark (issue #22), in local mode with real agent processes and the
//! default model.
//!
//! From zero: the first request to a pool at zero until its first token, split by what the
//! processes logged into the decision (the request to the autoscaler's `0 -> 1`), the
//! process start (to the agent's first line), the model load (to `model loaded`), the
//! warm-up (to `warmed up`), the rest of the agent's start (the embedding model, to
//! `ready`) and routing to the first token. Beside it, in the same run, a request to the
//! same pool once its agent serves (a warm pool's first token).
//!
//! A load step: `--burst` streams at once on a pool of one agent with one batch slot: the
//! time to the autoscaler's decision and until every agent it asked for serves, beside what
//! starting them one after another would take.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use inferpool_bench::process::{Process, until_ready};
use inferpool_bench::timeline::{self, Logged, between, first_after, nth_after};
use inferpool_e2e::http::{EventStream, free_port};
use inferpool_e2e::parts::ScratchDir;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The inferpool-operator binary (its inferpool-agent beside it).
    #[arg(long)]
    operator: PathBuf,
    /// Scale-from-zero rounds (the pool goes back to zero between them).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Streams of the load step, one agent each.
    #[arg(long, default_value_t = 3)]
    burst: usize,
}

const MODEL: &str = "smollm2-scale";
const POOL: &str = "scale";
/// Longest any one step may take.
const LIMIT: Duration = Duration::from_secs(180);

fn manifest(batch: u32, min: usize, max: usize, delay: u32) -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {POOL}\n\
         spec:\n  model:\n    source: bundled\n    servedName: {MODEL}\n  batching:\n    \
         maxBatchSize: {batch}\n  autoscaling:\n    minReplicas: {min}\n    maxReplicas: {max}\n    \
         targetLoad: 1.0\n    scaleDownDelaySeconds: {delay}\n"
    )
}

/// A local pool: the operator process (its agents are its children) and its log.
struct Local {
    _process: Process,
    addr: SocketAddr,
    log: PathBuf,
}

impl Local {
    fn start(operator: &Path, manifest: &str) -> anyhow::Result<Self> {
        let dir = ScratchDir::new("bench-scale")?;
        let file = dir.path().join("pool.yaml");
        std::fs::write(&file, manifest)?;
        let log = dir.path().join("local.log");
        let out = std::fs::File::create(&log)?;
        let addr = free_port()?;
        let child = Command::new(operator)
            .args(["local", "--addr", &addr.to_string(), "-f"])
            .arg(&file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let process = Process::new(child, dir);
        until_ready(addr, "/metrics", LIMIT)?;
        Ok(Self {
            _process: process,
            addr,
            log,
        })
    }

    fn lines(&self) -> Vec<Logged> {
        timeline::lines(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// When the `n`th line containing `needle` at or after `after` was logged, once it is.
    fn until_logged(&self, after: f64, needle: &str, n: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        loop {
            if let Some(at) = nth_after(&self.lines(), after, needle, n) {
                return Ok(at);
            }
            anyhow::ensure!(
                started.elapsed() < LIMIT,
                "{needle:?} not logged {n} time(s) within {LIMIT:?}"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

/// A streamed chat about `topic`: when it was sent and when its first token came.
fn first_token(addr: SocketAddr, topic: &str, max_tokens: u32) -> anyhow::Result<(f64, f64)> {
    let body = json!({"model": MODEL, "stream": true, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": format!("Tell me about {topic}.")}]});
    let sent = timeline::now();
    let mut stream = EventStream::open(addr, "/v1/chat/completions", &body)?;
    if stream.status != 200 {
        let status = stream.status;
        anyhow::bail!("{status}: {}", stream.rest());
    }
    while let Some(data) = stream.next_data()? {
        anyhow::ensure!(data != "[DONE]", "the stream ended without a token");
        let event: serde_json::Value = serde_json::from_str(&data)?;
        anyhow::ensure!(event.get("error").is_none(), "{data}");
        if event["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            let at = timeline::now();
            let _ = stream.rest();
            return Ok((sent, at));
        }
    }
    anyhow::bail!("the stream ended without a token")
}

/// One scale from zero, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct FromZero {
    decision: f64,
    process: f64,
    load: f64,
    warm_up: f64,
    rest: f64,
    first_token: f64,
    total: f64,
    warm: f64,
}

impl FromZero {
    const HEADER: &str = "| run | decision | process start | model load | warm-up | \
        embedding model etc. | route + first token | total | warm pool's first token |\n\
        |---|---|---|---|---|---|---|---|---|";

    fn row(&self, run: &str) -> String {
        let f = [
            self.decision,
            self.process,
            self.load,
            self.warm_up,
            self.rest,
            self.first_token,
            self.total,
            self.warm,
        ];
        let cells: Vec<String> = f.iter().map(|s| format!("{s:.3} s")).collect();
        format!("| {run} | {} |", cells.join(" | "))
    }

    /// The agent's own start: process, load, warm-up and the rest.
    fn agent_start(&self) -> f64 {
        self.process + self.load + self.warm_up + self.rest
    }
}

/// The pool at zero gets a request; then, with its agent serving, another.
fn from_zero(pool: &Local, run: usize) -> anyhow::Result<FromZero> {
    let (sent, first) = first_token(pool.addr, &format!("lighthouse number {run}"), 8)?;
    let lines = pool.lines();
    let at = |after: f64, needle: &str| {
        first_after(&lines, after, needle).ok_or_else(|| anyhow::anyhow!("no {needle:?} logged"))
    };
    let decided = at(sent, &format!("autoscale {POOL}: 0 -> 1 agents"))?;
    let started = at(decided, "inferpool_agent")?;
    let loaded = at(started, "model loaded")?;
    let warmed = at(loaded, "warmed up")?;
    let ready = at(warmed, ": ready ")?;
    let (warm_sent, warm_first) = first_token(pool.addr, &format!("harbour number {run}"), 8)?;
    Ok(FromZero {
        decision: between(sent, decided),
        process: between(decided, started),
        load: between(started, loaded),
        warm_up: between(loaded, warmed),
        rest: between(warmed, ready),
        first_token: between(ready, first),
        total: between(sent, first),
        warm: between(warm_sent, warm_first),
    })
}

fn median_of(rows: &[FromZero], f: fn(&FromZero) -> f64) -> f64 {
    let mut v: Vec<f64> = rows.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn medians(rows: &[FromZero]) -> FromZero {
    FromZero {
        decision: median_of(rows, |r| r.decision),
        process: median_of(rows, |r| r.process),
        load: median_of(rows, |r| r.load),
        warm_up: median_of(rows, |r| r.warm_up),
        rest: median_of(rows, |r| r.rest),
        first_token: median_of(rows, |r| r.first_token),
        total: median_of(rows, |r| r.total),
        warm: median_of(rows, |r| r.warm),
    }
}

/// `runs` scales from zero, back to zero (the agent stopped) between them.
fn scale_from_zero(operator: &Path, runs: usize) -> anyhow::Result<Vec<FromZero>> {
    let pool = Local::start(operator, &manifest(4, 0, 1, 2))?;
    let mut rows = Vec::new();
    for run in 1..=runs {
        let row = from_zero(&pool, run)?;
        println!("{}", row.row(&run.to_string()));
        rows.push(row);
        let down = pool.until_logged(0.0, &format!("autoscale {POOL}: 1 -> 0 agents"), run)?;
        pool.until_logged(down, "drained; stopping", 1)?;
    }
    Ok(rows)
}

/// What a load step measured, in seconds from the burst.
struct Step {
    /// The autoscaler's first decision.
    first: f64,
    /// Its decision that reached the burst's agents.
    last: f64,
    /// Every new agent serving.
    serving: f64,
    /// Each decision's line.
    decisions: Vec<String>,
}

/// `burst` streams at once on one agent of one slot, each needing an agent.
fn load_step(operator: &Path, burst: usize) -> anyhow::Result<Step> {
    let pool = Local::start(operator, &manifest(1, 1, burst, 60))?;
    pool.until_logged(0.0, ": ready ", 1)?;
    first_token(pool.addr, "a first request", 2)?;
    let sent = timeline::now();
    let addr = pool.addr;
    let streams: Vec<_> = (0..burst)
        .map(|i| std::thread::spawn(move || first_token(addr, &format!("river number {i}"), 64)))
        .collect();
    let decision = format!("autoscale {POOL}: ");
    let first = pool.until_logged(sent, &decision, 1)?;
    let last = pool.until_logged(sent, &format!("-> {burst} agents"), 1)?;
    let serving = match burst {
        0 | 1 => last,
        n => pool.until_logged(sent, ": ready ", n - 1)?,
    };
    for stream in streams {
        stream
            .join()
            .map_err(|_| anyhow::anyhow!("a stream panicked"))??;
    }
    let decisions = pool
        .lines()
        .into_iter()
        .filter(|l| l.at >= sent && l.text.contains(&decision))
        .map(|l| format!("+{:.3} s {}", between(sent, l.at), l.text))
        .collect();
    Ok(Step {
        first: between(sent, first),
        last: between(sent, last),
        serving: between(sent, serving),
        decisions,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("# bench/scale\n\n{}\n", inferpool_bench::cpu_header());
    println!(
        "## From zero to the first token (local mode)\n\n{}",
        FromZero::HEADER
    );
    let rows = scale_from_zero(&args.operator, args.runs)?;
    let median = medians(&rows);
    println!("{}", median.row("median"));
    println!(
        "\n## A load step: {} streams on one agent of one slot\n",
        args.burst
    );
    let step = load_step(&args.operator, args.burst)?;
    let added = args.burst.saturating_sub(1);
    let one_by_one = median.agent_start() * added as f64;
    println!("| from the burst | seconds |\n|---|---|");
    println!("| to the autoscaler's first decision | {:.3} |", step.first);
    let all = args.burst;
    println!(
        "| to the decision for all {all} agents | {:.3} |",
        step.last
    );
    println!(
        "| to every new agent serving (started at once) | {:.3} |",
        step.serving
    );
    println!("| reference: {added} agents started one after another | {one_by_one:.3} |");
    println!("\n(the reference is the median agent start above x {added})\ndecisions:");
    for line in &step.decisions {
        println!("  {line}");
    }
    Ok(())
}
