//! Deferred transmit kicks (ACCEL_XDP_TX_BATCH > 1) and the thread that bounds their wait.
//!
//! In AF_XDP copy mode nothing leaves the TX ring until the process kicks it with a system
//! call, and across veth that call also runs the receiving side's kernel work. Kicking once
//! per batch of sends instead of once per send saves the sender most of that per-call work
//! (64 B on the bench machine: 0.80-0.86 us of its core per datagram kicked one by one,
//! 0.62-0.64 us in batches of 32; docs/benchmarks.md). The port ([`super::port`]) leaves up
//! to ACCEL_XDP_TX_BATCH - 1 frames unkicked; the batch's last send kicks them all. What bounds
//! the wait of a batch that never fills:
//!
//! - the process waiting: a receive, poll, select or epoll call that finds nothing on an
//!   accelerated socket kicks first if its own thread deferred a send ([`flush_if_mine`]), and
//!   any thread does before it sleeps ([`flush_if_pending`]) — a request is on the wire before
//!   its sender waits for the answer, while a thread spinning on receives does not kick
//!   another thread's batches one by one;
//! - order and image changes: a send the kernel takes, a socket handed to the kernel, and exec
//!   kick first ([`flush_if_pending`]);
//! - time: a helper thread, started by the first deferred send, kicks what has waited
//!   ACCEL_XDP_TX_FLUSH_USEC. It sleeps while the oldest unkicked frame is younger, and
//!   parks when none is left, so a steady stream wakes it about once per flush interval and an
//!   idle sender not at all. Each wake costs the sender: the thread inherits the application's
//!   CPU affinity, so it runs on the sending core. With a 100 us interval the wakes ate the whole
//!   gain (64 B, batch 32: 1.07-1.20 M msg/s against 1.16-1.26 M kicking every send); with 1 ms
//!   (the default, cf. libvma's 10 ms VMA_TIMER_RESOLUTION_MSEC) 1.56-1.60 M. A kernel timer
//!   pushed on by each batch instead (a timerfd re-armed per batch, so that a stream never
//!   wakes the thread) was worse still on this virtual machine: 0.86-0.91 M. Like libvma's internal thread it is the library's, not the
//!   application's: all signals blocked, it never runs application code.
//!
//! A kick the kernel could not complete (a busy queue: frames still on the TX ring) leaves the
//! batch pending with a new time, so the flusher tries again one interval later.
//!
//! If the thread cannot be started (a thread limit, a sandbox), sends are kicked at once, as
//! with batch 1, and that is logged once.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// Monotonic time (ns) when the oldest frame no kick has covered yet was queued; 0: none.
static PENDING_SINCE: AtomicU64 = AtomicU64::new(0);
/// The flusher is parked (or about to park) until the next deferred send.
static IDLE: AtomicBool = AtomicBool::new(false);
/// The flusher thread, once started; `None` if it could not be.
static FLUSHER: OnceLock<Option<Thread>> = OnceLock::new();
/// The flusher is in (or about to enter) its kick, which takes the port's lock.
static FLUSHER_BUSY: AtomicBool = AtomicBool::new(false);
/// A fork is under way: the flusher must not take the port's lock (the child would inherit it
/// locked by a thread it does not have).
static FORKING: AtomicBool = AtomicBool::new(false);
/// How long a frame may wait, in ns (from the first caller's config).
static FLUSH_AFTER_NS: AtomicU64 = AtomicU64::new(1_000_000);

thread_local! {
    /// This thread deferred a send that no kick has covered since (as far as it knows).
    static DEFERRED_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Now, in ns of CLOCK_MONOTONIC (never 0).
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass (a vDSO call, no system call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64).max(1)
}

/// Whether deferring is possible: starts the flusher on first use (`flush_usec` is the
/// process's ACCEL_XDP_TX_FLUSH_USEC). False if it cannot run: the caller kicks at once.
pub fn available(flush_usec: u32) -> bool {
    FLUSHER
        .get_or_init(|| {
            FLUSH_AFTER_NS.store(u64::from(flush_usec.max(1)) * 1000, SeqCst);
            start()
        })
        .is_some()
}

