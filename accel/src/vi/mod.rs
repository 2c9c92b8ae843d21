//! Datapaths behind one interface: the VI ("virtual interface", after ef_vi).
//!
//! A VI is what a socket's datagrams travel through. In ef_vi's terms it owns a receive queue of
//! packet buffers, a transmit path, and *filters* that steer (protocol, local address, local
//! port[, remote address, remote port]) to it. accel has four:
//!
//! | VI | receive queue | filter table | transmit |
//! |----|---------------|--------------|----------|
//! | [`kernel`] | the socket's own kernel receive queue | the kernel's socket lookup | `sendmsg` |
//! | [`shm`](crate::shm::vi) | a shared-memory ring per process/socket/thread/core | the per-user registry | straight into the receiver's ring |
//! | xdp | the AF_XDP RX ring (UMEM frames) | the XDP program's hash map | the AF_XDP TX ring |
//! | efvi | the ef_vi RX ring | ef_vi filters | the ef_vi TX ring |
//!
//! The socket code ([`crate::udp`]) has one shape for all of them: a receive serves the
//! socket's bypass [`RxBinding`] first, then the kernel VI; a send asks each bypass VI whether it
//! serves the destination ([`Vi::transmit`] → [`TxOutcome::NotServed`] means "not mine") and
//! ends at the kernel VI, which serves everything.
//!
//! ## Two receive models
//! Hardware and kernel rings hand out buffers in one of two ways, and both fit:
//! - **posted buffers, then completions** ([`RxModel::Posted`]: ef_vi on EF10 NICs, the AF_XDP
//!   fill ring): the consumer gives empty buffers to the VI and later learns which were filled.
//!   [`posted::PostedQueue`] keeps buffers posted and turns completions into the second model.
//! - **borrow by id, then release** ([`RxModel::Borrowed`]: ef_vi on X3 NICs, the shm ring): the
//!   VI owns the buffers; the consumer looks at the next one in place and releases it when done.
//!
//! The socket code consumes an [`RxQueue`], i.e. the second model, so a datagram is copied once,
//! from the VI's buffer into the application's.

pub mod kernel;
pub mod posted;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use libc::c_int;

use crate::socket::{Proto, Socket};

/// Which datapath a VI is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViKind {
    /// The kernel's own socket: the fallback, always there.
    Kernel,
    /// Same-host shared-memory rings between accelerated processes.
    Shm,
    /// AF_XDP sockets with an XDP filter program.
    Xdp,
    /// Solarflare ef_vi.
    Efvi,
}

impl ViKind {
    pub fn name(self) -> &'static str {
        match self {
            ViKind::Kernel => "kernel",
            ViKind::Shm => "shm",
            ViKind::Xdp => "xdp",
            ViKind::Efvi => "efvi",
        }
    }
}

/// How a VI's receive queue hands out packet buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxModel {
    /// The consumer posts empty buffers and polls for completions (ef_vi EF10, AF_XDP).
    Posted,
    /// The consumer borrows the next filled buffer by id and releases it (ef_vi X3, shm).
    Borrowed,
}

/// What a filter steers to a VI: datagrams of `proto` for `local` (a wildcard address serves
/// every local address), and, for a connected socket, only those from `remote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    pub proto: Proto,
    pub local: SocketAddrV4,
    pub remote: Option<SocketAddrV4>,
}

/// A buffer lent by a receive queue: a ring position, a UMEM frame, a packet id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufId(pub u64);

/// A receive-queue entry that failed validation: give it to [`RxQueue::discard`], which drops
/// and counts it. It is never delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadEntry(pub u64);

/// A received datagram, borrowed from the VI's buffer until released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDatagram<'a> {
    /// The filter owner it is for (a queue may be shared by several sockets): the `cookie` of
    /// that socket's [`RxBinding`].
    pub owner: u64,
    /// Its sender.
    pub src: SocketAddrV4,
    /// Its bytes, in the VI's buffer: untrusted, bounds-checked by the queue.
    pub payload: &'a [u8],
}

