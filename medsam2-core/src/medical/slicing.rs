//! A volume as an ordered sequence of 2-D slices, masks back into a label
//! volume, and prompts from 3-D positions to slice pixels.
//!
//! # Slice convention
//! Slices are taken along one index [`Axis`]; slice `f` holds the voxels whose
//! index on that axis is `f`, so slices are ordered by increasing index. The two
//! remaining index axes, in increasing order, give the columns (`x`, the lower
//! axis) and the rows (`y`, the higher axis): pixel `(x, y)` is `data[y * width + x]`.
//!
//! | axis | slice index | column `x` | row `y` | `width x height` |
//! |---|---|---|---|---|
//! | [`Axis::K`] | `k` | `i` | `j` | `nx x ny` |
//! | [`Axis::J`] | `j` | `i` | `k` | `nx x nz` |
//! | [`Axis::I`] | `i` | `j` | `k` | `ny x nz` |
//!
//! For the `.npz` samples and most axial CT, [`Axis::K`] slices are the axial
//! slices exactly as `imgs[k]` (`H x W`) in NumPy. Slices are not flipped for
//! display. Pixel coordinates are voxel indices: pixel `(x, y)` has its centre at
//! `(x, y)`, the convention SAM prompts use. Resizing to the model's input size
//! is left to the model code.

use super::error::{MedicalError, Result};
use super::volume::{with_voxels, Geometry, Volume, VoxelData};

/// An index axis of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Index axis `i` (first, fastest in memory).
    I = 0,
    /// Index axis `j`.
    J = 1,
    /// Index axis `k` (slowest; the slice axis of axial CT).
    K = 2,
}

impl Axis {
    /// The axis with number `n` (0, 1, 2).
    pub fn from_index(n: usize) -> Option<Axis> {
        [Axis::I, Axis::J, Axis::K].get(n).copied()
    }

    /// `(column axis, row axis)` of slices along `self`.
    pub fn in_plane(self) -> (usize, usize) {
        match self {
            Axis::I => (1, 2),
            Axis::J => (0, 2),
            Axis::K => (0, 1),
        }
    }
}

/// A 2-D image, row-major: pixel `(x, y)` is `data[y * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceImage<T> {
    /// Number of columns.
    pub width: usize,
    /// Number of rows.
    pub height: usize,
    /// `width * height` pixels, row by row.
    pub data: Vec<T>,
}

impl<T: Copy> SliceImage<T> {
    /// Pixel `(x, y)`, `None` outside.
    pub fn get(&self, x: usize, y: usize) -> Option<T> {
        (x < self.width && y < self.height).then(|| self.data[y * self.width + x])
    }
}

/// Number of slices along `axis`.
pub fn num_slices(dims: [usize; 3], axis: Axis) -> usize {
    dims[axis as usize]
}

/// `(width, height)` of slices along `axis`.
pub fn slice_size(dims: [usize; 3], axis: Axis) -> (usize, usize) {
    let (c, r) = axis.in_plane();
    (dims[c], dims[r])
}

/// Linear voxel offset of pixel `(x, y)` of slice `f` along `axis`.
fn voxel_offset(dims: [usize; 3], axis: Axis, f: usize, x: usize, y: usize) -> usize {
    let mut idx = [0usize; 3];
    let (c, r) = axis.in_plane();
    idx[axis as usize] = f;
    idx[c] = x;
    idx[r] = y;
    idx[0] + dims[0] * (idx[1] + dims[1] * idx[2])
}

/// Slice `index` along `axis` of voxels `data` laid out as `dims`.
pub fn extract_slice<T: Copy>(
    data: &[T],
    dims: [usize; 3],
    axis: Axis,
    index: usize,
) -> Result<SliceImage<T>> {
    if data.len() != dims.iter().product::<usize>() {
        return Err(MedicalError::ShapeMismatch(format!(
            "{} voxels for dims {dims:?}",
            data.len()
        )));
    }
    if index >= num_slices(dims, axis) {
        return Err(MedicalError::InvalidArgument(format!(
            "slice {index} out of range along {axis:?} ({} slices)",
            num_slices(dims, axis)
        )));
    }
    let (w, h) = slice_size(dims, axis);
    let mut out = Vec::with_capacity(w * h);
    if axis == Axis::K {
        let start = index * w * h;
        out.extend_from_slice(&data[start..start + w * h]);
    } else {
        for y in 0..h {
            for x in 0..w {
                out.push(data[voxel_offset(dims, axis, index, x, y)]);
            }
        }
    }
    Ok(SliceImage {
        width: w,
        height: h,
        data: out,
    })
}

