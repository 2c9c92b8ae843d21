//! Name resolution: getaddrinfo, getnameinfo, gethostbyname*, gethostbyaddr*, res_*.
//!
//! Sockets opened while these run belong to the resolver (DNS, nscd, systemd-resolved): they are
//! never accelerated, as with libvma. Each hook marks the thread as resolving for the call.

use libc::{addrinfo, c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};

use accel_engine::guard::ResolverGuard;
use accel_engine::real;

#[no_mangle]
pub unsafe extern "C-unwind" fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int {
    let _r = ResolverGuard::enter();
    real::getaddrinfo(node, service, hints, res)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn getnameinfo(addr: *const sockaddr, alen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::getnameinfo(addr, alen, host, hostlen, serv, servlen, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn gethostbyname(name: *const c_char) -> *mut hostent {
    let _r = ResolverGuard::enter();
    real::gethostbyname(name)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    let _r = ResolverGuard::enter();
    real::gethostbyname2(name, af)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut hostent {
    let _r = ResolverGuard::enter();
    real::gethostbyaddr(addr, len, ty)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::gethostbyaddr_r(addr, len, ty, ret, buf, buflen, result, h_errnop)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn res_query(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::res_query(dname, class, ty, answer, anslen)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn res_search(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::res_search(dname, class, ty, answer, anslen)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::res_querydomain(name, domain, class, ty, answer, anslen)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn res_send(msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int) -> c_int {
    let _r = ResolverGuard::enter();
    real::res_send(msg, msglen, answer, anslen)
}
