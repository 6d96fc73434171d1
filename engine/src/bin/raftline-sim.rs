//! raftline-sim: runs the deterministic cluster simulator over many seeds.
//!
//! ```text
//! raftline-sim --seeds 0..10000          run seeds, each twice, stop at the first violation
//! raftline-sim --seed 42 --trace         replay one seed with a trace of every event
//! ```

use std::time::Instant;

use raftline::consensus::BrokenRule;
use raftline::sim::cluster::{run_seed, run_seed_twice, SimConfig};

fn usage() -> ! {
    eprintln!("usage: raftline-sim (--seeds A..B | --seed N [--trace]) [--members 3|5] [--broken commit-without-quorum|ignore-logs-in-election|trust-peer-positions|forget-damage|pass-over-damaged-slot]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seeds = 0..100u64;
    let mut single = None;
    let mut trace = false;
    let mut members = 0;
    let mut broken = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--seeds" => {
                let v = value();
                let (a, b) = v.split_once("..").unwrap_or_else(|| usage());
                seeds =
                    a.parse().unwrap_or_else(|_| usage())..b.parse().unwrap_or_else(|_| usage());
            }
            "--seed" => single = Some(value().parse::<u64>().unwrap_or_else(|_| usage())),
            "--trace" => trace = true,
            "--members" => members = value().parse().unwrap_or_else(|_| usage()),
            "--broken" => {
                broken = Some(match value().as_str() {
                    "commit-without-quorum" => BrokenRule::CommitWithoutQuorum,
                    "ignore-logs-in-election" => BrokenRule::IgnoreLogsInElection,
                    "trust-peer-positions" => BrokenRule::TrustPeerPositions,
                    "forget-damage" => BrokenRule::ForgetDamage,
                    "pass-over-damaged-slot" => BrokenRule::PassOverDamagedSlot,
                    _ => usage(),
                })
            }
            _ => usage(),
        }
    }
    let config = |seed| SimConfig {
        members,
        trace,
        broken_rule: broken,
        ..SimConfig::new(seed)
    };
    if let Some(seed) = single {
        match run_seed(&config(seed)) {
            Ok(outcome) => println!("seed {seed}: ok {outcome:?}"),
            Err(v) => {
                println!("{v}");
                std::process::exit(1);
            }
        }
        return;
    }
    // Assertions are reported with their seed; the default hook would print each one twice.
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let total = seeds.end - seeds.start;
    for (i, seed) in seeds.enumerate() {
        if let Err(v) = run_seed_twice(&config(seed)) {
            println!("FAILED {v}");
            println!(
                "replay: cargo run --release -p raftline --features sim --bin raftline-sim -- --seed {seed} --trace{}",
                if members != 0 { format!(" --members {members}") } else { String::new() }
            );
            std::process::exit(1);
        }
        if (i + 1) % 100 == 0 {
            eprintln!(
                "{} / {total} seeds ok ({:.1} s)",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{total} seeds passed, each run twice with equal digests, in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
