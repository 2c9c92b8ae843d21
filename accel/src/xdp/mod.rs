//! The AF_XDP datapath: UDP datagrams straight between the NIC queue and the process.
//!
//! An [`XdpVi`] ("virtual interface", as in ef_vi) is one process's handle on receive queues of
//! one interface (one AF_XDP socket per queue, all sharing one UMEM) and one send queue (the
//! first one's). Its parts, one module each:
//!
//! - [`loader`]: the XDP filter program shared by all processes on the interface, its maps
//!   (which datagrams are steered to which AF_XDP socket) and its life cycle.
//! - [`umem`]: the packet-buffer memory shared with the kernel.
//! - [`xsk`]: the AF_XDP socket and its four rings.
//! - [`frame`]: parsing received frames and building frames to send, checksums included.
//! - [`route`]: the next hop of a destination (route + ARP), from the kernel, cached.
//!
//! # Use
//!
//! ```no_run
//! # use accel_engine::{config::Config, xdp::*};
//! let mut vi = XdpVi::open("eth0", 0, &Config::default())?;  // Err → use the kernel
//! vi.add_filter(Filter::udp("10.0.0.1:5000".parse().unwrap()))?;
//! vi.rx_burst(|d| println!("{} -> {}: {} bytes", d.src, d.dst, d.payload.len()));
//! match vi.send("10.0.0.1:5000".parse().unwrap(), "10.0.0.2:6000".parse().unwrap(), b"hi") {
//!     Ok(_) => {}
//!     Err(not_sent) => { /* send it through the kernel socket instead */ }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Several processes
//!
//! The program is shared (see [`loader`]); sockets are not: each `XdpVi` binds its own XSKs on
//! its own UMEM, and the kernel allows one such socket per queue. A second process opening a
//! queue the first holds gets `EBUSY` from bind, i.e. an error from [`XdpVi::open`] — its
//! sockets stay with the kernel. Two processes can both be accelerated on one interface only on
//! different queues ([`XdpVi::open_queues`]), and a datagram then reaches its socket only if the
//! NIC's RSS puts its flow on one of its owner's queues (the filter passes frames from other
//! queues to the kernel). Sharing one queue between processes would need a UMEM shared across
//! processes — not done.
//!
//! # Several queues
//!
//! [`XdpVi::open_queues`] binds one XSK per queue. The first registers the UMEM; the others
//! share it (`XDP_SHARED_UMEM`), each with a fill and a completion ring of its own, as the
//! kernel requires for another queue. Receive frames are one pool: a frame is posted to
//! whichever fill ring has room next (round robin, skipping full rings), so a busy queue gets
//! the frames its neighbours do not need; each fill ring is sized so that all of them together
//! hold no more than the pool (VMA_RX_BUFS / queues, rounded down to a power of two, at most
//! VMA_RX_WRE). Receiving takes from the RX rings in turn, a different one first on each poll,
//! within one bounded batch. Sending uses the first queue's socket's TX ring only (each ring's,
//! see below).
//!
//! Filters are exclusive: a local endpoint (or 5-tuple) already steered to a live process's
//! socket cannot be taken by another ([`XdpVi::add_filter`] fails with `AddrInUse`).
//!
//! # Several rings on one queue
//!
//! The XSKs above are ring 0. [`XdpVi::open_ring`] adds ring *k*: one more socket per queue,
//! bound to the same queue with `XDP_SHARED_UMEM` naming ring 0's socket there, which makes the
//! kernel share that socket's buffer pool — its fill ring (and completion ring) — with it; only
//! the RX ring (and, on the first queue, a TX ring: see [`tx`]) is the new socket's own. A filter names the ring its datagrams go to
//! ([`XdpVi::add_filter_to`]), and the program redirects them to that ring's socket of the
//! queue they arrived on. This is how the ring allocation logic (per socket, thread or core,
//! VMA_RING_ALLOCATION_LOGIC_RX) maps sockets onto XSKs: each ring is read (and slept on) by
//! its own threads, under its own lock. Because every ring's frames come from the same fill
//! rings, receive frames are one pool ([`FillPool`], under a lock of its own): any ring posts
//! the frames it is done with to it, and they come back on whichever ring the program chooses.

pub mod flusher;
pub mod frame;
pub mod loader;
pub mod port;
pub mod route;
pub mod tx;
pub mod umem;
pub mod xsk;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::Config;
use frame::{Checksum, DropReason};
pub use loader::{AttachMode, ProgramStats};
use loader::{ConnKey, FilterKey, Program};
use route::{NoNextHop, Resolver};
use umem::{Umem, FRAME_SIZE};
use xsk::{BindMode, Consumer, Producer, RingSizes, SharedXsk, XdpDesc, Xsk, TX_METADATA_LEN};

/// IP protocol number of UDP, the only protocol filters steer so far.
pub const IPPROTO_UDP: u8 = 17;
/// Most datagrams handled by one [`XdpVi::rx_burst`].
pub const RX_BATCH: u32 = 64;

/// Which datagrams to steer to this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// IP protocol; [`IPPROTO_UDP`].
    pub proto: u8,
    /// The local address and port. 0.0.0.0 = every local unicast address; a multicast group
    /// address = that group (the socket must also have joined it in the kernel, so that the
    /// host sends IGMP reports and the NIC accepts the group's frames).
    pub local: SocketAddrV4,
    /// For a connected socket: only datagrams from this address and port. With a multicast
    /// group as `local` and port 0: the group's datagrams from this source address, whatever
    /// their source port (a source-specific membership).
    pub remote: Option<SocketAddrV4>,
}

impl Filter {
    /// A bound UDP socket's filter.
    pub fn udp(local: SocketAddrV4) -> Filter {
        Filter { proto: IPPROTO_UDP, local, remote: None }
    }

