//! Position encodings (`sam2.modeling.position_encoding`): the sine encoding of
//! feature maps and the random-Fourier encoding of the prompt encoder.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::PositionEmbeddingSineConfig;

/// Sine/cosine encoding of a feature map (`PositionEmbeddingSine`).
#[derive(Debug, Clone)]
pub struct PositionEmbeddingSine {
    cfg: PositionEmbeddingSineConfig,
}

impl PositionEmbeddingSine {
    /// Creates the encoding (it has no weights).
    pub fn new(cfg: PositionEmbeddingSineConfig) -> Self {
        Self { cfg }
    }

    /// Encoding `[1, num_pos_feats, h, w]` (y channels first, then x), f32.
    pub fn encode(&self, h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let npf = self.cfg.num_pos_feats / 2;
        let scale = self.cfg.scale.unwrap_or(2.0 * std::f64::consts::PI) as f32;
        let t = self.cfg.temperature as f32;
        // dim_t computed in f32 as torch does: temperature ** (2 * (i // 2) / npf).
        let dim_t: Vec<f32> = (0..npf)
            .map(|i| t.powf((2 * (i / 2)) as f32 / npf as f32))
            .collect();
        let embed = |n: usize| -> Vec<f32> {
            (1..=n)
                .map(|i| {
                    let v = i as f32;
                    if self.cfg.normalize {
                        v / (n as f32 + 1e-6) * scale
                    } else {
                        v
                    }
                })
                .collect()
        };
        let ys = embed(h);
        let xs = embed(w);
        let mut out = vec![0f32; 2 * npf * h * w];
        for (c, d) in dim_t.iter().enumerate() {
            let f = |v: f32| {
                let a = v / d;
                if c % 2 == 0 {
                    a.sin()
                } else {
                    a.cos()
                }
            };
            for y in 0..h {
                let vy = f(ys[y]);
                for x in 0..w {
                    out[(c * h + y) * w + x] = vy;
                    out[((npf + c) * h + y) * w + x] = f(xs[x]);
                }
            }
        }
        Tensor::from_vec(out, (1, 2 * npf, h, w), device)
    }
}

/// Random spatial-frequency encoding (`PositionEmbeddingRandom`) of the prompt encoder.
#[derive(Debug, Clone)]
pub struct PositionEmbeddingRandom {
    /// `positional_encoding_gaussian_matrix` `[2, num_pos_feats]`.
    gaussian: Tensor,
}

impl PositionEmbeddingRandom {
    /// Loads `positional_encoding_gaussian_matrix` `[2, num_pos_feats]`.
    pub fn new(num_pos_feats: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gaussian: vb.get((2, num_pos_feats), "positional_encoding_gaussian_matrix")?,
        })
    }

    /// Encodes coords normalised to `[0, 1]`, shape `[.., 2]` → `[.., 2·num_pos_feats]`.
    pub fn pe_encoding(&self, coords: &Tensor) -> Result<Tensor> {
        let dt = coords.dtype();
        let g = self.gaussian.to_dtype(dt)?;
        let coords = ((coords * 2.0)? - 1.0)?;
        let coords = coords.broadcast_matmul(&g)?;
        let coords = (coords * (2.0 * std::f64::consts::PI))?;
        Tensor::cat(&[coords.sin()?, coords.cos()?], coords.rank() - 1)
    }

    /// Dense encoding `[C, h, w]` of a grid of pixel centres (`forward(size)`).
    pub fn forward_grid(&self, h: usize, w: usize) -> Result<Tensor> {
        let dev = self.gaussian.device();
        let mut v = Vec::with_capacity(h * w * 2);
        for y in 0..h {
            for x in 0..w {
                // cumsum - 0.5 of ones, divided by size, in f32 as torch.
                v.push((x as f32 + 1.0 - 0.5) / w as f32);
                v.push((y as f32 + 1.0 - 0.5) / h as f32);
            }
        }
        let coords = Tensor::from_vec(v, (h, w, 2), dev)?.to_dtype(self.gaussian.dtype())?;
        self.pe_encoding(&coords)?.permute((2, 0, 1))
    }

    /// Encodes points in input pixels (`forward_with_coords`): `[B, N, 2]` → `[B, N, C]`.
    pub fn forward_with_coords(&self, coords: &Tensor, image_size: [usize; 2]) -> Result<Tensor> {
        let coords = coords.to_dtype(DType::F32)?;
        let x = (coords.narrow(2, 0, 1)? / image_size[1] as f64)?;
        let y = (coords.narrow(2, 1, 1)? / image_size[0] as f64)?;
        self.pe_encoding(&Tensor::cat(&[x, y], 2)?.to_dtype(self.gaussian.dtype())?)
    }
}
