//! `accel capture -p PID -w FILE`: the datagrams an accelerated process moves through shared
//! memory (which no tcpdump on an interface sees) as a pcap file that tshark reads: exactly the
//! datagrams the test sent, in order, byte for byte, with valid IPv4 and UDP checksums, on the
//! receiver (rx) and on the sender (tx).

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

/// Starts `accel capture -p pid -w file -c count` and waits until it has turned capture on.
fn start_capture(env: &OpsEnv, pid: u32, file: &Path, count: usize, name: &str) -> Proc {
    let cmd = env.tool(&[
        "capture",
        "-p",
        &pid.to_string(),
        "-w",
        &file.to_string_lossy(),
        "-c",
        &count.to_string(),
    ]);
    let mut p = Proc::spawn(cmd, env.shm.cx.dir(), name, None);
    let start = Instant::now();
    while !p.stderr_text().contains("capturing the bypass traffic of pid") {
        if let Some(st) = p.try_exited() {
            panic!("{name} exited ({st}) before capturing:\n{}", p.stderr_text());
        }
        assert!(start.elapsed() < LISTEN_DEADLINE, "{name} did not start:\n{}", p.stderr_text());
        thread::sleep(Duration::from_millis(10));
    }
    p
}

/// The packets of a pcap file as tshark decodes them: (src ip:port, dst ip:port, udp length,
/// payload, ip checksum status, udp checksum status).
fn tshark_read(env: &OpsEnv, file: &Path) -> Vec<(String, String, usize, Vec<u8>, String, String)> {
    let mut cmd = std::process::Command::new(which("tshark"));
    cmd.env_remove("LD_PRELOAD")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"])
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"])
        .args(["-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport"])
        .args(["-e", "udp.length", "-e", "udp.payload", "-e", "ip.checksum.status", "-e", "udp.checksum.status"]);
    let out = run(cmd, env.shm.cx.dir(), "tshark", None);
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 8, "tshark line {l:?}");
            let hex = f[5];
            let payload = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            (
                format!("{}:{}", f[0], f[1]),
                format!("{}:{}", f[2], f[3]),
                f[4].parse().expect("udp.length"),
                payload,
                f[6].to_string(),
                f[7].to_string(),
            )
        })
        .collect()
}

/// The pcap global header, read by hand: magic, version 2.4, LINKTYPE_IPV4 (228).
fn check_pcap_header(file: &Path) {
    let b = std::fs::read(file).expect("read pcap");
    assert!(b.len() >= 24, "pcap shorter than its header");
    assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 0xa1b2_c3d4, "magic");
    assert_eq!(u16::from_le_bytes(b[4..6].try_into().unwrap()), 2);
    assert_eq!(u16::from_le_bytes(b[6..8].try_into().unwrap()), 4);
    assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 228, "LINKTYPE_IPV4");
}

