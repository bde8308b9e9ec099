//! A C-ABI client reproduces `segment_volume` voxel for voxel: the committed
//! phantom (`tests/fixtures/demo/phantom_img.nii.gz`) with the tiny fixture
//! model, the README's box `7,42,101,68,133` (slice 7, x0 42, y0 101, x1 68,
//! y1 133), in voxel and in physical (LPS mm) coordinates, for every
//! propagation mode with and without the largest-component filter, through
//! `medsam2_session_segment` against the command line's job
//! (`medsam2_tools::volume_job::run_segment_job`, what `segment_volume` runs).
//! Plus the new entry points' error paths.

use std::ffi::{c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use medsam2::*;
use medsam2_core::medical::{self, Volume, VoxelData};
use medsam2_tools::volume_job::{run_segment_job, Propagation, SegmentJob};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn phantom() -> PathBuf {
    root().join("tests/fixtures/demo/phantom_img.nii.gz")
}

fn model_dir() -> PathBuf {
    root().join("tests/fixtures/sam2.1-tiny-a")
}

fn c(s: &Path) -> CString {
    CString::new(s.to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(medsam2_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn ok(st: medsam2_status, what: &str) {
    assert_eq!(st, medsam2_status::MEDSAM2_OK, "{what}: {}", last_error());
}

/// A fresh folder under the system's temporary folder.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsam2_ffi_segment_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Model(*mut medsam2_model);

impl Model {
    fn load() -> Model {
        let d = model_dir();
        let mut m = null_mut();
        ok(
            unsafe {
                medsam2_model_load(
                    c(&d.join("config.yaml")).as_ptr(),
                    c(&d.join("weights.safetensors")).as_ptr(),
                    null(),
                    null(),
                    &mut m,
                )
            },
            "model_load",
        );
        Model(m)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { medsam2_model_free(self.0) };
    }
}

struct Session(*mut medsam2_session);

impl Drop for Session {
    fn drop(&mut self) {
        unsafe { medsam2_session_free(self.0) };
    }
}

/// The volume's voxels as the C struct describes them (native bytes), and
/// the intensity mapping `segment_volume --window auto` uses.
struct CVolume {
    bytes: Vec<u8>,
    desc: medsam2_volume,
    intensity: medsam2_intensity,
}

fn c_volume(v: &Volume) -> CVolume {
    let (pixel_type, bytes): (u32, Vec<u8>) = match v.data() {
        VoxelData::U8(x) => (MEDSAM2_PIXEL_U8, x.clone()),
        VoxelData::I16(x) => (
            MEDSAM2_PIXEL_I16,
            x.iter().flat_map(|e| e.to_ne_bytes()).collect(),
        ),
        VoxelData::U16(x) => (
            MEDSAM2_PIXEL_U16,
            x.iter().flat_map(|e| e.to_ne_bytes()).collect(),
        ),
        VoxelData::F32(x) => (
            MEDSAM2_PIXEL_F32,
            x.iter().flat_map(|e| e.to_ne_bytes()).collect(),
        ),
        other => panic!("phantom voxels of type {:?}", other.data_type()),
    };
    let g = v.geometry();
    let mut direction = [0.0; 9];
    for r in 0..3 {
        for col in 0..3 {
            direction[3 * r + col] = g.direction[r][col];
        }
    }
    let d = v.dims();
    let intensity = medsam2_intensity {
        mode: if pixel_type == MEDSAM2_PIXEL_U8 {
            MEDSAM2_INTENSITY_NONE
        } else {
            MEDSAM2_INTENSITY_WINDOW
        },
        // W400 L40: `auto` for non-u8 voxels.
        window: medsam2_window {
            level: 40.0,
            width: 400.0,
        },
        lower_percentile: 0.0,
        upper_percentile: 0.0,
        stretch: MEDSAM2_STRETCH_CLIPPED_MINMAX,
    };
    let mut cv = CVolume {
        bytes,
        desc: medsam2_volume {
            voxels: null(),
            pixel_type,
            dims: [d[0] as u32, d[1] as u32, d[2] as u32],
            spacing: g.spacing,
            origin: g.origin,
            direction,
        },
        intensity,
    };
    cv.desc.voxels = cv.bytes.as_ptr().cast();
    cv
}

fn session(m: &Model, v: &CVolume) -> Session {
    session_with(m, v, None)
}

fn session_with(m: &Model, v: &CVolume, opts: Option<&medsam2_session_options>) -> Session {
    let mut s = null_mut();
    let o = opts.map_or(null(), |o| o as *const _);
    ok(
        unsafe { medsam2_session_new(m.0, &v.desc, &v.intensity, MEDSAM2_AXIS_K, o, &mut s) },
        "session_new",
    );
    Session(s)
}

/// `segment_volume`'s labels for one box argument (holes filled as its
/// default, 8 pixels).
fn cli_labels(
    box_arg: &str,
    physical: bool,
    p: Propagation,
    largest: bool,
    out: &Path,
) -> Vec<u16> {
    cli_labels_filled(box_arg, physical, p, largest, out, 8)
}

/// `segment_volume --fill-hole-area fill`'s labels for one box argument.
fn cli_labels_filled(
    box_arg: &str,
    physical: bool,
    p: Propagation,
    largest: bool,
    out: &Path,
    fill: usize,
) -> Vec<u16> {
    let d = model_dir();
    let mut j = SegmentJob::new(
        phantom(),
        out,
        d.join("weights.safetensors"),
        d.join("config.yaml").to_str().unwrap(),
    );
    j.boxes = vec![box_arg.to_string()];
    j.physical = physical;
    j.propagation = p;
    j.largest_component = largest;
    j.fill_hole_area = fill;
    let r = run_segment_job(&j, &mut |_| {}).unwrap();
    // The file written equals the report's volume.
    let back = medical::read_volume(out).unwrap();
    assert_eq!(back.data(), r.labels.data());
    r.labels
        .data()
        .to_f64_vec()
        .into_iter()
        .map(|x| x as u16)
        .collect()
}

unsafe extern "C" fn count_progress(user: *mut c_void, done: u32, total: u32) -> c_int {
    let seen = &mut *(user as *mut Vec<(u32, u32)>);
    seen.push((done, total));
    0
}

unsafe extern "C" fn cancel_at_3(_user: *mut c_void, done: u32, _total: u32) -> c_int {
    c_int::from(done >= 3)
}

fn c_segment(s: &Session, opts: Option<&medsam2_segment_options>, n: usize) -> Vec<u16> {
    let mut out = vec![u16::MAX; n];
    let mut seen: Vec<(u32, u32)> = Vec::new();
    ok(
        unsafe {
            medsam2_session_segment(
                s.0,
                opts.map_or(null(), |o| o as *const _),
                out.as_mut_ptr(),
                out.len(),
                Some(count_progress),
                (&mut seen as *mut Vec<(u32, u32)>).cast(),
            )
        },
        "session_segment",
    );
    let last = *seen.last().expect("progress was reported");
    assert_eq!(last.0, last.1, "progress ends at its total");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "progress increases"
    );
    out
}

#[test]
fn c_abi_reproduces_segment_volume_voxel_for_voxel() {
    let dir = tmp("modes");
    let vol = medical::read_volume(phantom()).unwrap();
    let n = vol.num_voxels();
    let cv = c_volume(&vol);
    let m = Model::load();
    let bbox = [42.0f32, 101.0, 68.0, 133.0];
    let modes = [
        (MEDSAM2_PROPAGATION_JOINT, Propagation::Joint),
        (MEDSAM2_PROPAGATION_SEPARATE, Propagation::Separate),
        (MEDSAM2_PROPAGATION_FORWARD, Propagation::Forward),
    ];
    let mut counts = Vec::new();
    for (cp, p) in modes {
        for largest in [false, true] {
            let want = cli_labels(
                "7,42,101,68,133",
                false,
                p,
                largest,
                &dir.join("seg.nii.gz"),
            );
            let s = session(&m, &cv);
            ok(
                unsafe { medsam2_session_add_box(s.0, 7, 1, bbox.as_ptr(), null_mut(), 0) },
                "add_box",
            );
            let opts = medsam2_segment_options {
                propagation: cp,
                largest_component: i32::from(largest),
                mask_threshold: 0.0,
            };
            let got = c_segment(&s, Some(&opts), n);
            let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(diff, 0, "{p:?} largest={largest}: {diff} voxels differ");
            let on = got.iter().filter(|&&l| l == 1).count();
            assert_eq!(on + got.iter().filter(|&&l| l == 0).count(), n);
            println!("{p:?} largest={largest}: {on} voxels of object 1");
            counts.push(on);
            // Segmenting again (prompts kept) gives the same labels.
            if cp == MEDSAM2_PROPAGATION_SEPARATE && !largest {
                assert_eq!(c_segment(&s, Some(&opts), n), got);
                // NULL options and propagation 0 are SEPARATE without the filter.
                assert_eq!(c_segment(&s, None, n), got);
                let zero = medsam2_segment_options {
                    propagation: 0,
                    largest_component: 0,
                    mask_threshold: 0.0,
                };
                assert_eq!(c_segment(&s, Some(&zero), n), got);
            }
        }
    }
    assert!(
        counts.iter().all(|&k| k > 0),
        "every mode segments something: {counts:?}"
    );
    // Forward-only reaches fewer slices than the two-way modes.
    assert!(
        counts[4] < counts[2],
        "forward {} vs separate {}",
        counts[4],
        counts[2]
    );

    // The same box in LPS millimetres, as `segment_volume --physical`.
    let g = vol.geometry();
    let c0 = g.index_to_physical([42.0, 101.0, 7.0]);
    let c1 = g.index_to_physical([68.0, 133.0, 7.0]);
    let arg = format!(
        "{},{},{},{},{},{}",
        c0[0], c0[1], c0[2], c1[0], c1[1], c1[2]
    );
    let want = cli_labels(
        &arg,
        true,
        Propagation::Separate,
        true,
        &dir.join("phys.nii.gz"),
    );
    let s = session(&m, &cv);
    let mut slice = u32::MAX;
    ok(
        unsafe { medsam2_session_add_box_physical(s.0, 1, c0.as_ptr(), c1.as_ptr(), &mut slice) },
        "add_box_physical",
    );
    assert_eq!(slice, 7);
    let opts = medsam2_segment_options {
        propagation: MEDSAM2_PROPAGATION_SEPARATE,
        largest_component: 1,
        mask_threshold: 0.0,
    };
    assert_eq!(c_segment(&s, Some(&opts), n), want);
    assert_eq!(want, {
        // and equal to the voxel box's labels
        cli_labels(
            "7,42,101,68,133",
            false,
            Propagation::Separate,
            true,
            &dir.join("vox.nii.gz"),
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `medsam2_session_options.fill_hole_area` (0 = the default 8, negative =
/// off, else the area) gives `segment_volume --fill-hole-area`'s labels.
#[test]
fn hole_filling_option_matches_the_command_line() {
    let dir = tmp("fill");
    let vol = medical::read_volume(phantom()).unwrap();
    let n = vol.num_voxels();
    let cv = c_volume(&vol);
    let m = Model::load();
    let bbox = [42.0f32, 101.0, 68.0, 133.0];
    let mut got_by_area = Vec::new();
    for (c_fill, cli_fill) in [(-1, 0), (0, 8), (40, 40)] {
        let want = cli_labels_filled(
            "7,42,101,68,133",
            false,
            Propagation::Separate,
            false,
            &dir.join("seg.nii.gz"),
            cli_fill,
        );
        let o = medsam2_session_options {
            feature_cache_slices: 0,
            non_overlap_masks: 0,
            fill_hole_area: c_fill,
        };
        let s = session_with(&m, &cv, Some(&o));
        ok(
            unsafe { medsam2_session_add_box(s.0, 7, 1, bbox.as_ptr(), null_mut(), 0) },
            "add_box",
        );
        let got = c_segment(&s, None, n);
        assert_eq!(got, want, "fill_hole_area {c_fill}");
        let on = got.iter().filter(|&&l| l == 1).count();
        println!("fill_hole_area {c_fill}: {on} voxels of object 1");
        got_by_area.push(on);
    }
    // The option reaches the core: on this phantom each setting segments a
    // different number of voxels (709070 / 720547 / 721097 when written).
    println!("voxels off / 8 / 40: {got_by_area:?}");
    let [off, eight, forty] = got_by_area[..] else {
        unreachable!()
    };
    assert!(
        off != eight && eight != forty && off != forty,
        "{got_by_area:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segment_and_physical_box_errors_are_one_line() {
    let vol = medical::read_volume(phantom()).unwrap();
    let n = vol.num_voxels();
    let cv = c_volume(&vol);
    let m = Model::load();
    let s = session(&m, &cv);
    let mut out = vec![0u16; n];
    let st = |e: medsam2_status, want: medsam2_status, needle: &str| {
        assert_eq!(e, want, "{}", last_error());
        let msg = last_error();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
    };
    // No prompt yet.
    st(
        unsafe { medsam2_session_segment(s.0, null(), out.as_mut_ptr(), n, None, null_mut()) },
        medsam2_status::MEDSAM2_ERR_INVALID_STATE,
        "no prompt",
    );
    // NULL session / output, short output, bad options.
    st(
        unsafe {
            medsam2_session_segment(null_mut(), null(), out.as_mut_ptr(), n, None, null_mut())
        },
        medsam2_status::MEDSAM2_ERR_NULL_POINTER,
        "session",
    );
    st(
        unsafe { medsam2_session_segment(s.0, null(), null_mut(), n, None, null_mut()) },
        medsam2_status::MEDSAM2_ERR_NULL_POINTER,
        "out_labels",
    );
    st(
        unsafe { medsam2_session_segment(s.0, null(), out.as_mut_ptr(), n - 1, None, null_mut()) },
        medsam2_status::MEDSAM2_ERR_BUFFER_TOO_SMALL,
        "out_labels",
    );
    let bad = medsam2_segment_options {
        propagation: 9,
        largest_component: 0,
        mask_threshold: 0.0,
    };
    st(
        unsafe { medsam2_session_segment(s.0, &bad, out.as_mut_ptr(), n, None, null_mut()) },
        medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
        "propagation 9",
    );
    let nan = medsam2_segment_options {
        propagation: 1,
        largest_component: 0,
        mask_threshold: f32::NAN,
    };
    st(
        unsafe { medsam2_session_segment(s.0, &nan, out.as_mut_ptr(), n, None, null_mut()) },
        medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
        "not finite",
    );
    // Physical boxes: outside the volume, not finite, NULL corners, object 0.
    let g = vol.geometry();
    let far = g.index_to_physical([42.0, 101.0, 1000.0]);
    let far2 = g.index_to_physical([68.0, 133.0, 2000.0]);
    st(
        unsafe {
            medsam2_session_add_box_physical(s.0, 1, far.as_ptr(), far2.as_ptr(), null_mut())
        },
        medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
        "misses",
    );
    let wide = g.index_to_physical([-50.0, 101.0, 7.0]);
    let c1 = g.index_to_physical([68.0, 133.0, 7.0]);
    st(
        unsafe { medsam2_session_add_box_physical(s.0, 1, wide.as_ptr(), c1.as_ptr(), null_mut()) },
        medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
        "is not on the",
    );
    let inf = [f64::INFINITY, 0.0, 0.0];
    st(
        unsafe { medsam2_session_add_box_physical(s.0, 1, inf.as_ptr(), c1.as_ptr(), null_mut()) },
        medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
        "",
    );
    st(
        unsafe { medsam2_session_add_box_physical(s.0, 1, null(), c1.as_ptr(), null_mut()) },
        medsam2_status::MEDSAM2_ERR_NULL_POINTER,
        "corner0",
    );
    let c0 = g.index_to_physical([42.0, 101.0, 7.0]);
    st(
        unsafe { medsam2_session_add_box_physical(s.0, 0, c0.as_ptr(), c1.as_ptr(), null_mut()) },
        medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT,
        "object id 0",
    );
    // A good box (out_slice may be NULL), then a cancelled segmentation: the
    // session stays valid and segments afterwards.
    ok(
        unsafe { medsam2_session_add_box_physical(s.0, 1, c0.as_ptr(), c1.as_ptr(), null_mut()) },
        "add_box_physical",
    );
    st(
        unsafe {
            medsam2_session_segment(
                s.0,
                null(),
                out.as_mut_ptr(),
                n,
                Some(cancel_at_3),
                null_mut(),
            )
        },
        medsam2_status::MEDSAM2_ERR_CANCELLED,
        "cancelled",
    );
    ok(
        unsafe { medsam2_session_segment(s.0, null(), out.as_mut_ptr(), n, None, null_mut()) },
        "segment after a cancel",
    );
    assert!(out.contains(&1));
    assert!(out.iter().all(|&l| l <= 1));
}
