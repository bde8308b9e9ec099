//! medsam2-core: SAM 2 / MedSAM-2 inference in pure Rust.
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;
