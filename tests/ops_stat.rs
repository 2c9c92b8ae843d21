//! `accel stat` against live accelerated programs (nc, sockperf) exchanging UDP through the shm
//! datapath: the counters it shows equal the datagrams the test sent, `--json` parses, `-z`
//! zeroes, `-i` reports per-interval increases that add up, and the stats block of a process
//! killed without its exit clean-up is reported stale and removed.
//!
//! Each test's programs use a registry directory of their own (ACCEL_SHM_DIR), so the tool sees
//! exactly this test's processes; the tool itself runs without the library, as a user would.

mod common;

use common::*;
use std::io::Write;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

/// The sizes of the test's datagrams: 1..1400 bytes, varied.
fn sizes(n: usize) -> Vec<usize> {
    (0..n).map(|i| 1 + (i * 137) % 1400).collect()
}

/// The key prefix of the socket of process `proc` whose `field` (local/remote) is `addr`.
#[track_caller]
fn socket_of(doc: &JsonDoc, proc: &str, field: &str, addr: &str) -> String {
    doc.find(&format!("{proc}.sockets"), field, addr)
        .unwrap_or_else(|| panic!("no socket with {field} {addr} in {proc}:\n{}", doc.text))
}

#[track_caller]
fn process(doc: &JsonDoc, pid: u32) -> String {
    doc.find("processes", "pid", &pid.to_string())
        .unwrap_or_else(|| panic!("process {pid} not listed:\n{}", doc.text))
}

