//! The AF_XDP building blocks (`accel_engine::xdp`) on a real veth pair, as root.
//!
//! Each test makes two network namespaces of its own joined by a veth pair (one queue each
//! way): `xa` (10.199.0.1) in namespace A, where an [`XdpVi`] is opened by this test process
//! from a thread that entered A, and `xb` (10.199.0.2) in namespace B, where plain kernel
//! sockets play the peer. Nothing is sent anywhere else. Guards delete the namespaces (which
//! removes the veth pair and any XDP program on it) and the program's pins under
//! /sys/fs/bpf/accel, also when a test fails.
//!
//! What is shown:
//! - datagrams for the filtered port arrive through `rx_burst` intact, and A's kernel never
//!   sees them (`Udp: InDatagrams` of A does not move, a kernel socket on that port gets
//!   nothing); other ports, ping and TCP still reach A's kernel;
//! - `send` delivers datagrams the kernel of B accepts (its InDatagrams moves, InCsumErrors
//!   does not), after falling back once while the neighbour was unresolved;
//! - several queues (a two-queue veth): one XSK per queue, every datagram through one of them;
//!   two processes on disjoint queues;
//! - a second process on the same queue is refused; after kill -9 of the only user, the next
//!   open reclaims the program, and the last close detaches it and removes the pins.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use accel_engine::config::Config;
use accel_engine::xdp::{AttachMode, Filter, NotSent, XdpVi};
use accel_engine::xdp::route::NoNextHop;
use common::*;

const A_IP: &str = "10.199.0.1";
const B_IP: &str = "10.199.0.2";
/// Set (to "<port>") in the environment of this test binary re-executed as a helper process.
const HELPER_ENV: &str = "ACCEL_XDP_TEST_HELPER";

