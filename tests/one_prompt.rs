//! One-prompt segmentation (confidence memory bank): parity on every fixture
//! with a one-prompt part, bank save/load identity, freezing, replacements,
//! top-k retrieval and malformed bank files.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use medsam2_core::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use medsam2_core::confidence_bank::{BankAction, BankOptions, Retrieval};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::one_prompt::{ConfidenceBank, ImageInput, OnePromptOutput, OnePromptSession};
use medsam2_core::sam2_image_predictor::Prompt;
use medsam2_tools::fixture::{committed_fixture_dirs, shared_fixture_dirs, Fixture};
use medsam2_tools::parity::Report;
use medsam2_tools::parity_one_prompt::check_one_prompt;

fn run_parity(dirs: Vec<PathBuf>) -> usize {
    let mut checked = 0;
    for d in dirs {
        let mut f = Fixture::open(&d).expect("fixture");
        if !f.has_part("one_prompt") {
            continue;
        }
        let mut report = Report {
            verbose: std::env::var_os("MEDSAM2_VERBOSE").is_some(),
            ..Default::default()
        };
        let t = std::time::Instant::now();
        check_one_prompt(&mut f, &mut report).unwrap_or_else(|e| panic!("{}: {e}", f.name()));
        let failed: Vec<_> = report.results.iter().filter(|c| !c.ok).collect();
        for c in &failed {
            eprintln!(
                "FAIL {} max_abs {:.3e} tol {:.2e} {}",
                c.name, c.max_abs, c.tol, c.note
            );
        }
        // The worst ratio error/tolerance per kind of check, for the record.
        let mut worst: std::collections::BTreeMap<String, (f32, f32, String)> = Default::default();
        for c in &report.results {
            let kind = c.name.rsplit('/').next().unwrap_or("").to_string();
            let pass = if c.name.contains("/forced/") {
                "forced"
            } else {
                "free"
            };
            let key = format!("{pass}:{kind}");
            let e = worst.entry(key).or_insert((0.0, c.tol, String::new()));
            if c.max_abs > e.0 || (c.max_abs == e.0 && e.2.is_empty()) {
                *e = (c.max_abs, c.tol, c.note.clone());
            }
        }
        for (k, (m, tol, note)) in worst {
            println!(
                "{}: {k:<55} max_abs {m:>10.3e} tol {tol:>9.2e} {note}",
                f.name()
            );
        }
        println!("{}: {} ({:.2?})", f.name(), report.summary(), t.elapsed());
        assert!(
            failed.is_empty(),
            "{}: {} one-prompt comparisons failed",
            f.name(),
            failed.len()
        );
        assert!(
            report.results.len() > 100,
            "{}: too few comparisons ({})",
            f.name(),
            report.results.len()
        );
        checked += 1;
    }
    checked
}

#[test]
fn parity_committed_fixtures() {
    let dirs = committed_fixture_dirs().expect("tests/fixtures");
    let n = run_parity(dirs);
    assert!(n >= 1, "no committed fixture has a one-prompt part");
}

#[test]
fn parity_shared_fixtures() {
    let Some(dirs) = shared_fixture_dirs() else {
        println!("skipped: ../shared/fixtures not found (set MEDSAM2_SHARED_FIXTURES)");
        return;
    };
    let n = run_parity(dirs);
    println!("{n} shared fixture(s) with a one-prompt part checked");
}

/// The committed fixture with a one-prompt part: model and raw images.
struct Stream {
    model: Arc<Sam2Base>,
    images: Vec<Vec<u8>>,
    size: usize,
    json: serde_json::Value,
}

fn stream() -> Stream {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-heads-c");
    let mut f = Fixture::open(&dir).expect("fixture");
    let cfg = f.config("image_model").expect("config");
    let ckpt = Checkpoint::open(f.weights_path()).expect("weights");
    let model =
        Arc::new(Sam2Base::load(cfg, &ckpt, ComputeDType::F32, DeviceKind::Cpu).expect("model"));
    let raw = f
        .tensor("one_prompt", "oneprompt/raw_rgb")
        .expect("raw_rgb");
    let (n, s, _, _) = raw.dims4().unwrap();
    let images = (0..n)
        .map(|i| {
            raw.get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap()
        })
        .collect();
    Stream {
        model,
        images,
        size: s,
        json: f.json["one_prompt"].clone(),
    }
}

