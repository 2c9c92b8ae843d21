//! Loading, sharing and unloading the XDP filter program (`accel/bpf/filter.c`).
//!
//! An interface can run one XDP program, and every accelerated process on it needs the same
//! classifier, so the program is shared: the first process to need it loads and attaches it,
//! later ones join, the last one to leave detaches it. The loader is [`aya`] (pure Rust; no
//! libbpf at run time). Everything shared lives in one directory on the BPF filesystem:
//!
//! ```text
//! /sys/fs/bpf/accel/                      the lock (flock on the directory itself)
//! /sys/fs/bpf/accel/<netns>-<ifindex>-<ifname>-v2/
//!     link      the bpf_link attaching the program: the attachment lives as long as this pin
//!     filters   (proto, local ip, local port) -> (ring, owner pid)
//!     conns     (proto, local ip:port, remote ip:port) -> (ring, owner pid); with a group
//!               as local ip and remote port 0: a source-specific multicast membership
//!     xsks      XSKMAP: ring * 256 + queue -> AF_XDP socket
//!     queues    queue -> the pid whose XSK is bound there (0: none)
//!     users     (pid << 32 | first queue) -> the pid's start time
//!     stats     per-CPU counters of the program's verdicts
//! ```
//!
//! `<netns>` is the inode of the caller's network namespace: interface names and indexes are
//! per namespace, the BPF filesystem is not. `-v2` is the layout of the maps ([`LAYOUT`]): a
//! build with another layout neither joins nor removes a live directory of this one (it finds
//! the interface's XDP slot taken and keeps its sockets on the kernel path).
//!
//! # Life cycle
//!
//! All changes to the set of users, to the attachment and to the filter maps happen under an
//! exclusive `flock` of `/sys/fs/bpf/accel`, which the kernel releases when its holder dies.
//!
//! - **acquire**: reclaim abandoned directories (below), then join the interface's directory or
//!   create it — load, attach (native mode, or generic when the driver refuses; see
//!   [`AttachMode`]), pin the link and the maps — and add ourselves to `users`.
//! - **release** (drop): remove our filters and our `users` entry; if no live user remains,
//!   unpin the link (which detaches the program) and remove the directory.
//! - **reclaim**: a user killed with SIGKILL never releases. Liveness is checked, not assumed:
//!   a user is live while its pid exists with the start time recorded for it (so a recycled
//!   pid does not count). Every acquire first looks at every directory: one whose users are
//!   all dead is detached and removed (which also cleans up after deleted interfaces and
//!   namespaces); in the directory it joins, entries of dead users are deleted.
//!
//! The XSKMAP needs no cleanup: the kernel removes a socket from it when the socket is closed,
//! and a filter whose slot is empty makes the program pass the frame to the kernel.
//!
//! # Privileges
//!
//! Loading and attaching need CAP_BPF + CAP_NET_ADMIN (root in practice), and the BPF
//! filesystem must be mounted; it is mounted on `/sys/fs/bpf` when missing, which also needs
//! privileges. Every failure is an `io::Error` the caller turns into "use the kernel".

use std::error::Error as StdError;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, XskMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpFlags};
use aya::{EbpfLoader, Pod};

/// Where the BPF filesystem is mounted (and mounted by us when it is not).
pub const BPFFS: &str = "/sys/fs/bpf";
/// Our directory on it.
pub const PIN_ROOT: &str = "/sys/fs/bpf/accel";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const MAPS: [&str; 6] = ["filters", "conns", "xsks", "queues", "users", "stats"];
const PROGRAM: &str = "accel_filter";
/// The layout of the pinned maps, in the directory's name (2: targets name a ring, `xsks` is
/// indexed by ring and queue).
pub const LAYOUT: &str = "v2";
/// Rings per receive queue the program serves (`MAX_RINGS` in filter.c).
pub const MAX_RINGS: u32 = 32;
/// Receive queues the program serves (`MAX_QUEUES` in filter.c).
pub const MAX_QUEUES: u32 = 256;

/// The pin directory of `ifname` (index `ifindex`) in the namespace with inode `netns`.
fn pin_dir(netns: u64, ifindex: u32, ifname: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(format!("{netns}-{ifindex}-{ifname}-{LAYOUT}"))
}

