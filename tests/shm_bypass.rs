//! The shm datapath bypasses the kernel between two accelerated processes on one host, and falls
//! back to the kernel wherever it must (plain peers, oversize datagrams).
//!
//! Every test runs its programs in a network namespace of its own, so the namespace's
//! `Udp: InDatagrams` counter (/proc/net/snmp) moves only by what these programs make the kernel
//! receive: through the rings it moves by the doorbells alone, through the kernel by every
//! datagram. Each test ends by checking the shm registry holds no file of its processes.

mod common;

use common::*;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// sockperf


/// Starts an accelerated `sockperf sr` on `ip:port` and waits until its shm endpoint is
/// published (not merely its kernel bind: senders that look the endpoint up before it exists
/// use the kernel for a while).
fn sockperf_server(env: &ShmEnv, ip: &str, port: u16, name: &str) -> Proc {
    let mut cmd = env.accel(which("sockperf"), &[]);
    cmd.args(["sr", "-i", ip, "-p", &port.to_string()]);
    let mut p = env.spawn(cmd, name);
    env.wait_shm_endpoint(&mut p, &format!("{ip}:{port}"));
    p
}

/// Stops `sockperf sr` with SIGINT (it exits normally, so the library cleans up at exit);
/// returns its output.
fn stop_sockperf_server(p: &mut Proc) -> String {
    p.signal(libc::SIGINT);
    let st = p.wait_timeout(Duration::from_secs(10));
    let out = p.stdout_text() + &p.stderr_text();
    assert!(st.success(), "sockperf sr after SIGINT: {st}\n{out}");
    out
}

/// Runs an accelerated sockperf client (`pp` or `tp`) for 1 s against `ip:port`; returns its
/// output and the namespace's InDatagrams delta during the run.
fn sockperf_client(env: &ShmEnv, mode: &str, ip: &str, port: u16, name: &str) -> (String, u64) {
    let before = env.ns.in_datagrams();
    let mut cmd = env.accel(which("sockperf"), &[]);
    cmd.args([mode, "-i", ip, "-p", &port.to_string(), "-t", "1"]);
    if mode == "pp" {
        // sockperf sizes its sequence-number table for --mps (default about 600K/s) and aborts
        // with "_seqN > m_maxSequenceNo" when round trips are faster than that: ours can be.
        cmd.args(["--mps", "3000000"]);
    }
    let out = env.run(cmd, name);
    out.assert_success();
    let delta = env.ns.in_datagrams() - before;
    (out.stdout_text() + &out.stderr, delta)
}

/// Asserts a ping-pong run is valid (latency, thousands of messages, nothing dropped,
/// duplicated or reordered) and went through the rings; returns the messages received.
#[track_caller]
fn assert_ping_pong_bypassed(out: &str, delta: u64, what: &str) -> f64 {
    let latency = sockperf_value(out, "Latency is")
        .unwrap_or_else(|| panic!("{what}: no latency summary\n{out}"));
    let received = out
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .and_then(|l| sockperf_value(l, "ReceivedMessages"))
        .unwrap_or_else(|| panic!("{what}: no [Valid Duration] ReceivedMessages\n{out}"));
    assert!(
        out.contains(
            "# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0"
        ),
        "{what}: sockperf saw drops, duplicates or reordering\n{out}"
    );
    assert!(latency > 0.0, "{what}: latency {latency}\n{out}");
    assert!(
        received >= 1000.0,
        "{what}: only {received} messages in 1 s\n{out}"
    );
    // Every request and every reply is a datagram; through the kernel each would count.
    assert!(
        (delta as f64) < received / 100.0,
        "{what}: Udp InDatagrams moved by {delta} while {received} round trips completed: \
         the datagrams went through the kernel\n{out}"
    );
    eprintln!("{what}: {received} round trips, latency {latency} usec, InDatagrams +{delta}");
    received
}

