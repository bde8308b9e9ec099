//! NIfTI-2 single-file images (`.nii`, `.nii.gz` with a 540-byte header).
//!
//! Hand-written: the `nifti` crate reads NIfTI-1 only. NIfTI-2 is NIfTI-1 with
//! 64-bit sizes and `f64` transforms, so the geometry, scaling and voxel
//! decoding are shared with [`super::nifti`]; only the header layout is here.
//! [`super::nifti::read_nifti`] reads both versions (detected from
//! `sizeof_hdr`); [`super::nifti::write_nifti`] writes NIfTI-2 when a dimension
//! exceeds NIfTI-1's 32767, and [`write_nifti2`] always does.

use std::path::Path;

use super::codec::{self, check_limit};
use super::error::{MedicalError, Result};
use super::nifti::{self, HeaderInfo, Transform};
use super::volume::{DataType, Volume};

const FMT: &str = "NIfTI-2";
/// Size of the NIfTI-2 header.
pub(super) const HEADER_SIZE: usize = 540;
/// Voxel offset of files written here (header + 4-byte extender).
const VOX_OFFSET: usize = 544;
const MAGIC: &[u8; 8] = b"n+2\0\r\n\x1a\n";

/// Whether the (possibly gzip-compressed) bytes start with a NIfTI-2 header.
pub(super) fn is_nifti2(bytes: &[u8]) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    let got = if codec::is_gzip(bytes) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_exact(&mut head)
            .is_ok()
    } else if bytes.len() >= 4 {
        head.copy_from_slice(&bytes[..4]);
        true
    } else {
        false
    };
    got && (i32::from_le_bytes(head) == HEADER_SIZE as i32
        || i32::from_be_bytes(head) == HEADER_SIZE as i32)
}

/// Parses the bytes of a single-file NIfTI-2 image, gzip-compressed or not
/// (the voxels are decoded by the reader shared with NIfTI-1,
/// [`super::nifti::parse_nifti`]).
pub fn parse_nifti2(bytes: &[u8]) -> Result<Volume> {
    if !is_nifti2(bytes) {
        return Err(MedicalError::format(FMT, "sizeof_hdr is not 540"));
    }
    nifti::parse_nifti(bytes)
}

/// Little- or big-endian field reader over the 540 header bytes.
struct Fields<'a> {
    h: &'a [u8],
    be: bool,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.h[off..off + N]);
        if self.be {
            a.reverse();
        }
        a
    }
    fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.bytes(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.bytes(off))
    }
    fn i64(&self, off: usize) -> i64 {
        i64::from_le_bytes(self.bytes(off))
    }
    fn f64(&self, off: usize) -> f64 {
        f64::from_le_bytes(self.bytes(off))
    }
}

pub(super) fn parse_header(h: &[u8]) -> Result<HeaderInfo> {
    let bad = |r: String| MedicalError::format(FMT, r);
    let be = i32::from_le_bytes([h[0], h[1], h[2], h[3]]) != HEADER_SIZE as i32;
    let f = Fields { h, be };
    if f.i32(0) != HEADER_SIZE as i32 {
        return Err(bad("sizeof_hdr is not 540".into()));
    }
    if &h[4..12] != MAGIC {
        if &h[4..7] == b"ni2" {
            return Err(MedicalError::unsupported(
                FMT,
                "header/image pairs (.hdr/.img); use a single .nii file",
            ));
        }
        return Err(bad(format!("magic {:?}", &h[4..12])));
    }
    let ndim = f.i64(16);
    if !(1..=7).contains(&ndim) {
        return Err(bad(format!("dim[0] = {ndim} (must be 1..7)")));
    }
    let mut dims = [1usize; 3];
    for a in 1..=ndim as usize {
        let d = f.i64(16 + 8 * a);
        if !(1..=(1 << 40)).contains(&d) {
            return Err(bad(format!("dim[{a}] = {d}")));
        }
        if a <= 3 {
            dims[a - 1] = d as usize;
        } else if d != 1 {
            return Err(MedicalError::unsupported(
                FMT,
                format!("{ndim}-D image with dim[{a}] = {d} (only 3-D volumes)"),
            ));
        }
    }
    let code = f.i16(12);
    let dtype = match code {
        2 => DataType::U8,
        4 => DataType::I16,
        8 => DataType::I32,
        16 => DataType::F32,
        64 => DataType::F64,
        256 => DataType::I8,
        512 => DataType::U16,
        768 => DataType::U32,
        other => {
            return Err(MedicalError::unsupported(
                FMT,
                format!("datatype code {other}"),
            ))
        }
    };
    if f.i16(14) as usize != dtype.size() * 8 {
        return Err(bad(format!(
            "bitpix {} does not match datatype {code}",
            f.i16(14)
        )));
    }
    let nbytes = dims
        .iter()
        .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| bad("dimensions overflow".into()))?;
    check_limit(nbytes)?;
    let vo = f.i64(168);
    if !(0..=1 << 32).contains(&vo) {
        return Err(bad(format!("vox_offset {vo}")));
    }
    let vox_offset = (vo as usize).max(VOX_OFFSET);
    check_limit(vox_offset as u64 + nbytes)?;
    let pixdim: [f64; 8] = std::array::from_fn(|i| f.f64(104 + 8 * i));
    let t = Transform {
        qform_code: f.i32(344),
        sform_code: f.i32(348),
        quatern: [f.f64(352), f.f64(360), f.f64(368)],
        qoffset: [f.f64(376), f.f64(384), f.f64(392)],
        srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f64(400 + 32 * r + 8 * c))),
        pixdim,
        xyzt_units: f.i32(500) as u8,
    };
    let geometry = nifti::transform_geometry(&t)
        .map_err(|e| bad(e.to_string().replace("invalid NIfTI data: ", "")))?;
    let (slope, inter) = (f.f64(176), f.f64(184));
    let inter = if inter.is_finite() { inter } else { 0.0 };
    let scaling = (slope.is_finite() && slope != 0.0 && !(slope == 1.0 && inter == 0.0))
        .then_some((slope, inter));
    Ok(HeaderInfo {
        dims,
        dtype,
        big_endian: be,
        vox_offset,
        nbytes: nbytes as usize,
        geometry,
        scaling,
    })
}

