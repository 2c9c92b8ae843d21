//! Data calls on tracked UDP sockets.
//!
//! The kernel carries every datagram in this version; these functions add the per-socket
//! bookkeeping the datapaths will build on: the `udp_sender` decision at the first unconnected
//! send, and kernel rx/tx/EAGAIN counters. Return values and errno are the kernel's, untouched.

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::engine::{self, sockaddr_v4};
use crate::fdtable;
use crate::real;
use crate::socket::Socket;

#[inline]
fn count_rx(s: &Socket, r: isize) {
    if r >= 0 {
        s.counters.rx(r as usize);
    } else if errno_is_eagain() {
        s.counters.eagain.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

#[inline]
fn count_tx(s: &Socket, r: isize) {
    if r >= 0 {
        s.counters.tx(r as usize);
    }
}

fn errno_is_eagain() -> bool {
    // SAFETY: errno is thread-local.
    let e = unsafe { *libc::__errno_location() };
    e == libc::EAGAIN || e == libc::EWOULDBLOCK
}

/// Receive-type call on a possibly tracked fd: run `call`, count the result.
#[inline]
pub fn rx(fd: c_int, call: impl FnOnce() -> isize) -> isize {
    let s = fdtable::get(fd);
    let r = call();
    if let Some(s) = s {
        count_rx(&s, r);
    }
    r
}

/// Send-type call: apply the udp_sender decision for `dest` first, then run `call`, count it.
///
/// # Safety
/// `dest` must be null or point to `dlen` readable bytes.
#[inline]
pub unsafe fn tx(fd: c_int, dest: *const sockaddr, dlen: socklen_t, call: impl FnOnce() -> isize) -> isize {
    let s = fdtable::get(fd);
    if let Some(s) = &s {
        engine::before_send(fd, s, sockaddr_v4(dest, dlen));
    }
    let r = call();
    if let Some(s) = s {
        count_tx(&s, r);
    }
    r
}

/// # Safety
/// libc's contract for recvfrom.
pub unsafe fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, a: *mut sockaddr, al: *mut socklen_t) -> ssize_t {
    rx(fd, || real::recvfrom(fd, buf, len, flags, a, al))
}

/// # Safety
/// libc's contract for recvmsg.
pub unsafe fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    rx(fd, || real::recvmsg(fd, msg, flags))
}

/// # Safety
/// libc's contract for recvmmsg.
pub unsafe fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, t: *mut libc::timespec) -> c_int {
    let s = fdtable::get(fd);
    let r = real::recvmmsg(fd, msgs, vlen, flags, t);
    if let Some(s) = s {
        if r > 0 {
            for i in 0..r as usize {
                s.counters.rx((*msgs.add(i)).msg_len as usize);
            }
        } else {
            count_rx(&s, r as isize);
        }
    }
    r
}

/// # Safety
/// libc's contract for readv.
pub unsafe fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    rx(fd, || real::readv(fd, iov, n))
}

/// # Safety
/// libc's contract for sendmsg.
pub unsafe fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let (name, nlen) = if msg.is_null() { (core::ptr::null(), 0) } else { ((*msg).msg_name as *const sockaddr, (*msg).msg_namelen) };
    tx(fd, name, nlen, || real::sendmsg(fd, msg, flags))
}

/// # Safety
/// libc's contract for sendmmsg.
pub unsafe fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    let s = fdtable::get(fd);
    if let Some(s) = &s {
        if !msgs.is_null() && vlen > 0 {
            let h = &(*msgs).msg_hdr;
            engine::before_send(fd, s, sockaddr_v4(h.msg_name as *const sockaddr, h.msg_namelen));
        }
    }
    let r = real::sendmmsg(fd, msgs, vlen, flags);
    if let Some(s) = s {
        for i in 0..r.max(0) as usize {
            s.counters.tx((*msgs.add(i)).msg_len as usize);
        }
    }
    r
}

/// # Safety
/// libc's contract for writev.
pub unsafe fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    tx(fd, core::ptr::null(), 0, || real::writev(fd, iov, n))
}
