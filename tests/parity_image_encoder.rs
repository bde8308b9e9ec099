//! Parity of the image encoder (Hiera trunk + FPN neck + `forward_image`)
//! with the official PyTorch code on the shared random-weight fixtures.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use medsam2_core::modeling::backbones::{forward_image, HighResConvs, ImageEncoder};
use medsam2_core::Sam2Config;

fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MEDSAM2_SHARED_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    };
    dir.is_dir().then_some(dir)
}

/// Max-abs difference and the allowed bound `1e-4 · max(1, max|ref|)`.
fn compare(name: &str, got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let g = got
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let w = want
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let err = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let max_ref = w.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let tol = 1e-4 * max_ref.max(1.0);
    println!("{name:>20}: max|err| {err:.3e}  tol {tol:.3e}  (max|ref| {max_ref:.3})");
    assert!(
        err.is_finite() && err <= tol,
        "{name}: max|err| {err:e} > {tol:e}"
    );
    (err, tol)
}

/// Runs the fixture in `dtype`: f32 takes the fast CPU kernels, f64 the
/// generic candle path.
fn run_fixture(name: &str, dtype: DType) {
    let Some(root) = fixtures_dir() else {
        println!("skipped: shared fixtures not found (set MEDSAM2_SHARED_FIXTURES)");
        return;
    };
    let dir = root.join(name);
    if !dir.is_dir() {
        println!("skipped: fixture {} not found", dir.display());
        return;
    }
    let cfg = Sam2Config::from_yaml_file(dir.join("config.yaml")).expect("config.yaml");
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("weights.safetensors")], dtype, &Device::Cpu)
    }
    .expect("weights");
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("image.safetensors"), &Device::Cpu)
            .expect("image.safetensors");
    let get = |role: &str| {
        t.get(&format!("image/{role}"))
            .unwrap_or_else(|| panic!("missing image/{role}"))
    };

    let encoder = ImageEncoder::new(&cfg.image_encoder, vb.pp("image_encoder")).expect("encoder");
    let high_res =
        HighResConvs::new(cfg.hidden_dim(), vb.pp("sam_mask_decoder")).expect("conv_s0/s1");
    let pixels = &get("pixels").to_dtype(dtype).unwrap();

    println!("fixture {name} ({dtype:?})");
    let trunk = encoder.trunk().forward(pixels).expect("trunk");
    assert_eq!(trunk.len(), 4);
    for (i, out) in trunk.iter().enumerate() {
        compare(&format!("trunk.{i}"), out, get(&format!("trunk.{i}")));
    }

    let out = forward_image(&encoder, Some(&high_res), pixels).expect("forward_image");
    assert_eq!(out.backbone_fpn.len(), 3);
    assert_eq!(out.vision_pos_enc.len(), 3);
    for i in 0..3 {
        compare(
            &format!("backbone_fpn.{i}"),
            &out.backbone_fpn[i],
            get(&format!("backbone_fpn.{i}")),
        );
    }
    compare(
        "vision_features",
        &out.vision_features,
        get("backbone_fpn.2"),
    );
    compare(
        "vision_pos_enc.2",
        &out.vision_pos_enc[2],
        get("vision_pos_enc.2"),
    );

    let no_mem = vb
        .get((1, 1, cfg.hidden_dim()), "no_mem_embed")
        .expect("no_mem_embed");
    let image_embed = out
        .vision_features
        .broadcast_add(&no_mem.reshape((1, cfg.hidden_dim(), 1, 1)).unwrap())
        .unwrap();
    compare("image_embed", &image_embed, get("image_embed"));
    compare(
        "high_res_feats.0",
        &out.backbone_fpn[0],
        get("high_res_feats.0"),
    );
    compare(
        "high_res_feats.1",
        &out.backbone_fpn[1],
        get("high_res_feats.1"),
    );

    // A second pass hits the position-embedding caches and must agree exactly.
    let again = forward_image(&encoder, Some(&high_res), pixels).expect("second pass");
    let d = (&again.vision_features - &out.vision_features)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert_eq!(
        d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(),
        0.0
    );
}

#[test]
fn image_encoder_parity_sam2_1() {
    run_fixture("tiny-sam2.1", DType::F32);
}

#[test]
fn image_encoder_parity_sam2_0() {
    run_fixture("tiny-sam2.0", DType::F32);
}

#[test]
fn image_encoder_parity_generic_path_f64() {
    run_fixture("tiny-sam2.1", DType::F64);
    run_fixture("tiny-sam2.0", DType::F64);
}

/// A batch of two images gives, image by image, what two single passes give
/// (fast path; the kernels index tokens across the batch).
#[test]
fn image_encoder_batch_matches_single_images() {
    let Some(root) = fixtures_dir() else {
        println!("skipped: shared fixtures not found (set MEDSAM2_SHARED_FIXTURES)");
        return;
    };
    let dir = root.join("tiny-sam2.1");
    if !dir.is_dir() {
        println!("skipped: fixture {} not found", dir.display());
        return;
    }
    let cfg = Sam2Config::from_yaml_file(dir.join("config.yaml")).expect("config.yaml");
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("weights.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .expect("weights");
    let t =
        candle_core::safetensors::load(dir.join("image.safetensors"), &Device::Cpu).expect("image");
    let a = t.get("image/pixels").expect("pixels").clone();
    let b = (a.flip(&[3]).unwrap() * 0.5).unwrap();
    let encoder = ImageEncoder::new(&cfg.image_encoder, vb.pp("image_encoder")).expect("encoder");
    let high_res = HighResConvs::new(cfg.hidden_dim(), vb.pp("sam_mask_decoder")).expect("convs");
    let batch = Tensor::cat(&[&a, &b], 0).unwrap();
    let both = forward_image(&encoder, Some(&high_res), &batch).expect("batch");
    for (i, single) in [&a, &b].into_iter().enumerate() {
        let one = forward_image(&encoder, Some(&high_res), single).expect("single");
        for (l, (x, y)) in both.backbone_fpn.iter().zip(&one.backbone_fpn).enumerate() {
            let d = (x.narrow(0, i, 1).unwrap() - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            let d = d.to_scalar::<f32>().unwrap();
            assert!(d <= 1e-5, "image {i} level {l}: {d}");
        }
        let pe =
            (both.vision_pos_enc[2].narrow(0, i, 1).unwrap() - &one.vision_pos_enc[2]).unwrap();
        assert_eq!(
            pe.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
}