/// One test with a veth pair at a time: an open reclaims the program of any interface whose
/// users are all dead, so a test that kills its helper and checks that the program stays
/// until the next open must not have a parallel test open something meanwhile.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Two namespaces joined by a veth pair; removes the pins of A's programs on drop.
struct VethPair {
    a: NetNs,
    b: NetNs,
    // Last: released after the namespaces are gone.
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl VethPair {
    fn new() -> VethPair {
        VethPair::with_queues(1)
    }

    /// With `n` queues each way on both ends (a veth delivers what its peer sends on TX queue
    /// i to RX queue i).
    fn with_queues(n: u32) -> VethPair {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let pair = VethPair { a: NetNs::new(), b: NetNs::new(), _serial: serial };
        let n = n.to_string();
        pair.a.exec(&[
            "ip", "link", "add", "xa", "numrxqueues", &n, "numtxqueues", &n, "type", "veth", "peer", "xb",
            "numrxqueues", &n, "numtxqueues", &n,
        ]);
        pair.a.exec(&["ip", "link", "set", "xb", "netns", &pair.b.name]);
        pair.a.exec(&["ip", "addr", "add", &format!("{A_IP}/24"), "dev", "xa"]);
        pair.b.exec(&["ip", "addr", "add", &format!("{B_IP}/24"), "dev", "xb"]);
        pair.a.exec(&["ip", "link", "set", "xa", "up"]);
        pair.b.exec(&["ip", "link", "set", "xb", "up"]);
        pair
    }

    /// The inode of namespace A: the first part of its pin directories' names.
    fn a_inode(&self) -> u64 {
        std::fs::metadata(format!("/var/run/netns/{}", self.a.name)).expect("netns file").ino()
    }

    /// A's pin directories under /sys/fs/bpf/accel.
    fn pin_dirs(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.a_inode());
        std::fs::read_dir("/sys/fs/bpf/accel")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `ip -d link show xa` in A.
    fn xa_link(&self) -> String {
        self.a.exec(&["ip", "-d", "link", "show", "xa"])
    }

    fn open(&self, mode: AttachMode) -> std::io::Result<XdpVi> {
        self.a.run_in(|| XdpVi::open_with_mode("xa", 0, &Config::default(), mode))
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Runs before the namespaces' own guards (fields drop after this body).
        for dir in self.pin_dirs() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn udp_counter(ns: &NetNs, name: &str) -> u64 {
    ns.udp_counters().into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or_else(|| panic!("no Udp {name}"))
}

/// Calls `rx_burst` until `want` datagrams arrived or 5 s passed.
fn receive(vi: &mut XdpVi, want: usize) -> Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < want && start.elapsed() < Duration::from_secs(5) {
        if vi.rx_burst(|d| got.push((d.src, d.dst, d.payload.to_vec()))) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

/// Sends `payload` from B to A's `port` from one socket; returns that socket's address.
fn send_from_b(pair: &VethPair, port: u16, payloads: &[Vec<u8>]) -> SocketAddrV4 {
    pair.b.run_in(|| {
        let s = UdpSocket::bind(format!("{B_IP}:0")).unwrap();
        for p in payloads {
            s.send_to(p, format!("{A_IP}:{port}")).unwrap();
        }
        match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        }
    })
}

fn datapath(mode: AttachMode) {
    let pair = VethPair::new();
    let mut vi = pair.open(mode).unwrap_or_else(|e| panic!("XdpVi::open({mode:?}): {e}"));
    let link = pair.xa_link();
    assert!(link.contains("prog/xdp"), "no XDP program on xa:\n{link}");
    if mode == AttachMode::Generic {
        assert!(link.contains("xdpgeneric"), "not in generic mode:\n{link}");
    }
    println!("mode {:?}, zero copy {}", vi.attach_mode(), vi.zero_copy());
    assert_eq!(pair.pin_dirs().len(), 1);

    // --- receive: port P goes to the XdpVi, not to A's kernel (which has a socket there too).
    let port = 7001;
    let kernel_on_p = pair.a.run_in(|| UdpSocket::bind(format!("{A_IP}:{port}")).unwrap());
    kernel_on_p.set_nonblocking(true).unwrap();
    vi.add_filter(Filter::udp(format!("{A_IP}:{port}").parse().unwrap())).unwrap();
    let before = pair.a.in_datagrams();
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| random_bytes(1 + i * 29, i as u64)).collect();
    let from = send_from_b(&pair, port, &payloads);
    let got = receive(&mut vi, payloads.len());
    assert_eq!(got.len(), payloads.len(), "datagrams through rx_burst; counters {:?}", vi.counters());
    for ((src, dst, data), sent) in got.iter().zip(&payloads) {
        assert_eq!(*src, from);
        assert_eq!(dst.to_string(), format!("{A_IP}:{port}"));
        assert_same_bytes("payload", data, sent);
    }
    assert_eq!(pair.a.in_datagrams(), before, "A's kernel saw the filtered datagrams");
    assert!(kernel_on_p.recv(&mut [0u8; 2048]).is_err(), "the kernel socket on P received");
    let stats = vi.program_stats();
    assert!(stats.redirected >= payloads.len() as u64, "{stats:?}");
    println!("rx counters {:?}", vi.counters());

    // --- a connected 5-tuple filter: only that peer's datagrams.
    let port_c = 7003;
    let peer_c: SocketAddrV4 = format!("{B_IP}:7004").parse().unwrap();
    vi.add_filter(Filter::udp_connected(format!("{A_IP}:{port_c}").parse().unwrap(), peer_c)).unwrap();
    let kernel_on_c = pair.a.run_in(|| UdpSocket::bind(format!("{A_IP}:{port_c}")).unwrap());
    kernel_on_c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    pair.b.run_in(|| {
        let s = UdpSocket::bind(peer_c).unwrap();
        s.send_to(b"connected", format!("{A_IP}:{port_c}")).unwrap();
        let other = UdpSocket::bind(format!("{B_IP}:0")).unwrap();
        other.send_to(b"someone else", format!("{A_IP}:{port_c}")).unwrap();
    });
    let got = receive(&mut vi, 1);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, &got[0].2[..]), (peer_c, &b"connected"[..]));
    let mut buf = [0u8; 64];
    let n = kernel_on_c.recv(&mut buf).expect("the other peer's datagram reaches the kernel");
    assert_eq!(&buf[..n], b"someone else");

