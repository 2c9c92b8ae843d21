//! Packet-buffer memory of the shm datapath: VMA_MEM_ALLOC_TYPE=2 puts the rings in huge pages
//! when a hugetlbfs mount and free huge pages exist, and otherwise says so once and uses normal
//! pages — datagrams arrive intact either way.
//!
//! Each run happens in its own mount namespace (`unshare -m`), where the test mounts (or
//! unmounts) hugetlbfs without touching the host's mounts. The huge page pool is the host's: the
//! test reserves a few pages and puts the old size back when it ends, also on failure.

mod common;

use common::*;
use std::path::PathBuf;

/// Restores vm.nr_hugepages when dropped.
struct HugePool {
    old: String,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugePool {
    fn reserve(pages: u64) -> HugePool {
        let old = std::fs::read_to_string(NR_HUGEPAGES).expect("read nr_hugepages").trim().to_string();
        let want = pages.max(old.parse().unwrap_or(0));
        std::fs::write(NR_HUGEPAGES, want.to_string()).expect("set nr_hugepages (needs root)");
        HugePool { old }
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, &self.old);
    }
}

fn meminfo(key: &str) -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {key} in /proc/meminfo"))
}

/// A receiver and a sender in one python process: 200 datagrams through shm, checked byte for
/// byte; prints the ring files it finds in `ring_dir` while its sockets are open.
const PROBE: &str = r#"
import os, socket, sys
ring_dir = sys.argv[1]
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 0))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = [bytes([i % 251]) * (1 + i * 7 % 1400) for i in range(200)]
for d in sent:
    s.sendto(d, r.getsockname())
got = [r.recv(2048) for _ in sent]
assert got == sent, "datagrams differ"
rings = sorted(os.listdir(ring_dir)) if os.path.isdir(ring_dir) else []
print("rings", len(rings))
print("ok")
"#;

/// Runs the probe under the library with VMA_MEM_ALLOC_TYPE=2 in a private mount namespace
/// prepared by `setup` (shell commands).
fn run_probe(env: &ShmEnv, setup: &str, ring_dir: &str, name: &str) -> Output {
    let script = env.cx.write_file(&format!("{name}.py"), PROBE.as_bytes());
    let py = python3();
    let shell = format!("{setup}\nexec \"$0\" \"$1\" \"$2\"");
    let mut cmd = env.accel(which("unshare"), &[("VMA_MEM_ALLOC_TYPE", "2")]);
    cmd.args(["-m", "sh", "-ec", &shell]);
    cmd.arg(&py).arg(&script).arg(ring_dir);
    env.run(cmd, name)
}

/// The text of the log files that appeared since the last call (one run's processes).
fn new_logs(env: &ShmEnv, seen: &mut Vec<PathBuf>) -> String {
    let mut text = String::new();
    for f in env.cx.logs().files {
        if !seen.contains(&f.path) {
            text.push_str(&f.text);
            seen.push(f.path.clone());
        }
    }
    text
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[test]
fn rings_live_in_huge_pages_when_asked_and_fall_back_with_one_warning() {
    let env = ShmEnv::new("shm-huge");
    let _pool = HugePool::reserve(64);
    let mnt: PathBuf = env.cx.path("hugetlbfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt_s = mnt.display().to_string();
    let ring_dir = format!("{mnt_s}/accel-{}", uid());
    let mut seen = Vec::new();

    // 1. A private hugetlbfs mount and free pages: the rings are files there, in huge pages.
    let free_before = meminfo("HugePages_Free:");
    assert!(free_before >= 8, "HugePages_Free {free_before} after reserving 64");
    let udp_before = env.ns.in_datagrams();
    let out = run_probe(&env, &format!("mount -t hugetlbfs none '{mnt_s}'"), &ring_dir, "huge");
    out.assert_success();
    // Through the rings, not the kernel (which would count 200 datagrams).
    let via_kernel = env.ns.in_datagrams() - udp_before;
    assert!(via_kernel < 20, "{via_kernel} datagrams went through the kernel");
    let text = out.stdout_text();
    assert!(text.contains("ok"), "{text}");
    let rings: u64 = text.lines().find_map(|l| l.strip_prefix("rings ")?.parse().ok()).unwrap();
    assert!(rings >= 1, "no ring file in hugetlbfs while the sockets were open\n{text}\n{}", out.stderr);
    let logs = new_logs(&env, &mut seen);
    assert!(!logs.contains("normal pages"), "unexpected fallback:\n{logs}");
    assert!(logs.contains("shm rings in huge pages"), "no debug line saying so:\n{logs}");
    // The process removed its rings at exit: every huge page is free again.
    assert_eq!(meminfo("HugePages_Free:"), free_before, "huge pages left behind");

    // 2. No hugetlbfs mount: one warning naming the variable and the fix, normal pages, data intact.
    let unmount_all = "for m in $(awk '$3 == \"hugetlbfs\" {print $2}' /proc/self/mounts); do umount \"$m\"; done";
    let out = run_probe(&env, unmount_all, &ring_dir, "no-mount");
    out.assert_success();
    assert!(out.stdout_text().contains("ok"));
    let logs = new_logs(&env, &mut seen);
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("VMA_MEM_ALLOC_TYPE=2")).collect();
    assert_eq!(warnings.len(), 1, "want one warning:\n{logs}");
    assert!(warnings[0].contains("hugetlbfs") && warnings[0].contains("normal pages"), "{}", warnings[0]);

    // 3. A mount but no free huge pages (the pool is emptied): one warning, normal pages.
    let _empty = {
        let old = std::fs::read_to_string(NR_HUGEPAGES).unwrap().trim().to_string();
        std::fs::write(NR_HUGEPAGES, "0").unwrap();
        HugePool { old }
    };
    let out = run_probe(&env, &format!("mount -t hugetlbfs none '{mnt_s}'"), &ring_dir, "no-pages");
    out.assert_success();
    let logs = new_logs(&env, &mut seen);
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("VMA_MEM_ALLOC_TYPE=2")).collect();
    assert_eq!(warnings.len(), 1, "want one warning:\n{logs}");
    assert!(warnings[0].contains("no free huge pages"), "{}", warnings[0]);
}

#[test]
fn rx_bufs_limits_rings_and_the_rest_stay_on_the_kernel_path() {
    // VMA_RX_BUFS=128 with VMA_RX_WRE=64 and a ring per socket: two sockets get rings, the third
    // is served by the kernel, and all three receive everything.
    let env = ShmEnv::new("shm-rxbufs");
    let probe = r#"
import socket
rs = []
for _ in range(3):
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 0)); rs.append(r)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for r in rs:
    for i in range(50):
        s.sendto(b"%d" % i, r.getsockname())
for r in rs:
    assert [r.recv(100) for _ in range(50)] == [b"%d" % i for i in range(50)]
print("ok")
"#;
    let script = env.cx.write_file("rxbufs.py", probe.as_bytes());
    let mut cmd = env.accel(
        python3(),
        &[("VMA_RX_BUFS", "128"), ("VMA_RX_WRE", "64"), ("VMA_RING_ALLOCATION_LOGIC_RX", "10")],
    );
    cmd.arg(&script);
    let out = env.run(cmd, "rxbufs");
    out.assert_success();
    assert!(out.stdout_text().contains("ok"));
    let logs: String = env.cx.logs().files.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(logs.matches("shm ring ring-").count(), 2, "two sockets have rings:\n{logs}");
    assert!(logs.contains("VMA_RX_BUFS=128: only 0 packet buffers left"), "the third socket says why:\n{logs}");
}
