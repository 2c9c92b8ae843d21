//! The shm datapath across process events: fork (a shared socket), kill -9 of a sender or a
//! receiver, SO_REUSEPORT groups (also with a member without the library), the ring allocation
//! logic, signals during a blocking receive.
//!
//! Programs run in a network namespace of their own (see tests/shm_bypass.rs); every test ends
//! by checking the shm registry holds no file of its processes.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[track_caller]
fn num(j: &Json, path: &str) -> f64 {
    j.num(path)
        .unwrap_or_else(|| panic!("no number `{path}` in probe result {j:?}"))
}

/// sender id → every sequence number a probe receiver reported (expanded from its ranges).
fn received_seqs(j: &Json) -> Vec<(String, Vec<u64>)> {
    let Some(Json::Obj(m)) = j.get("senders") else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| {
            let mut seqs = Vec::new();
            if let Some(Json::Arr(a)) = v.get("ranges") {
                for p in a {
                    if let Json::Arr(ab) = p {
                        if let (Some(Json::Num(a)), Some(Json::Num(b))) = (ab.first(), ab.get(1)) {
                            seqs.extend(*a as u64..=*b as u64);
                        }
                    }
                }
            }
            (k.clone(), seqs)
        })
        .collect()
}

/// Asserts a probe receiver saw nothing corrupt, duplicated or late.
#[track_caller]
fn assert_clean(j: &Json, what: &str) {
    assert_eq!(j.get("error"), Some(&Json::Null), "{what}: {j:?}");
    assert_eq!(num(j, "bad"), 0.0, "{what}: corrupt datagrams: {j:?}");
    assert_eq!(num(j, "dups"), 0.0, "{what}: duplicated datagrams: {j:?}");
}

/// Merges several receivers' results: for each sender, asserts the union is exactly 0..count
/// with no sequence number received twice (by one receiver or by two).
#[track_caller]
fn assert_union_exact(results: &[Json], ids: &[u32], count: u64, what: &str) {
    for id in ids {
        let mut all: Vec<u64> = Vec::new();
        for j in results {
            if let Some((_, s)) = received_seqs(j)
                .into_iter()
                .find(|(k, _)| *k == id.to_string())
            {
                all.extend(s);
            }
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            n,
            all.len(),
            "{what}: sender {id}: {} datagrams were received by two receivers",
            n - all.len()
        );
        let missing: Vec<u64> = (0..count)
            .filter(|s| all.binary_search(s).is_err())
            .collect();
        assert!(
            missing.is_empty() && all.len() as u64 == count,
            "{what}: sender {id}: {} of {count} missing (first {:?}), {} received",
            missing.len(),
            &missing[..missing.len().min(10)],
            all.len()
        );
    }
}

