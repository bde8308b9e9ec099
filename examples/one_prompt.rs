//! One-prompt segmentation with MedSAM-2's confidence memory bank: one prompt
//! on the first image, then every further image (unrelated 2-D images, or
//! slices of one or several volumes) is segmented from the bank alone.
//!
//! ```text
//! cargo run --release --example one_prompt -- \
//!     --checkpoint W.safetensors --config PRESET|CONFIG.yaml --out DIR \
//!     (--images DIR [--gt DIR] | --volume FILE --slices a,b,c [--volume FILE --slices ...]) \
//!     (--point X,Y | --box X0,Y0,X1,Y1 | --prompt-from-gt point|box) \
//!     [--mode fixed|reference|both] [--top-k K] [--capacity N] [--iou-margin M] \
//!     [--prompt-every K] [--freeze-after N] [--save-bank FILE] [--load-bank FILE]
//! ```
//!
//! * `--images DIR`: PNG/JPEG files in name order; `--gt DIR` holds masks
//!   with the same file stem (non-zero = object).
//! * `--volume FILE --slices a,b,c` (repeatable; NIfTI, NRRD or `.npz`):
//!   axial slices (`--slices auto` = the slice with the largest ground-truth
//!   area). Intensities: `u8` volumes as they are, others through a CT window
//!   (`--window soft-tissue|lung|bone|brain|mediastinum|abdomen|W,L`). Ground
//!   truth: `--gt-volume FILE` (once per volume, in order; `-` for none,
//!   `auto` for an `.npz`'s own `gts` array, the default without the option).
//! * Prompt coordinates are pixels of the first image (`x` = column).
//!   `--prompt-from-gt` derives it from the first image's ground truth (the
//!   object pixel nearest its centroid, or its bounding box);
//!   `--prompt-every K` also prompts every K-th image from its ground truth,
//!   as Medical-SAM2's evaluation does.
//! * Output per mode: `DIR/<mode>/<name>_mask.png` (0/255) and
//!   `<name>_overlay.png` (prediction red, ground-truth outline green), and a
//!   table with the bank's decisions, predicted IoU, Dice and time per image.
//! * `--mode both` (default) runs the reference procedure and the fixed
//!   default and prints what the fixes change: the pick-up statistics (the
//!   reference compares differently flattened vectors, so its cosines are ≈ 0
//!   and its softmax ≈ uniform), the chosen memories, and Dice.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use medsam2_core::build_sam::{build_sam2, config_from_spec};
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_core::confidence_bank::{BankAction, BankMode, BankOptions, Retrieval};
use medsam2_core::medical::{self, intensity, metrics, slicing};
use medsam2_core::modeling::sam2_base::Sam2Base;
use medsam2_core::one_prompt::{ImageInput, OnePromptOutput, OnePromptSession};
use medsam2_core::sam2_image_predictor::Prompt;

type BoxError = Box<dyn std::error::Error>;

