//! Data calls on tracked UDP sockets.
//!
//! Every tracked socket keeps its kernel socket, and both paths are always served:
//!
//! - **receive** reads the socket's shm ring (and its stash of datagrams demuxed from a shared
//!   ring) first, then the kernel socket without blocking — so datagrams from processes without
//!   accel still arrive. A blocking receive spins for the configured budget (VMA_RX_POLL), then
//!   sleeps *in the kernel*, in a `recv(MSG_PEEK)` on its own kernel socket, after asking senders
//!   for a doorbell: SO_RCVTIMEO, signals (EINTR, SA_RESTART) and cancellation are then the
//!   kernel's own. Doorbells are recognised and discarded.
//! - **send** to a destination a live shm endpoint serves goes into that endpoint's ring;
//!   everything else (other hosts, kernel-only receivers, oversize datagrams, unusual flags) goes
//!   to the kernel. An unbound sender is bound by the kernel first, so its source port is real
//!   and replies from kernel-only peers reach it.
//!
//! MSG_PEEK, MSG_DONTWAIT, MSG_TRUNC (flag and returned length), msg_name/namelen, O_NONBLOCK,
//! SO_RCVTIMEO and connected-peer filtering behave as the kernel's.

use core::sync::atomic::Ordering;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, sockaddr_in, socklen_t, ssize_t};

use crate::config::PollBudget;
use crate::engine::{self, sockaddr_v4};
use crate::fdtable;
use crate::real;
use crate::shm::vi as shmvi;
use crate::socket::{bump, Socket, Stashed, SHUT_RD_BIT, SHUT_WR_BIT};
use crate::vi::kernel::KERNEL;
use crate::vi::{BufId, RxDatagram, RxQueue, SleepTicket, TxOutcome, TxRequest, Vi, ViKind};

/// Could `len` bytes at `p` be user memory? The kernel answers EFAULT for a bad pointer; we must
/// not fault reading or writing one first. Null, the first page and non-canonical addresses are
/// the bad pointers programs actually pass; anything implausible goes to the kernel untouched.
#[inline]
pub fn plausible<T>(p: *const T, len: usize) -> bool {
    const USER_END: usize = 0x0000_7fff_ffff_f000;
    let a = p as usize;
    a >= 4096 && a.checked_add(len).is_some_and(|end| end <= USER_END)
}

/// Is an iovec array itself readable (its buffers aside), with at most UIO_MAXIOV entries? The
/// kernel checks this before it takes a datagram off the queue.
fn iov_array_plausible(iov: *const iovec, n: usize) -> bool {
    n == 0 || (n <= 1024 && plausible(iov, n * size_of::<iovec>()))
}

/// Are an iovec array and every buffer in it plausible?
///
/// # Safety
/// Reads the array only after checking it is plausible.
unsafe fn iov_plausible(iov: *const iovec, n: usize) -> bool {
    if n == 0 {
        return true;
    }
    if !iov_array_plausible(iov, n) {
        return false;
    }
    (0..n).all(|i| {
        let v = &*iov.add(i);
        v.iov_len == 0 || plausible(v.iov_base, v.iov_len)
    })
}

/// Is a msghdr, with its name and iovecs, plausible?
unsafe fn msg_plausible(msg: *const msghdr) -> bool {
    if !plausible(msg, size_of::<msghdr>()) {
        return false;
    }
    let m = &*msg;
    (m.msg_name.is_null() || plausible(m.msg_name, m.msg_namelen as usize)) && iov_plausible(m.msg_iov, m.msg_iovlen)
}

/// A receive into memory the kernel would fault on (a bad buffer or address pointer in an
/// otherwise readable call). The kernel takes the datagram off the queue first and fails the
/// copy afterwards: EFAULT, the datagram is gone (with MSG_PEEK it stays). With a bypass queue
/// the datagram may be in the ring, where the kernel cannot see it, so the same happens here: a
/// normal receive (blocking, timeouts, MSG_DONTWAIT as the call asks) into a scratch byte, then
/// EFAULT instead of its result.
///
/// # Safety
/// As recvmsg(2) on a tracked socket.
unsafe fn receive_then_fault(fd: c_int, s: &Socket, flags: c_int) -> isize {
    let mut scratch = 0u8;
    let mut iov = iovec { iov_base: (&mut scratch as *mut u8).cast(), iov_len: 1 };
    let mut msg: msghdr = MaybeUninit::zeroed().assume_init();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let r = recv_msg(fd, s, &mut msg, flags);
    if r < 0 {
        return r;
    }
    set_errno(libc::EFAULT);
    -1
}

/// Is any datapath on in this process? Until one is, data calls on tracked sockets have nothing
/// to do but reach the kernel, so the hooks treat them as pass-through (set once at start-up).
static DATAPATH: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[inline(always)]
pub fn datapath_on() -> bool {
    DATAPATH.load(Ordering::Relaxed)
}

pub fn set_datapath_on(on: bool) {
    DATAPATH.store(on, Ordering::Relaxed);
}

fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

// -------------------------------------------------------------------------------------------
// Receive

/// Where a received datagram goes: the app's iovecs, address buffer and flags.
struct RxTarget {
    iov: *const iovec,
    iovlen: usize,
    name: *mut c_void,
    namelen: *mut socklen_t,
    /// msg_flags to fill (recvmsg), or null.
    msg_flags: *mut c_int,
}