/// The compiled filter, 8-byte aligned (the ELF parser reads it in place).
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
static FILTER_OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/filter.o")));

/// How the program is attached to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native where the driver supports it, generic otherwise.
    Auto,
    /// Native (driver) mode only: the program runs before any skb is built. Fails on drivers
    /// without XDP support.
    Native,
    /// Generic (SKB) mode: works on every interface, runs after the skb is built (slower).
    Generic,
}

impl AttachMode {
    /// `auto`, `native` (or `drv`), `generic` (or `skb`), case-insensitive.
    pub fn from_name(name: &str) -> Option<AttachMode> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Some(AttachMode::Auto),
            "native" | "drv" | "driver" => Some(AttachMode::Native),
            "generic" | "skb" => Some(AttachMode::Generic),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// Key of the `filters` map: a local endpoint (layout of `struct filter_key` in filter.c).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilterKey {
    proto: u8,
    pad: u8,
    /// Network byte order.
    port: [u8; 2],
    /// Network byte order; 0.0.0.0 = any local unicast address.
    ip: [u8; 4],
}

impl FilterKey {
    pub fn new(proto: u8, local: std::net::SocketAddrV4) -> FilterKey {
        FilterKey { proto, pad: 0, port: local.port().to_be_bytes(), ip: local.ip().octets() }
    }
}

/// Key of the `conns` map: a connected socket's 5-tuple (layout of `struct conn_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    proto: u8,
    pad: u8,
    local_port: [u8; 2],
    local_ip: [u8; 4],
    remote_ip: [u8; 4],
    remote_port: [u8; 2],
    pad2: u16,
}

impl ConnKey {
    pub fn new(proto: u8, local: std::net::SocketAddrV4, remote: std::net::SocketAddrV4) -> ConnKey {
        ConnKey {
            proto,
            pad: 0,
            local_port: local.port().to_be_bytes(),
            local_ip: local.ip().octets(),
            remote_ip: remote.ip().octets(),
            remote_port: remote.port().to_be_bytes(),
            pad2: 0,
        }
    }
}

/// Value of both maps (`struct target`): the frame goes to the owner's XSK of ring `ring` on
/// the queue it arrived on (the `queues` map names the pid that has each queue).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Which of the owner's rings (XSKs on one queue sharing its buffers) gets the frame.
    pub ring: u32,
    /// The pid that installed the entry.
    pub owner: u32,
}

// SAFETY: plain `repr(C)` structs of integers and byte arrays with no padding bytes (the
// explicit `pad` fields fill every hole), so every bit pattern is valid and none is uninit.
unsafe impl Pod for FilterKey {}
// SAFETY: as above.
unsafe impl Pod for ConnKey {}
// SAFETY: as above.
unsafe impl Pod for Target {}

/// The program's verdict counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub redirected: u64,
    pub no_match: u64,
    pub not_ours: u64,
    pub wrong_queue: u64,
}

/// This process's membership of one interface's shared program. Dropping it releases the
/// membership (and detaches the program when it was the last).
pub struct Program {
    dir: PathBuf,
    filters: BpfHashMap<MapData, FilterKey, Target>,
    conns: BpfHashMap<MapData, ConnKey, Target>,
    xsks: XskMap<MapData>,
    queues: Array<MapData, u32>,
    users: BpfHashMap<MapData, u64, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// Our pid (the `owner` of our entries) and our `users` key.
    pid: u32,
    user: u64,
    /// The queues we named ourselves the holder of in `queues`.
    held: Vec<u32>,
    /// The entries this membership added (and has not removed): what its drop removes, if
    /// still ours.
    added_filters: std::collections::HashSet<FilterKey>,
    added_conns: std::collections::HashSet<ConnKey>,
    attached: Option<AttachMode>,
}

