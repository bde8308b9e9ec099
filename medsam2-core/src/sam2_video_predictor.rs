//! Prompt one slice, segment the volume: the equivalent of the official
//! `SAM2VideoPredictor`, over an ordered sequence of frames (the slices of a
//! volume, or video frames).
//!
//! Frames are encoded lazily and their features kept in a bounded LRU cache
//! ([`SessionOptions::feature_cache_frames`]). Per tracked frame and object the
//! session keeps the memory features (bf16, `Cm·(S/16)²·2` bytes), the low-res
//! logits (`(S/4)²·4` bytes) and the pointer: for SAM 2.1 tiny at 512 that is
//! 128 KiB + 64 KiB per slice and object; at 1024, 512 KiB + 256 KiB. The feature
//! cache holds `C·(S/16)²·4 + (C/8)·(S/4)²·4 + (C/4)·(S/8)²·4` bytes per frame
//! (4 MiB at 512, 16 MiB at 1024 for C = 256).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::memory_bank::{FrameOutput, MemoryPolicy, ObjectMemory, TemporalPolicy};
use crate::modeling::memory_encoder::NewMemoryParams;
use crate::modeling::sam2_base::{BackboneFeatures, Sam2Base, TrackStepOutput, NO_OBJ_SCORE};
use crate::transforms;

/// The prompt type shared with the image predictor: clicks and/or a box.
pub use crate::sam2_image_predictor::Prompt;

/// Supplies frames to a session on demand.
pub trait FrameProvider: Send {
    /// Number of frames.
    fn num_frames(&self) -> usize;
    /// Original frame size `[H, W]` (all frames alike).
    fn frame_hw(&self) -> [usize; 2];
    /// Model input of frame `idx`: normalised pixels `[3, size, size]`.
    fn pixels(&self, idx: usize, size: usize) -> Result<Vec<f32>>;
}

/// Equal-sized u8 images with `channels` interleaved values per pixel; the
/// shared storage and checks of [`RgbFrames`] and [`GreyFrames`].
struct U8Stack {
    frames: Vec<Vec<u8>>,
    hw: [usize; 2],
    /// What one image is called in errors ("frame", "slice").
    what: &'static str,
}

impl U8Stack {
    fn new(
        frames: Vec<Vec<u8>>,
        h: usize,
        w: usize,
        channels: usize,
        what: &'static str,
    ) -> Result<Self> {
        if frames.is_empty() || h == 0 || w == 0 {
            return Err(Error::invalid(format!("no {what}s, or empty {what}s")));
        }
        let c = if channels == 1 {
            String::new()
        } else {
            format!("x{channels}")
        };
        if let Some(i) = frames.iter().position(|f| f.len() != h * w * channels) {
            return Err(Error::invalid(format!(
                "{what} {i} holds {} bytes, {h}x{w}{c} expected",
                frames[i].len()
            )));
        }
        Ok(Self {
            frames,
            hw: [h, w],
            what,
        })
    }

    fn get(&self, idx: usize) -> Result<&[u8]> {
        self.frames
            .get(idx)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::invalid(format!("{} {idx} out of range", self.what)))
    }
}

/// Frames given as u8 RGB `[H, W, 3]` (the official video path: PIL bicubic
/// resize, `/255`, ImageNet normalisation).
pub struct RgbFrames(U8Stack);

impl RgbFrames {
    /// Checks every frame holds `h·w·3` bytes.
    pub fn new(frames: Vec<Vec<u8>>, h: usize, w: usize) -> Result<Self> {
        U8Stack::new(frames, h, w, 3, "frame").map(Self)
    }
}

impl FrameProvider for RgbFrames {
    fn num_frames(&self) -> usize {
        self.0.frames.len()
    }
    fn frame_hw(&self) -> [usize; 2] {
        self.0.hw
    }
    fn pixels(&self, idx: usize, size: usize) -> Result<Vec<f32>> {
        transforms::preprocess_video_frame_u8(self.0.get(idx)?, self.0.hw[0], self.0.hw[1], size)
    }
}

/// Grey u8 slices `[H, W]` (e.g. windowed CT), used as grey RGB on the video path.
pub struct GreyFrames(U8Stack);

impl GreyFrames {
    /// Checks every slice holds `h·w` bytes.
    pub fn new(frames: Vec<Vec<u8>>, h: usize, w: usize) -> Result<Self> {
        U8Stack::new(frames, h, w, 1, "slice").map(Self)
    }
}

