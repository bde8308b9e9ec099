//! [`VolumeSession`]: a medical volume, its slices, the prompts given so far
//! and the model's session over them.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::medical::slicing::{Axis, LabelAssembler};
use crate::medical::Volume;
use crate::modeling::sam2_base::Sam2Base;
use crate::sam2_video_predictor::{
    Direction, Progress, Prompt, Sam2VideoPredictor, SessionOptions,
};

use super::grid::VolumeGrid;
use super::prompts::{check_clicks, object_mut, ObjectPrompts, SlicePrompt};
use super::segmentation::{label_volume_on, segment, SegmentOptions, Segmentation};
use super::slices::{Intensity, Slices};
use super::SliceMasks;

/// A segmentation session over one volume: its grey slices along an axis,
/// the objects prompted on them (recorded, see [`VolumeSession::prompts`])
/// and the model's video session.
///
/// Prompts are given per object and slice in slice pixels (`add_box`,
/// `add_points`, `add_mask`) or in physical LPS millimetres
/// (`add_box_physical`, `add_point_physical`); each is run on its slice at
/// once (the returned masks are a preview). [`VolumeSession::segment`] then
/// replays every recorded prompt in a fresh session and propagates them
/// through the volume in the chosen mode, and [`VolumeSession::labels`] gives
/// the label volume in the input's grid and geometry. The interactive calls
/// ([`VolumeSession::propagate`], [`VolumeSession::current_labels`]) work on
/// the session as it stands.
pub struct VolumeSession {
    predictor: Sam2VideoPredictor,
    grid: VolumeGrid,
    prompts: Vec<ObjectPrompts>,
}

impl VolumeSession {
    /// A session over `volume` mapped to grey levels by `intensity` and cut
    /// along `axis`. Slice images are encoded lazily (when first prompted or
    /// propagated; `options.feature_cache_frames` bounds the features kept).
    pub fn new(
        volume: &Volume,
        intensity: &Intensity,
        axis: Axis,
        model: Arc<Sam2Base>,
        options: SessionOptions,
    ) -> Result<VolumeSession> {
        let slices = Slices::from_volume(volume, axis, intensity)?;
        VolumeSession::from_slices(VolumeGrid::of(volume, axis), slices, model, options)
    }

    /// A session over slices already made from a volume on `grid`.
    pub fn from_slices(
        grid: VolumeGrid,
        slices: Slices,
        model: Arc<Sam2Base>,
        options: SessionOptions,
    ) -> Result<VolumeSession> {
        if slices.axis != grid.axis
            || slices.len() != grid.num_slices()
            || (slices.width, slices.height) != grid.slice_size()
        {
            return Err(Error::invalid(format!(
                "{} slices of {}x{} along axis {} do not cut a grid of {:?} along axis {}",
                slices.len(),
                slices.width,
                slices.height,
                slices.axis as usize,
                grid.dims,
                grid.axis as usize
            )));
        }
        Ok(VolumeSession {
            predictor: slices.into_predictor(model, options)?,
            grid,
            prompts: Vec::new(),
        })
    }

    /// The volume's grid and slicing axis (slice count, slice size, prompt
    /// coordinate mapping).
    pub fn grid(&self) -> &VolumeGrid {
        &self.grid
    }

    /// Number of slices.
    pub fn num_slices(&self) -> usize {
        self.grid.num_slices()
    }

    /// Slice size `(width, height)`.
    pub fn slice_size(&self) -> (usize, usize) {
        self.grid.slice_size()
    }

    /// The prompts given so far, per object in the order objects were first
    /// prompted, each object's slices in order.
    pub fn prompts(&self) -> &[ObjectPrompts] {
        &self.prompts
    }

    /// The model's session (read only: feature cache, objects).
    pub fn predictor(&self) -> &Sam2VideoPredictor {
        &self.predictor
    }

    fn check_object(obj_id: u32) -> Result<()> {
        if obj_id == 0 {
            return Err(Error::invalid(
                "object ids start at 1 (0 is the background)",
            ));
        }
        Ok(())
    }

    fn check_slice(&self, slice: usize) -> Result<()> {
        let n = self.num_slices();
        if slice >= n {
            return Err(Error::invalid(format!(
                "slice {slice} out of range (0..{n})"
            )));
        }
        Ok(())
    }

    fn record(&mut self, obj_id: u32, slice: usize, edit: impl FnOnce(&mut SlicePrompt)) {
        edit(object_mut(&mut self.prompts, obj_id).slice_mut(slice));
    }

