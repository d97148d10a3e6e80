//! Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2 by default) through candle:
//! mean pooling over the real tokens, then unit length, as sentence-transformers does.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::rows::Padding;

/// Longest input in tokens; longer texts are truncated (the model was trained on 256).
pub const MAX_TOKENS: usize = 256;

/// Errors loading or running the embedding model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file could not be read.
    #[error("reading {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The tokenizer refused an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("embedding model: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The request's batch failed (the message is the batch's error).
    #[error("embedding model: {0}")]
    Batch(String),
}

/// A loaded embedding model.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").finish_non_exhaustive()
    }
}

/// Vectors and the number of tokens read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    /// One unit vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read per input (special tokens included), in order, for usage.
    pub tokens_per_input: Vec<usize>,
}

impl Embeddings {
    /// Tokens read in all.
    pub fn tokens(&self) -> usize {
        self.tokens_per_input.iter().sum()
    }
}

impl Embedder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EmbedError> {
        let file_error = |path: &Path, e: &dyn std::fmt::Display| EmbedError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| file_error(&config_path, &e))?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| file_error(&config_path, &e))?;
        let weights = candle_core::safetensors::load(dir.join("model.safetensors"), device)?;
        let model = BertModel::load(
            VarBuilder::from_tensors(weights, DType::F32, device),
            &config,
        )?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| file_error(&tokenizer_path, &e))?;
        // Rows are padded here (see `embed_padded`), not by the tokenizer file's settings.
        tokenizer.with_padding(None);
        let truncation = TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        };
        tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
        })
    }

    /// Embeds `texts` in one batch, each padded to the longest.
    pub fn embed(&self, texts: &[String]) -> Result<Embeddings, EmbedError> {
        self.embed_padded(texts, Padding::Longest)
    }

    /// Embeds `texts` with `padding`: `none` runs each text alone (no pad token, one
    /// forward each), `longest` pads to the longest text, `bucket` to the next power of two
    /// of it (a few shapes only). Pad positions are masked, so a text's vector is the same.
    pub fn embed_padded(
        &self,
        texts: &[String],
        padding: Padding,
    ) -> Result<Embeddings, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let rows: Vec<Row> = encodings.iter().map(Row::of).collect();
        if padding != Padding::None {
            return self.forward(&rows, padding);
        }
        let mut all = Embeddings::default();
        for row in rows {
            let one = self.forward(std::slice::from_ref(&row), Padding::Longest)?;
            all.vectors.extend(one.vectors);
            all.tokens_per_input.extend(one.tokens_per_input);
        }
        Ok(all)
    }

    /// One forward over `rows`, padded to a common length.
    fn forward(&self, rows: &[Row], padding: Padding) -> Result<Embeddings, EmbedError> {
        let longest = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let len = match padding {
            Padding::Bucket => longest.next_power_of_two().min(MAX_TOKENS.max(longest)),
            Padding::None | Padding::Longest => longest,
        };
        let stack = |f: fn(&Row) -> &[u32]| -> Result<Tensor, EmbedError> {
            let padded: Vec<Tensor> = rows
                .iter()
                .map(|r| {
                    let mut v = f(r).to_vec();
                    v.resize(len, 0);
                    Tensor::new(v.as_slice(), &self.device)
                })
                .collect::<Result<_, _>>()?;
            Ok(Tensor::stack(&padded, 0)?)
        };
        let (ids, types, mask) = (
            stack(|r| &r.ids)?,
            stack(|r| &r.types)?,
            stack(|r| &r.mask)?,
        );
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let tokens_per_input: Vec<usize> = rows.iter().map(|r| r.ids.len()).collect();
        let vectors = mean_pool_normalised(&hidden, &mask)?.to_vec2::<f32>()?;
        Ok(Embeddings {
            vectors,
            tokens_per_input,
        })
    }
}

/// One text's tokens, type ids and attention mask (all ones: no padding yet).
struct Row {
    ids: Vec<u32>,
    types: Vec<u32>,
    mask: Vec<u32>,
}

impl Row {
    fn of(e: &tokenizers::Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            types: e.get_type_ids().to_vec(),
            mask: e.get_attention_mask().to_vec(),
        }
    }
}

/// Mean of `hidden` `[batch, len, dim]` over positions where `mask` is 1, scaled to unit
/// length.
fn mean_pool_normalised(hidden: &Tensor, mask: &Tensor) -> Result<Tensor, EmbedError> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
    Ok(mean.broadcast_div(&norm)?)
}
