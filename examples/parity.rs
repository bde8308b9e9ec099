//! Checks fixture directories (format: shared/fixtures/FORMAT.md) against the
//! Rust implementation.
//!
//! `cargo run --release --example parity -- [--part image|video|one-prompt] [--quiet]
//! [--device cpu|cuda[:N]|metal[:N]] [--dtype f32|bf16|f16] DIR...`
//!
//! `--device`/`--dtype` run the models there (the fixtures stay on the host);
//! in bf16/f16 the max-abs tolerances widen by `LOW_PRECISION_TOL_FACTOR`
//! while the mask sign-agreement criteria stay as in f32. On the CPU, bf16 is
//! the bf16-linear-layer mode (README "Reduced precision": 3777 of 3829
//! comparisons pass on the fixtures; which fail and by how much) and f16
//! computes in f32.
//!
//! DIR is one fixture folder or a folder of them. Prints every compared tensor
//! with its max absolute error and tolerance, ends with a one-line summary, and
//! exits non-zero if anything is outside tolerance or cannot be checked.

use std::process::ExitCode;

use clap::Parser;
use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
use medsam2_tools::fixture::{fixture_dirs_in, Fixture};
use medsam2_tools::parity::{check_fixture, Part, Report};

#[derive(Parser)]
#[command(about = "Check reference fixtures against the Rust implementation")]
struct Args {
    /// Limit to one part: image, video or one-prompt.
    #[arg(long)]
    part: Option<String>,
    /// Print only failures and the summary.
    #[arg(long)]
    quiet: bool,
    /// Device: cpu, cuda[:N] or metal[:N] (needs the matching feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32 (FORMAT.md tolerances), bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Fixture directories (or folders of them).
    #[arg(required = true)]
    dirs: Vec<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let parts = match args.part.as_deref() {
        None => vec![],
        Some(p) => match Part::parse(p) {
            Some(p) => vec![p],
            None => {
                eprintln!("error: unknown part `{p}` (image, video, one-prompt)");
                return ExitCode::from(2);
            }
        },
    };
    let (device, dtype) = match (
        DeviceKind::parse(&args.device),
        ComputeDType::parse(&args.dtype),
    ) {
        (Ok(d), Ok(t)) => (d, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Open the device once up front: a missing GPU is one clear error.
    if let Err(e) = device.device() {
        // One line, also where the backend error carries a backtrace.
        let e = e.to_string();
        let first = e.lines().next().unwrap_or_default();
        eprintln!("error: device {}: {first}", args.device);
        return ExitCode::from(2);
    }
    let mut report = Report {
        verbose: !args.quiet,
        device,
        dtype,
        ..Default::default()
    };
    let mut errors = 0;
    for d in &args.dirs {
        let Some(dirs) = fixture_dirs_in(d) else {
            eprintln!(
                "error: {}: no fixture.json here or in its sub-folders",
                d.display()
            );
            errors += 1;
            continue;
        };
        for dir in dirs {
            let res =
                Fixture::open(&dir).and_then(|mut f| check_fixture(&mut f, &parts, &mut report));
            if let Err(e) = res {
                eprintln!("error: {}: {e}", dir.display());
                errors += 1;
            }
        }
    }
    if args.quiet {
        for c in report.results.iter().filter(|c| !c.ok) {
            println!(
                "FAIL {} max_abs {:.3e} tol {:.2e} {}",
                c.name, c.max_abs, c.tol, c.note
            );
        }
    }
    for s in &report.skipped {
        println!("not checked: {s}");
    }
    println!(
        "{}{}",
        report.summary(),
        if errors > 0 {
            format!(", {errors} error(s)")
        } else {
            String::new()
        }
    );
    if report.failed() > 0 || errors > 0 || (!parts.is_empty() && !report.skipped.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
