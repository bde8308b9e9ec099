//! The interactive image predictor: `medsam2_predictor`.

use std::ffi::c_void;

use medsam2_core::medical::intensity::{IntensityMap, Window};
use medsam2_core::sam2_image_predictor::{Prediction, Prompt, Sam2ImagePredictor};

use crate::ffi_util::{
    handle, handle_mut, in_slice, out_slice, run, write_opt, FfiError, FfiResult,
};
use crate::general::{medsam2_status, medsam2_window};
use crate::model::{mask_count, medsam2_model};

/// Element type of pixel and voxel buffers (one of the `MEDSAM2_PIXEL_*`
/// constants). Values are in the machine's native byte order.
pub type medsam2_pixel_type = u32;
/// Unsigned 8-bit values (0..255; RGB or grey images).
pub const MEDSAM2_PIXEL_U8: medsam2_pixel_type = 1;
/// Signed 16-bit values (e.g. CT in Hounsfield units); needs a window.
pub const MEDSAM2_PIXEL_I16: medsam2_pixel_type = 2;
/// Unsigned 16-bit values (e.g. MR); needs a window.
pub const MEDSAM2_PIXEL_U16: medsam2_pixel_type = 3;
/// 32-bit floats: either raw intensities with a window, or values the caller
/// already mapped to `0..1` (no window).
pub const MEDSAM2_PIXEL_F32: medsam2_pixel_type = 4;

/// Largest number of clicks in one prompt, or accumulated on one slice for
/// one object in a session (a box counts as two); `MAX_PROMPT_POINTS` in
/// error messages.
pub const MEDSAM2_MAX_POINTS: u32 = 1024;

/// Largest image side accepted, in pixels.
pub const MEDSAM2_MAX_IMAGE_SIDE: u32 = 65536;

/// An image to segment, described by the caller (the library copies the
/// pixels during `medsam2_predictor_set_image` and keeps no pointer).
///
/// Row `y` starts at byte `y * row_stride` from `data`; within a row, pixel
/// `x` channel `c` is element `x * channels + c`. No alignment is required.
///
/// Intensity mapping to the model's `0..1` input:
/// * `MEDSAM2_PIXEL_U8` without window: value / 255; 3 channels are RGB,
///   1 channel is grey (replicated to RGB, as the official code does).
/// * With a window (`window.width > 0`, any type, 1 channel only): the value
///   is clipped to `[level - width/2, level + width/2]` and scaled to `0..1`.
/// * `MEDSAM2_PIXEL_F32` without window (1 channel): used as is, the caller
///   has mapped it to `0..1` (values must be finite).
/// * `MEDSAM2_PIXEL_I16` / `MEDSAM2_PIXEL_U16` without window: rejected.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct medsam2_image {
    /// First byte of row 0.
    pub data: *const c_void,
    /// Element type (`MEDSAM2_PIXEL_*`).
    pub pixel_type: medsam2_pixel_type,
    /// Columns (1..=`MEDSAM2_MAX_IMAGE_SIDE`).
    pub width: u32,
    /// Rows (1..=`MEDSAM2_MAX_IMAGE_SIDE`).
    pub height: u32,
    /// Interleaved channels per pixel: 1 (grey) or 3 (RGB, u8 without window only).
    pub channels: u32,
    /// Bytes from the start of one row to the next; 0 means tightly packed
    /// (`width * channels * element size`). Must not be smaller than a row.
    pub row_stride: usize,
    /// Intensity window, or `{0, 0}` for none (see above).
    pub window: medsam2_window,
}

/// A prompt in pixel coordinates of the image given to
/// `medsam2_predictor_set_image`: `x` is the column, `y` the row, `(0, 0)` the
/// top-left corner of the image, `(width, height)` its bottom-right corner.
///
/// At least one of points, box and mask input must be given. Unused members
/// are NULL / 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct medsam2_prompt {
    /// `2 * num_points` floats: `x0, y0, x1, y1, ...`.
    pub points: *const f32,
    /// `num_points` labels: 1 = foreground click, 0 = background click.
    pub labels: *const i32,
    /// Number of clicks (0..=`MEDSAM2_MAX_POINTS`).
    pub num_points: usize,
    /// NULL, or 4 floats `x0, y0, x1, y1` (top-left, bottom-right) of a box.
    pub bbox: *const f32,
    /// NULL, or low-resolution mask logits `[S/4][S/4]` row-major (see
    /// `medsam2_model_low_res_size`), typically one mask of
    /// `medsam2_predictor_last_low_res_logits` from a previous round.
    pub mask_input: *const f32,
    /// Number of floats at `mask_input` (must be `(S/4)^2` when given).
    pub mask_input_len: usize,
}

