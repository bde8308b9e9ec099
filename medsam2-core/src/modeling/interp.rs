//! Interpolation that candle lacks: PyTorch's bicubic resize
//! (`F.interpolate(mode="bicubic", align_corners=False)`).

use candle_core::{DType, Result, Tensor};

/// Cubic-convolution constant PyTorch uses (`A = -0.75`).
const CUBIC_A: f32 = -0.75;

/// Kernel for `|x| <= 1`.
fn cubic_near(x: f32) -> f32 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

/// Kernel for `1 < |x| < 2`.
fn cubic_far(x: f32) -> f32 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// The four source indices (clamped to the border) and weights of every output
/// position along one axis, computed in f32 like PyTorch's CPU kernel for f32.
fn cubic_taps(in_size: usize, out_size: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = in_size as f32 / out_size as f32;
    let last = in_size as i64 - 1;
    (0..out_size)
        .map(|o| {
            // align_corners=False source coordinate; no clamping at 0 for cubic.
            let real = scale * (o as f32 + 0.5) - 0.5;
            let idx = (real.floor() as i64).min(last);
            let t = (real - idx as f32).clamp(0.0, 1.0);
            let w = [
                cubic_far(t + 1.0),
                cubic_near(t),
                cubic_near(1.0 - t),
                cubic_far(2.0 - t),
            ];
            let mut ids = [0usize; 4];
            for (j, id) in ids.iter_mut().enumerate() {
                *id = (idx - 1 + j as i64).clamp(0, last) as usize;
            }
            (ids, w)
        })
        .collect()
}

/// Bicubic resize of an `[N, C, H, W]` map to `[N, C, out_h, out_w]`, exactly as
/// `F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False)`
/// (cubic convolution with `A = -0.75`, border indices clamped, f32 arithmetic,
/// rows weighted last). Computed on the host; the result is on `x`'s device and
/// in its dtype.
pub fn interpolate_bicubic(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!("interpolate_bicubic: empty input {h}x{w} or output {out_h}x{out_w}");
    }
    let src = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let ty = cubic_taps(h, out_h);
    let tx = cubic_taps(w, out_w);
    let mut out = vec![0f32; n * c * out_h * out_w];
    for (plane, dst) in src
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(out_h * out_w))
    {
        for (oy, (iy, wy)) in ty.iter().enumerate() {
            for (ox, (ix, wx)) in tx.iter().enumerate() {
                let row = |r: usize| {
                    let s = &plane[r * w..][..w];
                    let mut acc = s[ix[0]] * wx[0];
                    for j in 1..4 {
                        acc += s[ix[j]] * wx[j];
                    }
                    acc
                };
                let mut acc = row(iy[0]) * wy[0];
                for i in 1..4 {
                    acc += row(iy[i]) * wy[i];
                }
                dst[oy * out_w + ox] = acc;
            }
        }
    }
    Tensor::from_vec(out, (n, c, out_h, out_w), x.device())?.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Direct formula in f64: Keys cubic kernel evaluated at the distance of
    /// every clamped neighbour.
    fn reference(src: &[f64], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
        let a = -0.75f64;
        let k = |d: f64| {
            let d = d.abs();
            if d <= 1.0 {
                (a + 2.0) * d.powi(3) - (a + 3.0) * d * d + 1.0
            } else if d < 2.0 {
                a * d.powi(3) - 5.0 * a * d * d + 8.0 * a * d - 4.0 * a
            } else {
                0.0
            }
        };
        let taps = |n: usize, o: usize, i: usize| -> Vec<(usize, f64)> {
            let real = n as f64 / o as f64 * (i as f64 + 0.5) - 0.5;
            let f = real.floor();
            (-1..=2)
                .map(|j| {
                    let p = f + j as f64;
                    (p.clamp(0.0, n as f64 - 1.0) as usize, k(real - p))
                })
                .collect()
        };
        let mut out = vec![0.0; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0.0;
                for (iy, wy) in taps(h, oh, oy) {
                    for (ix, wx) in taps(w, ow, ox) {
                        acc += wy * wx * src[iy * w + ix];
                    }
                }
                out[oy * ow + ox] = acc;
            }
        }
        out
    }

    fn check(h: usize, w: usize, oh: usize, ow: usize) {
        let src: Vec<f32> = (0..h * w)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + i as f32 * 0.01)
            .collect();
        let x = Tensor::from_vec(src.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
        let y = interpolate_bicubic(&x, oh, ow).unwrap();
        assert_eq!(y.dims(), &[1, 1, oh, ow]);
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let src64: Vec<f64> = src.iter().map(|&v| v as f64).collect();
        let r = reference(&src64, h, w, oh, ow);
        let err = y
            .iter()
            .zip(&r)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "{h}x{w} -> {oh}x{ow}: max err {err}");
    }

    #[test]
    fn bicubic_matches_formula() {
        check(7, 7, 8, 8);
        check(7, 7, 32, 32);
        check(7, 7, 256, 256);
        check(14, 14, 24, 24);
        check(5, 9, 3, 20);
    }

    #[test]
    fn bicubic_identity_and_known_values() {
        // Same size: exact copy (weights 0, 1, 0, 0).
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 4))
            .unwrap();
        let y = interpolate_bicubic(&x, 3, 4).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..12).map(|v| v as f32).collect::<Vec<_>>()
        );
        // Row [0, 1] upsampled to 4, worked out by hand: source coordinates
        // -0.25, 0.25, 0.75, 1.25, borders clamped (overshoot on both ends).
        let x = Tensor::new(&[[[[0f32, 1.0]]]], &Device::Cpu).unwrap();
        let y = interpolate_bicubic(&x, 1, 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [-0.10546875f64, 0.2265625, 0.7734375, 1.10546875];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }
}