    /// A box `[x0, y0, x1, y1]` (slice pixels) for an object on a slice,
    /// replacing the object's earlier prompts there; the object is created on
    /// first use. Returns the slice's masks.
    pub fn add_box(&mut self, slice: usize, obj_id: u32, bbox: [f32; 4]) -> Result<SliceMasks> {
        Self::check_object(obj_id)?;
        self.check_slice(slice)?;
        let fm = self
            .predictor
            .add_points_or_box(slice, obj_id, &[], &[], Some(bbox), true)?;
        self.record(obj_id, slice, |sp| *sp = SlicePrompt::bbox(slice, bbox));
        Ok(fm)
    }

    /// Clicks `[x, y]` (slice pixels; labels 1 object, 0 background) for an
    /// object on a slice. With `clear_old` they replace the object's earlier
    /// prompts on that slice; without, they are added to its box and clicks
    /// there (a correction). Returns the slice's masks.
    pub fn add_points(
        &mut self,
        slice: usize,
        obj_id: u32,
        points: &[[f32; 2]],
        labels: &[i32],
        clear_old: bool,
    ) -> Result<SliceMasks> {
        Self::check_object(obj_id)?;
        self.check_slice(slice)?;
        check_clicks(points, labels)?;
        let fm = self
            .predictor
            .add_points_or_box(slice, obj_id, points, labels, None, clear_old)?;
        self.record(obj_id, slice, |sp| {
            if clear_old || sp.mask.is_some() {
                *sp = SlicePrompt::points(slice, points, labels);
            } else {
                sp.points.extend_from_slice(points);
                sp.labels.extend_from_slice(labels);
            }
        });
        Ok(fm)
    }

    /// A [`Prompt`] (clicks and/or a box in slice pixels, the type the image
    /// predictor takes) for an object on a slice, replacing its earlier
    /// prompts there. Returns the slice's masks.
    pub fn add_prompt(&mut self, slice: usize, obj_id: u32, prompt: &Prompt) -> Result<SliceMasks> {
        Self::check_object(obj_id)?;
        self.check_slice(slice)?;
        let sp = SlicePrompt::from_prompt(slice, prompt)?;
        check_clicks(&sp.points, &sp.labels)?;
        let fm = self.predictor.add_prompt(slice, obj_id, prompt, true)?;
        self.record(obj_id, slice, |old| *old = sp);
        Ok(fm)
    }

    /// A mask (slice-sized, row-major, non-zero = object) for an object on a
    /// slice, replacing its earlier prompts there. Returns the slice's masks.
    pub fn add_mask(&mut self, slice: usize, obj_id: u32, mask: &[u8]) -> Result<SliceMasks> {
        Self::check_object(obj_id)?;
        self.check_slice(slice)?;
        let fm = self.predictor.add_mask(slice, obj_id, mask)?;
        self.record(obj_id, slice, |sp| {
            *sp = SlicePrompt::mask(slice, mask.to_vec())
        });
        Ok(fm)
    }

    /// A box from two opposite physical LPS corners (mm), on the slice nearest
    /// their middle (see [`VolumeGrid::physical_box`]). Returns the slice and
    /// its masks.
    pub fn add_box_physical(
        &mut self,
        obj_id: u32,
        corner0: [f64; 3],
        corner1: [f64; 3],
    ) -> Result<(usize, SliceMasks)> {
        let (z, b) = self.grid.physical_box(corner0, corner1)?;
        Ok((z, self.add_box(z, obj_id, b)?))
    }

    /// A click at a physical LPS point (mm) on the nearest slice, added to the
    /// object's prompts there (label 1 object, 0 background). Returns the
    /// slice and its masks.
    pub fn add_point_physical(
        &mut self,
        obj_id: u32,
        point: [f64; 3],
        label: i32,
    ) -> Result<(usize, SliceMasks)> {
        let (z, p) = self.grid.physical_point(point)?;
        Ok((z, self.add_points(z, obj_id, &[p], &[label], false)?))
    }

    /// Replaces every prompt by `prompts` without running any (they run in
    /// [`VolumeSession::segment`]); the model's session is reset.
    pub fn set_prompts(&mut self, prompts: Vec<ObjectPrompts>) -> Result<()> {
        let n = self.num_slices();
        let (w, h) = self.slice_size();
        for o in &prompts {
            Self::check_object(o.obj_id)?;
            for sp in &o.slices {
                if sp.slice >= n {
                    return Err(Error::volume(format!(
                        "object {}: slice {} is not one of 0..{} along axis {}",
                        o.obj_id,
                        sp.slice,
                        n.saturating_sub(1),
                        self.grid.axis as usize
                    )));
                }
                check_clicks(&sp.points, &sp.labels)?;
                if sp.mask.as_ref().is_some_and(|m| m.len() != w * h) {
                    return Err(Error::invalid(format!(
                        "object {} slice {}: mask of {} values for {w}x{h} slices",
                        o.obj_id,
                        sp.slice,
                        sp.mask.as_ref().map_or(0, Vec::len)
                    )));
                }
            }
        }
        self.predictor.reset();
        self.prompts = prompts;
        Ok(())
    }