/// One-prompt segmentation of a stream of 2-D images.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint (.safetensors / .pt with official key names), or `random`
    /// for random weights (timings, demos).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Config preset name or official YAML file.
    #[arg(long)]
    config: String,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Folder of PNG/JPEG images (name order).
    #[arg(long, conflicts_with = "volume")]
    images: Option<PathBuf>,
    /// Folder of ground-truth masks (same file stems).
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Volume file (repeatable).
    #[arg(long)]
    volume: Vec<PathBuf>,
    /// Slices of each volume, `a,b,c` or `auto` (repeatable, in volume order;
    /// one value applies to every volume).
    #[arg(long)]
    slices: Vec<String>,
    /// Ground-truth volume of each volume (once per volume, in order; `-` =
    /// none, `auto` = an .npz's own labels).
    #[arg(long)]
    gt_volume: Vec<String>,
    /// CT window for non-u8 volumes: a preset name or `W,L`.
    #[arg(long, default_value = "soft-tissue")]
    window: String,
    /// Click on the first image: `X,Y` (foreground).
    #[arg(long)]
    point: Option<String>,
    /// Box on the first image: `X0,Y0,X1,Y1`.
    #[arg(long = "box")]
    bbox: Option<String>,
    /// Prompt from the first image's ground truth: `point` or `box`.
    #[arg(long)]
    prompt_from_gt: Option<String>,
    /// Also prompt every K-th image from its ground truth.
    #[arg(long)]
    prompt_every: Option<usize>,
    /// `fixed`, `reference` or `both`.
    #[arg(long, default_value = "both")]
    mode: String,
    /// Memories attended per image in the fixed mode.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Bank capacity.
    #[arg(long, default_value_t = 16)]
    capacity: usize,
    /// IoU margin of the replacement rule.
    #[arg(long, default_value_t = 0.1)]
    iou_margin: f32,
    /// Seed of the reference mode's sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Freeze the bank after this many images.
    #[arg(long)]
    freeze_after: Option<usize>,
    /// Save the bank at the end (`.safetensors`; the mode name is inserted with `--mode both`).
    #[arg(long)]
    save_bank: Option<PathBuf>,
    /// Start from a saved bank (its options replace the mode's).
    #[arg(long)]
    load_bank: Option<PathBuf>,
}

/// One input image.
struct Item {
    name: String,
    rgb: Vec<u8>,
    height: usize,
    width: usize,
    gt: Option<Vec<bool>>,
}

fn parse_floats<const N: usize>(s: &str, what: &str) -> Result<[f32; N], BoxError> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{what}: expected {N} comma-separated numbers, got `{s}`"))?;
    v.try_into()
        .map_err(|_| format!("{what}: expected {N} comma-separated numbers, got `{s}`").into())
}

fn load_images(dir: &Path, gt_dir: Option<&Path>) -> Result<Vec<Item>, BoxError> {
    let is_img = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_img(p))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let img = image::open(&f)
            .map_err(|e| format!("{}: {e}", f.display()))?
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let gt = match gt_dir {
            None => None,
            Some(g) => {
                let cand = ["png", "jpg", "jpeg", "PNG", "JPG"]
                    .iter()
                    .map(|e| g.join(format!("{stem}.{e}")))
                    .find(|p| p.is_file());
                match cand {
                    None => None,
                    Some(p) => {
                        let m = image::open(&p)
                            .map_err(|e| format!("{}: {e}", p.display()))?
                            .to_luma8();
                        if (m.width() as usize, m.height() as usize) != (w, h) {
                            return Err(format!(
                                "{}: mask is {}x{}, image {w}x{h}",
                                p.display(),
                                m.width(),
                                m.height()
                            )
                            .into());
                        }
                        let png = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
                        Some(
                            m.as_raw()
                                .iter()
                                .map(|&v| if png { v > 0 } else { v >= 128 })
                                .collect(),
                        )
                    }
                }
            }
        };
        out.push(Item {
            name: stem,
            rgb: img.into_raw(),
            height: h,
            width: w,
            gt,
        });
    }
    if out.is_empty() {
        return Err(format!("no PNG/JPEG images in {}", dir.display()).into());
    }
    Ok(out)
}

