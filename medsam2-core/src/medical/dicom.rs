//! DICOM series: a folder (or a list) of single-frame slices, or enhanced
//! multi-frame files (Enhanced CT / MR / PET: one file, one frame per slice)
//! -> one [`Volume`].
//!
//! Parsing and pixel decoding use the dicom-rs crates (`dicom-object`,
//! `dicom-pixeldata` with its pure-Rust decoders: native, deflated, RLE lossless
//! and JPEG baseline / extended / lossless). What those crates do not do is done
//! here: assembling slices into a volume, the consistency checks, and a bound on
//! allocation for hostile files (see below).
//!
//! # Assembly (as ITK / SimpleITK `ImageSeriesReader`)
//! * Files are grouped by SeriesInstanceUID. Several series: an error listing
//!   them; choose one with [`DicomOptions::series_uid`].
//! * A multi-frame file gives one slice per frame, its position, orientation,
//!   pixel spacing and rescale read from the frame's item of the
//!   PerFrameFunctionalGroupsSequence, else from the
//!   SharedFunctionalGroupsSequence, else from the top level (as GDCM reads
//!   enhanced images); a multi-frame file without per-frame positions is
//!   refused. Frames and single-frame files are then assembled alike.
//! * Slices are sorted along the slice normal (ImageOrientationPatient row x
//!   column cosine) by ImagePositionPatient.
//! * Voxel index `i` runs along the rows (column index), `j` down the columns
//!   (row index), `k` along the normal; direction columns are the row cosine,
//!   the column cosine and the normal; the origin is the first slice's position.
//! * Spacing: PixelSpacing (column spacing for `i`, row spacing for `j`); along
//!   the normal the distance first-to-last slice divided by `n - 1` (for a single
//!   slice SpacingBetweenSlices, else SliceThickness, else 1 mm).
//! * Values: RescaleSlope / RescaleIntercept applied per slice (CT -> HU). The
//!   stored type is kept when no slice is rescaled; integral rescaling gives
//!   `i16` or `i32` (the smallest holding the rescaled range of BitsStored, as
//!   GDCM chooses), fractional rescaling `f32` (ITK gives `f64`; `f32` halves
//!   the memory and holds rescaled 16-bit values exactly enough).
//!
//! # Errors (each names the file concerned)
//! Duplicate slice positions, missing slices (a gap that is a multiple of the
//! spacing), uneven spacing beyond [`DicomOptions::spacing_tolerance`], varying
//! orientation, pixel size or image size, gantry tilt (positions that drift
//! in-plane), colour images, multi-frame files without per-frame positions,
//! a missing position or orientation; such a file fails only the series it
//! belongs to. Files that are not DICOM or hold no image (DICOMDIR, reports,
//! RT structures) are skipped and listed in [`DicomSeries::skipped`].
//!
//! # Hostile files
//! `dicom-parser` allocates each value at its declared length before reading
//! it, so every file is first walked by `dicom_lengths` (element headers,
//! sequences, items, pixel fragments) and rejected when a declared length
//! exceeds the bytes that follow. Decoded
//! frames are bounded by the file size (native) or a maximum compression ratio
//! (encapsulated), and by [`MAX_VOXEL_BYTES`](super::MAX_VOXEL_BYTES); a JPEG
//! stream's own frame header must not exceed Rows x Columns (the JPEG decoder
//! sizes its buffers from it). Panics of the decoders are turned into errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use super::codec::{self, check_limit};
use super::dicom_lengths::{check_lengths, has_dicm_magic};
use super::error::{MedicalError, Result};
use super::volume::{DataType, Geometry, Volume, VoxelData};

const FMT: &str = "DICOM";
/// Most files a folder scan visits (a CT study has a few thousand).
const MAX_FILES: usize = 100_000;
/// Deepest sub-folder a folder scan enters.
const MAX_DIR_DEPTH: usize = 8;
/// Largest ratio of decoded to encoded bytes accepted for compressed pixel
/// data (RLE reaches 64:1, JPEG about 256:1 on a constant image).
const MAX_COMPRESSION_RATIO: u64 = 256;
/// Orientation cosines and pixel spacings agree when within this (relative).
const GEOMETRY_TOLERANCE: f64 = 1e-4;

/// How a series is chosen and checked.
#[derive(Clone, Debug)]
pub struct DicomOptions {
    /// The SeriesInstanceUID to read when the files hold several series.
    pub series_uid: Option<String>,
    /// Largest accepted deviation of a slice gap from the series' spacing, as
    /// a fraction of the spacing (default 0.01 = 1 %).
    pub spacing_tolerance: f64,
}

