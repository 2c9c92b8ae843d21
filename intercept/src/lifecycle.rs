//! socket, socketpair, bind, listen, accept, accept4, connect, shutdown, close, close_range,
//! closefrom, getsockname, getpeername, getsockopt, setsockopt.

use libc::{c_int, c_uint, c_void, sockaddr, socklen_t};

use accel_engine::engine::{self, sockaddr_v4};
use accel_engine::rules::Role;
use accel_engine::{fdtable, guard, log, mux, real, udp};

#[no_mangle]
pub unsafe extern "C-unwind" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let fd = real::socket(domain, ty, protocol);
    if fd >= 0 && !guard::in_engine() {
        engine::on_socket(fd, domain, ty, protocol);
    }
    fd
}

#[no_mangle]
pub unsafe extern "C-unwind" fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int {
    real::socketpair(domain, ty, protocol, sv)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if fdtable::is_ours(fd) {
        if let Some(s) = fdtable::get(fd) {
            let r = real::bind(fd, addr, len);
            engine::after_bind(fd, &s, r);
            return r;
        }
    }
    real::bind(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let r = real::listen(fd, backlog);
    engine::observe_tcp(fd, Role::TcpServer, None, r);
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    real::accept(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    real::accept4(fd, addr, len, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if fdtable::is_ours(fd) {
        if let Some(s) = fdtable::get(fd) {
            let r = real::connect(fd, addr, len);
            engine::after_connect(fd, &s, addr, len, r);
            return r;
        }
    }
    let r = real::connect(fd, addr, len);
    if log::enabled(accel_engine::config::LogLevel::Debug) {
        engine::observe_tcp(fd, Role::TcpClient, sockaddr_v4(addr, len), r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let r = real::shutdown(fd, how);
    if fdtable::is_ours(fd) {
        engine::after_shutdown(fd, how, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn close(fd: c_int) -> c_int {
    if fdtable::is_ours(fd) || fd == log::fd() {
        engine::before_close(fd);
    }
    if udp::datapath_on() {
        mux::forget_fd(fd); // epoll fds and their members are not all "ours"
    }
    real::close(fd)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    engine::before_close_range(first, last, flags);
    if udp::datapath_on() && flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 {
        mux::forget_range(first, last);
    }
    real::close_range(first, last, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn closefrom(lowfd: c_int) {
    engine::before_close_range(lowfd.max(0) as c_uint, c_uint::MAX, 0);
    if udp::datapath_on() {
        mux::forget_range(lowfd.max(0) as u32, u32::MAX);
    }
    real::closefrom(lowfd)
}

/// glibc sets the filter with a setsockopt inside libc that the hook above never sees: the
/// call itself is followed.
#[no_mangle]
pub unsafe extern "C-unwind" fn setipv4sourcefilter(
    fd: c_int,
    iface: libc::in_addr,
    group: libc::in_addr,
    mode: u32,
    count: u32,
    list: *const libc::in_addr,
) -> c_int {
    let r = real::setipv4sourcefilter(fd, iface, group, mode, count, list);
    if r == 0 && fdtable::is_ours(fd) {
        if let Some(s) = fdtable::get(fd) {
            engine::after_ipv4_source_filter(fd, &s, iface, group, mode, count, list);
        }
    }
    r
}

/// As [`setipv4sourcefilter`], protocol-independent (MCAST_MSFILTER inside libc).
#[no_mangle]
pub unsafe extern "C-unwind" fn setsourcefilter(
    fd: c_int,
    iface: u32,
    group: *const sockaddr,
    group_len: socklen_t,
    mode: u32,
    count: u32,
    list: *const libc::sockaddr_storage,
) -> c_int {
    let r = real::setsourcefilter(fd, iface, group, group_len, mode, count, list);
    if r == 0 && fdtable::is_ours(fd) {
        if let Some(s) = fdtable::get(fd) {
            engine::after_source_filter(fd, &s, iface, group, group_len, mode, count, list);
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    real::getsockname(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    real::getpeername(fd, addr, len)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int {
    let r = real::getsockopt(fd, level, name, val, len);
    if r == 0 && level == libc::SOL_SOCKET && name == libc::SO_ERROR && fdtable::is_ours(fd) {
        engine::after_get_so_error(fd, val, len);
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int {
    let r = real::setsockopt(fd, level, name, val, len);
    if r == 0 && fdtable::is_ours(fd) {
        if let Some(s) = fdtable::get(fd) {
            engine::after_setsockopt(fd, &s, level, name);
            if level == libc::IPPROTO_IP && engine::is_membership_option(name) {
                engine::after_membership(fd, &s, name, val, len);
            }
        }
    }
    r
}
