//! Mask decoder (`sam2.modeling.sam.mask_decoder.MaskDecoder`): output tokens
//! and prompt tokens run through the two-way transformer against the image
//! embedding; the mask tokens become hypernetwork weights over the upscaled
//! image features.

use candle_core::{DType, IndexOp, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::modeling::kernels::bf16_linear::Linear;

use crate::config::{Activation, MaskDecoderConfig};
use crate::modeling::sam::cpu;
use crate::modeling::sam::transformer::TwoWayTransformer;
use crate::modeling::sam2_utils::{activation, linear, Conv1x1, LayerNorm2d, Mlp};

/// `LayerNorm2d` default epsilon.
const LN2D_EPS: f64 = 1e-6;

/// `nn.ConvTranspose2d` with kernel 2 and stride 2 (no overlap), run as one
/// matmul followed by a pixel shuffle.
#[derive(Debug, Clone)]
struct ConvTranspose2x2 {
    /// The conv as a linear layer over each input pixel's channels: weight
    /// `[Cout·4, Cin]`, rows ordered (o, i, j); no bias (in bf16 mode its
    /// weight is packed like every linear layer's).
    lin: Linear,
    /// Bias `[1, Cout, 1, 1]`.
    bias: Tensor,
    out_channels: usize,
}

impl ConvTranspose2x2 {
    fn new(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((in_channels, out_channels, 2, 2), "weight")?;
        let bias = vb
            .get(out_channels, "bias")?
            .reshape((1, out_channels, 1, 1))?;
        let weight = w
            .reshape((in_channels, out_channels * 4))?
            .t()?
            .contiguous()?;
        Ok(Self {
            lin: Linear::new(weight, None)?,
            bias,
            out_channels,
        })
    }

    /// `[B, H·W, Cout·4]`: the conv before the pixel shuffle and the bias,
    /// pixel-major, from `x` given pixel-major as `[B, H·W, Cin]`.
    fn unshuffled(&self, x: &Tensor) -> Result<Tensor> {
        self.lin.forward(x)
    }
}

impl Module for ConvTranspose2x2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let o = self.out_channels;
        let x = x.contiguous()?.reshape((b, c, h * w))?;
        let wt = self.lin.weight().to_dtype(x.dtype())?;
        // [B, O·4, HW] → (b, o, i, j, y, x) → (b, o, y, i, x, j).
        let y = wt.broadcast_left(b)?.matmul(&x)?;
        let y = y
            .reshape((b, o, 2, 2, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .contiguous()?;
        y.reshape((b, o, 2 * h, 2 * w))?
            .broadcast_add(&self.bias.to_dtype(x.dtype())?)
    }
}

/// Object-score head: a linear layer or a 3-layer MLP (`pred_obj_score_head`).
#[derive(Debug, Clone)]
enum ObjScoreHead {
    Linear(Linear),
    Mlp(Mlp),
}

impl Module for ObjScoreHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Linear(l) => l.forward(x),
            Self::Mlp(m) => m.forward(x),
        }
    }
}

/// Everything `predict_masks` computes, for all mask tokens.
#[derive(Debug, Clone)]
pub struct AllMasks {
    /// Mask logits `[B, T, 4h, 4w]`, `T = num_multimask_outputs + 1`; token 0
    /// is the single-mask output, tokens 1.. the multimask outputs.
    pub masks: Tensor,
    /// Predicted IoU `[B, T]` (through a sigmoid if configured).
    pub iou_pred: Tensor,
    /// Mask-token outputs of the transformer `[B, T, C]`.
    pub mask_tokens_out: Tensor,
    /// Object-score logits `[B, 1]` (10 when the model has no object head).
    pub object_score_logits: Tensor,
}

