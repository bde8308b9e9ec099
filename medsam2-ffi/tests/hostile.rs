//! The C ABI's entry points under hostile inputs: checkpoints and configs
//! that are directories, devices, FIFOs, truncated, crafted or all-NaN;
//! config bombs; oversized volumes and prompts. Each call must return an error
//! status quickly with a one-line `medsam2_last_error()`, print no panic text,
//! and stay within a memory budget (a counting allocator in this binary).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use medsam2::*;

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{peak_of, serial};

const MIB: usize = 1 << 20;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixture() -> PathBuf {
    root().join("tests/fixtures/sam2.1-heads-c")
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(medsam2_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Loads `config` + `checkpoint`; asserts failure with a one-line message
/// within a second and a bounded peak; returns the message.
fn load_fails(config: &str, checkpoint: &Path, dtype: &str) -> String {
    let (cfg, ck, dt) = (c(config), c(&checkpoint.to_string_lossy()), c(dtype));
    let mut model = null_mut();
    let t0 = Instant::now();
    let (st, peak) = peak_of(|| unsafe {
        medsam2_model_load(cfg.as_ptr(), ck.as_ptr(), null(), dt.as_ptr(), &mut model)
    });
    assert_ne!(
        st,
        medsam2_status::MEDSAM2_OK,
        "{config} + {} loaded",
        checkpoint.display()
    );
    assert!(model.is_null());
    let e = last_error();
    assert!(!e.is_empty() && !e.contains('\n'), "not one line: {e:?}");
    assert!(t0.elapsed().as_secs_f64() < 5.0, "{e}");
    assert!(peak < 256 * MIB, "{e}: peak {peak}");
    e
}

#[test]
fn model_load_refuses_hostile_files() {
    let _g = serial();
    // Count panics the hook sees on this test's thread (other tests may fail).
    static HOOK: AtomicUsize = AtomicUsize::new(0);
    let me = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |i| {
        if std::thread::current().id() == me {
            HOOK.fetch_add(1, Ordering::Relaxed);
        }
        prev(i)
    }));
    let d = std::env::temp_dir().join(format!("medsam2-ffi-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let cfg = fixture().join("config.yaml");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let weights = fixture().join("weights.safetensors");

    // Directories, devices and FIFOs, named as such.
    std::fs::create_dir(d.join("dir.pt")).unwrap();
    let e = load_fails(&cfg_s, &d.join("dir.pt"), "f32");
    assert!(e.contains("a directory, not a regular file"), "{e}");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.safetensors")).unwrap();
        let e = load_fails(&cfg_s, &d.join("zero.safetensors"), "f32");
        assert!(e.contains("a device"), "{e}");
        let fifo = d.join("fifo.pt");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let e = load_fails(&cfg_s, &fifo, "f32");
            assert!(e.contains("a FIFO"), "{e}");
            let e = load_fails(
                &fifo.with_extension("yaml").to_string_lossy(),
                &weights,
                "f32",
            );
            assert!(!e.is_empty());
        }
    }
    // Truncated and crafted checkpoints.
    let pt = std::fs::read(fixture().join("weights_fp32.pt")).unwrap();
    for len in [0, 3, 100, pt.len() / 2, pt.len() - 1] {
        let p = d.join(format!("t{len}.pt"));
        std::fs::write(&p, &pt[..len]).unwrap();
        load_fails(&cfg_s, &p, "f32");
    }
    let st = std::fs::read(&weights).unwrap();
    let p = d.join("t.safetensors");
    std::fs::write(&p, &st[..st.len() / 3]).unwrap();
    load_fails(&cfg_s, &p, "f32");
    // Config bombs and sizes beyond the limits.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let big = d.join("big.yaml");
    std::fs::write(
        &big,
        text.replacen("image_size:", "image_size: 1000000 #", 1),
    )
    .unwrap();
    let e = load_fails(&big.to_string_lossy(), &weights, "f32");
    assert!(e.contains("MAX_IMAGE_SIZE"), "{e}");
    let mut bomb = text.clone();
    bomb.push_str("\nl0: [1, 2, 3, 4, 5, 6, 7, 8]\n");
    for i in 1..=40 {
        bomb.push_str(&format!(
            "l{i}: [\"${{l{}}}\", \"${{l{}}}\"]\n",
            i - 1,
            i - 1
        ));
    }
    bomb.push_str("top: ${l40}\n");
    let bomb_p = d.join("bomb.yaml");
    std::fs::write(&bomb_p, bomb).unwrap();
    let e = load_fails(&bomb_p.to_string_lossy(), &weights, "f32");
    assert!(e.contains("MAX_CONFIG_NODES"), "{e}");
    assert_eq!(HOOK.load(Ordering::Relaxed), 0, "panic text was printed");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sessions_refuse_oversized_volumes_and_prompts() {
    let _g = serial();
    let (cfg, ck) = (
        c(&fixture().join("config.yaml").to_string_lossy()),
        c(&fixture().join("weights.safetensors").to_string_lossy()),
    );
    let mut model = null_mut();
    let st = unsafe { medsam2_model_load(cfg.as_ptr(), ck.as_ptr(), null(), null(), &mut model) };
    assert_eq!(st, medsam2_status::MEDSAM2_OK, "{}", last_error());
    let voxels = vec![0u8; 32 * 32 * 4];
    let mut vol = medsam2_volume {
        voxels: voxels.as_ptr().cast(),
        pixel_type: MEDSAM2_PIXEL_U8,
        dims: [65536, 65536, 65536],
        spacing: [1.0; 3],
        origin: [0.0; 3],
        direction: [0.0; 9],
    };
    let it = medsam2_intensity {
        mode: MEDSAM2_INTENSITY_NONE,
        window: medsam2_window {
            level: 0.0,
            width: 0.0,
        },
        lower_percentile: 0.0,
        upper_percentile: 100.0,
        stretch: MEDSAM2_STRETCH_CLIPPED_MINMAX,
    };
    let mut s = null_mut();
    let st = unsafe { medsam2_session_new(model, &vol, &it, MEDSAM2_AXIS_K, null(), &mut s) };
    assert_eq!(st, medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("MAX_VOXEL_BYTES"), "{}", last_error());
    vol.dims = [32, 32, 4];
    let st = unsafe { medsam2_session_new(model, &vol, &it, MEDSAM2_AXIS_K, null(), &mut s) };
    assert_eq!(st, medsam2_status::MEDSAM2_OK, "{}", last_error());
    // 10,000 clicks on one slice: refused before any work.
    let n = 10_000;
    let pts: Vec<f32> = (0..n).flat_map(|i| [(i % 32) as f32, 3.0]).collect();
    let labels = vec![1i32; n];
    let t0 = Instant::now();
    let (st, peak) = peak_of(|| unsafe {
        medsam2_session_add_points(s, 1, 1, pts.as_ptr(), labels.as_ptr(), n, 1, null_mut(), 0)
    });
    assert_eq!(st, medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("MAX_PROMPT_POINTS"),
        "{}",
        last_error()
    );
    assert!(t0.elapsed().as_secs_f64() < 1.0);
    assert!(peak < 16 * MIB);
    // Accumulated corrections hit the same limit.
    let st = unsafe {
        medsam2_session_add_points(
            s,
            1,
            1,
            pts.as_ptr(),
            labels.as_ptr(),
            1000,
            1,
            null_mut(),
            0,
        )
    };
    assert_eq!(st, medsam2_status::MEDSAM2_OK, "{}", last_error());
    let st = unsafe {
        medsam2_session_add_points(s, 1, 1, pts.as_ptr(), labels.as_ptr(), 30, 0, null_mut(), 0)
    };
    assert_eq!(st, medsam2_status::MEDSAM2_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("MAX_PROMPT_POINTS"),
        "{}",
        last_error()
    );
    unsafe {
        medsam2_session_free(s);
        medsam2_model_free(model);
    }
}
