//! The parity runner on every fixture set: the committed ones (always) and the
//! independent ones under `../shared/fixtures` (when present).

use medsam2_tools::fixture::{committed_fixture_dirs, shared_fixture_dirs, Fixture};
use medsam2_tools::parity::{check_fixture, Part, Report};

fn run(dirs: Vec<std::path::PathBuf>, part: Part) {
    let mut report = Report::default();
    let mut checked = 0;
    for d in dirs {
        let mut f = Fixture::open(&d).expect("fixture opens");
        if !f.has_part(part.key()) {
            continue;
        }
        checked += 1;
        check_fixture(&mut f, &[part], &mut report)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    for c in report.results.iter().filter(|c| !c.ok) {
        eprintln!(
            "FAIL {} max_abs {:.3e} tol {:.2e} {}",
            c.name, c.max_abs, c.tol, c.note
        );
    }
    println!("{} fixture(s): {}", checked, report.summary());
    assert!(checked > 0, "no fixture has a {} part", part.key());
    assert!(
        report.results.len() > 50,
        "too few comparisons: {}",
        report.results.len()
    );
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}

fn committed() -> Vec<std::path::PathBuf> {
    committed_fixture_dirs().expect("tests/fixtures holds fixture sets")
}

fn shared() -> Option<Vec<std::path::PathBuf>> {
    let d = shared_fixture_dirs();
    if d.is_none() {
        eprintln!("skipped: ../shared/fixtures not found (set MEDSAM2_SHARED_FIXTURES)");
    }
    d
}

#[test]
fn committed_image() {
    run(committed(), Part::Image);
}

#[test]
fn committed_video() {
    run(committed(), Part::Video);
}

#[test]
fn shared_image() {
    if let Some(d) = shared() {
        run(d, Part::Image);
    }
}

#[test]
fn shared_video() {
    if let Some(d) = shared() {
        run(d, Part::Video);
    }
}

#[test]
fn committed_one_prompt() {
    run(committed(), Part::OnePrompt);
}

#[test]
fn shared_one_prompt() {
    if let Some(d) = shared() {
        run(d, Part::OnePrompt);
    }
}
