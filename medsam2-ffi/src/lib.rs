//! C ABI for medsam2-core: the header is `include/medsam2.h` (generated from
//! this crate by cbindgen; `tests/header.rs` fails when it is out of date).
//!
//! The crate is a thin layer: it checks and converts C arguments, calls
//! medsam2-core, and turns every error (and every panic) into a
//! [`medsam2_status`] plus a thread-local message ([`medsam2_last_error`]).
//!
//! * [`general`]: status codes, versions, last error, window presets.
//! * [`model`]: loading a model (`medsam2_model`).
//! * [`image`]: the interactive image predictor (`medsam2_predictor`).
//! * [`volume`]: volume sessions with propagation through slices (`medsam2_session`).
//! * [`one_prompt`]: one-prompt segmentation of a stream of 2-D images with a
//!   confidence memory bank (`medsam2_one_prompt`, ABI 2).
// The exported names are the C names (`medsam2_model`, `MEDSAM2_OK`, ...).
#![allow(non_camel_case_types)]
#![warn(missing_docs)]

pub mod general;
pub mod image;
pub mod model;
pub mod one_prompt;
pub mod volume;

mod ffi_util;

pub use general::*;
pub use image::*;
pub use model::*;
pub use one_prompt::*;
pub use volume::*;