impl RxTarget {
    /// Copies `data` into the iovecs; returns the return value recv would give.
    ///
    /// # Safety
    /// The app's buffers are as it declared them.
    unsafe fn deliver(&self, src: SocketAddrV4, data: &[u8], flags: c_int) -> isize {
        let mut off = 0;
        for i in 0..self.iovlen {
            if off == data.len() {
                break;
            }
            let v = &*self.iov.add(i);
            let n = v.iov_len.min(data.len() - off);
            if n > 0 {
                core::ptr::copy_nonoverlapping(data.as_ptr().add(off), v.iov_base as *mut u8, n);
                off += n;
            }
        }
        if !self.name.is_null() && !self.namelen.is_null() {
            let sin = sockaddr_in_of(src);
            let room = (*self.namelen as usize).min(size_of::<sockaddr_in>());
            core::ptr::copy_nonoverlapping(&sin as *const sockaddr_in as *const u8, self.name as *mut u8, room);
            *self.namelen = size_of::<sockaddr_in>() as socklen_t;
        }
        let truncated = data.len() > off;
        if !self.msg_flags.is_null() {
            *self.msg_flags = if truncated { libc::MSG_TRUNC } else { 0 };
        }
        if flags & libc::MSG_TRUNC != 0 {
            data.len() as isize
        } else {
            off as isize
        }
    }
}