impl Program {
    /// Joins (or loads and attaches) the program of `ifname` in the calling thread's network
    /// namespace, as a user whose first queue is `queue` (its XSKs are registered one by one,
    /// [`Program::register_socket`]).
    pub fn acquire(ifname: &str, queue: u32, mode: AttachMode) -> io::Result<Program> {
        let ifindex = if_index(ifname)?;
        let lock = PinLock::take()?;
        reclaim_abandoned(&lock);
        let netns = fs::metadata("/proc/thread-self/ns/net")?.ino();
        let dir = pin_dir(netns, ifindex, ifname);
        let mut attached = None;
        if !dir.join("link").exists() {
            // A directory without a link is a half-made one (a creator died mid-way).
            remove_dir(&dir);
            attached = Some(attach(&dir, ifindex, mode).inspect_err(|_| remove_dir(&dir))?);
        }
        let pid = std::process::id();
        let mut program = Program {
            filters: hash_map(&dir, "filters")?,
            conns: hash_map(&dir, "conns")?,
            xsks: XskMap::try_from(Map::XskMap(map_data(&dir, "xsks")?)).map_err(aya_err("xsks"))?,
            // A directory made by an accel build from before multi-queue has no `queues`: that
            // program is not ours to join (the caller stays on the kernel path).
            queues: Array::try_from(Map::Array(map_data(&dir, "queues")?)).map_err(aya_err("queues"))?,
            users: hash_map(&dir, "users")?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(map_data(&dir, "stats")?))
                .map_err(aya_err("stats"))?,
            dir,
            pid,
            user: user_key(pid, queue),
            held: Vec::new(),
            added_filters: Default::default(),
            added_conns: Default::default(),
            attached,
        };
        program.forget_dead();
        let start = start_time(pid).ok_or_else(|| io::Error::other("no /proc/self/stat"))?;
        program
            .users
            .insert(program.user, start, 0)
            .map_err(aya_err("registering in users"))?;
        drop(lock);
        Ok(program)
    }

    /// The mode this process attached the program in; `None` when it joined an attached one.
    pub fn attached_mode(&self) -> Option<AttachMode> {
        self.attached
    }

    /// Where the program's pins are.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// Puts the AF_XDP socket `fd`, bound to `queue`, in the XSKMAP as ring `ring`'s, and
    /// names us as that queue's holder: frames of our filters targeting that ring that arrive
    /// there go to it. Called once the socket is bound (the kernel allows the XSKs of one
    /// UMEM per queue, so a process that got here holds it).
    pub fn register_socket(&mut self, queue: u32, ring: u32, fd: RawFd) -> io::Result<()> {
        if queue >= MAX_QUEUES || ring >= MAX_RINGS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("queue {queue} ring {ring}: beyond the program's maps")));
        }
        self.xsks.set(ring * MAX_QUEUES + queue, BorrowedRaw(fd), 0).map_err(aya_err("xsks update"))?;
        let _lock = PinLock::take()?;
        self.queues.set(queue, self.pid, 0).map_err(aya_err("queues update"))?;
        if !self.held.contains(&queue) {
            self.held.push(queue);
        }
        Ok(())
    }

    /// Sends datagrams for `key` to our ring `ring` (also when the entry is ours already: it
    /// moves to that ring). `AddrInUse` when a live user already has it.
    pub fn add_filter(&mut self, key: FilterKey, ring: u32) -> io::Result<()> {
        let _lock = PinLock::take()?;
        let existing = self.filters.get(&key, 0).ok();
        self.claim(existing)?;
        self.filters.insert(key, Target { ring, owner: self.pid }, 0).map_err(aya_err("filters update"))?;
        self.added_filters.insert(key);
        Ok(())
    }

    /// Removes our entry for `key`; another user's entry is left alone.
    pub fn remove_filter(&mut self, key: FilterKey) -> io::Result<()> {
        let _lock = PinLock::take()?;
        self.added_filters.remove(&key);
        match self.filters.get(&key, 0) {
            Ok(t) if t.owner == self.pid => self.filters.remove(&key).map_err(aya_err("filters delete")),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    /// As [`Program::add_filter`], for a connected 5-tuple.
    pub fn add_conn(&mut self, key: ConnKey, ring: u32) -> io::Result<()> {
        let _lock = PinLock::take()?;
        let existing = self.conns.get(&key, 0).ok();
        self.claim(existing)?;
        self.conns.insert(key, Target { ring, owner: self.pid }, 0).map_err(aya_err("conns update"))?;
        self.added_conns.insert(key);
        Ok(())
    }

    /// As [`Program::remove_filter`], for a connected 5-tuple.
    pub fn remove_conn(&mut self, key: ConnKey) -> io::Result<()> {
        let _lock = PinLock::take()?;
        self.added_conns.remove(&key);
        match self.conns.get(&key, 0) {
            Ok(t) if t.owner == self.pid => self.conns.remove(&key).map_err(aya_err("conns delete")),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    /// The program's counters (all users' traffic on this interface).
    pub fn stats(&self) -> ProgramStats {
        let sum = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum::<u64>())
                .unwrap_or(0)
        };
        ProgramStats { redirected: sum(0), no_match: sum(1), not_ours: sum(2), wrong_queue: sum(3) }
    }

    /// Ok when an entry with `existing` as its value may be overwritten by us.
    fn claim(&self, existing: Option<Target>) -> io::Result<()> {
        match existing {
            Some(t) if t.owner != self.pid && self.is_live(t) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("already steered to pid {}", t.owner),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the owner of `t` is a live user (its `users` entry has its start time).
    fn is_live(&self, t: Target) -> bool {
        self.users
            .iter()
            .filter_map(Result::ok)
            .any(|(key, start)| (key >> 32) as u32 == t.owner && start_time(t.owner) == Some(start))
    }

    /// Deletes user entries whose process is gone and filter entries they owned.
    fn forget_dead(&mut self) {
        let users: Vec<(u64, u64)> = self.users.iter().filter_map(Result::ok).collect();
        for (key, start) in users {
            if start_time((key >> 32) as u32) != Some(start) {
                let _ = self.users.remove(&key);
            }
        }
        let dead_filters: Vec<FilterKey> = self
            .filters
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, t)| !self.is_live(*t))
            .map(|(k, _)| k)
            .collect();
        for k in dead_filters {
            let _ = self.filters.remove(&k);
        }
        let dead_conns: Vec<ConnKey> = self
            .conns
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, t)| !self.is_live(*t))
            .map(|(k, _)| k)
            .collect();
        for k in dead_conns {
            let _ = self.conns.remove(&k);
        }
        // Queues still naming a process that is no user (killed): nobody's.
        let live: Vec<u32> = self.users.keys().filter_map(Result::ok).map(|k| (k >> 32) as u32).collect();
        for q in 0..self.queues.len() {
            if let Ok(pid) = self.queues.get(&q, 0) {
                if pid != 0 && !live.contains(&pid) {
                    let _ = self.queues.set(q, 0, 0);
                }
            }
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let Ok(_lock) = PinLock::take() else { return };
        let pid = self.pid;
        for k in std::mem::take(&mut self.added_filters) {
            if self.filters.get(&k, 0).is_ok_and(|t| t.owner == pid) {
                let _ = self.filters.remove(&k);
            }
        }
        for k in std::mem::take(&mut self.added_conns) {
            if self.conns.get(&k, 0).is_ok_and(|t| t.owner == pid) {
                let _ = self.conns.remove(&k);
            }
        }
        for &q in &self.held {
            if self.queues.get(&q, 0).ok() == Some(self.pid) {
                let _ = self.queues.set(q, 0, 0);
            }
        }
        let _ = self.users.remove(&self.user);
        self.forget_dead();
        if self.users.keys().next().is_none() {
            detach_and_remove(&self.dir);
        }
    }
}