/// Output of [`MaskDecoder::forward`].
#[derive(Debug, Clone)]
pub struct MaskDecoderOutput {
    /// Selected mask logits `[B, M, 4h, 4w]`, M = 3 (multimask) or 1.
    pub masks: Tensor,
    /// Their IoU predictions `[B, M]`.
    pub iou_pred: Tensor,
    /// SAM output tokens for the object pointer `[B, 1 or 3, C]`.
    pub sam_tokens_out: Tensor,
    /// Object-score logits `[B, 1]`.
    pub object_score_logits: Tensor,
}

/// The SAM mask decoder (`sam_mask_decoder`).
#[derive(Debug, Clone)]
pub struct MaskDecoder {
    cfg: MaskDecoderConfig,
    transformer: TwoWayTransformer,
    /// `[obj_score_token?, iou_token, mask_tokens]` stacked `[T0, C]`.
    output_tokens: Tensor,
    num_mask_tokens: usize,
    upscale_dc1: ConvTranspose2x2,
    upscale_ln1: LayerNorm2d,
    /// `output_upscaling.1` weight and bias, for the CPU kernels.
    upscale_ln1_wb: (Tensor, Tensor),
    upscale_dc2: ConvTranspose2x2,
    conv_s0: Option<Conv1x1>,
    conv_s1: Option<Conv1x1>,
    output_hypernetworks_mlps: Vec<Mlp>,
    iou_prediction_head: Mlp,
    pred_obj_score_head: Option<ObjScoreHead>,
    cpu_kernels: bool,
}

