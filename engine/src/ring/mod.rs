//! Lock-free single-producer single-consumer rings that join the threads of a node.
//! Imports nothing of ours.
//!
//! - [`spsc`]: fixed-size `Copy` messages (rtrb's design: cached opposite index, padded
//!   counters, one publishing store per batch).
//! - [`records`]: variable-length records with a type, padding at the wrap (Agrona's
//!   `OneToOneRingBuffer`), for frames; one reader, or several each at its own position
//!   (the log buffer).
//! - [`mapped`]: record-ring memory in a shared file, for the IPC transport.
//!
//! Both are bounded: full means back-pressure to the caller, never loss. They are checked
//! with loom (`RUSTFLAGS="--cfg loom" cargo test -p raftline --lib --release ring::loom`) and
//! with multi-threaded stress tests.

#[cfg(not(loom))]
pub mod mapped;
pub mod records;
pub mod spsc;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

/// Puts a counter on its own pair of cache lines (adjacent-line prefetch pulls 128 bytes), so
/// the producer's and the consumer's stores never share a line.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);
