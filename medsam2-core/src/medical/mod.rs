//! Medical volumes: file formats, geometry, intensity, slicing and metrics.
//!
//! * [`Volume`]: voxels (`u8` ... `f64`), dimensions, spacing, origin and
//!   direction, with index <-> physical (LPS, mm) transforms ([`volume`]).
//! * Files: NIfTI-1 ([`nifti`]) and NIfTI-2 ([`nifti2`]), NRRD ([`nrrd`]), NumPy `.npz` read-only
//!   ([`npz`]); [`read_volume`] / [`write_volume`] choose by file extension.
//! * DICOM series read from a folder ([`dicom`]; [`read_volume`] of a folder);
//!   3D Slicer segmentations with segment metadata ([`seg_nrrd`]).
//! * [`intensity`]: CT windows, percentile clipping, mapping to `0..=255`.
//! * [`slicing`]: slices along an axis, RGB slices, label assembly, prompts.
//! * [`metrics`]: Dice, IoU, normalised surface distance, HD95, per label.
//!
//! Every reader checks sizes against the bytes present (and [`MAX_VOXEL_BYTES`])
//! before allocating; malformed input is a [`MedicalError`], never a panic.

// Small fixed-size matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

mod codec;
pub mod dicom;
mod dicom_lengths;
pub mod error;
pub mod intensity;
pub mod metrics;
pub mod nifti;
pub mod nifti2;
pub mod npz;
pub mod nrrd;
pub mod seg_nrrd;
pub mod slicing;
pub mod volume;

use std::path::Path;

pub use error::{MedicalError, Result};
pub use volume::{DataType, Geometry, Volume, VoxelData, MAX_VOXEL_BYTES};

/// The array of an `.npz` sample read by default: the image.
pub const NPZ_IMAGE_KEY: &str = "imgs";
/// The array of an `.npz` sample holding the ground-truth labels.
pub const NPZ_LABEL_KEY: &str = "gts";

/// A file format, chosen from a file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// `.nii`: uncompressed NIfTI-1.
    Nii,
    /// `.nii.gz`: gzip-compressed NIfTI-1.
    NiiGz,
    /// `.nrrd` (including Slicer's `.seg.nrrd`): NRRD with attached data, gzip-encoded on write.
    Nrrd,
    /// `.nhdr`: NRRD header with a detached data file (read only).
    Nhdr,
    /// `.npz`: NumPy archive (read only).
    Npz,
    /// A folder: a DICOM series (read only, see [`dicom`]).
    DicomSeries,
}

impl FileFormat {
    /// The format of `path` from its extension (case-insensitive).
    pub fn from_path(path: impl AsRef<Path>) -> Result<FileFormat> {
        let name = path.as_ref().to_string_lossy().to_ascii_lowercase();
        let file_ext = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".npz"]
            .iter()
            .any(|e| name.ends_with(e));
        // A folder is a DICOM series, unless it is named like a volume file:
        // then the reader refuses it as "a directory, not a regular file".
        if !file_ext && path.as_ref().is_dir() {
            return Ok(FileFormat::DicomSeries);
        }
        Ok(if name.ends_with(".nii.gz") {
            FileFormat::NiiGz
        } else if name.ends_with(".nii") {
            FileFormat::Nii
        } else if name.ends_with(".nrrd") {
            FileFormat::Nrrd
        } else if name.ends_with(".nhdr") {
            FileFormat::Nhdr
        } else if name.ends_with(".npz") {
            FileFormat::Npz
        } else {
            return Err(MedicalError::UnknownFormat(
                path.as_ref().display().to_string(),
            ));
        })
    }

    /// Whether [`write_volume`] can write this format.
    pub fn can_write(self) -> bool {
        matches!(self, FileFormat::Nii | FileFormat::NiiGz | FileFormat::Nrrd)
    }
}

/// Reads a volume, choosing the reader from the extension; for `.npz` the
/// image array [`NPZ_IMAGE_KEY`] is read; a folder is read as a DICOM series
/// (the only one it holds; use [`dicom::read_dicom_dir`] to choose a series).
pub fn read_volume(path: impl AsRef<Path>) -> Result<Volume> {
    read_volume_with_key(path, NPZ_IMAGE_KEY)
}

/// Like [`read_volume`], reading array `npz_key` from `.npz` files.
pub fn read_volume_with_key(path: impl AsRef<Path>, npz_key: &str) -> Result<Volume> {
    let path = path.as_ref();
    match FileFormat::from_path(path)? {
        FileFormat::Nii | FileFormat::NiiGz => nifti::read_nifti(path),
        FileFormat::Nrrd | FileFormat::Nhdr => nrrd::read_nrrd(path),
        FileFormat::Npz => npz::read_npz_volume(path, npz_key),
        FileFormat::DicomSeries => {
            Ok(dicom::read_dicom_dir(path, &dicom::DicomOptions::default())?.volume)
        }
    }
}

/// Writes a volume, choosing the writer from the extension (`.nii`, `.nii.gz`,
/// `.nrrd` with gzip encoding), to a temporary file in the destination folder
/// renamed into place (see [`crate::output`]).
pub fn write_volume(path: impl AsRef<Path>, volume: &Volume) -> Result<()> {
    let path = path.as_ref();
    match FileFormat::from_path(path)? {
        FileFormat::Nii | FileFormat::NiiGz => nifti::write_nifti(path, volume),
        FileFormat::Nrrd => nrrd::write_nrrd(path, volume, nrrd::NrrdEncoding::Gzip),
        f @ (FileFormat::Nhdr | FileFormat::Npz | FileFormat::DicomSeries) => {
            Err(MedicalError::InvalidArgument(format!(
                "cannot write {f:?} files ({}); use .nii, .nii.gz or .nrrd",
                path.display()
            )))
        }
    }
}

/// Converts `input` to `output` (formats from the extensions), keeping voxels
/// and geometry; `npz_key` selects the array of an `.npz` input. Returns the
/// volume. An `output` that is the same file as `input` is refused before
/// anything is read, and the output is written atomically.
pub fn convert(input: impl AsRef<Path>, output: impl AsRef<Path>, npz_key: &str) -> Result<Volume> {
    let out_fmt = FileFormat::from_path(output.as_ref())?;
    if !out_fmt.can_write() {
        return Err(MedicalError::InvalidArgument(format!(
            "cannot write {out_fmt:?} files; use .nii, .nii.gz or .nrrd"
        )));
    }
    let (input, output) = (input.as_ref(), output.as_ref());
    crate::output::check_output(output, &[input])
        .map_err(|e| MedicalError::Io(e).with_path(output))?;
    let v = read_volume_with_key(input, npz_key)?;
    write_volume(output, &v)?;
    Ok(v)
}
