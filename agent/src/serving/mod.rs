//! The agent's serving core, shared by the HTTP and gRPC front ends: phase (loading,
//! ready, draining), the served model, request admission with the fixed error types, and
//! the metrics. Neither axum nor tonic appears here.

pub mod blocking;
mod cache_metrics;
pub mod cached;
pub mod device_metrics;
mod devices;
pub mod error;
pub mod inflight;
pub mod metrics;
mod mirrored;
pub mod record;
pub mod text;

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use inferpool_protocol::openai::{
    Embedding, EmbeddingResponse, EmbeddingUsage, ModelList, ValidChatRequest,
    ValidCompletionRequest, ValidEmbeddingRequest, Vector,
};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use self::blocking::BlockingWorkers;
use self::cached::{CacheOutcome, CacheRequest, Lookup, Pending};
use self::error::ServeError;
use self::inflight::InFlight;
use self::metrics::AgentMetrics;
use self::text::TextStream;
use crate::cache::{CacheDirectives, CacheStats, CachedAnswer, Payload, PromptKey, ResponseCache};
use crate::engine::chat::ChatTemplate;
use crate::engine::prepare::{ModelFacts, prepare_chat, prepare_completion};
use crate::engine::tokenizer::ModelTokenizer;
use crate::generation::{GenerationRequest, Priority};
use crate::gpu::Inventory;
use crate::replicas::EnginePool;
use crate::scheduler::batcher::Load;
use crate::scheduler::embed_batcher::EmbedHandle;

/// How a request joins the engine's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Its queue.
    pub priority: Priority,
    /// When its client stops waiting: a request still queued then is refused
    /// (`ServeError::DeadlineExceeded`) rather than run.
    pub deadline: Option<Instant>,
}

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading and warming up the model.
    Loading,
    /// Serving.
    Ready,
    /// Finishing in-flight work; new requests are refused.
    Draining,
}

/// A loaded, warmed-up model and what serving it needs.
#[derive(Debug)]
pub struct Served {
    /// The name clients send as `model`.
    pub name: String,
    /// The replicas of the model, one engine loop each.
    pub engine: EnginePool,
    /// The tokenizer.
    pub tokenizer: Arc<ModelTokenizer>,
    /// The chat template.
    pub template: Arc<ChatTemplate>,
    /// Longest sequence: the model's context, or less when the KV budget is smaller.
    pub context: usize,
    /// The embedding model's name and its batching loop, when one is configured.
    pub embedder: Option<(String, EmbedHandle)>,
    /// The response cache, when the pool enables it.
    pub cache: Option<Arc<ResponseCache>>,
}

/// The whole agent's state.
#[derive(Debug)]
pub struct Agent {
    phase: watch::Sender<Phase>,
    served: OnceLock<Served>,
    /// Requests accepted and not yet answered.
    pub in_flight: InFlight,
    /// Metrics.
    pub metrics: AgentMetrics,
    /// The registry the metrics live in.
    pub registry: Registry,
    /// Devices found at start.
    pub inventory: Inventory,
    /// Most sequences per batch (reported to the gateway).
    pub max_batch_size: usize,
    /// Failures in a row of every device after which liveness fails.
    pub restart_after: u32,
    /// Where templates, tokenizers and embeddings run, off the async threads.
    blocking: BlockingWorkers,
    started: Instant,
    created_unix: u64,
}

