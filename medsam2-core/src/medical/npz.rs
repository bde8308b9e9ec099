//! Reading NumPy `.npy` arrays and `.npz` archives (read-only).
//!
//! The archive is opened with the `zip` crate (stored or deflated members, CRCs
//! checked); each `.npy` member is parsed by the small parser here, which checks
//! the declared shape against the bytes present before allocating.
//!
//! # Sample volumes
//! [`Npz::volume`] turns a `[D, H, W]` C-order array into a [`Volume`] with
//! `dims = [W, H, D]` (so `imgs[z][y][x]` is voxel `(x, y, z)`), taking the
//! geometry from the optional members `spacing` (x, y, z), `origin` (x, y, z)
//! and `direction` (9 values, row-major, ITK conventions), as in the MedSAM2
//! sample files. Missing members give 1 mm spacing, origin 0, identity.

use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

use super::codec::{self, check_limit};
use super::error::{MedicalError, Result};
use super::volume::{DataType, Geometry, Volume, VoxelData};

const NPY: &str = "NPY";
const NPZ: &str = "NPZ";
/// Archives with more members than this are rejected.
const MAX_MEMBERS: usize = 4096;

/// One NumPy array, converted to C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The shape (outermost axis first; empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements in C order. `bool` arrays become `U8`; `int64`/`uint64`
    /// arrays become `I32`/`U32` when every value fits, else are an error.
    pub data: VoxelData,
}

/// The arrays of an `.npz` archive.
#[derive(Clone, Debug, Default)]
pub struct Npz {
    arrays: Vec<(String, NpyArray)>,
}

impl Npz {
    /// Reads every `.npy` member of an `.npz` file (their total decoded size
    /// is bounded by [`MAX_VOXEL_BYTES`](super::MAX_VOXEL_BYTES)).
    pub fn read(path: impl AsRef<Path>) -> Result<Npz> {
        Npz::read_members(path, None)
    }

    /// Reads only the members called `names` (without `.npy`) of an `.npz`
    /// file, streaming them from disk; absent names are simply not there.
    pub fn read_only(path: impl AsRef<Path>, names: &[&str]) -> Result<Npz> {
        Npz::read_members(path, Some(names))
    }

    fn read_members(path: impl AsRef<Path>, names: Option<&[&str]>) -> Result<Npz> {
        let path = path.as_ref();
        let (file, len) = codec::open_regular(path).map_err(|e| e.with_path(path))?;
        Npz::from_reader(BufReader::with_capacity(1 << 16, file), len, names)
            .map_err(|e| e.with_path(path))
    }

    /// Parses the bytes of an `.npz` archive (members not ending in `.npy` are skipped).
    pub fn parse(bytes: &[u8]) -> Result<Npz> {
        Npz::from_reader(Cursor::new(bytes), bytes.len() as u64, None)
    }

    /// Decodes the `.npy` members of the archive in `src` (`len` bytes): all
    /// of them, or those called `names`.
    fn from_reader<R: Read + Seek>(src: R, len: u64, names: Option<&[&str]>) -> Result<Npz> {
        let mut zip = zip::ZipArchive::new(src)
            .map_err(|e| MedicalError::format(NPZ, format!("zip archive: {e}")))?;
        if zip.len() > MAX_MEMBERS {
            return Err(MedicalError::format(NPZ, format!("{} members", zip.len())));
        }
        let mut arrays = Vec::new();
        let mut total = 0u64;
        for i in 0..zip.len() {
            let mut f = zip
                .by_index(i)
                .map_err(|e| MedicalError::format(NPZ, format!("member {i}: {e}")))?;
            let name = f
                .name()
                .map_err(|e| MedicalError::format(NPZ, format!("member {i} name: {e}")))?
                .to_string();
            let Some(key) = name.strip_suffix(".npy") else {
                continue;
            };
            if names.is_some_and(|n| !n.contains(&key)) {
                continue;
            }
            let size = f.size();
            total = total.saturating_add(size);
            check_limit(total)?;
            // A stored member's bytes are all in the archive; a compressed
            // one's decoded size is only a claim until the data arrives.
            let present = if f.compression() == zip::CompressionMethod::Stored
                && f.compressed_size() == size
                && size <= len
            {
                size
            } else {
                (codec::gz_reserve_hint(f.compressed_size().min(len) as usize) as u64).min(size)
            };
            let arr = read_npy(&mut f, size, present).map_err(|e| match e {
                MedicalError::Format { format, reason } => MedicalError::Format {
                    format,
                    reason: format!("{name}: {reason}"),
                },
                other => other,
            })?;
            // Read on to the end so that the member's CRC is checked.
            let mut extra = [0u8; 1];
            let n = f
                .read(&mut extra)
                .map_err(|e| MedicalError::format(NPZ, format!("member {name}: {e}")))?;
            if n != 0 {
                return Err(MedicalError::format(
                    NPZ,
                    format!("member {name} is longer than its array"),
                ));
            }
            arrays.push((key.to_string(), arr));
        }
        Ok(Npz { arrays })
    }

