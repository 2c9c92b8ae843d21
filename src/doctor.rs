//! `accel doctor`: what on this machine (and for a given address or interface) stands between a
//! program and acceleration, each finding with a severity and the one command that fixes it.
//!
//! Severities: `ok` and `info` are not problems; `warn` and `error` are, and make the exit
//! status 1. Prerequisites of the NIC datapath (AF_XDP: kernel, capabilities, memlock, bpffs, XDP mode)
//! are problems only when the question is about a NIC (`--iface`, or an `--addr` that is not on
//! this host); otherwise they are reported as information.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;

use accel_engine::config::{Config, VARIABLES};
use accel_engine::decision;
use accel_engine::rules::{Role, RuleSet};
use accel_engine::shm::{registry, vi};
use accel_engine::stats;

use crate::args::DoctorArgs;
use crate::json::J;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Info,
    Warn,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub severity: Severity,
    pub topic: &'static str,
    pub text: String,
    /// The one command that fixes it.
    pub fix: Option<String>,
}

fn f(severity: Severity, topic: &'static str, text: impl Into<String>, fix: Option<String>) -> Finding {
    Finding { severity, topic, text: text.into(), fix }
}

/// The kernel release, e.g. "6.1.0-18-amd64", and its (major, minor).
fn kernel() -> (String, (u32, u32)) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mut it = release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0));
    let v = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (release, v)
}

/// Can this kernel make an AF_XDP socket? (EPERM: it can, we may not.)
fn af_xdp_supported() -> Result<bool, i32> {
    const AF_XDP: i32 = 44;
    // SAFETY: plain socket creation, closed at once.
    let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        return Ok(true);
    }
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    match e {
        libc::EAFNOSUPPORT => Ok(false),
        e => Err(e),
    }
}

/// The effective capability mask of this process (CapEff in /proc/self/status).
fn cap_eff() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn has(mask: u64, cap: u32) -> bool {
    mask >> cap & 1 == 1
}

fn meminfo(key: &str) -> Option<u64> {
    fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(|v| v.split_whitespace().next().unwrap_or("").to_string()))?
        .parse()
        .ok()
}

/// Mount points of filesystems of `fstype`.
fn mounts_of(fstype: &str) -> Vec<String> {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() > 2 && w[2] == fstype).then(|| w[1].to_string())
        })
        .collect()
}

