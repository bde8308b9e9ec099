//! The decision maths of MedSAM-2's *confidence memory bank* (one-prompt
//! segmentation of unrelated 2-D images), on plain slices so that it builds
//! without `std`.
//!
//! The bank holds at most `capacity` entries, each a memory (features and
//! position encoding), the predicted IoU of the mask it was encoded from and
//! the image embedding it came from. Two decisions are made per image:
//!
//! * **pick-up** (before the mask decoder): the current image is compared with
//!   every stored image embedding by cosine similarity; a softmax turns the
//!   similarities into probabilities and one entry is drawn
//!   ([`Retrieval::Sample`], Medical-SAM2) or the `k` most similar entries are
//!   taken ([`Retrieval::TopK`], deterministic). See [`pickup`].
//! * **update** (after the memory encoder): while the bank is not full the new
//!   memory is appended; once full it replaces the stored memory most similar
//!   to the bank's least-similar-to-the-new-memory entry, when the new memory
//!   is less similar to that entry than its nearest neighbour is, and its IoU is
//!   within `iou_margin` of the dropped entry's. See [`decide_update`].
//!
//! The tensor-carrying bank and the image-sequence session that use these
//! functions live in `one_prompt` (with `std`).
//!
//! # Modes
//! [`BankMode::Reference`] reproduces Medical-SAM2's `validation_sam`
//! (`func_2d/function.py`) exactly, quirks included;
//! [`BankMode::Fixed`] (the default) fixes what is plainly a bug there.
//! Every difference:
//!
//! | | `Reference` | `Fixed` |
//! |---|---|---|
//! | pick-up query | current features flattened pixel-major, `(HW, C)`, while stored embeddings are flattened channel-major, `(C, H, W)`: the two vectors are compared element by element although their elements do not correspond, so the cosines are ≈ 0 and the softmax ≈ uniform | both flattened `(C, H, W)`: the cosine measures feature similarity |
//! | preprocessing | Medical-SAM2's `transform_test`: Pillow bilinear resize of the u8 image to `S×S`, `/255`, **no** mean/std normalisation ([`Preprocessing::MedicalSam2`]) | SAM 2's `SAM2Transforms`: `/255`, antialiased bilinear on floats, ImageNet mean/std ([`Preprocessing::Sam2`]), what the official SAM 2 weights were trained with |
//! | retrieval | one entry drawn from the softmax ([`Retrieval::Sample`]; replayable from a recorded index) | the `k` most similar entries ([`Retrieval::TopK`], `k = 1` by default), concatenated for memory attention |
//! | output masks | low-res logits upsampled *nearest* and thresholded at 0.5 (on logits), as its evaluation does | bilinear (align_corners=False) to the original size, threshold 0, as SAM 2's predictors |
//!
//! Kept in both modes: the stored embedding is the memory-conditioned feature
//! map; the memory encoder sees the memory-conditioned features; the empty
//! bank adds zeros (not `no_mem_embed`); no temporal encoding or object
//! pointers; the replacement rule and its constants. All constants are fields
//! of [`BankOptions`]; a mode only chooses defaults.

use alloc::vec;
use alloc::vec::Vec;

/// `F.normalize`'s default epsilon: vectors are divided by `max(‖v‖, eps)`.
pub const NORMALIZE_EPS: f32 = 1e-12;
/// Bank capacity of Medical-SAM2's validation (hard-coded there).
pub const DEFAULT_CAPACITY: usize = 16;
/// IoU margin of the replacement rule (hard-coded 0.1 there).
pub const DEFAULT_IOU_MARGIN: f32 = 0.1;

/// Which behaviour the bank follows (see the module docs for every difference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BankMode {
    /// Medical-SAM2's procedure exactly, quirks included (for parity).
    Reference,
    /// One flattening order for the pick-up similarity (the default).
    #[default]
    Fixed,
}

impl BankMode {
    /// `"reference"` or `"fixed"`.
    pub fn name(self) -> &'static str {
        match self {
            BankMode::Reference => "reference",
            BankMode::Fixed => "fixed",
        }
    }

    /// Parses [`BankMode::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reference" => Some(BankMode::Reference),
            "fixed" => Some(BankMode::Fixed),
            _ => None,
        }
    }
}