    /// Names of the arrays (without `.npy`), in archive order.
    pub fn names(&self) -> Vec<&str> {
        self.arrays.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The array called `name`.
    pub fn get(&self, name: &str) -> Option<&NpyArray> {
        self.arrays.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// The 3-D (or 2-D, taken as one slice) array `key` as a [`Volume`] with the
    /// archive's geometry (see the module documentation).
    pub fn volume(&self, key: &str) -> Result<Volume> {
        let (dims, g) = self.volume_layout(key)?;
        let arr = self.get(key).ok_or_else(|| self.missing(key))?;
        Volume::new(dims, g, arr.data.clone())
    }

    /// Like [`Npz::volume`], moving the voxels out of the archive (no copy).
    pub fn into_volume(mut self, key: &str) -> Result<Volume> {
        let (dims, g) = self.volume_layout(key)?;
        let i = self
            .arrays
            .iter()
            .position(|(n, _)| n == key)
            .ok_or_else(|| self.missing(key))?;
        let (_, arr) = self.arrays.swap_remove(i);
        Volume::new(dims, g, arr.data)
    }

    fn missing(&self, key: &str) -> MedicalError {
        MedicalError::InvalidArgument(format!(
            "no array \"{key}\" in archive (has {:?})",
            self.names()
        ))
    }

    /// The dims and geometry of the volume `key`.
    fn volume_layout(&self, key: &str) -> Result<([usize; 3], Geometry)> {
        let arr = self.get(key).ok_or_else(|| self.missing(key))?;
        let dims = match arr.shape.as_slice() {
            [d, h, w] => [*w, *h, *d],
            [h, w] => [*w, *h, 1],
            other => {
                return Err(MedicalError::unsupported(
                    NPZ,
                    format!("array \"{key}\" has shape {other:?}; need [D, H, W]"),
                ))
            }
        };
        let mut g = Geometry::default();
        if let Some(v) = self.vector("spacing", 3)? {
            g.spacing = [v[0], v[1], v[2]];
        }
        if let Some(v) = self.vector("origin", 3)? {
            g.origin = [v[0], v[1], v[2]];
        }
        if let Some(v) = self.vector("direction", 9)? {
            g.direction = [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]];
        }
        g.validate()
            .map_err(|e| MedicalError::format(NPZ, e.to_string()))?;
        Ok((dims, g))
    }

    /// The `n` values of array `name` as `f64`, `None` if absent.
    fn vector(&self, name: &str, n: usize) -> Result<Option<Vec<f64>>> {
        let Some(a) = self.get(name) else {
            return Ok(None);
        };
        if a.data.len() != n {
            return Err(MedicalError::format(
                NPZ,
                format!("\"{name}\" has {} values, expected {n}", a.data.len()),
            ));
        }
        // `+ 0.0` turns the negative zeros ITK often stores into plain zeros.
        Ok(Some(
            a.data.to_f64_vec().into_iter().map(|x| x + 0.0).collect(),
        ))
    }
}

/// The members [`read_npz_volume`] decodes besides the image: the geometry.
const GEOMETRY_MEMBERS: [&str; 3] = ["spacing", "origin", "direction"];

/// Reads array `key` of an `.npz` file as a [`Volume`] (see [`Npz::volume`]),
/// decoding only that member and the geometry members.
pub fn read_npz_volume(path: impl AsRef<Path>, key: &str) -> Result<Volume> {
    let path = path.as_ref();
    let mut names = vec![key];
    names.extend(GEOMETRY_MEMBERS);
    Npz::read_only(path, &names)?
        .into_volume(key)
        .map_err(|e| e.with_path(path))
}

/// Parses the bytes of a `.npy` file (format versions 1, 2 and 3).
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray> {
    let len = bytes.len() as u64;
    let mut r = bytes;
    read_npy(&mut r, len, len)
}

/// Reads a `.npy` stream of `len` bytes, of which `present` are known to be
/// there (the voxels are reserved up front only that far).
fn read_npy<R: Read>(r: &mut R, len: u64, present: u64) -> Result<NpyArray> {
    let bad = |r: String| MedicalError::format(NPY, r);
    let mut pre = [0u8; 10];
    let got = read_up_to(r, &mut pre)?;
    if got < 10 || &pre[..6] != b"\x93NUMPY" {
        return Err(bad("missing \\x93NUMPY magic".into()));
    }
    let (hlen, hstart): (usize, u64) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            let mut two = [0u8; 2];
            if read_up_to(r, &mut two)? < 2 {
                return Err(bad("truncated header".into()));
            }
            (
                u32::from_le_bytes([pre[8], pre[9], two[0], two[1]]) as usize,
                12,
            )
        }
        v => {
            return Err(MedicalError::unsupported(
                NPY,
                format!("format version {v}"),
            ))
        }
    };
    if hlen as u64 > len.saturating_sub(hstart) || hlen > MAX_NPY_HEADER {
        return Err(bad(format!("header of {hlen} bytes is truncated")));
    }
    let mut hbytes = vec![0u8; hlen];
    if read_up_to(r, &mut hbytes)? < hlen {
        return Err(bad(format!("header of {hlen} bytes is truncated")));
    }
    let header = std::str::from_utf8(&hbytes).map_err(|_| bad("header is not text".into()))?;
    let dict = parse_header_dict(header)?;
    let descr = dict
        .descr
        .ok_or_else(|| bad("header lacks 'descr'".into()))?;
    let shape = dict
        .shape
        .ok_or_else(|| bad("header lacks 'shape'".into()))?;
    let fortran = dict.fortran_order.unwrap_or(false);

    let (kind, big_endian) = parse_descr(&descr)?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let elem = kind.size();
    let nbytes = n
        .checked_mul(elem)
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    check_limit(nbytes as u64)?;
    let body = len - hstart - hlen as u64;
    if body < nbytes as u64 {
        return Err(bad(format!(
            "truncated data: {body} bytes, shape {shape:?} needs {nbytes}"
        )));
    }
    let reserve = (present.saturating_sub(hstart + hlen as u64) / elem as u64) as usize;
    let data = match kind {
        Kind::Plain(dt) => codec::stream_voxels(r, dt, n, big_endian, None, reserve, NPY)?,
        Kind::Bool => VoxelData::U8(codec::stream_elements(
            r,
            n,
            big_endian,
            reserve,
            NPY,
            "",
            |b: u8| Some((b != 0) as u8),
        )?),
        Kind::I64 => VoxelData::I32(codec::stream_elements(
            r,
            n,
            big_endian,
            reserve,
            NPY,
            "int64 values beyond the i32 range",
            |x: i64| i32::try_from(x).ok(),
        )?),
        Kind::U64 => VoxelData::U32(codec::stream_elements(
            r,
            n,
            big_endian,
            reserve,
            NPY,
            "uint64 values beyond the u32 range",
            |x: u64| u32::try_from(x).ok(),
        )?),
    };
    let data = if fortran && shape.len() > 1 {
        fortran_to_c(&data, &shape)
    } else {
        data
    };
    Ok(NpyArray { shape, data })
}

