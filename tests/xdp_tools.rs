//! Stock programs (socat, nc, iperf, iperf3, sockperf, python) exchanging UDP across a veth pair
//! with the AF_XDP datapath (`ACCEL_XDP=1`) on the receiver, on the sender, and on both.
//!
//! Each test makes two network namespaces joined by a veth pair with one queue each way
//! (`numrxqueues 1 numtxqueues 1`; `xdp_several_queues_python` two each way, with an XSK on
//! each queue): `xa` 10.203.0.1 in A, `xb` 10.203.0.2 in B. Nothing is sent
//! anywhere else. Proof of bypass:
//! - on the receiving side, the namespace's `Udp: InDatagrams` (/proc/net/snmp) does not move
//!   while thousands of datagrams arrive (the kernel never sees them), and the program's log
//!   shows its filter and, at exit, the XSK's counters;
//! - on the sending side, the namespace's `Udp: OutDatagrams` moves only by the few datagrams
//!   the kernel sent while the neighbour was unresolved.
//!
//! The guard deletes the namespaces (with them the veth pair, its XDP program and every
//! process left inside) and the program's pins under /sys/fs/bpf/accel, also when a test fails.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const A_IP: &str = "10.203.0.1";
/// The veth end in namespace A.
const A_DEV: &str = "xa";
const B_IP: &str = "10.203.0.2";

static SERIAL: Mutex<()> = Mutex::new(());

