//! Loading official checkpoints: PyTorch `.pt`/`.pth` zip pickles (state dict
//! under `"model"`, fp32/fp16/bf16 storage) and safetensors (memory-mapped or
//! from bytes), under the official state-dict key names.
//!
//! A [`Checkpoint`] hands out a candle `VarBuilder` that records every key the
//! model asks for: a missing or wrongly shaped tensor is a typed error naming the
//! key (and both shapes), and [`Checkpoint::check_all_used`] reports keys the
//! model did not use (a checkpoint of another model).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::limits::MAX_TENSOR_BYTES;

/// Floating-point type the network computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDType {
    /// 32-bit float (default; what parity is proven in).
    #[default]
    F32,
    /// IEEE half precision. On the CPU the network computes in f32 (weights
    /// widened once at load): candle's f16 CPU kernels are slower than our
    /// f32 ones, so there f16 is f32.
    F16,
    /// bfloat16. On the CPU: bf16 weights in the linear layers (packed at
    /// load for the AVX512-BF16 kernel, products summed in f32), everything
    /// else f32; on a CPU without AVX512-BF16 it computes in f32
    /// (`modeling::kernels::bf16_linear`). On GPUs: bf16 tensors throughout.
    BF16,
}

impl ComputeDType {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            ComputeDType::F32 => DType::F32,
            ComputeDType::F16 => DType::F16,
            ComputeDType::BF16 => DType::BF16,
        }
    }

    /// The dtype of the model's tensors on `dev`: f32 on the CPU whatever the
    /// mode (see [`ComputeDType::BF16`], [`ComputeDType::F16`]), [`Self::dtype`]
    /// elsewhere.
    pub fn tensor_dtype(self, dev: &Device) -> DType {
        if dev.is_cpu() {
            DType::F32
        } else {
            self.dtype()
        }
    }

    /// Whether the linear layers run the CPU bf16 kernel's mode on `dev`.
    pub fn bf16_matmuls(self, dev: &Device) -> bool {
        dev.is_cpu() && self == ComputeDType::BF16
    }

    /// Checks at start-up that the backend computes in this dtype on `dev`
    /// (a tiny convolution and matrix product), so that an unsupported choice
    /// fails here with a clear message rather than at the first slice.
    pub fn check_supported(self, dev: &Device) -> Result<()> {
        let probe = || -> candle_core::Result<()> {
            let dt = self.tensor_dtype(dev);
            let x = Tensor::ones((1, 1, 2, 2), dt, dev)?;
            let k = Tensor::ones((1, 1, 1, 1), dt, dev)?;
            x.conv2d(&k, 0, 1, 1, 1)?;
            let m = Tensor::ones((2, 2), dt, dev)?;
            m.matmul(&m)?;
            Ok(())
        };
        probe().map_err(|e| {
            Error::invalid(format!(
                "dtype {self:?} is not supported on {dev:?} by the tensor backend ({}); use f32{}",
                crate::error::candle_message(&e),
                if dev.is_cpu() { " or f16" } else { "" }
            ))
        })
    }

    /// Parses `f32`, `f16`/`fp16`/`half`, `bf16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::BF16),
            _ => Err(Error::invalid(format!(
                "unknown dtype `{s}` (f32, f16, bf16)"
            ))),
        }
    }
}

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal (feature `cuda`).
    Cuda(usize),
    /// Metal GPU with this ordinal (feature `metal`).
    Metal(usize),
}

impl DeviceKind {
    /// Opens the device, or says which feature is missing.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(i) => {
                if cfg!(feature = "cuda") {
                    Ok(Device::new_cuda(i)?)
                } else {
                    Err(Error::invalid(
                        "CUDA support was not compiled in (build with feature `cuda`)",
                    ))
                }
            }
            DeviceKind::Metal(i) => {
                if cfg!(feature = "metal") {
                    Ok(Device::new_metal(i)?)
                } else {
                    Err(Error::invalid(
                        "Metal support was not compiled in (build with feature `metal`)",
                    ))
                }
            }
        }
    }

    /// Parses `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        let (name, idx) = match s.split_once(':') {
            Some((n, i)) => (
                n.to_string(),
                i.parse::<usize>()
                    .map_err(|_| Error::invalid(format!("bad device index in `{s}`")))?,
            ),
            None => (s.clone(), 0),
        };
        match name.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(idx)),
            "metal" | "mps" => Ok(Self::Metal(idx)),
            _ => Err(Error::invalid(format!(
                "unknown device `{s}` (cpu, cuda[:N], metal[:N])"
            ))),
        }
    }
}

