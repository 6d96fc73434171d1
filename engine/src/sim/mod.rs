//! Simulated seams with faults, for deterministic tests (feature `sim`, or this crate's tests).
//!
//! Everything here is driven by a seeded [`crate::rng::Rng`]; the same seed gives the same run.

pub mod disk;