impl Default for DicomOptions {
    fn default() -> Self {
        DicomOptions {
            series_uid: None,
            spacing_tolerance: 0.01,
        }
    }
}

/// A file that was not used, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped ("not a DICOM file", "no pixel data (...)").
    pub reason: String,
}

/// One series found among the files.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSummary {
    /// SeriesInstanceUID.
    pub uid: String,
    /// SeriesNumber, when present.
    pub number: Option<i64>,
    /// Modality (`CT`, `MR`, ...), empty when absent.
    pub modality: String,
    /// SeriesDescription, empty when absent.
    pub description: String,
    /// Number of image files.
    pub files: usize,
}

impl std::fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.uid)?;
        let mut parts = Vec::new();
        if let Some(n) = self.number {
            parts.push(format!("#{n}"));
        }
        if !self.modality.is_empty() {
            parts.push(self.modality.clone());
        }
        if !self.description.is_empty() {
            parts.push(format!("\"{}\"", self.description));
        }
        parts.push(format!("{} files", self.files));
        write!(f, " ({})", parts.join(", "))
    }
}

/// A series read into a volume.
#[derive(Clone, Debug)]
pub struct DicomSeries {
    /// The voxels (HU for rescaled CT) and geometry.
    pub volume: Volume,
    /// The series read.
    pub series: SeriesSummary,
    /// The files in volume order (index `k`; a multi-frame file once, at its
    /// first frame).
    pub files: Vec<PathBuf>,
    /// Files that were not used (not DICOM, or no image).
    pub skipped: Vec<SkippedFile>,
    /// Whether RescaleSlope / RescaleIntercept changed any value.
    pub rescaled: bool,
}

/// Reads the DICOM series in folder `dir` (sub-folders included).
pub fn read_dicom_dir(dir: impl AsRef<Path>, options: &DicomOptions) -> Result<DicomSeries> {
    let dir = dir.as_ref();
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(MedicalError::InvalidArgument(format!(
            "{}: no files in the folder",
            dir.display()
        )));
    }
    read_series(&files, options, &dir.display().to_string())
}

/// Reads the DICOM series made of `files` (other files among them are skipped).
pub fn read_dicom_files(files: &[PathBuf], options: &DicomOptions) -> Result<DicomSeries> {
    if files.is_empty() {
        return Err(MedicalError::InvalidArgument("no DICOM files given".into()));
    }
    read_series(files, options, "the files")
}

/// The image series in folder `dir`, and the files that hold none.
pub fn list_dicom_series(dir: impl AsRef<Path>) -> Result<(Vec<SeriesSummary>, Vec<SkippedFile>)> {
    let files = list_files(dir.as_ref())?;
    let (groups, skipped) = scan(&files)?;
    Ok((groups.values().map(|g| g.summary()).collect(), skipped))
}