/// What [`RxQueue::arm_for`] registered, for [`RxQueue::disarm_for`].
pub use crate::shm::ring::SleepTicket;

/// A receive queue in the borrow/release model (see the module docs).
///
/// Several consumers may share one (a forked child, several threads): `release` says who won.
pub trait RxQueue: Send + Sync + fmt::Debug {
    /// The next datagram, left in place: `None` when empty.
    fn borrow(&self) -> Option<Result<(BufId, RxDatagram<'_>), BadEntry>>;
    /// Done with a borrowed datagram. False if another consumer took it first: what was read
    /// must be treated as not received.
    fn release(&self, id: BufId) -> bool;
    /// Drops (and counts) an entry that failed validation.
    fn discard(&self, bad: BadEntry);
    /// How many datagrams it can hold.
    fn capacity(&self) -> u32;
    /// Nothing to borrow, at the instant of the check.
    fn is_empty(&self) -> bool;
    /// Before a multiplexer sleeps on the queue's kernel fds: ask for a wakeup on *any* arrival.
    /// False if data is already there (nothing stays registered).
    fn arm(&self) -> bool;
    /// Withdraws an [`RxQueue::arm`].
    fn disarm(&self);
    /// Before a blocking receive for `owner` sleeps: ask for a wakeup when a datagram for it
    /// arrives.
    fn arm_for(&self, owner: u64) -> SleepTicket;
    /// Withdraws an [`RxQueue::arm_for`].
    fn disarm_for(&self, ticket: SleepTicket, owner: u64);
    /// Current and highest fill level, for statistics.
    fn fill(&self) -> (u64, u64);
    /// A kernel fd that turns readable when the queue receives, for a queue no sender can ring
    /// a doorbell for (AF_XDP: the XSK). Sleepers wait on it next to the socket's own fd.
    fn wait_fd(&self) -> Option<c_int> {
        None
    }
}

/// A send, as a VI sees it.
#[derive(Clone, Copy, Debug)]
pub struct TxRequest<'a> {
    /// The sender's kernel socket (wakeups for a sleeping receiver travel through it).
    pub fd: c_int,
    /// The source address the receiver will see.
    pub src: SocketAddrV4,
    pub dest: SocketAddrV4,
    pub payload: &'a [u8],
    /// The sender's ring, for a VI with several (AF_XDP: its socket's receive ring, which also
    /// sends under a ring allocation logic for TX other than per interface); 0 otherwise.
    pub ring: u32,
}

/// The result of [`Vi::transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// On its way; `woke` = a sleeping receiver had to be woken (one doorbell sent).
    Sent { woke: bool },
    /// The receive queue was full: dropped and counted, as UDP may (a sender never blocks on a
    /// stuck receiver).
    DroppedFull,
    /// This VI does not serve the destination (or this datagram): try the next one.
    NotServed,
}

/// The VI-specific part of a filter, for the VI that installed it.
#[derive(Debug)]
pub enum FilterState {
    Shm(crate::shm::vi::ShmFilter),
    Xdp(crate::xdp::port::XdpFilter),
}

/// A socket's receive side on a bypass VI: the filter that steers its datagrams and the queue
/// they arrive on.
#[derive(Debug)]
pub struct RxBinding {
    /// The VI that installed the filter ([`RxBinding::vi`]).
    pub kind: ViKind,
    pub queue: Arc<dyn RxQueue>,
    /// Tags this socket's datagrams on a shared queue (random, so a datagram or doorbell cannot
    /// be forged by a process that cannot read the user's registry).
    pub cookie: u64,
    pub local: SocketAddrV4,
    /// The process that installed the filter and the fd it installed it for (liveness checks).
    pub pid: u32,
    pub fd: i32,
    pub state: FilterState,
}

