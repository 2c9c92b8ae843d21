//! The AF_XDP datapath as one of the engine's VIs ([`crate::vi::Vi`]).
//!
//! One [`XdpPort`] per process: the receive queues `ACCEL_XDP_QUEUES` names (all by default; one
//! AF_XDP socket each, sharing one UMEM, see [`super`]) of one interface (`ACCEL_XDP_IFNAME`,
//! else the interface that owns the address of the first socket that asks, else the only
//! non-loopback interface with an IPv4 address, for a socket bound to 0.0.0.0), opened on first
//! use. If it cannot be opened (no CAP_NET_ADMIN/CAP_BPF, no XDP, a queue taken by another
//! process...) the process says so in one log line and every socket stays on the kernel (and
//! shm, if on).
//!
//! - **Receive**: a socket bound (or connected) on an address of the interface, or on 0.0.0.0,
//!   gets a filter in the shared XDP program steering its datagrams to our XSK. The XSK's frames
//!   are served through [`PostedQueue`] (the fill ring is the "post", the RX ring the
//!   completions); a datagram is demultiplexed to its socket by destination (and source, for a
//!   connected filter or a multicast member's source filter) and copied once, into the
//!   application's buffer. The kernel socket is still read (dual path): whatever the program
//!   passes (other queues, frames it does not parse, datagrams from this host) arrives there.
//! - **Rings**: a socket's ring is chosen by VMA_RING_ALLOCATION_LOGIC_RX (`XdpPort::ring_for`):
//!   ring 0 is the port's own queue; a new ring key gets a ring of its own ([`XdpVi::open_ring`]:
//!   XSKs on the same queues, sharing their buffers), with its own [`PostedQueue`], wait fd and
//!   counters; all rings read one filter table ([`Table`]) to hand frames to sockets.
//! - **Multicast**: memberships stay the kernel's; a member's filters follow its socket options
//!   under the single-member rule ([`XdpPort::membership`], `FilterTable::check_groups`).
//! - **Wakeups**: nobody can ring a doorbell for a datagram from the wire, so the queue names
//!   the XSK fd as its [`RxQueue::wait_fd`](crate::vi::RxQueue::wait_fd): blocking receives and
//!   the poll/select/epoll loops sleep on it next to the application's fds.
//! - **Send**: Ethernet/IPv4/UDP built in a UMEM frame (the UDP checksum left to the device in
//!   copy mode where the kernel takes TX metadata, else computed here), next hop from
//!   rtnetlink (cached, see [`super::route`]). An unresolved neighbour, no route through this
//!   interface, a local or broadcast destination, a datagram over the MTU or a full ring →
//!   [`TxOutcome::NotServed`], i.e. the kernel sends it (and resolves the neighbour meanwhile).
//! - **fork**: the child must not touch the parent's rings (one consumer per ring): in the child
//!   the port serves nothing, its sockets are the kernel's (the parent keeps receiving).
//! - **exit**: [`shutdown`] (atexit) closes the XSK and leaves the program, detaching it if we
//!   were its last user. After kill -9 the next user reclaims it (see [`super::loader`]).

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use libc::c_int;
use parking_lot::Mutex;

use super::{flusher, AttachMode, Filter as XdpFilterSpec, NotSent, XdpCounters, XdpRing, XdpVi};
use crate::config::Config;
use crate::socket::{Proto, Socket};
use crate::vi::posted::{Completion, PostedQueue, PostedRx};
use crate::vi::{BufId, Filter, FilterState, RxBinding, RxModel, RxQueue, TxOutcome, TxRequest, Vi, ViKind};

/// The XDP part of a socket's [`RxBinding`]: what to remove at close.
#[derive(Debug)]
pub struct XdpFilter {
    pub spec: XdpFilterSpec,
    /// The ring its datagrams arrive on (see `XdpPort::ring_for`).
    pub ring: u32,
    /// The 5-tuple filter added when the bound socket connected (see [`XdpPort::connected`]).
    pub conn: Mutex<Option<(SocketAddrV4, SocketAddrV4)>>,
}

/// The device side of one of the port's receive queues (rings): ring 0's XdpVi ([`XdpDev`]) or
/// another ring's XdpRing ([`XdpRingDev`]), None after shutdown; the filter table is the port's.
pub struct RingDev<S> {
    src: Option<S>,
    table: Arc<Table>,
    /// The ring as `accel stat` sees it (fill, buffers), in the stats block.
    stats: Option<crate::stats::MemoryRing>,
    /// Frames received per queue, in the stats block, and what of the ring's counts
    /// ([`super::XdpCounters::rx_queue_frames`]) was added there already.
    queue_stats: Option<crate::stats::QueueCounters>,
    queue_published: Vec<u64>,
    /// [`PostedRx::poll`]'s scratch list of received frames, kept for its capacity.
    got: Vec<(u64, Result<super::RxMeta, super::frame::DropReason>)>,
    depth: u32,
}

/// Ring 0's device: the port's XdpVi, which also sends.
pub type XdpDev = RingDev<XdpVi>;
/// Another ring's device ([`XdpVi::open_ring`]).
pub type XdpRingDev = RingDev<XdpRing>;

/// What a ring's device reads frames from.
pub trait RxSource: Send {
    fn rx_pending(&mut self) -> bool;
    fn poll_rx(&mut self, max: u32, each: impl FnMut(u64, Result<super::RxMeta, super::frame::DropReason>));
    fn post_rx(&mut self, frames: &[u64]);
    fn frame(&self, frame: u64) -> &[u8];
    fn counters(&self) -> &XdpCounters;
    fn count_unclaimed(&mut self);
    /// Frames of the shared pool on no fill ring and with no ring.
    fn pool_spare(&self) -> u64;
}

/// What a ring sends through, as a trait object (one send path for both kinds of ring).
trait SendOn {
    /// Whether the ring sends (ring 0 always; another only with send frames of its own).
    fn sends(&self) -> bool;
    fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<super::Sent, NotSent>;
    fn send_deferred(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<super::Sent, NotSent>;
    fn unkicked(&self) -> u32;
    fn flush_tx(&mut self, late: bool);
}

/// Both kinds of ring read and send with methods of the same names: each impl delegates.
macro_rules! rx_source {
    ($t:ty) => {
        impl RxSource for $t {
            fn rx_pending(&mut self) -> bool {
                <$t>::rx_pending(self)
            }
            fn poll_rx(&mut self, max: u32, each: impl FnMut(u64, Result<super::RxMeta, super::frame::DropReason>)) {
                <$t>::poll_rx(self, max, each)
            }
            fn post_rx(&mut self, frames: &[u64]) {
                <$t>::post_rx(self, frames)
            }
            fn frame(&self, frame: u64) -> &[u8] {
                <$t>::frame(self, frame)
            }
            fn counters(&self) -> &XdpCounters {
                <$t>::counters(self)
            }
            fn count_unclaimed(&mut self) {
                <$t>::count_unclaimed(self)
            }
            fn pool_spare(&self) -> u64 {
                <$t>::pool_spare(self)
            }
        }

        impl SendOn for $t {
            fn sends(&self) -> bool {
                <$t>::sends(self)
            }
            fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<super::Sent, NotSent> {
                <$t>::send(self, src, dst, payload)
            }
            fn send_deferred(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<super::Sent, NotSent> {
                <$t>::send_deferred(self, src, dst, payload)
            }
            fn unkicked(&self) -> u32 {
                <$t>::unkicked(self)
            }
            fn flush_tx(&mut self, late: bool) {
                <$t>::flush_tx(self, late)
            }
        }
    };
}
rx_source!(XdpVi);
rx_source!(XdpRing);

/// The port's filter table, shared by its rings: who owns which destination (read by every
/// ring for each batch of frames, to hand each to its socket), and when the multicast rule is
/// next due for a check.
pub struct Table {
    inner: Mutex<FilterTable>,
    /// Nanoseconds after `base` when `FilterTable::check_groups` is due; u64::MAX: no group.
    groups_due: AtomicU64,
    base: std::time::Instant,
}

impl Table {
    fn lock(&self) -> parking_lot::MutexGuard<'_, FilterTable> {
        self.inner.lock()
    }

    /// Runs the multicast check if it is due (a relaxed load when there are no groups).
    fn check_groups_if_due(&self) {
        let due = self.groups_due.load(Ordering::Relaxed);
        if due == u64::MAX || (self.base.elapsed().as_nanos() as u64) < due {
            return;
        }
        let mut t = self.inner.lock();
        t.check_groups();
        self.schedule(&t);
    }

    /// Sets when the next multicast check is due, after a change of `t`'s groups or a check.
    fn schedule(&self, t: &FilterTable) {
        let due = if t.groups.is_empty() {
            u64::MAX
        } else {
            (t.groups_checked.duration_since(self.base) + GROUP_CHECK_EVERY).as_nanos() as u64
        };
        self.groups_due.store(due, Ordering::Relaxed);
    }
}

/// The port's filters and memberships, by socket (cookie), and the program entries for them.
pub struct FilterTable {
    /// The program membership (None after shutdown): its entries are added for the first owner
    /// of a filter and point at the ring of its latest one.
    program: Option<Arc<Mutex<super::loader::Program>>>,
    /// The ring of each socket with a filter.
    ring_of: AddrMap<u64, u32>,
    /// Bound filters: local address (0.0.0.0 = any) and port → cookies, the latest last (it
    /// gets the datagrams, as the kernel gives them to the latest of several sockets bound with
    /// SO_REUSEADDR); the program's entry goes when the last one does.
    binds: AddrMap<SocketAddrV4, Vec<u64>>,
    /// Connected filters: (local, remote) → cookies, likewise.
    conns: AddrMap<(SocketAddrV4, SocketAddrV4), Vec<u64>>,
    /// Filters removed in the last [`RETIRED_FOR`]: frames the program redirected before the
    /// removal still reach the XSK, and still belong to that socket (a socket going back to the
    /// kernel keeps them in its stash; a closed one drops them, as the kernel would).
    retired: Vec<(XdpFilterSpec, u64, std::time::Instant)>,
    /// Multicast memberships of our sockets, in the order they were made.
    groups: Vec<Membership>,
    /// When the memberships were last compared with /proc/net/igmp.
    groups_checked: std::time::Instant,
    ifname: String,
    ifindex: u32,
}

/// What a socket's membership of a group lets through: the kernel's per-socket source filter,
/// as followed from the socket options that change it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sources {
    /// Any source (IP_ADD_MEMBERSHIP, MCAST_JOIN_GROUP) but those blocked (IP_BLOCK_SOURCE,
    /// MCAST_BLOCK_SOURCE).
    Any { blocked: Vec<Ipv4Addr> },
    /// Only these sources (IP_ADD_SOURCE_MEMBERSHIP, MCAST_JOIN_SOURCE_GROUP).
    Only(Vec<Ipv4Addr>),
    /// A filter set wholesale (IP_MSFILTER, MCAST_MSFILTER, setsourcefilter()) that could not
    /// be read: the kernel serves the group until the socket leaves it or sets one we can read.
    Unknown,
}

