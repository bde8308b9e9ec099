//! A linear layer's product, 2048 rows × 2048 in × 2048 out (17.2 GFLOP), on
//! the CPU's worker threads: f32 (candle's matmul, the `gemm` crate) against
//! the bf16 kernel (`modeling::kernels::bf16`, weights packed at load).
//! GFLOP/s = 17.18 / seconds. The bf16 case is skipped on a CPU without
//! AVX512-BF16.
//!
//! Then, in bf16, the linear layers of a tracking step at 512 (1024 tokens):
//! the projections (256 → 256, one partial 16-column panel of the kernel's
//! 48) and the memory-attention MLP (256 → 2048 → 256).

use std::time::Duration;

use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medsam2_core::modeling::kernels::bf16;
use medsam2_core::modeling::kernels::bf16_linear::{Linear, LoadScope};

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let n = 2048;
    let w = Tensor::randn(0f32, 0.02, (n, n), &dev).expect("w");
    let x = Tensor::randn(0f32, 1.0, (n, n), &dev).expect("x");
    let f32_lin = Linear::new(w.clone(), None).expect("f32");
    let scope = LoadScope::new(true);
    let bf16_lin = Linear::new(w, None).expect("bf16");
    drop(scope);

    let mut group = c.benchmark_group("gemm_2048");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements((2 * n * n * n) as u64));
    group.bench_function("f32", |b| b.iter(|| f32_lin.forward(&x).expect("f32")));
    if bf16_lin.is_bf16() {
        group.bench_function("bf16", |b| b.iter(|| bf16_lin.forward(&x).expect("bf16")));
    } else {
        println!(
            "skipped bf16: kernel not available (cpu has it: {})",
            bf16::cpu_has_bf16_kernel()
        );
    }
    group.finish();

    let mut group = c.benchmark_group("linear_bf16_1024_tokens");
    group.sample_size(20);
    for (k, n) in [(256usize, 256usize), (256, 2048), (2048, 256)] {
        let scope = LoadScope::new(true);
        let lin =
            Linear::new(Tensor::randn(0f32, 0.02, (n, k), &dev).expect("w"), None).expect("bf16");
        drop(scope);
        if !lin.is_bf16() {
            break;
        }
        let x = Tensor::randn(0f32, 1.0, (1024, k), &dev).expect("x");
        group.throughput(Throughput::Elements((2 * 1024 * k * n) as u64));
        group.bench_function(format!("{k}x{n}"), |b| {
            b.iter(|| lin.forward(&x).expect("bf16"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
