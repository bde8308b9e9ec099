//! The parity runner: replays a fixture directory (FORMAT.md) through the Rust
//! implementation and compares every recorded tensor within FORMAT.md's
//! tolerances ("Comparing").

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use medsam2_core::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};
use serde_json::Value;

use crate::fixture::{compare_abs, compare_exact, compare_rel, Compared, Fixture, FixtureError, Result};

/// Encoder/decoder tensors: max-abs ≤ `REL_TOL`·max(1, max|ref|).
pub const REL_TOL: f32 = 1e-4;
/// Low-resolution mask logits: max-abs ≤ `MASK_LOGIT_TOL`.
pub const MASK_LOGIT_TOL: f32 = 1e-3;

/// Parts of a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `image.safetensors`.
    Image,
    /// `video.safetensors`.
    Video,
    /// `oneprompt.safetensors`.
    OnePrompt,
}

impl Part {
    /// The key in `fixture.json`.
    pub fn key(self) -> &'static str {
        match self {
            Part::Image => "image",
            Part::Video => "video",
            Part::OnePrompt => "one_prompt",
        }
    }

    /// Parses `image`, `video`, `one-prompt`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image" => Some(Part::Image),
            "video" => Some(Part::Video),
            "one-prompt" | "one_prompt" | "oneprompt" => Some(Part::OnePrompt),
            _ => None,
        }
    }
}

/// All comparisons of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Every comparison, in order, prefixed by fixture and part.
    pub results: Vec<Compared>,
    /// Parts that could not be checked, with the reason.
    pub skipped: Vec<String>,
    /// Whether to print each line as it is added.
    pub verbose: bool,
}

impl Report {
    fn push(&mut self, prefix: &str, mut c: Compared) {
        c.name = format!("{prefix}{}", c.name);
        if self.verbose {
            println!(
                "{} {:<70} max_abs {:>10.3e}  tol {:>9.2e}{}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.max_abs,
                c.tol,
                if c.note.is_empty() { String::new() } else { format!("  ({})", c.note) }
            );
        }
        self.results.push(c);
    }

    /// Number of failed comparisons.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|c| !c.ok).count()
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let failed = self.failed();
        format!(
            "parity: {} passed, {} failed{}",
            self.results.len() - failed,
            failed,
            if self.skipped.is_empty() { String::new() } else { format!(" ({} part(s) not checked)", self.skipped.len()) }
        )
    }
}

fn name_of(v: &Value, role: &str) -> Result<String> {
    v["tensors"][role]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| FixtureError::Format(format!("no tensor for role `{role}`")))
}

fn load_model(f: &Fixture, which: &str) -> Result<Arc<Sam2Base>> {
    let cfg = f.config(which)?;
    let ckpt = Checkpoint::open(f.weights_path())?;
    Ok(Arc::new(Sam2Base::load(cfg, &ckpt, ComputeDType::F32, DeviceKind::Cpu)?))
}

/// Checks the parts of one fixture directory (`parts` empty = all it holds).
pub fn check_fixture(f: &mut Fixture, parts: &[Part], report: &mut Report) -> Result<()> {
    let all = [Part::Image, Part::Video, Part::OnePrompt];
    let wanted: Vec<Part> = if parts.is_empty() { all.to_vec() } else { parts.to_vec() };
    for part in wanted {
        if !f.has_part(part.key()) {
            if !parts.is_empty() {
                report.skipped.push(format!("{}: no {} part", f.name(), part.key()));
            }
            continue;
        }
        match part {
            Part::Image => check_image(f, report)?,
            Part::Video | Part::OnePrompt => {
                report.skipped.push(format!("{}: the {} part is not implemented yet", f.name(), part.key()));
            }
        }
    }
    Ok(())
}

