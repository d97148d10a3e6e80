//! The continuous batching loop. One thread owns the model; each iteration it admits
//! waiting sequences (up to `max_batch_size`), gives every decoding sequence one token and
//! the rest of the `max_batch_tokens` budget to prefill chunks (so a long prompt cannot
//! stall decoding), runs one batched step, streams the sampled tokens, and retires finished
//! or cancelled sequences (a request whose receiver was dropped is cancelled at once).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::queue::{AdmissionQueue, Priority, QueueFull};
use crate::engine::model::{KvCache, Llama, ModelError, SeqStep};
use crate::engine::sampling::{Sampler, SamplingParams};

/// A request the engine can run: tokens, limits and sampling, already validated.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids (chat template applied).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Tokens that end generation (end-of-turn, end-of-text).
    pub stop_tokens: Vec<u32>,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Queue priority.
    pub priority: Priority,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was generated.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// What the engine streams back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// One generated token.
    Token(u32),
    /// The end, with token counts.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Prompt tokens processed.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// The engine failed on this request's step.
    Failed(String),
}

/// Limits of the loop.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most sequences decoded together.
    pub max_batch_size: usize,
    /// Most tokens per step across the batch.
    pub max_batch_tokens: usize,
    /// Queue limit per priority, in `Priority::ALL` order.
    pub queue_limits: [usize; 4],
}

/// The engine's load, published after every iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Sequences in the running batch.
    pub running: usize,
    /// Waiting requests per priority.
    pub queued: [usize; 4],
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Its priority's queue is full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The engine loop has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

type Admission = oneshot::Sender<Result<(), QueueFull>>;

struct Submission {
    request: GenerationRequest,
    events: mpsc::Sender<GenerationEvent>,
    admitted: Admission,
}

/// A cheap handle to the engine loop.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    submit: mpsc::Sender<Submission>,
    load: watch::Receiver<Load>,
}

/// Room for events in flight per request. A client this many tokens behind pauses the
/// loop until it reads (the gateway reads continuously, so this bounds memory, not speed).
const EVENT_BUFFER: usize = 64;

impl EngineHandle {
    /// Starts the loop on a thread of its own, owning `model`.
    pub fn start(model: Arc<Llama>, config: BatcherConfig) -> Self {
        let (submit, submissions) = mpsc::channel(256);
        let (publish, load) = watch::channel(Load::default());
        std::thread::spawn(move || Batcher::new(model, config, publish).run(submissions));
        Self { submit, load }
    }

    /// Queues `request`; events arrive on the returned receiver. Dropping the receiver
    /// cancels the request.
    pub async fn generate(
        &self,
        request: GenerationRequest,
    ) -> Result<mpsc::Receiver<GenerationEvent>, SubmitError> {
        let (events, receiver) = mpsc::channel(EVENT_BUFFER);
        let (admitted, admission) = oneshot::channel();
        let submission = Submission {
            request,
            events,
            admitted,
        };
        self.submit
            .send(submission)
            .await
            .map_err(|_| SubmitError::Stopped)?;
        admission.await.map_err(|_| SubmitError::Stopped)??;
        Ok(receiver)
    }

    /// The latest published load.
    pub fn load(&self) -> watch::Receiver<Load> {
        self.load.clone()
    }
}

struct Waiting {
    request: GenerationRequest,
    events: mpsc::Sender<GenerationEvent>,
}

struct Running {
    waiting: Waiting,
    cache: KvCache,
    /// Prompt tokens not yet prefilled.
    prefilled: usize,
    sampler: Sampler,
    last: Option<u32>,
    generated: usize,
}

struct Batcher {
    model: Arc<Llama>,
    config: BatcherConfig,
    queue: AdmissionQueue<Waiting>,
    running: Vec<Running>,
    publish: watch::Sender<Load>,
}

impl Batcher {
    fn new(model: Arc<Llama>, config: BatcherConfig, publish: watch::Sender<Load>) -> Self {
        let queue = AdmissionQueue::new(config.queue_limits);
        Self {
            model,
            config,
            queue,
            running: Vec::new(),
            publish,
        }
    }

    fn run(mut self, mut submissions: mpsc::Receiver<Submission>) {
        loop {
            if self.running.is_empty() && self.queue.is_empty() {
                match submissions.blocking_recv() {
                    Some(s) => self.accept(s),
                    None => return,
                }
            }
            while let Ok(s) = submissions.try_recv() {
                self.accept(s);
            }
            self.drop_cancelled();
            self.admit();
            self.iterate();
            self.publish_load();
        }
    }

