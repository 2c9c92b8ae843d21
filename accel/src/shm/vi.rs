//! The shm VI: this process's side of the same-host datapath.
//!
//! Receive: a socket bound to a local address gets a ring (shared with other sockets of this
//! process or its own, by VMA_RING_ALLOCATION_LOGIC_RX) and publishes an endpoint in the
//! [registry](super::registry): "datagrams for 127.0.0.1:5000 go to ring R, cookie C".
//!
//! Transmit: a send to a destination with a live endpoint writes straight into that endpoint's
//! ring; anything else is "not served" and goes to the kernel. Lookups are cached per destination
//! (a positive entry is re-validated with one load per send; a negative one expires after
//! [`NEGATIVE_TTL`]), and the receiver's liveness is re-checked every [`LIVENESS_PERIOD`] and
//! whenever its ring is full, so a sender falls back to the kernel soon after a receiver dies.
//!
//! Wakeups: a receiver that is about to sleep in the kernel sets its ring's `waiters`; the sender
//! that then publishes sends one *doorbell* — a 16-byte datagram `ACCELDB1 + cookie` — through its
//! own kernel socket to the receiver's address. It wakes a blocking recv, and equally the app's own
//! poll/epoll on that fd. Receivers recognise and discard doorbells (the cookie is known only to
//! processes that can read the user's private registry).
//!
//! Shared ports: a doorbell is addressed to the receiver's *address*, and the kernel alone decides
//! which socket bound to that address gets it. So a destination is served through a ring only
//! while exactly one socket holds its address: an endpoint with several members (SO_REUSEPORT
//! group) is left to the kernel, and so is a single member whose socket allows sharing
//! (SO_REUSEADDR/SO_REUSEPORT, [`registry::FLAG_SHARED_PORT`]) while the kernel lists other
//! sockets on its address — sockets of programs without accel, which the registry cannot list.
//! Served otherwise, the kernel's reuseport hash would hand doorbells (shown to a plain app as
//! data) to another socket than the one whose ring got the datagrams, which would sleep on them.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::registry::{self, EndpointMap, MemberInfo, Publication, Registry};
use super::ring::{PushError, Ring};
use crate::config::{Config, MemAlloc, RingAllocation};
use crate::socket::{Proto, Socket};
use crate::vi::{Filter, FilterState, RxBinding, RxModel, TxOutcome, TxRequest, Vi, ViKind};

/// A negative lookup ("nobody serves this destination") is trusted this long.
pub const NEGATIVE_TTL: Duration = Duration::from_millis(100);
/// How often a sender re-checks that the receiver it writes to is alive.
pub const LIVENESS_PERIOD: Duration = Duration::from_millis(100);
/// While a receiver's ring stays full, its liveness is re-checked at most this often.
pub const FULL_RECHECK: Duration = Duration::from_millis(10);

pub const DOORBELL_MAGIC: &[u8; 8] = b"ACCELDB1";
pub const DOORBELL_LEN: usize = 16;

/// The doorbell datagram for a receiver with `cookie`.
pub fn doorbell(cookie: u64) -> [u8; DOORBELL_LEN] {
    let mut d = [0u8; DOORBELL_LEN];
    d[..8].copy_from_slice(DOORBELL_MAGIC);
    d[8..].copy_from_slice(&cookie.to_ne_bytes());
    d
}

/// Is `data` the doorbell of the receiver with `cookie`?
pub fn is_doorbell(data: &[u8], cookie: u64) -> bool {
    data.len() == DOORBELL_LEN && data[..8] == DOORBELL_MAGIC[..] && data[8..] == cookie.to_ne_bytes()
}

/// The shm part of a socket's [`RxBinding`]: its ring and its entry in the registry.
#[derive(Debug)]
pub struct ShmFilter {
    pub ring: Arc<Ring>,
    pub ring_name: String,
    /// The ring allocation key (VMA_RING_ALLOCATION_LOGIC_RX): which sockets share the ring.
    pub ring_key: String,
    /// Replaced when an endpoint withdrawn for an exec that failed is published again.
    pub publication: Mutex<Publication>,
}

/// The shm part of a binding this VI installed.
pub fn shm_filter(b: &RxBinding) -> Option<&ShmFilter> {
    match &b.state {
        FilterState::Shm(f) => Some(f),
        _ => None,
    }
}