/// sockperf ping-pong between two accelerated processes on 127.0.0.1: valid results, and the
/// kernel received only doorbells (< 1% of the messages).
#[test]
fn shm_sockperf_ping_pong_bypasses_kernel() {
    let env = ShmEnv::new("shm_sockperf_pp");
    let port = free_port();
    let mut server = sockperf_server(&env, "127.0.0.1", port, "server");
    let (out, delta) = sockperf_client(&env, "pp", "127.0.0.1", port, "client");
    stop_sockperf_server(&mut server);
    assert_ping_pong_bypassed(&out, delta, "sockperf pp 127.0.0.1");
    env.assert_no_leftovers(&[port]);
}

/// Asserts a throughput run is valid and went through the rings; returns messages received.
#[track_caller]
fn assert_throughput_bypassed(client: &str, server: &str, delta: u64, what: &str) -> f64 {
    let rate = sockperf_value(client, "Message Rate is")
        .unwrap_or_else(|| panic!("{what}: no message rate\n{client}"));
    let sent = sockperf_value(client, "Total of")
        .unwrap_or_else(|| panic!("{what}: no total sent\n{client}"));
    let received = sockperf_value(server, "Total")
        .unwrap_or_else(|| panic!("{what}: the server reported no total\n{server}"));
    assert!(rate > 0.0, "{what}: rate {rate}\n{client}");
    assert!(
        received >= 1000.0 && received <= sent + 100.0,
        "{what}: server received {received} of {sent} messages\n{client}\n{server}"
    );
    assert!(
        (delta as f64) < received / 100.0,
        "{what}: Udp InDatagrams moved by {delta} while the server received {received} \
         messages: they went through the kernel\n{client}\n{server}"
    );
    eprintln!("{what}: sent {sent}, received {received}, rate {rate}/s, InDatagrams +{delta}");
    received
}

/// sockperf throughput between two accelerated processes on 127.0.0.1: the server receives
/// thousands of messages, the kernel only doorbells.
#[test]
fn shm_sockperf_throughput_bypasses_kernel() {
    let env = ShmEnv::new("shm_sockperf_tp");
    let port = free_port();
    let mut server = sockperf_server(&env, "127.0.0.1", port, "server");
    let (out, delta) = sockperf_client(&env, "tp", "127.0.0.1", port, "client");
    let server_out = stop_sockperf_server(&mut server);
    assert_throughput_bypassed(&out, &server_out, delta, "sockperf tp 127.0.0.1");
    env.assert_no_leftovers(&[port]);
}

const DUMMY_IP: &str = "10.200.0.1";

/// The same on a local non-loopback address (a dummy interface of the namespace): ping-pong and
/// throughput bypass the kernel.
#[test]
fn shm_sockperf_on_dummy_interface_address_bypasses_kernel() {
    let env = ShmEnv::new("shm_sockperf_dummy");
    env.ns.add_dummy("d0", "10.200.0.1/24");
    let port = free_port();
    let mut server = sockperf_server(&env, DUMMY_IP, port, "server-pp");
    let (out, delta) = sockperf_client(&env, "pp", DUMMY_IP, port, "client-pp");
    stop_sockperf_server(&mut server);
    assert_ping_pong_bypassed(&out, delta, "sockperf pp 10.200.0.1");
    // A fresh server, so its total counts the throughput run only.
    let port2 = free_port();
    let mut server = sockperf_server(&env, DUMMY_IP, port2, "server-tp");
    let (out, delta) = sockperf_client(&env, "tp", DUMMY_IP, port2, "client-tp");
    let server_out = stop_sockperf_server(&mut server);
    assert_throughput_bypassed(&out, &server_out, delta, "sockperf tp 10.200.0.1");
    env.assert_no_leftovers(&[port, port2]);
}

/// A receiver bound to 0.0.0.0:port serves every local address: ping-pong to it via 127.0.0.1
/// and via the dummy interface's address both bypass the kernel.
#[test]
fn shm_sockperf_wildcard_receiver_via_loopback_and_dummy_address() {
    let env = ShmEnv::new("shm_sockperf_wildcard");
    env.ns.add_dummy("d0", "10.200.0.1/24");
    let port = free_port();
    let mut server = sockperf_server(&env, "0.0.0.0", port, "server");
    let (out, delta) = sockperf_client(&env, "pp", "127.0.0.1", port, "client-lo");
    assert_ping_pong_bypassed(&out, delta, "sockperf pp 0.0.0.0 via 127.0.0.1");
    let (out, delta) = sockperf_client(&env, "pp", DUMMY_IP, port, "client-d0");
    assert_ping_pong_bypassed(&out, delta, "sockperf pp 0.0.0.0 via 10.200.0.1");
    stop_sockperf_server(&mut server);
    env.assert_no_leftovers(&[port]);
}

