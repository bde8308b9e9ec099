//! The montage: prompted slices with the masks and prompts drawn in.

use super::*;

/// Colours of objects 1, 2, ... in montages.
pub const PALETTE: [[u8; 3]; 8] = [
    [255, 60, 60],
    [60, 150, 255],
    [60, 220, 90],
    [255, 200, 0],
    [210, 70, 255],
    [0, 220, 220],
    [255, 130, 30],
    [160, 255, 120],
];

/// Stretches an image vertically by `scale` (nearest row), e.g. the ratio of
/// row to column spacing so anisotropic slices show their true shape; `scale`
/// within 1% of 1 (or not finite and positive) leaves it as is.
pub fn stretch_rows(img: RgbImage, scale: f64) -> RgbImage {
    if !(scale.is_finite() && scale > 0.0) || (scale - 1.0).abs() < 0.01 {
        return img;
    }
    let height = ((img.height as f64 * scale).round() as usize).max(1);
    let row = 3 * img.width;
    let mut data = Vec::with_capacity(row * height);
    for r in 0..height {
        let src = (((r as f64 + 0.5) / scale) as usize).min(img.height - 1);
        data.extend_from_slice(&img.data[src * row..(src + 1) * row]);
    }
    RgbImage {
        width: img.width,
        height,
        data,
    }
}

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `3 * width * height` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let o = 3 * (y as usize * self.width + x as usize);
            self.data[o..o + 3].copy_from_slice(&c);
        }
    }
}

/// A montage of the slices `key - neighbours ..= key + neighbours` (those that
/// exist) side by side: each slice in grey with every object's mask blended
/// in its [`PALETTE`] colour and outlined, the prompt boxes drawn as
/// rectangles and clicks as crosses (green object, red background); the key
/// slice is framed in white. Slices are shown as stored (no flip), one
/// image pixel per slice pixel (see [`stretch_rows`] for anisotropic slices).
pub fn montage(
    slices: &Slices,
    seg: &Segmentation,
    prompts: &[ObjectPrompts],
    key: usize,
    neighbours: usize,
) -> RgbImage {
    let (w, h) = (slices.width, slices.height);
    let n = slices.len();
    let key = key.min(n.saturating_sub(1));
    let lo = key.saturating_sub(neighbours);
    let hi = (key + neighbours).min(n.saturating_sub(1));
    let gap = 4usize;
    let count = hi - lo + 1;
    let mut img = RgbImage {
        width: count * w + (count - 1) * gap,
        height: h,
        data: vec![24; 3 * (count * w + (count - 1) * gap) * h],
    };
    let thick = (w.max(h) / 256).max(1) as i64;
    for (pi, z) in (lo..=hi).enumerate() {
        let ox = pi * (w + gap);
        for y in 0..h {
            for x in 0..w {
                let g = slices.images[z][y * w + x];
                let o = 3 * (y * img.width + ox + x);
                img.data[o..o + 3].copy_from_slice(&[g, g, g]);
            }
        }
        for (oi, &id) in seg.obj_ids.iter().enumerate() {
            let Some(m) = seg.masks.get(oi).and_then(|m| m[z].as_ref()) else {
                continue;
            };
            let c = PALETTE[(id as usize).wrapping_sub(1) % PALETTE.len()];
            for y in 0..h {
                for x in 0..w {
                    if m[y * w + x] == 0 {
                        continue;
                    }
                    let edge = x == 0
                        || y == 0
                        || x + 1 == w
                        || y + 1 == h
                        || m[y * w + x - 1] == 0
                        || m[y * w + x + 1] == 0
                        || m[(y - 1) * w + x] == 0
                        || m[(y + 1) * w + x] == 0;
                    let o = 3 * (y * img.width + ox + x);
                    for (px, &ck) in img.data[o..o + 3].iter_mut().zip(&c) {
                        *px = if edge {
                            ck
                        } else {
                            (0.55 * *px as f32 + 0.45 * ck as f32).round() as u8
                        };
                    }
                }
            }
        }
        for o in prompts {
            for sp in o.slices.iter().filter(|s| s.slice == z) {
                if let Some([x0, y0, x1, y1]) = sp.bbox {
                    let (x0, y0, x1, y1) = (
                        x0.round() as i64,
                        y0.round() as i64,
                        x1.round() as i64,
                        y1.round() as i64,
                    );
                    for t in 0..thick {
                        for x in x0 - t..=x1 + t {
                            img.put(ox as i64 + x, y0 - t, [255, 255, 0]);
                            img.put(ox as i64 + x, y1 + t, [255, 255, 0]);
                        }
                        for y in y0 - t..=y1 + t {
                            img.put(ox as i64 + x0 - t, y, [255, 255, 0]);
                            img.put(ox as i64 + x1 + t, y, [255, 255, 0]);
                        }
                    }
                }
                for (p, &l) in sp.points.iter().zip(&sp.labels) {
                    let (px, py) = (p[0].round() as i64, p[1].round() as i64);
                    let col = if l == 1 { [0, 255, 0] } else { [255, 0, 0] };
                    let r = 3 * thick + 2;
                    for d in -r..=r {
                        for t in 0..thick {
                            img.put(ox as i64 + px + d, py + t, col);
                            img.put(ox as i64 + px + t, py + d, col);
                        }
                    }
                }
            }
        }
        if z == key {
            let (x1, y1) = ((ox + w - 1) as i64, (h - 1) as i64);
            for t in 0..thick {
                for x in ox as i64..=x1 {
                    img.put(x, t, [255, 255, 255]);
                    img.put(x, y1 - t, [255, 255, 255]);
                }
                for y in 0..=y1 {
                    img.put(ox as i64 + t, y, [255, 255, 255]);
                    img.put(x1 - t, y, [255, 255, 255]);
                }
            }
        }
    }
    img
}
