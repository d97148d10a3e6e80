//! The KV cache in fixed-size blocks drawn from a budget. Every sequence holds whole
//! blocks; its keys and values live in per-layer buffers whose capacity is exactly the
//! blocks it holds, written in place as tokens arrive (no copy of the past per step). The
//! budget bounds memory and is what the agent reports as KV-cache utilisation. Keys and
//! values are kept in f16 by default: half the memory of f32 and half the bytes that
//! attention reads per step (it is bound by that reading at long contexts), for an error
//! well below the weights' quantisation.

use candle_core::{DType, Device, Tensor};

/// One block's keys and values, per layer `[kv_heads, BLOCK_SIZE, head_dim]`.
pub type BlockLayers = Vec<(Tensor, Tensor)>;

/// Tokens per block.
pub const BLOCK_SIZE: usize = 16;

/// The blocks the whole engine may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockBudget {
    total: usize,
    used: usize,
}

impl BlockBudget {
    /// A budget of `total` blocks.
    pub fn new(total: usize) -> Self {
        Self { total, used: 0 }
    }

    /// The blocks that `bytes` of memory hold for a model with `bytes_per_token` of
    /// keys and values (at least one block).
    pub fn from_bytes(bytes: u64, bytes_per_token: u64) -> Self {
        let per_block = bytes_per_token.max(1) * BLOCK_SIZE as u64;
        Self::new(
            usize::try_from(bytes / per_block)
                .unwrap_or(usize::MAX)
                .max(1),
        )
    }

    /// Blocks needed to hold `tokens`.
    pub fn blocks_for(tokens: usize) -> usize {
        tokens.div_ceil(BLOCK_SIZE)
    }

    /// Takes `n` blocks if that many are free.
    pub fn try_take(&mut self, n: usize) -> bool {
        if self.free() < n {
            return false;
        }
        self.used += n;
        true
    }

    /// Returns `n` blocks.
    pub fn give_back(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }

    /// Blocks free.
    pub fn free(&self) -> usize {
        self.total - self.used
    }

    /// Blocks held by sequences.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Blocks in the budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Tokens the whole budget holds: the longest sequence that can ever run.
    pub fn capacity_tokens(&self) -> usize {
        self.total * BLOCK_SIZE
    }
}

/// The element type of cached keys and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheDtype {
    /// Half precision (the default).
    #[default]
    F16,
    /// Single precision: exactly what the model computed, twice the memory.
    F32,
}

impl KvCacheDtype {
    /// candle's type.
    pub fn dtype(self) -> DType {
        match self {
            Self::F16 => DType::F16,
            Self::F32 => DType::F32,
        }
    }

    /// Bytes per cached element.
    pub fn bytes(self) -> u64 {
        self.dtype().size_in_bytes() as u64
    }
}

/// One sequence's keys and values: per layer `[kv_heads, blocks * BLOCK_SIZE, head_dim]`,
/// the first `len` positions filled.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    blocks: usize,
    dtype: DType,
}

/// f32, exactly what the model computed (the engine's sequences choose, see `new`).
impl Default for KvCache {
    fn default() -> Self {
        Self::new(KvCacheDtype::F32)
    }
}

impl KvCache {
    /// An empty cache keeping `dtype`.
    pub fn new(dtype: KvCacheDtype) -> Self {
        Self {
            layers: Vec::new(),
            len: 0,
            blocks: 0,
            dtype: dtype.dtype(),
        }
    }

    /// The element type of what it keeps.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Blocks this sequence holds.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// More blocks needed to append `tokens`.
    pub fn blocks_missing(&self, tokens: usize) -> usize {
        BlockBudget::blocks_for(self.len + tokens).saturating_sub(self.blocks)
    }

    /// Records `n` more blocks taken from the budget for this sequence.
    pub fn grant(&mut self, n: usize) {
        self.blocks += n;
    }

    /// Empties the cache (its type stays); returns the blocks it held, to give back to the
    /// budget.
    pub fn release(&mut self) -> usize {
        self.layers.clear();
        self.len = 0;
        std::mem::take(&mut self.blocks)
    }

    /// Writes `k`, `v` (`[kv_heads, n, head_dim]`) for layer `li` after the `len` cached
    /// positions and returns views of everything cached for that layer, new rows included.
    pub(crate) fn append(
        &mut self,
        li: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let capacity = self.blocks.max(BlockBudget::blocks_for(self.len + n)) * BLOCK_SIZE;
        if li == self.layers.len() {
            let (kv, _, hd) = k.dims3()?;
            let zeros = || Tensor::zeros((kv, capacity, hd), self.dtype, k.device());
            self.layers.push((zeros()?, zeros()?));
        }
        let (kc, vc) = &mut self.layers[li];
        grow(kc, capacity)?;
        grow(vc, capacity)?;
        kc.slice_set(&k.to_dtype(self.dtype)?.contiguous()?, 1, self.len)?;
        vc.slice_set(&v.to_dtype(self.dtype)?.contiguous()?, 1, self.len)?;
        Ok((
            kc.narrow(1, 0, self.len + n)?,
            vc.narrow(1, 0, self.len + n)?,
        ))
    }

