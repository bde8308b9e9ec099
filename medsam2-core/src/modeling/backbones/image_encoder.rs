//! Image encoder = Hiera trunk + FPN neck (`sam2.modeling.backbones.image_encoder`).

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use super::cpu::{self, F32Ref, TLinear};
use super::hieradet::Hiera;
use crate::config::{FpnInterp, FpnNeckConfig, FuseType, ImageEncoderConfig};
use crate::modeling::position_encoding::PositionEmbeddingSine;

/// One NHWC feature level on the fast path: data, height, width.
type NhwcLevel = (Vec<f32>, usize, usize);

/// A 1×1 conv `[o, c, 1, 1]` as a linear layer.
fn conv1x1_linear(conv: &Conv2d) -> Result<TLinear> {
    let w = conv.weight();
    let (o, c, kh, kw) = w.dims4()?;
    if kh != 1 || kw != 1 {
        candle_core::bail!("conv1x1_linear: kernel {kh}x{kw}");
    }
    TLinear::from_parts(w.reshape((o, c))?, conv.bias().cloned())
}

/// Feature-pyramid neck (`FpnNeck`): 1×1 lateral convs to `d_model`, a
/// top-down path on `fpn_top_down_levels`, and a sine position encoding per level.
#[derive(Debug)]
pub struct FpnNeck {
    convs: Vec<Conv2d>,
    position_encoding: PositionEmbeddingSine,
    interp: FpnInterp,
    fuse: FuseType,
    top_down_levels: Vec<usize>,
    /// The lateral convs as linears (`[C_i, d_model]` weights) when they are
    /// 1×1, stride 1, unpadded, for the fast path.
    pointwise: Option<Vec<TLinear>>,
    /// Position encodings `[1, d_model, h, w]` by feature size.
    pos_cache: Mutex<HashMap<(usize, usize), Tensor>>,
}

