//! The ITK client (`examples/itk`): stages an install of this build's
//! `libmedsam2` (`cmake/CMakeLists.txt`), builds the client with CMake through
//! `find_package(ITK)` and `find_package(medsam2)`, and checks that
//! * `medsam2_itk_segment` (ITK reads the volume, `medsam2_itk.hpp` hands its
//!   buffer and geometry to the C ABI, ITK writes the labels) writes the same
//!   label volume as `segment_volume`'s job, voxel for voxel, with the input's
//!   geometry: on the committed phantom and on the shared CT cases (NIfTI and
//!   NRRD), for box prompts in voxels and in physical millimetres;
//! * ITK's `TransformPhysicalPointToIndex` agrees with
//!   `medsam2_session_physical_to_slice` on a volume with a rotated
//!   (non-identity) direction, written as NRRD and NIfTI by our writer.
//!
//! Needs `cmake` and ITK 5 (`apt-get install libinsighttoolkit5-dev`): without
//! them the tests print `skipped: ...`, except under CI (`.ci/run` installs
//! them and sets `MEDSAM2_REQUIRE_ITK`; or `CI` set), where a missing one
//! fails the test. The CT cases come
//! from `../shared/data/ct-lesion` (or `MEDSAM2_DATA`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use medsam2_core::medical::{self, Geometry, Volume, VoxelData};
use medsam2_tools::volume_job::{
    run_segment_job, IntensitySpec, Propagation, SegmentJob, SegmentReport,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The committed tiny random-weight model (fast; the masks are noise, but
/// the same noise on both sides).
fn model() -> (PathBuf, PathBuf) {
    let d = root().join("tests/fixtures/sam2.1-tiny-a");
    (d.join("weights.safetensors"), d.join("config.yaml"))
}

/// Skips on a developer machine, fails under CI (`.ci/run` sets
/// `MEDSAM2_REQUIRE_ITK`; `CI` counts too).
fn skip<T>(msg: &str) -> Option<T> {
    if std::env::var_os("MEDSAM2_REQUIRE_ITK").is_some() || std::env::var_os("CI").is_some() {
        panic!("{msg} (under CI this test must run: .ci/run installs it)");
    }
    eprintln!("skipped: {msg}");
    None
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("medsam2-ffi")
        .join("itk")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// Runs a command, failing the test with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The C libraries of this build: `cargo test` builds them into the test
/// binary's `deps/` folder (see tests/clients.rs).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    assert!(
        deps.join("libmedsam2.so").is_file() && deps.join("libmedsam2.a").is_file(),
        "libmedsam2.so / libmedsam2.a not found in {}",
        deps.display()
    );
    deps
}

/// The built client: its build folder and the staged library folder.
struct Client {
    bin: PathBuf,
    lib: PathBuf,
}

impl Client {
    /// A command for one of the client's programs, loading the staged library.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env_remove("DYLD_LIBRARY_PATH")
            .env("LD_LIBRARY_PATH", &self.lib);
        c
    }
}

fn build_client() -> Option<Client> {
    if !cfg!(target_os = "linux") {
        return skip("the ITK client test runs on Linux (Debian's libinsighttoolkit5-dev)");
    }
    let has_cmake = Command::new("cmake")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cmake {
        return skip("cmake is not installed (apt-get install -y cmake)");
    }
    let dir = tmp("build");
    let stage = dir.join("stage");
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("cmake"))
        .arg("-B")
        .arg(dir.join("install"))
        .arg(format!("-DMEDSAM2_LIB_DIR={}", lib_dir().display())));
    run(Command::new("cmake")
        .arg("--install")
        .arg(dir.join("install"))
        .arg("--prefix")
        .arg(&stage));
    let bin = dir.join("client");
    let cfg = Command::new("cmake")
        .arg("-S")
        .arg(root().join("examples/itk"))
        .arg("-B")
        .arg(&bin)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", stage.display()))
        .arg("-DCMAKE_BUILD_TYPE=Release")
        .output()
        .expect("run cmake");
    if !cfg.status.success() {
        let err = String::from_utf8_lossy(&cfg.stderr);
        if err.contains("ITKConfig.cmake") || err.contains("itk-config.cmake") {
            return skip("ITK 5 is not installed (apt-get install -y libinsighttoolkit5-dev)");
        }
        panic!(
            "configuring examples/itk failed:\n{}\n{err}",
            String::from_utf8_lossy(&cfg.stdout)
        );
    }
    run(Command::new("cmake")
        .arg("--build")
        .arg(&bin)
        .args(["--parallel", "2"]));
    Some(Client {
        bin,
        lib: stage.join("lib"),
    })
}