    /// Marks `n` appended positions as filled, once every layer has them.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Fills an empty cache with `blocks` (from `prefix::PrefixCache::lookup`), in order,
    /// within the blocks already granted; their tokens count as cached.
    pub fn load_prefix(&mut self, blocks: &[BlockLayers]) -> candle_core::Result<()> {
        let Some(first) = blocks.first() else {
            return Ok(());
        };
        let capacity = self.blocks * BLOCK_SIZE;
        let filled = blocks.len() * BLOCK_SIZE;
        if !self.layers.is_empty() || filled > capacity {
            candle_core::bail!("a prefix of {filled} tokens does not fit {capacity}");
        }
        for li in 0..first.len() {
            let ks: Vec<&Tensor> = blocks.iter().map(|b| &b[li].0).collect();
            let vs: Vec<&Tensor> = blocks.iter().map(|b| &b[li].1).collect();
            let mut k = Tensor::cat(&ks, 1)?.to_dtype(self.dtype)?;
            let mut v = Tensor::cat(&vs, 1)?.to_dtype(self.dtype)?;
            grow(&mut k, capacity)?;
            grow(&mut v, capacity)?;
            self.layers.push((k, v));
        }
        self.len = filled;
        Ok(())
    }

    /// A copy of block `index`'s keys and values, for the prefix cache.
    pub fn copy_block(&self, index: usize) -> candle_core::Result<BlockLayers> {
        if (index + 1) * BLOCK_SIZE > self.len {
            candle_core::bail!("block {index} is not filled");
        }
        let copy = |t: &Tensor| {
            t.narrow(1, index * BLOCK_SIZE, BLOCK_SIZE)?
                .force_contiguous()
        };
        self.layers
            .iter()
            .map(|(k, v)| Ok((copy(k)?, copy(v)?)))
            .collect()
    }

    /// The device of the cached tensors, if any.
    pub fn device(&self) -> Option<&Device> {
        self.layers.first().map(|(k, _)| k.device())
    }
}

/// Extends `buffer` along the position axis to `capacity` (a copy once per new block).
fn grow(buffer: &mut Tensor, capacity: usize) -> candle_core::Result<()> {
    let (kv, have, hd) = buffer.dims3()?;
    if have >= capacity {
        return Ok(());
    }
    let extra = Tensor::zeros((kv, capacity - have, hd), buffer.dtype(), buffer.device())?;
    *buffer = Tensor::cat(&[&*buffer, &extra], 1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_blocks_and_refuses_past_the_total() {
        let mut b = BlockBudget::new(4);
        assert_eq!(BlockBudget::blocks_for(0), 0);
        assert_eq!(BlockBudget::blocks_for(1), 1);
        assert_eq!(BlockBudget::blocks_for(BLOCK_SIZE + 1), 2);
        assert!(b.try_take(3));
        assert!(!b.try_take(2));
        assert_eq!((b.used(), b.free()), (3, 1));
        b.give_back(3);
        assert_eq!(b.free(), 4);
    }

    #[test]
    fn budget_from_bytes_rounds_down_to_whole_blocks() {
        let b = BlockBudget::from_bytes(10 * 16 * 100 + 99, 100);
        assert_eq!(b.total(), 10);
        assert_eq!(BlockBudget::from_bytes(1, 100).total(), 1);
    }

    #[test]
    fn cache_appends_in_place_and_returns_the_filled_prefix() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::default();
        cache.grant(cache.blocks_missing(3));
        let k = Tensor::arange(0f32, 6., &dev)?.reshape((1, 3, 2))?;
        let (kk, _) = cache.append(0, &k, &k)?;
        cache.advance(3);
        assert_eq!(kk.dims3()?, (1, 3, 2));
        let k2 = Tensor::new(&[[[6f32, 7.]]], &dev)?;
        let (kk, vv) = cache.append(0, &k2, &k2)?;
        cache.advance(1);
        assert_eq!(
            kk.flatten_all()?.to_vec1::<f32>()?,
            (0..8).map(|i| i as f32).collect::<Vec<_>>()
        );
        assert_eq!(vv.dims3()?, (1, 4, 2));
        assert_eq!((cache.len(), cache.blocks()), (4, 1));
        assert_eq!(cache.blocks_missing(BLOCK_SIZE - 4), 0);
        assert_eq!(cache.blocks_missing(BLOCK_SIZE - 3), 1);
        assert_eq!(cache.release(), 1);
        assert!(cache.is_empty());
        Ok(())
    }

    #[test]
    fn an_f16_cache_keeps_half_precision_and_returns_it() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let mut cache = KvCache::new(KvCacheDtype::F16);
        cache.grant(cache.blocks_missing(2));
        let k = Tensor::new(&[[[1.0f32, 1.0 / 3.0], [1000.5, -2.25]]], &dev)?;
        let (kk, _) = cache.append(0, &k, &k)?;
        cache.advance(2);
        assert_eq!(kk.dtype(), DType::F16);
        let back = kk.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let want = [1.0f32, 1.0 / 3.0, 1000.5, -2.25];
        for (b, w) in back.iter().zip(want) {
            assert!((b - w).abs() <= w.abs() / 1024.0, "{b} vs {w}");
        }
        let block = {
            let mut full = KvCache::new(KvCacheDtype::F16);
            full.grant(1);
            let rows = Tensor::ones((1, BLOCK_SIZE, 2), DType::F32, &dev)?;
            full.append(0, &rows, &rows)?;
            full.advance(BLOCK_SIZE);
            full.copy_block(0)?
        };
        assert_eq!(block[0].0.dtype(), DType::F16);
        assert_eq!(KvCacheDtype::F16.bytes() * 2, KvCacheDtype::F32.bytes());
        Ok(())
    }
}
