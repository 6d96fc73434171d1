//! `raftline-bench latency`: a 3-node cluster on loopback with the echo service, driven by an
//! open-loop client at a fixed rate. Latency is measured from each message's *intended* send
//! time to its echo, so a stall charges every message it delays (no coordinated omission).
//!
//! The reference, measured in the same run: the loopback UDP round trip between two threads
//! with the same idle strategy, and (with fdatasync) the disk's 4 KiB write + fdatasync floor.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::config::{Config, ThreadingMode};
use raftline::log::Durability;
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::echo::EchoService;
use serde::Serialize;

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::report::{histogram, loopback_ports, remove_run_dir, write_json, Latency, Machine};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Messages per second offered by the client.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds of measured load (after warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds of warm-up load, discarded.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// fdatasync or none.
    #[arg(long, default_value = "fdatasync")]
    pub durability: String,
    /// shared (one thread per node) or dedicated.
    #[arg(long, default_value = "shared")]
    pub threading: String,
    /// busy-spin, yield, backoff, sleep, or block.
    #[arg(long, default_value = "block")]
    pub idle: String,
    /// in-process (3 nodes on threads of this process) or processes (3 `raftline node`
    /// processes, the binary found next to this one or in target/).
    #[arg(long, default_value = "in-process")]
    pub topology: String,
    /// What members talk over: udp (loopback) or ipc (shared-memory rings in /dev/shm).
    /// The client reaches the cluster over UDP either way.
    #[arg(long, default_value = "udp")]
    pub transport: String,
    /// Directory for the nodes' logs (removed afterwards).
    #[arg(long, default_value = "bench-out/cluster")]
    pub dir: PathBuf,
    /// Write the JSON summary to this path, or - for stdout.
    #[arg(long)]
    pub json: Option<String>,
    /// Measured runs (each with a fresh cluster); the summary merges them and lists each.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Write `.hgrm` percentile distributions, `.hdr` interval logs and the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the nodes' directories (logs and counters, for `raftline stat`).
    #[arg(long)]
    pub keep: bool,
    /// Drive a cluster that is already running (on other hosts), named by any member's
    /// node.toml: its cluster.members, cluster.id and client token. The cluster's own config
    /// then decides durability, threading, idle and transport (reported from the file), and
    /// there is no cost section (the nodes' counters are on their hosts: `raftline stat`).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
}

impl Args {
    pub fn default_main() -> Self {
        Self {
            rate: 2000,
            seconds: 5.0,
            warmup: 1.0,
            size: 32,
            durability: "fdatasync".into(),
            threading: "shared".into(),
            idle: "block".into(),
            topology: "in-process".into(),
            transport: "udp".into(),
            dir: "bench-out/cluster".into(),
            json: None,
            runs: 1,
            out: None,
            keep: false,
            cluster: None,
        }
    }
}

#[derive(Serialize)]
struct Settings {
    topology: String,
    transport: String,
    durability: String,
    threading_mode: String,
    idle_strategy: String,
    writer: String,
    size_bytes: usize,
    machine: Machine,
}

#[derive(Serialize)]
struct Summary {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    p9999_us: f64,
    max_us: f64,
    count: u64,
    target_rate: u64,
    achieved_rate: f64,
    missing_replies: u64,
    ok: bool,
    /// Each run's own percentiles (the top-level figures merge all runs).
    runs: Vec<Latency>,
    reference_udp_rtt: Latency,
    reference_disk_floor: Option<Latency>,
    /// Per committed message, over every run's measured load (see `cost`).
    cost: Option<crate::cost::Cost>,
    settings: Settings,
}

