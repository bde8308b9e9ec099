//! The main job, shared by the examples `segment_volume` and
//! `evaluate_prompts` and by the integration test `tests/main_job.rs`: turn a
//! volume into grey slices, parse and check prompts, run a session over the
//! slices, assemble the label volume, simulate the papers' prompts, and draw
//! a montage.
//!
//! The volume-level logic itself (intensity mapping, slices, prompts, the
//! propagation modes, the label volume) is [`medsam2_core::volume`], re-exported
//! here; this module adds the command line's parsing, files, montage and
//! evaluation.
//!
//! # Slices and prompt coordinates
//! As [`medsam2_core::volume`]: slice `Z` holds the voxels whose index on the
//! slicing axis is `Z`; pixel `(X, Y)` is column `X` (the lower remaining
//! index axis) and row `Y` (the higher one). For the default axis 2 (`k`) and
//! an array `[D, H, W]` in NumPy (`.npz`), `X` is the `W` index, `Y` the `H`
//! index, `Z` the `D` index; for a NIfTI/NRRD file `X = i`, `Y = j`, `Z = k`.
//! Prompts in physical coordinates are LPS millimetres, mapped to the nearest
//! slice.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use medsam2_core::medical::intensity::{Normalization, Window};
use medsam2_core::medical::slicing::{self, Axis};
use medsam2_core::medical::{self, metrics, MedicalError, Volume};
use medsam2_core::sam2_video_predictor::{Progress, SessionOptions};
pub use medsam2_core::volume::{
    label_volume, largest_component, mask_bbox, mask_center, merge_prompts, object_mut, segment,
    Intensity, ObjectPrompts, Propagation, SegmentOptions, Segmentation, SlicePrompt, Slices,
    VolumeGrid, VolumeSession,
};

/// An error of the main job: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

impl From<String> for JobError {
    fn from(s: String) -> Self {
        JobError(s)
    }
}

impl From<&str> for JobError {
    fn from(s: &str) -> Self {
        JobError(s.to_string())
    }
}

impl From<medsam2_core::Error> for JobError {
    fn from(e: medsam2_core::Error) -> Self {
        JobError(e.to_string())
    }
}

impl From<MedicalError> for JobError {
    fn from(e: MedicalError) -> Self {
        JobError(e.to_string())
    }
}

/// `Result` with [`JobError`].
pub type Result<T> = std::result::Result<T, JobError>;

/// Formats an error as the single line the examples print: `error: ...`
/// (newlines folded into `; `).
pub fn error_line(e: &dyn fmt::Display) -> String {
    let msg = e.to_string();
    let one: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("error: {}", one.join("; "))
}

/// Seeded pseudo-random numbers: the workspace's one generator.
pub use medsam2_core::confidence_bank::SplitMix64;

// ---------------------------------------------------------------- intensity

/// How voxel values become the model's grey levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IntensitySpec {
    /// `u8` volumes are taken as already windowed (`0..=255` kept); other
    /// types get the abdomen (soft-tissue) CT window W400 L40.
    Auto,
    /// Clip to a CT window (Hounsfield units).
    Window(Window),
    /// MR and other modalities: 0.5th-99.5th percentiles of the non-zero voxels.
    Percentile,
    /// Values clipped to `0..=255` as they are.
    Identity,
}

impl IntensitySpec {
    /// Parses `auto`, `none`, `percentile`, a preset name (`abdomen`,
    /// `soft-tissue`, `lung`, `bone`, `brain`, `mediastinum`) or `W,L`.
    pub fn parse(s: &str) -> Result<IntensitySpec> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => return Ok(IntensitySpec::Auto),
            "none" | "identity" => return Ok(IntensitySpec::Identity),
            "percentile" | "mr" => return Ok(IntensitySpec::Percentile),
            _ => {}
        }
        if let Some(w) = Window::preset(&t) {
            return Ok(IntensitySpec::Window(w));
        }
        if let Some((w, l)) = t.split_once(',') {
            let (w, l) = (parse_f64(w, "window width")?, parse_f64(l, "window level")?);
            return Ok(IntensitySpec::Window(Window::new(w, l)?));
        }
        let names: Vec<&str> = Window::PRESETS.iter().map(|(n, _)| *n).collect();
        Err(JobError(format!(
            "unknown window `{s}`: use auto, none, percentile, W,L or a preset ({})",
            names.join(", ")
        )))
    }

    /// The mapping for `volume` (the MedSAM2 stretch: clipped min/max).
    pub fn intensity(&self, volume: &Volume) -> Intensity {
        match *self {
            IntensitySpec::Auto => Intensity::auto(volume),
            IntensitySpec::Window(w) => Intensity::window(w),
            IntensitySpec::Percentile => Intensity::new(Normalization::MR_DEFAULT),
            IntensitySpec::Identity => Intensity::new(Normalization::Identity),
        }
    }

    /// The normalisation for `volume`.
    pub fn normalization(&self, volume: &Volume) -> Normalization {
        self.intensity(volume).normalization
    }
}

/// Parses an axis number `0`, `1` or `2`.
pub fn parse_axis(s: &str) -> Result<Axis> {
    s.trim()
        .parse::<usize>()
        .ok()
        .and_then(Axis::from_index)
        .ok_or_else(|| JobError(format!("bad axis `{s}`: use 0, 1 or 2")))
}

fn parse_f64(s: &str, what: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| JobError(format!("bad {what} `{}`: not a number", s.trim())))?;
    if !v.is_finite() {
        return Err(JobError(format!("bad {what} `{}`: not finite", s.trim())));
    }
    Ok(v)
}

// ------------------------------------------------------------------ prompts

/// Splits an optional `OBJ:` prefix off a prompt argument.
fn split_object(s: &str, what: &str) -> Result<(Option<u32>, String)> {
    match s.split_once(':') {
        Some((o, rest)) => {
            let id: u32 = o.trim().parse().map_err(|_| {
                JobError(format!("bad {what} `{s}`: object id `{o}` is not a number"))
            })?;
            if id == 0 {
                return Err(JobError(format!(
                    "bad {what} `{s}`: object ids start at 1 (0 is the background)"
                )));
            }
            Ok((Some(id), rest.to_string()))
        }
        None => Ok((None, s.to_string())),
    }
}

fn numbers(s: &str, n: usize, what: &str, form: &str) -> Result<Vec<f64>> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() != n {
        return Err(JobError(format!(
            "bad {what} `{s}`: expected {form} ({n} numbers)"
        )));
    }
    parts.iter().map(|p| parse_f64(p, what)).collect()
}

