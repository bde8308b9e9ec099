//! One image-encoder forward (Hiera trunk + FPN neck + high-res convs) of
//! SAM 2.1 tiny at 1024 with random weights, on the CPU: in f32, and in the
//! CPU bf16 mode (bf16 linear layers; the same as f32 on a CPU without
//! AVX512-BF16).

use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use medsam2_core::config::{ModelSize, Version};
use medsam2_core::modeling::backbones::{forward_image, HighResConvs, ImageEncoder};
use medsam2_core::modeling::kernels::bf16_linear::LoadScope;
use medsam2_core::Sam2Config;

fn bench(c: &mut Criterion) {
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny);
    let dev = Device::Cpu;
    // A VarMap hands out initialised variables for every requested name.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let encoder = ImageEncoder::new(&cfg.image_encoder, vb.pp("image_encoder")).expect("encoder");
    let high_res = HighResConvs::new(cfg.hidden_dim(), vb.pp("sam_mask_decoder")).expect("convs");
    let s = cfg.image_size;
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, s, s), &dev).expect("pixels");
    // Warm the position-embedding caches once, as a predictor would.
    forward_image(&encoder, Some(&high_res), &pixels).expect("forward");

    let mut group = c.benchmark_group("image_encoder");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("sam2.1_tiny_1024", |b| {
        b.iter(|| forward_image(&encoder, Some(&high_res), &pixels).expect("forward"))
    });
    // The same weights, linear layers packed in bf16.
    let scope = LoadScope::new(true);
    let encoder = ImageEncoder::new(&cfg.image_encoder, vb.pp("image_encoder")).expect("encoder");
    let high_res = HighResConvs::new(cfg.hidden_dim(), vb.pp("sam_mask_decoder")).expect("convs");
    drop(scope);
    forward_image(&encoder, Some(&high_res), &pixels).expect("forward");
    group.bench_function("sam2.1_tiny_1024_bf16", |b| {
        b.iter(|| forward_image(&encoder, Some(&high_res), &pixels).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
