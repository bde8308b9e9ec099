//! Two-way transformer of the mask decoder (`sam2.modeling.sam.transformer`):
//! prompt tokens and image tokens attend to each other.
//!
//! The rotary attention of the memory-attention module lives in
//! `memory_attention.rs`; it can reuse [`Attention`]'s projections and head
//! helpers.

use std::sync::{Arc, Mutex};

use candle_core::{Module, Result, Tensor, TensorId};
use candle_nn::{LayerNorm, VarBuilder};

use crate::modeling::kernels::bf16_linear::Linear;

use crate::config::{Activation, TwoWayTransformerConfig};
use crate::modeling::sam::cpu;
use crate::modeling::sam2_utils::{layer_norm, linear, sdpa, softmax_last, Mlp};

/// `nn.LayerNorm` default epsilon.
const LN_EPS: f64 = 1e-5;

/// Multi-head attention whose internal width is `embedding_dim / downsample_rate`
/// (`Attention`), with keys/values possibly of another width (`kv_in_dim`).
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    internal_dim: usize,
    cpu_kernels: bool,
}

impl Attention {
    /// Loads `q_proj`, `k_proj`, `v_proj` and `out_proj` under `vb`.
    pub fn new(
        embedding_dim: usize,
        num_heads: usize,
        downsample_rate: usize,
        kv_in_dim: Option<usize>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let kv_in_dim = kv_in_dim.unwrap_or(embedding_dim);
        let internal_dim = embedding_dim / downsample_rate.max(1);
        if num_heads == 0 || !internal_dim.is_multiple_of(num_heads) {
            candle_core::bail!(
                "attention: {num_heads} heads do not divide the internal dim {internal_dim}"
            );
        }
        Ok(Self {
            q_proj: linear(embedding_dim, internal_dim, vb.pp("q_proj"))?,
            k_proj: linear(kv_in_dim, internal_dim, vb.pp("k_proj"))?,
            v_proj: linear(kv_in_dim, internal_dim, vb.pp("v_proj"))?,
            out_proj: linear(internal_dim, embedding_dim, vb.pp("out_proj"))?,
            num_heads,
            internal_dim,
            cpu_kernels: true,
        })
    }

    /// Uses the CPU kernels (softmax) on f32 CPU tensors (default `true`).
    pub fn set_cpu_kernels(&mut self, on: bool) {
        self.cpu_kernels = on;
    }

    /// `a @ b` (broadcast): the CPU kernel's matmul or candle's.
    fn mm(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        cpu::mm(a, b, self.cpu_kernels)
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        if self.cpu_kernels && cpu::applies(x) {
            cpu::softmax_last(x)
        } else {
            softmax_last(x)
        }
    }

    /// Number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Width of the projected queries/keys/values (`internal_dim`).
    pub fn internal_dim(&self) -> usize {
        self.internal_dim
    }

    /// Query projection.
    pub fn q_proj(&self) -> &Linear {
        &self.q_proj
    }

    /// Key projection.
    pub fn k_proj(&self) -> &Linear {
        &self.k_proj
    }

    /// Value projection.
    pub fn v_proj(&self) -> &Linear {
        &self.v_proj
    }

    /// Output projection.
    pub fn out_proj(&self) -> &Linear {
        &self.out_proj
    }

