//! Weights shaped for the forward pass at load: projections that read the same input
//! stacked into one matrix, and the residual width padded with zero columns where candle's
//! repacked x86 kernels want it. Quantized weights are stacked and padded block by block,
//! as the bytes they are: no dense copy of a matrix is ever made (for the 49152 x 576
//! output layer a dense round trip took ~400 MB at its peak, most of the agent's peak
//! memory at load, and re-quantized weights that were already quantized).

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

/// Set to `1` to keep the generic Q8_0 kernels (see `repack_padding`).
pub const NO_REPACK_ENV: &str = "INFERPOOL_NO_REPACK";

/// Zero columns to append to the residual width so that candle's repacked x86 kernels
/// (AVX512-VNNI, 16 rows per instruction; they need the inner width to be a multiple of
/// 256) take the matmuls that read it: 576 wide SmolLM2 runs them 2-4x faster at 768 than
/// on the generic Q8_0 dot product. None where those kernels do not run. The price is
/// precision: those kernels round activations per 256 values (Q8_K, as llama.cpp does for
/// its K-quants) rather than per 32, which `bench/accuracy` measures; `INFERPOOL_NO_REPACK=1`
/// keeps the finer rounding.
pub fn repack_padding(hidden: usize, weights: Option<GgmlDType>, device: &Device) -> usize {
    #[cfg(target_arch = "x86_64")]
    let vnni = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni");
    #[cfg(not(target_arch = "x86_64"))]
    let vnni = false;
    let disabled = std::env::var(NO_REPACK_ENV).is_ok_and(|v| v == "1");
    if disabled || !vnni || !device.is_cpu() || weights != Some(GgmlDType::Q8_0) {
        return 0;
    }
    hidden.next_multiple_of(256) - hidden
}

/// `x` `[rows, cols]` with `pad` zero columns appended.
pub fn pad_columns(x: &Tensor, pad: usize) -> candle_core::Result<Tensor> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let zeros = Tensor::zeros((x.dim(0)?, pad), x.dtype(), x.device())?;
    Tensor::cat(&[x, &zeros], 1)
}

/// One matmul computing all of `parts` (their output rows stacked, in order, with `pad`
/// zero input columns), in the parts' quantized type: block by block where it can be (see
/// `stack_blocks`), else through a dense copy (re-quantizing dequantized Q8_0 blocks
/// gives the same blocks).
pub fn stack(parts: &[&QMatMul], pad: usize, device: &Device) -> candle_core::Result<QMatMul> {
    if let ([only], 0) = (parts, pad) {
        return Ok((*only).clone());
    }
    if let Some(stacked) = stack_blocks(parts, pad, device)? {
        return Ok(stacked);
    }
    let mut dtype = None;
    let mut dense = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            QMatMul::QTensor(q) => {
                dtype = Some(q.dtype());
                dense.push(q.dequantize(device)?);
            }
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => dense.push(t.to_dtype(DType::F32)?),
        }
    }
    let all = pad_columns(&Tensor::cat(&dense, 0)?, pad)?;
    match dtype {
        Some(dtype) => QMatMul::from_qtensor(QTensor::quantize(&all, dtype)?),
        None => Ok(QMatMul::Tensor(all)),
    }
}

/// `parts` stacked without leaving their quantized form: each row's blocks copied as they
/// are, followed by `pad / block size` zero blocks (an all-zero block holds zeros in every
/// ggml type: its scales are zero). `None` unless every part is a CPU matrix of the same
/// quantized type and width, and the width and `pad` are whole blocks.
fn stack_blocks(
    parts: &[&QMatMul],
    pad: usize,
    device: &Device,
) -> candle_core::Result<Option<QMatMul>> {
    let Some(quantized) = parts
        .iter()
        .map(|p| match p {
            QMatMul::QTensor(q) => Some(q.as_ref()),
            QMatMul::Tensor(_) | QMatMul::TensorF16(_) => None,
        })
        .collect::<Option<Vec<&QTensor>>>()
    else {
        return Ok(None);
    };
    let Some(shape) = same_shape(&quantized, pad) else {
        return Ok(None);
    };
    if !device.is_cpu() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(shape.rows * (shape.row_bytes + shape.pad_bytes));
    for q in &quantized {
        for row in q.data()?.chunks_exact(shape.row_bytes) {
            out.extend_from_slice(row);
            out.resize(out.len() + shape.pad_bytes, 0);
        }
    }
    let storage = QStorage::from_data(Cow::Owned(out), device, shape.dtype)?;
    let stacked = QTensor::new(storage, (shape.rows, shape.width + pad))?;
    Ok(Some(QMatMul::from_qtensor(stacked)?))
}

/// What block-wise stacking needs to know of its parts.
struct BlockShape {
    dtype: GgmlDType,
    rows: usize,
    width: usize,
    row_bytes: usize,
    pad_bytes: usize,
}

/// The parts' common type and width and their rows in all, if they can be stacked block by
/// block with `pad` columns.
fn same_shape(parts: &[&QTensor], pad: usize) -> Option<BlockShape> {
    let dtype = parts.first()?.dtype();
    let width = parts.first()?.shape().dims2().ok()?.1;
    let block = dtype.block_size();
    let mut rows = 0;
    for q in parts {
        let (r, w) = q.shape().dims2().ok()?;
        if q.dtype() != dtype || w != width {
            return None;
        }
        rows += r;
    }
    if !width.is_multiple_of(block) || !pad.is_multiple_of(block) {
        return None;
    }
    Some(BlockShape {
        dtype,
        rows,
        width,
        row_bytes: width / block * dtype.type_size(),
        pad_bytes: pad / block * dtype.type_size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantized(rows: usize, cols: usize, seed: f32) -> candle_core::Result<QMatMul> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.37 + seed).sin())
            .collect();
        let dense = Tensor::from_vec(values, (rows, cols), &Device::Cpu)?;
        QMatMul::from_qtensor(QTensor::quantize(&dense, GgmlDType::Q8_0)?)
    }

    fn dequantized(m: &QMatMul) -> candle_core::Result<Vec<Vec<f32>>> {
        match m {
            QMatMul::QTensor(q) => q.dequantize(&Device::Cpu)?.to_vec2(),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?.to_vec2(),
        }
    }

    #[test]
    fn block_wise_stacking_keeps_every_value_and_pads_with_zeros() -> candle_core::Result<()> {
        let (a, b) = (quantized(3, 64, 0.0)?, quantized(2, 64, 1.0)?);
        let stacked = stack(&[&a, &b], 32, &Device::Cpu)?;
        assert!(matches!(stacked, QMatMul::QTensor(_)), "still quantized");
        let rows = dequantized(&stacked)?;
        let expected: Vec<Vec<f32>> = [dequantized(&a)?, dequantized(&b)?].concat();
        assert_eq!(rows.len(), 5);
        for (row, want) in rows.iter().zip(&expected) {
            assert_eq!(
                &row[..64],
                want.as_slice(),
                "the blocks are copied as they are"
            );
            assert!(row[64..].iter().all(|&v| v == 0.0), "the pad is zeros");
        }
        Ok(())
    }

    #[test]
    fn dense_parts_are_stacked_dense() -> candle_core::Result<()> {
        let a = QMatMul::Tensor(Tensor::ones((2, 8), DType::F32, &Device::Cpu)?);
        let stacked = stack(&[&a, &a], 4, &Device::Cpu)?;
        assert!(matches!(stacked, QMatMul::Tensor(_)));
        let rows = dequantized(&stacked)?;
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[3],
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        );
        Ok(())
    }
}
