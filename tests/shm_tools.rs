//! Stock programs that wait in poll/select/epoll (nc, socat, iperf, iperf3, python asyncio,
//! python sockets with settimeout) exchanging UDP through the shm datapath: both ends run under
//! the library with ACCEL_SHM=1 in a network namespace of their own. The transfers must be as
//! in tests/transparency_udp.rs, and the namespace's `Udp: InDatagrams` must move far less than
//! the number of datagrams (only doorbells reach the kernel).
//!
//! Programs that never exit by themselves (nc -l, socat UDP-RECV) are stopped by a signal, so
//! the library's exit clean-up does not run; the test then starts one more accelerated process,
//! whose start-up reaps what they left, and checks nothing of theirs remains.

mod common;

use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

/// Waits until `server`'s stdout holds `len` bytes, then a grace period (a duplicate would
/// show), reads the doorbells it (accelerated) received from its stats, stops it (SIGTERM) and
/// returns what it received and that count.
fn collect_with_doorbells(env: &ShmEnv, server: &mut Proc, len: usize) -> (Vec<u8>, u64) {
    wait_file_len(&server.out, len as u64, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(200));
    let bells = env.doorbells_received(server.pid);
    server.stop();
    (server.stdout_bytes(), bells)
}

/// The bypass was used: the kernel counted no more datagrams than the receiver's doorbells (a
/// sleeping receiver is woken through its kernel socket, one doorbell per sleep; a receiver that
/// sleeps between every datagram, as on a loaded machine, gets one per datagram), plus at most
/// one doorbell still queued. Through the kernel path every datagram would count, with no
/// doorbells.
#[track_caller]
fn assert_only_doorbells_in_kernel(delta: u64, doorbells: u64, datagrams: u64) {
    assert!(
        delta <= doorbells + 1 && doorbells <= datagrams,
        "Udp InDatagrams moved by {delta} for {datagrams} datagrams with {doorbells} doorbells: they went through the kernel"
    );
}

/// nc -u: 400 messages of 1000 bytes (one datagram each: nc's stdin is a seqpacket socket)
/// from an accelerated `nc -u` to an accelerated `nc -u -l`: all bytes arrive in order, and the
/// kernel received few datagrams.
#[test]
fn shm_nc_udp_transfer() {
    let env = ShmEnv::new("shm_nc");
    let nc = which("nc");
    let chunks = 400usize;
    let data = random_bytes(chunks * 1000, 21);
    let port = free_port();
    let mut cmd = env.accel(&nc, &[]);
    cmd.args(["-d", "-u", "-l", "127.0.0.1", &port.to_string()]);
    let mut server = env.spawn(cmd, "server");
    env.wait_shm_endpoint(&mut server, &format!("127.0.0.1:{port}"));
    let before = env.ns.in_datagrams();
    let (ours, theirs) = seqpacket_pair();
    let mut cmd = env.accel(&nc, &[]);
    cmd.args(["-u", "-w", "1", "127.0.0.1", &port.to_string()]);
    let mut client = env.spawn_stdio(cmd, "client", Stdio::from(theirs));
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(ours);
            for c in data.chunks(1000) {
                if f.write_all(c).is_err() {
                    break;
                }
            }
        })
    };
    writer.join().unwrap();
    let st = client.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "nc client: {st}\n{}", client.stderr_text());
    let (got, bells) = collect_with_doorbells(&env, &mut server, data.len());
    let delta = env.ns.in_datagrams() - before;
    assert_same_bytes("nc -u through shm", &got, &data);
    eprintln!("nc: {chunks} datagrams, InDatagrams +{delta}, doorbells {bells}");
    assert_only_doorbells_in_kernel(delta, bells, chunks as u64);
    env.reap_now();
    env.assert_no_leftovers(&[port]);
}

/// socat UDP-SENDTO → UDP-RECV, 400 KB in 1000-byte datagrams (-b 1000).
#[test]
fn shm_socat_udp_transfer() {
    let env = ShmEnv::new("shm_socat");
    let socat = which("socat");
    let chunks = 400usize;
    let data = random_bytes(chunks * 1000, 22);
    let input = env.cx.write_file("in.bin", &data);
    let port = free_port();
    let mut cmd = env.accel(&socat, &[]);
    cmd.args(["-u", &format!("UDP-RECV:{port},bind=127.0.0.1"), "STDOUT"]);
    let mut server = env.spawn(cmd, "server");
    env.wait_shm_endpoint(&mut server, &format!("127.0.0.1:{port}"));
    let before = env.ns.in_datagrams();
    let mut cmd = env.accel(&socat, &[]);
    cmd.args([
        "-u",
        "-b",
        "1000",
        "STDIN",
        &format!("UDP-SENDTO:127.0.0.1:{port}"),
    ]);
    let client = Proc::spawn(cmd, env.cx.dir(), "client", Some(&input));
    env.add_pid(client.pid);
    client.finish().assert_success();
    let (got, bells) = collect_with_doorbells(&env, &mut server, data.len());
    let delta = env.ns.in_datagrams() - before;
    assert_same_bytes("socat udp through shm", &got, &data);
    eprintln!("socat: {chunks} datagrams, InDatagrams +{delta}, doorbells {bells}");
    assert_only_doorbells_in_kernel(delta, bells, chunks as u64);
    env.reap_now();
    env.assert_no_leftovers(&[port]);
}


