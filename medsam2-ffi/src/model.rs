//! Loading a model: `medsam2_model`.

use std::ffi::c_char;
use std::sync::Arc;

use medsam2_core::build_sam::config_from_spec;
use medsam2_core::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use medsam2_core::modeling::sam2_base::Sam2Base;

use crate::ffi_util::{c_str, handle, in_slice, opt_c_str, run, write_out, FfiError, FfiResult};
use crate::general::medsam2_status;

/// A loaded model (weights on a device). Opaque.
///
/// Immutable once loaded: one model may be used by any number of predictors
/// and volume sessions, on any number of threads at the same time. Each
/// predictor or session holds its own reference, so the model may be freed
/// before them; its memory is released when the last of them is freed.
pub struct medsam2_model {
    pub(crate) inner: Arc<Sam2Base>,
}

// The model is shared read-only across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Sam2Base>();
    assert_send_sync::<medsam2_model>();
};

fn parse_device(device: Option<&str>) -> FfiResult<DeviceKind> {
    let kind = DeviceKind::parse(device.unwrap_or("cpu"))?;
    if kind != DeviceKind::Cpu {
        // Open it once here so that a missing backend has its own status.
        kind.device().map_err(|e| {
            FfiError::new(
                medsam2_status::MEDSAM2_ERR_BACKEND_UNAVAILABLE,
                e.to_string(),
            )
        })?;
    }
    Ok(kind)
}

fn load(
    config: *const c_char,
    device: *const c_char,
    dtype: *const c_char,
    out_model: *mut *mut medsam2_model,
    open: impl FnOnce() -> FfiResult<Checkpoint>,
) -> FfiResult<()> {
    if out_model.is_null() {
        return Err(FfiError::null("out_model"));
    }
    // SAFETY: checked non-NULL; the caller provides a writable pointer slot.
    unsafe { out_model.write(std::ptr::null_mut()) };
    // SAFETY: the caller passes NULL or NUL-terminated strings.
    let (config, device, dtype) = unsafe {
        (
            c_str(config, "config")?,
            opt_c_str(device, "device")?,
            opt_c_str(dtype, "dtype")?,
        )
    };
    let dtype = ComputeDType::parse(dtype.unwrap_or("f32"))?;
    let device = parse_device(device)?;
    let cfg = config_from_spec(config)?;
    let ckpt = open()?;
    let model = Sam2Base::load(cfg, &ckpt, dtype, device)?;
    let boxed = Box::new(medsam2_model {
        inner: Arc::new(model),
    });
    // SAFETY: as above.
    unsafe { out_model.write(Box::into_raw(boxed)) };
    Ok(())
}

/// Loads a model from a checkpoint file.
///
/// * `config`: a preset name (`"sam2.1_hiera_t"`, `"sam2.1_hiera_s"`,
///   `"sam2.1_hiera_b+"`, `"sam2.1_hiera_l"`, the SAM 2.0 names, `"medsam2"`)
///   or the path of an official YAML config file (`.yaml`/`.yml`). Required.
/// * `checkpoint_path`: a `.safetensors` file (memory-mapped) or a PyTorch
///   `.pt`/`.pth` checkpoint with the official key names. Required.
/// * `device`: `"cpu"` (default when NULL or empty), `"cuda"`, `"cuda:N"`,
///   `"metal"`, `"metal:N"`.
/// * `dtype`: `"f32"` (default when NULL or empty), `"f16"`, `"bf16"`.
/// * `out_model`: receives the new model, or NULL on failure. Free it with
///   `medsam2_model_free`.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (config, checkpoint_path or out_model
/// NULL), `MEDSAM2_ERR_INVALID_ARGUMENT` (unknown device or dtype name),
/// `MEDSAM2_ERR_BACKEND_UNAVAILABLE` (CUDA/Metal not compiled in or not
/// present), `MEDSAM2_ERR_CONFIG` (unknown preset, invalid YAML),
/// `MEDSAM2_ERR_IO` (file missing or unreadable), `MEDSAM2_ERR_CHECKPOINT`
/// (malformed checkpoint, or one of another model).
///
/// Thread-safe: several models may be loaded concurrently.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; `out_model` is NULL or
/// points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn medsam2_model_load(
    config: *const c_char,
    checkpoint_path: *const c_char,
    device: *const c_char,
    dtype: *const c_char,
    out_model: *mut *mut medsam2_model,
) -> medsam2_status {
    run(|| {
        load(config, device, dtype, out_model, || {
            let path = c_str(checkpoint_path, "checkpoint_path")?;
            Ok(Checkpoint::open(path)?)
        })
    })
}

