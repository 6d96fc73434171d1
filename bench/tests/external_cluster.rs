//! The load generator against a cluster it did not start: three `raftline node` processes, each
//! in its own network namespace (a stand-in for a host, on its own address behind a bridge), and
//! `raftline-bench latency --cluster node-0.toml` in the root namespace, as a team with three
//! dedicated hosts and a fourth for the client would run it; then `raftline-bench failover
//! --cluster` against the same members, by planned transfers over the admin channel and by
//! kills and restarts through commands (as `ssh host systemctl kill` would be). Skipped, with a
//! message, where the host cannot create namespaces (not root, no iproute2).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftline::config::Config;
use raftline::log::Durability;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline_bench::net::Network;

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signals our own child, which has not been reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

fn node_binary() -> Option<PathBuf> {
    let bench = Path::new(env!("CARGO_BIN_EXE_raftline-bench"));
    Some(bench.with_file_name("raftline")).filter(|p| p.is_file())
}

/// Runs `raftline-bench ARGS --cluster CONFIG --json <dir>/NAME.json`, prints its report, and
/// returns the JSON summary; a failure shows the bench's output and the nodes' (`context`).
fn bench(args: &[&str], config: &Path, dir: &Path, name: &str, context: &str) -> serde_json::Value {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_raftline-bench"))
        .args(args)
        .arg("--cluster")
        .arg(config)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}\n{context}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn the_harness_measures_a_cluster_running_in_other_network_namespaces() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: creating network namespaces needs root");
        return;
    }
    let Some(node_bin) = node_binary() else {
        println!(
            "skipped: no `raftline` binary next to raftline-bench (cargo test --workspace builds it)"
        );
        return;
    };
    let network = match Network::namespaces(3, std::process::id()) {
        Ok(n) => n,
        Err(e) => {
            println!("skipped: network namespaces unavailable ({e})");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let members: Vec<String> = (0..3).map(|i| network.address(i, "")).collect();
    let mut children = Nodes(Vec::new());
    let mut configs = Vec::new();
    for id in 0..3u32 {
        let config = Config::builder(id, members.clone(), tmp.path().join(format!("node-{id}")))
            .cluster_id(77)
            .durability(Durability::None)
            .segment_mib(8)
            .timeouts_ms(50, 1000, 300)
            .build()
            .unwrap();
        let path = tmp.path().join(format!("node-{id}.toml"));
        std::fs::write(&path, config.to_toml()).unwrap();
        let log = std::fs::File::create(tmp.path().join(format!("node-{id}.out"))).unwrap();
        let wrap = network.wrap(id as usize);
        let child = Command::new(&wrap[0])
            .args(&wrap[1..])
            .arg(&node_bin)
            .args(["node", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        children.0.push(child);
        configs.push(path);
    }
    // Until one member leads (its counters file is on this host's disk, as on a real host).
    let start = Instant::now();
    let said = |id: u32| {
        std::fs::read_to_string(tmp.path().join(format!("node-{id}.out"))).unwrap_or_default()
    };
    loop {
        let leads = (0..3).any(|id| {
            CountersReader::open(&tmp.path().join(format!("node-{id}")))
                .is_ok_and(|r| r.get(Counter::Role) == 2)
        });
        if leads {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no leader in 20 s:\n{}\n{}\n{}",
            said(0),
            said(1),
            said(2)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let bench_dir = tmp.path().join("bench").display().to_string();
    let summary = bench(
        &[
            "latency",
            "--rate",
            "500",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            "--dir",
            &bench_dir,
        ],
        &configs[0],
        tmp.path(),
        "latency",
        "",
    );
    assert_eq!(summary["count"], 1000, "every measured message came back");
    assert_eq!(summary["missing_replies"], 0);
    assert_eq!(summary["ok"], true);
    let p50 = summary["p50_us"].as_f64().unwrap();
    let p99 = summary["p99_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{summary}");
    let topology = summary["settings"]["topology"].as_str().unwrap();
    assert!(topology.starts_with("external (3 members"), "{topology}");
    assert_eq!(
        summary["settings"]["durability"], "none",
        "read from node-0.toml"
    );
    println!("external cluster in namespaces: p50 {p50:.0} µs, p99 {p99:.0} µs at 500 msg/s");

    // Failover against the same cluster: two planned transfers, then two kills and restarts by
    // the user's commands (`{member}` is the member's id).
    let ns = |member: &str| network.wrap(0)[3].trim_end_matches('0').to_string() + member;
    let kill = format!("ip netns pids {} | xargs -r kill -9", ns("{member}"));
    let restart = format!(
        "ip netns exec {} setsid {} node --config {}/node-{{member}}.toml >>{}/node-{{member}}.out 2>&1 </dev/null &",
        ns("{member}"),
        node_bin.display(),
        tmp.path().display(),
        tmp.path().display()
    );
    for how in [
        vec!["--transfer"],
        vec!["--kill-command", &kill, "--restart-command", &restart],
    ] {
        let mut args = vec!["failover", "--kills", "2", "--rate", "200"];
        args.extend(how.iter().copied());
        let summary = bench(
            &args,
            &configs[0],
            tmp.path(),
            "failover",
            &(said(0) + &said(1) + &said(2)),
        );
        assert_eq!(summary["interruption"]["count"], 2, "{how:?}: {summary}");
        assert_eq!(
            summary["event"],
            if how[0] == "--transfer" {
                "transfer"
            } else {
                "kill"
            }
        );
        assert_eq!(summary["durability"], "none", "read from node-0.toml");
    }
    // The restarted members are not this process's children.
    for i in 0..3 {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!("ip netns pids {} | xargs -r kill -9", ns(&i.to_string())),
            ])
            .status();
    }
    drop(children);
    drop(network);
}
