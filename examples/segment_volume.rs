//! Segment a 3-D volume from prompts on one slice: the main job.
//!
//! ```text
//! cargo run --release --example segment_volume -- \
//!     --volume ct.nii.gz --out /tmp/ct_seg.nii.gz \
//!     --checkpoint MedSAM2_latest.pt --config medsam2 \
//!     --box 6,250,230,300,280 --montage /tmp/ct_seg.png
//! ```
//! Reads a NIfTI, NRRD or `.npz` volume or a DICOM series folder, maps it to grey levels, cuts it into
//! slices along an axis, prompts one or more objects (boxes, clicks or a
//! label volume's masks), propagates through the volume, writes the label
//! volume with the input's grid and geometry and prints a summary. Run with
//! `--help` for every flag. The work is done by
//! `medsam2_tools::volume_job::run_segment_job`.

#[path = "common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::medical::intensity::Normalization;
use medsam2_tools::protocols::Protocol;
use medsam2_tools::volume_job::{
    parse_axis, run_segment_job, IntensitySpec, JobError, KeySlice, Propagation, SegmentJob,
    SegmentReport,
};

const AFTER_HELP: &str = "\
COORDINATES
  A slice is the 2-D image at index Z along --axis (default 2, the last voxel
  axis: the axial slices of most CT; `imgs[Z]` of an .npz [D, H, W] array).
  Within a slice, X is the column and Y the row, in voxel indices (pixel
  centres at integers): for axis 2, X = i and Y = j of the NIfTI/NRRD voxel
  grid (for axis 1: X = i, Y = k; for axis 0: X = j, Y = k). Slices are not
  flipped, so X/Y are what a viewer showing the raw array shows.
  With --physical, coordinates are LPS millimetres (x to the patient's left,
  y posterior, z superior, as ITK and 3D Slicer use; NIfTI's RAS x and y
  change sign): --box X0,Y0,Z0,X1,Y1,Z1 gives two opposite corners (the box
  is drawn on the slice nearest their middle), --point X,Y,Z,LABEL a point
  (on the nearest slice).

OBJECTS
  The n-th --box without a prefix is object n; --point without a prefix
  belongs to object 1. Prefix either with `OBJ:` to choose the object, e.g.
  `--box 2:7,10,10,60,50 --point 2:7,30,30,1`. Several prompts of one
  object on different slices are all used. Object ids are the label values
  of the output. --mask FILE adds one object per non-zero label L (id L),
  prompted with its mask on its key slice (--mask-slice).

INTENSITY
  --window auto (default): u8 volumes (already windowed, like the MedSAM2
  .npz samples) are used as they are; other types get the abdomen CT
  window W400 L40. Presets: abdomen, soft-tissue, lung, bone, brain,
  mediastinum; or W,L; `percentile` (same as --percentile) clips MR and
  other modalities to the 0.5-99.5th percentiles of non-zero voxels.

EXIT STATUS
  0 on success; 1 with one line `error: ...` on any bad flag or file.";