/// How pixels are prepared for the image encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preprocessing {
    /// Medical-SAM2's 2-D `transform_test`: Pillow bilinear resize of the u8
    /// image, `/255`, no normalisation.
    MedicalSam2,
    /// SAM 2's image predictor: `/255`, antialiased bilinear, ImageNet mean/std.
    Sam2,
}

impl Preprocessing {
    /// `"medical-sam2"` or `"sam2"`.
    pub fn name(self) -> &'static str {
        match self {
            Preprocessing::MedicalSam2 => "medical-sam2",
            Preprocessing::Sam2 => "sam2",
        }
    }

    /// Parses [`Preprocessing::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "medical-sam2" => Some(Preprocessing::MedicalSam2),
            "sam2" => Some(Preprocessing::Sam2),
            _ => None,
        }
    }
}

/// How the memories that condition an image are chosen from the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// One entry drawn from the softmax of the similarities (Medical-SAM2's
    /// `torch.multinomial`), from a [`SplitMix64`] stream seeded with `seed`.
    /// The draws are reproducible but not PyTorch's: parity replays recorded
    /// indices instead.
    Sample {
        /// Seed of the generator.
        seed: u64,
    },
    /// The `k` entries with the highest similarity (ties: lower bank index
    /// first), most similar first; their memories are concatenated.
    TopK(usize),
}

/// Every constant of the confidence bank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankOptions {
    /// Flattening order of the pick-up query (and the defaults below).
    pub mode: BankMode,
    /// Maximum number of entries (Medical-SAM2: 16).
    pub capacity: usize,
    /// A new memory may replace an entry only if its IoU exceeds the entry's
    /// IoU minus this margin (Medical-SAM2: 0.1).
    pub iou_margin: f32,
    /// Pick-up rule.
    pub retrieval: Retrieval,
    /// Input preprocessing.
    pub preprocessing: Preprocessing,
    /// Logit threshold of the output masks (reference 0.5, fixed 0).
    pub mask_threshold: f32,
    /// Upsample output logits with nearest neighbour (reference) instead of bilinear.
    pub nearest_output: bool,
    /// Epsilon of the L2 normalisations.
    pub normalize_eps: f32,
}

impl BankOptions {
    /// Medical-SAM2's procedure: capacity 16, margin 0.1, sampling (seed 0),
    /// its preprocessing and output thresholding.
    pub fn reference() -> Self {
        Self {
            mode: BankMode::Reference,
            capacity: DEFAULT_CAPACITY,
            iou_margin: DEFAULT_IOU_MARGIN,
            retrieval: Retrieval::Sample { seed: 0 },
            preprocessing: Preprocessing::MedicalSam2,
            mask_threshold: 0.5,
            nearest_output: true,
            normalize_eps: NORMALIZE_EPS,
        }
    }

    /// The default: capacity 16, margin 0.1, top-1 retrieval, SAM 2 preprocessing.
    pub fn fixed() -> Self {
        Self {
            mode: BankMode::Fixed,
            retrieval: Retrieval::TopK(1),
            preprocessing: Preprocessing::Sam2,
            mask_threshold: 0.0,
            nearest_output: false,
            ..Self::reference()
        }
    }

    /// The defaults of `mode`.
    pub fn for_mode(mode: BankMode) -> Self {
        match mode {
            BankMode::Reference => Self::reference(),
            BankMode::Fixed => Self::fixed(),
        }
    }

    /// Checks the values (capacity ≥ 1, finite margin, `k` ≥ 1).
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.capacity == 0 {
            return Err("bank capacity must be at least 1");
        }
        if !self.iou_margin.is_finite() {
            return Err("IoU margin must be finite");
        }
        if let Retrieval::TopK(0) = self.retrieval {
            return Err("top-k retrieval needs k >= 1");
        }
        if !(self.normalize_eps >= 0.0 && self.normalize_eps.is_finite()) {
            return Err("normalisation epsilon must be finite and >= 0");
        }
        if !self.mask_threshold.is_finite() {
            return Err("mask threshold must be finite");
        }
        Ok(())
    }
}

