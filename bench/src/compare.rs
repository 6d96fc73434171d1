//! `raftline-bench compare --peer openraft`: raftline and a peer Raft implementation measured in
//! one invocation with the same service (echo), the same open-loop client method, the same
//! message size, rate and durability. Latency runs alternate the two (raftline, peer, raftline,
//! peer, ...) so drift on the host hits both; then each gets the same throughput search. The
//! physical floors — a ring round trip between two threads, a loopback UDP round trip, a 4 KiB
//! write + fdatasync — are measured in the same run.

use std::path::PathBuf;

use hdrhistogram::Histogram;
use raftline::log::Durability;
use raftline::ring::spsc;
use raftline::runtime::monotonic_ns;
use serde::Serialize;

use crate::latency::{self, disk_floor, measure, udp_rtt, write_outputs, Plan, RunResult};
use crate::peer::PeerRun;
use crate::report::{histogram, remove_run_dir, write_json, Latency, Machine};
use crate::sweep::{self, Point};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub base: latency::Args,
    /// The peer to measure against (openraft; needs `--features peer-openraft`).
    #[arg(long, default_value = "openraft")]
    pub peer: String,
    /// The throughput search's p99 bound, in µs.
    #[arg(long, default_value_t = 5000.0)]
    pub p99_bound_us: f64,
    /// Seconds of load per point of the throughput search.
    #[arg(long, default_value_t = 2.0)]
    pub search_seconds: f64,
    #[arg(long, default_value_t = 1000)]
    pub min_rate: u64,
    #[arg(long, default_value_t = 256_000)]
    pub max_rate: u64,
    /// Only the fixed-rate latency runs.
    #[arg(long)]
    pub no_throughput: bool,
}

#[derive(Serialize)]
struct Side {
    name: String,
    writer: String,
    latency: Latency,
    runs: Vec<Latency>,
    achieved_rate: f64,
    missing_replies: u64,
    ok: bool,
    sustained_msg_s: Option<u64>,
    sustained_mb_s: Option<f64>,
    tried: Vec<Point>,
}

#[derive(Serialize)]
struct Ratio {
    /// raftline's sustained rate over the peer's (larger is better for raftline).
    throughput: Option<f64>,
    /// The peer's p99 over raftline's (larger is better for raftline).
    p99: f64,
    /// The peer's p50 over raftline's.
    p50: f64,
}

#[derive(Serialize)]
struct Floor {
    ring_round_trip: Latency,
    udp_round_trip: Latency,
    disk_4k_fdatasync: Option<Latency>,
}

#[derive(Serialize)]
struct Settings {
    raftline_topology: String,
    raftline_transport: String,
    peer_network: &'static str,
    durability: String,
    threading_mode: String,
    idle_strategy: String,
    size_bytes: usize,
    machine: Machine,
}

#[derive(Serialize)]
struct Report {
    peer: String,
    target_rate: u64,
    seconds: f64,
    raftline: Side,
    peer_result: Side,
    ratio: Ratio,
    floor: Floor,
    ok: bool,
    settings: Settings,
}

/// Round trip of one word through two single-producer rings between two spinning threads.
fn ring_round_trip(samples: usize) -> Latency {
    let (mut ping_tx, mut ping_rx) = spsc::channel::<u64>(1024);
    let (mut pong_tx, mut pong_rx) = spsc::channel::<u64>(1024);
    let echo = std::thread::spawn(move || loop {
        match ping_rx.pop() {
            Some(u64::MAX) => return,
            Some(v) => {
                while pong_tx.push(v).is_err() {
                    std::hint::spin_loop();
                }
            }
            None => std::hint::spin_loop(),
        }
    });
    let mut h = histogram();
    for i in 0..(samples + 1000) as u64 {
        let start = monotonic_ns();
        while ping_tx.push(i).is_err() {
            std::hint::spin_loop();
        }
        while pong_rx.pop().is_none() {
            std::hint::spin_loop();
        }
        if i >= 1000 {
            h.record((monotonic_ns() - start).max(1)).expect("in range");
        }
    }
    while ping_tx.push(u64::MAX).is_err() {
        std::hint::spin_loop();
    }
    let _ = echo.join();
    Latency::of(&h)
}

/// A peer: how to run it at a rate, its name and version, and how it makes its log durable.
struct Peer {
    measure: fn(&PeerRun) -> Result<RunResult, String>,
    name: String,
    writer: fn(Durability) -> String,
}

