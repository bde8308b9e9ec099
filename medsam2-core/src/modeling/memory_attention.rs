//! Memory attention (`sam2.modeling.memory_attention`) and its rotary-position
//! attention (`sam2.modeling.sam.transformer.RoPEAttention`).
//!
//! The current frame's features attend to themselves, then to the memory bank
//! (spatial memories of earlier frames followed by object-pointer tokens).
//! Rotary encodings are written in real form: a pair `(x₀, x₁)` of a head's
//! channels is rotated by `θ` as `(x₀ cos θ − x₁ sin θ, x₀ sin θ + x₁ cos θ)`,
//! which is the official complex product `(x₀ + i x₁)·e^{iθ}`.
//!
//! The cross-attention keys of a memory depend only on that memory (and its
//! position encoding), so [`MemoryAttention::project_memory`] and
//! [`MemoryAttention::forward_projected`] let a caller compute them apart from
//! the attention itself. The values are never projected token by token:
//! `v_proj` is applied to the attention's output instead
//! ([`RoPEAttention::attend_memory`]), which is the same linear map.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, DeviceLocation, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::modeling::backbones::cpu::{mlp_residual, F32Ref, MlpWeights, TLinear};
use crate::modeling::kernels::bf16_linear::Linear;
use crate::modeling::kernels::parallel::{par_tasks, SyncPtr};
use crate::modeling::kernels::simd::simd_fn;

use crate::config::{
    Activation, MemoryAttentionConfig, MemoryAttentionLayerConfig, RoPEAttentionConfig,
};
use crate::modeling::memory_encoder::{cpu_f32, layer_norm_last};
use crate::modeling::sam2_utils::{activation, linear};

/// Epsilon of the `nn.LayerNorm`s of memory attention (PyTorch default).
const LN_EPS: f64 = 1e-5;

/// Axial rotary tables (`compute_axial_cis`) in real form, f32, computed as
/// PyTorch does: for a head dim `dim`, `dim / 4` frequencies
/// `1 / theta^(4i / dim)`; token `t` sits at `x = t mod end_x`,
/// `y = t div end_x`; the first `dim / 4` pairs rotate by `x · f_i`, the next
/// `dim / 4` by `y · f_i`. Returns `(cos, sin)`, each `end_x · end_y` rows of
/// `dim / 2` values (row-major).
pub fn compute_axial_rope(
    dim: usize,
    end_x: usize,
    end_y: usize,
    theta: f64,
) -> (Vec<f32>, Vec<f32>) {
    let quarter = dim / 4;
    let half = dim / 2;
    let freqs: Vec<f32> = (0..quarter)
        .map(|i| 1.0f32 / (theta as f32).powf((4 * i) as f32 / dim as f32))
        .collect();
    let n = end_x * end_y;
    let mut cos = vec![0f32; n * half];
    let mut sin = vec![0f32; n * half];
    for t in 0..n {
        let tx = (t % end_x) as f32;
        let ty = (t / end_x) as f32;
        let (c, s) = (
            &mut cos[t * half..(t + 1) * half],
            &mut sin[t * half..(t + 1) * half],
        );
        for (i, f) in freqs.iter().enumerate() {
            let ax = tx * f;
            let ay = ty * f;
            c[i] = ax.cos();
            s[i] = ax.sin();
            c[quarter + i] = ay.cos();
            s[quarter + i] = ay.sin();
        }
    }
    (cos, sin)
}

/// Side of the square token map of `n` tokens (`sqrt(n)`, as the official
/// rebuilds its tables), or an error when `n` is not a square.
pub fn square_side(n: usize) -> Result<usize> {
    let s = (n as f64).sqrt().round() as usize;
    if s * s != n {
        candle_core::bail!("RoPE attention: {n} query tokens do not form a square map");
    }
    Ok(s)
}

#[derive(Debug)]
struct RopeEntry {
    n: usize,
    dim: usize,
    theta_bits: u64,
    location: DeviceLocation,
    cos: Tensor,
    sin: Tensor,
}

/// Rotary tables shared by attention layers, built once per
/// (token count, head dim, theta, device): the official rebuilds its table
/// from `sqrt(token count)` whenever the count differs from `feat_sizes`.
#[derive(Debug, Clone, Default)]
pub struct RopeCache {
    entries: Arc<Mutex<Vec<RopeEntry>>>,
}

impl RopeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tables `(cos, sin)`, each `[n, dim / 2]` f32 on `device`, for a square
    /// map of `n` tokens.
    pub fn tables(
        &self,
        n: usize,
        dim: usize,
        theta: f64,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let location = device.location();
        let theta_bits = theta.to_bits();
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| candle_core::Error::msg("RoPE cache poisoned"))?;
        if let Some(e) = entries.iter().find(|e| {
            e.n == n && e.dim == dim && e.theta_bits == theta_bits && e.location == location
        }) {
            return Ok((e.cos.clone(), e.sin.clone()));
        }
        let side = square_side(n)?;
        let (c, s) = compute_axial_rope(dim, side, side, theta);
        let cos = Tensor::from_vec(c, (n, dim / 2), device)?;
        let sin = Tensor::from_vec(s, (n, dim / 2), device)?;
        entries.push(RopeEntry {
            n,
            dim,
            theta_bits,
            location,
            cos: cos.clone(),
            sin: sin.clone(),
        });
        Ok((cos, sin))
    }
}

/// Keys of one memory as one cross-attention call sees them: projected,
/// unrotated keys `k` `[B, H, n, dh]`, and an optional `offset` `[B, H, 1,
/// dh]` added to each (a memory slot's projected temporal encoding, see
/// [`MemoryAttention::key_offsets`]).
#[derive(Debug, Clone)]
pub struct KeyPart {
    /// Projected, unrotated keys `[B, H, n, dh]`.
    pub k: Tensor,
    /// Added to every key before rotation, `[B, H, 1, dh]`.
    pub offset: Option<Tensor>,
}

impl KeyPart {
    /// Keys with no offset.
    pub fn plain(k: Tensor) -> Self {
        Self { k, offset: None }
    }
}

/// `apply_rotary_enc` on one tensor: `x` `[B, H, L, d]`, tables `[n, d / 2]`.
/// The first `n_rope` tokens are rotated, token `l` by table row `l mod n`
/// (`repeat_freqs_k`: several memories share the query's positions); the
/// remaining tokens (object pointers, `num_k_exclude_rope`) pass unchanged.
/// `n_rope` must be a multiple of `n`.
pub fn apply_rotary_enc(x: &Tensor, cos: &Tensor, sin: &Tensor, n_rope: usize) -> Result<Tensor> {
    rotate_parts(&[KeyPart::plain(x.clone())], cos, sin, n_rope, false)
}

