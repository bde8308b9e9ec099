//! The one way the CPU kernels use threads: tasks on candle's persistent
//! thread pool (`candle_core::utils::barrier_pool`, as many threads as
//! `get_num_threads()`), so the kernels and candle's own ops share one pool
//! and one thread count (`RAYON_NUM_THREADS`). A call from inside a pool task
//! runs inline, so kernels may nest.

use std::cell::RefCell;
use std::ops::Range;

/// A raw pointer that tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: every user writes disjoint index ranges and joins before reading.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    #[inline(always)]
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Number of worker threads (candle's thread count).
pub(crate) fn num_threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// Runs `f(task)` for every task in `0..n` on the pool (dynamically
/// scheduled: tasks may differ in cost).
pub(crate) fn par_tasks(n: usize, f: impl Fn(usize) + Sync) {
    match n {
        0 => {}
        1 => f(0),
        _ => {
            candle_core::utils::barrier_pool().execute_chunked(n, |r: Range<usize>| r.for_each(&f))
        }
    }
}

/// Splits `data` into chunks of `chunk` elements (the last may be shorter)
/// and runs `f(index, chunk)` for each on the pool.
pub(crate) fn par_chunks_mut(data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunk = chunk.max(1);
    let n = data.len().div_ceil(chunk);
    if n <= 1 {
        if !data.is_empty() {
            f(0, data);
        }
        return;
    }
    let len = data.len();
    let p = SyncPtr(data.as_mut_ptr());
    par_tasks(n, |i| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: chunk `i` is `start..end` of `data`, disjoint from every
        // other task's, and `data` stays borrowed until the pool joins.
        let c = unsafe { std::slice::from_raw_parts_mut(p.ptr().add(start), end - start) };
        f(i, c)
    });
}

/// A new buffer of `len` values made chunk by chunk on the pool: each task
/// zeroes its chunk of `chunk` elements (the last may be shorter) and runs
/// `f(index, chunk)` on it. Same as a zeroed `vec!` followed by
/// [`par_chunks_mut`], without the serial zeroing pass over the whole buffer
/// (a memset that kept the other threads waiting).
pub(crate) fn par_chunks_new(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let p = SyncPtr(out.as_mut_ptr());
    par_tasks(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: chunk `i` is `start..start + n` of the allocation, disjoint
        // from every other task's; it is initialised (zeroed) before the
        // slice is formed.
        let c = unsafe {
            std::ptr::write_bytes(p.ptr().add(start), 0, n);
            std::slice::from_raw_parts_mut(p.ptr().add(start), n)
        };
        f(i, c)
    });
    // SAFETY: the tasks above initialised every chunk of `0..len` (the pool
    // joins before returning).
    unsafe { out.set_len(len) };
    out
}

/// Rows per chunk when `rows` rows of `row_len` elements are split over the
/// threads: all rows in one chunk below `min_elems` elements of work (the
/// wake-up would cost more), otherwise about two chunks per thread.
pub(crate) fn rows_per_chunk(rows: usize, row_len: usize, min_elems: usize) -> usize {
    if rows * row_len < min_elems {
        return rows.max(1);
    }
    rows.div_ceil(2 * num_threads()).max(1)
}

/// Runs `f(rows, scratch)` over `0..n` split into about two ranges per
/// thread, each with a zeroed scratch buffer of `scratch_len` elements.
pub(crate) fn par_ranges(
    n: usize,
    scratch_len: usize,
    f: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    if n == 0 {
        return;
    }
    let per = n.div_ceil(2 * num_threads()).max(1);
    par_tasks(n.div_ceil(per), |t| {
        with_scratch(scratch_len, |s| {
            s.fill(0.0);
            f(t * per..((t + 1) * per).min(n), s)
        })
    });
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` elements
/// (contents unspecified), kept between calls.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        // Re-entered on this thread (a kernel inside a kernel): a fresh buffer.
        Err(_) => f(&mut vec![0f32; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every task and every chunk runs once, chunks cover the data exactly.
    #[test]
    fn tasks_and_chunks_cover_everything_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            par_tasks(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            let mut data = vec![0f32; n];
            par_chunks_mut(&mut data, 7, |i, c| {
                for (j, v) in c.iter_mut().enumerate() {
                    *v += (i * 7 + j) as f32 + 1.0;
                }
            });
            assert!(data.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0));
            // A new buffer: zeroed chunks, each seen once by `f`.
            let made = par_chunks_new(n, 7, |i, c| {
                assert!(c.iter().all(|&v| v == 0.0));
                for (j, v) in c.iter_mut().enumerate() {
                    *v += (i * 7 + j) as f32 + 1.0;
                }
            });
            assert_eq!(made, data);
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            par_ranges(n, 3, |r, s| {
                assert!(s.len() == 3 && s.iter().all(|&v| v == 0.0));
                s[0] = 1.0;
                for i in r {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(seen.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }
}
