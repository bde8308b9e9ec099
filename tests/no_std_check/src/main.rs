//! Uses the pure parts of medsam2-core with no standard library.
#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};

struct Bump;

static mut HEAP: [u8; 1 << 20] = [0; 1 << 20];
static mut NEXT: usize = 0;

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let start = (NEXT + l.align() - 1) & !(l.align() - 1);
        if start + l.size() > 1 << 20 {
            return core::ptr::null_mut();
        }
        NEXT = start + l.size();
        core::ptr::addr_of_mut!(HEAP).cast::<u8>().add(start)
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static A: Bump = Bump;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    let cfg = medsam2_core::config::Sam2Config::preset(
        medsam2_core::config::Version::Sam2_1,
        medsam2_core::config::ModelSize::Tiny,
    );
    if cfg.validate().is_err() {
        return 1;
    }
    let px = medsam2_core::transforms::preprocess_rgb_u8(&[128u8; 4 * 4 * 3], 4, 4, 8);
    if px.is_err() {
        return 2;
    }
    // MedSAM-2's bank maths: cosine similarities and softmax on plain slices.
    let a = [1.0f32, 0.0, 0.0];
    let b = [0.0f32, 1.0, 0.0];
    let p = medsam2_core::confidence_bank::softmax(&[
        medsam2_core::confidence_bank::cosine(&a, &a, 1e-12),
        medsam2_core::confidence_bank::cosine(&a, &b, 1e-12),
    ]);
    if p.len() != 2 || p[0] <= p[1] {
        return 3;
    }
    0
}

/// The precompiled `alloc` references the unwinder; with `panic = "abort"` it is never called.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    loop {}
}

/// Referenced by the precompiled `alloc`'s unwind tables; never called with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
