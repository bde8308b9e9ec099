//! Classical baselines for the key-slice box protocol, to judge a model's
//! `evaluate_prompts --strategies key-box` numbers against.
//!
//! ```text
//! cargo run --release --example baseline_box -- --data ../shared/data/ct-lesion
//! ```
//! For every case and label: the ground truth's bounding box on its largest
//! slice (as `evaluate_prompts`' key-box, without box shift), then
//! * `box-filled`: the box itself, filled, on the key slice only;
//! * `otsu-carried`: an Otsu threshold of the grey levels inside the box (the
//!   same `u8` slices the model sees), the side of the threshold holding the
//!   box centre, the connected component nearest the centre; then slice by
//!   slice outwards, the same threshold inside the previous slice's mask
//!   bounding box grown by 3 pixels, keeping the components that overlap the
//!   previous mask, until nothing is left.
//!
//! Dice and NSD (2 mm) per case with `medsam2_core::medical::metrics`, and the
//! mean. Deterministic (no random choice).

#[path = "common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use medsam2_core::medical::metrics;
use medsam2_core::medical::slicing::LabelAssembler;
use medsam2_core::medical::VoxelData;
use medsam2_tools::volume_job::{
    find_cases, label_slices, load_case, mask_bbox, parse_axis, IntensitySpec, JobError, KeySlice,
    Slices,
};

/// Classical key-box baselines (box filled; Otsu in the box carried to neighbours).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Folder of image/label pairs (as evaluate_prompts).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Intensity mapping (as segment_volume --window).
    #[arg(long, default_value = "auto")]
    window: String,
    /// Slicing axis.
    #[arg(long, default_value = "2")]
    axis: String,
    /// NSD tolerance in mm.
    #[arg(long, default_value_t = 2.0)]
    nsd_tol: f64,
}

