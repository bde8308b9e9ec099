//! bf16 matrix products on the CPU: `C (f32) = start + A (f32) · B (bf16)`
//! (`start`: C itself, zeros or a bias row), with B a weight matrix packed
//! once at load and A converted to bf16 while it is packed; products are
//! summed in f32.
//!
//! Why hand-written: no well-kept crate computes bf16 GEMMs on the CPU. The
//! `gemm` crate (0.19, candle's engine) has f32/f64/complex and f16 (which it
//! widens to f32); candle's CPU matmul has no bf16 at all ("unsupported dtype
//! BF16 for op matmul"); the BLAS bindings need a system library. The AVX-512
//! BF16 instruction `vdpbf16ps` does two multiply-adds per f32 lane, twice the
//! work of an f32 FMA, so the kernel below is written for it.
//!
//! Dispatch is at run time: the AVX512-BF16 kernel runs when the CPU has
//! `avx512f` + `avx512bf16` (nothing is compiled for a CPU the user may not
//! have: the kernel is a `#[target_feature]` function chosen after detection).
//! Elsewhere [`available`] is `false`, no weight is packed and the bf16 mode
//! runs the f32 kernels on the same weights (see
//! [`super::bf16_linear`]). [`force_fallback`] switches the kernel off for
//! tests.
//!
//! Layout of a packed `k × n` matrix: panels of `NR` columns, each panel
//! holding the rows two by two (`kp = k` rounded up to even): pair `p`,
//! column `j` of the panel at `p·2·NR + 2·j` (row `2p`) and `+1` (row
//! `2p + 1`). Columns past `n` and the row past an odd `k` are zeros. A row of
//! A converted to bf16 in order is then already in the pair layout that
//! `vdpbf16ps` broadcasts.

use core::sync::atomic::{AtomicBool, Ordering};
use std::cell::RefCell;

use half::bf16;

/// Columns per packed panel: `NV` 16-lane f32 accumulators per row (a
/// panel's last columns may be padding: the micro-kernel then runs on fewer
/// vectors).
pub(crate) const NR: usize = 16 * NV;
const NV: usize = 3;

/// Rows of A per micro-kernel call: `NV·MR` = 24 accumulators + `NV` B
/// vectors + a broadcast fit the 32 vector registers. (Measured here, one
/// thread: 8 × 48 reached 170–200 GFLOP/s on Hiera-like shapes, 14 × 32 and
/// 6 × 64 110–190.)
#[cfg(target_arch = "x86_64")]
const MR: usize = 8;

/// Rows of B per cache block (even): one packed panel block is `KC·NR·2`
/// bytes ≈ 16 KiB, half an L1 data cache.
#[cfg(target_arch = "x86_64")]
const KC: usize = (8192 / NR) & !1;

static FORCED_OFF: AtomicBool = AtomicBool::new(false);

/// Switches the AVX512-BF16 kernel off (`true`) for the whole process, so
/// that the fallback runs even on a CPU that has the instructions; it applies
/// to models loaded afterwards. For tests and comparisons.
pub fn force_fallback(off: bool) {
    FORCED_OFF.store(off, Ordering::Relaxed);
}

/// Whether the CPU has the instructions of the bf16 kernel (`avx512f` and
/// `avx512bf16`), regardless of [`force_fallback`].
pub fn cpu_has_bf16_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static F: OnceLock<bool> = OnceLock::new();
        *F.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether bf16 weights are packed and multiplied by the bf16 kernel: the
/// CPU has it and it is not forced off.
pub fn available() -> bool {
    !FORCED_OFF.load(Ordering::Relaxed) && cpu_has_bf16_kernel()
}

/// A `k × n` matrix in bf16, packed for the kernel (see the module docs).
#[derive(Clone)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    data: Vec<bf16>,
}

impl core::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PackedB({}x{}, bf16)", self.k, self.n)
    }
}