/// An image predictor: holds one image's embeddings and answers any number
/// of prompts on it. Opaque.
///
/// Not thread-safe: one predictor must not be used by two threads at the
/// same time (it may move between threads). Use one predictor per thread;
/// they can all share one `medsam2_model`.
pub struct medsam2_predictor {
    pred: Sam2ImagePredictor,
    image_hw: Option<[usize; 2]>,
    last: Option<Prediction>,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<medsam2_predictor>();
};

fn element_size(t: medsam2_pixel_type) -> FfiResult<usize> {
    match t {
        MEDSAM2_PIXEL_U8 => Ok(1),
        MEDSAM2_PIXEL_I16 | MEDSAM2_PIXEL_U16 => Ok(2),
        MEDSAM2_PIXEL_F32 => Ok(4),
        _ => Err(FfiError::invalid(format!(
            "unknown pixel type {t} (MEDSAM2_PIXEL_U8 = 1, I16 = 2, U16 = 3, F32 = 4)"
        ))),
    }
}

/// Decodes packed native-endian elements of type `t` as `f64`.
pub(crate) fn decode_f64(bytes: &[u8], t: medsam2_pixel_type) -> FfiResult<Vec<f64>> {
    Ok(match t {
        MEDSAM2_PIXEL_U8 => bytes.iter().map(|&b| b as f64).collect(),
        MEDSAM2_PIXEL_I16 => bytes
            .chunks_exact(2)
            .map(|c| i16::from_ne_bytes([c[0], c[1]]) as f64)
            .collect(),
        MEDSAM2_PIXEL_U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]) as f64)
            .collect(),
        MEDSAM2_PIXEL_F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        _ => return Err(FfiError::invalid(format!("unknown pixel type {t}"))),
    })
}

/// The window, or `None` for `{_, 0}`; rejects negative or non-finite values.
pub(crate) fn checked_window(w: &medsam2_window) -> FfiResult<Option<Window>> {
    if w.width == 0.0 && w.level.is_finite() {
        return Ok(None);
    }
    Window::new(w.width, w.level)
        .map(Some)
        .map_err(|e| FfiError::invalid(e.to_string()))
}

/// The window's clip-and-scale map (the clip bounds map to 0 and 1).
pub(crate) fn window_map(w: &Window) -> IntensityMap {
    IntensityMap {
        lower: w.lower(),
        upper: w.upper(),
        keep_zero: false,
    }
}

/// Copies the rows of an image into a packed byte buffer.
///
/// # Safety
/// `img.data` is valid for `row_stride * (height - 1) + row bytes` bytes.
unsafe fn packed_bytes(img: &medsam2_image) -> FfiResult<Vec<u8>> {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        img.channels as usize,
    );
    if w == 0 || h == 0 || img.width > MEDSAM2_MAX_IMAGE_SIDE || img.height > MEDSAM2_MAX_IMAGE_SIDE
    {
        return Err(FfiError::invalid(format!(
            "image size {w}x{h} must be within 1..={MEDSAM2_MAX_IMAGE_SIDE} per side"
        )));
    }
    if c != 1 && c != 3 {
        return Err(FfiError::invalid(format!(
            "channels must be 1 or 3, got {c}"
        )));
    }
    let row = w * c * element_size(img.pixel_type)?;
    let stride = if img.row_stride == 0 {
        row
    } else {
        img.row_stride
    };
    if stride < row {
        return Err(FfiError::invalid(format!(
            "row_stride {stride} is smaller than a row ({row} bytes)"
        )));
    }
    let span = stride
        .checked_mul(h - 1)
        .and_then(|v| v.checked_add(row))
        .filter(|&v| v <= isize::MAX as usize)
        .ok_or_else(|| FfiError::invalid("row_stride * height overflows"))?;
    if img.data.is_null() {
        return Err(FfiError::null("image->data"));
    }
    let src = std::slice::from_raw_parts(img.data.cast::<u8>(), span);
    let mut out = Vec::with_capacity(row * h);
    for y in 0..h {
        out.extend_from_slice(&src[y * stride..y * stride + row]);
    }
    Ok(out)
}

