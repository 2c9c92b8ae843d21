//! Whether a socket is accelerated, and why.
//!
//! A decision is taken at each point libvma takes one: when the socket is created (is it a kind we
//! can accelerate at all?), when it is bound (`udp_receiver` / `tcp_server` rules), connected
//! (`udp_connect` / `tcp_client`) and, for a UDP socket that is neither, at its first send
//! (`udp_sender`). The reason travels with the verdict so that logs, `accel stat` and
//! `accel doctor` can say *why*.

use core::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::config::Config;
use crate::rules::{Role, RuleSet, Transport};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// ACCEL_ENABLE=0 (or VMA_OFFLOADED_SOCKETS=0).
    Disabled,
    /// Created inside getaddrinfo/gethostbyname/res_*.
    NameResolver,
    /// Not an IPv4 socket (IPv6 is not offloaded by this version).
    NotIpv4,
    /// A socket type no datapath carries (raw, seqpacket...).
    UnsupportedType,
    /// TCP: the rules may allow it, but no TCP datapath exists in this version.
    TcpNotAvailable { rule: Option<(usize, Transport)> },
    /// Eligible at creation; bind/connect/send rules still to come.
    Eligible,
    /// A rule matched.
    Rule { line: usize, text: String },
    /// No rule matched this role: the default is to accelerate, as with libvma.
    NoRule,
    /// The engine failed on this socket and handed it back to the kernel.
    InternalFallback(&'static str),
    /// Inherited across exec, re-examined by the new image.
    Inherited,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accel,
    Kernel,
}

impl Decision {
    pub fn accel(reason: Reason) -> Decision {
        Decision { verdict: Verdict::Accel, reason }
    }
    pub fn kernel(reason: Reason) -> Decision {
        Decision { verdict: Verdict::Kernel, reason }
    }
    pub fn accelerate(&self) -> bool {
        self.verdict == Verdict::Accel
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Disabled => write!(f, "ACCEL_ENABLE=0"),
            Reason::NameResolver => write!(f, "name-resolver socket"),
            Reason::NotIpv4 => write!(f, "not IPv4"),
            Reason::UnsupportedType => write!(f, "socket type not offloaded"),
            Reason::TcpNotAvailable { rule: None } => write!(f, "TCP offload not available"),
            Reason::TcpNotAvailable { rule: Some((line, t)) } => write!(
                f,
                "TCP offload not available; rules line {line} says {}",
                if *t == Transport::Accel { "accel" } else { "os" }
            ),
            Reason::Eligible => write!(f, "eligible; rules apply at bind/connect/first send"),
            Reason::Rule { line, text } => write!(f, "rules line {line}: {text}"),
            Reason::NoRule => write!(f, "no rule matched; default"),
            Reason::InternalFallback(why) => write!(f, "internal fallback: {why}"),
            Reason::Inherited => write!(f, "inherited across exec"),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.accelerate() { "accel" } else { "kernel" };
        write!(f, "-> {v} ({})", self.reason)
    }
}

/// At `socket()`: can this kind of socket be accelerated at all? `ty` is without
/// SOCK_NONBLOCK/SOCK_CLOEXEC.
pub fn at_socket(cfg: &Config, domain: i32, ty: i32, protocol: i32, resolving: bool) -> Decision {
    if !cfg.enable {
        return Decision::kernel(Reason::Disabled);
    }
    if resolving {
        return Decision::kernel(Reason::NameResolver);
    }
    if domain != libc::AF_INET {
        return Decision::kernel(Reason::NotIpv4);
    }
    match (ty, protocol) {
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Decision::accel(Reason::Eligible),
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => {
            Decision::kernel(Reason::TcpNotAvailable { rule: None })
        }
        _ => Decision::kernel(Reason::UnsupportedType),
    }
}

fn pair(a: Option<SocketAddrV4>) -> Option<(Ipv4Addr, u16)> {
    a.map(|a| (*a.ip(), a.port()))
}

/// At bind/connect/first send: what the rules say for `role`.
pub fn by_rules(
    rules: &RuleSet,
    role: Role,
    local: Option<SocketAddrV4>,
    remote: Option<SocketAddrV4>,
) -> Decision {
    match rules.lookup(role, pair(local), pair(remote)) {
        Some(rule) => {
            let reason = Reason::Rule { line: rule.line, text: rule.text.clone() };
            match rule.transport {
                Transport::Accel => Decision::accel(reason),
                Transport::Os => Decision::kernel(reason),
            }
        }
        None => Decision::accel(Reason::NoRule),
    }
}

/// For TCP, which has no datapath yet: always the kernel, noting what the rules would say.
pub fn tcp_by_rules(
    rules: &RuleSet,
    role: Role,
    local: Option<SocketAddrV4>,
    remote: Option<SocketAddrV4>,
) -> Decision {
    let rule = rules.lookup(role, pair(local), pair(remote)).map(|r| (r.line, r.transport));
    Decision::kernel(Reason::TcpNotAvailable { rule })
}
