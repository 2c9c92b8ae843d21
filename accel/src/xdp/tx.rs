//! The send side of a ring: its TX ring, its send frames, and the headers it builds.
//!
//! Every ring sends through a TX ring of its own (ring 0 through its first queue's socket, ring
//! *k* through its socket on that queue), so threads on different rings neither share a TX ring
//! nor its lock (VMA_RING_ALLOCATION_LOGIC_TX). The sockets of a queue share its completion
//! ring, though (one buffer pool per queue, see [`super`]): a [`TxPool`] under a lock of its
//! own reaps it and hands each sent frame back to the ring that owns it. A ring reaps before
//! each send when the lock is free (so a frame just sent is reused while cache-hot), and waits
//! for the lock only when its own free frames have run out.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;

use super::frame::{self, FrameHeader, HeaderTemplate};
use super::route::{NoNextHop, Resolver};
use super::umem::{Umem, FRAME_SIZE};
use super::xsk::{self, BindMode, Consumer, Producer, XdpDesc, TX_METADATA_LEN};
use super::{NotSent, Sent, XdpCounters};

/// The send frames of a VI and the completion ring they come back on.
pub struct TxPool {
    completion: Consumer<u64>,
    /// The first send frame's address, and which ring owns each send frame (by frame number
    /// from it).
    first: u64,
    owner: Vec<u8>,
    /// Sent frames reaped for each ring and not yet taken by it, by ring index.
    returned: Vec<Vec<u64>>,
}

impl TxPool {
    /// A pool of the send frames `frames` (all ring 0's), completed on `completion`.
    pub fn new(completion: Consumer<u64>, frames: &[u64]) -> TxPool {
        let first = frames.iter().copied().min().unwrap_or(0);
        let n = frames.iter().map(|&a| ((a - first) / u64::from(FRAME_SIZE)) as usize + 1).max().unwrap_or(0);
        TxPool { completion, first, owner: vec![0; n], returned: vec![Vec::new()] }
    }

    /// Gives `frames` (free, ring 0's until now) to ring `ring`.
    pub fn give(&mut self, ring: u32, frames: &[u64]) {
        for &a in frames {
            if let Some(o) = self.owner.get_mut(((a - self.first) / u64::from(FRAME_SIZE)) as usize) {
                *o = ring as u8;
            }
        }
        if self.returned.len() <= ring as usize {
            self.returned.resize_with(ring as usize + 1, Vec::new);
        }
    }

    /// Moves completed frames to their rings' lists, then `ring`'s list into `into`.
    fn take(&mut self, ring: u32, into: &mut Vec<u64>) {
        let done = self.completion.available();
        for i in 0..done {
            let addr = self.completion.peek(i); // the descriptor's: past the metadata room
            let start = addr - addr % u64::from(FRAME_SIZE);
            let owner = self.owner.get(((start.wrapping_sub(self.first)) / u64::from(FRAME_SIZE)) as usize).copied();
            // A frame that is none of ours (a bad completion) is dropped, never reused.
            if let Some(list) = owner.and_then(|o| self.returned.get_mut(o as usize)) {
                list.push(start);
            }
        }
        if done > 0 {
            self.completion.release(done);
        }
        if let Some(list) = self.returned.get_mut(ring as usize) {
            into.append(list);
        }
    }
}

/// How a ring builds and sends frames.
#[derive(Clone, Debug)]
pub struct TxParams {
    pub src_mac: [u8; 6],
    /// Largest IP datagram sent (interface MTU, VMA_MTU and the frame size, whichever is
    /// smallest).
    pub max_ip_len: usize,
    /// The UDP checksum is left to the device (TX metadata, copy mode; see [`xsk`]).
    pub offload: bool,
    pub mode: BindMode,
}

/// One ring's sending: its TX ring (on socket `fd`), its free send frames, the next hops.
pub struct TxPath {
    ring: u32,
    tx: Producer<XdpDesc>,
    /// The socket whose TX ring it is (owned by the ring's VI or XdpRing, which outlive this).
    fd: RawFd,
    params: TxParams,
    resolver: Resolver,
    /// Send frames that are ours (not on the TX or completion ring, nor another ring's).
    free: Vec<u64>,
    pool: Arc<Mutex<TxPool>>,
    umem: Arc<Umem>,
    ip_id: u16,
    /// The headers of the last (source, destination, next hop) sent to, ready to copy.
    template: Option<HeaderTemplate>,
    /// Frames on the TX ring that no kick has covered yet ([`TxPath::send_deferred`]).
    unkicked: u32,
}

