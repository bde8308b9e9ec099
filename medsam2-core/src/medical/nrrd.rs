//! NRRD images (`.nrrd` with attached data, `.nhdr` with a detached data file).
//!
//! Hand-written (no maintained Rust crate reads NRRD). Supported:
//! * `type`: all 8/16/32-bit integer types, `float`, `double` (every spelling of
//!   the specification);
//! * `encoding`: `raw`, `gzip`/`gz`, and `ascii`/`text`/`txt` on read;
//! * `endian`, `line skip`, `byte skip` (raw, including `-1`), `data file`
//!   (a single detached file, [`read_nrrd`] only);
//! * geometry from `space` + `space directions` + `space origin` (RAS and LAS
//!   spaces are converted to LPS; `scanner-xyz` and the `3D-*-handed` spaces are
//!   taken as they are), or from `spacings` when there are no directions;
//! * `dimension` up to 16 when all axes but three spatial ones have size 1 (e.g.
//!   a 3D Slicer `.seg.nrrd` with a single layer). A segmentation with several
//!   layers (a 4-D `list` axis) is read as a volume only through
//!   [`super::seg_nrrd`], which also keeps the `key:=value` segment fields.
//!
//! Written files are `NRRD0004` with `space: left-posterior-superior`, as 3D
//! Slicer writes them, raw or gzip-encoded, little-endian.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;

use super::codec::{self, check_limit};
use super::error::{MedicalError, Result};
use super::volume::{DataType, Geometry, Volume, VoxelData, IDENTITY3};

const FMT: &str = "NRRD";
/// Headers longer than this are rejected (real headers are a few KiB).
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Data encoding of a NRRD file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NrrdEncoding {
    /// Uncompressed binary.
    Raw,
    /// Gzip-compressed binary (3D Slicer's default).
    Gzip,
}

/// Reads a `.nrrd` (or `.nhdr` with its detached data file), streaming the
/// voxels from disk. A detached `data file` must be a regular file in the
/// header's folder (or below it): absolute paths and `..` are refused.
pub fn read_nrrd(path: impl AsRef<Path>) -> Result<Volume> {
    let path = path.as_ref();
    let (file, len) = codec::open_regular(path).map_err(|e| e.with_path(path))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    (|| {
        let mut file = BufReader::with_capacity(1 << 16, file);
        // The header is at most MAX_HEADER_BYTES; what follows it in `head`
        // is the start of the attached data.
        let mut head = Vec::new();
        (&mut file)
            .take(MAX_HEADER_BYTES as u64 + 1)
            .read_to_end(&mut head)?;
        let (lines, data_start) = split_header(&head)?;
        let h = parse_fields(&lines)?;
        let attached = (&head[data_start..]).chain(file);
        into_volume(decode(
            &h,
            attached,
            len - data_start as u64,
            Some(dir),
            false,
        )?)
    })()
    .map_err(|e| e.with_path(path))
}

/// Parses the bytes of a NRRD file with attached data.
pub fn parse_nrrd(bytes: &[u8]) -> Result<Volume> {
    into_volume(parse_layers(bytes, None, false)?)
}

/// Opens a detached data file: a plain relative name inside `dir` (no
/// absolute path, no `..`, no link leading out of `dir`), a regular file.
fn open_data_file(dir: &Path, name: &str) -> Result<(std::fs::File, u64)> {
    use std::path::Component;
    let rel = Path::new(name);
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !plain {
        return Err(MedicalError::unsupported(
            FMT,
            format!(
                "data file \"{name}\": only a relative path inside the header's folder is read (no absolute path or \"..\")"
            ),
        ));
    }
    let full = dir.join(rel);
    let (f, len) = codec::open_regular(&full).map_err(|e| e.with_path(&full))?;
    let (Ok(cdir), Ok(cfull)) = (dir.canonicalize(), full.canonicalize()) else {
        return Err(bad(format!("data file \"{name}\" cannot be resolved")));
    };
    if !cfull.starts_with(&cdir) {
        return Err(MedicalError::unsupported(
            FMT,
            format!("data file \"{name}\" leads outside the header's folder"),
        ));
    }
    Ok((f, len))
}

