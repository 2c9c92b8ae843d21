//! The real libc functions behind every hook.
//!
//! Each symbol is looked up with `dlsym(RTLD_NEXT, name)` — the next definition after the object
//! that holds this code, i.e. libc's when we are preloaded, and libc's too in unit tests. All of
//! them are resolved eagerly by [`resolve_all`] from the library constructor, and lazily on first
//! use, because another library's constructor may call `socket()` before ours has run.
//!
//! A symbol this libc does not have (an older glibc without `epoll_pwait2`, say) makes its wrapper
//! fail with `ENOSYS`, as a libc without it would have failed to link.
//!
//! The wrappers are `unsafe`: they are the libc functions, with libc's contracts. They are called
//! through `extern "C-unwind"` pointers because glibc cancels a thread blocked in `recv` (say) by
//! unwinding its stack, and that unwind must pass through our frames as it passes through libc's.

use core::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void, CStr};
use core::sync::atomic::{AtomicPtr, Ordering};

use libc::{
    epoll_event, fd_set, iovec, mmsghdr, msghdr, nfds_t, pid_t, pollfd, posix_spawn_file_actions_t,
    posix_spawnattr_t, sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec, timeval,
};

/// One lazily resolved symbol.
pub struct Sym {
    name: &'static CStr,
    /// `Some(v)` resolves with `dlvsym(name, v)`: for symbols with several versions in glibc.
    version: Option<&'static CStr>,
    ptr: AtomicPtr<c_void>,
}

/// Marks a symbol that was looked up and is absent, so the lookup is not repeated.
const MISSING: *mut c_void = core::ptr::dangling_mut::<c_void>();

impl Sym {
    pub const fn new(name: &'static CStr, version: Option<&'static CStr>) -> Sym {
        Sym { name, version, ptr: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// The function's address, or None if this libc lacks it.
    #[inline(always)]
    pub fn get(&self) -> Option<*mut c_void> {
        let p = self.ptr.load(Ordering::Relaxed);
        if p.is_null() {
            return self.resolve();
        }
        if p == MISSING {
            None
        } else {
            Some(p)
        }
    }

    #[cold]
    #[inline(never)]
    fn resolve(&self) -> Option<*mut c_void> {
        // SAFETY: dlsym/dlvsym with RTLD_NEXT and NUL-terminated names; they neither call back
        // into our hooks nor keep the pointers. Racing resolvers store the same value.
        let p = unsafe {
            match self.version {
                Some(v) => libc::dlvsym(libc::RTLD_NEXT, self.name.as_ptr(), v.as_ptr()),
                None => libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()),
            }
        };
        self.ptr.store(if p.is_null() { MISSING } else { p }, Ordering::Relaxed);
        if p.is_null() {
            None
        } else {
            Some(p)
        }
    }

    pub fn name(&self) -> &'static CStr {
        self.name
    }
}

#[inline(always)]
fn enosys() {
    // SAFETY: errno is thread-local; writing it is always allowed.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
}

/// Declares `pub unsafe fn name(args) -> ret` calling the real symbol, plus its [`Sym`] in
/// [`ALL`]. `fail` is what a missing symbol returns (with errno = ENOSYS).
macro_rules! real_fns {
    ($( $(#[version = $ver:literal])? fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty = $fail:expr; )*) => {
        #[allow(non_upper_case_globals)]
        pub mod sym {
            use super::Sym;
            $( pub static $name: Sym = Sym::new(
                match core::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(s) => s,
                    Err(_) => panic!("bad symbol name"),
                },
                real_fns!(@ver $($ver)?),
            ); )*
        }

        /// Every symbol, for eager resolution and diagnostics.
        pub static ALL: &[&Sym] = &[ $( &sym::$name ),* ];

        $(
            /// The real libc function.
            ///
            /// # Safety
            /// The libc function's own contract.
            #[inline(always)]
            #[allow(clippy::too_many_arguments)] // libc's signature
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                match sym::$name.get() {
                    Some(p) => {
                        let f: unsafe extern "C-unwind" fn($($ty),*) -> $ret = core::mem::transmute(p);
                        f($($arg),*)
                    }
                    None => {
                        enosys();
                        $fail
                    }
                }
            }
        )*
    };
    (@ver $ver:literal) => {
        Some(match core::ffi::CStr::from_bytes_with_nul(concat!($ver, "\0").as_bytes()) {
            Ok(s) => s,
            Err(_) => panic!("bad version"),
        })
    };
    (@ver) => { None };
}

