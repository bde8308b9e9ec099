//! Volume sessions: prompt slices of a 3-D volume and propagate through it
//! (`medsam2_session`).

use std::ffi::{c_int, c_void};

use medsam2_core::medical::intensity::{Normalization, Stretch};
use medsam2_core::medical::slicing::Axis;
use medsam2_core::medical::{DataType, Geometry, Volume, VoxelData};
use medsam2_core::sam2_video_predictor::{Direction, FrameMasks, Progress, SessionOptions};
use medsam2_core::volume::{
    Intensity, Propagation, SegmentOptions, Slices, VolumeGrid, VolumeSession,
};

use crate::ffi_util::{
    handle, handle_mut, in_slice, out_slice, run, write_opt, FfiError, FfiResult,
};
use crate::general::{medsam2_status, medsam2_window};
use crate::image::{
    checked_window, medsam2_pixel_type, MEDSAM2_PIXEL_F32, MEDSAM2_PIXEL_I16, MEDSAM2_PIXEL_U16,
    MEDSAM2_PIXEL_U8,
};
use crate::model::medsam2_model;

/// Largest object id (labels are `uint16_t`; 0 is the background).
pub const MEDSAM2_MAX_OBJECT_ID: u32 = 65535;

/// Slices along index axis `i` (the fastest in memory); slice pixel `(x, y)`
/// is voxel `(f, x, y)`.
pub const MEDSAM2_AXIS_I: u32 = 0;
/// Slices along index axis `j`; slice pixel `(x, y)` is voxel `(x, f, y)`.
pub const MEDSAM2_AXIS_J: u32 = 1;
/// Slices along index axis `k` (the slowest; axial slices of most CT);
/// slice pixel `(x, y)` is voxel `(x, y, f)`.
pub const MEDSAM2_AXIS_K: u32 = 2;

/// How voxel intensities are mapped to the model's grey input (one of the
/// `MEDSAM2_INTENSITY_*` constants).
pub type medsam2_intensity_mode = u32;
/// u8 voxels used as they are (other types are rejected).
pub const MEDSAM2_INTENSITY_NONE: medsam2_intensity_mode = 1;
/// Clip to a window (`medsam2_intensity.window`, e.g. from
/// `medsam2_window_preset`), then stretch to 0..255.
pub const MEDSAM2_INTENSITY_WINDOW: medsam2_intensity_mode = 2;
/// Clip to percentiles of the non-zero voxels (MedSAM's MR default: 0.5 and
/// 99.5), keep zeros at 0, then stretch to 0..255.
pub const MEDSAM2_INTENSITY_PERCENTILE: medsam2_intensity_mode = 3;

/// Stretch from the min/max of the clipped volume (MedSAM2's preprocessing; default).
pub const MEDSAM2_STRETCH_CLIPPED_MINMAX: u32 = 0;
/// Stretch from the clip bounds (radiology display convention: the window's
/// lower edge is 0, its upper edge 255).
pub const MEDSAM2_STRETCH_BOUNDS: u32 = 1;

/// Direction of a propagation (one of the `MEDSAM2_DIRECTION_*` constants).
pub type medsam2_direction = u32;
/// Towards increasing slice index.
pub const MEDSAM2_DIRECTION_FORWARD: medsam2_direction = 1;
/// Towards decreasing slice index.
pub const MEDSAM2_DIRECTION_BACKWARD: medsam2_direction = 2;
/// Forward, then backward from the same start slice.
pub const MEDSAM2_DIRECTION_BOTH: medsam2_direction = 3;

/// How `medsam2_session_segment` propagates the prompts through the volume
/// (one of the `MEDSAM2_PROPAGATION_*` constants; 0 means `_SEPARATE`).
pub type medsam2_propagation = u32;
/// Forward from the first prompted slice, then backward from it, in one
/// session (the backward pass sees the forward pass's memories).
pub const MEDSAM2_PROPAGATION_JOINT: medsam2_propagation = 1;
/// MedSAM2: forward from the first prompted slice; reset; prompted again and
/// backward from the last prompted slice; the union of the two
/// (`segment_volume`'s default).
pub const MEDSAM2_PROPAGATION_SEPARATE: medsam2_propagation = 2;
/// Forward only, from the first prompted slice (Medical-SAM2's evaluation).
pub const MEDSAM2_PROPAGATION_FORWARD: medsam2_propagation = 3;