/// Two namespaces joined by a one-queue veth pair, a preload context, and clean-up.
struct XdpEnv {
    cx: Ctx,
    a: NetNs,
    b: NetNs,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl XdpEnv {
    fn new(tag: &str) -> XdpEnv {
        XdpEnv::with_queues(tag, 1)
    }

    /// With `n` queues each way on both veth ends (what xb sends on TX queue i arrives on xa's
    /// RX queue i).
    fn with_queues(tag: &str, n: u32) -> XdpEnv {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let env = XdpEnv { cx: Ctx::new(Mode::Preload, tag), a: NetNs::new(), b: NetNs::new(), _serial: serial };
        let n = n.to_string();
        env.a.exec(&[
            "ip", "link", "add", "xa", "numrxqueues", &n, "numtxqueues", &n, "type", "veth", "peer", "xb",
            "numrxqueues", &n, "numtxqueues", &n,
        ]);
        env.a.exec(&["ip", "link", "set", "xb", "netns", &env.b.name]);
        env.a.exec(&["ip", "addr", "add", &format!("{A_IP}/24"), "dev", "xa"]);
        env.b.exec(&["ip", "addr", "add", &format!("{B_IP}/24"), "dev", "xb"]);
        env.a.exec(&["ip", "link", "set", "xa", "up"]);
        env.b.exec(&["ip", "link", "set", "xb", "up"]);
        eprintln!("[{tag}] netns {} / {}, logs {}", env.a.name, env.b.name, env.cx.log_dir().display());
        env
    }

    fn ns(&self, side: Side) -> &NetNs {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// `program` in namespace `side`, under the library with ACCEL_XDP=1 when `accel`.
    fn cmd(&self, side: Side, accel: bool, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.cx.command(program);
        if accel {
            cmd.env("ACCEL_XDP", "1");
        } else {
            for k in ["LD_PRELOAD", "ACCEL_LOG_LEVEL", "ACCEL_LOG_FILE"] {
                cmd.env_remove(k);
            }
        }
        self.ns(side).enter_before_exec(&mut cmd);
        cmd
    }

    fn spawn(&self, cmd: Command, name: &str) -> Proc {
        self.cx.spawn(cmd, name, None)
    }

    /// Runs `cmd` to completion (bounded); returns its output and pid (for its log).
    #[track_caller]
    fn run(&self, cmd: Command, name: &str, stdin: Option<&std::path::Path>) -> (Output, u32) {
        let p = self.cx.spawn(cmd, name, stdin);
        let pid = p.pid;
        (p.finish(), pid)
    }

    fn log_of(&self, pid: u32) -> String {
        std::fs::read_to_string(self.cx.log_dir().join(format!("accel.{pid}.log"))).unwrap_or_default()
    }

    /// Waits (bounded) until accelerated process `p` installed its XDP filter for `endpoint`.
    #[track_caller]
    fn wait_filter(&self, p: &mut Proc, endpoint: &str) {
        let needle = format!(" udp {endpoint}: xdp filter on ");
        let start = Instant::now();
        while !self.log_of(p.pid).contains(&needle) {
            if let Some(st) = p.try_exited() {
                panic!("{} exited ({st}) before its xdp filter\n{}\nlog:\n{}", p.name, p.stderr_text(), self.log_of(p.pid));
            }
            assert!(start.elapsed() < LISTEN_DEADLINE, "{}: no xdp filter for {endpoint}\nlog:\n{}", p.name, self.log_of(p.pid));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until a UDP socket is bound to `port` in `side`.
    #[track_caller]
    fn wait_udp(&self, side: Side, p: &mut Proc, port: u16) {
        let start = Instant::now();
        while !self.ns(side).udp_bound(port) {
            assert!(p.try_exited().is_none(), "{} exited before binding {port}\n{}", p.name, p.stderr_text());
            assert!(start.elapsed() < LISTEN_DEADLINE, "{}: nothing bound on {port}", p.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[track_caller]
    fn wait_tcp(&self, side: Side, p: &mut Proc, port: u16) {
        let start = Instant::now();
        while !self.ns(side).tcp_listening(port) {
            assert!(p.try_exited().is_none(), "{} exited before listening on {port}\n{}", p.name, p.stderr_text());
            assert!(start.elapsed() < LISTEN_DEADLINE, "{}: nothing listening on {port}", p.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn counter(&self, side: Side, name: &str) -> u64 {
        self.ns(side).udp_counters().into_iter().find(|(k, _)| k == name).map(|(_, v)| v).expect(name)
    }

    /// A's pin directories under /sys/fs/bpf/accel (and B's).
    fn pin_dirs(&self) -> Vec<PathBuf> {
        let prefixes: Vec<String> = [&self.a, &self.b]
            .iter()
            .filter_map(|ns| std::fs::metadata(format!("/var/run/netns/{}", ns.name)).ok())
            .map(|m| format!("{}-", m.ino()))
            .collect();
        std::fs::read_dir("/sys/fs/bpf/accel")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| prefixes.iter().any(|p| e.file_name().to_string_lossy().starts_with(p.as_str())))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The XSK counters `pid` logged at exit (key → value), from its "xdp counters:" lines.
    fn xdp_counters(&self, pid: u32) -> Option<Vec<(String, u64)>> {
        let log = self.log_of(pid);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("xdp counters:")).collect();
        if lines.is_empty() {
            return None;
        }
        Some(
            lines
                .iter()
                .flat_map(|l| l.split_whitespace())
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
                .collect(),
        )
    }

    #[track_caller]
    fn xdp_counter(&self, pid: u32, key: &str) -> u64 {
        let c = self.xdp_counters(pid).unwrap_or_else(|| panic!("pid {pid} logged no xdp counters\n{}", self.log_of(pid)));
        c.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {key} in {c:?}"))
    }

    /// Ping and a TCP exchange from B to A work (the program passes what is not steered).
    fn assert_ping_and_tcp(&self) {
        self.b.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", A_IP]);
        let server = self.a.run_in(|| std::net::TcpListener::bind(format!("{A_IP}:7999")).unwrap());
        let t = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = server.accept().unwrap();
            let mut buf = [0u8; 11];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        });
        let echoed = self.b.run_in(|| {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(format!("{A_IP}:7999")).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"tcp works!!").unwrap();
            let mut buf = [0u8; 11];
            c.read_exact(&mut buf).unwrap();
            buf
        });
        t.join().unwrap();
        assert_eq!(&echoed, b"tcp works!!");
    }
}

impl Drop for XdpEnv {
    fn drop(&mut self) {
        // Before the namespaces' own guards (fields drop after this body).
        for dir in self.pin_dirs() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// A python sender: `count` datagrams of `size` bytes (datagram i filled from seed i), paced in
/// bursts of 32 with a short pause, from `src_port` to `dest`.
const SENDER: &str = r#"
import socket, sys, time, random
dest, port, count, size, src_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", src_port))
for i in range(count):
    r = random.Random(i)
    s.sendto(bytes(r.getrandbits(8) for _ in range(size)), (dest, port))
    if i % 32 == 31:
        time.sleep(0.002)
print("sent", count)
"#;

/// A python receiver: `count` datagrams (or until 10 s of silence) on `ip:port`, blocking (or
/// through select / epoll), each checked against the sender's pattern; prints "ok N bad M".
const RECEIVER: &str = r#"
import socket, sys, select, random
ip, port, count, size, how = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((ip, port))
print("bound", flush=True)
ep = select.epoll() if how == "epoll" else None
if ep: ep.register(s.fileno(), select.EPOLLIN)
s.settimeout(10 if how == "timeout" else None)
ok = bad = 0
expected = {}
while ok + bad < count:
    if how == "select":
        if not select.select([s], [], [], 10)[0]: break
    elif how == "epoll":
        if not ep.poll(10): break
    try:
        d, a = s.recvfrom(65536)
    except socket.timeout:
        break
    i = ok + bad
    r = random.Random(i)
    if d == bytes(r.getrandbits(8) for _ in range(size)): ok += 1
    else: bad += 1
print("ok", ok, "bad", bad, flush=True)
"#;

fn py_args(cx: &Ctx, script: &str, name: &str) -> PathBuf {
    cx.write_file(name, script.as_bytes())
}

/// Python receivers in A (accelerated: blocking, with SO_RCVTIMEO, select, epoll) get every
/// datagram a plain python sender in B sends, byte for byte and in order, while A's kernel
/// receives none of them; ping and TCP keep working meanwhile; the XSK counted them.
#[test]
fn xdp_python_receivers_bypass_the_kernel() {
    let env = XdpEnv::new("xdp_python_rx");
    let py = python3();
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    for (i, how) in ["block", "timeout", "select", "epoll"].iter().enumerate() {
        let port = 6000 + i as u16;
        let count = 3000;
        let size = 200 + 300 * i;
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.arg(&recv).args([A_IP, &port.to_string(), &count.to_string(), &size.to_string(), how]);
        let mut rx = env.spawn(cmd, &format!("recv-{how}"));
        env.wait_filter(&mut rx, &format!("{A_IP}:{port}"));
        let before = env.a.in_datagrams();
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&send).args([A_IP, &port.to_string(), &count.to_string(), &size.to_string(), "0"]);
        let tx = env.cx.run(cmd, &format!("send-{how}"), None);
        tx.assert_success();
        if i == 0 {
            env.assert_ping_and_tcp();
        }
        let st = rx.wait_timeout(CHILD_TIMEOUT);
        let out = rx.stdout_text();
        assert!(st.success(), "receiver ({how}): {st}\n{out}\n{}", rx.stderr_text());
        assert!(out.contains(&format!("ok {count} bad 0")), "receiver ({how}): {out}\nlog:\n{}", env.log_of(rx.pid));
        let delta = env.a.in_datagrams() - before;
        assert_eq!(delta, 0, "{how}: A's kernel received {delta} of the {count} datagrams");
        assert_eq!(env.xdp_counter(rx.pid, "rx_datagrams"), count as u64, "{how}");
        assert_eq!(env.xdp_counter(rx.pid, "rx_dropped"), 0, "{how}");
    }
    // Every receiver left: the program is detached and its pins removed.
    assert!(!env.a.exec(&["ip", "-d", "link", "show", "xa"]).contains("prog/xdp"));
    assert!(env.pin_dirs().is_empty(), "pins left: {:?}", env.pin_dirs());
}

/// A python sender of `flows` flows: one socket per flow (source ports `src_port`..), each
/// sending `count` datagrams "f<flow>-<i>:" repeated to `size` bytes, interleaved and paced.
const MQ_SENDER: &str = r#"
import socket, sys, time
dest, port, flows, count, size, src_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
socks = []
for f in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", src_port + f))
    socks.append(s)
for i in range(count):
    for f, s in enumerate(socks):
        tag = b"f%d-%d:" % (f, i)
        s.sendto((tag * (size // len(tag) + 1))[:size], (dest, port))
    if i % 4 == 3:
        time.sleep(0.002)
print("sent", flows * count)
"#;

/// Receives what [`MQ_SENDER`] sends (any order across flows), checks each datagram's bytes,
/// prints "ok N bad B dup D" once it has `total` distinct ones (or after 10 s of silence), then
/// waits (at most 20 s) for a datagram "quit" and prints "quit". `how`: `poll` (a socket
/// timeout: python polls), `block` (blocking recv), `epoll` (epoll, then recv).
const MQ_RECEIVER: &str = r#"
import socket, sys, select
ip, port, total, size, how = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((ip, port))
s.settimeout(None if how == "block" else 10)
ep = select.epoll() if how == "epoll" else None
if ep: ep.register(s.fileno(), select.EPOLLIN)
seen, bad, dup = set(), 0, 0
try:
    while len(seen) < total:
        if ep and not ep.poll(10): break
        d, a = s.recvfrom(65536)
        tag = d.split(b":", 1)[0] + b":"
        if d != (tag * (size // len(tag) + 1))[:size]:
            bad += 1
        elif tag in seen:
            dup += 1
        else:
            seen.add(tag)
except socket.timeout:
    pass
print("ok", len(seen), "bad", bad, "dup", dup, flush=True)
s.settimeout(20)
try:
    while s.recv(64) != b"quit":
        pass
    print("quit", flush=True)
except socket.timeout:
    pass
"#;

/// Several queues: a two-queue veth pair, a python receiver accelerated in A (ACCEL_XDP_QUEUES
/// left at `all`: an XSK on each queue) and a plain python sender in B with 16 flows (16 source
/// ports: B's kernel spreads them over its two TX queues, which a veth delivers on the same RX
/// queues of A). Every datagram arrives intact, once; A's kernel receives none of them; the
/// receiver's frames per queue (accel stat, and its log at exit) show both queues used. The
/// receiver waits for datagrams with poll, in a blocking recv, and with epoll (each sleeps on
/// every queue's socket).
#[test]
fn xdp_several_queues_python() {
    let env = XdpEnv::with_queues("xdp_mq_python", 2);
    let py = python3();
    let recv = py_args(&env.cx, MQ_RECEIVER, "mq_recv.py");
    let send = py_args(&env.cx, MQ_SENDER, "mq_send.py");
    for (k, how) in ["poll", "block", "epoll"].into_iter().enumerate() {
        let (port, flows, count, size) = (6100 + k as u16, 16u32, 250u32, 300u32);
        let total = flows * count;
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.arg(&recv).args([A_IP, &port.to_string(), &total.to_string(), &size.to_string(), how]);
        let mut rx = env.spawn(cmd, "mq-recv");
        env.wait_filter(&mut rx, &format!("{A_IP}:{port}"));
        let log = env.log_of(rx.pid);
        assert!(log.contains("xdp: xa queues 0-1 open"), "{log}");
        let before = env.a.in_datagrams();
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&send).args([A_IP, &port.to_string(), &flows.to_string(), &count.to_string(), &size.to_string(), "20000"]);
        env.cx.run(cmd, "mq-send", None).assert_success();
        let line = wait_stdout_line(&mut rx, "ok ", CHILD_TIMEOUT);
        assert!(line.contains(&format!("ok {total} bad 0 dup 0")), "{how}: {line}\nlog:\n{}", env.log_of(rx.pid));
        let delta = env.a.in_datagrams() - before;
        assert_eq!(delta, 0, "A's kernel received {delta} of the {total} datagrams");

        // accel stat: frames per queue, both used.
        let mut cmd = accel_tool_command();
        cmd.args(["stat", "--json", "-p", &rx.pid.to_string()]);
        let out = run(cmd, env.cx.dir(), "stat-mq", None);
        out.assert_success();
        let doc = JsonDoc::parse(&out.stdout_text(), env.cx.dir());
        let mut per_queue = Vec::new();
        for i in 0..2 {
            assert_eq!(doc.u(&format!("processes.0.xdp_queues.{i}.queue")), i, "{}", doc.text);
            per_queue.push(doc.u(&format!("processes.0.xdp_queues.{i}.rx_frames")));
        }
        eprintln!("frames per queue (accel stat): {per_queue:?}");
        assert!(per_queue.iter().all(|&n| n > 0), "not both queues: {per_queue:?}\n{}", doc.text);
        assert_eq!(per_queue.iter().sum::<u64>(), u64::from(total), "{}", doc.text);
        let mut cmd = accel_tool_command();
        cmd.args(["stat", "-v", "-p", &rx.pid.to_string()]);
        let text = run(cmd, env.cx.dir(), "stat-mq-text", None).stdout_text();
        assert!(text.contains(&format!("xdp frames received per queue: q0 {}, q1 {}", per_queue[0], per_queue[1])), "{text}");

        // Done: the receiver's exit log has the same counts.
        env.b.run_in(|| std::net::UdpSocket::bind(format!("{B_IP}:0")).unwrap().send_to(b"quit", format!("{A_IP}:{port}")).unwrap());
        let st = rx.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success() && rx.stdout_text().contains("quit"), "{}\n{}", rx.stdout_text(), rx.stderr_text());
        assert_eq!(env.xdp_counter(rx.pid, "rx_datagrams"), u64::from(total) + 1);
        assert_eq!(env.xdp_counter(rx.pid, "rx_dropped"), 0);
        let q0 = env.xdp_counter(rx.pid, "rx_frames_q0");
        let q1 = env.xdp_counter(rx.pid, "rx_frames_q1");
        assert!(q0 > 0 && q1 > 0 && q0 + q1 == u64::from(total) + 1, "{how}: q0 {q0} q1 {q1}");
        assert!(env.pin_dirs().is_empty(), "pins left: {:?}", env.pin_dirs());
    }
}

/// A python receiver in phases: in phase k, `n_k` threads each bind a socket on the next port
/// and take `count` datagrams on it (each checked: its port, its number, in order), then close
/// it. Prints "bound k" once every socket of the phase is bound, "phase k good G of N" after.
const RING_RECEIVER: &str = r#"
import socket, sys, threading
ip, base, count, phases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")]
def run(port, res, bound):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ip, port))
    s.settimeout(10)
    bound.wait()
    ok = bad = 0
    try:
        while ok + bad < count:
            d, a = s.recvfrom(2048)
            if d == b"%d-%d-" % (port, ok + bad) + bytes(range(100)): ok += 1
            else: bad += 1
    except socket.timeout:
        pass
    s.close()
    res[port] = (ok, bad)
port = base
for k, n in enumerate(phases):
    res = {}
    bound = threading.Barrier(n + 1)
    ts = [threading.Thread(target=run, args=(port + i, res, bound)) for i in range(n)]
    for t in ts: t.start()
    bound.wait()
    print("bound", k, flush=True)
    for t in ts: t.join()
    good = sum(1 for v in res.values() if v == (count, 0))
    print("phase", k, "good", good, "of", n, res if good < n else "", flush=True)
    port += n
"#;

/// Its sender: `count` rounds of one datagram to each of `n` ports from `first`.
const RING_SENDER: &str = r#"
import socket, sys, time
ip, first, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for k in range(count):
    for i in range(n):
        s.sendto(b"%d-%d-" % (first + i, k) + bytes(range(100)), (ip, first + i))
    if k % 8 == 7: time.sleep(0.001)
"#;

/// Threads that each send `count` datagrams from a socket of their own to `ip`: thread i to
/// port `first + i`, datagram k tagged (port, k); prints "sent", then waits `linger` seconds.
const RING_THREAD_SENDER: &str = r#"
import socket, sys, threading, time
ip, first, n, count, linger = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def run(i):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    for k in range(count):
        s.sendto(b"%d-%d-" % (first + i, k) + bytes(range(100)), (ip, first + i))
        if k % 8 == 7: time.sleep(0.001)
ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print("sent", flush=True)
time.sleep(linger)
"#;

/// VMA_RING_ALLOCATION_LOGIC_TX on the AF_XDP datapath: three threads, each with its own ring
/// (per-thread logic for RX and TX), send through their rings' own TX rings — a plain receiver
/// in B gets every datagram intact and in order, A's kernel sends none, and each ring sent its
/// thread's datagrams. With deferred kicks (ACCEL_XDP_TX_BATCH=8) every ring's unfilled last
/// batch leaves within the flush time, while the sender still runs. With TX per interface (the
/// default) the same rings receive only: everything leaves through ring 0.
#[test]
fn xdp_ring_allocation_tx_rings_send() {
    let env = XdpEnv::new("xdp_tx_rings");
    let py = python3();
    let recv = py_args(&env.cx, RING_RECEIVER, "ring_recv.py");
    let send = py_args(&env.cx, RING_THREAD_SENDER, "ring_thread_send.py");
    env.a.exec(&["ping", "-c", "1", "-W", "2", B_IP]);
    for (k, (batch, tx_logic)) in [("1", "20"), ("8", "20"), ("1", "0")].into_iter().enumerate() {
        let (first, n, count) = (6500u16 + 10 * k as u16, 3u32, 403u32);
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&recv).args([B_IP, &first.to_string(), &count.to_string(), &n.to_string()]);
        let mut rx = env.spawn(cmd, "tx-rings-recv");
        wait_stdout_line(&mut rx, "bound 0", CHILD_TIMEOUT);
        let out_before = env.counter(Side::A, "OutDatagrams");
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.env("VMA_RING_ALLOCATION_LOGIC_RX", "20").env("VMA_RING_ALLOCATION_LOGIC_TX", tx_logic).env("ACCEL_XDP_TX_BATCH", batch);
        cmd.arg(&send).args([B_IP, &first.to_string(), &n.to_string(), &count.to_string(), "3"]);
        let mut tx = env.spawn(cmd, "tx-rings-send");
        let line = wait_stdout_line(&mut rx, "phase 0 good", CHILD_TIMEOUT);
        assert!(line.contains(&format!("good {n} of {n}")), "batch {batch}: {line}\nlog:\n{}", env.log_of(tx.pid));
        assert!(tx.try_exited().is_none(), "batch {batch}: the sender had to exit for its last datagrams to leave");
        let st = tx.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "{st}\n{}", tx.stderr_text());
        let out = env.counter(Side::A, "OutDatagrams") - out_before;
        assert_eq!(out, 0, "batch {batch}: A's kernel sent {out}");
        let log = env.log_of(tx.pid);
        assert_eq!(env.xdp_counter(tx.pid, "tx_datagrams"), u64::from(n * count), "batch {batch}");
        for r in 0..n {
            let expected = match (tx_logic, r) {
                ("0", 0) => n * count,
                ("0", _) => 0,
                _ => count,
            };
            assert_eq!(env.xdp_counter(tx.pid, &format!("tx_datagrams_r{r}")), u64::from(expected), "batch {batch}, TX logic {tx_logic}: ring {r}\n{log}");
        }
        assert!(!log.contains("receive only"), "{log}");
    }
}

/// Two threads, two rings: the "hog" binds `port` and reads nothing until the "reader" (on
/// `port + 1`) has taken its `count` datagrams, then drains what its ring kept. Prints "hog H
/// reader R".
const RING_HOG: &str = r#"
import socket, sys, threading
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def mk(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ip, p))
    return s
ready = threading.Barrier(3)
done = threading.Event()
res = {}
def hog():
    s = mk(port); ready.wait(); done.wait(30)
    s.settimeout(1)
    n = 0
    try:
        while True:
            s.recvfrom(2048); n += 1
    except socket.timeout:
        pass
    res["hog"] = n
def reader():
    s = mk(port + 1); s.settimeout(10); ready.wait()
    ok = 0
    try:
        while ok < count:
            d, a = s.recvfrom(2048)
            if d != b"%d-%d-" % (port + 1, ok) + bytes(range(100)): break
            ok += 1
    except socket.timeout:
        pass
    res["reader"] = ok
    done.set()
ts = [threading.Thread(target=hog), threading.Thread(target=reader)]
for t in ts: t.start()
ready.wait()
print("bound", flush=True)
for t in ts: t.join()
print("hog", res["hog"], "reader", res["reader"], flush=True)
"#;

/// A ring whose socket does not read keeps only its share of the receive frames: 5000
/// datagrams to a socket that reads nothing (its ring drops what its RX rings cannot hold, as a
/// full socket buffer would), then 2000 to another thread's socket on another ring — which gets
/// every one. A's kernel sees none of either.
#[test]
fn xdp_ring_that_does_not_read_leaves_the_others_their_frames() {
    let env = XdpEnv::with_queues("xdp_ring_hog", 2);
    let py = python3();
    let recv = py_args(&env.cx, RING_HOG, "ring_hog.py");
    let send = py_args(&env.cx, RING_SENDER, "ring_send.py");
    let (port, count) = (6400u16, 2000u32);
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.env("VMA_RING_ALLOCATION_LOGIC_RX", "20").env("ACCEL_RX_BUFS", "8192");
    cmd.arg(&recv).args([A_IP, &port.to_string(), &count.to_string()]);
    let mut rx = env.spawn(cmd, "ring-hog");
    wait_stdout_line(&mut rx, "bound", CHILD_TIMEOUT);
    let before = env.a.in_datagrams();
    for (p, n) in [(port, 5000u32), (port + 1, count)] {
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&send).args([A_IP, &p.to_string(), "1", &n.to_string()]);
        env.cx.run(cmd, "ring-hog-send", None).assert_success();
    }
    let line = wait_stdout_line(&mut rx, "reader", CHILD_TIMEOUT);
    let st = rx.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "{st}\n{}", rx.stderr_text());
    let field = |name: &str| -> u64 {
        let mut w = line.split_whitespace();
        while let Some(x) = w.next() {
            if x == name {
                return w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        panic!("no {name} in {line:?}")
    };
    let log = env.log_of(rx.pid);
    assert_eq!(field("reader"), u64::from(count), "{line}\nlog:\n{log}");
    // Its RX rings (128 per queue with fill rings of 1024) and a polled batch at most.
    let hog = field("hog");
    assert!(hog > 0 && hog <= 2 * 128 + 64, "{line}\nlog:\n{log}");
    assert_eq!(env.a.in_datagrams() - before, 0, "A's kernel received some");
    assert!(log.contains("xdp: ring 1 opened"), "{log}");
}

/// VMA_RING_ALLOCATION_LOGIC_RX on the AF_XDP datapath: sockets of different ring keys (per
/// thread, per socket) are served by XSKs of their own on the same queue, sharing its buffers
/// — each ring receives exactly its sockets' datagrams, intact and in order, and A's kernel
/// none; the default (per interface) keeps one ring; rings left by closed sockets serve the
/// next keys instead of new ones; past the program's 32 rings, keys share rings (one log line)
/// and still get everything. On a two-queue veth: every ring has a socket on each queue, and
/// the flows (one per destination port) land on either.
#[test]
fn xdp_ring_allocation_maps_sockets_onto_xsks() {
    let env = XdpEnv::with_queues("xdp_rings", 2);
    let py = python3();
    let recv = py_args(&env.cx, RING_RECEIVER, "ring_recv.py");
    let send = py_args(&env.cx, RING_SENDER, "ring_send.py");
    // (logic, sockets per phase, datagrams per socket, environment, frames expected per ring at
    // exit, what the "no ring of its own" line says if there must be one)
    type Case<'a> = (&'a str, &'a [u32], u32, &'a [(&'a str, &'a str)], Option<&'a [u64]>, Option<&'a str>);
    let pool = [("ACCEL_RX_BUFS", "8192")];
    let cases: [Case; 5] = [
        // Phase 1: three threads, three rings; phase 2: two threads take the two lowest free rings.
        ("20", &[3, 2], 400, &pool, Some(&[800, 800, 400]), None),
        ("10", &[3], 400, &pool, Some(&[400, 400, 400]), None),
        ("0", &[3], 400, &[], Some(&[1200]), None),
        // Fill rings of 1024 (the default) serve four rings: the fifth key shares the first.
        ("20", &[5], 400, &[], Some(&[800, 400, 400, 400]), Some("as many as fill rings of 1024 frames can serve")),
        // 34 threads with fill rings for 32 rings: rings 0-31, then two keys share.
        ("20", &[34], 30, &[("ACCEL_RX_WRE", "16384"), ("ACCEL_RX_BUFS", "32768")], None, Some("the most the filter program serves")),
    ];
    let mut base = 6300u16;
    for (logic, phases, count, vars, rings, shared) in cases {
        let label = format!("logic {logic}, phases {phases:?}");
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.env("VMA_RING_ALLOCATION_LOGIC_RX", logic).envs(vars.iter().copied());
        let phase_list: Vec<String> = phases.iter().map(u32::to_string).collect();
        cmd.arg(&recv).args([A_IP, &base.to_string(), &count.to_string(), &phase_list.join(",")]);
        let mut rx = env.spawn(cmd, &format!("rings-{logic}"));
        let before = env.a.in_datagrams();
        let mut port = base;
        for (k, &n) in phases.iter().enumerate() {
            wait_stdout_line(&mut rx, &format!("bound {k}"), CHILD_TIMEOUT);
            let mut cmd = env.cmd(Side::B, false, &py);
            cmd.arg(&send).args([A_IP, &port.to_string(), &n.to_string(), &count.to_string()]);
            env.cx.run(cmd, "rings-send", None).assert_success();
            let line = wait_stdout_line(&mut rx, &format!("phase {k} good"), CHILD_TIMEOUT);
            assert!(line.contains(&format!("good {n} of {n}")), "{label}: {line}\nlog:\n{}", env.log_of(rx.pid));
            port += n as u16;
        }
        let st = rx.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "{label}: {st}\n{}", rx.stderr_text());
        let total: u64 = phases.iter().map(|&n| u64::from(n * count)).sum();
        let delta = env.a.in_datagrams() - before;
        assert_eq!(delta, 0, "{label}: A's kernel received {delta} of the {total} datagrams");
        let log = env.log_of(rx.pid);
        assert_eq!(env.xdp_counter(rx.pid, "rx_datagrams"), total, "{label}");
        assert_eq!(env.xdp_counter(rx.pid, "rx_unclaimed"), 0, "{label}");
        let counters = env.xdp_counters(rx.pid).unwrap_or_default();
        let per_ring: Vec<u64> = (0..)
            .map_while(|k| counters.iter().find(|(name, _)| *name == format!("rx_frames_r{k}")).map(|(_, v)| *v))
            .collect();
        let per_queue = [env.xdp_counter(rx.pid, "rx_frames_q0"), env.xdp_counter(rx.pid, "rx_frames_q1")];
        eprintln!("{label}: frames per ring {per_ring:?}, per queue {per_queue:?}");
        assert!(log.contains("xdp: xa queues 0-1 open"), "{label}\n{log}");
        // Which queue a flow lands on is a hash with a per-boot seed: with 34 flows, both.
        if phases[0] > 30 {
            assert!(per_queue.iter().all(|&n| n > 0), "{label}: not both queues: {per_queue:?}");
        }
        let opened = log.lines().filter(|l| l.contains("xdp: ring ") && l.contains(" opened for ")).count();
        match rings {
            Some(expected) => {
                assert_eq!(per_ring, expected, "{label}: frames per ring\n{log}");
                assert_eq!(opened, expected.len() - 1, "{label}: rings opened\n{log}");
            }
            None => {
                assert_eq!(per_ring.len(), 32, "{label}: {per_ring:?}");
                assert!(per_ring.iter().all(|&n| n >= u64::from(count)), "{label}: a ring unused: {per_ring:?}");
                assert_eq!(per_ring.iter().sum::<u64>(), total, "{label}");
            }
        }
        match shared {
            None => assert!(!log.contains("no ring of its own"), "{label}\n{log}"),
            Some(why) => {
                let lines: Vec<&str> = log.lines().filter(|l| l.contains("no ring of its own")).collect();
                assert!(lines.len() == 1 && lines[0].contains(why), "{label}: one line for the sharing, saying {why:?}\n{log}");
            }
        }
        base = port;
    }
    assert!(env.pin_dirs().is_empty(), "pins left: {:?}", env.pin_dirs());
}

/// An accelerated python sender in B: B's kernel sends (almost) none of the datagrams (the
/// first ones, before the neighbour is known, are its), a plain receiver in A gets all of them
/// intact; then both ends accelerated: neither kernel moves.
#[test]
fn xdp_python_sender_and_both_ends() {
    let env = XdpEnv::new("xdp_python_tx");
    let py = python3();
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    let count = 3000u64;
    for (port, rx_accel) in [(6100u16, false), (6101, true)] {
        let mut cmd = env.cmd(Side::A, rx_accel, &py);
        cmd.arg(&recv).args([A_IP, &port.to_string(), &count.to_string(), "1000", "block"]);
        let mut rx = env.spawn(cmd, &format!("recv-{port}"));
        if rx_accel {
            env.wait_filter(&mut rx, &format!("{A_IP}:{port}"));
        } else {
            wait_stdout_line(&mut rx, "bound", LISTEN_DEADLINE);
        }
        let (out_before, in_before) = (env.counter(Side::B, "OutDatagrams"), env.a.in_datagrams());
        let mut cmd = env.cmd(Side::B, true, &py);
        cmd.arg(&send).args([A_IP, &port.to_string(), &count.to_string(), "1000", "7100"]);
        let (tx, tx_pid) = env.run(cmd, &format!("send-{port}"), None);
        tx.assert_success();
        let st = rx.wait_timeout(CHILD_TIMEOUT);
        let out = rx.stdout_text();
        assert!(st.success() && out.contains(&format!("ok {count} bad 0")), "receiver: {st}\n{out}");
        let kernel_sent = env.counter(Side::B, "OutDatagrams") - out_before;
        let kernel_received = env.a.in_datagrams() - in_before;
        eprintln!("port {port}: B's kernel sent {kernel_sent}, A's kernel received {kernel_received}");
        // The first ones, while B's neighbour entry for A is being resolved, are the kernel's.
        assert!(kernel_sent <= count / 50, "B's kernel sent {kernel_sent} of {count}: not bypassed");
        let xdp_sent = env.xdp_counter(tx_pid, "tx_datagrams");
        assert_eq!(xdp_sent + kernel_sent, count, "sent through the XSK + through the kernel");
        if rx_accel {
            assert_eq!(kernel_received, 0);
        } else {
            assert_eq!(kernel_received, count);
        }
    }
}

/// A python sniffer: an AF_PACKET socket on `dev` that classifies the UDP checksum of the
/// first `count` received frames to `port` (0, the pseudo-header sum left for offload, a
/// complete and correct one, or wrong) and prints "partial P full F none N bad B".
const SNIFFER: &str = r#"
import socket, sys, struct, time
dev, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((dev, 0))
s.settimeout(10)
print("ready", flush=True)
def fold(x):
    while x > 0xffff: x = (x & 0xffff) + (x >> 16)
    return x
def sum16(b):
    if len(b) % 2: b += b"\0"
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))
n = {"partial": 0, "full": 0, "none": 0, "bad": 0}
deadline = time.time() + 30
while sum(n.values()) < count and time.time() < deadline:
    try: f, a = s.recvfrom(65536)
    except socket.timeout: break
    if a[2] == socket.PACKET_OUTGOING: continue
    ip = f[14:]
    if len(ip) < 28 or ip[9] != 17 or ip[0] != 0x45: continue
    udp = ip[20:struct.unpack("!H", ip[2:4])[0]]
    if struct.unpack("!H", udp[2:4])[0] != port: continue
    pseudo = sum16(ip[12:20]) + 17 + len(udp)
    field = struct.unpack("!H", udp[6:8])[0]
    if field == 0: n["none"] += 1
    elif field == fold(pseudo): n["partial"] += 1
    elif fold(pseudo + sum16(udp)) == 0xffff: n["full"] += 1
    else: n["bad"] += 1
print(" ".join("%s %d" % kv for kv in n.items()), flush=True)
"#;

/// The UDP checksums of an accelerated sender's datagrams, seen by a raw socket on the receiving
/// side: by default left to the device (AF_XDP TX metadata), so across veth they arrive as a
/// kernel socket's do, with the pseudo-header sum in the field; with ACCEL_XDP_TX_CSUM_OFFLOAD=0
/// computed in user space, complete and correct on the wire; offloaded to a device without
/// checksum offload (`ethtool -K xb tx off`), completed by the kernel from the request's start
/// and offset, complete and correct too. Each way a plain receiver gets every datagram intact
/// and its kernel counts no checksum error. (Needs a kernel with AF_XDP TX metadata: 6.10.3+.)
#[test]
fn xdp_sent_udp_checksums_offloaded_or_computed() {
    let env = XdpEnv::new("xdp_tx_csum");
    let py = python3();
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    let sniff = py_args(&env.cx, SNIFFER, "sniff.py");
    let count = 600u64;
    // B's neighbour entry for A first: until it is known the kernel sends for the XSK.
    env.b.exec(&["ping", "-c", "1", "-W", "2", A_IP]);
    for (port, offload, device_csum) in [(6110u16, true, true), (6111, false, true), (6112, true, false)] {
        if !device_csum {
            env.b.exec(&["ethtool", "-K", "xb", "tx", "off"]);
        }
        let mut cmd = env.cmd(Side::A, false, &py);
        cmd.arg(&recv).args([A_IP, &port.to_string(), &count.to_string(), "999", "block"]);
        let mut rx = env.spawn(cmd, &format!("recv-{port}"));
        wait_stdout_line(&mut rx, "bound", LISTEN_DEADLINE);
        let mut cmd = env.cmd(Side::A, false, &py);
        cmd.arg(&sniff).args([A_DEV, &port.to_string(), &count.to_string()]);
        let mut sniffer = env.spawn(cmd, &format!("sniff-{port}"));
        wait_stdout_line(&mut sniffer, "ready", LISTEN_DEADLINE);
        let csum_errors = env.counter(Side::A, "InCsumErrors");

        let mut cmd = env.cmd(Side::B, true, &py);
        if !offload {
            cmd.env("ACCEL_XDP_TX_CSUM_OFFLOAD", "0");
        }
        cmd.arg(&send).args([A_IP, &port.to_string(), &count.to_string(), "999", &(port + 1000).to_string()]);
        let (tx, tx_pid) = env.run(cmd, &format!("send-{port}"), None);
        tx.assert_success();
        let st = rx.wait_timeout(CHILD_TIMEOUT);
        let out = rx.stdout_text();
        assert!(st.success() && out.contains(&format!("ok {count} bad 0")), "receiver: {st}\n{out}");
        let st = sniffer.wait_timeout(CHILD_TIMEOUT);
        let seen = sniffer.stdout_text();
        assert!(st.success(), "sniffer: {st}\n{seen}\n{}", sniffer.stderr_text());
        let field = |name: &str| -> u64 {
            let words: Vec<&str> = seen.split_whitespace().collect();
            let at = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("no {name} in {seen}"));
            words[at + 1].parse().unwrap()
        };
        let (partial, full) = (field("partial"), field("full"));
        let xdp_sent = env.xdp_counter(tx_pid, "tx_datagrams");
        eprintln!("offload {offload}, device checksums {device_csum}: {xdp_sent} of {count} sent through the XSK; seen: {}", seen.trim());
        assert_eq!((field("none"), field("bad")), (0, 0), "{seen}");
        assert!(xdp_sent >= count * 49 / 50, "only {xdp_sent} of {count} through the XSK");
        let expected = if offload { "UDP checksums offloaded" } else { "UDP checksums computed" };
        assert!(env.log_of(tx_pid).contains(expected), "no '{expected}' in the sender's log\n{}", env.log_of(tx_pid));
        if !device_csum {
            // Completed on the way out (the kernel's own sends are, too).
            assert_eq!((partial, full), (0, count), "{seen}");
        } else if offload {
            // The kernel's own sends (the first ones, while the neighbour is resolved) look the same.
            assert_eq!((partial, full), (count, 0), "{seen}");
        } else {
            assert_eq!((partial, full), (count - xdp_sent, xdp_sent), "{seen}");
        }
        assert_eq!(env.counter(Side::A, "InCsumErrors"), csum_errors, "checksum errors counted by A's kernel");
    }
}

