//! Builds the C and C++ clients against the built `libmedsam2` (plain `cc`,
//! static linking, CMake `find_package`, pkg-config), runs them on the tiny
//! fixture model and checks that what they write equals what the Rust API
//! computes; runs the C error-path and thread programs, and the C client
//! under valgrind. The one-prompt clients (`medsam2_one_prompt.c`/`.cpp`)
//! are checked the same way against the core's `OnePromptSession`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::confidence_bank::BankOptions;
use medsam2_core::medical::intensity::{self, IntensityMap, Normalization, Stretch, Window};
use medsam2_core::medical::slicing::{self, Axis};
use medsam2_core::medical::{Geometry, Volume, VoxelData};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::one_prompt::{ImageInput, OnePromptSession};
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};
use medsam2_core::volume::{Propagation, SegmentOptions, VolumeSession};

// ------------------------------------------------------------------ setup

struct Ctx {
    root: PathBuf,
    lib_dir: PathBuf,
    include: PathBuf,
    config: PathBuf,
    weights: PathBuf,
    tmp: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The tiny fixture model: the repository's own set first, then the shared one.
fn fixture() -> Option<(PathBuf, PathBuf)> {
    let root = workspace_root();
    let shared = std::env::var_os("MEDSAM2_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/fixtures"));
    for dir in [
        root.join("tests/fixtures/sam2.1-heads-c"),
        shared.join("tiny-sam2.1"),
    ] {
        let (c, w) = (dir.join("config.yaml"), dir.join("weights.safetensors"));
        if c.is_file() && w.is_file() {
            return Some((c, w));
        }
    }
    None
}

/// Where the C libraries of this build are: `cargo test` builds the library
/// (all its crate types) into the test binary's own `deps/` folder, and only
/// `cargo build` copies it up to `target/<profile>/`, so `deps/` is the copy
/// that matches the code under test.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    let has = |d: &Path| d.join(shared_lib_name()).is_file() && d.join("libmedsam2.a").is_file();
    if has(&deps) {
        return deps;
    }
    // Built with the rlib only (unusual): build the C libraries now.
    let profile_dir = deps.parent().expect("target dir").to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "medsam2-ffi"])
        .current_dir(workspace_root());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().expect("run cargo build").success(),
        "cargo build -p medsam2-ffi failed"
    );
    assert!(
        has(&profile_dir),
        "no {} / libmedsam2.a in {}",
        shared_lib_name(),
        profile_dir.display()
    );
    profile_dir
}

fn shared_lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libmedsam2.dylib"
    } else {
        "libmedsam2.so"
    }
}

