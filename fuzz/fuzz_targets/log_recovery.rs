//! See `raftline::sim::fuzz::log_recovery`; its proptest twin runs in `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| raftline::sim::fuzz::log_recovery(data));
