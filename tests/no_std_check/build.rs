fn main() {
    // The C runtime provides memcpy & co. and the process entry point.
    println!("cargo:rustc-link-lib=c");
}
