//! Fused, tiled attention `softmax(scale · q kᵀ) v` that never holds the
//! whole score matrix.
//!
//! Each task takes one (batch·head, block of [`Q_BLOCK`] queries) and walks
//! the keys in blocks of [`K_BLOCK`]: `S = Q_blk K_blkᵀ` (a `Q_BLOCK × K_BLOCK`
//! tile that stays in L2), an online softmax (running maximum `m` and running
//! sum `l` per query; when the maximum grows, the accumulated output and sum
//! are rescaled by `e^{scale·(m_old − m_new)}`), then `O += P V_blk`. Outputs
//! are accumulated in f32, the sums `l` in f64 (as `kernels::softmax` does, for
//! the same reason), and divided by `l` at the end. Tasks run on the kernels'
//! thread pool (`kernels::parallel`).
//!
//! This is the arithmetic of PyTorch's CPU `scaled_dot_product_attention`
//! (its flash kernel also tiles and rescales), and it removes the score
//! matrix's memory traffic: at 512 a tracking step's cross-attention scores
//! are 1024 × 7232 floats (30 MB) per layer.
//!
//! The two tile products are behind [`BlockProducts`], so that another
//! arithmetic (bf16 dot products with f32 accumulation) can replace the f32
//! GEMMs without touching the softmax.

use candle_core::{DType, Result, Tensor};

use super::gemm::sgemm;
use super::math::exp;
use super::parallel::{par_tasks, with_scratch, SyncPtr};
use super::simd::simd_fn;
use super::softmax::{exp_sub_sum, row_max};

/// Most queries per task. Each key/value block that the GEMM packs serves
/// this many queries, so larger is better until the tiles leave L2: measured
/// on the tracking step's cross-attention (1024 × 7232 keys, d = 256) on one
/// Zen 4 core, 64 → 69 GFLOP/s, 128 → 80, 256 → 90, 512 → 96 (its 2048²
/// GEMM: 100).
pub const Q_BLOCK: usize = 512;

/// Keys per block (128, 256, 512, 1024 measured within 5 %; 256 best with
/// 512 queries): the score tile is `Q_BLOCK × K_BLOCK` f32 (512 KB).
pub const K_BLOCK: usize = 256;

/// Queries per task for `bh` batch·heads of `lq` queries: at most
/// [`Q_BLOCK`], and small enough that every thread gets a task (equal blocks).
fn q_block(bh: usize, lq: usize) -> usize {
    let per_bh = super::parallel::num_threads().div_ceil(bh.max(1)).max(1);
    let blocks = per_bh.max(lq.div_ceil(Q_BLOCK));
    lq.div_ceil(blocks).clamp(1, Q_BLOCK)
}

/// The two products of a tile, on row-major f32 operands with row strides.
/// Implementations must be thread-safe (one instance serves every task).
pub trait BlockProducts: Sync {
    /// `s[i, j] = Σ_c q[i, c] · k[j, c]` for `i < m`, `j < n`, `c < d`.
    ///
    /// # Safety
    /// `q` addresses `m` rows of `d` values (row stride `ldq`), `k` `n` rows of
    /// `d` values (stride `ldk`), `s` `m` rows of `n` writable values (stride
    /// `lds`), not overlapping the inputs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores(
        &self,
        m: usize,
        n: usize,
        d: usize,
        q: *const f32,
        ldq: usize,
        k: *const f32,
        ldk: usize,
        s: *mut f32,
        lds: usize,
    );

    /// [`BlockProducts::scores`] with the keys stored transposed:
    /// `s[i, j] = Σ_c q[i, c] · kt[c, j]`, row `c` of `kt` (channel `c` of
    /// the `n` keys) at `kt + c · ldkt`. Keys in this order are what an f32
    /// GEMM wants for `q kᵀ` (it packs contiguous runs of keys instead of
    /// gathering one channel from every key row); by default they are
    /// gathered into rows and passed to [`BlockProducts::scores`].
    ///
    /// # Safety
    /// As [`BlockProducts::scores`], `kt` addressing `d` rows of `n` values
    /// (stride `ldkt`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores_kt(
        &self,
        m: usize,
        n: usize,
        d: usize,
        q: *const f32,
        ldq: usize,
        kt: *const f32,
        ldkt: usize,
        s: *mut f32,
        lds: usize,
    ) {
        KEY_ROWS.with(|rows| {
            let mut rows = rows.borrow_mut();
            rows.resize(n * d, 0.0);
            for c in 0..d {
                // SAFETY: the caller gives `d` rows of `n` keys at `ldkt`.
                let src = unsafe { core::slice::from_raw_parts(kt.add(c * ldkt), n) };
                for (j, &x) in src.iter().enumerate() {
                    rows[j * d + c] = x;
                }
            }
            // SAFETY: forwarded from the caller; `rows` holds n × d keys.
            unsafe { self.scores(m, n, d, q, ldq, rows.as_ptr(), d, s, lds) }
        })
    }

    /// `o[i, c] += Σ_j p[i, j] · v[j, c]` for `i < m`, `j < n`, `c < dv`.
    ///
    /// # Safety
    /// As [`BlockProducts::scores`]: `p` `m × n` (stride `ldp`), `v` `n × dv`
    /// (stride `ldv`), `o` `m × dv` writable (stride `ldo`), `o` disjoint from
    /// the inputs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn accumulate(
        &self,
        m: usize,
        n: usize,
        dv: usize,
        p: *const f32,
        ldp: usize,
        v: *const f32,
        ldv: usize,
        o: *mut f32,
        ldo: usize,
    );
}

