//! CPU kernels (f32) of the SAM heads: the pixel shuffle of the 2x2 transposed
//! convs fused with bias, high-res feature addition, LayerNorm2d, GELU and the
//! hypernetwork product (one output row at a time); a blocked transpose.
//! Each kernel is compiled per SIMD level and chosen at run time, and splits
//! its rows over the kernels' threads ([`crate::modeling::kernels`], which
//! also holds the softmaxes and the GELU).

use candle_core::{Device, Layout, Result, Storage, Tensor};

pub(crate) use crate::modeling::kernels::layout::transpose_last2;
pub(crate) use crate::modeling::kernels::math::gelu;

use crate::modeling::kernels::parallel::{par_ranges, SyncPtr};
use crate::modeling::kernels::simd::simd_fn;
pub(crate) use crate::modeling::kernels::softmax::softmax_last;

/// A contiguous f32 CPU tensor's data.
pub(crate) fn slice<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) if layout.is_contiguous() => {
            let start = layout.start_offset();
            Ok(&cpu.as_slice::<f32>()?[start..start + layout.shape().elem_count()])
        }
        _ => candle_core::bail!("mask decoder: expected a contiguous CPU tensor"),
    }
}

/// Shapes of the first upscaling stage.
pub(crate) struct Stage1<'a> {
    /// Conv output, pixel-major `[B, h·w, O·4]` (columns o, i, j).
    pub y: &'a [f32],
    pub batch: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub bias: &'a [f32],
    /// High-res features `[B or 1, O, 2h, 2w]` and whether they have a batch.
    pub feat: Option<(&'a [f32], bool)>,
    pub ln_weight: &'a [f32],
    pub ln_bias: &'a [f32],
    pub eps: f32,
}

/// `GELU(LayerNorm2d(shuffle(y) + bias + feat))` → pixel-major
/// `[B, 2h·2w, O]` (the second conv's input rows).
pub(crate) fn stage1(a: &Stage1, device: &Device) -> Result<Tensor> {
    let (b, o, h, w) = (a.batch, a.channels, a.h, a.w);
    let (ho, wo) = (2 * h, 2 * w);
    let mut out = vec![0f32; b * o * ho * wo];
    let ptr = SyncPtr(out.as_mut_ptr());
    par_ranges(b * ho, (o + 2) * wo, |rows, scratch| {
        stage1_rows(a, rows, scratch, ptr)
    });
    Tensor::from_vec(out, (b, ho * wo, o), device)
}

/// Row `y` of a pixel-major 2x2 transposed-conv output (`[h·w, o·4]`, one
/// image) shuffled into output row `2y + i`, plus the bias: `t[c·2w + 2x + j]
/// = yb[(y·w + x)·4o + 4c + 2i + j] + bias[c]` (`t`: `[o, 2w]`).
#[inline(always)]
fn shuffle_row(yb: &[f32], y: usize, i: usize, w: usize, bias: &[f32], t: &mut [f32]) {
    let o = bias.len();
    let wo = 2 * w;
    for x in 0..w {
        let px = &yb[(y * w + x) * 4 * o..][..4 * o];
        for (c, b) in bias.iter().enumerate() {
            t[c * wo + 2 * x] = px[4 * c + 2 * i] + b;
            t[c * wo + 2 * x + 1] = px[4 * c + 2 * i + 1] + b;
        }
    }
}

simd_fn! {
/// Rows `rows` (image, output row) of [`stage1`].
fn stage1_rows[stage1_rows_at](a: &Stage1, rows: std::ops::Range<usize>, scratch: &mut [f32], ptr: SyncPtr) {
    let (o, h, w) = (a.channels, a.h, a.w);
    let (ho, wo) = (2 * h, 2 * w);
    let (tmp, rest) = scratch.split_at_mut(o * wo);
    let (mean, inv) = rest.split_at_mut(wo);
    for row in rows {
        let (bi, r) = (row / ho, row % ho);
        let yb = &a.y[bi * o * 4 * h * w..][..o * 4 * h * w];
        shuffle_row(yb, r / 2, r % 2, w, a.bias, tmp);
        if let Some((feat, batched)) = a.feat {
            let fb = if batched { bi } else { 0 };
            for c in 0..o {
                let f = &feat[((fb * o + c) * ho + r) * wo..][..wo];
                for (v, f) in tmp[c * wo..(c + 1) * wo].iter_mut().zip(f) {
                    *v += f;
                }
            }
        }
        mean.fill(0.0);
        for c in 0..o {
            for (m, v) in mean.iter_mut().zip(&tmp[c * wo..(c + 1) * wo]) {
                *m += v;
            }
        }
        let n = o as f32;
        for m in mean.iter_mut() {
            *m /= n;
        }
        inv.fill(0.0);
        for c in 0..o {
            for ((s, v), m) in inv
                .iter_mut()
                .zip(&tmp[c * wo..(c + 1) * wo])
                .zip(mean.iter())
            {
                let d = v - m;
                *s += d * d;
            }
        }
        for s in inv.iter_mut() {
            *s = 1.0 / (*s / n + a.eps).sqrt();
        }
        for c in 0..o {
            let (lw, lb) = (a.ln_weight[c], a.ln_bias[c]);
            let t = &mut tmp[c * wo..(c + 1) * wo];
            for ((v, m), s) in t.iter_mut().zip(mean.iter()).zip(inv.iter()) {
                *v = gelu((*v - m) * s * lw + lb);
            }
        }
        // SAFETY: output row (bi, r) — pixels r·wo.. of image bi — belongs
        // to this task only.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(ptr.0.add((bi * ho + r) * wo * o), wo * o)
        };
        for (xo, px) in dst.chunks_exact_mut(o).enumerate() {
            for (c, d) in px.iter_mut().enumerate() {
                *d = tmp[c * wo + xo];
            }
        }
    }
}
}

