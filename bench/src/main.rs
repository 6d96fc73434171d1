//! raftline-bench: the benchmark harness. Every report states the machine and the settings
//! it ran with, and measures the reference it compares against in the same run.

mod catch_up;
mod compare;
mod cost;
mod failover;
mod faults;
mod host;
mod latency;
mod log_append;
mod peer;
#[cfg(feature = "peer-openraft")]
mod peer_openraft;
mod plot;
mod report;
mod sweep;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "raftline-bench", about = "raftline benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Round-trip latency of a 3-node cluster on loopback at a fixed rate (the default).
    Latency(latency::Args),
    /// The durable log against the raw disk floor, measured side by side.
    LogAppend(log_append::Args),
    /// Kill the leader repeatedly under load; the interruption distribution.
    Failover(failover::Args),
    /// Processes under kills, pauses, partitions and a full disk; checks the history.
    Faults(faults::Args),
    /// Latency at real-logic/benchmarks' (size, rate) pairs, scaled for the host.
    Matrix(sweep::MatrixArgs),
    /// The highest rate sustained with p99 under a bound.
    Throughput(sweep::ThroughputArgs),
    /// raftline and a peer Raft implementation side by side, in one run.
    Compare(compare::Args),
    /// How fast a follower that was down catches up with the leader's log.
    CatchUp(catch_up::Args),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = raftline::logging::StderrLines::install() {
        eprintln!("raftline-bench: {e}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Some(Command::Latency(args)) => latency::run(args),
        Some(Command::LogAppend(args)) => log_append::run(args),
        Some(Command::Failover(args)) => failover::run(args),
        Some(Command::Faults(args)) => faults::run(args),
        Some(Command::Matrix(args)) => sweep::matrix(args),
        Some(Command::Throughput(args)) => sweep::throughput(args),
        Some(Command::Compare(args)) => compare::run(args),
        Some(Command::CatchUp(args)) => catch_up::run(args),
        None => latency::run(latency::Args::default_main()),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(2),
        Err(e) => {
            eprintln!("raftline-bench: {e}");
            std::process::exit(1);
        }
    }
}
