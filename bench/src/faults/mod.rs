//! `raftline-bench faults`: a cluster of `raftline node --service kv` processes under a seeded
//! schedule of faults — SIGKILL and restart (of the leader or of any node), SIGSTOP / SIGCONT,
//! network partitions (whole-node and one-way cuts between namespaces), a full disk under
//! one node's log, and corruption of a stopped node's files (a segment, a vote slot, the
//! newest snapshot; one damaged member at a time) — while clients read, write and compare-and-set registers and record every
//! operation's invocation and outcome. Afterwards: heal, wait for convergence, and check that
//! the history is linearizable (which also catches a lost acknowledged write or a write
//! applied twice), that every replica's service digest and applied position agree, and that
//! the logs hold the same bytes up to the commit position.
//!
//! Every run prints its seed; `--seed S` replays the same fault schedule and operation mix
//! (process scheduling is not replayed).

mod check;
mod corrupt;
mod inject;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::config::Config;
use raftline::rng::Rng;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::monotonic_ns;
use raftline::service::kv::{KvOp, KvReply};
use serde::Serialize;

use crate::report::{histogram, loopback_ports, write_json, Latency, Machine};
use check::{Op, Outcome};
use raftline_bench::net::Network;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Seed of the fault schedule and the operation mix (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds of faults and load.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Client threads, each with its own session, one operation at a time.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Registers the clients work on.
    #[arg(long, default_value_t = 4)]
    pub keys: u64,
    /// Faults to draw from: any of kill-leader, kill, pause, partition, disk.
    #[arg(long, default_value = "kill-leader,kill,pause,partition,disk,corrupt")]
    pub faults: String,
    /// Mean milliseconds between the end of one fault and the start of the next.
    #[arg(long, default_value_t = 800)]
    pub interval_ms: u64,
    /// Leader heartbeat timeout in ms (the failover time follows it).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_timeout_ms: u64,
    /// Leader heartbeat interval in ms.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_interval_ms: u64,
    /// Election timeout in ms (how long a ballot or a nomination waits).
    #[arg(long, default_value_t = 10)]
    pub election_timeout_ms: u64,
    /// Milliseconds after which a client stops waiting for a reply (outcome unknown).
    #[arg(long, default_value_t = 2000)]
    pub op_timeout_ms: u64,
    /// Every replica snapshots each this many KiB of log and retires the segments (1 MiB)
    /// behind it; a node that comes back behind the others' logs is sent a snapshot.
    #[arg(long, default_value_t = 256)]
    pub snapshot_kib: u64,
    /// The `raftline` node binary (default: next to this program, or target/{release,debug}).
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// Working directory (logs, configs, node output); removed after a clean run.
    #[arg(long, default_value = "bench-out/faults")]
    pub dir: PathBuf,
    /// Write the JSON report to this path, or - for stdout.
    #[arg(long)]
    pub json: Option<String>,
    /// Keep the working directory (node output with timestamped transitions, logs) after a
    /// clean run too.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    KillLeader,
    Kill,
    Pause,
    Partition,
    Disk,
    Corrupt,
}