enum Source {
    Mmaped(candle_core::safetensors::MmapedSafetensors),
    Buffered(candle_core::safetensors::BufferedSafetensors),
    Pth(PthSource),
}

/// A `.pt` checkpoint: the validated tensor records and the file they live in.
/// (candle's `PthTensors` would re-read the pickle and print skipped entries.)
struct PthSource {
    path: std::path::PathBuf,
    infos: std::collections::HashMap<String, candle_core::pickle::TensorInfo>,
    /// Absolute file offset of each stored (uncompressed) member's data, as
    /// `torch.save` writes them: those tensors are read in place, with one
    /// positioned read straight into the tensor's buffer.
    stored: std::collections::HashMap<String, u64>,
    /// The file, opened once for the in-place reads.
    file: Mutex<std::fs::File>,
}

impl PthSource {
    fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(info) = self.infos.get(name) else {
            candle_core::bail!("cannot find tensor {name}")
        };
        let fortran = info.layout.is_fortran_contiguous();
        if !info.layout.is_contiguous() && !fortran {
            candle_core::bail!("tensor {name} is not contiguous")
        }
        let shape = info.layout.shape().clone();
        let rank = shape.rank();
        let t = match self.stored.get(&info.path) {
            Some(&start) => self.read_stored(start, info)?,
            None => self.read_member(info)?,
        };
        let t = if rank > 1 && fortran {
            let rev: Vec<usize> = info.layout.dims().iter().rev().copied().collect();
            let perm: Vec<usize> = (0..rank).rev().collect();
            t.reshape(rev)?.permute(perm)?
        } else {
            t
        };
        t.to_device(dev)
    }

    /// A tensor of a stored member at file offset `start`: f32 (nearly every
    /// weight) is read straight into its buffer, other dtypes through bytes.
    fn read_stored(
        &self,
        start: u64,
        info: &candle_core::pickle::TensorInfo,
    ) -> candle_core::Result<Tensor> {
        use std::io::{Read, Seek, SeekFrom};
        let shape = info.layout.shape().clone();
        let n = shape.elem_count();
        let mut file = self
            .file
            .lock()
            .map_err(|_| candle_core::Error::Msg("checkpoint file lock poisoned".into()))?;
        file.seek(SeekFrom::Start(start + info.layout.start_offset() as u64))?;
        if info.dtype == DType::F32 && cfg!(target_endian = "little") {
            let mut v = vec![0f32; n];
            // SAFETY: the bytes of `v` (any bit pattern is a valid f32; the
            // file holds little-endian f32, the machine's order).
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), n * 4) };
            file.read_exact(bytes)?;
            return Tensor::from_vec(v, shape, &Device::Cpu);
        }
        let mut bytes = vec![0u8; n * info.dtype.size_in_bytes()];
        file.read_exact(&mut bytes)?;
        Tensor::from_raw_buffer(&bytes, info.dtype, shape.dims(), &Device::Cpu)
    }

    /// A tensor of a compressed member, read through the zip reader.
    fn read_member(&self, info: &candle_core::pickle::TensorInfo) -> candle_core::Result<Tensor> {
        use std::io::Read;
        let file = std::io::BufReader::new(std::fs::File::open(&self.path)?);
        let mut zip = zip::ZipArchive::new(file).map_err(candle_core::Error::wrap)?;
        let mut reader = zip.by_name(&info.path).map_err(candle_core::Error::wrap)?;
        std::io::copy(
            &mut reader.by_ref().take(info.layout.start_offset() as u64),
            &mut std::io::sink(),
        )?;
        let shape = info.layout.shape();
        let mut bytes = vec![0u8; shape.elem_count() * info.dtype.size_in_bytes()];
        reader.read_exact(&mut bytes)?;
        Tensor::from_raw_buffer(&bytes, info.dtype, shape.dims(), &Device::Cpu)
    }
}

impl Source {
    fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        match self {
            Source::Mmaped(s) => s.load(name, dev),
            Source::Buffered(s) => s.load(name, dev),
            Source::Pth(s) => s.load(name, dev),
        }
    }
}

