//! One-prompt segmentation (MedSAM-2's confidence memory bank):
//! `medsam2_one_prompt`, a session over a stream of unrelated 2-D images,
//! prompted once and then segmenting the next images from a bank of earlier
//! results. A thin layer over `medsam2_core::one_prompt::OnePromptSession`.
//! Added in ABI version 2.

use std::ffi::c_char;

use medsam2_core::confidence_bank::{BankAction, BankMode, BankOptions, Preprocessing, Retrieval};
use medsam2_core::one_prompt::{ImageInput, OnePromptOutput, OnePromptSession};

use crate::ffi_util::{
    c_str, handle, handle_mut, in_slice, out_slice, run, write_opt, write_out, FfiError, FfiResult,
};
use crate::general::medsam2_status;
use crate::image::{medsam2_image, medsam2_prompt, read_image, read_prompt, ImagePixels};
use crate::model::medsam2_model;

/// Behaviour of the bank (`medsam2_one_prompt_options.mode`): SAM 2's
/// preprocessing, top-1 retrieval, bilinear output at logit 0 (the default).
pub const MEDSAM2_BANK_MODE_FIXED: u32 = 0;
/// Behaviour of the bank: Medical-SAM2's `validation_sam` exactly, quirks
/// included (its preprocessing, one memory drawn from the softmax of the
/// similarities, nearest output at logit 0.5).
pub const MEDSAM2_BANK_MODE_REFERENCE: u32 = 1;

/// Retrieval (`medsam2_one_prompt_options.retrieval`): the `top_k` most
/// similar memories, deterministic.
pub const MEDSAM2_RETRIEVAL_TOP_K: u32 = 0;
/// Retrieval: one memory drawn from the softmax of the similarities, from a
/// generator seeded with `seed` (reproducible; saved with the bank).
pub const MEDSAM2_RETRIEVAL_SAMPLE: u32 = 1;

/// Preprocessing (`medsam2_one_prompt_options.preprocessing`): SAM 2's image
/// predictor (`/255`, antialiased bilinear, ImageNet mean/std).
pub const MEDSAM2_PREPROCESS_SAM2: u32 = 0;
/// Preprocessing: Medical-SAM2's 2-D transform (Pillow bilinear resize of
/// the 8-bit image, `/255`, no normalisation); float and windowed images are
/// rounded to 8 bits first.
pub const MEDSAM2_PREPROCESS_MEDICAL_SAM2: u32 = 1;

/// What the bank did with an image's memory (`medsam2_one_prompt_result`):
/// appended (the bank was not full).
pub const MEDSAM2_BANK_APPENDED: u32 = 1;
/// The bank was full and the memory replaced an entry.
pub const MEDSAM2_BANK_REPLACED: u32 = 2;
/// The bank was full and kept its entries (the new memory was not less
/// similar to the bank than its closest pair).
pub const MEDSAM2_BANK_KEPT_SIMILARITY: u32 = 3;
/// The bank was full and kept its entries (the IoU test failed).
pub const MEDSAM2_BANK_KEPT_IOU: u32 = 4;
/// The bank is frozen: used, not changed.
pub const MEDSAM2_BANK_FROZEN: u32 = 5;

/// Settings of a one-prompt session. Fill it with
/// `medsam2_one_prompt_options_default` and change what you need; NULL in
/// `medsam2_one_prompt_new` gives the defaults of `MEDSAM2_BANK_MODE_FIXED`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct medsam2_one_prompt_options {
    /// `MEDSAM2_BANK_MODE_FIXED` or `MEDSAM2_BANK_MODE_REFERENCE`: how the
    /// pick-up similarity is computed (every difference between the modes is
    /// listed in the docs of medsam2-core's `confidence_bank` module).
    pub mode: u32,
    /// Most entries in the bank (>= 1; Medical-SAM2: 16).
    pub capacity: u32,
    /// A new memory may replace an entry only if its predicted IoU exceeds
    /// the entry's minus this margin (finite; Medical-SAM2: 0.1).
    pub iou_margin: f32,
    /// `MEDSAM2_RETRIEVAL_TOP_K` or `MEDSAM2_RETRIEVAL_SAMPLE`.
    pub retrieval: u32,
    /// Memories attended per image with `MEDSAM2_RETRIEVAL_TOP_K` (>= 1).
    pub top_k: u32,
    /// `MEDSAM2_PREPROCESS_SAM2` or `MEDSAM2_PREPROCESS_MEDICAL_SAM2`.
    pub preprocessing: u32,
    /// Seed of `MEDSAM2_RETRIEVAL_SAMPLE`.
    pub seed: u64,
    /// Logit threshold of the output masks (finite).
    pub mask_threshold: f32,
    /// Nonzero: output logits are upsampled nearest-neighbour instead of bilinear.
    pub nearest_output: i32,
}

