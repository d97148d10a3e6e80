//! The continuous batching loop. One thread owns the model; each iteration it admits
//! waiting sequences (up to `max_batch_size`, and only while the KV budget has blocks for
//! their prompts), gives every decoding sequence one token and the rest of the
//! `max_batch_tokens` budget to prefill chunks (so a long prompt cannot stall decoding),
//! runs one batched step, streams the sampled tokens, and retires finished or cancelled
//! sequences, giving their blocks back (a request whose receiver was dropped is cancelled
//! at once). When a decoding sequence needs a block and none is free, the newest
//! lowest-priority sequence is preempted: it returns its blocks and goes back to the head of
//! the queue, to recompute its cache when blocks free up. A sequence whose client has
//! `sequence::EVENT_BUFFER` tokens unread sits out steps until the client reads, so a slow
//! reader never stalls the others' steps; it keeps its batch slot and blocks meanwhile
//! (until its client reads or leaves), and its terminal event always has room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::adaptive::SloController;
use super::blocks::{KvBlocks, PrefixStats};
use super::command::{Command, EngineExit, Submission, Unstarted};
pub use super::config::{BatcherConfig, Load, SubmitError};
use super::faults::StepFaults;
use super::queue::AdmissionQueue;
use super::sequence::Sequence;
use super::step::{StepError, step};
use super::strategy::{BatchState, Gate, Strategy};
use super::waits::{earliest, next_submission, room_or_submission};
use crate::engine::model::{Llama, ModelError, SeqStep};
use crate::engine::rows::Padding;
use crate::generation::{FinishReason, GenerationEvent};

pub(super) struct Batcher {
    model: Arc<Llama>,
    config: BatcherConfig,
    queue: AdmissionQueue<Sequence>,
    running: Vec<Sequence>,
    blocks: KvBlocks,
    /// The `adaptive` strategy's controller (none for the others).
    slo: Option<SloController>,
    admissions: u64,
    preemptions: u64,
    publish: watch::Sender<Load>,
    faults: StepFaults,
    /// Set by a step that failed on the device, or by an evacuation: the loop stops.
    stopping: Option<String>,
    /// Every handle is gone: the queue drains with the strategy's gate open.
    closing: bool,
}

impl Batcher {
    pub(super) fn new(
        model: Arc<Llama>,
        config: BatcherConfig,
        publish: watch::Sender<Load>,
        faults: StepFaults,
    ) -> Self {
        Self {
            model,
            faults,
            stopping: None,
            closing: false,
            queue: AdmissionQueue::new(config.queue_limits, config.aging),
            blocks: KvBlocks::new(config.kv_blocks, config.prefix_caching, PREFIX_ROOT),
            slo: (config.strategy == Strategy::Adaptive)
                .then(|| SloController::new(config.slo, config.max_batch_size, config.max_wait)),
            config,
            running: Vec::new(),
            admissions: 0,
            preemptions: 0,
            publish,
        }
    }