/// Writes `volume` as NIfTI-2; gzip-compressed when the path ends in `.gz`
/// (atomically, streaming the voxels, as [`super::nifti::write_nifti`]).
pub fn write_nifti2(path: impl AsRef<Path>, volume: &Volume) -> Result<()> {
    nifti::write_single_file(path.as_ref(), &header_bytes(volume), volume)
}

/// The 540 header bytes of a NIfTI-2 file for `volume`: sform and (for an
/// orthonormal direction) qform in full `f64` precision.
fn header_bytes(volume: &Volume) -> Vec<u8> {
    let dims = volume.dims();
    let dt = volume.data_type();
    let r = nifti::ras_fields(volume.geometry());
    let g = volume.geometry();
    let mut h = vec![0u8; HEADER_SIZE];
    let mut put = |off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(0, &(HEADER_SIZE as i32).to_le_bytes());
    put(4, MAGIC);
    put(12, &nifti::datatype_code(dt).to_le_bytes());
    put(14, &((dt.size() * 8) as i16).to_le_bytes());
    let dim = [
        3,
        dims[0] as i64,
        dims[1] as i64,
        dims[2] as i64,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put(16 + 8 * i, &d.to_le_bytes());
    }
    let pixdim = [
        r.qfac,
        g.spacing[0],
        g.spacing[1],
        g.spacing[2],
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(104 + 8 * i, &p.to_le_bytes());
    }
    put(168, &(VOX_OFFSET as i64).to_le_bytes());
    put(176, &1.0f64.to_le_bytes()); // scl_slope
    put(240, b"medsam2");
    put(344, &(r.orthonormal as i32).to_le_bytes()); // qform_code
    put(348, &1i32.to_le_bytes()); // sform_code: scanner
    for (i, q) in r.quat.iter().chain(r.origin.iter()).enumerate() {
        put(352 + 8 * i, &q.to_le_bytes());
    }
    for row in 0..3 {
        for c in 0..4 {
            let v = if c < 3 { r.ras[row][c] } else { r.origin[row] };
            put(400 + 32 * row + 8 * c, &v.to_le_bytes());
        }
    }
    put(500, &10i32.to_le_bytes()); // xyzt_units: mm, s
    h
}

/// The bytes of a NIfTI-2 single file for `volume` (gzip-compressed if `gzip`):
/// sform and (for an orthonormal direction) qform in full `f64` precision.
pub fn encode_nifti2(volume: &Volume, gzip: bool) -> Result<Vec<u8>> {
    nifti::encode_single_file(&header_bytes(volume), volume, gzip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medical::volume::{Geometry, VoxelData};

    #[test]
    fn round_trip_both_byte_orders_and_gzip() {
        let c = 0.4f64.cos();
        let s = 0.4f64.sin();
        let g = Geometry {
            spacing: [0.6, 0.8, 2.5],
            origin: [12.5, -40.25, 7.123456789012],
            direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]],
        };
        let v = Volume::new(
            [4, 3, 2],
            g,
            VoxelData::I16((0..24).map(|i| i * 100 - 999).collect()),
        )
        .unwrap();
        for gz in [false, true] {
            let b = encode_nifti2(&v, gz).unwrap();
            assert!(is_nifti2(&b));
            let back = nifti::parse_nifti(&b).unwrap();
            assert_eq!(back.data(), v.data());
            // f64 transforms: far tighter than NIfTI-1's f32.
            assert!(
                back.geometry().approx_eq(v.geometry(), 1e-12),
                "{:?}",
                back.geometry()
            );
        }
        // Big-endian: swap every header field and voxel.
        let le = encode_nifti2(&v, false).unwrap();
        let mut be = le.clone();
        let swap = |b: &mut [u8], off: usize, n: usize| b[off..off + n].reverse();
        swap(&mut be, 0, 4);
        for off in [12, 14] {
            swap(&mut be, off, 2);
        }
        for off in (16..168)
            .step_by(8)
            .chain([168, 176, 184])
            .chain((352..496).step_by(8))
        {
            swap(&mut be, off, 8);
        }
        for off in [344, 348, 500] {
            swap(&mut be, off, 4);
        }
        for i in 0..24 {
            swap(&mut be, VOX_OFFSET + 2 * i, 2);
        }
        let back = nifti::parse_nifti(&be).unwrap();
        assert_eq!(back.data(), v.data());
        assert!(back.geometry().approx_eq(v.geometry(), 1e-12));
        // Truncations are errors.
        for n in [0, 4, 300, 539, 544, 560] {
            assert!(nifti::parse_nifti(&le[..n]).is_err(), "truncated to {n}");
        }
    }
}
