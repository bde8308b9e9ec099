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
use crate::modeling::kernels::attention::sdpa_scaled;
use crate::modeling::kernels::layout::transpose_and_add;
use crate::modeling::sam::{cpu, transformer_cpu};
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
        // out_h = P_h v Wv_hᵀ + bv_h (rows of P_h sum to 1).
        let pv = if self.cpu_kernels && cpu::applies(&a) && cpu::applies(k) && cpu::applies(v) {
            // The fused attention (its keys split over the threads).
            let bf16 = self.k_proj.is_bf16();
            sdpa_scaled(
                &a.unsqueeze(1)?,
                &k.unsqueeze(1)?,
                &v.unsqueeze(1)?,
                1.0,
                bf16,
            )?
            .squeeze(1)?
        } else {
            let p = self.softmax(&self.mm(&a, &k.contiguous()?.transpose(1, 2)?)?)?;
            self.mm(&p, &v.contiguous()?)?
        };
        let pv = self.mm(&pv, &self.v_proj.weight().t()?)?;
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

    /// The image → token attention with the key and value heads folded in
    /// (`q` image tokens `[B, Nq, C]`, `k`, `v` prompt tokens `[B, Nk, C]`):
    /// `scores = q mᵀ + c` with `m` `[B, heads·Nk, C]` (scale included) and
    /// `c` `[B, heads·Nk, 1]` (the query bias, if any), softmax over each
    /// head's `Nk` columns, `out = P vo` with `vo` `[B, heads·Nk, C]`.
    fn fold_many_queries(
        &self,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Option<Tensor>, Tensor)> {
        let h = self.num_heads;
        let scale = 1.0 / ((self.internal_dim / h) as f64).sqrt();
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
        Ok((m, bias, vo))
    }

    /// [`Self::forward_many_queries`] without the output bias.
    fn many_queries(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, nq, _) = q.dims3()?;
        let nk = k.dim(1)?;
        let h = self.num_heads;
        let (m, bias, vo) = self.fold_many_queries(k, v)?;
        let mut scores = q.contiguous()?.matmul(&m.transpose(1, 2)?)?;
        if let Some(c) = bias {
            scores = scores.broadcast_add(&c.transpose(1, 2)?)?;
        }
        let p = softmax_last(&scores.reshape((b, nq, h, nk))?)?.reshape((b, nq, h * nk))?;
        p.matmul(&vo)
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
        let k = keys.broadcast_add(key_pe)?;
        let queries = self.update_queries(queries, keys, &k, query_pe)?;
        let q = (&queries + query_pe)?;
        let keys = (keys
            + self
                .cross_attn_image_to_token
                .forward_many_queries(&k, &q, &queries)?)?;
        let keys = self.norm4.forward(&keys)?;
        Ok((queries, keys))
    }

    /// The block's query side: self-attention, token → image attention over
    /// `kpe` (keys + PE) and `keys`, MLP, each with its residual and norm.
    fn update_queries(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        kpe: &Tensor,
        query_pe: &Tensor,
    ) -> Result<Tensor> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + query_pe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let queries = (&queries
            + self
                .cross_attn_token_to_image
                .forward_many_keys(&q, kpe, keys)?)?;
        let queries = self.norm2.forward(&queries)?;

        let queries = (&queries + self.mlp.forward(&queries)?)?;
        self.norm3.forward(&queries)
    }

    /// [`Self::forward`] on the CPU kernels: `kpe` is `keys + key_pe`
    /// (`[B, HW, C]`, f32), and the block also returns the new keys' sum
    /// with `key_pe` for the next block (made in the same pass as `norm4`).
    pub(crate) fn forward_fused(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        kpe: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let queries = self.update_queries(queries, keys, kpe, query_pe)?;
        let q = (&queries + query_pe)?;
        let attn = &self.cross_attn_image_to_token;
        let (m, score_bias, vo) = attn.fold_many_queries(&q, &queries)?;
        let (keys, kpe) = transformer_cpu::image_to_token(&transformer_cpu::ImageToToken {
            q: kpe,
            keys,
            m: &m,
            score_bias: score_bias.as_ref(),
            vo: &vo,
            out_bias: attn.out_proj.bias(),
            norm: &self.norm4,
            eps: LN_EPS as f32,
            pe: key_pe,
            keys_per_head: q.dim(1)?,
            bf16: attn.q_proj.is_bf16(),
        })?;
        Ok((queries, keys, kpe))
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
        let key_pe = self.pe_tokens(image_pe)?;
        let mut queries = point_embedding.contiguous()?;
        let (keys, k) =
            if self.cpu_kernels && cpu::applies(image_embedding) && cpu::applies(&key_pe) {
                let (mut keys, mut kpe) =
                    transpose_and_add(&image_embedding.flatten_from(2)?, &key_pe)?;
                for layer in &self.layers {
                    (queries, keys, kpe) =
                        layer.forward_fused(&queries, &keys, &kpe, point_embedding, &key_pe)?;
                }
                (keys, kpe)
            } else {
                let mut keys = self.to_tokens(image_embedding)?;
                for layer in &self.layers {
                    (queries, keys) = layer.forward(&queries, &keys, point_embedding, &key_pe)?;
                }
                let k = keys.broadcast_add(&key_pe)?;
                (keys, k)
            };
        let q = (&queries + point_embedding)?;
        let attn = self
            .final_attn_token_to_image
            .forward_many_keys(&q, &k, &keys)?;
        let queries = self.norm_final_attn.forward(&(queries + attn)?)?;
        Ok((queries, keys))
    }
}