/// Datagrams over the MTU from an accelerated sender go through its kernel, which fragments
/// them (the XSK sends whole frames only): a plain receiver gets every 4000-byte datagram intact.
#[test]
fn xdp_oversize_datagrams_go_through_the_kernel() {
    let env = XdpEnv::new("xdp_oversize");
    env.b.exec(&["ping", "-c", "1", "-W", "2", A_IP]);
    let py = python3();
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    let (count, port) = (64u64, 6130u16);
    let mut cmd = env.cmd(Side::A, false, &py);
    cmd.arg(&recv).args([A_IP, &port.to_string(), &count.to_string(), "4000", "block"]);
    let mut rx = env.spawn(cmd, "recv");
    wait_stdout_line(&mut rx, "bound", LISTEN_DEADLINE);
    let out_before = env.counter(Side::B, "OutDatagrams");
    let mut cmd = env.cmd(Side::B, true, &py);
    cmd.arg(&send).args([A_IP, &port.to_string(), &count.to_string(), "4000", "7130"]);
    let (tx, tx_pid) = env.run(cmd, "send", None);
    tx.assert_success();
    let st = rx.wait_timeout(CHILD_TIMEOUT);
    let out = rx.stdout_text();
    assert!(st.success() && out.contains(&format!("ok {count} bad 0")), "receiver: {st}\n{out}");
    assert_eq!(env.counter(Side::B, "OutDatagrams") - out_before, count, "B's kernel sent them all");
    assert_eq!(env.xdp_counter(tx_pid, "tx_datagrams"), 0, "none through the XSK");
}

/// A SOCK_SEQPACKET socket pair: every read() of the reading end returns exactly one message,
/// so a program reading its stdin from it sends one datagram per message we write.
fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair fills two fds we then own.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// socat: UDP-SENDTO accelerated in B (-b 1000: 1000-byte datagrams) to UDP-RECV accelerated
/// in A, B's neighbour entry for A resolved: 400 KB arrive intact and in order; neither kernel
/// carries them.
#[test]
fn xdp_socat() {
    let env = XdpEnv::new("xdp_socat");
    let port = 6200;
    let mut cmd = env.cmd(Side::A, true, which("socat"));
    cmd.args(["-u", &format!("UDP-RECV:{port},bind={A_IP}"), "STDOUT"]);
    let mut server = env.spawn(cmd, "server");
    env.wait_filter(&mut server, &format!("{A_IP}:{port}"));
    let data = random_bytes(400 * 1000, 77);
    let input = env.cx.write_file("input.bin", &data);
    // socat sends its 400 datagrams within a millisecond or two: all of them would go through
    // B's kernel while it resolves A's address (see xdp_python_sender_and_both_ends for that
    // case). Here B knows A already.
    env.b.exec(&["ping", "-c", "1", "-W", "2", A_IP]);
    let (in_before, out_before) = (env.a.in_datagrams(), env.counter(Side::B, "OutDatagrams"));
    let mut cmd = env.cmd(Side::B, true, which("socat"));
    cmd.args(["-u", "-b", "1000", "STDIN", &format!("UDP-SENDTO:{A_IP}:{port}")]);
    let (client, client_pid) = env.run(cmd, "client", Some(&input));
    client.assert_success();
    assert!(wait_file_len(&server.out, data.len() as u64, Duration::from_secs(15)), "socat wrote {} bytes", server.stdout_bytes().len());
    std::thread::sleep(Duration::from_millis(200));
    assert_stat_shows_xdp_queue(&env, server.pid, &format!("{A_IP}:{port}"), 400);
    server.stop();
    assert_same_bytes("socat output", &server.stdout_bytes(), &data);
    let kernel_in = env.a.in_datagrams() - in_before;
    let kernel_out = env.counter(Side::B, "OutDatagrams") - out_before;
    eprintln!("socat: 400 datagrams; A's kernel received {kernel_in}, B's sent {kernel_out}");
    assert_eq!(kernel_in, 0, "A's kernel received datagrams");
    assert_eq!(env.xdp_counter(client_pid, "tx_datagrams") + kernel_out, 400);
    assert!(kernel_out <= 20, "B's kernel sent {kernel_out} of 400");
}

