//! recv, recvfrom, recvmsg, recvmmsg, __recv_chk, __recvfrom_chk, read, __read_chk, readv,
//! send, sendto, sendmsg, sendmmsg, write, writev.
//!
//! `read`/`write` run for every file a program touches: their pass-through is one bounds check,
//! one load and the call. Tracked sockets take the engine path only while a datapath is on
//! (`udp::datapath_on`); otherwise the kernel does all their data work and so do we: nothing.

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use accel_engine::{fdtable, real, udp};

#[no_mangle]
pub unsafe extern "C-unwind" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::recvfrom(fd, buf, len, flags, core::ptr::null_mut(), core::ptr::null_mut());
    }
    real::recv(fd, buf, len, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, a: *mut sockaddr, al: *mut socklen_t) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::recvfrom(fd, buf, len, flags, a, al);
    }
    real::recvfrom(fd, buf, len, flags, a, al)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::recvmsg(fd, msg, flags);
    }
    real::recvmsg(fd, msg, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, t: *mut libc::timespec) -> c_int {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::recvmmsg(fd, msgs, vlen, flags, t);
    }
    real::recvmmsg(fd, msgs, vlen, flags, t)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        if len > buflen {
            return real::__recv_chk(fd, buf, len, buflen, flags); // fortify's overflow abort
        }
        return udp::recvfrom(fd, buf, len, flags, core::ptr::null_mut(), core::ptr::null_mut());
    }
    real::__recv_chk(fd, buf, len, buflen, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __recvfrom_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int, a: *mut sockaddr, al: *mut socklen_t) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        if len > buflen {
            return real::__recvfrom_chk(fd, buf, len, buflen, flags, a, al);
        }
        return udp::recvfrom(fd, buf, len, flags, a, al);
    }
    real::__recvfrom_chk(fd, buf, len, buflen, flags, a, al)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::recvfrom(fd, buf, len, 0, core::ptr::null_mut(), core::ptr::null_mut());
    }
    real::read(fd, buf, len)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __read_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        if len > buflen {
            return real::__read_chk(fd, buf, len, buflen);
        }
        return udp::recvfrom(fd, buf, len, 0, core::ptr::null_mut(), core::ptr::null_mut());
    }
    real::__read_chk(fd, buf, len, buflen)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::readv(fd, iov, n);
    }
    real::readv(fd, iov, n)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return send_engine(fd, buf, len, flags);
    }
    real::send(fd, buf, len, flags)
}

/// Out of line, so that the pass-through path of `send` stays a check and a tail call.
#[cold]
#[inline(never)]
unsafe fn send_engine(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    udp::send(fd, buf, len, flags, || real::send(fd, buf, len, flags))
}

#[no_mangle]
pub unsafe extern "C-unwind" fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, a: *const sockaddr, al: socklen_t) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::sendto(fd, buf, len, flags, a, al);
    }
    real::sendto(fd, buf, len, flags, a, al)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::sendmsg(fd, msg, flags);
    }
    real::sendmsg(fd, msg, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::sendmmsg(fd, msgs, vlen, flags);
    }
    real::sendmmsg(fd, msgs, vlen, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return write_engine(fd, buf, len);
    }
    real::write(fd, buf, len)
}

/// Out of line, so that the pass-through path of `write` stays a check and a tail call.
#[cold]
#[inline(never)]
unsafe fn write_engine(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    udp::send(fd, buf, len, 0, || real::write(fd, buf, len))
}

#[no_mangle]
pub unsafe extern "C-unwind" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    if fdtable::is_ours(fd) && udp::datapath_on() {
        return udp::writev(fd, iov, n);
    }
    real::writev(fd, iov, n)
}