thread_local! {
    /// [`BlockProducts::scores_kt`]' keys gathered into rows (the default
    /// implementation), reused between calls.
    static KEY_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// f32 tile products by the `gemm` crate (single-threaded per task; its
/// AVX-512 / AVX2 / scalar kernel is chosen at run time).
#[derive(Debug, Clone, Copy, Default)]
pub struct F32Gemm;

impl BlockProducts for F32Gemm {
    unsafe fn scores(
        &self,
        m: usize,
        n: usize,
        d: usize,
        q: *const f32,
        ldq: usize,
        k: *const f32,
        ldk: usize,
        s: *mut f32,
        lds: usize,
    ) {
        // One product whatever the shape. (For fewer queries than keys this
        // used to compute `sᵀ = k qᵀ` and transpose it: that cost Hiera's
        // f32 encoder at 512 4–7 % — its pooled and edge windows have fewer
        // queries than keys — and gained nothing measurable on clicks.)
        // SAFETY: forwarded from the caller; kᵀ is k read column-major.
        unsafe {
            sgemm(
                m,
                n,
                d,
                s,
                lds,
                false,
                q,
                (ldq as isize, 1),
                k,
                (1, ldk as isize),
            )
        }
    }

    unsafe fn scores_kt(
        &self,
        m: usize,
        n: usize,
        d: usize,
        q: *const f32,
        ldq: usize,
        kt: *const f32,
        ldkt: usize,
        s: *mut f32,
        lds: usize,
    ) {
        // SAFETY: forwarded from the caller. The GEMM computes `sᵀ = k qᵀ`
        // (it wants a column-major destination) and packs `k` by copying
        // runs of keys: no transposition, whatever `m` and `n`.
        unsafe {
            sgemm(
                m,
                n,
                d,
                s,
                lds,
                false,
                q,
                (ldq as isize, 1),
                kt,
                (ldkt as isize, 1),
            )
        }
    }

    unsafe fn accumulate(
        &self,
        m: usize,
        n: usize,
        dv: usize,
        p: *const f32,
        ldp: usize,
        v: *const f32,
        ldv: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            sgemm(
                m,
                dv,
                n,
                o,
                ldo,
                true,
                p,
                (ldp as isize, 1),
                v,
                (ldv as isize, 1),
            )
        }
    }
}

/// Where the rows of one operand lie: batch·head `t` (batch `t / heads`,
/// head `t % heads`) starts at `t / heads · batch_stride + t % heads ·
/// head_stride`; its token `i`, channel `c` at `+ i · row_stride + c ·
/// col_stride`. Channels are contiguous (`col_stride` 1) in every operand
/// except the keys, which may instead be stored transposed (`row_stride` 1,
/// [`Layout::bhdl`]).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Heads per batch item.
    pub heads: usize,
    /// Elements between batch items.
    pub batch_stride: usize,
    /// Elements between heads.
    pub head_stride: usize,
    /// Elements between tokens.
    pub row_stride: usize,
    /// Elements between channels.
    pub col_stride: usize,
}

impl Layout {
    /// `[B, H, L, d]` contiguous.
    pub fn bhld(heads: usize, len: usize, d: usize) -> Self {
        Self {
            heads,
            batch_stride: heads * len * d,
            head_stride: len * d,
            row_stride: d,
            col_stride: 1,
        }
    }

    /// `[B, L, H·d]` contiguous (heads interleaved in each token's row).
    pub fn blhd(heads: usize, len: usize, d: usize) -> Self {
        Self {
            heads,
            batch_stride: len * heads * d,
            head_stride: d,
            row_stride: heads * d,
            col_stride: 1,
        }
    }

    /// `[B, H, d, L]` contiguous: each head's tokens transposed, channel by
    /// channel (keys in the order the f32 score GEMM reads fastest,
    /// [`BlockProducts::scores_kt`]).
    pub fn bhdl(heads: usize, len: usize, d: usize) -> Self {
        Self {
            heads,
            batch_stride: heads * d * len,
            head_stride: d * len,
            row_stride: 1,
            col_stride: len,
        }
    }

