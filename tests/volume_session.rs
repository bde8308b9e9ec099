//! The volume session on a real CT volume (`../shared/data/ct-lesion`, any
//! weights: the tiny random-weight fixture model): a box on one slice
//! propagates both ways, cancellation mid-way leaves the session valid, a
//! correction re-propagates, and the frame-feature cache stays within its bound.

mod common;

use std::path::Path;
use std::sync::Arc;

use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::medical::{read_volume_with_key, slicing};
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};
use medsam2_core::Error;

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
    let fr = slicing::slices_u8(&img, slicing::Axis::K).unwrap();
    let gf = slicing::slices_u8(&gt, slicing::Axis::K).unwrap();
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
    let Some(dir) = common::ct_data_dir() else {
        return;
    };
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

/// The core's volume API (`medsam2_core::volume::VolumeSession`) on a small
/// synthetic CT volume with an oblique geometry: prompts are checked and
/// recorded as given, physical prompts land where the grid maps them, a
/// session fed the same prompts at once (`set_prompts`) segments the same,
/// and labels come back in the input's grid and geometry.
#[test]
fn volume_session_records_checks_and_segments() {
    use medsam2_core::medical::Volume;
    use medsam2_core::volume::{
        Intensity, ObjectPrompts, Prompt, Propagation, SegmentOptions, SlicePrompt, Slices,
        VolumeGrid, VolumeSession,
    };
    let dims = [40, 32, 7];
    let vol = common::ellipsoid_ct(|_| -60);
    assert_eq!(vol.dims(), dims);
    let it = Intensity::auto(&vol);
    let axis = slicing::Axis::K;
    let mut vs = VolumeSession::new(&vol, &it, axis, model(), SessionOptions::default()).unwrap();
    assert_eq!((vs.num_slices(), vs.slice_size()), (7, (40, 32)));

    // Bad prompts are one-line errors and record nothing.
    let e = vs
        .add_box(7, 1, [1.0, 1.0, 5.0, 5.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("slice 7 out of range"), "{e}");
    let e = vs
        .add_box(3, 0, [1.0, 1.0, 5.0, 5.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("object ids start at 1"), "{e}");
    let e = vs
        .add_points(3, 1, &[[1.0, 1.0]], &[2], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 2"), "{e}");
    let e = vs
        .segment(&SegmentOptions::default(), &mut |_| true)
        .unwrap_err();
    assert!(e.to_string().starts_with("no prompt"), "{e}");
    assert!(vs.prompts().is_empty());

    // Box, then a correction click on the same slice (kept with the box),
    // a physical click for object 2, a mask replaced by a prompt.
    vs.add_box(3, 1, [12.0, 9.0, 28.0, 21.0]).unwrap();
    vs.add_points(3, 1, &[[20.0, 15.0]], &[1], false).unwrap();
    let p = vol.index_to_physical([6.0, 6.0, 5.0]);
    let (z, _) = vs.add_point_physical(2, p, 1).unwrap();
    assert_eq!(z, 5);
    vs.add_mask(1, 2, &vec![1u8; 40 * 32]).unwrap();
    vs.add_prompt(1, 2, &Prompt::point(4.0, 4.0)).unwrap();
    let rec = vs.prompts().to_vec();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[0].slices.len(), 1);
    assert_eq!(rec[0].slices[0].bbox, Some([12.0, 9.0, 28.0, 21.0]));
    assert_eq!(rec[0].slices[0].points, vec![[20.0, 15.0]]);
    let s5 = rec[1].slices.iter().find(|s| s.slice == 5).unwrap();
    let (gz, gp) = VolumeGrid::of(&vol, axis).physical_point(p).unwrap();
    assert_eq!((gz, s5.points[0]), (5, gp));
    assert!((gp[0] - 6.0).abs() < 1e-4 && (gp[1] - 6.0).abs() < 1e-4);
    let s1 = rec[1].slices.iter().find(|s| s.slice == 1).unwrap();
    assert_eq!((s1.mask.is_none(), s1.points.len()), (true, 1));
    vs.clear_prompts(1, 2).unwrap();
    assert_eq!(vs.prompts()[1].slices.len(), 1);

    // Segment from the recorded prompts, and again from a fresh session
    // given the same prompts at once: the same labels, in the input's grid.
    let opts = SegmentOptions {
        propagation: Propagation::Joint,
        largest_component: true,
        threshold: 0.0,
    };
    let mut last = (0, 0);
    let seg = vs
        .segment(&opts, &mut |p| {
            last = (p.done, p.total);
            true
        })
        .unwrap();
    assert_eq!(last.0, last.1);
    let labels = vs.labels(&seg).unwrap();
    assert_eq!(labels.dims(), dims);
    assert_eq!(labels.geometry(), vol.geometry());
    let as_u16 = |v: &Volume| -> Vec<u16> {
        v.data()
            .to_f64_vec()
            .into_iter()
            .map(|x| x as u16)
            .collect()
    };
    let mut buf = vec![7u16; 40 * 32 * 7];
    vs.labels_into(&seg, &mut buf).unwrap();
    assert_eq!(buf, as_u16(&labels));
    assert!(
        buf.contains(&1) && buf.contains(&2),
        "both objects segmented"
    );
    assert!(vs.labels_into(&seg, &mut buf[1..]).is_err());
    let slices = Slices::from_volume(&vol, axis, &it).unwrap();
    let mut fresh = VolumeSession::from_slices(
        VolumeGrid::of(&vol, axis),
        slices.clone(),
        model(),
        SessionOptions::default(),
    )
    .unwrap();
    fresh.set_prompts(vs.prompts().to_vec()).unwrap();
    let seg2 = fresh.segment(&opts, &mut |_| true).unwrap();
    assert_eq!(fresh.labels(&seg2).unwrap().data(), labels.data());
    // Cancelling is an error, and the session segments again afterwards.
    let r = fresh.segment(&opts, &mut |p| p.done < 2);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    let seg3 = fresh.segment(&opts, &mut |_| true).unwrap();
    assert_eq!(fresh.labels(&seg3).unwrap().data(), labels.data());

    // set_prompts checks what it is given.
    let mut bad = |sp: SlicePrompt| {
        let mut o = ObjectPrompts::new(1);
        o.slices.push(sp);
        fresh.set_prompts(vec![o]).unwrap_err().to_string()
    };
    assert!(bad(SlicePrompt::bbox(9, [0.0; 4])).contains("slice 9"));
    assert!(bad(SlicePrompt::mask(0, vec![1; 5])).contains("mask of 5 values"));
    // Slices that do not cut the grid are refused.
    let mut other = slices;
    other.images.pop();
    let r = VolumeSession::from_slices(
        VolumeGrid::of(&vol, axis),
        other,
        model(),
        SessionOptions::default(),
    );
    assert!(r.is_err());
    // The interactive path: propagate the session as it stands.
    vs.propagate(None, Direction::Both, None, |_, _| true)
        .unwrap();
    let cur = vs.current_labels().unwrap();
    assert_eq!((cur.dims(), cur.geometry()), (dims, vol.geometry()));
    vs.current_labels_into(&mut buf).unwrap();
    assert_eq!(buf, as_u16(&cur));
    assert!(buf.contains(&1));
    assert_eq!(vs.slice_labels(3).unwrap().len(), 40 * 32);
}
