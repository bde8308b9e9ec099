//! DICOM series against SimpleITK's `ImageSeriesReader`.
//!
//! The series are written by `scripts/dicom_reference/make_series.py` (pydicom)
//! and read by SimpleITK there; here the Rust reader must give the same size,
//! origin, spacing and direction (within 1e-4 mm) and the same voxels.
//!
//! * The tiny committed set `tests/fixtures/dicom` runs everywhere.
//! * The synthetic series (oblique CT, fractional-rescale MR, sagittal 8-bit
//!   implicit VR, RLE, deflated, JPEG lossless written by GDCM, the oblique
//!   CT as one enhanced multi-frame file, two series in one folder, eight
//!   broken series)
//!   and the series made from the shared CT NIfTI are generated at test time
//!   into a temporary folder with the Python named by `MEDSAM2_DICOM_PYTHON`
//!   (`.ci/run` installs it). Without it the tests print `skipped: ...`, except
//!   under CI (`CI` set), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use medsam2_core::medical::{self, dicom, MedicalError, Volume};

const TOL_MM: f64 = 1e-4;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    root().join("scripts/dicom_reference/make_series.py")
}

/// The reference Python, or `None` (skip) outside CI.
fn python(test: &str) -> Option<PathBuf> {
    match std::env::var_os("MEDSAM2_DICOM_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: MEDSAM2_DICOM_PYTHON is not set under CI (.ci/run installs it)")
        }
        None => {
            eprintln!(
                "skipped: {test}: set MEDSAM2_DICOM_PYTHON to a Python with scripts/dicom_reference/requirements.txt"
            );
            None
        }
    }
}

fn run_script(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(script())
        .args(args)
        .output()
        .expect("run the reference script");
    assert!(
        out.status.success(),
        "make_series.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsam2_dicom_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The synthetic series, generated once per test run.
fn synthetic(py: &Path) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = temp_dir("synthetic");
        run_script(py, &["synthetic", d.to_str().unwrap()]);
        d
    })
}

/// SimpleITK's reading of a series: geometry and voxels.
struct Reference {
    size: [usize; 3],
    spacing: [f64; 3],
    origin: [f64; 3],
    direction: [[f64; 3]; 3],
    voxels: Vec<f64>,
    files: Vec<String>,
    pixel_type: String,
}

fn load_reference(prefix: &Path) -> Reference {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(prefix.with_extension("json")).unwrap()).unwrap();
    let v3 = |k: &str| -> [f64; 3] {
        let a = json[k].as_array().unwrap();
        [0, 1, 2].map(|i| a[i].as_f64().unwrap())
    };
    let d = json["direction"].as_array().unwrap();
    let raw = std::fs::read(prefix.with_extension("raw")).unwrap();
    Reference {
        size: v3("size").map(|x| x as usize),
        spacing: v3("spacing"),
        origin: v3("origin"),
        direction: [0, 1, 2].map(|r| [0, 1, 2].map(|c| d[3 * r + c].as_f64().unwrap())),
        voxels: raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        pixel_type: json["pixel_type"].as_str().unwrap().to_string(),
        files: json["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect(),
    }
}

/// Asserts that `v` equals SimpleITK's reading.
fn assert_matches(v: &Volume, r: &Reference, what: &str) {
    assert_eq!(v.dims(), r.size, "{what}: size");
    let g = v.geometry();
    for a in 0..3 {
        assert!(
            (g.spacing[a] - r.spacing[a]).abs() <= TOL_MM,
            "{what}: spacing {:?} vs SimpleITK {:?}",
            g.spacing,
            r.spacing
        );
        assert!(
            (g.origin[a] - r.origin[a]).abs() <= TOL_MM,
            "{what}: origin {:?} vs SimpleITK {:?}",
            g.origin,
            r.origin
        );
        for c in 0..3 {
            assert!(
                (g.direction[a][c] - r.direction[a][c]).abs() <= TOL_MM,
                "{what}: direction {:?} vs SimpleITK {:?}",
                g.direction,
                r.direction
            );
        }
    }
    // The voxel type GDCM chooses; fractional rescaling gives f32 here (f64 in ITK).
    let want = match r.pixel_type.as_str() {
        "8-bit unsigned integer" => "u8",
        "8-bit signed integer" => "i8",
        "16-bit unsigned integer" => "u16",
        "16-bit signed integer" => "i16",
        "32-bit unsigned integer" => "u32",
        "32-bit signed integer" => "i32",
        "32-bit float" | "64-bit float" => "f32",
        other => panic!("{what}: pixel type {other}"),
    };
    assert_eq!(
        v.data_type().name(),
        want,
        "{what}: voxel type vs SimpleITK {}",
        r.pixel_type
    );
    let ours = v.data().to_f64_vec();
    assert_eq!(ours.len(), r.voxels.len(), "{what}: voxel count");
    let mut worst = 0.0f64;
    for (a, b) in ours.iter().zip(&r.voxels) {
        worst = worst.max((a - b).abs() / b.abs().max(1.0));
    }
    assert!(worst <= 1e-6, "{what}: voxels differ (max rel {worst})");
}

