//! `raftline-bench matrix` and `raftline-bench throughput`: the latency run at several points.
//!
//! - matrix: the (size, rate) pairs of real-logic/benchmarks — 32 B at 501 k/s, 288 B at
//!   301 k/s, 1344 B at 101 k/s — with the rates scaled by `--scale` for small hosts.
//! - throughput: the highest rate sustained with every reply arriving and p99 under a bound,
//!   found by doubling and then bisecting; reported in msg/s and MB/s.

use serde::Serialize;

use crate::latency::{self, measure, write_outputs, Plan};
use crate::report::{write_json, Latency, Machine};

#[derive(clap::Args, Clone, Debug)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub base: latency::Args,
    /// Multiplies the reference rates (501 k, 301 k, 101 k msg/s); the default suits 2 vCPUs.
    #[arg(long, default_value_t = 0.004)]
    pub scale: f64,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub base: latency::Args,
    /// The p99 a sustained rate must stay under, in µs.
    #[arg(long, default_value_t = 5000.0)]
    pub p99_bound_us: f64,
    /// Where the search starts, msg/s.
    #[arg(long, default_value_t = 1000)]
    pub min_rate: u64,
    /// Where it stops doubling, msg/s.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rate: u64,
}

#[derive(Clone, Serialize)]
pub struct Point {
    size_bytes: usize,
    target_rate: u64,
    achieved_rate: f64,
    missing_replies: u64,
    ok: bool,
    latency: Latency,
}

/// What every sweep report states about how it ran.
#[derive(Serialize)]
struct RunSettings {
    durability: String,
    threading_mode: String,
    idle_strategy: String,
    transport: String,
    machine: Machine,
}

impl RunSettings {
    fn of(args: &latency::Args, machine: Machine) -> Self {
        Self {
            durability: args.durability.clone(),
            threading_mode: args.threading.clone(),
            idle_strategy: args.idle.clone(),
            transport: args.transport.clone(),
            machine,
        }
    }
}

#[derive(Serialize)]
struct MatrixReport {
    scale: f64,
    points: Vec<Point>,
    ok: bool,
    #[serde(flatten)]
    settings: RunSettings,
}

#[derive(Serialize)]
struct ThroughputReport {
    size_bytes: usize,
    p99_bound_us: f64,
    /// The highest rate that held (every reply, rate reached, p99 under the bound).
    sustained_msg_s: u64,
    sustained_mb_s: f64,
    tried: Vec<Point>,
    ok: bool,
    #[serde(flatten)]
    settings: RunSettings,
}

fn point(args: &latency::Args, plan: &Plan, rate: u64, size: usize) -> Result<Point, String> {
    let r = measure(args, plan, rate, size)?;
    if let Some(out) = &args.out {
        write_outputs(out, &format!("{size}B-{rate}msgs"), &r)?;
    }
    Ok(Point::of(&r, rate, size))
}

impl Point {
    /// A run's figures; it held when every reply came, with no back-pressure, at 95 % of the
    /// offered rate or more.
    pub fn of(r: &latency::RunResult, rate: u64, size: usize) -> Self {
        let ok = r.missing == 0 && r.backpressure == 0 && r.achieved_rate >= 0.95 * rate as f64;
        Self {
            size_bytes: size,
            target_rate: rate,
            achieved_rate: r.achieved_rate,
            missing_replies: r.missing,
            ok,
            latency: Latency::of(&r.histogram),
        }
    }
}

/// The highest rate in `[min_rate, max_rate]` at which `try_rate` holds with p99 under
/// `p99_bound_us`: doubling until a rate fails, then bisecting between the last that held and
/// the first that did not, to within 10 %. Returns the rate (0 if none held) and every point.
pub fn search(
    min_rate: u64,
    max_rate: u64,
    p99_bound_us: f64,
    mut try_rate: impl FnMut(u64) -> Result<Point, String>,
) -> Result<(u64, Vec<Point>), String> {
    let holds = |p: &Point| p.ok && p.latency.p99_us <= p99_bound_us;
    let mut tried = Vec::new();
    let mut good = 0u64;
    let mut bad = None;
    let mut rate = min_rate.max(1);
    while rate <= max_rate {
        eprintln!("{rate} msg/s ...");
        let p = try_rate(rate)?;
        let held = holds(&p);
        tried.push(p);
        if !held {
            bad = Some(rate);
            break;
        }
        good = rate;
        rate *= 2;
    }
    if let Some(mut high) = bad {
        let mut low = good;
        while high > low + low / 10 + 1 {
            let mid = (low + high) / 2;
            eprintln!("{mid} msg/s ...");
            let p = try_rate(mid)?;
            if holds(&p) {
                low = mid;
            } else {
                high = mid;
            }
            tried.push(p);
        }
        good = low;
    }
    Ok((good, tried))
}

pub fn row(p: &Point) {
    let l = &p.latency;
    println!(
        "{:>7} B {:>9} msg/s {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
        p.size_bytes,
        p.target_rate,
        p.achieved_rate,
        l.p50_us,
        l.p99_us,
        l.p999_us,
        l.p9999_us,
        l.max_us,
        if p.ok { "ok" } else { "NOT OK" }
    );
}

pub fn header() {
    println!(
        "{:>9} {:>15} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "size", "target", "achieved", "p50 µs", "p99 µs", "p99.9", "p99.99", "max"
    );
}

pub fn matrix(args: MatrixArgs) -> Result<bool, String> {
    let plan = Plan::of(&args.base)?;
    let machine = Machine::detect();
    println!("matrix on {machine}, rates scaled by {}", args.scale);
    let mut points = Vec::new();
    for (size, rate) in [(32usize, 501_000f64), (288, 301_000.0), (1344, 101_000.0)] {
        let rate = ((rate * args.scale) as u64).max(1);
        eprintln!("{size} B at {rate} msg/s ...");
        points.push(point(&args.base, &plan, rate, size)?);
    }
    header();
    points.iter().for_each(row);
    let ok = points.iter().all(|p| p.ok);
    let report = MatrixReport {
        scale: args.scale,
        ok,
        points,
        settings: RunSettings::of(&args.base, machine),
    };
    if let Some(path) = &args.base.json {
        write_json(path, &report)?;
    }
    Ok(ok)
}

pub fn throughput(args: ThroughputArgs) -> Result<bool, String> {
    let plan = Plan::of(&args.base)?;
    let machine = Machine::detect();
    let size = args.base.size;
    println!(
        "throughput on {machine}: {size} B, p99 bound {} µs",
        args.p99_bound_us
    );
    let (good, tried) = search(args.min_rate, args.max_rate, args.p99_bound_us, |rate| {
        point(&args.base, &plan, rate, size)
    })?;
    header();
    tried.iter().for_each(row);
    let mb_s = good as f64 * size as f64 / 1e6;
    println!(
        "sustained: {good} msg/s = {mb_s:.2} MB/s of payload (p99 ≤ {} µs)",
        args.p99_bound_us
    );
    let report = ThroughputReport {
        size_bytes: size,
        p99_bound_us: args.p99_bound_us,
        sustained_msg_s: good,
        sustained_mb_s: mb_s,
        ok: good > 0,
        tried,
        settings: RunSettings::of(&args.base, machine),
    };
    if let Some(path) = &args.base.json {
        write_json(path, &report)?;
    }
    Ok(good > 0)
}
