//! Checkpoint loading: PyTorch `.pt` (fp32, bf16) equals safetensors, strict key
//! and shape checks, malformed files, a real-size preset with random weights,
//! and bad prompts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use medsam2_core::checkpoint::{Checkpoint, ComputeDType, DeviceKind};
use medsam2_core::config::{ModelSize, Sam2Config, Version};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};
use medsam2_core::Error;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-heads-c")
}

fn config() -> Sam2Config {
    let text = std::fs::read_to_string(fixture().join("config.yaml")).unwrap();
    Sam2Config::from_yaml_with_overrides(&text, medsam2_core::build_sam::IMAGE_MODEL_OVERRIDES)
        .unwrap()
}

fn load(path: &Path) -> medsam2_core::Result<Arc<Sam2Base>> {
    let ckpt = Checkpoint::open(path)?;
    Ok(Arc::new(Sam2Base::load(
        config(),
        &ckpt,
        ComputeDType::F32,
        DeviceKind::Cpu,
    )?))
}

fn image() -> (Vec<u8>, usize, usize) {
    let (h, w) = (70, 90);
    let mut v = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let inside =
                ((x as f32 - 45.0) / 20.0).powi(2) + ((y as f32 - 35.0) / 14.0).powi(2) < 1.0;
            let base: usize = if inside { 200 } else { 60 };
            v.extend([
                base as u8,
                ((base + x) % 255) as u8,
                ((base + y) % 255) as u8,
            ]);
        }
    }
    (v, h, w)
}

fn predict(model: Arc<Sam2Base>) -> Vec<f32> {
    let (img, h, w) = image();
    let mut p = Sam2ImagePredictor::new(model).unwrap();
    p.set_image_rgb_u8(&img, h, w).unwrap();
    let pred = p.predict(&Prompt::point(45.0, 35.0), true).unwrap();
    let mut out = pred.logits;
    out.extend(pred.iou_scores);
    out
}

#[test]
fn pt_fp32_equals_safetensors() {
    let a = predict(load(&fixture().join("weights.safetensors")).unwrap());
    let b = predict(load(&fixture().join("weights_fp32.pt")).unwrap());
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert_eq!(max, 0.0, "fp32 .pt and safetensors outputs differ by {max}");
}