    /// A connected UDP socket's filter.
    pub fn udp_connected(local: SocketAddrV4, remote: SocketAddrV4) -> Filter {
        Filter { proto: IPPROTO_UDP, local, remote: Some(remote) }
    }
}

/// One received datagram, borrowed from the UMEM for the duration of the callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDatagram<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: &'a [u8],
}

/// Where a received datagram lies in its frame, and its addresses ([`XdpVi::poll_rx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxMeta {
    pub offset: u32,
    pub len: u32,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

/// A datagram handed to the NIC queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Bytes on the wire (headers included, no FCS).
    pub frame_len: usize,
}

/// Why a datagram was not sent; the caller sends it through the kernel instead. Nothing was
/// queued, so doing so neither duplicates nor reorders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSent {
    /// The route or the neighbour is not usable here (see [`NoNextHop`]).
    NextHop(NoNextHop),
    /// The IP datagram would exceed the MTU (interface, VMA_MTU, or a UMEM frame).
    TooBig,
    /// No free send frame or TX ring slot right now.
    RingFull,
}

impl NotSent {
    /// Index into [`XdpCounters::tx_not_sent`].
    pub fn index(self) -> usize {
        match self {
            NotSent::NextHop(NoNextHop::NoRoute) => 0,
            NotSent::NextHop(NoNextHop::LocalOrBroadcast) => 1,
            NotSent::NextHop(NoNextHop::OtherInterface) => 2,
            NotSent::NextHop(NoNextHop::Unresolved) => 3,
            NotSent::NextHop(NoNextHop::Netlink) => 4,
            NotSent::TooBig => 5,
            NotSent::RingFull => 6,
        }
    }

    /// Counter names, in [`NotSent::index`] order.
    pub const NAMES: [&'static str; 7] =
        ["no_route", "local_or_broadcast", "other_interface", "unresolved", "netlink", "too_big", "ring_full"];
}

/// What this `XdpVi` has done, for statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    /// Received frames dropped, indexed by `DropReason as usize`.
    pub rx_dropped: [u64; DropReason::COUNT],
    /// Accepted datagrams whose UDP checksum was 0 (none).
    pub rx_checksum_none: u64,
    /// Accepted datagrams with a partial (pseudo-header only) checksum (see [`frame`]).
    pub rx_checksum_partial: u64,
    /// Valid datagrams no socket of this process claims (a filter removed while in flight).
    pub rx_unclaimed: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    /// Datagrams handed back to the caller, indexed by [`NotSent::index`].
    pub tx_not_sent: [u64; 7],
    /// Kicks the kernel refused with a hard error (interface down...). The frames stay on the
    /// TX ring: handing them back could duplicate them if a later kick sends them.
    pub tx_kick_errors: u64,
    /// Kicks made (system calls telling the kernel to send the TX ring; each may send several
    /// frames when kicks are deferred, see [`XdpVi::send_deferred`]).
    pub tx_kicks: u64,
    /// Of those, kicks made because a deferred frame had waited its longest
    /// ([`XdpVi::flush_tx`] called by the port's flusher).
    pub tx_late_kicks: u64,
    /// Frames taken off each queue's RX ring, in [`XdpVi::queues`] order.
    pub rx_queue_frames: Vec<u64>,
}

impl XdpCounters {
    /// Adds another ring's counts (queues in the same order).
    pub fn add(&mut self, other: &XdpCounters) {
        self.rx_datagrams += other.rx_datagrams;
        self.rx_bytes += other.rx_bytes;
        for (a, b) in self.rx_dropped.iter_mut().zip(other.rx_dropped) {
            *a += b;
        }
        self.rx_checksum_none += other.rx_checksum_none;
        self.rx_checksum_partial += other.rx_checksum_partial;
        self.rx_unclaimed += other.rx_unclaimed;
        self.tx_datagrams += other.tx_datagrams;
        self.tx_bytes += other.tx_bytes;
        for (a, b) in self.tx_not_sent.iter_mut().zip(other.tx_not_sent) {
            *a += b;
        }
        self.tx_kick_errors += other.tx_kick_errors;
        self.tx_kicks += other.tx_kicks;
        self.tx_late_kicks += other.tx_late_kicks;
        for (a, b) in self.rx_queue_frames.iter_mut().zip(&other.rx_queue_frames) {
            *a += b;
        }
    }
}

/// One process's AF_XDP queue on one interface. See the module doc.
pub struct XdpVi {
    ifname: String,
    ifindex: u32,
    queue: u32,
    /// Ring 0's sending (the first queue's socket's TX ring).
    tx: tx::TxPath,
    /// The send frames of all rings and the completion ring they come back on.
    tx_pool: Arc<Mutex<tx::TxPool>>,
    tx_wre: u32,
    /// The fill rings and the receive frames not on them, shared with the other rings.
    fill: Arc<Mutex<FillPool>>,
    fill_spare: Arc<std::sync::atomic::AtomicU64>,
    /// The fill ring depth (per queue).
    rx_depth: u32,
    /// Whether rings besides ring 0 may be opened (a ring allocation logic other than per
    /// interface, and see [`rings_refused`]): then every ring's RX rings are [`ring_rx_depth`]
    /// deep. If not, why.
    rings: bool,
    rings_why: Option<String>,
    counters: XdpCounters,
    /// The queues of [`XdpVi::queue`]'s socket and of `more`'s, in that order.
    queues: Vec<u32>,
    /// The RX ring [`XdpVi::poll_rx`] looks at first next time (an index into `queues`).
    rx_turn: usize,
    /// With several queues: an epoll set of every socket, readable when one of them is.
    waiter: Option<std::os::fd::OwnedFd>,
    // Drop order matters: the sockets first (they stop using the UMEM and leave the XSKMAP),
    // then the UMEM, then our membership of the program (which may detach it).
    /// The sockets of the other queues (receive only; they share the UMEM).
    more: Vec<Xsk>,
    /// The first queue's socket: receive, and every send.
    xsk: Xsk,
    umem: Arc<Umem>,
    program: Arc<Mutex<Program>>,
}

