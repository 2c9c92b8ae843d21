//! The rules file: which sockets to accelerate, in libvma.conf syntax.
//!
//! ```text
//! # comment
//! application-id iperf3 *          # following rules apply to program "iperf3", any ACCEL_APPLICATION_ID
//! use os     udp_receiver *:5001
//! use accel  udp_receiver 239.0.0.0/8:*
//! use vma    udp_sender   *:7000-7100
//! use os     tcp_client   * 10.0.0.1:*
//! application-id * *               # back to rules for every program
//! use accel udp_connect *
//! ```
//!
//! First match wins; `vma` is a synonym of `accel`. A bad line is reported (file:line, the text,
//! why) and skipped; the other rules still apply.
//!
//! SKELETON: types and signatures are the contract; implementation to be filled in.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::config::ConfigWarning;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `accel` or `vma`: offload.
    Accel,
    /// `os`: leave to the kernel.
    Os,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// bind/listen of a TCP socket (matched on the local address).
    TcpServer,
    /// connect of a TCP socket (matched on the remote address; optional local).
    TcpClient,
    /// bind of a UDP socket (matched on the local address).
    UdpReceiver,
    /// first send of an unconnected UDP socket (matched on the destination).
    UdpSender,
    /// connect of a UDP socket (matched on the remote address; optional local).
    UdpConnect,
}

/// An address pattern: `*`, `a.b.c.d` or `a.b.c.d/prefix`, with a port `*`, `p` or `p-q`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    /// 0..=32; 0 matches every address.
    pub prefix: u8,
    pub port_lo: u16,
    pub port_hi: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// 1-based line in the file, for the decision log.
    pub line: usize,
    /// The line as written (trimmed), for the decision log.
    pub text: String,
    pub transport: Transport,
    pub role: Role,
    /// For TcpServer/UdpReceiver this is the local endpoint; for TcpClient/UdpSender/UdpConnect
    /// it is the remote endpoint.
    pub first: Endpoint,
    /// For TcpClient/UdpConnect only: the optional second pattern (the other side).
    pub second: Option<Endpoint>,
}

/// The rules that apply to this process (application-id sections already resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Parses rules text. `program` is this process's program name (basename of its executable);
    /// `app_id` is ACCEL_APPLICATION_ID. Rules in `application-id` sections that do not match
    /// are dropped. Bad lines become warnings (variable = "path:line").
    pub fn parse(text: &str, origin: &str, program: &str, app_id: Option<&str>) -> (RuleSet, Vec<ConfigWarning>) {
        let _ = (text, origin, program, app_id);
        todo!()
    }

    /// Reads and parses a file; an unreadable file is one warning and an empty rule set.
    pub fn load(path: &Path, program: &str, app_id: Option<&str>) -> (RuleSet, Vec<ConfigWarning>) {
        let _ = (path, program, app_id);
        todo!()
    }

    /// The first rule for `role` that matches. `local`/`remote` are (address, port) in host order;
    /// None where the socket has none yet.
    pub fn lookup(
        &self,
        role: Role,
        local: Option<(Ipv4Addr, u16)>,
        remote: Option<(Ipv4Addr, u16)>,
    ) -> Option<&Rule> {
        let _ = (role, local, remote);
        todo!()
    }
}
