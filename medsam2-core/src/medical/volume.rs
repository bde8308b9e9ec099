//! The [`Volume`] type: voxels plus the geometry that places them in patient space.
//!
//! # Conventions
//! * Voxel index `(i, j, k)` addresses the three array axes; `i` varies fastest in
//!   memory: `linear = i + nx * (j + ny * k)`. This is the order of NIfTI and NRRD
//!   files and of a C-order NumPy array of shape `[nz, ny, nx]` (`[D, H, W]`).
//! * Physical coordinates are millimetres in the LPS frame (x to the patient's
//!   Left, y to Posterior, z to Superior), as in ITK, DICOM and 3D Slicer files.
//! * `physical = origin + direction * (spacing ⊙ index)`, where column `c` of
//!   `direction` (a unit vector) is the direction of index axis `c`.

use super::error::{MedicalError, Result};

/// Largest voxel payload (in bytes) any reader decodes or allocates: 1 GiB
/// (e.g. 512 x 512 x 2048 CT in 16 bits). It bounds decompression too, so a
/// file of a few megabytes cannot take the process past it.
pub const MAX_VOXEL_BYTES: u64 = crate::limits::MAX_VOXEL_BYTES;

/// The element type of a volume's voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `u8`
    U8,
    /// `i8`
    I8,
    /// `u16`
    U16,
    /// `i16`
    I16,
    /// `u32`
    U32,
    /// `i32`
    I32,
    /// `f32`
    F32,
    /// `f64`
    F64,
}

impl DataType {
    /// Every supported type.
    pub const ALL: [DataType; 8] = [
        DataType::U8,
        DataType::I8,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::F64,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::F64 => 8,
        }
    }

    /// Lower-case Rust name (`"u8"`, `"f32"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "u8",
            DataType::I8 => "i8",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

/// Voxel values of one of the supported element types, in volume order.
#[derive(Clone, Debug, PartialEq)]
pub enum VoxelData {
    /// Unsigned 8-bit voxels.
    U8(Vec<u8>),
    /// Signed 8-bit voxels.
    I8(Vec<i8>),
    /// Unsigned 16-bit voxels.
    U16(Vec<u16>),
    /// Signed 16-bit voxels (typical CT in Hounsfield units).
    I16(Vec<i16>),
    /// Unsigned 32-bit voxels.
    U32(Vec<u32>),
    /// Signed 32-bit voxels.
    I32(Vec<i32>),
    /// 32-bit float voxels.
    F32(Vec<f32>),
    /// 64-bit float voxels.
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of a [`VoxelData`].
macro_rules! with_voxels {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::U8($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::I8($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::U16($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::I16($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::U32($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::I32($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::F32($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::medical::volume::VoxelData::F64($v) => $body,
        }
    };
}
pub(crate) use with_voxels;

/// Decodes fixed-size elements from bytes in the given byte order.
macro_rules! decode_bytes {
    ($bytes:expr, $t:ty, $big:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        $bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                if $big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            })
            .collect::<Vec<$t>>()
    }};
}

impl VoxelData {
    /// A zero-filled buffer of `n` voxels of type `dtype`.
    pub fn zeros(dtype: DataType, n: usize) -> VoxelData {
        match dtype {
            DataType::U8 => VoxelData::U8(vec![0; n]),
            DataType::I8 => VoxelData::I8(vec![0; n]),
            DataType::U16 => VoxelData::U16(vec![0; n]),
            DataType::I16 => VoxelData::I16(vec![0; n]),
            DataType::U32 => VoxelData::U32(vec![0; n]),
            DataType::I32 => VoxelData::I32(vec![0; n]),
            DataType::F32 => VoxelData::F32(vec![0.0; n]),
            DataType::F64 => VoxelData::F64(vec![0.0; n]),
        }
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        with_voxels!(self, v => v.len())
    }

    /// Whether there are no voxels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn data_type(&self) -> DataType {
        match self {
            VoxelData::U8(_) => DataType::U8,
            VoxelData::I8(_) => DataType::I8,
            VoxelData::U16(_) => DataType::U16,
            VoxelData::I16(_) => DataType::I16,
            VoxelData::U32(_) => DataType::U32,
            VoxelData::I32(_) => DataType::I32,
            VoxelData::F32(_) => DataType::F32,
            VoxelData::F64(_) => DataType::F64,
        }
    }

    /// Voxel `index` as `f64` (`None` when out of range).
    pub fn get_f64(&self, index: usize) -> Option<f64> {
        with_voxels!(self, v => v.get(index).map(|&x| x as f64))
    }

    /// All voxels converted to `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_voxels!(self, v => v.iter().map(|&x| x as f64).collect())
    }

    /// All voxels converted to `f32` (may round 32-bit integers and `f64`).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        with_voxels!(self, v => v.iter().map(|&x| x as f32).collect())
    }