impl XdpVi {
    /// Opens queue `queue` of interface `ifname` (in the calling thread's network namespace),
    /// attaching the shared filter program if needed ([`AttachMode::Auto`]). Sizes come from
    /// `config`: VMA_RX_BUFS/VMA_TX_BUFS frames, VMA_RX_WRE fill and RX ring depth, VMA_TX_WRE
    /// TX and completion ring depth, VMA_MTU.
    ///
    /// Any error means "not here": missing privileges (`PermissionDenied`), no such interface
    /// (`NotFound`), the queue taken by another process (`EBUSY`), a kernel without AF_XDP...
    /// The caller keeps its sockets on the kernel and logs the error once.
    pub fn open(ifname: &str, queue: u32, config: &Config) -> io::Result<XdpVi> {
        XdpVi::open_with_mode(ifname, queue, config, AttachMode::Auto)
    }

    /// As [`XdpVi::open`], choosing how the program is attached when this call attaches it (a
    /// program already attached by another process is joined as it is).
    pub fn open_with_mode(ifname: &str, queue: u32, config: &Config, mode: AttachMode) -> io::Result<XdpVi> {
        XdpVi::open_queues(ifname, &[queue], config, mode)
    }

    /// As [`XdpVi::open_with_mode`], with one socket per queue of `queues` (not empty, no
    /// repeats), sharing one UMEM; the first also sends. Any queue that cannot be bound (EBUSY:
    /// another process has it) fails the whole open.
    pub fn open_queues(ifname: &str, queues: &[u32], config: &Config, mode: AttachMode) -> io::Result<XdpVi> {
        let (&queue, rest) = queues.split_first().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let (src_mac, if_mtu) = route::interface_mac_and_mtu(ifname)?;
        let mut program = Program::acquire(ifname, queue, mode)?;
        let ifindex = loader_ifindex(ifname)?;
        let umem = Arc::new(Umem::new(config.rx_bufs, config.tx_bufs, config.mem_alloc)?);
        // The fill rings together hold at most the receive pool (see the module doc).
        let per_queue = (config.rx_bufs / queues.len() as u32).max(1);
        let rx_depth = config.rx_wre.min(1 << (31 - per_queue.leading_zeros()));
        // With rings per socket/thread/core, every ring's RX rings are shallow (see
        // `ring_capacity`), ring 0's included — where more than one ring can be opened.
        let rings_why = rings_refused(config, rx_depth, program.attached_mode());
        let rings = rings_why.is_none();
        let rx_ring = if rings { ring_rx_depth(rx_depth) } else { rx_depth };
        let sizes = RingSizes {
            fill: rx_depth,
            rx: rx_ring,
            tx: config.tx_wre,
            completion: config.tx_wre,
        };
        // virtio_net builds an XSK's skbs from page frags, and before Linux 6.18 that path reads
        // no TX metadata: the request would be ignored and the partial sum sent as it is.
        let metadata = config.xdp_tx_csum_offload && route::interface_driver(ifname).as_deref() != Some("virtio_net");
        let xsk = match Xsk::open(&umem, ifindex, queue, sizes, BindMode::ZeroCopy, None, metadata) {
            Ok(x) => x,
            // Drivers without zero-copy (veth, most virtual NICs) refuse it; copy mode works
            // everywhere. A busy queue stays an error: copy mode would be refused the same way.
            Err(e) if e.raw_os_error() != Some(libc::EBUSY) => {
                Xsk::open(&umem, ifindex, queue, sizes, BindMode::Copy, None, metadata)?
            }
            // EBUSY: the queue already has an AF_XDP socket (another process?). Kept raw, so
            // the caller can tell.
            Err(e) => return Err(e),
        };
        // The other queues receive only: their TX and completion rings are token ones (the
        // kernel wants a completion ring for a socket with its own fill ring).
        let rx_only = RingSizes { tx: 8, completion: 8, ..sizes };
        let mut more = Vec::with_capacity(rest.len());
        for &q in rest {
            more.push(Xsk::open(&umem, ifindex, q, rx_only, BindMode::Copy, Some(&xsk), metadata)?);
        }
        let waiter = if more.is_empty() { None } else { Some(epoll_of(std::iter::once(&xsk).chain(&more).map(Xsk::fd))?) };
        program.register_socket(queue, 0, xsk.fd())?;
        for (&q, x) in rest.iter().zip(&more) {
            program.register_socket(q, 0, x.fd())?;
        }
        let mut xsk = xsk;
        let mut fill_rings = Vec::with_capacity(queues.len());
        for x in std::iter::once(&mut xsk).chain(more.iter_mut()) {
            let ring = x.take_fill().ok_or_else(|| io::Error::other("fill ring taken"))?;
            fill_rings.push((ring, x.dup_fd()?));
        }
        let fill = Arc::new(Mutex::new(FillPool {
            rings: fill_rings,
            turn: 0,
            spare: umem.rx_addrs().collect(),
            spare_count: Default::default(),
        }));
        let fill_spare = fill.lock().spare_counter();
        let max_ip_len = (if_mtu as usize)
            .min(config.mtu as usize)
            .min((FRAME_SIZE - TX_METADATA_LEN) as usize - frame::ETH_HEADER);
        // Zero-copy drivers may not implement the checksum request: only copy mode, where the
        // kernel completes the checksum (NIC or software) for every linear skb, offloads it.
        let tx_checksum_offload = xsk.tx_metadata() && xsk.mode() == BindMode::Copy;
        let send_frames: Vec<u64> = umem.tx_addrs().collect();
        let completion = xsk.take_completion().ok_or_else(|| io::Error::other("completion ring taken"))?;
        let tx_pool = Arc::new(Mutex::new(tx::TxPool::new(completion, &send_frames)));
        let params = tx::TxParams { src_mac, max_ip_len, offload: tx_checksum_offload, mode: xsk.mode() };
        let tx_ring = xsk.take_tx().ok_or_else(|| io::Error::other("TX ring taken"))?;
        let tx = tx::TxPath::new(0, tx_ring, xsk.fd(), params, Resolver::new(ifindex)?, send_frames, tx_pool.clone(), umem.clone());
        let vi = XdpVi {
            ifname: ifname.to_string(),
            ifindex,
            queue,
            tx,
            tx_pool,
            tx_wre: config.tx_wre,
            fill_spare,
            fill,
            rx_depth,
            rings,
            rings_why,
            counters: XdpCounters { rx_queue_frames: vec![0; queues.len()], ..XdpCounters::default() },
            queues: queues.to_vec(),
            rx_turn: 0,
            waiter,
            more,
            xsk,
            umem,
            program: Arc::new(Mutex::new(program)),
        };
        if vi.tx.params().offload {
            // The request is the same for every frame and the kernel does not write it back
            // (no timestamp is asked for): written once, in every send frame's metadata room.
            for addr in vi.umem.tx_addrs() {
                // SAFETY: a send frame, not yet on the TX ring: nobody else reads or writes it.
                if let Some(frame) = unsafe { vi.umem.frame_mut(addr) } {
                    xsk::write_checksum_request(&mut frame[..TX_METADATA_LEN as usize], frame::UDP_CSUM_START, frame::UDP_CSUM_OFFSET);
                }
            }
        }
        vi.fill.lock().post(std::iter::empty());
        Ok(vi)
    }