/// Where a destination's datagrams go.
struct Target {
    endpoint: Arc<EndpointMap>,
    member: usize,
    cookie: u64,
    pid: u32,
    fd: i32,
    inode: u64,
    ring: Arc<Ring>,
    /// When liveness was last confirmed ([`coarse_now`]).
    checked: Duration,
    /// The addresses whose kernel sockets must be this member alone while it allows its port to
    /// be shared: the endpoint's bound address and the destination (a wildcard endpoint loses a
    /// destination to a socket bound to that exact address).
    bound: SocketAddrV4,
    dest: SocketAddrV4,
}

enum CacheEntry {
    Served(Target),
    NotServed(Duration),
}

/// The last destination a thread sent to, and what serves it: the send fast path, without the
/// shared cache's mutex or hash lookup. Valid while `gen` equals [`ShmVi::cache_gen`] (bumped on
/// every change to the shared cache, and after fork) and until `until` (the liveness period of
/// the shared entry it was copied from; the slow path re-checks and refreshes it).
struct LastTarget {
    dest: SocketAddrV4,
    gen: u64,
    until: Duration,
    endpoint: Arc<EndpointMap>,
    member: usize,
    cookie: u64,
    ring: Arc<Ring>,
}

thread_local! {
    static LAST_TARGET: core::cell::RefCell<Option<LastTarget>> = const { core::cell::RefCell::new(None) };
}

/// CLOCK_MONOTONIC_COARSE: a few ns through the vDSO (a full-resolution clock costs several
/// times that on every send); its ~4 ms granularity is ample for 100 ms periods.
fn coarse_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The destination cache's map: FxHash (rustc-hash), because SipHash costs more than the rest of
/// a send; the keys are this app's own destinations, not hash-flooding material.
type AddrMap<V> = rustc_hash::FxHashMap<SocketAddrV4, V>;

/// The process's packet buffers (VMA_RX_BUFS): each ring slot is one, so a new ring takes its
/// depth's worth. When fewer than a full VMA_RX_WRE are left a ring gets what is left (rounded
/// down to a power of two); below [`MIN_RING_SLOTS`] the socket stays on the kernel path.
#[derive(Debug)]
struct BufferPool {
    total: u64,
    left: AtomicU64,
}

/// The smallest ring worth creating.
pub const MIN_RING_SLOTS: u32 = 64;

impl BufferPool {
    fn reserve(&self, want: u32) -> io::Result<u32> {
        let mut left = self.left.load(Ordering::Relaxed);
        loop {
            let fit = u64::from(want).min(left);
            let slots = if fit == 0 { 0 } else { 1u64 << (63 - fit.leading_zeros()) } as u32;
            if slots < MIN_RING_SLOTS.min(want) {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("VMA_RX_BUFS={}: only {left} packet buffers left for a new ring", self.total),
                ));
            }
            match self.left.compare_exchange(left, left - u64::from(slots), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(slots),
                Err(now) => left = now,
            }
        }
    }

    fn give_back(&self, slots: u32) {
        self.left.fetch_add(u64::from(slots), Ordering::Relaxed);
    }
}

/// The result of [`ShmVi::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// In the ring; `wake` = Some(cookie) if that receiver sleeps and must be woken.
    Sent { wake: Option<u64> },
    /// The ring was full: dropped, as UDP would (the sender never blocks).
    Full,
    /// Nobody on this host serves the destination through shm.
    NotServed,
}

/// This process's shm VI.
pub struct ShmVi {
    registry: Registry,
    slots: u32,
    slot_size: u32,
    logic: RingAllocation,
    buffers: BufferPool,
    /// New rings go to hugetlbfs (VMA_MEM_ALLOC_TYPE=2 and it is usable).
    huge: AtomicBool,
    /// Rings this process created: allocation key → (ring, file name).
    rings: Mutex<HashMap<String, (Arc<Ring>, String)>>,
    cache: Mutex<AddrMap<CacheEntry>>,
    /// Bumped on every change to `cache`: invalidates the threads' [`LastTarget`]s.
    cache_gen: AtomicU64,
    remote_rings: Mutex<HashMap<String, Arc<Ring>>>,
    /// The host's addresses, and when they were read (coarse clock; None = never).
    local_addrs: Mutex<(Vec<Ipv4Addr>, Option<Duration>)>,
    ring_seq: AtomicU32,
    cookie_seq: AtomicU64,
    /// cookie → socket, to hand datagrams found on a shared ring to the socket they are for.
    sockets: Mutex<HashMap<u64, Weak<Socket>>>,
}

