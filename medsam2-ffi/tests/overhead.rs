//! The C API gives exactly the Rust API's results (same process, same code),
//! and costs little on top of it: prints the time of `set_image`, `predict`
//! and a volume propagation both ways on the tiny fixture model.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::time::Instant;

use medsam2::*;
use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};

fn fixture() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = std::env::var_os("MEDSAM2_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/fixtures"));
    [
        root.join("tests/fixtures/sam2.1-heads-c"),
        shared.join("tiny-sam2.1"),
    ]
    .into_iter()
    .find(|d| d.join("weights.safetensors").is_file() && d.join("config.yaml").is_file())
}

fn ok(st: medsam2_status) {
    if st != medsam2_status::MEDSAM2_OK {
        let msg = unsafe { std::ffi::CStr::from_ptr(medsam2_last_error()) };
        panic!("{st:?}: {}", msg.to_string_lossy());
    }
}

/// Fastest of `n` interleaved runs of `a` and `b` (the machine may be
/// shared: the minimum is the least disturbed), in milliseconds.
fn time_pair_ms(n: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..n {
        let s = Instant::now();
        a();
        best.0 = best.0.min(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        b();
        best.1 = best.1.min(s.elapsed().as_secs_f64() * 1e3);
    }
    best
}

#[test]
fn c_api_equals_and_costs_little_over_the_rust_api() {
    let Some(dir) = fixture() else {
        eprintln!("skipped: no fixture weights");
        return;
    };
    let (config, weights) = (dir.join("config.yaml"), dir.join("weights.safetensors"));
    let rust_model = build_sam2(
        config.to_str().unwrap(),
        &weights,
        ComputeDType::F32,
        DeviceKind::Cpu,
    )
    .unwrap();
    let cfg_c = CString::new(config.to_str().unwrap()).unwrap();
    let w_c = CString::new(weights.to_str().unwrap()).unwrap();
    let mut model = null_mut();
    ok(unsafe { medsam2_model_load(cfg_c.as_ptr(), w_c.as_ptr(), null(), null(), &mut model) });

    // An image.
    let (h, w) = (96usize, 128usize);
    let rgb: Vec<u8> = (0..h * w * 3).map(|i| ((i * 7919) % 251) as u8).collect();
    let mut rust = Sam2ImagePredictor::new(rust_model.clone()).unwrap();
    let mut pred = null_mut();
    ok(unsafe { medsam2_predictor_new(model, &mut pred) });
    let img = medsam2_image {
        data: rgb.as_ptr().cast(),
        pixel_type: MEDSAM2_PIXEL_U8,
        width: w as u32,
        height: h as u32,
        channels: 3,
        row_stride: 0,
        window: medsam2_window::default(),
    };
    let (t_set_c, t_set_rust) = time_pair_ms(
        7,
        || ok(unsafe { medsam2_predictor_set_image(pred, &img) }),
        || rust.set_image_rgb_u8(&rgb, h, w).unwrap(),
    );

    let pts = [70.0f32, 40.0, 20.0, 80.0];
    let labels = [1i32, 0];
    let prompt = medsam2_prompt {
        points: pts.as_ptr(),
        labels: labels.as_ptr(),
        num_points: 2,
        bbox: null(),
        mask_input: null(),
        mask_input_len: 0,
    };
    let rust_prompt = Prompt::point(70.0, 40.0).with_point(20.0, 80.0, 0);
    let mut masks = vec![0u8; 3 * h * w];
    let mut scores = [0f32; 3];
    // Three masks (multimask) and their scores through the C API.
    let c_predict = |masks: &mut Vec<u8>, scores: &mut [f32; 3]| {
        ok(unsafe {
            medsam2_predictor_predict(
                pred,
                &prompt,
                1,
                masks.as_mut_ptr(),
                masks.len(),
                scores.as_mut_ptr(),
                3,
                null_mut(),
            )
        })
    };
    let mut r = None;
    let (t_pred_c, t_pred_rust) = time_pair_ms(
        31,
        || c_predict(&mut masks, &mut scores),
        || r = Some(rust.predict(&rust_prompt, true).unwrap()),
    );
    let r = r.unwrap();
    assert_eq!(masks, r.masks, "C API masks differ from the Rust API's");
    assert_eq!(
        scores.map(f32::to_bits).to_vec(),
        r.iou_scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
    );
    // The low-res clean-up, set through each API, gives the same masks,
    // and changes them on this image.
    ok(unsafe { medsam2_predictor_set_postprocessing(pred, 8.0, 8.0) });
    (rust.max_hole_area, rust.max_sprinkle_area) = (8.0, 8.0);
    let plain = masks.clone();
    c_predict(&mut masks, &mut scores);
    let cleaned = rust.predict(&rust_prompt, true).unwrap();
    assert_eq!(masks, cleaned.masks, "C API cleaned masks differ");
    let changed = plain.iter().zip(&masks).filter(|(a, b)| a != b).count();
    println!(
        "clean-up 8 / 8: {changed} of {} mask pixels changed",
        masks.len()
    );
    assert!(changed > 0, "the clean-up changed nothing");
    let bad = unsafe { medsam2_predictor_set_postprocessing(pred, -1.0, 0.0) };
    assert_eq!(bad, medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT);
    ok(unsafe { medsam2_predictor_free(pred) });

    // A volume: 12 slices of 48 x 40 u8, one click, propagated both ways.
    let dims = [48usize, 40, 12];
    let voxels: Vec<u8> = (0..dims.iter().product::<usize>())
        .map(|i| {
            let (x, y) = (i % 48, (i / 48) % 40);
            if (x as i32 - 20).pow(2) + (y as i32 - 18).pow(2) < 90 {
                200
            } else {
                30 + (i % 13) as u8
            }
        })
        .collect();
    let vol = medsam2_volume {
        voxels: voxels.as_ptr().cast(),
        pixel_type: MEDSAM2_PIXEL_U8,
        dims: dims.map(|d| d as u32),
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: [0.0; 9],
    };
    let it = medsam2_intensity {
        mode: MEDSAM2_INTENSITY_NONE,
        window: medsam2_window::default(),
        lower_percentile: 0.0,
        upper_percentile: 0.0,
        stretch: 0,
    };
    let mut c_labels = vec![0u16; voxels.len()];
    let vol_c = || unsafe {
        let mut s = null_mut();
        ok(medsam2_session_new(
            model,
            &vol,
            &it,
            MEDSAM2_AXIS_K,
            null(),
            &mut s,
        ));
        ok(medsam2_session_add_points(
            s,
            6,
            1,
            [20.0f32, 18.0].as_ptr(),
            [1i32].as_ptr(),
            1,
            1,
            null_mut(),
            0,
        ));
        ok(medsam2_session_propagate(
            s,
            MEDSAM2_DIRECTION_BOTH,
            -1,
            0,
            None,
            null_mut(),
        ));
        ok(medsam2_session_get_labels(
            s,
            c_labels.as_mut_ptr(),
            c_labels.len(),
        ));
        ok(medsam2_session_free(s));
    };
    let mut rust_labels = vec![0u16; voxels.len()];
    let n = dims[0] * dims[1];
    let vol_rust = || {
        let frames: Vec<Vec<u8>> = voxels.chunks(n).map(|c| c.to_vec()).collect();
        let frames = GreyFrames::new(frames, dims[1], dims[0]).unwrap();
        let mut vp = Sam2VideoPredictor::new(
            rust_model.clone(),
            Box::new(frames),
            SessionOptions::default(),
        )
        .unwrap();
        vp.add_points_or_box(6, 1, &[[20.0, 18.0]], &[1], None, true)
            .unwrap();
        vp.propagate(None, Direction::Both, None, |_, _| true)
            .unwrap();
        for f in 0..dims[2] {
            let m = vp.frame_masks(f).unwrap().binary_masks().unwrap();
            for (p, v) in m[0].iter().enumerate() {
                rust_labels[f * n + p] = u16::from(*v);
            }
        }
    };
    let (t_vol_c, t_vol_rust) = time_pair_ms(5, vol_c, vol_rust);
    assert_eq!(
        c_labels, rust_labels,
        "C API labels differ from the Rust API's"
    );
    assert!(c_labels.contains(&1));
    ok(unsafe { medsam2_model_free(model) });

    println!(
        "tiny fixture model ({}), fastest of interleaved runs:",
        dir.display()
    );
    println!("  set_image {h}x{w}: C API {t_set_c:.3} ms, Rust {t_set_rust:.3} ms");
    println!("  predict (2 clicks, 3 masks): C API {t_pred_c:.3} ms, Rust {t_pred_rust:.3} ms");
    println!("  volume 48x40x12 session + propagate both + labels: C API {t_vol_c:.1} ms, Rust {t_vol_rust:.1} ms");
}
