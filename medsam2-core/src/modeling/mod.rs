//! The network, one module per component as in `sam2.modeling`.

pub mod backbones;
pub mod interp;
pub mod kernels;
pub mod memory_attention;
pub mod memory_encoder;
pub mod position_encoding;
pub mod sam;
pub mod sam2_base;
pub mod sam2_utils;
