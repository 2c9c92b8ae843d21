//! The posted-buffer receive model, adapted to the borrow/release one.
//!
//! A NIC queue in the ef_vi EF10 or AF_XDP style does not own buffers: the consumer *posts*
//! empty ones (ef_vi_receive_post, the AF_XDP fill ring) and later polls *completions* saying
//! which buffer got which frame (ef_eventq_poll, the AF_XDP RX ring). [`PostedQueue`] keeps
//! the device stocked with buffers and serves completions in order through [`RxQueue`], so the
//! socket code borrows a datagram in place and its release re-posts the buffer: one copy per
//! datagram, into the application's buffer, whichever model the device has.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddrV4;

use parking_lot::Mutex;

use super::{BadEntry, BufId, RxDatagram, RxQueue, SleepTicket};

/// One completed receive: which posted buffer holds which datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub buf: BufId,
    /// Where the payload starts in the buffer, and its length (validated by the device side).
    pub offset: u32,
    pub len: u32,
    pub owner: u64,
    pub src: SocketAddrV4,
}

/// A device queue in the posted-buffer model.
pub trait PostedRx: Send {
    /// Gives empty buffers to the device; returns how many it took.
    fn post(&mut self, bufs: &[BufId]) -> usize;
    /// Moves completed receives into `out` (at most `max`); frames that failed validation are
    /// counted by the device side and their buffers returned as `Err`, to be posted again.
    fn poll(&mut self, out: &mut Vec<Result<Completion, BufId>>, max: usize);
    /// The bytes of a buffer. Panics never: an out-of-range id gives an empty slice.
    fn buffer(&self, buf: BufId) -> &[u8];
    /// How many buffers the device queue can hold posted.
    fn depth(&self) -> u32;
    /// Wake-up support: the device's interrupt/need-wakeup flag, armed before sleeping.
    fn arm(&mut self) -> bool {
        true
    }
    /// The queue's state after it changed, for statistics: datagrams waiting (`fill`), the most
    /// ever waiting, and buffers not free (posted to the device or holding a datagram).
    fn queue_state(&mut self, _fill: u64, _max_fill: u64, _spare: u64) {}
}

struct Inner<P> {
    dev: P,
    /// Completions not yet borrowed and released, oldest first.
    ready: VecDeque<Completion>,
    /// Buffers that are neither posted nor holding a ready completion.
    free: Vec<BufId>,
    scratch: Vec<Result<Completion, BufId>>,
    bad: u64,
    max_fill: u64,
    /// Buffers posted to the device and not yet completed.
    posted: u32,
    /// The device's depth, and how many buffers it may lack before a release re-posts
    /// ([`Inner::restock_if_low`]).
    depth: u32,
    slack: u32,
    /// The device takes every buffer posted ([`PostedQueue::pooled`]): `posted` is not kept.
    pooled: bool,
}

/// A [`PostedRx`] device served as an [`RxQueue`].
pub struct PostedQueue<P> {
    inner: Mutex<Inner<P>>,
    /// The device queue's depth.
    capacity: u32,
    /// See [`RxQueue::wait_fd`].
    wait_fd: Option<libc::c_int>,
}

impl<P: PostedRx> fmt::Debug for PostedQueue<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostedQueue").field("capacity", &self.capacity).finish()
    }
}

impl<P: PostedRx> PostedQueue<P> {
    /// Takes ownership of `buffers` and posts as many as the device takes.
    pub fn new(dev: P, buffers: Vec<BufId>) -> PostedQueue<P> {
        PostedQueue::with_posted(dev, buffers, 0)
    }

    /// As [`PostedQueue::new`] for a device that already holds `posted` buffers (posted before
    /// the queue took it over; they come back as its completions).
    pub fn with_posted(dev: P, buffers: Vec<BufId>, posted: u32) -> PostedQueue<P> {
        let capacity = dev.depth();
        let q = PostedQueue {
            inner: Mutex::new(Inner {
                dev,
                ready: VecDeque::new(),
                free: buffers,
                scratch: Vec::new(),
                bad: 0,
                max_fill: 0,
                posted,
                depth: capacity,
                slack: (capacity / 32).clamp(1, 32),
                pooled: false,
            }),
            capacity,
            wait_fd: None,
        };
        q.inner.lock().restock();
        q
    }