impl Fault {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "kill-leader" => Fault::KillLeader,
            "kill" => Fault::Kill,
            "pause" => Fault::Pause,
            "partition" => Fault::Partition,
            "disk" => Fault::Disk,
            "corrupt" => Fault::Corrupt,
            _ => return None,
        })
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
struct FaultRecord {
    fault: Fault,
    what: String,
    start_ms: f64,
    /// The start on the host's monotonic clock, as the nodes' log lines print it.
    start_monotonic_ms: f64,
    healed_ms: f64,
    /// Longest time without any operation completing, from the fault's start until 1 s after
    /// it healed.
    availability_gap_ms: f64,
    /// A leader kill: from the kill to the first commit by a leader of a later term.
    failover_ms: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    seed: u64,
    ok: bool,
    nodes: usize,
    network: String,
    duration_s: f64,
    operations: usize,
    ok_ops: usize,
    failed_ops: usize,
    unknown_ops: usize,
    faults: Vec<FaultRecord>,
    faults_by_kind: BTreeMap<String, usize>,
    skipped: Vec<String>,
    anomalies: Vec<String>,
    converged: bool,
    digests: Vec<u64>,
    applied_positions: Vec<u64>,
    logs_agree_up_to: Option<u64>,
    /// Where the comparison started: every log still has bytes from here (earlier segments
    /// were retired behind snapshots).
    logs_compared_from: Option<u64>,
    /// Per node: snapshots taken, snapshots installed from a leader, log start position.
    snapshots: Vec<(u64, u64, u64)>,
    /// From a leader's SIGKILL to the first commit by a leader of a later term (counters
    /// polled every 0.5 ms; the counters are published every millisecond).
    failover_kill_to_first_commit: Option<Latency>,
    /// Leader kills after which no new leader committed within the fault's hold time.
    failover_not_within_hold: usize,
    machine: Machine,
}

struct Node {
    id: usize,
    config: PathBuf,
    dir: PathBuf,
    wrap: Vec<String>,
    bin: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    fn start(&mut self) -> Result<(), String> {
        self.start_with(&[])
    }

    fn start_with(&mut self, extra: &[&str]) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("out"))
            .map_err(|e| e.to_string())?;
        let mut argv: Vec<String> = self.wrap.clone();
        argv.push(self.bin.display().to_string());
        argv.extend(["node", "--service", "kv", "--config"].map(String::from));
        argv.push(self.config.display().to_string());
        argv.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting node {}: {e}", self.id))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sends a signal to our own child process, which has not been reaped.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Whether the process has exited on its own (a full disk stops a node).
    fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    /// How the process ended, if it has.
    fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            None => Some("not running".into()),
            Some(c) => match c.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                _ => None,
            },
        }
    }

    fn counters(&self) -> Option<CountersReader> {
        CountersReader::open(&self.dir).ok()
    }
}

/// Mounts a small tmpfs on `dir` (root only), so the disk can be filled.
fn mount_small(dir: &Path, mib: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn unmount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).output();
}

/// Fills the filesystem of `dir` with a ballast file: grows it a MiB, then 4 KiB, at a time
/// until the filesystem says no space is left.
fn fill_disk(dir: &Path) -> Result<PathBuf, String> {
    use std::os::fd::AsRawFd;
    let ballast = dir.join("ballast");
    let file = std::fs::File::create(&ballast).map_err(|e| e.to_string())?;
    let mut at = 0i64;
    for chunk in [1i64 << 20, 4096] {
        loop {
            // SAFETY: plain syscall on an open file we own.
            let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, at, chunk) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    break;
                }
                return Err(format!("fallocate {}: {e}", ballast.display()));
            }
            at += chunk;
        }
    }
    Ok(ballast)
}

