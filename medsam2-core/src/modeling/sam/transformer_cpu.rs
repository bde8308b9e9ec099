//! Fused CPU kernel (f32) of the two-way transformer's image → token
//! attention, with the key and value heads already folded into small
//! matrices ([`super::transformer::Attention`]): every image token attends
//! to the few prompt tokens of each head, fused with the residual, `norm4`
//! and the next layer's keys with PE, block by block of image tokens (the
//! single-threaded GEMM, [`crate::modeling::kernels::gemm::sgemm`], on
//! blocks that stay in cache, on the kernels' threads). The token → image
//! direction runs the fused attention of [`crate::modeling::kernels::attention`].

use candle_core::{Result, Tensor};

use crate::modeling::backbones::cpu::F32Ref;
use crate::modeling::kernels::bf16::{self, gemm, PackedB, Start};
use crate::modeling::kernels::gemm::sgemm;
use crate::modeling::kernels::norm::layer_norm_rows;
use crate::modeling::kernels::parallel::{par_tasks, with_scratch, SyncPtr};
use crate::modeling::kernels::simd::simd_fn;
use crate::modeling::kernels::softmax::softmax_cols;

/// Image tokens per task of [`image_to_token`].
const I2T_ROWS: usize = 512;

/// Operands of [`image_to_token`]; `B` images of `N` tokens of `C`
/// channels, `G = heads · Nk` folded rows (head-major: the `Nk` prompt
/// tokens of head 0, then head 1, …; the kernel reorders them key-major).
pub(crate) struct ImageToToken<'a> {
    /// Image tokens plus PE, the attention's queries `[B, N, C]`.
    pub q: &'a Tensor,
    /// Image tokens, the residual `[B, N, C]`.
    pub keys: &'a Tensor,
    /// Folded query weights `[B, G, C]` (scale included).
    pub m: &'a Tensor,
    /// Score bias `[B, G, 1]` (the query bias folded with the keys).
    pub score_bias: Option<&'a Tensor>,
    /// Folded value-output products `[B, G, C]`.
    pub vo: &'a Tensor,
    /// Output projection bias `[C]`.
    pub out_bias: Option<&'a Tensor>,
    /// `norm4`.
    pub norm: &'a candle_nn::LayerNorm,
    /// Its epsilon.
    pub eps: f32,
    /// Image PE tokens `[N, C]` or `[1, N, C]`.
    pub pe: &'a Tensor,
    /// Prompt tokens per head (`Nk`): the softmax runs over groups of it.
    pub keys_per_head: usize,
    /// Run the two products in bf16 with f32 sums (the CPU bf16 mode; needs
    /// [`bf16::available`], else the f32 products run).
    pub bf16: bool,
}

