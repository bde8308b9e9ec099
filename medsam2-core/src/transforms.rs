//! Image preprocessing and coordinate transforms (`sam2.utils.transforms`),
//! on plain slices so that they work without `std`.
//!
//! Two resize paths exist in the official code and parity needs both:
//! - the image predictor: `/255` then torchvision `Resize` with
//!   **antialiased bilinear** on float tensors ([`resize_bilinear_aa_f32`]);
//! - the video predictor: PIL `Image.resize` with **BICUBIC** on uint8 RGB
//!   ([`resize_bicubic_pil_u8`]), with Pillow's fixed-point arithmetic.
//!
//! Neither candle nor `fast_image_resize` reproduces these bit for bit (candle
//! has no antialiasing; fast_image_resize rounds its u8 convolution differently
//! from Pillow), so both are written here following the published algorithms.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// ImageNet mean used by SAM 2.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation used by SAM 2.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Separable 1-D resampling weights: `(first source index, weights)` per output index.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<f32>,
    ksize: usize,
}

/// Antialiased bilinear taps as PyTorch's `_upsample_bilinear2d_aa`
/// (align_corners=False), computed in f32 like its CPU kernel.
fn taps_bilinear_aa(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f32 / out_size as f32;
    let support = if scale >= 1.0 { scale } else { 1.0f32 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0f32 };
    let ksize = libm::ceilf(support) as usize * 2 + 1;
    let mut t = Taps {
        start: vec![0; out_size],
        len: vec![0; out_size],
        weights: vec![0.0; out_size * ksize],
        ksize,
    };
    for i in 0..out_size {
        let center = scale * (i as f32 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let n = (xmax - xmin).min(ksize);
        let w = &mut t.weights[i * ksize..(i + 1) * ksize];
        let mut total = 0.0f32;
        for (j, wj) in w.iter_mut().enumerate().take(n) {
            let x = (j as f32 + xmin as f32 - center + 0.5) * invscale;
            let v = (1.0 - x.abs()).max(0.0);
            *wj = v;
            total += v;
        }
        if total != 0.0 {
            for wj in w.iter_mut().take(n) {
                *wj /= total;
            }
        }
        t.start[i] = xmin;
        t.len[i] = n;
    }
    t
}

/// Resizes a planar `[C, H, W]` f32 image with antialiased bilinear
/// interpolation, bit-compatible with `torch.nn.functional.interpolate(...,
/// mode="bilinear", antialias=True, align_corners=False)` on CPU (width pass
/// first, then height).
pub fn resize_bilinear_aa_f32(
    src: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<Vec<f32>> {
    check_dims(src.len(), channels, h, w, out_h, out_w)?;
    let mut tmp = if out_w != w {
        let t = taps_bilinear_aa(w, out_w);
        let mut tmp = vec![0f32; channels * h * out_w];
        for c in 0..channels {
            for y in 0..h {
                let row = &src[(c * h + y) * w..][..w];
                let dst = &mut tmp[(c * h + y) * out_w..][..out_w];
                for (x, d) in dst.iter_mut().enumerate() {
                    let ws = &t.weights[x * t.ksize..][..t.len[x]];
                    let s = &row[t.start[x]..][..t.len[x]];
                    let mut acc = s[0] * ws[0];
                    for j in 1..ws.len() {
                        acc += s[j] * ws[j];
                    }
                    *d = acc;
                }
            }
        }
        tmp
    } else {
        src.to_vec()
    };
    if out_h != h {
        let t = taps_bilinear_aa(h, out_h);
        let mut out = vec![0f32; channels * out_h * out_w];
        for c in 0..channels {
            let plane = &tmp[c * h * out_w..][..h * out_w];
            for y in 0..out_h {
                let ws = &t.weights[y * t.ksize..][..t.len[y]];
                let dst = &mut out[(c * out_h + y) * out_w..][..out_w];
                for (x, d) in dst.iter_mut().enumerate() {
                    let mut acc = plane[t.start[y] * out_w + x] * ws[0];
                    for (j, wj) in ws.iter().enumerate().skip(1) {
                        acc += plane[(t.start[y] + j) * out_w + x] * wj;
                    }
                    *d = acc;
                }
            }
        }
        tmp = out;
    }
    Ok(tmp)
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's bicubic taps (`precompute_coeffs` + `normalize_coeffs_8bpc`).
fn taps_bicubic_pil(in_size: usize, out_size: usize) -> (Vec<usize>, Vec<usize>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = libm::ceil(support) as usize * 2 + 1;
    let mut start = vec![0; out_size];
    let mut len = vec![0; out_size];
    let mut kk = vec![0i32; out_size * ksize];
    let mut pre = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let n = (xmax.max(0) as usize).min(ksize);
        let mut ww = 0.0;
        for (x, p) in pre.iter_mut().enumerate().take(n) {
            let w = bicubic_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *p = w;
            ww += w;
        }
        for (x, p) in pre.iter().enumerate().take(n) {
            let v = if ww != 0.0 { p / ww } else { *p };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        start[xx] = xmin as usize;
        len[xx] = n;
    }
    (start, len, kk, ksize)
}

fn clip8(ss: i64) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved `[H, W, C]` u8 pixels with Pillow's `Image.resize(size,
/// BICUBIC)` (two passes, horizontal first, each rounded to u8 in fixed point).
pub fn resize_bicubic_pil_u8(
    src: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<Vec<u8>> {
    check_dims(src.len(), channels, h, w, out_h, out_w)?;
    let (vstart, vlen, vk, vks) = taps_bicubic_pil(h, out_h);
    let need_h = out_w != w;
    let need_v = out_h != h;
    // Rows of the source that the vertical pass reads.
    let (y0, y1) = if need_v {
        (vstart[0], vstart[out_h - 1] + vlen[out_h - 1])
    } else {
        (0, h)
    };
    let tmp: Vec<u8> = if need_h {
        let (start, len, kk, ks) = taps_bicubic_pil(w, out_w);
        let rows = y1 - y0;
        let mut tmp = vec![0u8; rows * out_w * channels];
        for yy in 0..rows {
            let row = &src[(yy + y0) * w * channels..][..w * channels];
            for xx in 0..out_w {
                let k = &kk[xx * ks..][..len[xx]];
                for c in 0..channels {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, kv) in k.iter().enumerate() {
                        ss += row[(x + start[xx]) * channels + c] as i64 * *kv as i64;
                    }
                    tmp[(yy * out_w + xx) * channels + c] = clip8(ss);
                }
            }
        }
        tmp
    } else {
        src[y0 * w * channels..y1 * w * channels].to_vec()
    };
    if !need_v {
        return Ok(tmp);
    }
    let mut out = vec![0u8; out_h * out_w * channels];
    for yy in 0..out_h {
        let k = &vk[yy * vks..][..vlen[yy]];
        let first = vstart[yy] - y0;
        for xx in 0..out_w {
            for c in 0..channels {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (y, kv) in k.iter().enumerate() {
                    ss += tmp[((first + y) * out_w + xx) * channels + c] as i64 * *kv as i64;
                }
                out[(yy * out_w + xx) * channels + c] = clip8(ss);
            }
        }
    }
    Ok(out)
}

fn check_dims(len: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<()> {
    if c == 0 || h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(Error::invalid(alloc::format!(
            "empty image: {c} channels, {h}x{w} -> {oh}x{ow}"
        )));
    }
    let need = c.checked_mul(h).and_then(|v| v.checked_mul(w));
    if need != Some(len) {
        return Err(Error::invalid(alloc::format!(
            "buffer holds {len} values, {h}x{w}x{c} needs {}",
            need.map_or("more than usize::MAX".into(), |n| alloc::format!("{n}"))
        )));
    }
    Ok(())
}

/// The image predictor's input: u8 RGB `[H, W, 3]` → `/255` → antialiased
/// bilinear to `size`×`size` → ImageNet normalisation, planar `[3, size, size]`.
pub fn preprocess_rgb_u8(rgb: &[u8], h: usize, w: usize, size: usize) -> Result<Vec<f32>> {
    check_dims(rgb.len(), 3, h, w, size, size)?;
    let mut planar = vec![0f32; 3 * h * w];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planar[c * h * w + i] = px[c] as f32 / 255.0;
        }
    }
    let mut out = resize_bilinear_aa_f32(&planar, 3, h, w, size, size)?;
    normalize_planar(&mut out, size * size);
    Ok(out)
}

/// A single-channel slice already mapped to `0..1` (e.g. a windowed CT slice),
/// as the image predictor would see its grey RGB version: `[3, size, size]`.
pub fn preprocess_grey_f32(grey: &[f32], h: usize, w: usize, size: usize) -> Result<Vec<f32>> {
    check_dims(grey.len(), 1, h, w, size, size)?;
    if let Some(bad) = grey.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(alloc::format!(
            "non-finite pixel value {bad}"
        )));
    }
    let resized = resize_bilinear_aa_f32(grey, 1, h, w, size, size)?;
    let n = size * size;
    let mut out = vec![0f32; 3 * n];
    for c in 0..3 {
        out[c * n..(c + 1) * n].copy_from_slice(&resized);
    }
    normalize_planar(&mut out, n);
    Ok(out)
}