impl PackedB {
    /// Packs `B[r, c] = at(r, c)` for `r < k`, `c < n`, rounding each value
    /// to the nearest bf16 (ties to even).
    pub(crate) fn pack(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![bf16::ZERO; panels * pairs * 2 * NR];
        for jp in 0..panels {
            let panel = &mut data[jp * pairs * 2 * NR..(jp + 1) * pairs * 2 * NR];
            for r in 0..k {
                let row = &mut panel[(r / 2) * 2 * NR..];
                for jj in 0..NR.min(n - jp * NR) {
                    row[2 * jj + (r & 1)] = bf16::from_f32(at(r, jp * NR + jj));
                }
            }
        }
        Self { k, n, data }
    }

    /// Packs a row-major `k × n` matrix (`Wᵀ` of a linear layer, `[in, out]`).
    pub(crate) fn from_kn(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "PackedB::from_kn: wrong length");
        Self::pack(k, n, |r, c| w[r * n + c])
    }

    /// Packs `Wᵀ` from a row-major `n × k` matrix (`nn.Linear` weight
    /// `[out, in]`).
    pub(crate) fn from_nk(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), k * n, "PackedB::from_nk: wrong length");
        Self::pack(k, n, |r, c| w[c * k + r])
    }

    /// An empty matrix, to be filled by [`PackedB::repack_keys`] /
    /// [`PackedB::repack_values`] (scratch reused between tiles).
    pub(crate) const fn empty() -> Self {
        Self {
            k: 0,
            n: 0,
            data: Vec::new(),
        }
    }

    /// Resizes to `k × n`, keeping the allocation.
    fn reshape(&mut self, k: usize, n: usize) {
        let len = n.div_ceil(NR) * k.div_ceil(2) * 2 * NR;
        if self.data.len() < len {
            self.data.resize(len, bf16::ZERO);
        }
        self.data.truncate(len);
        (self.k, self.n) = (k, n);
    }

    /// Packs `Kᵀ` (`d × n`) of `n` keys of `d` values each (key `j` at
    /// `keys[j·ld..]`): the attention scores `Q·Kᵀ` as one product. The
    /// CPU must have the kernel ([`available`]).
    pub(crate) fn repack_keys(&mut self, keys: &[f32], n: usize, d: usize, ld: usize) {
        assert!(
            n == 0 || keys.len() >= (n - 1) * ld + d,
            "repack_keys: too short"
        );
        assert!(
            cpu_has_bf16_kernel(),
            "bf16 pack: this CPU lacks avx512_bf16"
        );
        self.reshape(d, n);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features checked above; `reshape` sized `data` for d × n.
        unsafe {
            avx512::pack_keys(keys, n, d, ld, &mut self.data)
        }
    }

    /// Packs `V` (`n × dv`) of `n` keys of `dv` values each (key `j` at
    /// `values[j·ld..]`): the product `P·V`. The CPU must have the kernel.
    pub(crate) fn repack_values(&mut self, values: &[f32], n: usize, dv: usize, ld: usize) {
        assert!(
            n == 0 || values.len() >= (n - 1) * ld + dv,
            "repack_values: too short"
        );
        assert!(
            cpu_has_bf16_kernel(),
            "bf16 pack: this CPU lacks avx512_bf16"
        );
        self.reshape(n, dv);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        unsafe {
            avx512::pack_values(values, n, dv, ld, &mut self.data)
        }
    }

    /// Rows (the reduction dimension).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// `B[r, c]` as stored (for tests and the fallback).
    #[cfg(test)]
    fn get(&self, r: usize, c: usize) -> f32 {
        let pairs = self.k.div_ceil(2);
        let (jp, jj) = (c / NR, c % NR);
        self.data[jp * pairs * 2 * NR + (r / 2) * 2 * NR + 2 * jj + (r & 1)].to_f32()
    }
}

thread_local! {
    /// A converted to bf16 (one block of rows), reused between calls.
    static A_BF16: RefCell<Vec<bf16>> = const { RefCell::new(Vec::new()) };
}