/// Details of the last image a session processed
/// (`medsam2_one_prompt_last_result`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct medsam2_one_prompt_result {
    /// Index of the image in the session (0 for the first; continues the
    /// count of a loaded bank).
    pub index: u64,
    /// Predicted IoU of the mask (1 for `medsam2_one_prompt_add_mask`).
    pub iou: f32,
    /// Object-score logit (reported, not applied to the mask).
    pub object_score: f32,
    /// Nonzero when the image was given a prompt or a mask.
    pub prompted: i32,
    /// Number of memories the image attended to (0 with an empty bank).
    pub num_picked: u32,
    /// What the bank did (`MEDSAM2_BANK_APPENDED`, ...).
    pub bank_action: u32,
    /// Entries in the bank afterwards.
    pub bank_len: u32,
    /// With `MEDSAM2_BANK_REPLACED`: index of the image whose memory was
    /// dropped; otherwise -1.
    pub dropped_source: i64,
}

/// A one-prompt session: the bank and the image count. Opaque.
///
/// Not thread-safe: one session must not be used by two threads at the same
/// time (it may move between threads); sessions over one shared
/// `medsam2_model` may run on different threads.
pub struct medsam2_one_prompt {
    session: OnePromptSession,
    last: Option<(medsam2_one_prompt_result, Vec<f32>)>,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<medsam2_one_prompt>();
};

fn mode_of(code: u32) -> FfiResult<BankMode> {
    match code {
        MEDSAM2_BANK_MODE_FIXED => Ok(BankMode::Fixed),
        MEDSAM2_BANK_MODE_REFERENCE => Ok(BankMode::Reference),
        _ => Err(FfiError::invalid(format!(
            "unknown bank mode {code} (MEDSAM2_BANK_MODE_FIXED = 0, REFERENCE = 1)"
        ))),
    }
}

fn options_to_c(o: &BankOptions) -> medsam2_one_prompt_options {
    let (retrieval, top_k, seed) = match o.retrieval {
        Retrieval::TopK(k) => (MEDSAM2_RETRIEVAL_TOP_K, saturate(k), 0),
        Retrieval::Sample { seed } => (MEDSAM2_RETRIEVAL_SAMPLE, 1, seed),
    };
    medsam2_one_prompt_options {
        mode: match o.mode {
            BankMode::Fixed => MEDSAM2_BANK_MODE_FIXED,
            BankMode::Reference => MEDSAM2_BANK_MODE_REFERENCE,
        },
        capacity: saturate(o.capacity),
        iou_margin: o.iou_margin,
        retrieval,
        top_k,
        preprocessing: match o.preprocessing {
            Preprocessing::Sam2 => MEDSAM2_PREPROCESS_SAM2,
            Preprocessing::MedicalSam2 => MEDSAM2_PREPROCESS_MEDICAL_SAM2,
        },
        seed,
        mask_threshold: o.mask_threshold,
        nearest_output: o.nearest_output as i32,
    }
}