/// Parses the `--box` and `--point` arguments.
///
/// * Voxel coordinates: box `[OBJ:]Z,X0,Y0,X1,Y1`, point `[OBJ:]Z,X,Y,LABEL`
///   (`Z` the slice along `axis`, `X` column, `Y` row; see the module docs).
/// * With `physical`: box `[OBJ:]X0,Y0,Z0,X1,Y1,Z1` (two opposite LPS corners
///   in mm, prompted on the slice nearest their middle), point
///   `[OBJ:]X,Y,Z,LABEL` (LPS mm, on the nearest slice).
///
/// Without `OBJ:`, the n-th box is object n and points belong to object 1.
/// `LABEL` is 1 (object) or 0 (background). Coordinates are checked against
/// the volume: every error names the argument.
pub fn parse_prompts(
    volume: &Volume,
    axis: Axis,
    boxes: &[String],
    points: &[String],
    physical: bool,
) -> Result<Vec<ObjectPrompts>> {
    let grid = VolumeGrid::of(volume, axis);
    let outside = |flag: &str, arg: &str, e: medsam2_core::Error| {
        JobError(format!("{flag} `{arg}` is outside the volume: {e}"))
    };
    let mut objects: Vec<ObjectPrompts> = Vec::new();
    let mut next_box_id = 1u32;
    for arg in boxes {
        let (id, rest) = split_object(arg, "--box")?;
        let id = id.unwrap_or_else(|| {
            let i = next_box_id;
            next_box_id += 1;
            i
        });
        let (slice, b) = if physical {
            let v = numbers(&rest, 6, "--box", "X0,Y0,Z0,X1,Y1,Z1 in LPS mm")?;
            grid.physical_box([v[0], v[1], v[2]], [v[3], v[4], v[5]])
        } else {
            let v = numbers(&rest, 5, "--box", "Z,X0,Y0,X1,Y1 in voxels")?;
            grid.voxel_box(v[0], [v[1], v[2], v[3], v[4]])
        }
        .map_err(|e| outside("--box", arg, e))?;
        let sp = object_mut(&mut objects, id).slice_mut(slice);
        if sp.bbox.is_some() {
            return Err(JobError(format!(
                "--box `{arg}`: object {id} already has a box on slice {slice}"
            )));
        }
        sp.bbox = Some(b);
    }
    for arg in points {
        let (id, rest) = split_object(arg, "--point")?;
        let id = id.unwrap_or(1);
        let (slice, x, y, label) = if physical {
            let v = numbers(&rest, 4, "--point", "X,Y,Z,LABEL in LPS mm")?;
            let (z, x, y) = grid
                .locate([v[0], v[1], v[2]])
                .map_err(|e| outside("--point", arg, e))?;
            (z, x, y, v[3])
        } else {
            let v = numbers(&rest, 4, "--point", "Z,X,Y,LABEL in voxels")?;
            let z = grid
                .slice_index(v[0])
                .map_err(|e| outside("--point", arg, e))?;
            (z, v[1], v[2], v[3])
        };
        if label != 0.0 && label != 1.0 {
            return Err(JobError(format!(
                "--point `{arg}`: LABEL must be 1 (object) or 0 (background)"
            )));
        }
        let p = grid.pixel(x, y).map_err(|e| outside("--point", arg, e))?;
        let sp = object_mut(&mut objects, id).slice_mut(slice);
        sp.points.push(p);
        sp.labels.push(label as i32);
    }
    objects.sort_by_key(|o| o.obj_id);
    Ok(objects)
}

/// Which slice of an object a prompt is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySlice {
    /// The slice where the object has the largest area (first one on ties).
    Largest,
    /// The middle of the object's slice range (the nearest slice holding it).
    Middle,
    /// A given slice.
    Fixed(usize),
}

impl KeySlice {
    /// Parses `largest`, `middle` or a slice number.
    pub fn parse(s: &str) -> Result<KeySlice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "largest" => Ok(KeySlice::Largest),
            "middle" => Ok(KeySlice::Middle),
            t => t.parse().map(KeySlice::Fixed).map_err(|_| {
                JobError(format!(
                    "bad key slice `{s}`: largest, middle or a slice number"
                ))
            }),
        }
    }
}

/// The masks of one label of a label volume, per slice along an axis.
#[derive(Clone, Debug)]
pub struct LabelSlices {
    /// The label value.
    pub label: u32,
    /// Slice-sized masks (1 = label), one per slice.
    pub masks: Vec<Vec<u8>>,
    /// Pixels of the label per slice.
    pub areas: Vec<usize>,
}

impl LabelSlices {
    /// The key slice (`None` if the label is absent; a fixed slice is returned as is).
    pub fn key_slice(&self, key: KeySlice) -> Option<usize> {
        let present: Vec<usize> = (0..self.areas.len())
            .filter(|&z| self.areas[z] > 0)
            .collect();
        let (&lo, &hi) = (present.first()?, present.last()?);
        Some(match key {
            KeySlice::Fixed(z) => z,
            KeySlice::Largest => {
                let max = self.areas.iter().copied().max().unwrap_or(0);
                self.areas.iter().position(|&a| a == max).unwrap_or(lo)
            }
            KeySlice::Middle => {
                let mid = (lo + hi) / 2;
                // Nearest slice holding the label (lower one on ties).
                *present
                    .iter()
                    .min_by_key(|&&z| (z.abs_diff(mid), z))
                    .unwrap_or(&mid)
            }
        })
    }
}

/// The non-zero labels of a label volume (integers >= 1), with their masks
/// along `axis`.
pub fn label_slices(labels: &Volume, axis: Axis) -> Result<Vec<LabelSlices>> {
    let values = labels.data().to_f64_vec();
    let mut set = std::collections::BTreeSet::new();
    for &v in &values {
        if v != 0.0 {
            if v.fract() != 0.0 || v < 1.0 || v > u32::MAX as f64 {
                return Err(JobError(format!(
                    "label volume holds {v}: labels must be whole numbers >= 0"
                )));
            }
            set.insert(v as u32);
        }
    }
    let dims = labels.dims();
    let mut out = Vec::new();
    for label in set {
        let on: Vec<u8> = values
            .iter()
            .map(|&v| u8::from(v == label as f64))
            .collect();
        let mut masks = Vec::new();
        let mut areas = Vec::new();
        for z in 0..slicing::num_frames(dims, axis) {
            let f = slicing::extract_frame(&on, dims, axis, z)?;
            areas.push(f.data.iter().filter(|&&v| v != 0).count());
            masks.push(f.data);
        }
        out.push(LabelSlices {
            label,
            masks,
            areas,
        });
    }
    Ok(out)
}

/// Mask prompts from a label volume on the input's grid: every non-zero label
/// `L` becomes object `L`, prompted with its mask on its key slice.
pub fn mask_prompts(
    input: &Volume,
    labels: &Volume,
    axis: Axis,
    key: KeySlice,
) -> Result<Vec<ObjectPrompts>> {
    if labels.dims() != input.dims() {
        return Err(JobError(format!(
            "--mask has dims {:?} but the volume has {:?}",
            labels.dims(),
            input.dims()
        )));
    }
    let ls = label_slices(labels, axis)?;
    if ls.is_empty() {
        return Err(JobError("--mask holds no non-zero label".into()));
    }
    let n = slicing::num_frames(input.dims(), axis);
    let mut out = Vec::new();
    for l in ls {
        let z = l.key_slice(key).unwrap_or(0);
        if z >= n {
            return Err(JobError(format!(
                "--mask-slice {z} is outside the volume (0..{} along axis {})",
                n - 1,
                axis as usize
            )));
        }
        if l.areas[z] == 0 {
            return Err(JobError(format!(
                "--mask: label {} is absent from slice {z}",
                l.label
            )));
        }
        let mut sp = SlicePrompt::on(z);
        sp.mask = Some(l.masks[z].clone());
        out.push(ObjectPrompts {
            obj_id: l.label,
            slices: vec![sp],
        });
    }
    Ok(out)
}

// -------------------------------------------------------------- the session

