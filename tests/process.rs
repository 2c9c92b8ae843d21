//! Process-level transparency: fork, exec chains, scrubbed environments, ACCEL_ENABLE=0 and the
//! `accel run` launcher.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// A server `nc -l` receives `data` from a client command built by `client(cx, port)` (its
/// stdin is the data file). Returns what the server received.
fn nc_receive_from(cx: &Ctx, data: &[u8], client: &dyn Fn(&Ctx, u16) -> Command) -> Vec<u8> {
    let nc = which("nc");
    let input = cx.write_file("in.bin", data);
    let port = free_port();
    let mut cmd = cx.command(&nc);
    cmd.args(["-d", "-l", "127.0.0.1", &port.to_string()]);
    let mut server = cx.spawn(cmd, "server", None);
    wait_tcp_listen(port, &mut server);
    let out = cx.run(client(cx, port), "client", Some(&input));
    out.assert_success();
    let st = server.wait_timeout(CHILD_TIMEOUT);
    assert!(st.success(), "nc server: {st}\n{}", server.stderr_text());
    server.stdout_bytes()
}

/// Asserts the transfer worked in both runs and the preloaded run loaded the library into the
/// nc server and the nc client (two nc processes).
fn assert_nc_transfer(t: &Twice<Vec<u8>>, data: &[u8]) {
    assert_same_bytes("plain transfer", &t.plain, data);
    assert_same_bytes("preloaded transfer", &t.preload, data);
    t.logs.assert_loaded_into(&which("nc"), 2);
}

/// A forking server (socat fork + EXEC:cat) echoes for three sequential clients; with the library,
/// every exec'd cat (a new pid, so its own log file) has the library loaded.
#[test]
fn forking_server_socat_exec_cat() {
    let socat = which("socat");
    let nc = which("nc");
    let clients: Vec<Vec<u8>> = (0..3)
        .map(|i| random_bytes(100_000 + i, 20 + i as u64))
        .collect();
    let t = run_twice("fork_socat", |cx| {
        let port = free_port();
        let mut cmd = cx.command(&socat);
        cmd.args([
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
            "EXEC:cat",
        ]);
        let mut server = cx.spawn(cmd, "server", None);
        wait_tcp_listen(port, &mut server);
        let mut echoed = Vec::new();
        for (i, data) in clients.iter().enumerate() {
            let input = cx.write_file(&format!("in{i}.bin"), data);
            let mut cmd = cx.command(&nc);
            cmd.args(["-N", "127.0.0.1", &port.to_string()]);
            let out = cx.run(cmd, &format!("client{i}"), Some(&input));
            out.assert_success();
            echoed.push(out.stdout);
        }
        server.stop();
        echoed
    });
    for (i, data) in clients.iter().enumerate() {
        assert_same_bytes(&format!("plain client {i} echo"), &t.plain[i], data);
        assert_same_bytes(&format!("preloaded client {i} echo"), &t.preload[i], data);
    }
    t.logs.assert_loaded_into(&socat, 1);
    t.logs.assert_loaded_into(&which("cat"), 3);
    t.logs.assert_loaded_into(&nc, 3);
}

/// `sh -c 'nc ...'`: the nc started by the shell has the library (and so does the shell).
#[test]
fn exec_chain_sh_c_nc() {
    let sh = which("sh");
    let nc = which("nc");
    let data = random_bytes(1 << 20, 30);
    let t = run_twice("exec_chain_sh", |cx| {
        nc_receive_from(cx, &data, &|cx, port| {
            let mut cmd = cx.command(&sh);
            cmd.arg("-c").arg(format!(
                "{} -N 127.0.0.1 {port}; echo done >&2",
                nc.display()
            ));
            cmd
        })
    });
    assert_nc_transfer(&t, &data);
    t.logs.assert_loaded_into(&sh, 1);
}

/// The shell removes LD_PRELOAD and ACCEL_* from its environment before starting nc: the library
/// puts them back at exec, so nc still has the library and logs into the test's directory.
#[test]
fn exec_chain_sh_unsets_preload() {
    let sh = which("sh");
    let nc = which("nc");
    let data = random_bytes(1 << 20, 31);
    let t = run_twice("exec_chain_unset", |cx| {
        nc_receive_from(cx, &data, &|cx, port| {
            let mut cmd = cx.command(&sh);
            cmd.arg("-c").arg(format!(
                "unset LD_PRELOAD ACCEL_LOG_LEVEL ACCEL_LOG_FILE; {} -N 127.0.0.1 {port}",
                nc.display()
            ));
            cmd
        })
    });
    assert_nc_transfer(&t, &data);
}

