//! Layout changes of f32 CPU data that candle's strided copy does slowly.

use candle_core::{Result, Tensor};

use super::parallel::{par_tasks, SyncPtr};

/// Token columns per task of [`transpose_impl`] (a multiple of the tile width).
const TASK_COLS: usize = 512;

/// `[B, C, N]` → `[B, N, C]` (contiguous) for an f32 CPU tensor of rank 3.
pub(crate) fn transpose_last2(x: &Tensor) -> Result<Tensor> {
    transpose_impl(x, None).map(|(t, _)| t)
}

/// `[B, C, N]` → `t = [B, N, C]` (contiguous) and `t + add` (`add`: `[N, C]`
/// or `[1, N, C]`) in one pass, for f32 CPU tensors: image tokens and their
/// sum with the position encoding.
pub(crate) fn transpose_and_add(x: &Tensor, add: &Tensor) -> Result<(Tensor, Tensor)> {
    match transpose_impl(x, Some(add))? {
        (t, Some(s)) => Ok((t, s)),
        (_, None) => candle_core::bail!("transpose_and_add: no sum"),
    }
}

/// [`transpose_last2`], and with `add` also the sum, on the kernels' threads
/// in blocks of token columns.
fn transpose_impl(x: &Tensor, add: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
    let (b, c, n) = x.dims3()?;
    let x = x.contiguous()?;
    let add = add.map(|a| a.contiguous()).transpose()?;
    let mut out = vec![0f32; b * c * n];
    let mut sum = vec![0f32; if add.is_some() { b * c * n } else { 0 }];
    {
        let xr = crate::modeling::backbones::cpu::F32Ref::new(&x)?;
        let ar = add
            .as_ref()
            .map(crate::modeling::backbones::cpu::F32Ref::new)
            .transpose()?;
        let src = xr.slice();
        let addv = ar.as_ref().map(|a| a.slice());
        if addv.is_some_and(|a| a.len() != n * c) {
            candle_core::bail!("transpose_and_add: the addend is not [{n}, {c}]");
        }
        let (po, ps) = (SyncPtr(out.as_mut_ptr()), SyncPtr(sum.as_mut_ptr()));
        let blocks = n.div_ceil(TASK_COLS);
        let work = b * c * n;
        let tasks = if work < 1 << 16 { 1 } else { b * blocks };
        let run = |bi: usize, n0: usize, n1: usize| {
            let s = &src[bi * c * n..(bi + 1) * c * n];
            // SAFETY: token rows n0..n1 of image bi belong to this call only.
            let d = unsafe {
                std::slice::from_raw_parts_mut(po.ptr().add((bi * n + n0) * c), (n1 - n0) * c)
            };
            transpose_tiles(s, d, c, n, n0, n1);
            if let Some(a) = addv {
                // SAFETY: as above, in the second output.
                let e = unsafe {
                    std::slice::from_raw_parts_mut(ps.ptr().add((bi * n + n0) * c), (n1 - n0) * c)
                };
                for ((e, d), a) in e.iter_mut().zip(d.iter()).zip(&a[n0 * c..n1 * c]) {
                    *e = d + a;
                }
            }
        };
        if tasks == 1 {
            (0..b).for_each(|bi| run(bi, 0, n));
        } else {
            par_tasks(tasks, |t| {
                let (bi, j) = (t / blocks, t % blocks);
                run(bi, j * TASK_COLS, ((j + 1) * TASK_COLS).min(n));
            });
        }
    }
    let dev = x.device();
    let t = Tensor::from_vec(out, (b, n, c), dev)?;
    let s = match add {
        Some(_) => Some(Tensor::from_vec(sum, (b, n, c), dev)?),
        None => None,
    };
    Ok((t, s))
}

/// Token rows `n0..n1` of the transpose of `s` (`[c, n]`) into `d`
/// (`[n1 − n0, c]`), in tiles of 8 source rows (their stride can map them to
/// one cache set) by 64 columns.
fn transpose_tiles(s: &[f32], d: &mut [f32], c: usize, n: usize, n0: usize, n1: usize) {
    const TC: usize = 8;
    const TN: usize = 64;
    for c0 in (0..c).step_by(TC) {
        let c1 = (c0 + TC).min(c);
        for t0 in (n0..n1).step_by(TN) {
            let t1 = (t0 + TN).min(n1);
            for ni in t0..t1 {
                let drow = &mut d[(ni - n0) * c + c0..(ni - n0) * c + c1];
                for (k, v) in drow.iter_mut().enumerate() {
                    *v = s[(c0 + k) * n + ni];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modeling::kernels::softmax::tests::lcg;
    use candle_core::Device;

    /// Transposes with and without the addend, one and several tasks,
    /// against candle's transpose and add.
    #[test]
    fn transpose_and_add_match_candle() {
        let dev = Device::Cpu;
        for (b, c, n) in [(1usize, 3usize, 5usize), (2, 256, 1100), (1, 64, 4096)] {
            let x = Tensor::from_vec(lcg(b * c * n, 1.0, 1), (b, c, n), &dev).unwrap();
            let pe = Tensor::from_vec(lcg(n * c, 1.0, 2), (1, n, c), &dev).unwrap();
            let want = x.transpose(1, 2).unwrap().contiguous().unwrap();
            let want_sum = want.broadcast_add(&pe).unwrap();
            let (t, s) = transpose_and_add(&x, &pe).unwrap();
            let same = |a: &Tensor, b: &Tensor| {
                a.dims() == b.dims()
                    && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                        == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            assert!(same(&t, &want) && same(&s, &want_sum), "{b}x{c}x{n}");
            assert!(same(&transpose_last2(&x).unwrap(), &want));
        }
        let x = Tensor::zeros((1, 4, 6), candle_core::DType::F32, &dev).unwrap();
        let bad = Tensor::zeros((5, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(transpose_and_add(&x, &bad).is_err());
    }
}