/// Sends STOP datagrams (from the test process, inside the namespace, from `sources` different
/// ports each round) to `dest` every 50 ms until every one of `procs` exited; bounded.
fn stop_receivers(env: &ShmEnv, dest: &str, procs: &mut [&mut Proc], sources: usize) {
    let start = Instant::now();
    loop {
        if procs.iter_mut().all(|p| p.try_exited().is_some()) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "receivers did not stop within 15 s of STOP datagrams: {:?}",
            procs
                .iter()
                .map(|p| format!("{}: {}", p.name, p.stdout_text()))
                .collect::<Vec<_>>()
        );
        env.ns.send_udp(dest, b"STOP", sources);
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// fork

/// A receiver binds, forks, and parent and child both block in recvfrom on the shared socket;
/// 20000 sequenced datagrams from an accelerated sender: each is received exactly once, by one
/// of the two, intact.
fn fork_shared_socket(tag: &str, lib_env: &[(&str, &str)]) {
    let env = ShmEnv::new(tag);
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let count = 20000u32;
    let cs = count.to_string();
    let mut receiver = env.spawn(
        env.probe(
            true,
            lib_env,
            &[
                "recv",
                "--bind",
                &a,
                "--fork",
                "--stop",
                "--ack",
                "32",
                "--ack-seq",
                "--sizes",
                "16-1472",
            ],
        ),
        "receiver",
    );
    wait_stdout_line(&mut receiver, "# ready parent", LISTEN_DEADLINE);
    let child_line = wait_stdout_line(&mut receiver, "# ready child", LISTEN_DEADLINE);
    if let Some(pid) = child_line
        .rsplit(' ')
        .next()
        .and_then(|p| p.trim().parse().ok())
    {
        env.add_pid(pid);
    }
    let before = env.ns.in_datagrams();
    let sender = env.run(
        env.probe(
            true,
            lib_env,
            &[
                "send", "--dest", &a, "--count", &cs, "--window", "32", "--sizes", "16-1472",
            ],
        ),
        "sender",
    );
    sender.assert_success();
    let delta = env.ns.in_datagrams() - before;
    stop_receivers(&env, &a, &mut [&mut receiver], 1);
    let st = receiver.wait_timeout(CHILD_TIMEOUT);
    let results = probe_jsons(&receiver.stdout_text());
    assert_eq!(
        results.len(),
        2,
        "expected the parent's and the child's result ({st}):\n{}\n{}",
        receiver.stdout_text(),
        receiver.stderr_text()
    );
    for j in &results {
        assert_clean(j, "fork receiver");
    }
    assert_union_exact(&results, &[0], count as u64, "parent + child");
    let split: Vec<f64> = results.iter().map(|j| num(j, "received")).collect();
    eprintln!("[{tag}] parent/child received {split:?}, InDatagrams +{delta}");
    assert!(st.success(), "receiver: {st}");
    assert!(
        delta < count as u64 / 10,
        "InDatagrams +{delta} for {count} datagrams"
    );
    env.assert_no_leftovers(&[port]);
}

#[test]
fn shm_fork_shared_socket_each_datagram_once() {
    fork_shared_socket("shm_fork", &[]);
}

/// The same with ACCEL_PROFILE=latency: parent and child both spin on the ring all the time, so
/// they really race for every datagram (with the default budget one of them may sleep through
/// the whole stream: the kernel wakes one UDP waiter per doorbell).
#[test]
fn shm_fork_shared_socket_each_datagram_once_both_spinning() {
    fork_shared_socket("shm_fork_spinning", &[("ACCEL_PROFILE", "latency")]);
}

// ---------------------------------------------------------------------------------------------
// kill -9

/// kill -9 of a sender in the middle of its stream (a tight send loop, so likely inside a ring
/// push): the receiver keeps working — nothing it got is garbled — and a new sender's
/// datagrams (2048) all arrive. The killed sender's ring is reaped by the next accelerated process.
#[test]
fn shm_kill9_sender_mid_stream_receiver_keeps_working() {
    let env = ShmEnv::new("shm_kill9_sender");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let mut receiver = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "recv", "--bind", &a, "--stop", "--ack", "32", "--ids", "1,2", "--sizes", "16-1472",
            ],
        ),
        "receiver",
    );
    wait_stdout_line(&mut receiver, "# ready", LISTEN_DEADLINE);
    let mut s1 = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "send", "--dest", &a, "--loop", "--id", "1", "--sizes", "16-1472",
            ],
        ),
        "sender-1",
    );
    wait_stdout_line(&mut receiver, "# first from 1", LISTEN_DEADLINE);
    std::thread::sleep(Duration::from_millis(300));
    s1.kill(); // SIGKILL, and reaped (a zombie would still count as alive)
    let s1_pid = s1.pid;
    // The next accelerated process reaps what the killed one left.
    let count = 2048u32; // a multiple of the window: a --stop receiver acks full windows only
    let cs = count.to_string();
    let s2 = env.run(
        env.probe(
            true,
            &[],
            &[
                "send", "--dest", &a, "--count", &cs, "--id", "2", "--window", "32", "--sizes",
                "16-1472",
            ],
        ),
        "sender-2",
    );
    s2.assert_success();
    let left = shm_files_of(0, &[s1_pid], &[]);
    assert!(
        left.is_empty(),
        "files of the killed sender {s1_pid} were not reaped by the next process: {left:?}"
    );
    stop_receivers(&env, &a, &mut [&mut receiver], 1);
    receiver.wait_timeout(CHILD_TIMEOUT);
    let j = probe_json(&receiver.stdout_text());
    assert_clean(&j, "receiver after kill -9 of a sender");
    let seqs = received_seqs(&j);
    let got1 = seqs
        .iter()
        .find(|(k, _)| k == "1")
        .map_or(0, |(_, s)| s.len());
    assert!(got1 > 0, "nothing from the killed sender: {j:?}");
    assert_union_exact(std::slice::from_ref(&j), &[2], count as u64, "second sender");
    eprintln!("kill -9 sender: {got1} datagrams of the killed sender received intact");
    env.assert_no_leftovers(&[port]);
}