pub fn sockaddr_in_of(a: SocketAddrV4) -> sockaddr_in {
    sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// Takes (or with MSG_PEEK, looks at) the next datagram for `s` from its stash or bypass queue.
/// Datagrams on a shared queue that belong to other sockets are moved to their stashes.
#[inline]
/// Delivers the stash's first datagram (None: the stash is empty).
fn from_stash(s: &Socket, t: &RxTarget, flags: c_int) -> Option<isize> {
    let mut stash = s.stash.lock();
    let d = stash.front()?;
    // SAFETY: the app's buffers, as declared.
    let r = unsafe { t.deliver(d.src, &d.data, flags) };
    if flags & libc::MSG_PEEK == 0 {
        let d = stash.pop()?;
        crate::stats::capture_rx(d.src, s.rx.get().map_or(d.src, |b| b.local), &d.data); // stats: capture
        bump(&s.counters.shm_rx_packets, 1);
        bump(&s.counters.shm_rx_bytes, d.data.len() as u64);
    }
    Some(r)
}

fn from_bypass(s: &Socket, t: &RxTarget, flags: c_int) -> Option<isize> {
    let peek = flags & libc::MSG_PEEK != 0;
    // The stash first — also after the socket went back to the kernel (what it already had).
    if !s.stash.looks_empty() {
        if let Some(r) = from_stash(s, t, flags) {
            return Some(r);
        }
    }
    let b = s.rx_binding()?;
    let q = &*b.queue;
    // Bounded: a queue never holds more than its capacity.
    for _ in 0..=q.capacity() {
        let Some(item) = q.borrow() else {
            // Empty — but a datagram of ours that another socket's receive just took off the
            // queue may be on its way to the stash (announced before it left): wait for it.
            if !s.stash.looks_empty() {
                return from_stash(s, t, flags);
            }
            return None;
        };
        let (id, d) = match item {
            Ok(v) => v,
            Err(bad) => {
                q.discard(bad); // counted by the queue; never delivered
                s.counters.drop_bad_frame.fetch_add(1, Ordering::Relaxed); // stats: drop cause
                continue;
            }
        };
        if d.owner != b.cookie {
            hand_over(q, id, d);
            continue;
        }
        if s.peer().is_some_and(|p| p != d.src) {
            if q.release(id) {
                s.counters.drop_not_peer.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        // SAFETY: the app's buffers, as declared; the buffer stays ours until release.
        let r = unsafe { t.deliver(d.src, d.payload, flags) };
        let len = d.payload.len();
        if peek {
            return Some(r);
        }
        crate::stats::capture_rx(d.src, b.local, d.payload); // stats: capture (before release frees the buffer)
        if q.release(id) {
            bump(&s.counters.shm_rx_packets, 1);
            bump(&s.counters.shm_rx_bytes, len as u64);
            return Some(r);
        }
        // Another consumer (a forked twin) took it first: what we copied does not count.
    }
    None
}

/// Takes datagram `id` of a shared queue, which is for another socket of this process, and puts
/// it in that socket's stash (bounded by its SO_RCVBUF; a connected socket keeps only its peer's).
///
/// The owner's stash is locked *before* the datagram leaves the queue: the owner, about to
/// sleep, registers its wakeup, sees the queue empty, then checks its stash under this lock — so
/// it either still sees the datagram in the queue or finds it in the stash, never neither.
fn hand_over(q: &dyn RxQueue, id: BufId, d: RxDatagram<'_>) {
    let Some(owner) = crate::vi::socket_of(d.owner) else {
        q.release(id); // its socket is gone: as the kernel drops datagrams for a closed socket
        return;
    };
    let (src, data) = (d.src, d.payload.to_vec()); // copied before release: then it may be reused
    let mut stash = owner.stash.lock();
    stash.expect_one(); // before the datagram leaves the queue: see `Stash::looks_empty`
    if !q.release(id) {
        return; // another consumer took it (and handles it)
    }
    if owner.peer().is_some_and(|p| p != src) {
        owner.counters.drop_not_peer.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !stash.push(Stashed { src, data }, owner.rcvbuf.load(Ordering::Relaxed) as usize) {
        owner.counters.drop_rcvbuf.fetch_add(1, Ordering::Relaxed);
    }
}

/// Empties `q` of what it holds now: every datagram to its socket's stash (a socket going back
/// to the kernel keeps what was already queued for it; a multiplexer about to sleep must arm a
/// queue that holds datagrams it has reported already).
/// `own` names a socket whose datagrams go to its stash even though it no longer has a filter.
pub fn drain_to_stashes(q: &dyn RxQueue, own: Option<(u64, &Socket)>) {
    for _ in 0..=q.capacity() {
        match q.borrow() {
            None => return,
            Some(Err(bad)) => {
                q.discard(bad);
                crate::stats::process_drop(crate::stats::DropCause::BadFrame); // stats: no socket to charge
            }
            Some(Ok((id, d))) => match own {
                Some((cookie, s)) if d.owner == cookie => {
                    let (src, data) = (d.src, d.payload.to_vec());
                    let mut stash = s.stash.lock();
                    if q.release(id) && !stash.push(Stashed { src, data }, s.rcvbuf.load(Ordering::Relaxed) as usize) {
                        s.counters.drop_rcvbuf.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => hand_over(q, id, d),
            },
        }
    }
}


/// One receive on a tracked socket: the engine's recvmsg.
///
/// # Safety
/// `msg` is a valid msghdr as for recvmsg(2).
pub unsafe fn recv_msg(fd: c_int, s: &Socket, msg: *mut msghdr, flags: c_int) -> isize {
    // A socket that never had a ring is the kernel's alone. One that had (and may have gone
    // back to the kernel) still has a stash to serve and doorbells to filter.
    // A msghdr or iovec array the kernel cannot read fails before any datagram is taken.
    if s.rx.get().is_none()
        || !plausible(msg, size_of::<msghdr>())
        || !iov_array_plausible((*msg).msg_iov, (*msg).msg_iovlen)
    {
        let r = real::recvmsg(fd, msg, flags);
        count_kernel_rx(s, r);
        return r;
    }
    if !msg_plausible(msg) {
        return receive_then_fault(fd, s, flags);
    }
    let t = RxTarget {
        iov: (*msg).msg_iov,
        iovlen: (*msg).msg_iovlen,
        name: (*msg).msg_name,
        namelen: &mut (*msg).msg_namelen,
        msg_flags: &mut (*msg).msg_flags,
    };
    // No control data from the bypass; the kernel writes msg_controllen back only on success.
    let controllen = (*msg).msg_controllen;
    (*msg).msg_controllen = 0;
    let r = receive(fd, s, &t, msg, flags);
    if r < 0 {
        (*msg).msg_controllen = controllen;
    }
    r
}

/// The shortest time between two looks at the kernel socket of a busy-polling receive on the
/// AF_XDP datapath. Its kernel socket gets only what the XDP program passes to the kernel
/// (datagrams from this host, from other queues, frames the program does not parse), and each
/// look is a system call that delays noticing the next datagram on the XSK; looking every
/// VMA_RX_POLL_OS_RATIO empty polls made ~9 system calls per ping-pong round trip. A datagram
/// the program passes waits at most this long more (a poll/epoll that saw it sets the hint, and
/// a blocking receive sleeps on both).
pub const XDP_KERNEL_LOOK_GAP_NS: u64 = 100_000;

/// The receive loop shared by every receive call.
unsafe fn receive(fd: c_int, s: &Socket, t: &RxTarget, msg: *mut msghdr, flags: c_int) -> isize {
    let nonblocking = flags & libc::MSG_DONTWAIT != 0 || s.nonblocking.load(Ordering::Relaxed);
    let config = &engine::engine().config;
    let budget: PollBudget = config.rx_poll;
    let ratio = config.rx_poll_os_ratio.max(1);
    let interrupts = crate::signals::interrupts();
    let mut spins: i64 = 0;
    let mut rcv_deadline: Option<Option<std::time::Instant>> = None;
    loop {
        if let Some(r) = from_bypass(s, t, flags) {
            bump(&s.counters.poll_hits, 1); // stats: poll hit
            return r;
        }
        // Looking at the kernel socket costs a system call: on entry once per `ratio` calls
        // (VMA_RX_POLL_OS_RATIO) unless a poll just saw kernel data, then every 256th spin;
        // on the AF_XDP datapath also at most once per XDP_KERNEL_LOOK_GAP_NS.
        let binding = s.rx_binding();
        let bound = binding.is_some();
        let paced = binding.is_some_and(|b| b.kind == ViKind::Xdp);
        let shut_rd = s.shut() & SHUT_RD_BIT != 0;
        let look = !bound || shut_rd || if spins == 0 {
            s.kernel_hint.swap(false, Ordering::Relaxed)
                || (s.kernel_look_due(ratio) && (!paced || s.kernel_look_paced(XDP_KERNEL_LOOK_GAP_NS)))
        } else {
            spins % 256 == 0 && (!paced || s.kernel_look_paced(XDP_KERNEL_LOOK_GAP_NS))
        };
        if look {
            if let Some(r) = KERNEL.receive(fd, s, msg, flags) {
                return r;
            }
        }
        // Nothing to receive: what this thread sent (ACCEL_XDP_TX_BATCH) goes before it waits
        // or polls again.
        crate::xdp::flusher::flush_if_mine();
        if shut_rd && !nonblocking {
            return 0; // shut down for reading, queues empty: the kernel returns 0 at once
        }
        if nonblocking {
            bump(&s.counters.eagain, 1);
            set_errno(libc::EAGAIN);
            return -1;
        }
        if bound && (budget < 0 || spins < budget) {
            if crate::signals::interrupts() != interrupts {
                // A handler without SA_RESTART ran while we spun: as a kernel-blocked receive.
                set_errno(libc::EINTR);
                return -1;
            }
            spins += 1;
            if spins % 256 == 0 {
                // On a shared core the sender may be waiting for this one: let it run.
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            } else {
                core::hint::spin_loop();
            }
            continue;
        }
        // Sleep in the kernel until a datagram or a doorbell arrives; nothing deferred by any
        // thread waits for this one's sleep.
        crate::xdp::flusher::flush_if_pending();
        let Some(b) = s.rx_binding() else {
            // No ring any more: only the kernel socket (doorbells still filtered above).
            let mut probe = [0u8; 1];
            if real::recv(fd, probe.as_mut_ptr() as *mut c_void, 1, libc::MSG_PEEK) < 0 {
                return -1;
            }
            continue;
        };
        let ticket = b.queue.arm_for(b.cookie);
        if ticket == SleepTicket::DataPresent {
            continue; // data arrived meanwhile
        }
        if !s.stash.lock().is_empty() {
            b.queue.disarm_for(ticket, b.cookie); // a sibling socket handed one over
            continue;
        }
        s.counters.poll_misses.fetch_add(1, Ordering::Relaxed); // stats: poll miss (sleeps)
        let mut probe = [0u8; 1];
        let r = match b.queue.wait_fd() {
            None => real::recv(fd, probe.as_mut_ptr() as *mut c_void, 1, libc::MSG_PEEK),
            // Nobody rings a doorbell for this queue: sleep on its fd and the socket's together.
            Some(wfd) => sleep_two(fd, wfd, &mut rcv_deadline, interrupts),
        };
        b.queue.disarm_for(ticket, b.cookie);
        if r < 0 {
            let e = errno();
            // A timeout (SO_RCVTIMEO) or a signal ends the call as it would the kernel's — after
            // one last look at the ring.
            if let Some(r) = from_bypass(s, t, flags) {
                return r;
            }
            set_errno(e);
            return -1;
        }
        // Woken: look again, starting with the kernel (it holds a datagram or a doorbell).
        s.kernel_hint.store(true, Ordering::Relaxed);
        spins = 0;
    }
}

/// A blocking receive's sleep on a queue with a wait fd: poll on the socket and the queue's fd.
/// 0 = something is readable (look again); -1 with errno EAGAIN = SO_RCVTIMEO passed, EINTR = a
/// handler without SA_RESTART ran (with SA_RESTART the sleep goes on, as recv's would). The
/// deadline is SO_RCVTIMEO from the first sleep of this call.
fn sleep_two(fd: c_int, wfd: c_int, deadline: &mut Option<Option<std::time::Instant>>, interrupts: u64) -> isize {
    let dl = *deadline.get_or_insert_with(|| {
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let mut len = size_of::<libc::timeval>() as socklen_t;
        // SAFETY: a timeval-sized option into our own timeval.
        let r = unsafe { real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &mut tv as *mut _ as *mut c_void, &mut len) };
        let d = std::time::Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32).saturating_mul(1000));
        (r == 0 && !d.is_zero()).then(|| std::time::Instant::now() + d)
    });
    loop {
        let ms = match dl {
            None => -1,
            Some(t) => {
                let left = t.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    set_errno(libc::EAGAIN);
                    return -1;
                }
                left.as_millis().clamp(1, i32::MAX as u128) as c_int
            }
        };
        let mut fds = [
            libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wfd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two pollfds of our own.
        let r = unsafe { real::poll(fds.as_mut_ptr(), 2, ms) };
        if r > 0 {
            return 0;
        }
        if r < 0 && errno() == libc::EINTR && crate::signals::interrupts() != interrupts {
            return -1;
        }
        if r < 0 && errno() != libc::EINTR {
            return -1;
        }
    }
}

fn count_kernel_rx(s: &Socket, r: isize) {
    if r >= 0 {
        s.counters.rx(r as usize);
    } else if matches!(errno(), libc::EAGAIN) {
        bump(&s.counters.eagain, 1);
    }
}

/// recv/recvfrom/read on a tracked socket.
///
/// # Safety
/// As recvfrom(2).
pub unsafe fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, a: *mut sockaddr, al: *mut socklen_t) -> ssize_t {
    let name_ok = a.is_null() || al.is_null() || (plausible(al, size_of::<socklen_t>()) && plausible(a, *al as usize));
    // MSG_NOSIGNAL means nothing to a receive (sockperf passes it on every call).
    if flags & !(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) == 0 && name_ok && (len == 0 || plausible(buf, len)) {
        // The common case, in a read section (no reference taken): a datagram ready, or a
        // non-blocking call that finds none.
        if let Some(Some(r)) = fdtable::with(fd, |s| recv_ready(s, buf, len, flags, a, al, core::ptr::null_mut())) {
            return r;
        }
    }
    recvfrom_general(fd, buf, len, flags, a, al, name_ok)
}

/// [`recvfrom`] beyond the common case (out of line: the fast path's frame stays small).
#[inline(never)]
unsafe fn recvfrom_general(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, a: *mut sockaddr, al: *mut socklen_t, name_ok: bool) -> ssize_t {
    let Some(s) = fdtable::get(fd) else { return real::recvfrom(fd, buf, len, flags, a, al) };
    if s.rx.get().is_none() {
        let r = real::recvfrom(fd, buf, len, flags, a, al);
        count_kernel_rx(&s, r);
        return r;
    }
    if !name_ok || (len > 0 && !plausible(buf, len)) {
        return receive_then_fault(fd, &s, flags);
    }
    let mut iov = iovec { iov_base: buf, iov_len: len };
    let mut msg: msghdr = MaybeUninit::zeroed().assume_init();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut namelen: socklen_t = if al.is_null() { 0 } else { *al };
    if !a.is_null() && !al.is_null() {
        msg.msg_name = a as *mut c_void;
        msg.msg_namelen = namelen;
    }
    let r = recv_msg(fd, &s, &mut msg, flags);
    if r >= 0 && !a.is_null() && !al.is_null() {
        namelen = msg.msg_namelen;
        *al = namelen;
    }
    r
}

/// The common case of recv/recvfrom/read (and of a one-piece recvmsg without control data),
/// without the general receive's set-up: a datagram for this socket is at the head of its
/// queue, and the call has no flags but MSG_DONTWAIT (and the meaningless MSG_NOSIGNAL). None =
/// anything else (the general path then decides, as if this had not run). `mflags`: recvmsg's
/// msg_flags to fill, or null.
///
/// # Safety
/// `buf`/`len` and `a`/`al` were checked plausible by the caller; `mflags` is null or writable.
#[inline]
unsafe fn recv_ready(s: &Socket, buf: *mut c_void, len: size_t, flags: c_int, a: *mut sockaddr, al: *mut socklen_t, mflags: *mut c_int) -> Option<isize> {
    let b = s.rx_binding()?;
    if !s.stash.looks_empty() {
        return None;
    }
    let q = &*b.queue;
    let Some(item) = q.borrow() else {
        if !s.stash.looks_empty() {
            return None; // one is on its way to the stash (see `from_bypass`)
        }
        return empty_nonblocking(s, flags);
    };
    let (id, d) = item.ok()?;
    if d.owner != b.cookie || s.peer().is_some_and(|p| p != d.src) {
        return None;
    }
    let n = d.payload.len().min(len);
    core::ptr::copy_nonoverlapping(d.payload.as_ptr(), buf as *mut u8, n);
    if !a.is_null() && !al.is_null() {
        let sin = sockaddr_in_of(d.src);
        let room = (*al as usize).min(size_of::<sockaddr_in>());
        core::ptr::copy_nonoverlapping(&sin as *const sockaddr_in as *const u8, a as *mut u8, room);
        *al = size_of::<sockaddr_in>() as socklen_t;
    }
    let full = d.payload.len();
    crate::stats::capture_rx(d.src, b.local, d.payload); // stats: capture (before release frees the buffer)
    if !q.release(id) {
        return None; // a forked twin took it: what we copied does not count
    }
    if !mflags.is_null() {
        *mflags = if full > n { libc::MSG_TRUNC } else { 0 };
    }
    bump(&s.counters.poll_hits, 1); // stats: poll hit
    bump(&s.counters.shm_rx_packets, 1);
    bump(&s.counters.shm_rx_bytes, full as u64);
    Some(n as isize)
}

/// A non-blocking receive found the queue empty: EAGAIN at once, unless the kernel socket is due
/// a look (VMA_RX_POLL_OS_RATIO, or a poll saw data there), which the general path makes. This is
/// what a busy-polling application calls in a loop, so it stays short.
#[inline]
fn empty_nonblocking(s: &Socket, flags: c_int) -> Option<isize> {
    if flags & libc::MSG_DONTWAIT == 0 && !s.nonblocking.load(Ordering::Relaxed) {
        return None;
    }
    if s.kernel_hint.load(Ordering::Relaxed) {
        return None;
    }
    // Nothing to receive: a request this thread deferred (ACCEL_XDP_TX_BATCH) goes before it
    // polls for the answer.
    crate::xdp::flusher::flush_if_mine();
    // The general path counts this call itself when it is the kernel's turn (on the AF_XDP
    // datapath: when the time pacing lets it look, else the count starts again here).
    if s.kernel_look_next() {
        let paced = s.rx_binding().is_some_and(|b| b.kind == ViKind::Xdp);
        if !paced || s.kernel_look_pace_elapsed(XDP_KERNEL_LOOK_GAP_NS) {
            return None;
        }
    }
    s.kernel_look_due(engine::engine().config.rx_poll_os_ratio);
    bump(&s.counters.eagain, 1);
    set_errno(libc::EAGAIN);
    Some(-1)
}

/// recvmsg on a tracked socket.
///
/// # Safety
/// As recvmsg(2).
pub unsafe fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    // The common case in a read section, as recvfrom's: one buffer, no control data wanted.
    if flags & !(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) == 0
        && msg_plausible(msg)
        && (*msg).msg_iovlen == 1
        && ((*msg).msg_control.is_null() || (*msg).msg_controllen == 0)
    {
        let m = &mut *msg;
        let v = *m.msg_iov;
        let name = m.msg_name as *mut sockaddr;
        let mut namelen = m.msg_namelen;
        let al: *mut socklen_t = if name.is_null() { core::ptr::null_mut() } else { &mut namelen };
        let mut mflags = 0;
        if let Some(Some(r)) = fdtable::with(fd, |s| recv_ready(s, v.iov_base, v.iov_len, flags, name, al, &mut mflags)) {
            if r >= 0 {
                if !name.is_null() {
                    m.msg_namelen = namelen;
                }
                m.msg_controllen = 0;
                m.msg_flags = mflags;
            }
            return r;
        }
    }
    match fdtable::get(fd) {
        Some(s) if !msg.is_null() => recv_msg(fd, &s, msg, flags),
        _ => real::recvmsg(fd, msg, flags),
    }
}

/// readv on a tracked socket.
///
/// # Safety
/// As readv(2).
pub unsafe fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some(s) = fdtable::get(fd) else { return real::readv(fd, iov, n) };
    if n < 0 || s.rx.get().is_none() || !iov_array_plausible(iov, n as usize) {
        let r = real::readv(fd, iov, n);
        count_kernel_rx(&s, r);
        return r;
    }
    if !iov_plausible(iov, n as usize) {
        return receive_then_fault(fd, &s, 0);
    }
    let mut msg: msghdr = MaybeUninit::zeroed().assume_init();
    msg.msg_iov = iov as *mut iovec;
    msg.msg_iovlen = n as usize;
    recv_msg(fd, &s, &mut msg, 0)
}