/// The keys of `parts` (each plus its offset) concatenated along the token
/// axis and rotated as [`apply_rotary_enc`] rotates one tensor: one pass on
/// CPU f32 data (offset, concatenation and rotation fused), candle ops
/// elsewhere. Returns `[B, H, Σn, dh]` in the first part's dtype.
///
/// With `transposed` set, f32 keys rotated on the CPU are written channel
/// by channel: the result is the transposed view of contiguous `[B, H, dh,
/// Σn]` data (same values), the order in which the fused attention's f32
/// score GEMM reads keys without repacking them
/// ([`crate::modeling::kernels::attention::Layout::bhdl`]). Elsewhere the
/// flag changes nothing.
pub fn rotate_parts(
    parts: &[KeyPart],
    cos: &Tensor,
    sin: &Tensor,
    n_rope: usize,
    transposed: bool,
) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        candle_core::bail!("RoPE: no keys");
    };
    let (b, h, _, d) = first.k.dims4()?;
    let mut l = 0;
    for p in parts {
        let (pb, ph, pn, pd) = p.k.dims4()?;
        let off_ok = match &p.offset {
            Some(o) => o.dims4()? == (b, h, 1, d),
            None => true,
        };
        if (pb, ph, pd) != (b, h, d) || !off_ok {
            candle_core::bail!(
                "RoPE: key parts {:?} and {:?} do not match",
                first.k.shape(),
                p.k.shape()
            );
        }
        l += pn;
    }
    let (n, half) = cos.dims2()?;
    if half * 2 != d || sin.dims2()? != (n, half) {
        candle_core::bail!("RoPE: tables {:?} do not fit head dim {d}", cos.shape());
    }
    if n_rope > l || n == 0 || !n_rope.is_multiple_of(n) {
        candle_core::bail!(
            "RoPE: {n_rope} rotated tokens of {l} are not a multiple of the {n}-token map"
        );
    }
    if n_rope == 0 && parts.len() == 1 && first.offset.is_none() {
        return Ok(first.k.clone());
    }
    let dtype = first.k.dtype();
    let f32c = |t: &Tensor| -> Result<Tensor> { t.to_dtype(DType::F32)?.contiguous() };
    let cos = f32c(cos)?;
    let sin = f32c(sin)?;
    if crate::modeling::kernels::fast_cpu(&first.k) {
        // Channel-major output reads channel-major keys and tables (`[B·H,
        // dh, n]`, `[dh / 2, n]`); cached keys already are
        // ([`channel_major`]).
        let transposed = transposed && dtype == DType::F32;
        let (cos, sin) = if transposed {
            let t = |x: &Tensor| -> Result<Tensor> {
                crate::modeling::kernels::layout::transpose_last2(&x.unsqueeze(0)?)
            };
            (t(&cos)?, t(&sin)?)
        } else {
            (cos.clone(), sin.clone())
        };
        let ks = parts
            .iter()
            .map(|p| {
                if transposed {
                    channel_major(&p.k)
                } else {
                    f32c(&p.k)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let offs = parts
            .iter()
            .map(|p| p.offset.as_ref().map(f32c).transpose())
            .collect::<Result<Vec<_>>>()?;
        let out = {
            let guards: Vec<_> = ks.iter().map(|k| k.storage_and_layout()).collect();
            let og: Vec<_> = offs
                .iter()
                .map(|o| o.as_ref().map(|o| o.storage_and_layout()))
                .collect();
            let (cs, cl) = cos.storage_and_layout();
            let (ss, sl) = sin.storage_and_layout();
            let data: Option<Vec<RopePart>> = guards
                .iter()
                .zip(&og)
                .zip(&ks)
                .map(|(((st, ly), o), k)| {
                    let off = match o {
                        Some((os, ol)) => Some(cpu_f32(os, ol)?),
                        None => None,
                    };
                    let len = if transposed { k.dim(3) } else { k.dim(2) };
                    Some((cpu_f32(st, ly)?, len.ok()?, off))
                })
                .collect();
            match (data, cpu_f32(&cs, cl), cpu_f32(&ss, sl)) {
                (Some(data), Some(cv), Some(sv)) => {
                    let geom = RopeGeom {
                        bh: b * h,
                        l,
                        d,
                        n,
                        n_rope,
                    };
                    Some(if transposed {
                        (rope_cpu_t(&data, geom, cv, sv), true)
                    } else {
                        (rope_cpu(&data, geom, cv, sv), false)
                    })
                }
                _ => None,
            }
        };
        match out {
            Some((out, true)) => {
                return Tensor::from_vec(out, (b, h, d, l), first.k.device())?.transpose(2, 3);
            }
            Some((out, false)) => {
                return Tensor::from_vec(out, (b, h, l, d), first.k.device())?.to_dtype(dtype);
            }
            None => {}
        }
    }
    let shifted = parts
        .iter()
        .map(|p| match &p.offset {
            Some(o) => f32c(&p.k)?.broadcast_add(&o.to_dtype(DType::F32)?),
            None => f32c(&p.k),
        })
        .collect::<Result<Vec<_>>>()?;
    let xf = Tensor::cat(&shifted, 2)?;
    if n_rope == 0 {
        return xf.to_dtype(dtype);
    }
    rope_generic(&xf, &cos, &sin, n_rope)?.to_dtype(dtype)
}

/// The data of keys `k` `[B, H, L, dh]` (f32) channel by channel: contiguous
/// `[B, H, dh, L]`, whose transposed view is `k`. Keys that already are
/// such a view (as [`MemoryAttentionLayer::project_memory`] caches them for
/// the f32 CPU attention) are returned as they are, without a copy.
pub fn channel_major(k: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = k.dims4()?;
    let kt = k.transpose(2, 3)?;
    if k.dtype() == DType::F32 && kt.is_contiguous() {
        return Ok(kt);
    }
    if !crate::modeling::kernels::fast_cpu(k) {
        return kt.to_dtype(DType::F32)?.contiguous();
    }
    let rows = k
        .to_dtype(DType::F32)?
        .contiguous()?
        .reshape((b * h, l, d))?;
    crate::modeling::kernels::layout::transpose_last2(&rows)?.reshape((b, h, d, l))
}

/// Device-independent rotation of f32 tensors: the leading tokens
/// are rotated as `n_rope / n` maps of `n` tokens by candle's interleaved
/// rotary op, the rest is appended unchanged.
fn rope_generic(xf: &Tensor, cos: &Tensor, sin: &Tensor, n_rope: usize) -> Result<Tensor> {
    let (b, h, l, d) = xf.dims4()?;
    let n = cos.dim(0)?;
    let r = n_rope / n;
    let head = xf
        .narrow(2, 0, n_rope)?
        .contiguous()?
        .reshape((b, h * r, n, d))?;
    let rotated = candle_nn::rotary_emb::rope_i(&head, cos, sin)?.reshape((b, h, n_rope, d))?;
    if n_rope < l {
        Tensor::cat(&[rotated, xf.narrow(2, n_rope, l - n_rope)?], 2)
    } else {
        Ok(rotated)
    }
}

/// One input of [`rope_cpu`]: keys, their token count, their offset.
type RopePart<'a> = (&'a [f32], usize, Option<&'a [f32]>);

/// Sizes of one rotation: `bh` batch·heads of `l` tokens of `d` channels,
/// the first `n_rope` tokens rotated by table row `t mod n`.
#[derive(Debug, Clone, Copy)]
struct RopeGeom {
    bh: usize,
    l: usize,
    d: usize,
    n: usize,
    n_rope: usize,
}

/// Writes token `t` of batch·head `bhi` of `parts` (plus its part's offset),
/// rotated when `t < n_rope`, into `o` (`d` values); `shifted` is `d` values
/// of scratch. `starts`: each part's first token.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rope_row(
    parts: &[RopePart],
    starts: &[usize],
    g: RopeGeom,
    cos: &[f32],
    sin: &[f32],
    bhi: usize,
    t: usize,
    o: &mut [f32],
    shifted: &mut [f32],
) {
    let (d, half) = (g.d, g.d / 2);
    // The part holding token t (few parts: a linear scan).
    let pi = starts.iter().rposition(|&s| s <= t).unwrap_or(0);
    let (data, len, off) = parts[pi];
    let src = &data[(bhi * len + t - starts[pi]) * d..][..d];
    let src = match off {
        Some(off) => {
            for ((x, &a), &b) in shifted.iter_mut().zip(src).zip(&off[bhi * d..][..d]) {
                *x = a + b;
            }
            &shifted[..]
        }
        None => src,
    };
    if t >= g.n_rope {
        o.copy_from_slice(src);
        return;
    }
    let row = t % g.n;
    let c = &cos[row * half..(row + 1) * half];
    let sn = &sin[row * half..(row + 1) * half];
    for (((op, sp), &cv), &sv) in o
        .chunks_exact_mut(2)
        .zip(src.chunks_exact(2))
        .zip(c)
        .zip(sn)
    {
        let (x0, x1) = (sp[0], sp[1]);
        op[0] = x0 * cv - x1 * sv;
        op[1] = x0 * sv + x1 * cv;
    }
}

/// First token of each part.
fn part_starts(parts: &[RopePart]) -> Vec<usize> {
    parts
        .iter()
        .scan(0, |acc, p| {
            let s = *acc;
            *acc += p.1;
            Some(s)
        })
        .collect()
}

/// CPU kernel of [`rotate_parts`]: `parts` are (contiguous `[BH, nᵢ, d]`
/// keys, `nᵢ`, optional `[BH, d]` offset); the output is `[BH, l, d]`,
/// `l = Σnᵢ`, token `t < n_rope` rotated by table row `t mod n`.
fn rope_cpu(parts: &[RopePart], g: RopeGeom, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let (bh, l, d) = (g.bh, g.l, g.d);
    let starts = part_starts(parts);
    // Tasks of whole tokens (rows of `d`) over every batch·head, all threads.
    let per = crate::modeling::kernels::parallel::rows_per_chunk(bh * l, d, 1 << 15);
    crate::modeling::kernels::parallel::par_chunks_new(bh * l * d, per * d, |i, dst| {
        let mut shifted = vec![0f32; d];
        let first = i * per;
        for (r, o) in dst.chunks_exact_mut(d).enumerate() {
            let (bhi, t) = ((first + r) / l, (first + r) % l);
            rope_row(parts, &starts, g, cos, sin, bhi, t, o, &mut shifted);
        }
    })
}

simd_fn! {
    /// One channel pair of a run of tokens, channel-major: `y0 + i·y1 =
    /// ((x0 + o0) + i·(x1 + o1))·(c + i·s)` element by element (`c`, `s`
    /// empty: no rotation), with the same f32 operations (and so the same
    /// results) as [`rope_row`]. Writes `x0.len()` values at `y0` and `y1`
    /// through raw pointers: the output is not yet initialised.
    fn rotate_pair_run[rotate_pair_run_at](
        x0: &[f32],
        x1: &[f32],
        o0: f32,
        o1: f32,
        c: &[f32],
        s: &[f32],
        y0: SyncPtr,
        y1: SyncPtr,
    ) {
        let n = x0.len();
        let x1 = &x1[..n];
        let (y0, y1) = (y0.ptr(), y1.ptr());
        if c.is_empty() {
            for i in 0..n {
                // SAFETY: the caller owns `n` writable values at y0 and y1.
                unsafe {
                    y0.add(i).write(x0[i] + o0);
                    y1.add(i).write(x1[i] + o1);
                }
            }
            return;
        }
        let (c, s) = (&c[..n], &s[..n]);
        for i in 0..n {
            let (a, b) = (x0[i] + o0, x1[i] + o1);
            // SAFETY: as above.
            unsafe {
                y0.add(i).write(a * c[i] - b * s[i]);
                y1.add(i).write(a * s[i] + b * c[i]);
            }
        }
    }
}

/// [`rope_cpu`] on channel-major data: `parts` are (contiguous `[BH, d,
/// nᵢ]` keys, `nᵢ`, optional `[BH, d]` offset), the tables transposed
/// (`[d / 2, n]`), the output `[BH, d, l]`. One task per channel pair of a
/// batch·head, every row read and written once, contiguously. Offsets are
/// added to the excluded tokens too, as [`rope_cpu`] does.
fn rope_cpu_t(parts: &[RopePart], g: RopeGeom, cos_t: &[f32], sin_t: &[f32]) -> Vec<f32> {
    let (l, d, n, n_rope) = (g.l, g.d, g.n, g.n_rope);
    let starts = part_starts(parts);
    let half = d / 2;
    let len = g.bh * d * l;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let p = SyncPtr(out.as_mut_ptr());
    par_tasks(g.bh * half, |task| {
        let (bhi, pair) = (task / half, task % half);
        // SAFETY: rows 2·pair and 2·pair + 1 of batch·head bhi belong to
        // this task only and lie inside the allocation.
        let (y0, y1) = unsafe {
            let y0 = p.ptr().add((bhi * d + 2 * pair) * l);
            (y0, y0.add(l))
        };
        for (&(data, plen, off), &start) in parts.iter().zip(&starts) {
            let row = |c: usize| &data[(bhi * d + c) * plen..][..plen];
            let (x0, x1) = (row(2 * pair), row(2 * pair + 1));
            let (o0, o1) = off.map_or((0.0, 0.0), |o| {
                (o[bhi * d + 2 * pair], o[bhi * d + 2 * pair + 1])
            });
            // Tokens start..start + plen: rotated runs (table rows t mod n,
            // contiguous until the next multiple of n), then the excluded.
            let mut t = start;
            while t < start + plen {
                let i = t - start;
                let (run, tab) = if t >= n_rope {
                    (plen - i, None)
                } else {
                    let r = t % n;
                    let run = (n - r).min(start + plen - t).min(n_rope - t);
                    (run, Some(pair * n + r))
                };
                let (c, s) = match tab {
                    Some(tab) => (&cos_t[tab..tab + run], &sin_t[tab..tab + run]),
                    None => (&[][..], &[][..]),
                };
                // SAFETY: tokens t..t + run of the two rows (t + run <= l).
                let (z0, z1) = unsafe { (SyncPtr(y0.add(t)), SyncPtr(y1.add(t))) };
                rotate_pair_run(&x0[i..i + run], &x1[i..i + run], o0, o1, c, s, z0, z1);
                t += run;
            }
        }
    });
    // SAFETY: the tasks above wrote every row of every batch·head (each
    // part's tokens, the parts covering 0..l), and the pool joined.
    unsafe { out.set_len(len) };
    out
}

/// Whether rotated keys should be written transposed
/// ([`rotate_parts`]): when the attention's scores run as f32 GEMMs, i.e.
/// unless the CPU bf16 mode (`bf16`) has its bf16 tiles, which read keys
/// row by row.
fn keys_transposed(bf16: bool) -> bool {
    !(bf16 && crate::modeling::kernels::bf16::available())
}

/// `softmax(q kᵀ / sqrt(d)) v` on `[B, H, L, d]` tensors: the fused, tiled
/// kernel on CPU tensors, candle ops elsewhere
/// ([`crate::modeling::kernels::attention::sdpa`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    crate::modeling::kernels::attention::sdpa(q, k, v)
}