/// Per-object statistics of a label volume.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStats {
    /// Object id (label value).
    pub obj_id: u32,
    /// Voxels with this label.
    pub voxels: usize,
    /// Volume in millilitres (voxels x voxel volume).
    pub ml: f64,
    /// Slices (along the axis) holding the object.
    pub slices: usize,
    /// First and last such slice.
    pub slice_range: Option<(usize, usize)>,
}

/// Voxels, millilitres and slices of each object in a label volume.
pub fn object_stats(labels: &Volume, axis: Axis, obj_ids: &[u32]) -> Vec<ObjectStats> {
    let [nx, ny, _] = labels.dims();
    let sp = labels.geometry().spacing;
    // Voxel volume: spacing product (mm³) scaled by |det(direction)| (1 for a rotation).
    let voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0;
    let values = labels.data().to_f64_vec();
    obj_ids
        .iter()
        .map(|&id| {
            let mut voxels = 0;
            let mut per_slice = BTreeMap::new();
            for (o, &v) in values.iter().enumerate() {
                if v == id as f64 {
                    voxels += 1;
                    let idx = [o % nx, (o / nx) % ny, o / (nx * ny)];
                    *per_slice.entry(idx[axis as usize]).or_insert(0usize) += 1;
                }
            }
            ObjectStats {
                obj_id: id,
                voxels,
                ml: voxels as f64 * voxel_ml,
                slices: per_slice.len(),
                slice_range: per_slice
                    .keys()
                    .next()
                    .copied()
                    .zip(per_slice.keys().next_back().copied()),
            }
        })
        .collect()
}

// ------------------------------------------------------------------ montage

/// Colours of objects 1, 2, ... in montages.
pub const PALETTE: [[u8; 3]; 8] = [
    [255, 60, 60],
    [60, 150, 255],
    [60, 220, 90],
    [255, 200, 0],
    [210, 70, 255],
    [0, 220, 220],
    [255, 130, 30],
    [160, 255, 120],
];

/// Stretches an image vertically by `scale` (nearest row), e.g. the ratio of
/// row to column spacing so anisotropic slices show their true shape; `scale`
/// within 1% of 1 (or not finite and positive) leaves it as is.
pub fn stretch_rows(img: RgbImage, scale: f64) -> RgbImage {
    if !(scale.is_finite() && scale > 0.0) || (scale - 1.0).abs() < 0.01 {
        return img;
    }
    let height = ((img.height as f64 * scale).round() as usize).max(1);
    let row = 3 * img.width;
    let mut data = Vec::with_capacity(row * height);
    for r in 0..height {
        let src = (((r as f64 + 0.5) / scale) as usize).min(img.height - 1);
        data.extend_from_slice(&img.data[src * row..(src + 1) * row]);
    }
    RgbImage {
        width: img.width,
        height,
        data,
    }
}

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `3 * width * height` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let o = 3 * (y as usize * self.width + x as usize);
            self.data[o..o + 3].copy_from_slice(&c);
        }
    }
}

/// A montage of the slices `key - neighbours ..= key + neighbours` (those that
/// exist) side by side: each slice in grey with every object's mask blended
/// in its [`PALETTE`] colour and outlined, the prompt boxes drawn as
/// rectangles and clicks as crosses (green object, red background); the key
/// slice is framed in white. Slices are shown as stored (no flip), one
/// image pixel per slice pixel (see [`stretch_rows`] for anisotropic slices).
pub fn montage(
    slices: &Slices,
    seg: &Segmentation,
    prompts: &[ObjectPrompts],
    key: usize,
    neighbours: usize,
) -> RgbImage {
    let (w, h) = (slices.width, slices.height);
    let n = slices.len();
    let key = key.min(n.saturating_sub(1));
    let lo = key.saturating_sub(neighbours);
    let hi = (key + neighbours).min(n.saturating_sub(1));
    let gap = 4usize;
    let count = hi - lo + 1;
    let mut img = RgbImage {
        width: count * w + (count - 1) * gap,
        height: h,
        data: vec![24; 3 * (count * w + (count - 1) * gap) * h],
    };
    let thick = (w.max(h) / 256).max(1) as i64;
    for (pi, z) in (lo..=hi).enumerate() {
        let ox = pi * (w + gap);
        for y in 0..h {
            for x in 0..w {
                let g = slices.images[z][y * w + x];
                let o = 3 * (y * img.width + ox + x);
                img.data[o..o + 3].copy_from_slice(&[g, g, g]);
            }
        }
        for (oi, &id) in seg.obj_ids.iter().enumerate() {
            let Some(m) = seg.masks.get(oi).and_then(|m| m[z].as_ref()) else {
                continue;
            };
            let c = PALETTE[(id as usize).wrapping_sub(1) % PALETTE.len()];
            for y in 0..h {
                for x in 0..w {
                    if m[y * w + x] == 0 {
                        continue;
                    }
                    let edge = x == 0
                        || y == 0
                        || x + 1 == w
                        || y + 1 == h
                        || m[y * w + x - 1] == 0
                        || m[y * w + x + 1] == 0
                        || m[(y - 1) * w + x] == 0
                        || m[(y + 1) * w + x] == 0;
                    let o = 3 * (y * img.width + ox + x);
                    for (px, &ck) in img.data[o..o + 3].iter_mut().zip(&c) {
                        *px = if edge {
                            ck
                        } else {
                            (0.55 * *px as f32 + 0.45 * ck as f32).round() as u8
                        };
                    }
                }
            }
        }
        for o in prompts {
            for sp in o.slices.iter().filter(|s| s.slice == z) {
                if let Some([x0, y0, x1, y1]) = sp.bbox {
                    let (x0, y0, x1, y1) = (
                        x0.round() as i64,
                        y0.round() as i64,
                        x1.round() as i64,
                        y1.round() as i64,
                    );
                    for t in 0..thick {
                        for x in x0 - t..=x1 + t {
                            img.put(ox as i64 + x, y0 - t, [255, 255, 0]);
                            img.put(ox as i64 + x, y1 + t, [255, 255, 0]);
                        }
                        for y in y0 - t..=y1 + t {
                            img.put(ox as i64 + x0 - t, y, [255, 255, 0]);
                            img.put(ox as i64 + x1 + t, y, [255, 255, 0]);
                        }
                    }
                }
                for (p, &l) in sp.points.iter().zip(&sp.labels) {
                    let (px, py) = (p[0].round() as i64, p[1].round() as i64);
                    let col = if l == 1 { [0, 255, 0] } else { [255, 0, 0] };
                    let r = 3 * thick + 2;
                    for d in -r..=r {
                        for t in 0..thick {
                            img.put(ox as i64 + px + d, py + t, col);
                            img.put(ox as i64 + px + t, py + d, col);
                        }
                    }
                }
            }
        }
        if z == key {
            let (x1, y1) = ((ox + w - 1) as i64, (h - 1) as i64);
            for t in 0..thick {
                for x in ox as i64..=x1 {
                    img.put(x, t, [255, 255, 255]);
                    img.put(x, y1 - t, [255, 255, 255]);
                }
                for y in 0..=y1 {
                    img.put(ox as i64 + t, y, [255, 255, 255]);
                    img.put(x1 - t, y, [255, 255, 255]);
                }
            }
        }
    }
    img
}

// ------------------------------------------------------------- the main job

