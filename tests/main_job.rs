//! The main job end to end (`src/volume_job.rs`, the core of the examples
//! `segment_volume` and `evaluate_prompts`), with the tiny random-weight
//! fixture model `tests/fixtures/sam2.1-tiny-a`:
//! * without data: every bad input is a one-line error, and a synthetic
//!   volume is segmented and written back with its geometry;
//! * with `../shared/data/ct-lesion` (or `MEDSAM2_DATA`): a CT case is
//!   segmented from a box in voxel and in physical coordinates and from a mask,
//!   written as NIfTI and NRRD and read back with the input's geometry, the
//!   montage is written as PNG and shows the overlay, and the paper
//!   strategies are evaluated twice with the same numbers.
//!
//! Outputs go to the system's temporary folder, never into the repository.

mod common;

use std::path::{Path, PathBuf};

use medsam2_core::medical::{self, Volume};
use medsam2_core::sam2_video_predictor::Progress;
use medsam2_tools::volume_job::*;

fn fixture() -> (PathBuf, String) {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-tiny-a");
    (
        f.join("weights.safetensors"),
        f.join("config.yaml").to_string_lossy().into_owned(),
    )
}

/// A fresh folder under the system's temporary folder.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsam2_main_job_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A small i16 "CT" volume (HU) with a bright ellipsoid, oblique geometry.
fn synthetic() -> Volume {
    common::ellipsoid_ct(|i| -60 + (i as i16 % 7) * 5)
}

fn assert_one_line_error<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
    let e = r.expect_err(needle);
    let line = error_line(&e);
    assert!(line.starts_with("error: "), "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.to_lowercase().contains(&needle.to_lowercase()),
        "`{line}` should mention `{needle}`"
    );
}