    fn accept(&mut self, s: Submission) {
        let priority = s.request.priority;
        let waiting = Waiting {
            request: s.request,
            events: s.events,
        };
        let _ = s.admitted.send(self.queue.push(priority, waiting));
        self.publish_load();
    }

    fn drop_cancelled(&mut self) {
        self.queue.remove_where(|w| w.events.is_closed());
        self.running.retain(|r| !r.waiting.events.is_closed());
    }

    fn admit(&mut self) {
        while self.running.len() < self.config.max_batch_size {
            let Some((_, waiting)) = self.queue.pop() else {
                break;
            };
            let sampler = Sampler::new(waiting.request.sampling.clone());
            self.running.push(Running {
                waiting,
                cache: KvCache::default(),
                prefilled: 0,
                sampler,
                last: None,
                generated: 0,
            });
        }
    }

    /// Tokens each running sequence feeds this step: one per decoding sequence first, then
    /// prompt chunks from what is left of the budget.
    fn plan(&self) -> Vec<usize> {
        let mut budget = self.config.max_batch_tokens;
        let mut plan: Vec<usize> = self
            .running
            .iter()
            .map(|r| usize::from(r.last.is_some()))
            .collect();
        budget = budget.saturating_sub(plan.iter().sum());
        for (slot, r) in plan.iter_mut().zip(&self.running) {
            if r.last.is_none() {
                let take = (r.waiting.request.prompt.len() - r.prefilled).min(budget);
                *slot = take;
                budget -= take;
            }
        }
        plan
    }

    fn iterate(&mut self) {
        let plan = self.plan();
        let mut steps = Vec::new();
        let mut members = Vec::new();
        for (i, (r, &n)) in self.running.iter_mut().zip(&plan).enumerate() {
            if n == 0 {
                continue;
            }
            let tokens: &[u32] = match &r.last {
                Some(t) => std::slice::from_ref(t),
                None => &r.waiting.request.prompt[r.prefilled..r.prefilled + n],
            };
            steps.push(SeqStep {
                tokens,
                cache: &mut r.cache,
            });
            members.push((i, n));
        }
        if steps.is_empty() {
            return;
        }
        let logits = self.model.step(&mut steps);
        drop(steps);
        match logits {
            Ok(logits) => self.advance(&members, &logits),
            Err(e) => self.fail(&members, &e),
        }
    }

    fn advance(&mut self, members: &[(usize, usize)], logits: &candle_core::Tensor) {
        let mut finished = Vec::new();
        for (row, &(i, n)) in members.iter().enumerate() {
            let r = &mut self.running[i];
            if r.last.is_none() {
                r.prefilled += n;
                if r.prefilled < r.waiting.request.prompt.len() {
                    continue;
                }
            }
            let row_logits = logits.get(row).and_then(|t| t.to_vec1::<f32>());
            let Ok(row_logits) = row_logits else { continue };
            if let Some(reason) = emit(r, &row_logits) {
                finished.push((i, reason));
            }
        }
        for (i, reason) in finished.into_iter().rev() {
            let r = self.running.remove(i);
            let _ = r.waiting.events.try_send(GenerationEvent::Finished {
                reason,
                prompt_tokens: r.waiting.request.prompt.len(),
                completion_tokens: r.generated,
            });
        }
    }

    fn fail(&mut self, members: &[(usize, usize)], error: &ModelError) {
        for &(i, _) in members.iter().rev() {
            let r = self.running.remove(i);
            let _ = r
                .waiting
                .events
                .try_send(GenerationEvent::Failed(error.to_string()));
        }
    }

    fn publish_load(&self) {
        let load = Load {
            running: self.running.len(),
            queued: self.queue.depths(),
        };
        self.publish
            .send_if_modified(|l| std::mem::replace(l, load) != load);
    }
}

/// Samples and streams one token; returns why the sequence ends, if it does.
fn emit(r: &mut Running, logits: &[f32]) -> Option<FinishReason> {
    let token = r.sampler.sample(logits);
    r.generated += 1;
    r.last = Some(token);
    let stop = r.waiting.request.stop_tokens.contains(&token);
    if !stop
        && r.waiting
            .events
            .blocking_send(GenerationEvent::Token(token))
            .is_err()
    {
        return Some(FinishReason::Stop);
    }
    if stop {
        Some(FinishReason::Stop)
    } else if r.generated >= r.waiting.request.max_tokens {
        Some(FinishReason::Length)
    } else {
        None
    }
}