/// Built once per test binary.
fn client() -> Option<&'static Client> {
    static CLIENT: OnceLock<Option<Client>> = OnceLock::new();
    CLIENT.get_or_init(build_client).as_ref()
}

// ------------------------------------------------------------ segmentation

/// One run of both programs on the same input with the same options.
struct Case<'a> {
    volume: &'a Path,
    boxes: Vec<String>,
    physical: bool,
    /// `--propagation` (None: the default, separate).
    propagation: Option<&'a str>,
    largest_component: bool,
    /// `--window` (None: the default, auto).
    window: Option<&'a str>,
    /// `--fill-hole-area` (None: the default, 8).
    fill_hole_area: Option<usize>,
}

/// Runs `medsam2_itk_segment` and `segment_volume`'s job on `case`, checks
/// the label volumes are equal voxel for voxel and that ITK wrote the
/// input's geometry; returns the ITK client's stdout and the labelled voxels.
fn compare(c: &Client, case: &Case, out: &Path) -> (String, usize) {
    let (weights, config) = model();
    let mut cmd = c.cmd("medsam2_itk_segment");
    cmd.arg("--volume")
        .arg(case.volume)
        .arg("--out")
        .arg(out)
        .arg("--checkpoint")
        .arg(&weights)
        .arg("--config")
        .arg(&config)
        .arg("--quiet");
    if let Some(p) = case.propagation {
        cmd.args(["--propagation", p]);
    }
    for b in &case.boxes {
        cmd.arg(if case.physical {
            "--box-physical"
        } else {
            "--box"
        })
        .arg(b);
    }
    if case.largest_component {
        cmd.arg("--largest-component");
    }
    if let Some(w) = case.window {
        cmd.args(["--window", w]);
    }
    if let Some(n) = case.fill_hole_area {
        cmd.args(["--fill-hole-area", &n.to_string()]);
    }
    let text = String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned();

    let reference_out = out.with_file_name(format!(
        "reference_{}",
        out.file_name().unwrap().to_string_lossy()
    ));
    let mut job = SegmentJob::new(
        case.volume,
        &reference_out,
        &weights,
        config.to_str().unwrap(),
    );
    job.boxes = case.boxes.clone();
    job.physical = case.physical;
    if let Some(p) = case.propagation {
        job.propagation = Propagation::parse(p).unwrap();
    }
    job.largest_component = case.largest_component;
    if let Some(w) = case.window {
        job.window = IntensitySpec::parse(w).unwrap();
    }
    if let Some(n) = case.fill_hole_area {
        job.fill_hole_area = n;
    }
    let report: SegmentReport = run_segment_job(&job, &mut |_| {}).expect("segment_volume job");

    let itk = medical::read_volume(out).expect("read the ITK client's output");
    let what = format!("{} ({:?})", out.display(), case.boxes);
    assert_eq!(itk.dims(), report.input.dims(), "{what}: dims");
    assert!(
        itk.geometry().approx_eq(report.input.geometry(), 1e-6),
        "{what}: ITK wrote geometry {:?}, the input has {:?}",
        itk.geometry(),
        report.input.geometry()
    );
    let a = itk.data().to_f64_vec();
    let b = report.labels.data().to_f64_vec();
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differ,
        0,
        "{what}: {differ} of {} voxels differ from segment_volume's",
        a.len()
    );
    let labelled = b.iter().filter(|&&v| v != 0.0).count();
    assert!(
        labelled > 0 && labelled < b.len(),
        "{what}: degenerate label volume ({labelled} of {} voxels labelled)",
        b.len()
    );
    (text, labelled)
}

