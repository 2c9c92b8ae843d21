//! Ring ping-pong: the same-host round trip through two `shm::ring::Ring`s (one each way), with
//! no sockets and no interposition — what the ring protocol itself costs, to compare with the raw
//! floor (scripts/bench/shm_pingpong.c: one sequence word each way) and with sockperf under
//! libaccel.so.
//!
//! usage: ring_pingpong [ROUND_TRIPS=1000000] [CLIENT_CPU=1] [SERVER_CPU=0] [PAYLOAD=64]
//! output (µs): "half-RTT usec: avg=.. p50=.. p99=.. p99.9=.. min=.. max=.. n=.."
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use accel_engine::shm::ring::Ring;

fn pin(cpu: usize) {
    // SAFETY: a cpu_set_t of our own.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, ccpu, scpu, len) = (arg(1, 1_000_000), arg(2, 1), arg(3, 0), arg(4, 64));
    let dir = std::env::temp_dir().join(format!("ring-pp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (dir.join("a"), dir.join("b"));
    let ping = Ring::create(&pa, 1024, 2048).unwrap();
    let pong = Ring::create(&pb, 1024, 2048).unwrap();
    let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    let payload = vec![7u8; len];
    let mut buf = vec![0u8; 2048];
    // SAFETY: fork in a single-threaded program.
    let child = unsafe { libc::fork() };
    if child == 0 {
        pin(scpu);
        for _ in 0..n {
            loop {
                if let Some(m) = ping.pop_with(|d| {
                    buf[..d.payload.len()].copy_from_slice(d.payload);
                    d.payload.len()
                }) {
                    let _ = pong.push(1, src, &buf[..m]);
                    break;
                }
                core::hint::spin_loop();
            }
        }
        std::process::exit(0);
    }
    pin(ccpu);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ping.push(1, src, &payload).unwrap();
        loop {
            if pong.pop_with(|d| buf[..d.payload.len()].copy_from_slice(d.payload)).is_some() {
                break;
            }
            core::hint::spin_loop();
        }
        lat.push(t.elapsed().as_nanos() as f64 / 2000.0);
    }
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, core::ptr::null_mut(), 0) };
    let _ = std::fs::remove_dir_all(&dir);
    let avg = lat.iter().sum::<f64>() / n as f64;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "half-RTT usec: avg={avg:.3} p50={:.3} p99={:.3} p99.9={:.3} min={:.3} max={:.3} n={n}",
        p(0.5), p(0.99), p(0.999), lat[0], lat[n - 1]
    );
}
