//! NIfTI-1 single-file images (`.nii`, `.nii.gz`); NIfTI-2 files are read
//! (and written when needed) through [`super::nifti2`].
//!
//! Reading parses the 348-byte header with the `nifti` crate (both byte orders);
//! the geometry, validation and voxel decoding are done here so that every size
//! is checked against the bytes actually present before anything is allocated
//! (the crate's in-memory reader trusts the header's size, and its qform code
//! panics on some invalid headers).
//!
//! Writing builds the header by hand: the crate's writer needs `ndarray` and its
//! qform computation `nalgebra`, both heavy for one 348-byte record.
//!
//! # Geometry
//! * Transform choice as nibabel: the sform when `sform_code > 0`, else the qform
//!   when `qform_code > 0`, else `diag(pixdim)` with origin 0 ("method 1").
//! * NIfTI world space is RAS; the first two rows of the affine are negated to
//!   get LPS. Spacing = lengths of the affine's columns, direction = the columns
//!   normalised. Units in metres/microns (`xyzt_units`) are converted to mm.
//! * Written files carry both an sform (code 1, exact affine in `f32`) and, when
//!   the direction is orthonormal, a qform (code 1), as ITK writes them.
//!
//! # Intensities
//! When `scl_slope` is finite, non-zero and (`scl_slope`, `scl_inter`) is not
//! (1, 0), voxels are scaled on read to `f32` (`f64` for 32-bit integer and
//! `f64` sources). Written files store the voxels unscaled (slope 1, intercept 0).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use nifti::{Endianness, NiftiHeader, NiftiType};

use super::codec::{self, check_limit, read_exact_vec};
use super::error::{MedicalError, Result};
use super::volume::{det3, DataType, Geometry, Volume};

const FMT: &str = "NIfTI";
/// Size of the NIfTI-1 header.
const HEADER_SIZE: usize = 348;
/// Voxel offset of files this module writes (header + 4-byte extender).
const VOX_OFFSET: usize = 352;

/// Reads a `.nii` or `.nii.gz` file (gzip is detected from the content),
/// streaming the voxels from disk so that they are held once, decoded.
pub fn read_nifti(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    let (file, len) = codec::open_regular(path).map_err(|e| e.with_path(path))?;
    read_from(BufReader::with_capacity(1 << 16, file), len).map_err(|e| e.with_path(path))
}

/// Parses the bytes of a single-file NIfTI-1 (or NIfTI-2, see
/// [`super::nifti2`]) image, gzip-compressed or not.
pub fn parse_nifti(bytes: &[u8]) -> Result<Volume> {
    read_from(bytes, bytes.len() as u64)
}

/// Reads a NIfTI-1 or NIfTI-2 image from `src` holding `len` bytes (gzip or
/// not), streaming the voxels.
fn read_from<R: BufRead>(mut src: R, len: u64) -> Result<Volume> {
    let gz = codec::is_gzip(src.fill_buf()?);
    if gz {
        let mut r = MultiGzDecoder::new(src);
        let (info, header_size) = read_header(&mut r, None)?;
        codec::skip(&mut r, (info.vox_offset - header_size) as u64, FMT)?;
        // The decoded size is unknown until it arrives: reserve a bounded guess.
        let hint = codec::gz_reserve_hint(len.min(usize::MAX as u64) as usize) / info.dtype.size();
        let vol = build(&info, &mut r, hint)?;
        codec::finish(&mut r, FMT)?;
        Ok(vol)
    } else {
        let (info, header_size) = read_header(&mut src, Some(len))?;
        let end = (info.vox_offset + info.nbytes) as u64;
        if len < end {
            return Err(MedicalError::format(
                FMT,
                format!("truncated voxel data: file has {len} bytes, header needs {end}"),
            ));
        }
        codec::skip(&mut src, (info.vox_offset - header_size) as u64, FMT)?;
        build(&info, &mut src, usize::MAX)
    }
}

