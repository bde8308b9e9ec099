//! Intensity normalisation to the model's input range.
//!
//! The mapping follows the MedSAM / MedSAM2 preprocessing code:
//! * CT: clip to a window `[level - width/2, level + width/2]`;
//! * MR and other modalities: clip to the 0.5th and 99.5th percentiles of the
//!   non-zero voxels, and keep zero voxels at 0;
//! * then `(x - min) / (max - min) * 255` where `min`/`max` are those of the
//!   clipped volume ([`Stretch::ClippedMinMax`]; [`Stretch::Bounds`] uses the
//!   clip bounds themselves, the radiology display convention), and truncation
//!   to `u8` as NumPy's `np.uint8` does.
//!
//! [`to_unit_f32`] gives the same mapping as `f32` in `0..=1` without the `u8`
//! quantisation; [`u8_to_unit`] divides `u8` values by 255.

use super::error::{MedicalError, Result};
use super::volume::{with_voxels, Volume, VoxelData};

/// A CT display window (Hounsfield units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Window width (> 0).
    pub width: f64,
    /// Window level (centre).
    pub level: f64,
}

impl Window {
    /// Soft tissue: W400 L40.
    pub const SOFT_TISSUE: Window = Window {
        width: 400.0,
        level: 40.0,
    };
    /// Abdomen: W400 L40 (same as soft tissue; MedSAM2's CT default).
    pub const ABDOMEN: Window = Window {
        width: 400.0,
        level: 40.0,
    };
    /// Lung: W1500 L-600.
    pub const LUNG: Window = Window {
        width: 1500.0,
        level: -600.0,
    };
    /// Bone: W1800 L400.
    pub const BONE: Window = Window {
        width: 1800.0,
        level: 400.0,
    };
    /// Brain: W80 L40.
    pub const BRAIN: Window = Window {
        width: 80.0,
        level: 40.0,
    };
    /// Mediastinum: W350 L50.
    pub const MEDIASTINUM: Window = Window {
        width: 350.0,
        level: 50.0,
    };

    /// The presets with their names (as accepted by [`Window::preset`]).
    pub const PRESETS: [(&'static str, Window); 6] = [
        ("soft-tissue", Window::SOFT_TISSUE),
        ("abdomen", Window::ABDOMEN),
        ("lung", Window::LUNG),
        ("bone", Window::BONE),
        ("brain", Window::BRAIN),
        ("mediastinum", Window::MEDIASTINUM),
    ];

    /// A custom window; `width` must be finite and > 0, `level` finite.
    pub fn new(width: f64, level: f64) -> Result<Window> {
        if !(width.is_finite() && width > 0.0 && level.is_finite()) {
            return Err(MedicalError::InvalidArgument(format!(
                "window width must be > 0 and level finite (got W{width} L{level})"
            )));
        }
        Ok(Window { width, level })
    }

    /// A preset by name (case-insensitive; `-`, `_` and spaces are interchangeable).
    pub fn preset(name: &str) -> Option<Window> {
        let n = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        let n = if n == "softtissue" || n == "soft" {
            "soft-tissue".to_string()
        } else {
            n
        };
        Window::PRESETS
            .iter()
            .find(|(p, _)| *p == n)
            .map(|(_, w)| *w)
    }

    /// Lower clip bound `level - width / 2`.
    pub fn lower(&self) -> f64 {
        self.level - self.width / 2.0
    }

    /// Upper clip bound `level + width / 2`.
    pub fn upper(&self) -> f64 {
        self.level + self.width / 2.0
    }
}

/// How intensities are clipped before scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Normalization {
    /// Clip to a CT window.
    Window(Window),
    /// Clip to percentiles (0..=100, NumPy's linear interpolation) of the voxels
    /// (only the non-zero ones if `nonzero_only`, which also keeps zeros at 0).
    Percentile {
        /// Lower percentile (MedSAM: 0.5).
        lower: f64,
        /// Upper percentile (MedSAM: 99.5).
        upper: f64,
        /// Compute percentiles over voxels `> 0` and map zeros to 0 (MedSAM: true).
        nonzero_only: bool,
    },
    /// Clip to `[0, 255]` only (data already windowed, such as the `.npz` samples).
    Identity,
}

impl Normalization {
    /// MedSAM's MR/other-modality default: 0.5-99.5 percentiles of non-zero voxels.
    pub const MR_DEFAULT: Normalization = Normalization::Percentile {
        lower: 0.5,
        upper: 99.5,
        nonzero_only: true,
    };
}