/// Settings of the `segment_volume` job (the example's flags, parsed).
#[derive(Clone, Debug)]
pub struct SegmentJob {
    /// Input volume (NIfTI, NRRD, `.npz`, whose `imgs` array is read, or a
    /// folder holding a DICOM series).
    pub volume: PathBuf,
    /// SeriesInstanceUID to read when the DICOM folder holds several series.
    pub series: Option<String>,
    /// Output label volume (`.nii`, `.nii.gz`, `.nrrd`, or `.seg.nrrd`: a 3D
    /// Slicer segmentation with one named segment per object).
    pub out: PathBuf,
    /// Segment names for a `.seg.nrrd` output, by object id (default `object N`).
    pub segment_names: Vec<(u32, String)>,
    /// Model checkpoint (`.pt`, `.pth` or `.safetensors`).
    pub checkpoint: PathBuf,
    /// Config preset name or YAML path.
    pub config: String,
    /// `--box` arguments (see [`parse_prompts`]).
    pub boxes: Vec<String>,
    /// `--point` arguments (see [`parse_prompts`]).
    pub points: Vec<String>,
    /// Prompt coordinates are LPS millimetres.
    pub physical: bool,
    /// Label volume whose labels become mask prompts (`.npz`: array `gts`).
    pub mask: Option<PathBuf>,
    /// Slice of each mask label used as its prompt.
    pub mask_slice: KeySlice,
    /// Intensity mapping.
    pub window: IntensitySpec,
    /// Slicing axis.
    pub axis: Axis,
    /// Propagation mode.
    pub propagation: Propagation,
    /// Keep each object's largest 3-D component.
    pub largest_component: bool,
    /// Build a montage with this many neighbours each side of the key slice.
    pub montage_neighbours: Option<usize>,
    /// Compute device.
    pub device: medsam2_core::checkpoint::DeviceKind,
    /// Compute dtype.
    pub dtype: medsam2_core::checkpoint::ComputeDType,
    /// Encoder features kept (slices).
    pub cache_frames: usize,
    /// A paper's protocol instead of `propagation`/`largest_component`
    /// (see [`crate::protocols::segment_with_protocol`]).
    pub protocol: Option<crate::protocols::Protocol>,
}

impl SegmentJob {
    /// A job with the examples' defaults and no prompt.
    pub fn new(
        volume: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        checkpoint: impl Into<PathBuf>,
        config: &str,
    ) -> Self {
        SegmentJob {
            volume: volume.into(),
            series: None,
            out: out.into(),
            segment_names: Vec::new(),
            checkpoint: checkpoint.into(),
            config: config.to_string(),
            boxes: Vec::new(),
            points: Vec::new(),
            physical: false,
            mask: None,
            mask_slice: KeySlice::Largest,
            window: IntensitySpec::Auto,
            axis: Axis::K,
            propagation: Propagation::Separate,
            largest_component: false,
            montage_neighbours: None,
            device: Default::default(),
            dtype: Default::default(),
            cache_frames: 32,
            protocol: None,
        }
    }
}

/// What a [`SegmentJob`] did.
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// The input volume's voxels and geometry (as read).
    pub input: Volume,
    /// For a DICOM folder: the series read and the files skipped.
    pub dicom: Option<(
        medical::dicom::SeriesSummary,
        Vec<medical::dicom::SkippedFile>,
    )>,
    /// The label volume written (the input's grid and geometry).
    pub labels: Volume,
    /// The intensity mapping used.
    pub normalization: Normalization,
    /// Slices, their size and axis.
    pub num_slices: usize,
    /// Slice width (columns).
    pub width: usize,
    /// Slice height (rows).
    pub height: usize,
    /// The prompts, per object.
    pub prompts: Vec<ObjectPrompts>,
    /// Per-object statistics of the label volume.
    pub objects: Vec<ObjectStats>,
    /// Seconds to load the model.
    pub load_seconds: f64,
    /// Seconds on prompts (incl. encoding prompted slices).
    pub prompt_seconds: f64,
    /// Seconds propagating.
    pub propagation_seconds: f64,
    /// Slice visits of the propagation.
    pub visits: usize,
    /// The key slice of the montage (first prompted slice of the first object).
    pub key_slice: usize,
    /// The montage, when asked for (rows stretched by the row/column spacing ratio).
    pub montage: Option<RgbImage>,
}

impl SegmentReport {
    /// Seconds per slice of the volume (prompts + propagation).
    pub fn seconds_per_slice(&self) -> f64 {
        (self.prompt_seconds + self.propagation_seconds) / self.num_slices.max(1) as f64
    }
}

/// The session settings of the jobs: `cache_frames` slices' encoder
/// features kept (at least 1); `non_overlap` for several objects.
pub fn session_options(cache_frames: usize, non_overlap: bool) -> SessionOptions {
    SessionOptions {
        feature_cache_frames: cache_frames.max(1),
        non_overlap_masks: non_overlap,
        ..Default::default()
    }
}

/// Checks that `path` can be written as `what` (extension and folder).
pub fn check_output(path: &Path, what: &str, exts: &[&str]) -> Result<()> {
    check_output_against(path, what, exts, &[])
}