/// Wraps a raw fd for aya's `impl AsRawFd` parameters without taking ownership.
struct BorrowedRaw(RawFd);

impl AsRawFd for BorrowedRaw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn user_key(pid: u32, first_queue: u32) -> u64 {
    (u64::from(pid) << 32) | u64::from(first_queue)
}

/// The start time of `pid` (field 22 of /proc/<pid>/stat, clock ticks since boot), or None
/// when there is no such process. A zombie has exited: it counts as gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields after it are
    // counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok() // field 22
}

/// Removes every entry steering multicast `group` (group address and port) in the program on
/// `ifname` (in the calling thread's network namespace), whoever installed it: the any-source
/// `filters` entry and the source-specific `conns` entries (source port 0). Returns how many
/// there were (0 also when there is no program). Used to hand a group back to the kernel when
/// this process joins it without the AF_XDP datapath: the kernel must then give every member
/// its copy.
pub fn remove_group_of_anyone(ifname: &str, group: std::net::SocketAddrV4) -> io::Result<usize> {
    let ifindex = if_index(ifname)?;
    let netns = fs::metadata("/proc/thread-self/ns/net")?.ino();
    let dir = pin_dir(netns, ifindex, ifname);
    if !dir.join("filters").exists() {
        return Ok(0);
    }
    let _lock = PinLock::take()?;
    let mut removed = 0;
    let mut filters: BpfHashMap<MapData, FilterKey, Target> = hash_map(&dir, "filters")?;
    let key = FilterKey::new(crate::xdp::IPPROTO_UDP, group);
    if filters.get(&key, 0).is_ok() {
        filters.remove(&key).map_err(aya_err("filters delete"))?;
        removed += 1;
    }
    let mut conns: BpfHashMap<MapData, ConnKey, Target> = hash_map(&dir, "conns")?;
    let sources: Vec<ConnKey> = conns
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.local_ip == group.ip().octets() && k.local_port == group.port().to_be_bytes() && k.remote_port == [0, 0])
        .collect();
    for k in sources {
        conns.remove(&k).map_err(aya_err("conns delete"))?;
        removed += 1;
    }
    Ok(removed)
}

