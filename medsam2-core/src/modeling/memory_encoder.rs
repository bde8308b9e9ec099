//! Memory encoder (`sam2.modeling.memory_encoder`): turns a frame's pixel
//! features and its predicted mask into a memory for later frames.
//!
//! Pipeline: the mask goes through [`MaskDownSampler`] (strided convs down to
//! the feature stride), is added to the 1x1-projected pixel features, fused by
//! ConvNeXt blocks ([`Fuser`] of [`CXBlock`]s), projected to `out_dim` and
//! paired with a sine position encoding.

use candle_core::{Device, Layout, Module, Result, Storage, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::modeling::backbones::cpu::{mlp_residual_nchw, F32Ref, MlpWeights, TLinear};

use crate::config::{
    CXBlockConfig, FuserConfig, MaskDownSamplerConfig, MemoryEncoderConfig, Sam2Config,
};
use crate::modeling::position_encoding::PositionEmbeddingSine;
use crate::modeling::sam2_utils::{Conv1x1, DepthwiseConv2d, LayerNorm2d};

/// Epsilon of every `LayerNorm2d` in the memory encoder.
const LN2D_EPS: f64 = 1e-6;

/// Contiguous f32 slice of a CPU tensor's storage (no copy), if it is one.
pub(crate) fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(s) => {
            let (o1, o2) = layout.contiguous_offsets()?;
            s.as_slice::<f32>().ok().map(|v| &v[o1..o2])
        }
        _ => None,
    }
}

/// Layer norm over the last dim, computed in two passes (mean, then centred
/// variance) as PyTorch does; the threaded kernel for f32 CPU tensors
/// ([`crate::modeling::kernels`]), tensor ops elsewhere. `weight`, `bias`: `[n]`.
pub(crate) fn layer_norm_last(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if let Some(y) = crate::modeling::kernels::norm::layer_norm_last_fast(x, weight, bias, eps)? {
        return Ok(y);
    }
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&weight.to_dtype(x.dtype())?)?
        .broadcast_add(&bias.to_dtype(x.dtype())?)
}

/// Mask downsampler (`MaskDownSampler`): `log_stride(total_stride)` blocks of
/// strided conv → `LayerNorm2d` → GELU with channels `1 → s² → s⁴ → …`, then a
/// 1x1 conv to `embed_dim` (`encoder.{3i, 3i+1}` and `encoder.{3n}`).
#[derive(Debug, Clone)]
pub struct MaskDownSampler {
    blocks: Vec<(Conv2d, LayerNorm2d)>,
    out: Conv1x1,
}

impl MaskDownSampler {
    /// Number of strided conv blocks (`total_stride = stride^n`).
    pub fn num_layers(cfg: &MaskDownSamplerConfig) -> Result<usize> {
        let mut n = 0;
        let mut s = 1;
        while s < cfg.total_stride {
            s *= cfg.stride.max(2);
            n += 1;
        }
        if s != cfg.total_stride || cfg.stride < 2 {
            candle_core::bail!(
                "mask downsampler: total_stride {} is not a power of stride {}",
                cfg.total_stride,
                cfg.stride
            );
        }
        Ok(n)
    }

    /// Loads `encoder.*` under `vb` (`memory_encoder.mask_downsampler`).
    pub fn new(cfg: &MaskDownSamplerConfig, vb: VarBuilder) -> Result<Self> {
        let n = Self::num_layers(cfg)?;
        let vb = vb.pp("encoder");
        let conv_cfg = Conv2dConfig {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: 1,
            groups: 1,
            cudnn_fwd_algo: None,
        };
        let mut blocks = Vec::with_capacity(n);
        let mut cin = 1;
        for i in 0..n {
            let cout = cin * cfg.stride * cfg.stride;
            let conv = candle_nn::conv2d(cin, cout, cfg.kernel_size, conv_cfg, vb.pp(3 * i))?;
            let norm = LayerNorm2d::new(cout, LN2D_EPS, vb.pp(3 * i + 1))?;
            blocks.push((conv, norm));
            cin = cout;
        }
        let out = Conv1x1::new(cin, cfg.embed_dim, vb.pp(3 * n))?;
        Ok(Self { blocks, out })
    }
}

