// Temporary profiling scratch (sam heads engineer); will be deleted.
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use medsam2_core::config::{ModelSize, Version};
use medsam2_core::modeling::sam::{MaskDecoder, PromptEncoder, TwoWayTransformer};
use medsam2_core::Sam2Config;
use std::time::Instant;

fn t<F: FnMut() -> R, R>(name: &str, mut f: F) -> R {
    let mut out = f();
    let st = Instant::now();
    let n = 5;
    for _ in 0..n { out = f(); }
    println!("{name}: {:.2} ms", st.elapsed().as_secs_f64() * 1e3 / n as f64);
    out
}

fn main() {
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny);
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    PromptEncoder::new(&cfg.prompt_encoder(), vb.pp("sam_prompt_encoder")).unwrap();
    MaskDecoder::new(&cfg.mask_decoder(), vb.pp("sam_mask_decoder")).unwrap();
    for var in varmap.all_vars() {
        let dims = var.dims().to_vec();
        let std = if dims.len() >= 2 { (dims[0] as f64 / dims.iter().product::<usize>() as f64).sqrt() } else { 0.1 };
        var.set(&Tensor::randn(0f32, std as f32, dims, &dev).unwrap()).unwrap();
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let pe = PromptEncoder::new(&cfg.prompt_encoder(), vb.pp("sam_prompt_encoder")).unwrap();
    let dec = MaskDecoder::new(&cfg.mask_decoder(), vb.pp("sam_mask_decoder")).unwrap();
    let tr = TwoWayTransformer::new(&cfg.mask_decoder().transformer, vb.pp("sam_mask_decoder.transformer")).unwrap();
    let image_embed = Tensor::randn(0f32, 1.0, (1, 256, 64, 64), &dev).unwrap();
    let feat_s0 = Tensor::randn(0f32, 1.0, (1, 32, 256, 256), &dev).unwrap();
    let feat_s1 = Tensor::randn(0f32, 1.0, (1, 64, 128, 128), &dev).unwrap();
    let dense_pe = pe.get_dense_pe().unwrap();
    let coords = Tensor::from_slice(&[512f32, 400.0], (1, 1, 2), &dev).unwrap();
    let labels = Tensor::from_slice(&[1i32], (1, 1), &dev).unwrap();
    let (sparse, dense) = t("prompt encoder", || pe.forward(Some((&coords, &labels)), None, None).unwrap());
    let tokens = Tensor::randn(0f32, 1.0, (1, 8, 256), &dev).unwrap();
    let src = t("src+dense", || image_embed.broadcast_add(&dense).unwrap());
    t("transformer", || tr.forward(&src, &dense_pe, &tokens).unwrap());
    t("predict_masks", || dec.predict_masks(&image_embed, &dense_pe, &sparse, &dense, false, Some((&feat_s0, &feat_s1))).unwrap());
    t("forward multimask", || dec.forward(&image_embed, &dense_pe, &sparse, &dense, true, false, Some((&feat_s0, &feat_s1))).unwrap());
    t("forward single", || dec.forward(&image_embed, &dense_pe, &sparse, &dense, false, false, Some((&feat_s0, &feat_s1))).unwrap());
}