static VI: OnceLock<Option<ShmVi>> = OnceLock::new();

/// The process's shm VI, or None if it could not be set up (the reason is logged once).
pub fn get(config: &Config) -> Option<&'static ShmVi> {
    VI.get_or_init(|| match ShmVi::new(config) {
        Ok(vi) => Some(vi),
        Err(e) => {
            crate::log::warn(format_args!(
                "shm datapath unavailable ({e}); same-host UDP stays in the kernel"
            ));
            None
        }
    })
    .as_ref()
}

/// The VI if it was already set up (for clean-up paths that must not create it).
pub fn existing() -> Option<&'static ShmVi> {
    VI.get().and_then(|v| v.as_ref())
}

/// Slot size for an MTU: the payload of a full-size datagram plus the slot header, rounded up to
/// a power of two (1500 → 2048: the 2 KiB packet buffers of the ef_vi model).
pub fn slot_size_for(mtu: u32) -> u32 {
    (mtu.saturating_sub(28) + 32).next_power_of_two().max(256)
}

impl ShmVi {
    pub fn new(config: &Config) -> io::Result<ShmVi> {
        let registry = Registry::open(&registry::default_dir())?;
        registry.reap();
        registry.remove_rings_of_previous_image();
        let mut seed = [0u8; 8];
        // SAFETY: getrandom into a buffer we own.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr() as *mut libc::c_void, 8, 0) };
        let seed = if n == 8 { u64::from_ne_bytes(seed) } else { std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15 };
        Ok(ShmVi {
            registry,
            slots: config.rx_wre.max(8),
            slot_size: slot_size_for(config.mtu),
            logic: config.ring_allocation_rx,
            buffers: BufferPool { total: u64::from(config.rx_bufs), left: AtomicU64::new(u64::from(config.rx_bufs)) },
            huge: AtomicBool::new(config.mem_alloc == MemAlloc::HugePages && hugepages_usable()),
            rings: Mutex::new(HashMap::new()),
            cache: Mutex::new(AddrMap::default()),
            cache_gen: AtomicU64::new(0),
            remote_rings: Mutex::new(HashMap::new()),
            local_addrs: Mutex::new((Vec::new(), None)),
            ring_seq: AtomicU32::new(0),
            cookie_seq: AtomicU64::new(seed | 1),
            sockets: Mutex::new(HashMap::new()),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The largest payload a ring slot carries; larger datagrams take the kernel path.
    pub fn max_payload(&self) -> usize {
        (self.slot_size - 32) as usize
    }

    /// Which ring a socket bound to `local` uses, by the ring allocation logic.
    pub fn ring_key(&self, local: SocketAddrV4) -> String {
        crate::vi::ring_key(self.logic, local, &self.ring_seq)
    }

    fn ring_for(&self, key: &str) -> io::Result<(Arc<Ring>, String)> {
        let mut rings = self.rings.lock();
        if let Some((r, name)) = rings.get(key) {
            return Ok((r.clone(), name.clone()));
        }
        let slots = self.buffers.reserve(self.slots)?;
        let mut made = None;
        if self.huge.load(Ordering::Relaxed) {
            let name = format!("{}{}", registry::HUGE_PREFIX, ring_file_name(key));
            match Ring::create(&self.registry.path_of(&name), slots, self.slot_size) {
                Ok(r) => made = Some((r, name)),
                Err(e) => {
                    // Out of huge pages (ENOMEM) or the like: normal pages from now on.
                    self.huge.store(false, Ordering::Relaxed);
                    crate::log::warn(format_args!(
                        "VMA_MEM_ALLOC_TYPE=2: cannot make a ring in huge pages ({e}); using normal pages"
                    ));
                }
            }
        }
        let (ring, name) = match made {
            Some((r, name)) => (Arc::new(r), name),
            None => {
                let name = ring_file_name(key);
                match Ring::create(&self.registry.path_of(&name), slots, self.slot_size) {
                    Ok(r) => (Arc::new(r), name),
                    Err(e) => {
                        self.buffers.give_back(slots);
                        return Err(e);
                    }
                }
            }
        };
        if slots < self.slots {
            crate::log::info(format_args!(
                "shm ring {name}: {slots} slots instead of VMA_RX_WRE={} (VMA_RX_BUFS={}: the rest are in use)",
                self.slots, self.buffers.total
            ));
        }
        rings.insert(key.to_string(), (ring.clone(), name.clone()));
        Ok((ring, name))
    }

    /// Packet buffers not yet given to a ring (for statistics and tests).
    pub fn buffers_left(&self) -> u64 {
        self.buffers.left.load(Ordering::Relaxed)
    }

    /// Publishes a bound socket: after this, local senders write to its ring.
    pub fn bind(&self, fd: i32, local: SocketAddrV4, sock: &Arc<Socket>) -> io::Result<RxBinding> {
        let key = self.ring_key(local);
        let (ring, ring_name) = self.ring_for(&key)?;
        let cookie = self.cookie_seq.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) | 1;
        let inode = registry::socket_inode(fd).unwrap_or(0);
        let pid = std::process::id();
        let info = MemberInfo { pid, fd, inode, cookie, ring: ring_name.clone(), flags: member_flags(fd) };
        let publication = self.registry.publish(local, &info)?;
        self.sockets.lock().insert(cookie, Arc::downgrade(sock));
        Ok(RxBinding {
            kind: ViKind::Shm,
            queue: ring.clone(),
            cookie,
            local,
            pid,
            fd,
            state: FilterState::Shm(ShmFilter { ring, ring_name, ring_key: key, publication: Mutex::new(publication) }),
        })
    }

    /// Withdraws a socket's endpoint (close, or fallback to the kernel). A forked child that
    /// shares the socket does not withdraw its parent's endpoint.
    pub fn unbind(&self, b: &RxBinding) {
        self.sockets.lock().remove(&b.cookie);
        if b.pid != std::process::id() {
            return;
        }
        let Some(f) = shm_filter(b) else { return };
        self.registry.unpublish(&f.publication.lock());
        // A per-socket ring goes with its socket.
        if f.ring_key.starts_with("sock-") {
            if let Some((ring, name)) = self.rings.lock().remove(&f.ring_key) {
                let _ = std::fs::remove_file(self.registry.path_of(&name));
                self.buffers.give_back(ring.capacity());
            }
            self.registry.remove_dir_if_empty();
        }
    }

    /// Just before exec: withdraws every endpoint this process published, so senders use the
    /// kernel socket (which survives exec) instead of a ring the new image will not read.
    /// Returns what was withdrawn, for [`ShmVi::republish`] if exec fails.
    pub fn withdraw_all(&self) -> Vec<Arc<Socket>> {
        let me = std::process::id();
        let socks: Vec<Arc<Socket>> = self.sockets.lock().values().filter_map(Weak::upgrade).collect();
        let mut out = Vec::new();
        for s in socks {
            if let Some(b) = s.rx.get() {
                if let Some(f) = shm_filter(b).filter(|_| b.pid == me && !s.rx_off.load(Ordering::Relaxed)) {
                    self.registry.unpublish(&f.publication.lock());
                    out.push(s);
                }
            }
        }
        out
    }

    /// exec failed: publishes the withdrawn endpoints again, with their rings and cookies.
    pub fn republish(&self, socks: &[Arc<Socket>]) {
        for s in socks {
            let Some(b) = s.rx.get() else { continue };
            let Some(f) = shm_filter(b) else { continue };
            let inode = registry::socket_inode(b.fd).unwrap_or(0);
            let info = MemberInfo {
                pid: b.pid,
                fd: b.fd,
                inode,
                cookie: b.cookie,
                ring: f.ring_name.clone(),
                flags: member_flags(b.fd),
            };
            match self.registry.publish(b.local, &info) {
                Ok(p) => *f.publication.lock() = p,
                Err(_) => s.rx_off.store(true, Ordering::Relaxed), // kernel path from now on
            }
        }
    }

    /// The app set SO_REUSEADDR/SO_REUSEPORT on a published socket after its bind: other sockets
    /// may join its address from now on, so senders must check it is alone before using its ring.
    pub fn port_became_shared(&self, b: &RxBinding) {
        if b.pid != std::process::id() || member_flags(b.fd) & registry::FLAG_SHARED_PORT == 0 {
            return;
        }
        let Some(f) = shm_filter(b) else { return };
        let p = f.publication.lock();
        if let Ok(ep) = EndpointMap::open(&p.path) {
            ep.add_flags(p.index, p.cookie, registry::FLAG_SHARED_PORT);
        }
    }

    /// The socket a cookie belongs to, if it is still open in this process.
    pub fn socket_of(&self, cookie: u64) -> Option<Arc<Socket>> {
        self.sockets.lock().get(&cookie)?.upgrade()
    }

    /// Removes this process's rings and endpoints (exit).
    pub fn shutdown(&self) {
        let cookies: Vec<Arc<Socket>> = self.sockets.lock().values().filter_map(Weak::upgrade).collect();
        for s in cookies {
            if let Some(b) = s.rx.get() {
                if let Some(f) = shm_filter(b).filter(|_| b.pid == std::process::id()) {
                    self.registry.unpublish(&f.publication.lock());
                }
            }
        }
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() } as u32;
        let names: Vec<String> = self.rings.lock().values().map(|(_, n)| n.clone()).collect();
        for name in names {
            // A forked child shares its parent's rings but does not own their files.
            if registry::ring_owner(&name) == Some(me) {
                let _ = std::fs::remove_file(self.registry.path_of(&name));
            }
        }
        self.registry.remove_dir_if_empty();
    }

    /// Is `ip` an address of this host (so a wildcard bind serves it)?
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        if ip.is_loopback() {
            return true;
        }
        let mut g = self.local_addrs.lock();
        // Asked on every send (also of datagrams for the AF_XDP datapath): the coarse clock.
        let now = coarse_now();
        if g.1.is_none_or(|at| now.saturating_sub(at) > Duration::from_secs(1)) {
            g.0 = host_addresses();
            g.1 = Some(now);
        }
        g.0.contains(&ip)
    }

