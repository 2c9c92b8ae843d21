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
//! themselves (one `mfence`, still cheaper than the lock).
//!
//! Sections must not block: a thread asleep in one holds back every retirement. The fd table
//! hands out references ([`crate::fdtable::get`]) for anything that may sleep, and sections
//! ([`crate::fdtable::with`]) only for the non-blocking fast paths. A writer waits briefly for
//! sections in progress (a preempted reader resumes within a time slice); if one is still open —
//! a signal handler that closes the socket its interrupted code is reading, a reader descheduled
//! for long — the retired sockets stay pending and the last such section to end frees them.
//!
//! Records are a fixed pool claimed once per thread (no allocation, so a first lookup inside a
//! signal handler is safe), identified by kernel thread id; a dead thread's record is reclaimed
//! when the pool runs out. A thread that finds none falls back to the locked lookup.

use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::size_of;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::socket::Socket;

/// Threads that can hold a record at once; more fall back to the locked lookup.
const RECORDS: usize = 256;
/// How long a writer waits for sections in progress before leaving its retirements pending.
const WAIT: Duration = Duration::from_micros(50);

/// One thread's announcement. Written by its owner only (and reset by reclaimers of dead
/// threads' records and by the fork child); a line of its own so readers never share one.
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
/// Retired sockets wait in [`RETIRED`] for the sections marked in [`BLOCKERS`] to end.
static PENDING: AtomicBool = AtomicBool::new(false);
/// One bit per record: its section holds back the pending retirements, so its end collects them
/// (only those readers try, not every reader of the process).
static BLOCKERS: [AtomicU64; RECORDS / 64] = [const { AtomicU64::new(0) }; RECORDS / 64];
static RETIRED: Mutex<Vec<Arc<Socket>>> = Mutex::new(Vec::new());
/// Retirements and sockets freed only after waiting (statistics, tests).
static DEFERRED: AtomicU64 = AtomicU64::new(0);

/// [`MINE`] before the thread's first section.
const UNCLAIMED: usize = 0;
/// [`MINE`] of a thread that found no free record.
const NO_RECORD: usize = 1;

thread_local! {
    /// This thread's record (its address), or UNCLAIMED / NO_RECORD.
    static MINE: Cell<usize> = const { Cell::new(UNCLAIMED) };
}

/// The calling thread's record index, if it has one.
fn my_index() -> Option<usize> {
    match MINE.with(Cell::get) {
        UNCLAIMED | NO_RECORD => None,
        p => Some((p - POOL.as_ptr() as usize) / size_of::<Record>()),
    }
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

/// Whether readers run without a fence of their own (for diagnostics).
pub fn asymmetric() -> bool {
    ASYMMETRIC.load(Ordering::Relaxed)
}

/// A read section of the calling thread: pointers read from the fd table inside it stay valid
/// until it is dropped. Not `Send`: it belongs to the thread's record.
pub struct Section {
    rec: &'static Record,
    outermost: bool,
    _thread_bound: PhantomData<*const ()>,
}

/// Opens a read section; None when this thread has no record (the pool is exhausted): the
/// caller uses the locked lookup.
#[inline]
pub fn enter() -> Option<Section> {
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
    Some(Section { rec, outermost: depth == 0, _thread_bound: PhantomData })
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
            reclaim_if_blocker(self.rec);
        }
    }
}