/// Reads and parses the header of either version (told apart by `sizeof_hdr`,
/// 348 or 540, in either byte order); returns it with its size. `len` is the
/// file size when known (uncompressed files), to report truncation clearly.
fn read_header<R: Read>(r: &mut R, len: Option<u64>) -> Result<(HeaderInfo, usize)> {
    let truncated = |need: usize, fmt: &'static str| {
        MedicalError::format(
            fmt,
            format!("truncated header: {} of {need} bytes", len.unwrap_or(0)),
        )
    };
    if len.is_some_and(|l| l < HEADER_SIZE as u64) {
        return Err(truncated(HEADER_SIZE, FMT));
    }
    let mut head = read_exact_vec(r, HEADER_SIZE, HEADER_SIZE, FMT)?;
    let first = [head[0], head[1], head[2], head[3]];
    let v2 = super::nifti2::HEADER_SIZE as i32;
    if i32::from_le_bytes(first) == v2 || i32::from_be_bytes(first) == v2 {
        let size = super::nifti2::HEADER_SIZE;
        if len.is_some_and(|l| l < size as u64) {
            return Err(truncated(size, "NIfTI-2"));
        }
        let rest = read_exact_vec(r, size - HEADER_SIZE, size - HEADER_SIZE, "NIfTI-2")?;
        head.extend_from_slice(&rest);
        return Ok((super::nifti2::parse_header(&head)?, size));
    }
    Ok((parse_header(&head)?, HEADER_SIZE))
}

/// Writes `volume` as NIfTI-1 (NIfTI-2 when a dimension exceeds 32767);
/// gzip-compressed when the path ends in `.gz`.
pub fn write_nifti(path: impl AsRef<Path>, volume: &Volume) -> Result<()> {
    let path = path.as_ref();
    if volume.dims().iter().any(|&d| d > i16::MAX as usize) {
        return super::nifti2::write_nifti2(path, volume);
    }
    write_single_file(path, &header_bytes(volume)?, volume)
}

/// The bytes of a NIfTI-1 single file (`.nii`) for `volume`, gzip-compressed
/// (`.nii.gz`) if `gzip`.
pub fn encode_nifti(volume: &Volume, gzip: bool) -> Result<Vec<u8>> {
    encode_single_file(&header_bytes(volume)?, volume, gzip)
}

/// The bytes of a single-file image of either version: `head` (the header),
/// a 4-byte extender (no extensions), then the voxels little-endian;
/// gzip-compressed if `gzip`.
pub(super) fn encode_single_file(head: &[u8], volume: &Volume, gzip: bool) -> Result<Vec<u8>> {
    let mut out =
        Vec::with_capacity(head.len() + 4 + volume.num_voxels() * volume.data_type().size());
    out.extend_from_slice(head);
    out.extend_from_slice(&[0u8; 4]); // extender: no extensions
    codec::write_voxels_le(&mut out, volume.data())?;
    if gzip {
        codec::gzip(&out)
    } else {
        Ok(out)
    }
}

/// Writes a single-file image of either version to `path` atomically,
/// streaming the voxels: `head`, the extender, the voxels; gzip-compressed
/// when the path ends in `.gz`.
pub(super) fn write_single_file(path: &Path, head: &[u8], volume: &Volume) -> Result<()> {
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    let mut head = head.to_vec();
    head.extend_from_slice(&[0u8; 4]); // extender: no extensions
    let gz = if gz { codec::Gz::All } else { codec::Gz::None };
    codec::write_volume_file(path, &head, volume.data(), gz)
}

/// What the header says, validated (NIfTI-1 here, NIfTI-2 in [`super::nifti2`]).
pub(super) struct HeaderInfo {
    pub(super) dims: [usize; 3],
    pub(super) dtype: DataType,
    pub(super) big_endian: bool,
    pub(super) vox_offset: usize,
    pub(super) nbytes: usize,
    pub(super) geometry: Geometry,
    pub(super) scaling: Option<(f64, f64)>,
}

