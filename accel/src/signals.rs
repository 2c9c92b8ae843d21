//! Signals during a receive that spins in user space.
//!
//! A receive blocked in the kernel returns EINTR when a signal handler installed without
//! SA_RESTART runs. A receive spinning on a ring never enters the kernel, so it would just keep
//! spinning — a program that relies on EINTR to leave a blocking call (to stop on SIGTERM, say)
//! would hang. As libvma does (VMA_HANDLE_SIGINTR), while a datapath is on we install the
//! program's handlers through a wrapper that counts deliveries of handlers without SA_RESTART;
//! a spinning receive that sees the count move returns EINTR. `sigaction` still reports the
//! program's own handler as the old action, so nothing else changes.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_void, siginfo_t};

const NSIG: usize = 65;

/// Deliveries of handlers installed without SA_RESTART.
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// The program's handler per signal (0: none of ours in between).
static HANDLERS: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];
/// The program's sa_flags per signal.
static FLAGS: [AtomicUsize; NSIG] = [const { AtomicUsize::new(0) }; NSIG];

/// The interrupt count, to compare before and after a spin.
#[inline(always)]
pub fn interrupts() -> u64 {
    INTERRUPTS.load(Ordering::Relaxed)
}

extern "C" fn wrapper(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let i = sig as usize;
    if i >= NSIG {
        return;
    }
    let flags = FLAGS[i].load(Ordering::Relaxed) as c_int;
    if flags & libc::SA_RESTART == 0 {
        INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    }
    let h = HANDLERS[i].load(Ordering::Relaxed);
    if h == 0 || h == libc::SIG_IGN || h == libc::SIG_DFL {
        return;
    }
    // Sockets retired meanwhile are not dropped from inside the handler (grace.rs). A handler
    // that longjmps out leaves the count raised: that thread then leaves the drops to others.
    crate::grace::handler_enter();
    // SAFETY: `h` is the handler the program installed for this signal, with the calling
    // convention its SA_SIGINFO flag says.
    unsafe {
        if flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = core::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(c_int) = core::mem::transmute(h);
            f(sig);
        }
    }
    crate::grace::handler_exit();
}

/// What to install for the program's `act`: the same action through our wrapper when it is a
/// handler (None: install `act` as it is). Records the program's handler.
///
/// # Safety
/// `act` is null or a valid sigaction.
pub unsafe fn wrap(sig: c_int, act: *const libc::sigaction) -> Option<libc::sigaction> {
    let i = usize::try_from(sig).ok().filter(|&i| i > 0 && i < NSIG)?;
    if act.is_null() {
        return None;
    }
    let a = &*act;
    if a.sa_sigaction == libc::SIG_DFL || a.sa_sigaction == libc::SIG_IGN {
        HANDLERS[i].store(0, Ordering::Relaxed);
        return None;
    }
    HANDLERS[i].store(a.sa_sigaction, Ordering::Relaxed);
    FLAGS[i].store(a.sa_flags as usize, Ordering::Relaxed);
    let mut ours = *a;
    ours.sa_sigaction = wrapper as *const () as usize;
    ours.sa_flags |= libc::SA_SIGINFO;
    Some(ours)
}

/// Rewrites an old action the kernel reported: our wrapper is shown as the program's handler.
///
/// # Safety
/// `old` is null or a valid sigaction.
pub unsafe fn unwrap_old(sig: c_int, old: *mut libc::sigaction) {
    if old.is_null() || (*old).sa_sigaction != wrapper as *const () as usize {
        return;
    }
    if let Some(i) = usize::try_from(sig).ok().filter(|&i| i < NSIG) {
        (*old).sa_sigaction = HANDLERS[i].load(Ordering::Relaxed);
        (*old).sa_flags = FLAGS[i].load(Ordering::Relaxed) as c_int;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HITS: AtomicU64 = AtomicU64::new(0);
    extern "C" fn app_handler(_: c_int) {
        HITS.fetch_add(1, Ordering::Relaxed);
    }

    fn install(sig: c_int, flags: c_int) -> libc::sigaction {
        // SAFETY: a zeroed sigaction is valid; fields are filled below.
        let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
        a.sa_sigaction = app_handler as *const () as usize;
        a.sa_flags = flags;
        // SAFETY: wrap/sigaction/unwrap_old on valid structs.
        unsafe {
            let ours = wrap(sig, &a).unwrap();
            assert_eq!(libc::sigaction(sig, &ours, core::ptr::null_mut()), 0);
            let mut old: libc::sigaction = core::mem::zeroed();
            assert_eq!(libc::sigaction(sig, core::ptr::null(), &mut old), 0);
            unwrap_old(sig, &mut old);
            old
        }
    }

    #[test]
    fn counts_only_handlers_without_sa_restart_and_reports_the_programs_handler() {
        let old = install(libc::SIGUSR1, 0);
        assert_eq!(old.sa_sigaction, app_handler as *const () as usize, "the program sees its own handler");
        let before = (interrupts(), HITS.load(Ordering::Relaxed));
        // SAFETY: raising a signal whose handler we installed.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(interrupts(), before.0 + 1);
        assert_eq!(HITS.load(Ordering::Relaxed), before.1 + 1, "the program's handler ran");

        install(libc::SIGUSR2, libc::SA_RESTART);
        let n = interrupts();
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert_eq!(interrupts(), n, "SA_RESTART handlers do not interrupt");
    }
}
