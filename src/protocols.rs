//! The papers' volume pipelines ("protocols"), step for step as their own
//! scripts run them, on top of [`crate::volume_job`]:
//!
//! | protocol | paper code | prompts | passes | output |
//! |---|---|---|---|---|
//! | [`Protocol::MedSam2Ct`] | bowang-lab MedSAM2 `medsam2_infer_3D_CT.py` | a box on the key slice | forward from it; reset; the box again; backward | union of `logits > 0` on the input grid, largest 26-connected 3-D component |
//! | [`Protocol::MedSam2Recist`] | bowang-lab MedSAM2 `medsam2_infer_CT_lesion_npz_recist.py --propagate_with_box` | the box's mask (`logits > 0`) on the key slice | forward from it; reset; the mask again; backward | union of `logits > 0`, no component filter |
//! | [`Protocol::MedicalSam2`] | MedicineToken Medical-SAM2 `func_3d/function.py::validation_sam` | every `prompt_freq`-th slice from 0, every object: its box or a click, an empty mask where absent | forward from slice 0, all objects in one session | masks `logits > 0.5` at the model size S x S |
//!
//! Slices reach the model as the official video path does (Pillow bicubic to
//! S x S, `/255`, ImageNet mean/std). MedSAM2 maps the masks back to the input
//! grid (bilinear from S/4); Medical-SAM2 resizes slices and labels to S x S
//! first (bicubic and Pillow's nearest) and stays there. `tests/end_to_end.rs`
//! replays the fixtures of `scripts/reference/gen_e2e.py` (the official
//! `sam2` 1.1.0 running the same steps) through these functions.

use std::sync::Arc;

use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_video_predictor::{
    FrameProvider, GreyFrames, Sam2VideoPredictor, SessionOptions,
};
use medsam2_core::transforms;

use medsam2_core::medical::slicing::Axis;
use medsam2_core::medical::{Geometry, Volume, VoxelData};

use crate::volume_job::{
    label_slices, segment, simulate_prompts, Case, EvalRow, JobError, LabelSlices, ObjectPrompts,
    Propagation, Result, SegmentOptions, Segmentation, SimulationOptions, SlicePrompt, Slices,
    SplitMix64, Strategy,
};

/// A paper's volume protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// bowang-lab MedSAM2 CT inference (box, two separate passes, largest component).
    MedSam2Ct,
    /// bowang-lab MedSAM2 RECIST/npz variant (box -> mask, two mask-prompted passes).
    MedSam2Recist,
    /// MedicineToken Medical-SAM2 3D evaluation (prompts every k slices, forward).
    MedicalSam2,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [
        Protocol::MedSam2Ct,
        Protocol::MedSam2Recist,
        Protocol::MedicalSam2,
    ];

    /// Short name (`medsam2-ct`, `medsam2-recist`, `medical-sam2`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::MedSam2Ct => "medsam2-ct",
            Protocol::MedSam2Recist => "medsam2-recist",
            Protocol::MedicalSam2 => "medical-sam2",
        }
    }

    /// Parses a name of [`Protocol::name`].
    pub fn parse(s: &str) -> Result<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| {
                JobError(format!(
                    "unknown protocol `{s}`: medsam2-ct, medsam2-recist or medical-sam2"
                ))
            })
    }
}

/// bowang-lab MedSAM2's frames: grey slices as RGB, Pillow bicubic to S x S
/// (skipped when already S x S, as the npz script does), then `/255` and the
/// ImageNet mean/std in `f64` on the `f32` constants, rounded to `f32` once
/// (their tensor is `float64` until `_get_image_feature` casts it). The
/// official video loader ([`GreyFrames`]) rounds after each step instead,
/// which moves about 70 % of the inputs by one `f32` ulp.
pub struct MedSam2Frames {
    frames: Vec<Vec<u8>>,
    hw: [usize; 2],
}

