//! The slices of a volume's voxel grid along an axis, and prompt coordinates
//! mapped onto them: voxel indices or physical LPS millimetres to a slice and
//! a pixel, checked against the volume.

use crate::error::{Error, Result};
use crate::medical::slicing::{self, Axis};
use crate::medical::{Geometry, Volume};

/// A voxel grid (size and placement in patient space) cut into slices along
/// one index axis.
///
/// Slice `z` holds the voxels whose index on `axis` is `z`; pixel `(x, y)` of
/// a slice is column `x` (the lower remaining index axis) and row `y` (the
/// higher one): for axis `k`, `x = i` and `y = j`; for axis `j`, `x = i`,
/// `y = k`; for axis `i`, `x = j`, `y = k`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumeGrid {
    /// Voxels along index axes `i`, `j`, `k`.
    pub dims: [usize; 3],
    /// Placement of the voxels in patient space (LPS, mm).
    pub geometry: Geometry,
    /// The slicing axis.
    pub axis: Axis,
}

impl VolumeGrid {
    /// The grid of `volume` cut along `axis`.
    pub fn of(volume: &Volume, axis: Axis) -> VolumeGrid {
        VolumeGrid {
            dims: volume.dims(),
            geometry: *volume.geometry(),
            axis,
        }
    }

    /// Number of slices.
    pub fn num_slices(&self) -> usize {
        slicing::num_slices(self.dims, self.axis)
    }

    /// Slice size `(width, height)`: columns and rows.
    pub fn slice_size(&self) -> (usize, usize) {
        slicing::slice_size(self.dims, self.axis)
    }

    /// In-plane pixel spacing `[column, row]` in mm.
    pub fn pixel_spacing(&self) -> [f64; 2] {
        let (c, r) = self.axis.in_plane();
        [self.geometry.spacing[c], self.geometry.spacing[r]]
    }

    /// Checks that `z` is a whole slice number of the volume.
    pub fn slice_index(&self, z: f64) -> Result<usize> {
        let n = self.num_slices();
        let r = z.round();
        if (r - z).abs() > 1e-6 || r < 0.0 || r >= n as f64 {
            return Err(Error::volume(format!(
                "slice {z} is not one of 0..{} along axis {}",
                n.saturating_sub(1),
                self.axis as usize
            )));
        }
        Ok(r as usize)
    }

    /// Checks that pixel `(x, y)` lies on a slice (half a pixel of slack at
    /// the edges) and clamps it to the pixel centres.
    pub fn pixel(&self, x: f64, y: f64) -> Result<[f32; 2]> {
        let (w, h) = self.slice_size();
        let inside = |v: f64, n: usize| v >= -0.5 && v <= n as f64 - 0.5;
        if !inside(x, w) || !inside(y, h) {
            return Err(Error::volume(format!(
                "pixel ({x:.1}, {y:.1}) is not on the {w}x{h} slice (X 0..{}, Y 0..{})",
                w - 1,
                h - 1
            )));
        }
        Ok([
            x.clamp(0.0, (w - 1) as f64) as f32,
            y.clamp(0.0, (h - 1) as f64) as f32,
        ])
    }

    /// A box on slice `z` from two opposite pixel corners `[x0, y0, x1, y1]`
    /// (in any order), checked and clamped: the slice and `[x0, y0, x1, y1]`
    /// with `x0 <= x1`, `y0 <= y1`.
    pub fn voxel_box(&self, z: f64, corners: [f64; 4]) -> Result<(usize, [f32; 4])> {
        let (x0, x1) = (corners[0].min(corners[2]), corners[0].max(corners[2]));
        let (y0, y1) = (corners[1].min(corners[3]), corners[1].max(corners[3]));
        let z = self.slice_index(z)?;
        let [x0, y0] = self.pixel(x0, y0)?;
        let [x1, y1] = self.pixel(x1, y1)?;
        Ok((z, [x0, y0, x1, y1]))
    }

    /// A click at pixel `(x, y)` of slice `z`, checked and clamped.
    pub fn voxel_point(&self, z: f64, x: f64, y: f64) -> Result<(usize, [f32; 2])> {
        let z = self.slice_index(z)?;
        Ok((z, self.pixel(x, y)?))
    }

    /// A box from two opposite physical LPS corners (mm), on the slice nearest
    /// their middle: the corners are mapped to voxel indices, so with a rotated
    /// direction matrix the box is the index-space box they span.
    pub fn physical_box(&self, corner0: [f64; 3], corner1: [f64; 3]) -> Result<(usize, [f32; 4])> {
        let a = self.geometry.physical_to_index(corner0)?;
        let b = self.geometry.physical_to_index(corner1)?;
        let fb = slicing::voxel_box_to_slice_box(self.dims, self.axis, a, b)?;
        let z = (fb.first_slice + fb.last_slice) / 2;
        let [x0, y0] = self.pixel(fb.x0, fb.y0)?;
        let [x1, y1] = self.pixel(fb.x1, fb.y1)?;
        Ok((z, [x0, y0, x1, y1]))
    }

    /// A physical LPS point (mm) on the nearest slice: the slice and the
    /// continuous pixel coordinates `(x, y)` (pixel centres at integers; not
    /// checked against the slice's extent).
    pub fn locate(&self, point: [f64; 3]) -> Result<(usize, f64, f64)> {
        let idx = self.geometry.physical_to_index(point)?;
        let fp = slicing::voxel_to_slice_point(self.dims, self.axis, idx)?;
        Ok((fp.slice, fp.x, fp.y))
    }

    /// A click at a physical LPS point (mm), on the nearest slice, checked
    /// and clamped as [`VolumeGrid::pixel`].
    pub fn physical_point(&self, point: [f64; 3]) -> Result<(usize, [f32; 2])> {
        let (z, x, y) = self.locate(point)?;
        Ok((z, self.pixel(x, y)?))
    }

    /// The voxel of pixel `(x, y)` on slice `z` (linear index, `i` fastest).
    pub fn voxel_offset(&self, z: usize, x: usize, y: usize) -> usize {
        let mut idx = [0usize; 3];
        let (c, r) = self.axis.in_plane();
        idx[self.axis as usize] = z;
        idx[c] = x;
        idx[r] = y;
        idx[0] + self.dims[0] * (idx[1] + self.dims[1] * idx[2])
    }
}
