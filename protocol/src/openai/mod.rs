//! OpenAI-compatible JSON types shared by the agent's HTTP API and the gateway, and the
//! one place where raw requests become checked `Valid*` values.

use serde::{Deserialize, Serialize};

use crate::errors::ErrorType;

mod completions;
mod embeddings;
mod responses;
mod shape;
mod wire;

pub use completions::{CompletionRequest, Prompt, ValidCompletionRequest};
pub use embeddings::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EncodingFormat,
    MAX_EMBEDDING_INPUTS, ValidEmbeddingRequest, Vector,
};
pub use responses::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, Completion, Delta, Model,
    ModelList, TextChoice, Usage,
};
pub use shape::{Kind, ResponseShape};

/// A chat message as clients send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or `developer`, treated as `system`).
    pub role: String,
    /// The text.
    pub content: String,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Up to four stop strings.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields common to chat and text completions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingFields {
    /// 0..=2; 0 is greedy.
    pub temperature: Option<f32>,
    /// (0, 1].
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (an extension also accepted by vLLM).
    pub top_k: Option<u32>,
    /// Reproducible sampling.
    pub seed: Option<u64>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Newer spelling of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// -2..=2.
    pub presence_penalty: Option<f32>,
    /// -2..=2.
    pub frequency_penalty: Option<f32>,
    /// Completions per request; only 1 is served.
    pub n: Option<u32>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// End-user id (also used for session affinity).
    pub user: Option<String>,
}

/// `POST /v1/chat/completions` (read field by field: see `wire`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionRequest {
    /// The served model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// A request refused at the edge, with a stable `type` and an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    /// The offending field.
    pub param: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl InvalidRequest {
    pub(crate) fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            message: message.into(),
        }
    }

    /// The OpenAI error `type`.
    pub fn error_type(&self) -> &'static str {
        ErrorType::InvalidRequest.name()
    }

    /// The JSON body OpenAI clients expect.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.error_type(), &self.message, self.param)
    }
}

/// OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of `ErrorBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Human-readable text.
    pub message: String,
    /// Stable machine-readable type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending field, if any.
    pub param: Option<String>,
    /// Same as `type` (some clients read `code`).
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error body of `kind`.
    pub fn new(kind: &str, message: &str, param: Option<&str>) -> Self {
        let detail = ErrorDetail {
            message: message.to_owned(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: Some(kind.to_owned()),
        };
        Self { error: detail }
    }
}

/// Checked sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling {
    /// 0..=2.
    pub temperature: f32,
    /// (0, 1].
    pub top_p: f32,
    /// At least 1 when set.
    pub top_k: Option<u32>,
    /// Seed.
    pub seed: Option<u64>,
    /// At least 1; `None` means up to the context.
    pub max_tokens: Option<u32>,
    /// At most four, none empty.
    pub stop: Vec<String>,
    /// -2..=2.
    pub presence_penalty: f32,
    /// -2..=2.
    pub frequency_penalty: f32,
    /// Stream events.
    pub stream: bool,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
}

/// A chat request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidChatRequest {
    /// Served model name.
    pub model: String,
    /// Messages with roles normalised.
    pub messages: Vec<Message>,
    /// Sampling.
    pub sampling: ValidSampling,
    /// End-user id.
    pub user: Option<String>,
}

impl TryFrom<ChatCompletionRequest> for ValidChatRequest {
    type Error = InvalidRequest;

    fn try_from(r: ChatCompletionRequest) -> Result<Self, InvalidRequest> {
        if r.model.is_empty() {
            return Err(InvalidRequest::new("model", "model must not be empty"));
        }
        if r.messages.is_empty() {
            return Err(InvalidRequest::new(
                "messages",
                "messages must not be empty",
            ));
        }
        let messages = r
            .messages
            .into_iter()
            .map(normalise_role)
            .collect::<Result<_, _>>()?;
        let user = r.sampling.user.clone();
        Ok(Self {
            model: r.model,
            messages,
            sampling: validate_sampling(r.sampling)?,
            user,
        })
    }
}

