//! Layer norm over contiguous rows (`nn.LayerNorm` on the last dim, and
//! `LayerNorm2d` on channels-last data): two passes in f32 (mean, then the
//! centred variance) as PyTorch computes it, 8 lanes per sum. And
//! `LayerNorm2d` on channels-first data (the norm over the channel axis of
//! NCHW maps), the same two passes with one lane per pixel.

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

/// The fast path's common part: `x` (an f32 CPU tensor, fast kernels on)
/// made contiguous, `weight` and `bias` as f32 slices of `c` values, and an
/// output of `x`'s shape filled by `norm(x, weight, bias, out)`. `None` when
/// the fast path does not apply (other device or dtype, `c == 0`, or
/// `weight`/`bias` not `[c]`), for the caller's generic path.
fn norm_fast(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    c: usize,
    norm: impl FnOnce(&[f32], &[f32], &[f32], &mut [f32]),
) -> Result<Option<Tensor>> {
    if !super::fast_cpu_f32(x) || c == 0 {
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
    if wv.len() != c || bv.len() != c {
        return Ok(None);
    }
    let mut out = vec![0f32; xv.len()];
    norm(xv, wv, bv, &mut out);
    Tensor::from_vec(out, x.shape(), x.device()).map(Some)
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
    norm_fast(x, weight, bias, n, |xv, wv, bv, out| {
        let per = rows_per_chunk(xv.len() / n, n, 1 << 15);
        par_chunks_mut(out, per * n, |i, dst| {
            let src = &xv[i * per * n..][..dst.len()];
            layer_norm_rows(src, dst, n, wv, bv, eps as f32)
        });
    })
}

simd_fn! {
    /// `LayerNorm2d` of `np` pixels of `c` channels (channel stride `plane`)
    /// from `src` into `dst`, the same pixel range of each: per pixel the
    /// mean, then the mean of the centred squares, in f32 over channels in
    /// order; `y = (x − u) / √(s + ε) · w + b` as the official computes it.
    /// `mean` and `sd` are scratch of `np` values.
    fn layer_norm_channels_block[layer_norm_channels_block_at](src: &[f32], dst: *mut f32, c: usize, plane: usize, np: usize, w: &[f32], b: &[f32], eps: f32, mean: &mut [f32], sd: &mut [f32]) {
        mean.fill(0.0);
        for ch in 0..c {
            for (m, &v) in mean.iter_mut().zip(&src[ch * plane..][..np]) {
                *m += v;
            }
        }
        for m in mean.iter_mut() {
            *m /= c as f32;
        }
        sd.fill(0.0);
        for ch in 0..c {
            for ((s, &m), &v) in sd.iter_mut().zip(mean.iter()).zip(&src[ch * plane..][..np]) {
                let d = v - m;
                *s += d * d;
            }
        }
        for s in sd.iter_mut() {
            *s = (*s / c as f32 + eps).sqrt();
        }
        for ch in 0..c {
            // SAFETY: the caller owns these `np` outputs of every channel.
            let y = unsafe { std::slice::from_raw_parts_mut(dst.add(ch * plane), np) };
            let (wc, bc) = (w[ch], b[ch]);
            for (((y, &v), &m), &s) in y.iter_mut().zip(&src[ch * plane..][..np]).zip(mean.iter()).zip(sd.iter()) {
                *y = (v - m) / s * wc + bc;
            }
        }
    }
}

/// `LayerNorm2d` (the norm over the channel axis of an NCHW map) on an f32
/// CPU tensor `[B, C, H, W]` (fast kernels on) on all threads; `None` when
/// the fast path does not apply, for the caller's generic path.
pub(crate) fn layer_norm_channels_fast(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    if x.rank() != 4 {
        return Ok(None);
    }
    let (bn, c, h, w) = x.dims4()?;
    let plane = h * w;
    norm_fast(x, weight, bias, c, |xv, wv, bv, out| {
        // Pixel blocks: up to 1024 pixels (the block's channels stream
        // through cache three times), about two per thread when there are few.
        let block = plane
            .div_ceil(2 * super::parallel::num_threads())
            .clamp(64, 1024);
        let blocks = plane.div_ceil(block).max(1);
        let po = super::parallel::SyncPtr(out.as_mut_ptr());
        super::parallel::par_tasks(bn * blocks, |t| {
            let (bi, p0) = (t / blocks, (t % blocks) * block);
            let np = block.min(plane - p0);
            let off = bi * c * plane + p0;
            super::parallel::with_scratch(2 * np, |buf| {
                let (mean, sd) = buf.split_at_mut(np);
                // SAFETY: pixels p0.. of image bi in every channel: this task's only.
                layer_norm_channels_block(
                    &xv[off..],
                    unsafe { po.ptr().add(off) },
                    c,
                    plane,
                    np,
                    wv,
                    bv,
                    eps as f32,
                    mean,
                    sd,
                );
            });
        });
    })
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

    /// Channels-first layer norm against the candle-op reference (the
    /// official arithmetic), batch 2, block edges, a large offset.
    #[test]
    fn channels_first_matches_reference() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        for (c, h, w) in [(4usize, 33usize, 30usize), (64, 8, 8), (3, 1, 1)] {
            // Fixed values (the kernels' LCG, unit variance): with random
            // ones, three channels of a 1 × 1 map now and then nearly
            // coincide and the tiny variance amplifies f32 rounding.
            let lcg = crate::modeling::kernels::softmax::tests::lcg;
            let n = 2 * c * h * w;
            let x = (Tensor::from_vec(lcg(n, 1.7, c as u64), (2, c, h, w), &dev)? + 50.0)?;
            let wt = (Tensor::from_vec(lcg(c, 0.17, 2), c, &dev)? + 1.0)?;
            let bt = Tensor::from_vec(lcg(c, 0.17, 3), c, &dev)?;
            let got = layer_norm_channels_fast(&x, &wt, &bt, 1e-6)?.expect("fast path");
            let u = x.mean_keepdim(1)?;
            let xc = x.broadcast_sub(&u)?;
            let s = xc.sqr()?.mean_keepdim(1)?;
            let want = xc
                .broadcast_div(&(s + 1e-6)?.sqrt()?)?
                .broadcast_mul(&wt.reshape((1, c, 1, 1))?)?
                .broadcast_add(&bt.reshape((1, c, 1, 1))?)?;
            let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{c}x{h}x{w}: {d}");
        }
        Ok(())
    }
}
