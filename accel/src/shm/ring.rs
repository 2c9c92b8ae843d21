//! A shared-memory datagram ring: the receive queue of the same-host ("shm") datapath.
//!
//! When both ends of a UDP flow are on this host and both run with accel, the sender does not
//! need the kernel at all: it copies the datagram into a ring that lives in a file under
//! `/dev/shm`, mapped by every process involved, and the receiver copies it out. One ring is the
//! RX queue of one receiving process; any number of senders (threads, processes) write into it,
//! and any number of consumers (the receiver and, after `fork`, its children that share the
//! socket) read from it. Several sockets may share one ring: each datagram carries a *cookie*
//! naming the socket it is for.
//!
//! The fast path makes no system call on either side: a push is one CAS to take the producer
//! lock, two copies (header and payload), the slot's `seq` store and one `tail` store; a pop is
//! two loads (`head`, the slot's `seq`), one copy and one CAS. The kernel is only involved when a consumer wants to sleep (see *Wakeups*).
//!
//! # Layout
//!
//! Everything is native-endian (the ring never leaves the host) and `repr(C)`. Offsets are in
//! bytes from the start of the file. Fields are grouped by who writes them and who reads them,
//! and each group has a 128-byte block of its own (a cache line plus the one the adjacent-line
//! prefetcher pairs with it), rte_ring style: `head` and `tail` never share a line, and the lock
//! is not on `tail`'s line either — consumers poll `tail`, so a lock beside it would cost the
//! producer a cache miss on every push (measured: +70 ns one way).
//!
//! ```text
//!    0 ┌ geometry: written once by `create`, validated once by `open` ───────────────────┐
//!      │   0 magic u64 = "ACCELRNG"   8 version u32 = 3   12 slot_size u32 (bytes/slot)  │
//!      │  16 slots u32 (power of 2)   20 creator_pid u32  24 header_size u32 (= 4096)    │
//!  128 ├ producers only ─────────────────────────────────────────────────────────────────┤
//!      │ 128 lock u32 (0 = free, else the holder's pid)   136 head_cache u64             │
//!      │ 144 drops_full u64   152 drops_too_big u64   160 lock_steals u64                │
//!      │ 168 tail_repairs u64                                                            │
//!  256 ├ written by producers, polled by consumers ──────────────────────────────────────┤
//!      │ 256 tail u64 (count of published slots)                                         │
//!  384 ├ consumers ──────────────────────────────────────────────────────────────────────┤
//!      │ 384 head u64 (count of consumed slots)   392 max_fill u64   400 corrupt u64     │
//!      │ 408 skipped u64   416 resyncs u64                                               │
//!  512 ├ wakeups ────────────────────────────────────────────────────────────────────────┤
//!      │ 512 waiters u32 (1 = a consumer is (about to be) asleep)  520 doorbells u64     │
//!  640 ├ unused (zero) ──────────────────────────────────────────────────────────────────┤
//! 4096 ├ slot 0 ─────────────────────────────────────────────────────────────────────────┤
//!      │  +0 seq u64 (1 + the position written there)   +8 len u32 (payload bytes)    │
//!      │ +12 src_ip u32 (network order)  +16 src_port u16 (host order) +18 flags u16 = 0 │
//!      │ +20 (pad)   +24 cookie u64   +32 payload, at most slot_size - 32 bytes          │
//!      ├ slot 1 at 4096 + slot_size ─────────────────────────────────────────────────────┤
//!      ┆ ... slots × slot_size bytes in all                                              ┆
//!      └─────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! `head` and `tail` are free-running 64-bit counts (they never wrap in practice); position `p`
//! lives in slot `p & (slots - 1)`. The ring holds `tail - head` datagrams, never more than
//! `slots`. Counters that can be derived are not stored: *published* is `tail`, *consumed* is
//! `head - skipped`. `max_fill` is kept by consumers: the fill a pop observes, sampled every
//! 16th position on the fast path (which does not read `tail`) and on every slow-path look. The
//! fill only shrinks by pops, one at a time, so a sampled peak is at most 15 below the true one;
//! a snapshot also folds in the current fill, for rings nobody pops.
//!
//! # Producers: a robust lock, not a lock-free claim
//!
//! A lock-free multi-producer ring (claim a range with a CAS on a *producer head*, fill it,
//! then wait for earlier claimers to publish) is unsafe across processes: a producer killed
//! between claim and publish leaves a claimed-but-never-published range, every later producer
//! waits for it forever, and the consumer is wedged behind it. Datagram producers here are other
//! programs, which may be killed at any instant.
//!
//! So producers serialise on `lock`, a word holding the holder's pid (CAS `0 → pid`, release by
//! storing 0). The critical section is tens of nanoseconds: check room, write the slot(s), one
//! `tail` store. A producer that finds the lock taken spins; every [`SPINS_PER_CHECK`] spins it
//! asks whether the holder is still alive (`pidfd_open` + `poll`, which also catches an
//! unreaped zombie; `kill(pid, 0)` on kernels without pidfds) and yields the CPU. If the holder
//! is dead it *steals* the lock with a CAS `dead pid → my pid`.
//!
//! Producers keep a copy of `head` on their own line (`head_cache`) and read the consumers'
//! line only when that copy says the ring is (nearly) full: head only grows, so the copy never
//! overstates the room, and the consumer's line stays in the consumer's cache.
//!
//! **Publishing a slot.** A producer writes the slot's other fields and payload, then stores its
//! `seq` (`1 +` the position, Release) — that store is what makes the slot readable — and, after
//! the last slot of a batch, `tail` (for room accounting, `len`, and the wakeup protocol). So a
//! consumer that polls an empty ring watches the `seq` word of the slot it will read, a line it
//! must fetch anyway, and not `tail`, which every push dirties: skipping that extra cache miss
//! took the ring's ping-pong half round trip from 0.38 to 0.12 µs.
//!
//! **Why stealing is safe.** A slot whose `seq` store was not made is invisible (its old `seq`
//! is a previous lap's, or 0 in a new ring); the thief overwrites it. A holder that died between
//! a slot's `seq` store and its `tail` store left complete datagrams that consumers may already
//! have taken: the thief first moves `tail` over every slot after it whose `seq` says it was
//! written for its position (`repair_tail`, counted in `tail_repairs`), so those are neither
//! overwritten under a reader nor delivered twice. A holder that died after its `tail` store had
//! finished its slots.
//!
//! The lock value is a process id, cached per process (reading it is a system call). The cache
//! lives in a page mapped with `MADV_WIPEONFORK`, so a child created by any kind of `fork` sees
//! it zeroed and fetches its own pid; [`after_fork_child`] resets it too, for kernels older than
//! 4.14 where that page cannot be had (call it from the `pthread_atfork` child handler).
//!
//! Limits, by design: a holder stopped by `SIGSTOP` or a debugger inside its critical section
//! holds up other producers until it continues; processes in different pid namespaces must not
//! share a ring; a reused pid looks alive; a thread killed mid-push by another thread's
//! `execve` leaves the lock to a pid that lives on (vanishingly rare: the window is the tens of
//! nanoseconds of one push). A signal handler must not push into a ring its own
//! thread is pushing into (the engine's in-engine guard sends such calls to the kernel).
//!
//! # Consumers: CAS on `head`
//!
//! A receiving socket can be shared by a parent and its forked children, each of which may call
//! `recv`, so consumers are multi-consumer safe without a lock (a consumer holds nothing, so one
//! that dies holds nobody up): [`Ring::peek`] reads `head` and the `seq` of the slot there and,
//! if it is published, validates the slot and lends its payload (else it reads `tail` to tell an
//! empty ring from a corrupt slot); [`Ring::consume`] then moves `head` with a CAS `pos → pos + 1`.
//! A consumer that loses that CAS was racing another consumer for the same datagram and must
//! treat what it read as not received: by then a producer may already be rewriting the slot, so
//! the bytes it saw may be torn. Hence the rule for callers: *copy* the lent payload, and look at
//! the copy only after `consume` succeeded (a test that asserted inside the closure caught
//! exactly such torn reads). With a single consumer, the only common case, the CAS never fails
//! and the slot cannot change while it is lent. [`Ring::pop_with`] wraps that loop.
//!
//! A producer writes position `p` only once `head > p - slots`, i.e. after the consumer of the
//! previous lap's datagram in that slot has finished with it (its reads come before its
//! `head` CAS, which is a release; producers read `head` with acquire).
//!
//! Consumers may run ahead of `tail` (by the slots published by `seq` whose `tail` store has not
//! landed yet): a `head` ahead of `tail` by at most `slots` is an empty ring, never a reason to
//! move `head` back (which would deliver those datagrams twice).
//!
//! # Hostile or corrupt contents
//!
//! Every process of the user can write anything into the file, so nothing in it is trusted
//! beyond what keeps the mapping in bounds: the geometry is validated once at [`Ring::open`]
//! against the real file size and cached in the [`Ring`], never re-read; a slot is delivered only
//! if its `seq` is the position being read and its `len` fits the slot (else it is skipped and
//! counted in `corrupt`, so a bad slot neither reaches the application nor wedges the ring); a
//! `head`/`tail` pair that breaks the invariant `tail - head <= slots` is resynchronised by the
//! next consumer (`head := tail`, counted in `resyncs`), except for a `head` a little ahead of
//! `tail` (see *Consumers*), which the next producer that reads `head` repairs (`tail := head`)
//! (an empty ring is recognised by the slot at `head` still holding the previous lap's `seq`,
//! without reading `tail`, so a slot scribbled to look like that is noticed only at every 64th
//! such look, when `tail` is read); a lock word that cannot be a pid counts
//! as a dead holder. Payload slices point into the mapping and are valid (in bounds) for the
//! life of the [`Ring`], but another process can change the bytes at any time, so callers copy
//! them and never trust them — as with any datagram. One thing a same-user process can do that
//! no check here prevents is shrinking the file, after which touching the lost pages raises
//! `SIGBUS`; ring files are mode 0600 and [`Ring::open`] refuses files owned by another user.
//!
//! # Wakeups
//!
//! A consumer that finds the ring empty and wants to block calls [`Ring::prepare_sleep`]: it
//! sets `waiters = 1`, then re-checks the ring; if data arrived meanwhile it clears the flag and
//! returns `false` (do not sleep). Otherwise it sleeps in the kernel on whatever doorbell the
//! datapath uses (an eventfd, a futex, a socket). A producer, after publishing, checks `waiters`
//! and, if set, swaps it to 0 and reports "doorbell needed", so that one producer rings once per
//! sleep. No wakeup is lost: the consumer stores `waiters` then loads `tail`; the producer stores
//! `tail` then loads `waiters`; all four are `SeqCst`, so at least one side sees the other's
//! store (Dekker). Doorbells can be spurious (a producer may take the flag of a consumer that
//! withdraws it a moment later, finding data), so the doorbell must tolerate an extra ring — an
//! eventfd's counter or a pipe byte does. With several consumers the flag is shared, and the rule that keeps them live
//! is "while the ring holds data, some consumer is awake": a consumer clears the flag only when
//! it is itself awake and about to drain the ring, and it sets it again before its next sleep.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// The first eight bytes of every ring file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ACCELRNG");
/// The layout version this module reads and writes.
pub const VERSION: u32 = 3;
/// Bytes before slot 0.
pub const HEADER_SIZE: usize = 4096;
/// Bytes at the start of each slot before its payload.
pub const SLOT_HEADER_SIZE: usize = 32;
/// A cache line: the slot's first one holds its header and the payload's first bytes.
const SLOT_LINE: usize = 64;
/// The slot size to use unless there is a reason not to: payloads up to 2016 bytes, so any
/// datagram that fits a 1500-byte MTU.
pub const DEFAULT_SLOT_SIZE: u32 = 2048;
/// Fewest slots a ring may have (slot counts are powers of two).
pub const MIN_SLOTS: u32 = 8;
/// Most slots a ring may have.
pub const MAX_SLOTS: u32 = 1 << 20;
/// Smallest slot, in bytes, slot header included (slot sizes are powers of two).
pub const MIN_SLOT_SIZE: u32 = 256;
/// Largest slot, in bytes, slot header included: payloads up to 65504 bytes (the IPv4 UDP
/// maximum is 65507; the last three bytes' worth must take the kernel path).
pub const MAX_SLOT_SIZE: u32 = 65536;
/// A contended producer checks whether the lock holder is alive every this many spins (a power
/// of two).
pub const SPINS_PER_CHECK: u32 = 4096;
/// A hint to bring the cache line at `p` in (no effect elsewhere than x86-64; never faults).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A hint to bring the cache line at `p` in, owned for writing (PREFETCHW; a NOP on x86-64
/// processors without it, nothing elsewhere).
#[inline(always)]
fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetchw is a hint (a NOP on processors without it); it never faults.
    unsafe {
        core::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Set when this process consumes a datagram from any ring, cleared by its next push (see
/// [`Ring::demote_if_answer`]). A heuristic shared by the process's threads.
static CONSUMED_SINCE_PUSH: AtomicBool = AtomicBool::new(false);

/// A hint that the cache line at `p` will be read by another core next: CLDEMOTE moves it from
/// this core's caches to the shared last level. Its encoding is a NOP on x86-64 processors
/// without it; nothing elsewhere.
#[inline(always)]
fn demote(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: cldemote is a hint (a NOP where unsupported); p is in the mapping.
    unsafe {
        core::arch::asm!("cldemote [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The `seq` word of a slot written for position `pos`: `pos + 1`, so that the zeroes of a new
/// ring's slots never read as published.
#[inline(always)]
const fn seq_of(pos: u64) -> u64 {
    pos.wrapping_add(1)
}

/// A peek that finds the slot at `head` unwritten reads `tail` (to tell a scribbled slot from
/// an empty ring) only once per this many such peeks.
const IDLE_PEEKS_PER_TAIL: u32 = 64;
/// The consumers' fast path samples the fill for `max_fill` at every this many positions (a
/// power of two).
const FILL_SAMPLE: u64 = 16;
/// A consumer at least this far behind (at its last fill sample) prefetches ahead.
const BACKLOG: u64 = 32;
/// How far ahead a backlogged consumer prefetches, in slots (less than [`BACKLOG`] -
/// [`FILL_SAMPLE`], so the slot is published: the fill shrinks by one per pop between samples).
const CONSUMER_PREFETCH_AHEAD: u64 = 8;
/// How far ahead a producer of a small-datagram stream takes slots for writing.
const PRODUCER_PREFETCH_AHEAD: u64 = 4;
/// Rings up to this size are pre-faulted when mapped (no page faults on the fast path later).
const POPULATE_MAX: usize = 16 << 20;
/// Linux's PID_MAX_LIMIT: a lock word above this cannot be a pid.
const PID_MAX_LIMIT: u32 = 1 << 22;

// ---------------------------------------------------------------------------------------------
// The header, as it lies in the file. Fields are all atomics (other processes write them at any
// time); padding is implicit, from the 128-byte alignment of each block.

#[repr(C, align(128))]
struct Geometry {
    magic: AtomicU64,
    version: AtomicU32,
    slot_size: AtomicU32,
    slots: AtomicU32,
    creator_pid: AtomicU32,
    header_size: AtomicU32,
}

/// Written only by producers, read only by producers: with one producer it never leaves that
/// producer's cache, so taking the lock costs no cache miss.
#[repr(C, align(128))]
struct ProducerLine {
    lock: AtomicU32,
    /// A recent value of `head`, so that producers read the consumers' line only when the ring
    /// looks full by it (head only grows, so the cached value never overstates the room).
    head_cache: AtomicU64,
    drops_full: AtomicU64,
    drops_too_big: AtomicU64,
    lock_steals: AtomicU64,
    tail_repairs: AtomicU64,
}

/// Written by producers, polled by consumers.
#[repr(C, align(128))]
struct TailLine {
    tail: AtomicU64,
}

#[repr(C, align(128))]
struct ConsumerLine {
    head: AtomicU64,
    max_fill: AtomicU64,
    corrupt: AtomicU64,
    /// Positions passed over without delivery (corrupt slots, resync jumps).
    skipped: AtomicU64,
    resyncs: AtomicU64,
}

#[repr(C, align(128))]
struct WakeLine {
    /// Sleepers that want a doorbell for *every* publish (poll/epoll over a shared ring, or a
    /// socket that found no free slot in `sleepers`): a count, so one leaving does not cancel
    /// another's request.
    waiters: AtomicU32,
    doorbells: AtomicU64,
    /// Cookies of sockets whose receiver sleeps; 0 = free. A producer publishing for a cookie
    /// listed here takes it (CAS to 0) and rings exactly that socket: per-socket wakeups on a
    /// ring that several sockets share.
    sleepers: [AtomicU64; SLEEPER_SLOTS],
}

/// Per-socket sleep registrations per ring.
pub const SLEEPER_SLOTS: usize = 8;

/// What [`Ring::prepare_sleep_for`] registered, for [`Ring::cancel_sleep_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleepTicket {
    /// The ring holds data: do not sleep (nothing is registered).
    DataPresent,
    /// Registered in this slot of `sleepers`.
    Slot(usize),
    /// No free slot: counted in `waiters` instead.
    Any,
}

#[repr(C)]
struct Header {
    geo: Geometry,
    prod: ProducerLine,
    tail: TailLine,
    cons: ConsumerLine,
    wake: WakeLine,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SlotHeader {
    seq: u64,
    len: u32,
    src_ip: u32,
    src_port: u16,
    flags: u16,
    _pad: u32,
    cookie: u64,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(Header, geo) == 0);
    assert!(offset_of!(Header, prod) == 128);
    assert!(offset_of!(Header, tail) == 256);
    assert!(offset_of!(Header, cons) == 384);
    assert!(offset_of!(Header, wake) == 512);
    assert!(size_of::<Header>() == 640 && size_of::<Header>() <= HEADER_SIZE);
    assert!(offset_of!(Geometry, magic) == 0);
    assert!(offset_of!(Geometry, version) == 8);
    assert!(offset_of!(Geometry, slot_size) == 12);
    assert!(offset_of!(Geometry, slots) == 16);
    assert!(offset_of!(Geometry, creator_pid) == 20);
    assert!(offset_of!(Geometry, header_size) == 24);
    assert!(offset_of!(ProducerLine, lock) == 0);
    assert!(offset_of!(ProducerLine, head_cache) == 8);
    assert!(offset_of!(ProducerLine, drops_full) == 16);
    assert!(offset_of!(ProducerLine, drops_too_big) == 24);
    assert!(offset_of!(ProducerLine, lock_steals) == 32);
    assert!(offset_of!(ProducerLine, tail_repairs) == 40);
    assert!(offset_of!(TailLine, tail) == 0);
    assert!(offset_of!(ConsumerLine, head) == 0);
    assert!(offset_of!(ConsumerLine, max_fill) == 8);
    assert!(offset_of!(ConsumerLine, corrupt) == 16);
    assert!(offset_of!(ConsumerLine, skipped) == 24);
    assert!(offset_of!(ConsumerLine, resyncs) == 32);
    assert!(offset_of!(WakeLine, waiters) == 0);
    assert!(offset_of!(WakeLine, doorbells) == 8);
    assert!(size_of::<SlotHeader>() == SLOT_HEADER_SIZE);
    assert!(offset_of!(SlotHeader, seq) == 0);
    assert!(offset_of!(SlotHeader, len) == 8);
    assert!(offset_of!(SlotHeader, src_ip) == 12);
    assert!(offset_of!(SlotHeader, src_port) == 16);
    assert!(offset_of!(SlotHeader, flags) == 18);
    assert!(offset_of!(SlotHeader, cookie) == 24);
};

// ---------------------------------------------------------------------------------------------
// Public types.

/// One received datagram, borrowed from its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Which socket it is for.
    pub cookie: u64,
    /// Its sender.
    pub src: SocketAddrV4,
    /// Its bytes: at most [`Ring::max_payload`] long; points into the shared mapping.
    pub payload: &'a [u8],
}

/// Why a push was refused. The datagram is dropped (and counted), as UDP may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The ring holds `capacity` datagrams already.
    Full,
    /// The payload is longer than [`Ring::max_payload`].
    TooBig,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushError::Full => "shm ring full",
            PushError::TooBig => "datagram larger than a shm ring slot",
        })
    }
}

