//! raftline-core: the layers of raftline that never touch the operating system.
//!
//! Codec, the IO seams, consensus, the log, the service apply logic, the node that joins them,
//! and (feature `sim`) the simulator that drives them with seeds. Everything here is
//! deterministic given its inputs: no threads, sockets, files, clocks or unseeded randomness,
//! and no `unsafe`. The compiler keeps it so: this crate depends on no OS crate (libc, io-uring,
//! memmap2), forbids `unsafe_code`, and its `clippy.toml` refuses `std::fs`, `std::thread`,
//! `std::net`, `std::env`, `std::process` and the wall and monotonic clocks, so a slip fails CI.
//!
//! Layers import downward only: `codec` and `io` import nothing of ours; `consensus` uses
//! `codec`; `log` uses `codec`, `consensus` (the term index's entries) and the `io::Disk` seam;
//! `service` uses `codec`; `node` joins them over the seams. `sim` implements the seams with
//! faults. The `raftline` crate implements the seams on Linux and runs nodes on threads; it
//! re-exports these modules, so applications depend on `raftline` alone.

#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod client;
pub mod codec;
pub mod consensus;
pub mod io;
pub mod log;
pub mod node;
pub mod rng;
pub mod service;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
