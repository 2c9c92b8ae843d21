//! The endpoint registry: the filter table of the shm datapath.
//!
//! Which (proto, address, port) is served by which ring, shared by every accelerated process of
//! one user through files in a private directory:
//!
//! ```text
//! /dev/shm/accel-<uid>/            mode 0700, owned by the user (checked on every open)
//!     udp-<netns>-127.0.0.1-5000   endpoint file (4 KiB, 0600): up to 16 members
//!     udp-<netns>-0.0.0.0-6000     a wildcard bind: serves every local address
//!     ring-<pid>-<n>               a receive ring (see ring.rs), 0600
//!
//! <hugetlbfs mount>/accel-<uid>/   mode 0700: rings in hugepage memory (VMA_MEM_ALLOC_TYPE=2),
//!     ring-<pid>-<n>               named `huge/ring-<pid>-<n>` in endpoint files
//! ```
//!
//! An endpoint file is a filter: "datagrams for this address go to ring R, tagged with cookie C".
//! It has several members when several sockets share the port (SO_REUSEPORT); senders leave such
//! a group to the kernel, whose reuseport hash picks the receiver of each datagram *and* of each
//! doorbell (see vi.rs). A member whose socket has SO_REUSEADDR or SO_REUSEPORT set is marked
//! [`FLAG_SHARED_PORT`]: sockets of programs without accel may share its port unseen by the
//! registry, so a sender first counts the kernel's sockets on that address
//! ([`kernel_sockets_on`]) and serves the member through its ring only while it is alone.
//!
//! Looking an endpoint up is opening a file by name — no shared index to lock or corrupt. Files
//! are created complete (written under a temporary name, then `link`ed into place) so a reader
//! never sees a half-initialised one. A member is claimed with a CAS on its state word, which also
//! holds the claimant's pid, so a claim left by a crashed process is recognisable and reclaimed.
//!
//! Liveness: a member names its owner's pid, the fd number and the socket's inode. It is live
//! while `/proc/<pid>/fd/<fd>` still links to `socket:[<inode>]` — which fails after the owner
//! died, closed the socket behind our back, or exec'd with the fd close-on-exec. Senders check
//! that periodically and when a ring is full, and reclaim what is dead; a sender never keeps
//! writing into a ring nobody reads.
//!
//! Every value read from a file is bounds-checked: a corrupt or hostile file yields "no
//! endpoint", never a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"ACCELEP1";
/// 2: member flags at +120 (the ring name area shrank from 96 to 88 bytes).
const VERSION: u32 = 2;
const FILE_LEN: usize = 4096;
/// Members per endpoint: sockets sharing one port with SO_REUSEPORT.
pub const MEMBERS: usize = 16;
const MEMBERS_OFFSET: usize = 64;
const MEMBER_LEN: usize = 128;
const RING_NAME_LEN: usize = 88;
/// Member layout: +0 state, +8 fd, +16 socket inode, +24 cookie, +32 ring name, +120 flags.
const FLAGS_OFFSET: usize = 32 + RING_NAME_LEN;

/// Member flag: the socket has SO_REUSEADDR or SO_REUSEPORT, so other sockets — possibly of
/// programs without accel, which the registry does not list — may be bound to the same address.
pub const FLAG_SHARED_PORT: u64 = 1;

// Member state word: pid << 2 | phase.
const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const ACTIVE: u64 = 2;

/// The directory for this user: `$ACCEL_SHM_DIR` if set (tests), else `/dev/shm/accel-<uid>`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ACCEL_SHM_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/dev/shm/accel-{uid}"))
}

/// The file name of the endpoint for `local` in the network namespace `netns` (the inode of
/// /proc/self/ns/net): 127.0.0.1:5000 in one namespace is not 127.0.0.1:5000 in another, while
/// /dev/shm is shared by all of them.
pub fn endpoint_name(netns: u64, local: SocketAddrV4) -> String {
    format!("udp-{netns}-{}-{}", local.ip(), local.port())
}

/// This process's network namespace, as the inode of /proc/self/ns/net (0 if unknown).
pub fn current_netns() -> u64 {
    fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

/// What a receiver publishes about one of its sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub pid: u32,
    pub fd: i32,
    pub inode: u64,
    pub cookie: u64,
    pub ring: String,
    /// [`FLAG_SHARED_PORT`], ...
    pub flags: u64,
}

