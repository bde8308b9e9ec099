//! The CPU bf16 mode against f32 on the real CT cases
//! (`../shared/data/ct-lesion`, or `MEDSAM2_DATA`): a box on the middle
//! lesion slice propagates both ways with a model loaded in f32 and in bf16;
//! the binary masks must agree on ≥ 99.5 % of the voxels of every case
//! (issue 11). With the bf16 kernel forced off
//! (`kernels::bf16::force_fallback`) the bf16 mode is the f32 computation:
//! the masks are identical.
//!
//! The model: the committed random-weight fixture `sam2.0-small-b`, or the
//! checkpoint and config named by `MEDSAM2_AGREEMENT_WEIGHTS` and
//! `MEDSAM2_AGREEMENT_CONFIG` (e.g. a trained demo model). Why not the SAM 2.1
//! random fixtures: their masks are noise decided by near-tied random scores,
//! and whole slices flip between f32 and bf16 (66–93 % agreement on a few
//! slices, 97–99.9 % per case, measured Nov 2026: see README "Correctness"),
//! while the trained demo model agrees on 99.92–99.99 % and this fixture on
//! 99.84–99.88 %.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::medical::{read_volume_with_key, slicing};
use medsam2_core::modeling::kernels::bf16;
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};

/// Voxel agreement the bf16 mode must reach on every case.
const MIN_AGREEMENT: f64 = 0.995;

fn model(dtype: ComputeDType) -> Arc<Sam2Base> {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.0-small-b");
    let config = std::env::var("MEDSAM2_AGREEMENT_CONFIG")
        .unwrap_or_else(|_| f.join("config.yaml").to_string_lossy().into_owned());
    let weights = std::env::var_os("MEDSAM2_AGREEMENT_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| f.join("weights.safetensors"));
    build_sam2(&config, weights, dtype, DeviceKind::Cpu).unwrap()
}

struct Case {
    slices: Vec<Vec<u8>>,
    h: usize,
    w: usize,
    key: usize,
    bbox: [f32; 4],
}

fn load_case(p: &Path) -> Case {
    let img = read_volume_with_key(p, "imgs").unwrap();
    let gt = read_volume_with_key(p, "gts").unwrap();
    let fr = slicing::slices_u8(&img, slicing::Axis::K).unwrap();
    let gf = slicing::slices_u8(&gt, slicing::Axis::K).unwrap();
    let (w, h) = (fr[0].width, fr[0].height);
    let lesion: Vec<usize> = (0..gf.len())
        .filter(|&z| gf[z].data.iter().any(|&v| v != 0))
        .collect();
    let key = lesion[lesion.len() / 2];
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for (i, _) in gf[key].data.iter().enumerate().filter(|(_, &v)| v != 0) {
        let (x, y) = (i % w, i / w);
        b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    Case {
        slices: fr.into_iter().map(|f| f.data).collect(),
        h,
        w,
        key,
        bbox: b.map(|v| v as f32),
    }
}

/// Binary masks of every slice (`[z][y·w + x]`), a box on the key slice
/// propagated both ways.
fn segment(model: Arc<Sam2Base>, c: &Case) -> Vec<Vec<u8>> {
    let frames = GreyFrames::new(c.slices.clone(), c.h, c.w).unwrap();
    let mut s =
        Sam2VideoPredictor::new(model, Box::new(frames), SessionOptions::default()).unwrap();
    s.add_points_or_box(c.key, 1, &[], &[], Some(c.bbox), true)
        .unwrap();
    let mut out = vec![Vec::new(); c.slices.len()];
    s.propagate(Some(c.key), Direction::Both, None, |fm, _| {
        out[fm.frame_idx] = fm.object_mask(1).unwrap();
        true
    })
    .unwrap();
    assert!(out.iter().all(|m| m.len() == c.h * c.w), "a mask per slice");
    out
}

/// (agreeing voxels / voxels, foreground voxels of `a`).
fn agreement(a: &[Vec<u8>], b: &[Vec<u8>]) -> (f64, usize) {
    let (mut same, mut all, mut fg) = (0usize, 0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        all += x.len();
        same += x.iter().zip(y).filter(|(p, q)| p == q).count();
        fg += x.iter().filter(|&&v| v != 0).count();
    }
    (same as f64 / all as f64, fg)
}

#[test]
fn bf16_masks_agree_with_f32_on_the_ct_cases() {
    let Some(dir) = common::ct_data_dir() else {
        return;
    };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npz"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no .npz case in {}", dir.display());
    if !bf16::available() {
        println!("note: this CPU lacks avx512_bf16: the bf16 mode computes in f32 here");
    }
    let (m32, m16) = (model(ComputeDType::F32), model(ComputeDType::BF16));
    let mut worst = 1.0f64;
    for p in &cases {
        let c = load_case(p);
        let want = segment(m32.clone(), &c);
        let got = segment(m16.clone(), &c);
        let (agree, fg) = agreement(&want, &got);
        println!(
            "{}: bf16 vs f32 voxel agreement {:.4} % ({} slices, {fg} f32 foreground voxels)",
            p.file_stem().unwrap().to_string_lossy(),
            100.0 * agree,
            c.slices.len()
        );
        let slice_min = want
            .iter()
            .zip(&got)
            .map(|(a, b)| agreement(std::slice::from_ref(a), std::slice::from_ref(b)).0)
            .fold(1.0f64, f64::min);
        println!("  worst slice {:.2} %", 100.0 * slice_min);
        worst = worst.min(agree);
    }
    assert!(
        worst >= MIN_AGREEMENT,
        "worst case agreement {worst:.5} < {MIN_AGREEMENT}"
    );

    // The fallback (a CPU without the kernel): bf16 mode = f32, bit for bit.
    bf16::force_fallback(true);
    let fb = model(ComputeDType::BF16);
    bf16::force_fallback(false);
    let c = load_case(&cases[0]);
    assert_eq!(
        segment(fb, &c),
        segment(m32, &c),
        "forced fallback differs from f32"
    );
}
