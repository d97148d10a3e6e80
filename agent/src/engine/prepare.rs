//! Turning a checked OpenAI chat request into work for the engine: render the chat
//! template, tokenize, and fit the prompt and `max_tokens` into the model's context.

use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::ValidChatRequest;

use super::chat::{ChatMessage, ChatTemplate, TemplateError};
use super::sampling::SamplingParams;
use super::tokenizer::{ModelTokenizer, TokenizerError};
use crate::generation::{GenerationRequest, Priority};

/// Why a valid request still cannot run on this model.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The template refused the messages.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Tokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The prompt leaves no room to generate in the model's context.
    #[error("the prompt has {prompt} tokens; this model's context is {context}")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context length.
        context: usize,
    },
}

impl PrepareError {
    /// The stable OpenAI error `type` (and with it the HTTP status).
    pub fn kind(&self) -> ErrorType {
        match self {
            Self::Template(_) | Self::Tokenizer(_) => ErrorType::InvalidRequest,
            Self::PromptTooLong { .. } => ErrorType::ContextLengthExceeded,
        }
    }
}

/// What the engine needs to know about the model to prepare requests.
#[derive(Debug)]
pub struct ModelFacts<'a> {
    /// The tokenizer.
    pub tokenizer: &'a ModelTokenizer,
    /// The chat template (the model's own or the pool's override).
    pub template: &'a ChatTemplate,
    /// Context length in tokens.
    pub context: usize,
}

/// Builds the engine request for `req`.
pub fn prepare_chat(
    req: &ValidChatRequest,
    model: &ModelFacts<'_>,
    priority: Priority,
) -> Result<GenerationRequest, PrepareError> {
    let messages: Vec<ChatMessage> = req
        .messages
        .iter()
        .map(|m| ChatMessage::new(&m.role, &m.content))
        .collect();
    let text = model.template.render(&messages, true)?;
    let prompt = model.tokenizer.encode(&text)?;
    fit(prompt, &req.sampling, model, priority)
}

/// Fits `max_tokens` into what the context leaves after `prompt`.
fn fit(
    prompt: Vec<u32>,
    s: &inferpool_protocol::openai::ValidSampling,
    model: &ModelFacts<'_>,
    priority: Priority,
) -> Result<GenerationRequest, PrepareError> {
    let room = model.context.saturating_sub(prompt.len());
    if room == 0 {
        return Err(PrepareError::PromptTooLong {
            prompt: prompt.len(),
            context: model.context,
        });
    }
    let max_tokens = s.max_tokens.map_or(room, |m| (m as usize).min(room));
    let sampling = SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k.map(|k| k as usize),
        seed: s.seed,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
    };
    Ok(GenerationRequest {
        prompt,
        max_tokens,
        stop_tokens: vec![model.tokenizer.eos],
        sampling,
        priority,
        deadline: None,
    })
}

/// Builds the engine request for a plain-text completion of `prompt`.
pub fn prepare_completion(
    prompt: &str,
    sampling: &inferpool_protocol::openai::ValidSampling,
    model: &ModelFacts<'_>,
    priority: Priority,
) -> Result<GenerationRequest, PrepareError> {
    let prompt = model.tokenizer.encode(prompt)?;
    fit(prompt, sampling, model, priority)
}
