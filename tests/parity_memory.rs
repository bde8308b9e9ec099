//! Memory encoder and memory attention: unit checks, and parity with the
//! official PyTorch code on the shared random-weight fixtures (video
//! memory-attention calls, video tracking memories, one-prompt memories).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use half::bf16;
use medsam2_core::config::{
    CXBlockConfig, FuserConfig, MaskDownSamplerConfig, MemoryEncoderConfig, ModelSize,
    PositionEmbeddingSineConfig, Version,
};
use medsam2_core::modeling::memory_attention::{
    apply_rotary_enc, attention, compute_axial_rope, KeyPart, MemoryAttention, RopeCache,
};
use medsam2_core::modeling::memory_encoder::{
    apply_non_overlapping_constraints, CXBlock, MaskDownSampler, MemoryEncoder, NewMemoryParams,
};
use medsam2_core::modeling::position_encoding::PositionEmbeddingSine;
use medsam2_core::Sam2Config;

fn fixtures_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("MEDSAM2_SHARED_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    };
    dir.is_dir().then_some(dir)
}

fn fixture(name: &str) -> Option<PathBuf> {
    let Some(root) = fixtures_dir() else {
        println!("skipped: shared fixtures not found (set MEDSAM2_SHARED_FIXTURES)");
        return None;
    };
    let dir = root.join(name);
    if !dir.is_dir() {
        println!("skipped: fixture {} not found", dir.display());
        return None;
    }
    Some(dir)
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Max-abs difference, asserted within `1e-4 · max(1, max|ref|)`.
fn compare(name: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let (g, w) = (f32s(got), f32s(want));
    let err = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let max_ref = w.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let tol = 1e-4 * max_ref.max(1.0);
    println!("{name:>36}: max|err| {err:.3e}  tol {tol:.3e}  (max|ref| {max_ref:.3})");
    assert!(
        err.is_finite() && err <= tol,
        "{name}: max|err| {err:e} > {tol:e}"
    );
    err
}

/// Position of a bf16 value on the line of representable values.
fn bf16_key(v: bf16) -> i32 {
    let b = v.to_bits() as i32;
    if b & 0x8000 != 0 {
        -(b & 0x7fff)
    } else {
        b
    }
}

/// Spacing of bf16 values at `v` (8 significant bits).
fn bf16_ulp(v: bf16) -> f32 {
    let e = ((v.to_bits() >> 7) & 0xff).max(1) as i32;
    2f32.powi(e - 127 - 7)
}

fn gf_at(t: &Tensor, i: usize) -> f32 {
    f32s(t)[i]
}

/// Rounds `got` to bf16 (nearest even) and asserts that ≥ 99.9 % of the
/// elements are within 2 bf16 ulps of the bf16 reference. Returns
/// (largest ulp distance, fraction within 2 ulps, max-abs f32 error).
fn compare_bf16(name: &str, got: &Tensor, want_bf16: &Tensor) -> (i32, f64, f32) {
    assert_eq!(got.dims(), want_bf16.dims(), "{name}: shape");
    assert_eq!(want_bf16.dtype(), DType::BF16, "{name}: reference dtype");
    let g = got
        .to_dtype(DType::BF16)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<bf16>()
        .unwrap();
    let w = want_bf16.flatten_all().unwrap().to_vec1::<bf16>().unwrap();
    let dist: Vec<i32> = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (bf16_key(*a) - bf16_key(*b)).abs())
        .collect();
    let max_ulp = dist.iter().copied().max().unwrap_or(0);
    let within = dist.iter().filter(|&&d| d <= 2).count() as f64 / dist.len().max(1) as f64;
    let gf = f32s(got);
    let err = gf
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b.to_f32()).abs())
        .fold(0f32, f32::max);
    if max_ulp > 2 {
        let i = dist.iter().position(|&d| d == max_ulp).unwrap_or(0);
        println!(
            "{name:>36}: worst element {i}: ours {} (bf16 {}), reference {}",
            gf_at(got, i),
            g[i],
            w[i]
        );
    }
    println!(
        "{name:>36}: bf16 max ulp {max_ulp}, within 2 ulp {:.4} %, f32 max|err| vs bf16 ref {err:.3e}",
        within * 100.0
    );
    assert!(
        gf.iter().all(|v| v.is_finite()),
        "{name}: non-finite output"
    );
    assert!(
        within >= 0.999,
        "{name}: only {:.4} % within 2 bf16 ulps",
        within * 100.0
    );
    // And in absolute terms: every element within the reference's rounding
    // (half a bf16 ulp) plus the f32 tolerance 1e-4 · max(1, max|ref|).
    let max_ref = w.iter().map(|v| v.to_f32().abs()).fold(0f32, f32::max);
    let tol = 1e-4 * max_ref.max(1.0);
    for (i, (a, b)) in gf.iter().zip(&w).enumerate() {
        let half_ulp = bf16_ulp(*b) / 2.0;
        assert!(
            (a - b.to_f32()).abs() <= half_ulp + tol,
            "{name}: element {i}: {a} vs bf16 reference {b} (half ulp {half_ulp:e}, tol {tol:e})"
        );
    }
    (max_ulp, within, err)
}

