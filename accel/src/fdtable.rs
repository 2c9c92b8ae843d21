//! fd → the socket we track for it.
//!
//! Every hook asks [`is_ours`] first, on every call, for every program, so that question is a
//! bounds check and one load from a flat array for fds below [`FAST_LEN`]. Higher fds (programs
//! that raise RLIMIT_NOFILE) live in chunks allocated on first use and never freed, looked up only
//! once some such fd is registered.
//!
//! Entries are `Arc<Socket>`: `dup` makes two fds share one socket, and the socket goes away with
//! its last fd. Readers take no lock: they read inside a [`grace`] section, and a writer that
//! takes a socket out retires the table's reference instead of dropping it, so a socket is never
//! freed under a reader. [`with`] lends the socket for a call that does not block (the fast
//! paths: no atomic read-modify-write at all); [`get`] hands out a reference for anything that
//! may sleep. Writers still serialise on a lock, which also covers readers that found no
//! [`grace`] record (they fall back to a shared lock). The lock is held across `fork()` (see
//! [`lock_for_fork`]) so the child never inherits it half-taken.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::lock_api::RawRwLock as _;
use parking_lot::RawRwLock;

use crate::grace::{self, Entry};
use crate::socket::Socket;

/// fds below this are looked up with one load.
pub const FAST_LEN: usize = 1 << 16;
const CHUNK_LEN: usize = 1 << 16;
const CHUNKS: usize = 16;
/// The largest fd that can be tracked, plus one (Linux's default `nr_open` is 1 << 20).
pub const MAX_FDS: usize = FAST_LEN + CHUNK_LEN * CHUNKS;

/// A registered fd's [`grace::Entry`] (the table's reference to its socket), or null.
type Slot = AtomicPtr<Entry>;

static FAST: [Slot; FAST_LEN] = [const { AtomicPtr::new(null_mut()) }; FAST_LEN];
static SLOW: [AtomicPtr<Slot>; CHUNKS] = [const { AtomicPtr::new(null_mut()) }; CHUNKS];
/// Set once any fd ≥ FAST_LEN has been registered.
static HAS_SLOW: AtomicBool = AtomicBool::new(false);
/// Number of occupied slots: lets close_range and multiplexing skip work when it is zero.
static COUNT: AtomicUsize = AtomicUsize::new(0);
static LOCK: RawRwLock = RawRwLock::INIT;

/// Is `fd` one of ours? The pass-through test on every hook.
#[inline(always)]
pub fn is_ours(fd: i32) -> bool {
    let i = fd as u32 as usize;
    if i < FAST_LEN {
        // SAFETY-free: index checked above; the pointer is only compared, never dereferenced.
        !FAST[i].load(Ordering::Relaxed).is_null()
    } else {
        is_ours_slow(i)
    }
}

#[cold]
fn is_ours_slow(i: usize) -> bool {
    HAS_SLOW.load(Ordering::Relaxed) && slow_slot(i, false).is_some_and(|s| !s.load(Ordering::Relaxed).is_null())
}

/// Are any fds registered at all?
#[inline(always)]
pub fn any() -> bool {
    COUNT.load(Ordering::Relaxed) != 0
}

pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

fn slow_slot(i: usize, create: bool) -> Option<&'static Slot> {
    let rel = i.checked_sub(FAST_LEN)?;
    let (c, k) = (rel / CHUNK_LEN, rel % CHUNK_LEN);
    let chunk = SLOW.get(c)?;
    let mut p = chunk.load(Ordering::Acquire);
    if p.is_null() {
        if !create {
            return None;
        }
        let fresh: Box<[Slot]> = (0..CHUNK_LEN).map(|_| AtomicPtr::new(null_mut())).collect();
        let fresh = Box::into_raw(fresh) as *mut Slot;
        // Creation happens under the write lock, so no other creator races this store.
        chunk.store(fresh, Ordering::Release);
        p = fresh;
    }
    // SAFETY: chunks are CHUNK_LEN slots, allocated once and never freed; k < CHUNK_LEN.
    Some(unsafe { &*p.add(k) })
}

fn slot(fd: i32, create: bool) -> Option<&'static Slot> {
    let i = usize::try_from(fd).ok()?;
    if i < FAST_LEN {
        Some(&FAST[i])
    } else {
        slow_slot(i, create)
    }
}

/// Blocks every signal of the calling thread until dropped: a thread holding the table lock
/// must not run a signal handler that closes a socket (its `close` would wait for the lock its
/// own thread holds). Two system calls, on the rare paths only (writers, and readers without a
/// grace record).
pub(crate) struct SignalsBlocked(libc::sigset_t);
impl SignalsBlocked {
    pub(crate) fn new() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask write the sets we pass.
        unsafe {
            let mut all: libc::sigset_t = core::mem::zeroed();
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}
impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, core::ptr::null_mut()) };
    }
}