/// Settings of `medsam2_session_segment` (NULL gives the defaults: all zero).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct medsam2_segment_options {
    /// `MEDSAM2_PROPAGATION_*`; 0 = `MEDSAM2_PROPAGATION_SEPARATE`, as `segment_volume`.
    pub propagation: medsam2_propagation,
    /// Nonzero: keep each object's largest 26-connected 3-D component (the
    /// MedSAM2 reference post-processing, `segment_volume --largest-component`).
    pub largest_component: i32,
    /// A voxel belongs to an object where its logit is > this (0.0 default,
    /// as SAM 2; Medical-SAM2 scores 0.5). Must be finite.
    pub mask_threshold: f32,
}

/// A 3-D volume described by the caller (copied by `medsam2_session_new`).
///
/// Voxel `(i, j, k)` is element `i + dims[0] * (j + dims[1] * k)` of
/// `voxels` (`i` fastest, the order of NIfTI, NRRD and ITK buffers; a C array
/// `[nz][ny][nx]`), in native byte order, no alignment required.
///
/// Geometry (LPS millimetres, as ITK and 3D Slicer):
/// `physical = origin + direction * (spacing .* index)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct medsam2_volume {
    /// The voxels (`dims[0] * dims[1] * dims[2]` elements of `pixel_type`).
    pub voxels: *const c_void,
    /// Element type: `MEDSAM2_PIXEL_U8`, `_I16`, `_U16` or `_F32`.
    pub pixel_type: medsam2_pixel_type,
    /// Sizes along index axes `i`, `j`, `k` (each >= 1).
    pub dims: [u32; 3],
    /// Voxel spacing along `i`, `j`, `k` in mm (> 0).
    pub spacing: [f64; 3],
    /// Physical position of the centre of voxel `(0, 0, 0)`.
    pub origin: [f64; 3],
    /// Direction cosines, row-major: `direction[3 * row + col]`; column `col`
    /// is the unit vector of index axis `col` (ITK's `GetDirection()`). All
    /// zeros means identity.
    pub direction: [f64; 9],
}

/// Intensity mapping of a volume to the model's input.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct medsam2_intensity {
    /// `MEDSAM2_INTENSITY_*`.
    pub mode: medsam2_intensity_mode,
    /// The window for `MEDSAM2_INTENSITY_WINDOW`.
    pub window: medsam2_window,
    /// Lower percentile (0..100) for `MEDSAM2_INTENSITY_PERCENTILE`.
    pub lower_percentile: f64,
    /// Upper percentile (lower..100) for `MEDSAM2_INTENSITY_PERCENTILE`.
    pub upper_percentile: f64,
    /// `MEDSAM2_STRETCH_CLIPPED_MINMAX` (0) or `MEDSAM2_STRETCH_BOUNDS`.
    pub stretch: u32,
}

/// Optional settings of a session (NULL gives the defaults).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct medsam2_session_options {
    /// Slices whose image features are kept in memory (LRU); 0 = default (8).
    pub feature_cache_slices: u32,
    /// Nonzero: where objects overlap, only the one with the highest score
    /// keeps the voxel (the official `non_overlap_masks`).
    pub non_overlap_masks: i32,
    /// Background holes of at most this many pixels in each slice's
    /// low-resolution mask become foreground (the official video
    /// predictor's `fill_hole_area`, applied there only on a GPU); 0 =
    /// default (8, as the official predictor on a GPU), negative = off (as
    /// the official code on a CPU).
    pub fill_hole_area: i32,
}

/// Progress callback of `medsam2_session_propagate`: called on the calling
/// thread after each slice with the slices done and the total; return 0 to
/// continue, nonzero to cancel. It must not unwind (longjmp, C++ exceptions)
/// through the library, nor call into the same session.
pub type medsam2_progress_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, done: u32, total: u32) -> c_int>;

/// A volume segmentation session: the slices of one volume, the objects
/// prompted on them and their propagated masks. Opaque.
///
/// Not thread-safe: one session must not be used by two threads at the same
/// time (it may move between threads). Sessions on different threads may
/// share one `medsam2_model`.
pub struct medsam2_session {
    vs: VolumeSession,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<medsam2_session>();
};

/// The core's element type of a `MEDSAM2_PIXEL_*` value.
fn data_type(t: medsam2_pixel_type) -> FfiResult<DataType> {
    Ok(match t {
        MEDSAM2_PIXEL_U8 => DataType::U8,
        MEDSAM2_PIXEL_I16 => DataType::I16,
        MEDSAM2_PIXEL_U16 => DataType::U16,
        MEDSAM2_PIXEL_F32 => DataType::F32,
        _ => {
            return Err(FfiError::invalid(format!(
                "unknown pixel type {t} (MEDSAM2_PIXEL_U8 = 1, I16 = 2, U16 = 3, F32 = 4)"
            )))
        }
    })
}

