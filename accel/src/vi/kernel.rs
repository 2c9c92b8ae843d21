//! The kernel VI: the socket's own kernel socket, the path everything can take.
//!
//! Every tracked socket keeps its kernel socket as the application's fd, so this VI needs no
//! filter of its own (the kernel's socket lookup is one) and never refuses a destination. Its
//! receive reads straight into the application's buffers (`recvmsg`, no extra copy) and discards
//! the shm VI's doorbells, which arrive here by design (see [`crate::shm::vi`]).

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libc::{c_int, c_void, msghdr, sockaddr, sockaddr_in, socklen_t};

use super::{Filter, RxBinding, RxModel, TxOutcome, TxRequest, Vi, ViKind};
use crate::real;
use crate::shm::vi::{is_doorbell, DOORBELL_LEN};
use crate::socket::Socket;

#[derive(Debug)]
pub struct KernelVi;

/// The one kernel VI.
pub static KERNEL: KernelVi = KernelVi;

fn errno() -> c_int {
    // SAFETY: errno is thread-local.
    unsafe { *libc::__errno_location() }
}

impl KernelVi {
    /// Receives from the kernel socket without blocking, discarding doorbells for `s`. `None` =
    /// nothing there (EAGAIN); `Some(-1)` = a real error for the application (errno set).
    ///
    /// # Safety
    /// `msg` is the application's msghdr (valid iovecs and name buffer).
    pub unsafe fn receive(&self, fd: c_int, s: &Socket, msg: *mut msghdr, flags: c_int) -> Option<isize> {
        // Doorbells are filtered for as long as the socket ever had a binding: one may still be
        // queued after the socket went back to the kernel.
        let cookie = s.rx.get().map(|b| b.cookie);
        for _ in 0..64 {
            if let Some(cookie) = cookie {
                if discard_doorbell(fd, s, cookie)? {
                    continue;
                }
            }
            let r = real::recvmsg(fd, msg, flags | libc::MSG_DONTWAIT);
            if r < 0 {
                let e = errno();
                if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                    return None;
                }
                return Some(-1);
            }
            s.counters.rx(r as usize);
            return Some(r);
        }
        None
    }

    /// For poll/select/epoll, after the kernel reported the fd readable: consumes pending
    /// doorbells; true if a real datagram (or an error) is waiting.
    pub fn has_data(&self, fd: c_int, s: &Socket) -> bool {
        let Some(b) = s.rx.get() else { return true };
        for _ in 0..64 {
            // SAFETY: probes into our own buffer.
            match unsafe { discard_doorbell(fd, s, b.cookie) } {
                None => return false,
                Some(true) => continue,
                Some(false) => {
                    s.kernel_hint.store(true, Ordering::Relaxed);
                    return true;
                }
            }
        }
        true
    }
}

/// Looks at the next datagram on the kernel socket and consumes it if it is `cookie`'s doorbell.
/// `Some(true)` = a doorbell was discarded; `Some(false)` = something else is next (data, or an
/// error the application must see); `None` = the socket is empty.
///
/// # Safety
/// Reads into a local buffer only.
unsafe fn discard_doorbell(fd: c_int, s: &Socket, cookie: u64) -> Option<bool> {
    let mut probe = [0u8; DOORBELL_LEN + 1];
    let r = real::recv(fd, probe.as_mut_ptr() as *mut c_void, probe.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT);
    if r < 0 {
        let e = errno();
        return if e == libc::EAGAIN || e == libc::EWOULDBLOCK { None } else { Some(false) };
    }
    if !is_doorbell(&probe[..r as usize], cookie) {
        return Some(false);
    }
    real::recv(fd, probe.as_mut_ptr() as *mut c_void, probe.len(), libc::MSG_DONTWAIT);
    s.counters.doorbells_received.fetch_add(1, Ordering::Relaxed);
    Some(true)
}

impl Vi for KernelVi {
    fn kind(&self) -> ViKind {
        ViKind::Kernel
    }

    fn rx_model(&self) -> RxModel {
        // recvmsg posts the application's buffer and completes at once.
        RxModel::Posted
    }

    fn max_payload(&self) -> usize {
        65_507
    }

    fn reaches(&self, _ip: Ipv4Addr) -> bool {
        true
    }

    fn add_filter(&self, _fd: c_int, _filter: &Filter, _owner: &Arc<Socket>) -> io::Result<RxBinding> {
        // The kernel's own socket lookup is this VI's filter: bind() installed it.
        Err(io::Error::new(io::ErrorKind::Unsupported, "the kernel VI filters by bind()"))
    }

    fn remove_filter(&self, _binding: &RxBinding) {}

    fn transmit(&self, tx: &TxRequest<'_>) -> TxOutcome {
        let sin = crate::udp::sockaddr_in_of(tx.dest);
        // SAFETY: the payload slice and our own address.
        let r = unsafe {
            real::sendto(tx.fd, tx.payload.as_ptr() as *const c_void, tx.payload.len(), libc::MSG_DONTWAIT,
                &sin as *const sockaddr_in as *const sockaddr, size_of::<sockaddr_in>() as socklen_t)
        };
        if r < 0 && errno() == libc::EAGAIN {
            return TxOutcome::DroppedFull;
        }
        TxOutcome::Sent { woke: false }
    }
}

