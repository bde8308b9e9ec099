//! Measures peak memory and time of propagating a synthetic N-slice volume at
//! a real-size config (random weights): the numbers documented in README.md.
//!
//! `cargo run --release --example propagation_memory -- [--slices 200] [--size 512] [--cache 8]`

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use clap::Parser;
use medsam2_core::config::{ModelSize, Sam2Config, Version};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};

#[derive(Parser)]
struct Args {
    /// Number of slices.
    #[arg(long, default_value_t = 200)]
    slices: usize,
    /// Model input size (SAM 2.1 tiny).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Slice side in pixels.
    #[arg(long, default_value_t = 512)]
    side: usize,
    /// Frames whose features are cached.
    #[arg(long, default_value_t = 8)]
    cache: usize,
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny).with_image_size(a.size)?;
    let model = Arc::new(Sam2Base::with_random_weights(cfg, &Device::Cpu)?);
    let n = a.side;
    let slices: Vec<Vec<u8>> = (0..a.slices)
        .map(|z| {
            (0..n * n)
                .map(|i| (((i % n) ^ (i / n) ^ z) & 0xff) as u8)
                .collect()
        })
        .collect();
    let base = rss_kib("VmRSS:");
    let opts = SessionOptions {
        feature_cache_frames: a.cache,
        ..Default::default()
    };
    let mut s = Sam2VideoPredictor::new(model, Box::new(GreyFrames::new(slices, n, n)?), opts)?;
    let mid = a.slices / 2;
    let q = n as f32 / 4.0;
    s.add_points_or_box(mid, 1, &[], &[], Some([q, q, 3.0 * q, 3.0 * q]), true)?;
    let t = Instant::now();
    let mut done = 0;
    s.propagate(Some(mid), Direction::Both, None, |_, p| {
        done = p.done;
        if p.done % 25 == 0 {
            eprintln!(
                "{}/{} slices, RSS {} MiB",
                p.done,
                p.total,
                rss_kib("VmRSS:") / 1024
            );
        }
        true
    })?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "slices {}  size {}  cache {}  time {:.1} s ({:.3} s/slice incl. encoder)  peak RSS {} MiB (volume + model before start {} MiB)  cache peak {} frames, encoder runs {}",
        a.slices,
        a.size,
        a.cache,
        secs,
        secs / done as f64,
        rss_kib("VmHWM:") / 1024,
        base / 1024,
        s.feature_cache_peak(),
        s.encoder_runs()
    );
    Ok(())
}
