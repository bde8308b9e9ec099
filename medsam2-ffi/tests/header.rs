//! `include/medsam2.h` must be what cbindgen generates from the sources now.

use std::path::{Path, PathBuf};

/// The modules of the public C API, in header order.
const SOURCES: &[&str] = &[
    "general.rs",
    "model.rs",
    "image.rs",
    "volume.rs",
    "one_prompt.rs",
];

fn generate() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut builder = cbindgen::Builder::new().with_config(config);
    for s in SOURCES {
        let p = crate_dir.join("src").join(s);
        if p.exists() {
            builder = builder.with_src(p);
        }
    }
    let bindings = builder.generate().expect("cbindgen failed");
    let mut out: Vec<u8> = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

fn header_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/medsam2.h")
}

#[test]
fn header_is_up_to_date() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("MEDSAM2_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write include/medsam2.h");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(fresh.lines().count()));
        panic!(
            "include/medsam2.h is out of date with medsam2-ffi/src (first difference at line {}).\n\
             committed: {:?}\ngenerated: {:?}\n\
             Regenerate it with:\n  MEDSAM2_UPDATE_HEADER=1 cargo test --release -p medsam2-ffi --test header",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            fresh.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn header_versions_match_the_crate() {
    let v: Vec<u32> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        [
            medsam2::MEDSAM2_VERSION_MAJOR,
            medsam2::MEDSAM2_VERSION_MINOR,
            medsam2::MEDSAM2_VERSION_PATCH
        ],
        [v[0], v[1], v[2]],
        "update MEDSAM2_VERSION_* in medsam2-ffi/src/general.rs to the crate version"
    );
    let s = unsafe { std::ffi::CStr::from_ptr(medsam2::medsam2_version()) };
    assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_exported_function_is_documented() {
    // cbindgen copies `///` comments; a function without one would appear bare.
    let h = generate();
    let lines: Vec<&str> = h.lines().collect();
    let mut n = 0;
    for (i, l) in lines.iter().enumerate() {
        let is_decl = !l.starts_with([' ', '#', '*', '/', '}'])
            && !l.starts_with("typedef")
            && l.contains(" medsam2_") | l.contains("*medsam2_")
            && l.contains('(');
        if is_decl {
            n += 1;
            assert!(
                i > 0 && lines[i - 1].trim_end().ends_with("*/"),
                "undocumented: {l}"
            );
        }
    }
    assert!(
        n >= 30,
        "only {n} function declarations found in the header"
    );
}
