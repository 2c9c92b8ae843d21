//! An AF_XDP socket (XSK) and its four rings, with raw system calls.
//!
//! An XSK is bound to one queue of one interface. It talks to the kernel through four
//! single-producer/single-consumer rings in memory shared with the kernel:
//!
//! ```text
//!   fill ring  (we produce, kernel consumes)  empty receive frames for the kernel to fill
//!   RX ring    (kernel produces, we consume)  received frames: {addr, len}
//!   TX ring    (we produce, kernel consumes)  frames to send: {addr, len}
//!   completion (kernel produces, we consume)  sent frames, ours again
//! ```
//!
//! Each ring is a power-of-two array of descriptors plus a producer and a consumer index
//! (free-running u32s) and a flags word. The side that produces writes descriptors, then
//! publishes them with a release store of its index; the side that consumes reads the index
//! with an acquire load, reads the descriptors, and hands the slots back with a release store
//! of its own index. Both sides cache the other's index and re-read it only when the cached one
//! says the ring is full (producer) or empty (consumer).
//!
//! # Wakeups
//!
//! Bound with `XDP_USE_NEED_WAKEUP`, the kernel sets `XDP_RING_NEED_WAKEUP` in a ring's flags
//! when it will not look at that ring again until told to. For the TX ring the telling is
//! `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`; in copy mode that call is what actually sends
//! (the kernel builds an skb per descriptor inside it, at most a small budget per call), so in
//! copy mode every TX batch is kicked, flag or not. For the fill ring, `recvfrom` with
//! `MSG_DONTWAIT` (or a `poll`) does it.
//!
//! # TX metadata (checksum offload)
//!
//! Since Linux 6.11 (and 6.10.3) a UMEM registered with
//! `XDP_UMEM_TX_METADATA_LEN` reserves `tx_metadata_len` bytes before each TX descriptor's
//! address for a `struct xsk_tx_metadata`; a descriptor with the `XDP_TX_METADATA` option asks,
//! through it, for the UDP checksum to be completed by the device (`XDP_TXMD_FLAGS_CHECKSUM`,
//! skb-style start and offset). In copy mode the kernel honours it when it builds a linear skb
//! (every driver but virtio_net, whose frag-built skbs read no metadata before 6.18): the skb is
//! `CHECKSUM_PARTIAL`, completed by a NIC with `NETIF_F_HW_CSUM` (the XSK's skb carries no
//! protocol, so IPv4-only checksum offload does not apply), else in software on the way out,
//! within the kick. Older kernels refuse the flag, and we register without metadata (a kernel
//! before 6.8 would ignore the length silently and then refuse every descriptor asking for
//! metadata, so the length alone is never tried). Zero-copy drivers implement the request or
//! not; this module only reports whether the UMEM has the room.
//!
//! # Why raw system calls and not a crate
//!
//! What this needs is small (socket, five setsockopts, one getsockopt, four mmaps, bind, the
//! ring protocol), `libc` already has the structures, and owning it means every `unsafe` is
//! ours to justify, no libbpf/libxdp at run time, and no dependency whose ring API has to be
//! matched to how the rest of the datapath batches. `xdpilone` (pure Rust, maintained) would
//! also fit; it was not needed.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::umem::{Umem, FRAME_SIZE};

/// One RX/TX ring descriptor (`struct xdp_desc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDesc {
    /// Byte offset of the frame data in the UMEM.
    pub addr: u64,
    /// Bytes of frame data.
    pub len: u32,
    pub options: u32,
}