    /// The `u8` voxels, if this is `U8` data.
    pub fn as_u8(&self) -> Option<&[u8]> {
        match self {
            VoxelData::U8(v) => Some(v),
            _ => None,
        }
    }

    /// Decodes `bytes` (a whole number of elements, extra bytes ignored) of type
    /// `dtype` stored little-endian or, if `big_endian`, big-endian.
    pub fn from_bytes(dtype: DataType, bytes: &[u8], big_endian: bool) -> VoxelData {
        match dtype {
            DataType::U8 => VoxelData::U8(bytes.to_vec()),
            DataType::I8 => VoxelData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DataType::U16 => VoxelData::U16(decode_bytes!(bytes, u16, big_endian)),
            DataType::I16 => VoxelData::I16(decode_bytes!(bytes, i16, big_endian)),
            DataType::U32 => VoxelData::U32(decode_bytes!(bytes, u32, big_endian)),
            DataType::I32 => VoxelData::I32(decode_bytes!(bytes, i32, big_endian)),
            DataType::F32 => VoxelData::F32(decode_bytes!(bytes, f32, big_endian)),
            DataType::F64 => VoxelData::F64(decode_bytes!(bytes, f64, big_endian)),
        }
    }

    /// Decodes `bytes` of type `dtype` in the machine's native byte order
    /// (a caller's in-memory buffer, e.g. through the C ABI).
    pub fn from_ne_bytes(dtype: DataType, bytes: &[u8]) -> VoxelData {
        VoxelData::from_bytes(dtype, bytes, cfg!(target_endian = "big"))
    }

    /// The voxels as little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        with_voxels!(self, v => v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// Placement of the voxel grid in patient space (LPS, millimetres).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    /// Distance between voxel centres along index axes `i`, `j`, `k` (mm, > 0).
    pub spacing: [f64; 3],
    /// Physical (LPS, mm) position of the centre of voxel `(0, 0, 0)`.
    pub origin: [f64; 3],
    /// Direction cosines: `direction[row][col]`; column `col` is the unit vector of
    /// index axis `col` in LPS (ITK's `GetDirection()` in row-major order).
    pub direction: [[f64; 3]; 3],
}

impl Default for Geometry {
    /// 1 mm spacing, origin 0, identity direction.
    fn default() -> Self {
        Geometry {
            spacing: [1.0; 3],
            origin: [0.0; 3],
            direction: IDENTITY3,
        }
    }
}

/// The 3x3 identity matrix.
pub const IDENTITY3: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Determinant of a 3x3 matrix.
pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse of a 3x3 matrix (`None` if singular or not finite).
pub(crate) fn inv3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let d = det3(m);
    if !d.is_finite() || d.abs() < 1e-300 {
        return None;
    }
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let adj = [
        [c(1, 1, 2, 2), -c(0, 1, 2, 2), c(0, 1, 1, 2)],
        [-c(1, 0, 2, 2), c(0, 0, 2, 2), -c(0, 0, 1, 2)],
        [c(1, 0, 2, 1), -c(0, 0, 2, 1), c(0, 0, 1, 1)],
    ];
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for col in 0..3 {
            out[r][col] = adj[r][col] / d;
        }
    }
    Some(out)
}

