//! Helpers shared by the integration tests (`mod common;` in each).

use std::path::{Path, PathBuf};

/// The shared real CT cases (`MEDSAM2_DATA`, else `../shared/data/ct-lesion`
/// next to the repository), or `None` after printing why the test skips.
pub fn ct_data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("MEDSAM2_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ct-lesion"));
    if d.join("nifti").is_dir() && d.join("nrrd").is_dir() {
        Some(d)
    } else {
        eprintln!(
            "skipped: CT data not found at {} (set MEDSAM2_DATA)",
            d.display()
        );
        None
    }
}
