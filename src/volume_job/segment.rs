//! The `segment_volume` job: read, prompt, segment, write, report.

use super::*;

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
    /// Small holes filled in every slice's low-resolution mask, in pixels
    /// ([`medsam2_core::sam2_video_predictor::SessionOptions::fill_hole_area`];
    /// 8 as the official predictor on a GPU, 0 = off).
    pub fill_hole_area: usize,
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
            fill_hole_area: 8,
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
/// features kept (at least 1); `non_overlap` for several objects; holes of
/// at most `fill_hole_area` pixels filled.
pub fn session_options(
    cache_frames: usize,
    non_overlap: bool,
    fill_hole_area: usize,
) -> SessionOptions {
    SessionOptions {
        feature_cache_frames: cache_frames.max(1),
        non_overlap_masks: non_overlap,
        fill_hole_area,
        ..Default::default()
    }
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
    check_checkpoint(&job.checkpoint)?;
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
    let model = load_model(&job.config, &job.checkpoint, job.dtype, job.device)?;
    let load_seconds = t.elapsed().as_secs_f64();
    let seg = if let Some(p) = job.protocol {
        crate::protocols::segment_with_protocol(model, &slices, &prompts, p, job.fill_hole_area)?
    } else {
        let mut session = VolumeSession::from_slices(
            VolumeGrid::of(&input, job.axis),
            slices.clone(),
            model,
            session_options(job.cache_frames, prompts.len() > 1, job.fill_hole_area),
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