impl FrameProvider for GreyFrames {
    fn num_frames(&self) -> usize {
        self.0.frames.len()
    }
    fn frame_hw(&self) -> [usize; 2] {
        self.0.hw
    }
    fn pixels(&self, idx: usize, size: usize) -> Result<Vec<f32>> {
        let rgb: Vec<u8> = self.0.get(idx)?.iter().flat_map(|&v| [v, v, v]).collect();
        transforms::preprocess_video_frame_u8(&rgb, self.0.hw[0], self.0.hw[1], size)
    }
}

/// Already preprocessed frames `[N, 3, S, S]` (e.g. from a fixture).
pub struct PixelFrames {
    /// The pixels.
    pub pixels: Tensor,
    /// Original frame size.
    pub hw: [usize; 2],
}

impl FrameProvider for PixelFrames {
    fn num_frames(&self) -> usize {
        self.pixels.dims().first().copied().unwrap_or(0)
    }
    fn frame_hw(&self) -> [usize; 2] {
        self.hw
    }
    fn pixels(&self, idx: usize, size: usize) -> Result<Vec<f32>> {
        let t = self.pixels.get(idx)?.to_dtype(DType::F32)?;
        if t.dims() != [3, size, size] {
            return Err(Error::invalid(format!(
                "frame {idx} has shape {:?}, [3, {size}, {size}] expected",
                t.dims()
            )));
        }
        Ok(t.flatten_all()?.to_vec1()?)
    }
}

/// Session settings (the official `SAM2VideoPredictor` arguments).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Frames whose encoder features are kept (LRU); at least 1.
    pub feature_cache_frames: usize,
    /// Non-overlapping object masks in the outputs (`non_overlap_masks`).
    pub non_overlap_masks: bool,
    /// A corrected frame becomes a conditioning frame (`add_all_frames_to_correct_as_cond`).
    /// Default `true` here (the official default is `false`): a correction on a
    /// tracked slice then sticks through later propagations instead of being
    /// overwritten by re-tracking.
    pub add_all_frames_to_correct_as_cond: bool,
    /// Binarise click masks before memory encoding (`build_sam2_video_predictor` sets it).
    pub binarize_mask_from_pts_for_mem_enc: bool,
    /// Background holes of at most this many pixels in each frame's
    /// low-resolution logits become foreground (`fill_hole_area`,
    /// [`crate::misc::fill_holes_in_mask_scores`]); 0 = off. Default 8, as
    /// `build_sam2_video_predictor` sets for SAM 2, MedSAM2 and Medical-SAM2
    /// alike. The official code applies it only when its CUDA extension is
    /// built, so its CPU runs (and this crate's parity fixtures) have 0.
    pub fill_hole_area: usize,
    /// Record every tracking call (for parity checks).
    pub trace: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            feature_cache_frames: 8,
            non_overlap_masks: false,
            add_all_frames_to_correct_as_cond: true,
            binarize_mask_from_pts_for_mem_enc: true,
            fill_hole_area: 8,
            trace: false,
        }
    }
}

/// Which way to propagate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Increasing frame index.
    Forward,
    /// Decreasing frame index.
    Backward,
    /// Forward, then backward from the same start frame.
    Both,
}

/// Masks of every object on one frame.
#[derive(Debug, Clone)]
pub struct FrameMasks {
    /// The frame.
    pub frame_idx: usize,
    /// Object ids, in the order of the masks.
    pub obj_ids: Vec<u32>,
    /// Low-res (`S/4`) logits `[N, 1, S/4, S/4]` (−1024 for objects without output).
    pub low_res: Tensor,
    /// Frame size `[H, W]`.
    pub video_hw: [usize; 2],
    /// Whether masks are made non-overlapping on output.
    non_overlap: bool,
}

impl FrameMasks {
    /// Logits at the frame's size `[N, 1, H, W]` (bilinear, align_corners=False).
    pub fn video_res_logits(&self) -> Result<Tensor> {
        let [h, w] = self.video_hw;
        let m = self.low_res.upsample_bilinear2d(h, w, false)?;
        if self.non_overlap && m.dim(0)? > 1 {
            Ok(crate::modeling::memory_encoder::apply_non_overlapping_constraints(&m)?)
        } else {
            Ok(m)
        }
    }

