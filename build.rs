//! Builds the preload library (`preload/`, DESIGN.md §7) with the C compiler
//! the `cc` crate finds for the target, so that `include_bytes!` can embed
//! it in the hotswap binary: `cargo install` alone is enough.

use std::path::PathBuf;

fn main() {
    for file in ["preload/hotswap_preload.c", "preload/claim.h"] {
        println!("cargo:rerun-if-changed={file}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("libhotswap_preload.so");
    let compiler = cc::Build::new().cargo_metadata(false).warnings(false).get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-s", "-fvisibility=hidden"])
        .args(["-Wall", "-Wextra", "-Werror", "-std=gnu11"])
        .arg("-o")
        .arg(&out)
        .arg("preload/hotswap_preload.c")
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "building preload/hotswap_preload.c failed: {status}");
}
