//! Shared building blocks (`sam2.modeling.sam2_utils`): MLP, LayerNorm2d,
//! activations, and a fast depthwise convolution.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

pub use crate::modeling::kernels::bf16_linear::Linear;

use crate::config::Activation;

/// Applies an activation (`get_activation_fn`); GELU is the exact erf form.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Relu => x.relu(),
        Activation::Gelu => crate::modeling::kernels::math::gelu_tensor(x),
    }
}

/// `nn.Linear` with weights `{prefix}.weight` `[out, in]` and `{prefix}.bias`.
/// In the CPU bf16 mode its product runs in bf16 ([`Linear`]).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let l = candle_nn::linear(in_dim, out_dim, vb)?;
    Linear::new(l.weight().clone(), l.bias().cloned())
}

/// Multi-layer perceptron (`MLP`): `layers.{i}` linears, activation between them.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    act: Activation,
    sigmoid_output: bool,
}

impl Mlp {
    /// Loads `num_layers` linears under `{vb}.layers.{i}`.
    pub fn new(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        act: Activation,
        sigmoid_output: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let n = if i == 0 { input_dim } else { hidden_dim };
            let k = if i + 1 == num_layers {
                output_dim
            } else {
                hidden_dim
            };
            layers.push(linear(n, k, vb.pp("layers").pp(i))?);
        }
        Ok(Self {
            layers,
            act,
            sigmoid_output,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < n {
                x = activation(&x, self.act)?;
            }
        }
        if self.sigmoid_output {
            x = candle_nn::ops::sigmoid(&x)?;
        }
        Ok(x)
    }
}

/// Layer norm over the channel dim of an NCHW map (`LayerNorm2d`).
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm2d {
    /// Loads `weight` and `bias` of `num_channels`.
    pub fn new(num_channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(num_channels, "weight")?,
            bias: vb.get(num_channels, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::modeling::kernels::norm::layer_norm_channels_fast(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )? {
            return Ok(y);
        }
        let c = self.weight.dim(0)?;
        let u = x.mean_keepdim(1)?;
        let xc = x.broadcast_sub(&u)?;
        let s = xc.sqr()?.mean_keepdim(1)?;
        let x = xc.broadcast_div(&(s + self.eps)?.sqrt()?)?;
        x.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }
}

/// Standard `nn.LayerNorm` over the last dim.
pub fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<candle_nn::LayerNorm> {
    candle_nn::layer_norm(
        dim,
        candle_nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
        vb,
    )
}

/// Depthwise `nn.Conv2d` (`groups = channels`), stride 1.
///
/// Written by hand because candle splits a grouped conv into one conv per
/// channel, which is 25-35x slower for the memory encoder's 7x7 convs.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    padding: usize,
}

impl DepthwiseConv2d {
    /// Loads `weight` `[C, 1, k, k]` and `bias` `[C]`.
    pub fn new(channels: usize, kernel: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((channels, 1, kernel, kernel), "weight")?,
            bias: vb.get(channels, "bias")?,
            kernel,
            padding,
        })
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let (b, c, h, w) = x.dims4()?;
        let k = self.kernel;
        let p = self.padding;
        let ho = (h + 2 * p + 1).saturating_sub(k);
        let wo = (w + 2 * p + 1).saturating_sub(k);
        if !crate::modeling::kernels::fast_cpu(x) {
            // Device-generic: k² shifted multiply-adds over all channels at
            // once, accumulated in f32 (candle's grouped conv would launch one
            // conv per channel).
            let xp = x
                .to_dtype(DType::F32)?
                .pad_with_zeros(2, p, p)?
                .pad_with_zeros(3, p, p)?;
            let wt = self.weight.to_dtype(DType::F32)?.reshape((c, k * k))?;
            let mut acc = self
                .bias
                .to_dtype(DType::F32)?
                .reshape((1, c, 1, 1))?
                .broadcast_as((b, c, ho, wo))?
                .contiguous()?;
            for ky in 0..k {
                for kx in 0..k {
                    let wk = wt.narrow(1, ky * k + kx, 1)?.reshape((1, c, 1, 1))?;
                    let tap = xp.narrow(2, ky, ho)?.narrow(3, kx, wo)?;
                    acc = (acc + tap.broadcast_mul(&wk)?)?;
                }
            }
            return acc.to_dtype(dtype);
        }
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let ws = self
            .weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bs = self.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut out = vec![0f32; b * c * ho * wo];
        // One (image, channel) plane per task, on all threads.
        crate::modeling::kernels::parallel::par_chunks_mut(&mut out, ho * wo, |plane, dst| {
            let ci = plane % c;
            crate::modeling::kernels::conv::depthwise_plane(
                &xs[plane * h * w..][..h * w],
                w,
                dst,
                wo,
                &ws[ci * k * k..][..k * k],
                k,
                p,
                bs[ci],
            );
        });
        Tensor::from_vec(out, (b, c, ho, wo), x.device())?.to_dtype(dtype)
    }
}

