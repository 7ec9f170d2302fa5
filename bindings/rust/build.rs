//! Finds libpkv: PKV_LIB_DIR (and PKV_INCLUDE_DIR) when set, e.g. a meson build dir and the
//! source tree's include/; otherwise the `pkg-config` program (`pkg-config --libs pkv` after
//! `meson install`). Checks that pkv.h's status codes are the ones this crate was written for.
use std::env;
use std::path::PathBuf;
use std::process::Command;

const STATUS: &[(&str, i32)] = &[
    ("PKV_OK", 0),
    ("PKV_OUT_OF_MEMORY", 1),
    ("PKV_SEQUENCE_NOT_FOUND", 2),
    ("PKV_BLOCK_NOT_FOUND", 3),
    ("PKV_INVALID_OPERATION", 4),
    ("PKV_INVALID_ARGUMENT", 5),
    ("PKV_BUFFER_TOO_SMALL", 6),
    ("PKV_HOST_OUT_OF_MEMORY", 7),
    ("PKV_INTERNAL_ERROR", 8),
];

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("pkv")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PKV_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKV_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let (lib_dirs, include_dirs): (Vec<PathBuf>, Vec<PathBuf>) = match env::var_os("PKV_LIB_DIR") {
        Some(dir) => (
            vec![PathBuf::from(dir)],
            env::var_os("PKV_INCLUDE_DIR")
                .map(PathBuf::from)
                .into_iter()
                .collect(),
        ),
        None => {
            let libs = pkg_config(&["--libs-only-L"]).unwrap_or_else(|| {
                panic!(
                    "libpkv not found: set PKV_LIB_DIR (and PKV_INCLUDE_DIR) to a meson build \
                     dir, or install pkv so that `pkg-config --libs pkv` works"
                )
            });
            let incs = pkg_config(&["--cflags-only-I"]).unwrap_or_default();
            let strip = |s: &str, p: &str| -> Vec<PathBuf> {
                s.split_whitespace()
                    .filter_map(|w| w.strip_prefix(p).map(PathBuf::from))
                    .collect()
            };
            let mut lib_dirs = strip(&libs, "-L");
            if lib_dirs.is_empty() {
                if let Some(d) = pkg_config(&["--variable=libdir"]) {
                    lib_dirs.push(PathBuf::from(d));
                }
            }
            let mut include_dirs = strip(&incs, "-I");
            if let Some(d) = pkg_config(&["--variable=includedir"]) {
                include_dirs.push(PathBuf::from(d));
            }
            (lib_dirs, include_dirs)
        }
    };
    for dir in &lib_dirs {
        println!("cargo:rustc-link-search=native={}", dir.display());
        // Tests and binaries find the library where it was found, without LD_LIBRARY_PATH.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    println!("cargo:rustc-link-lib=dylib=pkv");

    // The ABI check: every status code of pkv.h must have the value this crate maps.
    if let Some(header) = include_dirs
        .iter()
        .map(|d| d.join("pkv/pkv.h"))
        .find(|p| p.exists())
    {
        println!("cargo:rerun-if-changed={}", header.display());
        let text = std::fs::read_to_string(&header).expect("read pkv.h");
        for (name, value) in STATUS {
            let want = format!("{name} = {value}");
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(&want)),
                "{}: expected `{want}` (the C ABI changed; update src/ffi.rs)",
                header.display()
            );
        }
    } else {
        println!("cargo:warning=pkv/pkv.h not found; the status-code check was skipped");
    }
}