    /// Puts `payload` for `dest` in the ring of the live endpoint that serves it. `src` is the
    /// source address the receiver will see.
    pub fn push(&self, src: SocketAddrV4, dest: SocketAddrV4, payload: &[u8]) -> Pushed {
        if payload.len() > self.max_payload() {
            return Pushed::NotServed;
        }
        let now = coarse_now();
        // The thread's last destination, if still valid: no lock, no lookup. (try_: not during
        // thread exit, and not re-entered by a signal handler mid-update.)
        let fast = LAST_TARGET
            .try_with(|l| {
                let l = l.try_borrow().ok()?;
                let t = l.as_ref()?;
                (t.dest == dest
                    && t.gen == self.cache_gen.load(Ordering::Acquire)
                    && now < t.until
                    && t.endpoint.still(t.member, t.cookie))
                .then(|| (t.ring.push(t.cookie, src, payload), t.cookie))
            })
            .ok()
            .flatten();
        match fast {
            Some((Ok(wake), cookie)) => return Pushed::Sent { wake: wake.then_some(cookie) },
            Some((Err(PushError::TooBig), _)) => return Pushed::NotServed,
            Some((Err(PushError::Full), _)) => return self.on_full(&mut self.cache.lock(), dest, now),
            None => {}
        }
        let mut cache = self.cache.lock();
        // The common case, with one lookup: a cached target, still published, checked recently.
        if let Some(CacheEntry::Served(t)) = cache.get(&dest) {
            if t.endpoint.still(t.member, t.cookie) && now.saturating_sub(t.checked) < LIVENESS_PERIOD {
                self.remember_last(t);
                return match t.ring.push(t.cookie, src, payload) {
                    Ok(wake) => Pushed::Sent { wake: wake.then_some(t.cookie) },
                    Err(PushError::TooBig) => Pushed::NotServed,
                    Err(PushError::Full) => self.on_full(&mut cache, dest, now),
                };
            }
        }
        let fresh = match cache.get(&dest) {
            Some(CacheEntry::Served(t)) => {
                t.endpoint.still(t.member, t.cookie)
                    && (now.saturating_sub(t.checked) < LIVENESS_PERIOD || self.recheck(t))
            }
            Some(CacheEntry::NotServed(at)) => now.saturating_sub(*at) < NEGATIVE_TTL,
            None => false,
        };
        if !fresh {
            let entry = match self.resolve(dest) {
                Some(t) => CacheEntry::Served(t),
                None => CacheEntry::NotServed(now),
            };
            cache.insert(dest, entry);
            self.cache_gen.fetch_add(1, Ordering::Release);
        }
        let Some(CacheEntry::Served(t)) = cache.get_mut(&dest) else { return Pushed::NotServed };
        if now.saturating_sub(t.checked) >= LIVENESS_PERIOD {
            t.checked = now;
        }
        self.remember_last(t);
        match t.ring.push(t.cookie, src, payload) {
            Ok(wake) => Pushed::Sent { wake: wake.then_some(t.cookie) },
            Err(PushError::TooBig) => Pushed::NotServed,
            Err(PushError::Full) => self.on_full(&mut cache, dest, now),
        }
    }