    #[inline]
    fn offset(&self, t: usize) -> usize {
        (t / self.heads) * self.batch_stride + (t % self.heads) * self.head_stride
    }

    /// Last element index (exclusive) that `n` batch·heads of `len` tokens of
    /// `width` values touch.
    fn extent(&self, n: usize, len: usize, width: usize) -> usize {
        if n == 0 || len == 0 || width == 0 {
            return 0;
        }
        self.offset(n - 1) + (len - 1) * self.row_stride + (width - 1) * self.col_stride + 1
    }
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Batch·heads.
    pub bh: usize,
    /// Queries per batch·head.
    pub lq: usize,
    /// Keys (and values) per batch·head.
    pub lk: usize,
    /// Query/key width.
    pub d: usize,
    /// Value (and output) width.
    pub dv: usize,
}

simd_fn! {
    /// Online-softmax update of `rows` score rows (`n` values, stride
    /// `lds`) of a tile: turns them into `e^{scale·(s − m_new)}`, updates the
    /// running maxima `m` and sums `l`, and rescales the output rows `o`
    /// (`dv` values, stride `ldo`) when a maximum grows.
    fn online_softmax_tile[online_softmax_tile_at](
        s: &mut [f32],
        rows: usize,
        n: usize,
        lds: usize,
        scale: f32,
        m: &mut [f32],
        l: &mut [f64],
        o: &mut [f32],
        dv: usize,
        ldo: usize,
    ) {
        for i in 0..rows {
            let row = &mut s[i * lds..i * lds + n];
            let m_new = row_max(row).max(m[i]);
            if m_new == f32::NEG_INFINITY {
                // Every key so far scores −∞: weights 0, nothing to rescale.
                row.fill(0.0);
                continue;
            }
            let sum = exp_sub_sum(row, m_new, scale);
            if m_new != m[i] {
                let alpha = exp((m[i] - m_new) * scale);
                l[i] *= alpha as f64;
                for v in o[i * ldo..i * ldo + dv].iter_mut() {
                    *v *= alpha;
                }
                m[i] = m_new;
            }
            l[i] += sum;
        }
    }
}

simd_fn! {
    /// `dst[i] = o[i] / l[i]` for `rows` rows of `dv` values.
    fn normalise_rows[normalise_rows_at](o: &[f32], ldo: usize, l: &[f64], dst: *mut f32, ldd: usize, rows: usize, dv: usize) {
        for i in 0..rows {
            let inv = (1.0 / l[i]) as f32;
            // SAFETY: the caller owns `rows` output rows at `dst` (stride `ldd`).
            let d = unsafe { std::slice::from_raw_parts_mut(dst.add(i * ldd), dv) };
            for (d, &v) in d.iter_mut().zip(&o[i * ldo..i * ldo + dv]) {
                *d = v * inv;
            }
        }
    }
}