fn if_index(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}")));
    }
    Ok(index)
}

/// Turns an aya error into an `io::Error`, keeping the errno of the system call underneath
/// (EPERM, EBUSY...) so the caller can tell "not allowed" from "broken".
fn aya_err<E: StdError + 'static>(what: &'static str) -> impl Fn(E) -> io::Error {
    move |e: E| {
        let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
        let mut errno = None;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                errno = io.raw_os_error();
                break;
            }
            source = s.source();
        }
        let mut text = format!("{what}: {e}");
        let mut s = e.source();
        while let Some(cause) = s {
            text.push_str(&format!(": {cause}"));
            s = cause.source();
        }
        match errno {
            Some(n) => io::Error::new(io::Error::from_raw_os_error(n).kind(), format!("{text} (errno {n})")),
            None => io::Error::other(text),
        }
    }
}

fn map_data(dir: &Path, name: &'static str) -> io::Result<MapData> {
    MapData::from_pin(dir.join(name)).map_err(aya_err(name))
}

fn hash_map<K: Pod, V: Pod>(dir: &Path, name: &'static str) -> io::Result<BpfHashMap<MapData, K, V>> {
    BpfHashMap::try_from(Map::HashMap(map_data(dir, name)?)).map_err(aya_err(name))
}

/// Loads the program, attaches it to `ifindex` and pins link and maps into `dir`.
fn attach(dir: &Path, ifindex: u32, mode: AttachMode) -> io::Result<AttachMode> {
    fs::DirBuilder::new().mode(0o700).create(dir)?;
    let mut ebpf = EbpfLoader::new().load(&FILTER_OBJECT.0).map_err(aya_err("loading the XDP filter"))?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| io::Error::other("the filter object has no accel_filter program"))?
        .try_into()
        .map_err(aya_err("accel_filter"))?;
    program.load().map_err(aya_err("verifying the XDP filter"))?;
    let tries: &[(AttachMode, XdpFlags)] = match mode {
        AttachMode::Auto => &[(AttachMode::Native, XdpFlags::DRV_MODE), (AttachMode::Generic, XdpFlags::SKB_MODE)],
        AttachMode::Native => &[(AttachMode::Native, XdpFlags::DRV_MODE)],
        AttachMode::Generic => &[(AttachMode::Generic, XdpFlags::SKB_MODE)],
    };
    let mut last = io::Error::other("no attach mode tried");
    let mut attached = None;
    for &(m, flags) in tries {
        match program.attach_to_if_index(ifindex, flags) {
            Ok(id) => {
                attached = Some((m, id));
                break;
            }
            Err(e) => last = aya_err("attaching the XDP filter")(e),
        }
    }
    let (attached_mode, id) = attached.ok_or(last)?;
    let link: FdLink = program
        .take_link(id)
        .map_err(aya_err("XDP link"))?
        .try_into()
        .map_err(aya_err("XDP link"))?;
    for name in MAPS {
        let map = ebpf.map(name).ok_or_else(|| io::Error::other(format!("no map {name}")))?;
        map.pin(dir.join(name)).map_err(aya_err("pinning a map"))?;
    }
    // The link last: a directory with a link is complete (see `acquire`).
    link.pin(dir.join("link")).map_err(aya_err("pinning the XDP link"))?;
    Ok(attached_mode)
}