/// [`check_output`], and refuses an output that is the same file as one of
/// `inputs` (however named) or whose folder is not writable, before any work
/// starts (see `medsam2_core::output::check_output`).
pub fn check_output_against(
    path: &Path,
    what: &str,
    exts: &[&str],
    inputs: &[&Path],
) -> Result<()> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if !exts.iter().any(|e| name.ends_with(e)) {
        return Err(JobError(format!(
            "{what} `{}`: the name must end in {}",
            path.display(),
            exts.join(", ")
        )));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(JobError(format!(
            "{what} `{}`: folder {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    medsam2_core::output::check_output(path, inputs)
        .map_err(|e| JobError(format!("{what} {}: {e}", path.display())))
}

/// Runs the whole `segment_volume` job: checks the output name, reads the
/// volume, parses the prompts (all before the model loads), loads the model,
/// segments, writes the label volume in the input's geometry and builds the
/// montage. `on_progress` sees the propagation's slice visits.
pub fn run_segment_job(
    job: &SegmentJob,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<SegmentReport> {
    let mut inputs: Vec<&Path> = vec![&job.volume, &job.checkpoint, Path::new(&job.config)];
    if let Some(m) = &job.mask {
        inputs.push(m);
    }
    check_output_against(&job.out, "--out", &[".nii", ".nii.gz", ".nrrd"], &inputs)?;
    if !job.checkpoint.exists() {
        return Err(JobError(format!(
            "--checkpoint {}: no such file",
            job.checkpoint.display()
        )));
    }
    let (input, dicom) = read_input(&job.volume, job.series.as_deref())?;
    let mut prompts = parse_prompts(&input, job.axis, &job.boxes, &job.points, job.physical)?;
    if let Some(m) = &job.mask {
        let labels = read_volume(m, medical::NPZ_LABEL_KEY)?;
        prompts = merge_prompts(
            prompts,
            mask_prompts(&input, &labels, job.axis, job.mask_slice)?,
        )?;
    }
    if prompts.is_empty() {
        return Err(JobError("no prompt: give --box, --point or --mask".into()));
    }
    let intensity = job.window.intensity(&input);
    let slices = Slices::from_volume(&input, job.axis, &intensity)?;
    let t = Instant::now();
    let model =
        medsam2_core::build_sam::build_sam2(&job.config, &job.checkpoint, job.dtype, job.device)
            .map_err(|e| {
                JobError(format!(
                    "cannot load model (--config {}, --checkpoint {}): {e}",
                    job.config,
                    job.checkpoint.display()
                ))
            })?;
    let load_seconds = t.elapsed().as_secs_f64();
    let seg = if let Some(p) = job.protocol {
        crate::protocols::segment_with_protocol(model, &slices, &prompts, p)?
    } else {
        let mut session = VolumeSession::from_slices(
            VolumeGrid::of(&input, job.axis),
            slices.clone(),
            model,
            session_options(job.cache_frames, prompts.len() > 1),
        )?;
        session.set_prompts(prompts.clone())?;
        let opts = SegmentOptions {
            propagation: job.propagation,
            largest_component: job.largest_component,
            threshold: 0.0,
        };
        session.segment(&opts, &mut |p| {
            on_progress(p);
            true
        })?
    };
    let labels = label_volume(&input, job.axis, &seg)?;
    let ids: Vec<u32> = prompts.iter().map(|o| o.obj_id).collect();
    write_labels(&job.out, &labels, &ids, &job.segment_names)?;
    let objects = object_stats(&labels, job.axis, &ids);
    let key_slice = prompts[0].first_slice().unwrap_or(0);
    let (c, r) = job.axis.in_plane();
    let sp = input.geometry().spacing;
    let montage = job.montage_neighbours.map(|k| {
        stretch_rows(
            montage(&slices, &seg, &prompts, key_slice, k),
            sp[r] / sp[c],
        )
    });
    Ok(SegmentReport {
        input,
        dicom,
        labels,
        normalization: intensity.normalization,
        num_slices: slices.len(),
        width: slices.width,
        height: slices.height,
        prompts,
        objects,
        load_seconds,
        prompt_seconds: seg.prompt_seconds,
        propagation_seconds: seg.propagation_seconds,
        visits: seg.visits,
        key_slice,
        montage,
    })
}

// --------------------------------------------------------------- evaluation

/// One image/label pair of an evaluation folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseFiles {
    /// Case name (file name without the suffixes).
    pub name: String,
    /// Image file.
    pub image: PathBuf,
    /// Label file.
    pub label: PathBuf,
}

/// The image/label pairs of a folder (not recursive), sorted by name:
/// `NAME.npz` (arrays `imgs` and `gts`), `NAME_img.nii[.gz]` +
/// `NAME_seg.nii[.gz]`, `NAME_img.nrrd` + `NAME.seg.nrrd` (or `NAME_seg.nrrd`).
pub fn find_cases(dir: &Path) -> Result<Vec<CaseFiles>> {
    let rd = std::fs::read_dir(dir).map_err(|e| JobError(format!("{}: {e}", dir.display())))?;
    let mut names: Vec<String> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| JobError(format!("{}: {e}", dir.display())))?;
        if e.path().is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let has = |n: &str| names.iter().any(|x| x == n);
    let mut out = Vec::new();
    for f in &names {
        if let Some(stem) = f.strip_suffix(".npz") {
            out.push(CaseFiles {
                name: stem.to_string(),
                image: dir.join(f),
                label: dir.join(f),
            });
            continue;
        }
        for (img_suffix, seg_suffixes) in [
            ("_img.nii.gz", &["_seg.nii.gz", "_seg.nii"][..]),
            ("_img.nii", &["_seg.nii", "_seg.nii.gz"][..]),
            ("_img.nrrd", &[".seg.nrrd", "_seg.nrrd"][..]),
        ] {
            if let Some(stem) = f.strip_suffix(img_suffix) {
                if let Some(seg) = seg_suffixes
                    .iter()
                    .map(|s| format!("{stem}{s}"))
                    .find(|s| has(s))
                {
                    out.push(CaseFiles {
                        name: stem.to_string(),
                        image: dir.join(f),
                        label: dir.join(seg),
                    });
                }
                break;
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads the input of a job: a volume file, or a DICOM series from a folder
/// (series `series` when it holds several), with what was read and skipped.
#[allow(clippy::type_complexity)]
pub fn read_input(
    path: &Path,
    series: Option<&str>,
) -> Result<(
    Volume,
    Option<(
        medical::dicom::SeriesSummary,
        Vec<medical::dicom::SkippedFile>,
    )>,
)> {
    if !path.is_dir() {
        if series.is_some() {
            return Err(JobError(format!(
                "--series applies to a DICOM folder, {} is a file",
                path.display()
            )));
        }
        return Ok((read_volume(path, medical::NPZ_IMAGE_KEY)?, None));
    }
    let opts = medical::dicom::DicomOptions {
        series_uid: series.map(str::to_string),
        ..Default::default()
    };
    let s = medical::dicom::read_dicom_dir(path, &opts).map_err(|e| {
        let msg = e.to_string();
        let shown = path.display().to_string();
        JobError(
            if msg.contains(&shown) || matches!(e, MedicalError::File { .. }) {
                msg
            } else {
                format!("{shown}: {msg}")
            },
        )
    })?;
    Ok((s.volume, Some((s.series, s.skipped))))
}

/// Writes a label volume: a 3D Slicer segmentation with one segment per
/// object (named from `names`, default `object N`) for `.seg.nrrd`, else
/// the plain volume.
pub fn write_labels(
    out: &Path,
    labels: &Volume,
    ids: &[u32],
    names: &[(u32, String)],
) -> Result<()> {
    let err = |e: MedicalError| JobError(format!("{}: {e}", out.display()));
    if out
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".seg.nrrd")
    {
        let named: Vec<(u32, String)> = ids
            .iter()
            .map(|&id| {
                let name = names
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_else(|| format!("object {id}"));
                (id, name)
            })
            .collect();
        let seg = medical::seg_nrrd::Segmentation::from_labels(labels, &named).map_err(err)?;
        return medical::seg_nrrd::write_seg_nrrd(out, &seg).map_err(err);
    }
    medical::write_volume(out, labels).map_err(err)
}

/// The metrics of one object: binary `pred` against binary `gt` (same grid),
/// reported under `label`; an object absent from both scores perfectly.
pub fn label_metrics(
    pred: &Volume,
    gt: &Volume,
    nsd_tol_mm: f64,
    label: u32,
) -> Result<metrics::LabelMetrics> {
    let mut m = metrics::evaluate(pred, gt, nsd_tol_mm)?;
    let mut lm = m.pop().unwrap_or(metrics::LabelMetrics {
        label: 1,
        dice: 1.0,
        iou: 1.0,
        nsd: 1.0,
        hd95: 0.0,
        pred_voxels: 0,
        gt_voxels: 0,
    });
    lm.label = i64::from(label);
    Ok(lm)
}

/// Reads a volume (`.npz`: array `npz_key`), naming the file in errors.
pub fn read_volume(path: &Path, npz_key: &str) -> Result<Volume> {
    if !path.exists() {
        return Err(JobError(format!("{}: no such file", path.display())));
    }
    medical::read_volume_with_key(path, npz_key).map_err(|e| {
        let msg = e.to_string();
        let shown = path.display().to_string();
        if msg.contains(&shown) {
            JobError(msg)
        } else {
            JobError(format!("{shown}: {msg}"))
        }
    })
}

/// A loaded case: the image and its labels on the same grid.
#[derive(Clone, Debug)]
pub struct Case {
    /// Case name.
    pub name: String,
    /// The image.
    pub image: Volume,
    /// The ground-truth labels.
    pub labels: Volume,
}

/// Reads a case and checks the two volumes share a grid.
pub fn load_case(files: &CaseFiles) -> Result<Case> {
    let image = read_volume(&files.image, medical::NPZ_IMAGE_KEY)?;
    let labels = read_volume(&files.label, medical::NPZ_LABEL_KEY)?;
    if image.dims() != labels.dims() {
        return Err(JobError(format!(
            "case {}: image dims {:?} != label dims {:?}",
            files.name,
            image.dims(),
            labels.dims()
        )));
    }
    Ok(Case {
        name: files.name.clone(),
        image,
        labels,
    })
}

/// The prompting strategies of the papers, simulated from the ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// bowang-lab MedSAM2: a box around the object on its key slice,
    /// propagated forward and (reset) backward, largest 3-D component kept.
    KeyBox,
    /// MedicineToken Medical-SAM2: a prompt on every k-th slice from slice 0
    /// (a random object pixel as click, or the box; where the object is
    /// absent, an empty mask), propagated forward.
    EveryK,
    /// One click at the object's centre on its largest slice, propagated
    /// both ways in one session.
    CenterClick,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 3] = [Strategy::KeyBox, Strategy::EveryK, Strategy::CenterClick];

    /// Short name used in tables, CSV and `--strategies`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::KeyBox => "key-box",
            Strategy::EveryK => "every-k",
            Strategy::CenterClick => "center-click",
        }
    }

    /// Parses a name of [`Strategy::name`].
    pub fn parse(s: &str) -> Result<Strategy> {
        Strategy::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| {
                JobError(format!(
                    "unknown strategy `{s}`: key-box, every-k or center-click"
                ))
            })
    }
}