fn geometry(v: &medsam2_volume) -> Geometry {
    let mut direction = [[0.0; 3]; 3];
    for (r, row) in direction.iter_mut().enumerate() {
        row.copy_from_slice(&v.direction[3 * r..3 * r + 3]);
    }
    if v.direction.iter().all(|&d| d == 0.0) {
        direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    Geometry {
        spacing: v.spacing,
        origin: v.origin,
        direction,
    }
}

/// Reads the caller's volume into a core `Volume`.
///
/// # Safety
/// `v.voxels` is NULL or readable for the documented number of bytes.
unsafe fn read_volume(v: &medsam2_volume) -> FfiResult<Volume> {
    let dims = v.dims.map(|d| d as usize);
    if dims.contains(&0) {
        return Err(FfiError::invalid(format!(
            "volume dims {dims:?} must all be >= 1"
        )));
    }
    // Validate the type before reading.
    let dtype = data_type(v.pixel_type)?;
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|x| x.checked_mul(dims[2]))
        .and_then(|x| x.checked_mul(dtype.size()))
        .filter(|&b| b as u64 <= medsam2_core::medical::MAX_VOXEL_BYTES)
        .ok_or_else(|| {
            FfiError::invalid(format!(
                "volume dims {dims:?} exceed the limit of {} bytes (MAX_VOXEL_BYTES)",
                medsam2_core::medical::MAX_VOXEL_BYTES
            ))
        })?;
    let bytes = in_slice(v.voxels.cast::<u8>(), n, "volume->voxels")?;
    Ok(Volume::new(
        dims,
        geometry(v),
        VoxelData::from_ne_bytes(dtype, bytes),
    )?)
}

/// The core's intensity mapping of the caller's settings for `vol`.
fn core_intensity(vol: &Volume, it: &medsam2_intensity) -> FfiResult<Intensity> {
    let stretch = match it.stretch {
        MEDSAM2_STRETCH_CLIPPED_MINMAX => Stretch::ClippedMinMax,
        MEDSAM2_STRETCH_BOUNDS => Stretch::Bounds,
        s => return Err(FfiError::invalid(format!("unknown stretch {s} (0 or 1)"))),
    };
    let normalization = match it.mode {
        MEDSAM2_INTENSITY_NONE => {
            if vol.data().as_u8().is_none() {
                return Err(FfiError::invalid(
                    "MEDSAM2_INTENSITY_NONE needs u8 voxels; use a window or percentiles",
                ));
            }
            Normalization::Identity
        }
        MEDSAM2_INTENSITY_WINDOW => match checked_window(&it.window)? {
            Some(w) => Normalization::Window(w),
            None => {
                return Err(FfiError::invalid(
                    "MEDSAM2_INTENSITY_WINDOW needs window.width > 0",
                ))
            }
        },
        MEDSAM2_INTENSITY_PERCENTILE => Normalization::Percentile {
            lower: it.lower_percentile,
            upper: it.upper_percentile,
            nonzero_only: true,
        },
        m => {
            return Err(FfiError::invalid(format!(
                "unknown intensity mode {m} (NONE = 1, WINDOW = 2, PERCENTILE = 3)"
            )))
        }
    };
    Ok(Intensity {
        normalization,
        stretch,
    })
}

/// The core's segmentation settings of the caller's (NULL: defaults).
fn segment_options(o: Option<&medsam2_segment_options>) -> FfiResult<SegmentOptions> {
    let Some(o) = o else {
        return Ok(SegmentOptions::default());
    };
    let propagation = match o.propagation {
        0 | MEDSAM2_PROPAGATION_SEPARATE => Propagation::Separate,
        MEDSAM2_PROPAGATION_JOINT => Propagation::Joint,
        MEDSAM2_PROPAGATION_FORWARD => Propagation::Forward,
        p => {
            return Err(FfiError::invalid(format!(
                "propagation {p} (JOINT = 1, SEPARATE = 2, FORWARD = 3, 0 = SEPARATE)"
            )))
        }
    };
    if !o.mask_threshold.is_finite() {
        return Err(FfiError::invalid(format!(
            "mask_threshold {} is not finite",
            o.mask_threshold
        )));
    }
    Ok(SegmentOptions {
        propagation,
        largest_component: o.largest_component != 0,
        threshold: o.mask_threshold,
    })
}