/// The image part: encoder intermediates, then every prompt case.
pub fn check_image(f: &mut Fixture, report: &mut Report) -> Result<()> {
    let model = load_model(f, "image_model")?;
    let img = f.json["image"].clone();
    let pre = format!("{}/image/", f.name());
    let t = |f: &mut Fixture, role: &str| -> Result<Tensor> { f.f32("image", &name_of(&img, role)?) };

    let raw = f.tensor("image", &name_of(&img, "raw_rgb")?)?;
    let (h, w, _) = raw.dims3()?;
    let bytes = raw.flatten_all()?.to_vec1::<u8>()?;
    let s = model.cfg.image_size;
    let pixels = medsam2_core::transforms::preprocess_rgb_u8(&bytes, h, w, s)?;
    let pixels = Tensor::from_vec(pixels, (1, 3, s, s), &Device::Cpu)?;
    report.push(&pre, compare_rel("pixels", &pixels, &t(f, "pixels")?, REL_TOL)?);

    // Trunk stages, from the fixture's own pixels so each stage is checked on its own.
    let ref_pixels = t(f, "pixels")?;
    let trunk = model.image_encoder.trunk().forward(&ref_pixels)?;
    for (i, x) in trunk.iter().enumerate() {
        let role = format!("trunk.{i}");
        if img["tensors"].get(&role).is_some() {
            report.push(&pre, compare_rel(&role, x, &t(f, &role)?, REL_TOL)?);
        }
    }

    let mut pred = Sam2ImagePredictor::new(model.clone())?;
    pred.set_image_rgb_u8(&bytes, h, w)?;
    let (feats, embed) = pred.features().ok_or_else(|| FixtureError::Format("no features".into()))?;
    report.push(&pre, compare_rel("backbone_fpn.2", &feats.vision_feats, &t(f, "backbone_fpn.2")?, REL_TOL)?);
    report.push(&pre, compare_rel("vision_pos_enc.2", &feats.vision_pos, &t(f, "vision_pos_enc.2")?, REL_TOL)?);
    report.push(&pre, compare_rel("image_embed", embed, &t(f, "image_embed")?, REL_TOL)?);
    if let Some((s0, s1)) = &feats.high_res {
        for (i, x) in [s0, s1].into_iter().enumerate() {
            for role in [format!("backbone_fpn.{i}"), format!("high_res_feats.{i}")] {
                if img["tensors"].get(&role).is_some() {
                    report.push(&pre, compare_rel(&role, x, &t(f, &role)?, REL_TOL)?);
                }
            }
        }
    }
    report.push(&pre, compare_rel("dense_pe", pred.dense_pe(), &t(f, "dense_pe")?, REL_TOL)?);

    let cases = img["cases"].as_array().cloned().unwrap_or_default();
    for case in cases {
        let cname = case["name"].as_str().unwrap_or("?").to_string();
        let cpre = format!("{pre}{cname}/");
        let mut prompt = Prompt::default();
        if let Some(pts) = case["point_coords"].as_array() {
            for p in pts {
                prompt.points.push([p[0].as_f64().unwrap_or(f64::NAN) as f32, p[1].as_f64().unwrap_or(f64::NAN) as f32]);
            }
        }
        if let Some(ls) = case["point_labels"].as_array() {
            prompt.labels = ls.iter().map(|l| l.as_i64().unwrap_or(-9) as i32).collect();
        }
        if let Some(b) = case["box"].as_array() {
            let v: Vec<f32> = b.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32).collect();
            if v.len() == 4 {
                prompt.bbox = Some([v[0], v[1], v[2], v[3]]);
            }
        }
        if case["tensors"].get("mask_input").is_some() {
            let m = f.f32("image", &name_of(&case, "mask_input")?)?;
            prompt.mask_input = Some(m.flatten_all()?.to_vec1::<f32>()?);
        }
        let multimask = case["multimask_output"].as_bool().unwrap_or(true);
        let (p, tr) = pred.predict_traced(&prompt, multimask)?;
        let ct = |f: &mut Fixture, role: &str| -> Result<Option<Tensor>> {
            match case["tensors"].get(role).and_then(|v| v.as_str()) {
                Some(n) => Ok(Some(f.f32("image", n)?)),
                None => Ok(None),
            }
        };
        let low = p.low_res_size;
        let checks: Vec<(&str, Tensor, bool)> = vec![
            ("model_point_coords", tr.model_point_coords.clone(), false),
            ("sparse_embeddings", tr.sparse_embeddings.clone(), false),
            ("dense_embeddings", tr.dense_embeddings.clone(), false),
            ("decoder_all_masks", tr.decoder_all_masks.clone(), true),
            ("decoder_all_ious", tr.decoder_all_ious.clone(), false),
            ("object_score_logits", tr.object_score_logits.clone(), false),
            ("sam_tokens_out", tr.sam_tokens_out.clone(), false),
            ("low_res_masks", Tensor::from_vec(p.low_res_logits.clone(), (p.num_masks, low, low), &Device::Cpu)?, true),
            ("iou_predictions", Tensor::from_vec(p.iou_scores.clone(), p.num_masks, &Device::Cpu)?, false),
            ("masks", Tensor::from_vec(p.logits.clone(), (p.num_masks, p.height, p.width), &Device::Cpu)?, true),
        ];
        for (role, got, is_logit) in checks {
            if let Some(want) = ct(f, role)? {
                let c = if is_logit {
                    compare_abs(role, &got, &want, MASK_LOGIT_TOL)?
                } else {
                    compare_rel(role, &got, &want, REL_TOL)?
                };
                report.push(&cpre, c);
            }
        }
        if let Some(want) = ct(f, "model_point_labels")? {
            report.push(&cpre, compare_exact("model_point_labels", &tr.model_point_labels.to_dtype(DType::F32)?, &want)?);
        }
    }
    Ok(())
}