/// `env -i nc ...`: an empty environment still gets the library.
#[test]
fn scrubbed_env_env_i() {
    let env = which("env");
    let nc = which("nc");
    let data = random_bytes(1 << 20, 32);
    let t = run_twice("scrubbed_env_i", |cx| {
        nc_receive_from(cx, &data, &|cx, port| {
            let mut cmd = cx.command(&env);
            cmd.arg("-i")
                .arg(&nc)
                .args(["-N", "127.0.0.1", &port.to_string()]);
            cmd
        })
    });
    assert_nc_transfer(&t, &data);
    t.logs.assert_loaded_into(&env, 1);
}

/// Runs `python3 <script> <nc> -N 127.0.0.1 <port>` as the client.
fn python_exec_client(script_name: &str, script: &'static str, seed: u64) {
    let py = python3();
    let nc = which("nc");
    let data = random_bytes(1 << 20, seed);
    let t = run_twice(script_name, |cx| {
        let script_path = write_script(cx.dir(), script_name, script);
        nc_receive_from(cx, &data, &|cx, port| {
            let mut cmd = cx.command(&py);
            cmd.arg(&script_path)
                .arg(&nc)
                .args(["-N", "127.0.0.1", &port.to_string()]);
            cmd
        })
    });
    assert_nc_transfer(&t, &data);
    t.logs.assert_loaded_into(&py, 1);
}

/// python3 os.execve(nc, args, {}): exec with an empty environment.
#[test]
fn scrubbed_env_python_execve() {
    python_exec_client(
        "execve_empty_env.py",
        "import os, sys\nos.execve(sys.argv[1], sys.argv[1:], {})\n",
        33,
    );
}

/// python3 subprocess.run(..., env={}): fork + exec with an empty environment.
#[test]
fn scrubbed_env_python_subprocess() {
    python_exec_client(
        "subprocess_empty_env.py",
        "import subprocess, sys\nsys.exit(subprocess.run(sys.argv[1:], env={}).returncode)\n",
        34,
    );
}

/// python3 os.posix_spawn(nc, args, {}): glibc posix_spawn with an empty environment.
#[test]
fn scrubbed_env_python_posix_spawn() {
    python_exec_client(
        "posix_spawn_empty_env.py",
        "import os, sys\n\
         pid = os.posix_spawn(sys.argv[1], sys.argv[1:], {})\n\
         _, status = os.waitpid(pid, 0)\n\
         sys.exit(os.waitstatus_to_exitcode(status))\n",
        35,
    );
}

const UDP_SELF_PY: &str = r#"
import socket
mapped = any("libaccel" in line for line in open("/proc/self/maps"))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.sendto(b"ping", s.getsockname())
data, addr = s.recvfrom(100)
print("mapped" if mapped else "not-mapped", data.decode(), addr[1] == c.getsockname()[1])
"#;

fn udp_self_scenario(cx: &Ctx) -> String {
    let script = write_script(cx.dir(), "udp_self.py", UDP_SELF_PY);
    let mut cmd = cx.command(python3());
    cmd.arg(&script);
    let out = cx.run(cmd, "udp_self", None);
    out.assert_success();
    out.stdout_text().trim().to_string()
}

/// ACCEL_ENABLE=0: the library is mapped into the process but decides nothing `-> accel`; with
/// the variable unset the same program does get `-> accel` decisions (control).
#[test]
fn accel_enable_0_disables_decisions() {
    let (plain, _) = run_mode("enable0", Mode::Plain, &udp_self_scenario);
    assert_eq!(plain, "not-mapped ping True");

    let (on, on_logs) = run_mode("enable1", Mode::Preload, &udp_self_scenario);
    assert_eq!(on, "mapped ping True");
    on_logs.assert_loaded_into(&python3(), 1);
    on_logs.assert_decision(&["udp bind", "-> accel"]);

    let cx = Ctx::new(Mode::Preload, "enable0").with_env("ACCEL_ENABLE", "0");
    let (off, off_logs) = run_ctx("enable0", &cx, &udp_self_scenario);
    assert_eq!(off, "mapped ping True");
    let accel: Vec<&str> = off_logs
        .decisions()
        .into_iter()
        .filter(|l| l.contains("-> accel"))
        .collect();
    assert!(
        accel.is_empty(),
        "ACCEL_ENABLE=0 but the library decided to accelerate:\n{}",
        accel.join("\n")
    );
    off_logs.assert_no_errors();
}

/// The `accel` binary built by cargo for this package.
fn accel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_accel"))
}

