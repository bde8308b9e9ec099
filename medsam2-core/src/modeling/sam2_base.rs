//! The whole model (`sam2.modeling.sam2_base.SAM2Base`): the components and
//! the model-level parameters, loaded strictly from an official checkpoint.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

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
    device: Device,
    dtype: DType,
}

impl Sam2Base {
    /// Builds the model from a checkpoint, strictly: every parameter of the
    /// config must be there with its shape, and nothing else may be.
    pub fn load(cfg: Sam2Config, ckpt: &Checkpoint, dtype: ComputeDType, device: DeviceKind) -> Result<Self> {
        cfg.validate()?;
        let dev = device.device()?;
        let vb = ckpt.var_builder(dtype.dtype(), &dev);
        let model = match Self::new(cfg, vb) {
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
        let memory_attention = MemoryAttention::new(&cfg.memory_attention, vb.pp("memory_attention"))?;
        let memory_encoder = MemoryEncoder::new(&cfg.memory_encoder, vb.pp("memory_encoder"))?;
        let sam_prompt_encoder = PromptEncoder::new(&cfg.prompt_encoder(), vb.pp("sam_prompt_encoder"))?;
        let sam_mask_decoder = MaskDecoder::new(&cfg.mask_decoder(), vb.pp("sam_mask_decoder"))?;
        let maskmem_tpos_enc = vb.get((cfg.num_maskmem, 1, 1, cm), "maskmem_tpos_enc")?;
        let no_mem_embed = vb.get((1, 1, c), "no_mem_embed")?;
        let no_mem_pos_enc = vb.get((1, 1, c), "no_mem_pos_enc")?;
        let mask_downsample = if cfg.use_obj_ptrs_in_encoder {
            let conv = candle_nn::Conv2dConfig { stride: 4, ..Default::default() };
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
            ObjPtrProj::Mlp(Mlp::new(c, c, c, 3, Activation::Relu, false, vb.pp("obj_ptr_proj"))?)
        } else {
            ObjPtrProj::Linear(candle_nn::linear(c, c, vb.pp("obj_ptr_proj"))?)
        };
        let obj_ptr_tpos_proj = if cfg.proj_tpos_enc_in_obj_ptrs {
            Some(candle_nn::linear(c, cm, vb.pp("obj_ptr_tpos_proj"))?)
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
                return Err(Error::Config("high-res features need three FPN levels".into()));
            }
            Some(self.sam_mask_decoder.project_high_res(&out.backbone_fpn[0], &out.backbone_fpn[1])?)
        } else {
            None
        };
        let vision_pos = out
            .vision_pos_enc
            .last()
            .cloned()
            .ok_or_else(|| Error::Config("the image encoder returned no level".into()))?;
        Ok(BackboneFeatures { vision_feats: out.vision_features, vision_pos, high_res })
    }

    /// The image predictor's embedding: the top level plus `no_mem_embed`
    /// when `directly_add_no_mem_embed` (what `SAM2ImagePredictor.set_image` stores).
    pub fn image_embed_without_memory(&self, feats: &BackboneFeatures) -> Result<Tensor> {
        if self.cfg.directly_add_no_mem_embed {
            let c = self.cfg.hidden_dim();
            Ok(feats.vision_feats.broadcast_add(&self.no_mem_embed.reshape((1, c, 1, 1))?)?)
        } else {
            // Without it the official image predictor would run memory attention
            // over no memory; no released config does this.
            Err(Error::Config(
                "model.directly_add_no_mem_embed: false is not supported by the image predictor".into(),
            ))
        }
    }
}