impl Agent {
    /// A loading agent.
    /// `restart_after`: failures in a row of every device after which liveness fails.
    pub fn new(inventory: Inventory, max_batch_size: usize, restart_after: u32) -> Arc<Self> {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        let created_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Arc::new(Self {
            phase: watch::Sender::new(Phase::Loading),
            served: OnceLock::new(),
            in_flight: InFlight::default(),
            metrics,
            registry,
            inventory,
            max_batch_size,
            restart_after,
            blocking: BlockingWorkers::per_cpu(),
            started: Instant::now(),
            created_unix,
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Follows phase changes.
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Installs the warmed-up model and starts serving.
    pub fn ready(&self, served: Served) {
        let _ = self.served.set(served);
        self.metrics.ready.set(1);
        self.phase.send_if_modified(|p| {
            let was_loading = *p == Phase::Loading;
            if was_loading {
                *p = Phase::Ready;
            }
            was_loading
        });
    }

    /// Stops admitting; in-flight requests go on.
    pub fn drain(&self) {
        self.metrics.draining.set(1);
        self.metrics.ready.set(0);
        self.phase.send_replace(Phase::Draining);
    }

    /// Unix seconds at start (the `created` of responses and models).
    pub fn created(&self) -> u64 {
        self.created_unix
    }

    /// Milliseconds since start.
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The model, when requests may be admitted.
    pub fn served(&self) -> Result<&Served, ServeError> {
        match (self.phase(), self.served.get()) {
            (Phase::Draining, _) => Err(ServeError::Draining),
            (_, Some(served)) => Ok(served),
            (_, None) => Err(ServeError::NotReady),
        }
    }

    /// The engine's latest load (zero while loading).
    pub fn load(&self) -> Load {
        self.served
            .get()
            .map(|s| s.engine.current_load())
            .unwrap_or_default()
    }

    /// Follows the engine's load, once the model is loaded.
    pub fn watch_load(&self) -> Option<watch::Receiver<Load>> {
        self.served.get().map(|s| s.engine.load())
    }

    /// Starts a chat completion.
    pub async fn chat(
        &self,
        req: ValidChatRequest,
        admission: Admission,
        directives: CacheDirectives,
    ) -> Result<TextStream, ServeError> {
        let served = self.model_named(&req.model)?;
        let pending = match self
            .look_up(served, PromptKey::chat(&req), directives)
            .await
        {
            Lookup::Hit(answer, outcome) => return Ok(self.replay(served, answer, outcome)),
            Lookup::Miss(pending) => pending,
            Lookup::Uncached => None,
        };
        let stops = req.sampling.stop.clone();
        let facts = served.facts();
        let priority = admission.priority;
        let prepare = move || prepare_chat(&req, &facts.borrowed(), priority);
        let prepared = self.blocking.run(prepare).await??;
        self.start(served, prepared, admission, &stops, pending)
            .await
    }

    /// Starts a text completion.
    pub async fn complete(
        &self,
        req: ValidCompletionRequest,
        admission: Admission,
        directives: CacheDirectives,
    ) -> Result<TextStream, ServeError> {
        let served = self.model_named(&req.model)?;
        let pending = match self
            .look_up(served, PromptKey::completion(&req), directives)
            .await
        {
            Lookup::Hit(answer, outcome) => return Ok(self.replay(served, answer, outcome)),
            Lookup::Miss(pending) => pending,
            Lookup::Uncached => None,
        };
        let stops = req.sampling.stop.clone();
        let facts = served.facts();
        let priority = admission.priority;
        let prepare =
            move || prepare_completion(&req.prompt, &req.sampling, &facts.borrowed(), priority);
        let prepared = self.blocking.run(prepare).await??;
        self.start(served, prepared, admission, &stops, pending)
            .await
    }

    /// The cache's answer to `key`, or what storing a generated one needs.
    async fn look_up(
        &self,
        served: &Served,
        key: Option<PromptKey>,
        directives: CacheDirectives,
    ) -> Lookup {
        let (Some(cache), Some(key)) = (&served.cache, key) else {
            return Lookup::Uncached;
        };
        let request = CacheRequest {
            cache,
            model: &served.name,
            key,
            directives,
        };
        let embedder = served.embedder.as_ref().map(|(_, e)| e);
        let (lookup, took) = request.look_up(embedder).await;
        self.metrics.cache_lookup(took);
        lookup
    }

    fn replay(&self, served: &Served, answer: CachedAnswer, outcome: CacheOutcome) -> TextStream {
        let guard = self.in_flight.enter();
        TextStream::replay(answer, served.tokenizer.clone(), guard, outcome)
    }

    async fn start(
        &self,
        served: &Served,
        mut generation: GenerationRequest,
        admission: Admission,
        stops: &[String],
        pending: Option<Pending>,
    ) -> Result<TextStream, ServeError> {
        generation.deadline = admission.deadline;
        let guard = self.in_flight.enter();
        let prompt_tokens = generation.prompt.len();
        let tokenizer = served.tokenizer.clone();
        let events = served.engine.generate(generation).await?;
        self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
        let stream = TextStream::new(events, tokenizer, stops, prompt_tokens, guard);
        let outcome = served.cache.as_ref().map(|_| CacheOutcome::Miss);
        Ok(stream.recorded_in(pending, outcome))
    }

    /// The response cache, once the model is loaded (when the pool enables it).
    pub fn response_cache(&self) -> Option<Arc<ResponseCache>> {
        self.served.get()?.cache.clone()
    }

    /// The response cache's counts, when there is one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        Some(self.served.get()?.cache.as_ref()?.stats())
    }

    fn model_named(&self, name: &str) -> Result<&Served, ServeError> {
        let served = self.served()?;
        if served.name != name {
            return Err(ServeError::ModelNotFound(name.to_owned()));
        }
        Ok(served)
    }

    /// Embeds texts with the embedding model; inputs embedded before come from the cache
    /// (the embedding model's own partition).
    pub async fn embed(
        &self,
        req: ValidEmbeddingRequest,
        directives: CacheDirectives,
    ) -> Result<EmbeddingResponse, ServeError> {
        let served = self.served()?;
        let (name, embedder) = served
            .embedder
            .as_ref()
            .filter(|(name, _)| *name == req.model)
            .ok_or_else(|| ServeError::ModelNotFound(req.model.clone()))?;
        let _guard = self.in_flight.enter();
        let cache = served.cache.as_deref().map(|c| VectorCache {
            cache: c,
            model: name,
            directives,
        });
        let mut found = match &cache {
            Some(c) => c.look_up(&req.inputs),
            None => vec![None; req.inputs.len()],
        };
        let missing: Vec<String> = (req.inputs.iter().zip(&found))
            .filter(|(_, f)| f.is_none())
            .map(|(text, _)| text.clone())
            .collect();
        if !missing.is_empty() {
            let out = embedder.embed(missing.clone()).await?;
            let fresh = out.vectors.into_iter().zip(out.tokens_per_input);
            let mut fresh = missing.iter().zip(fresh);
            for slot in found.iter_mut().filter(|f| f.is_none()) {
                let Some((text, (vector, tokens))) = fresh.next() else {
                    break;
                };
                if let Some(c) = &cache {
                    c.store(text, &vector, tokens);
                }
                *slot = Some((vector, tokens));
            }
        }
        Ok(embedding_response(name, found, req.encoding))
    }

    /// The embedding model's name, once loaded (when one is configured).
    pub fn embedding_model(&self) -> Option<String> {
        let (name, _) = self.served.get()?.embedder.as_ref()?;
        Some(name.clone())
    }

    /// `GET /v1/models`: the served model and the embedding model.
    pub fn models(&self) -> ModelList {
        let mut names = Vec::new();
        if let Some(s) = self.served.get() {
            names.push(s.name.as_str());
            if let Some((e, _)) = &s.embedder {
                names.push(e.as_str());
            }
        }
        ModelList::of(&names, self.created_unix, "inferpool")
    }
}

/// The embedding model's partition, as one request may use it.
struct VectorCache<'a> {
    cache: &'a ResponseCache,
    model: &'a str,
    directives: CacheDirectives,
}

impl VectorCache<'_> {
    fn key(text: &str) -> String {
        PromptKey::from_parts("embedding".to_owned(), text.to_owned(), false).exact()
    }

