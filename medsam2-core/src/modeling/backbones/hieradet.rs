//! Hiera trunk (`sam2.modeling.backbones.hieradet`): a hierarchical ViT with
//! windowed and global attention, query pooling at stage changes, and a
//! windowed background position embedding.
//!
//! Tokens travel as NHWC (`[B, H, W, C]`) between blocks, as in the official
//! code; [`Hiera::forward`] returns the stage outputs as NCHW.

use std::sync::Mutex;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::cpu::{self, Buf, F32Ref, TLinear};
use super::utils::{window_partition, window_unpartition, PatchEmbed};
use crate::config::HieraConfig;
use crate::modeling::interp::interpolate_bicubic;
use crate::modeling::sam2_utils::layer_norm;

/// Slice of a loaded weight (always contiguous f32 on the fast path).
fn weight_ref(t: &Tensor) -> Result<F32Ref<'_>> {
    F32Ref::new(t)
}

/// Layer norm over the last dim with candle ops (any dtype and device;
/// half types are normalised in f32).
fn layer_norm_generic(x: &Tensor, ln: &LayerNorm) -> Result<Tensor> {
    let dt = x.dtype();
    let internal = match dt {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let x = x.to_dtype(internal)?;
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + ln.eps())?.sqrt()?)?.to_dtype(dt)?;
    let y = y.broadcast_mul(ln.weight())?;
    match ln.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Max pooling of an NHWC map with kernel = stride = `s` (`nn.MaxPool2d`,
/// `ceil_mode=False`: a trailing partial row/column is dropped).
pub fn max_pool_nhwc(x: &Tensor, s: [usize; 2]) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (ho, wo) = (h / s[0], w / s[1]);
    if ho == 0 || wo == 0 {
        candle_core::bail!("max_pool_nhwc: {h}x{w} smaller than the stride {s:?}");
    }
    let x = if ho * s[0] != h || wo * s[1] != w {
        x.narrow(1, 0, ho * s[0])?
            .narrow(2, 0, wo * s[1])?
            .contiguous()?
    } else {
        x.contiguous()?
    };
    x.reshape((b, ho, s[0], wo, s[1], c))?.max(4)?.max(2)
}

/// Multi-head attention with optional query pooling (`MultiScaleAttention`).
#[derive(Debug, Clone)]
pub struct MultiScaleAttention {
    qkv: TLinear,
    proj: TLinear,
    dim_out: usize,
    num_heads: usize,
    q_stride: Option<[usize; 2]>,
}

impl MultiScaleAttention {
    /// Loads `qkv` (`dim → 3·dim_out`) and `proj` (`dim_out → dim_out`).
    pub fn new(
        dim: usize,
        dim_out: usize,
        num_heads: usize,
        q_stride: Option<[usize; 2]>,
        vb: VarBuilder,
    ) -> Result<Self> {
        if num_heads == 0 || !dim_out.is_multiple_of(num_heads) {
            candle_core::bail!(
                "MultiScaleAttention: {dim_out} channels not divisible by {num_heads} heads"
            );
        }
        Ok(Self {
            qkv: TLinear::new(dim, 3 * dim_out, vb.pp("qkv"))?,
            proj: TLinear::new(dim_out, dim_out, vb.pp("proj"))?,
            dim_out,
            num_heads,
            q_stride,
        })
    }

    /// `[B, H, W, dim]` → `[B, H', W', dim_out]` (`H' = H / q_stride` with pooling).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        let nh = self.num_heads;
        let hd = self.dim_out / nh;
        let qkv = self.qkv.forward(x)?.reshape((b, h * w, 3, nh, hd))?;
        let mut q = qkv.narrow(2, 0, 1)?.squeeze(2)?;
        let (mut ho, mut wo) = (h, w);
        if let Some(s) = self.q_stride {
            let qp = max_pool_nhwc(&q.reshape((b, h, w, self.dim_out))?, s)?;
            ho = qp.dim(1)?;
            wo = qp.dim(2)?;
            q = qp.reshape((b, ho * wo, nh, hd))?;
        }
        let k = qkv.narrow(2, 1, 1)?.squeeze(2)?;
        let v = qkv.narrow(2, 2, 1)?.squeeze(2)?;
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let scale = 1.0 / (hd as f64).sqrt();
        let attn = (q.matmul(&k.t()?)? * scale)?;
        let attn = candle_nn::ops::softmax_last_dim(&attn)?;
        let o = attn.matmul(&v)?; // [B, nh, Lq, hd]
        let o = o.transpose(1, 2)?.reshape((b, ho, wo, self.dim_out))?;
        self.proj.forward(&o)
    }
}

