//! The embedding model's own queue and batcher: one thread owns the model and runs every
//! request that is waiting when it is free as one forward pass (inputs padded to the
//! longest of the batch, masked), so that concurrent embedding requests share forwards
//! instead of queueing behind each other, and never wait behind the generation model's
//! batch (which has its own loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::engine::embed::{EmbedError, Embedder, Embeddings};
use crate::engine::rows::Padding;

/// Most inputs in one forward pass.
pub const MAX_BATCH_INPUTS: usize = 64;
/// Requests waiting for the embedding thread; beyond it callers wait to submit.
const QUEUE: usize = 256;

struct Job {
    texts: Vec<String>,
    answer: oneshot::Sender<Result<Embeddings, EmbedError>>,
}

/// A cheap handle to the embedding loop.
#[derive(Debug, Clone)]
pub struct EmbedHandle {
    submit: mpsc::Sender<Job>,
    forwards: Arc<AtomicU64>,
}

/// Why an embedding request got no vectors.
#[derive(Debug, thiserror::Error)]
pub enum EmbedSubmitError {
    /// The model failed on its batch.
    #[error(transparent)]
    Model(#[from] EmbedError),
    /// The loop has stopped.
    #[error("the embedding model has stopped")]
    Stopped,
}

impl EmbedHandle {
    /// Starts the loop on a thread of its own, owning `embedder`.
    pub fn start(embedder: Embedder, padding: Padding) -> Self {
        let (submit, jobs) = mpsc::channel(QUEUE);
        let forwards = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&forwards);
        let model = Model { embedder, padding };
        std::thread::spawn(move || run(&model, jobs, &counted));
        Self { submit, forwards }
    }

    /// Embeds `texts` (in a batch with whatever else is waiting).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, EmbedSubmitError> {
        let (answer, answered) = oneshot::channel();
        let job = Job { texts, answer };
        self.submit
            .send(job)
            .await
            .map_err(|_| EmbedSubmitError::Stopped)?;
        Ok(answered.await.map_err(|_| EmbedSubmitError::Stopped)??)
    }

    /// Forward passes run since start.
    pub fn forwards(&self) -> u64 {
        self.forwards.load(Ordering::Relaxed)
    }
}

/// The embedding model and how its batches are padded.
struct Model {
    embedder: Embedder,
    padding: Padding,
}

impl Model {
    fn embed(&self, texts: &[String]) -> Result<Embeddings, EmbedError> {
        self.embedder.embed_padded(texts, self.padding)
    }
}

fn run(embedder: &Model, mut jobs: mpsc::Receiver<Job>, forwards: &AtomicU64) {
    let mut carried: Option<Job> = None;
    while let Some(first) = carried.take().or_else(|| jobs.blocking_recv()) {
        let mut inputs = first.texts.len();
        let mut batch = vec![first];
        // A job that would take the batch past the cap starts the next one instead.
        while let Ok(job) = jobs.try_recv() {
            if inputs + job.texts.len() > MAX_BATCH_INPUTS {
                carried = Some(job);
                break;
            }
            inputs += job.texts.len();
            batch.push(job);
        }
        batch.retain(|job| !job.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let texts: Vec<String> = batch.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        let result = embedder.embed(&texts);
        forwards.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(out) => answer(batch, out),
            // One request's input must not fail the others': each runs alone again.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = embedder.embed(&job.texts);
                    forwards.fetch_add(1, Ordering::Relaxed);
                    let _ = job.answer.send(result);
                }
            }
            Err(e) => {
                if let Some(job) = batch.pop() {
                    let _ = job.answer.send(Err(e));
                }
            }
        }
    }
}

/// Hands each job its share of the batch's result.
fn answer(batch: Vec<Job>, mut out: Embeddings) {
    let mut vectors = std::mem::take(&mut out.vectors).into_iter();
    let mut tokens = out.tokens_per_input.into_iter();
    for job in batch {
        let n = job.texts.len();
        let share = Embeddings {
            vectors: vectors.by_ref().take(n).collect(),
            tokens_per_input: tokens.by_ref().take(n).collect(),
        };
        let _ = job.answer.send(Ok(share));
    }
}
