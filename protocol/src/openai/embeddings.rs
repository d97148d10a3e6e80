//! `POST /v1/embeddings`.

use serde::{Deserialize, Serialize};

use super::InvalidRequest;

/// `input`: one text or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts, embedded in order.
    Many(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The embedding model's name.
    pub model: String,
    /// Texts to embed.
    pub input: EmbeddingInput,
    /// Only `float` is offered.
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// Most texts in one request.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

/// An embedding request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEmbeddingRequest {
    /// Model name.
    pub model: String,
    /// Texts, at least one, none empty.
    pub inputs: Vec<String>,
}

impl TryFrom<EmbeddingRequest> for ValidEmbeddingRequest {
    type Error = InvalidRequest;

    fn try_from(r: EmbeddingRequest) -> Result<Self, InvalidRequest> {
        if r.encoding_format.as_deref().is_some_and(|f| f != "float") {
            return Err(InvalidRequest::new(
                "encoding_format",
                "only float embeddings are offered",
            ));
        }
        let inputs = match r.input {
            EmbeddingInput::One(one) => vec![one],
            EmbeddingInput::Many(many) => many,
        };
        if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(InvalidRequest::new(
                "input",
                format!("input takes 1 to {MAX_EMBEDDING_INPUTS} texts"),
            ));
        }
        if inputs.iter().any(String::is_empty) {
            return Err(InvalidRequest::new(
                "input",
                "input texts must not be empty",
            ));
        }
        Ok(Self {
            model: r.model,
            inputs,
        })
    }
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    pub object: String,
    /// Position in the input.
    pub index: u32,
    /// The vector (unit length).
    pub embedding: Vec<f32>,
}

/// Token counts of an embedding request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens read.
    pub prompt_tokens: u32,
    /// Same.
    pub total_tokens: u32,
}

/// The answer to `POST /v1/embeddings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<Embedding>,
    /// Model name.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: serde_json::Value) -> Result<ValidEmbeddingRequest, InvalidRequest> {
        serde_json::from_value::<EmbeddingRequest>(body)
            .unwrap()
            .try_into()
    }

    #[test]
    fn one_or_many_texts() {
        assert_eq!(
            check(json!({"model": "e", "input": "a"})).unwrap().inputs,
            ["a"]
        );
        assert_eq!(
            check(json!({"model": "e", "input": ["a", "b"]}))
                .unwrap()
                .inputs
                .len(),
            2
        );
    }

    #[test]
    fn refusals_name_their_field() {
        for (body, param) in [
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": [""]}), "input"),
            (
                json!({"model": "e", "input": "a", "encoding_format": "base64"}),
                "encoding_format",
            ),
        ] {
            assert_eq!(
                check(body.clone()).unwrap_err().param,
                Some(param),
                "{body}"
            );
        }
    }
}
