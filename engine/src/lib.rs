//! raftline: an embeddable engine for fault-tolerant, deterministic, in-memory services.
//!
//! All client input is sequenced into one Raft-replicated, byte-position-indexed log, made
//! durable with io_uring and O_DIRECT, and applied by every replica's service. See DESIGN.md
//! in the shared notes for the architecture; each module's docs say what it owns.
//!
//! Two crates. [`raftline_core`] holds the layers that never touch the OS (codec, the IO seams,
//! consensus, log, service apply, node, and the simulator): it forbids `unsafe` and depends on
//! no OS crate, so the compiler keeps it pure. This crate re-exports them under the same paths
//! (`raftline::node`, `raftline::service`, ...) and adds what touches the OS: `sys` implements
//! the seams on Linux, `ring` holds the lock-free rings, `runtime` runs nodes on threads,
//! `client` is the OS-facing cluster client, `config` assembles the layers' settings from TOML.
//! `sys` and `sim` never import each other.

//!
//! # Embedding a service
//!
//! One deterministic [`service::Service`], started on a node from its config file:
//!
//! ```no_run
//! use raftline::config::Config;
//! use raftline::runtime::RunningNode;
//! use raftline::service::{fnv1a, Context, Service, FNV_OFFSET};
//!
//! /// Counts orders per session and expires an order book entry after one second.
//! struct Orders { count: u64, digest: u64 }
//!
//! impl Service for Orders {
//!     fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
//!         self.count += 1;
//!         self.digest = fnv1a(self.digest, payload);
//!         ctx.schedule_timer(self.count, ctx.timestamp_ns + 1_000_000_000);
//!         ctx.send(session_id, b"accepted");
//!     }
//!     fn on_timer(&mut self, _ctx: &mut Context, order: u64) {
//!         self.digest = fnv1a(self.digest, &order.to_le_bytes()); // expire it
//!     }
//!     fn digest(&self) -> u64 {
//!         self.digest
//!     }
//!     fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
//!         out.extend_from_slice(&self.count.to_le_bytes());
//!         out.extend_from_slice(&self.digest.to_le_bytes());
//!         true
//!     }
//!     fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
//!         if let Some(b) = snapshot {
//!             let word = |i: usize| b.get(i * 8..i * 8 + 8).map(|w| u64::from_le_bytes(w.try_into().unwrap()));
//!             let (Some(count), Some(digest)) = (word(0), word(1)) else {
//!                 return Err(format!("orders snapshot of {} bytes", b.len()));
//!             };
//!             *self = Orders { count, digest };
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let config = Config::load("node.toml".as_ref()).unwrap();
//! let node = RunningNode::start(&config, Orders { count: 0, digest: FNV_OFFSET }).unwrap();
//! // ... serve clients (raftline::client::ClusterClient) until shutdown ...
//! node.stop();
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

/// The README's Rust examples, compiled by `cargo test` as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(any(test, feature = "sim"))]
pub use raftline_core::sim;
pub use raftline_core::{access, auth, codec, consensus, io, log, node, rng, service};

// Under `--cfg loom` (the ring model checks) only the layers without threads or OS calls build.

#[cfg(not(loom))]
pub mod client;
pub mod config;
#[cfg(not(loom))]
pub mod logging;
pub mod ring;
#[cfg(not(loom))]
pub mod runtime;
#[cfg(not(loom))]
pub mod sys;
