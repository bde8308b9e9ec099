//! Run-time choice of the SIMD instruction set for the CPU kernels.
//!
//! The kernels are plain loops written so that LLVM vectorises them; the
//! `simd_fn!` macro compiles each one three times — with
//! AVX-512 (F, BW, DQ, VL + FMA), with AVX2 + FMA, and for the baseline
//! target — and calls the best copy the CPU running the program supports.
//! Nothing is compiled for a CPU the user may not have (no `target-cpu`).
//!
//! The level is detected once; the environment variable [`SIMD_ENV`]
//! (`scalar`, `avx2` or `avx512`) can lower it, for example to check on an
//! AVX-512 machine what an AVX2-only machine computes.

use core::sync::atomic::{AtomicU8, Ordering};

/// Environment variable that caps the SIMD level (`scalar`, `avx2`, `avx512`).
pub const SIMD_ENV: &str = "MEDSAM2_SIMD";

/// An instruction-set level of the kernels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The baseline target (SSE2 on x86-64; NEON etc. elsewhere).
    Scalar = 1,
    /// AVX2 + FMA.
    Avx2 = 2,
    /// AVX-512 F/BW/DQ/VL + FMA.
    Avx512 = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx512vl")
            && has!("fma")
        {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// The level the kernels run at: [`detected`], lowered by [`SIMD_ENV`].
#[inline]
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Scalar,
        2 => Level::Avx2,
        3 => Level::Avx512,
        _ => {
            let cap = match std::env::var(SIMD_ENV)
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                Ok("scalar") | Ok("none") => Level::Scalar,
                Ok("avx2") => Level::Avx2,
                _ => Level::Avx512,
            };
            let l = detected().min(cap);
            LEVEL.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// Defines a kernel `name` compiled once per [`Level`] and dispatched at run
/// time, plus `name_at(level, …)` that runs a given level (clamped to what
/// the CPU has), for tests that compare the builds:
///
/// ```text
/// simd_fn! {
///     /// Doc.
///     pub(crate) fn scale[scale_at](x: &mut [f32], s: f32) { for v in x { *v *= s } }
/// }
/// ```
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident [$at:ident] ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $at($crate::modeling::kernels::simd::level(), $($arg),*)
        }

        #[allow(dead_code, clippy::too_many_arguments)]
        $vis fn $at(level: $crate::modeling::kernels::simd::Level, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                let level = level.min($crate::modeling::kernels::simd::detected_cached());
                match level {
                    // SAFETY: the CPU supports the enabled features (the level
                    // is clamped to what it has).
                    $crate::modeling::kernels::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::modeling::kernels::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::modeling::kernels::simd::Level::Scalar => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = level;
            inner($($arg),*)
        }
    };
}

pub(crate) use simd_fn;

/// [`detected`], computed once.
#[inline]
pub fn detected_cached() -> Level {
    static D: AtomicU8 = AtomicU8::new(0);
    match D.load(Ordering::Relaxed) {
        1 => Level::Scalar,
        2 => Level::Avx2,
        3 => Level::Avx512,
        _ => {
            let l = detected();
            D.store(l as u8, Ordering::Relaxed);
            l
        }
    }
}

/// Every level this CPU can run, lowest first (for tests).
pub fn available() -> Vec<Level> {
    [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= detected_cached())
        .collect()
}
