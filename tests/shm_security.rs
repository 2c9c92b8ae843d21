//! Isolation of the shm datapath: another user can neither read nor open root's registry and
//! still reaches root's sockets through the kernel; and a registry entry of one network
//! namespace must not capture traffic sent inside another one.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A system user made for one test (`useradd -M`), deleted (`userdel`) when dropped — also when
/// the test fails — together with whatever registry it left in /dev/shm.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

static USER_SEQ: AtomicU32 = AtomicU32::new(0);

impl TestUser {
    fn new() -> TestUser {
        let name = format!(
            "accel-t-{}-{}",
            std::process::id(),
            USER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(which("useradd"))
            .args(["-M", "-s", "/usr/sbin/nologin", &name])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut user = TestUser {
            name: name.clone(),
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            let out = Command::new(which("id"))
                .args([flag, &name])
                .output()
                .expect("run id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("id {flag} {name}: {out:?}"))
        };
        user.uid = id("-u");
        user.gid = id("-g");
        assert!(
            user.uid != 0 && user.gid != 0,
            "{name}: uid {} gid {}",
            user.uid,
            user.gid
        );
        user
    }

    /// `setpriv` arguments that run the rest of a command line as this user.
    fn setpriv_args(&self) -> Vec<String> {
        vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
            "--".into(),
        ]
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.uid != 0 {
            let _ = std::fs::remove_dir_all(shm_dir(self.uid));
        }
        let ok = Command::new("userdel")
            .arg(&self.name)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("WARNING: userdel {} failed", self.name);
        }
    }
}

/// Root runs an accelerated receiver; a second user can neither list nor open root's registry
/// or its files (EACCES); an accelerated sender running as that user delivers 2000 datagrams to
/// root's port through the kernel (dual path), intact, without crashing, with its own private
/// registry /dev/shm/accel-<uid2> (0700).
#[test]
fn shm_other_user_cannot_open_registry_and_uses_kernel_path() {
    let env = ShmEnv::new("shm_security_user");
    let user = TestUser::new();
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    let n = 2000u32;
    let ns = n.to_string();
    let mut receiver = env.spawn(
        env.probe(
            true,
            &[],
            &[
                "recv", "--bind", &a, "--count", &ns, "--ack", "32", "--strict",
            ],
        ),
        "receiver-root",
    );
    let line = env.wait_shm_endpoint(&mut receiver, &a);
    let ring = line
        .split(": shm ring ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("ring name")
        .to_string();
    wait_stdout_line(&mut receiver, "# ready", LISTEN_DEADLINE);
    let root_dir = shm_dir(0);
    let ring_path = root_dir.join(&ring);
    // Endpoint files are named udp-<netns inode>-<ip>-<port>.
    let suffix = format!("-127.0.0.1-{port}");
    let ep_path = std::fs::read_dir(&root_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("udp-") && name.ends_with(&suffix)
        })
        .unwrap_or_else(|| root_dir.join(format!("udp-?{suffix}")));
    assert!(
        ring_path.exists() && ep_path.exists(),
        "{ring_path:?} / {ep_path:?} missing"
    );
    let mode = std::fs::metadata(&root_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{} has mode {mode:o}", root_dir.display());

    // What the other user can do with root's registry.
    let paths = format!(
        "{},{},{}",
        root_dir.display(),
        ring_path.display(),
        ep_path.display()
    );
    let mut cmd = env.plain(which("setpriv"));
    cmd.args(user.setpriv_args());
    cmd.arg(python3())
        .arg(repo_root().join("tests/probes/shm_udp.py"))
        .args(["perm", "--paths", &paths]);
    let perm = env.run(cmd, "perm-user2");
    perm.assert_success();
    let j = probe_json(&perm.stdout_text());
    assert_eq!(j.num("uid"), Some(user.uid as f64), "{j:?}");
    let results = match j.get("results") {
        Some(Json::Obj(m)) => m.clone(),
        _ => panic!("no results: {j:?}"),
    };
    for (p, r) in &results {
        let errno_of = |k: &str| r.num(k);
        if *p == root_dir.display().to_string() {
            assert_eq!(
                errno_of("listdir_errno"),
                Some(libc::EACCES as f64),
                "user {} could list {p}: {r:?}",
                user.uid
            );
        } else {
            assert_eq!(
                errno_of("open_errno"),
                Some(libc::EACCES as f64),
                "user {} could open {p} for reading: {r:?}",
                user.uid
            );
            assert_eq!(
                errno_of("open_rw_errno"),
                Some(libc::EACCES as f64),
                "user {} could open {p} for writing: {r:?}",
                user.uid
            );
        }
    }

    // An accelerated sender as the other user, to root's port.
    let user_logs = env.cx.path("logs-user2");
    std::fs::create_dir_all(&user_logs).unwrap();
    std::os::unix::fs::chown(&user_logs, Some(user.uid), Some(user.gid)).unwrap();
    let user_log_pattern = format!("{}/accel.%d.log", user_logs.display());
    let before = env.ns.in_datagrams();
    // setpriv runs plain; the library is put under python by `env`, already as the other user
    // (so the per-pid log file is that user's too).
    let mut cmd = env.plain(which("setpriv"));
    cmd.args(user.setpriv_args());
    cmd.arg(which("env"))
        .arg(format!("LD_PRELOAD={}", env.cx.lib().display()))
        .arg("ACCEL_SHM=1")
        .arg("ACCEL_LOG_LEVEL=debug")
        .arg(format!("ACCEL_LOG_FILE={user_log_pattern}"));
    cmd.arg(python3())
        .arg(repo_root().join("tests/probes/shm_udp.py"))
        .args([
            "send",
            "--dest",
            &a,
            "--count",
            &ns,
            "--window",
            "32",
            "--report-registry",
        ]);
    let sender = env.spawn(cmd, "sender-user2");
    let sender_pid = sender.pid;
    let sender = sender.finish();
    let st = receiver.wait_timeout(CHILD_TIMEOUT);
    let delta = env.ns.in_datagrams() - before;
    sender.assert_success();
    let s = probe_json(&sender.stdout_text());
    let r = probe_json(&receiver.stdout_text());
    assert!(st.success(), "root's receiver: {st}: {r:?}");
    assert_eq!(r.num("received"), Some(n as f64), "{r:?}");
    assert_eq!(r.num("bad"), Some(0.0), "{r:?}");
    assert_eq!(r.num("dups"), Some(0.0), "{r:?}");
    assert!(
        delta >= n as u64,
        "InDatagrams +{delta} < {n}: the other user's datagrams should all be the kernel's"
    );
    let user_dir = shm_dir(user.uid).display().to_string();
    let reg = s
        .get("registry")
        .unwrap_or_else(|| panic!("no registry report: {s:?}"));
    assert_eq!(
        reg.get("path"),
        Some(&Json::Str(user_dir.clone())),
        "{reg:?}"
    );
    assert_eq!(
        reg.get("mode"),
        Some(&Json::Str("700".into())),
        "the other user's registry {user_dir}: {reg:?}"
    );
    assert_eq!(reg.num("uid"), Some(user.uid as f64), "{reg:?}");
    let user_log = std::fs::read_dir(&user_logs)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        prog_names(&python3())
            .iter()
            .any(|n| user_log.contains(&format!("loaded into {n} "))),
        "the library was not loaded into the other user's python:\n{user_log}"
    );
    let ring_prefix = format!("ring-{}-", sender_pid);
    assert!(
        matches!(reg.get("files"), Some(Json::Arr(f)) if f.iter().any(|x| matches!(x, Json::Str(n) if n.starts_with(&ring_prefix)))),
        "the other user's sender has no ring in its own registry: {reg:?}"
    );
    eprintln!(
        "other user {}: registry {reg:?}, InDatagrams +{delta} for {n}",
        user.uid
    );
    let left = shm_files_of(user.uid, &env.pids(), &[]);
    assert!(left.is_empty(), "left in {user_dir}: {left:?}");
    env.assert_no_leftovers(&[port]);
}