impl std::error::Error for PushError {}

/// The slot at `pos` failed validation (bad `seq` or `len`): pass it to [`Ring::skip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt {
    pub pos: u64,
}

/// A snapshot of a ring's counters (each read separately: they need not be mutually consistent
/// while the ring is in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    pub capacity: u32,
    pub slot_size: u32,
    pub head: u64,
    pub tail: u64,
    /// `tail - head`, capped at `capacity`.
    pub len: u64,
    /// Datagrams published (= `tail`).
    pub published: u64,
    /// Datagrams delivered to consumers (= `head - skipped`).
    pub consumed: u64,
    pub drops_full: u64,
    pub drops_too_big: u64,
    /// Slots rejected at decode.
    pub corrupt: u64,
    /// Times a consumer found `head`/`tail` inconsistent and reset `head` to `tail`.
    pub resyncs: u64,
    /// Positions consumed without delivery (corrupt slots and resync jumps).
    pub skipped: u64,
    /// High-water mark of `tail - head`.
    pub max_fill: u64,
    pub doorbells: u64,
    /// Times a producer took the lock from a dead holder.
    pub lock_steals: u64,
    /// Times a producer moved `tail` over slots a dead holder had published by their `seq`
    /// only, or up to a `head` found ahead of it.
    pub tail_repairs: u64,
    /// The lock word: 0, or the pid of the producer inside its critical section.
    pub lock_holder: u32,
    /// A consumer has asked for a doorbell.
    pub waiters: bool,
    pub creator_pid: u32,
}

/// A mapped ring. Cheap to share between threads (`&Ring` is all either side needs); unmapped on
/// drop. Holds no file descriptor.
pub struct Ring {
    base: NonNull<u8>,
    map_len: usize,
    slots: u32,
    slot_size: u32,
    slot_shift: u32,
    mask: u64,
    max_payload: usize,
    creator_pid: u32,
    /// Consecutive-ish peeks of this process that found the slot at `head` unwritten (see
    /// [`Ring::peek`]); process-local, approximate across threads.
    idle_peeks: AtomicU32,
    /// The fill this process's consumers last sampled was at least [`BACKLOG`]: while so, a
    /// fast-path peek prefetches the slot [`CONSUMER_PREFETCH_AHEAD`] positions on.
    backlogged: AtomicBool,
}

// SAFETY: `Ring` is a pointer to a MAP_SHARED mapping that lives until drop plus immutable
// geometry. Every access to shared state goes through atomics, or through raw slot pointers whose
// use the ring protocol serialises (one producer at a time under the lock, slots below `tail`
// read-only); nothing is tied to the creating thread.
unsafe impl Send for Ring {}
// SAFETY: as above: all methods take `&self` and synchronise through the atomics in the mapping.
unsafe impl Sync for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("slots", &self.slots)
            .field("slot_size", &self.slot_size)
            .field("map_len", &self.map_len)
            .finish_non_exhaustive()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned in `map`, and no borrow of the
        // mapping outlives `self` (every lent slice borrows `self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

fn invalid_input(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn invalid_data(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn check_geometry(slots: u32, slot_size: u32) -> Result<(), &'static str> {
    if !slots.is_power_of_two() || !(MIN_SLOTS..=MAX_SLOTS).contains(&slots) {
        return Err("shm ring: slots must be a power of two in 8..=1048576");
    }
    if !slot_size.is_power_of_two() || !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&slot_size) {
        return Err("shm ring: slot_size must be a power of two in 256..=65536");
    }
    Ok(())
}

/// The huge page size if `file` is on hugetlbfs (VMA_MEM_ALLOC_TYPE=2), else None.
fn huge_page_size(file: &File) -> Option<u64> {
    let mut st = core::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the statfs we own; the fd is open.
    if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful fstatfs.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    let hugetlbfs = st.f_type as i64 == super::registry::HUGETLBFS_MAGIC;
    (hugetlbfs && st.f_bsize > 0).then_some(st.f_bsize as u64)
}

fn ring_bytes(slots: u32, slot_size: u32) -> u64 {
    // At most 4096 + 2^20 * 2^16: no overflow in u64.
    HEADER_SIZE as u64 + slots as u64 * slot_size as u64
}