fn parse_header(head: &[u8]) -> Result<HeaderInfo> {
    // `sizeof_hdr` gives the byte order; check it and dim[0] here, since the
    // crate guesses the byte order from dim[0] and would report a bad dim[0]
    // as a bad sizeof_hdr.
    let le = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let be = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let big = match (le, be) {
        (348, _) => false,
        (_, 348) => true,
        _ => {
            return Err(MedicalError::format(
                FMT,
                format!("sizeof_hdr is {le}, not 348"),
            ))
        }
    };
    let dim0 = if big {
        i16::from_be_bytes([head[40], head[41]])
    } else {
        i16::from_le_bytes([head[40], head[41]])
    };
    if !(1..=7).contains(&dim0) {
        return Err(MedicalError::format(
            FMT,
            format!("dim[0] = {dim0} (must be 1..7)"),
        ));
    }
    let h = NiftiHeader::from_reader(head)
        .map_err(|e| MedicalError::format(FMT, format!("header: {e}")))?;
    if h.sizeof_hdr != HEADER_SIZE as i32 {
        return Err(MedicalError::format(
            FMT,
            format!("sizeof_hdr is {}, not 348", h.sizeof_hdr),
        ));
    }
    if &h.magic == nifti::header::MAGIC_CODE_NI1 {
        return Err(MedicalError::unsupported(
            FMT,
            "header/image pairs (.hdr/.img); use a single .nii file",
        ));
    }
    let ndim = h.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(MedicalError::format(
            FMT,
            format!("dim[0] = {} (must be 1..7)", h.dim[0]),
        ));
    }
    let mut dims = [1usize; 3];
    for a in 1..=ndim {
        let d = h.dim[a];
        if d == 0 || d > i16::MAX as u16 {
            return Err(MedicalError::format(
                FMT,
                format!("dim[{a}] = {} (must be 1..32767)", d as i16),
            ));
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
    let ntype = h
        .data_type()
        .map_err(|_| MedicalError::format(FMT, format!("unknown datatype code {}", h.datatype)))?;
    let dtype = match ntype {
        NiftiType::Uint8 => DataType::U8,
        NiftiType::Int8 => DataType::I8,
        NiftiType::Uint16 => DataType::U16,
        NiftiType::Int16 => DataType::I16,
        NiftiType::Uint32 => DataType::U32,
        NiftiType::Int32 => DataType::I32,
        NiftiType::Float32 => DataType::F32,
        NiftiType::Float64 => DataType::F64,
        other => {
            return Err(MedicalError::unsupported(
                FMT,
                format!("datatype {other:?}"),
            ))
        }
    };
    if h.bitpix as usize != dtype.size() * 8 {
        return Err(MedicalError::format(
            FMT,
            format!("bitpix {} does not match datatype {:?}", h.bitpix, ntype),
        ));
    }
    let vo = h.vox_offset;
    if !vo.is_finite() || vo < 0.0 || vo.fract() != 0.0 || vo > 1e9 {
        return Err(MedicalError::format(
            FMT,
            format!("vox_offset {vo} (must be a non-negative integer)"),
        ));
    }
    // As nifti1_io: a single-file offset below 352 means "right after the header".
    let vox_offset = (vo as usize).max(VOX_OFFSET);
    let nvox = dims.iter().product::<usize>(); // <= 32767^3, no overflow
    let nbytes = nvox * dtype.size();
    check_limit((vox_offset + nbytes) as u64)?;

    let geometry = header_geometry(&h)?;
    let (slope, inter) = (h.scl_slope as f64, h.scl_inter as f64);
    let inter = if inter.is_finite() { inter } else { 0.0 };
    let scaling = (slope.is_finite() && slope != 0.0 && !(slope == 1.0 && inter == 0.0))
        .then_some((slope, inter));
    Ok(HeaderInfo {
        dims,
        dtype,
        big_endian: h.endianness == Endianness::Big,
        vox_offset,
        nbytes,
        geometry,
        scaling,
    })
}

/// Millimetres per unit of `xyzt_units` (unknown units are taken as mm).
fn unit_to_mm(xyzt_units: u8) -> f64 {
    match xyzt_units & 0x07 {
        1 => 1000.0, // metre
        3 => 0.001,  // micron
        _ => 1.0,
    }
}

/// The spatial-transform fields of a NIfTI-1 or NIfTI-2 header, in `f64`.
pub(super) struct Transform {
    pub(super) sform_code: i32,
    pub(super) qform_code: i32,
    pub(super) srow: [[f64; 4]; 3],
    pub(super) quatern: [f64; 3],
    pub(super) qoffset: [f64; 3],
    pub(super) pixdim: [f64; 8],
    pub(super) xyzt_units: u8,
}

/// The index -> LPS geometry stored in a header.
fn header_geometry(h: &NiftiHeader) -> Result<Geometry> {
    transform_geometry(&Transform {
        sform_code: h.sform_code as i32,
        qform_code: h.qform_code as i32,
        srow: [h.srow_x, h.srow_y, h.srow_z].map(|r| r.map(|v| v as f64)),
        quatern: [h.quatern_b, h.quatern_c, h.quatern_d].map(|v| v as f64),
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z].map(|v| v as f64),
        pixdim: h.pixdim.map(|v| v as f64),
        xyzt_units: h.xyzt_units,
    })
}

