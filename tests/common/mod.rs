//! Shared helpers for the root package's integration tests.
//!
//! Every transparency test runs a scenario twice: once plain (no LD_PRELOAD) and once with
//! `libaccel.so` preloaded at debug log level, each process logging into its own
//! `accel.<pid>.log` file in a per-run directory. The test then asserts both runs produced the
//! same result and that the library really was loaded into the programs of the preloaded run.
//!
//! Policy: a missing library or a missing tool is a test FAILURE, never a skip. Every wait is
//! bounded; every process a test starts is killed (by its process group, which is its pid) when
//! its guard is dropped, also when the test panics.
//!
//! Only std (+ libc, already a dependency of the package) is used.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for any one child process of a test.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a server to start listening / to bind its port.
pub const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Locations: the repository, the library, tools.

/// The repository root (the root package's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The preload library under test: `$ACCEL_LIB`, else `<repo>/target/release/libaccel.so`.
/// Panics (test failure) when it does not exist.
pub fn lib_path() -> PathBuf {
    let (p, from_env) = match std::env::var_os("ACCEL_LIB") {
        Some(v) if !v.is_empty() => (PathBuf::from(v), true),
        _ => (repo_root().join("target/release/libaccel.so"), false),
    };
    if !p.is_file() {
        panic!(
            "the preload library {} does not exist: run `cargo build --release --workspace` \
             first (or set ACCEL_LIB to the library to test)",
            p.display()
        );
    }
    let p = fs::canonicalize(&p).unwrap_or(p);
    static STALE_CHECK: std::sync::Once = std::sync::Once::new();
    if !from_env {
        STALE_CHECK.call_once(|| warn_if_stale(&p));
    }
    p
}

/// Prints a warning when a source file of the library is newer than the library (a stale build
/// makes test results misleading). Not a failure: other people may be editing right now.
fn warn_if_stale(lib: &Path) {
    let Ok(lib_mtime) = fs::metadata(lib).and_then(|m| m.modified()) else {
        return;
    };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for dir in ["intercept/src", "accel/src"] {
        visit_files(&repo_root().join(dir), &mut |p| {
            if let Ok(t) = fs::metadata(p).and_then(|m| m.modified()) {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, p.to_path_buf()));
                }
            }
        });
    }
    if let Some((t, p)) = newest {
        if t > lib_mtime {
            eprintln!(
                "WARNING: {} is newer than {}; the library may be stale \
                 (run `cargo build --release --workspace`)",
                p.display(),
                lib.display()
            );
        }
    }
}

fn visit_files(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            visit_files(&p, f);
        } else {
            f(&p);
        }
    }
}

/// The absolute path of `tool` found in PATH. Panics (test failure) when it is missing.
pub fn which(tool: &str) -> PathBuf {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        if is_executable(&p) {
            return p;
        }
    } else if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(tool);
            if is_executable(&p) {
                return p;
            }
        }
    }
    panic!("required tool `{tool}` not found in PATH: run scripts/setup.sh");
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| {
        m.is_file() && m.permissions().mode() & 0o111 != 0
    })
}

/// The system python3. Preferred over PATH's python3, which may be a pyenv shim (a shell script
/// that runs further programs before the interpreter).
pub fn python3() -> PathBuf {
    let sys = PathBuf::from("/usr/bin/python3");
    if is_executable(&sys) {
        sys
    } else {
        which("python3")
    }
}

