//! Fast f32 CPU kernels of the image encoder: row-parallel fused linear
//! layers, layer norm, GELU, max pooling and batched window/global attention.
//!
//! Work is spread over candle's persistent thread pool; every GEMM inside a
//! task is single-threaded (`gemm` crate, the engine behind candle's matmul),
//! so one task = one block of rows (or one window × head) that stays in cache.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::{CpuStorage, Device, Result, Storage, StorageRef, Tensor};

use crate::modeling::kernels::math::activation_inplace;
pub(crate) use crate::modeling::kernels::norm::layer_norm_rows;
use crate::modeling::kernels::parallel::{num_threads, par_chunks_mut};
pub(crate) use crate::modeling::kernels::parallel::{par_tasks, with_scratch, SyncPtr};
use crate::modeling::kernels::simd::simd_fn;
pub(crate) use crate::modeling::kernels::softmax::softmax_rows;

/// Whether a tensor is f32 on the CPU (what the kernels can read).
pub(crate) fn is_cpu_f32(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == candle_core::DType::F32
}

/// Whether a tensor takes the fast path: f32 on the CPU, and the fast kernels
/// switched on ([`crate::modeling::kernels`]).
pub(crate) fn fast(t: &Tensor) -> bool {
    crate::modeling::kernels::fast_cpu_f32(t)
}

/// Read access to the f32 data of a contiguous CPU tensor.
pub(crate) struct F32Ref<'a> {
    guard: StorageRef<'a>,
    range: Range<usize>,
}

impl<'a> F32Ref<'a> {
    /// Borrows `t`'s elements; fails unless it is a contiguous f32 CPU tensor.
    pub(crate) fn new(t: &'a Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("fast path: tensor is not contiguous");
        };
        match &*guard {
            Storage::Cpu(CpuStorage::F32(_)) => {}
            _ => candle_core::bail!("fast path: tensor is not f32 on the CPU"),
        }
        Ok(Self { guard, range: a..b })
    }

    /// The elements.
    pub(crate) fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            _ => &[],
        }
    }
}

/// An f32 buffer that is either owned or borrowed from a tensor.
pub(crate) enum Buf {
    /// Owned data.
    Owned(Vec<f32>),
    /// Data held by a contiguous CPU f32 tensor.
    Shared(Tensor),
}

impl Buf {
    /// Owned data, copying a shared tensor.
    pub(crate) fn into_owned(self) -> Result<Vec<f32>> {
        match self {
            Buf::Owned(v) => Ok(v),
            Buf::Shared(t) => t.flatten_all()?.to_vec1::<f32>(),
        }
    }
}

simd_fn! {
    /// `dst[r] = bias` for every row of length `bias.len()`.
    fn fill_rows[fill_rows_at](dst: &mut [f32], bias: &[f32]) {
        for row in dst.chunks_exact_mut(bias.len()) {
            row.copy_from_slice(bias);
        }
    }
}

simd_fn! {
    /// `dst[r] += bias` for every row of length `bias.len()`.
    fn add_rows[add_rows_at](dst: &mut [f32], bias: &[f32]) {
        for row in dst.chunks_exact_mut(bias.len()) {
            for (d, b) in row.iter_mut().zip(bias) {
                *d += b;
            }
        }
    }
}

// The f32 GEMM of every fast kernel (`kernels::gemm`).
use crate::modeling::kernels::gemm::sgemm;

// The attention products: f32, or bf16 in the CPU bf16 mode.
use crate::modeling::kernels::attention::{attention_with, BlockProducts, Dims, F32Gemm, Layout};
use crate::modeling::kernels::bf16::{self, Bf16Tiles, PackedB};

// The CPU bf16 mode's weights (`kernels::bf16_linear`).
use crate::modeling::kernels::bf16_linear::{self, Wt, WtRef};

/// `y += x · Wᵀ` with the weight given transposed, `wt = Wᵀ` `[k, n]`:
/// `rows` rows of `x` (row stride `k`) into `y` (row stride `n`).
///
/// # Safety
/// `x` must hold `rows·k` and `y` `rows·n` elements; `wt` `k·n`.
pub(crate) unsafe fn linear_acc(
    x: *const f32,
    rows: usize,
    wt: Wt<'_>,
    n: usize,
    k: usize,
    y: *mut f32,
) {
    if let Some(p) = wt.bf16 {
        return bf16_linear::linear_bf16(x, rows, p, y, bf16::Start::Acc);
    }
    let wt = wt.f32;
    sgemm(
        rows,
        n,
        k,
        y,
        n,
        true,
        x,
        (k as isize, 1),
        wt.as_ptr(),
        (n as isize, 1),
    )
}

/// `y = bias + x · Wᵀ` (`bias` on every row, `n` values), as
/// [`linear_acc`] onto rows filled with the bias; the bf16 kernel writes its
/// first sums onto the bias instead of filling `y` first.
///
/// # Safety
/// As [`linear_acc`]; `bias` holds `n` values.
pub(crate) unsafe fn linear_bias(
    x: *const f32,
    rows: usize,
    wt: Wt<'_>,
    (n, k): (usize, usize),
    bias: &[f32],
    y: &mut [f32],
) {
    if let Some(p) = wt.bf16 {
        return bf16_linear::linear_bf16(x, rows, p, y.as_mut_ptr(), bf16::Start::Bias(bias));
    }
    fill_rows(y, bias);
    linear_acc(x, rows, wt, n, k, y.as_mut_ptr())
}

/// A linear layer (`nn.Linear`) whose weight is stored transposed
/// (`[in, out]`, the faster GEMM operand) when it lives on the CPU in f32;
/// the candle layer used by the generic path is a view of that storage.
#[derive(Debug, Clone)]
pub(crate) struct TLinear {
    lin: candle_nn::Linear,
    wt: Option<Tensor>,
    /// `Wᵀ` packed for the bf16 kernel (CPU bf16 mode only).
    packed: Option<std::sync::Arc<crate::modeling::kernels::bf16::PackedB>>,
}

impl TLinear {
    /// Loads `weight` `[out, in]` and `bias` `[out]`.
    pub(crate) fn new(in_dim: usize, out_dim: usize, vb: candle_nn::VarBuilder) -> Result<Self> {
        let l = candle_nn::linear(in_dim, out_dim, vb)?;
        Self::from_parts(l.weight().clone(), l.bias().cloned())
    }