impl Geometry {
    /// Checks that spacing is finite and positive, origin finite and direction
    /// finite with a non-zero determinant.
    pub fn validate(&self) -> Result<()> {
        if self.spacing.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(MedicalError::InvalidArgument(format!(
                "spacing must be finite and > 0, got {:?}",
                self.spacing
            )));
        }
        if self.origin.iter().any(|o| !o.is_finite()) {
            return Err(MedicalError::InvalidArgument(format!(
                "origin must be finite, got {:?}",
                self.origin
            )));
        }
        let d = det3(&self.direction);
        if !d.is_finite() || d.abs() < 1e-6 {
            return Err(MedicalError::InvalidArgument(format!(
                "direction matrix must be finite and invertible, got {:?}",
                self.direction
            )));
        }
        Ok(())
    }

    /// The 3x3 matrix `direction * diag(spacing)` (columns: voxel step vectors in mm).
    pub fn scaled_direction(&self) -> [[f64; 3]; 3] {
        let mut m = self.direction;
        for row in m.iter_mut() {
            for (c, v) in row.iter_mut().enumerate() {
                *v *= self.spacing[c];
            }
        }
        m
    }

    /// Builds a geometry from voxel step vectors (`columns[c]` = step of index axis `c`
    /// in LPS mm) and an origin: spacing = vector lengths, direction = unit vectors.
    pub fn from_step_vectors(columns: [[f64; 3]; 3], origin: [f64; 3]) -> Result<Geometry> {
        // `+ 0.0` turns negative zeros (from sign flips) into plain zeros.
        let mut g = Geometry {
            spacing: [0.0; 3],
            origin: origin.map(|o| o + 0.0),
            direction: [[0.0; 3]; 3],
        };
        for (c, col) in columns.iter().enumerate() {
            let n = (col[0] * col[0] + col[1] * col[1] + col[2] * col[2]).sqrt();
            if !n.is_finite() || n <= 0.0 {
                return Err(MedicalError::InvalidArgument(format!(
                    "axis {c} step vector {col:?} has no length"
                )));
            }
            g.spacing[c] = n;
            for r in 0..3 {
                g.direction[r][c] = col[r] / n + 0.0;
            }
        }
        g.validate()?;
        Ok(g)
    }

    /// Continuous voxel index -> physical LPS point (mm).
    pub fn index_to_physical(&self, index: [f64; 3]) -> [f64; 3] {
        let m = self.scaled_direction();
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            *pr += m[r][0] * index[0] + m[r][1] * index[1] + m[r][2] * index[2];
        }
        p
    }

    /// Physical LPS point (mm) -> continuous voxel index (fails if the geometry is
    /// degenerate).
    pub fn physical_to_index(&self, point: [f64; 3]) -> Result<[f64; 3]> {
        let inv = inv3(&self.scaled_direction()).ok_or_else(|| {
            MedicalError::InvalidArgument(
                "degenerate geometry: direction*spacing is singular".into(),
            )
        })?;
        let d = [
            point[0] - self.origin[0],
            point[1] - self.origin[1],
            point[2] - self.origin[2],
        ];
        let mut idx = [0.0; 3];
        for (r, v) in idx.iter_mut().enumerate() {
            *v = inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2];
        }
        Ok(idx)
    }

    /// The 4x4 index -> LPS affine (row-major, last row `0 0 0 1`).
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let m = self.scaled_direction();
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            a[r][..3].copy_from_slice(&m[r]);
            a[r][3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// Whether all fields agree within `tol` (absolute).
    pub fn approx_eq(&self, other: &Geometry, tol: f64) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= tol;
        (0..3).all(|i| {
            close(self.spacing[i], other.spacing[i])
                && close(self.origin[i], other.origin[i])
                && (0..3).all(|j| close(self.direction[i][j], other.direction[i][j]))
        })
    }
}

/// A 3D image: voxel values, dimensions and geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    dims: [usize; 3],
    geometry: Geometry,
    data: VoxelData,
}