/// kill -9 of an accelerated receiver while an accelerated sender keeps sending to its port:
/// the sender notices (liveness check) and falls back to the kernel, so a PLAIN receiver
/// started on the same port after the kill gets datagrams within ~2 s. The dead receiver's
/// files are gone once the next accelerated process started.
#[test]
fn shm_kill9_receiver_sender_falls_back_to_kernel() {
    let env = ShmEnv::new("shm_kill9_receiver");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let mut r1 = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "recv", "--bind", &a, "--stop", "--ids", "1", "--sizes", "16-1472",
            ],
        ),
        "receiver-accel",
    );
    wait_stdout_line(&mut r1, "# ready", LISTEN_DEADLINE);
    let mut sender = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "send",
                "--dest",
                &a,
                "--loop",
                "--id",
                "1",
                "--pace-us",
                "200",
                "--sizes",
                "16-1472",
            ],
        ),
        "sender",
    );
    wait_stdout_line(&mut r1, "# first from 1", LISTEN_DEADLINE);
    std::thread::sleep(Duration::from_millis(200));
    r1.kill();
    let r1_pid = r1.pid;
    let killed_at = Instant::now();
    let mut r2 = env.spawn(
        env.probe(
            false,
            &[],
            &[
                "recv", "--bind", &a, "--stop", "--ids", "1", "--sizes", "16-1472",
            ],
        ),
        "receiver-plain",
    );
    wait_stdout_line(&mut r2, "# ready", LISTEN_DEADLINE);
    let bound_at = killed_at.elapsed();
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_stdout_line(&mut r2, "# first from 1", Duration::from_secs(2))
    }));
    let took = killed_at.elapsed();
    assert!(
        first.is_ok(),
        "the plain receiver bound the port {bound_at:?} after the kill but got nothing from \
         the accelerated sender within 2 s: the sender still writes into the dead ring\n\
         sender log:\n{}",
        env.log_of(sender.pid)
    );
    eprintln!(
        "kill -9 receiver: plain receiver bound after {bound_at:?}, first datagram after {took:?}"
    );
    // Stop the sender (SIGTERM: its handler ends the loop and it exits normally).
    sender.signal(libc::SIGTERM);
    let st = sender.wait_timeout(Duration::from_secs(10));
    assert!(st.success(), "sender: {st}\n{}", sender.stdout_text());
    stop_receivers(&env, &a, &mut [&mut r2], 1);
    let j = probe_json(&r2.stdout_text());
    assert_clean(&j, "plain receiver after kill -9 of the accelerated one");
    env.reap_now();
    let left = shm_files_of(0, &[r1_pid], &[port]);
    assert!(
        left.is_empty(),
        "files of the killed receiver {r1_pid} remain after the next accelerated process \
         started: {left:?}"
    );
    env.assert_no_leftovers(&[port]);
}

// ---------------------------------------------------------------------------------------------
// SO_REUSEPORT

/// Receive buffer of the group's receivers: room for every datagram the senders can have in
/// flight (senders × window, ≤ 2304 bytes of kernel truesize each, with a wide margin). The
/// probe's window protocol never retransmits, so a datagram the kernel drops for want of buffer
/// (Udp RcvbufErrors) leaves its sender waiting for an ACK forever — with or without the library.
/// That was the "stall" these tests were once ignored for: 8 senders × 32 datagrams against the
/// default 208 KiB overflowed a receiver's queue (reproduced without the library too).
const GROUP_RCVBUF: &str = "8388608";

