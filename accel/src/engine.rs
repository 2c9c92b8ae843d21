//! What the hooks call when an fd is ours (or might become ours), and process start-up.
//!
//! Every function here is entered with the kernel call still to make (or just made) by the
//! caller's own arguments; the engine's job at this stage is bookkeeping: track the sockets that
//! would be accelerated, take and log the offload decision at each decision point, follow the fd
//! through dup/close/fork/exec, and count. Data still flows through the kernel; the datapaths plug
//! in behind these same functions.
//!
//! Failure policy: engine work runs inside [`contain`]; a panic there is logged once and the
//! socket is handed back to the kernel (untracked), never propagated into the host program.

use std::ffi::CStr;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use libc::{c_int, c_void, sockaddr, sockaddr_in, socklen_t};

use crate::config::{Config, LogLevel};
use crate::decision::{self, Decision, Reason};
use crate::fdtable;
use crate::guard::{self, EngineGuard};
use crate::log;
use crate::real;
use crate::rules::{Role, RuleSet};
use crate::shm::vi as shmvi;
use crate::socket::{Proto, Socket};
use crate::vi::{Filter, Vi};
use crate::xdp::port::{GroupChange, JoinInterface, SourceFilter};

/// The process-wide engine state, built once.
pub struct Engine {
    pub config: Config,
    pub rules: RuleSet,
    /// This program's name (argv[0]'s basename), for rules and logs.
    pub program: String,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The engine, initialising it on first use (a hook may run before our constructor).
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(build)
}

/// Whether start-up has completed (for diagnostics).
pub fn initialised() -> bool {
    ENGINE.get().is_some()
}

/// Library start-up: called from the constructor of libaccel.so.
pub fn init() {
    let _g = EngineGuard::enter();
    real::resolve_all();
    let e = engine();
    crate::exec::snapshot_environment(e.config.preserve_env);
    register_fork_handlers();
    adopt_inherited_sockets(e);
}

fn program_name() -> String {
    extern "C" {
        static program_invocation_short_name: *const libc::c_char;
    }
    // SAFETY: glibc sets this before any constructor runs; it is a NUL-terminated string or null.
    unsafe {
        let p = program_invocation_short_name;
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

fn build() -> Engine {
    let _g = EngineGuard::enter();
    crate::grace::init(); // before any socket is tracked: readers' fence mode is fixed from here
    let (config, warnings) = Config::from_env();
    log::set_level(config.log_level);
    if let Some(path) = config.log_path(std::process::id()) {
        log::open_file(&path);
    }
    let program = program_name();
    for w in &warnings {
        log::warn(format_args!("{w}"));
    }
    let rules = match &config.config_file {
        Some(path) => {
            let (rules, warnings) = RuleSet::load(path, &program, config.application_id.as_deref());
            for w in &warnings {
                log::warn(format_args!("{w}"));
            }
            rules
        }
        None => RuleSet::default(),
    };
    std::panic::set_hook(Box::new(|info| {
        log::error(format_args!("internal error: {info}"));
    }));
    log::debug(format_args!(
        "accel {} loaded into {} (pid {})",
        env!("CARGO_PKG_VERSION"),
        program,
        std::process::id()
    ));
    if log::enabled(LogLevel::Debug) {
        let missing: Vec<_> = real::missing().map(|s| s.to_string_lossy()).collect();
        if !missing.is_empty() {
            log::debug(format_args!("libc lacks {}: those calls fail with ENOSYS", missing.join(", ")));
        }
    }
    crate::udp::set_datapath_on(config.enable && (config.shm || config.xdp));
    Engine { config, rules, program }
}

/// Runs engine work for `fd`; a panic inside hands the socket back to the kernel and returns None.
pub fn contain<T>(fd: c_int, what: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    let _g = EngineGuard::enter();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            static ONCE: log::Once = log::Once::new();
            if ONCE.first() {
                log::error(format_args!(
                    "internal failure in {what} on fd {fd}; this socket falls back to the kernel"
                ));
            }
            if let Some(s) = fdtable::remove(fd) {
                s.set_decision(&mut s.state.lock(), Decision::kernel(Reason::InternalFallback(what)));
                crate::stats::publish(fd, &s); // stats: the fallback and its reason
            }
            None
        }
    }
}

/// Runs `f` with errno saved and restored, so bookkeeping after a libc call never changes what
/// the app sees.
fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: errno is thread-local.
    let saved = unsafe { *libc::__errno_location() };
    let v = f();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
    v
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// The IPv4 address in `addr`, if it is one.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn sockaddr_v4(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddrV4> {
    if addr.is_null() || (len as usize) < size_of::<sockaddr_in>() {
        return None;
    }
    let mut sin = MaybeUninit::<sockaddr_in>::uninit();
    // SAFETY: caller guarantees len ≥ sizeof(sockaddr_in) readable bytes; unaligned-safe copy.
    core::ptr::copy_nonoverlapping(addr as *const u8, sin.as_mut_ptr() as *mut u8, size_of::<sockaddr_in>());
    let sin = sin.assume_init();
    if sin.sin_family as c_int != libc::AF_INET {
        return None;
    }
    Some(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)), u16::from_be(sin.sin_port)))
}

