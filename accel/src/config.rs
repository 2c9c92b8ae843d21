//! Configuration: every environment variable accel reads, with its libvma alias, default and
//! meaning.
//!
//! Values come from the process environment (and `accel run -e`) and are validated once, at
//! start-up. A bad value never stops the application: it produces one [`ConfigWarning`] naming
//! the variable, the value as given and the value used instead, and every other variable is
//! still read normally.
//!
//! # Names and aliases
//!
//! Every setting has our name, `ACCEL_*`, and where libvma has the same knob, libvma's name as
//! an alias, so that existing `VMA_*` deployment scripts keep working unchanged. When both are
//! set, `ACCEL_*` wins silently and the alias is not even parsed. The full list, in
//! documentation order, is [`VARIABLES`]; [`known_variables`] flattens it into plain names.
//!
//! # Precedence
//!
//! Lowest first:
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. the profile chosen by `ACCEL_PROFILE` / `VMA_SPEC` ([`Profile`]), which changes several
//!    defaults at once;
//! 3. each variable that is explicitly set.
//!
//! So `ACCEL_PROFILE=latency ACCEL_RX_POLL=500` spins forever in `select` but only 500 times
//! in `recv`. When an explicit value is rejected, the value from the layer below it is used.
//!
//! # Provenance
//!
//! [`Config`] remembers where each value came from ([`Source`]). [`Config::describe`] lists every
//! variable with its value and source; it is what `accel run --check` prints.
//!
//! # Example
//!
//! ```
//! use accel_engine::config::{Config, Source};
//!
//! let env = |name: &str| match name {
//!     "ACCEL_PROFILE" => Some("latency".to_string()),
//!     "VMA_RX_BUFS" => Some("lots".to_string()),
//!     _ => None,
//! };
//! let (config, warnings) = Config::from_vars(env);
//! assert_eq!(config.rx_poll, -1); // from the latency profile
//! assert_eq!(config.rx_bufs, 4096); // the bad value is replaced by the default...
//! assert_eq!(warnings.len(), 1); // ...and reported once
//! assert_eq!(warnings[0].to_string(), r#"VMA_RX_BUFS="lots": not a number; using 4096 (default)"#);
//! assert_eq!(config.source_of("ACCEL_PROFILE"), Some(&Source::Env("ACCEL_PROFILE".to_string())));
//! ```

use std::fmt;
use std::num::IntErrorKind;
use std::path::PathBuf;

/// Log verbosity, numbered as libvma's VMA_TRACELEVEL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    None = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Fine = 5,
    Finer = 6,
}

impl LogLevel {
    /// The level with number `n` (0-6), as written in `ACCEL_LOG_LEVEL=n`.
    pub fn from_u8(n: u8) -> Option<LogLevel> {
        match n {
            0 => Some(LogLevel::None),
            1 => Some(LogLevel::Error),
            2 => Some(LogLevel::Warn),
            3 => Some(LogLevel::Info),
            4 => Some(LogLevel::Debug),
            5 => Some(LogLevel::Fine),
            6 => Some(LogLevel::Finer),
            _ => None,
        }
    }

    /// The level called `name`, case-insensitive. Besides our names this accepts libvma's, mapped
    /// to the nearest level we have: `panic` → error, `details` → info, `func` → fine,
    /// `func_all`/`funcall`/`all` → finer.
    pub fn from_name(name: &str) -> Option<LogLevel> {
        match name.to_ascii_lowercase().as_str() {
            "none" => Some(LogLevel::None),
            "error" | "panic" => Some(LogLevel::Error),
            "warn" | "warning" => Some(LogLevel::Warn),
            "info" | "details" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            "fine" | "func" => Some(LogLevel::Fine),
            "finer" | "func_all" | "funcall" | "all" => Some(LogLevel::Finer),
            _ => None,
        }
    }

    /// Our name for the level, as printed in log lines.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::None => "none",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Fine => "fine",
            LogLevel::Finer => "finer",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which sockets share a ring (VMA_RING_ALLOCATION_LOGIC_RX/TX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingAllocation {
    PerInterface = 0,
    PerIp = 1,
    PerSocket = 10,
    PerThread = 20,
    PerCore = 30,
    PerCoreAffinity = 31,
}

impl RingAllocation {
    /// The allocation logic with libvma's number `code` (0, 1, 10, 20, 30 or 31).
    pub fn from_code(code: i64) -> Option<RingAllocation> {
        match code {
            0 => Some(RingAllocation::PerInterface),
            1 => Some(RingAllocation::PerIp),
            10 => Some(RingAllocation::PerSocket),
            20 => Some(RingAllocation::PerThread),
            30 => Some(RingAllocation::PerCore),
            31 => Some(RingAllocation::PerCoreAffinity),
            _ => None,
        }
    }

    /// libvma's number for it, as written in the variable.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A short human name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            RingAllocation::PerInterface => "per interface",
            RingAllocation::PerIp => "per ip",
            RingAllocation::PerSocket => "per socket",
            RingAllocation::PerThread => "per thread",
            RingAllocation::PerCore => "per core",
            RingAllocation::PerCoreAffinity => "per core, with affinity",
        }
    }
}

impl fmt::Display for RingAllocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The human name of a ring allocation logic (same as its `Display`), for logs.
pub fn ring_allocation_name(logic: RingAllocation) -> &'static str {
    logic.name()
}

/// How packet-buffer memory is allocated (VMA_MEM_ALLOC_TYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemAlloc {
    Anon = 0,
    Contiguous = 1,
    HugePages = 2,
}

impl MemAlloc {
    /// The type with libvma's number `code` (0, 1 or 2).
    pub fn from_code(code: i64) -> Option<MemAlloc> {
        match code {
            0 => Some(MemAlloc::Anon),
            1 => Some(MemAlloc::Contiguous),
            2 => Some(MemAlloc::HugePages),
            _ => None,
        }
    }

    /// The type called `name`, case-insensitive: `anon`, `contig`/`contiguous`,
    /// `huge`/`hugepages`.
    pub fn from_name(name: &str) -> Option<MemAlloc> {
        match name.to_ascii_lowercase().as_str() {
            "anon" => Some(MemAlloc::Anon),
            "contig" | "contiguous" => Some(MemAlloc::Contiguous),
            "huge" | "hugepages" => Some(MemAlloc::HugePages),
            _ => None,
        }
    }

    /// libvma's number for it, as written in the variable.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            MemAlloc::Anon => "anon",
            MemAlloc::Contiguous => "contiguous",
            MemAlloc::HugePages => "hugepages",
        }
    }
}

impl fmt::Display for MemAlloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A named set of defaults (ACCEL_PROFILE, or libvma's VMA_SPEC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Built-in defaults: bounded spinning, then sleep.
    Default,
    /// Spin forever on receive and select (VMA_SPEC=latency).
    Latency,
    /// Latency plus per-socket rings and no ring migration (VMA_SPEC=ultra-latency).
    UltraLatency,
    /// Larger batches and buffers, short spin (ACCEL_PROFILE=throughput).
    Throughput,
}

impl Profile {
    /// The profile called `name`, case-insensitive; `ultra_latency` is accepted for
    /// `ultra-latency`. libvma's numeric VMA_SPEC codes are not.
    pub fn from_name(name: &str) -> Option<Profile> {
        match name.to_ascii_lowercase().as_str() {
            "default" => Some(Profile::Default),
            "latency" => Some(Profile::Latency),
            "ultra-latency" | "ultra_latency" => Some(Profile::UltraLatency),
            "throughput" => Some(Profile::Throughput),
            _ => None,
        }
    }

    /// The name as written in `ACCEL_PROFILE`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Latency => "latency",
            Profile::UltraLatency => "ultra-latency",
            Profile::Throughput => "throughput",
        }
    }

    /// Overwrites the values this profile sets, recording the profile as their source.
    fn apply(self, config: &mut Config) {
        let source = Source::Profile(self);
        let set_poll = |config: &mut Config, rx: PollBudget, select: PollBudget| {
            config.rx_poll = rx;
            config.select_poll = select;
            config.sources.set(Key::RxPoll, source.clone());
            config.sources.set(Key::SelectPoll, source.clone());
        };
        match self {
            Profile::Default => {}
            Profile::Latency => set_poll(config, -1, -1),
            Profile::UltraLatency => {
                set_poll(config, -1, -1);
                // A private ring per socket that never moves: no sharing, no migration stalls.
                config.ring_allocation_rx = RingAllocation::PerSocket;
                config.ring_allocation_tx = RingAllocation::PerSocket;
                config.ring_migration_ratio_rx = -1;
                config.ring_migration_ratio_tx = -1;
                for key in [
                    Key::RingAllocationRx,
                    Key::RingAllocationTx,
                    Key::RingMigrationRatioRx,
                    Key::RingMigrationRatioTx,
                ] {
                    config.sources.set(key, source.clone());
                }
            }
            Profile::Throughput => {
                set_poll(config, 1000, 1000);
                // 16384 slots: a 64 B stream at ~16 M msg/s rides out a 1 ms stall of the
                // receiver; two such rings fit in the pool (see docs/benchmarks.md).
                config.rx_bufs = 32768;
                config.tx_bufs = 8192;
                config.rx_wre = 16384;
                config.tx_wre = 4096;
                // AF_XDP copy mode: one kick (a system call) per 32 sends, not per send; a
                // datagram waits for its batch about 1 ms at most (the default flush time).
                config.xdp_tx_batch = 32;
                for key in [Key::RxBufs, Key::TxBufs, Key::RxWre, Key::TxWre, Key::XdpTxBatch] {
                    config.sources.set(key, source.clone());
                }
            }
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `-1` means spin forever; `0` means do not spin; `n` means poll `n` times before sleeping.
pub type PollBudget = i64;

/// Where a value in force came from, for `accel run --check` and the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    Profile(Profile),
    /// The variable name that set it (e.g. "VMA_RX_BUFS").
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Profile(profile) => write!(f, "{profile} profile"),
            Source::Env(name) => f.write_str(name),
        }
    }
}

/// One bad value: reported once on stderr, never fatal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The variable (or "file:line") at fault.
    pub variable: String,
    /// The value as given.
    pub value: String,
    /// Why it was rejected.
    pub problem: String,
    /// What is used instead, as shown to the user.
    pub used: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?}: {}; using {}",
            self.variable, self.value, self.problem, self.used
        )
    }
}