fn load_volumes(args: &Args) -> Result<Vec<Item>, BoxError> {
    let window = match intensity::Window::preset(&args.window) {
        Some(w) => w,
        None => {
            let [w, l] = parse_floats::<2>(&args.window, "--window")?;
            intensity::Window::new(w as f64, l as f64)?
        }
    };
    let nv = args.volume.len();
    if !args.gt_volume.is_empty() && args.gt_volume.len() != nv {
        return Err(format!("--gt-volume: give it once per --volume ({nv}), `-` for none, `auto` for an .npz's own labels").into());
    }
    if args.slices.len() > 1 && args.slices.len() != nv {
        return Err(
            format!("--slices: give it once for all volumes or once per --volume ({nv})").into(),
        );
    }
    let mut out = Vec::new();
    for (vi, path) in args.volume.iter().enumerate() {
        let vol = medical::read_volume(path)?;
        let u8vol = if vol.data_type() == medical::DataType::U8 {
            vol
        } else {
            intensity::to_u8(
                &vol,
                &intensity::Normalization::Window(window),
                intensity::Stretch::default(),
            )?
        };
        let dims = u8vol.dims();
        let data = u8vol
            .data()
            .as_u8()
            .ok_or("volume is not u8 after windowing")?;
        let gt_spec = args.gt_volume.get(vi).map(String::as_str);
        let is_npz = path
            .to_string_lossy()
            .to_ascii_lowercase()
            .ends_with(".npz");
        let gt_vol = match gt_spec {
            Some("-") => None,
            Some("auto") | None if is_npz => {
                medical::read_volume_with_key(path, medical::NPZ_LABEL_KEY).ok()
            }
            Some("auto") | None => None,
            Some(p) => Some(medical::read_volume_with_key(p, medical::NPZ_LABEL_KEY)?),
        };
        let gt_data = match &gt_vol {
            Some(g) if g.dims() != dims => {
                return Err(format!(
                    "{}: ground truth {:?} vs volume {dims:?}",
                    path.display(),
                    g.dims()
                )
                .into())
            }
            Some(g) => Some(g.data().to_f32_vec()),
            None => None,
        };
        let spec = args
            .slices
            .get(vi)
            .or(args.slices.first())
            .map(String::as_str)
            .unwrap_or("auto");
        let n = slicing::num_slices(dims, slicing::Axis::K);
        let slices: Vec<usize> = if spec == "auto" {
            let g = gt_data
                .as_ref()
                .ok_or_else(|| format!("{}: --slices auto needs a ground truth", path.display()))?;
            let area = |k: usize| {
                slicing::extract_slice(g, dims, slicing::Axis::K, k)
                    .map(|f| f.data.iter().filter(|v| **v > 0.5).count())
            };
            let mut best = (0, 0);
            for k in 0..n {
                let a = area(k)?;
                if a > best.1 {
                    best = (k, a);
                }
            }
            vec![best.0]
        } else {
            spec.split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("--slices: bad list `{spec}`"))?
        };
        let stem = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem
            .trim_end_matches(".gz")
            .trim_end_matches(".nii")
            .trim_end_matches(".npz")
            .trim_end_matches(".nrrd")
            .to_string();
        for k in slices {
            if k >= n {
                return Err(
                    format!("{}: slice {k} out of range ({n} slices)", path.display()).into(),
                );
            }
            let f = slicing::extract_slice(data, dims, slicing::Axis::K, k)?;
            let gt = match &gt_data {
                Some(g) => Some(
                    slicing::extract_slice(g, dims, slicing::Axis::K, k)?
                        .data
                        .iter()
                        .map(|v| *v > 0.5)
                        .collect(),
                ),
                None => None,
            };
            out.push(Item {
                name: format!("{stem}_z{k:03}"),
                rgb: slicing::gray_to_rgb(&f),
                height: f.height,
                width: f.width,
                gt,
            });
        }
    }
    Ok(out)
}

/// A prompt from a ground-truth mask: the object pixel nearest the centroid,
/// or the bounding box. `None` for an empty mask.
fn prompt_from_gt(gt: &[bool], w: usize, kind: &str) -> Option<Prompt> {
    let pts: Vec<(usize, usize)> = gt
        .iter()
        .enumerate()
        .filter(|(_, v)| **v)
        .map(|(i, _)| (i % w, i / w))
        .collect();
    if pts.is_empty() {
        return None;
    }
    if kind == "box" {
        let x0 = pts.iter().map(|p| p.0).min()? as f32;
        let x1 = pts.iter().map(|p| p.0).max()? as f32;
        let y0 = pts.iter().map(|p| p.1).min()? as f32;
        let y1 = pts.iter().map(|p| p.1).max()? as f32;
        return Some(Prompt::bbox(x0, y0, x1, y1));
    }
    let n = pts.len() as f64;
    let cx = pts.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let cy = pts.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let best = pts.iter().min_by(|a, b| {
        let da = (a.0 as f64 - cx).powi(2) + (a.1 as f64 - cy).powi(2);
        let db = (b.0 as f64 - cx).powi(2) + (b.1 as f64 - cy).powi(2);
        da.total_cmp(&db)
    })?;
    Some(Prompt::point(best.0 as f32, best.1 as f32))
}

