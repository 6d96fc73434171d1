//! See `raftline::sim::fuzz::records_and_snapshots`; its proptest twin runs in `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| raftline::sim::fuzz::records_and_snapshots(data));
