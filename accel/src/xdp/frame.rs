//! Ethernet / IPv4 / UDP frames: parsing what the NIC hands us, building what we hand it.
//!
//! A received frame comes from the wire (or a veth peer) and is trusted for nothing: every
//! header is checked against the bytes actually present before a field is used, and anything
//! wrong is a [`DropReason`] the caller counts. The parser contains no `unsafe` and indexes only
//! through checked slices, so a hostile frame can at worst be dropped; the proptest at the end
//! of this file feeds it arbitrary and mutated frames to show it never panics.
//!
//! # What is accepted
//!
//! Ethernet II with EtherType IPv4 (no VLAN tag), IPv4 version 4 with a 20-byte header (IHL 5:
//! the XDP filter passes options to the kernel), not a fragment, protocol UDP, a correct header
//! checksum, a total length that fits in the frame (Ethernet padding after it is ignored) and a
//! UDP length between 8 and what the IP datagram holds. The payload is the UDP length's worth.
//!
//! # UDP checksums
//!
//! - **0**: the sender computed none (legal in IPv4): accepted, [`Checksum::None`].
//! - **verifies**: [`Checksum::Verified`].
//! - **partial**: the field holds only the folded pseudo-header sum, not the full checksum. This
//!   is what a frame looks like when the sending kernel left the checksum to a NIC that does
//!   not exist: a plain socket in a veth peer's namespace hands its skb across with
//!   `CHECKSUM_PARTIAL`, and XDP sees the bytes before anything completes them. The kernel's own
//!   receive path trusts such an skb (it never left the host), so we accept the frame too, as
//!   [`Checksum::Partial`], and count it separately. The price: a frame from a real wire whose
//!   corruption happens to leave exactly the pseudo-header sum in the field (one chance in
//!   65536 per corrupted frame, on top of the Ethernet CRC having missed it) is delivered.
//! - anything else: [`DropReason::UdpChecksum`].
//!
//! # Building
//!
//! [`write_udp4`] lays out a complete frame with both checksums computed, DF set as the kernel
//! sets it for UDP, TTL 64. [`HeaderTemplate`] builds the same frames faster, either complete or
//! ready for checksum offload ([`HeaderTemplate::write_for_offload`]: the UDP checksum field
//! holds the pseudo-header sum and whoever transmits the frame — the NIC, or the kernel for a
//! device without checksum offload — completes it over [`UDP_CSUM_START`].., as for the kernel's
//! own UDP sends).

use std::net::{Ipv4Addr, SocketAddrV4};

/// Ethernet header: destination MAC, source MAC, EtherType.
pub const ETH_HEADER: usize = 14;
/// IPv4 header without options.
pub const IPV4_HEADER: usize = 20;
/// UDP header.
pub const UDP_HEADER: usize = 8;
/// Everything before the payload.
pub const HEADERS: usize = ETH_HEADER + IPV4_HEADER + UDP_HEADER;
/// Where an offloaded UDP checksum's sum starts (the UDP header), from the frame's start, and
/// where in the UDP header the result goes (skb-style `csum_start` / `csum_offset`).
pub const UDP_CSUM_START: u16 = (ETH_HEADER + IPV4_HEADER) as u16;
pub const UDP_CSUM_OFFSET: u16 = 6;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
/// MF (more fragments) and the 13-bit fragment offset.
const FRAGMENT_BITS: u16 = 0x3fff;
const DONT_FRAGMENT: u16 = 0x4000;
const TTL: u8 = 64;

/// Why a received frame was not delivered. Each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or than the headers it announces.
    Truncated = 0,
    /// Not IPv4 (including VLAN-tagged frames).
    NotIpv4 = 1,
    /// IPv4 version field other than 4.
    IpVersion = 2,
    /// IHL other than 5: options (the filter passes these to the kernel).
    IpOptions = 3,
    /// IPv4 total length smaller than the headers or larger than the frame.
    IpLength = 4,
    /// MF set or a fragment offset: a fragment (only the kernel reassembles).
    Fragment = 5,
    /// Not UDP.
    NotUdp = 6,
    /// The IPv4 header checksum does not verify.
    IpChecksum = 7,
    /// UDP length smaller than its header or larger than the IP datagram.
    UdpLength = 8,
    /// The UDP checksum is neither 0, nor correct, nor a partial (pseudo-header) checksum.
    UdpChecksum = 9,
    /// The descriptor pointed outside the UMEM or past its frame (a kernel or memory bug;
    /// counted rather than trusted).
    BadDescriptor = 10,
}

