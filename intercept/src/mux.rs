//! select, pselect, poll, ppoll, __poll_chk, __ppoll_chk, epoll_create, epoll_create1,
//! epoll_ctl, epoll_wait, epoll_pwait, epoll_pwait2.
//!
//! Every tracked socket is still a real kernel socket and, with no datapath in this version, the
//! kernel holds all of its data; so readiness is the kernel's and these pass straight through.
//! The datapaths add ring readiness here.

use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

use accel_engine::real;

#[no_mangle]
pub unsafe extern "C-unwind" fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, t: *mut timeval) -> c_int {
    real::select(n, r, w, e, t)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, t: *const timespec, m: *const sigset_t) -> c_int {
    real::pselect(n, r, w, e, t, m)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    real::poll(fds, n, timeout)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn ppoll(fds: *mut pollfd, n: nfds_t, t: *const timespec, m: *const sigset_t) -> c_int {
    real::ppoll(fds, n, t, m)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    real::__poll_chk(fds, n, timeout, fdslen)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, t: *const timespec, m: *const sigset_t, fdslen: size_t) -> c_int {
    real::__ppoll_chk(fds, n, t, m, fdslen)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_create(size: c_int) -> c_int {
    real::epoll_create(size)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_create1(flags: c_int) -> c_int {
    real::epoll_create1(flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    real::epoll_ctl(epfd, op, fd, ev)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_wait(epfd: c_int, ev: *mut epoll_event, max: c_int, timeout: c_int) -> c_int {
    real::epoll_wait(epfd, ev, max, timeout)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_pwait(epfd: c_int, ev: *mut epoll_event, max: c_int, timeout: c_int, m: *const sigset_t) -> c_int {
    real::epoll_pwait(epfd, ev, max, timeout, m)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_pwait2(epfd: c_int, ev: *mut epoll_event, max: c_int, t: *const timespec, m: *const sigset_t) -> c_int {
    real::epoll_pwait2(epfd, ev, max, t, m)
}
