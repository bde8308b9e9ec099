//! The attention core of the tracking step alone, against the machine's f32
//! GEMM: the fused, tiled kernel (`medsam2_core::modeling::kernels::attention`)
//! on the memory-attention cross-attention of SAM 2.1 tiny at 512 with a full
//! bank (1024 queries over 7232 keys, one head: 256 query/key channels and
//! the memory's 64 channels as values, `RoPEAttention::attend_memory`; 4
//! layers per step; keys row-major and channel-major), and a 2048² f32
//! matmul (candle → `gemm`, all threads) as the peak. Throughput is reported
//! in elements/s = FLOP/s (2·Lq·Lk·(d + dv) for attention, 2·n³ for the
//! GEMM).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medsam2_core::modeling::kernels::attention::{sdpa, sdpa_in};

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("attention_kernel");
    g.sample_size(20);
    let (lq, lk, d, dv) = (1024usize, 7232usize, 256usize, 64usize);
    let q = Tensor::randn(0f32, 1.0, (1, 1, lq, d), &dev).unwrap();
    let k = Tensor::randn(0f32, 1.0, (1, 1, lk, d), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (1, 1, lk, dv), &dev).unwrap();
    g.throughput(Throughput::Elements((2 * lq * lk * (d + dv)) as u64));
    g.bench_function("fused_sdpa_1024x7232x256x64", |b| {
        b.iter(|| sdpa(&q, &k, &v).unwrap())
    });
    // The same keys stored channel-major (the transposed view of `[1, 1,
    // d, Lk]` data), as the memory attention rotates and caches them: the
    // score GEMM packs them without transposing. Here, with the keys hot in
    // cache, both layouts run alike (84.3 against 86.0 ms on one Zen 4
    // thread); in the tracking step, where each layer's keys are freshly
    // rotated and streamed, the packing's share fell from 4.4 % to 2.1 %.
    let kt = k
        .transpose(2, 3)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(2, 3)
        .unwrap();
    g.bench_function("fused_sdpa_1024x7232x256x64_keys_channel_major", |b| {
        b.iter(|| sdpa(&q, &kt, &v).unwrap())
    });
    // The bf16 tile products (`--dtype bf16`: keys, values and probabilities
    // rounded to bf16, products summed in f32) where the CPU has AVX512-BF16.
    if medsam2_core::modeling::kernels::bf16::available() {
        g.bench_function("fused_sdpa_bf16_1024x7232x256x64", |b| {
            b.iter(|| sdpa_in(&q, &k, &v, true).unwrap())
        });
    }
    let n = 2048usize;
    let a = Tensor::randn(0f32, 1.0, (n, n), &dev).unwrap();
    g.throughput(Throughput::Elements((2 * n * n * n) as u64));
    g.bench_function("gemm_f32_2048", |b| b.iter(|| a.matmul(&a).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