impl MedSam2Frames {
    /// Checks every slice holds `h·w` bytes.
    pub fn new(frames: Vec<Vec<u8>>, h: usize, w: usize) -> Result<Self> {
        if h == 0 || w == 0 || frames.is_empty() {
            return Err(JobError(format!("no slices ({} of {h}x{w})", frames.len())));
        }
        if let Some(i) = frames.iter().position(|f| f.len() != h * w) {
            return Err(JobError(format!(
                "slice {i} holds {} bytes, {h}x{w} expected",
                frames[i].len()
            )));
        }
        Ok(MedSam2Frames { frames, hw: [h, w] })
    }
}

impl FrameProvider for MedSam2Frames {
    fn num_frames(&self) -> usize {
        self.frames.len()
    }
    fn frame_hw(&self) -> [usize; 2] {
        self.hw
    }
    fn pixels(&self, idx: usize, size: usize) -> medsam2_core::Result<Vec<f32>> {
        let [h, w] = self.hw;
        let grey = self
            .frames
            .get(idx)
            .ok_or_else(|| medsam2_core::Error::invalid(format!("slice {idx} out of range")))?;
        let resized = transforms::resize_bicubic_pil_u8(grey, 1, h, w, size, size)?;
        let n = size * size;
        let mut out = vec![0f32; 3 * n];
        for c in 0..3 {
            let (m, s) = (
                f64::from(transforms::IMAGENET_MEAN[c]),
                f64::from(transforms::IMAGENET_STD[c]),
            );
            for (o, &p) in out[c * n..(c + 1) * n].iter_mut().zip(&resized) {
                *o = ((f64::from(p) / 255.0 - m) / s) as f32;
            }
        }
        Ok(out)
    }
}

/// A session with the official `build_sam2_video_predictor` settings (in
/// particular `add_all_frames_to_correct_as_cond = false`, where this crate's
/// default is `true`; `fill_hole_area` 8 as the scripts run on a GPU, 0 as
/// the official code on a CPU, see [`SessionOptions::fill_hole_area`]) over
/// `slices`, whose pixels reach the model as the
/// protocol's script sends them ([`MedSam2Frames`] for MedSAM2, the official
/// video loader's [`GreyFrames`] for Medical-SAM2).
pub fn official_session(
    model: Arc<Sam2Base>,
    slices: &Slices,
    protocol: Protocol,
    fill_hole_area: usize,
) -> Result<Sam2VideoPredictor> {
    let (h, w) = (slices.height, slices.width);
    let frames: Box<dyn FrameProvider> = match protocol {
        Protocol::MedSam2Ct | Protocol::MedSam2Recist => {
            Box::new(MedSam2Frames::new(slices.images.clone(), h, w)?)
        }
        Protocol::MedicalSam2 => Box::new(GreyFrames::new(slices.images.clone(), h, w)?),
    };
    let opts = SessionOptions {
        feature_cache_frames: 8,
        non_overlap_masks: false,
        add_all_frames_to_correct_as_cond: false,
        binarize_mask_from_pts_for_mem_enc: true,
        fill_hole_area,
        trace: false,
    };
    Ok(Sam2VideoPredictor::new(model, frames, opts)?)
}

fn box_prompt(obj_id: u32, key: usize, bbox: [f32; 4]) -> ObjectPrompts {
    let mut sp = SlicePrompt::on(key);
    sp.bbox = Some(bbox);
    ObjectPrompts {
        obj_id,
        slices: vec![sp],
    }
}

/// bowang-lab MedSAM2 `medsam2_infer_3D_CT.py`: `bbox` `[x0, y0, x1, y1]`
/// (slice pixels) on slice `key` as object `obj_id`; forward from `key`,
/// reset, the same box, backward from `key`; union of `logits > 0`; the
/// largest 26-connected 3-D component. `slices` are the windowed `u8` slices
/// on the input grid ([`Slices::from_volume`] with a CT window: clip, min/max
/// stretch of the clipped volume, truncation, as the script).
pub fn medsam2_ct(
    model: Arc<Sam2Base>,
    slices: &Slices,
    obj_id: u32,
    key: usize,
    bbox: [f32; 4],
    fill_hole_area: usize,
) -> Result<Segmentation> {
    let mut session = official_session(model, slices, Protocol::MedSam2Ct, fill_hole_area)?;
    let objects = [box_prompt(obj_id, key, bbox)];
    segment(
        &mut session,
        &objects,
        &SegmentOptions {
            propagation: Propagation::Separate,
            largest_component: true,
            threshold: 0.0,
        },
        &mut |_| true,
    )
    .map_err(JobError::from)
}