fn name_of(fd: c_int, peer: bool) -> Option<SocketAddrV4> {
    let mut sin = MaybeUninit::<sockaddr_in>::zeroed();
    let mut len = size_of::<sockaddr_in>() as socklen_t;
    // SAFETY: buffer and length describe a sockaddr_in we own.
    let r = unsafe {
        let p = sin.as_mut_ptr() as *mut sockaddr;
        if peer {
            real::getpeername(fd, p, &mut len)
        } else {
            real::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel filled `len` bytes of our buffer.
    unsafe { sockaddr_v4(sin.as_ptr() as *const sockaddr, len) }
}

fn sockopt_int(fd: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: v and len describe an int we own.
    let r = unsafe { real::getsockopt(fd, libc::SOL_SOCKET, name, &mut v as *mut c_int as *mut _, &mut len) };
    (r == 0).then_some(v)
}

fn fmt_addr(a: Option<SocketAddrV4>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

// ---------------------------------------------------------------------------------------------
// Decision points

/// After a successful `socket()`: track it if it is a kind we accelerate.
pub fn on_socket(fd: c_int, domain: c_int, ty: c_int, protocol: c_int) {
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return; // AF_UNIX, netlink...: not ours, not worth a log line
    }
    contain(fd, "socket", || {
        keep_errno(|| {
            let e = engine();
            let nonblocking = ty & libc::SOCK_NONBLOCK != 0;
            let ty = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            let d = decision::at_socket(&e.config, domain, ty, protocol, guard::resolving());
            let proto = if ty == libc::SOCK_STREAM { "tcp" } else if ty == libc::SOCK_DGRAM { "udp" } else { "other" };
            let family = if domain == libc::AF_INET6 { "6" } else { "" };
            log::debug(format_args!("decision fd={fd} {proto}{family} socket {d}"));
            if d.accelerate() {
                let s = Socket::new(domain, Proto::Udp);
                {
                    let mut st = s.state.lock();
                    st.nonblocking = nonblocking;
                    s.set_decision(&mut st, d);
                }
                s.nonblocking.store(nonblocking, Ordering::Relaxed);
                track(fd, Arc::new(s));
            }
        })
    });
}

fn track(fd: c_int, s: Arc<Socket>) {
    crate::stats::publish(fd, &s); // stats: fd, decision
    match fdtable::insert(fd, s) {
        Ok(old) => drop(old), // an fd we never saw closed (raw syscall): its old state goes
        Err(_) => {
            static ONCE: log::Once = log::Once::new();
            if ONCE.first() {
                log::warn(format_args!(
                    "fd {fd} is beyond the {} fds accel can track; such sockets stay in the kernel",
                    fdtable::MAX_FDS
                ));
            }
        }
    }
}

/// Applies a new decision to a tracked socket; a kernel verdict untracks it.
fn decide(fd: c_int, s: &Socket, what: &str, d: Decision) {
    let (local, remote) = {
        let st = s.state.lock();
        (st.local, st.remote)
    };
    let target = if what == "bind" { fmt_addr(local) } else if what == "connect" { fmt_addr(remote) } else { String::new() };
    log::debug(format_args!("decision fd={fd} {} {what} {target} {d}", s.proto.name()));
    let kernel = !d.accelerate();
    s.set_decision(&mut s.state.lock(), d);
    if kernel {
        // Its later sends skip the engine: what the AF_XDP datapath holds goes first (order).
        crate::xdp::flusher::flush_if_pending();
        release_rx(s);
        fdtable::remove(fd);
    }
}

/// Withdraws a socket's shm endpoint: it is served by the kernel from now on.
pub fn release_rx(s: &Socket) {
    if let Some(b) = s.rx.get() {
        if !s.rx_off.swap(true, Ordering::Relaxed) {
            b.vi().remove_filter(b);
            // What the queue already holds for this socket is still its data: keep it in the
            // stash, which receives serve before the kernel.
            crate::udp::drain_to_stashes(&*b.queue, Some((b.cookie, s)));
            if b.kind == crate::vi::ViKind::Xdp {
                // Frames the program redirected just before the removal reach the XSK when the
                // driver flushes its batch (end of its poll): look again a little later.
                for _ in 0..3 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    crate::udp::drain_to_stashes(&*b.queue, Some((b.cookie, s)));
                }
            }
            crate::stats::refresh(s); // stats: receive side back to the kernel
        }
    }
}

/// The socket has (or may have) a local address now — after bind, connect, or the implicit bind
/// of a first send: record it and, if the socket is accelerated, publish its shm endpoint.
pub fn after_local_address(fd: c_int, s: &Arc<Socket>) {
    let local = name_of(fd, false);
    s.set_local(&mut s.state.lock(), local);
    let Some(local) = local else { return };
    if local.port() == 0 || local.ip().is_multicast() || s.rx.get().is_some() || !s.accelerated() {
        return;
    }
    let e = engine();
    let filter = Filter { proto: Proto::Udp, local, remote: s.peer() };
    // A socket on an address of the XDP interface (or on 0.0.0.0) is the AF_XDP port's; any
    // other, and any the port refuses, is the shm VI's (if on).
    if e.config.xdp {
        if let Some(port) = crate::xdp::port::for_local(&e.config, *local.ip()) {
            refresh_rcvbuf(fd, s);
            match port.add_filter(fd, &filter, s) {
                Ok(b) => {
                    log::debug(format_args!(
                        "fd={fd} udp {local}: xdp filter on {}{}, ring {}, cookie {:x}",
                        port.ifname(),
                        filter.remote.map(|r| format!(" from {r}")).unwrap_or_default(),
                        match &b.state {
                            crate::vi::FilterState::Xdp(f) => f.ring,
                            _ => 0,
                        },
                        b.cookie
                    ));
                    match s.rx.set(b) {
                        Ok(()) => crate::mux::after_rx_binding(fd),
                        Err(b) => port.remove_filter(&b),
                    }
                    return;
                }
                Err(err) => {
                    log::warn(format_args!("fd={fd} udp {local}: no xdp filter ({err}); kernel path"));
                }
            }
        }
    }
    if !e.config.shm {
        return;
    }
    let Some(vi) = shmvi::get(&e.config) else { return };
    refresh_rcvbuf(fd, s);
    match vi.add_filter(fd, &filter, s) {
        Ok(b) => {
            log::debug(format_args!(
                "fd={fd} udp {local}: shm ring {} ({} ring allocation), cookie {:x}",
                shmvi::shm_filter(&b).map_or("", |f| &f.ring_name), e.config.ring_allocation_rx, b.cookie
            ));
            match s.rx.set(b) {
                Ok(()) => {
                    crate::mux::after_rx_binding(fd);
                    crate::stats::publish(fd, s); // stats: ring, local address
                }
                Err(b) => vi.remove_filter(&b), // raced with another thread's publish of the same socket
            }
        }
        Err(err) => {
            static ONCE: log::Once = log::Once::new();
            if ONCE.first() {
                log::warn(format_args!("fd={fd} udp {local}: cannot publish shm endpoint ({err}); kernel path"));
            }
        }
    }
}

/// After `bind()` on a tracked socket (r = its return value).
pub fn after_bind(fd: c_int, s: &Arc<Socket>, r: c_int) {
    if r != 0 {
        return;
    }
    contain(fd, "bind", || {
        keep_errno(|| {
            let local = name_of(fd, false);
            s.set_local(&mut s.state.lock(), local);
            let d = decision::by_rules(&engine().rules, Role::UdpReceiver, local, None);
            let accel = d.accelerate();
            decide(fd, s, "bind", d);
            if accel {
                after_local_address(fd, s);
            }
            crate::stats::publish(fd, s); // stats: local address, decision
        })
    });
}

/// After `connect()` on a tracked socket.
///
/// # Safety
/// `addr`/`len` are the arguments of the application's connect call.
pub unsafe fn after_connect(fd: c_int, s: &Arc<Socket>, addr: *const sockaddr, len: socklen_t, r: c_int) {
    if r != 0 {
        return;
    }
    contain(fd, "connect", || {
        keep_errno(|| {
            // SAFETY: addr/len come from the app's successful connect() call.
            let remote = unsafe { sockaddr_v4(addr, len) };
            let local = name_of(fd, false);
            {
                let mut st = s.state.lock();
                s.set_local(&mut st, local);
                s.set_peer(&mut st, remote); // AF_UNSPEC dissolves the association
            }
            if let (Some(b), Some(port), Some(local)) = (s.rx_binding(), crate::xdp::port::existing(), local) {
                if b.kind == crate::vi::ViKind::Xdp {
                    port.connected(b, local, remote);
                }
            }
            if remote.is_some() {
                let d = decision::by_rules(&engine().rules, Role::UdpConnect, local, remote);
                let accel = d.accelerate();
                decide(fd, s, "connect", d);
                if accel {
                    after_local_address(fd, s);
                }
            }
            crate::stats::publish(fd, s); // stats: addresses, decision
        })
    });
}

/// Before a send on a tracked socket: the first unconnected send applies the udp_sender rules.
pub fn before_send(fd: c_int, s: &Socket, dest: Option<SocketAddrV4>) {
    let Some(dest) = dest else { return };
    if s.sender_decided.load(Ordering::Relaxed) {
        return; // every send after the first: no lock
    }
    {
        let st = s.state.lock();
        if st.sender_decided || st.remote.is_some() {
            s.sender_decided.store(true, Ordering::Relaxed);
            return;
        }
    }
    contain(fd, "send", || {
        keep_errno(|| {
            let local = {
                let mut st = s.state.lock();
                st.sender_decided = true;
                s.sender_decided.store(true, Ordering::Relaxed);
                st.local
            };
            let d = decision::by_rules(&engine().rules, Role::UdpSender, local, Some(dest));
            log::debug(format_args!("decision fd={fd} udp send to {dest} {d}"));
            let kernel = !d.accelerate();
            s.set_decision(&mut s.state.lock(), d);
            crate::stats::publish(fd, s); // stats: decision
            if kernel {
                release_rx(s);
                fdtable::remove(fd);
            }
        })
    });
}

/// After a successful `setsockopt` on a tracked socket: options whose effect the shm path does
/// not reproduce (ancillary data on receive) hand the socket's receive side back to the kernel;
/// SO_REUSEADDR/SO_REUSEPORT on a published socket mark its endpoint as possibly shared with
/// sockets the registry does not list (senders then check it is alone: see shm/vi.rs).
pub fn after_setsockopt(fd: c_int, s: &Socket, level: c_int, name: c_int) {
    if level == libc::SOL_SOCKET && (name == libc::SO_RCVBUF || name == libc::SO_RCVBUFFORCE) {
        refresh_rcvbuf(fd, s);
        return;
    }
    if level == libc::SOL_SOCKET && (name == libc::SO_REUSEADDR || name == libc::SO_REUSEPORT) {
        if let (Some(b), Some(vi)) = (s.rx.get(), shmvi::existing()) {
            if !s.rx_off.load(Ordering::Relaxed) {
                contain(fd, "setsockopt", || keep_errno(|| vi.port_became_shared(b)));
            }
        }
        return;
    }
    let needs_kernel = match level {
        libc::SOL_IP => matches!(
            name,
            libc::IP_PKTINFO | libc::IP_RECVTOS | libc::IP_RECVTTL | libc::IP_RECVERR | libc::IP_RECVORIGDSTADDR
                | libc::IP_RETOPTS | libc::IP_RECVOPTS
        ),
        libc::SOL_SOCKET => matches!(
            name,
            libc::SO_TIMESTAMP | libc::SO_TIMESTAMPNS | libc::SO_TIMESTAMPING | libc::SO_RXQ_OVFL
                | libc::SO_ATTACH_FILTER | libc::SO_ATTACH_BPF
        ),
        _ => false,
    };
    if needs_kernel && s.rx.get().is_some() && !s.rx_off.load(Ordering::Relaxed) {
        log::debug(format_args!(
            "fd={fd} udp: socket option {level}/{name} needs the kernel's receive path; shm receive off"
        ));
        release_rx(s);
    }
}

/// The IPPROTO_IP options that change a socket's multicast memberships (the intercept calls
/// [`after_membership`] after each that succeeds).
pub fn is_membership_option(name: c_int) -> bool {
    matches!(
        name,
        libc::IP_ADD_MEMBERSHIP
            | libc::IP_DROP_MEMBERSHIP
            | libc::IP_ADD_SOURCE_MEMBERSHIP
            | libc::IP_DROP_SOURCE_MEMBERSHIP
            | libc::IP_BLOCK_SOURCE
            | libc::IP_UNBLOCK_SOURCE
            | libc::IP_MSFILTER
            | libc::MCAST_JOIN_GROUP
            | libc::MCAST_LEAVE_GROUP
            | libc::MCAST_JOIN_SOURCE_GROUP
            | libc::MCAST_LEAVE_SOURCE_GROUP
            | libc::MCAST_BLOCK_SOURCE
            | libc::MCAST_UNBLOCK_SOURCE
            | libc::MCAST_MSFILTER
    )
}

/// What the membership option `name` with value `bytes` (as the kernel accepted it) does: the
/// group, the interface it names, the change. None for an IPv6 group (a group_req may carry
/// one) or a value too short to say.
///
/// Layouts: `ip_mreq` (group, interface address) or `ip_mreqn` (…, interface index) for
/// IP_ADD/DROP_MEMBERSHIP; `ip_mreq_source` (group, interface address, source) for the
/// IP_*_SOURCE options; `ip_msfilter` (group, interface address, u32 mode, u32 count, then the
/// sources, 4 bytes each, from 16) for IP_MSFILTER; and for the protocol-independent MCAST_*
/// options a u32 interface index, then (8-byte aligned) a `sockaddr_storage` with the group at 8
/// and, in `group_source_req`, a second one with the source at 136; `group_filter` has the mode
/// and count at 136 and 140 and the sources as `sockaddr_storage`s (128 bytes each) from 144.
/// A filter whose list cannot be read whole is `SetFilter(None)`.
pub fn parse_membership(name: c_int, bytes: &[u8]) -> Option<(Ipv4Addr, JoinInterface, GroupChange)> {
    let ip = |at: usize| bytes.get(at..at + 4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let sin = |at: usize| {
        let family = bytes.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]))?;
        if family != libc::AF_INET as u16 {
            return None;
        }
        ip(at + 4)
    };
    let by_address = |a: Ipv4Addr| if a.is_unspecified() { JoinInterface::Any } else { JoinInterface::Address(a) };
    // A filter set wholesale: mode and count words, then `count` sources `step` bytes apart from
    // `first`, each read by `source`; None when the value does not hold them all.
    let filter = |mode_at: usize, count_at: usize, first: usize, step: usize, source: &dyn Fn(usize) -> Option<Ipv4Addr>| {
        let count = word(count_at)? as usize;
        let sources = (0..count).map(|k| source(first + step * k)).collect::<Option<Vec<_>>>()?;
        Some(SourceFilter { include: word(mode_at)? == MCAST_INCLUDE, sources })
    };
    let by_index = |i: u32| if i == 0 { JoinInterface::Any } else { JoinInterface::Index(i) };
    match name {
        libc::IP_ADD_MEMBERSHIP | libc::IP_DROP_MEMBERSHIP => {
            let iface = match word(8) {
                Some(index) if index != 0 => JoinInterface::Index(index),
                _ => by_address(ip(4)?),
            };
            let change = if name == libc::IP_ADD_MEMBERSHIP { GroupChange::Join } else { GroupChange::Leave };
            Some((ip(0)?, iface, change))
        }
        libc::IP_ADD_SOURCE_MEMBERSHIP | libc::IP_DROP_SOURCE_MEMBERSHIP | libc::IP_BLOCK_SOURCE | libc::IP_UNBLOCK_SOURCE => {
            Some((ip(0)?, by_address(ip(4)?), source_change(name, ip(8)?)))
        }
        libc::IP_MSFILTER => Some((ip(0)?, by_address(ip(4)?), GroupChange::SetFilter(filter(8, 12, 16, 4, &ip)))),
        libc::MCAST_JOIN_GROUP | libc::MCAST_LEAVE_GROUP => {
            let change = if name == libc::MCAST_JOIN_GROUP { GroupChange::Join } else { GroupChange::Leave };
            Some((sin(8)?, by_index(word(0)?), change))
        }
        libc::MCAST_JOIN_SOURCE_GROUP | libc::MCAST_LEAVE_SOURCE_GROUP | libc::MCAST_BLOCK_SOURCE | libc::MCAST_UNBLOCK_SOURCE => {
            Some((sin(8)?, by_index(word(0)?), source_change(name, sin(136)?)))
        }
        libc::MCAST_MSFILTER => Some((sin(8)?, by_index(word(0)?), GroupChange::SetFilter(filter(136, 140, 144, 128, &sin)))),
        _ => None,
    }
}