    /// The ring for `dest` was full. That may mean a dead reader: check now rather than at the
    /// next period, but at most every FULL_RECHECK (the check costs system calls; a sender
    /// outrunning a live reader must not slow down further on every drop).
    fn on_full(&self, cache: &mut AddrMap<CacheEntry>, dest: SocketAddrV4, now: Duration) -> Pushed {
        let Some(CacheEntry::Served(t)) = cache.get_mut(&dest) else { return Pushed::Full };
        if now.saturating_sub(t.checked) < FULL_RECHECK {
            return Pushed::Full;
        }
        t.checked = now;
        if !registry::member_alive(t.pid, t.fd, t.inode) {
            t.endpoint.release(t.member, t.cookie);
            self.registry.reap();
            cache.remove(&dest);
            self.cache_gen.fetch_add(1, Ordering::Release);
            return Pushed::NotServed;
        }
        Pushed::Full
    }

    /// Liveness re-check of a cached target; false (and the member reclaimed) if it is dead.
    /// Also false while a member that allows its port to be shared is not alone on it.
    fn recheck(&self, t: &Target) -> bool {
        if !registry::member_alive(t.pid, t.fd, t.inode) {
            t.endpoint.release(t.member, t.cookie);
            self.registry.reap();
            return false;
        }
        match t.endpoint.flags(t.member, t.cookie) {
            Some(f) => f & registry::FLAG_SHARED_PORT == 0 || alone_in_kernel(t.bound, t.dest),
            None => false,
        }
    }