fn saturate(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn options_from_c(c: &medsam2_one_prompt_options) -> FfiResult<BankOptions> {
    let mut o = BankOptions::for_mode(mode_of(c.mode)?);
    o.capacity = c.capacity as usize;
    o.iou_margin = c.iou_margin;
    o.retrieval = match c.retrieval {
        MEDSAM2_RETRIEVAL_TOP_K => Retrieval::TopK(c.top_k as usize),
        MEDSAM2_RETRIEVAL_SAMPLE => Retrieval::Sample { seed: c.seed },
        r => {
            return Err(FfiError::invalid(format!(
                "unknown retrieval {r} (MEDSAM2_RETRIEVAL_TOP_K = 0, SAMPLE = 1)"
            )))
        }
    };
    o.preprocessing = match c.preprocessing {
        MEDSAM2_PREPROCESS_SAM2 => Preprocessing::Sam2,
        MEDSAM2_PREPROCESS_MEDICAL_SAM2 => Preprocessing::MedicalSam2,
        p => {
            return Err(FfiError::invalid(format!(
                "unknown preprocessing {p} (MEDSAM2_PREPROCESS_SAM2 = 0, MEDICAL_SAM2 = 1)"
            )))
        }
    };
    o.mask_threshold = c.mask_threshold;
    o.nearest_output = c.nearest_output != 0;
    o.validate()
        .map_err(|e| FfiError::invalid(format!("one-prompt options: {e}")))?;
    Ok(o)
}

fn action_code(a: &BankAction) -> u32 {
    match a {
        BankAction::Append => MEDSAM2_BANK_APPENDED,
        BankAction::Replace { .. } => MEDSAM2_BANK_REPLACED,
        BankAction::KeepSimilarity => MEDSAM2_BANK_KEPT_SIMILARITY,
        BankAction::KeepIou => MEDSAM2_BANK_KEPT_IOU,
        BankAction::Frozen => MEDSAM2_BANK_FROZEN,
    }
}

/// The number of pixels of a caller's image, for checking output buffers
/// before any work (the image itself is checked by `read_image`).
fn pixel_count(img: &medsam2_image) -> usize {
    (img.width as usize).saturating_mul(img.height as usize)
}

/// Decodes the image, runs `step` on it, records its details and logits,
/// and returns its mask and predicted IoU.
///
/// # Safety
/// `img` is a valid `medsam2_image` (see `medsam2_predictor_set_image`).
unsafe fn process(
    s: &mut medsam2_one_prompt,
    img: &medsam2_image,
    step: impl FnOnce(&mut OnePromptSession, &ImageInput) -> medsam2_core::Result<OnePromptOutput>,
) -> FfiResult<(Vec<u8>, f32)> {
    let (pixels, h, w) = read_image(img)?;
    let input = match &pixels {
        ImagePixels::Rgb8(rgb) => ImageInput::Rgb8 {
            data: rgb,
            height: h,
            width: w,
        },
        ImagePixels::GreyF32(grey) => ImageInput::GreyF32 {
            data: grey,
            height: h,
            width: w,
        },
    };
    let out = step(&mut s.session, &input)?;
    if out.mask.len() != h * w || out.logits.len() != h * w {
        return Err(FfiError::internal(format!(
            "one-prompt output of {} values for a {h}x{w} image",
            out.mask.len()
        )));
    }
    let result = medsam2_one_prompt_result {
        index: out.index,
        iou: out.iou,
        object_score: out.object_score,
        prompted: out.prompted as i32,
        num_picked: out.picked_sources.len() as u32,
        bank_action: action_code(&out.update.action),
        bank_len: s.session.bank().len() as u32,
        dropped_source: out.dropped_source.map_or(-1, |d| d as i64),
    };
    s.last = Some((result, out.logits));
    Ok((out.mask, out.iou))
}

/// Fills `out_options` with the defaults of a bank mode
/// (`MEDSAM2_BANK_MODE_FIXED` or `MEDSAM2_BANK_MODE_REFERENCE`): capacity 16,
/// IoU margin 0.1, and the mode's retrieval, preprocessing and output rules.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (unknown
/// mode). Thread-safe. ABI 2.
///
/// # Safety
/// `out_options` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_options_default(
    mode: u32,
    out_options: *mut medsam2_one_prompt_options,
) -> medsam2_status {
    run(|| {
        if out_options.is_null() {
            return Err(FfiError::null("out_options"));
        }
        let o = BankOptions::for_mode(mode_of(mode)?);
        write_out(out_options, options_to_c(&o), "out_options")
    })
}

/// Creates a one-prompt session over `model` (which it keeps alive) with an
/// empty bank.
///
/// * `options`: NULL for the defaults of `MEDSAM2_BANK_MODE_FIXED`.
/// * `out_session`: receives the session, or NULL on failure; free it with
///   `medsam2_one_prompt_free`.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (unknown
/// mode, retrieval or preprocessing code, capacity or top_k 0, non-finite
/// margin or threshold), `MEDSAM2_ERR_INTERNAL`. Thread-safe with respect to
/// `model`. ABI 2.
///
/// # Safety
/// `model` is NULL or a live model; `options` is NULL or readable;
/// `out_session` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_new(
    model: *const medsam2_model,
    options: *const medsam2_one_prompt_options,
    out_session: *mut *mut medsam2_one_prompt,
) -> medsam2_status {
    run(|| {
        if out_session.is_null() {
            return Err(FfiError::null("out_session"));
        }
        out_session.write(std::ptr::null_mut());
        let m = handle(model, "model")?;
        let opts = match options.as_ref() {
            Some(o) => options_from_c(o)?,
            None => BankOptions::fixed(),
        };
        let session = OnePromptSession::new(m.inner.clone(), opts)?;
        let boxed = Box::new(medsam2_one_prompt {
            session,
            last: None,
        });
        out_session.write(Box::into_raw(boxed));
        Ok(())
    })
}