    // --- everything else still reaches A's kernel: another UDP port, ping, TCP.
    let other_port = 7002;
    let kernel_q = pair.a.run_in(|| UdpSocket::bind(format!("{A_IP}:{other_port}")).unwrap());
    kernel_q.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_from_b(&pair, other_port, &[b"to the kernel".to_vec()]);
    let n = kernel_q.recv(&mut buf).expect("datagram on an unfiltered port");
    assert_eq!(&buf[..n], b"to the kernel");
    pair.b.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", A_IP]);
    let listener = pair.a.run_in(|| TcpListener::bind(format!("{A_IP}:7005")).unwrap());
    let mut client = pair.b.run_in(|| TcpStream::connect(format!("{A_IP}:7005")).unwrap());
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"tcp still works").unwrap();
    let mut tcp_buf = [0u8; 15];
    server.read_exact(&mut tcp_buf).unwrap();
    assert_eq!(&tcp_buf, b"tcp still works");

    // --- removing the filter hands port P back to the kernel.
    vi.remove_filter(Filter::udp(format!("{A_IP}:{port}").parse().unwrap())).unwrap();
    kernel_on_p.set_nonblocking(false).unwrap();
    kernel_on_p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_from_b(&pair, port, &[b"back to the kernel".to_vec()]);
    let n = kernel_on_p.recv(&mut buf).expect("datagram after remove_filter");
    assert_eq!(&buf[..n], b"back to the kernel");

    // --- send: B's kernel accepts what we build.
    let receiver = pair.b.run_in(|| UdpSocket::bind(format!("{B_IP}:8001")).unwrap());
    receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dst: SocketAddrV4 = format!("{B_IP}:8001").parse().unwrap();
    let src: SocketAddrV4 = format!("{A_IP}:9001").parse().unwrap();
    // A fresh namespace has no ARP entry for B: the first send is the kernel's, as a caller
    // would do it, and that resolves the neighbour.
    let kernel_sender = pair.a.run_in(|| UdpSocket::bind(src).unwrap());
    // B's datagrams above taught A its MAC (A answered B's ARP and kept B's entry): forget it.
    pair.a.exec(&["ip", "neigh", "flush", "dev", "xa"]);
    let first = vi.send(src, dst, b"first");
    assert_eq!(first, Err(NotSent::NextHop(NoNextHop::Unresolved)));
    kernel_sender.send_to(b"first", dst).unwrap();
    let n = receiver.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"first");
    drop(kernel_sender);

    let b_in = udp_counter(&pair.b, "InDatagrams");
    let b_csum = udp_counter(&pair.b, "InCsumErrors");
    let b_ip_errors = pair.b.exec(&["cat", "/proc/net/snmp"]);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sent = vec![];
    for i in 0..40u64 {
        let payload = random_bytes(1 + (i as usize * 37) % 1472, 1000 + i);
        loop {
            match vi.send(src, dst, &payload) {
                Ok(s) => {
                    assert_eq!(s.frame_len, 42 + payload.len());
                    break;
                }
                // The MISS_TTL of the cached "unresolved" has to pass first.
                Err(NotSent::NextHop(NoNextHop::Unresolved)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("send {i}: {e:?}"),
            }
        }
        sent.push(payload);
    }
    for (i, expected) in sent.iter().enumerate() {
        let mut big = [0u8; 2048];
        let (n, from) = receiver.recv_from(&mut big).unwrap_or_else(|e| panic!("datagram {i} sent through XDP: {e}"));
        assert_eq!(from.to_string(), src.to_string());
        assert_same_bytes("sent payload", &big[..n], expected);
    }
    assert_eq!(udp_counter(&pair.b, "InDatagrams"), b_in + sent.len() as u64);
    assert_eq!(udp_counter(&pair.b, "InCsumErrors"), b_csum, "before:\n{b_ip_errors}");

    // An unbound sender (0.0.0.0) gets the route's preferred source.
    vi.send("0.0.0.0:9002".parse().unwrap(), dst, b"from the preferred source").unwrap();
    let (n, from) = receiver.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.to_string()), (&b"from the preferred source"[..], format!("{A_IP}:9002")));

    // Too big for the MTU, and destinations that are not ours to send to.
    assert_eq!(vi.send(src, dst, &[0u8; 1473]), Err(NotSent::TooBig));
    assert_eq!(
        vi.send(src, format!("{A_IP}:1").parse().unwrap(), b"x"),
        Err(NotSent::NextHop(NoNextHop::LocalOrBroadcast))
    );
    assert_eq!(vi.send(src, "10.198.0.1:1".parse().unwrap(), b"x"), Err(NotSent::NextHop(NoNextHop::NoRoute)));
    println!("counters {:?}", vi.counters());

    // --- the last user leaving detaches the program and removes its pins.
    drop(vi);
    assert!(!pair.xa_link().contains("prog/xdp"), "still attached:\n{}", pair.xa_link());
    assert!(pair.pin_dirs().is_empty(), "pins left: {:?}", pair.pin_dirs());
}

