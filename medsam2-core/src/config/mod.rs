//! Typed model configuration, mirroring the constructor arguments of the
//! official `sam2.modeling` classes (and the keys of their Hydra YAML files).
//!
//! Every switch the official configs turn on or off is a field here; the network
//! code branches on these fields only. [`Sam2Config::preset`] builds the official
//! SAM 2 / SAM 2.1 configs; `Sam2Config::from_yaml_*` (feature `std`) reads an
//! official Hydra-style YAML file.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

#[cfg(feature = "std")]
mod yaml;

/// Sine position encoding (`sam2.modeling.position_encoding.PositionEmbeddingSine`).
#[derive(Debug, Clone, PartialEq)]
pub struct PositionEmbeddingSineConfig {
    /// Output channels (`num_pos_feats`); half encode y, half x.
    pub num_pos_feats: usize,
    /// Frequency base (`temperature`).
    pub temperature: f64,
    /// Normalise coordinates to `[0, scale]` (`normalize`).
    pub normalize: bool,
    /// Scale after normalisation; `None` means 2π (`scale`).
    pub scale: Option<f64>,
}

impl PositionEmbeddingSineConfig {
    /// The encoding with the official defaults for `num_pos_feats` channels.
    pub fn new(num_pos_feats: usize) -> Self {
        Self {
            num_pos_feats,
            temperature: 10000.0,
            normalize: true,
            scale: None,
        }
    }
}

/// Hiera trunk (`sam2.modeling.backbones.hieradet.Hiera`).
#[derive(Debug, Clone, PartialEq)]
pub struct HieraConfig {
    /// Channels of the first stage (`embed_dim`).
    pub embed_dim: usize,
    /// Heads of the first stage (`num_heads`).
    pub num_heads: usize,
    /// Number of stages with query pooling at their start (`q_pool`).
    pub q_pool: usize,
    /// Pooling stride between stages (`q_stride`).
    pub q_stride: [usize; 2],
    /// Blocks per stage (`stages`).
    pub stages: Vec<usize>,
    /// Channel multiplier at a stage change (`dim_mul`).
    pub dim_mul: f64,
    /// Head multiplier at a stage change (`head_mul`).
    pub head_mul: f64,
    /// Size of the background positional embedding (`window_pos_embed_bkg_spatial_size`).
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    /// Attention window per stage (`window_spec`).
    pub window_spec: Vec<usize>,
    /// Blocks with global attention (`global_att_blocks`).
    pub global_att_blocks: Vec<usize>,
}

impl HieraConfig {
    /// Index of the last block of every stage.
    pub fn stage_ends(&self) -> Vec<usize> {
        let mut acc = 0;
        self.stages
            .iter()
            .map(|s| {
                acc += s;
                acc - 1
            })
            .collect()
    }

    /// Output channels of every stage (`Hiera.channel_list` reversed: low to high level).
    pub fn stage_dims(&self) -> Vec<usize> {
        let mut d = self.embed_dim as f64;
        let mut out = Vec::with_capacity(self.stages.len());
        for i in 0..self.stages.len() {
            if i > 0 {
                d *= self.dim_mul;
            }
            out.push(d as usize);
        }
        out
    }
}

/// Interpolation of the FPN top-down path (`fpn_interp_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FpnInterp {
    /// `nearest` (all official configs).
    Nearest,
    /// `bilinear` (align_corners=False).
    Bilinear,
}

/// Fusion of lateral and top-down features (`fuse_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseType {
    /// `sum`.
    Sum,
    /// `avg`: the sum divided by 2.
    Avg,
}

/// FPN neck (`sam2.modeling.backbones.image_encoder.FpnNeck`).
#[derive(Debug, Clone, PartialEq)]
pub struct FpnNeckConfig {
    /// Position encoding of each level.
    pub position_encoding: PositionEmbeddingSineConfig,
    /// Output channels (`d_model`).
    pub d_model: usize,
    /// Trunk channels from the lowest-resolution stage up (`backbone_channel_list`).
    pub backbone_channel_list: Vec<usize>,
    /// Lateral conv kernel size.
    pub kernel_size: usize,
    /// Lateral conv stride.
    pub stride: usize,
    /// Lateral conv padding.
    pub padding: usize,
    /// Top-down interpolation.
    pub fpn_interp_model: FpnInterp,
    /// Lateral/top-down fusion.
    pub fuse_type: FuseType,
    /// Levels that receive top-down features (`fpn_top_down_levels`; `None` = all).
    pub fpn_top_down_levels: Option<Vec<usize>>,
}

