//! The accel engine: everything behind the libc boundary of `libaccel.so`.
//!
//! `intercept` (the cdylib) owns the exported symbols and nothing else; each hook asks
//! [`fdtable`] whether the fd is ours and either calls into this crate or straight through to the
//! real libc function resolved by [`real`]. Everything here is testable without LD_PRELOAD.
//!
//! Modules, one concept each:
//! - [`config`]: environment variables, their libvma aliases, defaults and profiles.
//! - [`rules`]: the libvma.conf-style rules file.
//! - [`decision`]: whether a socket is accelerated, and why.
//! - [`log`]: levels, destination and re-entrancy-free output.
//! - [`real`]: the real libc functions (dlsym RTLD_NEXT), resolved eagerly and lazily.
//! - [`guard`]: per-thread flags (inside the engine, inside the name resolver).
//! - [`fdtable`]: fd → accelerated socket, lock-free on the lookup path.
//! - [`socket`]: the per-socket state of a socket we track.
//! - [`engine`]: the operations hooks call for our fds, and process start-up.
//! - [`vi`]: the datapath interface (kernel, shm, …), after ef_vi's virtual interface.
//! - [`udp`]: data calls on tracked UDP sockets.
//! - [`exec`]: keeping LD_PRELOAD and our variables across exec.
//! - [`stats`]: the per-process stats block in shared memory (accel stat, accel capture).
//! - [`xdp`]: the AF_XDP datapath's building blocks (filter program, UMEM, XSK, frames, next hop).

pub mod config;
pub mod decision;
pub mod engine;
pub mod exec;
pub mod fdtable;
pub mod grace;
pub mod guard;
pub mod log;
pub mod mux;
pub mod real;
pub mod rules;
pub mod shm;
pub mod signals;
pub mod socket;
pub mod stats;
pub mod udp;
pub mod vi;
pub mod xdp;

#[cfg(test)]
pub(crate) mod testutil;
