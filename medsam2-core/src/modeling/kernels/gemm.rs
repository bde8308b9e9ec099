//! The f32 GEMM call of the fast CPU kernels: the `gemm` crate (its
//! AVX-512 / AVX2 / scalar kernel chosen at run time), single-threaded —
//! the callers split the work over threads themselves; and [`matmul`], the
//! one threaded product of f32 CPU tensors built on it (linear layers, the
//! SAM heads' products).

use candle_core::{Layout, Result, Storage, Tensor};

use super::parallel::{num_threads, par_tasks, with_scratch, SyncPtr};

/// Single-threaded `dst (m×n, row stride dst_rs) (+)= lhs (m×k) · rhs (k×n)`,
/// with element strides given as (row, column).
///
/// # Safety
/// Pointers and strides must address valid memory for the given sizes, and
/// `dst` must not alias the inputs.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_s: (isize, isize),
    rhs: *const f32,
    rhs_s: (isize, isize),
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_s.1,
        lhs_s.0,
        rhs,
        rhs_s.1,
        rhs_s.0,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// An f32 CPU tensor's storage from its start offset, and its strides.
fn strided<'a>(storage: &'a Storage, layout: &'a Layout) -> Result<(&'a [f32], &'a [usize])> {
    match storage {
        Storage::Cpu(cpu) => Ok((
            &cpu.as_slice::<f32>()?[layout.start_offset()..],
            layout.stride(),
        )),
        _ => candle_core::bail!("matmul: expected a CPU tensor"),
    }
}

/// Multiply-adds below which a product runs on the calling thread (a
/// hand-off to the pool costs more than it saves).
const MATMUL_PAR_MIN: usize = 1 << 21;