    /// From a weight `[out, in]` and an optional bias.
    pub(crate) fn from_parts(w: Tensor, b: Option<Tensor>) -> Result<Self> {
        if is_cpu_f32(&w) {
            // Wᵀ by the blocked transpose (candle's strided copy of a
            // transposed view took half of a cold start's load).
            let wt =
                crate::modeling::kernels::layout::transpose_last2(&w.unsqueeze(0)?)?.squeeze(0)?;
            Ok(Self {
                packed: bf16_linear::pack_kn(&wt)?,
                lin: candle_nn::Linear::new(wt.t()?, b),
                wt: Some(wt),
            })
        } else {
            Ok(Self {
                lin: candle_nn::Linear::new(w, b),
                wt: None,
                packed: None,
            })
        }
    }

    /// Generic forward (any dtype/device).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_core::Module::forward(&self.lin, x)
    }

    /// `(Wᵀ [in, out], bias)` for the fast kernels.
    pub(crate) fn fast(&self) -> Result<(WtRef<'_>, F32Ref<'_>)> {
        let (Some(wt), Some(b)) = (&self.wt, self.lin.bias()) else {
            candle_core::bail!("fast path: linear layer without a CPU f32 weight or a bias");
        };
        Ok((
            WtRef::new(F32Ref::new(wt)?, self.packed.as_deref()),
            F32Ref::new(b)?,
        ))
    }
}

/// Rows per task for row-parallel work on `n` rows.
pub(crate) fn row_block(n: usize) -> usize {
    // Up to 512 rows (each GEMM call re-packs the weights, so few large calls
    // are cheaper), and at least two tasks per thread when there are few rows.
    n.div_ceil(2 * num_threads()).clamp(16, 512)
}

thread_local! {
    /// Buffers recycled within one encoder pass (avoids page faults on the
    /// large activations); emptied when a [`PoolGuard`] drops.
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `n` elements with unspecified (initialised) contents, reusing
/// a recycled buffer when one is large enough.
pub(crate) fn alloc(n: usize) -> Vec<f32> {
    let reused = POOL.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        let best = p
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= n)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        Some(p.swap_remove(best))
    });
    match reused {
        Some(mut v) => {
            if v.len() >= n {
                v.truncate(n);
            } else {
                v.resize(n, 0.0);
            }
            v
        }
        None => vec![0f32; n],
    }
}

/// Returns a buffer for reuse by [`alloc`] on this thread.
pub(crate) fn recycle(v: Vec<f32>) {
    if v.capacity() >= 1 << 16 {
        POOL.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                p.push(v);
            }
        });
    }
}

/// Frees the recycled buffers of this thread when dropped.
pub(crate) struct PoolGuard;

impl Drop for PoolGuard {
    fn drop(&mut self) {
        POOL.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                p.clear();
            }
        });
    }
}

/// Layer norm + linear: `out = LN(x) · W + b` over `n` rows of width `c`
/// (`w` = `Wᵀ` `[c, o]`). Optionally also `out2 = LN(x) · W2 + b2`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ln_linear(
    x: &[f32],
    n: usize,
    c: usize,
    ln: (&[f32], &[f32], f32),
    w: Wt<'_>,
    b: &[f32],
    second: Option<(Wt<'_>, &[f32])>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let o = b.len();
    let mut out = alloc(n * o);
    let mut out2 = second.map(|(_, b2)| alloc(n * b2.len()));
    let rb = row_block(n);
    let po = SyncPtr(out.as_mut_ptr());
    let po2 = out2.as_mut().map(|v| SyncPtr(v.as_mut_ptr()));
    par_tasks(n.div_ceil(rb), |t| {
        let r0 = t * rb;
        let rows = rb.min(n - r0);
        with_scratch(rows * c, |xn| {
            layer_norm_rows(&x[r0 * c..(r0 + rows) * c], xn, c, ln.0, ln.1, ln.2);
            // SAFETY: disjoint row ranges of the outputs.
            unsafe {
                let y = std::slice::from_raw_parts_mut(po.ptr().add(r0 * o), rows * o);
                linear_bias(xn.as_ptr(), rows, w, (o, c), b, y);
                if let (Some((w2, b2)), Some(p2)) = (second, po2) {
                    let o2 = b2.len();
                    let y2 = std::slice::from_raw_parts_mut(p2.ptr().add(r0 * o2), rows * o2);
                    linear_bias(xn.as_ptr(), rows, w2, (o2, c), b2, y2);
                }
            }
        });
    });
    (out, out2)
}

/// `acc += x · W + b` over `n` rows (`w` `[k, o]`, `x` width `k`, `acc` width `o`).
pub(crate) fn linear_residual(
    acc: &mut [f32],
    x: &[f32],
    n: usize,
    k: usize,
    w: Wt<'_>,
    b: &[f32],
) {
    let o = b.len();
    let rb = row_block(n);
    let pa = SyncPtr(acc.as_mut_ptr());
    par_tasks(n.div_ceil(rb), |t| {
        let r0 = t * rb;
        let rows = rb.min(n - r0);
        // SAFETY: disjoint row ranges of `acc`.
        unsafe {
            let y = std::slice::from_raw_parts_mut(pa.ptr().add(r0 * o), rows * o);
            add_rows(y, b);
            linear_acc(x[r0 * k..].as_ptr(), rows, w, o, k, y.as_mut_ptr());
        }
    });
}

/// `out = x · W + b` over `n` rows (`w` `[k, o]`).
pub(crate) fn linear(x: &[f32], n: usize, k: usize, w: Wt<'_>, b: &[f32]) -> Vec<f32> {
    let mut out = alloc(n * b.len());
    let o = b.len();
    let rb = row_block(n);
    let po = SyncPtr(out.as_mut_ptr());
    par_tasks(n.div_ceil(rb), |t| {
        let r0 = t * rb;
        let rows = rb.min(n - r0);
        // SAFETY: disjoint row ranges of `out`.
        unsafe {
            let y = std::slice::from_raw_parts_mut(po.ptr().add(r0 * o), rows * o);
            linear_bias(x[r0 * k..].as_ptr(), rows, w, (o, k), b, y);
        }
    });
    out
}