/// Image encoder = trunk + neck (`ImageEncoder`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEncoderConfig {
    /// Hiera trunk.
    pub trunk: HieraConfig,
    /// FPN neck.
    pub neck: FpnNeckConfig,
    /// Number of lowest-resolution levels discarded (`scalp`).
    pub scalp: usize,
}

/// Activation functions named in the configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// ReLU.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
}

/// Attention with rotary position encoding (`sam2.modeling.sam.transformer.RoPEAttention`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoPEAttentionConfig {
    /// Query/output channels (`embedding_dim`).
    pub embedding_dim: usize,
    /// Heads (`num_heads`).
    pub num_heads: usize,
    /// Internal dim = embedding_dim / downsample_rate (`downsample_rate`).
    pub downsample_rate: usize,
    /// Key/value input channels (`kv_in_dim`; `None` = embedding_dim).
    pub kv_in_dim: Option<usize>,
    /// RoPE base (`rope_theta`).
    pub rope_theta: f64,
    /// Repeat the query's rotation over several key memories (`rope_k_repeat`).
    pub rope_k_repeat: bool,
    /// Precompute hint only (`feat_sizes`): tables follow the token count.
    pub feat_sizes: [usize; 2],
}

/// One memory-attention layer (`MemoryAttentionLayer`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryAttentionLayerConfig {
    /// MLP activation.
    pub activation: Activation,
    /// MLP hidden size (`dim_feedforward`).
    pub dim_feedforward: usize,
    /// Add the position encoding to self-attention q/k (`pos_enc_at_attn`).
    pub pos_enc_at_attn: bool,
    /// Add the memory position encoding to cross-attention keys.
    pub pos_enc_at_cross_attn_keys: bool,
    /// Add the position encoding to cross-attention queries.
    pub pos_enc_at_cross_attn_queries: bool,
    /// Self-attention.
    pub self_attention: RoPEAttentionConfig,
    /// Cross-attention to memories.
    pub cross_attention: RoPEAttentionConfig,
}

/// Memory attention (`sam2.modeling.memory_attention.MemoryAttention`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryAttentionConfig {
    /// Channels (`d_model`).
    pub d_model: usize,
    /// Add `0.1 * pos` to the input (`pos_enc_at_input`).
    pub pos_enc_at_input: bool,
    /// Layer settings (all layers equal).
    pub layer: MemoryAttentionLayerConfig,
    /// Number of layers.
    pub num_layers: usize,
}

/// Mask downsampler of the memory encoder (`MaskDownSampler`).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskDownSamplerConfig {
    /// Output channels (`embed_dim`).
    pub embed_dim: usize,
    /// Conv kernel size.
    pub kernel_size: usize,
    /// Conv stride.
    pub stride: usize,
    /// Conv padding.
    pub padding: usize,
    /// Total downsampling (`total_stride`).
    pub total_stride: usize,
}

/// ConvNeXt block of the fuser (`CXBlock`).
#[derive(Debug, Clone, PartialEq)]
pub struct CXBlockConfig {
    /// Channels.
    pub dim: usize,
    /// Depthwise conv kernel size.
    pub kernel_size: usize,
    /// Depthwise conv padding.
    pub padding: usize,
    /// Whether the 7x7 conv is depthwise (`use_dwconv`).
    pub use_dwconv: bool,
    /// Whether `gamma` exists (`layer_scale_init_value > 0`).
    pub layer_scale: bool,
}

/// Fuser (`Fuser`).
#[derive(Debug, Clone, PartialEq)]
pub struct FuserConfig {
    /// Block settings.
    pub layer: CXBlockConfig,
    /// Number of blocks.
    pub num_layers: usize,
    /// Input projection (`input_projection`, with `dim`).
    pub input_projection: bool,
}

/// Memory encoder (`sam2.modeling.memory_encoder.MemoryEncoder`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEncoderConfig {
    /// Memory channels (`out_dim`).
    pub out_dim: usize,
    /// Pixel-feature channels (`in_dim`).
    pub in_dim: usize,
    /// Mask downsampler.
    pub mask_downsampler: MaskDownSamplerConfig,
    /// Fuser.
    pub fuser: FuserConfig,
    /// Position encoding of the memory.
    pub position_encoding: PositionEmbeddingSineConfig,
}