impl Ring {
    /// Create a new ring file at `path` (mode 0600; fails with `AlreadyExists` if something is
    /// there) and map it. `slots` and `slot_size` must be powers of two in
    /// [`MIN_SLOTS`]`..=`[`MAX_SLOTS`] and [`MIN_SLOT_SIZE`]`..=`[`MAX_SLOT_SIZE`]
    /// (`InvalidInput` otherwise).
    ///
    /// The file is built under a temporary name and linked into place only once initialised, so
    /// [`Ring::open`] never sees a half-made ring at `path`.
    pub fn create(path: &Path, slots: u32, slot_size: u32) -> io::Result<Ring> {
        check_geometry(slots, slot_size).map_err(invalid_input)?;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Relaxed)));
        let tmp = PathBuf::from(tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let made = (|| -> io::Result<Ring> {
            let ring = Ring::init_file(&file, slots, slot_size)?;
            std::fs::hard_link(&tmp, path)?;
            Ok(ring)
        })();
        let _ = std::fs::remove_file(&tmp);
        made
    }

    /// Empty `file` (read-write), size it for a new ring, map it and initialise the header. For
    /// rings that live in a memfd or an already-open file; nobody may be using the file yet.
    pub fn init_file(file: &File, slots: u32, slot_size: u32) -> io::Result<Ring> {
        check_geometry(slots, slot_size).map_err(invalid_input)?;
        // On hugetlbfs the file and the mapping are whole huge pages.
        let len = ring_bytes(slots, slot_size).next_multiple_of(huge_page_size(file).unwrap_or(1));
        file.set_len(0)?; // every byte of the ring starts zeroed
        file.set_len(len)?;
        let mut ring = Ring::map(file, len as usize, slots, slot_size, 0)?;
        let pid = my_pid();
        ring.creator_pid = pid;
        let h = ring.hdr();
        h.geo.version.store(VERSION, Relaxed);
        h.geo.slot_size.store(slot_size, Relaxed);
        h.geo.slots.store(slots, Relaxed);
        h.geo.creator_pid.store(pid, Relaxed);
        h.geo.header_size.store(HEADER_SIZE as u32, Relaxed);
        // The file was zero-filled by set_len; the magic goes last so that a reader that sees it
        // (acquire) sees the geometry too.
        h.geo.magic.store(MAGIC, Release);
        Ok(ring)
    }

    /// Map the existing ring at `path`. Refuses (`InvalidData`) anything that is not a valid ring
    /// whose slots fit in the file as it is, and (`PermissionDenied`) a file owned by another user.
    pub fn open(path: &Path) -> io::Result<Ring> {
        let file =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
        let meta = file.metadata()?;
        // SAFETY: geteuid has no preconditions.
        if meta.uid() != unsafe { libc::geteuid() } {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "shm ring: file owned by another user"));
        }
        Ring::from_file(&file)
    }

    /// Map the ring in an already-open file (read-write), validating it as [`Ring::open`] does
    /// (but not its owner). The file may be closed afterwards.
    pub fn from_file(file: &File) -> io::Result<Ring> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(invalid_data("shm ring: not a regular file"));
        }
        let size = meta.len();
        if size < HEADER_SIZE as u64 {
            return Err(invalid_data("shm ring: file shorter than the ring header"));
        }
        let mut g = [0u8; 32];
        file.read_exact_at(&mut g, 0)?;
        let u32_at = |o: usize| u32::from_ne_bytes([g[o], g[o + 1], g[o + 2], g[o + 3]]);
        let magic = u64::from_ne_bytes([g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]]);
        if magic != MAGIC {
            return Err(invalid_data("shm ring: bad magic"));
        }
        if u32_at(8) != VERSION {
            return Err(invalid_data("shm ring: unsupported version"));
        }
        let (slot_size, slots) = (u32_at(12), u32_at(16));
        check_geometry(slots, slot_size).map_err(invalid_data)?;
        if u32_at(24) != HEADER_SIZE as u32 {
            return Err(invalid_data("shm ring: bad header size"));
        }
        let len = ring_bytes(slots, slot_size);
        if len > size || len > isize::MAX as u64 {
            return Err(invalid_data("shm ring: slots extend past the end of the file"));
        }
        // A hugetlbfs mapping is whole huge pages (and its file is: init_file made it so).
        let len = match huge_page_size(file) {
            Some(page) if len.next_multiple_of(page) <= size => len.next_multiple_of(page),
            Some(_) => return Err(invalid_data("shm ring: hugetlbfs file not a whole number of pages")),
            None => len,
        };
        Ring::map(file, len as usize, slots, slot_size, u32_at(20))
    }

    fn map(file: &File, len: usize, slots: u32, slot_size: u32, creator_pid: u32) -> io::Result<Ring> {
        let populate = if len <= POPULATE_MAX { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh shared mapping of `len` bytes of `file` at an address the kernel picks;
        // the caller has checked that the file is at least `len` bytes long. Nothing aliases it
        // yet.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | populate,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            // SAFETY-free: mmap never returns null on success (MAP_FIXED is not used).
            base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            map_len: len,
            slots,
            slot_size,
            slot_shift: slot_size.trailing_zeros(),
            mask: slots as u64 - 1,
            max_payload: slot_size as usize - SLOT_HEADER_SIZE,
            creator_pid,
            idle_peeks: AtomicU32::new(0),
            backlogged: AtomicBool::new(false),
        })
    }

    #[inline(always)]
    fn hdr(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least HEADER_SIZE >= size_of::<Header>()
        // bytes long, and lives as long as `self`. Header consists only of atomics (plus implicit
        // padding, never read), for which every bit pattern is valid and shared mutation — by us
        // or by other processes — is allowed.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    #[inline(always)]
    fn slot_ptr(&self, pos: u64) -> *mut u8 {
        let off = HEADER_SIZE + (((pos & self.mask) as usize) << self.slot_shift);
        // SAFETY: (pos & mask) < slots, so off + slot_size <= HEADER_SIZE + slots * slot_size =
        // map_len: the pointer and the slot_size bytes after it are inside the mapping. Slots are
        // slot_size-aligned (a power of two >= 256) within a page-aligned mapping.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.slots
    }

    /// Bytes per slot, slot header included.
    #[inline]
    pub fn slot_size(&self) -> u32 {
        self.slot_size
    }

    /// The longest payload a slot holds (`slot_size - 32`).
    #[inline]
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The pid that created the ring (as recorded in the file when it was opened).
    pub fn creator_pid(&self) -> u32 {
        self.creator_pid
    }

    /// Datagrams waiting (`tail - head`, capped at the capacity; approximate while in use).
    #[inline]
    pub fn len(&self) -> u64 {
        let h = self.hdr();
        let head = h.cons.head.load(Acquire);
        let tail = h.tail.tail.load(Acquire);
        self.fill(tail, head).min(self.slots as u64)
    }

    /// Nothing to pop (at the instant of the check).
    #[inline]
    pub fn is_empty(&self) -> bool {
        let h = self.hdr();
        let head = h.cons.head.load(Acquire);
        let seq = self.slot_seq(head).load(Acquire);
        if seq == seq_of(head) {
            return false;
        }
        if self.unwritten(seq, head) {
            return true;
        }
        self.fill(h.tail.tail.load(Acquire), head) == 0
    }

    /// `tail - head`, except that a `head` ahead of `tail` by at most `slots` is an empty ring:
    /// consumers took slots published by their `seq` before the producer's `tail` store (see
    /// [`Ring::peek`]). A fill over `slots` means corrupt indices.
    #[inline(always)]
    fn fill(&self, tail: u64, head: u64) -> u64 {
        let fill = tail.wrapping_sub(head);
        if fill > self.slots as u64 && head.wrapping_sub(tail) <= self.slots as u64 {
            0
        } else {
            fill
        }
    }

    // -----------------------------------------------------------------------------------------
    // Producers.

    /// Take the producer lock (see the module docs).
    #[inline]
    fn lock(&self) -> LockGuard<'_> {
        let me = my_pid();
        let lock = &self.hdr().prod.lock;
        if lock.compare_exchange(0, me, Acquire, Relaxed).is_err() {
            self.lock_contended(me);
        }
        LockGuard { lock }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self, me: u32) {
        let prod = &self.hdr().prod;
        let mut spins = 0u32;
        loop {
            let cur = prod.lock.load(Relaxed);
            if cur == 0 {
                if prod.lock.compare_exchange_weak(0, me, Acquire, Relaxed).is_ok() {
                    return;
                }
                continue;
            }
            spins = spins.wrapping_add(1);
            if spins & (SPINS_PER_CHECK - 1) != 0 {
                core::hint::spin_loop();
                continue;
            }
            // `cur == me` is another thread of this process: alive by definition.
            if cur != me && !process_alive(cur) {
                if prod.lock.compare_exchange(cur, me, Acquire, Relaxed).is_ok() {
                    prod.lock_steals.fetch_add(1, Relaxed);
                    self.repair_tail();
                    return;
                }
                continue;
            }
            // The holder is alive but slow (preempted, likely on this very core): let it run.
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// Where the next datagram goes (`tail`) and the room there, wanting `want` slots: reads
    /// the consumers' `head` only if the cached copy does not show enough. Called under the lock.
    #[inline(always)]
    fn reserve(&self, want: u64) -> (u64, u64) {
        let h = self.hdr();
        // Acquire: a dead holder's lock gives no happens-before edge; its tail store does.
        let tail = h.tail.tail.load(Acquire);
        let slots = self.slots as u64;
        // Acquire pairs with the release store below made by an earlier holder, possibly one that
        // died (so the lock gave us no happens-before edge): consumers' reads of the slots we are
        // about to reuse happen before.
        let cached = h.prod.head_cache.load(Acquire);
        let used = tail.wrapping_sub(cached);
        if used <= slots && slots - used >= want {
            return (tail, slots - used);
        }
        // Acquire pairs with the consumers' CAS on head: their reads of a slot happen before we
        // overwrite it.
        let head = h.cons.head.load(Acquire);
        h.prod.head_cache.store(head, Release);
        let used = tail.wrapping_sub(head);
        if used > slots && head.wrapping_sub(tail) <= slots {
            // head ahead of tail, which no live producer leaves behind: repair, then look again.
            self.repair_tail();
            let tail = h.tail.tail.load(Acquire);
            return (tail, slots.saturating_sub(tail.wrapping_sub(head)));
        }
        (tail, slots.saturating_sub(used))
    }

    #[inline(always)]
    fn write_slot(&self, pos: u64, cookie: u64, src: SocketAddrV4, payload: &[u8]) {
        debug_assert!(payload.len() <= self.max_payload);
        let slot = self.slot_ptr(pos);
        let sh = slot.cast::<SlotHeader>();
        // SAFETY: the slot is in bounds and 32-aligned (slot_ptr); the caller holds the producer
        // lock and has checked `pos - head < slots`, so no consumer is reading this slot (a
        // consumer that still looks at it after losing a CAS discards what it read) and no other
        // producer writes it; payload.len() <= slot_size - 32, checked by every caller. `seq` is
        // not written here: it is the slot's publication, stored last by `publish_slot`.
        // Order: the payload past the slot's first cache line, then that line (header and the
        // payload's start) in one burst, then `seq` (on the same line). A consumer polls `seq`,
        // so each store to the first line may have to take the line back from it: the fewer and
        // closer together those are, the fewer times the line crosses between the cores.
        let head_room = (SLOT_LINE - SLOT_HEADER_SIZE).min(payload.len());
        unsafe {
            ptr::copy_nonoverlapping(payload.as_ptr().add(head_room), slot.add(SLOT_LINE), payload.len() - head_room);
            ptr::addr_of_mut!((*sh).len).write(payload.len() as u32);
            ptr::addr_of_mut!((*sh).src_ip).write(u32::from_ne_bytes(src.ip().octets()));
            ptr::addr_of_mut!((*sh).src_port).write(src.port());
            ptr::addr_of_mut!((*sh).flags).write(0);
            ptr::addr_of_mut!((*sh).cookie).write(cookie);
            ptr::copy_nonoverlapping(payload.as_ptr(), slot.add(SLOT_HEADER_SIZE), head_room);
        }
        self.slot_seq(pos).store(seq_of(pos), Release);
        // The next slot's payload line, while the consumer is busy with this one: the next
        // push then writes it from our cache instead of waiting for it.
        prefetch(self.slot_ptr(pos.wrapping_add(1)).wrapping_add(SLOT_LINE));
        self.prefetch_ahead_for_write(pos, payload.len());
    }

    /// In a one-way stream of small datagrams (at most two lines with the header), take the
    /// lines of the slot [`PRODUCER_PREFETCH_AHEAD`] positions on for writing now, so that the
    /// push that reaches it finds them here instead of waiting to take them from the consumer's
    /// core. With the consumer's own prefetch (see [`Ring::peek`]) 64 B streams went from 8.5
    /// to ~18 M msg/s. Not when that slot may still be unread (a near-full ring: it would pull
    /// the line out from under the consumer), not in request/response traffic (the peer polls
    /// nearby), and not for larger datagrams (measured: 1472 B streams 5.3 -> 3.5 M msg/s, the
    /// consumer slowed down).
    #[inline(always)]
    fn prefetch_ahead_for_write(&self, pos: u64, len: usize) {
        if SLOT_HEADER_SIZE + len > 2 * SLOT_LINE || CONSUMED_SINCE_PUSH.load(Relaxed) {
            return;
        }
        let ahead = pos.wrapping_add(PRODUCER_PREFETCH_AHEAD);
        // head_cache <= head, so this never says free a slot that is not.
        if ahead.wrapping_sub(self.hdr().prod.head_cache.load(Relaxed)) >= self.slots as u64 {
            return;
        }
        let slot = self.slot_ptr(ahead);
        prefetch_write(slot);
        prefetch_write(slot.wrapping_add(SLOT_LINE));
    }

    /// After a push that answers something (this process consumed a datagram from a ring since
    /// its previous push: request/response, ping-pong style, where the peer is likely polling
    /// for this one), push the slot's first two lines (header and the payload's first 96 bytes)
    /// out of this core's caches to the shared last level, so the consumer reads them from there
    /// instead of snooping them out of ours: sockperf ping-pong p50 0.30 -> 0.265 us. Not in a
    /// one-way stream: there CLDEMOTE costs the producer enough to cut its rate (8.5 -> 4.9 M
    /// msg/s of 64 B).
    #[inline(always)]
    fn demote_if_answer(&self, pos: u64, len: usize) {
        if !CONSUMED_SINCE_PUSH.load(Relaxed) {
            return;
        }
        CONSUMED_SINCE_PUSH.store(false, Relaxed);
        let slot = self.slot_ptr(pos);
        demote(slot);
        if SLOT_HEADER_SIZE + len > SLOT_LINE {
            demote(slot.wrapping_add(SLOT_LINE));
        }
    }

    /// The `seq` word of the slot for position `pos`.
    #[inline(always)]
    fn slot_seq(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: slot_ptr is in bounds and 32-aligned, so 8-aligned; the mapping outlives
        // `&self`, and every access to this word is atomic.
        unsafe { &*self.slot_ptr(pos).cast::<AtomicU64>() }
    }

    /// After stealing the lock from a dead holder, or finding `head` ahead of `tail` under the
    /// lock: make `tail` count every slot a dead holder published by its `seq` but not by its
    /// `tail` store (consumers may have taken them already, and rewriting them could tear a
    /// consumer's read), and never leave it behind `head` (a scribbled `head`). Under the lock.
    #[cold]
    #[inline(never)]
    fn repair_tail(&self) {
        let h = self.hdr();
        let slots = self.slots as u64;
        let old = h.tail.tail.load(Acquire);
        let mut tail = old;
        // A slot's seq is seq_of(tail) only if it was written for position `tail` (a previous
        // lap wrote seq_of(tail - slots)): such a slot is complete, seq being stored last.
        for _ in 0..slots {
            if self.slot_seq(tail).load(Acquire) != seq_of(tail) {
                break;
            }
            tail = tail.wrapping_add(1);
        }
        let head = h.cons.head.load(Acquire);
        let ahead = head.wrapping_sub(tail);
        if ahead != 0 && ahead <= slots {
            tail = head;
        }
        if tail != old {
            h.prod.tail_repairs.fetch_add(1, Relaxed);
            h.tail.tail.store(tail, SeqCst);
        }
    }

    /// After publishing a datagram for `cookie`: must the caller ring that socket's doorbell?
    /// Yes if its receiver registered to sleep (the registration is taken, so exactly one
    /// producer rings per sleep), or if any ring-wide sleeper is counted.
    #[inline(always)]
    fn take_waiter(&self, cookie: u64) -> bool {
        let w = &self.hdr().wake;
        // SeqCst, and after the SeqCst store of `tail`: the Dekker pairing with prepare_sleep*.
        let mut ring = w.waiters.load(SeqCst) != 0;
        if cookie != 0 {
            for slot in &w.sleepers {
                if slot.load(SeqCst) == cookie && slot.compare_exchange(cookie, 0, SeqCst, Relaxed).is_ok() {
                    ring = true;
                }
            }
        }
        if ring {
            w.doorbells.fetch_add(1, Relaxed);
        }
        ring
    }

    /// Publish one datagram. `Ok(true)` means a consumer is asleep and the caller must ring the
    /// doorbell. Never blocks on a full ring (`Err(Full)`, counted); waits only for another
    /// producer's critical section.
    #[inline]
    pub fn push(&self, cookie: u64, src: SocketAddrV4, payload: &[u8]) -> Result<bool, PushError> {
        let h = self.hdr();
        if payload.len() > self.max_payload {
            h.prod.drops_too_big.fetch_add(1, Relaxed);
            return Err(PushError::TooBig);
        }
        let guard = self.lock();
        let (tail, room) = self.reserve(1);
        if room == 0 {
            h.prod.drops_full.fetch_add(1, Relaxed);
            drop(guard);
            return Err(PushError::Full);
        }
        self.write_slot(tail, cookie, src, payload);
        // SeqCst (not just Release, which would suffice for the slot contents) for the wakeup
        // protocol: see take_waiter / prepare_sleep.
        h.tail.tail.store(tail.wrapping_add(1), SeqCst);
        drop(guard);
        self.demote_if_answer(tail, payload.len());
        Ok(self.take_waiter(cookie))
    }

    /// Publish several datagrams under one lock with one `tail` store. Returns how many items
    /// were *taken* from the front of `items` — published, or dropped as too big (counted in
    /// `drops_too_big`) — and whether the caller must ring the doorbell. It stops at the first
    /// item that finds the ring full: `items[taken..]` were not published and are counted in
    /// `drops_full`.
    pub fn push_batch(&self, items: &[(u64, SocketAddrV4, &[u8])]) -> (usize, bool) {
        if items.is_empty() {
            return (0, false);
        }
        let h = self.hdr();
        let guard = self.lock();
        let (tail0, mut room) = self.reserve(items.len().min(self.slots as usize) as u64);
        let mut tail = tail0;
        let mut taken = 0;
        let mut too_big = 0u64;
        for &(cookie, src, payload) in items {
            if payload.len() > self.max_payload {
                too_big += 1;
            } else if room == 0 {
                break;
            } else {
                self.write_slot(tail, cookie, src, payload);
                tail = tail.wrapping_add(1);
                room -= 1;
            }
            taken += 1;
        }
        if tail != tail0 {
            h.tail.tail.store(tail, SeqCst);
        }
        drop(guard);
        if taken < items.len() {
            h.prod.drops_full.fetch_add((items.len() - taken) as u64, Relaxed);
        }
        if too_big != 0 {
            h.prod.drops_too_big.fetch_add(too_big, Relaxed);
        }
        // Each published cookie may have a sleeper; the caller rings every distinct cookie of the
        // batch when this says so.
        let mut ring = false;
        let mut last = None;
        for &(cookie, _, payload) in &items[..taken] {
            if payload.len() <= self.max_payload && last != Some(cookie) {
                ring |= self.take_waiter(cookie);
                last = Some(cookie);
            }
        }
        (taken, ring)
    }

    // -----------------------------------------------------------------------------------------
    // Consumers.

    /// The next datagram, without consuming it: `None` if the ring is empty, `Err` if the slot
    /// at the head failed validation (give it to [`Ring::skip`]). The payload stays put until
    /// the position is consumed; call [`Ring::consume`] with the returned position once done
    /// with it (if that returns false, another consumer took it: treat it as not received).
    pub fn peek(&self) -> Option<Result<(u64, Datagram<'_>), Corrupt>> {
        let h = self.hdr();
        let slots = self.slots as u64;
        // Retries only when the indices move under us; bounded so that a process scribbling
        // over them cannot keep us here.
        for _ in 0..64 {
            let head = h.cons.head.load(Acquire);
            // The fast path: the slot says it holds position `head`. Acquire pairs with the
            // producer's Release store of `seq`, made after the rest of the slot, so the slot is
            // complete — without touching `tail`, whose line the producer has just written (that
            // cache miss was most of a ping-pong's ring cost: 0.38 -> 0.12 us half round trip).
            let seq = self.slot_seq(head).load(Acquire);
            if seq == seq_of(head) {
                if head & (FILL_SAMPLE - 1) == 0 {
                    self.sample_fill(head);
                }
                // Behind the producer: the slots after this one are written, so bring the
                // first two lines of one a few positions on while this one is copied out (the
                // hardware prefetcher does not follow a 2 KiB stride across pages). Not at the
                // producer's heels, where it would take lines the producer is about to write.
                if self.backlogged.load(Relaxed) {
                    let ahead = self.slot_ptr(head.wrapping_add(CONSUMER_PREFETCH_AHEAD));
                    prefetch(ahead);
                    prefetch(ahead.wrapping_add(SLOT_LINE));
                }
                if let Some(d) = self.read_slot(head) {
                    return Some(Ok((head, d)));
                }
            } else if self.unwritten(seq, head) {
                return None;
            }
            // Acquire pairs with the producers' tail store: the slots below it are written.
            let tail = h.tail.tail.load(Acquire);
            // A head ahead of tail counts as empty (see `fill`): consumers took slots published
            // by `seq` whose `tail` store has not landed yet, or never will (the producer died in
            // between, and the next one repairs `tail`). Moving head back would deliver them twice.
            let fill = self.fill(tail, head);
            if fill == 0 {
                return None;
            }
            if fill > slots {
                // Either another consumer moved head after we read it (then head has changed),
                // or the indices are corrupt: tail - head <= slots holds at every instant, and a
                // head re-read after acquiring tail is no older than the head the publishing
                // producer checked. Corrupt indices: resynchronise, dropping what is in between.
                if h.cons.head.load(Acquire) == head
                    && h.cons.head.compare_exchange(head, tail, AcqRel, Relaxed).is_ok()
                {
                    h.cons.resyncs.fetch_add(1, Relaxed);
                    h.cons.skipped.fetch_add(fill, Relaxed);
                }
                continue;
            }
            if fill > h.cons.max_fill.load(Relaxed) {
                h.cons.max_fill.fetch_max(fill, Relaxed);
            }
            return Some(self.read_slot(head).map(|d| (head, d)).ok_or(Corrupt { pos: head }));
        }
        None
    }

    /// Does `seq`, read from the slot at `head`, say the ring is empty without a look at `tail`?
    /// Yes if the slot still holds the previous lap's datagram (or nothing, in a new ring) —
    /// except on every IDLE_PEEKS_PER_TAIL-th such look, because a scribbled slot could look
    /// like this with datagrams behind it. Why not read `tail`: an idle consumer reading the line
    /// that every push writes makes each push's `tail` store wait for the line to come back (a
    /// cross-core miss in the sender; busy ping-pong p50 0.35 -> 0.28 us).
    #[inline(always)]
    fn unwritten(&self, seq: u64, head: u64) -> bool {
        if seq != seq_of(head.wrapping_sub(self.slots as u64)) && seq != 0 {
            return false;
        }
        let n = self.idle_peeks.load(Relaxed).wrapping_add(1);
        self.idle_peeks.store(n, Relaxed);
        !n.is_multiple_of(IDLE_PEEKS_PER_TAIL)
    }

    /// The datagram in the slot for position `head`, if the slot says so and its length fits.
    #[inline(always)]
    fn read_slot(&self, head: u64) -> Option<Datagram<'_>> {
        let slot = self.slot_ptr(head);
        // SAFETY: in bounds and aligned (slot_ptr); a volatile copy, so every check below is
        // made on one stable snapshot whatever other processes do to the slot meanwhile.
        let sh = unsafe { ptr::read_volatile(slot.cast::<SlotHeader>()) };
        let len = sh.len as usize;
        if sh.seq != seq_of(head) || len > self.max_payload {
            return None;
        }
        // SAFETY: len <= slot_size - 32, so the payload lies inside this slot, inside the
        // mapping, which lives as long as the borrow of `self`. Producers do not write this
        // slot until head passes `head` (see the module docs); other processes could, and
        // callers treat the bytes as untrusted.
        let payload = unsafe { core::slice::from_raw_parts(slot.add(SLOT_HEADER_SIZE), len) };
        let src = SocketAddrV4::new(Ipv4Addr::from(sh.src_ip.to_ne_bytes()), sh.src_port);
        Some(Datagram { cookie: sh.cookie, src, payload })
    }

    /// Fold the fill seen at position `head` into `max_fill` (the fast path does this every
    /// [`FILL_SAMPLE`] positions: reading `tail` costs a cache miss).
    #[cold]
    #[inline(never)]
    fn sample_fill(&self, head: u64) {
        let h = self.hdr();
        let fill = h.tail.tail.load(Relaxed).wrapping_sub(head);
        if fill > self.slots as u64 {
            return;
        }
        if fill > h.cons.max_fill.load(Relaxed) {
            h.cons.max_fill.fetch_max(fill, Relaxed);
        }
        let backlogged = fill >= BACKLOG;
        if self.backlogged.load(Relaxed) != backlogged {
            self.backlogged.store(backlogged, Relaxed);
        }
    }

    /// Consume position `pos` (from [`Ring::peek`]). False if another consumer took it first:
    /// what was read must be discarded, and the caller peeks again.
    #[inline]
    pub fn consume(&self, pos: u64) -> bool {
        // Release: our reads of the slot happen before a producer reuses it.
        let ok = self.hdr().cons.head.compare_exchange(pos, pos.wrapping_add(1), AcqRel, Relaxed).is_ok();
        if ok && !CONSUMED_SINCE_PUSH.load(Relaxed) {
            CONSUMED_SINCE_PUSH.store(true, Relaxed);
        }
        ok
    }

    /// Step over a corrupt slot. Counted only if this call moved head (a slot that looked bad
    /// because another consumer already took it and a producer reused it is not counted).
    pub fn skip(&self, c: Corrupt) -> bool {
        let cons = &self.hdr().cons;
        let moved = cons.head.compare_exchange(c.pos, c.pos.wrapping_add(1), AcqRel, Relaxed).is_ok();
        if moved {
            cons.corrupt.fetch_add(1, Relaxed);
            cons.skipped.fetch_add(1, Relaxed);
        }
        moved
    }

    /// Pop one datagram, handing it to `f` (which copies it out) before consuming it. Skips and
    /// counts corrupt slots. `None` if the ring is empty.
    ///
    /// With several consumers `f` may be called more than once: a call whose datagram another
    /// consumer took is discarded (its bytes may have been torn by a producer reusing the slot),
    /// and only the last call's result is returned. So `f` should only copy, and the copy be
    /// examined after `pop_with` returns.
    pub fn pop_with<R>(&self, mut f: impl FnMut(Datagram<'_>) -> R) -> Option<R> {
        // Each turn either delivers, or skips a corrupt slot, or lost a race to a consumer that
        // made progress; the bound only stops a ring being rewritten under us from keeping us.
        let turns = 2 * self.slots as usize + 64;
        for _ in 0..turns {
            match self.peek()? {
                Ok((pos, d)) => {
                    let r = f(d);
                    if self.consume(pos) {
                        return Some(r);
                    }
                }
                Err(c) => {
                    self.skip(c);
                }
            }
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Wakeups.

    /// Ask for a doorbell on *every* publish before sleeping (a sleeper watching the whole ring:
    /// poll/epoll). Returns true if the consumer may sleep (the ring was empty after the request
    /// was made visible: the next publish will ring); false if data is already there (the
    /// request is withdrawn: drain the ring instead). Pair with [`Ring::cancel_sleep`].
    pub fn prepare_sleep(&self) -> bool {
        let h = self.hdr();
        h.wake.waiters.fetch_add(1, SeqCst);
        if self.has_data_seqcst() {
            self.cancel_sleep();
            return false;
        }
        true
    }

    /// Withdraw a [`Ring::prepare_sleep`] request (woken, timed out, or interrupted).
    pub fn cancel_sleep(&self) {
        let w = &self.hdr().wake.waiters;
        let _ = w.fetch_update(SeqCst, Relaxed, |n| n.checked_sub(1));
    }

    /// Ask for one doorbell when a datagram for socket `cookie` is published (a blocking
    /// receive). Pair with [`Ring::cancel_sleep_for`].
    pub fn prepare_sleep_for(&self, cookie: u64) -> SleepTicket {
        let w = &self.hdr().wake;
        let mut ticket = SleepTicket::Any;
        if cookie != 0 {
            for (i, slot) in w.sleepers.iter().enumerate() {
                if slot.compare_exchange(0, cookie, SeqCst, Relaxed).is_ok() {
                    ticket = SleepTicket::Slot(i);
                    break;
                }
            }
        }
        if ticket == SleepTicket::Any {
            w.waiters.fetch_add(1, SeqCst);
        }
        // After the SeqCst registration: either we see the producer's tail, or it sees us.
        if self.has_data_seqcst() {
            self.cancel_sleep_for(ticket, cookie);
            return SleepTicket::DataPresent;
        }
        ticket
    }

    /// Withdraw a [`Ring::prepare_sleep_for`] registration (a producer may have taken it already).
    pub fn cancel_sleep_for(&self, ticket: SleepTicket, cookie: u64) {
        let w = &self.hdr().wake;
        match ticket {
            SleepTicket::DataPresent => {}
            SleepTicket::Slot(i) => {
                if let Some(slot) = w.sleepers.get(i) {
                    let _ = slot.compare_exchange(cookie, 0, SeqCst, Relaxed);
                }
            }
            SleepTicket::Any => self.cancel_sleep(),
        }
    }

    fn has_data_seqcst(&self) -> bool {
        let h = self.hdr();
        // SeqCst loads after the SeqCst registration: pairs with the producers' tail store +
        // waiter loads (Dekker), so either we see their tail or they see our request.
        let tail = h.tail.tail.load(SeqCst);
        let head = h.cons.head.load(SeqCst);
        self.fill(tail, head) != 0
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RingStats {
        let h = self.hdr();
        let head = h.cons.head.load(Acquire);
        let tail = h.tail.tail.load(Acquire);
        let len = self.fill(tail, head).min(self.slots as u64);
        let skipped = h.cons.skipped.load(Relaxed);
        RingStats {
            capacity: self.slots,
            slot_size: self.slot_size,
            head,
            tail,
            len,
            published: tail,
            consumed: head.wrapping_sub(skipped),
            drops_full: h.prod.drops_full.load(Relaxed),
            drops_too_big: h.prod.drops_too_big.load(Relaxed),
            corrupt: h.cons.corrupt.load(Relaxed),
            resyncs: h.cons.resyncs.load(Relaxed),
            skipped,
            max_fill: h.cons.max_fill.load(Relaxed).max(len),
            doorbells: h.wake.doorbells.load(Relaxed),
            lock_steals: h.prod.lock_steals.load(Relaxed),
            tail_repairs: h.prod.tail_repairs.load(Relaxed),
            lock_holder: h.prod.lock.load(Relaxed),
            waiters: h.wake.waiters.load(Relaxed) != 0 || h.wake.sleepers.iter().any(|s| s.load(Relaxed) != 0),
            creator_pid: self.creator_pid,
        }
    }

    /// Test hook: take the lock and half-write the slot at `tail` without publishing, as a
    /// producer killed mid-push would leave it (everything but `seq`). The lock is left held.
    #[cfg(test)]
    fn test_lock_and_scribble(&self) {
        let guard = self.lock();
        core::mem::forget(guard);
        let tail = self.hdr().tail.tail.load(Acquire);
        let slot = self.slot_ptr(tail);
        // SAFETY: in bounds (slot_ptr); we hold the lock and the slot is not published.
        unsafe {
            ptr::write_volatile(slot.add(8).cast::<u32>(), 100);
            ptr::write_bytes(slot.add(SLOT_HEADER_SIZE), b'X', 50);
        }
    }

    /// Test hook: take the lock and write `payloads` completely at `tail` onwards, each slot
    /// published by its `seq`, but never store `tail`: a producer killed between the two. The
    /// lock is left held.
    #[cfg(test)]
    fn test_lock_and_publish_by_seq(&self, payloads: &[&[u8]]) {
        let guard = self.lock();
        core::mem::forget(guard);
        let (tail, room) = self.reserve(payloads.len() as u64);
        assert!(room >= payloads.len() as u64);
        for (i, p) in payloads.iter().enumerate() {
            self.write_slot(tail + i as u64, 7, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7), p);
        }
    }

    /// Test hook: the mapping, for writing garbage into it.
    #[cfg(test)]
    fn test_raw(&self) -> (*mut u8, usize) {
        (self.base.as_ptr(), self.map_len)
    }
}

/// Releases the producer lock on drop.
struct LockGuard<'a> {
    lock: &'a AtomicU32,
}

impl Drop for LockGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: our slot writes and tail store happen before the next holder's reads.
        self.lock.store(0, Release);
    }
}