/// The XDP attachment of an interface as `ip -d link` shows it: (mode, program id).
fn xdp_mode(iface: &str) -> Option<(String, Option<String>)> {
    let out = std::process::Command::new("ip").args(["-d", "link", "show", "dev", iface]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    let mode = first
        .split_whitespace()
        .find(|w| matches!(*w, "xdp" | "xdpgeneric" | "xdpdrv" | "xdpoffload" | "xdpmulti"))
        .map(|m| match m {
            "xdp" | "xdpdrv" => "native",
            "xdpgeneric" => "generic (skb)",
            "xdpoffload" => "offloaded",
            _ => "multiple",
        })
        .unwrap_or("none")
        .to_string();
    let prog = text.split_whitespace().skip_while(|w| !w.starts_with("prog/xdp")).nth(2).map(str::to_string);
    Some((mode, prog))
}

fn queue_count(iface: &str) -> (usize, usize) {
    let Ok(rd) = fs::read_dir(format!("/sys/class/net/{iface}/queues")) else { return (0, 0) };
    let names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    (names.iter().filter(|n| n.starts_with("rx-")).count(), names.iter().filter(|n| n.starts_with("tx-")).count())
}

fn driver(iface: &str) -> Option<String> {
    fs::read_link(format!("/sys/class/net/{iface}/device/driver")).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The interface the kernel routes `ip` through (`ip route get`).
fn route_dev(ip: Ipv4Addr) -> Option<String> {
    let out = std::process::Command::new("ip").args(["route", "get", &ip.to_string()]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = text.split_whitespace();
    while let Some(x) = w.next() {
        if x == "dev" {
            return w.next().map(str::to_string);
        }
    }
    None
}

/// Every finding, in order.
pub fn findings(a: &DoctorArgs, env: impl Fn(&str) -> Option<String>) -> Vec<Finding> {
    use Severity::*;
    let mut out = Vec::new();
    let (config, warnings) = Config::from_vars(&env);
    let local_addr = a.addr.map(|d| d.ip().is_loopback() || vi::host_addresses().contains(d.ip()));
    // Is the question about a NIC?
    let nic = a.iface.is_some() || local_addr == Some(false);
    let nic_sev = |s: Severity| if nic { s } else { Info };

    // --- configuration
    if warnings.is_empty() {
        out.push(f(Ok, "config", "every ACCEL_*/VMA_* variable set has a valid value", None));
    }
    for w in &warnings {
        let var = VARIABLES.iter().find(|v| v.name == w.variable || v.alias == Some(w.variable.as_str()));
        let text = match var {
            Some(v) => format!("{w} (accepted: {})", v.accepted),
            None => w.to_string(),
        };
        let fix = if w.variable.contains(':') {
            Some(format!("edit {}", w.variable.rsplit_once(':').map_or(w.variable.as_str(), |(p, _)| p)))
        } else {
            Some(format!("unset {}", w.variable))
        };
        out.push(f(Error, "config", text, fix));
    }
    let set: Vec<String> = config
        .describe()
        .into_iter()
        .filter(|x| !matches!(x.source, accel_engine::config::Source::Default))
        .map(|x| format!("{}={} ({})", x.name, x.value, x.source))
        .collect();
    out.push(f(
        Info,
        "config",
        if set.is_empty() { "in force: all defaults".to_string() } else { format!("in force besides defaults: {}", set.join(", ")) },
        None,
    ));
    if !config.enable {
        out.push(f(Warn, "config", "ACCEL_ENABLE=0: the library passes everything to the kernel", Some("unset ACCEL_ENABLE VMA_OFFLOADED_SOCKETS".into())));
    }
    if config.shm {
        out.push(f(Ok, "shm", "same-host bypass on (ACCEL_SHM, on by default): UDP between accelerated processes of this host goes through shared memory", None));
    } else {
        out.push(f(
            Warn,
            "shm",
            "same-host bypass off (ACCEL_SHM=0): no datapath is on, every socket is served by the kernel",
            Some("unset ACCEL_SHM   # on by default".into()),
        ));
    }

    // --- rules file
    let program = a.program.clone().unwrap_or_default();
    let rules = match &config.config_file {
        None => {
            out.push(f(Info, "rules", "no rules file (ACCEL_CONFIG_FILE unset): every eligible UDP socket is accelerated", None));
            RuleSet::default()
        }
        Some(path) => {
            let (rules, rw) = RuleSet::load(path, &program, config.application_id.as_deref());
            for w in &rw {
                out.push(f(Error, "rules", w.to_string(), Some(format!("edit {}", path.display()))));
            }
            if rw.is_empty() {
                out.push(f(Ok, "rules", format!("{}: {} rules apply{}", path.display(), rules.len(), if program.is_empty() { String::new() } else { format!(" to {program}") }), None));
            }
            rules
        }
    };
    if let Some(addr) = a.addr {
        let pair = Some(addr);
        for (role, what, local, remote) in [
            (Role::UdpReceiver, "a socket bound to", pair, None),
            (Role::UdpSender, "a first send to", None, pair),
            (Role::UdpConnect, "a socket connected to", None, pair),
        ] {
            let d = decision::by_rules(&rules, role, local, remote);
            let sev = if d.accelerate() { Ok } else { Info };
            out.push(f(sev, "rules", format!("{what} {addr} ({}): {d}", role_name(role)), None));
        }
        if local_addr == Some(true) {
            out.push(f(
                if config.shm { Ok } else { Warn },
                "addr",
                format!("{} is an address of this host: the same-host bypass serves it when both ends run under accel (ACCEL_SHM on, the default)", addr.ip()),
                (!config.shm).then(|| "unset ACCEL_SHM   # on by default".to_string()),
            ));
        } else {
            let dev = route_dev(*addr.ip());
            let via = dev.as_deref().unwrap_or("?");
            if config.xdp {
                out.push(f(
                    Ok,
                    "addr",
                    format!(
                        "{} is not on this host (route via {via}): the AF_XDP datapath (ACCEL_XDP=1) serves its UDP through {via}'s receive queues, given the NIC prerequisites below",
                        addr.ip()
                    ),
                    None,
                ));
            } else {
                out.push(f(
                    Warn,
                    "addr",
                    format!(
                        "{} is not on this host (route via {via}): the AF_XDP datapath could bypass the kernel for its UDP, but it is off (ACCEL_XDP=0, the default); its traffic goes through the kernel",
                        addr.ip()
                    ),
                    Some("export ACCEL_XDP=1   # as root; see the NIC prerequisites below".into()),
                ));
            }
        }
    }

    // --- shm registry and stats blocks
    let dir = registry::default_dir();
    if let Some(addr) = a.addr {
        out.extend(live_sockets(&dir, addr));
    }
    match fs::symlink_metadata(&dir) {
        Err(_) => out.push(f(Info, "shm", format!("{} does not exist yet (made by the first accelerated process)", dir.display()), None)),
        Result::Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
                out.push(f(
                    Error,
                    "shm",
                    format!("{} is not a private directory of uid {uid} (mode {:o}, owner {}): the library refuses it and keeps everything in the kernel", dir.display(), m.mode() & 0o7777, m.uid()),
                    Some(format!("rm -rf {}", dir.display())),
                ));
            } else {
                let blocks = stats::list(&dir);
                let stale = blocks
                    .iter()
                    .filter(|(pid, p)| stats::View::open(p, false).map_or(!registry::pid_alive(*pid), |v| v.stale().is_some()))
                    .count();
                out.push(f(Ok, "shm", format!("{}: private (0700); {} accelerated processes publish stats", dir.display(), blocks.len() - stale), None));
                if stale > 0 {
                    out.push(f(Warn, "shm", format!("{stale} stats blocks of processes that died without cleaning up"), Some("accel stat   # reports and removes them".into())));
                }
            }
        }
    }
    if !mounts_of("tmpfs").iter().any(|m| m == "/dev/shm") && std::env::var_os("ACCEL_SHM_DIR").is_none() {
        out.push(f(Error, "shm", "/dev/shm is not a tmpfs mount: shared-memory rings would live on disk", Some("sudo mount -t tmpfs tmpfs /dev/shm".into())));
    }

    // --- kernel and AF_XDP
    let (release, (major, minor)) = kernel();
    let kv = (major, minor);
    if kv >= (5, 4) {
        out.push(f(Ok, "kernel", format!("Linux {release}: XDP and AF_XDP (with need_wakeup) available"), None));
    } else if kv >= (4, 18) {
        out.push(f(nic_sev(Warn), "kernel", format!("Linux {release}: AF_XDP without need_wakeup (5.4+): the NIC datapath would busy-poll"), Some("upgrade the kernel to 5.4 or later".into())));
    } else {
        out.push(f(nic_sev(Error), "kernel", format!("Linux {release}: no AF_XDP (needs 4.18+)"), Some("upgrade the kernel to 5.4 or later".into())));
    }
    match af_xdp_supported() {
        Result::Ok(true) => out.push(f(Ok, "af_xdp", "AF_XDP sockets can be created", None)),
        Result::Ok(false) => out.push(f(nic_sev(Error), "af_xdp", "AF_XDP sockets are not supported by this kernel (CONFIG_XDP_SOCKETS)", Some("use a kernel built with CONFIG_XDP_SOCKETS=y".into()))),
        Err(e) => out.push(f(
            nic_sev(Warn),
            "af_xdp",
            format!("AF_XDP socket creation fails: {}", std::io::Error::from_raw_os_error(e)),
            Some("sudo setcap cap_net_raw,cap_net_admin,cap_bpf,cap_ipc_lock+ep PROGRAM".into()),
        )),
    }

    // --- capabilities
    let caps = cap_eff();
    let missing: Vec<&str> = [(CAP_NET_RAW, "cap_net_raw"), (CAP_NET_ADMIN, "cap_net_admin"), (CAP_BPF, "cap_bpf"), (CAP_IPC_LOCK, "cap_ipc_lock")]
        .iter()
        .filter(|(c, _)| !has(caps, *c) && (*c != CAP_BPF || !has(caps, CAP_SYS_ADMIN)))
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        out.push(f(Ok, "caps", format!("capabilities for AF_XDP present (CapEff {caps:016x})"), None));
    } else {
        out.push(f(
            nic_sev(Warn),
            "caps",
            format!("missing capabilities for the NIC datapath: {} (the same-host bypass needs none)", missing.join(", ")),
            Some(format!("sudo setcap {}+ep PROGRAM", missing.join(","))),
        ));
    }

    // --- memlock (UMEM: packet buffers pinned by AF_XDP)
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit into a struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    let need = (u64::from(config.rx_bufs) + u64::from(config.tx_bufs)) * 2048;
    let limit = if rl.rlim_cur == libc::RLIM_INFINITY { "unlimited".to_string() } else { format!("{} KiB", rl.rlim_cur / 1024) };
    if rl.rlim_cur == libc::RLIM_INFINITY || rl.rlim_cur >= need || has(caps, CAP_IPC_LOCK) {
        let why = if rl.rlim_cur != libc::RLIM_INFINITY && rl.rlim_cur < need { " (CAP_IPC_LOCK lifts the limit)" } else { "" };
        out.push(f(Ok, "memlock", format!("memlock limit {limit}: enough for {} KiB of packet buffers{why}", need / 1024), None));
    } else {
        out.push(f(
            nic_sev(Warn),
            "memlock",
            format!("memlock limit {limit} < {} KiB of packet buffers (ACCEL_RX_BUFS + ACCEL_TX_BUFS × 2 KiB) the NIC datapath pins", need / 1024),
            Some("ulimit -l unlimited".into()),
        ));
    }

    // --- hugepages
    let total = meminfo("HugePages_Total").unwrap_or(0);
    let free = meminfo("HugePages_Free").unwrap_or(0);
    let size_kb = meminfo("Hugepagesize").unwrap_or(2048).max(1);
    let huge = config.mem_alloc == accel_engine::config::MemAlloc::HugePages;
    let pages_needed = need.div_ceil(size_kb * 1024);
    if huge && free < pages_needed {
        out.push(f(
            Error,
            "hugepages",
            format!("ACCEL_MEM_ALLOC_TYPE=2 (huge pages) but {free} of {total} huge pages ({size_kb} KiB) are free; {pages_needed} needed"),
            Some(format!("echo {} | sudo tee /proc/sys/vm/nr_hugepages", total + pages_needed - free)),
        ));
    } else {
        out.push(f(if huge { Ok } else { Info }, "hugepages", format!("{free} of {total} huge pages ({size_kb} KiB) free{}", if huge { "" } else { "; not used (ACCEL_MEM_ALLOC_TYPE is not 2)" }), None));
    }

    // --- bpffs
    let bpf = mounts_of("bpf");
    if bpf.is_empty() {
        out.push(f(nic_sev(Warn), "bpffs", "no bpf filesystem mounted: XDP programs and maps cannot be pinned", Some("sudo mount -t bpf bpf /sys/fs/bpf".into())));
    } else {
        out.push(f(Ok, "bpffs", format!("bpf filesystem mounted at {}", bpf.join(", ")), None));
    }

    // --- interfaces
    let ifaces: Vec<String> = match &a.iface {
        Some(i) => vec![i.clone()],
        None => {
            let mut v: Vec<String> = fs::read_dir("/sys/class/net").map_or(Vec::new(), |rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect());
            v.sort();
            v
        }
    };
    for i in &ifaces {
        if !Path::new(&format!("/sys/class/net/{i}")).exists() {
            out.push(f(Error, "iface", format!("{i}: no such interface"), Some("ip -br link   # lists the interfaces".into())));
            continue;
        }
        let (rx, tx) = queue_count(i);
        let drv = driver(i);
        let oper = fs::read_to_string(format!("/sys/class/net/{i}/operstate")).unwrap_or_default().trim().to_string();
        let (mode, prog) = xdp_mode(i).unwrap_or(("unknown".into(), None));
        let text = format!(
            "{i}: {oper}, driver {}, {rx} rx / {tx} tx queues, XDP: {mode}{}",
            drv.as_deref().unwrap_or("none (virtual)"),
            prog.map_or(String::new(), |p| format!(" (prog id {p})"))
        );
        let sev = if mode == "generic (skb)" && a.iface.as_deref() == Some(i.as_str()) { Warn } else { Info };
        let fix = (sev == Warn).then(|| format!("ip link set dev {i} xdpgeneric off   # let the NIC datapath attach in native mode"));
        out.push(f(sev, "iface", text, fix));
        if a.iface.as_deref() == Some(i.as_str()) && oper == "down" {
            out.push(f(Warn, "iface", format!("{i} is down"), Some(format!("sudo ip link set dev {i} up"))));
        }
    }
    out
}

