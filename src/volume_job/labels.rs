//! Label volumes as prompts: the masks of each label per slice, key slices
//! and mask prompts (`--mask`).

use super::*;

/// Which slice of an object a prompt is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySlice {
    /// The slice where the object has the largest area (first one on ties).
    Largest,
    /// The middle of the object's slice range (the nearest slice holding it).
    Middle,
    /// A given slice.
    Fixed(usize),
}

impl KeySlice {
    /// Parses `largest`, `middle` or a slice number.
    pub fn parse(s: &str) -> Result<KeySlice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "largest" => Ok(KeySlice::Largest),
            "middle" => Ok(KeySlice::Middle),
            t => t.parse().map(KeySlice::Fixed).map_err(|_| {
                JobError(format!(
                    "bad key slice `{s}`: largest, middle or a slice number"
                ))
            }),
        }
    }
}

/// The masks of one label of a label volume, per slice along an axis.
#[derive(Clone, Debug)]
pub struct LabelSlices {
    /// The label value.
    pub label: u32,
    /// Slice-sized masks (1 = label), one per slice.
    pub masks: Vec<Vec<u8>>,
    /// Pixels of the label per slice.
    pub areas: Vec<usize>,
}

impl LabelSlices {
    /// The key slice (`None` if the label is absent; a fixed slice is returned as is).
    pub fn key_slice(&self, key: KeySlice) -> Option<usize> {
        let present: Vec<usize> = (0..self.areas.len())
            .filter(|&z| self.areas[z] > 0)
            .collect();
        let (&lo, &hi) = (present.first()?, present.last()?);
        Some(match key {
            KeySlice::Fixed(z) => z,
            KeySlice::Largest => {
                let max = self.areas.iter().copied().max().unwrap_or(0);
                self.areas.iter().position(|&a| a == max).unwrap_or(lo)
            }
            KeySlice::Middle => {
                let mid = (lo + hi) / 2;
                // Nearest slice holding the label (lower one on ties).
                *present
                    .iter()
                    .min_by_key(|&&z| (z.abs_diff(mid), z))
                    .unwrap_or(&mid)
            }
        })
    }
}

/// The non-zero labels of a label volume (integers >= 1), with their masks
/// along `axis`.
pub fn label_slices(labels: &Volume, axis: Axis) -> Result<Vec<LabelSlices>> {
    let values = labels.data().to_f64_vec();
    let mut set = std::collections::BTreeSet::new();
    for &v in &values {
        if v != 0.0 {
            if v.fract() != 0.0 || v < 1.0 || v > u32::MAX as f64 {
                return Err(JobError(format!(
                    "label volume holds {v}: labels must be whole numbers >= 0"
                )));
            }
            set.insert(v as u32);
        }
    }
    let dims = labels.dims();
    let mut out = Vec::new();
    for label in set {
        let on: Vec<u8> = values
            .iter()
            .map(|&v| u8::from(v == label as f64))
            .collect();
        let mut masks = Vec::new();
        let mut areas = Vec::new();
        for z in 0..slicing::num_slices(dims, axis) {
            let f = slicing::extract_slice(&on, dims, axis, z)?;
            areas.push(f.data.iter().filter(|&&v| v != 0).count());
            masks.push(f.data);
        }
        out.push(LabelSlices {
            label,
            masks,
            areas,
        });
    }
    Ok(out)
}

/// Mask prompts from a label volume on the input's grid: every non-zero label
/// `L` becomes object `L`, prompted with its mask on its key slice.
pub fn mask_prompts(
    input: &Volume,
    labels: &Volume,
    axis: Axis,
    key: KeySlice,
) -> Result<Vec<ObjectPrompts>> {
    if labels.dims() != input.dims() {
        return Err(JobError(format!(
            "--mask has dims {:?} but the volume has {:?}",
            labels.dims(),
            input.dims()
        )));
    }
    let ls = label_slices(labels, axis)?;
    if ls.is_empty() {
        return Err(JobError("--mask holds no non-zero label".into()));
    }
    let n = slicing::num_slices(input.dims(), axis);
    let mut out = Vec::new();
    for l in ls {
        let z = l.key_slice(key).unwrap_or(0);
        if z >= n {
            return Err(JobError(format!(
                "--mask-slice {z} is outside the volume (0..{} along axis {})",
                n - 1,
                axis as usize
            )));
        }
        if l.areas[z] == 0 {
            return Err(JobError(format!(
                "--mask: label {} is absent from slice {z}",
                l.label
            )));
        }
        let mut sp = SlicePrompt::on(z);
        sp.mask = Some(l.masks[z].clone());
        out.push(ObjectPrompts {
            obj_id: l.label,
            slices: vec![sp],
        });
    }
    Ok(out)
}
