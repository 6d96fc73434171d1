//! raftline-tune check [--root DIR] [--log-dir DIR] [--nodes N] [--json]
//! raftline-tune apply [--root DIR] [--dry-run] [--yes]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use raftline_tune::apply;
use raftline_tune::checks::{self, Status};
use raftline_tune::host::Host;

#[derive(Parser)]
#[command(
    name = "raftline-tune",
    about = "Check and tune a Linux host for raftline",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report, per setting, ok / warn / fail, the value, why it matters and the fix.
    Check {
        /// Read /proc and /sys under this root (for captured trees).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The log directory to check the storage of.
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// Nodes that will run on this host (sizes the core layout).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long)]
        json: bool,
    },
    /// Apply the settings that change safely at run time (prints only, unless --yes).
    Apply {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print the changes without writing (the default).
        #[arg(long)]
        dry_run: bool,
        /// Write the changes (needs root on a live host).
        #[arg(long)]
        yes: bool,
    },
}

fn main() {
    let code = match Cli::parse().command {
        Command::Check {
            root,
            log_dir,
            nodes,
            json,
        } => check(Host::new(root), log_dir, nodes, json),
        Command::Apply { root, dry_run, yes } => run_apply(Host::new(root), yes && !dry_run),
    };
    std::process::exit(code);
}

fn check(host: Host, log_dir: Option<PathBuf>, nodes: usize, json: bool) -> i32 {
    let report = checks::run(&host, log_dir.as_deref(), nodes.max(1));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
        return 0;
    }
    let mut area = "";
    for c in &report.checks {
        if c.area != area {
            area = c.area;
            println!("\n{area}");
        }
        let mark = match c.status {
            Status::Ok => "ok     ",
            Status::Warn => "WARN   ",
            Status::Fail => "FAIL   ",
            Status::Unknown => "unknown",
        };
        println!("  {mark} {:<15} {}", c.name, c.value);
        if c.status != Status::Ok {
            println!("          why: {}", c.why);
            if !c.fix.is_empty() {
                println!("          fix: {}", c.fix);
            }
        }
    }
    let l = &report.layout;
    println!(
        "\nsuggested layout for {} nodes on cores {:?} ({} threading, {} idle):",
        l.nodes, l.cores_available, l.threading, l.idle
    );
    for line in l.config.lines() {
        println!("  {line}");
    }
    println!(
        "\n{} ok, {} warnings, {} failures, {} unknown",
        report.count(Status::Ok),
        report.count(Status::Warn),
        report.count(Status::Fail),
        report.count(Status::Unknown)
    );
    0
}

fn run_apply(host: Host, write: bool) -> i32 {
    let changes = apply::plan(&host);
    if changes.is_empty() {
        println!("nothing to change at run time");
    }
    for c in &changes {
        println!(
            "{} {}: {} -> {}   (undo: {})",
            if write { "set" } else { "would set" },
            c.path,
            c.from,
            c.to,
            c.undo()
        );
    }
    for b in apply::boot_advice(&host) {
        println!("boot parameter (not written): {b}");
    }
    if !write {
        if !changes.is_empty() {
            println!("dry run: nothing written; run with --yes to apply");
        }
        return 0;
    }
    let failed = apply::apply(&host, &changes);
    for (c, e) in &failed {
        eprintln!("could not set {}: {e} (run as root?)", c.path);
    }
    if failed.is_empty() {
        0
    } else {
        1
    }
}
