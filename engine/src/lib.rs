//! raftline: an embeddable engine for fault-tolerant, deterministic, in-memory services.
//!
//! All client input is sequenced into one Raft-replicated, byte-position-indexed log, made
//! durable with io_uring and O_DIRECT, and applied by every replica's service. See DESIGN.md
//! in the shared notes for the architecture; each module's docs say what it owns.
//!
//! Layers import downward only: `codec` and `io` import nothing of ours; `log` uses `codec`
//! and the `io::Disk` seam; `sys` implements the seams on Linux; `sim` implements them with
//! faults. `sys` and `sim` never import each other.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Under `--cfg loom` (the ring model checks) only the layers without threads or OS calls build.
pub mod access;
pub mod auth;
#[cfg(not(loom))]
pub mod client;
pub mod codec;
pub mod config;
pub mod consensus;
pub mod io;
pub mod log;
pub mod node;
pub mod ring;
pub mod rng;
#[cfg(not(loom))]
pub mod runtime;
pub mod service;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(not(loom))]
pub mod sys;