/// Attention with rotary position encoding (`RoPEAttention`): `q_proj`,
/// `k_proj`, `v_proj` (from `kv_in_dim`), `out_proj`, `num_heads` heads of
/// `embedding_dim / downsample_rate / num_heads` channels.
#[derive(Debug, Clone)]
pub struct RoPEAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    rope_theta: f64,
    rope_k_repeat: bool,
    rope: RopeCache,
}

impl RoPEAttention {
    /// Loads the four projections under `vb`; rotary tables come from `rope`.
    pub fn new(cfg: &RoPEAttentionConfig, rope: RopeCache, vb: VarBuilder) -> Result<Self> {
        let internal = cfg.embedding_dim / cfg.downsample_rate.max(1);
        let kv_in = cfg.kv_in_dim.unwrap_or(cfg.embedding_dim);
        if cfg.num_heads == 0
            || !internal.is_multiple_of(cfg.num_heads)
            || !(internal / cfg.num_heads).is_multiple_of(4)
        {
            candle_core::bail!(
                "RoPE attention: head dim of {internal} channels over {} heads must be a multiple of 4",
                cfg.num_heads
            );
        }
        Ok(Self {
            q_proj: linear(cfg.embedding_dim, internal, vb.pp("q_proj"))?,
            k_proj: linear(kv_in, internal, vb.pp("k_proj"))?,
            v_proj: linear(kv_in, internal, vb.pp("v_proj"))?,
            out_proj: linear(internal, cfg.embedding_dim, vb.pp("out_proj"))?,
            num_heads: cfg.num_heads,
            head_dim: internal / cfg.num_heads,
            rope_theta: cfg.rope_theta,
            rope_k_repeat: cfg.rope_k_repeat,
            rope,
        })
    }

