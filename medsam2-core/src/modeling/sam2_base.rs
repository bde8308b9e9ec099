//! The whole model (`sam2.modeling.sam2_base.SAM2Base`): the components and
//! the model-level parameters, loaded strictly from an official checkpoint.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::modeling::kernels::bf16_linear::Linear;

use crate::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use crate::config::{Activation, Sam2Config};
use crate::error::{Error, Result};
use crate::modeling::backbones::image_encoder::ImageEncoder;
use crate::modeling::memory_attention::MemoryAttention;
use crate::modeling::memory_encoder::{MemoryEncoder, NewMemoryParams};
use crate::modeling::sam::mask_decoder::MaskDecoder;
use crate::modeling::sam::prompt_encoder::PromptEncoder;
use crate::modeling::sam2_utils::Mlp;

/// Object-pointer projection (`obj_ptr_proj`): 3-layer MLP, linear, or identity.
#[derive(Debug, Clone)]
pub enum ObjPtrProj {
    /// `use_mlp_for_obj_ptr_proj`.
    Mlp(Mlp),
    /// A single linear layer.
    Linear(Linear),
    /// No pointers in the encoder.
    Identity,
}

impl Module for ObjPtrProj {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            ObjPtrProj::Mlp(m) => m.forward(x),
            ObjPtrProj::Linear(l) => l.forward(x),
            ObjPtrProj::Identity => Ok(x.clone()),
        }
    }
}

/// Features of one image as the heads need them (`SAM2Base.forward_image` +
/// `_prepare_backbone_features`), NCHW.
#[derive(Debug, Clone)]
pub struct BackboneFeatures {
    /// Top level `[B, C, h, w]` (before any memory conditioning).
    pub vision_feats: Tensor,
    /// Its sine position encoding `[B, C, h, w]`.
    pub vision_pos: Tensor,
    /// Stride-4 and stride-8 levels after `conv_s0`/`conv_s1` (if the model uses them).
    pub high_res: Option<(Tensor, Tensor)>,
}

/// SAM 2 with all its weights.
#[derive(Debug)]
pub struct Sam2Base {
    /// The configuration it was built from.
    pub cfg: Sam2Config,
    /// Hiera + FPN.
    pub image_encoder: ImageEncoder,
    /// Memory attention.
    pub memory_attention: MemoryAttention,
    /// Memory encoder.
    pub memory_encoder: MemoryEncoder,
    /// Prompt encoder.
    pub sam_prompt_encoder: PromptEncoder,
    /// Mask decoder.
    pub sam_mask_decoder: MaskDecoder,
    /// Temporal encodings of memory slots `[num_maskmem, 1, 1, Cm]`.
    pub maskmem_tpos_enc: Tensor,
    /// No-memory embedding `[1, 1, C]`.
    pub no_mem_embed: Tensor,
    /// No-memory position encoding `[1, 1, C]`.
    pub no_mem_pos_enc: Tensor,
    /// Mask-prompt downsampling for pointers (`mask_downsample`, conv 4x4 s4), if pointers are used.
    pub mask_downsample: Option<candle_nn::Conv2d>,
    /// No-object pointer `[1, C]`.
    pub no_obj_ptr: Option<Tensor>,
    /// Object-pointer projection.
    pub obj_ptr_proj: ObjPtrProj,
    /// Projection of the pointers' temporal encoding (`obj_ptr_tpos_proj`, C → Cm).
    pub obj_ptr_tpos_proj: Option<Linear>,
    /// Settings and weight (`no_obj_embed_spatial`) of `_encode_new_memory`.
    pub new_memory: NewMemoryParams,
    /// Bound on the stored memories whose projected keys and values are kept
    /// between tracking steps.
    pub projection_limit: crate::memory_bank::ProjectionCacheLimit,
    device: Device,
    dtype: DType,
}

