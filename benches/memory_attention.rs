//! One memory-attention forward of SAM 2.1 tiny at 1024 with a full memory
//! bank: 4096 query tokens (64x64 map, 256 channels) over 7 spatial memories of
//! 4096 tokens plus 16 object pointers of 4 tokens (64 channels), random weights.
//!
//! `forward` is the whole call (each layer projects its keys from
//! the raw memory); `project_memory` is that projection alone; and
//! `forward_projected` the call on keys projected beforehand, as
//! tracking runs with each stored memory's projection cached
//! (`memory_bank::ProjectionCache`; the per-slot temporal term it adds is not
//! included here).

use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use medsam2_core::config::{ModelSize, Version};
use medsam2_core::modeling::memory_attention::{KeyPart, MemoryAttention};
use medsam2_core::Sam2Config;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let ma = MemoryAttention::new(&cfg.memory_attention, vb.pp("memory_attention"))
        .expect("memory attention");

    let hw = cfg.embedding_size() * cfg.embedding_size();
    let c_dim = cfg.hidden_dim();
    let mem_dim = cfg.mem_dim();
    let num_ptr_tokens = cfg.max_obj_ptrs_in_encoder * (c_dim / mem_dim);
    let m = cfg.num_maskmem * hw + num_ptr_tokens;
    let curr = Tensor::randn(0f32, 1.0, (hw, 1, c_dim), &dev).unwrap();
    let curr_pos = Tensor::randn(0f32, 1.0, (hw, 1, c_dim), &dev).unwrap();
    let memory = Tensor::randn(0f32, 1.0, (m, 1, mem_dim), &dev).unwrap();
    let memory_pos = Tensor::randn(0f32, 1.0, (m, 1, mem_dim), &dev).unwrap();

    let mut group = c.benchmark_group("memory_attention");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("sam2.1_tiny_1024_full_bank/forward", |b| {
        b.iter(|| {
            ma.forward(&curr, &memory, &curr_pos, &memory_pos, num_ptr_tokens)
                .unwrap()
        })
    });
    // The part of `forward` that a per-memory key/value cache would save.
    group.bench_function("sam2.1_tiny_1024_full_bank/project_memory", |b| {
        b.iter(|| ma.project_memory(&memory, &memory_pos).unwrap())
    });
    let projected: Vec<Vec<KeyPart>> = ma
        .project_memory(&memory, &memory_pos)
        .unwrap()
        .into_iter()
        .map(|p| vec![KeyPart::plain(p.k)])
        .collect();
    group.bench_function("sam2.1_tiny_1024_full_bank/forward_projected", |b| {
        b.iter(|| {
            ma.forward_projected(&curr, &curr_pos, &projected, &memory, num_ptr_tokens)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
