//! Softmax kernels: along contiguous rows ([`softmax_rows`], the tensor op
//! [`softmax_last`]) and across the rows of a group ([`softmax_cols`]).
//!
//! Sums are accumulated in f64 lanes: in f32, the many tiny terms of a long
//! row next to its largest term (`e^0 = 1`) would be rounded away one by one,
//! biasing the sum low (a 28k-key attention row loses ~1e-4 relative that
//! way). The maximum and the exponentials stay in f32.

use candle_core::{DType, Result, Tensor, D};

use super::math::exp;
use super::parallel::{par_chunks_mut, rows_per_chunk};
use super::simd::simd_fn;

/// Below this many elements a softmax runs on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 16;

/// f32 lanes of the maximum, f64 lanes of the sum (two AVX-512 registers).
const LANES: usize = 16;

/// Maximum of `row` (−∞ for an empty row; NaNs are skipped).
#[inline(always)]
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut it = row.chunks_exact(LANES);
    for c in &mut it {
        for j in 0..LANES {
            m[j] = if c[j] > m[j] { c[j] } else { m[j] };
        }
    }
    let max = fold_lanes(m, |a, b| if b > a { b } else { a });
    it.remainder()
        .iter()
        .fold(max, |a, &b| if b > a { b } else { a })
}

/// `f` over the lanes of `a` by halving them (a few vector ops per step,
/// rather than a chain of 16 dependent ones: the per-row cost that dominates
/// short rows).
#[inline(always)]
fn fold_lanes<T: Copy>(mut a: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    let mut w = LANES / 2;
    while w > 0 {
        for j in 0..w {
            a[j] = f(a[j], a[j + w]);
        }
        w /= 2;
    }
    a[0]
}

/// `row[j] = e^{scale·(row[j] − max)}` in place; returns the sum of the
/// results, accumulated in f64 lanes.
#[inline(always)]
pub(crate) fn exp_sub_sum(row: &mut [f32], max: f32, scale: f32) -> f64 {
    let mut acc = [0f64; LANES];
    let mut it = row.chunks_exact_mut(LANES);
    // Two passes over the row (in L1): the exponentials at full f32 width,
    // then their f64 sums (in one loop the compiler ran the exponentials at
    // the f64 lanes' width; measured 20-35 % slower per element).
    for c in &mut it {
        for v in c.iter_mut() {
            *v = exp((*v - max) * scale);
        }
    }
    let mut sum = 0f64;
    for v in it.into_remainder() {
        let e = exp((*v - max) * scale);
        *v = e;
        sum += e as f64;
    }
    for c in row.chunks_exact(LANES) {
        for j in 0..LANES {
            acc[j] += c[j] as f64;
        }
    }
    sum + fold_lanes(acc, |a, b| a + b)
}

simd_fn! {
    /// Softmax of `scale · x` over each row of `n` values of `x`, in place
    /// (`scale > 0`; the maximum is subtracted first).
    pub(crate) fn softmax_rows[softmax_rows_at](x: &mut [f32], n: usize, scale: f32) {
        if n == 0 {
            return;
        }
        for row in x.chunks_exact_mut(n) {
            let max = row_max(row);
            let sum = exp_sub_sum(row, max, scale);
            let inv = (1.0 / sum) as f32;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

simd_fn! {
    /// Softmax across the `t` rows (of `n` values) of each group of `x`,
    /// in place: column `j` of a group is one softmax. `max`, `sum`: `n`
    /// scratch values each.
    pub(crate) fn softmax_cols[softmax_cols_at](x: &mut [f32], t: usize, n: usize, max: &mut [f32], sum: &mut [f64]) {
        if t == 0 || n == 0 {
            return;
        }
        let (max, sum) = (&mut max[..n], &mut sum[..n]);
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
                    *s += *v as f64;
                }
            }
            for s in sum.iter_mut() {
                *s = 1.0 / *s;
            }
            for row in g.chunks_exact_mut(n) {
                for (v, s) in row.iter_mut().zip(sum.iter()) {
                    *v *= *s as f32;
                }
            }
        }
    }
}

/// Contiguous f32 data of a CPU tensor, copied.
fn to_vec(x: &Tensor) -> Result<Option<Vec<f32>>> {
    let (s, l) = x.storage_and_layout();
    Ok(crate::modeling::memory_encoder::cpu_f32(&s, l).map(<[f32]>::to_vec))
}

/// Softmax over the last dim in f32, back to the input dtype: candle's op
/// (any device; PyTorch's numerics).
pub(crate) fn softmax_last_generic(x: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(dt)
}

