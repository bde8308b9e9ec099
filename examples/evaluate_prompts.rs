//! Evaluate a model over a folder of image/label pairs with the prompts the
//! papers simulate from the ground truth.
//!
//! ```text
//! cargo run --release --example evaluate_prompts -- \
//!     --data ../shared/data/ct-lesion --checkpoint MedSAM2_latest.pt \
//!     --config medsam2 --csv /tmp/eval.csv
//! ```
//! For every case, every non-zero ground-truth label and every strategy, the
//! label is segmented on its own (a fresh session state) and compared with
//! the ground truth: Dice, IoU, NSD (default tolerance 2 mm) and HD95 (mm),
//! spacing-aware (`medsam2_core::medical::metrics`). Prints a per-case table
//! and a summary (mean ± population std per strategy and label); `--csv` and
//! `--summary-csv` write them. Random choices are seeded (`--seed`), per
//! case, label and strategy, so two runs give the same numbers.

#[path = "common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_tools::protocols::Protocol;
use medsam2_tools::volume_job::{
    eval_csv, eval_table, parse_axis, run_eval_job, summary_csv, EvalJob, IntensitySpec, JobError,
    KeySlice, Strategy,
};

const AFTER_HELP: &str = "\
FOLDER LAYOUT (not recursive)
  NAME.npz with arrays `imgs` (image) and `gts` (labels) [D, H, W];
  NAME_img.nii[.gz] + NAME_seg.nii[.gz];  NAME_img.nrrd + NAME.seg.nrrd.

STRATEGIES (--strategies, comma-separated; default all)
  key-box       bowang-lab MedSAM2: the ground truth's bounding box on the key
                slice (--key-slice largest|middle; --box-shift enlarges it by
                a random 0..N pixels, as MedSAM2's mask2D_to_bbox), propagated
                forward, then (session reset) backward from the key slice;
                the largest 3-D connected component is kept (--no-largest-component).
  every-k       MedicineToken Medical-SAM2: a prompt on slices 0, k, 2k, ...
                (--every k, default 2): a click on a random pixel of the object,
                or with --every-prompt box its bounding box; an empty mask
                where the object is absent (as Medical-SAM2); propagated
                forward from slice 0.
  center-click  one click at the object's centre (the pixel farthest from
                its border) on its largest slice; propagated both ways.

Slices and pixel coordinates follow segment_volume --help (axis 2 default).";

/// Evaluate prompting strategies (MedSAM2, Medical-SAM2, one click) over a folder.
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// Folder of image/label pairs.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Model checkpoint: .pt, .pth or .safetensors.
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// Model config: a preset name or an official YAML file.
    #[arg(long, value_name = "PRESET|YAML", default_value = "medsam2")]
    config: String,
    /// Strategies: key-box, every-k, center-click (comma-separated).
    #[arg(long, default_value = "key-box,every-k,center-click")]
    strategies: String,
    /// Key slice of key-box: largest (area) or middle (of the object's range).
    #[arg(long, value_name = "largest|middle", default_value = "largest")]
    key_slice: String,
    /// key-box: enlarge the box by a random 0..=N pixels (0: the tight box).
    #[arg(long, value_name = "N", default_value_t = 0)]
    box_shift: usize,
    /// every-k: prompt every k-th slice.
    #[arg(long, value_name = "K", default_value_t = 2)]
    every: usize,
    /// every-k: click or box.
    #[arg(long, value_name = "click|box", default_value = "click")]
    every_prompt: String,
    /// key-box: keep every component instead of the largest.
    #[arg(long)]
    no_largest_component: bool,
    /// medical-sam2: Medical-SAM2's own 3D evaluation instead of the
    /// strategies: all labels in one session, slices and labels resized to
    /// the model size, prompts every --every slices (--every-prompt box is
    /// theirs), forward from slice 0, masks at logits > 0.5, scored on the
    /// model-size grid.
    #[arg(long, value_name = "NAME")]
    protocol: Option<String>,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// NSD tolerance in mm.
    #[arg(long, value_name = "MM", default_value_t = 2.0)]
    nsd_tol: f64,
    /// Intensity: auto, a CT preset, W,L, percentile or none.
    #[arg(long, value_name = "PRESET|W,L", default_value = "auto")]
    window: String,
    /// Shortcut for --window percentile.
    #[arg(long)]
    percentile: bool,
    /// Slicing axis: 0, 1 or 2.
    #[arg(long, value_name = "0|1|2", default_value = "2")]
    axis: String,
    /// Only cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    cases: Option<String>,
    /// At most this many cases.
    #[arg(long, value_name = "N")]
    max_cases: Option<usize>,
    /// Write the per-case metrics as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write the summary (mean, std per strategy and label) as CSV.
    #[arg(long, value_name = "FILE")]
    summary_csv: Option<PathBuf>,
    /// Device: cpu, cuda[:N], metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Slices whose encoder features are kept (reused across strategies).
    #[arg(long, value_name = "N", default_value_t = 64)]
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