impl MaskDecoder {
    /// Loads the decoder under `vb` (`sam_mask_decoder`).
    pub fn new(cfg: &MaskDecoderConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.transformer_dim;
        if !c.is_multiple_of(8) {
            candle_core::bail!("mask decoder: transformer_dim {c} must be divisible by 8");
        }
        if cfg.transformer.embedding_dim != c {
            candle_core::bail!(
                "mask decoder: transformer embedding_dim must equal transformer_dim"
            );
        }
        let num_mask_tokens = cfg.num_multimask_outputs + 1;
        let transformer = TwoWayTransformer::new(&cfg.transformer, vb.pp("transformer"))?;
        let iou_token = vb.pp("iou_token").get((1, c), "weight")?;
        let mask_tokens = vb.pp("mask_tokens").get((num_mask_tokens, c), "weight")?;
        let output_tokens = if cfg.pred_obj_scores {
            let obj = vb.pp("obj_score_token").get((1, c), "weight")?;
            Tensor::cat(&[obj, iou_token, mask_tokens], 0)?
        } else {
            Tensor::cat(&[iou_token, mask_tokens], 0)?
        };
        let up = vb.pp("output_upscaling");
        let (conv_s0, conv_s1) = if cfg.use_high_res_features {
            (
                Some(Conv1x1::new(c, c / 8, vb.pp("conv_s0"))?),
                Some(Conv1x1::new(c, c / 4, vb.pp("conv_s1"))?),
            )
        } else {
            (None, None)
        };
        let output_hypernetworks_mlps = (0..num_mask_tokens)
            .map(|i| {
                Mlp::new(
                    c,
                    c,
                    c / 8,
                    3,
                    Activation::Relu,
                    false,
                    vb.pp("output_hypernetworks_mlps").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let iou_prediction_head = Mlp::new(
            c,
            cfg.iou_head_hidden_dim,
            num_mask_tokens,
            cfg.iou_head_depth,
            Activation::Relu,
            cfg.iou_prediction_use_sigmoid,
            vb.pp("iou_prediction_head"),
        )?;
        let pred_obj_score_head = if !cfg.pred_obj_scores {
            None
        } else if cfg.pred_obj_scores_mlp {
            Some(ObjScoreHead::Mlp(Mlp::new(
                c,
                c,
                1,
                3,
                Activation::Relu,
                false,
                vb.pp("pred_obj_score_head"),
            )?))
        } else {
            Some(ObjScoreHead::Linear(linear(
                c,
                1,
                vb.pp("pred_obj_score_head"),
            )?))
        };
        Ok(Self {
            cfg: cfg.clone(),
            transformer,
            output_tokens,
            num_mask_tokens,
            upscale_dc1: ConvTranspose2x2::new(c, c / 4, up.pp("0"))?,
            upscale_ln1: LayerNorm2d::new(c / 4, LN2D_EPS, up.pp("1"))?,
            upscale_ln1_wb: (
                up.pp("1").get(c / 4, "weight")?,
                up.pp("1").get(c / 4, "bias")?,
            ),
            upscale_dc2: ConvTranspose2x2::new(c / 4, c / 8, up.pp("3"))?,
            conv_s0,
            conv_s1,
            output_hypernetworks_mlps,
            iou_prediction_head,
            pred_obj_score_head,
            cpu_kernels: true,
        })
    }

    /// Uses the fused CPU kernels for the upscaling path on f32 CPU tensors
    /// (default `true`); `false` runs the plain tensor-op path everywhere.
    pub fn set_cpu_kernels(&mut self, on: bool) {
        self.cpu_kernels = on;
        self.transformer.set_cpu_kernels(on);
    }

    /// The configuration.
    pub fn config(&self) -> &MaskDecoderConfig {
        &self.cfg
    }

    /// Number of mask tokens (`num_multimask_outputs + 1`).
    pub fn num_mask_tokens(&self) -> usize {
        self.num_mask_tokens
    }

    /// Applies `conv_s0` / `conv_s1` to the FPN levels 0 `[B, C, 4h, 4w]` and
    /// 1 `[B, C, 2h, 2w]` (what `SAM2Base.forward_image` does), giving the
    /// high-res features `[B, C/8, 4h, 4w]`, `[B, C/4, 2h, 2w]`.
    pub fn project_high_res(&self, feat_s0: &Tensor, feat_s1: &Tensor) -> Result<(Tensor, Tensor)> {
        match (&self.conv_s0, &self.conv_s1) {
            (Some(c0), Some(c1)) => Ok((c0.forward(feat_s0)?, c1.forward(feat_s1)?)),
            _ => candle_core::bail!("mask decoder: built without use_high_res_features"),
        }
    }

    /// Decodes masks and selects the output as the official `forward`.
    ///
    /// * `image_embeddings` `[B or 1, C, h, w]`; with `repeat_image` each image
    ///   is repeated for every prompt set (`repeat_interleave`), else its batch
    ///   must equal the prompts' batch.
    /// * `image_pe` `[1, C, h, w]` ([`super::PromptEncoder::get_dense_pe`]).
    /// * `sparse_prompt_embeddings` `[B, N, C]`, `dense_prompt_embeddings`
    ///   `[B or 1, C, h, w]`.
    /// * `high_res_features`: `(feat_s0 [B or 1, C/8, 4h, 4w], feat_s1
    ///   [B or 1, C/4, 2h, 2w])`, already through `conv_s0`/`conv_s1`; required
    ///   when the decoder uses high-res features.
    ///
    /// Multimask: tokens 1.. and their IoUs. Single mask: token 0, or with
    /// `dynamic_multimask_via_stability` the best of tokens 1.. when token 0's
    /// stability is below the threshold. `sam_tokens_out` holds tokens 1.. for
    /// multimask output with `use_multimask_token_for_obj_ptr`, else token 0.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse_prompt_embeddings: &Tensor,
        dense_prompt_embeddings: &Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: Option<(&Tensor, &Tensor)>,
    ) -> Result<MaskDecoderOutput> {
        let all = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image,
            high_res_features,
        )?;
        let t = self.num_mask_tokens;
        let (masks, iou_pred) = if multimask_output {
            (
                all.masks.narrow(1, 1, t - 1)?,
                all.iou_pred.narrow(1, 1, t - 1)?,
            )
        } else if self.cfg.dynamic_multimask_via_stability {
            self.dynamic_multimask_via_stability(&all.masks, &all.iou_pred)?
        } else {
            (all.masks.narrow(1, 0, 1)?, all.iou_pred.narrow(1, 0, 1)?)
        };
        let sam_tokens_out = if multimask_output && self.cfg.use_multimask_token_for_obj_ptr {
            all.mask_tokens_out.narrow(1, 1, t - 1)?
        } else {
            all.mask_tokens_out.narrow(1, 0, 1)?
        };
        Ok(MaskDecoderOutput {
            masks,
            iou_pred,
            sam_tokens_out,
            object_score_logits: all.object_score_logits,
        })
    }

    /// Runs the decoder for all mask tokens (`predict_masks`); arguments as
    /// [`MaskDecoder::forward`].
    pub fn predict_masks(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse_prompt_embeddings: &Tensor,
        dense_prompt_embeddings: &Tensor,
        repeat_image: bool,
        high_res_features: Option<(&Tensor, &Tensor)>,
    ) -> Result<AllMasks> {
        let (b, _n, c) = sparse_prompt_embeddings.dims3()?;
        let dt = image_embeddings.dtype();
        let t0 = self.output_tokens.dim(0)?;
        let output_tokens = self
            .output_tokens
            .to_dtype(dt)?
            .unsqueeze(0)?
            .broadcast_as((b, t0, c))?;
        let tokens = Tensor::cat(
            &[&output_tokens, &sparse_prompt_embeddings.to_dtype(dt)?],
            1,
        )?;

        let (bi, ci, h, w) = image_embeddings.dims4()?;
        let src = if repeat_image {
            image_embeddings
                .unsqueeze(1)?
                .broadcast_as((bi, b, ci, h, w))?
                .reshape((bi * b, ci, h, w))?
        } else {
            if bi != b {
                candle_core::bail!(
                    "mask decoder: {bi} image embeddings for {b} prompt sets (use repeat_image)"
                );
            }
            image_embeddings.clone()
        };
        let src = src.broadcast_add(&dense_prompt_embeddings.to_dtype(dt)?)?;
        if image_pe.dim(0)? != 1 {
            candle_core::bail!("mask decoder: image_pe must have batch 1 (get_dense_pe)");
        }
        let image_pe = image_pe.to_dtype(dt)?;

        let (hs, src) = self.transformer.forward(&src, &image_pe, &tokens)?;
        let s = usize::from(self.cfg.pred_obj_scores);
        let iou_token_out = hs.i((.., s, ..))?;
        let mask_tokens_out = hs.narrow(1, s + 1, self.num_mask_tokens)?;

        let bs = src.dim(0)?;
        let hyper_in = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_tokens_out.i((.., i, ..))?))
            .collect::<Result<Vec<_>>>()?;
        let hyper_in = Tensor::stack(&hyper_in, 1)?;
        let high_res = match (self.cfg.use_high_res_features, high_res_features) {
            (true, Some((s0, s1))) => Some((s0.to_dtype(dt)?, s1.to_dtype(dt)?)),
            (true, None) => candle_core::bail!("mask decoder: high-res features are required"),
            (false, _) => None,
        };
        let masks = if self.cpu_kernels && cpu::applies(&src) {
            self.upscale_masks_cpu(&src, h, w, high_res.as_ref(), &hyper_in)?
        } else {
            self.upscale_masks(&src, h, w, high_res.as_ref(), &hyper_in)?
        };