/// One user's registry directory.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    /// The network namespace whose endpoints this process publishes and looks up.
    netns: u64,
}

/// A published member, to unpublish at close.
#[derive(Debug)]
pub struct Publication {
    pub path: PathBuf,
    pub index: usize,
    pub cookie: u64,
}

impl Registry {
    /// Opens (creating if needed) the registry directory, refusing one that another user owns
    /// or that others can enter: rings would be readable or forgeable by them.
    pub fn open(dir: &Path) -> io::Result<Registry> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = fs::symlink_metadata(dir)?;
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not a private directory of uid {uid}", dir.display()),
            ));
        }
        Ok(Registry { dir: dir.to_path_buf(), netns: current_netns() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file `name` (an endpoint, a ring, or `huge/<ring>`) lives.
    pub fn path_of(&self, name: &str) -> PathBuf {
        match name.strip_prefix(HUGE_PREFIX) {
            // A name from an endpoint file: one plain file name, never a path elsewhere.
            Some(rest) if !rest.contains('/') && rest != ".." => match huge_dir() {
                Some(d) => d.join(rest),
                None => self.dir.join(".no-hugetlbfs").join(rest),
            },
            Some(_) => self.dir.join(".bad-name"),
            None => self.dir.join(name),
        }
    }

    /// Re-creates the directory if a concurrent clean-up removed it.
    fn ensure_dir(&self) -> io::Result<()> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Publishes `info` as a member of the endpoint for `local`.
    pub fn publish(&self, local: SocketAddrV4, info: &MemberInfo) -> io::Result<Publication> {
        if info.ring.len() >= RING_NAME_LEN || info.ring.contains('\0') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring name too long"));
        }
        let path = self.path_of(&endpoint_name(self.netns, local));
        for _ in 0..8 {
            self.ensure_dir()?;
            let ep = match EndpointMap::open(&path) {
                Ok(ep) => ep,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.create_endpoint_file(&path)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(index) = ep.claim(info) else {
                ep.reap_dead();
                match ep.claim(info) {
                    Some(index) => return self.confirm(&path, ep, index, info.cookie),
                    None => return Err(io::Error::new(io::ErrorKind::AddrInUse, "endpoint has no free member")),
                }
            };
            match self.confirm(&path, ep, index, info.cookie) {
                Ok(p) => return Ok(p),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("endpoint file kept changing"))
    }

    /// A claim counts only if the file is still the one at `path` (a concurrent unpublish may
    /// have unlinked it after its last member left).
    fn confirm(&self, path: &Path, ep: EndpointMap, index: usize, cookie: u64) -> io::Result<Publication> {
        match fs::metadata(path) {
            Ok(m) if m.ino() == ep.inode => Ok(Publication { path: path.to_path_buf(), index, cookie }),
            _ => {
                ep.release(index, cookie);
                Err(io::Error::new(io::ErrorKind::Interrupted, "endpoint replaced"))
            }
        }
    }

    fn create_endpoint_file(&self, path: &Path) -> io::Result<()> {
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() };
        let tmp = self.dir.join(format!(".tmp-{pid}-{}", next_id()));
        let mut buf = vec![0u8; FILE_LEN];
        buf[..8].copy_from_slice(MAGIC);
        buf[8..12].copy_from_slice(&VERSION.to_ne_bytes());
        buf[12..16].copy_from_slice(&(MEMBERS as u32).to_ne_bytes());
        {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&buf)?;
        }
        let r = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes a member; the endpoint file goes with its last member.
    pub fn unpublish(&self, p: &Publication) {
        let Ok(ep) = EndpointMap::open(&p.path) else { return };
        ep.release(p.index, p.cookie);
        if ep.active_count() == 0 {
            let _ = fs::remove_file(&p.path);
        }
        self.remove_dir_if_empty();
    }

    /// Removes the directory once nothing is left in it (rmdir fails while anything remains).
    pub fn remove_dir_if_empty(&self) {
        let _ = fs::remove_dir(&self.dir);
    }

    /// The endpoint serving `dest`: the exact address first, then a wildcard bind of that port
    /// when `dest_is_local` (a wildcard serves every local address).
    pub fn lookup(&self, dest: SocketAddrV4, dest_is_local: bool) -> Option<EndpointMap> {
        self.lookup_bound(dest, dest_is_local).map(|(ep, _)| ep)
    }

    /// As [`Registry::lookup`], with the address the endpoint is bound to (`dest` or 0.0.0.0).
    pub fn lookup_bound(&self, dest: SocketAddrV4, dest_is_local: bool) -> Option<(EndpointMap, SocketAddrV4)> {
        if let Ok(ep) = EndpointMap::open(&self.path_of(&endpoint_name(self.netns, dest))) {
            return Some((ep, dest));
        }
        if dest_is_local {
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dest.port());
            if let Ok(ep) = EndpointMap::open(&self.path_of(&endpoint_name(self.netns, any))) {
                return Some((ep, any));
            }
        }
        None
    }

    /// Removes whatever crashed processes left: dead members, empty endpoint files, rings whose
    /// creator is gone. Returns how many files were removed.
    pub fn reap(&self) -> usize {
        let Ok(dir) = fs::read_dir(&self.dir) else { return 0 };
        let mut removed = 0;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with("udp-") {
                if let Ok(ep) = EndpointMap::open(&path) {
                    ep.reap_dead();
                    if ep.active_count() == 0 && ep.claiming_count() == 0 && fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
            } else if let Some(pid) = ring_owner(name) {
                if !pid_alive(pid) && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            } else if let Some(pid) = name.strip_prefix(".tmp-").and_then(|r| r.split('-').next()?.parse().ok()) {
                if !pid_alive(pid) && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        // Hugepage rings of dead processes: the pages are precious and come back only here.
        for (name, path) in huge_rings() {
            if ring_owner(&name).is_some_and(|pid| !pid_alive(pid)) && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

impl Registry {
    /// Removes rings named with our own pid: they were made by the image this process ran before
    /// an exec (its endpoints were withdrawn at the exec; this image makes its own rings).
    pub fn remove_rings_of_previous_image(&self) {
        let me = std::process::id();
        if let Ok(dir) = fs::read_dir(&self.dir) {
            for entry in dir.flatten() {
                if entry.file_name().to_str().and_then(ring_owner) == Some(me) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        for (name, path) in huge_rings() {
            if ring_owner(&name) == Some(me) {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// The pid in a ring file name `ring-<pid>-...` (or `huge/ring-<pid>-...`).
pub fn ring_owner(name: &str) -> Option<u32> {
    let name = name.strip_prefix(HUGE_PREFIX).unwrap_or(name);
    name.strip_prefix("ring-")?.split('-').next()?.parse().ok()
}

/// Ring names with this prefix live in [`huge_dir`].
pub const HUGE_PREFIX: &str = "huge/";

/// Linux's statfs f_type of hugetlbfs.
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// `<first hugetlbfs mount>/accel-<uid>`: where this user's hugepage rings live (found once per
/// process in /proc/self/mounts; every process of the user in this mount namespace finds the
/// same one). None without a hugetlbfs mount.
pub fn huge_dir() -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
        let mnt = mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "hugetlbfs").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })?;
        // SAFETY: getuid cannot fail.
        Some(mnt.join(format!("accel-{}", unsafe { libc::getuid() })))
    })
    .as_deref()
}

/// Creates (or checks) [`huge_dir`]: a private directory of this user on hugetlbfs.
pub fn ensure_huge_dir() -> io::Result<&'static Path> {
    let dir = huge_dir().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no hugetlbfs mount"))?;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory of uid {uid}", dir.display()),
        ));
    }
    Ok(dir)
}