/// One variable accel reads: its names, default, accepted values and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Our name, e.g. "ACCEL_RX_BUFS".
    pub name: &'static str,
    /// libvma's name for the same knob, e.g. Some("VMA_RX_BUFS").
    pub alias: Option<&'static str>,
    /// The built-in default, as documented.
    pub default: &'static str,
    /// What may be written, as documented.
    pub accepted: &'static str,
    /// One line of meaning.
    pub help: &'static str,
}

/// The number of settings (not names: each setting may also have an alias).
pub const VARIABLE_COUNT: usize = 29;

/// Every setting, in documentation order; [`Config::describe`] follows the same order.
pub const VARIABLES: [Variable; VARIABLE_COUNT] = [
    Variable {
        name: "ACCEL_ENABLE",
        alias: Some("VMA_OFFLOADED_SOCKETS"),
        default: "1",
        accepted: "0/1, true/false, yes/no, on/off",
        help: "global on/off; 0 = pure pass-through, no socket is accelerated",
    },
    Variable {
        name: "ACCEL_PROFILE",
        alias: Some("VMA_SPEC"),
        default: "default",
        accepted: "default, latency, ultra-latency (or ultra_latency), throughput",
        help: "a named set of defaults; explicit variables override it",
    },
    Variable {
        name: "ACCEL_LOG_LEVEL",
        alias: Some("VMA_TRACELEVEL"),
        default: "2",
        accepted: "0-6, or none, error, warn, info, debug, fine, finer",
        help: "log verbosity: 0 none, 1 error, 2 warn, 3 info, 4 debug, 5 fine, 6 finer",
    },
    Variable {
        name: "ACCEL_LOG_FILE",
        alias: Some("VMA_LOG_FILE"),
        default: "none (stderr)",
        accepted: "a path; %d is replaced by the pid; empty = stderr",
        help: "where log lines go instead of stderr",
    },
    Variable {
        name: "ACCEL_CONFIG_FILE",
        alias: Some("VMA_CONFIG_FILE"),
        default: "none (no rules)",
        accepted: "a path to a libvma.conf-style rules file; empty = none",
        help: "rules choosing which sockets are accelerated; none = every eligible socket",
    },
    Variable {
        name: "ACCEL_APPLICATION_ID",
        alias: Some("VMA_APPLICATION_ID"),
        default: "none",
        accepted: "any string; empty = none",
        help: "selects the application-id sections of the rules file",
    },
    Variable {
        name: "ACCEL_RING_ALLOCATION_LOGIC_RX",
        alias: Some("VMA_RING_ALLOCATION_LOGIC_RX"),
        default: "0",
        accepted: "0 per interface, 1 per ip, 10 per socket, 20 per thread, 30 per core, 31 per core with affinity",
        help: "which receiving sockets share a ring",
    },
    Variable {
        name: "ACCEL_RING_ALLOCATION_LOGIC_TX",
        alias: Some("VMA_RING_ALLOCATION_LOGIC_TX"),
        default: "0",
        accepted: "0 per interface, 1 per ip, 10 per socket, 20 per thread, 30 per core, 31 per core with affinity",
        help: "which sending sockets share a ring",
    },
    Variable {
        name: "ACCEL_RING_MIGRATION_RATIO_RX",
        alias: Some("VMA_RING_MIGRATION_RATIO_RX"),
        default: "100",
        accepted: "an integer >= -1; -1 disables migration",
        help: "how eagerly a socket's receive ring follows the thread using it",
    },
    Variable {
        name: "ACCEL_RING_MIGRATION_RATIO_TX",
        alias: Some("VMA_RING_MIGRATION_RATIO_TX"),
        default: "100",
        accepted: "an integer >= -1; -1 disables migration",
        help: "how eagerly a socket's send ring follows the thread using it",
    },
    Variable {
        name: "ACCEL_RX_BUFS",
        alias: Some("VMA_RX_BUFS"),
        default: "4096",
        accepted: "64..=4194304",
        help: "receive packet buffers in the registered memory region",
    },
    Variable {
        name: "ACCEL_TX_BUFS",
        alias: Some("VMA_TX_BUFS"),
        default: "2048",
        accepted: "64..=4194304",
        help: "send packet buffers in the registered memory region",
    },
    Variable {
        name: "ACCEL_RX_WRE",
        alias: Some("VMA_RX_WRE"),
        default: "1024",
        accepted: "32..=65536, rounded up to a power of two",
        help: "receive ring depth (posted descriptors)",
    },
    Variable {
        name: "ACCEL_TX_WRE",
        alias: Some("VMA_TX_WRE"),
        default: "1024",
        accepted: "32..=65536, rounded up to a power of two",
        help: "send ring depth (posted descriptors)",
    },
    Variable {
        name: "ACCEL_MEM_ALLOC_TYPE",
        alias: Some("VMA_MEM_ALLOC_TYPE"),
        default: "0",
        accepted: "0 or anon, 1 or contig/contiguous, 2 or huge/hugepages",
        help: "how packet-buffer memory is allocated",
    },
    Variable {
        name: "ACCEL_MTU",
        alias: Some("VMA_MTU"),
        default: "1500",
        accepted: "576..=9000",
        help: "largest IP datagram the bypass carries",
    },
    Variable {
        name: "ACCEL_RX_POLL",
        alias: Some("VMA_RX_POLL"),
        default: "100000",
        accepted: "an integer >= -1; -1 = spin forever, 0 = never spin",
        help: "receive: polls of the ring before sleeping",
    },
    Variable {
        name: "ACCEL_SELECT_POLL",
        alias: Some("VMA_SELECT_POLL"),
        default: "100000",
        accepted: "an integer >= -1; -1 = spin forever, 0 = never spin",
        help: "poll/select/epoll: polls of the rings before sleeping",
    },
    Variable {
        name: "ACCEL_PRESERVE_ENV",
        alias: None,
        default: "1",
        accepted: "0/1, true/false, yes/no, on/off",
        help: "keep LD_PRELOAD and the ACCEL_*/VMA_* variables in exec'd programs",
    },
    Variable {
        name: "ACCEL_RX_POLL_OS_RATIO",
        alias: Some("VMA_RX_POLL_OS_RATIO"),
        default: "10",
        accepted: "an integer 0..=1000000; 0 and 1 = every time",
        help: "receive: look at the kernel socket once per this many polls of the ring",
    },
    Variable {
        name: "ACCEL_SELECT_POLL_OS_RATIO",
        alias: Some("VMA_SELECT_POLL_OS_RATIO"),
        default: "10",
        accepted: "an integer 0..=1000000; 0 and 1 = every time",
        help: "epoll: with ring events ready, ask the kernel too only once per this many calls",
    },
    Variable {
        name: "ACCEL_SHM",
        alias: None,
        default: "1",
        accepted: "0/1, true/false, yes/no, on/off",
        help: "same-host bypass: UDP between accelerated processes through shared-memory rings",
    },
    Variable {
        name: "ACCEL_XDP",
        alias: None,
        default: "0",
        accepted: "0/1, true/false, yes/no, on/off",
        help: "NIC bypass: UDP of sockets on the XDP interface through an AF_XDP socket (needs CAP_NET_ADMIN and CAP_BPF)",
    },
    Variable {
        name: "ACCEL_XDP_IFNAME",
        alias: None,
        default: "none",
        accepted: "an interface name; empty = the interface of the first socket's address (0.0.0.0: the only non-loopback one)",
        help: "AF_XDP datapath: the interface whose receive queues are opened",
    },
    Variable {
        name: "ACCEL_XDP_MODE",
        alias: None,
        default: "auto",
        accepted: "auto (native where the driver has XDP, else generic), native, generic",
        help: "AF_XDP datapath: how the XDP filter program is attached",
    },
    Variable {
        name: "ACCEL_XDP_QUEUES",
        alias: None,
        default: "all",
        accepted: "all (every receive queue of the interface), a count N (queues 0..N-1), or a range FIRST-LAST",
        help: "AF_XDP datapath: the receive queues that get an AF_XDP socket",
    },
    Variable {
        name: "ACCEL_XDP_TX_BATCH",
        alias: None,
        default: "1",
        accepted: "1..=1024 datagrams (1: every send is kicked at once)",
        help: "AF_XDP datapath, copy mode: sends kicked together with one system call; a datagram waits for the batch about ACCEL_XDP_TX_FLUSH_USEC at most, less when its thread waits on an accelerated socket",
    },
    Variable {
        name: "ACCEL_XDP_TX_FLUSH_USEC",
        alias: None,
        default: "1000",
        accepted: "1..=100000 microseconds",
        help: "AF_XDP datapath: the longest a datagram waits for its batch (ACCEL_XDP_TX_BATCH > 1) before a helper thread kicks it",
    },
    Variable {
        name: "ACCEL_XDP_TX_CSUM_OFFLOAD",
        alias: None,
        default: "1",
        accepted: "boolean (0/1, true/false, yes/no, on/off)",
        help: "AF_XDP datapath, copy mode: leave each sent datagram's UDP checksum to the device (the kernel completes it for devices without offload), as kernel sockets do; 0: computed in user space",
    },
];

/// Every name in [`VARIABLES`], ours and the aliases, each setting's pair together.
const KNOWN_VARIABLES: [&str; 49] = [
    "ACCEL_ENABLE",
    "VMA_OFFLOADED_SOCKETS",
    "ACCEL_PROFILE",
    "VMA_SPEC",
    "ACCEL_LOG_LEVEL",
    "VMA_TRACELEVEL",
    "ACCEL_LOG_FILE",
    "VMA_LOG_FILE",
    "ACCEL_CONFIG_FILE",
    "VMA_CONFIG_FILE",
    "ACCEL_APPLICATION_ID",
    "VMA_APPLICATION_ID",
    "ACCEL_RING_ALLOCATION_LOGIC_RX",
    "VMA_RING_ALLOCATION_LOGIC_RX",
    "ACCEL_RING_ALLOCATION_LOGIC_TX",
    "VMA_RING_ALLOCATION_LOGIC_TX",
    "ACCEL_RING_MIGRATION_RATIO_RX",
    "VMA_RING_MIGRATION_RATIO_RX",
    "ACCEL_RING_MIGRATION_RATIO_TX",
    "VMA_RING_MIGRATION_RATIO_TX",
    "ACCEL_RX_BUFS",
    "VMA_RX_BUFS",
    "ACCEL_TX_BUFS",
    "VMA_TX_BUFS",
    "ACCEL_RX_WRE",
    "VMA_RX_WRE",
    "ACCEL_TX_WRE",
    "VMA_TX_WRE",
    "ACCEL_MEM_ALLOC_TYPE",
    "VMA_MEM_ALLOC_TYPE",
    "ACCEL_MTU",
    "VMA_MTU",
    "ACCEL_RX_POLL",
    "VMA_RX_POLL",
    "ACCEL_SELECT_POLL",
    "VMA_SELECT_POLL",
    "ACCEL_PRESERVE_ENV",
    "ACCEL_RX_POLL_OS_RATIO",
    "VMA_RX_POLL_OS_RATIO",
    "ACCEL_SELECT_POLL_OS_RATIO",
    "VMA_SELECT_POLL_OS_RATIO",
    "ACCEL_SHM",
    "ACCEL_XDP",
    "ACCEL_XDP_IFNAME",
    "ACCEL_XDP_MODE",
    "ACCEL_XDP_QUEUES",
    "ACCEL_XDP_TX_BATCH",
    "ACCEL_XDP_TX_FLUSH_USEC",
    "ACCEL_XDP_TX_CSUM_OFFLOAD",
];