/// Loads a model from a safetensors checkpoint held in memory (for example
/// embedded in a plugin). The `len` bytes at `data` are copied; the caller
/// keeps ownership of `data` and may free it as soon as the call returns.
///
/// `config`, `device`, `dtype` and `out_model` are as in `medsam2_model_load`.
///
/// Errors: as `medsam2_model_load`; `MEDSAM2_ERR_NULL_POINTER` when `data` is
/// NULL with `len > 0`; `MEDSAM2_ERR_CHECKPOINT` when the bytes are not a
/// valid safetensors file (including `len == 0`).
///
/// Thread-safe.
///
/// # Safety
/// As `medsam2_model_load`; `data` is NULL or valid for reading `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn medsam2_model_load_from_memory(
    config: *const c_char,
    data: *const u8,
    len: usize,
    device: *const c_char,
    dtype: *const c_char,
    out_model: *mut *mut medsam2_model,
) -> medsam2_status {
    run(|| {
        load(config, device, dtype, out_model, || {
            let bytes = in_slice(data, len, "data")?;
            Ok(Checkpoint::from_safetensors_bytes(bytes.to_vec())?)
        })
    })
}

/// Releases the caller's reference to a model. NULL is accepted (no-op).
/// Predictors and sessions created from the model stay valid.
///
/// Always returns `MEDSAM2_OK`. Not to be called while another thread uses
/// the same `model` pointer, nor twice on the same pointer.
///
/// # Safety
/// `model` is NULL or a model from `medsam2_model_load*` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn medsam2_model_free(model: *mut medsam2_model) -> medsam2_status {
    run(|| {
        if !model.is_null() {
            drop(Box::from_raw(model));
        }
        Ok(())
    })
}

/// The side `S` of the square model input (1024 for the official models):
/// images are resized to `S`x`S` internally.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `out_size` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_model_image_size(
    model: *const medsam2_model,
    out_size: *mut u32,
) -> medsam2_status {
    run(|| {
        let m = handle(model, "model")?;
        write_out(out_size, m.inner.cfg.image_size as u32, "out_size")
    })
}

/// The side `S/4` of the low-resolution mask logits (256 for the official
/// models): the size of `medsam2_prompt.mask_input` and of
/// `medsam2_predictor_last_low_res_logits` per mask.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `out_size` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_model_low_res_size(
    model: *const medsam2_model,
    out_size: *mut u32,
) -> medsam2_status {
    run(|| {
        let m = handle(model, "model")?;
        write_out(out_size, (m.inner.cfg.image_size / 4) as u32, "out_size")
    })
}

/// The number of masks a prediction returns: 1 when `multimask` is 0, else
/// the model's multimask count (3 for the official models).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. Thread-safe.
///
/// # Safety
/// `model` is NULL or a live model; `out_count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_model_mask_count(
    model: *const medsam2_model,
    multimask: i32,
    out_count: *mut u32,
) -> medsam2_status {
    run(|| {
        let m = handle(model, "model")?;
        write_out(
            out_count,
            mask_count(&m.inner, multimask != 0) as u32,
            "out_count",
        )
    })
}

pub(crate) fn mask_count(model: &Sam2Base, multimask: bool) -> usize {
    if multimask {
        model.cfg.mask_decoder().num_multimask_outputs
    } else {
        1
    }
}