    /// Removes an object's prompts on one slice (its other slices are kept).
    /// Returns the slice's masks.
    pub fn clear_prompts(&mut self, slice: usize, obj_id: u32) -> Result<SliceMasks> {
        self.check_slice(slice)?;
        let fm = self.predictor.clear_prompts(slice, obj_id)?;
        if let Some(o) = self.prompts.iter_mut().find(|o| o.obj_id == obj_id) {
            o.slices.retain(|s| s.slice != slice);
        }
        Ok(fm)
    }

    /// Removes an object with all its prompts and masks.
    pub fn remove_object(&mut self, obj_id: u32) -> Result<()> {
        self.predictor.remove_object(obj_id)?;
        self.prompts.retain(|o| o.obj_id != obj_id);
        Ok(())
    }

    /// Forgets every object, prompt and mask (cached slice features are kept).
    pub fn reset(&mut self) {
        self.predictor.reset();
        self.prompts.clear();
    }

    /// Propagates the session as it stands (interactive use): from `start`
    /// (default: the first prompted slice) in `direction`, over at most
    /// `max_slices` slices beyond the start per direction; `on_slice` sees
    /// each slice's masks and returns `false` to cancel.
    pub fn propagate(
        &mut self,
        start: Option<usize>,
        direction: Direction,
        max_slices: Option<usize>,
        on_slice: impl FnMut(&SliceMasks, Progress) -> bool,
    ) -> Result<()> {
        self.predictor
            .propagate(start, direction, max_slices, on_slice)
    }

    /// The latest masks of every object on a slice (prompt or propagation
    /// output; empty where an object has none).
    pub fn slice_masks(&self, slice: usize) -> Result<SliceMasks> {
        self.check_slice(slice)?;
        self.predictor.frame_masks(slice)
    }

    /// The label map of one slice as the session stands: per pixel
    /// (row-major) the id of the object covering it or 0; where objects
    /// overlap, the one created last wins.
    pub fn slice_labels(&self, slice: usize) -> Result<Vec<u32>> {
        let (w, h) = self.slice_size();
        let mut out = vec![0u32; w * h];
        self.check_slice(slice)?;
        if self.predictor.obj_ids().is_empty() {
            return Ok(out);
        }
        let fm = self.predictor.frame_masks(slice)?;
        let masks = fm.binary_masks()?;
        for (&id, m) in fm.obj_ids.iter().zip(&masks) {
            for (o, &v) in out.iter_mut().zip(m) {
                if v != 0 {
                    *o = id;
                }
            }
        }
        Ok(out)
    }

    /// The label volume of the session as it stands (each slice's latest
    /// masks; slices no propagation reached are background), in the input's
    /// grid and geometry; overlaps as [`VolumeSession::slice_labels`].
    pub fn current_labels(&self) -> Result<Volume> {
        let g = &self.grid;
        let mut asm = LabelAssembler::on_grid(g.dims, g.geometry, g.axis);
        if !self.predictor.obj_ids().is_empty() {
            for z in 0..self.num_slices() {
                let fm = self.predictor.frame_masks(z)?;
                for (&id, m) in fm.obj_ids.iter().zip(&fm.binary_masks()?) {
                    asm.add_mask_u8(z, id, m)?;
                }
            }
        }
        Ok(asm.finish()?)
    }

    /// Segments the volume from every recorded prompt: the model's session is
    /// reset, prompted again (objects in increasing id order) and propagated in `opts.propagation`'s passes
    /// (then the largest component is kept if asked). `on_progress` sees the
    /// slice visits over all passes and returns `false` to cancel
    /// ([`Error::Cancelled`]). Afterwards the model's session holds the last
    /// pass's state.
    pub fn segment(
        &mut self,
        opts: &SegmentOptions,
        on_progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Segmentation> {
        let mut objects: Vec<ObjectPrompts> = self
            .prompts
            .iter()
            .filter(|o| !o.slices.is_empty())
            .cloned()
            .collect();
        // As the command line: objects in id order (a higher id wins overlaps).
        objects.sort_by_key(|o| o.obj_id);
        segment(&mut self.predictor, &objects, opts, on_progress)
    }

    /// The label volume of a segmentation, in the input's grid and geometry
    /// (object id = label value; a later object wins where masks overlap).
    pub fn labels(&self, seg: &Segmentation) -> Result<Volume> {
        label_volume_on(&self.grid, seg)
    }
}