/// Every variable name accel reads (ours and the aliases); `exec` keeps these in the new image.
pub fn known_variables() -> &'static [&'static str] {
    &KNOWN_VARIABLES
}

/// A setting, by its position in [`VARIABLES`]. Keeps the table, the sources and `describe` in
/// step without comparing strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Enable,
    Profile,
    LogLevel,
    LogFile,
    ConfigFile,
    ApplicationId,
    RingAllocationRx,
    RingAllocationTx,
    RingMigrationRatioRx,
    RingMigrationRatioTx,
    RxBufs,
    TxBufs,
    RxWre,
    TxWre,
    MemAlloc,
    Mtu,
    RxPoll,
    SelectPoll,
    PreserveEnv,
    RxPollOsRatio,
    SelectPollOsRatio,
    Shm,
    Xdp,
    XdpIfname,
    XdpMode,
    XdpQueues,
    XdpTxBatch,
    XdpTxFlushUsec,
    XdpTxCsumOffload,
}

/// All keys, in the order of [`VARIABLES`].
const KEYS: [Key; VARIABLE_COUNT] = [
    Key::Enable,
    Key::Profile,
    Key::LogLevel,
    Key::LogFile,
    Key::ConfigFile,
    Key::ApplicationId,
    Key::RingAllocationRx,
    Key::RingAllocationTx,
    Key::RingMigrationRatioRx,
    Key::RingMigrationRatioTx,
    Key::RxBufs,
    Key::TxBufs,
    Key::RxWre,
    Key::TxWre,
    Key::MemAlloc,
    Key::Mtu,
    Key::RxPoll,
    Key::SelectPoll,
    Key::PreserveEnv,
    Key::RxPollOsRatio,
    Key::SelectPollOsRatio,
    Key::Shm,
    Key::Xdp,
    Key::XdpIfname,
    Key::XdpMode,
    Key::XdpQueues,
    Key::XdpTxBatch,
    Key::XdpTxFlushUsec,
    Key::XdpTxCsumOffload,
];

impl Key {
    fn variable(self) -> &'static Variable {
        // `Key` has exactly VARIABLE_COUNT variants numbered from 0, so this index is in bounds;
        // `get` plus a fallback keeps it panic-free even if the two ever drift apart.
        VARIABLES.get(self as usize).unwrap_or(&VARIABLES[0])
    }
}

/// Where each value of a [`Config`] came from: one [`Source`] per setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    by_key: [Source; VARIABLE_COUNT],
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            by_key: std::array::from_fn(|_| Source::Default),
        }
    }
}

impl Sources {
    /// The source of the setting called `name` (our name or its alias).
    pub fn get(&self, name: &str) -> Option<&Source> {
        let index = VARIABLES
            .iter()
            .position(|var| var.name == name || var.alias == Some(name))?;
        self.by_key.get(index)
    }

    fn of(&self, key: Key) -> &Source {
        // In bounds for the same reason as in `Key::variable`.
        self.by_key.get(key as usize).unwrap_or(&Source::Default)
    }

    fn set(&mut self, key: Key, source: Source) {
        if let Some(slot) = self.by_key.get_mut(key as usize) {
            *slot = source;
        }
    }
}

/// The configuration in force for this process.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// ACCEL_ENABLE / VMA_OFFLOADED_SOCKETS: global on/off. Off = pure pass-through.
    pub enable: bool,
    pub profile: Profile,
    /// ACCEL_LOG_LEVEL / VMA_TRACELEVEL (number 0-6 or name).
    pub log_level: LogLevel,
    /// ACCEL_LOG_FILE / VMA_LOG_FILE; `%d` is replaced by the pid. None = stderr.
    pub log_file: Option<String>,
    /// ACCEL_CONFIG_FILE / VMA_CONFIG_FILE: the rules file (libvma.conf syntax).
    pub config_file: Option<PathBuf>,
    /// ACCEL_APPLICATION_ID / VMA_APPLICATION_ID: selects `application-id` sections of the rules.
    pub application_id: Option<String>,
    pub ring_allocation_rx: RingAllocation,
    pub ring_allocation_tx: RingAllocation,
    /// VMA_RING_MIGRATION_RATIO_RX/TX; -1 disables migration.
    pub ring_migration_ratio_rx: i64,
    pub ring_migration_ratio_tx: i64,
    /// VMA_RX_BUFS / VMA_TX_BUFS: packet buffers in the registered memory region.
    pub rx_bufs: u32,
    pub tx_bufs: u32,
    /// VMA_RX_WRE / VMA_TX_WRE: ring depth (posted descriptors).
    pub rx_wre: u32,
    pub tx_wre: u32,
    pub mem_alloc: MemAlloc,
    /// VMA_MTU: largest IP datagram the bypass carries.
    pub mtu: u32,
    /// VMA_RX_POLL: receive spin budget.
    pub rx_poll: PollBudget,
    /// VMA_SELECT_POLL: poll/select/epoll spin budget.
    pub select_poll: PollBudget,
    /// ACCEL_PRESERVE_ENV: re-insert LD_PRELOAD and ACCEL_*/VMA_* into exec'd images.
    pub preserve_env: bool,
    /// ACCEL_RX_POLL_OS_RATIO / VMA_RX_POLL_OS_RATIO: ring polls per look at the kernel socket.
    pub rx_poll_os_ratio: u32,
    /// ACCEL_SELECT_POLL_OS_RATIO / VMA_SELECT_POLL_OS_RATIO.
    pub select_poll_os_ratio: u32,
    /// ACCEL_SHM: the same-host shared-memory datapath.
    pub shm: bool,
    /// ACCEL_XDP: the AF_XDP (NIC bypass) datapath.
    pub xdp: bool,
    /// ACCEL_XDP_IFNAME: its interface (None: chosen by the first socket's address).
    pub xdp_ifname: Option<String>,
    /// ACCEL_XDP_MODE: how its program is attached.
    pub xdp_mode: crate::xdp::AttachMode,
    /// ACCEL_XDP_QUEUES: which receive queues it opens.
    pub xdp_queues: XdpQueues,
    /// ACCEL_XDP_TX_BATCH: sends per kick in copy mode (1: each send kicked at once).
    pub xdp_tx_batch: u32,
    /// ACCEL_XDP_TX_FLUSH_USEC: the longest a batched send waits for its kick.
    pub xdp_tx_flush_usec: u32,
    /// ACCEL_XDP_TX_CSUM_OFFLOAD: sends leave the UDP checksum to the device where they can.
    pub xdp_tx_csum_offload: bool,
    /// Where each value above came from. Code that builds a `Config` by hand can leave this at
    /// its default; it only feeds [`Config::describe`].
    pub sources: Sources,
}

impl Default for Config {
    /// The built-in defaults, as listed in [`VARIABLES`].
    fn default() -> Self {
        Config {
            enable: true,
            profile: Profile::Default,
            // libvma defaults to info and prints a banner; warn keeps a stock app's stderr as is.
            log_level: LogLevel::Warn,
            log_file: None,
            config_file: None,
            application_id: None,
            ring_allocation_rx: RingAllocation::PerInterface,
            ring_allocation_tx: RingAllocation::PerInterface,
            ring_migration_ratio_rx: 100,
            ring_migration_ratio_tx: 100,
            rx_bufs: 4096,
            tx_bufs: 2048,
            rx_wre: 1024,
            tx_wre: 1024,
            mem_alloc: MemAlloc::Anon,
            mtu: 1500,
            rx_poll: 100_000,
            select_poll: 100_000,
            preserve_env: true,
            rx_poll_os_ratio: 10,
            select_poll_os_ratio: 10,
            shm: true,
            xdp: false,
            xdp_ifname: None,
            xdp_mode: crate::xdp::AttachMode::Auto,
            xdp_queues: XdpQueues::All,
            xdp_tx_batch: 1,
            xdp_tx_flush_usec: 1000,
            xdp_tx_csum_offload: true,
            sources: Sources::default(),
        }
    }
}

/// One entry of [`Config::describe`]: a variable's effective value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Our name, e.g. "ACCEL_RX_BUFS".
    pub name: &'static str,
    /// The libvma alias, e.g. Some("VMA_RX_BUFS").
    pub alias: Option<&'static str>,
    /// The value as one would write it in the variable: "1", "latency", "2", "0". Empty when
    /// unset (no log file, no rules file, no application id).
    pub value: String,
    pub source: Source,
    pub help: &'static str,
}

impl Setting {
    /// The value for a person to read: "2 (warn)", "0 (per interface)", "4096", or "none" when
    /// unset.
    pub fn display_value(&self) -> String {
        let key = KEYS
            .iter()
            .copied()
            .find(|key| key.variable().name == self.name);
        Shown {
            value: self.value.clone(),
            meaning: key.and_then(|key| meaning_of(key, &self.value)),
        }
        .for_person()
    }
}

impl Config {
    /// Builds the configuration from a variable source (the process environment in production,
    /// a map in tests). Never fails: bad values become warnings and defaults.
    pub fn from_vars<F>(get: F) -> (Config, Vec<ConfigWarning>)
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut reader = Reader {
            get: &get,
            config: Config::default(),
            warnings: Vec::new(),
        };

