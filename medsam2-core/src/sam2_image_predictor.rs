//! Interactive single-image segmentation (the equivalent of the official
//! `SAM2ImagePredictor`): encode an image once, then answer any number of
//! prompts from the cached embeddings.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::modeling::kernels::parallel::{par_chunks_mut, rows_per_chunk};
use crate::modeling::sam2_base::{BackboneFeatures, Sam2Base};
use crate::transforms;

/// A prompt in original-image pixels (`x` = column, `y` = row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// Click positions `[x, y]`.
    pub points: Vec<[f32; 2]>,
    /// One label per click: 1 foreground, 0 background (also -1 padding,
    /// 2/3 box corners, as the official prompt encoder accepts).
    pub labels: Vec<i32>,
    /// Box `[x0, y0, x1, y1]`.
    pub bbox: Option<[f32; 4]>,
    /// Low-resolution mask logits `[S/4, S/4]` row-major, e.g. a previous
    /// prediction's [`Prediction::low_res_logits`] for one mask.
    pub mask_input: Option<Vec<f32>>,
}

impl Prompt {
    /// One foreground click.
    pub fn point(x: f32, y: f32) -> Self {
        Self {
            points: vec![[x, y]],
            labels: vec![1],
            ..Default::default()
        }
    }

    /// A box.
    pub fn bbox(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self {
            bbox: Some([x0, y0, x1, y1]),
            ..Default::default()
        }
    }

    /// Adds a click with its label.
    pub fn with_point(mut self, x: f32, y: f32, label: i32) -> Self {
        self.points.push([x, y]);
        self.labels.push(label);
        self
    }
}

/// Output of [`Sam2ImagePredictor::predict`]; `M` masks (3 with multimask
/// output, else 1), best first as the official predictor returns them.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Number of masks `M`.
    pub num_masks: usize,
    /// Original image height.
    pub height: usize,
    /// Original image width.
    pub width: usize,
    /// Mask logits at the original size `[M, H, W]`.
    pub logits: Vec<f32>,
    /// Binary masks `[M, H, W]` (logit > threshold), 0 or 1.
    pub masks: Vec<u8>,
    /// Predicted IoU per mask `[M]`.
    pub iou_scores: Vec<f32>,
    /// Low-resolution logits `[M, S/4, S/4]`, clamped to ±32 (the next round's `mask_input`).
    pub low_res_logits: Vec<f32>,
    /// Side of the low-resolution masks (`S/4`).
    pub low_res_size: usize,
    /// Object-score logit (the image predictor does not apply it).
    pub object_score_logit: f32,
}

impl Prediction {
    /// The binary mask `i` as `[H, W]`.
    pub fn mask(&self, i: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.masks[i * n..(i + 1) * n]
    }

    /// Low-resolution logits of mask `i` (for [`Prompt::mask_input`]).
    pub fn low_res(&self, i: usize) -> Vec<f32> {
        let n = self.low_res_size * self.low_res_size;
        self.low_res_logits[i * n..(i + 1) * n].to_vec()
    }

    /// Index of the mask with the highest predicted IoU.
    pub fn best(&self) -> usize {
        let mut b = 0;
        for (i, v) in self.iou_scores.iter().enumerate() {
            if *v > self.iou_scores[b] {
                b = i;
            }
        }
        b
    }
}

/// Every intermediate of one prediction (for parity checks and debugging).
#[derive(Debug, Clone)]
pub struct PredictTrace {
    /// Model-space coordinates given to the prompt encoder `[1, P, 2]`.
    pub model_point_coords: Tensor,
    /// Their labels `[1, P]`.
    pub model_point_labels: Tensor,
    /// Sparse prompt embeddings `[1, P+1, C]`.
    pub sparse_embeddings: Tensor,
    /// Dense prompt embeddings `[1, C, h, w]`.
    pub dense_embeddings: Tensor,
    /// All mask tokens' logits `[1, T, S/4, S/4]`.
    pub decoder_all_masks: Tensor,
    /// All tokens' IoU `[1, T]`.
    pub decoder_all_ious: Tensor,
    /// Object score `[1, 1]`.
    pub object_score_logits: Tensor,
    /// Output tokens of the selected masks `[1, M, C]`.
    pub sam_tokens_out: Tensor,
}

struct ImageState {
    orig_hw: [usize; 2],
    feats: BackboneFeatures,
    image_embed: Tensor,
}

