//! raftline-instr: small deterministic workloads for instruction counting under callgrind.
//! Wall-clock time on a shared CI machine is noise; instructions retired by the same binary
//! on the same input are repeatable, so CI gates on them (`raftline-ci instructions`).
//!
//! raftline-instr codec | log-append | election

use raftline_bench::workloads::{codec, election, log_append};

fn main() {
    let result = match std::env::args().nth(1).as_deref() {
        Some("codec") => codec(100_000),
        Some("log-append") => log_append(50_000),
        Some("election") => election(2_000),
        _ => {
            eprintln!("usage: raftline-instr codec | log-append | election");
            std::process::exit(2);
        }
    };
    println!("{result}");
}