/// The video predictor's frame input: u8 RGB `[H, W, 3]` → PIL bicubic resize
/// → `/255` (in f64, as numpy) → ImageNet normalisation, planar `[3, size, size]`.
pub fn preprocess_video_frame_u8(rgb: &[u8], h: usize, w: usize, size: usize) -> Result<Vec<f32>> {
    let resized = resize_bicubic_pil_u8(rgb, 3, h, w, size, size)?;
    let n = size * size;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (px[c] as f64 / 255.0) as f32;
        }
    }
    normalize_planar(&mut out, n);
    Ok(out)
}

fn normalize_planar(x: &mut [f32], plane: usize) {
    for c in 0..3 {
        for v in &mut x[c * plane..(c + 1) * plane] {
            *v = (*v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
}

/// Maps prompt coordinates from original pixels to model input pixels
/// (`SAM2Transforms.transform_coords` with `normalize=True`): `x·S/W`, `y·S/H`.
pub fn transform_coords(xy: [f32; 2], orig_hw: [usize; 2], size: usize) -> [f32; 2] {
    [
        xy[0] / orig_hw[1] as f32 * size as f32,
        xy[1] / orig_hw[0] as f32 * size as f32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aa_identity_and_constant() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear_aa_f32(&src, 1, 3, 4, 3, 4).unwrap(), src);
        let ones = vec![0.7f32; 2 * 9 * 11];
        let r = resize_bilinear_aa_f32(&ones, 2, 9, 11, 4, 5).unwrap();
        assert!(r.iter().all(|v| (v - 0.7).abs() < 1e-6));
    }

    #[test]
    fn aa_halving_averages_pairs() {
        // Downscale by exactly 2: the triangle filter of support 2 gives
        // weights 1/8, 3/8, 3/8, 1/8 around each output pixel (renormalised at borders).
        let src: Vec<f32> = vec![0., 8., 16., 24., 32., 40., 48., 56.];
        let r = resize_bilinear_aa_f32(&src, 1, 1, 8, 1, 4).unwrap();
        assert!((r[1] - (0.125 * 8. + 0.375 * 16. + 0.375 * 24. + 0.125 * 32.)).abs() < 1e-5);
        assert!((r[0] - (0.375 * 0. + 0.375 * 8. + 0.125 * 16.) / 0.875).abs() < 1e-5);
    }

    #[test]
    fn pil_bicubic_keeps_constants_and_identity() {
        let img = vec![200u8; 5 * 7 * 3];
        assert!(resize_bicubic_pil_u8(&img, 3, 5, 7, 9, 4)
            .unwrap()
            .iter()
            .all(|&v| v == 200));
        let src: Vec<u8> = (0..30).map(|v| (v * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic_pil_u8(&src, 3, 2, 5, 2, 5).unwrap(), src);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(resize_bilinear_aa_f32(&[0.0; 5], 1, 2, 3, 4, 4).is_err());
        assert!(preprocess_rgb_u8(&[0; 12], 2, 2, 0).is_err());
        assert!(preprocess_grey_f32(&[f32::NAN; 4], 2, 2, 4).is_err());
    }
}
