//! select, pselect, poll, ppoll, __poll_chk, __ppoll_chk, epoll_create, epoll_create1,
//! epoll_ctl, epoll_wait, epoll_pwait, epoll_pwait2.
//!
//! A socket we accelerate is readable when its shm ring (or stash) holds a datagram for it, not
//! only when the kernel says so, and the kernel may say so for nothing but a doorbell; the engine
//! (`accel_engine::mux`) merges the two and keeps epoll's data straight. These hooks only decide
//! whether the engine is needed: poll/select with no fd of ours in the process go straight
//! through (one load), as does epoll_wait on an epoll fd without entries of ours.

use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

use accel_engine::{fdtable, mux, real, udp};

#[no_mangle]
pub unsafe extern "C-unwind" fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, t: *mut timeval) -> c_int {
    if !fdtable::any() || !udp::datapath_on() {
        return real::select(n, r, w, e, t);
    }
    mux::select(n, r, w, e, t)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, t: *const timespec, m: *const sigset_t) -> c_int {
    if !fdtable::any() || !udp::datapath_on() {
        return real::pselect(n, r, w, e, t, m);
    }
    mux::pselect(n, r, w, e, t, m)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    if !fdtable::any() || !udp::datapath_on() {
        return real::poll(fds, n, timeout);
    }
    mux::poll(fds, n, timeout)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn ppoll(fds: *mut pollfd, n: nfds_t, t: *const timespec, m: *const sigset_t) -> c_int {
    if !fdtable::any() || !udp::datapath_on() {
        return real::ppoll(fds, n, t, m);
    }
    mux::ppoll(fds, n, t, m)
}

/// Fortified poll: glibc aborts if the array is smaller than `n` entries; that check stays
/// glibc's (the real function performs it), the rest is poll.
#[no_mangle]
pub unsafe extern "C-unwind" fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    if !fdtable::any() || !udp::datapath_on() || fdslen / core::mem::size_of::<pollfd>() < n as usize {
        return real::__poll_chk(fds, n, timeout, fdslen);
    }
    mux::poll(fds, n, timeout)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, t: *const timespec, m: *const sigset_t, fdslen: size_t) -> c_int {
    if !fdtable::any() || !udp::datapath_on() || fdslen / core::mem::size_of::<pollfd>() < n as usize {
        return real::__ppoll_chk(fds, n, t, m, fdslen);
    }
    mux::ppoll(fds, n, t, m)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_create(size: c_int) -> c_int {
    let fd = real::epoll_create(size);
    if udp::datapath_on() {
        mux::note_epoll_fd(fd);
    }
    fd
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_create1(flags: c_int) -> c_int {
    let fd = real::epoll_create1(flags);
    if udp::datapath_on() {
        mux::note_epoll_fd(fd);
    }
    fd
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    if !udp::datapath_on() || (!fdtable::is_ours(fd) && !mux::ctl_involved(epfd, fd)) {
        return real::epoll_ctl(epfd, op, fd, ev);
    }
    mux::epoll_ctl(epfd, op, fd, ev)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_wait(epfd: c_int, ev: *mut epoll_event, max: c_int, timeout: c_int) -> c_int {
    if !udp::datapath_on() {
        return real::epoll_wait(epfd, ev, max, timeout);
    }
    mux::epoll_wait(epfd, ev, max, timeout)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_pwait(epfd: c_int, ev: *mut epoll_event, max: c_int, timeout: c_int, m: *const sigset_t) -> c_int {
    if !udp::datapath_on() {
        return real::epoll_pwait(epfd, ev, max, timeout, m);
    }
    mux::epoll_pwait(epfd, ev, max, timeout, m)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_pwait2(epfd: c_int, ev: *mut epoll_event, max: c_int, t: *const timespec, m: *const sigset_t) -> c_int {
    if !udp::datapath_on() {
        return real::epoll_pwait2(epfd, ev, max, t, m);
    }
    mux::epoll_pwait2(epfd, ev, max, t, m)
}
