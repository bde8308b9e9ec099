//! Status codes, version queries, the thread-local last error, intensity windows.

use std::ffi::c_char;

use crate::ffi_util::{c_str, run, write_out, FfiError};

/// Major version of the library (`MEDSAM2_VERSION_MAJOR.MINOR.PATCH` is the
/// version of the header; compare with `medsam2_version()` at run time).
pub const MEDSAM2_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const MEDSAM2_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const MEDSAM2_VERSION_PATCH: u32 = 1;

/// Version of the binary interface described by this header. It changes
/// whenever a function signature, a struct layout or a constant changes
/// incompatibly; a program should check `medsam2_abi_version() ==
/// MEDSAM2_ABI_VERSION` before any other call.
pub const MEDSAM2_ABI_VERSION: u32 = 2;

/// Limits (checked before anything is allocated; exceeding one fails with a
/// one-line error naming it; see also `MEDSAM2_MAX_POINTS`). Largest model
/// input side (`image_size` of a config).
pub const MEDSAM2_MAX_IMAGE_SIZE: u32 = 1024;
/// Most objects tracked at once by one session.
pub const MEDSAM2_MAX_OBJECTS: u32 = 256;
/// Largest volume a session accepts (voxels x bytes per voxel), and largest
/// decoded voxel payload read from a file: 1 GiB.
pub const MEDSAM2_MAX_VOXEL_BYTES: u64 = 1073741824;
/// Largest YAML config file, in bytes; its `${...}` interpolations may expand
/// it to at most 100000 nodes.
pub const MEDSAM2_MAX_CONFIG_BYTES: u32 = 1048576;
/// Largest tensor stored in a checkpoint, in bytes (4 GiB). A `.pt`
/// checkpoint's pickle may describe at most 10 million objects; checkpoint,
/// config and volume paths must name regular files (not directories, FIFOs or
/// devices), and checkpoints with NaN or infinite weights are refused.
pub const MEDSAM2_MAX_TENSOR_BYTES: u64 = 4294967296;

/// Result of every call that can fail. `MEDSAM2_OK` is 0; on any other value
/// `medsam2_last_error()` describes the failure, and the call had no effect
/// on its out-parameters other than setting returned handles to NULL (unless
/// a function says otherwise).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum medsam2_status {
    /// Success.
    MEDSAM2_OK = 0,
    /// An argument is out of range or inconsistent (bad size, a prompt
    /// outside the image, an unknown preset, device or dtype name, invalid
    /// UTF-8, ...).
    MEDSAM2_ERR_INVALID_ARGUMENT = 1,
    /// A required pointer argument is NULL.
    MEDSAM2_ERR_NULL_POINTER = 2,
    /// A caller-provided output buffer is smaller than the result; the
    /// message gives the number of elements needed.
    MEDSAM2_ERR_BUFFER_TOO_SMALL = 3,
    /// A file could not be read (missing, unreadable).
    MEDSAM2_ERR_IO = 4,
    /// The checkpoint is malformed or does not match the model configuration
    /// (missing, unexpected or wrongly shaped tensors).
    MEDSAM2_ERR_CHECKPOINT = 5,
    /// The model configuration (preset name or YAML file) is invalid.
    MEDSAM2_ERR_CONFIG = 6,
    /// The requested device (CUDA, Metal) was not compiled into this library
    /// or cannot be opened.
    MEDSAM2_ERR_BACKEND_UNAVAILABLE = 7,
    /// The operation was cancelled by the caller's progress callback.
    MEDSAM2_ERR_CANCELLED = 8,
    /// The call is not valid in the object's current state (e.g. predict
    /// before an image was set).
    MEDSAM2_ERR_INVALID_STATE = 9,
    /// An internal error of the tensor backend.
    MEDSAM2_ERR_INTERNAL = 10,
    /// A bug: a panic inside the library was caught at the boundary. The
    /// object involved should be freed and not used further.
    MEDSAM2_ERR_PANIC = 11,
}

/// The library version as a static NUL-terminated string (`"MAJOR.MINOR.PATCH"`).
///
/// Never fails; the string is owned by the library and valid forever.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn medsam2_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version the library was built with (compare with `MEDSAM2_ABI_VERSION`).
///
/// Never fails. Thread-safe.
#[no_mangle]
pub extern "C" fn medsam2_abi_version() -> u32 {
    MEDSAM2_ABI_VERSION
}

