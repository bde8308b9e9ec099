//! Cold start: load a `.pt` checkpoint and answer the first click (a box) on
//! one slice, timed from before the checkpoint is opened to the mask. The
//! medsam2 side of `scripts/bench/side_by_side.py`'s `cold_start` row (the
//! PyTorch side times `build_sam2` + `set_image` + `predict` the same way).
//!
//! `cargo run --release --example cold_start -- CHECKPOINT.pt [--config medsam2] [--size 512]`
//!
//! Output: `stage=cold_start size=S ms=T runs=1` and the mask's pixel count.

use std::time::Instant;

use clap::Parser;
use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::sam2_image_predictor::{Prompt, Sam2ImagePredictor};

#[derive(Parser)]
#[command(about = "Time from opening a checkpoint to the first mask")]
struct Args {
    /// A `.pt`/`.pth`/`.safetensors` checkpoint with the official key names.
    checkpoint: std::path::PathBuf,
    /// Config preset or YAML path (`medsam2` = SAM 2.1 tiny at 512).
    #[arg(long, default_value = "medsam2")]
    config: String,
    /// Side of the synthetic square slice.
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Afterwards, time the encoder and the click again (warm) for comparison.
    #[arg(long)]
    breakdown: bool,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let res = (|| -> Result<(), Box<dyn std::error::Error>> {
        let n = a.size;
        // The synthetic slice of `stage_timings` / `torch_stages.py`.
        let rgb: Vec<u8> = (0..n * n)
            .flat_map(|i| {
                let v = (((i % n) ^ (i / n)) & 0xff) as u8;
                [v, v, v]
            })
            .collect();
        let q = n as f32 / 4.0;
        let t = Instant::now();
        let model = build_sam2(&a.config, &a.checkpoint, ComputeDType::F32, DeviceKind::Cpu)?;
        let t_load = t.elapsed();
        let mut p = Sam2ImagePredictor::new(model)?;
        p.set_image_rgb_u8(&rgb, n, n)?;
        let t_enc = t.elapsed();
        let bbox = Prompt::bbox(q, q, 3.0 * q, 3.0 * q);
        let pred = p.predict(&bbox, false)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let on = pred.mask(0).iter().filter(|&&v| v != 0).count();
        println!("stage=cold_start size={n} ms={ms:.3} runs=1");
        println!("# mask pixels {on}");
        let ms_of = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        println!(
            "# load {:.0} ms, first encoder {:.0} ms, first click {:.0} ms",
            ms_of(t_load),
            ms_of(t_enc - t_load),
            ms - ms_of(t_enc)
        );
        if a.breakdown {
            // The same calls again, warm: what the first calls cost extra.
            let t = Instant::now();
            p.set_image_rgb_u8(&rgb, n, n)?;
            let enc = t.elapsed();
            p.predict(&bbox, false)?;
            println!(
                "# warm: encoder {:.0} ms, click {:.0} ms",
                ms_of(enc),
                ms_of(t.elapsed() - enc)
            );
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