    /// `[B, N, C]` → `[B, heads, N, C / heads]` (`_separate_heads`).
    pub fn separate_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        x.reshape((b, n, self.num_heads, c / self.num_heads))?
            .transpose(1, 2)
    }

    /// `[B, heads, N, d]` → `[B, N, heads · d]` (`_recombine_heads`).
    pub fn recombine_heads(x: &Tensor) -> Result<Tensor> {
        let (b, h, n, d) = x.dims4()?;
        x.transpose(1, 2)?.contiguous()?.reshape((b, n, h * d))
    }

    /// Attention of `q` `[B, Nq, C]` over `k`, `v` `[B, Nk, kv_in_dim]` → `[B, Nq, C]`.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let q = self.separate_heads(&self.q_proj.forward(&q.contiguous()?)?)?;
        let k = self.separate_heads(&self.k_proj.forward(&k.contiguous()?)?)?;
        let v = self.separate_heads(&self.v_proj.forward(&v.contiguous()?)?)?;
        let out = sdpa(&q, &k, &v)?;
        self.out_proj.forward(&Self::recombine_heads(&out)?)
    }

    /// Spreads per-token head vectors `[B, N, I]` block-diagonally over the
    /// heads: `[B, heads·N, I]`, row `(h, n)` keeps only head `h`'s columns.
    fn head_blocks(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, i) = x.dims3()?;
        let h = self.num_heads;
        let d = i / h;
        let mask: Vec<f32> = (0..h * i)
            .map(|k| f32::from(u8::from((k % i) / d == k / i)))
            .collect();
        let mask = Tensor::from_vec(mask, (1, h, 1, i), x.device())?.to_dtype(x.dtype())?;
        x.unsqueeze(1)?.broadcast_mul(&mask)?.reshape((b, h * n, i))
    }

    /// Same result as [`Attention::forward`] for few queries over many keys
    /// (prompt tokens → image): the query heads are folded into the key and
    /// value projections, so the `Nk` keys and values are never projected.
    ///
    /// `q` `[B, Nq, C]`, `k`, `v` `[B, Nk, kv_in_dim]` → `[B, Nq, C]`.
    pub fn forward_many_keys(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, nq, _) = q.dims3()?;
        let h = self.num_heads;
        let scale = 1.0 / ((self.internal_dim / h) as f64).sqrt();
        // scores_h = q_h Wk_h kᵀ (+ q_h·bk_h, constant along the keys: it
        // cancels in the softmax).
        let qp = (self.q_proj.forward(&q.contiguous()?)? * scale)?;
        let a = self.mm(&self.head_blocks(&qp)?, self.k_proj.weight())?;
        let p = self.softmax(&self.mm(&a, &k.contiguous()?.transpose(1, 2)?)?)?;
        // out_h = P_h v Wv_hᵀ + bv_h (rows of P_h sum to 1).
        let pv = self.mm(&self.mm(&p, &v.contiguous()?)?, &self.v_proj.weight().t()?)?;
        let i = self.internal_dim;
        let mask = self.head_blocks(&Tensor::ones((1, 1, i), pv.dtype(), pv.device())?)?;
        let o = pv
            .reshape((b, h, nq, i))?
            .broadcast_mul(&mask.unsqueeze(2)?)?
            .sum(1)?;
        let o = match self.v_proj.bias() {
            Some(bv) => o.broadcast_add(bv)?,
            None => o,
        };
        self.out_proj.forward(&o)
    }

    /// Same result as [`Attention::forward`] for many queries over few keys
    /// (image → prompt tokens): the key and value heads are folded into the
    /// query and output projections, so the `Nq` queries are never projected.
    ///
    /// `q` `[B, Nq, C]`, `k`, `v` `[B, Nk, kv_in_dim]` → `[B, Nq, C]`.
    pub fn forward_many_queries(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let out = self.many_queries(q, k, v)?;
        match self.out_proj.bias() {
            Some(bo) => out.broadcast_add(bo),
            None => Ok(out),
        }
    }

    /// [`Self::forward_many_queries`] without the output bias.
    fn many_queries(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, nq, _) = q.dims3()?;
        let nk = k.dim(1)?;
        let h = self.num_heads;
        let scale = 1.0 / ((self.internal_dim / h) as f64).sqrt();
        let q = q.contiguous()?;
        // scores_h = q Wq_hᵀ k_hᵀ + bq_h·k_h.
        let kb = self.head_blocks(&(self.k_proj.forward(&k.contiguous()?)? * scale)?)?;
        let m = self.mm(&kb, self.q_proj.weight())?;
        let bias = match self.q_proj.bias() {
            Some(bq) => Some(self.mm(&kb, &bq.unsqueeze(1)?)?),
            None => None,
        };
        // out = Σ_h P_h (v_h Wo_hᵀ) + bo.
        let vblk = self.head_blocks(&self.v_proj.forward(&v.contiguous()?)?)?;
        let vo = self.mm(&vblk, &self.out_proj.weight().t()?)?;
        let out = if self.cpu_kernels && cpu::applies(&q) {
            // Scores as [B, heads·Nk, Nq]: the softmax runs along the keys of
            // each head for all queries at once.
            let mut scores = self.mm(&m, &q.transpose(1, 2)?)?;
            if let Some(c) = bias {
                scores = scores.broadcast_add(&c)?;
            }
            let p = cpu::softmax_dim2(&scores.reshape((b, h, nk, nq))?)?;
            self.mm(&p.reshape((b, h * nk, nq))?.transpose(1, 2)?, &vo)?
        } else {
            let mut scores = q.matmul(&m.transpose(1, 2)?)?;
            if let Some(c) = bias {
                scores = scores.broadcast_add(&c.transpose(1, 2)?)?;
            }
            let p = softmax_last(&scores.reshape((b, nq, h, nk))?)?.reshape((b, nq, h * nk))?;
            p.matmul(&vo)?
        };
        Ok(out)
    }
}