fn file_names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn committed_tiny_series_matches_simpleitk() {
    let dir = root().join("tests/fixtures/dicom");
    let r = load_reference(&dir.join("tiny_ct_ref"));
    let s = dicom::read_dicom_dir(dir.join("tiny_ct"), &Default::default()).unwrap();
    assert_matches(&s.volume, &r, "tiny_ct");
    assert_eq!(file_names(&s.files), r.files, "slice order");
    assert!(s.rescaled, "CT in HU");
    assert_eq!(s.skipped.len(), 1, "notes.txt is skipped: {:?}", s.skipped);
    assert_eq!(s.series.files, 4);
    // read_volume of a folder is the same volume.
    let v = medical::read_volume(dir.join("tiny_ct")).unwrap();
    assert_eq!(v, s.volume);
    // A list of files, given in any order.
    let mut files = s.files.clone();
    files.reverse();
    let s2 = dicom::read_dicom_files(&files, &Default::default()).unwrap();
    assert_eq!(s2.volume, s.volume);
    // convert DIR out.nii.gz keeps voxels and geometry.
    let out = temp_dir("convert").join("tiny.nii.gz");
    medical::convert(dir.join("tiny_ct"), &out, medical::NPZ_IMAGE_KEY).unwrap();
    let back = medical::read_volume(&out).unwrap();
    assert_eq!(back.data(), s.volume.data());
    assert!(back.geometry().approx_eq(s.volume.geometry(), 1e-4));
}