impl Module for MaskDownSampler {
    /// `[B, 1, H, W]` → `[B, embed_dim, H / total_stride, W / total_stride]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (conv, norm) in &self.blocks {
            let y = crate::modeling::kernels::conv::conv2d_layer(conv, &x)?;
            x = crate::modeling::kernels::math::gelu_tensor(&norm.forward(&y)?)?;
        }
        self.out.forward(&x)
    }
}

/// The block's large-kernel conv: depthwise (fast path) or dense.
#[derive(Debug, Clone)]
enum BlockConv {
    Depthwise(DepthwiseConv2d),
    Dense(Conv2d),
}

/// ConvNeXt block (`CXBlock`): 7x7 (depthwise) conv → `LayerNorm2d` (`norm`) →
/// `pwconv1` → GELU → `pwconv2` → `gamma` scale, plus the input.
#[derive(Debug, Clone)]
pub struct CXBlock {
    dwconv: BlockConv,
    norm_weight: Tensor,
    norm_bias: Tensor,
    /// `pwconv1` / `pwconv2`, weights stored transposed for the fused MLP
    /// kernel (`backbones::cpu::mlp_residual_nchw`).
    pwconv1: TLinear,
    pwconv2: TLinear,
    gamma: Option<Tensor>,
}

impl CXBlock {
    /// Loads `dwconv`, `norm`, `pwconv1`, `pwconv2` and (with layer scale) `gamma`.
    pub fn new(cfg: &CXBlockConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.dim;
        let dwconv = if cfg.use_dwconv {
            BlockConv::Depthwise(DepthwiseConv2d::new(
                dim,
                cfg.kernel_size,
                cfg.padding,
                vb.pp("dwconv"),
            )?)
        } else {
            let c = Conv2dConfig {
                padding: cfg.padding,
                ..Default::default()
            };
            BlockConv::Dense(candle_nn::conv2d(
                dim,
                dim,
                cfg.kernel_size,
                c,
                vb.pp("dwconv"),
            )?)
        };
        let norm = vb.pp("norm");
        Ok(Self {
            dwconv,
            norm_weight: norm.get(dim, "weight")?,
            norm_bias: norm.get(dim, "bias")?,
            pwconv1: TLinear::new(dim, 4 * dim, vb.pp("pwconv1"))?,
            pwconv2: TLinear::new(4 * dim, dim, vb.pp("pwconv2"))?,
            gamma: if cfg.layer_scale {
                Some(vb.get(dim, "gamma")?)
            } else {
                None
            },
        })
    }
}

impl Module for CXBlock {
    /// `[B, C, H, W]` → `[B, C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.dwconv {
            BlockConv::Depthwise(c) => c.forward(x)?,
            BlockConv::Dense(c) => c.forward(x)?,
        };
        if let Some(out) = self.mlp_fast(x, &y)? {
            return Ok(out);
        }
        // Channels-last: the norm and the pointwise linears act on the last dim.
        let y = y.permute((0, 2, 3, 1))?.contiguous()?;
        let y = layer_norm_last(&y, &self.norm_weight, &self.norm_bias, LN2D_EPS)?;
        let y = self
            .pwconv2
            .forward(&crate::modeling::kernels::math::gelu_tensor(
                &self.pwconv1.forward(&y)?,
            )?)?;
        let y = match &self.gamma {
            Some(g) => y.broadcast_mul(g)?,
            None => y,
        };
        x + y.permute((0, 3, 1, 2))?
    }
}

