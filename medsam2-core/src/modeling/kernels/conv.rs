//! Dense 2-D convolution (`nn.Conv2d`, groups 1, dilation 1) on the CPU as
//! blocks of im2col + one f32 GEMM each, on the kernels' thread pool.
//!
//! Why by hand: candle's CPU `conv2d` builds the whole im2col matrix, runs
//! its matmul on rayon's pool beside the kernels' pool and transposes the
//! result back to NCHW; on the memory encoder's mask downsampler (four
//! stride-2 3×3 convolutions, 1 → 256 channels, ~0.4 GFLOP at 512) that took
//! 30 ms on two threads. Here each task gathers the patches of a few output
//! rows (a scratch block that stays in cache) and multiplies them straight
//! into the NCHW output.

use candle_core::{Result, Tensor};

use super::gemm::sgemm;
use super::parallel::{num_threads, par_tasks, with_scratch, SyncPtr};
use super::simd::simd_fn;

/// Scratch elements per task's patch block (1 MB of f32).
const PATCH_BLOCK: usize = 1 << 18;

/// Output columns per block of [`depthwise_plane`] (one AVX-512 vector).
const DW_COLS: usize = 16;

/// One plane of a depthwise convolution (stride 1, zero padding `p`,
/// `k × k` taps `wk`): `dst` (`ho × wo`, `wo` wide) = `bias` + the taps over
/// `src` (`w` wide), summed tap after tap in row-major tap order (the memory
/// encoder's 7 × 7 ConvNeXt convolution), by [`depthwise_padded`] on a
/// thread scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise_plane(
    src: &[f32],
    w: usize,
    dst: &mut [f32],
    wo: usize,
    wk: &[f32],
    k: usize,
    p: usize,
    bias: f32,
) {
    let ho = dst.len() / wo.max(1);
    let (hp, wp) = (ho + k - 1, wo.next_multiple_of(DW_COLS) + k);
    with_scratch(hp * wp, |pad| {
        depthwise_padded(src, w, pad, wp, dst, wo, wk, k, p, bias)
    });
}

simd_fn! {
    /// [`depthwise_plane`] with its scratch `pad` (`wp` wide, `wp` ≥ whole
    /// blocks of [`DW_COLS`] outputs + `k`): the plane is copied in,
    /// zero-padded, so that each block of outputs keeps its sums in
    /// registers over all taps. (The scratch is taken outside: a closure
    /// here would not inherit the SIMD level.)
    fn depthwise_padded[depthwise_padded_at](
        src: &[f32],
        w: usize,
        pad: &mut [f32],
        wp: usize,
        dst: &mut [f32],
        wo: usize,
        wk: &[f32],
        k: usize,
        p: usize,
        bias: f32,
    ) {
        let h = src.len() / w.max(1);
        let ho = dst.len() / wo.max(1);
        if ho == 0 || wo == 0 {
            return;
        }
        let hp = pad.len() / wp;
        pad.fill(0.0);
        for y in 0..h.min(hp.saturating_sub(p)) {
            let n = w.min(wp - p);
            pad[(y + p) * wp + p..][..n].copy_from_slice(&src[y * w..][..n]);
        }
        for oy in 0..ho {
            for x0 in (0..wo).step_by(DW_COLS) {
                let mut acc = [bias; DW_COLS];
                for (ky, taps) in wk.chunks_exact(k).enumerate() {
                    let row = &pad[(oy + ky) * wp + x0..][..k - 1 + DW_COLS];
                    for (kx, &wv) in taps.iter().enumerate() {
                        // A fixed-size window: one vector, no bounds checks.
                        let s: &[f32; DW_COLS] = row[kx..kx + DW_COLS]
                            .try_into()
                            .expect("the padded row holds k - 1 + DW_COLS values");
                        for j in 0..DW_COLS {
                            acc[j] += wv * s[j];
                        }
                    }
                }
                let n = DW_COLS.min(wo - x0);
                dst[oy * wo + x0..][..n].copy_from_slice(&acc[..n]);
            }
        }
    }
}