/// An accelerated nc sends 40 datagrams (1 to 1400 bytes) to an accelerated `nc -u -l`; one
/// capture runs on each. Both pcaps hold exactly those 40 datagrams in order, with the right
/// addresses and valid checksums; the captures report nothing lost.
#[test]
fn capture_nc_bypass_traffic_as_pcap() {
    let env = OpsEnv::new("ops_capture_nc");
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
    // The client's block exists once nc made its socket (connected at start).
    let start = Instant::now();
    while !env.stats_file(client.pid).exists() {
        assert!(start.elapsed() < LISTEN_DEADLINE, "the client published no stats block");
        assert!(client.try_exited().is_none(), "nc client exited:\n{}", client.stderr_text());
        thread::sleep(Duration::from_millis(10));
    }

    let n = 40;
    let rx_file = env.shm.cx.path("server.pcap");
    let tx_file = env.shm.cx.path("client.pcap");
    let mut rx_cap = start_capture(&env, server.pid, &rx_file, n, "capture-server");
    let mut tx_cap = start_capture(&env, client.pid, &tx_file, n, "capture-client");

    let messages: Vec<Vec<u8>> = (0..n).map(|i| random_bytes(1 + (i * 331) % 1400, 100 + i as u64)).collect();
    let mut got = 0;
    for m in &messages {
        // One at a time (nc would otherwise put several in one datagram).
        feed.write_all(m).expect("write to nc's stdin");
        got += m.len();
        assert!(wait_file_len(&server.out, got as u64, Duration::from_secs(15)));
    }
    for cap in [&mut rx_cap, &mut tx_cap] {
        let st = cap.wait_timeout(CHILD_TIMEOUT);
        let err = cap.stderr_text();
        assert!(st.success(), "{}: {st}\n{err}", cap.name);
        assert!(err.contains(&format!("{n} datagrams captured, 0 lost")), "{}: {err}", cap.name);
    }

    // The client's address as the server's stats show it.
    let doc = env.stat_json(&["-p", &server.pid.to_string()]);
    let peer = doc.s("processes.0.sockets.0.remote").to_string();
    assert!(peer.starts_with("127.0.0.1:"), "{}", doc.text);

    for (file, what) in [(&rx_file, "receiver"), (&tx_file, "sender")] {
        check_pcap_header(file);
        let pkts = tshark_read(&env, file);
        assert_eq!(pkts.len(), n, "{what}: tshark read {} packets, the test sent {n}", pkts.len());
        for (i, (src, dst, udp_len, payload, ip_ok, udp_ok)) in pkts.iter().enumerate() {
            assert_eq!(src, &peer, "{what} packet {i}: source");
            assert_eq!(dst, &endpoint, "{what} packet {i}: destination");
            assert_eq!(*udp_len, messages[i].len() + 8, "{what} packet {i}: UDP length");
            assert_same_bytes(&format!("{what} packet {i}"), payload, &messages[i]);
            assert_eq!((ip_ok.as_str(), udp_ok.as_str()), ("1", "1"), "{what} packet {i}: checksums (1 = good)");
        }
    }

    drop(feed);
    let st = client.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "nc client: {st}");
    server.stop();
}

/// Capturing a pid that publishes no stats block fails with a message naming the directory.
#[test]
fn capture_of_a_process_without_a_block_fails() {
    let env = OpsEnv::new("ops_capture_none");
    let me = std::process::id().to_string();
    let out = env.run_tool(&["capture", "-p", &me, "-w", "/dev/null", "-c", "1"], "capture-none");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("publishes no stats block"), "{}", out.stderr);
}

/// `accel capture` of an accelerated `sockperf sr` while an accelerated ping-pong client runs:
/// the first 20 datagrams are the client's requests and the server's replies, alternating,
/// 14-byte sockperf messages between the two ports, read back by tshark with good checksums.
#[test]
fn capture_sockperf_ping_pong() {
    let env = OpsEnv::new("ops_capture_sockperf");
    let sockperf = which("sockperf");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut cmd = env.accel(&sockperf, &[]);
    cmd.args(["sr", "-i", "127.0.0.1", "-p", &port.to_string()]);
    let mut server = env.shm.spawn(cmd, "server");
    env.shm.wait_shm_endpoint(&mut server, &endpoint);
    let file = env.shm.cx.path("sockperf.pcap");
    let mut cap = start_capture(&env, server.pid, &file, 20, "capture");
    let mut cmd = env.accel(&sockperf, &[]);
    cmd.args(["pp", "-i", "127.0.0.1", "-p", &port.to_string(), "-t", "1", "--mps", "1000"]);
    env.shm.run(cmd, "client").assert_success();
    let st = cap.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "capture: {st}\n{}", cap.stderr_text());
    assert!(cap.stderr_text().contains("20 datagrams captured, 0 lost"), "{}", cap.stderr_text());

    let pkts = tshark_read(&env, &file);
    assert_eq!(pkts.len(), 20);
    let client = pkts[0].0.clone();
    assert_ne!(client, endpoint);
    for (i, (src, dst, udp_len, payload, ip_ok, udp_ok)) in pkts.iter().enumerate() {
        let (want_src, want_dst) = if i % 2 == 0 { (&client, &endpoint) } else { (&endpoint, &client) };
        assert_eq!((src, dst), (want_src, want_dst), "packet {i}: request, reply, request, ...");
        assert_eq!((*udp_len, payload.len()), (22, 14), "packet {i}");
        assert_eq!((ip_ok.as_str(), udp_ok.as_str()), ("1", "1"), "packet {i}");
    }
    server.signal(libc::SIGINT);
    assert!(server.wait_timeout(std::time::Duration::from_secs(10)).success());
}
