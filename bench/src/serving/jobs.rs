//! What one started server is asked to do, and the figures that come of it.

use inferpool_bench::{mib, proc_stats};

use crate::load::{self, Run, Target, one_request};
use crate::report::Figures;
use crate::servers::{SLOTS, Server};
use crate::workloads::{self, Prompts, SHARED_MAX_TOKENS};

/// Concurrent streams, requests in all, tokens per request.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub concurrency: usize,
    pub requests: usize,
    pub max_tokens: u32,
}

/// The short-prompt loads, at 1, 4 and 16 streams.
pub static SCENARIOS: [Scenario; 3] = [
    scenario(1, 4, 128),
    scenario(4, 8, 64),
    scenario(16, 32, 64),
];

const fn scenario(concurrency: usize, requests: usize, max_tokens: u32) -> Scenario {
    Scenario {
        concurrency,
        requests,
        max_tokens,
    }
}

/// Tokens generated per long-prompt request: the prompts are what is measured.
pub const LONG_MAX_TOKENS: u32 = 32;

/// A measurement on one server.
#[derive(Debug, Clone, Copy)]
pub enum Job {
    /// These short-prompt loads, then peak RSS.
    Streams(&'static [Scenario]),
    /// 16 streams of distinct long prompts; peak RSS after them.
    LongPrompt,
    /// A warm-up with the system prompt, then 16 concurrent shared-prefix requests.
    SharedPrefix,
}

/// Runs `job` on `server`, after one short request that warms caches and code paths.
pub fn measure(server: &Server, job: Job, prompts: &Prompts) -> anyhow::Result<Figures> {
    one_request(&server.target, &workloads::short_story(99), 8)?;
    match job {
        Job::Streams(scenarios) => streams(server, scenarios),
        Job::LongPrompt => long_prompt(server, prompts),
        Job::SharedPrefix => shared_prefix(&server.target, prompts),
    }
}

fn streams(server: &Server, scenarios: &[Scenario]) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    for s in scenarios {
        let run = load::run(
            &server.target,
            s.concurrency,
            s.requests,
            s.max_tokens,
            workloads::short_story,
        )?;
        if s.concurrency == 1 {
            single_stream(&mut f, &run);
        }
        let prefix = format!("c={} ", s.concurrency);
        let aggregate = run.aggregate_tokens_per_second();
        f.push(format!("{prefix}aggregate output tok/s"), aggregate);
        run.push_ttft(&mut f, &prefix);
        run.push_latency(&mut f, &prefix);
    }
    f.push("peak RSS MiB", peak_rss(server)?);
    Ok(f)
}

/// Decode and prompt speed of one stream alone, averaged over its requests.
fn single_stream(f: &mut Figures, run: &Run) {
    let s = &run.samples;
    let mean =
        |per: &dyn Fn(&load::Sample) -> f64| s.iter().map(per).sum::<f64>() / s.len().max(1) as f64;
    // The first token ends the prompt; the rest are decode steps.
    let decode = mean(&|x| x.tokens.saturating_sub(1) as f64 / x.decode.as_secs_f64().max(1e-9));
    let prompt = mean(&|x| x.prompt_tokens as f64 / x.ttft.as_secs_f64().max(1e-9));
    f.push("single-stream decode tok/s", decode);
    f.push("single-stream prompt tok/s", prompt);
}

fn long_prompt(server: &Server, prompts: &Prompts) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    // Before the load: the model, the runtime and (llama.cpp) the KV cache it allocates
    // at start; the difference to after is what holding the prompts cost.
    let before = peak_rss(server)?;
    let repeats = prompts.long_repeats;
    let run = load::run(&server.target, SLOTS, SLOTS, LONG_MAX_TOKENS, |i| {
        workloads::long_prompt(i, repeats)
    })?;
    f.push("peak RSS after the load MiB", peak_rss(server)?);
    f.push("peak RSS before the load MiB", before);
    f.push("prompt tokens per request", run.prompt_tokens() as f64);
    run.push_ttft(&mut f, "");
    let prompt_tokens: usize = run.samples.iter().map(|s| s.prompt_tokens).sum();
    let prefill = prompt_tokens as f64 / run.wall.as_secs_f64().max(1e-9);
    f.push("prompt tok/s, all streams (prompt tokens / wall)", prefill);
    f.push("aggregate output tok/s", run.aggregate_tokens_per_second());
    Ok(f)
}

fn shared_prefix(target: &Target, prompts: &Prompts) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let repeats = prompts.system_repeats;
    // The warm-up's user turn is one no later request has, so only the system prompt
    // can be reused from it.
    let warm_up = workloads::shared_prefix(SLOTS, repeats);
    let cold = one_request(target, &warm_up, SHARED_MAX_TOKENS)?;
    let run = load::run(target, SLOTS, SLOTS, SHARED_MAX_TOKENS, |i| {
        workloads::shared_prefix(i, repeats)
    })?;
    run.push_ttft(&mut f, "");
    f.push("aggregate output tok/s", run.aggregate_tokens_per_second());
    f.push(
        "warm-up TTFT ms (nothing cached)",
        load::ms(Some(cold.ttft)),
    );
    f.push("prompt tokens per request", run.prompt_tokens() as f64);
    Ok(f)
}

fn peak_rss(server: &Server) -> anyhow::Result<f64> {
    Ok(mib(proc_stats(server.child.id())?.peak_rss_bytes))
}
