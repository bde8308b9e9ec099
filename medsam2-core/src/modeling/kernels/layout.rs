//! Layout changes of f32 CPU data that candle's strided copy does slowly.

use candle_core::{Result, Tensor};

/// `[B, C, N]` → `[B, N, C]` (contiguous) for an f32 CPU tensor of rank 3.
pub(crate) fn transpose_last2(x: &Tensor) -> Result<Tensor> {
    let (b, c, n) = x.dims3()?;
    let x = x.contiguous()?;
    let mut out = vec![0f32; b * c * n];
    {
        let xr = crate::modeling::backbones::cpu::F32Ref::new(&x)?;
        let src = xr.slice();
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