/// Two-way transformer of the mask decoder (`TwoWayTransformer`).
#[derive(Debug, Clone, PartialEq)]
pub struct TwoWayTransformerConfig {
    /// Layers (`depth`).
    pub depth: usize,
    /// Channels (`embedding_dim`).
    pub embedding_dim: usize,
    /// Heads.
    pub num_heads: usize,
    /// MLP hidden size.
    pub mlp_dim: usize,
    /// Downsampling of token-to-image attention.
    pub attention_downsample_rate: usize,
}

/// Mask decoder (`sam2.modeling.sam.mask_decoder.MaskDecoder`).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskDecoderConfig {
    /// Channels (`transformer_dim`).
    pub transformer_dim: usize,
    /// Two-way transformer.
    pub transformer: TwoWayTransformerConfig,
    /// Masks besides the single-mask token (`num_multimask_outputs`).
    pub num_multimask_outputs: usize,
    /// IoU head layers.
    pub iou_head_depth: usize,
    /// IoU head hidden size.
    pub iou_head_hidden_dim: usize,
    /// Use stride-4/8 features when upscaling (`use_high_res_features`).
    pub use_high_res_features: bool,
    /// Sigmoid on the IoU head output.
    pub iou_prediction_use_sigmoid: bool,
    /// Fall back to the best multimask token when token 0 is unstable.
    pub dynamic_multimask_via_stability: bool,
    /// Stability score offset.
    pub dynamic_multimask_stability_delta: f64,
    /// Stability score threshold.
    pub dynamic_multimask_stability_thresh: f64,
    /// Predict an object score.
    pub pred_obj_scores: bool,
    /// Object-score head is an MLP (else linear).
    pub pred_obj_scores_mlp: bool,
    /// Object pointer from the chosen multimask token.
    pub use_multimask_token_for_obj_ptr: bool,
}

/// Prompt encoder (`sam2.modeling.sam.prompt_encoder.PromptEncoder`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEncoderConfig {
    /// Channels (`embed_dim`).
    pub embed_dim: usize,
    /// Image embedding size `(h, w)`.
    pub image_embedding_size: [usize; 2],
    /// Model input size `(h, w)`.
    pub input_image_size: [usize; 2],
    /// Hidden channels of the mask downscaling (`mask_in_chans`).
    pub mask_in_chans: usize,
}

/// The whole model (`sam2.modeling.sam2_base.SAM2Base` and its arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct Sam2Config {
    /// Image encoder.
    pub image_encoder: ImageEncoderConfig,
    /// Memory attention.
    pub memory_attention: MemoryAttentionConfig,
    /// Memory encoder.
    pub memory_encoder: MemoryEncoderConfig,
    /// Memory slots: 1 conditioning + `num_maskmem - 1` previous frames.
    pub num_maskmem: usize,
    /// Model input size (square).
    pub image_size: usize,
    /// Stride of the top feature level.
    pub backbone_stride: usize,
    /// Sigmoid scale of the mask fed to the memory encoder.
    pub sigmoid_scale_for_mem_enc: f64,
    /// Sigmoid bias of the mask fed to the memory encoder.
    pub sigmoid_bias_for_mem_enc: f64,
    /// Binarise masks from clicks before memory encoding.
    pub binarize_mask_from_pts_for_mem_enc: bool,
    /// Mask prompts are output directly, without the SAM heads.
    pub use_mask_input_as_output_without_sam: bool,
    /// Max conditioning frames attended (-1: all).
    pub max_cond_frames_in_attn: i64,
    /// Add `no_mem_embed` directly on frames without memory.
    pub directly_add_no_mem_embed: bool,
    /// Use stride-4/8 features in the mask decoder.
    pub use_high_res_features_in_sam: bool,
    /// Multimask output on the first click(s).
    pub multimask_output_in_sam: bool,
    /// Minimum click count for multimask output.
    pub multimask_min_pt_num: usize,
    /// Maximum click count for multimask output.
    pub multimask_max_pt_num: usize,
    /// Multimask output while tracking.
    pub multimask_output_for_tracking: bool,
    /// Object pointer from the chosen multimask token.
    pub use_multimask_token_for_obj_ptr: bool,
    /// Sigmoid on IoU predictions.
    pub iou_prediction_use_sigmoid: bool,
    /// Temporal stride of the memory bank during evaluation.
    pub memory_temporal_stride_for_eval: usize,
    /// Non-overlapping object masks before memory encoding.
    pub non_overlap_masks_for_mem_enc: bool,
    /// Cross-attend to object pointers.
    pub use_obj_ptrs_in_encoder: bool,
    /// Max object pointers attended.
    pub max_obj_ptrs_in_encoder: usize,
    /// Temporal encoding of object pointers.
    pub add_tpos_enc_to_obj_ptrs: bool,
    /// Linear projection of that encoding (`obj_ptr_tpos_proj`).
    pub proj_tpos_enc_in_obj_ptrs: bool,
    /// Signed temporal distance for pointers.
    pub use_signed_tpos_enc_to_obj_ptrs: bool,
    /// Only past pointers during evaluation.
    pub only_obj_ptrs_in_the_past_for_eval: bool,
    /// Predict object presence.
    pub pred_obj_scores: bool,
    /// MLP object-score head.
    pub pred_obj_scores_mlp: bool,
    /// Fixed no-object pointer.
    pub fixed_no_obj_ptr: bool,
    /// Soft mixing of the no-object pointer.
    pub soft_no_obj_ptr: bool,
    /// 3-layer MLP object-pointer projection (else linear).
    pub use_mlp_for_obj_ptr_proj: bool,
    /// Spatial no-object embedding added to memories (`no_obj_embed_spatial`).
    pub no_obj_embed_spatial: bool,
    /// Mask-decoder dynamic multimask via stability.
    pub dynamic_multimask_via_stability: bool,
    /// Stability score offset.
    pub dynamic_multimask_stability_delta: f64,
    /// Stability threshold.
    pub dynamic_multimask_stability_thresh: f64,
}