#[test]
fn phantom_matches_segment_volume() {
    let Some(c) = client() else { return };
    let dir = tmp("phantom");
    let volume = root().join("tests/fixtures/demo/phantom_img.nii.gz");
    let one = vec!["7,42,101,68,133".to_string()];
    let two = vec![
        "7,42,101,68,133".to_string(),
        "2:5,150,60,190,110".to_string(),
    ];
    for (boxes, mode, largest, fill, out) in [
        (&one, None, false, None, "default.nii.gz"),
        (&one, Some("separate"), true, None, "largest.nrrd"),
        (&one, Some("joint"), false, None, "joint.nii.gz"),
        (&one, Some("forward"), false, None, "forward.nrrd"),
        (&two, None, false, None, "two_objects.nii.gz"),
        (&one, None, false, Some(0), "no_hole_filling.nii.gz"),
        (&one, None, false, Some(40), "holes_40.nii.gz"),
    ] {
        let case = Case {
            volume: &volume,
            boxes: boxes.clone(),
            physical: false,
            propagation: mode,
            largest_component: largest,
            window: None,
            fill_hole_area: fill,
        };
        let (text, n) = compare(c, &case, &dir.join(out));
        assert!(
            text.contains("prompt:  object 1 slice 7: box (42, 101)-(68, 133)"),
            "{text}"
        );
        if boxes.len() == 2 {
            assert!(
                text.contains("object 2: ") && !text.contains("object 2: 0 voxels"),
                "object 2 vanished: {text}"
            );
        }
        println!(
            "phantom, {} object(s), {mode:?}, largest component {largest}, fill {fill:?}: {n} voxels labelled, equal to segment_volume",
            boxes.len()
        );
    }
}

/// The shared CT cases, or None (skipped) when absent.
fn data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("MEDSAM2_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/ct-lesion"));
    if d.join("nifti").is_dir() && d.join("nrrd").is_dir() {
        Some(d)
    } else if root().join("../shared").is_dir() {
        skip(&format!(
            "CT data not found at {} (../shared exists)",
            d.display()
        ))
    } else {
        eprintln!(
            "skipped: CT data not found at {} (set MEDSAM2_DATA)",
            d.display()
        );
        None
    }
}