/// Creates a session over a volume: maps its intensities to 0..255 grey and
/// cuts it into slices along `axis` (`MEDSAM2_AXIS_I`, `_J` or `_K`).
/// Slice images are encoded lazily (when first prompted or propagated).
///
/// * `model`: kept alive by the session.
/// * `volume`: copied; the caller keeps ownership of `volume->voxels`.
/// * `intensity`: the intensity mapping (required).
/// * `options`: NULL for defaults.
/// * `out_session`: receives the session, or NULL on failure; free it with
///   `medsam2_session_free`.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (unknown
/// pixel type, mode, stretch or axis, zero or too large dims, invalid
/// geometry, window or percentiles, non-u8 voxels with
/// `MEDSAM2_INTENSITY_NONE`).
///
/// Thread-safe with respect to `model`.
///
/// # Safety
/// Pointers are NULL or valid; `volume->voxels` is NULL or readable for
/// `dims[0] * dims[1] * dims[2]` elements of `pixel_type`.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_new(
    model: *const medsam2_model,
    volume: *const medsam2_volume,
    intensity: *const medsam2_intensity,
    axis: u32,
    options: *const medsam2_session_options,
    out_session: *mut *mut medsam2_session,
) -> medsam2_status {
    run(|| {
        if out_session.is_null() {
            return Err(FfiError::null("out_session"));
        }
        out_session.write(std::ptr::null_mut());
        let m = handle(model, "model")?;
        let v = handle(volume, "volume")?;
        let it = handle(intensity, "intensity")?;
        let axis = Axis::from_index(axis as usize).ok_or_else(|| {
            FfiError::invalid(format!("axis {axis} must be 0 (i), 1 (j) or 2 (k)"))
        })?;
        let mut opts = SessionOptions::default();
        if let Some(o) = options.as_ref() {
            if o.feature_cache_slices > 0 {
                opts.feature_cache_frames = o.feature_cache_slices as usize;
            }
            opts.non_overlap_masks = o.non_overlap_masks != 0;
            match o.fill_hole_area {
                0 => {}
                a if a < 0 => opts.fill_hole_area = 0,
                a => opts.fill_hole_area = a as usize,
            }
        }
        let vol = read_volume(v)?;
        let grey = core_intensity(&vol, it)?.grey(&vol)?;
        // The caller's copy is not needed any more: free it before slicing.
        drop(vol);
        let slices = Slices::from_grey(&grey, axis)?;
        let grid = VolumeGrid::of(&grey, axis);
        drop(grey);
        let vs = VolumeSession::from_slices(grid, slices, m.inner.clone(), opts)?;
        let s = medsam2_session { vs };
        out_session.write(Box::into_raw(Box::new(s)));
        Ok(())
    })
}

/// Frees a session. NULL is accepted (no-op). Always returns `MEDSAM2_OK`.
///
/// # Safety
/// `session` is NULL or a live session not in use by another thread; it must
/// not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_free(session: *mut medsam2_session) -> medsam2_status {
    run(|| {
        if !session.is_null() {
            drop(Box::from_raw(session));
        }
        Ok(())
    })
}

/// The slice geometry: number of slices along the session's axis and the
/// slice size in pixels (`width` columns, `height` rows). Any out-pointer may
/// be NULL.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (session).
///
/// # Safety
/// `session` is NULL or a live session; out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_slice_shape(
    session: *const medsam2_session,
    out_num_slices: *mut u32,
    out_width: *mut u32,
    out_height: *mut u32,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let (w, h) = s.vs.slice_size();
        write_opt(out_num_slices, s.vs.num_slices() as u32);
        write_opt(out_width, w as u32);
        write_opt(out_height, h as u32);
        Ok(())
    })
}

/// Converts a physical point (LPS, mm) to a slice index and continuous pixel
/// coordinates on it (the nearest slice; pixel centres at integers), for
/// prompts placed in patient space.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (point
/// not finite or outside the volume's slices).
///
/// # Safety
/// `session` is NULL or a live session; `point` is NULL or readable for 3
/// doubles; out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_physical_to_slice(
    session: *const medsam2_session,
    point: *const f64,
    out_slice: *mut u32,
    out_x: *mut f32,
    out_y: *mut f32,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let p = in_slice(point, 3, "point")?;
        if out_slice.is_null() || out_x.is_null() || out_y.is_null() {
            return Err(FfiError::null("out_slice/out_x/out_y"));
        }
        let (z, x, y) = s.vs.grid().locate([p[0], p[1], p[2]])?;
        out_slice.write(z as u32);
        out_x.write(x as f32);
        out_y.write(y as f32);
        Ok(())
    })
}