    /// For a device whose buffers are a pool shared with other queues (several AF_XDP rings on
    /// one fill ring): its `post` takes every buffer, keeping what the device cannot hold yet
    /// for later, and its completions may be buffers another queue posted — so no count of
    /// posted buffers can be kept. Buffers go back to the pool once `slack` of them are free,
    /// and before a sleep ([`RxQueue::arm`]), so that a sleeping queue strands none (a
    /// busy-polling one holds fewer than `slack`; posting a few buffers on every empty poll
    /// cost the receiver of a stream more than it saved).
    pub fn pooled(dev: P) -> PostedQueue<P> {
        let q = PostedQueue::new(dev, Vec::new());
        q.inner.lock().pooled = true;
        q
    }

    /// The fd sleepers wait on for this queue ([`RxQueue::wait_fd`]).
    pub fn with_wait_fd(mut self, fd: libc::c_int) -> PostedQueue<P> {
        self.wait_fd = Some(fd);
        self
    }

    /// Frames the device side rejected (bad length, bad checksum, ...).
    pub fn bad_frames(&self) -> u64 {
        self.inner.lock().bad
    }

    /// Runs `f` on the device (for transmit paths that share it, and for tests).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        f(&mut self.inner.lock().dev)
    }

    /// As [`PostedQueue::with_device`] if the lock is free at once; `None` if not.
    pub fn try_with_device<R>(&self, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        self.inner.try_lock().map(|mut g| f(&mut g.dev))
    }
}

impl<P: PostedRx> Inner<P> {
    /// Posts free buffers, taken from the end of the free list in chunks: the device takes a
    /// chunk's first `n`, and only the chunk's untaken rest moves (posting from the front moved
    /// the whole list, thousands of entries, for every datagram released).
    fn restock(&mut self) {
        const CHUNK: usize = 16;
        while !self.free.is_empty() {
            let start = self.free.len().saturating_sub(CHUNK);
            let k = self.free.len() - start;
            let n = self.dev.post(&self.free[start..]).min(k);
            if !self.pooled {
                self.posted += n as u32;
            }
            if n == k {
                self.free.truncate(start);
                continue;
            }
            self.free.drain(start..start + n);
            return;
        }
    }

    /// Re-posts free buffers once the device lacks `slack` of its depth: posting (a ring
    /// submit) per released datagram cost more than the datagram's copy; a device a few
    /// buffers short of a deep ring still has hundreds.
    fn restock_if_low(&mut self) {
        let low = if self.pooled {
            self.free.len() as u32 >= self.slack
        } else {
            self.posted.saturating_add(self.slack) <= self.depth
        };
        if low {
            self.restock();
        }
    }

    fn refill_ready(&mut self) {
        if !self.ready.is_empty() {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.dev.poll(&mut scratch, 64);
        if scratch.is_empty() {
            // Nothing came in, so nothing changed: the free list was posted when it last grew
            // (release, bad frames below), and the device makes room for more only by
            // completing receives, which a later poll sees. The busy-poll path stays short.
            self.scratch = scratch;
            return;
        }
        self.posted = self.posted.saturating_sub(scratch.len() as u32);
        for c in scratch.drain(..) {
            match c {
                Ok(c) if (c.offset as usize).checked_add(c.len as usize).is_some_and(|e| e <= self.dev.buffer(c.buf).len()) => {
                    self.ready.push_back(c)
                }
                Ok(c) => {
                    self.bad += 1;
                    self.free.push(c.buf);
                }
                Err(buf) => {
                    self.bad += 1;
                    self.free.push(buf);
                }
            }
        }
        self.scratch = scratch;
        self.max_fill = self.max_fill.max(self.ready.len() as u64);
        self.restock_if_low();
        self.publish();
    }

    fn publish(&mut self) {
        let (fill, max, spare) = (self.ready.len() as u64, self.max_fill, self.free.len() as u64);
        self.dev.queue_state(fill, max, spare);
    }
}

impl<P: PostedRx> RxQueue for PostedQueue<P> {
    fn borrow(&self) -> Option<Result<(BufId, RxDatagram<'_>), BadEntry>> {
        let mut g = self.inner.lock();
        g.refill_ready();
        let c = *g.ready.front()?;
        let bytes = g.dev.buffer(c.buf);
        let payload = &bytes[c.offset as usize..(c.offset + c.len) as usize];
        let (ptr, len) = (payload.as_ptr(), payload.len());
        drop(g);
        // SAFETY: the buffer stays out of the device (not posted, not freed) until `release` of
        // this completion, which only the borrower calls after it is done with the slice; the
        // device's buffer memory lives as long as the queue, which `&self` borrows.
        let payload = unsafe { core::slice::from_raw_parts(ptr, len) };
        Some(Ok((c.buf, RxDatagram { owner: c.owner, src: c.src, payload })))
    }