struct Fixture {
    dir: PathBuf,
    cfg: Sam2Config,
    vb: VarBuilder<'static>,
    json: serde_json::Value,
}

fn load(name: &str) -> Option<Fixture> {
    let dir = fixture(name)?;
    let cfg = Sam2Config::from_yaml_file(dir.join("config.yaml")).expect("config.yaml");
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("weights.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .expect("weights");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("fixture.json")).expect("fixture.json"),
    )
    .expect("fixture.json parses");
    Some(Fixture { dir, cfg, vb, json })
}

/// A fixture tensor file, read once; tensors are converted on demand (the
/// files also hold BOOL tensors, which candle does not load).
struct Store(candle_core::safetensors::BufferedSafetensors);

impl Store {
    fn get(&self, name: &str) -> Tensor {
        self.0
            .load(name, &Device::Cpu)
            .unwrap_or_else(|e| panic!("tensor {name}: {e}"))
    }
}

fn tensors(dir: &Path, file: &str) -> Store {
    let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    Store(
        candle_core::safetensors::BufferedSafetensors::new(bytes)
            .unwrap_or_else(|e| panic!("{file}: {e}")),
    )
}

/// `[1, C, h, w]` → `[hw, 1, C]` (`flatten(2).permute(2, 0, 1)`).
fn seq_first(x: &Tensor) -> Tensor {
    x.flatten_from(2)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .contiguous()
        .unwrap()
}

// ---------------------------------------------------------------- parity ---

fn video_memory_attention(name: &str) {
    let Some(fx) = load(name) else { return };
    let ma = MemoryAttention::new(&fx.cfg.memory_attention, fx.vb.pp("memory_attention"))
        .expect("memory attention");
    let t = tensors(&fx.dir, "video.safetensors");
    let calls = fx.json["video"]["memory_attention"]
        .as_array()
        .expect("video.memory_attention");
    assert!(!calls.is_empty());
    println!("fixture {name}: {} memory-attention calls", calls.len());
    for c in calls {
        let ts = &c["tensors"];
        let g = |role: &str| t.get(ts[role].as_str().expect("tensor name"));
        let n_ptr = c["num_obj_ptr_tokens"]
            .as_u64()
            .expect("num_obj_ptr_tokens") as usize;
        let (curr, curr_pos, memory, memory_pos) =
            (g("curr"), g("curr_pos"), g("memory"), g("memory_pos"));
        assert_eq!(
            memory.dim(0).unwrap() as u64,
            c["num_memory_tokens"].as_u64().unwrap()
        );
        let out = ma
            .forward(&curr, &memory, &curr_pos, &memory_pos, n_ptr)
            .expect("forward");
        compare(
            &format!("call {} output ({} ptr tokens)", c["call"], n_ptr),
            &out,
            &g("output"),
        );
        // The split form (keys projected first, here cut into two parts at
        // an arbitrary token) gives the same result.
        let projected = ma.project_memory(&memory, &memory_pos).expect("project");
        let m = memory.dim(0).unwrap();
        let cut = m / 3;
        let keys: Vec<Vec<KeyPart>> = projected
            .iter()
            .map(|p| {
                vec![
                    KeyPart::plain(p.k.narrow(2, 0, cut).unwrap()),
                    KeyPart::plain(p.k.narrow(2, cut, m - cut).unwrap()),
                ]
            })
            .collect();
        let out2 = ma
            .forward_projected(&curr, &curr_pos, &keys, &memory, n_ptr)
            .expect("forward_projected");
        let d = (out - out2)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "forward_projected differs from forward");
    }
}