impl Stream {
    fn input(&self, i: usize) -> ImageInput<'_> {
        ImageInput::Rgb8 {
            data: &self.images[i],
            height: self.size,
            width: self.size,
        }
    }

    fn click(&self, i: usize) -> Prompt {
        let c = &self.json["images"][i]["gt_click_xy"];
        Prompt::point(c[0].as_f64().unwrap() as f32, c[1].as_f64().unwrap() as f32)
    }

    /// Image `i` as the reference loop does: prompted every 5th image.
    fn step(&self, s: &mut OnePromptSession, i: usize) -> OnePromptOutput {
        if i.is_multiple_of(5) {
            s.add_prompt(&self.input(i), &self.click(i))
                .expect("add_prompt")
        } else {
            s.segment(&self.input(i)).expect("segment")
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "medsam2-one-prompt-{}-{name}.safetensors",
        std::process::id()
    ))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn assert_same(a: &OnePromptOutput, b: &OnePromptOutput) {
    assert_eq!(a.index, b.index);
    assert_eq!(
        bits(&a.low_res_logits),
        bits(&b.low_res_logits),
        "image {}: logits differ",
        a.index
    );
    assert_eq!(a.iou.to_bits(), b.iou.to_bits());
    assert_eq!(a.mask, b.mask);
    assert_eq!(
        bits(&a.trace.maskmem_features),
        bits(&b.trace.maskmem_features)
    );
    assert_eq!(a.pickup, b.pickup, "image {}: pick-up differs", a.index);
    assert_eq!(a.picked_sources, b.picked_sources);
    assert_eq!(a.update, b.update);
    assert_eq!(a.bank_before, b.bank_before);
}

fn assert_same_bank(a: &ConfidenceBank, b: &ConfidenceBank) {
    assert_eq!(a.sources(), b.sources());
    assert_eq!(a.ious(), b.ious());
    assert_eq!(a.options(), b.options());
    assert_eq!(a.is_frozen(), b.is_frozen());
    assert_eq!(a.rng_state(), b.rng_state());
    assert_eq!(a.gram(), b.gram());
    for (x, y) in a.entries().iter().zip(b.entries()) {
        assert_eq!(bits(x.features()), bits(y.features()));
        assert_eq!(bits(x.pos_enc()), bits(y.pos_enc()));
        assert_eq!(x.embedding(), y.embedding());
    }
}