/// Largest `.npy` header accepted (real headers are under 1 KiB).
const MAX_NPY_HEADER: usize = 1 << 20;

/// Reads until `buf` is full or the stream ends; returns the count.
fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(codec::stream_error(NPY, e)),
        }
    }
    Ok(got)
}

#[derive(Clone, Copy)]
enum Kind {
    Plain(DataType),
    Bool,
    I64,
    U64,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::Plain(d) => d.size(),
            Kind::Bool => 1,
            Kind::I64 | Kind::U64 => 8,
        }
    }
}

/// Element kind and byte order of a `descr` like `<u2`.
fn parse_descr(descr: &str) -> Result<(Kind, bool)> {
    let unsupported = || MedicalError::unsupported(NPY, format!("dtype '{descr}'"));
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(unsupported)?;
    let big = match order {
        '<' | '|' | '=' => cfg!(target_endian = "big") && order == '=',
        '>' => true,
        _ => return Err(unsupported()),
    };
    let kind = match chars.as_str() {
        "u1" | "B" => Kind::Plain(DataType::U8),
        "i1" | "b" => Kind::Plain(DataType::I8),
        "b1" | "?" => Kind::Bool,
        "u2" => Kind::Plain(DataType::U16),
        "i2" => Kind::Plain(DataType::I16),
        "u4" => Kind::Plain(DataType::U32),
        "i4" => Kind::Plain(DataType::I32),
        "f4" => Kind::Plain(DataType::F32),
        "f8" => Kind::Plain(DataType::F64),
        "i8" => Kind::I64,
        "u8" => Kind::U64,
        _ => return Err(unsupported()),
    };
    Ok((kind, big))
}