/// `ip_msfilter.imsf_fmode` / `group_filter.gf_fmode`: only the listed sources (else
/// MCAST_EXCLUDE, 0: all but them).
const MCAST_INCLUDE: u32 = 1;

/// The change a source option makes, in either family (IP_* with `ip_mreq_source`, MCAST_* with
/// `group_source_req`): the caller has matched `name` to one of the four kinds.
fn source_change(name: c_int, source: Ipv4Addr) -> GroupChange {
    match name {
        libc::IP_ADD_SOURCE_MEMBERSHIP | libc::MCAST_JOIN_SOURCE_GROUP => GroupChange::JoinSource(source),
        libc::IP_DROP_SOURCE_MEMBERSHIP | libc::MCAST_LEAVE_SOURCE_GROUP => GroupChange::LeaveSource(source),
        libc::IP_BLOCK_SOURCE | libc::MCAST_BLOCK_SOURCE => GroupChange::Block(source),
        _ => GroupChange::Unblock(source),
    }
}

/// After a successful membership option ([`is_membership_option`]) on a tracked socket: the
/// membership is the kernel's (it sends the IGMP reports and keeps the source filter); a socket
/// on the AF_XDP datapath also gets (or loses) filters for the group — only while it is the
/// group's single member on the interface, and only for what filters can say: any source, or a
/// set of sources (see xdp/port.rs). `val` is the application's option value.
pub fn after_membership(fd: c_int, s: &Socket, name: c_int, val: *const c_void, len: socklen_t) {
    let e = engine();
    if !e.config.xdp || !crate::udp::plausible(val, len as usize) {
        return;
    }
    // SAFETY: `len` plausible bytes of the application's, which the kernel just read
    // successfully (the call succeeded); only read, for the duration of this call.
    let bytes = unsafe { core::slice::from_raw_parts(val as *const u8, len as usize) };
    let Some((group, iface, change)) = parse_membership(name, bytes) else { return };
    if !group.is_multicast() {
        return;
    }
    let xdp = s.rx_binding().filter(|b| b.kind == crate::vi::ViKind::Xdp);
    let (Some(b), Some(port)) = (xdp, crate::xdp::port::existing()) else {
        // Joined without our XSK (another process has the queue, or this socket is not on
        // the datapath): make sure no other process keeps the group to itself.
        if matches!(change, GroupChange::Join | GroupChange::JoinSource(_)) {
            if let Some(local) = s.local() {
                contain(fd, "setsockopt", || keep_errno(|| crate::xdp::port::joined_without_port(&e.config, group, local.port())));
            }
        }
        return;
    };
    contain(fd, "setsockopt", || keep_errno(|| port.membership(b, group, iface, change)));
}