/// `out = softmax(scale · q kᵀ) v` for every batch·head, fused and tiled,
/// with the given tile products. Fails on sizes that do not fit the slices.
#[allow(clippy::too_many_arguments)]
pub fn attention_with<P: BlockProducts>(
    prod: &P,
    dims: Dims,
    scale: f32,
    q: (&[f32], Layout),
    k: (&[f32], Layout),
    v: (&[f32], Layout),
    out: (&mut [f32], Layout),
) -> Result<()> {
    let Dims { bh, lq, lk, d, dv } = dims;
    if q.0.len() < q.1.extent(bh, lq, d)
        || k.0.len() < k.1.extent(bh, lk, d)
        || v.0.len() < v.1.extent(bh, lk, dv)
        || out.0.len() < out.1.extent(bh, lq, dv)
        || [q.1, k.1, v.1, out.1].iter().any(|l| l.heads == 0)
        || [q.1, v.1, out.1].iter().any(|l| l.col_stride != 1)
        || (k.1.col_stride != 1 && k.1.row_stride != 1)
    {
        candle_core::bail!("attention: operands do not fit {dims:?}");
    }
    if bh == 0 || lq == 0 || dv == 0 {
        return Ok(());
    }
    let (ol, optr) = (out.1, SyncPtr(out.0.as_mut_ptr()));
    if lk == 0 {
        // softmax over no keys: PyTorch gives NaN.
        for t in 0..bh {
            for i in 0..lq {
                let o = ol.offset(t) + i * ol.row_stride;
                out_row(optr, o, dv).fill(f32::NAN);
            }
        }
        return Ok(());
    }
    let kb = K_BLOCK.min(lk);
    let splits = key_splits(bh, lq, lk).clamp(1, lk);
    let qbs = if splits > 1 { lq } else { q_block(bh, lq) };
    let q_blocks = lq.div_ceil(qbs);
    // Keys per split: whole blocks.
    let per_split = lk.div_ceil(splits).next_multiple_of(kb);
    // Task `task` = (batch·head t, query block qb, key split ks): its queries
    // over its keys, leaving the output accumulator `o`, maxima `m` and sums
    // `l` in the scratch for `finish`.
    let walk = |task: usize, finish: Finish| {
        let (t, rest) = (task / (q_blocks * splits), task % (q_blocks * splits));
        let (qb, ks) = (rest / splits, rest % splits);
        let q0 = qb * qbs;
        let rows = qbs.min(lq - q0);
        let (k_lo, k_hi) = ((ks * per_split).min(lk), ((ks + 1) * per_split).min(lk));
        let q_ptr = q.0[q.1.offset(t) + q0 * q.1.row_stride..].as_ptr();
        let k_base = k.1.offset(t);
        let v_base = v.1.offset(t);
        // Scratch: scores, output accumulator, maxima; sums apart (f64).
        with_scratch(rows * kb + rows * dv + rows, |buf| {
            let (s, rest) = buf.split_at_mut(rows * kb);
            let (o, m) = rest.split_at_mut(rows * dv);
            o.fill(0.0);
            m.fill(f32::NEG_INFINITY);
            let mut l = vec![0f64; rows];
            let mut k0 = k_lo;
            while k0 < k_hi {
                let n = kb.min(k_hi - k0);
                let k_ptr = k.0[k_base + k0 * k.1.row_stride..].as_ptr();
                // SAFETY: the row ranges were checked against the slices
                // above; `s` and `o` are this task's scratch.
                unsafe {
                    if k.1.col_stride == 1 {
                        let ldk = k.1.row_stride;
                        prod.scores(
                            rows,
                            n,
                            d,
                            q_ptr,
                            q.1.row_stride,
                            k_ptr,
                            ldk,
                            s.as_mut_ptr(),
                            kb,
                        );
                    } else {
                        let ldkt = k.1.col_stride;
                        prod.scores_kt(
                            rows,
                            n,
                            d,
                            q_ptr,
                            q.1.row_stride,
                            k_ptr,
                            ldkt,
                            s.as_mut_ptr(),
                            kb,
                        );
                    }
                }
                online_softmax_tile(s, rows, n, kb, scale, m, &mut l, o, dv, dv);
                // SAFETY: as above.
                unsafe {
                    prod.accumulate(
                        rows,
                        n,
                        dv,
                        s.as_ptr(),
                        kb,
                        v.0[v_base + k0 * v.1.row_stride..].as_ptr(),
                        v.1.row_stride,
                        o.as_mut_ptr(),
                        dv,
                    );
                }
                k0 += n;
            }
            finish(t, q0, rows, o, m, &l);
        });
    };
    if splits == 1 {
        par_tasks(bh * q_blocks, |task| {
            walk(task, &|t, q0, rows, o, _, l| {
                let dst = ol.offset(t) + q0 * ol.row_stride;
                // SAFETY: rows q0.. of batch·head t belong to this task only.
                normalise_rows(
                    o,
                    dv,
                    l,
                    unsafe { optr.ptr().add(dst) },
                    ol.row_stride,
                    rows,
                    dv,
                );
            })
        });
        return Ok(());
    }
    // Split keys: every task keeps its (o, m, l); the splits of one batch·head
    // are merged by their maxima afterwards (one query block per batch·head).
    let tasks = bh * splits;
    let mut parts = vec![0f32; tasks * lq * (dv + 2)];
    let pp = SyncPtr(parts.as_mut_ptr());
    par_tasks(tasks, |task| {
        walk(task, &|_, _, rows, o, m, l| {
            // SAFETY: slot `task` of `parts` belongs to this task only.
            let part = unsafe {
                std::slice::from_raw_parts_mut(pp.ptr().add(task * lq * (dv + 2)), lq * (dv + 2))
            };
            let (po, rest) = part.split_at_mut(lq * dv);
            let (pm, pl) = rest.split_at_mut(lq);
            po[..rows * dv].copy_from_slice(o);
            pm[..rows].copy_from_slice(m);
            for (d, s) in pl.iter_mut().zip(l) {
                *d = *s as f32;
            }
        })
    });
    for (t, group) in parts.chunks_exact(splits * lq * (dv + 2)).enumerate() {
        for i in 0..lq {
            let slot = |ks: usize| &group[ks * lq * (dv + 2)..][..lq * (dv + 2)];
            let top = (0..splits)
                .map(|ks| slot(ks)[lq * dv + i])
                .fold(f32::NEG_INFINITY, f32::max);
            let dst = out_row(optr, ol.offset(t) + i * ol.row_stride, dv);
            dst.fill(0.0);
            let mut total = 0f64;
            for ks in 0..splits {
                let p = slot(ks);
                let mi = p[lq * dv + i];
                if mi == f32::NEG_INFINITY {
                    continue;
                }
                let w = exp((mi - top) * scale);
                total += w as f64 * p[lq * (dv + 1) + i] as f64;
                for (d, x) in dst.iter_mut().zip(&p[i * dv..(i + 1) * dv]) {
                    *d += w * x;
                }
            }
            let inv = (1.0 / total) as f32;
            for d in dst.iter_mut() {
                *d *= inv;
            }
        }
    }
    Ok(())
}

