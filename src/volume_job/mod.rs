//! The volume jobs of the examples `segment_volume` and `evaluate_prompts`
//! (and of the integration test `tests/main_job.rs`), by job:
//! * `args`: command-line intensity mappings, axes and prompts;
//! * `labels`: label volumes as per-slice masks and mask prompts;
//! * `files`: reading inputs, checking and writing outputs;
//! * `segment`: the `segment_volume` job and its report;
//! * `montage`: the prompted slices drawn with masks and prompts;
//! * `evaluate` and `report`: the papers' prompting strategies, their
//!   metrics, tables and CSV.
//!
//! The volume-level logic itself (intensity mapping, slices, prompts, the
//! propagation modes, the label volume) is [`medsam2_core::volume`],
//! re-exported here; everything is reachable as `volume_job::NAME`.
//!
//! # Slices and prompt coordinates
//! As [`medsam2_core::volume`]: slice `Z` holds the voxels whose index on the
//! slicing axis is `Z`; pixel `(X, Y)` is column `X` (the lower remaining
//! index axis) and row `Y` (the higher one). For the default axis 2 (`k`) and
//! an array `[D, H, W]` in NumPy (`.npz`), `X` is the `W` index, `Y` the `H`
//! index, `Z` the `D` index; for a NIfTI/NRRD file `X = i`, `Y = j`, `Z = k`.
//! Prompts in physical coordinates are LPS millimetres, mapped to the nearest
//! slice.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use medsam2_core::medical::intensity::{Normalization, Window};
use medsam2_core::medical::slicing::{self, Axis};
use medsam2_core::medical::{self, metrics, MedicalError, Volume};
use medsam2_core::sam2_video_predictor::{Progress, SessionOptions};
pub use medsam2_core::volume::{
    label_volume, largest_component, mask_bbox, mask_center, merge_prompts, object_mut, segment,
    Intensity, ObjectPrompts, Propagation, SegmentOptions, Segmentation, SlicePrompt, Slices,
    VolumeGrid, VolumeSession,
};

/// An error of the main job: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

impl From<String> for JobError {
    fn from(s: String) -> Self {
        JobError(s)
    }
}

impl From<&str> for JobError {
    fn from(s: &str) -> Self {
        JobError(s.to_string())
    }
}

impl From<medsam2_core::Error> for JobError {
    fn from(e: medsam2_core::Error) -> Self {
        JobError(e.to_string())
    }
}

impl From<MedicalError> for JobError {
    fn from(e: MedicalError) -> Self {
        JobError(e.to_string())
    }
}

/// `Result` with [`JobError`].
pub type Result<T> = std::result::Result<T, JobError>;

/// Formats an error as the single line the examples print: `error: ...`
/// (newlines folded into `; `).
pub fn error_line(e: &dyn fmt::Display) -> String {
    let msg = e.to_string();
    let one: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("error: {}", one.join("; "))
}

/// Seeded pseudo-random numbers: the workspace's one generator.
pub use medsam2_core::confidence_bank::SplitMix64;

mod args;
mod evaluate;
mod files;
mod labels;
mod montage;
mod report;
mod segment;

pub use args::*;
pub use evaluate::*;
pub use files::*;
pub use labels::*;
pub use montage::*;
pub use report::*;
pub use segment::*;

#[cfg(test)]
mod tests {
    use super::*;
    use medsam2_core::medical::{Geometry, VoxelData};

    #[test]
    fn prompts_parse_and_check() {
        let v = Volume::new([6, 4, 3], Geometry::default(), VoxelData::U8(vec![0; 72])).unwrap();
        let o = parse_prompts(
            &v,
            Axis::K,
            &["1,0,0,3,2".into(), "5:2,1,1,2,2".into()],
            &["1,2,1,1".into(), "5:2,1,2,0".into()],
            false,
        )
        .unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].obj_id, 1);
        assert_eq!(o[0].slices[0].bbox, Some([0.0, 0.0, 3.0, 2.0]));
        assert_eq!(o[0].slices[0].points, vec![[2.0, 1.0]]);
        assert_eq!(o[1].obj_id, 5);
        assert_eq!(o[1].slices[0].labels, vec![0]);
        for bad in [
            "3,0,0,1,1",
            "0,0,0,6,1",
            "0,0,0,1",
            "0:0,0,0,1,1",
            "x,0,0,1,1",
        ] {
            assert!(
                parse_prompts(&v, Axis::K, &[bad.into()], &[], false).is_err(),
                "{bad}"
            );
        }
        assert!(parse_prompts(&v, Axis::K, &[], &["0,1,1,2".into()], false).is_err());
        // Physical: identity geometry, so mm = voxels; axis I puts (j, k) in-plane.
        let o = parse_prompts(&v, Axis::I, &[], &["4,2,1,1".into()], true).unwrap();
        assert_eq!(
            (o[0].slices[0].slice, o[0].slices[0].points[0]),
            (4, [2.0, 1.0])
        );
        assert!(IntensitySpec::parse("nope").is_err());
        assert_eq!(
            IntensitySpec::parse("400,40").unwrap(),
            IntensitySpec::Window(Window::ABDOMEN)
        );
    }

    #[test]
    fn key_slices_and_means() {
        let ls = LabelSlices {
            label: 1,
            masks: vec![vec![]; 5],
            areas: vec![0, 3, 9, 1, 0],
        };
        assert_eq!(ls.key_slice(KeySlice::Largest), Some(2));
        assert_eq!(ls.key_slice(KeySlice::Middle), Some(2));
        let (m, s, inf) = mean_std(&[1.0, 3.0, f64::INFINITY]);
        assert_eq!((m, s, inf), (2.0, 1.0, 1));
    }
}