/// `a @ b (+ bias)` for f32 CPU tensors: `a` `[M, K]` or `[B or 1, M, K]`, `b`
/// `[K, N]` or `[B or 1, K, N]` (a batch of 1 or a rank-2 operand is
/// broadcast), any strides in the last two dims (transposed views are read
/// in place) → `[M, N]` / `[B, M, N]`. Runs [`sgemm`] on the kernels' threads
/// (split by output rows, or by columns for few rows and the transposed
/// product below) above
/// [`MATMUL_PAR_MIN`] multiply-adds, else on the calling thread — unlike
/// candle's CPU matmul, which hands each product to a second (rayon) pool.
/// When `b` is a transposed view (its rows contiguous, e.g. a weight `Wᵀ`
/// or keys `kᵀ`) and `a` the smaller operand, it computes `(bᵀ aᵀ)ᵀ`: the
/// GEMM then packs `a` instead of copying all of `b` on every call.
/// `bias` (`N` values) is added to every output row (a linear layer's bias,
/// `x Wᵀ + b` with `b = Wᵀ` a transposed view).
pub(crate) fn matmul(a: &Tensor, b: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    let (ba, m, k) = match a.dims() {
        &[m, k] => (1, m, k),
        &[ba, m, k] => (ba, m, k),
        d => candle_core::bail!("matmul: lhs of rank {} (expected 2 or 3)", d.len()),
    };
    let (bb, kb, n) = match b.dims() {
        &[k, n] => (1, k, n),
        &[bb, k, n] => (bb, k, n),
        d => candle_core::bail!("matmul: rhs of rank {} (expected 2 or 3)", d.len()),
    };
    let batch = ba.max(bb);
    if kb != k || (ba != batch && ba != 1) || (bb != batch && bb != 1) {
        candle_core::bail!(
            "matmul: shapes {:?} and {:?} do not fit",
            a.dims(),
            b.dims()
        );
    }
    let ba = batch;
    if bias.is_some_and(|b| b.len() != n) {
        candle_core::bail!("matmul: bias does not have {n} values");
    }
    let mut out = vec![0f32; ba * m * n];
    {
        let (ga, la) = a.storage_and_layout();
        let (gb, lb) = b.storage_and_layout();
        let (av, sa) = strided(&ga, la)?;
        let (bv, sb) = strided(&gb, lb)?;
        let r = sa.len();
        let a_bs = if r == 3 && a.dim(0)? > 1 { sa[0] } else { 0 };
        let (a_rs, a_cs) = (sa[r - 2], sa[r - 1]);
        let r = sb.len();
        let b_bs = if r == 3 && b.dim(0)? > 1 { sb[0] } else { 0 };
        let (b_rs, b_cs) = (sb[r - 2], sb[r - 1]);
        let flip = b_rs == 1 && b_cs != 1 && m <= n;
        let ptr = SyncPtr(out.as_mut_ptr());
        // Rows `r0..r1` and columns `c0..c1` of batch `bi`.
        let block = |bi: usize, r0: usize, r1: usize, c0: usize, c1: usize| {
            let (mr, nc) = (r1 - r0, c1 - c0);
            let ap = av[bi * a_bs + r0 * a_rs..].as_ptr();
            let bp = bv[bi * b_bs + c0 * b_cs..].as_ptr();
            // SAFETY: the block (bi, r0..r1, c0..c1) of `out` is written by
            // this call only; `a` and `b` are read within their layouts.
            unsafe {
                let dst = ptr.ptr().add((bi * m + r0) * n + c0);
                if flip {
                    // dstᵀ (nc × mr) = bᵀ aᵀ, then transposed back in tiles.
                    with_scratch(nc * mr, |t| {
                        sgemm(
                            nc,
                            mr,
                            k,
                            t.as_mut_ptr(),
                            mr,
                            false,
                            bp,
                            (b_cs as isize, b_rs as isize),
                            ap,
                            (a_cs as isize, a_rs as isize),
                        );
                        for j0 in (0..nc).step_by(64) {
                            let j1 = (j0 + 64).min(nc);
                            for i in 0..mr {
                                let d =
                                    std::slice::from_raw_parts_mut(dst.add(i * n + j0), j1 - j0);
                                match bias {
                                    Some(bv) => {
                                        for (v, j) in d.iter_mut().zip(j0..j1) {
                                            *v = t[j * mr + i] + bv[c0 + j];
                                        }
                                    }
                                    None => {
                                        for (v, j) in d.iter_mut().zip(j0..j1) {
                                            *v = t[j * mr + i];
                                        }
                                    }
                                }
                            }
                        }
                    });
                } else {
                    if let Some(bv) = bias {
                        for i in 0..mr {
                            std::slice::from_raw_parts_mut(dst.add(i * n), nc)
                                .copy_from_slice(&bv[c0..c1]);
                        }
                    }
                    sgemm(
                        mr,
                        nc,
                        k,
                        dst,
                        n,
                        bias.is_some(),
                        ap,
                        (a_rs as isize, a_cs as isize),
                        bp,
                        (b_rs as isize, b_cs as isize),
                    );
                }
            }
        };
        let work = ba * m * n * k;
        let threads = num_threads();
        if work < MATMUL_PAR_MIN || threads < 2 {
            for bi in 0..ba {
                block(bi, 0, m, 0, n);
            }
        } else if !flip && ba * m >= 4 * threads * 8 {
            // Row blocks of about two tasks per thread (at least 8 rows).
            let per = (ba * m).div_ceil(2 * threads).max(8);
            let tasks_per_batch = m.div_ceil(per);
            par_tasks(ba * tasks_per_batch, |t| {
                let (bi, j) = (t / tasks_per_batch, t % tasks_per_batch);
                block(bi, j * per, ((j + 1) * per).min(m), 0, n);
            });
        } else {
            // Few rows, or the transposed product (whose GEMM wants all rows
            // of `a` at once): column blocks (multiples of 16).
            let per = n.div_ceil(2 * threads).next_multiple_of(16).max(16);
            let tasks_per_batch = n.div_ceil(per);
            par_tasks(ba * tasks_per_batch, |t| {
                let (bi, j) = (t / tasks_per_batch, t % tasks_per_batch);
                block(bi, 0, m, j * per, ((j + 1) * per).min(n));
            });
        }
    }
    let dev = a.device();
    match a.rank().max(b.rank()) {
        2 => Tensor::from_vec(out, (m, n), dev),
        _ => Tensor::from_vec(out, (ba, m, n), dev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modeling::kernels::softmax::tests::lcg;
    use candle_core::Device;

    /// `matmul` against candle's: plain, transposed views, batched and
    /// broadcast, few rows (the transposed product), sizes above the
    /// threading threshold (row and column splits); with and without bias.
    #[test]
    fn matmul_matches_candle() {
        let dev = Device::Cpu;
        let t = |shape: &[usize], seed| {
            Tensor::from_vec(lcg(shape.iter().product(), 0.5, seed), shape, &dev).unwrap()
        };
        let cases: Vec<(Tensor, Tensor)> = vec![
            (t(&[5, 7], 1), t(&[7, 3], 2)),
            (t(&[8, 256], 3), t(&[2048, 256], 4).t().unwrap()),
            (t(&[2, 8, 64], 5), t(&[96, 64], 6).t().unwrap()),
            (
                t(&[1, 64, 256], 7),
                t(&[1, 1100, 256], 8).transpose(1, 2).unwrap(),
            ),
            (
                t(&[1, 300, 64], 9)
                    .transpose(1, 2)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap(),
                t(&[64, 256], 10),
            ),
            (
                t(&[3, 256, 40], 11).transpose(1, 2).unwrap(),
                t(&[3, 256, 33], 12),
            ),
            (t(&[1, 2000, 64], 13), t(&[64, 256], 14)),
            (
                t(&[256, 64], 18),
                t(&[2, 300, 64], 19).transpose(1, 2).unwrap(),
            ),
            (t(&[1, 64, 256], 20), t(&[3, 256, 900], 21)),
        ];
        for (a, b) in cases {
            let n = *b.dims().last().unwrap();
            let bias = lcg(n, 0.5, 99);
            let plain = a.broadcast_matmul(&b).unwrap();
            let biased = plain
                .broadcast_add(&Tensor::from_slice(&bias, n, &dev).unwrap())
                .unwrap();
            for (want, bias) in [(plain, None), (biased, Some(&bias[..]))] {
                let got = matmul(&a, &b, bias).unwrap();
                assert_eq!(got.dims(), want.dims());
                let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
                let err = err.to_scalar::<f32>().unwrap();
                assert!(err < 1e-4, "{:?} x {:?}: {err}", a.dims(), b.dims());
            }
        }
        // Shapes that do not fit, and a bias of the wrong length: errors.
        assert!(matmul(&t(&[2, 3], 1), &t(&[4, 5], 2), None).is_err());
        assert!(matmul(&t(&[2, 3], 1), &t(&[3, 5], 2), Some(&[0.0; 4])).is_err());
    }
}