// ---------------------------------------------------------------------------------------------
// The ring as a VI receive queue (the borrow/release model).

impl crate::vi::RxQueue for Ring {
    #[inline]
    fn borrow(&self) -> Option<Result<(crate::vi::BufId, crate::vi::RxDatagram<'_>), crate::vi::BadEntry>> {
        Some(match self.peek()? {
            Ok((pos, d)) => Ok((crate::vi::BufId(pos), crate::vi::RxDatagram { owner: d.cookie, src: d.src, payload: d.payload })),
            Err(c) => Err(crate::vi::BadEntry(c.pos)),
        })
    }
    #[inline]
    fn release(&self, id: crate::vi::BufId) -> bool {
        self.consume(id.0)
    }
    fn discard(&self, bad: crate::vi::BadEntry) {
        self.skip(Corrupt { pos: bad.0 });
    }
    fn capacity(&self) -> u32 {
        Ring::capacity(self)
    }
    #[inline]
    fn is_empty(&self) -> bool {
        Ring::is_empty(self)
    }
    fn arm(&self) -> bool {
        self.prepare_sleep()
    }
    fn disarm(&self) {
        self.cancel_sleep()
    }
    fn arm_for(&self, owner: u64) -> SleepTicket {
        self.prepare_sleep_for(owner)
    }
    fn disarm_for(&self, ticket: SleepTicket, owner: u64) {
        self.cancel_sleep_for(ticket, owner)
    }
    fn fill(&self) -> (u64, u64) {
        let st = self.stats();
        (st.len, st.max_fill)
    }
}

