//! The shm datapath: same-host UDP between accelerated processes through shared-memory rings.
//!
//! - [`registry`]: which local (address, port) is served by which ring — the filter table.
//! - [`ring`]: the shared-memory datagram ring (multi-producer, multi-consumer, crash-safe).
//! - [`vi`]: this process's side: its rings, its endpoints, the sender's destination cache.

pub mod registry;
pub mod ring;
pub mod vi;