/// Loopback UDP round trip between two threads, each blocking on its socket: the floor a
/// cluster round trip (client → leader → followers → leader → client) is built from.
pub fn udp_rtt(samples: usize) -> std::io::Result<Latency> {
    let echo = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    let echo_addr = echo.local_addr()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    echo.set_read_timeout(Some(Duration::from_millis(50)))?;
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut h = histogram();
    let mut buf = [0u8; 64];
    for i in 0..samples + 100 {
        let start = monotonic_ns();
        client.send_to(&[1u8; 32], echo_addr)?;
        client.recv_from(&mut buf)?;
        if i >= 100 {
            h.record((monotonic_ns() - start).max(1)).expect("in range");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = handle.join();
    Ok(Latency::of(&h))
}

pub fn disk_floor(dir: &std::path::Path, samples: usize) -> std::io::Result<Latency> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = dir.join("disk-floor.dat");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let buf = raftline::io::AlignedBuf::new(4096);
    let span = 16u64 << 20;
    let zeros = raftline::io::AlignedBuf::new(1 << 20);
    for at in (0..span).step_by(1 << 20) {
        f.write_all_at(&zeros, at)?;
    }
    f.sync_all()?;
    let mut h = histogram();
    for i in 0..samples {
        let start = monotonic_ns();
        f.write_all_at(&buf, (i as u64 * 4096) % span)?;
        f.sync_data()?;
        h.record((monotonic_ns() - start).max(1)).expect("in range");
    }
    let _ = std::fs::remove_file(path);
    Ok(Latency::of(&h))
}

/// The settings of a run, parsed from the arguments.
pub struct Plan {
    pub durability: Durability,
    pub threading: ThreadingMode,
    pub idle: IdleStrategy,
    pub ipc_dir: Option<PathBuf>,
    /// Nodes as processes of this binary (`None`: in this process).
    pub node_bin: Option<PathBuf>,
    /// A cluster started by someone else: nothing is started or stopped here.
    pub external: Option<External>,
}

/// What the load generator needs of a cluster it did not start.
pub struct External {
    pub file: PathBuf,
    pub members: Vec<std::net::SocketAddr>,
    pub cluster_id: u32,
    pub credential: Vec<u8>,
    pub max_datagram_bytes: usize,
    pub config: Config,
}

impl External {
    /// Reads a member's node.toml; errors name the file and what in it is wrong.
    pub fn load(file: &std::path::Path) -> Result<Self, String> {
        let at = |e: &dyn std::fmt::Display| format!("--cluster {}: {e}", file.display());
        let config = Config::load(file).map_err(|e| at(&e))?;
        let members = config.resolve_members().map_err(|e| at(&e))?;
        let credential = config.client_credential().map_err(|e| at(&e))?;
        Ok(Self {
            file: file.to_path_buf(),
            members,
            cluster_id: config.cluster.id,
            credential,
            max_datagram_bytes: config.transport.max_datagram_bytes,
            config,
        })
    }

    /// A client of this cluster: its members, id, token and datagram size.
    pub fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new(self.members.clone(), self.cluster_id);
        cc.credential = self.credential.clone();
        cc.max_datagram_bytes = self.max_datagram_bytes;
        cc
    }
}

impl Plan {
    pub fn of(args: &Args) -> Result<Self, String> {
        if args.size < 16 {
            return Err(format!(
                "--size {} is too small: the payload carries a 16-byte stamp",
                args.size
            ));
        }
        let durability = crate::report::durability(&args.durability)?;
        let threading = match args.threading.as_str() {
            "shared" => ThreadingMode::Shared,
            "dedicated" => ThreadingMode::Dedicated,
            other => return Err(format!("--threading {other}: use shared or dedicated")),
        };
        let idle = IdleStrategy::parse(&args.idle)
            .ok_or_else(|| format!("--idle {}: unknown strategy", args.idle))?;
        // Ring files on tmpfs, named for this run, removed at the end.
        let ipc_dir = match args.transport.as_str() {
            "udp" => None,
            "ipc" => Some(PathBuf::from(format!(
                "/dev/shm/raftline-bench-{}",
                std::process::id()
            ))),
            other => return Err(format!("--transport {other}: use udp or ipc")),
        };
        if args.runs == 0 {
            return Err("--runs 0: at least one run".into());
        }
        if let Some(file) = &args.cluster {
            let external = External::load(file)?;
            let c = &external.config;
            let at = |e: &dyn std::fmt::Display| format!("--cluster {}: {e}", file.display());
            return Ok(Self {
                durability: c.durability().map_err(|e| at(&e))?,
                threading: c.threading().map_err(|e| at(&e))?,
                idle: c.idle_strategy().map_err(|e| at(&e))?,
                ipc_dir: None,
                node_bin: None,
                external: Some(external),
            });
        }
        let node_bin = match args.topology.as_str() {
            "in-process" => None,
            "processes" => Some(crate::host::find_node_bin(None)?),
            other => return Err(format!("--topology {other}: use in-process or processes")),
        };
        Ok(Self {
            durability,
            threading,
            idle,
            ipc_dir,
            node_bin,
            external: None,
        })
    }
}