/// iperf 2 UDP at 100 Mbit/s, 2 MiB (-n), 1470-byte datagrams: the one-shot server (-P 1)
/// reports bytes and datagrams as in the kernel run (nothing lost, a sane report).
#[test]
fn shm_iperf2_udp() {
    let env = ShmEnv::new("shm_iperf2");
    let iperf = which("iperf");
    let port = free_port();
    let ps = port.to_string();
    let mut cmd = env.accel(&iperf, &[]);
    cmd.args([
        "-s",
        "-u",
        "-B",
        "127.0.0.1",
        "-p",
        &ps,
        "-y",
        "C",
        "-P",
        "1",
    ]);
    let mut server = env.spawn(cmd, "server");
    env.wait_shm_endpoint(&mut server, &format!("127.0.0.1:{port}"));
    let before = env.ns.in_datagrams();
    let mut cmd = env.accel(&iperf, &[]);
    cmd.args([
        "-c",
        "127.0.0.1",
        "-u",
        "-b",
        "100M",
        "-n",
        "2M",
        "-p",
        &ps,
        "-y",
        "C",
    ]);
    let client = env.run(cmd, "client");
    client.assert_success();
    let st = server.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    assert!(st.success(), "iperf server: {st}\n{}", server.stderr_text());
    let c = iperf_csv(&client.stdout_text());
    let s = iperf_csv(&server.stdout_text());
    assert!(
        !c.is_empty() && !s.is_empty() && s.last().unwrap().len() >= 12,
        "no CSV report\nclient:\n{}\nserver:\n{}",
        client.stdout_text(),
        server.stdout_text()
    );
    let sent: u64 = c[0][7].parse().expect("client bytes");
    let srv = s.last().unwrap();
    let received: u64 = srv[7].parse().expect("server bytes");
    let lost: i64 = srv[10].parse().expect("server lost datagrams");
    let total: i64 = srv[11].parse().expect("server total datagrams");
    assert!(sent >= 2 << 20, "client sent {sent} bytes");
    assert!(
        total > 0 && received > 0 && received <= sent && received >= sent / 2,
        "server received {received} of {sent} bytes, {total} datagrams ({lost} lost)"
    );
    eprintln!("iperf2: {total} datagrams ({lost} lost), {received} bytes, InDatagrams +{delta}");
    assert!(
        (0..=total / 100).contains(&lost),
        "iperf server: {lost} of {total} datagrams lost\n{}",
        server.stdout_text()
    );
    // The iperf 2 server asks for SO_TIMESTAMP, which the shm receive path does not provide:
    // the library hands that socket's receive side back to the kernel (and logs it). From then
    // on every datagram is the kernel's (those already in the ring at the switch are kept and
    // delivered from the socket's stash: at most a ring's worth, in practice a handful);
    // otherwise only doorbells are.
    if env
        .log_of(server.pid)
        .contains("needs the kernel's receive path; shm receive off")
    {
        assert!(
            delta as i64 >= total - 64,
            "shm receive is off on the server, yet InDatagrams moved by only {delta} for {total}"
        );
    } else {
        assert!(
            (delta as i64) < total / 10,
            "Udp InDatagrams moved by {delta} for {total} datagrams: they went through the kernel"
        );
    }
    env.assert_no_leftovers(&[port]);
}

/// iperf3 UDP at 50 Mbit/s for 1 s in 1400-byte datagrams (-l: on loopback iperf3 would pick
/// 32 KiB ones, which no ring slot holds). Its TCP control connection is separate: only the
/// Udp counter matters here.
#[test]
fn shm_iperf3_udp() {
    let env = ShmEnv::new("shm_iperf3");
    let iperf3 = which("iperf3");
    let port = free_port();
    let ps = port.to_string();
    let mut cmd = env.accel(&iperf3, &[]);
    cmd.args(["-s", "-1", "-B", "127.0.0.1", "-p", &ps]);
    let mut server = env.spawn(cmd, "server");
    env.wait_tcp_listen(&mut server, port);
    let before = env.ns.in_datagrams();
    let mut cmd = env.accel(&iperf3, &[]);
    cmd.args([
        "-c",
        "127.0.0.1",
        "-p",
        &ps,
        "-u",
        "-b",
        "50M",
        "-t",
        "1",
        "-l",
        "1400",
        "--json",
    ]);
    let client = env.run(cmd, "client");
    client.assert_success();
    let st = server.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    let j = Json::parse(&client.stdout_text())
        .unwrap_or_else(|e| panic!("iperf3 json ({e}):\n{}", client.stdout_text()));
    let received = j
        .num("end.sum_received.bytes")
        .or_else(|| j.num("end.sum.bytes"))
        .expect("received bytes in iperf3 json");
    let packets = j.num("end.sum.packets").expect("end.sum.packets");
    let lost = j.num("end.sum.lost_packets").unwrap_or(-1.0);
    assert!(
        st.success(),
        "iperf3 server: {st}\n{}",
        server.stderr_text()
    );
    assert!(
        received > 0.0 && packets > 0.0,
        "received {received} bytes, {packets} packets"
    );
    eprintln!("iperf3: {packets} packets ({lost} lost), {received} bytes, InDatagrams +{delta}");
    assert!(
        (delta as f64) < packets / 10.0,
        "Udp InDatagrams moved by {delta} for {packets} datagrams: they went through the kernel"
    );
    env.assert_no_leftovers(&[port]);
}