/// A bank saved after 8 images and loaded into a fresh session gives
/// bit-identical results on the next 8 images, for top-k and for sampling.
#[test]
fn saved_and_reloaded_bank_gives_identical_results() {
    let st = stream();
    for (name, mut opts) in [
        ("topk2", BankOptions::fixed()),
        ("sample", BankOptions::reference()),
    ] {
        opts.capacity = 4;
        if name == "topk2" {
            opts.retrieval = Retrieval::TopK(2);
        } else {
            opts.retrieval = Retrieval::Sample { seed: 11 };
        }
        let mut a = OnePromptSession::new(st.model.clone(), opts).unwrap();
        for i in 0..8 {
            st.step(&mut a, i);
        }
        let path = tmp(name);
        a.save_bank(&path).unwrap();
        let mut b = OnePromptSession::new(st.model.clone(), BankOptions::fixed()).unwrap();
        b.load_bank(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_same_bank(a.bank(), b.bank());
        assert_eq!(a.images_seen(), b.images_seen());
        assert_eq!(b.bank().options().retrieval, opts.retrieval);
        let mut replaced = 0;
        for i in 8..st.images.len() {
            let (x, y) = (st.step(&mut a, i), st.step(&mut b, i));
            assert_same(&x, &y);
            if let BankAction::Replace { .. } = x.update.action {
                replaced += 1;
            }
            if name == "topk2" {
                assert_eq!(x.picked_sources.len(), 2, "top-2 attends to two memories");
            }
        }
        assert_same_bank(a.bank(), b.bank());
        println!(
            "{name}: bank after 16 images {:?}, {replaced} replacement(s) after reloading",
            a.bank().sources()
        );
    }
}

/// The reference loop with the recorded draws replaces entries (the fixture
/// records 3 replacements), and the bank never exceeds its capacity.
#[test]
fn replacement_happens() {
    let st = stream();
    let mut opts = BankOptions::reference();
    opts.capacity = 4;
    let mut s = OnePromptSession::new(st.model.clone(), opts).unwrap();
    let mut actions = Vec::new();
    for i in 0..st.images.len() {
        if let Some(k) = st.json["images"][i]["pickup"]["sampled_bank_index"].as_u64() {
            s.force_next_pick(vec![k as usize]);
        }
        let out = st.step(&mut s, i);
        assert!(s.bank().len() <= 4);
        actions.push(out.update.action);
    }
    let n = actions
        .iter()
        .filter(|a| matches!(a, BankAction::Replace { .. }))
        .count();
    assert!(n >= 1, "no replacement: {actions:?}");
    assert_eq!(n, st.json["replacements"].as_u64().unwrap() as usize);
}

/// A frozen bank is used but never changed; unfreezing resumes updates.
#[test]
fn frozen_bank_is_unchanged() {
    let st = stream();
    let mut opts = BankOptions::fixed();
    opts.capacity = 4;
    let mut s = OnePromptSession::new(st.model.clone(), opts).unwrap();
    for i in 0..5 {
        st.step(&mut s, i);
    }
    s.set_frozen(true);
    let before = s.bank().clone();
    assert_eq!(before.len(), 4);
    for i in 5..12 {
        let out = st.step(&mut s, i);
        assert_eq!(out.update.action, BankAction::Frozen);
        assert!(out.pickup.is_some());
    }
    assert_same_bank(&before, s.bank());
    // A frozen bank is saved frozen.
    let path = tmp("frozen");
    s.save_bank(&path).unwrap();
    let (loaded, seen) = ConfidenceBank::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(loaded.is_frozen());
    assert_eq!(seen, 12);
    s.set_frozen(false);
    let out = st.step(&mut s, 12);
    assert_ne!(out.update.action, BankAction::Frozen);
}

/// Top-k retrieval is deterministic, attends to `k` memories (most similar
/// first), and `k` = 1 differs from `k` = 3.
#[test]
fn top_k_retrieval() {
    let st = stream();
    let run = |k: usize| {
        let mut opts = BankOptions::fixed();
        opts.capacity = 4;
        opts.retrieval = Retrieval::TopK(k);
        let mut s = OnePromptSession::new(st.model.clone(), opts).unwrap();
        (0..7).map(|i| st.step(&mut s, i)).collect::<Vec<_>>()
    };
    let (a, b, c) = (run(3), run(3), run(1));
    for (x, y) in a.iter().zip(&b) {
        assert_same(x, y);
    }
    let last = a.last().unwrap();
    let p = last.pickup.as_ref().unwrap();
    assert_eq!(p.chosen.len(), 3);
    assert!(p.cosine_similarity[p.chosen[0]] >= p.cosine_similarity[p.chosen[1]]);
    assert!(p.cosine_similarity[p.chosen[1]] >= p.cosine_similarity[p.chosen[2]]);
    assert_eq!(
        c.last().unwrap().pickup.as_ref().unwrap().chosen,
        vec![p.chosen[0]]
    );
    assert_ne!(
        bits(&last.low_res_logits),
        bits(&c.last().unwrap().low_res_logits)
    );
}

type Meta = std::collections::HashMap<String, String>;
/// Name, dtype, shape, bytes.
type RawTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Malformed bank files are clear errors, never panics.
#[test]
fn bad_bank_files_are_errors() {
    let st = stream();
    let mut opts = BankOptions::fixed();
    opts.capacity = 4;
    let mut s = OnePromptSession::new(st.model.clone(), opts).unwrap();
    for i in 0..3 {
        st.step(&mut s, i);
    }
    let good = s.bank().to_bytes(3).unwrap();
    assert!(ConfidenceBank::from_bytes(&good).is_ok());

    let err = |bytes: &[u8]| {
        ConfidenceBank::from_bytes(bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err(b"not a safetensors file").contains("not a valid confidence-bank file"));
    assert!(!err(&[]).is_empty());
    assert!(
        !err(&good[..good.len() - 7]).is_empty(),
        "truncated file accepted"
    );

    // Rewrite the file with one thing changed.
    let rewrite = |edit: &dyn Fn(&mut Meta, &mut Vec<RawTensor>)| {
        let st = safetensors::SafeTensors::deserialize(&good).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        let mut ts: Vec<RawTensor> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        edit(&mut meta, &mut ts);
        let views: Vec<_> = ts
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    };
    let e = err(&rewrite(&|m, _| {
        m.insert("format".into(), "something-else".into());
    }));
    assert!(e.contains("format"), "{e}");
    let e = err(&rewrite(&|m, _| {
        m.insert("version".into(), "99".into());
    }));
    assert!(e.contains("version 99"), "{e}");
    let e = err(&rewrite(&|m, _| {
        m.remove("capacity");
    }));
    assert!(e.contains("capacity"), "{e}");
    let e = err(&rewrite(&|m, _| {
        m.insert("capacity".into(), "2".into());
    }));
    assert!(e.contains("3 entries for a capacity of 2"), "{e}");
    let e = err(&rewrite(&|_, ts| {
        ts.retain(|t| t.0 != "entry.1.pos_enc");
    }));
    assert!(e.contains("entry.1.pos_enc"), "{e}");
    let e = err(&rewrite(&|_, ts| {
        for t in ts.iter_mut().filter(|t| t.0 == "entry.2.features") {
            // Same bytes, other shape: [1, Cm, h, w] -> [1, Cm/2, 2h, w].
            t.2 = vec![1, t.2[1] / 2, t.2[2] * 2, t.2[3]];
        }
    }));
    assert!(e.contains("does not match"), "{e}");
    let e = err(&rewrite(&|_, ts| {
        for t in ts.iter_mut().filter(|t| t.0 == "entry.0.embedding") {
            t.3.truncate(t.3.len() - 4);
            t.2 = vec![t.2[0] - 1];
        }
    }));
    assert!(e.contains("embedding"), "{e}");
    let e = err(&rewrite(&|_, ts| {
        for t in ts.iter_mut().filter(|t| t.0 == "ious") {
            t.1 = safetensors::Dtype::F16;
            t.2 = vec![t.2[0] * 2];
        }
    }));
    assert!(e.contains("ious"), "{e}");

    // Missing file, and a bank of another model (other mem size).
    assert!(ConfidenceBank::load("/nonexistent/bank.safetensors").is_err());
    let other = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-tiny-a");
    let f = Fixture::open(&other).unwrap();
    let cfg = f.config("image_model").unwrap();
    let ckpt = Checkpoint::open(f.weights_path()).unwrap();
    let model2 = Arc::new(Sam2Base::load(cfg, &ckpt, ComputeDType::F32, DeviceKind::Cpu).unwrap());
    let (bank, _) = ConfidenceBank::from_bytes(&good).unwrap();
    let e = OnePromptSession::with_bank(model2, bank, 3)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("this model needs"), "{e}");
}

/// Prompts are validated; a mask prompt is used as the answer.
#[test]
fn prompts_and_masks() {
    let st = stream();
    let mut s = OnePromptSession::new(st.model.clone(), BankOptions::fixed()).unwrap();
    let n = st.size;
    assert!(s
        .add_prompt(&st.input(0), &Prompt::point(-5.0, 3.0))
        .is_err());
    assert!(s.add_prompt(&st.input(0), &Prompt::default()).is_err());
    assert!(s.add_mask(&st.input(0), &[1u8; 7]).is_err());
    assert_eq!(s.images_seen(), 0, "failed calls must not consume an index");
    let gt: Vec<u8> = {
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-heads-c");
        let mut f = Fixture::open(&d).unwrap();
        f.tensor("one_prompt", "oneprompt/gt_masks")
            .unwrap()
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap()
    };
    let out = s.add_mask(&st.input(0), &gt).unwrap();
    assert_eq!(out.mask, gt);
    assert_eq!(out.iou, 1.0);
    assert_eq!(s.bank().len(), 1);
    let b = s
        .add_prompt(
            &st.input(1),
            &Prompt::bbox(10.0, 10.0, (n - 10) as f32, (n - 10) as f32),
        )
        .unwrap();
    assert!(b.prompted);
    assert_eq!(
        b.trace.sparse_embeddings.dims()[1],
        3,
        "box corners + padding point"
    );
    let c = s.segment(&st.input(2)).unwrap();
    assert!(!c.prompted);
    assert_eq!(c.trace.sparse_embeddings.dims()[1], 0);
    assert_eq!(c.orig_hw, [n, n]);
    assert_eq!(c.mask.len(), n * n);
}

/// A grey image given as `0..1` floats equals the same image given as u8
/// (values `k/255`), under both preprocessings.
#[test]
fn grey_f32_images_equal_grey_u8() {
    let st = stream();
    let n = st.size;
    let grey: Vec<u8> = st.images[3].chunks_exact(3).map(|p| p[1]).collect();
    let unit: Vec<f32> = grey.iter().map(|&g| g as f32 / 255.0).collect();
    for opts in [BankOptions::fixed(), BankOptions::reference()] {
        let run = |img: &ImageInput| {
            let mut s = OnePromptSession::new(st.model.clone(), opts).unwrap();
            s.add_prompt(img, &st.click(0)).unwrap()
        };
        let a = run(&ImageInput::Grey8 {
            data: &grey,
            height: n,
            width: n,
        });
        let b = run(&ImageInput::GreyF32 {
            data: &unit,
            height: n,
            width: n,
        });
        if opts.preprocessing == medsam2_core::confidence_bank::Preprocessing::MedicalSam2 {
            // Rounded back to the same bytes: bit-identical.
            assert_same(&a, &b);
        } else {
            // The same floats (k/255) on both paths up to the last bit of the resize.
            let (x, y) = (bits(&a.low_res_logits), bits(&b.low_res_logits));
            let max = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (f32::from_bits(*p) - f32::from_bits(*q)).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-4, "grey f32 vs u8: max |diff| {max}");
        }
    }
    let mut s = OnePromptSession::new(st.model.clone(), BankOptions::reference()).unwrap();
    let mut bad = unit.clone();
    bad[5] = f32::NAN;
    let img = ImageInput::GreyF32 {
        data: &bad,
        height: n,
        width: n,
    };
    assert!(s
        .segment(&img)
        .unwrap_err()
        .to_string()
        .contains("non-finite"));
    let short = ImageInput::GreyF32 {
        data: &unit[1..],
        height: n,
        width: n,
    };
    assert!(s.segment(&short).is_err());
    assert_eq!(s.images_seen(), 0);
}