impl Default for BankOptions {
    fn default() -> Self {
        Self::fixed()
    }
}

/// Dot product accumulated in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Euclidean norm accumulated in f64.
pub fn norm(v: &[f32]) -> f64 {
    libm::sqrt(dot(v, v))
}

/// Cosine similarity as `⟨a/max(‖a‖,eps), b/max(‖b‖,eps)⟩` (`F.normalize`
/// then a dot product), with the norms given (see [`norm`]).
pub fn cosine_with_norms(a: &[f32], norm_a: f64, b: &[f32], norm_b: f64, eps: f32) -> f32 {
    let eps = eps as f64;
    (dot(a, b) / (norm_a.max(eps) * norm_b.max(eps))) as f32
}

/// Cosine similarity (see [`cosine_with_norms`]).
pub fn cosine(a: &[f32], b: &[f32], eps: f32) -> f32 {
    cosine_with_norms(a, norm(a), b, norm(b), eps)
}

/// Softmax of `x` (max-subtracted, f64 internally).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let e: Vec<f64> = x.iter().map(|v| libm::exp((*v - m) as f64)).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// Index of the first minimum (`torch.argmin`: a NaN counts as the minimum).
pub fn argmin_first(x: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, v) in x.iter().enumerate() {
        match best {
            None => best = Some(i),
            Some(b) => {
                if x[b].is_nan() {
                    break;
                }
                if v.is_nan() || *v < x[b] {
                    best = Some(i);
                }
            }
        }
    }
    best
}

/// Index of the first maximum (`torch.argmax`: a NaN counts as the maximum).
pub fn argmax_first(x: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, v) in x.iter().enumerate() {
        match best {
            None => best = Some(i),
            Some(b) => {
                if x[b].is_nan() {
                    break;
                }
                if v.is_nan() || *v > x[b] {
                    best = Some(i);
                }
            }
        }
    }
    best
}

/// Indices of the `k` largest values, largest first; ties keep the lower
/// index first, NaNs come last.
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| {
        let (va, vb) = (x[a], x[b]);
        match (va.is_nan(), vb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => core::cmp::Ordering::Greater,
            (false, true) => core::cmp::Ordering::Less,
            _ => vb
                .partial_cmp(&va)
                .unwrap_or(core::cmp::Ordering::Equal)
                .then(a.cmp(&b)),
        }
    });
    idx.truncate(k.min(x.len()));
    idx
}

/// Inverse-CDF draw from (unnormalised, non-negative) weights with a uniform
/// `u` in `[0, 1)`; `None` when the weights are empty or sum to zero.
pub fn sample_index(weights: &[f32], u: f64) -> Option<usize> {
    let total: f64 = weights
        .iter()
        .map(|w| if *w > 0.0 { *w as f64 } else { 0.0 })
        .sum();
    if weights.is_empty() || total <= 0.0 || !total.is_finite() {
        return None;
    }
    let target = u * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            acc += *w as f64;
            last = i;
            if target < acc {
                return Some(i);
            }
        }
    }
    Some(last)
}

/// SplitMix64: a small, fast, seedable generator (the sampling stream of
/// [`Retrieval::Sample`]); its state can be saved and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    /// Current state.
    pub state: u64,
}

impl SplitMix64 {
    /// A generator at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator whose seed mixes `seed` with a text (e.g. case name and
    /// strategy), so results do not depend on the order items are visited.
    pub fn for_item(seed: u64, item: &str) -> Self {
        // FNV-1a of the text, then one SplitMix64 step to spread it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in item.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut g = Self::new(seed ^ h);
        Self::new(g.next_u64())
    }

    /// A number in `0..n` (`0` when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Reorders a channel-major `[C, HW]` map into pixel-major `(HW, C)` order:
/// `out[p·C + c] = x[c·HW + p]` (how Medical-SAM2 flattens the current
/// features for the pick-up in [`BankMode::Reference`]).
pub fn flatten_pixel_major(x_chw: &[f32], channels: usize) -> Vec<f32> {
    if channels == 0 {
        return Vec::new();
    }
    let hw = x_chw.len() / channels;
    let mut out = vec![0f32; hw * channels];
    for c in 0..channels {
        for p in 0..hw {
            out[p * channels + c] = x_chw[c * hw + p];
        }
    }
    out
}

/// The pick-up of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Pickup {
    /// Cosine similarity of the query to each stored embedding, bank order.
    pub cosine_similarity: Vec<f32>,
    /// Their softmax.
    pub probabilities: Vec<f32>,
    /// Chosen bank indices, in attention order.
    pub chosen: Vec<usize>,
}

