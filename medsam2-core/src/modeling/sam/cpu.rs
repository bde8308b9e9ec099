//! CPU kernels (f32) of the SAM heads: the pixel shuffle of the 2x2 transposed
//! convs fused with bias, high-res feature addition, LayerNorm2d, GELU and the
//! hypernetwork product (one output row at a time); a softmax with a
//! vectorisable `exp`; a blocked transpose. Each kernel has an AVX2 build
//! chosen at run time and splits its rows over `get_num_threads()` threads.

use candle_core::{Device, Layout, Result, Storage, Tensor};

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

/// `erf` for f32, rational approximation on [-4, 4] (|error| < 1e-6),
/// branch-free so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329_2e-3;
    q = q * x2 - 1.426_473_9e-2;
    x * p / q
}

/// Exact-form GELU `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Raw output pointer shared by threads writing disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of output rows.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Runs `task(first, last, scratch)` over `0..n` split among threads.
fn parallel_rows<F>(n: usize, scratch_len: usize, task: F)
where
    F: Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
{
    let threads = candle_core::utils::get_num_threads().clamp(1, n.max(1));
    if threads == 1 {
        task(0..n, &mut vec![0f32; scratch_len]);
        return;
    }
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        for t in 1..threads {
            let task = &task;
            s.spawn(move || {
                task(
                    t * chunk..((t + 1) * chunk).min(n),
                    &mut vec![0f32; scratch_len],
                )
            });
        }
        task(0..chunk.min(n), &mut vec![0f32; scratch_len]);
    });
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
    let ptr = OutPtr(out.as_mut_ptr());
    parallel_rows(b * ho, (o + 2) * wo, |rows, scratch| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            unsafe { stage1_avx2(a, rows, scratch, ptr) };
            return;
        }
        stage1_rows(a, rows, scratch, ptr);
    });
    Tensor::from_vec(out, (b, o, ho, wo), device)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stage1_avx2(a: &Stage1, rows: std::ops::Range<usize>, scratch: &mut [f32], ptr: OutPtr) {
    stage1_rows(a, rows, scratch, ptr)
}

#[inline(always)]
fn stage1_rows(a: &Stage1, rows: std::ops::Range<usize>, scratch: &mut [f32], ptr: OutPtr) {
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
    let ptr = OutPtr(out.as_mut_ptr());
    parallel_rows(b * ho, o * wo, |rows, scratch| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2.
            unsafe { stage2_avx2(a, rows, scratch, ptr) };
            return;
        }
        stage2_rows(a, rows, scratch, ptr);
    });
    Tensor::from_vec(out, (b, t, ho, wo), device)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stage2_avx2(a: &Stage2, rows: std::ops::Range<usize>, scratch: &mut [f32], ptr: OutPtr) {
    stage2_rows(a, rows, scratch, ptr)
}