/// One Hiera block (`MultiScaleBlock`): (windowed) attention with optional
/// query pooling and a channel projection of the shortcut, then an MLP.
#[derive(Debug, Clone)]
pub struct MultiScaleBlock {
    norm1: LayerNorm,
    norm2: LayerNorm,
    attn: MultiScaleAttention,
    /// `mlp.layers.0` / `mlp.layers.1`, exact GELU between them.
    fc1: TLinear,
    fc2: TLinear,
    proj: Option<TLinear>,
    dim: usize,
    dim_out: usize,
    window_size: usize,
    q_stride: Option<[usize; 2]>,
}

impl MultiScaleBlock {
    /// Loads a block; `window_size == 0` means global attention.
    pub fn new(
        dim: usize,
        dim_out: usize,
        num_heads: usize,
        q_stride: Option<[usize; 2]>,
        window_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mlp_hidden = (dim_out as f64 * 4.0) as usize;
        Ok(Self {
            norm1: layer_norm(dim, 1e-6, vb.pp("norm1"))?,
            norm2: layer_norm(dim_out, 1e-6, vb.pp("norm2"))?,
            attn: MultiScaleAttention::new(dim, dim_out, num_heads, q_stride, vb.pp("attn"))?,
            fc1: TLinear::new(dim_out, mlp_hidden, vb.pp("mlp").pp("layers").pp(0))?,
            fc2: TLinear::new(mlp_hidden, dim_out, vb.pp("mlp").pp("layers").pp(1))?,
            proj: if dim != dim_out {
                Some(TLinear::new(dim, dim_out, vb.pp("proj"))?)
            } else {
                None
            },
            dim,
            dim_out,
            window_size,
            q_stride,
        })
    }

    /// `[B, H, W, dim]` → `[B, H', W', dim_out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let xn = layer_norm_generic(x, &self.norm1)?;
        let shortcut = match &self.proj {
            Some(p) => {
                let s = p.forward(&xn)?;
                match self.q_stride {
                    Some(st) => max_pool_nhwc(&s, st)?,
                    None => s,
                }
            }
            None => x.clone(),
        };
        let (h, w) = (xn.dim(1)?, xn.dim(2)?);
        let mut ws = self.window_size;
        let (xw, mut pad_hw) = if ws > 0 {
            window_partition(&xn, ws)?
        } else {
            (xn, (h, w))
        };
        let mut y = self.attn.forward(&xw)?;
        let mut hw = (h, w);
        if let Some(st) = self.q_stride {
            ws = self.window_size / st[0];
            hw = (shortcut.dim(1)?, shortcut.dim(2)?);
            if ws > 0 {
                pad_hw = (hw.0 + (ws - hw.0 % ws) % ws, hw.1 + (ws - hw.1 % ws) % ws);
            }
        }
        if self.window_size > 0 {
            y = window_unpartition(&y, ws, pad_hw, hw)?;
        }
        let x = (shortcut + y)?;
        let m = self
            .fc1
            .forward(&layer_norm_generic(&x, &self.norm2)?)?
            .gelu_erf()?;
        x + self.fc2.forward(&m)?
    }

    /// Fast f32 CPU forward on NHWC tokens `x` of a `b × h × w` map; returns
    /// the new tokens and map size.
    fn forward_fast(
        &self,
        x: Buf,
        (b, h, w): (usize, usize, usize),
    ) -> Result<(Vec<f32>, usize, usize)> {
        let n = b * h * w;
        let ln1w = weight_ref(self.norm1.weight())?;
        let ln1b = match self.norm1.bias() {
            Some(t) => weight_ref(t)?,
            None => candle_core::bail!("norm1 without bias"),
        };
        let (qkv_w, qkv_b) = self.attn.qkv.fast()?;
        let proj = match &self.proj {
            Some(p) => Some(p.fast()?),
            None => None,
        };
        let ln1 = (ln1w.slice(), ln1b.slice(), self.norm1.eps() as f32);
        let second = proj.as_ref().map(|(w, b)| (w.slice(), b.slice()));
        let (qkv, projected) = {
            let guard;
            let xs: &[f32] = match &x {
                Buf::Owned(v) => v,
                Buf::Shared(t) => {
                    guard = F32Ref::new(t)?;
                    guard.slice()
                }
            };
            if xs.len() != n * self.dim {
                candle_core::bail!(
                    "MultiScaleBlock: input has {} values, expected {n}x{}",
                    xs.len(),
                    self.dim
                );
            }
            cpu::ln_linear(xs, n, self.dim, ln1, qkv_w.slice(), qkv_b.slice(), second)
        };
        let mut shortcut = match projected {
            Some(p) => {
                if let Buf::Owned(v) = x {
                    cpu::recycle(v);
                }
                match self.q_stride {
                    Some(s) => {
                        let pooled = cpu::max_pool(&p, b, h, w, self.dim_out, s);
                        cpu::recycle(p);
                        pooled
                    }
                    None => p,
                }
            }
            None => x.into_owned()?,
        };
        let geom = cpu::AttnGeom {
            b,
            h,
            w,
            c: self.dim_out,
            heads: self.attn.num_heads,
            window: self.window_size,
            q_stride: self.q_stride,
            // The bf16 mode (the layer's weights were packed for it).
            bf16: qkv_w.slice().bf16.is_some(),
        };
        let (o, ho, wo) = cpu::attention(&qkv, qkv_b.slice(), &geom)?;
        cpu::recycle(qkv);
        let m = b * ho * wo;
        if shortcut.len() != m * self.dim_out {
            candle_core::bail!("MultiScaleBlock: shortcut and attention sizes differ");
        }
        let (pw, pb) = self.attn.proj.fast()?;
        cpu::linear_residual(&mut shortcut, &o, m, self.dim_out, pw.slice(), pb.slice());
        cpu::recycle(o);
        let ln2w = weight_ref(self.norm2.weight())?;
        let ln2b = match self.norm2.bias() {
            Some(t) => weight_ref(t)?,
            None => candle_core::bail!("norm2 without bias"),
        };
        let (w1, b1) = self.fc1.fast()?;
        let (w2, b2) = self.fc2.fast()?;
        let mw = cpu::MlpWeights {
            ln_w: ln2w.slice(),
            ln_b: ln2b.slice(),
            eps: self.norm2.eps() as f32,
            w1: w1.slice(),
            b1: b1.slice(),
            w2: w2.slice(),
            b2: b2.slice(),
            act: crate::config::Activation::Gelu,
            residual_last: false,
        };
        cpu::mlp_residual(&mut shortcut, m, self.dim_out, &mw);
        Ok((shortcut, ho, wo))
    }
}

