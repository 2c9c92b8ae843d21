//! `syscall()`: programs (and runtimes such as Go's cgo or Java's) that issue socket calls through
//! the generic entry point are routed to the same hooks as the named functions, so the fd table
//! sees them. Every other number goes straight to libc.
//!
//! `syscall` is variadic in C; on x86-64 its six arguments sit where six fixed ones would (the
//! sixth argument of the call is the seventh parameter, on the stack, which glibc's own
//! implementation also reads unconditionally).

use libc::{c_int, c_long, c_uint, c_ulong};

use crate::{data, fdops, lifecycle};
use accel_engine::real;

#[no_mangle]
pub unsafe extern "C-unwind" fn syscall(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long {
    let i = |x: c_long| x as c_int;
    // A pointer argument, typed by the hook it is passed to.
    macro_rules! p {
        ($x:expr) => {
            $x as usize as *mut _
        };
    }
    match n {
        libc::SYS_socket => lifecycle::socket(i(a1), i(a2), i(a3)) as c_long,
        libc::SYS_bind => lifecycle::bind(i(a1), p!(a2), a3 as _) as c_long,
        libc::SYS_connect => lifecycle::connect(i(a1), p!(a2), a3 as _) as c_long,
        libc::SYS_listen => lifecycle::listen(i(a1), i(a2)) as c_long,
        libc::SYS_close => lifecycle::close(i(a1)) as c_long,
        libc::SYS_close_range => lifecycle::close_range(a1 as c_uint, a2 as c_uint, i(a3)) as c_long,
        libc::SYS_dup => fdops::dup(i(a1)) as c_long,
        libc::SYS_dup2 => fdops::dup2(i(a1), i(a2)) as c_long,
        libc::SYS_dup3 => fdops::dup3(i(a1), i(a2), i(a3)) as c_long,
        libc::SYS_fcntl => fdops::fcntl(i(a1), i(a2), a3 as c_ulong) as c_long,
        libc::SYS_ioctl => fdops::ioctl(i(a1), a2 as c_ulong, a3 as c_ulong) as c_long,
        libc::SYS_setsockopt => lifecycle::setsockopt(i(a1), i(a2), i(a3), p!(a4), a5 as _) as c_long,
        libc::SYS_recvfrom => data::recvfrom(i(a1), p!(a2), a3 as usize, i(a4), p!(a5), p!(a6)) as c_long,
        libc::SYS_recvmsg => data::recvmsg(i(a1), p!(a2), i(a3)) as c_long,
        libc::SYS_recvmmsg => data::recvmmsg(i(a1), p!(a2), a3 as c_uint, i(a4), p!(a5)) as c_long,
        libc::SYS_sendto => data::sendto(i(a1), p!(a2), a3 as usize, i(a4), p!(a5), a6 as _) as c_long,
        libc::SYS_sendmsg => data::sendmsg(i(a1), p!(a2), i(a3)) as c_long,
        libc::SYS_sendmmsg => data::sendmmsg(i(a1), p!(a2), a3 as c_uint, i(a4)) as c_long,
        libc::SYS_read => data::read(i(a1), p!(a2), a3 as usize) as c_long,
        libc::SYS_write => data::write(i(a1), p!(a2), a3 as usize) as c_long,
        libc::SYS_readv => data::readv(i(a1), p!(a2), i(a3)) as c_long,
        libc::SYS_writev => data::writev(i(a1), p!(a2), i(a3)) as c_long,
        libc::SYS_execve => crate::process::execve(p!(a1), p!(a2), p!(a3)) as c_long,
        libc::SYS_execveat => crate::process::execveat(i(a1), p!(a2), p!(a3), p!(a4), i(a5)) as c_long,
        _ => real::syscall(n, a1, a2, a3, a4, a5, a6),
    }
}
