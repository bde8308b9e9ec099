//! Typed prompts of a volume: per object, per slice, a box and/or clicks or a
//! mask; and the mask helpers that turn a mask into a prompt (its box, its
//! centre).

use crate::error::{Error, Result};
use crate::limits::MAX_PROMPT_POINTS;
use crate::medical::metrics;
use crate::sam2_image_predictor::Prompt;

/// The prompt of one object on one slice: a box and/or clicks, or a mask.
#[derive(Clone, Debug, PartialEq)]
pub struct SlicePrompt {
    /// The slice.
    pub slice: usize,
    /// Box `[x0, y0, x1, y1]` in slice pixels.
    pub bbox: Option<[f32; 4]>,
    /// Clicks `[x, y]` in slice pixels.
    pub points: Vec<[f32; 2]>,
    /// Click labels: 1 object, 0 background.
    pub labels: Vec<i32>,
    /// Mask prompt (slice-sized, non-zero = object); excludes box and clicks.
    pub mask: Option<Vec<u8>>,
}

impl SlicePrompt {
    /// An empty prompt on `slice`.
    pub fn on(slice: usize) -> Self {
        SlicePrompt {
            slice,
            bbox: None,
            points: Vec::new(),
            labels: Vec::new(),
            mask: None,
        }
    }

    /// A box on `slice`.
    pub fn bbox(slice: usize, bbox: [f32; 4]) -> Self {
        SlicePrompt {
            bbox: Some(bbox),
            ..SlicePrompt::on(slice)
        }
    }

    /// Clicks (labels 1 object, 0 background) on `slice`.
    pub fn points(slice: usize, points: &[[f32; 2]], labels: &[i32]) -> Self {
        SlicePrompt {
            points: points.to_vec(),
            labels: labels.to_vec(),
            ..SlicePrompt::on(slice)
        }
    }

    /// A mask (slice-sized, non-zero = object) on `slice`.
    pub fn mask(slice: usize, mask: Vec<u8>) -> Self {
        SlicePrompt {
            mask: Some(mask),
            ..SlicePrompt::on(slice)
        }
    }

    /// The box and clicks on `slice` of a [`Prompt`] (the type the image
    /// predictor and the video session take); its low-resolution
    /// `mask_input` is not a slice prompt (use [`SlicePrompt::mask`]).
    pub fn from_prompt(slice: usize, prompt: &Prompt) -> Result<Self> {
        if prompt.mask_input.is_some() {
            return Err(Error::invalid(
                "a slice prompt takes a slice-sized mask, not mask_input logits",
            ));
        }
        Ok(SlicePrompt {
            bbox: prompt.bbox,
            points: prompt.points.clone(),
            labels: prompt.labels.clone(),
            ..SlicePrompt::on(slice)
        })
    }

    /// The box and clicks as a [`Prompt`] (`None` for a mask prompt).
    pub fn prompt(&self) -> Option<Prompt> {
        if self.mask.is_some() {
            return None;
        }
        Some(Prompt {
            points: self.points.clone(),
            labels: self.labels.clone(),
            bbox: self.bbox,
            mask_input: None,
        })
    }

    /// Whether the prompt holds nothing.
    pub fn is_empty(&self) -> bool {
        self.bbox.is_none() && self.points.is_empty() && self.mask.is_none()
    }
}

/// All prompts of one object.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectPrompts {
    /// Object id (>= 1); also its value in the label volume.
    pub obj_id: u32,
    /// Its prompts, at most one per slice, in slice order.
    pub slices: Vec<SlicePrompt>,
}

impl ObjectPrompts {
    /// An object without prompts.
    pub fn new(obj_id: u32) -> Self {
        ObjectPrompts {
            obj_id,
            slices: Vec::new(),
        }
    }

    /// The prompt on `slice`, created (empty) if missing.
    pub fn slice_mut(&mut self, slice: usize) -> &mut SlicePrompt {
        if let Some(i) = self.slices.iter().position(|s| s.slice == slice) {
            return &mut self.slices[i];
        }
        self.slices.push(SlicePrompt::on(slice));
        self.slices.sort_by_key(|s| s.slice);
        let i = self
            .slices
            .iter()
            .position(|s| s.slice == slice)
            .unwrap_or(0);
        &mut self.slices[i]
    }

    /// The prompt on `slice`, if any.
    pub fn on_slice(&self, slice: usize) -> Option<&SlicePrompt> {
        self.slices.iter().find(|s| s.slice == slice)
    }

    /// The first prompted slice.
    pub fn first_slice(&self) -> Option<usize> {
        self.slices.iter().map(|s| s.slice).min()
    }
}

/// The prompts of object `id` in `objects`, appended (empty) if missing.
pub fn object_mut(objects: &mut Vec<ObjectPrompts>, id: u32) -> &mut ObjectPrompts {
    if let Some(i) = objects.iter().position(|o| o.obj_id == id) {
        return &mut objects[i];
    }
    objects.push(ObjectPrompts::new(id));
    let last = objects.len() - 1;
    &mut objects[last]
}

/// Merges two prompt lists (sorted by object id on return); an object
/// prompted on the same slice by both is an error (a slice takes either a
/// mask or a box and clicks).
pub fn merge_prompts(
    mut a: Vec<ObjectPrompts>,
    b: Vec<ObjectPrompts>,
) -> Result<Vec<ObjectPrompts>> {
    for ob in b {
        let oa = object_mut(&mut a, ob.obj_id);
        for sp in ob.slices {
            if oa.slices.iter().any(|s| s.slice == sp.slice) {
                return Err(Error::volume(format!(
                    "object {} has both a mask and a box or clicks on slice {}",
                    ob.obj_id, sp.slice
                )));
            }
            oa.slices.push(sp);
        }
        oa.slices.sort_by_key(|s| s.slice);
    }
    a.sort_by_key(|o| o.obj_id);
    Ok(a)
}