/// Every regular file under `dir`, sorted, up to [`MAX_DIR_DEPTH`] levels deep.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|e| MedicalError::Io(e).with_path(dir))?;
        let mut entries = Vec::new();
        for e in rd {
            entries.push(e.map_err(|e| MedicalError::Io(e).with_path(dir))?.path());
        }
        entries.sort();
        for p in entries {
            let meta = std::fs::metadata(&p).map_err(|e| MedicalError::Io(e).with_path(&p))?;
            if meta.is_dir() {
                if depth < MAX_DIR_DEPTH {
                    walk(&p, depth + 1, out)?;
                }
            } else if meta.is_file() {
                if out.len() >= MAX_FILES {
                    return Err(MedicalError::InvalidArgument(format!(
                        "{}: more than {MAX_FILES} files",
                        dir.display()
                    )));
                }
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    Ok(out)
}

/// What one slice's header says.
#[derive(Clone, Debug)]
struct SliceInfo {
    path: PathBuf,
    rows: usize,
    cols: usize,
    /// Row spacing (between rows), column spacing (between columns), mm.
    pixel_spacing: [f64; 2],
    position: [f64; 3],
    /// Row cosine, column cosine.
    orientation: [[f64; 3]; 2],
    slope: f64,
    intercept: f64,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    thickness: Option<f64>,
    between: Option<f64>,
    gantry_tilt: Option<f64>,
    sop_uid: String,
    /// Size of the file, bytes.
    file_len: u64,
    /// Whether the pixel data is encapsulated (compressed).
    encapsulated: bool,
    /// Frame of the file this slice is (0 for a single-frame file).
    frame: u32,
    /// Frames in the file.
    frames_in_file: u32,
}

impl SliceInfo {
    /// The file, and the frame of a multi-frame file, for messages.
    fn label(&self) -> String {
        if self.frames_in_file > 1 {
            format!("{} (frame {})", self.path.display(), self.frame + 1)
        } else {
            self.path.display().to_string()
        }
    }

    /// Fails when the file cannot hold the images its header declares: the
    /// native pixels of all its frames must be in the file, compressed ones
    /// within [`MAX_COMPRESSION_RATIO`] of it.
    fn check_budget(&self) -> Result<()> {
        let frame_bytes = (self.rows as u64)
            .saturating_mul(self.cols as u64)
            .saturating_mul((self.bits_allocated as u64).div_ceil(8))
            .saturating_mul(u64::from(self.frames_in_file.max(1)));
        check_limit(frame_bytes)?;
        let budget = if self.encapsulated {
            self.file_len.saturating_mul(MAX_COMPRESSION_RATIO)
        } else {
            self.file_len
        };
        if frame_bytes > budget {
            return Err(MedicalError::format(
                FMT,
                format!(
                    "{} frame(s) of {}x{} pixels of {} bits cannot be held by a file of {} bytes",
                    self.frames_in_file, self.cols, self.rows, self.bits_allocated, self.file_len
                ),
            ));
        }
        Ok(())
    }
}

/// The files of one series.
#[derive(Default)]
struct Group {
    summary: Option<SeriesSummary>,
    slices: Vec<SliceInfo>,
    /// Files whose slices (frames) are in `slices`.
    files: usize,
    /// Image files of the series that cannot be used (reported when the
    /// series is read, so that another series can still be chosen).
    errors: Vec<MedicalError>,
}

impl Group {
    fn summary(&self) -> SeriesSummary {
        let mut s = self.summary.clone().unwrap_or(SeriesSummary {
            uid: String::new(),
            number: None,
            modality: String::new(),
            description: String::new(),
            files: 0,
        });
        s.files = self.files + self.errors.len();
        s
    }
}

/// Reads the headers of `files`: image slices grouped by series, and skips.
fn scan(files: &[PathBuf]) -> Result<(BTreeMap<String, Group>, Vec<SkippedFile>)> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut skipped = Vec::new();
    for path in files {
        let bytes = read_bounded(path)?;
        if !has_dicm_magic(&bytes) {
            skipped.push(SkippedFile {
                path: path.clone(),
                reason: "not a DICOM file".into(),
            });
            continue;
        }
        let obj = open_checked(&bytes).map_err(|e| e.with_path(path))?;
        if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
            let sop = text(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
            skipped.push(SkippedFile {
                path: path.clone(),
                reason: format!("no pixel data (SOP class {sop})"),
            });
            continue;
        }
        let uid = text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
        let info = slice_infos(&obj, path, bytes.len() as u64)
            .and_then(|i| i[0].check_budget().map(|_| i))
            .map_err(|e| e.with_path(path));
        let g = groups.entry(uid.clone()).or_default();
        if g.summary.is_none() {
            g.summary = Some(SeriesSummary {
                uid,
                number: text(&obj, tags::SERIES_NUMBER).and_then(|s| s.parse().ok()),
                modality: text(&obj, tags::MODALITY).unwrap_or_default(),
                description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
                files: 0,
            });
        }
        match info {
            Ok(info) => {
                g.slices.extend(info);
                g.files += 1;
            }
            Err(e) => g.errors.push(e),
        }
    }
    Ok((groups, skipped))
}

fn read_series(files: &[PathBuf], options: &DicomOptions, what: &str) -> Result<DicomSeries> {
    let tol = options.spacing_tolerance;
    if !(tol.is_finite() && tol > 0.0 && tol < 0.5) {
        return Err(MedicalError::InvalidArgument(format!(
            "spacing tolerance {tol} (must be in (0, 0.5))"
        )));
    }
    let (mut groups, skipped) = scan(files)?;
    let uid = match (&options.series_uid, groups.len()) {
        (_, 0) => {
            return Err(MedicalError::InvalidArgument(format!(
                "{what}: no DICOM image files ({} skipped{})",
                skipped.len(),
                skipped
                    .first()
                    .map(|s| format!(", e.g. {}: {}", s.path.display(), s.reason))
                    .unwrap_or_default()
            )))
        }
        (Some(want), _) => {
            if !groups.contains_key(want) {
                return Err(MedicalError::InvalidArgument(format!(
                    "{what}: no series {want}; found {}",
                    list(&groups)
                )));
            }
            want.clone()
        }
        (None, 1) => groups.keys().next().cloned().unwrap_or_default(),
        (None, n) => {
            return Err(MedicalError::InvalidArgument(format!(
                "{what} hold {n} DICOM series; choose one by SeriesInstanceUID: {}",
                list(&groups)
            )))
        }
    };
    let mut group = groups.remove(&uid).unwrap_or_default();
    if !group.errors.is_empty() {
        return Err(group.errors.swap_remove(0));
    }
    let series = group.summary();
    let (slices, geometry) = arrange(group.slices, tol)?;
    let (volume, rescaled) = decode_volume(&slices, geometry)?;
    // A multi-frame file once, where its first frame lies.
    let mut seen = std::collections::HashSet::new();
    let files: Vec<PathBuf> = slices
        .into_iter()
        .filter(|s| seen.insert(s.path.clone()))
        .map(|s| s.path)
        .collect();
    Ok(DicomSeries {
        volume,
        series,
        files,
        skipped,
        rescaled,
    })
}

