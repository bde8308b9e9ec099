//! The one place that chooses between the hand-written CPU kernels and
//! candle's device-generic ops.
//!
//! The fast kernels (`backbones/cpu.rs`, `sam/cpu.rs` and the direct loops of
//! `memory_encoder`, `memory_attention` and `sam2_utils`) read and write raw
//! f32 slices, so they run only on CPU tensors (f32, made contiguous first).
//! Everywhere else — CUDA, Metal, other dtypes — the same model runs on
//! candle ops, and so does the CPU when the fast kernels are switched off:
//! that is the graph a GPU runs, which the CPU can then check against the fast
//! path (`tests/generic_kernels.rs`).
//!
//! The shared kernels live here, one of each, compiled per SIMD level and
//! chosen at run time ([`simd`]: AVX-512, AVX2 + FMA, baseline): `math` (exp,
//! erf, GELU), `softmax`, `norm` (layer norms, channels-last and
//! channels-first), `parallel` (the one thread pool: candle's barrier pool),
//! `gemm` (the one f32 GEMM call and the threaded matmul of tensors that
//! linear layers and the SAM heads use), `conv` (dense 2-D convolution as
//! blocked im2col + GEMM), `layout` (a blocked transpose), [`attention`] (the
//! fused, tiled `softmax(q kᵀ/√d) v`) and the bf16 kernels ([`bf16`],
//! [`bf16_linear`]). The component files keep only what is specific to them.
//!
//! The switch is process-wide: [`set_fast_cpu_kernels`] at run time, or the
//! environment variable [`GENERIC_KERNELS_ENV`] (`1` = generic path) read at the
//! first query.

use core::sync::atomic::{AtomicU8, Ordering};

use candle_core::{DType, Tensor};

/// Environment variable that starts the process on the generic (GPU) graph
/// when set to `1`, `true` or `yes`.
pub const GENERIC_KERNELS_ENV: &str = "MEDSAM2_GENERIC_KERNELS";

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;

static FAST: AtomicU8 = AtomicU8::new(UNSET);

/// Whether the hand-written CPU kernels are used on CPU tensors (default
/// `true`, unless [`GENERIC_KERNELS_ENV`] says otherwise).
pub fn fast_cpu_kernels() -> bool {
    match FAST.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let generic = std::env::var(GENERIC_KERNELS_ENV)
                .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
                .unwrap_or(false);
            // A concurrent `set_fast_cpu_kernels` wins over the environment.
            let _ = FAST.compare_exchange(
                UNSET,
                if generic { OFF } else { ON },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            FAST.load(Ordering::Relaxed) == ON
        }
    }
}

/// Switches the hand-written CPU kernels on (`true`) or off for the whole
/// process; off, CPU tensors take the same candle ops as a GPU. Meant for
/// tests and checks: both paths agree within the parity tolerances.
pub fn set_fast_cpu_kernels(on: bool) {
    FAST.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Whether the fast kernels take `t` (a CPU tensor, kernels switched on);
/// the kernel converts or copies it to contiguous f32 itself.
pub(crate) fn fast_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && fast_cpu_kernels()
}

/// Whether the fast kernels take `t` as it is: f32 on the CPU, kernels on.
pub(crate) fn fast_cpu_f32(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && fast_cpu(t)
}

pub mod attention;
pub mod bf16;
pub mod bf16_linear;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod layout;
pub(crate) mod math;
pub(crate) mod norm;
pub(crate) mod parallel;
pub mod simd;
pub(crate) mod softmax;