    fn resolve(&self, dest: SocketAddrV4) -> Option<Target> {
        let (endpoint, bound) = self.registry.lookup_bound(dest, self.is_local(*dest.ip()))?;
        let endpoint = Arc::new(endpoint);
        // Several members (SO_REUSEPORT, or a socket shared by processes that exec'd): the
        // kernel's reuseport hash picks the receiver of each datagram, and of each doorbell too,
        // so the ring chosen here and the socket woken could differ. Leave such groups to the
        // kernel, which distributes them correctly. (See the module documentation.)
        let mut members = endpoint.members();
        if members.len() > 1 && endpoint.reap_dead() > 0 {
            members = endpoint.members(); // a dead process's member, left by a kill
        }
        if members.len() != 1 {
            return None;
        }
        let m = members.into_iter().next()?;
        if !registry::member_alive(m.info.pid, m.info.fd, m.info.inode) {
            endpoint.release(m.index, m.info.cookie);
            self.registry.reap();
            return None;
        }
        // One member that allows sharing: are programs without accel bound there too?
        if m.info.flags & registry::FLAG_SHARED_PORT != 0 && !alone_in_kernel(bound, dest) {
            return None;
        }
        let ring = self.open_remote_ring(&m.info.ring)?;
        Some(Target {
            endpoint,
            member: m.index,
            cookie: m.info.cookie,
            pid: m.info.pid,
            fd: m.info.fd,
            inode: m.info.inode,
            ring,
            checked: coarse_now(),
            bound,
            dest,
        })
    }

