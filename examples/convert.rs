//! Converts a medical volume between formats, keeping voxels and geometry.
//!
//! ```text
//! cargo run --release --example convert -- INPUT OUTPUT [--npz-key imgs]
//! ```
//! Formats follow the extensions: `.nii`, `.nii.gz`, `.nrrd` (gzip-encoded) for
//! reading and writing; `.nhdr` and `.npz` (array `--npz-key`, default `imgs`)
//! for reading only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use medsam2_core::medical;

/// Convert a medical volume (NIfTI, NRRD, NPZ) to NIfTI or NRRD.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Input file: .nii, .nii.gz, .nrrd, .nhdr or .npz.
    input: PathBuf,
    /// Output file: .nii, .nii.gz or .nrrd.
    output: PathBuf,
    /// Array to read from an .npz input (`imgs` = image, `gts` = labels).
    #[arg(long, default_value = medical::NPZ_IMAGE_KEY)]
    npz_key: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let t0 = Instant::now();
    match medical::convert(&args.input, &args.output, &args.npz_key) {
        Ok(v) => {
            let g = v.geometry();
            println!(
                "{} -> {}: {:?} voxels of {}, spacing {:?} mm, origin {:?} mm, direction {:?} ({:.0} ms)",
                args.input.display(),
                args.output.display(),
                v.dims(),
                v.data_type().name(),
                g.spacing,
                g.origin,
                g.direction,
                t0.elapsed().as_secs_f64() * 1e3
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