    /// `[B, L, H·dh]` → `[B, H, L, dh]` (contiguous).
    fn separate_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.reshape((b, l, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Projected, unrotated queries `[B, H, Lq, dh]` of `q` `[B, Lq, C]`.
    pub fn project_q(&self, q: &Tensor) -> Result<Tensor> {
        self.separate_heads(&self.q_proj.forward(&q.contiguous()?)?)
    }

    /// `k_proj`'s weight alone (no bias) applied to `t` `[B, 1, kv_in_dim]`,
    /// as heads `[B, H, 1, dh]`: the change of every projected key when `t` is
    /// added to every key token (the projection is linear).
    pub fn project_k_offset(&self, t: &Tensor) -> Result<Tensor> {
        let w = self.k_proj.weight().t()?;
        self.separate_heads(&t.contiguous()?.broadcast_matmul(&w)?)
    }

    /// Projected, unrotated keys `[B, H, Lk, dh]` of `k` `[B, Lk, kv_in_dim]`
    /// (what a memory cache keeps).
    pub fn project_k(&self, k: &Tensor) -> Result<Tensor> {
        self.separate_heads(&self.k_proj.forward(&k.contiguous()?)?)
    }

    /// Rotary tables for `lq` queries.
    fn tables(&self, lq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        self.rope.tables(lq, self.head_dim, self.rope_theta, device)
    }

    /// Number of rotated keys of `lk` with `num_k_exclude_rope` excluded,
    /// checked against `lq` queries.
    fn rotated_keys(&self, lq: usize, lk: usize, num_k_exclude_rope: usize) -> Result<usize> {
        if num_k_exclude_rope > lk {
            candle_core::bail!("RoPE attention: {num_k_exclude_rope} excluded keys of {lk}");
        }
        let n_rope = lk - num_k_exclude_rope;
        if n_rope != lq && !self.rope_k_repeat {
            candle_core::bail!(
                "RoPE attention: {n_rope} rotated keys for {lq} queries without rope_k_repeat"
            );
        }
        Ok(n_rope)
    }

    /// `[B, H, Lq, dh]` heads → `out_proj` of `[B, Lq, H·dh]`.
    fn merge_heads(&self, out: &Tensor) -> Result<Tensor> {
        let (b, _, lq, _) = out.dims4()?;
        let out =
            out.transpose(1, 2)?
                .contiguous()?
                .reshape((b, lq, self.num_heads * self.head_dim))?;
        self.out_proj.forward(&out)
    }

    /// Rotates projected queries and keys (all but the last
    /// `num_k_exclude_rope` keys), attends and applies `out_proj`:
    /// `[B, H, Lq, dh]`, `[B, H, Lk, dh]` ×2 → `[B, Lq, C]`.
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        num_k_exclude_rope: usize,
    ) -> Result<Tensor> {
        let lq = q.dim(2)?;
        let n_rope = self.rotated_keys(lq, k.dim(2)?, num_k_exclude_rope)?;
        let (cos, sin) = self.tables(lq, q.device())?;
        let q = apply_rotary_enc(q, &cos, &sin, lq)?;
        // Row-major keys: transposing these freshly projected keys costs
        // what the GEMM's packing saves (measured on the self-attention at
        // 512), unlike the cached memory keys of `attend_memory`.
        let k = apply_rotary_enc(k, &cos, &sin, n_rope)?;
        // In the CPU bf16 mode (packed projections) the two attention
        // products run in bf16 too.
        let bf16 = self.q_proj.is_bf16();
        self.merge_heads(&crate::modeling::kernels::attention::sdpa_in(
            &q, &k, v, bf16,
        )?)
    }

    /// Cross-attention to a memory: projected, unrotated queries `q`
    /// `[B, H, Lq, dh]`; keys from `parts` ([`rotate_parts`]; all but the last
    /// `num_k_exclude_rope` rotated); `memory` `[B, Lk, kv_in_dim]`, the
    /// unprojected values.
    ///
    /// `v_proj` is applied after the attention: with weights `P` (rows
    /// summing to 1), `P (M W_vᵀ + b) = (P M) W_vᵀ + b`, so each head
    /// attends over the `kv_in_dim`-wide memory (64 channels against 256 in
    /// SAM 2: a quarter of the `PV` product) and only the `Lq` outputs are
    /// projected, never the `Lk` memory tokens. Equal to [`Self::forward`]
    /// up to rounding.
    pub fn attend_memory(
        &self,
        q: &Tensor,
        parts: &[KeyPart],
        memory: &Tensor,
        num_k_exclude_rope: usize,
    ) -> Result<Tensor> {
        let (b, h, lq, _) = q.dims4()?;
        let (bm, lk, cm) = memory.dims3()?;
        let total: usize = parts.iter().map(|p| p.k.dim(2)).sum::<Result<usize>>()?;
        if bm != b || total != lk {
            candle_core::bail!(
                "RoPE attention: memory {:?} for {total} keys and batch {b}",
                memory.shape()
            );
        }
        let n_rope = self.rotated_keys(lq, lk, num_k_exclude_rope)?;
        let (cos, sin) = self.tables(lq, q.device())?;
        let q = apply_rotary_enc(q, &cos, &sin, lq)?;
        let bf16 = self.q_proj.is_bf16();
        let k = rotate_parts(parts, &cos, &sin, n_rope, keys_transposed(bf16))?;
        let v = memory
            .to_dtype(q.dtype())?
            .unsqueeze(1)?
            .broadcast_as((b, h, lk, cm))?;
        let pm = crate::modeling::kernels::attention::sdpa_in(&q, &k, &v, bf16)?; // [B, H, Lq, Cm]
        if h == 1 {
            // One head: the layer itself (its fast CPU paths included).
            let out = self.v_proj.forward(&pm.squeeze(1)?)?;
            return self.out_proj.forward(&out);
        }
        // Head h's values are rows h·dh.. of v_proj: [H, Cm, dh].
        let w = self
            .v_proj
            .weight()
            .to_dtype(pm.dtype())?
            .reshape((h, self.head_dim, cm))?
            .transpose(1, 2)?
            .unsqueeze(0)?;
        let mut out = pm.broadcast_matmul(&w)?;
        if let Some(bias) = self.v_proj.bias() {
            out = out.broadcast_add(&bias.to_dtype(out.dtype())?.reshape((
                1,
                h,
                1,
                self.head_dim,
            ))?)?;
        }
        self.merge_heads(&out)
    }

    /// `forward(q, k, v, num_k_exclude_rope)`: `q` `[B, Lq, C]`, `k`, `v`
    /// `[B, Lk, kv_in_dim]` → `[B, Lq, C]`. `Lq` must be a square map.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        num_k_exclude_rope: usize,
    ) -> Result<Tensor> {
        let qh = self.project_q(q)?;
        let kh = self.project_k(k)?;
        let vh = self.separate_heads(&self.v_proj.forward(&v.contiguous()?)?)?;
        self.attend(&qh, &kh, &vh, num_k_exclude_rope)
    }
}

