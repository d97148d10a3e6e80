//! From engine tokens to client text: incremental detokenization (a multi-byte character
//! split over tokens is held until complete), stop strings (never emitted), and the usage
//! and finish reason at the end. Dropping a `TextStream` cancels the request in the engine.

use std::collections::VecDeque;
use std::sync::Arc;

use inferpool_protocol::openai::Usage;
use tokio::sync::mpsc;

use super::cached::{CacheOutcome, Pending};
use super::error::ServeError;
use super::inflight::InFlightGuard;
use crate::cache::CachedAnswer;
use crate::engine::sampling::StopMatcher;
use crate::engine::tokenizer::ModelTokenizer;
use crate::generation::{FinishReason, GenerationEvent};

/// Turns token ids into text deltas, decoding a short window each time.
#[derive(Debug, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// Adds `id`; returns the text it completes, if any.
    pub fn push(&mut self, tok: &ModelTokenizer, id: u32) -> String {
        self.ids.push(id);
        let (before, now) = self.window(tok);
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return String::new();
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        now.get(before.len()..).unwrap_or_default().to_owned()
    }

    /// Whatever is held back at the end (an incomplete character decodes as U+FFFD).
    pub fn finish(&mut self, tok: &ModelTokenizer) -> String {
        let (before, now) = self.window(tok);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        now.get(before.len()..).unwrap_or_default().to_owned()
    }

    /// The text already sent from the window, and the window's text now.
    fn window(&self, tok: &ModelTokenizer) -> (String, String) {
        let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
        (
            decode(&self.ids[self.prefix..self.read]),
            decode(&self.ids[self.prefix..]),
        )
    }
}

/// What a client receives.
#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    /// New text (possibly empty when only token ids arrived) and the ids behind it.
    Text {
        /// Text safe to show.
        text: String,
        /// Token ids generated since the last event.
        token_ids: Vec<u32>,
    },
    /// The end.
    Done {
        /// Why.
        finish: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The request ended without an answer.
    Failed(Failure),
}

/// Why a request ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The engine failed; the message is for logs and the client.
    Engine(String),
    /// Its deadline passed while it was queued.
    DeadlineExceeded,
}

impl Failure {
    /// The refusal the client gets.
    pub fn into_error(self) -> ServeError {
        match self {
            Self::Engine(message) => ServeError::Engine(message),
            Self::DeadlineExceeded => ServeError::DeadlineExceeded,
        }
    }
}

/// One request's text, as it is generated.
#[derive(Debug)]
pub struct TextStream {
    events: Option<mpsc::Receiver<GenerationEvent>>,
    tokenizer: Arc<ModelTokenizer>,
    detok: Detokenizer,
    stops: StopMatcher,
    prompt_tokens: usize,
    generated: usize,
    end: Option<TextEvent>,
    /// A cached answer being replayed (then there is no engine stream).
    replay: VecDeque<TextEvent>,
    /// Where a complete answer goes, as it is streamed.
    recording: Option<Recording>,
    /// How the cache took part (none when the agent has no cache).
    cache_outcome: Option<CacheOutcome>,
    _in_flight: InFlightGuard,
}

/// An answer on its way into the response cache.
#[derive(Debug)]
struct Recording {
    pending: Pending,
    chunks: Vec<(String, Vec<u32>)>,
}

impl TextStream {
    pub(crate) fn new(
        events: mpsc::Receiver<GenerationEvent>,
        tokenizer: Arc<ModelTokenizer>,
        stops: &[String],
        prompt_tokens: usize,
        in_flight: InFlightGuard,
    ) -> Self {
        Self {
            events: Some(events),
            tokenizer,
            detok: Detokenizer::default(),
            stops: StopMatcher::new(stops),
            prompt_tokens,
            generated: 0,
            end: None,
            replay: VecDeque::new(),
            recording: None,
            cache_outcome: None,
            _in_flight: in_flight,
        }
    }

    /// Keeps the answer where `pending` says if it completes; `outcome` is what the
    /// answer reports of the cache.
    pub(crate) fn recorded_in(
        mut self,
        pending: Option<Pending>,
        outcome: Option<CacheOutcome>,
    ) -> Self {
        self.recording = pending.map(|pending| Recording {
            pending,
            chunks: Vec::new(),
        });
        self.cache_outcome = outcome;
        self
    }