/// A description of the last failure on the calling thread: empty (never
/// NULL) after a call that succeeded.
///
/// Every function returning `medsam2_status` resets it, so read it right
/// after the failing call. The string is owned by the library and valid until
/// the next call into the library on the same thread; copy it to keep it.
/// Each thread has its own message.
#[no_mangle]
pub extern "C" fn medsam2_last_error() -> *const c_char {
    crate::ffi_util::last_error_ptr()
}

/// The name of a status code (e.g. `"MEDSAM2_ERR_IO"`) as a static string;
/// `"MEDSAM2_UNKNOWN_STATUS"` for a value that is not a status.
///
/// Never fails; the string is valid forever. Thread-safe.
#[no_mangle]
pub extern "C" fn medsam2_status_string(status: i32) -> *const c_char {
    let s: &'static [u8] = match status {
        0 => b"MEDSAM2_OK\0",
        1 => b"MEDSAM2_ERR_INVALID_ARGUMENT\0",
        2 => b"MEDSAM2_ERR_NULL_POINTER\0",
        3 => b"MEDSAM2_ERR_BUFFER_TOO_SMALL\0",
        4 => b"MEDSAM2_ERR_IO\0",
        5 => b"MEDSAM2_ERR_CHECKPOINT\0",
        6 => b"MEDSAM2_ERR_CONFIG\0",
        7 => b"MEDSAM2_ERR_BACKEND_UNAVAILABLE\0",
        8 => b"MEDSAM2_ERR_CANCELLED\0",
        9 => b"MEDSAM2_ERR_INVALID_STATE\0",
        10 => b"MEDSAM2_ERR_INTERNAL\0",
        11 => b"MEDSAM2_ERR_PANIC\0",
        _ => b"MEDSAM2_UNKNOWN_STATUS\0",
    };
    s.as_ptr().cast()
}

/// An intensity window: values in `[level - width/2, level + width/2]` map
/// linearly to `0..1`, values outside are clipped. `width == 0` means "no
/// window" wherever a window is optional.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct medsam2_window {
    /// Centre of the window (e.g. 40 HU for soft tissue).
    pub level: f64,
    /// Width of the window (> 0; e.g. 400 HU), or 0 for none.
    pub width: f64,
}

/// Looks up a CT window preset by name: `"soft-tissue"`, `"abdomen"`,
/// `"lung"`, `"bone"`, `"brain"`, `"mediastinum"` (case-insensitive; `-`,
/// `_` and spaces are interchangeable).
///
/// Errors: `MEDSAM2_ERR_NULL_POINTER` when `name` or `out_window` is NULL,
/// `MEDSAM2_ERR_INVALID_ARGUMENT` for an unknown name. Thread-safe.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out_window` is NULL or points
/// to writable memory for one `medsam2_window`.
#[no_mangle]
pub unsafe extern "C" fn medsam2_window_preset(
    name: *const c_char,
    out_window: *mut medsam2_window,
) -> medsam2_status {
    run(|| {
        let n = c_str(name, "name")?;
        if out_window.is_null() {
            return Err(FfiError::null("out_window"));
        }
        let w = medsam2_core::medical::intensity::Window::preset(n).ok_or_else(|| {
            let names: Vec<&str> = medsam2_core::medical::intensity::Window::PRESETS
                .iter()
                .map(|(p, _)| *p)
                .collect();
            FfiError::invalid(format!(
                "unknown window preset `{n}` (known: {})",
                names.join(", ")
            ))
        })?;
        write_out(
            out_window,
            medsam2_window {
                level: w.level,
                width: w.width,
            },
            "out_window",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use medsam2_core::limits as l;

    #[test]
    fn header_limits_are_the_core_limits() {
        assert_eq!(MEDSAM2_MAX_IMAGE_SIZE as usize, l::MAX_IMAGE_SIZE);
        assert_eq!(crate::MEDSAM2_MAX_POINTS as usize, l::MAX_PROMPT_POINTS);
        assert_eq!(MEDSAM2_MAX_OBJECTS as usize, l::MAX_OBJECTS);
        assert_eq!(MEDSAM2_MAX_VOXEL_BYTES, l::MAX_VOXEL_BYTES);
        assert_eq!(MEDSAM2_MAX_CONFIG_BYTES as usize, l::MAX_CONFIG_BYTES);
        assert_eq!(MEDSAM2_MAX_TENSOR_BYTES, l::MAX_TENSOR_BYTES);
        assert_eq!(l::MAX_CONFIG_NODES, 100_000);
        assert_eq!(l::MAX_PICKLE_OBJECTS, 10_000_000);
    }
}