    /// Binary masks `[N][H·W]` (logit > 0).
    pub fn binary_masks(&self) -> Result<Vec<Vec<u8>>> {
        self.binary_masks_above(0.0)
    }

    /// The binary mask `[H·W]` (logit > 0) of object `obj_id`, all zeros if
    /// the frame has no such object.
    pub fn object_mask(&self, obj_id: u32) -> Result<Vec<u8>> {
        let [h, w] = self.video_hw;
        match self.obj_ids.iter().position(|&o| o == obj_id) {
            Some(i) => self
                .binary_masks()?
                .into_iter()
                .nth(i)
                .filter(|m| m.len() == h * w)
                .ok_or_else(|| Error::invalid("mask count or size mismatch")),
            None => Ok(vec![0; h * w]),
        }
    }

    /// Binary masks `[N][H·W]` (logit > `threshold`; Medical-SAM2 scores 0.5).
    pub fn binary_masks_above(&self, threshold: f32) -> Result<Vec<Vec<u8>>> {
        let l = self.video_res_logits()?;
        let n = l.dim(0)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let v = l.get(i)?.flatten_all()?.to_vec1::<f32>()?;
            out.push(v.into_iter().map(|x| u8::from(x > threshold)).collect());
        }
        Ok(out)
    }
}

/// Propagation progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Frames done.
    pub done: usize,
    /// Frames to do.
    pub total: usize,
}

/// One recorded tracking call (with [`SessionOptions::trace`]).
#[derive(Debug, Clone)]
pub struct TrackCall {
    /// Object index.
    pub obj_idx: usize,
    /// Frame.
    pub frame_idx: usize,
    /// Initial conditioning frame.
    pub is_init_cond_frame: bool,
    /// Tracking backwards.
    pub reverse: bool,
    /// Memory encoder run.
    pub run_mem_encoder: bool,
    /// The step's output.
    pub out: TrackStepOutput,
}

#[derive(Debug, Default, Clone)]
struct ObjectState {
    point_inputs: BTreeMap<usize, (Vec<f32>, Vec<f32>)>,
    mask_inputs: BTreeMap<usize, Tensor>,
    out: ObjectMemory,
    temp: ObjectMemory,
    /// frame -> tracked in reverse
    frames_tracked: BTreeMap<usize, bool>,
}

/// A segmentation session over a sequence of frames.
pub struct Sam2VideoPredictor {
    model: Arc<Sam2Base>,
    frames: Box<dyn FrameProvider>,
    opts: SessionOptions,
    mem_params: NewMemoryParams,
    policy: Box<dyn MemoryPolicy>,
    cache: VecDeque<(usize, Arc<BackboneFeatures>)>,
    cache_peak: usize,
    encoded_frames: usize,
    maskmem_pos_enc: Option<Tensor>,
    obj_ids: Vec<u32>,
    objects: Vec<ObjectState>,
    /// Recorded tracking calls (with [`SessionOptions::trace`]).
    pub calls: Vec<TrackCall>,
}

impl Sam2VideoPredictor {
    /// A session over `frames` with SAM 2's memory policy.
    pub fn new(
        model: Arc<Sam2Base>,
        frames: Box<dyn FrameProvider>,
        opts: SessionOptions,
    ) -> Result<Self> {
        let policy = Box::new(TemporalPolicy::from_config(&model.cfg));
        Self::with_policy(model, frames, opts, policy)
    }

    /// A session with another memory-selection policy.
    pub fn with_policy(
        model: Arc<Sam2Base>,
        frames: Box<dyn FrameProvider>,
        opts: SessionOptions,
        policy: Box<dyn MemoryPolicy>,
    ) -> Result<Self> {
        if frames.num_frames() == 0 {
            return Err(Error::invalid("a session needs at least one frame"));
        }
        let [h, w] = frames.frame_hw();
        if h == 0 || w == 0 {
            return Err(Error::invalid("frames are empty"));
        }
        let mut mem_params = model.new_memory.clone();
        mem_params.binarize_mask_from_pts = opts.binarize_mask_from_pts_for_mem_enc;
        Ok(Self {
            model,
            frames,
            opts,
            mem_params,
            policy,
            cache: VecDeque::new(),
            cache_peak: 0,
            encoded_frames: 0,
            maskmem_pos_enc: None,
            obj_ids: Vec::new(),
            objects: Vec::new(),
            calls: Vec::new(),
        })
    }