/// The calling thread left a frame unkicked (under the port's lock).
#[inline]
pub fn deferred_here() {
    let _ = DEFERRED_HERE.try_with(|d| d.set(true));
}

/// The caller left the first frame of a batch unkicked, or a kick left frames on the ring
/// (under the port's lock): they are due one interval from now.
pub fn deferred_first() {
    PENDING_SINCE.store(now_ns(), SeqCst);
    if IDLE.load(SeqCst) {
        if let Some(Some(t)) = FLUSHER.get() {
            t.unpark();
        }
    }
}

/// The caller kicked every deferred frame (under the port's lock).
#[inline]
pub fn kicked() {
    if PENDING_SINCE.load(SeqCst) != 0 {
        PENDING_SINCE.store(0, SeqCst);
    }
}

/// Sends what is deferred, if anything: before a thread sleeps on an accelerated socket,
/// before a send the kernel takes. One load when nothing is.
#[inline]
pub fn flush_if_pending() {
    if PENDING_SINCE.load(SeqCst) != 0 || super::port::tx_pending() {
        let _ = DEFERRED_HERE.try_with(|d| d.set(false));
        super::port::flush_deferred(false, false);
    }
}

/// As [`flush_if_pending`], only if this thread deferred a send: what a receive or poll that
/// found nothing calls (so a request goes before its sender polls for the answer, and a thread
/// that only receives does not kick another thread's batches one at a time).
#[inline]
pub fn flush_if_mine() {
    if PENDING_SINCE.load(SeqCst) != 0 && DEFERRED_HERE.try_with(|d| d.replace(false)).unwrap_or(true) {
        super::port::flush_deferred(false, false);
    }
}

/// Before exec: as [`flush_if_pending`], but never waits for the port's lock (exec may be
/// called from a signal handler that interrupted this thread while it held it; the frames are
/// then lost, as with `_exit`).
pub fn flush_before_exec() {
    if PENDING_SINCE.load(SeqCst) != 0 {
        super::port::flush_deferred(false, true);
    }
}

/// fork's prepare handler: waits (at most 10 ms) until the flusher is out of its kick and keeps
/// it out until [`after_fork`].
pub fn before_fork() {
    FORKING.store(true, SeqCst);
    let start = std::time::Instant::now();
    while FLUSHER_BUSY.load(SeqCst) && start.elapsed() < Duration::from_millis(10) {
        std::thread::yield_now();
    }
}

/// fork's parent and child handlers.
pub fn after_fork() {
    FORKING.store(false, SeqCst);
}

fn start() -> Option<Thread> {
    // The thread inherits this mask: no application signal is ever delivered to it.
    let blocked = crate::fdtable::SignalsBlocked::new();
    let spawned = std::thread::Builder::new()
        .name("accel-txflush".into())
        .stack_size(64 * 1024)
        .spawn(run);
    drop(blocked);
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            crate::log::warn(format_args!(
                "xdp: cannot start the transmit flusher thread ({e}); ACCEL_XDP_TX_BATCH ignored, every send is kicked at once"
            ));
            None
        }
    }
}

/// The flusher: kicks what has waited its longest, sleeps until the oldest frame's time, parks
/// when nothing waits.
fn run() {
    // The kernel's default 50 us of timer slack would stretch a 100 us flush time by half.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    loop {
        let since = PENDING_SINCE.load(SeqCst);
        if since == 0 {
            IDLE.store(true, SeqCst);
            // A send that deferred before IDLE was set is seen here; one after it unparks.
            if PENDING_SINCE.load(SeqCst) == 0 {
                std::thread::park();
            }
            IDLE.store(false, SeqCst);
            continue;
        }
        let due = since.saturating_add(FLUSH_AFTER_NS.load(SeqCst));
        let now = now_ns();
        if now < due {
            std::thread::sleep(Duration::from_nanos(due - now));
            continue;
        }
        // Still the same batch after its time: kick it (a newer batch has its own time).
        FLUSHER_BUSY.store(true, SeqCst);
        let forking = FORKING.load(SeqCst);
        if !forking && PENDING_SINCE.load(SeqCst) == since {
            super::port::flush_deferred(true, false);
        }
        FLUSHER_BUSY.store(false, SeqCst);
        if forking {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}