/// bowang-lab MedSAM2 `medsam2_infer_CT_lesion_npz_recist.py
/// --propagate_with_box`: the box on slice `key` gives a mask (video-res
/// `logits > 0`), which prompts a forward pass from `key` and, after a reset,
/// a backward pass; union of `logits > 0`, no component filter. Returns the
/// mask prompt (slice pixels, 0/1) and the segmentation.
pub fn medsam2_recist(
    model: Arc<Sam2Base>,
    slices: &Slices,
    obj_id: u32,
    key: usize,
    bbox: [f32; 4],
    fill_hole_area: usize,
) -> Result<(Vec<u8>, Segmentation)> {
    let mut session = official_session(model, slices, Protocol::MedSam2Recist, fill_hole_area)?;
    session.reset();
    let fm = session.add_points_or_box(key, obj_id, &[], &[], Some(bbox), true)?;
    let mask = fm
        .binary_masks()?
        .into_iter()
        .next()
        .ok_or_else(|| JobError("the box prompt returned no mask".into()))?;
    let mut sp = SlicePrompt::on(key);
    sp.mask = Some(mask.clone());
    let objects = [ObjectPrompts {
        obj_id,
        slices: vec![sp],
    }];
    let seg = segment(
        &mut session,
        &objects,
        &SegmentOptions::default(),
        &mut |_| true,
    )?;
    Ok((mask, seg))
}

/// Runs MedSAM2's CT or RECIST protocol for `prompts` as parsed by the
/// `segment_volume` job: exactly one object with one box on one slice (the
/// scripts segment one lesion per run). Medical-SAM2's protocol prompts
/// from a label volume and is an evaluation (`evaluate_prompts --protocol
/// medical-sam2`).
pub fn segment_with_protocol(
    model: Arc<Sam2Base>,
    slices: &Slices,
    prompts: &[ObjectPrompts],
    protocol: Protocol,
    fill_hole_area: usize,
) -> Result<Segmentation> {
    let one_box = match prompts {
        [o] => match o.slices.as_slice() {
            [sp] if sp.points.is_empty() && sp.mask.is_none() => {
                sp.bbox.map(|b| (o.obj_id, sp.slice, b))
            }
            _ => None,
        },
        _ => None,
    };
    match protocol {
        Protocol::MedicalSam2 => Err(JobError(
            "--protocol medical-sam2 prompts from a label volume: use evaluate_prompts --protocol medical-sam2".into(),
        )),
        p => {
            let (id, key, b) = one_box.ok_or_else(|| {
                JobError(format!(
                    "--protocol {} takes exactly one --box (one object, no clicks or masks)",
                    p.name()
                ))
            })?;
            if p == Protocol::MedSam2Ct {
                medsam2_ct(model, slices, id, key, b, fill_hole_area)
            } else {
                medsam2_recist(model, slices, id, key, b, fill_hole_area).map(|(_, seg)| seg)
            }
        }
    }
}

/// Settings of [`medical_sam2`] (Medical-SAM2's `-prompt`, `-prompt_freq` and
/// the middle threshold of `eval_seg`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MedicalSam2Options {
    /// Prompt every `prompt_freq`-th slice from slice 0 (`-prompt_freq`, default 2).
    pub prompt_freq: usize,
    /// Boxes (`-prompt bbox`, the default) instead of clicks (`-prompt click`).
    pub boxes: bool,
    /// Mask threshold on the logits (`eval_seg` scores 0.1, 0.3, 0.5, 0.7,
    /// 0.9 and averages; 0.5 is the middle one and their visualisation's).
    pub threshold: f32,
    /// Seed of the clicks.
    pub seed: u64,
    /// [`SessionOptions::fill_hole_area`] (8, as `build_sam2_video_predictor`).
    pub fill_hole_area: usize,
}