#[test]
fn video_memory_attention_sam2_1() {
    video_memory_attention("tiny-sam2.1");
}

#[test]
fn video_memory_attention_sam2_0() {
    video_memory_attention("tiny-sam2.0");
}

/// Tracking calls with a stored memory-attention input: `curr` is the frame's
/// raw top-level feature (what the tracker's memory encoder receives), and
/// `pred_masks` the low-res logits that are upsampled for it.
fn video_memory_encoder(name: &str) {
    let Some(fx) = load(name) else { return };
    let enc = MemoryEncoder::new(&fx.cfg.memory_encoder, fx.vb.pp("memory_encoder"))
        .expect("memory encoder");
    let params = NewMemoryParams::load(&fx.cfg, fx.vb.clone()).expect("params");
    assert_eq!(
        params.no_obj_embed_spatial.is_some(),
        fx.cfg.no_obj_embed_spatial
    );
    let t = tensors(&fx.dir, "video.safetensors");
    let s = fx.cfg.image_size;
    let h = s / fx.cfg.backbone_stride;
    let video = &fx.json["video"];
    let calls = video["calls"].as_array().expect("calls");
    let mut checked = 0;
    for c in video["memory_attention"]
        .as_array()
        .expect("memory_attention")
    {
        let idx = c["call"].as_u64().unwrap() as usize;
        let call = &calls[idx];
        assert_eq!(call["index"].as_u64(), Some(idx as u64));
        assert!(call["run_mem_encoder"].as_bool().unwrap());
        assert!(
            call["point_inputs"].is_null(),
            "tracking call without clicks"
        );
        let curr = t.get(c["tensors"]["curr"].as_str().unwrap());
        let pix_feat = curr
            .permute((1, 2, 0))
            .unwrap()
            .reshape((1, fx.cfg.hidden_dim(), h, h))
            .unwrap();
        let ct = &call["tensors"];
        let pred = t.get(ct["pred_masks"].as_str().unwrap());
        let scores = t.get(ct["object_score_logits"].as_str().unwrap());
        let high_res = pred.upsample_bilinear2d(s, s, false).unwrap();
        let (feats, pos) = enc
            .encode_new_memory(&pix_feat, &high_res, Some(&scores), false, &params)
            .expect("encode");
        compare_bf16(
            &format!("call {idx} maskmem_features"),
            &feats,
            &t.get(ct["maskmem_features"].as_str().unwrap()),
        );
        compare(
            "maskmem_pos_enc",
            &pos,
            &t.get(video["tensors"]["maskmem_pos_enc"].as_str().unwrap()),
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn video_memory_encoder_sam2_1() {
    video_memory_encoder("tiny-sam2.1");
}

#[test]
fn video_memory_encoder_sam2_0() {
    video_memory_encoder("tiny-sam2.0");
}

/// One-prompt loop: every image's memory is encoded from its memory-conditioned
/// features and its upsampled low-res mask; every image after the first is
/// conditioned by memory attention on the sampled bank entry.
fn oneprompt(name: &str) {
    let Some(fx) = load(name) else { return };
    let enc = MemoryEncoder::new(&fx.cfg.memory_encoder, fx.vb.pp("memory_encoder"))
        .expect("memory encoder");
    let ma = MemoryAttention::new(&fx.cfg.memory_attention, fx.vb.pp("memory_attention"))
        .expect("memory attention");
    let params = NewMemoryParams::load(&fx.cfg, fx.vb.clone()).expect("params");
    let t = tensors(&fx.dir, "oneprompt.safetensors");
    let op = &fx.json["one_prompt"];
    let s = fx.cfg.image_size;
    let pos_ref = t.get(op["tensors"]["maskmem_pos_enc"].as_str().unwrap());
    let images = op["images"].as_array().expect("images");
    assert!(!images.is_empty());
    let img_pe = PositionEmbeddingSine::new(fx.cfg.image_encoder.neck.position_encoding.clone());
    let (mut worst_ulp, mut worst_within, mut worst_err) = (0, 1.0f64, 0f32);
    for im in images {
        let i = im["index"].as_u64().unwrap() as usize;
        let ts = &im["tensors"];
        let g = |role: &str| {
            t.get(
                ts[role]
                    .as_str()
                    .unwrap_or_else(|| panic!("image {i}: no {role}")),
            )
        };
        let cond = g("conditioned_feats");
        // Memory attention on the sampled bank entry.
        if !im["pickup"].is_null() {
            let src = im["pickup"]["sampled_source_image"].as_u64().unwrap() as usize;
            let mem = t.get(images[src]["tensors"]["maskmem_features"].as_str().unwrap());
            let x = g("vision_feats");
            let (_, _, h, w) = x.dims4().unwrap();
            let x_pos = img_pe.encode(h, w, &Device::Cpu).unwrap();
            let out = ma
                .forward(
                    &seq_first(&x),
                    &seq_first(&mem.to_dtype(DType::F32).unwrap()),
                    &seq_first(&x_pos),
                    &seq_first(&pos_ref.to_dtype(DType::F32).unwrap()),
                    0,
                )
                .expect("memory attention");
            let out = out
                .permute((1, 2, 0))
                .unwrap()
                .reshape(cond.shape())
                .unwrap();
            compare(
                &format!("img {i} conditioned_feats (src {src})"),
                &out,
                &cond,
            );
        }
        // Memory encoding.
        let high_res = g("low_res_masks").upsample_bilinear2d(s, s, false).unwrap();
        let prompted = !im["point_coords"].is_null();
        let (feats, pos) = enc
            .encode_new_memory(
                &cond,
                &high_res,
                Some(&g("object_score_logits")),
                prompted,
                &params,
            )
            .expect("encode");
        let (u, w, e) = compare_bf16(
            &format!("img {i} maskmem_features"),
            &feats,
            &g("maskmem_features"),
        );
        worst_ulp = worst_ulp.max(u);
        worst_within = worst_within.min(w);
        worst_err = worst_err.max(e);
        let (pu, _, _) = compare_bf16(&format!("img {i} maskmem_pos_enc"), &pos, &pos_ref);
        assert_eq!(
            pu, 0,
            "position encoding must round to the same bf16 values"
        );
    }
    println!("{name}: maskmem_features worst: {worst_ulp} ulp, {:.4} % within 2 ulp, max|err| {worst_err:.3e}", worst_within * 100.0);
}

#[test]
fn oneprompt_memory_sam2_1() {
    oneprompt("tiny-sam2.1");
}

#[test]
fn oneprompt_memory_sam2_0() {
    oneprompt("tiny-sam2.0");
}

// ------------------------------------------------------------------ units ---

fn small_encoder_cfg() -> MemoryEncoderConfig {
    MemoryEncoderConfig {
        out_dim: 8,
        in_dim: 16,
        mask_downsampler: MaskDownSamplerConfig {
            embed_dim: 16,
            kernel_size: 3,
            stride: 2,
            padding: 1,
            total_stride: 16,
        },
        fuser: FuserConfig {
            layer: CXBlockConfig {
                dim: 16,
                kernel_size: 7,
                padding: 3,
                use_dwconv: true,
                layer_scale: true,
            },
            num_layers: 2,
            input_projection: true,
        },
        position_encoding: PositionEmbeddingSineConfig::new(8),
    }
}

#[test]
fn memory_encoder_shapes_and_names() {
    let cfg = small_encoder_cfg();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let enc = MemoryEncoder::new(&cfg, vb.pp("memory_encoder")).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    names.sort();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("memory_encoder.fuser.proj.weight", vec![16, 16, 1, 1]),
        (
            "memory_encoder.fuser.layers.0.dwconv.weight",
            vec![16, 1, 7, 7],
        ),
        ("memory_encoder.fuser.layers.1.gamma", vec![16]),
        ("memory_encoder.fuser.layers.1.pwconv1.weight", vec![64, 16]),
        ("memory_encoder.fuser.layers.1.pwconv2.weight", vec![16, 64]),
        ("memory_encoder.fuser.layers.1.norm.weight", vec![16]),
        (
            "memory_encoder.mask_downsampler.encoder.0.weight",
            vec![4, 1, 3, 3],
        ),
        ("memory_encoder.mask_downsampler.encoder.1.weight", vec![4]),
        (
            "memory_encoder.mask_downsampler.encoder.3.weight",
            vec![16, 4, 3, 3],
        ),
        (
            "memory_encoder.mask_downsampler.encoder.6.weight",
            vec![64, 16, 3, 3],
        ),
        (
            "memory_encoder.mask_downsampler.encoder.9.weight",
            vec![256, 64, 3, 3],
        ),
        ("memory_encoder.mask_downsampler.encoder.10.bias", vec![256]),
        (
            "memory_encoder.mask_downsampler.encoder.12.weight",
            vec![16, 256, 1, 1],
        ),
        ("memory_encoder.pix_feat_proj.weight", vec![16, 16, 1, 1]),
        ("memory_encoder.out_proj.weight", vec![8, 16, 1, 1]),
    ];
    for (n, shape) in &want {
        let found = names
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n} not loaded"));
        assert_eq!(&found.1, shape, "{n}");
    }
    // 4 downsampling blocks (conv w+b, norm w+b) + final conv, proj, 2 blocks of
    // tensors (9 each), pix_feat_proj, out_proj.
    assert_eq!(names.len(), 4 * 4 + 2 + 2 + 2 * 9 + 2 + 2);

    let pix = Tensor::randn(0f32, 1.0, (2, 16, 4, 4), &Device::Cpu).unwrap();
    let masks = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu).unwrap();
    let (f, p) = enc.forward(&pix, &masks, false).unwrap();
    assert_eq!(f.dims(), &[2, 8, 4, 4]);
    assert_eq!(p.dims(), &[2, 8, 4, 4]);
    assert!(f32s(&f).iter().all(|v| v.is_finite()));
    // A mismatched mask size is an error, not a panic.
    let bad = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(enc.forward(&pix, &bad, false).is_err());
    // Batch items are independent.
    let (f0, _) = enc
        .forward(
            &pix.narrow(0, 1, 1).unwrap(),
            &masks.narrow(0, 1, 1).unwrap(),
            false,
        )
        .unwrap();
    let d = (f.narrow(0, 1, 1).unwrap() - f0)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "batch item 1 differs by {d}");

    let ds = MaskDownSampler::new(
        &cfg.mask_downsampler,
        vb.pp("memory_encoder").pp("mask_downsampler"),
    )
    .unwrap();
    assert_eq!(ds.forward(&masks).unwrap().dims(), &[2, 16, 4, 4]);
    assert_eq!(
        MaskDownSampler::num_layers(&cfg.mask_downsampler).unwrap(),
        4
    );
    let odd = MaskDownSamplerConfig {
        total_stride: 12,
        ..cfg.mask_downsampler.clone()
    };
    assert!(MaskDownSampler::num_layers(&odd).is_err());
}

