//! raftline-sim: runs the deterministic cluster simulator over many seeds.
//!
//! ```text
//! raftline-sim --seeds 0..10000          run seeds, each twice, stop at the first violation
//! raftline-sim --seed 42 --trace         replay one seed with a trace of every event
//! ```

use std::time::Instant;

use raftline::client::BrokenClientRule;
use raftline::consensus::BrokenRule;
use raftline::sim::cluster::{run_seed, run_seed_twice, SimConfig};

fn usage() -> ! {
    eprintln!("usage: raftline-sim (--seeds A..B | --seed N [--trace]) [--members 3|5] [--broken commit-without-quorum|ignore-logs-in-election|trust-peer-positions|forget-damage|pass-over-damaged-slot] [--broken-client resend-with-new-sequence] [--remote-apply yes|no] [--client-core yes|no]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seeds = 0..100u64;
    let mut single = None;
    let mut trace = false;
    let mut members = 0;
    let mut broken = None;
    let mut broken_client = None;
    let mut remote_apply = None;
    let mut client_core = None;
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
            "--remote-apply" => {
                remote_apply = Some(match value().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => usage(),
                })
            }
            "--client-core" => {
                client_core = Some(match value().as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => usage(),
                })
            }
            "--broken-client" => {
                broken_client = Some(match value().as_str() {
                    "resend-with-new-sequence" => BrokenClientRule::ResendWithNewSequence,
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
        broken_client_rule: broken_client,
        remote_apply,
        client_core,
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
    let mut reached = Reached::default();
    for (i, seed) in seeds.enumerate() {
        let outcome = run_seed_twice(&config(seed));
        if let Ok(o) = &outcome {
            reached.add(o);
        }
        if let Err(v) = outcome {
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
    println!("reached: {reached}");
}

/// What the seeds exercised, summed: a fault class or shipped path that no seed reached was
/// not tested, however many seeds passed.
#[derive(Default)]
struct Reached {
    client_core_seeds: u64,
    client_core_acks: u64,
    direct_acks: u64,
    remote_seeds: u64,
    remote_applied: u64,
    crashes: u64,
    corruptions: u64,
    hostile: u64,
    waits_on_promise: u64,
}

impl Reached {
    fn add(&mut self, o: &raftline::sim::cluster::SimOutcome) {
        if o.client_core_acknowledged > 0 {
            self.client_core_seeds += 1;
        }
        self.client_core_acks += o.client_core_acknowledged;
        if o.remote_applied > 0 {
            self.remote_seeds += 1;
        }
        self.remote_applied += o.remote_applied;
        self.direct_acks += o.acknowledged - o.client_core_acknowledged;
        self.crashes += o.crashes;
        self.corruptions += o.corruptions;
        self.hostile += o.hostile_injected;
        self.waits_on_promise += u64::from(o.waits_on_promise);
    }
}

impl std::fmt::Display for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} seeds through the client protocol ({} acknowledgements; {} offered directly), {} seeds with members on the dedicated-mode apply path ({} messages applied there at the end), {} crashes, {} storage corruptions, {} hostile datagrams, {} runs waiting on a promise no one could keep",
            self.client_core_seeds,
            self.client_core_acks,
            self.direct_acks,
            self.remote_seeds,
            self.remote_applied,
            self.crashes,
            self.corruptions,
            self.hostile,
            self.waits_on_promise
        )
    }
}
