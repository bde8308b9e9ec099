//! Reading official Hydra-style YAML configs (facebookresearch/sam2,
//! MedicineToken/Medical-SAM2, bowang-lab/MedSAM2) into [`Sam2Config`].
//!
//! YAML parsing is done by `serde-saphyr`; the mapping onto our types is written
//! here so that every unknown, unsupported or ill-typed key is an error naming
//! its full path. Hydra `${a.b}` interpolations of other keys are resolved;
//! Hydra overrides (`++model.x.y=value`) can be applied as `build_sam2` does.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::limits::{MAX_CONFIG_BYTES, MAX_CONFIG_NODES};

use super::*;

/// Keys of `SAM2Train` (bowang-lab / official training configs) that only
/// matter for training; they are accepted and ignored.
const TRAINING_ONLY_KEYS: &[&str] = &[
    "prob_to_use_pt_input_for_train",
    "prob_to_use_pt_input_for_eval",
    "prob_to_use_box_input_for_train",
    "prob_to_use_box_input_for_eval",
    "prob_to_sample_from_gt_for_train",
    "num_frames_to_correct_for_train",
    "num_frames_to_correct_for_eval",
    "rand_frames_to_correct_for_train",
    "rand_frames_to_correct_for_eval",
    "add_all_frames_to_correct_as_cond",
    "num_init_cond_frames_for_train",
    "num_init_cond_frames_for_eval",
    "rand_init_cond_frames_for_train",
    "rand_init_cond_frames_for_eval",
    "num_correction_pt_per_frame",
    "pt_sampling_for_eval",
    "prob_to_sample_from_gt_for_eval",
    "use_act_ckpt_iterative_pt_sampling",
    "forward_backbone_per_frame_for_eval",
    "freeze_image_encoder",
];

