//! Reading reference fixtures in the format of `shared/fixtures/FORMAT.md`
//! and comparing tensors against them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// Errors of the fixture reader.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// File-system error.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Malformed JSON or safetensors, or a missing entry.
    #[error("{0}")]
    Format(String),
    /// Error from the core library.
    #[error(transparent)]
    Core(#[from] medsam2_core::Error),
    /// Error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`FixtureError`].
pub type Result<T> = std::result::Result<T, FixtureError>;

/// One fixture directory (`config.yaml`, `weights.safetensors`, `fixture.json`, parts).
pub struct Fixture {
    /// The directory.
    pub dir: PathBuf,
    /// Parsed `fixture.json`.
    pub json: Value,
    parts: HashMap<String, HashMap<String, Tensor>>,
}

impl Fixture {
    /// Opens a fixture directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let jp = dir.join("fixture.json");
        let text = std::fs::read_to_string(&jp)
            .map_err(|e| FixtureError::Io(jp.display().to_string(), e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| FixtureError::Format(format!("{}: {e}", jp.display())))?;
        Ok(Self {
            dir,
            json,
            parts: HashMap::new(),
        })
    }

    /// The fixture's name (`name` in the JSON, else the folder name).
    pub fn name(&self) -> String {
        self.json["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.dir
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }

    /// Path of `config.yaml` (or what `fixture.json["config"]` names).
    pub fn config_path(&self) -> PathBuf {
        self.dir
            .join(self.json["config"].as_str().unwrap_or("config.yaml"))
    }

    /// Path of the weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(
            self.json["weights"]
                .as_str()
                .unwrap_or("weights.safetensors"),
        )
    }

    /// Hydra overrides `build_sam` adds for `image_model` or `video_model`.
    pub fn overrides(&self, which: &str) -> Vec<String> {
        self.json["hydra_overrides"][which]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The model config with the overrides of `which` (`image_model`, `video_model`).
    pub fn config(&self, which: &str) -> Result<medsam2_core::Sam2Config> {
        let p = self.config_path();
        let text = std::fs::read_to_string(&p)
            .map_err(|e| FixtureError::Io(p.display().to_string(), e))?;
        let ov = self.overrides(which);
        let ov: Vec<&str> = ov.iter().map(String::as_str).collect();
        Ok(medsam2_core::Sam2Config::from_yaml_with_overrides(
            &text, &ov,
        )?)
    }

    /// Whether the fixture holds a part (`image`, `video`, `one_prompt`).
    pub fn has_part(&self, part: &str) -> bool {
        self.json.get(part).is_some_and(|v| v.is_object())
            && self
                .dir
                .join(self.json[part]["file"].as_str().unwrap_or(""))
                .is_file()
    }

    fn load_part(&mut self, part: &str) -> Result<&HashMap<String, Tensor>> {
        if !self.parts.contains_key(part) {
            let file = self.json[part]["file"]
                .as_str()
                .ok_or_else(|| FixtureError::Format(format!("fixture.json has no {part}.file")))?;
            let p = self.dir.join(file);
            let t = load_safetensors(&p)?;
            self.parts.insert(part.to_string(), t);
        }
        Ok(&self.parts[part])
    }

    /// A tensor of a part by its safetensors name, as stored (dtype kept).
    pub fn tensor(&mut self, part: &str, name: &str) -> Result<Tensor> {
        self.load_part(part)?
            .get(name)
            .cloned()
            .ok_or_else(|| FixtureError::Format(format!("{part}: tensor `{name}` missing")))
    }

    /// A tensor as f32.
    pub fn f32(&mut self, part: &str, name: &str) -> Result<Tensor> {
        Ok(self.tensor(part, name)?.to_dtype(DType::F32)?)
    }
}

/// Loads every tensor of a safetensors file; BOOL tensors become U8 (0/1),
/// which candle cannot read directly.
pub fn load_safetensors(p: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(p).map_err(|e| FixtureError::Io(p.display().to_string(), e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| FixtureError::Format(format!("{}: {e}", p.display())))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            safetensors::Dtype::BOOL | safetensors::Dtype::U8 => {
                Tensor::from_vec(data.to_vec(), shape, &Device::Cpu)?
            }
            _ => candle_core::safetensors::Load::load(&view, &Device::Cpu)
                .map_err(|e| FixtureError::Format(format!("{}: `{name}`: {e}", p.display())))?,
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Fixture directories under the project's shared folder, if it is there
/// (`MEDSAM2_SHARED_FIXTURES`, else `<workspace>/../shared/fixtures`).
pub fn shared_fixture_dirs() -> Option<Vec<PathBuf>> {
    let root = std::env::var_os("MEDSAM2_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    fixture_dirs_in(&root)
}

/// Fixture directories committed under `tests/fixtures`.
pub fn committed_fixture_dirs() -> Option<Vec<PathBuf>> {
    fixture_dirs_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// Sub-directories of `root` holding a `fixture.json` (or `root` itself).
pub fn fixture_dirs_in(root: &Path) -> Option<Vec<PathBuf>> {
    if root.join("fixture.json").is_file() {
        return Some(vec![root.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("fixture.json").is_file())
        .collect();
    v.sort();
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

/// The outcome of one tensor comparison.
#[derive(Debug, Clone)]
pub struct Compared {
    /// What was compared.
    pub name: String,
    /// Max absolute error.
    pub max_abs: f32,
    /// Allowed max absolute error.
    pub tol: f32,
    /// Extra criterion text (e.g. sign agreement), if any.
    pub note: String,
    /// Within tolerance.
    pub ok: bool,
}

/// Max-abs comparison with the encoder/decoder tolerance `rel·max(1, max|ref|)`.
pub fn compare_rel(name: &str, got: &Tensor, want: &Tensor, rel: f32) -> Result<Compared> {
    let w = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
    compare_abs(name, got, want, rel * scale)
}

/// Max-abs comparison with an absolute tolerance.
pub fn compare_abs(name: &str, got: &Tensor, want: &Tensor, tol: f32) -> Result<Compared> {
    let g = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let w = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if g.len() != w.len() {
        return Ok(Compared {
            name: name.into(),
            max_abs: f32::INFINITY,
            tol,
            note: format!("shape {:?} vs reference {:?}", got.dims(), want.dims()),
            ok: false,
        });
    }
    let mut max_abs = 0f32;
    for (a, b) in g.iter().zip(&w) {
        let d = (a - b).abs();
        if d.is_nan() || d > max_abs {
            max_abs = if d.is_nan() { f32::INFINITY } else { d };
        }
    }
    Ok(Compared {
        name: name.into(),
        max_abs,
        tol,
        note: String::new(),
        ok: max_abs <= tol,
    })
}

/// Exact comparison (e.g. decisions, BOOL masks, I32 labels).
pub fn compare_exact(name: &str, got: &Tensor, want: &Tensor) -> Result<Compared> {
    let mut c = compare_abs(name, got, want, 0.0)?;
    c.note = "exact".into();
    Ok(c)
}