fn peer(name: &str) -> Result<Peer, String> {
    match name {
        #[cfg(feature = "peer-openraft")]
        "openraft" => Ok(Peer {
            measure: crate::peer_openraft::measure,
            name: crate::peer_openraft::VERSION.to_string(),
            writer: crate::peer_openraft::writer,
        }),
        #[cfg(not(feature = "peer-openraft"))]
        "openraft" => Err(
            "this build has no openraft peer: cargo run --release -p raftline-bench --features peer-openraft -- compare".into(),
        ),
        other => Err(format!("--peer {other}: the peer measured is openraft")),
    }
}

pub fn run(args: Args) -> Result<bool, String> {
    let Peer {
        measure: peer_measure,
        name: peer_name,
        writer: peer_writer,
    } = peer(&args.peer)?;
    let base = &args.base;
    let plan = Plan::of(base)?;
    let machine = Machine::detect();
    let peer_dir: PathBuf = base.dir.with_file_name("peer");
    std::fs::create_dir_all(&base.dir).map_err(|e| format!("{}: {e}", base.dir.display()))?;
    eprintln!("compare raftline with {peer_name} on {machine}");
    eprintln!("[1/3] physical floors: ring round trip, UDP round trip, disk ...");
    let floor = Floor {
        ring_round_trip: ring_round_trip(100_000),
        udp_round_trip: udp_rtt(2000).map_err(|e| e.to_string())?,
        disk_4k_fdatasync: match plan.durability {
            Durability::Fdatasync => Some(disk_floor(&base.dir, 2000).map_err(|e| e.to_string())?),
            Durability::None => None,
        },
    };

    let mut sides = [Vec::new(), Vec::new()];
    let mut writers = [String::new(), peer_writer(plan.durability)];
    for k in 0..base.runs {
        eprintln!(
            "[2/3] run {} of {}: {} msg/s of {} B, raftline then {peer_name} ...",
            k + 1,
            base.runs,
            base.rate,
            base.size
        );
        let r = measure(base, &plan, base.rate, base.size)?;
        writers[0] = r.writer.clone();
        let p = peer_measure(&PeerRun {
            durability: plan.durability,
            dir: &peer_dir,
            rate: base.rate,
            size: base.size,
            warmup_s: base.warmup,
            seconds: base.seconds,
        })?;
        if let Some(out) = &base.out {
            write_outputs(out, &format!("raftline-run{}", k + 1), &r)?;
            write_outputs(out, &format!("{}-run{}", args.peer, k + 1), &p)?;
        }
        sides[0].push(r);
        sides[1].push(p);
    }

    let mut searches: [Option<(u64, Vec<Point>)>; 2] = [None, None];
    if !args.no_throughput {
        let mut short = base.clone();
        short.seconds = args.search_seconds;
        short.warmup = short.warmup.min(0.5);
        eprintln!("[3/3] throughput search, raftline ...");
        searches[0] = Some(sweep::search(
            args.min_rate,
            args.max_rate,
            args.p99_bound_us,
            |rate| {
                Ok(Point::of(
                    &measure(&short, &plan, rate, base.size)?,
                    rate,
                    base.size,
                ))
            },
        )?);
        eprintln!("[3/3] throughput search, {peer_name} ...");
        searches[1] = Some(sweep::search(
            args.min_rate,
            args.max_rate,
            args.p99_bound_us,
            |rate| {
                let r = peer_measure(&PeerRun {
                    durability: plan.durability,
                    dir: &peer_dir,
                    rate,
                    size: base.size,
                    warmup_s: short.warmup,
                    seconds: short.seconds,
                })?;
                Ok(Point::of(&r, rate, base.size))
            },
        )?);
    }
    if !base.keep {
        remove_run_dir(&base.dir);
    }

    let names = ["raftline".to_string(), peer_name.clone()];
    let mut merged = Vec::new();
    let mut out_sides = Vec::new();
    for (i, runs) in sides.iter().enumerate() {
        let mut all = histogram();
        for r in runs {
            all.add(&r.histogram).expect("same bounds");
        }
        let missing: u64 = runs.iter().map(|r| r.missing).sum();
        let achieved = runs
            .iter()
            .map(|r| r.achieved_rate)
            .fold(f64::MAX, f64::min);
        let search = searches[i].take();
        out_sides.push(Side {
            name: names[i].clone(),
            writer: writers[i].clone(),
            latency: Latency::of(&all),
            runs: runs.iter().map(|r| Latency::of(&r.histogram)).collect(),
            achieved_rate: achieved,
            missing_replies: missing,
            ok: missing == 0
                && runs.iter().all(|r| r.backpressure == 0)
                && achieved >= 0.95 * base.rate as f64,
            sustained_msg_s: search.as_ref().map(|s| s.0),
            sustained_mb_s: search.as_ref().map(|s| s.0 as f64 * base.size as f64 / 1e6),
            tried: search.map(|s| s.1).unwrap_or_default(),
        });
        merged.push(all);
    }
    let peer_side = out_sides.pop().expect("two sides");
    let ours = out_sides.pop().expect("two sides");
    let ratio = Ratio {
        throughput: match (ours.sustained_msg_s, peer_side.sustained_msg_s) {
            (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
            _ => None,
        },
        p99: peer_side.latency.p99_us / ours.latency.p99_us.max(1e-9),
        p50: peer_side.latency.p50_us / ours.latency.p50_us.max(1e-9),
    };
    let report = Report {
        peer: peer_name,
        target_rate: base.rate,
        seconds: base.seconds,
        ok: ours.ok && peer_side.ok,
        raftline: ours,
        peer_result: peer_side,
        ratio,
        floor,
        settings: Settings {
            raftline_topology: base.topology.clone(),
            raftline_transport: match plan.ipc_dir {
                Some(_) => "members over ipc rings, client over udp loopback".into(),
                None => "members and client over udp loopback".into(),
            },
            peer_network:
                "in-process calls between tokio tasks; the client calls the leader's handle",
            durability: plan.durability.to_string(),
            threading_mode: base.threading.clone(),
            idle_strategy: base.idle.clone(),
            size_bytes: base.size,
            machine,
        },
    };
    print_report(&report);
    if let Some(out) = &base.out {
        let series: Vec<(String, &Histogram<u64>)> = report_series(&names, &merged);
        crate::plot::percentiles(
            &out.join("compare-percentiles.svg"),
            &format!(
                "round trip, {} B at {} msg/s, durability {}",
                base.size, base.rate, plan.durability
            ),
            &series,
        )?;
        write_json(&out.join("compare.json").display().to_string(), &report)?;
        eprintln!("wrote {}", out.display());
    }
    if let Some(path) = &base.json {
        write_json(path, &report)?;
    }
    if !report.ok {
        eprintln!("WARNING: a side missed its rate or lost replies; see `ok` per side");
    }
    Ok(report.ok)
}

fn report_series<'a>(
    names: &[String],
    merged: &'a [Histogram<u64>],
) -> Vec<(String, &'a Histogram<u64>)> {
    names.iter().cloned().zip(merged.iter()).collect()
}