/// Similarities, softmax and choice of the pick-up. `embeddings` are the
/// stored embeddings with their norms, `query` the current image's vector
/// (already flattened in the mode's order) with its norm. `forced` replaces
/// the choice (replay of a recorded draw; every index must be in range);
/// otherwise [`Retrieval::Sample`] draws with `u` (one uniform) and
/// [`Retrieval::TopK`] takes the best `k`. Returns `None` for an empty bank.
pub fn pickup(
    embeddings: &[(&[f32], f64)],
    query: &[f32],
    query_norm: f64,
    retrieval: Retrieval,
    forced: Option<&[usize]>,
    u: f64,
    eps: f32,
) -> Option<Pickup> {
    if embeddings.is_empty() {
        return None;
    }
    let cos: Vec<f32> = embeddings
        .iter()
        .map(|(e, n)| cosine_with_norms(e, *n, query, query_norm, eps))
        .collect();
    let probs = softmax(&cos);
    let chosen = match (forced, retrieval) {
        (Some(f), _) => {
            if f.is_empty() || f.iter().any(|&i| i >= embeddings.len()) {
                return None;
            }
            f.to_vec()
        }
        (None, Retrieval::Sample { .. }) => vec![sample_index(&probs, u).unwrap_or(0)],
        (None, Retrieval::TopK(k)) => top_k(&cos, k.max(1)),
    };
    Some(Pickup {
        cosine_similarity: cos,
        probabilities: probs,
        chosen,
    })
}

/// What the update rule did with a new memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankAction {
    /// The bank was not full: appended.
    Append,
    /// Entry `dropped` was removed and the new memory appended at the end.
    Replace {
        /// Bank index of the removed entry.
        dropped: usize,
    },
    /// Full bank, kept: the new memory is not less similar than the nearest pair.
    KeepSimilarity,
    /// Full bank, kept: similarity test passed but the IoU test failed.
    KeepIou,
    /// The bank is frozen: nothing was considered.
    Frozen,
}

impl BankAction {
    /// The name used in the fixtures (`append`, `replace`, `keep_similarity`,
    /// `keep_iou`), or `frozen`.
    pub fn name(&self) -> &'static str {
        match self {
            BankAction::Append => "append",
            BankAction::Replace { .. } => "replace",
            BankAction::KeepSimilarity => "keep_similarity",
            BankAction::KeepIou => "keep_iou",
            BankAction::Frozen => "frozen",
        }
    }
}

/// The full-bank replacement test and its inputs (Medical-SAM2's names).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplacementTest {
    /// `s`: cosine of the new memory to each entry's memory.
    pub similarity_new_to_bank: Vec<f32>,
    /// `a = argmin s`.
    pub min_similarity_index: usize,
    /// `b = argmax M[a]` (diagonal excluded).
    pub max_similarity_index: usize,
    /// `s[a]`.
    pub sim_new_to_min: f32,
    /// `M[a, b]`.
    pub sim_min_to_max: f32,
    /// `s[a] < M[a, b]`.
    pub similarity_condition: bool,
    /// `iou_b - margin`.
    pub iou_threshold: f32,
    /// `iou_new > iou_b - margin`.
    pub iou_condition: bool,
}

/// One update decision.
#[derive(Debug, Clone, PartialEq)]
pub struct BankUpdate {
    /// What happened.
    pub action: BankAction,
    /// The test, when the bank was full.
    pub test: Option<ReplacementTest>,
}

