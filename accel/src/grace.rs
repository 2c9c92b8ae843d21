//! Read sections and deferred freeing: how the fd table's hot lookups reach a socket without a
//! single atomic read-modify-write.
//!
//! A lookup that takes the table's reader lock and a reference count costs four locked
//! instructions (lock, count up, count down, unlock), ~24 ns on this machine — a tenth of a
//! same-host ping-pong. Instead, as in user-space RCU:
//!
//! - a thread that reads announces it in its own [`Record`] (its nesting depth, a plain store to
//!   a line no other thread writes), reads the table, uses the socket, and clears the depth;
//! - a writer that takes a socket out of the table does not drop the table's reference at once:
//!   it [`retire`]s it. The reference is dropped once every thread that was inside a section
//!   when it was retired has left that section (its depth is 0, or its count of exits moved).
//!
//! For the writer to see a reader's announcement before the reader can see the old pointer,
//! one side needs a full fence. Readers run all the time and writers rarely (close, dup2), so
//! the writer pays for both: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` makes every running
//! thread of the process execute a full barrier (an asymmetric fence, as liburcu's
//! `urcu-memb` and folly's hazard pointers do). Where the kernel lacks it, readers fence
//! themselves (an `mfence` on entry and one on exit, still cheaper than the lock).
//!
//! Sections should not block: a thread asleep in one holds back every retirement. The fd table
//! hands out references ([`crate::fdtable::get`]) for anything that may sleep, and sections
//! ([`crate::fdtable::with`]) only for the non-blocking fast paths. A writer waits up to 50 µs
//! for sections in progress (a preempted reader resumes within a time slice); if one is still
//! open — a signal handler that closes the socket its interrupted code is reading, a reader
//! descheduled for long — the retired sockets wait, and the end of such a section (or any
//! section, at most once a millisecond) collects them.
//!
//! Nothing here blocks or allocates on the reading side, so a lookup inside a signal handler is
//! safe: records are a fixed pool claimed once per thread by compare-and-swap, identified by
//! kernel thread id (a dead thread's record is taken over when the pool runs out; a thread that
//! finds none falls back to the locked lookup); retired sockets wait in lock-free lists; the
//! collector's role is taken with a try-lock (a handler that finds it held leaves a note for the
//! holder instead of waiting on its own thread). Dropping a socket withdraws its filters (locks,
//! file system calls), so a section's end drops sockets only where that is safe — at the end
//! of a [`crate::fdtable::with`], outside signal handlers; elsewhere what is collected waits in
//! a ready list for the next such point (or the next retirement).

use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::null_mut;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::socket::Socket;

/// Threads that can hold a record at once; more fall back to the locked lookup.
const RECORDS: usize = 256;
const WORDS: usize = RECORDS / 64;
/// Records a thread without one looks at for a dead owner before it settles for the locked lookup.
const TAKEOVER_LOOKS: usize = 32;
/// How long a writer waits for sections in progress before leaving its retirements waiting.
const WAIT: Duration = Duration::from_micros(50);
/// While retirements wait, a section's end that is not a blocker's tries to collect them at
/// most this often (each try costs a membarrier).
const RETRY_GAP_NS: u64 = 1_000_000;

/// One thread's announcement. Written by its owner only (and reset by a thread that takes over
/// a dead thread's record, and by the fork child); a line of its own so readers never share one.
#[repr(align(128))]
struct Record {
    /// Kernel thread id of the owner; 0 = free.
    owner: AtomicI32,
    /// Nesting depth of the owner's sections (a signal handler may open one inside another).
    depth: AtomicU32,
    /// Outermost sections ended so far: a writer that saw this record in a section knows that
    /// section is over when this moves.
    exits: AtomicU64,
}

static POOL: [Record; RECORDS] =
    [const { Record { owner: AtomicI32::new(0), depth: AtomicU32::new(0), exits: AtomicU64::new(0) } }; RECORDS];
/// Records ever claimed: writers scan `POOL[..HIGH]`.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// membarrier is registered: readers need no fence of their own.
static ASYMMETRIC: AtomicBool = AtomicBool::new(false);

/// The fd table's reference to a socket, boxed when it is registered so that retiring it later
/// needs no allocation (a `close` in a signal handler that interrupted malloc must not call
/// it). Linked into the lists below once retired.
pub struct Entry {
    pub sock: Arc<Socket>,
    next: *mut Entry,
}