/// recvmmsg on a tracked socket: one receive per message; MSG_WAITFORONE makes every receive
/// after the first non-blocking, as the kernel does.
///
/// # Safety
/// As recvmmsg(2).
pub unsafe fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int {
    let Some(s) = fdtable::get(fd) else { return real::recvmmsg(fd, msgs, vlen, flags, timeout) };
    if s.rx.get().is_none() || !plausible(msgs, vlen.min(1024) as usize * size_of::<mmsghdr>()) {
        let r = real::recvmmsg(fd, msgs, vlen, flags, timeout);
        if r > 0 {
            for i in 0..r as usize {
                s.counters.rx((*msgs.add(i)).msg_len as usize);
            }
        }
        return r;
    }
    let vlen = vlen.min(1024);
    let mut flags_i = flags & !libc::MSG_WAITFORONE;
    for i in 0..vlen as usize {
        let m = &mut *msgs.add(i);
        let r = recv_msg(fd, &s, &mut m.msg_hdr, flags_i);
        if r < 0 {
            if i == 0 {
                return -1;
            }
            return i as c_int; // the error is reported by the next call, as the kernel does
        }
        m.msg_len = r as c_uint;
        if flags & libc::MSG_WAITFORONE != 0 {
            flags_i |= libc::MSG_DONTWAIT;
        }
    }
    vlen as c_int
}