    /// Number of frames.
    pub fn num_frames(&self) -> usize {
        self.frames.num_frames()
    }

    /// Frame size `[H, W]`.
    pub fn video_hw(&self) -> [usize; 2] {
        self.frames.frame_hw()
    }

    /// Object ids, in output order.
    pub fn obj_ids(&self) -> &[u32] {
        &self.obj_ids
    }

    /// The most frames whose features were held at once (never above the cache bound).
    pub fn feature_cache_peak(&self) -> usize {
        self.cache_peak
    }

    /// How many times a frame went through the image encoder.
    pub fn encoder_runs(&self) -> usize {
        self.encoded_frames
    }

    /// The model.
    pub fn model(&self) -> &Arc<Sam2Base> {
        &self.model
    }

    fn check_frame(&self, frame_idx: usize) -> Result<()> {
        if frame_idx >= self.num_frames() {
            return Err(Error::invalid(format!(
                "frame {frame_idx} out of range (0..{})",
                self.num_frames()
            )));
        }
        Ok(())
    }

    /// Features of a frame, through the LRU cache.
    pub fn features(&mut self, frame_idx: usize) -> Result<Arc<BackboneFeatures>> {
        self.check_frame(frame_idx)?;
        if let Some(pos) = self.cache.iter().position(|(i, _)| *i == frame_idx) {
            let e = self
                .cache
                .remove(pos)
                .ok_or_else(|| Error::invalid("cache"))?;
            let f = e.1.clone();
            self.cache.push_back(e);
            return Ok(f);
        }
        let s = self.model.cfg.image_size;
        let px = self.frames.pixels(frame_idx, s)?;
        let t = Tensor::from_vec(px, (1, 3, s, s), self.model.device())?;
        let f = Arc::new(self.model.forward_image(&t)?);
        self.encoded_frames += 1;
        let cap = self.opts.feature_cache_frames.max(1);
        while self.cache.len() >= cap {
            self.cache.pop_front();
        }
        self.cache.push_back((frame_idx, f.clone()));
        self.cache_peak = self.cache_peak.max(self.cache.len());
        Ok(f)
    }

    fn obj_idx(&mut self, obj_id: u32, create: bool) -> Result<usize> {
        if let Some(i) = self.obj_ids.iter().position(|&o| o == obj_id) {
            return Ok(i);
        }
        if !create {
            return Err(Error::invalid(format!("unknown object id {obj_id}")));
        }
        if self.obj_ids.len() >= crate::limits::MAX_OBJECTS {
            return Err(Error::invalid(format!(
                "more than {} objects (MAX_OBJECTS)",
                crate::limits::MAX_OBJECTS
            )));
        }
        self.obj_ids.push(obj_id);
        self.objects.push(ObjectState::default());
        Ok(self.obj_ids.len() - 1)
    }

