//! The next hop of an outgoing datagram: which interface, which source address, whose MAC.
//!
//! An AF_XDP socket sends raw Ethernet frames, so before a datagram can bypass the kernel we
//! must know what the kernel would have put in front of it. We ask the kernel itself, over a
//! raw `NETLINK_ROUTE` socket (no crate: two fixed-layout requests):
//!
//! 1. `RTM_GETROUTE` for the destination — the same lookup `ip route get` makes, so policy
//!    routing, metrics and the preferred source are the kernel's: the output interface, the
//!    gateway (if the destination is not on-link) and the preferred source address.
//! 2. `RTM_GETNEIGH` for the gateway (or the destination when on-link) on that interface — the
//!    ARP cache entry. Only an entry with a MAC in a usable state (reachable, stale, delay,
//!    probe, permanent, noarp) counts. Anything else is [`NoNextHop::Unresolved`]: the caller
//!    sends that datagram through the kernel, whose ARP then resolves the address, and a later
//!    lookup finds it.
//!
//! Multicast destinations need no neighbour (the MAC is derived from the group, RFC 1112).
//! Broadcast, local and unreachable destinations, and routes out of another interface, are the
//! kernel's.
//!
//! # Caching
//!
//! A lookup is two system-call round trips, far too slow per datagram, so results are cached
//! per destination: hits for [`HIT_TTL`], misses for [`MISS_TTL`] (short: the kernel is
//! resolving the address right now). The caller invalidates an entry when a send with it fails.
//! Time-based expiry is what bounds how long a route or ARP change goes unnoticed.

use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a resolved next hop is reused without asking the kernel again.
pub const HIT_TTL: Duration = Duration::from_millis(1000);
/// How long "unresolved" is believed: short, as the kernel resolves the neighbour while it sends
/// the datagrams we hand back (one netlink query per MISS_TTL meanwhile).
pub const MISS_TTL: Duration = Duration::from_millis(2);
/// Bound on cached destinations; the cache is emptied when it is reached.
const CACHE_LIMIT: usize = 4096;

/// Where a frame for one destination goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The output interface.
    pub ifindex: u32,
    /// The destination MAC: the gateway's, the destination's, or the multicast group's.
    pub dst_mac: [u8; 6],
    /// The kernel's preferred source address for this route (for unbound senders).
    pub src_ip: Option<Ipv4Addr>,
}

/// Why there is no next hop we may use; the datagram goes through the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoNextHop {
    /// No route, or an unreachable/prohibit/blackhole route.
    NoRoute,
    /// The destination is an address of this host, or broadcast: the kernel's business.
    LocalOrBroadcast,
    /// The route leaves through another interface than ours.
    OtherInterface,
    /// The neighbour's MAC is not known (yet).
    Unresolved,
    /// The netlink conversation failed.
    Netlink,
}

/// Resolves and caches next hops for one interface.
pub struct Resolver {
    ifindex: u32,
    netlink: Netlink,
    cache: HashMap<Ipv4Addr, (Result<NextHop, NoNextHop>, Instant)>,
    /// The last destination looked up, if it resolved, with its next hop and when it was
    /// resolved ([`coarse_now`]): a sender usually sends where it sent last, and this skips
    /// hashing the address (SipHash: the map's keys are the application's destinations, maybe
    /// chosen by its peers) and reading the full-resolution clock.
    last: Option<(Ipv4Addr, NextHop, Duration)>,
}

impl Resolver {
    /// A resolver for routes out of `ifindex`, with a netlink socket in the calling thread's
    /// network namespace.
    pub fn new(ifindex: u32) -> io::Result<Resolver> {
        Ok(Resolver {
            ifindex,
            netlink: Netlink::open()?,
            cache: HashMap::new(),
            last: None,
        })
    }

    /// The next hop for `dst`, from the cache or the kernel.
    pub fn lookup(&mut self, dst: Ipv4Addr) -> Result<NextHop, NoNextHop> {
        // The last destination, resolved: the coarse clock is enough for HIT_TTL.
        if let Some((ip, hop, at)) = self.last {
            if ip == dst && coarse_now().saturating_sub(at) < HIT_TTL {
                return Ok(hop);
            }
        }
        let now = Instant::now();
        if let Some(&(result, at)) = self.cache.get(&dst) {
            let age = now.duration_since(at);
            if age < if result.is_ok() { HIT_TTL } else { MISS_TTL } {
                self.remember(dst, result, age);
                return result;
            }
        }
        let result = self.resolve(dst);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(dst, (result, now));
        self.remember(dst, result, Duration::ZERO);
        result
    }

    /// Makes `dst` the last destination if it resolved (`age`: how long ago).
    fn remember(&mut self, dst: Ipv4Addr, result: Result<NextHop, NoNextHop>, age: Duration) {
        self.last = result.ok().map(|hop| (dst, hop, coarse_now().saturating_sub(age)));
    }

