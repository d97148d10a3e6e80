//! The response cache in the serving path: a lookup before any template or tokenizer work
//! (exact first; then, for a chat's last user turn with semantic matching on, the turn's
//! embedding against the cached ones), and what a miss needs to store its answer later.

use std::sync::Arc;
use std::time::Instant;

use crate::cache::{CacheDirectives, Found, PromptKey, ResponseCache};
use crate::cache::{CachedAnswer, Payload, normalize};
use crate::scheduler::embed_batcher::EmbedHandle;

/// How the cache took part in an answer (the `x-inferpool-cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The same request's answer.
    Exact,
    /// A request close in meaning.
    Semantic,
    /// Generated (and stored, when the request allows).
    Miss,
}

impl CacheOutcome {
    /// As the header spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Semantic => "semantic",
            Self::Miss => "miss",
        }
    }
}

/// Where a generated answer goes once complete.
#[derive(Debug)]
pub struct Pending {
    cache: Arc<ResponseCache>,
    model: String,
    key: String,
    embedding: Option<Vec<f32>>,
    directives: CacheDirectives,
}

impl Pending {
    /// Stores the complete `answer`.
    pub fn store(self, answer: CachedAnswer) {
        let payload = Payload::Answer(answer);
        let (model, key) = (&self.model, self.key);
        self.cache
            .store(model, key, payload, self.embedding, self.directives);
    }
}

/// What a lookup gives the request.
#[derive(Debug)]
pub enum Lookup {
    /// Answered from the cache.
    Hit(CachedAnswer, CacheOutcome),
    /// To generate; the pending store, when the answer may be kept.
    Miss(Option<Pending>),
    /// No cache, or a request whose answer is not reproducible.
    Uncached,
}

/// One request's view of the cache.
#[derive(Debug)]
pub struct CacheRequest<'a> {
    /// The cache.
    pub cache: &'a Arc<ResponseCache>,
    /// The model asked for.
    pub model: &'a str,
    /// The request's key.
    pub key: PromptKey,
    /// What the client allows.
    pub directives: CacheDirectives,
}

impl CacheRequest<'_> {
    /// Looks the request up (counting the result); the embedder serves semantic matching.
    /// Returns the lookup and how long it took.
    pub async fn look_up(self, embedder: Option<&EmbedHandle>) -> (Lookup, std::time::Duration) {
        let started = Instant::now();
        let exact = self.key.exact();
        let mut found = self.cache.exact(self.model, &exact, self.directives);
        // The turn's embedding serves the semantic lookup and the stored entry: none is
        // needed when the request allows neither.
        let semantic = self.key.semantic()
            && self.cache.semantic_for(self.model)
            && (self.directives.may_look_up() || self.directives.may_store());
        let embedding = match embedder.filter(|_| semantic && found.is_none()) {
            Some(embedder) => embed_turn(embedder, self.key.turn()).await,
            None => None,
        };
        if found.is_none()
            && let Some(query) = &embedding
        {
            found = self
                .cache
                .semantic(self.model, &self.key, query, self.directives);
        }
        self.cache.count(found.as_ref());
        let lookup = match found.as_ref().and_then(answer_of) {
            Some(hit) => Lookup::Hit(hit, outcome_of(found.as_ref())),
            None => Lookup::Miss(self.directives.may_store().then(|| Pending {
                cache: self.cache.clone(),
                model: self.model.to_owned(),
                key: exact,
                embedding,
                directives: self.directives,
            })),
        };
        (lookup, started.elapsed())
    }
}

async fn embed_turn(embedder: &EmbedHandle, turn: &str) -> Option<Vec<f32>> {
    match embedder.embed(vec![normalize::for_embedding(turn)]).await {
        Ok(out) => out.vectors.into_iter().next(),
        Err(e) => {
            // Serving goes on without semantic matching for this request.
            tracing::warn!(error = %e, "embedding a turn for the semantic cache failed");
            None
        }
    }
}

fn answer_of(found: &Found) -> Option<CachedAnswer> {
    match &found.entry().payload {
        Payload::Answer(answer) => Some(answer.clone()),
        Payload::Vector { .. } => None,
    }
}

fn outcome_of(found: Option<&Found>) -> CacheOutcome {
    match found {
        Some(Found::Exact(_)) => CacheOutcome::Exact,
        Some(Found::Semantic(..)) => CacheOutcome::Semantic,
        None => CacheOutcome::Miss,
    }
}