fn check_obj_id(obj_id: u32) -> FfiResult<()> {
    if obj_id == 0 || obj_id > MEDSAM2_MAX_OBJECT_ID {
        return Err(FfiError::invalid(format!(
            "object id {obj_id} must be within 1..={MEDSAM2_MAX_OBJECT_ID}"
        )));
    }
    Ok(())
}

fn check_slice(s: &medsam2_session, slice: u32) -> FfiResult<usize> {
    let n = s.vs.num_slices();
    if slice as usize >= n {
        return Err(FfiError::invalid(format!(
            "slice {slice} out of range (0..{n})"
        )));
    }
    Ok(slice as usize)
}

/// Writes the optional mask output of the add functions.
///
/// # Safety
/// `out` is NULL or writable for `width * height` bytes (checked by
/// `check_prompt_output`).
unsafe fn write_prompt_output(
    s: &medsam2_session,
    fm: &FrameMasks,
    obj_id: u32,
    out: *mut u8,
) -> FfiResult<()> {
    if out.is_null() {
        return Ok(());
    }
    let (w, h) = s.vs.slice_size();
    let m = fm.object_mask(obj_id)?;
    if m.len() != w * h {
        return Err(FfiError::internal("mask count or size mismatch"));
    }
    std::slice::from_raw_parts_mut(out, h * w).copy_from_slice(&m);
    Ok(())
}

/// Checks the optional mask output size before any work.
fn check_prompt_output(s: &medsam2_session, out: *mut u8, len: usize) -> FfiResult<()> {
    let (w, h) = s.vs.slice_size();
    if !out.is_null() && len < h * w {
        return Err(FfiError::too_small("out_mask", h * w, len));
    }
    Ok(())
}

/// Adds clicks for an object on a slice and segments the slice. The object
/// is created on first use (ids 1..=`MEDSAM2_MAX_OBJECT_ID`).
///
/// * `points`: `2 * num_points` floats `x, y` in slice pixels (`x` column,
///   `y` row, see `MEDSAM2_AXIS_*`); `labels`: `num_points` values, 1 =
///   object, 0 = background. `num_points` >= 1.
/// * `clear_old_points`: nonzero replaces the object's earlier clicks on this
///   slice; 0 adds to them (a correction: call `medsam2_session_propagate`
///   again to carry it through the volume).
/// * `out_mask`: NULL, or receives the object's new mask on this slice,
///   `width * height` bytes (0/1, row-major; see
///   `medsam2_session_slice_shape`); `out_mask_len` is its size.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (slice
/// out of range, object id 0 or too large, no point, a point outside the
/// slice, a bad label), `MEDSAM2_ERR_BUFFER_TOO_SMALL`, `MEDSAM2_ERR_INTERNAL`.
///
/// # Safety
/// Pointers are NULL or valid for their documented lengths.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_add_points(
    session: *mut medsam2_session,
    slice: u32,
    obj_id: u32,
    points: *const f32,
    labels: *const i32,
    num_points: usize,
    clear_old_points: i32,
    out_mask: *mut u8,
    out_mask_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let f = check_slice(s, slice)?;
        check_obj_id(obj_id)?;
        check_prompt_output(s, out_mask, out_mask_len)?;
        if num_points == 0 {
            return Err(FfiError::invalid(
                "num_points is 0: give at least one click",
            ));
        }
        if num_points > crate::image::MEDSAM2_MAX_POINTS as usize {
            return Err(FfiError::invalid(format!(
                "{num_points} points exceed the limit of {} (MAX_PROMPT_POINTS)",
                crate::image::MEDSAM2_MAX_POINTS
            )));
        }
        let pts = in_slice(points, 2 * num_points, "points")?;
        let lbl = in_slice(labels, num_points, "labels")?;
        if let Some(l) = lbl.iter().find(|&&l| l != 0 && l != 1) {
            return Err(FfiError::invalid(format!(
                "label {l}: use 1 (object) or 0 (background)"
            )));
        }
        let pts: Vec<[f32; 2]> = pts.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
        let fm =
            s.vs.add_points(f, obj_id, &pts, lbl, clear_old_points != 0)?;
        write_prompt_output(s, &fm, obj_id, out_mask)
    })
}

