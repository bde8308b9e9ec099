//! Bounded reading and gzip helpers shared by the file formats.

use std::io::{self, Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::error::{MedicalError, Result};
use super::volume::MAX_VOXEL_BYTES;

/// Whether `bytes` start with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// A decoder over an in-memory gzip stream (concatenated members allowed).
pub(crate) fn gz_reader(bytes: &[u8]) -> MultiGzDecoder<&[u8]> {
    MultiGzDecoder::new(bytes)
}

/// Reads exactly `n` bytes from `r` without trusting `n` for the allocation:
/// at most `reserve` bytes are reserved up front, the rest grows with the data
/// that actually arrives. A short read is a [`MedicalError::Format`] error.
pub(crate) fn read_exact_vec<R: Read>(
    r: &mut R,
    n: usize,
    reserve: usize,
    format: &'static str,
) -> Result<Vec<u8>> {
    check_limit(n as u64)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n.min(reserve))
        .map_err(|_| MedicalError::TooLarge {
            bytes: n as u64,
            limit: MAX_VOXEL_BYTES,
        })?;
    r.take(n as u64)
        .read_to_end(&mut v)
        .map_err(|e| stream_error(format, e))?;
    if v.len() < n {
        return Err(MedicalError::format(
            format,
            format!("truncated: expected {n} bytes, found {}", v.len()),
        ));
    }
    Ok(v)
}

/// Reads `r` to its end, discarding the bytes (bounded by [`MAX_VOXEL_BYTES`]);
/// for a gzip stream this verifies the CRC and length trailer.
pub(crate) fn drain<R: Read>(r: &mut R, format: &'static str) -> Result<()> {
    io::copy(&mut r.take(MAX_VOXEL_BYTES), &mut io::sink()).map_err(|e| stream_error(format, e))?;
    Ok(())
}

/// Fails with [`MedicalError::TooLarge`] when `bytes` exceeds [`MAX_VOXEL_BYTES`].
pub(crate) fn check_limit(bytes: u64) -> Result<()> {
    if bytes > MAX_VOXEL_BYTES {
        return Err(MedicalError::TooLarge {
            bytes,
            limit: MAX_VOXEL_BYTES,
        });
    }
    Ok(())
}

/// An error of a decoding stream (gzip, zip), reported as a format error.
pub(crate) fn stream_error(format: &'static str, e: io::Error) -> MedicalError {
    MedicalError::format(format, format!("corrupt or truncated compressed data: {e}"))
}

/// Up-front reservation for `compressed` bytes of gzip input: a guess that does
/// not let a tiny file request a huge buffer.
pub(crate) fn gz_reserve_hint(compressed: usize) -> usize {
    compressed.saturating_mul(8).max(1 << 20)
}

/// Gzip-compresses `data` (level 6).
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::new(6));
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Reads a whole file, attaching its path to errors.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| MedicalError::Io(e).with_path(path))
}

/// Writes a whole file, attaching its path to errors.
pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| MedicalError::Io(e).with_path(path))
}