    /// How many rings (ring 0 included) the fill rings can serve, at most [`loader::MAX_RINGS`]
    /// (1 when the VI was opened for one ring). A queue's fill ring is topped up only by the
    /// rings that read (they post what they release), while the kernel moves its frames to
    /// whichever RX ring the program picks: a ring whose sockets do not read keeps up to its RX
    /// ring's depth of them. So the RX rings of all rings together must stay below the fill
    /// ring's depth — else rings that do not read could empty it, and every other ring would
    /// get nothing (their readers, asleep, would never post). Each ring counts with its RX ring,
    /// a polled batch it may hold unread and the released frames it may not have posted yet;
    /// an eighth of the fill ring is left for the readers. More rings need a deeper fill ring
    /// (VMA_RX_WRE, with VMA_RX_BUFS to back it).
    pub fn ring_capacity(&self) -> u32 {
        if !self.rings {
            return 1;
        }
        rings_for_fill(self.rx_depth)
    }

    /// How many rings may be opened ([`XdpVi::ring_capacity`]) and, for a log line, why no
    /// more.
    pub fn ring_limit(&self) -> (u32, String) {
        if let Some(why) = &self.rings_why {
            return (1, why.clone());
        }
        let n = self.ring_capacity();
        let why = if n >= loader::MAX_RINGS {
            format!("{n} rings, the most the filter program serves")
        } else {
            format!(
                "{n} rings, as many as fill rings of {} frames can serve; raise ACCEL_RX_WRE (and ACCEL_RX_BUFS) for more",
                self.rx_depth
            )
        };
        (n, why)
    }

    /// The RX ring depth of every ring ([`XdpVi::ring_capacity`]).
    fn extra_rx_depth(&self) -> u32 {
        ring_rx_depth(self.rx_depth)
    }

