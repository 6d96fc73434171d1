//! What every benchmark report carries: the machine, the revision, and latency summaries
//! from HdrHistogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Empties `dir` (what an earlier run left) and creates it.
pub fn fresh_dir(dir: &std::path::Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `--durability`: fdatasync or none.
pub fn durability(arg: &str) -> Result<raftline::log::Durability, String> {
    use raftline::log::Durability;
    match arg {
        "fdatasync" => Ok(Durability::Fdatasync),
        "none" => Ok(Durability::None),
        other => Err(format!("--durability {other}: use fdatasync or none")),
    }
}

/// Latencies are recorded in nanoseconds up to one hour, with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            p9999_us: us(0.9999),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

/// The host a figure was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub git_revision: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let git_revision = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu_model,
            cores,
            kernel,
            git_revision,
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} cores), Linux {}, revision {}",
            self.cpu_model, self.cores, self.kernel, self.git_revision
        )
    }
}

/// `n` free UDP ports on loopback, as "127.0.0.1:port" (bound, read, released).
pub fn loopback_ports(n: usize) -> std::io::Result<Vec<String>> {
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.to_string()))
        .collect()
}

/// Writes a JSON summary to `path`, or to stdout for "-".
pub fn write_json(path: &str, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).expect("serializable");
    if path == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text + "\n").map_err(|e| format!("{path}: {e}"))
    }
}

/// Removes a run's directory, and its parent if that is left empty (`bench-out/`).
pub fn remove_run_dir(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::remove_dir(parent);
    }
}
