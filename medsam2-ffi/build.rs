//! Gives the shared library a stable name to be found by at run time
//! (`SONAME` on Linux, `@rpath` install name on macOS), so that programs
//! linked against it record `libmedsam2.so` rather than a build path.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match os.as_str() {
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmedsam2.so");
        }
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libmedsam2.dylib");
        }
        _ => {}
    }
    println!("cargo:rerun-if-changed=build.rs");
}