impl Default for MedicalSam2Options {
    fn default() -> Self {
        MedicalSam2Options {
            prompt_freq: 2,
            boxes: true,
            threshold: 0.5,
            seed: 2024,
            fill_hole_area: 8,
        }
    }
}

/// Pillow's `Image.resize(size)` of a mode `"1"` (boolean) image, whose
/// default filter is NEAREST: Pillow scales by an affine transform whose
/// source coordinate starts at `scale / 2` and is accumulated per output
/// pixel in `f64`, then truncated (`ImagingScaleAffine`). Written by hand: no
/// crate reproduces Pillow's accumulation, and the Medical-SAM2 labels must
/// match voxel for voxel.
pub fn resize_nearest_pil(src: &[u8], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<u8> {
    if src.len() != h * w || h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return vec![0; out_h * out_w];
    }
    let table = |n_in: usize, n_out: usize| -> Vec<usize> {
        let a = n_in as f64 / n_out as f64;
        let mut o = a * 0.5;
        let mut t = Vec::with_capacity(n_out);
        for _ in 0..n_out {
            t.push((o as usize).min(n_in - 1));
            o += a;
        }
        t
    };
    let (xs, ys) = (table(w, out_w), table(h, out_h));
    let mut out = Vec::with_capacity(out_h * out_w);
    for &y in &ys {
        out.extend(xs.iter().map(|&x| src[y * w + x]));
    }
    out
}

/// Medical-SAM2's data preparation (`func_3d/dataset/btcv.py`): every slice
/// to S x S with Pillow bicubic, every label's masks to S x S with Pillow's
/// nearest. The labels are those of `labels` (on the slices' grid).
pub fn medical_sam2_inputs(
    slices: &Slices,
    labels: &[LabelSlices],
    size: usize,
) -> Result<(Slices, Vec<LabelSlices>)> {
    let (h, w) = (slices.height, slices.width);
    let mut images = Vec::with_capacity(slices.len());
    for f in &slices.images {
        images.push(transforms::resize_bicubic_pil_u8(f, 1, h, w, size, size)?);
    }
    let resized = Slices {
        axis: slices.axis,
        width: size,
        height: size,
        images,
    };
    let ls = labels
        .iter()
        .map(|l| {
            let masks: Vec<Vec<u8>> = l
                .masks
                .iter()
                .map(|m| resize_nearest_pil(m, h, w, size, size))
                .collect();
            let areas = masks
                .iter()
                .map(|m| m.iter().filter(|&&v| v != 0).count())
                .collect();
            LabelSlices {
                label: l.label,
                masks,
                areas,
            }
        })
        .collect();
    Ok((resized, ls))
}

/// Medical-SAM2's prompts for the (resized) labels: every `prompt_freq`-th
/// slice from 0, every object its tight box or a click at a seeded random
/// object pixel where present, an all-zero mask where absent.
pub fn medical_sam2_prompts(
    labels: &[LabelSlices],
    size: usize,
    opts: &MedicalSam2Options,
) -> Result<Vec<ObjectPrompts>> {
    let sim = SimulationOptions {
        every: opts.prompt_freq.max(1),
        every_box: opts.boxes,
        seed: opts.seed,
        ..Default::default()
    };
    labels
        .iter()
        .map(|l| {
            let mut rng = SplitMix64::for_item(opts.seed, &format!("medical-sam2/{}", l.label));
            simulate_prompts(Strategy::EveryK, l, size, size, [1.0, 1.0], &sim, &mut rng)
        })
        .collect()
}