/// The Hiera trunk (`Hiera`), always returning every stage's output
/// (`return_interm_layers=True`).
#[derive(Debug)]
pub struct Hiera {
    patch_embed: PatchEmbed,
    pos_embed: Tensor,
    pos_embed_window: Tensor,
    blocks: Vec<MultiScaleBlock>,
    stage_ends: Vec<usize>,
    stage_dims: Vec<usize>,
    /// Position embedding of the last feature size, `[1, H, W, C]`.
    pos_cache: Mutex<Option<((usize, usize), Tensor)>>,
}

impl Hiera {
    /// Loads the trunk from `vb` at `image_encoder.trunk`.
    pub fn new(cfg: &HieraConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.stages.is_empty() || cfg.window_spec.len() != cfg.stages.len() {
            candle_core::bail!("Hiera: need one window size per stage");
        }
        let stage_ends = cfg.stage_ends();
        let q_pool_blocks: Vec<usize> = stage_ends[..stage_ends.len() - 1]
            .iter()
            .map(|e| e + 1)
            .take(cfg.q_pool)
            .collect();
        let patch_embed = PatchEmbed::new(3, cfg.embed_dim, 7, 4, 3, vb.pp("patch_embed"))?;
        let [bh, bw] = cfg.window_pos_embed_bkg_spatial_size;
        let pos_embed = vb.get((1, cfg.embed_dim, bh, bw), "pos_embed")?;
        let w0 = cfg.window_spec[0];
        let pos_embed_window = vb.get((1, cfg.embed_dim, w0, w0), "pos_embed_window")?;

        let depth: usize = cfg.stages.iter().sum();
        let mut dim = cfg.embed_dim;
        let mut heads = cfg.num_heads;
        let mut cur_stage = 0;
        let mut blocks = Vec::with_capacity(depth);
        let mut stage_dims = Vec::with_capacity(cfg.stages.len());
        for i in 0..depth {
            let mut dim_out = dim;
            // The first block of a stage still uses the previous stage's window.
            let mut window = cfg.window_spec[cur_stage];
            if cfg.global_att_blocks.contains(&i) {
                window = 0;
            }
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = (dim as f64 * cfg.dim_mul) as usize;
                heads = (heads as f64 * cfg.head_mul) as usize;
                cur_stage += 1;
            }
            let q_stride = q_pool_blocks.contains(&i).then_some(cfg.q_stride);
            blocks.push(MultiScaleBlock::new(
                dim,
                dim_out,
                heads,
                q_stride,
                window,
                vb.pp("blocks").pp(i),
            )?);
            dim = dim_out;
            if stage_ends.contains(&i) {
                stage_dims.push(dim);
            }
        }
        Ok(Self {
            patch_embed,
            pos_embed,
            pos_embed_window,
            blocks,
            stage_ends,
            stage_dims,
            pos_cache: Mutex::new(None),
        })
    }

    /// Channels of the stage outputs, lowest resolution first (`channel_list`).
    pub fn channel_list(&self) -> Vec<usize> {
        self.stage_dims.iter().rev().copied().collect()
    }

    /// Background embedding resized bicubically to `(h, w)` plus the tiled
    /// window embedding, as `[1, h, w, C]` (`_get_pos_embed`); cached per size.
    pub fn pos_embed(&self, h: usize, w: usize) -> Result<Tensor> {
        if let Ok(guard) = self.pos_cache.lock() {
            if let Some((hw, t)) = guard.as_ref() {
                if *hw == (h, w) {
                    return Ok(t.clone());
                }
            }
        }
        let (_, _, wh, ww) = self.pos_embed_window.dims4()?;
        if !h.is_multiple_of(wh) || !w.is_multiple_of(ww) {
            candle_core::bail!(
                "Hiera: feature size {h}x{w} is not a multiple of the window embedding {wh}x{ww}"
            );
        }
        let bg = interpolate_bicubic(&self.pos_embed, h, w)?;
        let win = self.pos_embed_window.repeat((1, 1, h / wh, w / ww))?;
        let pe = (bg + win)?.permute((0, 2, 3, 1))?.contiguous()?;
        if let Ok(mut guard) = self.pos_cache.lock() {
            *guard = Some(((h, w), pe.clone()));
        }
        Ok(pe)
    }

    /// Stage outputs as NHWC `[B, H_i, W_i, C_i]`, highest resolution first.
    pub fn forward_nhwc(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        if cpu::fast(x) && cpu::fast(&self.pos_embed) {
            return self.forward_nhwc_fast(x);
        }
        let x = self.patch_embed.forward(x)?;
        let (_, h, w, _) = x.dims4()?;
        let pe = self.pos_embed(h, w)?.to_dtype(x.dtype())?;
        let mut x = x.broadcast_add(&pe)?;
        let mut outs = Vec::with_capacity(self.stage_ends.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            x = blk.forward(&x)?;
            if self.stage_ends.contains(&i) {
                outs.push(x.clone());
            }
        }
        Ok(outs)
    }

    /// Fast f32 CPU path of [`Hiera::forward_nhwc`].
    fn forward_nhwc_fast(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let (b, ci, h, w) = x.dims4()?;
        let (k, stride, pad) = (
            self.patch_embed.kernel,
            self.patch_embed.stride,
            self.patch_embed.padding,
        );
        if h + 2 * pad < k || w + 2 * pad < k || stride == 0 {
            candle_core::bail!("Hiera: input {h}x{w} smaller than the patch kernel");
        }
        let (ho, wo) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let pe = self.pos_embed(ho, wo)?;
        let x = x.contiguous()?;
        // Frees the recycled activations when the pass ends, also on errors.
        let _pool = cpu::PoolGuard;
        let (mut buf, mut hw) = {
            let px = F32Ref::new(&x)?;
            let pw = weight_ref(self.patch_embed.weight())?;
            let pb = weight_ref(self.patch_embed.bias()?)?;
            let pos = F32Ref::new(&pe)?;
            let (v, h1, w1) = cpu::patch_embed(
                px.slice(),
                (b, ci, h, w),
                pw.slice(),
                pb.slice(),
                pos.slice(),
                k,
                stride,
                pad,
            )?;
            (Buf::Owned(v), (h1, w1))
        };
        let mut outs = Vec::with_capacity(self.stage_ends.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            let (v, h1, w1) = blk.forward_fast(buf, (b, hw.0, hw.1))?;
            hw = (h1, w1);
            if self.stage_ends.contains(&i) {
                let t = Tensor::from_vec(v, (b, h1, w1, blk.dim_out), &Device::Cpu)?;
                outs.push(t.clone());
                buf = Buf::Shared(t);
            } else {
                buf = Buf::Owned(v);
            }
        }
        Ok(outs)
    }

    /// `[B, 3, H, W]` pixels → stage outputs as NCHW `[B, C_i, H_i, W_i]`,
    /// highest resolution first (`Hiera.forward`).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_nhwc(x)?
            .into_iter()
            .map(|t| {
                if cpu::fast(&t) {
                    let (b, h, w, c) = t.dims4()?;
                    cpu::nhwc_to_nchw(F32Ref::new(&t)?.slice(), b, h, w, c)
                } else {
                    t.permute((0, 3, 1, 2))?.contiguous()
                }
            })
            .collect()
    }
}
