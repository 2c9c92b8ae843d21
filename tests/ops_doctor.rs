//! `accel doctor`: the machine's findings (kernel, AF_XDP, capabilities, memlock, huge pages,
//! bpffs, interfaces with XDP mode and queues), the configuration in force and its bad values,
//! rules-file matches for an address, and what running accelerated programs do with that
//! address; every problem comes with the command that fixes it; `--json` parses.

mod common;

use common::*;

/// The findings of `accel doctor --json ARGS` with `env`: (exit code, document).
fn doctor(env: &OpsEnv, vars: &[(&str, &str)], args: &[&str]) -> (i32, JsonDoc) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let mut cmd = env.tool(&all);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = run(cmd, env.shm.cx.dir(), "doctor", None);
    let code = out.status.code().expect("doctor exited normally");
    (code, JsonDoc::parse(&out.stdout_text(), env.shm.cx.dir()))
}

/// The findings as (severity, topic, text, fix).
fn findings(doc: &JsonDoc) -> Vec<(String, String, String, String)> {
    (0..doc.len("findings"))
        .map(|i| {
            let g = |k: &str| doc.s(&format!("findings.{i}.{k}")).to_string();
            (g("severity"), g("topic"), g("text"), g("fix"))
        })
        .collect()
}

#[track_caller]
fn find<'a>(fs: &'a [(String, String, String, String)], topic: &str, needle: &str) -> &'a (String, String, String, String) {
    fs.iter()
        .find(|f| f.1 == topic && f.2.contains(needle))
        .unwrap_or_else(|| panic!("no {topic} finding with {needle:?} in {fs:#?}"))
}

/// A healthy set-up (ACCEL_SHM=1 given, nothing wrong in the configuration, the question is not about
/// a NIC): every machine topic is reported, nothing is a problem, exit 0; every finding that is
/// a problem anywhere carries a fix.
#[test]
fn doctor_reports_every_topic() {
    let env = OpsEnv::new("ops_doctor_topics");
    let (code, doc) = doctor(&env, &[("ACCEL_SHM", "1")], &[]);
    let fs = findings(&doc);
    for topic in ["config", "shm", "rules", "kernel", "af_xdp", "caps", "memlock", "hugepages", "bpffs", "iface"] {
        assert!(fs.iter().any(|f| f.1 == topic), "no {topic} finding in {fs:#?}");
    }
    let kernel = find(&fs, "kernel", "Linux ");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(kernel.2.contains(release.trim()), "{kernel:?}");
    // Every interface, with its queues and XDP mode.
    let lo = find(&fs, "iface", "lo: ");
    assert!(lo.2.contains("rx /") && lo.2.contains("tx queues") && lo.2.contains("XDP: "), "{lo:?}");
    find(&fs, "config", "ACCEL_SHM=1 (ACCEL_SHM)");
    assert_eq!(code, 0, "problems on a healthy set-up: {fs:#?}");
    assert_eq!(doc.s("ok"), "true");
    for f in &fs {
        assert!(["ok", "info", "warn", "error"].contains(&f.0.as_str()), "{f:?}");
        if f.0 == "warn" || f.0 == "error" {
            assert_ne!(f.3, "null", "a problem without a fix: {f:?}");
        }
    }

    // The datapath is on by default.
    let (code, doc) = doctor(&env, &[], &[]);
    let fs = findings(&doc);
    assert_eq!(find(&fs, "shm", "same-host bypass on").0, "ok");
    find(&fs, "config", "in force: all defaults");
    assert_eq!(code, 0, "{fs:#?}");

    // ACCEL_SHM=0: no datapath is on, which is a problem with its fix.
    let (code, doc) = doctor(&env, &[("ACCEL_SHM", "0")], &[]);
    let fs = findings(&doc);
    let shm = find(&fs, "shm", "same-host bypass off (ACCEL_SHM=0)");
    assert_eq!(shm.0, "warn");
    assert!(shm.3.starts_with("unset ACCEL_SHM"), "{shm:?}");
    assert_eq!(code, 1);

    // An interface that does not exist.
    let (code, doc) = doctor(&env, &[("ACCEL_SHM", "1")], &["--iface", "nosuch0"]);
    let fs = findings(&doc);
    let f = find(&fs, "iface", "nosuch0: no such interface");
    assert_eq!(f.0, "error");
    assert_eq!(code, 1);
}