/// Writes `volume` as a NRRD file with attached data.
pub fn write_nrrd(path: impl AsRef<Path>, volume: &Volume, encoding: NrrdEncoding) -> Result<()> {
    let head = nrrd_header(volume, encoding)?;
    let gz = match encoding {
        NrrdEncoding::Raw => codec::Gz::None,
        NrrdEncoding::Gzip => codec::Gz::Payload,
    };
    codec::write_volume_file(path.as_ref(), head.as_bytes(), volume.data(), gz)
}

/// The bytes of a NRRD file with attached data for `volume`.
pub fn encode_nrrd(volume: &Volume, encoding: NrrdEncoding) -> Result<Vec<u8>> {
    encode_parts(
        volume.dims(),
        volume.geometry(),
        volume.data(),
        None,
        &[],
        encoding,
    )
}

/// The header of a NRRD file with attached data for `volume` (blank line included).
fn nrrd_header(volume: &Volume, encoding: NrrdEncoding) -> Result<String> {
    header_parts(
        volume.dims(),
        volume.geometry(),
        volume.data_type(),
        None,
        &[],
        encoding,
    )
}

/// The bytes of a NRRD file: `data` holds `layers` interleaved values per voxel
/// when `layers` is given (a 4-D file whose first axis is a `list`, as a
/// multi-layer Slicer segmentation), and `key_values` are written as
/// `key:=value` lines.
pub(super) fn encode_parts(
    dims: [usize; 3],
    g: &Geometry,
    data: &VoxelData,
    layers: Option<usize>,
    key_values: &[(String, String)],
    encoding: NrrdEncoding,
) -> Result<Vec<u8>> {
    let h = header_parts(dims, g, data.data_type(), layers, key_values, encoding)?;
    let payload = data.to_le_bytes();
    let mut out = h.into_bytes();
    match encoding {
        NrrdEncoding::Raw => out.extend_from_slice(&payload),
        NrrdEncoding::Gzip => out.extend_from_slice(&codec::gzip(&payload)?),
    }
    Ok(out)
}

