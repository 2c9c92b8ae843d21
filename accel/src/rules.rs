//! The rules file: which sockets to accelerate, in libvma.conf syntax.
//!
//! ```text
//! # comment
//! application-id iperf3 *          # following rules apply to program "iperf3", any ACCEL_APPLICATION_ID
//! use os     udp_receiver *:5001
//! use accel  udp_receiver 239.0.0.0/8:*
//! use vma    udp_sender   *:7000-7100
//! use os     tcp_client   10.0.0.1:*:*:*
//! application-id * *               # back to rules for every program
//! use accel udp_connect *
//! ```
//!
//! Without a rules file (`ACCEL_CONFIG_FILE` unset) every eligible socket is accelerated. With
//! one, a socket is looked up by the *role* it is in when the decision is taken, and the first
//! rule for that role whose endpoints match decides; when none matches the socket is accelerated,
//! as in libvma.
//!
//! # Lines
//!
//! Blank lines and everything from a `#` to the end of its line are ignored. Other lines are
//! whitespace-separated words; keywords, transports and roles are case-insensitive.
//!
//! - `use <transport> <role> <endpoint> [<endpoint>]`: a rule.
//!   - transport: `accel` or its synonym `vma` (offload), or `os` (leave to the kernel);
//!   - role and the endpoints it is matched on:
//!
//!     | role           | taken at                         | first endpoint | second (optional) |
//!     |----------------|----------------------------------|----------------|-------------------|
//!     | `tcp_server`   | `listen`                         | local          | —                 |
//!     | `tcp_client`   | `connect`                        | remote         | local             |
//!     | `udp_receiver` | `bind`                           | local          | —                 |
//!     | `udp_sender`   | first send of unconnected socket | destination    | —                 |
//!     | `udp_connect`  | `connect`                        | remote         | local             |
//!
//!     Remote first, then local, is libvma's order for the two-sided roles.
//!   - an endpoint is `*` (any address, any port) or `ADDR:PORT`, where `ADDR` is `*`, a dotted
//!     IPv4 address, or `ADDR/PREFIX` (prefix 0-32, host bits ignored), and `PORT` is `*`, a
//!     number, or a range `LO-HI`. libvma writes the second endpoint glued to the first with a
//!     colon (`10.0.0.1:*:*:5000`); separating them with a space works too.
//! - `application-id <program> <id>`: the `use` lines after it, up to the next
//!   `application-id`, apply only to processes whose program name (the executable's basename)
//!   matches `<program>` and whose `ACCEL_APPLICATION_ID` matches `<id>`. `<program>` may use
//!   the wildcards `*` and `?`, as in libvma (`db2*`, `t?cp`). `<id>` is either `*`, which matches
//!   any application id including none, or a literal, which matches only that exact
//!   `ACCEL_APPLICATION_ID`. Rules before the first `application-id` apply to every process.
//!   The sections that match are kept in file order, so several may contribute rules.
//!
//! # Matching
//!
//! A pattern matches an address when both agree on the first `PREFIX` bits (`ADDR` alone means
//! /32, `*` means /0) and the port is within the range. If the socket has no address yet on a
//! side a pattern asks about (a client not bound locally, say), only a full wildcard (`*`,
//! `*:*`, `0.0.0.0/0:*`) matches: the rule cannot be known to apply, so it does not.
//!
//! # Errors
//!
//! A bad line (unknown keyword, transport or role; bad address, prefix, port or range; missing or
//! extra words) is reported as one [`ConfigWarning`] naming `file:line`, the text and why, and
//! skipped; the other rules still apply. A bad `application-id` line also makes the rules up to
//! the next `application-id` apply to no process, rather than widening them to every process.
//! `log` statements from libvma.conf are reported and skipped too: the log is configured by
//! `ACCEL_LOG_LEVEL` and `ACCEL_LOG_FILE`.

use std::fmt;
use std::io::Read;
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