/// The pixels of a `medsam2_image` as the core takes them.
pub(crate) enum ImagePixels {
    /// Interleaved RGB `[H, W, 3]` (u8 images without window; grey replicated).
    Rgb8(Vec<u8>),
    /// Grey `[H, W]` mapped to `0..1` (windowed images, f32 images without window).
    GreyF32(Vec<f32>),
}

/// Checks and decodes a caller's image (see `medsam2_image` for the
/// intensity rules); returns its pixels, height and width.
///
/// # Safety
/// As [`packed_bytes`].
pub(crate) unsafe fn read_image(img: &medsam2_image) -> FfiResult<(ImagePixels, usize, usize)> {
    let window = checked_window(&img.window)?;
    let bytes = packed_bytes(img)?;
    let (h, w, c) = (
        img.height as usize,
        img.width as usize,
        img.channels as usize,
    );
    let pixels = match (img.pixel_type, window) {
        (MEDSAM2_PIXEL_U8, None) => ImagePixels::Rgb8(if c == 3 {
            bytes
        } else {
            bytes.iter().flat_map(|&v| [v, v, v]).collect()
        }),
        (t, win) => {
            if c != 1 {
                return Err(FfiError::invalid(
                    "only u8 images without window may have 3 channels; windowed and float images have 1",
                ));
            }
            let values = decode_f64(&bytes, t)?;
            ImagePixels::GreyF32(match win {
                Some(win) => {
                    let map = window_map(&win);
                    values.iter().map(|&v| map.unit(v) as f32).collect()
                }
                None if t == MEDSAM2_PIXEL_F32 => {
                    if values.iter().any(|v| !v.is_finite()) {
                        return Err(FfiError::invalid("f32 image has non-finite values"));
                    }
                    values.iter().map(|&v| v as f32).collect()
                }
                None => {
                    return Err(FfiError::invalid(
                        "i16/u16 images need a window (image->window.width > 0), or map them to f32 0..1",
                    ))
                }
            })
        }
    };
    Ok((pixels, h, w))
}

/// Creates a predictor over `model` (which it keeps alive).
///
/// `out_predictor` receives the predictor, or NULL on failure; free it with
/// `medsam2_predictor_free`.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INTERNAL`. Thread-safe
/// with respect to `model`: predictors may be created from one model on
/// several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `out_predictor` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_new(
    model: *const medsam2_model,
    out_predictor: *mut *mut medsam2_predictor,
) -> medsam2_status {
    run(|| {
        if out_predictor.is_null() {
            return Err(FfiError::null("out_predictor"));
        }
        out_predictor.write(std::ptr::null_mut());
        let m = handle(model, "model")?;
        let pred = Sam2ImagePredictor::new(m.inner.clone())?;
        let boxed = Box::new(medsam2_predictor {
            pred,
            image_hw: None,
            last: None,
        });
        out_predictor.write(Box::into_raw(boxed));
        Ok(())
    })
}

/// Frees a predictor. NULL is accepted (no-op). Always returns `MEDSAM2_OK`.
///
/// # Safety
/// `predictor` is NULL or a live predictor not in use by another thread;
/// it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_free(
    predictor: *mut medsam2_predictor,
) -> medsam2_status {
    run(|| {
        if !predictor.is_null() {
            drop(Box::from_raw(predictor));
        }
        Ok(())
    })
}

/// Sets the image to segment and computes its embeddings (the expensive
/// step: one image-encoder pass). The pixels are copied; the caller keeps
/// ownership of `image->data`. Replaces any previous image and forgets the
/// last prediction; after a failure no image is set.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (predictor, image or image->data),
/// `MEDSAM2_ERR_INVALID_ARGUMENT` (unknown pixel type, bad size, channels or
/// stride, negative or non-finite window, i16/u16 without window, non-finite
/// f32 values without window), `MEDSAM2_ERR_INTERNAL`.
///
/// Not thread-safe for one predictor (see `medsam2_predictor`).
///
/// # Safety
/// `predictor` is NULL or a live predictor; `image` is NULL or points to a
/// `medsam2_image` whose `data` is NULL or readable for
/// `row_stride * (height - 1) + width * channels * element size` bytes.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_set_image(
    predictor: *mut medsam2_predictor,
    image: *const medsam2_image,
) -> medsam2_status {
    run(|| {
        let p = handle_mut(predictor, "predictor")?;
        let img = handle(image, "image")?;
        p.last = None;
        p.image_hw = None;
        p.pred.reset();
        let (pixels, h, w) = read_image(img)?;
        match pixels {
            ImagePixels::Rgb8(rgb) => p.pred.set_image_rgb_u8(&rgb, h, w)?,
            ImagePixels::GreyF32(grey) => p.pred.set_image_grey_f32(&grey, h, w)?,
        }
        p.image_hw = Some([h, w]);
        Ok(())
    })
}

