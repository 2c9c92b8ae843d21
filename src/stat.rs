//! `accel stat`: the accelerated processes of this user and their sockets, read from their stats
//! blocks (accel/src/stats.rs), as `vma_stats` / `onload_stackdump` show theirs.
//!
//! ```text
//! accel stat [-p PID] [-v]...          a netstat-like table; -v details, -vv the config in force
//! accel stat -i SECONDS [-n COUNT]     refresh, with per-interval rates
//! accel stat --json                    the same, machine-readable (one document; with -i one per line)
//! accel stat -z [-p PID]               zero the counters
//! ```
//!
//! Blocks left by processes that died without cleaning up are reported as stale and removed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use accel_engine::shm::registry;
use accel_engine::shm::ring::{Ring, RingStats};
use accel_engine::stats::{self, HeaderInfo, RingEntry, SocketEntry, View};

use crate::args::StatArgs;
use crate::json::J;

/// One process's block, read.
pub struct ProcInfo {
    pub header: HeaderInfo,
    pub file: PathBuf,
    pub sockets: Vec<SocketEntry>,
    pub rings: Vec<(RingEntry, Option<RingStats>)>,
    /// Ring stats by ring file name (the sockets' rings, which may be other processes').
    pub ring_stats: HashMap<String, RingStats>,
}

/// A block whose process is gone.
pub struct StaleInfo {
    pub pid: u32,
    pub file: PathBuf,
    pub why: String,
    pub removed: bool,
}

/// Everything one look found.
pub struct Snapshot {
    pub dir: PathBuf,
    pub procs: Vec<ProcInfo>,
    pub stale: Vec<StaleInfo>,
    /// Files that could not be read: (file, error).
    pub errors: Vec<(PathBuf, String)>,
    pub at: Instant,
}

/// The directory stats blocks are in (as the library chooses it: `$ACCEL_SHM_DIR` or
/// `/dev/shm/accel-<uid>`).
pub fn dir() -> PathBuf {
    registry::default_dir()
}

fn ring_stats(dir: &Path, name: &str) -> Option<RingStats> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Ring::open(&dir.join(name)).ok().map(|r| r.stats())
}

/// Reads every block in `dir` (or only `pid`'s); removes stale ones when `clean`.
pub fn collect(dir: &Path, pid: Option<u32>, clean: bool) -> Snapshot {
    let mut snap = Snapshot { dir: dir.to_path_buf(), procs: Vec::new(), stale: Vec::new(), errors: Vec::new(), at: Instant::now() };
    for (p, file) in stats::list(dir) {
        if pid.is_some_and(|want| want != p) {
            continue;
        }
        let view = match View::open(&file, false) {
            Ok(v) => v,
            Err(e) => {
                if !registry::pid_alive(p) {
                    let removed = clean && std::fs::remove_file(&file).is_ok();
                    snap.stale.push(StaleInfo { pid: p, file, why: format!("process {p} is gone"), removed });
                } else {
                    snap.errors.push((file, e.to_string()));
                }
                continue;
            }
        };
        let header = view.header();
        if header.pid != p {
            snap.errors.push((file, format!("block of pid {} under the name of pid {p}", header.pid)));
            continue;
        }
        if let Some(why) = view.stale() {
            drop(view);
            let removed = clean && std::fs::remove_file(&file).is_ok();
            snap.stale.push(StaleInfo { pid: p, file, why, removed });
            continue;
        }
        let sockets = view.sockets();
        let rings: Vec<(RingEntry, Option<RingStats>)> = view
            .rings()
            .into_iter()
            .map(|r| {
                let st = match r.in_memory {
                    // An AF_XDP queue: what the process published in its block.
                    Some((fill, max_fill, _)) => Some(RingStats {
                        capacity: r.capacity,
                        slot_size: r.slot_size,
                        len: fill,
                        max_fill,
                        creator_pid: header.pid,
                        ..RingStats::default()
                    }),
                    None => ring_stats(dir, &r.name),
                };
                (r, st)
            })
            .collect();
        let mut by_name = HashMap::new();
        for s in &sockets {
            if !s.ring.is_empty() && !by_name.contains_key(&s.ring) {
                let mine = rings.iter().find(|(r, _)| r.name == s.ring && r.in_memory.is_some()).and_then(|(_, st)| *st);
                if let Some(st) = mine.or_else(|| ring_stats(dir, &s.ring)) {
                    by_name.insert(s.ring.clone(), st);
                }
            }
        }
        snap.procs.push(ProcInfo { header, file, sockets, rings, ring_stats: by_name });
    }
    if clean && snap.stale.iter().any(|s| s.removed) {
        // What the dead processes left in the shm registry goes too (rings, endpoints).
        if let Ok(reg) = registry::Registry::open(dir) {
            reg.reap();
            reg.remove_dir_if_empty();
        }
    }
    snap
}