    /// Runs until every handle is gone (`None`) or a fault or evacuation stops it.
    pub(super) fn run(mut self, mut submissions: mpsc::Receiver<Command>) -> Option<EngineExit> {
        let Ok(clock) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return Some(EngineExit {
                reason: "no timer for the engine loop".to_owned(),
                unstarted: Vec::new(),
            });
        };
        let mut hold = None;
        loop {
            if self.running.is_empty() && (self.queue.is_empty() || hold.is_some()) {
                // The gate's hold, or sooner the first queued deadline.
                let limit = match self.queue.is_empty() {
                    true => None,
                    false => earliest(hold, self.next_expiry()),
                };
                match clock.block_on(next_submission(&mut submissions, limit)) {
                    Ok(Some(s)) => self.accept(s),
                    // Every handle is gone (a retired replica): finish what is queued, the
                    // strategy's gate open, then stop.
                    Ok(None) if self.queue.is_empty() => return None,
                    Ok(None) => self.closing = true,
                    Err(_elapsed) => {}
                }
            }
            while let Ok(s) = submissions.try_recv() {
                self.accept(s);
            }
            // An evacuation stops the loop before anything else is admitted or stepped.
            if let Some(reason) = self.stopping.take() {
                return Some(self.evacuate(reason, &mut submissions));
            }
            self.drop_cancelled();
            hold = self.admit();
            self.reserve_decode_blocks();
            let stepped = self.iterate();
            if let Some(reason) = self.stopping.take() {
                return Some(self.evacuate(reason, &mut submissions));
            }
            self.publish_load();
            if !stepped && !self.running.is_empty() {
                // Every running sequence waits for its client to read.
                let limit = earliest(hold, self.next_expiry());
                let wake = room_or_submission(&self.running, &mut submissions, limit);
                if let Some(s) = clock.block_on(wake) {
                    self.accept(s);
                }
            }
        }
    }

    fn accept(&mut self, command: Command) {
        let s = match command {
            Command::Submit(s) => s,
            Command::Evacuate(reason) => {
                self.stopping.get_or_insert(reason);
                return;
            }
        };
        let priority = s.work.request.priority;
        // A full queue gives the request back, so that its caller may try another engine.
        if let Some(full) = self.queue.refusal(priority) {
            let _ = s.admitted.send(Err((full, s.work)));
            return;
        }
        let Unstarted { request, events } = s.work;
        let sequence = Sequence::new(request, events, self.config.kv_dtype);
        let pushed = self.queue.push(priority, sequence).map_err(|_| ());
        debug_assert!(pushed.is_ok(), "the queue had room");
        // Published before the answer, so that whoever routes next sees it.
        self.publish_load();
        let _ = s.admitted.send(Ok(()));
    }

    /// Stops taking requests and hands back every one that has streamed nothing; the
    /// others end with an error that names the fault.
    fn evacuate(mut self, reason: String, commands: &mut mpsc::Receiver<Command>) -> EngineExit {
        commands.close();
        let mut unstarted = Vec::new();
        let sequences = self.queue.drain().into_iter().chain(self.running.drain(..));
        for s in sequences.filter(|s| !s.cancelled()) {
            if s.generated == 0 {
                unstarted.push(Unstarted {
                    request: s.request,
                    events: s.events,
                });
            } else {
                let message = format!("the device failed mid-generation: {reason}");
                let _ = s.events.try_send(GenerationEvent::Failed(message));
            }
        }
        while let Ok(command) = commands.try_recv() {
            if let Command::Submit(Submission { work, admitted }) = command {
                let _ = admitted.send(Ok(()));
                unstarted.push(work);
            }
        }
        // Nothing runs or waits any more; the totals since start stay as they were.
        self.publish.send_modify(|l| {
            *l = Load {
                kv_blocks_total: l.kv_blocks_total,
                preemptions: l.preemptions,
                prefix: PrefixStats {
                    cached_blocks: 0,
                    ..l.prefix
                },
                ..Load::default()
            }
        });
        EngineExit { reason, unstarted }
    }

    /// Drops cancelled sequences, and queued ones whose deadline passed.
    fn drop_cancelled(&mut self) {
        let now = Instant::now();
        self.queue.remove_where(|s| s.cancelled() || s.expire(now));
        let blocks = &mut self.blocks;
        self.running.retain_mut(|r| {
            if r.cancelled() {
                blocks.retire(r);
            }
            !r.cancelled()
        });
    }

    /// How long until the first queued deadline, so that an idle loop wakes for it.
    fn next_expiry(&self) -> Option<Duration> {
        let now = Instant::now();
        let first = self.queue.iter().filter_map(|s| s.request.deadline).min()?;
        Some(first.saturating_duration_since(now))
    }

    /// What the batching strategy says about admitting now.
    fn gate(&self, now: Instant) -> Gate {
        let Some(oldest_wait) = self.queue.head_waited(now) else {
            return Gate::Open;
        };
        if self.closing {
            return Gate::Open;
        }
        let state = BatchState {
            running: self.running.len(),
            waiting: self.queue.len(),
            max_batch_size: self.batch_limit(),
            oldest_wait,
        };
        let wait = self
            .slo
            .as_ref()
            .map_or(self.config.max_wait, SloController::wait);
        self.config.strategy.gate(state, wait)
    }

    /// Sequences that may run together now.
    fn batch_limit(&self) -> usize {
        self.slo
            .as_ref()
            .map_or(self.config.max_batch_size, SloController::limit)
    }

    /// Moves waiting sequences into the batch while the strategy allows and there is room,
    /// taking the blocks for their whole input up front; the queue's head waits when blocks
    /// run short. Preempted sequences at the head resume first, whatever the strategy: it
    /// decides when new requests join, and a static or dynamic gate would otherwise hold a
    /// sequence that already streamed tokens for up to its wait limit. Returns how long the
    /// strategy holds the queue, if it does.
    fn admit(&mut self) -> Option<Duration> {
        // One clock reading for the pass: with aging, the queue's head may change as time
        // passes, and the head whose blocks were counted must be the one popped.
        let now = Instant::now();
        if !self.admit_heads(Sequence::resuming, now) {
            return None;
        }
        match self.gate(now) {
            Gate::Open => {}
            Gate::Hold(wait) => return Some(wait),
            Gate::Closed => return None,
        }
        self.admit_heads(|_| true, now);
        None
    }

    /// Admits queue heads while `which` accepts them and slots and blocks allow. False when
    /// the head waits for blocks held by running sequences (nothing behind it may pass it).
    fn admit_heads(&mut self, which: fn(&Sequence) -> bool, now: Instant) -> bool {
        while self.running.len() < self.batch_limit() {
            let Some(head) = self.queue.peek_at(now) else {
                break;
            };
            if !which(head) {
                break;
            }
            // Looked up before blocks are taken: taking may evict cached blocks.
            let prefix = self.blocks.cached_prefix(head);
            let blocks = head.cache.blocks_missing(head.pending());
            if !self.blocks.take(blocks) {
                return false;
            }
            let Some((_, mut sequence)) = self.queue.pop_at(now) else {
                break;
            };
            sequence.cache.grant(blocks);
            let reused = reuse_prefix(&mut sequence, &prefix);
            if !sequence.resuming() {
                self.blocks.count_lookup(&sequence, reused);
            }
            self.admissions += 1;
            sequence.admitted = self.admissions;
            self.running.push(sequence);
        }
        true
    }

    /// Gives every decoding sequence that crossed into a new block one more block,
    /// preempting the newest lowest-priority sequences while none is free.
    fn reserve_decode_blocks(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            // A paused sequence takes no step, so it needs no block until its client reads.
            if !r.decoding() || r.paused() || r.cache.blocks_missing(1) == 0 {
                i += 1;
            } else if self.blocks.take(1) {
                r.cache.grant(1);
                i += 1;
            } else {
                let victim = self.victim();
                self.preempt(victim);
                i -= usize::from(victim < i);
            }
        }
    }

    fn victim(&self) -> usize {
        (0..self.running.len())
            .max_by_key(|&i| self.running[i].preemption_key())
            .unwrap_or(0)
    }

    fn preempt(&mut self, i: usize) {
        let mut s = self.running.remove(i);
        self.blocks.give_back(s.cache.release());
        self.preemptions += 1;
        self.queue.push_front(s.request.priority, s, Instant::now());
    }

    /// Tokens each running sequence feeds this step: one per decoding sequence first, then
    /// prompt chunks from what is left of the budget; none for a paused sequence.
    fn plan(&self) -> Vec<usize> {
        let mut plan: Vec<usize> = self
            .running
            .iter()
            .map(|r| usize::from(r.decoding() && !r.paused()))
            .collect();
        let mut budget = self
            .config
            .max_batch_tokens
            .saturating_sub(plan.iter().sum());
        // Padded to the longest, every member costs the longest chunk's rows: chunks are
        // capped at an equal share so that the step stays within max_batch_tokens rows.
        let chunk = match self.config.padding {
            Padding::Longest => (self.config.max_batch_tokens / self.running.len().max(1)).max(1),
            Padding::None | Padding::Bucket => usize::MAX,
        };
        for (slot, r) in plan.iter_mut().zip(&self.running) {
            if !r.decoding() && !r.paused() {
                *slot = r.pending().min(budget).min(chunk);
                budget -= *slot;
            }
        }
        plan
    }

    /// Runs one step over the planned sequences; false when none could step.
    fn iterate(&mut self) -> bool {
        let plan = self.plan();
        let decoding = (self.running.iter().zip(&plan))
            .filter(|(r, n)| **n > 0 && r.decoding())
            .count();
        // Only a step of decoding alone measures the time per token: a prompt chunk in it
        // is what made it slow, and a smaller batch would not shorten that.
        let decode_only = plan.iter().sum::<usize>() == decoding;
        let mut steps = Vec::new();
        let mut members = Vec::new();
        for (i, (r, &n)) in self.running.iter_mut().zip(&plan).enumerate() {
            if n == 0 {
                continue;
            }
            let start = r.cache.len();
            steps.push(SeqStep {
                tokens: &r.tokens[start..start + n],
                cache: &mut r.cache,
            });
            members.push(i);
        }
        if steps.is_empty() {
            return false;
        }
        let started = Instant::now();
        let logits = step(&self.model, &mut steps, self.config.padding, &self.faults);
        drop(steps);
        if let Some(slo) = &mut self.slo
            && decode_only
        {
            slo.step(decoding, started.elapsed());
        }
        match logits {
            Ok(logits) => self.advance(&members, &logits),
            Err(StepError::Request(e)) => self.fail(&members, &e),
            Err(StepError::Device(reason)) => {
                tracing::error!(error = %reason, "engine step failed; stopping this engine");
                self.stopping.get_or_insert(reason);
            }
        }
        true
    }

    fn advance(&mut self, members: &[usize], logits: &candle_core::Tensor) {
        let mut ended = Vec::new();
        for (row, &i) in members.iter().enumerate() {
            if let Some(event) = self.advance_one(i, logits.get(row)) {
                ended.push((i, event));
            }
        }
        for (i, event) in ended.into_iter().rev() {
            let mut r = self.running.remove(i);
            self.blocks.retire(&mut r);
            let _ = r.events.try_send(event);
        }
    }

    /// Samples sequence `i`'s next token from its `row` of logits, once its prompt is in;
    /// the event that ends it, if it ends (a row that cannot be read fails it rather than
    /// leave it with nothing to feed).
    fn advance_one(
        &mut self,
        i: usize,
        row: candle_core::Result<candle_core::Tensor>,
    ) -> Option<GenerationEvent> {
        let r = &mut self.running[i];
        if r.pending() > 0 {
            return None; // a prompt chunk: more to prefill before sampling
        }
        let row_logits = match row.and_then(|t| t.to_vec1::<f32>()) {
            Ok(logits) => logits,
            Err(e) => return Some(GenerationEvent::Failed(format!("reading logits: {e}"))),
        };
        let end = emit(r, &row_logits);
        if r.generated == 1
            && let Some(slo) = &mut self.slo
        {
            slo.first_token(r.arrived.elapsed());
        }
        end.map(|reason| GenerationEvent::Finished {
            reason,
            prompt_tokens: r.request.prompt.len(),
            completion_tokens: r.generated,
        })
    }

    fn fail(&mut self, members: &[usize], error: &ModelError) {
        for &i in members.iter().rev() {
            let mut r = self.running.remove(i);
            self.blocks.give_back(r.cache.release());
            let _ = r
                .events
                .try_send(GenerationEvent::Failed(error.to_string()));
        }
    }

    fn publish_load(&self) {
        let load = Load {
            running: self.running.len(),
            queued: self.queue.depths(),
            kv_blocks_used: self.blocks.used_by_sequences(),
            kv_blocks_total: self.blocks.total(),
            preemptions: self.preemptions,
            prefix: self.blocks.stats(),
            batch_limit: self.batch_limit(),
            time_per_token: self.slo.as_ref().and_then(SloController::time_per_token),
        };
        self.publish
            .send_if_modified(|l| std::mem::replace(l, load) != load);
    }
}