/// Projected cross-attention keys of one layer for one memory, `[B, H, M,
/// dh]`, unrotated (the values are the memory itself, see
/// [`RoPEAttention::attend_memory`]). For the f32 CPU attention the keys are
/// stored channel-major (the transposed view of `[B, H, dh, M]` data,
/// [`channel_major`]).
#[derive(Debug, Clone)]
pub struct ProjectedMemory {
    /// Keys (unrotated).
    pub k: Tensor,
}

impl ProjectedMemory {
    /// These keys shifted by `offset` `[B, H, 1, dh]` (see
    /// [`MemoryAttention::key_offsets`]); `None` leaves them as they are.
    pub fn with_key_offset(&self, offset: Option<&Tensor>) -> KeyPart {
        KeyPart {
            k: self.k.clone(),
            offset: offset.cloned(),
        }
    }
}

/// One layer (`MemoryAttentionLayer`), pre-norm: self-attention, cross-attention
/// to the memory, MLP, each added to the residual stream.
#[derive(Debug, Clone)]
pub struct MemoryAttentionLayer {
    self_attn: RoPEAttention,
    cross_attn_image: RoPEAttention,
    /// `linear1` / `linear2`, weights stored transposed for the fused MLP
    /// kernel (`backbones::cpu::mlp_residual`).
    linear1: TLinear,
    linear2: TLinear,
    norms: [(Tensor, Tensor); 3],
    act: Activation,
    pos_enc_at_attn: bool,
    pos_enc_at_cross_attn_keys: bool,
    pos_enc_at_cross_attn_queries: bool,
}