impl Entry {
    /// A new table reference (the only allocation of the scheme; at socket(), dup, ...).
    pub fn new(sock: Arc<Socket>) -> *mut Entry {
        Box::into_raw(Box::new(Entry { sock, next: null_mut() }))
    }
}

type Node = Entry;

/// Just retired (lock-free pushes; the collector moves them to WAITING).
static INTAKE: AtomicPtr<Node> = AtomicPtr::new(null_mut());
/// Waiting for the sections open at their retirement to end. Only the collector touches it.
static WAITING: AtomicPtr<Node> = AtomicPtr::new(null_mut());
/// Collected, to be dropped where dropping a socket is safe (lock-free pushes and takes).
static READY: AtomicPtr<Node> = AtomicPtr::new(null_mut());
/// Something is in one of the three lists: a section's end looks further.
static PENDING: AtomicBool = AtomicBool::new(false);
/// The collector's role (a try-lock: nobody ever waits for it).
static COLLECTOR: AtomicBool = AtomicBool::new(false);
/// Someone found the collector's role taken: its holder collects once more before it leaves.
static AGAIN: AtomicBool = AtomicBool::new(false);
/// One bit per record: its section holds back WAITING, so its end collects.
static BLOCKERS: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// CLOCK_MONOTONIC_COARSE ns of the last try by a section's end that was not a blocker's.
static LAST_TRY: AtomicU64 = AtomicU64::new(0);
/// Retirements that had to wait for a section to end (statistics, tests).
static DEFERRED: AtomicU64 = AtomicU64::new(0);

/// [`MINE`] before the thread's first section.
const UNCLAIMED: usize = 0;
/// [`MINE`] of a thread that found no free record.
const NO_RECORD: usize = 1;

thread_local! {
    /// This thread's record (its address), or UNCLAIMED / NO_RECORD.
    static MINE: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// Signal handlers of the program running on this thread (our wrapper counts them).
    static IN_HANDLER: Cell<u32> = const { Cell::new(0) };
}

// Linux's membarrier(2) commands.
const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
}

/// Registers the process for expedited membarriers, so readers can skip their fence. Call at
/// start-up, before any socket is tracked (readers must not change mode while a writer runs),
/// and in the child after fork.
pub fn init() {
    let supported = membarrier(MEMBARRIER_CMD_QUERY);
    let ok = supported >= 0
        && supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
        && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
    ASYMMETRIC.store(ok, Ordering::SeqCst);
}

/// The program's signal handler starts / ends on this thread (signals.rs's wrapper).
pub fn handler_enter() {
    IN_HANDLER.with(|h| h.set(h.get() + 1));
}
pub fn handler_exit() {
    IN_HANDLER.with(|h| h.set(h.get().saturating_sub(1)));
}

/// A read section of the calling thread: pointers read from the fd table inside it stay valid
/// until it is dropped. Not `Send`: it belongs to the thread's record.
pub struct Section {
    rec: &'static Record,
    outermost: bool,
    /// Dropping retired sockets at its end is safe (no caller's lock held).
    may_drop: bool,
    _thread_bound: PhantomData<*const ()>,
}

/// Opens a read section; None when this thread has no record (the pool is exhausted): the
/// caller uses the locked lookup. `may_drop`: the caller holds no lock of ours and is not
/// inside a signal handler's call chain, so that retired sockets may be dropped at the end.
#[inline]
pub fn enter(may_drop: bool) -> Option<Section> {
    let rec: &'static Record = match MINE.with(Cell::get) {
        UNCLAIMED => &POOL[claim()?],
        NO_RECORD => return None,
        // SAFETY: MINE holds the address of a POOL element (set by `claim`), which is 'static.
        p => unsafe { &*(p as *const Record) },
    };
    let depth = rec.depth.load(Ordering::Relaxed);
    rec.depth.store(depth + 1, Ordering::Relaxed);
    // The announcement must be visible before the table is read: a writer's membarrier forces
    // it, else our own fence does.
    if ASYMMETRIC.load(Ordering::Relaxed) {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    Some(Section { rec, outermost: depth == 0, may_drop, _thread_bound: PhantomData })
}

