//! The benchmark harness's shared parts (the `raftline-bench` binary has its own modules):
//! deterministic workloads for the instruction-count gate and the micro-benchmarks.

pub mod workloads;