impl Transport {
    /// The transport called `word`, case-insensitive: `accel`, `vma` or `os`.
    pub fn from_name(word: &str) -> Option<Transport> {
        match word.to_ascii_lowercase().as_str() {
            "accel" | "vma" => Some(Transport::Accel),
            "os" => Some(Transport::Os),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Accel => "accel",
            Transport::Os => "os",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

impl Role {
    /// The role called `word`, case-insensitive, e.g. `tcp_server`.
    pub fn from_name(word: &str) -> Option<Role> {
        match word.to_ascii_lowercase().as_str() {
            "tcp_server" => Some(Role::TcpServer),
            "tcp_client" => Some(Role::TcpClient),
            "udp_receiver" => Some(Role::UdpReceiver),
            "udp_sender" => Some(Role::UdpSender),
            "udp_connect" => Some(Role::UdpConnect),
            _ => None,
        }
    }

    /// The name as written in the rules file.
    pub fn name(self) -> &'static str {
        match self {
            Role::TcpServer => "tcp_server",
            Role::TcpClient => "tcp_client",
            Role::UdpReceiver => "udp_receiver",
            Role::UdpSender => "udp_sender",
            Role::UdpConnect => "udp_connect",
        }
    }

    /// Whether the first endpoint is the local one (servers and receivers) rather than the
    /// remote one (clients, senders, connected UDP).
    pub fn first_is_local(self) -> bool {
        matches!(self, Role::TcpServer | Role::UdpReceiver)
    }

    /// Whether a rule for this role may have a second endpoint (the local side).
    pub fn takes_second(self) -> bool {
        matches!(self, Role::TcpClient | Role::UdpConnect)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

impl Endpoint {
    /// `*`: any address, any port.
    pub const ANY: Endpoint = Endpoint {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
        port_lo: 0,
        port_hi: u16::MAX,
    };

    /// Whether this pattern matches every address and port, and so also "no address yet".
    pub fn is_any(&self) -> bool {
        self.prefix == 0 && self.port_lo == 0 && self.port_hi == u16::MAX
    }

    /// Whether `addr:port` is under the prefix and within the port range.
    pub fn matches(&self, addr: Ipv4Addr, port: u16) -> bool {
        // Masking the pattern too tolerates host bits in it: `10.1.2.3/8` means `10.0.0.0/8`.
        let mask = prefix_mask(self.prefix);
        let same_network = u32::from(addr) & mask == u32::from(self.addr) & mask;
        same_network && (self.port_lo..=self.port_hi).contains(&port)
    }

    /// Parses one endpoint: `*`, or `ADDR:PORT` with `ADDR` = `*`, `a.b.c.d` or
    /// `a.b.c.d/prefix` and `PORT` = `*`, `p` or `lo-hi`.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if text == "*" {
            return Ok(Endpoint::ANY);
        }
        let Some((addr_text, port_text)) = text.split_once(':') else {
            return Err(format!(
                "endpoint '{text}' needs a port (ADDR:PORT, or * for any)"
            ));
        };
        let (addr, prefix) = parse_address(addr_text)?;
        let (port_lo, port_hi) = parse_ports(port_text)?;
        Ok(Endpoint {
            addr,
            prefix,
            port_lo,
            port_hi,
        })
    }
}

impl fmt::Display for Endpoint {
    /// Writes the pattern back in rules-file syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            return f.write_str("*");
        }
        match self.prefix {
            0 => f.write_str("*")?,
            32.. => write!(f, "{}", self.addr)?,
            prefix => write!(f, "{}/{}", self.addr, prefix)?,
        }
        match (self.port_lo, self.port_hi) {
            (0, u16::MAX) => f.write_str(":*"),
            (lo, hi) if lo == hi => write!(f, ":{lo}"),
            (lo, hi) => write!(f, ":{lo}-{hi}"),
        }
    }
}

/// The network mask of a prefix length; lengths over 32 act as 32.
fn prefix_mask(prefix: u8) -> u32 {
    // `checked_shl` because shifting a u32 by 32 is an overflow, and /0 needs exactly that.
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

/// `*`, `a.b.c.d` (a /32) or `a.b.c.d/prefix`.
fn parse_address(text: &str) -> Result<(Ipv4Addr, u8), String> {
    if text == "*" {
        return Ok((Ipv4Addr::UNSPECIFIED, 0));
    }
    let (ip_text, prefix) = match text.split_once('/') {
        None => (text, 32),
        Some((ip_text, prefix_text)) => {
            let prefix = parse_decimal(prefix_text)
                .filter(|&p| p <= 32)
                .ok_or_else(|| format!("prefix '/{prefix_text}' is not 0-32"))?;
            // Cannot fail after the filter above.
            (ip_text, u8::try_from(prefix).unwrap_or(32))
        }
    };
    if ip_text == "*" {
        return Err("a prefix needs an address: write * alone, or a.b.c.d/prefix".to_string());
    }
    let ip = ip_text
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("'{ip_text}' is not an IPv4 address (a.b.c.d or *)"))?;
    Ok((ip, prefix))
}

/// `*`, `p` or `lo-hi`, as an inclusive range.
fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    if text == "*" {
        return Ok((0, u16::MAX));
    }
    let port = |word: &str| {
        parse_decimal(word)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| format!("port '{word}' is not 0-65535"))
    };
    match text.split_once('-') {
        None => port(text).map(|p| (p, p)),
        Some((lo_text, hi_text)) => {
            let (lo, hi) = (port(lo_text)?, port(hi_text)?);
            if lo > hi {
                return Err(format!("port range '{text}' runs backwards"));
            }
            Ok((lo, hi))
        }
    }
}

/// Plain decimal digits only: no sign, no blanks. `None` also for numbers too big for a u32,
/// which are out of every range used here anyway.
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
    /// it is the remote endpoint (the destination, for UdpSender).
    pub first: Endpoint,
    /// For TcpClient/UdpConnect only: the optional local endpoint. None matches any local side.
    pub second: Option<Endpoint>,
}

impl Rule {
    /// Whether this rule's endpoints match a socket with these `local`/`remote` addresses (the
    /// role is not checked). A side that is None matches only a full-wildcard pattern.
    pub fn matches(&self, local: Option<(Ipv4Addr, u16)>, remote: Option<(Ipv4Addr, u16)>) -> bool {
        let (first_side, second_side) = if self.role.first_is_local() {
            (local, remote)
        } else {
            (remote, local)
        };
        let side_matches = |pattern: &Endpoint, side: Option<(Ipv4Addr, u16)>| match side {
            Some((addr, port)) => pattern.matches(addr, port),
            None => pattern.is_any(),
        };
        side_matches(&self.first, first_side)
            && self
                .second
                .as_ref()
                .is_none_or(|pattern| side_matches(pattern, second_side))
    }
}