        let iou_pred = self.iou_prediction_head.forward(&iou_token_out)?;
        let object_score_logits = match &self.pred_obj_score_head {
            Some(head) => head.forward(&hs.i((.., 0, ..))?)?,
            None => (Tensor::ones((bs, 1), dt, hs.device())? * 10.0)?,
        };
        Ok(AllMasks {
            masks,
            iou_pred,
            mask_tokens_out,
            object_score_logits,
        })
    }

    /// Upscales the transformer's image tokens `[B, h·w, C]` and multiplies
    /// with the hypernetwork weights `[B, T, C/8]` → masks `[B, T, 4h, 4w]`.
    fn upscale_masks(
        &self,
        src: &Tensor,
        h: usize,
        w: usize,
        high_res: Option<&(Tensor, Tensor)>,
        hyper_in: &Tensor,
    ) -> Result<Tensor> {
        let (b, _, c) = src.dims3()?;
        let src = src.transpose(1, 2)?.reshape((b, c, h, w))?;
        let mut up = self.upscale_dc1.forward(&src)?;
        if let Some((_, s1)) = high_res {
            up = up.broadcast_add(s1)?;
        }
        let up = activation(&self.upscale_ln1.forward(&up)?, Activation::Gelu)?;
        let mut up = self.upscale_dc2.forward(&up)?;
        if let Some((s0, _)) = high_res {
            up = up.broadcast_add(s0)?;
        }
        let upscaled = activation(&up, Activation::Gelu)?;
        let (ub, uc, uh, uw) = upscaled.dims4()?;
        hyper_in
            .matmul(&upscaled.reshape((ub, uc, uh * uw))?)?
            .reshape((ub, self.num_mask_tokens, uh, uw))
    }

    /// [`Self::upscale_masks`] with the fused CPU kernels (f32 tensors; the two
    /// convs' products in bf16 in the CPU bf16 mode).
    fn upscale_masks_cpu(
        &self,
        src: &Tensor,
        h: usize,
        w: usize,
        high_res: Option<&(Tensor, Tensor)>,
        hyper_in: &Tensor,
    ) -> Result<Tensor> {
        let b = src.dim(0)?;
        let dev = src.device();
        let o1 = self.upscale_dc1.out_channels;
        let o2 = self.upscale_dc2.out_channels;
        // Pixel-major throughout: the transformer's image tokens [B, h·w, C]
        // are the first conv's input rows.
        let y1 = self.upscale_dc1.unshuffled(src)?.contiguous()?;
        let feat = |f: Option<&Tensor>, o: usize, k: usize| -> Result<Option<Tensor>> {
            let Some(f) = f else { return Ok(None) };
            let (fb, fc, fh, fw) = f.dims4()?;
            if (fb != 1 && fb != b) || fc != o || fh != k * h || fw != k * w {
                candle_core::bail!(
                    "mask decoder: high-res features {:?} do not fit [{b}, {o}, {}, {}]",
                    f.shape(),
                    k * h,
                    k * w
                );
            }
            Ok(Some(f.contiguous()?))
        };
        let s1 = feat(high_res.map(|(_, s1)| s1), o1, 2)?;
        let s0 = feat(high_res.map(|(s0, _)| s0), o2, 4)?;
        let bias1 = self.upscale_dc1.bias.flatten_all()?;
        let (lnw, lnb) = (&self.upscale_ln1_wb.0, &self.upscale_ln1_wb.1);
        let u1 = {
            let (gy, ly) = y1.storage_and_layout();
            let (gb, lb) = bias1.storage_and_layout();
            let (gw, lw) = lnw.storage_and_layout();
            let (gn, ln) = lnb.storage_and_layout();
            let gf = s1.as_ref().map(|f| f.storage_and_layout());
            let feat = match &gf {
                Some((g, l)) => Some((cpu::slice(g, l)?, l.dims()[0] == b && b > 1)),
                None => None,
            };
            cpu::stage1(
                &cpu::Stage1 {
                    y: cpu::slice(&gy, ly)?,
                    batch: b,
                    channels: o1,
                    h,
                    w,
                    bias: cpu::slice(&gb, lb)?,
                    feat,
                    ln_weight: cpu::slice(&gw, lw)?,
                    ln_bias: cpu::slice(&gn, ln)?,
                    eps: LN2D_EPS as f32,
                },
                dev,
            )?
        };
        let y2 = self.upscale_dc2.unshuffled(&u1)?.contiguous()?;
        let bias2 = self.upscale_dc2.bias.flatten_all()?;
        let hyper = hyper_in.contiguous()?;
        let (gy, ly) = y2.storage_and_layout();
        let (gb, lb) = bias2.storage_and_layout();
        let (gh, lh) = hyper.storage_and_layout();
        let gf = s0.as_ref().map(|f| f.storage_and_layout());
        let feat = match &gf {
            Some((g, l)) => Some((cpu::slice(g, l)?, l.dims()[0] == b && b > 1)),
            None => None,
        };
        cpu::stage2(
            &cpu::Stage2 {
                y: cpu::slice(&gy, ly)?,
                batch: b,
                channels: o2,
                h: 2 * h,
                w: 2 * w,
                bias: cpu::slice(&gb, lb)?,
                feat,
                hyper: cpu::slice(&gh, lh)?,
                tokens: self.num_mask_tokens,
            },
            dev,
        )
    }

    /// Stability of mask logits `[.., H, W]` → `[..]`:
    /// `area(logit > delta) / area(logit > -delta)`, 1 where the union is empty.
    pub fn stability_scores(mask_logits: &Tensor, delta: f64) -> Result<Tensor> {
        let x = mask_logits.flatten_from(D::Minus2)?;
        let area_i = x.gt(delta)?.to_dtype(DType::F32)?.sum(D::Minus1)?;
        let area_u = x.gt(-delta)?.to_dtype(DType::F32)?.sum(D::Minus1)?;
        let ones = area_u.ones_like()?;
        area_u.gt(0.0)?.where_cond(&(area_i / &area_u)?, &ones)
    }

    /// Single-mask selection (`_dynamic_multimask_via_stability`): per batch
    /// element, token 0 if its stability reaches the threshold, else the
    /// multimask token with the highest IoU (first on ties).
    /// `all_mask_logits` `[B, T, H, W]`, `all_iou_scores` `[B, T]` → `[B, 1, H, W]`, `[B, 1]`.
    pub fn dynamic_multimask_via_stability(
        &self,
        all_mask_logits: &Tensor,
        all_iou_scores: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = all_iou_scores.dims2()?;
        let stability = Self::stability_scores(
            &all_mask_logits.narrow(1, 0, 1)?,
            self.cfg.dynamic_multimask_stability_delta,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
        let ious = all_iou_scores.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let thresh = self.cfg.dynamic_multimask_stability_thresh as f32;
        let mut masks = Vec::with_capacity(b);
        let mut scores = Vec::with_capacity(b);
        for (bi, row) in ious.iter().enumerate() {
            let idx = if stability[bi] >= thresh || t < 2 {
                0
            } else {
                let mut best = 1;
                for k in 2..t {
                    // torch.argmax: first maximum; NaN counts as the maximum.
                    if row[k] > row[best] || (row[k].is_nan() && !row[best].is_nan()) {
                        best = k;
                    }
                }
                best
            };
            masks.push(all_mask_logits.i(bi)?.narrow(0, idx, 1)?);
            scores.push(all_iou_scores.i(bi)?.narrow(0, idx, 1)?);
        }
        Ok((Tensor::stack(&masks, 0)?, Tensor::stack(&scores, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use crate::modeling::sam::cpu;
    use candle_core::{Device, Tensor};

    #[test]
    fn fast_gelu_matches_exact_gelu() {
        let xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        let exact = Tensor::new(xs.as_slice(), &Device::Cpu)
            .and_then(|t| t.to_dtype(candle_core::DType::F64))
            .and_then(|t| t.gelu_erf())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("exact gelu");
        let mut worst = 0f64;
        for (x, e) in xs.iter().zip(&exact) {
            let err = (cpu::gelu(*x) as f64 - e).abs() / (x.abs() as f64).max(1.0);
            worst = worst.max(err);
        }
        assert!(worst < 1e-6, "fast GELU relative error {worst:e}");
    }
}