/// All slices along `axis` of a `u8` volume (map intensities first with
/// [`intensity::to_u8`](super::intensity::to_u8)).
pub fn slices_u8(volume: &Volume, axis: Axis) -> Result<Vec<SliceImage<u8>>> {
    let data = volume.data().as_u8().ok_or_else(|| {
        MedicalError::InvalidArgument(format!(
            "slices_u8 needs u8 voxels, got {}; map intensities with intensity::to_u8 first",
            volume.data_type().name()
        ))
    })?;
    (0..num_slices(volume.dims(), axis))
        .map(|f| extract_slice(data, volume.dims(), axis, f))
        .collect()
}

/// All slices along `axis`, voxels converted to `f32`.
pub fn slices_f32(volume: &Volume, axis: Axis) -> Result<Vec<SliceImage<f32>>> {
    let data = volume.data().to_f32_vec();
    (0..num_slices(volume.dims(), axis))
        .map(|f| extract_slice(&data, volume.dims(), axis, f))
        .collect()
}

/// A grey slice as interleaved RGB bytes (`[r, g, b]` per pixel, rows in order,
/// length `3 * width * height`), the grey value in all three channels.
pub fn gray_to_rgb(slice: &SliceImage<u8>) -> Vec<u8> {
    slice.data.iter().flat_map(|&g| [g, g, g]).collect()
}

/// A point on a slice: slice number and continuous pixel coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlicePoint {
    /// Slice index along the axis.
    pub slice: usize,
    /// Column coordinate (pixel centres at integers).
    pub x: f64,
    /// Row coordinate (pixel centres at integers).
    pub y: f64,
}

/// A continuous voxel index to a slice point; the slice is the nearest slice,
/// which must lie inside the volume.
pub fn voxel_to_slice_point(dims: [usize; 3], axis: Axis, voxel: [f64; 3]) -> Result<SlicePoint> {
    let a = axis as usize;
    let f = voxel[a].round();
    if !(f >= 0.0 && f < dims[a] as f64) || voxel.iter().any(|v| !v.is_finite()) {
        return Err(MedicalError::InvalidArgument(format!(
            "voxel {voxel:?} is outside the {} slices along {axis:?}",
            dims[a]
        )));
    }
    let (c, r) = axis.in_plane();
    Ok(SlicePoint {
        slice: f as usize,
        x: voxel[c],
        y: voxel[r],
    })
}

/// A physical LPS point (mm) to a slice point of `volume`.
pub fn physical_to_slice_point(volume: &Volume, axis: Axis, point: [f64; 3]) -> Result<SlicePoint> {
    let idx = volume.physical_to_index(point)?;
    voxel_to_slice_point(volume.dims(), axis, idx)
}

/// A slice point back to a continuous voxel index.
pub fn slice_point_to_voxel(axis: Axis, p: &SlicePoint) -> [f64; 3] {
    let mut v = [0.0; 3];
    let (c, r) = axis.in_plane();
    v[axis as usize] = p.slice as f64;
    v[c] = p.x;
    v[r] = p.y;
    v
}

/// A box prompt spread over a range of slices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceBox {
    /// First slice the box covers.
    pub first_slice: usize,
    /// Last slice the box covers (inclusive).
    pub last_slice: usize,
    /// Smallest column coordinate.
    pub x0: f64,
    /// Smallest row coordinate.
    pub y0: f64,
    /// Largest column coordinate.
    pub x1: f64,
    /// Largest row coordinate.
    pub y1: f64,
}

/// A 3-D box given by two opposite corners in voxel indices, as slices plus a 2-D
/// box (the slice range is clamped to the volume; fails if it misses it).
pub fn voxel_box_to_slice_box(
    dims: [usize; 3],
    axis: Axis,
    a: [f64; 3],
    b: [f64; 3],
) -> Result<SliceBox> {
    if a.iter().chain(b.iter()).any(|v| !v.is_finite()) {
        return Err(MedicalError::InvalidArgument(
            "box corners must be finite".into(),
        ));
    }
    let ax = axis as usize;
    let n = dims[ax] as f64;
    let lo = a[ax].min(b[ax]).round().max(0.0);
    let hi = a[ax].max(b[ax]).round().min(n - 1.0);
    if lo > hi {
        return Err(MedicalError::InvalidArgument(format!(
            "box {a:?}-{b:?} misses the {} slices along {axis:?}",
            dims[ax]
        )));
    }
    let (c, r) = axis.in_plane();
    Ok(SliceBox {
        first_slice: lo as usize,
        last_slice: hi as usize,
        x0: a[c].min(b[c]),
        y0: a[r].min(b[r]),
        x1: a[c].max(b[c]),
        y1: a[r].max(b[r]),
    })
}