/// A SO_REUSEPORT group of two receivers on one port — both accelerated, or (`plain_second`)
/// an accelerated one and one without the library — and `senders` accelerated senders sending
/// `count` sequenced datagrams each, concurrently, acknowledged every `window` (0: no flow
/// control): every datagram arrives at exactly one receiver, none lost, none corrupt, and no
/// receiver sees a doorbell as data.
struct Group<'a> {
    tag: &'a str,
    lib_env: &'a [(&'a str, &'a str)],
    plain_second: bool,
    senders: u32,
    count: u32,
    window: u32,
}

fn reuseport(g: Group) {
    let Group {
        tag,
        lib_env,
        plain_second,
        senders,
        count,
        window,
    } = g;
    let env = ShmEnv::new(tag);
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let cs = count.to_string();
    let ws = window.to_string();
    let ids: Vec<u32> = (0..senders).collect();
    let ids_s = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut recv_args = vec![
        "recv",
        "--bind",
        &a,
        "--reuseport",
        "--rcvbuf",
        GROUP_RCVBUF,
        "--stop",
        "--ids",
        &ids_s,
        "--sizes",
        "16-1472",
        "--deadline",
        "40",
    ];
    if window > 0 {
        recv_args.extend(["--ack", &ws]);
    }
    let mut r1 = env.spawn(env.probe(true, lib_env, &recv_args), "receiver-1");
    wait_stdout_line(&mut r1, "# ready", LISTEN_DEADLINE);
    env.wait_shm_endpoint(&mut r1, &a);
    let mut r2 = env.spawn(
        env.probe(!plain_second, lib_env, &recv_args),
        if plain_second {
            "receiver-2-plain"
        } else {
            "receiver-2"
        },
    );
    wait_stdout_line(&mut r2, "# ready", LISTEN_DEADLINE);
    let before = env.ns.udp_counters();
    let mut ss: Vec<Proc> = ids
        .iter()
        .map(|id| {
            let id_s = id.to_string();
            let mut args = vec![
                "send",
                "--dest",
                &a,
                "--count",
                &cs,
                "--id",
                &id_s,
                "--sizes",
                "16-1472",
                "--deadline",
                "10",
            ];
            if window > 0 {
                args.extend(["--window", &ws]);
            }
            env.spawn(env.probe(true, lib_env, &args), &format!("sender-{id}"))
        })
        .collect();
    let mut failed = Vec::new();
    for s in ss.iter_mut() {
        let st = s.wait_timeout(Duration::from_secs(20));
        if !st.success() {
            failed.push(format!("{} ({st}): {}", s.name, s.stdout_text()));
        }
    }
    let after = env.ns.udp_counters();
    let delta = |k: &str| {
        let get = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        get(&after) - get(&before)
    };
    // Many source ports: each receiver gets a STOP (the group hashes by source).
    stop_receivers(&env, &a, &mut [&mut r1, &mut r2], 64);
    let results: Vec<Json> = [&r1, &r2]
        .iter()
        .map(|r| probe_json(&r.stdout_text()))
        .collect();
    let split: Vec<f64> = results.iter().map(|j| num(j, "received")).collect();
    eprintln!(
        "[{tag}] receivers got {split:?}, InDatagrams +{}, RcvbufErrors +{}",
        delta("InDatagrams"),
        delta("RcvbufErrors")
    );
    // Every problem at once: foreign datagrams delivered, and senders left waiting.
    let mut problems = Vec::new();
    for (i, j) in results.iter().enumerate() {
        if num(j, "bad") != 0.0 || num(j, "dups") != 0.0 || j.get("error") != Some(&Json::Null) {
            problems.push(format!(
                "receiver {}: {} unexpected datagrams (a doorbell shown as data?), {} duplicates, \
                 error {:?}, samples {:?}",
                i + 1,
                num(j, "bad"),
                num(j, "dups"),
                j.get("error"),
                j.get("bad_samples")
            ));
        }
    }
    if !failed.is_empty() {
        problems.push(format!(
            "senders that never got an ACK for a window (a receiver slept through it, or the \
             kernel dropped a datagram: RcvbufErrors +{}): {failed:?}",
            delta("RcvbufErrors")
        ));
    }
    assert!(problems.is_empty(), "[{tag}]\n{}", problems.join("\n"));
    assert_union_exact(&results, &ids, count as u64, "SO_REUSEPORT group");
    // The group is served by the kernel (its reuseport hash picks each datagram's receiver):
    // with this many flows both members get a share.
    assert!(
        split.iter().all(|&n| n > 0.0),
        "[{tag}] one member got nothing from {senders} flows: {split:?}"
    );
    env.assert_no_leftovers(&[port]);
}

