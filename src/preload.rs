//! Finding `libaccel.so` and building the `LD_PRELOAD` value for the command.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The library's file name.
pub const LIB_NAME: &str = "libaccel.so";

/// Where `libaccel.so` is looked for, in order, given the directory holding the `accel`
/// executable: next to it (cargo's `target/<profile>/`), then `../lib` and `../lib/accel`
/// (an installation under a prefix).
pub fn candidates(exe_dir: &Path) -> Vec<PathBuf> {
    vec![
        exe_dir.join(LIB_NAME),
        exe_dir.join("../lib").join(LIB_NAME),
        exe_dir.join("../lib/accel").join(LIB_NAME),
    ]
}

/// Why no library could be used.
#[derive(Debug)]
pub enum LibError {
    /// None of the places looked at holds the library.
    NotFound { looked: Vec<PathBuf> },
    /// The library given by `--lib` or `ACCEL_LIB` is not a readable file.
    BadOverride {
        path: PathBuf,
        origin: &'static str,
        error: io::Error,
    },
    /// LD_PRELOAD separates entries by spaces and colons, so it cannot carry this path.
    Unpreloadable(PathBuf),
    /// The location of the `accel` executable itself is unknown.
    NoExe(io::Error),
}

impl fmt::Display for LibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LibError::NotFound { looked } => {
                write!(f, "{LIB_NAME} not found; looked in:")?;
                for p in looked {
                    write!(f, "\n  {}", p.display())?;
                }
                write!(f, "\n(use --lib PATH or ACCEL_LIB=PATH to name it)")
            }
            LibError::BadOverride {
                path,
                origin,
                error,
            } => {
                write!(f, "cannot use {} (from {origin}): {error}", path.display())
            }
            LibError::Unpreloadable(p) => write!(
                f,
                "cannot preload {}: LD_PRELOAD cannot hold a path containing a space or ':'",
                p.display()
            ),
            LibError::NoExe(e) => write!(f, "cannot locate the accel executable: {e}"),
        }
    }
}

impl std::error::Error for LibError {}

/// Resolves the library to preload. `lib_opt` is `--lib`, `env_lib` is `ACCEL_LIB` (empty counts
/// as unset), `exe` the path of the running `accel` (`/proc/self/exe`). The result is absolute.
pub fn find_library(
    lib_opt: Option<&Path>,
    env_lib: Option<&OsStr>,
    exe: io::Result<PathBuf>,
) -> Result<PathBuf, LibError> {
    let (path, origin) = match (lib_opt, env_lib.filter(|s| !s.is_empty())) {
        (Some(p), _) => (Some(p.to_path_buf()), "--lib"),
        (None, Some(e)) => (Some(PathBuf::from(e)), "ACCEL_LIB"),
        (None, None) => (None, ""),
    };
    let found = match path {
        Some(path) => {
            let checked = std::fs::metadata(&path).and_then(|m| {
                if m.is_file() {
                    std::fs::canonicalize(&path)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ))
                }
            });
            checked.map_err(|error| LibError::BadOverride {
                path,
                origin,
                error,
            })?
        }
        None => {
            let exe = exe.map_err(LibError::NoExe)?;
            let dir = exe.parent().unwrap_or(Path::new("/"));
            let looked = candidates(dir);
            looked
                .iter()
                .find(|p| p.is_file())
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                .ok_or(LibError::NotFound { looked })?
        }
    };
    if found
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .any(|&b| b == b' ' || b == b':')
    {
        return Err(LibError::Unpreloadable(found));
    }
    Ok(found)
}

/// The new `LD_PRELOAD`: `ours` first, then the entries of `old` (separated by spaces or colons,
/// as ld.so accepts them) without repeating `ours`. When `ours` is not in `old`, `old` is kept
/// verbatim behind it (joined with the separator `old` uses, ':' by default).
pub fn merge_ld_preload(old: Option<&OsStr>, ours: &Path) -> OsString {
    let ours = ours.as_os_str().as_encoded_bytes();
    let is_sep = |b: &u8| *b == b' ' || *b == b':';
    let old = old.map(|o| o.as_encoded_bytes()).unwrap_or(b"");
    let old = trim(old, is_sep);
    let mut out = ours.to_vec();
    if old.is_empty() {
        return bytes_to_os(out);
    }
    let sep = old.iter().copied().find(is_sep).unwrap_or(b':');
    let entries: Vec<&[u8]> = old.split(is_sep).filter(|e| !e.is_empty()).collect();
    if entries.contains(&ours) {
        for e in entries.into_iter().filter(|e| *e != ours) {
            out.push(sep);
            out.extend_from_slice(e);
        }
    } else {
        out.push(sep);
        out.extend_from_slice(old);
    }
    bytes_to_os(out)
}

fn trim(mut s: &[u8], is_sep: impl Fn(&u8) -> bool) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_sep(first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_sep(last) {
            break;
        }
        s = rest;
    }
    s
}