/// The update rule. `gram` is the `K×K` cosine matrix of the stored memories
/// (row-major; its diagonal is ignored), `similarity_new` the cosines of the
/// new memory to them (`K` values), `ious` the stored IoUs. With `K <
/// capacity` the memory is appended. Returns `None` when the sizes disagree.
pub fn decide_update(
    capacity: usize,
    gram: &[f32],
    similarity_new: &[f32],
    ious: &[f32],
    new_iou: f32,
    iou_margin: f32,
) -> Option<BankUpdate> {
    let k = ious.len();
    if similarity_new.len() != k || gram.len() != k * k {
        return None;
    }
    if k < capacity {
        return Some(BankUpdate {
            action: BankAction::Append,
            test: None,
        });
    }
    let a = argmin_first(similarity_new)?;
    let mut row: Vec<f32> = gram[a * k..(a + 1) * k].to_vec();
    row[a] = f32::NEG_INFINITY;
    let b = argmax_first(&row)?;
    let sim_cond = similarity_new[a] < row[b];
    let thr = ious[b] - iou_margin;
    let iou_cond = new_iou > thr;
    let action = if !sim_cond {
        BankAction::KeepSimilarity
    } else if !iou_cond {
        BankAction::KeepIou
    } else {
        BankAction::Replace { dropped: b }
    };
    Some(BankUpdate {
        action,
        test: Some(ReplacementTest {
            similarity_new_to_bank: similarity_new.to_vec(),
            min_similarity_index: a,
            max_similarity_index: b,
            sim_new_to_min: similarity_new[a],
            sim_min_to_max: row[b],
            similarity_condition: sim_cond,
            iou_threshold: thr,
            iou_condition: iou_cond,
        }),
    })
}

