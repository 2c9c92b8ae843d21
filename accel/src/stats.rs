//! The stats block: what `accel stat` and `accel capture` read about a running process.
//!
//! Each process with a datapath on publishes one file in the per-user registry directory (the
//! same directory as the shm registry: `/dev/shm/accel-<uid>/`, or `$ACCEL_SHM_DIR`):
//!
//! ```text
//! stats-<pid>      0600, FILE_LEN bytes, mapped MAP_SHARED; sparse until used
//!   header         HEADER_LEN: magic, version, sizes, pid, start time, program, cmdline, config
//!   sockets        SOCKET_SLOTS × SOCKET_SLOT_LEN: one slot per tracked socket
//!   rings          RING_SLOTS × RING_SLOT_LEN: the rings this process created
//!   capture        control words + CAPTURE_SLOTS × CAPTURE_SLOT_LEN records (accel capture)
//! ```
//!
//! The file is created under a temporary name with its header complete, then renamed into place,
//! so a reader never sees a half-made header; the header never changes afterwards (except the
//! `overflow` and `zeroed` words, the per-process drops and the AF_XDP queue list and its
//! per-queue counters, which are atomics).
//!
//! **Sockets.** Every [`Socket`] gets a slot when it is created ([`SocketStats::claim`]); its
//! `counters` field *is* the slot's [`Counters`], so the datapath's `s.counters.x.fetch_add(1,
//! Relaxed)` writes straight into shared memory: no lock, no system call. When the table is full
//! or there is no block, the counters live on the heap instead (counted in the header's
//! `overflow`). A slot's description (fd, addresses, decision, ring) is written by its process on
//! control calls ([`publish`]) under a seqlock: `seq` is odd while a write is in progress and
//! grows with every write, so a reader that sees the same even `seq` before and after its copy has
//! a consistent entry, and a slot that was released and claimed again reads as a new generation.
//!
//! A socket decided "kernel" leaves the fd table (it costs nothing from then on), so we never see
//! it closed. Its slot stays *detached*: still listed, with the fd and the socket's inode, and
//! shown by readers only while `/proc/<pid>/fd/<fd>` still names that socket. Its slot is reused
//! when the fd number is reused or the table is full.
//!
//! **Life.** The block goes at exit ([`shutdown`], from the engine's atexit handler). A process
//! killed without running it leaves its block behind: readers recognise it as stale — the pid is
//! gone, or alive with another start time (pid reuse; the start time is field 22 of
//! `/proc/<pid>/stat`) — and remove it; so does the next process that creates its own block.
//! A forked child keeps counting its inherited sockets in its parent's slots (the socket is
//! shared) and makes its own block for sockets it creates; an exec'd image replaces the block of
//! the image before it (same pid).
//!
//! **Capture.** While `accel capture` holds the capture word (its pid), the datapath copies each
//! datagram it moves through shared memory into the capture ring ([`capture_tx`],
//! [`capture_rx`]); otherwise the cost is two relaxed loads. Producers never wait: a reader that
//! falls behind loses records and is told how many.
//!
//! Everything a reader takes from a file is bounds-checked; a corrupt block yields errors or
//! empty fields, never a crash.

use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::shm::registry;
use crate::socket::{Counters, Proto, Socket};
use crate::vi::{FilterState, RxBinding};

pub const MAGIC: &[u8; 8] = b"ACCELST1";
pub const VERSION: u32 = 1;

pub const HEADER_LEN: usize = 16384;
pub const SOCKET_SLOTS: usize = 256;
pub const SOCKET_SLOT_LEN: usize = 512;
pub const RING_SLOTS: usize = 64;
pub const RING_SLOT_LEN: usize = 128;
pub const CAPTURE_SLOTS: usize = 1024;
pub const CAPTURE_SLOT_LEN: usize = 2048;
/// Bytes of payload a capture record keeps; longer datagrams are truncated (pcap `caplen`).
pub const CAPTURE_SNAPLEN: usize = CAPTURE_SLOT_LEN - CAPTURE_DATA_OFF;

const SOCKETS_OFF: usize = HEADER_LEN;
const RINGS_OFF: usize = SOCKETS_OFF + SOCKET_SLOTS * SOCKET_SLOT_LEN;
const CAPTURE_CTL_OFF: usize = RINGS_OFF + RING_SLOTS * RING_SLOT_LEN;
const CAPTURE_OFF: usize = CAPTURE_CTL_OFF + 4096;
pub const FILE_LEN: usize = CAPTURE_OFF + CAPTURE_SLOTS * CAPTURE_SLOT_LEN;

// Header offsets.
const H_VERSION: usize = 8;
const H_FILE_LEN: usize = 12;
const H_HEADER_LEN: usize = 16;
const H_SOCKET_SLOTS: usize = 20;
const H_SOCKET_SLOT_LEN: usize = 24;
const H_RING_SLOTS: usize = 28;
const H_RING_SLOT_LEN: usize = 32;
const H_CAPTURE_SLOTS: usize = 36;
const H_CAPTURE_SLOT_LEN: usize = 40;
const H_COUNTERS_LEN: usize = 44;
const H_PID: usize = 48;
const H_UID: usize = 52;
const H_START_TIME: usize = 56;
const H_CREATED_MS: usize = 64;
const H_NETNS: usize = 72;
const H_DATAPATHS: usize = 80;
const H_OVERFLOW: usize = 88;
const H_ZEROED_MS: usize = 96;
/// Per-process drops by [`DropCause`] (5 words).
const H_PROC_DROPS: usize = 104;
/// The AF_XDP port's receive queues: how many are listed (at most [`XDP_QUEUE_SLOTS`]), then
/// their ids, one byte each (3 words); written once, when the port opens. Words that were
/// unused (zero) in blocks of builds before multi-queue, which therefore list no queue: the
/// layout, and VERSION, are unchanged.
const H_XDP_QUEUES: usize = 144;
/// Frames received on each listed queue (one word each), in the order of the ids.
const H_XDP_QUEUE_FRAMES: usize = 320;
/// How many queues the header has room for.
pub const XDP_QUEUE_SLOTS: usize = 24;
const _: () = assert!(H_XDP_QUEUES + 4 * 8 <= 256 && H_XDP_QUEUE_FRAMES >= 256 + 64);
const _: () = assert!(H_XDP_QUEUE_FRAMES + XDP_QUEUE_SLOTS * 8 <= 512);
const H_PROGRAM: (usize, usize) = (256, 64);
const H_CMDLINE: (usize, usize) = (512, 4096);
const H_CONFIG: (usize, usize) = (4608, HEADER_LEN - 4608);

/// Bit of the header's `datapaths` word: the shm datapath is on in this process.
pub const DATAPATH_SHM: u64 = 1;
pub const DATAPATH_XDP: u64 = 2;
pub const DATAPATH_EFVI: u64 = 4;

/// The names of the datapaths in a header's datapath bits.
pub fn datapath_names(bits: u64) -> Vec<&'static str> {
    [(DATAPATH_SHM, "shm"), (DATAPATH_XDP, "xdp"), (DATAPATH_EFVI, "efvi")]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

// Socket slot: seq, META_WORDS words of description, then the counters.
const META_WORDS: usize = 31;
const COUNTERS_OFF: usize = 256;
const REASON_WORDS: (usize, usize) = (5, 12);
const RING_WORDS: (usize, usize) = (17, 8);
const VI_WORDS: (usize, usize) = (25, 4);

const _: () = assert!(8 + META_WORDS * 8 <= COUNTERS_OFF);
const _: () = assert!(COUNTERS_OFF + core::mem::size_of::<Counters>() <= SOCKET_SLOT_LEN);
const _: () = assert!(core::mem::size_of::<Counters>() == COUNTER_NAMES.len() * 8);

/// Slot states (low byte of meta word 0).
pub const FREE: u8 = 0;
pub const OPEN: u8 = 1;
/// Decided "kernel" and no longer tracked: listed while its fd still names the socket.
pub const DETACHED: u8 = 2;

