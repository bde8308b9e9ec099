//! The `main()` of the volume examples (`segment_volume`, `evaluate_prompts`,
//! `baseline_box`), written once: parse the flags with clap, run the job, and
//! turn every failure into one line on stderr and exit status 1.
//!
//! Included by each example with `#[path = "common/cli.rs"] mod cli;` (a file
//! in a sub-folder without `main.rs` is not an example of its own).

use std::fmt::Display;
use std::process::ExitCode;

use medsam2_tools::volume_job::error_line;

/// Parses `A` from the command line and runs `run`: `--help`/`--version`
/// print and succeed; a bad flag prints clap's message (up to its usage
/// block) on one line; an error of `run` prints `error: ...` on one line.
pub fn main_with<A: clap::Parser, E: Display>(run: impl FnOnce(&A) -> Result<(), E>) -> ExitCode {
    let args = match A::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return ExitCode::SUCCESS;
            }
            // clap's message, up to its usage block, on one line.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", msg.join(" "));
            return ExitCode::FAILURE;
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