impl DropReason {
    /// The number of reasons (the size of a counter array indexed by `reason as usize`).
    pub const COUNT: usize = 11;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Truncated,
        DropReason::NotIpv4,
        DropReason::IpVersion,
        DropReason::IpOptions,
        DropReason::IpLength,
        DropReason::Fragment,
        DropReason::NotUdp,
        DropReason::IpChecksum,
        DropReason::UdpLength,
        DropReason::UdpChecksum,
        DropReason::BadDescriptor,
    ];

    /// A short name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::IpVersion => "ip_version",
            DropReason::IpOptions => "ip_options",
            DropReason::IpLength => "ip_length",
            DropReason::Fragment => "fragment",
            DropReason::NotUdp => "not_udp",
            DropReason::IpChecksum => "ip_checksum",
            DropReason::UdpLength => "udp_length",
            DropReason::UdpChecksum => "udp_checksum",
            DropReason::BadDescriptor => "bad_descriptor",
        }
    }
}

/// How the UDP checksum of an accepted datagram stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// Present and correct.
    Verified,
    /// Zero: the sender computed none.
    None,
    /// Only the pseudo-header part (an offloaded checksum nobody completed; see the module doc).
    Partial,
}

/// An accepted UDP datagram, borrowing its payload from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp4<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: &'a [u8],
    pub checksum: Checksum,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn ipv4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// Parses and validates one received frame (see the module doc for what is accepted).
pub fn parse_udp4(frame: &[u8]) -> Result<Udp4<'_>, DropReason> {
    let eth = frame.get(..ETH_HEADER).ok_or(DropReason::Truncated)?;
    if be16(eth, 12) != Some(ETHERTYPE_IPV4) {
        return Err(DropReason::NotIpv4);
    }
    let ip_and_rest = &frame[ETH_HEADER..];
    let ip = ip_and_rest.get(..IPV4_HEADER).ok_or(DropReason::Truncated)?;
    if ip[0] >> 4 != 4 {
        return Err(DropReason::IpVersion);
    }
    if ip[0] & 0x0f != 5 {
        return Err(DropReason::IpOptions);
    }
    let total = usize::from(be16(ip, 2).ok_or(DropReason::Truncated)?);
    if total < IPV4_HEADER + UDP_HEADER || total > ip_and_rest.len() {
        return Err(DropReason::IpLength);
    }
    if be16(ip, 6).ok_or(DropReason::Truncated)? & FRAGMENT_BITS != 0 {
        return Err(DropReason::Fragment);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(DropReason::NotUdp);
    }
    if fold(sum_words(ip, 0)) != 0xffff {
        return Err(DropReason::IpChecksum);
    }
    let src_ip = ipv4(ip, 12).ok_or(DropReason::Truncated)?;
    let dst_ip = ipv4(ip, 16).ok_or(DropReason::Truncated)?;

    // Only the IP datagram: Ethernet pads short frames to 60 bytes, and that padding is not ours.
    let datagram = ip_and_rest
        .get(IPV4_HEADER..total)
        .ok_or(DropReason::IpLength)?;
    let udp_len = usize::from(be16(datagram, 4).ok_or(DropReason::Truncated)?);
    if udp_len < UDP_HEADER || udp_len > datagram.len() {
        return Err(DropReason::UdpLength);
    }
    let udp = &datagram[..udp_len];
    let src_port = be16(udp, 0).ok_or(DropReason::Truncated)?;
    let dst_port = be16(udp, 2).ok_or(DropReason::Truncated)?;
    let field = be16(udp, 6).ok_or(DropReason::Truncated)?;
    let pseudo = pseudo_header_sum(src_ip, dst_ip, udp_len as u16);
    // Partial is checked before summing the payload: an offloaded send's frame (the usual case
    // across veth) costs no pass over its bytes. A complete checksum that happens to equal the
    // pseudo-header sum is accepted either way.
    let checksum = if field == 0 {
        Checksum::None
    } else if field == fold(pseudo) {
        Checksum::Partial
    } else if fold(sum_words(udp, pseudo)) == 0xffff {
        Checksum::Verified
    } else {
        return Err(DropReason::UdpChecksum);
    };
    Ok(Udp4 {
        src: SocketAddrV4::new(src_ip, src_port),
        dst: SocketAddrV4::new(dst_ip, dst_port),
        payload: &udp[UDP_HEADER..],
        checksum,
    })
}

