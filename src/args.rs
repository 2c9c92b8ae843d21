//! Command-line parsing for the `accel` tool: `argv` → [`Command`].
//!
//! Hand-rolled on purpose: the grammar is small and the tool must not pull dependencies into the
//! process it is about to become (it `exec`s the user's command).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

/// Profiles `--profile` accepts (the values of `ACCEL_PROFILE`).
pub const PROFILES: &[&str] = &["default", "latency", "ultra-latency", "throughput"];

/// What the user asked for.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::enum_variant_names)] // CommandHelp: help for one command, not the command itself
pub enum Command {
    /// `accel`, `accel -h`, `accel --help`, `accel help`.
    Help,
    /// `accel run -h`.
    RunHelp,
    /// `accel -V`, `accel --version`.
    Version,
    Run(RunArgs),
    /// `accel stat -h`, `accel doctor -h`, `accel capture -h`: help for that command.
    CommandHelp(&'static str),
    Stat(StatArgs),
    Doctor(DoctorArgs),
    Capture(CaptureArgs),
}

/// `accel stat [-p PID] [-i SECONDS [-n COUNT]] [-v]... [--json] [-z]`
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatArgs {
    pub pid: Option<u32>,
    /// Refresh every this many seconds, with per-interval rates.
    pub interval: Option<f64>,
    /// With `interval`: stop after this many refreshes.
    pub count: Option<u64>,
    pub verbose: u8,
    pub json: bool,
    /// Zero the counters instead of printing them.
    pub zero: bool,
}

/// `accel doctor [--addr IP:PORT] [--iface IF] [--program NAME] [--json]`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoctorArgs {
    pub addr: Option<std::net::SocketAddrV4>,
    pub iface: Option<String>,
    /// The program name rules are matched for (application-id sections).
    pub program: Option<String>,
    pub json: bool,
}

/// `accel capture -p PID [-w FILE] [-c COUNT] [-t SECONDS]`
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaptureArgs {
    pub pid: u32,
    /// pcap output (`-` = stdout); None = one text line per datagram on stdout.
    pub write: Option<PathBuf>,
    pub count: Option<u64>,
    pub seconds: Option<f64>,
}

/// `accel run [options] [--] CMD ARGS...`
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// Variables to set in the command's environment, in command-line order (later wins).
    /// `--profile P` contributes `ACCEL_PROFILE=P` at its position.
    pub env: Vec<(String, String)>,
    /// `--lib PATH`: the library to preload instead of the one found next to `accel`.
    pub lib: Option<PathBuf>,
    /// `--check`: print the configuration instead of running the command.
    pub check: bool,
    /// The command and its arguments (empty only with `--check`).
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// The value of `key` this run sets, if any (the last `-e`/`--profile` for it).
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A usage error: printed with the usage on stderr, exit status 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    UnknownCommand(String),
    UnknownOption(String),
    /// An option that needs a value was last.
    MissingValue(&'static str),
    BadProfile(String),
    /// `-e` without `KEY=VALUE` form.
    BadEnv(String),
    /// `accel run` without a command (and without `--check`).
    MissingCommand,
    /// An option or its value is not valid UTF-8.
    NotUnicode(OsString),
    /// An option's value is not what it takes: (option, value, what it takes).
    BadValue(&'static str, String, &'static str),
    /// A required option is missing: (command, option).
    MissingOption(&'static str, &'static str),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::UnknownCommand(c) => write!(f, "unknown command '{c}'"),
            ArgError::UnknownOption(o) => write!(f, "unknown option '{o}'"),
            ArgError::MissingValue(o) => write!(f, "option '{o}' needs a value"),
            ArgError::BadProfile(p) => {
                write!(
                    f,
                    "unknown profile '{p}' (expected one of: {})",
                    PROFILES.join(", ")
                )
            }
            ArgError::BadEnv(e) => {
                write!(f, "bad -e '{e}': expected KEY=VALUE with a non-empty KEY")
            }
            ArgError::MissingCommand => {
                write!(
                    f,
                    "run: missing command (give CMD, or --check to only print the configuration)"
                )
            }
            ArgError::NotUnicode(s) => write!(f, "argument {s:?} is not valid UTF-8"),
            ArgError::BadValue(o, v, want) => write!(f, "option '{o}': '{v}' is not {want}"),
            ArgError::MissingOption(c, o) => write!(f, "{c}: option '{o}' is required"),
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, ArgError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into);
    let Some(first) = args.next() else {
        return Ok(Command::Help);
    };
    match first.to_str() {
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("run") => parse_run(args),
        Some("stat") => parse_stat(args),
        Some("doctor") => parse_doctor(args),
        Some("capture") => parse_capture(args),
        Some(s) if s.starts_with('-') => Err(ArgError::UnknownOption(s.to_string())),
        Some(s) => Err(ArgError::UnknownCommand(s.to_string())),
        None => Err(ArgError::UnknownCommand(
            first.to_string_lossy().into_owned(),
        )),
    }
}