impl CXBlock {
    /// The block after its conv on f32 CPU tensors: norm, MLP, `gamma` and
    /// the residual in one fused kernel on the channels-first map
    /// (`x` the block input, `y` its conv output); `None` off the fast path.
    fn mlp_fast(&self, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        if !crate::modeling::kernels::fast_cpu_f32(x) || !crate::modeling::kernels::fast_cpu_f32(y)
        {
            return Ok(None);
        }
        let (Ok((w1, b1)), Ok((w2, b2))) = (self.pwconv1.fast(), self.pwconv2.fast()) else {
            return Ok(None);
        };
        let (b, c, h, w) = x.dims4()?;
        if y.dims4()? != (b, c, h, w) {
            candle_core::bail!(
                "CXBlock: conv output {:?} differs from its input {:?}",
                y.shape(),
                x.shape()
            );
        }
        let (x, y) = (x.contiguous()?, y.contiguous()?);
        let (xr, yr) = (F32Ref::new(&x)?, F32Ref::new(&y)?);
        let (ln_w, ln_b) = (
            F32Ref::new(&self.norm_weight)?,
            F32Ref::new(&self.norm_bias)?,
        );
        let gamma = match &self.gamma {
            Some(g) => Some(F32Ref::new(g)?),
            None => None,
        };
        let weights = MlpWeights {
            ln_w: ln_w.slice(),
            ln_b: ln_b.slice(),
            eps: LN2D_EPS as f32,
            w1: w1.slice(),
            b1: b1.slice(),
            w2: w2.slice(),
            b2: b2.slice(),
            act: crate::config::Activation::Gelu,
            residual_last: true,
        };
        let mut out = vec![0f32; b * c * h * w];
        mlp_residual_nchw(
            xr.slice(),
            yr.slice(),
            &mut out,
            (b, c, h * w),
            &weights,
            gamma.as_ref().map(|g| g.slice()),
        )?;
        Tensor::from_vec(out, (b, c, h, w), x.device()).map(Some)
    }
}

/// Fuser (`Fuser`): optional 1x1 input projection (`proj`), then `layers.{i}`.
#[derive(Debug, Clone)]
pub struct Fuser {
    proj: Option<Conv1x1>,
    layers: Vec<CXBlock>,
}

impl Fuser {
    /// Loads `proj` (if configured) and `layers.{i}` under `vb` (`memory_encoder.fuser`).
    pub fn new(cfg: &FuserConfig, vb: VarBuilder) -> Result<Self> {
        let proj = if cfg.input_projection {
            Some(Conv1x1::new(cfg.layer.dim, cfg.layer.dim, vb.pp("proj"))?)
        } else {
            None
        };
        let layers = (0..cfg.num_layers)
            .map(|i| CXBlock::new(&cfg.layer, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { proj, layers })
    }
}

impl Module for Fuser {
    /// `[B, C, H, W]` → `[B, C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = match &self.proj {
            Some(p) => p.forward(x)?,
            None => x.clone(),
        };
        for l in &self.layers {
            x = l.forward(&x)?;
        }
        Ok(x)
    }
}

/// Memory encoder (`MemoryEncoder`).
#[derive(Debug, Clone)]
pub struct MemoryEncoder {
    mask_downsampler: MaskDownSampler,
    pix_feat_proj: Conv1x1,
    fuser: Fuser,
    out_proj: Option<Conv1x1>,
    position_encoding: PositionEmbeddingSine,
    out_dim: usize,
}

impl MemoryEncoder {
    /// Loads `mask_downsampler`, `pix_feat_proj`, `fuser` and (when
    /// `out_dim != in_dim`) `out_proj` under `vb` (`memory_encoder`).
    pub fn new(cfg: &MemoryEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let out_proj = if cfg.out_dim != cfg.in_dim {
            Some(Conv1x1::new(cfg.in_dim, cfg.out_dim, vb.pp("out_proj"))?)
        } else {
            None
        };
        Ok(Self {
            mask_downsampler: MaskDownSampler::new(
                &cfg.mask_downsampler,
                vb.pp("mask_downsampler"),
            )?,
            pix_feat_proj: Conv1x1::new(cfg.in_dim, cfg.in_dim, vb.pp("pix_feat_proj"))?,
            fuser: Fuser::new(&cfg.fuser, vb.pp("fuser"))?,
            out_proj,
            position_encoding: PositionEmbeddingSine::new(cfg.position_encoding.clone()),
            out_dim: cfg.out_dim,
        })
    }