/// Adds a box for an object on a slice (replacing the object's earlier
/// prompts on that slice) and segments the slice.
///
/// * `bbox`: 4 floats `x0, y0, x1, y1` in slice pixels (top-left, bottom-right).
/// * `out_mask`, `out_mask_len`: as in `medsam2_session_add_points`.
///
/// Errors: as `medsam2_session_add_points` (box outside the slice or inverted).
///
/// # Safety
/// Pointers are NULL or valid for their documented lengths.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_add_box(
    session: *mut medsam2_session,
    slice: u32,
    obj_id: u32,
    bbox: *const f32,
    out_mask: *mut u8,
    out_mask_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let f = check_slice(s, slice)?;
        check_obj_id(obj_id)?;
        check_prompt_output(s, out_mask, out_mask_len)?;
        let b = in_slice(bbox, 4, "bbox")?;
        let fm = s.vs.add_box(f, obj_id, [b[0], b[1], b[2], b[3]])?;
        write_prompt_output(s, &fm, obj_id, out_mask)
    })
}

/// Adds a mask for an object on a slice (replacing its earlier prompts on
/// that slice), e.g. a manual or corrected segmentation.
///
/// * `mask`: `width * height` bytes, row-major, nonzero = object;
///   `mask_len` must be exactly `width * height`.
/// * `out_mask`, `out_mask_len`: as in `medsam2_session_add_points`.
///
/// Errors: as `medsam2_session_add_points` (wrong `mask_len`).
///
/// # Safety
/// Pointers are NULL or valid for their documented lengths.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_add_mask(
    session: *mut medsam2_session,
    slice: u32,
    obj_id: u32,
    mask: *const u8,
    mask_len: usize,
    out_mask: *mut u8,
    out_mask_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let f = check_slice(s, slice)?;
        check_obj_id(obj_id)?;
        check_prompt_output(s, out_mask, out_mask_len)?;
        let (w, h) = s.vs.slice_size();
        if mask_len != h * w {
            return Err(FfiError::invalid(format!(
                "mask_len is {mask_len}, the slice has {w}x{h} = {} pixels",
                w * h
            )));
        }
        let m = in_slice(mask, mask_len, "mask")?;
        let fm = s.vs.add_mask(f, obj_id, m)?;
        write_prompt_output(s, &fm, obj_id, out_mask)
    })
}

/// Removes an object's prompts on one slice (its other slices are kept).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (slice
/// out of range, unknown object).
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_clear_prompts(
    session: *mut medsam2_session,
    slice: u32,
    obj_id: u32,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let f = check_slice(s, slice)?;
        s.vs.clear_prompts(f, obj_id)?;
        Ok(())
    })
}

/// Propagates every object's prompts through the slices.
///
/// * `direction`: `MEDSAM2_DIRECTION_FORWARD`, `_BACKWARD` or `_BOTH`.
/// * `start_slice`: the slice to start from, or -1 for the first prompted slice.
/// * `max_slices`: at most this many slices beyond the start per direction;
///   0 for no limit.
/// * `progress`, `user`: NULL, or a callback called after each slice with
///   `user`; returning nonzero cancels.
///
/// A cancelled propagation returns `MEDSAM2_ERR_CANCELLED` and leaves the
/// session valid: slices done so far keep their masks, and propagating again
/// redoes the rest. Propagating again after adding prompts (corrections)
/// re-tracks the slices.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (bad
/// direction, start out of range), `MEDSAM2_ERR_INVALID_STATE` (no prompt
/// yet), `MEDSAM2_ERR_CANCELLED`, `MEDSAM2_ERR_INTERNAL`.
///
/// # Safety
/// `session` is NULL or a live session; `progress` is NULL or a function
/// that may be called with `user`.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_propagate(
    session: *mut medsam2_session,
    direction: medsam2_direction,
    start_slice: i64,
    max_slices: u32,
    progress: medsam2_progress_fn,
    user: *mut c_void,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let dir = match direction {
            MEDSAM2_DIRECTION_FORWARD => Direction::Forward,
            MEDSAM2_DIRECTION_BACKWARD => Direction::Backward,
            MEDSAM2_DIRECTION_BOTH => Direction::Both,
            d => {
                return Err(FfiError::invalid(format!(
                    "direction {d} (FORWARD = 1, BACKWARD = 2, BOTH = 3)"
                )))
            }
        };
        let start = if start_slice < 0 {
            None
        } else {
            let n = s.vs.num_slices();
            if start_slice as u64 >= n as u64 {
                return Err(FfiError::invalid(format!(
                    "start_slice {start_slice} out of range (0..{n})"
                )));
            }
            Some(start_slice as usize)
        };
        if s.vs.predictor().obj_ids().is_empty() {
            return Err(FfiError::state(
                "no prompt yet: add points, a box or a mask first",
            ));
        }
        let max = if max_slices == 0 {
            None
        } else {
            Some(max_slices as usize)
        };
        s.vs.propagate(start, dir, max, |_, p| match progress {
            // SAFETY: the caller guarantees `progress` may be called with `user`.
            Some(cb) => (unsafe { cb(user, p.done as u32, p.total as u32) }) == 0,
            None => true,
        })?;
        Ok(())
    })
}