impl Drop for Section {
    #[inline]
    fn drop(&mut self) {
        let depth = self.rec.depth.load(Ordering::Relaxed);
        if self.outermost {
            let exits = self.rec.exits.load(Ordering::Relaxed);
            self.rec.exits.store(exits + 1, Ordering::Release);
        }
        self.rec.depth.store(depth - 1, Ordering::Release);
        if !ASYMMETRIC.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst); // our exit before our look at PENDING (see `collect`)
        }
        if self.outermost && PENDING.load(Ordering::Relaxed) {
            section_end_slow(self.rec, self.may_drop);
        }
    }
}

/// A section's end while something is pending.
#[cold]
#[inline(never)]
fn section_end_slow(rec: &'static Record, may_drop: bool) {
    let may_drop = may_drop && IN_HANDLER.with(Cell::get) == 0;
    let i = index_of(rec);
    let blocker = BLOCKERS[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0;
    let due = blocker || {
        let now = coarse_ns();
        let last = LAST_TRY.load(Ordering::Relaxed);
        now.wrapping_sub(last) >= RETRY_GAP_NS
            && LAST_TRY.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    };
    if due {
        service(false, may_drop);
    } else if may_drop && !READY.load(Ordering::Relaxed).is_null() {
        keep_errno(|| drop_chain(READY.swap(null_mut(), Ordering::Acquire)));
    }
}

fn index_of(rec: &'static Record) -> usize {
    (rec as *const Record as usize - POOL.as_ptr() as usize) / size_of::<Record>()
}

fn coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` with errno as it was before (a section's end runs after the call set its errno).
fn keep_errno<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: errno is thread-local.
    let saved = unsafe { *libc::__errno_location() };
    let r = f();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    r
}

#[cold]
fn claim() -> Option<usize> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let taken = POOL.iter().position(|r| r.owner.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed).is_ok());
    let taken = taken.or_else(|| {
        // None free: take over the record of a thread that has exited (it is in no section),
        // looking at a few from a moving start (each look is a system call).
        static CURSOR: AtomicUsize = AtomicUsize::new(0);
        let start = CURSOR.fetch_add(TAKEOVER_LOOKS, Ordering::Relaxed);
        (start..start + TAKEOVER_LOOKS).map(|k| k % RECORDS).find(|&i| {
            let r = &POOL[i];
            let o = r.owner.load(Ordering::Acquire);
            o != 0 && !thread_alive(o) && r.owner.compare_exchange(o, tid, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })
    });
    let Some(i) = taken else {
        MINE.with(|m| m.set(NO_RECORD));
        return None;
    };
    POOL[i].depth.store(0, Ordering::Relaxed);
    HIGH.fetch_max(i + 1, Ordering::AcqRel);
    MINE.with(|m| m.set(&POOL[i] as *const Record as usize));
    Some(i)
}

fn thread_alive(tid: i32) -> bool {
    keep_errno(|| {
        // SAFETY: signal 0 only checks that the thread exists; no signal is sent.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
        // SAFETY: errno is thread-local.
        r == 0 || unsafe { *libc::__errno_location() } != libc::ESRCH
    })
}

fn my_index() -> Option<usize> {
    match MINE.with(Cell::get) {
        UNCLAIMED | NO_RECORD => None,
        // SAFETY: MINE holds the address of a POOL element.
        p => Some(index_of(unsafe { &*(p as *const Record) })),
    }
}

/// Takes table references (entries from [`Entry::new`] no longer reachable through the table,
/// linked by the caller with [`link`]: `first..=last`); each is dropped once no section that
/// might have read it is still open (usually before this returns; inside a signal handler of
/// the program, later, elsewhere). Neither waits for a lock nor allocates.
///
/// # Safety
/// The chain is the caller's, and no longer in the table.
pub unsafe fn retire(first: *mut Entry, last: *mut Entry) {
    if first.is_null() {
        return;
    }
    push_chain(&INTAKE, first, last);
    PENDING.store(true, Ordering::SeqCst);
    service(true, IN_HANDLER.with(Cell::get) == 0);
}

/// Links `next` after `e` (building a chain for [`retire`]).
///
/// # Safety
/// Both are the caller's, out of the table.
pub unsafe fn link(e: *mut Entry, next: *mut Entry) {
    (*e).next = next;
}

/// Pushes the chain `first..=last` onto `list`.
fn push_chain(list: &AtomicPtr<Node>, first: *mut Node, last: *mut Node) {
    let mut head = list.load(Ordering::Relaxed);
    loop {
        // SAFETY: `last` is ours until the push succeeds (no other thread can reach it).
        unsafe { (*last).next = head };
        match list.compare_exchange_weak(head, first, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// The last node of a non-empty chain.
///
/// # Safety
/// `first` heads a chain this thread owns.
unsafe fn last_of(first: *mut Node) -> *mut Node {
    let mut n = first;
    while !(*n).next.is_null() {
        n = (*n).next;
    }
    n
}

fn drop_chain(mut n: *mut Node) {
    while !n.is_null() {
        // SAFETY: nodes come from Entry::new and are owned by whoever took the chain.
        let node = unsafe { Box::from_raw(n) };
        n = node.next;
        drop(node); // the socket's drop withdraws its filters
    }
}

/// Moves what can be collected to READY (waiting up to [`WAIT`] for sections in progress when
/// `wait`), then drops READY if `may_drop`. Takes the collector's role if it is free; if not,
/// its holder is asked to go round once more.
fn service(wait: bool, may_drop: bool) {
    keep_errno(|| loop {
        if COLLECTOR.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            AGAIN.store(true, Ordering::SeqCst);
            if COLLECTOR.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
                break; // the holder sees AGAIN after it lets go
            }
        }
        AGAIN.store(false, Ordering::Relaxed);
        collect(wait);
        let ready = if may_drop { READY.swap(null_mut(), Ordering::Acquire) } else { null_mut() };
        let empty = INTAKE.load(Ordering::Relaxed).is_null() && WAITING.load(Ordering::Relaxed).is_null();
        if empty && READY.load(Ordering::Relaxed).is_null() {
            PENDING.store(false, Ordering::Relaxed);
            // Anything retired after our look sets PENDING again itself (retire stores it).
            if !INTAKE.load(Ordering::SeqCst).is_null() {
                PENDING.store(true, Ordering::Relaxed);
            }
        }
        COLLECTOR.store(false, Ordering::Release);
        drop_chain(ready);
        if !AGAIN.swap(false, Ordering::SeqCst) {
            break;
        }
    })
}

/// With the collector's role held: INTAKE joins WAITING, and WAITING moves to READY once every
/// section open now has ended; else the open ones are marked as blockers.
fn collect(wait: bool) {
    let fresh = INTAKE.swap(null_mut(), Ordering::Acquire);
    if !fresh.is_null() {
        // SAFETY: we own the chain taken from INTAKE; WAITING is the collector's.
        unsafe { (*last_of(fresh)).next = WAITING.load(Ordering::Relaxed) };
        WAITING.store(fresh, Ordering::Relaxed);
    }
    let waiting = WAITING.load(Ordering::Relaxed);
    if waiting.is_null() {
        clear_blockers();
        return;
    }
    // Every reader that could still hold a retired pointer has published its depth by now.
    barrier();
    let mine = my_index().unwrap_or(usize::MAX);
    let high = HIGH.load(Ordering::Acquire);
    let mut open = [0u64; WORDS];
    let mut seen = [0u64; RECORDS];
    for (i, r) in POOL[..high].iter().enumerate() {
        if r.depth.load(Ordering::Acquire) != 0 {
            open[i / 64] |= 1 << (i % 64);
            seen[i] = r.exits.load(Ordering::Acquire);
        }
    }
    let still_open = |open: &mut [u64; WORDS]| {
        for (i, r) in POOL[..high].iter().enumerate() {
            if open[i / 64] & (1 << (i % 64)) != 0
                && (r.depth.load(Ordering::Acquire) == 0 || r.exits.load(Ordering::Acquire) != seen[i])
            {
                open[i / 64] &= !(1 << (i % 64));
            }
        }
        open.iter().any(|&w| w != 0)
    };
    let mut any = still_open(&mut open);
    // Our own open section (a signal handler that closes what its interrupted code reads) ends
    // only after we return: no use waiting for it.
    let mine_open = mine < RECORDS && open[mine / 64] & (1 << (mine % 64)) != 0;
    if any && wait && !mine_open {
        let start = Instant::now();
        while any && start.elapsed() < WAIT {
            core::hint::spin_loop();
            any = still_open(&mut open);
        }
    }
    if any {
        // A thread that died inside a section (pthread_exit from a signal handler) never ends
        // it; its record stays as it is until a new thread takes it over.
        for (i, r) in POOL[..high].iter().enumerate() {
            if open[i / 64] & (1 << (i % 64)) != 0 && i != mine {
                let o = r.owner.load(Ordering::Acquire);
                if o == 0 || !thread_alive(o) {
                    open[i / 64] &= !(1 << (i % 64));
                }
            }
        }
        any = open.iter().any(|&w| w != 0);
    }
    if any {
        for (b, &w) in BLOCKERS.iter().zip(&open) {
            b.store(w, Ordering::Relaxed);
        }
        PENDING.store(true, Ordering::SeqCst);
        // A blocker that left its section before seeing its bit: after another barrier, either
        // its end sees PENDING and its bit, or we see its end.
        barrier();
        any = still_open(&mut open);
        for (b, &w) in BLOCKERS.iter().zip(&open) {
            b.store(w, Ordering::Relaxed);
        }
    }
    if any {
        if wait {
            DEFERRED.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    clear_blockers();
    WAITING.store(null_mut(), Ordering::Relaxed);
    // SAFETY: we own the chain taken from WAITING.
    push_chain(&READY, waiting, unsafe { last_of(waiting) });
}

fn clear_blockers() {
    for b in &BLOCKERS {
        b.store(0, Ordering::Relaxed);
    }
}

/// A full barrier on every thread of the process (see the module doc).
fn barrier() {
    if HIGH.load(Ordering::Acquire) == 0 {
        return; // no thread has ever opened a section
    }
    if ASYMMETRIC.load(Ordering::Relaxed) {
        if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 {
            return;
        }
        // Registered but refused (should not happen): readers skipped their fences, so give
        // their store buffers time to drain, which takes far less than this.
        std::thread::sleep(Duration::from_micros(200));
    }
    fence(Ordering::SeqCst);
}

/// Tries to free what is pending now, waiting briefly for sections in progress (tests).
#[cfg(test)]
pub fn reclaim_now() {
    service(true, true);
}

/// Retirements that had to wait for a section to end.
pub fn deferred() -> u64 {
    DEFERRED.load(Ordering::Relaxed)
}

/// Whether the prepare handler took the collector's role (released again after fork).
static FORK_HELD: AtomicBool = AtomicBool::new(false);

/// Before fork: no collection half-done in the child. Waits (bounded) for a collector on
/// another thread; one on this thread (a fork from a handler that interrupted it) is left be.
pub fn lock_for_fork() {
    let start = Instant::now();
    while COLLECTOR.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        if start.elapsed() > Duration::from_millis(100) {
            FORK_HELD.store(false, Ordering::Relaxed);
            return;
        }
        std::thread::yield_now();
    }
    FORK_HELD.store(true, Ordering::Relaxed);
}

/// After fork, in the parent.
pub fn unlock_after_fork() {
    if FORK_HELD.swap(false, Ordering::Relaxed) {
        COLLECTOR.store(false, Ordering::Release);
        if AGAIN.swap(false, Ordering::SeqCst) {
            // A section's end found the role taken while we forked.
            service(false, IN_HANDLER.with(Cell::get) == 0);
        }
    }
}

/// In the child after fork: only the forking thread exists. The others' records are free (no
/// section of theirs is open here), ours gets our new thread id, nobody is a blocker, the
/// collector's role is free, and the child registers for membarrier itself.
pub fn after_fork_child() {
    let mine = my_index().unwrap_or(usize::MAX);
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let high = HIGH.load(Ordering::Acquire);
    for (i, r) in POOL[..high].iter().enumerate() {
        if i == mine {
            r.owner.store(tid, Ordering::Release);
        } else {
            r.depth.store(0, Ordering::Relaxed);
            r.owner.store(0, Ordering::Release);
        }
    }
    clear_blockers();
    FORK_HELD.store(false, Ordering::Relaxed);
    COLLECTOR.store(false, Ordering::Release);
    if ASYMMETRIC.load(Ordering::Relaxed) && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0 {
        ASYMMETRIC.store(false, Ordering::SeqCst); // one thread: no reader to disagree with
    }
}
