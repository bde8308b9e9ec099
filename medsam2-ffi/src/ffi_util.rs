//! Internal helpers: the error type, the thread-local last error, the panic
//! guard around every exported body, and checked pointer conversions.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};

use medsam2_core::medical::MedicalError;

use crate::general::medsam2_status;

/// An error on its way to C: a status code and a message.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: medsam2_status,
    pub message: String,
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

impl FfiError {
    pub fn new(status: medsam2_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT, message)
    }

    pub fn null(name: &str) -> Self {
        Self::new(
            medsam2_status::MEDSAM2_ERR_NULL_POINTER,
            format!("`{name}` is NULL"),
        )
    }

    pub fn state(message: impl Into<String>) -> Self {
        Self::new(medsam2_status::MEDSAM2_ERR_INVALID_STATE, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(medsam2_status::MEDSAM2_ERR_INTERNAL, message)
    }

    pub fn too_small(name: &str, needed: usize, given: usize) -> Self {
        Self::new(
            medsam2_status::MEDSAM2_ERR_BUFFER_TOO_SMALL,
            format!("`{name}` holds {given} elements, {needed} are needed"),
        )
    }
}

impl From<medsam2_core::Error> for FfiError {
    fn from(e: medsam2_core::Error) -> Self {
        use medsam2_core::Error as E;
        use medsam2_status as S;
        let e = match e {
            E::Medical(m) => return m.into(),
            e => e,
        };
        let status = match &e {
            E::Config(_) => S::MEDSAM2_ERR_CONFIG,
            E::Checkpoint(_) | E::ShapeMismatch { .. } => S::MEDSAM2_ERR_CHECKPOINT,
            E::InvalidInput(_) | E::Volume(_) => S::MEDSAM2_ERR_INVALID_ARGUMENT,
            E::Cancelled => S::MEDSAM2_ERR_CANCELLED,
            E::Io { .. } => S::MEDSAM2_ERR_IO,
            _ => S::MEDSAM2_ERR_INTERNAL,
        };
        Self::new(status, e.to_string())
    }
}

impl From<MedicalError> for FfiError {
    fn from(e: MedicalError) -> Self {
        use medsam2_status as S;
        let status = match &e {
            MedicalError::Io(_) | MedicalError::File { .. } => S::MEDSAM2_ERR_IO,
            MedicalError::Format { .. }
            | MedicalError::Unsupported { .. }
            | MedicalError::UnknownFormat(_) => S::MEDSAM2_ERR_IO,
            _ => S::MEDSAM2_ERR_INVALID_ARGUMENT,
        };
        Self::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // One line always: no backtrace or panic text, whatever RUST_BACKTRACE says.
    let message = medsam2_core::error::one_line(message);
    let clean: Vec<u8> = message
        .bytes()
        .map(|b| if b == 0 { b' ' } else { b })
        .collect();
    let c = CString::new(clean).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = c);
}

/// The message of the last failed call on this thread (empty if none).
pub(crate) fn last_error_ptr() -> *const c_char {
    static EMPTY: &CStr = c"";
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ptr())
        .unwrap_or(EMPTY.as_ptr())
}

/// Runs an exported body: clears the last error, catches panics (silently:
/// no panic text reaches the host's stderr), and turns the outcome into a
/// status (recording the one-line message on failure).
pub(crate) fn run(body: impl FnOnce() -> FfiResult<()>) -> medsam2_status {
    set_last_error("");
    match medsam2_core::error::catch_panic_quietly(body) {
        Ok(Ok(())) => medsam2_status::MEDSAM2_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(panic) => {
            set_last_error(&format!("internal error (panic): {panic}"));
            medsam2_status::MEDSAM2_ERR_PANIC
        }
    }
}

/// A required UTF-8 C string.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| FfiError::invalid(format!("`{name}` is not valid UTF-8")))
}

/// An optional UTF-8 C string (NULL or empty gives `None`).
///
/// # Safety
/// As [`c_str`].
pub(crate) unsafe fn opt_c_str<'a>(p: *const c_char, name: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    let s = c_str(p, name)?;
    Ok(if s.is_empty() { None } else { Some(s) })
}

/// A caller's input array of `len` elements (empty when `len` is 0, even if `p` is NULL).
///
/// # Safety
/// `p` is NULL or valid for reading `len` elements of `T`, suitably aligned.
pub(crate) unsafe fn in_slice<'a, T>(p: *const T, len: usize, name: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    if len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(FfiError::invalid(format!(
            "`{name}`: length {len} is too large"
        )));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// The first `needed` elements of a caller's output buffer of `len` elements.
