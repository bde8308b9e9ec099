//! SAM heads (`sam2.modeling.sam`): prompt encoder, two-way transformer and
//! mask decoder.

mod cpu;
pub mod mask_decoder;
pub mod prompt_encoder;
pub mod transformer;
mod transformer_cpu;

pub use mask_decoder::{AllMasks, MaskDecoder, MaskDecoderOutput};
pub use prompt_encoder::PromptEncoder;
pub use transformer::{Attention, TwoWayAttentionBlock, TwoWayTransformer};
