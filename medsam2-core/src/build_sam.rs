//! Building a model from a config spec and a checkpoint (`sam2.build_sam`).

use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use crate::config::Sam2Config;
use crate::error::Result;
use crate::modeling::sam2_base::Sam2Base;

/// The Hydra overrides `build_sam2` adds to every model for inference.
pub const IMAGE_MODEL_OVERRIDES: &[&str] = &[
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
];

/// A config from a preset name (see [`Sam2Config::preset_by_name`]) or the
/// path of an official YAML file, with `build_sam2`'s inference overrides.
pub fn config_from_spec(spec: &str) -> Result<Sam2Config> {
    let p = Path::new(spec);
    if p.extension().is_some_and(|e| e == "yaml" || e == "yml") && p.exists() {
        let io = |e| crate::Error::Io {
            path: spec.to_string(),
            source: e,
        };
        let bytes = crate::output::read_input(
            p,
            crate::limits::MAX_CONFIG_BYTES as u64,
            "MAX_CONFIG_BYTES",
        )
        .map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            ))
        })?;
        Sam2Config::from_yaml_with_overrides(&text, IMAGE_MODEL_OVERRIDES)
    } else {
        Sam2Config::preset_by_name(spec).map_err(|e| match e {
            crate::Error::Config(m) => {
                crate::Error::Config(format!("{m} (and no YAML file at `{spec}`)"))
            }
            other => other,
        })
    }
}

/// Loads a model: `config` is a preset name or YAML path, `checkpoint` a
/// `.pt`/`.pth`/`.safetensors` file with the official key names.
pub fn build_sam2(
    config: &str,
    checkpoint: impl AsRef<Path>,
    dtype: ComputeDType,
    device: DeviceKind,
) -> Result<Arc<Sam2Base>> {
    let cfg = config_from_spec(config)?;
    let ckpt = Checkpoint::open(checkpoint)?;
    Ok(Arc::new(Sam2Base::load(cfg, &ckpt, dtype, device)?))
}