const ASYNC_ECHO_SERVER: &str = r##"
import asyncio, sys

class Echo(asyncio.DatagramProtocol):
    def __init__(self, done):
        self.done = done
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        if data == b"STOP":
            self.done.set()
            return
        self.transport.sendto(data, addr)

async def main():
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Echo(done), local_addr=("127.0.0.1", int(sys.argv[1])))
    print("# ready", type(loop._selector).__name__, flush=True)
    await asyncio.wait_for(done.wait(), 60)
    transport.close()

asyncio.run(main())
"##;

const ASYNC_ECHO_CLIENT: &str = r#"
import asyncio, random, sys

class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()
    def datagram_received(self, data, addr):
        self.queue.put_nowait(data)
    def error_received(self, exc):
        print("error_received", exc, flush=True)

async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        Client, remote_addr=("127.0.0.1", port))
    rnd = random.Random(42)
    total = 0
    for i in range(n):
        msg = rnd.randbytes(rnd.randint(1, 1472))
        transport.sendto(msg)
        try:
            got = await asyncio.wait_for(proto.queue.get(), 10)
        except asyncio.TimeoutError:
            print("timeout waiting for echo", i, len(msg))
            sys.exit(1)
        if got != msg:
            print("mismatch", i, len(msg), len(got))
            sys.exit(1)
        total += len(msg)
    transport.sendto(b"STOP")
    transport.close()
    print("echoed", n, total, type(loop._selector).__name__)

asyncio.run(main())
"#;

/// python3 asyncio (epoll) UDP echo: 2000 datagrams of 1..1472 bytes come back intact; the
/// kernel received few datagrams (4000 went through the rings).
#[test]
fn shm_python_asyncio_udp_echo() {
    let env = ShmEnv::new("shm_asyncio");
    let py = python3();
    let server_py = write_script(env.cx.dir(), "echo_server.py", ASYNC_ECHO_SERVER);
    let client_py = write_script(env.cx.dir(), "echo_client.py", ASYNC_ECHO_CLIENT);
    let port = free_port();
    let n = 2000u64;
    let mut cmd = env.accel(&py, &[]);
    cmd.arg(&server_py).arg(port.to_string());
    let mut server = env.spawn(cmd, "server");
    wait_stdout_line(&mut server, "# ready", LISTEN_DEADLINE);
    let before = env.ns.in_datagrams();
    let mut cmd = env.accel(&py, &[]);
    cmd.arg(&client_py).arg(port.to_string()).arg(n.to_string());
    let out = env.run(cmd, "client");
    out.assert_success();
    let st = server.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    let text = out.stdout_text();
    assert!(
        text.trim().starts_with(&format!("echoed {n} ")) && text.trim().ends_with("EpollSelector"),
        "client: {text}"
    );
    assert!(st.success(), "server: {st}\n{}", server.stderr_text());
    eprintln!("asyncio echo: {n} round trips, InDatagrams +{delta}");
    assert!(
        delta < n / 2,
        "Udp InDatagrams moved by {delta} for {} datagrams: they went through the kernel",
        2 * n
    );
    env.assert_no_leftovers(&[port]);
}

/// Python sockets with settimeout (CPython then waits in poll() before each receive): 20000
/// sequenced datagrams of 0..1472 bytes with flow control, all intact and in order.
#[test]
fn shm_python_settimeout_20000_datagrams() {
    let env = ShmEnv::new("shm_settimeout");
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let n = 20000u64;
    let ns = n.to_string();
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
                &ns,
                "--ack",
                "32",
                "--strict",
                "--timeout",
                "5",
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
                &ns,
                "--window",
                "32",
                "--timeout",
                "5",
            ],
        ),
        "sender",
    );
    let st = receiver.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    let j = probe_json(&receiver.stdout_text());
    sender.assert_success();
    assert!(st.success(), "receiver: {st}: {j:?}");
    assert_eq!(j.num("received"), Some(n as f64), "{j:?}");
    assert_eq!(j.num("bad"), Some(0.0), "{j:?}");
    assert_eq!(j.num("dups"), Some(0.0), "{j:?}");
    eprintln!("settimeout: {n} datagrams, InDatagrams +{delta}");
    assert!(
        delta < n / 100,
        "Udp InDatagrams moved by {delta} for {n} datagrams: they went through the kernel"
    );
    env.assert_no_leftovers(&[port]);
}
