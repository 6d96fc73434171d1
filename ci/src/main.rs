//! raftline-ci: regression tracking against baselines stored in the repository.
//!
//! ```text
//! raftline-ci instructions [--bin PATH] [--baseline FILE] [--tolerance 0.02] [--update]
//! ```
//!
//! Runs each workload of `raftline-instr` under `valgrind --tool=callgrind`, reads the number of
//! instructions it retired (repeatable for the same binary and input, unlike wall-clock time on
//! a shared machine), and compares it with the baseline. More than `tolerance` above the
//! baseline is a regression (exit 1); below is reported as an improvement to record with
//! `--update`. Counts depend on the compiler: with another rustc than the baseline's, the table
//! is printed but nothing fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

const WORKLOADS: [&str; 3] = ["codec", "log-append", "election"];

#[derive(Serialize, Deserialize)]
struct Baseline {
    rustc: String,
    instructions: BTreeMap<String, u64>,
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn count(bin: &PathBuf, workload: &str) -> Result<u64, String> {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(bin)
        .arg(workload)
        .output()
        .map_err(|e| format!("running valgrind: {e} (install valgrind)"))?;
    if !out.status.success() {
        return Err(format!(
            "{workload}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| {
            l.split("Collected :")
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
        })
        .ok_or_else(|| format!("{workload}: no instruction count in callgrind's output"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("instructions") {
        eprintln!("usage: raftline-ci instructions [--bin PATH] [--baseline FILE] [--tolerance 0.02] [--update]");
        std::process::exit(2);
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let bin =
        PathBuf::from(value("--bin").unwrap_or_else(|| "target/release/raftline-instr".into()));
    let baseline_path = PathBuf::from(
        value("--baseline").unwrap_or_else(|| "ci/baselines/instructions.json".into()),
    );
    let tolerance: f64 = value("--tolerance")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.02);
    let update = args.iter().any(|a| a == "--update");

    let rustc = rustc_version();
    let baseline: Option<Baseline> = std::fs::read_to_string(&baseline_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let same_toolchain = baseline.as_ref().is_some_and(|b| b.rustc == rustc);
    let mut current = BTreeMap::new();
    let mut regressions = 0;
    println!(
        "{:<12} {:>15} {:>15} {:>9}  status",
        "workload", "baseline", "current", "change"
    );
    for w in WORKLOADS {
        let n = match count(&bin, w) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("raftline-ci: {e}");
                std::process::exit(1);
            }
        };
        current.insert(w.to_string(), n);
        let base = baseline
            .as_ref()
            .and_then(|b| b.instructions.get(w))
            .copied();
        let (change, status) = match base {
            None => (String::from("-"), "new".to_string()),
            Some(b) => {
                let ratio = n as f64 / b as f64 - 1.0;
                let status = if ratio > tolerance {
                    if same_toolchain {
                        regressions += 1;
                        "REGRESSION"
                    } else {
                        "worse (other rustc: not gated)"
                    }
                } else if ratio < -tolerance {
                    "improved: record with --update"
                } else {
                    "ok"
                };
                (format!("{:+.2} %", ratio * 100.0), status.to_string())
            }
        };
        println!(
            "{w:<12} {:>15} {n:>15} {change:>9}  {status}",
            base.map_or("-".into(), |b| b.to_string())
        );
    }
    if !same_toolchain {
        println!(
            "baseline from {:?}, running {rustc}: counts are compared but not gated",
            baseline.as_ref().map(|b| &b.rustc)
        );
    }
    if update {
        let b = Baseline {
            rustc,
            instructions: current,
        };
        std::fs::write(
            &baseline_path,
            serde_json::to_string_pretty(&b).expect("serializable") + "\n",
        )
        .unwrap_or_else(|e| panic!("{}: {e}", baseline_path.display()));
        println!("baseline written to {}", baseline_path.display());
        return;
    }
    if regressions > 0 {
        eprintln!(
            "raftline-ci: {regressions} workload(s) regressed by more than {:.1} %",
            tolerance * 100.0
        );
        std::process::exit(1);
    }
    println!("0 regressions (tolerance {:.1} %)", tolerance * 100.0);
}
