//! Causal attention of one sequence's new rows over its cached keys and values, read in
//! place. Long prompts are taken a tile of query rows at a time, so that their scores,
//! mask and softmax never hold more than a bounded number of values: at once they are a
//! few copies of `heads x rows x context` values, which for one 1100-token prompt came to
//! ~170 MB and grows with the square of the prompt.

use candle_core::{DType, Tensor};

/// Attention scores computed at once, at most (4 Mi: 16 MiB as f32).
pub const SCORE_ELEMENTS: usize = 1 << 22;

/// The model's attention heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub query: usize,
    /// Key/value heads (fewer under grouped-query attention).
    pub kv: usize,
}

/// Attention of `q` `[heads, len, hd]` over `k`, `v` `[kv_heads, past+len, hd]` (`mask`
/// `[len, past+len]` when more than one query row), `score_elements` scores at a time at
/// most (at least one row); returns `[len, heads*hd]`.
pub fn attend(
    heads: Heads,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    score_elements: usize,
) -> candle_core::Result<Tensor> {
    let len = q.dim(1)?;
    let per_row = heads.query * k.dim(1)?;
    let tile = (score_elements / per_row.max(1)).max(1);
    if len <= tile {
        return attend_rows(heads, q, k, v, mask);
    }
    let mut outputs = Vec::with_capacity(len.div_ceil(tile));
    for start in (0..len).step_by(tile) {
        let rows = tile.min(len - start);
        let q_rows = q.narrow(1, start, rows)?.contiguous()?;
        let mask_rows = mask.map(|m| m.narrow(0, start, rows)).transpose()?;
        outputs.push(attend_rows(heads, &q_rows, k, v, mask_rows.as_ref())?);
    }
    Tensor::cat(&outputs, 0)
}

/// `attend` for rows whose scores are computed at once. The query heads sharing a
/// key/value head are folded into its rows, so the cache is read in place rather than
/// copied once per query head.
fn attend_rows(
    heads: Heads,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (_, len, hd) = q.dims3()?;
    let (kv, group, total) = (heads.kv, heads.query / heads.kv, k.dim(1)?);
    // Scaled before the product, so that scores in the cache's type (f16) stay small; the
    // softmax is in f32.
    let q = (q.reshape((kv, group * len, hd))? / (hd as f64).sqrt())?.to_dtype(k.dtype())?;
    let scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(mask) => scores
            .reshape((kv, group, len, total))?
            .broadcast_add(mask)?
            .reshape((kv, group * len, total))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    drop(scores);
    let y = probs
        .matmul(v)?
        .to_dtype(DType::F32)?
        .reshape((heads.query, len, hd))?;
    y.transpose(0, 1)?.reshape((len, heads.query * hd))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn values(shape: (usize, usize, usize), seed: f32) -> candle_core::Result<Tensor> {
        let n = shape.0 * shape.1 * shape.2;
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.61 + seed).sin()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    #[test]
    fn tiles_of_query_rows_give_the_attention_of_all_rows_at_once() -> candle_core::Result<()> {
        let heads = Heads { query: 6, kv: 2 };
        let (past, len, hd) = (5, 11, 8);
        let q = values((heads.query, len, hd), 0.0)?;
        let k = values((heads.kv, past + len, hd), 1.0)?;
        let v = values((heads.kv, past + len, hd), 2.0)?;
        let mask: Vec<f32> = (0..len)
            .flat_map(|j| {
                (0..past + len).map(move |l| if l > past + j { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (len, past + len), &Device::Cpu)?;
        let whole = attend(heads, &q, &k, &v, Some(&mask), usize::MAX)?;
        // Three rows a tile (the last one two): 6 heads x 16 positions a row.
        let tiled = attend(heads, &q, &k, &v, Some(&mask), 3 * 6 * 16)?;
        assert_eq!(tiled.dims(), [len, heads.query * hd]);
        let gap = (whole - tiled)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(gap < 1e-6, "tiles differ from the whole by {gap}");
        Ok(())
    }
}