/// Prediction red, ground-truth outline green, on the grey/colour image.
fn overlay(item: &Item, mask: &[u8]) -> image::RgbImage {
    let (w, h) = (item.width, item.height);
    let mut img = image::RgbImage::from_raw(w as u32, h as u32, item.rgb.clone())
        .unwrap_or_else(|| image::RgbImage::new(w as u32, h as u32));
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let p = img.get_pixel_mut(x as u32, y as u32);
            if mask[i] != 0 {
                p[0] = (p[0] as u16 / 2 + 128) as u8;
                p[1] /= 2;
                p[2] /= 2;
            }
            if let Some(g) = &item.gt {
                let edge = g[i]
                    && [(0i64, 1i64), (1, 0), (0, -1), (-1, 0)]
                        .iter()
                        .any(|(dx, dy)| {
                            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                            nx < 0
                                || ny < 0
                                || nx >= w as i64
                                || ny >= h as i64
                                || !g[ny as usize * w + nx as usize]
                        });
                if edge {
                    *p = image::Rgb([0, 255, 0]);
                }
            }
        }
    }
    img
}

/// What one image gave in one mode.
struct Row {
    out: OnePromptOutput,
    dice: Option<f64>,
    ms: f64,
}

fn run_mode(
    args: &Args,
    model: &std::sync::Arc<Sam2Base>,
    items: &[Item],
    mode: BankMode,
    first: &Prompt,
) -> Result<Vec<Row>, BoxError> {
    let mut opts = BankOptions::for_mode(mode);
    opts.capacity = args.capacity;
    opts.iou_margin = args.iou_margin;
    opts.retrieval = match mode {
        BankMode::Reference => Retrieval::Sample { seed: args.seed },
        BankMode::Fixed => Retrieval::TopK(args.top_k),
    };
    let mut sess = OnePromptSession::new(model.clone(), opts)?;
    if let Some(p) = &args.load_bank {
        sess.load_bank(p)?;
        println!(
            "[{}] loaded a bank of {} entries (sources {:?}) from {}",
            mode.name(),
            sess.bank().len(),
            sess.bank().sources(),
            p.display()
        );
    }
    let dir = args.out.join(mode.name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kind = args.prompt_from_gt.as_deref().unwrap_or("point");
    let mut rows = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if args.freeze_after == Some(i) {
            sess.set_frozen(true);
        }
        let prompt = if i == 0 && args.load_bank.is_none() {
            Some(first.clone())
        } else if args.prompt_every.is_some_and(|k| k > 0 && i % k == 0) {
            it.gt
                .as_ref()
                .and_then(|g| prompt_from_gt(g, it.width, kind))
        } else {
            None
        };
        let img = ImageInput::Rgb8 {
            data: &it.rgb,
            height: it.height,
            width: it.width,
        };
        let t = Instant::now();
        let out = match &prompt {
            Some(p) => sess.add_prompt(&img, p)?,
            None => sess.segment(&img)?,
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let pred: Vec<bool> = out.mask.iter().map(|&v| v != 0).collect();
        let dice = it.gt.as_ref().map(|g| metrics::dice(&pred, g));
        let png: Vec<u8> = out.mask.iter().map(|&v| v * 255).collect();
        image::GrayImage::from_raw(it.width as u32, it.height as u32, png)
            .ok_or("mask size")?
            .save(dir.join(format!("{}_mask.png", it.name)))?;
        overlay(it, &out.mask).save(dir.join(format!("{}_overlay.png", it.name)))?;
        rows.push(Row { out, dice, ms });
    }
    if let Some(p) = &args.save_bank {
        let p = if args.mode == "both" {
            p.with_file_name(format!(
                "{}.{}.safetensors",
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                mode.name()
            ))
        } else {
            p.clone()
        };
        sess.save_bank(&p)?;
        println!("[{}] bank saved to {}", mode.name(), p.display());
    }
    print_table(mode, items, &rows);
    Ok(rows)
}

fn print_table(mode: BankMode, items: &[Item], rows: &[Row]) {
    println!("\n== mode {} ==", mode.name());
    println!(
        "{:>3}  {:<40} {:>6} {:>14} {:>16} {:>8} {:>7} {:>9}",
        "#", "image", "prompt", "memory(src)", "bank update", "iou_pred", "dice", "ms"
    );
    for (it, r) in items.iter().zip(rows) {
        let o = &r.out;
        let picked = if o.picked_sources.is_empty() {
            "-".to_string()
        } else {
            format!("{:?}", o.picked_sources)
        };
        let upd = match o.update.action {
            BankAction::Replace { .. } => format!(
                "replace {}",
                o.dropped_source.map(|s| s.to_string()).unwrap_or_default()
            ),
            a => a.name().to_string(),
        };
        let dice = r
            .dice
            .map(|d| format!("{d:.4}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>3}  {:<40} {:>6} {:>14} {:>16} {:>8.4} {:>7} {:>9.1}",
            o.index,
            it.name,
            if o.prompted { "yes" } else { "" },
            picked,
            upd,
            o.iou,
            dice,
            r.ms
        );
    }
    let unprompted: Vec<f64> = rows
        .iter()
        .filter(|r| !r.out.prompted)
        .filter_map(|r| r.dice)
        .collect();
    let all: Vec<f64> = rows.iter().filter_map(|r| r.dice).collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let times: Vec<f64> = rows.iter().skip(1).map(|r| r.ms).collect();
    println!(
        "mean Dice: {:.4} over {} unprompted image(s), {:.4} over all {}; time per image {:.1} ms (first {:.1} ms); bank {:?}",
        mean(&unprompted),
        unprompted.len(),
        mean(&all),
        all.len(),
        mean(&times),
        rows.first().map(|r| r.ms).unwrap_or(0.0),
        rows.last().map(|r| r.out.bank_before.len()).unwrap_or(0),
    );
    let n = rows.len().max(1) as f64;
    let avg = |f: &dyn Fn(&medsam2_core::one_prompt::StepTimings) -> f64| {
        rows.iter().map(|r| f(&r.out.timings)).sum::<f64>() / n
    };
    println!(
        "mean stage times (ms): preprocess {:.1}, image encoder {:.1}, pick-up + memory attention {:.1}, prompt enc. + decoder {:.1}, memory encoder {:.1}, bank update {:.2}, total {:.1}",
        avg(&|t| t.preprocess_ms),
        avg(&|t| t.image_encoder_ms),
        avg(&|t| t.conditioning_ms),
        avg(&|t| t.heads_ms),
        avg(&|t| t.memory_encoder_ms),
        avg(&|t| t.bank_update_ms),
        avg(&|t| t.total_ms),
    );
}

/// Pick-up statistics: mean of max probability, mean cosine spread (max − min).
fn pickup_stats(rows: &[Row]) -> (f64, f64, f64) {
    let p: Vec<_> = rows.iter().filter_map(|r| r.out.pickup.as_ref()).collect();
    if p.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = p.len() as f64;
    let maxp = p
        .iter()
        .map(|x| x.probabilities.iter().cloned().fold(0f32, f32::max) as f64)
        .sum::<f64>()
        / n;
    let unif = p
        .iter()
        .map(|x| 1.0 / x.probabilities.len() as f64)
        .sum::<f64>()
        / n;
    let spread = p
        .iter()
        .map(|x| {
            let mx = x.cosine_similarity.iter().cloned().fold(f32::MIN, f32::max);
            let mn = x.cosine_similarity.iter().cloned().fold(f32::MAX, f32::min);
            (mx - mn) as f64
        })
        .sum::<f64>()
        / n;
    (maxp, unif, spread)
}

fn run(args: &Args) -> Result<(), BoxError> {
    let items = if let Some(d) = &args.images {
        load_images(d, args.gt.as_deref())?
    } else if !args.volume.is_empty() {
        load_volumes(args)?
    } else {
        return Err("give --images DIR or --volume FILE".into());
    };
    let first = &items[0];
    let prompt = if let Some(p) = &args.point {
        let [x, y] = parse_floats::<2>(p, "--point")?;
        Prompt::point(x, y)
    } else if let Some(b) = &args.bbox {
        let [x0, y0, x1, y1] = parse_floats::<4>(b, "--box")?;
        Prompt::bbox(x0, y0, x1, y1)
    } else if let Some(kind) = &args.prompt_from_gt {
        if kind != "point" && kind != "box" {
            return Err(format!("--prompt-from-gt: `point` or `box`, got `{kind}`").into());
        }
        let g = first
            .gt
            .as_ref()
            .ok_or("--prompt-from-gt: the first image has no ground truth")?;
        prompt_from_gt(g, first.width, kind)
            .ok_or("--prompt-from-gt: the first image's ground truth is empty")?
    } else if args.load_bank.is_some() {
        Prompt::default()
    } else {
        return Err("give a prompt for the first image: --point, --box or --prompt-from-gt (or --load-bank)".into());
    };
    println!(
        "{} image(s); first: {} ({}x{}); prompt {:?}",
        items.len(),
        first.name,
        first.width,
        first.height,
        prompt
    );
    let t = Instant::now();
    let model = if args.checkpoint.as_os_str() == "random" {
        let cfg = config_from_spec(&args.config)?;
        std::sync::Arc::new(Sam2Base::with_random_weights(
            cfg,
            &candle_core::Device::Cpu,
        )?)
    } else {
        build_sam2(
            &args.config,
            &args.checkpoint,
            ComputeDType::F32,
            DeviceKind::Cpu,
        )?
    };
    println!(
        "model loaded in {:.2?}: image size {}, C {}, Cm {}",
        t.elapsed(),
        model.cfg.image_size,
        model.cfg.hidden_dim(),
        model.cfg.mem_dim()
    );
    let modes: Vec<BankMode> = match args.mode.as_str() {
        "fixed" => vec![BankMode::Fixed],
        "reference" => vec![BankMode::Reference],
        "both" => vec![BankMode::Reference, BankMode::Fixed],
        m => return Err(format!("--mode: fixed, reference or both, got `{m}`").into()),
    };
    let mut results = Vec::new();
    for m in modes {
        results.push((m, run_mode(args, &model, &items, m, &prompt)?));
    }
    if results.len() == 2 {
        let (r, f) = (&results[0].1, &results[1].1);
        println!("\n== what the fixes change (reference -> fixed) ==");
        let (rp, ru, rs) = pickup_stats(r);
        let (fp, fu, fs) = pickup_stats(f);
        println!("pick-up: mean max probability {rp:.4} -> {fp:.4} (uniform would be {ru:.4} / {fu:.4}); mean cosine spread {rs:.4} -> {fs:.4}");
        let same = r
            .iter()
            .zip(f)
            .filter(|(a, b)| {
                !a.out.picked_sources.is_empty()
                    && a.out.picked_sources.first() == b.out.picked_sources.first()
            })
            .count();
        let with = r
            .iter()
            .filter(|a| !a.out.picked_sources.is_empty())
            .count();
        println!("same first memory chosen on {same} of {with} image(s)");
        println!(
            "{:<40} {:>9} {:>9} {:>8}",
            "image", "dice ref", "dice fix", "delta"
        );
        let mut d = Vec::new();
        for ((it, a), b) in items.iter().zip(r).zip(f) {
            if let (Some(x), Some(y)) = (a.dice, b.dice) {
                println!("{:<40} {x:>9.4} {y:>9.4} {:>+8.4}", it.name, y - x);
                if !a.out.prompted {
                    d.push(y - x);
                }
            }
        }
        if !d.is_empty() {
            println!(
                "mean Dice change on unprompted images: {:+.4} ({} images)",
                d.iter().sum::<f64>() / d.len() as f64,
                d.len()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