/// Weights of the fused MLP residual (linear weights transposed, `[in, out]`).
pub(crate) struct MlpWeights<'a> {
    pub ln_w: &'a [f32],
    pub ln_b: &'a [f32],
    pub eps: f32,
    pub w1: Wt<'a>,
    pub b1: &'a [f32],
    pub w2: Wt<'a>,
    pub b2: &'a [f32],
    /// The activation between the two layers.
    pub act: crate::config::Activation,
    /// Sum as `x + (h·W2 + b2)` (the second layer's output first, as the
    /// unfused ops do) rather than `(x + b2) + h·W2` accumulated in place.
    pub residual_last: bool,
}

/// `hid = act(fc1(LN(src)))` for `rows` rows of width `c` (`xn` receives
/// `LN(src)`): the first half of the fused MLPs, on one thread.
fn mlp_hidden(
    src: &[f32],
    rows: usize,
    c: usize,
    m: &MlpWeights<'_>,
    xn: &mut [f32],
    hid: &mut [f32],
) {
    let hdim = m.b1.len();
    layer_norm_rows(src, xn, c, m.ln_w, m.ln_b, m.eps);
    // SAFETY: `xn` holds `rows·c` values and `hid` `rows·hdim`.
    unsafe { linear_bias(xn.as_ptr(), rows, m.w1, (hdim, c), m.b1, hid) };
    activation_inplace(hid, m.act);
}

/// `x += fc2(act(fc1(LN(x))))` over `n` rows of width `c`, row block by row
/// block so that the hidden activations stay in cache (Hiera's MLP with GELU,
/// memory attention's with ReLU).
pub(crate) fn mlp_residual(x: &mut [f32], n: usize, c: usize, m: &MlpWeights<'_>) {
    let hdim = m.b1.len();
    let rb = row_block(n);
    let px = SyncPtr(x.as_mut_ptr());
    par_tasks(n.div_ceil(rb), |t| {
        let r0 = t * rb;
        let rows = rb.min(n - r0);
        with_scratch(rows * (c + hdim), |buf| {
            let (xn, hid) = buf.split_at_mut(rows * c);
            // SAFETY: disjoint row ranges of `x`.
            unsafe {
                let xr = std::slice::from_raw_parts_mut(px.ptr().add(r0 * c), rows * c);
                mlp_hidden(xr, rows, c, m, xn, hid);
                if m.residual_last {
                    // The second layer's output (into the normed rows, no
                    // longer needed), then added to the residual.
                    linear_bias(hid.as_ptr(), rows, m.w2, (c, hdim), m.b2, xn);
                    add_rows(xr, xn);
                } else {
                    add_rows(xr, m.b2);
                    linear_acc(hid.as_ptr(), rows, m.w2, c, hdim, xr.as_mut_ptr());
                }
            }
        });
    });
}

/// The MLP half of a ConvNeXt block on channels-first maps:
/// `out[b, :, p] = x[b, :, p] + γ ∘ fc2(act(fc1(LN(y[b, :, p]))))` for `x`,
/// `y`, `out` `[B, C, HW]` (`γ` = 1 when `None`). Each task gathers a block of
/// pixels into rows, runs the MLP on them in cache and scatters the result
/// back, so no channels-last copy of the map is made.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mlp_residual_nchw(
    x: &[f32],
    y: &[f32],
    out: &mut [f32],
    (b, c, hw): (usize, usize, usize),
    m: &MlpWeights<'_>,
    gamma: Option<&[f32]>,
) -> Result<()> {
    let hdim = m.b1.len();
    let n = b * c * hw;
    if x.len() != n
        || y.len() != n
        || out.len() != n
        || m.ln_w.len() != c
        || m.ln_b.len() != c
        || m.b2.len() != c
        || m.w1.len() != c * hdim
        || m.w2.len() != hdim * c
        || gamma.is_some_and(|g| g.len() != c)
    {
        candle_core::bail!("mlp_residual_nchw: sizes do not fit [{b}, {c}, {hw}]");
    }
    let rb = row_block(b * hw).min(hw.max(1));
    let blocks = hw.div_ceil(rb.max(1));
    let po = SyncPtr(out.as_mut_ptr());
    par_tasks(b * blocks, |t| {
        let (bi, p0) = (t / blocks, (t % blocks) * rb);
        let rows = rb.min(hw - p0);
        let (xb, yb) = (&x[bi * c * hw..][..c * hw], &y[bi * c * hw..][..c * hw]);
        with_scratch(rows * (2 * c + hdim), |buf| {
            let (rows_in, rest) = buf.split_at_mut(rows * c);
            let (xn, hid) = rest.split_at_mut(rows * c);
            for ch in 0..c {
                for (r, &v) in yb[ch * hw + p0..][..rows].iter().enumerate() {
                    rows_in[r * c + ch] = v;
                }
            }
            mlp_hidden(rows_in, rows, c, m, xn, hid);
            // The second layer into the gathered rows (no longer needed).
            // SAFETY: `hid` holds `rows·hdim` values, `rows_in` `rows·c`.
            unsafe { linear_bias(hid.as_ptr(), rows, m.w2, (c, hdim), m.b2, rows_in) };
            for ch in 0..c {
                let g = gamma.map_or(1.0, |g| g[ch]);
                let src = &xb[ch * hw + p0..][..rows];
                // SAFETY: pixels `p0..p0 + rows` of image `bi` belong to this
                // task only.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(po.ptr().add((bi * c + ch) * hw + p0), rows)
                };
                // Without γ, g = 1: the product is exact, the sum the same.
                for (r, (d, &xv)) in dst.iter_mut().zip(src).enumerate() {
                    *d = xv + rows_in[r * c + ch] * g;
                }
            }
        });
    });
    Ok(())
}