/// Segments the volume from every prompt added so far, as `segment_volume`
/// does: the session's tracking state is reset, each object's prompts are
/// given again (objects in increasing id order) and propagated in the chosen
/// mode (`opts->propagation`), optionally keeping each object's largest 3-D
/// component; then the label volume is written to `out_labels`.
///
/// * `opts`: NULL for the defaults (`MEDSAM2_PROPAGATION_SEPARATE`, no
///   component filter, threshold 0).
/// * `out_labels`: `dims[0] * dims[1] * dims[2]` `uint16_t` values in the
///   input volume's voxel order (`i` fastest): the id of the object covering
///   the voxel, or 0; where objects overlap, the higher id wins. `out_len` is
///   its size in elements. Equal voxel for voxel to `segment_volume` with the
///   same prompts and options (for several objects, create the session with
///   `non_overlap_masks = 1`, as `segment_volume` does).
/// * `progress`, `user`: NULL, or a callback called after each slice with the
///   slice visits done and to do over all passes; returning nonzero cancels.
///
/// Afterwards the session's per-slice masks (`medsam2_session_get_*`) are
/// those of the last pass; the prompts are kept, so prompts can be added and
/// `medsam2_session_segment` called again.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (bad
/// propagation, threshold not finite), `MEDSAM2_ERR_BUFFER_TOO_SMALL`,
/// `MEDSAM2_ERR_INVALID_STATE` (no prompt yet), `MEDSAM2_ERR_CANCELLED` (the
/// session stays valid), `MEDSAM2_ERR_INTERNAL`.
///
/// # Safety
/// `session` is NULL or a live session; `opts` is NULL or valid; `out_labels`
/// is NULL or writable for `out_len` values; `progress` is NULL or a function
/// that may be called with `user`.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_segment(
    session: *mut medsam2_session,
    opts: *const medsam2_segment_options,
    out_labels: *mut u16,
    out_len: usize,
    progress: medsam2_progress_fn,
    user: *mut c_void,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        let opts = segment_options(opts.as_ref())?;
        let d = s.vs.grid().dims;
        let o = out_slice(out_labels, out_len, d[0] * d[1] * d[2], "out_labels")?;
        if s.vs.prompts().iter().all(|p| p.slices.is_empty()) {
            return Err(FfiError::state(
                "no prompt yet: add points, a box or a mask first",
            ));
        }
        let seg = s.vs.segment(&opts, &mut |p: Progress| match progress {
            // SAFETY: the caller guarantees `progress` may be called with `user`.
            Some(cb) => (unsafe { cb(user, p.done as u32, p.total as u32) }) == 0,
            None => true,
        })?;
        Ok(s.vs.labels_into(&seg, o)?)
    })
}

/// Adds a box for an object from two opposite corners in physical LPS
/// millimetres (as ITK and 3D Slicer), prompted on the slice nearest their
/// middle, as `segment_volume --physical --box` does: the corners are mapped
/// to voxel indices (with a rotated direction the box is the index-space box
/// they span), then to slice pixels (half a pixel of slack at the edges,
/// clamped). Replaces the object's earlier prompts on that slice and segments
/// it.
///
/// * `corner0`, `corner1`: 3 doubles each (x, y, z in LPS mm).
/// * `out_slice`: NULL, or receives the slice prompted.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (object
/// id 0 or too large, corners not finite, the box outside the volume),
/// `MEDSAM2_ERR_INTERNAL`.
///
/// # Safety
/// `session` is NULL or a live session; `corner0`, `corner1` are NULL or
/// readable for 3 doubles; `out_slice` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_add_box_physical(
    session: *mut medsam2_session,
    obj_id: u32,
    corner0: *const f64,
    corner1: *const f64,
    out_slice: *mut u32,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        check_obj_id(obj_id)?;
        let a = in_slice(corner0, 3, "corner0")?;
        let b = in_slice(corner1, 3, "corner1")?;
        let (z, _) =
            s.vs.add_box_physical(obj_id, [a[0], a[1], a[2]], [b[0], b[1], b[2]])?;
        write_opt(out_slice, z as u32);
        Ok(())
    })
}

