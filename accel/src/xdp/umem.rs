//! The UMEM: the packet-buffer memory an AF_XDP socket shares with the kernel.
//!
//! One anonymous mapping cut into equal frames of [`FRAME_SIZE`] bytes. The kernel writes
//! received frames into it and reads frames to send from it; descriptors on the rings name a
//! frame by its byte offset ("address") from the start of the mapping. The first `rx_frames`
//! frames are for receiving (they circulate between the fill ring, the RX ring and us), the
//! rest for sending (the TX ring, the completion ring and our free list) — the two pools never
//! mix, so a burst of sends can never starve reception or the other way round.
//!
//! Sizes come from the configuration: VMA_RX_BUFS receive frames and VMA_TX_BUFS send frames.

use std::io;
use std::ptr::NonNull;

use crate::config::MemAlloc;

/// Bytes per frame: a 1500-byte MTU frame plus headroom fits, and it divides a 4 KiB page, as
/// the kernel requires for aligned chunks.
pub const FRAME_SIZE: u32 = 2048;

/// The registered memory region.
pub struct Umem {
    base: NonNull<u8>,
    len: usize,
    rx_frames: u32,
    tx_frames: u32,
}

// SAFETY: the mapping is plain memory owned by this value; the kernel's concurrent access is
// confined to frames we have handed it through the rings, which the ring protocol orders; our
// threads write only frames they own (`frame_mut`'s contract) and read received frames only
// until they post them again.
unsafe impl Send for Umem {}
// SAFETY: as above: `&Umem` gives out frames only under those rules.
unsafe impl Sync for Umem {}

impl Umem {
    /// Maps `rx_frames + tx_frames` frames, pre-faulted. With `MemAlloc::HugePages` huge pages
    /// are tried first and plain pages used when none are available.
    pub fn new(rx_frames: u32, tx_frames: u32, alloc: MemAlloc) -> io::Result<Umem> {
        let frames = u64::from(rx_frames) + u64::from(tx_frames);
        let len = usize::try_from(frames * u64::from(FRAME_SIZE))
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        if rx_frames == 0 || tx_frames == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        let attempts: &[i32] = if alloc == MemAlloc::HugePages {
            &[flags | libc::MAP_HUGETLB, flags]
        } else {
            &[flags]
        };
        let mut last = io::Error::from_raw_os_error(libc::ENOMEM);
        for &f in attempts {
            // SAFETY: a fresh anonymous mapping; no existing memory is affected.
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, f, -1, 0)
            };
            if p == libc::MAP_FAILED {
                last = io::Error::last_os_error();
                continue;
            }
            if let Some(base) = NonNull::new(p.cast::<u8>()) {
                return Ok(Umem { base, len, rx_frames, tx_frames });
            }
        }
        Err(last)
    }

    /// Start of the region (for XDP_UMEM_REG).
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many frames are for sending.
    pub fn tx_frames(&self) -> u32 {
        self.tx_frames
    }

    /// The addresses of the receive frames.
    pub fn rx_addrs(&self) -> impl Iterator<Item = u64> {
        (0..u64::from(self.rx_frames)).map(|i| i * u64::from(FRAME_SIZE))
    }

    /// The addresses of the send frames.
    pub fn tx_addrs(&self) -> impl Iterator<Item = u64> {
        let first = u64::from(self.rx_frames);
        (first..first + u64::from(self.tx_frames)).map(|i| i * u64::from(FRAME_SIZE))
    }

    /// The `len` bytes at `addr`, if they lie within one frame of the region. Descriptors come
    /// from the kernel, but a bad one must cost a counter, not memory safety.
    pub fn bytes(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let (start, len) = self.checked(addr, len)?;
        // SAFETY: `checked` keeps the range inside the mapping and inside one frame; the frame
        // was handed to us by the RX ring, so the kernel no longer writes it.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) })
    }

    /// The whole frame at `addr` (which must be a frame start), writable.
    ///
    /// # Safety
    ///
    /// Nobody else may read or write that frame while the slice lives: the caller owns it (a
    /// send frame on its free list, not on the TX ring), and the region is shared by several
    /// rings only through frames each owns (see `super::FillPool`).
    #[allow(clippy::mut_from_ref)] // the ownership is the frame's, per the contract above
    pub unsafe fn frame_mut(&self, addr: u64) -> Option<&mut [u8]> {
        if !addr.is_multiple_of(u64::from(FRAME_SIZE)) {
            return None;
        }
        let (start, len) = self.checked(addr, FRAME_SIZE)?;
        // SAFETY: inside the mapping (checked); the caller owns the frame (the contract).
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) })
    }

    fn checked(&self, addr: u64, len: u32) -> Option<(usize, usize)> {
        let start = usize::try_from(addr).ok()?;
        let len = len as usize;
        let frame_end = (start / FRAME_SIZE as usize + 1) * FRAME_SIZE as usize;
        let end = start.checked_add(len)?;
        (end <= frame_end && end <= self.len).then_some((start, len))
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once. The socket that registered it is
        // closed first (XdpVi field order), after which the kernel no longer uses it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_disjoint_and_bytes_stay_inside_one_frame() {
        let u = Umem::new(4, 2, MemAlloc::Anon).unwrap();
        let rx: Vec<u64> = u.rx_addrs().collect();
        let tx: Vec<u64> = u.tx_addrs().collect();
        assert_eq!(rx, [0, 2048, 4096, 6144]);
        assert_eq!(tx, [8192, 10240]);
        assert_eq!(u.len(), 6 * 2048);
        assert!(u.bytes(2048, 2048).is_some());
        assert!(u.bytes(2049, 2048).is_none(), "crosses into the next frame");
        assert!(u.bytes(10240, 2049).is_none(), "past the end");
        assert!(u.bytes(u64::MAX, 1).is_none());
        // SAFETY: nobody else uses this region.
        unsafe {
            assert!(u.frame_mut(100).is_none(), "not a frame start");
            u.frame_mut(10240).unwrap()[2047] = 7;
        }
        assert_eq!(u.bytes(10240 + 2047, 1).unwrap(), [7]);
    }
}