/// `keys' = norm4(keys + softmax_heads(q mᵀ + c) vo + bo)` and `keys' + pe`,
/// each `[B, N, C]`: the image → token attention of a two-way block, its
/// residual and norm, and the next layer's keys with PE, in one pass over
/// blocks of image tokens. The softmax runs over each head's `Nk` columns.
pub(crate) fn image_to_token(a: &ImageToToken) -> Result<(Tensor, Tensor)> {
    let (b, n, c) = a.keys.dims3()?;
    let (bm, g, cm) = a.m.dims3()?;
    let nk = a.keys_per_head;
    if a.q.dims() != a.keys.dims()
        || bm != b
        || cm != c
        || a.vo.dims() != a.m.dims()
        || nk == 0
        || g % nk != 0
        || a.pe.elem_count() != n * c
    {
        candle_core::bail!(
            "image_to_token: shapes {:?}, {:?}, {:?}, {:?} do not fit",
            a.q.dims(),
            a.m.dims(),
            a.vo.dims(),
            a.pe.dims()
        );
    }
    let contiguous = |t: &Tensor| t.contiguous();
    // The folded rows from head-major (h, k) to key-major (k, h) order.
    let heads = g / nk;
    let key_major = |t: &Tensor| -> Result<Tensor> {
        let w = t.elem_count() / (b * g);
        t.reshape((b, heads, nk, w))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, g, w))
    };
    let (q, keys, m, vo, pe) = (
        contiguous(a.q)?,
        contiguous(a.keys)?,
        key_major(a.m)?,
        key_major(a.vo)?,
        contiguous(a.pe)?,
    );
    let sb = a.score_bias.map(key_major).transpose()?;
    let ob = a.out_bias.map(contiguous).transpose()?;
    let lw = a.norm.weight().contiguous()?;
    let lb = match a.norm.bias() {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(c, candle_core::DType::F32, keys.device())?,
    };
    let refs = [&q, &keys, &m, &vo, &pe, &lw, &lb].map(F32Ref::new);
    let [qr, kr, mr, vr, per, lwr, lbr] = refs;
    let (qr, kr, mr, vr, per, lwr, lbr) = (qr?, kr?, mr?, vr?, per?, lwr?, lbr?);
    let sbr = sb.as_ref().map(F32Ref::new).transpose()?;
    let obr = ob.as_ref().map(F32Ref::new).transpose()?;
    let sbv = sbr.as_ref().map(|r| r.slice());
    let obv = obr.as_ref().map(|r| r.slice());
    if lwr.slice().len() != c
        || lbr.slice().len() != c
        || sbv.is_some_and(|s| s.len() != b * g)
        || obv.is_some_and(|s| s.len() != c)
    {
        candle_core::bail!("image_to_token: norm or bias not of {c} (or {b}×{g}) values");
    }
    // In the bf16 mode: mᵀ and vo of each image packed once for all blocks.
    let packed = if a.bf16 && bf16::available() {
        (0..b)
            .map(|bi| {
                let (mv, vv) = (
                    &mr.slice()[bi * g * c..][..g * c],
                    &vr.slice()[bi * g * c..][..g * c],
                );
                (PackedB::from_nk(mv, g, c), PackedB::from_kn(vv, g, c))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut out = vec![0f32; b * n * c];
    let mut with_pe = vec![0f32; b * n * c];
    let (po, pp) = (SyncPtr(out.as_mut_ptr()), SyncPtr(with_pe.as_mut_ptr()));
    let blocks = n.div_ceil(I2T_ROWS);
    par_tasks(b * blocks, |t| {
        let (bi, j) = (t / blocks, t % blocks);
        let (r0, r1) = (j * I2T_ROWS, ((j + 1) * I2T_ROWS).min(n));
        let rows = r1 - r0;
        let at = (bi * n + r0) * c;
        // SAFETY: rows r0..r1 of image bi belong to this task only.
        let (dst, dst_pe) = unsafe {
            (
                std::slice::from_raw_parts_mut(po.ptr().add(at), rows * c),
                std::slice::from_raw_parts_mut(pp.ptr().add(at), rows * c),
            )
        };
        with_scratch(rows * (g + c) + g, |s| {
            let (scores, o) = s.split_at_mut(rows * g + g);
            token_block(
                &I2tBlock {
                    q: &qr.slice()[at..at + rows * c],
                    keys: &kr.slice()[at..at + rows * c],
                    m: &mr.slice()[bi * g * c..(bi + 1) * g * c],
                    vo: &vr.slice()[bi * g * c..(bi + 1) * g * c],
                    score_bias: sbv.map(|s| &s[bi * g..(bi + 1) * g]),
                    out_bias: obv,
                    ln_weight: lwr.slice(),
                    ln_bias: lbr.slice(),
                    eps: a.eps,
                    pe: &per.slice()[r0 * c..r1 * c],
                    packed: packed.get(bi).map(|(m, v)| (m, v)),
                    g,
                    c,
                    nk,
                },
                scores,
                o,
                dst,
                dst_pe,
            )
        });
    });
    let dev = keys.device();
    Ok((
        Tensor::from_vec(out, (b, n, c), dev)?,
        Tensor::from_vec(with_pe, (b, n, c), dev)?,
    ))
}

/// One block of image tokens for [`image_to_token`] (slices of one image).
struct I2tBlock<'a> {
    q: &'a [f32],
    keys: &'a [f32],
    m: &'a [f32],
    vo: &'a [f32],
    score_bias: Option<&'a [f32]>,
    out_bias: Option<&'a [f32]>,
    ln_weight: &'a [f32],
    ln_bias: &'a [f32],
    eps: f32,
    pe: &'a [f32],
    /// `mᵀ` and `vo` packed for the bf16 products.
    packed: Option<(&'a PackedB, &'a PackedB)>,
    g: usize,
    c: usize,
    nk: usize,
}

simd_fn! {
/// [`image_to_token`] on one block (folded rows key-major): scores
/// `[rows, g]`, the per-head softmax, the product with `vo` into `o`
/// `[rows, c]`, then the residual
/// (`(keys + o) + bo`, the order of the unfused ops), the norm into `dst`
/// and `dst + pe` into `dst_pe`.
fn token_block[token_block_at](
    a: &I2tBlock,
    scores: &mut [f32],
    o: &mut [f32],
    dst: &mut [f32],
    dst_pe: &mut [f32],
) {
    let (g, c, nk) = (a.g, a.c, a.nk);
    let heads = g / nk;
    let rows = a.q.len() / c;
    let (scores, mx) = scores.split_at_mut(rows * g);
    match a.packed {
        Some((pm, _)) => gemm(rows, a.q, c, pm, scores, g, Start::Zero),
        // SAFETY: `scores` holds rows × g values, `o` rows × c; `q` is
        // [rows, c], `m` [g, c] read as its transpose, `vo` [g, c].
        None => unsafe {
            sgemm(rows, g, c, scores.as_mut_ptr(), g, false, a.q.as_ptr(), (c as isize, 1),
                a.m.as_ptr(), (1, c as isize));
        },
    }
    if let Some(sb) = a.score_bias {
        for row in scores.chunks_exact_mut(g) {
            for (s, b) in row.iter_mut().zip(sb) {
                *s += b;
            }
        }
    }
    // Columns are key-major (key k of head h at k · heads + h): each row is
    // an [Nk, heads] group whose columns are the heads' softmaxes.
    softmax_cols(scores, nk, heads, mx, &mut vec![0f64; heads]);
    match a.packed {
        Some((_, pvo)) => gemm(rows, scores, g, pvo, o, c, Start::Zero),
        // SAFETY: as above.
        None => unsafe {
            sgemm(rows, c, g, o.as_mut_ptr(), c, false, scores.as_ptr(), (g as isize, 1),
                a.vo.as_ptr(), (c as isize, 1));
        },
    }
    for (orow, krow) in o.chunks_exact_mut(c).zip(a.keys.chunks_exact(c)) {
        match a.out_bias {
            Some(bo) => {
                for ((v, k), b) in orow.iter_mut().zip(krow).zip(bo) {
                    *v = (k + *v) + b;
                }
            }
            None => {
                for (v, k) in orow.iter_mut().zip(krow) {
                    *v += k;
                }
            }
        }
    }
    layer_norm_rows(o, dst, c, a.ln_weight, a.ln_bias, a.eps);
    for ((e, d), p) in dst_pe.iter_mut().zip(dst.iter()).zip(a.pe) {
        *e = d + p;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modeling::kernels::softmax::tests::lcg;
    use candle_core::{Device, Module, D};

    fn t(shape: &[usize], scale: f32, seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(lcg(n, scale, seed), shape, &Device::Cpu).unwrap()
    }

    /// Largest |a − b| (same shapes).
    fn max_err(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
        assert_eq!(a.dims(), b.dims());
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    /// Image → token attention + residual + norm + PE against the unfused
    /// ops: with and without biases, batch 2, a short last block.
    #[test]
    fn image_to_token_matches_unfused_ops() {
        let (heads, nk, c) = (8usize, 7usize, 64usize);
        let g = heads * nk;
        // bf16 products (when the CPU has the kernel): inputs rounded to
        // bf16 (relative 2⁻⁹), scores summed over 64 channels of values in
        // [-1, 1]; observed ≤ 1.4e-2 after the norm.
        let modes: &[(bool, f32)] = if bf16::available() {
            &[(false, 1e-5), (true, 3e-2)]
        } else {
            &[(false, 1e-5)]
        };
        for (&(b, n, biases), &(use_bf16, tol)) in
            [(1usize, 600usize, true), (2, 129, false), (1, 5, true)]
                .iter()
                .flat_map(|c| modes.iter().map(move |m| (c, m)))
        {
            let q = t(&[b, n, c], 1.0, 7);
            let keys = t(&[b, n, c], 1.0, 8);
            let m = t(&[b, g, c], 1.0, 9);
            let vo = t(&[b, g, c], 1.0, 10);
            let sb = t(&[b, g, 1], 1.0, 11);
            let ob = t(&[c], 1.0, 12);
            let pe = t(&[1, n, c], 1.0, 13);
            let norm = candle_nn::LayerNorm::new(t(&[c], 1.0, 14), t(&[c], 1.0, 15), 1e-5);
            let mut s = q.matmul(&m.transpose(1, 2).unwrap()).unwrap();
            if biases {
                s = s.broadcast_add(&sb.transpose(1, 2).unwrap()).unwrap();
            }
            let p = candle_nn::ops::softmax(&s.reshape((b, n, heads, nk)).unwrap(), D::Minus1)
                .unwrap()
                .reshape((b, n, g))
                .unwrap();
            let mut sum = (&keys + p.matmul(&vo).unwrap()).unwrap();
            if biases {
                sum = sum.broadcast_add(&ob).unwrap();
            }
            let want = norm.forward(&sum).unwrap();
            let want_pe = want.broadcast_add(&pe).unwrap();
            let (got, got_pe) = image_to_token(&ImageToToken {
                q: &q,
                keys: &keys,
                m: &m,
                score_bias: biases.then_some(&sb),
                vo: &vo,
                out_bias: biases.then_some(&ob),
                norm: &norm,
                eps: 1e-5,
                pe: &pe,
                keys_per_head: nk,
                bf16: use_bf16,
            })
            .unwrap();
            let (e1, e2) = (
                max_err(&got, &want).unwrap(),
                max_err(&got_pe, &want_pe).unwrap(),
            );
            assert!(
                e1 < tol && e2 < tol,
                "{b}x{n} bf16 {use_bf16}: errors {e1:e}, {e2:e}"
            );
        }
        let (q, m) = (t(&[1, 4, 8], 1.0, 1), t(&[1, 6, 8], 1.0, 2));
        let norm = candle_nn::LayerNorm::new(t(&[8], 1.0, 3), t(&[8], 1.0, 4), 1e-5);
        let bad = ImageToToken {
            q: &q,
            keys: &q,
            m: &m,
            score_bias: None,
            vo: &m,
            out_bias: None,
            norm: &norm,
            eps: 1e-5,
            pe: &t(&[4, 8], 1.0, 5),
            keys_per_head: 4,
            bf16: false,
        };
        assert!(image_to_token(&bad).is_err(), "6 rows are not groups of 4");
    }
}