/// Reads the tensor records of a PyTorch zip checkpoint: the `data.pkl` is
/// pre-scanned (bounded expansion, lengths within the file), unpickled by
/// candle with panics caught silently, the state dict taken from `"model"` or
/// the top level, and every tensor checked against the bytes of its storage
/// member. An entry that is not a readable tensor is an error naming it.
fn read_pth_infos(path: &Path, shown: &str) -> Result<PthInfos> {
    use candle_core::pickle::{Object, Stack};
    use std::io::Read;
    let file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| Error::Io {
        path: shown.to_string(),
        source: e,
    })?);
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| checkpoint_err(shown, format!("zip: {e}")))?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| checkpoint_err(shown, "no data.pkl in the archive"))?;
    let mut pkl = Vec::new();
    {
        let m = zip
            .by_name(&pkl_name)
            .map_err(|e| checkpoint_err(shown, format!("{pkl_name}: {e}")))?;
        if m.size() > MAX_PICKLE_BYTES {
            return Err(checkpoint_err(
                shown,
                format!("{pkl_name} of {} bytes is too large", m.size()),
            ));
        }
        m.take(MAX_PICKLE_BYTES)
            .read_to_end(&mut pkl)
            .map_err(|e| checkpoint_err(shown, format!("{pkl_name}: {e}")))?;
    }
    crate::pickle_scan::scan(&pkl)
        .map_err(|e| checkpoint_err(shown, format!("{pkl_name}: {e}")))?;
    let dir = std::path::PathBuf::from(pkl_name.strip_suffix(".pkl").unwrap_or(&pkl_name));
    let parsed = crate::error::catch_panic_quietly(|| -> candle_core::Result<_> {
        let mut stack = Stack::empty();
        stack.read_loop(&mut &pkl[..])?;
        let obj = stack.finalize()?;
        let obj = match obj {
            Object::Build { callable, args } => match *callable {
                Object::Reduce { callable, .. } => match *callable {
                    Object::Class {
                        module_name,
                        class_name,
                    } if module_name == "__torch__" && class_name == "Module" => *args,
                    _ => Object::None,
                },
                _ => Object::None,
            },
            obj => obj,
        };
        let Object::Dict(top) = obj else {
            return Ok(Vec::new());
        };
        let model = Object::Unicode("model".into());
        let entries = match top.iter().position(|(k, _)| *k == model) {
            Some(i) => match top.into_iter().nth(i).map(|(_, v)| v) {
                Some(Object::Dict(d)) => d,
                _ => Vec::new(),
            },
            None => top,
        };
        Ok(entries)
    })
    .map_err(|p| checkpoint_err(shown, format!("malformed pickle ({p})")))?
    .map_err(|e| {
        checkpoint_err(
            shown,
            format!("malformed pickle ({})", crate::error::candle_message(&e)),
        )
    })?;
    let mut infos = std::collections::HashMap::new();
    let mut stored = std::collections::HashMap::new();
    for (k, v) in parsed {
        let key = match &k {
            Object::Unicode(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let unreadable = |why: String| {
            checkpoint_err(
                shown,
                format!("entry `{key}` is not a readable tensor ({why})"),
            )
        };
        // candle's conversion indexes the tuples it is given (a panic on short ones).
        let info = match crate::error::catch_panic_quietly(|| v.into_tensor_info(k, &dir)) {
            Ok(Ok(Some(info))) => info,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => return Err(unreadable(crate::error::candle_message(&e))),
            Err(p) => return Err(unreadable(p)),
        };
        let bad = |why: String| checkpoint_err(shown, format!("tensor `{key}`: {why}"));
        let member = zip
            .by_name(&info.path)
            .map_err(|e| bad(format!("storage {}: {e}", info.path)))?;
        let elems = info.layout.shape().elem_count() as u64;
        let need = (info.layout.start_offset() as u64)
            .saturating_add(elems.saturating_mul(info.dtype.size_in_bytes() as u64));
        if need > MAX_TENSOR_BYTES {
            return Err(bad(format!(
                "{need} bytes exceed the limit of {MAX_TENSOR_BYTES} (MAX_TENSOR_BYTES)"
            )));
        }
        if need > member.size() {
            return Err(bad(format!(
                "shape {:?} needs {need} bytes, its storage holds {}",
                info.layout.dims(),
                member.size()
            )));
        }
        if member.compression() == zip::CompressionMethod::Stored && !member.encrypted() {
            if let Some(start) = member.data_start() {
                stored.insert(info.path.clone(), start);
            }
        }
        infos.insert(key, info);
    }
    Ok((infos, stored))
}

/// Tensor records by key, and the data offsets of the stored members by path.
type PthInfos = (
    std::collections::HashMap<String, candle_core::pickle::TensorInfo>,
    std::collections::HashMap<String, u64>,
);

/// Largest `data.pkl` read from a `.pt` checkpoint (real ones are well under 1 MiB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

struct Inner {
    source: Source,
    origin: String,
    shapes: BTreeMap<String, Vec<usize>>,
    used: Mutex<BTreeSet<String>>,
    first_error: Mutex<Option<Error>>,
}

/// An opened checkpoint.
#[derive(Clone)]
pub struct Checkpoint {
    inner: Arc<Inner>,
    origin: String,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("tensors", &self.inner.shapes.len())
            .finish()
    }
}

