//! One-prompt segmentation (MedSAM-2): prompt one image, then segment the same
//! kind of object in a stream of further, unrelated 2-D images, each
//! conditioned on a *confidence memory bank* of earlier results.
//!
//! * [`ConfidenceBank`]: the bank with its tensors (memory features in BF16,
//!   their position encoding, predicted IoU, image embedding, source index),
//!   the pick-up and update rules of [`crate::confidence_bank`], and
//!   save/load to a safetensors file.
//! * [`OnePromptSession`]: the image-sequence loop of Medical-SAM2's
//!   `validation_sam` over a [`Sam2Base`]: [`OnePromptSession::add_prompt`]
//!   (points, box or low-res mask logits), [`OnePromptSession::add_mask`] (a
//!   mask used as the answer), [`OnePromptSession::segment`] (no prompt).
//!
//! # Per image
//! 1. Preprocess ([`Preprocessing`]) and encode: top level `X` `[1, C, h, w]`,
//!    its sine encoding, the high-resolution levels.
//! 2. Empty bank: `X' = X` (Medical-SAM2 adds a zero vector; `no_mem_embed`
//!    is not used). Otherwise pick up memories ([`crate::confidence_bank::pickup`]:
//!    cosine of the stored embeddings to `X` flattened per
//!    [`BankMode`], softmax, sample or top-k) and run memory attention over
//!    their features and position encodings (no temporal encoding, no object
//!    pointers): `X'` `[1, C, h, w]`.
//! 3. Prompt encoder (no prompt: no sparse token at all, `no_mask_embed`
//!    dense) and mask decoder on `X'` (single mask with the stability
//!    fallback; the object score is reported, not applied).
//! 4. Memory encoder on `X'` and the mask upsampled bilinearly to `S×S`
//!    (`is_mask_from_pts` when points or a box were given); features and
//!    position encoding rounded to BF16.
//! 5. Bank update ([`crate::confidence_bank::decide_update`]) with the
//!    predicted IoU and the embedding `X'` flattened `(C, H, W)`, unless frozen.
//!
//! [`BankMode`]: crate::confidence_bank::BankMode

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::confidence_bank::{
    self as cb, BankAction, BankMode, BankOptions, BankUpdate, Pickup, Preprocessing, Retrieval,
    SplitMix64,
};
use crate::error::{Error, Result};
use crate::memory_bank::{SelectedMemory, SpatialMemory};
use crate::modeling::sam2_base::{resize_aa, Sam2Base};
use crate::sam2_image_predictor::{validate_prompt, Prompt};
use crate::transforms;

/// Tag in the `format` metadata of a saved bank.
pub const BANK_FORMAT: &str = "medsam2-confidence-bank";
/// Version of the saved-bank layout.
pub const BANK_FORMAT_VERSION: u32 = 1;

/// One stored memory.
#[derive(Debug, Clone)]
pub struct BankEntry {
    features: Tensor,
    pos_enc: Tensor,
    iou: f32,
    embedding: Arc<Vec<f32>>,
    embedding_norm: f64,
    source: u64,
    features_f32: Arc<Vec<f32>>,
    features_norm: f64,
}

impl BankEntry {
    /// An entry from memory features and their position encoding (both
    /// `[1, Cm, h, w]`, stored as BF16), the predicted IoU, the image embedding
    /// (`C·h·w` values, `(C, H, W)` order) and the source image index.
    pub fn new(
        features: &Tensor,
        pos_enc: &Tensor,
        iou: f32,
        embedding: Vec<f32>,
        source: u64,
    ) -> Result<Self> {
        let fd = features.dims();
        if fd.len() != 4 || fd[0] != 1 || fd.contains(&0) {
            return Err(Error::invalid(format!(
                "bank entry: features must be [1, Cm, h, w], got {fd:?}"
            )));
        }
        if pos_enc.dims() != fd {
            return Err(Error::invalid(format!(
                "bank entry: position encoding {:?} does not match features {fd:?}",
                pos_enc.dims()
            )));
        }
        if embedding.is_empty() || !embedding.len().is_multiple_of(fd[2] * fd[3]) {
            return Err(Error::invalid(format!(
                "bank entry: embedding of {} values is not C·{}·{}",
                embedding.len(),
                fd[2],
                fd[3]
            )));
        }
        if !iou.is_finite() {
            return Err(Error::invalid(format!(
                "bank entry: IoU {iou} is not finite"
            )));
        }
        let features = features.to_dtype(DType::BF16)?.contiguous()?;
        let pos_enc = pos_enc.to_dtype(DType::BF16)?.contiguous()?;
        let features_f32 = features
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let features_norm = cb::norm(&features_f32);
        let embedding_norm = cb::norm(&embedding);
        Ok(Self {
            features,
            pos_enc,
            iou,
            embedding: Arc::new(embedding),
            embedding_norm,
            source,
            features_f32: Arc::new(features_f32),
            features_norm,
        })
    }

    /// Memory features `[1, Cm, h, w]` BF16.
    pub fn features(&self) -> &Tensor {
        &self.features
    }

    /// Their position encoding `[1, Cm, h, w]` BF16.
    pub fn pos_enc(&self) -> &Tensor {
        &self.pos_enc
    }

    /// Predicted IoU of the mask the memory was encoded from.
    pub fn iou(&self) -> f32 {
        self.iou
    }

    /// The image embedding (memory-conditioned features, `(C, H, W)` order).
    pub fn embedding(&self) -> &[f32] {
        &self.embedding
    }

    /// Index of the image the memory came from.
    pub fn source(&self) -> u64 {
        self.source
    }

    /// The features as f32, flattened `(C, H, W)`.
    pub fn features_f32(&self) -> &[f32] {
        &self.features_f32
    }
}

/// The confidence memory bank (see [`crate::confidence_bank`] for the rules
/// and the modes).
#[derive(Debug, Clone)]
pub struct ConfidenceBank {
    options: BankOptions,
    entries: Vec<BankEntry>,
    /// Cosines between the stored memories, `K×K` row-major.
    gram: Vec<f32>,
    frozen: bool,
    rng: SplitMix64,
}

impl ConfidenceBank {
    /// An empty bank.
    pub fn new(options: BankOptions) -> Result<Self> {
        options
            .validate()
            .map_err(|e| Error::invalid(format!("bank options: {e}")))?;
        let seed = match options.retrieval {
            Retrieval::Sample { seed } => seed,
            Retrieval::TopK(_) => 0,
        };
        Ok(Self {
            options,
            entries: Vec::new(),
            gram: Vec::new(),
            frozen: false,
            rng: SplitMix64::new(seed),
        })
    }