/// A source filter set wholesale (IP_MSFILTER, MCAST_MSFILTER, setipv4sourcefilter(),
/// setsourcefilter()): the kernel's (mode, source list) of one membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFilter {
    /// MCAST_INCLUDE (only these sources) rather than MCAST_EXCLUDE (all but these).
    pub include: bool,
    pub sources: Vec<Ipv4Addr>,
}

impl SourceFilter {
    /// What the membership becomes: INCLUDE a list is source-specific, EXCLUDE a list blocks
    /// it (EXCLUDE nothing: any source); None for INCLUDE nothing, which the kernel makes a leave.
    fn into_sources(self) -> Option<Sources> {
        let mut list = self.sources;
        list.sort_unstable();
        list.dedup();
        match (self.include, list.is_empty()) {
            (true, true) => None,
            (true, false) => Some(Sources::Only(list)),
            (false, _) => Some(Sources::Any { blocked: list }),
        }
    }
}

/// A change to a socket's membership, made after the kernel accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChange {
    Join,
    Leave,
    JoinSource(Ipv4Addr),
    LeaveSource(Ipv4Addr),
    Block(Ipv4Addr),
    Unblock(Ipv4Addr),
    /// The whole filter replaced (None: one we could not read).
    SetFilter(Option<SourceFilter>),
}

/// The interface a membership option names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinInterface {
    /// None named (address 0.0.0.0, index 0): the kernel picks it by the route to the group.
    Any,
    Address(Ipv4Addr),
    Index(u32),
}

/// One multicast membership of one of our sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Membership {
    /// The group and the socket's port.
    gp: SocketAddrV4,
    cookie: u64,
    sources: Sources,
    /// The filters installed for it now (none while the kernel serves the group).
    installed: Vec<XdpFilterSpec>,
    /// The socket's inode (0: unknown), so that /proc/net/udp's other sockets on the group's
    /// port can be told from it (`FilterTable::check_groups`).
    inode: u64,
}

impl Membership {
    /// Whether the kernel would deliver a datagram of the group from `src` to this socket.
    fn accepts(&self, src: Ipv4Addr) -> bool {
        match &self.sources {
            Sources::Any { blocked } => !blocked.contains(&src),
            Sources::Only(list) => list.contains(&src),
            Sources::Unknown => false,
        }
    }

    /// The filters that steer exactly what this membership lets through: the group:port for an
    /// any-source join, one (group:port, source) filter per source of a source-specific one.
    /// None when filters cannot say it (blocked sources: the program has no "all but" entry).
    fn filters(&self) -> Vec<XdpFilterSpec> {
        match &self.sources {
            Sources::Any { blocked } if blocked.is_empty() => vec![XdpFilterSpec::udp(self.gp)],
            Sources::Only(list) => {
                list.iter().map(|s| XdpFilterSpec::udp_connected(self.gp, SocketAddrV4::new(*s, 0))).collect()
            }
            Sources::Any { .. } | Sources::Unknown => Vec::new(),
        }
    }
}

/// Applies `change` of socket `cookie`'s membership of `gp` to `groups`; returns the membership
/// it ended, if any (its installed filters are the caller's to remove).
fn apply_change(groups: &mut Vec<Membership>, gp: SocketAddrV4, cookie: u64, change: GroupChange) -> Option<Membership> {
    let at = groups.iter().position(|m| m.gp == gp && m.cookie == cookie);
    let new = |sources| Membership { gp, cookie, sources, installed: Vec::new(), inode: 0 };
    match (change, at) {
        (GroupChange::Join, None) => groups.push(new(Sources::Any { blocked: Vec::new() })),
        (GroupChange::JoinSource(s), None) => groups.push(new(Sources::Only(vec![s]))),
        (GroupChange::Leave, Some(i)) => return Some(groups.remove(i)),
        (GroupChange::SetFilter(None), Some(i)) => groups[i].sources = Sources::Unknown,
        (GroupChange::SetFilter(Some(f)), Some(i)) => match f.into_sources() {
            Some(sources) => groups[i].sources = sources,
            None => return Some(groups.remove(i)),
        },
        (GroupChange::JoinSource(s), Some(i)) => {
            if let Sources::Only(list) = &mut groups[i].sources {
                if !list.contains(&s) {
                    list.push(s);
                }
            }
        }
        (GroupChange::LeaveSource(s), Some(i)) => {
            if let Sources::Only(list) = &mut groups[i].sources {
                list.retain(|&x| x != s);
                // The kernel: (INCLUDE, no source) is no membership.
                if list.is_empty() {
                    return Some(groups.remove(i));
                }
            }
        }
        (GroupChange::Block(s), Some(i)) => {
            if let Sources::Any { blocked } = &mut groups[i].sources {
                if !blocked.contains(&s) {
                    blocked.push(s);
                }
            }
        }
        (GroupChange::Unblock(s), Some(i)) => {
            if let Sources::Any { blocked } = &mut groups[i].sources {
                blocked.retain(|&x| x != s);
            }
        }
        // Joining twice, or changing a membership we never saw (made before the library
        // followed the socket): nothing to follow.
        (GroupChange::Join, Some(_))
        | (GroupChange::Leave | GroupChange::LeaveSource(_), None)
        | (GroupChange::Block(_) | GroupChange::Unblock(_) | GroupChange::SetFilter(_), None) => {}
    }
    None
}

/// The socket a multicast datagram of group:port `dst` from `src` belongs to: the latest of our
/// memberships of the group whose source filter lets `src` through; failing that, a socket that
/// no longer is a member but owned a filter removed in the last [`RETIRED_FOR`] matching the
/// datagram (frames already redirected when it left or went back to the kernel). A member whose
/// filter refuses `src` never gets the datagram, retired filter or not.
fn group_owner(
    groups: &[Membership],
    retired: &[(XdpFilterSpec, u64, std::time::Instant)],
    dst: SocketAddrV4,
    src: SocketAddrV4,
) -> Option<u64> {
    if let Some(m) = groups.iter().rev().find(|m| m.gp == dst && m.accepts(*src.ip())) {
        return Some(m.cookie);
    }
    let member = |c: u64| groups.iter().any(|m| m.gp == dst && m.cookie == c);
    retired
        .iter()
        .rev()
        .find(|(spec, c, _)| {
            spec.local == dst && !member(*c) && spec.remote.is_none_or(|r| r.ip() == src.ip() && (r.port() == 0 || r == src))
        })
        .map(|&(_, c, _)| c)
}