/// The rules that apply to this process (application-id sections already resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// Rules files are a few lines long; the cap keeps a mistaken `ACCEL_CONFIG_FILE=/dev/zero` or
/// a huge log from stalling start-up or exhausting memory.
pub const MAX_RULES_FILE_BYTES: u64 = 4 << 20;

impl RuleSet {
    /// Parses rules text. `program` is this process's program name (basename of its executable);
    /// `app_id` is ACCEL_APPLICATION_ID. Rules in `application-id` sections that do not match
    /// are dropped. Bad lines become warnings (variable = "path:line").
    pub fn parse(
        text: &str,
        origin: &str,
        program: &str,
        app_id: Option<&str>,
    ) -> (RuleSet, Vec<ConfigWarning>) {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        // Whether the current application-id section applies to this process; rules before
        // the first application-id apply to every process.
        let mut section_applies = true;

        for (index, raw_line) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw_line.trim();
            let code = trimmed.split_once('#').map_or(trimmed, |(code, _)| code);
            let words: Vec<&str> = code.split_whitespace().collect();
            let Some(keyword) = words.first() else {
                continue; // blank or comment only
            };

            let problem = match keyword.to_ascii_lowercase().as_str() {
                "use" => match parse_use(&words, line, trimmed) {
                    Ok(rule) => {
                        // Rules of other programs' sections are still checked, so a mistake is
                        // reported whichever program happens to read the file.
                        if section_applies {
                            rules.push(rule);
                        }
                        continue;
                    }
                    Err(problem) => problem,
                },
                "application-id" => match words.as_slice() {
                    [_, program_pattern, id_pattern] => {
                        section_applies = glob_matches(program_pattern, program)
                            && id_matches(id_pattern, app_id);
                        continue;
                    }
                    _ => {
                        section_applies = false;
                        "application-id needs exactly a program and an id \
                         (application-id <program|*> <id|*>); \
                         the rules up to the next application-id apply to no process"
                            .to_string()
                    }
                },
                "log" => "log statements are not supported; \
                          use ACCEL_LOG_LEVEL and ACCEL_LOG_FILE"
                    .to_string(),
                _ => format!("unknown keyword '{keyword}' (expected use or application-id)"),
            };
            warnings.push(ConfigWarning {
                variable: format!("{origin}:{line}"),
                value: trimmed.to_string(),
                problem,
                used: "no rule from this line".to_string(),
            });
        }
        (RuleSet { rules }, warnings)
    }

    /// Reads and parses a file; an unreadable file is one warning and an empty rule set.
    pub fn load(path: &Path, program: &str, app_id: Option<&str>) -> (RuleSet, Vec<ConfigWarning>) {
        let origin = path.display().to_string();
        let unreadable = |problem: String| {
            let warning = ConfigWarning {
                variable: origin.clone(),
                value: String::new(),
                problem,
                used: "no rules".to_string(),
            };
            (RuleSet::default(), vec![warning])
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) => return unreadable(e.to_string()),
        };
        let mut bytes = Vec::new();
        // One byte over the cap tells "exactly at the cap" from "too big".
        if let Err(e) = file.take(MAX_RULES_FILE_BYTES + 1).read_to_end(&mut bytes) {
            return unreadable(e.to_string());
        }
        if bytes.len() as u64 > MAX_RULES_FILE_BYTES {
            return unreadable(format!(
                "larger than {MAX_RULES_FILE_BYTES} bytes; not a rules file"
            ));
        }
        // Invalid UTF-8 only spoils the lines it is on, which are then reported as bad.
        let text = String::from_utf8_lossy(&bytes);
        RuleSet::parse(&text, &origin, program, app_id)
    }

    /// The first rule for `role` that matches. `local`/`remote` are (address, port) in host order;
    /// None where the socket has none yet.
    pub fn lookup(
        &self,
        role: Role,
        local: Option<(Ipv4Addr, u16)>,
        remote: Option<(Ipv4Addr, u16)>,
    ) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.role == role && rule.matches(local, remote))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }
}