/// `accel stat --json -p PID` of an accelerated receiver in A: its socket on `local` is offloaded
/// through xdp, names the AF_XDP queue as its ring with depth and fill, counts `datagrams`
/// offloaded, and the queue is listed as a ring in the process's memory with its buffers.
#[track_caller]
fn assert_stat_shows_xdp_queue(env: &XdpEnv, pid: u32, local: &str, datagrams: u64) {
    let mut cmd = accel_tool_command();
    cmd.args(["stat", "--json", "-p", &pid.to_string()]);
    let out = run(cmd, env.cx.dir(), "stat-xdp", None);
    out.assert_success();
    let doc = JsonDoc::parse(&out.stdout_text(), env.cx.dir());
    let sock = (0..)
        .map(|i| format!("processes.0.sockets.{i}"))
        .take_while(|k| doc.get(&format!("{k}.proto")).is_some())
        .find(|k| doc.get(&format!("{k}.local")) == Some(local))
        .unwrap_or_else(|| panic!("no socket on {local} in accel stat:\n{}", doc.text));
    let ring = format!("xsk-{}-q0", A_DEV);
    assert_eq!(doc.get(&format!("{sock}.vi")), Some(format!("xdp/{A_DEV}").as_str()), "{}", doc.text);
    assert_eq!(doc.get(&format!("{sock}.ring")), Some(ring.as_str()), "{}", doc.text);
    assert!(doc.u(&format!("{sock}.ring_depth")) > 0, "{}", doc.text);
    assert!(doc.get(&format!("{sock}.ring_fill")).is_some_and(|v| v != "null"), "{}", doc.text);
    assert_eq!(doc.u(&format!("{sock}.counters.shm_rx_packets")), datagrams, "offloaded receives\n{}", doc.text);
    let r = (0..)
        .map(|i| format!("processes.0.rings.{i}"))
        .take_while(|k| doc.get(&format!("{k}.name")).is_some())
        .find(|k| doc.get(&format!("{k}.name")) == Some(ring.as_str()))
        .unwrap_or_else(|| panic!("the AF_XDP queue is not among the rings:\n{}", doc.text));
    assert_eq!(doc.get(&format!("{r}.in_memory")), Some("true"), "{}", doc.text);
    assert_eq!(doc.u(&format!("{r}.owner")), u64::from(pid));
    let in_use = doc.u(&format!("{r}.buffers_in_use"));
    assert!(in_use > 0 && in_use <= doc.u(&format!("{r}.depth")) + 64, "buffers in use {in_use}\n{}", doc.text);
}

/// nc -u accelerated in B (stdin a seqpacket socket) to nc -u -l accelerated in A: 400 messages
/// of 1000 bytes, each tagged with its number, all arrive intact, once each; A's kernel receives
/// only what B's kernel sent (see below), the rest bypasses both kernels.
#[test]
fn xdp_nc() {
    let env = XdpEnv::new("xdp_nc");
    let nc = which("nc");
    let port = 6250;
    let mut cmd = env.cmd(Side::A, true, &nc);
    cmd.args(["-d", "-u", "-l", A_IP, &port.to_string()]);
    let mut server = env.spawn(cmd, "server");
    env.wait_filter(&mut server, &format!("{A_IP}:{port}"));
    let mut data = random_bytes(400 * 1000, 78);
    for (i, c) in data.chunks_mut(1000).enumerate() {
        c[..4].copy_from_slice(&(i as u32).to_be_bytes());
    }
    let (in_before, out_before) = (env.a.in_datagrams(), env.counter(Side::B, "OutDatagrams"));
    let (ours, theirs) = seqpacket_pair();
    let mut cmd = env.cmd(Side::B, true, &nc);
    cmd.args(["-u", "-w", "1", A_IP, &port.to_string()]);
    let mut client = Proc::spawn_stdio(cmd, env.cx.dir(), "client", Stdio::from(theirs));
    {
        let mut f = std::fs::File::from(ours);
        for c in data.chunks(1000) {
            f.write_all(c).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let st = client.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "nc client: {st}\n{}", client.stderr_text());
    assert!(wait_file_len(&server.out, data.len() as u64, Duration::from_secs(15)), "nc -l wrote {} bytes", server.stdout_bytes().len());
    std::thread::sleep(Duration::from_millis(200));
    server.stop();
    // nc buffers its stdin: it may send two messages as one 2000-byte datagram, which is over
    // the MTU and so goes through both kernels, and may then arrive after datagrams sent later
    // through the XSK (UDP keeps no order across paths). Each message must arrive intact, once.
    let got = server.stdout_bytes();
    assert_eq!(got.len(), data.len(), "nc -l wrote {} bytes", got.len());
    let mut chunks: Vec<&[u8]> = got.chunks(1000).collect();
    chunks.sort_by_key(|c| u32::from_be_bytes(c[..4].try_into().unwrap()));
    assert_same_bytes("nc output (messages in number order)", &chunks.concat(), &data);
    let kernel_in = env.a.in_datagrams() - in_before;
    let kernel_out = env.counter(Side::B, "OutDatagrams") - out_before;
    let xdp_sent = env.xdp_counter(client.pid, "tx_datagrams");
    eprintln!("nc: {xdp_sent} datagrams through B's XSK; A's kernel received {kernel_in}, B's sent {kernel_out}");
    // nc buffers its stdin and may write two messages as one 2000-byte datagram: over the MTU,
    // so B's kernel sends it (fragmented) and A's kernel receives it (the program passes
    // fragments). Everything else bypasses both kernels.
    assert!(kernel_in <= kernel_out, "A's kernel received {kernel_in}, more than B's kernel sent ({kernel_out})");
    assert!(xdp_sent >= 200, "only {xdp_sent} datagrams through the XSK");
}


/// iperf 2 UDP: the accelerated client in B sends through the XSK (B's kernel sends almost
/// nothing) to a plain server in A, which reports nothing lost; then with an accelerated
/// server too. The iperf 2 server asks for SO_TIMESTAMP, which the bypass does not provide:
/// its socket goes back to the kernel (logged) and still gets everything, also what was
/// already on its way to the XSK (kept for it in its stash).
#[test]
fn xdp_iperf2_udp() {
    let env = XdpEnv::new("xdp_iperf2");
    let iperf = which("iperf");
    for (port, srv_accel) in [(6300u16, false), (6301, true)] {
        let ps = port.to_string();
        let mut cmd = env.cmd(Side::A, srv_accel, &iperf);
        cmd.args(["-s", "-u", "-B", A_IP, "-p", &ps, "-y", "C", "-P", "1"]);
        let mut server = env.spawn(cmd, &format!("server-{port}"));
        env.wait_udp(Side::A, &mut server, port);
        let out_before = env.counter(Side::B, "OutDatagrams");
        let mut cmd = env.cmd(Side::B, true, &iperf);
        cmd.args(["-c", A_IP, "-u", "-b", "100M", "-n", "4M", "-l", "1470", "-p", &ps, "-y", "C"]);
        let (client, client_pid) = env.run(cmd, &format!("client-{port}"), None);
        client.assert_success();
        let st = server.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "iperf server: {st}\n{}", server.stderr_text());
        let s = iperf_csv(&server.stdout_text());
        let srv = s.last().filter(|r| r.len() >= 12).unwrap_or_else(|| panic!("no server report\n{}", server.stdout_text()));
        let lost: i64 = srv[10].parse().unwrap();
        let total: i64 = srv[11].parse().unwrap();
        let kernel_sent = env.counter(Side::B, "OutDatagrams") - out_before;
        eprintln!("iperf2 port {port}: {total} datagrams, {lost} lost, B's kernel sent {kernel_sent}");
        assert!(total >= 2800, "{total} datagrams");
        assert_eq!(lost, 0, "iperf server lost datagrams\n{}", server.stdout_text());
        assert!(kernel_sent as i64 <= total / 50, "B's kernel sent {kernel_sent}: not bypassed");
        assert!(env.xdp_counter(client_pid, "tx_datagrams") >= total as u64 - 10);
        if srv_accel {
            assert!(env.log_of(server.pid).contains("needs the kernel's receive path"), "{}", env.log_of(server.pid));
        }
    }
}

/// iperf3 UDP with both ends accelerated: the TCP control connection stays in the kernel, the
/// datagrams bypass both kernels.
#[test]
fn xdp_iperf3_udp_both_ends() {
    let env = XdpEnv::new("xdp_iperf3");
    let iperf3 = which("iperf3");
    let port = 6400u16;
    let ps = port.to_string();
    let mut cmd = env.cmd(Side::A, true, &iperf3);
    cmd.args(["-s", "-1", "-B", A_IP, "-p", &ps]);
    let mut server = env.spawn(cmd, "server");
    env.wait_tcp(Side::A, &mut server, port);
    let (in_before, out_before) = (env.a.in_datagrams(), env.counter(Side::B, "OutDatagrams"));
    let mut cmd = env.cmd(Side::B, true, &iperf3);
    cmd.args(["-c", A_IP, "-p", &ps, "-u", "-b", "50M", "-t", "2", "-l", "1400", "--json"]);
    let client = env.cx.run(cmd, "client", None);
    client.assert_success();
    let st = server.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "iperf3 server: {st}\n{}", server.stderr_text());
    let j = Json::parse(&client.stdout_text()).unwrap_or_else(|e| panic!("iperf3 json ({e}):\n{}", client.stdout_text()));
    let packets = j.num("end.sum.packets").expect("end.sum.packets");
    let lost = j.num("end.sum.lost_packets").expect("lost_packets");
    let kernel_in = env.a.in_datagrams() - in_before;
    let kernel_out = env.counter(Side::B, "OutDatagrams") - out_before;
    eprintln!("iperf3: {packets} packets, {lost} lost; A's kernel received {kernel_in}, B's sent {kernel_out}");
    assert!(packets >= 5000.0, "{packets} packets");
    assert_eq!(lost, 0.0, "iperf3 lost packets");
    // The first datagrams (iperf3's UDP handshake, before A's filter or B's neighbour entry):
    // a handful at most.
    assert!(kernel_in <= 10 && kernel_out as f64 <= packets / 50.0, "kernel in {kernel_in}, out {kernel_out} for {packets}");
    assert!(env.xdp_counter(server.pid, "rx_datagrams") as f64 >= packets - 10.0);
}

/// sockperf ping-pong and throughput across the veth: accelerated server, client, and both.
#[test]
fn xdp_sockperf_ping_pong_and_throughput() {
    let env = XdpEnv::new("xdp_sockperf");
    let sockperf = which("sockperf");
    let mut port = 6500u16;
    for (srv_accel, cli_accel) in [(true, false), (false, true), (true, true)] {
        for mode in ["pp", "tp"] {
            port += 1;
            let ps = port.to_string();
            let mut cmd = env.cmd(Side::A, srv_accel, &sockperf);
            cmd.args(["sr", "-i", A_IP, "-p", &ps]);
            let mut server = env.spawn(cmd, &format!("sr-{port}"));
            if srv_accel {
                env.wait_filter(&mut server, &format!("{A_IP}:{port}"));
            } else {
                env.wait_udp(Side::A, &mut server, port);
            }
            let (in_before, out_before) = (env.a.in_datagrams(), env.counter(Side::B, "OutDatagrams"));
            let mut cmd = env.cmd(Side::B, cli_accel, &sockperf);
            // pp: sockperf sizes its sequence table from --mps; tp: a rate the receiver keeps up
            // with on two shared cores (the rate is the bench's business, not this test's).
            cmd.args([mode, "-i", A_IP, "-p", &ps, "-t", "1", "--mps", if mode == "pp" { "3000000" } else { "20000" }]);
            let client = env.cx.run(cmd, &format!("{mode}-{port}"), None);
            let out = client.stdout_text() + &client.stderr;
            assert!(client.status.success(), "sockperf {mode}: {}\n{out}", client.status);
            server.signal(libc::SIGINT);
            let st = server.wait_timeout(CHILD_TIMEOUT);
            let server_out = server.stdout_text() + &server.stderr_text();
            assert!(st.success(), "sockperf sr: {st}\n{server_out}");
            let kernel_in = env.a.in_datagrams() - in_before;
            let kernel_out = env.counter(Side::B, "OutDatagrams") - out_before;
            let what = format!("sockperf {mode} server accel {srv_accel} client accel {cli_accel}");
            let messages = if mode == "pp" {
                assert!(
                    out.contains("# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0"),
                    "{what}: drops\n{out}"
                );
                out.lines()
                    .find(|l| l.contains("[Valid Duration]"))
                    .and_then(|l| sockperf_value(l, "ReceivedMessages"))
                    .unwrap_or_else(|| panic!("{what}: no ReceivedMessages\n{out}"))
            } else {
                let sent = sockperf_value(&out, "Total of").unwrap_or_else(|| panic!("{what}: no total sent\n{out}"));
                let received = sockperf_value(&server_out, "Total")
                    .unwrap_or_else(|| panic!("{what}: the server reported no total\n{server_out}"));
                // A plain (kernel) server on these two shared cores may drop some at this rate:
                // that is the kernel's receive, not ours.
                let floor = if srv_accel { sent * 0.99 } else { 1000.0 };
                assert!(received <= sent && received >= floor, "{what}: received {received} of {sent}\n{out}\n{server_out}");
                received
            };
            eprintln!("{what}: {messages} messages; A's kernel received {kernel_in}, B's sent {kernel_out}");
            assert!(messages >= 1000.0, "{what}: {messages} messages\n{out}");
            if srv_accel {
                assert!(kernel_in <= 10, "{what}: A's kernel received {kernel_in}");
                assert!(env.xdp_counter(server.pid, "rx_datagrams") as f64 >= messages, "{what}");
            }
            if cli_accel {
                assert!(kernel_out as f64 <= messages / 50.0, "{what}: B's kernel sent {kernel_out}");
            }
        }
    }
}

/// A python probe for batched kicks (ACCEL_XDP_TX_BATCH). `tail`: sends 5 datagrams, prints the
/// monotonic time, then sleeps 1.5 s without touching a socket (only the flusher thread can send
/// them before exit). `rr*`: 50 request/answer round trips, waiting for each answer in a
/// blocking recvfrom, poll, epoll, select, or a loop of non-blocking recvfrom; prints the median
/// round trip in ms. `fork`: 40 times, sends 40 datagrams and forks a child that polls the
/// (inherited, accelerated) socket and exits; prints "forked N".
const BATCH_PROBE: &str = r#"
import socket, sys, time, select, os
dest, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7200))
if mode == "tail":
    for i in range(5):
        s.sendto(b"tail %d" % i, (dest, port))
    print("sent %.6f" % time.monotonic(), flush=True)
    time.sleep(1.5)
elif mode == "fork":
    n = 0
    for k in range(40):
        for i in range(40):
            s.sendto(b"stream %d" % i, (dest, port))
        pid = os.fork()
        if pid == 0:
            select.select([s], [], [], 0)
            try: s.recv(100, socket.MSG_DONTWAIT)
            except BlockingIOError: pass
            os._exit(0)
        os.waitpid(pid, 0)
        n += 1
    print("forked %d" % n, flush=True)