/// The ids of the session's objects, in creation order.
///
/// * `out_ids`: NULL (to query the count only), or receives the ids;
///   `out_ids_len` is its size in elements.
/// * `out_count`: NULL, or receives the number of objects.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` (session),
/// `MEDSAM2_ERR_BUFFER_TOO_SMALL` (`out_count` is still written).
///
/// # Safety
/// `session` is NULL or a live session; out-pointers are NULL or writable
/// for their documented lengths.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_object_ids(
    session: *const medsam2_session,
    out_ids: *mut u32,
    out_ids_len: usize,
    out_count: *mut usize,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let ids = s.vs.predictor().obj_ids();
        write_opt(out_count, ids.len());
        if !out_ids.is_null() {
            out_slice(out_ids, out_ids_len, ids.len(), "out_ids")?.copy_from_slice(ids);
        }
        Ok(())
    })
}

/// Copies one object's current mask on a slice (0/1 bytes, `width *
/// height`, row-major): its prompt output or propagated mask, all zeros where
/// it has none yet.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (slice
/// out of range, unknown object), `MEDSAM2_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `session` is NULL or a live session; `out` is NULL or writable for
/// `out_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_get_object_mask(
    session: *const medsam2_session,
    slice: u32,
    obj_id: u32,
    out: *mut u8,
    out_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let f = check_slice(s, slice)?;
        if !s.vs.predictor().obj_ids().contains(&obj_id) {
            return Err(FfiError::invalid(format!("unknown object id {obj_id}")));
        }
        let (w, h) = s.vs.slice_size();
        let o = out_slice(out, out_len, h * w, "out")?;
        let m = s.vs.slice_masks(f)?.object_mask(obj_id)?;
        if m.len() != o.len() {
            return Err(FfiError::internal("mask count or size mismatch"));
        }
        o.copy_from_slice(&m);
        Ok(())
    })
}

/// Copies the label map of one slice: `width * height` `uint16_t` values,
/// row-major, each the id of the object covering the pixel or 0 (where
/// objects overlap, the one created last wins).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (slice
/// out of range), `MEDSAM2_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `session` is NULL or a live session; `out` is NULL or writable for
/// `out_len` values.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_get_slice_labels(
    session: *const medsam2_session,
    slice: u32,
    out: *mut u16,
    out_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let f = check_slice(s, slice)?;
        let (w, h) = s.vs.slice_size();
        let o = out_slice(out, out_len, h * w, "out")?;
        let labels = s.vs.slice_labels(f)?;
        if labels.len() != o.len() {
            return Err(FfiError::internal("label map size mismatch"));
        }
        for (d, &l) in o.iter_mut().zip(&labels) {
            *d = l as u16;
        }
        Ok(())
    })
}

/// Copies the label volume: `dims[0] * dims[1] * dims[2]` `uint16_t` values
/// in the input volume's voxel order (`i` fastest), each the id of the object
/// covering the voxel or 0 (overlaps as in `medsam2_session_get_slice_labels`).
/// Slices not reached by a propagation are 0.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_BUFFER_TOO_SMALL`,
/// `MEDSAM2_ERR_INTERNAL`.
///
/// # Safety
/// `session` is NULL or a live session; `out` is NULL or writable for
/// `out_len` values.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_get_labels(
    session: *const medsam2_session,
    out: *mut u16,
    out_len: usize,
) -> medsam2_status {
    run(|| {
        let s = handle(session, "session")?;
        let d = s.vs.grid().dims;
        let o = out_slice(out, out_len, d[0] * d[1] * d[2], "out")?;
        Ok(s.vs.current_labels_into(o)?)
    })
}

/// Removes an object with all its prompts and masks.
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`, `MEDSAM2_ERR_INVALID_ARGUMENT` (unknown object).
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_remove_object(
    session: *mut medsam2_session,
    obj_id: u32,
) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        s.vs.remove_object(obj_id)?;
        Ok(())
    })
}

/// Forgets every object, prompt and mask (the volume and its cached slice
/// features are kept, so prompting again is fast).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER`.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn medsam2_session_reset(session: *mut medsam2_session) -> medsam2_status {
    run(|| {
        let s = handle_mut(session, "session")?;
        s.vs.reset();
        Ok(())
    })
}