/// What the client threads share with the scheduler.
struct Shared {
    history: Mutex<Vec<Op>>,
    /// Completion times of operations that returned, for availability gaps and failover.
    completions: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

fn client_loop(
    index: usize,
    members: Vec<std::net::SocketAddr>,
    seed: u64,
    keys: u64,
    op_timeout_ns: u64,
    shared: Arc<Shared>,
) {
    let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut cc = ClientConfig::new(members, 7);
    cc.max_datagram_bytes = 1400;
    cc.resend_timeout_ns = 20_000_000;
    let mut client = loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        match ClusterClient::connect(cc.clone(), monotonic_ns) {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut next_value = (index as u64 + 1) << 40;
    let mut id = (index as u64) << 48;
    while !shared.stop.load(Ordering::Relaxed) {
        id += 1;
        let key = rng.below(keys);
        let op = match rng.below(10) {
            0..=4 => KvOp::Read { key },
            5..=7 => {
                next_value += 1;
                KvOp::Write {
                    key,
                    value: next_value,
                }
            }
            _ => {
                next_value += 1;
                // Compare against a value some client may have written (or the initial 0).
                let expected = match rng.below(3) {
                    0 => 0,
                    _ => next_value - 1 - rng.below(3),
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: next_value,
                }
            }
        };
        let invoke = monotonic_ns();
        let Ok(sequence) = client.offer(invoke, &op.encode(id)) else {
            // Back-pressure: nothing was sent; try again shortly.
            id -= 1;
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        // The reply carries the result. A resend that the cluster recognises as a duplicate
        // (the first copy was applied, its reply lost with a dead leader) is acknowledged as
        // applied without the service's reply: then the operation took effect by the time of
        // the acknowledgement, with its result unknown.
        let mut reply = None;
        let mut applied_at = None;
        while reply.is_none() && monotonic_ns() - invoke < op_timeout_ns {
            client.poll(monotonic_ns(), |e| match e {
                ClientEvent::Message { payload } => {
                    if let Some(r) = KvReply::decode(payload).filter(|r| r.id == id) {
                        reply = Some(r);
                    }
                }
                ClientEvent::Applied { sequence: s } if s == sequence => {
                    applied_at = Some(monotonic_ns());
                }
                _ => {}
            });
            if applied_at.is_some_and(|a| monotonic_ns() - a > 20_000_000) {
                break;
            }
            if reply.is_none() {
                crate::host::wait_readable(client.raw_fd(), 1_000_000);
            }
        }
        let complete = monotonic_ns();
        let (complete_ns, outcome) = match (reply, applied_at, op) {
            (Some(r), _, _) => (
                Some(complete),
                Outcome::Ok {
                    ok: r.ok,
                    value: r.value,
                },
            ),
            // A write's result is its value: it completed at the acknowledgement.
            (None, Some(at), KvOp::Write { value, .. }) => {
                (Some(at), Outcome::Ok { ok: true, value })
            }
            _ => (None, Outcome::Unknown),
        };
        if let Some(c) = complete_ns {
            shared.completions.lock().expect("not poisoned").push(c);
        }
        shared.history.lock().expect("not poisoned").push(Op {
            client: index,
            id,
            op,
            invoke_ns: invoke,
            complete_ns,
            outcome,
        });
    }
}

fn leader(nodes: &[Node]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for n in nodes {
        if n.child.is_none() || n.paused {
            continue;
        }
        if let Some(c) = n.counters() {
            if c.get(Counter::Role) == 2 {
                let term = c.get(Counter::Term);
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, n.id));
                }
            }
        }
    }
    best.map(|(_, id)| id)
}

fn write_config(path: &Path, id: usize, members: &[String], dir: &Path, args: &Args) {
    let list = members
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[cluster]\nid = 7\nmembers = [{list}]\n[node]\nid = {id}\nlog_dir = \"{}\"\n\
         [log]\nsegment_mib = 1\n[consensus]\nleader_heartbeat_interval_ms = {}\n\
         leader_heartbeat_timeout_ms = {}\nelection_timeout_ms = {}\n\
         startup_canvass_timeout_ms = {}\n[runtime]\nidle = \"block\"\n\
         [snapshot]\ninterval_kib = {}\n",
        dir.display(),
        args.heartbeat_interval_ms,
        args.heartbeat_timeout_ms,
        args.election_timeout_ms,
        args.heartbeat_timeout_ms * 3,
        args.snapshot_kib,
    );
    std::fs::write(path, text).expect("config written");
}

