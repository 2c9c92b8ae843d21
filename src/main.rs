//! `accel`: runs a program with `libaccel.so` preloaded, and shows the configuration it would get.
//!
//! ```text
//! accel run [--profile P] [-e KEY=VAL]... [--lib PATH] [--] CMD ARGS...
//! accel run --check [--profile P] [-e KEY=VAL]... [CMD ARGS...]
//! ```

mod args;
mod check;
mod preload;

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
            let usage = if argv.first().is_some_and(|a| a == "run") {
                RUN_USAGE
            } else {
                USAGE
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
