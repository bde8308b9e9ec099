//! Layer norm over contiguous rows (`nn.LayerNorm` on the last dim, and
//! `LayerNorm2d` on channels-last data): two passes in f32 (mean, then the
//! centred variance) as PyTorch computes it, 8 lanes per sum.

use candle_core::{DType, Result, Tensor, D};

use super::parallel::{par_chunks_mut, rows_per_chunk};
use super::simd::simd_fn;

simd_fn! {
    /// Layer norm over rows of length `c` (two-pass mean/variance in f32).
    pub(crate) fn layer_norm_rows[layer_norm_rows_at](src: &[f32], dst: &mut [f32], c: usize, w: &[f32], b: &[f32], eps: f32) {
        for (x, y) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c)) {
            let mut s8 = [0f32; 8];
            let mut it = x.chunks_exact(8);
            for ch in &mut it {
                for j in 0..8 {
                    s8[j] += ch[j];
                }
            }
            let mean = (it.remainder().iter().sum::<f32>() + s8.iter().sum::<f32>()) / c as f32;
            let mut v8 = [0f32; 8];
            let mut it = x.chunks_exact(8);
            for ch in &mut it {
                for j in 0..8 {
                    let d = ch[j] - mean;
                    v8[j] += d * d;
                }
            }
            let rem: f32 = it.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum();
            let var = (rem + v8.iter().sum::<f32>()) / c as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for i in 0..c {
                y[i] = (x[i] - mean) * inv * w[i] + b[i];
            }
        }
    }
}

/// Layer norm over the last dim of an f32 CPU tensor (fast kernels on) on all
/// threads; `None` when the fast path does not apply (other device or dtype,
/// or `weight`/`bias` not `[n]`), for the caller's generic path.
pub(crate) fn layer_norm_last_fast(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let n = x.dim(D::Minus1)?;
    if !super::fast_cpu_f32(x) || n == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let w = weight.to_dtype(DType::F32)?.contiguous()?;
    let b = bias.to_dtype(DType::F32)?.contiguous()?;
    let cpu = crate::modeling::memory_encoder::cpu_f32;
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let (bs, bl) = b.storage_and_layout();
    let (Some(xv), Some(wv), Some(bv)) = (cpu(&xs, xl), cpu(&ws, wl), cpu(&bs, bl)) else {
        return Ok(None);
    };
    if wv.len() != n || bv.len() != n {
        return Ok(None);
    }
    let mut out = vec![0f32; xv.len()];
    let per = rows_per_chunk(xv.len() / n, n, 1 << 15);
    par_chunks_mut(&mut out, per * n, |i, dst| {
        let src = &xv[i * per * n..][..dst.len()];
        layer_norm_rows(src, dst, n, wv, bv, eps as f32)
    });
    Tensor::from_vec(out, x.shape(), x.device()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modeling::kernels::simd::available;
    use crate::modeling::kernels::softmax::tests::lcg;

    /// Every SIMD build against an f64 layer norm, odd widths, a large offset.
    #[test]
    fn rows_match_f64_at_every_level() {
        for (rows, c) in [(1usize, 1usize), (2, 7), (3, 17), (4, 256)] {
            let x: Vec<f32> = lcg(rows * c, 1.0, c as u64)
                .iter()
                .map(|v| v + 100.0)
                .collect();
            let w = lcg(c, 1.0, 5);
            let b = lcg(c, 1.0, 6);
            for level in available() {
                let mut y = vec![0f32; rows * c];
                layer_norm_rows_at(level, &x, &mut y, c, &w, &b, 1e-6);
                for (xr, yr) in x.chunks(c).zip(y.chunks(c)) {
                    let m = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
                    let var = xr.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
                    for i in 0..c {
                        let want =
                            (xr[i] as f64 - m) / (var + 1e-6).sqrt() * w[i] as f64 + b[i] as f64;
                        assert!(
                            (yr[i] as f64 - want).abs() < 2e-4,
                            "{level:?} {c}: {} vs {want}",
                            yr[i]
                        );
                    }
                }
            }
        }
    }
}