/// `conv2d(x, weight, bias, stride, padding)` on an f32 CPU tensor `x`
/// `[B, Cin, H, W]` with `weight` `[Cout, Cin, k, k]`; `None` when the fast
/// path does not apply (other device or dtype, fast kernels off), for the
/// caller's candle path.
pub(crate) fn conv2d_fast(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Option<Tensor>> {
    if !super::fast_cpu_f32(x) || !super::fast_cpu_f32(weight) {
        return Ok(None);
    }
    let (b, cin, h, w) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if wcin != cin || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        candle_core::bail!(
            "conv2d: input {:?} does not fit weight {:?}",
            x.shape(),
            weight.shape()
        );
    }
    let ho = (h + 2 * padding - kh) / stride + 1;
    let wo = (w + 2 * padding - kw) / stride + 1;
    let k = cin * kh * kw;
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    let bias = bias.map(|t| t.contiguous()).transpose()?;
    let xr = crate::modeling::backbones::cpu::F32Ref::new(&x)?;
    let wr = crate::modeling::backbones::cpu::F32Ref::new(&weight)?;
    let br = bias
        .as_ref()
        .map(crate::modeling::backbones::cpu::F32Ref::new)
        .transpose()?;
    let (xs, ws) = (xr.slice(), wr.slice());
    let bs = br.as_ref().map(|b| b.slice());
    if bs.is_some_and(|b| b.len() != cout) {
        candle_core::bail!("conv2d: bias does not have {cout} values");
    }
    let plane = ho * wo;
    let mut out = vec![0f32; b * cout * plane];
    if out.is_empty() {
        return Ok(Some(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?));
    }
    // Output rows per task: a patch block of at most PATCH_BLOCK values (no
    // block for a 1x1 conv, which reads its input in place), and at least
    // two tasks per thread.
    let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0;
    let rows = (if pointwise {
        ho
    } else {
        PATCH_BLOCK / (k * wo).max(1)
    })
    .min((b * ho).div_ceil(2 * num_threads()))
    .clamp(1, ho);
    let blocks = ho.div_ceil(rows);
    let po = SyncPtr(out.as_mut_ptr());
    par_tasks(b * blocks, |task| {
        let (bi, r0) = (task / blocks, (task % blocks) * rows);
        let nr = rows.min(ho - r0);
        let p = nr * wo;
        let xb = &xs[bi * cin * h * w..][..cin * h * w];
        let base = bi * cout * plane + r0 * wo;
        let fill_bias = || {
            for co in 0..cout {
                // SAFETY: rows r0.. of image bi, every channel: this task's only.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(po.ptr().add(base + co * plane), p) };
                dst.fill(bs.map_or(0.0, |b| b[co]));
            }
        };
        // The bias, then `out[:, block] += W · rhs` with `rhs` the block's
        // patches `[k, p]` at row stride `rhs_rs`.
        let product = |rhs: *const f32, rhs_rs: usize| {
            fill_bias();
            // SAFETY: `ws` is `[cout, k]`, `rhs` `k` rows of `p` values at
            // stride `rhs_rs`, the destination `cout` rows of `p` values at
            // stride `plane`, owned by this task.
            unsafe {
                sgemm(
                    cout,
                    p,
                    k,
                    po.ptr().add(base),
                    plane,
                    true,
                    ws.as_ptr(),
                    (k as isize, 1),
                    rhs,
                    (rhs_rs as isize, 1),
                )
            }
        };
        if pointwise {
            // A 1x1 conv: the input's pixels are the patches (no gather).
            return product(xb[r0 * wo..].as_ptr(), plane);
        }
        with_scratch(k * p, |cols| {
            // cols[(ci, ky, kx), (oy, ox)] = x[ci, oy·s + ky − pad, ox·s + kx − pad].
            for ci in 0..cin {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &mut cols[((ci * kh + ky) * kw + kx) * p..][..p];
                        for oy in 0..nr {
                            let iy = ((r0 + oy) * stride + ky) as isize - padding as isize;
                            let dst = &mut row[oy * wo..(oy + 1) * wo];
                            if iy < 0 || iy >= h as isize {
                                dst.fill(0.0);
                                continue;
                            }
                            let src = &xb[(ci * h + iy as usize) * w..][..w];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * stride + kx) as isize - padding as isize;
                                *d = if ix < 0 || ix >= w as isize {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
            product(cols.as_ptr(), p);
        });
    });
    Ok(Some(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?))
}

/// A candle `Conv2d` layer's forward: [`conv2d_fast`] when it applies
/// (groups 1, dilation 1, CPU f32), the layer's own forward otherwise.
pub(crate) fn conv2d_layer(conv: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    let cfg = conv.config();
    if cfg.groups == 1 && cfg.dilation == 1 {
        if let Some(y) = conv2d_fast(x, conv.weight(), conv.bias(), cfg.stride, cfg.padding)? {
            return Ok(y);
        }
    }
    conv.forward(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The depthwise plane at every SIMD level against candle's grouped
    /// conv2d (one group per channel): 7 × 7 and 3 × 3 taps, "same" and no
    /// padding, planes narrower and shorter than the kernel, and rows not a
    /// multiple of the vector width; every level gives the same bits.
    #[test]
    fn depthwise_plane_matches_candle_at_every_level() -> Result<()> {
        let dev = Device::Cpu;
        let lcg = crate::modeling::kernels::softmax::tests::lcg;
        for (c, k, p, h, w) in [
            (3, 7, 3, 32, 32),
            (2, 7, 3, 5, 9),
            (2, 3, 1, 17, 33),
            (1, 3, 0, 6, 4),
        ] {
            let x = lcg(c * h * w, 2.0, (h * w) as u64);
            let wk = lcg(c * k * k, 0.5, 7);
            let bias = lcg(c, 1.0, 8);
            let want = Tensor::from_slice(&x, (1, c, h, w), &dev)?
                .conv2d(&Tensor::from_slice(&wk, (c, 1, k, k), &dev)?, p, 1, 1, c)?
                .broadcast_add(&Tensor::from_slice(&bias, (1, c, 1, 1), &dev)?)?;
            let (ho, wo) = (want.dim(2)?, want.dim(3)?);
            let want = want.flatten_all()?.to_vec1::<f32>()?;
            let mut first: Option<Vec<f32>> = None;
            for level in crate::modeling::kernels::simd::available() {
                let mut got = vec![f32::NAN; c * ho * wo];
                for (ci, dst) in got.chunks_exact_mut(ho * wo).enumerate() {
                    let src = &x[ci * h * w..][..h * w];
                    let taps = &wk[ci * k * k..][..k * k];
                    let wp = wo.next_multiple_of(DW_COLS) + k;
                    let mut pad = vec![f32::NAN; (ho + k - 1) * wp];
                    depthwise_padded_at(level, src, w, &mut pad, wp, dst, wo, taps, k, p, bias[ci]);
                }
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        (g - e).abs() < 1e-4,
                        "{level:?} {c}x{h}x{w} k {k}: {g} vs {e}"
                    );
                }
                match &first {
                    Some(f) => assert_eq!(f, &got, "{level:?} differs from the first level"),
                    None => first = Some(got),
                }
            }
            // The entry point (its own scratch, the CPU's level).
            let mut got = vec![f32::NAN; c * ho * wo];
            for (ci, dst) in got.chunks_exact_mut(ho * wo).enumerate() {
                let (src, taps) = (&x[ci * h * w..][..h * w], &wk[ci * k * k..][..k * k]);
                depthwise_plane(src, w, dst, wo, taps, k, p, bias[ci]);
            }
            assert_eq!(first.as_ref(), Some(&got));
        }
        Ok(())
    }

    /// Against candle's conv2d: strides 1 and 2, paddings 0 and 1, several
    /// channel counts, odd sizes, batch 2, with and without bias.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, pad, h, w) in [
            (1, 4, 3, 2, 1, 33, 30),
            (4, 16, 3, 2, 1, 16, 16),
            (3, 5, 3, 1, 1, 9, 11),
            (2, 3, 2, 2, 0, 8, 7),
            (6, 8, 1, 1, 0, 5, 5),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 0.5, (cout, cin, k, k), &dev)?;
            let b = Tensor::randn(0f32, 0.5, cout, &dev)?;
            for bias in [Some(&b), None] {
                let got = conv2d_fast(&x, &wt, bias, stride, pad)?.expect("fast path");
                let mut want = x.conv2d(&wt, pad, stride, 1, 1)?;
                if let Some(b) = bias {
                    want = want.broadcast_add(&b.reshape((1, cout, 1, 1))?)?;
                }
                assert_eq!(got.dims(), want.dims());
                let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "{cin}->{cout} k{k} s{stride} p{pad}: {d}");
            }
        }
        // Mismatched channels: an error, not a panic.
        let x = Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &dev)?;
        let wt = Tensor::zeros((4, 2, 3, 3), candle_core::DType::F32, &dev)?;
        assert!(conv2d_fast(&x, &wt, None, 1, 1).is_err());
        Ok(())
    }
}