/// A map keyed by addresses, looked up for every received frame: FxHash (rustc-hash) instead
/// of SipHash, a fraction of the instructions. Only our own filters are inserted, so frames with
/// chosen addresses cannot make its chains long.
type AddrMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// How often the single-subscriber rule of multicast filters is checked while datagrams flow.
const GROUP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a removed filter's owner is remembered (`FilterTable::retired`).
const RETIRED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl FilterTable {
    fn owner_of(&self, dst: SocketAddrV4, src: SocketAddrV4) -> Option<u64> {
        if dst.ip().is_multicast() {
            return group_owner(&self.groups, &self.retired, dst, src);
        }
        if let Some(&c) = self.conns.get(&(dst, src)).and_then(|v| v.last()) {
            return Some(c);
        }
        if let Some(&c) = self.binds.get(&dst).and_then(|v| v.last()) {
            return Some(c);
        }
        if let Some(&c) = self.binds.get(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dst.port())).and_then(|v| v.last()) {
            return Some(c);
        }
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dst.port());
        self.retired.iter().rev().find(|(spec, _, _)| {
            (spec.local == dst || spec.local == any) && spec.remote.is_none_or(|r| r == src)
        }).map(|&(_, c, _)| c)
    }

    /// Steers `spec` to `cookie` (the program's entry is added for the first owner, and moved
    /// to the ring of a later one: the latest owner gets the datagrams).
    fn add(&mut self, spec: XdpFilterSpec, cookie: u64) -> io::Result<()> {
        let owners = match spec.remote {
            None => self.binds.get(&spec.local),
            Some(r) => self.conns.get(&(spec.local, r)),
        };
        let ring = self.ring(cookie);
        let latest_ring = owners.and_then(|v| v.last()).map(|&c| self.ring(c));
        if latest_ring != Some(ring) {
            let program = self.usable().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
            super::add_filter_to(&program, spec, ring)?;
        }
        match spec.remote {
            None => self.binds.entry(spec.local).or_default().push(cookie),
            Some(r) => self.conns.entry((spec.local, r)).or_default().push(cookie),
        }
        Ok(())
    }

    /// Withdraws `cookie` from `spec` (the program's entry goes with the last owner).
    fn remove(&mut self, spec: XdpFilterSpec, cookie: u64) {
        let owners = match spec.remote {
            None => self.binds.get_mut(&spec.local),
            Some(r) => self.conns.get_mut(&(spec.local, r)),
        };
        let Some(owners) = owners else { return };
        owners.retain(|&c| c != cookie);
        let now = std::time::Instant::now();
        self.retired.retain(|(_, _, at)| now.duration_since(*at) < RETIRED_FOR);
        self.retired.push((spec, cookie, now));
        if let Some(&latest) = owners.last() {
            // The datagrams go to the latest owner now: to its ring.
            let ring = self.ring(latest);
            if ring != self.ring(cookie) {
                if let Some(program) = self.usable() {
                    if let Err(e) = super::add_filter_to(&program, spec, ring) {
                        crate::log::debug(format_args!("xdp: moving filter {} to ring {ring}: {e}", spec.local));
                    }
                }
            }
            return;
        }
        match spec.remote {
            None => self.binds.remove(&spec.local),
            Some(r) => self.conns.remove(&(spec.local, r)),
        };
        if let Some(program) = self.usable() {
            if let Err(e) = super::remove_filter(&program, spec) {
                crate::log::debug(format_args!("xdp: removing filter {}: {e}", spec.local));
            }
        }
    }

    /// The ring of socket `cookie` (0 if it has none: a socket closed meanwhile).
    fn ring(&self, cookie: u64) -> u32 {
        self.ring_of.get(&cookie).copied().unwrap_or(0)
    }

    fn usable(&self) -> Option<Arc<Mutex<super::loader::Program>>> {
        if FORKED.load(Ordering::Relaxed) {
            return None;
        }
        self.program.clone()
    }
}

impl FilterTable {
    /// The multicast rule: a group:port is steered to our XSK only while its socket is the
    /// group's only member on the interface (/proc/net/igmp "Users" = 1). With more members
    /// (another socket, ours or another process's, accelerated or not) the program passes the
    /// group's datagrams to the kernel, which gives each member its copy; our socket still gets
    /// its own through the kernel socket (dual path). So is a group while another socket is
    /// bound to its port on 0.0.0.0 or on the group (/proc/net/udp, udp6): IP_MULTICAST_ALL
    /// gives it the group's datagrams, member or not. An any-source member is steered by a
    /// group:port filter, a source-specific one by a (group:port, source) filter per source
    /// once /proc/net/mcfilter shows the interface including exactly those sources; a member
    /// with blocked sources, or whose filter we could not read, is left to the kernel. An
    /// any-source member is steered only while /proc/net/mcfilter shows no source filter for
    /// the group; when it shows one (set where no hook saw it: an inline system call, a library
    /// bound to libc's own setsockopt) and the socket is the only member, those rows are its
    /// filter, and the membership follows them from then on (so that what is already on the RX
    /// ring is delivered only if the filter lets it through).
    fn check_groups(&mut self) {
        self.groups_checked = std::time::Instant::now();
        if self.groups.is_empty() {
            return;
        }
        let users = igmp_users(&self.ifname);
        let sources = mcfilter(self.ifindex);
        let bound = udp_sockets();
        for i in 0..self.groups.len() {
            let (gp, cookie) = (self.groups[i].gp, self.groups[i].cookie);
            let alone = users.iter().any(|&(g, n)| g == *gp.ip() && n == 1);
            if alone && self.groups[i].sources == (Sources::Any { blocked: Vec::new() }) {
                if let Some(found) = sources.as_deref().and_then(|rows| hidden_filter(rows, *gp.ip())) {
                    let list: Vec<String> = found.sources.iter().map(Ipv4Addr::to_string).collect();
                    crate::log::debug(format_args!(
                        "xdp: {gp}: a source filter set where no hook saw it ({} {}): followed from /proc/net/mcfilter",
                        if found.include { "INCLUDE" } else { "EXCLUDE" },
                        list.join(", ")
                    ));
                    // Rows exist, so never INCLUDE nothing: a membership still.
                    if let Some(followed) = found.into_sources() {
                        self.groups[i].sources = followed;
                    }
                }
            }
            let m = &self.groups[i];
            // IP_MULTICAST_ALL (on by default): every socket bound to the group's port on
            // 0.0.0.0 (or on the group) gets the group's datagrams once the host joined it,
            // member or not; a redirect would hide them from it.
            let shared = bound.as_ref().is_none_or(|b| others_on(b, gp, m.inode));
            let agrees = sources.as_deref().is_some_and(|rows| filter_agrees(&m.sources, rows, *gp.ip()));
            let want = if alone && !shared && agrees { m.filters() } else { Vec::new() };
            if want == m.installed {
                continue;
            }
            let old = std::mem::take(&mut self.groups[i].installed);
            for spec in old.iter().filter(|s| !want.contains(s)) {
                self.remove(*spec, cookie);
            }
            let mut now: Vec<XdpFilterSpec> = old.iter().filter(|s| want.contains(s)).copied().collect();
            for spec in want.iter().filter(|s| !old.contains(s)) {
                match self.add(*spec, cookie) {
                    Ok(()) => now.push(*spec),
                    Err(e) => crate::log::debug(format_args!("xdp: group filter {gp} {:?}: {e}", spec.remote)),
                }
            }
            let m = &mut self.groups[i];
            m.installed = now;
            if !m.installed.is_empty() {
                let how = if old.is_empty() { " has a single member:" } else { ":" };
                match &m.sources {
                    Sources::Only(_) => crate::log::debug(format_args!(
                        "xdp: {gp}{how} steered to the XSK from {}",
                        m.installed.iter().filter_map(|f| f.remote).map(|r| r.ip().to_string()).collect::<Vec<_>>().join(", ")
                    )),
                    _ => crate::log::debug(format_args!("xdp: {gp}{how} steered to the XSK")),
                }
            } else if !old.is_empty() {
                if !alone {
                    crate::log::debug(format_args!("xdp: {gp} has other members: the kernel serves it"));
                } else if shared {
                    crate::log::debug(format_args!(
                        "xdp: {gp}: another socket is bound to its port (IP_MULTICAST_ALL gives it the group): the kernel serves it"
                    ));
                } else {
                    crate::log::debug(format_args!("xdp: {gp}: a source filter the program cannot follow: the kernel serves it"));
                }
            }
        }
    }
}

/// One row of /proc/net/mcfilter: group, source, include count, exclude count.
type McfilterRow = (Ipv4Addr, Ipv4Addr, u64, u64);

/// Whether the interface's source filter of `group` (`rows`, from /proc/net/mcfilter) is what
/// `sources` steers: exactly the included sources of a source-specific member, none at all for
/// an any-source one. (A member with blocked sources is not steered whatever the rows.)
fn filter_agrees(sources: &Sources, rows: &[McfilterRow], group: Ipv4Addr) -> bool {
    let rows: Vec<&McfilterRow> = rows.iter().filter(|r| r.0 == group).collect();
    match sources {
        Sources::Only(list) => rows.len() == list.len() && rows.iter().all(|r| list.contains(&r.1) && r.2 > 0 && r.3 == 0),
        Sources::Any { blocked } if blocked.is_empty() => rows.is_empty(),
        Sources::Any { .. } | Sources::Unknown => true,
    }
}

/// The filter of the only member of `group` when /proc/net/mcfilter shows one (`rows`): sources
/// it excludes make it EXCLUDE them, else it includes its sources. None when the group has no
/// rows.
fn hidden_filter(rows: &[McfilterRow], group: Ipv4Addr) -> Option<SourceFilter> {
    let rows: Vec<&McfilterRow> = rows.iter().filter(|r| r.0 == group).collect();
    if rows.is_empty() {
        return None;
    }
    let excluded: Vec<Ipv4Addr> = rows.iter().filter(|r| r.3 > 0).map(|r| r.1).collect();
    Some(if excluded.is_empty() {
        SourceFilter { include: true, sources: rows.iter().filter(|r| r.2 > 0).map(|r| r.1).collect() }
    } else {
        SourceFilter { include: false, sources: excluded }
    })
}

/// The rows of the interface with index `ifindex` from /proc/net/mcfilter (its source filter of
/// each group that has one); None if the file cannot be read (then nothing is steered).
fn mcfilter(ifindex: u32) -> Option<Vec<McfilterRow>> {
    let text = std::fs::read_to_string("/proc/net/mcfilter").ok()?;
    Some(parse_mcfilter(&text, ifindex))
}

fn parse_mcfilter(text: &str, ifindex: u32) -> Vec<McfilterRow> {
    // "Idx Device        MCA        SRC    INC    EXC"
    // "  5     xa 0xef010203 0x0acb0002      1      0": addresses in host order (ntohl).
    let hex = |w: &str| u32::from_str_radix(w.trim_start_matches("0x"), 16).ok().map(Ipv4Addr::from);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 6 || f[0].parse::<u32>().ok()? != ifindex {
                return None;
            }
            Some((hex(f[2])?, hex(f[3])?, f[4].parse().ok()?, f[5].parse().ok()?))
        })
        .collect()
}