impl Volume {
    /// A volume of `dims = [nx, ny, nz]` voxels (`data.len()` must be their product,
    /// each dimension at least 1) with a valid `geometry`.
    pub fn new(dims: [usize; 3], geometry: Geometry, data: VoxelData) -> Result<Volume> {
        let n = checked_voxel_count(dims)?;
        if n != data.len() {
            return Err(MedicalError::ShapeMismatch(format!(
                "dims {dims:?} need {n} voxels, data has {}",
                data.len()
            )));
        }
        geometry.validate()?;
        Ok(Volume {
            dims,
            geometry,
            data,
        })
    }

    /// A zero-filled volume.
    pub fn zeros(dims: [usize; 3], geometry: Geometry, dtype: DataType) -> Result<Volume> {
        let n = checked_voxel_count(dims)?;
        Volume::new(dims, geometry, VoxelData::zeros(dtype, n))
    }

    /// A volume with the same dimensions and geometry as `self` but other voxels.
    pub fn with_data(&self, data: VoxelData) -> Result<Volume> {
        Volume::new(self.dims, self.geometry, data)
    }

    /// `[nx, ny, nz]`: the sizes of index axes `i`, `j`, `k`.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// Number of voxels.
    pub fn num_voxels(&self) -> usize {
        self.data.len()
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Replaces the geometry (validated).
    pub fn set_geometry(&mut self, geometry: Geometry) -> Result<()> {
        geometry.validate()?;
        self.geometry = geometry;
        Ok(())
    }

    /// The voxels.
    pub fn data(&self) -> &VoxelData {
        &self.data
    }

    /// Replaces the voxels (any type; the count must stay [`Volume::num_voxels`]).
    pub fn set_data(&mut self, data: VoxelData) -> Result<()> {
        if data.len() != self.data.len() {
            return Err(MedicalError::ShapeMismatch(format!(
                "{} voxels for a volume of {}",
                data.len(),
                self.data.len()
            )));
        }
        self.data = data;
        Ok(())
    }

    /// Consumes the volume, returning its voxels.
    pub fn into_data(self) -> VoxelData {
        self.data
    }

    /// The element type.
    pub fn data_type(&self) -> DataType {
        self.data.data_type()
    }

    /// Linear offset of voxel `(i, j, k)` (`None` if outside).
    pub fn linear_index(&self, index: [usize; 3]) -> Option<usize> {
        let [nx, ny, nz] = self.dims;
        let [i, j, k] = index;
        (i < nx && j < ny && k < nz).then(|| i + nx * (j + ny * k))
    }

    /// Value of voxel `(i, j, k)` as `f64` (`None` if outside).
    pub fn get(&self, index: [usize; 3]) -> Option<f64> {
        self.linear_index(index).and_then(|l| self.data.get_f64(l))
    }

    /// Continuous voxel index -> physical LPS point (mm).
    pub fn index_to_physical(&self, index: [f64; 3]) -> [f64; 3] {
        self.geometry.index_to_physical(index)
    }

    /// Physical LPS point (mm) -> continuous voxel index.
    pub fn physical_to_index(&self, point: [f64; 3]) -> Result<[f64; 3]> {
        self.geometry.physical_to_index(point)
    }

    /// Nearest voxel to a physical LPS point, `None` when it lies outside the grid.
    pub fn physical_to_voxel(&self, point: [f64; 3]) -> Result<Option<[usize; 3]>> {
        let idx = self.physical_to_index(point)?;
        let mut out = [0usize; 3];
        for a in 0..3 {
            let r = idx[a].round();
            if !(r >= 0.0 && r < self.dims[a] as f64) {
                return Ok(None);
            }
            out[a] = r as usize;
        }
        Ok(Some(out))
    }

    /// Minimum and maximum voxel value (NaNs ignored; `None` if all are NaN).
    pub fn min_max(&self) -> Option<(f64, f64)> {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        with_voxels!(&self.data, v => {
            for &x in v.iter() {
                let x = x as f64;
                if x < lo {
                    lo = x;
                }
                if x > hi {
                    hi = x;
                }
            }
        });
        (lo <= hi).then_some((lo, hi))
    }
}

/// Product of `dims`, rejecting zero sizes and overflow of the size limit.
pub(crate) fn checked_voxel_count(dims: [usize; 3]) -> Result<usize> {
    if dims.contains(&0) {
        return Err(MedicalError::InvalidArgument(format!(
            "dims must be >= 1, got {dims:?}"
        )));
    }
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| (n as u64) <= MAX_VOXEL_BYTES)
        .ok_or(MedicalError::TooLarge {
            bytes: u64::MAX,
            limit: MAX_VOXEL_BYTES,
        })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_physical_round_trip() {
        let c = 30f64.to_radians().cos();
        let s = 30f64.to_radians().sin();
        let g = Geometry {
            spacing: [0.5, 0.75, 2.5],
            origin: [-10.0, 20.0, 5.0],
            direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]],
        };
        let p = g.index_to_physical([3.0, 4.0, 5.0]);
        // i*0.5 along (c, s, 0), j*0.75 along (-s, c, 0), k*2.5 along (0, 0, -1)
        let exp = [
            -10.0 + 1.5 * c - 3.0 * s,
            20.0 + 1.5 * s + 3.0 * c,
            5.0 - 12.5,
        ];
        for a in 0..3 {
            assert!((p[a] - exp[a]).abs() < 1e-12);
        }
        let back = g.physical_to_index(p).unwrap();
        for (a, v) in back.iter().enumerate() {
            assert!((v - [3.0, 4.0, 5.0][a]).abs() < 1e-12);
        }
        let g2 = Geometry::from_step_vectors(
            [0, 1, 2].map(|c| [0, 1, 2].map(|r| g.scaled_direction()[r][c])),
            g.origin,
        )
        .unwrap();
        assert!(g2.approx_eq(&g, 1e-12));
    }

    #[test]
    fn bytes_round_trip_all_types() {
        for dt in DataType::ALL {
            let n = 7;
            let bytes: Vec<u8> = (0..n * dt.size()).map(|i| (i * 37 % 251) as u8).collect();
            let le = VoxelData::from_bytes(dt, &bytes, false);
            assert_eq!(le.len(), n);
            assert_eq!(le.to_le_bytes(), bytes);
            // Big-endian decoding of byte-reversed elements gives the same values.
            let swapped: Vec<u8> = bytes
                .chunks(dt.size())
                .flat_map(|c| c.iter().rev().copied())
                .collect();
            let be = VoxelData::from_bytes(dt, &swapped, true);
            assert_eq!(be.to_le_bytes(), bytes);
        }
    }

    #[test]
    fn volume_checks() {
        let g = Geometry::default();
        assert!(Volume::new([2, 2, 2], g, VoxelData::U8(vec![0; 7])).is_err());
        assert!(Volume::new([0, 2, 2], g, VoxelData::U8(vec![])).is_err());
        let mut bad = g;
        bad.spacing[1] = 0.0;
        assert!(Volume::new([1, 1, 1], bad, VoxelData::U8(vec![0])).is_err());
        let v = Volume::new([2, 3, 4], g, VoxelData::I16((0..24).collect())).unwrap();
        assert_eq!(v.get([1, 2, 3]), Some(23.0));
        assert_eq!(v.get([2, 0, 0]), None);
        assert_eq!(
            v.physical_to_voxel([1.2, 1.6, 2.9]).unwrap(),
            Some([1, 2, 3])
        );
        assert_eq!(v.physical_to_voxel([-0.6, 0.0, 0.0]).unwrap(), None);
        assert_eq!(v.min_max(), Some((0.0, 23.0)));
        let mut v2 = v.clone();
        assert!(v2.set_data(VoxelData::U8(vec![0; 3])).is_err());
        v2.set_data(VoxelData::F32(vec![1.5; 24])).unwrap();
        assert_eq!(v2.get([0, 0, 0]), Some(1.5));
    }
}
