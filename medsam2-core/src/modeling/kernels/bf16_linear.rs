//! Linear layers in the CPU bf16 mode (`ComputeDType::BF16` on the CPU), and
//! the f32 fast path of the same layer (`kernels::gemm::matmul`, on the
//! kernels' pool rather than candle's matmul on rayon's).
//!
//! On the CPU the bf16 mode keeps every tensor in f32 and puts bf16 where the
//! FLOPs are: the weight matrices of the linear layers are rounded to bf16 and
//! packed once at load for the AVX512-BF16 kernel ([`super::bf16`]); their
//! input rows are rounded to bf16 as the kernel packs them; products are summed
//! in f32. The attention products are bf16 too (below); layer norms, softmax,
//! GELU and convolutions stay f32. On a CPU without AVX512-BF16 nothing is packed and the layers run
//! the f32 kernels (the mode then computes as f32).
//!
//! Memory: the f32 weights stay next to the packed copies (the generic graph,
//! the GPU-style path `MEDSAM2_GENERIC_KERNELS=1` and the shape checks use
//! them), so the bf16 mode holds about 1.5× the f32 weight memory. Dropping
//! them is left for later.
//!
//! The attention products (QKᵀ, PV) are not here: the fused attention kernel
//! (`kernels::attention`) runs them as [`super::bf16::Bf16Tiles`], and Hiera's
//! attention (`backbones::cpu::attention`) as `Bf16Tiles` (windows) or
//! `bf16::gemm_acc` on keys and values packed once per head (global
//! attention) when its qkv layer was packed in this mode.
//!
//! Which layers pack is decided while the model is built: [`LoadScope`] (held
//! by `Sam2Base::load` for the duration of the load, on the loading thread)
//! tells the constructors ([`Linear::new`], the image encoder's `TLinear`).

use std::cell::Cell;
use std::sync::Arc;

use candle_core::{Module, Result, Tensor};

use super::bf16::{self, PackedB};

thread_local! {
    static LOAD_BF16: Cell<bool> = const { Cell::new(false) };
}

/// While alive, linear layers built on this thread pack their weights for the
/// bf16 kernel (when the CPU has it). Restores the previous state on drop.
pub struct LoadScope {
    prev: bool,
}

impl LoadScope {
    /// Starts a scope; `bf16` = pack the linear layers built in it.
    pub fn new(bf16: bool) -> Self {
        Self {
            prev: LOAD_BF16.with(|c| c.replace(bf16)),
        }
    }
}

impl Drop for LoadScope {
    fn drop(&mut self) {
        LOAD_BF16.with(|c| c.set(self.prev));
    }
}

/// Whether a layer built now packs its weights: inside a bf16
/// [`LoadScope`] and the kernel is [`bf16::available`].
pub(crate) fn packing() -> bool {
    LOAD_BF16.with(|c| c.get()) && bf16::available()
}

/// A weight matrix `Wᵀ` `[k, n]` as the fast kernels take it: the f32 values
/// and, in the bf16 mode, the packed bf16 copy the product uses instead.
#[derive(Clone, Copy)]
pub(crate) struct Wt<'a> {
    /// `Wᵀ` row-major, `k·n` values.
    pub(crate) f32: &'a [f32],
    /// The same matrix packed in bf16, when the layer runs in bf16.
    pub(crate) bf16: Option<&'a PackedB>,
}

/// Packs `wt` (`Wᵀ`, a contiguous f32 CPU tensor `[k, n]`) when [`packing`].
pub(crate) fn pack_kn(wt: &Tensor) -> Result<Option<Arc<PackedB>>> {
    if !packing() || !wt.device().is_cpu() || wt.rank() != 2 {
        return Ok(None);
    }
    let (k, n) = wt.dims2()?;
    let v = wt
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(Some(Arc::new(PackedB::from_kn(&v, k, n))))
}

impl Wt<'_> {
    /// Number of values of `Wᵀ` (`k·n`).
    pub(crate) fn len(&self) -> usize {
        self.f32.len()
    }
}

/// A borrowed weight of the fast kernels: the f32 tensor data and the packed
/// bf16 copy when there is one.
pub(crate) struct WtRef<'a> {
    f32: crate::modeling::backbones::cpu::F32Ref<'a>,
    bf16: Option<&'a PackedB>,
}