/// An accelerated `nc -u -l` receives datagrams from an accelerated `nc -u` (one datagram per
/// message: its stdin is a seqpacket socket). `accel stat` shows both sockets offloaded, with
/// exactly the datagrams and bytes sent; `-z` zeroes and counting resumes from zero; the client's
/// block goes when it exits; the server, killed (SIGKILL: no exit clean-up), leaves a block that
/// `accel stat` reports stale and removes, with the registry files the server left.
#[test]
fn stat_nc_counts_zero_and_stale() {
    let env = OpsEnv::new("ops_stat_nc");
    let nc = which("nc");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut cmd = env.accel(&nc, &[]);
    cmd.args(["-d", "-u", "-l", "127.0.0.1", &port.to_string()]);
    let mut server = env.shm.spawn(cmd, "server");
    env.shm.wait_shm_endpoint(&mut server, &endpoint);

    let (ours, theirs) = seqpacket_pair();
    let mut cmd = env.accel(&nc, &[]);
    cmd.args(["-u", "-w", "1", "127.0.0.1", &port.to_string()]);
    let mut client = env.shm.spawn_stdio(cmd, "client", Stdio::from(theirs));
    let mut feed = std::fs::File::from(ours);

    // One message at a time, the next when the last has arrived: nc reads its stdin into a
    // buffer and sends what it holds as one datagram, so messages written while a send is
    // pending would share a datagram.
    let n = 100;
    let sizes = sizes(n);
    let total: usize = sizes.iter().sum();
    let data = random_bytes(total, 51);
    let mut off = 0;
    for &len in &sizes {
        feed.write_all(&data[off..off + len]).expect("write to nc's stdin");
        off += len;
        assert!(
            wait_file_len(&server.out, off as u64, Duration::from_secs(15)),
            "nc -l received {} of {off} bytes",
            server.stdout_bytes().len()
        );
    }
    // The receive counters are updated before the data reaches the program: final by now.
    let doc = env.stat_json(&[]);
    if server.stdout_bytes() != data {
        eprintln!("{}", env.run_tool(&["stat", "-v"], "stat-diag").stdout_text());
    }
    assert_same_bytes("nc -u through shm", &server.stdout_bytes(), &data);
    assert_eq!(doc.u("version"), 1);
    let sp = process(&doc, server.pid);
    assert_eq!(doc.s(&format!("{sp}.program")), "nc");
    assert_eq!(doc.s(&format!("{sp}.datapaths.0")), "shm");
    assert_eq!(doc.s(&format!("{sp}.config.ACCEL_SHM.value")), "1");
    let ss = socket_of(&doc, &sp, "local", &endpoint);
    let c = |k: &str| doc.u(&format!("{ss}.counters.{k}"));
    assert_eq!(doc.s(&format!("{ss}.proto")), "udp");
    assert_eq!(doc.s(&format!("{ss}.offload")), "yes", "{}", doc.text);
    assert_eq!(doc.s(&format!("{ss}.offloaded")), "true");
    assert_eq!(doc.s(&format!("{ss}.verdict")), "accel");
    assert!(doc.s(&format!("{ss}.vi")).starts_with("shm/"), "{}", doc.text);
    assert!(doc.s(&format!("{ss}.ring")).starts_with("ring-"), "{}", doc.text);
    assert!(doc.u(&format!("{ss}.ring_depth")) > 0);
    assert!(doc.u(&format!("{ss}.ring_max_fill")) >= 1, "a datagram was in the ring");
    assert_eq!(c("shm_rx_packets"), n as u64, "offloaded rx packets = datagrams sent");
    assert_eq!(c("shm_rx_bytes"), total as u64, "offloaded rx bytes = bytes sent");
    assert_eq!(c("kernel_rx_packets"), 0, "nothing came through the kernel");
    for k in ["drop_ring_full", "drop_rcvbuf", "drop_not_peer", "drop_bad_frame", "drop_too_large"] {
        assert_eq!(c(k), 0, "{k}");
    }
    let fd: i32 = doc.s(&format!("{ss}.fd")).parse().expect("fd is a number");
    assert!(fd >= 0);
    // The ring is listed under its owner with its depth.
    assert_eq!(doc.u(&format!("{sp}.rings.0.owner")), server.pid as u64);
    assert_eq!(doc.u(&format!("{sp}.rings.0.depth")), doc.u(&format!("{ss}.ring_depth")));
    assert!(doc.u(&format!("{sp}.buffers.in_rings")) >= doc.u(&format!("{ss}.ring_depth")));

    let cp = process(&doc, client.pid);
    let cs = socket_of(&doc, &cp, "remote", &endpoint);
    let cc = |k: &str| doc.u(&format!("{cs}.counters.{k}"));
    assert_eq!(doc.s(&format!("{cs}.offload")), "yes", "{}", doc.text);
    assert_eq!(cc("shm_tx_packets"), n as u64, "offloaded tx packets = datagrams sent");
    assert_eq!(cc("shm_tx_bytes"), total as u64);
    assert_eq!(cc("kernel_tx_packets"), 0);

    // The table a person reads: one line per socket, the Offloaded column, rx shm/kernel.
    let text = env.run_tool(&["stat"], "stat-text");
    text.assert_success();
    let t = text.stdout_text();
    assert!(t.starts_with("PID ") && t.contains("OFFLOADED"), "{t}");
    let line = t
        .lines()
        .find(|l| l.starts_with(&format!("{} ", server.pid)) && l.contains(&endpoint))
        .unwrap_or_else(|| panic!("no line for the server socket:\n{t}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "nc", "{line}");
    assert_eq!(cols[6], "yes", "{line}");
    assert_eq!(cols[7], "shm", "{line}");
    assert_eq!(cols[8], format!("{n}/0"), "{line}");
    let v = env.run_tool(&["stat", "-vv", "-p", &server.pid.to_string()], "stat-vv");
    v.assert_success();
    let vt = v.stdout_text();
    for needle in ["decision: accel", "vi shm/", "poll hits", "drops: ring full 0", "configuration in force", "ACCEL_SHM=1"] {
        assert!(vt.contains(needle), "-vv lacks {needle:?}:\n{vt}");
    }

    // -z: counters back to 0, then counting again.
    let z = env.run_tool(&["stat", "-z", "-p", &server.pid.to_string()], "stat-z");
    z.assert_success();
    let doc = env.stat_json(&["-p", &server.pid.to_string()]);
    let ss = socket_of(&doc, "processes.0", "local", &endpoint);
    assert_eq!(doc.u(&format!("{ss}.counters.shm_rx_packets")), 0, "{}", doc.text);
    assert_eq!(doc.u(&format!("{ss}.counters.shm_rx_bytes")), 0);
    assert!(doc.u("processes.0.zeroed_ms") > 0);
    let mut got = total;
    for len in [10usize, 20, 30] {
        feed.write_all(&vec![b'z'; len]).unwrap();
        got += len;
        assert!(wait_file_len(&server.out, got as u64, Duration::from_secs(15)));
    }
    let doc = env.stat_json(&["-p", &server.pid.to_string()]);
    let ss = socket_of(&doc, "processes.0", "local", &endpoint);
    assert_eq!(doc.u(&format!("{ss}.counters.shm_rx_packets")), 3, "{}", doc.text);
    assert_eq!(doc.u(&format!("{ss}.counters.shm_rx_bytes")), 60);

    // The client exits normally (stdin closed, -w 1): its block goes with it.
    drop(feed);
    let st = client.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "nc client: {st}\n{}", client.stderr_text());
    assert!(!env.stats_file(client.pid).exists(), "the client's stats block outlived it");

    // The server dies without its exit clean-up: its block stays until a reader notices.
    let server_file = env.stats_file(server.pid);
    assert!(server_file.exists());
    server.kill();
    assert!(server_file.exists(), "SIGKILL runs no clean-up");
    let text = env.run_tool(&["stat"], "stat-stale");
    text.assert_success();
    let t = text.stdout_text();
    let stale = t
        .lines()
        .find(|l| l.starts_with("stale: ") && l.contains(&format!("stats-{}", server.pid)))
        .unwrap_or_else(|| panic!("the dead server's block is not reported stale:\n{t}"));
    assert!(stale.contains("is gone") && stale.ends_with(": removed"), "{stale}");
    assert!(t.contains("no accelerated processes"), "{t}");
    assert!(!server_file.exists(), "the stale block was not removed");
    // With the dead server's ring and endpoint: the registry is empty (and gone).
    let left: Vec<String> = std::fs::read_dir(&env.registry)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the registry still holds {left:?}");
    let doc = env.stat_json(&[]);
    assert_eq!(doc.len("processes"), 0, "{}", doc.text);
    assert_eq!(doc.len("stale"), 0, "reported once, then gone: {}", doc.text);
}

/// The `[Total Run]` counts of a sockperf client: (sent, received).
fn sockperf_totals(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("[Total Run]"))
        .unwrap_or_else(|| panic!("no [Total Run] line:\n{out}"));
    let sent = sockperf_value(line, "SentMessages").unwrap_or_else(|| panic!("{line}"));
    let recv = sockperf_value(line, "ReceivedMessages").unwrap_or_else(|| panic!("{line}"));
    (sent as u64, recv as u64)
}

