//! Bounded reading and gzip helpers shared by the file formats.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::error::{MedicalError, Result};
use super::volume::{DataType, VoxelData, MAX_VOXEL_BYTES};

/// Whether `bytes` start with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
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

/// Writes the voxels of `data` little-endian to `w`, a chunk at a time (no
/// second copy of the volume).
pub(crate) fn write_voxels_le<W: Write>(w: &mut W, data: &VoxelData) -> io::Result<()> {
    let mut buf = Vec::with_capacity(CHUNK);
    super::volume::with_voxels!(data, v => {
        for part in v.chunks(CHUNK / 8) {
            buf.clear();
            for x in part {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
    });
    Ok(())
}

/// How [`write_volume_file`] compresses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gz {
    /// Nothing compressed.
    None,
    /// The voxels only (NRRD `encoding: gzip`).
    Payload,
    /// The whole file (`.nii.gz`).
    All,
}

/// Writes `path` atomically with `head` followed by the voxels of `data`,
/// gzip-compressed (level 6) as `gz` says.
pub(crate) fn write_volume_file(path: &Path, head: &[u8], data: &VoxelData, gz: Gz) -> Result<()> {
    crate::output::write_atomic_with(path, |w| {
        if gz != Gz::None {
            if gz == Gz::Payload {
                w.write_all(head)?;
            }
            let mut enc = GzEncoder::new(w, Compression::new(6));
            if gz == Gz::All {
                enc.write_all(head)?;
            }
            write_voxels_le(&mut enc, data)?;
            enc.finish()?;
        } else {
            w.write_all(head)?;
            write_voxels_le(w, data)?;
        }
        Ok(())
    })
    .map_err(|e| MedicalError::Io(e).with_path(path))
}

/// Gzip-compresses `data` (level 6).
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::new(6));
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Reads a whole regular file (at most [`MAX_VOXEL_BYTES`]), attaching its
/// path to errors.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let read = || -> Result<Vec<u8>> {
        let (f, len) = open_regular(path)?;
        check_limit(len)?;
        let mut v = Vec::new();
        v.try_reserve_exact(len as usize)
            .map_err(|_| MedicalError::TooLarge {
                bytes: len,
                limit: MAX_VOXEL_BYTES,
            })?;
        f.take(len).read_to_end(&mut v)?;
        Ok(v)
    };
    read().map_err(|e| e.with_path(path))
}

/// Writes a whole file atomically (temporary file, then rename; see
/// [`crate::output::write_atomic`]), attaching its path to errors.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::write_atomic(path, bytes).map_err(|e| MedicalError::Io(e).with_path(path))
}

/// Opens `path` for reading, refusing anything but a regular file (see
/// [`crate::output::open_input`]). Returns the file and its length. Errors
/// carry no path (callers attach it once).
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    crate::output::open_input(path).map_err(|e| {
        match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<crate::output::NotRegularFile>())
        {
            Some(k) => MedicalError::NotRegularFile(k.0),
            None => MedicalError::Io(e),
        }
    })
}

/// One element type as stored in a file.
pub(crate) trait Element: Copy {
    /// Bytes per element.
    const N: usize;
    /// Decodes one element from exactly `N` bytes.
    fn decode(b: &[u8], big_endian: bool) -> Self;
    /// The value as `f64` (for intensity scaling).
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const N: usize = std::mem::size_of::<$t>();
            #[inline]
            fn decode(b: &[u8], big_endian: bool) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }
            }
            #[inline]
            #[allow(clippy::unnecessary_cast)]
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
element!(u8, i8, u16, i16, u32, i32, f32, f64, i64, u64);

/// Bytes decoded per step when streaming voxels (a multiple of every element size).
const CHUNK: usize = 1 << 20;