/// Forgets the image and the last prediction (frees their memory).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`.
///
/// # Safety
/// `predictor` is NULL or a live predictor not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_clear_image(
    predictor: *mut medsam2_predictor,
) -> medsam2_status {
    run(|| {
        let p = handle_mut(predictor, "predictor")?;
        p.pred.reset();
        p.image_hw = None;
        p.last = None;
        Ok(())
    })
}

/// Sets the logit threshold that turns mask logits into binary masks
/// (default 0.0, as the official predictor).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (not finite).
///
/// # Safety
/// `predictor` is NULL or a live predictor not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_set_mask_threshold(
    predictor: *mut medsam2_predictor,
    threshold: f32,
) -> medsam2_status {
    run(|| {
        let p = handle_mut(predictor, "predictor")?;
        if !threshold.is_finite() {
            return Err(FfiError::invalid("threshold must be finite"));
        }
        p.pred.mask_threshold = threshold;
        Ok(())
    })
}

/// Sets the clean-up of the low-resolution masks before they are upsampled
/// (the official `SAM2ImagePredictor(max_hole_area, max_sprinkle_area)`):
/// background holes of at most `max_hole_area` low-res pixels become
/// foreground, foreground specks of at most `max_sprinkle_area` background;
/// 0 turns a step off (the default for both, as the official predictor).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT`
/// (negative or not finite).
///
/// # Safety
/// `predictor` is NULL or a live predictor not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_set_postprocessing(
    predictor: *mut medsam2_predictor,
    max_hole_area: f32,
    max_sprinkle_area: f32,
) -> medsam2_status {
    run(|| {
        let p = handle_mut(predictor, "predictor")?;
        for (name, v) in [
            ("max_hole_area", max_hole_area),
            ("max_sprinkle_area", max_sprinkle_area),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(FfiError::invalid(format!(
                    "{name} {v}: a pixel count >= 0 (0 = off)"
                )));
            }
        }
        p.pred.max_hole_area = max_hole_area;
        p.pred.max_sprinkle_area = max_sprinkle_area;
        Ok(())
    })
}

/// Builds a core prompt from a C prompt (pointer checks only; ranges are
/// checked by the core).
///
/// # Safety
/// The pointers of `pr` are NULL or valid for their documented lengths.
pub(crate) unsafe fn read_prompt(pr: &medsam2_prompt, low_res: usize) -> FfiResult<Prompt> {
    if pr.num_points > MEDSAM2_MAX_POINTS as usize {
        return Err(FfiError::invalid(format!(
            "{} points exceed the limit of {MEDSAM2_MAX_POINTS} (MAX_PROMPT_POINTS)",
            pr.num_points
        )));
    }
    let pts = in_slice(pr.points, pr.num_points * 2, "prompt->points")?;
    let labels = in_slice(pr.labels, pr.num_points, "prompt->labels")?;
    let mut prompt = Prompt {
        points: pts.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        labels: labels.to_vec(),
        ..Default::default()
    };
    if !pr.bbox.is_null() {
        let b = std::slice::from_raw_parts(pr.bbox, 4);
        prompt.bbox = Some([b[0], b[1], b[2], b[3]]);
    }
    if !pr.mask_input.is_null() || pr.mask_input_len != 0 {
        if pr.mask_input_len != low_res * low_res {
            return Err(FfiError::invalid(format!(
                "mask_input_len is {}, must be {low_res}x{low_res} = {}",
                pr.mask_input_len,
                low_res * low_res
            )));
        }
        prompt.mask_input =
            Some(in_slice(pr.mask_input, pr.mask_input_len, "prompt->mask_input")?.to_vec());
    }
    Ok(prompt)
}