#[test]
fn synthetic_series_match_simpleitk() {
    let Some(py) = python("synthetic_series_match_simpleitk") else {
        return;
    };
    let dir = synthetic(&py);
    for name in [
        "ct_oblique",
        "mr_fractional",
        "sagittal_u8_implicit",
        "ct_rle",
        "ct_deflated",
        "ct_jpeg_lossless",
    ] {
        let r = load_reference(&dir.join("ref").join(name));
        let s = dicom::read_dicom_dir(dir.join(name), &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_matches(&s.volume, &r, name);
        assert_eq!(file_names(&s.files), r.files, "{name}: slice order");
        println!(
            "{name}: {:?} {} voxels, spacing {:?}, skipped {}",
            s.volume.dims(),
            s.volume.data_type().name(),
            s.volume.geometry().spacing,
            s.skipped.len()
        );
    }
    // The oblique CT as one Enhanced CT file (frames stored out of z order,
    // geometry and rescale in functional groups): the same volume as
    // SimpleITK reads from the single-frame series.
    let r = load_reference(&dir.join("ref/ct_oblique"));
    let s = dicom::read_dicom_dir(dir.join("ct_enhanced"), &Default::default())
        .unwrap_or_else(|e| panic!("ct_enhanced: {e}"));
    assert_matches(&s.volume, &r, "ct_enhanced");
    assert_eq!(file_names(&s.files), vec!["enhanced.dcm".to_string()]);
    assert_eq!(s.series.files, 1, "one file, twelve frames");
    println!(
        "ct_enhanced: {:?} {} voxels, spacing {:?}",
        s.volume.dims(),
        s.volume.data_type().name(),
        s.volume.geometry().spacing
    );
    let s = dicom::read_dicom_dir(dir.join("ct_oblique"), &Default::default()).unwrap();
    let mut reasons: Vec<String> = s.skipped.iter().map(|k| k.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "README.txt and a report without pixels");
    assert!(reasons[0].starts_with("no pixel data"), "{reasons:?}");
    assert_eq!(reasons[1], "not a DICOM file");
    let mr = dicom::read_dicom_dir(dir.join("mr_fractional"), &Default::default()).unwrap();
    assert_eq!(mr.volume.data_type(), medical::DataType::F32);
}

#[test]
fn several_series_are_listed_and_one_can_be_chosen() {
    let Some(py) = python("several_series_are_listed_and_one_can_be_chosen") else {
        return;
    };
    let dir = synthetic(&py).join("two_series");
    let uid30 = "1.2.826.0.1.3680043.10.1422.30.1";
    let uid31 = "1.2.826.0.1.3680043.10.1422.31.1";
    let e = dicom::read_dicom_dir(&dir, &Default::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("3 DICOM series"), "{msg}");
    assert!(msg.contains(uid30) && msg.contains(uid31), "{msg}");
    assert!(msg.contains("4 files") && msg.contains("5 files"), "{msg}");
    let (list, _) = dicom::list_dicom_series(&dir).unwrap();
    assert_eq!(list.len(), 3);
    // The unusable series is an error only when chosen.
    let c = dicom::DicomOptions {
        series_uid: Some("1.2.826.0.1.3680043.10.1422.32.1".into()),
        ..Default::default()
    };
    let msg = dicom::read_dicom_dir(&dir, &c).unwrap_err().to_string();
    assert!(
        msg.contains("c0.dcm") && msg.contains("missing ImagePositionPatient"),
        "{msg}"
    );
    let opts = dicom::DicomOptions {
        series_uid: Some(uid31.into()),
        ..Default::default()
    };
    let s = dicom::read_dicom_dir(&dir, &opts).unwrap();
    let r = load_reference(&synthetic(&py).join("ref/two_series_31"));
    assert_matches(&s.volume, &r, "two_series 31");
    let bad = dicom::DicomOptions {
        series_uid: Some("1.2.3".into()),
        ..Default::default()
    };
    let msg = dicom::read_dicom_dir(&dir, &bad).unwrap_err().to_string();
    assert!(
        msg.contains("no series 1.2.3") && msg.contains(uid30),
        "{msg}"
    );
}

#[test]
fn broken_series_give_their_errors() {
    let Some(py) = python("broken_series_give_their_errors") else {
        return;
    };
    let dir = synthetic(&py).join("broken");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("broken.json")).unwrap()).unwrap();
    let cases = cases.as_object().unwrap();
    assert_eq!(cases.len(), 8);
    for (name, case) in cases {
        let file = case["file"].as_str().unwrap();
        let want = case["error"].as_str().unwrap();
        let e = dicom::read_dicom_dir(dir.join(name), &Default::default())
            .err()
            .unwrap_or_else(|| panic!("{name}: read without error"));
        let msg = e.to_string();
        println!("{name}: {msg}");
        assert!(matches!(e, MedicalError::File { .. }), "{name}: {msg}");
        assert!(
            msg.contains(file),
            "{name}: error does not name {file}: {msg}"
        );
        assert!(msg.contains(want), "{name}: expected \"{want}\": {msg}");
        assert!(!msg.contains('\n'), "{name}: one line");
    }
    // A looser tolerance accepts the uneven series, a tighter one keeps rejecting it.
    let loose = dicom::DicomOptions {
        spacing_tolerance: 0.4,
        ..Default::default()
    };
    assert!(dicom::read_dicom_dir(dir.join("uneven_spacing"), &loose).is_ok());
}

#[test]
fn shared_ct_as_dicom_matches_simpleitk() {
    let data = std::env::var_os("MEDSAM2_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/ct-lesion"));
    let nifti = data.join("nifti/CT_Lesion_000002_03_01_035-047_img.nii.gz");
    if !nifti.exists() {
        eprintln!("skipped: shared CT NIfTI not found at {}", nifti.display());
        return;
    }
    let Some(py) = python("shared_ct_as_dicom_matches_simpleitk") else {
        return;
    };
    let tmp = temp_dir("shared_ct");
    let series = tmp.join("series");
    run_script(
        &py,
        &[
            "from-nifti",
            nifti.to_str().unwrap(),
            series.to_str().unwrap(),
        ],
    );
    let s = dicom::read_dicom_dir(&series, &Default::default()).unwrap();
    let r = load_reference(&tmp.join("series_ref"));
    assert_matches(&s.volume, &r, "shared CT");
    // The HU volume is the NIfTI's voxels (stored + 1024, intercept -1024).
    let original = medical::read_volume(&nifti).unwrap();
    assert_eq!(s.volume.dims(), original.dims());
    assert_eq!(s.volume.data().to_f64_vec(), original.data().to_f64_vec());
    assert!(s.volume.geometry().approx_eq(original.geometry(), TOL_MM));
    let _ = std::fs::remove_dir_all(&tmp);
}

// --- 3D Slicer segmentations and NIfTI-2 against pynrrd and nibabel ---------