impl<'a> WtRef<'a> {
    /// Pairs the f32 data with its packed copy.
    pub(crate) fn new(
        f32: crate::modeling::backbones::cpu::F32Ref<'a>,
        bf16: Option<&'a PackedB>,
    ) -> Self {
        Self { f32, bf16 }
    }

    /// The weight as the kernels take it.
    pub(crate) fn slice(&self) -> Wt<'_> {
        Wt {
            f32: self.f32.slice(),
            bf16: self.bf16,
        }
    }
}

/// `y[rows × n] = start + x[rows × k] · B` on one thread with the bf16
/// kernel (`k`, `n` = `b`'s; see [`bf16::gemm`]).
///
/// # Safety
/// `x` must hold `rows·k` and `y` `rows·n` elements, not overlapping.
pub(crate) unsafe fn linear_bf16(
    x: *const f32,
    rows: usize,
    b: &PackedB,
    y: *mut f32,
    start: bf16::Start<'_>,
) {
    if rows == 0 {
        return;
    }
    let (k, n) = (b.k(), b.n());
    let xs = std::slice::from_raw_parts(x, rows * k);
    let ys = std::slice::from_raw_parts_mut(y, rows * n);
    bf16::gemm(rows, xs, k, b, ys, n, start);
}

/// `nn.Linear` (weight `[out, in]`, optional bias) that runs its product in
/// bf16 on CPU f32 inputs when the model was loaded in the CPU bf16 mode, in
/// f32 on the kernels' thread pool for other CPU f32 inputs (fast kernels
/// on), and as a plain candle linear layer otherwise (any dtype, any device).
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    packed: Option<Arc<PackedB>>,
    /// The bias as f32 values, read once at load (fast CPU paths).
    bias_f32: Option<Arc<[f32]>>,
    /// Whether f32 CPU inputs take the f32 fast path (the weight is a
    /// contiguous f32 CPU matrix and not packed).
    fast_f32: bool,
}

