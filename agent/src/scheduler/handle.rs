//! The cheap handle to one engine loop, and what the loop hands back when it stops on a
//! fault: the requests that have streamed nothing yet, with their clients' channels, so
//! that another engine can run them as if they had been sent there first.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::batcher::Batcher;
use super::command::{Command, Submission};
pub use super::command::{EngineExit, Refused, Unstarted};
use super::config::{BatcherConfig, Load, SubmitError};
use super::faults::StepFaults;
use super::step::panic_text;
use crate::engine::kv::{BLOCK_SIZE, BlockBudget};
use crate::engine::model::Llama;
use crate::generation::{GenerationEvent, GenerationRequest};

/// A cheap handle to the engine loop.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    submit: mpsc::Sender<Command>,
    load: watch::Receiver<Load>,
}

impl EngineHandle {
    /// Starts the loop on a thread of its own, owning `model`.
    pub fn start(model: Arc<Llama>, config: BatcherConfig) -> Self {
        Self::supervised(model, config, StepFaults::default()).0
    }

    /// Starts the loop; the receiver resolves when it stops on a fault or an evacuation
    /// (it is dropped without a value when every handle is gone and the loop ends).
    pub fn supervised(
        model: Arc<Llama>,
        config: BatcherConfig,
        faults: StepFaults,
    ) -> (Self, oneshot::Receiver<EngineExit>) {
        let (submit, commands) = mpsc::channel(256);
        let (publish, load) = watch::channel(Load {
            kv_blocks_total: config.kv_blocks,
            batch_limit: config.max_batch_size,
            ..Load::default()
        });
        let (exit, exited) = oneshot::channel();
        std::thread::spawn(move || {
            let batcher = Batcher::new(model, config, publish, faults);
            // A panic in a step is caught there and hands its requests back; one anywhere
            // else in the loop loses them (their clients see the stream end), but the
            // engine's supervisor still hears of the fault.
            let run = std::panic::AssertUnwindSafe(|| batcher.run(commands));
            let stopped = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                Some(EngineExit {
                    reason: format!("the engine loop panicked: {}", panic_text(&*panic)),
                    unstarted: Vec::new(),
                })
            });
            if let Some(stopped) = stopped {
                let _ = exit.send(stopped);
            }
        });
        (Self { submit, load }, exited)
    }

    /// Queues `request`; events arrive on the returned receiver. Dropping the receiver
    /// cancels the request.
    pub async fn generate(
        &self,
        request: GenerationRequest,
    ) -> Result<mpsc::Receiver<GenerationEvent>, SubmitError> {
        let (work, receiver) = Unstarted::new(request);
        self.submit(work).await.map_err(|refused| refused.error)?;
        Ok(receiver)
    }

    /// Queues a request whose client already has its receiver. When the loop has stopped,
    /// the request comes back with the refusal, so that the caller can send it elsewhere.
    pub async fn submit(&self, work: Unstarted) -> Result<(), Refused> {
        // Refused here, every queued sequence (whose tokens never pass its prompt plus
        // max_tokens) fits the whole budget, so a head always fits an empty batch.
        let tokens = work.request.prompt.len() + work.request.max_tokens;
        let total = self.load.borrow().kv_blocks_total;
        if BlockBudget::blocks_for(tokens) > total {
            let capacity = total * BLOCK_SIZE;
            return Err(Refused::kept(
                SubmitError::TooLarge { tokens, capacity },
                work,
            ));
        }
        let (admitted, admission) = oneshot::channel();
        let command = Command::Submit(Submission { work, admitted });
        if let Err(mpsc::error::SendError(command)) = self.submit.send(command).await {
            let work = match command {
                Command::Submit(s) => Some(s.work),
                Command::Evacuate(_) => None,
            };
            return Err(Refused {
                error: SubmitError::Stopped,
                work,
            });
        }
        // The loop answers every submission it reads and hands back those it has not read
        // when it stops; a dropped answer means its thread died outside a step.
        match admission.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((full, work))) => Err(Refused::kept(full.into(), work)),
            Err(_) => Err(Refused {
                error: SubmitError::Stopped,
                work: None,
            }),
        }
    }

    /// Asks the loop to stop: requests that streamed nothing come back on the exit
    /// receiver, the others end with an error naming `reason`.
    pub async fn evacuate(&self, reason: String) {
        let _ = self.submit.send(Command::Evacuate(reason)).await;
    }

    /// Whether the loop has stopped taking requests.
    pub fn stopped(&self) -> bool {
        self.submit.is_closed()
    }

    /// The latest published load, read in place (routing reads it for every request).
    pub fn current_load(&self) -> Load {
        *self.load.borrow()
    }

    /// Follows the published load.
    pub fn load(&self) -> watch::Receiver<Load> {
        self.load.clone()
    }
}