/// Receives a task's result: batch·head, first query, rows, the unnormalised
/// output rows, their maxima and their sums.
type Finish<'a> = &'a dyn Fn(usize, usize, usize, &[f32], &[f32], &[f64]);

/// Key splits for `bh` batch·heads of `lq` queries over `lk` keys: 1 when
/// the query blocks alone give every thread work; otherwise (few queries
/// over many keys, e.g. prompt tokens over an image) enough splits of whole
/// key blocks for every thread, each a task of all queries (one query block)
/// over its keys — each key and value then is read by one task only.
fn key_splits(bh: usize, lq: usize, lk: usize) -> usize {
    #[cfg(test)]
    if let Some(s) = tests::FORCED_SPLITS.with(|c| c.get()) {
        return s;
    }
    let threads = super::parallel::num_threads();
    if threads < 2 || lq > Q_BLOCK || bh >= threads {
        return 1;
    }
    threads.div_ceil(bh.max(1)).min(lk / (2 * K_BLOCK)).max(1)
}

fn out_row<'a>(p: SyncPtr, offset: usize, len: usize) -> &'a mut [f32] {
    // SAFETY: only called single-threaded on ranges checked by the caller.
    unsafe { std::slice::from_raw_parts_mut(p.ptr().add(offset), len) }
}

/// Reference arithmetic of [`sdpa`] in candle ops: `softmax(q kᵀ · scale) v`
/// with the scores materialised (in row chunks that bound them to 2²³
/// elements), softmax in f32. Runs on any device and dtype.
pub fn sdpa_generic(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    const MAX_SCORE_ELEMS: usize = 1 << 23;
    let lq = q.dim(candle_core::D::Minus2)?;
    let lk = k.dim(candle_core::D::Minus2)?;
    let batch: usize = q.dims()[..q.rank().saturating_sub(2)].iter().product();
    let kt = k.contiguous()?.t()?;
    let v = v.contiguous()?;
    let block = |qc: &Tensor| -> Result<Tensor> {
        let scores = (qc.contiguous()?.matmul(&kt)? * scale)?;
        super::softmax::softmax_last_generic(&scores)?.matmul(&v)
    };
    let rows = (MAX_SCORE_ELEMS / (batch * lk).max(1)).max(1);
    if rows >= lq {
        return block(q);
    }
    let dim = q.rank() - 2;
    let mut outs = Vec::with_capacity(lq.div_ceil(rows));
    let mut start = 0;
    while start < lq {
        let len = rows.min(lq - start);
        outs.push(block(&q.narrow(dim, start, len)?)?);
        start += len;
    }
    Tensor::cat(&outs, dim)
}

/// Scaled dot-product attention `softmax(q kᵀ / √d) v` on `[B, H, L, d]`
/// tensors (`v` may have its own width): the fused kernel with f32 GEMM
/// tiles for CPU tensors (fast kernels on, any float dtype, computed in f32),
/// [`sdpa_generic`] elsewhere.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    sdpa_in(q, k, v, false)
}

/// [`sdpa`] whose tile products run in bf16 with f32 sums
/// ([`super::bf16::Bf16Tiles`]) when `bf16` is set and the CPU has the bf16
/// kernel (the CPU bf16 mode); f32 tiles otherwise.
pub fn sdpa_in(q: &Tensor, k: &Tensor, v: &Tensor, bf16: bool) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    sdpa_scaled(q, k, v, scale, bf16)
}

