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
    /// `float` (default) or `base64` (little-endian f32 bytes; the official clients ask
    /// for this).
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// How vectors are written in the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// Base64 of little-endian f32 bytes.
    Base64,
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
    /// How to write the vectors.
    pub encoding: EncodingFormat,
}

impl TryFrom<EmbeddingRequest> for ValidEmbeddingRequest {
    type Error = InvalidRequest;

    fn try_from(r: EmbeddingRequest) -> Result<Self, InvalidRequest> {
        let encoding = match r.encoding_format.as_deref() {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(_) => {
                return Err(InvalidRequest::new(
                    "encoding_format",
                    "encoding_format is float or base64",
                ));
            }
        };
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
            encoding,
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
    pub embedding: Vector,
}

/// A vector as numbers or as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Vector {
    /// JSON numbers.
    Float(Vec<f32>),
    /// Base64 of little-endian f32 bytes.
    Base64(String),
}

impl Vector {
    /// `values` written as `encoding` asks.
    pub fn encode(values: Vec<f32>, encoding: EncodingFormat) -> Self {
        match encoding {
            EncodingFormat::Float => Self::Float(values),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Self::Base64(base64(&bytes))
            }
        }
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
    fn base64_is_little_endian_f32_bytes() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(
            Vector::encode(vec![1.0], EncodingFormat::Base64),
            Vector::Base64("AACAPw==".into())
        );
        let v = check(json!({"model": "e", "input": "a", "encoding_format": "base64"})).unwrap();
        assert_eq!(v.encoding, EncodingFormat::Base64);
    }

    #[test]
    fn refusals_name_their_field() {
        for (body, param) in [
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": [""]}), "input"),
            (
                json!({"model": "e", "input": "a", "encoding_format": "int8"}),
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