/// Parses `use <transport> <role> <endpoint> [<endpoint>]` (`words[0]` is `use`).
fn parse_use(words: &[&str], line: usize, text: &str) -> Result<Rule, String> {
    let (transport_word, role_word, endpoint_words) = match words {
        [_, transport, role, endpoints @ ..] if !endpoints.is_empty() => {
            (*transport, *role, endpoints)
        }
        _ => return Err("use needs a transport, a role and an endpoint".to_string()),
    };
    let transport = Transport::from_name(transport_word)
        .ok_or_else(|| format!("unknown transport '{transport_word}' (accel, vma or os)"))?;
    let role = Role::from_name(role_word).ok_or_else(|| {
        format!(
            "unknown role '{role_word}' \
             (tcp_server, tcp_client, udp_receiver, udp_sender or udp_connect)"
        )
    })?;

    // Endpoints may be separate words or glued with ':' as libvma writes them; gather them all.
    let mut endpoints = Vec::new();
    for word in endpoint_words {
        endpoints.extend(parse_endpoint_word(word)?);
    }
    let (first, second) = match endpoints.as_slice() {
        [first] => (*first, None),
        [first, second] if role.takes_second() => (*first, Some(*second)),
        [_, _] => {
            return Err(format!(
                "{role} takes one endpoint (the {}), not two",
                if role.first_is_local() {
                    "local one"
                } else {
                    "destination"
                }
            ))
        }
        _ => {
            return Err(format!(
                "too many endpoints for {role} (at most {})",
                if role.takes_second() { 2 } else { 1 }
            ))
        }
    };
    Ok(Rule {
        line,
        text: text.to_string(),
        transport,
        role,
        first,
        second,
    })
}

/// One word of endpoints: `*`, `ADDR:PORT` or libvma's `ADDR:PORT:ADDR:PORT`.
fn parse_endpoint_word(word: &str) -> Result<Vec<Endpoint>, String> {
    if word == "*" {
        return Ok(vec![Endpoint::ANY]);
    }
    let parts: Vec<&str> = word.split(':').collect();
    match parts.as_slice() {
        [addr, port] => Ok(vec![Endpoint::parse(&format!("{addr}:{port}"))?]),
        [addr1, port1, addr2, port2] => Ok(vec![
            Endpoint::parse(&format!("{addr1}:{port1}"))?,
            Endpoint::parse(&format!("{addr2}:{port2}"))?,
        ]),
        [_] => Err(format!(
            "endpoint '{word}' needs a port (ADDR:PORT, or * for any)"
        )),
        _ => Err(format!(
            "endpoint '{word}' is not *, ADDR:PORT or ADDR:PORT:ADDR:PORT"
        )),
    }
}

/// A literal id matches only that exact application id; `*` matches any, including none.
fn id_matches(pattern: &str, app_id: Option<&str>) -> bool {
    pattern == "*" || app_id == Some(pattern)
}