/// Settings of the simulated prompts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimulationOptions {
    /// Key slice of [`Strategy::KeyBox`].
    pub key_slice: KeySlice,
    /// Largest random enlargement (pixels, each side by the same draw) of the
    /// key-slice box, as MedSAM2's `mask2D_to_bbox`; 0 = the tight box.
    pub box_shift: usize,
    /// Slice step of [`Strategy::EveryK`].
    pub every: usize,
    /// [`Strategy::EveryK`] prompts with boxes instead of clicks.
    pub every_box: bool,
    /// Keep the largest 3-D component for [`Strategy::KeyBox`].
    pub largest_component: bool,
    /// Seed of all random choices.
    pub seed: u64,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        SimulationOptions {
            key_slice: KeySlice::Largest,
            box_shift: 0,
            every: 2,
            every_box: false,
            largest_component: true,
            seed: 2024,
        }
    }
}

/// The prompts a strategy gives for one ground-truth label (object id =
/// the label), from its per-slice masks; `spacing` is the in-plane pixel
/// spacing `[column, row]` (mm).
pub fn simulate_prompts(
    strategy: Strategy,
    gt: &LabelSlices,
    width: usize,
    height: usize,
    spacing: [f64; 2],
    opts: &SimulationOptions,
    rng: &mut SplitMix64,
) -> Result<ObjectPrompts> {
    let n = gt.masks.len();
    let absent = || JobError(format!("label {} is absent", gt.label));
    let mut slices = Vec::new();
    match strategy {
        Strategy::KeyBox => {
            let z = gt.key_slice(opts.key_slice).ok_or_else(absent)?;
            if z >= n || gt.areas[z] == 0 {
                return Err(JobError(format!(
                    "label {} is absent from key slice {z}",
                    gt.label
                )));
            }
            let [x0, y0, x1, y1] = mask_bbox(&gt.masks[z], width).ok_or_else(absent)?;
            let s = if opts.box_shift > 0 {
                rng.below(opts.box_shift + 1)
            } else {
                0
            };
            let mut sp = SlicePrompt::on(z);
            sp.bbox = Some([
                x0.saturating_sub(s) as f32,
                y0.saturating_sub(s) as f32,
                (x1 + s).min(width - 1) as f32,
                (y1 + s).min(height - 1) as f32,
            ]);
            slices.push(sp);
        }
        Strategy::EveryK => {
            let k = opts.every.max(1);
            for z in (0..n).step_by(k) {
                let m = &gt.masks[z];
                let mut sp = SlicePrompt::on(z);
                let present = gt.areas[z] > 0;
                if !present {
                    // Medical-SAM2 (`func_3d/function.py`): an object absent
                    // from a prompted slice gets an all-zero mask, for boxes
                    // and clicks alike.
                    sp.mask = Some(vec![0; width * height]);
                } else if opts.every_box {
                    if let Some([x0, y0, x1, y1]) = mask_bbox(m, width) {
                        sp.bbox = Some([x0 as f32, y0 as f32, x1 as f32, y1 as f32]);
                    }
                } else {
                    // A uniformly drawn pixel of the object.
                    let count = m.iter().filter(|&&v| v != 0).count();
                    let pick = rng.below(count);
                    let p = m
                        .iter()
                        .enumerate()
                        .filter(|(_, &v)| v != 0)
                        .nth(pick)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    sp.points.push([(p % width) as f32, (p / width) as f32]);
                    sp.labels.push(1);
                }
                slices.push(sp);
            }
        }
        Strategy::CenterClick => {
            let z = gt.key_slice(KeySlice::Largest).ok_or_else(absent)?;
            let [x, y] = mask_center(&gt.masks[z], width, height, spacing).ok_or_else(absent)?;
            let mut sp = SlicePrompt::on(z);
            sp.points.push([x as f32, y as f32]);
            sp.labels.push(1);
            slices.push(sp);
        }
    }
    Ok(ObjectPrompts {
        obj_id: gt.label,
        slices,
    })
}

/// How a strategy propagates.
pub fn strategy_propagation(strategy: Strategy) -> Propagation {
    match strategy {
        Strategy::KeyBox => Propagation::Separate,
        Strategy::EveryK => Propagation::Forward,
        Strategy::CenterClick => Propagation::Joint,
    }
}

/// One evaluated object: a case, a label and a strategy.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRow {
    /// Case name.
    pub case: String,
    /// Ground-truth label.
    pub label: u32,
    /// Strategy name.
    pub strategy: &'static str,
    /// Dice, IoU, NSD and HD95 of the label.
    pub metrics: metrics::LabelMetrics,
    /// Number of prompted slices.
    pub prompts: usize,
    /// Seconds (prompts + propagation).
    pub seconds: f64,
    /// Slices of the volume.
    pub slices: usize,
}

