//! Many streaming chat clients at once, each on its own thread, and how each one ended:
//! for tests that load a pool on purpose (agents killed or stopped under load).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use serde_json::{Value, json};

use crate::http::EventStream;

/// How one streamed request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every token, a finish reason and `[DONE]`.
    Completed,
    /// Tokens, then an explicit error event and `[DONE]` (its agent failed mid-stream).
    Cut,
    /// Refused or failed before its first token (what a pool must never do while one of
    /// its agents is alive): why.
    Lost(String),
}

/// What a batch of clients got.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Requests answered whole.
    pub completed: usize,
    /// Requests cut after their first token with an error event.
    pub cut: usize,
    /// Requests that failed before their first token, each with why.
    pub lost: Vec<String>,
}

/// Streams a chat for `model` with `max_tokens` from the gateway at `addr` and reads it to
/// its end, counting it in `streaming` once its first token came; a stream that ends
/// without `[DONE]` or an error event is an error.
pub fn stream_one(
    addr: SocketAddr,
    model: &str,
    i: usize,
    max_tokens: u32,
    streaming: &AtomicUsize,
) -> anyhow::Result<Ended> {
    let body = json!({"model": model, "max_tokens": max_tokens, "stream": true,
        "messages": [{"role": "user", "content": format!("Tell story {i}.")}]});
    let mut sse = EventStream::open(addr, "/v1/chat/completions", &body)?;
    if sse.status != 200 {
        let why = sse.rest();
        let why = why
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or_default();
        return Ok(Ended::Lost(format!(
            "request {i}: HTTP {} {why}",
            sse.status
        )));
    }
    let (mut content, mut finished) = (false, false);
    while let Some(data) = sse.next_data()? {
        if data == "[DONE]" {
            anyhow::ensure!(finished, "request {i} ended without a finish reason");
            return Ok(Ended::Completed);
        }
        let event: Value = serde_json::from_str(&data)?;
        if !event["error"].is_null() {
            if !content {
                return Ok(Ended::Lost(format!("request {i}: {event}")));
            }
            anyhow::ensure!(
                sse.next_data()?.as_deref() == Some("[DONE]"),
                "request {i}: no [DONE] after its error event"
            );
            return Ok(Ended::Cut);
        }
        let text = event["choices"][0]["delta"]["content"].as_str();
        if !content && text.is_some_and(|c| !c.is_empty()) {
            content = true;
            streaming.fetch_add(1, Ordering::SeqCst);
        }
        finished |= event["choices"][0]["finish_reason"].is_string();
    }
    anyhow::bail!("request {i} ended without [DONE]")
}

/// `n` streaming clients, started at once.
#[derive(Debug)]
pub struct Clients {
    threads: Vec<JoinHandle<anyhow::Result<Ended>>>,
    streaming: Arc<AtomicUsize>,
}

impl Clients {
    /// Starts `n` clients of `stream_one`.
    pub fn start(addr: SocketAddr, model: &str, n: usize, max_tokens: u32) -> Self {
        let streaming = Arc::new(AtomicUsize::new(0));
        let threads = (0..n)
            .map(|i| {
                let (model, streaming) = (model.to_owned(), streaming.clone());
                std::thread::spawn(move || stream_one(addr, &model, i, max_tokens, &streaming))
            })
            .collect();
        Self { threads, streaming }
    }

    /// Whether any client has ended.
    pub fn any_ended(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Clients that have had their first token.
    pub fn streaming(&self) -> usize {
        self.streaming.load(Ordering::SeqCst)
    }

    /// Waits for every client.
    pub fn tally(self) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        for client in self.threads {
            let ended = client
                .join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??;
            match ended {
                Ended::Completed => tally.completed += 1,
                Ended::Cut => tally.cut += 1,
                Ended::Lost(why) => tally.lost.push(why),
            }
        }
        Ok(tally)
    }

    /// Adds `more` clients (their first tokens are not counted).
    pub fn extend(&mut self, more: Self) {
        self.threads.extend(more.threads);
    }
}
