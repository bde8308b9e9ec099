//! Prompt encoder (`sam2.modeling.sam.prompt_encoder.PromptEncoder`): points,
//! boxes and a low-res mask become sparse tokens and a dense map.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::config::{Activation, PromptEncoderConfig};
use crate::modeling::position_encoding::PositionEmbeddingRandom;
use crate::modeling::sam2_utils::{activation, LayerNorm2d};

/// `LayerNorm2d` default epsilon.
const LN2D_EPS: f64 = 1e-6;

/// Point label of a padding point (`not_a_point_embed`, position encoding zeroed).
pub const LABEL_PAD: i32 = -1;
/// Point label of a negative click.
pub const LABEL_NEG: i32 = 0;
/// Point label of a positive click.
pub const LABEL_POS: i32 = 1;
/// Point label of a box's top-left corner.
pub const LABEL_BOX_TL: i32 = 2;
/// Point label of a box's bottom-right corner.
pub const LABEL_BOX_BR: i32 = 3;

/// `mask_downscaling`: conv 2x2/2 → LayerNorm2d → GELU → conv 2x2/2 →
/// LayerNorm2d → GELU → conv 1x1 (Sequential indices 0, 1, 3, 4, 6).
#[derive(Debug, Clone)]
struct MaskDownscaling {
    conv0: Conv2d,
    ln1: LayerNorm2d,
    conv3: Conv2d,
    ln4: LayerNorm2d,
    conv6: Conv2d,
}

impl MaskDownscaling {
    fn new(mask_in_chans: usize, embed_dim: usize, vb: VarBuilder) -> Result<Self> {
        let s2 = Conv2dConfig {
            stride: 2,
            ..Default::default()
        };
        let c4 = mask_in_chans / 4;
        Ok(Self {
            conv0: candle_nn::conv2d(1, c4, 2, s2, vb.pp("0"))?,
            ln1: LayerNorm2d::new(c4, LN2D_EPS, vb.pp("1"))?,
            conv3: candle_nn::conv2d(c4, mask_in_chans, 2, s2, vb.pp("3"))?,
            ln4: LayerNorm2d::new(mask_in_chans, LN2D_EPS, vb.pp("4"))?,
            conv6: candle_nn::conv2d(mask_in_chans, embed_dim, 1, Default::default(), vb.pp("6"))?,
        })
    }
}

impl Module for MaskDownscaling {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = activation(
            &self.ln1.forward(&self.conv0.forward(x)?)?,
            Activation::Gelu,
        )?;
        let x = activation(
            &self.ln4.forward(&self.conv3.forward(&x)?)?,
            Activation::Gelu,
        )?;
        self.conv6.forward(&x)
    }
}

/// The SAM prompt encoder (`sam_prompt_encoder`).
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    cfg: PromptEncoderConfig,
    pe_layer: PositionEmbeddingRandom,
    /// Additive label table `[6, C]`: rows zeros, `not_a_point_embed`,
    /// `point_embeddings.{0..3}`; row `label + 2`, 0 for unknown labels.
    label_table: Tensor,
    point_embeddings: Vec<Tensor>,
    no_mask_embed: Tensor,
    mask_downscaling: MaskDownscaling,
    dense_pe: Tensor,
}