/// The box of a case's lesion on its largest slice, as `Z,X0,Y0,X1,Y1`.
fn lesion_box(seg: &Path) -> String {
    let v = medical::read_volume(seg).expect("read the lesion label");
    let [nx, ny, nz] = v.dims();
    let d = v.data().to_f64_vec();
    let area = |k: usize| (0..nx * ny).filter(|p| d[k * nx * ny + p] != 0.0).count();
    let z = (0..nz)
        .max_by_key(|&k| (area(k), std::cmp::Reverse(k)))
        .unwrap();
    let (mut x0, mut y0, mut x1, mut y1) = (nx, ny, 0, 0);
    for p in (0..nx * ny).filter(|p| d[z * nx * ny + p] != 0.0) {
        let (x, y) = (p % nx, p / nx);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    assert!(x1 >= x0, "{}: empty lesion", seg.display());
    format!("{z},{x0},{y0},{x1},{y1}")
}

#[test]
fn ct_cases_match_segment_volume() {
    let Some(c) = client() else { return };
    let Some(data) = data_dir() else { return };
    let dir = tmp("ct");
    let mut cases = 0;
    for entry in std::fs::read_dir(data.join("nifti")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix("_img.nii.gz") else {
            continue;
        };
        let bx = lesion_box(&data.join(format!("nifti/{case}_seg.nii.gz")));
        for (input, out, largest) in [
            (format!("nifti/{case}_img.nii.gz"), "nifti.nii.gz", false),
            (format!("nrrd/{case}_img.nrrd"), "nrrd.nrrd", true),
        ] {
            let case_run = Case {
                volume: &data.join(&input),
                boxes: vec![bx.clone()],
                physical: false,
                propagation: None,
                largest_component: largest,
                window: None,
                fill_hole_area: None,
            };
            let (_, n) = compare(c, &case_run, &dir.join(format!("{case}_{out}")));
            println!(
                "{input}: box {bx}, largest component {largest}: {n} voxels labelled, equal to segment_volume"
            );
        }
        cases += 1;
    }
    assert!(cases >= 2, "expected the CT cases in {}", data.display());
}

// ------------------------------------------------------------ geometry

/// A small i16 CT-like volume with a bright ellipsoid and a rotated
/// direction (about an oblique axis: every index axis mixes x, y and z).
fn oblique_volume() -> Volume {
    let dims = [24, 20, 9];
    let mut v = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let r = ((i as f64 - 12.0) / 6.0).powi(2)
                    + ((j as f64 - 10.0) / 5.0).powi(2)
                    + ((k as f64 - 4.0) / 3.0).powi(2);
                v.push(if r < 1.0 {
                    150
                } else {
                    -40 + (i as i16 % 5) * 7
                });
            }
        }
    }
    let (a, b) = (0.3f64, 0.2f64);
    let rz = [
        [a.cos(), -a.sin(), 0.0],
        [a.sin(), a.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, b.cos(), -b.sin()],
        [0.0, b.sin(), b.cos()],
    ];
    let mut direction = [[0.0; 3]; 3];
    for (r, row) in direction.iter_mut().enumerate() {
        for (col, d) in row.iter_mut().enumerate() {
            *d = (0..3).map(|m| rz[r][m] * rx[m][col]).sum();
        }
    }
    let geometry = Geometry {
        spacing: [0.7, 0.9, 2.5],
        origin: [-10.25, 33.5, 7.75],
        direction,
    };
    Volume::new(dims, geometry, VoxelData::I16(v)).unwrap()
}

/// One line of `medsam2_itk_locate`: ITK's index and continuous index, and
/// medsam2's slice and pixel (None where outside).
type Located = (Option<([i64; 3], [f64; 3])>, Option<(u32, f64, f64)>);

fn locate(c: &Client, volume: &Path, axis: usize, points: &[[f64; 3]]) -> Vec<Located> {
    let (weights, config) = model();
    let mut cmd = c.cmd("medsam2_itk_locate");
    cmd.arg("--volume")
        .arg(volume)
        .arg("--checkpoint")
        .arg(&weights)
        .arg("--config")
        .arg(&config)
        .args(["--axis", &axis.to_string()]);
    for p in points {
        cmd.arg("--point")
            .arg(format!("{},{},{}", p[0], p[1], p[2]));
    }
    let text = String::from_utf8_lossy(&run(&mut cmd).stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), points.len(), "{text}");
    let num = |s: &str| {
        s.parse::<f64>()
            .unwrap_or_else(|_| panic!("`{s}` in {text}"))
    };
    lines
        .iter()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |k: &str| w.iter().position(|x| *x == k);
            let itk = at("index").map(|i| {
                (
                    [0, 1, 2].map(|a| num(w[i + 1 + a]) as i64),
                    [0, 1, 2].map(|a| num(w[i + 5 + a].trim_end_matches(';'))),
                )
            });
            let ours = at("slice").map(|i| (num(w[i + 1]) as u32, num(w[i + 3]), num(w[i + 5])));
            assert_eq!(itk.is_none(), l.contains("itk outside"), "{l}");
            assert_eq!(ours.is_none(), l.contains("medsam2 outside"), "{l}");
            (itk, ours)
        })
        .collect()
}