/// Frees a one-prompt session. NULL is accepted (no-op). Always returns
/// `MEDSAM2_OK`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session not in use by another thread; it must
/// not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_free(
    session: *mut medsam2_one_prompt,
) -> medsam2_status {
    run(|| {
        if !session.is_null() {
            drop(Box::from_raw(session));
        }
        Ok(())
    })
}

/// Segments an image from a prompt (clicks, a box and/or low-resolution mask
/// logits, as `medsam2_predictor_predict` takes them, in this image's
/// pixels), conditioned on the bank; the result's memory then goes through
/// the bank's update rule. Typically called once, on the first image.
///
/// * `image`: any size, pixel type and window as in
///   `medsam2_predictor_set_image` (each image of the stream may differ).
/// * `out_mask`: required output of `height * width` bytes (row-major, 1
///   inside the object, 0 outside); `out_mask_len` is its size in bytes.
/// * `out_iou`: NULL, or receives the predicted IoU.
///
/// The buffer size is checked before any computation. On failure nothing is
/// written, the bank and the image count are unchanged.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_BUFFER_TOO_SMALL`,
/// `MEDSAM2_ERR_INVALID_ARGUMENT` (bad image as in
/// `medsam2_predictor_set_image`; empty prompt, a point or box outside the
/// image, a bad label or mask_input size, too many points),
/// `MEDSAM2_ERR_INTERNAL`. Not thread-safe for one session. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `image` and `prompt` are NULL or
/// valid (see `medsam2_predictor_set_image`, `medsam2_predictor_predict`);
/// `out_mask` is NULL or writable for `out_mask_len` bytes; `out_iou` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_add_prompt(
    session: *mut medsam2_one_prompt,
    image: *const medsam2_image,
    prompt: *const medsam2_prompt,
    out_mask: *mut u8,
    out_mask_len: usize,
    out_iou: *mut f32,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        s.last = None;
        let img = handle(image, "image")?;
        let pr = handle(prompt, "prompt")?;
        let mask = out_slice(out_mask, out_mask_len, pixel_count(img), "out_mask")?;
        let low_res = s.session.model().cfg.image_size / 4;
        let prompt = read_prompt(pr, low_res)?;
        let (m, iou) = process(s, img, |sess, input| sess.add_prompt(input, &prompt))?;
        mask.copy_from_slice(&m);
        write_opt(out_iou, iou);
        Ok(())
    })
}

/// Uses a binary mask as the answer for an image (as SAM 2 does with a mask
/// prompt): its memory is encoded from the mask, with IoU 1, and goes
/// through the bank's update rule. Use it to start the bank from a
/// ground-truth or hand-drawn mask.
///
/// * `mask`: `height * width` bytes, row-major, nonzero = object;
///   `mask_len` must be exactly that.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (bad
/// image, `mask_len` differs from `width * height`), `MEDSAM2_ERR_INTERNAL`.
/// On failure the bank and the image count are unchanged. Not thread-safe for
/// one session. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `image` is NULL or valid; `mask` is
/// NULL or readable for `mask_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_add_mask(
    session: *mut medsam2_one_prompt,
    image: *const medsam2_image,
    mask: *const u8,
    mask_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        s.last = None;
        let img = handle(image, "image")?;
        if mask.is_null() {
            return Err(FfiError::null("mask"));
        }
        let n = pixel_count(img);
        if mask_len != n {
            return Err(FfiError::invalid(format!(
                "mask_len is {mask_len}, the image has {}x{} = {n} pixels",
                img.width, img.height
            )));
        }
        let m = in_slice(mask, mask_len, "mask")?;
        process(s, img, |sess, input| sess.add_mask(input, m))?;
        Ok(())
    })
}