/// Max pooling of NHWC `[b, h, w, c]` with kernel = stride = `s` (floor).
pub(crate) fn max_pool(
    x: &[f32],
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    s: [usize; 2],
) -> Vec<f32> {
    let (ho, wo) = (h / s[0], w / s[1]);
    let mut out = alloc(b * ho * wo * c);
    let po = SyncPtr(out.as_mut_ptr());
    par_tasks(b * ho, |t| {
        let (bi, oy) = (t / ho, t % ho);
        // SAFETY: one output row per task.
        let dst = unsafe { std::slice::from_raw_parts_mut(po.ptr().add(t * wo * c), wo * c) };
        for ox in 0..wo {
            let d = &mut dst[ox * c..(ox + 1) * c];
            d.fill(f32::NEG_INFINITY);
            for a in 0..s[0] {
                for bb in 0..s[1] {
                    let (y, xx) = (oy * s[0] + a, ox * s[1] + bb);
                    let src = &x[((bi * h + y) * w + xx) * c..][..c];
                    for (dv, sv) in d.iter_mut().zip(src) {
                        *dv = dv.max(*sv);
                    }
                }
            }
        }
    });
    out
}

/// Geometry of one attention call on an NHWC token map.
pub(crate) struct AttnGeom {
    /// Images.
    pub b: usize,
    /// Map height.
    pub h: usize,
    /// Map width.
    pub w: usize,
    /// Channels per q/k/v (`dim_out`).
    pub c: usize,
    /// Heads.
    pub heads: usize,
    /// Window side; 0 = global attention.
    pub window: usize,
    /// Query pooling stride.
    pub q_stride: Option<[usize; 2]>,
    /// Products in bf16 ([`Bf16Tiles`], the CPU bf16 mode) instead of f32.
    pub bf16: bool,
}

/// Multi-head attention of `MultiScaleAttention` on a `qkv` buffer
/// `[b·h·w, 3c]` (natural token order, un-padded) whose bias is `qkv_bias`
/// (= the qkv of a zero token, used for window padding). Windows are
/// `window × window` tiles of the zero-padded map, queries optionally
/// max-pooled inside each window. Returns the attention output `[b·ho·wo, c]`
/// in natural order (before `proj`) and `(ho, wo)`.
pub(crate) fn attention(
    qkv: &[f32],
    qkv_bias: &[f32],
    g: &AttnGeom,
) -> Result<(Vec<f32>, usize, usize)> {
    if g.bf16 && crate::modeling::kernels::bf16::available() {
        attention_in(&Bf16Tiles, qkv, qkv_bias, g)
    } else {
        attention_in(&F32Gemm, qkv, qkv_bias, g)
    }
}

/// [`attention`] with the two products (`Q·Kᵀ`, `P·V`) computed by `prod`
/// (global attention: [`global_attention_fused`], or
/// [`global_attention_bf16`] in the bf16 mode; windows here).
fn attention_in<P: BlockProducts>(
    prod: &P,
    qkv: &[f32],
    qkv_bias: &[f32],
    g: &AttnGeom,
) -> Result<(Vec<f32>, usize, usize)> {
    let (b, h, w, c, heads) = (g.b, g.h, g.w, g.c, g.heads);
    if heads == 0
        || !c.is_multiple_of(heads)
        || qkv.len() != b * h * w * 3 * c
        || qkv_bias.len() != 3 * c
    {
        candle_core::bail!("attention: inconsistent sizes");
    }
    let hd = c / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let [sy, sx] = g.q_stride.unwrap_or([1, 1]);
    if sy == 0 || sx == 0 {
        candle_core::bail!("attention: zero query stride");
    }
    let (ho, wo) = (h / sy, w / sx);
    let mut out = alloc(b * ho * wo * c);
    let c3 = 3 * c;
    if g.window == 0 {
        let z = GlobalSizes {
            b,
            l: h * w,
            w,
            c,
            heads,
            hd,
            lq: ho * wo,
            wo,
            q_stride: g.q_stride.map(|_| (sy, sx)),
            scale,
        };
        if g.bf16 && crate::modeling::kernels::bf16::available() {
            global_attention_bf16(qkv, &z, &mut out);
        } else {
            global_attention_fused(prod, qkv, &z, &mut out)?;
        }
        return Ok((out, ho, wo));
    }
    let po = SyncPtr(out.as_mut_ptr());

    // Windowed attention over the zero-padded map.
    let ws = g.window;
    let (nwy, nwx) = (h.div_ceil(ws), w.div_ceil(ws));
    let (wqy, wqx) = (ws / sy, ws / sx);
    if wqy == 0 || wqx == 0 || ho.div_ceil(wqy) != nwy || wo.div_ceil(wqx) != nwx {
        candle_core::bail!("attention: window {ws} and query stride {sy}x{sx} do not tile {h}x{w}");
    }
    let l = ws * ws;
    par_tasks(b * nwy * nwx * heads, |t| {
        let hh = t % heads;
        let win = t / heads;
        let (bi, wy, wx) = (win / (nwy * nwx), (win / nwx) % nwy, win % nwx);
        let base = &qkv[bi * h * w * c3..(bi + 1) * h * w * c3];
        // Only the queries of real output tokens (`ry × rx` of the window's
        // `wqy × wqx`): the padded ones are dropped by `window_unpartition`
        // (each query row is computed on its own, so the rest is the same).
        // The padded keys still take part, as in the official code.
        let (ry, rx) = (wqy.min(ho - wy * wqy), wqx.min(wo - wx * wqx));
        let lq = ry * rx;
        with_scratch(2 * l * hd + lq * hd + lq * l + lq * hd, |buf| {
            let (k, rest) = buf.split_at_mut(l * hd);
            let (v, rest) = rest.split_at_mut(l * hd);
            let (q, rest) = rest.split_at_mut(lq * hd);
            let (s, o) = rest.split_at_mut(lq * l);
            // Row of token (y, x) of this window (padding = the bias row).
            let row =
                |y: usize, x: usize| window_row(base, qkv_bias, (wy * ws + y, wx * ws + x), (h, w));
            for y in 0..ws {
                for x in 0..ws {
                    let r = row(y, x);
                    let i = y * ws + x;
                    k[i * hd..(i + 1) * hd].copy_from_slice(&r[c + hh * hd..][..hd]);
                    v[i * hd..(i + 1) * hd].copy_from_slice(&r[2 * c + hh * hd..][..hd]);
                }
            }
            for qy in 0..ry {
                for qx in 0..rx {
                    let qd = &mut q[(qy * rx + qx) * hd..][..hd];
                    qd.fill(f32::NEG_INFINITY);
                    for a in 0..sy {
                        for bb in 0..sx {
                            let src = &row(qy * sy + a, qx * sx + bb)[hh * hd..][..hd];
                            for (d, v) in qd.iter_mut().zip(src) {
                                *d = d.max(*v);
                            }
                        }
                    }
                }
            }
            // SAFETY: scratch buffers of the sizes given.
            unsafe {
                prod.scores(lq, l, hd, q.as_ptr(), hd, k.as_ptr(), hd, s.as_mut_ptr(), l);
                softmax_rows(s, l, scale);
                o.fill(0.0);
                prod.accumulate(lq, l, hd, s.as_ptr(), l, v.as_ptr(), hd, o.as_mut_ptr(), hd);
            }
            for qy in 0..ry {
                let gy = wy * wqy + qy;
                for qx in 0..rx {
                    let gx = wx * wqx + qx;
                    let src = &o[(qy * rx + qx) * hd..][..hd];
                    // SAFETY: each (token, head) slot is written by one task.
                    unsafe {
                        let dst = po.ptr().add(((bi * ho + gy) * wo + gx) * c + hh * hd);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, hd);
                    }
                }
            }
        });
    });
    Ok((out, ho, wo))
}