fn list(groups: &BTreeMap<String, Group>) -> String {
    groups
        .values()
        .map(|g| g.summary().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn near(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// Checks the slices against each other, sorts them along the normal and
/// returns them with the volume geometry.
fn arrange(mut slices: Vec<SliceInfo>, tol: f64) -> Result<(Vec<SliceInfo>, Geometry)> {
    let first = slices[0].clone();
    let [row, col] = first.orientation;
    let normal = cross(row, col);
    let err = |s: &SliceInfo, reason: String| {
        let reason = if s.frames_in_file > 1 {
            format!("frame {}: {reason}", s.frame + 1)
        } else {
            reason
        };
        MedicalError::format(FMT, reason).with_path(&s.path)
    };
    for s in &slices {
        if (s.rows, s.cols) != (first.rows, first.cols) {
            return Err(err(
                s,
                format!(
                    "{}x{} pixels, but {} has {}x{} (inconsistent series)",
                    s.cols,
                    s.rows,
                    first.label(),
                    first.cols,
                    first.rows
                ),
            ));
        }
        if !(0..2).all(|i| {
            near(
                s.pixel_spacing[i],
                first.pixel_spacing[i],
                GEOMETRY_TOLERANCE,
            )
        }) {
            return Err(err(
                s,
                format!(
                    "PixelSpacing {:?} mm varies within the series ({} has {:?})",
                    s.pixel_spacing,
                    first.label(),
                    first.pixel_spacing
                ),
            ));
        }
        if !(0..2).all(|v| {
            (0..3).all(|c| {
                (s.orientation[v][c] - first.orientation[v][c]).abs() <= GEOMETRY_TOLERANCE
            })
        }) {
            return Err(err(
                s,
                format!(
                    "ImageOrientationPatient {:?} varies within the series ({} has {:?})",
                    s.orientation,
                    first.label(),
                    first.orientation
                ),
            ));
        }
    }
    slices.sort_by(|a, b| {
        dot(a.position, normal)
            .total_cmp(&dot(b.position, normal))
            .then_with(|| a.path.cmp(&b.path))
            .then(a.frame.cmp(&b.frame))
    });
    let n = slices.len();
    let z: Vec<f64> = slices.iter().map(|s| dot(s.position, normal)).collect();
    let spacing_k = if n == 1 {
        first
            .between
            .or(first.thickness)
            .filter(|v| *v > 0.0)
            .unwrap_or(1.0)
    } else {
        let gaps: Vec<f64> = z.windows(2).map(|w| w[1] - w[0]).collect();
        // Duplicates first: they would make the median meaningless.
        for (i, g) in gaps.iter().enumerate() {
            if *g <= 1e-3 {
                let same_uid =
                    slices[i].sop_uid == slices[i + 1].sop_uid && !slices[i].sop_uid.is_empty();
                return Err(err(
                    &slices[i + 1],
                    format!(
                        "duplicate slice: same position {:.4} mm along the normal as {}{}",
                        z[i],
                        slices[i].label(),
                        if same_uid {
                            " (same SOPInstanceUID)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        for (i, g) in gaps.iter().enumerate() {
            if (g - median).abs() <= tol * median {
                continue;
            }
            let k = (g / median).round();
            let (a, b) = (&slices[i], &slices[i + 1]);
            if k >= 2.0 && (g - k * median).abs() <= tol * median * k {
                return Err(err(
                    b,
                    format!(
                        "missing slice{}: {} slice{} between {} and this one (gap {g:.4} mm, spacing {median:.4} mm)",
                        if k > 2.0 { "s" } else { "" },
                        k - 1.0,
                        if k > 2.0 { "s" } else { "" },
                        a.label()
                    ),
                ));
            }
            return Err(err(
                b,
                format!(
                    "uneven slice spacing: {g:.4} mm from {}, the series' spacing is {median:.4} mm (tolerance {}%)",
                    a.label(),
                    tol * 100.0
                ),
            ));
        }
        // Gantry tilt: positions drifting within the slice plane.
        let step = median;
        for s in &slices[1..] {
            let d = sub(s.position, slices[0].position);
            let along = dot(d, normal);
            let off = [
                d[0] - along * normal[0],
                d[1] - along * normal[1],
                d[2] - along * normal[2],
            ];
            let off_len = dot(off, off).sqrt();
            if off_len > tol * step.max(along.abs() * 1e-2) {
                let tilt = s
                    .gantry_tilt
                    .filter(|t| *t != 0.0)
                    .map(|t| format!(", GantryDetectorTilt {t} deg"))
                    .unwrap_or_default();
                return Err(err(
                    s,
                    format!(
                        "gantry tilt: the slice is shifted {off_len:.3} mm within its plane relative to {} ({:.2} deg{tilt}); resample the series first",
                        slices[0].label(),
                        (off_len / along.abs()).atan().to_degrees()
                    ),
                ));
            }
        }
        (z[n - 1] - z[0]) / (n - 1) as f64
    };
    let spacing = [first.pixel_spacing[1], first.pixel_spacing[0], spacing_k];
    let geometry = Geometry {
        spacing,
        origin: slices[0].position,
        direction: [0, 1, 2].map(|r| [row[r], col[r], normal[r]]),
    };
    geometry
        .validate()
        .map_err(|e| err(&slices[0], format!("geometry: {e}")))?;
    Ok((slices, geometry))
}

/// The voxel type of the assembled volume.
fn output_type(slices: &[SliceInfo]) -> (DataType, bool) {
    let rescaled = slices.iter().any(|s| s.slope != 1.0 || s.intercept != 0.0);
    let stored = |s: &SliceInfo| match (s.bits_allocated, s.signed) {
        (8, false) => DataType::U8,
        (8, true) => DataType::I8,
        (16, false) => DataType::U16,
        (16, true) => DataType::I16,
        (_, false) => DataType::U32,
        (_, true) => DataType::I32,
    };
    if !rescaled {
        let t = stored(&slices[0]);
        if slices.iter().all(|s| stored(s) == t) {
            return (t, false);
        }
        return (DataType::I32, false);
    }
    let integral = slices
        .iter()
        .all(|s| s.slope.fract() == 0.0 && s.intercept.fract() == 0.0);
    if !integral {
        return (DataType::F32, true);
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in slices {
        let bits = s.bits_stored.clamp(1, 32) as i32;
        let (smin, smax) = if s.signed {
            (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
        } else {
            (0.0, 2f64.powi(bits) - 1.0)
        };
        for v in [smin * s.slope + s.intercept, smax * s.slope + s.intercept] {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let t = if lo >= i16::MIN as f64 && hi <= i16::MAX as f64 {
        DataType::I16
    } else if lo >= i32::MIN as f64 && hi <= i32::MAX as f64 {
        DataType::I32
    } else {
        DataType::F32
    };
    (t, true)
}

/// Decodes every slice (in order) into one volume; each file is read and
/// decoded once, its frames written to their planes.
fn decode_volume(slices: &[SliceInfo], geometry: Geometry) -> Result<(Volume, bool)> {
    let (rows, cols) = (slices[0].rows, slices[0].cols);
    let plane = rows * cols;
    let dims = [cols, rows, slices.len()];
    let (dtype, rescaled) = output_type(slices);
    let total = (plane as u64)
        .checked_mul(slices.len() as u64)
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .unwrap_or(u64::MAX);
    check_limit(total)?;
    let mut data = VoxelData::zeros(dtype, plane * slices.len());
    // The planes of each file, files in the order of their first plane.
    let mut by_file: Vec<(&Path, Vec<usize>)> = Vec::new();
    let mut index: std::collections::HashMap<&Path, usize> = Default::default();
    for (k, s) in slices.iter().enumerate() {
        let i = *index.entry(&s.path).or_insert_with(|| {
            by_file.push((&s.path, Vec::new()));
            by_file.len() - 1
        });
        by_file[i].1.push(k);
    }
    for (path, planes) in by_file {
        decode_frames(path, slices, &planes, |k, values| {
            let s = &slices[k];
            let dst = k * plane..(k + 1) * plane;
            macro_rules! fill {
                ($v:expr, $t:ty) => {
                    for (d, x) in $v[dst].iter_mut().zip(values) {
                        *d = (x * s.slope + s.intercept) as $t;
                    }
                };
            }
            match &mut data {
                VoxelData::U8(v) => fill!(v, u8),
                VoxelData::I8(v) => fill!(v, i8),
                VoxelData::U16(v) => fill!(v, u16),
                VoxelData::I16(v) => fill!(v, i16),
                VoxelData::U32(v) => fill!(v, u32),
                VoxelData::I32(v) => fill!(v, i32),
                VoxelData::F32(v) => fill!(v, f32),
                VoxelData::F64(v) => fill!(v, f64),
            }
        })
        .map_err(|e| e.with_path(path))?;
    }
    let volume = Volume::new(dims, geometry, data)?;
    Ok((volume, rescaled))
}

/// Decodes the frames of file `path` that are `slices[k]` for each `k` of
/// `planes`, and gives each one's stored values (before rescaling, row by
/// row) to `put(k, values)`.
fn decode_frames(
    path: &Path,
    slices: &[SliceInfo],
    planes: &[usize],
    mut put: impl FnMut(usize, &[f64]),
) -> Result<()> {
    let bytes = read_bounded(path)?;
    let obj = open_checked(&bytes)?;
    // The file may have changed since the headers were read.
    let now = slice_infos(&obj, path, bytes.len() as u64)?;
    let first = &slices[planes[0]];
    let changed = now.len() != first.frames_in_file as usize
        || (now[0].rows, now[0].cols, now[0].bits_allocated)
            != (first.rows, first.cols, first.bits_allocated);
    if changed {
        return Err(MedicalError::format(
            FMT,
            "the file changed while the series was read",
        ));
    }
    now[0].check_budget()?;
    if let Ok(pd) = obj.element(tags::PIXEL_DATA) {
        if let Some(fragments) = pd.value().fragments() {
            let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
            if ts.starts_with("1.2.840.10008.1.2.4.5") || ts.starts_with("1.2.840.10008.1.2.4.7") {
                if now.len() == 1 {
                    let stream: Vec<u8> = fragments.iter().flatten().copied().collect();
                    check_jpeg_size(&stream, first.rows, first.cols)?;
                } else {
                    // One stream per frame, each starting a fragment.
                    let starts: Vec<&Vec<u8>> = fragments
                        .iter()
                        .filter(|f| f.starts_with(&[0xFF, 0xD8]))
                        .collect();
                    if starts.len() != now.len() {
                        return Err(MedicalError::format(
                            FMT,
                            format!("{} JPEG streams for {} frames", starts.len(), now.len()),
                        ));
                    }
                    for f in starts {
                        check_jpeg_size(f, first.rows, first.cols)?;
                    }
                }
            }
        }
    }
    let plane = first.rows * first.cols;
    guard(|| {
        let px = obj.decode_pixel_data().map_err(|e| dicom_error(&e))?;
        let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        for &k in planes {
            let frame = slices[k].frame;
            let values = px
                .to_vec_frame_with_options::<f64>(frame, &opts)
                .map_err(|e| dicom_error(&e))?;
            if values.len() != plane {
                return Err(MedicalError::format(
                    FMT,
                    format!(
                        "frame {}: decoded {} pixels, expected {plane}",
                        frame + 1,
                        values.len()
                    ),
                ));
            }
            put(k, &values);
        }
        Ok(())
    })
}

/// Checks that a JPEG stream's frame header (SOFn) declares at most the
/// DICOM image size and one component: the JPEG decoder sizes its buffers
/// from that header, not from Rows and Columns. Hand-written: neither
/// `jpeg-decoder` nor the registry adapter bounds it.
fn check_jpeg_size(stream: &[u8], rows: usize, cols: usize) -> Result<()> {
    let bad = |r: String| MedicalError::format(FMT, r);
    if !stream.starts_with(&[0xFF, 0xD8]) {
        return Err(bad("compressed frame is not a JPEG stream".into()));
    }
    let mut pos = 2;
    while pos + 4 <= stream.len() {
        if stream[pos] != 0xFF {
            return Err(bad(format!("JPEG marker expected at byte {pos}")));
        }
        let marker = stream[pos + 1];
        if marker == 0xFF {
            pos += 1; // fill byte
            continue;
        }
        let len = u16::from_be_bytes([stream[pos + 2], stream[pos + 3]]) as usize;
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let seg = stream
                .get(pos + 4..pos + 2 + len)
                .filter(|s| s.len() >= 6)
                .ok_or_else(|| bad("truncated JPEG frame header".into()))?;
            let (h, w, nf) = (
                u16::from_be_bytes([seg[1], seg[2]]) as usize,
                u16::from_be_bytes([seg[3], seg[4]]) as usize,
                seg[5],
            );
            if h == 0 || h > rows || w > cols || nf != 1 {
                return Err(bad(format!(
                    "JPEG frame of {w}x{h} pixels x {nf} components in an image of {cols}x{rows}"
                )));
            }
            return Ok(());
        }
        if marker == 0xD9 || marker == 0xDA {
            break;
        }
        pos += 2 + len;
    }
    Err(bad("JPEG stream without a frame header".into()))
}

/// Runs third-party decoding, turning a panic into an error.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(MedicalError::format(
            FMT,
            "the DICOM decoder failed on this file",
        ))
    })
}

/// An error of the dicom-rs crates with its causes, on one line.
fn dicom_error(e: &dyn std::error::Error) -> MedicalError {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    MedicalError::format(FMT, msg.replace('\n', " "))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| MedicalError::Io(e).with_path(path))?;
    if !meta.is_file() {
        return Err(MedicalError::InvalidArgument("not a regular file".into()).with_path(path));
    }
    check_limit(meta.len()).map_err(|e| e.with_path(path))?;
    codec::read_file(path)
}

/// Parses a Part-10 file after checking its declared lengths.
fn open_checked(bytes: &[u8]) -> Result<DefaultDicomObject> {
    check_lengths(bytes).map_err(|reason| MedicalError::format(FMT, reason))?;
    guard(|| {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .from_reader(bytes)
            .map_err(|e| dicom_error(&e))
    })
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let s = e.to_str().ok()?;
    Some(
        s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string(),
    )
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let v = e.to_multi_float64().ok()?;
    v.iter().all(|x| x.is_finite()).then_some(v)
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats(obj, tag).and_then(|v| v.first().copied())
}

fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.element_opt(tag).ok().flatten()?.to_int::<u32>().ok()
}

/// The first item of sequence `seq` in `obj`.
fn first_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(seq)
        .ok()
        .flatten()?
        .value()
        .items()?
        .first()
}

/// Where a frame's attributes are: its item of the per-frame functional
/// groups, then the shared functional groups (each attribute inside its
/// functional-group macro sequence), then the top level of the file.
struct FrameAttrs<'a> {
    per_frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    top: &'a InMemDicomObject,
}

impl FrameAttrs<'_> {
    /// Attribute `tag` of macro sequence `group` as numbers.
    fn floats(&self, group: Tag, tag: Tag) -> Option<Vec<f64>> {
        [self.per_frame, self.shared]
            .into_iter()
            .flatten()
            .find_map(|g| first_item(g, group).and_then(|m| floats(m, tag)))
            .or_else(|| floats(self.top, tag))
    }

    fn float(&self, group: Tag, tag: Tag) -> Option<f64> {
        self.floats(group, tag).and_then(|v| v.first().copied())
    }
}

/// Most frames accepted in one multi-frame file.
const MAX_FRAMES: u32 = 100_000;

/// The slices of one file: one for a single-frame image, one per frame for a
/// multi-frame one (see the module notes).
fn slice_infos(obj: &InMemDicomObject, path: &Path, file_len: u64) -> Result<Vec<SliceInfo>> {
    let bad = |r: String| MedicalError::format(FMT, r);
    let frames = text(obj, tags::NUMBER_OF_FRAMES)
        .map(|s| {
            s.parse::<u32>()
                .ok()
                .filter(|&n| (1..=MAX_FRAMES).contains(&n))
                .ok_or_else(|| bad(format!("NumberOfFrames `{s}` (1..={MAX_FRAMES})")))
        })
        .transpose()?
        .unwrap_or(1);
    let per_frame: Option<&[InMemDicomObject]> = obj
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.value().items());
    if frames > 1 && per_frame.map(<[_]>::len) != Some(frames as usize) {
        return Err(MedicalError::unsupported(
            FMT,
            format!(
                "multi-frame image ({frames} frames) without a PerFrameFunctionalGroupsSequence item per frame; only single-frame series and enhanced (functional-group) multi-frame images"
            ),
        ));
    }
    // The image attributes are the file's; only the geometry and the
    // rescale are per frame.
    let image = image_attrs(obj, path, file_len, frames)?;
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    (0..frames)
        .map(|f| {
            let attrs = FrameAttrs {
                per_frame: per_frame.and_then(|items| items.get(f as usize)),
                shared,
                top: obj,
            };
            frame_info(&image, &attrs, f).map_err(|e| match e {
                // Which frame, when there are several.
                MedicalError::Format { format, reason } if frames > 1 => MedicalError::Format {
                    format,
                    reason: format!("frame {}: {reason}", f + 1),
                },
                e => e,
            })
        })
        .collect()
}