/// One block of the two-way transformer (`TwoWayAttentionBlock`): token
/// self-attention, token→image attention, token MLP, image→token attention.
#[derive(Debug, Clone)]
pub struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    /// Loads a block under `vb` (`transformer.layers.{i}`); the MLP uses ReLU.
    pub fn new(
        embedding_dim: usize,
        num_heads: usize,
        mlp_dim: usize,
        attention_downsample_rate: usize,
        skip_first_layer_pe: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c = embedding_dim;
        let ds = attention_downsample_rate;
        Ok(Self {
            self_attn: Attention::new(c, num_heads, 1, None, vb.pp("self_attn"))?,
            norm1: layer_norm(c, LN_EPS, vb.pp("norm1"))?,
            cross_attn_token_to_image: Attention::new(
                c,
                num_heads,
                ds,
                None,
                vb.pp("cross_attn_token_to_image"),
            )?,
            norm2: layer_norm(c, LN_EPS, vb.pp("norm2"))?,
            mlp: Mlp::new(c, mlp_dim, c, 2, Activation::Relu, false, vb.pp("mlp"))?,
            norm3: layer_norm(c, LN_EPS, vb.pp("norm3"))?,
            norm4: layer_norm(c, LN_EPS, vb.pp("norm4"))?,
            cross_attn_image_to_token: Attention::new(
                c,
                num_heads,
                ds,
                None,
                vb.pp("cross_attn_image_to_token"),
            )?,
            skip_first_layer_pe,
        })
    }

    /// Uses the CPU kernels on f32 CPU tensors (default `true`).
    pub fn set_cpu_kernels(&mut self, on: bool) {
        for a in [
            &mut self.self_attn,
            &mut self.cross_attn_token_to_image,
            &mut self.cross_attn_image_to_token,
        ] {
            a.set_cpu_kernels(on);
        }
    }

    /// Updates `(queries [B, Nq, C], keys [B, HW, C])` given their position
    /// encodings `query_pe` (the prompt tokens) and `key_pe` (image PE).
    pub fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + query_pe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let k = keys.broadcast_add(key_pe)?;
        let queries = (&queries
            + self
                .cross_attn_token_to_image
                .forward_many_keys(&q, &k, keys)?)?;
        let queries = self.norm2.forward(&queries)?;

        let queries = (&queries + self.mlp.forward(&queries)?)?;
        let queries = self.norm3.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let attn = &self.cross_attn_image_to_token;
        let keys = if attn.cpu_kernels && cpu::applies(keys) {
            let out = attn.many_queries(&k, &q, &queries)?;
            cpu::add_layer_norm(keys, &out, attn.out_proj.bias(), &self.norm4, LN_EPS)?
        } else {
            let keys = (keys + attn.forward_many_queries(&k, &q, &queries)?)?;
            self.norm4.forward(&keys)?
        };
        Ok((queries, keys))
    }
}