fn job_from(args: &Args) -> Result<EvalJob, JobError> {
    let mut job = EvalJob::new(&args.data, &args.checkpoint, &args.config);
    job.strategies = args
        .strategies
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Strategy::parse)
        .collect::<Result<_, _>>()?;
    job.sim.key_slice = match KeySlice::parse(&args.key_slice)? {
        k @ (KeySlice::Largest | KeySlice::Middle) => k,
        KeySlice::Fixed(_) => return Err(JobError("--key-slice: largest or middle".into())),
    };
    job.sim.box_shift = args.box_shift;
    if args.every == 0 {
        return Err(JobError("--every must be at least 1".into()));
    }
    job.sim.every = args.every;
    job.sim.every_box = match args.every_prompt.as_str() {
        "click" => false,
        "box" => true,
        other => return Err(JobError(format!("--every-prompt `{other}`: click or box"))),
    };
    job.sim.largest_component = !args.no_largest_component;
    job.sim.seed = args.seed;
    job.protocol = match args.protocol.as_deref().map(Protocol::parse).transpose()? {
        p @ (None | Some(Protocol::MedicalSam2)) => p,
        Some(p) => {
            return Err(JobError(format!(
                "--protocol {}: run it per volume with segment_volume --protocol (key-box is its evaluation)",
                p.name()
            )))
        }
    };
    job.nsd_tol_mm = args.nsd_tol;
    job.window = if args.percentile {
        IntensitySpec::Percentile
    } else {
        IntensitySpec::parse(&args.window)?
    };
    job.axis = parse_axis(&args.axis)?;
    job.case_filter = args.cases.clone();
    job.max_cases = args.max_cases;
    job.device = DeviceKind::parse(&args.device)?;
    job.dtype = ComputeDType::parse(&args.dtype)?;
    job.cache_frames = args.cache_frames;
    job.fill_hole_area = args.fill_hole_area;
    for (flag, p) in [("--csv", &args.csv), ("--summary-csv", &args.summary_csv)] {
        if let Some(p) = p {
            medsam2_tools::volume_job::check_output(p, flag, &[".csv"])?;
        }
    }
    Ok(job)
}

fn run(args: &Args) -> Result<(), JobError> {
    let job = job_from(args)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1000)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent}% {elapsed_precise} {msg}")
            .map_err(|e| JobError(e.to_string()))?
            .progress_chars("=> "),
    );
    let rows = run_eval_job(&job, &mut |i, n, d, t, name| {
        let frac = (i as f64 + d as f64 / t.max(1) as f64) / n.max(1) as f64;
        bar.set_position((1000.0 * frac) as u64);
        bar.set_message(format!("case {}/{n} {name}", i + 1));
    });
    bar.finish_and_clear();
    let rows = rows?;
    println!(
        "{} (seed {}, NSD tolerance {} mm, config {})\n",
        args.data.display(),
        args.seed,
        args.nsd_tol,
        args.config
    );
    print!("{}", eval_table(&rows, job.nsd_tol_mm));
    if let Some(p) = &args.csv {
        medsam2_core::output::write_atomic(p, eval_csv(&rows, job.nsd_tol_mm).as_bytes())
            .map_err(|e| JobError(format!("{}: {e}", p.display())))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &args.summary_csv {
        medsam2_core::output::write_atomic(p, summary_csv(&rows).as_bytes())
            .map_err(|e| JobError(format!("{}: {e}", p.display())))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(|args: &Args| run(args))
}
