//! vfork, the exec family and posix_spawn.
//!
//! - `fork` needs no hook: pthread_atfork handlers (registered by the engine) keep the fd table
//!   lock sane in the child.
//! - `vfork` becomes `fork`: a vfork child shares our memory with its parent, so any hook it runs
//!   before exec (a close, a dup2) would change the parent's fd table. Onload's default does the
//!   same. (POSIX lets a vfork child do nothing but exec or _exit, so a program cannot tell.)
//! - The exec family and posix_spawn pass an environment that still loads us (engine::exec).
//!   `system` and `popen` spawn through glibc internals with the current environment, so for
//!   their duration the process environment itself gets back what the program removed.
//!   execl, execlp and execle are variadic: a small C shim (exec_shim.c) collects their
//!   arguments and calls execv/execvp/execve here; the exported names are naked jumps into it.

use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};

use accel_engine::engine::{after_failed_exec, before_exec};
use accel_engine::exec::fix_env;
use accel_engine::real;

extern "C" {
    static environ: *const *const c_char;
}

#[no_mangle]
pub unsafe extern "C-unwind" fn vfork() -> pid_t {
    real::fork()
}

#[no_mangle]
pub unsafe extern "C-unwind" fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let fixed = fix_env(envp);
    let withdrawn = before_exec();
    let r = real::execve(path, argv, fixed.as_ref().map_or(envp, |b| b.as_ptr()));
    after_failed_exec(withdrawn); // only reached if exec failed
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    execve(path, argv, environ)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let fixed = fix_env(envp);
    let withdrawn = before_exec();
    let r = real::execvpe(file, argv, fixed.as_ref().map_or(envp, |b| b.as_ptr()));
    after_failed_exec(withdrawn); // only reached if exec failed
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    execvpe(file, argv, environ)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn execveat(dirfd: c_int, path: *const c_char, argv: *const *const c_char, envp: *const *const c_char, flags: c_int) -> c_int {
    let fixed = fix_env(envp);
    let withdrawn = before_exec();
    let r = real::execveat(dirfd, path, argv, fixed.as_ref().map_or(envp, |b| b.as_ptr()), flags);
    after_failed_exec(withdrawn); // only reached if exec failed
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
    let fixed = fix_env(envp);
    let withdrawn = before_exec();
    let r = real::fexecve(fd, argv, fixed.as_ref().map_or(envp, |b| b.as_ptr()));
    after_failed_exec(withdrawn); // only reached if exec failed
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let fixed = fix_env(envp as *const *const c_char);
    let env = fixed.as_ref().map_or(envp, |b| b.as_ptr() as *const *mut c_char);
    real::posix_spawn(pid, path, actions, attr, argv, env)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let fixed = fix_env(envp as *const *const c_char);
    let env = fixed.as_ref().map_or(envp, |b| b.as_ptr() as *const *mut c_char);
    real::posix_spawnp(pid, file, actions, attr, argv, env)
}

/// While a datapath is on, handlers go through accel_engine::signals' wrapper, so that a receive
/// spinning in user space returns EINTR when one without SA_RESTART runs.
#[no_mangle]
pub unsafe extern "C-unwind" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if !accel_engine::udp::datapath_on() {
        return real::sigaction(sig, act, old);
    }
    let wrapped = accel_engine::signals::wrap(sig, act);
    let r = real::sigaction(sig, wrapped.as_ref().map_or(act, |w| w as *const libc::sigaction), old);
    if r == 0 {
        accel_engine::signals::unwrap_old(sig, old);
    }
    r
}

#[no_mangle]
pub unsafe extern "C-unwind" fn system(command: *const c_char) -> c_int {
    let _patch = accel_engine::exec::EnvPatch::apply();
    real::system(command)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn popen(command: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    let _patch = accel_engine::exec::EnvPatch::apply();
    real::popen(command, mode)
}

// The variadic execl family: exported names jump, registers and stack untouched, into C.
extern "C" {
    fn accel_shim_execl();
    fn accel_shim_execlp();
    fn accel_shim_execle();
}

#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn execl() {
    core::arch::naked_asm!("jmp {}", sym accel_shim_execl)
}

#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn execlp() {
    core::arch::naked_asm!("jmp {}", sym accel_shim_execlp)
}

#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn execle() {
    core::arch::naked_asm!("jmp {}", sym accel_shim_execle)
}
