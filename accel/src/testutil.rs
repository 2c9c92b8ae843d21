//! Shared set-up for the engine's unit tests.

use std::sync::Once;

/// Turns the shm datapath on and points its registry at a directory private to this test process
/// (removed at exit), so unit tests never touch the user's real /dev/shm/accel-<uid>. Call first
/// in any test that may create a tracked socket (the engine reads its configuration once).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("accel-unit-{}", std::process::id()));
        // SAFETY: set once, before any engine state reads it (tests call init() first).
        unsafe {
            std::env::set_var("ACCEL_SHM_DIR", &dir);
            std::env::set_var("ACCEL_SHM", "1");
        }
        extern "C" fn cleanup() {
            let dir = std::env::temp_dir().join(format!("accel-unit-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(dir);
        }
        // SAFETY: registers an extern "C" fn with no arguments.
        unsafe { libc::atexit(cleanup) };
    });
}
