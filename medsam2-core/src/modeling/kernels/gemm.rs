//! The f32 GEMM call of the fast CPU kernels: the `gemm` crate (its
//! AVX-512 / AVX2 / scalar kernel chosen at run time), single-threaded —
//! the callers split the work over threads themselves.

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