struct Shared(#[allow(dead_code)] SignalsBlocked);
impl Shared {
    fn lock() -> Shared {
        let blocked = SignalsBlocked::new();
        LOCK.lock_shared();
        Shared(blocked)
    }
}
impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: paired with lock_shared in Shared::lock (the signal mask is restored after).
        unsafe { LOCK.unlock_shared() }
    }
}

struct Exclusive(#[allow(dead_code)] SignalsBlocked);
impl Exclusive {
    fn lock() -> Exclusive {
        let blocked = SignalsBlocked::new();
        LOCK.lock_exclusive();
        Exclusive(blocked)
    }
}
impl Drop for Exclusive {
    fn drop(&mut self) {
        // SAFETY: paired with lock_exclusive in Exclusive::lock (the signal mask is restored after).
        unsafe { LOCK.unlock_exclusive() }
    }
}

/// Runs `f` on the socket registered for `fd`, if any, without taking a reference: the fast
/// paths. `f` must not block (it holds back the freeing of every closed socket while it runs).
#[inline]
pub fn with<R>(fd: i32, f: impl FnOnce(&Socket) -> R) -> Option<R> {
    let slot = slot(fd, false)?;
    // Called from the hooks' fast paths, which hold no lock: retired sockets may be dropped here.
    let Some(_section) = grace::enter(true) else {
        return get_locked(slot).map(|s| f(&s));
    };
    let e = slot.load(Ordering::Acquire);
    if e.is_null() {
        return None;
    }
    // SAFETY: e came from Entry::new and was in the table inside our section: a writer that
    // took it out since retired it, and it is dropped only after the section.
    Some(f(unsafe { &(*e).sock }))
}

/// The socket registered for `fd`, if any, as a reference of its own (for calls that may block).
pub fn get(fd: i32) -> Option<Arc<Socket>> {
    let slot = slot(fd, false)?;
    // Callers may hold locks of ours: retired sockets are only collected here, not dropped.
    let Some(_section) = grace::enter(false) else { return get_locked(slot) };
    let e = slot.load(Ordering::Acquire);
    if e.is_null() {
        return None;
    }
    // SAFETY: as in `with`: the entry (the table's reference) lives until our section ends.
    Some(Arc::clone(unsafe { &(*e).sock }))
}

/// [`get`] for a thread without a [`grace`] record: under the shared lock, which a writer needs
/// exclusively to take the table's reference out.
#[cold]
fn get_locked(slot: &Slot) -> Option<Arc<Socket>> {
    let _g = Shared::lock();
    let e = slot.load(Ordering::Acquire);
    if e.is_null() {
        return None;
    }
    // SAFETY: e came from Entry::new and is still in the slot; taking it out needs the
    // exclusive lock, so it cannot be retired (let alone dropped) while we clone.
    Some(Arc::clone(unsafe { &(*e).sock }))
}

/// Registers `sock` for `fd`, returning what was there (a reference of the caller's own; the
/// table's is retired). Fails (returns `Err(sock)`) for an fd beyond [`MAX_FDS`].
pub fn insert(fd: i32, sock: Arc<Socket>) -> Result<Option<Arc<Socket>>, Arc<Socket>> {
    if usize::try_from(fd).map_or(true, |i| i >= MAX_FDS) {
        return Err(sock);
    }
    let entry = Entry::new(sock);
    let old = {
        let _g = Exclusive::lock();
        let Some(slot) = slot(fd, true) else {
            // SAFETY: `entry` is ours, never published.
            return Err(unsafe { Box::from_raw(entry) }.sock.clone());
        };
        if fd as usize >= FAST_LEN {
            HAS_SLOW.store(true, Ordering::Relaxed);
        }
        let old = slot.swap(entry, Ordering::AcqRel);
        if old.is_null() {
            COUNT.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        old
    };
    // SAFETY: `old` came out of the slot: ours to read and retire.
    let yours = Arc::clone(unsafe { &(*old).sock });
    // SAFETY: as above; a chain of one.
    unsafe { grace::retire(old, old) };
    Ok(Some(yours))
}

/// Unregisters `fd`, returning its socket (a reference of the caller's own; the table's is
/// retired).
pub fn remove(fd: i32) -> Option<Arc<Socket>> {
    let slot = slot(fd, false)?;
    let old = {
        let _g = Exclusive::lock();
        take(slot)?
    };
    // SAFETY: `old` came out of the slot: ours to read and retire.
    let yours = Arc::clone(unsafe { &(*old).sock });
    // SAFETY: as above; a chain of one.
    unsafe { grace::retire(old, old) };
    Some(yours)
}

/// Empties `slot`, returning its entry (to be retired, not dropped).
fn take(slot: &Slot) -> Option<*mut Entry> {
    let old = slot.swap(null_mut(), Ordering::AcqRel);
    if old.is_null() {
        return None;
    }
    COUNT.fetch_sub(1, Ordering::Relaxed);
    Some(old)
}

/// Unregisters every fd in `first..=last`, returning the sockets (dropped by the caller, outside
/// the lock; the table's references are retired).
pub fn remove_range(first: u32, last: u32) -> Vec<(i32, Arc<Socket>)> {
    let mut out = Vec::new();
    if !any() {
        return out;
    }
    let last = (last as usize).min(MAX_FDS - 1);
    let first = first as usize;
    let (mut head, mut tail): (*mut Entry, *mut Entry) = (null_mut(), null_mut());
    let g = Exclusive::lock();
    let mut i = first;
    while i <= last && COUNT.load(Ordering::Relaxed) != 0 {
        if let Some(slot) = slot(i as i32, false) {
            if let Some(e) = take(slot) {
                // SAFETY: `e` came out of the slot: ours; chained for one retirement.
                unsafe {
                    out.push((i as i32, Arc::clone(&(*e).sock)));
                    grace::link(e, head);
                }
                if tail.is_null() {
                    tail = e;
                }
                head = e;
            }
        } else if i >= FAST_LEN {
            // A chunk that was never created: skip it whole.
            i = FAST_LEN + ((i - FAST_LEN) / CHUNK_LEN + 1) * CHUNK_LEN;
            continue;
        }
        i += 1;
    }
    drop(g);
    // SAFETY: the chain holds the entries taken out above, ours alone.
    unsafe { grace::retire(head, tail) };
    out
}

/// Every registered fd with its socket (for diagnostics and statistics).
pub fn snapshot() -> Vec<(i32, Arc<Socket>)> {
    let mut out = Vec::new();
    if !any() {
        return out;
    }
    let _g = Shared::lock();
    let mut seen = 0;
    let total = COUNT.load(Ordering::Relaxed);
    for i in 0..MAX_FDS {
        if seen == total {
            break;
        }
        let Some(slot) = slot(i as i32, false) else {
            continue;
        };
        let e = slot.load(Ordering::Acquire);
        if !e.is_null() {
            seen += 1;
            // SAFETY: as in `get_locked`, under the shared lock.
            out.push((i as i32, Arc::clone(unsafe { &(*e).sock })));
        }
    }
    out
}

/// Takes the table lock before `fork()` so the child does not inherit it held by a thread that
/// no longer exists there. Paired with [`unlock_after_fork`] in both parent and child.
pub fn lock_for_fork() {
    LOCK.lock_exclusive();
    grace::lock_for_fork();
}

pub fn unlock_after_fork() {
    grace::unlock_after_fork();
    // SAFETY: paired with lock_for_fork in the pthread_atfork prepare handler.
    unsafe { LOCK.unlock_exclusive() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::{Proto, Socket};

    // Tests share the global table; each uses its own fd range.
    fn sock() -> Arc<Socket> {
        Arc::new(Socket::new(libc::AF_INET, Proto::Udp))
    }

    /// Whether `w`'s socket is freed within 2 s. Other tests' threads may hold a read section
    /// (a preempted reader) when a test retires, which defers the drop to their section's end.
    fn freed(w: &std::sync::Weak<Socket>) -> bool {
        let start = std::time::Instant::now();
        while w.strong_count() != 0 && start.elapsed() < std::time::Duration::from_secs(2) {
            grace::reclaim_now();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        w.strong_count() == 0
    }

    /// The strong count of `s`, given up to 2 s to come down to `want` (retirements of other
    /// tests' making may hold the collection back for a moment).
    fn count_settling_at(s: &Arc<Socket>, want: usize) -> usize {
        let start = std::time::Instant::now();
        while Arc::strong_count(s) != want && start.elapsed() < std::time::Duration::from_secs(2) {
            grace::reclaim_now();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Arc::strong_count(s)
    }

    #[test]
    fn insert_get_remove() {
        let fd = 1000;
        assert!(!is_ours(fd));
        let s = sock();
        assert!(insert(fd, s.clone()).unwrap().is_none());
        assert!(is_ours(fd));
        assert!(Arc::ptr_eq(&get(fd).unwrap(), &s));
        assert!(Arc::ptr_eq(&remove(fd).unwrap(), &s));
        assert!(!is_ours(fd));
        assert!(remove(fd).is_none());
        assert_eq!(count_settling_at(&s, 1), 1, "table released its reference");
    }

    #[test]
    fn negative_and_huge_fds() {
        assert!(!is_ours(-1));
        assert!(!is_ours(i32::MAX));
        assert!(get(-5).is_none());
        assert!(insert(-1, sock()).is_err());
        assert!(insert(MAX_FDS as i32, sock()).is_err());
    }

    #[test]
    fn large_fds_use_chunks() {
        let fd = (FAST_LEN + 3 * CHUNK_LEN + 17) as i32;
        assert!(!is_ours(fd));
        insert(fd, sock()).unwrap();
        assert!(is_ours(fd));
        assert!(!is_ours(fd + 1));
        let got = remove_range(fd as u32 - 5, u32::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, fd);
        assert!(!is_ours(fd));
    }

    #[test]
    fn shared_entries_count_references() {
        let s = sock();
        insert(2000, s.clone()).unwrap();
        insert(2001, s.clone()).unwrap();
        assert_eq!(Arc::strong_count(&s), 3);
        // Replacing an entry hands back the old one.
        let old = insert(2001, sock()).unwrap().unwrap();
        assert!(Arc::ptr_eq(&old, &s));
        drop(old);
        let removed = remove_range(2000, 2001);
        assert_eq!(removed.len(), 2);
        drop(removed);
        assert_eq!(count_settling_at(&s, 1), 1);
    }

    #[test]
    fn with_lends_without_a_reference() {
        let fd = 4000;
        let s = sock();
        insert(fd, s.clone()).unwrap();
        let counted = with(fd, |lent| {
            assert!(core::ptr::eq(lent, &*s));
            Arc::strong_count(&s)
        });
        assert_eq!(counted, Some(2), "the table's and ours, none for the loan");
        assert!(with(fd + 1, |_| ()).is_none());
        drop(remove(fd));
    }

    #[test]
    fn removal_inside_a_section_waits_for_its_end() {
        // A signal handler that closes the socket its interrupted code is reading: the socket
        // must outlive the outer section, and go with it.
        let fd = 4100;
        let s = sock();
        let w = Arc::downgrade(&s);
        insert(fd, s).unwrap();
        with(fd, |outer| {
            drop(remove(fd));
            assert!(!is_ours(fd));
            assert!(w.strong_count() > 0, "retired, not freed, while the section is open");
            assert_eq!(outer.proto, Proto::Udp);
        });
        assert!(freed(&w), "freed once the section ended");
    }

    /// A thread that reads `fd`'s socket inside a section until `leave` is sent; returns the
    /// socket's protocol, read at the end of the section. Returns once the section is open.
    fn reader_in_section(fd: i32) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<Option<Proto>>) {
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            with(fd, |lent| {
                inside_tx.send(()).unwrap();
                leave_rx.recv_timeout(std::time::Duration::from_secs(5)).ok();
                lent.proto // still readable: nobody freed it
            })
        });
        inside_rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        (leave_tx, reader)
    }

    #[test]
    fn removal_waits_for_another_threads_section() {
        let fd = 4200;
        let s = sock();
        let w = Arc::downgrade(&s);
        insert(fd, s).unwrap();
        let (leave_tx, reader) = reader_in_section(fd);
        drop(remove(fd)); // waits briefly, then leaves it pending
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(w.strong_count() > 0, "not freed under the reader");
        leave_tx.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), Some(Proto::Udp));
        assert!(freed(&w), "the reader's exit freed it");
        assert!(grace::deferred() > 0);
    }

    #[test]
    fn a_section_that_ends_while_the_collector_is_busy_is_not_forgotten() {
        // The reader leaves its section while fork's prepare handler holds the collector's
        // role: its end asks the holder to go round again, which frees the socket without
        // anyone else closing anything.
        let fd = 4300;
        let s = sock();
        let w = Arc::downgrade(&s);
        insert(fd, s).unwrap();
        let (leave_tx, reader) = reader_in_section(fd);
        drop(remove(fd)); // left waiting for the reader
        lock_for_fork();
        leave_tx.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), Some(Proto::Udp));
        unlock_after_fork();
        let start = std::time::Instant::now();
        while w.strong_count() != 0 && start.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(w.strong_count(), 0, "freed by the collector's second round");
    }

    #[test]
    fn concurrent_lookups_and_removals() {
        let fd = 3000;
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut hits = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(s) = get(fd) {
                            assert_eq!(s.proto, Proto::Udp);
                            hits += 1;
                        }
                    }
                    hits
                })
            })
            .collect();
        let lenders: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut hits = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        hits += with(fd, |s| (s.proto == Proto::Udp) as u64).unwrap_or(0);
                    }
                    hits
                })
            })
            .collect();
        let mut all = Vec::new();
        for _ in 0..20_000 {
            let s = sock();
            all.push(Arc::downgrade(&s));
            insert(fd, s).unwrap();
            remove(fd);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers.into_iter().chain(lenders) {
            r.join().unwrap();
        }
        assert!(!is_ours(fd));
        assert!(all.iter().all(freed), "every socket freed once the readers are gone");
    }
}
