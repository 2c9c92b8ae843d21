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

/// Counters, updated without locks.
#[derive(Debug, Default)]
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
    pub xdp_rx_packets: AtomicU64,
    pub xdp_rx_bytes: AtomicU64,
    pub xdp_tx_packets: AtomicU64,
    pub xdp_tx_bytes: AtomicU64,
    /// Sent into a full ring: dropped, as UDP does.
    pub drop_ring_full: AtomicU64,
    /// Demuxed for this socket while its stash was at its SO_RCVBUF bound.
    pub drop_rcvbuf: AtomicU64,
    /// From a source other than the connected peer.
    pub drop_not_peer: AtomicU64,
    pub doorbells_sent: AtomicU64,
    pub doorbells_received: AtomicU64,
}

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
    /// A datagram received through a bypass VI.
    #[inline]
    pub fn bypass_rx(&self, kind: crate::vi::ViKind, bytes: usize) {
        let (p, b) = match kind {
            crate::vi::ViKind::Xdp => (&self.xdp_rx_packets, &self.xdp_rx_bytes),
            _ => (&self.shm_rx_packets, &self.shm_rx_bytes),
        };
        p.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// A datagram sent through a bypass VI.
    #[inline]
    pub fn bypass_tx(&self, kind: crate::vi::ViKind, bytes: usize) {
        let (p, b) = match kind {
            crate::vi::ViKind::Xdp => (&self.xdp_tx_packets, &self.xdp_tx_bytes),
            _ => (&self.shm_tx_packets, &self.shm_tx_bytes),
        };
        p.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes as u64, Ordering::Relaxed);
    }
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
    pub counters: Counters,
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
    /// Counts receives that found the ring empty, to look at the kernel socket once per
    /// VMA_RX_POLL_OS_RATIO of them.
    pub os_tick: core::sync::atomic::AtomicU32,
    /// Set when a poll/select/epoll saw a real datagram waiting in the kernel socket.
    pub kernel_hint: AtomicBool,
    /// Mirrors `State::sender_decided`, so sends after the first take no lock.
    pub sender_decided: AtomicBool,
    /// Mirrors `State::decision` ("accelerate?") for the data path (see [`Socket::set_decision`]).
    accelerate: AtomicBool,
    /// Mirrors `State::local` for the data path (see [`Socket::set_local`]).
    local: AtomicU64,
    /// The kernel socket's SO_RCVBUF as getsockopt reports it: the bound of the stash, as the
    /// kernel's receive queue is bounded by it.
    pub rcvbuf: core::sync::atomic::AtomicU32,
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
            counters: Counters::default(),
            rx: OnceLock::new(),
            rx_off: AtomicBool::new(false),
            stash: Stash::default(),
            nonblocking: AtomicBool::new(false),
            peer: AtomicU64::new(0),
            os_tick: core::sync::atomic::AtomicU32::new(0),
            kernel_hint: AtomicBool::new(false),
            sender_decided: AtomicBool::new(false),
            accelerate: AtomicBool::new(false),
            local: AtomicU64::new(0),
            rcvbuf: core::sync::atomic::AtomicU32::new(DEFAULT_RCVBUF),
        }
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
    fn drop(&mut self) {
        if let Some(b) = self.rx.get() {
            if !self.rx_off.load(Ordering::Relaxed) {
                b.vi().remove_filter(b);
            }
        }
    }
}
