//! The memory bank: what a tracked object remembers of other frames, and the
//! policy that picks which memories condition the current frame.
//!
//! The network code ([`crate::modeling::sam2_base::Sam2Base::prepare_memory_conditioned_features`])
//! only consumes a [`SelectedMemory`]; which memories are selected is decided by
//! a [`MemoryPolicy`]. [`TemporalPolicy`] is SAM 2's rule (conditioning frames +
//! the last `num_maskmem - 1` frames + object pointers); MedSAM-2's confidence
//! bank (one-prompt segmentation) is another policy over the same types.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use candle_core::{Tensor, TensorId};

use crate::config::Sam2Config;
use crate::modeling::memory_attention::ProjectedMemory;

/// Content of a [`ProjectionCache`]: the features it was computed from and
/// the projection of every memory-attention layer.
type CacheSlot = Mutex<Option<(TensorId, Arc<Vec<ProjectedMemory>>)>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cross-attention keys of one stored memory, projected by every
/// memory-attention layer (the values need no projection: memory attention
/// applies `v_proj` after attending, see
/// `memory_attention::RoPEAttention::attend_memory`) (without the temporal encoding of the slot the
/// memory takes, which changes from frame to frame and is added per step).
/// Filled on first use, shared by every later step that attends to the same
/// memory, and freed with the [`FrameOutput`] that owns it or when
/// [`ProjectionCacheLimit`] evicts it. An entry only answers for the exact
/// features tensor it was computed from.
#[derive(Clone, Default)]
pub struct ProjectionCache(Arc<CacheSlot>);

impl std::fmt::Debug for ProjectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = lock(&self.0).is_some();
        write!(f, "ProjectionCache {{ filled: {filled} }}")
    }
}

impl ProjectionCache {
    /// Whether a projection is held.
    pub fn is_filled(&self) -> bool {
        lock(&self.0).is_some()
    }
}

/// Bounds how many [`ProjectionCache`]s hold a projection at once (least
/// recently used ones are emptied first), so that a long propagation keeps
/// the projections of its current memory window only.
#[derive(Debug)]
pub struct ProjectionCacheLimit {
    capacity: usize,
    filled: Mutex<VecDeque<Weak<CacheSlot>>>,
}

impl ProjectionCacheLimit {
    /// At most `capacity` filled caches (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            filled: Mutex::new(VecDeque::new()),
        }
    }

    /// The projection of `features` held by `cache`, or `project()`'s, which
    /// is then stored there (evicting the least recently used beyond capacity).
    pub fn get_or_insert_with<E>(
        &self,
        cache: &ProjectionCache,
        features: &Tensor,
        project: impl FnOnce() -> Result<Vec<ProjectedMemory>, E>,
    ) -> Result<Arc<Vec<ProjectedMemory>>, E> {
        let hit = match &*lock(&cache.0) {
            Some((id, p)) if *id == features.id() => Some(p.clone()),
            _ => None,
        };
        let p = match hit {
            Some(p) => p,
            None => {
                let p = Arc::new(project()?);
                if self.capacity == 0 {
                    return Ok(p);
                }
                *lock(&cache.0) = Some((features.id(), p.clone()));
                p
            }
        };
        self.touch(&cache.0);
        Ok(p)
    }

    /// Marks `slot` most recently used; empties the oldest beyond capacity.
    fn touch(&self, slot: &Arc<CacheSlot>) {
        let mut q = lock(&self.filled);
        let me = Arc::downgrade(slot);
        q.retain(|w| w.strong_count() > 0 && !w.ptr_eq(&me));
        q.push_back(me);
        while q.len() > self.capacity {
            if let Some(old) = q.pop_front().and_then(|w| w.upgrade()) {
                *lock(&old) = None;
            }
        }
    }

    /// Number of caches currently filled (at most the capacity).
    pub fn filled(&self) -> usize {
        lock(&self.filled)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| lock(s).is_some())
            .count()
    }
}

/// What tracking one object on one frame produced (the official `current_out`).
#[derive(Debug, Clone)]
pub struct FrameOutput {
    /// Memory features `[1, Cm, h, w]`, stored in bf16 as the official predictor does.
    pub maskmem_features: Option<Tensor>,
    /// Low-resolution mask logits `[1, 1, S/4, S/4]` (−1024 where no object).
    pub pred_masks: Tensor,
    /// Object pointer `[1, C]`.
    pub obj_ptr: Tensor,
    /// Object-score logit `[1, 1]`.
    pub object_score_logits: Tensor,
    /// Projected keys of `maskmem_features`, filled when tracking
    /// attends to this memory.
    pub projected: ProjectionCache,
}

