//! CPU kernels (f32) of the SAM heads: the pixel shuffle of the 2x2 transposed
//! convs fused with bias, high-res feature addition, LayerNorm2d, GELU and the
//! hypernetwork product (one output row at a time); a blocked transpose.
//! Each kernel is compiled per SIMD level and chosen at run time, and splits
//! its rows over the kernels' threads ([`crate::modeling::kernels`], which
//! also holds the softmaxes and the GELU).

use candle_core::{Device, Layout, Result, Storage, Tensor};

pub(crate) use crate::modeling::kernels::layout::transpose_last2;
pub(crate) use crate::modeling::kernels::math::gelu;

use crate::modeling::kernels::norm::layer_norm_rows;
use crate::modeling::kernels::parallel::{par_ranges, with_scratch, SyncPtr};
use crate::modeling::kernels::simd::simd_fn;
pub(crate) use crate::modeling::kernels::softmax::{softmax_dim2, softmax_last};

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
    /// Conv output `[B, O·4, h·w]` (rows o, i, j).
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

/// `GELU(LayerNorm2d(shuffle(y) + bias + feat))` → `[B, O, 2h, 2w]`.
pub(crate) fn stage1(a: &Stage1, device: &Device) -> Result<Tensor> {
    let (b, o, h, w) = (a.batch, a.channels, a.h, a.w);
    let (ho, wo) = (2 * h, 2 * w);
    let mut out = vec![0f32; b * o * ho * wo];
    let ptr = SyncPtr(out.as_mut_ptr());
    par_ranges(b * ho, (o + 2) * wo, |rows, scratch| {
        stage1_rows(a, rows, scratch, ptr)
    });
    Tensor::from_vec(out, (b, o, ho, wo), device)
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
        let (y, i) = (r / 2, r % 2);
        let yb = &a.y[bi * o * 4 * h * w..];
        for c in 0..o {
            let t = &mut tmp[c * wo..(c + 1) * wo];
            let src0 = &yb[((c * 4 + i * 2) * h + y) * w..][..w];
            let src1 = &yb[((c * 4 + i * 2 + 1) * h + y) * w..][..w];
            for (x, pair) in t.chunks_exact_mut(2).enumerate() {
                pair[0] = src0[x] + a.bias[c];
                pair[1] = src1[x] + a.bias[c];
            }
            if let Some((feat, batched)) = a.feat {
                let fb = if batched { bi } else { 0 };
                let f = &feat[((fb * o + c) * ho + r) * wo..][..wo];
                for (v, f) in t.iter_mut().zip(f) {
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
            // SAFETY: row (bi, c, r) belongs to this task only.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(ptr.0.add(((bi * o + c) * ho + r) * wo), wo)
            };
            let t = &tmp[c * wo..(c + 1) * wo];
            for (((d, v), m), s) in dst.iter_mut().zip(t).zip(mean.iter()).zip(inv.iter()) {
                *d = gelu((v - m) * s * lw + lb);
            }
        }
    }
}
}