// ---------------------------------------------------------------------------------------------
// Presentation

pub fn proto_name(p: u8) -> &'static str {
    match i32::from(p) {
        libc::IPPROTO_UDP => "udp",
        libc::IPPROTO_TCP => "tcp",
        _ => "?",
    }
}

fn addr(a: Option<std::net::SocketAddrV4>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// The VI column: the kind of VI the socket receives through ("shm", later "xdp", "efvi"), or
/// "kernel" when the kernel serves it; "-" for an accelerated socket without a receive binding
/// (a sender: each destination picks its VI).
pub fn vi_kind(e: &SocketEntry) -> String {
    if e.verdict == stats::VERDICT_KERNEL || e.flags & stats::F_RX_OFF != 0 {
        return "kernel".into();
    }
    match e.vi.split('/').next() {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => "-".into(),
    }
}

/// The Offloaded column and the reason shown next to it.
pub fn offload(e: &SocketEntry, datapaths: u64) -> (&'static str, String) {
    match e.verdict {
        stats::VERDICT_KERNEL => ("no", e.reason.clone()),
        stats::VERDICT_ACCEL if datapaths == 0 => ("no", "no datapath on (ACCEL_SHM=0)".into()),
        stats::VERDICT_ACCEL if e.flags & stats::F_RX_OFF != 0 => {
            ("tx only", format!("{}; receive side back to the kernel (socket option)", e.reason))
        }
        stats::VERDICT_ACCEL => ("yes", e.reason.clone()),
        _ => ("-", "undecided".into()),
    }
}

fn verdict_name(v: u8) -> &'static str {
    match v {
        stats::VERDICT_ACCEL => "accel",
        stats::VERDICT_KERNEL => "kernel",
        _ => "none",
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        stats::OPEN => "open",
        stats::DETACHED => "kernel-owned",
        _ => "free",
    }
}

/// Broken-down local time of a unix time in seconds.
pub fn local_tm(secs: u64) -> libc::tm {
    let t = secs as libc::time_t;
    // SAFETY: libc::tm is plain integers (and a pointer localtime_r sets): all-zero is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r with a time and a tm we own.
    unsafe { libc::localtime_r(&t, &mut tm) };
    tm
}