impl Linear {
    /// From a weight `[out, in]` and an optional bias `[out]`; packs the
    /// weight for the bf16 kernel inside a bf16 [`LoadScope`].
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let packed = if packing() && weight.device().is_cpu() && weight.rank() == 2 {
            let (n, k) = weight.dims2()?;
            let v = weight
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Some(Arc::new(PackedB::from_nk(&v, n, k)))
        } else {
            None
        };
        // The f32 fast path reads the weight in place: a contiguous f32 CPU
        // matrix.
        let fast_f32 = packed.is_none()
            && weight.device().is_cpu()
            && weight.dtype() == candle_core::DType::F32
            && weight.rank() == 2
            && weight.is_contiguous();
        let bias_f32 = match (packed.is_some() || fast_f32, &bias) {
            (true, Some(b)) => Some(
                b.to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?
                    .into(),
            ),
            _ => None,
        };
        Ok(Self {
            inner: candle_nn::Linear::new(weight, bias),
            packed,
            bias_f32,
            fast_f32,
        })
    }

    /// The weight `[out, in]` (f32 values as loaded).
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// Whether the product runs in bf16 (weights packed at load).
    pub fn is_bf16(&self) -> bool {
        self.packed.is_some()
    }

    /// The bf16 product on f32 input `x` `[.., k]`: rows split into blocks
    /// over the kernels' thread pool, the kernel writing each block's
    /// products onto the bias.
    fn forward_bf16(&self, p: &PackedB, x: &Tensor) -> Result<Tensor> {
        let (k, n) = (p.k(), p.n());
        let dims = x.dims();
        let Some((&last, lead)) = dims.split_last() else {
            candle_core::bail!("linear: scalar input");
        };
        if last != k {
            candle_core::bail!("linear: input has {last} features, the layer takes {k}");
        }
        let rows: usize = lead.iter().product();
        let mut shape = lead.to_vec();
        shape.push(n);
        if rows == 0 {
            return Tensor::zeros(shape, candle_core::DType::F32, x.device());
        }
        let xc = x.contiguous()?;
        let xr = crate::modeling::backbones::cpu::F32Ref::new(&xc)?;
        let xs = xr.slice();
        let mut out = vec![0f32; rows * n];
        // The kernel writes its first sums onto the bias (or zeros).
        let start = match &self.bias_f32 {
            Some(b) => bf16::Start::Bias(b),
            None => bf16::Start::Zero,
        };
        use super::parallel::{num_threads, par_tasks, SyncPtr};
        // Row blocks: at least two per thread, at most 256 rows (the A block
        // in bf16 stays in L2).
        let rb = rows.div_ceil(2 * num_threads()).clamp(16, 256);
        let po = SyncPtr(out.as_mut_ptr());
        par_tasks(rows.div_ceil(rb), |t| {
            let r0 = t * rb;
            let nr = rb.min(rows - r0);
            // SAFETY: disjoint row ranges of `out`.
            let y = unsafe { std::slice::from_raw_parts_mut(po.ptr().add(r0 * n), nr * n) };
            bf16::gemm(nr, &xs[r0 * k..(r0 + nr) * k], k, p, y, n, start);
        });
        Tensor::from_vec(out, shape, x.device())
    }

    /// The f32 product on f32 input `x` `[.., k]`: the kernels' threaded
    /// matmul with the weight read in place as `Wᵀ` and the bias added.
    fn forward_f32(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&k, lead)) = dims.split_last() else {
            candle_core::bail!("linear: scalar input");
        };
        let rows: usize = lead.iter().product();
        let y = super::gemm::matmul(
            &x.reshape((rows, k))?,
            &self.inner.weight().t()?,
            self.bias_f32.as_deref(),
        )?;
        let mut shape = lead.to_vec();
        shape.push(y.dim(1)?);
        y.reshape(shape)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.packed {
            Some(p) if super::fast_cpu_f32(x) => self.forward_bf16(p, x),
            None if self.fast_f32 && super::fast_cpu_f32(x) => self.forward_f32(x),
            _ => self.inner.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The bf16 layer against the f32 layer on bf16-rounded inputs (the
    /// exact values it multiplies): only the summation order differs.
    #[test]
    fn bf16_linear_matches_f32_on_rounded_values_and_fallback_is_f32() {
        let (w, b) = (rand(&[37, 45], 1), rand(&[37], 2));
        let x = rand(&[3, 21, 45], 3);
        let round = |t: &Tensor| {
            t.to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        let f32_lin = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let want = (candle_nn::Linear::new(round(&w), None)
            .forward(&round(&x))
            .unwrap()
            + b.broadcast_as((3, 21, 37)).unwrap())
        .unwrap();
        let exact = f32_lin.forward(&x).unwrap();

        let scope = LoadScope::new(true);
        let lin = Linear::new(w.clone(), Some(b.clone())).unwrap();
        drop(scope);
        assert_eq!(lin.is_bf16(), bf16::available());
        let got = lin.forward(&x).unwrap();
        assert_eq!(got.dims(), &[3, 21, 37]);
        let err = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
        let err = err.to_scalar::<f32>().unwrap();
        if lin.is_bf16() {
            assert!(err < 1e-5, "bf16 linear vs f32 on rounded values: {err}");
            // and it is not the f32 product: rounding shows
            let d = (&got - &exact).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() > 1e-5);
        }

        // Forced fallback: nothing packs, the layer is the f32 layer.
        bf16::force_fallback(true);
        let scope = LoadScope::new(true);
        let fb = Linear::new(w.clone(), Some(b.clone()));
        drop(scope);
        bf16::force_fallback(false);
        let fb = fb.unwrap();
        assert!(!fb.is_bf16());
        let got = fb.forward(&x).unwrap();
        let d = (&got - &exact).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);

        // Outside a scope nothing packs.
        assert!(!Linear::new(w, Some(b)).unwrap().is_bf16());
    }

    /// The f32 fast path (the kernels' matmul) against candle's linear layer:
    /// enough rows to split over threads, with and without bias, and a
    /// non-contiguous input.
    #[test]
    fn f32_fast_path_matches_candle_linear() {
        let (w, b) = (rand(&[70, 45], 4), rand(&[70], 5));
        let x = rand(&[2, 1500, 45], 6);
        let xt = rand(&[45, 300], 7).t().unwrap(); // [300, 45], strided
        for bias in [Some(b.clone()), None] {
            let lin = Linear::new(w.clone(), bias.clone()).unwrap();
            assert!(lin.fast_f32 && !lin.is_bf16());
            let reference = candle_nn::Linear::new(w.clone(), bias);
            for input in [&x, &xt] {
                let got = lin.forward(input).unwrap();
                let want = reference.forward(input).unwrap();
                assert_eq!(got.dims(), want.dims());
                let d = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() <= 1e-5);
            }
        }
        // A wrong width is an error, not a panic.
        assert!(Linear::new(w, Some(b))
            .unwrap()
            .forward(&rand(&[3, 44], 8))
            .is_err());
    }
}