/// (name as endpoint files give it, path) of every ring file in [`huge_dir`].
fn huge_rings() -> Vec<(String, PathBuf)> {
    let Some(dir) = huge_dir() else { return Vec::new() };
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| Some((format!("{HUGE_PREFIX}{}", e.file_name().to_str()?), e.path())))
        .collect()
}

fn next_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Is `pid` a live process? (EPERM: it exists but is someone else's: alive.)
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Does `pid` still hold `fd` open on the socket with `inode`?
pub fn member_alive(pid: u32, fd: i32, inode: u64) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    match fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
        Ok(target) => target.to_str() == Some(&format!("socket:[{inode}]")),
        // Another pid namespace or no /proc: fall back to the pid alone.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => true,
        Err(_) => false,
    }
}

/// How many of the kernel's IPv4 UDP sockets (in this process's network namespace) are bound to
/// port `port` on one of `ips` — from /proc/net/udp. None if it cannot be read.
///
/// This is how a sender learns whether a registered socket that allows its port to be shared
/// (SO_REUSEADDR/SO_REUSEPORT) really is alone: sockets of programs without accel never appear in
/// the registry, and if one shares the address, the kernel (not the sender) must choose which
/// socket gets each datagram — and each doorbell. (IPv6 dual-stack sockets are not counted: for
/// an IPv4 datagram the kernel prefers an IPv4 socket bound the same way.)
pub fn kernel_sockets_on(port: u16, ips: &[Ipv4Addr]) -> Option<usize> {
    let text = fs::read("/proc/net/udp").ok()?;
    Some(count_sockets_in(&text, port, ips))
}