// ---------------------------------------------------------------------------------------------
// The python probe: sequenced, checksummed datagrams with flow control.

/// A numeric field of a probe result.
#[track_caller]
fn num(j: &Json, path: &str) -> f64 {
    j.num(path)
        .unwrap_or_else(|| panic!("no number `{path}` in probe result {j:?}"))
}

/// The probe receiver's per-sender ranges: sender id → [(first, last)] (inclusive).
fn sender_ranges(j: &Json) -> Vec<(String, Vec<(u64, u64)>)> {
    let Some(Json::Obj(m)) = j.get("senders") else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| {
            let r = match v.get("ranges") {
                Some(Json::Arr(a)) => a
                    .iter()
                    .filter_map(|p| match p {
                        Json::Arr(ab) if ab.len() == 2 => match (&ab[0], &ab[1]) {
                            (Json::Num(a), Json::Num(b)) => Some((*a as u64, *b as u64)),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (k.clone(), r)
        })
        .collect()
}

/// Asserts a probe receiver got every datagram 0..count of each of `ids` exactly once, intact.
#[track_caller]
fn assert_received_all(j: &Json, ids: &[u32], count: u64, what: &str) {
    assert_eq!(j.get("error"), Some(&Json::Null), "{what}: {j:?}");
    assert_eq!(num(j, "bad"), 0.0, "{what}: corrupt datagrams: {j:?}");
    assert_eq!(num(j, "dups"), 0.0, "{what}: duplicated datagrams: {j:?}");
    let ranges = sender_ranges(j);
    for id in ids {
        let r = ranges
            .iter()
            .find(|(k, _)| *k == id.to_string())
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        assert_eq!(
            r,
            vec![(0, count - 1)],
            "{what}: sender {id}: received ranges {r:?}, expected all of 0..{count}"
        );
    }
    assert_eq!(
        num(j, "received"),
        (count * ids.len() as u64) as f64,
        "{what}: datagram count: {j:?}"
    );
}

struct Transfer {
    recv: Json,
    send: Json,
    delta: u64,
}

/// One receiver and one sender of the probe in `env`: `count` datagrams of `sizes` to
/// `dest` (the receiver binds `bind`), an ACK every `window` datagrams; `recv_extra`: more
/// options for the receiving probe.
#[allow(clippy::too_many_arguments)]
fn transfer(
    env: &ShmEnv,
    recv_accel: bool,
    send_accel: bool,
    lib_env: &[(&str, &str)],
    bind: &str,
    dest: &str,
    count: u32,
    sizes: &str,
    window: u32,
    strict: bool,
    recv_extra: &[&str],
) -> Transfer {
    let count_s = count.to_string();
    let window_s = window.to_string();
    let mut args = vec![
        "recv", "--bind", bind, "--count", &count_s, "--ack", &window_s, "--sizes", sizes,
    ];
    args.extend_from_slice(recv_extra);
    if strict {
        args.push("--strict");
    }
    let before = env.ns.in_datagrams();
    let mut receiver = env.spawn(env.probe(recv_accel, lib_env, &args), "receiver");
    wait_stdout_line(&mut receiver, "# ready", LISTEN_DEADLINE);
    let sender = env.run(
        env.probe(
            send_accel,
            lib_env,
            &[
                "send", "--dest", dest, "--count", &count_s, "--window", &window_s, "--sizes",
                sizes,
            ],
        ),
        "sender",
    );
    sender.assert_success();
    let st = receiver.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    assert!(
        st.success(),
        "receiver: {st}\n{}\n{}",
        receiver.stdout_text(),
        receiver.stderr_text()
    );
    Transfer {
        recv: probe_json(&receiver.stdout_text()),
        send: probe_json(&sender.stdout_text()),
        delta,
    }
}

const N: u32 = 20000;

/// 20000 datagrams of 0..1472 bytes between two accelerated python processes (blocking
/// sockets): every one arrives once, intact and in order; the kernel sees only doorbells.
fn python_20000(tag: &str, lib_env: &[(&str, &str)], max_delta: u64) -> u64 {
    python_20000_with(tag, lib_env, max_delta, &[])
}

fn python_20000_with(tag: &str, lib_env: &[(&str, &str)], max_delta: u64, recv_extra: &[&str]) -> u64 {
    let env = ShmEnv::new(tag);
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let t = transfer(&env, true, true, lib_env, &a, &a, N, "0-1472", 32, true, recv_extra);
    assert_received_all(&t.recv, &[0], N as u64, tag);
    assert_eq!(num(&t.send, "sent"), N as f64, "{:?}", t.send);
    eprintln!(
        "[{tag}] {N} datagrams, {} bytes ({} shorter than the 16-byte header), InDatagrams +{}",
        num(&t.recv, "bytes"),
        num(&t.recv, "short"),
        t.delta
    );
    assert!(
        t.delta <= max_delta,
        "[{tag}] Udp InDatagrams moved by {} for {N} datagrams (limit {max_delta}): they went \
         through the kernel",
        t.delta
    );
    env.assert_no_leftovers(&[port]);
    t.delta
}

#[test]
fn shm_python_20000_datagrams_bypass_kernel() {
    python_20000("shm_python_20000", &[], N as u64 / 100);
}

/// The receiver uses recvmsg (no control buffer: the receive fast path's one-buffer case, and
/// the general path when it has to wait): every datagram once, intact, in order, MSG_TRUNC
/// clear, through the rings.
#[test]
fn shm_python_20000_datagrams_recvmsg() {
    python_20000_with("shm_python_recvmsg", &[], N as u64 / 100, &["--api", "recvmsg"]);
}

/// ACCEL_RX_POLL=0: every wait sleeps, so every wake-up is a doorbell; the data still arrives
/// intact through the rings (InDatagrams ≤ N: at most one doorbell per datagram, none of the data).
#[test]
fn shm_python_20000_datagrams_rx_poll_0_doorbells() {
    let d = python_20000("shm_python_rx_poll_0", &[("ACCEL_RX_POLL", "0")], N as u64);
    eprintln!("ACCEL_RX_POLL=0: {d} doorbells (InDatagrams) for {N} datagrams + ACKs");
}

/// ACCEL_PROFILE=latency: receives spin forever; no doorbell should be needed at all.
#[test]
fn shm_python_20000_datagrams_latency_profile() {
    python_20000(
        "shm_python_latency",
        &[("ACCEL_PROFILE", "latency")],
        N as u64 / 100,
    );
}

/// A connected sender (connect + send) and a receiver on the dummy interface's address.
#[test]
fn shm_python_connected_sender_to_dummy_address() {
    let env = ShmEnv::new("shm_python_connected");
    env.ns.add_dummy("d0", "10.200.0.1/24");
    let port = free_port();
    let a = format!("{DUMMY_IP}:{port}");
    let count = "5000";
    let before = env.ns.in_datagrams();
    let mut receiver = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "recv", "--bind", &a, "--count", count, "--ack", "32", "--strict",
            ],
        ),
        "receiver",
    );
    wait_stdout_line(&mut receiver, "# ready", LISTEN_DEADLINE);
    let sender = env.run(
        env.probe(
            true,
            &[],
            &[
                "send",
                "--dest",
                &a,
                "--count",
                count,
                "--window",
                "32",
                "--connect",
            ],
        ),
        "sender",
    );
    sender.assert_success();
    receiver.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    assert_received_all(
        &probe_json(&receiver.stdout_text()),
        &[0],
        5000,
        "connected sender",
    );
    assert!(delta < 50, "InDatagrams +{delta} for 5000 datagrams");
    env.assert_no_leftovers(&[port]);
}