        // The profile first: it is the layer the explicit variables are applied on top of.
        reader.read(Key::Profile, parse_profile, |c, profile| {
            c.profile = profile
        });
        let profile = reader.config.profile;
        profile.apply(&mut reader.config);

        reader.read(Key::Enable, parse_bool, |c, on| c.enable = on);
        reader.read_named(Key::LogLevel, parse_log_level, |c, level| {
            c.log_level = level
        });
        reader.read(Key::LogFile, parse_optional_text, |c, path| {
            c.log_file = path
        });
        reader.read(Key::ConfigFile, parse_optional_text, |c, path| {
            c.config_file = path.map(PathBuf::from)
        });
        // An id is a single token in the rules file, so surrounding blanks can only be a typo.
        reader.read(
            Key::ApplicationId,
            |raw| parse_optional_text(raw.trim()),
            |c, id| c.application_id = id,
        );
        reader.read(Key::RingAllocationRx, parse_ring_allocation, |c, logic| {
            c.ring_allocation_rx = logic
        });
        reader.read(Key::RingAllocationTx, parse_ring_allocation, |c, logic| {
            c.ring_allocation_tx = logic
        });
        reader.read(
            Key::RingMigrationRatioRx,
            parse_at_least_minus_one,
            |c, n| c.ring_migration_ratio_rx = n,
        );
        reader.read(
            Key::RingMigrationRatioTx,
            parse_at_least_minus_one,
            |c, n| c.ring_migration_ratio_tx = n,
        );
        reader.read(Key::RxBufs, parse_buffer_count, |c, n| c.rx_bufs = n);
        reader.read(Key::TxBufs, parse_buffer_count, |c, n| c.tx_bufs = n);
        reader.read(Key::RxWre, parse_ring_depth, |c, n| c.rx_wre = n);
        reader.read(Key::TxWre, parse_ring_depth, |c, n| c.tx_wre = n);
        reader.read(Key::MemAlloc, parse_mem_alloc, |c, kind| c.mem_alloc = kind);
        reader.read(Key::Mtu, parse_mtu, |c, n| c.mtu = n);
        reader.read(Key::RxPoll, parse_at_least_minus_one, |c, n| c.rx_poll = n);
        reader.read(Key::SelectPoll, parse_at_least_minus_one, |c, n| {
            c.select_poll = n
        });
        reader.read(Key::PreserveEnv, parse_bool, |c, on| c.preserve_env = on);
        reader.read(Key::RxPollOsRatio, |raw| exact(parse_u32(raw, 0, 1_000_000)), |c, n| {
            c.rx_poll_os_ratio = n
        });
        reader.read(Key::SelectPollOsRatio, |raw| exact(parse_u32(raw, 0, 1_000_000)), |c, n| {
            c.select_poll_os_ratio = n
        });
        reader.read(Key::Shm, parse_bool, |c, on| c.shm = on);
        reader.read(Key::Xdp, parse_bool, |c, on| c.xdp = on);
        reader.read(Key::XdpIfname, |raw| parse_optional_text(raw.trim()), |c, name| c.xdp_ifname = name);
        reader.read(Key::XdpMode, parse_xdp_mode, |c, mode| c.xdp_mode = mode);
        reader.read(Key::XdpQueues, parse_xdp_queues, |c, q| c.xdp_queues = q);
        reader.read(Key::XdpTxBatch, |raw| exact(parse_u32(raw, 1, 1024)), |c, n| c.xdp_tx_batch = n);
        reader.read(Key::XdpTxFlushUsec, |raw| exact(parse_u32(raw, 1, 100_000)), |c, n| c.xdp_tx_flush_usec = n);
        reader.read(Key::XdpTxCsumOffload, parse_bool, |c, on| c.xdp_tx_csum_offload = on);

        (reader.config, reader.warnings)
    }

    /// From the real process environment. A value that is not valid UTF-8 is read lossily, so it
    /// is reported as a bad value rather than silently ignored.
    pub fn from_env() -> (Config, Vec<ConfigWarning>) {
        Config::from_vars(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Every variable with its effective value and source, in documentation order.
    pub fn describe(&self) -> Vec<Setting> {
        KEYS.iter()
            .map(|&key| {
                let variable = key.variable();
                let shown = self.shown(key);
                Setting {
                    name: variable.name,
                    alias: variable.alias,
                    value: shown.value,
                    source: self.sources.of(key).clone(),
                    help: variable.help,
                }
            })
            .collect()
    }

    /// Where the setting called `name` (our name or its alias) came from.
    pub fn source_of(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    /// The log file path with `%d` replaced by `pid`.
    pub fn log_path(&self, pid: u32) -> Option<String> {
        self.log_file
            .as_ref()
            .map(|p| p.replace("%d", &pid.to_string()))
    }

    /// The current value of one setting, as written in its variable, with its meaning.
    fn shown(&self, key: Key) -> Shown {
        let flag = |on: bool| if on { "1" } else { "0" }.to_string();
        let value = match key {
            Key::Enable => flag(self.enable),
            Key::Profile => self.profile.name().to_string(),
            Key::LogLevel => (self.log_level as u8).to_string(),
            Key::LogFile => self.log_file.clone().unwrap_or_default(),
            Key::ConfigFile => self
                .config_file
                .as_ref()
                .map(|path| path.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Key::ApplicationId => self.application_id.clone().unwrap_or_default(),
            Key::RingAllocationRx => self.ring_allocation_rx.code().to_string(),
            Key::RingAllocationTx => self.ring_allocation_tx.code().to_string(),
            Key::RingMigrationRatioRx => self.ring_migration_ratio_rx.to_string(),
            Key::RingMigrationRatioTx => self.ring_migration_ratio_tx.to_string(),
            Key::RxBufs => self.rx_bufs.to_string(),
            Key::TxBufs => self.tx_bufs.to_string(),
            Key::RxWre => self.rx_wre.to_string(),
            Key::TxWre => self.tx_wre.to_string(),
            Key::MemAlloc => self.mem_alloc.code().to_string(),
            Key::Mtu => self.mtu.to_string(),
            Key::RxPoll => self.rx_poll.to_string(),
            Key::SelectPoll => self.select_poll.to_string(),
            Key::PreserveEnv => flag(self.preserve_env),
            Key::RxPollOsRatio => self.rx_poll_os_ratio.to_string(),
            Key::SelectPollOsRatio => self.select_poll_os_ratio.to_string(),
            Key::Shm => flag(self.shm),
            Key::Xdp => flag(self.xdp),
            Key::XdpIfname => self.xdp_ifname.clone().unwrap_or_default(),
            Key::XdpMode => self.xdp_mode.name().to_string(),
            Key::XdpQueues => self.xdp_queues.to_string(),
            Key::XdpTxBatch => self.xdp_tx_batch.to_string(),
            Key::XdpTxFlushUsec => self.xdp_tx_flush_usec.to_string(),
            Key::XdpTxCsumOffload => flag(self.xdp_tx_csum_offload),
        };
        Shown {
            meaning: meaning_of(key, &value),
            value,
        }
    }
}

/// What a value means when the number alone says little: "warn" for log level 2,
/// "per socket" for ring allocation logic 10.
fn meaning_of(key: Key, value: &str) -> Option<&'static str> {
    let code = value.parse::<i64>().ok()?;
    match key {
        Key::LogLevel => u8::try_from(code)
            .ok()
            .and_then(LogLevel::from_u8)
            .map(LogLevel::name),
        Key::RingAllocationRx | Key::RingAllocationTx => {
            RingAllocation::from_code(code).map(RingAllocation::name)
        }
        Key::MemAlloc => MemAlloc::from_code(code).map(MemAlloc::name),
        _ => None,
    }
}

/// A value as written in its variable, plus what that means when the number alone says little.
struct Shown {
    value: String,
    meaning: Option<&'static str>,
}

impl Shown {
    /// "2 (warn)", "4096", or "none" for an unset path or id.
    fn for_person(&self) -> String {
        self.annotated(None)
    }

    /// Like `for_person`, with a note on where the value comes from: "4096 (default)",
    /// "2 (warn; default)".
    fn annotated(&self, note: Option<&str>) -> String {
        let value = if self.value.is_empty() {
            "none"
        } else {
            self.value.as_str()
        };
        match (self.meaning, note) {
            (None, None) => value.to_string(),
            (Some(meaning), None) => format!("{value} ({meaning})"),
            (None, Some(note)) => format!("{value} ({note})"),
            (Some(meaning), Some(note)) => format!("{value} ({meaning}; {note})"),
        }
    }
}

/// A value accepted after changing it, which the user is told about (a ring depth rounded up).
struct Adjusted {
    problem: String,
    note: &'static str,
}

/// What a variable parser returns: the value to use, possibly adjusted, or why it was rejected.
type Parsed<T> = Result<(T, Option<Adjusted>), String>;

/// Reads variables one at a time into `config`, collecting warnings.
struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    config: Config,
    warnings: Vec<ConfigWarning>,
}

impl Reader<'_> {
    /// The value set for `key` and the name it was set under: ours first, then the alias.
    fn raw(&self, key: Key) -> Option<(&'static str, String)> {
        let variable = key.variable();
        if let Some(value) = (self.get)(variable.name) {
            return Some((variable.name, value));
        }
        let alias = variable.alias?;
        (self.get)(alias).map(|value| (alias, value))
    }

    /// Parses `key` if it is set and stores it; a rejected value leaves the default or profile
    /// value in place and becomes one warning.
    fn read<T>(
        &mut self,
        key: Key,
        parse: impl Fn(&str) -> Parsed<T>,
        store: impl FnOnce(&mut Config, T),
    ) {
        self.read_named(key, |_, raw| parse(raw), store)
    }

    /// As [`read`](Self::read), for values whose meaning depends on which name set them.
    fn read_named<T>(
        &mut self,
        key: Key,
        parse: impl Fn(&str, &str) -> Parsed<T>,
        store: impl FnOnce(&mut Config, T),
    ) {
        let Some((name, raw)) = self.raw(key) else {
            return;
        };
        match parse(name, &raw) {
            Ok((value, adjusted)) => {
                store(&mut self.config, value);
                self.config.sources.set(key, Source::Env(name.to_string()));
                if let Some(adjusted) = adjusted {
                    let used = self.config.shown(key).annotated(Some(adjusted.note));
                    self.warn(name, raw, adjusted.problem, used);
                }
            }
            Err(problem) => {
                let origin = self.config.sources.of(key).to_string();
                let used = self.config.shown(key).annotated(Some(&origin));
                self.warn(name, raw, problem, used);
            }
        }
    }

    fn warn(&mut self, variable: &str, value: String, problem: String, used: String) {
        self.warnings.push(ConfigWarning {
            variable: variable.to_string(),
            value,
            problem,
            used,
        });
    }
}