/// One spatial memory handed to memory attention.
#[derive(Debug, Clone)]
pub struct SpatialMemory {
    /// Memory features `[1, Cm, h, w]` (any float dtype; upcast for attention).
    pub features: Tensor,
    /// Their position encoding `[1, Cm, h, w]`.
    pub pos_enc: Tensor,
    /// Row of `maskmem_tpos_enc` added to the position encoding, if any.
    pub tpos_index: Option<usize>,
    /// Where the projection of `features` (with `pos_enc`, without the
    /// temporal encoding) is kept between steps, if anywhere.
    pub cache: Option<ProjectionCache>,
}

/// One object pointer handed to memory attention.
#[derive(Debug, Clone)]
pub struct PointerMemory {
    /// The pointer `[1, C]`.
    pub ptr: Tensor,
    /// Temporal position (signed or absolute frame distance).
    pub tpos: i64,
}

/// The memories that condition one frame.
#[derive(Debug, Clone, Default)]
pub struct SelectedMemory {
    /// Spatial memories, in attention order.
    pub spatial: Vec<SpatialMemory>,
    /// Object pointers, in attention order.
    pub pointers: Vec<PointerMemory>,
    /// Normaliser of pointer positions (`t_diff_max`); at least 1.
    pub ptr_tpos_norm: usize,
}

impl SelectedMemory {
    /// Whether nothing was selected.
    pub fn is_empty(&self) -> bool {
        self.spatial.is_empty() && self.pointers.is_empty()
    }
}

/// All outputs of one object (the official `output_dict` of one object).
#[derive(Debug, Clone, Default)]
pub struct ObjectMemory {
    /// Conditioning (prompted) frames.
    pub cond: BTreeMap<usize, FrameOutput>,
    /// Tracked frames.
    pub non_cond: BTreeMap<usize, FrameOutput>,
}

/// A rule choosing the memories of the current frame.
pub trait MemoryPolicy: Send + Sync {
    /// Selects memories of `bank` for `frame_idx` (tracking direction `reverse`,
    /// `num_frames` in the sequence); `maskmem_pos_enc` is the (constant) memory
    /// position encoding `[1, Cm, h, w]`.
    fn select(
        &self,
        bank: &ObjectMemory,
        frame_idx: usize,
        reverse: bool,
        num_frames: usize,
        maskmem_pos_enc: &Tensor,
    ) -> SelectedMemory;
}

/// SAM 2's memory selection (`_prepare_memory_conditioned_features`).
#[derive(Debug, Clone)]
pub struct TemporalPolicy {
    /// `num_maskmem`.
    pub num_maskmem: usize,
    /// `memory_temporal_stride_for_eval`.
    pub stride: usize,
    /// `max_cond_frames_in_attn` (−1 = all).
    pub max_cond_frames_in_attn: i64,
    /// `use_obj_ptrs_in_encoder`.
    pub use_obj_ptrs: bool,
    /// `max_obj_ptrs_in_encoder`.
    pub max_obj_ptrs: usize,
    /// `only_obj_ptrs_in_the_past_for_eval`.
    pub only_past_ptrs: bool,
    /// `use_signed_tpos_enc_to_obj_ptrs`.
    pub signed_tpos: bool,
}

impl TemporalPolicy {
    /// The policy of a model config.
    pub fn from_config(cfg: &Sam2Config) -> Self {
        Self {
            num_maskmem: cfg.num_maskmem,
            stride: cfg.memory_temporal_stride_for_eval.max(1),
            max_cond_frames_in_attn: cfg.max_cond_frames_in_attn,
            use_obj_ptrs: cfg.use_obj_ptrs_in_encoder,
            max_obj_ptrs: cfg.max_obj_ptrs_in_encoder,
            only_past_ptrs: cfg.only_obj_ptrs_in_the_past_for_eval,
            signed_tpos: cfg.use_signed_tpos_enc_to_obj_ptrs,
        }
    }
}