else:
    rtts = []
    p = select.poll(); p.register(s.fileno(), select.POLLIN)
    ep = select.epoll(); ep.register(s.fileno(), select.EPOLLIN)
    for i in range(50):
        t = time.monotonic()
        s.sendto(b"req %d" % i, (dest, port))
        if mode == "rr-poll" and not p.poll(5000): break
        if mode == "rr-epoll" and not ep.poll(5): break
        if mode == "rr-select" and not select.select([s], [], [], 5)[0]: break
        if mode == "rr-nonblock":
            while True:
                try:
                    d, a = s.recvfrom(100, socket.MSG_DONTWAIT)
                    break
                except BlockingIOError:
                    if time.monotonic() - t > 5: raise
        else:
            d, a = s.recvfrom(100)
        assert d == b"ans %d" % i, d
        rtts.append(time.monotonic() - t)
    rtts.sort()
    print("rtts %d median_ms %.3f" % (len(rtts), 1000 * rtts[len(rtts) // 2]), flush=True)
"#;

/// The other end of [`BATCH_PROBE`]: `tail` prints each datagram's arrival time; `rr` answers
/// 50 requests.
const BATCH_PEER: &str = r#"
import socket, sys, time
ip, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, port))
s.settimeout(10)
print("bound", flush=True)
for i in range(5 if mode == "tail" else 50):
    d, a = s.recvfrom(100)
    if mode == "tail":
        print("got %s %.6f" % (d.decode(), time.monotonic()), flush=True)
    else:
        s.sendto(d.replace(b"req", b"ans"), a)
print("done", flush=True)
"#;

/// Batched kicks (ACCEL_XDP_TX_BATCH) never hold a datagram back for long: a batch that does not
/// fill goes within ACCEL_XDP_TX_FLUSH_USEC (the flusher thread, while the sender sleeps away
/// from any socket call); a request goes as soon as its sender waits for the answer (blocking
/// or in poll), not after the flush time; a stream arrives whole, in order, with one kick per
/// batch.
#[test]
fn xdp_tx_batches_go_within_the_flush_time_or_before_a_wait() {
    let env = XdpEnv::new("xdp_tx_batch");
    let py = python3();
    let probe = py_args(&env.cx, BATCH_PROBE, "probe.py");
    let peer = py_args(&env.cx, BATCH_PEER, "peer.py");
    // A plain (kernel) peer in A on `port`, bound before it is returned.
    let spawn_peer = |port: u16, mode: &str| {
        let mut cmd = env.cmd(Side::A, false, &py);
        cmd.arg(&peer).args([A_IP, &port.to_string(), mode]);
        let mut p = env.spawn(cmd, &format!("peer-{port}"));
        wait_stdout_line(&mut p, "bound", LISTEN_DEADLINE);
        p
    };

    // A batch of 16 never fills: the flusher sends the 5 after 50 ms, not the exit after 1.5 s.
    let mut rx = spawn_peer(6600, "tail");
    let mut cmd = env.cmd(Side::B, true, &py);
    cmd.arg(&probe).args([A_IP, "6600", "tail"]).env("ACCEL_XDP_TX_BATCH", "16").env("ACCEL_XDP_TX_FLUSH_USEC", "50000");
    // The neighbour entry first (until it resolves, datagrams go through the kernel).
    env.b.exec(&["ping", "-c", "1", "-W", "2", A_IP]);
    let (out, tx_pid) = env.run(cmd, "probe-tail", None);
    out.assert_success();
    let sent_at: f64 = out.stdout_text().trim().strip_prefix("sent ").and_then(|t| t.parse().ok()).expect("sent time");
    let st = rx.wait_timeout(CHILD_TIMEOUT);
    let got = rx.stdout_text();
    assert!(st.success() && got.contains("done"), "peer: {st}\n{got}");
    let last: f64 = got.lines().filter(|l| l.starts_with("got ")).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).fold(0.0, f64::max);
    for i in 0..5 {
        assert!(got.contains(&format!("got tail {i} ")), "tail {i} missing:\n{got}");
    }
    eprintln!("tail: the last datagram arrived {:.1} ms after the sends", (last - sent_at) * 1000.0);
    assert!(last - sent_at < 0.5, "the batch waited {:.3} s (the sender slept 1.5 s): not flushed in time", last - sent_at);
    assert_eq!(env.xdp_counter(tx_pid, "tx_datagrams"), 5);
    // One late kick, unless python took more than 50 ms between two of the five sends.
    let (kicks, late) = (env.xdp_counter(tx_pid, "tx_kicks"), env.xdp_counter(tx_pid, "tx_late_kicks"));
    assert!(late >= 1 && kicks == late, "kicks {kicks}, late {late}\n{}", env.log_of(tx_pid));

    // Requests: with a 100 ms flush time, round trips far below it prove the wait flushed.
    for (port, mode) in [(6601u16, "rr"), (6602, "rr-poll"), (6604, "rr-epoll"), (6605, "rr-select"), (6606, "rr-nonblock")] {
        let mut rx = spawn_peer(port, "rr");
        let mut cmd = env.cmd(Side::B, true, &py);
        cmd.arg(&probe).args([A_IP, &port.to_string(), mode]);
        cmd.env("ACCEL_XDP_TX_BATCH", "16").env("ACCEL_XDP_TX_FLUSH_USEC", "100000");
        let (out, tx_pid) = env.run(cmd, &format!("probe-{mode}"), None);
        out.assert_success();
        let text = out.stdout_text();
        let median: f64 = text.split_whitespace().skip_while(|w| *w != "median_ms").nth(1).and_then(|v| v.parse().ok()).unwrap_or(f64::MAX);
        eprintln!("{mode}: {}", text.trim());
        assert!(text.contains("rtts 50 "), "{mode}: {text}");
        assert!(median < 20.0, "{mode}: median round trip {median} ms: requests waited for the flush time");
        assert_eq!(env.xdp_counter(tx_pid, "tx_late_kicks"), 0, "{mode}: a request waited for the flusher");
        assert!(rx.wait_timeout(CHILD_TIMEOUT).success());
    }

    // Forks while batches are deferred and the flusher runs (nobody listens on 6607: the
    // datagrams are only a load): every child, which polls the inherited socket, exits; none
    // inherits the port's lock held by the flusher.
    let mut cmd = env.cmd(Side::B, true, &py);
    cmd.arg(&probe).args([A_IP, "6607", "fork"]).env("ACCEL_XDP_TX_BATCH", "16").env("ACCEL_XDP_TX_FLUSH_USEC", "100");
    let (out, _) = env.run(cmd, "probe-fork", None);
    out.assert_success();
    assert!(out.stdout_text().contains("forked 40"), "{}", out.stdout_text());

    // A stream (python: ~0.1 ms per datagram, bursts of 32 with 2 ms pauses) in batches of 16
    // with a 20 ms flush time: one kick per batch (the last, partial one at exit at the latest);
    // every datagram arrives intact and in order.
    let count = 3000u64;
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&recv).args([A_IP, "6603", &count.to_string(), "1000", "block"]);
    let mut rx = env.spawn(cmd, "recv-stream");
    env.wait_filter(&mut rx, &format!("{A_IP}:6603"));
    let mut cmd = env.cmd(Side::B, true, &py);
    cmd.arg(&send).args([A_IP, "6603", &count.to_string(), "1000", "7100"]).env("ACCEL_XDP_TX_BATCH", "16").env("ACCEL_XDP_TX_FLUSH_USEC", "20000");
    let (tx, tx_pid) = env.run(cmd, "send-stream", None);
    tx.assert_success();
    let st = rx.wait_timeout(CHILD_TIMEOUT);
    let out = rx.stdout_text();
    assert!(st.success() && out.contains(&format!("ok {count} bad 0")), "receiver: {st}\n{out}");
    let (kicks, late) = (env.xdp_counter(tx_pid, "tx_kicks"), env.xdp_counter(tx_pid, "tx_late_kicks"));
    eprintln!("stream: {count} datagrams, {kicks} kicks, {late} by the flusher");
    assert_eq!(env.xdp_counter(tx_pid, "tx_datagrams"), count);
    assert!(kicks <= count / 16 + 2, "{kicks} kicks for {count} datagrams: not batched");
}

/// Without privileges (user nobody, no capabilities: no BPF, no AF_XDP socket) an accelerated
/// receiver says so in one warning and receives every datagram through the kernel, intact.
#[test]
fn xdp_without_privileges_falls_back_to_the_kernel() {
    let env = XdpEnv::new("xdp_unpriv");
    let py = python3();
    let (count, port) = (500u64, 6120u16);
    // setpriv drops to nobody after entering A (as root); the library is preloaded into python
    // as nobody. Its log goes to stderr (nobody cannot write ours); the script is inline.
    let mut cmd = env.cx.command(which("setpriv"));
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]).arg(&py);
    cmd.args(["-c", RECEIVER, A_IP, &port.to_string(), &count.to_string(), "999", "block"]);
    cmd.env("ACCEL_XDP", "1").env_remove("ACCEL_LOG_FILE").env("ACCEL_LOG_LEVEL", "warn").current_dir("/");
    env.a.enter_before_exec(&mut cmd);
    let mut rx = env.spawn(cmd, "recv-nobody");
    wait_stdout_line(&mut rx, "bound", LISTEN_DEADLINE);
    let before = env.a.in_datagrams();
    let send = py_args(&env.cx, SENDER, "send.py");
    let mut cmd = env.cmd(Side::B, false, &py);
    cmd.arg(&send).args([A_IP, &port.to_string(), &count.to_string(), "999", "7120"]);
    env.run(cmd, "send", None).0.assert_success();
    let st = rx.wait_timeout(CHILD_TIMEOUT);
    let (out, err) = (rx.stdout_text(), rx.stderr_text());
    assert!(st.success() && out.contains(&format!("ok {count} bad 0")), "receiver: {st}\n{out}\n{err}");
    assert_eq!(env.a.in_datagrams() - before, count, "the kernel received them");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("xdp: cannot open")).collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{err}");
    assert!(warnings[0].contains("kernel path"), "{}", warnings[0]);
    assert_eq!(err.lines().count(), 1, "nothing else logged at warn:\n{err}");
    eprintln!("{}", warnings[0]);
}

/// A second accelerated process on the same interface cannot have queue 0 (EBUSY): it says so
/// once and receives through the kernel, while the first keeps the bypass.
#[test]
fn xdp_second_process_falls_back_to_the_kernel() {
    let env = XdpEnv::new("xdp_second");
    let py = python3();
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    let count = 500;
    let mut first = env.cmd(Side::A, true, &py);
    first.arg(&recv).args([A_IP, "6600", &count.to_string(), "100", "block"]);
    let mut first = env.spawn(first, "first");
    env.wait_filter(&mut first, &format!("{A_IP}:6600"));
    let mut second = env.cmd(Side::A, true, &py);
    second.arg(&recv).args([A_IP, "6601", &count.to_string(), "100", "block"]);
    let mut second = env.spawn(second, "second");
    wait_stdout_line(&mut second, "bound", LISTEN_DEADLINE);
    let before = env.a.in_datagrams();
    for port in ["6600", "6601"] {
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&send).args([A_IP, port, &count.to_string(), "100", "0"]);
        env.cx.run(cmd, &format!("send-{port}"), None).assert_success();
    }
    for p in [&mut first, &mut second] {
        let st = p.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success() && p.stdout_text().contains(&format!("ok {count} bad 0")), "{}: {}", p.name, p.stdout_text());
    }
    assert_eq!(env.a.in_datagrams() - before, count as u64, "only the second one's went through the kernel");
    let log = env.log_of(second.pid);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("xdp: cannot open")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("busy"), "{}", warnings[0]);
}

/// A multicast receiver: binds 0.0.0.0:port, joins `group` on `iface`, says "joined", then
/// receives until `count` datagrams (or 5 s of silence); prints "got N in-order M".
const MRECEIVER: &str = r#"
import socket, sys
group, iface, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(iface))
print("joined", flush=True)
s.settimeout(5)
n = in_order = 0
try:
    while n < count:
        d, a = s.recvfrom(2048)
        if d == b"m%d" % n: in_order += 1
        n += 1
except socket.timeout:
    pass
print("got", n, "in-order", in_order, flush=True)
"#;

/// A multicast sender: `count` datagrams "m0", "m1"... to group:port out of `iface`.
const MSENDER: &str = r#"
import socket, sys, time
group, iface, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
for i in range(count):
    s.sendto(b"m%d" % i, (group, port))
    if i % 20 == 19:
        time.sleep(0.002)
"#;