fn bytes_to_os(v: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "/opt/accel/lib/libaccel.so";

    fn merge(old: Option<&str>) -> String {
        merge_ld_preload(old.map(OsStr::new), Path::new(OURS))
            .into_string()
            .unwrap()
    }

    #[test]
    fn merge_without_old_value() {
        assert_eq!(merge(None), OURS);
        assert_eq!(merge(Some("")), OURS);
        assert_eq!(merge(Some("  :: ")), OURS);
    }

    #[test]
    fn merge_puts_ours_first() {
        assert_eq!(merge(Some("libfoo.so")), format!("{OURS}:libfoo.so"));
        assert_eq!(
            merge(Some("/a/liba.so:/b/libb.so")),
            format!("{OURS}:/a/liba.so:/b/libb.so")
        );
        assert_eq!(
            merge(Some("/a/liba.so /b/libb.so")),
            format!("{OURS} /a/liba.so /b/libb.so")
        );
        // Separators in the old value are kept as given.
        assert_eq!(
            merge(Some("a.so b.so:c.so")),
            format!("{OURS} a.so b.so:c.so")
        );
    }

    #[test]
    fn merge_does_not_add_ours_twice() {
        assert_eq!(merge(Some(OURS)), OURS);
        assert_eq!(
            merge(Some(&format!("{OURS}:libfoo.so"))),
            format!("{OURS}:libfoo.so")
        );
        // Present but not first: moved to the front (it must see the calls first).
        assert_eq!(
            merge(Some(&format!("libfoo.so:{OURS}"))),
            format!("{OURS}:libfoo.so")
        );
        assert_eq!(
            merge(Some(&format!("a.so {OURS} b.so {OURS}"))),
            format!("{OURS} a.so b.so")
        );
        // A different libaccel.so is somebody else's choice: kept.
        assert_eq!(
            merge(Some("/other/libaccel.so")),
            format!("{OURS}:/other/libaccel.so")
        );
    }

    #[test]
    fn candidate_order() {
        let c = candidates(Path::new("/usr/local/bin"));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/usr/local/bin/libaccel.so"),
                PathBuf::from("/usr/local/bin/../lib/libaccel.so"),
                PathBuf::from("/usr/local/bin/../lib/accel/libaccel.so"),
            ]
        );
    }

    /// A fresh scratch directory under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("accel-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn finds_next_to_exe_then_lib() {
        let root = scratch("find");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("lib/accel")).unwrap();
        let exe = root.join("bin/accel");

        match find_library(None, None, Ok(exe.clone())) {
            Err(LibError::NotFound { looked }) => assert_eq!(looked, candidates(&root.join("bin"))),
            other => panic!("{other:?}"),
        }
        let msg = find_library(None, None, Ok(exe.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("not found") && msg.contains("lib/accel/libaccel.so"),
            "{msg}"
        );

        std::fs::write(root.join("lib/accel/libaccel.so"), b"").unwrap();
        let root_c = std::fs::canonicalize(&root).unwrap();
        assert_eq!(
            find_library(None, None, Ok(exe.clone())).unwrap(),
            root_c.join("lib/accel/libaccel.so")
        );
        std::fs::write(root.join("lib/libaccel.so"), b"").unwrap();
        assert_eq!(
            find_library(None, None, Ok(exe.clone())).unwrap(),
            root_c.join("lib/libaccel.so")
        );
        std::fs::write(root.join("bin/libaccel.so"), b"").unwrap();
        assert_eq!(
            find_library(None, None, Ok(exe.clone())).unwrap(),
            root_c.join("bin/libaccel.so")
        );

        // Overrides: --lib beats ACCEL_LIB beats the search; empty ACCEL_LIB is unset.
        let other = root.join("other.so");
        std::fs::write(&other, b"").unwrap();
        let lib_c = root_c.join("lib/libaccel.so");
        assert_eq!(
            find_library(None, Some(other.as_os_str()), Ok(exe.clone())).unwrap(),
            root_c.join("other.so")
        );
        assert_eq!(
            find_library(
                Some(&root.join("lib/libaccel.so")),
                Some(other.as_os_str()),
                Ok(exe.clone())
            )
            .unwrap(),
            lib_c
        );
        assert_eq!(
            find_library(None, Some(OsStr::new("")), Ok(exe.clone())).unwrap(),
            root_c.join("bin/libaccel.so")
        );
        match find_library(Some(&root.join("missing.so")), None, Ok(exe.clone())) {
            Err(LibError::BadOverride {
                origin: "--lib", ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match find_library(None, Some(root.join("lib").as_os_str()), Ok(exe.clone())) {
            Err(LibError::BadOverride {
                origin: "ACCEL_LIB",
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let spaced = root.join("a b.so");
        std::fs::write(&spaced, b"").unwrap();
        assert!(matches!(
            find_library(Some(&spaced), None, Ok(exe)),
            Err(LibError::Unpreloadable(_))
        ));
        let _ = std::fs::remove_dir_all(&root);
    }
}
