//! One click at 512 and 1024: prompt encoding + mask decoding for SAM 2.1
//! tiny (random weights, random image embedding and high-res features), in
//! f32 and in the CPU bf16 mode (the decoder's linear layers, transposed
//! convs and attention products in bf16; the same as f32 on a CPU without
//! AVX512-BF16).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use medsam2_core::config::{ModelSize, Version};
use medsam2_core::modeling::kernels::bf16_linear::LoadScope;
use medsam2_core::modeling::sam::{MaskDecoder, PromptEncoder};
use medsam2_core::Sam2Config;
use std::time::Duration;

/// The prompt encoder and mask decoder; `bf16`: built in a bf16 load scope.
fn heads(size: usize, bf16: bool) -> (PromptEncoder, MaskDecoder) {
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny)
        .with_image_size(size)
        .unwrap();
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    // Create the variables, then fill every parameter with N(0, 1/fan_in)
    // (1-d: N(0, 0.1²)) and load again.
    PromptEncoder::new(&cfg.prompt_encoder(), vb.pp("sam_prompt_encoder")).unwrap();
    MaskDecoder::new(&cfg.mask_decoder(), vb.pp("sam_mask_decoder")).unwrap();
    for var in varmap.all_vars() {
        let dims = var.dims().to_vec();
        let std = if dims.len() >= 2 {
            (dims[0] as f64 / dims.iter().product::<usize>() as f64).sqrt()
        } else {
            0.1
        };
        var.set(&Tensor::randn(0f32, std as f32, dims, &dev).unwrap())
            .unwrap();
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let _scope = LoadScope::new(bf16);
    let pe = PromptEncoder::new(&cfg.prompt_encoder(), vb.pp("sam_prompt_encoder")).unwrap();
    let dec = MaskDecoder::new(&cfg.mask_decoder(), vb.pp("sam_mask_decoder")).unwrap();
    (pe, dec)
}

fn bench(c: &mut Criterion) {
    for size in [512usize, 1024] {
        for bf16 in [false, true] {
            bench_size(c, size, bf16);
        }
    }
}

fn bench_size(c: &mut Criterion, size: usize, bf16: bool) {
    let dev = Device::Cpu;
    let (pe, dec) = heads(size, bf16);
    let e = size / 16;
    let image_embed = Tensor::randn(0f32, 1.0, (1, 256, e, e), &dev).unwrap();
    let feat_s0 = Tensor::randn(0f32, 1.0, (1, 32, 4 * e, 4 * e), &dev).unwrap();
    let feat_s1 = Tensor::randn(0f32, 1.0, (1, 64, 2 * e, 2 * e), &dev).unwrap();
    let dense_pe = pe.get_dense_pe().unwrap();
    let f = size as f32 / 1024.0;

    let click = |coords: &[f32], labels: &[i32], multimask: bool| {
        let n = labels.len();
        let coords: Vec<f32> = coords.iter().map(|v| v * f).collect();
        let coords = Tensor::from_slice(&coords, (1, n, 2), &dev).unwrap();
        let labels = Tensor::from_slice(labels, (1, n), &dev).unwrap();
        let (sparse, dense) = pe.forward(Some((&coords, &labels)), None, None).unwrap();
        let out = dec
            .forward(
                &image_embed,
                &dense_pe,
                &sparse,
                &dense,
                multimask,
                false,
                Some((&feat_s0, &feat_s1)),
            )
            .unwrap();
        out.masks
    };

    let name = format!("sam_heads_{size}_tiny{}", if bf16 { "_bf16" } else { "" });
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("one_point_multimask", |b| {
        b.iter(|| click(&[512.0, 400.0], &[1], true))
    });
    g.bench_function("box_single_mask", |b| {
        b.iter(|| click(&[200.0, 180.0, 700.0, 640.0], &[2, 3], false))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
