//! Output files that never destroy data: an output is refused when it is the
//! same file as an input (by identity, whatever the names, links or aliases),
//! the destination's writability is checked before any work starts, and every
//! file is written to a temporary file in the destination folder and then
//! renamed into place, so a failed write (full disk, size limit, crash) leaves
//! the previous file intact.
//!
//! Errors are plain [`std::io::Error`]s without the output path (the caller
//! names it once).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What kind of non-regular file `ft` is, for error messages.
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else {
        "something else"
    }
}

/// Opens an input file for reading, refusing anything but a regular file
/// (symbolic links are followed): a FIFO would block forever, a device such as
/// `/dev/zero` never ends, a directory is not data. Returns the file and its
/// length. The error names the kind of file, not the path.
pub fn open_input(path: &Path) -> io::Result<(File, u64)> {
    let not_regular = |m: &std::fs::Metadata| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            NotRegularFile(file_kind(&m.file_type())),
        )
    };
    // `metadata` before `open`: opening a FIFO for reading blocks.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let f = File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok((f, meta.len()))
}

/// The error inside the [`io::Error`] of [`open_input`] for a path that is not
/// a regular file; holds what it is (`"a FIFO"`, `"a directory"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRegularFile(pub &'static str);

impl std::fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, not a regular file", self.0)
    }
}

impl std::error::Error for NotRegularFile {}

/// Reads a whole regular input file of at most `max_bytes` bytes (see
/// [`open_input`]); a larger file is an error naming the limit.
pub fn read_input(path: &Path, max_bytes: u64, limit_name: &str) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let (f, len) = open_input(path)?;
    if len > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes exceed the limit of {max_bytes} ({limit_name})"),
        ));
    }
    let mut v = Vec::with_capacity(len as usize);
    f.take(max_bytes).read_to_end(&mut v)?;
    Ok(v)
}

/// Whether `a` and `b` name the same existing file (same device and inode on
/// Unix; the same canonical path elsewhere). Either missing: `false`.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// The path a write to `path` replaces: the target of a symbolic link (so the
/// link survives), else `path` itself.
fn resolve(path: &Path) -> PathBuf {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => path.canonicalize().unwrap_or_else(|_| path.into()),
        _ => path.into(),
    }
}

/// The folder a file `path` lives in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new, uniquely named temporary file next to `path`.
fn temp_next_to(path: &Path) -> io::Result<(File, PathBuf)> {
    let dir = folder_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
        .to_string_lossy();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Checks, before any work, that `output` can be written and is none of
/// `inputs`: it must not be the same file as an input (however named), must
/// not be a directory or other non-regular file, and its folder must accept a
/// new file (probed by creating and removing a temporary file there).
pub fn check_output(output: &Path, inputs: &[&Path]) -> io::Result<()> {
    if output.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty output path",
        ));
    }
    for input in inputs {
        if same_file(output, input) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "is the same file as the input {}; refusing to overwrite it",
                    input.display()
                ),
            ));
        }
    }
    let target = resolve(output);
    if let Ok(m) = std::fs::metadata(&target) {
        if !m.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                if m.is_dir() {
                    "is a directory"
                } else {
                    "exists and is not a regular file"
                },
            ));
        }
        if m.permissions().readonly() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "exists and is read-only",
            ));
        }
    }
    let (f, tmp) = temp_next_to(&target)?;
    drop(f);
    std::fs::remove_file(&tmp)
}

/// Writes `path` through `fill`: the bytes go to a temporary file in the same
/// folder, which is flushed to disk and renamed over `path` only when `fill`
/// and the flush succeed; on any error the temporary file is removed and an
/// existing `path` is left as it was. A symbolic link at `path` is kept and
/// its target replaced.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let target = resolve(path);
    if std::fs::metadata(&target).is_ok_and(|m| !m.is_file()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "exists and is not a regular file",
        ));
    }
    let (f, tmp) = temp_next_to(&target)?;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("medsam2-output-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_the_input_under_any_name() {
        let d = scratch("alias");
        let input = d.join("ct.nii");
        std::fs::write(&input, b"precious").unwrap();
        let link = d.join("link.nii");
        std::fs::hard_link(&input, &link).unwrap();
        let dotted = d.join(".").join("ct.nii");
        for out in [&input, &link, &dotted] {
            let e = check_output(out, &[Path::new("other"), &input]).unwrap_err();
            assert!(e.to_string().contains("same file as the input"), "{e}");
        }
        assert!(check_output(&d.join("new.nii"), &[&input]).is_ok());
        assert!(check_output(&d, &[])
            .unwrap_err()
            .to_string()
            .contains("directory"));
        assert_eq!(std::fs::read(&input).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let d = scratch("atomic");
        let p = d.join("out.csv");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