    /// A cached answer, replayed as it was first streamed.
    pub(crate) fn replay(
        answer: CachedAnswer,
        tokenizer: Arc<ModelTokenizer>,
        in_flight: InFlightGuard,
        outcome: CacheOutcome,
    ) -> Self {
        let (_, events) = mpsc::channel(1);
        let prompt_tokens = answer.prompt_tokens;
        let mut stream = Self::new(events, tokenizer, &[], prompt_tokens, in_flight);
        stream.events = None;
        stream.replay = answer
            .chunks
            .into_iter()
            .map(|(text, token_ids)| TextEvent::Text { text, token_ids })
            .collect();
        stream.generated = answer.completion_tokens;
        stream.cache_outcome = Some(outcome);
        stream.replay.push_back(stream.done(answer.finish));
        stream
    }

    /// Whether the answer comes from the response cache.
    pub fn cached(&self) -> bool {
        matches!(
            self.cache_outcome,
            Some(CacheOutcome::Exact | CacheOutcome::Semantic)
        )
    }

    /// How the cache took part, when the agent has one.
    pub fn cache_outcome(&self) -> Option<CacheOutcome> {
        self.cache_outcome
    }

    /// Prompt tokens of this request.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// The next event; `None` after `Done` or `Failed`. Cancel-safe: dropped before it
    /// completes, no event is lost.
    pub async fn next(&mut self) -> Option<TextEvent> {
        if let Some(event) = self.replay.pop_front() {
            return Some(event);
        }
        let event = self.next_generated().await;
        if let Some(event) = &event {
            self.record(event);
        }
        event
    }

    /// Adds `event` to the recording; a complete answer goes into the cache.
    fn record(&mut self, event: &TextEvent) {
        match event {
            TextEvent::Text { text, token_ids } => {
                if let Some(r) = &mut self.recording {
                    r.chunks.push((text.clone(), token_ids.clone()));
                }
            }
            TextEvent::Done { finish, usage } => {
                if let Some(r) = self.recording.take() {
                    let answer = CachedAnswer {
                        chunks: r.chunks,
                        finish: *finish,
                        prompt_tokens: self.prompt_tokens,
                        completion_tokens: usize::try_from(usage.completion_tokens)
                            .unwrap_or(usize::MAX),
                    };
                    r.pending.store(answer);
                }
            }
            TextEvent::Failed(_) => self.recording = None,
        }
    }

    async fn next_generated(&mut self) -> Option<TextEvent> {
        if let Some(end) = self.end.take() {
            return Some(end);
        }
        let event = self.events.as_mut()?.recv().await;
        match event {
            Some(GenerationEvent::Token(id)) => Some(self.token(id)),
            Some(GenerationEvent::Finished {
                reason,
                completion_tokens,
                ..
            }) => {
                self.generated = completion_tokens;
                Some(self.finish(reason))
            }
            Some(GenerationEvent::Failed(message)) => {
                self.close(TextEvent::Failed(Failure::Engine(message)))
            }
            Some(GenerationEvent::Expired) => {
                self.close(TextEvent::Failed(Failure::DeadlineExceeded))
            }
            None => {
                let dropped = Failure::Engine("the engine dropped the request".into());
                self.close(TextEvent::Failed(dropped))
            }
        }
    }

    fn token(&mut self, id: u32) -> TextEvent {
        self.generated += 1;
        let text = self.detok.push(&self.tokenizer, id);
        let check = self.stops.feed(&text);
        if check.stopped {
            self.events = None; // cancels the rest in the engine
            self.end = Some(self.done(FinishReason::Stop));
        }
        TextEvent::Text {
            text: check.emit,
            token_ids: vec![id],
        }
    }

    /// Flushes held-back text; `Done` follows on the next call.
    fn finish(&mut self, reason: FinishReason) -> TextEvent {
        let tail = self.detok.finish(&self.tokenizer);
        let check = self.stops.feed(&tail);
        let reason = if check.stopped {
            FinishReason::Stop
        } else {
            reason
        };
        let mut text = check.emit;
        if !check.stopped {
            text.push_str(&self.stops.flush());
        }
        self.events = None;
        self.end = Some(self.done(reason));
        TextEvent::Text {
            text,
            token_ids: Vec::new(),
        }
    }

    fn done(&self, finish: FinishReason) -> TextEvent {
        TextEvent::Done {
            finish,
            usage: Usage::new(self.prompt_tokens, self.generated),
        }
    }

    fn close(&mut self, event: TextEvent) -> Option<TextEvent> {
        self.events = None;
        Some(event)
    }
}

/// `stop` or `length`, as OpenAI spells it.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}
