//! Helpers shared by the integration tests (`mod common;` in each).

use std::path::{Path, PathBuf};

use medsam2_core::medical::{Geometry, Volume, VoxelData};

/// The shared real CT cases (`MEDSAM2_DATA`, else `../shared/data/ct-lesion`
/// next to the repository), or `None` after printing why the test skips.
#[allow(dead_code)] // not every test binary uses it
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

/// A small i16 "CT" volume (HU), 40 × 32 × 7, with an ellipsoid of 120 HU
/// (centre (20, 15, 3), radii (8, 6, 2.5) voxels) on `background(i)` HU
/// (`i` the first voxel index), in an in-plane-rotated geometry with
/// anisotropic spacing and an origin.
#[allow(dead_code)] // not every test binary uses it
pub fn ellipsoid_ct(background: impl Fn(usize) -> i16) -> Volume {
    let dims = [40, 32, 7];
    let mut v = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let r = ((i as f64 - 20.0) / 8.0).powi(2)
                    + ((j as f64 - 15.0) / 6.0).powi(2)
                    + ((k as f64 - 3.0) / 2.5).powi(2);
                v.push(if r < 1.0 { 120 } else { background(i) });
            }
        }
    }
    let (c, s) = (0.3f64.cos(), 0.3f64.sin());
    let g = Geometry {
        spacing: [0.8, 0.9, 3.0],
        origin: [-12.5, 40.0, 7.25],
        direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
    };
    Volume::new(dims, g, VoxelData::I16(v)).unwrap()
}
