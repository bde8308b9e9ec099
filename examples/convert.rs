//! Converts a medical volume between formats, keeping voxels and geometry.
//!
//! ```text
//! cargo run --release --example convert -- INPUT OUTPUT [--npz-key imgs]
//! ```
//! Formats follow the extensions: `.nii`, `.nii.gz`, `.nrrd` (gzip-encoded) for
//! reading and writing; `.nhdr` and `.npz` (array `--npz-key`, default `imgs`)
//! for reading only. An input folder is read as a DICOM series (`--series UID`
//! chooses one when it holds several). `--nifti2` writes NIfTI-2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use medsam2_core::medical;

/// Convert a medical volume (NIfTI, NRRD, NPZ, DICOM folder) to NIfTI or NRRD.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Input file: .nii, .nii.gz, .nrrd, .nhdr or .npz, or a DICOM folder.
    input: PathBuf,
    /// SeriesInstanceUID to read when the DICOM folder holds several series.
    #[arg(long, value_name = "UID")]
    series: Option<String>,
    /// Write NIfTI-2 (64-bit sizes, f64 transforms) instead of NIfTI-1.
    #[arg(long)]
    nifti2: bool,
    /// Output file: .nii, .nii.gz or .nrrd.
    output: PathBuf,
    /// Array to read from an .npz input (`imgs` = image, `gts` = labels).
    #[arg(long, default_value = medical::NPZ_IMAGE_KEY)]
    npz_key: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let t0 = Instant::now();
    match run(&args) {
        Ok((v, note)) => {
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
            if !note.is_empty() {
                println!("{note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the input (a DICOM series for a folder) and writes the output; the
/// note says which series was read and how many files were skipped.
fn run(args: &Args) -> medical::Result<(medical::Volume, String)> {
    if args.input.is_dir() || args.series.is_some() || args.nifti2 {
        let fmt = medical::FileFormat::from_path(&args.output)?;
        if !fmt.can_write()
            || (args.nifti2
                && !matches!(fmt, medical::FileFormat::Nii | medical::FileFormat::NiiGz))
        {
            return Err(medical::MedicalError::InvalidArgument(format!(
                "cannot write {} (use .nii, .nii.gz{})",
                args.output.display(),
                if args.nifti2 {
                    " with --nifti2"
                } else {
                    " or .nrrd"
                }
            )));
        }
        let (v, note) = if args.input.is_dir() {
            let opts = medical::dicom::DicomOptions {
                series_uid: args.series.clone(),
                ..Default::default()
            };
            let s = medical::dicom::read_dicom_dir(&args.input, &opts)?;
            let note = format!(
                "DICOM series {}: {} slices, {} non-image files skipped",
                s.series,
                s.files.len(),
                s.skipped.len()
            );
            (s.volume, note)
        } else if args.series.is_some() {
            return Err(medical::MedicalError::InvalidArgument(
                "--series applies to a DICOM folder input".into(),
            ));
        } else {
            (
                medical::read_volume_with_key(&args.input, &args.npz_key)?,
                String::new(),
            )
        };
        if args.nifti2 {
            medical::nifti2::write_nifti2(&args.output, &v)?;
        } else {
            medical::write_volume(&args.output, &v)?;
        }
        return Ok((v, note));
    }
    Ok((
        medical::convert(&args.input, &args.output, &args.npz_key)?,
        String::new(),
    ))
}