pub fn run(args: Args) -> Result<bool, String> {
    let seed = args
        .seed
        .unwrap_or_else(|| monotonic_ns() ^ std::process::id() as u64);
    if !(args.nodes == 3 || args.nodes == 5) {
        return Err(format!("--nodes {}: use 3 or 5", args.nodes));
    }
    let mut faults = Vec::new();
    for name in args.faults.split(',').filter(|s| !s.is_empty()) {
        faults.push(Fault::parse(name).ok_or_else(|| {
            format!("--faults: unknown fault {name:?} (kill-leader, kill, pause, partition, disk, corrupt)")
        })?);
    }
    let bin = crate::host::find_node_bin(args.node_bin.clone())?;
    let machine = Machine::detect();
    println!(
        "faults: seed {seed} (replay with --seed {seed}), {} nodes, {:.0} s",
        args.nodes, args.duration
    );
    let mut skipped = Vec::new();
    crate::report::fresh_dir(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir).map_err(|e| e.to_string())?;

    let network = match Network::namespaces(args.nodes, std::process::id()) {
        Ok(n) => n,
        Err(e) => {
            skipped.push(format!("partitions (network namespaces unavailable: {e})"));
            println!(
                "  partitions skipped: network namespaces unavailable ({e}); nodes on loopback"
            );
            Network::Loopback
        }
    };
    let ports = loopback_ports(args.nodes).map_err(|e| e.to_string())?;
    let members: Vec<String> = (0..args.nodes)
        .map(|i| network.address(i, &ports[i]))
        .collect();
    // The last node's log lives on a small tmpfs that the disk fault fills.
    let disk_node = args.nodes - 1;
    let mut disk_mounted = false;
    if faults.contains(&Fault::Disk) {
        // Room for the whole run's log (the log is not purged without snapshots): about
        // 1 MB/s of operations here, with margin.
        let mib = 256 + (args.duration as u64) * 2;
        match mount_small(&dir.join(format!("node-{disk_node}")), mib) {
            Ok(()) => disk_mounted = true,
            Err(e) => {
                skipped.push(format!("full disk ({e})"));
                println!("  full-disk faults skipped: {e}");
            }
        }
    }
    faults.retain(|f| match f {
        Fault::Partition => network.can_partition(),
        Fault::Disk => disk_mounted,
        _ => true,
    });
    if faults.is_empty() {
        return Err("no fault left to inject on this host".into());
    }

    let mut nodes: Vec<Node> = (0..args.nodes)
        .map(|i| {
            let config = dir.join(format!("node-{i}.toml"));
            let node_dir = dir.join(format!("node-{i}"));
            write_config(&config, i, &members, &node_dir, &args);
            Node {
                id: i,
                config,
                dir: node_dir,
                wrap: network.wrap(i),
                bin: bin.clone(),
                child: None,
                paused: false,
            }
        })
        .collect();
    let result = run_with(
        &args, seed, &network, &mut nodes, &faults, disk_node, skipped, machine,
    );
    for n in &mut nodes {
        n.kill();
    }
    if disk_mounted {
        unmount(&dir.join(format!("node-{disk_node}")));
    }
    network.heal();
    drop(network);
    if matches!(result, Ok(true)) && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("  node output and logs kept in {}", dir.display());
    }
    result
}

