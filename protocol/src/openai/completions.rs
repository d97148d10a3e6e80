//! `POST /v1/completions`: plain-text prompts.

use serde::{Deserialize, Serialize};

use super::{InvalidRequest, SamplingFields, ValidSampling, validate_sampling};

/// `prompt`: one string, or a list holding exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A single prompt.
    One(String),
    /// A batch of prompts (only one is supported, like `n`).
    Many(Vec<String>),
}

/// `POST /v1/completions` (read field by field: see `wire`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionRequest {
    /// The served model name.
    pub model: String,
    /// The text to continue.
    pub prompt: Prompt,
    /// Prepend the prompt to the completion.
    #[serde(default)]
    pub echo: bool,
    /// Log probabilities are not offered.
    #[serde(default)]
    pub logprobs: Option<u32>,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// A text completion request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCompletionRequest {
    /// Served model name.
    pub model: String,
    /// The prompt text.
    pub prompt: String,
    /// Prepend the prompt to the completion.
    pub echo: bool,
    /// Sampling.
    pub sampling: ValidSampling,
    /// End-user id.
    pub user: Option<String>,
}

impl TryFrom<CompletionRequest> for ValidCompletionRequest {
    type Error = InvalidRequest;

    fn try_from(r: CompletionRequest) -> Result<Self, InvalidRequest> {
        if r.model.is_empty() {
            return Err(InvalidRequest::new("model", "model must not be empty"));
        }
        if r.logprobs.is_some() {
            return Err(InvalidRequest::new(
                "logprobs",
                "logprobs are not supported",
            ));
        }
        let prompt = match r.prompt {
            Prompt::One(p) => p,
            Prompt::Many(mut many) if many.len() == 1 => many.remove(0),
            Prompt::Many(_) => {
                return Err(InvalidRequest::new(
                    "prompt",
                    "exactly one prompt is supported",
                ));
            }
        };
        if prompt.is_empty() {
            return Err(InvalidRequest::new("prompt", "prompt must not be empty"));
        }
        let user = r.sampling.user.clone();
        Ok(Self {
            model: r.model,
            prompt,
            echo: r.echo,
            sampling: validate_sampling(r.sampling)?,
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(body: serde_json::Value) -> Result<ValidCompletionRequest, InvalidRequest> {
        serde_json::from_value::<CompletionRequest>(body)
            .unwrap()
            .try_into()
    }

    #[test]
    fn one_prompt_in_either_spelling() {
        let a = completion(json!({"model": "m", "prompt": "Once"})).unwrap();
        let b = completion(json!({"model": "m", "prompt": ["Once"], "max_tokens": 3})).unwrap();
        assert_eq!((a.prompt.as_str(), b.prompt.as_str()), ("Once", "Once"));
        assert_eq!(b.sampling.max_tokens, Some(3));
    }

    #[test]
    fn refusals_name_their_field() {
        for (body, param) in [
            (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
            (json!({"model": "m", "prompt": ""}), "prompt"),
            (json!({"model": "", "prompt": "a"}), "model"),
            (
                json!({"model": "m", "prompt": "a", "logprobs": 2}),
                "logprobs",
            ),
            (
                json!({"model": "m", "prompt": "a", "temperature": -1}),
                "temperature",
            ),
        ] {
            assert_eq!(
                completion(body.clone()).unwrap_err().param,
                Some(param),
                "{body}"
            );
        }
    }
}