    /// The options.
    pub fn options(&self) -> &BankOptions {
        &self.options
    }

    /// Changes the retrieval rule (e.g. top-k with another `k`) of a loaded bank.
    pub fn set_retrieval(&mut self, retrieval: Retrieval) -> Result<()> {
        let mut o = self.options;
        o.retrieval = retrieval;
        o.validate()
            .map_err(|e| Error::invalid(format!("bank options: {e}")))?;
        self.options = o;
        if let Retrieval::Sample { seed } = retrieval {
            self.rng = SplitMix64::new(seed);
        }
        Ok(())
    }

    /// The entries, in bank order (insertion order).
    pub fn entries(&self) -> &[BankEntry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bank is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the bank holds `capacity` entries.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.options.capacity
    }

    /// Source image index of every entry, bank order.
    pub fn sources(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.source).collect()
    }

    /// Predicted IoU of every entry, bank order.
    pub fn ious(&self) -> Vec<f32> {
        self.entries.iter().map(|e| e.iou).collect()
    }

    /// Cosine matrix of the stored memories (`K×K`, row-major).
    pub fn gram(&self) -> &[f32] {
        &self.gram
    }

    /// Whether updates are disabled.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Disables (or re-enables) updates: a frozen bank is used for pick-up
    /// but never changed.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    /// State of the sampling generator.
    pub fn rng_state(&self) -> u64 {
        self.rng.state
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.gram.clear();
    }

    fn check_entry(&self, e: &BankEntry) -> Result<()> {
        if let Some(first) = self.entries.first() {
            if first.features.dims() != e.features.dims()
                || first.embedding.len() != e.embedding.len()
            {
                return Err(Error::invalid(format!(
                    "bank entry: features {:?} / embedding {} do not match the bank's {:?} / {}",
                    e.features.dims(),
                    e.embedding.len(),
                    first.features.dims(),
                    first.embedding.len()
                )));
            }
        }
        Ok(())
    }

    fn similarity_to_entries(&self, e: &BankEntry) -> Vec<f32> {
        let eps = self.options.normalize_eps;
        self.entries
            .iter()
            .map(|b| {
                cb::cosine_with_norms(
                    &b.features_f32,
                    b.features_norm,
                    &e.features_f32,
                    e.features_norm,
                    eps,
                )
            })
            .collect()
    }

    /// Appends an entry without the replacement rule (restoring a bank, or
    /// teacher forcing); an error when the bank is full or the shapes differ.
    pub fn insert(&mut self, entry: BankEntry) -> Result<()> {
        if self.is_full() {
            return Err(Error::invalid(format!(
                "bank is full ({} entries)",
                self.options.capacity
            )));
        }
        self.check_entry(&entry)?;
        let s = self.similarity_to_entries(&entry);
        self.gram = cb::gram_after_update(&self.gram, self.entries.len(), None, &s);
        self.entries.push(entry);
        Ok(())
    }

    /// Applies the update rule to a new memory (nothing happens when frozen).
    pub fn update(&mut self, entry: BankEntry) -> Result<BankUpdate> {
        if self.frozen {
            return Ok(BankUpdate {
                action: BankAction::Frozen,
                test: None,
            });
        }
        self.check_entry(&entry)?;
        let s = self.similarity_to_entries(&entry);
        let ious = self.ious();
        let k = self.entries.len();
        let upd = cb::decide_update(
            self.options.capacity,
            &self.gram,
            &s,
            &ious,
            entry.iou,
            self.options.iou_margin,
        )
        .ok_or_else(|| Error::invalid("bank update: inconsistent bank state"))?;
        match upd.action {
            BankAction::Append => {
                self.gram = cb::gram_after_update(&self.gram, k, None, &s);
                self.entries.push(entry);
            }
            BankAction::Replace { dropped } => {
                self.gram = cb::gram_after_update(&self.gram, k, Some(dropped), &s);
                self.entries.remove(dropped);
                self.entries.push(entry);
            }
            _ => {}
        }
        Ok(upd)
    }

    /// The pick-up for a query (the current image's top-level features
    /// `[C, h, w]` flattened channel-major; reordered here per the mode).
    /// `forced` replays recorded bank indices. `None` when the bank is empty.
    pub fn pickup(
        &mut self,
        features_chw: &[f32],
        channels: usize,
        forced: Option<&[usize]>,
    ) -> Result<Option<Pickup>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let want = self.entries[0].embedding.len();
        if features_chw.len() != want {
            return Err(Error::invalid(format!(
                "pick-up: query of {} values, bank embeddings hold {want}",
                features_chw.len()
            )));
        }
        if let Some(f) = forced {
            if f.is_empty() || f.iter().any(|&i| i >= self.entries.len()) {
                return Err(Error::invalid(format!(
                    "pick-up: forced indices {f:?} out of range for {} entries",
                    self.entries.len()
                )));
            }
        }
        let reordered;
        let query: &[f32] = match self.options.mode {
            BankMode::Reference => {
                reordered = cb::flatten_pixel_major(features_chw, channels);
                &reordered
            }
            BankMode::Fixed => features_chw,
        };
        let u = match self.options.retrieval {
            Retrieval::Sample { .. } => self.rng.next_f64(),
            Retrieval::TopK(_) => 0.0,
        };
        let embeds: Vec<(&[f32], f64)> = self
            .entries
            .iter()
            .map(|e| (&e.embedding[..], e.embedding_norm))
            .collect();
        Ok(cb::pickup(
            &embeds,
            query,
            cb::norm(query),
            self.options.retrieval,
            forced,
            u,
            self.options.normalize_eps,
        ))
    }

    /// The chosen entries as memories for memory attention (no temporal
    /// encoding, no pointers).
    pub fn selected_memory(&self, indices: &[usize]) -> Result<SelectedMemory> {
        let mut out = SelectedMemory {
            ptr_tpos_norm: 1,
            ..Default::default()
        };
        for &i in indices {
            let e = self.entries.get(i).ok_or_else(|| {
                Error::invalid(format!(
                    "bank index {i} out of range ({} entries)",
                    self.entries.len()
                ))
            })?;
            out.spatial.push(SpatialMemory {
                features: e.features.clone(),
                pos_enc: e.pos_enc.clone(),
                tpos_index: None,
                cache: None,
            });
        }
        Ok(out)
    }

    /// The bank with its tensors on `device`.
    pub fn to_device(&self, device: &candle_core::Device) -> Result<Self> {
        let mut out = self.clone();
        for e in &mut out.entries {
            e.features = e.features.to_device(device)?;
            e.pos_enc = e.pos_enc.to_device(device)?;
        }
        Ok(out)
    }

    /// Checks that the entries fit `model` (memory `[1, Cm, S/16, S/16]`,
    /// embedding `C·(S/16)²`).
    pub fn check_model(&self, model: &Sam2Base) -> Result<()> {
        let cm = model.cfg.mem_dim();
        let c = model.cfg.hidden_dim();
        let f = model.cfg.image_size / 16;
        for (i, e) in self.entries.iter().enumerate() {
            if e.features.dims() != [1, cm, f, f] {
                return Err(Error::invalid(format!(
                    "bank entry {i}: memory features {:?}, this model needs [1, {cm}, {f}, {f}] (mem_dim, image_size/16)",
                    e.features.dims()
                )));
            }
            if e.embedding.len() != c * f * f {
                return Err(Error::invalid(format!(
                    "bank entry {i}: embedding of {} values, this model needs {c}·{f}·{f} = {}",
                    e.embedding.len(),
                    c * f * f
                )));
            }
        }
        Ok(())
    }

    /// Serialises the bank (safetensors bytes). Tensors: `entry.{i}.features`
    /// and `entry.{i}.pos_enc` BF16 `[1, Cm, h, w]`, `entry.{i}.embedding`
    /// F32 `[C·h·w]`, `ious` F32 `[K]`, `sources` I64 `[K]`. Metadata: format,
    /// version, every option, frozen flag, generator state, `images_seen`.
    pub fn to_bytes(&self, images_seen: u64) -> Result<Vec<u8>> {
        let o = &self.options;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), BANK_FORMAT.to_string());
        meta.insert("version".to_string(), BANK_FORMAT_VERSION.to_string());
        meta.insert("mode".to_string(), o.mode.name().to_string());
        meta.insert("capacity".to_string(), o.capacity.to_string());
        meta.insert("iou_margin".to_string(), format!("{:?}", o.iou_margin));
        let retrieval = match o.retrieval {
            Retrieval::Sample { seed } => format!("sample:{seed}"),
            Retrieval::TopK(k) => format!("top-k:{k}"),
        };
        meta.insert("retrieval".to_string(), retrieval);
        meta.insert(
            "preprocessing".to_string(),
            o.preprocessing.name().to_string(),
        );
        meta.insert(
            "mask_threshold".to_string(),
            format!("{:?}", o.mask_threshold),
        );
        meta.insert("nearest_output".to_string(), o.nearest_output.to_string());
        meta.insert(
            "normalize_eps".to_string(),
            format!("{:?}", o.normalize_eps),
        );
        meta.insert("frozen".to_string(), self.frozen.to_string());
        meta.insert("rng_state".to_string(), self.rng.state.to_string());
        meta.insert("images_seen".to_string(), images_seen.to_string());
        meta.insert("num_entries".to_string(), self.entries.len().to_string());

        let mut blobs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            for (name, t) in [("features", &e.features), ("pos_enc", &e.pos_enc)] {
                let v = t.flatten_all()?.to_vec1::<half::bf16>()?;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                blobs.push((
                    format!("entry.{i}.{name}"),
                    safetensors::Dtype::BF16,
                    t.dims().to_vec(),
                    bytes,
                ));
            }
            let bytes: Vec<u8> = e.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
            blobs.push((
                format!("entry.{i}.embedding"),
                safetensors::Dtype::F32,
                vec![e.embedding.len()],
                bytes,
            ));
        }
        let ious: Vec<u8> = self
            .entries
            .iter()
            .flat_map(|e| e.iou.to_le_bytes())
            .collect();
        blobs.push((
            "ious".into(),
            safetensors::Dtype::F32,
            vec![self.entries.len()],
            ious,
        ));
        let src: Vec<u8> = self
            .entries
            .iter()
            .flat_map(|e| (e.source as i64).to_le_bytes())
            .collect();
        blobs.push((
            "sources".into(),
            safetensors::Dtype::I64,
            vec![self.entries.len()],
            src,
        ));
        let views = blobs
            .iter()
            .map(|(n, d, s, b)| {
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::invalid(format!("bank save: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::invalid(format!("bank save: {e}")))
    }

    /// Writes the bank to a safetensors file (see [`ConfidenceBank::to_bytes`])
    /// through the atomic writer: a failed write leaves an existing file as it
    /// was. The path is checked first with [`check_bank_output`] (without
    /// input files): only an existing bank file is replaced.
    pub fn save(&self, path: impl AsRef<Path>, images_seen: u64) -> Result<()> {
        self.save_checked(path, images_seen, &[])
    }

    /// [`ConfidenceBank::save`], refusing also a path that is the same file as
    /// one of `inputs` (however named: links, aliases).
    pub fn save_checked(
        &self,
        path: impl AsRef<Path>,
        images_seen: u64,
        inputs: &[&Path],
    ) -> Result<()> {
        let path = path.as_ref();
        check_bank_output(path, inputs)?;
        let bytes = self.to_bytes(images_seen)?;
        crate::output::write_atomic(path, &bytes).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    }

    /// Reads a bank written by [`ConfidenceBank::save`]; returns it with its
    /// `images_seen`. Every tensor's dtype and shape and every metadata value
    /// are checked.
    pub fn load(path: impl AsRef<Path>) -> Result<(Self, u64)> {
        let path = path.as_ref();
        // Regular files only (a FIFO would block); a bank is far below this bound.
        let bytes =
            crate::output::read_input(path, crate::limits::MAX_TENSOR_BYTES, "MAX_TENSOR_BYTES")
                .map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses [`ConfidenceBank::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<(Self, u64)> {
        let bad = |m: String| Error::invalid(format!("not a valid confidence-bank file: {m}"));
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e}")))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let get = |k: &str| -> Result<&str> {
            meta.get(k)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("metadata `{k}` missing")))
        };
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T> {
            v.parse::<T>().map_err(|_| {
                Error::invalid(format!(
                    "not a valid confidence-bank file: metadata `{k}` = `{v}` is not a number"
                ))
            })
        }
        if get("format")? != BANK_FORMAT {
            return Err(bad(format!(
                "format is `{}`, expected `{BANK_FORMAT}`",
                get("format")?
            )));
        }
        let version: u32 = num("version", get("version")?)?;
        if version != BANK_FORMAT_VERSION {
            return Err(bad(format!(
                "version {version}, this build reads version {BANK_FORMAT_VERSION}"
            )));
        }
        let mode = BankMode::parse(get("mode")?)
            .ok_or_else(|| bad(format!("unknown mode `{}`", get("mode").unwrap_or(""))))?;
        let retrieval = {
            let r = get("retrieval")?;
            if let Some(s) = r.strip_prefix("sample:") {
                Retrieval::Sample {
                    seed: num("retrieval", s)?,
                }
            } else if let Some(k) = r.strip_prefix("top-k:") {
                Retrieval::TopK(num("retrieval", k)?)
            } else {
                return Err(bad(format!("unknown retrieval `{r}`")));
            }
        };
        let preprocessing = Preprocessing::parse(get("preprocessing")?).ok_or_else(|| {
            bad(format!(
                "unknown preprocessing `{}`",
                get("preprocessing").unwrap_or("")
            ))
        })?;
        let options = BankOptions {
            mode,
            capacity: num("capacity", get("capacity")?)?,
            iou_margin: num("iou_margin", get("iou_margin")?)?,
            retrieval,
            preprocessing,
            mask_threshold: num("mask_threshold", get("mask_threshold")?)?,
            nearest_output: num("nearest_output", get("nearest_output")?)?,
            normalize_eps: num("normalize_eps", get("normalize_eps")?)?,
        };
        let frozen: bool = num("frozen", get("frozen")?)?;
        let rng_state: u64 = num("rng_state", get("rng_state")?)?;
        let images_seen: u64 = num("images_seen", get("images_seen")?)?;
        let n: usize = num("num_entries", get("num_entries")?)?;
        let mut bank = Self::new(options).map_err(|e| bad(format!("{e}")))?;
        if n > options.capacity {
            return Err(bad(format!(
                "{n} entries for a capacity of {}",
                options.capacity
            )));
        }
        let tensor = |name: &str,
                      dtype: safetensors::Dtype,
                      rank: usize|
         -> Result<safetensors::tensor::TensorView<'_>> {
            let v = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor `{name}` missing")))?;
            if v.dtype() != dtype || v.shape().len() != rank {
                return Err(bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} of rank {rank}",
                    v.dtype(),
                    v.shape()
                )));
            }
            Ok(v)
        };
        let ious = tensor("ious", safetensors::Dtype::F32, 1)?;
        let sources = tensor("sources", safetensors::Dtype::I64, 1)?;
        if ious.shape() != [n] || sources.shape() != [n] {
            return Err(bad(format!(
                "`ious` {:?} / `sources` {:?} do not hold {n} entries",
                ious.shape(),
                sources.shape()
            )));
        }
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let iou_v = f32s(ious.data());
        let src_v: Vec<i64> = sources
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let dev = candle_core::Device::Cpu;
        for i in 0..n {
            let mut ts = Vec::new();
            for name in ["features", "pos_enc"] {
                let key = format!("entry.{i}.{name}");
                let v = tensor(&key, safetensors::Dtype::BF16, 4)?;
                let vals: Vec<half::bf16> = v
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                    .collect();
                ts.push(Tensor::from_vec(vals, v.shape(), &dev)?);
            }
            let ekey = format!("entry.{i}.embedding");
            let e = tensor(&ekey, safetensors::Dtype::F32, 1)?;
            if src_v[i] < 0 {
                return Err(bad(format!(
                    "entry {i} has a negative source index {}",
                    src_v[i]
                )));
            }
            let entry = BankEntry::new(&ts[0], &ts[1], iou_v[i], f32s(e.data()), src_v[i] as u64)
                .map_err(|e| bad(format!("entry {i}: {e}")))?;
            bank.insert(entry)
                .map_err(|e| bad(format!("entry {i}: {e}")))?;
        }
        bank.frozen = frozen;
        bank.rng.state = rng_state;
        Ok((bank, images_seen))
    }
}

/// Largest safetensors header read to recognise an existing bank file (the
/// safetensors format's own limit).
const MAX_BANK_HEADER_BYTES: u64 = 100_000_000;

/// Whether the regular file at `path` starts like a saved confidence bank: a
/// safetensors header whose metadata `format` is [`BANK_FORMAT`]. Only the
/// header is read (bounded); any read or parse failure is `false`.
fn is_bank_file(path: &Path) -> bool {
    use std::io::Read;
    let Ok((f, len)) = crate::output::open_input(path) else {
        return false;
    };
    let mut f = f.take(len.min(8 + MAX_BANK_HEADER_BYTES));
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(n);
    if n > MAX_BANK_HEADER_BYTES || 8 + n > len {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|v| {
            v.get("__metadata__")?
                .get("format")?
                .as_str()
                .map(|f| f == BANK_FORMAT)
        })
        .unwrap_or(false)
}

/// Checks, before anything is written, that a bank may be saved to `path`:
/// the project's output rules ([`crate::output::check_output`]: not the same
/// file as one of `inputs`, not a directory or other non-regular file, a
/// writable folder), and an existing file there is replaced only if it is
/// itself a confidence bank, so that a mistyped path never overwrites a
/// checkpoint, an image or any other file.
pub fn check_bank_output(path: &Path, inputs: &[&Path]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    crate::output::check_output(path, inputs).map_err(io)?;
    if std::fs::metadata(path).is_ok_and(|m| m.is_file()) && !is_bank_file(path) {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a confidence-bank file; refusing to overwrite it",
        )));
    }
    Ok(())
}

/// An image for the session.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// Interleaved RGB `[H, W, 3]`, row-major.
    Rgb8 {
        /// Pixel bytes.
        data: &'a [u8],
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// Grey `[H, W]` (e.g. a windowed CT slice), used as grey RGB.
    Grey8 {
        /// Pixel bytes.
        data: &'a [u8],
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// Grey `[H, W]` already mapped to `0..=1` (e.g. a CT slice through an
    /// intensity window), used as grey RGB: as the image predictor's
    /// `set_image_grey_f32` under [`Preprocessing::Sam2`]; under
    /// [`Preprocessing::MedicalSam2`], which works on 8-bit images, each value
    /// is first rounded to `round(255 · v)`. Values must be finite.
    GreyF32 {
        /// Values, normally in `0..=1` (used as they are under
        /// [`Preprocessing::Sam2`], clamped under [`Preprocessing::MedicalSam2`]).
        data: &'a [f32],
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// Pixels already preprocessed `[1, 3, S, S]` for an image of `height`×`width`.
    Pixels {
        /// The model input.
        pixels: &'a Tensor,
        /// Original rows.
        height: usize,
        /// Original columns.
        width: usize,
    },
}

impl ImageInput<'_> {
    /// `[height, width]`.
    pub fn hw(&self) -> [usize; 2] {
        match *self {
            ImageInput::Rgb8 { height, width, .. }
            | ImageInput::Grey8 { height, width, .. }
            | ImageInput::GreyF32 { height, width, .. }
            | ImageInput::Pixels { height, width, .. } => [height, width],
        }
    }
}

/// Pillow's `Image.resize(size, BILINEAR)` on interleaved u8 pixels (two
/// passes, horizontal first, fixed-point taps as `ImagingResample`): what
/// torchvision's `Resize` does to the PIL images of Medical-SAM2's datasets.
pub fn resize_bilinear_pil_u8(
    src: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<Vec<u8>> {
    if channels == 0
        || h == 0
        || w == 0
        || out_h == 0
        || out_w == 0
        || src.len() != channels * h * w
    {
        return Err(Error::invalid(format!(
            "resize: {} bytes for {h}x{w}x{channels} -> {out_h}x{out_w}",
            src.len()
        )));
    }
    const PRECISION_BITS: u32 = 32 - 8 - 2;
    // (first source index, taps) per output index.
    let taps = |in_size: usize, out_size: usize| -> Vec<(usize, Vec<i64>)> {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale;
        (0..out_size)
            .map(|xx| {
                let center = (xx as f64 + 0.5) * scale;
                let ss = 1.0 / filterscale;
                let xmin = ((center - support + 0.5) as i64).max(0);
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
                let n = xmax.max(0) as usize;
                let pre: Vec<f64> = (0..n)
                    .map(|x| {
                        let t = ((x as f64 + xmin as f64 - center + 0.5) * ss).abs();
                        if t < 1.0 {
                            1.0 - t
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let ww: f64 = pre.iter().sum();
                let k = pre
                    .iter()
                    .map(|p| {
                        let v = if ww != 0.0 { p / ww } else { *p };
                        let f = v * (1u32 << PRECISION_BITS) as f64;
                        (if v < 0.0 { -0.5 + f } else { 0.5 + f }) as i32 as i64
                    })
                    .collect();
                (xmin as usize, k)
            })
            .collect()
    };
    let clip8 = |ss: i64| -> u8 { (ss >> PRECISION_BITS).clamp(0, 255) as u8 };
    let half = 1i64 << (PRECISION_BITS - 1);
    let vt = if out_h != h {
        Some(taps(h, out_h))
    } else {
        None
    };
    // Source rows the vertical pass reads.
    let (y0, y1) = match &vt {
        Some(t) => (t[0].0, t[out_h - 1].0 + t[out_h - 1].1.len()),
        None => (0, h),
    };
    let tmp: Vec<u8> = if out_w != w {
        let ht = taps(w, out_w);
        let mut tmp = vec![0u8; (y1 - y0) * out_w * channels];
        for yy in 0..y1 - y0 {
            let row = &src[(yy + y0) * w * channels..][..w * channels];
            for (xx, (start, k)) in ht.iter().enumerate() {
                for c in 0..channels {
                    let mut ss = half;
                    for (x, kv) in k.iter().enumerate() {
                        ss += row[(x + start) * channels + c] as i64 * kv;
                    }
                    tmp[(yy * out_w + xx) * channels + c] = clip8(ss);
                }
            }
        }
        tmp
    } else {
        src[y0 * w * channels..y1 * w * channels].to_vec()
    };
    let Some(vt) = vt else { return Ok(tmp) };
    let mut out = vec![0u8; out_h * out_w * channels];
    for (yy, (start, k)) in vt.iter().enumerate() {
        for xx in 0..out_w {
            for c in 0..channels {
                let mut ss = half;
                for (y, kv) in k.iter().enumerate() {
                    ss += tmp[((start - y0 + y) * out_w + xx) * channels + c] as i64 * kv;
                }
                out[(yy * out_w + xx) * channels + c] = clip8(ss);
            }
        }
    }
    Ok(out)
}

/// The model input `[3, S, S]` (planar f32) of an image under `prep`.
pub fn preprocess(image: &ImageInput, prep: Preprocessing, size: usize) -> Result<Vec<f32>> {
    let grey_rgb;
    let (rgb, h, w) = match *image {
        ImageInput::Rgb8 {
            data,
            height,
            width,
        } => (data, height, width),
        ImageInput::Grey8 {
            data,
            height,
            width,
        } => {
            if data.len() != height * width {
                return Err(Error::invalid(format!(
                    "grey image: {} bytes for {height}x{width}",
                    data.len()
                )));
            }
            grey_rgb = data.iter().flat_map(|&g| [g, g, g]).collect::<Vec<u8>>();
            (&grey_rgb[..], height, width)
        }
        ImageInput::GreyF32 {
            data,
            height,
            width,
        } => {
            if data.len() != height * width {
                return Err(Error::invalid(format!(
                    "grey image: {} values for {height}x{width}",
                    data.len()
                )));
            }
            if prep == Preprocessing::Sam2 {
                return transforms::preprocess_grey_f32(data, height, width, size);
            }
            if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
                return Err(Error::invalid(format!("non-finite pixel value {bad}")));
            }
            grey_rgb = data
                .iter()
                .flat_map(|&v| {
                    let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    [g, g, g]
                })
                .collect::<Vec<u8>>();
            (&grey_rgb[..], height, width)
        }
        ImageInput::Pixels { pixels, .. } => {
            if pixels.dims() != [1, 3, size, size] {
                return Err(Error::invalid(format!(
                    "pixels must be [1, 3, {size}, {size}], got {:?}",
                    pixels.dims()
                )));
            }
            return Ok(pixels
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?);
        }
    };
    if h == 0 || w == 0 || rgb.len() != h * w * 3 {
        return Err(Error::invalid(format!(
            "RGB image: {} bytes for {h}x{w}x3",
            rgb.len()
        )));
    }
    match prep {
        Preprocessing::Sam2 => transforms::preprocess_rgb_u8(rgb, h, w, size),
        Preprocessing::MedicalSam2 => {
            let resized;
            let px: &[u8] = if h == size && w == size {
                rgb
            } else {
                resized = resize_bilinear_pil_u8(rgb, 3, h, w, size, size)?;
                &resized
            };
            let n = size * size;
            let mut out = vec![0f32; 3 * n];
            for (i, p) in px.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * n + i] = p[c] as f32 / 255.0;
                }
            }
            Ok(out)
        }
    }
}

/// Intermediate tensors of one image (for parity checks and debugging).
#[derive(Debug, Clone)]
pub struct OnePromptTrace {
    /// Top-level features before conditioning `[1, C, h, w]`.
    pub vision_feats: Tensor,
    /// Memory-conditioned features `[1, C, h, w]` (decoder and memory-encoder input, bank embedding).
    pub conditioned_feats: Tensor,
    /// Sparse prompt embeddings `[1, P, C]` (`P` = 0 without prompt).
    pub sparse_embeddings: Tensor,
    /// New memory features `[1, Cm, h, w]` BF16.
    pub maskmem_features: Tensor,
    /// Their position encoding `[1, Cm, h, w]` BF16.
    pub maskmem_pos_enc: Tensor,
}

/// Wall-clock time of each stage of one image, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// Resize and normalisation.
    pub preprocess_ms: f64,
    /// Hiera + FPN.
    pub image_encoder_ms: f64,
    /// Pick-up and memory attention (0 with an empty bank).
    pub conditioning_ms: f64,
    /// Prompt encoder and mask decoder.
    pub heads_ms: f64,
    /// Memory encoder.
    pub memory_encoder_ms: f64,
    /// Bank bookkeeping: embedding copy, similarities, update rule.
    pub bank_update_ms: f64,
    /// The whole call, output masks at the original size included.
    pub total_ms: f64,
}

impl StepTimings {
    /// Turns cumulative stamps into per-stage durations (total stays cumulative).
    fn stamps_to_durations(&mut self) {
        let stamps = [
            &mut self.preprocess_ms,
            &mut self.image_encoder_ms,
            &mut self.conditioning_ms,
            &mut self.heads_ms,
            &mut self.memory_encoder_ms,
            &mut self.bank_update_ms,
        ];
        let mut prev = 0.0;
        for s in stamps {
            let t = *s;
            *s = t - prev;
            prev = t;
        }
    }
}

/// The result of one image.
#[derive(Debug, Clone)]
pub struct OnePromptOutput {
    /// Index of the image in the session (source index of its memory).
    pub index: u64,
    /// Original `[height, width]`.
    pub orig_hw: [usize; 2],
    /// Low-resolution mask logits `[1, 1, S/4, S/4]` (unclamped; object score not applied).
    pub low_res_logits: Tensor,
    /// Mask logits at the original size `[H·W]` (bilinear, or nearest in the reference options).
    pub logits: Vec<f32>,
    /// Binary mask `[H·W]`, 0/1 (`logits > mask_threshold`).
    pub mask: Vec<u8>,
    /// Predicted IoU.
    pub iou: f32,
    /// Object-score logit.
    pub object_score: f32,
    /// Whether points, a box or a mask were given.
    pub prompted: bool,
    /// Bank sources before this image.
    pub bank_before: Vec<u64>,
    /// The pick-up (none for an empty bank).
    pub pickup: Option<Pickup>,
    /// Source images of the chosen memories.
    pub picked_sources: Vec<u64>,
    /// What the bank did with the new memory.
    pub update: BankUpdate,
    /// Source image of the dropped entry (replacements).
    pub dropped_source: Option<u64>,
    /// Intermediates.
    pub trace: OnePromptTrace,
    /// Where the time went.
    pub timings: StepTimings,
}

enum PromptKind<'p> {
    None,
    Prompt(&'p Prompt),
    Mask(&'p [u8]),
}

/// The image-sequence session of one-prompt segmentation.
pub struct OnePromptSession {
    model: Arc<Sam2Base>,
    bank: ConfidenceBank,
    dense_pe: Tensor,
    next_index: u64,
    forced: Option<Vec<usize>>,
}

impl OnePromptSession {
    /// A session over `model` with an empty bank.
    pub fn new(model: Arc<Sam2Base>, options: BankOptions) -> Result<Self> {
        let bank = ConfidenceBank::new(options)?;
        Self::with_bank(model, bank, 0)
    }

    /// A session continuing from `bank` (e.g. loaded from a file); the next
    /// image gets index `images_seen`.
    pub fn with_bank(model: Arc<Sam2Base>, bank: ConfidenceBank, images_seen: u64) -> Result<Self> {
        bank.check_model(&model)?;
        let bank = bank.to_device(model.device())?;
        let dense_pe = model.sam_prompt_encoder.get_dense_pe()?;
        Ok(Self {
            model,
            bank,
            dense_pe,
            next_index: images_seen,
            forced: None,
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<Sam2Base> {
        &self.model
    }

    /// The bank.
    pub fn bank(&self) -> &ConfidenceBank {
        &self.bank
    }

    /// Replaces the bank (checked against the model).
    pub fn set_bank(&mut self, bank: ConfidenceBank) -> Result<()> {
        bank.check_model(&self.model)?;
        self.bank = bank.to_device(self.model.device())?;
        Ok(())
    }

    /// Freezes (or unfreezes) the bank.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.bank.set_frozen(frozen);
    }

    /// Number of images processed (the next image's index).
    pub fn images_seen(&self) -> u64 {
        self.next_index
    }

    /// Sets the next image's index.
    pub fn set_next_index(&mut self, index: u64) {
        self.next_index = index;
    }

    /// Replays a recorded choice: the next image attends to these bank
    /// indices instead of the retrieval rule's choice.
    pub fn force_next_pick(&mut self, indices: Vec<usize>) {
        self.forced = Some(indices);
    }

    /// Saves the bank and the image count to a safetensors file (see
    /// [`ConfidenceBank::save`]: only an existing bank file is replaced).
    pub fn save_bank(&self, path: impl AsRef<Path>) -> Result<()> {
        self.bank.save(path, self.next_index)
    }

    /// The bank and the image count as safetensors bytes (what
    /// [`OnePromptSession::save_bank`] writes).
    pub fn bank_to_bytes(&self) -> Result<Vec<u8>> {
        self.bank.to_bytes(self.next_index)
    }

    /// Loads a bank from [`OnePromptSession::bank_to_bytes`] output (its
    /// options included) and continues its image count. On error the
    /// session is unchanged.
    pub fn load_bank_from_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let (bank, seen) = ConfidenceBank::from_bytes(bytes)?;
        self.set_bank(bank)?;
        self.next_index = seen;
        Ok(())
    }

    /// Loads a bank saved by [`OnePromptSession::save_bank`] (its options
    /// included) and continues its image count.
    pub fn load_bank(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let (bank, seen) = ConfidenceBank::load(path)?;
        self.set_bank(bank)?;
        self.next_index = seen;
        Ok(())
    }

    /// Segments an image with a prompt (points, box and/or low-res mask
    /// logits, in original pixels), conditioned on the bank; its memory then
    /// goes through the bank's update rule.
    pub fn add_prompt(&mut self, image: &ImageInput, prompt: &Prompt) -> Result<OnePromptOutput> {
        self.step(image, PromptKind::Prompt(prompt))
    }

    /// Uses a binary mask `[H·W]` (non-zero = object) as the answer for an
    /// image, as SAM 2 does for mask prompts: the mask logits are `±10`, the
    /// IoU 1, and its memory is encoded from the mask.
    pub fn add_mask(&mut self, image: &ImageInput, mask: &[u8]) -> Result<OnePromptOutput> {
        self.step(image, PromptKind::Mask(mask))
    }

    /// Segments an image from the bank alone.
    pub fn segment(&mut self, image: &ImageInput) -> Result<OnePromptOutput> {
        self.step(image, PromptKind::None)
    }

    fn step(&mut self, image: &ImageInput, prompt: PromptKind) -> Result<OnePromptOutput> {
        let model = self.model.clone();
        let opts = *self.bank.options();
        let s = model.cfg.image_size;
        let low = s / 4;
        let orig_hw = image.hw();
        let [h, w] = orig_hw;
        if h == 0 || w == 0 {
            return Err(Error::invalid("empty image"));
        }
        match &prompt {
            PromptKind::Prompt(p) => validate_prompt(p, h, w, low)?,
            PromptKind::Mask(m) if m.len() != h * w => {
                return Err(Error::invalid(format!(
                    "mask of {} values for a {h}x{w} image",
                    m.len()
                )))
            }
            _ => {}
        }
        let prompted = !matches!(prompt, PromptKind::None);
        let dev = model.device().clone();
        let clock = Instant::now();
        let mut timings = StepTimings::default();
        let lap = |slot: &mut f64| {
            let now = clock.elapsed().as_secs_f64() * 1e3;
            *slot = now;
        };
        let px = preprocess(image, opts.preprocessing, s)?;
        let pixels = Tensor::from_vec(px, (1, 3, s, s), &dev)?;
        lap(&mut timings.preprocess_ms);
        let feats = model.forward_image(&pixels)?;
        lap(&mut timings.image_encoder_ms);
        let c = model.cfg.hidden_dim();

        // Memory conditioning.
        let bank_before = self.bank.sources();
        let forced = self.forced.take();
        let query = feats
            .vision_feats
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let pickup = self.bank.pickup(&query, c, forced.as_deref())?;
        let (cond, picked_sources) = match &pickup {
            None => (feats.vision_feats.clone(), Vec::new()),
            Some(p) => {
                let sel = self.bank.selected_memory(&p.chosen)?;
                let (x, _) = model.prepare_memory_conditioned_features(&feats, false, &sel)?;
                (
                    x,
                    p.chosen
                        .iter()
                        .map(|&i| self.bank.entries()[i].source)
                        .collect(),
                )
            }
        };
        let high_res = feats.high_res.as_ref().map(|(a, b)| (a, b));
        lap(&mut timings.conditioning_ms);

        // Heads.
        let (low_res, high_res_masks, iou, score, sparse, from_pts, out_logits) = match prompt {
            PromptKind::Mask(m) => {
                let mf: Vec<f32> = m.iter().map(|&v| if v != 0 { 1.0 } else { 0.0 }).collect();
                let mt = Tensor::from_vec(mf.clone(), (1, 1, h, w), &dev)?;
                let at_s = if h != s || w != s {
                    resize_aa(&mt, s, s)?
                } else {
                    mt
                };
                let bin = at_s.ge(0.5f32)?.to_dtype(DType::F32)?;
                let high = ((&bin * 20.0)? - 10.0)?;
                let low_t = resize_aa(&high, low, low)?;
                let any = mf.iter().any(|&v| v > 0.0);
                let logits: Vec<f32> = mf.iter().map(|&v| v * 20.0 - 10.0).collect();
                let sparse = Tensor::zeros((1, 0, c), DType::F32, &dev)?;
                (
                    low_t,
                    high,
                    1.0f32,
                    if any { 10.0f32 } else { -10.0 },
                    sparse,
                    false,
                    Some(logits),
                )
            }
            other => {
                let p = match other {
                    PromptKind::Prompt(p) => Some(p),
                    _ => None,
                };
                let mut coords: Vec<f32> = Vec::new();
                let mut labels: Vec<f32> = Vec::new();
                let mut mask_in = None;
                if let Some(p) = p {
                    if let Some([x0, y0, x1, y1]) = p.bbox {
                        for (xy, l) in [([x0, y0], 2.0), ([x1, y1], 3.0)] {
                            coords.extend(transforms::transform_coords(xy, orig_hw, s));
                            labels.push(l);
                        }
                    }
                    for (pt, l) in p.points.iter().zip(&p.labels) {
                        coords.extend(transforms::transform_coords(*pt, orig_hw, s));
                        labels.push(*l as f32);
                    }
                    if let Some(m) = &p.mask_input {
                        mask_in = Some(
                            Tensor::from_vec(m.clone(), (1, 1, low, low), &dev)?
                                .to_dtype(model.dtype())?,
                        );
                    }
                }
                let n = labels.len();
                let pts = Tensor::from_vec(coords, (1, n, 2), &dev)?;
                let lbl = Tensor::from_vec(labels, (1, n), &dev)?;
                let points = if n > 0 { Some((&pts, &lbl)) } else { None };
                let (sparse, dense) =
                    model
                        .sam_prompt_encoder
                        .forward(points, None, mask_in.as_ref())?;
                let out = model.sam_mask_decoder.forward(
                    &cond,
                    &self.dense_pe,
                    &sparse,
                    &dense,
                    false,
                    false,
                    high_res,
                )?;
                let low_t = out.masks.to_dtype(DType::F32)?;
                let high = low_t.upsample_bilinear2d(s, s, false)?;
                let iou = out
                    .iou_pred
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?[0];
                let score = out
                    .object_score_logits
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?[0];
                (low_t, high, iou, score, sparse, n > 0, None)
            }
        };

        lap(&mut timings.heads_ms);

        // Memory.
        let score_t = Tensor::from_vec(vec![score], (1, 1), &dev)?;
        let (mf, mp) = model.encode_new_memory(
            &cond,
            &high_res_masks,
            &score_t,
            from_pts,
            &model.new_memory,
        )?;
        let mp = mp.to_dtype(DType::BF16)?;
        lap(&mut timings.memory_encoder_ms);
        let embedding = cond.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let index = self.next_index;
        let entry = BankEntry::new(&mf, &mp, iou, embedding, index)?;
        let update = self.bank.update(entry)?;
        let dropped_source = match update.action {
            BankAction::Replace { dropped } => bank_before.get(dropped).copied(),
            _ => None,
        };
        self.next_index += 1;
        lap(&mut timings.bank_update_ms);

        // Output at the original size.
        let logits = match out_logits {
            Some(l) => l,
            None => {
                let up = if opts.nearest_output {
                    low_res.upsample_nearest2d(h, w)?
                } else {
                    low_res.upsample_bilinear2d(h, w, false)?
                };
                up.flatten_all()?.to_vec1::<f32>()?
            }
        };
        let mask = logits
            .iter()
            .map(|&v| u8::from(v > opts.mask_threshold))
            .collect();
        lap(&mut timings.total_ms);
        timings.stamps_to_durations();
        Ok(OnePromptOutput {
            index,
            orig_hw,
            low_res_logits: low_res,
            logits,
            mask,
            iou,
            object_score: score,
            prompted,
            bank_before,
            pickup,
            picked_sources,
            update,
            dropped_source,
            timings,
            trace: OnePromptTrace {
                vision_feats: feats.vision_feats,
                conditioned_feats: cond,
                sparse_embeddings: sparse,
                maskmem_features: mf,
                maskmem_pos_enc: mp,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow 11.0 `Image.fromarray(a).resize((w, h), Image.BILINEAR)` on a
    /// random 5x7 RGB image (numpy seed 3): down, up and height-only.
    #[test]
    fn pil_bilinear_matches_pillow() {
        let src: [u8; 105] = [
            106, 152, 249, 131, 184, 200, 0, 21, 253, 147, 202, 107, 249, 169, 138, 149, 119, 166,
            224, 148, 172, 93, 167, 142, 248, 26, 81, 218, 150, 66, 2, 191, 60, 129, 179, 90, 69,
            104, 110, 97, 157, 106, 152, 251, 62, 7, 248, 171, 33, 123, 79, 176, 37, 20, 94, 49,
            149, 127, 206, 244, 28, 119, 54, 0, 192, 233, 18, 116, 191, 165, 184, 184, 199, 165,
            253, 174, 33, 113, 1, 85, 117, 119, 202, 235, 124, 228, 99, 219, 144, 255, 80, 160,
            144, 242, 18, 75, 183, 96, 223, 141, 165, 158, 48, 189, 33,
        ];
        let down = [
            135, 136, 178, 109, 118, 144, 149, 168, 114, 148, 136, 142, 87, 194, 133, 106, 136,
            105, 119, 98, 126, 76, 147, 141, 100, 176, 187, 150, 138, 172, 172, 85, 162, 84, 161,
            132,
        ];
        assert_eq!(resize_bilinear_pil_u8(&src, 3, 5, 7, 3, 4).unwrap(), down);
        let up: [u8; 216] = [
            106, 152, 249, 123, 173, 216, 73, 112, 224, 33, 61, 221, 147, 202, 107, 226, 176, 131,
            193, 141, 154, 174, 129, 168, 224, 148, 172, 100, 159, 202, 155, 129, 166, 144, 98,
            158, 93, 104, 153, 84, 197, 86, 171, 179, 110, 151, 139, 131, 132, 126, 142, 168, 152,
            143, 97, 172, 137, 187, 84, 103, 222, 88, 78, 163, 156, 65, 13, 181, 58, 102, 174, 85,
            97, 137, 107, 79, 125, 114, 93, 155, 103, 134, 225, 87, 99, 194, 124, 87, 157, 113, 98,
            121, 66, 122, 85, 33, 109, 89, 108, 107, 136, 170, 89, 160, 159, 50, 131, 70, 105, 233,
            115, 42, 215, 157, 39, 178, 148, 99, 128, 108, 183, 77, 93, 133, 51, 128, 101, 113,
            175, 77, 160, 173, 56, 145, 111, 10, 196, 222, 15, 148, 201, 79, 149, 184, 166, 175,
            191, 198, 157, 238, 176, 61, 143, 80, 67, 120, 43, 127, 158, 113, 197, 224, 70, 212,
            158, 110, 158, 204, 125, 149, 198, 141, 151, 160, 223, 82, 153, 189, 72, 170, 124, 103,
            156, 79, 152, 134, 79, 195, 121, 124, 228, 99, 187, 172, 203, 157, 151, 206, 116, 128,
            129, 242, 18, 75, 196, 79, 190, 160, 134, 187, 110, 173, 116, 48, 189, 33,
        ];
        assert_eq!(resize_bilinear_pil_u8(&src, 3, 5, 7, 8, 9).unwrap(), up);
        let vert = [
            100, 158, 203, 181, 116, 149, 93, 76, 173, 85, 197, 87, 198, 173, 117, 115, 113, 142,
            170, 152, 144, 105, 219, 118, 63, 169, 155, 103, 143, 99, 142, 100, 81, 120, 74, 128,
            86, 156, 186, 64, 146, 106, 71, 213, 156, 133, 132, 228, 116, 170, 161, 224, 81, 151,
            179, 69, 176, 81, 131, 140, 78, 195, 120,
        ];
        assert_eq!(resize_bilinear_pil_u8(&src, 3, 5, 7, 3, 7).unwrap(), vert);
    }
}
