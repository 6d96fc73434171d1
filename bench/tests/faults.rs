//! The short fault run of CI: 3 `raftline node` processes under kills, pauses, partitions (in
//! network namespaces, where this host allows) and a full disk, with clients whose history
//! must be linearizable, replicas that must converge and logs that must agree. The seed is new
//! each run and printed; replay a failure with `raftline-bench faults --seed S`.

use std::process::Command;

#[test]
fn a_short_fault_schedule_finds_no_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftline-bench"));
    cmd.args(["faults", "--duration", "20", "--dir"])
        .arg(dir.path().join("run"));
    if let Ok(seed) = std::env::var("RAFTLINE_FAULT_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = cmd.output().expect("raftline-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the fault run failed (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(
        stdout.contains("history linearizable: yes (anomalies: 0)"),
        "{stdout}"
    );
    assert!(stdout.contains("replicas converged: true"), "{stdout}");
    assert!(stdout.contains("logs agree byte for byte"), "{stdout}");
}