/// Everything that goes into one outgoing frame besides the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The IPv4 identification field.
    pub ip_id: u16,
}

/// The frame's, IPv4 and UDP lengths of a datagram carrying `payload_len` bytes; None when the
/// IP length does not fit its 16 bits.
#[inline(always)]
fn lengths(payload_len: usize) -> Option<(usize, u16, u16)> {
    let udp_len = UDP_HEADER + payload_len;
    let ip_len = IPV4_HEADER + udp_len;
    let ip_len16 = u16::try_from(ip_len).ok()?;
    Some((ETH_HEADER + ip_len, ip_len16, udp_len as u16)) // udp_len < ip_len
}

/// Writes a complete Ethernet/IPv4/UDP frame carrying `payload` into the start of `buf`, with
/// correct IPv4 and UDP checksums. Returns the frame's length, or `None` when it does not fit
/// in `buf` or in the 16-bit IP length.
pub fn write_udp4(buf: &mut [u8], header: &FrameHeader, payload: &[u8]) -> Option<usize> {
    let (frame_len, ip_len16, udp_len16) = lengths(payload.len())?;
    let frame = buf.get_mut(..frame_len)?;
    let (eth, rest) = frame.split_at_mut(ETH_HEADER);
    let (ip, udp) = rest.split_at_mut(IPV4_HEADER);

    eth[0..6].copy_from_slice(&header.dst_mac);
    eth[6..12].copy_from_slice(&header.src_mac);
    eth[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    ip[0] = 0x45; // version 4, IHL 5
    ip[1] = 0; // DSCP/ECN
    ip[2..4].copy_from_slice(&ip_len16.to_be_bytes());
    ip[4..6].copy_from_slice(&header.ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
    ip[8] = TTL;
    ip[9] = IPPROTO_UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&header.src.ip().octets());
    ip[16..20].copy_from_slice(&header.dst.ip().octets());
    let ip_sum = !fold(sum_words(ip, 0));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    udp[0..2].copy_from_slice(&header.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&header.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len16.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[UDP_HEADER..].copy_from_slice(payload);
    let pseudo = pseudo_header_sum(*header.src.ip(), *header.dst.ip(), udp_len16);
    let mut udp_sum = !fold(sum_words(udp, pseudo));
    if udp_sum == 0 {
        // 0 means "no checksum" in UDP; a computed 0 is sent as its other representation.
        udp_sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    Some(frame_len)
}

/// The headers of every frame from one source to one destination through one next hop, built
/// once: a send copies them and patches what varies (the lengths, the IP identification and the
/// two checksums, completed from sums of the fixed fields), instead of laying out and summing
/// each header again ([`write_udp4`] is the reference it is tested against).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTemplate {
    /// What it was built for (the IP identification is ignored).
    pub header: FrameHeader,
    /// Ethernet, IPv4 and UDP headers with zero lengths, identification and checksums.
    bytes: [u8; HEADERS],
    /// [`sum_words`] of the IPv4 header as in `bytes`.
    ip_sum: u64,
    /// [`sum_words`] of the UDP pseudo-header without its length, and of the UDP header as in
    /// `bytes` (the ports).
    udp_sum: u64,
    /// [`sum_words`] of the UDP pseudo-header without its length (for offloaded checksums).
    pseudo_sum: u64,
}

impl HeaderTemplate {
    /// The template of `header`'s frames (its `ip_id` is not used).
    pub fn new(header: &FrameHeader) -> HeaderTemplate {
        let mut bytes = [0u8; HEADERS];
        let fixed = FrameHeader { ip_id: 0, ..*header };
        write_udp4(&mut bytes, &fixed, &[]).expect("the headers fit in HEADERS bytes");
        // Lengths and checksums are patched per frame: zero them here.
        for at in [ETH_HEADER + 2, ETH_HEADER + 3, ETH_HEADER + 10, ETH_HEADER + 11] {
            bytes[at] = 0;
        }
        for at in [ETH_HEADER + IPV4_HEADER + 4, ETH_HEADER + IPV4_HEADER + 5, ETH_HEADER + IPV4_HEADER + 6, ETH_HEADER + IPV4_HEADER + 7] {
            bytes[at] = 0;
        }
        let ip_sum = sum_words(&bytes[ETH_HEADER..ETH_HEADER + IPV4_HEADER], 0);
        let pseudo_sum = pseudo_header_sum(*header.src.ip(), *header.dst.ip(), 0);
        let udp_sum = sum_words(&bytes[ETH_HEADER + IPV4_HEADER..], pseudo_sum);
        HeaderTemplate { header: *header, bytes, ip_sum, udp_sum, pseudo_sum }
    }

    /// Whether frames for `header` (whatever its `ip_id`) are this template's.
    #[inline]
    pub fn serves(&self, header: &FrameHeader) -> bool {
        self.header.src == header.src && self.header.dst == header.dst && self.header.dst_mac == header.dst_mac && self.header.src_mac == header.src_mac
    }

    /// Writes the frame carrying `payload` with identification `ip_id` into the start of
    /// `buf`: the same bytes as [`write_udp4`] for this template's header. Returns the frame's
    /// length, or `None` when it does not fit in `buf` or in the 16-bit IP length.
    #[inline]
    pub fn write(&self, buf: &mut [u8], ip_id: u16, payload: &[u8]) -> Option<usize> {
        self.write_with(buf, ip_id, payload, false)
    }

    /// As [`HeaderTemplate::write`], but the UDP checksum is left for the transmitter to
    /// complete (checksum offload): its field holds the folded pseudo-header sum, as the
    /// kernel leaves it in a `CHECKSUM_PARTIAL` skb, and the payload is not summed here.
    #[inline]
    pub fn write_for_offload(&self, buf: &mut [u8], ip_id: u16, payload: &[u8]) -> Option<usize> {
        self.write_with(buf, ip_id, payload, true)
    }

    #[inline(always)]
    fn write_with(&self, buf: &mut [u8], ip_id: u16, payload: &[u8], offload: bool) -> Option<usize> {
        let (frame_len, ip_len16, udp_len16) = lengths(payload.len())?;
        let frame = buf.get_mut(..frame_len)?;
        let (head, data) = frame.split_at_mut(HEADERS);
        head.copy_from_slice(&self.bytes);
        data.copy_from_slice(payload);
        let ip_sum = !fold(self.ip_sum + u64::from(ip_len16) + u64::from(ip_id));
        head[ETH_HEADER + 2..ETH_HEADER + 4].copy_from_slice(&ip_len16.to_be_bytes());
        head[ETH_HEADER + 4..ETH_HEADER + 6].copy_from_slice(&ip_id.to_be_bytes());
        head[ETH_HEADER + 10..ETH_HEADER + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let udp_sum = if offload {
            // Not complemented: the sum the transmitter starts from. Never 0 (the protocol
            // number alone makes it non-zero), so it cannot read as "no checksum".
            fold(self.pseudo_sum + u64::from(udp_len16))
        } else {
            // The UDP length counts twice: in the pseudo-header and in the UDP header.
            let sum = sum_words(payload, self.udp_sum + 2 * u64::from(udp_len16));
            match !fold(sum) {
                0 => 0xffff, // as in write_udp4
                s => s,
            }
        };
        let udp = &mut head[ETH_HEADER + IPV4_HEADER..];
        udp[4..6].copy_from_slice(&udp_len16.to_be_bytes());
        udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
        Some(frame_len)
    }
}

/// The one's-complement sum's accumulator over `bytes` as big-endian 16-bit words (an odd last
/// byte is padded with zero), added to `initial`. Not folded: see [`fold`].
///
/// 64 bits at a time: the bytes are summed as little-endian 64-bit words with end-around carry
/// (an add and an add-with-carry each; 2^16 ≡ 1 modulo 0xffff, so a 64-bit word counts as its
/// four 16-bit parts), folded, and byte-swapped — the one's-complement sum of the
/// little-endian words is the byte swap of the big-endian one (RFC 1071, "byte order
/// independence"). The folded result equals [`sum_words_bytewise`]'s (tested).
pub fn sum_words(bytes: &[u8], initial: u64) -> u64 {
    #[inline(always)]
    fn add(acc: u64, v: u64) -> u64 {
        let (sum, carry) = acc.overflowing_add(v);
        sum + u64::from(carry)
    }
    #[inline(always)]
    fn word(c: &[u8], at: usize) -> u64 {
        u64::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3], c[at + 4], c[at + 5], c[at + 6], c[at + 7]])
    }
    let (mut a, mut b) = (0u64, 0u64);
    let mut blocks = bytes.chunks_exact(32);
    for c in &mut blocks {
        a = add(add(a, word(c, 0)), word(c, 8));
        b = add(add(b, word(c, 16)), word(c, 24));
    }
    let mut acc = add(a, b);
    let mut chunks = blocks.remainder().chunks_exact(8);
    for c in &mut chunks {
        acc = add(acc, word(c, 0));
    }
    let rest = chunks.remainder();
    let mut at = 0;
    if rest.len() - at >= 4 {
        acc = add(acc, u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]])));
        at += 4;
    }
    if rest.len() - at >= 2 {
        acc = add(acc, u64::from(u16::from_le_bytes([rest[at], rest[at + 1]])));
        at += 2;
    }
    if let Some(&last) = rest.get(at) {
        acc = add(acc, u64::from(last)); // the low byte of a little-endian word: the high of a big-endian one
    }
    initial + u64::from(fold(acc).swap_bytes())
}