/// Otsu's threshold of the values (the `t` maximising the between-class
/// variance of `v < t` and `v >= t`). A dozen lines: no crate needed.
fn otsu(values: &[u8]) -> u8 {
    let mut hist = [0f64; 256];
    for &v in values {
        hist[v as usize] += 1.0;
    }
    let n: f64 = hist.iter().sum();
    let total: f64 = hist.iter().enumerate().map(|(i, h)| i as f64 * h).sum();
    let (mut w0, mut s0, mut best, mut best_t) = (0.0, 0.0, -1.0, 0u8);
    for t in 1..256 {
        w0 += hist[t - 1];
        s0 += (t - 1) as f64 * hist[t - 1];
        let w1 = n - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (s0 / w0, (total - s0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// 4-connected components of `mask` (w x h): a label per pixel (0 = none).
fn components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, u32) {
    let mut lab = vec![0u32; mask.len()];
    let mut n = 0;
    let mut stack = Vec::new();
    for s in 0..mask.len() {
        if !mask[s] || lab[s] != 0 {
            continue;
        }
        n += 1;
        lab[s] = n;
        stack.push(s);
        while let Some(p) = stack.pop() {
            let (x, y) = (p % w, p / w);
            let mut visit = |q: usize| {
                if mask[q] && lab[q] == 0 {
                    lab[q] = n;
                    stack.push(q);
                }
            };
            if x > 0 {
                visit(p - 1);
            }
            if x + 1 < w {
                visit(p + 1);
            }
            if y > 0 {
                visit(p - w);
            }
            if y + 1 < h {
                visit(p + w);
            }
        }
    }
    (lab, n)
}

/// Pixels of `img` inside `b` (inclusive) on the chosen side of `t`.
fn threshold_in_box(img: &[u8], w: usize, b: [usize; 4], t: u8, above: bool) -> Vec<bool> {
    let mut m = vec![false; img.len()];
    for y in b[1]..=b[3] {
        for x in b[0]..=b[2] {
            let v = img[y * w + x];
            m[y * w + x] = (v >= t) == above;
        }
    }
    m
}

/// The Otsu-carried baseline: per-slice masks (None where empty).
fn otsu_carried(s: &Slices, key: usize, b: [usize; 4]) -> Vec<Option<Vec<bool>>> {
    let (w, h) = (s.width, s.height);
    let img = &s.images[key];
    let inside: Vec<u8> = (b[1]..=b[3])
        .flat_map(|y| (b[0]..=b[2]).map(move |x| (x, y)))
        .map(|(x, y)| img[y * w + x])
        .collect();
    let t = otsu(&inside);
    let (cx, cy) = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2);
    // Side of the threshold: that of the inner half of the box (mean level).
    let (qx, qy) = ((b[2] - b[0]) / 4, (b[3] - b[1]) / 4);
    let mut sum = 0.0;
    let mut cnt = 0.0;
    for y in cy - qy.min(cy)..=(cy + qy).min(h - 1) {
        for x in cx - qx.min(cx)..=(cx + qx).min(w - 1) {
            sum += img[y * w + x] as f64;
            cnt += 1.0;
        }
    }
    let above = sum / cnt >= t as f64;
    let m = threshold_in_box(img, w, b, t, above);
    let (lab, n) = components(&m, w, h);
    // Component nearest the box centre.
    let mut best = (f64::INFINITY, 0u32);
    for (p, &l) in lab.iter().enumerate() {
        if l != 0 {
            let d = ((p % w) as f64 - cx as f64).powi(2) + ((p / w) as f64 - cy as f64).powi(2);
            if d < best.0 {
                best = (d, l);
            }
        }
    }
    let mut out: Vec<Option<Vec<bool>>> = vec![None; s.len()];
    if n == 0 {
        return out;
    }
    let key_mask: Vec<bool> = lab.iter().map(|&l| l == best.1).collect();
    out[key] = Some(key_mask.clone());
    for dir in [-1i64, 1] {
        let mut prev = key_mask.clone();
        let mut z = key as i64 + dir;
        while z >= 0 && (z as usize) < s.len() {
            let Some(pb) = mask_bbox(&prev.iter().map(|&v| u8::from(v)).collect::<Vec<_>>(), w)
            else {
                break;
            };
            let g = [
                pb[0].saturating_sub(3),
                pb[1].saturating_sub(3),
                (pb[2] + 3).min(w - 1),
                (pb[3] + 3).min(h - 1),
            ];
            let m = threshold_in_box(&s.images[z as usize], w, g, t, above);
            let (lab, n) = components(&m, w, h);
            let mut keep = vec![false; n as usize + 1];
            for (p, &l) in lab.iter().enumerate() {
                if l != 0 && prev[p] {
                    keep[l as usize] = true;
                }
            }
            let next: Vec<bool> = lab.iter().map(|&l| l != 0 && keep[l as usize]).collect();
            if !next.iter().any(|&v| v) {
                break;
            }
            out[z as usize] = Some(next.clone());
            prev = next;
            z += dir;
        }
    }
    out
}

fn run(args: &Args) -> Result<(), JobError> {
    let axis = parse_axis(&args.axis)?;
    let spec = IntensitySpec::parse(&args.window)?;
    let cases = find_cases(&args.data)?;
    if cases.is_empty() {
        return Err(JobError(format!("{}: no cases", args.data.display())));
    }
    let names = ["box-filled", "otsu-carried"];
    let mut sums = [[0.0f64; 2]; 2];
    let mut count = 0usize;
    println!(
        "{:<40} {:>5} {:>14} {:>14}",
        "case", "label", "box-filled", "otsu-carried"
    );
    for files in &cases {
        let case = load_case(files)?;
        let s = Slices::from_volume(&case.image, axis, &spec.intensity(&case.image))?;
        let values = case.labels.data().to_f64_vec();
        for gt in label_slices(&case.labels, axis)? {
            let key = gt
                .key_slice(KeySlice::Largest)
                .ok_or_else(|| JobError("empty label".into()))?;
            let b = mask_bbox(&gt.masks[key], s.width).ok_or_else(|| JobError("empty".into()))?;
            let filled: Vec<bool> = (0..s.width * s.height)
                .map(|p| {
                    let (x, y) = (p % s.width, p / s.width);
                    x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]
                })
                .collect();
            let mut per_slice: Vec<Vec<Option<Vec<bool>>>> = vec![vec![None; s.len()]];
            per_slice[0][key] = Some(filled);
            per_slice.push(otsu_carried(&s, key, b));
            let gt_vol = case.labels.with_data(VoxelData::U8(
                values
                    .iter()
                    .map(|&v| u8::from(v == gt.label as f64))
                    .collect(),
            ))?;
            let mut cells = Vec::new();
            for (i, masks) in per_slice.iter().enumerate() {
                let mut asm = LabelAssembler::new(&case.labels, axis);
                for (z, m) in masks.iter().enumerate() {
                    if let Some(m) = m {
                        asm.add_mask(z, 1, m)?;
                    }
                }
                let pred = asm.finish()?;
                let m = metrics::evaluate(&pred, &gt_vol, args.nsd_tol)?;
                let (d, n) = m
                    .iter()
                    .find(|l| l.label == 1)
                    .map_or((0.0, 0.0), |l| (l.dice, l.nsd));
                sums[i][0] += d;
                sums[i][1] += n;
                cells.push(format!("{d:.3}/{n:.3}"));
            }
            count += 1;
            println!(
                "{:<40} {:>5} {:>14} {:>14}",
                case.name, gt.label, cells[0], cells[1]
            );
        }
    }
    println!("mean Dice/NSD({} mm) over {count} labels:", args.nsd_tol);
    for (i, n) in names.iter().enumerate() {
        println!(
            "  {n:<14} Dice {:.3}  NSD {:.3}",
            sums[i][0] / count as f64,
            sums[i][1] / count as f64
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::main_with(|args: &Args| run(args))
}
