//! Windowing and patch embedding (`sam2.modeling.backbones.utils`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

/// Splits `[B, H, W, C]` into `[B·nW, ws, ws, C]` windows (row-major window
/// order), zero-padding the bottom/right to multiples of `ws`. Returns the
/// windows and the padded size `(Hp, Wp)`.
pub fn window_partition(x: &Tensor, ws: usize) -> Result<(Tensor, (usize, usize))> {
    let (b, h, w, c) = x.dims4()?;
    if ws == 0 {
        candle_core::bail!("window_partition: window size 0");
    }
    let pad_h = (ws - h % ws) % ws;
    let pad_w = (ws - w % ws) % ws;
    let x = x.pad_with_zeros(1, 0, pad_h)?.pad_with_zeros(2, 0, pad_w)?;
    let (hp, wp) = (h + pad_h, w + pad_w);
    let windows = x
        .reshape((b, hp / ws, ws, wp / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b * (hp / ws) * (wp / ws), ws, ws, c))?;
    Ok((windows, (hp, wp)))
}

/// Inverse of [`window_partition`]: `[B·nW, ws, ws, C]` windows of a padded
/// `pad_hw` map back to `[B, H, W, C]` with the padding removed.
pub fn window_unpartition(
    windows: &Tensor,
    ws: usize,
    pad_hw: (usize, usize),
    hw: (usize, usize),
) -> Result<Tensor> {
    let (hp, wp) = pad_hw;
    let (h, w) = hw;
    let (bw, _, _, c) = windows.dims4()?;
    let per_image = (hp / ws) * (wp / ws);
    if ws == 0 || per_image == 0 || !bw.is_multiple_of(per_image) {
        candle_core::bail!("window_unpartition: {bw} windows do not tile {hp}x{wp} by {ws}");
    }
    let b = bw / per_image;
    let x = windows
        .reshape((b, hp / ws, wp / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, hp, wp, c))?;
    if hp > h || wp > w {
        x.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()
    } else {
        Ok(x)
    }
}

/// Patch embedding (`PatchEmbed`): a strided conv (official 7×7, stride 4,
/// padding 3) from NCHW pixels to NHWC tokens.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    proj: Conv2d,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
}

impl PatchEmbed {
    /// Loads `proj.weight` `[embed_dim, in_chans, k, k]` and `proj.bias`.
    pub fn new(
        in_chans: usize,
        embed_dim: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        Ok(Self {
            proj: candle_nn::conv2d(in_chans, embed_dim, kernel, cfg, vb.pp("proj"))?,
            kernel,
            stride,
            padding,
        })
    }

    /// Conv weight `[embed_dim, in_chans, k, k]`.
    pub fn weight(&self) -> &Tensor {
        self.proj.weight()
    }

    /// Conv bias `[embed_dim]`.
    pub fn bias(&self) -> Result<&Tensor> {
        match self.proj.bias() {
            Some(b) => Ok(b),
            None => candle_core::bail!("PatchEmbed without bias"),
        }
    }

    /// `[B, C_in, H, W]` → `[B, H', W', embed_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj.forward(x)?.permute((0, 2, 3, 1))?.contiguous()
    }
}
