//! Mask post-processing of the official `sam2.utils.misc`: connected
//! components ([`connected_components`], the official
//! `get_connected_components`) and small-hole filling
//! ([`fill_holes_in_mask_scores`]), on plain slices so that they work
//! without `std`.
//!
//! Written by hand: the official code labels components with its CUDA
//! extension (`sam2._C`); the labelling crates (`imageproc`) are 2-D only,
//! need `std` and an image stack, while the volume clean-up
//! ([`crate::volume::Segmentation::keep_largest_component`]) needs 3-D
//! components. One flood fill serves both.

use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Connected components of a mask (see [`connected_components`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    /// Component of every voxel, numbered from 1 in scan order (x fastest);
    /// 0 where the mask is off.
    pub labels: Vec<u32>,
    /// Voxels of component `l` at `sizes[l - 1]`.
    pub sizes: Vec<usize>,
}

impl Components {
    /// Voxels in the component of voxel `i` (0 where the mask is off).
    pub fn area_at(&self, i: usize) -> usize {
        match self.labels[i] {
            0 => 0,
            l => self.sizes[l as usize - 1],
        }
    }
}

/// The connected components of `mask` on a `[nx, ny, nz]` grid (x fastest),
/// every voxel joined to its 26 neighbours: in one slice (`nz` = 1) that is
/// 8-connectivity, as the official `get_connected_components`.
pub fn connected_components(mask: &[bool], dims: [usize; 3]) -> Result<Components> {
    let [nx, ny, nz] = dims;
    let n = nx
        .checked_mul(ny)
        .and_then(|v| v.checked_mul(nz))
        .ok_or_else(|| Error::invalid(alloc::format!("grid {dims:?} overflows")))?;
    if mask.len() != n {
        return Err(Error::invalid(alloc::format!(
            "mask holds {} values, grid {dims:?} has {n}",
            mask.len()
        )));
    }
    if u32::try_from(n).is_err() {
        return Err(Error::invalid(alloc::format!(
            "grid {dims:?} has more than 2^32 voxels"
        )));
    }
    let mut labels = alloc::vec![0u32; n];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..n {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        sizes.push(0usize);
        let label = sizes.len() as u32;
        labels[start] = label;
        stack.push(start);
        let mut size = 0usize;
        while let Some(p) = stack.pop() {
            size += 1;
            let (x, y, z) = (p % nx, (p / nx) % ny, p / (nx * ny));
            for qz in z.saturating_sub(1)..(z + 2).min(nz) {
                for qy in y.saturating_sub(1)..(y + 2).min(ny) {
                    for qx in x.saturating_sub(1)..(x + 2).min(nx) {
                        let q = qx + nx * (qy + ny * qz);
                        if mask[q] && labels[q] == 0 {
                            labels[q] = label;
                            stack.push(q);
                        }
                    }
                }
            }
        }
        sizes[label as usize - 1] = size;
    }
    Ok(Components { labels, sizes })
}

/// Checks that `len` values are a stack of `[h, w]` planes; the plane size.
fn plane_size(len: usize, h: usize, w: usize) -> Result<usize> {
    let plane = h.saturating_mul(w);
    if plane == 0 || !len.is_multiple_of(plane) {
        return Err(Error::invalid(alloc::format!(
            "mask of {len} values is not a stack of {h}x{w} planes"
        )));
    }
    Ok(plane)
}

/// The pixels of one `[h, w]` plane that lie in an 8-connected component of
/// pixels where `select` holds, of at most `max_area` pixels (the official
/// `(labels > 0) & (areas <= max_area)` on `get_connected_components`).
pub fn small_components(
    plane: &[f32],
    h: usize,
    w: usize,
    select: impl Fn(f32) -> bool,
    max_area: f64,
) -> Result<Vec<bool>> {
    let on: Vec<bool> = plane.iter().map(|&v| select(v)).collect();
    let comp = connected_components(&on, [w, h, 1])?;
    Ok((0..on.len())
        .map(|i| comp.labels[i] != 0 && comp.area_at(i) as f64 <= max_area)
        .collect())
}

/// The official `fill_holes_in_mask_scores` (the video predictor's
/// `fill_hole_area` post-processing): in each `[h, w]` plane of `mask`
/// (logits), every 8-connected component of background (`<= 0`) of at most
/// `max_area` pixels becomes foreground with the score 0.1. Components at the
/// border count as holes too, as in the official code. `max_area` 0 leaves
/// the mask as it is.
pub fn fill_holes_in_mask_scores(
    mask: &mut [f32],
    h: usize,
    w: usize,
    max_area: usize,
) -> Result<()> {
    let plane = plane_size(mask.len(), h, w)?;
    if max_area == 0 {
        return Ok(());
    }
    for m in mask.chunks_exact_mut(plane) {
        let holes = small_components(m, h, w, |v| v <= 0.0, max_area as f64)?;
        for (v, hole) in m.iter_mut().zip(holes) {
            if hole {
                *v = 0.1;
            }
        }
    }
    Ok(())
}

/// The official image predictor's clean-up of its low-resolution masks
/// (`SAM2Transforms.postprocess_masks`, before upsampling): in each `[h, w]`
/// plane, background components (`<= threshold`) of at most
/// `max_hole_area` pixels become `threshold + 10`, and foreground components
/// (`> threshold`) of at most `max_sprinkle_area` pixels `threshold - 10`.
/// Both are found on the masks as given (the official code labels the
/// sprinkles before filling the holes). An area `<= 0` skips its step.
pub fn remove_small_regions(
    mask: &mut [f32],
    h: usize,
    w: usize,
    threshold: f32,
    max_hole_area: f32,
    max_sprinkle_area: f32,
) -> Result<()> {
    let plane = plane_size(mask.len(), h, w)?;
    for m in mask.chunks_exact_mut(plane) {
        let pick = |on: bool, area: f32, select: &dyn Fn(f32) -> bool| {
            if on {
                small_components(m, h, w, select, f64::from(area)).map(Some)
            } else {
                Ok(None)
            }
        };
        let holes = pick(max_hole_area > 0.0, max_hole_area, &|v| v <= threshold)?;
        let sprinkles = pick(max_sprinkle_area > 0.0, max_sprinkle_area, &|v| {
            v > threshold
        })?;
        for (i, v) in m.iter_mut().enumerate() {
            if holes.as_ref().is_some_and(|x| x[i]) {
                *v = threshold + 10.0;
            }
            if sprinkles.as_ref().is_some_and(|x| x[i]) {
                *v = threshold - 10.0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The component area of every voxel by its own flood fill (an
    /// independent, quadratic reference: no labels shared between voxels).
    fn areas_by_flood(mask: &[bool], [nx, ny, _]: [usize; 3]) -> Vec<usize> {
        let coord = |p: usize| (p % nx, (p / nx) % ny, p / (nx * ny));
        let touch = |a: usize, b: usize| {
            let ((ax, ay, az), (bx, by, bz)) = (coord(a), coord(b));
            ax.abs_diff(bx) <= 1 && ay.abs_diff(by) <= 1 && az.abs_diff(bz) <= 1
        };
        (0..mask.len())
            .map(|s| {
                if !mask[s] {
                    return 0;
                }
                let mut seen = alloc::vec![false; mask.len()];
                seen[s] = true;
                let mut todo = alloc::vec![s];
                while let Some(p) = todo.pop() {
                    for q in 0..mask.len() {
                        if mask[q] && !seen[q] && touch(p, q) {
                            seen[q] = true;
                            todo.push(q);
                        }
                    }
                }
                seen.iter().filter(|&&b| b).count()
            })
            .collect()
    }

    /// A fixed pseudo-random mask with about `fill`/256 voxels on.
    fn lcg_mask(n: usize, seed: u64, fill: u64) -> Vec<bool> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) < fill
            })
            .collect()
    }

    #[test]
    fn components_match_a_flood_fill_per_voxel() {
        for (dims, seed) in [([13, 9, 1], 1), ([7, 6, 5], 2), ([1, 17, 3], 3)] {
            for fill in [60, 128, 200] {
                let mask = lcg_mask(dims.iter().product(), seed, fill);
                let comp = connected_components(&mask, dims).unwrap();
                let want = areas_by_flood(&mask, dims);
                let got: Vec<usize> = (0..mask.len()).map(|i| comp.area_at(i)).collect();
                assert_eq!(got, want, "{dims:?} fill {fill}");
                assert_eq!(
                    comp.sizes.iter().sum::<usize>(),
                    mask.iter().filter(|&&b| b).count()
                );
                // Labels in scan order: each new label first appears after the previous.
                let firsts: Vec<usize> = (1..=comp.sizes.len() as u32)
                    .map(|l| comp.labels.iter().position(|&x| x == l).unwrap())
                    .collect();
                assert!(firsts.windows(2).all(|p| p[0] < p[1]));
            }
        }
    }

    #[test]
    fn bad_grids_are_errors() {
        assert!(connected_components(&[true; 5], [2, 2, 1]).is_err());
        assert!(connected_components(&[], [usize::MAX, 2, 1]).is_err());
        let mut m = [0f32; 6];
        assert!(fill_holes_in_mask_scores(&mut m, 4, 2, 8).is_err());
        assert!(fill_holes_in_mask_scores(&mut m, 0, 2, 8).is_err());
    }

    #[test]
    fn fills_background_components_up_to_max_area() {
        // 6 x 7 plane of foreground (1.0) with background holes:
        // a 2-pixel diagonal pair (8-connected: one hole of 2), a 3-pixel
        // hole, and a 1-pixel hole at the border.
        let (h, w) = (6, 7);
        let mut m = vec![1.0f32; h * w];
        let bg = [(1, 1), (2, 2), (1, 4), (1, 5), (2, 5), (5, 0)];
        for &(y, x) in &bg {
            m[y * w + x] = -0.5;
        }
        m[4 * w + 3] = 0.0; // zero counts as background (`<= 0`)
        m[3 * w + 6] = f32::NAN; // NaN is not background

        let mut two = m.clone();
        fill_holes_in_mask_scores(&mut two, h, w, 2).unwrap();
        for (i, (&a, &b)) in m.iter().zip(&two).enumerate() {
            let (y, x) = (i / w, i % w);
            let filled = matches!((y, x), (1, 1) | (2, 2) | (5, 0) | (4, 3));
            if filled {
                assert_eq!(b, 0.1, "({y}, {x})");
            } else {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "({y}, {x}): {a} -> {b}"
                );
            }
        }
        let mut three = m.clone();
        fill_holes_in_mask_scores(&mut three, h, w, 3).unwrap();
        assert!(bg.iter().all(|&(y, x)| three[y * w + x] == 0.1));
        let mut none = m.clone();
        fill_holes_in_mask_scores(&mut none, h, w, 0).unwrap();
        assert_eq!(none[w + 1], -0.5);
    }

    #[test]
    fn small_regions_are_removed_as_the_image_predictor_does() {
        // 5 x 6 plane, threshold 0.5: a 2-pixel background hole (0.2) inside
        // foreground (1.0), a 1-pixel foreground speck (0.9) in background
        // (-1.0), and large regions of both.
        let (h, w, thr) = (5, 6, 0.5f32);
        #[rustfmt::skip]
        let m = vec![
            1.0, 1.0, 1.0, -1.0, -1.0, -1.0,
            1.0, 0.2, 1.0, -1.0,  0.9, -1.0,
            1.0, 0.2, 1.0, -1.0, -1.0, -1.0,
            1.0, 1.0, 1.0, -1.0, -1.0, -1.0,
            1.0, 1.0, 1.0, -1.0, -1.0, -1.0,
        ];
        let mut both = m.clone();
        remove_small_regions(&mut both, h, w, thr, 2.0, 1.0).unwrap();
        let mut want = m.clone();
        want[w + 1] = thr + 10.0;
        want[2 * w + 1] = thr + 10.0;
        want[w + 4] = thr - 10.0;
        assert_eq!(both, want);
        // Areas below the regions' sizes, or 0, change nothing.
        let mut none = m.clone();
        remove_small_regions(&mut none, h, w, thr, 1.0, 0.0).unwrap();
        assert_eq!(none, m);
        // The sprinkles are found on the mask as given: a one-pixel speck
        // inside an 8-pixel ring of background inside foreground. The ring is
        // a hole (filled), the speck a sprinkle of the original mask
        // (removed), although after the filling it would join the foreground.
        let mut ring = vec![1.0f32; 25];
        for y in 1..4 {
            for x in 1..4 {
                ring[y * 5 + x] = if (y, x) == (2, 2) { 1.0 } else { -1.0 };
            }
        }
        let orig = ring.clone();
        remove_small_regions(&mut ring, 5, 5, thr, 8.0, 1.0).unwrap();
        for (i, (&a, &b)) in orig.iter().zip(&ring).enumerate() {
            let want = match (i == 12, a < 0.0) {
                (true, _) => thr - 10.0,
                (false, true) => thr + 10.0,
                (false, false) => a,
            };
            assert_eq!(b, want, "pixel {i}");
        }
    }

    #[test]
    fn planes_are_filled_separately() {
        // Two 3 x 3 planes: a background column of 3 in the first plane
        // continues as a background column of 3 in the second; each is a
        // component of 3 (planes never join), filled with max_area 3.
        let mut m = vec![1.0f32; 18];
        for y in 0..3 {
            m[y * 3] = -1.0;
            m[9 + y * 3] = -1.0;
        }
        let mut a = m.clone();
        fill_holes_in_mask_scores(&mut a, 3, 3, 3).unwrap();
        assert!((0..3).all(|y| a[y * 3] == 0.1 && a[9 + y * 3] == 0.1));
        let mut b = m.clone();
        fill_holes_in_mask_scores(&mut b, 3, 3, 2).unwrap();
        assert_eq!(b, m);
    }
}