/// Is a tracked socket readable through the bypass (stash or queue)? For poll/select/epoll.
pub fn bypass_readable(s: &Socket) -> bool {
    if !s.stash.looks_empty() && !s.stash.lock().is_empty() {
        return true;
    }
    let Some(b) = s.rx_binding() else { return false };
    let q = &*b.queue;
    // Move other sockets' datagrams aside so the answer is about this socket.
    for _ in 0..=q.capacity() {
        match q.borrow() {
            // (a datagram of ours on its way to the stash: wait for it, as `from_bypass` does)
            None => return !s.stash.looks_empty() && !s.stash.lock().is_empty(),
            Some(Err(bad)) => q.discard(bad),
            Some(Ok((id, d))) => {
                if d.owner == b.cookie {
                    return true;
                }
                hand_over(q, id, d);
            }
        }
    }
    false
}

/// The size of the next datagram for `s` waiting in its stash or queue (FIONREAD).
pub fn next_bypass_len(s: &Socket) -> Option<usize> {
    if !bypass_readable(s) {
        return None;
    }
    if let Some(d) = s.stash.lock().front() {
        return Some(d.data.len());
    }
    let b = s.rx_binding()?;
    match b.queue.borrow()? {
        Ok((_, d)) if d.owner == b.cookie => Some(d.payload.len()),
        _ => None,
    }
}

