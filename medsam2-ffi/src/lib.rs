//! C ABI for medsam2-core (see `include/medsam2.h`).