/// `accel run -e ... -- python3 script`: the launcher preloads the library and passes -e variables.
#[test]
fn accel_run_launcher() {
    let cx = Ctx::new(Mode::Plain, "accel_run");
    let script = write_script(cx.dir(), "udp_self.py", UDP_SELF_PY);
    let mut cmd = cx.command(accel_bin());
    // The library under test (the launcher would find the same one next to itself by default).
    cmd.env("ACCEL_LIB", lib_path());
    cmd.args(["run", "-e", "ACCEL_LOG_LEVEL=debug", "-e"])
        .arg(format!("ACCEL_LOG_FILE={}", cx.log_pattern()))
        .arg("--")
        .arg(python3())
        .arg(&script);
    let out = cx.run(cmd, "accel_run", None);
    out.assert_success();
    assert_eq!(out.stdout_text().trim(), "mapped ping True");
    let logs = cx.logs();
    logs.assert_loaded_into(&python3(), 1);
    logs.assert_decision(&["udp bind", "-> accel"]);
    logs.assert_no_errors();
}

/// `accel run --check` prints the configuration and succeeds.
#[test]
fn accel_run_check() {
    let cx = Ctx::new(Mode::Plain, "accel_check");
    let mut cmd = cx.command(accel_bin());
    cmd.args(["run", "--check"]);
    let out = cx.run(cmd, "accel_check", None);
    out.assert_success();
    assert!(
        !out.stdout_text().trim().is_empty(),
        "accel run --check printed nothing\nstderr:\n{}",
        out.stderr
    );
}

/// Runs `exec_probe METHOD` plain and preloaded for each method; the started copy must report no
/// library in the plain run and the library with its variables in the preloaded run, although the
/// parent scrubbed its environment. Collects every failing method into one message.
fn exec_probe_methods(tag: &str, methods: &[&str]) {
    let build = TempDir::new(&format!("{tag}-build"));
    let exe = compile_probe("exec_probe.c", build.path());
    let mut failures = Vec::new();
    for m in methods {
        let scenario = |cx: &Ctx| {
            let mut cmd = cx.command(&exe);
            cmd.arg(m);
            let out = cx.run(cmd, m, None);
            format!(
                "{} ({}{})",
                out.stdout_text().trim(),
                out.status,
                if out.stderr.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", out.stderr.trim())
                }
            )
        };
        let (plain, _) = run_mode(m, Mode::Plain, &scenario);
        let (preload, logs) = run_mode(m, Mode::Preload, &scenario);
        let plain_ok = "report mapped=0 preload=0 level=0 logfile=0 (exit status: 0)";
        let preload_ok = "report mapped=1 preload=1 level=1 logfile=1 (exit status: 0)";
        let loaded = logs
            .files
            .iter()
            .flat_map(|f| f.text.lines())
            .filter(|l| l.contains("loaded into exec_probe"))
            .count();
        if plain != plain_ok {
            failures.push(format!("  {m}: plain run: {plain}"));
        } else if preload != preload_ok || loaded < 2 {
            failures.push(format!(
                "  {m}: preloaded run: {preload}; `loaded into exec_probe` logged {loaded} time(s), \
                 expected 2 (parent and started copy)"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the started program lost the library after the parent scrubbed its environment:\n{}",
        failures.join("\n")
    );
}

/// exec* with an empty/scrubbed environment: execve (empty envp, NULL envp, scrubbed environ),
/// execv after clearenv(), execvp/execl/execlp after unsetenv, execvpe/execle/fexecve with an
/// empty envp.
#[test]
fn exec_family_scrubbed_env_keeps_library() {
    exec_probe_methods(
        "exec_family",
        &[
            "execve_empty",
            "execve_null_envp",
            "execve_scrubbed_environ",
            "execv_clearenv",
            "execvp_unsetenv",
            "execvpe_empty",
            "execl_unsetenv",
            "execlp_unsetenv",
            "execle_empty",
            "fexecve_empty",
        ],
    );
}

/// fork/vfork + execve and posix_spawn/posix_spawnp with an empty or scrubbed environment.
#[test]
fn spawn_family_scrubbed_env_keeps_library() {
    exec_probe_methods(
        "spawn_family",
        &[
            "fork_execve_empty",
            "vfork_execve_empty",
            "posix_spawn_empty",
            "posix_spawnp_empty",
            "posix_spawn_scrubbed_environ",
        ],
    );
}

/// system() and popen() after unsetenv("LD_PRELOAD", "ACCEL_LOG_*"): glibc starts the shell with
/// its internal posix_spawn, which no PLT hook of execve/posix_spawn sees.
#[test]
fn system_popen_scrubbed_env_keeps_library() {
    exec_probe_methods("shell_family", &["system_unsetenv", "popen_unsetenv"]);
}

/// syscall(SYS_execve, path, argv, empty envp): the raw system call through syscall().
#[test]
fn raw_syscall_execve_keeps_library() {
    exec_probe_methods("syscall_execve", &["syscall_execve_empty"]);
}