/// (group, members) on `ifname`, from /proc/net/igmp.
fn igmp_users(ifname: &str) -> Vec<(Ipv4Addr, u32)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/igmp") else { return Vec::new() };
    let mut out = Vec::new();
    let mut ours = false;
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            // "4\teth0      :     1      V3"
            ours = line.split_whitespace().nth(1) == Some(ifname);
            continue;
        }
        if !ours {
            continue;
        }
        // "\t\t\t\t010000E0     1 0:00000000\t\t0": the group as the kernel's u32, in hex.
        let mut f = line.split_whitespace();
        let (Some(g), Some(n)) = (f.next(), f.next()) else { continue };
        if let (Ok(g), Ok(n)) = (u32::from_str_radix(g, 16), n.parse::<u32>()) {
            out.push((Ipv4Addr::from(g.to_le_bytes()), n));
        }
    }
    out
}

/// The IPv4 UDP sockets of this network namespace as (local address, local port, inode), from
/// /proc/net/udp and /proc/net/udp6 (a dual-stack socket bound to `::` is listed as 0.0.0.0,
/// one bound to a v4-mapped address as that address; other IPv6 sockets are left out). None
/// when /proc/net/udp cannot be read.
fn udp_sockets() -> Option<Vec<(Ipv4Addr, u16, u64)>> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let mut out = parse_proc_net_udp(&text);
    if let Ok(text6) = std::fs::read_to_string("/proc/net/udp6") {
        out.extend(parse_proc_net_udp(&text6));
    }
    Some(out)
}

/// The rows of /proc/net/udp or udp6: `sl local_address rem_address st ... uid timeout inode`,
/// the local address as the kernel's words in hex, each native-endian, and the port in host
/// order.
fn parse_proc_net_udp(text: &str) -> Vec<(Ipv4Addr, u16, u64)> {
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(|w| w.to_ne_bytes());
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = f.get(1)?.split_once(':')?;
            let inode = f.get(9)?.parse().ok()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = match addr.len() {
                8 => Ipv4Addr::from(word(addr)?),
                32 => {
                    let w: Vec<[u8; 4]> = (0..4).map(|k| word(&addr[8 * k..8 * k + 8])).collect::<Option<_>>()?;
                    match (w[0], w[1], w[2]) {
                        ([0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]) if w[3] == [0, 0, 0, 0] => Ipv4Addr::UNSPECIFIED,
                        ([0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0xff, 0xff]) => Ipv4Addr::from(w[3]),
                        _ => return None,
                    }
                }
                _ => return None,
            };
            Some((ip, port, inode))
        })
        .collect()
}

/// Whether a socket other than the one with `inode` is bound to group:port `gp`'s port on
/// 0.0.0.0 or on the group: the kernel would give it the group's datagrams too.
fn others_on(sockets: &[(Ipv4Addr, u16, u64)], gp: SocketAddrV4, inode: u64) -> bool {
    sockets
        .iter()
        .any(|&(ip, port, ino)| port == gp.port() && (ip.is_unspecified() || ip == *gp.ip()) && (ino != inode || inode == 0))
}

impl<S> RingDev<S> {
    fn usable(&mut self) -> Option<&mut S> {
        if FORKED.load(Ordering::Relaxed) {
            return None;
        }
        self.src.as_mut()
    }
}

impl<S: RxSource> PostedRx for RingDev<S> {
    fn post(&mut self, bufs: &[BufId]) -> usize {
        let Some(src) = self.usable() else { return 0 };
        // The pool takes them all (see PostedQueue::pooled); PostedQueue posts 16 at a time.
        let mut frames = [0u64; 16];
        for chunk in bufs.chunks(16) {
            for (f, b) in frames.iter_mut().zip(chunk) {
                *f = b.0;
            }
            src.post_rx(&frames[..chunk.len()]);
        }
        bufs.len()
    }

    fn poll(&mut self, out: &mut Vec<Result<Completion, BufId>>, max: usize) {
        self.table.check_groups_if_due();
        let Some(src) = self.usable() else { return };
        if !src.rx_pending() {
            return; // the busy-poll case: one load of the RX ring's producer index
        }
        // Reused between polls: no allocation per batch.
        let mut got = std::mem::take(&mut self.got);
        let Some(src) = self.src.as_mut() else { return };
        src.poll_rx(max as u32, |frame, meta| got.push((frame, meta)));
        if let Some(qs) = &self.queue_stats {
            for (i, (&now, seen)) in src.counters().rx_queue_frames.iter().zip(self.queue_published.iter_mut()).enumerate() {
                if now != *seen {
                    qs.add(i, now - *seen);
                    *seen = now;
                }
            }
        }
        let mut unclaimed = 0;
        {
            let table = self.table.lock();
            for (frame, meta) in got.drain(..) {
                let c = meta.ok().and_then(|m| {
                    let owner = table.owner_of(m.dst, m.src);
                    if owner.is_none() {
                        unclaimed += 1;
                    }
                    Some(Completion { buf: BufId(frame), offset: m.offset, len: m.len, owner: owner?, src: m.src })
                });
                out.push(c.ok_or(BufId(frame)));
            }
        }
        self.got = got;
        if let Some(src) = self.src.as_mut() {
            for _ in 0..unclaimed {
                src.count_unclaimed();
            }
        }
    }

    fn buffer(&self, buf: BufId) -> &[u8] {
        self.src.as_ref().map_or(&[], |src| src.frame(buf.0))
    }

    fn depth(&self) -> u32 {
        self.depth
    }

    fn queue_state(&mut self, fill: u64, max_fill: u64, spare: u64) {
        if let Some(s) = &self.stats {
            // Spare: this ring's released frames and the pool's (shared by every ring).
            let pool = self.src.as_ref().map_or(0, |src| src.pool_spare());
            s.set(fill, max_fill, spare + pool);
        }
    }
}

/// The name `accel stat` shows for the AF_XDP receive queues `queues` of `ifname`:
/// `xsk-<ifname>-q<first>`, or `-q<first>-<last>` for several.
pub fn stats_ring_name(ifname: &str, queues: &[u32]) -> String {
    match queues {
        [] => format!("xsk-{ifname}"),
        [q] => format!("xsk-{ifname}-q{q}"),
        [first, .., last] => format!("xsk-{ifname}-q{first}-{last}"),
    }
}

/// `0`, `0-3` or `0,2,5`: queues for a log line.
fn queue_list(queues: &[u32]) -> String {
    let contiguous = queues.windows(2).all(|w| w[1] == w[0] + 1);
    match queues {
        [first, .., last] if contiguous => format!("{first}-{last}"),
        _ => queues.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
    }
}

/// How many receive queues `ifname` has in use (ETHTOOL_GCHANNELS: its rx plus combined
/// channels). None when the driver does not say (the caller then opens queue 0 alone).
fn rx_queue_count(ifname: &str) -> Option<u32> {
    // struct ethtool_channels: cmd, then max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count (u32 each).
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut channels = [0u32; 9];
    channels[0] = ETHTOOL_GCHANNELS;
    // SAFETY: `channels` is a whole ethtool_channels.
    unsafe { super::route::ethtool(ifname, &mut channels) }.ok()?;
    Some(channels[5].saturating_add(channels[8])).filter(|&n| n > 0)
}

/// The port's rings (see [`super`]'s "Several rings on one queue"): ring 0 is the port's own
/// queue, the others are opened as the ring allocation logic asks for them.
struct Rings {
    /// The ring allocation key each ring serves, by ring index (None: free for the next key).
    keys: Vec<Option<String>>,
    /// Sockets on each ring.
    sockets: Vec<u32>,
    /// Rings 1 and up.
    more: Vec<Arc<PostedQueue<XdpRingDev>>>,
    /// Whether the "keys share rings" line was logged.
    shared_logged: bool,
    /// How many rings may be open, and why no more ([`XdpVi::ring_limit`]).
    limit: u32,
    limit_why: String,
}

/// One process's AF_XDP port. See the module docs.
pub struct XdpPort {
    /// Ring 0: receives, and sends for every socket.
    queue: Arc<PostedQueue<XdpDev>>,
    table: Arc<Table>,
    rings: Mutex<Rings>,
    /// VMA_RING_ALLOCATION_LOGIC_RX: which sockets share a ring.
    logic: crate::config::RingAllocation,
    ring_seq: AtomicU32,
    /// Rings 1 and up by index - 1, once opened (read by every send, without a lock).
    ring_queues: Vec<OnceLock<Arc<PostedQueue<XdpRingDev>>>>,
    /// Whether a socket sends through its own ring (VMA_RING_ALLOCATION_LOGIC_TX other than
    /// per interface) rather than ring 0.
    tx_rings: bool,
    /// Rings with sends deferred and not kicked yet (bit k: ring k).
    tx_pending: AtomicU32,
    ifname: String,
    ifindex: u32,
    /// The interface's IPv4 addresses when the port opened.
    addresses: Vec<Ipv4Addr>,
    max_payload: usize,
    sockets: Mutex<HashMap<u64, Weak<Socket>>>,
    cookie_seq: AtomicU64,
    mode: Option<AttachMode>,
    queues: Vec<u32>,
    /// Sends per kick (ACCEL_XDP_TX_BATCH; 1 in zero-copy mode, where kicks are rare anyway).
    tx_batch: u32,
    /// ACCEL_XDP_TX_FLUSH_USEC, for the flusher thread.
    tx_flush_usec: u32,
}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort").field("ifname", &self.ifname).finish()
    }
}

