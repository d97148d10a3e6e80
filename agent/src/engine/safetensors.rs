//! Loading a Hugging Face llama checkpoint: `config.json`, one or more `*.safetensors`,
//! `tokenizer.json` and `tokenizer_config.json` (for the chat template). Projection
//! weights are quantized to Q8_0 at load (the fast CPU kernel, ~1 % error) when their
//! width allows, else kept dense; RoPE runs on head halves, Hugging Face's layout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::gguf::ModelFileError;
use super::loaded::{LoadError, LoadedModel, template_for};
use super::model::{Layer, Llama, LlamaConfig, ModelError, Weights};
use super::tokenizer::ModelTokenizer;

#[derive(Debug, Deserialize)]
struct HfConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    eos_token_id: Option<EosId>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EosId {
    One(u32),
    Many(Vec<u32>),
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f32 {
    10_000.0
}

impl HfConfig {
    fn llama(&self) -> LlamaConfig {
        LlamaConfig {
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            hidden: self.hidden_size,
            rope_base: self.rope_theta,
            eps: self.rms_norm_eps,
            context: self.max_position_embeddings,
            rope_interleaved: false,
        }
    }

    fn eos(&self) -> Option<u32> {
        match &self.eos_token_id {
            Some(EosId::One(id)) => Some(*id),
            Some(EosId::Many(ids)) => ids.first().copied(),
            None => None,
        }
    }
}

/// Loads the checkpoint directory `dir`.
pub fn load(
    dir: &Path,
    template_override: Option<&str>,
    device: &Device,
) -> Result<LoadedModel, LoadError> {
    let hf: HfConfig = read_json(&dir.join("config.json"))?;
    let tokenizer_config: serde_json::Value =
        read_json(&dir.join("tokenizer_config.json")).unwrap_or_default();
    let chat_template = tokenizer_config["chat_template"]
        .as_str()
        .map(str::to_owned);
    let mut tensors = read_tensors(dir, device)?;
    let config = hf.llama();
    let weights = weights(&mut tensors, &config, hf.tie_word_embeddings)?;
    let model = Arc::new(Llama::assemble(config, weights, device)?);
    let tokenizer = tokenizer(dir, &hf, &tokenizer_config, chat_template)?;
    let template = template_for(&tokenizer, template_override)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        template,
    })
}

fn tokenizer(
    dir: &Path,
    hf: &HfConfig,
    tokenizer_config: &serde_json::Value,
    chat_template: Option<String>,
) -> Result<ModelTokenizer, LoadError> {
    let path = dir.join("tokenizer.json");
    let probe = ModelTokenizer::from_file(&path, 0, None)?;
    let eos = hf
        .eos()
        .or_else(|| {
            tokenizer_config["eos_token"]
                .as_str()
                .and_then(|t| probe.token_id(t))
        })
        .ok_or_else(|| {
            file_error(
                &path,
                "no eos_token_id in config.json or tokenizer_config.json",
            )
        })?;
    Ok(ModelTokenizer::from_file(&path, eos, chat_template)?)
}

fn file_error(path: &Path, what: &'static str) -> ModelFileError {
    ModelFileError::Missing {
        path: path.display().to_string(),
        what,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let io = |source| ModelFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    serde_json::from_str(&text).map_err(|e| LoadError::File(io(std::io::Error::other(e))))
}

fn read_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModelFileError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut tensors = HashMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let shard = candle_core::safetensors::load(&path, device).map_err(ModelError::from)?;
            tensors.extend(shard);
        }
    }
    Ok(tensors)
}

struct Take<'a> {
    tensors: &'a mut HashMap<String, Tensor>,
}

impl Take<'_> {
    fn dense(&mut self, name: &str) -> Result<Tensor, ModelError> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            ModelError::File(ModelFileError::Missing {
                path: name.to_owned(),
                what: "tensor",
            })
        })?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn matmul(&mut self, name: &str) -> Result<QMatMul, ModelError> {
        quantized(self.dense(name)?)
    }
}

/// Q8_0 when the rows split into its 32-wide blocks, else dense.
fn quantized(t: Tensor) -> Result<QMatMul, ModelError> {
    if t.dim(1)? % 32 == 0 {
        let q = QTensor::quantize(&t, GgmlDType::Q8_0)?;
        return Ok(QMatMul::from_qtensor(q)?);
    }
    Ok(QMatMul::Tensor(t))
}

fn weights(
    tensors: &mut HashMap<String, Tensor>,
    c: &LlamaConfig,
    tied: bool,
) -> Result<Weights, ModelError> {
    let mut take = Take { tensors };
    let embed = take.dense("model.embed_tokens.weight")?;
    let output = match (tied, take.tensors.contains_key("lm_head.weight")) {
        (false, true) => take.matmul("lm_head.weight")?,
        _ => quantized(embed.clone())?,
    };
    let norm = take.dense("model.norm.weight")?;
    let layers = (0..c.layers)
        .map(|i| layer(&mut take, i))
        .collect::<Result<_, _>>()?;
    Ok(Weights {
        embed: QMatMul::Tensor(embed),
        layers,
        norm,
        output,
    })
}

fn layer(take: &mut Take<'_>, i: usize) -> Result<Layer, ModelError> {
    let p = format!("model.layers.{i}");
    Ok(Layer {
        attn_norm: take.dense(&format!("{p}.input_layernorm.weight"))?,
        wq: take.matmul(&format!("{p}.self_attn.q_proj.weight"))?,
        wk: take.matmul(&format!("{p}.self_attn.k_proj.weight"))?,
        wv: take.matmul(&format!("{p}.self_attn.v_proj.weight"))?,
        wo: take.matmul(&format!("{p}.self_attn.o_proj.weight"))?,
        ffn_norm: take.dense(&format!("{p}.post_attention_layernorm.weight"))?,
        gate: take.matmul(&format!("{p}.mlp.gate_proj.weight"))?,
        up: take.matmul(&format!("{p}.mlp.up_proj.weight"))?,
        down: take.matmul(&format!("{p}.mlp.down_proj.weight"))?,
    })
}