    fn open_remote_ring(&self, name: &str) -> Option<Arc<Ring>> {
        if let Some(r) = self.rings.lock().values().find(|(_, n)| n == name).map(|(r, _)| r.clone()) {
            return Some(r); // our own ring (a socket sending to another socket of this process)
        }
        let mut remote = self.remote_rings.lock();
        if let Some(r) = remote.get(name) {
            return Some(r.clone());
        }
        let ring = Arc::new(Ring::open(&self.registry.path_of(name)).ok()?);
        remote.insert(name.to_string(), ring.clone());
        Some(ring)
    }

    /// Forgets cached destinations (after fork, or when told the registry changed).
    pub fn forget_cache(&self) {
        self.cache.lock().clear();
        self.cache_gen.fetch_add(1, Ordering::Release);
    }

    /// Makes `t` (just validated, under the cache lock) this thread's [`LastTarget`].
    fn remember_last(&self, t: &Target) {
        let gen = self.cache_gen.load(Ordering::Acquire);
        let until = t.checked + LIVENESS_PERIOD;
        let _ = LAST_TARGET.try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else { return };
            if let Some(x) = l.as_mut() {
                if x.dest == t.dest && x.gen == gen && x.cookie == t.cookie && Arc::ptr_eq(&x.ring, &t.ring) {
                    x.until = until; // the common refresh: no Arc clones
                    return;
                }
            }
            *l = Some(LastTarget {
                dest: t.dest,
                gen,
                until,
                endpoint: t.endpoint.clone(),
                member: t.member,
                cookie: t.cookie,
                ring: t.ring.clone(),
            });
        });
    }
}

impl fmt::Debug for ShmVi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmVi").field("slots", &self.slots).field("slot_size", &self.slot_size).finish()
    }
}

impl Vi for ShmVi {
    fn kind(&self) -> ViKind {
        ViKind::Shm
    }

    fn rx_model(&self) -> RxModel {
        RxModel::Borrowed
    }

    fn max_payload(&self) -> usize {
        ShmVi::max_payload(self)
    }

    fn reaches(&self, ip: Ipv4Addr) -> bool {
        self.is_local(ip)
    }

    fn add_filter(&self, fd: i32, filter: &Filter, owner: &Arc<Socket>) -> io::Result<RxBinding> {
        if filter.proto != Proto::Udp {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "the shm VI carries UDP only"));
        }
        // A connected socket's peer filter is applied by the receiver (the ring serves the
        // local address; the registry has no 5-tuple entries).
        self.bind(fd, filter.local, owner)
    }

    fn remove_filter(&self, binding: &RxBinding) {
        self.unbind(binding)
    }

    fn transmit(&self, tx: &TxRequest<'_>) -> TxOutcome {
        match self.push(tx.src, tx.dest, tx.payload) {
            Pushed::NotServed => TxOutcome::NotServed,
            Pushed::Full => TxOutcome::DroppedFull,
            Pushed::Sent { wake: None } => TxOutcome::Sent { woke: false },
            Pushed::Sent { wake: Some(cookie) } => TxOutcome::Sent { woke: ring_doorbell(tx.fd, tx.dest, cookie) },
        }
    }
}