/// The index -> LPS geometry of a header's transform fields.
pub(super) fn transform_geometry(h: &Transform) -> Result<Geometry> {
    let unit = unit_to_mm(h.xyzt_units);
    // `m` holds the RAS index->world 3x3 matrix (columns = axes), `t` the translation.
    let (mut m, mut t);
    if h.sform_code > 0 {
        let rows = h.srow;
        m = [[0.0f64; 3]; 3];
        t = [0.0f64; 3];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] = rows[r][c];
            }
            t[r] = rows[r][3];
        }
    } else if h.qform_code > 0 {
        let r = quatern_to_rotation(h.quatern[0], h.quatern[1], h.quatern[2]);
        let pd = |i: usize| {
            let p = h.pixdim[i];
            if p > 0.0 && p.is_finite() {
                p
            } else {
                1.0
            }
        };
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let s = [pd(1), pd(2), pd(3) * qfac];
        m = r;
        for row in m.iter_mut() {
            for c in 0..3 {
                row[c] *= s[c];
            }
        }
        t = h.qoffset;
    } else {
        m = [[0.0; 3]; 3];
        for (c, row) in m.iter_mut().enumerate() {
            let p = h.pixdim[c + 1].abs();
            row[c] = if p > 0.0 && p.is_finite() { p } else { 1.0 };
        }
        t = [0.0; 3];
    }
    // RAS -> LPS and units -> mm.
    for r in 0..3 {
        let sign = if r < 2 { -1.0 } else { 1.0 };
        for c in 0..3 {
            m[r][c] *= sign * unit;
        }
        t[r] *= sign * unit;
    }
    if m.iter().flatten().chain(t.iter()).any(|v| !v.is_finite()) || det3(&m).abs() < 1e-12 {
        return Err(MedicalError::format(
            FMT,
            "degenerate or non-finite spatial transform",
        ));
    }
    let columns = [0, 1, 2].map(|c| [m[0][c], m[1][c], m[2][c]]);
    Geometry::from_step_vectors(columns, t)
        .map_err(|e| MedicalError::format(FMT, format!("spatial transform: {e}")))
}

/// Rotation matrix of the unit quaternion `(a, b, c, d)` with `a >= 0` implied
/// (`nifti_quatern_to_mat44` of nifti_io.c).
fn quatern_to_rotation(b: f64, c: f64, d: f64) -> [[f64; 3]; 3] {
    let (mut a, mut b, mut c, mut d) = (1.0 - (b * b + c * c + d * d), b, c, d);
    if !(a.is_finite() && b.is_finite() && c.is_finite() && d.is_finite()) {
        return [[f64::NAN; 3]; 3];
    }
    if a < 1e-7 {
        // Special case: a 180-degree rotation; renormalise (b, c, d).
        let n = (b * b + c * c + d * d).sqrt();
        a = 0.0;
        if n > 0.0 {
            b /= n;
            c /= n;
            d /= n;
        }
    } else {
        a = a.sqrt();
    }
    [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ]
}