/// [`sum_words`] two bytes at a time, as RFC 1071 writes it (the reference for the tests).
#[cfg(test)]
fn sum_words_bytewise(bytes: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a [`sum_words`] accumulator into 16 bits (end-around carry), in four fixed steps: 32
/// high bits onto the low 32 (< 2^33), then three 16-bit folds (< 2^18, then ≤ 0x10003, then ≤
/// 0xffff). Each step keeps the value modulo 0xffff and a non-zero value non-zero, so the result
/// is the one the folding loop gives (`fold_loop` in the tests).
#[inline]
pub fn fold(sum: u64) -> u16 {
    let s = (sum >> 32) + (sum & 0xffff_ffff);
    let s = (s >> 16) + (s & 0xffff);
    let s = (s >> 16) + (s & 0xffff);
    let s = (s >> 16) + (s & 0xffff);
    s as u16
}

/// The UDP pseudo-header's contribution: addresses, protocol, UDP length (the big-endian
/// 16-bit words added up, not folded: at most six words).
#[inline]
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u64 {
    let (s, d) = (u32::from(src), u32::from(dst));
    u64::from(s >> 16) + u64::from(s & 0xffff) + u64::from(d >> 16) + u64::from(d & 0xffff)
        + u64::from(IPPROTO_UDP) + u64::from(udp_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> FrameHeader {
        FrameHeader {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "10.1.2.3:4000".parse().unwrap(),
            dst: "10.1.2.4:5000".parse().unwrap(),
            ip_id: 7,
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = write_udp4(&mut buf, &header(), payload).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_built_frame_parses_back_with_verified_checksums() {
        for len in [0usize, 1, 2, 17, 1472] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = frame(&payload);
            assert_eq!(f.len(), HEADERS + len);
            let d = parse_udp4(&f).unwrap();
            assert_eq!(d.src, header().src);
            assert_eq!(d.dst, header().dst);
            assert_eq!(d.payload, &payload[..]);
            assert_eq!(d.checksum, Checksum::Verified);
        }
    }

    #[test]
    fn a_known_frame_has_the_checksums_the_kernel_computes() {
        // 192.168.0.1:1234 -> 192.168.0.2:80, payload "hi", id 0, DF, TTL 64: checksums as
        // computed independently (a few lines of Python over these exact bytes).
        let mut buf = [0u8; 64];
        let h = FrameHeader {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src: "192.168.0.1:1234".parse().unwrap(),
            dst: "192.168.0.2:80".parse().unwrap(),
            ip_id: 0,
        };
        let n = write_udp4(&mut buf, &h, b"hi").unwrap();
        let ip = &buf[ETH_HEADER..n];
        assert_eq!(u16::from_be_bytes([ip[10], ip[11]]), 0xb97b);
        assert_eq!(u16::from_be_bytes([ip[26], ip[27]]), 0x10fb);
    }

    #[test]
    fn checksum_zero_partial_and_wrong() {
        let mut f = frame(b"payload");
        let at = ETH_HEADER + IPV4_HEADER + 6;
        f[at..at + 2].copy_from_slice(&[0, 0]);
        assert_eq!(parse_udp4(&f).unwrap().checksum, Checksum::None);

        let pseudo = pseudo_header_sum(*header().src.ip(), *header().dst.ip(), 15);
        f[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
        assert_eq!(parse_udp4(&f).unwrap().checksum, Checksum::Partial);

        f[at..at + 2].copy_from_slice(&fold(pseudo).wrapping_add(1).to_be_bytes());
        assert_eq!(parse_udp4(&f), Err(DropReason::UdpChecksum));
    }

    #[test]
    fn a_complete_checksum_equal_to_the_pseudo_sum_reads_as_partial() {
        // The two payload bytes that make write_udp4's checksum equal the pseudo-header sum.
        let pseudo = fold(pseudo_header_sum(*header().src.ip(), *header().dst.ip(), 10));
        let at = ETH_HEADER + IPV4_HEADER + 6;
        let payload = (0..=u16::MAX)
            .map(u16::to_be_bytes)
            .find(|p| {
                let f = frame(p);
                u16::from_be_bytes([f[at], f[at + 1]]) == pseudo
            })
            .expect("some payload word gives any checksum");
        let f = frame(&payload);
        assert_eq!(fold(sum_words(&f[ETH_HEADER + IPV4_HEADER..], pseudo_header_sum(*header().src.ip(), *header().dst.ip(), 10))), 0xffff, "complete");
        let d = parse_udp4(&f).unwrap();
        assert_eq!((d.checksum, d.payload), (Checksum::Partial, &payload[..]));
    }

    #[test]
    fn each_bad_header_has_its_reason() {
        let good = frame(b"abc");
        type Case = (&'static str, fn(&mut Vec<u8>), DropReason);
        let cases: [Case; 9] = [
            ("short", |f| f.truncate(20), DropReason::Truncated),
            ("vlan", |f| f[12..14].copy_from_slice(&[0x81, 0]), DropReason::NotIpv4),
            ("version", |f| f[14] = 0x65, DropReason::IpVersion),
            ("ihl", |f| f[14] = 0x46, DropReason::IpOptions),
            ("total too big", |f| f[16..18].copy_from_slice(&[0, 200]), DropReason::IpLength),
            ("fragment", |f| f[20] |= 0x20, DropReason::Fragment),
            ("tcp", |f| f[23] = 6, DropReason::NotUdp),
            ("ip checksum", |f| f[24] ^= 1, DropReason::IpChecksum),
            ("udp len", |f| f[38..40].copy_from_slice(&[0, 4]), DropReason::UdpLength),
        ];
        for (what, mutate, reason) in cases {
            let mut f = good.clone();
            mutate(&mut f);
            assert_eq!(parse_udp4(&f), Err(reason), "{what}");
        }
        let mut f = good.clone();
        f[HEADERS] ^= 0xff;
        assert_eq!(parse_udp4(&f), Err(DropReason::UdpChecksum), "payload corrupted");
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut f = frame(b"x");
        f.resize(60, 0xee);
        assert_eq!(parse_udp4(&f).unwrap().payload, b"x");
    }

    #[test]
    fn too_small_buffers_and_oversize_payloads_are_refused() {
        let mut small = [0u8; HEADERS + 3];
        assert_eq!(write_udp4(&mut small, &header(), b"abcd"), None);
        let mut big = vec![0u8; 70_000];
        assert_eq!(write_udp4(&mut big, &header(), &vec![0; 65_508]), None);
    }

    #[test]
    fn template_frames_refuse_what_does_not_fit_and_keep_checksum_0xffff() {
        let t = HeaderTemplate::new(&header());
        let mut small = [0u8; HEADERS + 3];
        assert_eq!(t.write(&mut small, 1, b"abcd"), None);
        let mut big = vec![0u8; 70_000];
        assert_eq!(t.write(&mut big, 1, &vec![0; 65_508]), None);
        // A payload whose checksum computes to 0 is sent as 0xffff, as write_udp4 does.
        let mut f = frame(&[0, 0]);
        let at = ETH_HEADER + IPV4_HEADER + 6;
        let sum = u16::from_be_bytes([f[at], f[at + 1]]);
        let fix = sum.to_be_bytes(); // the payload word that makes the sum come out 0
        let payload = [fix[0], fix[1]];
        f = frame(&payload);
        let mut g = vec![0u8; 2048];
        let n = t.write(&mut g, header().ip_id, &payload).unwrap();
        assert_eq!(&f[..], &g[..n]);
        assert_eq!(&g[at..at + 2], &[0xff, 0xff]);
    }

    /// What a transmitter does with an offloaded checksum: sums from `UDP_CSUM_START` to the
    /// end (the field included) and stores the complement there, 0 sent as 0xffff.
    fn complete_offloaded(frame: &mut [u8]) {
        let start = usize::from(UDP_CSUM_START);
        let at = start + usize::from(UDP_CSUM_OFFSET);
        let sum = match !fold(sum_words(&frame[start..], 0)) {
            0 => 0xffff,
            s => s,
        };
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn offloaded_frames_are_partial_and_complete_to_the_full_frame() {
        let t = HeaderTemplate::new(&header());
        for len in [0usize, 1, 2, 17, 64, 1472] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut full = vec![0u8; 2048];
            let n = t.write(&mut full, 9, &payload).unwrap();
            let mut off = vec![0u8; 2048];
            assert_eq!(t.write_for_offload(&mut off, 9, &payload), Some(n), "{len}");
            let d = parse_udp4(&off[..n]).unwrap();
            assert_eq!((d.checksum, d.payload), (Checksum::Partial, &payload[..]), "{len}");
            // Only the UDP checksum differs, and completing it gives the full frame.
            let at = usize::from(UDP_CSUM_START + UDP_CSUM_OFFSET);
            assert_eq!(off[..at], full[..at], "{len}");
            assert_eq!(off[at + 2..n], full[at + 2..n], "{len}");
            complete_offloaded(&mut off[..n]);
            assert_eq!(off[..n], full[..n], "{len}");
        }
        let mut small = [0u8; HEADERS + 3];
        assert_eq!(t.write_for_offload(&mut small, 1, b"abcd"), None);
    }

    /// The folding loop, as RFC 1071 writes it (the reference for [`fold`]).
    fn fold_loop(mut sum: u64) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn fold_edge_cases() {
        for v in [0u64, 1, 0xffff, 0x1_0000, 0x1_fffe, 0x1_ffff, 0xffff_ffff, 0x1_0000_0000, 0xffff_ffff_ffff, u64::MAX, u64::MAX - 1, 0x8000_0000_0000_0000] {
            assert_eq!(fold(v), fold_loop(v), "{v:#x}");
        }
    }

    #[test]
    fn the_pseudo_header_sum_is_the_sum_of_its_words() {
        let (src, dst): (Ipv4Addr, Ipv4Addr) = ("192.168.200.1".parse().unwrap(), "255.254.253.252".parse().unwrap());
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&src.octets());
        b[4..8].copy_from_slice(&dst.octets());
        b[9] = IPPROTO_UDP;
        b[10..12].copy_from_slice(&1480u16.to_be_bytes());
        assert_eq!(fold(pseudo_header_sum(src, dst, 1480)), fold(sum_words_bytewise(&b, 0)));
    }

    #[test]
    fn fast_sum_edge_cases() {
        for b in [&[][..], &[0], &[0xff], &[0xff; 2], &[0xff; 7], &[0xff; 9], &[0xff; 1500], &[0; 64], &[1, 2, 3]] {
            for initial in [0u64, 1, 0xffff, 0x1_fffe, 0xffff_ffff] {
                assert_eq!(fold(sum_words(b, initial)), fold(sum_words_bytewise(b, initial)), "{b:?} {initial}");
            }
        }
    }

    #[test]
    fn drop_reasons_are_numbered_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }

    proptest! {
        // Bounded: a few thousand frames take well under a second in release builds.
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary bytes: never a panic, and anything accepted lies inside the frame.
        #[test]
        fn fuzz_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(d) = parse_udp4(&bytes) {
                let range = bytes.as_ptr_range();
                prop_assert!(d.payload.is_empty() || range.contains(&d.payload.as_ptr()));
                prop_assert!(d.payload.len() <= bytes.len() - HEADERS);
            }
        }

        /// A valid frame with some bytes overwritten and a random length: never a panic, and
        /// a mutation of a header byte that covers a checksum is caught.
        #[test]
        fn fuzz_mutated_frames_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            edits in proptest::collection::vec((0usize..400, any::<u8>()), 0..6),
            cut in 0usize..400,
        ) {
            let mut f = frame(&payload);
            for (at, value) in edits {
                if let Some(b) = f.get_mut(at) { *b = value; }
            }
            let len = f.len();
            f.truncate(len.saturating_sub(cut % (len + 1)));
            if let Ok(d) = parse_udp4(&f) {
                prop_assert!(HEADERS + d.payload.len() <= f.len());
            }
        }

        /// The fixed-step fold equals the folding loop.
        #[test]
        fn fold_matches_the_loop(v in any::<u64>()) {
            prop_assert_eq!(fold(v), fold_loop(v));
        }

        /// The word-at-a-time sum folds to the same checksum as the two-bytes-at-a-time one,
        /// whatever the length, the alignment and the initial value.
        #[test]
        fn fast_sum_matches_the_bytewise_sum(
            bytes in proptest::collection::vec(any::<u8>(), 0..2100),
            skip in 0usize..8,
            initial in any::<u32>(),
        ) {
            let b = &bytes[skip.min(bytes.len())..];
            let initial = u64::from(initial);
            prop_assert_eq!(fold(sum_words(b, initial)), fold(sum_words_bytewise(b, initial)));
        }

        /// A frame from a header template is byte for byte the frame write_udp4 builds.
        #[test]
        fn template_frames_equal_built_frames(
            src in any::<(u32, u16)>(), dst in any::<(u32, u16)>(), ids in proptest::collection::vec(any::<u16>(), 1..4),
            macs in any::<([u8; 6], [u8; 6])>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let h = FrameHeader {
                src_mac: macs.0, dst_mac: macs.1, ip_id: 0,
                src: SocketAddrV4::new(src.0.into(), src.1),
                dst: SocketAddrV4::new(dst.0.into(), dst.1),
            };
            let t = HeaderTemplate::new(&h);
            for id in ids {
                let h = FrameHeader { ip_id: id, ..h };
                prop_assert!(t.serves(&h));
                let (mut a, mut b) = (vec![0xa5u8; 2048], vec![0x5au8; 2048]);
                let n = write_udp4(&mut a, &h, &payload).unwrap();
                prop_assert_eq!(t.write(&mut b, id, &payload), Some(n));
                prop_assert_eq!(&a[..n], &b[..n]);
            }
        }

        /// Whatever the addresses, ports and payload, a built frame parses back to them.
        #[test]
        fn build_then_parse_round_trips(
            src in any::<(u32, u16)>(), dst in any::<(u32, u16)>(), id in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let h = FrameHeader {
                src_mac: [1; 6], dst_mac: [2; 6], ip_id: id,
                src: SocketAddrV4::new(src.0.into(), src.1),
                dst: SocketAddrV4::new(dst.0.into(), dst.1),
            };
            let mut buf = vec![0u8; 2048];
            let n = write_udp4(&mut buf, &h, &payload).unwrap();
            let d = parse_udp4(&buf[..n]).unwrap();
            prop_assert_eq!(d.src, h.src);
            prop_assert_eq!(d.dst, h.dst);
            prop_assert_eq!(d.payload, &payload[..]);
            // A complete checksum that equals the pseudo-header sum (one in 65535) reads as
            // partial: accepted either way.
            let at = ETH_HEADER + IPV4_HEADER + 6;
            let field = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let pseudo = fold(pseudo_header_sum(*h.src.ip(), *h.dst.ip(), (UDP_HEADER + payload.len()) as u16));
            prop_assert_eq!(d.checksum, if field == pseudo { Checksum::Partial } else { Checksum::Verified });
        }
    }
}