/// Wakes a sleeping receiver: a doorbell datagram from the sender's own kernel socket (so a
/// receiver connected to the sender accepts it) to the receiver's address. False if it could
/// not be sent (the receiver's spin budget or timeout covers that rare case).
fn ring_doorbell(fd: i32, dest: SocketAddrV4, cookie: u64) -> bool {
    let d = doorbell(cookie);
    let sin = crate::udp::sockaddr_in_of(dest);
    // SAFETY: our own buffer and address.
    let r = unsafe {
        crate::real::sendto(fd, d.as_ptr() as *const libc::c_void, d.len(), libc::MSG_DONTWAIT,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
    };
    if r < 0 {
        static ONCE: crate::log::Once = crate::log::Once::new();
        if ONCE.first() {
            crate::log::debug(format_args!("doorbell to {dest} failed: {}", io::Error::last_os_error()));
        }
        return false;
    }
    true
}

/// The registry flags of a socket about to be published: [`registry::FLAG_SHARED_PORT`] if it has
/// SO_REUSEADDR or SO_REUSEPORT (another socket may then bind its address, or already has).
fn member_flags(fd: i32) -> u64 {
    let on = |name| {
        let mut v: libc::c_int = 0;
        let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len describe an int we own.
        let r = unsafe {
            crate::real::getsockopt(fd, libc::SOL_SOCKET, name, &mut v as *mut libc::c_int as *mut libc::c_void, &mut len)
        };
        r == 0 && v != 0
    };
    if on(libc::SO_REUSEPORT) || on(libc::SO_REUSEADDR) {
        registry::FLAG_SHARED_PORT
    } else {
        0
    }
}

/// Is the one registered socket on `bound` the only kernel socket that could receive datagrams
/// for `dest`? (Unreadable /proc: assume not — the kernel path is always correct.)
fn alone_in_kernel(bound: SocketAddrV4, dest: SocketAddrV4) -> bool {
    let ips = [*bound.ip(), *dest.ip()];
    let ips = if ips[0] == ips[1] { &ips[..1] } else { &ips[..] };
    registry::kernel_sockets_on(bound.port(), ips) == Some(1)
}

/// `ring-<pid>-<nonce>-<key>`: the pid lets anyone reap rings of dead processes; the nonce makes
/// every ring file name new, so a sender's cached mapping of an old ring (the previous image's,
/// before an exec) can never be mistaken for the current one.
fn ring_file_name(key: &str) -> String {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let mut n = [0u8; 4];
    // SAFETY: getrandom into a buffer we own.
    unsafe { libc::getrandom(n.as_mut_ptr() as *mut libc::c_void, 4, 0) };
    let n = u32::from_ne_bytes(n) ^ NONCE.fetch_add(1, Ordering::Relaxed) as u32;
    format!("ring-{}-{n:08x}-{key}", std::process::id())
}

/// VMA_MEM_ALLOC_TYPE=2: can rings live in huge pages here? If not, says why once (the process
/// goes on with normal pages) and what fixes it.
fn hugepages_usable() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("HugePages_Free:").and_then(|v| v.trim().parse::<u64>().ok()))
    });
    let why = match (registry::ensure_huge_dir(), free) {
        (Err(e), _) => format!("no usable hugetlbfs mount ({e}; e.g. `mount -t hugetlbfs none /dev/hugepages`)"),
        (Ok(_), Some(0) | None) => "no free huge pages (HugePages_Free is 0; e.g. `sysctl vm.nr_hugepages=64`)".to_string(),
        (Ok(dir), Some(n)) => {
            crate::log::debug(format_args!("shm rings in huge pages: {} ({n} free)", dir.display()));
            return true;
        }
    };
    crate::log::warn(format_args!("VMA_MEM_ALLOC_TYPE=2: {why}; shm rings use normal pages"));
    false
}

/// IPv4 addresses of this host's interfaces.
pub fn host_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = core::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() && (*a).sa_family as i32 == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doorbells_match_only_their_cookie() {
        let d = doorbell(0xdead_beef);
        assert!(is_doorbell(&d, 0xdead_beef));
        assert!(!is_doorbell(&d, 0xdead_bee0));
        assert!(!is_doorbell(&d[..15], 0xdead_beef));
        assert!(!is_doorbell(b"ACCELDB1........", 0xdead_beef));
    }

    #[test]
    fn buffer_pool_gives_full_rings_then_what_is_left_then_refuses() {
        let pool = BufferPool { total: 1024 + 256 + 100, left: AtomicU64::new(1024 + 256 + 100) };
        assert_eq!(pool.reserve(1024).unwrap(), 1024);
        assert_eq!(pool.reserve(1024).unwrap(), 256, "what is left, as a power of two");
        assert_eq!(pool.reserve(1024).unwrap(), 64, "100 left: 64");
        let err = pool.reserve(1024).unwrap_err();
        assert!(err.to_string().contains("VMA_RX_BUFS=1380"), "{err}");
        pool.give_back(256);
        assert_eq!(pool.reserve(1024).unwrap(), 256);
        // A ring smaller than the minimum is allowed when that is all it asked for.
        pool.give_back(32);
        assert_eq!(pool.reserve(32).unwrap(), 32);
    }

    #[test]
    fn slot_sizes() {
        assert_eq!(slot_size_for(1500), 2048);
        assert_eq!(slot_size_for(576), 1024);
        assert_eq!(slot_size_for(9000), 16384);
    }

    #[test]
    fn loopback_is_local() {
        let addrs = host_addresses();
        assert!(addrs.contains(&Ipv4Addr::LOCALHOST));
    }
}
