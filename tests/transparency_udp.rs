//! Transparency over UDP: stock programs exchanging datagrams over loopback behave the same with
//! and without the library, and the library logs that it would accelerate their UDP sockets.

mod common;

use common::*;
use std::time::Duration;

/// Waits until the server's stdout holds `len` bytes (UDP receivers never exit by themselves),
/// then stops the server and returns what it received.
fn collect_udp(server: &mut Proc, len: usize) -> Vec<u8> {
    wait_file_len(&server.out, len as u64, Duration::from_secs(10));
    // A short grace period so any extra (duplicate) datagram would show up too.
    std::thread::sleep(Duration::from_millis(100));
    server.stop();
    server.stdout_bytes()
}

/// nc -u sends a 40000-byte file (several datagrams: nc reads 16 KiB at a time) to nc -u -l.
#[test]
fn nc_udp_transfer() {
    let nc = which("nc");
    let data = random_bytes(40000, 11);
    let t = run_twice("nc_udp", |cx| {
        let input = cx.write_file("in.bin", &data);
        let port = free_port();
        let mut cmd = cx.command(&nc);
        cmd.args(["-d", "-u", "-l", "127.0.0.1", &port.to_string()]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_udp_bound(port, &mut server);
        let mut cmd = cx.command(&nc);
        cmd.args(["-u", "-w", "1", "127.0.0.1", &port.to_string()]);
        cx.run(cmd, "client", Some(&input)).assert_success();
        collect_udp(&mut server, data.len())
    });
    assert_same_bytes("plain nc -u", &t.plain, &data);
    assert_same_bytes("preloaded nc -u", &t.preload, &data);
    t.logs.assert_loaded_into(&nc, 2);
    t.logs.assert_decision(&["udp", "-> accel"]);
}

/// socat UDP-SENDTO → UDP-RECV, 64 KiB in 8 KiB datagrams.
#[test]
fn socat_udp_transfer() {
    let socat = which("socat");
    let data = random_bytes(64 << 10, 12);
    let t = run_twice("socat_udp", |cx| {
        let input = cx.write_file("in.bin", &data);
        let port = free_port();
        let mut cmd = cx.command(&socat);
        cmd.args(["-u", &format!("UDP-RECV:{port},bind=127.0.0.1"), "STDOUT"]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_udp_bound(port, &mut server);
        let mut cmd = cx.command(&socat);
        cmd.args(["-u", "STDIN", &format!("UDP-SENDTO:127.0.0.1:{port}")]);
        cx.run(cmd, "client", Some(&input)).assert_success();
        collect_udp(&mut server, data.len())
    });
    assert_same_bytes("plain socat udp", &t.plain, &data);
    assert_same_bytes("preloaded socat udp", &t.preload, &data);
    t.logs.assert_loaded_into(&socat, 2);
    t.logs
        .assert_decision(&["udp bind", "127.0.0.1:", "-> accel"]);
}


/// iperf 2 UDP at 100 Mbit/s, 2 MiB (-n): the one-shot server (-P 1) reports bytes and datagrams.
#[test]
fn iperf2_udp() {
    let iperf = which("iperf");
    let t = run_twice("iperf2_udp", |cx| {
        let port = free_port();
        let ps = port.to_string();
        let mut cmd = cx.command(&iperf);
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
        let mut server = cx.spawn(cmd, "server", None);
        wait_udp_bound(port, &mut server);
        let mut cmd = cx.command(&iperf);
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
        let client = cx.run(cmd, "client", None);
        client.assert_success();
        let st = server.wait_timeout(CHILD_TIMEOUT);
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
        sent
    });
    assert_eq!(t.plain, t.preload, "bytes sent by the iperf client");
    t.logs.assert_loaded_into(&iperf, 2);
    t.logs.assert_decision(&["udp bind", "-> accel"]);
}

/// iperf3 UDP at a modest 50 Mbit/s for 1 s: the report parses and the receiver got data.
#[test]
fn iperf3_udp() {
    let iperf3 = which("iperf3");
    let t = run_twice("iperf3_udp", |cx| {
        let port = free_port().to_string();
        let mut cmd = cx.command(&iperf3);
        cmd.args(["-s", "-1", "-B", "127.0.0.1", "-p", &port]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port.parse().unwrap(), &mut server);
        let mut cmd = cx.command(&iperf3);
        cmd.args([
            "-c",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "-b",
            "50M",
            "-t",
            "1",
            "--json",
        ]);
        let client = cx.run(cmd, "client", None);
        client.assert_success();
        server.wait_timeout(CHILD_TIMEOUT);
        let j = Json::parse(&client.stdout_text())
            .unwrap_or_else(|e| panic!("iperf3 json ({e}):\n{}", client.stdout_text()));
        let received = j
            .num("end.sum_received.bytes")
            .or_else(|| j.num("end.sum.bytes"))
            .expect("received bytes in iperf3 json");
        let packets = j.num("end.sum.packets").expect("end.sum.packets");
        assert!(
            received > 0.0 && packets > 0.0,
            "received {received} bytes, {packets} packets"
        );
        true
    });
    assert!(t.plain && t.preload);
    t.logs.assert_loaded_into(&iperf3, 2);
    t.logs.assert_decision(&["udp", "-> accel"]);
}


/// Runs a sockperf client mode (`pp` or `tp`) for 1 s against `sockperf sr`; returns the client's
/// output. The server is stopped gracefully.
fn sockperf_scenario(cx: &Ctx, mode: &str) -> String {
    let sockperf = which("sockperf");
    let port = free_port();
    let ps = port.to_string();
    let mut cmd = cx.command(&sockperf);
    cmd.args(["sr", "-i", "127.0.0.1", "-p", &ps]);
    let mut server = cx.spawn(cmd, "server", None);
    wait_udp_bound(port, &mut server);
    let mut cmd = cx.command(&sockperf);
    cmd.args([mode, "-i", "127.0.0.1", "-p", &ps, "-t", "1"]);
    if mode == "pp" {
        // --mps only sizes sockperf's sequence-number table here (pp sends when the reply came):
        // at its default (~600K/s) an accelerated ping-pong outruns it and sockperf aborts with
        // "_seqN > m_maxSequenceNo".
        cmd.args(["--mps", "3000000"]);
    }
    let client = cx.run(cmd, "client", None);
    client.assert_success();
    server.stop();
    if cx.mode == Mode::Preload {
        cx.logs()
            .assert_decision(&["udp bind", &format!("127.0.0.1:{port}"), "-> accel"]);
    }
    client.stdout_text() + &client.stderr
}

/// sockperf UDP ping-pong: both runs report a latency and received messages.
#[test]
fn sockperf_ping_pong() {
    let t = run_twice("sockperf_pp", |cx| {
        let out = sockperf_scenario(cx, "pp");
        let latency = sockperf_value(&out, "Latency is").expect("latency summary");
        let received = out
            .lines()
            .find(|l| l.contains("[Valid Duration]"))
            .and_then(|l| sockperf_value(l, "ReceivedMessages"))
            .unwrap_or_else(|| panic!("no [Valid Duration] ReceivedMessages in\n{out}"));
        assert!(latency > 0.0 && received > 0.0, "{out}");
        true
    });
    assert!(t.plain && t.preload);
    t.logs.assert_loaded_into(&which("sockperf"), 2);
}

/// sockperf UDP throughput: both runs report a positive message rate.
#[test]
fn sockperf_throughput() {
    let t = run_twice("sockperf_tp", |cx| {
        let out = sockperf_scenario(cx, "tp");
        let rate = sockperf_value(&out, "Message Rate is")
            .unwrap_or_else(|| panic!("no message rate in\n{out}"));
        assert!(rate > 0.0, "{out}");
        true
    });
    assert!(t.plain && t.preload);
    t.logs.assert_loaded_into(&which("sockperf"), 2);
}

const ASYNC_ECHO_SERVER: &str = r#"
import asyncio, sys

class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", int(sys.argv[1])))
    print(type(loop._selector).__name__, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

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
        size = rnd.choice([1, 2, 100, 1000, 1472, 1473, 8000, 30000, 65507])
        msg = rnd.randbytes(size)
        transport.sendto(msg)
        try:
            got = await asyncio.wait_for(proto.queue.get(), 10)
        except asyncio.TimeoutError:
            print("timeout waiting for echo", i, size)
            sys.exit(1)
        if got != msg:
            print("mismatch", i, size, len(got))
            sys.exit(1)
        total += len(msg)
    transport.close()
    print("echoed", n, total, type(loop._selector).__name__)

asyncio.run(main())
"#;

/// python3 asyncio (epoll) UDP echo: 200 datagrams of 1..65507 bytes come back intact.
#[test]
fn python_asyncio_udp_echo() {
    let py = python3();
    let t = run_twice("asyncio_udp", |cx| {
        let server_py = write_script(cx.dir(), "echo_server.py", ASYNC_ECHO_SERVER);
        let client_py = write_script(cx.dir(), "echo_client.py", ASYNC_ECHO_CLIENT);
        let port = free_port();
        let mut cmd = cx.command(&py);
        cmd.arg(&server_py).arg(port.to_string());
        let mut server = cx.spawn(cmd, "server", None);
        wait_udp_bound(port, &mut server);
        let mut cmd = cx.command(&py);
        cmd.arg(&client_py).arg(port.to_string()).arg("200");
        let out = cx.run(cmd, "client", None);
        out.assert_success();
        server.stop();
        out.stdout_text().trim().to_string()
    });
    assert!(
        t.plain.starts_with("echoed 200 ") && t.plain.ends_with("EpollSelector"),
        "plain run: {}",
        t.plain
    );
    assert_eq!(t.plain, t.preload);
    t.logs.assert_loaded_into(&py, 2);
    t.logs
        .assert_decision(&["udp bind", "127.0.0.1:", "-> accel"]);
}
