//! Segmenting a medical volume: the one implementation behind the command
//! line (`segment_volume`, `evaluate_prompts`), the C ABI (`medsam2_session`)
//! and Rust users.
//!
//! * [`Intensity`] and [`Slices`]: voxel values to the model's grey slices
//!   along an [`Axis`] (a CT window, percentiles or `u8` as is).
//! * [`VolumeGrid`]: slice numbers and pixels from voxel indices or physical
//!   LPS millimetres, checked against the volume.
//! * [`SlicePrompt`] / [`ObjectPrompts`]: typed prompts per object per slice
//!   (a box and/or clicks, or a mask); [`mask_bbox`] and [`mask_center`] turn
//!   a mask into a box or a click.
//! * [`Propagation`]: joint (forward then backward in one session), MedSAM2's
//!   two separate passes (the default), or forward only; [`segment`] runs
//!   them, [`Segmentation::keep_largest_component`] cleans up, and
//!   [`label_volume`] assembles the labels in the input's geometry.
//! * [`VolumeSession`] ties these together.
//!
//! # Slices and prompt coordinates
//! Slice `z` holds the voxels whose index on the slicing axis is `z`; pixel
//! `(x, y)` of a slice is column `x` (the lower remaining index axis) and row
//! `y` (the higher one). For the default axis `k` and a NIfTI/NRRD volume,
//! `x = i`, `y = j`, `z = k`; for an array `[D, H, W]` from NumPy (`.npz`),
//! `x` is the `W` index, `y` the `H` index, `z` the `D` index. Physical
//! prompts are LPS millimetres (as ITK and 3D Slicer), mapped to the nearest
//! slice.
//!
//! # Example
//! Segment the committed phantom with the tiny test model from a box on
//! slice 7, as `segment_volume --box 7,42,101,68,133` does:
//! ```
//! use medsam2_core::build_sam::build_sam2;
//! use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
//! use medsam2_core::medical::{self, slicing::Axis};
//! use medsam2_core::sam2_video_predictor::SessionOptions;
//! use medsam2_core::volume::{Intensity, Propagation, SegmentOptions, VolumeSession};
//!
//! # fn main() -> medsam2_core::Result<()> {
//! // Paths from the repository's `medsam2-core/` folder.
//! let volume = medical::read_volume("../tests/fixtures/demo/phantom_img.nii.gz")?;
//! let model = build_sam2(
//!     "../tests/fixtures/sam2.1-tiny-a/config.yaml",
//!     "../tests/fixtures/sam2.1-tiny-a/weights.safetensors",
//!     ComputeDType::F32,
//!     DeviceKind::Cpu,
//! )?;
//! let mut session = VolumeSession::new(
//!     &volume,
//!     &Intensity::auto(&volume), // u8 as is, else CT window W400 L40
//!     Axis::K,
//!     model,
//!     SessionOptions::default(),
//! )?;
//! // Object 1: a box [x0, y0, x1, y1] in pixels of slice 7.
//! session.add_box(7, 1, [42.0, 101.0, 68.0, 133.0])?;
//! let opts = SegmentOptions {
//!     propagation: Propagation::Separate, // MedSAM2: forward, then backward
//!     largest_component: true,
//!     ..Default::default()
//! };
//! let seg = session.segment(&opts, &mut |p| {
//!     eprintln!("{}/{} slices", p.done, p.total);
//!     true // false cancels
//! })?;
//! let labels = session.labels(&seg)?; // the input's grid and geometry
//! assert_eq!(labels.dims(), volume.dims());
//! assert_eq!(labels.geometry(), volume.geometry());
//! // medical::write_volume("phantom_seg.nii.gz", &labels)?;
//! # Ok(())
//! # }
//! ```

mod grid;
mod prompts;
mod segmentation;
mod session;
mod slices;

pub use crate::medical::slicing::Axis;
/// The masks of every object on one slice (the video session's per-frame masks).
pub use crate::sam2_video_predictor::FrameMasks as SliceMasks;
/// Clicks and/or a box: the prompt type of the image predictor and the sessions.
pub use crate::sam2_video_predictor::Prompt;
pub use grid::VolumeGrid;
pub use prompts::{mask_bbox, mask_center, merge_prompts, object_mut, ObjectPrompts, SlicePrompt};
pub use segmentation::{
    add_prompts, label_volume, label_volume_on, largest_component, segment, Propagation,
    SegmentOptions, Segmentation,
};
pub use session::VolumeSession;
pub use slices::{Intensity, Slices};
