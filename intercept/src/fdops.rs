//! dup, dup2, dup3, fcntl, fcntl64, ioctl: keep the fd table in step with the kernel's.
//!
//! fcntl and ioctl are variadic in C; stable Rust cannot define variadic functions, so the third
//! argument is taken as an `unsigned long`. On x86-64 a variadic call passes it in the same
//! register, and every fcntl/ioctl argument is an int, a long or a pointer.

use libc::{c_int, c_ulong};

use accel_engine::{engine, fdtable, log, mux, real, udp};

#[no_mangle]
pub unsafe extern "C-unwind" fn dup(fd: c_int) -> c_int {
    let r = real::dup(fd);
    if fdtable::is_ours(fd) {
        engine::after_dup(fd, r);
    }
    if r >= 0 && udp::datapath_on() {
        mux::dup_fd(fd, r); // a dup of an epoll fd shares its shadow
    }
    r
}

#[inline(always)]
fn touches_ours(old: c_int, new: c_int) -> bool {
    fdtable::is_ours(old) || fdtable::is_ours(new) || new == log::fd()
}

#[no_mangle]
pub unsafe extern "C-unwind" fn dup2(old: c_int, new: c_int) -> c_int {
    if !touches_ours(old, new) && !udp::datapath_on() {
        return real::dup2(old, new);
    }
    dup2_tracked(old, new, || real::dup2(old, new))
}

/// dup2/dup3 when the fd table or the multiplexing shadows may be involved.
#[inline(never)]
unsafe fn dup2_tracked(old: c_int, new: c_int, call: impl FnOnce() -> c_int) -> c_int {
    let mux_on = udp::datapath_on() && old != new;
    engine::before_dup2(old, new);
    if mux_on {
        mux::forget_fd(new); // the implicit close of `new`
    }
    let r = call();
    engine::after_dup2(old, new, r);
    if mux_on && r >= 0 {
        mux::dup_fd(old, new);
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if (!touches_ours(old, new) && !udp::datapath_on()) || old == new {
        return real::dup3(old, new, flags); // dup3(x, x) is EINVAL, before anything changes
    }
    dup2_tracked(old, new, || real::dup3(old, new, flags))
}

/// The shared body of fcntl and fcntl64 (the same function on 64-bit glibc).
#[inline(always)]
unsafe fn fcntl_common(fd: c_int, cmd: c_int, arg: c_ulong, call: unsafe fn(c_int, c_int, c_ulong) -> c_int) -> c_int {
    // The pass-through (no dup, not ours) is a tail call.
    let dup = cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC;
    if !fdtable::is_ours(fd) && !dup {
        return call(fd, cmd, arg);
    }
    fcntl_tracked(fd, cmd, arg, call)
}

#[cold]
#[inline(never)]
unsafe fn fcntl_tracked(fd: c_int, cmd: c_int, arg: c_ulong, call: unsafe fn(c_int, c_int, c_ulong) -> c_int) -> c_int {
    if !fdtable::is_ours(fd) {
        let r = call(fd, cmd, arg);
        if r >= 0 && udp::datapath_on() {
            mux::dup_fd(fd, r);
        }
        return r;
    }
    let r = call(fd, cmd, arg);
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) && udp::datapath_on() {
        mux::dup_fd(fd, r);
    }
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => engine::after_dup(fd, r),
        libc::F_SETFL if r == 0 => engine::set_nonblocking(fd, arg as c_int & libc::O_NONBLOCK != 0),
        _ => {}
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real::fcntl)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real::fcntl64)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    let r = real::ioctl(fd, request, arg);
    if r == 0 && arg != 0 && fdtable::is_ours(fd) {
        match request {
            libc::FIONBIO => engine::set_nonblocking(fd, *(arg as *const c_int) != 0),
            // The kernel counts only its own queue: a datagram waiting in the ring counts too.
            libc::FIONREAD if udp::datapath_on() && *(arg as *const c_int) == 0 => {
                if let Some(n) = fdtable::get(fd).and_then(|s| udp::next_bypass_len(&s)) {
                    *(arg as *mut c_int) = n.min(c_int::MAX as usize) as c_int;
                }
            }
            _ => {}
        }
    }
    r
}