/// What a product is written onto: [`gemm`] computes `c = start + a · b`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start<'a> {
    /// `c`'s own values (`c += a · b`).
    Acc,
    /// Zeros (`c = a · b`; `c`'s old values are never read).
    Zero,
    /// The same row added to every row of the product (`c[i, j] = bias[j] +
    /// (a · b)[i, j]`, a linear layer's bias; `bias.len()` ≥ `b.n()`).
    Bias(&'a [f32]),
}

/// Single-threaded `c[i, j] = start[i, j] + Σ_r a[i, r] · b[r, j]` for
/// `i < m`, `j < b.n()`, `r < b.k()`: `a` has row stride `lda`, `c` row
/// stride `ldc`. A is rounded to bf16, products are summed in f32. With
/// [`Start::Zero`] or [`Start::Bias`] the kernel writes its first block of
/// sums instead of adding them to `c` (no separate pass fills `c` first);
/// the sums are added in the same order either way.
///
/// Panics if the slices are too short or the CPU lacks the kernel's
/// instructions (callers pack weights only when [`available`]).
pub(crate) fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    start: Start<'_>,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k && ldc >= n, "bf16 gemm: strides too small");
    assert!(a.len() >= (m - 1) * lda + k, "bf16 gemm: A too short");
    assert!(c.len() >= (m - 1) * ldc + n, "bf16 gemm: C too short");
    if let Start::Bias(bias) = start {
        assert!(bias.len() >= n, "bf16 gemm: bias too short");
    }
    assert!(
        cpu_has_bf16_kernel(),
        "bf16 gemm: this CPU lacks avx512_bf16"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU features were checked just above; the bounds above
    // cover every access of the kernel.
    unsafe {
        avx512::gemm(m, a, lda, b, c, ldc, start)
    }
}

/// [`gemm`] onto `c`'s own values: `c += a · b`.
pub(crate) fn gemm_acc(m: usize, a: &[f32], lda: usize, b: &PackedB, c: &mut [f32], ldc: usize) {
    gemm(m, a, lda, b, c, ldc, Start::Acc)
}

/// Reference of [`gemm_acc`] in plain Rust (same roundings, f32 sums), on any
/// CPU; the tests check the packed layout with it.
#[cfg(test)]
fn gemm_acc_portable(m: usize, a: &[f32], lda: usize, b: &PackedB, c: &mut [f32], ldc: usize) {
    for i in 0..m {
        for j in 0..b.n {
            let mut s = 0f32;
            for r in 0..b.k {
                s += bf16::from_f32(a[i * lda + r]).to_f32() * b.get(r, j);
            }
            c[i * ldc + j] += s;
        }
    }
}

/// The two tile products of the fused attention
/// ([`super::attention::BlockProducts`]) in bf16 with f32 sums: queries and
/// probabilities are rounded to bf16 as they are packed, each key and value
/// tile is packed once per tile into per-thread scratch. The CPU bf16 mode
/// uses it where [`available`]; the softmax and the running sums stay f32/f64.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bf16Tiles;

thread_local! {
    /// The packed key and value tiles of this thread.
    static TILES: RefCell<(PackedB, PackedB)> = const { RefCell::new((PackedB::empty(), PackedB::empty())) };
}

impl super::attention::BlockProducts for Bf16Tiles {
    unsafe fn scores(
        &self,
        m: usize,
        n: usize,
        d: usize,
        q: *const f32,
        ldq: usize,
        k: *const f32,
        ldk: usize,
        s: *mut f32,
        lds: usize,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        // SAFETY: the trait's contract gives these extents.
        let (q, k, s) = unsafe {
            (
                core::slice::from_raw_parts(q, (m - 1) * ldq + d),
                core::slice::from_raw_parts(k, (n - 1) * ldk + d),
                core::slice::from_raw_parts_mut(s, (m - 1) * lds + n),
            )
        };
        TILES.with(|t| {
            let tiles = &mut *t.borrow_mut();
            tiles.0.repack_keys(k, n, d, ldk);
            gemm(m, q, ldq, &tiles.0, s, lds, Start::Zero);
        });
    }