/// `accel stat -i 0.3 --json -p PID` runs while an accelerated sockperf ping-pong client runs
/// against an accelerated `sockperf sr`: every line parses, and the first line's counters plus
/// every later line's per-interval increases add up to exactly the messages the client sent
/// (as do the final counters); the server replied to every one of them through the ring.
#[test]
fn stat_sockperf_counts_and_live_intervals() {
    let env = OpsEnv::new("ops_stat_sockperf");
    let sockperf = which("sockperf");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut cmd = env.accel(&sockperf, &[]);
    cmd.args(["sr", "-i", "127.0.0.1", "-p", &port.to_string()]);
    let mut server = env.shm.spawn(cmd, "server");
    env.shm.wait_shm_endpoint(&mut server, &endpoint);

    let pid = server.pid.to_string();
    let mut live = Proc::spawn(
        env.tool(&["stat", "-i", "0.3", "--json", "-p", &pid]),
        env.shm.cx.dir(),
        "stat-live",
        None,
    );
    let lines = |p: &Proc| p.stdout_text().lines().count();
    wait_until("the first stat -i line", || lines(&live) >= 1);

    let mut cmd = env.accel(&sockperf, &[]);
    // Paced (1000 msg/s): a ping-pong at this rate never fills a ring.
    cmd.args(["pp", "-i", "127.0.0.1", "-p", &port.to_string(), "-t", "1", "--mps", "1000"]);
    let out = env.shm.run(cmd, "client");
    out.assert_success();
    let text = out.stdout_text() + &out.stderr;
    let (sent, received) = sockperf_totals(&text);
    assert!(sent >= 100, "{text}");

    // Two more lines after the client finished: they include all of its traffic.
    let seen = lines(&live);
    wait_until("two more stat -i lines", || lines(&live) >= seen + 2);
    live.signal(libc::SIGINT);
    let st = live.wait_timeout(Duration::from_secs(10));
    assert!(st.success(), "accel stat -i after SIGINT: {st}\n{}", live.stderr_text());

    let docs: Vec<JsonDoc> = live
        .stdout_text()
        .lines()
        .map(|l| JsonDoc::parse(l, env.shm.cx.dir()))
        .collect();
    let mut sum = 0;
    for (i, doc) in docs.iter().enumerate() {
        assert!((doc.get("interval_s").unwrap_or("").parse::<f64>().unwrap_or(0.0) - 0.3).abs() < 1e-9, "{}", doc.text);
        let ss = socket_of(doc, "processes.0", "local", &endpoint);
        if i == 0 {
            sum += doc.u(&format!("{ss}.counters.shm_rx_packets"));
        } else {
            sum += doc.u(&format!("{ss}.deltas.shm_rx_packets"));
            let pps: f64 = doc.s(&format!("{ss}.rates.rx_pps")).parse().expect("rx_pps is a number");
            assert!(pps >= 0.0);
        }
    }
    let last = docs.last().unwrap();
    let ss = socket_of(last, "processes.0", "local", &endpoint);
    assert_eq!(last.u(&format!("{ss}.counters.shm_rx_packets")), sent, "final count = sent\n{text}");
    assert_eq!(sum, sent, "first count + per-interval increases = sent");

    let doc = env.stat_json(&["-p", &pid]);
    let ss = socket_of(&doc, "processes.0", "local", &endpoint);
    let c = |k: &str| doc.u(&format!("{ss}.counters.{k}"));
    assert_eq!(c("shm_rx_packets"), sent, "{text}");
    assert_eq!(c("shm_rx_bytes"), sent * 14, "sockperf's default message is 14 bytes");
    assert_eq!(c("kernel_rx_packets"), 0);
    // Every request got a reply through the ring; the client counted those that arrived before
    // it stopped.
    assert_eq!(c("shm_tx_packets"), sent, "{text}");
    assert!(received <= sent && received + 10 >= sent, "{text}");
    assert_eq!(c("kernel_tx_packets"), 0);
    assert_eq!(c("drop_ring_full"), 0);

    // sockperf sr exits normally on SIGINT: its block goes with it.
    server.signal(libc::SIGINT);
    let st = server.wait_timeout(Duration::from_secs(10));
    assert!(st.success(), "sockperf sr after SIGINT: {st}");
    assert!(!env.stats_file(server.pid).exists(), "the server's stats block outlived it");
}