    /// Each input's cached vector and tokens, counting hits and misses.
    fn look_up(&self, inputs: &[String]) -> Vec<Option<(Vec<f32>, usize)>> {
        let vector = |found: &crate::cache::Found| match &found.entry().payload {
            Payload::Vector { values, tokens } => Some((values.clone(), *tokens as usize)),
            Payload::Answer(_) => None,
        };
        inputs
            .iter()
            .map(|text| {
                let found = self
                    .cache
                    .exact(self.model, &Self::key(text), self.directives);
                let hit = found.as_ref().and_then(vector);
                self.cache.count_embedding(hit.is_some());
                hit
            })
            .collect()
    }

    fn store(&self, text: &str, vector: &[f32], tokens: usize) {
        let payload = Payload::Vector {
            values: vector.to_vec(),
            tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        };
        let key = Self::key(text);
        self.cache
            .store(self.model, key, payload, None, self.directives);
    }
}

fn embedding_response(
    name: &str,
    vectors: Vec<Option<(Vec<f32>, usize)>>,
    encoding: inferpool_protocol::openai::EncodingFormat,
) -> EmbeddingResponse {
    let tokens: usize = vectors.iter().flatten().map(|(_, t)| t).sum();
    let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    let data = vectors
        .into_iter()
        .flatten()
        .zip(0..)
        .map(|((embedding, _), index)| Embedding {
            object: "embedding".to_owned(),
            index,
            embedding: Vector::encode(embedding, encoding),
        })
        .collect();
    EmbeddingResponse {
        object: "list".to_owned(),
        data,
        model: name.to_owned(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }
}

/// What preparing a request needs of the served model, owned so that it can move to a
/// blocking worker.
struct OwnedFacts {
    tokenizer: Arc<ModelTokenizer>,
    template: Arc<ChatTemplate>,
    context: usize,
}

impl OwnedFacts {
    fn borrowed(&self) -> ModelFacts<'_> {
        ModelFacts {
            tokenizer: &self.tokenizer,
            template: &self.template,
            context: self.context,
        }
    }
}

impl Served {
    fn facts(&self) -> OwnedFacts {
        OwnedFacts {
            tokenizer: Arc::clone(&self.tokenizer),
            template: Arc::clone(&self.template),
            context: self.context,
        }
    }
}