/// `select_closest_cond_frames`: (selected, unselected) conditioning frame indices.
pub fn select_closest_cond_frames(
    frame_idx: usize,
    cond: &[usize],
    max_cond_frame_num: i64,
) -> (Vec<usize>, Vec<usize>) {
    if max_cond_frame_num < 0 || cond.len() <= max_cond_frame_num as usize {
        return (cond.to_vec(), vec![]);
    }
    let mut selected: Vec<usize> = Vec::new();
    if let Some(b) = cond.iter().copied().filter(|&t| t < frame_idx).max() {
        selected.push(b);
    }
    if let Some(a) = cond.iter().copied().filter(|&t| t >= frame_idx).min() {
        selected.push(a);
    }
    let remain = (max_cond_frame_num as usize).saturating_sub(selected.len());
    let mut rest: Vec<usize> = cond
        .iter()
        .copied()
        .filter(|t| !selected.contains(t))
        .collect();
    // Stable sort by distance, as Python's `sorted`.
    rest.sort_by_key(|&t| (t as i64 - frame_idx as i64).unsigned_abs());
    selected.extend(rest.into_iter().take(remain));
    // Keep the dict order of the official code: insertion order of `cond`.
    let mut sel: Vec<usize> = cond
        .iter()
        .copied()
        .filter(|t| selected.contains(t))
        .collect();
    sel.dedup();
    let unsel = cond.iter().copied().filter(|t| !sel.contains(t)).collect();
    (sel, unsel)
}

impl MemoryPolicy for TemporalPolicy {
    fn select(
        &self,
        bank: &ObjectMemory,
        frame_idx: usize,
        reverse: bool,
        num_frames: usize,
        maskmem_pos_enc: &Tensor,
    ) -> SelectedMemory {
        let cond_keys: Vec<usize> = bank.cond.keys().copied().collect();
        let (selected, unselected) =
            select_closest_cond_frames(frame_idx, &cond_keys, self.max_cond_frames_in_attn);
        let mut out = SelectedMemory::default();
        let spatial = |o: &FrameOutput, t_pos: usize, out: &mut SelectedMemory| {
            if let Some(f) = &o.maskmem_features {
                out.spatial.push(SpatialMemory {
                    features: f.clone(),
                    pos_enc: maskmem_pos_enc.clone(),
                    tpos_index: Some(self.num_maskmem - t_pos - 1),
                    cache: Some(o.projected.clone()),
                });
            }
        };
        for t in &selected {
            spatial(&bank.cond[t], 0, &mut out);
        }
        let f = frame_idx as i64;
        let r = self.stride as i64;
        let lookup = |t: i64| -> Option<&FrameOutput> {
            if t < 0 {
                return None;
            }
            let t = t as usize;
            bank.non_cond.get(&t).or_else(|| {
                if unselected.contains(&t) {
                    bank.cond.get(&t)
                } else {
                    None
                }
            })
        };
        for t_pos in 1..self.num_maskmem {
            let t_rel = (self.num_maskmem - t_pos) as i64;
            let prev = if t_rel == 1 {
                if reverse {
                    f + 1
                } else {
                    f - 1
                }
            } else if !reverse {
                (f - 2).div_euclid(r) * r - (t_rel - 2) * r
            } else {
                -((-(f + 2)).div_euclid(r)) * r + (t_rel - 2) * r
            };
            if let Some(o) = lookup(prev) {
                spatial(o, t_pos, &mut out);
            }
        }
        if self.use_obj_ptrs {
            let max_ptrs = num_frames.min(self.max_obj_ptrs);
            let sign = if reverse { -1 } else { 1 };
            for t in &selected {
                let past = if reverse {
                    *t >= frame_idx
                } else {
                    *t <= frame_idx
                };
                if self.only_past_ptrs && !past {
                    continue;
                }
                let d = f - *t as i64;
                let tpos = if self.signed_tpos { d * sign } else { d.abs() };
                out.pointers.push(PointerMemory {
                    ptr: bank.cond[t].obj_ptr.clone(),
                    tpos,
                });
            }
            for t_diff in 1..max_ptrs as i64 {
                let t = if reverse { f + t_diff } else { f - t_diff };
                if t < 0 || t >= num_frames as i64 {
                    break;
                }
                if let Some(o) = lookup(t) {
                    out.pointers.push(PointerMemory {
                        ptr: o.obj_ptr.clone(),
                        tpos: t_diff,
                    });
                }
            }
            // `t_diff_max`; the official code would divide by 0 on a one-frame sequence.
            out.ptr_tpos_norm = max_ptrs.saturating_sub(1).max(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_cond_frames() {
        let (s, u) = select_closest_cond_frames(5, &[0, 3, 8, 9], 2);
        assert_eq!(s, vec![3, 8]);
        assert_eq!(u, vec![0, 9]);
        let (s, u) = select_closest_cond_frames(5, &[0, 3, 8, 9], -1);
        assert_eq!(s, vec![0, 3, 8, 9]);
        assert!(u.is_empty());
        let (s, _) = select_closest_cond_frames(5, &[0, 1, 2, 9], 3);
        assert_eq!(s, vec![1, 2, 9]);
    }
}