/// Sizes of one global attention call ([`attention`] with `window` 0).
struct GlobalSizes {
    b: usize,
    /// Tokens (keys) per image, `h · w`.
    l: usize,
    /// Map width.
    w: usize,
    c: usize,
    heads: usize,
    /// Channels per head.
    hd: usize,
    /// Queries (output tokens) per image, `ho · wo`.
    lq: usize,
    /// Output map width.
    wo: usize,
    /// Query pooling stride `(sy, sx)`, if any.
    q_stride: Option<(usize, usize)>,
    scale: f32,
}

impl GlobalSizes {
    /// Max-pools output token `oq`'s query of head `hh` (`qd.len()`
    /// channels) from image `base` (its qkv rows): the max over the `sy × sx`
    /// tokens under it.
    fn pool(&self, base: &[f32], hh: usize, oq: usize, qd: &mut [f32]) {
        let (sy, sx) = self.q_stride.unwrap_or((1, 1));
        let (oy, ox) = (oq / self.wo, oq % self.wo);
        qd.fill(f32::NEG_INFINITY);
        for a in 0..sy {
            for bb in 0..sx {
                let tok = (oy * sy + a) * self.w + ox * sx + bb;
                let src = &base[tok * 3 * self.c + hh * self.hd..];
                for (d, v) in qd.iter_mut().zip(src) {
                    *d = d.max(*v);
                }
            }
        }
    }
}

/// f32 global attention: the fused, tiled kernel (its score tiles stay in
/// cache; whole rows of 512 queries × 4096 keys are 8 MiB at 1024), on the
/// queries in place in `qkv` or max-pooled into a buffer first; keys and
/// values read in place. Writes `out` `[b, lq, c]`.
fn global_attention_fused<P: BlockProducts>(
    prod: &P,
    qkv: &[f32],
    z: &GlobalSizes,
    out: &mut [f32],
) -> Result<()> {
    let (b, l, c, heads, hd, lq) = (z.b, z.l, z.c, z.heads, z.hd, z.lq);
    let c3 = 3 * c;
    // Pooled queries `[b, lq, c]`, in blocks of rows on the pool (the bf16
    // route pools inside its tasks too).
    let pooled = z.q_stride.map(|_| {
        const ROWS: usize = 64;
        let mut q = alloc(b * lq * c);
        if c > 0 {
            par_chunks_mut(&mut q, ROWS * c, |blk, rows| {
                for (r, row) in rows.chunks_exact_mut(c).enumerate() {
                    let (bi, oq) = ((blk * ROWS + r) / lq, (blk * ROWS + r) % lq);
                    let base = &qkv[bi * l * c3..(bi + 1) * l * c3];
                    for (hh, qd) in row.chunks_exact_mut(hd).enumerate() {
                        z.pool(base, hh, oq, qd);
                    }
                }
            });
        }
        q
    });
    let in_qkv = |offset: usize| {
        (
            &qkv[offset..],
            Layout {
                heads,
                batch_stride: l * c3,
                head_stride: hd,
                row_stride: c3,
                col_stride: 1,
            },
        )
    };
    let q = match &pooled {
        Some(p) => (&p[..], Layout::blhd(heads, lq, hd)),
        None => in_qkv(0),
    };
    let dims = Dims {
        bh: b * heads,
        lq,
        lk: l,
        d: hd,
        dv: hd,
    };
    let o = (out, Layout::blhd(heads, lq, hd));
    attention_with(prod, dims, z.scale, q, in_qkv(c), in_qkv(2 * c), o)
}

/// bf16 global attention (the CPU must have the bf16 kernel): each head's
/// keys and values packed once per task, and a task runs a group of query
/// chunks (as few groups as keep every thread busy), small enough that the
/// chunk's scores stay in cache (64 × 4096 f32 = 1 MiB at 1024); softmax
/// over whole rows. Writes `out` `[b, lq, c]`.
fn global_attention_bf16(qkv: &[f32], z: &GlobalSizes, out: &mut [f32]) {
    let (b, l, c, heads, hd, lq) = (z.b, z.l, z.c, z.heads, z.hd, z.lq);
    let c3 = 3 * c;
    let po = SyncPtr(out.as_mut_ptr());
    let qc = 64.min(lq.max(1));
    let chunks = lq.div_ceil(qc);
    let groups = num_threads()
        .div_ceil((b * heads).max(1))
        .max(1)
        .min(chunks);
    par_tasks(b * heads * groups, |t| {
        let bi = t / (heads * groups);
        let hh = (t / groups) % heads;
        let grp = t % groups;
        let base = &qkv[bi * l * c3..(bi + 1) * l * c3];
        let (mut kp, mut vp) = (PackedB::empty(), PackedB::empty());
        kp.repack_keys(&base[c + hh * hd..], l, hd, c3);
        vp.repack_values(&base[2 * c + hh * hd..], l, hd, c3);
        for chunk in grp * chunks / groups..(grp + 1) * chunks / groups {
            let q0 = chunk * qc;
            let rows = qc.min(lq - q0);
            with_scratch(rows * hd + rows * l, |buf| {
                let (q, s) = buf.split_at_mut(rows * hd);
                let (qs, q_rs): (&[f32], usize) = if z.q_stride.is_some() {
                    for r in 0..rows {
                        z.pool(base, hh, q0 + r, &mut q[r * hd..(r + 1) * hd]);
                    }
                    (q, hd)
                } else {
                    (&base[q0 * c3 + hh * hd..], c3)
                };
                // SAFETY: the output rows of this task are disjoint from
                // other tasks'. Both products are written, not accumulated.
                let o = unsafe {
                    let dst = po.ptr().add((bi * lq + q0) * c + hh * hd);
                    std::slice::from_raw_parts_mut(dst, (rows - 1) * c + hd)
                };
                bf16::gemm(rows, qs, q_rs, &kp, s, l, bf16::Start::Zero);
                softmax_rows(s, l, z.scale);
                bf16::gemm(rows, s, l, &vp, o, c, bf16::Start::Zero);
            });
        }
    });
}