#[inline(always)]
fn stage2_rows(a: &Stage2, rows: std::ops::Range<usize>, scratch: &mut [f32], ptr: OutPtr) {
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

/// `exp` for f32 (Cephes polynomial, ~1 ulp on the clamped range), branch-free
/// so that loops over it vectorise. Inputs below -87 give ~1e-38, not 0.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) by the 1.5·2^23 trick; the float's low mantissa
    // bits then hold n, which gives 2^n by integer ops only.
    let k = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = k - 12_582_912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(k.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

/// In-place softmax of each contiguous row of `n` values of `x`.
#[inline(always)]
fn softmax_rows_inline(x: &mut [f32], n: usize) {
    const L: usize = 16;
    for row in x.chunks_exact_mut(n) {
        // Max and sum over 16 independent lanes (vectorised, and a more
        // accurate sum than a sequential one).
        let mut lanes = [f32::NEG_INFINITY; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = if v > *m { v } else { *m };
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let mut lanes = [0f32; L];
        let mut chunks = row.chunks_exact(L);
        for c in &mut chunks {
            for (a, &v) in lanes.iter_mut().zip(c) {
                *a += v;
            }
        }
        let mut sum: f32 = chunks.remainder().iter().sum();
        let mut width = L;
        while width > 1 {
            width /= 2;
            for i in 0..width {
                lanes[i] += lanes[i + width];
            }
        }
        sum += lanes[0];
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_rows_avx2(x: &mut [f32], n: usize) {
    softmax_rows_inline(x, n)
}

/// Softmax over the last dim of a contiguous f32 CPU tensor.
pub(crate) fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(candle_core::D::Minus1)?;
    let x = x.contiguous()?;
    let mut data = {
        let (g, l) = x.storage_and_layout();
        slice(&g, l)?.to_vec()
    };
    if let Some(rows) = data.len().checked_div(n) {
        let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
        // Split whole rows over the threads; small inputs stay on one thread.
        let per = if data.len() < 65_536 {
            rows
        } else {
            rows.div_ceil(threads)
        };
        let run = |chunk: &mut [f32]| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2.
                unsafe { softmax_rows_avx2(chunk, n) };
                return;
            }
            softmax_rows_inline(chunk, n);
        };
        std::thread::scope(|s| {
            let mut chunks = data.chunks_mut(per.max(1) * n);
            let first = chunks.next();
            for c in chunks {
                s.spawn(move || run(c));
            }
            if let Some(c) = first {
                run(c);
            }
        });
    }
    Tensor::from_vec(data, x.shape(), x.device())
}

/// In-place softmax across the `t` rows of length `n` of each group.
#[inline(always)]
fn softmax_group_inline(x: &mut [f32], t: usize, n: usize, scratch: &mut [f32]) {
    let (max, sum) = scratch.split_at_mut(n);
    for g in x.chunks_exact_mut(t * n) {
        max.fill(f32::NEG_INFINITY);
        for row in g.chunks_exact(n) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = if v > *m { v } else { *m };
            }
        }
        sum.fill(0.0);
        for row in g.chunks_exact_mut(n) {
            for ((v, m), s) in row.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
                *v = exp(*v - m);
                *s += *v;
            }
        }
        for row in g.chunks_exact_mut(n) {
            for (v, s) in row.iter_mut().zip(sum.iter()) {
                *v /= s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_group_avx2(x: &mut [f32], t: usize, n: usize, scratch: &mut [f32]) {
    softmax_group_inline(x, t, n, scratch)
}

/// Softmax over dim 2 of a `[B, G, T, N]` f32 CPU tensor (vectorised along `N`).
pub(crate) fn softmax_dim2(x: &Tensor) -> Result<Tensor> {
    let (b, g, t, n) = x.dims4()?;
    let x = x.contiguous()?;
    let mut data = {
        let (st, l) = x.storage_and_layout();
        slice(&st, l)?.to_vec()
    };
    let groups = b * g;
    if groups > 0 && t > 0 && n > 0 {
        let threads = candle_core::utils::get_num_threads().clamp(1, groups);
        let per = if data.len() < 65_536 {
            groups
        } else {
            groups.div_ceil(threads)
        };
        let run = |chunk: &mut [f32]| {
            let mut scratch = vec![0f32; 2 * n];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2.
                unsafe { softmax_group_avx2(chunk, t, n, &mut scratch) };
                return;
            }
            softmax_group_inline(chunk, t, n, &mut scratch);
        };
        std::thread::scope(|s| {
            let mut chunks = data.chunks_mut(per * t * n);
            let first = chunks.next();
            for c in chunks {
                s.spawn(move || run(c));
            }
            if let Some(c) = first {
                run(c);
            }
        });
    }
    Tensor::from_vec(data, (b, g, t, n), x.device())
}

/// `[B, C, N]` → `[B, N, C]` (contiguous) for an f32 CPU tensor of rank 3.
pub(crate) fn transpose_last2(x: &Tensor) -> Result<Tensor> {
    let (b, c, n) = x.dims3()?;
    let x = x.contiguous()?;
    let mut out = vec![0f32; b * c * n];
    {
        let (g, l) = x.storage_and_layout();
        let src = slice(&g, l)?;
        // Tiles of 8 source rows (their stride can map them to one cache
        // set) by 64 columns.
        const TC: usize = 8;
        const TN: usize = 64;
        for bi in 0..b {
            let s = &src[bi * c * n..(bi + 1) * c * n];
            let d = &mut out[bi * c * n..(bi + 1) * c * n];
            for c0 in (0..c).step_by(TC) {
                let c1 = (c0 + TC).min(c);
                for n0 in (0..n).step_by(TN) {
                    let n1 = (n0 + TN).min(n);
                    for ni in n0..n1 {
                        let drow = &mut d[ni * c + c0..ni * c + c1];
                        for (k, v) in drow.iter_mut().enumerate() {
                            *v = s[(c0 + k) * n + ni];
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, n, c), x.device())
}

/// Whether the fast kernels apply to `x` (f32 on the CPU, kernels switched on:
/// [`crate::modeling::kernels`]).
pub(crate) fn applies(x: &Tensor) -> bool {
    crate::modeling::kernels::fast_cpu_f32(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let e = (x as f64).exp();
            worst = worst.max((exp(x) as f64 - e).abs() / e);
        }
        assert!(worst < 5e-7, "fast exp relative error {worst:e}");
    }

    #[test]
    fn softmax_and_transpose_match_tensor_ops() {
        let dev = Device::Cpu;
        for shape in [(2usize, 3usize, 9usize), (1, 70, 4096), (3, 1200, 8)] {
            // Deterministic inputs in about [-6, 6] (a fixed LCG, so the test cannot flake).
            let n = shape.0 * shape.1 * shape.2;
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 12.0
                })
                .collect();
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