real_fns! {
    // lifecycle
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int = -1;
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int = -1;
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = -1;
    fn listen(fd: c_int, backlog: c_int) -> c_int = -1;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = -1;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int = -1;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int = -1;
    fn shutdown(fd: c_int, how: c_int) -> c_int = -1;
    fn close(fd: c_int) -> c_int = -1;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int = -1;
    fn closefrom(lowfd: c_int) -> () = ();
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = -1;
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int = -1;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int = -1;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int = -1;
    fn setipv4sourcefilter(fd: c_int, iface: libc::in_addr, group: libc::in_addr, mode: u32, count: u32, list: *const libc::in_addr) -> c_int = -1;
    fn setsourcefilter(fd: c_int, iface: u32, group: *const sockaddr, group_len: socklen_t, mode: u32, count: u32, list: *const libc::sockaddr_storage) -> c_int = -1;
    // receive
    fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t = -1;
    fn recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t = -1;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = -1;
    fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int = -1;
    fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int) -> ssize_t = -1;
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t = -1;
    fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t = -1;
    fn __read_chk(fd: c_int, buf: *mut c_void, len: size_t, buflen: size_t) -> ssize_t = -1;
    fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t = -1;
    // send
    fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t = -1;
    fn sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t = -1;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t = -1;
    fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int = -1;
    fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t = -1;
    fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t = -1;
    // multiplexing
    fn select(nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *mut timeval) -> c_int = -1;
    fn pselect(nfds: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *const timespec, mask: *const sigset_t) -> c_int = -1;
    fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int = -1;
    fn ppoll(fds: *mut pollfd, nfds: nfds_t, timeout: *const timespec, mask: *const sigset_t) -> c_int = -1;
    fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: size_t) -> c_int = -1;
    fn __ppoll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: *const timespec, mask: *const sigset_t, fdslen: size_t) -> c_int = -1;
    fn epoll_create(size: c_int) -> c_int = -1;
    fn epoll_create1(flags: c_int) -> c_int = -1;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int = -1;
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int) -> c_int = -1;
    fn epoll_pwait(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: c_int, mask: *const sigset_t) -> c_int = -1;
    fn epoll_pwait2(epfd: c_int, events: *mut epoll_event, maxevents: c_int, timeout: *const timespec, mask: *const sigset_t) -> c_int = -1;
    // fd operations
    fn dup(fd: c_int) -> c_int = -1;
    fn dup2(old: c_int, new: c_int) -> c_int = -1;
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int = -1;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int = -1;
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int = -1;
    fn ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int = -1;
    // process
    fn fork() -> pid_t = -1;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int = -1;
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int = -1;
    fn execveat(dirfd: c_int, path: *const c_char, argv: *const *const c_char, envp: *const *const c_char, flags: c_int) -> c_int = -1;
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int = -1;
    #[version = "GLIBC_2.15"]
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int = libc::ENOSYS;
    #[version = "GLIBC_2.15"]
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int = libc::ENOSYS;
    fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int = -1;
    fn system(command: *const c_char) -> c_int = -1;
    fn popen(command: *const c_char, mode: *const c_char) -> *mut libc::FILE = core::ptr::null_mut();
    fn syscall(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long = -1;
    // name resolution (their sockets are never accelerated)
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const libc::addrinfo, res: *mut *mut libc::addrinfo) -> c_int = libc::EAI_SYSTEM;
    fn getnameinfo(addr: *const sockaddr, alen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int = libc::EAI_SYSTEM;
    fn gethostbyname(name: *const c_char) -> *mut libc::hostent = core::ptr::null_mut();
    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent = core::ptr::null_mut();
    fn gethostbyname_r(name: *const c_char, ret: *mut libc::hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int = libc::ENOSYS;
    fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut libc::hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int = libc::ENOSYS;
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut libc::hostent = core::ptr::null_mut();
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut libc::hostent, buf: *mut c_char, buflen: size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int = libc::ENOSYS;
    fn res_query(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int = -1;
    fn res_search(dname: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int = -1;
    fn res_querydomain(name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut u8, anslen: c_int) -> c_int = -1;
    fn res_send(msg: *const u8, msglen: c_int, answer: *mut u8, anslen: c_int) -> c_int = -1;
}

/// Resolves every symbol now (from the library constructor).
pub fn resolve_all() {
    for s in ALL {
        let _ = s.get();
    }
}

/// Symbols this libc does not provide (for `accel doctor` and the start-up log).
pub fn missing() -> impl Iterator<Item = &'static CStr> {
    ALL.iter().filter(|s| s.get().is_none()).map(|s| s.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_libc_functions() {
        resolve_all();
        assert!(sym::socket.get().is_some());
        assert!(sym::recvmmsg.get().is_some());
        assert!(sym::posix_spawn.get().is_some(), "dlvsym GLIBC_2.15");
    }

    #[test]
    fn calls_through_with_errno() {
        // SAFETY: close(-1) only sets errno.
        let r = unsafe { close(-1) };
        assert_eq!(r, -1);
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn missing_symbol_is_enosys() {
        static NOPE: Sym = Sym::new(c"accel_no_such_function", None);
        assert!(NOPE.get().is_none());
        assert!(NOPE.get().is_none(), "cached as missing");
    }
}