/// The attributes of a file's image that all its frames share.
struct ImageAttrs {
    path: PathBuf,
    rows: usize,
    cols: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    gantry_tilt: Option<f64>,
    sop_uid: String,
    file_len: u64,
    encapsulated: bool,
    frames: u32,
}

/// Reads and checks the image attributes of `obj` (a file of `frames`
/// frames at `path`, `file_len` bytes).
fn image_attrs(
    obj: &InMemDicomObject,
    path: &Path,
    file_len: u64,
    frames: u32,
) -> Result<ImageAttrs> {
    let bad = |r: String| MedicalError::format(FMT, r);
    let rows = uint(obj, tags::ROWS).ok_or_else(|| bad("missing Rows".into()))? as usize;
    let cols = uint(obj, tags::COLUMNS).ok_or_else(|| bad("missing Columns".into()))? as usize;
    if rows == 0 || cols == 0 {
        return Err(bad(format!("image of {cols}x{rows} pixels")));
    }
    let spp = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if spp != 1 {
        return Err(MedicalError::unsupported(
            FMT,
            format!("{spp} samples per pixel (colour image); only greyscale CT/MR/PET"),
        ));
    }
    let bits_allocated = uint(obj, tags::BITS_ALLOCATED).unwrap_or(16) as u16;
    if !matches!(bits_allocated, 8 | 16 | 32) {
        return Err(MedicalError::unsupported(
            FMT,
            format!("BitsAllocated {bits_allocated}"),
        ));
    }
    Ok(ImageAttrs {
        path: path.to_path_buf(),
        rows,
        cols,
        bits_allocated,
        bits_stored: uint(obj, tags::BITS_STORED).unwrap_or(bits_allocated as u32) as u16,
        signed: uint(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
        gantry_tilt: float(obj, tags::GANTRY_DETECTOR_TILT),
        sop_uid: text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        file_len,
        encapsulated: matches!(
            obj.element(tags::PIXEL_DATA).map(|e| e.value()),
            Ok(dicom_core::DicomValue::PixelSequence(_))
        ),
        frames,
    })
}

/// Slice `frame` of `image`: its geometry and rescale from `attrs`.
fn frame_info(image: &ImageAttrs, attrs: &FrameAttrs<'_>, frame: u32) -> Result<SliceInfo> {
    let bad = |r: String| MedicalError::format(FMT, r);
    let measures = tags::PIXEL_MEASURES_SEQUENCE;
    let ps = attrs
        .floats(measures, tags::PIXEL_SPACING)
        .or_else(|| floats(attrs.top, tags::IMAGER_PIXEL_SPACING))
        .ok_or_else(|| bad("missing PixelSpacing".into()))?;
    let pixel_spacing = match ps.as_slice() {
        [r, c, ..] if *r > 0.0 && *c > 0.0 => [*r, *c],
        _ => return Err(bad(format!("PixelSpacing {ps:?}"))),
    };
    let ipp = attrs
        .floats(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
        .ok_or_else(|| bad("missing ImagePositionPatient (not a cross-sectional image)".into()))?;
    let position: [f64; 3] = ipp
        .get(..3)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad(format!("ImagePositionPatient {ipp:?}")))?;
    let iop = attrs
        .floats(
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
        .ok_or_else(|| bad("missing ImageOrientationPatient".into()))?;
    if iop.len() < 6 {
        return Err(bad(format!("ImageOrientationPatient {iop:?}")));
    }
    let unit = |v: &[f64]| -> Option<[f64; 3]> {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        (n > 0.5 && n < 1.5).then(|| [v[0] / n, v[1] / n, v[2] / n])
    };
    let (r, c) = match (unit(&iop[..3]), unit(&iop[3..6])) {
        (Some(r), Some(c)) if dot(r, c).abs() < 1e-3 => (r, c),
        _ => {
            return Err(bad(format!(
                "ImageOrientationPatient {iop:?} is not two orthogonal unit vectors"
            )))
        }
    };
    let transform = tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE;
    let slope = attrs
        .float(transform, tags::RESCALE_SLOPE)
        .filter(|s| *s != 0.0)
        .unwrap_or(1.0);
    let intercept = attrs
        .float(transform, tags::RESCALE_INTERCEPT)
        .unwrap_or(0.0);
    Ok(SliceInfo {
        path: image.path.clone(),
        rows: image.rows,
        cols: image.cols,
        pixel_spacing,
        position,
        orientation: [r, c],
        slope,
        intercept,
        bits_allocated: image.bits_allocated,
        bits_stored: image.bits_stored,
        signed: image.signed,
        thickness: attrs.float(measures, tags::SLICE_THICKNESS),
        between: attrs.float(measures, tags::SPACING_BETWEEN_SLICES),
        gantry_tilt: image.gantry_tilt,
        sop_uid: image.sop_uid.clone(),
        file_len: image.file_len,
        encapsulated: image.encapsulated,
        frame,
        frames_in_file: image.frames,
    })
}
