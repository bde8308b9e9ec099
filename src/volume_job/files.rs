//! Reading the jobs' inputs and writing their outputs (names checked
//! before any work, errors naming the file).

use super::*;

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

/// Fails unless the checkpoint `--checkpoint` names exists (checked before
/// the slow parts of a job).
pub fn check_checkpoint(checkpoint: &Path) -> Result<()> {
    if !checkpoint.exists() {
        return Err(JobError(format!(
            "--checkpoint {}: no such file",
            checkpoint.display()
        )));
    }
    Ok(())
}

/// Loads a job's model (`build_sam2`), the error naming both files.
pub fn load_model(
    config: &str,
    checkpoint: &Path,
    dtype: medsam2_core::checkpoint::ComputeDType,
    device: medsam2_core::checkpoint::DeviceKind,
) -> Result<std::sync::Arc<medsam2_core::modeling::sam2_base::Sam2Base>> {
    medsam2_core::build_sam::build_sam2(config, checkpoint, dtype, device).map_err(|e| {
        JobError(format!(
            "cannot load model (--config {config}, --checkpoint {}): {e}",
            checkpoint.display()
        ))
    })
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
