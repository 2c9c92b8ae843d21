//! Logging that can never re-enter a hook.
//!
//! Lines are formatted into a fixed stack buffer and written with a raw `write(2)` system call, so
//! a log line allocates nothing, takes no lock and never passes through our own `write` hook. The
//! destination is stderr or the file named by ACCEL_LOG_FILE/VMA_LOG_FILE (`%d` = pid), re-opened
//! in a forked child so that each process gets its own file.
//!
//! Line format: `accel: <pid> <level>: <message>`.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

use crate::config::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warn as u8);
/// Where lines go; 2 (stderr) until a log file is opened.
static FD: AtomicI32 = AtomicI32::new(2);

/// Raw system calls, bypassing libc (and so our hooks).
pub mod sys {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn syscall3(n: i64, a1: i64, a2: i64, a3: i64) -> i64 {
        let ret: i64;
        // SAFETY: the x86-64 Linux system-call convention; rcx and r11 are clobbered by `syscall`.
        // The callers below pass only valid pointers with their lengths.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n => ret, in("rdi") a1, in("rsi") a2,
                in("rdx") a3, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    pub fn syscall3(n: i64, a1: i64, a2: i64, a3: i64) -> i64 {
        // SAFETY: same contract as above, through libc's generic wrapper.
        let r = unsafe { libc::syscall(n as libc::c_long, a1, a2, a3) };
        if r < 0 {
            -(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) as i64)
        } else {
            r as i64
        }
    }

    pub fn write_all(fd: i32, mut buf: &[u8]) {
        let mut tries = 0;
        while !buf.is_empty() && tries < 16 {
            tries += 1;
            let r = syscall3(libc::SYS_write, fd as i64, buf.as_ptr() as i64, buf.len() as i64);
            if r == -(libc::EINTR as i64) {
                continue;
            }
            if r <= 0 {
                return;
            }
            buf = buf.get(r as usize..).unwrap_or(&[]);
        }
    }

    pub fn getpid() -> u32 {
        syscall3(libc::SYS_getpid, 0, 0, 0) as u32
    }

    /// Opens `path` (NUL-terminated) for appending; returns the fd or -errno.
    pub fn open_append(path: &[u8]) -> i32 {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
        syscall3(libc::SYS_open, path.as_ptr() as i64, flags as i64, 0o644) as i32
    }

    pub fn close(fd: i32) {
        syscall3(libc::SYS_close, fd as i64, 0, 0);
    }
}

#[inline(always)]
pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed) && level != LogLevel::None
}

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// Sends lines to `path` (already `%d`-expanded). On failure lines stay on stderr and the reason
/// is logged there once.
pub fn open_file(path: &str) {
    let mut buf = [0u8; 4096];
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() >= buf.len() || bytes.contains(&0) {
        warn(format_args!("log file {path:?}: unusable path; logging to stderr"));
        return;
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let fd = sys::open_append(&buf[..=bytes.len()]);
    if fd < 0 {
        warn(format_args!(
            "log file {path:?}: cannot open ({}); logging to stderr",
            std::io::Error::from_raw_os_error(-fd)
        ));
        return;
    }
    // Move it out of the range apps usually manage (dup2 onto 3, 4...), keeping O_CLOEXEC.
    let high = sys::syscall3(libc::SYS_fcntl, fd as i64, libc::F_DUPFD_CLOEXEC as i64, 900) as i32;
    let fd = if high >= 0 {
        sys::close(fd);
        high
    } else {
        fd
    };
    let old = FD.swap(fd, Ordering::Relaxed);
    if old != 2 {
        sys::close(old);
    }
}

/// The app is closing (or replacing) our log fd: stop using it, without closing it ourselves.
pub fn forget_fd() {
    FD.store(2, Ordering::Relaxed);
}

/// The fd lines are written to (so that fd-closing hooks can leave it alone).
pub fn fd() -> i32 {
    FD.load(Ordering::Relaxed)
}

/// Back to stderr, closing a log file (used in a forked child before it opens its own).
pub fn reset_to_stderr() {
    let old = FD.swap(2, Ordering::Relaxed);
    if old != 2 {
        sys::close(old);
    }
}

/// A fixed buffer that truncates instead of failing.
struct LineBuf {
    buf: [u8; 1024],
    len: usize,
}

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - 1 - self.len; // keep one byte for '\n'
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::None => "none",
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Fine => "fine",
        LogLevel::Finer => "finer",
    }
}

/// Writes one line if `level` is enabled. errno is preserved.
pub fn log(level: LogLevel, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    // SAFETY: errno is thread-local; saved and restored around the write.
    let saved = unsafe { *libc::__errno_location() };
    let mut line = LineBuf { buf: [0; 1024], len: 0 };
    let _ = write!(line, "accel: {} {}: ", sys::getpid(), level_name(level));
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    sys::write_all(FD.load(Ordering::Relaxed), &line.buf[..=line.len]);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

pub fn error(args: fmt::Arguments<'_>) {
    log(LogLevel::Error, args)
}
pub fn warn(args: fmt::Arguments<'_>) {
    log(LogLevel::Warn, args)
}
pub fn info(args: fmt::Arguments<'_>) {
    log(LogLevel::Info, args)
}
pub fn debug(args: fmt::Arguments<'_>) {
    log(LogLevel::Debug, args)
}

/// A flag for "log this only once per process".
pub struct Once(AtomicBool);

impl Once {
    pub const fn new() -> Once {
        Once(AtomicBool::new(false))
    }
    /// True the first time only.
    pub fn first(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }
}

impl Default for Once {
    fn default() -> Self {
        Once::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_truncates_long_messages() {
        let mut line = LineBuf { buf: [0; 1024], len: 0 };
        let long = "x".repeat(5000);
        let _ = write!(line, "{long}");
        assert_eq!(line.len, 1023);
    }

    #[test]
    fn levels_filter() {
        set_level(LogLevel::Warn);
        assert!(enabled(LogLevel::Error));
        assert!(enabled(LogLevel::Warn));
        assert!(!enabled(LogLevel::Debug));
        assert!(!enabled(LogLevel::None));
    }

    #[test]
    fn once_is_once() {
        let o = Once::new();
        assert!(o.first());
        assert!(!o.first());
    }

    #[test]
    fn raw_getpid_matches_std() {
        assert_eq!(sys::getpid(), std::process::id());
    }
}