    unsafe fn accumulate(
        &self,
        m: usize,
        n: usize,
        dv: usize,
        p: *const f32,
        ldp: usize,
        v: *const f32,
        ldv: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        if m == 0 || n == 0 || dv == 0 {
            return;
        }
        // SAFETY: the trait's contract gives these extents.
        let (p, v, o) = unsafe {
            (
                core::slice::from_raw_parts(p, (m - 1) * ldp + n),
                core::slice::from_raw_parts(v, (n - 1) * ldv + dv),
                core::slice::from_raw_parts_mut(o, (m - 1) * ldo + dv),
            )
        };
        TILES.with(|t| {
            let tiles = &mut *t.borrow_mut();
            tiles.1.repack_values(v, n, dv, ldv);
            gemm_acc(m, p, ldp, &tiles.1, o, ldo);
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{bf16, PackedB, Start, A_BF16, KC, MR, NR, NV};
    use core::arch::x86_64::*;

    /// See [`super::gemm`].
    ///
    /// # Safety
    /// The CPU must have `avx512f` and `avx512bf16`; `a` and `c` must hold
    /// the rows and strides given, a bias at least `b.n` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm(
        m: usize,
        a: &[f32],
        lda: usize,
        b: &PackedB,
        c: &mut [f32],
        ldc: usize,
        start: Start<'_>,
    ) {
        let (k, n) = (b.k, b.n);
        let kp = k.div_ceil(2) * 2;
        let pairs = kp / 2;
        if pairs == 0 {
            // No products: c is its start.
            for i in 0..m {
                let row = &mut c[i * ldc..i * ldc + n];
                match start {
                    Start::Acc => {}
                    Start::Zero => row.fill(0.0),
                    Start::Bias(bias) => row.copy_from_slice(&bias[..n]),
                }
            }
            return;
        }
        A_BF16.with(|buf| {
            let mut guard = buf.try_borrow_mut();
            let mut fresh = Vec::new();
            let abuf: &mut Vec<bf16> = match guard.as_mut() {
                Ok(v) => v,
                Err(_) => &mut fresh,
            };
            if abuf.len() < m * kp {
                abuf.resize(m * kp, bf16::ZERO);
            }
            // A → bf16, row by row, the odd tail padded with a zero.
            for i in 0..m {
                convert_row(&a[i * lda..i * lda + k], &mut abuf[i * kp..(i + 1) * kp]);
            }
            let ab = abuf.as_ptr() as *const u32; // bf16 pairs
            let bp = b.data.as_ptr() as *const u16;
            let panels = n.div_ceil(NR);
            let mut p0 = 0;
            while p0 < pairs {
                let np = (KC / 2).min(pairs - p0);
                for jp in 0..panels {
                    let j0 = jp * NR;
                    let cols = NR.min(n - j0);
                    let bpanel = bp.add(jp * pairs * 2 * NR + p0 * 2 * NR);
                    // The first block of sums lands on the start; the
                    // others on c.
                    let base = match start {
                        Start::Zero if p0 == 0 => Base::Zero,
                        Start::Bias(bias) if p0 == 0 => Base::Row(bias.as_ptr().add(j0)),
                        _ => Base::C,
                    };
                    let mut i0 = 0;
                    while i0 < m {
                        let rows = MR.min(m - i0);
                        let ap = ab.add(i0 * pairs + p0);
                        let cp = c.as_mut_ptr().add(i0 * ldc + j0);
                        micro_dispatch(rows, np, ap, pairs, bpanel, cp, ldc, cols, base);
                        i0 += rows;
                    }
                }
                p0 += np;
            }
        });
    }

    /// What the micro-kernel adds its sums to before storing them in C.
    #[derive(Clone, Copy)]
    enum Base {
        /// C's values.
        C,
        /// Nothing.
        Zero,
        /// The same row for every row of C (the panel's bias values).
        Row(*const f32),
    }

    /// See [`PackedB::repack_keys`]: key `j` of panel `jp` is column `jj`;
    /// its channels `2p, 2p+1` are already adjacent in the key's row, so the
    /// row converted to bf16 is copied pair by pair (as `u32`) into the panel.
    ///
    /// # Safety
    /// `avx512f` + `avx512bf16`; `data` holds the packed `d × n` layout.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_keys(keys: &[f32], n: usize, d: usize, ld: usize, data: &mut [bf16]) {
        let pairs = d.div_ceil(2);
        let mut row = [bf16::ZERO; 1024];
        let mut heap = Vec::new();
        let row: &mut [bf16] = if 2 * pairs <= row.len() {
            &mut row[..2 * pairs]
        } else {
            heap.resize(2 * pairs, bf16::ZERO);
            &mut heap
        };
        let out = data.as_mut_ptr() as *mut u32;
        for jp in 0..n.div_ceil(NR) {
            let panel = out.add(jp * pairs * NR);
            for jj in 0..NR {
                let j = jp * NR + jj;
                if j < n {
                    convert_row(&keys[j * ld..j * ld + d], row);
                } else {
                    row.fill(bf16::ZERO);
                }
                let src = row.as_ptr() as *const u32;
                for p in 0..pairs {
                    *panel.add(p * NR + jj) = src.add(p).read_unaligned();
                }
            }
        }
    }

    /// See [`PackedB::repack_values`]: keys `2p, 2p+1` are interleaved
    /// value by value into pair `p` of each panel.
    ///
    /// # Safety
    /// As [`pack_keys`], with `data` holding the packed `n × dv` layout.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_values(
        values: &[f32],
        n: usize,
        dv: usize,
        ld: usize,
        data: &mut [bf16],
    ) {
        let pairs = n.div_ceil(2);
        let width = dv.div_ceil(NR) * NR;
        let mut rows = vec![bf16::ZERO; 2 * width];
        let (r0, r1) = rows.split_at_mut(width);
        for p in 0..pairs {
            let a = 2 * p;
            convert_row(&values[a * ld..a * ld + dv], &mut r0[..dv + dv % 2]);
            if a + 1 < n {
                convert_row(
                    &values[(a + 1) * ld..(a + 1) * ld + dv],
                    &mut r1[..dv + dv % 2],
                );
            } else {
                r1.fill(bf16::ZERO);
            }
            for jp in 0..dv.div_ceil(NR) {
                let dst = &mut data[jp * pairs * 2 * NR + p * 2 * NR..][..2 * NR];
                for jj in 0..NR {
                    dst[2 * jj] = r0[jp * NR + jj];
                    dst[2 * jj + 1] = r1[jp * NR + jj];
                }
            }
        }
    }