/// Unpins the link (the program is detached when its last reference goes) and removes the
/// directory with everything in it.
fn detach_and_remove(dir: &Path) {
    if let Ok(link) = PinnedLink::from_pin(dir.join("link")) {
        let _ = link.unpin();
    }
    remove_dir(dir);
}

fn remove_dir(dir: &Path) {
    for name in MAPS.iter().chain(["link"].iter()) {
        let _ = fs::remove_file(dir.join(name));
    }
    let _ = fs::remove_dir(dir);
}

/// Detaches and removes every directory none of whose users is alive (all killed, or their
/// interface or namespace is gone and they left). The caller holds the lock.
fn reclaim_abandoned(_lock: &PinLock) {
    let Ok(entries) = fs::read_dir(PIN_ROOT) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        let live = hash_map::<u64, u64>(&dir, "users").is_ok_and(|users| {
            users
                .iter()
                .filter_map(Result::ok)
                .any(|(key, start)| start_time((key >> 32) as u32) == Some(start))
        });
        if !live {
            detach_and_remove(&dir);
        }
    }
}

/// The exclusive lock on [`PIN_ROOT`], released on drop (or by the kernel when we die).
struct PinLock {
    _held: OwnedFd,
}

impl PinLock {
    fn take() -> io::Result<PinLock> {
        ensure_bpffs()?;
        match fs::DirBuilder::new().mode(0o700).create(PIN_ROOT) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let path = CString::new(PIN_ROOT).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path; the fd is checked and owned at once.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(PinLock { _held: fd });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

/// Mounts the BPF filesystem on [`BPFFS`] unless it is there already.
fn ensure_bpffs() -> io::Result<()> {
    let path = CString::new(BPFFS).map_err(io::Error::other)?;
    // SAFETY: zeroed is a valid statfs (integers).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = c"bpf";
    let options = c"mode=0700";
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(fstype.as_ptr(), path.as_ptr(), fstype.as_ptr(), 0, options.as_ptr().cast())
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mounting the BPF filesystem on {BPFFS}: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_c_layout() {
        assert_eq!(std::mem::size_of::<FilterKey>(), 8);
        assert_eq!(std::mem::size_of::<ConnKey>(), 16);
        assert_eq!(std::mem::size_of::<Target>(), 8);
        let k = FilterKey::new(17, "10.0.0.1:4660".parse().unwrap());
        // SAFETY: FilterKey is 8 plain bytes (Pod).
        let bytes: [u8; 8] = unsafe { std::mem::transmute(k) };
        assert_eq!(bytes, [17, 0, 0x12, 0x34, 10, 0, 0, 1]);
    }

    #[test]
    fn ring_and_queue_limits_are_the_programs() {
        let source = include_str!("../../bpf/filter.c");
        let define = |name: &str| -> u32 {
            let line = source.lines().find(|l| l.starts_with(&format!("#define {name} "))).expect(name);
            line.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect(name)
        };
        assert_eq!(define("MAX_RINGS"), MAX_RINGS);
        assert_eq!(define("MAX_QUEUES"), MAX_QUEUES);
    }

    #[test]
    fn start_time_sees_us_and_not_the_dead() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn attach_modes_by_name() {
        assert_eq!(AttachMode::from_name("SKB"), Some(AttachMode::Generic));
        assert_eq!(AttachMode::from_name("native"), Some(AttachMode::Native));
        assert_eq!(AttachMode::from_name("auto"), Some(AttachMode::Auto));
        assert_eq!(AttachMode::from_name("fast"), None);
    }

    #[test]
    fn the_checked_in_object_is_built_from_this_source() {
        let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
        let recorded = fs::read_to_string(bpf.join("filter.c.sha256")).unwrap();
        let out = std::process::Command::new("sha256sum").arg(bpf.join("filter.c")).output().unwrap();
        let current = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            recorded.split_whitespace().next(),
            current.split_whitespace().next(),
            "accel/bpf/filter.o is stale: run accel/bpf/refresh.sh"
        );
    }
}
