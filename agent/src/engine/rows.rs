//! The flattened rows of one step: every sequence's new tokens one after another, with
//! their positions, causal masks and where each sequence's last row is, and the padding
//! the pool asked for. Padding only shapes the dense matrix products (projections and
//! MLP): pad rows attend to nothing, are never cached and give no logits.

use candle_core::{Device, Tensor};

use super::kv::KvCache;

/// How the rows of a step are padded (`batching.padding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Ragged rows: each sequence feeds exactly its tokens (the least work; best on CPU).
    #[default]
    None,
    /// Every sequence padded to the longest of the step.
    Longest,
    /// The step's rows padded to the next power of two, so that few shapes ever run
    /// (what fixed-shape kernels and graph capture on GPUs want).
    Bucket,
}

/// One sequence's tokens in a step.
#[derive(Debug)]
pub struct SeqStep<'a> {
    /// The tokens to feed: a prompt chunk, or the last sampled token.
    pub tokens: &'a [u32],
    /// Its KV cache, extended by the step.
    pub cache: &'a mut KvCache,
}

/// A run of rows: a sequence's real rows (by index in the batch) or padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The rows of sequence `i` (see `Rows::spans`).
    Sequence(usize),
    /// This many pad rows.
    Pad(usize),
}

/// The rows of a step.
#[derive(Debug)]
pub struct Rows {
    /// Token per row (pad rows: 0).
    pub ids: Vec<u32>,
    /// Position per row (pad rows: 0).
    pub positions: Vec<u32>,
    /// Per sequence: first row and number of real rows.
    pub spans: Vec<(usize, usize)>,
    /// Per sequence: its causal mask when it feeds more than one row (built once per step,
    /// shared by every layer).
    pub masks: Vec<Option<Tensor>>,
    /// Per sequence: its last real row, whose logits are its next token's.
    pub last_rows: Vec<u32>,
    /// The rows in order.
    pub layout: Vec<Segment>,
}

impl Rows {
    /// The rows of `batch`, padded as `padding` says.
    pub fn of(
        batch: &[SeqStep<'_>],
        padding: Padding,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let longest = batch.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
        let mut rows = Rows {
            ids: Vec::new(),
            positions: Vec::new(),
            spans: Vec::new(),
            masks: Vec::new(),
            last_rows: Vec::new(),
            layout: Vec::new(),
        };
        for (i, seq) in batch.iter().enumerate() {
            rows.push_sequence(i, seq, device)?;
            if padding == Padding::Longest {
                rows.pad(longest - seq.tokens.len());
            }
        }
        if padding == Padding::Bucket {
            let t = rows.ids.len();
            rows.pad(t.next_power_of_two() - t);
        }
        Ok(rows)
    }

    fn push_sequence(
        &mut self,
        i: usize,
        seq: &SeqStep<'_>,
        device: &Device,
    ) -> candle_core::Result<()> {
        let (start, past, len) = (self.ids.len(), seq.cache.len(), seq.tokens.len());
        self.ids.extend_from_slice(seq.tokens);
        self.positions.extend((past..past + len).map(|p| p as u32));
        self.spans.push((start, len));
        self.masks.push(if len > 1 {
            Some(causal_mask(len, past, device)?)
        } else {
            None
        });
        self.last_rows.push((start + len).saturating_sub(1) as u32);
        self.layout.push(Segment::Sequence(i));
        Ok(())
    }

    fn pad(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.ids.extend(std::iter::repeat_n(0, n));
        self.positions.extend(std::iter::repeat_n(0, n));
        self.layout.push(Segment::Pad(n));
    }
}

/// `-inf` where a query row may not see a key column: row j (position past+j) sees keys
/// 0..=past+j.
fn causal_mask(len: usize, past: usize, device: &Device) -> candle_core::Result<Tensor> {
    let total = past + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|j| (0..total).map(move |l| if l > past + j { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (len, total), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(lens: &[usize], padding: Padding) -> Rows {
        let tokens: Vec<Vec<u32>> = lens.iter().map(|&n| vec![7; n]).collect();
        let mut caches: Vec<KvCache> = lens.iter().map(|_| KvCache::default()).collect();
        let batch: Vec<SeqStep<'_>> = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| SeqStep { tokens: t, cache })
            .collect();
        Rows::of(&batch, padding, &Device::Cpu).expect("rows")
    }

    #[test]
    fn no_padding_keeps_the_rows_ragged() {
        let r = rows_of(&[3, 1], Padding::None);
        assert_eq!(r.ids.len(), 4);
        assert_eq!(r.last_rows, [2, 3]);
        assert_eq!(r.layout, [Segment::Sequence(0), Segment::Sequence(1)]);
    }

    #[test]
    fn longest_pads_each_sequence_to_the_longest() {
        let r = rows_of(&[3, 1, 2], Padding::Longest);
        assert_eq!(r.ids.len(), 9);
        assert_eq!(r.spans, [(0, 3), (3, 1), (6, 2)]);
        assert_eq!(r.last_rows, [2, 3, 7]);
        let pads: usize = r
            .layout
            .iter()
            .map(|s| match s {
                Segment::Pad(n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(pads, 3);
    }

    #[test]
    fn bucket_pads_the_step_to_a_power_of_two() {
        assert_eq!(rows_of(&[3, 2], Padding::Bucket).ids.len(), 8);
        assert_eq!(rows_of(&[4, 4], Padding::Bucket).ids.len(), 8);
        assert_eq!(rows_of(&[1], Padding::Bucket).ids.len(), 1);
    }
}