/// Evaluates `strategies` on every label of a case, one object at a time
/// (the session is reset between objects; encoder features are reused
/// through its cache). `on_progress` gets `(object runs done, to do)`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_case(
    session: &mut VolumeSession,
    case: &Case,
    axis: Axis,
    strategies: &[Strategy],
    opts: &SimulationOptions,
    nsd_tol_mm: f64,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<EvalRow>> {
    let dims = case.image.dims();
    let (w, h) = slicing::frame_size(dims, axis);
    let (c, r) = axis.in_plane();
    let sp = case.labels.geometry().spacing;
    let gts = label_slices(&case.labels, axis)?;
    let mut rows = Vec::new();
    let todo = gts.len() * strategies.len();
    let mut done = 0;
    for gt in &gts {
        let gt_mask: Vec<bool> = {
            let v = case.labels.data().to_f64_vec();
            v.iter().map(|&x| x == gt.label as f64).collect()
        };
        for &st in strategies {
            let mut rng = SplitMix64::for_item(
                opts.seed,
                &format!("{}/{}/{}", case.name, gt.label, st.name()),
            );
            let prompts = simulate_prompts(st, gt, w, h, [sp[c], sp[r]], opts, &mut rng)?;
            session.set_prompts(vec![prompts.clone()])?;
            let seg = session.segment(
                &SegmentOptions {
                    propagation: strategy_propagation(st),
                    largest_component: st == Strategy::KeyBox && opts.largest_component,
                    threshold: 0.0,
                },
                &mut |_| true,
            )?;
            let pred = seg.object_voxels(0, dims, axis);
            let to_vol = |m: &[bool]| {
                case.labels.with_data(medical::VoxelData::U8(
                    m.iter().map(|&b| u8::from(b)).collect(),
                ))
            };
            let lm = label_metrics(&to_vol(&pred)?, &to_vol(&gt_mask)?, nsd_tol_mm, gt.label)?;
            rows.push(EvalRow {
                case: case.name.clone(),
                label: gt.label,
                strategy: st.name(),
                metrics: lm,
                prompts: prompts.slices.len(),
                seconds: seg.seconds(),
                slices: seg.num_slices(),
            });
            done += 1;
            on_progress(done, todo);
        }
    }
    Ok(rows)
}

/// Settings of the `evaluate_prompts` job.
#[derive(Clone, Debug)]
pub struct EvalJob {
    /// Folder of image/label pairs (see [`find_cases`]).
    pub data: PathBuf,
    /// Model checkpoint.
    pub checkpoint: PathBuf,
    /// Config preset name or YAML path.
    pub config: String,
    /// Strategies, in report order.
    pub strategies: Vec<Strategy>,
    /// Prompt simulation settings (seed included).
    pub sim: SimulationOptions,
    /// NSD tolerance (mm).
    pub nsd_tol_mm: f64,
    /// Intensity mapping.
    pub window: IntensitySpec,
    /// Slicing axis.
    pub axis: Axis,
    /// Only cases whose name contains this text.
    pub case_filter: Option<String>,
    /// At most this many cases (after the filter).
    pub max_cases: Option<usize>,
    /// Compute device.
    pub device: medsam2_core::checkpoint::DeviceKind,
    /// Compute dtype.
    pub dtype: medsam2_core::checkpoint::ComputeDType,
    /// Encoder features kept (slices).
    pub cache_frames: usize,
    /// `Some(Protocol::MedicalSam2)`: Medical-SAM2's own evaluation instead
    /// of `strategies` (see [`crate::protocols::evaluate_case_medical_sam2`]).
    pub protocol: Option<crate::protocols::Protocol>,
}

impl EvalJob {
    /// A job with the examples' defaults: every strategy, NSD at 2 mm.
    pub fn new(data: impl Into<PathBuf>, checkpoint: impl Into<PathBuf>, config: &str) -> Self {
        EvalJob {
            data: data.into(),
            checkpoint: checkpoint.into(),
            config: config.to_string(),
            strategies: Strategy::ALL.to_vec(),
            sim: SimulationOptions::default(),
            nsd_tol_mm: 2.0,
            window: IntensitySpec::Auto,
            axis: Axis::K,
            case_filter: None,
            max_cases: None,
            device: Default::default(),
            dtype: Default::default(),
            cache_frames: 64,
            protocol: None,
        }
    }
}

/// Runs the evaluation over the cases of [`EvalJob::data`]; `on_progress`
/// gets `(case index, cases, object runs done in the case, runs in the case,
/// case name)`.
pub fn run_eval_job(
    job: &EvalJob,
    on_progress: &mut dyn FnMut(usize, usize, usize, usize, &str),
) -> Result<Vec<EvalRow>> {
    if !job.data.is_dir() {
        return Err(JobError(format!(
            "--data {}: no such folder",
            job.data.display()
        )));
    }
    if !job.checkpoint.exists() {
        return Err(JobError(format!(
            "--checkpoint {}: no such file",
            job.checkpoint.display()
        )));
    }
    if job.strategies.is_empty() {
        return Err(JobError("no strategy given".into()));
    }
    if !(job.nsd_tol_mm.is_finite() && job.nsd_tol_mm >= 0.0) {
        return Err(JobError(format!("bad NSD tolerance {}", job.nsd_tol_mm)));
    }
    let mut cases = find_cases(&job.data)?;
    if let Some(f) = &job.case_filter {
        cases.retain(|c| c.name.contains(f.as_str()));
    }
    if let Some(m) = job.max_cases {
        cases.truncate(m);
    }
    if cases.is_empty() {
        return Err(JobError(format!(
            "--data {}: no cases (NAME.npz, NAME_img.nii[.gz] + NAME_seg.nii[.gz], NAME_img.nrrd + NAME.seg.nrrd)",
            job.data.display()
        )));
    }
    let model =
        medsam2_core::build_sam::build_sam2(&job.config, &job.checkpoint, job.dtype, job.device)
            .map_err(|e| {
                JobError(format!(
                    "cannot load model (--config {}, --checkpoint {}): {e}",
                    job.config,
                    job.checkpoint.display()
                ))
            })?;
    let mut rows = Vec::new();
    let n = cases.len();
    for (i, files) in cases.iter().enumerate() {
        let case = load_case(files)?;
        let intensity = job.window.intensity(&case.image);
        let slices = Slices::from_volume(&case.image, job.axis, &intensity)?;
        on_progress(i, n, 0, 1, &case.name);
        if job.protocol == Some(crate::protocols::Protocol::MedicalSam2) {
            let opts = crate::protocols::MedicalSam2Options {
                prompt_freq: job.sim.every,
                boxes: job.sim.every_box,
                seed: job.sim.seed,
                ..Default::default()
            };
            let r = crate::protocols::evaluate_case_medical_sam2(
                model.clone(),
                &case,
                &slices,
                job.axis,
                &opts,
                job.nsd_tol_mm,
            )
            .map_err(|e| JobError(format!("case {}: {e}", case.name)))?;
            rows.extend(r);
            continue;
        }
        let mut session = VolumeSession::from_slices(
            VolumeGrid::of(&case.image, job.axis),
            slices,
            model.clone(),
            session_options(job.cache_frames, false),
        )?;
        let r = evaluate_case(
            &mut session,
            &case,
            job.axis,
            &job.strategies,
            &job.sim,
            job.nsd_tol_mm,
            &mut |d, t| on_progress(i, n, d, t, &case.name),
        )
        .map_err(|e| JobError(format!("case {}: {e}", case.name)))?;
        rows.extend(r);
    }
    Ok(rows)
}

/// Mean and population standard deviation of the finite values, and how many
/// values were not finite.
pub fn mean_std(values: &[f64]) -> (f64, f64, usize) {
    let fin: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let bad = values.len() - fin.len();
    if fin.is_empty() {
        return (f64::NAN, f64::NAN, bad);
    }
    let m = fin.iter().sum::<f64>() / fin.len() as f64;
    let var = fin.iter().map(|v| (v - m).powi(2)).sum::<f64>() / fin.len() as f64;
    (m, var.sqrt(), bad)
}

fn fmt_num(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else if x.is_nan() {
        "nan".into()
    } else {
        "inf".into()
    }
}