/// After a successful setipv4sourcefilter() on one of our sockets: glibc sets the filter with a
/// setsockopt(IP_MSFILTER) inside libc, which no preloaded setsockopt sees, so the call is
/// followed as that option would be (its `ip_msfilter` rebuilt from the arguments).
///
/// # Safety
/// `list` holds `count` addresses (libc just read them: the call succeeded).
pub unsafe fn after_ipv4_source_filter(fd: c_int, s: &Socket, iface: libc::in_addr, group: libc::in_addr, mode: u32, count: u32, list: *const libc::in_addr) {
    let mut msf = Vec::with_capacity(16 + 4 * count.min(MAX_FILTER_SOURCES) as usize);
    for word in [group.s_addr, iface.s_addr] {
        msf.extend_from_slice(&word.to_ne_bytes());
    }
    msf.extend_from_slice(&mode.to_ne_bytes());
    msf.extend_from_slice(&count.to_ne_bytes());
    // A list we cannot read whole stays short: the filter is then one we cannot follow.
    if count <= MAX_FILTER_SOURCES && !list.is_null() {
        for k in 0..count as usize {
            // SAFETY: the caller's `count` sources at `list`, which libc just read successfully.
            let a = unsafe { core::ptr::read_unaligned(list.add(k)) };
            msf.extend_from_slice(&a.s_addr.to_ne_bytes());
        }
    }
    after_membership(fd, s, libc::IP_MSFILTER, msf.as_ptr().cast(), msf.len() as socklen_t);
}