/// Consumes pending doorbells on a tracked socket's kernel socket; true if a real datagram is
/// waiting there. For poll/select/epoll, after the kernel reported the fd readable.
pub fn kernel_has_data(fd: c_int, s: &Socket) -> bool {
    // A socket shut down for reading is readable for the kernel (a receive returns 0 at once).
    s.shut() & SHUT_RD_BIT != 0 || KERNEL.has_data(fd, s)
}

// -------------------------------------------------------------------------------------------
// Transmit

/// Send-type call on a tracked socket. `dest` null = the connected peer.
///
/// # Safety
/// `iov`/`iovlen` and `dest`/`dlen` are as the app passed them.
#[allow(clippy::too_many_arguments)] // the send family's arguments, plus the app's own call
pub unsafe fn send_iov(
    fd: c_int,
    s: &Arc<Socket>,
    iov: *const iovec,
    iovlen: usize,
    dest: *const sockaddr,
    dlen: socklen_t,
    flags: c_int,
    bypass: bool,
    kernel: impl FnOnce() -> isize,
) -> isize {
    if (!dest.is_null() && !plausible(dest, dlen as usize)) || !iov_plausible(iov, iovlen) {
        return kernel(); // the kernel reports EFAULT
    }
    let to = sockaddr_v4(dest, dlen);
    engine::before_send(fd, s, to);
    let sent = if bypass { try_bypass_send(fd, s, iov, iovlen, to, flags) } else { None };
    let Some(r) = sent else {
        // What the AF_XDP datapath holds unkicked goes first (order).
        crate::xdp::flusher::flush_if_pending();
        let r = kernel();
        if r >= 0 {
            s.counters.tx(r as usize);
            if to.is_none() {
                // A connected socket's kernel send can come back as an ICMP error (ECONNREFUSED)
                // for its next receive: that receive must ask the kernel.
                s.kernel_hint.store(true, Ordering::Relaxed);
            }
        }
        return r;
    };
    r
}

const PLAIN_SEND: c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_CONFIRM;

/// What the send fast path did.
enum FastSend {
    /// Sent (or dropped on a full ring, as UDP may): the call's result.
    Done(isize),
    /// The VI declined it and may have counted why: the kernel sends it, the VI is not asked
    /// again.
    Kernel,
}