/// Segment a 3-D medical volume from prompts on one slice (SAM 2 / MedSAM2).
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// Input volume: .nii, .nii.gz, .nrrd, .nhdr, .npz (array `imgs`) or a
    /// folder holding a DICOM series.
    #[arg(long, value_name = "IN|DIR")]
    volume: PathBuf,
    /// SeriesInstanceUID to read when the DICOM folder holds several series.
    #[arg(long, value_name = "UID")]
    series: Option<String>,
    /// Output label volume: .nii, .nii.gz or .nrrd (input's grid and
    /// geometry), or .seg.nrrd (3D Slicer, one named segment per object).
    #[arg(long, value_name = "OUT")]
    out: PathBuf,
    /// Name of object OBJ's segment in a .seg.nrrd output (`OBJ:NAME`,
    /// repeatable; default `object OBJ`).
    #[arg(long, value_name = "OBJ:NAME")]
    segment_name: Vec<String>,
    /// Model checkpoint: .pt, .pth or .safetensors with the official key names.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// Model config: a preset (medsam2, medical-sam2, sam2.1_hiera_t|s|b+|l,
    /// sam2_hiera_t|s|b+|l) or an official YAML file.
    #[arg(long, value_name = "PRESET|YAML", default_value = "medsam2")]
    config: String,
    /// Box prompt `[OBJ:]Z,X0,Y0,X1,Y1` (voxels) or, with --physical,
    /// `[OBJ:]X0,Y0,Z0,X1,Y1,Z1` (mm). Repeatable: one object each.
    #[arg(long = "box", value_name = "BOX", allow_hyphen_values = true)]
    boxes: Vec<String>,
    /// Click `[OBJ:]Z,X,Y,LABEL` (voxels) or, with --physical,
    /// `[OBJ:]X,Y,Z,LABEL` (mm); LABEL 1 = object, 0 = background. Repeatable.
    #[arg(long = "point", value_name = "POINT", allow_hyphen_values = true)]
    points: Vec<String>,
    /// Prompt coordinates are LPS millimetres instead of voxel indices.
    #[arg(long)]
    physical: bool,
    /// Label volume on the input's grid (.npz: array `gts`): each non-zero
    /// label becomes an object prompted with its mask on its key slice.
    #[arg(long, value_name = "FILE")]
    mask: Option<PathBuf>,
    /// Key slice of each --mask label: largest (area), middle, or a slice number.
    #[arg(long, value_name = "largest|middle|Z", default_value = "largest")]
    mask_slice: String,
    /// Intensity: auto, a CT preset, W,L, percentile or none.
    #[arg(long, value_name = "PRESET|W,L", default_value = "auto")]
    window: String,
    /// Shortcut for --window percentile (MR and other modalities).
    #[arg(long)]
    percentile: bool,
    /// Slicing axis: 0, 1 or 2 (voxel index axis; default the last).
    #[arg(long, value_name = "0|1|2", default_value = "2")]
    axis: String,
    /// separate (MedSAM2: forward, then a fresh backward pass), joint (one
    /// session, forward then backward) or forward.
    #[arg(long, value_name = "MODE", default_value = "separate")]
    propagation: String,
    /// Keep only each object's largest 3-D connected component.
    #[arg(long)]
    largest_component: bool,
    /// A paper's pipeline, exactly as its script (one --box): medsam2-ct
    /// (box; forward, reset, backward; largest component) or medsam2-recist
    /// (box -> mask; two mask-prompted passes). Overrides --propagation and
    /// --largest-component.
    #[arg(long, value_name = "NAME")]
    protocol: Option<String>,
    /// Write a PNG montage of the prompted slice and its neighbours with the
    /// masks overlaid and the prompts drawn.
    #[arg(long, value_name = "PNG")]
    montage: Option<PathBuf>,
    /// Neighbours on each side of the prompted slice in the montage.
    #[arg(long, value_name = "N", default_value_t = 2)]
    montage_neighbours: usize,
    /// Device: cpu, cuda[:N] (feature `cuda`), metal[:N] (feature `metal`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, f16 or bf16 (CPU: bf16 = bf16 linear layers with
    /// AVX512-BF16, else f32; f16 = f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Slices whose encoder features are kept in memory.
    #[arg(long, value_name = "N", default_value_t = 32)]
    cache_frames: usize,
    /// Fill background holes of at most N pixels in each slice's
    /// low-resolution mask, as the official video predictor does on a GPU
    /// (`fill_hole_area`); 0 = off, as the official code on a CPU.
    #[arg(long, value_name = "N", default_value_t = 8)]
    fill_hole_area: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn job_from(args: &Args) -> Result<SegmentJob, JobError> {
    let mut job = SegmentJob::new(&args.volume, &args.out, &args.checkpoint, &args.config);
    job.series = args.series.clone();
    for n in &args.segment_name {
        let (id, name) = n
            .split_once(':')
            .and_then(|(i, name)| Some((i.trim().parse::<u32>().ok()?, name.trim())))
            .filter(|(i, name)| *i > 0 && !name.is_empty())
            .ok_or_else(|| {
                JobError(format!(
                    "--segment-name `{n}`: expected OBJ:NAME, e.g. 1:liver"
                ))
            })?;
        job.segment_names.push((id, name.to_string()));
    }
    job.boxes = args.boxes.clone();
    job.points = args.points.clone();
    job.physical = args.physical;
    job.mask = args.mask.clone();
    job.mask_slice = KeySlice::parse(&args.mask_slice)?;
    job.window = if args.percentile {
        IntensitySpec::Percentile
    } else {
        IntensitySpec::parse(&args.window)?
    };
    job.axis = parse_axis(&args.axis)?;
    job.propagation = Propagation::parse(&args.propagation)?;
    job.largest_component = args.largest_component;
    job.protocol = args.protocol.as_deref().map(Protocol::parse).transpose()?;
    job.montage_neighbours = args.montage.as_ref().map(|_| args.montage_neighbours);
    job.device = DeviceKind::parse(&args.device)?;
    job.dtype = ComputeDType::parse(&args.dtype)?;
    job.cache_frames = args.cache_frames;
    job.fill_hole_area = args.fill_hole_area;
    if args.boxes.is_empty() && args.points.is_empty() && args.mask.is_none() {
        return Err(JobError("no prompt: give --box, --point or --mask".into()));
    }
    if let Some(m) = &args.montage {
        let mut inputs: Vec<&std::path::Path> = vec![&args.volume, &args.out];
        if let Some(mask) = &args.mask {
            inputs.push(mask);
        }
        medsam2_tools::volume_job::check_output_against(m, "--montage", &[".png"], &inputs)?;
    }
    Ok(job)
}

