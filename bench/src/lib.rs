//! The benchmark harness's shared parts (the `raftline-bench` binary has its own modules):
//! deterministic workloads for the instruction-count gate and the micro-benchmarks, and the
//! network namespaces that stand in for hosts (the fault harness's partitions, the external
//! cluster test).

pub mod net;
pub mod workloads;