/// Multicast: the membership is the kernel's (IGMP), the group:port filter ours, under the
/// single-member rule. One accelerated member: every datagram through the XSK, A's kernel sees
/// none. Two accelerated members in two processes (the second cannot have the queue, and hands
/// the group back to the kernel as it joins), and a plain member that joined before an
/// accelerated one; two sockets of one accelerated process: each member gets every datagram.
#[test]
fn xdp_multicast_members_each_get_every_datagram() {
    let env = XdpEnv::new("xdp_mcast");
    let py = python3();
    let recv = py_args(&env.cx, MRECEIVER, "mrecv.py");
    let send = py_args(&env.cx, MSENDER, "msend.py");
    let group = "239.1.2.3";
    let count = 1000u32;
    let run = |members: &[(bool, u16)], port: u16| -> Vec<(Proc, bool)> {
        let mut procs = Vec::new();
        for (i, &(accel, _)) in members.iter().enumerate() {
            let mut cmd = env.cmd(Side::A, accel, &py);
            cmd.arg(&recv).args([group, A_IP, &port.to_string(), &count.to_string()]);
            let mut p = env.spawn(cmd, &format!("member-{port}-{i}"));
            wait_stdout_line(&mut p, "joined", LISTEN_DEADLINE);
            procs.push((p, accel));
        }
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&send).args([group, B_IP, &port.to_string(), &count.to_string()]);
        env.cx.run(cmd, &format!("msend-{port}"), None).assert_success();
        for (p, _) in procs.iter_mut() {
            let st = p.wait_timeout(CHILD_TIMEOUT);
            let out = p.stdout_text();
            assert!(st.success(), "{}: {st}\n{out}\n{}", p.name, p.stderr_text());
            assert!(out.contains(&format!("got {count} in-order {count}")), "{}: {out}\nlog:\n{}", p.name, env.log_of(p.pid));
        }
        procs
    };

    // One accelerated member: through the XSK.
    let before = env.a.in_datagrams();
    let procs = run(&[(true, 0)], 7000);
    assert_eq!(env.a.in_datagrams() - before, 0, "A's kernel received the group's datagrams");
    assert_eq!(env.xdp_counter(procs[0].0.pid, "rx_datagrams"), count as u64);

    // Two accelerated members (two processes): the kernel serves the group.
    let before = env.a.in_datagrams();
    let procs = run(&[(true, 0), (true, 0)], 7001);
    assert_eq!(env.a.in_datagrams() - before, 2 * count as u64, "the kernel delivers each member's copy");
    assert!(env.log_of(procs[1].0.pid).contains("xdp: cannot open"), "{}", env.log_of(procs[1].0.pid));

    // A plain member first, then an accelerated one: the filter is never installed.
    let before = env.a.in_datagrams();
    run(&[(false, 0), (true, 0)], 7002);
    assert_eq!(env.a.in_datagrams() - before, 2 * count as u64);

    // Two members in one accelerated process (two sockets): the kernel serves the group.
    let two = py_args(&env.cx, MRECEIVER_TWO, "mrecv2.py");
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&two).args([group, A_IP, "7003", &count.to_string()]);
    let mut p = env.spawn(cmd, "two-sockets");
    wait_stdout_line(&mut p, "joined", LISTEN_DEADLINE);
    let before = env.a.in_datagrams();
    let mut cmd = env.cmd(Side::B, false, &py);
    cmd.arg(&send).args([group, B_IP, "7003", &count.to_string()]);
    env.cx.run(cmd, "msend-7003", None).assert_success();
    let st = p.wait_timeout(CHILD_TIMEOUT);
    let out = p.stdout_text();
    let log = env.log_of(p.pid);
    assert!(st.success() && out.contains(&format!("got {count} {count} in-order {count} {count}")), "{out}\n{log}");
    assert_eq!(env.a.in_datagrams() - before, 2 * count as u64, "{log}");
    assert!(log.contains(&format!("xdp: {group}:7003 has other members: the kernel serves it")), "{log}");

    // Joins that name no interface are the kernel's on the interface of the route to the group.
    // Through xa: steered. Through another interface (a dummy in A): not followed, so a plain
    // member on xa (the only one there) keeps getting the group — and so does the accelerated
    // socket, which Linux gives the group's datagrams on xa too (IP_MULTICAST_ALL).
    env.a.exec(&["ip", "route", "add", "239.3.0.0/16", "dev", A_DEV]);
    env.a.add_dummy("xd", "10.204.0.1/24");
    env.a.exec(&["ip", "route", "add", "239.2.0.0/16", "dev", "xd"]);
    let spawn_member = |group: &str, iface: &str, port: &str, accel: bool, name: &str| {
        let mut cmd = env.cmd(Side::A, accel, &py);
        // A has two interfaces now: a socket bound to 0.0.0.0 needs to be told which is the port's.
        cmd.env("ACCEL_XDP_IFNAME", A_DEV);
        cmd.arg(&recv).args([group, iface, port, &count.to_string()]);
        let mut p = env.spawn(cmd, name);
        wait_stdout_line(&mut p, "joined", LISTEN_DEADLINE);
        p
    };
    let send_to = |group: &str, port: &str| {
        let mut cmd = env.cmd(Side::B, false, &py);
        cmd.arg(&send).args([group, B_IP, port, &count.to_string()]);
        env.cx.run(cmd, &format!("msend-{port}"), None).assert_success();
    };
    let mut p = spawn_member("239.3.0.1", "0.0.0.0", "7004", true, "any-iface-xa");
    let before = env.a.in_datagrams();
    send_to("239.3.0.1", "7004");
    let st = p.wait_timeout(CHILD_TIMEOUT);
    let log = env.log_of(p.pid);
    assert!(st.success() && p.stdout_text().contains(&format!("got {count} in-order {count}")), "{}\n{log}", p.stdout_text());
    assert_eq!(env.a.in_datagrams() - before, 0, "joined through the route on xa: steered\n{log}");
    let mut plain = spawn_member("239.2.0.1", A_IP, "7005", false, "plain-on-xa");
    let mut other = spawn_member("239.2.0.1", "0.0.0.0", "7005", true, "any-iface-xd");
    let before = env.a.in_datagrams();
    send_to("239.2.0.1", "7005");
    for p in [&mut plain, &mut other] {
        let st = p.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success() && p.stdout_text().contains(&format!("got {count} in-order {count}")), "{}: {}", p.name, p.stdout_text());
    }
    let log = env.log_of(other.pid);
    assert_eq!(env.a.in_datagrams() - before, 2 * count as u64, "{log}");
    assert!(log.contains("xdp: 239.2.0.1 joined on another interface (Any): kernel path"), "{log}");
}

/// Two sockets of one process, each bound to 0.0.0.0:port and a member of `group`; receives
/// until each has `count` datagrams (or 5 s of silence); prints "got N M in-order N' M'".
const MRECEIVER_TWO: &str = r#"
import socket, sys, select
group, iface, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(iface))
    socks.append(s)
print("joined", flush=True)
n, in_order = [0, 0], [0, 0]
while min(n) < count:
    ready = select.select(socks, [], [], 5)[0]
    if not ready: break
    for s in ready:
        k = socks.index(s)
        d, a = s.recvfrom(2048)
        if d == b"m%d" % n[k]: in_order[k] += 1
        n[k] += 1
print("got", n[0], n[1], "in-order", in_order[0], in_order[1], flush=True)
"#;

/// A multicast member for the tests below: binds 0.0.0.0:port (SO_REUSEADDR), joins `group` on
/// the interface with address `iface` (named `ifname`, for the MCAST_* options) as `how` says,
/// says "joined", then counts datagrams "p<phase>-<i>:" (the tag repeated to 300 bytes;
/// anything else is "bad"). `how`: `any` (IP_ADD_MEMBERSHIP); `any-block=S` (then
/// IP_BLOCK_SOURCE S); `src=S[+S2...]` (IP_ADD_SOURCE_MEMBERSHIP for each source);
/// `mcast-src=S[+S2...]` (MCAST_JOIN_SOURCE_GROUP for each). `phases` is "PHASE:COUNT,...":
/// when a phase has all its datagrams it prints "phase P complete N dup D". It prints "first P
/// from ADDR n I" at the first datagram of each phase (I: its number). After the phase `leave_after` ("-": never)
/// is complete it drops its membership (the same option family it joined with; the sources one
/// by one) and prints "left"; then it exits, or with a `+` after the phase keeps receiving until
/// `quiet` seconds of silence. Otherwise it exits when every listed phase is complete, or after
/// `quiet` seconds of silence. Last it prints "summary" with every phase's count. With
/// `any-block`, `leave_after` "uP" unblocks the source after phase P instead ("unblocked").
const MMEMBER: &str = r#"
import ctypes, socket, struct, sys, time
group, iface, port, how, phases, leave_after, quiet, ifname = sys.argv[1:9]
port, quiet = int(port), float(quiet)
want = {int(p): int(n) for p, n in (x.split(":") for x in phases.split(",") if x)}
# Not in the socket module of every python: the Linux values.
IP_UNBLOCK_SOURCE, IP_BLOCK_SOURCE, IP_ADD_SOURCE_MEMBERSHIP, IP_DROP_SOURCE_MEMBERSHIP = 37, 38, 39, 40
MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP = 46, 47
IP_MSFILTER, MCAST_MSFILTER, MCAST_INCLUDE = 41, 48, 1
# A source filter set wholesale after an any-source join, INCLUDE the sources: with the socket
# options, or through glibc's setipv4sourcefilter() / setsourcefilter() (which call setsockopt
# inside libc).
WHOLESALE = ("msfilter", "mcast-msfilter", "ipv4sourcefilter", "sourcefilter")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", port))
g, i = socket.inet_aton(group), socket.inet_aton(iface)
kind, _, rest = how.partition("=")
sources = rest.split("+") if kind in ("src", "mcast-src") + WHOLESALE else []
def storage(a):
    return struct.pack("=H2x4s", socket.AF_INET, socket.inet_aton(a)).ljust(128, b"\0")
def gsr(src):
    return struct.pack("=I4x", socket.if_nametoindex(ifname)) + storage(group) + storage(src)
def set_filter(srcs):
    index, word = socket.if_nametoindex(ifname), lambda a: struct.unpack("=I", socket.inet_aton(a))[0]
    if kind == "msfilter":
        s.setsockopt(socket.IPPROTO_IP, IP_MSFILTER, g + i + struct.pack("=II", MCAST_INCLUDE, len(srcs)) + b"".join(socket.inet_aton(x) for x in srcs))
    elif kind == "mcast-msfilter":
        s.setsockopt(socket.IPPROTO_IP, MCAST_MSFILTER, struct.pack("=I4x", index) + storage(group) + struct.pack("=II", MCAST_INCLUDE, len(srcs)) + b"".join(storage(x) for x in srcs))
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        u32 = ctypes.c_uint32
        if kind == "ipv4sourcefilter":
            arr = (u32 * max(len(srcs), 1))(*[word(x) for x in srcs])
            r = libc.setipv4sourcefilter(s.fileno(), u32(word(iface)), u32(word(group)), u32(MCAST_INCLUDE), u32(len(srcs)), arr)
        else:
            lst = ctypes.create_string_buffer(b"".join(storage(x) for x in srcs) or b"\0" * 128)
            grp = ctypes.create_string_buffer(storage(group))
            r = libc.setsourcefilter(s.fileno(), u32(index), grp, u32(16), u32(MCAST_INCLUDE), u32(len(srcs)), lst)
        assert r == 0, "%s: errno %d" % (kind, ctypes.get_errno())
if kind == "src":
    for src in sources:
        s.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, g + i + socket.inet_aton(src))
elif kind == "mcast-src":
    for src in sources:
        s.setsockopt(socket.IPPROTO_IP, MCAST_JOIN_SOURCE_GROUP, gsr(src))
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, g + i)
    if kind == "any-block":
        s.setsockopt(socket.IPPROTO_IP, IP_BLOCK_SOURCE, g + i + socket.inet_aton(rest))
    elif kind in WHOLESALE:
        set_filter(sources)
    elif kind == "hidden-exclude":
        # libc's own setsockopt, past any preloaded one (as a library bound to libc calls it).
        v = g + i + struct.pack("=II", 0, 1) + socket.inet_aton(rest)
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        assert libc.setsockopt(s.fileno(), socket.IPPROTO_IP, IP_MSFILTER, v, len(v)) == 0, ctypes.get_errno()
print("joined", flush=True)
if kind == "hidden-exclude":
    time.sleep(0.3)  # what arrives meanwhile waits on the ring
s.settimeout(quiet)
seen, dup, bad, senders = {}, {}, 0, {}
lingering = False
def leave():
    if kind == "src":
        for src in sources:
            s.setsockopt(socket.IPPROTO_IP, IP_DROP_SOURCE_MEMBERSHIP, g + i + socket.inet_aton(src))
    elif kind == "mcast-src":
        for src in sources:
            s.setsockopt(socket.IPPROTO_IP, MCAST_LEAVE_SOURCE_GROUP, gsr(src))
    elif kind in WHOLESALE:
        set_filter([])  # INCLUDE nothing: the kernel leaves the group
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, g + i)
try:
    while lingering or any(len(seen.get(p, ())) < n for p, n in want.items()):
        d, a = s.recvfrom(2048)
        try:
            tag = d.split(b":", 1)[0]
            p, n = (int(x) for x in tag[1:].split(b"-"))
            assert tag.startswith(b"p") and d == ((tag + b":") * 300)[:300]
        except Exception:
            bad += 1
            continue
        if p not in seen:
            seen[p] = set()
            print("first", p, "from", a[0], "n", n, flush=True)
        if n in seen[p]:
            dup[p] = dup.get(p, 0) + 1
        seen[p].add(n)
        senders.setdefault(p, set()).add(a[0])
        if p in want and len(seen[p]) == want[p]:
            print("phase", p, "complete", want[p], "dup", dup.get(p, 0), flush=True)
            if kind == "any-block" and leave_after == "u%d" % p:
                s.setsockopt(socket.IPPROTO_IP, IP_UNBLOCK_SOURCE, g + i + socket.inet_aton(rest))
                print("unblocked", flush=True)
            elif leave_after.rstrip("+") == str(p):
                leave()
                print("left", flush=True)
                if not leave_after.endswith("+"):
                    break
                lingering = True
except socket.timeout:
    pass
print("summary", " ".join("%d:%d" % (p, len(v)) for p, v in sorted(seen.items())),
      "bad", bad, "dup", sum(dup.values()),
      "senders", " ".join("%d=%s" % (p, "+".join(sorted(v))) for p, v in sorted(senders.items())), flush=True)
"#;

/// The datagram `i` of phase `phase` as [`MMEMBER`] checks it.
fn mpayload(phase: u32, i: u32) -> Vec<u8> {
    let tag = format!("p{phase}-{i}:");
    tag.as_bytes().iter().copied().cycle().take(300).collect()
}

