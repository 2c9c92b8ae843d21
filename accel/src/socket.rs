//! The state we keep for a socket we track: what it is, where it is bound and connected, the
//! offload decision, and counters.
//!
//! Only IPv4 UDP sockets are tracked (they are what the datapaths accelerate); a socket whose
//! decision becomes "kernel" is dropped from the fd table and from then on costs nothing.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::decision::Decision;
use crate::vi::RxBinding;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// What changes over a socket's life; behind a mutex, touched on control calls only.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub local: Option<SocketAddrV4>,
    pub remote: Option<SocketAddrV4>,
    /// The latest decision; `None` until the socket's first decision point.
    pub decision: Option<Decision>,
    /// O_NONBLOCK as the app last set it (SOCK_NONBLOCK, fcntl F_SETFL, ioctl FIONBIO).
    pub nonblocking: bool,
    /// Whether the udp_sender rule was already applied (at the first unconnected send).
    pub sender_decided: bool,
}

/// Adds `n` to a per-socket counter on a hot path: a plain load and store, not a locked
/// read-modify-write (which costs about 20 cycles, several times per datagram). A socket's
/// datagrams are nearly always counted by one thread at a time; when several threads use one
/// socket at once an increment can be lost, and an `accel stat -z` racing an increment can be
/// undone. Rare events (drops) keep exact atomic adds.
#[inline(always)]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Counters, updated without locks. `#[repr(C)]` and all `AtomicU64`: they live in the socket's
/// slot of the process's stats block (see `stats.rs`, which lists them by name; a new counter is
/// added at the end, there too).
#[derive(Debug, Default)]
#[repr(C)]
pub struct Counters {
    pub kernel_rx_packets: AtomicU64,
    pub kernel_rx_bytes: AtomicU64,
    pub kernel_tx_packets: AtomicU64,
    pub kernel_tx_bytes: AtomicU64,
    pub eagain: AtomicU64,
    pub shm_rx_packets: AtomicU64,
    pub shm_rx_bytes: AtomicU64,
    pub shm_tx_packets: AtomicU64,
    pub shm_tx_bytes: AtomicU64,
    /// Sent into a full ring: dropped, as UDP does.
    pub drop_ring_full: AtomicU64,
    /// Demuxed for this socket while its stash was at its SO_RCVBUF bound.
    pub drop_rcvbuf: AtomicU64,
    /// From a source other than the connected peer.
    pub drop_not_peer: AtomicU64,
    pub doorbells_sent: AtomicU64,
    pub doorbells_received: AtomicU64,
    /// Receives served from the ring or stash (without sleeping in the kernel first).
    pub poll_hits: AtomicU64,
    /// Receives that found nothing and went to sleep in the kernel.
    pub poll_misses: AtomicU64,
    /// Corrupt slots skipped on this socket's ring.
    pub drop_bad_frame: AtomicU64,
    /// Datagrams too large for a ring slot, sent through the kernel instead.
    pub tx_oversize: AtomicU64,
    /// Received frames larger than the VI's buffers, dropped (see `stats::DropCause`).
    pub drop_too_large: AtomicU64,
}

/// [`Socket::shut`]: reading was shut down.
pub const SHUT_RD_BIT: u8 = 1;
/// [`Socket::shut`]: writing was shut down.
pub const SHUT_WR_BIT: u8 = 2;

/// The kernel's default SO_RCVBUF (net.core.rmem_default, doubled by the kernel as it reports it).
pub const DEFAULT_RCVBUF: u32 = 212_992;

/// A datagram taken off a shared ring for this socket by another socket's receive.
#[derive(Debug)]
pub struct Stashed {
    pub src: SocketAddrV4,
    pub data: Vec<u8>,
}

/// What a datagram costs against SO_RCVBUF besides its payload: the kernel charges an skb's
/// truesize (about 700 bytes more than a small datagram's payload on loopback), so a stash holds
/// about as many datagrams as the kernel's queue would.
pub const DATAGRAM_OVERHEAD: usize = 640;

