//! With the `mkl` feature: link Intel MKL's static libraries (LP64 interface, sequential
//! threading layer, core) as PyPI's `mkl-static` wheel installs them, from `SKILLGEN_MKL_DIR` (default
//! `~/.cache/skillgen/venv-mkl/lib`). Without the feature this does nothing.

use std::path::PathBuf;

const LIBS: [&str; 3] = ["mkl_intel_lp64", "mkl_sequential", "mkl_core"];

fn main() {
    println!("cargo:rerun-if-env-changed=SKILLGEN_MKL_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_MKL").is_none() {
        return;
    }
    let dir = match std::env::var_os("SKILLGEN_MKL_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/skillgen/venv-mkl/lib")
        }
    };
    for lib in LIBS {
        let file = dir.join(format!("lib{lib}.a"));
        if !file.is_file() {
            panic!(
                "the `mkl` feature links Intel MKL statically, and {} is missing.\n\
                 Install PyPI's `mkl-static` wheel into a virtual environment and point \
                 SKILLGEN_MKL_DIR at its `lib` directory (the default is this one):\n  \
                 python3 -m venv ~/.cache/skillgen/venv-mkl\n  \
                 ~/.cache/skillgen/venv-mkl/bin/pip install --no-deps mkl-static==2026.2.0",
                file.display()
            );
        }
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    // The layers refer to one another (MKL's own link line is a `--start-group`, which a
    // library crate cannot pass to its dependents' link). Rust's default linker on x86-64
    // Linux, `rust-lld`, resolves archives in any order, as a group.
    for lib in LIBS {
        println!("cargo:rustc-link-lib=static:-bundle={lib}");
    }
    for lib in ["pthread", "m", "dl"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