// ---------------------------------------------------------------------------------------------
// The cached pid.

/// Points to the per-process pid cache: a page with MADV_WIPEONFORK when the kernel has it (a
/// forked child sees 0 there), else [`PID_FALLBACK`].
static PID_CELL: AtomicPtr<AtomicU32> = AtomicPtr::new(ptr::null_mut());
static PID_FALLBACK: AtomicU32 = AtomicU32::new(0);

/// This process's pid, without a system call once cached.
#[inline(always)]
fn my_pid() -> u32 {
    let cell = PID_CELL.load(Acquire);
    let cell = if cell.is_null() { pid_cell_init() } else { cell };
    // SAFETY: PID_CELL only ever holds a pointer to PID_FALLBACK or to a page that is never
    // unmapped; both hold an AtomicU32 at offset 0.
    let cell = unsafe { &*cell };
    let pid = cell.load(Relaxed);
    if pid != 0 {
        return pid;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    cell.store(pid, Relaxed);
    pid
}

#[cold]
fn pid_cell_init() -> *mut AtomicU32 {
    // SAFETY: a fresh private anonymous page; madvise on exactly that page. On any failure the
    // page is unmapped and never published.
    let page = unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            ptr::null_mut()
        } else if libc::madvise(p, 4096, libc::MADV_WIPEONFORK) != 0 {
            libc::munmap(p, 4096);
            ptr::null_mut()
        } else {
            p.cast::<AtomicU32>()
        }
    };
    let mine = if page.is_null() { &PID_FALLBACK as *const AtomicU32 as *mut AtomicU32 } else { page };
    match PID_CELL.compare_exchange(ptr::null_mut(), mine, AcqRel, Acquire) {
        Ok(_) => mine,
        Err(winner) => {
            if !page.is_null() {
                // SAFETY: our page lost the race and was never published.
                unsafe { libc::munmap(page.cast(), 4096) };
            }
            winner
        }
    }
}

/// Forget the cached pid. Call in the child after `fork` (the engine's `pthread_atfork` child
/// handler). Needed only on kernels without `MADV_WIPEONFORK` (< 4.14), harmless everywhere.
pub fn after_fork_child() {
    PID_FALLBACK.store(0, Relaxed);
    let cell = PID_CELL.load(Acquire);
    if !cell.is_null() {
        // SAFETY: see my_pid.
        unsafe { &*cell }.store(0, Relaxed);
    }
}