/// Datagrams for a socket that another socket's receive took off a shared queue, bounded by the
/// socket's SO_RCVBUF as the kernel's receive queue is. The count is readable without the lock,
/// so a receive finds an empty stash with one load.
#[derive(Debug, Default)]
pub struct Stash {
    queue: Mutex<StashQueue>,
    count: core::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct StashQueue {
    items: VecDeque<Stashed>,
    charged: usize,
}

/// The locked stash.
pub struct StashGuard<'a> {
    queue: parking_lot::MutexGuard<'a, StashQueue>,
    count: &'a core::sync::atomic::AtomicUsize,
}

impl Drop for StashGuard<'_> {
    fn drop(&mut self) {
        // Settles an `expect_one` whose datagram did not come (taken by another consumer, or
        // dropped); the lock is still held here.
        self.count.store(self.queue.items.len(), Ordering::Release);
    }
}

impl Stash {
    /// Empty at the instant of the check (a hint: a hand-over in progress holds the lock).
    #[inline]
    pub fn looks_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    pub fn lock(&self) -> StashGuard<'_> {
        StashGuard { queue: self.queue.lock(), count: &self.count }
    }
}

impl StashGuard<'_> {
    pub fn front(&self) -> Option<&Stashed> {
        self.queue.items.front()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.items.is_empty()
    }

    pub fn pop(&mut self) -> Option<Stashed> {
        let d = self.queue.items.pop_front()?;
        self.queue.charged -= d.data.len() + DATAGRAM_OVERHEAD;
        self.count.store(self.queue.items.len(), Ordering::Release);
        Some(d)
    }

    /// Announces a datagram on its way in (taken off a shared queue by another socket's receive,
    /// not yet pushed): [`Stash::looks_empty`] is false from now until this guard is dropped. A
    /// receive that finds the queue empty after this datagram left it then looks here again and
    /// waits for the lock instead of answering EAGAIN while the datagram is in transit.
    pub fn expect_one(&mut self) {
        self.count.store(self.queue.items.len() + 1, Ordering::Release);
    }

    /// Appends a datagram unless the stash already holds more than `limit` bytes (SO_RCVBUF;
    /// the kernel's UDP queue applies the same test before it charges a datagram); false =
    /// dropped.
    pub fn push(&mut self, d: Stashed, limit: usize) -> bool {
        let cost = d.data.len() + DATAGRAM_OVERHEAD;
        if self.queue.charged > limit {
            return false;
        }
        self.queue.charged += cost;
        self.queue.items.push_back(d);
        self.count.store(self.queue.items.len(), Ordering::Release);
        true
    }
}