/// One measured run: a fresh cluster, warm-up, then the measured load.
pub struct RunResult {
    pub histogram: Histogram<u64>,
    /// One histogram per second of the measured load (for the `.hdr` interval log).
    pub intervals: Vec<Histogram<u64>>,
    pub achieved_rate: f64,
    pub missing: u64,
    pub backpressure: u64,
    pub writer: String,
    /// What the nodes spent during the measured load (empty if their counters were not found).
    pub spent: crate::cost::Spent,
}

/// Echo latencies of one run: everything after the warm-up into one histogram, and into one
/// histogram per second of intended send time (the `.hdr` interval log).
pub struct Recorder {
    warmup: u64,
    measured_from: u64,
    pub histogram: Histogram<u64>,
    pub intervals: Vec<Histogram<u64>>,
    /// Echoes of messages after the warm-up.
    pub measured: u64,
}

impl Recorder {
    /// Messages numbered below `warmup` are not recorded; measured load starts at
    /// `measured_from` (ns).
    pub fn new(warmup: u64, measured_from: u64) -> Self {
        Self {
            warmup,
            measured_from,
            histogram: histogram(),
            intervals: Vec::new(),
            measured: 0,
        }
    }

    /// Message `index`, due at `intended`, came back at `done`.
    pub fn record(&mut self, index: u64, intended: u64, done: u64) {
        if index < self.warmup {
            return;
        }
        self.measured += 1;
        let latency = done.saturating_sub(intended).max(1);
        self.histogram.record(latency).expect("in range");
        let second = (intended.saturating_sub(self.measured_from) / 1_000_000_000) as usize;
        while self.intervals.len() <= second {
            self.intervals.push(histogram());
        }
        self.intervals[second].record(latency).expect("in range");
    }
}

/// Starts 3 nodes, offers `rate` msg/s of `size` bytes open loop, and records every echo's
/// latency from its intended send time.
pub fn measure(args: &Args, plan: &Plan, rate: u64, size: usize) -> Result<RunResult, String> {
    if let Some(external) = &plan.external {
        let cc = external.client_config();
        let writer = format!(
            "external cluster ({}; each node prints its writer)",
            external.file.display()
        );
        return offer_load(args, cc, rate, size, None, writer);
    }
    crate::report::fresh_dir(&args.dir)?;
    let members = loopback_ports(3).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    let mut processes = Vec::new();
    let mut writer = String::new();
    for id in 0..3u32 {
        let builder = Config::builder(id, members.clone(), args.dir.join(format!("node-{id}")));
        let builder = match &plan.ipc_dir {
            Some(dir) => builder.ipc(dir),
            None => builder,
        };
        let config = builder
            .cluster_id(1)
            .durability(plan.durability)
            .segment_mib(64)
            .threading(plan.threading)
            .idle(plan.idle)
            .timeouts_ms(50, 1000, 300)
            .max_datagram_bytes(65_000)
            .build()
            .map_err(|e| e.to_string())?;
        if let Some(bin) = &plan.node_bin {
            let path = args.dir.join(format!("node-{id}.toml"));
            std::fs::write(&path, config.to_toml())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let out = std::fs::File::create(args.dir.join(format!("node-{id}.out")))
                .map_err(|e| e.to_string())?;
            let child = std::process::Command::new(bin)
                .arg("node")
                .arg("--config")
                .arg(&path)
                .stdout(out.try_clone().map_err(|e| e.to_string())?)
                .stderr(out)
                .spawn()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            writer = "printed by each node process (node-N.out; kept with --keep)".into();
            processes.push(child);
            continue;
        }
        let node =
            RunningNode::start(&config, EchoService::default()).map_err(|e| e.to_string())?;
        writer = node.writer.clone();
        nodes.push(node);
    }
    let mut cc = ClientConfig::new(
        members
            .iter()
            .map(|m| m.parse().expect("an address"))
            .collect(),
        1,
    );
    cc.max_datagram_bytes = 65_000;
    let node_dirs: Vec<PathBuf> = (0..3)
        .map(|id| args.dir.join(format!("node-{id}")))
        .collect();
    let result = offer_load(args, cc, rate, size, Some(&node_dirs), writer);
    for n in nodes {
        n.stop();
    }
    for mut p in processes {
        // SAFETY: signals our own child, which has not been reaped.
        unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
        let _ = p.wait();
    }
    if let Some(dir) = &plan.ipc_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !args.keep {
        remove_run_dir(&args.dir);
    }
    result
}