/// Segments the current image from a prompt.
///
/// * `multimask`: nonzero returns `medsam2_model_mask_count(model, 1, ...)`
///   masks (3; useful for an ambiguous single click), 0 returns 1 mask.
/// * `masks`: required output of `M * height * width` bytes: mask `m`, row
///   `y`, column `x` at `masks[(m * height + y) * width + x]`, 1 inside the
///   object, 0 outside. `masks_len` is its size in bytes.
/// * `scores`: NULL, or output of `M` floats: each mask's predicted IoU.
///   `scores_len` is its size in floats.
/// * `out_num_masks`: NULL, or receives `M`.
///
/// Masks are in the official order (not sorted by score). The mask logits of
/// this prediction can then be read with `medsam2_predictor_last_logits` and
/// `medsam2_predictor_last_low_res_logits`.
///
/// Buffer sizes are checked before any computation; on failure nothing is
/// written to them.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (predictor, prompt, masks, or a prompt
/// array with a nonzero count), `MEDSAM2_ERR_INVALID_STATE` (no image set),
/// `MEDSAM2_ERR_BUFFER_TOO_SMALL`, `MEDSAM2_ERR_INVALID_ARGUMENT` (empty
/// prompt, a point or box outside the image, an inverted box, a label other
/// than 0/1 (or -1, 2, 3), a wrong mask_input size, non-finite values),
/// `MEDSAM2_ERR_INTERNAL`.
///
/// Not thread-safe for one predictor.
///
/// # Safety
/// `predictor` is NULL or a live predictor; `prompt` is NULL or a valid
/// `medsam2_prompt`; `masks` is NULL or writable for `masks_len` bytes;
/// `scores` is NULL or writable for `scores_len` floats; `out_num_masks` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_predict(
    predictor: *mut medsam2_predictor,
    prompt: *const medsam2_prompt,
    multimask: i32,
    masks: *mut u8,
    masks_len: usize,
    scores: *mut f32,
    scores_len: usize,
    out_num_masks: *mut u32,
) -> medsam2_status {
    run(|| {
        let p = handle_mut(predictor, "predictor")?;
        let pr = handle(prompt, "prompt")?;
        let [h, w] = p.image_hw.ok_or_else(|| {
            FfiError::state("no image set: call medsam2_predictor_set_image first")
        })?;
        let model = p.pred.model().clone();
        let m = mask_count(&model, multimask != 0);
        let masks_out = out_slice(masks, masks_len, m * h * w, "masks")?;
        let scores_out = if scores.is_null() {
            None
        } else {
            Some(out_slice(scores, scores_len, m, "scores")?)
        };
        let prompt = read_prompt(pr, model.cfg.image_size / 4)?;
        p.last = None;
        let pred = p.pred.predict(&prompt, multimask != 0)?;
        if pred.num_masks != m || pred.masks.len() != m * h * w || pred.iou_scores.len() != m {
            return Err(FfiError::internal(format!(
                "prediction has {} masks of {}x{}, expected {m} of {h}x{w}",
                pred.num_masks, pred.height, pred.width
            )));
        }
        masks_out.copy_from_slice(&pred.masks);
        if let Some(s) = scores_out {
            s.copy_from_slice(&pred.iou_scores);
        }
        write_opt(out_num_masks, m as u32);
        p.last = Some(pred);
        Ok(())
    })
}

/// Copies the mask logits of the last successful prediction at the image's
/// size: `M * height * width` floats in the layout of the `masks` output of
/// `medsam2_predictor_predict` (`out_len` is the buffer size in floats).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_STATE` (no
/// prediction since the last image was set), `MEDSAM2_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `predictor` is NULL or a live predictor; `out` is NULL or writable for
/// `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_last_logits(
    predictor: *const medsam2_predictor,
    out: *mut f32,
    out_len: usize,
) -> medsam2_status {
    run(|| {
        let p = handle(predictor, "predictor")?;
        let last = p
            .last
            .as_ref()
            .ok_or_else(|| FfiError::state("no prediction yet"))?;
        out_slice(out, out_len, last.logits.len(), "out")?.copy_from_slice(&last.logits);
        Ok(())
    })
}

/// Copies the low-resolution logits of the last successful prediction:
/// `M * L * L` floats (`L` = `medsam2_model_low_res_size`), mask-major,
/// clamped to +-32. One mask's `L * L` block is a valid
/// `medsam2_prompt.mask_input` for a refining prediction.
///
/// Errors: as `medsam2_predictor_last_logits`.
///
/// # Safety
/// As `medsam2_predictor_last_logits`.
#[no_mangle]
pub unsafe extern "C" fn medsam2_predictor_last_low_res_logits(
    predictor: *const medsam2_predictor,
    out: *mut f32,
    out_len: usize,
) -> medsam2_status {
    run(|| {
        let p = handle(predictor, "predictor")?;
        let last = p
            .last
            .as_ref()
            .ok_or_else(|| FfiError::state("no prediction yet"))?;
        out_slice(out, out_len, last.low_res_logits.len(), "out")?
            .copy_from_slice(&last.low_res_logits);
        Ok(())
    })
}