/// Bad values in the configuration and in the rules file are errors with their fixes; the
/// rules' decision for an address is shown per role.
#[test]
fn doctor_config_and_rules() {
    let env = OpsEnv::new("ops_doctor_config");
    let (code, doc) = doctor(&env, &[("ACCEL_SHM", "1"), ("VMA_RX_BUFS", "lots")], &[]);
    let fs = findings(&doc);
    let f = find(&fs, "config", "VMA_RX_BUFS=\"lots\"");
    assert_eq!(f.0, "error");
    assert_eq!(f.3, "unset VMA_RX_BUFS");
    assert!(f.2.contains("accepted: "), "{f:?}");
    assert_eq!(code, 1);
    assert_eq!(doc.s("ok"), "false");

    let port = free_port();
    let rules = env.shm.cx.write_file(
        "rules.conf",
        format!("use os udp_receiver 127.0.0.1:{port}\nuse sideways udp_sender *:*\n").as_bytes(),
    );
    let rules = rules.to_string_lossy().into_owned();
    let addr = format!("127.0.0.1:{port}");
    let (code, doc) = doctor(&env, &[("ACCEL_SHM", "1"), ("ACCEL_CONFIG_FILE", &rules)], &["--addr", &addr]);
    let fs = findings(&doc);
    let recv = find(&fs, "rules", &format!("a socket bound to {addr} (udp_receiver)"));
    assert!(recv.2.contains("-> kernel") && recv.2.contains("rules line 1"), "{recv:?}");
    let send = find(&fs, "rules", &format!("a first send to {addr} (udp_sender)"));
    assert!(send.2.contains("-> accel"), "{send:?}");
    let bad = find(&fs, "rules", "sideways");
    assert_eq!(bad.0, "error");
    assert_eq!(bad.3, format!("edit {rules}"));
    find(&fs, "addr", "is an address of this host");

    // An address elsewhere (only looked up: `ip route get`, nothing is sent): the AF_XDP
    // datapath's, off by default (a problem with its fix), on with ACCEL_XDP=1.
    let remote = "192.0.2.1:5000";
    let (_, doc) = doctor(&env, &[], &["--addr", remote]);
    let fs = findings(&doc);
    let f = find(&fs, "addr", "192.0.2.1 is not on this host");
    assert_eq!(f.0, "warn", "{f:?}");
    assert!(f.2.contains("AF_XDP datapath could bypass") && f.3.starts_with("export ACCEL_XDP=1"), "{f:?}");
    let (_, doc) = doctor(&env, &[("ACCEL_XDP", "1")], &["--addr", remote]);
    let fs = findings(&doc);
    let f = find(&fs, "addr", "192.0.2.1 is not on this host");
    assert_eq!(f.0, "ok", "{f:?}");
    assert!(f.2.contains("the AF_XDP datapath (ACCEL_XDP=1) serves its UDP"), "{f:?}");
    assert_eq!(code, 1, "the bad rules line is a problem");
}

/// With a running accelerated `nc -u -l`, `doctor --addr` says that socket is offloaded and
/// why; once nc is killed (no exit clean-up) its stale block is a problem whose fix is
/// `accel stat`, which removes it.
#[test]
fn doctor_live_socket_and_stale_block() {
    let env = OpsEnv::new("ops_doctor_live");
    let nc = which("nc");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = env.accel(&nc, &[]);
    cmd.args(["-d", "-u", "-l", "127.0.0.1", &port.to_string()]);
    let mut server = env.shm.spawn(cmd, "server");
    env.shm.wait_shm_endpoint(&mut server, &addr);
    let (_, doc) = doctor(&env, &[("ACCEL_SHM", "1")], &["--addr", &addr]);
    let fs = findings(&doc);
    let live = find(&fs, "live", &format!("pid {} (nc)", server.pid));
    assert_eq!(live.0, "ok", "{live:?}");
    assert!(live.2.contains(&format!("bound to {addr}")) && live.2.contains("offloaded yes"), "{live:?}");
    find(&fs, "shm", "1 accelerated processes publish stats");

    server.kill();
    let (code, doc) = doctor(&env, &[("ACCEL_SHM", "1")], &[]);
    let fs = findings(&doc);
    let stale = find(&fs, "shm", "1 stats blocks of processes that died");
    assert_eq!(stale.0, "warn");
    assert!(stale.3.starts_with("accel stat"), "{stale:?}");
    assert_eq!(code, 1);
    env.run_tool(&["stat"], "stat-clean").assert_success();
    assert!(!env.stats_file(server.pid).exists());
    let (_, doc) = doctor(&env, &[("ACCEL_SHM", "1")], &["--addr", &addr]);
    let fs = findings(&doc);
    assert!(!fs.iter().any(|f| f.2.contains("stats blocks of processes that died")), "{fs:#?}");
    find(&fs, "live", "no running accelerated process");
}