/// Shapes of the second upscaling stage and the mask product.
pub(crate) struct Stage2<'a> {
    /// Conv output, pixel-major `[B, h·w, O·4]` (columns o, i, j).
    pub y: &'a [f32],
    pub batch: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub bias: &'a [f32],
    /// High-res features `[B or 1, O, 2h, 2w]` and whether they have a batch.
    pub feat: Option<(&'a [f32], bool)>,
    /// Hypernetwork weights `[B, T, O]`.
    pub hyper: &'a [f32],
    pub tokens: usize,
}

/// `hyper @ GELU(shuffle(y) + bias + feat)` → masks `[B, T, 2h, 2w]`.
pub(crate) fn stage2(a: &Stage2, device: &Device) -> Result<Tensor> {
    let (b, o, h, w, t) = (a.batch, a.channels, a.h, a.w, a.tokens);
    let (ho, wo) = (2 * h, 2 * w);
    let mut out = vec![0f32; b * t * ho * wo];
    let ptr = SyncPtr(out.as_mut_ptr());
    par_ranges(b * ho, o * wo, |rows, scratch| {
        stage2_rows(a, rows, scratch, ptr)
    });
    Tensor::from_vec(out, (b, t, ho, wo), device)
}

simd_fn! {
/// Rows `rows` (image, output row) of [`stage2`].
fn stage2_rows[stage2_rows_at](a: &Stage2, rows: std::ops::Range<usize>, scratch: &mut [f32], ptr: SyncPtr) {
    let (o, h, w, nt) = (a.channels, a.h, a.w, a.tokens);
    let (ho, wo) = (2 * h, 2 * w);
    for row in rows {
        let (bi, r) = (row / ho, row % ho);
        let yb = &a.y[bi * o * 4 * h * w..][..o * 4 * h * w];
        shuffle_row(yb, r / 2, r % 2, w, a.bias, scratch);
        for c in 0..o {
            let t = &mut scratch[c * wo..(c + 1) * wo];
            if let Some((feat, batched)) = a.feat {
                let fb = if batched { bi } else { 0 };
                let f = &feat[((fb * o + c) * ho + r) * wo..][..wo];
                for (v, f) in t.iter_mut().zip(f) {
                    *v = gelu(*v + f);
                }
            } else {
                for v in t.iter_mut() {
                    *v = gelu(*v);
                }
            }
        }
        for k in 0..nt {
            let hk = &a.hyper[(bi * nt + k) * o..][..o];
            // SAFETY: row (bi, k, r) belongs to this task only.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(ptr.0.add(((bi * nt + k) * ho + r) * wo), wo)
            };
            dst.fill(0.0);
            for (c, hv) in hk.iter().enumerate() {
                for (d, v) in dst.iter_mut().zip(&scratch[c * wo..(c + 1) * wo]) {
                    *d += hv * v;
                }
            }
        }
    }
}

}

/// `a @ b` ([`crate::modeling::kernels::gemm::matmul`] when the fast kernels take `a` and `b`, else candle's
/// `broadcast_matmul`).
pub(crate) fn mm(a: &Tensor, b: &Tensor, fast: bool) -> Result<Tensor> {
    if fast
        && applies(a)
        && applies(b)
        && (2..=3).contains(&a.rank())
        && (2..=3).contains(&b.rank())
    {
        crate::modeling::kernels::gemm::matmul(a, b, None)
    } else {
        a.broadcast_matmul(b)
    }
}

/// Whether the fast kernels apply to `x` (f32 on the CPU, kernels switched on:
/// [`crate::modeling::kernels`]).
pub(crate) fn applies(x: &Tensor) -> bool {
    crate::modeling::kernels::fast_cpu_f32(x)
}