/// The counting part of [`kernel_sockets_on`], on the text of /proc/net/udp: lines
/// `  sl  local_address rem_address ...` with `local_address` = `%08X:%04X` of the address's
/// four bytes as a native-endian word and the port in host order.
fn count_sockets_in(text: &[u8], port: u16, ips: &[Ipv4Addr]) -> usize {
    let want_port = format!("{port:04X}");
    let want: Vec<String> = ips.iter().map(|ip| format!("{:08X}", u32::from_ne_bytes(ip.octets()))).collect();
    let text = String::from_utf8_lossy(text);
    text.lines()
        .skip(1)
        .filter(|line| {
            let Some(local) = line.split_whitespace().nth(1) else { return false };
            let Some((a, p)) = local.split_once(':') else { return false };
            p == want_port && want.iter().any(|w| w == a)
        })
        .count()
}

/// One endpoint file, mapped.
#[derive(Debug)]
pub struct EndpointMap {
    base: *mut u8,
    pub inode: u64,
}

// SAFETY: the mapping is shared memory accessed only through atomics and bounds-checked reads;
// it is unmapped once, on drop.
unsafe impl Send for EndpointMap {}
// SAFETY: as above.
unsafe impl Sync for EndpointMap {}

impl Drop for EndpointMap {
    fn drop(&mut self) {
        // SAFETY: base/FILE_LEN is the mapping made in `open`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, FILE_LEN) };
    }
}

/// A live member as read from an endpoint file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub index: usize,
    pub info: MemberInfo,
}