impl Counters {
    /// A datagram received through the kernel socket.
    #[inline]
    pub fn rx(&self, bytes: usize) {
        self.kernel_rx_packets.fetch_add(1, Ordering::Relaxed);
        self.kernel_rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    #[inline]
    pub fn tx(&self, bytes: usize) {
        self.kernel_tx_packets.fetch_add(1, Ordering::Relaxed);
        self.kernel_tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Socket {
    pub domain: i32,
    pub proto: Proto,
    pub state: Mutex<State>,
    /// In the socket's slot of the stats block (or on the heap): derefs to [`Counters`].
    pub counters: crate::stats::SocketStats,
    /// The shm receive side, set once when the socket gets a local address.
    pub rx: OnceLock<RxBinding>,
    /// Set when the socket went back to the kernel after having had an rx binding.
    pub rx_off: AtomicBool,
    /// Datagrams for this socket found on a shared ring by another socket's receive.
    pub stash: Stash,
    /// Mirrors `State::nonblocking` for the receive path, which must not take the state lock.
    pub nonblocking: AtomicBool,
    /// Mirrors `State::remote` for the receive path (see [`Socket::set_peer`]).
    peer: AtomicU64,
    /// Receives that found the ring empty still to go before the next look at the kernel socket
    /// (once per VMA_RX_POLL_OS_RATIO of them; see [`Socket::kernel_look_due`]).
    os_countdown: core::sync::atomic::AtomicU32,
    /// When a paced receive last looked at the kernel socket ([`Socket::kernel_look_paced`]):
    /// nanoseconds since [`monotonic_ns`]'s origin, plus one (0 = never).
    os_looked_at: AtomicU64,
    /// Set when a poll/select/epoll saw a real datagram waiting in the kernel socket.
    pub kernel_hint: AtomicBool,
    /// Mirrors `State::sender_decided`, so sends after the first take no lock.
    pub sender_decided: AtomicBool,
    /// Mirrors `State::decision` ("accelerate?") for the data path (see [`Socket::set_decision`]).
    accelerate: AtomicBool,
    /// Mirrors `State::local` for the data path (see [`Socket::set_local`]).
    local: AtomicU64,
    /// shutdown(2) directions in force ([`SHUT_RD_BIT`], [`SHUT_WR_BIT`]); see [`Socket::shut`].
    shut: core::sync::atomic::AtomicU8,
    /// A pending socket error (ECONNREFUSED from an ICMP, say) that a doorbell probe's MSG_PEEK
    /// took off the kernel socket (reading the error clears it there): the next receive's.
    pub kernel_error: core::sync::atomic::AtomicI32,
    /// The kernel socket's SO_RCVBUF as getsockopt reports it: the bound of the stash, as the
    /// kernel's receive queue is bounded by it.
    pub rcvbuf: core::sync::atomic::AtomicU32,
}

/// Nanoseconds on the monotonic clock since the first call in this process.
pub fn monotonic_ns() -> u64 {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    origin.elapsed().as_nanos() as u64
}

fn pack(a: Option<SocketAddrV4>) -> u64 {
    a.map_or(0, |a| 1 << 48 | u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port()))
}

fn unpack(p: u64) -> Option<SocketAddrV4> {
    (p != 0).then(|| SocketAddrV4::new(((p >> 16) as u32).into(), p as u16))
}

impl Socket {
    pub fn new(domain: i32, proto: Proto) -> Socket {
        Socket {
            domain,
            proto,
            state: Mutex::new(State::default()),
            counters: crate::stats::SocketStats::claim(proto),
            rx: OnceLock::new(),
            rx_off: AtomicBool::new(false),
            stash: Stash::default(),
            nonblocking: AtomicBool::new(false),
            peer: AtomicU64::new(0),
            os_countdown: core::sync::atomic::AtomicU32::new(0),
            os_looked_at: AtomicU64::new(0),
            kernel_hint: AtomicBool::new(false),
            sender_decided: AtomicBool::new(false),
            accelerate: AtomicBool::new(false),
            local: AtomicU64::new(0),
            rcvbuf: core::sync::atomic::AtomicU32::new(DEFAULT_RCVBUF),
            shut: core::sync::atomic::AtomicU8::new(0),
            kernel_error: core::sync::atomic::AtomicI32::new(0),
        }
    }

    /// Records a shutdown(2) the kernel applied (`how` = SHUT_RD/SHUT_WR/SHUT_RDWR). Linux marks
    /// a UDP socket shut down even when the call fails with ENOTCONN.
    pub fn record_shutdown(&self, how: i32) {
        let bits = match how {
            libc::SHUT_RD => SHUT_RD_BIT,
            libc::SHUT_WR => SHUT_WR_BIT,
            libc::SHUT_RDWR => SHUT_RD_BIT | SHUT_WR_BIT,
            _ => 0,
        };
        self.shut.fetch_or(bits, Ordering::Relaxed);
    }

    /// The shutdown directions in force: after SHUT_WR sends are the kernel's (EPIPE), after
    /// SHUT_RD an empty receive is the kernel's (0 at once when blocking).
    #[inline]
    pub fn shut(&self) -> u8 {
        self.shut.load(Ordering::Relaxed)
    }

    /// A receive found the ring empty: is it this one's turn to look at the kernel socket (once
    /// per `ratio`)? A countdown, not a modulo: no division and no locked instruction on the
    /// busy-poll path; concurrent receives may race on it, which only shifts the pace.
    #[inline]
    pub fn kernel_look_due(&self, ratio: u32) -> bool {
        let c = self.os_countdown.load(Ordering::Relaxed);
        if c == 0 {
            self.os_countdown.store(ratio.max(1) - 1, Ordering::Relaxed);
            true
        } else {
            self.os_countdown.store(c - 1, Ordering::Relaxed);
            false
        }
    }

    /// The time pacing of kernel looks (sockets on the AF_XDP datapath, whose kernel socket
    /// only gets what the XDP program passes): true, and the look noted, when at least `gap_ns`
    /// passed since the last one. Asked only when the count (`kernel_look_due`) says a look is
    /// due, so a busy poller reads the clock once per VMA_RX_POLL_OS_RATIO empty polls and
    /// makes at most one system call per `gap_ns`; a slow one still looks every ratio calls.
    pub fn kernel_look_paced(&self, gap_ns: u64) -> bool {
        let now = monotonic_ns() + 1;
        let last = self.os_looked_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < gap_ns {
            return false;
        }
        self.os_looked_at.store(now, Ordering::Relaxed);
        true
    }

    /// Would [`Socket::kernel_look_paced`] say yes now? (Notes nothing.)
    pub fn kernel_look_pace_elapsed(&self, gap_ns: u64) -> bool {
        let last = self.os_looked_at.load(Ordering::Relaxed);
        last == 0 || (monotonic_ns() + 1).saturating_sub(last) >= gap_ns
    }

    /// Is the next empty receive due to look at the kernel socket? (Does not count.)
    #[inline]
    pub fn kernel_look_next(&self) -> bool {
        self.os_countdown.load(Ordering::Relaxed) == 0
    }

    /// Records a decision in the state and in its lock-free mirror.
    pub fn set_decision(&self, st: &mut State, d: Decision) {
        self.accelerate.store(d.accelerate(), Ordering::Relaxed);
        st.decision = Some(d);
    }

    /// Records the local address in the state and in its lock-free mirror.
    pub fn set_local(&self, st: &mut State, local: Option<SocketAddrV4>) {
        st.local = local;
        self.local.store(pack(local), Ordering::Relaxed);
    }

    /// The local address, without taking the state lock.
    #[inline]
    pub fn local(&self) -> Option<SocketAddrV4> {
        unpack(self.local.load(Ordering::Relaxed))
    }

    /// Records the connected peer (None: not connected) in the state and in its lock-free mirror.
    pub fn set_peer(&self, st: &mut State, remote: Option<SocketAddrV4>) {
        st.remote = remote;
        self.peer.store(pack(remote), Ordering::Relaxed);
    }

    /// The connected peer, without taking the state lock.
    #[inline]
    pub fn peer(&self) -> Option<SocketAddrV4> {
        unpack(self.peer.load(Ordering::Relaxed))
    }

    /// The shm receive binding, if the socket has one in force.
    #[inline]
    pub fn rx_binding(&self) -> Option<&RxBinding> {
        if self.rx_off.load(Ordering::Relaxed) {
            return None;
        }
        self.rx.get()
    }

    /// Is the latest decision "accelerate"?
    #[inline]
    pub fn accelerated(&self) -> bool {
        self.accelerate.load(Ordering::Relaxed)
    }
}

impl Drop for Socket {
    /// The last fd is gone: withdraw the shm endpoint (if this process published it).
    /// Runs inside whatever call dropped the last reference (close, dup2, ...), which may well
    /// succeed: the file system calls of the withdrawal must not leave their errno behind.
    fn drop(&mut self) {
        if let Some(b) = self.rx.get() {
            if !self.rx_off.load(Ordering::Relaxed) {
                // SAFETY: errno is thread-local.
                let saved = unsafe { *libc::__errno_location() };
                b.vi().remove_filter(b);
                // SAFETY: as above.
                unsafe { *libc::__errno_location() = saved };
            }
        }
    }
}
