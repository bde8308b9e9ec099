//! The per-memory cache of projected cross-attention keys and values
//! (`memory_bank::ProjectionCache`): tracking with cached projections (the
//! slot's temporal encoding added after projection) gives the output of memory
//! attention on the assembled memory, hits and misses alike; an entry never
//! answers for other features; the number of filled caches stays bounded.

use candle_core::{DType, Device, Tensor};
use medsam2_core::config::{ModelSize, Sam2Config, Version};
use medsam2_core::memory_bank::{PointerMemory, ProjectionCache, SelectedMemory, SpatialMemory};
use medsam2_core::modeling::sam2_base::{BackboneFeatures, Sam2Base};

const SIZE: usize = 128;

fn model() -> Sam2Base {
    let cfg = Sam2Config::preset(Version::Sam2_1, ModelSize::Tiny)
        .with_image_size(SIZE)
        .unwrap();
    Sam2Base::with_random_weights(cfg, &Device::Cpu).unwrap()
}

/// Largest |a − b| over max |b| (b the reference).
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let m = b.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
}

fn spatial(
    m: &Sam2Base,
    pos: &Tensor,
    slot: usize,
    cache: Option<&ProjectionCache>,
) -> SpatialMemory {
    let e = m.cfg.embedding_size();
    let f = Tensor::randn(0f32, 1.0, (1, m.cfg.mem_dim(), e, e), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    SpatialMemory {
        features: f,
        pos_enc: pos.clone(),
        tpos_index: Some(slot),
        cache: cache.cloned(),
    }
}

/// The conditioned features and the same computed by `MemoryAttention::forward`
/// on the memory the step assembled (the reference path).
fn step_and_reference(
    m: &Sam2Base,
    feats: &BackboneFeatures,
    sel: &SelectedMemory,
) -> (Tensor, Tensor) {
    let (_pix, tr) = m
        .prepare_memory_conditioned_features(feats, false, sel)
        .unwrap();
    let tr = tr.expect("memory attention ran");
    let want = m
        .memory_attention
        .forward(
            &tr.curr,
            &tr.memory,
            &tr.curr_pos,
            &tr.memory_pos,
            tr.num_obj_ptr_tokens,
        )
        .unwrap();
    (tr.output, want)
}

#[test]
fn cached_projection_matches_assembled_memory() {
    let m = model();
    let dev = Device::Cpu;
    let e = m.cfg.embedding_size();
    let c = m.cfg.hidden_dim();
    let feats = BackboneFeatures {
        vision_feats: Tensor::randn(0f32, 1.0, (1, c, e, e), &dev).unwrap(),
        vision_pos: Tensor::randn(0f32, 1.0, (1, c, e, e), &dev).unwrap(),
        high_res: None,
    };
    let pos = m
        .memory_encoder
        .position_encoding_for(1, e, e, &dev)
        .unwrap();
    let n = m.cfg.num_maskmem;
    let caches: Vec<ProjectionCache> = (0..n).map(|_| ProjectionCache::default()).collect();
    let mut sel = SelectedMemory {
        spatial: (0..n)
            .map(|i| spatial(&m, &pos, n - 1 - i, Some(&caches[i])))
            .collect(),
        pointers: (0..3)
            .map(|t| PointerMemory {
                ptr: Tensor::randn(0f32, 1.0, (1, c), &dev).unwrap(),
                tpos: t + 1,
            })
            .collect(),
        ptr_tpos_norm: 8,
    };
    // Misses (caches filled), then hits, each against the reference.
    for round in 0..2 {
        let (got, want) = step_and_reference(&m, &feats, &sel);
        let err = rel_err(&got, &want);
        assert!(err < 1e-5, "round {round}: relative error {err:.3e}");
        assert!(
            caches.iter().all(ProjectionCache::is_filled),
            "round {round}"
        );
    }
    // Slots move (temporal encodings change) and one memory's features are
    // replaced under the same cache handle: the stale entry must not answer.
    for (i, s) in sel.spatial.iter_mut().enumerate() {
        s.tpos_index = Some((i + 2) % n);
    }
    sel.spatial[3] = spatial(&m, &pos, 5, Some(&caches[3]));
    let (got, want) = step_and_reference(&m, &feats, &sel);
    let err = rel_err(&got, &want);
    assert!(
        err < 1e-5,
        "moved slots / replaced features: relative error {err:.3e}"
    );
    // Uncached memories take the same path.
    for s in &mut sel.spatial {
        s.cache = None;
    }
    let (got_plain, _) = step_and_reference(&m, &feats, &sel);
    assert!(rel_err(&got_plain, &got) < 1e-6);

    // Many more memories than the bound: at most `num_maskmem + 2` stay filled.
    let extra: Vec<ProjectionCache> = (0..2 * n).map(|_| ProjectionCache::default()).collect();
    for chunk in extra.chunks(n) {
        let sel = SelectedMemory {
            spatial: chunk
                .iter()
                .enumerate()
                .map(|(i, cache)| spatial(&m, &pos, i, Some(cache)))
                .collect(),
            pointers: vec![],
            ptr_tpos_norm: 1,
        };
        step_and_reference(&m, &feats, &sel);
    }
    let filled = caches
        .iter()
        .chain(&extra)
        .filter(|c| c.is_filled())
        .count();
    assert!(filled <= n + 2, "{filled} filled caches, bound {}", n + 2);
    assert_eq!(filled, m.projection_limit.filled());
    // The most recent window is the one kept.
    assert!(extra[n..].iter().all(ProjectionCache::is_filled));
    // Dropped caches leave nothing behind.
    drop(extra);
    drop(caches);
    assert_eq!(m.projection_limit.filled(), 0);
}