/// Two accelerated receivers share a port with SO_REUSEPORT; 8 accelerated senders send 1504
/// sequenced datagrams each, concurrently, acknowledged every 32.
#[test]
fn shm_reuseport_each_datagram_to_exactly_one_receiver() {
    reuseport(Group {
        tag: "shm_reuseport",
        lib_env: &[],
        plain_second: false,
        senders: 8,
        count: 1504, // a multiple of the window: a --stop receiver acks full windows only
        window: 32,
    });
}

/// The same with ACCEL_RX_POLL=0: receivers always sleep in the kernel, so any datagram sent
/// through a ring would need a doorbell — which, addressed to the group's shared address, the
/// kernel's reuseport hash could hand to the other member.
#[test]
fn shm_reuseport_each_datagram_to_exactly_one_receiver_rx_poll_0() {
    reuseport(Group {
        tag: "shm_reuseport_rx_poll_0",
        lib_env: &[("ACCEL_RX_POLL", "0")],
        plain_second: false,
        senders: 8,
        count: 1504,
        window: 32,
    });
}

/// Two accelerated reuseport receivers in separate processes, 24 accelerated senders (24
/// flows) each sending 200 datagrams without flow control: each datagram to exactly one
/// receiver, none lost, both members used.
#[test]
fn shm_reuseport_two_accelerated_processes_none_lost_none_twice() {
    reuseport(Group {
        tag: "shm_reuseport_many_flows",
        lib_env: &[],
        plain_second: false,
        senders: 24,
        count: 200,
        window: 0,
    });
}

/// An accelerated receiver and a plain one (no library: the registry cannot list it) in one
/// SO_REUSEPORT group. The registry shows the accelerated socket alone; served through its ring,
/// every accelerated flow would go to it and the doorbells, addressed to the shared port, would
/// be hashed by the kernel to the plain receiver (which would get `ACCELDB1...` as data while
/// the accelerated one slept on its ring). Receivers always sleep (ACCEL_RX_POLL=0) so that
/// every ring datagram would need a doorbell.
#[test]
fn shm_reuseport_plain_and_accelerated_receiver_in_one_group() {
    reuseport(Group {
        tag: "shm_reuseport_plain_member",
        lib_env: &[("ACCEL_RX_POLL", "0")],
        plain_second: true,
        // The kernel's reuseport hash places each flow at random: with 8 flows all of them
        // went to one member about once in 128 runs (seen in CI); with 16, once in 32768.
        senders: 16,
        count: 768,
        window: 32,
    });
}

/// A socket with SO_REUSEPORT that is alone on its address keeps the shm datapath (the sender
/// counts the kernel's sockets on the address and finds only it): 4096 datagrams, acknowledged
/// every 32, move InDatagrams by far less than their number.
#[test]
fn shm_reuseport_lone_socket_keeps_the_ring() {
    let env = ShmEnv::new("shm_reuseport_lone");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let count = 4096u32;
    let cs = count.to_string();
    let mut r = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "recv",
                "--bind",
                &a,
                "--reuseport",
                "--count",
                &cs,
                "--ack",
                "32",
                "--sizes",
                "16-1472",
            ],
        ),
        "receiver",
    );
    wait_stdout_line(&mut r, "# ready", LISTEN_DEADLINE);
    env.wait_shm_endpoint(&mut r, &a);
    let before = env.ns.in_datagrams();
    let s = env.run(
        env.probe(
            true,
            &[],
            &[
                "send", "--dest", &a, "--count", &cs, "--window", "32", "--sizes", "16-1472",
            ],
        ),
        "sender",
    );
    s.assert_success();
    let st = r.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    let j = probe_json(&r.stdout_text());
    assert_clean(&j, "lone SO_REUSEPORT receiver");
    assert!(st.success(), "receiver: {st}: {j:?}");
    assert_union_exact(&[j], &[0], count as u64, "lone SO_REUSEPORT receiver");
    eprintln!("[shm_reuseport_lone] InDatagrams +{delta} for {count} datagrams");
    assert!(
        delta < count as u64 / 10,
        "InDatagrams +{delta} for {count} datagrams: a lone SO_REUSEPORT socket lost its ring"
    );
    env.assert_no_leftovers(&[port]);
}

