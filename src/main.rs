//! `accel`: runs a program with `libaccel.so` preloaded, shows the configuration it would get,
//! and looks at running accelerated processes.
//!
//! ```text
//! accel run [--profile P] [-e KEY=VAL]... [--lib PATH] [--] CMD ARGS...
//! accel run --check [--profile P] [-e KEY=VAL]... [CMD ARGS...]
//! accel stat [-p PID] [-i SECONDS [-n COUNT]] [-v]... [--json] [-z]
//! accel doctor [--addr IP:PORT] [--iface IF] [--program NAME] [--json]
//! accel capture -p PID [-w FILE] [-c COUNT] [-t SECONDS]
//! ```

mod args;
mod capture;
mod check;
mod doctor;
mod json;
mod preload;
mod stat;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use args::{Command, RunArgs};
use preload::LibError;

const USAGE: &str = "\
Usage: accel <command> [options]

Commands:
  run [options] [--] CMD [ARGS...]
                      Run CMD with libaccel.so preloaded (the process keeps accel's pid)
  run --check [options] [CMD]
                      Print the configuration CMD would get; do not run it
  stat [-p PID] [-i SECONDS] [-v] [--json] [-z]
                      Accelerated processes and their sockets: offloaded or not and why,
                      counters, drops, rings (accel stat -h for more)
  doctor [--addr IP:PORT] [--iface IF]
                      What on this machine stands between a program and acceleration,
                      each finding with the command that fixes it; exit 1 on a problem
  capture -p PID [-w FILE] [-c COUNT] [-t SECONDS]
                      The datagrams PID moves through shared memory, as pcap

Options:
  -h, --help          Show this help (accel run --help: help for run)
  -V, --version       Show the version
";

const RUN_USAGE: &str = "\
Usage: accel run [options] [--] CMD [ARGS...]
       accel run --check [options] [[--] CMD [ARGS...]]

Runs CMD with LD_PRELOAD naming libaccel.so (first, before any LD_PRELOAD already set).

Options:
  -p, --profile P     Set ACCEL_PROFILE=P: default, latency, ultra-latency or throughput
  -e, --env KEY=VAL   Set KEY=VAL in CMD's environment (repeatable; later settings win)
      --lib PATH      Preload PATH instead of the libaccel.so found next to accel
                      (environment: ACCEL_LIB)
      --check         Print the library, every setting with its source, the rules in force
                      and any warnings, as the library would see them; exit 1 on a
                      warning or when libaccel.so is not found
  -h, --help          Show this help
      --              End of options (needed only when CMD starts with '-')

libaccel.so is looked for next to the accel executable, then in ../lib and ../lib/accel.
";

const STAT_USAGE: &str = "\
Usage: accel stat [-p PID] [-v]... [--json]
       accel stat -i SECONDS [-n COUNT] [-p PID] [-v]... [--json]
       accel stat -z [-p PID]

Lists this user's accelerated processes (those with a datapath on: ACCEL_SHM, on by default) and
their sockets: fd, addresses, whether the socket is offloaded and why (the decision and its
reason), packets offloaded (through the socket's VI) and through the kernel, drops. Blocks left by processes
that died are reported as stale and removed.

Options:
  -p, --pid PID       Only this process (exit 1 if it publishes no stats)
  -v, --verbose       More detail: -v bytes, drops by cause, poll hits/misses, rings and their
                      fill; -vv also the configuration in force
  -i, --interval S    Refresh every S seconds, showing per-interval rates (Ctrl-C to stop)
  -n, --count N       With -i: stop after N refreshes
      --json          Machine-readable output (with -i: one JSON document per line)
  -z, --zero          Zero the counters (of PID, or of every process)
  -h, --help          Show this help

Stats blocks are in /dev/shm/accel-<uid>/stats-<pid> (ACCEL_SHM_DIR moves them).
";

const DOCTOR_USAGE: &str = "\
Usage: accel doctor [--addr IP:PORT] [--iface IF] [--program NAME] [--json]

Checks what stands between a program and acceleration on this machine: the configuration in
the environment (ACCEL_*/VMA_*) and its bad values, the rules file and what it decides for
--addr, the shared-memory registry, the kernel and AF_XDP support, capabilities, the memlock
limit, huge pages, the bpf filesystem, and each interface's XDP mode and queues. Each finding has
a severity (ok, info, warn, error) and, for a problem, the one command that fixes it.
NIC prerequisites count as problems only for --iface or an --addr that is not on this host.

Options:
      --addr IP:PORT  What the rules decide for this address, which datapath could serve it,
                      and what running accelerated programs' sockets on it do now
      --iface IF      Check only this interface, as the one to accelerate
      --program NAME  Match the rules file's application-id sections for program NAME
      --json          Machine-readable output
  -h, --help          Show this help

Exit status: 0 when nothing is wrong (no warn or error), 1 otherwise.
";

const CAPTURE_USAGE: &str = "\
Usage: accel capture -p PID [-w FILE] [-c COUNT] [-t SECONDS]

Captures the datagrams process PID sends and receives through shared memory (which tcpdump on
an interface cannot see), with synthesized IPv4/UDP headers. Payloads longer than 1984 bytes are
truncated (the pcap record keeps the original length).

Options:
  -p, --pid PID       The accelerated process (required)
  -w, --write FILE    Write a pcap file (LINKTYPE_IPV4; '-' = stdout) for tcpdump -r / tshark -r;
                      without -w, one line per datagram on stdout
  -c, --count N       Stop after N datagrams
  -t, --time S        Stop after S seconds
  -h, --help          Show this help

Stops on Ctrl-C, at the count or time, or when the process exits.
";

/// Exit status of a usage error or a missing library.
const EXIT_USAGE: u8 = 2;
/// Exit status when the command cannot be executed (as the shell's "command not found").
const EXIT_EXEC: u8 = 127;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match args::parse(argv.iter().cloned()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("accel: {e}\n");
            // A mistake inside `accel run ...` gets the usage of run.
            let usage = match argv.first().and_then(|a| a.to_str()) {
                Some("run") => RUN_USAGE,
                Some("stat") => STAT_USAGE,
                Some("doctor") => DOCTOR_USAGE,
                Some("capture") => CAPTURE_USAGE,
                _ => USAGE,
            };
            eprint!("{usage}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::RunHelp => {
            print!("{RUN_USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("accel {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CommandHelp(which) => {
            print!(
                "{}",
                match which {
                    "stat" => STAT_USAGE,
                    "doctor" => DOCTOR_USAGE,
                    _ => CAPTURE_USAGE,
                }
            );
            ExitCode::SUCCESS
        }
        Command::Stat(a) => stat::run(&a),
        Command::Doctor(a) => doctor::run(&a),
        Command::Capture(a) => capture::run(&a),
        Command::Run(run) if run.check => run_check(&run),
        Command::Run(run) => run_exec(run),
    }
}

fn library(run: &RunArgs) -> Result<PathBuf, LibError> {
    let env_lib = std::env::var_os("ACCEL_LIB");
    preload::find_library(
        run.lib.as_deref(),
        env_lib.as_deref(),
        std::env::current_exe(),
    )
}

fn run_check(run: &RunArgs) -> ExitCode {
    let lib = library(run);
    let (text, problems) = check::report(run, &lib, |k| std::env::var(k).ok());
    print!("{text}");
    if problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Replaces this process with the command; returns only on failure.
fn run_exec(run: RunArgs) -> ExitCode {
    let lib = match library(&run) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("accel: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // An LD_PRELOAD given with -e counts as the old value, as it would have in the environment.
    let old: Option<OsString> = match run.env_value("LD_PRELOAD") {
        Some(v) => Some(v.into()),
        None => std::env::var_os("LD_PRELOAD"),
    };
    let (program, rest) = run
        .command
        .split_first()
        .expect("parser guarantees a command");
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (k, v) in &run.env {
        cmd.env(k, v);
    }
    cmd.env(
        "LD_PRELOAD",
        preload::merge_ld_preload(old.as_deref(), &lib),
    );
    let err = cmd.exec();
    eprintln!("accel: cannot run {}: {err}", program.to_string_lossy());
    ExitCode::from(EXIT_EXEC)
}