fn checkpoint_err(path: &str, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("{path}: {e}"))
}

impl Checkpoint {
    /// Opens a checkpoint by extension: `.safetensors` (memory-mapped) or
    /// `.pt`/`.pth`/`.ckpt` (PyTorch zip pickle; the state dict under `"model"`
    /// if present, else the top-level dict).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        crate::output::open_input(path).map_err(|e| Error::Io {
            path: shown.clone(),
            source: e,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => {
                // SAFETY: the file is mapped read-only; like every mmap-based
                // loader we rely on it not being truncated while mapped.
                let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
                    .map_err(|e| checkpoint_err(&shown, e))?;
                let shapes = st
                    .tensors()
                    .into_iter()
                    .map(|(k, v)| (k, v.shape().to_vec()))
                    .collect();
                Ok(Self::from_source(Source::Mmaped(st), shapes, shown))
            }
            "pt" | "pth" | "ckpt" | "bin" => Self::open_pth(path, shown),
            _ => Err(checkpoint_err(
                &shown,
                "unknown extension (expected .safetensors, .pt or .pth)",
            )),
        }
    }

    fn open_pth(path: &Path, shown: String) -> Result<Self> {
        // Validate the zip container first: candle's pickle reader trusts it.
        let f = std::fs::File::open(path).map_err(|e| Error::Io {
            path: shown.clone(),
            source: e,
        })?;
        let mut magic = [0u8; 4];
        use std::io::Read;
        (&f).take(4)
            .read_exact(&mut magic)
            .map_err(|_| checkpoint_err(&shown, "file too short to be a PyTorch checkpoint"))?;
        if &magic != b"PK\x03\x04" {
            return Err(checkpoint_err(
                &shown,
                "not a PyTorch zip checkpoint (legacy non-zip torch.save files are not supported)",
            ));
        }
        let (infos, stored) = read_pth_infos(path, &shown)?;
        if infos.is_empty() {
            return Err(checkpoint_err(
                &shown,
                "no tensors found (expected a state dict, under \"model\" or at top level)",
            ));
        }
        let shapes = infos
            .iter()
            .map(|(k, v)| (k.clone(), v.layout.shape().dims().to_vec()))
            .collect();
        let pth = PthSource {
            path: path.to_path_buf(),
            infos,
            stored,
            file: Mutex::new(f),
        };
        Ok(Self::from_source(Source::Pth(pth), shapes, shown))
    }

    /// A safetensors checkpoint held in memory (e.g. embedded or downloaded by the host).
    pub fn from_safetensors_bytes(bytes: Vec<u8>) -> Result<Self> {
        let st = candle_core::safetensors::BufferedSafetensors::new(bytes)
            .map_err(|e| checkpoint_err("<bytes>", e))?;
        let shapes = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.shape().to_vec()))
            .collect();
        Ok(Self::from_source(
            Source::Buffered(st),
            shapes,
            "<bytes>".into(),
        ))
    }

    fn from_source(source: Source, shapes: BTreeMap<String, Vec<usize>>, origin: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                origin: origin.clone(),
                shapes,
                used: Mutex::new(BTreeSet::new()),
                first_error: Mutex::new(None),
            }),
            origin,
        }
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.inner.shapes.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.inner.shapes.is_empty()
    }

    /// Key names and shapes.
    pub fn shapes(&self) -> &BTreeMap<String, Vec<usize>> {
        &self.inner.shapes
    }

    /// Where it came from (a path or `<bytes>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A `VarBuilder` over this checkpoint that converts to `dtype` on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(Recorder(self.inner.clone())),
            dtype,
            device.clone(),
        )
    }

    /// The first typed error (missing key, shape mismatch) met while building.
    pub fn take_error(&self) -> Option<Error> {
        self.inner
            .first_error
            .lock()
            .ok()
            .and_then(|mut e| e.take())
    }

    /// Errors if the checkpoint holds keys the model never asked for.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self
            .inner
            .used
            .lock()
            .map_err(|_| Error::Checkpoint("poisoned lock".into()))?;
        let unexpected: Vec<&String> = self
            .inner
            .shapes
            .keys()
            .filter(|k| !used.contains(*k))
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = unexpected
            .iter()
            .take(8)
            .map(|k| format!("`{k}`"))
            .collect();
        Err(Error::Checkpoint(format!(
            "{}: {} unexpected key(s) for this model config: {}{}",
            self.origin,
            unexpected.len(),
            shown.join(", "),
            if unexpected.len() > 8 { ", ..." } else { "" }
        )))
    }
}