/// `lat[b, y, x, :] += prev[b, y / 2, x / 2, :]` (nearest 2× upsampling of
/// `prev` `[b, h/2, w/2, c]` added to `lat` `[b, h, w, c]`), then `· scale`.
pub(crate) fn add_upsampled_nearest2x(
    lat: &mut [f32],
    prev: &[f32],
    (b, h, w, c): (usize, usize, usize, usize),
    scale: f32,
) {
    let (ph, pw) = (h / 2, w / 2);
    let pl = SyncPtr(lat.as_mut_ptr());
    par_tasks(b * h, |t| {
        let (bi, y) = (t / h, t % h);
        // SAFETY: one output row per task.
        let row = unsafe { std::slice::from_raw_parts_mut(pl.ptr().add(t * w * c), w * c) };
        let src = &prev[(bi * ph + y / 2) * pw * c..][..pw * c];
        for x in 0..w {
            for (d, s) in row[x * c..(x + 1) * c]
                .iter_mut()
                .zip(&src[(x / 2) * c..(x / 2 + 1) * c])
            {
                *d = (*d + s) * scale;
            }
        }
    });
}

/// Strided conv of NCHW pixels straight to NHWC tokens plus a per-position
/// embedding: `out[b, y, x, :] = conv(x)[b, :, y, x] + bias + pos[y, x, :]`.
/// `weight` is `[co, ci, k, k]`, `pos` `[ho·wo·co]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch_embed(
    px: &[f32],
    (b, ci, h, w): (usize, usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    pos: &[f32],
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<(Vec<f32>, usize, usize)> {
    let co = bias.len();
    let kk = ci * k * k;
    if stride == 0 || h + 2 * pad < k || w + 2 * pad < k || weight.len() != co * kk {
        candle_core::bail!("patch_embed: bad geometry");
    }
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    if pos.len() != ho * wo * co || px.len() != b * ci * h * w {
        candle_core::bail!("patch_embed: position embedding or input size mismatch");
    }
    let mut out = alloc(b * ho * wo * co);
    let po = SyncPtr(out.as_mut_ptr());
    par_tasks(b * ho, |t| {
        let (bi, oy) = (t / ho, t % ho);
        with_scratch(wo * kk, |cols| {
            for ox in 0..wo {
                let col = &mut cols[ox * kk..(ox + 1) * kk];
                for c in 0..ci {
                    let plane = &px[(bi * ci + c) * h * w..][..h * w];
                    for ky in 0..k {
                        let iy = (oy * stride + ky) as isize - pad as isize;
                        let dst = &mut col[(c * k + ky) * k..][..k];
                        if iy < 0 || iy >= h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src_row = &plane[iy as usize * w..][..w];
                        for (kx, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            *d = if ix < 0 || ix >= w as isize {
                                0.0
                            } else {
                                src_row[ix as usize]
                            };
                        }
                    }
                }
            }
            // SAFETY: one output row (image, y) per task.
            unsafe {
                let y = std::slice::from_raw_parts_mut(po.ptr().add(t * wo * co), wo * co);
                y.copy_from_slice(&pos[oy * wo * co..(oy + 1) * wo * co]);
                add_rows(y, bias);
                sgemm(
                    wo,
                    co,
                    kk,
                    y.as_mut_ptr(),
                    co,
                    true,
                    cols.as_ptr(),
                    (kk as isize, 1),
                    weight.as_ptr(),
                    (1, kk as isize),
                );
            }
        });
    });
    Ok((out, ho, wo))
}

/// The qkv row of map position `(y, x)`, or `bias` outside the `hw` map.
#[inline]
fn window_row<'a>(
    base: &'a [f32],
    bias: &'a [f32],
    yx: (usize, usize),
    hw: (usize, usize),
) -> &'a [f32] {
    let c3 = bias.len();
    if yx.0 < hw.0 && yx.1 < hw.1 {
        &base[(yx.0 * hw.1 + yx.1) * c3..][..c3]
    } else {
        bias
    }
}