// Parsers, one per kind of value. Each takes the value as given (untrimmed) and never panics.

fn exact<T>(result: Result<T, String>) -> Parsed<T> {
    result.map(|value| (value, None))
}

fn range_problem(lo: i64, hi: i64) -> String {
    if hi == i64::MAX {
        format!("out of range (minimum {lo})")
    } else {
        format!("out of range {lo}..={hi}")
    }
}

/// A decimal integer in `lo..=hi`, surrounding whitespace ignored.
fn parse_integer(raw: &str, lo: i64, hi: i64) -> Result<i64, String> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("empty".to_string());
    }
    match text.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        Ok(_) => Err(range_problem(lo, hi)),
        // Too many digits is still a number, just one far out of range.
        Err(e)
            if matches!(
                e.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            ) =>
        {
            Err(range_problem(lo, hi))
        }
        Err(_) => Err("not a number".to_string()),
    }
}

fn parse_u32(raw: &str, lo: u32, hi: u32) -> Result<u32, String> {
    let n = parse_integer(raw, i64::from(lo), i64::from(hi))?;
    u32::try_from(n).map_err(|_| range_problem(i64::from(lo), i64::from(hi)))
}

fn parse_bool(raw: &str) -> Parsed<bool> {
    let text = raw.trim();
    exact(match text.to_ascii_lowercase().as_str() {
        "" => Err("empty".to_string()),
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean (0/1, true/false, yes/no, on/off)".to_string()),
    })
}

fn parse_profile(raw: &str) -> Parsed<Profile> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("empty".to_string());
    }
    exact(
        Profile::from_name(text).ok_or_else(|| {
            "unknown profile (default, latency, ultra-latency, throughput)".to_string()
        }),
    )
}

/// libvma numbers its levels 0 panic, 1 error, 2 warning, 3 info, 4 details, 5 debug, 6 fine,
/// 7 finer: a number given through VMA_TRACELEVEL means what it meant to libvma.
fn libvma_log_level(n: i64) -> Option<LogLevel> {
    Some(match n {
        0 | 1 => LogLevel::Error, // accel never logs at "panic": errors are the closest
        2 => LogLevel::Warn,
        3 | 4 => LogLevel::Info,
        5 => LogLevel::Debug,
        6 => LogLevel::Fine,
        7 => LogLevel::Finer,
        _ => return None,
    })
}

fn parse_log_level(name: &str, raw: &str) -> Parsed<LogLevel> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("empty".to_string());
    }
    // A leading digit or sign means the user meant a number; report it as one.
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        if name.starts_with("VMA_") {
            let n = parse_integer(text, 0, 7)?;
            return exact(libvma_log_level(n).ok_or_else(|| range_problem(0, 7)));
        }
        let n = parse_integer(text, 0, 6)?;
        let level = u8::try_from(n).ok().and_then(LogLevel::from_u8);
        return exact(level.ok_or_else(|| range_problem(0, 6)));
    }
    exact(LogLevel::from_name(text).ok_or_else(|| {
        "unknown log level (0-6, or none, error, warn, info, debug, fine, finer)".to_string()
    }))
}

/// A path or id; empty means none, which is how a wrapper script unsets a variable it inherits.
fn parse_xdp_mode(raw: &str) -> Parsed<crate::xdp::AttachMode> {
    exact(crate::xdp::AttachMode::from_name(raw.trim()).ok_or_else(|| "not an XDP mode (auto, native, generic)".to_string()))
}

/// `all`, a count (1..=256), or a range `FIRST-LAST` (0..=255).
fn parse_xdp_queues(raw: &str) -> Parsed<XdpQueues> {
    let text = raw.trim();
    if text.eq_ignore_ascii_case("all") {
        return exact(Ok(XdpQueues::All));
    }
    if let Some((a, b)) = text.split_once('-') {
        let first = parse_integer(a, 0, 255)? as u32;
        let last = parse_integer(b, 0, 255)? as u32;
        if first > last {
            return Err("a range FIRST-LAST with FIRST <= LAST".to_string());
        }
        return exact(Ok(XdpQueues::Range(first, last)));
    }
    let n = parse_integer(text, 1, 256).map_err(|e| format!("{e} (all, a count, or FIRST-LAST)"))?;
    exact(Ok(XdpQueues::Count(n as u32)))
}

/// ACCEL_XDP_QUEUES: which receive queues of its interface the AF_XDP datapath opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpQueues {
    /// Every receive queue the interface has.
    All,
    /// Queues 0..N-1 (at most as many as the interface has).
    Count(u32),
    /// Queues FIRST..=LAST (those the interface has).
    Range(u32, u32),
}

impl XdpQueues {
    /// The queues to open on an interface with `available` receive queues.
    pub fn select(self, available: u32) -> Vec<u32> {
        let available = available.clamp(1, 256);
        match self {
            XdpQueues::All => (0..available).collect(),
            XdpQueues::Count(n) => (0..n.min(available)).collect(),
            XdpQueues::Range(first, last) => (first..=last.min(available - 1)).collect(),
        }
    }
}

impl std::fmt::Display for XdpQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdpQueues::All => write!(f, "all"),
            XdpQueues::Count(n) => write!(f, "{n}"),
            XdpQueues::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

fn parse_optional_text(raw: &str) -> Parsed<Option<String>> {
    Ok((Some(raw.to_string()).filter(|text| !text.is_empty()), None))
}

fn parse_ring_allocation(raw: &str) -> Parsed<RingAllocation> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("empty".to_string());
    }
    let logic = text.parse::<i64>().ok().and_then(RingAllocation::from_code);
    exact(logic.ok_or_else(|| "not a ring allocation logic (0, 1, 10, 20, 30 or 31)".to_string()))
}

fn parse_mem_alloc(raw: &str) -> Parsed<MemAlloc> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("empty".to_string());
    }
    let kind = match text.parse::<i64>() {
        Ok(code) => MemAlloc::from_code(code),
        Err(_) => MemAlloc::from_name(text),
    };
    exact(kind.ok_or_else(|| "not a memory allocation type (0/anon, 1/contig, 2/huge)".to_string()))
}

/// Ratios and poll budgets: any integer, with -1 as the special "never"/"forever".
fn parse_at_least_minus_one(raw: &str) -> Parsed<i64> {
    exact(parse_integer(raw, -1, i64::MAX))
}

fn parse_buffer_count(raw: &str) -> Parsed<u32> {
    exact(parse_u32(raw, 64, 4_194_304))
}

fn parse_mtu(raw: &str) -> Parsed<u32> {
    exact(parse_u32(raw, 576, 9000))
}