/// Reorders a Fortran-order array into C order (one output buffer, the
/// source offset updated incrementally).
fn fortran_to_c(data: &VoxelData, shape: &[usize]) -> VoxelData {
    let nd = shape.len();
    let n: usize = shape.iter().product();
    // Fortran strides: first axis fastest.
    let mut fstride = vec![1usize; nd];
    for a in 1..nd {
        fstride[a] = fstride[a - 1] * shape[a - 1];
    }
    macro_rules! gather {
        ($v:expr, $variant:ident) => {{
            let mut out = Vec::with_capacity(n);
            let mut idx = vec![0usize; nd];
            let mut off = 0usize;
            for _ in 0..n {
                out.push($v[off]);
                // Increment the C-order multi-index (last axis fastest).
                for a in (0..nd).rev() {
                    idx[a] += 1;
                    off += fstride[a];
                    if idx[a] < shape[a] {
                        break;
                    }
                    off -= fstride[a] * shape[a];
                    idx[a] = 0;
                }
            }
            VoxelData::$variant(out)
        }};
    }
    match data {
        VoxelData::U8(v) => gather!(v, U8),
        VoxelData::I8(v) => gather!(v, I8),
        VoxelData::U16(v) => gather!(v, U16),
        VoxelData::I16(v) => gather!(v, I16),
        VoxelData::U32(v) => gather!(v, U32),
        VoxelData::I32(v) => gather!(v, I32),
        VoxelData::F32(v) => gather!(v, F32),
        VoxelData::F64(v) => gather!(v, F64),
    }
}

