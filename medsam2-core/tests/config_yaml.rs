//! Official-style YAML configs: presets agree with the fixture configs' shape,
//! Hydra interpolations and `trainer.model` nesting resolve, bad keys are named.

use medsam2_core::config::{ModelSize, Sam2Config, Version};

fn fixture_yaml(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .join("config.yaml");
    std::fs::read_to_string(p).expect("committed fixture config")
}

#[test]
fn fixture_configs_parse() {
    for name in ["sam2.1-tiny-a", "sam2.0-small-b", "sam2.1-heads-c"] {
        let c = Sam2Config::from_yaml_str(&fixture_yaml(name)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.no_obj_embed_spatial, name.starts_with("sam2.1"), "{name}");
    }
}

/// A preset rendered the way the official YAML files spell it.
fn preset_yaml(image_size: usize, wrap_in_trainer: bool) -> String {
    let body = format!(
        r#"
  _target_: sam2.modeling.sam2_base.SAM2Base
  image_encoder:
    _target_: sam2.modeling.backbones.image_encoder.ImageEncoder
    scalp: 1
    trunk:
      _target_: sam2.modeling.backbones.hieradet.Hiera
      embed_dim: 96
      num_heads: 1
      stages: [1, 2, 7, 2]
      global_att_blocks: [5, 7, 9]
      window_pos_embed_bkg_spatial_size: [7, 7]
    neck:
      _target_: sam2.modeling.backbones.image_encoder.FpnNeck
      position_encoding:
        _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
        num_pos_feats: 256
        normalize: true
        scale: null
        temperature: 10000
      d_model: 256
      backbone_channel_list: [768, 384, 192, 96]
      fpn_top_down_levels: [2, 3]
      fpn_interp_model: nearest
  memory_attention:
    _target_: sam2.modeling.memory_attention.MemoryAttention
    d_model: 256
    pos_enc_at_input: true
    layer:
      _target_: sam2.modeling.memory_attention.MemoryAttentionLayer
      activation: relu
      dim_feedforward: 2048
      dropout: 0.1
      pos_enc_at_attn: false
      self_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [64, 64]
        embedding_dim: 256
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
      d_model: 256
      pos_enc_at_cross_attn_keys: true
      pos_enc_at_cross_attn_queries: false
      cross_attention:
        _target_: sam2.modeling.sam.transformer.RoPEAttention
        rope_theta: 10000.0
        feat_sizes: [64, 64]
        rope_k_repeat: True
        embedding_dim: 256
        num_heads: 1
        downsample_rate: 1
        dropout: 0.1
        kv_in_dim: 64
    num_layers: 4
  memory_encoder:
      _target_: sam2.modeling.memory_encoder.MemoryEncoder
      out_dim: 64
      position_encoding:
        _target_: sam2.modeling.position_encoding.PositionEmbeddingSine
        num_pos_feats: 64
        normalize: true
        scale: null
        temperature: 10000
      mask_downsampler:
        _target_: sam2.modeling.memory_encoder.MaskDownSampler
        kernel_size: 3
        stride: 2
        padding: 1
      fuser:
        _target_: sam2.modeling.memory_encoder.Fuser
        layer:
          _target_: sam2.modeling.memory_encoder.CXBlock
          dim: 256
          kernel_size: 7
          padding: 3
          layer_scale_init_value: 1e-6
          use_dwconv: True
        num_layers: 2
  num_maskmem: 7
  image_size: {image_size}
  sigmoid_scale_for_mem_enc: 20.0
  sigmoid_bias_for_mem_enc: -10.0
  use_mask_input_as_output_without_sam: true
  directly_add_no_mem_embed: true
  no_obj_embed_spatial: true
  use_high_res_features_in_sam: true
  multimask_output_in_sam: true
  iou_prediction_use_sigmoid: True
  use_obj_ptrs_in_encoder: true
  add_tpos_enc_to_obj_ptrs: true
  proj_tpos_enc_in_obj_ptrs: true
  use_signed_tpos_enc_to_obj_ptrs: true
  only_obj_ptrs_in_the_past_for_eval: true
  pred_obj_scores: true
  pred_obj_scores_mlp: true
  fixed_no_obj_ptr: true
  multimask_output_for_tracking: true
  use_multimask_token_for_obj_ptr: true
  multimask_min_pt_num: 0
  multimask_max_pt_num: 1
  use_mlp_for_obj_ptr_proj: true
  compile_image_encoder: False
"#
    );
    if wrap_in_trainer {
        let indented: String = body.lines().map(|l| format!("  {l}\n")).collect();
        format!("# @package _global_\nscratch:\n  resolution: 512\ntrainer:\n  model:\n{indented}")
    } else {
        format!("# @package _global_\nmodel:\n{body}")
    }
}

#[test]
fn official_yaml_equals_preset() {
    let c = Sam2Config::from_yaml_with_overrides(
        &preset_yaml(1024, false),
        medsam2_core::build_sam::IMAGE_MODEL_OVERRIDES,
    )
    .unwrap();
    assert_eq!(c, Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny));
    assert!(
        !Sam2Config::from_yaml_str(&preset_yaml(1024, false))
            .unwrap()
            .dynamic_multimask_via_stability
    );
}

#[test]
fn training_config_with_interpolation() {
    let y = preset_yaml(0, true).replace("image_size: 0", "image_size: ${scratch.resolution}");
    let c =
        Sam2Config::from_yaml_with_overrides(&y, medsam2_core::build_sam::IMAGE_MODEL_OVERRIDES)
            .unwrap();
    let mut want = Sam2Config::preset_by_name("medsam2").unwrap();
    // The hints in this YAML say 64x64; they are only hints.
    want.memory_attention.layer.self_attention.feat_sizes = [64, 64];
    want.memory_attention.layer.cross_attention.feat_sizes = [64, 64];
    assert_eq!(c, want);
}

#[test]
fn bad_keys_are_named() {
    let cases = [
        (
            "embed_dim: 96",
            "embed_dim: 96\n      bogus_key: 3",
            "bogus_key",
        ),
        ("num_layers: 4", "num_layers: four", "num_layers"),
        (
            "fpn_interp_model: nearest",
            "fpn_interp_model: bicubic",
            "fpn_interp_model",
        ),
        (
            "backbone_channel_list: [768, 384, 192, 96]",
            "backbone_channel_list: [768, 384, 192, 95]",
            "backbone_channel_list",
        ),
        ("kv_in_dim: 64", "kv_in_dim: 32", "kv_in_dim"),
        (
            "_target_: sam2.modeling.backbones.hieradet.Hiera",
            "_target_: other.Backbone",
            "_target_",
        ),
        ("image_size: 1024", "image_size: 1000", "image_size"),
    ];
    for (from, to, key) in cases {
        let y = preset_yaml(1024, false).replacen(from, to, 1);
        let e = Sam2Config::from_yaml_str(&y).expect_err(key).to_string();
        assert!(e.contains(key), "error for {key} does not name it: {e}");
    }
    assert!(Sam2Config::from_yaml_str("model: [1, 2").is_err());
    assert!(Sam2Config::from_yaml_str("foo: 1")
        .unwrap_err()
        .to_string()
        .contains("model"));
    assert!(Sam2Config::preset_by_name("sam3_hiera_t").is_err());
    for name in [
        "sam2_hiera_t",
        "sam2_hiera_b+",
        "sam2.1_hiera_l.yaml",
        "configs/sam2.1/sam2.1_hiera_s.yaml",
        "medsam2",
        "medical-sam2",
    ] {
        Sam2Config::preset_by_name(name)
            .unwrap()
            .validate()
            .unwrap();
    }
}