/// Official model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSize {
    /// Hiera-T.
    Tiny,
    /// Hiera-S.
    Small,
    /// Hiera-B+.
    BasePlus,
    /// Hiera-L.
    Large,
}

/// Official model generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SAM 2 (July 2024); also Medical-SAM2's checkpoints.
    Sam2,
    /// SAM 2.1 (Sept 2024); also bowang-lab MedSAM2.
    Sam2_1,
}

/// `(embed_dim, num_heads, stages, global_att_blocks, bkg size, window_spec)`.
type HieraDims = (
    usize,
    usize,
    &'static [usize],
    &'static [usize],
    [usize; 2],
    &'static [usize],
);

impl Sam2Config {
    /// Config of an official checkpoint at the official image size 1024.
    pub fn preset(version: Version, size: ModelSize) -> Self {
        let (embed_dim, num_heads, stages, global, bkg, window): HieraDims = match size {
            ModelSize::Tiny => (96, 1, &[1, 2, 7, 2], &[5, 7, 9], [7, 7], &[8, 4, 14, 7]),
            ModelSize::Small => (96, 1, &[1, 2, 11, 2], &[7, 10, 13], [7, 7], &[8, 4, 14, 7]),
            ModelSize::BasePlus => (
                112,
                2,
                &[2, 3, 16, 3],
                &[12, 16, 20],
                [14, 14],
                &[8, 4, 14, 7],
            ),
            ModelSize::Large => (
                144,
                2,
                &[2, 6, 36, 4],
                &[23, 33, 43],
                [7, 7],
                &[8, 4, 16, 8],
            ),
        };
        let trunk = HieraConfig {
            embed_dim,
            num_heads,
            q_pool: 3,
            q_stride: [2, 2],
            stages: stages.to_vec(),
            dim_mul: 2.0,
            head_mul: 2.0,
            window_pos_embed_bkg_spatial_size: bkg,
            window_spec: window.to_vec(),
            global_att_blocks: global.to_vec(),
        };
        let mut channels = trunk.stage_dims();
        channels.reverse();
        let d_model = 256;
        let mem_dim = 64;
        let sam21 = version == Version::Sam2_1;
        let rope = |kv: Option<usize>, repeat: bool| RoPEAttentionConfig {
            embedding_dim: d_model,
            num_heads: 1,
            downsample_rate: 1,
            kv_in_dim: kv,
            rope_theta: 10000.0,
            rope_k_repeat: repeat,
            feat_sizes: [64, 64],
        };
        Sam2Config {
            image_encoder: ImageEncoderConfig {
                trunk,
                neck: FpnNeckConfig {
                    position_encoding: PositionEmbeddingSineConfig::new(d_model),
                    d_model,
                    backbone_channel_list: channels,
                    kernel_size: 1,
                    stride: 1,
                    padding: 0,
                    fpn_interp_model: FpnInterp::Nearest,
                    fuse_type: FuseType::Sum,
                    fpn_top_down_levels: Some(vec![2, 3]),
                },
                scalp: 1,
            },
            memory_attention: MemoryAttentionConfig {
                d_model,
                pos_enc_at_input: true,
                layer: MemoryAttentionLayerConfig {
                    activation: Activation::Relu,
                    dim_feedforward: 2048,
                    pos_enc_at_attn: false,
                    pos_enc_at_cross_attn_keys: true,
                    pos_enc_at_cross_attn_queries: false,
                    self_attention: rope(None, false),
                    cross_attention: rope(Some(mem_dim), true),
                },
                num_layers: 4,
            },
            memory_encoder: MemoryEncoderConfig {
                out_dim: mem_dim,
                in_dim: d_model,
                mask_downsampler: MaskDownSamplerConfig {
                    embed_dim: d_model,
                    kernel_size: 3,
                    stride: 2,
                    padding: 1,
                    total_stride: 16,
                },
                fuser: FuserConfig {
                    layer: CXBlockConfig {
                        dim: d_model,
                        kernel_size: 7,
                        padding: 3,
                        use_dwconv: true,
                        layer_scale: true,
                    },
                    num_layers: 2,
                    input_projection: false,
                },
                position_encoding: PositionEmbeddingSineConfig::new(mem_dim),
            },
            num_maskmem: 7,
            image_size: 1024,
            backbone_stride: 16,
            sigmoid_scale_for_mem_enc: 20.0,
            sigmoid_bias_for_mem_enc: -10.0,
            binarize_mask_from_pts_for_mem_enc: false,
            use_mask_input_as_output_without_sam: true,
            max_cond_frames_in_attn: -1,
            directly_add_no_mem_embed: true,
            use_high_res_features_in_sam: true,
            multimask_output_in_sam: true,
            multimask_min_pt_num: 0,
            multimask_max_pt_num: 1,
            multimask_output_for_tracking: true,
            use_multimask_token_for_obj_ptr: true,
            iou_prediction_use_sigmoid: true,
            memory_temporal_stride_for_eval: 1,
            non_overlap_masks_for_mem_enc: false,
            use_obj_ptrs_in_encoder: true,
            max_obj_ptrs_in_encoder: 16,
            add_tpos_enc_to_obj_ptrs: sam21,
            proj_tpos_enc_in_obj_ptrs: sam21,
            use_signed_tpos_enc_to_obj_ptrs: sam21,
            only_obj_ptrs_in_the_past_for_eval: true,
            pred_obj_scores: true,
            pred_obj_scores_mlp: true,
            fixed_no_obj_ptr: true,
            soft_no_obj_ptr: false,
            use_mlp_for_obj_ptr_proj: true,
            no_obj_embed_spatial: sam21,
            // `build_sam2` adds these as Hydra overrides for inference.
            dynamic_multimask_via_stability: true,
            dynamic_multimask_stability_delta: 0.05,
            dynamic_multimask_stability_thresh: 0.98,
        }
    }

