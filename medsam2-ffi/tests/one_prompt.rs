//! One-prompt segmentation through the C ABI (`medsam2_one_prompt_*`): on the
//! committed one-prompt fixture stream (`tests/fixtures/sam2.1-heads-c`, 16
//! images, clicks every 5th image) the C calls give exactly what the core's
//! `OnePromptSession` gives in both bank modes; a bank saved (to a file or to
//! memory) and loaded gives the same next results; freezing; and every error
//! path returns its status with a one-line message and leaves the session
//! unchanged.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::Arc;

use medsam2::*;
use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::confidence_bank::{BankAction, BankOptions, Retrieval};
use medsam2_core::medical::intensity::{IntensityMap, Window};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::one_prompt::{ImageInput, OnePromptOutput, OnePromptSession};
use medsam2_core::sam2_image_predictor::Prompt;

use medsam2_status::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/sam2.1-heads-c")
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn cpath(p: &Path) -> CString {
    c(p.to_str().unwrap())
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(medsam2_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn ok(st: medsam2_status) {
    assert_eq!(st, MEDSAM2_OK, "{}", last_error());
    assert_eq!(last_error(), "");
}

/// Asserts a failure with `status` and a one-line message containing `part`.
fn fails(st: medsam2_status, status: medsam2_status, part: &str) -> String {
    let e = last_error();
    assert_eq!(st, status, "message: {e}");
    assert!(
        !e.is_empty() && !e.contains('\n') && !e.contains("panic"),
        "not a one-line error: {e:?}"
    );
    assert!(e.contains(part), "`{part}` not in {e:?}");
    e
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("medsam2-ffi-one-prompt")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ------------------------------------------------------------------ the fixture stream

/// The fixture's images (u8 RGB `[S, S, 3]`), ground-truth masks and clicks.
struct Stream {
    size: usize,
    images: Vec<Vec<u8>>,
    gt: Vec<Vec<u8>>,
    clicks: Vec<[f32; 2]>,
}

fn stream() -> Stream {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("oneprompt.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let raw = st.tensor("oneprompt/raw_rgb").unwrap();
    let (n, s) = (raw.shape()[0], raw.shape()[1]);
    assert_eq!(raw.shape(), [n, s, s, 3]);
    let images = raw
        .data()
        .chunks_exact(s * s * 3)
        .map(<[u8]>::to_vec)
        .collect();
    let gt = st.tensor("oneprompt/gt_masks").unwrap();
    assert_eq!(gt.shape(), [n, s, s]);
    let gt = gt.data().chunks_exact(s * s).map(<[u8]>::to_vec).collect();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("fixture.json")).unwrap()).unwrap();
    let clicks = json["one_prompt"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| {
            let c = &im["gt_click_xy"];
            [c[0].as_f64().unwrap() as f32, c[1].as_f64().unwrap() as f32]
        })
        .collect::<Vec<_>>();
    assert_eq!(clicks.len(), n);
    Stream {
        size: s,
        images,
        gt,
        clicks,
    }
}

/// The abdomen window, and image `i` of the stream as a CT-like i16 slice.
fn ct_slice(st: &Stream, i: usize) -> Vec<i16> {
    st.images[i]
        .chunks_exact(3)
        .map(|p| p[0] as i16 * 3 - 200)
        .collect()
}

/// How image `i` is given to both APIs.
#[derive(Clone, Copy, Debug)]
enum Step {
    Click,
    Box,
    Mask,
    Segment,
    /// Segment the image as an i16 slice through the abdomen window.
    SegmentCt,
}

fn plan(i: usize) -> Step {
    match i {
        _ if i.is_multiple_of(5) => Step::Click,
        3 => Step::Mask,
        7 => Step::Box,
        9 | 13 => Step::SegmentCt,
        _ => Step::Segment,
    }
}

const BOX: [f32; 4] = [12.0, 10.0, 50.0, 44.0];

/// One image through the core.
fn core_step(s: &mut OnePromptSession, st: &Stream, i: usize) -> OnePromptOutput {
    let n = st.size;
    let rgb = ImageInput::Rgb8 {
        data: &st.images[i],
        height: n,
        width: n,
    };
    match plan(i) {
        Step::Click => s.add_prompt(&rgb, &Prompt::point(st.clicks[i][0], st.clicks[i][1])),
        Step::Box => s.add_prompt(&rgb, &Prompt::bbox(BOX[0], BOX[1], BOX[2], BOX[3])),
        Step::Mask => s.add_mask(&rgb, &st.gt[i]),
        Step::Segment => s.segment(&rgb),
        Step::SegmentCt => {
            let w = Window::ABDOMEN;
            let map = IntensityMap {
                lower: w.lower(),
                upper: w.upper(),
                keep_zero: false,
            };
            let grey: Vec<f32> = ct_slice(st, i)
                .iter()
                .map(|&v| map.unit(v as f64) as f32)
                .collect();
            s.segment(&ImageInput::GreyF32 {
                data: &grey,
                height: n,
                width: n,
            })
        }
    }
    .unwrap()
}

/// What the C API returned for one image.
struct COut {
    mask: Vec<u8>,
    iou: f32,
    logits: Vec<f32>,
    result: medsam2_one_prompt_result,
}

/// One image through the C API.
fn c_step(s: *mut medsam2_one_prompt, st: &Stream, i: usize) -> COut {
    let n = st.size;
    let ct = ct_slice(st, i);
    let mut img = medsam2_image {
        data: st.images[i].as_ptr().cast(),
        pixel_type: MEDSAM2_PIXEL_U8,
        width: n as u32,
        height: n as u32,
        channels: 3,
        row_stride: 0,
        window: medsam2_window::default(),
    };
    let mut mask = vec![7u8; n * n];
    let mut iou = f32::NAN;
    let click = st.clicks[i];
    let label = 1i32;
    unsafe {
        match plan(i) {
            Step::Click | Step::Box => {
                let mut p = medsam2_prompt {
                    points: null(),
                    labels: null(),
                    num_points: 0,
                    bbox: null(),
                    mask_input: null(),
                    mask_input_len: 0,
                };
                if let Step::Click = plan(i) {
                    p.points = click.as_ptr();
                    p.labels = &label;
                    p.num_points = 1;
                } else {
                    p.bbox = BOX.as_ptr();
                }
                ok(medsam2_one_prompt_add_prompt(
                    s,
                    &img,
                    &p,
                    mask.as_mut_ptr(),
                    mask.len(),
                    &mut iou,
                ));
            }
            Step::Mask => {
                ok(medsam2_one_prompt_add_mask(
                    s,
                    &img,
                    st.gt[i].as_ptr(),
                    n * n,
                ));
                mask.copy_from_slice(&st.gt[i]);
                iou = 1.0;
            }
            Step::Segment | Step::SegmentCt => {
                if let Step::SegmentCt = plan(i) {
                    img.data = ct.as_ptr().cast();
                    img.pixel_type = MEDSAM2_PIXEL_I16;
                    img.channels = 1;
                    ok(medsam2_window_preset(c"abdomen".as_ptr(), &mut img.window));
                }
                ok(medsam2_one_prompt_segment(
                    s,
                    &img,
                    mask.as_mut_ptr(),
                    mask.len(),
                    &mut iou,
                ));
            }
        }
        let mut result = std::mem::zeroed::<medsam2_one_prompt_result>();
        ok(medsam2_one_prompt_last_result(s, &mut result));
        let mut logits = vec![0f32; n * n];
        ok(medsam2_one_prompt_last_logits(
            s,
            logits.as_mut_ptr(),
            logits.len(),
        ));
        COut {
            mask,
            iou,
            logits,
            result,
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The C result equals the core's, bit for bit.
fn assert_same(i: usize, c: &COut, r: &OnePromptOutput, core_bank_len: usize) {
    assert_eq!(c.mask, r.mask, "image {i}: masks differ");
    assert_eq!(c.iou.to_bits(), r.iou.to_bits(), "image {i}: IoU differs");
    assert_eq!(bits(&c.logits), bits(&r.logits), "image {i}: logits differ");
    let d = &c.result;
    assert_eq!(d.index, r.index);
    assert_eq!(d.iou.to_bits(), r.iou.to_bits());
    assert_eq!(d.object_score.to_bits(), r.object_score.to_bits());
    assert_eq!(d.prompted != 0, r.prompted);
    assert_eq!(d.num_picked as usize, r.picked_sources.len());
    let action = match r.update.action {
        BankAction::Append => MEDSAM2_BANK_APPENDED,
        BankAction::Replace { .. } => MEDSAM2_BANK_REPLACED,
        BankAction::KeepSimilarity => MEDSAM2_BANK_KEPT_SIMILARITY,
        BankAction::KeepIou => MEDSAM2_BANK_KEPT_IOU,
        BankAction::Frozen => MEDSAM2_BANK_FROZEN,
    };
    assert_eq!(d.bank_action, action, "image {i}: bank action");
    assert_eq!(d.dropped_source, r.dropped_source.map_or(-1, |s| s as i64));
    assert_eq!(d.bank_len as usize, core_bank_len);
}

fn model_paths() -> (CString, CString) {
    let d = fixture_dir();
    (
        cpath(&d.join("config.yaml")),
        cpath(&d.join("weights.safetensors")),
    )
}

fn c_model() -> *mut medsam2_model {
    let (cfg, w) = model_paths();
    let mut m = null_mut();
    ok(unsafe { medsam2_model_load(cfg.as_ptr(), w.as_ptr(), null(), null(), &mut m) });
    m
}

fn core_model() -> Arc<Sam2Base> {
    let d = fixture_dir();
    build_sam2(
        d.join("config.yaml").to_str().unwrap(),
        d.join("weights.safetensors"),
        ComputeDType::F32,
        DeviceKind::Cpu,
    )
    .unwrap()
}

fn c_session(
    m: *const medsam2_model,
    o: Option<&medsam2_one_prompt_options>,
) -> *mut medsam2_one_prompt {
    let mut s = null_mut();
    ok(unsafe { medsam2_one_prompt_new(m, o.map_or(null(), |o| o as *const _), &mut s) });
    assert!(!s.is_null());
    s
}

/// Options of both modes as the C API and the core see them: capacity 4
/// (the fixture's bank size, so that replacements happen), top-2 retrieval
/// in the fixed mode, sampling with seed 11 in the reference mode.
fn both_modes() -> Vec<(&'static str, medsam2_one_prompt_options, BankOptions)> {
    let mut out = Vec::new();
    for (name, mode) in [
        ("fixed", MEDSAM2_BANK_MODE_FIXED),
        ("reference", MEDSAM2_BANK_MODE_REFERENCE),
    ] {
        let mut o = unsafe { std::mem::zeroed::<medsam2_one_prompt_options>() };
        ok(unsafe { medsam2_one_prompt_options_default(mode, &mut o) });
        o.capacity = 4;
        let mut r = if mode == MEDSAM2_BANK_MODE_FIXED {
            o.top_k = 2;
            BankOptions::fixed()
        } else {
            o.seed = 11;
            BankOptions::reference()
        };
        r.capacity = 4;
        r.retrieval = if mode == MEDSAM2_BANK_MODE_FIXED {
            Retrieval::TopK(2)
        } else {
            Retrieval::Sample { seed: 11 }
        };
        out.push((name, o, r));
    }
    out
}

// ------------------------------------------------------------------ tests

#[test]
fn c_calls_equal_the_core_session() {
    let st = stream();
    let (cm, rm) = (c_model(), core_model());
    for (name, co, ro) in both_modes() {
        let s = c_session(cm, Some(&co));
        let mut r = OnePromptSession::new(rm.clone(), ro).unwrap();
        let mut got = unsafe { std::mem::zeroed::<medsam2_one_prompt_options>() };
        ok(unsafe { medsam2_one_prompt_get_options(s, &mut got) });
        assert_eq!(got, co, "{name}: options read back");
        let mut replaced = 0;
        let mut picked_two = 0;
        for i in 0..st.images.len() {
            let x = c_step(s, &st, i);
            let y = core_step(&mut r, &st, i);
            assert_same(i, &x, &y, r.bank().len());
            replaced += (x.result.bank_action == MEDSAM2_BANK_REPLACED) as usize;
            picked_two += (x.result.num_picked == 2) as usize;
            assert!(x.mask.iter().all(|&v| v <= 1), "mask not 0/1");
        }
        let (mut len, mut seen) = (0u32, 0u64);
        ok(unsafe { medsam2_one_prompt_bank_len(s, &mut len) });
        ok(unsafe { medsam2_one_prompt_images_seen(s, &mut seen) });
        assert_eq!(len as usize, r.bank().len());
        assert_eq!(len, 4, "{name}: the bank did not fill up");
        assert_eq!(seen, 16);
        if name == "fixed" {
            assert!(
                picked_two >= 10,
                "top-2 attended to 2 memories only {picked_two} times"
            );
        }
        println!("{name}: 16 images equal to the core, {replaced} replacement(s)");
        ok(unsafe { medsam2_one_prompt_free(s) });
    }
    ok(unsafe { medsam2_model_free(cm) });
}

#[test]
fn saved_bank_gives_the_same_next_results() {
    let st = stream();
    let cm = c_model();
    let dir = tmp_dir("round_trip");
    for (name, co, _) in both_modes() {
        let a = c_session(cm, Some(&co));
        for i in 0..8 {
            c_step(a, &st, i);
        }
        let path = dir.join(format!("{name}.safetensors"));
        ok(unsafe { medsam2_one_prompt_save_bank(a, cpath(&path).as_ptr()) });
        // Saving again replaces the bank file.
        ok(unsafe { medsam2_one_prompt_save_bank(a, cpath(&path).as_ptr()) });
        let mut size = 0usize;
        ok(unsafe { medsam2_one_prompt_bank_to_bytes(a, null_mut(), 0, &mut size) });
        assert_eq!(size as u64, std::fs::metadata(&path).unwrap().len());
        let mut bytes = vec![0u8; size];
        ok(unsafe { medsam2_one_prompt_bank_to_bytes(a, bytes.as_mut_ptr(), size, &mut size) });

        // Sessions created with the other mode's defaults: the bank brings its options.
        let b = c_session(cm, None);
        ok(unsafe { medsam2_one_prompt_load_bank(b, cpath(&path).as_ptr()) });
        let other = if co.mode == MEDSAM2_BANK_MODE_FIXED {
            MEDSAM2_BANK_MODE_REFERENCE
        } else {
            MEDSAM2_BANK_MODE_FIXED
        };
        let mut oo = unsafe { std::mem::zeroed::<medsam2_one_prompt_options>() };
        ok(unsafe { medsam2_one_prompt_options_default(other, &mut oo) });
        let m = c_session(cm, Some(&oo));
        ok(unsafe { medsam2_one_prompt_load_bank_from_memory(m, bytes.as_ptr(), bytes.len()) });
        for s in [b, m] {
            let mut got = unsafe { std::mem::zeroed::<medsam2_one_prompt_options>() };
            ok(unsafe { medsam2_one_prompt_get_options(s, &mut got) });
            assert_eq!(got, co, "{name}: options not restored");
            let mut seen = 0u64;
            ok(unsafe { medsam2_one_prompt_images_seen(s, &mut seen) });
            assert_eq!(seen, 8);
        }
        for i in 8..st.images.len() {
            let x = c_step(a, &st, i);
            for (what, s) in [("file", b), ("memory", m)] {
                let y = c_step(s, &st, i);
                assert_eq!(x.mask, y.mask, "{name}/{what}: image {i}: masks differ");
                assert_eq!(bits(&x.logits), bits(&y.logits), "{name}/{what}: image {i}");
                assert_eq!(x.result, y.result, "{name}/{what}: image {i}");
            }
        }
        for s in [a, b, m] {
            ok(unsafe { medsam2_one_prompt_free(s) });
        }
    }
    ok(unsafe { medsam2_model_free(cm) });
}

#[test]
fn a_frozen_bank_is_used_but_unchanged() {
    let st = stream();
    let cm = c_model();
    let s = c_session(cm, None);
    for i in 0..3 {
        c_step(s, &st, i);
    }
    let mut before = 0u32;
    ok(unsafe { medsam2_one_prompt_bank_len(s, &mut before) });
    ok(unsafe { medsam2_one_prompt_set_frozen(s, 1) });
    let mut frozen = 0;
    ok(unsafe { medsam2_one_prompt_is_frozen(s, &mut frozen) });
    assert_eq!(frozen, 1);
    for i in 3..6 {
        let x = c_step(s, &st, i);
        assert_eq!(x.result.bank_action, MEDSAM2_BANK_FROZEN);
        assert_eq!(x.result.bank_len, before);
        assert!(x.result.num_picked >= 1);
    }
    let dir = tmp_dir("frozen");
    let path = dir.join("bank.safetensors");
    ok(unsafe { medsam2_one_prompt_save_bank(s, cpath(&path).as_ptr()) });
    let t = c_session(cm, None);
    ok(unsafe { medsam2_one_prompt_load_bank(t, cpath(&path).as_ptr()) });
    ok(unsafe { medsam2_one_prompt_is_frozen(t, &mut frozen) });
    assert_eq!(frozen, 1, "the frozen flag was not saved");
    ok(unsafe { medsam2_one_prompt_set_frozen(s, 0) });
    let x = c_step(s, &st, 6);
    assert_ne!(x.result.bank_action, MEDSAM2_BANK_FROZEN);
    for h in [s, t] {
        ok(unsafe { medsam2_one_prompt_free(h) });
    }
    ok(unsafe { medsam2_model_free(cm) });
}

/// Every failure: its status, a one-line message, no effect on the session.
#[test]
fn error_paths() {
    let st = stream();
    let n = st.size;
    let cm = c_model();
    let s = c_session(cm, None);
    c_step(s, &st, 0);
    let (mut len0, mut seen0) = (0u32, 0u64);
    ok(unsafe { medsam2_one_prompt_bank_len(s, &mut len0) });
    ok(unsafe { medsam2_one_prompt_images_seen(s, &mut seen0) });
    let unchanged = || {
        let (mut len, mut seen) = (0u32, 0u64);
        unsafe {
            medsam2_one_prompt_bank_len(s, &mut len);
            medsam2_one_prompt_images_seen(s, &mut seen);
        }
        assert_eq!(
            (len, seen),
            (len0, seen0),
            "a failed call changed the session"
        );
    };
    let img = medsam2_image {
        data: st.images[1].as_ptr().cast(),
        pixel_type: MEDSAM2_PIXEL_U8,
        width: n as u32,
        height: n as u32,
        channels: 3,
        row_stride: 0,
        window: medsam2_window::default(),
    };
    let pt = [10.0f32, 12.0];
    let label = 1i32;
    let prompt = medsam2_prompt {
        points: pt.as_ptr(),
        labels: &label,
        num_points: 1,
        bbox: null(),
        mask_input: null(),
        mask_input_len: 0,
    };
    let mut mask = vec![0u8; n * n];
    let (mp, ml) = (mask.as_mut_ptr(), mask.len());
    let np = MEDSAM2_ERR_NULL_POINTER;
    let inv = MEDSAM2_ERR_INVALID_ARGUMENT;
    unsafe {
        // NULL handles and pointers.
        let mut out = null_mut();
        fails(
            medsam2_one_prompt_new(null(), null(), &mut out),
            np,
            "`model`",
        );
        assert!(out.is_null());
        fails(
            medsam2_one_prompt_new(cm, null(), null_mut()),
            np,
            "out_session",
        );
        fails(
            medsam2_one_prompt_options_default(0, null_mut()),
            np,
            "out_options",
        );
        fails(
            medsam2_one_prompt_add_prompt(null_mut(), &img, &prompt, mp, ml, null_mut()),
            np,
            "`session`",
        );
        fails(
            medsam2_one_prompt_add_prompt(s, null(), &prompt, mp, ml, null_mut()),
            np,
            "`image`",
        );
        fails(
            medsam2_one_prompt_add_prompt(s, &img, null(), mp, ml, null_mut()),
            np,
            "`prompt`",
        );
        fails(
            medsam2_one_prompt_segment(s, &img, null_mut(), ml, null_mut()),
            np,
            "out_mask",
        );
        fails(
            medsam2_one_prompt_add_mask(s, &img, null(), ml),
            np,
            "`mask`",
        );
        let no_data = medsam2_image {
            data: null(),
            ..img
        };
        fails(
            medsam2_one_prompt_segment(s, &no_data, mp, ml, null_mut()),
            np,
            "image->data",
        );
        fails(medsam2_one_prompt_save_bank(s, null()), np, "`path`");
        fails(medsam2_one_prompt_load_bank(s, null()), np, "`path`");
        fails(
            medsam2_one_prompt_load_bank_from_memory(s, null(), 10),
            np,
            "`data`",
        );
        fails(medsam2_one_prompt_bank_len(s, null_mut()), np, "out_len");
        fails(
            medsam2_one_prompt_images_seen(null(), &mut 0),
            np,
            "`session`",
        );
        fails(
            medsam2_one_prompt_set_frozen(null_mut(), 1),
            np,
            "`session`",
        );
        ok(medsam2_one_prompt_free(null_mut()));
        unchanged();

        // Wrong sizes.
        fails(
            medsam2_one_prompt_segment(s, &img, mp, ml - 1, null_mut()),
            MEDSAM2_ERR_BUFFER_TOO_SMALL,
            &format!("{} are needed", n * n),
        );
        fails(
            medsam2_one_prompt_add_mask(s, &img, st.gt[1].as_ptr(), n * n - 1),
            inv,
            "mask_len",
        );
        let huge = medsam2_image {
            width: 70000,
            height: 1,
            ..img
        };
        let mut big = vec![0u8; 70000];
        fails(
            medsam2_one_prompt_segment(s, &huge, big.as_mut_ptr(), big.len(), null_mut()),
            inv,
            "65536",
        );
        let odd = medsam2_image { channels: 2, ..img };
        fails(
            medsam2_one_prompt_segment(s, &odd, mp, ml, null_mut()),
            inv,
            "channels",
        );
        let i16_no_window = medsam2_image {
            pixel_type: MEDSAM2_PIXEL_I16,
            channels: 1,
            ..img
        };
        fails(
            medsam2_one_prompt_segment(s, &i16_no_window, mp, ml, null_mut()),
            inv,
            "window",
        );
        let many = medsam2_prompt {
            num_points: 5000,
            ..prompt
        };
        fails(
            medsam2_one_prompt_add_prompt(s, &img, &many, mp, ml, null_mut()),
            inv,
            "MAX_PROMPT_POINTS",
        );
        let outside = [500.0f32, 12.0];
        let out_p = medsam2_prompt {
            points: outside.as_ptr(),
            ..prompt
        };
        fails(
            medsam2_one_prompt_add_prompt(s, &img, &out_p, mp, ml, null_mut()),
            inv,
            "outside",
        );
        let empty = medsam2_prompt {
            num_points: 0,
            ..prompt
        };
        fails(
            medsam2_one_prompt_add_prompt(s, &img, &empty, mp, ml, null_mut()),
            inv,
            "",
        );
        let bad_mi = [0f32; 3];
        let mi = medsam2_prompt {
            mask_input: bad_mi.as_ptr(),
            mask_input_len: 3,
            ..prompt
        };
        fails(
            medsam2_one_prompt_add_prompt(s, &img, &mi, mp, ml, null_mut()),
            inv,
            "mask_input_len",
        );
        fails(
            medsam2_one_prompt_load_bank_from_memory(s, [1u8].as_ptr(), usize::MAX),
            inv,
            "MAX_TENSOR_BYTES",
        );
        let mut small = [0u8; 16];
        let mut need = 0usize;
        fails(
            medsam2_one_prompt_bank_to_bytes(s, small.as_mut_ptr(), small.len(), &mut need),
            MEDSAM2_ERR_BUFFER_TOO_SMALL,
            "are needed",
        );
        assert!(
            need > 16,
            "the size was not reported with a too small buffer"
        );
        unchanged();

        // Bad options.
        let mut o = std::mem::zeroed::<medsam2_one_prompt_options>();
        fails(
            medsam2_one_prompt_options_default(7, &mut o),
            inv,
            "bank mode 7",
        );
        ok(medsam2_one_prompt_options_default(
            MEDSAM2_BANK_MODE_FIXED,
            &mut o,
        ));
        for (bad, part) in [
            (medsam2_one_prompt_options { capacity: 0, ..o }, "capacity"),
            (medsam2_one_prompt_options { top_k: 0, ..o }, "k >= 1"),
            (
                medsam2_one_prompt_options { retrieval: 9, ..o },
                "retrieval 9",
            ),
            (
                medsam2_one_prompt_options {
                    preprocessing: 9,
                    ..o
                },
                "preprocessing 9",
            ),
            (
                medsam2_one_prompt_options {
                    iou_margin: f32::NAN,
                    ..o
                },
                "margin",
            ),
        ] {
            let mut out = null_mut();
            fails(medsam2_one_prompt_new(cm, &bad, &mut out), inv, part);
            assert!(out.is_null());
        }

        // State: nothing processed yet.
        let fresh = c_session(cm, None);
        let mut r = std::mem::zeroed::<medsam2_one_prompt_result>();
        fails(
            medsam2_one_prompt_last_result(fresh, &mut r),
            MEDSAM2_ERR_INVALID_STATE,
            "no image",
        );
        fails(
            medsam2_one_prompt_last_logits(fresh, mp.cast(), 1),
            MEDSAM2_ERR_INVALID_STATE,
            "no image",
        );
        // A failed call forgets the last result.
        fails(
            medsam2_one_prompt_segment(s, &img, mp, 1, null_mut()),
            MEDSAM2_ERR_BUFFER_TOO_SMALL,
            "",
        );
        fails(
            medsam2_one_prompt_last_result(s, &mut r),
            MEDSAM2_ERR_INVALID_STATE,
            "",
        );
        ok(medsam2_one_prompt_free(fresh));

        // Bank files: missing, not a bank, invalid UTF-8, another model's bank.
        let dir = tmp_dir("errors");
        let missing = dir.join("missing.safetensors");
        fails(
            medsam2_one_prompt_load_bank(s, cpath(&missing).as_ptr()),
            MEDSAM2_ERR_IO,
            "missing.safetensors",
        );
        fails(
            medsam2_one_prompt_load_bank(s, cpath(&dir).as_ptr()),
            MEDSAM2_ERR_IO,
            "directory",
        );
        let weights = fixture_dir().join("weights.safetensors");
        fails(
            medsam2_one_prompt_load_bank(s, cpath(&weights).as_ptr()),
            inv,
            "not a valid confidence-bank file",
        );
        fails(
            medsam2_one_prompt_load_bank_from_memory(s, b"junk".as_ptr(), 4),
            inv,
            "not a valid confidence-bank file",
        );
        fails(
            medsam2_one_prompt_load_bank_from_memory(s, null(), 0),
            inv,
            "",
        );
        // A crafted header announcing a 2 TB tensor in a few bytes: refused
        // from the header, nothing of that size is allocated.
        let header = br#"{"__metadata__":{"format":"medsam2-confidence-bank"},"entry.0.features":{"dtype":"BF16","shape":[1,100000,100000,100],"data_offsets":[0,2000000000000]}}"#;
        let mut crafted = (header.len() as u64).to_le_bytes().to_vec();
        crafted.extend_from_slice(header);
        crafted.extend_from_slice(&[0u8; 64]);
        fails(
            medsam2_one_prompt_load_bank_from_memory(s, crafted.as_ptr(), crafted.len()),
            inv,
            "not a valid confidence-bank file",
        );
        let bad_utf8: &[u8] = b"/tmp/\xff\xfe.safetensors\0";
        fails(
            medsam2_one_prompt_load_bank(s, bad_utf8.as_ptr() as *const c_char),
            inv,
            "UTF-8",
        );
        unchanged();

        let other_dir = root().join("tests/fixtures/sam2.1-tiny-a");
        let (ocfg, ow) = (
            cpath(&other_dir.join("config.yaml")),
            cpath(&other_dir.join("weights.safetensors")),
        );
        let mut other = null_mut();
        ok(medsam2_model_load(
            ocfg.as_ptr(),
            ow.as_ptr(),
            null(),
            null(),
            &mut other,
        ));
        let os = c_session(other, None);
        let bank = dir.join("bank.safetensors");
        ok(medsam2_one_prompt_save_bank(s, cpath(&bank).as_ptr()));
        fails(
            medsam2_one_prompt_load_bank(os, cpath(&bank).as_ptr()),
            inv,
            "this model needs",
        );
        let mut seen = 9u64;
        ok(medsam2_one_prompt_images_seen(os, &mut seen));
        assert_eq!(seen, 0, "a refused bank changed the other session");
        ok(medsam2_one_prompt_free(os));
        ok(medsam2_model_free(other));

        // Saving: never over another file, a directory, or an unwritable folder.
        let copy = dir.join("weights.safetensors");
        std::fs::copy(&weights, &copy).unwrap();
        let before = std::fs::read(&copy).unwrap();
        fails(
            medsam2_one_prompt_save_bank(s, cpath(&copy).as_ptr()),
            MEDSAM2_ERR_IO,
            "not a confidence-bank file",
        );
        assert!(
            std::fs::read(&copy).unwrap() == before,
            "the file was changed"
        );
        fails(
            medsam2_one_prompt_save_bank(s, cpath(&dir).as_ptr()),
            MEDSAM2_ERR_IO,
            "directory",
        );
        fails(
            medsam2_one_prompt_save_bank(s, cpath(&dir.join("no/such/folder/b.st")).as_ptr()),
            MEDSAM2_ERR_IO,
            "",
        );
        assert!(!dir.join("no").exists());
        unchanged();
    }
    ok(unsafe { medsam2_one_prompt_free(s) });
    ok(unsafe { medsam2_model_free(cm) });
}

/// A handle moved to another thread (one thread uses it at a time).
struct Sendable<T>(*mut T);
unsafe impl<T> Send for Sendable<T> {}

/// Sessions over one shared model on four threads at once give the
/// one-thread results bit for bit.
#[test]
fn sessions_on_threads_share_a_model() {
    let st = Arc::new(stream());
    let cm = c_model();
    let run_stream = |s: *mut medsam2_one_prompt, st: &Stream| -> Vec<(Vec<u8>, Vec<u32>)> {
        (0..st.images.len())
            .map(|i| {
                let o = c_step(s, st, i);
                (o.mask, bits(&o.logits))
            })
            .collect()
    };
    let s = c_session(cm, None);
    let alone = run_stream(s, &st);
    ok(unsafe { medsam2_one_prompt_free(s) });
    let model = Sendable(cm);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = Sendable(c_session(model.0, None));
            let st = st.clone();
            std::thread::spawn(move || {
                let s = s;
                let out = run_stream(s.0, &st);
                ok(unsafe { medsam2_one_prompt_free(s.0) });
                out
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap() == alone, "a thread's results differ");
    }
    ok(unsafe { medsam2_model_free(cm) });
}