impl EndpointMap {
    /// Maps an endpoint file after checking its size and header.
    pub fn open(path: &Path) -> io::Result<EndpointMap> {
        let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(path)?;
        let meta = f.metadata()?;
        if meta.len() != FILE_LEN as u64 || !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "endpoint file has the wrong size"));
        }
        let base = map(&f, FILE_LEN)?;
        let ep = EndpointMap { base, inode: meta.ino() };
        // SAFETY: the mapping is FILE_LEN bytes; the header is within it.
        let header = unsafe { std::slice::from_raw_parts(base, 16) };
        if &header[..8] != MAGIC
            || header[8..12] != VERSION.to_ne_bytes()
            || header[12..16] != (MEMBERS as u32).to_ne_bytes()
        {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not an endpoint file"));
        }
        Ok(ep)
    }

    fn state(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < MEMBERS);
        // SAFETY: i < MEMBERS keeps the 8-byte aligned word inside the FILE_LEN mapping.
        unsafe { &*(self.base.add(MEMBERS_OFFSET + i * MEMBER_LEN) as *const AtomicU64) }
    }

    fn field(&self, i: usize, off: usize) -> &AtomicU64 {
        // SAFETY: off < MEMBER_LEN and 8-aligned; within the mapping for i < MEMBERS.
        unsafe { &*(self.base.add(MEMBERS_OFFSET + i * MEMBER_LEN + off) as *const AtomicU64) }
    }

    fn name_bytes(&self, i: usize) -> *mut u8 {
        // SAFETY: the name area [32, 32 + RING_NAME_LEN) lies within the member.
        unsafe { self.base.add(MEMBERS_OFFSET + i * MEMBER_LEN + 32) }
    }

    fn claim(&self, info: &MemberInfo) -> Option<usize> {
        let claiming = (u64::from(info.pid) << 2) | CLAIMING;
        for i in 0..MEMBERS {
            if self.state(i).compare_exchange(FREE, claiming, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            self.field(i, 8).store(u64::from(info.fd as u32), Ordering::Relaxed);
            self.field(i, 16).store(info.inode, Ordering::Relaxed);
            self.field(i, 24).store(info.cookie, Ordering::Relaxed);
            self.field(i, FLAGS_OFFSET).store(info.flags, Ordering::Relaxed);
            let name = info.ring.as_bytes();
            // SAFETY: name.len() < RING_NAME_LEN (checked by publish); the area is ours while
            // the state says CLAIMING; the trailing NUL is written too.
            unsafe {
                let dst = self.name_bytes(i);
                core::ptr::write_bytes(dst, 0, RING_NAME_LEN);
                core::ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
            }
            self.state(i).store((u64::from(info.pid) << 2) | ACTIVE, Ordering::Release);
            return Some(i);
        }
        None
    }

    /// Frees member `i` if it still holds `cookie`.
    pub fn release(&self, i: usize, cookie: u64) -> bool {
        if i >= MEMBERS {
            return false;
        }
        let s = self.state(i).load(Ordering::Acquire);
        if s & 3 != ACTIVE || self.field(i, 24).load(Ordering::Relaxed) != cookie {
            return false;
        }
        self.state(i).compare_exchange(s, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// The member at `i`, if active. Reads are validated: a torn or garbage entry is None.
    pub fn member(&self, i: usize) -> Option<Member> {
        if i >= MEMBERS {
            return None;
        }
        let s = self.state(i).load(Ordering::Acquire);
        if s & 3 != ACTIVE {
            return None;
        }
        let fd = self.field(i, 8).load(Ordering::Relaxed) as u32 as i32;
        let inode = self.field(i, 16).load(Ordering::Relaxed);
        let cookie = self.field(i, 24).load(Ordering::Relaxed);
        let flags = self.field(i, FLAGS_OFFSET).load(Ordering::Relaxed);
        let mut name = [0u8; RING_NAME_LEN];
        // SAFETY: copies the fixed-size name area out of the mapping.
        unsafe { core::ptr::copy_nonoverlapping(self.name_bytes(i), name.as_mut_ptr(), RING_NAME_LEN) };
        let len = name.iter().position(|&b| b == 0)?;
        let ring = std::str::from_utf8(&name[..len]).ok()?;
        // A plain file name, optionally in the hugepage directory: never a path elsewhere.
        let file = ring.strip_prefix(HUGE_PREFIX).unwrap_or(ring);
        if file.is_empty() || file.contains('/') || file.starts_with('.') {
            return None;
        }
        // The entry must not have changed while we read it.
        if self.state(i).load(Ordering::Acquire) != s {
            return None;
        }
        Some(Member { index: i, info: MemberInfo { pid: (s >> 2) as u32, fd, inode, cookie, ring: ring.to_string(), flags } })
    }

    /// Adds `flags` to member `i` if it still holds `cookie` (an option set after publishing).
    pub fn add_flags(&self, i: usize, cookie: u64, flags: u64) -> bool {
        if !self.still(i, cookie) {
            return false;
        }
        self.field(i, FLAGS_OFFSET).fetch_or(flags, Ordering::AcqRel);
        true
    }

    /// The flags of member `i`, if it still holds `cookie`.
    pub fn flags(&self, i: usize, cookie: u64) -> Option<u64> {
        let f = self.field(i, FLAGS_OFFSET).load(Ordering::Acquire);
        self.still(i, cookie).then_some(f)
    }

    /// Active members, in slot order.
    pub fn members(&self) -> Vec<Member> {
        (0..MEMBERS).filter_map(|i| self.member(i)).collect()
    }

    /// One member chosen by `hash` (the sender's port): each datagram goes to exactly one.
    pub fn pick(&self, hash: u32) -> Option<Member> {
        let members = self.members();
        if members.is_empty() {
            return None;
        }
        members.get(hash as usize % members.len()).cloned()
    }

    /// Is member `i` still the one with `cookie`? One load per check: the sender's cache test.
    #[inline]
    pub fn still(&self, i: usize, cookie: u64) -> bool {
        i < MEMBERS
            && self.state(i).load(Ordering::Acquire) & 3 == ACTIVE
            && self.field(i, 24).load(Ordering::Relaxed) == cookie
    }

    pub fn active_count(&self) -> usize {
        (0..MEMBERS).filter(|&i| self.state(i).load(Ordering::Acquire) & 3 == ACTIVE).count()
    }

    fn claiming_count(&self) -> usize {
        (0..MEMBERS).filter(|&i| self.state(i).load(Ordering::Acquire) & 3 == CLAIMING).count()
    }

    /// Frees members whose owner is gone (and claims a crashed process left half made).
    /// Returns how many.
    pub fn reap_dead(&self) -> usize {
        let mut n = 0;
        for i in 0..MEMBERS {
            let s = self.state(i).load(Ordering::Acquire);
            let dead = match s & 3 {
                ACTIVE => self.member(i).is_some_and(|m| !member_alive(m.info.pid, m.info.fd, m.info.inode)),
                CLAIMING => !pid_alive((s >> 2) as u32),
                _ => false,
            };
            if dead && self.state(i).compare_exchange(s, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn map(f: &File, len: usize) -> io::Result<*mut u8> {
    // SAFETY: maps `len` bytes of a file we verified is at least that long; MAP_SHARED so all
    // processes see one copy.
    let p = unsafe {
        libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0)
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as *mut u8)
}

/// The inode of the socket behind `fd` (its identity in /proc/<pid>/fd).
pub fn socket_inode(fd: i32) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat with a buffer we own.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded.
    Some(unsafe { st.assume_init() }.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("accel-test-reg-{}-{tag}-{}", std::process::id(), next_id()));
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn udp_socket() -> (i32, u64) {
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(fd >= 0);
        (fd, socket_inode(fd).unwrap())
    }

    fn info(fd: i32, inode: u64, cookie: u64) -> MemberInfo {
        MemberInfo { pid: std::process::id(), fd, inode, cookie, ring: format!("ring-{}-0", std::process::id()), flags: 0 }
    }

    #[test]
    fn publish_lookup_unpublish() {
        let d = TempDir::new("basic");
        let reg = Registry::open(&d.0).unwrap();
        let (fd, ino) = udp_socket();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);
        let p = reg.publish(a, &info(fd, ino, 42)).unwrap();
        let ep = reg.lookup(a, true).unwrap();
        let m = ep.pick(7).unwrap();
        assert_eq!(m.info, info(fd, ino, 42));
        assert!(ep.still(m.index, 42));
        assert!(reg.lookup(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001), true).is_none());
        reg.unpublish(&p);
        assert!(!ep.still(m.index, 42), "the sender's cached view sees the release");
        assert!(reg.lookup(a, true).is_none(), "file removed with its last member");
        assert!(!d.0.exists(), "empty directory removed");
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn network_namespaces_do_not_see_each_other() {
        let d = TempDir::new("netns");
        let a = Registry { dir: d.0.clone(), netns: 1 };
        let b = Registry { dir: d.0.clone(), netns: 2 };
        fs::DirBuilder::new().mode(0o700).create(&d.0).unwrap();
        let (fd, ino) = udp_socket();
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5100);
        let p = a.publish(addr, &info(fd, ino, 3)).unwrap();
        assert!(a.lookup(addr, true).is_some());
        assert!(b.lookup(addr, true).is_none(), "127.0.0.1:5100 of another namespace");
        a.unpublish(&p);
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn wildcard_serves_local_destinations_only() {
        let d = TempDir::new("wild");
        let reg = Registry::open(&d.0).unwrap();
        let (fd, ino) = udp_socket();
        let p = reg.publish(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6000), &info(fd, ino, 1)).unwrap();
        assert!(reg.lookup(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 6000), true).is_some());
        assert!(reg.lookup(SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 6000), false).is_none());
        reg.unpublish(&p);
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn reuseport_members_each_get_a_share() {
        let d = TempDir::new("reuse");
        let reg = Registry::open(&d.0).unwrap();
        let (fd1, i1) = udp_socket();
        let (fd2, i2) = udp_socket();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7000);
        let p1 = reg.publish(a, &info(fd1, i1, 1)).unwrap();
        let p2 = reg.publish(a, &info(fd2, i2, 2)).unwrap();
        let ep = reg.lookup(a, true).unwrap();
        let picks: std::collections::HashSet<u64> = (0..10).map(|h| ep.pick(h).unwrap().info.cookie).collect();
        assert_eq!(picks.len(), 2);
        reg.unpublish(&p1);
        assert_eq!(ep.pick(0).unwrap().info.cookie, 2);
        reg.unpublish(&p2);
        // SAFETY: closing our sockets.
        unsafe {
            libc::close(fd1);
            libc::close(fd2);
        }
    }

    #[test]
    fn member_flags_are_published_and_added() {
        let d = TempDir::new("flags");
        let reg = Registry::open(&d.0).unwrap();
        let (fd, ino) = udp_socket();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7100);
        let p = reg.publish(a, &MemberInfo { flags: FLAG_SHARED_PORT, ..info(fd, ino, 5) }).unwrap();
        let (ep, bound) = reg.lookup_bound(a, true).unwrap();
        assert_eq!(bound, a);
        assert_eq!(ep.pick(0).unwrap().info.flags, FLAG_SHARED_PORT);
        assert_eq!(ep.flags(p.index, 5), Some(FLAG_SHARED_PORT));
        reg.unpublish(&p);
        assert_eq!(ep.flags(p.index, 5), None);
        let p = reg.publish(a, &info(fd, ino, 6)).unwrap();
        let ep = reg.lookup(a, true).unwrap();
        assert_eq!(ep.flags(p.index, 6), Some(0));
        assert!(ep.add_flags(p.index, 6, FLAG_SHARED_PORT));
        assert!(!ep.add_flags(p.index, 7, FLAG_SHARED_PORT), "another cookie");
        assert_eq!(ep.member(p.index).unwrap().info.flags, FLAG_SHARED_PORT);
        reg.unpublish(&p);
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn proc_net_udp_lines_are_counted_by_address_and_port() {
        let lo = u32::from_ne_bytes([127, 0, 0, 1]);
        let text = format!(
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             \x20 1: {lo:08X}:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n\
             \x20 2: {lo:08X}:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0\n\
             \x20 3: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0 0\n\
             \x20 4: {lo:08X}:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5 2 0 0\n\
             garbage\n"
        );
        let t = text.as_bytes();
        assert_eq!(count_sockets_in(t, 8080, &[Ipv4Addr::LOCALHOST]), 2);
        assert_eq!(count_sockets_in(t, 8080, &[Ipv4Addr::UNSPECIFIED]), 1);
        assert_eq!(count_sockets_in(t, 8080, &[Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST]), 3);
        assert_eq!(count_sockets_in(t, 8081, &[Ipv4Addr::LOCALHOST]), 1);
        assert_eq!(count_sockets_in(t, 8082, &[Ipv4Addr::LOCALHOST]), 0);
    }

    #[test]
    fn kernel_sockets_on_sees_a_real_bind() {
        // SAFETY: plain socket calls on a socket we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            let mut sin: libc::sockaddr_in = core::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            assert_eq!(libc::bind(fd, &sin as *const _ as *const libc::sockaddr, core::mem::size_of_val(&sin) as u32), 0);
            let mut len = core::mem::size_of_val(&sin) as u32;
            libc::getsockname(fd, &mut sin as *mut _ as *mut libc::sockaddr, &mut len);
            let port = u16::from_be(sin.sin_port);
            assert_eq!(kernel_sockets_on(port, &[Ipv4Addr::LOCALHOST]), Some(1));
            libc::close(fd);
            assert_eq!(kernel_sockets_on(port, &[Ipv4Addr::LOCALHOST]), Some(0));
        }
    }

    #[test]
    fn closed_socket_member_is_reaped() {
        let d = TempDir::new("reap");
        let reg = Registry::open(&d.0).unwrap();
        let (fd, ino) = udp_socket();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8000);
        reg.publish(a, &info(fd, ino, 9)).unwrap();
        // SAFETY: closing our socket without unpublishing, as a crash or raw syscall would.
        unsafe { libc::close(fd) };
        assert!(!member_alive(std::process::id(), fd, ino));
        assert_eq!(reg.reap(), 1);
        assert!(reg.lookup(a, true).is_none());
    }

    #[test]
    fn dead_pid_ring_files_are_reaped() {
        let d = TempDir::new("ring");
        let reg = Registry::open(&d.0).unwrap();
        // pid 0x3fffffff is above pid_max on Linux: never alive.
        fs::write(d.0.join("ring-1073741823-0"), b"x").unwrap();
        fs::write(d.0.join(format!("ring-{}-0", std::process::id())), b"x").unwrap();
        assert_eq!(reg.reap(), 1);
        assert!(d.0.join(format!("ring-{}-0", std::process::id())).exists());
    }

    #[test]
    fn ring_names_stay_inside_their_directories() {
        let d = TempDir::new("names");
        let reg = Registry::open(&d.0).unwrap();
        assert_eq!(reg.path_of("ring-1-2-if-lo"), d.0.join("ring-1-2-if-lo"));
        for bad in ["huge/../x", "huge/a/b", "huge/.."] {
            let p = reg.path_of(bad);
            assert!(p.starts_with(&d.0) && !p.ends_with("x") && !p.ends_with("b"), "{bad} -> {}", p.display());
        }
        assert_eq!(ring_owner("huge/ring-42-0-if-lo"), Some(42));
        assert_eq!(ring_owner("ring-42-0-if-lo"), Some(42));
    }

    #[test]
    fn foreign_or_open_directories_are_refused() {
        let d = TempDir::new("perm");
        fs::create_dir(&d.0).unwrap();
        fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(Registry::open(&d.0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn corrupt_endpoint_files_are_rejected() {
        let d = TempDir::new("corrupt");
        let reg = Registry::open(&d.0).unwrap();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000);
        let path = d.0.join(endpoint_name(current_netns(), a));
        fs::write(&path, b"short").unwrap();
        assert!(reg.lookup(a, true).is_none());
        let mut junk = vec![0xA5u8; FILE_LEN];
        fs::write(&path, &junk).unwrap();
        assert!(reg.lookup(a, true).is_none(), "bad magic");
        // Right header, garbage members: no member comes out, nothing panics.
        junk[..8].copy_from_slice(MAGIC);
        junk[8..12].copy_from_slice(&VERSION.to_ne_bytes());
        junk[12..16].copy_from_slice(&(MEMBERS as u32).to_ne_bytes());
        let mut seed = 0x1234_5678u32;
        for b in junk[16..].iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        fs::write(&path, &junk).unwrap();
        let ep = reg.lookup(a, true).unwrap();
        for m in ep.members() {
            assert!(!m.info.ring.contains('/'));
        }
        let _ = ep.pick(3);
        let _ = ep.reap_dead();
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// Any endpoint file contents — any length, valid header or not, then arbitrary
            /// patches over the members — decode without panicking, and whatever decodes names
            /// rings inside the registry's directories.
            #[test]
            fn arbitrary_endpoint_files_decode_safely(
                len in prop_oneof![Just(FILE_LEN), 0..2 * FILE_LEN],
                valid_header in any::<bool>(),
                fill in any::<u8>(),
                patches in proptest::collection::vec((0..FILE_LEN, proptest::collection::vec(any::<u8>(), 1..96)), 0..24),
                pick in any::<u32>(),
            ) {
                let d = TempDir::new("fuzz");
                let reg = Registry::open(&d.0).unwrap();
                let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);
                let mut bytes = vec![fill; len];
                if valid_header && len >= 16 {
                    bytes[..8].copy_from_slice(MAGIC);
                    bytes[8..12].copy_from_slice(&VERSION.to_ne_bytes());
                    bytes[12..16].copy_from_slice(&(MEMBERS as u32).to_ne_bytes());
                }
                for (at, patch) in patches {
                    for (i, b) in patch.into_iter().enumerate() {
                        if let Some(x) = bytes.get_mut(at + i) {
                            *x = b;
                        }
                    }
                }
                fs::write(d.0.join(endpoint_name(current_netns(), a)), &bytes).unwrap();
                if let Some(ep) = reg.lookup(a, true) {
                    for m in ep.members() {
                        prop_assert!(!m.info.ring.contains('/') || m.info.ring.starts_with(HUGE_PREFIX));
                        prop_assert!(!m.info.ring.contains(".."));
                    }
                    let _ = ep.pick(pick);
                    let _ = ep.reap_dead();
                }
                let _ = reg.lookup_bound(a, true);
            }
        }
    }
}