/// At the end of an outermost section while retirements are pending: collect them if this
/// record is one of those they wait for.
#[cold]
fn reclaim_if_blocker(rec: &'static Record) {
    let i = (rec as *const Record as usize - POOL.as_ptr() as usize) / size_of::<Record>();
    if BLOCKERS[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0 {
        reclaim_pending();
    }
}

#[cold]
fn claim() -> Option<usize> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let taken = POOL.iter().position(|r| r.owner.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed).is_ok());
    let taken = taken.or_else(|| {
        // None free: take over the record of a thread that has exited (it is in no section).
        let high = HIGH.load(Ordering::Acquire);
        POOL[..high].iter().position(|r| {
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
    // SAFETY: signal 0 only checks that the thread exists; no signal is sent.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
    // SAFETY: errno is thread-local.
    r == 0 || unsafe { *libc::__errno_location() } != libc::ESRCH
}

/// Takes the table's reference to a socket that is no longer reachable through the table; it
/// is dropped once no section that might have read it is still open (usually at once).
pub fn retire(sockets: Vec<Arc<Socket>>) {
    if sockets.is_empty() {
        return;
    }
    let freed = {
        let mut list = RETIRED.lock();
        list.extend(sockets);
        collect(&mut list, true)
    };
    drop(freed); // outside the lock: a socket's drop withdraws its filters
}

#[cold]
fn reclaim_pending() {
    let freed = match RETIRED.try_lock() {
        Some(mut list) => collect(&mut list, false),
        None => return, // its holder collects
    };
    drop(freed);
}

/// What of `list` can be freed now: everything, once every section open at the call has ended
/// (waiting up to [`WAIT`] for them when `wait`), else nothing (and PENDING says so).
fn collect(list: &mut Vec<Arc<Socket>>, wait: bool) -> Vec<Arc<Socket>> {
    if list.is_empty() {
        PENDING.store(false, Ordering::Relaxed);
        return Vec::new();
    }
    // Every reader that could still read a retired pointer has published its depth by now.
    barrier();
    let mine = my_index().unwrap_or(usize::MAX);
    let high = HIGH.load(Ordering::Acquire);
    let mut open: Vec<(usize, u64)> = Vec::new();
    for (i, r) in POOL[..high].iter().enumerate() {
        if r.depth.load(Ordering::Acquire) != 0 {
            open.push((i, r.exits.load(Ordering::Acquire)));
        }
    }
    let ended = |&(i, exits): &(usize, u64)| {
        let r = &POOL[i];
        r.depth.load(Ordering::Acquire) == 0 || r.exits.load(Ordering::Acquire) != exits
    };
    open.retain(|s| !ended(s));
    // Our own open section (a signal handler that closes what its interrupted code reads) ends
    // only after we return: no use waiting for it.
    if wait && !open.iter().any(|&(i, _)| i == mine) {
        let start = Instant::now();
        while !open.is_empty() && start.elapsed() < WAIT {
            core::hint::spin_loop();
            open.retain(|s| !ended(s));
        }
    }
    // A thread that died inside a section (pthread_exit from a signal handler) never ends it;
    // its record is left as it is (a thread that claims it resets it).
    open.retain(|&(i, _)| {
        let o = POOL[i].owner.load(Ordering::Acquire);
        i == mine || (o != 0 && thread_alive(o))
    });
    for b in &BLOCKERS {
        b.store(0, Ordering::Relaxed);
    }
    if !open.is_empty() {
        for &(i, _) in &open {
            BLOCKERS[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
        PENDING.store(true, Ordering::Release);
        // A blocker that left its section before seeing its bit would leave this pending: after
        // another barrier, either its exit sees PENDING or we see its exit.
        barrier();
        open.retain(|s| !ended(s));
        if open.is_empty() {
            return finish(list);
        }
        if wait {
            DEFERRED.fetch_add(1, Ordering::Relaxed);
        }
        return Vec::new();
    }
    finish(list)
}

fn finish(list: &mut Vec<Arc<Socket>>) -> Vec<Arc<Socket>> {
    for b in &BLOCKERS {
        b.store(0, Ordering::Relaxed);
    }
    PENDING.store(false, Ordering::Relaxed);
    core::mem::take(list)
}

/// A full barrier on every thread of the process (see the module doc).
fn barrier() {
    if ASYMMETRIC.load(Ordering::Relaxed) {
        if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0 {
            return;
        }
        // Registered but refused (should not happen): readers skipped their fences, so give
        // their store buffers time to drain, which takes far less than this.
        std::thread::sleep(Duration::from_millis(1));
    }
    fence(Ordering::SeqCst);
}

/// Tries to free what is pending now, waiting briefly for sections in progress.
pub fn reclaim_now() {
    let freed = collect(&mut RETIRED.lock(), true);
    drop(freed);
}

/// Sockets retired and still waiting for a section to end.
pub fn pending() -> usize {
    RETIRED.lock().len()
}

/// Retirements that had to wait for a section to end.
pub fn deferred() -> u64 {
    DEFERRED.load(Ordering::Relaxed)
}

/// Before fork: no retirement half-done in the child.
pub fn lock_for_fork() {
    // SAFETY-free: the guard is forgotten and the lock released by `unlock_after_fork`.
    core::mem::forget(RETIRED.lock());
}

/// After fork, in parent and child.
pub fn unlock_after_fork() {
    // SAFETY: `lock_for_fork` took the lock in this thread and forgot its guard.
    unsafe { RETIRED.force_unlock() }
}

/// In the child after fork: only the forking thread exists. The others' records are free (no
/// section of theirs is open here), ours gets our new thread id, and the child registers for
/// membarrier itself.
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
    if ASYMMETRIC.load(Ordering::Relaxed) && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0 {
        ASYMMETRIC.store(false, Ordering::SeqCst); // one thread: no reader to disagree with
    }
}
