//! Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2 by default) through candle:
//! mean pooling over the real tokens, then unit length, as sentence-transformers does.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One unit vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read (special tokens included), for usage.
    pub tokens: usize,
    /// Of those, each input's, in order.
    pub tokens_per_input: Vec<usize>,
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
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
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

    /// Embeds `texts` in one batch.
    pub fn embed(&self, texts: &[String]) -> Result<Embeddings, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, EmbedError> {
            let rows: Vec<Tensor> = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &self.device))
                .collect::<Result<_, _>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        let ids = rows(tokenizers::Encoding::get_ids)?;
        let types = rows(tokenizers::Encoding::get_type_ids)?;
        let mask = rows(tokenizers::Encoding::get_attention_mask)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let tokens_per_input: Vec<usize> = (mask.sum(1)?.to_vec1::<u32>()?)
            .into_iter()
            .map(|n| n as usize)
            .collect();
        let vectors = mean_pool_normalised(&hidden, &mask)?.to_vec2::<f32>()?;
        Ok(Embeddings {
            vectors,
            tokens: tokens_per_input.iter().sum(),
            tokens_per_input,
        })
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