// ---------------------------------------------------------------------------------------------
// Interoperation with processes without the library, and the kernel path.

/// An accelerated sender to a plain (no library) receiver: nothing serves the port through
/// shm, so every datagram goes through the kernel and arrives intact.
#[test]
fn shm_accelerated_sender_to_plain_receiver_uses_kernel() {
    let env = ShmEnv::new("shm_accel_to_plain");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let t = transfer(&env, false, true, &[], &a, &a, N, "0-1472", 32, true, &[]);
    assert_received_all(&t.recv, &[0], N as u64, "plain receiver");
    assert!(
        t.delta >= N as u64,
        "InDatagrams +{} < {N}: the datagrams did not all go through the kernel",
        t.delta
    );
    eprintln!("accelerated -> plain: InDatagrams +{}", t.delta);
    env.assert_no_leftovers(&[port]);
}

/// A plain sender to an accelerated receiver: the datagrams come through the kernel (the
/// receiver reads its kernel socket too: dual path), all intact and in order.
#[test]
fn shm_plain_sender_to_accelerated_receiver_uses_kernel() {
    let env = ShmEnv::new("shm_plain_to_accel");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let t = transfer(&env, true, false, &[], &a, &a, N, "0-1472", 32, true, &[]);
    assert_received_all(&t.recv, &[0], N as u64, "accelerated receiver");
    assert!(
        t.delta >= N as u64,
        "InDatagrams +{} < {N}: the plain sender's datagrams should be the kernel's",
        t.delta
    );
    eprintln!("plain -> accelerated: InDatagrams +{}", t.delta);
    env.assert_no_leftovers(&[port]);
}