/// Saving a bank replaces only a bank: an existing file of another kind (a
/// checkpoint, say) or an input is refused and left intact; a bank is
/// replaced; the bytes API equals the file.
#[test]
fn saving_never_overwrites_other_files() {
    let st = stream();
    let mut opts = BankOptions::fixed();
    opts.capacity = 4;
    let mut s = OnePromptSession::new(st.model.clone(), opts).unwrap();
    for i in 0..2 {
        st.step(&mut s, i);
    }
    let dir = std::env::temp_dir().join(format!("medsam2-bank-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("weights.safetensors");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sam2.1-heads-c/weights.safetensors"),
        &other,
    )
    .unwrap();
    let before = std::fs::read(&other).unwrap();
    let e = s.save_bank(&other).unwrap_err().to_string();
    assert!(e.contains("not a confidence-bank file"), "{e}");
    assert!(std::fs::read(&other).unwrap() == before, "file changed");
    let text = dir.join("notes.txt");
    std::fs::write(&text, b"x").unwrap();
    assert!(s.save_bank(&text).is_err());
    assert!(s.save_bank(&dir).is_err(), "a directory accepted");

    let bank = dir.join("bank.safetensors");
    s.save_bank(&bank).unwrap();
    // The bytes API holds what the file holds (the metadata order may differ).
    let (from_file, _) = ConfidenceBank::load(&bank).unwrap();
    let (from_bytes, seen) = ConfidenceBank::from_bytes(&s.bank_to_bytes().unwrap()).unwrap();
    assert_same_bank(&from_file, &from_bytes);
    assert_eq!(seen, 2);
    st.step(&mut s, 2);
    s.save_bank(&bank).unwrap();
    let (b, seen) = ConfidenceBank::load(&bank).unwrap();
    assert_eq!(seen, 3);
    assert_same_bank(s.bank(), &b);
    // The same file as an input, through another name.
    let alias = dir.join("alias.safetensors");
    std::fs::hard_link(&bank, &alias).unwrap();
    let e = s
        .bank()
        .save_checked(&bank, 3, &[alias.as_path()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("same file as the input"), "{e}");

    let mut t = OnePromptSession::new(st.model.clone(), BankOptions::reference()).unwrap();
    t.load_bank_from_bytes(&s.bank_to_bytes().unwrap()).unwrap();
    assert_same_bank(s.bank(), t.bank());
    assert_eq!(t.images_seen(), 3);
    assert!(t.load_bank_from_bytes(b"junk").is_err());
    assert_eq!(t.images_seen(), 3, "a failed load changed the session");
    std::fs::remove_dir_all(&dir).ok();
}
