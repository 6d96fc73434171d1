//! See `raftline::sim::fuzz::node_receive`; its proptest twin runs in `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| raftline::sim::fuzz::node_receive(data));