/// Verdicts (second byte of meta word 0).
pub const VERDICT_NONE: u8 = 0;
pub const VERDICT_ACCEL: u8 = 1;
pub const VERDICT_KERNEL: u8 = 2;

/// Flags (fourth byte of meta word 0).
pub const F_NONBLOCKING: u8 = 1;
/// The socket has a shm receive binding (ring) in force.
pub const F_RX_BOUND: u8 = 2;
/// The socket had a receive binding and went back to the kernel for receiving.
pub const F_RX_OFF: u8 = 4;

// Capture control words and records.
const C_OWNER: usize = 0;
const C_TAIL: usize = 8;
const CAPTURE_DATA_OFF: usize = 64;
/// Direction of a capture record.
pub const DIR_TX: u8 = 1;
pub const DIR_RX: u8 = 2;
const BUSY: u64 = 1 << 63;

/// The names of [`Counters`]' fields, in memory order (what `accel stat --json` prints).
pub const COUNTER_NAMES: [&str; 19] = [
    "kernel_rx_packets",
    "kernel_rx_bytes",
    "kernel_tx_packets",
    "kernel_tx_bytes",
    "eagain",
    "shm_rx_packets",
    "shm_rx_bytes",
    "shm_tx_packets",
    "shm_tx_bytes",
    "drop_ring_full",
    "drop_rcvbuf",
    "drop_not_peer",
    "doorbells_sent",
    "doorbells_received",
    "poll_hits",
    "poll_misses",
    "drop_bad_frame",
    "tx_oversize",
    "drop_too_large",
];

