//! Command-line arguments of the volume jobs: intensity mappings, axes and
//! the `--box` / `--point` prompts (checked against the volume, every error
//! naming the argument).

use super::*;

/// How voxel values become the model's grey levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IntensitySpec {
    /// `u8` volumes are taken as already windowed (`0..=255` kept); other
    /// types get the abdomen (soft-tissue) CT window W400 L40.
    Auto,
    /// Clip to a CT window (Hounsfield units).
    Window(Window),
    /// MR and other modalities: 0.5th-99.5th percentiles of the non-zero voxels.
    Percentile,
    /// Values clipped to `0..=255` as they are.
    Identity,
}

impl IntensitySpec {
    /// Parses `auto`, `none`, `percentile`, a preset name (`abdomen`,
    /// `soft-tissue`, `lung`, `bone`, `brain`, `mediastinum`) or `W,L`.
    pub fn parse(s: &str) -> Result<IntensitySpec> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => return Ok(IntensitySpec::Auto),
            "none" | "identity" => return Ok(IntensitySpec::Identity),
            "percentile" | "mr" => return Ok(IntensitySpec::Percentile),
            _ => {}
        }
        if let Some(w) = Window::preset(&t) {
            return Ok(IntensitySpec::Window(w));
        }
        if let Some((w, l)) = t.split_once(',') {
            let (w, l) = (parse_f64(w, "window width")?, parse_f64(l, "window level")?);
            return Ok(IntensitySpec::Window(Window::new(w, l)?));
        }
        let names: Vec<&str> = Window::PRESETS.iter().map(|(n, _)| *n).collect();
        Err(JobError(format!(
            "unknown window `{s}`: use auto, none, percentile, W,L or a preset ({})",
            names.join(", ")
        )))
    }

    /// The mapping for `volume` (the MedSAM2 stretch: clipped min/max).
    pub fn intensity(&self, volume: &Volume) -> Intensity {
        match *self {
            IntensitySpec::Auto => Intensity::auto(volume),
            IntensitySpec::Window(w) => Intensity::window(w),
            IntensitySpec::Percentile => Intensity::new(Normalization::MR_DEFAULT),
            IntensitySpec::Identity => Intensity::new(Normalization::Identity),
        }
    }

    /// The normalisation for `volume`.
    pub fn normalization(&self, volume: &Volume) -> Normalization {
        self.intensity(volume).normalization
    }
}

/// Parses an axis number `0`, `1` or `2`.
pub fn parse_axis(s: &str) -> Result<Axis> {
    s.trim()
        .parse::<usize>()
        .ok()
        .and_then(Axis::from_index)
        .ok_or_else(|| JobError(format!("bad axis `{s}`: use 0, 1 or 2")))
}

fn parse_f64(s: &str, what: &str) -> Result<f64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| JobError(format!("bad {what} `{}`: not a number", s.trim())))?;
    if !v.is_finite() {
        return Err(JobError(format!("bad {what} `{}`: not finite", s.trim())));
    }
    Ok(v)
}

// ------------------------------------------------------------------ prompts

/// Splits an optional `OBJ:` prefix off a prompt argument.
fn split_object(s: &str, what: &str) -> Result<(Option<u32>, String)> {
    match s.split_once(':') {
        Some((o, rest)) => {
            let id: u32 = o.trim().parse().map_err(|_| {
                JobError(format!("bad {what} `{s}`: object id `{o}` is not a number"))
            })?;
            if id == 0 {
                return Err(JobError(format!(
                    "bad {what} `{s}`: object ids start at 1 (0 is the background)"
                )));
            }
            Ok((Some(id), rest.to_string()))
        }
        None => Ok((None, s.to_string())),
    }
}

fn numbers(s: &str, n: usize, what: &str, form: &str) -> Result<Vec<f64>> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() != n {
        return Err(JobError(format!(
            "bad {what} `{s}`: expected {form} ({n} numbers)"
        )));
    }
    parts.iter().map(|p| parse_f64(p, what)).collect()
}

/// Parses the `--box` and `--point` arguments.
///
/// * Voxel coordinates: box `[OBJ:]Z,X0,Y0,X1,Y1`, point `[OBJ:]Z,X,Y,LABEL`
///   (`Z` the slice along `axis`, `X` column, `Y` row; see the module docs).
/// * With `physical`: box `[OBJ:]X0,Y0,Z0,X1,Y1,Z1` (two opposite LPS corners
///   in mm, prompted on the slice nearest their middle), point
///   `[OBJ:]X,Y,Z,LABEL` (LPS mm, on the nearest slice).
///
/// Without `OBJ:`, the n-th box is object n and points belong to object 1.
/// `LABEL` is 1 (object) or 0 (background). Coordinates are checked against
/// the volume: every error names the argument.
pub fn parse_prompts(
    volume: &Volume,
    axis: Axis,
    boxes: &[String],
    points: &[String],
    physical: bool,
) -> Result<Vec<ObjectPrompts>> {
    let grid = VolumeGrid::of(volume, axis);
    let outside = |flag: &str, arg: &str, e: medsam2_core::Error| {
        JobError(format!("{flag} `{arg}` is outside the volume: {e}"))
    };
    let mut objects: Vec<ObjectPrompts> = Vec::new();
    let mut next_box_id = 1u32;
    for arg in boxes {
        let (id, rest) = split_object(arg, "--box")?;
        let id = id.unwrap_or_else(|| {
            let i = next_box_id;
            next_box_id += 1;
            i
        });
        let (slice, b) = if physical {
            let v = numbers(&rest, 6, "--box", "X0,Y0,Z0,X1,Y1,Z1 in LPS mm")?;
            grid.physical_box([v[0], v[1], v[2]], [v[3], v[4], v[5]])
        } else {
            let v = numbers(&rest, 5, "--box", "Z,X0,Y0,X1,Y1 in voxels")?;
            grid.voxel_box(v[0], [v[1], v[2], v[3], v[4]])
        }
        .map_err(|e| outside("--box", arg, e))?;
        let sp = object_mut(&mut objects, id).slice_mut(slice);
        if sp.bbox.is_some() {
            return Err(JobError(format!(
                "--box `{arg}`: object {id} already has a box on slice {slice}"
            )));
        }
        sp.bbox = Some(b);
    }
    for arg in points {
        let (id, rest) = split_object(arg, "--point")?;
        let id = id.unwrap_or(1);
        let (slice, x, y, label) = if physical {
            let v = numbers(&rest, 4, "--point", "X,Y,Z,LABEL in LPS mm")?;
            let (z, x, y) = grid
                .locate([v[0], v[1], v[2]])
                .map_err(|e| outside("--point", arg, e))?;
            (z, x, y, v[3])
        } else {
            let v = numbers(&rest, 4, "--point", "Z,X,Y,LABEL in voxels")?;
            let z = grid
                .slice_index(v[0])
                .map_err(|e| outside("--point", arg, e))?;
            (z, v[1], v[2], v[3])
        };
        if label != 0.0 && label != 1.0 {
            return Err(JobError(format!(
                "--point `{arg}`: LABEL must be 1 (object) or 0 (background)"
            )));
        }
        let p = grid.pixel(x, y).map_err(|e| outside("--point", arg, e))?;
        let sp = object_mut(&mut objects, id).slice_mut(slice);
        sp.points.push(p);
        sp.labels.push(label as i32);
    }
    objects.sort_by_key(|o| o.obj_id);
    Ok(objects)
}