/// Offers `rate` msg/s of `size` bytes open loop to the cluster `cc` names and records every
/// echo's latency from its intended send time; reads the cost from `node_dirs`' counters when
/// they are on this host.
fn offer_load(
    args: &Args,
    mut cc: ClientConfig,
    rate: u64,
    size: usize,
    node_dirs: Option<&[PathBuf]>,
    writer: String,
) -> Result<RunResult, String> {
    cc.max_outstanding = 1 << 20;
    cc.resend_timeout_ns = 1_000_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).map_err(|e| e.to_string())?;
    // The client waits for each send time: it must not be woken up to 50 µs late.
    raftline::sys::cost::exact_timers();

    let interval_ns = 1_000_000_000 / rate.max(1);
    let warmup = (args.warmup * rate as f64) as u64;
    let total = warmup + (args.seconds * rate as f64) as u64;
    let mut payload = vec![0x5au8; size];
    let start = monotonic_ns() + 10_000_000;
    let mut recorder = Recorder::new(warmup, start + warmup * interval_ns);
    let mut sent = 0u64;
    let mut received = 0u64;
    let deadline = start + total * interval_ns + 3_000_000_000;
    let mut last_progress = 0;
    let mut backpressure = 0u64;
    let mut cost_start: Option<(crate::cost::Readers, Vec<crate::cost::Sample>)> = None;
    let mut cost_note = None;
    while received < total && monotonic_ns() < deadline {
        if let (Some(node_dirs), true) = (
            node_dirs,
            sent >= warmup && cost_start.is_none() && cost_note.is_none(),
        ) {
            // The measured load begins: what the nodes spent so far is not its cost.
            match crate::cost::Readers::open(node_dirs.iter().map(PathBuf::as_path)) {
                Ok(readers) => {
                    let sample = readers.sample();
                    cost_start = Some((readers, sample));
                }
                Err(e) => cost_note = Some(e),
            }
        }
        let now = monotonic_ns();
        while sent < total && start + sent * interval_ns <= now {
            let intended = start + sent * interval_ns;
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            payload[8..16].copy_from_slice(&intended.to_le_bytes());
            match client.offer(now, &payload) {
                Ok(_) => sent += 1,
                Err(_) => {
                    backpressure += 1;
                    break;
                }
            }
        }
        let now = monotonic_ns();
        client.poll(now, |e| {
            if let ClientEvent::Message { payload } = e {
                let index = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let intended = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
                received += 1;
                recorder.record(index, intended, now);
            }
        });
        if now - last_progress > 1_000_000_000 {
            last_progress = now;
            eprint!("\r  sent {sent} / {total}, echoed {received}   ");
        }
        let next_send = start + sent * interval_ns;
        let wait = if sent < total {
            next_send.saturating_sub(monotonic_ns())
        } else {
            1_000_000
        };
        if wait > 0 {
            crate::host::wait_readable(client.raw_fd(), wait.min(1_000_000));
        }
    }
    eprintln!();
    let elapsed_s = (monotonic_ns() - start) as f64 / 1e9;
    let measured = total - warmup;
    // Let every node publish once more (each does so every millisecond).
    std::thread::sleep(Duration::from_millis(5));
    let mut spent = crate::cost::Spent::default();
    if let Some((readers, begin)) = &cost_start {
        spent.add(begin, &readers.sample(), recorder.measured);
    }
    if let Some(note) = cost_note {
        eprintln!("no cost section: a node's counters were not found ({note})");
    }
    if node_dirs.is_none() {
        eprintln!(
            "no cost section: the cluster is external (its counters: raftline stat on each host)"
        );
    }
    Ok(RunResult {
        achieved_rate: received as f64 / elapsed_s.max(1e-9),
        missing: measured - recorder.measured,
        histogram: recorder.histogram,
        intervals: recorder.intervals,
        backpressure,
        writer,
        spent,
    })
}