/// The common send of one piece (sendto/send/write), without the general send's set-up: a
/// socket with its local port and its sender decision made, plain flags, a destination a bypass
/// VI serves, a payload that fits. None = anything else (the general path then decides, as if
/// this had not run: nothing is counted or sent before the VI is asked).
#[inline]
fn send_ready(fd: c_int, s: &Socket, payload: &[u8], flags: c_int, to: Option<SocketAddrV4>) -> Option<FastSend> {
    if flags & !PLAIN_SEND != 0 || !s.accelerated() || s.shut() & SHUT_WR_BIT != 0 {
        return None;
    }
    if to.is_some() && !s.sender_decided.load(Ordering::Relaxed) {
        return None; // engine::before_send has work to do
    }
    let local = s.local().filter(|l| l.port() != 0)?;
    let dest = to.or_else(|| s.peer())?;
    if dest.ip().is_multicast() || dest.ip().is_broadcast() || dest.port() == 0 {
        return None;
    }
    let vi: &dyn Vi = bypass_vi(s, *dest.ip())?;
    if payload.len() > vi.max_payload() {
        return None;
    }
    Some(match send_payload(fd, s, vi, local, dest, payload) {
        Some(r) => FastSend::Done(r),
        None => FastSend::Kernel,
    })
}

/// Sends through a bypass VI that serves the destination; None = use the kernel VI (the app's
/// own call, so its flags and errors are the kernel's).
unsafe fn try_bypass_send(fd: c_int, s: &Arc<Socket>, iov: *const iovec, iovlen: usize, to: Option<SocketAddrV4>, flags: c_int) -> Option<isize> {
    if flags & !PLAIN_SEND != 0 || !s.accelerated() || s.shut() & SHUT_WR_BIT != 0 {
        return None; // after shutdown(SHUT_WR) the kernel answers EPIPE (and raises SIGPIPE)
    }
    let dest = to.or_else(|| s.peer())?;
    if dest.ip().is_multicast() || dest.ip().is_broadcast() || dest.port() == 0 {
        return None;
    }
    let vi: &dyn Vi = bypass_vi(s, *dest.ip())?;
    // The payload: the app's own buffer when it is one piece, else gathered (out of line: its
    // 16 KiB stack buffer would cost every send a stack probe); anything larger than the VI
    // carries is the kernel's.
    let max = vi.max_payload();
    if iovlen != 1 {
        return gather_then_send(fd, s, vi, iov, iovlen, dest, max);
    }
    let v = &*iov;
    if v.iov_len > max {
        s.counters.tx_oversize.fetch_add(1, Ordering::Relaxed); // stats: too large for a slot
        return None;
    }
    let payload: &[u8] = if v.iov_len == 0 { &[] } else { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
    let local = local_or_implicit_bind(fd, s)?;
    send_payload(fd, s, vi, local, dest, payload)
}

/// [`try_bypass_send`] for a datagram in several pieces: gathered into one buffer first.
///
/// # Safety
/// `iov` points to `iovlen` plausible iovecs (checked by the caller).
#[cold]
#[inline(never)]
unsafe fn gather_then_send(fd: c_int, s: &Arc<Socket>, vi: &dyn Vi, iov: *const iovec, iovlen: usize, dest: SocketAddrV4, max: usize) -> Option<isize> {
    let mut gathered = [MaybeUninit::<u8>::uninit(); 16384];
    let mut len = 0usize;
    for i in 0..iovlen {
        let v = &*iov.add(i);
        if v.iov_len > max.min(gathered.len()) - len {
            return None;
        }
        if v.iov_len > 0 {
            core::ptr::copy_nonoverlapping(v.iov_base as *const u8, gathered.as_mut_ptr().add(len) as *mut u8, v.iov_len);
        }
        len += v.iov_len;
    }
    let local = local_or_implicit_bind(fd, s)?;
    send_payload(fd, s, vi, local, dest, std::slice::from_raw_parts(gathered.as_ptr() as *const u8, len))
}

/// The socket's local address, after an implicit bind if it has no port yet.
fn local_or_implicit_bind(fd: c_int, s: &Arc<Socket>) -> Option<SocketAddrV4> {
    match s.local() {
        Some(l) if l.port() != 0 => Some(l),
        _ => implicit_bind(fd, s),
    }
}

/// The bypass send of one datagram through `vi`; None = the kernel's (see [`try_bypass_send`]).
#[inline(always)]
fn send_payload(fd: c_int, s: &Socket, vi: &dyn Vi, local: SocketAddrV4, dest: SocketAddrV4, payload: &[u8]) -> Option<isize> {
    let len = payload.len();
    let src_ip = if !local.ip().is_unspecified() || vi.kind() == ViKind::Xdp {
        *local.ip() // xdp: 0.0.0.0 takes the route's preferred source
    } else if dest.ip().is_loopback() {
        Ipv4Addr::LOCALHOST
    } else {
        *dest.ip()
    };
    let ring = match s.rx.get().map(|b| &b.state) {
        Some(crate::vi::FilterState::Xdp(f)) => f.ring,
        _ => 0,
    };
    let tx = TxRequest { fd, src: SocketAddrV4::new(src_ip, local.port()), dest, payload, ring };
    match vi.transmit(&tx) {
        TxOutcome::NotServed => None,
        TxOutcome::DroppedFull => {
            s.counters.drop_ring_full.fetch_add(1, Ordering::Relaxed);
            Some(len as isize)
        }
        TxOutcome::Sent { woke } => {
            crate::stats::capture_tx(tx.src, dest, payload); // stats: capture
            bump(&s.counters.shm_tx_packets, 1);
            bump(&s.counters.shm_tx_bytes, len as u64);
            if woke {
                s.counters.doorbells_sent.fetch_add(1, Ordering::Relaxed);
            }
            Some(len as isize)
        }
    }
}

/// The bypass VI a send to `dest` tries, if any: shm for a destination on this host, the AF_XDP
/// port for one beyond its interface (when the socket's address is one of the port's).
#[inline]
fn bypass_vi(s: &Socket, dest: Ipv4Addr) -> Option<&'static dyn Vi> {
    let e = engine::engine();
    if e.config.shm {
        if let Some(vi) = shmvi::get(&e.config) {
            if vi.reaches(dest) {
                return Some(vi);
            }
        }
    }
    if e.config.xdp {
        let local = s.local().map_or(Ipv4Addr::UNSPECIFIED, |l| *l.ip());
        if let Some(port) = crate::xdp::port::for_local(&e.config, local) {
            if port.reaches(dest) {
                return Some(port);
            }
        }
    }
    None
}

