//! medsam2-core: SAM 2 / MedSAM-2 inference in pure Rust.
//!
//! With the default `std` feature the crate holds the network (on candle), the
//! predictors, medical volumes ([`medical`]) and the volume API ([`volume`]:
//! a medical volume segmented from typed prompts, as the command line and the
//! C ABI do it); without it, it is `#![no_std]` + `alloc` and exposes the pure
//! parts: configs, prompt geometry, mask maths and the memory-bank policy.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]
extern crate alloc;

#[cfg(feature = "std")]
pub mod build_sam;
#[cfg(feature = "std")]
pub mod checkpoint;
pub mod confidence_bank;
pub mod config;
pub mod error;
pub mod limits;
#[cfg(feature = "std")]
pub mod memory_bank;
pub mod misc;
#[cfg(feature = "std")]
pub mod modeling;
pub mod transforms;

#[cfg(feature = "std")]
pub mod medical;

#[cfg(feature = "std")]
pub mod one_prompt;
#[cfg(feature = "std")]
pub mod output;
#[cfg(feature = "std")]
mod pickle_scan;
#[cfg(feature = "std")]
pub mod sam2_image_predictor;
#[cfg(feature = "std")]
pub mod sam2_video_predictor;
#[cfg(feature = "std")]
pub mod volume;

pub use config::Sam2Config;
pub use error::{Error, Result};
