//! Per-stage wall times of SAM 2.1 tiny (random weights) on one device, for
//! the side-by-side table against PyTorch (`scripts/device/torch_stages.py`
//! prints the same lines for the official code). Criterion benches are the
//! CPU measurements; this runner exists for devices where only a built binary
//! can be carried (`scripts/device-check.sh`).
//!
//! `cargo run --release --example stage_timings -- [--device cuda] [--dtype f32|bf16]
//! [--sizes 512,1024] [--track-sizes 512] [--runs 5] [--stages click_point,click_box]`
//!
//! Stages, medians of `--runs` after two warm-up runs, the device synchronised
//! before each clock read: `encoder` (image predictor `set_image` on an S×S
//! RGB image), `click_point` (one point, multimask), `click_box` (a box, single
//! mask), `track_step` (one tracking step with a full memory bank: memory
//! attention, SAM heads, memory encoder), `propagate_slice` (propagation per
//! slice, encoder included, once the bank is full). Output: one line per
//! stage, `stage=NAME size=S ms=MEDIAN runs=N`.
//!
//! `--cpu-time` (Linux) reports the process's CPU time per call instead of
//! wall time: the sum over its threads of `/proc/self/task/*/schedstat`.
//! With `RAYON_NUM_THREADS=1` that is the stable measure for comparing two
//! builds on a busy machine, where wall times of two-thread runs swing 2–4×
//! (a thread waiting for a descheduled partner). The kernel may account it
//! in scheduler ticks (4 ms on some VMs): use it for stages well above that.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::config::{ModelSize, Sam2Config, Version};
use medsam2_core::memory_bank::{MemoryPolicy, TemporalPolicy};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};

#[derive(Parser)]
#[command(about = "Per-stage timings of SAM 2.1 tiny on one device")]
struct Args {
    /// cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Image sizes, comma separated.
    #[arg(long, default_value = "512,1024", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Sizes at which the tracking stages (`propagate_slice`, `track_step`)
    /// run, comma separated (default: every size).
    #[arg(long, value_delimiter = ',')]
    track_sizes: Option<Vec<usize>>,
    /// Timed runs per stage (after 2 warm-up runs).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only these stages, comma separated (default: all). The image is still
    /// encoded once (untimed) for the click stages.
    #[arg(long, value_delimiter = ',')]
    stages: Option<Vec<String>>,
    /// Report CPU time (all threads, Linux) instead of wall time.
    #[arg(long)]
    cpu_time: bool,
}

/// Set from `--cpu-time`: [`time_ms`] reads CPU time instead of the clock.
static CPU_TIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// CPU time of this process in ms: the sum over its threads of the first
/// field of `/proc/self/task/*/schedstat` (nanoseconds on the CPU).
fn process_cpu_ms() -> Res<f64> {
    let mut ns = 0f64;
    for entry in std::fs::read_dir("/proc/self/task")? {
        // A thread may exit between the listing and the read: skip it.
        if let Ok(s) = std::fs::read_to_string(entry?.path().join("schedstat")) {
            let first = s.split_whitespace().next().unwrap_or("0");
            ns += first.parse::<f64>()?;
        }
    }
    Ok(ns * 1e-6)
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// SAM 2.1 tiny at `size` with random weights, on `dev` in `dtype`.
fn random_model(size: usize, cdt: ComputeDType, dev: &Device) -> Res<Arc<Sam2Base>> {
    // On the CPU: f32 tensors, bf16 linear layers in the bf16 mode (as `Sam2Base::load`).
    let dtype = cdt.tensor_dtype(dev);
    let _scope =
        medsam2_core::modeling::kernels::bf16_linear::LoadScope::new(cdt.bf16_matmuls(dev));
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny).with_image_size(size)?;
    let varmap = candle_nn::VarMap::new();
    Sam2Base::new(
        cfg.clone(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let tensors: std::collections::HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| "poisoned lock")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    Ok(Arc::new(Sam2Base::new(
        cfg,
        VarBuilder::from_tensors(tensors, dtype, dev),
    )?))
}

/// Median wall time in ms of `runs` calls of `f` after two warm-up calls.
fn time_ms(dev: &Device, runs: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    for _ in 0..2 {
        f()?;
    }
    dev.synchronize()?;
    let mut t = Vec::with_capacity(runs);
    let cpu = CPU_TIME.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        let c = if cpu { process_cpu_ms()? } else { 0.0 };
        f()?;
        dev.synchronize()?;
        t.push(if cpu {
            process_cpu_ms()? - c
        } else {
            s.elapsed().as_secs_f64() * 1e3
        });
    }
    Ok(median(t))
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn slices(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|z| {
            (0..size * size)
                .map(|i| (((i % size) ^ (i / size) ^ (3 * z)) & 0xff) as u8)
                .collect()
        })
        .collect()
}