/// Checks the clicks of a prompt: as many labels as clicks, labels 0 or 1,
/// at most [`MAX_PROMPT_POINTS`].
pub(crate) fn check_clicks(points: &[[f32; 2]], labels: &[i32]) -> Result<()> {
    if points.len() != labels.len() {
        return Err(Error::invalid(format!(
            "{} points but {} labels",
            points.len(),
            labels.len()
        )));
    }
    if points.len() > MAX_PROMPT_POINTS {
        return Err(Error::invalid(format!(
            "{} points exceed the limit of {MAX_PROMPT_POINTS} (MAX_PROMPT_POINTS)",
            points.len()
        )));
    }
    if let Some(l) = labels.iter().find(|&&l| l != 0 && l != 1) {
        return Err(Error::invalid(format!(
            "label {l}: use 1 (object) or 0 (background)"
        )));
    }
    Ok(())
}

/// Bounding box `[x0, y0, x1, y1]` (inclusive pixel indices) of a mask.
pub fn mask_bbox(mask: &[u8], width: usize) -> Option<[usize; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, &v)| v != 0) {
        let (x, y) = (i % width, i / width);
        b = Some(match b {
            None => [x, y, x, y],
            Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
        });
    }
    b
}

/// The mask's "centre": the pixel farthest from the background (the image
/// border counts as background), in mm with the in-plane `spacing`
/// `[column, row]`; ties go to the pixel nearest the centroid, then the first.
pub fn mask_center(
    mask: &[u8],
    width: usize,
    height: usize,
    spacing: [f64; 2],
) -> Option<[usize; 2]> {
    if mask.len() != width * height || !mask.iter().any(|&v| v != 0) {
        return None;
    }
    // Pad by one background pixel on each side.
    let (pw, ph) = (width + 2, height + 2);
    let mut bg = vec![true; pw * ph];
    let (mut cx, mut cy, mut cnt) = (0.0, 0.0, 0.0);
    for y in 0..height {
        for x in 0..width {
            if mask[y * width + x] != 0 {
                bg[(y + 1) * pw + x + 1] = false;
                cx += x as f64;
                cy += y as f64;
                cnt += 1.0;
            }
        }
    }
    let (cx, cy) = (cx / cnt, cy / cnt);
    let d = metrics::squared_distance_transform(&bg, [pw, ph, 1], [spacing[0], spacing[1], 1.0])
        .ok()?;
    let mut best: Option<(f64, f64, usize, usize)> = None;
    for y in 0..height {
        for x in 0..width {
            if mask[y * width + x] == 0 {
                continue;
            }
            let dist = d[(y + 1) * pw + x + 1];
            let c = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
            let better = match best {
                None => true,
                Some((bd, bc, _, _)) => dist > bd || (dist == bd && c < bc),
            };
            if better {
                best = Some((dist, c, x, y));
            }
        }
    }
    best.map(|(_, _, x, y)| [x, y])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_box_and_merge() {
        // A 5x5 square with a tail: the centre is the square's middle.
        let (w, h) = (9, 7);
        let mut m = vec![0u8; w * h];
        for y in 1..6 {
            for x in 1..6 {
                m[y * w + x] = 1;
            }
        }
        m[3 * w + 6] = 1;
        m[3 * w + 7] = 1;
        assert_eq!(mask_center(&m, w, h, [1.0, 1.0]), Some([3, 3]));
        assert_eq!(mask_bbox(&m, w), Some([1, 1, 7, 5]));
        assert_eq!(mask_center(&[0; 4], 2, 2, [1.0, 1.0]), None);

        let mut a = ObjectPrompts::new(2);
        *a.slice_mut(5) = SlicePrompt::bbox(5, [0.0, 0.0, 1.0, 1.0]);
        a.slice_mut(1).points.push([1.0, 1.0]);
        assert_eq!(
            a.slices.iter().map(|s| s.slice).collect::<Vec<_>>(),
            vec![1, 5]
        );
        assert_eq!(a.first_slice(), Some(1));
        let b = vec![ObjectPrompts {
            obj_id: 2,
            slices: vec![SlicePrompt::mask(3, vec![1; 4])],
        }];
        let m = merge_prompts(vec![a.clone()], b).unwrap();
        assert_eq!(
            m[0].slices.iter().map(|s| s.slice).collect::<Vec<_>>(),
            vec![1, 3, 5]
        );
        let clash = vec![ObjectPrompts {
            obj_id: 2,
            slices: vec![SlicePrompt::mask(5, vec![1; 4])],
        }];
        let e = merge_prompts(vec![a], clash).unwrap_err().to_string();
        assert_eq!(e, "object 2 has both a mask and a box or clicks on slice 5");
        let p = Prompt::bbox(1.0, 2.0, 3.0, 4.0).with_point(2.0, 3.0, 0);
        let sp = SlicePrompt::from_prompt(6, &p).unwrap();
        assert_eq!(
            (sp.slice, sp.bbox, &sp.points[..], &sp.labels[..]),
            (6, Some([1.0, 2.0, 3.0, 4.0]), &[[2.0, 3.0]][..], &[0][..])
        );
        assert_eq!(sp.prompt(), Some(p.clone()));
        assert_eq!(SlicePrompt::mask(0, vec![1]).prompt(), None);
        let logits = Prompt {
            mask_input: Some(vec![0.0]),
            ..p
        };
        assert!(SlicePrompt::from_prompt(0, &logits).is_err());
        assert!(check_clicks(&[[0.0, 0.0]], &[2]).is_err());
        assert!(check_clicks(&[[0.0, 0.0]], &[]).is_err());
    }
}
