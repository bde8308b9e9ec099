//! Image backbone (`sam2.modeling.backbones`): the Hiera trunk, the FPN neck
//! and the image encoder that joins them.

pub(crate) mod cpu;
pub mod hieradet;
pub mod image_encoder;
pub mod utils;

pub use hieradet::Hiera;
pub use image_encoder::{forward_image, FpnNeck, HighResConvs, ImageEncoder, ImageEncoderOutput};