fn normalise_role(mut m: Message) -> Result<Message, InvalidRequest> {
    match m.role.as_str() {
        "system" | "user" | "assistant" => Ok(m),
        "developer" => {
            m.role = "system".to_owned();
            Ok(m)
        }
        other => Err(InvalidRequest::new(
            "messages",
            format!("unsupported role {other:?}"),
        )),
    }
}

fn in_range(
    param: &'static str,
    v: Option<f32>,
    lo: f32,
    hi: f32,
    default: f32,
) -> Result<f32, InvalidRequest> {
    let v = v.unwrap_or(default);
    if !(lo..=hi).contains(&v) || v.is_nan() {
        return Err(InvalidRequest::new(
            param,
            format!("{param} must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(v)
}

/// Checks sampling fields (shared by chat and text completions).
pub fn validate_sampling(s: SamplingFields) -> Result<ValidSampling, InvalidRequest> {
    if s.n.is_some_and(|n| n != 1) {
        return Err(InvalidRequest::new("n", "only n = 1 is supported"));
    }
    let top_p = in_range("top_p", s.top_p, 0.0, 1.0, 1.0)?;
    if top_p == 0.0 {
        return Err(InvalidRequest::new("top_p", "top_p must be greater than 0"));
    }
    let max_tokens = s.max_completion_tokens.or(s.max_tokens);
    if max_tokens == Some(0) {
        return Err(InvalidRequest::new(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    if s.top_k == Some(0) {
        return Err(InvalidRequest::new("top_k", "top_k must be at least 1"));
    }
    let stop = match s.stop {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one],
        Some(Stop::Many(many)) => many,
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(InvalidRequest::new(
            "stop",
            "stop takes up to 4 non-empty strings",
        ));
    }
    Ok(ValidSampling {
        temperature: in_range("temperature", s.temperature, 0.0, 2.0, 1.0)?,
        top_p,
        top_k: s.top_k,
        seed: s.seed,
        max_tokens,
        stop,
        presence_penalty: in_range("presence_penalty", s.presence_penalty, -2.0, 2.0, 0.0)?,
        frequency_penalty: in_range("frequency_penalty", s.frequency_penalty, -2.0, 2.0, 0.0)?,
        stream: s.stream,
        include_usage: s.stream_options.is_some_and(|o| o.include_usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(extra: serde_json::Value) -> Result<ValidChatRequest, InvalidRequest> {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value::<ChatCompletionRequest>(body)
            .unwrap()
            .try_into()
    }

    #[test]
    fn defaults_and_accepted_spellings() {
        let v = chat(json!({})).unwrap();
        assert_eq!(
            (
                v.sampling.temperature,
                v.sampling.top_p,
                v.sampling.max_tokens
            ),
            (1.0, 1.0, None)
        );
        let v = chat(
            json!({"stop": "END", "max_completion_tokens": 5, "max_tokens": 9,
            "stream": true, "stream_options": {"include_usage": true}}),
        )
        .unwrap();
        assert_eq!(v.sampling.stop, ["END"]);
        assert_eq!(v.sampling.max_tokens, Some(5), "max_completion_tokens wins");
        assert!(v.sampling.stream && v.sampling.include_usage);
        let v = chat(json!({"messages": [{"role": "developer", "content": "be brief"}]})).unwrap();
        assert_eq!(v.messages[0].role, "system");
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        for (extra, param) in [
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": 0.0}), "top_p"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"n": 2}), "n"),
            (json!({"presence_penalty": -3.0}), "presence_penalty"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages",
            ),
        ] {
            let err = chat(extra.clone()).unwrap_err();
            assert_eq!(err.param, Some(param), "{extra}");
            let body = serde_json::to_value(err.body()).unwrap();
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["param"], param);
        }
    }
}
