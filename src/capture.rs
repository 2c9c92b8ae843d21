//! `accel capture -p PID [-w FILE] [-c COUNT] [-t SECONDS]`: the datagrams a process moves
//! through shared memory (which tcpdump on an interface never sees), as a pcap file with
//! synthesized IPv4 and UDP headers (LINKTYPE_IPV4), readable by `tcpdump -r` and `tshark -r`.
//!
//! While it runs, the process's stats block has capture on (accel/src/stats.rs): the datapath
//! copies each datagram it sends or receives through a ring into the block's capture ring, and
//! this reads them out. Records the reader could not keep up with are counted as lost.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use accel_engine::stats::{self, CaptureRead, CaptureRecord, View};

use crate::args::CaptureArgs;
use crate::stat::{on_signal_stop, stopped};

/// LINKTYPE_IPV4: each packet is a raw IPv4 datagram.
pub const LINKTYPE_IPV4: u32 = 228;

/// The pcap global header (microsecond timestamps).
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone, sigfigs: 0
    h[16..20].copy_from_slice(&65535u32.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_IPV4.to_le_bytes());
    h
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for c in chunks {
        for &b in *c {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One pcap record: record header, IPv4 header, UDP header, payload (as captured).
pub fn pcap_record(r: &CaptureRecord, ip_id: u16) -> Vec<u8> {
    let orig = 28 + r.orig_len as usize;
    let incl = 28 + r.data.len();
    let mut out = Vec::with_capacity(16 + incl);
    let secs = (r.ts_ns / 1_000_000_000) as u32;
    let usecs = (r.ts_ns % 1_000_000_000 / 1000) as u32;
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&usecs.to_le_bytes());
    out.extend_from_slice(&(incl as u32).to_le_bytes());
    out.extend_from_slice(&(orig as u32).to_le_bytes());
    let ip_len = orig.min(65535) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&r.src.ip().octets());
    ip[16..20].copy_from_slice(&r.dst.ip().octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = (8 + r.orig_len as usize).min(65535) as u16;
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&r.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&r.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    if r.data.len() == r.orig_len as usize {
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&r.src.ip().octets());
        pseudo[4..8].copy_from_slice(&r.dst.ip().octets());
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
        let c = match checksum(&[&pseudo, &udp, &r.data]) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
    out.extend_from_slice(&r.data);
    out
}

fn line(r: &CaptureRecord) -> String {
    let secs = r.ts_ns / 1_000_000_000;
    let tm = crate::stat::local_tm(secs);
    let dir = if r.dir == stats::DIR_TX { "tx" } else { "rx" };
    let a = |x: SocketAddrV4| x.to_string();
    format!(
        "{:02}:{:02}:{:02}.{:06} {dir} {} > {}: UDP, length {}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        r.ts_ns % 1_000_000_000 / 1000,
        a(r.src),
        a(r.dst),
        r.orig_len
    )
}

pub fn run(a: &CaptureArgs) -> ExitCode {
    let dir = crate::stat::dir();
    let path = dir.join(stats::file_name(a.pid));
    let view = match View::open(&path, true) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("accel capture: process {} publishes no stats block in {} (not running under accel with a datapath on?)", a.pid, dir.display());
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("accel capture: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    if let Some(why) = view.stale() {
        eprintln!("accel capture: the stats block of pid {} is stale ({why})", a.pid);
        return ExitCode::from(1);
    }
    let mut out: Box<dyn Write> = match &a.write {
        Some(p) if p.as_os_str() == "-" => Box::new(BufWriter::new(io::stdout())),
        Some(p) => match File::create(p) {
            Ok(f) => Box::new(BufWriter::new(f)),
            Err(e) => {
                eprintln!("accel capture: cannot create {}: {e}", p.display());
                return ExitCode::from(1);
            }
        },
        None => Box::new(io::stdout()),
    };
    let pcap = a.write.is_some();
    if pcap && out.write_all(&pcap_header()).and_then(|()| out.flush()).is_err() {
        eprintln!("accel capture: cannot write the pcap header");
        return ExitCode::from(1);
    }
    on_signal_stop();
    let me = std::process::id();
    let mut pos = match view.capture_start(me) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("accel capture: {e}");
            return ExitCode::from(1);
        }
    };
    let h = view.header();
    eprintln!("accel capture: capturing the bypass traffic of pid {} ({}); Ctrl-C to stop", h.pid, h.program);
    let start = Instant::now();
    let deadline = a.seconds.map(|s| start + Duration::from_secs_f64(s));
    let (mut n, mut lost) = (0u64, 0u64);
    let mut last_check = Instant::now();
    let mut stuck_since: Option<(u64, Instant)> = None;
    let mut ok = true;
    loop {
        if stopped() || a.count.is_some_and(|c| n >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match view.capture_next(&mut pos) {
            CaptureRead::Record(r) => {
                stuck_since = None;
                n += 1;
                let res = if pcap {
                    out.write_all(&pcap_record(&r, n as u16))
                } else {
                    writeln!(out, "{}", line(&r))
                };
                if res.is_err() {
                    ok = false;
                    break;
                }
                continue;
            }
            CaptureRead::Lost(k) => {
                lost += k;
                continue;
            }
            CaptureRead::Empty => {
                let _ = out.flush();
                // A record reserved but never completed (its writer died): skip it after a while.
                if view.capture_tail() > pos {
                    match stuck_since {
                        Some((p, t)) if p == pos && t.elapsed() > Duration::from_millis(500) => {
                            view.capture_skip(&mut pos);
                            lost += 1;
                            stuck_since = None;
                        }
                        Some((p, _)) if p == pos => {}
                        _ => stuck_since = Some((pos, Instant::now())),
                    }
                }
                if last_check.elapsed() > Duration::from_millis(200) {
                    last_check = Instant::now();
                    if view.stale().is_some() {
                        eprintln!("accel capture: process {} exited", a.pid);
                        break;
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
    view.capture_stop(me);
    // What was already recorded when we stopped is still delivered (up to the count).
    while a.count.is_none_or(|c| n < c) {
        match view.capture_next(&mut pos) {
            CaptureRead::Record(r) => {
                n += 1;
                let res = if pcap { out.write_all(&pcap_record(&r, n as u16)) } else { writeln!(out, "{}", line(&r)) };
                if res.is_err() {
                    ok = false;
                    break;
                }
            }
            CaptureRead::Lost(k) => lost += k,
            CaptureRead::Empty => break,
        }
    }
    if out.flush().is_err() {
        ok = false;
    }
    eprintln!("accel capture: {n} datagrams captured, {lost} lost");
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("accel capture: write error");
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ip_and_udp_checksums_verify() {
        let r = CaptureRecord {
            ts_ns: 1_700_000_000_123_456_789,
            dir: stats::DIR_TX,
            src: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40000),
            dst: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5000),
            orig_len: 5,
            data: b"hello".to_vec(),
        };
        let p = pcap_record(&r, 1);
        assert_eq!(u32::from_le_bytes(p[8..12].try_into().unwrap()), 33);
        assert_eq!(u32::from_le_bytes(p[4..8].try_into().unwrap()), 123_456);
        let ip = &p[16..36];
        assert_eq!(checksum(&[ip]), 0, "IP header checksum verifies");
        let udp = &p[36..];
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&ip[12..16]);
        pseudo[4..8].copy_from_slice(&ip[16..20]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&udp[4..6]);
        assert_eq!(checksum(&[&pseudo, udp]), 0, "UDP checksum verifies");
        assert_eq!(&udp[8..], b"hello");
    }
}