/// The Gram matrix after an update: `gram` (`K×K`) with row/column `dropped`
/// removed (if any) and the new entry's similarities `similarity_new` (to the
/// entries *before* the update, bank order) appended as the last row/column,
/// its diagonal 1.
pub fn gram_after_update(
    gram: &[f32],
    k: usize,
    dropped: Option<usize>,
    similarity_new: &[f32],
) -> Vec<f32> {
    let keep: Vec<usize> = (0..k).filter(|i| Some(*i) != dropped).collect();
    let n = keep.len() + 1;
    let mut out = vec![0f32; n * n];
    for (r, &i) in keep.iter().enumerate() {
        for (c, &j) in keep.iter().enumerate() {
            out[r * n + c] = gram[i * k + j];
        }
        out[r * n + n - 1] = similarity_new[i];
        out[(n - 1) * n + r] = similarity_new[i];
    }
    out[n * n - 1] = 1.0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_extrema_first_index_and_nan() {
        assert_eq!(argmin_first(&[3.0, 1.0, 1.0, 2.0]), Some(1));
        assert_eq!(argmax_first(&[3.0, 5.0, 5.0]), Some(1));
        assert_eq!(argmax_first(&[1.0, f32::NAN, 9.0]), Some(1));
        assert_eq!(argmin_first(&[]), None);
        assert_eq!(argmax_first(&[f32::NEG_INFINITY, -1.0]), Some(1));
    }

    #[test]
    fn topk_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.9], 3), vec![3, 1, 2]);
        assert_eq!(top_k(&[0.1, f32::NAN, 0.2], 5), vec![2, 0, 1]);
    }

    #[test]
    fn softmax_and_sampling() {
        let p = softmax(&[0.0, 0.0, 0.0, 0.0]);
        assert!(p.iter().all(|v| (v - 0.25).abs() < 1e-7));
        assert_eq!(sample_index(&[0.25, 0.25, 0.5], 0.0), Some(0));
        assert_eq!(sample_index(&[0.25, 0.25, 0.5], 0.49), Some(1));
        assert_eq!(sample_index(&[0.25, 0.25, 0.5], 0.999), Some(2));
        assert_eq!(sample_index(&[0.0, 0.0], 0.5), None);
        let mut r = SplitMix64::new(7);
        let u: Vec<f64> = (0..100).map(|_| r.next_f64()).collect();
        assert!(u.iter().all(|v| (0.0..1.0).contains(v)));
        assert_eq!(SplitMix64::new(7).next_u64(), SplitMix64::new(7).next_u64());
        // Reference values of SplitMix64 from seed 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut a = SplitMix64::for_item(7, "x");
        let mut b = SplitMix64::for_item(7, "x");
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(
            SplitMix64::for_item(7, "x").next_u64(),
            SplitMix64::for_item(7, "y").next_u64()
        );
        assert!((0..100).all(|_| a.below(5) < 5));
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn pixel_major_flattening() {
        // C = 2, HW = 3: [c0p0 c0p1 c0p2 c1p0 c1p1 c1p2] -> [c0p0 c1p0 c0p1 c1p1 ...]
        let x = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0];
        assert_eq!(
            flatten_pixel_major(&x, 2),
            vec![0.0, 10.0, 1.0, 11.0, 2.0, 12.0]
        );
    }

    #[test]
    fn cosine_uses_eps_for_zero_vectors() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0], NORMALIZE_EPS), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0], NORMALIZE_EPS) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn update_rule() {
        // Not full: append.
        let u = decide_update(3, &[1.0], &[0.5], &[0.7], 0.1, 0.1).unwrap();
        assert_eq!(u.action, BankAction::Append);
        // Full (K = 3). Entries 1 and 2 are near duplicates (0.95).
        let gram = [1.0, 0.2, 0.3, 0.2, 1.0, 0.95, 0.3, 0.95, 1.0];
        // New memory least similar to entry 1 (0.1 < M[1,2] = 0.95): replace 2.
        let u = decide_update(3, &gram, &[0.5, 0.1, 0.4], &[0.5, 0.5, 0.6], 0.55, 0.1).unwrap();
        assert_eq!(u.action, BankAction::Replace { dropped: 2 });
        let t = u.test.unwrap();
        assert_eq!((t.min_similarity_index, t.max_similarity_index), (1, 2));
        // Same but the IoU is too low (0.4 <= 0.6 - 0.1).
        let u = decide_update(3, &gram, &[0.5, 0.1, 0.4], &[0.5, 0.5, 0.6], 0.4, 0.1).unwrap();
        assert_eq!(u.action, BankAction::KeepIou);
        // New memory very similar to everything: keep.
        let u = decide_update(3, &gram, &[0.99, 0.98, 0.99], &[0.5, 0.5, 0.6], 0.9, 0.1).unwrap();
        assert_eq!(u.action, BankAction::KeepSimilarity);
        // Size mismatch.
        assert!(decide_update(3, &gram, &[0.5], &[0.5, 0.5, 0.6], 0.9, 0.1).is_none());
    }

    #[test]
    fn gram_update_keeps_order() {
        let gram = [1.0, 0.2, 0.3, 0.2, 1.0, 0.95, 0.3, 0.95, 1.0];
        let g = gram_after_update(&gram, 3, Some(1), &[0.4, 0.5, 0.6]);
        assert_eq!(g, vec![1.0, 0.3, 0.4, 0.3, 1.0, 0.6, 0.4, 0.6, 1.0]);
        let g = gram_after_update(&[1.0], 1, None, &[0.7]);
        assert_eq!(g, vec![1.0, 0.7, 0.7, 1.0]);
    }

    #[test]
    fn pickup_modes() {
        let e0 = [1.0f32, 0.0];
        let e1 = [0.0f32, 1.0];
        let emb = [(&e0[..], 1.0), (&e1[..], 1.0)];
        let q = [0.2f32, 1.0];
        let n = norm(&q);
        let p = pickup(&emb, &q, n, Retrieval::TopK(1), None, 0.0, NORMALIZE_EPS).unwrap();
        assert_eq!(p.chosen, vec![1]);
        let p = pickup(&emb, &q, n, Retrieval::TopK(2), None, 0.0, NORMALIZE_EPS).unwrap();
        assert_eq!(p.chosen, vec![1, 0]);
        let p = pickup(
            &emb,
            &q,
            n,
            Retrieval::Sample { seed: 0 },
            Some(&[0]),
            0.9,
            NORMALIZE_EPS,
        )
        .unwrap();
        assert_eq!(p.chosen, vec![0]);
        assert!(pickup(
            &emb,
            &q,
            n,
            Retrieval::TopK(1),
            Some(&[2]),
            0.0,
            NORMALIZE_EPS
        )
        .is_none());
        assert!(pickup(&[], &q, n, Retrieval::TopK(1), None, 0.0, NORMALIZE_EPS).is_none());
        assert!((p.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