/// NHWC `[b, h·w, c]` → NCHW tensor `[b, c, h, w]`.
pub(crate) fn nhwc_to_nchw(x: &[f32], b: usize, h: usize, w: usize, c: usize) -> Result<Tensor> {
    let hw = h * w;
    let mut out = alloc(b * c * hw);
    let po = SyncPtr(out.as_mut_ptr());
    const T: usize = 32;
    let tiles = hw.div_ceil(T);
    par_tasks(b * tiles, |t| {
        let (bi, p0) = (t / tiles, (t % tiles) * T);
        let p1 = (p0 + T).min(hw);
        for ch in 0..c {
            for p in p0..p1 {
                // SAFETY: each (image, pixel) tile is written by one task.
                unsafe { *po.ptr().add((bi * c + ch) * hw + p) = x[(bi * hw + p) * c + ch] };
            }
        }
    });
    Tensor::from_vec(out, (b, c, h, w), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_layer_norm() {
        let mut s: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let orig = s.clone();
        softmax_rows(&mut s, 10, 0.5);
        for (row, o) in s.chunks(10).zip(orig.chunks(10)) {
            let m = o.iter().fold(f32::MIN, |a, &b| a.max(b));
            let z: f64 = o.iter().map(|&v| (((v - m) * 0.5) as f64).exp()).sum();
            for (p, &v) in row.iter().zip(o) {
                let want = (((v - m) * 0.5) as f64).exp() / z;
                assert!((*p as f64 - want).abs() < 1e-6);
            }
        }
        let x: Vec<f32> = (0..22).map(|i| 100.0 + (i as f32 * 0.7).cos()).collect();
        let w: Vec<f32> = (0..11).map(|i| 1.0 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..11).map(|i| i as f32 * -0.05).collect();
        let mut y = vec![0f32; 22];
        layer_norm_rows(&x, &mut y, 11, &w, &b, 1e-6);
        for (xr, yr) in x.chunks(11).zip(y.chunks(11)) {
            let m = xr.iter().map(|&v| v as f64).sum::<f64>() / 11.0;
            let var = xr.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 11.0;
            for i in 0..11 {
                let want = (xr[i] as f64 - m) / (var + 1e-6).sqrt() * w[i] as f64 + b[i] as f64;
                assert!((yr[i] as f64 - want).abs() < 1e-4, "{} vs {want}", yr[i]);
            }
        }
    }

    /// Random MLP weights of width `c` and hidden width `hd` from the kernels'
    /// LCG (seeds from `seed`): `w1` `[hd, c]`, `w2` `[c, hd]` as `nn.Linear`
    /// stores them, and their transposes as the fused kernels take them.
    struct MlpFixture {
        ln: (Vec<f32>, Vec<f32>),
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: Vec<f32>,
        w1t: Vec<f32>,
        w2t: Vec<f32>,
    }

    impl MlpFixture {
        fn new(c: usize, hd: usize, seed: u64) -> Self {
            let lcg = crate::modeling::kernels::softmax::tests::lcg;
            let transposed = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> {
                (0..cols * rows)
                    .map(|i| v[(i % rows) * cols + i / rows])
                    .collect()
            };
            let (w1, w2) = (lcg(hd * c, 0.3, seed + 2), lcg(c * hd, 0.3, seed + 4));
            Self {
                ln: (lcg(c, 1.0, seed), lcg(c, 0.5, seed + 1)),
                w1t: transposed(&w1, hd, c),
                w2t: transposed(&w2, c, hd),
                w1,
                b1: lcg(hd, 0.5, seed + 3),
                w2,
                b2: lcg(c, 0.5, seed + 5),
            }
        }

        /// The kernels' view of the weights.
        fn weights(
            &self,
            eps: f32,
            act: crate::config::Activation,
            residual_last: bool,
        ) -> MlpWeights<'_> {
            MlpWeights {
                ln_w: &self.ln.0,
                ln_b: &self.ln.1,
                eps,
                w1: Wt {
                    f32: &self.w1t,
                    bf16: None,
                },
                b1: &self.b1,
                w2: Wt {
                    f32: &self.w2t,
                    bf16: None,
                },
                b2: &self.b2,
                act,
                residual_last,
            }
        }

        /// `fc2(act(fc1(LN(x))))` over the last dim of `x` in candle ops
        /// (the reference of the fused MLP kernels).
        fn reference(&self, x: &Tensor, eps: f64, act: crate::config::Activation) -> Tensor {
            use candle_core::D;
            let dev = x.device();
            let row = |v: &[f32]| Tensor::from_slice(v, v.len(), dev).unwrap();
            let mat = |v: &[f32], r: usize| Tensor::from_slice(v, (r, v.len() / r), dev).unwrap();
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let xc = x.broadcast_sub(&mean).unwrap();
            let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let xn = xc
                .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&row(&self.ln.0))
                .unwrap()
                .broadcast_add(&row(&self.ln.1))
                .unwrap();
            let h = xn
                .broadcast_matmul(&mat(&self.w1, self.b1.len()).t().unwrap())
                .unwrap()
                .broadcast_add(&row(&self.b1))
                .unwrap();
            let h = match act {
                crate::config::Activation::Relu => h.relu().unwrap(),
                _ => h.gelu_erf().unwrap(),
            };
            h.broadcast_matmul(&mat(&self.w2, self.b2.len()).t().unwrap())
                .unwrap()
                .broadcast_add(&row(&self.b2))
                .unwrap()
        }
    }

    /// The fused MLP residual equals the candle ops it replaces
    /// (`x + fc2(act(fc1(LN(x))))`) for both activations, with a row count
    /// that leaves a partial row block.
    #[test]
    fn mlp_residual_matches_candle() {
        use crate::config::Activation;
        let dev = Device::Cpu;
        let (n, c, hd) = (37, 24, 64);
        let x = crate::modeling::kernels::softmax::tests::lcg(n * c, 2.0, 1);
        let f = MlpFixture::new(c, hd, 2);
        for act in [Activation::Relu, Activation::Gelu] {
            let xt = Tensor::from_slice(&x, (n, c), &dev).unwrap();
            let y = f.reference(&xt, 1e-5, act);
            let want = (xt + y)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = x.clone();
            let m = f.weights(1e-5, act, act == Activation::Relu);
            mlp_residual(&mut got, n, c, &m);
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{act:?}: max-abs {worst}");
            assert!(got != x, "{act:?}: nothing was added");
        }
    }

    /// The channels-first fused MLP equals the candle ops of a ConvNeXt
    /// block's second half (`x + γ ∘ fc2(GELU(fc1(LN(y))))` on NCHW maps),
    /// with and without `γ`, over two images and a partial pixel block; bad
    /// sizes are an error.
    #[test]
    fn mlp_residual_nchw_matches_candle() {
        use crate::config::Activation;
        let lcg = crate::modeling::kernels::softmax::tests::lcg;
        let dev = Device::Cpu;
        let (b, c, h, w, hd) = (2, 16, 5, 7, 48);
        let n = b * c * h * w;
        let (x, y) = (lcg(n, 2.0, 11), lcg(n, 2.0, 12));
        let f = MlpFixture::new(c, hd, 13);
        let gamma = lcg(c, 1.0, 19);
        let row = |v: &[f32]| Tensor::from_slice(v, v.len(), &dev).unwrap();
        let m = f.weights(1e-6, Activation::Gelu, true);
        let xt = Tensor::from_slice(&x, (b, c, h, w), &dev).unwrap();
        let yl = Tensor::from_slice(&y, (b, c, h, w), &dev)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .contiguous()
            .unwrap();
        let z = f.reference(&yl, 1e-6, Activation::Gelu);
        for g in [None, Some(&gamma[..])] {
            let zg = match g {
                Some(g) => z.broadcast_mul(&row(g)).unwrap(),
                None => z.clone(),
            };
            let want = (&xt + zg.permute((0, 3, 1, 2)).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = vec![0f32; n];
            mlp_residual_nchw(&x, &y, &mut got, (b, c, h * w), &m, g).unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "gamma {}: max-abs {worst}", g.is_some());
        }
        let mut short = vec![0f32; n - 1];
        assert!(mlp_residual_nchw(&x, &y, &mut short, (b, c, h * w), &m, None).is_err());
        assert!(mlp_residual_nchw(
            &x,
            &y,
            &mut vec![0f32; n],
            (b, c, h * w),
            &m,
            Some(&gamma[1..])
        )
        .is_err());
    }

    /// Windowed and global attention against an f64 reference that follows
    /// the official code literally (zero-pad the map to whole windows,
    /// padding tokens' qkv = the bias, max-pool the queries inside each
    /// window, attend over all the window's keys, drop the padded outputs;
    /// global: one window of the whole map, no padding): windows that tile
    /// the map and windows that need padding on either side, with and
    /// without query pooling, two heads, batch 2.
    #[test]
    fn attention_matches_f64_reference() {
        let lcg = crate::modeling::kernels::softmax::tests::lcg;
        let (b, c, heads) = (2, 16, 2);
        let hd = c / heads;
        for (h, w, ws, q_stride) in [
            (8, 8, 4, None),
            (9, 11, 4, None),
            (5, 12, 7, None),
            (10, 6, 4, Some([2, 2])),
            (12, 12, 8, Some([2, 2])),
            (9, 11, 0, None),
            (10, 6, 0, Some([2, 2])),
        ] {
            let qkv = lcg(b * h * w * 3 * c, 2.0, (h * 31 + w) as u64);
            let bias = lcg(3 * c, 2.0, 5);
            let g = AttnGeom {
                b,
                h,
                w,
                c,
                heads,
                window: ws,
                q_stride,
                bf16: false,
            };
            let (got, ho, wo) = attention(&qkv, &bias, &g).unwrap();
            let [sy, sx] = q_stride.unwrap_or([1, 1]);
            assert_eq!((ho, wo), (h / sy, w / sx));
            // Global attention: one window, the whole (unpadded) map.
            let (wh, ww) = if ws == 0 { (h, w) } else { (ws, ws) };
            let (wqy, wqx) = (wh / sy, ww / sx);
            // Token (y, x) of image bi in the padded map: its qkv row.
            let tok = |bi: usize, y: usize, x: usize| -> &[f32] {
                if y < h && x < w {
                    &qkv[((bi * h + y) * w + x) * 3 * c..][..3 * c]
                } else {
                    &bias
                }
            };
            let scale = 1.0 / (hd as f64).sqrt();
            for bi in 0..b {
                for gy in 0..ho {
                    for gx in 0..wo {
                        let (wy, wx) = (gy / wqy, gx / wqx);
                        let (qy, qx) = (gy % wqy, gx % wqx);
                        for hh in 0..heads {
                            let q: Vec<f64> = (0..hd)
                                .map(|d| {
                                    let mut m = f64::NEG_INFINITY;
                                    for a in 0..sy {
                                        for bb in 0..sx {
                                            let r = tok(
                                                bi,
                                                wy * wh + qy * sy + a,
                                                wx * ww + qx * sx + bb,
                                            );
                                            m = m.max(r[hh * hd + d] as f64);
                                        }
                                    }
                                    m
                                })
                                .collect();
                            let keys: Vec<&[f32]> = (0..wh * ww)
                                .map(|i| tok(bi, wy * wh + i / ww, wx * ww + i % ww))
                                .collect();
                            let logits: Vec<f64> = keys
                                .iter()
                                .map(|r| {
                                    (0..hd)
                                        .map(|d| q[d] * r[c + hh * hd + d] as f64)
                                        .sum::<f64>()
                                        * scale
                                })
                                .collect();
                            let top = logits.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v));
                            let e: Vec<f64> = logits.iter().map(|v| (v - top).exp()).collect();
                            let z: f64 = e.iter().sum();
                            for d in 0..hd {
                                let want: f64 = keys
                                    .iter()
                                    .zip(&e)
                                    .map(|(r, p)| p / z * r[2 * c + hh * hd + d] as f64)
                                    .sum();
                                let at = ((bi * ho + gy) * wo + gx) * c + hh * hd + d;
                                assert!(
                                    (got[at] as f64 - want).abs() < 1e-4,
                                    "{h}x{w} window {ws} {q_stride:?}: [{bi},{gy},{gx},{hh},{d}] {} vs {want}",
                                    got[at]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hiera's attention in the bf16 mode (products by the bf16 kernel)
    /// against the f32 products, windowed and global, with and without query
    /// pooling: close (bf16 inputs, f32 sums), and not the f32 result itself
    /// (the bf16 products did run).
    #[test]
    fn bf16_attention_matches_f32() {
        if !crate::modeling::kernels::bf16::available() {
            println!("skipped: this CPU lacks avx512_bf16 (the bf16 mode runs the f32 products)");
            return;
        }
        let (b, h, w, c, heads) = (2, 10, 12, 64, 2);
        // Values in about [-2, 2] (the kernels' fixed LCG).
        let lcg = crate::modeling::kernels::softmax::tests::lcg;
        let qkv = lcg(b * h * w * 3 * c, 2.0, 1);
        let bias = lcg(3 * c, 2.0, 2);
        for (window, q_stride) in [(0, None), (0, Some([2, 2])), (4, None), (4, Some([2, 2]))] {
            let geom = |bf16| AttnGeom {
                b,
                h,
                w,
                c,
                heads,
                window,
                q_stride,
                bf16,
            };
            let (want, ho, wo) = attention(&qkv, &bias, &geom(false)).unwrap();
            let (got, ho2, wo2) = attention(&qkv, &bias, &geom(true)).unwrap();
            assert_eq!((ho, wo), (ho2, wo2));
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 5e-2,
                "window {window} {q_stride:?}: max-abs {worst}"
            );
            assert!(
                worst > 0.0,
                "window {window} {q_stride:?}: bf16 products did not run"
            );
        }
    }
}