    /// Memory channels (`out_dim`).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `forward(pix_feat, masks, skip_mask_sigmoid)`: `pix_feat` `[B, in_dim, h, w]`,
    /// `masks` `[B, 1, h·stride, w·stride]` (logits, or probabilities when
    /// `skip_mask_sigmoid`) → (`vision_features` `[B, out_dim, h, w]`,
    /// `vision_pos_enc` `[B, out_dim, h, w]`).
    pub fn forward(
        &self,
        pix_feat: &Tensor,
        masks: &Tensor,
        skip_mask_sigmoid: bool,
    ) -> Result<(Tensor, Tensor)> {
        let masks = if skip_mask_sigmoid {
            masks.clone()
        } else {
            candle_nn::ops::sigmoid(masks)?
        };
        let masks = self
            .mask_downsampler
            .forward(&masks.to_dtype(pix_feat.dtype())?)?;
        let (b, _, h, w) = pix_feat.dims4()?;
        if masks.dims4()? != (b, self.pix_feat_proj.out_channels()?, h, w) {
            candle_core::bail!(
                "memory encoder: downsampled mask {:?} does not match pixel features {:?}",
                masks.shape(),
                pix_feat.shape()
            );
        }
        let x = (self.pix_feat_proj.forward(pix_feat)? + masks)?;
        let x = self.fuser.forward(&x)?;
        let x = match &self.out_proj {
            Some(p) => p.forward(&x)?,
            None => x,
        };
        let pos = self
            .position_encoding_for(b, h, w, x.device())?
            .to_dtype(x.dtype())?;
        Ok((x, pos))
    }

    /// The memory position encoding `[B, out_dim, h, w]` (independent of the content).
    pub fn position_encoding_for(
        &self,
        b: usize,
        h: usize,
        w: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let pe = self.position_encoding.encode(h, w, device)?;
        if b == 1 {
            Ok(pe)
        } else {
            pe.repeat((b, 1, 1, 1))
        }
    }

    /// `SAM2Base._encode_new_memory`: turns high-resolution mask logits into the
    /// memory-encoder input (binarised at 0 when `is_mask_from_pts` and the
    /// model binarises click masks, else sigmoid; then `·scale + bias`),
    /// encodes it with `pix_feat` (`[B, C, h, w]`, the frame's top-level
    /// features) and adds the spatial no-object embedding where
    /// `object_score_logits` (`[B, 1]`) ≤ 0.
    ///
    /// `pred_masks_high_res`: `[B, 1, S, S]` logits. Returns
    /// (`maskmem_features` `[B, Cm, h, w]`, `maskmem_pos_enc` `[B, Cm, h, w]`),
    /// in f32; the video predictor stores the features in bf16.
    pub fn encode_new_memory(
        &self,
        pix_feat: &Tensor,
        pred_masks_high_res: &Tensor,
        object_score_logits: Option<&Tensor>,
        is_mask_from_pts: bool,
        params: &NewMemoryParams,
    ) -> Result<(Tensor, Tensor)> {
        let masks = if params.non_overlap_masks {
            apply_non_overlapping_constraints(pred_masks_high_res)?
        } else {
            pred_masks_high_res.clone()
        };
        let mask_for_mem = if params.binarize_mask_from_pts && is_mask_from_pts {
            masks.gt(0.0)?.to_dtype(masks.dtype())?
        } else {
            candle_nn::ops::sigmoid(&masks)?
        };
        let mask_for_mem = if params.sigmoid_scale != 1.0 {
            (mask_for_mem * params.sigmoid_scale)?
        } else {
            mask_for_mem
        };
        let mask_for_mem = if params.sigmoid_bias != 0.0 {
            (mask_for_mem + params.sigmoid_bias)?
        } else {
            mask_for_mem
        };
        let (feats, pos) = self.forward(pix_feat, &mask_for_mem, true)?;
        let feats = match (&params.no_obj_embed_spatial, object_score_logits) {
            (Some(embed), Some(scores)) => {
                let b = feats.dim(0)?;
                let cm = feats.dim(1)?;
                // 1 where the object is absent (score ≤ 0), else 0.
                let absent = scores
                    .le(0.0)?
                    .to_dtype(feats.dtype())?
                    .reshape((b, 1, 1, 1))?;
                let embed = embed.to_dtype(feats.dtype())?.reshape((1, cm, 1, 1))?;
                feats.broadcast_add(&absent.broadcast_mul(&embed)?)?
            }
            (Some(_), None) => {
                candle_core::bail!("encode_new_memory: the model has no_obj_embed_spatial but no object scores were given")
            }
            (None, _) => feats,
        };
        Ok((feats, pos))
    }
}