/// The root of the prefix cache's hash chains: one engine serves one model.
const PREFIX_ROOT: u64 = 0x1f3_7001;

/// Copies `prefix` into a just admitted sequence's cache; the tokens reused (none when the
/// copy fails: the sequence then prefills them).
fn reuse_prefix(sequence: &mut Sequence, prefix: &[crate::engine::kv::BlockLayers]) -> usize {
    match sequence.cache.load_prefix(prefix) {
        Ok(()) => sequence.cache.len(),
        Err(e) => {
            tracing::warn!(error = %e, "prefix cache copy failed; prefilling instead");
            0
        }
    }
}

/// Samples and streams one token; returns why the sequence ends, if it does.
fn emit(r: &mut Sequence, logits: &[f32]) -> Option<FinishReason> {
    let token = r.sampler.sample(logits);
    r.generated += 1;
    r.tokens.push(token);
    if r.request.stop_tokens.contains(&token) {
        return Some(FinishReason::Stop);
    }
    // Never full: a sequence steps only with two free slots (`Sequence::paused`), so the
    // only failure is a client that left.
    if r.events.try_send(GenerationEvent::Token(token)).is_err() {
        return Some(FinishReason::Stop);
    }
    (r.generated >= r.request.max_tokens).then_some(FinishReason::Length)
}