/// Shell-style matching of a whole name: `*` is any run of characters, `?` exactly one.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was and how much of the name it has swallowed so far: on a mismatch
    // it takes one more character and the match resumes after it. Linear in practice, never
    // exponential.
    let mut last_star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                last_star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || name.get(n) == Some(&c) => {
                p += 1;
                n += 1;
            }
            _ => match last_star {
                Some((star_p, star_n)) => {
                    last_star = Some((star_p, star_n + 1));
                    p = star_p + 1;
                    n = star_n + 1;
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).unwrap_or(&[]).iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn at(addr: &str, port: u16) -> Option<(Ipv4Addr, u16)> {
        Some((ip(addr), port))
    }

    fn rules(text: &str) -> RuleSet {
        let (set, warnings) = RuleSet::parse(text, "test.conf", "prog", None);
        assert!(warnings.is_empty(), "{warnings:?}");
        set
    }

    fn transport_for(
        set: &RuleSet,
        role: Role,
        local: Option<(Ipv4Addr, u16)>,
        remote: Option<(Ipv4Addr, u16)>,
    ) -> Option<Transport> {
        set.lookup(role, local, remote).map(|rule| rule.transport)
    }

    /// Parses one bad line between two good ones: exactly one warning, for that line.
    fn assert_bad_line(bad: &str, problem_part: &str) {
        let text = format!("use os tcp_server *:1\n# comment\n{bad}\nuse os tcp_server *:2\n");
        let (set, warnings) = RuleSet::parse(&text, "rules.conf", "prog", None);
        assert_eq!(warnings.len(), 1, "{bad:?}: {warnings:?}");
        let warning = &warnings[0];
        assert_eq!(warning.variable, "rules.conf:3", "{bad:?}");
        assert_eq!(warning.value, bad.trim(), "{bad:?}");
        assert_eq!(warning.used, "no rule from this line", "{bad:?}");
        assert!(
            warning.problem.contains(problem_part),
            "{bad:?}: {:?} does not mention {problem_part:?}",
            warning.problem
        );
        // The rule after the bad line still loads, except after a bad application-id line,
        // whose section then applies to no process.
        let expected = if bad.starts_with("application-id") {
            vec![1]
        } else {
            vec![1, 4]
        };
        let lines: Vec<usize> = set.rules.iter().map(|r| r.line).collect();
        assert_eq!(lines, expected, "{bad:?}");
    }

    #[test]
    fn no_rules_match_nothing() {
        let set = rules("");
        assert!(set.is_empty());
        assert_eq!(set.lookup(Role::TcpServer, at("10.0.0.1", 80), None), None);
    }

    #[test]
    fn every_role_parses_and_matches_its_side() {
        let set = rules(
            "use os tcp_server 10.0.0.1:80\n\
             use os tcp_client 10.0.0.2:443\n\
             use os udp_receiver 239.1.1.1:5000\n\
             use os udp_sender 10.0.0.3:53\n\
             use os udp_connect 10.0.0.4:9000\n",
        );
        assert_eq!(set.len(), 5);
        let roles: Vec<Role> = set.rules.iter().map(|r| r.role).collect();
        assert_eq!(
            roles,
            [
                Role::TcpServer,
                Role::TcpClient,
                Role::UdpReceiver,
                Role::UdpSender,
                Role::UdpConnect
            ]
        );
        let elsewhere = at("192.168.0.9", 1234);

        // Servers and receivers: the local side.
        let line = |role, local, remote| set.lookup(role, local, remote).map(|r| r.line);
        assert_eq!(line(Role::TcpServer, at("10.0.0.1", 80), None), Some(1));
        assert_eq!(line(Role::TcpServer, elsewhere, at("10.0.0.1", 80)), None);
        assert_eq!(
            line(Role::UdpReceiver, at("239.1.1.1", 5000), None),
            Some(3)
        );
        assert_eq!(line(Role::UdpReceiver, at("239.1.1.1", 5001), None), None);
        // Clients, senders, connected UDP: the remote side.
        assert_eq!(
            line(Role::TcpClient, elsewhere, at("10.0.0.2", 443)),
            Some(2)
        );
        assert_eq!(line(Role::TcpClient, at("10.0.0.2", 443), elsewhere), None);
        assert_eq!(line(Role::UdpSender, None, at("10.0.0.3", 53)), Some(4));
        assert_eq!(
            line(Role::UdpConnect, elsewhere, at("10.0.0.4", 9000)),
            Some(5)
        );
        // A rule only answers for its own role.
        assert_eq!(line(Role::UdpSender, None, at("10.0.0.2", 443)), None);
    }

    #[test]
    fn second_endpoint_is_the_local_side() {
        for text in [
            "use os tcp_client 10.0.0.2:443:192.168.1.0/24:*",
            "use os tcp_client 10.0.0.2:443 192.168.1.0/24:*",
        ] {
            let set = rules(text);
            let rule = &set.rules[0];
            assert_eq!(rule.first, Endpoint::parse("10.0.0.2:443").unwrap());
            assert_eq!(
                rule.second,
                Some(Endpoint::parse("192.168.1.0/24:*").unwrap())
            );
            let remote = at("10.0.0.2", 443);
            let client = |local| transport_for(&set, Role::TcpClient, local, remote);
            assert_eq!(client(at("192.168.1.7", 40000)), Some(Transport::Os));
            assert_eq!(client(at("192.168.2.7", 40000)), None);
            // Not bound yet: the local pattern cannot be checked, so it does not match.
            assert_eq!(client(None), None);
        }
        let set = rules("use os udp_connect *:* *:5000-5010");
        let connect = |local| transport_for(&set, Role::UdpConnect, local, at("1.2.3.4", 9));
        assert_eq!(connect(at("10.0.0.1", 5005)), Some(Transport::Os));
        assert_eq!(connect(at("10.0.0.1", 5011)), None);
    }

    #[test]
    fn a_missing_side_matches_only_full_wildcards() {
        for wildcard in ["*", "*:*", "0.0.0.0/0:*"] {
            let set = rules(&format!("use os udp_sender {wildcard}"));
            assert!(set.rules[0].first.is_any(), "{wildcard}");
            assert_eq!(
                transport_for(&set, Role::UdpSender, None, None),
                Some(Transport::Os),
                "{wildcard}"
            );
        }
        for partial in ["*:53", "10.0.0.0/8:*", "0.0.0.0:*"] {
            let set = rules(&format!("use os udp_sender {partial}"));
            assert_eq!(
                transport_for(&set, Role::UdpSender, None, None),
                None,
                "{partial}"
            );
        }
        // A local wildcard second endpoint is satisfied by an unbound client.
        let set = rules("use os tcp_client 10.0.0.1:*:*:*");
        assert_eq!(
            transport_for(&set, Role::TcpClient, None, at("10.0.0.1", 22)),
            Some(Transport::Os)
        );
    }

    #[test]
    fn prefixes_select_networks() {
        let set = rules(
            "use os udp_receiver 10.1.2.3/32:*\n\
             use accel udp_receiver 10.0.0.0/8:*\n\
             use os udp_receiver 0.0.0.0/0:*\n",
        );
        let receiver = |addr| {
            set.lookup(Role::UdpReceiver, at(addr, 7), None)
                .map(|r| r.line)
        };
        assert_eq!(receiver("10.1.2.3"), Some(1));
        assert_eq!(receiver("10.1.2.4"), Some(2));
        assert_eq!(receiver("10.255.255.255"), Some(2));
        assert_eq!(receiver("11.0.0.0"), Some(3));
        assert_eq!(receiver("0.0.0.0"), Some(3));
        assert_eq!(receiver("255.255.255.255"), Some(3));
    }

    #[test]
    fn host_bits_in_a_prefixed_pattern_are_ignored() {
        let set = rules("use os tcp_server 192.168.1.77/24:*");
        let server = |addr| transport_for(&set, Role::TcpServer, at(addr, 1), None);
        assert_eq!(server("192.168.1.1"), Some(Transport::Os));
        assert_eq!(server("192.168.2.1"), None);
    }

    #[test]
    fn an_address_without_prefix_is_exact() {
        let set = rules("use os tcp_server 0.0.0.0:80");
        let server = |addr| transport_for(&set, Role::TcpServer, at(addr, 80), None);
        assert_eq!(server("0.0.0.0"), Some(Transport::Os)); // INADDR_ANY listener
        assert_eq!(server("10.0.0.1"), None);
    }

    #[test]
    fn ports_match_single_values_ranges_and_wildcards() {
        let set = rules(
            "use os udp_receiver *:5001\n\
             use accel udp_receiver *:7000-7100\n\
             use os udp_receiver *:0\n\
             use os udp_receiver *:65535\n",
        );
        let receiver = |port| {
            set.lookup(Role::UdpReceiver, at("1.1.1.1", port), None)
                .map(|r| r.line)
        };
        assert_eq!(receiver(5001), Some(1));
        assert_eq!(receiver(5002), None);
        assert_eq!(receiver(6999), None);
        assert_eq!(receiver(7000), Some(2));
        assert_eq!(receiver(7050), Some(2));
        assert_eq!(receiver(7100), Some(2));
        assert_eq!(receiver(7101), None);
        assert_eq!(receiver(0), Some(3));
        assert_eq!(receiver(65535), Some(4));
        let one = Endpoint::parse("*:80-80").unwrap();
        assert_eq!((one.port_lo, one.port_hi), (80, 80));
    }

    #[test]
    fn first_match_wins() {
        let set = rules(
            "use os udp_receiver *:5001\n\
             use accel udp_receiver *:*\n\
             use os udp_receiver *:5002\n",
        );
        let receiver = |port| transport_for(&set, Role::UdpReceiver, at("1.1.1.1", port), None);
        assert_eq!(receiver(5001), Some(Transport::Os));
        assert_eq!(receiver(5002), Some(Transport::Accel)); // line 3 is shadowed by line 2
        assert_eq!(
            set.lookup(Role::UdpReceiver, at("1.1.1.1", 5002), None)
                .unwrap()
                .line,
            2
        );
    }

    #[test]
    fn transports_accel_vma_and_os() {
        let set = rules(
            "use accel tcp_server *:1\n\
             use vma tcp_server *:2\n\
             use os tcp_server *:3\n\
             USE VMA TCP_SERVER *:4\n",
        );
        let server = |port| transport_for(&set, Role::TcpServer, at("1.1.1.1", port), None);
        assert_eq!(server(1), Some(Transport::Accel));
        assert_eq!(server(2), Some(Transport::Accel));
        assert_eq!(server(3), Some(Transport::Os));
        assert_eq!(server(4), Some(Transport::Accel));
    }

    #[test]
    fn rules_keep_their_line_and_text() {
        let set = rules("\n  # header\n\n   use os tcp_server *:80   # web  \n");
        let rule = &set.rules[0];
        assert_eq!(rule.line, 4);
        assert_eq!(rule.text, "use os tcp_server *:80   # web");
        assert_eq!(rule.transport, Transport::Os);
        assert_eq!(rule.second, None);
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let set = rules(
            "# full-line comment\n\
             \n   \t  \n\
             \t# indented comment\n\
             use os tcp_server *:80# glued comment\n\
             use os tcp_server *:81 # use accel tcp_server *:82\n\
             #use os tcp_server *:83\n\
             use os tcp_server *:84\r\n",
        );
        let ports: Vec<u16> = set.rules.iter().map(|r| r.first.port_lo).collect();
        assert_eq!(ports, [80, 81, 84]);
    }

    fn sections(program: &str, app_id: Option<&str>) -> Vec<usize> {
        let text = "use os tcp_server *:1\n\
                    application-id iperf3 *\n\
                    use os tcp_server *:3\n\
                    application-id iperf3 B1\n\
                    use os tcp_server *:5\n\
                    application-id * B2\n\
                    use os tcp_server *:7\n\
                    application-id t?cp* *\n\
                    use os tcp_server *:9\n\
                    application-id * *\n\
                    use os tcp_server *:11\n";
        let (set, warnings) = RuleSet::parse(text, "f", program, app_id);
        assert!(warnings.is_empty());
        set.rules.iter().map(|r| r.line).collect()
    }

    #[test]
    fn application_id_sections_select_program_and_id() {
        // Program matches, any id.
        assert_eq!(sections("iperf3", None), [1, 3, 11]);
        // Program and id match.
        assert_eq!(sections("iperf3", Some("B1")), [1, 3, 5, 11]);
        // Id for another section.
        assert_eq!(sections("iperf3", Some("B2")), [1, 3, 7, 11]);
        // Another program: only the unconditional rules and the `*` sections.
        assert_eq!(sections("nginx", None), [1, 11]);
        assert_eq!(sections("nginx", Some("B1")), [1, 11]);
        assert_eq!(sections("nginx", Some("B2")), [1, 7, 11]);
        // Wildcards in the program name.
        assert_eq!(sections("ttcp", None), [1, 9, 11]);
        assert_eq!(sections("tXcp-server", None), [1, 9, 11]);
        assert_eq!(sections("tcp", None), [1, 11]);
        // Program names are case-sensitive, like file names.
        assert_eq!(sections("IPERF3", None), [1, 11]);
    }

    #[test]
    fn glob_matching() {
        for (pattern, name, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("db2*", "db2sysc", true),
            ("db2*", "db", false),
            ("t?cp", "ttcp", true),
            ("t?cp", "tcp", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*a", "aaaa", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("**", "x", true),
            ("é?", "éé", true),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn bad_lines_are_reported_once_and_skipped() {
        for (bad, problem) in [
            (
                "frobnicate os tcp_server *:1",
                "unknown keyword 'frobnicate'",
            ),
            ("log destination stderr", "log statements are not supported"),
            ("use", "use needs a transport, a role and an endpoint"),
            ("use os", "use needs"),
            ("use os tcp_server", "use needs"),
            ("use sdp tcp_server *:1", "unknown transport 'sdp'"),
            ("use os tcp_listener *:1", "unknown role 'tcp_listener'"),
            ("use os tcp_server 10.0.0.1", "needs a port"),
            (
                "use os tcp_server 10.0.0:80",
                "'10.0.0' is not an IPv4 address",
            ),
            ("use os tcp_server 10.0.0.256:80", "is not an IPv4 address"),
            ("use os tcp_server 010.0.0.1:80", "is not an IPv4 address"),
            ("use os tcp_server host:80", "is not an IPv4 address"),
            ("use os tcp_server */8:80", "a prefix needs an address"),
            (
                "use os tcp_server 10.0.0.0/33:80",
                "prefix '/33' is not 0-32",
            ),
            ("use os tcp_server 10.0.0.0/:80", "prefix '/' is not 0-32"),
            (
                "use os tcp_server 10.0.0.0/-1:80",
                "prefix '/-1' is not 0-32",
            ),
            ("use os tcp_server *:65536", "port '65536' is not 0-65535"),
            ("use os tcp_server *:99999999999999999999", "is not 0-65535"),
            ("use os tcp_server *:-5", "port '' is not 0-65535"),
            ("use os tcp_server *:+5", "port '+5' is not 0-65535"),
            ("use os tcp_server *:http", "port 'http' is not 0-65535"),
            ("use os tcp_server *:", "port '' is not 0-65535"),
            (
                "use os tcp_server *:10-5",
                "port range '10-5' runs backwards",
            ),
            ("use os tcp_server *:1-2-3", "port '2-3' is not 0-65535"),
            (
                "use os tcp_server *:1:2",
                "is not *, ADDR:PORT or ADDR:PORT:ADDR:PORT",
            ),
            ("use os tcp_server *:1 *:2", "tcp_server takes one endpoint"),
            ("use os tcp_server *:1:*:2", "tcp_server takes one endpoint"),
            ("use os udp_receiver * *", "udp_receiver takes one endpoint"),
            ("use os udp_sender *:1 *:2", "udp_sender takes one endpoint"),
            (
                "use os tcp_client * * *",
                "too many endpoints for tcp_client (at most 2)",
            ),
            ("use os tcp_client *:*:*:* *", "too many endpoints"),
            ("use os udp_connect *:1 bad", "needs a port"),
            (
                "application-id",
                "application-id needs exactly a program and an id",
            ),
            ("application-id prog", "application-id needs exactly"),
            (
                "application-id prog id extra",
                "application-id needs exactly",
            ),
        ] {
            assert_bad_line(bad, problem);
        }
    }

    #[test]
    fn a_bad_application_id_line_disables_its_section() {
        let text = "application-id prog\n\
                    use os tcp_server *:2\n\
                    application-id * *\n\
                    use os tcp_server *:4\n";
        let (set, warnings) = RuleSet::parse(text, "f", "prog", None);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].variable, "f:1");
        let lines: Vec<usize> = set.rules.iter().map(|r| r.line).collect();
        assert_eq!(lines, [4]);
    }

    #[test]
    fn rules_in_other_programs_sections_are_still_checked() {
        let text = "application-id other *\nuse os tcp_server nonsense\n";
        let (set, warnings) = RuleSet::parse(text, "f", "prog", None);
        assert!(set.is_empty());
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].variable, "f:2");
    }

    #[test]
    fn several_bad_lines_each_name_their_line() {
        let text =
            "use os tcp_server *:1\nbogus\nuse os tcp_server *:99999\nuse os tcp_server *:4\n";
        let (set, warnings) = RuleSet::parse(text, "/etc/libvma.conf", "p", None);
        let at: Vec<&str> = warnings.iter().map(|w| w.variable.as_str()).collect();
        assert_eq!(at, ["/etc/libvma.conf:2", "/etc/libvma.conf:3"]);
        assert_eq!(set.len(), 2);
        assert_eq!(
            warnings[0].to_string(),
            "/etc/libvma.conf:2=\"bogus\": unknown keyword 'bogus' (expected use or \
             application-id); using no rule from this line"
        );
    }

    #[test]
    fn endpoints_print_back_in_rules_syntax() {
        for text in [
            "*",
            "10.0.0.1:80",
            "10.0.0.0/8:1000-2000",
            "*:5001",
            "1.2.3.4:*",
        ] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Endpoint::parse("*:*").unwrap().to_string(), "*");
        assert_eq!(Endpoint::parse("0.0.0.0/0:*").unwrap().to_string(), "*");
        assert_eq!(Role::UdpConnect.to_string(), "udp_connect");
        assert_eq!(Transport::Accel.to_string(), "accel");
    }

    #[test]
    fn out_of_range_prefixes_built_by_hand_do_not_panic() {
        let pattern = Endpoint {
            addr: ip("10.0.0.1"),
            prefix: 200,
            port_lo: 9,
            port_hi: 1,
        };
        assert!(!pattern.matches(ip("10.0.0.1"), 5)); // empty port range
        assert_eq!(prefix_mask(200), u32::MAX);
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(8), 0xFF00_0000);
        let _ = pattern.to_string();
    }

    /// A directory of one test's own, removed with everything in it when the test ends (pass or fail).
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "accel-rules-test-{}-{test}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn load_reads_a_file() {
        let scratch = Scratch::new("load");
        let path = scratch.0.join("libvma.conf");
        std::fs::write(
            &path,
            b"application-id app B1\nuse os udp_receiver *:5001\nnonsense\n",
        )
        .unwrap();
        let (set, warnings) = RuleSet::load(&path, "app", Some("B1"));
        assert_eq!(set.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].variable, format!("{}:3", path.display()));
        let (set, _) = RuleSet::load(&path, "app", None);
        assert!(set.is_empty());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn load_survives_invalid_utf8() {
        let scratch = Scratch::new("utf8");
        let path = scratch.0.join("binary.conf");
        std::fs::write(
            &path,
            b"use os tcp_server *:1\n\xff\xfe use\nuse os tcp_server *:3\n",
        )
        .unwrap();
        let (set, warnings) = RuleSet::load(&path, "p", None);
        assert_eq!(set.len(), 2);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].variable.ends_with(":2"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_one_warning_and_no_rules() {
        let path = Path::new("/nonexistent/accel/libvma.conf");
        let (set, warnings) = RuleSet::load(path, "p", None);
        assert!(set.is_empty());
        assert_eq!(warnings.len(), 1);
        let warning = &warnings[0];
        assert_eq!(warning.variable, "/nonexistent/accel/libvma.conf");
        assert_eq!(warning.value, "");
        assert_eq!(warning.used, "no rules");
        assert!(
            warning.problem.contains("No such file"),
            "{}",
            warning.problem
        );

        // A directory opens but cannot be read.
        let scratch = Scratch::new("dir");
        let (set, warnings) = RuleSet::load(&scratch.0, "p", None);
        assert!(set.is_empty());
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].used, "no rules");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let scratch = Scratch::new("huge");
        let path = scratch.0.join("huge.conf");
        let line = "use os tcp_server *:1\n";
        let copies = (MAX_RULES_FILE_BYTES as usize / line.len()) + 1;
        std::fs::write(&path, line.repeat(copies)).unwrap();
        let (set, warnings) = RuleSet::load(&path, "p", None);
        assert!(set.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].problem.starts_with("larger than"));
        std::fs::remove_file(&path).unwrap();
    }

    /// xorshift64: deterministic pseudo-random input without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check_no_panic_and_sane(text: &str, rng: &mut XorShift) {
        let app_id = ["B1", "*", ""][rng.below(3)];
        let (set, warnings) =
            RuleSet::parse(text, "fuzz", "prog", Some(app_id).filter(|s| !s.is_empty()));
        let line_count = text.lines().count();
        assert!(set.len() + warnings.len() <= line_count);
        for rule in &set.rules {
            assert!(rule.line >= 1 && rule.line <= line_count);
            assert!(rule.first.prefix <= 32 && rule.first.port_lo <= rule.first.port_hi);
            assert!(rule.second.is_none() || rule.role.takes_second());
        }
        for role in [
            Role::TcpServer,
            Role::TcpClient,
            Role::UdpReceiver,
            Role::UdpSender,
            Role::UdpConnect,
        ] {
            let local = Some((Ipv4Addr::from(rng.next() as u32), rng.next() as u16));
            let remote = Some((Ipv4Addr::from(rng.next() as u32), rng.next() as u16));
            let _ = set.lookup(role, local, remote);
            let _ = set.lookup(role, None, None);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..3000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            check_no_panic_and_sane(&text, &mut rng);
        }
    }

    #[test]
    fn random_near_miss_rules_never_panic() {
        // Random bytes rarely get past the keyword; shuffled real tokens reach every parser.
        const WORDS: [&str; 32] = [
            "use",
            "application-id",
            "os",
            "vma",
            "accel",
            "tcp_server",
            "tcp_client",
            "udp_receiver",
            "udp_sender",
            "udp_connect",
            "*",
            "*:*",
            "10.0.0.1:80",
            "10.0.0.0/8:*",
            "/",
            ":",
            "-",
            "#",
            "\n",
            " ",
            "\t",
            "prog",
            "B1",
            "t?*",
            "1.2.3.4:1-2:5.6.7.8:3",
            "*:65535",
            "0.0.0.0/0:0-65535",
            "/33",
            "999999999999",
            "é",
            "\r\n",
            "log",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let count = rng.below(40);
            let text: String = (0..count).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            check_no_panic_and_sane(&text, &mut rng);
        }
    }
}