/// A 3-D box given by two opposite physical LPS corners (mm). The corners are
/// mapped to voxel indices first, so with a rotated direction matrix the box is
/// the index-space box spanned by the two mapped corners.
pub fn physical_box_to_slice_box(
    volume: &Volume,
    axis: Axis,
    a: [f64; 3],
    b: [f64; 3],
) -> Result<SliceBox> {
    let ia = volume.physical_to_index(a)?;
    let ib = volume.physical_to_index(b)?;
    voxel_box_to_slice_box(volume.dims(), axis, ia, ib)
}

/// Builds a label volume from per-slice, per-object masks.
///
/// Each object id is written with its label value (the id itself unless set
/// with [`LabelAssembler::set_label`]); where masks overlap, the mask added
/// last wins; label 0 clears. The result has the reference volume's dimensions
/// and geometry, and the smallest of `u8`, `u16`, `u32` that holds the labels.
#[derive(Clone, Debug)]
pub struct LabelAssembler {
    dims: [usize; 3],
    geometry: Geometry,
    axis: Axis,
    labels: Vec<u32>,
    mapping: Vec<(u32, u32)>,
}

impl LabelAssembler {
    /// An empty (all background) label volume shaped like `reference`, for masks
    /// of slices along `axis`.
    pub fn new(reference: &Volume, axis: Axis) -> LabelAssembler {
        LabelAssembler::on_grid(reference.dims(), *reference.geometry(), axis)
    }

    /// An empty (all background) label volume of `dims` voxels placed by
    /// `geometry`, for masks of slices along `axis`.
    pub fn on_grid(dims: [usize; 3], geometry: Geometry, axis: Axis) -> LabelAssembler {
        LabelAssembler {
            dims,
            geometry,
            axis,
            labels: vec![0; dims.iter().product()],
            mapping: Vec::new(),
        }
    }

    /// Uses `label` for object `object_id` in masks added from now on.
    pub fn set_label(&mut self, object_id: u32, label: u32) {
        match self.mapping.iter_mut().find(|(o, _)| *o == object_id) {
            Some(m) => m.1 = label,
            None => self.mapping.push((object_id, label)),
        }
    }

    fn label_of(&self, object_id: u32) -> u32 {
        self.mapping
            .iter()
            .find(|(o, _)| *o == object_id)
            .map_or(object_id, |m| m.1)
    }

    /// Adds the mask of `object_id` on `slice` (`true` = object; row-major,
    /// slice-sized).
    pub fn add_mask(&mut self, slice: usize, object_id: u32, mask: &[bool]) -> Result<()> {
        self.add_with(slice, object_id, mask.len(), |i| mask[i])
    }

    /// Like [`LabelAssembler::add_mask`], any non-zero byte being the object.
    pub fn add_mask_u8(&mut self, slice: usize, object_id: u32, mask: &[u8]) -> Result<()> {
        self.add_with(slice, object_id, mask.len(), |i| mask[i] != 0)
    }

    fn add_with(
        &mut self,
        slice: usize,
        object_id: u32,
        len: usize,
        on: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let (w, h) = slice_size(self.dims, self.axis);
        if len != w * h {
            return Err(MedicalError::ShapeMismatch(format!(
                "mask of {len} pixels for {w}x{h} slices"
            )));
        }
        if slice >= num_slices(self.dims, self.axis) {
            return Err(MedicalError::InvalidArgument(format!(
                "slice {slice} out of range"
            )));
        }
        let label = self.label_of(object_id);
        for y in 0..h {
            for x in 0..w {
                if on(y * w + x) {
                    let o = voxel_offset(self.dims, self.axis, slice, x, y);
                    self.labels[o] = label;
                }
            }
        }
        Ok(())
    }

    /// The label volume.
    pub fn finish(self) -> Result<Volume> {
        let max = self.labels.iter().copied().max().unwrap_or(0);
        let data = if max <= u8::MAX as u32 {
            VoxelData::U8(self.labels.iter().map(|&l| l as u8).collect())
        } else if max <= u16::MAX as u32 {
            VoxelData::U16(self.labels.iter().map(|&l| l as u16).collect())
        } else {
            VoxelData::U32(self.labels)
        };
        Volume::new(self.dims, self.geometry, data)
    }
}