static PORT: OnceLock<Option<XdpPort>> = OnceLock::new();
static FORKED: AtomicBool = AtomicBool::new(false);

/// The port, if it is open.
pub fn existing() -> Option<&'static XdpPort> {
    if FORKED.load(Ordering::Relaxed) {
        return None;
    }
    PORT.get().and_then(|p| p.as_ref())
}

/// The port serving a socket bound to `local` (0.0.0.0 = any), opening it on first use. None:
/// this socket is not for the AF_XDP datapath (or the port could not open: logged once).
pub fn for_local(config: &Config, local: Ipv4Addr) -> Option<&'static XdpPort> {
    if FORKED.load(Ordering::Relaxed) || local.is_loopback() || local.is_multicast() {
        return None;
    }
    let port = match PORT.get() {
        Some(p) => p.as_ref()?,
        None => {
            let ifname = match &config.xdp_ifname {
                Some(name) => name.clone(),
                None if local.is_unspecified() => single_interface()?,
                None => interface_of(local)?,
            };
            PORT.get_or_init(|| match XdpPort::open(&ifname, config) {
                Ok(p) => {
                    crate::log::debug(format_args!(
                        "xdp: {} queue{} {} open ({} mode{}), {} receive frames, UDP checksums {}, rings {}",
                        ifname,
                        if p.queues.len() > 1 { "s" } else { "" },
                        queue_list(&p.queues),
                        p.mode.map_or("joined", AttachMode::name),
                        if p.zero_copy() { ", zero copy" } else { ", copy" },
                        config.rx_bufs,
                        if p.tx_checksum_offload() { "offloaded" } else { "computed" },
                        crate::config::ring_allocation_name(config.ring_allocation_rx)
                    ));
                    Some(p)
                }
                Err(e) => {
                    crate::log::warn(format_args!(
                        "xdp: cannot open {ifname} ({e}); its sockets stay on the kernel path"
                    ));
                    None
                }
            })
            .as_ref()?
        }
    };
    (local.is_unspecified() || port.addresses.contains(&local)).then_some(port)
}

/// A socket without the AF_XDP datapath joined `group` for `port`: if another process steers
/// that group:port to its XSK, take the entry out, so the kernel gives every member (this one
/// included) its copy. The owner sees the group's second member and does not put it back.
pub fn joined_without_port(config: &Config, group: Ipv4Addr, port: u16) {
    let Some(ifname) = config.xdp_ifname.clone().or_else(single_interface) else { return };
    match super::loader::remove_group_of_anyone(&ifname, SocketAddrV4::new(group, port)) {
        Ok(0) => {}
        Ok(_) => crate::log::debug(format_args!("xdp: {group}:{port} handed back to the kernel (a second member)")),
        Err(e) => crate::log::debug(format_args!("xdp: cannot look at {ifname}'s filters: {e}")),
    }
}

/// In a forked child: the parent's rings are not ours to use.
pub fn after_fork_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// At exit, with debug logging: the port's counters (what went through the AF_XDP socket).
pub fn log_counters() {
    if FORKED.load(Ordering::Relaxed) || !crate::log::enabled(crate::config::LogLevel::Debug) {
        return;
    }
    if let Some(p) = existing() {
        if let Some(st) = p.socket_stats() {
            crate::log::debug(format_args!(
                "xdp socket: rx_dropped={} rx_invalid_descs={} rx_ring_full={} rx_fill_ring_empty_descs={} tx_invalid_descs={}",
                st.rx_dropped, st.rx_invalid_descs, st.rx_ring_full, st.rx_fill_ring_empty_descs, st.tx_invalid_descs
            ));
        }
    }
    if let Some(c) = existing().and_then(XdpPort::counters) {
        let dropped: u64 = c.rx_dropped.iter().sum();
        let not_sent: u64 = c.tx_not_sent.iter().sum();
        let queues = existing().map(|p| p.queues.clone()).unwrap_or_default();
        let per_queue: String = queues.iter().zip(&c.rx_queue_frames).map(|(q, n)| format!(" rx_frames_q{q}={n}")).collect();
        let rings = existing().map(XdpPort::ring_frames).unwrap_or_default();
        crate::log::debug(format_args!(
            "xdp counters: rx_datagrams={} rx_bytes={} rx_dropped={} rx_unclaimed={} rx_checksum_partial={} tx_datagrams={} tx_bytes={} tx_to_kernel={} tx_kicks={} tx_late_kicks={} tx_kick_errors={}{per_queue}",
            c.rx_datagrams, c.rx_bytes, dropped, c.rx_unclaimed, c.rx_checksum_partial, c.tx_datagrams, c.tx_bytes, not_sent, c.tx_kicks, c.tx_late_kicks, c.tx_kick_errors
        ));
        // Per ring, on lines of their own (a log line is bounded; 32 rings fit on one each).
        let rx: String = rings.iter().enumerate().map(|(k, (n, _))| format!(" rx_frames_r{k}={n}")).collect();
        let tx: String = rings.iter().enumerate().map(|(k, (_, n))| format!(" tx_datagrams_r{k}={n}")).collect();
        crate::log::debug(format_args!("xdp counters: received per ring{rx}"));
        crate::log::debug(format_args!("xdp counters: sent per ring{tx}"));
    }
}

/// Whether a ring has sends deferred and not kicked (the flusher's own flag may lag by a
/// moment when one ring kicks while another defers).
pub fn tx_pending() -> bool {
    existing().is_some_and(|p| p.tx_pending.load(Ordering::SeqCst) != 0)
}

/// Kicks the frames sends left unkicked on every ring ([`flusher`]); `late`: because one
/// waited its longest; `try_only`: not a ring whose lock is taken.
pub fn flush_deferred(late: bool, try_only: bool) {
    let Some(p) = existing() else {
        flusher::kicked();
        return;
    };
    let pending = p.tx_pending.load(Ordering::SeqCst);
    for k in 0..super::loader::MAX_RINGS {
        if pending & (1 << k) != 0 {
            p.with_ring(k, try_only, |src, k| {
                src.flush_tx(late);
                if src.unkicked() == 0 {
                    p.tx_pending.fetch_and(!(1 << k), Ordering::SeqCst);
                }
            });
        }
    }
    // What the kernel did not take stays pending, due again one flush interval later (a busy
    // queue: the flusher retries, it does not spin).
    if p.tx_pending.load(Ordering::SeqCst) == 0 {
        flusher::kicked();
        if p.tx_pending.load(Ordering::SeqCst) != 0 {
            flusher::deferred_first(); // a ring deferred meanwhile
        }
    } else {
        flusher::deferred_first();
    }
}

/// At exit: sends what is deferred, closes the XSKs and leaves the program (detaching it if we
/// were the last user).
pub fn shutdown() {
    if FORKED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(p) = PORT.get().and_then(|p| p.as_ref()) {
        let program = {
            let mut t = p.table.lock();
            t.binds.clear();
            t.conns.clear();
            t.program.take()
        };
        flush_deferred(false, false);
        let vi = p.queue.with_device(|d| d.src.take());
        let rings: Vec<Arc<PostedQueue<XdpRingDev>>> = p.rings.lock().more.clone();
        // The sockets first (all rings'), then the program membership.
        for r in rings {
            drop(r.with_device(|d| d.src.take()));
        }
        drop(vi);
        drop(program);
    }
}