impl Sam2Config {
    /// Reads an official YAML config file.
    pub fn from_yaml_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |e| Error::Io {
            path: path.display().to_string(),
            source: e,
        };
        let bytes = crate::output::read_input(
            path,
            crate::limits::MAX_CONFIG_BYTES as u64,
            "MAX_CONFIG_BYTES",
        )
        .map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            ))
        })?;
        Self::from_yaml_str(&text)
    }

    /// Parses an official YAML config.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        Self::from_yaml_with_overrides(text, &[])
    }

    /// Parses an official YAML config and applies Hydra overrides such as
    /// `++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true`.
    pub fn from_yaml_with_overrides(text: &str, overrides: &[&str]) -> Result<Self> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(Error::Config(format!(
                "{} bytes of YAML exceed the limit of {MAX_CONFIG_BYTES} (MAX_CONFIG_BYTES)",
                text.len()
            )));
        }
        let mut root: Value =
            serde_saphyr::from_str(text).map_err(|e| Error::Config(format!("YAML: {e}")))?;
        // Inference configs hold `model`; training configs `trainer.model`.
        let path = if root.get("model").is_some() {
            "model"
        } else if root.get("trainer").and_then(|t| t.get("model")).is_some() {
            "trainer.model"
        } else {
            return Err(Error::Config(
                "no `model` (or `trainer.model`) section".into(),
            ));
        };
        for o in overrides {
            apply_override(&mut root, o, path)?;
        }
        let snapshot = root.clone();
        let mut budget = MAX_CONFIG_NODES;
        resolve_interpolations(&mut root, &snapshot, 0, &mut budget)?;
        let mut model = &root;
        for p in path.split('.') {
            model = &model[p];
        }
        let cfg = parse_model(&Node::new(model, path)?)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn apply_override(root: &mut Value, o: &str, model_path: &str) -> Result<()> {
    let body = o.trim_start_matches('+');
    let (key, val) = body
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("override `{o}` is not key=value")))?;
    let value: Value =
        serde_saphyr::from_str(val).map_err(|e| Error::Config(format!("override `{o}`: {e}")))?;
    let key = match key.strip_prefix("model.") {
        Some(rest) => format!("{model_path}.{rest}"),
        None => key.to_string(),
    };
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let obj = cur.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            obj.insert((*p).to_string(), value);
            return Ok(());
        }
        cur = obj
            .entry((*p).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// Resolves `${a.b.c}` strings (whole-value references to other keys).
/// `budget` is the number of nodes the resolved tree may still gain: each
/// substitution spends the size of what it copies, so interpolations that
/// reference each other cannot grow the tree without bound.
fn resolve_interpolations(
    v: &mut Value,
    root: &Value,
    depth: usize,
    budget: &mut usize,
) -> Result<()> {
    if depth > 64 {
        return Err(Error::Config("interpolations nest too deeply".into()));
    }
    match v {
        Value::String(s) => {
            let t = s.trim();
            if let Some(inner) = t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                if inner.contains(':') || inner.contains("${") {
                    // Resolvers (`${times:...}`) only appear in training sections;
                    // left as strings, they fail only if the model reads them.
                    return Ok(());
                }
                let mut target = root;
                for part in inner.split('.') {
                    target = target.get(part).ok_or_else(|| {
                        Error::Config(format!("interpolation `{t}`: `{inner}` not found"))
                    })?;
                }
                let size = count_nodes(target, *budget);
                if size > *budget {
                    return Err(Error::Config(format!(
                        "interpolations expand the config beyond {MAX_CONFIG_NODES} nodes (MAX_CONFIG_NODES)"
                    )));
                }
                *budget -= size;
                let mut resolved = target.clone();
                resolve_interpolations(&mut resolved, root, depth + 1, budget)?;
                *v = resolved;
            }
        }
        Value::Array(a) => {
            for x in a {
                resolve_interpolations(x, root, depth + 1, budget)?;
            }
        }
        Value::Object(m) => {
            for (_, x) in m.iter_mut() {
                resolve_interpolations(x, root, depth + 1, budget)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Nodes in `v`, counting no further than `cap + 1`.
fn count_nodes(v: &Value, cap: usize) -> usize {
    let mut n = 0;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        n += 1;
        if n > cap {
            break;
        }
        match x {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    n
}

/// A mapping being read, tracking which keys were consumed.
struct Node<'a> {
    map: &'a Map<String, Value>,
    path: String,
    used: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Node<'a> {
    fn new(v: &'a Value, path: &str) -> Result<Self> {
        let map = v
            .as_object()
            .ok_or_else(|| Error::Config(format!("`{path}` must be a mapping")))?;
        Ok(Self {
            map,
            path: path.to_string(),
            used: Default::default(),
        })
    }

    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.path)
    }

    fn raw(&self, k: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(k.to_string());
        self.map.get(k).filter(|v| !v.is_null())
    }

    /// Checks `_target_` ends with the official class name (any package prefix).
    fn target(&self, class: &str) -> Result<()> {
        match self.raw("_target_") {
            None => Ok(()),
            Some(Value::String(t)) if t.rsplit('.').next() == Some(class) => Ok(()),
            Some(t) => Err(Error::Config(format!(
                "`{}`: unsupported class {t}, expected {class}",
                self.key("_target_")
            ))),
        }
    }

    fn child(&self, k: &str) -> Result<Node<'a>> {
        let v = self
            .raw(k)
            .ok_or_else(|| Error::Config(format!("`{}` is missing", self.key(k))))?;
        Node::new(v, &self.key(k))
    }

    fn opt_child(&self, k: &str) -> Result<Option<Node<'a>>> {
        self.raw(k).map(|v| Node::new(v, &self.key(k))).transpose()
    }

    fn f64_or(&self, k: &str, d: f64) -> Result<f64> {
        match self.raw(k) {
            None => Ok(d),
            Some(v) => as_f64(v).ok_or_else(|| self.ty(k, "a number", v)),
        }
    }

    fn opt_f64(&self, k: &str) -> Result<Option<f64>> {
        self.raw(k)
            .map(|v| as_f64(v).ok_or_else(|| self.ty(k, "a number", v)))
            .transpose()
    }

    fn usize_or(&self, k: &str, d: usize) -> Result<usize> {
        match self.raw(k) {
            None => Ok(d),
            Some(v) => as_usize(v).ok_or_else(|| self.ty(k, "a non-negative integer", v)),
        }
    }

    fn usize_req(&self, k: &str) -> Result<usize> {
        let v = self
            .raw(k)
            .ok_or_else(|| Error::Config(format!("`{}` is missing", self.key(k))))?;
        as_usize(v).ok_or_else(|| self.ty(k, "a non-negative integer", v))
    }

    fn i64_or(&self, k: &str, d: i64) -> Result<i64> {
        match self.raw(k) {
            None => Ok(d),
            Some(v) => v.as_i64().ok_or_else(|| self.ty(k, "an integer", v)),
        }
    }

    fn bool_or(&self, k: &str, d: bool) -> Result<bool> {
        match self.raw(k) {
            None => Ok(d),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(self.ty(k, "a boolean", v)),
        }
    }

    fn str_or(&self, k: &str, d: &str) -> Result<String> {
        match self.raw(k) {
            None => Ok(d.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.ty(k, "a string", v)),
        }
    }

    fn usizes_or(&self, k: &str, d: &[usize]) -> Result<Vec<usize>> {
        match self.raw(k) {
            None => Ok(d.to_vec()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| as_usize(x).ok_or_else(|| self.ty(k, "a list of integers", x)))
                .collect(),
            Some(v) => Err(self.ty(k, "a list of integers", v)),
        }
    }

    fn pair_or(&self, k: &str, d: [usize; 2]) -> Result<[usize; 2]> {
        let v = self.usizes_or(k, &d)?;
        <[usize; 2]>::try_from(v.as_slice())
            .map_err(|_| Error::Config(format!("`{}` must have two entries", self.key(k))))
    }

    fn ty(&self, k: &str, want: &str, got: &Value) -> Error {
        Error::Config(format!("`{}` must be {want}, got {got}", self.key(k)))
    }

    /// Errors on keys that were never read (unknown or unsupported).
    fn finish(&self, ignored: &[&str]) -> Result<()> {
        let used = self.used.borrow();
        for k in self.map.keys() {
            if !used.contains(k) && !ignored.contains(&k.as_str()) {
                return Err(Error::Config(format!(
                    "`{}` is not a supported setting",
                    self.key(k)
                )));
            }
        }
        Ok(())
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().map(|x| x as usize),
        _ => None,
    }
}