/// Binary mask (`value == label`) of slice `index` of a label volume, e.g. to
/// turn a ground-truth label into a prompt.
pub fn label_slice_mask(
    volume: &Volume,
    axis: Axis,
    index: usize,
    label: f64,
) -> Result<SliceImage<bool>> {
    let mask: Vec<bool> =
        with_voxels!(volume.data(), v => v.iter().map(|&x| x as f64 == label).collect());
    extract_slice(&mask, volume.dims(), axis, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> Volume {
        // value = 100*k + 10*j + i
        let dims = [4, 3, 2];
        let data: Vec<u16> = (0..2)
            .flat_map(|k| (0..3).flat_map(move |j| (0..4).map(move |i| 100 * k + 10 * j + i)))
            .collect();
        Volume::new(dims, Geometry::default(), VoxelData::U16(data)).unwrap()
    }

    #[test]
    fn slice_layout_follows_the_table() {
        let v = vol();
        let f = slices_f32(&v, Axis::K).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[1].width, f[1].height), (4, 3));
        assert_eq!(f[1].get(3, 2), Some(123.0)); // x=i=3, y=j=2, k=1
        let f = slices_f32(&v, Axis::J).unwrap();
        assert_eq!((f.len(), f[2].width, f[2].height), (3, 4, 2));
        assert_eq!(f[2].get(1, 1), Some(121.0)); // x=i=1, y=k=1, j=2
        let f = slices_f32(&v, Axis::I).unwrap();
        assert_eq!((f.len(), f[3].width, f[3].height), (4, 3, 2));
        assert_eq!(f[3].get(2, 1), Some(123.0)); // x=j=2, y=k=1, i=3
        assert!(slices_u8(&v, Axis::K).is_err());
        let rgb = gray_to_rgb(&SliceImage {
            width: 2,
            height: 1,
            data: vec![7, 9],
        });
        assert_eq!(rgb, vec![7, 7, 7, 9, 9, 9]);
    }

    #[test]
    fn masks_assemble_into_labels_on_every_axis() {
        let v = vol();
        for axis in [Axis::I, Axis::J, Axis::K] {
            let mut asm = LabelAssembler::new(&v, axis);
            asm.set_label(7, 300);
            let slices = slices_f32(&v, axis).unwrap();
            for (fi, fr) in slices.iter().enumerate() {
                // object 1: voxels with j == 1; object 7: voxels with i == 0 (later wins).
                let m1: Vec<bool> = fr.data.iter().map(|&x| (x as u32 / 10) % 10 == 1).collect();
                let m7: Vec<u8> = fr
                    .data
                    .iter()
                    .map(|&x| (x as u32).is_multiple_of(10) as u8)
                    .collect();
                asm.add_mask(fi, 1, &m1).unwrap();
                asm.add_mask_u8(fi, 7, &m7).unwrap();
            }
            let out = asm.finish().unwrap();
            assert_eq!(out.data_type(), crate::medical::DataType::U16);
            for k in 0..2 {
                for j in 0..3 {
                    for i in 0..4 {
                        let exp = if i == 0 {
                            300.0
                        } else if j == 1 {
                            1.0
                        } else {
                            0.0
                        };
                        assert_eq!(out.get([i, j, k]), Some(exp), "{axis:?} {i} {j} {k}");
                    }
                }
            }
        }
        let mut asm = LabelAssembler::new(&v, Axis::K);
        assert!(asm.add_mask(0, 1, &[true; 11]).is_err());
        assert!(asm.add_mask(2, 1, &[true; 12]).is_err());
    }

    #[test]
    fn prompts_map_to_slices() {
        let mut v = vol();
        v.set_geometry(Geometry {
            spacing: [0.5, 2.0, 3.0],
            origin: [10.0, 0.0, -5.0],
            direction: [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
        })
        .unwrap();
        let p = v.index_to_physical([2.0, 1.5, 1.0]);
        let fp = physical_to_slice_point(&v, Axis::K, p).unwrap();
        assert_eq!(fp.slice, 1);
        assert!((fp.x - 2.0).abs() < 1e-12 && (fp.y - 1.5).abs() < 1e-12);
        let back = slice_point_to_voxel(Axis::K, &fp);
        assert!((back[1] - 1.5).abs() < 1e-12);
        let fp = voxel_to_slice_point(v.dims(), Axis::I, [3.0, 1.0, 0.4]).unwrap();
        assert_eq!((fp.slice, fp.x, fp.y), (3, 1.0, 0.4));
        assert!(voxel_to_slice_point(v.dims(), Axis::K, [0.0, 0.0, 1.6]).is_err());
        let b = physical_box_to_slice_box(
            &v,
            Axis::K,
            v.index_to_physical([3.0, 0.0, 0.0]),
            v.index_to_physical([1.0, 2.0, 5.0]),
        )
        .unwrap();
        assert_eq!((b.first_slice, b.last_slice), (0, 1));
        assert!(
            (b.x0 - 1.0).abs() < 1e-12 && (b.x1 - 3.0).abs() < 1e-12 && (b.y1 - 2.0).abs() < 1e-12
        );
    }
}
