//! Keeping the library in exec'd images.
//!
//! A program that scrubs its environment (`env -i`, `clearenv()`, an explicit `envp` to execve,
//! `unsetenv("LD_PRELOAD")`) would otherwise start its children without us, and their sockets
//! would silently fall back to the kernel. As Onload does, every exec-family hook hands the new
//! image an environment that still names libaccel.so in LD_PRELOAD and still carries the
//! ACCEL_*/VMA_* variables this process started with. A variable the app sets itself wins.
//! ACCEL_PRESERVE_ENV=0 turns this off.

use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;

/// What the new image must see: our LD_PRELOAD entry and our variables, as at start-up.
#[derive(Debug, Default)]
pub struct Preserved {
    /// The LD_PRELOAD token that loads us (path as the user gave it), if we came in that way.
    pub preload: Option<String>,
    /// `KEY=VALUE` entries of ACCEL_* and VMA_* variables at start-up.
    pub vars: Vec<CString>,
}

static PRESERVED: OnceLock<Preserved> = OnceLock::new();

/// The path of the object holding this code (libaccel.so when preloaded).
fn own_path() -> Option<String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr with the address of one of our functions and a buffer we own.
    let r = unsafe { libc::dladdr(own_path as *const libc::c_void, info.as_mut_ptr()) };
    if r == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded; dli_fname is null or a NUL-terminated string owned by ld.so.
    let name = unsafe { info.assume_init().dli_fname };
    if name.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned())
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Finds our token in an LD_PRELOAD value (tokens are separated by spaces or colons).
pub fn preload_token(ld_preload: &str, own: &str) -> Option<String> {
    let own_base = basename(own);
    ld_preload
        .split([' ', ':'])
        .filter(|t| !t.is_empty())
        .find(|t| *t == own || basename(t) == own_base)
        .map(str::to_string)
}

/// Records what to preserve, from the start-up environment (called once at init).
pub fn snapshot_environment(enabled: bool) {
    let _ = PRESERVED.get_or_init(|| {
        if !enabled {
            return Preserved::default();
        }
        let own = own_path().unwrap_or_else(|| "libaccel.so".to_string());
        let preload = std::env::var("LD_PRELOAD").ok().and_then(|v| preload_token(&v, &own));
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.to_str()?;
                (k.starts_with("ACCEL_") || k.starts_with("VMA_")).then(|| {
                    let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
                    kv.extend_from_slice(k.as_bytes());
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_encoded_bytes());
                    CString::new(kv).ok()
                })?
            })
            .collect();
        Preserved { preload, vars }
    });
}

