//! Per-thread flags that make hooks call straight through.
//!
//! - *in engine*: the engine itself is running on this thread (start-up, or a hook that is
//!   already handling a call), so libc calls it makes must reach the kernel untouched.
//! - *resolving*: the thread is inside getaddrinfo/gethostbyname/res_*; sockets created there
//!   belong to the name resolver and are never accelerated.
//!
//! Both are `const` thread-locals of plain `Cell`s: no lazy initialisation, no destructor to
//! register, so they are safe to touch from any hook at any time, even during thread exit.

use std::cell::Cell;

thread_local! {
    static IN_ENGINE: Cell<u32> = const { Cell::new(0) };
    static RESOLVING: Cell<u32> = const { Cell::new(0) };
}

#[inline(always)]
pub fn in_engine() -> bool {
    IN_ENGINE.with(|c| c.get() != 0)
}

#[inline(always)]
pub fn resolving() -> bool {
    RESOLVING.with(|c| c.get() != 0)
}

/// While alive, this thread is inside the engine.
pub struct EngineGuard(());

impl EngineGuard {
    #[inline(always)]
    pub fn enter() -> EngineGuard {
        IN_ENGINE.with(|c| c.set(c.get() + 1));
        EngineGuard(())
    }
}

impl Drop for EngineGuard {
    #[inline(always)]
    fn drop(&mut self) {
        IN_ENGINE.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// While alive, this thread is resolving a name.
pub struct ResolverGuard(());

impl ResolverGuard {
    pub fn enter() -> ResolverGuard {
        RESOLVING.with(|c| c.set(c.get() + 1));
        ResolverGuard(())
    }
}

impl Drop for ResolverGuard {
    fn drop(&mut self) {
        RESOLVING.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_nest_and_unwind() {
        assert!(!in_engine());
        {
            let _a = EngineGuard::enter();
            let _b = EngineGuard::enter();
            assert!(in_engine());
        }
        assert!(!in_engine());
        {
            let _r = ResolverGuard::enter();
            assert!(resolving());
            assert!(!in_engine());
        }
        assert!(!resolving());
    }

    #[test]
    fn flags_are_per_thread() {
        let _g = EngineGuard::enter();
        std::thread::spawn(|| assert!(!in_engine())).join().unwrap();
    }
}