/// After a successful setsourcefilter() on one of our sockets: as
/// [`after_ipv4_source_filter`], for the `group_filter` of MCAST_MSFILTER.
///
/// # Safety
/// `group` holds `group_len` bytes and `list` `count` `sockaddr_storage`s (libc just read them:
/// the call succeeded).
#[allow(clippy::too_many_arguments)]
pub unsafe fn after_source_filter(fd: c_int, s: &Socket, iface: u32, group: *const sockaddr, group_len: socklen_t, mode: u32, count: u32, list: *const libc::sockaddr_storage) {
    const STORAGE: usize = size_of::<libc::sockaddr_storage>();
    if group.is_null() || group_len as usize > STORAGE {
        return;
    }
    let mut gf = vec![0u8; 8 + STORAGE];
    gf[..4].copy_from_slice(&iface.to_ne_bytes());
    // SAFETY: `group_len` (at most a sockaddr_storage) bytes of the caller's group address,
    // which libc just read successfully.
    let g = unsafe { core::slice::from_raw_parts(group.cast::<u8>(), group_len as usize) };
    gf[8..8 + g.len()].copy_from_slice(g);
    gf.extend_from_slice(&mode.to_ne_bytes());
    gf.extend_from_slice(&count.to_ne_bytes());
    if count <= MAX_FILTER_SOURCES && !list.is_null() {
        // SAFETY: the caller's `count` sockaddr_storages at `list`, which libc just read.
        let l = unsafe { core::slice::from_raw_parts(list.cast::<u8>(), count as usize * STORAGE) };
        gf.extend_from_slice(l);
    }
    after_membership(fd, s, libc::MCAST_MSFILTER, gf.as_ptr().cast(), gf.len() as socklen_t);
}

/// The most sources of a filter set wholesale that we follow (the kernel's own limit,
/// net.ipv4.igmp_max_msf, is 10 by default).
const MAX_FILTER_SOURCES: u32 = 4096;

/// Reads the kernel socket's SO_RCVBUF (as the kernel reports it: the doubled value) into the
/// socket's stash bound.
pub fn refresh_rcvbuf(fd: c_int, s: &Socket) {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: an int-sized option into our own int.
    let r = unsafe { real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &mut v as *mut c_int as *mut c_void, &mut len) };
    if r == 0 && v > 0 {
        s.rcvbuf.store(v as u32, Ordering::Relaxed);
    }
}

/// Observes TCP decision points of untracked sockets (only when debug logging is on: TCP has no
/// datapath in this version, so this is purely informative).
pub fn observe_tcp(fd: c_int, role: Role, remote: Option<SocketAddrV4>, r: c_int) {
    if !log::enabled(LogLevel::Debug) || (r != 0 && !(r == -1 && errno() == libc::EINPROGRESS)) {
        return;
    }
    contain(fd, "observe", || {
        keep_errno(|| {
            if sockopt_int(fd, libc::SO_DOMAIN) != Some(libc::AF_INET)
                || sockopt_int(fd, libc::SO_TYPE) != Some(libc::SOCK_STREAM)
            {
                return;
            }
            let local = name_of(fd, false);
            let d = decision::tcp_by_rules(&engine().rules, role, local, remote);
            let (what, target) = match role {
                Role::TcpServer => ("listen", fmt_addr(local)),
                _ => ("connect", fmt_addr(remote)),
            };
            log::debug(format_args!("decision fd={fd} tcp {what} {target} {d}"));
        })
    });
}

fn errno() -> c_int {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

// ---------------------------------------------------------------------------------------------
// fd life

/// Before `close(fd)`: forget it first, so a concurrent socket() that reuses the number is not
/// forgotten by mistake.
pub fn before_close(fd: c_int) {
    if fd == log::fd() {
        log::forget_fd();
    }
    if fdtable::is_ours(fd) {
        let _g = EngineGuard::enter();
        drop(fdtable::remove(fd));
    }
}

/// After `shutdown(fd, how)` returned `r`: the kernel applied it on success and, for UDP, also
/// when it failed with ENOTCONN.
pub fn after_shutdown(fd: c_int, how: c_int, r: c_int) {
    if let Some(s) = fdtable::get(fd) {
        // SAFETY: errno is thread-local.
        let e = unsafe { *libc::__errno_location() };
        if r == 0 || (s.proto == Proto::Udp && e == libc::ENOTCONN) {
            s.record_shutdown(how);
        }
    }
}

/// After a successful `getsockopt(fd, SOL_SOCKET, SO_ERROR)`: a socket error that a doorbell
/// probe took off the kernel socket is reported (and cleared) here too, as the kernel would.
///
/// # Safety
/// `val`/`len` are what the application passed, and the kernel just wrote through them.
pub unsafe fn after_get_so_error(fd: c_int, val: *mut libc::c_void, len: *mut libc::socklen_t) {
    let Some(s) = fdtable::get(fd) else { return };
    let kept = s.kernel_error.swap(0, core::sync::atomic::Ordering::Relaxed);
    if kept != 0 && !val.is_null() && !len.is_null() && *len as usize >= size_of::<c_int>() {
        let v = val as *mut c_int;
        if v.read_unaligned() == 0 {
            v.write_unaligned(kept);
        }
    }
}

/// Before `close_range(first, last, flags)` / `closefrom(first)`.
pub fn before_close_range(first: u32, last: u32, flags: c_int) {
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) != 0 {
        return; // only marks close-on-exec; exec itself ends our state
    }
    let lfd = log::fd();
    if lfd > 2 && (first..=last).contains(&(lfd as u32)) {
        log::forget_fd();
    }
    if fdtable::any() {
        let _g = EngineGuard::enter();
        drop(fdtable::remove_range(first, last));
    }
}