#[test]
fn xdp_datapath_native_mode() {
    datapath(AttachMode::Native);
}

#[test]
fn xdp_datapath_generic_mode() {
    datapath(AttachMode::Generic);
}

/// Started as a separate process (this binary, re-executed with [`HELPER_ENV`] set): opens the
/// XdpVi inside the namespace it was started in, steers the port, says so, and waits to be
/// killed. Without the variable (a normal test run) it does nothing.
#[test]
fn xdp_helper_process() {
    let Ok(port) = std::env::var(HELPER_ENV) else { return };
    let mut vi = XdpVi::open("xa", 0, &Config::default()).expect("helper: XdpVi::open");
    vi.add_filter(Filter::udp(format!("{A_IP}:{port}").parse().unwrap())).expect("helper: add_filter");
    println!("READY pid {}", std::process::id());
    std::io::stdout().flush().unwrap();
    loop {
        vi.rx_burst(|_| {});
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn xdp_second_process_refused_and_kill_9_reclaimed() {
    let pair = VethPair::new();
    let dir = TempDir::new("xdp-helper");
    let port = 7101u16;
    let mut cmd = pair.a.command(std::env::current_exe().unwrap());
    cmd.args(["--exact", "xdp_helper_process", "--nocapture", "--test-threads=1"]).env(HELPER_ENV, port.to_string());
    let mut helper = Proc::spawn(cmd, dir.path(), "helper", None);
    wait_stdout_line(&mut helper, "READY", Duration::from_secs(20));
    assert!(pair.xa_link().contains("prog/xdp"));
    let pins = pair.pin_dirs();
    assert_eq!(pins.len(), 1);

    // Its datagrams go to the helper, not to A's kernel.
    let before = pair.a.in_datagrams();
    send_from_b(&pair, port, &[b"for the helper".to_vec()]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pair.a.in_datagrams(), before);

    // A second process (this one) on the same queue is refused, cleanly.
    let err = pair.open(AttachMode::Auto).err().expect("a second XSK on the same queue");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    assert!(pair.xa_link().contains("prog/xdp"), "the refused open must not detach the helper's program");
    // Nor can it take the helper's filter (the refused open left nothing behind either).
    assert_eq!(pair.pin_dirs(), pins);

    // kill -9: the program stays attached (pinned), the pins stay, nobody cleans up...
    helper.kill();
    let _ = helper.try_exited();
    std::thread::sleep(Duration::from_millis(100));
    assert!(pair.xa_link().contains("prog/xdp"));
    assert_eq!(pair.pin_dirs(), pins);

    // ...until the next open, which reclaims the dead user's program and starts afresh: the
    // helper's filter is gone, so its port reaches the kernel again.
    let mut vi = pair.open(AttachMode::Generic).expect("open after kill -9");
    assert_eq!(vi.attach_mode(), Some(AttachMode::Generic), "re-attached, not joined");
    assert!(pair.xa_link().contains("xdpgeneric"), "{}", pair.xa_link());
    let kernel = pair.a.run_in(|| UdpSocket::bind(format!("{A_IP}:{port}")).unwrap());
    kernel.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send_from_b(&pair, port, &[b"kernel again".to_vec()]);
    let mut buf = [0u8; 64];
    let n = kernel.recv(&mut buf).expect("the dead helper's port reaches the kernel");
    assert_eq!(&buf[..n], b"kernel again");
    assert_eq!(vi.rx_burst(|_| {}), 0);

    drop(vi);
    assert!(!pair.xa_link().contains("prog/xdp"), "{}", pair.xa_link());
    assert!(pair.pin_dirs().is_empty());
}

/// Without a veth: opening a missing interface is an error, not a panic, and leaves nothing.
#[test]
fn xdp_open_missing_interface_is_an_error() {
    let ns = NetNs::new();
    let err = ns.run_in(|| XdpVi::open("nosuch0", 0, &Config::default())).err().expect("no such interface");
    assert!(matches!(err.kind(), std::io::ErrorKind::NotFound) || err.raw_os_error() == Some(libc::ENODEV), "{err}");
}

/// Several queues: one XSK per queue of a two-queue veth, sharing one UMEM. B sends from many
/// source ports, so its TX queue (and with it A's RX queue) differs between flows: every
/// datagram arrives through the XSKs intact, on both queues (in native mode), and A's kernel
/// sees none. A second
/// process cannot take a queue the first holds (EBUSY) but can open the other one alone.
fn several_queues(mode: AttachMode) {
    let pair = VethPair::with_queues(2);
    let mut vi = pair
        .a
        .run_in(|| XdpVi::open_queues("xa", &[0, 1], &Config::default(), mode))
        .unwrap_or_else(|e| panic!("open_queues({mode:?}): {e}"));
    assert_eq!(vi.queues(), &[0, 1]);
    let port = 7201;
    vi.add_filter(Filter::udp(format!("{A_IP}:{port}").parse().unwrap())).unwrap();
    let before = pair.a.in_datagrams();
    let flows = 32u64;
    let per_flow = 20u64;
    let mut expected = std::collections::HashSet::new();
    for f in 0..flows {
        let payloads: Vec<Vec<u8>> = (0..per_flow).map(|i| random_bytes(1 + ((f * 97 + i * 31) % 1400) as usize, f * 1000 + i)).collect();
        expected.extend(payloads.iter().cloned());
        send_from_b(&pair, port, &payloads);
    }
    let got = receive(&mut vi, (flows * per_flow) as usize);
    let c = vi.counters().clone();
    assert_eq!(got.len() as u64, flows * per_flow, "datagrams through the XSKs; counters {c:?}");
    for (_, dst, data) in &got {
        assert_eq!(dst.to_string(), format!("{A_IP}:{port}"));
        assert!(expected.contains(data), "a datagram that was not sent ({} bytes)", data.len());
    }
    let distinct: std::collections::HashSet<&Vec<u8>> = got.iter().map(|g| &g.2).collect();
    assert_eq!(distinct.len(), expected.len(), "duplicates or losses");
    assert_eq!(pair.a.in_datagrams(), before, "A's kernel saw the filtered datagrams");
    println!("{mode:?}: frames per queue {:?}, program {:?}", c.rx_queue_frames, vi.program_stats());
    // Generic XDP on veth sees every frame as queue 0's (the skb does not record the queue it
    // came through); native XDP runs per queue.
    if mode == AttachMode::Native {
        assert!(c.rx_queue_frames.iter().all(|&n| n > 0), "not every queue received: {:?}", c.rx_queue_frames);
    }
    assert_eq!(vi.program_stats().wrong_queue, 0);

    // A second process (this one, a second VI) on a queue the first holds: refused, harmlessly.
    let err = pair.a.run_in(|| XdpVi::open_queues("xa", &[1], &Config::default(), mode)).err().expect("queue 1 is taken");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    send_from_b(&pair, port, &[b"still the first VI's".to_vec()]);
    let got = receive(&mut vi, 1);
    assert_eq!(got.len(), 1);
    drop(vi);
    assert!(!pair.xa_link().contains("prog/xdp"), "{}", pair.xa_link());
    assert!(pair.pin_dirs().is_empty());
}

#[test]
fn xdp_several_queues_native_mode() {
    several_queues(AttachMode::Native);
}

#[test]
fn xdp_several_queues_generic_mode() {
    several_queues(AttachMode::Generic);
}

/// Two processes on one interface on disjoint queues: the helper holds queue 0, this process
/// opens queue 1 (opening both is refused with EBUSY); each filter's datagrams reach its owner
/// only on its owner's queue, else the kernel.
#[test]
fn xdp_processes_on_disjoint_queues() {
    let pair = VethPair::with_queues(2);
    let dir = TempDir::new("xdp-helper-mq");
    let port = 7301u16;
    let mut cmd = pair.a.command(std::env::current_exe().unwrap());
    cmd.args(["--exact", "xdp_helper_process", "--nocapture", "--test-threads=1"]).env(HELPER_ENV, port.to_string());
    let mut helper = Proc::spawn(cmd, dir.path(), "helper", None);
    wait_stdout_line(&mut helper, "READY", Duration::from_secs(20));
    let err = pair.a.run_in(|| XdpVi::open_queues("xa", &[0, 1], &Config::default(), AttachMode::Auto)).err().expect("queue 0 is the helper's");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    let mut vi = pair.a.run_in(|| XdpVi::open_queues("xa", &[1], &Config::default(), AttachMode::Auto)).expect("queue 1 is free");
    let mine = 7302u16;
    vi.add_filter(Filter::udp(format!("{A_IP}:{mine}").parse().unwrap())).unwrap();
    // Our port from many flows: those on queue 1 come through our XSK, those on queue 0 (the
    // helper's) through A's kernel, to a kernel socket on the same port; none is lost.
    let kernel = pair.a.run_in(|| UdpSocket::bind(format!("{A_IP}:{mine}")).unwrap());
    kernel.set_nonblocking(true).unwrap();
    let flows = 32u64;
    for f in 0..flows {
        send_from_b(&pair, mine, &[f.to_be_bytes().to_vec()]);
    }
    let mut seen = std::collections::HashSet::new();
    let start = Instant::now();
    while seen.len() < flows as usize && start.elapsed() < Duration::from_secs(5) {
        vi.rx_burst(|d| {
            seen.insert(d.payload.to_vec());
        });
        let mut buf = [0u8; 64];
        while let Ok(n) = kernel.recv(&mut buf) {
            seen.insert(buf[..n].to_vec());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen.len() as u64, flows, "every flow's datagram, through the XSK or the kernel");
    let c = vi.counters().clone();
    println!("through our XSK (queue 1): {}, program {:?}", c.rx_datagrams, vi.program_stats());
    assert!(c.rx_datagrams > 0 && c.rx_datagrams < flows, "{c:?}");
    assert!(vi.program_stats().wrong_queue > 0);
    drop(vi);
    assert!(pair.xa_link().contains("prog/xdp"), "the helper still uses the program");
    helper.kill();
}