/// Waits (bounded) until `cond` holds.
#[track_caller]
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LISTEN_DEADLINE, "{what}: not within {LISTEN_DEADLINE:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `cmd` run as user nobody (65534), without capabilities: `setpriv` drops to it just before
/// the program runs.
fn as_nobody(cmd: std::process::Command) -> std::process::Command {
    let mut wrapped = std::process::Command::new(which("setpriv"));
    wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"]);
    wrapped.arg(cmd.get_program());
    wrapped.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    wrapped
}

/// An unprivileged user (nobody) runs an accelerated `nc -u -l` and `nc -u` in the default
/// per-user registry, and `accel stat` as the same user shows the socket offloaded with exactly
/// the datagrams sent; the block is 0600 in a 0700 directory of that user; another user's
/// `accel stat` does not list it; killed, it is reported stale to its user and removed.
#[test]
fn stat_works_unprivileged_per_user() {
    let cx = Ctx::new(Mode::Preload, "ops_stat_nobody");
    let _serial = OpsEnv::new("ops_stat_nobody_serial"); // one shm test at a time, as the others
    let nc = which("nc");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let registry = std::path::PathBuf::from("/dev/shm/accel-65534");
    // Programs of this user write logs nowhere we could read: the library then logs to stderr.
    let plain_env = |cmd: &mut std::process::Command| {
        cmd.env("ACCEL_SHM", "1").env_remove("ACCEL_LOG_FILE").env("ACCEL_LOG_LEVEL", "warn");
        cmd.current_dir("/");
    };
    let mut cmd = cx.command(&nc);
    plain_env(&mut cmd);
    cmd.args(["-d", "-u", "-l", "127.0.0.1", &port.to_string()]);
    let mut server = cx.spawn(as_nobody(cmd), "server", None);
    let tool = |args: &[&str], name: &str| -> Output {
        let mut cmd = std::process::Command::new(accel_tool());
        cmd.env_remove("ACCEL_SHM_DIR").env_remove("LD_PRELOAD").args(args).current_dir("/");
        cx.run(as_nobody(cmd), name, None)
    };
    // nc -l has its socket once its block lists it (bounded wait).
    let pid = server.pid.to_string();
    let start = Instant::now();
    loop {
        let out = tool(&["stat", "-p", &pid], "stat-wait");
        if out.status.success() && out.stdout_text().contains(&endpoint) {
            break;
        }
        assert!(server.try_exited().is_none(), "nc -l exited:\n{}", server.stderr_text());
        assert!(start.elapsed() < LISTEN_DEADLINE, "nc -l of nobody never listed:\n{}", out.stdout_text());
        thread::sleep(Duration::from_millis(50));
    }

    let (ours, theirs) = seqpacket_pair();
    let mut cmd = cx.command(&nc);
    plain_env(&mut cmd);
    cmd.args(["-u", "-w", "1", "127.0.0.1", &port.to_string()]);
    let mut client = Proc::spawn_stdio(as_nobody(cmd), cx.dir(), "client", Stdio::from(theirs));
    let mut feed = std::fs::File::from(ours);
    let n = 20;
    let mut got = 0;
    for i in 0..n {
        let msg = vec![b'a' + (i % 26) as u8; 10 + i];
        feed.write_all(&msg).unwrap();
        got += msg.len();
        assert!(wait_file_len(&server.out, got as u64, Duration::from_secs(15)), "{}", server.stderr_text());
    }
    let out = tool(&["stat", "--json", "-p", &pid], "stat-json");
    out.assert_success();
    let doc = JsonDoc::parse(&out.stdout_text(), cx.dir());
    assert_eq!(doc.u("processes.0.uid"), 65534);
    let ss = socket_of(&doc, "processes.0", "local", &endpoint);
    assert_eq!(doc.s(&format!("{ss}.offload")), "yes", "{}", doc.text);
    assert_eq!(doc.u(&format!("{ss}.counters.shm_rx_packets")), n as u64);
    assert_eq!(doc.u(&format!("{ss}.counters.shm_rx_bytes")), got as u64);

    use std::os::unix::fs::MetadataExt;
    let file = registry.join(format!("stats-{pid}"));
    let m = std::fs::metadata(&file).expect("the block is in nobody's registry");
    assert_eq!((m.uid(), m.mode() & 0o777), (65534, 0o600), "{}", file.display());
    let d = std::fs::metadata(&registry).unwrap();
    assert_eq!((d.uid(), d.mode() & 0o777), (65534, 0o700));

    // Another user (root, this test) sees its own registry only.
    let mut cmd = std::process::Command::new(accel_tool());
    cmd.env_remove("ACCEL_SHM_DIR").args(["stat", "-p", &pid]);
    let other = cx.run(cmd, "stat-root", None);
    assert_eq!(other.status.code(), Some(1), "{}", other.stdout_text());

    // The client exits normally (stdin closed, -w 1) and takes its block with it.
    drop(feed);
    let st = client.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "nc client: {st}\n{}", client.stderr_text());
    assert!(!registry.join(format!("stats-{}", client.pid)).exists());
    server.kill();
    let out = tool(&["stat"], "stat-stale");
    out.assert_success();
    let t = out.stdout_text();
    assert!(t.lines().any(|l| l.starts_with("stale: ") && l.contains(&format!("stats-{pid}")) && l.ends_with(": removed")), "{t}");
    assert!(!file.exists());
    // With what the dead server left in the registry, and the directory it emptied.
    let left: Vec<String> = std::fs::read_dir(&registry)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nobody's registry still holds {left:?}");
}