    /// Converts `src` (f32) into `dst` (bf16, round to nearest even), with a
    /// zero after an odd length.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn convert_row(src: &[f32], dst: &mut [bf16]) {
        let k = src.len();
        let mut r = 0;
        while r + 32 <= k {
            let lo = _mm512_loadu_ps(src.as_ptr().add(r));
            let hi = _mm512_loadu_ps(src.as_ptr().add(r + 16));
            let v: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(r) as *mut _, v);
            r += 32;
        }
        while r < k {
            let len = (k - r).min(16);
            let mask: __mmask16 = ((1u32 << len) - 1) as __mmask16;
            let x = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(r));
            let v: __m256i = core::mem::transmute(_mm512_cvtneps_pbh(x));
            let mut tmp = [0u16; 16];
            _mm256_storeu_si256(tmp.as_mut_ptr() as *mut _, v);
            for (d, s) in dst[r..r + len].iter_mut().zip(tmp.iter()) {
                *d = bf16::from_bits(*s);
            }
            r += len;
        }
        if k % 2 == 1 {
            dst[k] = bf16::ZERO;
        }
    }

    /// Runs the micro-kernel for `rows` rows (≤ `MR`) and the `cols` (≤ `NR`)
    /// columns of one panel, on only the 16-lane vectors those columns
    /// occupy: a partial panel (the last one of `n` = 256 or of `dv` = 64
    /// values) then costs its width, not the full `NR` (computing the full
    /// width measured 12 % of a 256-wide product and a third of a 64-wide
    /// one spent on padding).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn micro_dispatch(
        rows: usize,
        np: usize,
        a: *const u32,
        lda: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        base: Base,
    ) {
        macro_rules! go {
            ($v:literal: $($r:literal)*) => {
                match rows {
                    $($r => micro::<$r, $v>(np, a, lda, b, c, ldc, cols, base),)*
                    _ => unreachable!(),
                }
            };
        }
        const _: () = assert!(MR == 8 && NV == 3, "micro_dispatch lists 1..=MR and 1..=NV");
        match cols.div_ceil(16) {
            1 => go!(1: 1 2 3 4 5 6 7 8),
            2 => go!(2: 1 2 3 4 5 6 7 8),
            _ => go!(3: 1 2 3 4 5 6 7 8),
        }
    }

    /// `C[R × cols] = base + A[R × 2np] · B[2np × cols]` (A as bf16 pairs
    /// with row stride `lda` pairs, B one packed panel block), on the first
    /// `V` 16-lane vectors of the panel (`cols ≤ 16·V`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn micro<const R: usize, const V: usize>(
        np: usize,
        a: *const u32,
        lda: usize,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        base: Base,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..np {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, b_v) in bv.iter_mut().enumerate() {
                *b_v = _mm512_loadu_ps(b.add(p * 2 * NR + 32 * v) as *const f32);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    core::mem::transmute(_mm512_set1_epi32(*a.add(r * lda + p) as i32));
                for v in 0..V {
                    acc_r[v] = _mm512_dpbf16_ps(
                        acc_r[v],
                        av,
                        core::mem::transmute::<__m512, __m512bh>(bv[v]),
                    );
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            for (v, acc_rv) in acc_r.iter().enumerate() {
                let cv = cols.saturating_sub(16 * v).min(16);
                if cv == 0 {
                    break;
                }
                let m: __mmask16 = if cv == 16 {
                    0xffff
                } else {
                    ((1u32 << cv) - 1) as __mmask16
                };
                let c0 = match base {
                    Base::C => _mm512_maskz_loadu_ps(m, cr.add(16 * v)),
                    Base::Zero => _mm512_setzero_ps(),
                    Base::Row(row) => _mm512_maskz_loadu_ps(m, row.add(16 * v)),
                };
                _mm512_mask_storeu_ps(cr.add(16 * v), m, _mm512_add_ps(c0, *acc_rv));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn fill(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn round(x: f32) -> f64 {
        bf16::from_f32(x).to_f32() as f64
    }

    /// Checks `kernel` against an f64 product of the bf16-rounded inputs:
    /// only the f32 summation may differ (relative to Σ|a·b|).
    fn check(
        kernel: fn(usize, &[f32], usize, &PackedB, &mut [f32], usize),
        m: usize,
        k: usize,
        n: usize,
    ) {
        let (lda, ldc) = (k + 3, n + 5);
        let a = fill(m * lda, 1 + (m * 31 + k * 7 + n) as u64);
        let w = fill(k * n, 2 + (m + k * 13 + n * 3) as u64);
        let c0 = fill(m * ldc, 3);
        let b = PackedB::from_kn(&w, k, n);
        assert_eq!((b.k(), b.n()), (k, n));
        let mut c = c0.clone();
        kernel(m, &a, lda, &b, &mut c, ldc);
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    assert_eq!(got, c0[i * ldc + j], "wrote past column n at ({i}, {j})");
                    continue;
                }
                let (mut s, mut mag) = (c0[i * ldc + j] as f64, 0f64);
                for r in 0..k {
                    let p = round(a[i * lda + r]) * round(w[r * n + j]);
                    s += p;
                    mag += p.abs();
                }
                let tol = 1e-6 * (mag + 1.0) * ((k as f64).sqrt() + 1.0);
                assert!(
                    (got as f64 - s).abs() <= tol,
                    "m={m} k={k} n={n} at ({i}, {j}): {got} vs {s} (tol {tol})"
                );
            }
        }
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (1, 2, 1),
        (3, 5, 7),
        (13, 17, 31),
        (14, 33, 32),
        (15, 64, 33),
        (29, 255, 47),
        (30, 257, 64),
        (41, 513, 97),
        (7, 1031, 5),
    ];

    #[test]
    fn packed_layout_matches_f64_reference() {
        for &(m, k, n) in SHAPES {
            check(gemm_acc_portable, m, k, n);
        }
    }

    #[test]
    fn bf16_kernel_matches_f64_reference() {
        if !cpu_has_bf16_kernel() {
            println!("skipped: this CPU lacks avx512_bf16 (the packed layout is checked by packed_layout_matches_f64_reference)");
            return;
        }
        for &(m, k, n) in SHAPES {
            check(gemm_acc, m, k, n);
        }
    }

    /// `Start::Zero` and `Start::Bias` give exactly what filling C first
    /// and accumulating gives (the same sums in the same order), never read
    /// C's old values, and leave the columns past `n` alone.
    #[test]
    fn start_rows_match_fill_then_accumulate() {
        if !cpu_has_bf16_kernel() {
            println!("skipped: this CPU lacks avx512_bf16");
            return;
        }
        for &(m, k, n) in SHAPES.iter().chain(&[(9, 0, 20), (4, 400, 50)]) {
            let (lda, ldc) = (k + 1, n + 3);
            let a = fill(m * lda, 7 + k as u64);
            let b = PackedB::from_kn(&fill(k * n, 8 + n as u64), k, n);
            let bias = fill(n, 9);
            // C's old values: NaN, which would show if they were read.
            let garbage = vec![f32::NAN; m * ldc];
            for with_bias in [false, true] {
                let mut want = garbage.clone();
                for i in 0..m {
                    let row = &mut want[i * ldc..i * ldc + n];
                    if with_bias {
                        row.copy_from_slice(&bias);
                    } else {
                        row.fill(0.0);
                    }
                }
                gemm_acc(m, &a, lda, &b, &mut want, ldc);
                let mut got = garbage.clone();
                let start = if with_bias {
                    Start::Bias(&bias)
                } else {
                    Start::Zero
                };
                gemm(m, &a, lda, &b, &mut got, ldc, start);
                for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (g == w && *g == 0.0),
                        "m={m} k={k} n={n} bias={with_bias} at {idx}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn packing_rounds_to_nearest_even_and_pads_with_zeros() {
        let w = [
            1.0f32 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -2.5,
            7.0,
            0.1,
            -0.1,
        ];
        let b = PackedB::from_nk(&w, 2, 3); // W [out 2, in 3] -> B [3, 2]
        assert_eq!((b.k(), b.n()), (3, 2));
        assert_eq!(b.get(0, 0), 1.0); // tie rounds to even
        assert_eq!(b.get(1, 0), 1.0 + 4.0 / 256.0);
        assert_eq!(b.get(2, 0), -2.5);
        assert_eq!(b.get(0, 1), 7.0);
        assert_eq!(b.get(2, 1), bf16::from_f32(-0.1).to_f32());
        // the padded row (k odd) and columns (n < NR) are zeros
        assert_eq!(b.data.len(), 2 * 2 * NR);
        assert!(b.data[2 * NR + 1..]
            .iter()
            .step_by(2)
            .all(|v| v.to_f32() == 0.0));
        assert!(b.data[4..2 * NR].iter().all(|v| v.to_f32() == 0.0));
    }

    /// The strided repackers lay keys (as `Kᵀ`) and values out exactly as
    /// the reference packer does, tails and odd sizes included.
    #[test]
    fn repack_matches_reference_layout() {
        if !cpu_has_bf16_kernel() {
            eprintln!("skipped: this CPU lacks avx512_bf16");
            return;
        }
        let mut t = PackedB::empty();
        for &(n, d, pad) in &[
            (1, 1, 0),
            (5, 3, 2),
            (NR + 7, 64, 3),
            (2 * NR, 2 * NR + 1, 1),
        ] {
            let ld = d + pad;
            let x = fill(n * ld, (n * 7 + d) as u64);
            t.repack_keys(&x, n, d, ld);
            let want = PackedB::pack(d, n, |r, c| x[c * ld + r]);
            assert_eq!((t.k(), t.n()), (d, n));
            for r in 0..d {
                for c in 0..n {
                    assert_eq!(t.get(r, c), want.get(r, c), "keys {n}x{d} at ({r}, {c})");
                }
            }
            t.repack_values(&x, n, d, ld);
            let want = PackedB::pack(n, d, |r, c| x[r * ld + c]);
            assert_eq!((t.k(), t.n()), (n, d));
            for r in 0..n {
                for c in 0..d {
                    assert_eq!(t.get(r, c), want.get(r, c), "values {n}x{d} at ({r}, {c})");
                }
            }
        }
    }

    /// The fused attention with bf16 tiles against f64 attention: errors of
    /// bf16 inputs (2⁻⁹ relative per value), far below the f32 sums' scale
    /// of the outputs (values in [-1, 1]).
    #[test]
    fn bf16_tiles_attention_matches_f64() {
        use crate::modeling::kernels::attention::{attention_with, Dims, Layout, K_BLOCK};
        if !cpu_has_bf16_kernel() {
            eprintln!("skipped: this CPU lacks avx512_bf16");
            return;
        }
        for &(lq, lk, d, dv) in &[
            (1, 1, 2, 2),
            (37, K_BLOCK + 45, 64, 33),
            (9, 3 * K_BLOCK + 1, 256, 256),
        ] {
            let (q, k, v) = (fill(lq * d, 11), fill(lk * d, 12), fill(lk * dv, 13));
            // Sharper scores than 1/√d, so the softmax is not flat.
            let scale = 4.0 / (d as f32).sqrt();
            let dims = Dims {
                bh: 1,
                lq,
                lk,
                d,
                dv,
            };
            let mut got = vec![0f32; lq * dv];
            attention_with(
                &Bf16Tiles,
                dims,
                scale,
                (&q, Layout::bhld(1, lq, d)),
                (&k, Layout::bhld(1, lk, d)),
                (&v, Layout::bhld(1, lk, dv)),
                (&mut got, Layout::bhld(1, lq, dv)),
            )
            .unwrap();
            let mut worst = 0f64;
            for i in 0..lq {
                let s: Vec<f64> = (0..lk)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[i * d + c] as f64 * k[j * d + c] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dv {
                    let want = (0..lk).map(|j| e[j] * v[j * dv + c] as f64).sum::<f64>() / z;
                    worst = worst.max((got[i * dv + c] as f64 - want).abs());
                }
            }
            assert!(worst < 2e-2, "{lq}x{lk}x{d}x{dv}: max-abs error {worst:e}");
            // Keys stored transposed (gathered back into rows by the
            // default `scores_kt`): the same result.
            let mut kt = vec![0f32; lk * d];
            for j in 0..lk {
                for c in 0..d {
                    kt[c * lk + j] = k[j * d + c];
                }
            }
            let mut got_t = vec![0f32; lq * dv];
            attention_with(
                &Bf16Tiles,
                dims,
                scale,
                (&q, Layout::bhld(1, lq, d)),
                (&kt, Layout::bhdl(1, lk, d)),
                (&v, Layout::bhld(1, lk, dv)),
                (&mut got_t, Layout::bhld(1, lq, dv)),
            )
            .unwrap();
            assert_eq!(got, got_t, "{lq}x{lk}x{d}x{dv}: transposed keys");
            assert!(got.iter().all(|x| x.is_finite()));
        }
    }
}
