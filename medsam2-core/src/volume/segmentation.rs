//! Propagating prompts through a volume's slices (the propagation modes of
//! SAM 2, MedSAM2 and Medical-SAM2), the per-object masks that result, the
//! largest 3-D component clean-up and the label volume.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::medical::slicing::{Axis, LabelAssembler};
use crate::medical::Volume;
use crate::sam2_video_predictor::{Direction, Progress, Sam2VideoPredictor};

use super::grid::VolumeGrid;
use super::prompts::ObjectPrompts;

/// How prompts are propagated through the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    /// One session: forward from the first prompted slice to the end, then
    /// backward from it to the start (the backward pass sees the forward
    /// pass's memories).
    Joint,
    /// The MedSAM2 reference: forward from the first prompted slice, then the
    /// session is reset, prompted again, and propagated backward from the
    /// last prompted slice; the two results are united.
    #[default]
    Separate,
    /// Forward only, from the first prompted slice (Medical-SAM2's evaluation).
    Forward,
}

impl Propagation {
    /// Parses `joint` (or `both`), `separate` or `forward`.
    pub fn parse(s: &str) -> Result<Propagation> {
        match s.trim().to_ascii_lowercase().as_str() {
            "joint" | "both" => Ok(Propagation::Joint),
            "separate" => Ok(Propagation::Separate),
            "forward" => Ok(Propagation::Forward),
            _ => Err(Error::volume(format!(
                "bad propagation `{s}`: joint, separate or forward"
            ))),
        }
    }
}

/// Settings of [`segment`] and [`super::VolumeSession::segment`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentOptions {
    /// The propagation mode.
    pub propagation: Propagation,
    /// Keep each object's largest 26-connected 3-D component (the MedSAM2
    /// reference post-processing).
    pub largest_component: bool,
    /// Masks are `logits > threshold` (0 as SAM 2; Medical-SAM2 scores 0.5).
    pub threshold: f32,
}

impl Default for SegmentOptions {
    /// [`Propagation::Separate`], no clean-up, threshold 0 (`segment_volume`'s defaults).
    fn default() -> Self {
        SegmentOptions {
            propagation: Propagation::Separate,
            largest_component: false,
            threshold: 0.0,
        }
    }
}

/// Masks of a segmented volume: per object, per slice.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Object ids.
    pub obj_ids: Vec<u32>,
    /// `masks[o][z]`: binary mask (1 = object) of object `o` on slice `z`,
    /// `None` where the slice was not reached.
    pub masks: Vec<Vec<Option<Vec<u8>>>>,
    /// Columns per slice.
    pub width: usize,
    /// Rows per slice.
    pub height: usize,
    /// Seconds spent on the prompts (including encoding the prompted slices).
    pub prompt_seconds: f64,
    /// Seconds spent propagating.
    pub propagation_seconds: f64,
    /// Slice visits made by propagation (a slice visited by two passes counts twice).
    pub visits: usize,
}

impl Segmentation {
    /// An empty segmentation (no slice reached) of `obj_ids` on `num_slices`
    /// slices of `width` x `height` pixels.
    pub fn empty(obj_ids: Vec<u32>, num_slices: usize, width: usize, height: usize) -> Self {
        Segmentation {
            masks: vec![vec![None; num_slices]; obj_ids.len()],
            obj_ids,
            width,
            height,
            prompt_seconds: 0.0,
            propagation_seconds: 0.0,
            visits: 0,
        }
    }

    /// Number of slices.
    pub fn num_slices(&self) -> usize {
        self.masks.first().map_or(0, Vec::len)
    }

    /// Total seconds (prompts and propagation).
    pub fn seconds(&self) -> f64 {
        self.prompt_seconds + self.propagation_seconds
    }

    /// Unites `mask` into object `obj`'s mask on slice `slice`.
    pub fn merge(&mut self, obj: usize, slice: usize, mask: Vec<u8>) {
        match &mut self.masks[obj][slice] {
            Some(m) => m.iter_mut().zip(&mask).for_each(|(a, &b)| *a |= b),
            slot @ None => *slot = Some(mask),
        }
    }

    /// Object `o`'s mask as a voxel mask in volume order for a grid of `dims`
    /// cut along `axis`.
    pub fn object_voxels(&self, o: usize, dims: [usize; 3], axis: Axis) -> Vec<bool> {
        let mut out = vec![false; dims.iter().product()];
        let (c, r) = axis.in_plane();
        for (z, m) in self.masks[o].iter().enumerate() {
            let Some(m) = m else { continue };
            for (p, _) in m.iter().enumerate().filter(|(_, &v)| v != 0) {
                let mut idx = [0usize; 3];
                idx[axis as usize] = z;
                idx[c] = p % self.width;
                idx[r] = p / self.width;
                out[idx[0] + dims[0] * (idx[1] + dims[1] * idx[2])] = true;
            }
        }
        out
    }