/// A registry directory the library must refuse (here a plain file): the program runs as
/// without the library (its datagram arrives through the kernel), and says once that it
/// publishes no statistics.
#[test]
fn stat_bad_directory_one_warning_program_unharmed() {
    let env = OpsEnv::new("ops_stat_baddir");
    let bad = env.shm.cx.write_file("not-a-directory", b"");
    let bad = bad.to_string_lossy().into_owned();
    let mut cmd = env.accel(python3(), &[("ACCEL_SHM_DIR", &bad)]);
    cmd.args([
        "-c",
        "import socket\n\
         a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('127.0.0.1', 0))\n\
         b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.sendto(b'hello', a.getsockname())\n\
         print(a.recv(100).decode())",
    ]);
    let out = env.shm.run(cmd, "probe");
    out.assert_success();
    assert_eq!(out.stdout_text().trim(), "hello");
    let warnings = env.shm.log_lines("cannot publish the stats block");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("accel stat will not show this process"), "{warnings:?}");
}

/// A socket the rules file leaves to the kernel is listed too: not offloaded, VI kernel, and the
/// rule that decided it as the reason.
#[test]
fn stat_shows_why_a_socket_is_not_offloaded() {
    let env = OpsEnv::new("ops_stat_kernel");
    let nc = which("nc");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let rules = env.shm.cx.write_file("rules.conf", format!("use os udp_receiver 127.0.0.1:{port}\n").as_bytes());
    let rules = rules.to_string_lossy().into_owned();
    let mut cmd = env.accel(&nc, &[("ACCEL_CONFIG_FILE", &rules)]);
    cmd.args(["-d", "-u", "-l", "127.0.0.1", &port.to_string()]);
    let mut server = env.shm.spawn(cmd, "server");
    env.shm.wait_udp_bound(&mut server, port);
    let pid = server.pid;
    let doc = env.wait_stat(pid, "the socket's decision", |d| {
        d.find("processes.0.sockets", "local", &endpoint)
            .is_some_and(|s| d.get(&format!("{s}.verdict")) == Some("kernel"))
    });
    let ss = socket_of(&doc, "processes.0", "local", &endpoint);
    assert_eq!(doc.s(&format!("{ss}.offload")), "no");
    assert_eq!(doc.s(&format!("{ss}.offloaded")), "false");
    let reason = doc.s(&format!("{ss}.reason"));
    assert!(reason.contains("rules line 1") && reason.contains("use os udp_receiver"), "{reason}");
    let text = env.run_tool(&["stat", "-p", &pid.to_string()], "stat-text");
    text.assert_success();
    let t = text.stdout_text();
    let line = t.lines().find(|l| l.contains(&endpoint)).unwrap_or_else(|| panic!("{t}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((cols[6], cols[7]), ("no", "kernel"), "{line}");
    assert!(line.contains("rules line 1"), "{line}");
    server.stop();
}

/// Is it dropping? A receiver that never reads (ring depth 64, ACCEL_RX_WRE=64) and a sender of
/// 300 datagrams: the sender's socket shows 64 offloaded and 236 dropped because the ring was
/// full (DROPS column, `drop_ring_full`); the receiver's ring shows fill 64 of 64 (max 64) and
/// the same 236 drops.
#[test]
fn stat_shows_ring_full_drops() {
    let env = OpsEnv::new("ops_stat_drops");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut cmd = env.accel(python3(), &[("ACCEL_RX_WRE", "64")]);
    cmd.args([
        "-c",
        &format!(
            "import socket, time\n\
             a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('127.0.0.1', {port}))\n\
             print('ready', flush=True)\n\
             time.sleep(60)"
        ),
    ]);
    let mut receiver = env.shm.spawn(cmd, "receiver");
    env.shm.wait_shm_endpoint(&mut receiver, &endpoint);
    let mut cmd = env.accel(python3(), &[]);
    cmd.args([
        "-c",
        &format!(
            "import socket, time\n\
             b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range(300): b.sendto(b'x' * 100, ('127.0.0.1', {port}))\n\
             print('sent', flush=True)\n\
             time.sleep(60)"
        ),
    ]);
    let mut sender = env.shm.spawn(cmd, "sender");
    wait_until("the sender's 300 datagrams", || sender.stdout_text().contains("sent"));
    assert!(sender.try_exited().is_none(), "{}", sender.stderr_text());

    let doc = env.stat_json(&[]);
    let sp = process(&doc, sender.pid);
    let ss = format!("{sp}.sockets.0");
    assert_eq!(doc.u(&format!("{ss}.counters.shm_tx_packets")), 64, "{}", doc.text);
    assert_eq!(doc.u(&format!("{ss}.counters.drop_ring_full")), 236);
    assert_eq!(doc.u(&format!("{ss}.counters.kernel_tx_packets")), 0);
    let rp = process(&doc, receiver.pid);
    let rs = socket_of(&doc, &rp, "local", &endpoint);
    assert_eq!(
        (doc.u(&format!("{rs}.ring_depth")), doc.u(&format!("{rs}.ring_fill")), doc.u(&format!("{rs}.ring_max_fill"))),
        (64, 64, 64)
    );
    assert_eq!(doc.u(&format!("{rs}.counters.shm_rx_packets")), 0, "it never read");
    let ring = doc.s(&format!("{rs}.ring")).to_string();
    let r = doc.find(&format!("{rp}.rings"), "name", &ring).unwrap_or_else(|| panic!("{}", doc.text));
    assert_eq!(doc.u(&format!("{r}.stats.drops_full")), 236);
    assert_eq!(doc.u(&format!("{r}.owner")), receiver.pid as u64);

    let text = env.run_tool(&["stat", "-p", &sender.pid.to_string()], "stat-text");
    let t = text.stdout_text();
    let cols: Vec<&str> = t.lines().nth(1).unwrap_or_else(|| panic!("{t}")).split_whitespace().collect();
    assert_eq!((cols[9], cols[10]), ("64/0", "236"), "{t}");
    sender.stop();
    receiver.stop();
}