fn print_report(r: &Report) {
    println!();
    println!(
        "raftline vs {}: echo, {} B at {} msg/s, {} s x {} run(s) each, durability {}",
        r.peer,
        r.settings.size_bytes,
        r.target_rate,
        r.seconds,
        r.raftline.runs.len(),
        r.settings.durability
    );
    println!(
        "raftline: {} ({}), threading {}, idle {}; writer {}",
        r.settings.raftline_topology,
        r.settings.raftline_transport,
        r.settings.threading_mode,
        r.settings.idle_strategy,
        r.raftline.writer
    );
    println!(
        "{}: {}; log {}",
        r.peer, r.settings.peer_network, r.peer_result.writer
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "latency (µs)", "p50", "p90", "p99", "p99.9", "max", "count", "sustained/s"
    );
    let row = |name: &str, l: &Latency, sustained: Option<u64>| {
        println!(
            "{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>12}",
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            l.count,
            sustained.map_or("-".into(), |s| s.to_string())
        )
    };
    row("raftline", &r.raftline.latency, r.raftline.sustained_msg_s);
    row(
        &r.peer,
        &r.peer_result.latency,
        r.peer_result.sustained_msg_s,
    );
    row(
        "floor: ring round trip (spin)",
        &r.floor.ring_round_trip,
        None,
    );
    row(
        "floor: loopback UDP round trip",
        &r.floor.udp_round_trip,
        None,
    );
    if let Some(d) = &r.floor.disk_4k_fdatasync {
        row("floor: 4 KiB write + fdatasync", d, None);
    }
    println!(
        "ratio (peer / raftline for latency, raftline / peer for throughput; > 1 favours raftline): p50 {:.2}, p99 {:.2}, throughput {}",
        r.ratio.p50,
        r.ratio.p99,
        r.ratio.throughput.map_or("-".into(), |t| format!("{t:.2}"))
    );
    println!("machine: {}", r.settings.machine);
}