/// The mask decoder's transformer (`TwoWayTransformer`).
#[derive(Debug, Clone)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: LayerNorm,
    cpu_kernels: bool,
    /// The last image PE's tokens, by tensor id: callers pass the same dense
    /// PE ([`super::PromptEncoder::get_dense_pe`]) on every click.
    pe_tokens: Arc<Mutex<Option<(TensorId, Tensor)>>>,
}

impl TwoWayTransformer {
    /// Loads `layers.{i}`, `final_attn_token_to_image` and `norm_final_attn` under `vb`.
    pub fn new(cfg: &TwoWayTransformerConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.depth)
            .map(|i| {
                TwoWayAttentionBlock::new(
                    cfg.embedding_dim,
                    cfg.num_heads,
                    cfg.mlp_dim,
                    cfg.attention_downsample_rate,
                    i == 0,
                    vb.pp("layers").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            final_attn_token_to_image: Attention::new(
                cfg.embedding_dim,
                cfg.num_heads,
                cfg.attention_downsample_rate,
                None,
                vb.pp("final_attn_token_to_image"),
            )?,
            norm_final_attn: layer_norm(cfg.embedding_dim, LN_EPS, vb.pp("norm_final_attn"))?,
            cpu_kernels: true,
            pe_tokens: Arc::new(Mutex::new(None)),
        })
    }

    /// Uses the CPU kernels on f32 CPU tensors (default `true`); `false` runs
    /// plain tensor ops everywhere.
    pub fn set_cpu_kernels(&mut self, on: bool) {
        self.cpu_kernels = on;
        self.final_attn_token_to_image.set_cpu_kernels(on);
        for l in &mut self.layers {
            l.set_cpu_kernels(on);
        }
    }

    /// `[B, C, h, w]` → `[B, h·w, C]`.
    fn to_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.flatten_from(2)?;
        if self.cpu_kernels && cpu::applies(&x) {
            cpu::transpose_last2(&x)
        } else {
            x.transpose(1, 2)?.contiguous()
        }
    }

    /// [`Self::to_tokens`] of the image PE, reused while the same tensor comes back.
    fn pe_tokens(&self, image_pe: &Tensor) -> Result<Tensor> {
        let id = image_pe.id();
        if let Ok(slot) = self.pe_tokens.lock() {
            if let Some((cached, t)) = slot.as_ref() {
                if *cached == id {
                    return Ok(t.clone());
                }
            }
        }
        let t = self.to_tokens(image_pe)?;
        if let Ok(mut slot) = self.pe_tokens.lock() {
            *slot = Some((id, t.clone()));
        }
        Ok(t)
    }

    /// Runs the transformer.
    ///
    /// `image_embedding` `[B, C, h, w]`, `image_pe` `[B or 1, C, h, w]`,
    /// `point_embedding` `[B, N, C]` → `(queries [B, N, C], keys [B, h·w, C])`.
    pub fn forward(
        &self,
        image_embedding: &Tensor,
        image_pe: &Tensor,
        point_embedding: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let keys = self.to_tokens(image_embedding)?;
        let key_pe = self.pe_tokens(image_pe)?;
        let mut queries = point_embedding.contiguous()?;
        let mut keys = keys;
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, point_embedding, &key_pe)?;
        }
        let q = (&queries + point_embedding)?;
        let k = keys.broadcast_add(&key_pe)?;
        let attn = self
            .final_attn_token_to_image
            .forward_many_keys(&q, &k, &keys)?;
        let queries = self.norm_final_attn.forward(&(queries + attn)?)?;
        Ok((queries, keys))
    }
}