fn parse_run(mut args: impl Iterator<Item = OsString>) -> Result<Command, ArgError> {
    let mut run = RunArgs::default();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let bytes = arg.as_encoded_bytes();
        if !bytes.starts_with(b"-") || bytes == b"-" {
            // First non-option: the command; everything after it is its arguments.
            run.command.push(arg);
            break;
        }
        let opt = arg
            .to_str()
            .ok_or_else(|| ArgError::NotUnicode(arg.clone()))?;
        // `--name=value` is accepted for the long options that take a value.
        let (name, inline) = match opt.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (opt, None),
        };
        match name {
            "-h" | "--help" => return Ok(Command::RunHelp),
            "--check" => run.check = true,
            "-p" | "--profile" => {
                let p = value(inline, &mut args, "--profile")?;
                let p = p.to_ascii_lowercase();
                if !PROFILES.contains(&p.as_str()) {
                    return Err(ArgError::BadProfile(p));
                }
                run.env.push(("ACCEL_PROFILE".to_string(), p));
            }
            "-e" | "--env" => {
                let kv = value(inline, &mut args, "-e")?;
                run.env.push(parse_env(&kv)?);
            }
            "--lib" => run.lib = Some(PathBuf::from(value(inline, &mut args, "--lib")?)),
            // `-eKEY=VAL`, as getopt would accept it.
            _ if name.starts_with("-e") && !name.starts_with("--") => {
                run.env.push(parse_env(&opt[2..])?);
            }
            _ => return Err(ArgError::UnknownOption(opt.to_string())),
        }
    }
    run.command.extend(args);
    if run.command.is_empty() && !run.check {
        return Err(ArgError::MissingCommand);
    }
    Ok(Command::Run(run))
}

/// Splits `--name=value`; a short option with its value glued on (`-p123`) is split too when
/// `glued` lists it.
fn split_opt(arg: OsString, glued: &[&str]) -> Result<(String, Option<String>), ArgError> {
    let opt = arg.to_str().ok_or_else(|| ArgError::NotUnicode(arg.clone()))?;
    if let Some((n, v)) = opt.split_once('=').filter(|(n, _)| n.starts_with("--")) {
        return Ok((n.to_string(), Some(v.to_string())));
    }
    for g in glued {
        if opt.len() > 2 && opt.starts_with(g) && !opt.starts_with("--") {
            return Ok((g.to_string(), Some(opt[2..].to_string())));
        }
    }
    Ok((opt.to_string(), None))
}

fn number<T: std::str::FromStr>(v: String, opt: &'static str, want: &'static str) -> Result<T, ArgError> {
    v.trim().parse().map_err(|_| ArgError::BadValue(opt, v, want))
}

fn seconds(v: String, opt: &'static str) -> Result<f64, ArgError> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 86_400.0 => Ok(x),
        _ => Err(ArgError::BadValue(opt, v, "a number of seconds (0 < s <= 86400)")),
    }
}

fn pid(v: String, opt: &'static str) -> Result<u32, ArgError> {
    match v.trim().parse::<u32>() {
        Ok(p) if p > 0 && p <= i32::MAX as u32 => Ok(p),
        _ => Err(ArgError::BadValue(opt, v, "a process id")),
    }
}