use medical::seg_nrrd::{self, Segment, Segmentation};
use medical::{Geometry, VoxelData};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn seg_nrrd_written_here_is_read_by_pynrrd_with_slicer_keys() {
    let Some(py) = python("seg_nrrd_written_here_is_read_by_pynrrd_with_slicer_keys") else {
        return;
    };
    let g = Geometry {
        spacing: [0.5, 0.75, 2.0],
        origin: [-10.0, 5.0, 30.0],
        direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    let n = 6 * 5 * 4;
    let l0 = Volume::new(
        [6, 5, 4],
        g,
        VoxelData::U8((0..n).map(|i| (i % 7 == 0) as u8).collect()),
    )
    .unwrap();
    let l1 = Volume::new(
        [6, 5, 4],
        g,
        VoxelData::U8((0..n).map(|i| 2 * (i % 5 == 0) as u8).collect()),
    )
    .unwrap();
    let seg = Segmentation {
        layers: vec![l0, l1],
        segments: vec![
            Segment::new("Segment_1", "liver", [0.9, 0.6, 0.4], 0, 1),
            Segment::new("Segment_2", "tumour", [0.2, 0.8, 0.3], 1, 2),
        ],
        fields: Vec::new(),
    };
    let path = temp_dir("seg_out").join("two_layers.seg.nrrd");
    seg_nrrd::write_seg_nrrd(&path, &seg).unwrap();
    let r = json(&run_script(&py, &["check-seg", path.to_str().unwrap()]));
    assert_eq!(r["shape"], serde_json::json!([2, 6, 5, 4]));
    let h = &r["header"];
    assert_eq!(
        h["kinds"],
        serde_json::json!(["list", "domain", "domain", "domain"])
    );
    assert_eq!(h["space"], "left-posterior-superior");
    assert_eq!(h["encoding"], "gzip");
    assert_eq!(
        h["space directions"],
        serde_json::json!([
            [null, null, null],
            [0.5, 0.0, 0.0],
            [0.0, 0.75, 0.0],
            [0.0, 0.0, 2.0]
        ])
    );
    for key in [
        "Segmentation_MasterRepresentation",
        "Segmentation_ContainedRepresentationNames",
        "Segmentation_ReferenceImageExtentOffset",
    ] {
        assert!(h.get(key).is_some(), "missing {key}: {h}");
    }
    for i in 0..2 {
        for key in [
            "ID",
            "Name",
            "NameAutoGenerated",
            "Color",
            "ColorAutoGenerated",
            "Layer",
            "LabelValue",
            "Extent",
            "Tags",
        ] {
            assert!(
                h.get(format!("Segment{i}_{key}")).is_some(),
                "missing Segment{i}_{key}: {h}"
            );
        }
    }
    assert_eq!(h["Segment1_Name"], "tumour");
    assert_eq!(h["Segment1_Layer"], "1");
    assert_eq!(h["Segment1_LabelValue"], "2");
    assert_eq!(h["Segment0_Color"], "0.9 0.6 0.4");
    let want: u64 = (0..n)
        .map(|i| (i % 7 == 0) as u64 + 2 * (i % 5 == 0) as u64)
        .sum();
    assert_eq!(r["sum"].as_u64(), Some(want));
    // And back.
    let back = seg_nrrd::read_seg_nrrd(&path).unwrap();
    assert_eq!(back.layers, seg.layers);
    assert_eq!(back.segments[1].name, "tumour");
}

#[test]
fn slicer_style_seg_nrrd_from_pynrrd_reads_with_segments_and_layers() {
    let Some(py) = python("slicer_style_seg_nrrd_from_pynrrd_reads_with_segments_and_layers")
    else {
        return;
    };
    let path = temp_dir("seg_in").join("slicer.seg.nrrd");
    run_script(&py, &["make-seg", path.to_str().unwrap()]);
    let seg = seg_nrrd::read_seg_nrrd(&path).unwrap();
    assert_eq!(seg.layers.len(), 2);
    assert_eq!(seg.layers[0].dims(), [6, 5, 4]);
    let g = seg.layers[0].geometry();
    assert_eq!(g.spacing, [0.5, 0.75, 2.0]);
    assert_eq!(g.origin, [-10.0, 5.0, 30.0]);
    let names: Vec<&str> = seg.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["liver", "tumour", "vessel"]);
    assert_eq!(
        seg.segments.iter().map(|s| s.layer).collect::<Vec<_>>(),
        [0, 1, 0]
    );
    assert_eq!(
        seg.segments
            .iter()
            .map(|s| s.label_value)
            .collect::<Vec<_>>(),
        [1, 1, 2]
    );
    assert_eq!(seg.segments[1].color, [0.2, 0.8, 0.3]);
    let count = |i: usize| seg.mask(i).unwrap().iter().filter(|m| **m).count();
    assert_eq!((count(0), count(1), count(2)), (12, 18, 1));
    let overlap = seg
        .mask(0)
        .unwrap()
        .iter()
        .zip(seg.mask(1).unwrap())
        .filter(|(a, b)| **a && *b)
        .count();
    assert_eq!(overlap, 4, "liver and tumour overlap in 4 voxels");
    for i in 0..3 {
        assert_eq!(
            seg.segments[i].extent,
            seg.extent(i).unwrap(),
            "segment {i} extent"
        );
    }
    assert!(seg.segments[0].tags.contains("Segmentation.Status"));
    assert!(seg
        .fields
        .iter()
        .any(|(k, v)| k == "Segmentation_MasterRepresentation" && v == "Binary labelmap"));
}