    /// Forgets `dst` (a send with its next hop failed, or the caller knows it changed).
    pub fn invalidate(&mut self, dst: Ipv4Addr) {
        self.cache.remove(&dst);
        if self.last.is_some_and(|(ip, _, _)| ip == dst) {
            self.last = None;
        }
    }

    fn resolve(&mut self, dst: Ipv4Addr) -> Result<NextHop, NoNextHop> {
        if dst.is_broadcast() {
            return Err(NoNextHop::LocalOrBroadcast);
        }
        let route = self.netlink.route(dst).map_err(|_| NoNextHop::Netlink)?;
        let route = route.ok_or(NoNextHop::NoRoute)?;
        match route.kind {
            RTN_UNICAST | RTN_MULTICAST => {}
            RTN_LOCAL | RTN_BROADCAST => return Err(NoNextHop::LocalOrBroadcast),
            _ => return Err(NoNextHop::NoRoute),
        }
        if route.oif != self.ifindex {
            return Err(NoNextHop::OtherInterface);
        }
        let dst_mac = if dst.is_multicast() {
            multicast_mac(dst)
        } else {
            let neighbour = route.gateway.unwrap_or(dst);
            self.netlink
                .neighbour(self.ifindex, neighbour)
                .map_err(|_| NoNextHop::Netlink)?
                .ok_or(NoNextHop::Unresolved)?
        };
        Ok(NextHop {
            ifindex: route.oif,
            dst_mac,
            src_ip: route.prefsrc,
        })
    }
}

/// CLOCK_MONOTONIC_COARSE (a few ns through the vDSO, read on every send; a full-resolution
/// clock costs several times that). Its granularity (a tick, up to 10 ms) may lengthen
/// [`HIT_TTL`] by a tick; misses, whose TTL is shorter than a tick, use the full clock.
fn coarse_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The Ethernet address of an IPv4 multicast group: 01:00:5e + the group's low 23 bits.
pub fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// A socket to ask the kernel about `ifname` with, and an `ifreq` naming it (the rest zero).
fn interface_request(ifname: &str) -> io::Result<(OwnedFd, libc::ifreq)> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: plain socket(2); checked and owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed is a valid ifreq (integers and arrays).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    Ok((sock, req))
}

/// One SIOCETHTOOL request on `ifname`: `data` is the command's structure, its first word the
/// command (`ETHTOOL_*`); the kernel fills in the rest.
///
/// # Safety
/// `data` is at least as large as the command's structure: the kernel writes that many bytes.
pub(super) unsafe fn ethtool(ifname: &str, data: &mut [u32]) -> io::Result<()> {
    if data.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (sock, mut req) = interface_request(ifname)?;
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `req` names the interface (NUL-terminated: zeroed past the name) and points at
    // `data`, a live buffer at least the size of the command's structure (our contract).
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The name of `ifname`'s driver (ETHTOOL_GDRVINFO: "veth", "virtio_net", "mlx5_core", …).
pub fn interface_driver(ifname: &str) -> Option<String> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], five u32 counts: 196 bytes.
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    let mut info = [0u32; 49];
    info[0] = ETHTOOL_GDRVINFO;
    // SAFETY: `info` is a whole ethtool_drvinfo.
    unsafe { ethtool(ifname, &mut info) }.ok()?;
    let bytes: Vec<u8> = info[1..9].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let name = bytes.split(|&b| b == 0).next()?;
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

/// The MAC address and MTU of interface `ifname` (SIOCGIFHWADDR, SIOCGIFMTU).
pub fn interface_mac_and_mtu(ifname: &str) -> io::Result<([u8; 6], u32)> {
    let (sock, mut req) = interface_request(ifname)?;
    // SAFETY: `req` is a live ifreq with a NUL-terminated name (zeroed past it).
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(io::ErrorKind::Unsupported, format!("{ifname} is not Ethernet")));
    }
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *d = *s as u8;
    }
    // SAFETY: as above; SIOCGIFMTU fills the mtu member.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok((mac, mtu.max(0) as u32))
}

// ---------------------------------------------------------------------------------------------
// The netlink conversation.

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTN_BROADCAST: u8 = 3;
const RTN_MULTICAST: u8 = 5;
/// NUD states whose MAC may be used: reachable, stale, delay, probe, noarp, permanent.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
const NLMSG_HEADER: usize = 16;

struct Route {
    kind: u8,
    oif: u32,
    gateway: Option<Ipv4Addr>,
    prefsrc: Option<Ipv4Addr>,
}

struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); checked and owned at once.
        let raw = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A kernel answer is immediate; the timeout only guards against never getting one.
        let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
        // SAFETY: `tv` is a live timeval and its size is passed with it.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Netlink { fd, seq: 0 })
    }

    /// `ip route get <dst>`: Ok(None) when the kernel has no route.
    fn route(&mut self, dst: Ipv4Addr) -> io::Result<Option<Route>> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags u32.
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        push_attr(&mut body, RTA_DST, &dst.octets());
        let Some(reply) = self.request(RTM_GETROUTE, &body, RTM_NEWROUTE)? else {
            return Ok(None);
        };
        let kind = *reply.get(7).ok_or_else(short)?;
        let mut route = Route { kind, oif: 0, gateway: None, prefsrc: None };
        for (ty, value) in attrs(reply.get(12..).ok_or_else(short)?) {
            match ty {
                RTA_OIF => route.oif = u32_ne(value).unwrap_or(0),
                RTA_GATEWAY => route.gateway = ipv4(value),
                RTA_PREFSRC => route.prefsrc = ipv4(value),
                _ => {}
            }
        }
        Ok(Some(route))
    }

    /// The MAC of `ip` in the ARP cache of `ifindex`, when its state makes it usable.
    fn neighbour(&mut self, ifindex: u32, ip: Ipv4Addr) -> io::Result<Option<[u8; 6]>> {
        // struct ndmsg: family, pad1, pad2 u16, ifindex i32, state u16, flags, type.
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]);
        push_attr(&mut body, NDA_DST, &ip.octets());
        let Some(reply) = self.request(RTM_GETNEIGH, &body, RTM_NEWNEIGH)? else {
            return Ok(None);
        };
        let state = reply
            .get(8..10)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .ok_or_else(short)?;
        if state & NUD_USABLE == 0 {
            return Ok(None);
        }
        let mac = attrs(reply.get(12..).ok_or_else(short)?)
            .find(|(ty, _)| *ty == NDA_LLADDR)
            .and_then(|(_, v)| <[u8; 6]>::try_from(v).ok());
        Ok(mac.filter(|m| *m != [0; 6]))
    }

    /// Sends one request and returns the body of the answer of type `want`; Ok(None) when the
    /// kernel answered with an error (no such route / neighbour).
    fn request(&mut self, ty: u16, body: &[u8], want: u16) -> io::Result<Option<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(NLMSG_HEADER + body.len());
        msg.extend_from_slice(&((NLMSG_HEADER + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: `msg` is a live buffer of the given length; the kernel is the destination
        // (a netlink socket's default peer).
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 16384];
        // Skip answers to earlier, timed-out requests until ours arrives.
        for _ in 0..64 {
            // SAFETY: `buf` is a live, writable buffer of the given length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HEADER {
                let len = u32_ne(&rest[0..4]).unwrap_or(0) as usize;
                let mty = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32_ne(&rest[8..12]).unwrap_or(0);
                if len < NLMSG_HEADER || len > rest.len() {
                    break;
                }
                let payload = &rest[NLMSG_HEADER..len];
                if mseq == seq {
                    return match mty {
                        t if t == want => Ok(Some(payload.to_vec())),
                        NLMSG_ERROR | NLMSG_DONE => Ok(None),
                        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected netlink answer")),
                    };
                }
                rest = rest.get(align4(len)..).unwrap_or(&[]);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "no netlink answer to our request"))
    }
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "short netlink message")
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

/// The (type, value) pairs of a run of route attributes; stops at the first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
        let ty = u16::from_ne_bytes([*b.get(2)?, *b.get(3)?]) & 0x3fff; // without NLA_F_* bits
        let value = b.get(4..len)?;
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, value))
    })
}

fn u32_ne(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_macs_follow_rfc_1112() {
        assert_eq!(multicast_mac(Ipv4Addr::new(224, 0, 0, 251)), [1, 0, 0x5e, 0, 0, 251]);
        assert_eq!(multicast_mac(Ipv4Addr::new(239, 255, 1, 2)), [1, 0, 0x5e, 0x7f, 1, 2]);
    }

    #[test]
    fn attributes_round_trip_and_malformed_ones_stop_the_walk() {
        let mut b = Vec::new();
        push_attr(&mut b, RTA_OIF, &7u32.to_ne_bytes());
        push_attr(&mut b, RTA_GATEWAY, &[10, 0, 0, 1]);
        push_attr(&mut b, 99, &[1, 2, 3]); // padded to 8 bytes
        let got: Vec<(u16, Vec<u8>)> = attrs(&b).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (RTA_GATEWAY, vec![10, 0, 0, 1]));
        assert_eq!(got[2].1, vec![1, 2, 3]);
        assert_eq!(attrs(&[200, 0, 1, 0, 5]).count(), 0, "length past the end");
        assert_eq!(attrs(&[]).count(), 0);
    }

    #[test]
    fn the_kernel_routes_loopback_as_local() {
        // Runs in whatever namespace the test runs in; 127.0.0.1 is local everywhere.
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        let mut r = Resolver::new(lo).unwrap();
        assert_eq!(r.lookup(Ipv4Addr::LOCALHOST), Err(NoNextHop::LocalOrBroadcast));
        assert_eq!(r.lookup(Ipv4Addr::BROADCAST), Err(NoNextHop::LocalOrBroadcast));
        let not_ethernet = interface_mac_and_mtu("lo").unwrap_err();
        assert_eq!(not_ethernet.kind(), io::ErrorKind::Unsupported, "{not_ethernet}");
    }
}