/// Sends datagrams `range` of `phase` to group:port from a socket of the test process in B
/// bound to `src` (an address of xb), paced (a 2 ms pause every 20).
fn msend_from(env: &XdpEnv, src: &str, group: &str, port: u16, phase: u32, range: std::ops::Range<u32>) {
    let (src, dest) = (format!("{src}:0"), format!("{group}:{port}"));
    env.b.run_in(move || {
        let s = std::net::UdpSocket::bind(src.as_str()).expect("sender socket in B");
        for i in range {
            s.send_to(&mpayload(phase, i), dest.as_str()).expect("send to the group");
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })
}

/// Waits (bounded) until `p` printed a line containing `needle`, sending datagram after datagram
/// of phase `phase` (one every 20 ms) meanwhile; returns how many were sent.
#[track_caller]
fn probe_until(env: &XdpEnv, p: &mut Proc, needle: &str, group: &str, port: u16, phase: u32) -> u32 {
    for i in 0..250 {
        if p.stdout_text().contains(needle) {
            return i;
        }
        assert!(p.try_exited().is_none(), "{} exited\n{}\n{}", p.name, p.stdout_text(), p.stderr_text());
        msend_from(env, B_IP, group, port, phase, i..i + 1);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{}: no `{needle}` after 250 probes (5 s)\n{}", p.name, p.stdout_text());
}

/// Sends probes of `phase` (one every 20 ms, at most 5 s) until three in a row leave A's
/// `Udp: InDatagrams` unchanged: the group is steered to the XSK again. Returns the time it took.
#[track_caller]
fn probe_until_steered(env: &XdpEnv, group: &str, port: u16, phase: u32) -> Duration {
    let start = Instant::now();
    let mut flat = 0;
    let mut last = env.a.in_datagrams();
    for i in 0..250 {
        msend_from(env, B_IP, group, port, phase, i..i + 1);
        std::thread::sleep(Duration::from_millis(20));
        let now = env.a.in_datagrams();
        flat = if now == last { flat + 1 } else { 0 };
        last = now;
        if flat == 3 {
            return start.elapsed();
        }
    }
    panic!("{group}:{port} still reaches A's kernel after 250 probes (5 s)");
}

/// The single-member rule both ways: an accelerated member alone has the group through the
/// XSK; a second member joins (a plain process without the library; then an accelerated one,
/// which cannot have the queue) and, once the owner has seen it, both get every datagram
/// through the kernel; the second member drops its membership (IP_DROP_MEMBERSHIP) and within a
/// bounded time the group is steered to the XSK again: A's kernel then receives none of the
/// next datagrams, which all reach the owner intact.
#[test]
fn xdp_multicast_group_returns_to_the_xsk_when_the_second_member_leaves() {
    let env = XdpEnv::new("xdp_mcast_leave");
    env.b.exec(&["ip", "route", "add", "224.0.0.0/4", "dev", "xb"]);
    let py = python3();
    let member = py_args(&env.cx, MMEMBER, "mmember.py");
    let n = 500u32;
    for (second_accel, group, port) in [(false, "239.1.2.4", 7100u16), (true, "239.1.2.5", 7101)] {
        let what = if second_accel { "accelerated second member" } else { "plain second member" };
        let phases = format!("0:{n},2:{n},4:{n}");
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.arg(&member).args([group, A_IP, &port.to_string(), "any", &phases, "-", "20", A_DEV]);
        let mut owner = env.spawn(cmd, &format!("owner-{port}"));
        wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);

        // Alone: through the XSK.
        let before = env.a.in_datagrams();
        msend_from(&env, B_IP, group, port, 0, 0..n);
        wait_stdout_line(&mut owner, &format!("phase 0 complete {n} dup 0"), CHILD_TIMEOUT);
        assert_eq!(env.a.in_datagrams() - before, 0, "{what}: alone, the owner's datagrams reached A's kernel");

        // A second member: once the owner has seen it (a few probes), the kernel serves both.
        let mut cmd = env.cmd(Side::A, second_accel, &py);
        cmd.arg(&member).args([group, A_IP, &port.to_string(), "any", &format!("2:{n}"), "2", "20", A_DEV]);
        let mut second = env.spawn(cmd, &format!("second-{port}"));
        wait_stdout_line(&mut second, "joined", LISTEN_DEADLINE);
        let probes = probe_until(&env, &mut second, "first 1 ", group, port, 1);
        eprintln!("{what}: got a datagram after {probes} probes");
        let before = env.a.in_datagrams();
        msend_from(&env, B_IP, group, port, 2, 0..n);
        wait_stdout_line(&mut owner, &format!("phase 2 complete {n} dup 0"), CHILD_TIMEOUT);
        let st = second.wait_timeout(CHILD_TIMEOUT);
        let out = second.stdout_text();
        assert!(
            st.success() && out.contains(&format!("phase 2 complete {n} dup 0")) && out.contains("left"),
            "{what}: {out}\n{}",
            second.stderr_text()
        );
        let through_kernel = env.a.in_datagrams() - before;
        assert!(through_kernel >= 2 * u64::from(n), "{what}: the kernel delivered {through_kernel}, not each member's copy");

        // The second member left: the group goes back to the XSK, within a bounded time.
        let took = probe_until_steered(&env, group, port, 3);
        eprintln!("{what}: steered to the XSK again {took:?} after the second member left");
        let before = env.a.in_datagrams();
        msend_from(&env, B_IP, group, port, 4, 0..n);
        let st = owner.wait_timeout(CHILD_TIMEOUT);
        let out = owner.stdout_text();
        let log = env.log_of(owner.pid);
        assert!(st.success() && out.contains(&format!("phase 4 complete {n} dup 0")), "{what}: {out}\n{}", owner.stderr_text());
        assert!(out.contains("bad 0 dup 0"), "{what}: {out}");
        assert_eq!(env.a.in_datagrams() - before, 0, "{what}: steered again, A's kernel received the owner's datagrams");
        // Steered at the join, handed to the kernel, steered again.
        assert_eq!(log.matches(&format!("xdp: {group}:{port} has a single member: steered")).count(), 2, "{what}\n{log}");
        assert_eq!(log.matches(&format!("xdp: {group}:{port} has other members")).count(), 1, "{what}\n{log}");
        // Phases 0 and 4 (and the probes after the re-steer) came through the XSK.
        assert!(env.xdp_counter(owner.pid, "rx_datagrams") >= 2 * u64::from(n), "{what}\n{log}");
        assert_eq!(env.xdp_counter(owner.pid, "rx_dropped"), 0, "{what}");
    }
}

/// A socket that joined nothing: binds 0.0.0.0:port (SO_REUSEADDR), says "bound", and counts
/// the [`MMEMBER`] datagrams it gets (Linux gives it the datagrams of every group the host
/// joined on that port: IP_MULTICAST_ALL, on by default), as MMEMBER prints them ("first P
/// ...", "phase P complete N dup D"); exits when phase `stop` is complete or after `quiet`
/// seconds of silence.
const NONMEMBER: &str = r#"
import socket, sys
port, stop, n, quiet = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", port))
print("bound", flush=True)
s.settimeout(quiet)
seen, dup = {}, 0
try:
    while len(seen.get(stop, ())) < n:
        d, a = s.recvfrom(2048)
        tag = d.split(b":", 1)[0]
        p, i = (int(x) for x in tag[1:].split(b"-"))
        if d != ((tag + b":") * 300)[:300]:
            continue
        if p not in seen:
            seen[p] = set()
            print("first", p, "from", a[0], "n", i, flush=True)
        if i in seen[p]:
            dup += 1
        seen[p].add(i)
except socket.timeout:
    pass
print("phase", stop, "complete", len(seen.get(stop, ())), "dup", dup, flush=True)
"#;

/// The IP_MULTICAST_ALL side of the single-member rule: a plain program's socket bound to the
/// group's port on 0.0.0.0 that joined nothing gets the group's datagrams from Linux once the
/// host joined it (here: for the accelerated owner). While it is bound, the owner hands the
/// group to the kernel (both get every datagram); once it is gone, the group is steered to
/// the XSK again and A's kernel sees none of the owner's datagrams.
#[test]
fn xdp_multicast_bound_non_member_keeps_getting_the_group() {
    let env = XdpEnv::new("xdp_mcast_all");
    env.b.exec(&["ip", "route", "add", "224.0.0.0/4", "dev", "xb"]);
    let py = python3();
    let member = py_args(&env.cx, MMEMBER, "mmember.py");
    let nonmember = py_args(&env.cx, NONMEMBER, "nonmember.py");
    let (group, port, n) = ("239.1.2.9", 7110u16, 400u32);
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&member).args([group, A_IP, &port.to_string(), "any", &format!("0:{n},2:{n},4:{n}"), "-", "20", A_DEV]);
    let mut owner = env.spawn(cmd, "owner");
    wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);

    // Alone on its port: through the XSK.
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP, group, port, 0, 0..n);
    wait_stdout_line(&mut owner, &format!("phase 0 complete {n} dup 0"), CHILD_TIMEOUT);
    assert_eq!(env.a.in_datagrams() - before, 0, "alone, the owner's datagrams reached A's kernel");

    // A plain socket bound to the port, no membership: once the owner saw it, both get all.
    let mut cmd = env.cmd(Side::A, false, &py);
    cmd.arg(&nonmember).args([&port.to_string(), "2", &n.to_string(), "10"]);
    let mut other = env.spawn(cmd, "nonmember");
    wait_stdout_line(&mut other, "bound", LISTEN_DEADLINE);
    let probes = probe_until(&env, &mut other, "first 1 ", group, port, 1);
    eprintln!("the non-member got a datagram after {probes} probes");
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP, group, port, 2, 0..n);
    wait_stdout_line(&mut owner, &format!("phase 2 complete {n} dup 0"), CHILD_TIMEOUT);
    let st = other.wait_timeout(CHILD_TIMEOUT);
    let out = other.stdout_text();
    assert!(st.success() && out.contains(&format!("phase 2 complete {n} dup 0")), "non-member: {out}\n{}", other.stderr_text());
    let through_kernel = env.a.in_datagrams() - before;
    assert!(through_kernel >= 2 * u64::from(n), "the kernel delivered {through_kernel}, not each socket's copy");

    // It is gone: steered again.
    let took = probe_until_steered(&env, group, port, 3);
    eprintln!("steered to the XSK again {took:?} after the non-member closed");
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP, group, port, 4, 0..n);
    let st = owner.wait_timeout(CHILD_TIMEOUT);
    let out = owner.stdout_text();
    let log = env.log_of(owner.pid);
    assert!(st.success() && out.contains(&format!("phase 4 complete {n} dup 0")), "{out}\n{}", owner.stderr_text());
    assert!(out.contains("bad 0 dup 0"), "{out}");
    assert_eq!(env.a.in_datagrams() - before, 0, "steered again, A's kernel received the owner's datagrams");
    assert_eq!(log.matches(&format!("xdp: {group}:{port} has a single member: steered")).count(), 2, "{log}");
    assert_eq!(log.matches(&format!("xdp: {group}:{port}: another socket is bound to its port")).count(), 1, "{log}");
    assert!(env.xdp_counter(owner.pid, "rx_datagrams") >= 2 * u64::from(n), "{log}");
}

/// A second address of B's veth end: a source the members below did not join.
const B_IP2: &str = "10.203.0.3";

/// Source-specific multicast on the datapath: a member that joined group G for source S only
/// (IP_ADD_SOURCE_MEMBERSHIP; MCAST_JOIN_SOURCE_GROUP; an any-source join narrowed to INCLUDE S
/// by IP_MSFILTER, by MCAST_MSFILTER, by glibc's setipv4sourcefilter() and setsourcefilter(),
/// left by INCLUDE nothing) gets S's datagrams through the XSK
/// (A's kernel sees none of them) and none of another source's, which the program passes to the
/// kernel and the kernel's source filter drops; once it dropped the source nothing more reaches
/// it. Only what it joined ever reached the XSK, and A's kernel sent the IGMPv3 records of each
/// join and leave (captured on B's side; checked for the first two ways). A member of two sources gets both through the
/// XSK. An any-source member that blocks a source (IP_BLOCK_SOURCE) is served by the kernel,
/// which keeps the blocked source out, and is steered again once it unblocks it; one whose
/// filter was set where no hook sees it (libc's own setsockopt) is handed to the kernel at the
/// owner's next check; a second
/// member of a source-specific group (a plain process) makes the kernel serve both.
#[test]
fn xdp_multicast_source_specific_members() {
    let env = XdpEnv::new("xdp_mcast_ssm");
    env.b.exec(&["ip", "addr", "add", &format!("{B_IP2}/24"), "dev", "xb"]);
    env.b.exec(&["ip", "route", "add", "224.0.0.0/4", "dev", "xb"]);
    let py = python3();
    let member = py_args(&env.cx, MMEMBER, "mmember.py");
    let n = 400u32;
    // What A's kernel says about the memberships (IGMPv3), seen from B.
    let pcap = env.cx.path("igmp.pcap");
    let mut cmd = env.b.command(which("dumpcap"));
    cmd.args(["-q", "-i", "xb", "-f", "igmp", "-a", "duration:60", "-w"]).arg(&pcap);
    let mut capture = env.cx.spawn(cmd, "dumpcap", None);
    let start = Instant::now();
    while !capture.stderr_text().contains("Capturing on") {
        assert!(capture.try_exited().is_none() && start.elapsed() < LISTEN_DEADLINE, "dumpcap: {}", capture.stderr_text());
        std::thread::sleep(Duration::from_millis(10));
    }

    for (how, joined, other, group, port) in [
        ("src", B_IP, B_IP2, "232.1.2.3", 7200u16),
        ("mcast-src", B_IP2, B_IP, "232.1.2.4", 7201),
        ("msfilter", B_IP, B_IP2, "232.1.2.8", 7206),
        ("mcast-msfilter", B_IP2, B_IP, "232.1.2.9", 7207),
        ("ipv4sourcefilter", B_IP, B_IP2, "232.1.2.10", 7208),
        ("sourcefilter", B_IP2, B_IP, "232.1.2.11", 7209),
    ] {
        let what = format!("{how}={joined}");
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.arg(&member).args([group, A_IP, &port.to_string(), &what, &format!("0:{n},2:{n}"), "2+", "1.5", A_DEV]);
        let mut owner = env.spawn(cmd, &format!("ssm-{port}"));
        wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);
        let before = env.a.in_datagrams();
        // The other source first, then the joined one; then the joined one again after a pause
        // (the other source's datagrams, had they been delivered, would be in by then).
        msend_from(&env, other, group, port, 1, 0..n);
        msend_from(&env, joined, group, port, 0, 0..n);
        wait_stdout_line(&mut owner, &format!("phase 0 complete {n} dup 0"), CHILD_TIMEOUT);
        std::thread::sleep(Duration::from_millis(300));
        msend_from(&env, joined, group, port, 2, 0..n);
        wait_stdout_line(&mut owner, "left", CHILD_TIMEOUT);
        assert_eq!(env.a.in_datagrams() - before, 0, "{what}: A's kernel received datagrams of the group");
        // Dropped the source: the next datagrams from it reach nobody.
        msend_from(&env, joined, group, port, 3, 0..50);
        let st = owner.wait_timeout(CHILD_TIMEOUT);
        let out = owner.stdout_text();
        let log = env.log_of(owner.pid);
        assert!(st.success(), "{what}: {st}\n{out}\n{}", owner.stderr_text());
        let summary = out.lines().find(|l| l.starts_with("summary")).unwrap_or_else(|| panic!("{what}: {out}"));
        assert!(
            summary.starts_with(&format!("summary 0:{n} 2:{n} bad 0 dup 0 senders 0={joined} 2={joined}")),
            "{what}: the member got datagrams it did not join for: {summary}\n{log}"
        );
        // A filter set wholesale follows an any-source join (steered by group:port first).
        let steered = if matches!(how, "src" | "mcast-src") { " has a single member:" } else { ":" };
        assert!(log.contains(&format!("xdp: {group}:{port}{steered} steered to the XSK from {joined}")), "{what}\n{log}");
        // Only the joined source's datagrams went through the XSK, and every one had its owner.
        assert_eq!(env.xdp_counter(owner.pid, "rx_datagrams"), 2 * u64::from(n), "{what}\n{log}");
        assert_eq!(env.xdp_counter(owner.pid, "rx_unclaimed"), 0, "{what}");
        assert_eq!(env.a.in_datagrams() - before, 0, "{what}: the kernel delivered datagrams after the member left");
    }
    // IGMPv3 stayed the kernel's, and right: each join reported its source (ALLOW_NEW_SOURCES,
    // record type 5) and each leave blocked it again (BLOCK_OLD_SOURCES, 6).
    capture.stop();
    let mut cmd = Command::new(which("tshark"));
    cmd.args(["-n", "-r"]).arg(&pcap).args(["-Y", "igmp.version == 3", "-T", "fields", "-e", "igmp.record_type", "-e", "igmp.maddr", "-e", "igmp.saddr"]);
    let out = run(cmd, env.cx.dir(), "tshark-igmp", None);
    out.assert_success();
    let reports = out.stdout_text();
    eprintln!("IGMPv3 records (type, group, sources) sent by A:\n{reports}");
    for (group, source) in [("232.1.2.3", B_IP), ("232.1.2.4", B_IP2)] {
        for record_type in ["5", "6"] {
            assert!(
                reports.lines().any(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    f.len() == 3 && f[0].split(',').zip(f[1].split(',')).any(|(t, g)| t == record_type && g == group) && f[2].split(',').any(|s| s == source)
                }),
                "no IGMPv3 record of type {record_type} for {group} from {source}:\n{reports}"
            );
        }
    }

    // Both sources joined: the datagrams of both, through the XSK (the other source's do reach A).
    let (group, port) = ("232.1.2.6", 7204u16);
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&member).args([group, A_IP, &port.to_string(), &format!("src={B_IP}+{B_IP2}"), &format!("0:{n},1:{n}"), "-", "20", A_DEV]);
    let mut owner = env.spawn(cmd, "ssm-two-sources");
    wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP2, group, port, 1, 0..n);
    msend_from(&env, B_IP, group, port, 0, 0..n);
    let st = owner.wait_timeout(CHILD_TIMEOUT);
    let out = owner.stdout_text();
    let log = env.log_of(owner.pid);
    assert!(st.success() && out.contains(&format!("summary 0:{n} 1:{n} bad 0 dup 0 senders 0={B_IP} 1={B_IP2}\n")), "two sources: {out}\n{log}");
    assert_eq!(env.a.in_datagrams() - before, 0, "two sources: A's kernel received datagrams of the group");
    assert_eq!(env.xdp_counter(owner.pid, "rx_datagrams"), 2 * u64::from(n), "{log}");
    assert!(log.contains(&format!("xdp: {group}:{port}: steered to the XSK from {B_IP}, {B_IP2}")), "{log}");

    // An any-source member that blocks a source: the kernel serves the group (and filters);
    // once it unblocks the source, the group is steered again, that source included.
    let (group, port) = ("239.1.3.1", 7202u16);
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&member).args([group, A_IP, &port.to_string(), &format!("any-block={B_IP2}"), &format!("0:{n},2:{n}"), "u0", "20", A_DEV]);
    let mut owner = env.spawn(cmd, "asm-block");
    wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP2, group, port, 1, 0..n);
    msend_from(&env, B_IP, group, port, 0, 0..n);
    wait_stdout_line(&mut owner, "unblocked", CHILD_TIMEOUT);
    assert_eq!(env.a.in_datagrams() - before, u64::from(n), "blocked source: the kernel serves the group\n{}", env.log_of(owner.pid));
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP2, group, port, 2, 0..n);
    let st = owner.wait_timeout(CHILD_TIMEOUT);
    let out = owner.stdout_text();
    let log = env.log_of(owner.pid);
    assert!(st.success() && out.contains(&format!("summary 0:{n} 2:{n} bad 0 dup 0 senders 0={B_IP} 2={B_IP2}\n")), "blocked source: {out}\n{log}");
    assert_eq!(env.a.in_datagrams() - before, 0, "unblocked: A's kernel received datagrams of the group\n{log}");
    assert!(log.contains(&format!("xdp: {group}:{port}: a source filter the program cannot follow: the kernel serves it")), "{log}");
    assert_eq!(log.matches(&format!("xdp: {group}:{port} has a single member: steered to the XSK\n")).count(), 2, "{log}");
    assert_eq!(env.xdp_counter(owner.pid, "rx_datagrams"), u64::from(n), "{log}");

    // A filter set where no hook sees it (EXCLUDE a source, by libc's own setsockopt) after an
    // any-source join, then both sources send while the member does not read (their datagrams
    // wait on the XSK's ring): at the owner's next check /proc/net/mcfilter shows the filter,
    // the membership follows it, the excluded source's datagrams on the ring are not delivered,
    // and the kernel serves the group from then on, keeping that source out.
    let (group, port, m) = ("239.1.3.2", 7210u16, 200u32);
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&member).args([group, A_IP, &port.to_string(), &format!("hidden-exclude={B_IP2}"), &format!("0:{m},2:{m}"), "-", "20", A_DEV]);
    let mut owner = env.spawn(cmd, "asm-hidden-exclude");
    wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);
    msend_from(&env, B_IP2, group, port, 1, 0..m);
    msend_from(&env, B_IP, group, port, 0, 0..m);
    wait_stdout_line(&mut owner, &format!("phase 0 complete {m} dup 0"), CHILD_TIMEOUT);
    let before = env.a.in_datagrams();
    msend_from(&env, B_IP2, group, port, 1, m..2 * m);
    msend_from(&env, B_IP, group, port, 2, 0..m);
    let st = owner.wait_timeout(CHILD_TIMEOUT);
    let out = owner.stdout_text();
    let log = env.log_of(owner.pid);
    assert!(st.success() && out.contains(&format!("summary 0:{m} 2:{m} bad 0 dup 0 senders 0={B_IP} 2={B_IP}\n")), "hidden filter: {out}\n{log}");
    assert!(log.contains(&format!("xdp: {group}:{port}: a source filter set where no hook saw it (EXCLUDE {B_IP2}): followed from /proc/net/mcfilter")), "{log}");
    assert!(log.contains(&format!("xdp: {group}:{port}: a source filter the program cannot follow: the kernel serves it")), "{log}");
    assert_eq!(env.a.in_datagrams() - before, u64::from(m), "hidden filter: the kernel serves the group\n{log}");
    assert_eq!(env.xdp_counter(owner.pid, "rx_datagrams"), 2 * u64::from(m), "both sources' first datagrams reached the ring\n{log}");

    // A source-specific group with a second member (plain; accelerated, without the queue): the
    // kernel serves both.
    for (second_accel, group, port) in [(false, "232.1.2.5", 7203u16), (true, "232.1.2.7", 7205)] {
        let src = format!("src={B_IP}");
        let mut cmd = env.cmd(Side::A, true, &py);
        cmd.arg(&member).args([group, A_IP, &port.to_string(), &src, &format!("2:{n}"), "-", "20", A_DEV]);
        let mut owner = env.spawn(cmd, &format!("ssm-owner-{port}"));
        wait_stdout_line(&mut owner, "joined", LISTEN_DEADLINE);
        let mut cmd = env.cmd(Side::A, second_accel, &py);
        cmd.arg(&member).args([group, A_IP, &port.to_string(), &src, &format!("2:{n}"), "-", "20", A_DEV]);
        let mut second = env.spawn(cmd, &format!("ssm-second-{port}"));
        wait_stdout_line(&mut second, "joined", LISTEN_DEADLINE);
        probe_until(&env, &mut second, "first 1 ", group, port, 1);
        if second_accel {
            // It handed the group back to the kernel at its join: the first probe reached it.
            let first = wait_stdout_line(&mut second, "first 1 ", LISTEN_DEADLINE);
            assert!(first.ends_with(" n 0"), "{first}\n{}", env.log_of(second.pid));
        }
        let before = env.a.in_datagrams();
        msend_from(&env, B_IP2, group, port, 3, 0..n);
        msend_from(&env, B_IP, group, port, 2, 0..n);
        for p in [&mut owner, &mut second] {
            let st = p.wait_timeout(CHILD_TIMEOUT);
            let out = p.stdout_text();
            assert!(st.success() && out.contains(&format!("phase 2 complete {n} dup 0")), "{}: {out}\n{}", p.name, p.stderr_text());
            assert!(!out.contains("first 3 "), "{}: got the other source's datagrams: {out}", p.name);
        }
        assert!(env.a.in_datagrams() - before >= 2 * u64::from(n), "two source-specific members: the kernel serves both");
        assert!(env.log_of(owner.pid).contains(&format!("xdp: {group}:{port} has other members")), "{}", env.log_of(owner.pid));
    }
}