/// LPS geometry of a nibabel RAS affine.
fn geometry_of_ras(a: &serde_json::Value) -> Geometry {
    let m = |r: usize, c: usize| a[r][c].as_f64().unwrap();
    let sign = [-1.0, -1.0, 1.0];
    let cols = [0, 1, 2].map(|c| [0, 1, 2].map(|r| sign[r] * m(r, c)));
    Geometry::from_step_vectors(cols, [0, 1, 2].map(|r| sign[r] * m(r, 3))).unwrap()
}

#[test]
fn nifti2_matches_nibabel_both_ways() {
    let Some(py) = python("nifti2_matches_nibabel_both_ways") else {
        return;
    };
    let dir = temp_dir("nifti2");
    let theirs = dir.join("nibabel.nii");
    let r = json(&run_script(&py, &["nifti2", theirs.to_str().unwrap()]));
    let v = medical::read_volume(&theirs).unwrap();
    assert_eq!(v.dims(), [7, 6, 5]);
    let want: Vec<f64> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.data().to_f64_vec(), want);
    assert!(
        v.geometry().approx_eq(&geometry_of_ras(&r["affine"]), 1e-9),
        "{:?}",
        v.geometry()
    );

    let ours = dir.join("ours.nii.gz");
    medical::nifti2::write_nifti2(&ours, &v).unwrap();
    let b = json(&run_script(&py, &["read-nifti2", ours.to_str().unwrap()]));
    assert_eq!(b["class"], "Nifti2Image");
    assert_eq!(b["sizeof_hdr"], 540);
    assert_eq!(b["shape"], serde_json::json!([7, 6, 5]));
    assert_eq!(b["data"], r["data"]);
    assert!(geometry_of_ras(&b["affine"]).approx_eq(v.geometry(), 1e-12));
}

// --- The job: `segment_volume --volume DIR --out x.seg.nrrd` -----------------

#[test]
fn segment_job_reads_a_dicom_folder_and_writes_a_slicer_segmentation() {
    use medsam2_tools::volume_job::{run_segment_job, SegmentJob};
    let model = root().join("tests/fixtures/sam2.1-tiny-a");
    let series = root().join("tests/fixtures/dicom/tiny_ct");
    let out = temp_dir("job").join("tiny.seg.nrrd");
    let mut job = SegmentJob::new(
        &series,
        &out,
        model.join("weights.safetensors"),
        model.join("config.yaml").to_str().unwrap(),
    );
    job.boxes = vec!["1,1,1,4,3".into(), "2,0,0,2,2".into()];
    job.segment_names = vec![(1, "lesion".into())];
    let r = run_segment_job(&job, &mut |_| {}).unwrap();
    let (summary, skipped) = r.dicom.clone().expect("read as DICOM");
    assert_eq!(summary.files, 4);
    assert_eq!(skipped.len(), 1);
    let dicom = dicom::read_dicom_dir(&series, &Default::default()).unwrap();
    assert_eq!(r.input, dicom.volume);
    let seg = seg_nrrd::read_seg_nrrd(&out).unwrap();
    assert_eq!(seg.layers.len(), 1);
    assert_eq!(seg.layers[0].data(), r.labels.data());
    assert!(seg.layers[0]
        .geometry()
        .approx_eq(dicom.volume.geometry(), 1e-9));
    let names: Vec<(&str, u32)> = seg
        .segments
        .iter()
        .map(|s| (s.name.as_str(), s.label_value))
        .collect();
    assert_eq!(names, [("lesion", 1), ("object 2", 2)]);

    // Choosing a series that is not there, or --series with a file, are one-line errors.
    job.series = Some("1.2.3".into());
    let e = run_segment_job(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("no series 1.2.3") && !e.contains('\n'), "{e}");
    job.volume = series.join("IM0000.dcm");
    let e = run_segment_job(&job, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("--series applies to a DICOM folder"), "{e}");
}