impl Counters {
    /// Every counter with its name, in [`COUNTER_NAMES`] order.
    pub fn each(&self) -> [(&'static str, &AtomicU64); 19] {
        let c = self;
        let f = [
            &c.kernel_rx_packets,
            &c.kernel_rx_bytes,
            &c.kernel_tx_packets,
            &c.kernel_tx_bytes,
            &c.eagain,
            &c.shm_rx_packets,
            &c.shm_rx_bytes,
            &c.shm_tx_packets,
            &c.shm_tx_bytes,
            &c.drop_ring_full,
            &c.drop_rcvbuf,
            &c.drop_not_peer,
            &c.doorbells_sent,
            &c.doorbells_received,
            &c.poll_hits,
            &c.poll_misses,
            &c.drop_bad_frame,
            &c.tx_oversize,
            &c.drop_too_large,
        ];
        core::array::from_fn(|i| (COUNTER_NAMES[i], f[i]))
    }

    /// A datagram received through the socket's bypass VI (any of them: shm, xdp, efvi; the
    /// slot's `vi` field says which). Two relaxed atomic adds in shared memory.
    #[inline(always)]
    pub fn offloaded_rx(&self, bytes: usize) {
        crate::socket::bump(&self.shm_rx_packets, 1);
        crate::socket::bump(&self.shm_rx_bytes, bytes as u64);
    }

    /// A datagram sent through a bypass VI.
    #[inline(always)]
    pub fn offloaded_tx(&self, bytes: usize) {
        crate::socket::bump(&self.shm_tx_packets, 1);
        crate::socket::bump(&self.shm_tx_bytes, bytes as u64);
    }

    /// A datagram of this socket dropped, by cause. For a drop that cannot be attributed to a
    /// socket (a bad frame before demultiplexing, a frame for no socket) use [`process_drop`].
    #[inline(always)]
    pub fn dropped(&self, cause: DropCause) {
        let c = match cause {
            DropCause::RingFull => &self.drop_ring_full,
            DropCause::BadFrame => &self.drop_bad_frame,
            DropCause::TooLarge => &self.drop_too_large,
            DropCause::Rcvbuf => &self.drop_rcvbuf,
            DropCause::NotPeer => &self.drop_not_peer,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a datagram was dropped: the drop counters `accel stat` shows. The API for VIs (shm,
/// xdp, efvi): `socket.counters.dropped(DropCause::BadFrame)` when the socket is known,
/// [`process_drop`] otherwise. Both are relaxed atomic adds in the stats block: no lock, no
/// system call, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The receive ring/queue was full.
    RingFull,
    /// A frame or ring slot that failed validation.
    BadFrame,
    /// Larger than the VI's buffers (received frames; a send too large for a VI goes through
    /// the kernel instead and counts as `tx_oversize`).
    TooLarge,
    /// The socket's stash was at its SO_RCVBUF bound.
    Rcvbuf,
    /// From a source other than the connected peer.
    NotPeer,
}

impl DropCause {
    pub const ALL: [DropCause; 5] = [DropCause::RingFull, DropCause::BadFrame, DropCause::TooLarge, DropCause::Rcvbuf, DropCause::NotPeer];

    pub fn name(self) -> &'static str {
        match self {
            DropCause::RingFull => "ring_full",
            DropCause::BadFrame => "bad_frame",
            DropCause::TooLarge => "too_large",
            DropCause::Rcvbuf => "rcvbuf",
            DropCause::NotPeer => "not_peer",
        }
    }
}

/// A drop seen by a VI that belongs to no known socket of this process (a corrupt frame before
/// demultiplexing, a frame for a port nobody has bound): counted per process, in the header.
#[inline]
pub fn process_drop(cause: DropCause) {
    let p = BLOCK.load(Ordering::Relaxed);
    if p.is_null() {
        return;
    }
    // SAFETY: blocks are leaked: a published pointer stays valid for the process's life.
    let b = unsafe { &*p };
    b.map.word(H_PROC_DROPS + 8 * cause as usize).fetch_add(1, Ordering::Relaxed);
}

/// The AF_XDP port's per-queue receive counters in this process's header ([`queue_counters`]).
#[derive(Debug)]
pub struct QueueCounters {
    words: Vec<&'static AtomicU64>,
}

impl QueueCounters {
    /// Adds `n` frames to the `i`th queue of the list given to [`queue_counters`] (queues past
    /// the header's room are not counted).
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        if let Some(w) = self.words.get(i) {
            w.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Lists the AF_XDP port's receive queues in this process's header (the first
/// [`XDP_QUEUE_SLOTS`] of them) and returns their counters; None without a block.
pub fn queue_counters(queues: &[u32]) -> Option<QueueCounters> {
    let b = block()?;
    let listed = &queues[..queues.len().min(XDP_QUEUE_SLOTS)];
    let mut ids = [0u8; XDP_QUEUE_SLOTS];
    for (d, &q) in ids.iter_mut().zip(listed) {
        *d = q.min(255) as u8;
    }
    for (k, chunk) in ids.chunks(8).enumerate() {
        let w = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        b.map.word(H_XDP_QUEUES + 8 + 8 * k).store(w, Ordering::Relaxed);
    }
    b.map.word(H_XDP_QUEUES).store(listed.len() as u64, Ordering::Release);
    let words = (0..listed.len()).map(|i| b.map.word(H_XDP_QUEUE_FRAMES + 8 * i)).collect();
    Some(QueueCounters { words })
}

/// Marks a datapath as on in this process's header (the xdp and efvi VIs call it when they
/// start; the shm datapath is noted at creation). A control-path call.
pub fn note_datapath(bit: u64) {
    if let Some(b) = block() {
        b.map.word(H_DATAPATHS).fetch_or(bit, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn now_unix_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn getpid() -> u32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// A process's start time (field 22 of /proc/<pid>/stat, clock ticks after boot): with the pid,
/// it names one process for the life of the machine.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts with field 3 (state); starttime is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Has `pid` exited, leaving a zombie (state Z or X in /proc/<pid>/stat)?
pub fn proc_exited(pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = text.rfind(')').and_then(|i| text[i + 1..].split_whitespace().next().map(str::to_string));
    matches!(state.as_deref(), Some("Z" | "X"))
}

/// Packs `bytes` (truncated to the area, NUL-padded) into words.
fn pack_text(text: &str, words: usize) -> Vec<u64> {
    let mut buf = vec![0u8; words * 8];
    let mut n = text.len().min(buf.len() - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
    buf.chunks(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

fn unpack_text(words: &[u64]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    text_of(&bytes)
}

fn text_of(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn pack_addr(a: Option<SocketAddrV4>) -> u64 {
    a.map_or(0, |a| 1 << 48 | u64::from(a.port()) << 32 | u64::from(u32::from(*a.ip())))
}

fn unpack_addr(w: u64) -> Option<SocketAddrV4> {
    (w >> 48 & 1 == 1).then(|| SocketAddrV4::new(Ipv4Addr::from(w as u32), (w >> 32) as u16))
}

/// A mapping of a stats file. Accessors take offsets checked against FILE_LEN.
#[derive(Debug)]
struct Map {
    base: *mut u8,
}

// SAFETY: the mapping is shared memory accessed through atomics and bounds-checked copies.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    fn new(f: &File, writable: bool) -> io::Result<Map> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: maps FILE_LEN bytes of a file the caller checked is that long.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), FILE_LEN, prot, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map { base: p as *mut u8 })
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= FILE_LEN);
        // SAFETY: in bounds (checked) and 8-aligned (the mapping is page-aligned).
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> u32 {
        assert!(off + 4 <= HEADER_LEN);
        // SAFETY: in bounds; the header is immutable after publication.
        unsafe { core::ptr::read_unaligned(self.base.add(off) as *const u32) }
    }

    fn u64_at(&self, off: usize) -> u64 {
        assert!(off + 8 <= HEADER_LEN);
        // SAFETY: as above.
        unsafe { core::ptr::read_unaligned(self.base.add(off) as *const u64) }
    }

    fn text_at(&self, (off, len): (usize, usize)) -> String {
        assert!(off + len <= HEADER_LEN);
        // SAFETY: in bounds; immutable header area.
        let bytes = unsafe { std::slice::from_raw_parts(self.base.add(off), len) };
        text_of(bytes)
    }

    fn slot(&self, i: usize) -> Slot<'_> {
        assert!(i < SOCKET_SLOTS);
        Slot { map: self, off: SOCKETS_OFF + i * SOCKET_SLOT_LEN }
    }

    fn ring_slot(&self, i: usize) -> Slot<'_> {
        assert!(i < RING_SLOTS);
        Slot { map: self, off: RINGS_OFF + i * RING_SLOT_LEN }
    }

    fn counters(&self, i: usize) -> &Counters {
        assert!(i < SOCKET_SLOTS);
        // SAFETY: Counters is repr(C), all AtomicU64, size checked at compile time to fit the
        // slot; 8-aligned offset inside the mapping.
        unsafe { &*(self.base.add(SOCKETS_OFF + i * SOCKET_SLOT_LEN + COUNTERS_OFF) as *const Counters) }
    }
}

/// A seqlocked entry: `seq` then description words.
struct Slot<'a> {
    map: &'a Map,
    off: usize,
}

impl Slot<'_> {
    fn seq(&self) -> &AtomicU64 {
        self.map.word(self.off)
    }

    fn meta(&self, w: usize) -> &AtomicU64 {
        self.map.word(self.off + 8 + w * 8)
    }

    /// Takes the write side (seq odd). Only the owning process writes; threads of it may race.
    /// Bounded: None when the slot stayed locked (a writer interrupted by a signal handler that
    /// publishes too, or a damaged word): the caller skips its write rather than hang the
    /// program — a description is worth less than the program.
    fn lock(&self) -> Option<u64> {
        for i in 0..(1u32 << 20) {
            let s = self.seq().load(Ordering::Relaxed);
            if s & 1 == 0 && self.seq().compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                fence(Ordering::Release);
                return Some(s + 1);
            }
            if i % 1024 == 1023 {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
        None
    }

    fn try_lock(&self) -> Option<u64> {
        let s = self.seq().load(Ordering::Relaxed);
        if s & 1 == 0 && self.seq().compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            fence(Ordering::Release);
            return Some(s + 1);
        }
        None
    }

    fn unlock(&self, locked: u64) {
        self.seq().store(locked + 1, Ordering::Release);
    }

    /// A consistent copy of `n` description words, with the generation (`seq`) it belongs to.
    fn read(&self, n: usize) -> Option<(u64, Vec<u64>)> {
        for _ in 0..1000 {
            let s1 = self.seq().load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            let words: Vec<u64> = (0..n).map(|w| self.meta(w).load(Ordering::Relaxed)).collect();
            fence(Ordering::Acquire);
            if self.seq().load(Ordering::Relaxed) == s1 {
                return Some((s1, words));
            }
        }
        None // a writer died in the middle: the entry is unreadable
    }
}

// ---------------------------------------------------------------------------------------------
// The writer side: this process's block

/// This process's stats block.
#[derive(Debug)]
pub struct Block {
    map: Map,
    /// The process the block belongs to (a forked child sees its parent's here).
    pub pid: u32,
    pub path: PathBuf,
}

static BLOCK: AtomicPtr<Block> = AtomicPtr::new(core::ptr::null_mut());
/// The pid for which creating a block failed (not retried for every socket).
static FAILED_FOR: AtomicU32 = AtomicU32::new(0);
static CREATE: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
/// The capture word of the block the datapath captures into (null: none).
static CAPTURE_WORD: AtomicPtr<AtomicU64> = AtomicPtr::new(core::ptr::null_mut());

/// The stats block of this process, created on first use while a datapath is on.
pub fn block() -> Option<&'static Block> {
    let me = getpid();
    let p = BLOCK.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: blocks are leaked: a published pointer stays valid for the process's life.
        let b = unsafe { &*p };
        if b.pid == me {
            return Some(b);
        }
    }
    if !crate::udp::datapath_on() || FAILED_FOR.load(Ordering::Relaxed) == me {
        return None;
    }
    let _g = CREATE.lock();
    let p = BLOCK.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: as above.
        let b = unsafe { &*p };
        if b.pid == me {
            return Some(b);
        }
    }
    match Block::create(&registry::default_dir()) {
        Ok(b) => {
            let b: &'static Block = Box::leak(Box::new(b));
            CAPTURE_WORD.store(b.map.word(CAPTURE_CTL_OFF + C_OWNER) as *const AtomicU64 as *mut AtomicU64, Ordering::Release);
            BLOCK.store(b as *const Block as *mut Block, Ordering::Release);
            Some(b)
        }
        Err(e) => {
            FAILED_FOR.store(me, Ordering::Relaxed);
            crate::log::warn(format_args!("cannot publish the stats block ({e}); accel stat will not show this process"));
            None
        }
    }
}

/// The block if it exists and is this process's (for clean-up paths that must not create it).
fn existing() -> Option<&'static Block> {
    let p = BLOCK.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: leaked, valid for the process's life.
    let b = unsafe { &*p };
    (b.pid == getpid()).then_some(b)
}

/// The file name of the stats block of `pid`.
pub fn file_name(pid: u32) -> String {
    format!("stats-{pid}")
}

/// The pid in a stats file name.
pub fn pid_of_name(name: &str) -> Option<u32> {
    name.strip_prefix("stats-")?.parse().ok()
}

impl Block {
    fn create(dir: &Path) -> io::Result<Block> {
        let pid = getpid();
        let header = header_bytes(pid);
        let mut last = io::Error::other("directory kept disappearing");
        // A concurrent clean-up may remove an empty registry directory between our mkdir and
        // our create: try again.
        for _ in 0..4 {
            let reg = registry::Registry::open(dir)?;
            reap_stale(reg.dir());
            let tmp = reg.path_of(&format!(".tmp-{pid}-stats"));
            let path = reg.path_of(&file_name(pid));
            let made = (|| {
                let _ = fs::remove_file(&tmp);
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&tmp)?;
                f.write_all(&header)?;
                f.set_len(FILE_LEN as u64)?;
                let map = Map::new(&f, true)?;
                // Replaces the block of the image this process ran before an exec, if any.
                fs::rename(&tmp, &path)?;
                Ok::<Map, io::Error>(map)
            })();
            match made {
                Ok(map) => return Ok(Block { map, pid, path }),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    if e.kind() != io::ErrorKind::NotFound {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn claim(&'static self, proto: Proto) -> Option<usize> {
        for pass in 0..2 {
            for i in 0..SOCKET_SLOTS {
                let slot = self.map.slot(i);
                let w0 = slot.meta(0).load(Ordering::Relaxed);
                let state = w0 as u8;
                let reusable = state == FREE || (pass == 1 && state == DETACHED && !detached_alive(self.pid, w0, slot.meta(1).load(Ordering::Relaxed)));
                if !reusable {
                    continue;
                }
                let Some(locked) = slot.try_lock() else { continue };
                if slot.meta(0).load(Ordering::Relaxed) != w0 {
                    slot.unlock(locked);
                    continue;
                }
                for (_, c) in self.map.counters(i).each() {
                    c.store(0, Ordering::Relaxed);
                }
                let proto = match proto {
                    Proto::Udp => libc::IPPROTO_UDP as u64,
                    Proto::Tcp => libc::IPPROTO_TCP as u64,
                };
                let fd_unset = u64::from(u32::MAX) << 32;
                slot.meta(0).store(u64::from(OPEN) | proto << 16 | fd_unset, Ordering::Relaxed);
                for w in 1..META_WORDS {
                    slot.meta(w).store(0, Ordering::Relaxed);
                }
                slot.meta(4).store(now_unix_ns() / 1_000_000, Ordering::Relaxed);
                slot.unlock(locked);
                return Some(i);
            }
        }
        None
    }

    /// The socket in slot `i` is gone from this process: free the slot, or detach it when the
    /// socket went to the kernel (its fd is still open in the app).
    fn release(&self, i: usize) {
        let slot = self.map.slot(i);
        let Some(locked) = slot.lock() else { return };
        let w0 = slot.meta(0).load(Ordering::Relaxed);
        let verdict = (w0 >> 8) as u8;
        let fd = (w0 >> 32) as u32;
        let state = if verdict == VERDICT_KERNEL && fd != u32::MAX { DETACHED } else { FREE };
        slot.meta(0).store(w0 & !0xff | u64::from(state), Ordering::Relaxed);
        slot.unlock(locked);
    }

    /// Frees detached slots whose fd is `fd` (other than `keep`): that fd now names another socket.
    fn forget_detached_fd(&self, fd: i32, keep: usize) {
        for i in 0..SOCKET_SLOTS {
            if i == keep {
                continue;
            }
            let slot = self.map.slot(i);
            let w0 = slot.meta(0).load(Ordering::Relaxed);
            if w0 as u8 == DETACHED && (w0 >> 32) as u32 == fd as u32 {
                let Some(locked) = slot.lock() else { continue };
                let w0 = slot.meta(0).load(Ordering::Relaxed);
                if w0 as u8 == DETACHED && (w0 >> 32) as u32 == fd as u32 {
                    slot.meta(0).store(w0 & !0xff | u64::from(FREE), Ordering::Relaxed);
                }
                slot.unlock(locked);
            }
        }
    }

    /// Lists a ring this process created (once).
    fn note_ring(&self, name: &str, key: &str, capacity: u32, slot_size: u32) {
        self.note_ring_as(name, key, capacity, slot_size, 0);
    }

    /// Lists a ring (once) with `flags` in its first word; returns its slot.
    fn note_ring_as(&self, name: &str, key: &str, capacity: u32, slot_size: u32, flags: u64) -> Option<usize> {
        let name_words = pack_text(name, 8);
        let mut free = None;
        for i in 0..RING_SLOTS {
            let slot = self.map.ring_slot(i);
            let w0 = slot.meta(0).load(Ordering::Relaxed);
            if w0 as u8 == OPEN {
                if (0..8).all(|k| slot.meta(2 + k).load(Ordering::Relaxed) == name_words[k]) {
                    return Some(i);
                }
                // A ring whose file is gone (a per-socket ring after its socket closed): reusable.
                if free.is_none()
                    && w0 & RING_IN_MEMORY == 0
                    && !self.path.with_file_name(unpack_text(&(0..8).map(|k| slot.meta(2 + k).load(Ordering::Relaxed)).collect::<Vec<_>>())).exists()
                {
                    free = Some(i);
                }
            } else if free.is_none() {
                free = Some(i);
            }
        }
        let i = free?;
        let slot = self.map.ring_slot(i);
        let locked = slot.lock()?;
        slot.meta(0).store(u64::from(OPEN) | flags | u64::from(capacity) << 32, Ordering::Relaxed);
        slot.meta(14).store(0, Ordering::Relaxed);
        slot.meta(1).store(u64::from(slot_size), Ordering::Relaxed);
        for (k, w) in name_words.iter().enumerate() {
            slot.meta(2 + k).store(*w, Ordering::Relaxed);
        }
        for (k, w) in pack_text(key, 4).iter().enumerate() {
            slot.meta(10 + k).store(*w, Ordering::Relaxed);
        }
        slot.unlock(locked);
        Some(i)
    }
}

/// Flag in a ring slot's first word: the ring lives in the process's memory (an AF_XDP queue),
/// not in a file `accel stat` can open; the process publishes its state in the slot's last word
/// ([`MemoryRing::set`]).
const RING_IN_MEMORY: u64 = 1 << 8;

/// The state of an in-memory ring, packed in one word: fill (21 bits), most ever waiting (21
/// bits), spare buffers (22 bits), each saturating.
fn pack_ring_state(fill: u64, max_fill: u64, spare: u64) -> u64 {
    fill.min((1 << 21) - 1) | max_fill.min((1 << 21) - 1) << 21 | spare.min((1 << 22) - 1) << 42
}

/// What [`pack_ring_state`] packed: (fill, max_fill, spare).
pub fn unpack_ring_state(w: u64) -> (u64, u64, u64) {
    (w & ((1 << 21) - 1), w >> 21 & ((1 << 21) - 1), w >> 42)
}

/// A ring in this process's memory, listed in its stats block ([`memory_ring`]).
#[derive(Debug)]
pub struct MemoryRing {
    word: &'static AtomicU64,
}

impl MemoryRing {
    /// Publishes the ring's state: one relaxed store (called by the ring's consumer after it
    /// changed).
    #[inline]
    pub fn set(&self, fill: u64, max_fill: u64, spare: u64) {
        self.word.store(pack_ring_state(fill, max_fill, spare), Ordering::Relaxed);
    }
}

/// Lists an in-memory ring (an AF_XDP receive queue) in this process's stats block, so `accel
/// stat` shows its owner, depth, fill and buffers; None without a block.
pub fn memory_ring(name: &str, key: &str, capacity: u32, slot_size: u32) -> Option<MemoryRing> {
    let b = block()?;
    let i = b.note_ring_as(name, key, capacity, slot_size, RING_IN_MEMORY)?;
    // The ring slot's last word (its seq word, then 15 description words).
    let word: &'static AtomicU64 = b.map.word(RINGS_OFF + i * RING_SLOT_LEN + 8 + 14 * 8);
    Some(MemoryRing { word })
}

fn detached_alive(pid: u32, w0: u64, inode: u64) -> bool {
    let fd = (w0 >> 32) as u32;
    fd != u32::MAX && registry::member_alive(pid, fd as i32, inode)
}

fn header_bytes(pid: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    let put32 = |h: &mut Vec<u8>, off: usize, v: u32| h[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    h[..8].copy_from_slice(MAGIC);
    put32(&mut h, H_VERSION, VERSION);
    put32(&mut h, H_FILE_LEN, FILE_LEN as u32);
    put32(&mut h, H_HEADER_LEN, HEADER_LEN as u32);
    put32(&mut h, H_SOCKET_SLOTS, SOCKET_SLOTS as u32);
    put32(&mut h, H_SOCKET_SLOT_LEN, SOCKET_SLOT_LEN as u32);
    put32(&mut h, H_RING_SLOTS, RING_SLOTS as u32);
    put32(&mut h, H_RING_SLOT_LEN, RING_SLOT_LEN as u32);
    put32(&mut h, H_CAPTURE_SLOTS, CAPTURE_SLOTS as u32);
    put32(&mut h, H_CAPTURE_SLOT_LEN, CAPTURE_SLOT_LEN as u32);
    put32(&mut h, H_COUNTERS_LEN, core::mem::size_of::<Counters>() as u32);
    put32(&mut h, H_PID, pid);
    // SAFETY: getuid cannot fail.
    put32(&mut h, H_UID, unsafe { libc::getuid() });
    let put64 = |h: &mut Vec<u8>, off: usize, v: u64| h[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put64(&mut h, H_START_TIME, proc_start_time(pid).unwrap_or(0));
    put64(&mut h, H_CREATED_MS, now_unix_ns() / 1_000_000);
    put64(&mut h, H_NETNS, registry::current_netns());
    put64(&mut h, H_DATAPATHS, if crate::udp::datapath_on() { DATAPATH_SHM } else { 0 });
    let put_text = |h: &mut Vec<u8>, (off, len): (usize, usize), text: &str| {
        let mut n = text.len().min(len - 1);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        h[off..off + n].copy_from_slice(&text.as_bytes()[..n]);
    };
    let e = crate::engine::engine();
    put_text(&mut h, H_PROGRAM, &e.program);
    let cmdline = fs::read("/proc/self/cmdline").unwrap_or_default();
    let cmdline: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    put_text(&mut h, H_CMDLINE, &cmdline.join(" "));
    let mut config = String::new();
    for s in e.config.describe() {
        config.push_str(&format!("{}={}\t{}\n", s.name, s.value, s.source));
    }
    put_text(&mut h, H_CONFIG, &config);
    h
}

/// Removes this process's block (exit). A forked child leaves its parent's alone.
pub fn shutdown() {
    if let Some(b) = existing() {
        let _ = fs::remove_file(&b.path);
        // The registry directory goes with its last file.
        if let Some(dir) = b.path.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// The counters of one socket: in its slot of the stats block, or on the heap when there is no
/// block or no free slot. Derefs to [`Counters`], so `s.counters.x.fetch_add(1, Relaxed)` is the
/// same whichever it is.
pub struct SocketStats {
    counters: NonNull<Counters>,
    slot: Option<(&'static Block, usize)>,
    _heap: Option<Box<Counters>>,
}

// SAFETY: the pointer is to atomics in a leaked mapping or in our own box.
unsafe impl Send for SocketStats {}
// SAFETY: as above.
unsafe impl Sync for SocketStats {}

impl SocketStats {
    /// Counters for a new socket: a slot of the stats block if there is one.
    pub fn claim(proto: Proto) -> SocketStats {
        if let Some(b) = block() {
            if let Some(i) = b.claim(proto) {
                return SocketStats { counters: NonNull::from(b.map.counters(i)), slot: Some((b, i)), _heap: None };
            }
            b.map.word(H_OVERFLOW).fetch_add(1, Ordering::Relaxed);
        }
        SocketStats::heap()
    }

    /// Counters on the heap, not published.
    pub fn heap() -> SocketStats {
        let heap = Box::<Counters>::default();
        SocketStats { counters: NonNull::from(&*heap), slot: None, _heap: Some(heap) }
    }

    /// Whether these counters are published in a stats block.
    pub fn published(&self) -> bool {
        self.slot.is_some()
    }
}

impl Deref for SocketStats {
    type Target = Counters;
    #[inline(always)]
    fn deref(&self) -> &Counters {
        // SAFETY: points into a leaked mapping or into `_heap`, both alive as long as self.
        unsafe { self.counters.as_ref() }
    }
}

impl Default for SocketStats {
    fn default() -> Self {
        SocketStats::heap()
    }
}

impl core::fmt::Debug for SocketStats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

impl Drop for SocketStats {
    fn drop(&mut self) {
        if let Some((b, i)) = self.slot {
            if b.pid == getpid() {
                b.release(i);
            }
        }
    }
}

/// Writes what a socket is now into its slot: fd, addresses, decision and reason, ring. Called
/// on control calls (socket, bind, connect, first send, fallback); never on the data path.
pub fn publish(fd: libc::c_int, s: &Socket) {
    let Some((b, i)) = s.counters.slot else { return };
    if b.pid != getpid() {
        return; // an inherited socket of a forked child: its parent describes it
    }
    let (local, remote, verdict, reason, nonblocking) = {
        let st = s.state.lock();
        let (verdict, reason) = match &st.decision {
            None => (VERDICT_NONE, String::new()),
            Some(d) if d.accelerate() => (VERDICT_ACCEL, d.reason.to_string()),
            Some(d) => (VERDICT_KERNEL, d.reason.to_string()),
        };
        (st.local, st.remote, verdict, reason, st.nonblocking)
    };
    let rx = s.rx.get();
    let rx_off = s.rx_off.load(Ordering::Relaxed);
    let mut flags = if nonblocking { F_NONBLOCKING } else { 0 };
    if rx.is_some() {
        flags |= if rx_off { F_RX_OFF } else { F_RX_BOUND };
    }
    let slot = b.map.slot(i);
    // The fd: the one this socket was first seen with, unless that fd no longer names it.
    let old_fd = (slot.meta(0).load(Ordering::Relaxed) >> 32) as u32;
    let keep_old = old_fd != u32::MAX
        && (fd < 0 || old_fd as i32 == fd || crate::fdtable::get(old_fd as i32).is_some_and(|x| core::ptr::eq(&*x, s)));
    let (fd, new_fd) = if keep_old || fd < 0 { (old_fd, false) } else { (fd as u32, true) };
    let inode = if new_fd { registry::socket_inode(fd as i32).unwrap_or(0) } else { slot.meta(1).load(Ordering::Relaxed) };
    if new_fd {
        b.forget_detached_fd(fd as i32, i);
    }
    let Some(locked) = slot.lock() else { return };
    let w0 = slot.meta(0).load(Ordering::Relaxed);
    let state = w0 as u8;
    let proto = (w0 >> 16) as u8;
    slot.meta(0).store(
        u64::from(state) | u64::from(verdict) << 8 | u64::from(proto) << 16 | u64::from(flags) << 24 | u64::from(fd) << 32,
        Ordering::Relaxed,
    );
    slot.meta(1).store(inode, Ordering::Relaxed);
    slot.meta(2).store(pack_addr(local), Ordering::Relaxed);
    slot.meta(3).store(pack_addr(remote), Ordering::Relaxed);
    for (k, w) in pack_text(&reason, REASON_WORDS.1).iter().enumerate() {
        slot.meta(REASON_WORDS.0 + k).store(*w, Ordering::Relaxed);
    }
    let (ring, vi) = rx.map_or((String::new(), String::new()), describe_binding);
    for (k, w) in pack_text(&ring, RING_WORDS.1).iter().enumerate() {
        slot.meta(RING_WORDS.0 + k).store(*w, Ordering::Relaxed);
    }
    for (k, w) in pack_text(&vi, VI_WORDS.1).iter().enumerate() {
        slot.meta(VI_WORDS.0 + k).store(*w, Ordering::Relaxed);
    }
    slot.unlock(locked);
    if let Some(r) = rx {
        if r.pid == b.pid {
            // other VIs' filter states: no ring file to list
            #[allow(irrefutable_let_patterns)]
            if let FilterState::Shm(f) = &r.state {
                b.note_ring(&f.ring_name, &f.ring_key, f.ring.capacity(), f.ring.slot_size());
            }
        }
    }
}

/// What a slot shows for a receive binding: (queue name, "vi/detail"). Generic over VIs: the
/// VI's kind name always, plus what identifies its queue when the VI has one to name.
fn describe_binding(r: &RxBinding) -> (String, String) {
    #[allow(unreachable_patterns)] // a VI added later without a case here shows its kind only
    match &r.state {
        FilterState::Shm(f) => (f.ring_name.clone(), format!("{}/{}", r.kind.name(), f.ring_key)),
        FilterState::Xdp(f) => match crate::xdp::port::existing() {
            Some(p) => {
                let name = crate::xdp::port::stats_ring_name(p.ifname(), p.queues());
                let name = if f.ring == 0 { name } else { format!("{name}.r{}", f.ring) };
                (name, format!("{}/{}", r.kind.name(), p.ifname()))
            }
            None => (String::new(), r.kind.name().to_string()),
        },
        _ => (String::new(), r.kind.name().to_string()),
    }
}

/// As [`publish`], keeping the fd already recorded (for paths that do not know it).
pub fn refresh(s: &Socket) {
    publish(-1, s);
}

// ---------------------------------------------------------------------------------------------
// Capture (datapath side)

/// A datagram this process sent through shared memory: recorded while `accel capture` runs.
#[inline(always)]
pub fn capture_tx(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    if capturing() {
        capture_slow(DIR_TX, src, dst, payload);
    }
}

/// A datagram this process received through shared memory: recorded while `accel capture` runs.
#[inline(always)]
pub fn capture_rx(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    if capturing() {
        capture_slow(DIR_RX, src, dst, payload);
    }
}

#[inline(always)]
fn capturing() -> bool {
    let w = CAPTURE_WORD.load(Ordering::Relaxed);
    // SAFETY: points into a leaked mapping (or is null).
    !w.is_null() && unsafe { &*w }.load(Ordering::Relaxed) != 0
}

#[cold]
#[inline(never)]
fn capture_slow(dir: u8, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    let p = BLOCK.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: leaked, valid for the process's life.
    let b = unsafe { &*p };
    let pos = b.map.word(CAPTURE_CTL_OFF + C_TAIL).fetch_add(1, Ordering::Relaxed);
    let off = CAPTURE_OFF + (pos as usize % CAPTURE_SLOTS) * CAPTURE_SLOT_LEN;
    let seq = b.map.word(off);
    seq.store((pos + 1) | BUSY, Ordering::Relaxed);
    fence(Ordering::Release);
    let dst = if dst.ip().is_unspecified() { SocketAddrV4::new(*src.ip(), dst.port()) } else { dst };
    let cap = payload.len().min(CAPTURE_SNAPLEN);
    b.map.word(off + 8).store(now_unix_ns(), Ordering::Relaxed);
    b.map.word(off + 16).store(pack_addr(Some(src)), Ordering::Relaxed);
    b.map.word(off + 24).store(pack_addr(Some(dst)), Ordering::Relaxed);
    b.map.word(off + 32).store(payload.len() as u64 | (cap as u64) << 32, Ordering::Relaxed);
    b.map.word(off + 40).store(u64::from(dir), Ordering::Relaxed);
    // SAFETY: `cap` bytes fit the record's data area inside the mapping.
    unsafe { core::ptr::copy_nonoverlapping(payload.as_ptr(), b.map.base.add(off + CAPTURE_DATA_OFF), cap) };
    seq.store(pos + 1, Ordering::Release);
}

// ---------------------------------------------------------------------------------------------
// The reader side: accel stat / accel capture

/// A process's block as a reader sees it.
#[derive(Debug)]
pub struct View {
    map: Map,
    pub path: PathBuf,
    pub writable: bool,
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`.
        unsafe { libc::munmap(self.map.base as *mut libc::c_void, FILE_LEN) };
    }
}

/// The header of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    pub pid: u32,
    pub uid: u32,
    pub start_time: u64,
    pub created_ms: u64,
    pub netns: u64,
    pub datapaths: u64,
    /// Sockets that found the table full (their counters are not published).
    pub overflow: u64,
    /// When counters were last zeroed (`accel stat -z`), unix ms; 0 = never.
    pub zeroed_ms: u64,
    /// Drops not attributed to a socket, in [`DropCause::ALL`] order.
    pub proc_drops: [u64; 5],
    /// The AF_XDP port's receive queues and the frames each received (empty: no port, or a
    /// block of an older build).
    pub xdp_queues: Vec<(u32, u64)>,
    pub program: String,
    pub cmdline: String,
    /// `NAME=value<TAB>source` lines.
    pub config: String,
}

/// One socket entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    pub slot: usize,
    /// The entry's generation (its seqlock word when read).
    pub generation: u64,
    pub state: u8,
    pub verdict: u8,
    pub proto: u8,
    pub flags: u8,
    /// None until the socket's fd was recorded.
    pub fd: Option<i32>,
    pub inode: u64,
    pub local: Option<SocketAddrV4>,
    pub remote: Option<SocketAddrV4>,
    pub claimed_ms: u64,
    pub reason: String,
    pub ring: String,
    pub vi: String,
    /// Counter values, in [`COUNTER_NAMES`] order.
    pub counters: Vec<u64>,
}

impl SocketEntry {
    pub fn counter(&self, name: &str) -> u64 {
        COUNTER_NAMES.iter().position(|n| *n == name).and_then(|i| self.counters.get(i).copied()).unwrap_or(0)
    }
}

/// One ring this process created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingEntry {
    pub name: String,
    pub key: String,
    pub capacity: u32,
    pub slot_size: u32,
    /// For a ring in the process's memory (no file): (fill, max_fill, spare buffers).
    pub in_memory: Option<(u64, u64, u64)>,
}

/// What a reader got from the capture ring.
#[derive(Debug, PartialEq, Eq)]
pub enum CaptureRead {
    Record(CaptureRecord),
    /// Nothing new yet.
    Empty,
    /// Records were overwritten before they could be read.
    Lost(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRecord {
    pub ts_ns: u64,
    pub dir: u8,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

impl View {
    /// Maps a stats file after checking its size and header. `writable` for `-z` and capture.
    pub fn open(path: &Path, writable: bool) -> io::Result<View> {
        let f = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        let meta = f.metadata()?;
        if !meta.is_file() || meta.len() < HEADER_LEN as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a stats block"));
        }
        let mut head = [0u8; 64];
        {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut head, 0)?;
        }
        if &head[..8] != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a stats block (bad magic)"));
        }
        let u = |off: usize| u32::from_ne_bytes(head[off..off + 4].try_into().unwrap_or([0; 4]));
        if u(H_VERSION) != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stats block version {} (this accel reads version {VERSION})", u(H_VERSION)),
            ));
        }
        let layout = [
            (H_FILE_LEN, FILE_LEN),
            (H_HEADER_LEN, HEADER_LEN),
            (H_SOCKET_SLOTS, SOCKET_SLOTS),
            (H_SOCKET_SLOT_LEN, SOCKET_SLOT_LEN),
            (H_RING_SLOTS, RING_SLOTS),
            (H_RING_SLOT_LEN, RING_SLOT_LEN),
            (H_CAPTURE_SLOTS, CAPTURE_SLOTS),
            (H_CAPTURE_SLOT_LEN, CAPTURE_SLOT_LEN),
            (H_COUNTERS_LEN, core::mem::size_of::<Counters>()),
        ];
        if layout.iter().any(|&(off, v)| u(off) as usize != v) || meta.len() != FILE_LEN as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "stats block with another layout"));
        }
        let map = Map::new(&f, writable)?;
        Ok(View { map, path: path.to_path_buf(), writable })
    }

    pub fn header(&self) -> HeaderInfo {
        let m = &self.map;
        HeaderInfo {
            pid: m.u32_at(H_PID),
            uid: m.u32_at(H_UID),
            start_time: m.u64_at(H_START_TIME),
            created_ms: m.u64_at(H_CREATED_MS),
            netns: m.u64_at(H_NETNS),
            datapaths: m.u64_at(H_DATAPATHS),
            overflow: m.word(H_OVERFLOW).load(Ordering::Relaxed),
            zeroed_ms: m.word(H_ZEROED_MS).load(Ordering::Relaxed),
            proc_drops: core::array::from_fn(|i| m.word(H_PROC_DROPS + 8 * i).load(Ordering::Relaxed)),
            xdp_queues: {
                let n = (m.word(H_XDP_QUEUES).load(Ordering::Acquire) as usize).min(XDP_QUEUE_SLOTS);
                let ids: Vec<u8> =
                    (0..3).flat_map(|k| m.word(H_XDP_QUEUES + 8 + 8 * k).load(Ordering::Relaxed).to_ne_bytes()).collect();
                (0..n).map(|i| (u32::from(ids[i]), m.word(H_XDP_QUEUE_FRAMES + 8 * i).load(Ordering::Relaxed))).collect()
            },
            program: m.text_at(H_PROGRAM),
            cmdline: m.text_at(H_CMDLINE),
            config: m.text_at(H_CONFIG),
        }
    }

    /// Why the block's process is not running any more (None: it is). Pid gone, or reused by
    /// another process (another start time).
    pub fn stale(&self) -> Option<String> {
        let h = self.header();
        if !registry::pid_alive(h.pid) {
            return Some(format!("process {} is gone", h.pid));
        }
        if proc_exited(h.pid) {
            return Some(format!("process {} has exited (not yet reaped by its parent)", h.pid));
        }
        match proc_start_time(h.pid) {
            Some(t) if h.start_time != 0 && t != h.start_time => {
                Some(format!("pid {} now belongs to another process (start time {t}, block's {})", h.pid, h.start_time))
            }
            _ => None,
        }
    }

    /// One socket slot, if in use and readable.
    pub fn socket(&self, i: usize) -> Option<SocketEntry> {
        let slot = self.map.slot(i);
        for _ in 0..100 {
            let (generation, w) = slot.read(META_WORDS)?;
            let state = w[0] as u8;
            if state == FREE {
                return None;
            }
            let counters: Vec<u64> = self.map.counters(i).each().iter().map(|(_, c)| c.load(Ordering::Relaxed)).collect();
            fence(Ordering::Acquire);
            if slot.seq().load(Ordering::Relaxed) != generation {
                continue; // changed while we read the counters: read it again
            }
            let fd = (w[0] >> 32) as u32;
            return Some(SocketEntry {
                slot: i,
                generation,
                state,
                verdict: (w[0] >> 8) as u8,
                proto: (w[0] >> 16) as u8,
                flags: (w[0] >> 24) as u8,
                fd: (fd != u32::MAX).then_some(fd as i32),
                inode: w[1],
                local: unpack_addr(w[2]),
                remote: unpack_addr(w[3]),
                claimed_ms: w[4],
                reason: unpack_text(&w[REASON_WORDS.0..REASON_WORDS.0 + REASON_WORDS.1]),
                ring: unpack_text(&w[RING_WORDS.0..RING_WORDS.0 + RING_WORDS.1]),
                vi: unpack_text(&w[VI_WORDS.0..VI_WORDS.0 + VI_WORDS.1]),
                counters,
            });
        }
        None
    }

    /// The sockets of the block: open ones, and detached ones whose fd still names the socket.
    pub fn sockets(&self) -> Vec<SocketEntry> {
        let pid = self.header().pid;
        (0..SOCKET_SLOTS)
            .filter_map(|i| self.socket(i))
            .filter(|e| e.state != DETACHED || e.fd.is_some_and(|fd| registry::member_alive(pid, fd, e.inode)))
            .collect()
    }

    /// The rings the process created whose files still exist.
    pub fn rings(&self) -> Vec<RingEntry> {
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        (0..RING_SLOTS)
            .filter_map(|i| {
                let (_, w) = self.map.ring_slot(i).read(14)?;
                if w[0] as u8 != OPEN {
                    return None;
                }
                let name = unpack_text(&w[2..10]);
                let in_memory = (w[0] & RING_IN_MEMORY != 0)
                    .then(|| unpack_ring_state(self.map.ring_slot(i).meta(14).load(Ordering::Relaxed)));
                if name.is_empty() || name.contains('/') || (in_memory.is_none() && !dir.join(&name).exists()) {
                    return None;
                }
                Some(RingEntry { name, key: unpack_text(&w[10..14]), capacity: (w[0] >> 32) as u32, slot_size: w[1] as u32, in_memory })
            })
            .collect()
    }

    /// Sets every counter of every socket to zero (`accel stat -z`). Returns how many sockets.
    pub fn zero(&self) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only"));
        }
        let mut n = 0;
        for i in 0..SOCKET_SLOTS {
            if self.map.slot(i).meta(0).load(Ordering::Relaxed) as u8 != FREE {
                for (_, c) in self.map.counters(i).each() {
                    c.store(0, Ordering::Relaxed);
                }
                n += 1;
            }
        }
        for i in 0..DropCause::ALL.len() {
            self.map.word(H_PROC_DROPS + 8 * i).store(0, Ordering::Relaxed);
        }
        for i in 0..XDP_QUEUE_SLOTS {
            self.map.word(H_XDP_QUEUE_FRAMES + 8 * i).store(0, Ordering::Relaxed);
        }
        self.map.word(H_ZEROED_MS).store(now_unix_ns() / 1_000_000, Ordering::Relaxed);
        Ok(n)
    }

    /// Turns capture on for `me` (the capturing tool's pid); returns the first record position
    /// to read. Fails when another live capture holds it.
    pub fn capture_start(&self, me: u32) -> Result<u64, String> {
        if !self.writable {
            return Err("the stats block is opened read-only".into());
        }
        let owner = self.map.word(CAPTURE_CTL_OFF + C_OWNER);
        loop {
            let cur = owner.load(Ordering::Acquire);
            if cur != 0 && cur != u64::from(me) && registry::pid_alive(cur as u32) {
                return Err(format!("process {cur} is already capturing this process"));
            }
            if owner.compare_exchange(cur, u64::from(me), Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                break;
            }
        }
        Ok(self.map.word(CAPTURE_CTL_OFF + C_TAIL).load(Ordering::Acquire))
    }

    /// Turns capture off if `me` holds it.
    pub fn capture_stop(&self, me: u32) {
        let owner = self.map.word(CAPTURE_CTL_OFF + C_OWNER);
        let _ = owner.compare_exchange(u64::from(me), 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// How many records producers have reserved so far.
    pub fn capture_tail(&self) -> u64 {
        self.map.word(CAPTURE_CTL_OFF + C_TAIL).load(Ordering::Acquire)
    }

    /// Reads the record at `*pos` and advances `*pos` past what was returned.
    pub fn capture_next(&self, pos: &mut u64) -> CaptureRead {
        let tail = self.capture_tail();
        if *pos >= tail {
            return CaptureRead::Empty;
        }
        if tail - *pos > CAPTURE_SLOTS as u64 {
            // Overwritten: skip to the oldest record that can still be intact.
            let lost = tail - *pos - CAPTURE_SLOTS as u64;
            *pos += lost;
            return CaptureRead::Lost(lost);
        }
        let off = CAPTURE_OFF + (*pos as usize % CAPTURE_SLOTS) * CAPTURE_SLOT_LEN;
        let seq = self.map.word(off);
        let s = seq.load(Ordering::Acquire);
        if s != *pos + 1 {
            if s & !BUSY > *pos + 1 {
                *pos += 1;
                return CaptureRead::Lost(1); // lapped while we looked
            }
            return CaptureRead::Empty; // being written
        }
        let ts_ns = self.map.word(off + 8).load(Ordering::Relaxed);
        let src = unpack_addr(self.map.word(off + 16).load(Ordering::Relaxed));
        let dst = unpack_addr(self.map.word(off + 24).load(Ordering::Relaxed));
        let lens = self.map.word(off + 32).load(Ordering::Relaxed);
        let dir = self.map.word(off + 40).load(Ordering::Relaxed) as u8;
        let cap = ((lens >> 32) as usize).min(CAPTURE_SNAPLEN);
        let mut data = vec![0u8; cap];
        // SAFETY: `cap` ≤ the record's data area, inside the mapping.
        unsafe { core::ptr::copy_nonoverlapping(self.map.base.add(off + CAPTURE_DATA_OFF), data.as_mut_ptr(), cap) };
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) != s {
            *pos += 1;
            return CaptureRead::Lost(1);
        }
        *pos += 1;
        match (src, dst) {
            (Some(src), Some(dst)) => CaptureRead::Record(CaptureRecord { ts_ns, dir, src, dst, orig_len: lens as u32, data }),
            _ => CaptureRead::Lost(1),
        }
    }

    /// Has the record at `pos` been reserved for longer than a writer could need (its writer
    /// died in the middle)? Lets a reader skip it.
    pub fn capture_skip(&self, pos: &mut u64) {
        *pos += 1;
    }
}

/// The stats files in `dir`: (pid from the name, path), sorted by pid.
pub fn list(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<(u32, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let pid = pid_of_name(name.to_str()?)?;
            Some((pid, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Removes stats blocks in `dir` whose process is gone (or whose pid was reused); returns what
/// was removed, with why.
pub fn reap_stale(dir: &Path) -> Vec<(u32, PathBuf, String)> {
    let mut removed = Vec::new();
    for (pid, path) in list(dir) {
        let why = match View::open(&path, false) {
            Ok(v) => {
                if v.header().pid != pid {
                    None // a file that lies about its name: not ours to judge
                } else {
                    v.stale()
                }
            }
            // Unreadable: stale only if its pid is dead (another version's live block stays).
            Err(_) => (!registry::pid_alive(pid)).then(|| format!("process {pid} is gone")),
        };
        if let Some(why) = why {
            // Only files of this user are removed (the directory is private, but check).
            // SAFETY: getuid cannot fail.
            let mine = fs::symlink_metadata(&path).is_ok_and(|m| m.uid() == unsafe { libc::getuid() });
            if mine && fs::remove_file(&path).is_ok() {
                removed.push((pid, path, why));
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_follow_the_struct() {
        let c = Counters::default();
        let each = c.each();
        assert_eq!(each.len(), core::mem::size_of::<Counters>() / 8);
        // Memory order: each field's offset is its index × 8.
        let base = &c as *const Counters as usize;
        for (i, (name, a)) in each.iter().enumerate() {
            assert_eq!(*a as *const AtomicU64 as usize - base, i * 8, "{name}");
        }
    }

    #[test]
    fn text_and_addresses_round_trip() {
        assert_eq!(unpack_text(&pack_text("ring-1-abc-if-lo", 8)), "ring-1-abc-if-lo");
        let long = "é".repeat(100);
        let t = unpack_text(&pack_text(&long, 4));
        assert!(t.len() < 32 && long.starts_with(&t));
        let a = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5000);
        assert_eq!(unpack_addr(pack_addr(Some(a))), Some(a));
        assert_eq!(unpack_addr(pack_addr(None)), None);
        let z = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
        assert_eq!(unpack_addr(pack_addr(Some(z))), Some(z));
    }

    #[test]
    fn start_time_of_self_is_known() {
        let t = proc_start_time(std::process::id()).unwrap();
        assert!(t > 0);
        assert_eq!(proc_start_time(0x3fff_ffff), None);
    }

    #[test]
    fn block_round_trip_sockets_capture_and_stale() {
        crate::testutil::init();
        let _ = crate::engine::engine();
        let b = block().expect("block (the unit tests run with ACCEL_SHM=1)");
        let v = View::open(&b.path, true).unwrap();
        let h = v.header();
        assert_eq!(h.pid, std::process::id());
        assert!(h.config.contains("ACCEL_SHM=1"), "{}", h.config);
        assert_eq!(v.stale(), None);

        // A socket: claimed, counted, described, released.
        let s = Socket::new(libc::AF_INET, Proto::Udp);
        assert!(s.counters.published());
        s.counters.shm_rx_packets.fetch_add(3, Ordering::Relaxed);
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        s.state.lock().decision = Some(crate::decision::Decision::accel(crate::decision::Reason::NoRule));
        publish(fd, &s);
        let (_, i) = s.counters.slot.unwrap();
        let e = v.socket(i).unwrap();
        assert_eq!((e.state, e.verdict, e.fd), (OPEN, VERDICT_ACCEL, Some(fd)));
        assert_eq!(e.counter("shm_rx_packets"), 3);
        assert_eq!(e.reason, "no rule matched; default");
        // Drops of no socket: in the header.
        let before = v.header().proc_drops;
        process_drop(DropCause::BadFrame);
        process_drop(DropCause::TooLarge);
        process_drop(DropCause::TooLarge);
        let after = v.header().proc_drops;
        // (Other unit tests may meet bad frames meanwhile; only this one counts "too large".)
        assert!(after[1] > before[1] && after[2] - before[2] == 2, "{before:?} -> {after:?}");
        assert!(v.zero().unwrap() >= 1);
        assert_eq!(v.header().proc_drops[2], 0, "zeroed");
        assert_eq!(v.socket(i).unwrap().counter("shm_rx_packets"), 0);
        drop(s);
        assert_eq!(v.socket(i), None, "released");

        // A socket decided "kernel" stays listed while its fd is open.
        let s = Socket::new(libc::AF_INET, Proto::Udp);
        s.state.lock().decision = Some(crate::decision::Decision::kernel(crate::decision::Reason::Disabled));
        publish(fd, &s);
        let (_, i) = s.counters.slot.unwrap();
        drop(s);
        assert_eq!(v.socket(i).map(|e| e.state), Some(DETACHED));
        assert!(v.sockets().iter().any(|e| e.slot == i));
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
        assert!(!v.sockets().iter().any(|e| e.slot == i), "closed: no longer listed");

        // Capture: off → nothing recorded; on → records in order.
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let c = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2);
        capture_tx(a, c, b"before");
        let mut pos = v.capture_start(std::process::id()).unwrap();
        capture_tx(a, c, b"one");
        capture_rx(c, a, b"two");
        let r1 = v.capture_next(&mut pos);
        let r2 = v.capture_next(&mut pos);
        assert_eq!(v.capture_next(&mut pos), CaptureRead::Empty);
        v.capture_stop(std::process::id());
        capture_tx(a, c, b"after");
        assert_eq!(v.capture_next(&mut pos), CaptureRead::Empty);
        match (r1, r2) {
            (CaptureRead::Record(x), CaptureRead::Record(y)) => {
                assert_eq!((x.dir, x.src, x.dst, x.data.as_slice()), (DIR_TX, a, c, &b"one"[..]));
                assert_eq!((y.dir, y.data.as_slice(), y.orig_len), (DIR_RX, &b"two"[..], 3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drop_causes_count_where_accel_stat_reads_them() {
        let c = Counters::default();
        for (i, cause) in DropCause::ALL.iter().enumerate() {
            for _ in 0..=i {
                c.dropped(*cause);
            }
        }
        let get = |n: &str| c.each().iter().find(|(name, _)| *name == n).unwrap().1.load(Ordering::Relaxed);
        assert_eq!(
            ["drop_ring_full", "drop_bad_frame", "drop_too_large", "drop_rcvbuf", "drop_not_peer"].map(get),
            [1, 2, 3, 4, 5]
        );
        c.offloaded_rx(100);
        c.offloaded_tx(7);
        assert_eq!((get("shm_rx_packets"), get("shm_rx_bytes"), get("shm_tx_packets"), get("shm_tx_bytes")), (1, 100, 1, 7));
        assert_eq!(datapath_names(DATAPATH_SHM | DATAPATH_XDP), ["shm", "xdp"]);
    }

    #[test]
    fn stale_blocks_are_reaped() {
        let dir = std::env::temp_dir().join(format!("accel-stats-stale-{}", std::process::id()));
        let _ = fs::create_dir(&dir);
        // A block of a pid above pid_max: never alive.
        let mut h = vec![0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        fs::write(dir.join(file_name(0x3fff_fffe)), &h).unwrap();
        fs::write(dir.join("ring-1-x"), b"not ours").unwrap();
        let removed = reap_stale(&dir);
        assert_eq!(removed.len(), 1);
        assert!(dir.join("ring-1-x").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