    fn release(&self, id: BufId) -> bool {
        let mut g = self.inner.lock();
        if g.ready.front().map(|c| c.buf) != Some(id) {
            return false; // another consumer released it first
        }
        g.ready.pop_front();
        g.free.push(id);
        g.restock_if_low();
        g.publish();
        true
    }

    fn discard(&self, _bad: BadEntry) {
        // Bad frames never reach `ready`: refill_ready counts and re-posts them.
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn is_empty(&self) -> bool {
        let mut g = self.inner.lock();
        g.refill_ready();
        g.ready.is_empty()
    }

    fn arm(&self) -> bool {
        let mut g = self.inner.lock();
        g.refill_ready();
        if g.pooled && g.ready.is_empty() && !g.free.is_empty() {
            g.restock(); // before sleeping: the pool gets what was released below the slack
        }
        g.ready.is_empty() && g.dev.arm()
    }

    fn disarm(&self) {}

    fn arm_for(&self, _owner: u64) -> SleepTicket {
        if self.arm() { SleepTicket::Any } else { SleepTicket::DataPresent }
    }

    fn disarm_for(&self, _ticket: SleepTicket, _owner: u64) {}

    fn fill(&self) -> (u64, u64) {
        let g = self.inner.lock();
        (g.ready.len() as u64, g.max_fill)
    }

    fn wait_fd(&self) -> Option<libc::c_int> {
        self.wait_fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A device with `n` 64-byte buffers and a queue of frames "on the wire".
    struct FakeNic {
        mem: Vec<u8>,
        posted: VecDeque<BufId>,
        wire: VecDeque<Vec<u8>>,
        depth: u32,
    }

    impl PostedRx for FakeNic {
        fn post(&mut self, bufs: &[BufId]) -> usize {
            let room = self.depth as usize - self.posted.len();
            let n = room.min(bufs.len());
            self.posted.extend(&bufs[..n]);
            n
        }
        fn poll(&mut self, out: &mut Vec<Result<Completion, BufId>>, max: usize) {
            while out.len() < max && !self.wire.is_empty() && !self.posted.is_empty() {
                let frame = self.wire.pop_front().unwrap();
                let buf = self.posted.pop_front().unwrap();
                if frame.is_empty() {
                    out.push(Err(buf)); // a "bad frame"
                    continue;
                }
                let at = buf.0 as usize * 64;
                self.mem[at..at + frame.len()].copy_from_slice(&frame);
                let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
                out.push(Ok(Completion { buf, offset: 0, len: frame.len() as u32, owner: 7, src }));
            }
        }
        fn buffer(&self, buf: BufId) -> &[u8] {
            let at = buf.0 as usize * 64;
            self.mem.get(at..at + 64).unwrap_or(&[])
        }
        fn depth(&self) -> u32 {
            self.depth
        }
    }

    fn queue(buffers: u64, depth: u32) -> PostedQueue<FakeNic> {
        let nic = FakeNic { mem: vec![0; buffers as usize * 64], posted: VecDeque::new(), wire: VecDeque::new(), depth };
        PostedQueue::new(nic, (0..buffers).map(BufId).collect())
    }

    #[test]
    fn completions_are_borrowed_in_order_and_buffers_recycled() {
        let q = queue(4, 4);
        for round in 0..10u8 {
            q.with_device(|d| {
                for i in 0..3u8 {
                    d.wire.push_back(vec![round, i, 42]);
                }
            });
            for i in 0..3u8 {
                let (id, d) = q.borrow().unwrap().unwrap();
                assert_eq!(d.payload, &[round, i, 42]);
                assert_eq!(d.owner, 7);
                assert!(q.release(id));
                assert!(!q.release(id), "a second release of the same buffer is refused");
            }
            assert!(q.is_empty());
        }
        // Every buffer went back to the device.
        assert_eq!(q.with_device(|d| d.posted.len()), 4);
    }

    #[test]
    fn bad_frames_are_counted_and_their_buffers_reposted() {
        let q = queue(2, 2);
        q.with_device(|d| {
            d.wire.push_back(vec![]);
            d.wire.push_back(vec![1]);
        });
        let (id, d) = q.borrow().unwrap().unwrap();
        assert_eq!(d.payload, &[1]);
        assert!(q.release(id));
        assert_eq!(q.bad_frames(), 1);
        assert_eq!(q.with_device(|d| d.posted.len()), 2);
    }

    #[test]
    fn releases_repost_in_batches_and_the_device_never_runs_low() {
        let q = queue(256, 128); // slack 4
        assert_eq!(q.with_device(|d| d.posted.len()), 128);
        let mut reposts = 0;
        for i in 0..1000u32 {
            q.with_device(|d| d.wire.push_back(i.to_be_bytes().to_vec()));
            let (id, d) = q.borrow().unwrap().unwrap();
            assert_eq!(d.payload, i.to_be_bytes());
            let before = q.with_device(|d| d.posted.len());
            assert!(q.release(id));
            let after = q.with_device(|d| d.posted.len());
            if after > before {
                reposts += 1;
                assert_eq!(after, 128, "a repost fills the device up");
            }
            assert!(after >= 128 - 4, "the device lacks at most the slack ({after} posted)");
        }
        assert!(reposts <= 1000 / 4 + 1, "{reposts} reposts for 1000 releases");
    }

    #[test]
    fn a_device_posted_beforehand_is_counted() {
        let nic = FakeNic { mem: vec![0; 8 * 64], posted: (0..4).map(BufId).collect(), wire: VecDeque::new(), depth: 4 };
        let q = PostedQueue::with_posted(nic, (4..8).map(BufId).collect(), 4);
        q.with_device(|d| d.wire.extend((0..6u8).map(|i| vec![i])));
        let mut got = Vec::new();
        while let Some(Ok((id, d))) = q.borrow() {
            got.push(d.payload[0]);
            assert!(q.release(id));
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(q.with_device(|d| d.posted.len()), 4);
    }

    #[test]
    fn a_pooled_device_gets_buffers_back_in_batches_and_before_a_sleep() {
        // A pool: takes everything; "posted" holds all it has (posted or spare).
        let nic = FakeNic { mem: vec![0; 64 * 64], posted: (0..64).map(BufId).collect(), wire: VecDeque::new(), depth: u32::MAX };
        let q = PostedQueue::pooled(nic); // depth u32::MAX: slack 32
        for i in 0..40u8 {
            q.with_device(|d| d.wire.push_back(vec![i]));
        }
        // Releasing 31 keeps them (below the slack) while more are waiting...
        for i in 0..31u8 {
            let (id, d) = q.borrow().unwrap().unwrap();
            assert_eq!(d.payload, [i]);
            assert!(q.release(id));
        }
        let held = q.with_device(|d| d.posted.len());
        // ...the 32nd sends the batch back.
        let (id, _) = q.borrow().unwrap().unwrap();
        assert!(q.release(id));
        assert_eq!(q.with_device(|d| d.posted.len()), held + 32);
        // The rest: kept while the queue is polled (below the slack)...
        while let Some(Ok((id, _))) = q.borrow() {
            assert!(q.release(id));
        }
        assert!(q.is_empty());
        assert_eq!(q.with_device(|d| d.posted.len()), held + 32);
        // ...and given back before a sleep.
        assert!(q.arm());
        assert_eq!(q.with_device(|d| d.posted.len()), 64, "a sleeping queue keeps no buffer");
    }

    #[test]
    fn more_buffers_than_depth_wait_their_turn() {
        let q = queue(8, 2);
        assert_eq!(q.with_device(|d| d.posted.len()), 2);
        q.with_device(|d| d.wire.extend((0..5u8).map(|i| vec![i])));
        let mut got = Vec::new();
        while let Some(Ok((id, d))) = q.borrow() {
            got.push(d.payload[0]);
            assert!(q.release(id));
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        let (_, max) = q.fill();
        assert!(max >= 1);
    }
}