/// CSV of the per-case rows: `case,label,strategy,dice,iou,nsd_<tol>mm,hd95_mm,pred_voxels,gt_voxels,prompted_slices,slices,seconds`.
pub fn eval_csv(rows: &[EvalRow], nsd_tol_mm: f64) -> String {
    let mut s = format!(
        "case,label,strategy,dice,iou,{},hd95_mm,pred_voxels,gt_voxels,prompted_slices,slices,seconds\n",
        metrics::nsd_column(nsd_tol_mm)
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.4}\n",
            r.case,
            r.label,
            r.strategy,
            fmt_num(r.metrics.dice, 6),
            fmt_num(r.metrics.iou, 6),
            fmt_num(r.metrics.nsd, 6),
            fmt_num(r.metrics.hd95, 6),
            r.metrics.pred_voxels,
            r.metrics.gt_voxels,
            r.prompts,
            r.slices,
            r.seconds
        ));
    }
    s
}

/// Metrics of one strategy and label over the cases.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Strategy name.
    pub strategy: String,
    /// Label.
    pub label: u32,
    /// Cases.
    pub n: usize,
    /// `(mean, population std)` of Dice.
    pub dice: (f64, f64),
    /// `(mean, population std)` of NSD.
    pub nsd: (f64, f64),
    /// `(mean, population std)` of the finite HD95 values (mm).
    pub hd95: (f64, f64),
    /// Cases whose HD95 is infinite (an empty prediction).
    pub hd95_inf: usize,
}

/// Summary per strategy and label, in first-seen order.
pub fn summary_rows(rows: &[EvalRow]) -> Vec<SummaryRow> {
    let mut keys: Vec<(String, u32)> = Vec::new();
    for r in rows {
        let k = (r.strategy.to_string(), r.label);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(strategy, label)| {
            let sel: Vec<&EvalRow> = rows
                .iter()
                .filter(|r| r.strategy == strategy && r.label == label)
                .collect();
            let get = |f: fn(&EvalRow) -> f64| sel.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let (dm, ds, _) = mean_std(&get(|r| r.metrics.dice));
            let (nm, ns, _) = mean_std(&get(|r| r.metrics.nsd));
            let (hm, hs, hd95_inf) = mean_std(&get(|r| r.metrics.hd95));
            SummaryRow {
                strategy,
                label,
                n: sel.len(),
                dice: (dm, ds),
                nsd: (nm, ns),
                hd95: (hm, hs),
                hd95_inf,
            }
        })
        .collect()
}

/// CSV of [`summary_rows`]: `strategy,label,n,dice_mean,dice_std,nsd_mean,nsd_std,hd95_mean,hd95_std,hd95_inf`.
pub fn summary_csv(rows: &[EvalRow]) -> String {
    let mut s = String::from(
        "strategy,label,n,dice_mean,dice_std,nsd_mean,nsd_std,hd95_mean,hd95_std,hd95_inf\n",
    );
    for r in summary_rows(rows) {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.strategy,
            r.label,
            r.n,
            fmt_num(r.dice.0, 6),
            fmt_num(r.dice.1, 6),
            fmt_num(r.nsd.0, 6),
            fmt_num(r.nsd.1, 6),
            fmt_num(r.hd95.0, 6),
            fmt_num(r.hd95.1, 6),
            r.hd95_inf
        ));
    }
    s
}

/// The per-case rows and the summary as fixed-width text tables.
pub fn eval_table(rows: &[EvalRow], nsd_tol_mm: f64) -> String {
    let cw = rows.iter().map(|r| r.case.len()).max().unwrap_or(4).max(4);
    let nsd = metrics::nsd_column(nsd_tol_mm);
    let mut s = format!(
        "{:<cw$} {:>5} {:<12} {:>7} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8}\n",
        "case",
        "label",
        "strategy",
        "dice",
        nsd,
        "hd95_mm",
        "pred_vox",
        "gt_vox",
        "prompts",
        "s/slice"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<cw$} {:>5} {:<12} {:>7.4} {:>8.4} {:>9} {:>9} {:>9} {:>7} {:>8.3}\n",
            r.case,
            r.label,
            r.strategy,
            r.metrics.dice,
            r.metrics.nsd,
            fmt_num(r.metrics.hd95, 2),
            r.metrics.pred_voxels,
            r.metrics.gt_voxels,
            r.prompts,
            r.seconds / r.slices.max(1) as f64
        ));
    }
    s.push_str(&format!(
        "\nsummary (mean ± population std over cases; HD95 over finite values)\n{:<12} {:>5} {:>3} {:>17} {:>17} {:>19} {:>8}\n",
        "strategy", "label", "n", "dice", nsd, "hd95_mm", "hd95_inf"
    ));
    for r in summary_rows(rows) {
        s.push_str(&format!(
            "{:<12} {:>5} {:>3} {:>17} {:>17} {:>19} {:>8}\n",
            r.strategy,
            r.label,
            r.n,
            format!("{} ± {}", fmt_num(r.dice.0, 4), fmt_num(r.dice.1, 4)),
            format!("{} ± {}", fmt_num(r.nsd.0, 4), fmt_num(r.nsd.1, 4)),
            format!("{} ± {}", fmt_num(r.hd95.0, 2), fmt_num(r.hd95.1, 2)),
            r.hd95_inf
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use medsam2_core::medical::{Geometry, VoxelData};

    #[test]
    fn prompts_parse_and_check() {
        let v = Volume::new([6, 4, 3], Geometry::default(), VoxelData::U8(vec![0; 72])).unwrap();
        let o = parse_prompts(
            &v,
            Axis::K,
            &["1,0,0,3,2".into(), "5:2,1,1,2,2".into()],
            &["1,2,1,1".into(), "5:2,1,2,0".into()],
            false,
        )
        .unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].obj_id, 1);
        assert_eq!(o[0].slices[0].bbox, Some([0.0, 0.0, 3.0, 2.0]));
        assert_eq!(o[0].slices[0].points, vec![[2.0, 1.0]]);
        assert_eq!(o[1].obj_id, 5);
        assert_eq!(o[1].slices[0].labels, vec![0]);
        for bad in [
            "3,0,0,1,1",
            "0,0,0,6,1",
            "0,0,0,1",
            "0:0,0,0,1,1",
            "x,0,0,1,1",
        ] {
            assert!(
                parse_prompts(&v, Axis::K, &[bad.into()], &[], false).is_err(),
                "{bad}"
            );
        }
        assert!(parse_prompts(&v, Axis::K, &[], &["0,1,1,2".into()], false).is_err());
        // Physical: identity geometry, so mm = voxels; axis I puts (j, k) in-plane.
        let o = parse_prompts(&v, Axis::I, &[], &["4,2,1,1".into()], true).unwrap();
        assert_eq!(
            (o[0].slices[0].slice, o[0].slices[0].points[0]),
            (4, [2.0, 1.0])
        );
        assert!(IntensitySpec::parse("nope").is_err());
        assert_eq!(
            IntensitySpec::parse("400,40").unwrap(),
            IntensitySpec::Window(Window::ABDOMEN)
        );
    }

    #[test]
    fn key_slices_and_means() {
        let ls = LabelSlices {
            label: 1,
            masks: vec![vec![]; 5],
            areas: vec![0, 3, 9, 1, 0],
        };
        assert_eq!(ls.key_slice(KeySlice::Largest), Some(2));
        assert_eq!(ls.key_slice(KeySlice::Middle), Some(2));
        let (m, s, inf) = mean_std(&[1.0, 3.0, f64::INFINITY]);
        assert_eq!((m, s, inf), (2.0, 1.0, 1));
    }
}
