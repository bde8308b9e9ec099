//! The `evaluate_prompts` job: the papers' prompting strategies simulated
//! from the ground truth, per case and label, with Dice, NSD and HD95.

use super::*;

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
    let (w, h) = slicing::slice_size(dims, axis);
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
    /// Small holes filled in every slice's low-resolution mask, in pixels
    /// ([`medsam2_core::sam2_video_predictor::SessionOptions::fill_hole_area`];
    /// 8 as the official predictor on a GPU, 0 = off).
    pub fill_hole_area: usize,
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
            fill_hole_area: 8,
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
    check_checkpoint(&job.checkpoint)?;
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
    let model = load_model(&job.config, &job.checkpoint, job.dtype, job.device)?;
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
                fill_hole_area: job.fill_hole_area,
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
            session_options(job.cache_frames, false, job.fill_hole_area),
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