fn parse_stat(mut args: impl Iterator<Item = OsString>) -> Result<Command, ArgError> {
    let mut a = StatArgs::default();
    while let Some(arg) = args.next() {
        let (name, inline) = split_opt(arg, &["-p", "-i", "-n"])?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::CommandHelp("stat")),
            "-p" | "--pid" => a.pid = Some(pid(value(inline, &mut args, "-p")?, "-p")?),
            "-i" | "--interval" => a.interval = Some(seconds(value(inline, &mut args, "-i")?, "-i")?),
            "-n" | "--count" => a.count = Some(number(value(inline, &mut args, "-n")?, "-n", "a count")?),
            "--json" => a.json = true,
            "-z" | "--zero" => a.zero = true,
            "--verbose" => a.verbose = a.verbose.saturating_add(1),
            v if v.len() > 1 && v.starts_with('-') && !v.starts_with("--") && v[1..].chars().all(|c| c == 'v') => {
                a.verbose = a.verbose.saturating_add((v.len() - 1) as u8)
            }
            other => return Err(ArgError::UnknownOption(other.to_string())),
        }
    }
    if a.count.is_some() && a.interval.is_none() {
        return Err(ArgError::MissingOption("stat -n", "-i"));
    }
    Ok(Command::Stat(a))
}

fn parse_doctor(mut args: impl Iterator<Item = OsString>) -> Result<Command, ArgError> {
    let mut a = DoctorArgs::default();
    while let Some(arg) = args.next() {
        let (name, inline) = split_opt(arg, &[])?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::CommandHelp("doctor")),
            "--addr" => {
                let v = value(inline, &mut args, "--addr")?;
                a.addr = Some(v.trim().parse().map_err(|_| ArgError::BadValue("--addr", v, "an IPv4 IP:PORT"))?);
            }
            "--iface" => a.iface = Some(value(inline, &mut args, "--iface")?),
            "--program" => a.program = Some(value(inline, &mut args, "--program")?),
            "--json" => a.json = true,
            other => return Err(ArgError::UnknownOption(other.to_string())),
        }
    }
    Ok(Command::Doctor(a))
}

fn parse_capture(mut args: impl Iterator<Item = OsString>) -> Result<Command, ArgError> {
    let mut a = CaptureArgs::default();
    let mut have_pid = false;
    while let Some(arg) = args.next() {
        let (name, inline) = split_opt(arg, &["-p", "-w", "-c", "-t"])?;
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::CommandHelp("capture")),
            "-p" | "--pid" => {
                a.pid = pid(value(inline, &mut args, "-p")?, "-p")?;
                have_pid = true;
            }
            "-w" | "--write" => a.write = Some(PathBuf::from(value(inline, &mut args, "-w")?)),
            "-c" | "--count" => a.count = Some(number(value(inline, &mut args, "-c")?, "-c", "a count")?),
            "-t" | "--time" => a.seconds = Some(seconds(value(inline, &mut args, "-t")?, "-t")?),
            other => return Err(ArgError::UnknownOption(other.to_string())),
        }
    }
    if !have_pid {
        return Err(ArgError::MissingOption("capture", "-p PID"));
    }
    Ok(Command::Capture(a))
}

/// The value of an option: inline (`--opt=value`) or the next argument.
fn value(
    inline: Option<String>,
    args: &mut impl Iterator<Item = OsString>,
    opt: &'static str,
) -> Result<String, ArgError> {
    if let Some(v) = inline {
        return Ok(v);
    }
    let v = args.next().ok_or(ArgError::MissingValue(opt))?;
    v.into_string().map_err(ArgError::NotUnicode)
}

/// `KEY=VALUE` → (KEY, VALUE). The value may be empty and may contain '='.
pub fn parse_env(kv: &str) -> Result<(String, String), ArgError> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(ArgError::BadEnv(kv.to_string())),
    }
}

