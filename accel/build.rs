//! Compiles the XDP filter program (`bpf/filter.c`) into `$OUT_DIR/filter.o`, which
//! `src/xdp/loader.rs` embeds with `include_bytes!`.
//!
//! With clang (`$ACCEL_BPF_CLANG`, else `clang` in PATH): `clang -O2 -g -target bpf`. `-g` is
//! what makes clang emit BTF, which the kernel needs for the map definitions; the debug prefix
//! maps keep the build directory out of the object so that every machine produces the same
//! bytes.
//!
//! Without clang: the checked-in `bpf/filter.o` is used, but only if `bpf/filter.c.sha256` (the
//! SHA-256 of the source it was built from, in `sha256sum` format) matches the current
//! `bpf/filter.c`; a stale object fails the build with instructions rather than shipping a
//! program that does not match its source. `bpf/refresh.sh` rebuilds both files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let bpf = manifest.join("bpf");
    let source = bpf.join("filter.c");
    let object = out.join("filter.o");
    for f in ["filter.c", "filter.o", "filter.c.sha256"] {
        println!("cargo:rerun-if-changed={}", bpf.join(f).display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ACCEL_BPF_CLANG");

    let clang = std::env::var_os("ACCEL_BPF_CLANG").unwrap_or_else(|| "clang".into());
    match compile(Path::new(&clang), &bpf, &object) {
        Ok(()) => return,
        Err(Compile::NoCompiler(why)) => {
            println!("cargo:warning=no clang for the XDP filter ({why}); using the checked-in accel/bpf/filter.o");
        }
        Err(Compile::Failed(why)) => panic!("compiling accel/bpf/filter.c failed:\n{why}"),
    }

    let recorded = std::fs::read_to_string(bpf.join("filter.c.sha256")).unwrap_or_default();
    let recorded = recorded.split_whitespace().next().unwrap_or("");
    let current = sha256_of(&source).unwrap_or_else(|e| {
        panic!("cannot hash accel/bpf/filter.c to check the checked-in object ({e}); install clang (scripts/setup.sh)")
    });
    if recorded != current {
        panic!(
            "accel/bpf/filter.o is stale: accel/bpf/filter.c has SHA-256 {current}, the object was built from {recorded:?}.\n\
             Install clang (scripts/setup.sh installs it) so the program is compiled, or run accel/bpf/refresh.sh on a machine that has it."
        );
    }
    std::fs::copy(bpf.join("filter.o"), &object).expect("copy accel/bpf/filter.o into OUT_DIR");
}

enum Compile {
    /// The compiler is not there (or cannot target BPF): the checked-in object may stand in.
    NoCompiler(String),
    /// The compiler ran and rejected the source: a real error, never papered over.
    Failed(String),
}

fn compile(clang: &Path, bpf: &Path, object: &Path) -> Result<(), Compile> {
    let mut cmd = Command::new(clang);
    cmd.current_dir(bpf).args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    // Debian keeps <asm/types.h> under the multiarch directory, which `-target bpf` does not search.
    for dir in ["/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu"] {
        if Path::new(dir).join("asm/types.h").exists() {
            cmd.arg(format!("-I{dir}"));
        }
    }
    cmd.arg(format!("-fdebug-prefix-map={}=.", bpf.display()))
        .arg("-fdebug-compilation-dir=.")
        .args(["-c", "filter.c", "-o"])
        .arg(object);
    match cmd.output() {
        Err(e) => Err(Compile::NoCompiler(format!("{}: {e}", clang.display()))),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            if err.contains("No available targets") || err.contains("unknown target") {
                Err(Compile::NoCompiler(err))
            } else {
                Err(Compile::Failed(err))
            }
        }
    }
}

/// The SHA-256 of `path` as lowercase hex, through coreutils' `sha256sum` (a build without clang
/// still has coreutils; a hash crate would be one more dependency for one comparison).
fn sha256_of(path: &Path) -> Result<String, String> {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".to_string())
}