/// Ring depths must be powers of two (the ring index wraps with a mask), so a value in range
/// that is not one is rounded up rather than rejected: the user asked for at least that many.
fn parse_ring_depth(raw: &str) -> Parsed<u32> {
    let depth = parse_u32(raw, 32, 65536)?;
    if depth.is_power_of_two() {
        return Ok((depth, None));
    }
    // Cannot overflow below 65536; the fallback only keeps this path panic-free.
    let rounded = depth.checked_next_power_of_two().unwrap_or(65536);
    Ok((
        rounded,
        Some(Adjusted {
            problem: "not a power of two".to_string(),
            note: "rounded up",
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_from(pairs: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| vars.get(k).cloned())
    }

    fn setting<'a>(settings: &'a [Setting], name: &str) -> &'a Setting {
        settings
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} missing from describe()"))
    }

    fn env(name: &str) -> Source {
        Source::Env(name.to_string())
    }

    #[test]
    fn no_variables_gives_the_documented_defaults() {
        let (config, warnings) = config_from(&[]);
        assert!(warnings.is_empty());
        assert_eq!(config, Config::default());
        assert!(config.enable);
        assert_eq!(config.profile, Profile::Default);
        assert_eq!(config.log_level, LogLevel::Warn);
        assert_eq!(config.log_file, None);
        assert_eq!(config.config_file, None);
        assert_eq!(config.application_id, None);
        assert_eq!(config.ring_allocation_rx, RingAllocation::PerInterface);
        assert_eq!(config.ring_allocation_tx, RingAllocation::PerInterface);
        assert_eq!(config.ring_migration_ratio_rx, 100);
        assert_eq!(config.ring_migration_ratio_tx, 100);
        assert_eq!(config.rx_bufs, 4096);
        assert_eq!(config.tx_bufs, 2048);
        assert_eq!(config.rx_wre, 1024);
        assert_eq!(config.tx_wre, 1024);
        assert_eq!(config.mem_alloc, MemAlloc::Anon);
        assert_eq!(config.mtu, 1500);
        assert_eq!(config.rx_poll, 100_000);
        assert_eq!(config.select_poll, 100_000);
        assert!(config.preserve_env);
        for s in config.describe() {
            assert_eq!(s.source, Source::Default, "{}", s.name);
        }
    }

    #[test]
    fn documented_defaults_match_default_values() {
        // The `default` column of VARIABLES is what the docs show; it must be what we use.
        for s in Config::default().describe() {
            let documented = VARIABLES.iter().find(|v| v.name == s.name).unwrap().default;
            if s.value.is_empty() {
                assert!(documented.starts_with("none"), "{}: {documented}", s.name);
            } else {
                assert_eq!(s.value, documented, "{}", s.name);
            }
        }
    }

    /// For each setting: a valid non-default value as one would write it, and its canonical form.
    const SAMPLES: [(&str, &str, &str); VARIABLE_COUNT] = [
        ("ACCEL_ENABLE", "off", "0"),
        ("ACCEL_PROFILE", "Throughput", "throughput"),
        ("ACCEL_LOG_LEVEL", "info", "3"),
        ("ACCEL_LOG_FILE", "/tmp/accel.%d.log", "/tmp/accel.%d.log"),
        ("ACCEL_CONFIG_FILE", "/etc/libvma.conf", "/etc/libvma.conf"),
        ("ACCEL_APPLICATION_ID", "B1", "B1"),
        ("ACCEL_RING_ALLOCATION_LOGIC_RX", "10", "10"),
        ("ACCEL_RING_ALLOCATION_LOGIC_TX", "31", "31"),
        ("ACCEL_RING_MIGRATION_RATIO_RX", "-1", "-1"),
        ("ACCEL_RING_MIGRATION_RATIO_TX", "7", "7"),
        ("ACCEL_RX_BUFS", "64", "64"),
        ("ACCEL_TX_BUFS", "4194304", "4194304"),
        ("ACCEL_RX_WRE", "32", "32"),
        ("ACCEL_TX_WRE", "65536", "65536"),
        ("ACCEL_MEM_ALLOC_TYPE", "huge", "2"),
        ("ACCEL_MTU", "9000", "9000"),
        ("ACCEL_RX_POLL", "0", "0"),
        ("ACCEL_SELECT_POLL", "-1", "-1"),
        ("ACCEL_PRESERVE_ENV", "no", "0"),
        ("ACCEL_SHM", "on", "1"),
        ("ACCEL_RX_POLL_OS_RATIO", "100", "100"),
        ("ACCEL_SELECT_POLL_OS_RATIO", "1", "1"),
        ("ACCEL_XDP", "yes", "1"),
        ("ACCEL_XDP_IFNAME", "eth1", "eth1"),
        ("ACCEL_XDP_MODE", "SKB", "generic"),
        ("ACCEL_XDP_QUEUES", " 2-3", "2-3"),
        ("ACCEL_XDP_TX_BATCH", "32", "32"),
        ("ACCEL_XDP_TX_FLUSH_USEC", "20", "20"),
        ("ACCEL_XDP_TX_CSUM_OFFLOAD", "off", "0"),
    ];

    fn set_under(name: &str, input: &str, expected: &str, ours: &str) {
        let (config, warnings) = config_from(&[(name, input)]);
        assert!(warnings.is_empty(), "{name}={input}: {warnings:?}");
        let settings = config.describe();
        let s = setting(&settings, ours);
        assert_eq!(s.value, expected, "{name}={input}");
        assert_eq!(s.source, env(name), "{name}={input}");
    }

    #[test]
    fn every_variable_is_read_under_our_name() {
        for (name, input, expected) in SAMPLES {
            set_under(name, input, expected, name);
        }
    }

    #[test]
    fn every_variable_is_read_under_its_libvma_alias() {
        for (name, input, expected) in SAMPLES {
            let variable = VARIABLES.iter().find(|v| v.name == name).unwrap();
            if let Some(alias) = variable.alias {
                set_under(alias, input, expected, name);
            }
        }
    }

    #[test]
    fn aliases_set_the_fields() {
        let (config, warnings) = config_from(&[
            ("VMA_OFFLOADED_SOCKETS", "0"),
            ("VMA_SPEC", "latency"),
            ("VMA_TRACELEVEL", "debug"),
            ("VMA_LOG_FILE", "/tmp/vma.log"),
            ("VMA_CONFIG_FILE", "/etc/libvma.conf"),
            ("VMA_APPLICATION_ID", "B1"),
            ("VMA_RING_ALLOCATION_LOGIC_RX", "20"),
            ("VMA_RING_ALLOCATION_LOGIC_TX", "1"),
            ("VMA_RING_MIGRATION_RATIO_RX", "-1"),
            ("VMA_RING_MIGRATION_RATIO_TX", "50"),
            ("VMA_RX_BUFS", "100000"),
            ("VMA_TX_BUFS", "64"),
            ("VMA_RX_WRE", "256"),
            ("VMA_TX_WRE", "64"),
            ("VMA_MEM_ALLOC_TYPE", "1"),
            ("VMA_MTU", "576"),
            ("VMA_RX_POLL", "5"),
            ("VMA_SELECT_POLL", "0"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!config.enable);
        assert_eq!(config.profile, Profile::Latency);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.log_file.as_deref(), Some("/tmp/vma.log"));
        assert_eq!(config.config_file, Some(PathBuf::from("/etc/libvma.conf")));
        assert_eq!(config.application_id.as_deref(), Some("B1"));
        assert_eq!(config.ring_allocation_rx, RingAllocation::PerThread);
        assert_eq!(config.ring_allocation_tx, RingAllocation::PerIp);
        assert_eq!(config.ring_migration_ratio_rx, -1);
        assert_eq!(config.ring_migration_ratio_tx, 50);
        assert_eq!(config.rx_bufs, 100_000);
        assert_eq!(config.tx_bufs, 64);
        assert_eq!(config.rx_wre, 256);
        assert_eq!(config.tx_wre, 64);
        assert_eq!(config.mem_alloc, MemAlloc::Contiguous);
        assert_eq!(config.mtu, 576);
        assert_eq!(config.rx_poll, 5);
        assert_eq!(config.select_poll, 0);
    }

    #[test]
    fn our_name_wins_over_the_alias() {
        let (config, warnings) = config_from(&[
            ("ACCEL_RX_BUFS", "1000"),
            ("VMA_RX_BUFS", "2000"),
            ("VMA_SPEC", "latency"),
            ("ACCEL_PROFILE", "throughput"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.rx_bufs, 1000);
        assert_eq!(config.source_of("VMA_RX_BUFS"), Some(&env("ACCEL_RX_BUFS")));
        assert_eq!(config.profile, Profile::Throughput);
    }

    #[test]
    fn our_name_wins_even_when_its_value_is_bad() {
        // The alias is not consulted: a bad ACCEL_* value falls back to the default.
        let (config, warnings) = config_from(&[("ACCEL_MTU", "big"), ("VMA_MTU", "9000")]);
        assert_eq!(config.mtu, 1500);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].variable, "ACCEL_MTU");
    }

    #[test]
    fn latency_profile_spins_forever() {
        let (config, warnings) = config_from(&[("ACCEL_PROFILE", "latency")]);
        assert!(warnings.is_empty());
        assert_eq!(config.profile, Profile::Latency);
        assert_eq!((config.rx_poll, config.select_poll), (-1, -1));
        let profile = Source::Profile(Profile::Latency);
        assert_eq!(config.source_of("ACCEL_RX_POLL"), Some(&profile));
        assert_eq!(config.source_of("ACCEL_SELECT_POLL"), Some(&profile));
        // Everything else stays at its default.
        let expected = Config {
            profile: Profile::Latency,
            rx_poll: -1,
            select_poll: -1,
            sources: config.sources.clone(),
            ..Config::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn ultra_latency_profile_adds_private_rings() {
        for name in ["ultra-latency", "ULTRA_LATENCY", " Ultra-Latency "] {
            let (config, warnings) = config_from(&[("VMA_SPEC", name)]);
            assert!(warnings.is_empty(), "{name}");
            assert_eq!(config.profile, Profile::UltraLatency);
            assert_eq!((config.rx_poll, config.select_poll), (-1, -1));
            assert_eq!(config.ring_allocation_rx, RingAllocation::PerSocket);
            assert_eq!(config.ring_allocation_tx, RingAllocation::PerSocket);
            assert_eq!(config.ring_migration_ratio_rx, -1);
            assert_eq!(config.ring_migration_ratio_tx, -1);
            assert_eq!(config.rx_bufs, 4096);
            let profile = Source::Profile(Profile::UltraLatency);
            assert_eq!(
                config.source_of("VMA_RING_ALLOCATION_LOGIC_TX"),
                Some(&profile)
            );
            assert_eq!(config.source_of("ACCEL_RX_BUFS"), Some(&Source::Default));
            assert_eq!(config.source_of("ACCEL_PROFILE"), Some(&env("VMA_SPEC")));
        }
    }

    #[test]
    fn throughput_profile_trades_spin_for_batches() {
        let (config, warnings) = config_from(&[("ACCEL_PROFILE", "throughput")]);
        assert!(warnings.is_empty());
        assert_eq!((config.rx_poll, config.select_poll), (1000, 1000));
        assert_eq!((config.rx_bufs, config.tx_bufs), (32768, 8192));
        assert_eq!((config.rx_wre, config.tx_wre), (16384, 4096));
        assert_eq!((config.xdp_tx_batch, config.xdp_tx_flush_usec), (32, 1000));
        assert_eq!(config.ring_allocation_rx, RingAllocation::PerInterface);
        assert_eq!(config.ring_migration_ratio_rx, 100);
    }

    #[test]
    fn default_profile_changes_nothing() {
        let (config, warnings) = config_from(&[("ACCEL_PROFILE", "DEFAULT")]);
        assert!(warnings.is_empty());
        let mut expected = Config::default();
        expected.sources.set(Key::Profile, env("ACCEL_PROFILE"));
        assert_eq!(config, expected);
    }

    #[test]
    fn explicit_variables_override_the_profile() {
        let (config, warnings) = config_from(&[
            ("ACCEL_PROFILE", "ultra-latency"),
            ("ACCEL_RX_POLL", "500"),
            ("VMA_RING_ALLOCATION_LOGIC_TX", "0"),
        ]);
        assert!(warnings.is_empty());
        assert_eq!(config.rx_poll, 500);
        assert_eq!(config.select_poll, -1);
        assert_eq!(config.ring_allocation_rx, RingAllocation::PerSocket);
        assert_eq!(config.ring_allocation_tx, RingAllocation::PerInterface);
        assert_eq!(
            config.source_of("ACCEL_RX_POLL"),
            Some(&env("ACCEL_RX_POLL"))
        );
        assert_eq!(
            config.source_of("ACCEL_SELECT_POLL"),
            Some(&Source::Profile(Profile::UltraLatency))
        );

        let (config, _) = config_from(&[("ACCEL_PROFILE", "throughput"), ("ACCEL_RX_WRE", "64")]);
        assert_eq!((config.rx_wre, config.tx_wre), (64, 4096));
    }

    #[test]
    fn bad_value_under_a_profile_falls_back_to_the_profile_value() {
        let (config, warnings) =
            config_from(&[("ACCEL_PROFILE", "throughput"), ("VMA_RX_BUFS", "many")]);
        assert_eq!(config.rx_bufs, 32768);
        assert_eq!(
            warnings,
            vec![ConfigWarning {
                variable: "VMA_RX_BUFS".into(),
                value: "many".into(),
                problem: "not a number".into(),
                used: "32768 (throughput profile)".into(),
            }]
        );
        assert_eq!(
            config.source_of("ACCEL_RX_BUFS"),
            Some(&Source::Profile(Profile::Throughput))
        );
    }

    /// (variable, value, problem, used): each must give exactly this one warning.
    const BAD_INPUTS: &[(&str, &str, &str, &str)] = &[
        (
            "ACCEL_ENABLE",
            "maybe",
            "not a boolean (0/1, true/false, yes/no, on/off)",
            "1 (default)",
        ),
        ("ACCEL_ENABLE", "", "empty", "1 (default)"),
        (
            "ACCEL_ENABLE",
            "2",
            "not a boolean (0/1, true/false, yes/no, on/off)",
            "1 (default)",
        ),
        ("VMA_OFFLOADED_SOCKETS", "   ", "empty", "1 (default)"),
        (
            "ACCEL_PROFILE",
            "fast",
            "unknown profile (default, latency, ultra-latency, throughput)",
            "default (default)",
        ),
        (
            "VMA_SPEC",
            "6973",
            "unknown profile (default, latency, ultra-latency, throughput)",
            "default (default)",
        ),
        ("ACCEL_PROFILE", "", "empty", "default (default)"),
        (
            "ACCEL_LOG_LEVEL",
            "7",
            "out of range 0..=6",
            "2 (warn; default)",
        ),
        (
            "ACCEL_LOG_LEVEL",
            "-1",
            "out of range 0..=6",
            "2 (warn; default)",
        ),
        (
            "ACCEL_LOG_LEVEL",
            "99999999999999999999",
            "out of range 0..=6",
            "2 (warn; default)",
        ),
        (
            "VMA_TRACELEVEL",
            "chatty",
            "unknown log level (0-6, or none, error, warn, info, debug, fine, finer)",
            "2 (warn; default)",
        ),
        ("ACCEL_LOG_LEVEL", "3x", "not a number", "2 (warn; default)"),
        (
            "ACCEL_RING_ALLOCATION_LOGIC_RX",
            "2",
            "not a ring allocation logic (0, 1, 10, 20, 30 or 31)",
            "0 (per interface; default)",
        ),
        (
            "VMA_RING_ALLOCATION_LOGIC_TX",
            "per-socket",
            "not a ring allocation logic (0, 1, 10, 20, 30 or 31)",
            "0 (per interface; default)",
        ),
        (
            "ACCEL_RING_ALLOCATION_LOGIC_TX",
            "",
            "empty",
            "0 (per interface; default)",
        ),
        (
            "ACCEL_RING_MIGRATION_RATIO_RX",
            "-2",
            "out of range (minimum -1)",
            "100 (default)",
        ),
        (
            "VMA_RING_MIGRATION_RATIO_TX",
            "1.5",
            "not a number",
            "100 (default)",
        ),
        ("ACCEL_RX_BUFS", "abc", "not a number", "4096 (default)"),
        (
            "VMA_RX_BUFS",
            "-64",
            "out of range 64..=4194304",
            "4096 (default)",
        ),
        (
            "ACCEL_RX_BUFS",
            "63",
            "out of range 64..=4194304",
            "4096 (default)",
        ),
        (
            "ACCEL_RX_BUFS",
            "4194305",
            "out of range 64..=4194304",
            "4096 (default)",
        ),
        (
            "ACCEL_RX_BUFS",
            "99999999999999999999",
            "out of range 64..=4194304",
            "4096 (default)",
        ),
        (
            "ACCEL_RX_BUFS",
            "-99999999999999999999",
            "out of range 64..=4194304",
            "4096 (default)",
        ),
        ("ACCEL_TX_BUFS", "", "empty", "2048 (default)"),
        ("ACCEL_TX_BUFS", "0x800", "not a number", "2048 (default)"),
        ("ACCEL_TX_BUFS", "2 048", "not a number", "2048 (default)"),
        (
            "ACCEL_RX_WRE",
            "16",
            "out of range 32..=65536",
            "1024 (default)",
        ),
        (
            "ACCEL_RX_WRE",
            "65537",
            "out of range 32..=65536",
            "1024 (default)",
        ),
        ("VMA_TX_WRE", "lots", "not a number", "1024 (default)"),
        (
            "ACCEL_MEM_ALLOC_TYPE",
            "3",
            "not a memory allocation type (0/anon, 1/contig, 2/huge)",
            "0 (anon; default)",
        ),
        (
            "ACCEL_MEM_ALLOC_TYPE",
            "malloc",
            "not a memory allocation type (0/anon, 1/contig, 2/huge)",
            "0 (anon; default)",
        ),
        (
            "ACCEL_MTU",
            "575",
            "out of range 576..=9000",
            "1500 (default)",
        ),
        (
            "ACCEL_MTU",
            "9001",
            "out of range 576..=9000",
            "1500 (default)",
        ),
        ("VMA_MTU", "1500.0", "not a number", "1500 (default)"),
        (
            "ACCEL_RX_POLL",
            "-2",
            "out of range (minimum -1)",
            "100000 (default)",
        ),
        (
            "ACCEL_RX_POLL",
            "99999999999999999999",
            "out of range (minimum -1)",
            "100000 (default)",
        ),
        (
            "ACCEL_RX_POLL",
            "forever",
            "not a number",
            "100000 (default)",
        ),
        ("VMA_SELECT_POLL", "\t", "empty", "100000 (default)"),
        (
            "ACCEL_PRESERVE_ENV",
            "keep",
            "not a boolean (0/1, true/false, yes/no, on/off)",
            "1 (default)",
        ),
        ("ACCEL_XDP_TX_BATCH", "0", "out of range 1..=1024", "1 (default)"),
        ("ACCEL_XDP_TX_FLUSH_USEC", "1s", "not a number", "1000 (default)"),
        ("ACCEL_XDP_TX_CSUM_OFFLOAD", "hw", "not a boolean (0/1, true/false, yes/no, on/off)", "1 (default)"),
    ];

    #[test]
    fn every_bad_value_gives_one_warning_and_the_default() {
        for &(variable, value, problem, used) in BAD_INPUTS {
            let (config, warnings) = config_from(&[(variable, value)]);
            assert_eq!(
                warnings,
                vec![ConfigWarning {
                    variable: variable.into(),
                    value: value.into(),
                    problem: problem.into(),
                    used: used.into(),
                }],
                "{variable}={value:?}"
            );
            // The value in force is the default, and its source says so.
            assert_eq!(config, Config::default(), "{variable}={value:?}");
        }
    }

    #[test]
    fn bad_values_do_not_disturb_good_ones() {
        let (config, warnings) = config_from(&[
            ("ACCEL_RX_BUFS", "x"),
            ("ACCEL_TX_BUFS", "8192"),
            ("ACCEL_MTU", "1"),
            ("ACCEL_LOG_LEVEL", "debug"),
        ]);
        assert_eq!(warnings.len(), 2);
        assert_eq!(config.tx_bufs, 8192);
        assert_eq!(config.log_level, LogLevel::Debug);
        // Warnings come in documentation order.
        assert_eq!(warnings[0].variable, "ACCEL_RX_BUFS");
        assert_eq!(warnings[1].variable, "ACCEL_MTU");
    }

    #[test]
    fn surrounding_whitespace_is_accepted() {
        let (config, warnings) = config_from(&[
            ("ACCEL_RX_BUFS", " 8192 "),
            ("ACCEL_ENABLE", "\tOn\n"),
            ("ACCEL_LOG_LEVEL", " 4"),
            ("ACCEL_MEM_ALLOC_TYPE", " Contig "),
            ("ACCEL_APPLICATION_ID", " B1 "),
            ("ACCEL_RING_ALLOCATION_LOGIC_RX", " 30 "),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.rx_bufs, 8192);
        assert!(config.enable);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.mem_alloc, MemAlloc::Contiguous);
        assert_eq!(config.application_id.as_deref(), Some("B1"));
        assert_eq!(config.ring_allocation_rx, RingAllocation::PerCore);
    }

    #[test]
    fn booleans_accept_every_documented_spelling() {
        for (text, expected) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("On", true),
            ("0", false),
            ("False", false),
            ("no", false),
            ("OFF", false),
        ] {
            let (config, warnings) = config_from(&[("ACCEL_ENABLE", text)]);
            assert!(warnings.is_empty());
            assert_eq!(config.enable, expected, "{text}");
        }
    }

    #[test]
    fn log_levels_accept_numbers_our_names_and_libvma_names() {
        for (text, expected) in [
            ("none", LogLevel::None),
            ("ERROR", LogLevel::Error),
            ("warning", LogLevel::Warn),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("fine", LogLevel::Fine),
            ("finer", LogLevel::Finer),
            ("panic", LogLevel::Error),
            ("details", LogLevel::Info),
            ("func", LogLevel::Fine),
            ("func_all", LogLevel::Finer),
            ("funcall", LogLevel::Finer),
        ] {
            let (config, warnings) = config_from(&[("VMA_TRACELEVEL", text)]);
            assert!(warnings.is_empty(), "{text}");
            assert_eq!(config.log_level, expected, "{text}");
        }
    }

    #[test]
    fn numeric_levels_follow_the_numbering_of_the_name_that_set_them() {
        // Ours: 0 none .. 6 finer. libvma's: 0 panic, 1 error, 2 warning, 3 info, 4 details,
        // 5 debug, 6 fine, 7 finer.
        for (n, ours, libvma) in [
            ("0", LogLevel::None, LogLevel::Error),
            ("2", LogLevel::Warn, LogLevel::Warn),
            ("4", LogLevel::Debug, LogLevel::Info),
            ("5", LogLevel::Fine, LogLevel::Debug),
            ("6", LogLevel::Finer, LogLevel::Fine),
        ] {
            let (config, warnings) = config_from(&[("ACCEL_LOG_LEVEL", n)]);
            assert!(warnings.is_empty());
            assert_eq!(config.log_level, ours, "ACCEL_LOG_LEVEL={n}");
            let (config, warnings) = config_from(&[("VMA_TRACELEVEL", n)]);
            assert!(warnings.is_empty());
            assert_eq!(config.log_level, libvma, "VMA_TRACELEVEL={n}");
        }
        let (config, warnings) = config_from(&[("VMA_TRACELEVEL", "7")]);
        assert!(warnings.is_empty());
        assert_eq!(config.log_level, LogLevel::Finer);
        let (_, warnings) = config_from(&[("ACCEL_LOG_LEVEL", "7")]);
        assert_eq!(warnings.len(), 1, "7 is out of range for ours");
    }

    #[test]
    fn ring_depths_are_rounded_up_to_a_power_of_two() {
        let (config, warnings) = config_from(&[("ACCEL_RX_WRE", "1025"), ("VMA_TX_WRE", "33")]);
        assert_eq!((config.rx_wre, config.tx_wre), (2048, 64));
        assert_eq!(
            warnings,
            vec![
                ConfigWarning {
                    variable: "ACCEL_RX_WRE".into(),
                    value: "1025".into(),
                    problem: "not a power of two".into(),
                    used: "2048 (rounded up)".into(),
                },
                ConfigWarning {
                    variable: "VMA_TX_WRE".into(),
                    value: "33".into(),
                    problem: "not a power of two".into(),
                    used: "64 (rounded up)".into(),
                },
            ]
        );
        // The rounded value is still the user's choice.
        assert_eq!(config.source_of("ACCEL_RX_WRE"), Some(&env("ACCEL_RX_WRE")));
        let (config, _) = config_from(&[("ACCEL_RX_WRE", "65535")]);
        assert_eq!(config.rx_wre, 65536);
    }

    #[test]
    fn empty_paths_and_ids_mean_none() {
        let (config, warnings) = config_from(&[
            ("ACCEL_LOG_FILE", ""),
            ("VMA_LOG_FILE", "/tmp/ignored"),
            ("ACCEL_CONFIG_FILE", ""),
            ("VMA_APPLICATION_ID", "  "),
        ]);
        assert!(warnings.is_empty());
        assert_eq!(config.log_file, None);
        assert_eq!(config.config_file, None);
        assert_eq!(config.application_id, None);
        assert_eq!(
            config.source_of("ACCEL_LOG_FILE"),
            Some(&env("ACCEL_LOG_FILE"))
        );
    }

    #[test]
    fn describe_lists_every_variable_in_documentation_order() {
        let (config, _) = config_from(&[
            ("ACCEL_PROFILE", "latency"),
            ("VMA_RX_BUFS", "8192"),
            ("ACCEL_LOG_LEVEL", "info"),
            ("ACCEL_RING_ALLOCATION_LOGIC_RX", "10"),
        ]);
        let settings = config.describe();
        let names: Vec<&str> = settings.iter().map(|s| s.name).collect();
        let documented: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(names, documented);
        for (s, v) in settings.iter().zip(VARIABLES.iter()) {
            assert_eq!(s.alias, v.alias);
            assert_eq!(s.help, v.help);
            assert!(!s.help.is_empty());
        }

        let rx_bufs = setting(&settings, "ACCEL_RX_BUFS");
        assert_eq!(rx_bufs.alias, Some("VMA_RX_BUFS"));
        assert_eq!(
            (rx_bufs.value.as_str(), &rx_bufs.source),
            ("8192", &env("VMA_RX_BUFS"))
        );
        let rx_poll = setting(&settings, "ACCEL_RX_POLL");
        assert_eq!(rx_poll.value, "-1");
        assert_eq!(rx_poll.source, Source::Profile(Profile::Latency));
        let profile = setting(&settings, "ACCEL_PROFILE");
        assert_eq!(
            (profile.value.as_str(), &profile.source),
            ("latency", &env("ACCEL_PROFILE"))
        );
        let mtu = setting(&settings, "ACCEL_MTU");
        assert_eq!(
            (mtu.value.as_str(), &mtu.source),
            ("1500", &Source::Default)
        );

        let level = setting(&settings, "ACCEL_LOG_LEVEL");
        assert_eq!(
            (level.value.as_str(), level.display_value().as_str()),
            ("3", "3 (info)")
        );
        let ring = setting(&settings, "ACCEL_RING_ALLOCATION_LOGIC_RX");
        assert_eq!(
            (ring.value.as_str(), ring.display_value().as_str()),
            ("10", "10 (per socket)")
        );
        let log_file = setting(&settings, "ACCEL_LOG_FILE");
        assert_eq!(
            (log_file.value.as_str(), log_file.display_value().as_str()),
            ("", "none")
        );
        let enable = setting(&settings, "ACCEL_ENABLE");
        assert_eq!(
            (enable.value.as_str(), enable.display_value().as_str()),
            ("1", "1")
        );
        assert_eq!(setting(&settings, "ACCEL_PRESERVE_ENV").alias, None);
    }

    #[test]
    fn described_values_read_back_to_the_same_config() {
        // describe() values are what a user would type: feeding them back changes nothing.
        let (config, _) = config_from(&[("ACCEL_PROFILE", "ultra-latency"), ("VMA_MTU", "9000")]);
        let settings = config.describe();
        let (again, warnings) = Config::from_vars(|name| {
            settings
                .iter()
                .find(|s| s.name == name && !s.value.is_empty())
                .map(|s| s.value.clone())
        });
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again.describe().len(), settings.len());
        let mut again = again;
        again.sources = config.sources.clone();
        assert_eq!(again, config);
    }

    #[test]
    fn known_variables_are_every_name_and_alias_once() {
        let known = known_variables();
        let mut expected: Vec<&str> = Vec::new();
        for v in VARIABLES.iter() {
            expected.push(v.name);
            expected.extend(v.alias);
        }
        assert_eq!(known, expected.as_slice());
        let mut unique = known.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), known.len());
        assert!(known
            .iter()
            .all(|n| n.starts_with("ACCEL_") || n.starts_with("VMA_")));
    }

    #[test]
    fn keys_follow_the_variables_table() {
        for (i, key) in KEYS.iter().enumerate() {
            assert_eq!(*key as usize, i);
        }
        assert_eq!(Key::XdpTxCsumOffload as usize + 1, VARIABLE_COUNT);
    }

    #[test]
    fn xdp_queue_sets() {
        assert_eq!(parse_xdp_queues("ALL").unwrap().0, XdpQueues::All);
        assert_eq!(parse_xdp_queues("2").unwrap().0, XdpQueues::Count(2));
        assert_eq!(parse_xdp_queues("1-3").unwrap().0, XdpQueues::Range(1, 3));
        assert!(parse_xdp_queues("0").is_err() && parse_xdp_queues("3-1").is_err() && parse_xdp_queues("x").is_err());
        assert_eq!(XdpQueues::All.select(4), vec![0, 1, 2, 3]);
        assert_eq!(XdpQueues::All.select(0), vec![0], "an interface that says nothing: queue 0");
        assert_eq!(XdpQueues::Count(2).select(4), vec![0, 1]);
        assert_eq!(XdpQueues::Count(8).select(2), vec![0, 1]);
        assert_eq!(XdpQueues::Range(1, 3).select(8), vec![1, 2, 3]);
        assert_eq!(XdpQueues::Range(1, 3).select(2), vec![1]);
        assert!(XdpQueues::Range(3, 5).select(2).is_empty());
    }

    #[test]
    fn log_path_replaces_every_percent_d_with_the_pid() {
        let mut config = Config::default();
        assert_eq!(config.log_path(42), None);
        config.log_file = Some("/tmp/accel.%d.log".into());
        assert_eq!(
            config.log_path(1234).as_deref(),
            Some("/tmp/accel.1234.log")
        );
        config.log_file = Some("/var/log/%d/%d".into());
        assert_eq!(config.log_path(7).as_deref(), Some("/var/log/7/7"));
        config.log_file = Some("/tmp/plain.log".into());
        assert_eq!(config.log_path(7).as_deref(), Some("/tmp/plain.log"));
    }

    #[test]
    fn warning_display_names_variable_value_and_replacement() {
        let (_, warnings) = config_from(&[("VMA_RX_BUFS", "lots")]);
        assert_eq!(
            warnings[0].to_string(),
            r#"VMA_RX_BUFS="lots": not a number; using 4096 (default)"#
        );
    }

    #[test]
    fn enums_round_trip_through_their_names_and_codes() {
        for n in 0..=6u8 {
            let level = LogLevel::from_u8(n).unwrap();
            assert_eq!(level as u8, n);
            assert_eq!(LogLevel::from_name(level.name()), Some(level));
            assert_eq!(level.to_string(), level.name());
        }
        assert_eq!(LogLevel::from_u8(7), None);
        for code in [0, 1, 10, 20, 30, 31] {
            let logic = RingAllocation::from_code(code).unwrap();
            assert_eq!(i64::from(logic.code()), code);
            assert_eq!(ring_allocation_name(logic), logic.to_string());
        }
        for code in 0..=2 {
            let kind = MemAlloc::from_code(code).unwrap();
            assert_eq!(MemAlloc::from_name(kind.name()), Some(kind));
        }
        for profile in [
            Profile::Default,
            Profile::Latency,
            Profile::UltraLatency,
            Profile::Throughput,
        ] {
            assert_eq!(Profile::from_name(&profile.to_string()), Some(profile));
        }
        assert_eq!(
            Source::Profile(Profile::Latency).to_string(),
            "latency profile"
        );
        assert_eq!(env("VMA_MTU").to_string(), "VMA_MTU");
    }

    #[test]
    fn docs_mention_every_variable() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let docs = std::fs::read_to_string(path).expect("docs/configuration.md");
        for name in known_variables() {
            assert!(
                docs.contains(&format!("`{name}`")),
                "{name} is not in {path}"
            );
        }
    }

    #[test]
    fn arbitrary_values_never_panic_and_warn_at_most_once_each() {
        // xorshift64: deterministic pseudo-random values without a dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PIECES: [&str; 16] = [
            "0",
            "1",
            "-",
            "+",
            " ",
            "9",
            "99999999999",
            "x",
            "é",
            "\u{0}",
            "latency",
            "huge",
            "-1",
            "\t",
            "%d",
            "65536",
        ];
        for _ in 0..2000 {
            let values: Vec<String> = (0..known_variables().len())
                .map(|_| {
                    let len = next() % 5;
                    (0..len)
                        .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let (config, warnings) = Config::from_vars(|name| {
                let i = known_variables().iter().position(|n| *n == name)?;
                // Leave about half of the variables unset.
                Some(values[i].clone()).filter(|_| values[i].len().is_multiple_of(2))
            });
            assert!(warnings.len() <= VARIABLE_COUNT);
            assert!((32..=65536).contains(&config.rx_wre) && config.rx_wre.is_power_of_two());
            assert!((64..=4_194_304).contains(&config.rx_bufs));
            assert!((576..=9000).contains(&config.mtu));
            assert!(config.rx_poll >= -1 && config.ring_migration_ratio_tx >= -1);
            assert_eq!(config.describe().len(), VARIABLE_COUNT);
        }
    }
}
