//! A llama-architecture model on candle with our own batched forward pass: the projections
//! and MLP run once over the rows of every active sequence, while each sequence keeps its
//! own position and KV cache (candle's `quantized_llama` shares one position and one cache
//! across the batch, so it cannot serve continuous batching).

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Tensor};

use super::attention::{Heads, SCORE_ELEMENTS, attend};
pub use super::fuse::NO_REPACK_ENV;
use super::fuse::{pad_columns, repack_padding, stack};
use super::gguf::{GgufHeader, ModelFileError};
pub use super::kv::KvCache;
pub use super::rows::{Padding, SeqStep};
use super::rows::{Rows, Segment};

/// Shape of a llama model, from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMS norm epsilon.
    pub eps: f64,
    /// Longest context the model was trained for.
    pub context: usize,
    /// RoPE on interleaved pairs (GGUF's layout) rather than on the two halves of each
    /// head (Hugging Face's).
    pub rope_interleaved: bool,
}

impl LlamaConfig {
    fn from_header(h: &GgufHeader) -> Result<Self, ModelFileError> {
        let get = |k: &str| h.u32(k).map(|v| v as usize);
        let float = |k: &str, default: f32| h.f32(k).unwrap_or(default);
        Ok(Self {
            layers: get("llama.block_count")?,
            heads: get("llama.attention.head_count")?,
            kv_heads: get("llama.attention.head_count_kv")?,
            hidden: get("llama.embedding_length")?,
            rope_base: float("llama.rope.freq_base", 10_000.0),
            eps: f64::from(float("llama.attention.layer_norm_rms_epsilon", 1e-5)),
            context: get("llama.context_length")?,
            rope_interleaved: true,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// Errors of the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is unreadable or lacks what a llama model needs.
    #[error(transparent)]
    File(#[from] ModelFileError),
    /// A tensor operation failed.
    #[error("model: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A sequence would run past the model's context.
    #[error("sequence of {0} tokens exceeds the context of {1}")]
    TooLong(usize, usize),
}

/// One transformer block's weights.
pub(crate) struct Layer {
    pub attn_norm: Tensor,
    pub wq: QMatMul,
    pub wk: QMatMul,
    pub wv: QMatMul,
    pub wo: QMatMul,
    pub ffn_norm: Tensor,
    pub gate: QMatMul,
    pub up: QMatMul,
    pub down: QMatMul,
}

/// One block as the forward pass runs it: the projections that read the same input
/// stacked into one matmul each (q, k, v; gate, up), so a step dispatches 4 matmuls per
/// layer instead of 7 (at small batches the dispatch, not the arithmetic, dominates).
struct Block {
    attn_norm: Tensor,
    wqkv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    gate_up: QMatMul,
    down: QMatMul,
}

impl Block {
    /// `pad` zero columns are appended to the weights that read the residual width.
    fn fuse(layer: Layer, pad: usize, device: &Device) -> Result<Self, ModelError> {
        Ok(Self {
            wqkv: stack(&[&layer.wq, &layer.wk, &layer.wv], pad, device)?,
            gate_up: stack(&[&layer.gate, &layer.up], pad, device)?,
            wo: stack(&[&layer.wo], pad, device)?,
            attn_norm: layer.attn_norm,
            ffn_norm: layer.ffn_norm,
            down: layer.down,
        })
    }
}

/// The quantized type of the first block's query weights, if quantized.
fn weight_type(layers: &[Layer]) -> Option<GgmlDType> {
    match &layers.first()?.wq {
        QMatMul::QTensor(q) => Some(q.dtype()),
        QMatMul::Tensor(_) | QMatMul::TensorF16(_) => None,
    }
}

/// The weights of a whole model, however they were read.
pub(crate) struct Weights {
    /// The token embeddings, as stored: looked up a row at a time, never dequantized whole.
    pub embed: QMatMul,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub output: QMatMul,
}

/// A loaded llama model.
pub struct Llama {
    /// Its shape.
    pub config: LlamaConfig,
    embed: QMatMul,
    blocks: Vec<Block>,
    /// Zero columns the blocks' weights carry (see `repack_padding`).
    pad: usize,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// As stored in the file.
    AsStored,
    /// Q4_1 converted to Q8_0 at load: candle has SIMD kernels for Q8_0 only, so this is
    /// several times faster for ~1 % error (ENGINE-NOTES.md).
    Q8,
    /// Dequantized to f32: the file's own values with no rounding on the way, the
    /// reference that accuracy checks compare against (slow).
    F32,
}

impl Llama {
    /// Loads a llama GGUF file onto `device`.
    pub fn load(path: &Path, format: WeightFormat, device: &Device) -> Result<Self, ModelError> {
        let header = GgufHeader::read(path)?;
        let config = LlamaConfig::from_header(&header)?;
        let mut file = std::fs::File::open(path).map_err(|source| ModelFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut tensor = |name: &str| header.content.tensor(&mut file, name, device);
        let matmul = |t: QTensor| -> Result<QMatMul, ModelError> {
            Ok(QMatMul::from_qtensor(convert(t, format, device)?)?)
        };
        // Rows of quantized embeddings are dequantized as they are looked up (the same
        // values as a dense copy, without its 4 bytes a weight).
        let embed_format = match format {
            WeightFormat::F32 => WeightFormat::F32,
            WeightFormat::AsStored | WeightFormat::Q8 => WeightFormat::AsStored,
        };
        let embed = convert(tensor("token_embd.weight")?, embed_format, device)?;
        let embed = QMatMul::from_qtensor(embed)?;
        let output = match tensor("output.weight") {
            Ok(t) => matmul(t)?,
            Err(_) => matmul(tensor("token_embd.weight")?)?,
        };
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let mut t = |n: &str| tensor(&format!("blk.{i}.{n}.weight"));
            let (q, k, v, o) = (t("attn_q")?, t("attn_k")?, t("attn_v")?, t("attn_output")?);
            let (g, u, d) = (t("ffn_gate")?, t("ffn_up")?, t("ffn_down")?);
            let (an, fnorm) = (t("attn_norm")?, t("ffn_norm")?);
            layers.push(Layer {
                attn_norm: an.dequantize(device)?,
                wq: matmul(q)?,
                wk: matmul(k)?,
                wv: matmul(v)?,
                wo: matmul(o)?,
                ffn_norm: fnorm.dequantize(device)?,
                gate: matmul(g)?,
                up: matmul(u)?,
                down: matmul(d)?,
            });
        }
        let weights = Weights {
            embed,
            layers,
            norm,
            output,
        };
        Self::assemble(config, weights, device)
    }

    /// A model of shape `config` from `weights`.
    pub(crate) fn assemble(
        config: LlamaConfig,
        w: Weights,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let (cos, sin) = rope_tables(&config, device)?;
        let pad = repack_padding(config.hidden, weight_type(&w.layers), device);
        let blocks = w
            .layers
            .into_iter()
            .map(|layer| Block::fuse(layer, pad, device))
            .collect::<Result<_, _>>()?;
        let output = stack(&[&w.output], pad, device)?;
        Ok(Self {
            config,
            embed: w.embed,
            blocks,
            pad,
            norm: w.norm,
            output,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Runs one step for every sequence in `batch` and returns each one's logits for its
    /// next token, `[batch, vocab]`.
    pub fn step(&self, batch: &mut [SeqStep<'_>]) -> Result<Tensor, ModelError> {
        self.step_padded(batch, Padding::None)
    }

    /// `step` with the step's rows padded as `padding` says: the pad rows run through the
    /// projections and the MLP (fixed shapes for the matrix products) but attend to
    /// nothing, are never cached and give no logits.
    pub fn step_padded(
        &self,
        batch: &mut [SeqStep<'_>],
        padding: Padding,
    ) -> Result<Tensor, ModelError> {
        for seq in batch.iter() {
            let total = seq.cache.len() + seq.tokens.len();
            if total > self.config.context {
                return Err(ModelError::TooLong(total, self.config.context));
            }
        }
        let rows = Rows::of(batch, padding, &self.device)?;
        let ids = Tensor::new(rows.ids.as_slice(), &self.device)?;
        let positions = Tensor::new(rows.positions.as_slice(), &self.device)?;
        let cos = self.cos.index_select(&positions, 0)?;
        let sin = self.sin.index_select(&positions, 0)?;
        let mut x = self.embed.embedding(&ids)?.to_dtype(DType::F32)?;
        let eps = self.config.eps as f32;
        for (li, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, eps)?;
            let h = pad_columns(&h, self.pad)?;
            let attn = self.attention(block, li, &h, (&cos, &sin), &rows, batch)?;
            x = (x + block.wo.forward(&pad_columns(&attn, self.pad)?)?)?;
            let h = pad_columns(
                &candle_nn::ops::rms_norm(&x, &block.ffn_norm, eps)?,
                self.pad,
            )?;
            let gate_up = block.gate_up.forward(&h)?;
            let width = gate_up.dim(1)? / 2;
            let gate = candle_nn::ops::silu(&gate_up.narrow(1, 0, width)?)?;
            let mlp = (gate * gate_up.narrow(1, width, width)?)?;
            x = (x + block.down.forward(&mlp)?)?;
        }
        for seq in batch.iter_mut() {
            seq.cache.advance(seq.tokens.len());
        }
        let last = Tensor::new(rows.last_rows.as_slice(), &self.device)?;
        let x = x.index_select(&last, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.config.eps as f32)?;
        Ok(self.output.forward(&pad_columns(&x, self.pad)?)?)
    }

    /// Attention for all rows: projections batched, then each sequence attends over its
    /// own cache (extended with its new keys and values).
    fn attention(
        &self,
        block: &Block,
        li: usize,
        h: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        rows: &Rows,
        batch: &mut [SeqStep<'_>],
    ) -> Result<Tensor, ModelError> {
        let c = &self.config;
        let (t, hd) = (rows.ids.len(), c.head_dim());
        let qkv = block.wqkv.forward(h)?;
        // Columns [first, first + n) heads of the fused projection, as [1, n, t, hd].
        let heads = |first: usize, n: usize| -> Result<Tensor, ModelError> {
            Ok(qkv
                .narrow(1, first * hd, n * hd)?
                .reshape((t, n, hd))?
                .transpose(0, 1)?
                .unsqueeze(0)?
                .contiguous()?)
        };
        let rope = |x: &Tensor| {
            if c.rope_interleaved {
                candle_nn::rotary_emb::rope_i(x, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(x, cos, sin)
            }
        };
        let q = rope(&heads(0, c.heads)?)?;
        let k = rope(&heads(c.heads, c.kv_heads)?)?;
        let v = heads(c.heads + c.kv_heads, c.kv_heads)?;
        let shape = Heads {
            query: c.heads,
            kv: c.kv_heads,
        };
        let mut outputs = Vec::with_capacity(rows.layout.len());
        for segment in &rows.layout {
            let (i, start, len) = match *segment {
                Segment::Pad(n) => {
                    outputs.push(Tensor::zeros((n, c.heads * hd), h.dtype(), h.device())?);
                    continue;
                }
                Segment::Sequence(i) => (i, rows.spans[i].0, rows.spans[i].1),
            };
            let q = q.narrow(2, start, len)?.squeeze(0)?;
            let k_new = k.narrow(2, start, len)?.squeeze(0)?;
            let v_new = v.narrow(2, start, len)?.squeeze(0)?;
            let (k_all, v_all) = batch[i].cache.append(li, &k_new, &v_new)?;
            let mask = rows.masks[i].as_ref();
            outputs.push(attend(shape, &q, &k_all, &v_all, mask, SCORE_ELEMENTS)?);
        }
        Ok(Tensor::cat(&outputs, 0)?)
    }
}

fn rope_tables(c: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor), ModelError> {
    let hd = c.head_dim();
    let theta: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1.0 / c.rope_base.powf(i as f32 / hd as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), device)?;
    let positions = Tensor::arange(0, c.context as u32, device)?
        .to_dtype(DType::F32)?
        .unsqueeze(1)?;
    let angles = positions.broadcast_mul(&theta.unsqueeze(0)?)?;
    Ok((angles.cos()?, angles.sin()?))
}

fn convert(t: QTensor, format: WeightFormat, device: &Device) -> Result<QTensor, ModelError> {
    let target = match format {
        WeightFormat::Q8 if t.dtype() == GgmlDType::Q4_1 => GgmlDType::Q8_0,
        WeightFormat::F32 => GgmlDType::F32,
        _ => return Ok(t),
    };
    Ok(QTensor::quantize(&t.dequantize(device)?, target)?)
}

/// The index of the largest logit (greedy decoding).
pub fn argmax(logits: &Tensor) -> Result<u32, ModelError> {
    Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?)
}