/// In-plane (column, row) index axes of slices along `axis`.
fn in_plane(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

#[test]
fn physical_points_agree_with_itk_on_an_oblique_volume() {
    let Some(c) = client() else { return };
    let dir = tmp("oblique");
    let vol = oblique_volume();
    let dims = vol.dims();
    // Continuous indices, none half-way between voxels (ties round differently).
    let inside = [
        [0.0, 0.0, 0.0],
        [23.0, 19.0, 8.0],
        [3.2, 5.7, 4.1],
        [20.4, 2.3, 0.2],
        [11.6, 17.45, 6.8],
        [-0.3, 19.2, 7.7],
    ];
    let outside = [[-3.0, 5.0, 4.0], [5.0, 5.0, 9.9]];
    let points: Vec<[f64; 3]> = inside
        .iter()
        .chain(&outside)
        .map(|&i| vol.index_to_physical(i))
        .collect();
    // NRRD keeps the direction exactly; NIfTI stores it in float32.
    for (file, tol) in [("oblique.nrrd", 1e-6), ("oblique.nii.gz", 1e-3)] {
        let path = dir.join(file);
        medical::write_volume(&path, &vol).unwrap();
        for axis in [2, 0] {
            let (col, row) = in_plane(axis);
            let found = locate(c, &path, axis, &points);
            for (p, (idx, (itk, ours))) in inside.iter().chain(&outside).zip(&found).enumerate() {
                let what = format!("{file} axis {axis} point {p} (index {idx:?})");
                if p >= inside.len() {
                    assert!(itk.is_none(), "{what}: ITK says inside: {itk:?}");
                    // medsam2_session_physical_to_slice refuses a point off
                    // the slices; one on a slice but off its pixels comes back
                    // as it is (the prompt functions refuse it).
                    let off_slices = !(-0.5..dims[axis] as f64 - 0.5).contains(&idx[axis]);
                    match ours {
                        None => assert!(off_slices, "{what}: medsam2 refused it"),
                        Some((_, x, y)) => {
                            assert!(!off_slices, "{what}: medsam2 placed it on a slice");
                            assert!((x - idx[col]).abs() < 1e-4 && (y - idx[row]).abs() < 1e-4);
                        }
                    }
                    continue;
                }
                let (index, cont) = itk.unwrap_or_else(|| panic!("{what}: ITK says outside"));
                let (slice, x, y) = ours.unwrap_or_else(|| panic!("{what}: medsam2 says outside"));
                for a in 0..3 {
                    assert!(
                        (cont[a] - idx[a]).abs() < tol,
                        "{what}: ITK continuous {cont:?}"
                    );
                    assert_eq!(
                        index[a],
                        idx[a].round() as i64,
                        "{what}: ITK index {index:?}"
                    );
                }
                assert_eq!(i64::from(slice), index[axis], "{what}: slice");
                assert!(
                    (x - cont[col]).abs() < 1e-4,
                    "{what}: x {x} vs ITK {}",
                    cont[col]
                );
                assert!(
                    (y - cont[row]).abs() < 1e-4,
                    "{what}: y {y} vs ITK {}",
                    cont[row]
                );
            }
        }
    }

    // A box in physical millimetres: the same slice and pixels as ITK's
    // indices of its corners, and the same labels as segment_volume --physical.
    let path = dir.join("oblique.nrrd");
    let corners = [[6.3, 4.6, 2.8], [17.2, 15.1, 5.9]].map(|i| vol.index_to_physical(i));
    let found = locate(c, &path, 2, &corners);
    let (i0, _) = found[0].0.unwrap();
    let (i1, _) = found[1].0.unwrap();
    let slice = (i0[2].min(i1[2]) + i0[2].max(i1[2])) / 2;
    let bx = format!(
        "{},{},{},{},{},{}",
        corners[0][0], corners[0][1], corners[0][2], corners[1][0], corners[1][1], corners[1][2]
    );
    let case = Case {
        volume: &path,
        boxes: vec![bx],
        physical: true,
        propagation: Some("joint"),
        largest_component: false,
        window: None,
        fill_hole_area: None,
    };
    let (text, n) = compare(c, &case, &dir.join("physical_box.nii.gz"));
    let line = text
        .lines()
        .find(|l| l.starts_with("prompt:"))
        .unwrap_or_else(|| panic!("no prompt line in {text}"));
    let prompted: i64 = line
        .split_whitespace()
        .skip_while(|w| *w != "slice")
        .nth(1)
        .and_then(|w| w.trim_end_matches(':').parse().ok())
        .unwrap_or_else(|| panic!("no slice in `{line}`"));
    assert_eq!(
        prompted, slice,
        "{line}: the slice nearest the corners' middle for ITK is {slice} ({i0:?}, {i1:?})"
    );
    println!("physical box on slice {slice}: {n} voxels labelled, equal to segment_volume");

    // A corner beyond the last slice: the slice range is clamped to the
    // volume (slices 3..8 -> 5), as segment_volume does.
    let corners = [[6.3, 4.6, 2.8], [17.2, 15.1, 11.4]].map(|i| vol.index_to_physical(i));
    let case = Case {
        volume: &path,
        boxes: vec![format!(
            "{},{},{},{},{},{}",
            corners[0][0],
            corners[0][1],
            corners[0][2],
            corners[1][0],
            corners[1][1],
            corners[1][2]
        )],
        physical: true,
        propagation: None,
        largest_component: false,
        window: None,
        fill_hole_area: None,
    };
    let (text, _) = compare(c, &case, &dir.join("physical_box_clamped.nrrd"));
    assert!(text.contains("prompt:  object 1 slice 5: box ("), "{text}");
}

/// Every voxel type: u8, i16, u16 and f32 are handed over as they are, i8,
/// i32 and f64 converted to float by the helper; the result is
/// segment_volume's for each (auto window, or a W,L window).
#[test]
fn pixel_types_match_segment_volume() {
    let Some(c) = client() else { return };
    let dir = tmp("pixel_types");
    let vol = oblique_volume();
    let hu: Vec<i16> = match vol.data() {
        VoxelData::I16(v) => v.clone(),
        _ => unreachable!(),
    };
    let cases: Vec<(&str, VoxelData, Option<&str>)> = vec![
        (
            "u8",
            VoxelData::U8(hu.iter().map(|&v| (v + 60).clamp(0, 255) as u8).collect()),
            None,
        ),
        ("i16", VoxelData::I16(hu.clone()), Some("abdomen")),
        (
            "u16",
            VoxelData::U16(hu.iter().map(|&v| (v + 1024) as u16).collect()),
            Some("400,1064"),
        ),
        (
            "f32",
            VoxelData::F32(hu.iter().map(|&v| v as f32 * 0.5 + 0.25).collect()),
            Some("300,20"),
        ),
        (
            "i8",
            VoxelData::I8(hu.iter().map(|&v| (v / 2).clamp(-128, 127) as i8).collect()),
            None,
        ),
        (
            "i32",
            VoxelData::I32(hu.iter().map(|&v| i32::from(v) * 3).collect()),
            None,
        ),
        (
            "f64",
            VoxelData::F64(hu.iter().map(|&v| f64::from(v) + 0.5).collect()),
            Some("percentile"),
        ),
    ];
    for (name, data, window) in cases {
        let input = dir.join(format!("{name}.nrrd"));
        medical::write_volume(&input, &vol.with_data(data).unwrap()).unwrap();
        let case = Case {
            volume: &input,
            boxes: vec!["4,7,5,17,15".into()],
            physical: false,
            propagation: Some("joint"),
            largest_component: false,
            window,
            fill_hole_area: None,
        };
        let (_, n) = compare(c, &case, &dir.join(format!("{name}_labels.nrrd")));
        println!("{name} ({window:?}): {n} voxels labelled, equal to segment_volume");
    }
}

/// Bad input is one line `error: ...` and exit status 1, and no output.
#[test]
fn bad_inputs_are_one_line_errors() {
    let Some(c) = client() else { return };
    let dir = tmp("bad_inputs");
    let (weights, config) = model();
    let input = dir.join("ct.nrrd");
    medical::write_volume(&input, &oblique_volume()).unwrap();
    let out = dir.join("labels.nii.gz");
    let junk = dir.join("junk.nii");
    std::fs::write(&junk, b"not a nifti file").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "--volume is required"),
        (
            vec!["--box".into(), "4,7,5,17,15".into(), "--volume".into()],
            "--volume needs a value",
        ),
        (
            vec!["--frobnicate".into()],
            "unknown argument `--frobnicate`",
        ),
        (vec!["--box".into(), "9,7,5,17,15".into()], "slice 9"),
        (
            vec!["--box".into(), "4,7,5,17,25".into()],
            "outside the volume",
        ),
        (
            vec!["--box".into(), "4,7,5,17".into()],
            "expected Z,X0,Y0,X1,Y1",
        ),
        (vec!["--box".into(), "0:4,7,5,17,15".into()], "object id"),
        (
            vec![
                "--box".into(),
                "4,7,5,17,15".into(),
                "--fill-hole-area".into(),
                "-3".into(),
            ],
            "bad --fill-hole-area `-3`",
        ),
        (
            vec!["--box".into(), "4,7,5,17,nan".into()],
            "not a finite number",
        ),
        (
            vec!["--box-physical".into(), "0,0,900,1,1,901".into()],
            "outside the volume",
        ),
        (
            vec![
                "--box".into(),
                "4,7,5,17,15".into(),
                "--window".into(),
                "sunset".into(),
            ],
            "unknown window",
        ),
        (
            vec![
                "--box".into(),
                "4,7,5,17,15".into(),
                "--window".into(),
                "none".into(),
            ],
            "uint8",
        ),
        (
            vec![
                "--box".into(),
                "4,7,5,17,15".into(),
                "--axis".into(),
                "3".into(),
            ],
            "bad axis",
        ),
        (
            vec![
                "--box".into(),
                "4,7,5,17,15".into(),
                "--propagation".into(),
                "sideways".into(),
            ],
            "bad propagation",
        ),
    ];
    let base = |cmd: &mut Command, volume: &Path, out: &Path| {
        cmd.arg("--checkpoint")
            .arg(&weights)
            .arg("--config")
            .arg(&config);
        cmd.arg("--out").arg(out).arg("--quiet");
        cmd.arg("--volume").arg(volume);
    };
    let check = |mut cmd: Command, needle: &str| {
        let o = cmd.output().expect("run medsam2_itk_segment");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{needle}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{err}"
        );
        assert!(
            err.contains(needle),
            "`{}` should mention `{needle}`",
            err.trim_end()
        );
    };
    for (args, needle) in cases {
        let mut cmd = c.cmd("medsam2_itk_segment");
        if !args.is_empty() {
            base(&mut cmd, &input, &out);
        }
        cmd.args(&args);
        check(cmd, needle);
        assert!(!out.exists(), "{needle}: an output was written");
    }
    let with = |volume: &Path, out: &Path, needle: &str| {
        let mut cmd = c.cmd("medsam2_itk_segment");
        base(&mut cmd, volume, out);
        cmd.args(["--box", "4,7,5,17,15"]);
        check(cmd, needle);
    };
    with(
        &dir.join("missing.nrrd"),
        &out,
        "missing.nrrd: no such file",
    );
    with(&junk, &out, "junk.nii");
    with(&dir, &out, "is a directory");
    with(
        &input,
        &dir.join("labels.unknown"),
        "not an image format ITK can write",
    );
    with(&input, &dir.join("nodir/labels.nii.gz"), "does not exist");
    let before = std::fs::read(&input).unwrap();
    with(&input, &input, "is the input volume");
    let alias = dir.join(".").join("ct.nrrd");
    with(&input, &alias, "is the input volume");
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input was overwritten"
    );
    assert!(!out.exists());
}

/// The helper on images files never give: a buffered region that does not
/// start at index 0, a rotated direction, converted pixel types, labels back
/// in place (`examples/itk/medsam2_itk_selftest.cpp`).
#[test]
fn helper_selftest() {
    let Some(c) = client() else { return };
    let (weights, config) = model();
    let o = run(c.cmd("medsam2_itk_selftest").arg(&weights).arg(&config));
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text.lines().last().unwrap_or("");
    println!("{last}");
    assert!(last.ends_with(" passed, 0 failed"), "{text}");
    let passed: usize = last.split_whitespace().next().unwrap().parse().unwrap();
    assert!(passed >= 38, "only {passed} checks ran:\n{text}");
}