#[test]
fn bad_inputs_are_one_line_errors_and_a_synthetic_volume_round_trips() {
    let (ckpt, cfg) = fixture();
    let dir = tmp("synthetic");
    let vol = synthetic();
    let input = dir.join("ct.nii.gz");
    medical::write_volume(&input, &vol).unwrap();
    let out = dir.join("seg.nrrd");
    let job = |boxes: &[&str]| {
        let mut j = SegmentJob::new(&input, &out, &ckpt, &cfg);
        j.boxes = boxes.iter().map(|s| s.to_string()).collect();
        j
    };
    let none: &mut dyn FnMut(Progress) = &mut |_| {};

    // Missing files.
    let mut j = job(&["3,12,9,28,21"]);
    j.volume = dir.join("missing.nii.gz");
    assert_one_line_error(run_segment_job(&j, none), "missing.nii.gz: no such file");
    let mut j = job(&["3,12,9,28,21"]);
    j.checkpoint = dir.join("missing.safetensors");
    assert_one_line_error(run_segment_job(&j, none), "no such file");
    let mut j = job(&["3,12,9,28,21"]);
    j.mask = Some(dir.join("nomask.nii.gz"));
    assert_one_line_error(run_segment_job(&j, none), "nomask.nii.gz: no such file");
    // A file that is not a volume.
    std::fs::write(dir.join("junk.nii"), b"not a nifti").unwrap();
    let mut j = job(&["3,12,9,28,21"]);
    j.volume = dir.join("junk.nii");
    assert_one_line_error(run_segment_job(&j, none), "nifti");
    // Prompts outside the volume, malformed prompts, no prompt.
    assert_one_line_error(
        run_segment_job(&job(&["7,1,1,5,5"]), none),
        "outside the volume",
    );
    assert_one_line_error(
        run_segment_job(&job(&["3,1,1,40,5"]), none),
        "outside the volume",
    );
    assert_one_line_error(run_segment_job(&job(&["3,1,1,5"]), none), "5 numbers");
    assert_one_line_error(
        run_segment_job(&job(&["0:3,1,1,5,5"]), none),
        "object ids start at 1",
    );
    let mut j = job(&[]);
    j.points = vec!["3,10,10,2".into()];
    assert_one_line_error(run_segment_job(&j, none), "LABEL must be 1");
    let mut j = job(&[]);
    j.points = vec!["-1000,0,0,1".into()];
    j.physical = true;
    assert_one_line_error(run_segment_job(&j, none), "outside the volume");
    assert_one_line_error(run_segment_job(&job(&[]), none), "no prompt");
    // Unknown presets and bad windows / axes.
    assert_one_line_error(IntensitySpec::parse("lungs"), "unknown window `lungs`");
    assert_one_line_error(IntensitySpec::parse("-5,40"), "window width");
    assert_one_line_error(parse_axis("3"), "bad axis");
    let mut j = job(&["3,12,9,28,21"]);
    j.config = "sam2.1_hiera_q".into();
    assert_one_line_error(run_segment_job(&j, none), "unknown preset");
    // A checkpoint of another model.
    let mut j = job(&["3,12,9,28,21"]);
    j.config = "sam2.1_hiera_t".into();
    assert_one_line_error(run_segment_job(&j, none), "has shape");
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sam2.0-small-b/weights.safetensors");
    let mut j = job(&["3,12,9,28,21"]);
    j.checkpoint = other;
    assert_one_line_error(run_segment_job(&j, none), "has shape");
    // Outputs that cannot be written.
    let mut j = job(&["3,12,9,28,21"]);
    j.out = dir.join("seg.npz");
    assert_one_line_error(run_segment_job(&j, none), "must end in");
    let mut j = job(&["3,12,9,28,21"]);
    j.out = dir.join("no/such/folder/seg.nii.gz");
    assert_one_line_error(run_segment_job(&j, none), "does not exist");
    // Evaluation: missing folder, folder without cases.
    let e = EvalJob::new(dir.join("nowhere"), &ckpt, &cfg);
    assert_one_line_error(run_eval_job(&e, &mut |_, _, _, _, _| {}), "no such folder");
    let e = EvalJob::new(&dir, &ckpt, &cfg);
    assert_one_line_error(run_eval_job(&e, &mut |_, _, _, _, _| {}), "no cases");
    assert_one_line_error(Strategy::parse("every-j"), "unknown strategy");

    // A good run: two objects (box + clicks), HU data through the abdomen
    // window (auto for i16), progress reported, output with the input's grid.
    let mut j = job(&["3,12,9,28,21", "2:5,2,2,8,8"]);
    j.points = vec!["3,20,15,1".into(), "3,2,30,0".into()];
    j.montage_neighbours = Some(1);
    let mut last = None;
    let r = run_segment_job(&j, &mut |p| last = Some(p)).unwrap();
    let p = last.expect("progress");
    assert_eq!(p.done, p.total);
    assert_eq!(
        r.normalization,
        medical::intensity::Normalization::Window(medical::intensity::Window::ABDOMEN)
    );
    assert_eq!((r.num_slices, r.width, r.height), (7, 40, 32));
    let back = medical::read_volume(&out).unwrap();
    assert_eq!(back.dims(), vol.dims());
    assert!(
        back.geometry().approx_eq(vol.geometry(), 1e-5),
        "{:?}",
        back.geometry()
    );
    assert_eq!(back.data(), r.labels.data());
    let (lo, hi) = back.min_max().unwrap();
    assert!(lo >= 0.0 && hi <= 2.0);
    assert_eq!(
        r.objects.iter().map(|o| o.obj_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for o in &r.objects {
        let count = back
            .data()
            .to_f64_vec()
            .iter()
            .filter(|&&v| v == o.obj_id as f64)
            .count();
        assert_eq!(o.voxels, count);
        // Spacing as stored (NIfTI keeps f32): 0.8 x 0.9 x 3 mm.
        let sp = back.geometry().spacing;
        assert!(
            (sp[0] - 0.8).abs() < 1e-6 && (sp[1] - 0.9).abs() < 1e-6 && (sp[2] - 3.0).abs() < 1e-6
        );
        assert!((o.ml - count as f64 * sp[0] * sp[1] * sp[2] / 1000.0).abs() < 1e-9);
    }
    // The montage: 3 slices of 40 columns with 4-pixel gaps; rows stretched 0.9/0.8.
    let m = r.montage.as_ref().unwrap();
    assert_eq!((m.width, m.height), (3 * 40 + 2 * 4, 36));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pixels of a montage panel that carry a mask colour (red clearly above grey).
fn tinted(img: &image::RgbImage, x0: u32, x1: u32) -> usize {
    let mut n = 0;
    for y in 0..img.height() {
        for x in x0..x1 {
            let p = img.get_pixel(x, y).0;
            if p[0] as i32 > p[1] as i32 + 40 && p[0] as i32 > p[2] as i32 + 40 {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn ct_lesion_case_segments_writes_and_evaluates() {
    let Some(data) = common::ct_data_dir() else {
        return;
    };
    let (ckpt, cfg) = fixture();
    let dir = tmp("ct");
    let case = "CT_Lesion_000002_03_01_035-047";
    let nii_in = data.join(format!("nifti/{case}_img.nii.gz"));
    let nrrd_in = data.join(format!("nrrd/{case}_img.nrrd"));
    // The lesion's box on slice 6 (README: lesion z 3..9).
    let gt = medical::read_volume(data.join(format!("nifti/{case}_seg.nii.gz"))).unwrap();
    let ls = label_slices(&gt, medical::slicing::Axis::K).unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].areas.iter().sum::<usize>(), 3961);
    let [x0, y0, x1, y1] = mask_bbox(&ls[0].masks[6], 512).unwrap();
    let bx = format!("6,{x0},{y0},{x1},{y1}");

    // NIfTI in, NIfTI out, montage.
    let out = dir.join("seg.nii.gz");
    let mut j = SegmentJob::new(&nii_in, &out, &ckpt, &cfg);
    j.boxes = vec![bx.clone()];
    j.montage_neighbours = Some(2);
    let r = run_segment_job(&j, &mut |_| {}).unwrap();
    println!(
        "ct case: {} slices, {:.1} ms per slice (prompts {:.2} s, propagation {:.2} s)",
        r.num_slices,
        1000.0 * r.seconds_per_slice(),
        r.prompt_seconds,
        r.propagation_seconds
    );
    let input = medical::read_volume(&nii_in).unwrap();
    let back = medical::read_volume(&out).unwrap();
    assert_eq!(back.dims(), input.dims());
    assert!(back.geometry().approx_eq(input.geometry(), 1e-6));
    assert_eq!(
        r.objects[0].voxels,
        back.data()
            .to_f64_vec()
            .iter()
            .filter(|&&v| v == 1.0)
            .count()
    );
    // The montage PNG: 5 slices of 512 with 4-pixel gaps, masks overlaid.
    let img = r.montage.as_ref().unwrap();
    let png = dir.join("montage.png");
    image::save_buffer(
        &png,
        &img.data,
        img.width as u32,
        img.height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    let read = image::open(&png).unwrap().to_rgb8();
    assert_eq!((read.width(), read.height()), (5 * 512 + 4 * 4, 512));
    let key = 2 * (512 + 4);
    assert!(
        tinted(&read, key, key + 512) > 0,
        "no overlay on the prompted slice"
    );
    // The prompt box is drawn in yellow on the key panel.
    let p = read.get_pixel(key + x0 as u32, y0 as u32).0;
    assert_eq!(p, [255, 255, 0]);

    // The same box in LPS millimetres gives the same slice prompt and labels.
    let c0 = input.index_to_physical([x0 as f64, y0 as f64, 6.0]);
    let c1 = input.index_to_physical([x1 as f64, y1 as f64, 6.0]);
    let mut jp = SegmentJob::new(&nii_in, dir.join("phys.nii.gz"), &ckpt, &cfg);
    jp.physical = true;
    jp.boxes = vec![format!(
        "{},{},{},{},{},{}",
        c0[0], c0[1], c0[2], c1[0], c1[1], c1[2]
    )];
    let rp = run_segment_job(&jp, &mut |_| {}).unwrap();
    assert_eq!(rp.prompts, r.prompts);
    assert_eq!(rp.labels.data(), r.labels.data());

    // NRRD in, NRRD out: same voxels, the input's geometry.
    let out2 = dir.join("seg.seg.nrrd");
    let mut j2 = SegmentJob::new(&nrrd_in, &out2, &ckpt, &cfg);
    j2.boxes = vec![bx];
    run_segment_job(&j2, &mut |_| {}).unwrap();
    let nrrd_input = medical::read_volume(&nrrd_in).unwrap();
    let back2 = medical::read_volume(&out2).unwrap();
    assert!(back2.geometry().approx_eq(nrrd_input.geometry(), 1e-6));
    assert_eq!(back2.data(), back.data());

    // A mask prompt from the ground truth (its largest slice).
    let mut jm = SegmentJob::new(&nii_in, dir.join("mask.nii.gz"), &ckpt, &cfg);
    jm.mask = Some(data.join(format!("nifti/{case}_seg.nii.gz")));
    let rm = run_segment_job(&jm, &mut |_| {}).unwrap();
    assert_eq!(
        rm.prompts[0].slices[0].slice,
        ls[0].key_slice(KeySlice::Largest).unwrap()
    );

    // The paper strategies on one case, twice: same numbers.
    let mut e = EvalJob::new(&data, &ckpt, &cfg);
    e.case_filter = Some("000002".into());
    let a = run_eval_job(&e, &mut |_, _, _, _, _| {}).unwrap();
    let b = run_eval_job(&e, &mut |_, _, _, _, _| {}).unwrap();
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.case, x.label, x.strategy),
            (&y.case, y.label, y.strategy)
        );
        assert_eq!(x.metrics, y.metrics);
        assert_eq!(x.metrics.gt_voxels, 3961);
        assert!((0.0..=1.0).contains(&x.metrics.dice));
    }
    print!("{}", eval_table(&a, 2.0));
    let csv = eval_csv(&a, 2.0);
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("case,label,strategy,dice,iou,nsd_2mm,hd95_mm"));
    let _ = std::fs::remove_dir_all(&dir);
}
