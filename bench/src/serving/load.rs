//! The load generator: streamed chat completions over loopback HTTP, one thread per
//! concurrent stream, timed from the client's side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use inferpool_bench::quantile;
use inferpool_e2e::http::EventStream;
use serde_json::{Map, Value, json};

use crate::report::Figures;

/// The name both servers answer to.
pub const MODEL: &str = "smollm2";

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub http: SocketAddr,
    /// Fields added to every request body: llama.cpp's `cache_prompt`, which the agent
    /// does not know, so only llama.cpp's requests carry it.
    pub extra: Map<String, Value>,
}

/// One streamed request's timings.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ttft: Duration,
    pub total: Duration,
    pub tokens: usize,
    pub prompt_tokens: usize,
    pub decode: Duration,
}

/// Streams one greedy chat completion of `messages` and times it.
pub fn one_request(target: &Target, messages: &Value, max_tokens: u32) -> anyhow::Result<Sample> {
    let mut body = json!({"model": MODEL, "temperature": 0, "max_tokens": max_tokens,
        "stream": true, "stream_options": {"include_usage": true}, "messages": messages});
    if let Some(fields) = body.as_object_mut() {
        fields.extend(target.extra.clone());
    }
    let start = Instant::now();
    let mut stream = EventStream::open(target.http, "/v1/chat/completions", &body)?;
    // A refusal (a prompt over llama.cpp's slot context, say) must stop the run, not
    // pass as a request that produced nothing.
    if stream.status != 200 {
        let status = stream.status;
        anyhow::bail!("HTTP {status}: {}", stream.rest());
    }
    let (mut first, mut last, mut chunks, mut usage) = (None, None, 0, Value::Null);
    while let Some(data) = stream.next_data()? {
        if data == "[DONE]" {
            break;
        }
        let event: Value = serde_json::from_str(&data)?;
        let content = event["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap_or_default();
        if !content.is_empty() {
            let now = start.elapsed();
            first.get_or_insert(now);
            last = Some(now);
            chunks += 1;
        }
        if !event["usage"].is_null() {
            usage = event["usage"].clone();
        }
    }
    let total = start.elapsed();
    let ttft = first.unwrap_or(total);
    let count = |key: &str| usage[key].as_u64().map(|n| n as usize);
    Ok(Sample {
        ttft,
        total,
        // Chunks undercount when a server merges tokens; the usage count is exact.
        tokens: count("completion_tokens").unwrap_or(chunks),
        prompt_tokens: count("prompt_tokens").unwrap_or(0),
        decode: last.unwrap_or(ttft) - ttft,
    })
}

/// Results of one load.
pub struct Run {
    pub samples: Vec<Sample>,
    pub wall: Duration,
}

/// `requests` requests over `concurrency` streams, each stream sending its share one
/// after another; request `i` asks `messages(i)`.
pub fn run(
    target: &Target,
    concurrency: usize,
    requests: usize,
    max_tokens: u32,
    messages: impl Fn(usize) -> Value + Sync,
) -> anyhow::Result<Run> {
    let per_client = requests / concurrency.max(1);
    let messages = &messages;
    let start = Instant::now();
    let per_stream = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..concurrency)
            .map(|c| {
                scope.spawn(move || -> anyhow::Result<Vec<Sample>> {
                    (0..per_client)
                        .map(|k| one_request(target, &messages(c * per_client + k), max_tokens))
                        .collect()
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| {
                client
                    .join()
                    .map_err(|_| anyhow::anyhow!("client panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(Run {
        samples: per_stream.into_iter().flatten().collect(),
        wall: start.elapsed(),
    })
}

impl Run {
    /// Output tokens per second of wall time, all streams together.
    pub fn aggregate_tokens_per_second(&self) -> f64 {
        let tokens: usize = self.samples.iter().map(|s| s.tokens).sum();
        tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The longest prompt, as the server counted it (usage.prompt_tokens).
    pub fn prompt_tokens(&self) -> usize {
        self.samples
            .iter()
            .map(|s| s.prompt_tokens)
            .max()
            .unwrap_or(0)
    }

    /// TTFT p50 and p99, in milliseconds, under `prefix`.
    pub fn push_ttft(&self, f: &mut Figures, prefix: &str) {
        let ttfts: Vec<Duration> = self.samples.iter().map(|s| s.ttft).collect();
        f.push(format!("{prefix}TTFT p50 ms"), ms(quantile(&ttfts, 0.5)));
        f.push(format!("{prefix}TTFT p99 ms"), ms(quantile(&ttfts, 0.99)));
    }

    /// Whole-request latency p50 and p99, in milliseconds, under `prefix`.
    pub fn push_latency(&self, f: &mut Figures, prefix: &str) {
        let totals: Vec<Duration> = self.samples.iter().map(|s| s.total).collect();
        f.push(
            format!("{prefix}latency p50 ms"),
            ms(quantile(&totals, 0.5)),
        );
        f.push(
            format!("{prefix}latency p99 ms"),
            ms(quantile(&totals, 0.99)),
        );
    }
}

/// Milliseconds, 0 for no samples.
pub fn ms(d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