/// Softmax over the last dim in f32 (numerically as PyTorch), back to the
/// input dtype: candle's op on any device
/// ([`crate::modeling::kernels`] holds the CPU kernel).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    crate::modeling::kernels::softmax::softmax_last_generic(x)
}

/// Scaled dot-product attention `softmax(q kᵀ / sqrt(d)) v` on `[.., L, d]`
/// tensors: [`crate::modeling::kernels::attention::sdpa`] (fused on CPU) for
/// `[B, H, L, d]`, candle ops for other ranks.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    use crate::modeling::kernels::attention;
    if q.rank() == 4 {
        return attention::sdpa(q, k, v);
    }
    let d = q.dim(D::Minus1)? as f64;
    attention::sdpa_generic(q, k, v, 1.0 / d.sqrt())
}

/// `nn.Conv2d(cin, cout, kernel_size=1)` (the memory encoder's projections,
/// the mask decoder's `conv_s0` / `conv_s1`): one GEMM per batch item on the
/// NCHW map, no layout change (`kernels::conv` on CPU f32
/// data, a candle matmul elsewhere).
#[derive(Debug, Clone)]
pub struct Conv1x1 {
    /// `[cout, cin]`.
    weight: Tensor,
    /// `[cout, 1]`.
    bias: Tensor,
}

impl Conv1x1 {
    /// Loads `weight` `[cout, cin, 1, 1]` and `bias` `[cout]` under `vb`.
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((cout, cin, 1, 1), "weight")?.reshape((cout, cin))?;
        let bias = vb.get(cout, "bias")?.reshape((cout, 1))?;
        Ok(Self { weight, bias })
    }

    /// Output channels.
    pub fn out_channels(&self) -> Result<usize> {
        self.weight.dim(0)
    }
}

impl Module for Conv1x1 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let cout = self.weight.dim(0)?;
        if let Some(y) = crate::modeling::kernels::conv::conv2d_fast(
            x,
            &self.weight.reshape((cout, c, 1, 1))?,
            Some(&self.bias.reshape(cout)?),
            1,
            0,
        )? {
            return Ok(y);
        }
        let weight = self.weight.to_dtype(x.dtype())?;
        let bias = self.bias.to_dtype(x.dtype())?;
        let x = x.contiguous()?;
        if b == 1 {
            let y = weight
                .matmul(&x.reshape((c, h * w))?)?
                .broadcast_add(&bias)?;
            return y.reshape((1, cout, h, w));
        }
        let mut outs = Vec::with_capacity(b);
        for i in 0..b {
            let xi = x.get(i)?.reshape((c, h * w))?;
            outs.push(weight.matmul(&xi)?.broadcast_add(&bias)?);
        }
        Tensor::stack(&outs, 0)?.reshape((b, cout, h, w))
    }
}