/// The header (blank line included) of a NRRD file as [`encode_parts`] writes it.
fn header_parts(
    dims: [usize; 3],
    g: &Geometry,
    dtype: DataType,
    layers: Option<usize>,
    key_values: &[(String, String)],
    encoding: NrrdEncoding,
) -> Result<String> {
    let [nx, ny, nz] = dims;
    let m = g.scaled_direction();
    let type_name = match dtype {
        DataType::U8 => "uint8",
        DataType::I8 => "int8",
        DataType::U16 => "uint16",
        DataType::I16 => "int16",
        DataType::U32 => "uint32",
        DataType::I32 => "int32",
        DataType::F32 => "float",
        DataType::F64 => "double",
    };
    let vec3 = |v: [f64; 3]| format!("({},{},{})", v[0], v[1], v[2]);
    let mut h = String::from("NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n");
    let _ = writeln!(h, "type: {type_name}");
    let cols = [0, 1, 2].map(|c| vec3([m[0][c], m[1][c], m[2][c]]));
    let (dimension, size0, dir0, kind0) = match layers {
        Some(l) => (4, format!("{l} "), "none ", "list "),
        None => (3, String::new(), "", ""),
    };
    let _ = writeln!(h, "dimension: {dimension}");
    h.push_str("space: left-posterior-superior\n");
    let _ = writeln!(h, "sizes: {size0}{nx} {ny} {nz}");
    let _ = writeln!(
        h,
        "space directions: {dir0}{} {} {}",
        cols[0], cols[1], cols[2]
    );
    let _ = writeln!(h, "kinds: {kind0}domain domain domain");
    if dtype.size() > 1 {
        h.push_str("endian: little\n");
    }
    let _ = writeln!(
        h,
        "encoding: {}",
        match encoding {
            NrrdEncoding::Raw => "raw",
            NrrdEncoding::Gzip => "gzip",
        }
    );
    let _ = writeln!(h, "space origin: {}", vec3(g.origin));
    for (k, v) in key_values {
        if k.contains([':', '\n']) || v.contains('\n') {
            return Err(MedicalError::InvalidArgument(format!(
                "NRRD key/value \"{k}\" cannot hold ':' or a line break"
            )));
        }
        let _ = writeln!(h, "{k}:={v}");
    }
    h.push('\n');
    Ok(h)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

/// The fields of a header that matter here.
#[derive(Default)]
struct Header {
    dtype: Option<DataType>,
    dimension: Option<usize>,
    sizes: Option<Vec<usize>>,
    encoding: Option<Encoding>,
    big_endian: bool,
    space: Option<String>,
    space_dimension: Option<usize>,
    directions: Option<Vec<Option<[f64; 3]>>>,
    origin: Option<[f64; 3]>,
    spacings: Option<Vec<f64>>,
    data_file: Option<String>,
    line_skip: usize,
    byte_skip: i64,
    /// `key:=value` pairs, in file order.
    key_values: Vec<(String, String)>,
}

fn bad(reason: impl Into<String>) -> MedicalError {
    MedicalError::format(FMT, reason)
}

/// A NRRD file whose non-spatial axes (if any) are merged into one `list`
/// axis of `layers` values per voxel (the first axis of a Slicer segmentation).
pub(super) struct LayeredNrrd {
    /// The spatial sizes.
    pub dims: [usize; 3],
    /// The geometry of the spatial axes.
    pub geometry: Geometry,
    /// Values per voxel (1 for an ordinary image).
    pub layers: usize,
    /// All values, the layer index fastest.
    pub data: VoxelData,
    /// The `key:=value` pairs.
    pub key_values: Vec<(String, String)>,
}

/// Parses the bytes of a NRRD file with attached data; a first axis without a
/// space direction (a `list`) of any size is accepted when `allow_layers`.
pub(super) fn parse_layers(
    bytes: &[u8],
    dir: Option<&Path>,
    allow_layers: bool,
) -> Result<LayeredNrrd> {
    let (lines, data_start) = split_header(bytes)?;
    let h = parse_fields(&lines)?;
    decode(
        &h,
        &bytes[data_start..],
        (bytes.len() - data_start) as u64,
        dir,
        allow_layers,
    )
}

/// A single-layer NRRD as a [`Volume`].
fn into_volume(f: LayeredNrrd) -> Result<Volume> {
    Volume::new(f.dims, f.geometry, f.data).map_err(|e| bad(e.to_string()))
}

/// Decodes the data a parsed header describes: `attached` holds the `len`
/// bytes that follow the header; a detached `data file` is looked up in `dir`.
/// A first `list` axis is read as layers when `allow_layers`.
fn decode<R: BufRead>(
    h: &Header,
    attached: R,
    len: u64,
    dir: Option<&Path>,
    allow_layers: bool,
) -> Result<LayeredNrrd> {
    let dtype = h.dtype.ok_or_else(|| bad("missing field \"type\""))?;
    let dimension = h
        .dimension
        .ok_or_else(|| bad("missing field \"dimension\""))?;
    let sizes = h
        .sizes
        .clone()
        .ok_or_else(|| bad("missing field \"sizes\""))?;
    if sizes.len() != dimension {
        return Err(bad(format!(
            "\"sizes\" has {} entries for dimension {dimension}",
            sizes.len()
        )));
    }
    let encoding = h
        .encoding
        .ok_or_else(|| bad("missing field \"encoding\""))?;
    let mut spatial = sizes.clone();
    let mut layers = 1;
    if allow_layers
        && h.directions
            .as_ref()
            .is_some_and(|d| d.len() == 4 && d[0].is_none())
    {
        layers = sizes[0];
        spatial[0] = 1;
    }
    let (dims, geometry) = geometry_of(h, &spatial)?;
    let nvox = sizes
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| bad("sizes overflow"))?;
    let nbytes = nvox
        .checked_mul(dtype.size())
        .ok_or_else(|| bad("sizes overflow"))?;
    check_limit(nbytes as u64)?;
    if h.byte_skip != 0 && encoding != Encoding::Raw {
        return Err(MedicalError::unsupported(
            FMT,
            "\"byte skip\" with a non-raw encoding",
        ));
    }

    // The source of the (possibly encoded) data and its length.
    let (mut payload, mut len): (Box<dyn BufRead + '_>, u64) = match &h.data_file {
        None => (Box::new(attached), len),
        Some(name) => {
            let dir = dir.ok_or_else(|| {
                MedicalError::unsupported(FMT, "detached data file (use read_nrrd with a path)")
            })?;
            if name.starts_with("LIST") || name.contains('%') || name.split_whitespace().count() > 1
            {
                return Err(MedicalError::unsupported(
                    FMT,
                    format!("multi-file data \"{name}\""),
                ));
            }
            let (f, n) = open_data_file(dir, name)?;
            (Box::new(BufReader::with_capacity(1 << 16, f)), n)
        }
    };
    let mut line = Vec::new();
    for _ in 0..h.line_skip {
        line.clear();
        let n = (&mut payload)
            .take(MAX_HEADER_BYTES as u64)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            return Err(bad("\"line skip\" beyond end of data"));
        }
        len = len.saturating_sub(n as u64);
    }

    let data = match encoding {
        Encoding::Raw => {
            let need = nbytes as u64;
            let start = if h.byte_skip == -1 {
                len.checked_sub(need)
                    .ok_or_else(|| bad(format!("truncated data: {len} bytes, need {need}")))?
            } else if h.byte_skip >= 0 {
                h.byte_skip as u64
            } else {
                return Err(bad(format!("\"byte skip\" {}", h.byte_skip)));
            };
            let end = start
                .checked_add(need)
                .ok_or_else(|| bad("byte skip overflow"))?;
            if len < end {
                return Err(bad(format!("truncated data: {len} bytes, need {end}")));
            }
            codec::skip(&mut payload, start, FMT)?;
            codec::stream_voxels(&mut payload, dtype, nvox, h.big_endian, None, nvox, FMT)?
        }
        Encoding::Gzip => {
            let head = payload.fill_buf()?;
            if head.len() >= 2 && !codec::is_gzip(head) {
                return Err(bad("data is not gzip-compressed"));
            }
            let mut r = MultiGzDecoder::new(payload);
            let hint = codec::gz_reserve_hint(len.min(usize::MAX as u64) as usize) / dtype.size();
            let data = codec::stream_voxels(&mut r, dtype, nvox, h.big_endian, None, hint, FMT)?;
            codec::finish(&mut r, FMT)?;
            data
        }
        Encoding::Ascii => {
            let mut text = Vec::new();
            payload.take(codec::MAX_TEXT_BYTES).read_to_end(&mut text)?;
            parse_ascii(&text, dtype, nvox)?
        }
    };
    Ok(LayeredNrrd {
        dims,
        geometry,
        layers,
        data,
        key_values: h.key_values.clone(),
    })
}