/// The sockets of running accelerated processes (their stats blocks) bound to `addr`'s port on
/// its address or the wildcard, or connected to it: is it accelerated right now, and why not.
fn live_sockets(dir: &Path, addr: std::net::SocketAddrV4) -> Vec<Finding> {
    let snap = crate::stat::collect(dir, None, false);
    let mut out = Vec::new();
    for p in &snap.procs {
        for s in &p.sockets {
            let bound = s.local.is_some_and(|l| l.port() == addr.port() && (l.ip() == addr.ip() || l.ip().is_unspecified()));
            let connected = s.remote == Some(addr);
            if !bound && !connected {
                continue;
            }
            let (off, reason) = crate::stat::offload(s, p.header.datapaths);
            let what = if bound { "bound to" } else { "connected to" };
            let local = s.local.map_or("-".to_string(), |l| l.to_string());
            let text = format!(
                "pid {} ({}) fd {} {what} {addr} (local {local}): offloaded {off} ({reason}); rx {} offloaded / {} kernel, drops {}",
                p.header.pid,
                p.header.program,
                s.fd.map_or("-".into(), |f| f.to_string()),
                s.counter("shm_rx_packets"),
                s.counter("kernel_rx_packets"),
                crate::stat::drops(s),
            );
            let sev = if off == "yes" { Severity::Ok } else { Severity::Info };
            out.push(f(sev, "live", text, Some(format!("accel stat -v -p {}", p.header.pid)).filter(|_| sev != Severity::Ok)));
        }
    }
    if out.is_empty() {
        out.push(f(Severity::Info, "live", format!("no running accelerated process has a socket bound or connected to {addr}"), None));
    }
    out
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::TcpServer => "tcp_server",
        Role::TcpClient => "tcp_client",
        Role::UdpReceiver => "udp_receiver",
        Role::UdpSender => "udp_sender",
        Role::UdpConnect => "udp_connect",
    }
}