fn fmt_time_ms(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let tm = local_tm(ms / 1000);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

fn uptime(created_ms: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(created_ms) / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One socket over an interval: packets and bytes per second, and every counter's increase.
#[derive(Clone, Debug, Default)]
pub struct Rate {
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
    /// Increase of each counter, in [`stats::COUNTER_NAMES`] order (0 where a counter went down:
    /// zeroed meanwhile).
    pub deltas: Vec<u64>,
}

/// Per-socket rates over an interval.
pub type Rates = HashMap<(u32, usize, u64), Rate>;

fn key(p: &ProcInfo, s: &SocketEntry) -> (u32, usize, u64) {
    (p.header.pid, s.slot, s.generation)
}

fn totals(s: &SocketEntry) -> (u64, u64, u64, u64) {
    (
        s.counter("shm_rx_packets") + s.counter("kernel_rx_packets"),
        s.counter("shm_tx_packets") + s.counter("kernel_tx_packets"),
        s.counter("shm_rx_bytes") + s.counter("kernel_rx_bytes"),
        s.counter("shm_tx_bytes") + s.counter("kernel_tx_bytes"),
    )
}

fn rates(prev: &Snapshot, cur: &Snapshot) -> Rates {
    let dt = cur.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let mut before = HashMap::new();
    for p in &prev.procs {
        for s in &p.sockets {
            before.insert(key(p, s), s);
        }
    }
    let mut out = Rates::new();
    for p in &cur.procs {
        for s in &p.sockets {
            let (a, b, c, d) = totals(s);
            // A socket first seen in this interval: everything it counted happened in it.
            let (a0, b0, c0, d0) = before.get(&key(p, s)).map_or((0, 0, 0, 0), |s0| totals(s0));
            let deltas = match before.get(&key(p, s)) {
                Some(s0) => s.counters.iter().zip(&s0.counters).map(|(x, x0)| x.saturating_sub(*x0)).collect(),
                None => s.counters.clone(),
            };
            let r = |x: u64, x0: u64| x.saturating_sub(x0) as f64 / dt;
            out.insert(key(p, s), Rate { rx_pps: r(a, a0), tx_pps: r(b, b0), rx_bps: r(c, c0), tx_bps: r(d, d0), deltas });
        }
    }
    out
}

pub fn drops(s: &SocketEntry) -> u64 {
    ["drop_ring_full", "drop_rcvbuf", "drop_not_peer", "drop_bad_frame", "drop_too_large"].iter().map(|n| s.counter(n)).sum()
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The text view of a snapshot.
pub fn render(snap: &Snapshot, verbose: u8, rates: Option<&Rates>) -> String {
    let mut out = String::new();
    for s in &snap.stale {
        let _ = writeln!(
            out,
            "stale: {} ({}){}",
            s.file.display(),
            s.why,
            if s.removed { ": removed" } else { "" }
        );
    }
    for (f, e) in &snap.errors {
        let _ = writeln!(out, "unreadable: {}: {e}", f.display());
    }
    if snap.procs.is_empty() {
        let _ = writeln!(out, "no accelerated processes (stats blocks in {})", snap.dir.display());
        return out;
    }
    let mut rows = vec![if rates.is_some() {
        ["PID", "PROGRAM", "FD", "PROTO", "LOCAL", "REMOTE", "OFFLOADED", "VI", "RX/s", "TX/s", "RX-MB/s", "TX-MB/s", "DROPS", "REASON"]
            .map(String::from)
            .to_vec()
    } else {
        ["PID", "PROGRAM", "FD", "PROTO", "LOCAL", "REMOTE", "OFFLOADED", "VI", "RX accel/kernel", "TX accel/kernel", "DROPS", "REASON"]
            .map(String::from)
            .to_vec()
    }];
    for p in &snap.procs {
        let h = &p.header;
        if p.sockets.is_empty() {
            let mut r = vec![h.pid.to_string(), h.program.clone(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()];
            r.extend(std::iter::repeat_n("-".to_string(), if rates.is_some() { 5 } else { 3 }));
            r.push("(no sockets)".into());
            rows.push(r);
        }
        for s in &p.sockets {
            let (off, reason) = offload(s, h.datapaths);
            let mut r = vec![
                h.pid.to_string(),
                h.program.clone(),
                s.fd.map_or("-".into(), |f| f.to_string()),
                proto_name(s.proto).into(),
                addr(s.local),
                addr(s.remote),
                off.into(),
                vi_kind(s),
            ];
            match rates.and_then(|m| m.get(&key(p, s))) {
                Some(x) => {
                    r.push(format!("{:.0}", x.rx_pps));
                    r.push(format!("{:.0}", x.tx_pps));
                    r.push(format!("{:.2}", x.rx_bps / 1e6));
                    r.push(format!("{:.2}", x.tx_bps / 1e6));
                }
                None if rates.is_some() => r.extend(["0", "0", "0.00", "0.00"].map(String::from)),
                None => {
                    r.push(format!("{}/{}", s.counter("shm_rx_packets"), s.counter("kernel_rx_packets")));
                    r.push(format!("{}/{}", s.counter("shm_tx_packets"), s.counter("kernel_tx_packets")));
                }
            }
            r.push(drops(s).to_string());
            r.push(reason);
            rows.push(r);
        }
    }
    out.push_str(&table(&rows));
    if verbose == 0 {
        return out;
    }
    for p in &snap.procs {
        let h = &p.header;
        let _ = writeln!(out, "\npid {} {}: up {} (since {}), netns {}, datapaths: {}", h.pid, h.program, uptime(h.created_ms), fmt_time_ms(h.created_ms), h.netns, datapaths_text(h.datapaths));
        let _ = writeln!(out, "  cmdline: {}", h.cmdline);
        let _ = writeln!(out, "  stats block: {}{}", p.file.display(), if h.zeroed_ms != 0 { format!(" (counters zeroed {})", fmt_time_ms(h.zeroed_ms)) } else { String::new() });
        let _ = writeln!(out, "  {}", buffers_text(p));
        if h.proc_drops.iter().any(|&d| d > 0) {
            let list: Vec<String> = stats::DropCause::ALL.iter().zip(h.proc_drops).map(|(c, d)| format!("{} {d}", c.name())).collect();
            let _ = writeln!(out, "  drops not charged to a socket: {}", list.join(", "));
        }
        if h.overflow > 0 {
            let _ = writeln!(out, "  {} sockets found the table full: their counters are not shown", h.overflow);
        }
        if !h.xdp_queues.is_empty() {
            let list: Vec<String> = h.xdp_queues.iter().map(|(q, n)| format!("q{q} {n}")).collect();
            let _ = writeln!(out, "  xdp frames received per queue: {}", list.join(", "));
        }
        for s in &p.sockets {
            let c = |n: &str| s.counter(n);
            let _ = writeln!(out, "  fd {} {} {} -> {} [{}{}]", s.fd.map_or("-".into(), |f| f.to_string()), proto_name(s.proto), addr(s.local), addr(s.remote), state_name(s.state), if s.flags & stats::F_NONBLOCKING != 0 { ", nonblocking" } else { "" });
            let _ = writeln!(out, "    decision: {} ({})", verdict_name(s.verdict), s.reason);
            if !s.ring.is_empty() {
                let fill = p.ring_stats.get(&s.ring).map_or("?".into(), |r| format!("fill {}/{} (max {})", r.len, r.capacity, r.max_fill));
                let _ = writeln!(out, "    vi {} ring {} {fill}", if s.vi.is_empty() { "-" } else { &s.vi }, s.ring);
            }
            let _ = writeln!(out, "    rx: offloaded {} pkts {} B, kernel {} pkts {} B; poll hits {} misses {}; eagain {}", c("shm_rx_packets"), c("shm_rx_bytes"), c("kernel_rx_packets"), c("kernel_rx_bytes"), c("poll_hits"), c("poll_misses"), c("eagain"));
            let _ = writeln!(out, "    tx: offloaded {} pkts {} B, kernel {} pkts {} B; too large for the VI, sent by the kernel {}", c("shm_tx_packets"), c("shm_tx_bytes"), c("kernel_tx_packets"), c("kernel_tx_bytes"), c("tx_oversize"));
            let _ = writeln!(out, "    drops: ring full {}, rcvbuf {}, not from peer {}, bad frame {}, too large {}; doorbells sent {} received {}", c("drop_ring_full"), c("drop_rcvbuf"), c("drop_not_peer"), c("drop_bad_frame"), c("drop_too_large"), c("doorbells_sent"), c("doorbells_received"));
        }
        for (r, st) in &p.rings {
            if let (Some((fill, max_fill, spare)), Some(st)) = (r.in_memory, st) {
                let _ = writeln!(out, "  ring {} ({}): owner pid {}, depth {}, frame {} B, fill {fill} (max {max_fill}), buffers in use {} of {} (spare {spare}), in the process's memory", r.name, r.key, st.creator_pid, r.capacity, r.slot_size, xdp_in_use(p, spare).map_or("?".into(), |u| u.to_string()), xdp_total(p).map_or("?".into(), |t| t.to_string()));
                continue;
            }
            match st {
                Some(st) => {
                    let _ = writeln!(out, "  ring {} ({}): owner pid {}, depth {}, slot {} B, fill {} (max {}), published {}, consumed {}, drops full {}, too big {}, bad frames {}, waiters {}", r.name, r.key, st.creator_pid, st.capacity, st.slot_size, st.len, st.max_fill, st.published, st.consumed, st.drops_full, st.drops_too_big, st.corrupt, if st.waiters { "yes" } else { "no" });
                }
                None => {
                    let _ = writeln!(out, "  ring {} ({}): depth {}, unreadable", r.name, r.key, r.capacity);
                }
            }
        }
        if verbose >= 2 {
            let _ = writeln!(out, "  configuration in force:");
            for line in h.config.lines() {
                let (kv, src) = line.split_once('\t').unwrap_or((line, ""));
                let _ = writeln!(out, "    {kv:40} {src}");
            }
        }
    }
    out
}

fn datapaths_text(bits: u64) -> String {
    let v = stats::datapath_names(bits);
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// The receive buffers of an AF_XDP queue: its UMEM receive frames (ACCEL_RX_BUFS).
fn xdp_total(p: &ProcInfo) -> Option<u64> {
    p.header.config.lines().find_map(|l| l.strip_prefix("ACCEL_RX_BUFS=")?.split('\t').next()?.parse().ok())
}

/// Of those, the ones posted to the device or holding a datagram (not spare).
fn xdp_in_use(p: &ProcInfo, spare: u64) -> Option<u64> {
    xdp_total(p).map(|t| t.saturating_sub(spare))
}

/// The packet buffers of a process's shm rings (VMA_RX_BUFS; each ring slot is one): (given to
/// its rings, holding a datagram now, the configured total).
fn buffers(p: &ProcInfo) -> (u64, u64, Option<u64>) {
    let shm = || p.rings.iter().filter(|(r, _)| r.in_memory.is_none());
    let given = shm().map(|(r, _)| u64::from(r.capacity)).sum();
    let held = shm().filter_map(|(_, st)| st.as_ref().map(|s| s.len)).sum();
    let total = p.header.config.lines().find_map(|l| l.strip_prefix("ACCEL_RX_BUFS=")?.split('\t').next()?.parse().ok());
    (given, held, total)
}

fn buffers_text(p: &ProcInfo) -> String {
    let (given, held, total) = buffers(p);
    format!(
        "packet buffers: {given} of {} (ACCEL_RX_BUFS) given to {} ring(s), {held} holding datagrams now",
        total.map_or("?".into(), |t| t.to_string()),
        p.rings.iter().filter(|(r, _)| r.in_memory.is_none()).count()
    )
}

fn buffers_json(p: &ProcInfo) -> J {
    let (given, held, total) = buffers(p);
    J::obj([("in_rings", J::U(given)), ("holding", J::U(held)), ("total", total.map_or(J::Null, J::U))])
}

fn ring_json(st: &RingStats) -> J {
    J::obj([
        ("depth", J::U(st.capacity.into())),
        ("slot_size", J::U(st.slot_size.into())),
        ("fill", J::U(st.len)),
        ("max_fill", J::U(st.max_fill)),
        ("published", J::U(st.published)),
        ("consumed", J::U(st.consumed)),
        ("drops_full", J::U(st.drops_full)),
        ("drops_too_big", J::U(st.drops_too_big)),
        ("bad_frames", J::U(st.corrupt)),
        ("waiters", J::Bool(st.waiters)),
        ("owner", J::U(st.creator_pid.into())),
    ])
}

/// The JSON view of a snapshot.
pub fn to_json(snap: &Snapshot, rates: Option<&Rates>, interval: Option<f64>) -> J {
    let procs = snap
        .procs
        .iter()
        .map(|p| {
            let h = &p.header;
            let sockets = p
                .sockets
                .iter()
                .map(|s| {
                    let (off, reason) = offload(s, h.datapaths);
                    let counters = J::O(stats::COUNTER_NAMES.iter().zip(&s.counters).map(|(n, v)| (n.to_string(), J::U(*v))).collect());
                    let ring = p.ring_stats.get(&s.ring);
                    let mut fields = vec![
                        ("fd", s.fd.map_or(J::Null, |f| J::I(f.into()))),
                        ("proto", J::s(proto_name(s.proto))),
                        ("local", J::opt_s(s.local.map(|a| a.to_string()))),
                        ("remote", J::opt_s(s.remote.map(|a| a.to_string()))),
                        ("offloaded", J::Bool(off == "yes" || off == "tx only")),
                        ("offload", J::s(off)),
                        ("verdict", J::s(verdict_name(s.verdict))),
                        ("reason", J::s(reason)),
                        ("decision_reason", J::s(s.reason.clone())),
                        ("state", J::s(state_name(s.state))),
                        ("nonblocking", J::Bool(s.flags & stats::F_NONBLOCKING != 0)),
                        ("vi", J::opt_s((!s.vi.is_empty()).then(|| s.vi.clone()))),
                        ("ring", J::opt_s((!s.ring.is_empty()).then(|| s.ring.clone()))),
                        ("ring_depth", ring.map_or(J::Null, |r| J::U(r.capacity.into()))),
                        ("ring_fill", ring.map_or(J::Null, |r| J::U(r.len))),
                        ("ring_max_fill", ring.map_or(J::Null, |r| J::U(r.max_fill))),
                        ("counters", counters),
                    ];
                    if let Some(m) = rates {
                        let x = m.get(&key(p, s)).cloned().unwrap_or_default();
                        let deltas = J::O(stats::COUNTER_NAMES.iter().zip(x.deltas.iter().chain(std::iter::repeat(&0))).map(|(n, v)| (n.to_string(), J::U(*v))).collect());
                        fields.push(("rates", J::obj([("rx_pps", J::F(x.rx_pps)), ("tx_pps", J::F(x.tx_pps)), ("rx_bps", J::F(x.rx_bps)), ("tx_bps", J::F(x.tx_bps))])));
                        fields.push(("deltas", deltas));
                    }
                    J::obj(fields)
                })
                .collect();
            let rings = p
                .rings
                .iter()
                .map(|(r, st)| {
                    let owner = st.as_ref().map_or(h.pid, |st| st.creator_pid);
                    let mut f = vec![("name", J::s(r.name.clone())), ("key", J::s(r.key.clone())), ("owner", J::U(owner.into())), ("depth", J::U(r.capacity.into()))];
                    if let Some(st) = st {
                        f.push(("stats", ring_json(st)));
                    }
                    if let Some((_, _, spare)) = r.in_memory {
                        f.push(("in_memory", J::Bool(true)));
                        f.push(("spare_buffers", J::U(spare)));
                        f.push(("buffers_in_use", xdp_in_use(p, spare).map_or(J::Null, J::U)));
                    }
                    J::obj(f)
                })
                .collect();
            let config = J::O(
                h.config
                    .lines()
                    .filter_map(|l| {
                        let (kv, src) = l.split_once('\t')?;
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), J::obj([("value", J::s(v)), ("source", J::s(src))])))
                    })
                    .collect(),
            );
            J::obj([
                ("pid", J::U(h.pid.into())),
                ("program", J::s(h.program.clone())),
                ("cmdline", J::s(h.cmdline.clone())),
                ("uid", J::U(h.uid.into())),
                ("start_time", J::U(h.start_time)),
                ("created_ms", J::U(h.created_ms)),
                ("netns", J::U(h.netns)),
                ("datapaths", J::A(stats::datapath_names(h.datapaths).into_iter().map(J::s).collect())),
                ("drops", J::O(stats::DropCause::ALL.iter().zip(h.proc_drops).map(|(c, d)| (c.name().to_string(), J::U(d))).collect())),
                ("xdp_queues", J::A(h.xdp_queues.iter().map(|&(q, n)| J::obj([("queue", J::U(q.into())), ("rx_frames", J::U(n))])).collect())),
                ("buffers", buffers_json(p)),
                ("overflow", J::U(h.overflow)),
                ("zeroed_ms", J::U(h.zeroed_ms)),
                ("file", J::s(p.file.display().to_string())),
                ("config", config),
                ("sockets", J::A(sockets)),
                ("rings", J::A(rings)),
            ])
        })
        .collect();
    let stale = snap
        .stale
        .iter()
        .map(|s| J::obj([("pid", J::U(s.pid.into())), ("file", J::s(s.file.display().to_string())), ("reason", J::s(s.why.clone())), ("removed", J::Bool(s.removed))]))
        .collect();
    let errors = snap.errors.iter().map(|(f, e)| J::obj([("file", J::s(f.display().to_string())), ("error", J::s(e.clone()))])).collect();
    let mut top = vec![
        ("version", J::U(stats::VERSION.into())),
        ("dir", J::s(snap.dir.display().to_string())),
        ("processes", J::A(procs)),
        ("stale", J::A(stale)),
        ("errors", J::A(errors)),
    ];
    if let Some(i) = interval {
        top.push(("interval_s", J::F(i)));
    }
    J::obj(top)
}

/// Set by SIGINT/SIGTERM: stop refreshing.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn on_signal_stop() {
    extern "C" fn handler(_: libc::c_int) {
        STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
}

pub fn stopped() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn run(a: &StatArgs) -> ExitCode {
    let dir = dir();
    if a.zero {
        let snap = collect(&dir, a.pid, true);
        let mut n = 0;
        let mut failed = false;
        for p in &snap.procs {
            match View::open(&p.file, true).and_then(|v| v.zero()) {
                Ok(k) => {
                    println!("pid {} {}: counters of {k} sockets zeroed", p.header.pid, p.header.program);
                    n += 1;
                }
                Err(e) => {
                    eprintln!("accel stat: cannot zero {}: {e}", p.file.display());
                    failed = true;
                }
            }
        }
        if n == 0 && !failed {
            println!("no accelerated processes to zero{}", a.pid.map_or(String::new(), |p| format!(" (pid {p})")));
        }
        return if failed || (a.pid.is_some() && n == 0) { ExitCode::from(1) } else { ExitCode::SUCCESS };
    }
    let Some(interval) = a.interval else {
        let snap = collect(&dir, a.pid, true);
        if a.json {
            println!("{}", to_json(&snap, None, None).pretty());
        } else {
            print!("{}", render(&snap, a.verbose, None));
        }
        return if a.pid.is_some() && snap.procs.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS };
    };
    on_signal_stop();
    let mut prev = collect(&dir, a.pid, true);
    let mut done = 0u64;
    if a.json {
        println!("{}", to_json(&prev, Some(&Rates::new()), Some(interval)).text());
    } else {
        print!("{}", render(&prev, a.verbose, None));
    }
    let _ = std::io::stdout().flush();
    while !stopped() && a.count.is_none_or(|c| done < c) {
        let until = Instant::now() + Duration::from_secs_f64(interval);
        while Instant::now() < until && !stopped() {
            std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
        }
        if stopped() {
            break;
        }
        let cur = collect(&dir, a.pid, true);
        let r = rates(&prev, &cur);
        if a.json {
            println!("{}", to_json(&cur, Some(&r), Some(interval)).text());
        } else {
            let now = fmt_time_ms(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
            print!("\n--- {now}, rates over {interval}s ---\n{}", render(&cur, a.verbose, Some(&r)));
        }
        let _ = std::io::stdout().flush();
        prev = cur;
        done += 1;
    }
    ExitCode::SUCCESS
}
