//! Elementwise functions of the CPU kernels: `exp`, `erf` and the exact GELU,
//! in f32, branch-free so that loops over them vectorise (each compiled per
//! SIMD level by the `simd_fn!` loops that call them).
//!
//! Written by hand because `f32::exp` / `libm::erff` are scalar library calls
//! that stop LLVM from vectorising a loop (4-8x slower on the softmaxes and
//! GELUs of the model).

use candle_core::{Result, Tensor};

use super::simd::simd_fn;

/// `e^x` for f32: Cody–Waite reduction by ln 2 and the Cephes `expf`
/// polynomial, ≈ 1 ulp. Inputs are clamped to [−87.3, 88]: below, the result
/// is ≈ 1e-38 rather than 0 (the softmaxes rely on never seeing a denormal or
/// an infinity); `exp(−∞)` is ≈ 1e-38, `exp(NaN)` is NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.0);
    // z = ROUND + round(x·log2 e): its low mantissa bits hold the integer n.
    let z = x * LOG2E + ROUND;
    let n = z - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the bits of z with integer ops only (a float-to-int cast
    // would not vectorise).
    let two_n = f32::from_bits(z.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    two_n * y
}

/// `erf(x)` by Abramowitz–Stegun 7.1.26, the formula of PyTorch's vectorised
/// CPU `erf` (and so of its exact GELU); |error| < 1.5e-7 (a few f32 ulps
/// more near ±1). The more accurate of the two `erf`s this crate had.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let mut r = 1.061_405_4f32;
    r = r * t - 1.453_152;
    r = r * t + 1.421_413_8;
    r = r * t - 0.284_496_74;
    r = r * t + 0.254_829_6;
    let y = 1.0 - r * t * exp(-a * a);
    y.copysign(x)
}

/// Exact-form GELU `x/2 · (1 + erf(x/√2))` (`nn.GELU()`, not the tanh form).
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

simd_fn! {
    /// Exact GELU in place.
    pub(crate) fn gelu_inplace[gelu_inplace_at](xs: &mut [f32]) {
        for v in xs.iter_mut() {
            *v = gelu(*v);
        }
    }
}

simd_fn! {
    /// ReLU in place, `max(x, 0)` as candle's `relu` computes it.
    pub(crate) fn relu_inplace[relu_inplace_at](xs: &mut [f32]) {
        for v in xs.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// The activation `act` of an MLP in place ([`relu_inplace`] or
/// [`gelu_inplace`]).
pub(crate) fn activation_inplace(xs: &mut [f32], act: crate::config::Activation) {
    match act {
        crate::config::Activation::Relu => relu_inplace(xs),
        crate::config::Activation::Gelu => gelu_inplace(xs),
    }
}

/// Exact GELU of a tensor: [`gelu_inplace`] on all threads for f32 CPU
/// tensors (fast kernels on), candle's `gelu_erf` elsewhere.
pub(crate) fn gelu_tensor(x: &Tensor) -> Result<Tensor> {
    if super::fast_cpu_f32(x) {
        let x = x.contiguous()?;
        let data = {
            let (s, l) = x.storage_and_layout();
            crate::modeling::memory_encoder::cpu_f32(&s, l).map(<[f32]>::to_vec)
        };
        if let Some(mut data) = data {
            let per = super::parallel::rows_per_chunk(data.len(), 1, 1 << 15);
            super::parallel::par_chunks_mut(&mut data, per, |_, c| gelu_inplace(c));
            return Tensor::from_vec(data, x.shape(), x.device());
        }
    }
    x.gelu_erf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modeling::kernels::simd::available;

    /// `exp` is within 3e-7 relative of the f64 exponential over its whole
    /// range, exact at 0, tiny (not 0, not denormal) below it.
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        for i in -873_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "exp relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        for x in [-1000.0f32, f32::NEG_INFINITY] {
            let e = exp(x);
            assert!(e > 0.0 && e < 1e-37 && e.is_normal(), "exp({x}) = {e:e}");
        }
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite());
    }

    /// `erf` is within 6e-7 of libm's f64 `erf` and odd.
    #[test]
    fn erf_is_accurate() {
        let mut worst = 0f64;
        for i in -20_000..=20_000 {
            let x = i as f32 * 5e-4;
            worst = worst.max((erf(x) as f64 - libm::erf(x as f64)).abs());
            assert_eq!(erf(-x), -erf(x));
        }
        assert!(worst < 6e-7, "erf abs error {worst:e}");
        assert_eq!(erf(50.0), 1.0);
    }

    /// The ReLU loop of every SIMD build and the activation switch equal
    /// candle's `relu` / `gelu_erf` (within the GELU's error bound).
    #[test]
    fn activations_match_candle() {
        use crate::config::Activation;
        let dev = candle_core::Device::Cpu;
        for n in [1usize, 7, 17, 63, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731).sin() * 6.0).collect();
            let t = Tensor::from_slice(&x, n, &dev).unwrap();
            let want_relu = t.relu().unwrap().to_vec1::<f32>().unwrap();
            for level in available() {
                let mut y = x.clone();
                relu_inplace_at(level, &mut y);
                assert_eq!(y, want_relu, "{level:?} n {n}");
            }
            let mut y = x.clone();
            activation_inplace(&mut y, Activation::Relu);
            assert_eq!(y, want_relu);
            let want_gelu = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
            let mut y = x.clone();
            activation_inplace(&mut y, Activation::Gelu);
            for (a, b) in y.iter().zip(&want_gelu) {
                assert!((a - b).abs() < 1e-5, "gelu {a} vs {b}");
            }
        }
    }

    /// The GELU loop of every SIMD build matches an f64 GELU at odd lengths.
    #[test]
    fn gelu_matches_f64_at_every_level() {
        for n in [1usize, 7, 17, 63, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731).sin() * 6.0).collect();
            for level in available() {
                let mut y = x.clone();
                gelu_inplace_at(level, &mut y);
                for (&a, &b) in x.iter().zip(&y) {
                    let a = a as f64;
                    let want = 0.5 * a * (1.0 + libm::erf(a / 2f64.sqrt()));
                    let err = (b as f64 - want).abs() / a.abs().max(1.0);
                    assert!(err < 1e-6, "{level:?} n {n}: gelu({a}) = {b} vs {want}");
                }
            }
        }
    }
}