impl Sam2Base {
    /// Builds the model from a checkpoint, strictly: every parameter of the
    /// config must be there with its shape, and nothing else may be.
    pub fn load(
        cfg: Sam2Config,
        ckpt: &Checkpoint,
        dtype: ComputeDType,
        device: DeviceKind,
    ) -> Result<Self> {
        cfg.validate()?;
        let dev = device.device()?;
        dtype.check_supported(&dev)?;
        let vb = ckpt.var_builder(dtype.tensor_dtype(&dev), &dev);
        // CPU bf16 mode: the linear layers built below pack bf16 weights.
        let scope = crate::modeling::kernels::bf16_linear::LoadScope::new(dtype.bf16_matmuls(&dev));
        let built = Self::new(cfg, vb);
        drop(scope);
        let model = match built {
            Ok(m) => m,
            Err(e) => return Err(ckpt.take_error().unwrap_or(e)),
        };
        ckpt.check_all_used()?;
        Ok(model)
    }

    /// Builds the model from any `VarBuilder` at the state-dict root.
    pub fn new(cfg: Sam2Config, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_dim();
        let cm = cfg.mem_dim();
        let image_encoder = ImageEncoder::new(&cfg.image_encoder, vb.pp("image_encoder"))?;
        let memory_attention =
            MemoryAttention::new(&cfg.memory_attention, vb.pp("memory_attention"))?;
        let memory_encoder = MemoryEncoder::new(&cfg.memory_encoder, vb.pp("memory_encoder"))?;
        let sam_prompt_encoder =
            PromptEncoder::new(&cfg.prompt_encoder(), vb.pp("sam_prompt_encoder"))?;
        let sam_mask_decoder = MaskDecoder::new(&cfg.mask_decoder(), vb.pp("sam_mask_decoder"))?;
        let maskmem_tpos_enc = vb.get((cfg.num_maskmem, 1, 1, cm), "maskmem_tpos_enc")?;
        let no_mem_embed = vb.get((1, 1, c), "no_mem_embed")?;
        let no_mem_pos_enc = vb.get((1, 1, c), "no_mem_pos_enc")?;
        let mask_downsample = if cfg.use_obj_ptrs_in_encoder {
            let conv = candle_nn::Conv2dConfig {
                stride: 4,
                ..Default::default()
            };
            Some(candle_nn::conv2d(1, 1, 4, conv, vb.pp("mask_downsample"))?)
        } else {
            None
        };
        let no_obj_ptr = if cfg.pred_obj_scores && cfg.use_obj_ptrs_in_encoder {
            Some(vb.get((1, c), "no_obj_ptr")?)
        } else {
            None
        };
        let obj_ptr_proj = if !cfg.use_obj_ptrs_in_encoder {
            ObjPtrProj::Identity
        } else if cfg.use_mlp_for_obj_ptr_proj {
            ObjPtrProj::Mlp(Mlp::new(
                c,
                c,
                c,
                3,
                Activation::Relu,
                false,
                vb.pp("obj_ptr_proj"),
            )?)
        } else {
            ObjPtrProj::Linear(crate::modeling::sam2_utils::linear(
                c,
                c,
                vb.pp("obj_ptr_proj"),
            )?)
        };
        let obj_ptr_tpos_proj = if cfg.proj_tpos_enc_in_obj_ptrs {
            Some(crate::modeling::sam2_utils::linear(
                c,
                cm,
                vb.pp("obj_ptr_tpos_proj"),
            )?)
        } else {
            None
        };
        let new_memory = NewMemoryParams::load(&cfg, vb.clone())?;
        Ok(Self {
            image_encoder,
            memory_attention,
            memory_encoder,
            sam_prompt_encoder,
            sam_mask_decoder,
            maskmem_tpos_enc,
            no_mem_embed,
            no_mem_pos_enc,
            mask_downsample,
            no_obj_ptr,
            obj_ptr_proj,
            obj_ptr_tpos_proj,
            new_memory,
            // A memory window (num_maskmem) plus two: one object's
            // propagation, its conditioning frame included, hits every step.
            projection_limit: crate::memory_bank::ProjectionCacheLimit::new(cfg.num_maskmem + 2),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            cfg,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encodes normalised pixels `[B, 3, S, S]` (`forward_image` +
    /// `_prepare_backbone_features`, NCHW): the top level, its position
    /// encoding, and the projected high-resolution levels.
    pub fn forward_image(&self, pixels: &Tensor) -> Result<BackboneFeatures> {
        let s = self.cfg.image_size;
        let dims = pixels.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[2] != s || dims[3] != s {
            return Err(Error::invalid(format!(
                "pixels must be [B, 3, {s}, {s}], got {dims:?}"
            )));
        }
        let out = self.image_encoder.forward(&pixels.to_dtype(self.dtype)?)?;
        let n = out.backbone_fpn.len();
        let high_res = if self.cfg.use_high_res_features_in_sam {
            if n < 3 {
                return Err(Error::Config(
                    "high-res features need three FPN levels".into(),
                ));
            }
            Some(
                self.sam_mask_decoder
                    .project_high_res(&out.backbone_fpn[0], &out.backbone_fpn[1])?,
            )
        } else {
            None
        };
        let vision_pos = out
            .vision_pos_enc
            .last()
            .cloned()
            .ok_or_else(|| Error::Config("the image encoder returned no level".into()))?;
        Ok(BackboneFeatures {
            vision_feats: out.vision_features,
            vision_pos,
            high_res,
        })
    }

    /// The image predictor's embedding: the top level plus `no_mem_embed`
    /// when `directly_add_no_mem_embed` (what `SAM2ImagePredictor.set_image` stores).
    pub fn image_embed_without_memory(&self, feats: &BackboneFeatures) -> Result<Tensor> {
        if self.cfg.directly_add_no_mem_embed {
            let c = self.cfg.hidden_dim();
            Ok(feats
                .vision_feats
                .broadcast_add(&self.no_mem_embed.reshape((1, c, 1, 1))?)?)
        } else {
            // Without it the official image predictor would run memory attention
            // over no memory; no released config does this.
            Err(Error::Config(
                "model.directly_add_no_mem_embed: false is not supported by the image predictor"
                    .into(),
            ))
        }
    }
}

/// Output of the SAM heads (`_forward_sam_heads` / `_use_mask_as_output`).
#[derive(Debug, Clone)]
pub struct SamHeadsOutput {
    /// All returned masks `[B, M, S/4, S/4]` (−1024 where no object).
    pub low_res_multimasks: Tensor,
    /// IoU predictions `[B, M]`.
    pub ious: Tensor,
    /// The chosen mask `[B, 1, S/4, S/4]`.
    pub low_res_masks: Tensor,
    /// The chosen mask at the model size `[B, 1, S, S]`.
    pub high_res_masks: Tensor,
    /// Object pointer `[B, C]`.
    pub obj_ptr: Tensor,
    /// Object-score logits `[B, 1]`.
    pub object_score_logits: Tensor,
    /// Index of the chosen mask among the `M`.
    pub best: usize,
    /// Whether multimask output was used.
    pub multimask_output: bool,
}

/// A memory-attention call (inputs and output), for parity and debugging.
#[derive(Debug, Clone)]
pub struct MemoryAttentionTrace {
    /// Current features `[HW, 1, C]`.
    pub curr: Tensor,
    /// Their position encoding `[HW, 1, C]`.
    pub curr_pos: Tensor,
    /// Memory tokens `[M, 1, Cm]`.
    pub memory: Tensor,
    /// Memory position encodings `[M, 1, Cm]`.
    pub memory_pos: Tensor,
    /// Trailing pointer tokens in `memory`.
    pub num_obj_ptr_tokens: usize,
    /// Output `[HW, 1, C]`.
    pub output: Tensor,
}

/// Output of one tracking step (`track_step`).
#[derive(Debug, Clone)]
pub struct TrackStepOutput {
    /// What is stored for the frame.
    pub frame: crate::memory_bank::FrameOutput,
    /// The chosen mask at the model size `[1, 1, S, S]`.
    pub high_res_masks: Tensor,
    /// Every SAM-heads call made (one, or two for mask prompts).
    pub sam_heads: Vec<SamHeadsOutput>,
    /// The memory-attention call, if one was made.
    pub memory_attention: Option<MemoryAttentionTrace>,
}

/// Object score given to masks judged absent (`NO_OBJ_SCORE`).
pub const NO_OBJ_SCORE: f32 = -1024.0;

/// NCHW `[B, C, h, w]` → sequence-first `[hw, B, C]`.
pub fn to_seq_first(x: &Tensor) -> candle_core::Result<Tensor> {
    x.flatten_from(2)?.permute((2, 0, 1))
}

/// Sequence-first `[hw, B, C]` → NCHW `[B, C, h, w]`.
pub fn from_seq_first(x: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let (_, b, c) = x.dims3()?;
    x.permute((1, 2, 0))?.reshape((b, c, h, w))
}

/// `get_1d_sine_pe`: `[N]` positions → `[N, dim]` (sin half, then cos half).
pub fn get_1d_sine_pe(pos: &[f32], dim: usize, device: &Device) -> candle_core::Result<Tensor> {
    let pe_dim = dim / 2;
    let mut v = vec![0f32; pos.len() * dim];
    for (i, p) in pos.iter().enumerate() {
        for j in 0..pe_dim {
            let dim_t = 10000f32.powf((2 * (j / 2)) as f32 / pe_dim as f32);
            let a = p / dim_t;
            v[i * dim + j] = a.sin();
            v[i * dim + pe_dim + j] = a.cos();
        }
    }
    Tensor::from_vec(v, (pos.len(), dim), device)
}

/// Antialiased bilinear resize of `[B, C, H, W]` (f32) as `F.interpolate(...,
/// antialias=True)`.
pub fn resize_aa(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let out = crate::transforms::resize_bilinear_aa_f32(&data, b * c, h, w, oh, ow)?;
    Ok(Tensor::from_vec(out, (b, c, oh, ow), x.device())?)
}

impl Sam2Base {
    /// `_forward_sam_heads`: prompts (model-pixel points `[B, P, 2]` with labels
    /// `[B, P]`, and/or a mask `[B, 1, ·, ·]`) on `backbone_features` `[B, C, h, w]`.
    pub fn forward_sam_heads(
        &self,
        backbone_features: &Tensor,
        point_inputs: Option<(&Tensor, &Tensor)>,
        mask_inputs: Option<&Tensor>,
        high_res: Option<(&Tensor, &Tensor)>,
        multimask_output: bool,
    ) -> Result<SamHeadsOutput> {
        let b = backbone_features.dim(0)?;
        let dev = backbone_features.device();
        let (pad_c, pad_l);
        let points = match point_inputs {
            Some(p) => p,
            None => {
                pad_c = Tensor::zeros((b, 1, 2), DType::F32, dev)?;
                pad_l = Tensor::full(-1f32, (b, 1), dev)?;
                (&pad_c, &pad_l)
            }
        };
        let [mh, mw] = self.sam_prompt_encoder.mask_input_size();
        let mask_prompt = match mask_inputs {
            Some(m) if m.dims()[2..] != [mh, mw] => Some(resize_aa(m, mh, mw)?),
            Some(m) => Some(m.clone()),
            None => None,
        };
        let mask_prompt = match mask_prompt {
            Some(m) => Some(m.to_dtype(self.dtype)?),
            None => None,
        };
        let (sparse, dense) =
            self.sam_prompt_encoder
                .forward(Some(points), None, mask_prompt.as_ref())?;
        let pe = self.sam_prompt_encoder.get_dense_pe()?;
        let out = self.sam_mask_decoder.forward(
            backbone_features,
            &pe,
            &sparse,
            &dense,
            multimask_output,
            false,
            high_res,
        )?;
        let mut low = out.masks.to_dtype(DType::F32)?;
        let scores = out.object_score_logits.to_dtype(DType::F32)?;
        let appearing = scores.gt(0f32)?; // [B, 1] u8
        if self.cfg.pred_obj_scores {
            let m = low.dim(1)?;
            let cond = appearing.reshape((b, 1, 1, 1))?.broadcast_as(low.shape())?;
            let _ = m;
            low = cond.where_cond(&low, &Tensor::full(NO_OBJ_SCORE, low.shape(), dev)?)?;
        }
        let s = self.cfg.image_size;
        let high = low.upsample_bilinear2d(s, s, false)?;
        let ious = out.iou_pred.to_dtype(DType::F32)?;
        let mut best = 0usize;
        let mut token = out.sam_tokens_out.narrow(1, 0, 1)?.squeeze(1)?;
        let (low_res_masks, high_res_masks) = if multimask_output {
            // Batch 1 in the predictors; pick per the first row.
            let v = ious.get(0)?.to_vec1::<f32>()?;
            for (i, x) in v.iter().enumerate() {
                if *x > v[best] {
                    best = i;
                }
            }
            if out.sam_tokens_out.dim(1)? > 1 {
                token = out.sam_tokens_out.narrow(1, best, 1)?.squeeze(1)?;
            }
            (low.narrow(1, best, 1)?, high.narrow(1, best, 1)?)
        } else {
            (low.clone(), high.clone())
        };
        let mut obj_ptr = self.obj_ptr_proj.forward(&token)?.to_dtype(DType::F32)?;
        if self.cfg.pred_obj_scores {
            let lambda = if self.cfg.soft_no_obj_ptr {
                candle_nn::ops::sigmoid(&scores)?
            } else {
                appearing.to_dtype(DType::F32)?
            };
            obj_ptr = self.mix_no_obj_ptr(&obj_ptr, &lambda)?;
        }
        Ok(SamHeadsOutput {
            low_res_multimasks: low,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits: scores,
            best,
            multimask_output,
        })
    }

    fn mix_no_obj_ptr(&self, obj_ptr: &Tensor, lambda: &Tensor) -> Result<Tensor> {
        let mut p = obj_ptr.clone();
        if self.cfg.fixed_no_obj_ptr {
            p = p.broadcast_mul(lambda)?;
        }
        if let Some(no) = &self.no_obj_ptr {
            let one_minus = (1.0 - lambda)?;
            p = (p + one_minus.broadcast_mul(&no.to_dtype(DType::F32)?)?)?;
        }
        Ok(p)
    }

    /// `_use_mask_as_output`: a binary mask `[B, 1, S, S]` (0/1) used directly as
    /// the prediction; the pointer still comes from the SAM heads.
    pub fn use_mask_as_output(
        &self,
        backbone_features: &Tensor,
        high_res: Option<(&Tensor, &Tensor)>,
        mask_inputs: &Tensor,
    ) -> Result<(SamHeadsOutput, Option<SamHeadsOutput>)> {
        let dev = mask_inputs.device();
        let b = mask_inputs.dim(0)?;
        let m = mask_inputs.to_dtype(DType::F32)?;
        let high = ((&m * 20.0)? - 10.0)?;
        let (_, _, h, w) = high.dims4()?;
        let low = resize_aa(&high, h / 4, w / 4)?;
        let ious = Tensor::ones((b, 1), DType::F32, dev)?;
        let (obj_ptr, inner) = match &self.mask_downsample {
            None => (
                Tensor::zeros((b, self.cfg.hidden_dim()), DType::F32, dev)?,
                None,
            ),
            Some(ds) => {
                let small = ds.forward(&m.to_dtype(self.dtype)?)?;
                let o =
                    self.forward_sam_heads(backbone_features, None, Some(&small), high_res, false)?;
                (o.obj_ptr.clone(), Some(o))
            }
        };
        let any = m
            .flatten_from(1)?
            .gt(0f32)?
            .to_dtype(DType::F32)?
            .max_keepdim(1)?; // [B, 1]
        let scores = ((&any * 20.0)? - 10.0)?;
        let obj_ptr = if self.cfg.pred_obj_scores {
            self.mix_no_obj_ptr(&obj_ptr, &any)?
        } else {
            obj_ptr
        };
        Ok((
            SamHeadsOutput {
                low_res_multimasks: low.clone(),
                ious,
                low_res_masks: low,
                high_res_masks: high,
                obj_ptr,
                object_score_logits: scores,
                best: 0,
                multimask_output: false,
            },
            inner,
        ))
    }

    /// `_prepare_memory_conditioned_features` for one object (batch 1): the
    /// frame's top-level features conditioned on `memory` (NCHW `[1, C, h, w]`).
    pub fn prepare_memory_conditioned_features(
        &self,
        feats: &BackboneFeatures,
        is_init_cond_frame: bool,
        memory: &crate::memory_bank::SelectedMemory,
    ) -> Result<(Tensor, Option<MemoryAttentionTrace>)> {
        let (b, c, h, w) = feats.vision_feats.dims4()?;
        if self.cfg.num_maskmem == 0 {
            return Ok((feats.vision_feats.clone(), None));
        }
        let dev = feats.vision_feats.device().clone();
        let cm = self.cfg.mem_dim();
        let mut to_cat = Vec::new();
        let mut to_cat_pos = Vec::new();
        let mut num_ptr = 0usize;
        if is_init_cond_frame {
            if self.cfg.directly_add_no_mem_embed {
                let x = feats
                    .vision_feats
                    .broadcast_add(&self.no_mem_embed.reshape((1, c, 1, 1))?)?;
                return Ok((x, None));
            }
            to_cat.push(self.no_mem_embed.broadcast_as((1, b, c))?.contiguous()?);
            to_cat_pos.push(self.no_mem_pos_enc.broadcast_as((1, b, c))?.contiguous()?);
        } else {
            for m in &memory.spatial {
                to_cat.push(to_seq_first(&m.features.to_dtype(DType::F32)?)?);
                let mut pos = to_seq_first(&m.pos_enc.to_dtype(DType::F32)?)?;
                if let Some(i) = m.tpos_index {
                    let t = self.maskmem_tpos_enc.get(i)?.to_dtype(DType::F32)?; // [1, 1, Cm]
                    pos = pos.broadcast_add(&t)?;
                }
                to_cat_pos.push(pos);
            }
            if !memory.pointers.is_empty() {
                let ptrs: Vec<Tensor> = memory
                    .pointers
                    .iter()
                    .map(|p| p.ptr.to_dtype(DType::F32))
                    .collect::<candle_core::Result<_>>()?;
                let n = ptrs.len();
                let obj_ptrs = Tensor::stack(&ptrs, 0)?; // [n, B, C]
                let obj_pos = if self.cfg.add_tpos_enc_to_obj_ptrs {
                    let norm = memory.ptr_tpos_norm.max(1) as f32;
                    let pos: Vec<f32> = memory
                        .pointers
                        .iter()
                        .map(|p| p.tpos as f32 / norm)
                        .collect();
                    let tpos_dim = if self.cfg.proj_tpos_enc_in_obj_ptrs {
                        c
                    } else {
                        cm
                    };
                    let mut pe = get_1d_sine_pe(&pos, tpos_dim, &dev)?;
                    if let Some(proj) = &self.obj_ptr_tpos_proj {
                        pe = proj
                            .forward(&pe.to_dtype(self.dtype)?)?
                            .to_dtype(DType::F32)?;
                    }
                    pe.unsqueeze(1)?.broadcast_as((n, b, cm))?.contiguous()?
                } else {
                    Tensor::zeros((n, b, cm), DType::F32, &dev)?
                };
                let (obj_ptrs, obj_pos) = if cm < c {
                    let k = c / cm;
                    let p = obj_ptrs
                        .reshape((n, b, k, cm))?
                        .permute((0, 2, 1, 3))?
                        .reshape((n * k, b, cm))?;
                    // repeat_interleave along dim 0
                    let q = obj_pos
                        .unsqueeze(1)?
                        .broadcast_as((n, k, b, cm))?
                        .reshape((n * k, b, cm))?;
                    (p, q)
                } else {
                    (obj_ptrs, obj_pos)
                };
                num_ptr = obj_ptrs.dim(0)?;
                to_cat.push(obj_ptrs);
                to_cat_pos.push(obj_pos);
            }
            if to_cat.is_empty() {
                return Err(Error::invalid(
                    "tracking a frame with no memory at all (no conditioning frame?)",
                ));
            }
        }
        let memory_t = Tensor::cat(&to_cat, 0)?.to_dtype(self.dtype)?;
        let memory_pos = Tensor::cat(&to_cat_pos, 0)?.to_dtype(self.dtype)?;
        let curr = to_seq_first(&feats.vision_feats)?.contiguous()?;
        let curr_pos = to_seq_first(&feats.vision_pos)?.contiguous()?;
        let out = if is_init_cond_frame {
            self.memory_attention
                .forward(&curr, &memory_t, &curr_pos, &memory_pos, num_ptr)?
        } else {
            let projected =
                self.project_selected_memory(memory, &memory_t, &memory_pos, num_ptr)?;
            self.memory_attention
                .forward_projected(&curr, &curr_pos, &projected, &memory_t, num_ptr)?
        };
        let pix = from_seq_first(&out, h, w)?;
        let trace = MemoryAttentionTrace {
            curr,
            curr_pos,
            memory: memory_t,
            memory_pos,
            num_obj_ptr_tokens: num_ptr,
            output: out,
        };
        Ok((pix, Some(trace)))
    }

    /// The cross-attention keys of every memory-attention layer for `memory`,
    /// as key parts in token order: each spatial memory's projection comes
    /// from its cache (filled on first use) with its slot's projected temporal
    /// encoding as offset; the object pointers (the last `num_ptr` tokens of
    /// `memory_t`, `memory_pos`, `[M, 1, Cm]`) are projected anew. Equal to
    /// projecting the assembled memory, as
    /// `k_proj(m + pos + tpos) = k_proj(m + pos) + W_k tpos`.
    fn project_selected_memory(
        &self,
        memory: &crate::memory_bank::SelectedMemory,
        memory_t: &Tensor,
        memory_pos: &Tensor,
        num_ptr: usize,
    ) -> Result<Vec<Vec<crate::modeling::memory_attention::KeyPart>>> {
        use crate::modeling::memory_attention::{KeyPart, ProjectedMemory};
        let ma = &self.memory_attention;
        let cm = self.cfg.mem_dim();
        let mut per_layer: Vec<Vec<KeyPart>> = vec![Vec::new(); ma.num_layers()];
        for m in &memory.spatial {
            let project = || -> Result<Vec<ProjectedMemory>> {
                let f = to_seq_first(&m.features.to_dtype(DType::F32)?)?.to_dtype(self.dtype)?;
                let p = to_seq_first(&m.pos_enc.to_dtype(DType::F32)?)?.to_dtype(self.dtype)?;
                Ok(ma.project_memory(&f, &p)?)
            };
            let base = match &m.cache {
                Some(c) => self
                    .projection_limit
                    .get_or_insert_with(c, &m.features, project)?,
                None => std::sync::Arc::new(project()?),
            };
            let offsets = match m.tpos_index {
                Some(i) => {
                    let t = self
                        .maskmem_tpos_enc
                        .get(i)?
                        .to_dtype(DType::F32)?
                        .reshape((1, 1, cm))?
                        .to_dtype(self.dtype)?;
                    ma.key_offsets(&t)?
                }
                None => vec![None; ma.num_layers()],
            };
            for ((parts, b), o) in per_layer.iter_mut().zip(base.iter()).zip(&offsets) {
                parts.push(b.with_key_offset(o.as_ref()));
            }
        }
        if num_ptr > 0 {
            let total = memory_t.dim(0)?;
            let ptr = memory_t.narrow(0, total - num_ptr, num_ptr)?;
            let ptr_pos = memory_pos.narrow(0, total - num_ptr, num_ptr)?;
            for (parts, p) in per_layer.iter_mut().zip(ma.project_memory(&ptr, &ptr_pos)?) {
                parts.push(KeyPart::plain(p.k));
            }
        }
        Ok(per_layer)
    }

    /// `_encode_new_memory` of one frame: (`maskmem_features` rounded to bf16
    /// as the official video predictor stores them, `maskmem_pos_enc`).
    pub fn encode_new_memory(
        &self,
        pix_feat: &Tensor,
        high_res_masks: &Tensor,
        object_score_logits: &Tensor,
        is_mask_from_pts: bool,
        params: &NewMemoryParams,
    ) -> Result<(Tensor, Tensor)> {
        let (f, p) = self.memory_encoder.encode_new_memory(
            pix_feat,
            &high_res_masks.to_dtype(self.dtype)?,
            Some(&object_score_logits.to_dtype(self.dtype)?),
            is_mask_from_pts,
            params,
        )?;
        Ok((f.to_dtype(DType::BF16)?, p.to_dtype(DType::F32)?))
    }

    /// `_use_multimask`.
    pub fn use_multimask(&self, is_init_cond_frame: bool, num_points: usize) -> bool {
        self.cfg.multimask_output_in_sam
            && (is_init_cond_frame || self.cfg.multimask_output_for_tracking)
            && (self.cfg.multimask_min_pt_num..=self.cfg.multimask_max_pt_num).contains(&num_points)
    }

    /// `track_step` for one object on one frame. `point_inputs` are model-pixel
    /// points `[1, P, 2]` and labels `[1, P]`; `mask_inputs` a binary mask
    /// `[1, 1, S, S]`; `prev_sam_mask_logits` low-res logits fed with clicks.
    #[allow(clippy::too_many_arguments)]
    pub fn track_step(
        &self,
        feats: &BackboneFeatures,
        is_init_cond_frame: bool,
        point_inputs: Option<(&Tensor, &Tensor)>,
        mask_inputs: Option<&Tensor>,
        memory: &crate::memory_bank::SelectedMemory,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Option<&Tensor>,
        mem_params: &NewMemoryParams,
    ) -> Result<TrackStepOutput> {
        let high_res = feats.high_res.as_ref().map(|(a, b)| (a, b));
        let mut sam_heads = Vec::new();
        let mut ma_trace = None;
        let heads = match mask_inputs {
            Some(m) if self.cfg.use_mask_input_as_output_without_sam => {
                let (o, inner) = self.use_mask_as_output(&feats.vision_feats, high_res, m)?;
                if let Some(i) = inner {
                    sam_heads.push(i);
                }
                o
            }
            _ => {
                let (pix, tr) =
                    self.prepare_memory_conditioned_features(feats, is_init_cond_frame, memory)?;
                ma_trace = tr;
                let mask_in = match (prev_sam_mask_logits, mask_inputs) {
                    (Some(p), None) => Some(p.clone()),
                    (_, m) => m.cloned(),
                };
                let n_pts = point_inputs
                    .map(|(_, l)| l.dim(1))
                    .transpose()?
                    .unwrap_or(0);
                let multi = self.use_multimask(is_init_cond_frame, n_pts);
                let o =
                    self.forward_sam_heads(&pix, point_inputs, mask_in.as_ref(), high_res, multi)?;
                let o2 = o.clone();
                sam_heads.push(o2);
                if run_mem_encoder {
                    let (f, _) = self.encode_new_memory(
                        &pix_for_memory(feats),
                        &o.high_res_masks,
                        &o.object_score_logits,
                        point_inputs.is_some(),
                        mem_params,
                    )?;
                    let frame = crate::memory_bank::FrameOutput {
                        maskmem_features: Some(f),
                        pred_masks: o.low_res_masks.clone(),
                        obj_ptr: o.obj_ptr.clone(),
                        object_score_logits: o.object_score_logits.clone(),
                        projected: Default::default(),
                    };
                    return Ok(TrackStepOutput {
                        frame,
                        high_res_masks: o.high_res_masks,
                        sam_heads,
                        memory_attention: ma_trace,
                    });
                }
                o
            }
        };
        let maskmem_features = if run_mem_encoder {
            Some(
                self.encode_new_memory(
                    &pix_for_memory(feats),
                    &heads.high_res_masks,
                    &heads.object_score_logits,
                    point_inputs.is_some(),
                    mem_params,
                )?
                .0,
            )
        } else {
            None
        };
        let frame = crate::memory_bank::FrameOutput {
            maskmem_features,
            pred_masks: heads.low_res_masks.clone(),
            obj_ptr: heads.obj_ptr.clone(),
            object_score_logits: heads.object_score_logits.clone(),
            projected: Default::default(),
        };
        Ok(TrackStepOutput {
            frame,
            high_res_masks: heads.high_res_masks,
            sam_heads,
            memory_attention: ma_trace,
        })
    }
}

/// The memory encoder sees the frame's raw top-level features (not the
/// memory-conditioned ones), as `_encode_new_memory` is given `current_vision_feats`.
fn pix_for_memory(feats: &BackboneFeatures) -> Tensor {
    feats.vision_feats.clone()
}

impl Sam2Base {
    /// A model with random weights (candle's default initialisers) under the
    /// official names, for benchmarks and demos. The weights are detached from
    /// candle's autograd so that outputs do not keep computation graphs alive.
    pub fn with_random_weights(cfg: Sam2Config, device: &Device) -> Result<Self> {
        let varmap = candle_nn::VarMap::new();
        // First pass creates the variables; the second builds from detached copies.
        Self::new(
            cfg.clone(),
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        let tensors: std::collections::HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|_| Error::invalid("poisoned lock"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        Self::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, device))
    }

    /// Every weight as `(official name, tensor)` (e.g. to save a checkpoint).
    pub fn named_weights_from(varmap: &candle_nn::VarMap) -> Vec<(String, Tensor)> {
        varmap
            .data()
            .lock()
            .map(|d| {
                d.iter()
                    .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
