//! A volume's voxels as the model's grey slices: an intensity mapping
//! (normalisation and stretch) to `0..=255`, cut along an axis.

use std::sync::Arc;

use crate::error::Result;
use crate::medical::intensity::{self, Normalization, Stretch, Window};
use crate::medical::slicing::{self, Axis};
use crate::medical::{DataType, Volume};
use crate::modeling::sam2_base::Sam2Base;
use crate::sam2_video_predictor::{GreyFrames, Sam2VideoPredictor, SessionOptions};

/// How voxel values become the model's grey levels: clip (a CT window,
/// percentiles, or `0..=255`), then stretch to `0..=255`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Intensity {
    /// What the values are clipped to.
    pub normalization: Normalization,
    /// Which range is stretched to `0..=255` ([`Stretch::ClippedMinMax`] as the
    /// MedSAM2 reference code).
    pub stretch: Stretch,
}

impl Intensity {
    /// `normalization` with the MedSAM2 stretch ([`Stretch::ClippedMinMax`]).
    pub fn new(normalization: Normalization) -> Intensity {
        Intensity {
            normalization,
            stretch: Stretch::ClippedMinMax,
        }
    }

    /// A CT window (Hounsfield units), MedSAM2 stretch.
    pub fn window(window: Window) -> Intensity {
        Intensity::new(Normalization::Window(window))
    }

    /// The default for `volume`: `u8` voxels are taken as already windowed
    /// (`0..=255` kept); other types get the abdomen (soft-tissue) CT window
    /// W400 L40, as MedSAM2's CT preprocessing.
    pub fn auto(volume: &Volume) -> Intensity {
        Intensity::new(if volume.data_type() == DataType::U8 {
            Normalization::Identity
        } else {
            Normalization::Window(Window::ABDOMEN)
        })
    }

    /// `volume` mapped to `u8` grey levels (same grid and geometry).
    pub fn grey(&self, volume: &Volume) -> Result<Volume> {
        Ok(intensity::to_u8(volume, &self.normalization, self.stretch)?)
    }
}

/// A volume as grey `u8` slices along an axis, ready for a session.
#[derive(Clone, Debug)]
pub struct Slices {
    /// The slicing axis.
    pub axis: Axis,
    /// Columns per slice.
    pub width: usize,
    /// Rows per slice.
    pub height: usize,
    /// The slices, row-major, `width * height` bytes each.
    pub images: Vec<Vec<u8>>,
}

impl Slices {
    /// Maps `volume` to grey levels with `intensity` and cuts it along `axis`.
    pub fn from_volume(volume: &Volume, axis: Axis, intensity: &Intensity) -> Result<Slices> {
        let grey = intensity.grey(volume)?;
        Slices::from_grey(&grey, axis)
    }

    /// Cuts a `u8` volume (already mapped to grey levels) along `axis`.
    pub fn from_grey(grey: &Volume, axis: Axis) -> Result<Slices> {
        let images = slicing::slices_u8(grey, axis)?;
        let (width, height) = slicing::slice_size(grey.dims(), axis);
        Ok(Slices {
            axis,
            width,
            height,
            images: images.into_iter().map(|f| f.data).collect(),
        })
    }

    /// Number of slices.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no slices.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// A video predictor over (a copy of) the slices.
    pub fn predictor(
        &self,
        model: Arc<Sam2Base>,
        options: SessionOptions,
    ) -> Result<Sam2VideoPredictor> {
        let frames = GreyFrames::new(self.images.clone(), self.height, self.width)?;
        Sam2VideoPredictor::new(model, Box::new(frames), options)
    }

    /// A video predictor that takes the slices over.
    pub fn into_predictor(
        self,
        model: Arc<Sam2Base>,
        options: SessionOptions,
    ) -> Result<Sam2VideoPredictor> {
        let frames = GreyFrames::new(self.images, self.height, self.width)?;
        Sam2VideoPredictor::new(model, Box::new(frames), options)
    }
}