/// Segments an image without a prompt, from the bank alone (the memories
/// most similar to it); its memory then goes through the bank's update rule.
/// With an empty bank the image is segmented from nothing (a degenerate
/// mask): prompt the first image first, or load a bank.
///
/// `image`, `out_mask`, `out_mask_len` and `out_iou` are as in
/// `medsam2_one_prompt_add_prompt`.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_BUFFER_TOO_SMALL`,
/// `MEDSAM2_ERR_INVALID_ARGUMENT` (bad image), `MEDSAM2_ERR_INTERNAL`. Not
/// thread-safe for one session. ABI 2.
///
/// # Safety
/// As `medsam2_one_prompt_add_prompt`, without `prompt`.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_segment(
    session: *mut medsam2_one_prompt,
    image: *const medsam2_image,
    out_mask: *mut u8,
    out_mask_len: usize,
    out_iou: *mut f32,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        s.last = None;
        let img = handle(image, "image")?;
        let mask = out_slice(out_mask, out_mask_len, pixel_count(img), "out_mask")?;
        let (m, iou) = process(s, img, |sess, input| sess.segment(input))?;
        mask.copy_from_slice(&m);
        write_opt(out_iou, iou);
        Ok(())
    })
}

/// Details of the last successful `_add_prompt`, `_add_mask` or `_segment`.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_STATE` (no image
/// processed yet, or the last of those calls failed). ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out_result` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_last_result(
    session: *const medsam2_one_prompt,
    out_result: *mut medsam2_one_prompt_result,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let (r, _) = s
            .last
            .as_ref()
            .ok_or_else(|| FfiError::state("no image processed yet"))?;
        write_out(out_result, *r, "out_result")
    })
}

/// Copies the mask logits of the last successful image at its size:
/// `height * width` floats, row-major (the mask is `logit > threshold`).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_STATE` (no image
/// processed yet, or the last call failed), `MEDSAM2_ERR_BUFFER_TOO_SMALL`.
/// ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out` is NULL or writable for
/// `out_len` floats.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_last_logits(
    session: *const medsam2_one_prompt,
    out: *mut f32,
    out_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let (_, logits) = s
            .last
            .as_ref()
            .ok_or_else(|| FfiError::state("no image processed yet"))?;
        out_slice(out, out_len, logits.len(), "out")?.copy_from_slice(logits);
        Ok(())
    })
}

/// Writes the bank, its options and the image count to a safetensors file
/// (UTF-8 path). The file is written to a temporary file in the same folder
/// and renamed into place, so a failed write leaves an existing file intact.
/// An existing file is replaced only if it is itself a confidence bank: a
/// path naming a checkpoint, an image or any other file is refused, as is a
/// directory or a folder that cannot be written.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (invalid
/// UTF-8), `MEDSAM2_ERR_IO` (refused or failed write), `MEDSAM2_ERR_INTERNAL`.
/// ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_save_bank(
    session: *const medsam2_one_prompt,
    path: *const c_char,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let p = c_str(path, "path")?;
        s.session.save_bank(p)?;
        Ok(())
    })
}

/// Replaces the bank with one saved by `medsam2_one_prompt_save_bank` (its
/// options, frozen flag and sampling state included) and continues its image
/// count. On failure the session is unchanged.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_IO` (missing, unreadable,
/// not a regular file, larger than `MEDSAM2_MAX_TENSOR_BYTES`),
/// `MEDSAM2_ERR_INVALID_ARGUMENT` (invalid UTF-8; not a valid confidence-bank
/// file; a bank saved with a model of other dimensions). ABI 2.
///
/// # Safety
/// `session` is NULL or a live session not in use by another thread; `path`
/// is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_load_bank(
    session: *mut medsam2_one_prompt,
    path: *const c_char,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let p = c_str(path, "path")?;
        s.session.load_bank(p)?;
        Ok(())
    })
}

/// The bank as the bytes of its file (what `medsam2_one_prompt_save_bank`
/// writes), for a host that stores it itself.
///
/// * `out`: NULL to query the size only, or a buffer of `out_len` bytes.
/// * `out_size`: NULL, or receives the size in bytes (also when the buffer
///   is too small).
///
/// Two calls give the same size; the order of the metadata in the bytes may
/// differ between calls.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (session),
/// `MEDSAM2_ERR_BUFFER_TOO_SMALL`, `MEDSAM2_ERR_INTERNAL`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out` is NULL or writable for
/// `out_len` bytes; `out_size` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_bank_to_bytes(
    session: *const medsam2_one_prompt,
    out: *mut u8,
    out_len: usize,
    out_size: *mut usize,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let bytes = s.session.bank_to_bytes()?;
        write_opt(out_size, bytes.len());
        if !out.is_null() {
            out_slice(out, out_len, bytes.len(), "out")?.copy_from_slice(&bytes);
        }
        Ok(())
    })
}