/// Two network namespaces share /dev/shm. An accelerated receiver on 127.0.0.1:P in namespace
/// B must not receive what an accelerated sender in namespace A sends to 127.0.0.1:P — in A
/// nothing listens on P, and the kernel would deliver nothing anywhere.
#[test]
fn shm_registry_does_not_leak_across_network_namespaces() {
    let env = ShmEnv::new("shm_netns_isolation");
    let other = NetNs::new();
    let port = free_port();
    let a = format!("127.0.0.1:{port}");
    // The receiver, in the other namespace.
    let mut cmd = env.cx.command(python3());
    cmd.env("ACCEL_SHM", "1");
    other.enter_before_exec(&mut cmd);
    cmd.arg(repo_root().join("tests/probes/shm_udp.py")).args([
        "recv",
        "--bind",
        &a,
        "--stop",
        "--ids",
        "0",
        "--deadline",
        "20",
    ]);
    let mut receiver = env.spawn(cmd, "receiver-other-ns");
    wait_stdout_line(&mut receiver, "# ready", LISTEN_DEADLINE);
    env.wait_shm_endpoint(&mut receiver, &a);
    // The sender, in this test's namespace, where nothing is bound to the port.
    let sender = env.run(
        env.probe(true, &[], &["send", "--dest", &a, "--count", "100"]),
        "sender",
    );
    sender.assert_success();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = std::time::Instant::now();
    while receiver.try_exited().is_none() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "receiver did not stop"
        );
        other.send_udp(&a, b"STOP", 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let j = probe_json(&receiver.stdout_text());
    assert_eq!(
        j.num("received"),
        Some(0.0),
        "a receiver in namespace {} got datagrams a sender in namespace {} sent to \
         127.0.0.1:{port} of its own namespace (the shm registry is shared across network \
         namespaces): {j:?}",
        other.name,
        env.ns.name
    );
    env.assert_no_leftovers(&[port]);
}
