//! raftline-tune: checks and tunes a Linux host for low-latency raftline runs. Everything reads
//! /proc and /sys under a root path, so the logic is tested against captured fixture trees.

pub mod apply;
pub mod checks;
pub mod host;
