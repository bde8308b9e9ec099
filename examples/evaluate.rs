//! Per-label segmentation metrics of a prediction against a ground truth.
//!
//! ```text
//! cargo run --release --example evaluate -- --pred FILE --gt FILE [--csv FILE]
//! ```
//! Prints Dice, IoU, normalised surface distance at 2 mm and HD95 (mm) for every
//! non-zero label; `--csv` also writes them with the header
//! `label,dice,iou,nsd_2mm,hd95_mm`. Files may be NIfTI, NRRD or `.npz` (the
//! `gts` array unless `--pred-key` / `--gt-key` say otherwise). See
//! `medsam2_core::medical::metrics` for the definitions and empty-mask cases.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use medsam2_core::medical::{self, metrics};

/// NSD tolerance of the report (mm).
const NSD_TOLERANCE_MM: f64 = 2.0;

/// Evaluate a predicted label volume against a ground truth.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Predicted label volume.
    #[arg(long)]
    pred: PathBuf,
    /// Ground-truth label volume (same grid).
    #[arg(long)]
    gt: PathBuf,
    /// Also write the metrics as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Array to read from an .npz prediction.
    #[arg(long, default_value = medical::NPZ_LABEL_KEY)]
    pred_key: String,
    /// Array to read from an .npz ground truth.
    #[arg(long, default_value = medical::NPZ_LABEL_KEY)]
    gt_key: String,
}

fn run(args: &Args) -> medical::Result<()> {
    if let Some(path) = &args.csv {
        // Before any work: never the prediction or the ground truth itself.
        medsam2_core::output::check_output(path, &[&args.pred, &args.gt])
            .map_err(|e| medical::MedicalError::Io(e).with_path(path))?;
    }
    let m = metrics::evaluate_files(
        &args.pred,
        &args.gt,
        &args.pred_key,
        &args.gt_key,
        NSD_TOLERANCE_MM,
    )?;
    print!("{}", metrics::metrics_table(&m, NSD_TOLERANCE_MM));
    if let Some(path) = &args.csv {
        medsam2_core::output::write_atomic(
            path,
            metrics::metrics_csv(&m, NSD_TOLERANCE_MM).as_bytes(),
        )
        .map_err(|e| medical::MedicalError::Io(e).with_path(path))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
