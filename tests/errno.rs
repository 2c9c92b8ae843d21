//! errno transparency: C probes exercise every hooked call family (error paths, EAGAIN, EINTR,
//! success paths, syscall()) and must print exactly the same with and without the library.

mod common;

use common::*;
use std::path::Path;

/// Compares two probe outputs line by line; panics listing every differing line.
#[track_caller]
fn assert_same_lines(what: &str, plain: &str, preload: &str) {
    let a: Vec<&str> = plain.lines().collect();
    let b: Vec<&str> = preload.lines().collect();
    let mut diffs = Vec::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            diffs.push(format!(
                "  line {}: plain {:?} | preload {:?}",
                i + 1,
                x.unwrap_or("<missing>"),
                y.unwrap_or("<missing>")
            ));
        }
    }
    if !diffs.is_empty() {
        panic!(
            "{what}: {} of {} lines differ with the library preloaded:\n{}",
            diffs.len(),
            a.len().max(b.len()),
            diffs.join("\n")
        );
    }
}

/// Runs a probe; returns its stdout followed by an `exit: <status>` line (so a crash shows up in
/// the line-by-line comparison after the last case that still ran), and its stderr.
fn probe_output(cx: &Ctx, exe: &Path, name: &str) -> (String, String) {
    let out = cx.run(cx.command(exe), name, None);
    (
        format!("{}exit: {}\n", out.stdout_text(), out.status),
        out.stderr,
    )
}

/// errno_probe prints the same ~320 `name ret errno` lines plain and preloaded.
#[test]
fn errno_probe_identical() {
    let build = TempDir::new("errno-build");
    let exe = compile_probe("errno_probe.c", build.path());
    let t = run_twice("errno_probe", |cx| probe_output(cx, &exe, "errno_probe").0);
    let lines = t.plain.lines().count();
    assert!(
        lines > 250 && t.plain.ends_with("done\nexit: exit status: 0\n"),
        "the plain run printed only {lines} lines:\n{}",
        t.plain
    );
    assert_same_lines("errno_probe", &t.plain, &t.preload);
    t.logs.assert_loaded_into(&exe, 1);
    // The probe binds UDP sockets: the library must have seen them.
    t.logs.assert_decision(&["udp bind", "-> accel"]);
}

/// At the default log level (no ACCEL_LOG_* variables) the library is silent: stdout and stderr
/// of the probe are identical to the plain run's.
#[test]
fn errno_probe_default_log_level_is_silent() {
    let build = TempDir::new("errno-quiet-build");
    let exe = compile_probe("errno_probe.c", build.path());
    let lib = lib_path();
    let cx = Ctx::new(Mode::Plain, "errno_quiet");
    let plain = probe_output(&cx, &exe, "plain");
    assert!(
        plain.0.ends_with("done\nexit: exit status: 0\n"),
        "{}",
        plain.0
    );
    let mut cmd = cx.command(&exe);
    cmd.env("LD_PRELOAD", &lib);
    let out = cx.run(cmd, "preload", None);
    let preload = format!("{}exit: {}\n", out.stdout_text(), out.status);
    assert_eq!(
        out.stderr, plain.1,
        "the library wrote to stderr at the default log level"
    );
    assert_same_lines("errno_probe stdout", &plain.0, &preload);
}

/// syscall(SYS_socket) + syscall(SYS_bind): the library logs a decision for that socket too (and,
/// as a control, for the socket made through the libc wrappers).
#[test]
fn syscall_socket_is_seen() {
    let build = TempDir::new("syscall-build");
    let exe = compile_probe("syscall_probe.c", build.path());
    let t = run_twice("syscall_probe", |cx| {
        let (sys_port, libc_port) = (free_port(), free_port());
        let mut cmd = cx.command(&exe);
        cmd.arg(sys_port.to_string()).arg(libc_port.to_string());
        let out = cx.run(cmd, "syscall_probe", None);
        out.assert_success();
        if cx.mode == Mode::Preload {
            let logs = cx.logs();
            logs.assert_decision(&["udp bind", &format!("127.0.0.1:{libc_port}")]);
            logs.assert_decision(&["udp bind", &format!("127.0.0.1:{sys_port}")]);
        }
        out.stdout_text()
    });
    assert!(t.plain.contains("received pong"), "{}", t.plain);
    assert_eq!(t.plain, t.preload);
    t.logs.assert_loaded_into(&exe, 1);
}

/// Four threads churn through UDP sockets concurrently (fd numbers reused across threads, dup2
/// moves): every datagram comes back intact, plain and preloaded.
#[test]
fn threaded_socket_churn() {
    let build = TempDir::new("threads-build");
    let exe = compile_probe("threads_probe.c", build.path());
    let t = run_twice("threads_probe", |cx| {
        let mut cmd = cx.command(&exe);
        cmd.args(["4", "5000"]);
        let out = cx.run(cmd, "threads_probe", None);
        format!("{}exit: {}\n", out.stdout_text(), out.status)
    });
    assert!(
        t.plain.contains("threads ok\nexit: exit status: 0"),
        "{}",
        t.plain
    );
    assert_same_lines("threads_probe", &t.plain, &t.preload);
    t.logs.assert_loaded_into(&exe, 1);
}