pub fn render(fs: &[Finding]) -> String {
    let mut out = String::new();
    for x in fs {
        let _ = writeln!(out, "[{:5}] {:9} {}", x.severity.name(), x.topic, x.text);
        if let Some(fix) = &x.fix {
            let _ = writeln!(out, "{:18}fix: {fix}", "");
        }
    }
    let problems = fs.iter().filter(|x| x.severity >= Severity::Warn).count();
    if problems == 0 {
        out.push_str("\nnothing is wrong\n");
    } else {
        let _ = writeln!(out, "\n{problems} problem{} found", if problems == 1 { "" } else { "s" });
    }
    out
}

pub fn run(a: &DoctorArgs) -> ExitCode {
    let fs = findings(a, |k| std::env::var(k).ok());
    let problems = fs.iter().any(|x| x.severity >= Severity::Warn);
    if a.json {
        let items = fs
            .iter()
            .map(|x| J::obj([("severity", J::s(x.severity.name())), ("topic", J::s(x.topic)), ("text", J::s(x.text.clone())), ("fix", J::opt_s(x.fix.clone()))]))
            .collect();
        println!("{}", J::obj([("ok", J::Bool(!problems)), ("findings", J::A(items))]).pretty());
    } else {
        print!("{}", render(&fs));
    }
    if problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