/// Bytes reserved before every TX descriptor's address for `struct xsk_tx_metadata` (24 bytes
/// today) when the UMEM has TX metadata: a multiple of 8 below 256 as the kernel wants, and a
/// whole cache line so that sent frames still start on one. Every TX descriptor's address must
/// then lie this far into its frame, metadata or not.
pub const TX_METADATA_LEN: u32 = 64;
/// Writes the TX metadata that asks for a checksum over `frame[start..]` stored at
/// `start + offset` (`struct xsk_tx_metadata`: u64 flags, then u16 csum_start, u16 csum_offset;
/// native byte order; tested against libc's struct) into `meta`, the `TX_METADATA_LEN` bytes
/// before a frame's data.
pub fn write_checksum_request(meta: &mut [u8], start: u16, offset: u16) {
    meta[..8].copy_from_slice(&u64::from(libc::XDP_TXMD_FLAGS_CHECKSUM).to_ne_bytes());
    meta[8..10].copy_from_slice(&start.to_ne_bytes());
    meta[10..12].copy_from_slice(&offset.to_ne_bytes());
}

/// Depths of the four rings; each is rounded up to a power of two (the kernel requires it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSizes {
    pub fill: u32,
    pub rx: u32,
    pub tx: u32,
    pub completion: u32,
}

/// How the socket shares frames with the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs straight into the UMEM. Needs driver support (veth has none).
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM. Works on every interface.
    Copy,
}

/// A shared-memory mapping of one ring, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: a mapping made by `map_ring`, unmapped exactly once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The parts common to both ends of a ring.
struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    _map: Mapping,
}