/// `medsam2_one_prompt_load_bank` from bytes held in memory (from
/// `medsam2_one_prompt_bank_to_bytes` or a bank file's contents); the bytes
/// are not kept. On failure the session is unchanged.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (`data` NULL with `len > 0`),
/// `MEDSAM2_ERR_INVALID_ARGUMENT` (`len` above `MEDSAM2_MAX_TENSOR_BYTES`,
/// not a valid bank (including `len == 0`), a bank of a model with other
/// dimensions). ABI 2.
///
/// # Safety
/// `session` is NULL or a live session not in use by another thread; `data`
/// is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_load_bank_from_memory(
    session: *mut medsam2_one_prompt,
    data: *const u8,
    len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let limit = medsam2_core::limits::MAX_TENSOR_BYTES;
        if len as u64 > limit {
            return Err(FfiError::invalid(format!(
                "{len} bytes exceed the limit of {limit} (MAX_TENSOR_BYTES)"
            )));
        }
        let bytes = in_slice(data, len, "data")?;
        s.session.load_bank_from_bytes(bytes)?;
        Ok(())
    })
}

/// The number of entries in the bank.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out_len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_bank_len(
    session: *const medsam2_one_prompt,
    out_len: *mut u32,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        write_out(out_len, s.session.bank().len() as u32, "out_len")
    })
}

/// The number of images processed (the next image's index; continues the
/// count of a loaded bank).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out_count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_images_seen(
    session: *const medsam2_one_prompt,
    out_count: *mut u64,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        write_out(out_count, s.session.images_seen(), "out_count")
    })
}

/// Freezes (nonzero) or unfreezes (0) the bank: a frozen bank conditions the
/// images but is never changed. The flag is saved with the bank.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_set_frozen(
    session: *mut medsam2_one_prompt,
    frozen: i32,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        s.session.set_frozen(frozen != 0);
        Ok(())
    })
}

/// Whether the bank is frozen (1) or not (0).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out_frozen` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_is_frozen(
    session: *const medsam2_one_prompt,
    out_frozen: *mut i32,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        write_out(
            out_frozen,
            s.session.bank().is_frozen() as i32,
            "out_frozen",
        )
    })
}

/// The session's current options (after `medsam2_one_prompt_load_bank`,
/// those saved with the bank).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`. ABI 2.
///
/// # Safety
/// `session` is NULL or a live session; `out_options` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_one_prompt_get_options(
    session: *const medsam2_one_prompt,
    out_options: *mut medsam2_one_prompt_options,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        write_out(
            out_options,
            options_to_c(s.session.bank().options()),
            "out_options",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_for_both_modes() {
        for mode in [BankMode::Fixed, BankMode::Reference] {
            let o = BankOptions::for_mode(mode);
            assert_eq!(options_from_c(&options_to_c(&o)).unwrap(), o);
        }
        let mut c = options_to_c(&BankOptions::fixed());
        c.top_k = 3;
        c.capacity = 5;
        c.retrieval = MEDSAM2_RETRIEVAL_SAMPLE;
        c.seed = 7;
        let o = options_from_c(&c).unwrap();
        assert_eq!(o.retrieval, Retrieval::Sample { seed: 7 });
        assert_eq!(o.capacity, 5);
        for bad in [
            medsam2_one_prompt_options { mode: 9, ..c },
            medsam2_one_prompt_options { capacity: 0, ..c },
            medsam2_one_prompt_options {
                retrieval: MEDSAM2_RETRIEVAL_TOP_K,
                top_k: 0,
                ..c
            },
            medsam2_one_prompt_options { retrieval: 4, ..c },
            medsam2_one_prompt_options {
                preprocessing: 2,
                ..c
            },
            medsam2_one_prompt_options {
                iou_margin: f32::NAN,
                ..c
            },
            medsam2_one_prompt_options {
                mask_threshold: f32::INFINITY,
                ..c
            },
        ] {
            let e = options_from_c(&bad).unwrap_err();
            assert_eq!(e.status, medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT);
        }
    }
}