/// A replacement environment: owns its strings and the NULL-terminated pointer array.
pub struct EnvBlock {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl EnvBlock {
    pub fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

fn key_of(entry: &[u8]) -> &[u8] {
    entry.split(|&b| b == b'=').next().unwrap_or(entry)
}

/// The environment to exec with, if `envp` lacks anything we preserve; None = use `envp` as is.
///
/// # Safety
/// `envp` must be null or a NULL-terminated array of NUL-terminated strings.
pub unsafe fn fix_env(envp: *const *const c_char) -> Option<EnvBlock> {
    let p = PRESERVED.get()?;
    fix_env_with(p, envp)
}

/// [`fix_env`] against an explicit [`Preserved`] (testable).
///
/// # Safety
/// As [`fix_env`].
pub unsafe fn fix_env_with(p: &Preserved, envp: *const *const c_char) -> Option<EnvBlock> {
    if p.preload.is_none() && p.vars.is_empty() {
        return None;
    }
    let mut entries: Vec<&CStr> = Vec::new();
    if !envp.is_null() {
        let mut i = 0;
        // SAFETY: caller guarantees a NULL-terminated array of C strings.
        while !(*envp.add(i)).is_null() {
            entries.push(CStr::from_ptr(*envp.add(i)));
            i += 1;
        }
    }
    let mut added: Vec<CString> = Vec::new();
    let mut replace_preload: Option<(usize, CString)> = None;
    if let Some(tok) = &p.preload {
        match entries.iter().position(|e| key_of(e.to_bytes()) == b"LD_PRELOAD") {
            Some(i) => {
                let cur = String::from_utf8_lossy(&entries[i].to_bytes()[b"LD_PRELOAD=".len()..]).into_owned();
                if preload_token(&cur, tok).is_none() {
                    let v = if cur.trim().is_empty() { tok.clone() } else { format!("{tok} {cur}") };
                    replace_preload = CString::new(format!("LD_PRELOAD={v}")).ok().map(|c| (i, c));
                }
            }
            None => added.extend(CString::new(format!("LD_PRELOAD={tok}")).ok()),
        }
    }
    for kv in &p.vars {
        let k = key_of(kv.to_bytes());
        if !entries.iter().any(|e| key_of(e.to_bytes()) == k) {
            added.push(kv.clone());
        }
    }
    if added.is_empty() && replace_preload.is_none() {
        return None;
    }
    let mut strings: Vec<CString> = Vec::new();
    let mut ptrs: Vec<*const c_char> = Vec::with_capacity(entries.len() + added.len() + 1);
    let replace_at = replace_preload.as_ref().map(|(i, _)| *i);
    if let Some((_, c)) = replace_preload {
        strings.push(c);
    }
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == replace_at {
            ptrs.push(strings[0].as_ptr());
        } else {
            ptrs.push(e.as_ptr());
        }
    }
    for a in added {
        strings.push(a);
        // The CString's heap buffer does not move when the Vec of CStrings grows.
        ptrs.push(strings.last().map_or(core::ptr::null(), |s| s.as_ptr()));
    }
    ptrs.push(core::ptr::null());
    Some(EnvBlock { _strings: strings, ptrs })
}

/// While alive, the process's own environment again holds what we preserve; dropping it puts
/// back what the program had. For `system()` and `popen()`, whose glibc implementations spawn the
/// shell with the current environment through an internal call no hook sees.
pub struct EnvPatch {
    /// (key, the value before, if any), to restore.
    restore: Vec<(CString, Option<CString>)>,
    _lock: Option<parking_lot::MutexGuard<'static, ()>>,
}

static PATCH_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

extern "C" {
    static environ: *const *const c_char;
}

impl EnvPatch {
    /// Patches the environment if anything is missing; a no-op patch otherwise.
    pub fn apply() -> EnvPatch {
        let mut patch = EnvPatch { restore: Vec::new(), _lock: None };
        // SAFETY: environ is the process environment, NULL-terminated.
        let Some(block) = (unsafe { fix_env(environ) }) else { return patch };
        patch._lock = Some(PATCH_LOCK.lock());
        let mut i = 0;
        // SAFETY: EnvBlock is a NULL-terminated array of C strings it owns.
        unsafe {
            while !(*block.as_ptr().add(i)).is_null() {
                let kv = CStr::from_ptr(*block.as_ptr().add(i)).to_bytes();
                i += 1;
                let Some(eq) = kv.iter().position(|&b| b == b'=') else { continue };
                let (Ok(k), Ok(v)) = (CString::new(&kv[..eq]), CString::new(&kv[eq + 1..])) else { continue };
                let old = libc::getenv(k.as_ptr());
                let old = (!old.is_null()).then(|| CStr::from_ptr(old).to_owned());
                if old.as_deref() == Some(v.as_c_str()) {
                    continue;
                }
                libc::setenv(k.as_ptr(), v.as_ptr(), 1);
                patch.restore.push((k, old));
            }
        }
        patch
    }
}

impl Drop for EnvPatch {
    fn drop(&mut self) {
        for (k, old) in self.restore.drain(..).rev() {
            // SAFETY: keys and values are NUL-terminated strings we own.
            unsafe {
                match old {
                    Some(v) => libc::setenv(k.as_ptr(), v.as_ptr(), 1),
                    None => libc::unsetenv(k.as_ptr()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(block: &EnvBlock) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        // SAFETY: EnvBlock is a NULL-terminated array of C strings it owns.
        unsafe {
            while !(*block.as_ptr().add(i)).is_null() {
                out.push(CStr::from_ptr(*block.as_ptr().add(i)).to_string_lossy().into_owned());
                i += 1;
            }
        }
        out
    }

    fn preserved() -> Preserved {
        Preserved {
            preload: Some("/opt/accel/libaccel.so".into()),
            vars: vec![CString::new("ACCEL_LOG_LEVEL=debug").unwrap(), CString::new("VMA_RX_BUFS=8192").unwrap()],
        }
    }

    fn with_env<T>(vars: &[&str], f: impl FnOnce(*const *const c_char) -> T) -> T {
        let cs: Vec<CString> = vars.iter().map(|v| CString::new(*v).unwrap()).collect();
        let mut ptrs: Vec<*const c_char> = cs.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(core::ptr::null());
        f(ptrs.as_ptr())
    }

    #[test]
    fn empty_environment_gets_everything_back() {
        let p = preserved();
        let env = with_env(&[], |e| env_of(&unsafe { fix_env_with(&p, e) }.unwrap()));
        assert_eq!(
            env,
            ["LD_PRELOAD=/opt/accel/libaccel.so", "ACCEL_LOG_LEVEL=debug", "VMA_RX_BUFS=8192"]
        );
        let b = unsafe { fix_env_with(&p, core::ptr::null()) }.unwrap();
        assert_eq!(env_of(&b).len(), 3);
    }

    #[test]
    fn complete_environment_is_left_alone() {
        let p = preserved();
        let r = with_env(
            &["PATH=/bin", "LD_PRELOAD=/opt/accel/libaccel.so", "ACCEL_LOG_LEVEL=info", "VMA_RX_BUFS=1"],
            |e| unsafe { fix_env_with(&p, e) },
        );
        assert!(r.is_none(), "the app's own values win");
    }

    #[test]
    fn other_preloads_are_kept_after_ours() {
        let p = preserved();
        // The block points into the caller's envp, which lives until exec: read it in the scope.
        let env = with_env(&["LD_PRELOAD=/usr/lib/libother.so", "X=1"], |e| {
            env_of(&unsafe { fix_env_with(&p, e) }.unwrap())
        });
        assert_eq!(env[0], "LD_PRELOAD=/opt/accel/libaccel.so /usr/lib/libother.so");
        assert_eq!(env[1], "X=1");
        assert!(env.contains(&"ACCEL_LOG_LEVEL=debug".to_string()));
    }

    #[test]
    fn token_matching() {
        assert_eq!(preload_token("a.so:/x/libaccel.so b.so", "/y/libaccel.so").as_deref(), Some("/x/libaccel.so"));
        assert_eq!(preload_token("libother.so", "/y/libaccel.so"), None);
        assert_eq!(preload_token("", "/y/libaccel.so"), None);
    }

    #[test]
    fn nothing_preserved_means_no_change() {
        let p = Preserved::default();
        assert!(with_env(&[], |e| unsafe { fix_env_with(&p, e) }).is_none());
    }
}