fn ctx(test: &str) -> Option<Ctx> {
    let Some((config, weights)) = fixture() else {
        eprintln!(
            "skipped: no fixture weights (tests/fixtures/sam2.1-heads-c or \
             $MEDSAM2_SHARED_FIXTURES/tiny-sam2.1)"
        );
        return None;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("medsam2-ffi")
        .join(test);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create tmp dir");
    let root = workspace_root();
    Some(Ctx {
        include: root.join("include"),
        root,
        lib_dir: lib_dir(),
        config,
        weights,
        tmp,
    })
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a command, failing the test with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if !out.status.success() {
        panic!(
            "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compiles C or C++ sources against the shared library (with an rpath).
fn compile(c: &Ctx, compiler: &str, std: &str, src: &Path, exe: &Path, extra: &[&str]) {
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(&c.include)
        .arg(src)
        .arg("-o")
        .arg(exe)
        .arg("-L")
        .arg(&c.lib_dir)
        .arg("-lmedsam2")
        .arg(format!("-Wl,-rpath,{}", c.lib_dir.display()))
        .args(extra);
    run(&mut cmd);
}

impl Ctx {
    /// A command for a client program that loads `libmedsam2` from `dir`:
    /// cargo's own `LD_LIBRARY_PATH` (which may name `target/<profile>`, where
    /// an older copy of the library can lie) would take precedence over the
    /// client's rpath.
    fn client_in(&self, program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        for var in [
            "LD_LIBRARY_PATH",
            "DYLD_LIBRARY_PATH",
            "DYLD_FALLBACK_LIBRARY_PATH",
        ] {
            cmd.env_remove(var);
        }
        cmd.env(
            if cfg!(target_os = "macos") {
                "DYLD_LIBRARY_PATH"
            } else {
                "LD_LIBRARY_PATH"
            },
            dir,
        );
        cmd
    }

    /// A command for a client linked against the library under test.
    fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.client_in(program, &self.lib_dir)
    }

    fn client_args(&self, out: &Path) -> Vec<PathBuf> {
        vec![self.config.clone(), self.weights.clone(), out.to_path_buf()]
    }

    fn out_dir(&self, name: &str) -> PathBuf {
        let d = self.tmp.join(name);
        std::fs::create_dir_all(&d).expect("out dir");
        d
    }
}

// ------------------------------------------------------------------ the Rust reference

fn model(c: &Ctx) -> Arc<Sam2Base> {
    build_sam2(
        c.config.to_str().unwrap(),
        &c.weights,
        ComputeDType::F32,
        DeviceKind::Cpu,
    )
    .expect("load model")
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn read_f32(dir: &Path, name: &str) -> Vec<f32> {
    read(dir, name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_i16(dir: &Path, name: &str) -> Vec<i16> {
    read(dir, name)
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn read_u16(dir: &Path, name: &str) -> Vec<u16> {
    read(dir, name)
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The same code compiled into the cdylib and into this test binary may
/// differ in the last bits of a float (seen: 2 ULP in an IoU score), so a
/// binary decision may differ only where the Rust logit is this close to the
/// threshold.
const LOGIT_MARGIN: f32 = 1e-4;

/// Masks (or labels) equal to the Rust API's except where `ambiguous`.
fn assert_same_decisions<T: PartialEq + Copy>(
    what: &str,
    client: &[T],
    rust: &[T],
    ambiguous: impl Fn(usize) -> bool,
) {
    assert_eq!(client.len(), rust.len(), "{what}: sizes differ");
    let mut near = 0;
    for (i, (a, b)) in client.iter().zip(rust).enumerate() {
        if a != b {
            assert!(
                ambiguous(i),
                "{what}: element {i} differs from the Rust API (not at a decision boundary)"
            );
            near += 1;
        }
    }
    if near > 0 {
        println!("{what}: {near} elements at |logit| < {LOGIT_MARGIN} differ");
    }
}

fn assert_close(what: &str, client: &[f32], rust: &[f32], tol: f32) {
    assert_eq!(client.len(), rust.len(), "{what}: sizes differ");
    let max = client
        .iter()
        .zip(rust)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        max <= tol,
        "{what}: max |client - rust| = {max:e} > {tol:e}"
    );
}

const IMG_HW: (usize, usize) = (72, 100);
const VOL_DIMS: [usize; 3] = [40, 32, 10];

/// Pixels whose logit is at the decision boundary.
fn near(logits: &[f32]) -> impl Fn(usize) -> bool + '_ {
    move |i| logits[i].abs() < LOGIT_MARGIN
}

/// What the example clients compute, through the Rust API, compared with
/// the files they wrote.
fn check_image_outputs(m: &Arc<Sam2Base>, dir: &Path) {
    let (h, w) = IMG_HW;
    let rgb = read(dir, "image_rgb.u8");
    let mut p = Sam2ImagePredictor::new(m.clone()).unwrap();
    p.set_image_rgb_u8(&rgb, h, w).unwrap();
    let pred = p.predict(&Prompt::point(60.0, 30.0), true).unwrap();
    let masks = read(dir, "image_point_masks.u8");
    assert_same_decisions("image_point_masks", &masks, &pred.masks, near(&pred.logits));
    assert_close(
        "image_point_scores",
        &read_f32(dir, "image_point_scores.f32"),
        &pred.iou_scores,
        1e-5,
    );
    assert!(
        pred.masks.contains(&1) && pred.masks.contains(&0),
        "degenerate point masks"
    );

    let refine = Prompt {
        points: vec![[60.0, 30.0], [10.0, 60.0]],
        labels: vec![1, 0],
        mask_input: Some(pred.low_res(pred.best())),
        ..Default::default()
    };
    let r = p.predict(&refine, false).unwrap();
    assert_same_decisions(
        "image_refine_mask",
        &read(dir, "image_refine_mask.u8"),
        &r.masks,
        near(&r.logits),
    );
    let b = p
        .predict(&Prompt::bbox(38.0, 8.0, 84.0, 52.0), false)
        .unwrap();
    assert_same_decisions(
        "image_box_mask",
        &read(dir, "image_box_mask.u8"),
        &b.masks,
        near(&b.logits),
    );

    let ct = read_i16(dir, "ct_image.i16");
    let win = Window::preset("abdomen").unwrap();
    let map = IntensityMap {
        lower: win.lower(),
        upper: win.upper(),
        keep_zero: false,
    };
    let grey: Vec<f32> = ct.iter().map(|&v| map.unit(v as f64) as f32).collect();
    p.set_image_grey_f32(&grey, h, w).unwrap();
    let c = p.predict(&Prompt::point(40.0, 40.0), false).unwrap();
    assert_same_decisions(
        "ct_point_mask",
        &read(dir, "ct_point_mask.u8"),
        &c.masks,
        near(&c.logits),
    );
}

/// The label volume of a session (axis K, so slice `f` is contiguous) and,
/// per voxel, whether some object's logit is within the margin of 0.
fn labels_of(vp: &Sam2VideoPredictor) -> (Vec<u16>, Vec<bool>) {
    let [h, w] = vp.video_hw();
    let n = h * w;
    let mut labels = vec![0u16; vp.num_frames() * n];
    let mut ambiguous = vec![false; labels.len()];
    if vp.obj_ids().is_empty() {
        return (labels, ambiguous);
    }
    for f in 0..vp.num_frames() {
        let fm = vp.frame_masks(f).unwrap();
        let logits = fm
            .video_res_logits()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (o, (id, m)) in fm
            .obj_ids
            .iter()
            .zip(fm.binary_masks().unwrap())
            .enumerate()
        {
            for (p, v) in m.iter().enumerate() {
                if *v != 0 {
                    labels[f * n + p] = *id as u16;
                }
                if logits[o * n + p].abs() < LOGIT_MARGIN {
                    ambiguous[f * n + p] = true;
                }
            }
        }
    }
    (labels, ambiguous)
}

fn assert_labels(what: &str, client: &[u16], (rust, ambiguous): &(Vec<u16>, Vec<bool>)) {
    assert_same_decisions(what, client, rust, |i| ambiguous[i]);
}

/// Returns the number of progress calls of the first propagation.
fn check_volume_outputs(m: &Arc<Sam2Base>, dir: &Path) -> usize {
    let voxels = read_i16(dir, "volume.i16");
    let geometry = Geometry {
        spacing: [0.8, 0.8, 2.5],
        origin: [-16.0, -12.8, 100.0],
        ..Default::default()
    };
    let vol = Volume::new(VOL_DIMS, geometry, VoxelData::I16(voxels)).unwrap();
    let norm = Normalization::Window(Window::ABDOMEN);
    let grey = intensity::to_u8(&vol, &norm, Stretch::ClippedMinMax).unwrap();
    let frames = slicing::slices_u8(&grey, Axis::K).unwrap();
    let (w, h) = slicing::slice_size(VOL_DIMS, Axis::K);
    let frames = GreyFrames::new(frames.into_iter().map(|f| f.data).collect(), h, w).unwrap();
    let mut vp =
        Sam2VideoPredictor::new(m.clone(), Box::new(frames), SessionOptions::default()).unwrap();

    let centre = [-16.0 + 14.0 * 0.8, -12.8 + 16.0 * 0.8, 100.0 + 5.0 * 2.5];
    let fp = slicing::physical_to_slice_point(&vol, Axis::K, centre).unwrap();
    vp.add_points_or_box(fp.slice, 1, &[[fp.x as f32, fp.y as f32]], &[1], None, true)
        .unwrap();
    vp.add_points_or_box(4, 2, &[], &[], Some([27.0, 5.0, 36.0, 26.0]), true)
        .unwrap();
    let mut calls = 0;
    vp.propagate(None, Direction::Both, None, |_, _| {
        calls += 1;
        true
    })
    .unwrap();
    let labels = labels_of(&vp);
    assert!(
        labels.0.contains(&1) && labels.0.contains(&2),
        "an object vanished"
    );
    assert_labels(
        "volume_labels",
        &read_u16(dir, "volume_labels.u16"),
        &labels,
    );

    vp.add_points_or_box(7, 1, &[[14.0, 24.0]], &[0], None, false)
        .unwrap();
    vp.propagate(Some(7), Direction::Both, None, |_, _| true)
        .unwrap();
    let corrected = labels_of(&vp);
    assert_labels(
        "volume_corrected",
        &read_u16(dir, "volume_corrected.u16"),
        &corrected,
    );
    assert_ne!(labels.0, corrected.0, "the correction changed nothing");

    vp.remove_object(2).unwrap();
    assert_labels(
        "volume_removed",
        &read_u16(dir, "volume_removed.u16"),
        &labels_of(&vp),
    );

    // medsam2_session_segment after a physical box: the core's VolumeSession
    // given the same prompts (decisions may differ only where a threshold
    // moved by LOGIT_MARGIN changes them).
    let mut vs = VolumeSession::new(
        &vol,
        &medsam2_core::volume::Intensity::window(Window::ABDOMEN),
        Axis::K,
        m.clone(),
        SessionOptions::default(),
    )
    .unwrap();
    vs.add_points(fp.slice, 1, &[[fp.x as f32, fp.y as f32]], &[1], true)
        .unwrap();
    vs.add_box(4, 2, [27.0, 5.0, 36.0, 26.0]).unwrap();
    vs.add_points(7, 1, &[[14.0, 24.0]], &[0], false).unwrap();
    vs.remove_object(2).unwrap();
    let c0 = [-16.0 + 28.0 * 0.8, -12.8 + 6.0 * 0.8, 110.0];
    let c1 = [-16.0 + 35.0 * 0.8, -12.8 + 25.0 * 0.8, 110.0];
    let (z, _) = vs.add_box_physical(3, c0, c1).unwrap();
    assert_eq!(z, 4);
    let mut seg_at = |threshold: f32| {
        let opts = SegmentOptions {
            propagation: Propagation::Separate,
            largest_component: true,
            threshold,
        };
        let seg = vs.segment(&opts, &mut |_| true).unwrap();
        let v = vs.labels(&seg).unwrap().data().to_f64_vec();
        v.into_iter().map(|x| x as u16).collect::<Vec<u16>>()
    };
    let rust = seg_at(0.0);
    let (lo, hi) = (seg_at(-LOGIT_MARGIN), seg_at(LOGIT_MARGIN));
    assert!(
        rust.contains(&1) && rust.contains(&3),
        "an object vanished from the segmentation"
    );
    assert_same_decisions(
        "volume_segment",
        &read_u16(dir, "volume_segment.u16"),
        &rust,
        |i| lo[i] != hi[i],
    );
    calls
}

const OUTPUTS: &[&str] = &[
    "image_rgb.u8",
    "image_point_masks.u8",
    "image_point_scores.f32",
    "image_box_mask.u8",
    "image_refine_mask.u8",
    "ct_image.i16",
    "ct_point_mask.u8",
    "volume.i16",
    "volume_labels.u16",
    "volume_corrected.u16",
    "volume_removed.u16",
    "volume_segment.u16",
];

// ------------------------------------------------------------------ tests

#[test]
fn c_client_matches_rust_api() {
    let Some(c) = ctx("c_client") else { return };
    let exe = c.tmp.join("medsam2_segment");
    compile(
        &c,
        "cc",
        "c11",
        &c.root.join("examples/c/medsam2_segment.c"),
        &exe,
        &[],
    );
    let out = c.out_dir("out");
    let o = run(c.client(&exe).args(c.client_args(&out)));
    let text = stdout(&o);
    println!("{text}");
    let m = model(&c);
    check_image_outputs(&m, &out);
    let calls = check_volume_outputs(&m, &out);
    let line = format!("volume: propagated, {calls} progress calls, last {calls}/{calls}");
    assert!(
        text.contains(&line),
        "expected `{line}` in the client's output"
    );
}

#[test]
fn cpp_client_matches_rust_api() {
    let Some(c) = ctx("cpp_client") else { return };
    let exe = c.tmp.join("medsam2_segment_cpp");
    compile(
        &c,
        "c++",
        "c++17",
        &c.root.join("examples/cpp/medsam2_segment.cpp"),
        &exe,
        &[],
    );
    let out = c.out_dir("out");
    let o = run(c.client(&exe).args(c.client_args(&out)));
    let text = stdout(&o);
    println!("{text}");
    for expected in [
        "caught expected InvalidArgument: MEDSAM2_ERR_INVALID_ARGUMENT: invalid input: point 0 (500, 30) is outside",
        "cancelled after 2 slices",
        "caught expected IoError: MEDSAM2_ERR_IO",
        "\nok\n",
    ] {
        assert!(text.contains(expected), "expected `{expected}` in the C++ client's output");
    }
    let m = model(&c);
    check_image_outputs(&m, &out);
    let calls = check_volume_outputs(&m, &out);
    assert!(text.contains(&format!("volume: propagated {calls}/{calls}")));
}

#[test]
fn c_client_links_statically() {
    let Some(c) = ctx("c_static") else { return };
    let exe = c.tmp.join("medsam2_segment_static");
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c11", "-O1", "-Wall", "-Werror"])
        .arg("-I")
        .arg(&c.include)
        .arg(c.root.join("examples/c/medsam2_segment.c"))
        .arg(c.lib_dir.join("libmedsam2.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe);
    run(&mut cmd);
    let ldd = run(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        !stdout(&ldd).contains("libmedsam2"),
        "the static client still needs libmedsam2.so"
    );
    let out = c.out_dir("out");
    run(c
        .client(&exe)
        .args(c.client_args(&out))
        .arg("--volume-only"));
    check_volume_outputs(&model(&c), &out);
}

#[test]
fn cmake_package_and_pkg_config() {
    let Some(c) = ctx("cmake") else { return };
    if !have("cmake") {
        eprintln!("skipped: cmake is not installed (apt-get install -y cmake; CI installs it)");
        return;
    }
    // Stage an install as a plugin build would find it.
    let stage = c.tmp.join("stage");
    let build = c.tmp.join("install-build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(c.root.join("cmake"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DMEDSAM2_LIB_DIR={}", c.lib_dir.display())));
    run(Command::new("cmake")
        .arg("--install")
        .arg(&build)
        .arg("--prefix")
        .arg(&stage));
    for f in [
        "include/medsam2.h",
        "include/medsam2.hpp",
        "lib/libmedsam2.so",
        "lib/libmedsam2.a",
        "lib/cmake/medsam2/medsam2Config.cmake",
        "lib/cmake/medsam2/medsam2ConfigVersion.cmake",
        "lib/pkgconfig/medsam2.pc",
    ] {
        assert!(stage.join(f).is_file(), "{f} missing from the install");
    }
    let version =
        std::fs::read_to_string(stage.join("lib/cmake/medsam2/medsam2ConfigVersion.cmake"))
            .unwrap();
    assert!(
        version.contains(&format!("\"{}\"", env!("CARGO_PKG_VERSION"))),
        "wrong package version"
    );

    // find_package(medsam2) from the C and C++ examples, shared and static.
    let m = model(&c);
    let mut outs = Vec::new();
    for (name, src, exe, extra) in [
        ("c", "examples/c", "medsam2_segment", None),
        (
            "c-static",
            "examples/c",
            "medsam2_segment",
            Some("-DMEDSAM2_EXAMPLE_STATIC=ON"),
        ),
        ("cpp", "examples/cpp", "medsam2_segment_cpp", None),
    ] {
        let bdir = c.tmp.join(format!("build-{name}"));
        let mut cfg = Command::new("cmake");
        cfg.arg("-S")
            .arg(c.root.join(src))
            .arg("-B")
            .arg(&bdir)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", stage.display()))
            .arg("-DCMAKE_BUILD_TYPE=Release");
        if let Some(e) = extra {
            cfg.arg(e);
        }
        run(&mut cfg);
        run(Command::new("cmake").arg("--build").arg(&bdir));
        let out = c.out_dir(&format!("out-{name}"));
        let mut cmd = c.client_in(bdir.join(exe), &stage.join("lib"));
        cmd.args(c.client_args(&out));
        if name == "c-static" {
            cmd.arg("--volume-only");
        }
        run(&mut cmd);
        outs.push((name, out));
    }
    check_image_outputs(&m, &outs[0].1);
    check_volume_outputs(&m, &outs[0].1);
    check_volume_outputs(&m, &outs[1].1);
    for f in OUTPUTS {
        assert_eq!(
            read(&outs[0].1, f),
            read(&outs[2].1, f),
            "{f}: the C++ client differs from the C client"
        );
    }

    // pkg-config.
    if !have("pkg-config") {
        eprintln!("skipped part: pkg-config is not installed");
        return;
    }
    let flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", stage.join("lib/pkgconfig"))
        .args(["--cflags", "--libs", "medsam2"]));
    let flags = stdout(&flags);
    let exe = c.tmp.join("medsam2_segment_pc");
    let mut cmd = Command::new("cc");
    cmd.arg("-std=c11")
        .arg(c.root.join("examples/c/medsam2_segment.c"))
        .arg("-o")
        .arg(&exe);
    cmd.args(flags.split_whitespace());
    run(&mut cmd);
    let out = c.out_dir("out-pkg-config");
    run(c
        .client_in(&exe, &stage.join("lib"))
        .args(c.client_args(&out))
        .arg("--volume-only"));
    check_volume_outputs(&m, &out);
}

/// Compiles the C example `source` (`examples/c/…`) with debug info, runs it
/// under valgrind (full leak check, the project's suppressions, one worker
/// thread: the same results, several times faster under valgrind) with the
/// usual arguments plus `extra`, asserts no error and no leak, and returns
/// its output folder. `None` (after saying why) without valgrind.
fn run_under_valgrind(c: &Ctx, source: &str, extra: &[&str]) -> Option<PathBuf> {
    if !have("valgrind") {
        eprintln!(
            "skipped: valgrind is not installed (apt-get install -y valgrind; CI installs it)"
        );
        return None;
    }
    let exe = c.tmp.join(source.trim_end_matches(".c"));
    compile(
        c,
        "cc",
        "c11",
        &c.root.join("examples/c").join(source),
        &exe,
        &["-g"],
    );
    let out = c.out_dir("out");
    let supp = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/valgrind.supp");
    let o = c
        .client("valgrind")
        .args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=1",
        ])
        .arg(format!("--suppressions={}", supp.display()))
        .arg(&exe)
        .args(c.client_args(&out))
        .args(extra)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("run valgrind");
    let err = String::from_utf8_lossy(&o.stderr);
    let summary: Vec<&str> = err
        .lines()
        .filter(|l| {
            [
                "definitely lost",
                "indirectly lost",
                "possibly lost",
                "still reachable",
                "suppressed:",
                "ERROR SUMMARY",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect();
    println!("{}", summary.join("\n"));
    assert!(o.status.success(), "valgrind found errors:\n{err}");
    assert!(err.contains("ERROR SUMMARY: 0 errors"), "{err}");
    for kind in ["definitely lost", "indirectly lost", "possibly lost"] {
        // Absent from the summary when there is no leak at all.
        if let Some(l) = err.lines().find(|l| l.contains(kind)) {
            assert!(l.contains(&format!("{kind}: 0 bytes in 0 blocks")), "{l}");
        }
    }
    Some(out)
}

#[test]
fn c_client_under_valgrind() {
    let Some(c) = ctx("valgrind") else { return };
    if let Some(out) = run_under_valgrind(&c, "medsam2_segment.c", &["--volume-only"]) {
        check_volume_outputs(&model(&c), &out);
    }
}

#[test]
fn error_paths_from_c() {
    let Some(c) = ctx("error_paths") else { return };
    let exe = c.tmp.join("error_paths");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/error_paths.c");
    compile(&c, "cc", "c11", &src, &exe, &["-pthread", "-lm"]);
    let o = run(c.client(&exe).arg(&c.config).arg(&c.weights).arg(&c.tmp));
    let text = stdout(&o);
    let last = text.lines().last().unwrap_or("");
    println!("{last}");
    assert!(last.ends_with(" passed, 0 failed"), "{text}");
    let passed: usize = last.split_whitespace().next().unwrap().parse().unwrap();
    assert!(passed >= 190, "only {passed} checks ran:\n{text}");
}

#[test]
fn four_threads_match_one_thread() {
    let Some(c) = ctx("threads") else { return };
    let exe = c.tmp.join("threads");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/threads.c");
    compile(&c, "cc", "c11", &src, &exe, &["-pthread"]);
    let o = run(c.client(&exe).arg(&c.config).arg(&c.weights));
    let text = stdout(&o);
    println!("{text}");
    assert!(text.contains("4 passed, 0 failed"), "{text}");
}

// ------------------------------------------------------------------ one-prompt segmentation

/// What the one-prompt clients compute, through the core's session, compared
/// with the files they wrote (`examples/c/medsam2_one_prompt.c` lists them).
fn check_one_prompt_outputs(m: &Arc<Sam2Base>, dir: &Path) {
    let sizes: Vec<usize> = read(dir, "op_sizes.u32")
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let click = read_f32(dir, "op_click.f32");
    let ious = read_f32(dir, "op_iou.f32");
    assert_eq!((sizes.len(), click.len(), ious.len()), (12, 2, 6));
    let mut opts = BankOptions::fixed();
    opts.capacity = 4;
    let mut s = OnePromptSession::new(m.clone(), opts).unwrap();
    let win = Window::preset("abdomen").unwrap();
    let map = IntensityMap {
        lower: win.lower(),
        upper: win.upper(),
        keep_zero: false,
    };
    for i in 0..6 {
        let (width, height) = (sizes[2 * i], sizes[2 * i + 1]);
        let out = if i == 4 {
            let ct = read_i16(dir, "op_image4.i16");
            let grey: Vec<f32> = ct.iter().map(|&v| map.unit(v as f64) as f32).collect();
            let img = ImageInput::GreyF32 {
                data: &grey,
                height,
                width,
            };
            s.segment(&img).unwrap()
        } else {
            let rgb = read(dir, &format!("op_image{i}.u8"));
            let img = ImageInput::Rgb8 {
                data: &rgb,
                height,
                width,
            };
            if i == 0 {
                s.add_prompt(&img, &Prompt::point(click[0], click[1]))
                    .unwrap()
            } else {
                s.segment(&img).unwrap()
            }
        };
        let mask = read(dir, &format!("op_mask{i}.u8"));
        assert_same_decisions(&format!("op_mask{i}"), &mask, &out.mask, near(&out.logits));
        assert!(
            mask.contains(&1) && mask.contains(&0),
            "op_mask{i}: degenerate mask"
        );
        assert_close(&format!("op_iou[{i}]"), &ious[i..=i], &[out.iou], 1e-5);
    }
    assert_eq!(s.bank().len(), 4);
}

const ONE_PROMPT_OUTPUTS: &[&str] = &[
    "op_sizes.u32",
    "op_click.f32",
    "op_iou.f32",
    "op_image0.u8",
    "op_image3.u8",
    "op_image4.i16",
    "op_mask0.u8",
    "op_mask1.u8",
    "op_mask2.u8",
    "op_mask3.u8",
    "op_mask4.u8",
    "op_mask5.u8",
];

#[test]
fn one_prompt_clients_match_rust_api() {
    let Some(c) = ctx("one_prompt_clients") else {
        return;
    };
    let exe = c.tmp.join("medsam2_one_prompt");
    compile(
        &c,
        "cc",
        "c11",
        &c.root.join("examples/c/medsam2_one_prompt.c"),
        &exe,
        &[],
    );
    let out_c = c.out_dir("out-c");
    let text = stdout(&run(c.client(&exe).args(c.client_args(&out_c))));
    println!("{text}");
    for expected in [
        "one-prompt: bank of 3 entries after 3 images saved",
        "one-prompt: the banks from the file and from memory give the same masks",
        "\nok\n",
    ] {
        assert!(
            text.contains(expected),
            "expected `{expected}` in the C client's output"
        );
    }
    check_one_prompt_outputs(&model(&c), &out_c);

    let exe = c.tmp.join("medsam2_one_prompt_cpp");
    compile(
        &c,
        "c++",
        "c++17",
        &c.root.join("examples/cpp/medsam2_one_prompt.cpp"),
        &exe,
        &[],
    );
    let out_cpp = c.out_dir("out-cpp");
    let text = stdout(&run(c.client(&exe).args(c.client_args(&out_cpp))));
    println!("{text}");
    for expected in [
        "caught expected IoError: MEDSAM2_ERR_IO: ",
        "exists and is not a confidence-bank file; refusing to overwrite it",
        "\nok\n",
    ] {
        assert!(
            text.contains(expected),
            "expected `{expected}` in the C++ client's output"
        );
    }
    for f in ONE_PROMPT_OUTPUTS {
        assert_eq!(
            read(&out_c, f),
            read(&out_cpp, f),
            "{f}: the C++ client differs from the C client"
        );
    }
}

#[test]
fn one_prompt_client_under_valgrind() {
    let Some(c) = ctx("one_prompt_valgrind") else {
        return;
    };
    if let Some(out) = run_under_valgrind(&c, "medsam2_one_prompt.c", &[]) {
        check_one_prompt_outputs(&model(&c), &out);
    }
}