/// The names under which the library may report `program` in its "loaded into" line: the
/// basename of the path as given and the basename of the resolved executable (e.g. `nc` and
/// `nc.openbsd`, `python3` and `python3.11`, `sh` and `dash`).
pub fn prog_names(program: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(n) = program.file_name() {
        v.push(n.to_string_lossy().into_owned());
    }
    if let Ok(real) = fs::canonicalize(program) {
        if let Some(n) = real.file_name() {
            let n = n.to_string_lossy().into_owned();
            if !v.contains(&n) {
                v.push(n);
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Randomness, data, temporary directories.

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random u64 (std's RandomState keys are random per process; mixed with a counter and time).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures are reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Asserts two byte strings are equal without printing megabytes on failure.
#[track_caller]
pub fn assert_same_bytes(what: &str, got: &[u8], expected: &[u8]) {
    if got != expected {
        let first = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: got {} bytes, expected {} bytes; first difference at offset {first}",
            got.len(),
            expected.len()
        );
    }
}

/// A directory under the system temp dir, removed on drop (kept, and its path printed, when the
/// thread is panicking, so logs of a failed test can be inspected; also kept when
/// ACCEL_TEST_KEEP is set).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "accel-test-{tag}-{}-{n}-{:04x}",
            std::process::id(),
            random_u64() & 0xffff
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("ACCEL_TEST_KEEP").is_some() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ports.

static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that is free for both TCP and UDP right now, from 20000..32000 (below the
/// ephemeral range, so outgoing connections of concurrent tests do not take it), never handed
/// out twice within one test binary.
pub fn free_port() -> u16 {
    for _ in 0..2000 {
        let port = 20000 + (random_u64() % 12000) as u16;
        {
            let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
            let used = used.get_or_insert_with(HashSet::new);
            if used.contains(&port) {
                continue;
            }
            let bindable = {
                let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
                let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
                tcp.is_ok() && udp.is_ok()
            };
            // Also not in use in any state (e.g. TIME_WAIT of an earlier connection).
            if bindable && !port_in_proc_net(port) {
                used.insert(port);
                return port;
            }
        }
    }
    panic!("no free port found in 20000..32000");
}

/// Whether any socket (any state, TCP or UDP, v4 or v6) uses `port` as its local port.
fn port_in_proc_net(port: u16) -> bool {
    ["tcp", "tcp6", "udp", "udp6"]
        .iter()
        .any(|t| !proc_net_sockets(t, port).is_empty())
}

/// States (hex strings) of the sockets in /proc/net/<table> whose local port is `port`.
fn proc_net_sockets(table: &str, port: u16) -> Vec<String> {
    let Ok(text) = fs::read_to_string(format!("/proc/net/{table}")) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 {
            continue;
        }
        let Some((_, p)) = cols[1].rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() == Some(port) {
            v.push(cols[3].to_string());
        }
    }
    v
}

/// Whether some TCP socket listens on `port`.
pub fn tcp_listening(port: u16) -> bool {
    ["tcp", "tcp6"]
        .iter()
        .any(|t| proc_net_sockets(t, port).iter().any(|st| st == "0A"))
}

/// Whether some UDP socket is bound to `port`.
pub fn udp_bound(port: u16) -> bool {
    ["udp", "udp6"]
        .iter()
        .any(|t| !proc_net_sockets(t, port).is_empty())
}

/// Waits (bounded) until a TCP socket listens on `port`; fails early when `server` exits.
/// Looks at /proc/net/tcp rather than connecting, so one-shot servers keep their one accept.
pub fn wait_tcp_listen(port: u16, server: &mut Proc) {
    wait_port(port, server, "listen on TCP", tcp_listening)
}

/// Waits (bounded) until a UDP socket is bound to `port`; fails early when `server` exits.
pub fn wait_udp_bound(port: u16, server: &mut Proc) {
    wait_port(port, server, "bind UDP", udp_bound)
}

fn wait_port(port: u16, server: &mut Proc, what: &str, ready: fn(u16) -> bool) {
    let start = Instant::now();
    loop {
        if ready(port) {
            return;
        }
        if let Some(st) = server.try_exited() {
            panic!(
                "{} exited ({st}) before it would {what} port {port}\nstdout:\n{}\nstderr:\n{}",
                server.name,
                server.stdout_text(),
                server.stderr_text()
            );
        }
        if start.elapsed() > LISTEN_DEADLINE {
            panic!(
                "{} did not {what} port {port} within {:?}\nstderr:\n{}",
                server.name,
                LISTEN_DEADLINE,
                server.stderr_text()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `path` holds at least `len` bytes. Returns whether it did.
pub fn wait_file_len(path: &Path, len: u64, deadline: Duration) -> bool {
    let start = Instant::now();
    loop {
        if fs::metadata(path).map_or(0, |m| m.len()) >= len {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A child process started by a test, in its own process group (pgid = its pid). Its stdout and
/// stderr go to `<dir>/<name>.out` and `<dir>/<name>.err`. Dropping the guard kills the group
/// (the child and anything it forked) by that id and reaps the child.
pub struct Proc {
    child: Option<std::process::Child>,
    pub name: String,
    pub pid: u32,
    pub out: PathBuf,
    pub err: PathBuf,
    status: Option<ExitStatus>,
}

/// What a finished child left behind.
pub struct Output {
    pub name: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        if !self.status.success() {
            panic!(
                "{} failed ({})\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.status,
                truncate(&self.stdout_text(), 4000),
                truncate(&self.stderr, 4000)
            );
        }
        self
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [{} more bytes]", &s[..end], s.len() - end)
    }
}

impl Proc {
    /// Starts `cmd` with stdin from `stdin` (or /dev/null).
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str, stdin: Option<&Path>) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        cmd.stdout(File::create(&out).expect("create stdout file"));
        cmd.stderr(File::create(&err).expect("create stderr file"));
        match stdin {
            Some(p) => {
                cmd.stdin(File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display())))
            }
            None => cmd.stdin(Stdio::null()),
        };
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let pid = child.id();
        Proc {
            child: Some(child),
            name: name.to_string(),
            pid,
            out,
            err,
            status: None,
        }
    }

    /// The exit status if the child has exited (reaps it).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    /// Waits for the child to exit, at most `timeout`; on timeout kills it and fails.
    #[track_caller]
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_exited() {
                return st;
            }
            if start.elapsed() > timeout {
                self.kill();
                panic!(
                    "{} did not finish within {timeout:?} (killed)\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    truncate(&self.stdout_text(), 4000),
                    truncate(&self.stderr_text(), 4000)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded by CHILD_TIMEOUT) and collects the output.
    #[track_caller]
    pub fn finish(mut self) -> Output {
        let status = self.wait_timeout(CHILD_TIMEOUT);
        Output {
            name: self.name.clone(),
            status,
            stdout: fs::read(&self.out).unwrap_or_default(),
            stderr: self.stderr_text(),
        }
    }

    /// Sends `sig` to the child's process group.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: plain kill(2) on the process group this guard created.
            unsafe {
                libc::kill(-(self.pid as i32), sig);
            }
        }
    }

    /// Graceful stop: SIGTERM to the group, up to 3 s to exit, then SIGKILL. Lets the programs
    /// (and the library) flush what they write at exit.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(st) = self.try_exited() {
            return st;
        }
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Some(st) = self.try_exited() {
                return st;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        self.status.expect("reaped")
    }

    /// SIGKILL to the group, then reap the child.
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on the process group this guard created; the child is not yet reaped
        // (or is, in which case the group is gone or holds only our leftovers).
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        if let Some(c) = self.child.as_mut() {
            if self.status.is_none() {
                let _ = c.kill();
                if let Ok(st) = c.wait() {
                    self.status = Some(st);
                }
            }
        }
    }

    pub fn stdout_bytes(&self) -> Vec<u8> {
        fs::read(&self.out).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout_bytes()).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Kill the whole group even when the leader has exited: forked helpers may linger.
        // SAFETY: kill(2) on the process group this guard created.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Runs `cmd` to completion (bounded by CHILD_TIMEOUT), capturing its output.
#[track_caller]
pub fn run(cmd: Command, dir: &Path, name: &str, stdin: Option<&Path>) -> Output {
    Proc::spawn(cmd, dir, name, stdin).finish()
}

// ---------------------------------------------------------------------------------------------
// Plain vs preloaded runs.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No LD_PRELOAD: the kernel reference.
    Plain,
    /// LD_PRELOAD=libaccel.so, ACCEL_LOG_LEVEL=debug, ACCEL_LOG_FILE=<logs>/accel.%d.log.
    Preload,
}

/// The context of one run of a scenario: its mode, a work directory and a log directory.
pub struct Ctx {
    pub mode: Mode,
    work: TempDir,
    logs: TempDir,
    lib: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Ctx {
    pub fn new(mode: Mode, tag: &str) -> Ctx {
        let lib = lib_path();
        Ctx {
            mode,
            work: TempDir::new(&format!("{tag}-{mode:?}").to_lowercase()),
            logs: TempDir::new(&format!("{tag}-{mode:?}-logs").to_lowercase()),
            lib,
            extra_env: Vec::new(),
        }
    }

    /// Adds an environment variable to every command of this run (both modes).
    pub fn with_env(mut self, k: &str, v: &str) -> Ctx {
        self.extra_env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    pub fn log_dir(&self) -> &Path {
        self.logs.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    pub fn lib(&self) -> &Path {
        &self.lib
    }

    /// The value of ACCEL_LOG_FILE in the preloaded run.
    pub fn log_pattern(&self) -> String {
        format!("{}/accel.%d.log", self.logs.path().display())
    }

    pub fn write_file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    /// A command for `program` with this run's environment: inherited environment minus any
    /// LD_PRELOAD/ACCEL_*/VMA_* of the test's own environment, plus, in Preload mode, the
    /// library and its debug logging.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            let ks = k.to_string_lossy();
            if ks == "LD_PRELOAD" || ks.starts_with("ACCEL_") || ks.starts_with("VMA_") {
                cmd.env_remove(&k);
            }
        }
        cmd.current_dir(self.dir());
        if self.mode == Mode::Preload {
            cmd.env("LD_PRELOAD", &self.lib);
            cmd.env("ACCEL_LOG_LEVEL", "debug");
            cmd.env("ACCEL_LOG_FILE", self.log_pattern());
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `cmd` in the background (guarded).
    pub fn spawn(&self, cmd: Command, name: &str, stdin: Option<&Path>) -> Proc {
        Proc::spawn(cmd, self.dir(), name, stdin)
    }

    /// Runs `cmd` to completion (bounded).
    #[track_caller]
    pub fn run(&self, cmd: Command, name: &str, stdin: Option<&Path>) -> Output {
        run(cmd, self.dir(), name, stdin)
    }

    /// The library's log files of this run so far.
    pub fn logs(&self) -> Logs {
        Logs::read(self.log_dir())
    }
}

/// The results of a scenario run plain and preloaded, and the preloaded run's logs.
pub struct Twice<R> {
    pub plain: R,
    pub preload: R,
    pub logs: Logs,
}

/// Runs `scenario` once plain, once preloaded. A failure in either run reports which run failed
/// (and, for the preloaded run, what the library logged).
pub fn run_twice<R>(name: &str, scenario: impl Fn(&Ctx) -> R) -> Twice<R> {
    let plain = run_mode(name, Mode::Plain, &scenario).0;
    let (preload, logs) = run_mode(name, Mode::Preload, &scenario);
    // A pass-through run has nothing to complain about.
    logs.assert_no_errors();
    Twice {
        plain,
        preload,
        logs,
    }
}

/// Runs `scenario` in one mode; returns its result and the library's logs of that run.
pub fn run_mode<R>(name: &str, mode: Mode, scenario: &impl Fn(&Ctx) -> R) -> (R, Logs) {
    let cx = Ctx::new(mode, name);
    run_ctx(name, &cx, scenario)
}

/// Runs `scenario` in a prepared context; returns its result and the library's logs.
pub fn run_ctx<R>(name: &str, cx: &Ctx, scenario: &impl Fn(&Ctx) -> R) -> (R, Logs) {
    eprintln!("[{name}] {:?} run in {}", cx.mode, cx.dir().display());
    match panic::catch_unwind(AssertUnwindSafe(|| scenario(cx))) {
        Ok(r) => (r, cx.logs()),
        Err(e) => {
            eprintln!("[{name}] FAILED in the {:?} run", cx.mode);
            if cx.mode == Mode::Preload {
                eprintln!("{}", cx.logs().dump(8000));
            }
            panic::resume_unwind(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The library's logs.

/// One `accel.<pid>.log` file.
pub struct LogFile {
    pub path: PathBuf,
    pub pid: Option<u32>,
    pub text: String,
}

impl LogFile {
    /// Whether this file says the library was loaded into one of `names`.
    pub fn loaded_into_any(&self, names: &[String]) -> bool {
        self.text.lines().any(|l| {
            names.iter().any(|n| {
                l.contains(&format!("loaded into {n} ")) || l.ends_with(&format!("loaded into {n}"))
            })
        })
    }

    pub fn decisions(&self) -> Vec<&str> {
        self.text
            .lines()
            .filter(|l| l.contains("decision"))
            .collect()
    }
}

/// All log files of one preloaded run.
pub struct Logs {
    pub files: Vec<LogFile>,
}

impl Logs {
    pub fn read(dir: &Path) -> Logs {
        let mut files = Vec::new();
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let path = e.path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("accel.") {
                    continue;
                }
                let pid = name
                    .trim_start_matches("accel.")
                    .trim_end_matches(".log")
                    .parse()
                    .ok();
                let text =
                    String::from_utf8_lossy(&fs::read(&path).unwrap_or_default()).into_owned();
                files.push(LogFile { path, pid, text });
            }
        }
        files.sort_by_key(|f| f.pid);
        Logs { files }
    }

    /// The log files of processes the library was loaded into that run `program`.
    pub fn loaded_into(&self, program: &Path) -> Vec<&LogFile> {
        let names = prog_names(program);
        self.files
            .iter()
            .filter(|f| f.loaded_into_any(&names))
            .collect()
    }

    /// Asserts the library was loaded into at least `min` processes running `program`.
    #[track_caller]
    pub fn assert_loaded_into(&self, program: &Path, min: usize) -> Vec<&LogFile> {
        let found = self.loaded_into(program);
        if found.len() < min {
            panic!(
                "expected the library to log `loaded into {}` in at least {min} process(es), \
                 found {}\n{}",
                prog_names(program).join("|"),
                found.len(),
                self.dump(8000)
            );
        }
        found
    }

    /// All decision lines of all processes.
    pub fn decisions(&self) -> Vec<&str> {
        self.files.iter().flat_map(|f| f.decisions()).collect()
    }

    /// Asserts some decision line contains every one of `parts`.
    #[track_caller]
    pub fn assert_decision(&self, parts: &[&str]) -> String {
        match self
            .decisions()
            .into_iter()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            Some(l) => l.to_string(),
            None => panic!(
                "no decision line contains all of {parts:?}\n{}",
                self.dump(8000)
            ),
        }
    }

    /// Lines logged at error level.
    pub fn errors(&self) -> Vec<&str> {
        self.files
            .iter()
            .flat_map(|f| f.text.lines())
            .filter(|l| l.contains(" error: "))
            .collect()
    }

    #[track_caller]
    pub fn assert_no_errors(&self) {
        let e = self.errors();
        if !e.is_empty() {
            panic!(
                "the library logged errors in a pass-through run:\n{}",
                e.join("\n")
            );
        }
    }

    /// A readable dump of all log files (each truncated), for failure messages.
    pub fn dump(&self, max_per_file: usize) -> String {
        let mut s = format!("--- {} accel log file(s) ---\n", self.files.len());
        for f in &self.files {
            s.push_str(&format!(
                "== {} ==\n{}\n",
                f.path.display(),
                truncate(&f.text, max_per_file)
            ));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Misc.

/// Compiles a C probe from tests/probes/ into `dir`; returns the executable.
pub fn compile_probe(source: &str, dir: &Path) -> PathBuf {
    let cc = which("cc");
    let src = repo_root().join("tests/probes").join(source);
    let exe = dir.join(source.trim_end_matches(".c"));
    let mut cmd = Command::new(cc);
    cmd.args(["-O1", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-lpthread");
    let out = run(cmd, dir, &format!("cc-{source}"), None);
    out.assert_success();
    if !out.stderr.trim().is_empty() {
        eprintln!("cc warnings for {source}:\n{}", out.stderr);
    }
    exe
}

/// Writes `text` to `<dir>/<name>`; returns the path.
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = File::create(&p).expect("create script");
    f.write_all(text.as_bytes()).expect("write script");
    p
}

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader (only std): enough for iperf3 --json.

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(s: &str) -> Result<Json, String> {
        let b = s.as_bytes();
        let mut i = 0;
        let v = parse_value(b, &mut i)?;
        skip_ws(b, &mut i);
        if i != b.len() {
            return Err(format!("trailing data at byte {i}"));
        }
        Ok(v)
    }

    /// `a.b.c` path lookup through objects.
    pub fn get(&self, path: &str) -> Option<&Json> {
        let mut v = self;
        for key in path.split('.') {
            match v {
                Json::Obj(m) => v = &m.iter().find(|(k, _)| k == key)?.1,
                _ => return None,
            }
        }
        Some(v)
    }

    pub fn num(&self, path: &str) -> Option<f64> {
        match self.get(path)? {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn parse_value(b: &[u8], i: &mut usize) -> Result<Json, String> {
    skip_ws(b, i);
    match b.get(*i) {
        None => Err("unexpected end".into()),
        Some(b'{') => {
            *i += 1;
            let mut m = Vec::new();
            skip_ws(b, i);
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return Ok(Json::Obj(m));
            }
            loop {
                skip_ws(b, i);
                let k = match parse_value(b, i)? {
                    Json::Str(s) => s,
                    _ => return Err(format!("object key expected at {i}")),
                };
                skip_ws(b, i);
                if b.get(*i) != Some(&b':') {
                    return Err(format!("':' expected at {i}"));
                }
                *i += 1;
                let v = parse_value(b, i)?;
                m.push((k, v));
                skip_ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {
                        *i += 1;
                        return Ok(Json::Obj(m));
                    }
                    _ => return Err(format!("',' or '}}' expected at {i}")),
                }
            }
        }
        Some(b'[') => {
            *i += 1;
            let mut a = Vec::new();
            skip_ws(b, i);
            if b.get(*i) == Some(&b']') {
                *i += 1;
                return Ok(Json::Arr(a));
            }
            loop {
                a.push(parse_value(b, i)?);
                skip_ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {
                        *i += 1;
                        return Ok(Json::Arr(a));
                    }
                    _ => return Err(format!("',' or ']' expected at {i}")),
                }
            }
        }
        Some(b'"') => {
            *i += 1;
            let mut s = String::new();
            loop {
                match b.get(*i) {
                    None => return Err("unterminated string".into()),
                    Some(b'"') => {
                        *i += 1;
                        return Ok(Json::Str(s));
                    }
                    Some(b'\\') => {
                        let c = *b.get(*i + 1).ok_or("bad escape")?;
                        *i += 2;
                        match c {
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'r' => s.push('\r'),
                            b'b' => s.push('\u{8}'),
                            b'f' => s.push('\u{c}'),
                            b'u' => {
                                let h = std::str::from_utf8(b.get(*i..*i + 4).ok_or("bad \\u")?)
                                    .map_err(|e| e.to_string())?;
                                let cp = u32::from_str_radix(h, 16).map_err(|e| e.to_string())?;
                                s.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                                *i += 4;
                            }
                            c => s.push(c as char),
                        }
                    }
                    Some(_) => {
                        // Copy one UTF-8 sequence.
                        let start = *i;
                        *i += 1;
                        while *i < b.len() && (b[*i] & 0xC0) == 0x80 {
                            *i += 1;
                        }
                        s.push_str(&String::from_utf8_lossy(&b[start..*i]));
                    }
                }
            }
        }
        Some(b't') if b[*i..].starts_with(b"true") => {
            *i += 4;
            Ok(Json::Bool(true))
        }
        Some(b'f') if b[*i..].starts_with(b"false") => {
            *i += 5;
            Ok(Json::Bool(false))
        }
        Some(b'n') if b[*i..].starts_with(b"null") => {
            *i += 4;
            Ok(Json::Null)
        }
        Some(_) => {
            let start = *i;
            while *i < b.len() && matches!(b[*i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                *i += 1;
            }
            let t = std::str::from_utf8(&b[start..*i]).unwrap_or("");
            t.parse::<f64>()
                .map(Json::Num)
                .map_err(|_| format!("bad token at byte {start}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// shm datapath tests (tests/shm_*.rs): a fresh network namespace per test, its kernel UDP
// counters, accelerated and plain programs inside it, the shm registry's leftovers.

/// A network namespace of its own for one test (`accel-t-<pid>-<n>`), with `lo` up. Programs
/// started through [`NetNs::command`] enter it before exec (setns in the child), so their pid is
/// the program's own. Dropping the guard kills (SIGKILL, by pid) whatever still runs in the
/// namespace and deletes it, also when the test panics.
pub struct NetNs {
    pub name: String,
    file: File,
}

static NETNS_SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs `ip ARGS` (bounded); panics with its output when it fails.
#[track_caller]
pub fn ip_cmd(args: &[&str]) -> String {
    let ip = which("ip");
    let mut cmd = Command::new(&ip);
    cmd.args(args);
    let dir = std::env::temp_dir();
    let name = format!(
        "ip-{}-{}",
        std::process::id(),
        NETNS_SEQ.fetch_add(1, Ordering::Relaxed) + 1_000_000
    );
    let mut p = Proc::spawn(cmd, &dir, &name, None);
    let st = p.wait_timeout(Duration::from_secs(20));
    let out = p.stdout_text();
    let err = p.stderr_text();
    let _ = fs::remove_file(&p.out);
    let _ = fs::remove_file(&p.err);
    assert!(st.success(), "ip {}: {st}\n{out}\n{err}", args.join(" "));
    out
}

impl NetNs {
    /// Creates the namespace (as root; failing to is a test failure).
    #[track_caller]
    pub fn new() -> NetNs {
        let n = NETNS_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("accel-t-{}-{n}", std::process::id());
        let _ = ip_cmd_quiet(&["netns", "del", &name]);
        ip_cmd(&["netns", "add", &name]);
        let path = format!("/var/run/netns/{name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = ip_cmd_quiet(&["netns", "del", &name]);
                panic!("cannot open {path}: {e}");
            }
        };
        let ns = NetNs { name, file };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `argv` inside the namespace to completion; panics when it fails. Returns stdout.
    #[track_caller]
    pub fn exec(&self, argv: &[&str]) -> String {
        let mut cmd = self.command(which(argv[0]));
        cmd.args(&argv[1..]);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {argv:?} in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{argv:?} in {}: {}\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command that runs `program` inside the namespace (no environment changes).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter_before_exec(&mut cmd);
        cmd
    }

    /// Makes `cmd` enter this namespace in the child, just before exec.
    pub fn enter_before_exec(&self, cmd: &mut Command) {
        use std::os::unix::io::AsRawFd;
        let fd = self.file.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe; the fd stays open in the parent while the
        // command is spawned (the guard owns it).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Adds a dummy interface with `cidr` (e.g. "10.200.0.1/24") and brings it up. Kernels
    /// built without the dummy driver (e.g. minimal VM kernels, no modules) get a bridge without
    /// ports instead: equally a local interface whose traffic never leaves the host.
    pub fn add_dummy(&self, dev: &str, cidr: &str) {
        let added = self
            .command(which("ip"))
            .args(["link", "add", dev, "type", "dummy"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !added {
            self.exec(&["ip", "link", "add", dev, "type", "bridge"]);
        }
        self.exec(&["ip", "addr", "add", cidr, "dev", dev]);
        self.exec(&["ip", "link", "set", dev, "up"]);
    }

    /// The namespace's `Udp:` counters from /proc/net/snmp (InDatagrams, NoPorts, ...).
    pub fn udp_counters(&self) -> Vec<(String, u64)> {
        let text = self.exec(&["cat", "/proc/net/snmp"]);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("Udp:"))
            .map(|l| l.split_whitespace().skip(1).collect())
            .collect();
        assert!(rows.len() >= 2, "no Udp rows in /proc/net/snmp:\n{text}");
        rows[0]
            .iter()
            .zip(&rows[1])
            .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
            .collect()
    }

    /// `Udp: InDatagrams` of the namespace.
    pub fn in_datagrams(&self) -> u64 {
        self.udp_counters()
            .into_iter()
            .find(|(k, _)| k == "InDatagrams")
            .map(|(_, v)| v)
            .expect("Udp InDatagrams")
    }

    /// Runs `f` on a thread that entered the namespace (for sockets the test itself opens).
    pub fn run_in<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        use std::os::unix::io::AsRawFd;
        let fd = self.file.as_raw_fd();
        thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns(2) on this thread only (network namespaces are per thread).
                let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| panic::resume_unwind(e))
        })
    }

    /// Sends one datagram with `payload` from each of `sources` fresh sockets (different ports)
    /// of the test process (no library) inside the namespace.
    pub fn send_udp(&self, dest: &str, payload: &[u8], sources: usize) {
        let dest = dest.to_string();
        self.run_in(move || {
            for _ in 0..sources {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket in netns");
                let _ = s.send_to(payload, dest.as_str());
            }
        })
    }

    /// Whether a UDP socket is bound to `port` inside the namespace.
    pub fn udp_bound(&self, port: u16) -> bool {
        self.proc_net_has(&["/proc/net/udp"], port, None)
    }

    /// Whether a TCP socket listens on `port` inside the namespace.
    pub fn tcp_listening(&self, port: u16) -> bool {
        self.proc_net_has(&["/proc/net/tcp", "/proc/net/tcp6"], port, Some("0A"))
    }

    fn proc_net_has(&self, tables: &[&str], port: u16, state: Option<&str>) -> bool {
        let mut argv = vec!["cat"];
        argv.extend_from_slice(tables);
        let text = self.exec(&argv);
        text.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
                && state.is_none_or(|s| cols[3] == s)
        })
    }

    fn pids(&self) -> Vec<i32> {
        ip_cmd_quiet(&["netns", "pids", &self.name])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) by pid of a process in the namespace this test created.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        if ip_cmd_quiet(&["netns", "del", &self.name]).is_none() {
            eprintln!("WARNING: could not delete network namespace {}", self.name);
        }
    }
}

/// `ip ARGS`, bounded; its stdout, or None when it failed (for clean-up paths).
pub fn ip_cmd_quiet(args: &[&str]) -> Option<String> {
    let ip = which("ip");
    let mut child = Command::new(&ip)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let mut s = String::new();
                if let Some(mut o) = child.stdout.take() {
                    use std::io::Read;
                    let _ = o.read_to_string(&mut s);
                }
                return st.success().then_some(s);
            }
            Ok(None) if start.elapsed() < Duration::from_secs(20) => {
                thread::sleep(Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// One shm test: a preloaded-run context (work and log directories) and a fresh namespace.
/// Programs run accelerated (LD_PRELOAD, `ACCEL_SHM=1`, debug log per pid) or plain, always
/// inside the namespace. Fields drop in order: the namespace (killing leftovers) goes last.
///
/// The shm tests of one test binary run one at a time (the guard holds a lock): their programs
/// spin on their rings, and spinning processes outnumbering the CPUs starve each other
/// (a ping-pong falls from tens of thousands of round trips a second to a few dozen).
pub struct ShmEnv {
    pub cx: Ctx,
    pub ns: NetNs,
    pids: Mutex<Vec<u32>>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SHM_SERIAL: Mutex<()> = Mutex::new(());

impl ShmEnv {
    pub fn new(tag: &str) -> ShmEnv {
        let serial = SHM_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let cx = Ctx::new(Mode::Preload, tag);
        let ns = NetNs::new();
        eprintln!(
            "[{tag}] netns {}, work {}, logs {}",
            ns.name,
            cx.dir().display(),
            cx.log_dir().display()
        );
        ShmEnv {
            cx,
            ns,
            pids: Mutex::new(Vec::new()),
            _serial: serial,
        }
    }

    /// `program` under the library with the shm datapath on, plus `env`, in the namespace.
    pub fn accel(&self, program: impl AsRef<OsStr>, env: &[(&str, &str)]) -> Command {
        let mut cmd = self.cx.command(program);
        cmd.env("ACCEL_SHM", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.ns.enter_before_exec(&mut cmd);
        cmd
    }

    /// `program` without the library, in the namespace.
    pub fn plain(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = self.cx.command(program);
        for k in ["LD_PRELOAD", "ACCEL_LOG_LEVEL", "ACCEL_LOG_FILE"] {
            cmd.env_remove(k);
        }
        self.ns.enter_before_exec(&mut cmd);
        cmd
    }

    /// Starts `cmd` in the background (guarded); remembers its pid for the leftover check.
    pub fn spawn(&self, cmd: Command, name: &str) -> Proc {
        let p = Proc::spawn(cmd, self.cx.dir(), name, None);
        self.pids.lock().unwrap().push(p.pid);
        p
    }

    /// Runs `cmd` to completion (bounded by CHILD_TIMEOUT).
    #[track_caller]
    pub fn run(&self, cmd: Command, name: &str) -> Output {
        self.spawn(cmd, name).finish()
    }

    /// Doorbells accelerated process `pid` took off its kernel sockets so far, from its stats
    /// block (`accel stat --json -p PID`): the datagrams the kernel's InDatagrams may count
    /// during a bypassed transfer (each wakes a sleeping receiver through its kernel socket).
    #[track_caller]
    pub fn doorbells_received(&self, pid: u32) -> u64 {
        let mut cmd = accel_tool_command();
        cmd.args(["stat", "--json", "-p", &pid.to_string()]);
        let out = run(cmd, self.cx.dir(), "stat-doorbells", None);
        out.assert_success();
        let doc = JsonDoc::parse(&out.stdout_text(), self.cx.dir());
        let keys: Vec<&String> = doc.flat.keys().filter(|k| k.ends_with(".counters.doorbells_received")).collect();
        assert!(!keys.is_empty(), "no sockets of pid {pid} in accel stat:\n{}", doc.text);
        keys.iter().map(|k| doc.u(k)).sum()
    }

    /// Remembers further pids (e.g. forked children) for the leftover check.
    pub fn add_pid(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid);
    }

    pub fn pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap().clone()
    }

    /// The shm probe, tests/probes/shm_udp.py, accelerated (`accel`) or plain, with `args`.
    pub fn probe(&self, accel: bool, env: &[(&str, &str)], args: &[&str]) -> Command {
        let py = python3();
        let mut cmd = if accel {
            self.accel(&py, env)
        } else {
            let mut c = self.plain(&py);
            for (k, v) in env {
                c.env(k, v);
            }
            c
        };
        cmd.arg(repo_root().join("tests/probes/shm_udp.py"));
        cmd.args(args);
        cmd
    }

    /// The library's log lines of process `pid`.
    pub fn log_of(&self, pid: u32) -> String {
        fs::read_to_string(self.cx.log_dir().join(format!("accel.{pid}.log"))).unwrap_or_default()
    }

    /// Waits (bounded) until process `p` logged that it published `endpoint` ("127.0.0.1:5000")
    /// on an shm ring; returns that log line. Fails when `p` exits first.
    #[track_caller]
    pub fn wait_shm_endpoint(&self, p: &mut Proc, endpoint: &str) -> String {
        let needle = format!(" udp {endpoint}: shm ring ");
        let start = Instant::now();
        loop {
            if let Some(l) = self.log_of(p.pid).lines().find(|l| l.contains(&needle)) {
                return l.to_string();
            }
            if let Some(st) = p.try_exited() {
                panic!(
                    "{} exited ({st}) before publishing {endpoint} on an shm ring\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
                    p.name,
                    p.stdout_text(),
                    p.stderr_text(),
                    self.log_of(p.pid)
                );
            }
            if start.elapsed() > LISTEN_DEADLINE {
                panic!(
                    "{} did not publish {endpoint} on an shm ring within {LISTEN_DEADLINE:?}\nstderr:\n{}\nlog:\n{}",
                    p.name,
                    p.stderr_text(),
                    self.log_of(p.pid)
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until a UDP socket is bound to `port` in the namespace.
    #[track_caller]
    pub fn wait_udp_bound(&self, p: &mut Proc, port: u16) {
        self.wait_cond(p, &format!("bind UDP port {port}"), || {
            self.ns.udp_bound(port)
        })
    }

    /// Waits (bounded) until a TCP socket listens on `port` in the namespace.
    #[track_caller]
    pub fn wait_tcp_listen(&self, p: &mut Proc, port: u16) {
        self.wait_cond(p, &format!("listen on TCP port {port}"), || {
            self.ns.tcp_listening(port)
        })
    }

    #[track_caller]
    fn wait_cond(&self, p: &mut Proc, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            if let Some(st) = p.try_exited() {
                panic!(
                    "{} exited ({st}) before it would {what}\nstdout:\n{}\nstderr:\n{}",
                    p.name,
                    p.stdout_text(),
                    p.stderr_text()
                );
            }
            if start.elapsed() > LISTEN_DEADLINE {
                panic!(
                    "{} did not {what} within {LISTEN_DEADLINE:?}\nstderr:\n{}",
                    p.name,
                    p.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts an accelerated process that binds one UDP socket and exits: its start-up reaps
    /// what dead processes left in the registry.
    pub fn reap_now(&self) {
        let mut cmd = self.accel(python3(), &[]);
        cmd.args([
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.bind(('127.0.0.1', 0)); s.close()",
        ]);
        self.run(cmd, "reaper").assert_success();
    }

    /// Asserts the registry holds no file of this test's processes (ring-<pid>-*, .tmp-<pid>-*)
    /// and no endpoint file for `ports` (udp-<ip>-<port>).
    #[track_caller]
    pub fn assert_no_leftovers(&self, ports: &[u16]) {
        let pids = self.pids();
        let left = shm_files_of(0, &pids, ports);
        assert!(
            left.is_empty(),
            "the shm registry {} still holds files of this test's processes {pids:?} / ports \
             {ports:?}: {left:?}",
            shm_dir(0).display()
        );
    }

    /// All lines of all this test's library logs that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.cx
            .logs()
            .files
            .iter()
            .flat_map(|f| f.text.lines())
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// The shm registry directory of `uid`.
pub fn shm_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/dev/shm/accel-{uid}"))
}

/// Files of the registry of `uid` that belong to `pids` (rings, temporaries) or `ports`
/// (endpoint files).
pub fn shm_files_of(uid: u32, pids: &[u32], ports: &[u16]) -> Vec<String> {
    let Ok(rd) = fs::read_dir(shm_dir(uid)) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid_of = |prefix: &str| -> Option<u32> {
            name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
        };
        let mine = pid_of("ring-")
            .or_else(|| pid_of(".tmp-"))
            .or_else(|| pid_of("stats-"))
            .is_some_and(|p| pids.contains(&p))
            || name
                .strip_prefix("udp-")
                .and_then(|r| r.rsplit('-').next()?.parse::<u16>().ok())
                .is_some_and(|p| ports.contains(&p));
        if mine {
            v.push(name);
        }
    }
    v.sort();
    v
}

/// Waits (bounded) until `p`'s stdout has a line containing `needle`; fails when `p` exits
/// first or the deadline passes.
#[track_caller]
pub fn wait_stdout_line(p: &mut Proc, needle: &str, deadline: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(l) = p.stdout_text().lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        if let Some(st) = p.try_exited() {
            if let Some(l) = p.stdout_text().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            panic!(
                "{} exited ({st}) before printing `{needle}`\nstdout:\n{}\nstderr:\n{}",
                p.name,
                truncate(&p.stdout_text(), 4000),
                truncate(&p.stderr_text(), 4000)
            );
        }
        if start.elapsed() > deadline {
            panic!(
                "{} did not print `{needle}` within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                p.name,
                truncate(&p.stdout_text(), 4000),
                truncate(&p.stderr_text(), 4000)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The last JSON line (`{...}`) of a probe's stdout.
#[track_caller]
pub fn probe_json(stdout: &str) -> Json {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON result line in probe output:\n{stdout}"));
    Json::parse(line).unwrap_or_else(|e| panic!("bad JSON from probe ({e}): {line}"))
}

/// Every JSON line (`{...}`) of a probe's stdout (e.g. parent and forked child).
pub fn probe_jsons(stdout: &str) -> Vec<Json> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| Json::parse(l).ok())
        .collect()
}

impl Proc {
    /// As [`Proc::spawn`], with `stdin` given as any Stdio (a pipe, a socket...).
    pub fn spawn_stdio(mut cmd: Command, dir: &Path, name: &str, stdin: Stdio) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        cmd.stdout(File::create(&out).expect("create stdout file"));
        cmd.stderr(File::create(&err).expect("create stderr file"));
        cmd.stdin(stdin);
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let pid = child.id();
        Proc {
            child: Some(child),
            name: name.to_string(),
            pid,
            out,
            err,
            status: None,
        }
    }
}

impl ShmEnv {
    /// Starts `cmd` with `stdin` (guarded); remembers its pid for the leftover check.
    pub fn spawn_stdio(&self, cmd: Command, name: &str, stdin: Stdio) -> Proc {
        let p = Proc::spawn_stdio(cmd, self.cx.dir(), name, stdin);
        self.pids.lock().unwrap().push(p.pid);
        p
    }
}

/// iperf 2's `-y C` output: one CSV record per line.
#[allow(dead_code)]
pub fn iperf_csv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.contains(','))
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect()
}

/// The number after `key` (and any spaces or `=`) in sockperf's output, e.g.
/// `sockperf_value(out, "percentile 50.000")`.
#[allow(dead_code)]
pub fn sockperf_value(out: &str, key: &str) -> Option<f64> {
    let i = out.find(key)? + key.len();
    let rest = out[i..].trim_start_matches([' ', '=']);
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Operations tools (accel stat / doctor / capture): tests/ops_*.rs

/// The `accel` tool built by cargo for this package.
pub fn accel_tool() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_accel"))
}

/// The `accel` tool, not preloaded and without the caller's ACCEL_*/VMA_* settings.
pub fn accel_tool_command() -> Command {
    let mut cmd = Command::new(accel_tool());
    for (k, _) in std::env::vars_os() {
        let ks = k.to_string_lossy();
        if ks == "LD_PRELOAD" || ks.starts_with("ACCEL_") || ks.starts_with("VMA_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// A JSON document, parsed by python's `json` module (the test checks it parses) and flattened
/// to `path → scalar`: `processes.0.sockets.1.counters.shm_rx_packets` → "1001". Strings are
/// unquoted, `null` is "null", booleans are "true"/"false".
pub struct JsonDoc {
    pub text: String,
    pub flat: std::collections::BTreeMap<String, String>,
}

const FLATTEN_PY: &str = r#"
import json, sys
def walk(p, v):
    if isinstance(v, dict):
        for k, x in v.items():
            walk(p + [str(k)], x)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            walk(p + [str(i)], x)
    elif v is None:
        print(".".join(p) + "\tnull")
    elif isinstance(v, bool):
        print(".".join(p) + "\t" + ("true" if v else "false"))
    else:
        print(".".join(p) + "\t" + str(v).replace("\n", "\\n"))
walk([], json.loads(open(sys.argv[1]).read()))
"#;

impl JsonDoc {
    /// Parses `text` (one JSON document) in `dir` (a scratch file goes there).
    #[track_caller]
    pub fn parse(text: &str, dir: &Path) -> JsonDoc {
        static JSON_SEQ: AtomicU64 = AtomicU64::new(0);
        let n = JSON_SEQ.fetch_add(1, Ordering::Relaxed);
        let file = dir.join(format!("doc-{n}.json"));
        fs::write(&file, text).expect("write json scratch file");
        let mut cmd = Command::new(python3());
        cmd.env_remove("LD_PRELOAD").arg("-c").arg(FLATTEN_PY).arg(&file);
        let out = run(cmd, dir, &format!("json-{n}"), None);
        assert!(out.status.success(), "not valid JSON ({}):\n{}\n{text}", out.status, out.stderr);
        let flat = out
            .stdout_text()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        JsonDoc { text: text.to_string(), flat }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.flat.get(key).map(String::as_str)
    }

    /// The number at `key`; panics (with the document) when missing or not a number.
    #[track_caller]
    pub fn u(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number at {key} in\n{}", self.text))
    }

    /// The text at `key`; panics when missing.
    #[track_caller]
    pub fn s(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| panic!("nothing at {key} in\n{}", self.text))
    }

    /// How many elements the array at `prefix` has.
    pub fn len(&self, prefix: &str) -> usize {
        let p = format!("{prefix}.");
        (0..)
            .take_while(|i| self.flat.keys().any(|k| k.starts_with(&format!("{p}{i}.")) || *k == format!("{p}{i}")))
            .count()
    }

    /// The key prefix of the element of array `prefix` whose `field` is `value`
    /// (`processes` + `pid` = "1234" → "processes.0").
    pub fn find(&self, prefix: &str, field: &str, value: &str) -> Option<String> {
        (0..self.len(prefix))
            .map(|i| format!("{prefix}.{i}"))
            .find(|p| self.get(&format!("{p}.{field}")) == Some(value))
    }
}

/// An shm test whose accelerated programs use a registry directory of their own
/// (`ACCEL_SHM_DIR`), so `accel stat` there sees exactly this test's processes.
pub struct OpsEnv {
    pub shm: ShmEnv,
    pub registry: PathBuf,
}

impl OpsEnv {
    pub fn new(tag: &str) -> OpsEnv {
        let shm = ShmEnv::new(tag);
        // Made by the library (0700) on first use; removed with the work directory.
        let registry = shm.cx.dir().join("registry");
        OpsEnv { shm, registry }
    }

    /// `program` under the library with the shm datapath on and this test's registry.
    pub fn accel(&self, program: impl AsRef<OsStr>, env: &[(&str, &str)]) -> Command {
        let reg = self.registry.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = vec![("ACCEL_SHM_DIR", &reg)];
        all.extend_from_slice(env);
        self.shm.accel(program, &all)
    }

    /// The `accel` tool (not preloaded, outside the namespace) looking at this test's registry.
    pub fn tool(&self, args: &[&str]) -> Command {
        let mut cmd = accel_tool_command();
        cmd.env("ACCEL_SHM_DIR", &self.registry).args(args);
        cmd
    }

    /// Runs the tool to completion (bounded).
    pub fn run_tool(&self, args: &[&str], name: &str) -> Output {
        run(self.tool(args), self.shm.cx.dir(), name, None)
    }

    /// `accel stat --json ARGS`, which must succeed and parse.
    #[track_caller]
    pub fn stat_json(&self, args: &[&str]) -> JsonDoc {
        let mut all = vec!["stat", "--json"];
        all.extend_from_slice(args);
        let out = self.run_tool(&all, "stat-json");
        out.assert_success();
        JsonDoc::parse(&out.stdout_text(), self.shm.cx.dir())
    }

    /// This test's stats block of `pid`.
    pub fn stats_file(&self, pid: u32) -> PathBuf {
        self.registry.join(format!("stats-{pid}"))
    }

    /// Waits (bounded) until `cond` holds for `accel stat --json -p PID`; returns that document.
    /// Fails with the last document when it never does.
    #[track_caller]
    pub fn wait_stat(&self, pid: u32, what: &str, cond: impl Fn(&JsonDoc) -> bool) -> JsonDoc {
        let start = Instant::now();
        loop {
            let out = self.run_tool(&["stat", "--json", "-p", &pid.to_string()], "stat-wait");
            let doc = JsonDoc::parse(&out.stdout_text(), self.shm.cx.dir());
            if out.status.success() && cond(&doc) {
                return doc;
            }
            if start.elapsed() > LISTEN_DEADLINE {
                panic!("accel stat -p {pid}: {what} did not happen within {LISTEN_DEADLINE:?}; last:\n{}", doc.text);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A SOCK_SEQPACKET socket pair: every read() of the reading end returns exactly one message,
/// so a program reading its stdin from it sends one datagram per message we write.
pub fn seqpacket_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair fills two fds we then own.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and ours.
    unsafe {
        use std::os::fd::{FromRawFd, OwnedFd};
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

