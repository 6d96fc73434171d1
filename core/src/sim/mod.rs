//! Simulated seams with faults and the whole-cluster harness, for deterministic tests
//! (feature `sim`, or this crate's tests).
//!
//! Everything here is driven by a seeded [`crate::rng::Rng`]; the same seed gives the same run.

pub mod channel;
pub mod cluster;
pub mod disk;
pub mod fuzz;
pub mod hostile;
pub mod net;

#[cfg(test)]
mod tests;