impl XdpPort {
    fn open(ifname: &str, config: &Config) -> io::Result<XdpPort> {
        let available = rx_queue_count(ifname);
        let queues = config.xdp_queues.select(available.unwrap_or(1));
        if queues.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("ACCEL_XDP_QUEUES={} names no queue of the {} it has", config.xdp_queues, available.unwrap_or(1)),
            ));
        }
        let vi = XdpVi::open_queues(ifname, &queues, config, config.xdp_mode).map_err(|e| {
            io::Error::new(e.kind(), format!("queue{} {}: {e}", if queues.len() > 1 { "s" } else { "" }, queue_list(&queues)))
        })?;
        let depth = vi.fill_depth();
        let fd = vi.fd();
        let max_payload = vi.max_payload();
        let mode = vi.attach_mode();
        let ifindex = vi.ifindex();
        let zero_copy = vi.zero_copy();
        let (limit, limit_why) = vi.ring_limit();
        let now = std::time::Instant::now();
        let table = Arc::new(Table {
            inner: Mutex::new(FilterTable {
                program: Some(vi.program()),
                ring_of: AddrMap::default(),
                binds: AddrMap::default(),
                conns: AddrMap::default(),
                retired: Vec::new(),
                groups: Vec::new(),
                groups_checked: now,
                ifname: ifname.to_string(),
                ifindex,
            }),
            groups_due: AtomicU64::new(u64::MAX),
            base: now,
        });
        let dev = XdpDev {
            src: Some(vi),
            table: table.clone(),
            got: Vec::new(),
            depth,
            stats: crate::stats::memory_ring(&stats_ring_name(ifname, &queues), &format!("xdp/{ifname}"), depth, super::umem::FRAME_SIZE),
            queue_stats: crate::stats::queue_counters(&queues),
            queue_published: vec![0; queues.len()],
        };
        // Every receive frame is the fill pool's already (see XdpVi::open_queues).
        let queue = Arc::new(PostedQueue::pooled(dev).with_wait_fd(fd));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let seed = u64::from(std::process::id()) ^ nanos.rotate_left(17);
        Ok(XdpPort {
            queue,
            table,
            rings: Mutex::new(Rings { keys: vec![None], sockets: vec![0], more: Vec::new(), shared_logged: false, limit, limit_why }),
            logic: config.ring_allocation_rx,
            ring_seq: AtomicU32::new(0),
            ring_queues: (1..super::loader::MAX_RINGS).map(|_| OnceLock::new()).collect(),
            // Sockets of a queue sharing its completion ring for sends need a kernel that
            // completes each frame only once its skb is freed ("xsk: fix immature cq descriptor
            // production", 2025): earlier ones could hand a frame back while still being sent.
            tx_rings: config.ring_allocation_tx != crate::config::RingAllocation::PerInterface
                && super::kernel_at_least(6, 18),
            tx_pending: AtomicU32::new(0),
            ifname: ifname.to_string(),
            ifindex,
            addresses: addresses_of(ifname),
            max_payload,
            sockets: Mutex::new(HashMap::new()),
            cookie_seq: AtomicU64::new(seed),
            mode,
            queues,
            tx_batch: if zero_copy { 1 } else { config.xdp_tx_batch.max(1) },
            tx_flush_usec: config.xdp_tx_flush_usec,
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The receive queues the port has an XSK on.
    pub fn queues(&self) -> &[u32] {
        &self.queues
    }

    pub fn tx_checksum_offload(&self) -> bool {
        self.queue.with_device(|d| d.src.as_ref().is_some_and(XdpVi::tx_checksum_offload))
    }

    pub fn zero_copy(&self) -> bool {
        self.queue.with_device(|d| d.src.as_ref().is_some_and(XdpVi::zero_copy))
    }

    /// The port's counters: ring 0's XdpVi's, with the other rings' receive counts added (None
    /// after shutdown).
    pub fn counters(&self) -> Option<XdpCounters> {
        let mut c = self.queue.with_device(|d| d.src.as_ref().map(|vi| vi.counters().clone()))?;
        for r in self.rings.lock().more.clone() {
            r.with_device(|d| {
                if let Some(ring) = d.src.as_ref() {
                    c.add(ring.counters());
                }
            });
        }
        Some(c)
    }

    /// (frames received, datagrams sent) by each ring, by ring index.
    pub fn ring_frames(&self) -> Vec<(u64, u64)> {
        let frames = |c: &XdpCounters| (c.rx_queue_frames.iter().sum::<u64>(), c.tx_datagrams);
        let mut out = vec![self.queue.with_device(|d| d.src.as_ref().map_or((0, 0), |vi| frames(vi.counters())))];
        for r in self.rings.lock().more.clone() {
            out.push(r.with_device(|d| d.src.as_ref().map_or((0, 0), |ring| frames(ring.counters()))));
        }
        out
    }

    /// The kernel's counters of every ring's sockets, summed.
    fn socket_stats(&self) -> Option<libc::xdp_statistics> {
        let mut sum = self.queue.with_device(|d| d.src.as_ref().and_then(|vi| vi.socket_stats().ok()))?;
        for r in self.rings.lock().more.clone() {
            if let Some(st) = r.with_device(|d| d.src.as_ref().and_then(|ring| ring.socket_stats().ok())) {
                sum.rx_dropped += st.rx_dropped;
                sum.rx_invalid_descs += st.rx_invalid_descs;
                sum.rx_ring_full += st.rx_ring_full;
                // (rx_fill_ring_empty_descs is the queue's fill ring's: ring 0's already.)
            }
        }
        Some(sum)
    }

    /// The ring a socket bound to `local` by this thread gets, by the ring allocation logic:
    /// the ring serving its key; else a free ring (one whose sockets all closed); else a new
    /// one ([`XdpVi::open_ring`]); beyond the port's limit ([`XdpVi::ring_limit`]), or if a
    /// ring cannot be opened, the ring with the fewest sockets (logged once). Returns the
    /// ring's index and queue, counting the socket in.
    fn ring_for(&self, local: SocketAddrV4) -> (u32, Arc<dyn RxQueue>) {
        let key = if self.logic == crate::config::RingAllocation::PerInterface {
            String::new() // one ring: no key to compute
        } else {
            crate::vi::ring_key(self.logic, local, &self.ring_seq)
        };
        let mut r = self.rings.lock();
        let mut reused = false;
        let k = match r.keys.iter().position(|k| k.as_deref() == Some(key.as_str())) {
            Some(k) => k,
            None => match r.keys.iter().position(Option::is_none) {
                Some(k) => {
                    r.keys[k] = Some(key);
                    reused = r.sockets[k] == 0;
                    k
                }
                None => match if (r.keys.len() as u32) < r.limit { self.open_ring(r.keys.len() as u32) } else { None } {
                    Some(Ok(q)) => {
                        let k = r.keys.len();
                        let sends = q.with_device(|d| d.src.as_ref().is_some_and(XdpRing::sends));
                        crate::log::debug(format_args!(
                            "xdp: ring {k} opened for {key}{}",
                            if sends || !self.tx_rings { "" } else { " (receive only: no send frame to spare, it sends through ring 0)" }
                        ));
                        let _ = self.ring_queues[k - 1].set(q.clone());
                        r.keys.push(Some(key));
                        r.sockets.push(0);
                        r.more.push(q);
                        k
                    }
                    failed => {
                        let k = (0..r.sockets.len()).min_by_key(|&k| r.sockets[k]).unwrap_or(0);
                        if !r.shared_logged {
                            r.shared_logged = true;
                            let why = match failed {
                                Some(Err(e)) => e.to_string(),
                                _ => r.limit_why.clone(),
                            };
                            crate::log::info(format_args!(
                                "xdp: no ring of its own for {key} ({why}): it shares ring {k}, and so may later ones"
                            ));
                        }
                        k
                    }
                },
            },
        };
        r.sockets[k] += 1;
        let queue: Arc<dyn RxQueue> = if k == 0 { self.queue.clone() } else { r.more[k - 1].clone() };
        drop(r);
        if reused {
            // Frames that reached the ring after it was emptied (redirected just before its
            // last socket's filter went): to their sockets, before the new key's arrive.
            crate::udp::drain_to_stashes(&*queue, None);
        }
        (k as u32, queue)
    }

    /// A socket of ring `k` closed: a ring left without sockets serves the next new key.
    /// Returns the ring's queue when it was its last socket: nobody reads it until then, so the
    /// caller empties it (its frames back to the pool, datagrams of live sockets to their
    /// stashes).
    fn ring_done(&self, k: u32) -> Option<Arc<dyn RxQueue>> {
        let mut r = self.rings.lock();
        let k = k as usize;
        let n = r.sockets.get_mut(k)?;
        *n = n.saturating_sub(1);
        if *n > 0 {
            return None;
        }
        r.keys[k] = None;
        Some(if k == 0 { self.queue.clone() } else { r.more[k - 1].clone() })
    }

    /// Opens ring `k` and its receive queue; None when the port is shut down (or forked).
    fn open_ring(&self, k: u32) -> Option<io::Result<Arc<PostedQueue<XdpRingDev>>>> {
        if k >= super::loader::MAX_RINGS {
            return None;
        }
        let sends = self.tx_rings;
        let ring = self.queue.with_device(|d| d.usable().map(|vi| vi.open_ring(k, sends)))?;
        Some(ring.map(|ring| {
            let depth = ring.fill_depth();
            let fd = ring.fd();
            let dev = XdpRingDev {
                table: self.table.clone(),
                got: Vec::new(),
                depth,
                stats: crate::stats::memory_ring(
                    &format!("{}.r{k}", stats_ring_name(&self.ifname, &self.queues)),
                    &format!("xdp/{}", self.ifname),
                    depth,
                    super::umem::FRAME_SIZE,
                ),
                queue_stats: crate::stats::queue_counters(&self.queues),
                queue_published: vec![0; self.queues.len()],
                src: Some(ring),
            };
            Arc::new(PostedQueue::pooled(dev).with_wait_fd(fd))
        }))
    }

    pub fn socket_of(&self, cookie: u64) -> Option<Arc<Socket>> {
        self.sockets.lock().get(&cookie).and_then(Weak::upgrade)
    }

    fn spec(filter: &Filter) -> XdpFilterSpec {
        match filter.remote {
            None => XdpFilterSpec::udp(filter.local),
            Some(r) => XdpFilterSpec::udp_connected(filter.local, r),
        }
    }
}

impl XdpPort {
    /// Runs `f` on ring `k`'s source under its queue's lock (with `try_only`, not if the lock
    /// is taken); None when the ring is not open, shut down, or in a forked child.
    fn with_ring<R>(&self, k: u32, try_only: bool, f: impl FnOnce(&mut dyn SendOn, u32) -> R) -> Option<R> {
        if k == 0 {
            let run = |d: &mut XdpDev| d.usable().map(|s| f(s as &mut dyn SendOn, 0));
            return if try_only { self.queue.try_with_device(run).flatten() } else { self.queue.with_device(run) };
        }
        let q = self.ring_queues.get(k as usize - 1)?.get()?;
        let run = |d: &mut XdpRingDev| d.usable().map(|s| f(s as &mut dyn SendOn, k));
        if try_only {
            q.try_with_device(run).flatten()
        } else {
            q.with_device(run)
        }
    }

    /// Sends through ring `k`'s TX ring, kicking at once or deferring (ACCEL_XDP_TX_BATCH);
    /// None when that ring does not send.
    fn send_on(&self, src: &mut dyn SendOn, k: u32, tx: &TxRequest<'_>) -> Option<Result<super::Sent, NotSent>> {
        if !src.sends() {
            return None;
        }
        let batch = self.tx_batch;
        if batch <= 1 || !flusher::available(self.tx_flush_usec) {
            let r = src.send(tx.src, tx.dest, tx.payload);
            if src.unkicked() > 0 && flusher::available(self.tx_flush_usec) {
                // The kernel left frames on the ring (a busy queue): the flusher retries.
                if self.tx_pending.fetch_or(1 << k, Ordering::SeqCst) == 0 {
                    flusher::deferred_first();
                }
            }
            return Some(r);
        }
        let r = src.send_deferred(tx.src, tx.dest, tx.payload);
        if r.is_ok() {
            if src.unkicked() >= batch {
                src.flush_tx(false);
                if src.unkicked() == 0 && self.tx_pending.fetch_and(!(1 << k), Ordering::SeqCst) == 1 << k {
                    // No ring has deferred frames now (checked again: one may have just).
                    flusher::kicked();
                    if self.tx_pending.load(Ordering::SeqCst) != 0 {
                        flusher::deferred_first();
                    }
                }
            } else if src.unkicked() > 0 {
                // (Zero-copy mode kicks at once: nothing deferred.)
                flusher::deferred_here();
                if self.tx_pending.fetch_or(1 << k, Ordering::SeqCst) == 0 {
                    flusher::deferred_first();
                }
            }
        }
        Some(r)
    }

    /// A socket with a bound filter connected to `remote` (None: dissolved) from `local`: its
    /// datagrams from `remote` are steered by a 5-tuple filter too, so that a socket bound to
    /// the same address later (iperf3 does this) does not take them, as in the kernel.
    pub fn connected(&self, binding: &RxBinding, local: SocketAddrV4, remote: Option<SocketAddrV4>) {
        let FilterState::Xdp(f) = &binding.state else { return };
        if f.spec.remote.is_some() || binding.pid != std::process::id() {
            return;
        }
        let mut conn = f.conn.lock();
        let new = remote.map(|r| (local, r));
        if *conn == new {
            return;
        }
        let mut d = self.table.lock();
        if let Some((l, r)) = conn.take() {
            d.remove(XdpFilterSpec::udp_connected(l, r), binding.cookie);
        }
        if let Some((l, r)) = new {
            match d.add(XdpFilterSpec::udp_connected(l, r), binding.cookie) {
                Ok(()) => *conn = new,
                Err(e) => crate::log::debug(format_args!("xdp: 5-tuple filter {l} from {r}: {e}")),
            }
        }
    }
}

impl XdpPort {
    /// The socket of `binding` changed its membership of `group` (joined, left, added or
    /// dropped a source, blocked or unblocked one...) in the kernel, on interface `iface`: its
    /// filters follow, under the single-member rule (`FilterTable::check_groups`). A join (of the
    /// group, of a source) or an unblock on another interface is not ours to follow — a join
    /// that names no interface is the kernel's on the interface of the route to the group;
    /// changes that can only make the group less steerable (leave, block) are applied whatever
    /// interface they name: at worst the kernel serves a group we could have steered. A filter
    /// set wholesale is followed only on our interface (elsewhere it is another membership's).
    pub fn membership(&self, binding: &RxBinding, group: Ipv4Addr, iface: JoinInterface, change: GroupChange) {
        if binding.pid != std::process::id() || binding.local.port() == 0 {
            return;
        }
        if matches!(change, GroupChange::Join | GroupChange::JoinSource(_) | GroupChange::Unblock(_) | GroupChange::SetFilter(_)) {
            let ours = match iface {
                JoinInterface::Any => {
                    self.queue.with_device(|d| d.usable().is_some_and(|vi| vi.routes_through_here(group)))
                }
                JoinInterface::Address(a) => self.addresses.contains(&a),
                JoinInterface::Index(i) => i == self.ifindex,
            };
            if !ours {
                crate::log::debug(format_args!("xdp: {group} joined on another interface ({iface:?}): kernel path"));
                return;
            }
        }
        let gp = SocketAddrV4::new(group, binding.local.port());
        let inode = crate::shm::registry::socket_inode(binding.fd).unwrap_or(0);
        let mut d = self.table.lock();
        if let Some(ended) = apply_change(&mut d.groups, gp, binding.cookie, change) {
            for spec in ended.installed {
                d.remove(spec, ended.cookie);
            }
        }
        for m in d.groups.iter_mut().filter(|m| m.cookie == binding.cookie && m.inode == 0) {
            m.inode = inode;
        }
        d.check_groups();
        self.table.schedule(&d);
    }
}

impl Vi for XdpPort {
    fn kind(&self) -> ViKind {
        ViKind::Xdp
    }

    fn rx_model(&self) -> RxModel {
        RxModel::Posted
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn reaches(&self, ip: Ipv4Addr) -> bool {
        !(ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified() || self.addresses.contains(&ip))
    }

    fn add_filter(&self, fd: c_int, filter: &Filter, owner: &Arc<Socket>) -> io::Result<RxBinding> {
        if filter.proto != Proto::Udp {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        let spec = XdpPort::spec(filter);
        let cookie = (self.cookie_seq.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) & !1).max(2);
        let (ring, queue) = self.ring_for(filter.local);
        // Findable before its first datagram can arrive: a reader of the ring hands it over.
        {
            let mut sockets = self.sockets.lock();
            sockets.retain(|_, w| w.strong_count() > 0);
            sockets.insert(cookie, Arc::downgrade(owner));
        }
        {
            let mut t = self.table.lock();
            t.ring_of.insert(cookie, ring);
            if let Err(e) = t.add(spec, cookie) {
                t.ring_of.remove(&cookie);
                drop(t);
                self.sockets.lock().remove(&cookie);
                if let Some(q) = self.ring_done(ring) {
                    crate::udp::drain_to_stashes(&*q, None);
                }
                return Err(e);
            }
        }
        Ok(RxBinding {
            kind: ViKind::Xdp,
            queue,
            cookie,
            local: filter.local,
            pid: std::process::id(),
            fd,
            state: FilterState::Xdp(XdpFilter { spec, ring, conn: Mutex::new(None) }),
        })
    }

    fn remove_filter(&self, binding: &RxBinding) {
        // The socket stays findable by its cookie while it lives (see FilterTable::retired); closed
        // sockets' entries are pruned at the next add_filter.
        if binding.pid != std::process::id() {
            return;
        }
        let FilterState::Xdp(f) = &binding.state else { return };
        let conn = f.conn.lock().take();
        let ring = {
            let mut d = self.table.lock();
            let mine: Vec<XdpFilterSpec> =
                d.groups.iter().filter(|m| m.cookie == binding.cookie).flat_map(|m| m.installed.clone()).collect();
            d.groups.retain(|m| m.cookie != binding.cookie);
            for spec in mine {
                d.remove(spec, binding.cookie);
            }
            if let Some((local, remote)) = conn {
                d.remove(XdpFilterSpec::udp_connected(local, remote), binding.cookie);
            }
            d.remove(f.spec, binding.cookie);
            self.table.schedule(&d);
            d.ring_of.remove(&binding.cookie)
        };
        if let Some(q) = ring.and_then(|k| self.ring_done(k)) {
            crate::udp::drain_to_stashes(&*q, None);
        }
    }

    fn transmit(&self, tx: &TxRequest<'_>) -> TxOutcome {
        // NotServed: the caller sends it through the kernel, and kicks what is deferred first
        // (udp::send_iov), so order is kept.
        if tx.payload.len() > self.max_payload || !self.reaches(*tx.dest.ip()) {
            return TxOutcome::NotServed;
        }
        let ring = if self.tx_rings { tx.ring } else { 0 };
        let send = |src: &mut dyn SendOn, k: u32| self.send_on(src, k, tx);
        let mut r = if ring > 0 { self.with_ring(ring, false, send).flatten() } else { None };
        if r.is_none() {
            // Ring 0's sockets, and those of a ring that does not send.
            r = self.with_ring(0, false, send).flatten();
        }
        match r {
            Some(Ok(_)) => TxOutcome::Sent { woke: false },
            // Nothing was queued: the kernel sends it (and resolves the neighbour meanwhile).
            Some(Err(NotSent::NextHop(_) | NotSent::TooBig | NotSent::RingFull)) | None => TxOutcome::NotServed,
        }
    }
}

/// The IPv4 addresses of each interface (getifaddrs).
fn interface_addresses() -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, alive until freeifaddrs; its
        // name is a NUL-terminated string and its address, when AF_INET, a sockaddr_in.
        unsafe {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
                out.push((name, Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            }
            p = ifa.ifa_next;
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The interface that owns `ip`.
pub fn interface_of(ip: Ipv4Addr) -> Option<String> {
    interface_addresses().into_iter().find(|(_, a)| *a == ip).map(|(n, _)| n)
}

/// The IPv4 addresses of `ifname`.
pub fn addresses_of(ifname: &str) -> Vec<Ipv4Addr> {
    interface_addresses().into_iter().filter(|(n, _)| n == ifname).map(|(_, a)| a).collect()
}

/// The only interface with a non-loopback IPv4 address, if there is exactly one.
pub fn single_interface() -> Option<String> {
    let mut names: Vec<String> =
        interface_addresses().into_iter().filter(|(_, a)| !a.is_loopback()).map(|(n, _)| n).collect();
    names.dedup();
    (names.len() == 1).then(|| names.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn memberships_follow_the_socket_options() {
        let gp = a("239.1.1.1:5000");
        let mut groups = Vec::new();
        assert_eq!(apply_change(&mut groups, gp, 2, GroupChange::JoinSource(ip("10.0.0.1"))), None);
        apply_change(&mut groups, gp, 2, GroupChange::JoinSource(ip("10.0.0.2")));
        apply_change(&mut groups, gp, 2, GroupChange::JoinSource(ip("10.0.0.2")));
        assert_eq!(groups[0].sources, Sources::Only(vec![ip("10.0.0.1"), ip("10.0.0.2")]));
        assert_eq!(
            groups[0].filters(),
            vec![
                XdpFilterSpec::udp_connected(gp, a("10.0.0.1:0")),
                XdpFilterSpec::udp_connected(gp, a("10.0.0.2:0"))
            ]
        );
        assert_eq!(apply_change(&mut groups, gp, 2, GroupChange::LeaveSource(ip("10.0.0.1"))), None);
        // Dropping the last source leaves the group, as in the kernel.
        assert!(apply_change(&mut groups, gp, 2, GroupChange::LeaveSource(ip("10.0.0.2"))).is_some());
        assert!(groups.is_empty());

        apply_change(&mut groups, gp, 4, GroupChange::Join);
        assert_eq!(groups[0].filters(), vec![XdpFilterSpec::udp(gp)]);
        apply_change(&mut groups, gp, 4, GroupChange::Block(ip("10.0.0.3")));
        assert!(groups[0].filters().is_empty(), "blocked sources: the kernel serves the group");
        assert!(!groups[0].accepts(ip("10.0.0.3")) && groups[0].accepts(ip("10.0.0.4")));
        apply_change(&mut groups, gp, 4, GroupChange::Unblock(ip("10.0.0.3")));
        assert_eq!(groups[0].filters(), vec![XdpFilterSpec::udp(gp)]);
        apply_change(&mut groups, gp, 4, GroupChange::SetFilter(None));
        assert!(groups[0].filters().is_empty() && !groups[0].accepts(ip("10.0.0.4")));
        // Filters set wholesale: INCLUDE a list (deduplicated) is source-specific, EXCLUDE a
        // list blocks it, EXCLUDE nothing is any-source, INCLUDE nothing leaves.
        let set = |include, list: &[&str]| GroupChange::SetFilter(Some(SourceFilter { include, sources: list.iter().map(|x| ip(x)).collect() }));
        apply_change(&mut groups, gp, 4, set(true, &["10.0.0.2", "10.0.0.1", "10.0.0.2"]));
        assert_eq!(groups[0].sources, Sources::Only(vec![ip("10.0.0.1"), ip("10.0.0.2")]));
        assert_eq!(groups[0].filters().len(), 2);
        apply_change(&mut groups, gp, 4, set(false, &["10.0.0.3"]));
        assert!(groups[0].filters().is_empty() && !groups[0].accepts(ip("10.0.0.3")) && groups[0].accepts(ip("10.0.0.1")));
        apply_change(&mut groups, gp, 4, set(false, &[]));
        assert_eq!(groups[0].filters(), vec![XdpFilterSpec::udp(gp)]);
        assert!(apply_change(&mut groups, gp, 4, set(true, &[])).is_some(), "INCLUDE nothing is a leave");
        assert!(groups.is_empty());
        apply_change(&mut groups, gp, 4, GroupChange::Join);
        assert!(apply_change(&mut groups, gp, 4, GroupChange::Leave).is_some());
        // Changes to a membership never seen are ignored.
        assert_eq!(apply_change(&mut groups, gp, 6, GroupChange::Leave), None);
        apply_change(&mut groups, gp, 6, GroupChange::Block(ip("10.0.0.3")));
        assert!(groups.is_empty());
    }

    #[test]
    fn a_source_specific_member_never_gets_another_source() {
        let gp = a("239.1.1.1:5000");
        let mut groups = Vec::new();
        apply_change(&mut groups, gp, 2, GroupChange::JoinSource(ip("10.0.0.1")));
        let joined = a("10.0.0.1:4000");
        let other = a("10.0.0.9:4000");
        assert_eq!(group_owner(&groups, &[], gp, joined), Some(2));
        assert_eq!(group_owner(&groups, &[], gp, other), None);
        // A retired any-source filter of the same socket (it was an any-source member before)
        // does not let the other source through while the socket is a member by source.
        let retired = vec![(XdpFilterSpec::udp(gp), 2, Instant::now())];
        assert_eq!(group_owner(&groups, &retired, gp, other), None);
        // Another port of the group is not this membership's.
        assert_eq!(group_owner(&groups, &[], a("239.1.1.1:5001"), joined), None);
        // An any-source member of ours (a second socket) gets what the first refuses.
        apply_change(&mut groups, gp, 4, GroupChange::Join);
        assert_eq!(group_owner(&groups, &[], gp, other), Some(4));
        apply_change(&mut groups, gp, 4, GroupChange::Block(ip("10.0.0.9")));
        assert_eq!(group_owner(&groups, &[], gp, other), None);
    }

    #[test]
    fn a_socket_that_left_keeps_what_was_redirected_before() {
        let gp = a("239.1.1.1:5000");
        let retired = vec![(XdpFilterSpec::udp_connected(gp, a("10.0.0.1:0")), 2, Instant::now())];
        assert_eq!(group_owner(&[], &retired, gp, a("10.0.0.1:4000")), Some(2));
        assert_eq!(group_owner(&[], &retired, gp, a("10.0.0.2:4000")), None);
        let retired = vec![(XdpFilterSpec::udp(gp), 2, Instant::now())];
        assert_eq!(group_owner(&[], &retired, gp, a("10.0.0.2:4000")), Some(2));
    }

    #[test]
    fn sockets_on_a_group_port_from_proc_net_udp() {
        let g = u32::from_ne_bytes([239, 1, 2, 3]);
        let u = u32::from_ne_bytes([10, 0, 0, 1]);
        let v4 = format!(
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 1: 00000000:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 101 2 0 0\n\
             \x20 2: {g:08X}:1B59 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 102 2 0 0\n\
             \x20 3: {u:08X}:1B5A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 103 2 0 0\n\
             garbage\n"
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 4: 00000000000000000000000000000000:1B5A 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 104 2 0 0\n\
             \x20 5: 000080FE00000000FF00000000000001:1B5B 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 105 2 0 0\n";
        let mut all = parse_proc_net_udp(&v4);
        assert_eq!(all, vec![(ip("0.0.0.0"), 7000, 101), (ip("239.1.2.3"), 7001, 102), (ip("10.0.0.1"), 7002, 103)]);
        all.extend(parse_proc_net_udp(v6));
        assert_eq!(all.len(), 4, "a dual-stack :: socket counts, a link-local one does not");
        // The member itself (inode 101) on 0.0.0.0:7000 is not another socket.
        assert!(!others_on(&all, a("239.1.2.3:7000"), 101));
        assert!(others_on(&all, a("239.1.2.3:7000"), 99));
        // Bound to the group itself, or dual-stack on ::, counts; a unicast address does not.
        assert!(others_on(&all, a("239.1.2.3:7001"), 101));
        assert!(!others_on(&all, a("239.9.9.9:7001"), 101));
        assert!(others_on(&all, a("239.1.2.3:7002"), 101), "the :: socket");
        assert!(!others_on(&all, a("239.1.2.3:7003"), 101));
    }

    #[test]
    fn mcfilter_rows_of_one_interface() {
        let text = "Idx Device        MCA        SRC    INC    EXC\n\
                    \x20 5     xa 0xef010203 0x0acb0002      1      0\n\
                    \x20 5     xa 0xef010203 0x0acb0003      0      1\n\
                    \x20 2   eth0 0xef010203 0x0acb0009      1      0\n";
        assert_eq!(
            parse_mcfilter(text, 5),
            vec![
                (ip("239.1.2.3"), ip("10.203.0.2"), 1, 0),
                (ip("239.1.2.3"), ip("10.203.0.3"), 0, 1)
            ]
        );
        assert!(parse_mcfilter(text, 3).is_empty());
    }

    #[test]
    fn mcfilter_rows_agree_with_a_membership_or_reveal_a_hidden_filter() {
        let g = ip("239.1.2.3");
        let (s1, s2) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let other_group = (ip("239.9.9.9"), s1, 1, 0);
        let any = Sources::Any { blocked: vec![] };
        // Any-source: only with no row of its group.
        assert!(filter_agrees(&any, &[other_group], g));
        assert!(!filter_agrees(&any, &[(g, s1, 0, 1)], g));
        // Source-specific: exactly its sources, included.
        let only = Sources::Only(vec![s1, s2]);
        assert!(filter_agrees(&only, &[(g, s2, 1, 0), (g, s1, 1, 0), other_group], g));
        assert!(!filter_agrees(&only, &[(g, s1, 1, 0)], g), "a source missing");
        assert!(!filter_agrees(&only, &[(g, s1, 1, 0), (g, s2, 0, 1)], g), "one excluded");
        // Hidden filters: rows excluding make it block them, rows only including make it
        // source-specific, no rows mean none.
        let hidden = |rows: &[McfilterRow]| hidden_filter(rows, g).and_then(SourceFilter::into_sources);
        assert_eq!(hidden(&[(g, s1, 0, 1), other_group]), Some(Sources::Any { blocked: vec![s1] }));
        assert_eq!(hidden(&[(g, s2, 1, 0), (g, s1, 1, 0)]), Some(Sources::Only(vec![s1, s2])));
        assert_eq!(hidden_filter(&[other_group], g), None);
    }
}