/// A datapath. Implementations: [`kernel::KernelVi`], [`crate::shm::vi::ShmVi`].
pub trait Vi: Send + Sync + fmt::Debug {
    fn kind(&self) -> ViKind;
    fn rx_model(&self) -> RxModel;
    /// The largest payload it carries; larger datagrams take the kernel.
    fn max_payload(&self) -> usize;
    /// Could it carry datagrams to `ip` at all? A cheap test before [`Vi::transmit`].
    fn reaches(&self, ip: Ipv4Addr) -> bool;
    /// Installs a filter steering `filter`'s datagrams to a receive queue for socket `owner`
    /// (whose kernel socket is `fd`).
    fn add_filter(&self, fd: c_int, filter: &Filter, owner: &Arc<Socket>) -> io::Result<RxBinding>;
    /// Removes a filter installed by [`Vi::add_filter`]. Datagrams already queued stay queued.
    fn remove_filter(&self, binding: &RxBinding);
    /// Sends one datagram if this VI serves its destination.
    fn transmit(&self, tx: &TxRequest<'_>) -> TxOutcome;
}

impl RxBinding {
    /// The VI that installed this binding.
    pub fn vi(&self) -> &'static dyn Vi {
        by_kind(self.kind).unwrap_or(&kernel::KERNEL)
    }
}

/// The process's VI of a kind, if it is set up.
pub fn by_kind(kind: ViKind) -> Option<&'static dyn Vi> {
    match kind {
        ViKind::Kernel => Some(&kernel::KERNEL),
        ViKind::Shm => crate::shm::vi::existing().map(|v| v as &'static dyn Vi),
        ViKind::Xdp => crate::xdp::port::existing().map(|v| v as &'static dyn Vi),
        ViKind::Efvi => None,
    }
}

/// The socket of this process whose binding has `cookie`, on any bypass VI.
pub fn socket_of(cookie: u64) -> Option<Arc<Socket>> {
    if let Some(s) = crate::shm::vi::existing().and_then(|vi| vi.socket_of(cookie)) {
        return Some(s);
    }
    crate::xdp::port::existing().and_then(|p| p.socket_of(cookie))
}

/// A short description for logs: "shm ring R (…)".
impl fmt::Display for RxBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} filter {} cookie {:x}", self.kind.name(), self.local, self.cookie)
    }
}

/// The key of the ring a socket bound to `local` by the calling thread uses, by the ring
/// allocation logic (VMA_RING_ALLOCATION_LOGIC_RX): sockets with one key share a ring. `seq`
/// numbers the rings of the per-socket logic. The shm VI and the AF_XDP port both use it.
pub fn ring_key(logic: crate::config::RingAllocation, local: std::net::SocketAddrV4, seq: &std::sync::atomic::AtomicU32) -> String {
    use crate::config::RingAllocation;
    match logic {
        RingAllocation::PerInterface => {
            if local.ip().is_loopback() {
                "if-lo".into()
            } else {
                "if-any".into()
            }
        }
        RingAllocation::PerIp => format!("ip-{}", local.ip()),
        RingAllocation::PerSocket => format!("sock-{}", seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        // SAFETY: gettid cannot fail.
        RingAllocation::PerThread => format!("tid-{}", unsafe { libc::gettid() }),
        RingAllocation::PerCore => {
            // SAFETY: sched_getcpu has no preconditions.
            format!("cpu-{}", unsafe { libc::sched_getcpu() }.max(0))
        }
        RingAllocation::PerCoreAffinity => {
            // As libvma's 31: the ring of the core the thread runs on, and the thread stays
            // on that core, so ring and consumer keep sharing a cache.
            // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is ours.
            let cpu = unsafe { libc::sched_getcpu() }.max(0);
            unsafe {
                let mut set: libc::cpu_set_t = core::mem::zeroed();
                libc::CPU_SET(cpu as usize, &mut set);
                if libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                    crate::log::debug(format_args!("ring allocation 31: thread pinned to cpu {cpu}"));
                }
            }
            format!("cpu-{cpu}")
        }
    }
}