/// Which range the clipped values are stretched from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stretch {
    /// Min and max of the clipped volume (MedSAM / MedSAM2 reference code).
    #[default]
    ClippedMinMax,
    /// The clip bounds (a value at the window's lower edge is 0, upper edge 255).
    Bounds,
}

/// A resolved clip-and-scale map: `clamp(x, lower, upper)` then
/// `(x - lower) / (upper - lower)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntensityMap {
    /// Value mapped to 0.
    pub lower: f64,
    /// Value mapped to 1 (255).
    pub upper: f64,
    /// Map voxels equal to 0 to 0 (MR convention).
    pub keep_zero: bool,
}

impl IntensityMap {
    /// The map for `volume` under `norm` and `stretch`.
    pub fn new(volume: &Volume, norm: &Normalization, stretch: Stretch) -> Result<IntensityMap> {
        let (lo, hi, keep_zero) = match *norm {
            Normalization::Window(w) => {
                Window::new(w.width, w.level)?;
                (w.lower(), w.upper(), false)
            }
            Normalization::Identity => (0.0, 255.0, false),
            Normalization::Percentile {
                lower,
                upper,
                nonzero_only,
            } => {
                if !(0.0..=100.0).contains(&lower)
                    || !(0.0..=100.0).contains(&upper)
                    || lower > upper
                {
                    return Err(MedicalError::InvalidArgument(format!(
                        "percentiles must satisfy 0 <= lower <= upper <= 100 (got {lower}, {upper})"
                    )));
                }
                let mut vals: Vec<f64> = with_voxels!(volume.data(), v => v
                    .iter()
                    .map(|&x| x as f64)
                    .filter(|x| !x.is_nan() && (!nonzero_only || *x > 0.0))
                    .collect());
                if vals.is_empty() {
                    (0.0, 0.0, nonzero_only)
                } else {
                    let lo = percentile(&mut vals, lower).unwrap_or(0.0);
                    let hi = percentile(&mut vals, upper).unwrap_or(0.0);
                    (lo, hi, nonzero_only)
                }
            }
        };
        // Identity keeps the stored 0..255 values as they are (MedSAM2 feeds
        // the `.npz` `imgs` unchanged): no min/max stretch.
        let stretch = match norm {
            Normalization::Identity => Stretch::Bounds,
            _ => stretch,
        };
        let (lo, hi) = match stretch {
            Stretch::Bounds => (lo, hi),
            Stretch::ClippedMinMax => match volume.min_max() {
                Some((mn, mx)) => (mn.clamp(lo, hi), mx.clamp(lo, hi)),
                None => (lo, hi),
            },
        };
        Ok(IntensityMap {
            lower: lo,
            upper: hi,
            keep_zero,
        })
    }

    /// `x` mapped to `0..=1` (0 when the range is empty or `x` is NaN).
    pub fn unit(&self, x: f64) -> f64 {
        if x.is_nan() || self.upper <= self.lower || (self.keep_zero && x == 0.0) {
            return 0.0;
        }
        (x.clamp(self.lower, self.upper) - self.lower) / (self.upper - self.lower)
    }

    /// `x` mapped to `0..=255`, truncated like NumPy's `np.uint8`.
    pub fn to_u8(&self, x: f64) -> u8 {
        if x.is_nan() || self.upper <= self.lower || (self.keep_zero && x == 0.0) {
            return 0;
        }
        // Same operation order as `(x - min) / (max - min) * 255.0` in NumPy.
        let y = (x.clamp(self.lower, self.upper) - self.lower) / (self.upper - self.lower) * 255.0;
        y.clamp(0.0, 255.0) as u8
    }
}

/// The volume mapped to `u8` `0..=255` (same dimensions and geometry).
pub fn to_u8(volume: &Volume, norm: &Normalization, stretch: Stretch) -> Result<Volume> {
    let map = IntensityMap::new(volume, norm, stretch)?;
    let out: Vec<u8> =
        with_voxels!(volume.data(), v => v.iter().map(|&x| map.to_u8(x as f64)).collect());
    volume.with_data(VoxelData::U8(out))
}

/// The volume mapped to `f32` `0..=1` (same dimensions and geometry).
pub fn to_unit_f32(volume: &Volume, norm: &Normalization, stretch: Stretch) -> Result<Volume> {
    let map = IntensityMap::new(volume, norm, stretch)?;
    let out: Vec<f32> =
        with_voxels!(volume.data(), v => v.iter().map(|&x| map.unit(x as f64) as f32).collect());
    volume.with_data(VoxelData::F32(out))
}