/// Splits off the header lines; returns them and the offset of the data.
fn split_header(bytes: &[u8]) -> Result<(Vec<String>, usize)> {
    if !bytes.starts_with(b"NRRD000") || bytes.len() < 8 || !bytes[7].is_ascii_digit() {
        return Err(bad("missing \"NRRD000x\" magic"));
    }
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        if pos >= bytes.len() {
            // Header ends at EOF: only valid for a detached header (.nhdr).
            return Ok((lines, bytes.len()));
        }
        let rest = &bytes[pos..bytes.len().min(pos + MAX_HEADER_BYTES)];
        let nl = match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => nl,
            None if pos + rest.len() == bytes.len() => rest.len(),
            None => return Err(bad("header line too long")),
        };
        let line = &bytes[pos..pos + nl];
        pos += nl + 1;
        if pos > MAX_HEADER_BYTES {
            return Err(bad("header too long"));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok((lines, pos.min(bytes.len())));
        }
        let text = std::str::from_utf8(line).map_err(|_| bad("header line is not text"))?;
        lines.push(text.to_string());
    }
}

fn parse_fields(lines: &[String]) -> Result<Header> {
    let mut h = Header::default();
    for line in lines.iter().skip(1) {
        if line.starts_with('#') {
            continue;
        }
        let fs = line.find(": ");
        let kv = line.find(":=");
        let (key, value) = match (fs, kv) {
            (Some(f), Some(k)) if k < f => {
                h.key_values.push(key_value(line, k));
                continue;
            }
            (None, Some(k)) => {
                h.key_values.push(key_value(line, k));
                continue;
            }
            (Some(f), _) => (&line[..f], line[f + 2..].trim()),
            (None, None) => return Err(bad(format!("malformed header line \"{line}\""))),
        };
        let key = key.trim().to_ascii_lowercase();
        match key.as_str() {
            "type" => h.dtype = Some(parse_type(value)?),
            "dimension" => {
                let d = parse_usize(value, "dimension")?;
                if !(1..=16).contains(&d) {
                    return Err(bad(format!("dimension {d}")));
                }
                h.dimension = Some(d);
            }
            "sizes" => {
                let s = value
                    .split_whitespace()
                    .map(|t| parse_usize(t, "sizes"))
                    .collect::<Result<Vec<_>>>()?;
                if s.contains(&0) || s.len() > 16 {
                    return Err(bad(format!("sizes \"{value}\"")));
                }
                h.sizes = Some(s);
            }
            "encoding" => {
                h.encoding = Some(match value.to_ascii_lowercase().as_str() {
                    "raw" => Encoding::Raw,
                    "gzip" | "gz" => Encoding::Gzip,
                    "ascii" | "text" | "txt" => Encoding::Ascii,
                    other => {
                        return Err(MedicalError::unsupported(
                            FMT,
                            format!("encoding \"{other}\""),
                        ))
                    }
                })
            }
            "endian" => {
                h.big_endian = match value.to_ascii_lowercase().as_str() {
                    "little" => false,
                    "big" => true,
                    other => return Err(bad(format!("endian \"{other}\""))),
                }
            }
            "space" => h.space = Some(value.to_ascii_lowercase()),
            "space dimension" => h.space_dimension = Some(parse_usize(value, "space dimension")?),
            "space directions" => h.directions = Some(parse_directions(value)?),
            "space origin" => {
                let v = parse_vectors(value)?;
                match v.as_slice() {
                    [Some(o)] => h.origin = Some(*o),
                    _ => return Err(bad(format!("space origin \"{value}\""))),
                }
            }
            "spacings" => {
                h.spacings = Some(
                    value
                        .split_whitespace()
                        .map(|t| {
                            if t.eq_ignore_ascii_case("nan") {
                                Ok(f64::NAN)
                            } else {
                                parse_f64(t)
                            }
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            "data file" | "datafile" => h.data_file = Some(value.to_string()),
            "line skip" | "lineskip" => h.line_skip = parse_usize(value, "line skip")?,
            "byte skip" | "byteskip" => {
                h.byte_skip = value
                    .parse::<i64>()
                    .map_err(|_| bad(format!("byte skip \"{value}\"")))?
            }
            _ => {} // kinds, units, labels, content, measurement frame, ...
        }
    }
    Ok(h)
}

/// A `key:=value` line split at `at` (the `:=`).
fn key_value(line: &str, at: usize) -> (String, String) {
    (line[..at].to_string(), line[at + 2..].to_string())
}

fn parse_usize(s: &str, what: &str) -> Result<usize> {
    s.trim()
        .parse::<usize>()
        .map_err(|_| bad(format!("{what}: \"{s}\" is not a non-negative integer")))
}

fn parse_f64(s: &str) -> Result<f64> {
    let v = s
        .trim()
        .parse::<f64>()
        .map_err(|_| bad(format!("\"{s}\" is not a number")))?;
    if !v.is_finite() {
        return Err(bad(format!("non-finite number \"{s}\"")));
    }
    Ok(v)
}

fn parse_type(value: &str) -> Result<DataType> {
    let v = value.trim().to_ascii_lowercase();
    Ok(match v.as_str() {
        "signed char" | "int8" | "int8_t" => DataType::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => DataType::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            DataType::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => DataType::U16,
        "int" | "signed int" | "int32" | "int32_t" => DataType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => DataType::U32,
        "float" => DataType::F32,
        "double" => DataType::F64,
        _ => return Err(MedicalError::unsupported(FMT, format!("type \"{value}\""))),
    })
}

/// Parses a list of `(x,y,z)` vectors or `none` tokens.
fn parse_vectors(value: &str) -> Result<Vec<Option<[f64; 3]>>> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("none") {
            out.push(None);
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            let close = r
                .find(')')
                .ok_or_else(|| bad(format!("unclosed vector in \"{value}\"")))?;
            let comps = r[..close]
                .split(',')
                .map(parse_f64)
                .collect::<Result<Vec<_>>>()?;
            let v: [f64; 3] = comps.try_into().map_err(|_| {
                MedicalError::unsupported(FMT, format!("vector \"({})\" is not 3-D", &r[..close]))
            })?;
            out.push(Some(v));
            rest = r[close + 1..].trim_start();
        } else {
            return Err(bad(format!("malformed vector list \"{value}\"")));
        }
        if out.len() > 16 {
            return Err(bad("too many vectors"));
        }
    }
    Ok(out)
}

fn parse_directions(value: &str) -> Result<Vec<Option<[f64; 3]>>> {
    parse_vectors(value)
}

/// Sign flips that take a named space to LPS.
fn space_to_lps(space: Option<&str>) -> Result<[f64; 3]> {
    Ok(match space {
        None => [1.0; 3],
        Some(s) => match s {
            "left-posterior-superior" | "lps" => [1.0, 1.0, 1.0],
            "right-anterior-superior" | "ras" => [-1.0, -1.0, 1.0],
            "left-anterior-superior" | "las" => [1.0, -1.0, 1.0],
            "scanner-xyz" | "3d-right-handed" | "3d-left-handed" => [1.0, 1.0, 1.0],
            other => return Err(MedicalError::unsupported(FMT, format!("space \"{other}\""))),
        },
    })
}

/// The 3-D dims and geometry, squeezing non-spatial axes of size 1.
fn geometry_of(h: &Header, sizes: &[usize]) -> Result<([usize; 3], Geometry)> {
    if let Some(sd) = h.space_dimension {
        if sd != 3 {
            return Err(MedicalError::unsupported(
                FMT,
                format!("space dimension {sd}"),
            ));
        }
    }
    let flip = space_to_lps(h.space.as_deref())?;
    let lps = |v: [f64; 3]| [v[0] * flip[0], v[1] * flip[1], v[2] * flip[2]];
    let origin = lps(h.origin.unwrap_or([0.0; 3]));

    if let Some(dirs) = &h.directions {
        if dirs.len() != sizes.len() {
            return Err(bad(format!(
                "\"space directions\" has {} entries for dimension {}",
                dirs.len(),
                sizes.len()
            )));
        }
        let mut dims = Vec::new();
        let mut cols = Vec::new();
        for (s, d) in sizes.iter().zip(dirs) {
            match d {
                Some(v) => {
                    dims.push(*s);
                    cols.push(lps(*v));
                }
                None if *s == 1 => {}
                None => {
                    return Err(MedicalError::unsupported(
                        FMT,
                        format!(
                        "non-spatial axis of size {s} (vector image, or a multi-layer segmentation: read it with medical::seg_nrrd)"
                    ),
                    ))
                }
            }
        }
        if dims.len() != 3 {
            return Err(MedicalError::unsupported(
                FMT,
                format!("{} spatial axes (need 3)", dims.len()),
            ));
        }
        let g = Geometry::from_step_vectors([cols[0], cols[1], cols[2]], origin)
            .map_err(|e| bad(format!("space directions: {e}")))?;
        return Ok(([dims[0], dims[1], dims[2]], g));
    }
    // No directions: axis-aligned, spacing from "spacings" (1 when absent/NaN).
    let kept: Vec<usize> = (0..sizes.len())
        .filter(|&i| sizes[i] > 1 || sizes.len() <= 3)
        .collect();
    if kept.len() > 3 {
        return Err(MedicalError::unsupported(
            FMT,
            format!("{}-D image without space directions", sizes.len()),
        ));
    }
    let mut dims = [1usize; 3];
    let mut spacing = [1.0f64; 3];
    for (a, &i) in kept.iter().enumerate() {
        dims[a] = sizes[i];
        if let Some(sp) = h.spacings.as_ref().and_then(|s| s.get(i)) {
            if sp.is_finite() && *sp != 0.0 {
                spacing[a] = sp.abs();
            }
        }
    }
    let g = Geometry {
        spacing,
        origin,
        direction: IDENTITY3,
    };
    g.validate().map_err(|e| bad(e.to_string()))?;
    Ok((dims, g))
}

/// Parses `n` whitespace-separated numbers.
fn parse_ascii(payload: &[u8], dtype: DataType, n: usize) -> Result<VoxelData> {
    let text = std::str::from_utf8(payload).map_err(|_| bad("ascii data is not text"))?;
    let mut vals = Vec::new();
    for tok in text
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        if vals.len() == n {
            break;
        }
        vals.push(
            tok.parse::<f64>()
                .map_err(|_| bad(format!("ascii value \"{tok}\"")))?,
        );
    }
    if vals.len() < n {
        return Err(bad(format!(
            "truncated ascii data: {} of {n} values",
            vals.len()
        )));
    }
    macro_rules! conv {
        ($variant:ident, $t:ty) => {
            VoxelData::$variant(vals.iter().map(|&v| v as $t).collect())
        };
    }
    Ok(match dtype {
        DataType::U8 => conv!(U8, u8),
        DataType::I8 => conv!(I8, i8),
        DataType::U16 => conv!(U16, u16),
        DataType::I16 => conv!(I16, i16),
        DataType::U32 => conv!(U32, u32),
        DataType::I32 => conv!(I32, i32),
        DataType::F32 => conv!(F32, f32),
        DataType::F64 => VoxelData::F64(vals),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slicer_style_header_with_ras_and_4d_single_layer() {
        let mut f = b"NRRD0004\n# comment\ntype: short\ndimension: 4\nspace: right-anterior-superior\nsizes: 1 2 2 1\nspace directions: none (0.5,0,0) (0,-0.7,0) (0,0,2.5)\nkinds: list domain domain domain\nencoding: ascii\nspace origin: (10,20,30)\nSegment0_Name:=tumour: big\n\n".to_vec();
        f.extend_from_slice(b"1 2\n3 -4\n");
        let v = parse_nrrd(&f).unwrap();
        assert_eq!(v.dims(), [2, 2, 1]);
        assert_eq!(v.data(), &VoxelData::I16(vec![1, 2, 3, -4]));
        let g = v.geometry();
        assert_eq!(g.spacing, [0.5, 0.7, 2.5]);
        assert_eq!(g.origin, [-10.0, -20.0, 30.0]);
        assert_eq!(
            g.direction,
            [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        );
    }

    #[test]
    fn old_style_spacings_and_big_endian_raw() {
        let mut f = b"NRRD0001\ntype: ushort\ndimension: 3\nsizes: 2 1 1\nspacings: 0.25 NaN 3\nendian: big\nencoding: raw\n\n".to_vec();
        f.extend_from_slice(&[1, 2, 3, 4]);
        let v = parse_nrrd(&f).unwrap();
        assert_eq!(v.data(), &VoxelData::U16(vec![0x0102, 0x0304]));
        assert_eq!(v.geometry().spacing, [0.25, 1.0, 3.0]);
    }

    #[test]
    fn rejects_multi_layer_and_bad_fields() {
        let f = b"NRRD0004\ntype: uint8\ndimension: 4\nsizes: 2 1 1 1\nspace directions: none (1,0,0) (0,1,0) (0,0,1)\nencoding: raw\n\n\0\0";
        assert!(matches!(
            parse_nrrd(f),
            Err(MedicalError::Unsupported { .. })
        ));
        let f = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1 1 1\nencoding: bzip2\n\n\0";
        assert!(matches!(
            parse_nrrd(f),
            Err(MedicalError::Unsupported { .. })
        ));
        let f = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1 1 1\nspace directions: (1,0,0) (0,1,0) (0,0,0)\nencoding: raw\n\n\0";
        assert!(matches!(parse_nrrd(f), Err(MedicalError::Format { .. })));
    }
}
