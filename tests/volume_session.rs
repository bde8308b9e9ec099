//! The volume session on a real CT volume (`../shared/data/ct-lesion`, any
//! weights: the tiny random-weight fixture model): a box on one slice
//! propagates both ways, cancellation mid-way leaves the session valid, a
//! correction re-propagates, and the frame-feature cache stays within its bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::medical::{read_volume_with_key, slicing};
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};
use medsam2_core::Error;

fn data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("MEDSAM2_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ct-lesion"));
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!(
            "skipped: CT data not found at {} (set MEDSAM2_DATA)",
            d.display()
        );
        None
    }
}

fn model() -> Arc<medsam2_core::modeling::sam2_base::Sam2Base> {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-tiny-a");
    build_sam2(
        f.join("config.yaml").to_str().unwrap(),
        f.join("weights.safetensors"),
        ComputeDType::F32,
        DeviceKind::Cpu,
    )
    .unwrap()
}

struct Case {
    slices: Vec<Vec<u8>>,
    gts: Vec<Vec<u8>>,
    h: usize,
    w: usize,
}

fn load_case(dir: &Path) -> Case {
    let p = dir.join("CT_Lesion_000002_03_01_035-047.npz");
    let img = read_volume_with_key(&p, "imgs").unwrap();
    let gt = read_volume_with_key(&p, "gts").unwrap();
    let fr = slicing::frames_u8(&img, slicing::Axis::K).unwrap();
    let gf = slicing::frames_u8(&gt, slicing::Axis::K).unwrap();
    let (w, h) = (fr[0].width, fr[0].height);
    Case {
        slices: fr.into_iter().map(|f| f.data).collect(),
        gts: gf.into_iter().map(|f| f.data).collect(),
        h,
        w,
    }
}

/// Bounding box `[x0, y0, x1, y1]` of a mask.
fn bbox(m: &[u8], w: usize) -> Option<[f32; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for (i, &v) in m.iter().enumerate() {
        if v != 0 {
            let (x, y) = (i % w, i / w);
            b = Some(match b {
                None => [x, y, x, y],
                Some([a, c, d, e]) => [a.min(x), c.min(y), d.max(x), e.max(y)],
            });
        }
    }
    b.map(|[a, c, d, e]| [a as f32, c as f32, d as f32, e as f32])
}

#[test]
fn box_propagates_both_ways_cancels_and_corrects() {
    let Some(dir) = data_dir() else { return };
    let case = load_case(&dir);
    let n = case.slices.len();
    let key = 6; // a lesion slice of this case (3..9)
    let b = bbox(&case.gts[key], case.w).expect("lesion on the key slice");
    let cap = 3;
    let opts = SessionOptions {
        feature_cache_frames: cap,
        ..Default::default()
    };
    let frames = GreyFrames::new(case.slices.clone(), case.h, case.w).unwrap();
    let mut s = Sam2VideoPredictor::new(model(), Box::new(frames), opts).unwrap();
    let first = s
        .add_points_or_box(key, 1, &[], &[], Some(b), true)
        .unwrap();
    assert_eq!(first.obj_ids, vec![1]);
    s.add_points_or_box(key + 1, 2, &[[b[0] + 3.0, b[1] + 3.0]], &[1], None, true)
        .unwrap();

    // Cancel after three frames: an error, and the session stays usable.
    let mut seen = 0;
    let r = s.propagate(Some(key), Direction::Both, None, |_, p| {
        seen += 1;
        assert!(p.total >= n);
        p.done < 3
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(seen, 3);

    // Full propagation both ways: every slice yields one mask per object.
    let mut got: Vec<Option<Vec<Vec<u8>>>> = vec![None; n];
    let mut last = (0, 0);
    s.propagate(Some(key), Direction::Both, None, |fm, p| {
        assert_eq!(fm.obj_ids, vec![1, 2]);
        let m = fm.binary_masks().unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|x| x.len() == case.h * case.w));
        got[fm.frame_idx] = Some(m);
        last = (p.done, p.total);
        true
    })
    .unwrap();
    assert!(got.iter().all(|g| g.is_some()), "every slice has masks");
    assert_eq!(last.0, last.1);
    assert_eq!(
        last.1,
        (n - key) + (key + 1),
        "forward and backward passes from the key slice"
    );
    assert!(
        s.feature_cache_peak() <= cap,
        "cache peak {} > bound {cap}",
        s.feature_cache_peak()
    );

    // A correction click on another slice, then propagation again.
    let corrected = s
        .add_points_or_box(2, 1, &[[b[0] + 2.0, b[1] + 2.0]], &[0], None, false)
        .unwrap();
    assert_eq!(corrected.obj_ids, vec![1, 2]);
    let mut again = 0;
    s.propagate(Some(2), Direction::Both, Some(3), |fm, _| {
        assert!(fm.frame_idx <= 5);
        again += 1;
        true
    })
    .unwrap();
    assert_eq!(again, 4 + 3, "2..=5 forward, 2..=0 backward");
    let after = s.frame_masks(2).unwrap().binary_masks().unwrap();
    assert_eq!(after.len(), 2);
    // The corrected slice is now a conditioning frame of object 1 (its prompt output is kept).
    assert!(s.object_memory(0).unwrap().cond.contains_key(&2));
    assert!(!s.object_memory(1).unwrap().cond.contains_key(&2));
    assert!(s.feature_cache_peak() <= cap);

    // Removing an object and resetting.
    s.remove_object(2).unwrap();
    assert_eq!(s.obj_ids(), &[1]);
    assert!(s.remove_object(9).is_err());
    s.reset();
    assert!(
        s.propagate(None, Direction::Forward, None, |_, _| true)
            .is_err(),
        "no prompts after reset"
    );
}

#[test]
fn bad_session_inputs_are_errors() {
    let frames = GreyFrames::new(vec![vec![0u8; 40 * 30]; 4], 30, 40).unwrap();
    let mut s =
        Sam2VideoPredictor::new(model(), Box::new(frames), SessionOptions::default()).unwrap();
    assert!(
        s.add_points_or_box(4, 1, &[[1.0, 1.0]], &[1], None, true)
            .is_err(),
        "frame out of range"
    );
    assert!(
        s.add_points_or_box(0, 1, &[[41.0, 1.0]], &[1], None, true)
            .is_err(),
        "point outside"
    );
    assert!(
        s.add_points_or_box(0, 1, &[], &[], None, true).is_err(),
        "empty prompt"
    );
    assert!(s.add_mask(0, 1, &[1u8; 10]).is_err(), "wrong mask size");
    assert!(s.clear_prompts(0, 77).is_err(), "unknown object");
    assert!(GreyFrames::new(vec![vec![0u8; 5]], 2, 2).is_err());
    assert!(GreyFrames::new(vec![], 2, 2).is_err());
    // An empty mask is a valid prompt ("absent on this slice").
    s.add_mask(1, 3, &vec![0u8; 40 * 30]).unwrap();
    s.add_points_or_box(0, 1, &[[10.0, 10.0]], &[1], None, true)
        .unwrap();
    let mut k = 0;
    s.propagate(None, Direction::Forward, None, |_, _| {
        k += 1;
        true
    })
    .unwrap();
    assert_eq!(k, 4);
}