/// `u8` values divided by 255.
pub fn u8_to_unit(values: &[u8]) -> Vec<f32> {
    values.iter().map(|&v| v as f32 / 255.0).collect()
}

/// The `p`-th percentile (0..=100) of `values` with NumPy's default linear
/// interpolation; reorders `values`. `None` if empty or `p` is out of range.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let pos = p / 100.0 * (n - 1) as f64;
    let k = (pos.floor() as usize).min(n - 1);
    let t = pos - k as f64;
    let (_, a, right) = values.select_nth_unstable_by(k, f64::total_cmp);
    let a = *a;
    if t == 0.0 || right.is_empty() {
        return Some(a);
    }
    let b = right.iter().copied().fold(f64::INFINITY, f64::min);
    // NumPy's `_lerp`.
    let d = b - a;
    Some(if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medical::volume::Geometry;

    #[test]
    fn percentile_matches_numpy() {
        // np.percentile(np.arange(1, 11), [0, 0.5, 25, 50, 99.5, 100])
        // -> [1., 1.045, 3.25, 5.5, 9.955, 10.]
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        for (p, e) in [
            (0.0, 1.0),
            (0.5, 1.045),
            (25.0, 3.25),
            (50.0, 5.5),
            (99.5, 9.955),
            (100.0, 10.0),
        ] {
            let got = percentile(&mut v.clone(), p).unwrap();
            assert!((got - e).abs() < 1e-12, "p{p}: {got} vs {e}");
        }
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn window_and_mr_mapping() {
        let g = Geometry::default();
        let v = Volume::new(
            [5, 1, 1],
            g,
            VoxelData::I16(vec![-1000, -160, 40, 240, 3000]),
        )
        .unwrap();
        let w = Normalization::Window(Window::SOFT_TISSUE);
        let u = to_u8(&v, &w, Stretch::Bounds).unwrap();
        assert_eq!(u.data(), &VoxelData::U8(vec![0, 0, 127, 255, 255]));
        assert_eq!(u.geometry(), v.geometry());
        let f = to_unit_f32(&v, &w, Stretch::Bounds).unwrap();
        assert_eq!(f.data(), &VoxelData::F32(vec![0.0, 0.0, 0.5, 1.0, 1.0]));
        // Clipped min/max stretch: data in [-50, 100] inside the window spans 0..255.
        let v2 = Volume::new([3, 1, 1], g, VoxelData::F32(vec![-50.0, 25.0, 100.0])).unwrap();
        let u2 = to_u8(&v2, &w, Stretch::ClippedMinMax).unwrap();
        assert_eq!(u2.data(), &VoxelData::U8(vec![0, 127, 255]));
        // Identity: already-windowed u8 values stay as they are (no stretch).
        let v4 = Volume::new([3, 1, 1], g, VoxelData::U8(vec![10, 100, 200])).unwrap();
        let u4 = to_u8(&v4, &Normalization::Identity, Stretch::ClippedMinMax).unwrap();
        assert_eq!(u4.data(), &VoxelData::U8(vec![10, 100, 200]));
        // MR: zeros stay zero, percentiles over non-zero voxels.
        let vals: Vec<u16> = (0..=200).collect();
        let v3 = Volume::new([201, 1, 1], g, VoxelData::U16(vals)).unwrap();
        let m = IntensityMap::new(&v3, &Normalization::MR_DEFAULT, Stretch::ClippedMinMax).unwrap();
        // np.percentile(np.arange(1, 201), [0.5, 99.5]) -> [1.995, 199.005]
        assert!((m.lower - 1.995).abs() < 1e-9 && (m.upper - 199.005).abs() < 1e-9);
        let u3 = to_u8(&v3, &Normalization::MR_DEFAULT, Stretch::ClippedMinMax).unwrap();
        let d = u3.data().as_u8().unwrap();
        assert_eq!((d[0], d[1], d[100], d[200]), (0, 0, 126, 255));
        assert_eq!(Window::preset("Soft_Tissue"), Some(Window::SOFT_TISSUE));
        assert_eq!(
            Window::preset("lung").map(|w| (w.lower(), w.upper())),
            Some((-1350.0, 150.0))
        );
        assert!(Window::new(0.0, 10.0).is_err());
    }
}