/// Is the process `pid` still running (not exited, not a zombie)? Slow path only.
fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > PID_MAX_LIMIT {
        return false; // not a pid: garbage in the lock word
    }
    // SAFETY: pidfd_open(pid, flags) takes no pointers; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0 as libc::c_uint) };
    if fd >= 0 {
        let fd = fd as libc::c_int;
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // A pidfd polls readable once the whole process has exited, reaped or not. Raw syscalls:
        // the intercept library hooks poll and close.
        // SAFETY: one valid pollfd and a valid timespec, no signal mask; then close our own fd.
        let n = unsafe {
            let n = libc::syscall(
                libc::SYS_ppoll,
                &mut pfd as *mut libc::pollfd,
                1 as libc::c_ulong,
                &zero as *const libc::timespec,
                ptr::null::<libc::sigset_t>(),
                0usize,
            );
            libc::syscall(libc::SYS_close, fd);
            n
        };
        return !(n == 1 && pfd.revents & libc::POLLIN != 0);
    }
    if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // No pidfds (Linux < 5.3, or filtered): kill(pid, 0), which counts a zombie as alive.
    // SAFETY: signal 0 sends nothing; pid is in 1..=PID_MAX_LIMIT (never 0 or -1).
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::panic::AssertUnwindSafe;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A unique path under /dev/shm, removed on drop (even if the test fails).
    struct TmpPath(PathBuf);

    impl TmpPath {
        fn new(name: &str) -> TmpPath {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Relaxed);
            TmpPath(PathBuf::from(format!("/dev/shm/accel-ringtest-{}-{}-{}", std::process::id(), n, name)))
        }
    }

    impl Drop for TmpPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn new_ring(name: &str, slots: u32, slot_size: u32) -> (TmpPath, Ring) {
        let p = TmpPath::new(name);
        let r = Ring::create(&p.0, slots, slot_size).expect("create");
        (p, r)
    }

    fn addr(i: u32) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8), (i % 65536) as u16)
    }

    fn pop_vec(r: &Ring) -> Option<(u64, SocketAddrV4, Vec<u8>)> {
        r.pop_with(|d| (d.cookie, d.src, d.payload.to_vec()))
    }

    /// Fork; the child runs `f` and exits with its code (101 if it panicked), never returning.
    fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
        // SAFETY: the child only runs `f` and then _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: leave without running the harness's (the parent's) atexit handlers or
            // destructors.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    fn wait_child(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: our own child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(libc::WIFEXITED(status), "child {pid} did not exit normally: {status:#x}");
        libc::WEXITSTATUS(status)
    }

    fn pipe() -> (i32, i32) {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid [c_int; 2].
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (fds[0], fds[1])
    }

    fn write_all(fd: i32, mut buf: &[u8]) {
        while !buf.is_empty() {
            // SAFETY: buf is a valid slice.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            assert!(n > 0, "write failed");
            buf = &buf[n as usize..];
        }
    }

    fn read_to_end(fd: i32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is a valid buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// A shared anonymous counter that survives fork (parent and children see one value).
    struct SharedCounter(*mut AtomicU64);

    impl SharedCounter {
        fn new() -> SharedCounter {
            // SAFETY: a fresh shared anonymous page.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            SharedCounter(p.cast())
        }
        fn get(&self) -> &AtomicU64 {
            // SAFETY: a zero-filled page, mapped until drop.
            unsafe { &*self.0 }
        }
    }

    impl Drop for SharedCounter {
        fn drop(&mut self) {
            // SAFETY: mapped in new.
            unsafe { libc::munmap(self.0.cast(), 4096) };
        }
    }

    // SAFETY: it is an atomic in a shared mapping.
    unsafe impl Sync for SharedCounter {}

    // ---- basics ------------------------------------------------------------------------------

    #[test]
    fn roundtrip_and_empty() {
        let (_p, r) = new_ring("roundtrip", 16, 2048);
        assert_eq!(r.capacity(), 16);
        assert_eq!(r.max_payload(), 2016);
        assert!(r.is_empty());
        assert!(r.peek().is_none());
        assert!(pop_vec(&r).is_none());
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 7, 9), 5353);
        assert_eq!(r.push(0xdead_beef_0000_0001, src, b"hello"), Ok(false));
        assert_eq!(r.push(7, addr(3), b""), Ok(false));
        assert_eq!(r.len(), 2);
        assert!(!r.is_empty());
        // peek does not consume
        let (pos, d) = r.peek().unwrap().unwrap();
        assert_eq!(pos, 0);
        assert_eq!(d.payload, b"hello");
        assert_eq!(r.len(), 2);
        assert_eq!(pop_vec(&r), Some((0xdead_beef_0000_0001, src, b"hello".to_vec())));
        assert_eq!(pop_vec(&r), Some((7, addr(3), vec![])));
        assert!(pop_vec(&r).is_none());
        assert!(r.is_empty());
        let s = r.stats();
        assert_eq!((s.published, s.consumed, s.head, s.tail, s.len), (2, 2, 2, 2, 0));
        assert_eq!(s.creator_pid, std::process::id());
        assert_eq!(s.lock_holder, 0);
        // a second mapping of the same file sees the same ring
        let r2 = Ring::open(&_p.0).unwrap();
        r2.push(9, addr(9), b"via r2").unwrap();
        assert_eq!(pop_vec(&r), Some((9, addr(9), b"via r2".to_vec())));
        assert_eq!(r2.creator_pid(), std::process::id());
    }

    #[test]
    fn init_file_zeroes_and_from_file_maps() {
        let p = TmpPath::new("initfile");
        std::fs::write(&p.0, vec![0xffu8; 10_000]).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&p.0).unwrap();
        let r = Ring::init_file(&f, 8, 256).unwrap();
        assert_eq!(std::fs::metadata(&p.0).unwrap().len(), 4096 + 8 * 256);
        assert_eq!(
            r.stats(),
            RingStats { capacity: 8, slot_size: 256, creator_pid: std::process::id(), ..RingStats::default() }
        );
        let r2 = Ring::from_file(&f).unwrap();
        drop(f);
        r.push(5, addr(5), b"via file").unwrap();
        assert_eq!(pop_vec(&r2), Some((5, addr(5), b"via file".to_vec())));
        assert_eq!(
            Ring::init_file(&File::open(&p.0).unwrap(), 8, 256).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn src_ip_is_network_order_in_the_slot() {
        let (_p, r) = new_ring("netorder", 8, 256);
        r.push(1, SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 0x1234), b"x").unwrap();
        let slot = r.slot_ptr(0);
        // SAFETY: slot 0 is in bounds.
        let (ip, port) = unsafe { (ptr::read(slot.add(12).cast::<[u8; 4]>()), ptr::read(slot.add(16).cast::<u16>())) };
        assert_eq!(ip, [1, 2, 3, 4]);
        assert_eq!(port, 0x1234);
    }

    #[test]
    fn full_counts_drops_and_never_blocks() {
        let (_p, r) = new_ring("full", 8, 256);
        for i in 0..8 {
            assert_eq!(r.push(i, addr(i as u32), &[i as u8; 10]), Ok(false));
        }
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(r.push(99, addr(0), b"no room"), Err(PushError::Full));
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        let s = r.stats();
        assert_eq!(s.drops_full, 100);
        assert_eq!(s.len, 8);
        assert_eq!(s.max_fill, 8);
        assert_eq!(s.lock_holder, 0);
        // one pop makes room for exactly one
        assert_eq!(pop_vec(&r).unwrap().0, 0);
        assert_eq!(r.push(8, addr(8), b"ok"), Ok(false));
        assert_eq!(r.push(9, addr(9), b"full again"), Err(PushError::Full));
        for i in 1..=8u64 {
            assert_eq!(pop_vec(&r).unwrap().0, i);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn too_big() {
        let (_p, r) = new_ring("toobig", 8, 256);
        assert_eq!(r.max_payload(), 224);
        assert_eq!(r.push(1, addr(1), &[0; 225]), Err(PushError::TooBig));
        assert_eq!(r.push(1, addr(1), &[0; 65536]), Err(PushError::TooBig));
        assert_eq!(r.push(1, addr(1), &[5; 224]), Ok(false));
        assert_eq!(pop_vec(&r).unwrap().2, vec![5; 224]);
        let s = r.stats();
        assert_eq!(s.drops_too_big, 2);
        assert_eq!(s.published, 1);
    }

    #[test]
    fn wraparound_many_laps_varying_sizes() {
        let (_p, r) = new_ring("laps", 8, 512);
        let max = r.max_payload();
        let mut model = VecDeque::new();
        let mut next = 0u64;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng % 3 < 2 {
                let len = (rng >> 8) as usize % (max + 1);
                let payload: Vec<u8> = (0..len).map(|i| (next as usize + i) as u8).collect();
                match r.push(next, addr(next as u32), &payload) {
                    Ok(_) => model.push_back((next, addr(next as u32), payload)),
                    Err(e) => {
                        assert_eq!(e, PushError::Full);
                        assert_eq!(model.len(), 8);
                    }
                }
                next += 1;
            } else {
                assert_eq!(pop_vec(&r), model.pop_front());
            }
        }
        while let Some(m) = model.pop_front() {
            assert_eq!(pop_vec(&r), Some(m));
        }
        assert!(r.is_empty());
        let s = r.stats();
        assert!(s.tail > 8 * 500, "only {} laps", s.tail / 8);
        assert_eq!(s.corrupt, 0);
        assert_eq!(s.published, s.consumed);
    }

    #[test]
    fn batch_push() {
        let (_p, r) = new_ring("batch", 8, 256);
        let big = [0u8; 300];
        let items: Vec<(u64, SocketAddrV4, &[u8])> =
            vec![(1, addr(1), b"one"), (2, addr(2), &big), (3, addr(3), b"three"), (4, addr(4), b"")];
        assert_eq!(r.push_batch(&items), (4, false));
        assert_eq!(r.push_batch(&[]), (0, false));
        let s = r.stats();
        assert_eq!((s.published, s.drops_too_big, s.drops_full), (3, 1, 0));
        // 5 free: a batch of 7 takes 5, refuses 2
        let seven: Vec<(u64, SocketAddrV4, &[u8])> = (10..17).map(|i| (i, addr(i as u32), &b"x"[..])).collect();
        assert_eq!(r.push_batch(&seven), (5, false));
        assert_eq!(r.stats().drops_full, 2);
        let got: Vec<u64> = std::iter::from_fn(|| pop_vec(&r).map(|m| m.0)).collect();
        assert_eq!(got, vec![1, 3, 4, 10, 11, 12, 13, 14]);
        assert_eq!(r.stats().max_fill, 8);
    }

    #[test]
    fn max_fill_is_a_high_water_mark() {
        let (_p, r) = new_ring("maxfill", 64, 256);
        for i in 0..5 {
            r.push(i, addr(0), b"a").unwrap();
        }
        assert_eq!(r.stats().max_fill, 5); // nobody popped yet: the current fill
        for _ in 0..5 {
            pop_vec(&r).unwrap();
        }
        assert_eq!(r.stats().max_fill, 5);
        for i in 0..3 {
            r.push(i, addr(0), b"a").unwrap();
            pop_vec(&r).unwrap();
        }
        assert_eq!(r.stats().max_fill, 5);
        // A fast-path pop samples the fill every FILL_SAMPLE positions: head is 8 here
        for i in 0..8 {
            r.push(i, addr(0), b"a").unwrap();
            pop_vec(&r).unwrap();
        }
        for i in 0..9 {
            r.push(i, addr(0), b"a").unwrap();
        }
        assert_eq!(r.stats().head, FILL_SAMPLE);
        pop_vec(&r).unwrap();
        assert_eq!(r.stats().max_fill, 9);
    }

    // ---- create / open validation ------------------------------------------------------------

    #[test]
    fn create_validates_and_is_exclusive() {
        for (slots, ss) in [
            (0, 2048),
            (7, 2048),
            (12, 2048),
            (4, 2048),
            (1 << 21, 2048),
            (8, 0),
            (8, 128),
            (8, 300),
            (8, 1 << 17),
            (u32::MAX, u32::MAX),
        ] {
            let p = TmpPath::new("badgeo");
            let e = Ring::create(&p.0, slots, ss).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{slots} {ss}");
            assert!(!p.0.exists());
        }
        let (p, _r) = new_ring("excl", 8, 256);
        assert_eq!(Ring::create(&p.0, 8, 256).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        // no temporary files left behind
        let leftovers = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&*p.0.file_name().unwrap().to_string_lossy()) && n.ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        let meta = std::fs::metadata(&p.0).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 4096 + 8 * 256);
        assert_eq!(
            Ring::open(Path::new("/dev/shm/accel-ringtest-does-not-exist")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    /// Write a file with a ring header of the given fields, padded to `size`.
    fn write_header_file(
        p: &Path,
        magic: u64,
        version: u32,
        slot_size: u32,
        slots: u32,
        header_size: u32,
        size: usize,
    ) {
        let mut b = vec![0u8; size.max(32)];
        b[0..8].copy_from_slice(&magic.to_ne_bytes());
        b[8..12].copy_from_slice(&version.to_ne_bytes());
        b[12..16].copy_from_slice(&slot_size.to_ne_bytes());
        b[16..20].copy_from_slice(&slots.to_ne_bytes());
        b[24..28].copy_from_slice(&header_size.to_ne_bytes());
        b.truncate(size);
        std::fs::write(p, b).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }

    #[test]
    fn open_rejects_corrupt_headers() {
        let ok = 4096 + 8 * 256;
        let cases: &[(&str, u64, u32, u32, u32, u32, usize)] = &[
            ("empty", MAGIC, VERSION, 256, 8, 4096, 0),
            ("short", MAGIC, VERSION, 256, 8, 4096, 100),
            ("almost-header", MAGIC, VERSION, 256, 8, 4096, 4095),
            ("slots-past-eof", MAGIC, VERSION, 256, 8, 4096, ok - 1),
            ("magic", MAGIC ^ 1, 1, 256, 8, 4096, ok),
            ("version", MAGIC, VERSION + 1, 256, 8, 4096, ok),
            ("slots0", MAGIC, VERSION, 256, 0, 4096, ok),
            ("slots7", MAGIC, VERSION, 256, 7, 4096, ok),
            ("slots-npot", MAGIC, VERSION, 256, 24, 4096, 4096 + 24 * 256),
            ("slots-huge", MAGIC, VERSION, 256, 1 << 21, 4096, ok),
            ("slots-max", MAGIC, VERSION, 256, u32::MAX, 4096, ok),
            ("slotsize0", MAGIC, VERSION, 0, 8, 4096, ok),
            ("slotsize-npot", MAGIC, VERSION, 300, 8, 4096, ok),
            ("slotsize-small", MAGIC, VERSION, 128, 8, 4096, ok),
            ("slotsize-huge", MAGIC, VERSION, 1 << 17, 8, 4096, ok),
            ("slotsize-max", MAGIC, VERSION, 1 << 31, 1 << 20, 4096, ok),
            ("geometry-past-eof", MAGIC, VERSION, 65536, 1 << 20, 4096, ok),
            ("header-size", MAGIC, VERSION, 256, 8, 8192, ok),
        ];
        for &(name, magic, version, ss, slots, hs, size) in cases {
            let p = TmpPath::new(name);
            write_header_file(&p.0, magic, version, ss, slots, hs, size);
            let e = Ring::open(&p.0).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{name}: {e}");
        }
        // and the same fields with a correct size open fine
        let p = TmpPath::new("valid");
        write_header_file(&p.0, MAGIC, VERSION, 256, 8, 4096, ok);
        let r = Ring::open(&p.0).unwrap();
        assert_eq!((r.capacity(), r.max_payload()), (8, 224));
        r.push(1, addr(1), b"works").unwrap();
        assert_eq!(pop_vec(&r).unwrap().2, b"works");
        // a larger file than needed is fine too
        let p = TmpPath::new("valid-bigger");
        write_header_file(&p.0, MAGIC, VERSION, 256, 8, 4096, ok + 12345);
        assert!(Ring::open(&p.0).is_ok());
        // not a regular file
        let d = TmpPath::new("dir");
        std::fs::create_dir(&d.0).unwrap();
        assert!(Ring::open(&d.0).is_err());
        std::fs::remove_dir(&d.0).unwrap();
    }

    #[test]
    fn open_refuses_symlinks_and_foreign_owners() {
        let (target, _r) = new_ring("symtarget", 8, 256);
        let link = TmpPath::new("symlink");
        std::os::unix::fs::symlink(&target.0, &link.0).unwrap();
        assert!(Ring::open(&link.0).is_err());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&target.0, Some(12345), None).unwrap();
            assert_eq!(Ring::open(&target.0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        }
    }

    #[test]
    fn corrupt_slots_are_skipped_and_counted() {
        let (_p, r) = new_ring("corruptslot", 8, 256);
        for i in 0..5u64 {
            r.push(i, addr(i as u32), &[i as u8; 20]).unwrap();
        }
        let (base, _) = r.test_raw();
        let slot = |i: usize| unsafe { base.add(4096 + i * 256) };
        // SAFETY: slots 1 and 3 are in bounds; this test is the only user of the ring.
        unsafe {
            ptr::write_volatile(slot(1).cast::<u64>(), 12345); // bad seq
            ptr::write_volatile(slot(3).add(8).cast::<u32>(), 225); // len > max payload
        }
        assert!(matches!(r.peek(), Some(Ok((0, _)))));
        assert_eq!(pop_vec(&r).unwrap().0, 0);
        assert_eq!(r.peek(), Some(Err(Corrupt { pos: 1 })));
        assert_eq!(pop_vec(&r).unwrap().0, 2);
        assert_eq!(pop_vec(&r).unwrap().0, 4);
        assert!(pop_vec(&r).is_none());
        let s = r.stats();
        assert_eq!((s.corrupt, s.skipped, s.consumed, s.published), (2, 2, 3, 5));
        // the ring keeps working over the bad slots
        for i in 0..16u64 {
            r.push(i, addr(0), b"again").unwrap();
            assert_eq!(pop_vec(&r).unwrap().0, i);
        }
        assert_eq!(r.stats().corrupt, 2);
    }

    #[test]
    fn corrupt_indices_resync() {
        let (_p, r) = new_ring("resync", 8, 256);
        r.push(1, addr(1), b"a").unwrap();
        // tail far ahead of head: producers see a full ring, a consumer resyncs
        r.hdr().tail.tail.store(1 << 40, SeqCst);
        assert_eq!(r.push(2, addr(2), b"b"), Err(PushError::Full));
        // the slot at head is intact and says so by its seq: delivered; then the next slot
        // looks unwritten, which is taken for empty until a periodic look at tail resyncs
        assert_eq!(pop_vec(&r).unwrap().0, 1);
        for _ in 0..IDLE_PEEKS_PER_TAIL {
            assert!(pop_vec(&r).is_none());
        }
        assert_eq!(r.stats().resyncs, 1);
        r.push(3, addr(3), b"c").unwrap();
        assert_eq!(pop_vec(&r).unwrap().0, 3);
        // head ahead of tail
        r.hdr().cons.head.store(u64::MAX - 3, SeqCst);
        let _ = r.push(4, addr(4), b"d"); // may fit by the producers' cached head; dropped by the resync
        for _ in 0..IDLE_PEEKS_PER_TAIL {
            assert!(pop_vec(&r).is_none());
        }
        r.push(5, addr(5), b"e").unwrap();
        assert_eq!(pop_vec(&r).unwrap().0, 5);
        assert_eq!(r.stats().resyncs, 2);
    }

    #[test]
    fn garbage_lock_word_is_stolen() {
        let (_p, r) = new_ring("garbagelock", 8, 256);
        for garbage in [u32::MAX, PID_MAX_LIMIT + 1] {
            r.hdr().prod.lock.store(garbage, SeqCst);
            assert_eq!(r.push(1, addr(1), b"x"), Ok(false));
            assert_eq!(r.stats().lock_holder, 0);
        }
        assert_eq!(r.stats().lock_steals, 2);
    }

    // ---- concurrency -------------------------------------------------------------------------

    fn seq_payload(producer: u32, seq: u32) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&producer.to_ne_bytes());
        b[4..8].copy_from_slice(&seq.to_ne_bytes());
        for (i, x) in b[8..].iter_mut().enumerate() {
            *x = (producer as usize * 31 + seq as usize + i) as u8;
        }
        b
    }

    /// Check a payload copied out by `pop_with`. Never inside the closure: with several consumers,
    /// the closure may see a slot that another consumer took and a producer is rewriting (torn);
    /// only a copy whose `consume` succeeded is a received datagram.
    fn parse_payload(b: &[u8]) -> (u32, u32) {
        assert_eq!(b.len(), 40);
        let p = u32::from_ne_bytes(b[0..4].try_into().unwrap());
        let s = u32::from_ne_bytes(b[4..8].try_into().unwrap());
        assert_eq!(b, &seq_payload(p, s)[..], "payload torn");
        (p, s)
    }

    /// Push until accepted (the ring may be full for a while).
    fn push_retry(r: &Ring, cookie: u64, payload: &[u8]) {
        loop {
            match r.push(cookie, addr(cookie as u32), payload) {
                Ok(_) => return,
                Err(PushError::Full) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn three_producer_threads_one_consumer() {
        const PER: u32 = 20_000;
        let (_p, r) = new_ring("mt", 64, 256);
        let r = Arc::new(r);
        let handles: Vec<_> = (0..3u32)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for s in 0..PER {
                        if s % 7 == 0 {
                            let a = seq_payload(p, s);
                            let items = [(p as u64, addr(p), &a[..])];
                            while r.push_batch(&items).0 == 0 {
                                std::thread::yield_now();
                            }
                        } else {
                            push_retry(&r, p as u64, &seq_payload(p, s));
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u32; 3];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        while got < 3 * PER {
            match r.pop_with(|d| (d.cookie, d.payload.to_vec())).map(|(c, b)| (c, parse_payload(&b))) {
                Some((cookie, (p, s))) => {
                    assert_eq!(cookie, p as u64);
                    assert_eq!(s, next[p as usize], "producer {p} out of order");
                    next[p as usize] += 1;
                    got += 1;
                }
                None => {
                    assert!(Instant::now() < deadline, "stuck at {got}");
                    std::thread::yield_now();
                }
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert!(r.is_empty());
        let s = r.stats();
        assert_eq!(s.published, 3 * PER as u64);
        assert_eq!(s.consumed, 3 * PER as u64);
        assert_eq!(s.lock_steals, 0);
        assert_eq!(s.corrupt, 0);
    }

    #[test]
    fn forked_producers_one_consumer() {
        const PER: u32 = 10_000;
        let (_p, r) = new_ring("mp", 32, 256);
        let kids: Vec<_> = (0..3u32)
            .map(|p| {
                fork_child(|| {
                    for s in 0..PER {
                        push_retry(&r, p as u64, &seq_payload(p, s));
                    }
                    0
                })
            })
            .collect();
        let mut next = [0u32; 3];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        while got < 3 * PER {
            match r.pop_with(|d| d.payload.to_vec()).map(|b| parse_payload(&b)) {
                Some((p, s)) => {
                    assert_eq!(s, next[p as usize], "producer {p} out of order");
                    next[p as usize] += 1;
                    got += 1;
                }
                None => {
                    assert!(Instant::now() < deadline, "stuck at {got}");
                    std::thread::yield_now();
                }
            }
        }
        for k in kids {
            assert_eq!(wait_child(k), 0);
        }
        assert!(r.is_empty());
        assert_eq!(r.stats().lock_steals, 0);
    }

    #[test]
    fn two_consumers_across_fork_each_datagram_once() {
        const N: u32 = 30_000;
        let (_p, r) = new_ring("mc", 64, 256);
        let total = SharedCounter::new();
        let (rd, wr) = pipe();
        let consume_until_done = |mine: &mut Vec<u32>| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while total.get().load(SeqCst) < N as u64 {
                match r.pop_with(|d| d.payload.to_vec()).map(|b| parse_payload(&b)) {
                    Some((_, s)) => {
                        mine.push(s);
                        total.get().fetch_add(1, SeqCst);
                    }
                    None => {
                        assert!(Instant::now() < deadline, "consumer stuck");
                        std::thread::yield_now();
                    }
                }
            }
        };
        let mut child_ids = Vec::with_capacity(N as usize);
        let kid = fork_child(|| {
            // SAFETY: the read end belongs to the parent.
            unsafe { libc::close(rd) };
            consume_until_done(&mut child_ids);
            let bytes: Vec<u8> = child_ids.iter().flat_map(|s| s.to_ne_bytes()).collect();
            write_all(wr, &bytes);
            0
        });
        // SAFETY: the write end belongs to the child.
        unsafe { libc::close(wr) };
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for s in 0..N {
                    push_retry(&r, 0, &seq_payload(0, s));
                }
            });
            let mut mine = Vec::with_capacity(N as usize);
            consume_until_done(&mut mine);
            let theirs: Vec<u32> =
                read_to_end(rd).chunks(4).map(|c| u32::from_ne_bytes(c.try_into().unwrap())).collect();
            // SAFETY: our fd.
            unsafe { libc::close(rd) };
            assert_eq!(wait_child(kid), 0);
            // each consumer sees its share in order
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
            assert!(theirs.windows(2).all(|w| w[0] < w[1]));
            let mut all: Vec<u32> = mine.iter().chain(theirs.iter()).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..N).collect::<Vec<_>>(), "parent {} child {}", mine.len(), theirs.len());
            eprintln!("two consumers: parent {} child {}", mine.len(), theirs.len());
        });
        assert!(r.is_empty());
    }

    #[test]
    fn crashed_lock_holder_is_robbed_and_half_slot_never_seen() {
        let (_p, r) = new_ring("crash", 8, 256);
        r.push(1, addr(1), b"before").unwrap();
        // The child dies inside the critical section; it stays an unreaped zombie until we wait.
        let kid = fork_child(|| {
            r.test_lock_and_scribble();
            0
        });
        // wait until it is dead but do not reap it: the holder is a zombie
        let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
        // SAFETY: valid siginfo out-pointer; WNOWAIT leaves the child waitable.
        let w = unsafe { libc::waitid(libc::P_PID, kid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        assert_eq!(w, 0);
        assert_eq!(r.stats().lock_holder, kid as u32);
        assert!(!process_alive(kid as u32), "a zombie must count as dead");
        let t = Instant::now();
        assert_eq!(r.push(2, addr(2), b"after"), Ok(false));
        assert!(t.elapsed() < Duration::from_secs(5));
        let s = r.stats();
        assert_eq!(s.lock_steals, 1);
        assert_eq!(s.lock_holder, 0);
        assert_eq!(pop_vec(&r), Some((1, addr(1), b"before".to_vec())));
        assert_eq!(pop_vec(&r), Some((2, addr(2), b"after".to_vec())));
        assert!(pop_vec(&r).is_none());
        assert_eq!(wait_child(kid), 0);
        // reaped: ESRCH path; do it again with a fully gone holder
        let kid = fork_child(|| {
            r.test_lock_and_scribble();
            0
        });
        assert_eq!(wait_child(kid), 0);
        assert!(!process_alive(kid as u32));
        r.push(3, addr(3), b"again").unwrap();
        assert_eq!(r.stats().lock_steals, 2);
        assert_eq!(pop_vec(&r).unwrap().2, b"again");
        // and the ring keeps working, many laps later
        for i in 0..100u64 {
            r.push(i, addr(0), &[i as u8; 30]).unwrap();
            assert_eq!(pop_vec(&r), Some((i, addr(0), vec![i as u8; 30])));
        }
        assert_eq!(r.stats().corrupt, 0);
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn holder_killed_between_seq_and_tail_store_delivers_once() {
        // The dead holder's datagrams are complete (seq is stored last): whether a consumer takes
        // them before or after the next producer steals the lock, each arrives exactly once and
        // the ring goes on.
        for consume_first in [true, false] {
            let (_p, r) = new_ring("seqcrash", 8, 256);
            r.push(1, addr(1), b"before").unwrap();
            let kid = fork_child(|| {
                r.test_lock_and_publish_by_seq(&[b"dead-1", b"dead-2"]);
                0
            });
            assert_eq!(wait_child(kid), 0);
            assert_eq!(r.stats().tail, 1, "the tail store never happened");
            let mut got = Vec::new();
            if consume_first {
                while let Some((_, _, p)) = pop_vec(&r) {
                    got.push(p);
                }
                assert_eq!(r.stats().head, 3, "head is ahead of tail");
                assert!(r.is_empty());
                assert_eq!(r.len(), 0);
            }
            r.push(2, addr(2), b"after").unwrap();
            let s = r.stats();
            assert_eq!((s.lock_steals, s.tail_repairs, s.tail), (1, 1, 4));
            while let Some((_, _, p)) = pop_vec(&r) {
                got.push(p);
            }
            assert_eq!(got, [&b"before"[..], b"dead-1", b"dead-2", b"after"], "consume_first {consume_first}");
            for i in 0..40u64 {
                r.push(i, addr(0), &[i as u8; 30]).unwrap();
                assert_eq!(pop_vec(&r), Some((i, addr(0), vec![i as u8; 30])));
            }
            let s = r.stats();
            assert_eq!((s.corrupt, s.resyncs, s.drops_full), (0, 0, 0));
        }
    }

    #[test]
    fn head_ahead_of_tail_is_empty_then_recovers() {
        // A scribbled head a little ahead of tail: consumers see an empty ring (no resync, which
        // would move head back). Producers go on at tail (their cached head shows room) and at
        // most one lap of datagrams is lost before head and tail meet again; a producer that
        // reads the real head ahead of tail moves tail up to it.
        let (_p, r) = new_ring("headahead", 8, 256);
        r.push(1, addr(1), b"a").unwrap();
        assert_eq!(pop_vec(&r).unwrap().0, 1);
        r.hdr().cons.head.store(5, SeqCst);
        assert!(pop_vec(&r).is_none());
        assert!(r.is_empty());
        assert_eq!(r.stats().resyncs, 0);
        let mut lost = 0;
        for i in 0..40u64 {
            assert_eq!(r.push(i, addr(0), b"b"), Ok(false));
            match pop_vec(&r) {
                Some((c, _, _)) => assert_eq!(c, i),
                None => {
                    assert!(i < 8, "datagram {i} lost after a lap");
                    lost += 1;
                }
            }
        }
        assert!(lost <= 8);
        // the producer-side repair: head ahead of tail when a producer reads the real head
        r.hdr().cons.head.store(r.stats().tail + 3, SeqCst);
        r.hdr().prod.head_cache.store(r.stats().tail + 3, SeqCst);
        assert_eq!(r.push(9, addr(0), b"c"), Ok(false));
        assert_eq!(pop_vec(&r).unwrap().0, 9);
        let s = r.stats();
        assert_eq!((s.tail_repairs, s.drops_full, s.resyncs), (1, 0, 0));
    }

    #[test]
    fn pid_cache_follows_fork() {
        let parent = my_pid();
        assert_eq!(parent, std::process::id());
        let (rd, wr) = pipe();
        let kid = fork_child(|| {
            // no after_fork_child(): the wipe-on-fork page alone must do it
            write_all(wr, &my_pid().to_ne_bytes());
            0
        });
        // SAFETY: ours.
        unsafe { libc::close(wr) };
        let got = read_to_end(rd);
        // SAFETY: ours.
        unsafe { libc::close(rd) };
        assert_eq!(got, (kid as u32).to_ne_bytes());
        assert_eq!(wait_child(kid), 0);
        assert_eq!(my_pid(), parent);
        after_fork_child();
        assert_eq!(my_pid(), parent);
    }

    // ---- wakeups -----------------------------------------------------------------------------

    #[test]
    fn prepare_sleep_and_doorbell_once() {
        let (_p, r) = new_ring("bell", 8, 256);
        // A per-socket sleeper is rung once, by the first publish for its cookie only.
        assert_eq!(r.prepare_sleep_for(7), SleepTicket::Slot(0));
        assert!(r.stats().waiters);
        assert_eq!(r.push(2, addr(2), b"other"), Ok(false), "not for the sleeper");
        pop_vec(&r).unwrap();
        assert_eq!(r.push(7, addr(1), b"a"), Ok(true));
        assert_eq!(r.push(7, addr(1), b"b"), Ok(false), "registration taken: once");
        assert_eq!(r.stats().doorbells, 1);
        assert!(!r.stats().waiters);
        // data present: do not sleep, nothing stays registered
        assert_eq!(r.prepare_sleep_for(7), SleepTicket::DataPresent);
        assert!(!r.stats().waiters);
        while pop_vec(&r).is_some() {}
        // a cancelled registration is not rung
        let t = r.prepare_sleep_for(7);
        r.cancel_sleep_for(t, 7);
        assert_eq!(r.push(7, addr(4), b"d"), Ok(false));
        pop_vec(&r).unwrap();
        // two sockets sleeping on one shared ring are each rung for their own datagram
        let (t8, t9) = (r.prepare_sleep_for(8), r.prepare_sleep_for(9));
        assert_eq!(r.push(9, addr(1), b"x"), Ok(true));
        assert_eq!(r.push(8, addr(1), b"y"), Ok(true));
        r.cancel_sleep_for(t8, 8);
        r.cancel_sleep_for(t9, 9);
        while pop_vec(&r).is_some() {}
        // more sleepers than slots fall back to ring-wide requests, still rung
        let tickets: Vec<_> = (100..100 + SLEEPER_SLOTS as u64 + 2).map(|c| (c, r.prepare_sleep_for(c))).collect();
        assert_eq!(tickets.last().unwrap().1, SleepTicket::Any);
        assert_eq!(r.push(5000, addr(1), b"z"), Ok(true), "ring-wide sleepers hear every publish");
        for (c, t) in tickets {
            r.cancel_sleep_for(t, c);
        }
        assert!(!r.stats().waiters);
        pop_vec(&r).unwrap();
        // Ring-wide sleepers (poll/epoll) are a count: one leaving keeps the other's request.
        assert!(r.prepare_sleep());
        assert!(r.prepare_sleep());
        r.cancel_sleep();
        assert_eq!(r.push(1, addr(1), b"w"), Ok(true));
        assert_eq!(r.push(2, addr(1), b"v"), Ok(true), "every publish while one is counted");
        r.cancel_sleep();
        assert_eq!(r.push(3, addr(1), b"u"), Ok(false));
        // a refused push rings nobody
        while pop_vec(&r).is_some() {}
        assert!(r.prepare_sleep());
        assert_eq!(r.push(5, addr(5), &[0; 1000]), Err(PushError::TooBig));
        assert_eq!(r.stats().doorbells, 6);
        r.cancel_sleep();
    }

    fn poll_in(fd: i32, ms: i32) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    #[test]
    fn no_lost_wakeups_stress() {
        const N: u64 = 10_000;
        let (_p, r) = new_ring("wakestress", 16, 256);
        let (rd, wr) = pipe();
        let done = AtomicBool::new(false);
        let rung = AtomicU64::new(0);
        let (sleeps, aborted) = std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut rng = 12345u64;
                for i in 0..N {
                    loop {
                        match r.push(i, addr(0), &i.to_ne_bytes()) {
                            Ok(bell) => {
                                if bell {
                                    rung.fetch_add(1, SeqCst);
                                    write_all(wr, b"!");
                                }
                                break;
                            }
                            Err(PushError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    // vary the pace so that the consumer often goes to sleep
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    match rng % 4 {
                        0 => std::thread::yield_now(),
                        1 => {
                            for _ in 0..(rng >> 40) % 2000 {
                                core::hint::spin_loop()
                            }
                        }
                        _ => {}
                    }
                }
                done.store(true, SeqCst);
            });
            let mut expect = 0u64;
            let (mut sleeps, mut aborted) = (0u64, 0u64);
            while expect < N {
                while let Some(v) = r.pop_with(|d| u64::from_ne_bytes(d.payload.try_into().unwrap())) {
                    assert_eq!(v, expect);
                    expect += 1;
                }
                if expect == N {
                    break;
                }
                if !r.prepare_sleep() {
                    aborted += 1;
                } else {
                    sleeps += 1;
                    // a lost wakeup shows up as this timeout, not as a hang
                    assert!(poll_in(rd, 5000), "lost wakeup after {expect} datagrams (done={})", done.load(SeqCst));
                    r.cancel_sleep();
                    // Every doorbell rung so far: a producer may ring again between our wakeup
                    // and the cancel (a spurious, harmless doorbell).
                    while poll_in(rd, 0) {
                        let mut b = [0u8; 64];
                        // SAFETY: valid buffer; the pipe is readable.
                        unsafe { libc::read(rd, b.as_mut_ptr().cast(), b.len()) };
                    }
                }
            }
            (sleeps, aborted)
        });
        // SAFETY: our fds.
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        let s = r.stats();
        eprintln!("wakeup stress: {sleeps} sleeps, {aborted} aborted, {} doorbells", s.doorbells);
        assert!(sleeps > 0);
        // Every sleep was ended by a doorbell (else the poll above timed out), and the ring counts
        // exactly the doorbells producers were told to ring. More doorbells than sleeps is
        // allowed: a producer may ring for a request that its consumer withdrew a moment later
        // (prepare_sleep saw data, or it had just woken).
        assert_eq!(s.doorbells, rung.load(SeqCst));
        assert!(s.doorbells >= sleeps, "{} doorbells for {sleeps} sleeps", s.doorbells);
    }

    // ---- property tests ----------------------------------------------------------------------

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Push(u64, u16, usize),
            Batch(Vec<(u64, u16, usize)>),
            Pop,
            Peek,
            Sleep,
            Cancel,
        }

        fn op() -> impl Strategy<Value = Op> {
            let item = (any::<u64>(), any::<u16>(), prop_oneof![0..=224usize, 225..400usize]);
            prop_oneof![
                4 => item.clone().prop_map(|(c, p, l)| Op::Push(c, p, l)),
                2 => proptest::collection::vec(item, 0..12).prop_map(Op::Batch),
                4 => Just(Op::Pop),
                1 => Just(Op::Peek),
                1 => Just(Op::Sleep),
                1 => Just(Op::Cancel),
            ]
        }

        fn payload(n: u64, len: usize) -> Vec<u8> {
            (0..len).map(|i| (n as usize).wrapping_mul(7).wrapping_add(i) as u8).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            #[test]
            fn behaves_like_a_bounded_queue(ops in proptest::collection::vec(op(), 1..200)) {
                let (_p, r) = new_ring("prop-model", 8, 256);
                let mut model: VecDeque<(u64, SocketAddrV4, Vec<u8>)> = VecDeque::new();
                // `waiting`: ring-wide sleepers (a count; a publish rings while it is non-zero).
                let (mut full, mut big, mut waiting, mut bells, mut n) = (0u64, 0u64, 0u32, 0u64, 0u64);
                for op in ops {
                    match op {
                        Op::Push(c, port, len) => {
                            n += 1;
                            let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, (n % 256) as u8), port);
                            let pl = payload(n, len);
                            let got = r.push(c, src, &pl);
                            if len > 224 {
                                big += 1;
                                prop_assert_eq!(got, Err(PushError::TooBig));
                            } else if model.len() == 8 {
                                full += 1;
                                prop_assert_eq!(got, Err(PushError::Full));
                            } else {
                                model.push_back((c, src, pl));
                                prop_assert_eq!(got, Ok(waiting > 0));
                                bells += u64::from(waiting > 0);
                            }
                        }
                        Op::Batch(items) => {
                            let owned: Vec<(u64, SocketAddrV4, Vec<u8>)> = items.iter().map(|&(c, port, len)| {
                                n += 1;
                                (c, SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, (n % 256) as u8), port), payload(n, len))
                            }).collect();
                            let refs: Vec<(u64, SocketAddrV4, &[u8])> = owned.iter().map(|(c, s, p)| (*c, *s, &p[..])).collect();
                            let (taken, bell) = r.push_batch(&refs);
                            let mut want_taken = 0;
                            let mut pushed = false;
                            let mut last = None;
                            for (c, s, p) in &owned {
                                if p.len() > 224 {
                                    big += 1;
                                } else if model.len() == 8 {
                                    break;
                                } else {
                                    model.push_back((*c, *s, p.clone()));
                                    pushed = true;
                                    // one wake check per run of equal cookies
                                    if last != Some(*c) && waiting > 0 {
                                        bells += 1;
                                    }
                                    last = Some(*c);
                                }
                                want_taken += 1;
                            }
                            full += (owned.len() - want_taken) as u64;
                            prop_assert_eq!(taken, want_taken);
                            prop_assert_eq!(bell, pushed && waiting > 0);
                        }
                        Op::Pop => prop_assert_eq!(pop_vec(&r), model.pop_front()),
                        Op::Peek => {
                            let got = r.peek().map(|x| x.map(|(_, d)| (d.cookie, d.src, d.payload.to_vec())).unwrap());
                            prop_assert_eq!(got.as_ref(), model.front());
                        }
                        Op::Sleep => {
                            let may = r.prepare_sleep();
                            prop_assert_eq!(may, model.is_empty());
                            waiting += u32::from(may);
                        }
                        Op::Cancel => {
                            r.cancel_sleep();
                            waiting = waiting.saturating_sub(1);
                        }
                    }
                    prop_assert_eq!(r.len(), model.len() as u64);
                    prop_assert_eq!(r.is_empty(), model.is_empty());
                }
                let s = r.stats();
                prop_assert_eq!(s.drops_full, full);
                prop_assert_eq!(s.drops_too_big, big);
                prop_assert_eq!(s.doorbells, bells);
                prop_assert_eq!(s.waiters, waiting > 0);
                prop_assert_eq!(s.corrupt, 0);
                prop_assert_eq!(s.published - s.consumed, model.len() as u64);
            }

            #[test]
            fn garbage_in_the_mapping_never_panics(
                pushes in 0..20usize,
                patches in proptest::collection::vec((0..(4096 + 8 * 512usize), proptest::collection::vec(any::<u8>(), 1..64)), 1..40),
                header_only in any::<bool>(),
            ) {
                let (p, r) = new_ring("prop-garbage", 8, 512);
                for i in 0..pushes {
                    let _ = r.push(i as u64, addr(i as u32), &payload(i as u64, i * 37 % 480));
                    if i % 3 == 0 {
                        pop_vec(&r);
                    }
                }
                let (base, len) = r.test_raw();
                for (off, bytes) in &patches {
                    let off = if header_only { off % 512 } else { *off };
                    let n = bytes.len().min(len - off);
                    // SAFETY: off + n <= len, inside the mapping.
                    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(off), n) };
                }
                for ring in [Ring::open(&p.0).ok(), Some(r)].into_iter().flatten() {
                    let max = ring.max_payload();
                    for _ in 0..40 {
                        match ring.peek() {
                            Some(Ok((_, d))) => prop_assert!(d.payload.len() <= max),
                            Some(Err(c)) => { ring.skip(c); }
                            None => {}
                        }
                        if let Some(l) = ring.pop_with(|d| d.payload.len()) {
                            prop_assert!(l <= max);
                        }
                    }
                    let s = ring.stats();
                    prop_assert!(s.len <= s.capacity as u64);
                    let _ = ring.len();
                    let _ = ring.is_empty();
                    if ring.prepare_sleep() {
                        ring.cancel_sleep();
                    }
                    // producing needs a lock word that is free or held by a dead "pid"
                    let holder = s.lock_holder;
                    if holder == 0 || !process_alive(holder) {
                        let _ = ring.push(1, addr(1), b"after garbage");
                        let _ = ring.push_batch(&[(2, addr(2), b"x"), (3, addr(3), &[0; 600])]);
                        for _ in 0..20 {
                            if let Some(l) = ring.pop_with(|d| d.payload.len()) {
                                prop_assert!(l <= max);
                            }
                        }
                    }
                }
            }

            #[test]
            fn open_never_panics_on_random_files(
                bytes in proptest::collection::vec(any::<u8>(), 0..9000),
                keep_magic in any::<bool>(),
                geo in (any::<u32>(), any::<u32>(), prop_oneof![Just(8u32), Just(16), any::<u32>()], prop_oneof![Just(256u32), Just(512), any::<u32>()]),
            ) {
                let p = TmpPath::new("prop-open");
                let mut b = bytes;
                if keep_magic && b.len() >= 28 {
                    b[0..8].copy_from_slice(&MAGIC.to_ne_bytes());
                    b[8..12].copy_from_slice(&(if geo.0 % 4 == 0 { geo.0 } else { VERSION }).to_ne_bytes());
                    b[12..16].copy_from_slice(&geo.3.to_ne_bytes());
                    b[16..20].copy_from_slice(&geo.2.to_ne_bytes());
                    b[24..28].copy_from_slice(&(if geo.1 % 4 == 0 { geo.1 } else { 4096 }).to_ne_bytes());
                }
                std::fs::write(&p.0, &b).unwrap();
                if let Ok(r) = Ring::open(&p.0) {
                    prop_assert!(4096 + r.capacity() as usize * r.slot_size() as usize <= b.len());
                    for _ in 0..10 {
                        if let Some(l) = r.pop_with(|d| d.payload.len()) {
                            prop_assert!(l <= r.max_payload());
                        }
                    }
                }
            }
        }
    }

    // ---- timing (cargo test --release -- --ignored --nocapture timing) -------------------------

    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds for small cpu numbers.
        unsafe {
            let mut set: libc::cpu_set_t = core::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    #[test]
    #[ignore]
    fn timing() {
        let (_p, r) = new_ring("timing", 1024, 2048);
        let payload = [7u8; 64];
        let mut buf = [0u8; 2048];
        let src = addr(1);
        const N: u64 = 5_000_000;
        for _ in 0..1000 {
            r.push(1, src, &payload).unwrap();
            r.pop_with(|d| buf[..d.payload.len()].copy_from_slice(d.payload)).unwrap();
        }
        let t = Instant::now();
        for i in 0..N {
            r.push(i, src, &payload).unwrap();
            let n = r.pop_with(|d| {
                buf[..d.payload.len()].copy_from_slice(d.payload);
                d.payload.len()
            });
            std::hint::black_box(n);
        }
        let per = t.elapsed().as_nanos() as f64 / N as f64;
        eprintln!("single thread push+pop (64 B): {per:.1} ns");

        let t = Instant::now();
        for _ in 0..N / 32 {
            let items = [(1u64, src, &payload[..]); 32];
            r.push_batch(&items);
            for _ in 0..32 {
                std::hint::black_box(r.pop_with(|d| {
                    buf[..d.payload.len()].copy_from_slice(d.payload);
                    d.payload.len()
                }));
            }
        }
        let per = t.elapsed().as_nanos() as f64 / (N / 32 * 32) as f64;
        eprintln!("push_batch(32) + 32 pops (64 B): {per:.1} ns per datagram");

        // cross-process ping-pong: parent pushes into A, child echoes from A into B
        let (_pa, a) = new_ring("timing-a", 1024, 2048);
        let (_pb, b) = new_ring("timing-b", 1024, 2048);
        const RT: u64 = 200_000;
        let kid = fork_child(|| {
            pin(1);
            for _ in 0..RT + 1000 {
                let v = loop {
                    if let Some(v) = a.pop_with(|d| d.cookie) {
                        break v;
                    }
                    core::hint::spin_loop();
                };
                b.push(v, src, &payload).unwrap();
            }
            0
        });
        pin(0);
        let rtt = |n: u64| {
            for i in 0..n {
                a.push(i, src, &payload).unwrap();
                loop {
                    if let Some(v) = b.pop_with(|d| d.cookie) {
                        assert_eq!(v, i);
                        break;
                    }
                    core::hint::spin_loop();
                }
            }
        };
        rtt(1000);
        let t = Instant::now();
        rtt(RT);
        let one_way = t.elapsed().as_nanos() as f64 / RT as f64 / 2.0;
        assert_eq!(wait_child(kid), 0);
        eprintln!("two processes, ping-pong (64 B): {one_way:.0} ns one way");
    }
}