/// Binds an unbound sender to an ephemeral port through the kernel (as its first sendto would),
/// and publishes it so replies can come back through shm.
fn implicit_bind(fd: c_int, s: &Arc<Socket>) -> Option<SocketAddrV4> {
    let any = sockaddr_in_of(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    // SAFETY: a valid sockaddr_in.
    let r = unsafe { real::bind(fd, &any as *const sockaddr_in as *const sockaddr, size_of::<sockaddr_in>() as socklen_t) };
    if r != 0 && errno() != libc::EINVAL {
        return None; // EINVAL: already bound (by a connect, say); getsockname tells where
    }
    engine::after_local_address(fd, s);
    s.local().filter(|l| l.port() != 0)
}

/// sendto/send/write on a tracked socket.
///
/// # Safety
/// As sendto(2).
pub unsafe fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, a: *const sockaddr, al: socklen_t) -> ssize_t {
    if len == 0 || plausible(buf, len) {
        let to = if a.is_null() { Ok(None) } else if plausible(a, al as usize) { engine::sockaddr_v4(a, al).map(Some).ok_or(()) } else { Err(()) };
        if let Ok(to) = to {
            // The common case, in a read section (no reference taken).
            let payload: &[u8] = if len == 0 { &[] } else { std::slice::from_raw_parts(buf as *const u8, len) };
            match fdtable::with(fd, |s| send_ready(fd, s, payload, flags, to)).flatten() {
                Some(FastSend::Done(r)) => return r,
                Some(FastSend::Kernel) => return sendto_general(fd, buf, len, flags, a, al, false),
                _ => {}
            }
        }
    }
    sendto_general(fd, buf, len, flags, a, al, true)
}

/// [`sendto`] beyond the common case (out of line: the fast path's frame stays small).
/// `bypass` false: the fast path found the VI would not take it (and counted why): the kernel's.
#[inline(never)]
unsafe fn sendto_general(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, a: *const sockaddr, al: socklen_t, bypass: bool) -> ssize_t {
    let Some(s) = fdtable::get(fd) else { return real::sendto(fd, buf, len, flags, a, al) };
    let iov = iovec { iov_base: buf as *mut c_void, iov_len: len };
    send_iov(fd, &s, &iov, 1, a, al, flags, bypass, || real::sendto(fd, buf, len, flags, a, al))
}

/// send/write on a tracked socket; `kernel` is the app's own call, for the kernel path.
///
/// # Safety
/// As send(2).
pub unsafe fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, kernel: impl FnOnce() -> isize) -> ssize_t {
    let mut bypass = true;
    if len == 0 || plausible(buf, len) {
        let payload: &[u8] = if len == 0 { &[] } else { std::slice::from_raw_parts(buf as *const u8, len) };
        match fdtable::with(fd, |s| send_ready(fd, s, payload, flags, None)).flatten() {
            Some(FastSend::Done(r)) => return r,
            Some(FastSend::Kernel) => bypass = false,
            None => {}
        }
    }
    let Some(s) = fdtable::get(fd) else { return kernel() };
    let iov = iovec { iov_base: buf as *mut c_void, iov_len: len };
    send_iov(fd, &s, &iov, 1, core::ptr::null(), 0, flags, bypass, kernel)
}

/// sendmsg on a tracked socket (messages with control data go to the kernel).
///
/// # Safety
/// As sendmsg(2).
pub unsafe fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let s = fdtable::get(fd);
    match s {
        Some(s) if msg_plausible(msg) && (*msg).msg_controllen == 0 => {
            let m = &*msg;
            send_iov(fd, &s, m.msg_iov, m.msg_iovlen, m.msg_name as *const sockaddr, m.msg_namelen, flags, true, || {
                real::sendmsg(fd, msg, flags)
            })
        }
        Some(s) => {
            crate::xdp::flusher::flush_if_pending(); // order, as in send_iov
            let r = real::sendmsg(fd, msg, flags);
            if r >= 0 {
                s.counters.tx(r as usize);
            }
            r
        }
        None => real::sendmsg(fd, msg, flags),
    }
}

/// sendmmsg on a tracked socket: one send per message.
///
/// # Safety
/// As sendmmsg(2).
pub unsafe fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    if fdtable::get(fd).is_none() || !plausible(msgs, vlen.min(1024) as usize * size_of::<mmsghdr>()) {
        return real::sendmmsg(fd, msgs, vlen, flags);
    }
    let vlen = vlen.min(1024);
    for i in 0..vlen as usize {
        let m = &mut *msgs.add(i);
        let r = sendmsg(fd, &m.msg_hdr, flags);
        if r < 0 {
            return if i == 0 { -1 } else { i as c_int };
        }
        m.msg_len = r as c_uint;
    }
    vlen as c_int
}

/// writev on a tracked socket.
///
/// # Safety
/// As writev(2).
pub unsafe fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some(s) = fdtable::get(fd) else { return real::writev(fd, iov, n) };
    if !(0..=1024).contains(&n) {
        return real::writev(fd, iov, n);
    }
    send_iov(fd, &s, iov, n as usize, core::ptr::null(), 0, 0, true, || real::writev(fd, iov, n))
}

