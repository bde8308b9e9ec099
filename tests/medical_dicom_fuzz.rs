//! Malformed DICOM files: truncations, random corruptions and hostile declared
//! sizes give errors, never panics, and never allocate beyond what the file
//! can hold (a counting allocator measures the peak of every read).
//!
//! One test function only: the allocation counter is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use medsam2_core::medical::dicom::{read_dicom_files, DicomOptions};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Extra bytes a read may allocate beyond the file's own size: parser
/// buffers, the dictionary, error strings (far below any hostile size).
const SLACK: usize = 8 << 20;

/// Reads `bytes` as a one-file series; returns whether it read, and checks
/// that it neither panicked nor allocated more than the file can hold.
fn read(path: &Path, bytes: &[u8], what: &str) -> bool {
    std::fs::write(path, bytes).unwrap();
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let r = catch_unwind(AssertUnwindSafe(|| {
        read_dicom_files(&[path.to_path_buf()], &DicomOptions::default())
    }));
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let ok = match r {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{what}: multi-line error {msg}");
            false
        }
        Err(_) => panic!("{what}: the reader panicked"),
    };
    // A decoded slice may reach the file size times the voxel widening (f64 + output).
    let allowed = SLACK + 24 * bytes.len();
    if grew > allowed {
        let kept = path.with_extension("overallocated.dcm");
        std::fs::write(&kept, bytes).unwrap();
        panic!(
            "{what}: allocated {grew} bytes for a file of {} bytes (kept as {})",
            bytes.len(),
            kept.display()
        );
    }
    ok
}

// The workspace's one seeded generator.
use medsam2_core::confidence_bank::SplitMix64 as Rng;

/// A Part-10 file: preamble, meta group (explicit VR little endian) and `body`.
fn part10(body: &[u8]) -> Vec<u8> {
    let ts = b"1.2.840.10008.1.2.1\0";
    let mut meta = Vec::new();
    meta.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    meta.extend_from_slice(&(ts.len() as u16).to_le_bytes());
    meta.extend_from_slice(ts);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(body);
    out
}

/// An explicit VR little-endian element with a 4-byte length.
fn long_element(group: u16, elem: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&group.to_le_bytes());
    v.extend_from_slice(&elem.to_le_bytes());
    v.extend_from_slice(vr);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(value);
    v
}

#[test]
fn malformed_dicom_never_panics_nor_over_allocates() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/tiny_ct/IM0000.dcm");
    let good = std::fs::read(&fixture).unwrap();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("medsam2_dicom_fuzz_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("slice.dcm");
    assert!(
        read(&path, &good, "the fixture"),
        "the uncorrupted file must read"
    );

    // Every truncation is an error (the pixel data ends the file).
    for len in 0..good.len() {
        assert!(
            !read(&path, &good[..len], &format!("truncated to {len}")),
            "truncated to {len} of {} bytes still read",
            good.len()
        );
    }

    // Random corruptions: errors or (harmless) successes, never a panic.
    let mut rng = Rng::new(0x5eed_d1c0);
    let mut errors = 0;
    for t in 0..1500 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = 128 + rng.below(b.len() - 128);
            b[i] ^= 1 + rng.below(255) as u8;
        }
        errors += !read(&path, &b, &format!("corruption #{t}")) as usize;
    }
    assert!(
        errors > 100,
        "only {errors} of 1500 corruptions were errors"
    );

    // Hostile declared lengths: the pixel data, a text value, a sequence item.
    let pd = good
        .windows(6)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W'])
        .expect("pixel data element");
    for len in [0xFFFF_FFF0u32, 0x7FFF_FFFF, (good.len() - pd) as u32] {
        let mut b = good.clone();
        b[pd + 8..pd + 12].copy_from_slice(&len.to_le_bytes());
        assert!(!read(&path, &b, &format!("pixel data length {len:#x}")));
    }
    let huge_text = part10(&long_element(0x0008, 0x0031, b"UT", 0xFFFF_FFF0, b"abc"));
    assert!(!read(&path, &huge_text, "UT of 4 GiB"));
    let mut seq = long_element(0x0008, 0x1140, b"SQ", 0xFFFF_FFFF, &[]);
    seq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    seq.extend_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    let huge_item = part10(&seq);
    assert!(!read(&path, &huge_item, "sequence item of 4 GiB"));
    let mut deep = Vec::new();
    for _ in 0..200 {
        deep.extend_from_slice(&long_element(0x0008, 0x1140, b"SQ", 0xFFFF_FFFF, &[]));
        deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    assert!(!read(&path, &part10(&deep), "200 nested sequences"));

    // Hostile image sizes: Rows and Columns of 65535 over the fixture's pixels.
    for tag in [[0x28u8, 0x00, 0x10, 0x00], [0x28, 0x00, 0x11, 0x00]] {
        let at = good
            .windows(6)
            .position(|w| w[..4] == tag && &w[4..] == b"US")
            .expect("Rows / Columns");
        let mut b = good.clone();
        b[at + 8..at + 10].copy_from_slice(&0xFFFFu16.to_le_bytes());
        assert!(!read(&path, &b, "65535 rows or columns"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