impl MemoryAttentionLayer {
    /// Loads `self_attn`, `cross_attn_image`, `linear1/2`, `norm1/2/3` under `vb`.
    pub fn new(
        cfg: &MemoryAttentionLayerConfig,
        d_model: usize,
        rope: RopeCache,
        vb: VarBuilder,
    ) -> Result<Self> {
        let norm = |name: &str| -> Result<(Tensor, Tensor)> {
            let v = vb.pp(name);
            Ok((v.get(d_model, "weight")?, v.get(d_model, "bias")?))
        };
        Ok(Self {
            self_attn: RoPEAttention::new(&cfg.self_attention, rope.clone(), vb.pp("self_attn"))?,
            cross_attn_image: RoPEAttention::new(
                &cfg.cross_attention,
                rope,
                vb.pp("cross_attn_image"),
            )?,
            linear1: TLinear::new(d_model, cfg.dim_feedforward, vb.pp("linear1"))?,
            linear2: TLinear::new(cfg.dim_feedforward, d_model, vb.pp("linear2"))?,
            norms: [norm("norm1")?, norm("norm2")?, norm("norm3")?],
            act: cfg.activation,
            pos_enc_at_attn: cfg.pos_enc_at_attn,
            pos_enc_at_cross_attn_keys: cfg.pos_enc_at_cross_attn_keys,
            pos_enc_at_cross_attn_queries: cfg.pos_enc_at_cross_attn_queries,
        })
    }

    fn norm(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        layer_norm_last(x, &self.norms[i].0, &self.norms[i].1, LN_EPS)
    }

    /// Cross-attention keys (`memory + pos` when `pos_enc_at_cross_attn_keys`),
    /// projected: `memory`, `pos` `[B, M, Cm]`.
    pub fn project_memory(&self, memory: &Tensor, pos: &Tensor) -> Result<ProjectedMemory> {
        let k_in = if self.pos_enc_at_cross_attn_keys {
            (memory + pos)?
        } else {
            memory.clone()
        };
        let k = self.cross_attn_image.project_k(&k_in)?;
        // Stored channel by channel where the attention reads them so
        // (rotated each step in that order, [`rotate_parts`]).
        let att = &self.cross_attn_image;
        let k = if keys_transposed(att.q_proj.is_bf16())
            && crate::modeling::kernels::fast_cpu_f32(&k)
        {
            channel_major(&k)?.transpose(2, 3)?
        } else {
            k
        };
        Ok(ProjectedMemory { k })
    }