#[derive(Default)]
struct HeaderDict {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

/// Parses the Python dict literal of a `.npy` header.
fn parse_header_dict(s: &str) -> Result<HeaderDict> {
    let bad =
        |r: &str| MedicalError::format(NPY, format!("header dict: {r} in \"{}\"", s.trim_end()));
    let mut p = s.trim();
    p = p.strip_prefix('{').ok_or_else(|| bad("missing '{'"))?;
    let mut d = HeaderDict::default();
    loop {
        p = p.trim_start();
        if p.starts_with('}') {
            return Ok(d);
        }
        let (key, rest) = take_quoted(p).ok_or_else(|| bad("expected a quoted key"))?;
        p = rest
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad("expected ':'"))?
            .trim_start();
        match key {
            "descr" => {
                let (v, rest) = take_quoted(p).ok_or_else(|| bad("'descr' must be a string"))?;
                d.descr = Some(v.to_string());
                p = rest;
            }
            "fortran_order" => {
                if let Some(rest) = p.strip_prefix("True") {
                    d.fortran_order = Some(true);
                    p = rest;
                } else if let Some(rest) = p.strip_prefix("False") {
                    d.fortran_order = Some(false);
                    p = rest;
                } else {
                    return Err(bad("'fortran_order' must be True or False"));
                }
            }
            "shape" => {
                let rest = p
                    .strip_prefix('(')
                    .ok_or_else(|| bad("'shape' must be a tuple"))?;
                let close = rest.find(')').ok_or_else(|| bad("unclosed shape tuple"))?;
                let mut shape = Vec::new();
                for t in rest[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                {
                    let t = t.trim_end_matches('L');
                    shape.push(t.parse::<usize>().map_err(|_| bad("bad shape entry"))?);
                    if shape.len() > 32 {
                        return Err(bad("too many dimensions"));
                    }
                }
                d.shape = Some(shape);
                p = &rest[close + 1..];
            }
            _ => return Err(bad("unknown key")),
        }
        p = p.trim_start();
        if let Some(rest) = p.strip_prefix(',') {
            p = rest;
        } else if !p.starts_with('}') {
            return Err(bad("expected ',' or '}'"));
        }
    }
}

/// Splits a leading `'...'` or `"..."` string off `s`.
fn take_quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &s[1..];
    let end = rest.find(q)?;
    Some((&rest[..end], &rest[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn parses_dtypes_orders_and_shapes() {
        let a = parse_npy(&npy(
            "<i2",
            false,
            "(2, 3)",
            &[1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0],
        ))
        .unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, VoxelData::I16(vec![1, 2, 3, 4, 5, 6]));
        // Fortran order: memory holds columns first.
        let a = parse_npy(&npy("|u1", true, "(2, 3)", &[1, 4, 2, 5, 3, 6])).unwrap();
        assert_eq!(a.data, VoxelData::U8(vec![1, 2, 3, 4, 5, 6]));
        let a = parse_npy(&npy(">f8", false, "(1,)", &2.5f64.to_be_bytes())).unwrap();
        assert_eq!(a.data, VoxelData::F64(vec![2.5]));
        let a = parse_npy(&npy("<i8", false, "()", &(-7i64).to_le_bytes())).unwrap();
        assert_eq!((a.shape.len(), a.data), (0, VoxelData::I32(vec![-7])));
        let a = parse_npy(&npy("|b1", false, "(3,)", &[0, 1, 2])).unwrap();
        assert_eq!(a.data, VoxelData::U8(vec![0, 1, 1]));
        assert!(parse_npy(&npy("<i8", false, "(1,)", &(1i64 << 40).to_le_bytes())).is_err());
        assert!(parse_npy(&npy("<c8", false, "(1,)", &[0; 8])).is_err());
        assert!(parse_npy(&npy("<u2", false, "(100000, 100000, 100000)", &[0; 8])).is_err());
    }

    /// A small `.npz` like the samples: `imgs`, `gts` and geometry members.
    fn sample_npz(method: zip::CompressionMethod) -> Vec<u8> {
        use std::io::Write;
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let imgs: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7) as u8).collect();
        let gts: Vec<u8> = (0..2 * 3 * 4).map(|i| (i % 5 == 0) as u8).collect();
        let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let members: [(&str, Vec<u8>); 5] = [
            ("imgs.npy", npy("|u1", false, "(2, 3, 4)", &imgs)),
            ("gts.npy", npy("|u1", false, "(2, 3, 4)", &gts)),
            (
                "spacing.npy",
                npy("<f8", false, "(3,)", &f64s(&[0.5, 0.75, 5.0])),
            ),
            (
                "direction.npy",
                npy(
                    "<f8",
                    false,
                    "(9,)",
                    &f64s(&[0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
                ),
            ),
            (
                "origin.npy",
                npy("<f8", false, "(3,)", &f64s(&[1.0, 2.0, 3.0])),
            ),
        ];
        for (name, data) in members {
            w.start_file(name, opts).unwrap();
            w.write_all(&data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn reads_sample_like_archives() {
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let npz = Npz::parse(&sample_npz(method)).unwrap();
            assert_eq!(
                npz.names(),
                vec!["imgs", "gts", "spacing", "direction", "origin"]
            );
            let v = npz.volume("imgs").unwrap();
            assert_eq!(v.dims(), [4, 3, 2]);
            assert_eq!(v.get([3, 2, 1]), Some(((3 + 4 * (2 + 3)) * 7) as f64));
            let g = v.geometry();
            assert_eq!(g.spacing, [0.5, 0.75, 5.0]);
            assert_eq!(g.origin, [1.0, 2.0, 3.0]);
            assert_eq!(
                g.direction,
                [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
            );
            assert!(npz.volume("nope").is_err());
            assert!(npz.volume("spacing").is_err());
        }
    }

    #[test]
    fn fuzzed_archives_error_without_panic() {
        let mut rng = crate::confidence_bank::SplitMix64::new(0x9e37_79b9_7f4a_7c15);
        let mut rnd = move || rng.next_u64();
        let t0 = std::time::Instant::now();
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let good = sample_npz(method);
            for len in 0..good.len() {
                assert!(
                    Npz::parse(&good[..len]).is_err(),
                    "truncated to {len} parsed"
                );
            }
            let mut errors = 0;
            for _ in 0..3000 {
                let mut b = good.clone();
                for _ in 0..1 + rnd() % 3 {
                    let i = (rnd() % b.len() as u64) as usize;
                    b[i] ^= 1 + (rnd() % 255) as u8;
                }
                if Npz::parse(&b).and_then(|z| z.volume("imgs")).is_err() {
                    errors += 1;
                }
            }
            // Stored members carry CRCs too, so nearly every flip is caught.
            assert!(
                errors > 2000,
                "{method:?}: only {errors} of 3000 corruptions detected"
            );
        }
        assert!(t0.elapsed().as_secs_f64() < 5.0);
    }
}
