//! The state we keep for a socket we track: what it is, where it is bound and connected, the
//! offload decision, and counters.
//!
//! Only IPv4 UDP sockets are tracked (they are what the datapaths accelerate); a socket whose
//! decision becomes "kernel" is dropped from the fd table and from then on costs nothing.

use core::sync::atomic::{AtomicU64, Ordering};
use std::net::SocketAddrV4;

use parking_lot::Mutex;

use crate::decision::Decision;

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
}

impl Counters {
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
}

impl Socket {
    pub fn new(domain: i32, proto: Proto) -> Socket {
        Socket { domain, proto, state: Mutex::new(State::default()), counters: Counters::default() }
    }

    /// Is the latest decision "accelerate"?
    pub fn accelerated(&self) -> bool {
        self.state.lock().decision.as_ref().is_some_and(|d| d.accelerate())
    }
}