/// [`sdpa_in`] with the given `scale` in place of `1 / √d` (callers that
/// folded the scale into `q` pass 1).
pub fn sdpa_scaled(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, bf16: bool) -> Result<Tensor> {
    let (b, h, lq, d) = q.dims4()?;
    let (bk, hk, lk, dk) = k.dims4()?;
    let (bv, hv, lv, dv) = v.dims4()?;
    if (bk, hk, dk) != (b, h, d) || (bv, hv, lv) != (b, h, lk) {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not match",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    if !super::fast_cpu(q) {
        return sdpa_generic(q, k, v, scale);
    }
    let dtype = q.dtype();
    let f = |t: &Tensor| -> Result<Tensor> { t.to_dtype(DType::F32)?.contiguous() };
    // Keys that are the transposed view of contiguous `[B, H, d, Lk]` f32
    // data (as `memory_attention::rotate_parts` writes them for this kernel)
    // are read in place, channel by channel.
    let kt = k.transpose(2, 3)?;
    let keys_t = k.dtype() == DType::F32 && !k.is_contiguous() && kt.is_contiguous();
    let (qf, vf) = (f(q)?, f(v)?);
    let kf = if keys_t { kt } else { f(k)? };
    let mut out = vec![0f32; b * h * lq * dv];
    {
        let (qs, ql) = qf.storage_and_layout();
        let (ks, kl) = kf.storage_and_layout();
        let (vs, vl) = vf.storage_and_layout();
        let cpu = crate::modeling::memory_encoder::cpu_f32;
        let (Some(qv), Some(kv), Some(vv)) = (cpu(&qs, ql), cpu(&ks, kl), cpu(&vs, vl)) else {
            drop((qs, ks, vs));
            return sdpa_generic(q, k, v, scale);
        };
        let dims = Dims {
            bh: b * h,
            lq,
            lk,
            d,
            dv,
        };
        let (q, k, v) = (
            (qv, Layout::bhld(h, lq, d)),
            (
                kv,
                if keys_t {
                    Layout::bhdl(h, lk, d)
                } else {
                    Layout::bhld(h, lk, d)
                },
            ),
            (vv, Layout::bhld(h, lk, dv)),
        );
        let o = (&mut out[..], Layout::bhld(h, lq, dv));
        if bf16 && super::bf16::available() {
            attention_with(&super::bf16::Bf16Tiles, dims, scale as f32, q, k, v, o)?;
        } else {
            attention_with(&F32Gemm, dims, scale as f32, q, k, v, o)?;
        }
    }
    Tensor::from_vec(out, (b, h, lq, dv), q.device())?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modeling::kernels::simd::available;
    use crate::modeling::kernels::softmax::tests::lcg;

    /// Plain f64 attention of batch·head 0..bh on [bh, l, d] data.
    /// Also returns the largest |scaled score|.
    fn reference(q: &[f32], k: &[f32], v: &[f32], dims: Dims, scale: f64) -> (Vec<f64>, f64) {
        let Dims { bh, lq, lk, d, dv } = dims;
        let mut out = vec![0f64; bh * lq * dv];
        let mut smax = 0f64;
        for t in 0..bh {
            for i in 0..lq {
                let qi = &q[(t * lq + i) * d..][..d];
                let s: Vec<f64> = (0..lk)
                    .map(|j| {
                        let kj = &k[(t * lk + j) * d..][..d];
                        qi.iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                smax = s.iter().fold(smax, |a, x| a.max(x.abs()));
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dv {
                    out[(t * lq + i) * dv + c] = (0..lk)
                        .map(|j| e[j] * v[(t * lk + j) * dv + c] as f64)
                        .sum::<f64>()
                        / z;
                }
            }
        }
        (out, smax)
    }

    thread_local! {
        /// Key splits that [`key_splits`] returns while set (tests force
        /// splits whatever the thread count).
        pub(super) static FORCED_SPLITS: std::cell::Cell<Option<usize>> =
            const { std::cell::Cell::new(None) };
    }

    /// Runs `f` with [`key_splits`] returning `splits` (`None`: chosen).
    fn with_splits<R>(splits: Option<usize>, f: impl FnOnce() -> R) -> R {
        FORCED_SPLITS.with(|c| c.set(splits));
        let r = f();
        FORCED_SPLITS.with(|c| c.set(None));
        r
    }

    /// `[bh, l, d]` row-major data transposed to `[bh, d, l]`.
    pub(crate) fn transpose_keys(k: &[f32], bh: usize, l: usize, d: usize) -> Vec<f32> {
        let mut t = vec![0f32; k.len()];
        for b in 0..bh {
            for j in 0..l {
                for c in 0..d {
                    t[(b * d + c) * l + j] = k[(b * l + j) * d + c];
                }
            }
        }
        t
    }

    /// The fused kernel against the f64 reference, with the keys row-major
    /// and transposed ([`Layout::bhdl`], [`BlockProducts::scores_kt`]; the
    /// GEMM may order its sums differently, so the two agree to rounding).
    fn run(dims: Dims, spread: f32, seed: u64, splits: Option<usize>) {
        let Dims { bh, lq, lk, d, dv } = dims;
        let q = lcg(bh * lq * d, spread, seed);
        let k = lcg(bh * lk * d, spread, seed + 1);
        let v = lcg(bh * lk * dv, 1.0, seed + 2);
        let kt = transpose_keys(&k, bh, lk, d);
        let scale = 1.0 / (d as f64).sqrt();
        let (want, smax) = reference(&q, &k, &v, dims, scale);
        for keys in [
            (&k[..], Layout::bhld(1, lk, d)),
            (&kt[..], Layout::bhdl(1, lk, d)),
        ] {
            let mut got = vec![0f32; bh * lq * dv];
            with_splits(splits, || {
                attention_with(
                    &F32Gemm,
                    dims,
                    scale as f32,
                    (&q, Layout::bhld(1, lq, d)),
                    keys,
                    (&v, Layout::bhld(1, lk, dv)),
                    (&mut got, Layout::bhld(1, lq, dv)),
                )
            })
            .unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0f64, f64::max);
            // Values lie in [-1, 1]. The f32 scores carry a relative rounding
            // error of a few ulps, an absolute error in the exponent of about
            // 4 ε |s|; the weighted sum adds ~1e-6.
            let tol = 1e-6 + 4.0 * f32::EPSILON as f64 * smax;
            assert!(
                err < tol,
                "{dims:?} spread {spread}, keys {:?}: max-abs error {err:e} > {tol:e}",
                keys.1
            );
        }
    }

    /// Transposed keys through the default [`BlockProducts::scores_kt`]
    /// (gathered into rows) score exactly as row-major keys do; keys laid
    /// out neither way, and queries or values not row-major, are errors.
    #[test]
    fn default_scores_kt_gathers_rows() {
        /// F32Gemm's products without its own `scores_kt`.
        struct RowsOnly;
        impl BlockProducts for RowsOnly {
            unsafe fn scores(
                &self,
                m: usize,
                n: usize,
                d: usize,
                q: *const f32,
                ldq: usize,
                k: *const f32,
                ldk: usize,
                s: *mut f32,
                lds: usize,
            ) {
                // SAFETY: forwarded.
                unsafe { F32Gemm.scores(m, n, d, q, ldq, k, ldk, s, lds) }
            }
            unsafe fn accumulate(
                &self,
                m: usize,
                n: usize,
                dv: usize,
                p: *const f32,
                ldp: usize,
                v: *const f32,
                ldv: usize,
                o: *mut f32,
                ldo: usize,
            ) {
                // SAFETY: forwarded.
                unsafe { F32Gemm.accumulate(m, n, dv, p, ldp, v, ldv, o, ldo) }
            }
        }
        let (bh, lq, lk, d, dv) = (2usize, 37usize, K_BLOCK + 19, 24usize, 8usize);
        let dims = Dims { bh, lq, lk, d, dv };
        let q = lcg(bh * lq * d, 2.0, 1);
        let k = lcg(bh * lk * d, 2.0, 2);
        let v = lcg(bh * lk * dv, 1.0, 3);
        let kt = transpose_keys(&k, bh, lk, d);
        let call = |keys: (&[f32], Layout), q_layout: Layout| {
            let mut out = vec![0f32; bh * lq * dv];
            attention_with(
                &RowsOnly,
                dims,
                0.3,
                (&q, q_layout),
                keys,
                (&v, Layout::bhld(1, lk, dv)),
                (&mut out, Layout::bhld(1, lq, dv)),
            )
            .map(|_| out)
        };
        let rows = call((&k, Layout::bhld(1, lk, d)), Layout::bhld(1, lq, d)).unwrap();
        let cols = call((&kt, Layout::bhdl(1, lk, d)), Layout::bhld(1, lq, d)).unwrap();
        assert_eq!(rows, cols);
        let skewed = Layout {
            row_stride: 2,
            ..Layout::bhdl(1, lk, d)
        };
        assert!(call((&kt, skewed), Layout::bhld(1, lq, d)).is_err());
        assert!(call((&k, Layout::bhld(1, lk, d)), Layout::bhdl(1, lq, d)).is_err());
    }

    /// Odd sizes (not multiples of the SIMD width or of the blocks), one key,
    /// one query, many keys over several key blocks, several heads, and
    /// scores large enough that the running maximum moves between blocks.
    #[test]
    fn fused_matches_f64_reference() {
        let cases = [
            (1, 1, 1, 4, 4),
            (2, 3, 1, 8, 5),
            (3, 7, 13, 17, 9),
            (1, Q_BLOCK + 3, K_BLOCK + 5, 32, 32),
            (2, 33, 2 * K_BLOCK + 77, 64, 40),
            (1, 5, 5000, 256, 256),
        ];
        for (i, &(bh, lq, lk, d, dv)) in cases.iter().enumerate() {
            for spread in [1.0f32, 6.0] {
                run(Dims { bh, lq, lk, d, dv }, spread, i as u64 * 10, None);
            }
        }
    }

    /// Few queries over many keys with the keys split over tasks and merged
    /// (as on a machine with more threads): uneven and empty splits, batch
    /// 2, scores large enough that the splits' maxima differ.
    #[test]
    fn key_splits_merge_exactly() {
        let cases = [
            (1, 64, 4096, 64, 64, 2),
            (2, 5, 3 * K_BLOCK + 7, 16, 24, 3),
            (1, 3, 2 * K_BLOCK, 8, 8, 5),
        ];
        for (i, &(bh, lq, lk, d, dv, splits)) in cases.iter().enumerate() {
            for spread in [1.0f32, 6.0] {
                run(
                    Dims { bh, lq, lk, d, dv },
                    spread,
                    100 + i as u64,
                    Some(splits),
                );
            }
        }
    }

    /// A key scoring −∞ gets weight 0; a block of −∞ keys before a finite one
    /// does not poison the output; huge scores do not overflow.
    #[test]
    fn infinite_and_huge_scores() {
        let (lq, lk, d) = (3usize, K_BLOCK + 4, 4usize);
        let mut q = vec![0f32; lq * d];
        q.iter_mut().step_by(d).for_each(|x| *x = 1.0);
        // Keys: first block all −∞ in channel 0, then finite; one huge.
        let mut k = vec![0f32; lk * d];
        for j in 0..lk {
            k[j * d] = if j < K_BLOCK {
                f32::NEG_INFINITY
            } else {
                j as f32 * 1e3
            };
        }
        let v: Vec<f32> = (0..lk * d).map(|i| (i / d) as f32).collect();
        let dims = Dims {
            bh: 1,
            lq,
            lk,
            d,
            dv: d,
        };
        let l = |n| Layout::bhld(1, n, d);
        // One task, and the keys split so that a whole split scores −∞.
        for splits in [1, 2] {
            let mut out = vec![0f32; lq * d];
            with_splits(Some(splits), || {
                attention_with(
                    &F32Gemm,
                    dims,
                    0.5,
                    (&q, l(lq)),
                    (&k, l(lk)),
                    (&v, l(lk)),
                    (&mut out, l(lq)),
                )
            })
            .unwrap();
            // All weight on the largest key, the last one.
            for x in &out {
                assert_eq!(*x, (lk - 1) as f32, "{splits} splits");
            }
        }
    }

    /// The tile update of each SIMD build agrees with the others exactly
    /// up to f32 rounding of the exponentials.
    #[test]
    fn tile_update_agrees_across_levels() {
        let (rows, n, dv) = (5usize, 37usize, 11usize);
        let s0 = lcg(rows * n, 10.0, 3);
        let o0 = lcg(rows * dv, 1.0, 4);
        let mut results = Vec::new();
        for level in available() {
            let (mut s, mut o) = (s0.clone(), o0.clone());
            let mut m = vec![0.5f32; rows];
            let mut l = vec![2.0f64; rows];
            online_softmax_tile_at(
                level, &mut s, rows, n, n, 0.3, &mut m, &mut l, &mut o, dv, dv,
            );
            results.push((s, o, m, l));
        }
        for r in &results[1..] {
            for (a, b) in
                r.0.iter()
                    .zip(&results[0].0)
                    .chain(r.1.iter().zip(&results[0].1))
            {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-30), "{a} vs {b}");
            }
        }
    }

    /// The tensor entry point: fused CPU path against the generic candle path
    /// on [B, H, L, d] tensors.
    #[test]
    fn sdpa_matches_generic() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let (b, h, lq, lk, d) = (2usize, 3usize, 70usize, 600usize, 16usize);
        let q = Tensor::from_vec(lcg(b * h * lq * d, 2.0, 1), (b, h, lq, d), &dev)?;
        let k = Tensor::from_vec(lcg(b * h * lk * d, 2.0, 2), (b, h, lk, d), &dev)?;
        let v = Tensor::from_vec(lcg(b * h * lk * d, 1.0, 3), (b, h, lk, d), &dev)?;
        let fast = sdpa(&q, &k, &v)?;
        let slow = sdpa_generic(
            &q.to_dtype(DType::F64)?,
            &k.to_dtype(DType::F64)?,
            &v.to_dtype(DType::F64)?,
            1.0 / (d as f64).sqrt(),
        )?;
        let e = (fast.to_dtype(DType::F64)? - slow)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(e < 1e-6, "{e:e}");
        // Keys given as the transposed view of `[B, H, d, Lk]` data are read
        // in place and give the same result (up to the GEMM's summation
        // order).
        let kt = k.transpose(2, 3)?.contiguous()?.transpose(2, 3)?;
        assert!(!kt.is_contiguous());
        let same = sdpa(&q, &kt, &v)?;
        let e = (same - &fast)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(e < 1e-6, "{e:e}");
        Ok(())
    }
}
