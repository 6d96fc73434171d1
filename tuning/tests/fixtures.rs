//! The checks against captured /proc and /sys trees of a tuned and an untuned host, and a
//! smoke test on the real machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use raftline_tune::apply;
use raftline_tune::checks::{self, Report, Status};
use raftline_tune::host::Host;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn status(report: &Report, area: &str, name: &str) -> Status {
    report
        .checks
        .iter()
        .find(|c| c.area == area && c.name == name)
        .unwrap_or_else(|| panic!("no check {area}.{name}"))
        .status
}

#[test]
fn untuned_host_gets_warnings_with_fixes() {
    let host = Host::new(fixture("untuned"));
    let report = checks::run(&host, Some(Path::new("/var/lib/raftline")), 3);
    for (area, name) in [
        ("cpu", "smt"),
        ("cpu", "isolation"),
        ("cpu", "governor"),
        ("cpu", "boost"),
        ("cpu", "idle_states"),
        ("cpu", "clocksource"),
        ("cpu", "timer_slack"),
        ("cpu", "numa"),
        ("memory", "thp"),
        ("memory", "swap"),
        ("memory", "memlock"),
        ("interrupts", "irqbalance"),
        ("interrupts", "affinity"),
        ("network", "rmem_max"),
        ("network", "busy_poll"),
        ("storage", "discard"),
        ("storage", "write_cache"),
        ("storage", "scheduler"),
        ("scheduling", "rt_throttling"),
    ] {
        assert_eq!(status(&report, area, name), Status::Warn, "{area}.{name}");
    }
    assert_eq!(status(&report, "io_uring", "disabled"), Status::Fail);
    assert!(report
        .checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .all(|c| !c.fix.is_empty() && !c.why.is_empty()));
    // The log on tmpfs is a failure: it is not durable.
    let report = checks::run(&host, Some(Path::new("/run/raftline")), 3);
    assert_eq!(status(&report, "storage", "filesystem"), Status::Fail);
}

#[test]
fn tuned_host_passes_and_gets_a_pinned_layout() {
    let host = Host::new(fixture("tuned"));
    let report = checks::run(&host, Some(Path::new("/var/lib/raftline/0")), 3);
    let bad: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Warn || c.status == Status::Fail)
        .map(|c| format!("{}.{}: {}", c.area, c.name, c.value))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        status(&report, "storage", "write_cache"),
        Status::Ok,
        "the log's own device (nvme1n1) is checked"
    );
    let layout = &report.layout;
    assert_eq!(layout.threading, "dedicated");
    assert_eq!(layout.cores_available, vec![2, 3, 4, 5, 6, 7]);
    assert_eq!(layout.node_cores, vec![vec![2, 3], vec![4, 5], vec![6, 7]]);
    assert_eq!(
        layout.client_core,
        Some(1),
        "the client goes to a housekeeping core"
    );
    assert!(
        layout.config.contains("cores = [2, 3]"),
        "{}",
        layout.config
    );
}

#[test]
fn missing_files_are_unknown_not_a_crash() {
    let empty = tempfile::tempdir().unwrap();
    let report = checks::run(&Host::new(empty.path()), Some(Path::new("/data")), 3);
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.status == Status::Unknown || c.area == "interrupts"),
        "{:?}",
        report.checks
    );
    assert_eq!(report.layout.threading, "shared");
}

#[test]
fn apply_changes_what_is_safe_and_says_how_to_undo() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    copy_tree(&fixture("untuned"), &root);
    let host = Host::new(&root);
    let plan = apply::plan(&host);
    assert!(plan
        .iter()
        .any(|c| c.path.ends_with("scaling_governor") && c.to == "performance"));
    assert!(plan
        .iter()
        .any(|c| c.path.ends_with("transparent_hugepage/enabled")
            && c.from == "always"
            && c.to == "madvise"));
    assert!(plan
        .iter()
        .any(|c| c.path == "/proc/sys/net/core/rmem_max" && c.undo().contains("212992")));
    assert!(apply::boot_advice(&host)
        .iter()
        .any(|b| b.starts_with("isolcpus")));
    assert!(
        !plan.iter().any(|c| c.path.contains("/proc/irq/")),
        "no isolated cores: IRQs stay"
    );
    assert!(apply::apply(&host, &plan).is_empty());
    assert!(
        apply::plan(&host).is_empty(),
        "applied changes are not planned again"
    );
    assert_eq!(
        host.read("/proc/sys/net/core/busy_poll").as_deref(),
        Some("50")
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn apply_moves_device_interrupts_off_isolated_cores() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    copy_tree(&fixture("tuned"), &root);
    std::fs::write(root.join("proc/irq/50/smp_affinity_list"), "0-7\n").unwrap();
    let host = Host::new(&root);
    let plan = apply::plan(&host);
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0].path, "/proc/irq/50/smp_affinity_list");
    assert_eq!(plan[0].to, "0,1");
    assert!(apply::apply(&host, &plan).is_empty());
    assert!(apply::plan(&host).is_empty());
    assert_eq!(
        status(&checks::run(&host, None, 3), "interrupts", "affinity"),
        Status::Ok
    );
}

#[test]
fn live_check_runs_and_json_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_raftline-tune"))
        .args(["check", "--json", "--log-dir"])
        .arg(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.len() > 20);
    assert!(checks.iter().any(|c| c["area"] == "io_uring"));
    assert!(json["layout"]["config"]
        .as_str()
        .unwrap()
        .contains("[runtime]"));
    let text = Command::new(env!("CARGO_BIN_EXE_raftline-tune"))
        .arg("check")
        .output()
        .unwrap();
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("suggested layout"));
}