/// The program name rules are selected by: the basename of the command as given.
pub fn program_name(cmd: &OsStr) -> String {
    let bytes = cmd.as_encoded_bytes();
    let base = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => &bytes[i + 1..],
        None => bytes,
    };
    String::from_utf8_lossy(base).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, ArgError> {
        parse(args.iter().copied())
    }

    fn run(args: &[&str]) -> RunArgs {
        match p(args) {
            Ok(Command::Run(r)) => r,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn help_and_version() {
        assert_eq!(p(&[]), Ok(Command::Help));
        assert_eq!(p(&["-h"]), Ok(Command::Help));
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(p(&["help"]), Ok(Command::Help));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert_eq!(p(&["run", "--help"]), Ok(Command::RunHelp));
        assert_eq!(p(&["run", "-e", "A=1", "-h"]), Ok(Command::RunHelp));
    }

    #[test]
    fn unknown_subcommand_and_flags() {
        assert_eq!(p(&["stats"]), Err(ArgError::UnknownCommand("stats".into())));
        assert_eq!(
            p(&["--verbose"]),
            Err(ArgError::UnknownOption("--verbose".into()))
        );
        assert_eq!(
            p(&["run", "--bogus", "x"]),
            Err(ArgError::UnknownOption("--bogus".into()))
        );
        assert_eq!(
            p(&["run", "-x", "x"]),
            Err(ArgError::UnknownOption("-x".into()))
        );
        // A lone "-" is not an option: it is taken as the command (and fails to exec).
        assert_eq!(run(&["run", "-", "x"]).command, os(&["-", "x"]));
    }

    #[test]
    fn stat_doctor_capture_options() {
        let st = |a: &[&str]| match p(a) {
            Ok(Command::Stat(s)) => s,
            other => panic!("{a:?} parsed as {other:?}"),
        };
        assert_eq!(st(&["stat"]), StatArgs::default());
        let s = st(&["stat", "-p", "42", "-vv", "-v", "--json", "-i", "0.5", "-n", "3"]);
        assert_eq!((s.pid, s.verbose, s.json, s.interval, s.count), (Some(42), 3, true, Some(0.5), Some(3)));
        assert!(st(&["stat", "-z", "-p42"]).zero);
        assert_eq!(st(&["stat", "--pid=7"]).pid, Some(7));
        assert!(matches!(p(&["stat", "-p", "x"]), Err(ArgError::BadValue("-p", _, _))));
        assert!(matches!(p(&["stat", "-i", "0"]), Err(ArgError::BadValue("-i", _, _))));
        assert!(matches!(p(&["stat", "-n", "2"]), Err(ArgError::MissingOption(_, "-i"))));
        assert_eq!(p(&["stat", "-h"]), Ok(Command::CommandHelp("stat")));
        assert_eq!(p(&["stat", "-x"]), Err(ArgError::UnknownOption("-x".into())));

        match p(&["doctor", "--addr", "127.0.0.1:5000", "--iface=lo", "--json"]) {
            Ok(Command::Doctor(d)) => {
                assert_eq!(d.addr, Some("127.0.0.1:5000".parse().unwrap()));
                assert_eq!(d.iface.as_deref(), Some("lo"));
                assert!(d.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(p(&["doctor", "--addr", "::1"]), Err(ArgError::BadValue("--addr", _, _))));

        match p(&["capture", "-p", "9", "-w", "x.pcap", "-c", "10", "-t", "2"]) {
            Ok(Command::Capture(c)) => {
                assert_eq!((c.pid, c.count, c.seconds), (9, Some(10), Some(2.0)));
                assert_eq!(c.write, Some(PathBuf::from("x.pcap")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p(&["capture", "-w", "x"]), Err(ArgError::MissingOption("capture", "-p PID")));
    }

    #[test]
    fn simple_command() {
        let r = run(&["run", "iperf3", "-s", "-p", "5201"]);
        assert_eq!(r.command, os(&["iperf3", "-s", "-p", "5201"]));
        assert!(r.env.is_empty());
        assert!(!r.check);
        assert_eq!(r.lib, None);
    }

    #[test]
    fn profile() {
        let r = run(&["run", "--profile", "latency", "sockperf", "sr"]);
        assert_eq!(r.env, vec![kv("ACCEL_PROFILE", "latency")]);
        assert_eq!(r.command, os(&["sockperf", "sr"]));
        for prof in PROFILES {
            let r = run(&["run", "--profile", prof, "true"]);
            assert_eq!(r.env_value("ACCEL_PROFILE"), Some(*prof));
        }
        let r = run(&["run", "--profile=ultra-latency", "true"]);
        assert_eq!(r.env_value("ACCEL_PROFILE"), Some("ultra-latency"));
        let r = run(&["run", "-p", "Throughput", "true"]);
        assert_eq!(r.env_value("ACCEL_PROFILE"), Some("throughput"));
        assert_eq!(
            p(&["run", "--profile", "fast", "true"]),
            Err(ArgError::BadProfile("fast".into()))
        );
        assert_eq!(
            p(&["run", "--profile"]),
            Err(ArgError::MissingValue("--profile"))
        );
    }

    #[test]
    fn multiple_env() {
        let r = run(&[
            "run",
            "-e",
            "VMA_RX_BUFS=1024",
            "-e",
            "ACCEL_LOG_LEVEL=debug",
            "--env",
            "A=b=c",
            "-eB=",
            "nc",
        ]);
        assert_eq!(
            r.env,
            vec![
                kv("VMA_RX_BUFS", "1024"),
                kv("ACCEL_LOG_LEVEL", "debug"),
                kv("A", "b=c"),
                kv("B", "")
            ]
        );
        assert_eq!(r.command, os(&["nc"]));
    }

    #[test]
    fn later_settings_win() {
        let r = run(&[
            "run",
            "--profile",
            "latency",
            "-e",
            "ACCEL_PROFILE=throughput",
            "-e",
            "X=1",
            "-e",
            "X=2",
            "true",
        ]);
        assert_eq!(r.env_value("ACCEL_PROFILE"), Some("throughput"));
        assert_eq!(r.env_value("X"), Some("2"));
        assert_eq!(r.env_value("Y"), None);
    }

    #[test]
    fn bad_env() {
        assert_eq!(
            p(&["run", "-e", "NOEQUALS", "true"]),
            Err(ArgError::BadEnv("NOEQUALS".into()))
        );
        assert_eq!(
            p(&["run", "-e", "=value", "true"]),
            Err(ArgError::BadEnv("=value".into()))
        );
        assert_eq!(p(&["run", "-e"]), Err(ArgError::MissingValue("-e")));
        assert!(ArgError::BadEnv("NOEQUALS".into())
            .to_string()
            .contains("KEY=VALUE"));
    }

    #[test]
    fn missing_command() {
        assert_eq!(p(&["run"]), Err(ArgError::MissingCommand));
        assert_eq!(
            p(&["run", "--profile", "latency"]),
            Err(ArgError::MissingCommand)
        );
        assert_eq!(p(&["run", "--"]), Err(ArgError::MissingCommand));
    }

    #[test]
    fn check_needs_no_command() {
        let r = run(&[
            "run",
            "--check",
            "--profile",
            "latency",
            "-e",
            "VMA_MTU=9000",
        ]);
        assert!(r.check);
        assert!(r.command.is_empty());
        assert_eq!(
            r.env,
            vec![kv("ACCEL_PROFILE", "latency"), kv("VMA_MTU", "9000")]
        );
        let r = run(&["run", "--check", "--", "iperf3", "-c", "x"]);
        assert!(r.check);
        assert_eq!(r.command, os(&["iperf3", "-c", "x"]));
    }

    #[test]
    fn double_dash() {
        // Needed when the command starts with '-'.
        let r = run(&["run", "-e", "A=1", "--", "-weird", "--check"]);
        assert_eq!(r.command, os(&["-weird", "--check"]));
        assert!(!r.check);
        // Optional otherwise; options after the command belong to the command.
        let r = run(&["run", "cat", "--", "-e", "X"]);
        assert_eq!(r.command, os(&["cat", "--", "-e", "X"]));
        assert!(r.env.is_empty());
        let r = run(&["run", "--", "cat", "--"]);
        assert_eq!(r.command, os(&["cat", "--"]));
    }

    #[test]
    fn lib_option() {
        let r = run(&["run", "--lib", "/opt/x/libaccel.so", "true"]);
        assert_eq!(r.lib, Some(PathBuf::from("/opt/x/libaccel.so")));
        let r = run(&["run", "--lib=rel/libaccel.so", "true"]);
        assert_eq!(r.lib, Some(PathBuf::from("rel/libaccel.so")));
        assert_eq!(p(&["run", "--lib"]), Err(ArgError::MissingValue("--lib")));
    }

    #[test]
    fn non_utf8_command_is_kept() {
        use std::os::unix::ffi::OsStringExt;
        let weird = OsString::from_vec(vec![b'a', 0xff, b'b']);
        let args = vec![OsString::from("run"), OsString::from("echo"), weird.clone()];
        match parse(args) {
            Ok(Command::Run(r)) => assert_eq!(r.command, vec![OsString::from("echo"), weird]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn program_names() {
        assert_eq!(program_name(OsStr::new("iperf3")), "iperf3");
        assert_eq!(program_name(OsStr::new("/usr/bin/iperf3")), "iperf3");
        assert_eq!(program_name(OsStr::new("./bin/server")), "server");
    }
}