///
/// # Safety
/// `p` is NULL or valid for writing `len` elements of `T`, suitably aligned.
pub(crate) unsafe fn out_slice<'a, T>(
    p: *mut T,
    len: usize,
    needed: usize,
    name: &str,
) -> FfiResult<&'a mut [T]> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    if len < needed {
        return Err(FfiError::too_small(name, needed, len));
    }
    Ok(std::slice::from_raw_parts_mut(p, needed))
}

/// A shared reference from a handle.
///
/// # Safety
/// `p` is NULL or a live handle of type `T` created by this library.
pub(crate) unsafe fn handle<'a, T>(p: *const T, name: &str) -> FfiResult<&'a T> {
    p.as_ref().ok_or_else(|| FfiError::null(name))
}

/// An exclusive reference from a handle.
///
/// # Safety
/// `p` is NULL or a live handle of type `T` created by this library, not in
/// use by another thread.
pub(crate) unsafe fn handle_mut<'a, T>(p: *mut T, name: &str) -> FfiResult<&'a mut T> {
    p.as_mut().ok_or_else(|| FfiError::null(name))
}

/// Writes `v` through an optional out-pointer.
///
/// # Safety
/// `p` is NULL or valid for writing one `T`.
pub(crate) unsafe fn write_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        p.write(v);
    }
}

/// Writes `v` through a required out-pointer.
///
/// # Safety
/// `p` is NULL or valid for writing one `T`.
pub(crate) unsafe fn write_out<T>(p: *mut T, v: T, name: &str) -> FfiResult<()> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    p.write(v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panics_are_caught_and_reported() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let st = run(|| panic!("boom {}", 42));
        std::panic::set_hook(hook);
        assert_eq!(st, medsam2_status::MEDSAM2_ERR_PANIC);
        assert_eq!(last(), "internal error (panic): boom 42");
    }

    #[test]
    fn last_error_is_set_on_failure_and_cleared_on_success() {
        assert_eq!(
            run(|| Err(FfiError::invalid("bad \0 value"))),
            medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last(), "bad   value");
        assert_eq!(run(|| Ok(())), medsam2_status::MEDSAM2_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn core_errors_map_to_statuses() {
        use medsam2_core::Error as E;
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        let cases = [
            (E::Config("c".into()), medsam2_status::MEDSAM2_ERR_CONFIG),
            (
                E::Checkpoint("c".into()),
                medsam2_status::MEDSAM2_ERR_CHECKPOINT,
            ),
            (
                E::ShapeMismatch {
                    key: "k".into(),
                    expected: vec![1],
                    found: vec![2],
                },
                medsam2_status::MEDSAM2_ERR_CHECKPOINT,
            ),
            (
                E::InvalidInput("i".into()),
                medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
            ),
            (E::Cancelled, medsam2_status::MEDSAM2_ERR_CANCELLED),
            (
                E::Volume("v".into()),
                medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
            ),
            (
                E::Medical(MedicalError::InvalidArgument("m".into())),
                medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
            ),
            (
                E::Io {
                    path: "p".into(),
                    source: io(),
                },
                medsam2_status::MEDSAM2_ERR_IO,
            ),
        ];
        for (e, st) in cases {
            assert_eq!(FfiError::from(e).status, st);
        }
        assert_eq!(
            FfiError::from(MedicalError::Io(io())).status,
            medsam2_status::MEDSAM2_ERR_IO
        );
        assert_eq!(
            FfiError::from(MedicalError::InvalidArgument("a".into())).status,
            medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT
        );
    }

    #[test]
    fn pointer_helpers_check_null_and_sizes() {
        unsafe {
            assert!(in_slice::<f32>(std::ptr::null(), 0, "p")
                .unwrap()
                .is_empty());
            assert_eq!(
                in_slice::<f32>(std::ptr::null(), 1, "p")
                    .unwrap_err()
                    .status,
                medsam2_status::MEDSAM2_ERR_NULL_POINTER
            );
            let mut buf = [0u8; 4];
            let e = out_slice(buf.as_mut_ptr(), 4, 5, "out").unwrap_err();
            assert_eq!(e.status, medsam2_status::MEDSAM2_ERR_BUFFER_TOO_SMALL);
            assert_eq!(e.message, "`out` holds 4 elements, 5 are needed");
            assert_eq!(out_slice(buf.as_mut_ptr(), 4, 3, "out").unwrap().len(), 3);
            assert_eq!(
                c_str(std::ptr::null(), "s").unwrap_err().status,
                medsam2_status::MEDSAM2_ERR_NULL_POINTER
            );
            assert_eq!(opt_c_str(c"".as_ptr(), "s").unwrap(), None);
            assert_eq!(opt_c_str(c"cpu".as_ptr(), "s").unwrap(), Some("cpu"));
        }
    }
}