fn parse_sine(n: &Node) -> Result<PositionEmbeddingSineConfig> {
    n.target("PositionEmbeddingSine")?;
    let scale = n.opt_f64("scale")?;
    let normalize = n.bool_or("normalize", true)?;
    if scale.is_some() && !normalize {
        return Err(Error::Config(format!(
            "`{}`: scale needs normalize",
            n.key("scale")
        )));
    }
    let c = PositionEmbeddingSineConfig {
        num_pos_feats: n.usize_req("num_pos_feats")?,
        temperature: n.f64_or("temperature", 10000.0)?,
        normalize,
        scale,
    };
    n.finish(&["warmup_cache", "image_size", "strides"])?;
    Ok(c)
}

fn parse_activation(n: &Node, k: &str, d: &str) -> Result<Activation> {
    match n.str_or(k, d)?.to_ascii_lowercase().as_str() {
        "relu" => Ok(Activation::Relu),
        "gelu" => Ok(Activation::Gelu),
        other => Err(Error::Config(format!(
            "`{}`: unsupported activation `{other}`",
            n.key(k)
        ))),
    }
}

fn parse_rope(n: &Node) -> Result<RoPEAttentionConfig> {
    n.target("RoPEAttention")?;
    let c = RoPEAttentionConfig {
        embedding_dim: n.usize_req("embedding_dim")?,
        num_heads: n.usize_req("num_heads")?,
        downsample_rate: n.usize_or("downsample_rate", 1)?,
        kv_in_dim: n
            .raw("kv_in_dim")
            .map(|v| as_usize(v).ok_or_else(|| n.ty("kv_in_dim", "an integer", v)))
            .transpose()?,
        rope_theta: n.f64_or("rope_theta", 10000.0)?,
        rope_k_repeat: n.bool_or("rope_k_repeat", false)?,
        feat_sizes: n.pair_or("feat_sizes", [64, 64])?,
    };
    n.finish(&["dropout"])?;
    Ok(c)
}