/// Medical-SAM2's `validation_sam` on S x S slices (see
/// [`medical_sam2_inputs`]) with `prompts` (see [`medical_sam2_prompts`]):
/// all objects in one session, one forward pass from slice 0, masks
/// `logits > threshold` at S x S.
pub fn medical_sam2(
    model: Arc<Sam2Base>,
    slices: &Slices,
    prompts: &[ObjectPrompts],
    threshold: f32,
    fill_hole_area: usize,
) -> Result<Segmentation> {
    let mut session = official_session(model, slices, Protocol::MedicalSam2, fill_hole_area)?;
    segment(
        &mut session,
        prompts,
        &SegmentOptions {
            propagation: Propagation::Forward,
            largest_component: false,
            threshold,
        },
        &mut |_| true,
    )
    .map_err(JobError::from)
}

/// Medical-SAM2's 3D evaluation of one case (`slices`: its image cut along
/// `axis`): every label of the case is an object of one session, prompted
/// and propagated by [`medical_sam2`] at S x S; each object's masks are
/// scored against its resized label on the S x S grid (in-plane spacing
/// scaled by the resize) with Dice, IoU, NSD and HD95 (Medical-SAM2 itself
/// reports per-slice IoU and Dice averaged over the thresholds 0.1..0.9).
/// One row per label, strategy `medical-sam2`.
pub fn evaluate_case_medical_sam2(
    model: Arc<Sam2Base>,
    case: &Case,
    slices: &Slices,
    axis: Axis,
    opts: &MedicalSam2Options,
    nsd_tol_mm: f64,
) -> Result<Vec<EvalRow>> {
    let size = model.cfg.image_size;
    let labels = label_slices(&case.labels, axis)?;
    let (rs, rl) = medical_sam2_inputs(slices, &labels, size)?;
    let prompts = medical_sam2_prompts(&rl, size, opts)?;
    let seg = medical_sam2(model, &rs, &prompts, opts.threshold, opts.fill_hole_area)?;
    let n = rs.len();
    let sp = case.image.geometry().spacing;
    let (c, r) = axis.in_plane();
    let geometry = Geometry {
        spacing: [
            sp[c] * slices.width as f64 / size as f64,
            sp[r] * slices.height as f64 / size as f64,
            sp[axis as usize],
        ],
        ..Default::default()
    };
    let vol = |m: Vec<u8>| Volume::new([size, size, n], geometry, VoxelData::U8(m));
    let mut rows = Vec::new();
    for (o, gt) in rl.iter().enumerate() {
        let pred: Vec<u8> = seg.masks[o]
            .iter()
            .flat_map(|m| m.clone().unwrap_or_else(|| vec![0; size * size]))
            .collect();
        let want: Vec<u8> = gt.masks.concat();
        let lm = crate::volume_job::label_metrics(&vol(pred)?, &vol(want)?, nsd_tol_mm, gt.label)?;
        rows.push(EvalRow {
            case: case.name.clone(),
            label: gt.label,
            strategy: Protocol::MedicalSam2.name(),
            metrics: lm,
            prompts: prompts[o].slices.len(),
            seconds: seg.seconds(),
            slices: n,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_pillow() {
        // Image.fromarray(np.arange(5) % 2 == 1 ... ) resized 5 -> 8 and 8 -> 3:
        // Pillow picks source columns floor(5/8 * (i + 0.5)) = 0,0,1,2,2,3,4,4
        // and floor(8/3 * (i + 0.5)) = 1,4,6.
        let row: Vec<u8> = (0..5).collect();
        assert_eq!(
            resize_nearest_pil(&row, 1, 5, 1, 8),
            vec![0, 0, 1, 2, 2, 3, 4, 4]
        );
        let row: Vec<u8> = (0..8).collect();
        assert_eq!(resize_nearest_pil(&row, 1, 8, 1, 3), vec![1, 4, 6]);
        assert_eq!(resize_nearest_pil(&[1, 2], 1, 3, 2, 2), vec![0; 4]);
        assert_eq!(
            Protocol::parse("medical-sam2").unwrap(),
            Protocol::MedicalSam2
        );
        assert!(Protocol::parse("x").is_err());
    }
}
