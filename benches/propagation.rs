//! One propagation step (memory attention + mask decoder + memory encoder) of
//! a real-size config with a full memory bank, image features precomputed.
//! SAM 2.1 tiny at 512 (MedSAM2's setting; also 1024 with `MEDSAM2_BENCH_1024=1`);
//! random weights. Each size also in the CPU bf16 mode (`_bf16`: bf16 linear
//! layers; the same as f32 on a CPU without AVX512-BF16).

use std::sync::Arc;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use medsam2_core::config::{ModelSize, Sam2Config, Version};
use medsam2_core::memory_bank::{MemoryPolicy, TemporalPolicy};
use medsam2_core::modeling::kernels::bf16_linear::LoadScope;
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};

fn setup(size: usize, frames: usize, bf16: bool) -> (Sam2VideoPredictor, usize) {
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny)
        .with_image_size(size)
        .unwrap();
    let scope = LoadScope::new(bf16);
    let model = Arc::new(Sam2Base::with_random_weights(cfg, &Device::Cpu).unwrap());
    drop(scope);
    let (h, w) = (size, size);
    let slices: Vec<Vec<u8>> = (0..frames)
        .map(|z| {
            (0..h * w)
                .map(|i| (((i % w) ^ (i / w) ^ z) & 0xff) as u8)
                .collect()
        })
        .collect();
    let opts = SessionOptions {
        feature_cache_frames: frames,
        ..Default::default()
    };
    let mut s = Sam2VideoPredictor::new(
        model,
        Box::new(GreyFrames::new(slices, h, w).unwrap()),
        opts,
    )
    .unwrap();
    let q = size as f32 / 4.0;
    s.add_points_or_box(0, 1, &[], &[], Some([q, q, 3.0 * q, 3.0 * q]), true)
        .unwrap();
    s.propagate(Some(0), Direction::Forward, Some(frames - 2), |_, _| true)
        .unwrap();
    (s, frames - 1)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("propagation_step");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(20));
    // 512 by default (MedSAM2's setting); MEDSAM2_BENCH_1024=1 adds 1024.
    let mut sizes = vec![512usize];
    if std::env::var_os("MEDSAM2_BENCH_1024").is_some() {
        sizes.push(1024);
    }
    for (size, bf16) in sizes.into_iter().flat_map(|s| [(s, false), (s, true)]) {
        // 9 frames: the conditioning frame plus 6 previous memories and pointers.
        let (mut s, frame) = setup(size, 9, bf16);
        let feats = s.features(frame).unwrap();
        let model = s.model().clone();
        let policy = TemporalPolicy::from_config(&model.cfg);
        let e = model.cfg.embedding_size();
        let pos = model
            .memory_encoder
            .position_encoding_for(1, e, e, &Device::Cpu)
            .unwrap();
        let mem = s.object_memory(0).unwrap().clone();
        let selected = policy.select(&mem, frame, false, s.num_frames(), &pos);
        assert_eq!(selected.spatial.len(), model.cfg.num_maskmem);
        let mut params = model.new_memory.clone();
        params.binarize_mask_from_pts = true;
        let suffix = if bf16 { "_bf16" } else { "" };
        g.bench_function(format!("sam2.1_tiny_{size}_full_bank{suffix}"), |b| {
            b.iter(|| {
                model
                    .track_step(&feats, false, None, None, &selected, true, None, &params)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