fn describe_norm(n: &Normalization) -> String {
    match n {
        Normalization::Identity => "values as stored (0..255)".into(),
        Normalization::Window(w) => format!("CT window W{} L{}", w.width, w.level),
        Normalization::Percentile { lower, upper, .. } => {
            format!("percentiles {lower}-{upper} of non-zero voxels")
        }
    }
}

fn print_summary(args: &Args, job: &SegmentJob, r: &SegmentReport) {
    let g = r.input.geometry();
    println!(
        "volume:  {} ({} voxels {:?}, spacing {:.3} x {:.3} x {:.3} mm)",
        args.volume.display(),
        r.input.data_type().name(),
        r.input.dims(),
        g.spacing[0],
        g.spacing[1],
        g.spacing[2]
    );
    if let Some((series, skipped)) = &r.dicom {
        println!(
            "dicom:   series {}, {} non-image files skipped",
            series,
            skipped.len()
        );
    }
    println!(
        "slices:  {} along axis {} ({}x{} pixels), {}",
        r.num_slices,
        job.axis as usize,
        r.width,
        r.height,
        describe_norm(&r.normalization)
    );
    println!("model:   {} loaded in {:.2} s", args.config, r.load_seconds);
    for o in &r.prompts {
        for s in &o.slices {
            let mut what = Vec::new();
            if let Some(b) = s.bbox {
                what.push(format!("box ({}, {})-({}, {})", b[0], b[1], b[2], b[3]));
            }
            for (p, l) in s.points.iter().zip(&s.labels) {
                what.push(format!("click ({}, {}) label {l}", p[0], p[1]));
            }
            if let Some(m) = &s.mask {
                what.push(format!(
                    "mask of {} pixels",
                    m.iter().filter(|&&v| v != 0).count()
                ));
            }
            println!(
                "prompt:  object {} slice {}: {}",
                o.obj_id,
                s.slice,
                what.join(", ")
            );
        }
    }
    println!(
        "\n{} slices, {} object(s); {:?} propagation ({} slice visits)",
        r.num_slices,
        r.objects.len(),
        job.propagation,
        r.visits
    );
    println!(
        "{:>6} {:>10} {:>11} {:>7} {:>9}",
        "object", "voxels", "volume_ml", "slices", "range"
    );
    for o in &r.objects {
        println!(
            "{:>6} {:>10} {:>11.3} {:>7} {:>9}",
            o.obj_id,
            o.voxels,
            o.ml,
            o.slices,
            o.slice_range
                .map_or("-".to_string(), |(a, b)| format!("{a}..{b}"))
        );
    }
    println!(
        "time:    prompts {:.2} s, propagation {:.2} s, {:.1} ms per slice ({} slices)",
        r.prompt_seconds,
        r.propagation_seconds,
        1000.0 * r.seconds_per_slice(),
        r.num_slices
    );
    println!(
        "wrote:   {} ({} labels, input geometry)",
        args.out.display(),
        r.labels.data_type().name()
    );
}

fn run(args: &Args) -> Result<(), JobError> {
    let job = job_from(args)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} propagating [{bar:40}] {pos}/{len} slices {elapsed_precise} (eta {eta})",
        )
        .map_err(|e| JobError(e.to_string()))?
        .progress_chars("=> "),
    );
    let report = run_segment_job(&job, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    });
    bar.finish_and_clear();
    let report = report?;
    print_summary(args, &job, &report);
    if let (Some(path), Some(img)) = (&args.montage, &report.montage) {
        use image::ImageEncoder as _;
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(
                &img.data,
                img.width as u32,
                img.height as u32,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| JobError(format!("{}: {e}", path.display())))?;
        medsam2_core::output::write_atomic(path, &png)
            .map_err(|e| JobError(format!("{}: {e}", path.display())))?;
        let lo = report.key_slice.saturating_sub(args.montage_neighbours);
        let hi = (report.key_slice + args.montage_neighbours).min(report.num_slices - 1);
        println!(
            "wrote:   {} ({}x{}, slices {lo}..{hi}, prompted slice {} framed)",
            path.display(),
            img.width,
            img.height,
            report.key_slice
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(|args: &Args| run(args))
}