// ---------------------------------------------------------------------------------------------
// Ring allocation logic

const DUMMY_IP: &str = "10.200.0.1";

/// One process with three sockets (two on 127.0.0.1, one on the dummy interface's address; the
/// last one bound in a second thread when `thread_last`) under
/// ACCEL_RING_ALLOCATION_LOGIC_RX=`logic`; one datagram is sent to each and each socket must
/// receive its own. Returns the ring allocation key of each socket (the last part of its ring
/// file name), in order.
fn ring_allocation(logic: &str, thread_last: bool, cpu: Option<u32>) -> Vec<String> {
    let env = ShmEnv::new(&format!("shm_rings_{logic}"));
    env.ns.add_dummy("d0", "10.200.0.1/24");
    let ports = [free_port(), free_port(), free_port()];
    let addrs = [
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
        format!("{DUMMY_IP}:{}", ports[2]),
    ];
    let sockets = addrs.join(",");
    let cpu_s = cpu.map(|c| c.to_string());
    let mut args = vec!["rings", "--sockets", &sockets];
    if thread_last {
        args.push("--thread-last");
    }
    if let Some(c) = &cpu_s {
        args.push("--cpu");
        args.push(c);
    }
    let lib_env = [("ACCEL_RING_ALLOCATION_LOGIC_RX", logic)];
    let mut p = env.spawn(env.probe(true, &lib_env, &args), "rings");
    wait_stdout_line(&mut p, "# ready", LISTEN_DEADLINE);
    let log = env.log_of(p.pid);
    let mut keys = Vec::new();
    let mut rings = Vec::new();
    for a in &addrs {
        let needle = format!(" udp {a}: shm ring ");
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no shm ring line for {a} in the log:\n{log}"));
        let ring = line
            .split(": shm ring ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unparsable ring line: {line}"))
            .to_string();
        // ring-<pid>-<nonce>-<key>
        let key = ring.splitn(4, '-').nth(3).unwrap_or("").to_string();
        assert!(
            ring.starts_with(&format!("ring-{}-", p.pid)) && !key.is_empty(),
            "ring name {ring} (pid {})",
            p.pid
        );
        rings.push(ring);
        keys.push(key);
    }
    // Traffic from an accelerated sender (so it goes through the rings): one datagram each.
    let dests: Vec<String> = addrs
        .iter()
        .zip(&ports)
        .map(|(a, port)| format!("('{}', {port}, b'to-{port}')", a.split(':').next().unwrap()))
        .collect();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for ip, port, data in [{}]:\n    s.sendto(data, (ip, port))\ns.close()\n",
        dests.join(", ")
    );
    let mut cmd = env.accel(python3(), &lib_env);
    cmd.args(["-c", &script]);
    env.run(cmd, "sender").assert_success();
    let st = p.wait_timeout(Duration::from_secs(20));
    let j = probe_json(&p.stdout_text());
    assert!(
        st.success() && j.get("ok") == Some(&Json::Bool(true)),
        "logic {logic}: a socket did not receive its own datagram ({st}): {j:?}\nrings {rings:?}"
    );
    eprintln!("logic {logic}: rings {rings:?}");
    env.assert_no_leftovers(&ports);
    keys
}

/// 0 (per interface): the two loopback sockets share one ring; the other address has another.
#[test]
fn shm_ring_allocation_per_interface() {
    let k = ring_allocation("0", false, None);
    assert_eq!(k[0], k[1], "loopback sockets should share a ring: {k:?}");
    assert_ne!(k[0], k[2], "{k:?}");
    assert_eq!(k[0], "if-lo", "{k:?}");
}