/// Both roads at once into one accelerated receiver: an accelerated sender (rings) and a
/// plain sender (kernel) concurrently; each sender's datagrams arrive all, once, in order.
#[test]
fn shm_dual_path_accelerated_and_plain_senders_at_once() {
    let env = ShmEnv::new("shm_dual_path");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let count = 10000u32;
    let cs = count.to_string();
    let before = env.ns.in_datagrams();
    let mut receiver = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "recv",
                "--bind",
                &a,
                "--count",
                &cs,
                "--senders",
                "2",
                "--ack",
                "32",
                "--strict",
            ],
        ),
        "receiver",
    );
    wait_stdout_line(&mut receiver, "# ready", LISTEN_DEADLINE);
    let mut s0 = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "send", "--dest", &a, "--count", &cs, "--window", "32", "--id", "0",
            ],
        ),
        "sender-accel",
    );
    let mut s1 = env.spawn(
        env.probe(
            false,
            &[],
            &[
                "send", "--dest", &a, "--count", &cs, "--window", "32", "--id", "1",
            ],
        ),
        "sender-plain",
    );
    for s in [&mut s0, &mut s1] {
        let st = s.wait_timeout(CHILD_TIMEOUT);
        assert!(st.success(), "{}: {st}\n{}", s.name, s.stdout_text());
    }
    receiver.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    let j = probe_json(&receiver.stdout_text());
    assert_received_all(&j, &[0, 1], count as u64, "dual path");
    assert!(
        delta >= count as u64 && delta < count as u64 + count as u64 / 10,
        "InDatagrams +{delta}: expected the plain sender's {count} (kernel) plus few doorbells"
    );
    env.assert_no_leftovers(&[port]);
}

/// Datagrams larger than a ring slot (2016 bytes of payload with the default 1500 MTU) take the
/// kernel path between accelerated processes, interleaved with ring-sized ones: all arrive
/// intact, and the kernel counted at least every oversize one.
#[test]
fn shm_oversize_datagrams_take_kernel_path_intact() {
    let env = ShmEnv::new("shm_oversize");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    // One cycle per window: 2 ring-sized, 4 oversize (2017 is one byte over the slot).
    let sizes = "2016,2017,4000,60000,65507,100";
    let count = 600u32;
    let t = transfer(&env, true, true, &[], &a, &a, count, sizes, 6, false, &[]);
    assert_received_all(&t.recv, &[0], count as u64, "oversize");
    let oversize = count as u64 * 4 / 6;
    assert!(
        t.delta >= oversize,
        "InDatagrams +{} < {oversize} oversize datagrams: they cannot have used a ring",
        t.delta
    );
    assert!(
        t.delta < count as u64,
        "InDatagrams +{}: the ring-sized datagrams went through the kernel too",
        t.delta
    );
    eprintln!(
        "oversize: {count} datagrams ({oversize} oversize), InDatagrams +{}",
        t.delta
    );
    env.assert_no_leftovers(&[port]);
}
