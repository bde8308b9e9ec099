//! Times the parts of one full-bank tracking step (SAM 2.1 tiny, random weights).
//! `cargo run --release --example step_profile -- [SIZE]`
//!
//! Then compares memory attention with each stored memory's projected keys
//! and values cached (the tracking path) against projecting the assembled
//! memory in every layer (`MemoryAttention::forward`), in process CPU time
//! (robust on a busy machine; run with `RAYON_NUM_THREADS=1` for work alone).
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use medsam2_core::config::{ModelSize, Sam2Config, Version};
use medsam2_core::memory_bank::{MemoryPolicy, TemporalPolicy};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::sam2_video_predictor::{
    Direction, GreyFrames, Sam2VideoPredictor, SessionOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny).with_image_size(size)?;
    let model = Arc::new(Sam2Base::with_random_weights(cfg, &Device::Cpu)?);
    let frames = 9;
    let slices: Vec<Vec<u8>> = (0..frames)
        .map(|z| {
            (0..size * size)
                .map(|i| (((i % size) ^ (i / size) ^ z) & 0xff) as u8)
                .collect()
        })
        .collect();
    let opts = SessionOptions {
        feature_cache_frames: frames,
        ..Default::default()
    };
    let mut s = Sam2VideoPredictor::new(
        model.clone(),
        Box::new(GreyFrames::new(slices, size, size)?),
        opts,
    )?;
    let q = size as f32 / 4.0;
    s.add_points_or_box(0, 1, &[], &[], Some([q, q, 3.0 * q, 3.0 * q]), true)?;
    s.propagate(Some(0), Direction::Forward, Some(frames - 2), |_, _| true)?;
    let frame = frames - 1;
    let feats = s.features(frame)?;
    let e = model.cfg.embedding_size();
    let pos = model
        .memory_encoder
        .position_encoding_for(1, e, e, &Device::Cpu)?;
    let mem = s.object_memory(0).unwrap().clone();
    let sel = TemporalPolicy::from_config(&model.cfg).select(&mem, frame, false, frames, &pos);
    let mut params = model.new_memory.clone();
    params.binarize_mask_from_pts = true;
    for _ in 0..3 {
        let t = Instant::now();
        let (pix, _) = model.prepare_memory_conditioned_features(&feats, false, &sel)?;
        let t1 = t.elapsed();
        let hr = feats.high_res.as_ref().map(|(a, b)| (a, b));
        let t = Instant::now();
        let o = model.forward_sam_heads(&pix, None, None, hr, true)?;
        let t2 = t.elapsed();
        let t = Instant::now();
        model.encode_new_memory(
            &feats.vision_feats,
            &o.high_res_masks,
            &o.object_score_logits,
            false,
            &params,
        )?;
        let t3 = t.elapsed();
        println!("memory attention {t1:?}  sam heads {t2:?}  memory encoder {t3:?}");
    }
    let (_, tr) = model.prepare_memory_conditioned_features(&feats, false, &sel)?;
    let tr = tr.ok_or("no memory attention")?;
    let (mut cached, mut uncached) = (0.0, 0.0);
    let runs = 5;
    for _ in 0..runs {
        let t = cpu_seconds();
        model.prepare_memory_conditioned_features(&feats, false, &sel)?;
        cached += cpu_seconds() - t;
        let t = cpu_seconds();
        model.memory_attention.forward(
            &tr.curr,
            &tr.memory,
            &tr.curr_pos,
            &tr.memory_pos,
            tr.num_obj_ptr_tokens,
        )?;
        uncached += cpu_seconds() - t;
    }
    println!(
        "memory attention CPU time per step: cached projections {:.0} ms, projected every step {:.0} ms",
        cached * 1e3 / runs as f64,
        uncached * 1e3 / runs as f64
    );
    Ok(())
}

/// User + system CPU time of the whole process (all threads), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}
