//! Errors stay one line (issue 11, item 5): candle attaches a backtrace to
//! its errors when `RUST_BACKTRACE` is set, and the user-facing message of a
//! tensor-backend error (`medsam2_core::Error`'s `Display`, which the CLIs
//! print and the C ABI returns from `medsam2_last_error`) must not carry it.
//!
//! `std` reads `RUST_BACKTRACE` once per process, so the test runs itself
//! again as a child process with `RUST_BACKTRACE=1` (and `full`), where real
//! backend errors are provoked through the public API and their messages
//! printed; the parent checks them.

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use medsam2_core::build_sam::build_sam2;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};

const CHILD_ENV: &str = "MEDSAM2_ONE_LINE_CHILD";
const MARK: &str = "ERROR-MESSAGE:";
const RAW: &str = "RAW-CANDLE-ERROR:";

/// In the child: provokes backend errors and prints each message (between
/// markers, escaped so that a line break shows).
#[test]
fn child_prints_backend_errors() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // only meaningful as the parent's child
    }
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-tiny-a");
    let model = build_sam2(
        f.join("config.yaml").to_str().unwrap(),
        f.join("weights.safetensors"),
        ComputeDType::F32,
        DeviceKind::Cpu,
    )
    .unwrap();
    let dev = Device::Cpu;
    let mut messages = Vec::new();
    // Two channels where the patch embedding takes three; a wrong size; a
    // wrong rank; an integer image.
    for shape in [&[1, 2, 96, 96][..], &[1, 3, 50, 70], &[3, 96, 96]] {
        let px = Tensor::zeros(shape, DType::F32, &dev).unwrap();
        match model.forward_image(&px) {
            Ok(_) => panic!("shape {shape:?} was accepted"),
            Err(e) => messages.push(e.to_string()),
        }
    }
    // Backend errors as candle makes them (with the backtrace it captures
    // under RUST_BACKTRACE): the raw text, then ours.
    let bf = Tensor::ones((1, 1, 2, 2), DType::BF16, &dev).unwrap();
    let bk = Tensor::ones((1, 1, 1, 1), DType::BF16, &dev).unwrap();
    let a = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
    for raw in [
        bf.conv2d(&bk, 0, 1, 1, 1).unwrap_err(), // "unsupported dtype BF16 for op matmul"
        a.matmul(&a).unwrap_err(),               // shape mismatch
        a.reshape((5, 5)).unwrap_err(),
    ] {
        println!("{RAW}{:?}", raw.to_string());
        messages.push(medsam2_core::Error::from(raw).to_string());
    }
    for m in messages {
        println!("{MARK}{m:?}");
    }
}

#[test]
fn backend_errors_are_one_line_with_rust_backtrace_set() {
    let exe = std::env::current_exe().unwrap();
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    for bt in ["1", "full"] {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "child_prints_backend_errors",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .env("RUST_BACKTRACE", bt)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let messages: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.split_once(MARK))
            .map(|(_, m)| m.trim().trim_matches('"').to_string())
            .collect();
        assert!(messages.len() >= 6, "child printed {messages:?}\n{stdout}");
        // The raw candle errors do carry a backtrace here (else this test
        // would prove nothing).
        let raw: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once(RAW))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(raw.len(), 3, "{stdout}");
        assert!(
            raw.iter().all(|r| r.contains("\\n")),
            "no backtrace in candle's errors: {raw:?}"
        );
        for m in &messages {
            println!("RUST_BACKTRACE={bt}: {m}");
            assert!(
                m.starts_with("tensor backend: ") || m.starts_with("invalid input: "),
                "{m}"
            );
            assert!(m.len() > "tensor backend: ".len() + 3, "empty message: {m}");
            for bad in [
                "\\n",
                "stack backtrace",
                "rust_begin_unwind",
                " at /",
                ".rs:",
                "   0: ",
            ] {
                assert!(!m.contains(bad), "`{bad}` in a user-facing message: {m}");
            }
        }
    }
}
