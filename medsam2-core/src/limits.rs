//! The stated limits: every size taken from a file, a config or a caller is
//! checked against one of these before anything is allocated, and exceeding
//! one is a one-line error that names it. They bound the memory a small
//! hostile input can claim (see the README's "Limits" section; the C header
//! repeats them as `MEDSAM2_MAX_*`).

/// Largest model input side (`image_size` in a config): 1024, as in every
/// official SAM 2 / SAM 2.1 config (MedSAM2 uses 512).
pub const MAX_IMAGE_SIZE: usize = 1024;

/// Largest channel width, head count or hidden size accepted in a config.
pub const MAX_CONFIG_WIDTH: usize = 8192;

/// Largest block or layer count (per stage, or in total) accepted in a config.
pub const MAX_CONFIG_DEPTH: usize = 256;

/// Largest YAML config text, in bytes (official configs are a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Most YAML nodes a config may hold once its `${...}` interpolations are
/// resolved (official configs hold a few hundred).
pub const MAX_CONFIG_NODES: usize = 100_000;

/// Most clicks in one prompt (image predictor) or accumulated on one slice for
/// one object (video predictor); a box counts as two. (The C ABI's
/// `MEDSAM2_MAX_POINTS`.)
pub const MAX_PROMPT_POINTS: usize = 1024;

/// Most objects tracked at once by one video session.
pub const MAX_OBJECTS: usize = 256;

/// Largest decoded voxel payload of a volume, in bytes: re-exported from the
/// medical module (`medical::MAX_VOXEL_BYTES`), stated here for completeness.
pub const MAX_VOXEL_BYTES: u64 = 1 << 30;

/// Largest tensor stored in a checkpoint, in bytes.
pub const MAX_TENSOR_BYTES: u64 = 4 << 30;

/// Most pickle objects a `.pt` checkpoint's `data.pkl` may expand to (memo
/// references are counted at their expanded size).
pub const MAX_PICKLE_OBJECTS: u64 = 10_000_000;