    /// Preset by name: `sam2_hiera_{t,s,b+,l}`, `sam2.1_hiera_{t,s,b+,l}`
    /// (a `.yaml` suffix and a `configs/...` folder prefix are accepted), plus
    /// `medsam2` (bowang-lab MedSAM2: SAM 2.1 tiny at 512) and `medical-sam2`
    /// (MedicineToken Medical-SAM2: SAM 2.0 small at 1024).
    pub fn preset_by_name(name: &str) -> Result<Self> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let base = base.strip_suffix(".yaml").unwrap_or(base);
        let lower = base.to_ascii_lowercase();
        match lower.as_str() {
            "medsam2" | "sam2.1_hiera_t512" => {
                return Self::preset(Version::Sam2_1, ModelSize::Tiny).with_image_size(512)
            }
            "medical-sam2" | "medical_sam2" => {
                // Medical-SAM2's YAML gives 32x32 RoPE hints (only hints: see
                // `RoPEAttentionConfig::feat_sizes`).
                let mut c = Self::preset(Version::Sam2, ModelSize::Small);
                c.memory_attention.layer.self_attention.feat_sizes = [32, 32];
                c.memory_attention.layer.cross_attention.feat_sizes = [32, 32];
                return Ok(c);
            }
            _ => {}
        }
        let (version, rest) = if let Some(r) = lower.strip_prefix("sam2.1_hiera_") {
            (Version::Sam2_1, r)
        } else if let Some(r) = lower.strip_prefix("sam2_hiera_") {
            (Version::Sam2, r)
        } else {
            return Err(Error::Config(alloc::format!("unknown preset `{name}`")));
        };
        let size = match rest {
            "t" | "tiny" => ModelSize::Tiny,
            "s" | "small" => ModelSize::Small,
            "b+" | "base_plus" | "base-plus" | "bplus" => ModelSize::BasePlus,
            "l" | "large" => ModelSize::Large,
            _ => return Err(Error::Config(alloc::format!("unknown preset `{name}`"))),
        };
        Ok(Self::preset(version, size))
    }

    /// The same model at another input size (a multiple of 32 ·
    /// `backbone_stride / 16`); RoPE hints follow.
    pub fn with_image_size(mut self, image_size: usize) -> Result<Self> {
        self.image_size = image_size;
        let f = image_size / self.backbone_stride;
        self.memory_attention.layer.self_attention.feat_sizes = [f, f];
        self.memory_attention.layer.cross_attention.feat_sizes = [f, f];
        self.validate()?;
        Ok(self)
    }

    /// Channels of the prompt encoder, mask decoder and memory attention (`hidden_dim`).
    pub fn hidden_dim(&self) -> usize {
        self.image_encoder.neck.d_model
    }

    /// Memory channels (`mem_dim`).
    pub fn mem_dim(&self) -> usize {
        self.memory_encoder.out_dim
    }

    /// Side of the top feature map (`image_size / backbone_stride`).
    pub fn embedding_size(&self) -> usize {
        self.image_size / self.backbone_stride
    }

    /// Prompt encoder config derived as `SAM2Base._build_sam_heads` does.
    pub fn prompt_encoder(&self) -> PromptEncoderConfig {
        let e = self.embedding_size();
        PromptEncoderConfig {
            embed_dim: self.hidden_dim(),
            image_embedding_size: [e, e],
            input_image_size: [self.image_size, self.image_size],
            mask_in_chans: 16,
        }
    }

    /// Mask decoder config derived as `SAM2Base._build_sam_heads` does.
    pub fn mask_decoder(&self) -> MaskDecoderConfig {
        MaskDecoderConfig {
            transformer_dim: self.hidden_dim(),
            transformer: TwoWayTransformerConfig {
                depth: 2,
                embedding_dim: self.hidden_dim(),
                num_heads: 8,
                mlp_dim: 2048,
                attention_downsample_rate: 2,
            },
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            use_high_res_features: self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid: self.iou_prediction_use_sigmoid,
            dynamic_multimask_via_stability: self.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta: self.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh: self.dynamic_multimask_stability_thresh,
            pred_obj_scores: self.pred_obj_scores,
            pred_obj_scores_mlp: self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr: self.use_multimask_token_for_obj_ptr,
        }
    }

    /// Checks every size against the stated limits ([`crate::limits`]) before
    /// anything is built from it, naming the key and the limit.
    fn check_limits(&self) -> Result<()> {
        use crate::limits::{MAX_CONFIG_DEPTH, MAX_CONFIG_WIDTH, MAX_IMAGE_SIZE};
        let t = &self.image_encoder.trunk;
        let n = &self.image_encoder.neck;
        let ma = &self.memory_attention;
        let me = &self.memory_encoder;
        let over = |key: &str, v: usize, limit: usize, name: &str| {
            Err(Error::Config(alloc::format!(
                "`{key}`: {v} exceeds the limit of {limit} ({name})"
            )))
        };
        if self.image_size > MAX_IMAGE_SIZE {
            return over(
                "model.image_size",
                self.image_size,
                MAX_IMAGE_SIZE,
                "MAX_IMAGE_SIZE",
            );
        }
        let sides: [(&str, usize); 8] = [
            (
                "model.image_encoder.trunk.window_pos_embed_bkg_spatial_size",
                t.window_pos_embed_bkg_spatial_size[0].max(t.window_pos_embed_bkg_spatial_size[1]),
            ),
            (
                "model.image_encoder.trunk.window_spec",
                t.window_spec.iter().copied().max().unwrap_or(0),
            ),
            (
                "model.image_encoder.trunk.q_stride",
                t.q_stride[0].max(t.q_stride[1]),
            ),
            ("model.backbone_stride", self.backbone_stride),
            (
                "model.memory_attention.layer.self_attention.feat_sizes",
                ma.layer.self_attention.feat_sizes[0].max(ma.layer.self_attention.feat_sizes[1]),
            ),
            (
                "model.memory_attention.layer.cross_attention.feat_sizes",
                ma.layer.cross_attention.feat_sizes[0].max(ma.layer.cross_attention.feat_sizes[1]),
            ),
            ("model.image_encoder.neck.kernel_size", n.kernel_size),
            (
                "model.memory_encoder.mask_downsampler.total_stride",
                me.mask_downsampler.total_stride,
            ),
        ];
        for (key, v) in sides {
            if v > MAX_IMAGE_SIZE {
                return over(key, v, MAX_IMAGE_SIZE, "MAX_IMAGE_SIZE");
            }
        }
        let stage_max = t.stage_dims().into_iter().max().unwrap_or(0);
        let widths: [(&str, usize); 12] = [
            (
                "model.image_encoder.trunk.embed_dim",
                t.embed_dim.max(stage_max),
            ),
            ("model.image_encoder.trunk.num_heads", t.num_heads),
            ("model.image_encoder.neck.d_model", n.d_model),
            (
                "model.image_encoder.neck.backbone_channel_list",
                n.backbone_channel_list.iter().copied().max().unwrap_or(0),
            ),
            ("model.memory_attention.d_model", ma.d_model),
            (
                "model.memory_attention.layer.dim_feedforward",
                ma.layer.dim_feedforward,
            ),
            (
                "model.memory_attention.layer.self_attention.num_heads",
                ma.layer.self_attention.num_heads,
            ),
            (
                "model.memory_attention.layer.cross_attention.num_heads",
                ma.layer.cross_attention.num_heads,
            ),
            ("model.memory_encoder.out_dim", me.out_dim),
            ("model.memory_encoder.in_dim", me.in_dim),
            (
                "model.memory_encoder.mask_downsampler.embed_dim",
                me.mask_downsampler.embed_dim,
            ),
            ("model.memory_encoder.fuser.layer.dim", me.fuser.layer.dim),
        ];
        for (key, v) in widths {
            if v > MAX_CONFIG_WIDTH {
                return over(key, v, MAX_CONFIG_WIDTH, "MAX_CONFIG_WIDTH");
            }
        }
        let depths: [(&str, usize); 6] = [
            (
                "model.image_encoder.trunk.stages",
                t.stages.iter().fold(0usize, |a, &s| a.saturating_add(s)),
            ),
            ("model.memory_attention.num_layers", ma.num_layers),
            ("model.memory_encoder.fuser.num_layers", me.fuser.num_layers),
            ("model.num_maskmem", self.num_maskmem),
            (
                "model.max_obj_ptrs_in_encoder",
                self.max_obj_ptrs_in_encoder,
            ),
            (
                "model.image_encoder.trunk.global_att_blocks",
                t.global_att_blocks.len(),
            ),
        ];
        for (key, v) in depths {
            if v > MAX_CONFIG_DEPTH {
                return over(key, v, MAX_CONFIG_DEPTH, "MAX_CONFIG_DEPTH");
            }
        }
        Ok(())
    }

    /// Checks the constraints the official constructors assert, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(alloc::format!("`{key}`: {why}")));
        let t = &self.image_encoder.trunk;
        let n = &self.image_encoder.neck;
        self.check_limits()?;
        if t.stages.is_empty() || t.stages.contains(&0) {
            return bad(
                "model.image_encoder.trunk.stages",
                "must be non-empty and positive",
            );
        }
        if t.window_spec.len() != t.stages.len() {
            return bad(
                "model.image_encoder.trunk.window_spec",
                "must have one entry per stage",
            );
        }
        if t.q_pool > t.stages.len() - 1 {
            return bad(
                "model.image_encoder.trunk.q_pool",
                "exceeds the number of stage changes",
            );
        }
        if t.embed_dim == 0 || t.num_heads == 0 {
            return bad("model.image_encoder.trunk.embed_dim", "must be positive");
        }
        let depth: usize = t.stages.iter().sum();
        if let Some(b) = t.global_att_blocks.iter().find(|&&b| b >= depth) {
            return bad(
                "model.image_encoder.trunk.global_att_blocks",
                &alloc::format!("block {b} does not exist (depth {depth})"),
            );
        }
        let mut dims = t.stage_dims();
        dims.reverse();
        if dims != n.backbone_channel_list {
            return bad(
                "model.image_encoder.neck.backbone_channel_list",
                &alloc::format!(
                    "{:?} does not match the trunk's channels {:?}",
                    n.backbone_channel_list,
                    dims
                ),
            );
        }
        if n.position_encoding.num_pos_feats != n.d_model || !n.d_model.is_multiple_of(2) {
            return bad(
                "model.image_encoder.neck.position_encoding.num_pos_feats",
                "must equal the even d_model",
            );
        }
        if self.image_encoder.scalp >= n.backbone_channel_list.len() {
            return bad("model.image_encoder.scalp", "discards every level");
        }
        if let Some(levels) = &n.fpn_top_down_levels {
            if levels.iter().any(|&l| l >= n.backbone_channel_list.len()) {
                return bad(
                    "model.image_encoder.neck.fpn_top_down_levels",
                    "level out of range",
                );
            }
        }
        if self.backbone_stride == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.backbone_stride * 2)
        {
            return bad(
                "model.image_size",
                "must be a positive multiple of 2·backbone_stride",
            );
        }
        // Hiera: stride 4 after the patch embedding, then 2x pooling at each of
        // the first `q_pool` stage changes; the top kept level sets the stride.
        let top = t.stages.len() - 1 - self.image_encoder.scalp;
        if 4usize << top.min(t.q_pool) != self.backbone_stride {
            return bad(
                "model.backbone_stride",
                "does not match the trunk's stride at the top kept level",
            );
        }
        let ma = &self.memory_attention;
        if ma.d_model != self.hidden_dim() {
            return bad(
                "model.memory_attention.d_model",
                "must equal the neck's d_model",
            );
        }
        for (key, a) in [
            ("self_attention", &ma.layer.self_attention),
            ("cross_attention", &ma.layer.cross_attention),
        ] {
            let internal = a.embedding_dim / a.downsample_rate.max(1);
            if a.embedding_dim != ma.d_model {
                return bad(
                    &alloc::format!("model.memory_attention.layer.{key}.embedding_dim"),
                    "must equal d_model",
                );
            }
            if a.num_heads == 0
                || !internal.is_multiple_of(a.num_heads)
                || !(internal / a.num_heads).is_multiple_of(4)
            {
                return bad(
                    &alloc::format!("model.memory_attention.layer.{key}.num_heads"),
                    "head dim must be a positive multiple of 4 (RoPE)",
                );
            }
        }
        if ma.layer.cross_attention.kv_in_dim.unwrap_or(ma.d_model) != self.mem_dim() {
            return bad(
                "model.memory_attention.layer.cross_attention.kv_in_dim",
                "must equal the memory encoder's out_dim",
            );
        }
        let me = &self.memory_encoder;
        if me.in_dim != self.hidden_dim() {
            return bad(
                "model.memory_encoder.in_dim",
                "must equal the neck's d_model",
            );
        }
        if me.mask_downsampler.embed_dim != me.fuser.layer.dim || me.fuser.layer.dim != me.in_dim {
            return bad(
                "model.memory_encoder.mask_downsampler.embed_dim",
                "must equal the fuser dim and memory_encoder.in_dim",
            );
        }
        if me.position_encoding.num_pos_feats != me.out_dim {
            return bad(
                "model.memory_encoder.position_encoding.num_pos_feats",
                "must equal memory_encoder.out_dim",
            );
        }
        let ds = &me.mask_downsampler;
        if ds.stride < 2 || {
            let mut s = 1;
            while s < ds.total_stride {
                s *= ds.stride;
            }
            s != ds.total_stride
        } {
            return bad(
                "model.memory_encoder.mask_downsampler.stride",
                "must divide total_stride as a power",
            );
        }
        if self.num_maskmem == 0 {
            return bad("model.num_maskmem", "must be at least 1");
        }
        if self.proj_tpos_enc_in_obj_ptrs && !self.add_tpos_enc_to_obj_ptrs {
            return bad(
                "model.proj_tpos_enc_in_obj_ptrs",
                "needs add_tpos_enc_to_obj_ptrs",
            );
        }
        if self.fixed_no_obj_ptr && !(self.pred_obj_scores && self.use_obj_ptrs_in_encoder) {
            return bad(
                "model.fixed_no_obj_ptr",
                "needs pred_obj_scores and use_obj_ptrs_in_encoder",
            );
        }
        if !self.hidden_dim().is_multiple_of(8) {
            return bad(
                "model.image_encoder.neck.d_model",
                "must be divisible by 8 (mask decoder heads)",
            );
        }
        Ok(())
    }
}

/// The pieces of a config that the no-std parts need (e.g. coordinate maths).
pub fn describe(cfg: &Sam2Config) -> String {
    alloc::format!(
        "image_size {}, hidden_dim {}, mem_dim {}, Hiera embed {} stages {:?}",
        cfg.image_size,
        cfg.hidden_dim(),
        cfg.mem_dim(),
        cfg.image_encoder.trunk.embed_dim,
        cfg.image_encoder.trunk.stages
    )
}