/// Reads `n` elements of type `T` from `r` and maps each through `map` (a
/// `None` is an error naming `what_failed`) into a new vector, streaming in
/// 1 MiB chunks so that the voxels exist once, in their final type.
///
/// `reserve` elements are reserved up front (pass `n` when the bytes are known
/// to be present, e.g. an uncompressed file of sufficient length); the vector
/// then grows by doubling, capped at `n`, as data actually arrives, so a short
/// or lying stream never makes us allocate what it does not deliver.
pub(crate) fn stream_elements<R: Read, T: Element, U>(
    r: &mut R,
    n: usize,
    big_endian: bool,
    reserve: usize,
    format: &'static str,
    what_failed: &'static str,
    map: impl Fn(T) -> Option<U>,
) -> Result<Vec<U>> {
    let total = (n as u64).saturating_mul(T::N as u64);
    check_limit(total)?;
    let too_large = |_| MedicalError::TooLarge {
        bytes: total,
        limit: MAX_VOXEL_BYTES,
    };
    let mut out: Vec<U> = Vec::new();
    out.try_reserve_exact(reserve.min(n)).map_err(too_large)?;
    let mut buf = vec![0u8; CHUNK.min(n.saturating_mul(T::N)).max(T::N)];
    while out.len() < n {
        let want = ((n - out.len()) * T::N).min(buf.len());
        let got = read_full(r, &mut buf[..want]).map_err(|e| stream_error(format, e))?;
        if got < want {
            let have = out.len() as u64 * T::N as u64 + got as u64;
            return Err(MedicalError::format(
                format,
                format!("truncated: expected {total} bytes, found {have}"),
            ));
        }
        let add = want / T::N;
        if out.capacity() - out.len() < add {
            let grow = out.len().max(add).min(n - out.len());
            out.try_reserve_exact(grow).map_err(too_large)?;
        }
        for c in buf[..want].chunks_exact(T::N) {
            out.push(
                map(T::decode(c, big_endian))
                    .ok_or_else(|| MedicalError::unsupported(format, what_failed))?,
            );
        }
    }
    Ok(out)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Streams `n` voxels of `dtype` from `r` into a [`VoxelData`], applying the
/// intensity `scaling` (slope, intercept) on the fly when given: the result is
/// then `f64` for 32/64-bit sources and `f32` otherwise (NIfTI's rule).
pub(crate) fn stream_voxels<R: Read>(
    r: &mut R,
    dtype: DataType,
    n: usize,
    big_endian: bool,
    scaling: Option<(f64, f64)>,
    reserve: usize,
    format: &'static str,
) -> Result<VoxelData> {
    macro_rules! plain {
        ($variant:ident, $t:ty) => {
            VoxelData::$variant(stream_elements::<_, $t, $t>(
                r, n, big_endian, reserve, format, "", Some,
            )?)
        };
    }
    macro_rules! scaled {
        ($t:ty, $slope:expr, $inter:expr) => {
            match dtype {
                DataType::I32 | DataType::U32 | DataType::F64 => {
                    VoxelData::F64(stream_elements::<_, $t, f64>(
                        r,
                        n,
                        big_endian,
                        reserve,
                        format,
                        "",
                        |x| Some(x.to_f64() * $slope + $inter),
                    )?)
                }
                _ => VoxelData::F32(stream_elements::<_, $t, f32>(
                    r,
                    n,
                    big_endian,
                    reserve,
                    format,
                    "",
                    |x| Some((x.to_f64() * $slope + $inter) as f32),
                )?),
            }
        };
    }
    Ok(match scaling {
        None => match dtype {
            DataType::U8 => plain!(U8, u8),
            DataType::I8 => plain!(I8, i8),
            DataType::U16 => plain!(U16, u16),
            DataType::I16 => plain!(I16, i16),
            DataType::U32 => plain!(U32, u32),
            DataType::I32 => plain!(I32, i32),
            DataType::F32 => plain!(F32, f32),
            DataType::F64 => plain!(F64, f64),
        },
        Some((s, i)) => match dtype {
            DataType::U8 => scaled!(u8, s, i),
            DataType::I8 => scaled!(i8, s, i),
            DataType::U16 => scaled!(u16, s, i),
            DataType::I16 => scaled!(i16, s, i),
            DataType::U32 => scaled!(u32, s, i),
            DataType::I32 => scaled!(i32, s, i),
            DataType::F32 => scaled!(f32, s, i),
            DataType::F64 => scaled!(f64, s, i),
        },
    })
}

/// Skips `n` bytes of `r` (a short stream is a truncation error).
pub(crate) fn skip<R: Read>(r: &mut R, n: u64, format: &'static str) -> Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| stream_error(format, e))?;
    if got < n {
        return Err(MedicalError::format(
            format,
            format!("truncated: {got} of {n} bytes before the voxel data"),
        ));
    }
    Ok(())
}

/// Most bytes of text data (NRRD `ascii` encoding) read.
pub(crate) const MAX_TEXT_BYTES: u64 = MAX_VOXEL_BYTES;

/// Most bytes of a compressed stream accepted after the voxels (padding,
/// extensions); more is an error rather than an unbounded decompression.
pub const MAX_TRAILING_BYTES: u64 = 16 << 20;

/// Reads the rest of a decoding stream (for gzip, this verifies the CRC and
/// length trailer), refusing more than [`MAX_TRAILING_BYTES`].
pub(crate) fn finish<R: Read>(r: &mut R, format: &'static str) -> Result<()> {
    let got = io::copy(&mut r.take(MAX_TRAILING_BYTES + 1), &mut io::sink())
        .map_err(|e| stream_error(format, e))?;
    if got > MAX_TRAILING_BYTES {
        return Err(MedicalError::format(
            format,
            format!("more than {MAX_TRAILING_BYTES} bytes of data after the voxels"),
        ));
    }
    Ok(())
}