impl FpnNeck {
    /// Loads `convs.{i}.conv` (conv `i` takes `backbone_channel_list[i]`, i.e.
    /// the lowest-resolution level first).
    pub fn new(cfg: &FpnNeckConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            padding: cfg.padding,
            stride: cfg.stride,
            ..Default::default()
        };
        let convs = cfg
            .backbone_channel_list
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                candle_nn::conv2d(
                    c,
                    cfg.d_model,
                    cfg.kernel_size,
                    conv_cfg,
                    vb.pp("convs").pp(i).pp("conv"),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let pointwise = if cfg.kernel_size == 1 && cfg.stride == 1 && cfg.padding == 0 {
            Some(
                convs
                    .iter()
                    .map(conv1x1_linear)
                    .collect::<Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        let top_down_levels = match &cfg.fpn_top_down_levels {
            Some(l) => l.clone(),
            None => (0..convs.len()).collect(),
        };
        Ok(Self {
            convs,
            position_encoding: PositionEmbeddingSine::new(cfg.position_encoding.clone()),
            interp: cfg.fpn_interp_model,
            fuse: cfg.fuse_type,
            top_down_levels,
            pointwise,
            pos_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Sine encoding `[B, d_model, h, w]` of a `[B, C, h, w]` map, in its dtype.
    pub fn position_encoding(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        self.position_encoding_for(b, h, w, x.dtype(), x.device())
    }

    /// Sine encoding `[b, d_model, h, w]` (cached per size).
    pub fn position_encoding_for(
        &self,
        b: usize,
        h: usize,
        w: usize,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let cached = self
            .pos_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&(h, w)).cloned());
        let pe = match cached {
            Some(pe) => pe,
            None => {
                let pe = self.position_encoding.encode(h, w, device)?;
                if let Ok(mut c) = self.pos_cache.lock() {
                    c.insert((h, w), pe.clone());
                }
                pe
            }
        };
        let pe = pe.to_dtype(dtype)?;
        if b == 1 {
            Ok(pe)
        } else {
            pe.repeat((b, 1, 1, 1))
        }
    }

    /// Runs the neck on the trunk outputs (NCHW, highest resolution first).
    /// Returns the fused features and, for the levels with index `< keep`,
    /// their position encodings (levels `>= keep` get none: the image encoder's
    /// scalp discards them).
    pub fn forward(&self, xs: &[Tensor], keep: usize) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let n = self.convs.len();
        if xs.len() != n {
            candle_core::bail!("FpnNeck: {} inputs for {n} levels", xs.len());
        }
        let mut out: Vec<Option<Tensor>> = vec![None; n];
        let mut prev: Option<Tensor> = None;
        for i in (0..n).rev() {
            let lateral = self.convs[n - 1 - i].forward(&xs[i])?;
            let feat = match (&prev, self.top_down_levels.contains(&i)) {
                (Some(p), true) => {
                    let (_, _, h, w) = p.dims4()?;
                    let td = match self.interp {
                        FpnInterp::Nearest => p.upsample_nearest2d(2 * h, 2 * w)?,
                        FpnInterp::Bilinear => p.upsample_bilinear2d(2 * h, 2 * w, false)?,
                    };
                    let s = (lateral + td)?;
                    match self.fuse {
                        FuseType::Sum => s,
                        FuseType::Avg => (s / 2.0)?,
                    }
                }
                _ => lateral,
            };
            out[i] = Some(feat.clone());
            prev = Some(feat);
        }
        let feats: Vec<Tensor> = out.into_iter().flatten().collect();
        let pos = feats
            .iter()
            .take(keep)
            .map(|f| self.position_encoding(f))
            .collect::<Result<Vec<_>>>()?;
        Ok((feats, pos))
    }
}

impl FpnNeck {
    /// Fast f32 CPU neck on NHWC trunk outputs; `None` where unsupported
    /// (non-1×1 laterals, bilinear top-down). Returns NHWC levels
    /// `(data, h, w)` of `d_model` channels, highest resolution first.
    fn forward_nhwc_fast(&self, xs: &[Tensor]) -> Result<Option<Vec<NhwcLevel>>> {
        let n = self.convs.len();
        let Some(laterals) = &self.pointwise else {
            return Ok(None);
        };
        if self.interp != FpnInterp::Nearest || xs.len() != n || !xs.iter().all(cpu::fast) {
            return Ok(None);
        }
        let mut out: Vec<Option<NhwcLevel>> = (0..n).map(|_| None).collect();
        let mut prev: Option<(usize, usize, usize)> = None; // level index, h, w
        for i in (0..n).rev() {
            let x = xs[i].contiguous()?;
            let (b, h, w, c) = x.dims4()?;
            let (wt, bias) = laterals[n - 1 - i].fast()?;
            let d = bias.slice().len();
            if wt.slice().len() != d * c {
                candle_core::bail!("FpnNeck: lateral conv {i} expects other channels than {c}");
            }
            let mut lat = {
                let xv = F32Ref::new(&x)?;
                cpu::linear(xv.slice(), b * h * w, c, wt.slice(), bias.slice())
            };
            if let (Some((pi, ph, pw)), true) = (prev, self.top_down_levels.contains(&i)) {
                if h != 2 * ph || w != 2 * pw {
                    candle_core::bail!(
                        "FpnNeck: level {i} is {h}x{w}, top-down gives {}x{}",
                        2 * ph,
                        2 * pw
                    );
                }
                let scale = match self.fuse {
                    FuseType::Sum => 1.0,
                    FuseType::Avg => 0.5,
                };
                if let Some((p, _, _)) = &out[pi] {
                    cpu::add_upsampled_nearest2x(&mut lat, p, (b, h, w, d), scale);
                }
            }
            out[i] = Some((lat, h, w));
            prev = Some((i, h, w));
        }
        Ok(Some(out.into_iter().flatten().collect()))
    }
}

/// Output of the image encoder (the official dict), NCHW maps, highest
/// resolution first.
#[derive(Debug, Clone)]
pub struct ImageEncoderOutput {
    /// Top kept level `[B, d_model, H/16, W/16]` (= last of `backbone_fpn`).
    pub vision_features: Tensor,
    /// Sine position encodings of the kept levels, `[B, d_model, h_i, w_i]`.
    pub vision_pos_enc: Vec<Tensor>,
    /// Kept FPN levels `[B, d_model, h_i, w_i]` (strides 4, 8, 16 for the
    /// official configs); after [`HighResConvs::apply`], levels 0/1 have
    /// `d_model/8` and `d_model/4` channels.
    pub backbone_fpn: Vec<Tensor>,
}

/// The image encoder (`ImageEncoder`): trunk, neck, and the scalp that drops
/// the lowest-resolution levels.
#[derive(Debug)]
pub struct ImageEncoder {
    trunk: Hiera,
    neck: FpnNeck,
    scalp: usize,
}

impl ImageEncoder {
    /// Loads `trunk.*` and `neck.*` from `vb` at `image_encoder`.
    pub fn new(cfg: &ImageEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let trunk = Hiera::new(&cfg.trunk, vb.pp("trunk"))?;
        if trunk.channel_list() != cfg.neck.backbone_channel_list {
            candle_core::bail!(
                "ImageEncoder: trunk channels {:?} do not match the neck's {:?}",
                trunk.channel_list(),
                cfg.neck.backbone_channel_list
            );
        }
        if cfg.scalp >= cfg.neck.backbone_channel_list.len() {
            candle_core::bail!("ImageEncoder: scalp {} discards every level", cfg.scalp);
        }
        let neck = FpnNeck::new(&cfg.neck, vb.pp("neck"))?;
        Ok(Self {
            trunk,
            neck,
            scalp: cfg.scalp,
        })
    }

    /// The trunk.
    pub fn trunk(&self) -> &Hiera {
        &self.trunk
    }

    /// The neck.
    pub fn neck(&self) -> &FpnNeck {
        &self.neck
    }

    /// `[B, 3, S, S]` normalised pixels → features (`ImageEncoder.forward`).
    pub fn forward(&self, x: &Tensor) -> Result<ImageEncoderOutput> {
        self.forward_with_high_res(x, None)
    }

    /// [`ImageEncoder::forward`], then the high-res projections if given
    /// (`SAM2Base.forward_image`).
    pub fn forward_with_high_res(
        &self,
        x: &Tensor,
        high_res: Option<&HighResConvs>,
    ) -> Result<ImageEncoderOutput> {
        let trunk = self.trunk.forward_nhwc(x)?;
        if let Some(levels) = self.neck.forward_nhwc_fast(&trunk)? {
            let b = x.dim(0)?;
            let keep = levels.len().saturating_sub(self.scalp);
            let mut feats = Vec::with_capacity(keep);
            for (i, (v, h, w)) in levels.into_iter().take(keep).enumerate() {
                let conv = match (high_res, i) {
                    (Some(hr), 0) => Some(&hr.s0_linear),
                    (Some(hr), 1) => Some(&hr.s1_linear),
                    _ => None,
                };
                let d = v.len() / (b * h * w).max(1);
                let (v, d) = match conv {
                    Some(conv) => {
                        let (wt, bias) = conv.fast()?;
                        let o = bias.slice().len();
                        if wt.slice().len() != o * d {
                            candle_core::bail!(
                                "HighResConvs: conv expects other channels than {d}"
                            );
                        }
                        (cpu::linear(&v, b * h * w, d, wt.slice(), bias.slice()), o)
                    }
                    None => (v, d),
                };
                feats.push(cpu::nhwc_to_nchw(&v, b, h, w, d)?);
            }
            // Position encodings follow the neck's features (before the projections).
            let pos = feats
                .iter()
                .map(|f| {
                    let (b, _, h, w) = f.dims4()?;
                    self.neck
                        .position_encoding_for(b, h, w, f.dtype(), f.device())
                })
                .collect::<Result<Vec<_>>>()?;
            let vision_features = match feats.last() {
                Some(f) => f.clone(),
                None => candle_core::bail!("ImageEncoder: no feature level left after the scalp"),
            };
            return Ok(ImageEncoderOutput {
                vision_features,
                vision_pos_enc: pos,
                backbone_fpn: feats,
            });
        }
        let trunk = trunk
            .into_iter()
            .map(|t| t.permute((0, 3, 1, 2))?.contiguous())
            .collect::<Result<Vec<_>>>()?;
        let mut out = self.forward_from_trunk(&trunk)?;
        if let Some(hr) = high_res {
            hr.apply(&mut out)?;
        }
        Ok(out)
    }

    /// Neck and scalp on precomputed NCHW trunk outputs.
    pub fn forward_from_trunk(&self, trunk: &[Tensor]) -> Result<ImageEncoderOutput> {
        let keep = trunk.len().saturating_sub(self.scalp);
        let (mut feats, pos) = self.neck.forward(trunk, keep)?;
        feats.truncate(keep);
        let vision_features = match feats.last() {
            Some(f) => f.clone(),
            None => candle_core::bail!("ImageEncoder: no feature level left after the scalp"),
        };
        Ok(ImageEncoderOutput {
            vision_features,
            vision_pos_enc: pos,
            backbone_fpn: feats,
        })
    }
}

/// The mask decoder's 1×1 projections of the stride-4/8 levels
/// (`sam_mask_decoder.conv_s0` / `conv_s1`), which `SAM2Base.forward_image`
/// applies once per image when `use_high_res_features_in_sam` is set.
#[derive(Debug, Clone)]
pub struct HighResConvs {
    conv_s0: Conv2d,
    conv_s1: Conv2d,
    s0_linear: TLinear,
    s1_linear: TLinear,
}

impl HighResConvs {
    /// Loads `conv_s0` (`d → d/8`) and `conv_s1` (`d → d/4`) from `vb` at
    /// `sam_mask_decoder`.
    pub fn new(transformer_dim: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig::default();
        let conv_s0 = candle_nn::conv2d(
            transformer_dim,
            transformer_dim / 8,
            1,
            cfg,
            vb.pp("conv_s0"),
        )?;
        let conv_s1 = candle_nn::conv2d(
            transformer_dim,
            transformer_dim / 4,
            1,
            cfg,
            vb.pp("conv_s1"),
        )?;
        Ok(Self {
            s0_linear: conv1x1_linear(&conv_s0)?,
            s1_linear: conv1x1_linear(&conv_s1)?,
            conv_s0,
            conv_s1,
        })
    }

    /// Replaces `backbone_fpn[0]` and `[1]` by their projections.
    pub fn apply(&self, out: &mut ImageEncoderOutput) -> Result<()> {
        if out.backbone_fpn.len() < 2 {
            candle_core::bail!(
                "HighResConvs: need 2 feature levels, got {}",
                out.backbone_fpn.len()
            );
        }
        out.backbone_fpn[0] = self.conv_s0.forward(&out.backbone_fpn[0])?;
        out.backbone_fpn[1] = self.conv_s1.forward(&out.backbone_fpn[1])?;
        Ok(())
    }
}

/// `SAM2Base.forward_image`: the encoder, then the high-res projections if given.
pub fn forward_image(
    encoder: &ImageEncoder,
    high_res: Option<&HighResConvs>,
    pixels: &Tensor,
) -> Result<ImageEncoderOutput> {
    encoder.forward_with_high_res(pixels, high_res)
}