/// Quaternion `(b, c, d)` and `qfac` of an orthonormal matrix (`nifti_mat44_to_quatern`).
fn rotation_to_quatern(r: &[[f64; 3]; 3]) -> ([f64; 3], f64) {
    let mut r = *r;
    let qfac = if det3(&r) < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (a, mut b, mut c, mut d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    ([b, c, d], qfac)
}

/// Streams the voxels from `r`, applying the scaling as they arrive (one
/// buffer, in its final type); `reserve` bounds the up-front reservation.
pub(super) fn build<R: Read>(info: &HeaderInfo, r: &mut R, reserve: usize) -> Result<Volume> {
    let nvox = info.nbytes / info.dtype.size();
    if info.scaling.is_some() {
        // Scaled voxels widen to f32 (or f64): check the decoded size too.
        let wide = match info.dtype {
            DataType::I32 | DataType::U32 | DataType::F64 => 8,
            _ => 4,
        };
        check_limit(nvox as u64 * wide)?;
    }
    let data = codec::stream_voxels(
        r,
        info.dtype,
        nvox,
        info.big_endian,
        info.scaling,
        reserve,
        FMT,
    )?;
    Volume::new(info.dims, info.geometry, data)
        .map_err(|e| MedicalError::format(FMT, e.to_string()))
}

/// NIfTI datatype code of a [`DataType`].
pub(super) fn datatype_code(dt: DataType) -> i16 {
    match dt {
        DataType::U8 => 2,
        DataType::I16 => 4,
        DataType::I32 => 8,
        DataType::F32 => 16,
        DataType::F64 => 64,
        DataType::I8 => 256,
        DataType::U16 => 512,
        DataType::U32 => 768,
    }
}

/// The RAS transform fields a writer stores for geometry `g`.
pub(super) struct RasFields {
    /// Index -> RAS matrix (`direction * spacing` with the first two rows negated).
    pub(super) ras: [[f64; 3]; 3],
    /// The origin in RAS.
    pub(super) origin: [f64; 3],
    /// Quaternion `(b, c, d)` of the rotation (zeros when not orthonormal).
    pub(super) quat: [f64; 3],
    /// `qfac` (`pixdim[0]`): -1 for a left-handed direction.
    pub(super) qfac: f64,
    /// Whether the direction is orthonormal (a qform can be written).
    pub(super) orthonormal: bool,
}

/// LPS -> RAS: negate the first two rows.
pub(super) fn ras_fields(g: &Geometry) -> RasFields {
    let mut ras = g.scaled_direction();
    let mut rot = g.direction;
    let mut origin = g.origin;
    for r in 0..2 {
        for c in 0..3 {
            ras[r][c] = -ras[r][c];
            rot[r][c] = -rot[r][c];
        }
        origin[r] = -origin[r];
    }
    let orthonormal = (0..3).all(|i| {
        (0..3).all(|j| {
            let dot: f64 = (0..3).map(|r| rot[r][i] * rot[r][j]).sum();
            (dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4
        })
    });
    let (quat, qfac) = if orthonormal {
        rotation_to_quatern(&rot)
    } else {
        ([0.0; 3], 1.0)
    };
    RasFields {
        ras,
        origin,
        quat,
        qfac,
        orthonormal,
    }
}

/// The 348 little-endian header bytes for `volume`.
fn header_bytes(volume: &Volume) -> Result<[u8; HEADER_SIZE]> {
    let dims = volume.dims();
    if dims.iter().any(|&d| d > i16::MAX as usize) {
        return Err(MedicalError::InvalidArgument(format!(
            "NIfTI-1 dimensions are limited to 32767, got {dims:?}"
        )));
    }
    let g = volume.geometry();
    let dt = volume.data_type();
    let mut h = [0u8; HEADER_SIZE];
    let put =
        |h: &mut [u8; HEADER_SIZE], off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
    put(&mut h, 0, &(HEADER_SIZE as i32).to_le_bytes());
    h[38] = b'r'; // "regular", as ITK writes
    let dim: [i16; 8] = [
        3,
        dims[0] as i16,
        dims[1] as i16,
        dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put(&mut h, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut h, 70, &datatype_code(dt).to_le_bytes());
    put(&mut h, 72, &((dt.size() * 8) as i16).to_le_bytes());

    let RasFields {
        ras,
        origin,
        quat,
        qfac,
        orthonormal,
    } = ras_fields(g);
    let pixdim: [f32; 8] = [
        qfac as f32,
        g.spacing[0] as f32,
        g.spacing[1] as f32,
        g.spacing[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(&mut h, 76 + 4 * i, &p.to_le_bytes());
    }
    put(&mut h, 108, &(VOX_OFFSET as f32).to_le_bytes());
    put(&mut h, 112, &1.0f32.to_le_bytes()); // scl_slope
    put(&mut h, 116, &0.0f32.to_le_bytes()); // scl_inter
    h[123] = 2 | 8; // xyzt_units: mm, s
    put(&mut h, 148, b"medsam2");
    put(
        &mut h,
        252,
        &(if orthonormal { 1i16 } else { 0 }).to_le_bytes(),
    ); // qform_code
    put(&mut h, 254, &1i16.to_le_bytes()); // sform_code: scanner
    for (i, q) in quat.iter().chain(origin.iter()).enumerate() {
        put(&mut h, 256 + 4 * i, &(*q as f32).to_le_bytes());
    }
    for r in 0..3 {
        for c in 0..4 {
            let v = if c < 3 { ras[r][c] } else { origin[r] };
            put(&mut h, 280 + 16 * r + 4 * c, &(v as f32).to_le_bytes());
        }
    }
    put(&mut h, 344, b"n+1\0");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_round_trip() {
        let c = 0.3f64.cos();
        let s = 0.3f64.sin();
        for m in [
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
            [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]],
        ] {
            let (q, qfac) = rotation_to_quatern(&m);
            let mut r = quatern_to_rotation(q[0], q[1], q[2]);
            for row in r.iter_mut() {
                row[2] *= qfac;
            }
            for i in 0..3 {
                for j in 0..3 {
                    assert!((r[i][j] - m[i][j]).abs() < 1e-9, "{m:?} -> {r:?}");
                }
            }
        }
    }
}