impl<T: Copy> Ring<T> {
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into `_map`, which lives as long as `self`, at the offset the kernel
        // reported; the kernel places these u32s at 4-byte-aligned offsets.
        unsafe { &*self.producer }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask` < size, and the mapping holds `size` descriptors at `descs`.
        unsafe { self.descs.add((index & self.mask) as usize) }
    }
}

/// Our end of a ring we produce into (fill, TX).
pub struct Producer<T> {
    ring: Ring<T>,
    /// Our producer index, published by [`Producer::submit`].
    next: u32,
    /// The last consumer index we read.
    consumed: u32,
}

// SAFETY: the raw pointers point into the mapping this value owns; producing needs `&mut`, so
// one thread at a time (a fill ring shared by several rings is kept under a lock, see
// `super::FillPool`).
unsafe impl<T: Send> Send for Producer<T> {}

impl<T: Copy> Producer<T> {
    fn new(ring: Ring<T>) -> Self {
        Producer { ring, next: 0, consumed: 0 }
    }

    /// Free slots, re-reading the kernel's consumer index only when the cached one shows fewer
    /// than `wanted`.
    pub fn free(&mut self, wanted: u32) -> u32 {
        let free = self.ring.size - self.next.wrapping_sub(self.consumed);
        if free >= wanted {
            return free;
        }
        // Acquire: the kernel has finished reading the slots it hands back.
        self.consumed = self.ring.consumer().load(Ordering::Acquire);
        self.ring.size - self.next.wrapping_sub(self.consumed)
    }

    /// Writes one descriptor into the next slot; invisible to the kernel until `submit`.
    /// Returns false (writing nothing) when the ring is full.
    pub fn push(&mut self, item: T) -> bool {
        if self.free(1) == 0 {
            return false;
        }
        // SAFETY: the slot is free (checked above), so the kernel does not read it until we
        // publish; `slot` stays inside the mapping.
        unsafe { self.ring.slot(self.next).write_volatile(item) };
        self.next = self.next.wrapping_add(1);
        true
    }

    /// Publishes every pushed descriptor (release: their contents are visible first).
    pub fn submit(&mut self) {
        self.ring.producer().store(self.next, Ordering::Release);
    }

    /// Descriptors published but not yet taken by the kernel.
    pub fn outstanding(&self) -> u32 {
        self.next
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    pub fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }

    pub fn size(&self) -> u32 {
        self.ring.size
    }
}

/// Our end of a ring we consume from (RX, completion).
pub struct Consumer<T> {
    ring: Ring<T>,
    /// Our consumer index, published by [`Consumer::release`].
    next: u32,
    /// The last producer index we read.
    produced: u32,
}

// SAFETY: as for `Producer`: consuming needs `&mut`; a completion ring shared by several rings'
// sends is kept under a lock (`super::tx::TxPool`).
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T: Copy> Consumer<T> {
    fn new(ring: Ring<T>) -> Self {
        Consumer { ring, next: 0, produced: 0 }
    }

    /// Descriptors ready to read, re-reading the kernel's producer index when the cached one
    /// shows none.
    pub fn available(&mut self) -> u32 {
        if self.produced == self.next {
            // Acquire: the descriptors up to the index are written before we read them.
            self.produced = self.ring.producer().load(Ordering::Acquire);
        }
        self.produced.wrapping_sub(self.next)
    }

    /// The `i`th ready descriptor (`i` < [`Consumer::available`]).
    pub fn peek(&self, i: u32) -> T {
        // SAFETY: published by the kernel (below `produced`) and not yet released by us.
        unsafe { self.ring.slot(self.next.wrapping_add(i)).read_volatile() }
    }

    /// Hands `n` read descriptors' slots back to the kernel (release: our reads are done).
    pub fn release(&mut self, n: u32) {
        self.next = self.next.wrapping_add(n);
        self.ring.consumer().store(self.next, Ordering::Release);
    }

    pub fn size(&self) -> u32 {
        self.ring.size
    }
}

/// A bound AF_XDP socket with its rings. The UMEM it registered must outlive it.
pub struct Xsk {
    pub rx: Consumer<XdpDesc>,
    /// The TX ring, until [`Xsk::take_tx`] takes it (to the ring's sending).
    tx: Option<Producer<XdpDesc>>,
    /// The fill ring, until [`Xsk::take_fill`] takes it (to share it with the other sockets
    /// of the queue).
    fill: Option<Producer<u64>>,
    /// The completion ring, until [`Xsk::take_completion`] takes it (shared by the queue's
    /// sockets' sends).
    completion: Option<Consumer<u64>>,
    mode: BindMode,
    /// Whether the UMEM has room for TX metadata ([`TX_METADATA_LEN`] before each TX address).
    tx_metadata: bool,
    // Last: the rings are unmapped before the socket is closed.
    fd: OwnedFd,
}

// SAFETY: the raw pointers point into mappings owned by this value; using them needs `&mut`.
unsafe impl Send for Xsk {}

/// A socket sharing a queue with an [`Xsk`] bound there before it ([`SharedXsk::open`]): an RX
/// ring of its own, the first socket's buffers, fill ring and completion ring. The XDP program
/// chooses between the sockets of a queue (see `accel/bpf/filter.c`): one per ring of the ring
/// allocation logic.
pub struct SharedXsk {
    pub rx: Consumer<XdpDesc>,
    /// Its TX ring, if it has one, until [`SharedXsk::take_tx`] takes it.
    tx: Option<Producer<XdpDesc>>,
    // Last: the ring is unmapped before the socket is closed.
    fd: OwnedFd,
}

// SAFETY: as for `Xsk`.
unsafe impl Send for SharedXsk {}

/// The error of a failed call, as the kernel's errno (kept raw, so callers can match EBUSY,
/// EOPNOTSUPP...); `what` names the call in the debug log.
fn check(ret: libc::c_int, what: &str) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        crate::log::debug(format_args!("xdp: {what}: {e}"));
        Err(e)
    } else {
        Ok(())
    }
}

fn set_opt<T>(fd: RawFd, opt: libc::c_int, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(r, what)
}

fn map_ring<T>(
    fd: RawFd,
    offsets: &libc::xdp_ring_offset,
    size: u32,
    pgoff: libc::off_t,
) -> io::Result<Ring<T>> {
    let len = offsets.desc as usize + size as usize * size_of::<T>();
    // SAFETY: maps the kernel's ring for this socket at the documented page offset; the
    // result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        )
    };
    if p == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mmap of an AF_XDP ring: {e}")));
    }
    let base = p.cast::<u8>();
    // SAFETY (all four): the kernel-reported offsets lie inside the `len` bytes just mapped.
    unsafe {
        Ok(Ring {
            producer: base.add(offsets.producer as usize).cast(),
            consumer: base.add(offsets.consumer as usize).cast(),
            flags: base.add(offsets.flags as usize).cast(),
            descs: base.add(offsets.desc as usize).cast(),
            mask: size - 1,
            size,
            _map: Mapping { ptr: base, len },
        })
    }
}

impl Xsk {
    /// Creates a socket on `ifindex`/`queue`, registers `umem`, sets up and maps the rings and
    /// binds in `mode` with `XDP_USE_NEED_WAKEUP`. Nothing is put on the fill ring yet.
    ///
    /// A queue already served by another XSK (another process, without a shared UMEM) makes
    /// bind fail with `EBUSY`.
    ///
    /// With `shared` (an XSK already bound on another queue of the same interface, which
    /// registered `umem`), the new socket shares that UMEM (`XDP_SHARED_UMEM`) instead of
    /// registering it: the kernel then wants fill and completion rings of its own (a queue's
    /// frames are posted and completed per queue), and gives it the first socket's bind mode
    /// (`mode` is ignored).
    ///
    /// With `tx_metadata` the UMEM is registered with room for TX metadata where the kernel
    /// supports it ([`Xsk::tx_metadata`] says whether it did; see the module doc). A shared
    /// socket has its first socket's UMEM, and the same answer.
    pub fn open(
        umem: &Umem,
        ifindex: u32,
        queue: u32,
        sizes: RingSizes,
        mode: BindMode,
        shared: Option<&Xsk>,
        tx_metadata: bool,
    ) -> io::Result<Xsk> {
        let fd = new_socket()?;
        let raw = fd.as_raw_fd();

        let tx_metadata = match shared {
            Some(first) => first.tx_metadata,
            None => {
                let reg = |flags: u32, tx_metadata_len: u32| libc::xdp_umem_reg {
                    addr: umem.base() as u64,
                    len: umem.len() as u64,
                    chunk_size: FRAME_SIZE,
                    headroom: 0,
                    flags,
                    tx_metadata_len,
                };
                let with_metadata = reg(libc::XDP_UMEM_TX_METADATA_LEN, TX_METADATA_LEN);
                match tx_metadata.then(|| set_opt(raw, libc::XDP_UMEM_REG, &with_metadata, "XDP_UMEM_REG")) {
                    Some(Ok(())) => true,
                    // EINVAL: a kernel that does not know the flag. Anything else fails the
                    // plain registration too, which then says so.
                    Some(Err(e)) => {
                        crate::log::debug(format_args!("xdp: no TX metadata ({e}): UDP checksums computed"));
                        set_opt(raw, libc::XDP_UMEM_REG, &reg(0, 0), "XDP_UMEM_REG")?;
                        false
                    }
                    None => {
                        set_opt(raw, libc::XDP_UMEM_REG, &reg(0, 0), "XDP_UMEM_REG")?;
                        false
                    }
                }
            }
        };
        let pow2 = |n: u32| n.max(1).next_power_of_two();
        let sizes = RingSizes {
            fill: pow2(sizes.fill),
            rx: pow2(sizes.rx),
            tx: pow2(sizes.tx),
            completion: pow2(sizes.completion),
        };
        set_opt(raw, libc::XDP_UMEM_FILL_RING, &sizes.fill, "XDP_UMEM_FILL_RING")?;
        set_opt(raw, libc::XDP_UMEM_COMPLETION_RING, &sizes.completion, "XDP_UMEM_COMPLETION_RING")?;
        set_opt(raw, libc::XDP_RX_RING, &sizes.rx, "XDP_RX_RING")?;
        set_opt(raw, libc::XDP_TX_RING, &sizes.tx, "XDP_TX_RING")?;

        let off = mmap_offsets(raw)?;
        let rx = map_ring::<XdpDesc>(raw, &off.rx, sizes.rx, libc::XDP_PGOFF_RX_RING)?;
        let tx = map_ring::<XdpDesc>(raw, &off.tx, sizes.tx, libc::XDP_PGOFF_TX_RING)?;
        let fill = map_ring::<u64>(raw, &off.fr, sizes.fill, libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t)?;
        let comp = map_ring::<u64>(raw, &off.cr, sizes.completion, libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t)?;

        // A socket sharing a UMEM takes no mode flags: it inherits the first socket's.
        let (flags, shared_fd, mode) = match (shared, mode) {
            (Some(first), _) => (libc::XDP_SHARED_UMEM, first.fd() as u32, first.mode),
            (None, BindMode::ZeroCopy) => (libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP, 0, mode),
            (None, BindMode::Copy) => (libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP, 0, mode),
        };
        bind(raw, flags, ifindex, queue, shared_fd)?;

        Ok(Xsk {
            rx: Consumer::new(rx),
            tx: Some(Producer::new(tx)),
            fill: Some(Producer::new(fill)),
            completion: Some(Consumer::new(comp)),
            mode,
            tx_metadata,
            fd,
        })
    }

    /// Takes the fill ring out (None the second time), for a caller that shares it between
    /// this socket and the [`SharedXsk`]s of its queue; it stays the kernel's fill ring of this
    /// socket's queue, and [`kick_fill`] with this socket's fd wakes the kernel for it.
    pub fn take_fill(&mut self) -> Option<Producer<u64>> {
        self.fill.take()
    }

    /// A second fd for the socket (for a holder of its fill ring: [`kick_fill`]).
    pub fn dup_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Whether TX descriptors may carry metadata: the UMEM reserves [`TX_METADATA_LEN`] bytes
    /// before each of their addresses.
    pub fn tx_metadata(&self) -> bool {
        self.tx_metadata
    }

    /// The socket's fd: readable (POLLIN) when the RX ring has frames.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Takes the TX ring out (None the second time).
    pub fn take_tx(&mut self) -> Option<Producer<XdpDesc>> {
        self.tx.take()
    }

    /// Takes the completion ring out (None the second time); it stays the completion ring of
    /// this socket's queue, where the sends of every socket sharing its buffers complete.
    pub fn take_completion(&mut self) -> Option<Consumer<u64>> {
        self.completion.take()
    }

    /// Tells the kernel the fill ring has frames again (only needed when it asked).
    pub fn kick_rx(&self) {
        kick_fill(self.fd());
    }

    /// The kernel's drop counters for this socket (`XDP_STATISTICS`).
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        statistics(self.fd())
    }
}

impl SharedXsk {
    /// Creates a socket on `first`'s interface (`ifindex`) and queue (`queue`, the one `first`
    /// is bound to) sharing its UMEM and buffer pool (`XDP_SHARED_UMEM`: the kernel then wants
    /// no fill or completion ring of its own, and takes the first socket's bind mode), with an
    /// RX ring of `rx` descriptors and a TX ring of `tx` (none for 0; both rounded up to a
    /// power of two). Its sends complete on the first socket's completion ring.
    pub fn open(first: &Xsk, ifindex: u32, queue: u32, rx: u32, tx: u32) -> io::Result<SharedXsk> {
        let fd = new_socket()?;
        let raw = fd.as_raw_fd();
        let rx = rx.max(1).next_power_of_two();
        set_opt(raw, libc::XDP_RX_RING, &rx, "XDP_RX_RING")?;
        let tx = (tx > 0).then(|| tx.next_power_of_two());
        if let Some(n) = &tx {
            set_opt(raw, libc::XDP_TX_RING, n, "XDP_TX_RING")?;
        }
        let off = mmap_offsets(raw)?;
        let ring = map_ring::<XdpDesc>(raw, &off.rx, rx, libc::XDP_PGOFF_RX_RING)?;
        let tx = match tx {
            Some(n) => Some(Producer::new(map_ring::<XdpDesc>(raw, &off.tx, n, libc::XDP_PGOFF_TX_RING)?)),
            None => None,
        };
        bind(raw, libc::XDP_SHARED_UMEM, ifindex, queue, first.fd() as u32)?;
        Ok(SharedXsk { rx: Consumer::new(ring), tx, fd })
    }

    /// Takes the TX ring out (None if it has none, or the second time).
    pub fn take_tx(&mut self) -> Option<Producer<XdpDesc>> {
        self.tx.take()
    }

    /// The socket's fd: readable (POLLIN) when its RX ring has frames.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The kernel's drop counters for this socket (`XDP_STATISTICS`).
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        statistics(self.fd())
    }
}

/// A new AF_XDP socket (close-on-exec), not yet set up.
fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    check(raw, "socket(AF_XDP)")?;
    // SAFETY: `raw` is a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Where the rings set up on socket `raw` are in their mappings.
fn mmap_offsets(raw: RawFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: zeroed is a valid value of this plain-integer struct.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut optlen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    // SAFETY: `off` and `optlen` are live and sized as the kernel expects.
    let r = unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut optlen,
        )
    };
    check(r, "XDP_MMAP_OFFSETS")?;
    if optlen as usize != size_of::<libc::xdp_mmap_offsets>() {
        // Kernels before 5.4 lack the flags word, which need-wakeup relies on.
        return Err(io::Error::new(io::ErrorKind::Unsupported, "AF_XDP: kernel too old (no ring flags)"));
    }
    Ok(off)
}

fn bind(raw: RawFd, flags: u16, ifindex: u32, queue: u32, shared_fd: u32) -> io::Result<()> {
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared_fd,
    };
    // SAFETY: `sa` is a live sockaddr_xdp and its size is passed with it.
    let r = unsafe {
        libc::bind(raw, (&sa as *const libc::sockaddr_xdp).cast(), size_of::<libc::sockaddr_xdp>() as libc::socklen_t)
    };
    check(r, "bind(AF_XDP)")
}

/// Tells the kernel to process the TX ring of socket `fd`. `Ok` also when it is merely busy
/// (`EAGAIN`, `EBUSY`, `ENOBUFS`: the descriptors stay queued for the next kick).
pub fn kick_tx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length sendto with no buffer and no address, as AF_XDP defines it.
    let r = unsafe { libc::sendto(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
    if r >= 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(()),
        _ => Err(e),
    }
}

/// Tells the kernel the fill ring of the socket `fd` (or of its queue, shared) has frames again
/// (only needed when it asked).
pub fn kick_fill(fd: RawFd) {
    // SAFETY: a zero-length recvfrom with no buffer, as AF_XDP defines the wakeup.
    unsafe {
        libc::recvfrom(fd, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT, std::ptr::null_mut(), std::ptr::null_mut());
    }
}

/// The kernel's drop counters of the socket `fd` (`XDP_STATISTICS`).
fn statistics(fd: RawFd) -> io::Result<libc::xdp_statistics> {
    // SAFETY: zeroed is a valid value of this plain-integer struct.
    let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live and sized as the kernel expects.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_XDP, libc::XDP_STATISTICS, (&mut st as *mut libc::xdp_statistics).cast(), &mut len)
    };
    check(r, "XDP_STATISTICS").map(|_| st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn the_checksum_request_is_laid_out_as_struct_xsk_tx_metadata() {
        let mut meta = [0xaau8; TX_METADATA_LEN as usize];
        write_checksum_request(&mut meta, 34, 6);
        let word = |at: usize| u16::from_ne_bytes([meta[at], meta[at + 1]]);
        let union_at = offset_of!(libc::xsk_tx_metadata, xsk_tx_metadata_union);
        assert_eq!(u64::from_ne_bytes(meta[..8].try_into().unwrap()), u64::from(libc::XDP_TXMD_FLAGS_CHECKSUM));
        assert_eq!(word(union_at + offset_of!(libc::xsk_tx_metadata_request, csum_start)), 34);
        assert_eq!(word(union_at + offset_of!(libc::xsk_tx_metadata_request, csum_offset)), 6);
        const { assert!(size_of::<libc::xsk_tx_metadata>() <= TX_METADATA_LEN as usize) };
        const { assert!(TX_METADATA_LEN < 256 && TX_METADATA_LEN.is_multiple_of(8), "what the kernel accepts") };
    }
}