    /// Opens ring `ring` (1 to [`loader::MAX_RINGS`] - 1; ring 0 is this VI's own sockets):
    /// one socket per queue sharing that queue's buffers with ring 0's socket, registered in
    /// the program as the ring's. Datagrams of filters added with [`XdpVi::add_filter_to`] for
    /// `ring` arrive on it. See the module doc.
    ///
    /// With `sends`, the ring also sends, through its socket on the first queue, with its share
    /// of the send frames (VMA_TX_BUFS / [`XdpVi::ring_capacity`], taken from ring 0's free
    /// ones); with none free it does not (its sockets send through ring 0).
    pub fn open_ring(&mut self, ring: u32, sends: bool) -> io::Result<XdpRing> {
        if ring == 0 || ring >= loader::MAX_RINGS {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let share = (self.umem.tx_frames() / self.ring_capacity()).max(1) as usize;
        let mut xsks = Vec::with_capacity(self.queues.len());
        for (i, (&q, first)) in self.queues.iter().zip(std::iter::once(&self.xsk).chain(&self.more)).enumerate() {
            let tx = if i == 0 && sends { self.tx_wre } else { 0 };
            xsks.push(SharedXsk::open(first, self.ifindex, q, self.extra_rx_depth(), tx)?);
        }
        let waiter = if xsks.len() > 1 { Some(epoll_of(xsks.iter().map(SharedXsk::fd))?) } else { None };
        {
            let mut program = self.program.lock();
            for (&q, x) in self.queues.iter().zip(&xsks) {
                program.register_socket(q, ring, x.fd())?;
            }
        }
        let tx = match xsks[0].take_tx() {
            Some(tx_ring) => {
                let resolver = Resolver::new(self.ifindex)?;
                let frames = self.tx.take_free(share);
                if frames.is_empty() {
                    None
                } else {
                    self.tx_pool.lock().give(ring, &frames);
                    let params = self.tx.params().clone();
                    let pool = self.tx_pool.clone();
                    Some(tx::TxPath::new(ring, tx_ring, xsks[0].fd(), params, resolver, frames, pool, self.umem.clone()))
                }
            }
            None => None,
        };
        Ok(XdpRing {
            tx,
            turn: 0,
            counters: XdpCounters { rx_queue_frames: vec![0; self.queues.len()], ..XdpCounters::default() },
            waiter,
            xsks,
            fill: self.fill.clone(),
            fill_spare: self.fill_spare.clone(),
            umem: self.umem.clone(),
        })
    }

    /// Steers datagrams matching `filter` to this queue's socket. `AddrInUse` when another
    /// live process has the same filter.
    pub fn add_filter(&mut self, filter: Filter) -> io::Result<()> {
        self.add_filter_to(filter, 0)
    }

    /// As [`XdpVi::add_filter`], to ring `ring`'s sockets ([`XdpVi::open_ring`]); for a filter
    /// of ours already, moves it to that ring.
    pub fn add_filter_to(&mut self, filter: Filter, ring: u32) -> io::Result<()> {
        add_filter_to(&self.program, filter, ring)
    }

    /// Stops steering `filter` here (datagrams go to the kernel again). `NotFound` when it is
    /// not ours.
    pub fn remove_filter(&mut self, filter: Filter) -> io::Result<()> {
        remove_filter(&self.program, filter)
    }

    /// The program membership, for a holder of filters that outlives a borrow of the VI (the
    /// port's filter table): [`add_filter_to`], [`remove_filter`].
    pub fn program(&self) -> Arc<Mutex<Program>> {
        self.program.clone()
    }

    /// Delivers up to [`RX_BATCH`] received datagrams to `deliver`, in arrival order, and
    /// returns how many. Frames that fail validation are counted by [`DropReason`] and never
    /// delivered. Every frame goes back to the fill ring afterwards (a [`XdpVi::poll_rx`] whose
    /// frames are posted again at once).
    pub fn rx_burst(&mut self, mut deliver: impl FnMut(RxDatagram<'_>)) -> usize {
        let mut taken = [(0u64, None::<RxMeta>); RX_BATCH as usize];
        let mut n = 0;
        self.poll_rx(RX_BATCH, |frame, meta| {
            taken[n] = (frame, meta.ok());
            n += 1;
        });
        let mut delivered = 0;
        for &(frame, meta) in &taken[..n] {
            if let Some(m) = meta {
                if let Some(payload) = self.umem.bytes(frame + u64::from(m.offset), m.len) {
                    delivered += 1;
                    deliver(RxDatagram { src: m.src, dst: m.dst, payload });
                }
            }
        }
        self.fill.lock().post(taken[..n].iter().map(|&(frame, _)| frame));
        delivered
    }

    /// Gives receive frames (frame starts) back to the kernel: see [`FillPool::post`].
    pub fn post_rx(&mut self, frames: &[u64]) {
        self.fill.lock().post(frames.iter().copied());
    }

    /// Receive frames of the pool on no fill ring and with no ring (statistics; no lock).
    pub fn pool_spare(&self) -> u64 {
        self.fill_spare.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes up to `max` received frames off the RX ring and hands each to `each` as (frame
    /// start, parse result with the payload's offset from the frame start and its length). The
    /// frames are the caller's until it posts them again. Datagrams and drops (by [`DropReason`]) are
    /// counted here.
    ///
    /// With several queues the RX rings are read in turn, a different one first on each call,
    /// `max` frames in all.
    pub fn poll_rx(&mut self, max: u32, mut each: impl FnMut(u64, Result<RxMeta, DropReason>)) {
        let n = self.queues.len();
        let first = self.next_rx_turn();
        let mut left = max;
        for k in 0..n {
            if left == 0 {
                break;
            }
            let q = if first + k >= n { first + k - n } else { first + k };
            let xsk = if q == 0 { &mut self.xsk } else { &mut self.more[q - 1] };
            left -= take_frames(&mut xsk.rx, &self.umem, &mut self.counters, q, left, &mut each);
        }
    }

    /// The RX ring to read first this time; the next one the time after (no division: one
    /// queue is the common case).
    #[inline]
    fn next_rx_turn(&mut self) -> usize {
        let first = self.rx_turn;
        self.rx_turn = if first + 1 >= self.queues.len() { 0 } else { first + 1 };
        first
    }

    /// Whether an RX ring holds frames ([`XdpVi::poll_rx`] would take some).
    pub fn rx_pending(&mut self) -> bool {
        self.xsk.rx.available() > 0 || self.more.iter_mut().any(|x| x.rx.available() > 0)
    }

    /// The whole frame starting at `frame` (empty if it is not a frame of the UMEM).
    pub fn frame(&self, frame: u64) -> &[u8] {
        self.umem.bytes(frame, FRAME_SIZE).unwrap_or(&[])
    }

    /// The fill rings' sizes, together.
    pub fn fill_depth(&self) -> u32 {
        self.fill.lock().depth()
    }

    /// Whether the kernel's route to `dst` leaves through this interface (a multicast join that
    /// names no interface is made on the interface of the route to the group).
    pub fn routes_through_here(&mut self, dst: Ipv4Addr) -> bool {
        self.tx.routes_through_here(dst)
    }

    /// The largest UDP payload [`XdpVi::send`] takes.
    pub fn max_payload(&self) -> usize {
        self.tx.params().max_ip_len - frame::IPV4_HEADER - frame::UDP_HEADER
    }

    /// Counts a received frame its caller dropped after parsing (no socket for it).
    pub fn count_unclaimed(&mut self) {
        self.counters.rx_unclaimed += 1;
    }

    /// Sends one UDP datagram from `src` to `dst` through the NIC queue. `src` with address
    /// 0.0.0.0 takes the route's preferred source. On `Err` nothing was queued: the caller
    /// sends it through the kernel.
    pub fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        self.tx.send(&mut self.counters, src, dst, payload)
    }

    /// As [`XdpVi::send`] without the kick: the frame waits on the TX ring until a later send's
    /// kick or [`XdpVi::flush_tx`]. In copy mode every kick is a system call that sends what
    /// the ring holds (and, across veth, runs the receiver's kernel work), so one kick per
    /// several datagrams costs the sender much less per datagram; the caller bounds how many
    /// and how long ([`XdpVi::unkicked`]). In zero-copy mode the frame is kicked at once (the
    /// driver sends without kicks unless it asks for one).
    pub fn send_deferred(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        self.tx.send_deferred(&mut self.counters, src, dst, payload)
    }

    /// Frames sent with [`XdpVi::send_deferred`] and not kicked yet.
    pub fn unkicked(&self) -> u32 {
        self.tx.unkicked()
    }

    /// Ring 0 always sends (see [`XdpRing::sends`]).
    pub fn sends(&self) -> bool {
        true
    }

    /// Kicks the frames [`XdpVi::send_deferred`] left on the TX ring, if any; `late` says the
    /// caller does it because one of them waited its longest (counted apart).
    pub fn flush_tx(&mut self, late: bool) {
        self.tx.flush(&mut self.counters, late)
    }

    /// Sends a batch with one kick; stops at the first datagram that cannot go this way.
    /// Returns how many were queued and, if it stopped early, why (the caller sends
    /// `batch[sent..]` through the kernel, in order).
    pub fn send_burst(&mut self, src: SocketAddrV4, batch: &[(SocketAddrV4, &[u8])]) -> (usize, Option<NotSent>) {
        self.tx.send_burst(&mut self.counters, src, batch)
    }

    /// An fd readable when datagrams are waiting (for poll/epoll): the socket's, or with several
    /// queues an epoll set of all of them.
    pub fn fd(&self) -> RawFd {
        match &self.waiter {
            Some(ep) => ep.as_raw_fd(),
            None => self.xsk.fd(),
        }
    }

    pub fn counters(&self) -> &XdpCounters {
        &self.counters
    }

    /// The shared program's verdict counters (every process on this interface).
    pub fn program_stats(&self) -> ProgramStats {
        self.program.lock().stats()
    }

    /// The kernel's counters for the sockets, summed (drops for a full RX ring, an empty fill
    /// ring...).
    pub fn socket_stats(&self) -> io::Result<libc::xdp_statistics> {
        sum_statistics(std::iter::once(&self.xsk).chain(&self.more).map(Xsk::statistics))
    }

    /// Whether the socket is bound in zero-copy mode (else copy mode).
    pub fn zero_copy(&self) -> bool {
        self.xsk.mode() == BindMode::ZeroCopy
    }

    /// Whether sends leave the UDP checksum to the device (ACCEL_XDP_TX_CSUM_OFFLOAD, a kernel
    /// with AF_XDP TX metadata, copy mode).
    pub fn tx_checksum_offload(&self) -> bool {
        self.tx.params().offload
    }

    /// How this process attached the program, or `None` if it joined an attached one.
    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.program.lock().attached_mode()
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Every queue this VI receives from, the sending one ([`XdpVi::queue`]) first.
    pub fn queues(&self) -> &[u32] {
        &self.queues
    }
}

/// An epoll set (close-on-exec) of `sockets`, readable while one of them is (level-triggered):
/// what a sleeper waits on for several queues.
fn epoll_of(sockets: impl Iterator<Item = RawFd>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain epoll_create1; the result is checked and owned at once.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let ep = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    for fd in sockets {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: a live event struct; both fds are open.
        if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(ep)
}

/// The RX ring depth of each ring where there may be several, for fill rings `fill` deep: an
/// eighth of it, 16 to 256 (a power of two, as `fill` is).
fn ring_rx_depth(fill: u32) -> u32 {
    (fill / 8).clamp(16, 256)
}

/// How many rings fill rings `fill` deep serve ([`XdpVi::ring_capacity`]): each may hold its
/// RX ring, a polled batch and fewer than 32 released frames; an eighth stays for the readers.
fn rings_for_fill(fill: u32) -> u32 {
    ((fill - fill / 8) / (ring_rx_depth(fill) + RX_BATCH + 32)).clamp(1, loader::MAX_RINGS)
}

/// Why one ring only, if so: the ring allocation logic is per interface, the fill rings
/// serve no more, or several sockets on one queue are not safe — generic (skb) mode before
/// Linux 6.15, whose generic receive path locked per socket while the sockets of a queue share
/// its fill ring ("xsk: Fix race condition in AF_XDP generic RX path"); a program another
/// process attached counts as generic there (its mode is unknown).
fn rings_refused(config: &Config, fill: u32, attached: Option<AttachMode>) -> Option<String> {
    if config.ring_allocation_rx == crate::config::RingAllocation::PerInterface {
        return Some("one ring per interface (ACCEL_RING_ALLOCATION_LOGIC_RX=0)".into());
    }
    if rings_for_fill(fill) < 2 {
        return Some(format!("fill rings of {fill} frames serve one ring; raise ACCEL_RX_WRE (and ACCEL_RX_BUFS) for more"));
    }
    if attached != Some(AttachMode::Native) && !kernel_at_least(6, 15) {
        return Some("generic-mode XDP before Linux 6.15 cannot share a queue between AF_XDP sockets safely".into());
    }
    None
}

/// Whether the running kernel is at least `major.minor` (uname's release).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: zeroed is a valid utsname (byte arrays); uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a live utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    let release: String = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect();
    parse_release(&release).is_some_and(|v| v >= (major, minor))
}

/// (major, minor) of a kernel release such as "6.18.44-fc-v1300".
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Takes up to `left` frames off the RX ring `rx` (of queue index `q`) and hands each to
/// `each` as (frame start, parse result); counts them in `counters`. Returns how many it took.
fn take_frames(
    rx: &mut Consumer<XdpDesc>,
    umem: &Umem,
    counters: &mut XdpCounters,
    q: usize,
    left: u32,
    each: &mut impl FnMut(u64, Result<RxMeta, DropReason>),
) -> u32 {
    let ready = rx.available().min(left);
    for i in 0..ready {
        let XdpDesc { addr, len, .. } = rx.peek(i);
        let frame_start = addr - addr % u64::from(FRAME_SIZE);
        let parsed = umem.bytes(addr, len).ok_or(DropReason::BadDescriptor).and_then(|bytes| {
            let d = frame::parse_udp4(bytes)?;
            let offset = (addr - frame_start) as usize + (d.payload.as_ptr() as usize - bytes.as_ptr() as usize);
            Ok((d, offset))
        });
        let meta = match parsed {
            Ok((d, offset)) => {
                counters.rx_datagrams += 1;
                counters.rx_bytes += d.payload.len() as u64;
                match d.checksum {
                    Checksum::None => counters.rx_checksum_none += 1,
                    Checksum::Partial => counters.rx_checksum_partial += 1,
                    Checksum::Verified => {}
                }
                Ok(RxMeta { offset: offset as u32, len: d.payload.len() as u32, src: d.src, dst: d.dst })
            }
            Err(reason) => {
                counters.rx_dropped[reason as usize] += 1;
                Err(reason)
            }
        };
        each(frame_start, meta);
    }
    if ready > 0 {
        rx.release(ready);
        if let Some(n) = counters.rx_queue_frames.get_mut(q) {
            *n += u64::from(ready);
        }
    }
    ready
}

/// Steers `filter` to ring `ring` of the process whose membership `program` is.
pub fn add_filter_to(program: &Mutex<Program>, filter: Filter, ring: u32) -> io::Result<()> {
    match filter.remote {
        None => program.lock().add_filter(FilterKey::new(filter.proto, filter.local), ring),
        Some(remote) => program.lock().add_conn(ConnKey::new(filter.proto, filter.local, remote), ring),
    }
}

/// Stops steering `filter` to the process whose membership `program` is.
pub fn remove_filter(program: &Mutex<Program>, filter: Filter) -> io::Result<()> {
    match filter.remote {
        None => program.lock().remove_filter(FilterKey::new(filter.proto, filter.local)),
        Some(remote) => program.lock().remove_conn(ConnKey::new(filter.proto, filter.local, remote)),
    }
}

/// The receive frames of a VI: its queues' fill rings (one per queue, shared by the sockets of
/// every ring on that queue) and the frames that are on none of them yet. Under a lock of its
/// own: the rings post to it from their own threads.
pub struct FillPool {
    /// Each queue's fill ring, with a descriptor of the ring-0 socket it belongs to (for the
    /// need-wakeup kick), in [`XdpVi::queues`] order.
    rings: Vec<(Producer<u64>, OwnedFd)>,
    /// The fill ring tried first next time.
    turn: usize,
    /// Frames that did not fit on the fill rings.
    spare: Vec<u64>,
    /// Their number, readable without the lock (statistics).
    spare_count: Arc<std::sync::atomic::AtomicU64>,
}

impl FillPool {
    /// Gives frames back to the kernel: the spare ones first, then `frames`; with several queues
    /// the fill rings take turns, a full one skipped. What does not fit is kept, and posted by a
    /// later call (every frame the kernel takes comes back through one: frames are never
    /// stranded while a fill ring has room for them). Publishes what it put, waking the kernel
    /// where it asked.
    pub fn post(&mut self, frames: impl IntoIterator<Item = u64>) {
        let mut touched = 0u64; // bit per fill ring, for the queues of a 64-queue NIC
        let mut all_full = false;
        while let Some(&frame) = self.spare.last() {
            if !self.push(frame, &mut touched) {
                all_full = true;
                break;
            }
            self.spare.pop();
        }
        for frame in frames {
            if all_full || !self.push(frame, &mut touched) {
                all_full = true;
                self.spare.push(frame);
            }
        }
        self.spare_count.store(self.spare.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for (i, (ring, fd)) in self.rings.iter_mut().enumerate() {
            if i >= 64 || touched & (1 << i) != 0 {
                ring.submit();
                if ring.needs_wakeup() {
                    xsk::kick_fill(fd.as_raw_fd());
                }
            }
        }
    }

    fn push(&mut self, frame: u64, touched: &mut u64) -> bool {
        let n = self.rings.len();
        for k in 0..n {
            let q = if self.turn + k >= n { self.turn + k - n } else { self.turn + k };
            if self.rings[q].0.push(frame) {
                *touched |= 1u64.checked_shl(q as u32).unwrap_or(0);
                self.turn = if q + 1 >= n { 0 } else { q + 1 };
                return true;
            }
        }
        false
    }

    /// The fill rings' sizes, together.
    pub fn depth(&self) -> u32 {
        self.rings.iter().map(|(r, _)| r.size()).sum()
    }

    /// Frames on no fill ring (as of the last [`FillPool::post`]), without the lock.
    pub fn spare_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.spare_count.clone()
    }
}

/// Ring `k` ≥ 1 of a VI ([`XdpVi::open_ring`]): a socket per queue, sharing the VI's buffers,
/// that receives the datagrams of the filters steered to ring `k`, and, when opened to send,
/// sends through a TX ring of its own on the first queue ([`tx`]); else its sockets send
/// through the VI's ring 0.
pub struct XdpRing {
    /// Its sending, through its socket on the first queue (None: it has no send frames; its
    /// sockets send through ring 0).
    tx: Option<tx::TxPath>,
    /// The RX ring [`XdpRing::poll_rx`] looks at first next time.
    turn: usize,
    /// What the ring received (the receive counters only).
    counters: XdpCounters,
    /// With several queues: an epoll set of the sockets.
    waiter: Option<OwnedFd>,
    // The sockets before the buffers they use.
    xsks: Vec<SharedXsk>,
    fill: Arc<Mutex<FillPool>>,
    fill_spare: Arc<std::sync::atomic::AtomicU64>,
    umem: Arc<Umem>,
}

impl XdpRing {
    /// As [`XdpVi::poll_rx`], from this ring's sockets.
    pub fn poll_rx(&mut self, max: u32, mut each: impl FnMut(u64, Result<RxMeta, DropReason>)) {
        let n = self.xsks.len();
        let first = self.turn;
        self.turn = if first + 1 >= n { 0 } else { first + 1 };
        let mut left = max;
        for k in 0..n {
            if left == 0 {
                break;
            }
            let q = if first + k >= n { first + k - n } else { first + k };
            left -= take_frames(&mut self.xsks[q].rx, &self.umem, &mut self.counters, q, left, &mut each);
        }
    }

    /// Whether an RX ring of the ring holds frames.
    pub fn rx_pending(&mut self) -> bool {
        self.xsks.iter_mut().any(|x| x.rx.available() > 0)
    }

    /// Gives receive frames back to the kernel ([`FillPool::post`]): the pool is the VI's.
    pub fn post_rx(&mut self, frames: &[u64]) {
        self.fill.lock().post(frames.iter().copied());
    }

    /// As [`XdpVi::pool_spare`].
    pub fn pool_spare(&self) -> u64 {
        self.fill_spare.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The whole frame starting at `frame` (empty if it is not a frame of the UMEM).
    pub fn frame(&self, frame: u64) -> &[u8] {
        self.umem.bytes(frame, FRAME_SIZE).unwrap_or(&[])
    }

    /// The VI's fill rings' sizes, together (this ring's frames come from them).
    pub fn fill_depth(&self) -> u32 {
        self.fill.lock().depth()
    }

    /// Counts a received frame its caller dropped after parsing (no socket for it).
    pub fn count_unclaimed(&mut self) {
        self.counters.rx_unclaimed += 1;
    }

    /// What this ring received (receive counters; frames per queue in `rx_queue_frames`).
    pub fn counters(&self) -> &XdpCounters {
        &self.counters
    }

    /// The kernel's counters for the ring's sockets, summed.
    pub fn socket_stats(&self) -> io::Result<libc::xdp_statistics> {
        sum_statistics(self.xsks.iter().map(SharedXsk::statistics))
    }

    /// An fd readable when the ring has datagrams: the socket's, or an epoll set of them.
    pub fn fd(&self) -> RawFd {
        match &self.waiter {
            Some(ep) => ep.as_raw_fd(),
            None => self.xsks[0].fd(),
        }
    }

    /// Whether the ring sends (else its sockets send through ring 0).
    pub fn sends(&self) -> bool {
        self.tx.is_some()
    }

    /// As [`XdpVi::send`], through this ring's TX ring (`NotSent::RingFull` if it has none).
    pub fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        match &mut self.tx {
            Some(tx) => tx.send(&mut self.counters, src, dst, payload),
            None => Err(NotSent::RingFull),
        }
    }

    /// As [`XdpVi::send_deferred`].
    pub fn send_deferred(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        match &mut self.tx {
            Some(tx) => tx.send_deferred(&mut self.counters, src, dst, payload),
            None => Err(NotSent::RingFull),
        }
    }

    /// As [`XdpVi::unkicked`].
    pub fn unkicked(&self) -> u32 {
        self.tx.as_ref().map_or(0, tx::TxPath::unkicked)
    }

    /// As [`XdpVi::flush_tx`].
    pub fn flush_tx(&mut self, late: bool) {
        if let Some(tx) = &mut self.tx {
            tx.flush(&mut self.counters, late);
        }
    }
}

/// The sum of sockets' kernel counters.
fn sum_statistics(each: impl Iterator<Item = io::Result<libc::xdp_statistics>>) -> io::Result<libc::xdp_statistics> {
    // SAFETY: zeroed is a valid value of this plain-integer struct.
    let mut sum: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    for st in each {
        let st = st?;
        sum.rx_dropped += st.rx_dropped;
        sum.rx_invalid_descs += st.rx_invalid_descs;
        sum.tx_invalid_descs += st.tx_invalid_descs;
        sum.rx_ring_full += st.rx_ring_full;
        sum.rx_fill_ring_empty_descs += st.rx_fill_ring_empty_descs;
        sum.tx_ring_empty_descs += st.tx_ring_empty_descs;
    }
    Ok(sum)
}

fn loader_ifindex(ifname: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(ifname).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}"))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_fit_in_seven_eighths_of_the_fill_ring() {
        let capacity = rings_for_fill;
        assert_eq!(ring_rx_depth(1024), 128);
        assert_eq!(ring_rx_depth(64), 16);
        assert_eq!(ring_rx_depth(16384), 256);
        assert_eq!(capacity(1024), 4, "the default");
        assert_eq!(capacity(256), 1);
        assert_eq!(capacity(8192), 20);
        assert_eq!(capacity(16384), 32, "the program's maximum");
        for fill in (4..=15).map(|k| 1u32 << k) {
            let n = capacity(fill);
            assert!(n * (ring_rx_depth(fill) + RX_BATCH + 32) <= fill - fill / 8 || n == 1, "fill {fill}: {n} rings");
        }
    }

    #[test]
    fn ring_counters_add_up() {
        let mut a = XdpCounters { rx_datagrams: 1, tx_kicks: 2, rx_queue_frames: vec![3, 4], ..XdpCounters::default() };
        let mut b = XdpCounters { rx_datagrams: 10, tx_kicks: 20, rx_queue_frames: vec![30, 40], ..XdpCounters::default() };
        b.rx_dropped[1] = 5;
        b.tx_not_sent[6] = 6;
        a.add(&b);
        assert_eq!((a.rx_datagrams, a.tx_kicks, a.rx_dropped[1], a.tx_not_sent[6]), (11, 22, 5, 6));
        assert_eq!(a.rx_queue_frames, [33, 44]);
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.6"), Some((6, 6)));
        assert_eq!(parse_release("garbage"), None);
        assert!(kernel_at_least(4, 0), "this machine runs something newer");
    }
}