/// Whether every value is finite: an exponent of all ones is infinite or NaN
/// (an OR over the bits, which the compiler vectorises, per block).
fn all_finite(v: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    v.chunks(4096).all(|c| {
        c.iter()
            .fold(0u32, |bad, x| bad | u32::from(x.to_bits() & EXP == EXP))
            == 0
    })
}

struct Recorder(Arc<Inner>);

impl Recorder {
    fn fail(&self, e: Error) -> candle_core::Error {
        let msg = e.to_string();
        if let Ok(mut slot) = self.0.first_error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        candle_core::Error::Msg(msg)
    }
}

impl Recorder {
    /// Loads `name` as `dtype`, refusing NaN or infinite weights (a corrupt
    /// or diverged checkpoint would otherwise run and give empty masks).
    fn load_finite(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.0.source.load(name, dev)?.to_dtype(dtype)?;
        if t.dtype().is_float() && t.elem_count() > 0 {
            let finite = match (t.dtype(), t.device()) {
                // One pass over the data (most weights: f32 on the CPU).
                (DType::F32, Device::Cpu) if t.is_contiguous() => {
                    let (g, l) = t.storage_and_layout();
                    match &*g {
                        candle_core::Storage::Cpu(c) => {
                            let start = l.start_offset();
                            all_finite(&c.as_slice::<f32>()?[start..start + t.elem_count()])
                        }
                        _ => candle_core::bail!("checkpoint: CPU tensor without CPU storage"),
                    }
                }
                // x - x is 0 for finite x and NaN otherwise; the sum keeps a NaN.
                _ => t
                    .broadcast_sub(&t)?
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()?
                    .is_finite(),
            };
            if !finite {
                return Err(self.fail(Error::Checkpoint(format!(
                    "{}: tensor `{name}` holds NaN or infinite values",
                    self.0.origin
                ))));
            }
        }
        Ok(t)
    }
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(found) = self.0.shapes.get(name) else {
            return Err(self.fail(Error::Checkpoint(format!(
                "missing key `{name}` (shape {:?})",
                s.dims()
            ))));
        };
        if found.as_slice() != s.dims() {
            return Err(self.fail(Error::ShapeMismatch {
                key: name.to_string(),
                expected: s.dims().to_vec(),
                found: found.clone(),
            }));
        }
        if let Ok(mut u) = self.0.used.lock() {
            u.insert(name.to_string());
        }
        self.load_finite(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if !self.0.shapes.contains_key(name) {
            return Err(self.fail(Error::Checkpoint(format!("missing key `{name}`"))));
        }
        if let Ok(mut u) = self.0.used.lock() {
            u.insert(name.to_string());
        }
        self.load_finite(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.shapes.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn finite_check_finds_nan_and_inf_anywhere() {
        let mut v = vec![1.5f32; 10_000];
        v[17] = f32::MAX;
        v[18] = -0.0;
        v[19] = f32::MIN_POSITIVE / 4.0; // subnormal
        assert!(all_finite(&v));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 4095, 4096, 9999] {
                let mut w = v.clone();
                w[at] = bad;
                assert!(!all_finite(&w), "{bad} at {at}");
            }
        }
        assert!(all_finite(&[]));
    }
}