fn parse_model(m: &Node) -> Result<Sam2Config> {
    match m.raw("_target_") {
        None => {}
        Some(Value::String(t))
            if [
                "SAM2Base",
                "SAM2VideoPredictor",
                "SAM2Train",
                "SAM2ImagePredictor",
            ]
            .contains(&t.rsplit('.').next().unwrap_or("")) => {}
        Some(t) => {
            return Err(Error::Config(format!(
                "`{}`: unsupported model class {t}",
                m.key("_target_")
            )))
        }
    }
    // Image encoder.
    let ie = m.child("image_encoder")?;
    ie.target("ImageEncoder")?;
    let tr = ie.child("trunk")?;
    tr.target("Hiera")?;
    let trunk = HieraConfig {
        embed_dim: tr.usize_or("embed_dim", 96)?,
        num_heads: tr.usize_or("num_heads", 1)?,
        q_pool: tr.usize_or("q_pool", 3)?,
        q_stride: tr.pair_or("q_stride", [2, 2])?,
        stages: tr.usizes_or("stages", &[2, 3, 16, 3])?,
        dim_mul: tr.f64_or("dim_mul", 2.0)?,
        head_mul: tr.f64_or("head_mul", 2.0)?,
        window_pos_embed_bkg_spatial_size: tr
            .pair_or("window_pos_embed_bkg_spatial_size", [14, 14])?,
        window_spec: tr.usizes_or("window_spec", &[8, 4, 14, 7])?,
        global_att_blocks: tr.usizes_or("global_att_blocks", &[12, 16, 20])?,
    };
    if trunk.q_stride != [2, 2] {
        return Err(Error::Config(format!(
            "`{}`: only [2, 2] is supported",
            tr.key("q_stride")
        )));
    }
    if tr.f64_or("drop_path_rate", 0.0)? != 0.0 {
        // Stochastic depth is a training-time setting; inference ignores it.
    }
    if !tr.bool_or("return_interm_layers", true)? {
        return Err(Error::Config(format!(
            "`{}`: only true is supported",
            tr.key("return_interm_layers")
        )));
    }
    tr.finish(&["weights_path", "drop_path_rate"])?;
    let nk = ie.child("neck")?;
    nk.target("FpnNeck")?;
    let neck = FpnNeckConfig {
        position_encoding: parse_sine(&nk.child("position_encoding")?)?,
        d_model: nk.usize_req("d_model")?,
        backbone_channel_list: nk.usizes_or("backbone_channel_list", &[])?,
        kernel_size: nk.usize_or("kernel_size", 1)?,
        stride: nk.usize_or("stride", 1)?,
        padding: nk.usize_or("padding", 0)?,
        fpn_interp_model: match nk.str_or("fpn_interp_model", "bilinear")?.as_str() {
            "nearest" => FpnInterp::Nearest,
            "bilinear" => FpnInterp::Bilinear,
            o => {
                return Err(Error::Config(format!(
                    "`{}`: unsupported `{o}`",
                    nk.key("fpn_interp_model")
                )))
            }
        },
        fuse_type: match nk.str_or("fuse_type", "sum")?.as_str() {
            "sum" => FuseType::Sum,
            "avg" => FuseType::Avg,
            o => {
                return Err(Error::Config(format!(
                    "`{}`: unsupported `{o}`",
                    nk.key("fuse_type")
                )))
            }
        },
        fpn_top_down_levels: nk
            .raw("fpn_top_down_levels")
            .map(|_| nk.usizes_or("fpn_top_down_levels", &[]))
            .transpose()?,
    };
    nk.finish(&[])?;
    let image_encoder = ImageEncoderConfig {
        trunk,
        neck,
        scalp: ie.usize_or("scalp", 0)?,
    };
    ie.finish(&[])?;

    // Memory attention.
    let ma = m.child("memory_attention")?;
    ma.target("MemoryAttention")?;
    let ly = ma.child("layer")?;
    ly.target("MemoryAttentionLayer")?;
    let layer = MemoryAttentionLayerConfig {
        activation: parse_activation(&ly, "activation", "relu")?,
        dim_feedforward: ly.usize_req("dim_feedforward")?,
        pos_enc_at_attn: ly.bool_or("pos_enc_at_attn", false)?,
        pos_enc_at_cross_attn_keys: ly.bool_or("pos_enc_at_cross_attn_keys", true)?,
        pos_enc_at_cross_attn_queries: ly.bool_or("pos_enc_at_cross_attn_queries", false)?,
        self_attention: parse_rope(&ly.child("self_attention")?)?,
        cross_attention: parse_rope(&ly.child("cross_attention")?)?,
    };
    let ly_d = ly.usize_req("d_model")?;
    ly.finish(&["dropout"])?;
    let memory_attention = MemoryAttentionConfig {
        d_model: ma.usize_req("d_model")?,
        pos_enc_at_input: ma.bool_or("pos_enc_at_input", true)?,
        layer,
        num_layers: ma.usize_req("num_layers")?,
    };
    if ly_d != memory_attention.d_model {
        return Err(Error::Config(format!(
            "`{}` differs from memory_attention.d_model",
            ly.key("d_model")
        )));
    }
    if !ma.bool_or("batch_first", true)? {
        return Err(Error::Config(format!(
            "`{}`: only true is supported",
            ma.key("batch_first")
        )));
    }
    ma.finish(&[])?;

    // Memory encoder (code defaults: in_dim 256, embed_dim 256).
    let me = m.child("memory_encoder")?;
    me.target("MemoryEncoder")?;
    let ds = me.child("mask_downsampler")?;
    ds.target("MaskDownSampler")?;
    let mask_downsampler = MaskDownSamplerConfig {
        embed_dim: ds.usize_or("embed_dim", 256)?,
        kernel_size: ds.usize_or("kernel_size", 4)?,
        stride: ds.usize_or("stride", 4)?,
        padding: ds.usize_or("padding", 0)?,
        total_stride: ds.usize_or("total_stride", 16)?,
    };
    if parse_activation(&ds, "activation", "gelu")? != Activation::Gelu {
        return Err(Error::Config(format!(
            "`{}`: only GELU is supported",
            ds.key("activation")
        )));
    }
    ds.finish(&[])?;
    let fu = me.child("fuser")?;
    fu.target("Fuser")?;
    let bl = fu.child("layer")?;
    bl.target("CXBlock")?;
    let block = CXBlockConfig {
        dim: bl.usize_req("dim")?,
        kernel_size: bl.usize_or("kernel_size", 7)?,
        padding: bl.usize_or("padding", 3)?,
        use_dwconv: bl.bool_or("use_dwconv", true)?,
        layer_scale: bl.f64_or("layer_scale_init_value", 1e-6)? > 0.0,
    };
    bl.finish(&["drop_path"])?;
    let input_projection = fu.bool_or("input_projection", false)?;
    if input_projection && fu.usize_or("dim", 0)? != block.dim {
        return Err(Error::Config(format!(
            "`{}` must equal the block dim",
            fu.key("dim")
        )));
    }
    let fuser = FuserConfig {
        layer: block,
        num_layers: fu.usize_req("num_layers")?,
        input_projection,
    };
    fu.finish(&["dim"])?;
    let memory_encoder = MemoryEncoderConfig {
        out_dim: me.usize_req("out_dim")?,
        in_dim: me.usize_or("in_dim", 256)?,
        mask_downsampler,
        fuser,
        position_encoding: parse_sine(&me.child("position_encoding")?)?,
    };
    me.finish(&[])?;

    // Mask decoder extra args (from the YAML or `build_sam` overrides).
    let (mut dyn_stab, mut dyn_delta, mut dyn_thresh) = (false, 0.05, 0.98);
    if let Some(x) = m.opt_child("sam_mask_decoder_extra_args")? {
        dyn_stab = x.bool_or("dynamic_multimask_via_stability", false)?;
        dyn_delta = x.f64_or("dynamic_multimask_stability_delta", 0.05)?;
        dyn_thresh = x.f64_or("dynamic_multimask_stability_thresh", 0.98)?;
        x.finish(&[])?;
    }

    let cfg = Sam2Config {
        image_encoder,
        memory_attention,
        memory_encoder,
        num_maskmem: m.usize_or("num_maskmem", 7)?,
        image_size: m.usize_or("image_size", 512)?,
        backbone_stride: m.usize_or("backbone_stride", 16)?,
        sigmoid_scale_for_mem_enc: m.f64_or("sigmoid_scale_for_mem_enc", 1.0)?,
        sigmoid_bias_for_mem_enc: m.f64_or("sigmoid_bias_for_mem_enc", 0.0)?,
        binarize_mask_from_pts_for_mem_enc: m
            .bool_or("binarize_mask_from_pts_for_mem_enc", false)?,
        use_mask_input_as_output_without_sam: m
            .bool_or("use_mask_input_as_output_without_sam", false)?,
        max_cond_frames_in_attn: m.i64_or("max_cond_frames_in_attn", -1)?,
        directly_add_no_mem_embed: m.bool_or("directly_add_no_mem_embed", false)?,
        use_high_res_features_in_sam: m.bool_or("use_high_res_features_in_sam", false)?,
        multimask_output_in_sam: m.bool_or("multimask_output_in_sam", false)?,
        multimask_min_pt_num: m.usize_or("multimask_min_pt_num", 1)?,
        multimask_max_pt_num: m.usize_or("multimask_max_pt_num", 1)?,
        multimask_output_for_tracking: m.bool_or("multimask_output_for_tracking", false)?,
        use_multimask_token_for_obj_ptr: m.bool_or("use_multimask_token_for_obj_ptr", false)?,
        iou_prediction_use_sigmoid: m.bool_or("iou_prediction_use_sigmoid", false)?,
        memory_temporal_stride_for_eval: m.usize_or("memory_temporal_stride_for_eval", 1)?,
        non_overlap_masks_for_mem_enc: m.bool_or("non_overlap_masks_for_mem_enc", false)?,
        use_obj_ptrs_in_encoder: m.bool_or("use_obj_ptrs_in_encoder", false)?,
        max_obj_ptrs_in_encoder: m.usize_or("max_obj_ptrs_in_encoder", 16)?,
        add_tpos_enc_to_obj_ptrs: m.bool_or("add_tpos_enc_to_obj_ptrs", true)?,
        proj_tpos_enc_in_obj_ptrs: m.bool_or("proj_tpos_enc_in_obj_ptrs", false)?,
        use_signed_tpos_enc_to_obj_ptrs: m.bool_or("use_signed_tpos_enc_to_obj_ptrs", false)?,
        only_obj_ptrs_in_the_past_for_eval: m
            .bool_or("only_obj_ptrs_in_the_past_for_eval", false)?,
        pred_obj_scores: m.bool_or("pred_obj_scores", false)?,
        pred_obj_scores_mlp: m.bool_or("pred_obj_scores_mlp", false)?,
        fixed_no_obj_ptr: m.bool_or("fixed_no_obj_ptr", false)?,
        soft_no_obj_ptr: m.bool_or("soft_no_obj_ptr", false)?,
        use_mlp_for_obj_ptr_proj: m.bool_or("use_mlp_for_obj_ptr_proj", false)?,
        no_obj_embed_spatial: m.bool_or("no_obj_embed_spatial", false)?,
        dynamic_multimask_via_stability: dyn_stab,
        dynamic_multimask_stability_delta: dyn_delta,
        dynamic_multimask_stability_thresh: dyn_thresh,
    };
    // Inference-irrelevant flags.
    let _ = m.bool_or("compile_image_encoder", false)?;
    let _ = m.raw("fill_hole_area");
    let _ = m.raw("non_overlap_masks");
    let _ = m.raw("clear_non_cond_mem_around_input");
    let _ = m.raw("clear_non_cond_mem_for_multi_obj");
    let _ = m.raw("add_all_frames_to_correct_as_cond");
    m.finish(TRAINING_ONLY_KEYS)?;
    Ok(cfg)
}