/// Softmax over the last dim: [`softmax_rows`] on all threads for f32 CPU
/// tensors (fast kernels on), [`softmax_last_generic`] otherwise.
pub(crate) fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    if super::fast_cpu_f32(x) && n > 0 {
        let x = x.contiguous()?;
        if let Some(mut data) = to_vec(&x)? {
            let per = rows_per_chunk(data.len() / n, n, PAR_MIN_ELEMS);
            par_chunks_mut(&mut data, per * n, |_, c| softmax_rows(c, n, 1.0));
            return Tensor::from_vec(data, x.shape(), x.device());
        }
    }
    softmax_last_generic(x)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::modeling::kernels::simd::available;

    /// Deterministic values in about [-a, a] (a fixed LCG: the tests cannot flake).
    pub(crate) fn lcg(n: usize, a: f32, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * a
            })
            .collect()
    }

    fn softmax_f64(row: &[f32], scale: f64) -> Vec<f64> {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let e: Vec<f64> = row
            .iter()
            .map(|&v| ((v as f64 - m) * scale).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// Rows of odd lengths (not multiples of the lanes), one element, long
    /// rows, huge and −∞ entries: every SIMD build within 1e-6 of f64 and
    /// summing to 1 within 1e-6.
    #[test]
    fn rows_match_f64_at_every_level() {
        for (rows, n) in [
            (3usize, 1usize),
            (5, 7),
            (4, 17),
            (2, 33),
            (3, 1031),
            (1, 28_736),
        ] {
            let mut x = lcg(rows * n, 8.0, (rows * 31 + n) as u64);
            if n > 3 {
                x[1] = f32::NEG_INFINITY;
                x[2] = 3.0e4;
            }
            for scale in [1.0f32, 0.125] {
                for level in available() {
                    let mut y = x.clone();
                    softmax_rows_at(level, &mut y, n, scale);
                    for (got, src) in y.chunks(n).zip(x.chunks(n)) {
                        let want = softmax_f64(src, scale as f64);
                        let mut total = 0f64;
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (*g as f64 - w).abs() < 1e-6,
                                "{level:?} {rows}x{n} scale {scale}: {g} vs {w}"
                            );
                            total += *g as f64;
                        }
                        assert!((total - 1.0).abs() < 1e-6, "{level:?}: sum {total}");
                    }
                }
            }
        }
    }

    /// A long row of nearly equal terms sums to 1 (the f64 lanes at work).
    #[test]
    fn long_flat_row_is_unbiased() {
        let n = 1 << 17;
        let mut x = vec![-20.0f32; n];
        x[0] = 0.0;
        softmax_rows(&mut x, n, 1.0);
        let want_rest = (-20f64).exp() / (1.0 + (n - 1) as f64 * (-20f64).exp());
        assert!(
            ((x[1] as f64) / want_rest - 1.0).abs() < 1e-6,
            "{} vs {want_rest}",
            x[1]
        );
    }

    /// Column softmax of each SIMD build against f64.
    #[test]
    fn cols_match_f64_at_every_level() {
        for (groups, t, n) in [
            (2usize, 1usize, 5usize),
            (3, 7, 9),
            (1, 1200, 8),
            (2, 4, 33),
        ] {
            let x = lcg(groups * t * n, 6.0, (t * n) as u64);
            for level in available() {
                let mut y = x.clone();
                let (mut mx, mut sm) = (vec![0f32; n], vec![0f64; n]);
                softmax_cols_at(level, &mut y, t, n, &mut mx, &mut sm);
                for gi in 0..groups {
                    for j in 0..n {
                        let col: Vec<f32> = (0..t).map(|r| x[(gi * t + r) * n + j]).collect();
                        let want = softmax_f64(&col, 1.0);
                        for (r, w) in want.iter().enumerate() {
                            let g = y[(gi * t + r) * n + j] as f64;
                            assert!(
                                (g - w).abs() < 1e-6,
                                "{level:?} {groups}x{t}x{n}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The tensor ops (threaded fast path) equal candle's f64 softmax.
    #[test]
    fn tensor_ops_match_candle_f64() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        for shape in [(3usize, 5usize, 13usize), (2, 300, 1031), (1, 4, 28_736)] {
            let v = lcg(shape.0 * shape.1 * shape.2, 12.0, 7);
            let x = Tensor::from_vec(v, shape, &dev)?;
            let want = candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F64)?)?;
            let d = (softmax_last(&x)?.to_dtype(DType::F64)? - want)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?;
            assert!(d < 1e-6, "softmax_last {shape:?}: {d:e}");
        }
        Ok(())
    }
}