/// 1 (per IP address): one ring per local address.
#[test]
fn shm_ring_allocation_per_ip() {
    let k = ring_allocation("1", false, None);
    assert_eq!(k[0], k[1], "{k:?}");
    assert_eq!(k[0], "ip-127.0.0.1", "{k:?}");
    assert_eq!(k[2], format!("ip-{DUMMY_IP}"), "{k:?}");
}

/// 10 (per socket): three distinct rings.
#[test]
fn shm_ring_allocation_per_socket() {
    let k = ring_allocation("10", false, None);
    assert!(
        k[0] != k[1] && k[1] != k[2] && k[0] != k[2],
        "three sockets, three rings expected: {k:?}"
    );
    assert!(k.iter().all(|k| k.starts_with("sock-")), "{k:?}");
}

/// 20 (per thread): the socket bound in the second thread has a ring of its own.
#[test]
fn shm_ring_allocation_per_thread() {
    let k = ring_allocation("20", true, None);
    assert_eq!(k[0], k[1], "same thread, same ring: {k:?}");
    assert_ne!(
        k[0], k[2],
        "the second thread's socket needs its own ring: {k:?}"
    );
    assert!(k.iter().all(|k| k.starts_with("tid-")), "{k:?}");
}

/// 30 (per core), with the process pinned to CPU 0: all three share ring `cpu-0`.
#[test]
fn shm_ring_allocation_per_core() {
    let k = ring_allocation("30", false, Some(0));
    assert!(k.iter().all(|k| k == "cpu-0"), "{k:?}");
}

/// 31 (per core, by affinity), pinned to CPU 0: likewise.
#[test]
fn shm_ring_allocation_per_core_affinity() {
    let k = ring_allocation("31", false, Some(0));
    assert!(k.iter().all(|k| k == "cpu-0"), "{k:?}");
}

// ---------------------------------------------------------------------------------------------
// Signals

/// A blocking recvfrom is interrupted by a signal whose handler does not restart (Python's
/// handlers are installed without SA_RESTART; the handler raises): the program must regain
/// control within a bounded time, as it does without the library — also while the library
/// spins (ACCEL_PROFILE=latency spins forever, default spins VMA_RX_POLL times).
fn signal_interrupts_recv(tag: &str, lib_env: &[(&str, &str)]) {
    let env = ShmEnv::new(tag);
    let port = free_port();
    let script = format!(
        "import signal, socket, sys, time\n\
         class Stop(Exception): pass\n\
         def h(*a): raise Stop()\n\
         signal.signal(signal.SIGTERM, h)\n\
         signal.alarm(20)\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1', {port}))\n\
         print('# ready', flush=True)\n\
         try:\n    s.recvfrom(100)\n    print('unexpected data')\n\
         except Stop:\n    print('interrupted', flush=True)\n"
    );
    let mut cmd = env.accel(python3(), lib_env);
    cmd.args(["-c", &script]);
    let mut p = env.spawn(cmd, "receiver");
    wait_stdout_line(&mut p, "# ready", LISTEN_DEADLINE);
    std::thread::sleep(Duration::from_millis(300));
    p.signal(libc::SIGTERM);
    let start = Instant::now();
    while p.try_exited().is_none() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let exited = p.try_exited();
    if exited.is_none() {
        p.kill();
        env.reap_now(); // what the killed receiver left
    }
    assert!(
        exited.is_some_and(|s| s.success()) && p.stdout_text().contains("interrupted"),
        "[{tag}] SIGTERM (handler raising) did not interrupt a blocking recvfrom within 3 s \
         ({exited:?}); stdout:\n{}",
        p.stdout_text()
    );
    if exited.is_some() {
        env.assert_no_leftovers(&[port]);
    }
}

#[test]
fn shm_signal_interrupts_blocking_recv() {
    signal_interrupts_recv("shm_signal_default", &[]);
}

#[test]
fn shm_signal_interrupts_spinning_recv_latency_profile() {
    signal_interrupts_recv("shm_signal_latency", &[("ACCEL_PROFILE", "latency")]);
}