    /// What adding `t` `[B, 1, Cm]` to every position encoding of a memory
    /// changes in its projected keys (`[B, H, 1, dh]`); `None` when keys carry
    /// no position encoding.
    pub fn key_offset(&self, t: &Tensor) -> Result<Option<Tensor>> {
        if self.pos_enc_at_cross_attn_keys {
            self.cross_attn_image.project_k_offset(t).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The layer on batch-first `tgt`, `query_pos` `[B, L, C]` with the
    /// memory's keys projected (`keys`, in token order) and its values
    /// `memory` `[B, M, Cm]` unprojected.
    pub fn forward_projected(
        &self,
        tgt: &Tensor,
        query_pos: &Tensor,
        keys: &[KeyPart],
        memory: &Tensor,
        num_k_exclude_rope: usize,
    ) -> Result<Tensor> {
        // Self-attention.
        let t2 = self.norm(0, tgt)?;
        let qk = if self.pos_enc_at_attn {
            (&t2 + query_pos)?
        } else {
            t2.clone()
        };
        let tgt = (tgt + self.self_attn.forward(&qk, &qk, &t2, 0)?)?;
        // Cross-attention.
        let t2 = self.norm(1, &tgt)?;
        let q = if self.pos_enc_at_cross_attn_queries {
            (&t2 + query_pos)?
        } else {
            t2
        };
        let q = self.cross_attn_image.project_q(&q)?;
        let ca = self
            .cross_attn_image
            .attend_memory(&q, keys, memory, num_k_exclude_rope)?;
        let tgt = (tgt + ca)?;
        self.mlp_residual(&tgt)
    }

    /// `tgt + linear2(act(linear1(norm3(tgt))))`: on f32 CPU tensors one
    /// fused row-block kernel (the hidden activations stay in cache), candle
    /// ops elsewhere.
    fn mlp_residual(&self, tgt: &Tensor) -> Result<Tensor> {
        if crate::modeling::kernels::fast_cpu_f32(tgt) {
            if let (Ok((w1, b1)), Ok((w2, b2))) = (self.linear1.fast(), self.linear2.fast()) {
                let (ln_w, ln_b) = (
                    F32Ref::new(&self.norms[2].0)?,
                    F32Ref::new(&self.norms[2].1)?,
                );
                let c = ln_w.slice().len();
                let hidden = b1.slice().len();
                if tgt.dims().last() != Some(&c)
                    || w1.slice().len() != c * hidden
                    || w2.slice().len() != hidden * c
                    || b2.slice().len() != c
                {
                    candle_core::bail!(
                        "memory attention MLP: input {:?} does not fit",
                        tgt.shape()
                    );
                }
                let mut x = tgt.flatten_all()?.to_vec1::<f32>()?;
                let weights = MlpWeights {
                    ln_w: ln_w.slice(),
                    ln_b: ln_b.slice(),
                    eps: LN_EPS as f32,
                    w1: w1.slice(),
                    b1: b1.slice(),
                    w2: w2.slice(),
                    b2: b2.slice(),
                    act: self.act,
                    residual_last: true,
                };
                let n = x.len() / c;
                mlp_residual(&mut x, n, c, &weights);
                return Tensor::from_vec(x, tgt.shape(), tgt.device());
            }
        }
        let t2 = self.norm(2, tgt)?;
        let t2 = self
            .linear2
            .forward(&activation(&self.linear1.forward(&t2)?, self.act)?)?;
        tgt + t2
    }

    /// `forward(tgt, memory, pos, query_pos, num_k_exclude_rope)` on batch-first
    /// tensors: `tgt`, `query_pos` `[B, L, C]`, `memory`, `pos` `[B, M, Cm]`.
    pub fn forward(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        pos: &Tensor,
        query_pos: &Tensor,
        num_k_exclude_rope: usize,
    ) -> Result<Tensor> {
        let keys = [KeyPart::plain(self.project_memory(memory, pos)?.k)];
        self.forward_projected(tgt, query_pos, &keys, memory, num_k_exclude_rope)
    }
}

/// Memory attention (`MemoryAttention`): `layers.{i}` then the final `norm`.
#[derive(Debug, Clone)]
pub struct MemoryAttention {
    layers: Vec<MemoryAttentionLayer>,
    norm: (Tensor, Tensor),
    pos_enc_at_input: bool,
}

impl MemoryAttention {
    /// Loads `layers.{i}` and `norm` under `vb` (`memory_attention`).
    pub fn new(cfg: &MemoryAttentionConfig, vb: VarBuilder) -> Result<Self> {
        let rope = RopeCache::new();
        let layers = (0..cfg.num_layers)
            .map(|i| {
                MemoryAttentionLayer::new(
                    &cfg.layer,
                    cfg.d_model,
                    rope.clone(),
                    vb.pp("layers").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let n = vb.pp("norm");
        Ok(Self {
            layers,
            norm: (n.get(cfg.d_model, "weight")?, n.get(cfg.d_model, "bias")?),
            pos_enc_at_input: cfg.pos_enc_at_input,
        })
    }

    /// Projected cross-attention keys of every layer for `memory`,
    /// `memory_pos` `[M, B, Cm]` (sequence-first).
    pub fn project_memory(
        &self,
        memory: &Tensor,
        memory_pos: &Tensor,
    ) -> Result<Vec<ProjectedMemory>> {
        let memory = memory.transpose(0, 1)?.contiguous()?;
        let memory_pos = memory_pos.transpose(0, 1)?.contiguous()?;
        self.layers
            .iter()
            .map(|l| l.project_memory(&memory, &memory_pos))
            .collect()
    }

    /// Number of layers (the length of a projected memory).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Per layer, the change of projected keys when `t` `[B, 1, Cm]` (for
    /// example a temporal encoding `maskmem_tpos_enc[i]`) is added to a
    /// memory's position encoding: `k_proj(m + pos + t) = k_proj(m + pos) + W_k t`.
    /// This lets projected memories be cached without their slot's encoding.
    pub fn key_offsets(&self, t: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.layers.iter().map(|l| l.key_offset(t)).collect()
    }

    /// [`MemoryAttention::forward`] with the keys projected beforehand: per
    /// layer, the key parts of the memory in token order (from
    /// [`MemoryAttention::project_memory`], each with its slot's offset);
    /// `memory` `[M, B, Cm]` (sequence-first) gives the values.
    pub fn forward_projected(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        keys: &[Vec<KeyPart>],
        memory: &Tensor,
        num_obj_ptr_tokens: usize,
    ) -> Result<Tensor> {
        if keys.len() != self.layers.len() {
            candle_core::bail!(
                "memory attention: {} projected memories for {} layers",
                keys.len(),
                self.layers.len()
            );
        }
        let memory = memory.transpose(0, 1)?.contiguous()?;
        self.run(curr, curr_pos, |i, layer, output, query_pos| {
            layer.forward_projected(output, query_pos, &keys[i], &memory, num_obj_ptr_tokens)
        })
    }

    /// `forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)` on
    /// sequence-first tensors: `curr`, `curr_pos` `[L, B, C]` (L a square map),
    /// `memory`, `memory_pos` `[M, B, Cm]` (spatial memories first, then
    /// `num_obj_ptr_tokens` pointer tokens, which are not rotated) → `[L, B, C]`.
    /// Each layer's keys and values are projected when the layer runs.
    pub fn forward(
        &self,
        curr: &Tensor,
        memory: &Tensor,
        curr_pos: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptr_tokens: usize,
    ) -> Result<Tensor> {
        if curr.dim(1)? != memory.dim(1)? {
            candle_core::bail!(
                "memory attention: batch of curr {:?} and memory {:?} differ",
                curr.shape(),
                memory.shape()
            );
        }
        let memory = memory.transpose(0, 1)?.contiguous()?;
        let memory_pos = memory_pos.transpose(0, 1)?.contiguous()?;
        self.run(curr, curr_pos, |_, layer, output, query_pos| {
            layer.forward(output, &memory, &memory_pos, query_pos, num_obj_ptr_tokens)
        })
    }

    /// Input encoding, layers (batch-first), final norm, back to sequence-first.
    fn run(
        &self,
        curr: &Tensor,
        curr_pos: &Tensor,
        mut layer_fn: impl FnMut(usize, &MemoryAttentionLayer, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if curr.dims3()? != curr_pos.dims3()? {
            candle_core::bail!(
                "memory attention: curr {:?} vs curr_pos {:?}",
                curr.shape(),
                curr_pos.shape()
            );
        }
        let output = if self.pos_enc_at_input {
            (curr + (curr_pos * 0.1)?)?
        } else {
            curr.clone()
        };
        let mut output = output.transpose(0, 1)?.contiguous()?;
        let query_pos = curr_pos.transpose(0, 1)?.contiguous()?;
        for (i, layer) in self.layers.iter().enumerate() {
            output = layer_fn(i, layer, &output, &query_pos)?;
        }
        let normed = layer_norm_last(&output, &self.norm.0, &self.norm.1, LN_EPS)?;
        normed.transpose(0, 1)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generic (non-CPU) rotary path equals the CPU kernel, including
    /// repeated maps, excluded tokens and several heads.
    #[test]
    fn rope_generic_matches_cpu_kernel() -> Result<()> {
        let dev = Device::Cpu;
        let (c, s) = compute_axial_rope(16, 3, 3, 10000.0);
        let cos = Tensor::from_vec(c, (9, 8), &dev)?;
        let sin = Tensor::from_vec(s, (9, 8), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9 * 4 + 5, 16), &dev)?;
        for n_rope in [0, 9, 27, 36] {
            let fast = apply_rotary_enc(&x, &cos, &sin, n_rope)?;
            let slow = if n_rope == 0 {
                x.clone()
            } else {
                rope_generic(&x, &cos, &sin, n_rope)?
            };
            let d = (fast - slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "n_rope {n_rope}: {d}");
        }
        Ok(())
    }

    /// Keys rotated into the channel-major layout ([`rope_cpu_t`]) hold
    /// exactly the values of the row-major kernel ([`rope_cpu`]): parts of
    /// uneven sizes (not multiples of the map or of any block), with and
    /// without offsets, given row-major or channel-major, batch 2, 3 heads,
    /// excluded (object-pointer) tokens after the rotated ones; and the
    /// channel-major result is the transposed view of contiguous data.
    #[test]
    fn channel_major_rotation_matches_row_major() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, d, side) = (2usize, 3usize, 16usize, 3usize);
        let n = side * side;
        let (c, s) = compute_axial_rope(d, side, side, 10000.0);
        let cos = Tensor::from_vec(c, (n, d / 2), &dev)?;
        let sin = Tensor::from_vec(s, (n, d / 2), &dev)?;
        let part = |len: usize, off: bool, cm: bool| -> Result<KeyPart> {
            let k = Tensor::randn(0f32, 1.0, (b, h, len, d), &dev)?;
            let k = if cm {
                channel_major(&k)?.transpose(2, 3)?
            } else {
                k
            };
            let offset = if off {
                Some(Tensor::randn(0f32, 1.0, (b, h, 1, d), &dev)?)
            } else {
                None
            };
            Ok(KeyPart { k, offset })
        };
        // Rotated: 4 maps of 9 tokens split over parts of 9, 13 and 14
        // tokens (the maps straddle the parts); then 5 excluded tokens, 2
        // with an offset of their own.
        let parts = vec![
            part(9, true, true)?,
            part(13, false, false)?,
            part(14, true, false)?,
            part(3, false, true)?,
            part(2, true, false)?,
        ];
        let l = 9 + 13 + 14 + 3 + 2;
        for n_rope in [0, 18, 36] {
            let rows = rotate_parts(&parts, &cos, &sin, n_rope, false)?;
            let cols = rotate_parts(&parts, &cos, &sin, n_rope, true)?;
            assert_eq!(cols.dims(), &[b, h, l, d]);
            assert!(cols.transpose(2, 3)?.is_contiguous(), "n_rope {n_rope}");
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            assert_eq!(flat(&rows)?, flat(&cols)?, "n_rope {n_rope}");
        }
        Ok(())
    }

    /// `channel_major` of keys that already are channel-major is the same
    /// storage; of row-major keys, their transposed copy.
    #[test]
    fn channel_major_keeps_or_transposes() -> Result<()> {
        let dev = Device::Cpu;
        let k = Tensor::randn(0f32, 1.0, (2, 3, 7, 4), &dev)?;
        let cm = channel_major(&k)?;
        assert_eq!(cm.dims(), &[2, 3, 4, 7]);
        let want = k.transpose(2, 3)?.contiguous()?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        assert_eq!(flat(&cm)?, flat(&want)?);
        let view = cm.transpose(2, 3)?;
        let again = channel_major(&view)?;
        assert!(again.is_contiguous());
        assert_eq!(flat(&again)?, flat(&cm)?);
        Ok(())
    }

    /// The tensor-op layer norm (other devices) equals the CPU loop.
    #[test]
    fn layer_norm_paths_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (3, 5, 32), &dev)? + 20.0)?;
        let w = Tensor::randn(1f32, 0.1, 32, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 32, &dev)?;
        let fast = layer_norm_last(&x, &w, &b, 1e-5)?;
        let slow = layer_norm_last(
            &x.to_dtype(DType::F64)?,
            &w.to_dtype(DType::F64)?,
            &b.to_dtype(DType::F64)?,
            1e-5,
        )?;
        let d = (fast.to_dtype(DType::F64)? - slow)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(d < 1e-5, "{d}");
        Ok(())
    }

    /// `attend_memory` (values projected after attending; keys in parts
    /// with offsets) equals the plain cross-attention (`forward` on the
    /// assembled memory) for one and for several heads, with object-pointer
    /// tokens excluded from the rotation.
    #[test]
    fn attend_memory_matches_forward() -> Result<()> {
        use candle_nn::{VarBuilder, VarMap};
        let dev = Device::Cpu;
        for heads in [1usize, 2] {
            let cfg = RoPEAttentionConfig {
                embedding_dim: 32,
                num_heads: heads,
                downsample_rate: 1,
                kv_in_dim: Some(8),
                rope_theta: 10000.0,
                rope_k_repeat: true,
                feat_sizes: [4, 4],
            };
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let att = RoPEAttention::new(&cfg, RopeCache::new(), vb)?;
            // 2 memories of a 4x4 map, then 3 pointer tokens; batch 2.
            let (b, lq, n_ptr) = (2, 16, 3);
            let lk = 2 * lq + n_ptr;
            let q = Tensor::randn(0f32, 1.0, (b, lq, 32), &dev)?;
            let mem = Tensor::randn(0f32, 1.0, (b, lk, 8), &dev)?;
            let pos = Tensor::randn(0f32, 1.0, (b, lk, 8), &dev)?;
            let t = Tensor::randn(0f32, 1.0, (b, 1, 8), &dev)?;
            // Reference: the second memory's position encoding carries `t`.
            let shifted = Tensor::cat(
                &[
                    pos.narrow(1, 0, lq)?,
                    pos.narrow(1, lq, lq)?.broadcast_add(&t)?,
                    pos.narrow(1, 2 * lq, n_ptr)?,
                ],
                1,
            )?;
            let want = att.forward(&q, &(&mem + &shifted)?, &mem, n_ptr)?;
            let k = att.project_k(&(&mem + &pos)?)?;
            let offset = att.separate_heads(&t.broadcast_matmul(&att.k_proj.weight().t()?)?)?;
            let parts = [
                KeyPart::plain(k.narrow(2, 0, lq)?),
                KeyPart {
                    k: k.narrow(2, lq, lq)?,
                    offset: Some(offset),
                },
                KeyPart::plain(k.narrow(2, 2 * lq, n_ptr)?),
            ];
            let got = att.attend_memory(&att.project_q(&q)?, &parts, &mem, n_ptr)?;
            let d = (&got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "{heads} heads: {d}");
            // The same keys stored channel-major (as cached): the same result.
            let parts_cm = parts
                .iter()
                .map(|p| {
                    Ok(KeyPart {
                        k: channel_major(&p.k)?.transpose(2, 3)?,
                        offset: p.offset.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let got_cm = att.attend_memory(&att.project_q(&q)?, &parts_cm, &mem, n_ptr)?;
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            assert_eq!(flat(&got)?, flat(&got_cm)?, "{heads} heads");
            // A memory that does not match the keys is an error.
            assert!(att
                .attend_memory(
                    &att.project_q(&q)?,
                    &parts,
                    &mem.narrow(1, 0, lk - 1)?,
                    n_ptr
                )
                .is_err());
        }
        Ok(())
    }
}
