//! Configuration: every environment variable accel reads, with its libvma alias, default and
//! meaning. Values come from the process environment (and `accel run -e`), are validated once at
//! start-up, and bad values never stop the app: each produces one [`ConfigWarning`] naming the
//! variable, the bad value and the value used instead.
//!
//! Precedence, lowest first: built-in defaults → profile (`ACCEL_PROFILE` / `VMA_SPEC`) → explicit
//! variables. When both `ACCEL_X` and its `VMA_X` alias are set, `ACCEL_X` wins.
//!
//! SKELETON: types and signatures are the contract used by the rest of the engine and the CLI.
//! Implementation to be filled in (see docs/configuration.md for the table).

use std::fmt;
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

/// How packet-buffer memory is allocated (VMA_MEM_ALLOC_TYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemAlloc {
    Anon = 0,
    Contiguous = 1,
    HugePages = 2,
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
}

impl Default for Config {
    fn default() -> Self {
        todo!("defaults table")
    }
}

/// One entry of [`Config::describe`]: a variable's effective value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Our name, e.g. "ACCEL_RX_BUFS".
    pub name: &'static str,
    /// The libvma alias, e.g. Some("VMA_RX_BUFS").
    pub alias: Option<&'static str>,
    pub value: String,
    pub source: Source,
    pub help: &'static str,
}

impl Config {
    /// Builds the configuration from a variable source (the process environment in production,
    /// a map in tests). Never fails: bad values become warnings and defaults.
    pub fn from_vars<F>(get: F) -> (Config, Vec<ConfigWarning>)
    where
        F: Fn(&str) -> Option<String>,
    {
        let _ = get;
        todo!()
    }

    /// From the real process environment.
    pub fn from_env() -> (Config, Vec<ConfigWarning>) {
        Config::from_vars(|k| std::env::var(k).ok())
    }

    /// Every variable with its effective value and source, in documentation order.
    pub fn describe(&self) -> Vec<Setting> {
        todo!()
    }

    /// The log file path with `%d` replaced by `pid`.
    pub fn log_path(&self, pid: u32) -> Option<String> {
        self.log_file.as_ref().map(|p| p.replace("%d", &pid.to_string()))
    }
}

/// Every variable name accel reads (ours and the aliases); `exec` keeps these in the new image.
pub fn known_variables() -> &'static [&'static str] {
    todo!()
}