fn report(stage: &str, size: usize, ms: f64, runs: usize) {
    println!("stage={stage} size={size} ms={ms:.3} runs={runs}");
}

fn run_size(
    size: usize,
    dtype: ComputeDType,
    dev: &Device,
    runs: usize,
    track: bool,
    stages: Option<&[String]>,
) -> Res<()> {
    let want = |s: &str| stages.is_none_or(|v| v.iter().any(|x| x == s));
    let model = random_model(size, dtype, dev)?;
    let q = size as f32 / 4.0;

    // Image predictor: encoder, then clicks on the cached embedding.
    let rgb: Vec<u8> = slices(1, size)[0].iter().flat_map(|&v| [v, v, v]).collect();
    let mut pred = Sam2ImagePredictor::new(model.clone())?;
    if want("encoder") {
        let ms = time_ms(dev, runs, || Ok(pred.set_image_rgb_u8(&rgb, size, size)?))?;
        report("encoder", size, ms, runs);
    } else if want("click_point") || want("click_box") {
        pred.set_image_rgb_u8(&rgb, size, size)?;
    }
    if want("click_point") {
        let point = Prompt::point(2.0 * q, 2.0 * q);
        let ms = time_ms(dev, runs, || {
            pred.predict(&point, true).map(drop).map_err(Into::into)
        })?;
        report("click_point", size, ms, runs);
    }
    if want("click_box") {
        let bbox = Prompt::bbox(q, q, 3.0 * q, 3.0 * q);
        let ms = time_ms(dev, runs, || {
            pred.predict(&bbox, false).map(drop).map_err(Into::into)
        })?;
        report("click_box", size, ms, runs);
    }
    drop(pred);
    if !track || !(want("propagate_slice") || want("track_step")) {
        return Ok(());
    }

    // Propagation: a box on slice 0, then per-slice times once the bank is
    // full (num_maskmem = 7 memories: from slice 7 on).
    let frames = 8 + runs.max(1) + 2;
    let mut s = Sam2VideoPredictor::new(
        model.clone(),
        Box::new(GreyFrames::new(slices(frames, size), size, size)?),
        SessionOptions::default(),
    )?;
    s.add_points_or_box(0, 1, &[], &[], Some([q, q, 3.0 * q, 3.0 * q]), true)?;
    let mut per_slice = Vec::new();
    let mut last = Instant::now();
    let mut sync_err = None;
    s.propagate(Some(0), Direction::Forward, None, |fm, _| {
        if let Err(e) = dev.synchronize() {
            sync_err = Some(e);
            return false;
        }
        if fm.frame_idx >= 8 {
            per_slice.push(last.elapsed().as_secs_f64() * 1e3);
        }
        last = Instant::now();
        true
    })?;
    if let Some(e) = sync_err {
        return Err(e.into());
    }
    let n = per_slice.len();
    if want("propagate_slice") {
        report("propagate_slice", size, median(per_slice), n);
    }
    if !want("track_step") {
        return Ok(());
    }

    // One tracking step on the last slice, its features cached, bank full.
    let frame = frames - 1;
    let feats = s.features(frame)?;
    let e = model.cfg.embedding_size();
    let pos = model
        .memory_encoder
        .position_encoding_for(1, e, e, model.device())?;
    let mem = s.object_memory(0).ok_or("no object memory")?.clone();
    let sel = TemporalPolicy::from_config(&model.cfg).select(&mem, frame, false, frames, &pos);
    let mut params = model.new_memory.clone();
    params.binarize_mask_from_pts = true;
    let ms = time_ms(dev, runs, || {
        model.track_step(&feats, false, None, None, &sel, true, None, &params)?;
        Ok(())
    })?;
    report("track_step", size, ms, runs);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let res = (|| -> Res<()> {
        let dev = DeviceKind::parse(&args.device)?.device()?;
        CPU_TIME.store(args.cpu_time, std::sync::atomic::Ordering::Relaxed);
        let dtype = ComputeDType::parse(&args.dtype)?;
        println!(
            "# medsam2 stage timings: device {} dtype {}{}",
            args.device,
            args.dtype,
            if args.cpu_time {
                " (CPU time, all threads)"
            } else {
                ""
            }
        );
        for &size in &args.sizes {
            let track = args.track_sizes.as_ref().is_none_or(|t| t.contains(&size));
            run_size(size, dtype, &dev, args.runs, track, args.stages.as_deref())?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