/// Writes a run's percentile distribution (`.hgrm`, the format of HdrHistogram's plotter) and
/// its per-second interval log (`.hdr`).
pub fn write_outputs(dir: &std::path::Path, name: &str, run: &RunResult) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let hgrm = dir.join(format!("{name}.hgrm"));
    std::fs::write(&hgrm, percentile_distribution(&run.histogram))
        .map_err(|e| format!("{}: {e}", hgrm.display()))?;
    let hdr = dir.join(format!("{name}.hdr"));
    let mut log = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut log, &mut serializer)
        .map_err(|e| e.to_string())?;
    for (second, h) in run.intervals.iter().enumerate() {
        writer
            .write_histogram(
                h,
                Duration::from_secs(second as u64),
                Duration::from_secs(1),
                None,
            )
            .map_err(|e| format!("{}: {e:?}", hdr.display()))?;
    }
    std::fs::write(&hdr, log).map_err(|e| format!("{}: {e}", hdr.display()))
}

/// HdrHistogram's percentile distribution text, in microseconds.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        total += v.count_since_last_iteration();
        let inverse = if q < 1.0 {
            1.0 / (1.0 - q)
        } else {
            f64::INFINITY
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {:14.2}\n",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inverse
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    ));
    out
}

pub fn run(args: Args) -> Result<bool, String> {
    let plan = Plan::of(&args)?;
    let machine = Machine::detect();
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    eprintln!("latency on {machine}");
    eprintln!("[1/3] reference: loopback UDP round trip, and the disk floor ...");
    let rtt = udp_rtt(2000).map_err(|e| e.to_string())?;
    // The disk floor is the nodes' disk: not measurable from here for an external cluster.
    let floor = match plan.durability {
        Durability::Fdatasync if plan.external.is_none() => {
            Some(disk_floor(&args.dir, 2000).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    match &plan.external {
        Some(e) => eprintln!(
            "[2/3] the running cluster {} names ({} members; its config says durability {}, threading {}, idle {}), {} run(s) ...",
            e.file.display(),
            e.members.len(),
            plan.durability,
            e.config.runtime.threading,
            plan.idle.name(),
            args.runs
        ),
        None => eprintln!(
            "[2/3] 3 nodes on loopback (members over {}, durability {}, threading {}, idle {}), {} run(s) ...",
            args.transport, plan.durability, args.threading, args.idle, args.runs
        ),
    }
    let mut all = histogram();
    let mut runs = Vec::new();
    let mut run_histograms = Vec::new();
    let mut writer = String::new();
    let (mut missing, mut backpressure, mut achieved) = (0, 0, f64::MAX);
    let mut spent = crate::cost::Spent::default();
    for k in 0..args.runs {
        eprintln!(
            "[3/3] run {}: {} msg/s of {} B for {:.1} s (+{:.1} s warm-up) ...",
            k + 1,
            args.rate,
            args.size,
            args.seconds,
            args.warmup
        );
        let r = measure(&args, &plan, args.rate, args.size)?;
        if let Some(out) = &args.out {
            write_outputs(out, &format!("latency-run{}", k + 1), &r)?;
        }
        all.add(&r.histogram).expect("same bounds");
        missing += r.missing;
        backpressure += r.backpressure;
        achieved = achieved.min(r.achieved_rate);
        writer = r.writer.clone();
        spent.merge(&r.spent);
        runs.push(Latency::of(&r.histogram));
        run_histograms.push(r.histogram);
    }
    if !args.keep {
        remove_run_dir(&args.dir);
    }

    let l = Latency::of(&all);
    let ok = missing == 0 && achieved >= 0.95 * args.rate as f64 && backpressure == 0;
    let summary = Summary {
        p50_us: l.p50_us,
        p90_us: l.p90_us,
        p99_us: l.p99_us,
        p999_us: l.p999_us,
        p9999_us: l.p9999_us,
        max_us: l.max_us,
        count: l.count,
        target_rate: args.rate,
        achieved_rate: achieved,
        missing_replies: missing,
        ok,
        runs,
        reference_udp_rtt: rtt,
        reference_disk_floor: floor,
        cost: spent.cost(),
        settings: Settings {
            topology: match (&plan.external, &plan.node_bin) {
                (Some(e), _) => format!(
                    "external ({} members named by {})",
                    e.members.len(),
                    e.file.display()
                ),
                (None, Some(_)) => "processes (3 `raftline node` processes)".into(),
                (None, None) => "in-process (3 nodes, one process, own threads)".into(),
            },
            transport: match (&plan.external, &plan.ipc_dir) {
                (Some(e), _) => format!(
                    "{} (as configured), client over udp from this host",
                    e.config.transport.members
                ),
                (None, Some(_)) => "ipc rings (/dev/shm), client over udp loopback".into(),
                (None, None) => "udp loopback".into(),
            },
            durability: plan.durability.to_string(),
            threading_mode: match &plan.external {
                Some(e) => e.config.runtime.threading.clone(),
                None => args.threading.clone(),
            },
            idle_strategy: plan.idle.name().to_string(),
            writer,
            size_bytes: args.size,
            machine,
        },
    };
    print_report(&summary);
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    if let Some(out) = &args.out {
        write_json(&out.join("latency.json").display().to_string(), &summary)?;
        std::fs::write(out.join("latency.hgrm"), percentile_distribution(&all))
            .map_err(|e| format!("{}: {e}", out.display()))?;
        let series: Vec<(String, &Histogram<u64>)> = run_histograms
            .iter()
            .enumerate()
            .map(|(k, h)| (format!("run {}", k + 1), h))
            .collect();
        crate::plot::percentiles(
            &out.join("latency-percentiles.svg"),
            &format!(
                "round trip, {} B at {} msg/s, {}, durability {}, {} threading, idle {}",
                args.size, args.rate, args.transport, plan.durability, args.threading, args.idle
            ),
            &series,
        )?;
        eprintln!("wrote {}", out.display());
    }
    if !ok {
        eprintln!(
            "WARNING: the run is not valid: {missing} replies missing, achieved {achieved:.0} of {} msg/s, {backpressure} back-pressure events",
            args.rate
        );
    }
    Ok(ok)
}

fn print_report(s: &Summary) {
    println!();
    println!(
        "3-node cluster round trip (client → leader → quorum durable → commit → echo), {} B at {} msg/s",
        s.settings.size_bytes, s.target_rate
    );
    println!(
        "members over {}; durability {}, threading {}, idle {}, writer {}",
        s.settings.transport,
        s.settings.durability,
        s.settings.threading_mode,
        s.settings.idle_strategy,
        s.settings.writer
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (µs)", "p50", "p99", "p99.9", "p99.99", "max", "count"
    );
    let row = |name: &str, l: &Latency| {
        println!(
            "{name:<36} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            l.p50_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us, l.count
        )
    };
    row(
        "raftline round trip",
        &Latency {
            count: s.count,
            p50_us: s.p50_us,
            p90_us: s.p90_us,
            p99_us: s.p99_us,
            p999_us: s.p999_us,
            p9999_us: s.p9999_us,
            max_us: s.max_us,
        },
    );
    row("reference: loopback UDP round trip", &s.reference_udp_rtt);
    if let Some(f) = &s.reference_disk_floor {
        row("reference: 4 KiB write + fdatasync", f);
    }
    println!(
        "achieved {:.0} msg/s of {} target, {} replies missing: {}",
        s.achieved_rate,
        s.target_rate,
        s.missing_replies,
        if s.ok { "ok" } else { "NOT OK" }
    );
    if let Some(cost) = &s.cost {
        cost.print();
    }
    println!("machine: {}", s.settings.machine);
}