/// Shapes of the second upscaling stage and the mask product.
pub(crate) struct Stage2<'a> {
    /// Conv output `[B, O·4, h·w]` (rows o, i, j).
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
        let (y, i) = (r / 2, r % 2);
        let yb = &a.y[bi * o * 4 * h * w..];
        for c in 0..o {
            let t = &mut scratch[c * wo..(c + 1) * wo];
            let src0 = &yb[((c * 4 + i * 2) * h + y) * w..][..w];
            let src1 = &yb[((c * 4 + i * 2 + 1) * h + y) * w..][..w];
            for (x, pair) in t.chunks_exact_mut(2).enumerate() {
                pair[0] = src0[x] + a.bias[c];
                pair[1] = src1[x] + a.bias[c];
            }
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

/// `LayerNorm(x + y + bias)` over the last dim of f32 CPU tensors `x`, `y`
/// `[.., C]` (same shape), `bias` `[C]`: the residual sum and the norm in one
/// pass over row blocks on the kernels' threads
/// ([`crate::modeling::kernels::norm`], two-pass statistics as PyTorch).
pub(crate) fn add_layer_norm(
    x: &Tensor,
    y: &Tensor,
    bias: Option<&Tensor>,
    ln: &candle_nn::LayerNorm,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(candle_core::D::Minus1)?;
    if x.dims() != y.dims() || c == 0 {
        candle_core::bail!("add_layer_norm: shapes {:?} and {:?}", x.dims(), y.dims());
    }
    let (x, y) = (x.contiguous()?, y.contiguous()?);
    let w = ln.weight().contiguous()?;
    let lb = match ln.bias() {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(c, candle_core::DType::F32, x.device())?,
    };
    let bias = bias.map(|b| b.contiguous()).transpose()?;
    let mut out = vec![0f32; x.elem_count()];
    {
        let (gx, lx) = x.storage_and_layout();
        let (gy, ly) = y.storage_and_layout();
        let (gw, lw) = w.storage_and_layout();
        let (gl, ll) = lb.storage_and_layout();
        let (xv, yv) = (slice(&gx, lx)?, slice(&gy, ly)?);
        let (wv, lbv) = (slice(&gw, lw)?, slice(&gl, ll)?);
        let gb = bias.as_ref().map(|b| b.storage_and_layout());
        let bv = match &gb {
            Some((g, l)) => Some(slice(g, l)?),
            None => None,
        };
        if wv.len() != c || lbv.len() != c || bv.is_some_and(|b| b.len() != c) {
            candle_core::bail!("add_layer_norm: weight, bias or residual bias not [{c}]");
        }
        let rows = xv.len() / c;
        let per = crate::modeling::kernels::parallel::rows_per_chunk(rows, c, 1 << 15);
        crate::modeling::kernels::parallel::par_chunks_mut(&mut out, per * c, |i, dst| {
            let off = i * per * c;
            with_scratch(dst.len(), |sum| {
                for ((s, a), b) in sum.iter_mut().zip(&xv[off..]).zip(&yv[off..]) {
                    *s = a + b;
                }
                if let Some(bv) = bv {
                    for row in sum.chunks_exact_mut(c) {
                        for (s, b) in row.iter_mut().zip(bv) {
                            *s += b;
                        }
                    }
                }
                layer_norm_rows(sum, dst, c, wv, lbv, eps as f32);
            })
        });
    }
    Tensor::from_vec(out, x.shape(), x.device())
}

/// Whether the fast kernels apply to `x` (f32 on the CPU, kernels switched on:
/// [`crate::modeling::kernels`]).
pub(crate) fn applies(x: &Tensor) -> bool {
    crate::modeling::kernels::fast_cpu_f32(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels' test values in about [-0.5, 0.5].
    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        crate::modeling::kernels::softmax::tests::lcg(n, 0.5, seed)
    }

    /// The fused residual + layer norm against candle's ops.
    #[test]
    fn add_layer_norm_matches_candle() {
        use candle_core::Module;
        let dev = Device::Cpu;
        let t = |shape: &[usize], seed| {
            Tensor::from_vec(lcg(shape.iter().product(), seed), shape, &dev).unwrap()
        };
        let (x, y, bo) = (t(&[1, 3000, 64], 22), t(&[1, 3000, 64], 23), t(&[64], 24));
        let ln = candle_nn::LayerNorm::new(t(&[64], 25), t(&[64], 26), 1e-5);
        let want = ln
            .forward(&(&x + y.broadcast_add(&bo).unwrap()).unwrap())
            .unwrap();
        let got = add_layer_norm(&x, &y, Some(&bo), &ln, 1e-5).unwrap();
        let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn softmax_and_transpose_match_tensor_ops() {
        let dev = Device::Cpu;
        for shape in [(2usize, 3usize, 9usize), (1, 70, 4096), (3, 1200, 8)] {
            // Deterministic inputs in about [-6, 6] (a fixed LCG, so the test cannot flake).
            let n = shape.0 * shape.1 * shape.2;
            let v = crate::modeling::kernels::softmax::tests::lcg(n, 6.0, n as u64);
            let x = Tensor::from_vec(v, shape, &dev).unwrap();
            // Against an f64 softmax: as accurate as candle's f32 one.
            let r64 =
                candle_nn::ops::softmax_last_dim(&x.to_dtype(candle_core::DType::F64).unwrap())
                    .unwrap();
            let ours = softmax_last(&x)
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap();
            let err = (ours - &r64)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            let err = err.to_scalar::<f64>().unwrap();
            assert!(err < 1e-6, "softmax {shape:?}: max-abs error {err:e}");
            let (b0, g0, n0) = shape;
            let x4 = x.reshape((b0, 1, g0, n0)).unwrap();
            let ours = softmax_dim2(&x4)
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap();
            let r64 =
                candle_nn::ops::softmax(&x4.to_dtype(candle_core::DType::F64).unwrap(), 2).unwrap();
            let err = (ours - &r64)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap();
            let err = err.to_scalar::<f64>().unwrap();
            // Softmax over the 1200-long axis sums 1200 f32 terms per column:
            // allow 4 units of 1e-6 (observed ≤ 1.7e-6 with random inputs).
            assert!(err < 4e-6, "softmax_dim2 {shape:?}: max-abs error {err:e}");
            let t = transpose_last2(&x).unwrap();
            let r = x.transpose(1, 2).unwrap().contiguous().unwrap();
            let same = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(same && t.dims() == r.dims());
        }
    }
}