#[test]
fn cx_block_hand_computed() {
    // dwconv weights 0 and bias [1,2,3,4]: every pixel becomes (1,2,3,4); the
    // norm gives ±1.3416, ±0.4472; pwconv1 copies them into the first 4 of 16
    // hidden units, pwconv2 copies those back; gamma 0.5.
    let dev = Device::Cpu;
    let mut w1 = vec![0f32; 16 * 4];
    let mut w2 = vec![0f32; 4 * 16];
    for i in 0..4 {
        w1[i * 4 + i] = 1.0;
        w2[i * 16 + i] = 1.0;
    }
    let ts: HashMap<String, Tensor> = [
        (
            "dwconv.weight",
            Tensor::zeros((4, 1, 7, 7), DType::F32, &dev).unwrap(),
        ),
        (
            "dwconv.bias",
            Tensor::new(&[1f32, 2., 3., 4.], &dev).unwrap(),
        ),
        ("norm.weight", Tensor::ones(4, DType::F32, &dev).unwrap()),
        ("norm.bias", Tensor::zeros(4, DType::F32, &dev).unwrap()),
        (
            "pwconv1.weight",
            Tensor::from_vec(w1, (16, 4), &dev).unwrap(),
        ),
        ("pwconv1.bias", Tensor::zeros(16, DType::F32, &dev).unwrap()),
        (
            "pwconv2.weight",
            Tensor::from_vec(w2, (4, 16), &dev).unwrap(),
        ),
        ("pwconv2.bias", Tensor::zeros(4, DType::F32, &dev).unwrap()),
        ("gamma", Tensor::full(0.5f32, 4, &dev).unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let vb = VarBuilder::from_tensors(ts, DType::F32, &dev);
    let cfg = CXBlockConfig {
        dim: 4,
        kernel_size: 7,
        padding: 3,
        use_dwconv: true,
        layer_scale: true,
    };
    let block = CXBlock::new(&cfg, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 4, 3, 5), &dev).unwrap();
    let y = block.forward(&x).unwrap();
    // GELU(z) of the normalised (1,2,3,4), from x·Φ(x) with erf.
    let gelu = [-0.120_554_88f32, -0.146_4, 0.300_813_4, 1.221_085_4];
    let xs = f32s(&x);
    let ys = f32s(&y);
    for c in 0..4 {
        for p in 0..15 {
            let want = xs[c * 15 + p] + 0.5 * gelu[c];
            let got = ys[c * 15 + p];
            assert!(
                (got - want).abs() < 1e-5,
                "channel {c} pixel {p}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn encode_new_memory_no_object_and_binarize() {
    let dev = Device::Cpu;
    let cfg = small_encoder_cfg();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let enc = MemoryEncoder::new(&cfg, vb.pp("memory_encoder")).unwrap();
    let embed = Tensor::new(&[[1f32, 2., 3., 4., 5., 6., 7., 8.]], &dev).unwrap();
    let params = NewMemoryParams {
        sigmoid_scale: 20.0,
        sigmoid_bias: -10.0,
        binarize_mask_from_pts: true,
        non_overlap_masks: false,
        no_obj_embed_spatial: Some(embed.clone()),
    };
    let pix = Tensor::randn(0f32, 1.0, (2, 16, 2, 2), &dev).unwrap();
    let logits = Tensor::randn(0f32, 3.0, (2, 1, 32, 32), &dev).unwrap();
    let scores = Tensor::new(&[[2.0f32], [-1.0]], &dev).unwrap();
    let (f, _) = enc
        .encode_new_memory(&pix, &logits, Some(&scores), false, &params)
        .unwrap();
    // Same thing by hand: sigmoid·20 − 10, no sigmoid inside, embed on item 1 only.
    let m = ((candle_nn::ops::sigmoid(&logits).unwrap() * 20.0).unwrap() - 10.0).unwrap();
    let (base, _) = enc.forward(&pix, &m, true).unwrap();
    let diff = (f - &base).unwrap();
    let d0 = diff
        .get(0)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d0 < 1e-5, "object present: no embedding expected ({d0})");
    let d1 = f32s(&diff.get(1).unwrap());
    for c in 0..8 {
        for p in 0..4 {
            assert!(
                (d1[c * 4 + p] - (c + 1) as f32).abs() < 1e-4,
                "channel {c}: {}",
                d1[c * 4 + p]
            );
        }
    }
    // Click-prompted masks are binarised at 0 before the scale and bias.
    let (fb, _) = enc
        .encode_new_memory(
            &pix,
            &logits,
            Some(&Tensor::new(&[[1f32], [1.]], &dev).unwrap()),
            true,
            &params,
        )
        .unwrap();
    let mb =
        ((logits.gt(0.0).unwrap().to_dtype(DType::F32).unwrap() * 20.0).unwrap() - 10.0).unwrap();
    let (want, _) = enc.forward(&pix, &mb, true).unwrap();
    let d = (fb - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "binarised path differs by {d}");
    // The embedding needs object scores.
    assert!(enc
        .encode_new_memory(&pix, &logits, None, false, &params)
        .is_err());
}

#[test]
fn non_overlapping_constraints() {
    let dev = Device::Cpu;
    // Two objects, three pixels: object 0 wins pixel 0, object 1 pixels 1 and 2.
    let m = Tensor::new(&[[[[5f32, -3., -20.]]], [[[1., 4., -15.]]]], &dev).unwrap();
    let out = f32s(&apply_non_overlapping_constraints(&m).unwrap());
    assert_eq!(out, vec![5., -10., -20., -10., 4., -15.]);
    let one = Tensor::new(&[[[[3f32]]]], &dev).unwrap();
    assert_eq!(
        f32s(&apply_non_overlapping_constraints(&one).unwrap()),
        vec![3.]
    );
}

#[test]
fn rope_tables_hand_values() {
    // dim 8: frequencies 1 and 1/10000^(4/8) = 0.01; 2x2 map, token 3 = (x 1, y 1).
    let (c, s) = compute_axial_rope(8, 2, 2, 10000.0);
    assert_eq!(c.len(), 4 * 4);
    let row = |t: usize| (&c[t * 4..t * 4 + 4], &s[t * 4..t * 4 + 4]);
    let (c0, s0) = row(0);
    assert_eq!(c0, &[1., 1., 1., 1.]);
    assert_eq!(s0, &[0., 0., 0., 0.]);
    // Token 1 = (x 1, y 0): x pairs rotate, y pairs do not.
    let (c1, s1) = row(1);
    let want_c = [1f32.cos(), 0.01f32.cos(), 1.0, 1.0];
    let want_s = [1f32.sin(), 0.01f32.sin(), 0.0, 0.0];
    for i in 0..4 {
        assert!(
            (c1[i] - want_c[i]).abs() < 1e-6 && (s1[i] - want_s[i]).abs() < 1e-6,
            "token 1 pair {i}"
        );
    }
    // Token 2 = (x 0, y 1).
    let (c2, s2) = row(2);
    let want_c = [1.0, 1.0, 1f32.cos(), 0.01f32.cos()];
    let want_s = [0.0, 0.0, 1f32.sin(), 0.01f32.sin()];
    for i in 0..4 {
        assert!(
            (c2[i] - want_c[i]).abs() < 1e-6 && (s2[i] - want_s[i]).abs() < 1e-6,
            "token 2 pair {i}"
        );
    }
    // Cache: square maps only; the same tables come back.
    let cache = RopeCache::new();
    assert!(cache.tables(12, 8, 10000.0, &Device::Cpu).is_err());
    let (tc, _) = cache.tables(4, 8, 10000.0, &Device::Cpu).unwrap();
    assert_eq!(f32s(&tc), c);
}

#[test]
fn rope_repeat_and_excluded_tokens() {
    let dev = Device::Cpu;
    let (c, s) = compute_axial_rope(8, 2, 2, 10000.0);
    let cos = Tensor::from_vec(c, (4, 4), &dev).unwrap();
    let sin = Tensor::from_vec(s, (4, 4), &dev).unwrap();
    // Keys: two memories of the 4-token map, then 3 pointer tokens.
    let one = Tensor::randn(0f32, 1.0, (1, 1, 4, 8), &dev).unwrap();
    let ptr = Tensor::randn(0f32, 1.0, (1, 1, 3, 8), &dev).unwrap();
    let k = Tensor::cat(&[&one, &one, &ptr], 2).unwrap();
    let out = apply_rotary_enc(&k, &cos, &sin, 8).unwrap();
    let rot1 = apply_rotary_enc(&one, &cos, &sin, 4).unwrap();
    assert_eq!(f32s(&out.narrow(2, 0, 4).unwrap()), f32s(&rot1));
    assert_eq!(f32s(&out.narrow(2, 4, 4).unwrap()), f32s(&rot1));
    assert_eq!(f32s(&out.narrow(2, 8, 3).unwrap()), f32s(&ptr));
    // Pair rotation by hand on token 1, pair 0 (angle 1 rad).
    let x = f32s(&one);
    let r = f32s(&rot1);
    let (x0, x1) = (x[8], x[9]);
    assert!((r[8] - (x0 * 1f32.cos() - x1 * 1f32.sin())).abs() < 1e-6);
    assert!((r[9] - (x0 * 1f32.sin() + x1 * 1f32.cos())).abs() < 1e-6);
    // Rotated counts that are not whole maps are errors.
    assert!(apply_rotary_enc(&k, &cos, &sin, 6).is_err());
}

#[test]
fn attention_chunks_match_one_block() {
    // 4096 × 4096 scores exceed the block limit, so the queries go in chunks.
    let dev = Device::Cpu;
    let q = Tensor::randn(0f32, 1.0, (1, 1, 4096, 8), &dev).unwrap();
    let k = Tensor::randn(0f32, 1.0, (1, 1, 4096, 8), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (1, 1, 4096, 8), &dev).unwrap();
    let got = attention(&q, &k, &v).unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / 8f64.sqrt()).unwrap();
    let want = candle_nn::ops::softmax_last_dim(&scores)
        .unwrap()
        .matmul(&v)
        .unwrap();
    let d = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d < 1e-5, "chunked attention differs by {d}");
}

#[test]
fn memory_attention_preset_shapes() {
    // SAM 2.1 tiny structure on a 16x16 map: 2 memories + 8 pointer tokens.
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let ma = MemoryAttention::new(&cfg.memory_attention, vb.pp("memory_attention")).unwrap();
    assert_eq!(vm.all_vars().len(), 4 * (2 * 8 + 4 + 6) + 2);
    let dev = Device::Cpu;
    let curr = Tensor::randn(0f32, 1.0, (256, 1, 256), &dev).unwrap();
    let mem = Tensor::randn(0f32, 1.0, (2 * 256 + 8, 1, 64), &dev).unwrap();
    let out = ma.forward(&curr, &mem, &curr, &mem, 8).unwrap();
    assert_eq!(out.dims(), &[256, 1, 256]);
    // Non-square query maps and pointer counts that leave partial maps fail cleanly.
    assert!(ma
        .forward(
            &curr.narrow(0, 0, 200).unwrap(),
            &mem,
            &curr.narrow(0, 0, 200).unwrap(),
            &mem,
            8
        )
        .is_err());
    assert!(ma.forward(&curr, &mem, &curr, &mem, 5).is_err());
}