impl TxPath {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ring: u32,
        tx: Producer<XdpDesc>,
        fd: RawFd,
        params: TxParams,
        resolver: Resolver,
        free: Vec<u64>,
        pool: Arc<Mutex<TxPool>>,
        umem: Arc<Umem>,
    ) -> TxPath {
        let ip_id = (std::process::id() as u16).wrapping_mul(31).wrapping_add((ring as u16).wrapping_mul(4099));
        TxPath { ring, tx, fd, params, resolver, free, pool, umem, ip_id, template: None, unkicked: 0 }
    }

    pub fn params(&self) -> &TxParams {
        &self.params
    }

    /// Takes up to `n` free send frames off this ring (to give them to another).
    pub fn take_free(&mut self, n: usize) -> Vec<u64> {
        let keep = self.free.len().saturating_sub(n);
        self.free.split_off(keep)
    }

    /// Takes back frames [`TxPath::take_free`] took.
    pub fn give_back(&mut self, mut frames: Vec<u64>) {
        self.free.append(&mut frames);
    }

    /// Whether the kernel's route to `dst` leaves through this interface.
    pub fn routes_through_here(&mut self, dst: Ipv4Addr) -> bool {
        matches!(self.resolver.lookup(dst), Ok(_) | Err(NoNextHop::Unresolved))
    }

    /// See [`super::XdpVi::send`].
    pub fn send(&mut self, c: &mut XdpCounters, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        let result = self.queue_one(c, src, dst, payload);
        if result.is_ok() {
            self.tx.submit();
            self.kick(c);
        }
        result
    }

    /// See [`super::XdpVi::send_deferred`].
    pub fn send_deferred(&mut self, c: &mut XdpCounters, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        if self.params.mode == BindMode::ZeroCopy {
            return self.send(c, src, dst, payload);
        }
        let result = self.queue_one(c, src, dst, payload);
        if result.is_ok() {
            self.tx.submit();
            self.unkicked += 1;
        }
        result
    }

    /// Frames sent with [`TxPath::send_deferred`] and not kicked yet.
    pub fn unkicked(&self) -> u32 {
        self.unkicked
    }

    /// See [`super::XdpVi::flush_tx`].
    pub fn flush(&mut self, c: &mut XdpCounters, late: bool) {
        if self.unkicked > 0 {
            if late {
                c.tx_late_kicks += 1;
            }
            self.kick(c);
        }
    }

    /// See [`super::XdpVi::send_burst`].
    pub fn send_burst(&mut self, c: &mut XdpCounters, src: SocketAddrV4, batch: &[(SocketAddrV4, &[u8])]) -> (usize, Option<NotSent>) {
        let mut sent = 0;
        let mut stopped = None;
        for (dst, payload) in batch {
            match self.queue_one(c, src, *dst, payload) {
                Ok(_) => sent += 1,
                Err(why) => {
                    stopped = Some(why);
                    break;
                }
            }
        }
        if sent > 0 {
            self.tx.submit();
            self.kick(c);
        }
        (sent, stopped)
    }

    /// Builds one frame into a free send frame and puts it on the TX ring (not yet submitted).
    fn queue_one(&mut self, c: &mut XdpCounters, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        let result = self.try_queue_one(c, src, dst, payload);
        match result {
            Ok(sent) => {
                c.tx_datagrams += 1;
                c.tx_bytes += payload.len() as u64;
                Ok(sent)
            }
            Err(why) => {
                c.tx_not_sent[why.index()] += 1;
                Err(why)
            }
        }
    }

    fn try_queue_one(&mut self, c: &mut XdpCounters, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Sent, NotSent> {
        if frame::IPV4_HEADER + frame::UDP_HEADER + payload.len() > self.params.max_ip_len {
            return Err(NotSent::TooBig);
        }
        let hop = self.resolver.lookup(*dst.ip()).map_err(NotSent::NextHop)?;
        let src_ip = match (*src.ip(), hop.src_ip) {
            (ip, _) if ip != Ipv4Addr::UNSPECIFIED => ip,
            (_, Some(preferred)) => preferred,
            (_, None) => return Err(NotSent::NextHop(NoNextHop::NoRoute)),
        };
        // The completion ring is shared: reaped before each send if nobody else is at it (the
        // frame just sent comes back at once and is reused while still in the cache: popping
        // cold frames instead cost busy ping-pong 0.3-1 us), and when our frames run out.
        if self.free.is_empty() {
            self.pool.lock().take(self.ring, &mut self.free);
        } else if let Some(mut pool) = self.pool.try_lock() {
            pool.take(self.ring, &mut self.free);
        }
        if (self.tx.free(1) == 0 || self.free.is_empty()) && self.unkicked > 0 {
            // Deferred frames fill the ring or hold our frames: send them, then look again.
            self.kick(c);
            if self.free.is_empty() {
                self.pool.lock().take(self.ring, &mut self.free);
            }
        }
        if self.tx.free(1) == 0 {
            return Err(NotSent::RingFull);
        }
        let addr = self.free.pop().ok_or(NotSent::RingFull)?;
        self.ip_id = self.ip_id.wrapping_add(1);
        let header = FrameHeader {
            src_mac: self.params.src_mac,
            dst_mac: hop.dst_mac,
            src: SocketAddrV4::new(src_ip, src.port()),
            dst,
            ip_id: self.ip_id,
        };
        // A sender mostly sends where it sent last: its headers are copied, not rebuilt.
        let template = match &mut self.template {
            Some(t) if t.serves(&header) => t,
            slot => slot.insert(HeaderTemplate::new(&header)),
        };
        // The frame's data starts after the metadata room (every TX address must; see xsk).
        let offload = self.params.offload;
        // SAFETY: `addr` came off our free list: not on a TX ring, so the kernel does not read
        // it, and no other ring has it (the pool gives each frame to one ring).
        let written = unsafe { self.umem.frame_mut(addr) }.and_then(|buf| {
            let data = &mut buf[TX_METADATA_LEN as usize..];
            if offload {
                template.write_for_offload(data, header.ip_id, payload)
            } else {
                template.write(data, header.ip_id, payload)
            }
        });
        let Some(frame_len) = written else {
            self.free.push(addr);
            return Err(NotSent::TooBig);
        };
        // The checksum request needs the frame to reach past the checksum field (the kernel
        // refuses it otherwise, and the descriptor would stay at the head of the ring).
        debug_assert!(frame_len >= usize::from(frame::UDP_CSUM_START + frame::UDP_CSUM_OFFSET) + 2);
        let options = if offload { libc::XDP_TX_METADATA } else { 0 };
        let desc = XdpDesc { addr: addr + u64::from(TX_METADATA_LEN), len: frame_len as u32, options };
        let pushed = self.tx.push(desc);
        debug_assert!(pushed, "free(1) was checked");
        Ok(Sent { frame_len })
    }

    /// Makes the kernel transmit what is on the TX ring. In copy mode each `sendto` sends a
    /// bounded number of frames, so it is repeated while the kernel keeps taking them.
    /// A hard error is counted ([`XdpCounters::tx_kick_errors`]).
    fn kick(&mut self, c: &mut XdpCounters) {
        self.unkicked = 0;
        if self.params.mode == BindMode::ZeroCopy && !self.tx.needs_wakeup() {
            return;
        }
        c.tx_kicks += 1;
        let mut reaped = false;
        for _ in 0..64 {
            let before = self.tx.outstanding();
            if xsk::kick_tx(self.fd).is_err() {
                c.tx_kick_errors += 1;
                break;
            }
            let after = self.tx.outstanding();
            if after == 0 {
                break;
            }
            if after >= before {
                // Nothing taken: the completion ring may be full (shared with the other rings
                // of the queue, it is reaped by whoever sends): reap it once and try again.
                if reaped || self.params.mode != BindMode::Copy {
                    break;
                }
                reaped = true;
                let before = self.free.len();
                self.pool.lock().take(self.ring, &mut self.free);
                if self.free.len() == before {
                    break;
                }
            }
        }
        // What the kernel left on the ring (a busy queue, an error) still needs a kick: it
        // counts as unkicked, so a deferring caller (or the port, see `send_on`) tries again.
        if self.params.mode == BindMode::Copy {
            self.unkicked = self.tx.outstanding();
        }
    }
}
