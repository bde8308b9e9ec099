//! A counting global allocator for the tests that bound memory: live heap
//! bytes and their peak. The test binaries that install it include this file
//! by path (`tests/hostile_inputs.rs`, `medsam2-ffi/tests/hostile.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counts live heap bytes and their peak.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One test at a time: the counts are process-wide and a binary's tests run
/// in parallel, so every test of a binary that installs this allocator holds
/// this guard for its whole body (a test allocating while another measures
/// would inflate the other's peak: a 1 MiB buffer of
/// `counting_allocator_counts` once did in CI).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns its result and the heap growth at its peak (bytes
/// above what was live when it started; other threads' allocations count
/// too: hold [`serial`]).
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// The budgets measured with [`peak_of`] mean something only if the
/// allocator is installed and counts: a 1 MiB buffer must show, in full, in
/// one of three measurements (the harness's other threads may free a few
/// bytes during one, which lowers the count below its base: a run saw
/// 1 MiB − 24 B; an allocator that does not count shows 0 in all three).
#[test]
fn counting_allocator_counts() {
    let _g = serial();
    let peak = (0..3)
        .map(|_| peak_of(|| drop(std::hint::black_box(vec![1u8; 1 << 20]))).1)
        .max()
        .unwrap_or(0);
    assert!(peak >= 1 << 20, "peak {peak}");
}