    fn maskmem_pos(&mut self) -> Result<Tensor> {
        if let Some(p) = &self.maskmem_pos_enc {
            return Ok(p.clone());
        }
        let e = self.model.cfg.embedding_size();
        let p = self
            .model
            .memory_encoder
            .position_encoding_for(1, e, e, self.model.device())?
            .to_dtype(DType::F32)?;
        self.maskmem_pos_enc = Some(p.clone());
        Ok(p)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_single_frame(
        &mut self,
        obj_idx: usize,
        frame_idx: usize,
        is_init_cond_frame: bool,
        points: Option<(Tensor, Tensor)>,
        mask: Option<Tensor>,
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Option<Tensor>,
    ) -> Result<FrameOutput> {
        let feats = self.features(frame_idx)?;
        let pos = self.maskmem_pos()?;
        let n = self.num_frames();
        let selected = if is_init_cond_frame {
            Default::default()
        } else {
            self.policy
                .select(&self.objects[obj_idx].out, frame_idx, reverse, n, &pos)
        };
        let mut out = self.model.track_step(
            &feats,
            is_init_cond_frame,
            points.as_ref().map(|(a, b)| (a, b)),
            mask.as_ref(),
            &selected,
            run_mem_encoder,
            prev_sam_mask_logits.as_ref(),
            &self.mem_params,
        )?;
        if self.opts.fill_hole_area > 0 {
            // As `_run_single_frame_inference`: on the stored, returned (and
            // traced) logits; the memory encoded inside the step saw them
            // unfilled.
            let m = &out.frame.pred_masks;
            let (_, _, h, w) = m.dims4()?;
            let mut v = m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            crate::misc::fill_holes_in_mask_scores(&mut v, h, w, self.opts.fill_hole_area)?;
            out.frame.pred_masks =
                Tensor::from_vec(v, m.shape(), m.device())?.to_dtype(m.dtype())?;
        }
        let frame = out.frame.clone();
        if self.opts.trace {
            self.calls.push(TrackCall {
                obj_idx,
                frame_idx,
                is_init_cond_frame,
                reverse,
                run_mem_encoder,
                out,
            });
        }
        Ok(frame)
    }

    fn prompt_prologue(&mut self, frame_idx: usize, obj_idx: usize) -> (bool, bool, bool) {
        let st = &self.objects[obj_idx];
        let is_init = !st.frames_tracked.contains_key(&frame_idx);
        let reverse = if is_init {
            false
        } else {
            st.frames_tracked[&frame_idx]
        };
        let is_cond = is_init || self.opts.add_all_frames_to_correct_as_cond;
        (is_init, reverse, is_cond)
    }

    /// Adds a [`Prompt`] (the image predictor's type: clicks and/or a box in
    /// frame pixels) on a frame for an object, as
    /// [`Sam2VideoPredictor::add_points_or_box`]. A video session takes a mask
    /// at frame size through [`Sam2VideoPredictor::add_mask`], not the
    /// prompt's low-resolution `mask_input` logits.
    pub fn add_prompt(
        &mut self,
        frame_idx: usize,
        obj_id: u32,
        prompt: &Prompt,
        clear_old_points: bool,
    ) -> Result<FrameMasks> {
        if prompt.mask_input.is_some() {
            return Err(Error::invalid(
                "a video prompt takes a frame-sized mask (add_mask), not mask_input logits",
            ));
        }
        self.add_points_or_box(
            frame_idx,
            obj_id,
            &prompt.points,
            &prompt.labels,
            prompt.bbox,
            clear_old_points,
        )
    }

    /// Adds clicks (in frame pixels: `x` column, `y` row; labels 1 = object,
    /// 0 = background) and/or a box `[x0, y0, x1, y1]` on a frame for an object
    /// (created on first use). With `clear_old_points` false the clicks are added
    /// to the frame's earlier ones (a correction). Returns the frame's masks.
    pub fn add_points_or_box(
        &mut self,
        frame_idx: usize,
        obj_id: u32,
        points: &[[f32; 2]],
        labels: &[i32],
        bbox: Option<[f32; 4]>,
        clear_old_points: bool,
    ) -> Result<FrameMasks> {
        self.check_frame(frame_idx)?;
        let [h, w] = self.video_hw();
        let s = self.model.cfg.image_size;
        let prompt = Prompt {
            points: points.to_vec(),
            labels: labels.to_vec(),
            bbox,
            mask_input: None,
        };
        crate::sam2_image_predictor::validate_prompt(&prompt, h, w, s / 4)?;
        if points.is_empty() && bbox.is_none() {
            return Err(Error::invalid("give points or a box"));
        }
        if bbox.is_some() && !clear_old_points {
            return Err(Error::invalid(
                "a box must come with clear_old_points (it precedes the clicks)",
            ));
        }
        if !clear_old_points {
            let old = self
                .obj_ids
                .iter()
                .position(|&o| o == obj_id)
                .and_then(|i| self.objects[i].point_inputs.get(&frame_idx))
                .map_or(0, |(_, l)| l.len());
            let limit = crate::limits::MAX_PROMPT_POINTS;
            if old + points.len() > limit {
                return Err(Error::invalid(format!(
                    "{} clicks on slice {frame_idx} for object {obj_id} exceed the limit of {limit} (MAX_PROMPT_POINTS)",
                    old + points.len()
                )));
            }
        }
        let obj_idx = self.obj_idx(obj_id, true)?;
        let mut coords = Vec::new();
        let mut lbl = Vec::new();
        if let Some([x0, y0, x1, y1]) = bbox {
            coords.extend([x0, y0, x1, y1]);
            lbl.extend([2.0, 3.0]);
        }
        for (p, l) in points.iter().zip(labels) {
            coords.extend(p);
            lbl.push(*l as f32);
        }
        // Normalise by the frame size, then scale to the model size (as f32 like torch).
        let coords: Vec<f32> = coords
            .chunks(2)
            .flat_map(|c| [c[0] / w as f32 * s as f32, c[1] / h as f32 * s as f32])
            .collect();
        let (mut all_c, mut all_l) = if clear_old_points {
            (vec![], vec![])
        } else {
            self.objects[obj_idx]
                .point_inputs
                .get(&frame_idx)
                .cloned()
                .unwrap_or_default()
        };
        all_c.extend(coords);
        all_l.extend(lbl);
        let st = &mut self.objects[obj_idx];
        st.point_inputs
            .insert(frame_idx, (all_c.clone(), all_l.clone()));
        st.mask_inputs.remove(&frame_idx);
        let (is_init, reverse, is_cond) = self.prompt_prologue(frame_idx, obj_idx);
        let st = &self.objects[obj_idx];
        let prev = if is_cond {
            st.temp.cond.get(&frame_idx)
        } else {
            st.temp.non_cond.get(&frame_idx)
        }
        .or_else(|| st.out.cond.get(&frame_idx))
        .or_else(|| st.out.non_cond.get(&frame_idx));
        let prev_logits = match prev {
            Some(p) => Some(p.pred_masks.clamp(-32f32, 32f32)?),
            None => None,
        };
        let n = all_l.len();
        let dev = self.model.device().clone();
        let pts = (
            Tensor::from_vec(all_c, (1, n, 2), &dev)?,
            Tensor::from_vec(all_l, (1, n), &dev)?,
        );
        let out = self.run_single_frame(
            obj_idx,
            frame_idx,
            is_init,
            Some(pts),
            None,
            reverse,
            false,
            prev_logits,
        )?;
        let st = &mut self.objects[obj_idx];
        if is_cond {
            &mut st.temp.cond
        } else {
            &mut st.temp.non_cond
        }
        .insert(frame_idx, out);
        self.consolidate(frame_idx, is_cond)
    }

    /// Adds a mask prompt (`[H, W]` at frame size, nonzero = object) on a frame.
    pub fn add_mask(&mut self, frame_idx: usize, obj_id: u32, mask: &[u8]) -> Result<FrameMasks> {
        self.check_frame(frame_idx)?;
        let [h, w] = self.video_hw();
        if mask.len() != h * w {
            return Err(Error::invalid(format!(
                "mask holds {} values, {h}x{w} expected",
                mask.len()
            )));
        }
        let s = self.model.cfg.image_size;
        let dev = self.model.device().clone();
        let m: Vec<f32> = mask.iter().map(|&v| f32::from(u8::from(v != 0))).collect();
        let m = if h != s || w != s {
            let r = transforms::resize_bilinear_aa_f32(&m, 1, h, w, s, s)?;
            r.into_iter()
                .map(|v| f32::from(u8::from(v >= 0.5)))
                .collect()
        } else {
            m
        };
        let mask_t = Tensor::from_vec(m, (1, 1, s, s), &dev)?;
        let obj_idx = self.obj_idx(obj_id, true)?;
        let st = &mut self.objects[obj_idx];
        st.mask_inputs.insert(frame_idx, mask_t.clone());
        st.point_inputs.remove(&frame_idx);
        let (is_init, reverse, is_cond) = self.prompt_prologue(frame_idx, obj_idx);
        let out = self.run_single_frame(
            obj_idx,
            frame_idx,
            is_init,
            None,
            Some(mask_t),
            reverse,
            false,
            None,
        )?;
        let st = &mut self.objects[obj_idx];
        if is_cond {
            &mut st.temp.cond
        } else {
            &mut st.temp.non_cond
        }
        .insert(frame_idx, out);
        self.consolidate(frame_idx, is_cond)
    }

    /// `_consolidate_temp_output_across_obj` (low-res; upsampled on demand).
    fn consolidate(&self, frame_idx: usize, is_cond: bool) -> Result<FrameMasks> {
        self.collect_masks(frame_idx, |st| {
            let temp = if is_cond {
                &st.temp.cond
            } else {
                &st.temp.non_cond
            };
            temp.get(&frame_idx)
                .or_else(|| st.out.cond.get(&frame_idx))
                .or_else(|| st.out.non_cond.get(&frame_idx))
        })
    }

    /// Every object's low-res logits on a frame, from the output `pick` finds
    /// (−1024 where it finds none).
    fn collect_masks<'a>(
        &'a self,
        frame_idx: usize,
        pick: impl Fn(&'a ObjectState) -> Option<&'a FrameOutput>,
    ) -> Result<FrameMasks> {
        let low = self.model.cfg.image_size / 4;
        let dev = self.model.device();
        let mut masks = Vec::with_capacity(self.objects.len());
        for st in &self.objects {
            masks.push(match pick(st) {
                Some(o) => o.pred_masks.to_dtype(DType::F32)?,
                None => Tensor::full(NO_OBJ_SCORE, (1, 1, low, low), dev)?,
            });
        }
        let low_res = if masks.is_empty() {
            Tensor::zeros((0, 1, low, low), DType::F32, dev)?
        } else {
            Tensor::cat(&masks, 0)?
        };
        Ok(FrameMasks {
            frame_idx,
            obj_ids: self.obj_ids.clone(),
            low_res,
            video_hw: self.video_hw(),
            non_overlap: self.opts.non_overlap_masks,
        })
    }

    /// Removes the prompts of an object on a frame (`clear_all_prompts_in_frame`).
    pub fn clear_prompts(&mut self, frame_idx: usize, obj_id: u32) -> Result<FrameMasks> {
        self.check_frame(frame_idx)?;
        let obj_idx = self.obj_idx(obj_id, false)?;
        let st = &mut self.objects[obj_idx];
        st.point_inputs.remove(&frame_idx);
        st.mask_inputs.remove(&frame_idx);
        st.temp.cond.remove(&frame_idx);
        st.temp.non_cond.remove(&frame_idx);
        if let Some(o) = st.out.cond.remove(&frame_idx) {
            st.out.non_cond.insert(frame_idx, o);
            st.frames_tracked.remove(&frame_idx);
        }
        let is_cond = self
            .objects
            .iter()
            .any(|s| s.temp.cond.contains_key(&frame_idx));
        self.consolidate(frame_idx, is_cond)
    }

    /// Removes an object and everything about it.
    pub fn remove_object(&mut self, obj_id: u32) -> Result<()> {
        let i = self.obj_idx(obj_id, false)?;
        self.obj_ids.remove(i);
        self.objects.remove(i);
        Ok(())
    }

    /// Forgets all objects, prompts and results (cached frame features are kept).
    pub fn reset(&mut self) {
        self.obj_ids.clear();
        self.objects.clear();
        self.calls.clear();
    }

    /// `propagate_in_video_preflight`: moves prompt outputs into the memory bank,
    /// encoding their memories from the binarised prompt output.
    fn preflight(&mut self) -> Result<()> {
        if self.objects.is_empty() {
            return Err(Error::invalid(
                "no prompts: add points, a box or a mask first",
            ));
        }
        let s = self.model.cfg.image_size;
        for obj_idx in 0..self.objects.len() {
            for is_cond in [false, true] {
                let temp = std::mem::take(if is_cond {
                    &mut self.objects[obj_idx].temp.cond
                } else {
                    &mut self.objects[obj_idx].temp.non_cond
                });
                for (frame_idx, mut out) in temp {
                    if out.maskmem_features.is_none() {
                        let high = out
                            .pred_masks
                            .to_dtype(DType::F32)?
                            .upsample_bilinear2d(s, s, false)?;
                        let feats = self.features(frame_idx)?;
                        let (f, _) = self.model.encode_new_memory(
                            &feats.vision_feats,
                            &high,
                            &out.object_score_logits,
                            true,
                            &self.mem_params,
                        )?;
                        out.maskmem_features = Some(f);
                    }
                    let st = &mut self.objects[obj_idx];
                    if is_cond {
                        &mut st.out.cond
                    } else {
                        &mut st.out.non_cond
                    }
                    .insert(frame_idx, out);
                }
            }
            let st = &mut self.objects[obj_idx];
            if st.out.cond.is_empty() {
                return Err(Error::invalid(format!(
                    "object {} has no prompt on any frame",
                    self.obj_ids[obj_idx]
                )));
            }
            let keys: Vec<usize> = st.out.cond.keys().copied().collect();
            for k in keys {
                st.out.non_cond.remove(&k);
            }
        }
        Ok(())
    }

    /// The frames one propagation pass visits.
    fn order(&self, start: usize, reverse: bool, max_frames: Option<usize>) -> Vec<usize> {
        let n = self.num_frames();
        let m = max_frames.unwrap_or(n);
        if reverse {
            if start == 0 {
                return vec![];
            }
            let end = start.saturating_sub(m);
            (end..=start).rev().collect()
        } else {
            let end = (start + m).min(n - 1);
            (start..=end).collect()
        }
    }

    /// Propagates the prompts through the frames (`propagate_in_video`): from
    /// `start` (default: the first prompted frame) in `direction`, over at most
    /// `max_frames` frames beyond the start per direction. `on_frame` receives
    /// each frame's masks as they are done, with the progress so far; it returns
    /// `false` to cancel, which returns [`Error::Cancelled`] and leaves the
    /// session valid (frames done so far are kept).
    pub fn propagate(
        &mut self,
        start: Option<usize>,
        direction: Direction,
        max_frames: Option<usize>,
        mut on_frame: impl FnMut(&FrameMasks, Progress) -> bool,
    ) -> Result<()> {
        self.preflight()?;
        let start = match start {
            Some(s) => {
                self.check_frame(s)?;
                s
            }
            None => self
                .objects
                .iter()
                .flat_map(|o| o.out.cond.keys().copied())
                .min()
                .ok_or_else(|| Error::invalid("no conditioning frame"))?,
        };
        let passes: Vec<bool> = match direction {
            Direction::Forward => vec![false],
            Direction::Backward => vec![true],
            Direction::Both => vec![false, true],
        };
        let orders: Vec<(bool, Vec<usize>)> = passes
            .iter()
            .map(|&r| (r, self.order(start, r, max_frames)))
            .collect();
        let total: usize = orders.iter().map(|(_, o)| o.len()).sum();
        let mut done = 0;
        for (reverse, order) in orders {
            if reverse {
                // Prompt outputs added between passes are none; re-run the preflight
                // only for bookkeeping symmetry with the official two calls.
                self.preflight()?;
            }
            for frame_idx in order {
                let low = self.model.cfg.image_size / 4;
                let mut masks = Vec::with_capacity(self.objects.len());
                for obj_idx in 0..self.objects.len() {
                    let pm = if let Some(o) = self.objects[obj_idx].out.cond.get(&frame_idx) {
                        o.pred_masks.clone()
                    } else {
                        let out = self.run_single_frame(
                            obj_idx, frame_idx, false, None, None, reverse, true, None,
                        )?;
                        let pm = out.pred_masks.clone();
                        self.objects[obj_idx].out.non_cond.insert(frame_idx, out);
                        pm
                    };
                    self.objects[obj_idx]
                        .frames_tracked
                        .insert(frame_idx, reverse);
                    masks.push(pm.to_dtype(DType::F32)?.reshape((1, 1, low, low))?);
                }
                done += 1;
                let fm = FrameMasks {
                    frame_idx,
                    obj_ids: self.obj_ids.clone(),
                    low_res: Tensor::cat(&masks, 0)?,
                    video_hw: self.video_hw(),
                    non_overlap: self.opts.non_overlap_masks,
                };
                if !on_frame(&fm, Progress { done, total }) {
                    return Err(Error::Cancelled);
                }
            }
        }
        Ok(())
    }

    /// The latest low-res logits of every object on a frame (prompt or
    /// tracking output; −1024 where an object has none).
    pub fn frame_masks(&self, frame_idx: usize) -> Result<FrameMasks> {
        self.check_frame(frame_idx)?;
        // The newest first: an unpropagated prompt or correction, then the bank.
        self.collect_masks(frame_idx, |st| {
            st.temp
                .cond
                .get(&frame_idx)
                .or_else(|| st.temp.non_cond.get(&frame_idx))
                .or_else(|| st.out.cond.get(&frame_idx))
                .or_else(|| st.out.non_cond.get(&frame_idx))
        })
    }

    /// Device of the model.
    pub fn device(&self) -> &Device {
        self.model.device()
    }
}

impl Sam2VideoPredictor {
    /// The memory bank of object index `obj_idx` (in [`Self::obj_ids`] order).
    pub fn object_memory(&self, obj_idx: usize) -> Option<&ObjectMemory> {
        self.objects.get(obj_idx).map(|o| &o.out)
    }
}