/// After `dup(old)` / `fcntl(old, F_DUPFD*)` returned `new`.
pub fn after_dup(old: c_int, new: c_int) {
    if new < 0 {
        return;
    }
    let _g = EngineGuard::enter();
    if let Some(s) = fdtable::get(old) {
        track(new, s);
    }
}

/// Before `dup2/dup3(old, new)`: the implicit close of `new`.
pub fn before_dup2(old: c_int, new: c_int) {
    if old != new {
        before_close(new);
    }
}

/// After `dup2/dup3(old, new)` returned `r`.
pub fn after_dup2(old: c_int, new: c_int, r: c_int) {
    if r >= 0 && old != new {
        after_dup(old, new);
    }
}

/// Records the app's O_NONBLOCK choice on a tracked socket.
pub fn set_nonblocking(fd: c_int, on: bool) {
    if let Some(s) = fdtable::get(fd) {
        s.state.lock().nonblocking = on;
        s.nonblocking.store(on, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Process life

fn register_fork_handlers() {
    extern "C" fn prepare() {
        crate::xdp::flusher::before_fork();
        fdtable::lock_for_fork();
    }
    extern "C" fn parent() {
        fdtable::unlock_after_fork();
        crate::xdp::flusher::after_fork();
    }
    extern "C" fn child() {
        fdtable::unlock_after_fork();
        crate::xdp::flusher::after_fork();
        crate::grace::after_fork_child();
        crate::shm::ring::after_fork_child();
        crate::mux::after_fork_child();
        crate::xdp::port::after_fork_child();
        if let Some(vi) = shmvi::existing() {
            vi.forget_cache();
        }
        // A per-pid log file (%d) is re-opened under the child's own pid.
        if let Some(e) = ENGINE.get() {
            if let Some(f) = &e.config.log_file {
                if f.contains("%d") {
                    log::reset_to_stderr();
                    if let Some(path) = e.config.log_path(log::sys::getpid()) {
                        log::open_file(&path);
                    }
                }
            }
            log::log(LogLevel::Fine, format_args!("forked from {} ({} sockets tracked)", e.program, fdtable::count()));
        }
    }
    // SAFETY: registers three extern "C" fns with no arguments, as pthread_atfork expects.
    let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if r != 0 {
        log::warn(format_args!("pthread_atfork failed ({r}); state after fork may be stale"));
    }
    extern "C" fn at_exit() {
        let _g = EngineGuard::enter();
        crate::stats::shutdown(); // stats: the block goes with the process
        if let Some(vi) = shmvi::existing() {
            vi.shutdown();
        }
        crate::xdp::flusher::flush_if_pending(); // counted in the log line below
        crate::xdp::port::log_counters();
        crate::xdp::port::shutdown();
    }
    // SAFETY: registers an extern "C" fn with no arguments.
    unsafe { libc::atexit(at_exit) };
}

/// Just before an exec-family call: withdraw our shm endpoints (senders then use the kernel
/// socket, which the new image inherits). Returns a token for [`after_failed_exec`].
pub fn before_exec() -> Vec<Arc<Socket>> {
    let _g = EngineGuard::enter();
    // Frames left unkicked (ACCEL_XDP_TX_BATCH) would go with this image.
    crate::xdp::flusher::flush_before_exec();
    shmvi::existing().map(|vi| vi.withdraw_all()).unwrap_or_default()
}

/// The exec failed and this image goes on: publish the endpoints again.
pub fn after_failed_exec(withdrawn: Vec<Arc<Socket>>) {
    if withdrawn.is_empty() {
        return;
    }
    let _g = EngineGuard::enter();
    if let Some(vi) = shmvi::existing() {
        keep_errno(|| vi.republish(&withdrawn));
    }
}

/// After exec, sockets inherited from the previous image are still open: look at each and track
/// the ones we would accelerate, so the new image treats them as its own.
fn adopt_inherited_sockets(e: &Engine) {
    if !e.config.enable {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<c_int> = dir
        .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat on an fd number with a buffer we own; a closed fd just fails.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: fstat succeeded and filled the buffer.
        let st = unsafe { st.assume_init() };
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            continue;
        }
        if sockopt_int(fd, libc::SO_DOMAIN) != Some(libc::AF_INET)
            || sockopt_int(fd, libc::SO_TYPE) != Some(libc::SOCK_DGRAM)
        {
            continue;
        }
        // SAFETY: F_GETFL on an open fd.
        let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
        let s = Socket::new(libc::AF_INET, Proto::Udp);
        let local = name_of(fd, false);
        let remote = name_of(fd, true);
        let d = match (local, remote) {
            (_, Some(_)) => decision::by_rules(&e.rules, Role::UdpConnect, local, remote),
            (Some(l), None) if l.port() != 0 => decision::by_rules(&e.rules, Role::UdpReceiver, local, None),
            _ => Decision::accel(Reason::Inherited),
        };
        log::debug(format_args!("decision fd={fd} udp inherited {} {d}", fmt_addr(local)));
        if d.accelerate() {
            {
                let mut stt = s.state.lock();
                s.set_local(&mut stt, local);
                s.set_peer(&mut stt, remote);
                stt.nonblocking = flags >= 0 && flags & libc::O_NONBLOCK != 0;
                s.set_decision(&mut stt, d);
                s.nonblocking.store(stt.nonblocking, Ordering::Relaxed);
            }
            let s = Arc::new(s);
            track(fd, s.clone());
            // Serve it through shm in this image too (the previous image withdrew its endpoint).
            after_local_address(fd, &s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option values as libc lays them out, byte for byte.
    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain C struct we own (zero-initialised, so no padding is uninit).
        unsafe { core::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    fn in_addr(ip: &str) -> libc::in_addr {
        libc::in_addr { s_addr: u32::from(ip.parse::<Ipv4Addr>().unwrap()).to_be() }
    }

    fn storage(ip: &str) -> libc::sockaddr_storage {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
        let sin = sockaddr_in { sin_family: libc::AF_INET as libc::sa_family_t, sin_port: 0, sin_addr: in_addr(ip), sin_zero: [0; 8] };
        // SAFETY: a sockaddr_in fits in a sockaddr_storage.
        unsafe { core::ptr::write(&mut ss as *mut libc::sockaddr_storage as *mut sockaddr_in, sin) };
        ss
    }

    #[test]
    fn membership_options_are_read_as_the_kernel_reads_them() {
        let g: Ipv4Addr = "239.1.2.3".parse().unwrap();
        let src: Ipv4Addr = "10.0.0.9".parse().unwrap();
        let mreq = libc::ip_mreq { imr_multiaddr: in_addr("239.1.2.3"), imr_interface: in_addr("10.0.0.1") };
        assert_eq!(
            parse_membership(libc::IP_ADD_MEMBERSHIP, &bytes_of(&mreq)),
            Some((g, JoinInterface::Address("10.0.0.1".parse().unwrap()), GroupChange::Join))
        );
        let mreqn = libc::ip_mreqn { imr_multiaddr: in_addr("239.1.2.3"), imr_address: in_addr("0.0.0.0"), imr_ifindex: 7 };
        assert_eq!(parse_membership(libc::IP_DROP_MEMBERSHIP, &bytes_of(&mreqn)), Some((g, JoinInterface::Index(7), GroupChange::Leave)));
        let mreqn = libc::ip_mreqn { imr_multiaddr: in_addr("239.1.2.3"), imr_address: in_addr("0.0.0.0"), imr_ifindex: 0 };
        assert_eq!(parse_membership(libc::IP_ADD_MEMBERSHIP, &bytes_of(&mreqn)), Some((g, JoinInterface::Any, GroupChange::Join)));
        let ms = libc::ip_mreq_source {
            imr_multiaddr: in_addr("239.1.2.3"),
            imr_interface: in_addr("0.0.0.0"),
            imr_sourceaddr: in_addr("10.0.0.9"),
        };
        for (name, change) in [
            (libc::IP_ADD_SOURCE_MEMBERSHIP, GroupChange::JoinSource(src)),
            (libc::IP_DROP_SOURCE_MEMBERSHIP, GroupChange::LeaveSource(src)),
            (libc::IP_BLOCK_SOURCE, GroupChange::Block(src)),
            (libc::IP_UNBLOCK_SOURCE, GroupChange::Unblock(src)),
        ] {
            assert_eq!(parse_membership(name, &bytes_of(&ms)), Some((g, JoinInterface::Any, change)));
        }
        let gr = libc::group_req { gr_interface: 5, gr_group: storage("239.1.2.3") };
        assert_eq!(parse_membership(libc::MCAST_JOIN_GROUP, &bytes_of(&gr)), Some((g, JoinInterface::Index(5), GroupChange::Join)));
        assert_eq!(parse_membership(libc::MCAST_LEAVE_GROUP, &bytes_of(&gr)), Some((g, JoinInterface::Index(5), GroupChange::Leave)));
        let gsr = libc::group_source_req { gsr_interface: 0, gsr_group: storage("239.1.2.3"), gsr_source: storage("10.0.0.9") };
        for (name, change) in [
            (libc::MCAST_JOIN_SOURCE_GROUP, GroupChange::JoinSource(src)),
            (libc::MCAST_LEAVE_SOURCE_GROUP, GroupChange::LeaveSource(src)),
            (libc::MCAST_BLOCK_SOURCE, GroupChange::Block(src)),
            (libc::MCAST_UNBLOCK_SOURCE, GroupChange::Unblock(src)),
        ] {
            assert_eq!(parse_membership(name, &bytes_of(&gsr)), Some((g, JoinInterface::Any, change)));
        }
        // An IPv6 group, a short value, another option: nothing to follow.
        let mut v6 = gr;
        v6.gr_group.ss_family = libc::AF_INET6 as libc::sa_family_t;
        assert_eq!(parse_membership(libc::MCAST_JOIN_GROUP, &bytes_of(&v6)), None);
        assert_eq!(parse_membership(libc::IP_ADD_SOURCE_MEMBERSHIP, &bytes_of(&mreq)), None);
        assert_eq!(parse_membership(libc::IP_MULTICAST_IF, &bytes_of(&mreq)), None);
        assert!(is_membership_option(libc::MCAST_MSFILTER) && !is_membership_option(libc::IP_MULTICAST_TTL));
    }

    #[test]
    fn source_filters_set_wholesale_are_read_with_their_lists() {
        let g: Ipv4Addr = "239.1.2.3".parse().unwrap();
        let (s1, s2): (Ipv4Addr, Ipv4Addr) = ("10.0.0.8".parse().unwrap(), "10.0.0.9".parse().unwrap());
        let filter = |include, sources: Vec<Ipv4Addr>| GroupChange::SetFilter(Some(SourceFilter { include, sources }));
        // struct ip_msfilter: group, interface, mode, count, sources.
        let msf = |mode: u32, count: u32, list: &[&str]| {
            let mut b = Vec::new();
            b.extend_from_slice(&bytes_of(&in_addr("239.1.2.3")));
            b.extend_from_slice(&bytes_of(&in_addr("10.0.0.1")));
            b.extend_from_slice(&mode.to_ne_bytes());
            b.extend_from_slice(&count.to_ne_bytes());
            for x in list {
                b.extend_from_slice(&bytes_of(&in_addr(x)));
            }
            b
        };
        let by_address = JoinInterface::Address("10.0.0.1".parse().unwrap());
        assert_eq!(parse_membership(libc::IP_MSFILTER, &msf(1, 2, &["10.0.0.8", "10.0.0.9"])), Some((g, by_address, filter(true, vec![s1, s2]))));
        assert_eq!(parse_membership(libc::IP_MSFILTER, &msf(0, 1, &["10.0.0.9"])), Some((g, by_address, filter(false, vec![s2]))));
        assert_eq!(parse_membership(libc::IP_MSFILTER, &msf(1, 0, &[])), Some((g, by_address, filter(true, vec![]))));
        // A count the value does not hold: a filter we cannot read, still a change.
        assert_eq!(parse_membership(libc::IP_MSFILTER, &msf(1, 3, &["10.0.0.8"])), Some((g, by_address, GroupChange::SetFilter(None))));
        // struct group_filter: index, (pad), group storage, mode, count, source storages.
        let gf = |mode: u32, list: &[&str]| {
            let mut b = Vec::new();
            b.extend_from_slice(&4u32.to_ne_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&bytes_of(&storage("239.1.2.3")));
            b.extend_from_slice(&mode.to_ne_bytes());
            b.extend_from_slice(&(list.len() as u32).to_ne_bytes());
            for x in list {
                b.extend_from_slice(&bytes_of(&storage(x)));
            }
            b
        };
        assert_eq!(parse_membership(libc::MCAST_MSFILTER, &gf(1, &["10.0.0.9", "10.0.0.8"])), Some((g, JoinInterface::Index(4), filter(true, vec![s2, s1]))));
        assert_eq!(parse_membership(libc::MCAST_MSFILTER, &gf(0, &[])), Some((g, JoinInterface::Index(4), filter(false, vec![]))));
    }

    fn udp() -> c_int {
        crate::testutil::init();
        // SAFETY: plain socket creation.
        unsafe { real::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) }
    }

    fn bind_any(fd: c_int) -> c_int {
        let sin = sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in.
        unsafe { real::bind(fd, &sin as *const sockaddr_in as *const sockaddr, size_of::<sockaddr_in>() as socklen_t) }
    }

    #[test]
    fn udp_socket_tracked_through_bind_dup_close() {
        let fd = udp();
        on_socket(fd, libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fdtable::is_ours(fd));
        let s = fdtable::get(fd).unwrap();
        let r = bind_any(fd);
        after_bind(fd, &s, r);
        assert_eq!(s.state.lock().local.unwrap().ip(), &Ipv4Addr::LOCALHOST);
        assert!(s.accelerated(), "no rules: default is accelerate");

        // SAFETY: dup of an fd we own.
        let d = unsafe { real::dup(fd) };
        after_dup(fd, d);
        assert!(Arc::ptr_eq(&fdtable::get(d).unwrap(), &s));

        before_close(fd);
        // SAFETY: closing our own fd.
        unsafe { real::close(fd) };
        assert!(!fdtable::is_ours(fd));
        assert!(fdtable::is_ours(d), "dup keeps the socket");
        before_close(d);
        // SAFETY: as above.
        unsafe { real::close(d) };
        assert!(!fdtable::is_ours(d));
        drop(s);
    }

    #[test]
    fn dup2_over_a_tracked_fd_replaces_it() {
        let a = udp();
        let b = udp();
        on_socket(a, libc::AF_INET, libc::SOCK_DGRAM, 0);
        on_socket(b, libc::AF_INET, libc::SOCK_DGRAM, 0);
        let sa = fdtable::get(a).unwrap();
        before_dup2(a, b);
        // SAFETY: dup2 between fds we own.
        let r = unsafe { real::dup2(a, b) };
        after_dup2(a, b, r);
        assert!(Arc::ptr_eq(&fdtable::get(b).unwrap(), &sa));
        // dup2 onto itself changes nothing
        before_dup2(a, a);
        after_dup2(a, a, a);
        assert!(fdtable::is_ours(a));
        before_close_range(a as u32, b as u32, 0);
        // SAFETY: closing our own fds.
        unsafe {
            real::close(a);
            real::close(b);
        }
        assert!(!fdtable::is_ours(a) && !fdtable::is_ours(b));
    }

    #[test]
    fn close_range_cloexec_keeps_entries() {
        let a = udp();
        on_socket(a, libc::AF_INET, libc::SOCK_DGRAM, 0);
        before_close_range(a as u32, a as u32, libc::CLOSE_RANGE_CLOEXEC as c_int);
        assert!(fdtable::is_ours(a));
        before_close(a);
        // SAFETY: closing our own fd.
        unsafe { real::close(a) };
    }

    #[test]
    fn tcp_and_unix_sockets_are_not_tracked() {
        // SAFETY: plain socket creation.
        let t = unsafe { real::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        on_socket(t, libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(!fdtable::is_ours(t));
        // SAFETY: as above.
        let u = unsafe { real::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
        on_socket(u, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        assert!(!fdtable::is_ours(u));
        // SAFETY: closing our own fds.
        unsafe {
            real::close(t);
            real::close(u);
        }
    }

    #[test]
    fn resolver_sockets_are_not_tracked() {
        let fd = udp();
        {
            let _r = guard::ResolverGuard::enter();
            on_socket(fd, libc::AF_INET, libc::SOCK_DGRAM, 0);
        }
        assert!(!fdtable::is_ours(fd));
        // SAFETY: closing our own fd.
        unsafe { real::close(fd) };
    }

    #[test]
    fn contain_turns_a_panic_into_kernel_fallback() {
        let fd = udp();
        on_socket(fd, libc::AF_INET, libc::SOCK_DGRAM, 0);
        let s = fdtable::get(fd).unwrap();
        let r: Option<()> = contain(fd, "test", || panic!("boom"));
        assert!(r.is_none());
        assert!(!fdtable::is_ours(fd));
        assert_eq!(
            s.state.lock().decision.as_ref().unwrap().reason,
            Reason::InternalFallback("test")
        );
        // SAFETY: closing our own fd.
        unsafe { real::close(fd) };
    }

    #[test]
    fn sockaddr_parsing_is_bounds_checked() {
        // SAFETY: null and short inputs are rejected before any read.
        unsafe {
            assert!(sockaddr_v4(core::ptr::null(), 16).is_none());
            let b = [0u8; 4];
            assert!(sockaddr_v4(b.as_ptr() as *const sockaddr, 4).is_none());
        }
    }
}