/// The `SAM2Base` settings that `_encode_new_memory` uses besides the encoder.
#[derive(Debug, Clone)]
pub struct NewMemoryParams {
    /// `sigmoid_scale_for_mem_enc`.
    pub sigmoid_scale: f64,
    /// `sigmoid_bias_for_mem_enc`.
    pub sigmoid_bias: f64,
    /// `binarize_mask_from_pts_for_mem_enc` (applies to click-prompted frames).
    pub binarize_mask_from_pts: bool,
    /// `non_overlap_masks_for_mem_enc` (across the batch of objects).
    pub non_overlap_masks: bool,
    /// `no_obj_embed_spatial` `[1, Cm]` when the model has it.
    pub no_obj_embed_spatial: Option<Tensor>,
}

impl NewMemoryParams {
    /// Settings from the config, with the `no_obj_embed_spatial` weight if any.
    pub fn from_config(cfg: &Sam2Config, no_obj_embed_spatial: Option<Tensor>) -> Self {
        Self {
            sigmoid_scale: cfg.sigmoid_scale_for_mem_enc,
            sigmoid_bias: cfg.sigmoid_bias_for_mem_enc,
            binarize_mask_from_pts: cfg.binarize_mask_from_pts_for_mem_enc,
            non_overlap_masks: cfg.non_overlap_masks_for_mem_enc,
            no_obj_embed_spatial,
        }
    }

    /// Settings from the config, loading `no_obj_embed_spatial` `[1, mem_dim]`
    /// from the model root `vb` when `cfg.no_obj_embed_spatial`.
    pub fn load(cfg: &Sam2Config, vb: VarBuilder) -> Result<Self> {
        let embed = if cfg.no_obj_embed_spatial {
            Some(vb.get((1, cfg.mem_dim()), "no_obj_embed_spatial")?)
        } else {
            None
        };
        Ok(Self::from_config(cfg, embed))
    }
}

/// `SAM2Base._apply_non_overlapping_constraints`: per pixel, only the object
/// with the highest logit keeps its value; the others are clamped to ≤ −10.
/// `pred_masks`: `[B, 1, H, W]` (B = objects).
pub fn apply_non_overlapping_constraints(pred_masks: &Tensor) -> Result<Tensor> {
    let b = pred_masks.dim(0)?;
    if b == 1 {
        return Ok(pred_masks.clone());
    }
    let max_inds = pred_masks.argmax_keepdim(0)?; // [1, 1, H, W] u32
    let ids = Tensor::arange(0u32, b as u32, pred_masks.device())?.reshape((b, 1, 1, 1))?;
    let keep = max_inds.broadcast_eq(&ids)?;
    let clamped = pred_masks.minimum(-10.0f64)?;
    keep.where_cond(pred_masks, &clamped)
}