    /// Keeps only the largest 26-connected 3-D component of every object (the
    /// MedSAM2 reference post-processing). Fails only for a grid of more
    /// than 2^32 voxels.
    pub fn keep_largest_component(&mut self) -> Result<()> {
        let n = self.num_slices();
        let (w, h) = (self.width, self.height);
        for o in 0..self.masks.len() {
            // Treat the slices as a (w, h, n) grid.
            let dims = [w, h, n];
            let mut on = vec![false; w * h * n];
            for (z, m) in self.masks[o].iter().enumerate() {
                if let Some(m) = m {
                    for (p, &v) in m.iter().enumerate() {
                        on[z * w * h + p] = v != 0;
                    }
                }
            }
            let keep = largest_component(&on, dims)?;
            for (z, m) in self.masks[o].iter_mut().enumerate() {
                if let Some(m) = m {
                    for (p, v) in m.iter_mut().enumerate() {
                        *v = u8::from(keep[z * w * h + p]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The largest 26-connected component of a 3-D mask (`dims` `[nx, ny, nz]`,
/// x fastest; [`crate::misc::connected_components`]); the first found wins
/// ties.
pub fn largest_component(mask: &[bool], dims: [usize; 3]) -> Result<Vec<bool>> {
    let comp = crate::misc::connected_components(mask, dims)?;
    // The first of the largest: `max_by_key` keeps the last, so compare
    // (size, reversed label).
    let best = comp
        .sizes
        .iter()
        .enumerate()
        .max_by_key(|&(l, &s)| (s, core::cmp::Reverse(l)))
        .map(|(l, _)| l as u32 + 1);
    Ok(comp.labels.iter().map(|&c| Some(c) == best).collect())
}

/// Gives every prompt of `objects` to `session` (in order; a slice with a mask
/// takes the mask, else its box and clicks).
pub fn add_prompts(session: &mut Sam2VideoPredictor, objects: &[ObjectPrompts]) -> Result<()> {
    for o in objects {
        for sp in &o.slices {
            let r = match (&sp.mask, sp.prompt()) {
                (Some(m), _) => session.add_mask(sp.slice, o.obj_id, m),
                (None, Some(p)) => session.add_prompt(sp.slice, o.obj_id, &p, true),
                (None, None) => Err(Error::invalid("empty prompt")),
            };
            r.map_err(|e| Error::volume(format!("object {} slice {}: {e}", o.obj_id, sp.slice)))?;
        }
    }
    Ok(())
}

/// Slices one pass visits (as the session's propagation orders them).
fn pass_len(n: usize, start: usize, reverse: bool) -> usize {
    if reverse {
        if start == 0 {
            0
        } else {
            start + 1
        }
    } else {
        n - start
    }
}

/// Prompts `objects` in `session` (which is reset first) and propagates them
/// through all slices as `opts` says; `on_progress` sees the slice visits
/// done and to do over all passes and returns `false` to cancel (then the
/// result is [`Error::Cancelled`]). The one implementation behind
/// [`super::VolumeSession::segment`], the command line and the C ABI.
pub fn segment(
    session: &mut Sam2VideoPredictor,
    objects: &[ObjectPrompts],
    opts: &SegmentOptions,
    on_progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Segmentation> {
    if objects.is_empty() || objects.iter().any(|o| o.slices.is_empty()) {
        return Err(Error::volume(
            "no prompt: add a box, clicks or a mask first",
        ));
    }
    let n = session.num_frames();
    let [h, w] = session.video_hw();
    let first = objects
        .iter()
        .filter_map(|o| o.first_slice())
        .min()
        .unwrap_or(0);
    let last = objects
        .iter()
        .flat_map(|o| o.slices.iter().map(|s| s.slice))
        .max()
        .unwrap_or(0);
    let passes: Vec<(usize, Direction, bool)> = match opts.propagation {
        Propagation::Joint => vec![(first, Direction::Both, false)],
        Propagation::Forward => vec![(first, Direction::Forward, false)],
        Propagation::Separate => vec![
            (first, Direction::Forward, false),
            (last, Direction::Backward, true),
        ],
    };
    let total: usize = passes
        .iter()
        .map(|&(s, d, _)| match d {
            Direction::Forward => pass_len(n, s, false),
            Direction::Backward => pass_len(n, s, true),
            Direction::Both => pass_len(n, s, false) + pass_len(n, s, true),
        })
        .sum();
    let ids: Vec<u32> = objects.iter().map(|o| o.obj_id).collect();
    let mut seg = Segmentation::empty(ids.clone(), n, w, h);
    let mut offset = 0;
    for (pi, (start, dir, reset)) in passes.into_iter().enumerate() {
        if reset || pi == 0 {
            session.reset();
            let t = Instant::now();
            add_prompts(session, objects)?;
            seg.prompt_seconds += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        let mut err: Option<Error> = None;
        let mut done_here = 0;
        session
            .propagate(Some(start), dir, None, |fm, p| {
                done_here = p.done;
                match fm.binary_masks_above(opts.threshold) {
                    Ok(ms) => {
                        for (i, m) in ms.into_iter().enumerate() {
                            if let Some(o) = ids.iter().position(|&id| id == fm.obj_ids[i]) {
                                seg.merge(o, fm.frame_idx, m);
                            }
                        }
                    }
                    Err(e) => {
                        err = Some(e);
                        return false;
                    }
                }
                on_progress(Progress {
                    done: offset + p.done,
                    total: total.max(offset + p.total),
                })
            })
            .map_err(|e| err.take().unwrap_or(e))?;
        seg.propagation_seconds += t.elapsed().as_secs_f64();
        offset += done_here;
        seg.visits += done_here;
    }
    if opts.largest_component {
        seg.keep_largest_component()?;
    }
    Ok(seg)
}

/// The label volume of a segmentation on `grid` (object id = label value; a
/// later object wins where masks overlap), in the smallest of `u8`, `u16`,
/// `u32` that holds the labels.
pub fn label_volume_on(grid: &VolumeGrid, seg: &Segmentation) -> Result<Volume> {
    let mut asm = LabelAssembler::on_grid(grid.dims, grid.geometry, grid.axis);
    for (o, &id) in seg.obj_ids.iter().enumerate() {
        for (z, m) in seg.masks[o].iter().enumerate() {
            if let Some(m) = m {
                asm.add_mask_u8(z, id, m)?;
            }
        }
    }
    Ok(asm.finish()?)
}

/// The label volume of a segmentation, in `reference`'s grid and geometry
/// (see [`label_volume_on`]).
pub fn label_volume(reference: &Volume, axis: Axis, seg: &Segmentation) -> Result<Volume> {
    label_volume_on(&VolumeGrid::of(reference, axis), seg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_component_is_26_connected() {
        let mut on = vec![false; 27 * 2];
        on[0] = true;
        on[13] = true; // diagonal neighbour of 0: (1, 1, 1)
        on[26] = true;
        on[53] = true;
        let keep = largest_component(&on, [3, 3, 6]).unwrap();
        assert_eq!(keep.iter().filter(|&&b| b).count(), 3);
        assert!(!keep[53]);
        assert_eq!(Propagation::parse(" Both ").unwrap(), Propagation::Joint);
        assert_eq!(
            Propagation::parse("up").unwrap_err().to_string(),
            "bad propagation `up`: joint, separate or forward"
        );
    }

    #[test]
    fn segmentation_cleans_up_and_maps_to_voxels() {
        // Two objects on 2 slices of 4x2; object 0 has two blobs.
        let mut s = Segmentation::empty(vec![4, 9], 2, 4, 2);
        s.merge(0, 0, vec![1, 1, 0, 0, 0, 0, 0, 0]);
        s.merge(0, 1, vec![0, 0, 0, 0, 0, 0, 0, 1]);
        s.merge(0, 0, vec![0, 0, 0, 0, 1, 0, 0, 0]);
        s.merge(1, 1, vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            s.masks[0][0].as_deref(),
            Some(&[1, 1, 0, 0, 1, 0, 0, 0][..])
        );
        s.keep_largest_component().unwrap();
        assert_eq!(s.masks[0][1].as_deref(), Some(&[0u8; 8][..]));
        assert_eq!(s.masks[1][0], None);
        assert_eq!(s.masks[1][1].as_deref().map(|m| m[0]), Some(1));
        // Axis J: slice z is j, pixel (x, y) is (i, k).
        let v = s.object_voxels(0, [4, 2, 2], Axis::J);
        let on: Vec<usize> = (0..16).filter(|&i| v[i]).collect();
        assert_eq!(on, vec![0, 1, 8]);
    }
}
