//! The device-generic graph (what CUDA and Metal run) checked on the CPU: the
//! hand-written CPU kernels are switched off (`modeling::kernels`) and every
//! committed fixture is replayed through the parity runner on candle ops
//! alone, against PyTorch within FORMAT.md's tolerances; then the generic and
//! the fast path are compared with each other on the image encoder and the
//! SAM heads of every fixture, at the same tolerances.
//!
//! One test function: the switch is process-wide.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use medsam2_core::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use medsam2_core::modeling::kernels::{fast_cpu_kernels, set_fast_cpu_kernels};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};
use medsam2_tools::fixture::{committed_fixture_dirs, compare_abs, compare_rel, Fixture};
use medsam2_tools::parity::{check_fixture, Report, MASK_LOGIT_TOL, REL_TOL};

/// Outputs of one image through the image predictor: features and the
/// low-res logits of a box and a point prompt.
fn image_outputs(model: Arc<Sam2Base>, rgb: &[u8], h: usize, w: usize) -> Vec<(String, Tensor)> {
    let mut pred = Sam2ImagePredictor::new(model).expect("predictor");
    pred.set_image_rgb_u8(rgb, h, w).expect("encoder");
    let (feats, embed) = pred.features().expect("features");
    let mut out = vec![
        ("vision_feats".to_string(), feats.vision_feats.clone()),
        ("image_embed".to_string(), embed.clone()),
    ];
    if let Some((s0, s1)) = &feats.high_res {
        out.push(("high_res.0".into(), s0.clone()));
        out.push(("high_res.1".into(), s1.clone()));
    }
    let (wf, hf) = (w as f32, h as f32);
    let prompts = [
        (
            "box",
            Prompt::bbox(0.2 * wf, 0.25 * hf, 0.7 * wf, 0.8 * hf),
            false,
        ),
        ("point", Prompt::point(0.5 * wf, 0.4 * hf), true),
    ];
    for (name, prompt, multimask) in prompts {
        let p = pred.predict(&prompt, multimask).expect("decoder");
        let low = p.low_res_size;
        let t = Tensor::from_vec(p.low_res_logits, (p.num_masks, low, low), &Device::Cpu)
            .expect("logits");
        out.push((format!("{name}/low_res_logits"), t));
    }
    out
}

#[test]
fn generic_graph_matches_reference_and_fast_path() {
    let dirs = committed_fixture_dirs().expect("tests/fixtures holds fixture sets");
    assert!(fast_cpu_kernels(), "the fast kernels are on by default");

    // 1. Parity of the generic graph with PyTorch, every part of every fixture.
    let mut fast = Report::default();
    let mut generic = Report::default();
    for d in &dirs {
        let mut f = Fixture::open(d).expect("fixture opens");
        check_fixture(&mut f, &[], &mut fast).expect("fast path runs");
        set_fast_cpu_kernels(false);
        let res = check_fixture(&mut f, &[], &mut generic);
        set_fast_cpu_kernels(true);
        res.unwrap_or_else(|e| panic!("generic path on {}: {e}", d.display()));
    }
    for c in generic.results.iter().filter(|c| !c.ok) {
        eprintln!(
            "FAIL (generic) {} max_abs {:.3e} tol {:.2e} {}",
            c.name, c.max_abs, c.tol, c.note
        );
    }
    println!("fast path:    {}", fast.summary());
    println!("generic path: {}", generic.summary());
    assert_eq!(fast.failed(), 0, "fast path: {}", fast.summary());
    assert_eq!(generic.failed(), 0, "generic path: {}", generic.summary());
    assert!(generic.skipped.is_empty(), "{:?}", generic.skipped);
    assert_eq!(fast.results.len(), generic.results.len());
    assert!(generic.results.len() > 100, "too few comparisons");
    // The switch must change the arithmetic (else this test checks nothing).
    let differ = fast
        .results
        .iter()
        .zip(&generic.results)
        .filter(|(a, b)| a.name == b.name && a.max_abs != b.max_abs)
        .count();
    println!(
        "{differ} of {} comparisons differ between the paths",
        fast.results.len()
    );
    assert!(
        differ > 10,
        "the generic path computed the same as the fast path"
    );

    // 2. Generic against fast directly, on each fixture's image and prompts.
    let mut compared = 0;
    for d in &dirs {
        let mut f = Fixture::open(d).expect("fixture opens");
        if !f.has_part("image") {
            continue;
        }
        let cfg = f.config("image_model").expect("config");
        let ckpt = Checkpoint::open(f.weights_path()).expect("weights");
        let model = Arc::new(
            Sam2Base::load(cfg, &ckpt, ComputeDType::F32, DeviceKind::Cpu).expect("model"),
        );
        let role = f.json["image"]["tensors"]["raw_rgb"]
            .as_str()
            .expect("raw_rgb")
            .to_string();
        let raw = f.tensor("image", &role).expect("raw_rgb tensor");
        let (h, w, _) = raw.dims3().expect("HWC");
        let rgb = raw.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let a = image_outputs(model.clone(), &rgb, h, w);
        set_fast_cpu_kernels(false);
        let b = image_outputs(model, &rgb, h, w);
        set_fast_cpu_kernels(true);
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let c = if name.ends_with("logits") {
                compare_abs(name, y, x, MASK_LOGIT_TOL).unwrap()
            } else {
                compare_rel(name, y, x, REL_TOL).unwrap()
            };
            println!(
                "{} generic vs fast {name}: max_abs {:.3e} (tol {:.2e})",
                f.name(),
                c.max_abs,
                c.tol
            );
            assert!(c.ok, "{}: {name} differs: {:.3e}", f.name(), c.max_abs);
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} outputs compared");
}