/// Image predictor over a shared model.
pub struct Sam2ImagePredictor {
    model: Arc<Sam2Base>,
    state: Option<ImageState>,
    dense_pe: Tensor,
    /// Logit threshold of the binary masks (official default 0.0).
    pub mask_threshold: f32,
    /// Background holes of at most this many low-resolution pixels become
    /// foreground before upsampling (official `max_hole_area`, default 0 =
    /// off; [`crate::misc::remove_small_regions`]).
    pub max_hole_area: f32,
    /// Foreground specks of at most this many low-resolution pixels become
    /// background before upsampling (official `max_sprinkle_area`, default
    /// 0 = off).
    pub max_sprinkle_area: f32,
}

impl Sam2ImagePredictor {
    /// A predictor over `model` (which may be shared by other predictors and threads).
    pub fn new(model: Arc<Sam2Base>) -> Result<Self> {
        let dense_pe = model.sam_prompt_encoder.get_dense_pe()?;
        Ok(Self {
            model,
            state: None,
            dense_pe,
            mask_threshold: 0.0,
            max_hole_area: 0.0,
            max_sprinkle_area: 0.0,
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Sam2Base> {
        &self.model
    }

    /// Sets a u8 RGB image `[H, W, 3]` (row-major, interleaved).
    pub fn set_image_rgb_u8(&mut self, rgb: &[u8], height: usize, width: usize) -> Result<()> {
        let s = self.model.cfg.image_size;
        let px = transforms::preprocess_rgb_u8(rgb, height, width, s)?;
        self.set_pixels(px, [height, width])
    }

    /// Sets a single-channel image already mapped to `0..1` (e.g. a windowed
    /// CT slice), `[H, W]` row-major; it is used as grey RGB.
    pub fn set_image_grey_f32(&mut self, grey: &[f32], height: usize, width: usize) -> Result<()> {
        let s = self.model.cfg.image_size;
        let px = transforms::preprocess_grey_f32(grey, height, width, s)?;
        self.set_pixels(px, [height, width])
    }

    /// Sets already preprocessed pixels `[3, S, S]` for an image of `orig_hw`.
    pub fn set_pixels(&mut self, pixels: Vec<f32>, orig_hw: [usize; 2]) -> Result<()> {
        let s = self.model.cfg.image_size;
        if pixels.len() != 3 * s * s {
            return Err(Error::invalid(format!(
                "pixels must hold 3x{s}x{s} values, got {}",
                pixels.len()
            )));
        }
        if orig_hw[0] == 0 || orig_hw[1] == 0 {
            return Err(Error::invalid("empty image"));
        }
        self.state = None;
        let t = Tensor::from_vec(pixels, (1, 3, s, s), self.model.device())?;
        let feats = self.model.forward_image(&t)?;
        let image_embed = self.model.image_embed_without_memory(&feats)?;
        self.state = Some(ImageState {
            orig_hw,
            feats,
            image_embed,
        });
        Ok(())
    }

    /// Forgets the image.
    pub fn reset(&mut self) {
        self.state = None;
    }

    /// Whether an image is set.
    pub fn is_image_set(&self) -> bool {
        self.state.is_some()
    }

    /// The cached features of the current image.
    pub fn features(&self) -> Option<(&BackboneFeatures, &Tensor)> {
        self.state.as_ref().map(|s| (&s.feats, &s.image_embed))
    }

    /// The prompt encoder's dense position encoding `[1, C, h, w]`.
    pub fn dense_pe(&self) -> &Tensor {
        &self.dense_pe
    }

    /// Segments from a prompt; `multimask_output` returns 3 masks (useful for
    /// an ambiguous single click), otherwise 1.
    pub fn predict(&self, prompt: &Prompt, multimask_output: bool) -> Result<Prediction> {
        self.run(prompt, multimask_output, false).map(|(p, _)| p)
    }

    /// [`Self::predict`] that also returns every intermediate.
    pub fn predict_traced(
        &self,
        prompt: &Prompt,
        multimask_output: bool,
    ) -> Result<(Prediction, PredictTrace)> {
        let (p, t) = self.run(prompt, multimask_output, true)?;
        let t = t.ok_or_else(|| Error::invalid("trace missing"))?;
        Ok((p, t))
    }

    fn run(
        &self,
        prompt: &Prompt,
        multimask: bool,
        trace: bool,
    ) -> Result<(Prediction, Option<PredictTrace>)> {
        let st = self
            .state
            .as_ref()
            .ok_or_else(|| Error::invalid("no image set: call set_image_* before predict"))?;
        let model = &self.model;
        let s = model.cfg.image_size;
        let low = s / 4;
        let [h, w] = st.orig_hw;
        validate_prompt(prompt, h, w, low)?;
        let dev = model.device();

        // Box corners (labels 2, 3) first, then the clicks, in model pixels.
        let mut coords: Vec<f32> = Vec::new();
        let mut labels: Vec<f32> = Vec::new();
        if let Some([x0, y0, x1, y1]) = prompt.bbox {
            for (xy, l) in [([x0, y0], 2.0), ([x1, y1], 3.0)] {
                coords.extend(transforms::transform_coords(xy, st.orig_hw, s));
                labels.push(l);
            }
        }
        for (p, l) in prompt.points.iter().zip(&prompt.labels) {
            coords.extend(transforms::transform_coords(*p, st.orig_hw, s));
            labels.push(*l as f32);
        }
        let n = labels.len();
        let pts = Tensor::from_vec(coords, (1, n, 2), dev)?;
        let lbl = Tensor::from_vec(labels, (1, n), dev)?;
        let mask = match &prompt.mask_input {
            Some(m) => {
                Some(Tensor::from_vec(m.clone(), (1, 1, low, low), dev)?.to_dtype(model.dtype())?)
            }
            None => None,
        };
        let points = if n > 0 { Some((&pts, &lbl)) } else { None };
        let (sparse, dense) = model
            .sam_prompt_encoder
            .forward(points, None, mask.as_ref())?;
        let high_res = st.feats.high_res.as_ref().map(|(a, b)| (a, b));
        let dec = &model.sam_mask_decoder;
        let out = dec.forward(
            &st.image_embed,
            &self.dense_pe,
            &sparse,
            &dense,
            multimask,
            false,
            high_res,
        )?;

        let low_res = out.masks.to_dtype(DType::F32)?; // [1, M, low, low]
        let m = low_res.dim(1)?;
        let low_vec = low_res.flatten_all()?.to_vec1::<f32>()?;
        let thr = self.mask_threshold;
        // `postprocess_masks`: the clean-up applies to the upsampled masks
        // only; the low-res logits are returned as the decoder gave them.
        let cleaned = if self.max_hole_area > 0.0 || self.max_sprinkle_area > 0.0 {
            let mut c = low_vec.clone();
            crate::misc::remove_small_regions(
                &mut c,
                low,
                low,
                thr,
                self.max_hole_area,
                self.max_sprinkle_area,
            )?;
            std::borrow::Cow::Owned(c)
        } else {
            std::borrow::Cow::Borrowed(&low_vec)
        };
        let logits = upsample_bilinear(&cleaned, m, low, low, h, w);
        let masks = logits.iter().map(|&v| u8::from(v > thr)).collect();
        let pred = Prediction {
            num_masks: m,
            height: h,
            width: w,
            logits,
            masks,
            iou_scores: out
                .iou_pred
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?,
            low_res_logits: low_vec.iter().map(|v| v.clamp(-32.0, 32.0)).collect(),
            low_res_size: low,
            object_score_logit: out
                .object_score_logits
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?[0],
        };
        let tr = if trace {
            let all = dec.predict_masks(
                &st.image_embed,
                &self.dense_pe,
                &sparse,
                &dense,
                false,
                high_res,
            )?;
            Some(PredictTrace {
                model_point_coords: pts,
                model_point_labels: lbl,
                sparse_embeddings: sparse,
                dense_embeddings: dense,
                decoder_all_masks: all.masks,
                decoder_all_ious: all.iou_pred,
                object_score_logits: all.object_score_logits,
                sam_tokens_out: out.sam_tokens_out,
            })
        } else {
            None
        };
        Ok((pred, tr))
    }
}

/// Bilinear upsampling (`F.interpolate(..., mode="bilinear",
/// align_corners=False)`) of `n` maps `[ih, iw]` to `[oh, ow]`, with exactly
/// the arithmetic of candle's `upsample_bilinear2d` (f64 weights and sums,
/// rounded to f32), which this replaces on the predictor's output: each
/// source row is interpolated along x once instead of once per output row,
/// and the vertical blend runs over whole rows.
fn upsample_bilinear(
    src: &[f32],
    n: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    // (i0, i1, weight of i1) per output index, as candle computes them.
    let taps = |i_n: usize, o_n: usize| -> Vec<(usize, usize, f64)> {
        let scale = i_n as f64 / o_n as f64;
        (0..o_n)
            .map(|o| {
                let s = (scale * (o as f64 + 0.5) - 0.5).max(0.0);
                let i0 = s.floor() as usize;
                (i0, (i0 + 1).min(i_n - 1), (s - i0 as f64).clamp(0.0, 1.0))
            })
            .collect()
    };
    let (ty, tx) = (taps(ih, oh), taps(iw, ow));
    let mut out = vec![0f32; n * oh * ow];
    let mut rows = vec![0f64; ih * ow];
    for (k, dst) in out.chunks_exact_mut(oh * ow).enumerate() {
        let map = &src[k * ih * iw..(k + 1) * ih * iw];
        for (row, r) in map.chunks_exact(iw).zip(rows.chunks_exact_mut(ow)) {
            for (v, &(x0, x1, wx)) in r.iter_mut().zip(&tx) {
                *v = row[x0] as f64 * (1.0 - wx) + row[x1] as f64 * wx;
            }
        }
        // Output rows in blocks on the kernels' threads.
        let per = rows_per_chunk(oh, ow, 1 << 16);
        let rows = &rows;
        par_chunks_mut(dst, per * ow, |i, block| {
            for (r, d) in block.chunks_exact_mut(ow).enumerate() {
                let (y0, y1, wy) = ty[i * per + r];
                let (top, bottom) = (&rows[y0 * ow..][..ow], &rows[y1 * ow..][..ow]);
                for ((d, t), b) in d.iter_mut().zip(top).zip(bottom) {
                    *d = (t * (1.0 - wy) + b * wy) as f32;
                }
            }
        });
    }
    out
}

/// Checks a prompt against an image of `h`×`w` (pixel units, edges included).
pub fn validate_prompt(p: &Prompt, h: usize, w: usize, low: usize) -> Result<()> {
    if p.points.is_empty() && p.bbox.is_none() && p.mask_input.is_none() {
        return Err(Error::invalid("empty prompt: give points, a box or a mask"));
    }
    if p.points.len() > crate::limits::MAX_PROMPT_POINTS {
        return Err(Error::invalid(format!(
            "{} points exceed the limit of {} (MAX_PROMPT_POINTS)",
            p.points.len(),
            crate::limits::MAX_PROMPT_POINTS
        )));
    }
    if p.points.len() != p.labels.len() {
        return Err(Error::invalid(format!(
            "{} points but {} labels",
            p.points.len(),
            p.labels.len()
        )));
    }
    let inside = |x: f32, y: f32| {
        x.is_finite()
            && y.is_finite()
            && (0.0..=w as f32).contains(&x)
            && (0.0..=h as f32).contains(&y)
    };
    for (i, ([x, y], l)) in p.points.iter().zip(&p.labels).enumerate() {
        if !inside(*x, *y) {
            return Err(Error::invalid(format!(
                "point {i} ({x}, {y}) is outside the {w}x{h} image"
            )));
        }
        if !(-1..=3).contains(l) {
            return Err(Error::invalid(format!(
                "point {i} has label {l}; expected 1 (foreground) or 0 (background)"
            )));
        }
    }
    if let Some([x0, y0, x1, y1]) = p.bbox {
        if !inside(x0, y0) || !inside(x1, y1) {
            return Err(Error::invalid(format!(
                "box ({x0}, {y0}, {x1}, {y1}) is outside the {w}x{h} image"
            )));
        }
        if x1 < x0 || y1 < y0 {
            return Err(Error::invalid(format!(
                "box ({x0}, {y0}, {x1}, {y1}) has x1 < x0 or y1 < y0"
            )));
        }
    }
    if let Some(m) = &p.mask_input {
        if m.len() != low * low {
            return Err(Error::invalid(format!(
                "mask input must be {low}x{low}, got {} values",
                m.len()
            )));
        }
        if m.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("mask input has non-finite values"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::upsample_bilinear;
    use candle_core::{Device, Tensor};

    /// Bit for bit candle's `upsample_bilinear2d(.., false)`, up and down,
    /// square and not.
    #[test]
    fn upsample_equals_candle() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for (n, ih, iw, oh, ow) in [
            (3, 8, 8, 37, 21),
            (1, 16, 12, 64, 80),
            (2, 9, 7, 5, 3),
            (3, 64, 64, 400, 300),
        ] {
            s += 1;
            let v = crate::modeling::kernels::softmax::tests::lcg(n * ih * iw, 20.0, s);
            let want = Tensor::from_vec(v.clone(), (1, n, ih, iw), &Device::Cpu)
                .and_then(|t| t.upsample_bilinear2d(oh, ow, false))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .expect("candle upsample");
            assert_eq!(upsample_bilinear(&v, n, ih, iw, oh, ow), want);
        }
    }
}