/// One faults run on a started network: the workload, the fault schedule (`inject`), healing,
/// convergence, the history check (`check`), and the report. About 120 lines, most of them the
/// report's fields: each phase is a function of its own, and what is left is their order.
#[allow(clippy::too_many_arguments)]
fn run_with(
    args: &Args,
    seed: u64,
    network: &Network,
    nodes: &mut [Node],
    faults: &[Fault],
    disk_node: usize,
    skipped: Vec<String>,
    machine: Machine,
) -> Result<bool, String> {
    let (shared, clients) = start_workload(args, seed, nodes)?;

    let t0 = monotonic_ns();
    let ms = |t: u64| (t.saturating_sub(t0)) as f64 / 1e6;
    let mut records: Vec<(Fault, String, u64, u64, Option<u64>)> = Vec::new();
    let mut injector = inject::Injector {
        rng: Rng::new(seed),
        network,
        nodes,
        disk_node,
        kills_of_leader: Vec::new(),
        unrepaired: Vec::new(),
    };
    let end = t0 + (args.duration * 1e9) as u64;
    while monotonic_ns() < end {
        let pause = args.interval_ms / 2 + injector.rng.below(args.interval_ms + 1);
        std::thread::sleep(Duration::from_millis(pause));
        let fault = faults[injector.rng.below(faults.len() as u64) as usize];
        let hold = Duration::from_millis(300 + injector.rng.below(1200));
        let started = monotonic_ns();
        let what = injector.inject(fault, hold)?;
        let healed = monotonic_ns();
        println!("  {:>8.0} ms  {what}", ms(started));
        // A leader kill's failover: from the kill to the next leader's first commit.
        let failover = match (fault, injector.kills_of_leader.last()) {
            (Fault::KillLeader | Fault::Kill, Some(&(k, Some(c)))) if k >= started => Some(c - k),
            _ => None,
        };
        records.push((fault, what, started, healed, failover));
    }

    let inject::Injector {
        kills_of_leader,
        unrepaired,
        ..
    } = injector;

    // Heal everything and let the clients run on a healthy cluster for a while.
    network.heal();
    for n in nodes.iter_mut() {
        if n.paused {
            n.signal(libc::SIGCONT);
            n.paused = false;
        }
        if n.exited() {
            n.kill();
            n.start()?;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let history = std::mem::take(&mut *shared.history.lock().expect("not poisoned"));
    let mut completions = std::mem::take(&mut *shared.completions.lock().expect("not poisoned"));
    completions.sort_unstable();

    // Convergence: equal applied positions and digests everywhere, and the logs agree.
    let (converged, digests, applied) = converge(nodes);
    let snapshots = snapshot_counters(nodes);
    for n in nodes.iter_mut() {
        n.signal(libc::SIGTERM);
        if let Some(mut c) = n.child.take() {
            let _ = c.wait();
        }
    }
    let logs_agree = compare_logs(nodes, applied.iter().copied().min().unwrap_or(0));

    // Check the history.
    let anomalies = check::check(&history);
    let anomaly_text = describe_anomalies(&anomalies, &unrepaired, ms);

    // Availability around each fault, and the failover time after each leader kill.
    let fault_records = fault_records(&records, &completions, ms);
    let (failover, failover_missed) = failover_times(&kills_of_leader);
    let by_kind = faults_by_kind(&fault_records);
    let (ok_ops, failed_ops) = (count_ops(&history, true), count_ops(&history, false));
    let unknown_ops = history.len() - ok_ops - failed_ops;
    let ok = anomaly_text.is_empty() && converged && logs_agree.is_ok();
    let report = Report {
        seed,
        ok,
        nodes: nodes.len(),
        network: match network {
            Network::Namespaces { .. } => "network namespaces, veth, bridge".into(),
            Network::Loopback => "loopback (no partitions)".into(),
        },
        duration_s: args.duration,
        operations: history.len(),
        ok_ops,
        failed_ops,
        unknown_ops,
        faults: fault_records,
        faults_by_kind: by_kind,
        skipped,
        anomalies: anomaly_text.clone(),
        converged,
        digests,
        applied_positions: applied,
        logs_agree_up_to: logs_agree.as_ref().ok().map(|r| r.1),
        logs_compared_from: logs_agree.as_ref().ok().map(|r| r.0),
        snapshots,
        failover_kill_to_first_commit: (!failover.is_empty()).then(|| Latency::of(&failover)),
        failover_not_within_hold: failover_missed,
        machine,
    };
    print_report(&report, &logs_agree);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(ok)
}

/// The failover times of the leader kills (kill to a later leader's first commit), and how
/// many had none within the hold.
fn failover_times(kills_of_leader: &[(u64, Option<u64>)]) -> (hdrhistogram::Histogram<u64>, usize) {
    let mut failover = histogram();
    let mut missed = 0;
    for &(killed, committed) in kills_of_leader {
        match committed {
            Some(c) => failover.record((c - killed).max(1)).expect("in range"),
            None => missed += 1,
        }
    }
    (failover, missed)
}

/// How many faults of each kind ran, by the kind's name in the JSON report.
fn faults_by_kind(records: &[FaultRecord]) -> BTreeMap<String, usize> {
    let mut by_kind = BTreeMap::new();
    for r in records {
        let kind = serde_json::to_value(r.fault).expect("kind");
        *by_kind
            .entry(kind.as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    by_kind
}

/// Operations that completed with the outcome `ok`.
fn count_ops(history: &[check::Op], ok: bool) -> usize {
    history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { ok: got, .. } if got == ok))
        .count()
}

/// Starts the nodes and the clients, and waits for a leader and the first completed operations
/// before the first fault.
fn start_workload(
    args: &Args,
    seed: u64,
    nodes: &mut [Node],
) -> Result<(Arc<Shared>, Vec<std::thread::JoinHandle<()>>), String> {
    for n in nodes.iter_mut() {
        n.start()?;
    }
    // The clients reach the members at the addresses in the configuration.
    let text = std::fs::read_to_string(&nodes[0].config).map_err(|e| e.to_string())?;
    let config = Config::from_toml(&text, "node-0.toml").map_err(|e| e.to_string())?;
    let addrs: Vec<std::net::SocketAddr> = config
        .cluster
        .members
        .iter()
        .map(|m| m.parse().map_err(|e| format!("member {m}: {e}")))
        .collect::<Result<_, _>>()?;
    let shared = Arc::new(Shared {
        history: Mutex::new(Vec::new()),
        completions: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (addrs, shared) = (addrs.clone(), shared.clone());
            let (keys, timeout) = (args.keys, args.op_timeout_ms * 1_000_000);
            std::thread::spawn(move || client_loop(i, addrs, seed, keys, timeout, shared))
        })
        .collect();

    // Wait for a leader and the first completed operations before the first fault.
    let start = monotonic_ns();
    while shared.completions.lock().expect("not poisoned").len() < 20 {
        if monotonic_ns() - start > 30_000_000_000 {
            shared.stop.store(true, Ordering::Relaxed);
            return Err("the cluster did not serve 20 operations within 30 s of starting".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((shared, clients))
}

/// Waits (up to 30 s) for equal applied positions and digests on every node, each applied to
/// its commit position: (converged, digests, applied positions).
fn converge(nodes: &[Node]) -> (bool, Vec<u64>, Vec<u64>) {
    let deadline = monotonic_ns() + 30_000_000_000;
    loop {
        let state: Vec<(u64, u64, u64)> = nodes
            .iter()
            .map(|n| {
                n.counters().map_or((0, 1, 0), |c| {
                    (
                        c.get(Counter::AppliedPosition),
                        c.get(Counter::ServiceDigest),
                        c.get(Counter::CommitPosition),
                    )
                })
            })
            .collect();
        let equal = state
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
            && state.iter().all(|s| s.0 == s.2 && s.0 > 0);
        if equal || monotonic_ns() > deadline {
            return (
                equal,
                state.iter().map(|s| s.1).collect::<Vec<_>>(),
                state.iter().map(|s| s.0).collect::<Vec<_>>(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the snapshots did on each node: (taken, installed on a node that came back behind the
/// others, log start).
fn snapshot_counters(nodes: &[Node]) -> Vec<(u64, u64, u64)> {
    nodes
        .iter()
        .map(|n| {
            n.counters().map_or((0, 0, 0), |c| {
                (
                    c.get(Counter::SnapshotsTaken),
                    c.get(Counter::SnapshotsInstalled),
                    c.get(Counter::LogStartPosition),
                )
            })
        })
        .collect()
}

/// The anomalies in words: corrupted members that did not recover, and each key whose history
/// is not linearizable, with the operations around where the valid order ends.
fn describe_anomalies(
    anomalies: &[check::Anomaly],
    unrepaired: &[String],
    ms: impl Fn(u64) -> f64,
) -> Vec<String> {
    let mut anomaly_text: Vec<String> = unrepaired
        .iter()
        .map(|u| format!("a corrupted member did not recover: {u}"))
        .collect();
    for a in anomalies {
        let mut text = format!(
            "key {}: {} ({} operations, the longest valid order covers {}):",
            a.key,
            if a.gave_up {
                "undecided, the search hit its bound"
            } else {
                "not linearizable"
            },
            a.ops.len(),
            a.longest_prefix
        );
        let from = a.longest_prefix.saturating_sub(5);
        for op in a.ops.iter().skip(from).take(15) {
            text.push_str(&format!(
                "\n    client {} {:?} invoked {:.3} ms, {} -> {:?}",
                op.client,
                op.op,
                ms(op.invoke_ns),
                op.complete_ns
                    .map_or("no reply".into(), |c| format!("done {:.3} ms", ms(c))),
                op.outcome
            ));
        }
        anomaly_text.push(text);
    }
    anomaly_text
}

/// Each fault with its availability gap (the longest time without a completed operation from
/// its start to a second after it healed) and, for a leader kill, the failover time.
fn fault_records(
    records: &[(Fault, String, u64, u64, Option<u64>)],
    completions: &[u64],
    ms: impl Fn(u64) -> f64,
) -> Vec<FaultRecord> {
    let gap = |from: u64, to: u64| {
        let mut last = from;
        let mut worst = 0;
        for &c in completions.iter().filter(|&&c| c > from && c <= to) {
            worst = worst.max(c - last);
            last = c;
        }
        worst.max(to.saturating_sub(last))
    };
    records
        .iter()
        .map(|(fault, what, s, h, failover)| FaultRecord {
            failover_ms: failover.map(|f| f as f64 / 1e6),
            fault: *fault,
            what: what.clone(),
            start_ms: ms(*s),
            start_monotonic_ms: *s as f64 / 1e6,
            healed_ms: ms(*h),
            availability_gap_ms: gap(*s, h + 1_000_000_000) as f64 / 1e6,
        })
        .collect()
}

/// Whether a just started node stops within 2 s saying its vote record is unreadable.
fn refused_vote(node: &mut Node) -> bool {
    let start = monotonic_ns();
    while monotonic_ns() - start < 2_000_000_000 {
        if node.exit_status().is_some() {
            let said = std::fs::read_to_string(node.dir.with_extension("out")).unwrap_or_default();
            let last = said.lines().rev().find(|l| l.contains("could not start"));
            return last.is_some_and(|l| l.contains("--recover-vote"));
        }
        if node.counters().is_some_and(|c| {
            node.child
                .as_ref()
                .is_some_and(|ch| c.pid() == ch.id() as u64)
                && c.get(Counter::DutyCycles) > 0
        }) {
            // Its duty cycle runs: it started.
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Waits (up to 20 s) until a restarted member's log holds `position` again; says how it went.
fn wait_repaired(node: &mut Node, position: u64) -> String {
    let start = monotonic_ns();
    loop {
        if let Some(status) = node.exit_status() {
            return format!("it stopped ({status})");
        }
        // The counters file of the process before the restart says nothing: skip it.
        let pid = node.child.as_ref().map_or(0, |c| c.id() as u64);
        let durable = node
            .counters()
            .filter(|c| c.pid() == pid)
            .map_or(0, |c| c.get(Counter::DurablePosition));
        if durable >= position {
            let ms = (monotonic_ns() - start) / 1_000_000;
            return format!("durable past {position} again {ms} ms after the start");
        }
        if monotonic_ns() - start > 20_000_000_000 {
            return format!("durable only to {durable} of {position} after 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads every node's log up to `position`, from where every log still has bytes (segments
/// behind a snapshot are retired), and checks the bytes are equal. Returns the range compared.
fn compare_logs(nodes: &[Node], position: u64) -> Result<(u64, u64), String> {
    use raftline::log::Log;
    use raftline::sys::{LinuxDisk, LinuxDiskOptions};
    let mut logs = Vec::new();
    for n in nodes {
        let text = std::fs::read_to_string(&n.config).map_err(|e| e.to_string())?;
        let config = Config::from_toml(&text, "node.toml").map_err(|e| e.to_string())?;
        let disk = LinuxDisk::open(&n.dir, LinuxDiskOptions::default())
            .map_err(|e| format!("node {}: {e}", n.id))?;
        let (log, _) =
            Log::open(disk, config.log_config()).map_err(|e| format!("node {}: {e}", n.id))?;
        logs.push((n.id, log));
    }
    let from = logs
        .iter()
        .map(|(_, l)| l.start_position())
        .max()
        .unwrap_or(0)
        .min(position);
    let mut first: Option<Vec<u8>> = None;
    for (id, mut log) in logs {
        if log.appended_position() < position {
            return Err(format!(
                "node {}'s log ends at {} before the applied position {position}",
                id,
                log.appended_position()
            ));
        }
        let mut bytes = vec![0u8; (position - from) as usize];
        let mut at = from;
        while at < position {
            let got = log
                .read(at, &mut bytes[(at - from) as usize..])
                .map_err(|e| format!("node {}: {e}", id))?;
            if got == 0 {
                return Err(format!("node {}: no bytes at {at}", id));
            }
            at += got as u64;
        }
        match &first {
            None => first = Some(bytes),
            Some(f) if *f == bytes => {}
            Some(f) => {
                let at = from + f.iter().zip(&bytes).position(|(a, b)| a != b).unwrap_or(0) as u64;
                return Err(format!(
                    "node {}'s log differs from node 0's at byte {at}",
                    id
                ));
            }
        }
    }
    Ok((from, position))
}

fn print_report(r: &Report, logs: &Result<(u64, u64), String>) {
    println!();
    println!(
        "{} operations: {} ok, {} failed (cas refused), {} unknown (no reply in time)",
        r.operations, r.ok_ops, r.failed_ops, r.unknown_ops
    );
    println!("faults: {} {:?}", r.faults.len(), r.faults_by_kind);
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    let worst = r
        .faults
        .iter()
        .map(|f| f.availability_gap_ms)
        .fold(0.0, f64::max);
    println!("longest time without a completed operation around a fault: {worst:.1} ms");
    if let Some(l) = &r.failover_kill_to_first_commit {
        println!(
            "leader kill -> first commit by the next leader (ms): p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}, over {} kills ({} not within the hold)",
            l.p50_us / 1e3,
            l.p90_us / 1e3,
            l.p99_us / 1e3,
            l.max_us / 1e3,
            l.count,
            r.failover_not_within_hold
        );
    }
    println!(
        "replicas converged: {} (applied positions {:?}, digests {:?})",
        r.converged, r.applied_positions, r.digests
    );
    println!(
        "snapshots taken {:?}, installed from a leader {:?}, log start positions {:?}",
        r.snapshots.iter().map(|s| s.0).collect::<Vec<_>>(),
        r.snapshots.iter().map(|s| s.1).collect::<Vec<_>>(),
        r.snapshots.iter().map(|s| s.2).collect::<Vec<_>>()
    );
    match logs {
        Ok((from, to)) => println!("logs agree byte for byte from position {from} to {to}"),
        Err(e) => println!("LOGS DISAGREE: {e}"),
    }
    if r.anomalies.is_empty() {
        println!("history linearizable: yes (anomalies: 0)");
    } else {
        println!("ANOMALIES: {}", r.anomalies.len());
        for a in &r.anomalies {
            println!("  {a}");
        }
    }
    println!("machine: {}", r.machine);
    println!("seed {}: {}", r.seed, if r.ok { "ok" } else { "FAILED" });
}