#[test]
fn pt_bf16_holds_the_rounded_weights() {
    let st = Checkpoint::open(fixture().join("weights.safetensors")).unwrap();
    let pt = Checkpoint::open(fixture().join("weights_bf16.pt")).unwrap();
    assert_eq!(st.shapes(), pt.shapes());
    let dev = Device::Cpu;
    let (vs, vp) = (
        st.var_builder(DType::F32, &dev),
        pt.var_builder(DType::F32, &dev),
    );
    for (k, shape) in st.shapes() {
        let a = vs
            .get(shape.as_slice(), k)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let b = vp.get(shape.as_slice(), k).unwrap();
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(
            d, 0.0,
            "{k}: bf16 .pt differs from the rounded safetensors weight"
        );
    }
    // And the model runs from it, close to the fp32 model.
    let a = predict(load(&fixture().join("weights.safetensors")).unwrap());
    let b = predict(load(&fixture().join("weights_bf16.pt")).unwrap());
    let agree = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| (**x > 0.0) == (**y > 0.0))
        .count() as f64
        / a.len() as f64;
    assert!(
        agree > 0.95,
        "bf16 weights change {:.1}% of mask pixels",
        (1.0 - agree) * 100.0
    );
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsam2-ckpt-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    for src in ["weights.safetensors", "weights_fp32.pt"] {
        let bytes = std::fs::read(fixture().join(src)).unwrap();
        let ext = Path::new(src).extension().unwrap().to_str().unwrap();
        for cut in [0, 3, 8, 100, bytes.len() / 2, bytes.len() - 1] {
            let p = tmp(&format!("cut{cut}.{ext}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let r = load(&p);
            assert!(r.is_err(), "{src} cut at {cut} loaded");
        }
    }
    let p = tmp("garbage.pt");
    std::fs::write(&p, b"PK\x03\x04 this is not a zip").unwrap();
    assert!(load(&p).is_err());
    assert!(matches!(
        load(&tmp("missing.safetensors")),
        Err(Error::Io { .. })
    ));
    let p = tmp("weights.bin.txt");
    std::fs::write(&p, b"x").unwrap();
    assert!(matches!(load(&p), Err(Error::Checkpoint(_))));
}

#[test]
fn config_checkpoint_mismatch_names_key_and_shapes() {
    // Another fixture's weights under this config.
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sam2.1-tiny-a/weights.safetensors");
    match load(&other) {
        Err(Error::ShapeMismatch {
            key,
            expected,
            found,
        }) => {
            assert!(
                !key.is_empty() && expected != found,
                "{key} {expected:?} {found:?}"
            );
        }
        Err(Error::Checkpoint(m)) => assert!(m.contains('`'), "message names no key: {m}"),
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("mismatched checkpoint loaded"),
    }
    // Missing and unexpected keys.
    let bytes = std::fs::read(fixture().join("weights.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    tensors.retain(|(k, _)| k != "no_mem_embed");
    let p = tmp("missing_key.safetensors");
    safetensors::serialize_to_file(tensors.clone(), None, &p).unwrap();
    match load(&p) {
        Err(e) => assert!(e.to_string().contains("no_mem_embed"), "{e}"),
        Ok(_) => panic!("checkpoint without no_mem_embed loaded"),
    }
    let extra = st.tensor("no_mem_pos_enc").unwrap();
    let mut all = st.tensors();
    all.push(("extra.weight".to_string(), extra));
    let p = tmp("extra_key.safetensors");
    safetensors::serialize_to_file(all, None, &p).unwrap();
    match load(&p) {
        Err(e) => assert!(e.to_string().contains("extra.weight"), "{e}"),
        Ok(_) => panic!("checkpoint with an unexpected key loaded"),
    }
}

#[test]
fn bad_prompts_are_errors() {
    let model = load(&fixture().join("weights.safetensors")).unwrap();
    let mut p = Sam2ImagePredictor::new(model).unwrap();
    assert!(
        p.predict(&Prompt::point(1.0, 1.0), false).is_err(),
        "predict before set_image"
    );
    let (img, h, w) = image();
    assert!(p.set_image_rgb_u8(&img[..10], h, w).is_err());
    p.set_image_rgb_u8(&img, h, w).unwrap();
    for bad in [
        Prompt::default(),
        Prompt::point(-1.0, 5.0),
        Prompt::point(w as f32 + 1.0, 5.0),
        Prompt::point(f32::NAN, 5.0),
        Prompt::bbox(10.0, 10.0, 5.0, 20.0),
        Prompt::bbox(0.0, 0.0, 10.0, h as f32 + 5.0),
        Prompt {
            points: vec![[1.0, 1.0]],
            labels: vec![],
            ..Default::default()
        },
        Prompt {
            points: vec![[1.0, 1.0]],
            labels: vec![7],
            ..Default::default()
        },
        Prompt {
            mask_input: Some(vec![0.0; 5]),
            ..Default::default()
        },
    ] {
        let r = p.predict(&bad, true);
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "{bad:?} gave {:?}",
            r.map(|x| x.num_masks)
        );
    }
    // Edges of the image are valid.
    assert!(p.predict(&Prompt::point(w as f32, h as f32), false).is_ok());
}

/// SAM 2.1 tiny at 1024 with random weights under the official names: builds,
/// saves, loads strictly and predicts.
#[test]
fn real_size_preset_random_weights() {
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny);
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Sam2Base::new(cfg.clone(), vb).unwrap();
    let p = tmp("sam2.1_tiny_random.safetensors");
    varmap.save(&p).unwrap();
    let ckpt = Checkpoint::open(&p).unwrap();
    assert!(ckpt.len() > 400, "{} tensors", ckpt.len());
    assert!(ckpt.shapes().contains_key("image_encoder.trunk.pos_embed"));
    assert!(ckpt.shapes().contains_key("obj_ptr_tpos_proj.weight"));
    let model = Arc::new(Sam2Base::load(cfg, &ckpt, ComputeDType::F32, DeviceKind::Cpu).unwrap());
    let mut pred = Sam2ImagePredictor::new(model).unwrap();
    let (img, h, w) = image();
    pred.set_image_rgb_u8(&img, h, w).unwrap();
    let out = pred
        .predict(&Prompt::bbox(20.0, 15.0, 70.0, 55.0), false)
        .unwrap();
    assert_eq!(
        (out.num_masks, out.height, out.width, out.low_res_size),
        (1, h, w, 256)
    );
    assert!(out.logits.iter().all(|v| v.is_finite()));
    let _ = std::fs::remove_file(&p);
}