/// Injects hand-made frames from B with a raw (AF_PACKET) socket on xb: per round, a set of
/// malformed frames addressed to A's port, then one valid datagram "v<round>"; finally "END".
const INJECTOR: &str = r#"
import socket, struct, sys
dst_mac, src_mac = bytes.fromhex(sys.argv[1].replace(":", "")), bytes.fromhex(sys.argv[2].replace(":", ""))
src_ip, dst_ip = socket.inet_aton(sys.argv[3]), socket.inet_aton(sys.argv[4])
port, rounds = int(sys.argv[5]), int(sys.argv[6])

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def udp(payload, bad=False, length=None):
    l = 8 + len(payload) if length is None else length
    h = struct.pack("!HHHH", 40000, port, l, 0)
    c = csum(src_ip + dst_ip + struct.pack("!BBH", 0, 17, 8 + len(payload)) + h + payload) or 0xffff
    if bad: c ^= 0x5a5a
    return struct.pack("!HHHH", 40000, port, l, c) + payload

def ip(body, ihl=5, frag=0, bad=False, total=None, version=4, options=b""):
    t = 4 * ihl + len(body) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, t, 7, frag, 64, 17, 0, src_ip, dst_ip) + options
    c = csum(h)
    if bad: c ^= 0x1111
    return h[:10] + struct.pack("!H", c) + h[12:] + body

def eth(p, ethertype=0x0800):
    return dst_mac + src_mac + struct.pack("!H", ethertype) + p

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("xb", 0))
bad = 0
for r in range(rounds):
    frames = [
        eth(b""),                                                   # Ethernet header only
        eth(b"\x45\x00"),                                           # shorter than IPv4
        eth(ip(udp(b"x" * 20), total=400)),                         # IP length > frame
        eth(ip(udp(b"x" * 20, length=200))),                        # UDP length > IP
        eth(ip(udp(b"x" * 20, length=4))),                          # UDP length < header
        eth(ip(udp(b"bad ip checksum"), bad=True)),                 # redirected, dropped by us
        eth(ip(udp(b"bad udp checksum", bad=True))),                # redirected, dropped by us
        eth(ip(udp(b"first fragment"), frag=0x2000)),               # MF set
        eth(ip(udp(b"later fragment"), frag=0x0010)),               # offset != 0
        eth(ip(udp(b"with options"), ihl=6, options=b"\x01\x01\x01\x00")),
        eth(b"\x00\x05\x08\x00" + ip(udp(b"vlan tagged")), 0x8100),  # VLAN 5
        eth(ip(udp(b"version 6"), version=6)),
        eth(ip(b"\x9c\x40")),                                       # truncated UDP header
        eth(b"\xff" * 3000)[:1514],                                 # garbage, full size
    ]
    for f in frames:
        s.send(f)
    s.send(eth(ip(udp(b"v%d" % r))))
s.send(eth(ip(udp(b"END"))))
print("injected", rounds, flush=True)
"#;

/// Prints every datagram it receives on ip:port until 1 s after "END" (or 10 s of silence).
const COLLECTOR: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("bound", flush=True)
s.settimeout(10)
got = []
try:
    while True:
        d, a = s.recvfrom(65536)
        if d == b"END":
            # What the kernel delivers may come after END, which took the XSK: one more second.
            s.settimeout(1)
            continue
        got.append(d.decode(errors="replace"))
except socket.timeout:
    pass
print("GOT " + " ".join(got), flush=True)
"#;

fn mac_of(ns: &NetNs, dev: &str) -> String {
    let text = ns.exec(&["ip", "-o", "link", "show", dev]);
    let mut words = text.split_whitespace().skip_while(|w| *w != "link/ether");
    words.nth(1).unwrap_or_else(|| panic!("no MAC in {text}")).to_string()
}

/// Malformed frames injected from B (short, bad lengths, bad checksums, fragments, IP options,
/// VLAN, not IPv4, garbage) never reach the accelerated receiver through the XSK and do not
/// disturb it: it gets exactly the valid datagrams, in order; the two kinds the program
/// redirects (checksums are checked in user space) are counted as dropped; everything else was
/// passed to A's kernel, which delivers only the (valid) datagrams with IP options.
#[test]
fn xdp_malformed_frames_are_dropped_and_counted() {
    let env = XdpEnv::new("xdp_malformed");
    let py = python3();
    let collector = py_args(&env.cx, COLLECTOR, "collect.py");
    let injector = py_args(&env.cx, INJECTOR, "inject.py");
    let port = 6700;
    let rounds = 50;
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&collector).args([A_IP, &port.to_string()]);
    let mut rx = env.spawn(cmd, "collector");
    env.wait_filter(&mut rx, &format!("{A_IP}:{port}"));
    let (xa, xb) = (mac_of(&env.a, "xa"), mac_of(&env.b, "xb"));
    let before = env.a.in_datagrams();
    let mut cmd = env.cmd(Side::B, false, &py);
    cmd.arg(&injector).args([&xa, &xb, B_IP, A_IP, &port.to_string(), &rounds.to_string()]);
    env.cx.run(cmd, "inject", None).assert_success();
    let st = rx.wait_timeout(CHILD_TIMEOUT);
    let out = rx.stdout_text();
    assert!(st.success(), "collector: {st}\n{out}\n{}", rx.stderr_text());
    let expected: Vec<String> = (0..rounds).map(|r| format!("v{r}")).collect();
    let line = out.lines().find(|l| l.starts_with("GOT")).unwrap_or_else(|| panic!("{out}"));
    // The datagrams with (valid) IP options are the kernel's: the program passes them, the
    // kernel delivers them to the socket, which reads its kernel socket too. Nothing else of
    // the malformed set arrives; the valid ones arrive in order.
    let got = line.trim_start_matches("GOT ").replace("with options", "with_options");
    let words: Vec<&str> = got.split_whitespace().collect();
    let valid: Vec<&str> = words.iter().copied().filter(|w| *w != "with_options").collect();
    assert_eq!(valid, expected, "log:\n{}", env.log_of(rx.pid));
    assert_eq!(words.len() - valid.len(), rounds, "datagrams with IP options: {line}");
    assert_eq!(env.a.in_datagrams() - before, rounds as u64, "A's kernel delivered only those with options");
    assert_eq!(env.xdp_counter(rx.pid, "rx_datagrams"), rounds as u64 + 1, "the valid ones and END");
    assert_eq!(env.xdp_counter(rx.pid, "rx_dropped"), 2 * rounds as u64, "bad IP and UDP checksums");
}

/// kill -9 of the only accelerated process leaves the program attached and pinned; the next
/// accelerated process reclaims it and receives through it; when that one exits normally the
/// program is detached and the pins are gone.
#[test]
fn xdp_kill_9_then_next_user_reclaims() {
    let env = XdpEnv::new("xdp_kill9");
    let py = python3();
    let recv = py_args(&env.cx, RECEIVER, "recv.py");
    let send = py_args(&env.cx, SENDER, "send.py");
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&recv).args([A_IP, "6800", "1000000", "100", "block"]);
    let mut victim = env.spawn(cmd, "victim");
    env.wait_filter(&mut victim, &format!("{A_IP}:6800"));
    assert_eq!(env.pin_dirs().len(), 1);
    victim.kill();
    let _ = victim.try_exited();
    assert!(env.a.exec(&["ip", "-d", "link", "show", "xa"]).contains("prog/xdp"), "detached by kill -9?");
    let count = 500;
    let mut cmd = env.cmd(Side::A, true, &py);
    cmd.arg(&recv).args([A_IP, "6801", &count.to_string(), "100", "block"]);
    let mut next = env.spawn(cmd, "next");
    env.wait_filter(&mut next, &format!("{A_IP}:6801"));
    let before = env.a.in_datagrams();
    let mut cmd = env.cmd(Side::B, false, &py);
    cmd.arg(&send).args([A_IP, "6801", &count.to_string(), "100", "0"]);
    env.cx.run(cmd, "send", None).assert_success();
    let st = next.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success() && next.stdout_text().contains(&format!("ok {count} bad 0")), "{}", next.stdout_text());
    assert_eq!(env.a.in_datagrams() - before, 0);
    assert!(!env.a.exec(&["ip", "-d", "link", "show", "xa"]).contains("prog/xdp"), "still attached");
    assert!(env.pin_dirs().is_empty(), "pins left: {:?}", env.pin_dirs());
}