impl PromptEncoder {
    /// Loads the encoder under `vb` (`sam_prompt_encoder`).
    pub fn new(cfg: &PromptEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.embed_dim;
        if !c.is_multiple_of(2) {
            candle_core::bail!("prompt encoder: embed_dim {c} must be even");
        }
        let pe_layer = PositionEmbeddingRandom::new(c / 2, vb.pp("pe_layer"))?;
        let point_embeddings = (0..4)
            .map(|i| vb.pp("point_embeddings").pp(i).get((1, c), "weight"))
            .collect::<Result<Vec<_>>>()?;
        let not_a_point = vb.pp("not_a_point_embed").get((1, c), "weight")?;
        let zeros = Tensor::zeros((1, c), not_a_point.dtype(), not_a_point.device())?;
        let mut rows = vec![zeros, not_a_point];
        rows.extend(point_embeddings.iter().cloned());
        let label_table = Tensor::cat(&rows, 0)?;
        let [h, w] = cfg.image_embedding_size;
        let dense_pe = pe_layer.forward_grid(h, w)?.unsqueeze(0)?.contiguous()?;
        Ok(Self {
            cfg: cfg.clone(),
            pe_layer,
            label_table,
            point_embeddings,
            no_mask_embed: vb.pp("no_mask_embed").get((1, c), "weight")?,
            mask_downscaling: MaskDownscaling::new(
                cfg.mask_in_chans,
                c,
                vb.pp("mask_downscaling"),
            )?,
            dense_pe,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PromptEncoderConfig {
        &self.cfg
    }

    /// Channels of the embeddings (`embed_dim`).
    pub fn embed_dim(&self) -> usize {
        self.cfg.embed_dim
    }

    /// Size `(h, w)` of a mask prompt: 4x the image embedding (`mask_input_size`).
    pub fn mask_input_size(&self) -> [usize; 2] {
        let [h, w] = self.cfg.image_embedding_size;
        [4 * h, 4 * w]
    }

    /// Position encoding of the image-embedding grid `[1, C, h, w]`
    /// (`get_dense_pe`; computed once at load time).
    pub fn get_dense_pe(&self) -> Result<Tensor> {
        Ok(self.dense_pe.clone())
    }

    /// The encoder's device.
    pub fn device(&self) -> &Device {
        self.no_mask_embed.device()
    }

    /// Embeds points `[B, N, 2]` (x, y in input pixels) with labels `[B, N]`
    /// (any numeric dtype; -1 pad, 0 negative, 1 positive, 2/3 box corners)
    /// → `[B, N (+1 if pad), C]` (`_embed_points`).
    pub fn embed_points(&self, points: &Tensor, labels: &Tensor, pad: bool) -> Result<Tensor> {
        let (b, n, two) = points.dims3()?;
        let (bl, nl) = labels.dims2()?;
        if two != 2 || bl != b || nl != n {
            candle_core::bail!(
                "prompt encoder: points {:?} and labels {:?} do not match",
                points.shape(),
                labels.shape()
            );
        }
        let dev = points.device();
        let mut points = (points.to_dtype(DType::F32)? + 0.5)?;
        let mut labels: Vec<i64> = labels
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|l| l as i64)
            .collect();
        let n_out = if pad { n + 1 } else { n };
        if pad {
            points = Tensor::cat(&[points, Tensor::zeros((b, 1, 2), DType::F32, dev)?], 1)?;
            labels = (0..b)
                .flat_map(|bi| labels[bi * n..(bi + 1) * n].iter().copied().chain([-1]))
                .collect();
        }
        let pe = self
            .pe_layer
            .forward_with_coords(&points, self.cfg.input_image_size)?;
        let dt = pe.dtype();
        // Padding points: position encoding replaced by `not_a_point_embed`;
        // labels 0..3: the matching `point_embeddings` added.
        let keep: Vec<f32> = labels
            .iter()
            .map(|&l| if l == -1 { 0.0 } else { 1.0 })
            .collect();
        let rows: Vec<u32> = labels
            .iter()
            .map(|&l| {
                if (-1..=3).contains(&l) {
                    (l + 2) as u32
                } else {
                    0
                }
            })
            .collect();
        let keep = Tensor::from_vec(keep, (b, n_out, 1), dev)?.to_dtype(dt)?;
        let rows = Tensor::from_vec(rows, b * n_out, dev)?;
        let add = self
            .label_table
            .to_dtype(dt)?
            .index_select(&rows, 0)?
            .reshape((b, n_out, ()))?;
        pe.broadcast_mul(&keep)? + add
    }

    /// Embeds boxes `[B, 4]` (x0, y0, x1, y1 in input pixels) as two corner
    /// tokens `[B, 2, C]` (`_embed_boxes`).
    pub fn embed_boxes(&self, boxes: &Tensor) -> Result<Tensor> {
        let coords = (boxes.to_dtype(DType::F32)? + 0.5)?.reshape(((), 2, 2))?;
        let pe = self
            .pe_layer
            .forward_with_coords(&coords, self.cfg.input_image_size)?;
        let dt = pe.dtype();
        let corners = Tensor::cat(&[&self.point_embeddings[2], &self.point_embeddings[3]], 0)?;
        pe.broadcast_add(&corners.to_dtype(dt)?.unsqueeze(0)?)
    }

    /// Embeds mask logits `[B, 1, 4h, 4w]` → `[B, C, h, w]` (`_embed_masks`).
    pub fn embed_masks(&self, masks: &Tensor) -> Result<Tensor> {
        let dt = self.no_mask_embed.dtype();
        self.mask_downscaling.forward(&masks.to_dtype(dt)?)
    }

    /// Encodes prompts (`forward`): `points = (coords [B, N, 2], labels [B, N])`,
    /// `boxes` `[B, 4]`, `masks` `[B, 1, 4h, 4w]`.
    ///
    /// Returns `(sparse [B, N', C], dense [B, C, h, w])`; a padding point is
    /// appended to the points when there are no boxes. Without a mask, `dense`
    /// is `no_mask_embed` broadcast (a strided view, no copy).
    pub fn forward(
        &self,
        points: Option<(&Tensor, &Tensor)>,
        boxes: Option<&Tensor>,
        masks: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let bs = if let Some((p, _)) = points {
            p.dim(0)?
        } else if let Some(b) = boxes {
            b.dim(0)?
        } else if let Some(m) = masks {
            m.dim(0)?
        } else {
            1
        };
        let c = self.cfg.embed_dim;
        let dt = self.no_mask_embed.dtype();
        let mut parts = Vec::with_capacity(2);
        if let Some((coords, labels)) = points {
            parts.push(self.embed_points(coords, labels, boxes.is_none())?);
        }
        if let Some(b) = boxes {
            parts.push(self.embed_boxes(b)?);
        }
        let sparse = match parts.len() {
            0 => Tensor::zeros((bs, 0, c), dt, self.device())?,
            1 => parts.remove(0),
            _ => Tensor::cat(&parts, 1)?,
        };
        let dense = match masks {
            Some(m) => self.embed_masks(m)?,
            None => {
                let [h, w] = self.cfg.image_embedding_size;
                self.no_mask_embed
                    .reshape((1, c, 1, 1))?
                    .broadcast_as((bs, c, h, w))?
            }
        };
        Ok((sparse, dense))
    }
}
