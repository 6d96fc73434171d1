//! `raftline-bench failover`: kill the leader again and again under steady load and measure
//! the interruption: from the kill to the first message acknowledged under the new leader.
//!
//! Three nodes run in this process on loopback UDP; "kill" stops the leader's thread without
//! a goodbye (its socket closes, it sends nothing more), which is what its peers see of a
//! SIGKILL. The killed node is restarted from its log and must catch up before the next kill.
//!
//! With `--transfer`, the leader is not killed but asked over the admin channel to hand
//! leadership to the next member (a planned transfer); the interruption is then from the
//! command to the first message acknowledged under the new leader.
//!
//! With `--cluster node.toml`, the cluster is one already running elsewhere: its state comes
//! from the admin channel (`describe`), and the leader is handed over (`--transfer`) or killed
//! and restarted by commands the user gives (`--kill-command`, `--restart-command`, with
//! `{member}` replaced by the member's id; for example `ssh host{member} systemctl kill -s
//! KILL raftline`).

use std::path::PathBuf;
use std::time::Duration;

use raftline::client::admin::AdminClient;
use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::codec::message::AdminCommand;
use raftline::config::Config;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::echo::EchoService;
use serde::Serialize;

use crate::report::{histogram, loopback_ports, remove_run_dir, write_json, Latency, Machine};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Leader kills.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Messages per second during the run.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    #[arg(long, default_value_t = 10)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = 100)]
    pub heartbeat_timeout_ms: u64,
    #[arg(long, default_value_t = 10)]
    pub election_timeout_ms: u64,
    /// The client's resend interval, in ms.
    #[arg(long, default_value_t = 10)]
    pub client_resend_ms: u64,
    #[arg(long, default_value = "fdatasync")]
    pub durability: String,
    #[arg(long, default_value = "bench-out/failover")]
    pub dir: PathBuf,
    #[arg(long)]
    pub json: Option<String>,
    /// Hand leadership over (admin command) instead of killing the leader.
    #[arg(long)]
    pub transfer: bool,
    /// Write the timeline (CSV and SVG), every request's `.hgrm` and the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A cluster already running, named by any member's node.toml (see the module docs).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// With --cluster: the shell command that kills member {member} (without --transfer).
    #[arg(long)]
    pub kill_command: Option<String>,
    /// With --cluster: the shell command that starts member {member} again after a kill.
    #[arg(long)]
    pub restart_command: Option<String>,
}

#[derive(Serialize)]
struct Summary {
    kills: usize,
    /// "kill" (the leader's threads stopped) or "transfer" (a planned handover).
    event: &'static str,
    interruption: Latency,
    /// Every request's latency from its intended send time to its acknowledgement, kills
    /// included.
    requests: Latency,
    heartbeat_timeout_ms: u64,
    election_timeout_ms: u64,
    acknowledged: u64,
    target_p99_ms: f64,
    ok: bool,
    durability: String,
    threading_mode: String,
    idle_strategy: String,
    machine: Machine,
}

/// The settings a report states.
struct Setting {
    durability: String,
    threading: String,
    idle: String,
    heartbeat_timeout_ms: u64,
    election_timeout_ms: u64,
}

/// The members under test: nodes in this process, or a cluster running elsewhere.
enum Members {
    Local(Box<Cluster>),
    External(Box<External>),
}

struct Cluster {
    configs: Vec<Config>,
    nodes: Vec<Option<RunningNode<EchoService>>>,
    /// For `--transfer`: the admin channel, as an operator's transfer would go.
    admin: AdminClient,
}

struct External {
    admin: AdminClient,
    kill_command: Option<String>,
    restart_command: Option<String>,
    /// The member killed and not yet restarted.
    down: Option<usize>,
}

/// Runs `command` (with `{member}` replaced) in a shell; an error names it and its output.
fn run_command(command: &str, member: usize) -> Result<(), String> {
    let command = command.replace("{member}", &member.to_string());
    let out = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .map_err(|e| format!("{command}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Members {
    fn len(&self) -> usize {
        match self {
            Members::Local(c) => c.nodes.len(),
            Members::External(e) => e.admin.member_count(),
        }
    }

    /// The settled leader and every member's applied position (0 for one not heard from).
    fn settled(&mut self) -> Option<(usize, Vec<u64>)> {
        match self {
            Members::Local(c) => {
                let applied = (0..c.nodes.len()).map(|i| c.applied(i)).collect();
                Some((c.leader()?, applied))
            }
            Members::External(e) => {
                let states = e.admin.describe(Duration::from_millis(200)).ok()?;
                let running: Vec<_> = states
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| e.down != Some(i))
                    .map(|(_, s)| s.as_ref())
                    .collect::<Option<_>>()?;
                let leader = running
                    .iter()
                    .find(|s| s.role == raftline::consensus::Role::Leader)?;
                let follows = running
                    .iter()
                    .all(|s| s.term == leader.term && s.leader == Some(leader.member_id));
                let applied = states
                    .iter()
                    .map(|s| s.as_ref().map_or(0, |s| s.applied))
                    .collect();
                follows.then_some((leader.member_id as usize, applied))
            }
        }
    }

    /// Kills member `i` (or, with `transfer`, asks it to hand over to the next member).
    fn interrupt(&mut self, i: usize, transfer: bool) -> Result<(), String> {
        let to = ((i + 1) % self.len()) as u32;
        match self {
            Members::Local(c) if transfer => {
                c.admin.send(i as u32, AdminCommand::TransferLeader, to);
                Ok(())
            }
            Members::Local(c) => {
                let node = c.nodes[i].take().expect("running");
                drop(node.stop());
                Ok(())
            }
            Members::External(e) if transfer => {
                e.admin.send(i as u32, AdminCommand::TransferLeader, to);
                Ok(())
            }
            Members::External(e) => {
                let kill = e.kill_command.as_deref().expect("checked at start");
                e.down = Some(i);
                run_command(kill, i)
            }
        }
    }

    /// Starts the member interrupted last again, if it was killed.
    fn restart(&mut self, i: usize) -> Result<(), String> {
        match self {
            Members::Local(c) => {
                if c.nodes[i].is_none() {
                    c.nodes[i] = Some(
                        RunningNode::start(&c.configs[i], EchoService::default())
                            .map_err(|e| e.to_string())?,
                    );
                }
                Ok(())
            }
            Members::External(e) => {
                if e.down.take().is_some() {
                    let restart = e.restart_command.as_deref().expect("checked at start");
                    run_command(restart, i)?;
                }
                Ok(())
            }
        }
    }
}

impl Cluster {
    /// The settled leader: a node in the leader role whom every running node follows, in the
    /// same term. (A node that still believes itself leader of an older term is not it.)
    fn leader(&self) -> Option<usize> {
        let view = |i: usize| {
            self.nodes[i].as_ref()?;
            let c = CountersReader::open(&self.configs[i].node.log_dir).ok()?;
            Some((
                c.get(Counter::Role),
                c.get(Counter::Term),
                c.get(Counter::Leader),
            ))
        };
        let leader = (0..self.nodes.len()).find(|&i| view(i).is_some_and(|v| v.0 == 2))?;
        let (_, term, _) = view(leader)?;
        (0..self.nodes.len())
            .filter_map(view)
            .all(|(_, t, l)| t == term && l == leader as u64)
            .then_some(leader)
    }

    fn applied(&self, i: usize) -> u64 {
        CountersReader::open(&self.configs[i].node.log_dir)
            .map_or(0, |c| c.get(Counter::AppliedPosition))
    }
}

/// Three nodes in this process on loopback, the client's config for them, and what the
/// report states.
fn local(args: &Args) -> Result<(Members, ClientConfig, Setting), String> {
    let durability = crate::report::durability(&args.durability)?;
    crate::report::fresh_dir(&args.dir)?;
    let members = loopback_ports(3).map_err(|e| e.to_string())?;
    let configs: Vec<Config> = (0..3u32)
        .map(|id| {
            Config::builder(id, members.clone(), args.dir.join(format!("node-{id}")))
                .cluster_id(3)
                .durability(durability)
                .segment_mib(16)
                .idle(IdleStrategy::parse("block").expect("known"))
                .timeouts_ms(
                    args.heartbeat_interval_ms,
                    args.heartbeat_timeout_ms,
                    args.election_timeout_ms,
                )
                .max_datagram_bytes(65_000)
                .build()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let addrs: Vec<std::net::SocketAddr> = members
        .iter()
        .map(|m| m.parse().expect("address"))
        .collect();
    let mut cluster = Cluster {
        nodes: Vec::new(),
        configs,
        admin: AdminClient::connect(addrs.clone(), 3).map_err(|e| e.to_string())?,
    };
    for c in &cluster.configs {
        cluster.nodes.push(Some(
            RunningNode::start(c, EchoService::default()).map_err(|e| e.to_string())?,
        ));
    }
    let mut cc = ClientConfig::new(addrs, 3);
    cc.max_datagram_bytes = 65_000;
    let setting = Setting {
        durability: durability.to_string(),
        threading: "shared".into(),
        idle: "block".into(),
        heartbeat_timeout_ms: args.heartbeat_timeout_ms,
        election_timeout_ms: args.election_timeout_ms,
    };
    Ok((Members::Local(Box::new(cluster)), cc, setting))
}

/// The cluster `file` names, driven over its client and admin channels, and what the report
/// states (from its config).
fn external(
    args: &Args,
    file: &std::path::Path,
) -> Result<(Members, ClientConfig, Setting), String> {
    if !args.transfer && (args.kill_command.is_none() || args.restart_command.is_none()) {
        return Err(
            "--cluster: give --transfer, or both --kill-command and --restart-command (a member this harness did not start is killed and restarted by your commands)".into(),
        );
    }
    let external = crate::latency::External::load(file)?;
    let credential = external
        .config
        .admin_credential()
        .map_err(|e| format!("--cluster {}: {e}", file.display()))?;
    let admin = AdminClient::connect(external.members.clone(), external.cluster_id)
        .map_err(|e| e.to_string())?
        .with_credential(credential);
    let c = &external.config;
    let setting = Setting {
        durability: c.log.durability.clone(),
        threading: c.runtime.threading.clone(),
        idle: c.runtime.idle.clone(),
        heartbeat_timeout_ms: c.consensus.leader_heartbeat_timeout_ms,
        election_timeout_ms: c.consensus.election_timeout_ms,
    };
    Ok((
        Members::External(Box::new(External {
            admin,
            kill_command: args.kill_command.clone(),
            restart_command: args.restart_command.clone(),
            down: None,
        })),
        external.client_config(),
        setting,
    ))
}

pub fn run(args: Args) -> Result<bool, String> {
    let machine = Machine::detect();
    let (mut members, mut cc, setting) = match &args.cluster {
        Some(file) => external(&args, file)?,
        None => local(&args)?,
    };
    cc.max_outstanding = 1 << 16;
    cc.resend_timeout_ns = args.client_resend_ms * 1_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).map_err(|e| e.to_string())?;
    eprintln!(
        "failover on {machine}: {} kills, heartbeat timeout {} ms, election timeout {} ms, {} msg/s, durability {}",
        args.kills, setting.heartbeat_timeout_ms, setting.election_timeout_ms, args.rate, setting.durability
    );

    let interval = 1_000_000_000 / args.rate.max(1);
    let mut next_send = monotonic_ns();
    let run_start = next_send;
    let mut acknowledged = 0u64;
    let mut h = histogram();
    // Each request's intended send time, by sequence, until it is acknowledged; then its
    // (intended time from the start, latency) on the timeline.
    let mut in_flight = std::collections::HashMap::<u64, u64>::new();
    let mut timeline: Vec<(u64, u64)> = Vec::new();
    let mut requests = histogram();
    // Drives the load for `ns`, or until `until` holds; returns the time of the first ack of a
    // message with a sequence of `ack_from` or later.
    let mut drive = |client: &mut ClusterClient,
                     ns: u64,
                     acked: &mut u64,
                     ack_from: u64,
                     mut until: Option<&mut dyn FnMut() -> bool>| {
        let start = monotonic_ns();
        let mut first_ack = None;
        while monotonic_ns() - start < ns {
            let now = monotonic_ns();
            while next_send <= now {
                if let Ok(sequence) = client.offer(now, b"failover-probe-payload") {
                    in_flight.insert(sequence, next_send);
                }
                next_send += interval;
            }
            client.poll(monotonic_ns(), |e| {
                if let ClientEvent::Applied { sequence } = e {
                    let now = monotonic_ns();
                    *acked += 1;
                    if sequence >= ack_from {
                        first_ack.get_or_insert(now);
                    }
                    if let Some(intended) = in_flight.remove(&sequence) {
                        let latency = now.saturating_sub(intended).max(1);
                        requests.record(latency).expect("in range");
                        timeline.push((intended - run_start, latency));
                    }
                }
            });
            if let Some(f) = until.as_mut() {
                if first_ack.is_some() && f() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        first_ack
    };

    let n = members.len();
    let mut kills_at = Vec::new();
    for kill in 0..args.kills {
        // Steady state: a leader, every member caught up.
        drive(&mut client, 300_000_000, &mut acknowledged, 0, None);
        let deadline = monotonic_ns() + 10_000_000_000;
        let mut target = None;
        let leader = loop {
            if let Some((l, applied)) = members.settled() {
                // Every member has applied at least what the most advanced one had when the
                // wait began.
                let goal = *target.get_or_insert(applied.iter().copied().max().unwrap_or(0));
                if applied.iter().all(|&a| a >= goal) {
                    break l;
                }
            }
            if monotonic_ns() > deadline {
                return Err(format!("kill {kill}: no settled leader within 10 s"));
            }
            drive(&mut client, 20_000_000, &mut acknowledged, 0, None);
        };
        // Kill it (or ask it to hand over), then time the first acknowledgement under the new
        // leader: of a message offered after the old leader is gone (acks it sent before it
        // stopped may still sit in the client's socket).
        let killed_at = monotonic_ns();
        kills_at.push(killed_at - run_start);
        members.interrupt(leader, args.transfer)?;
        let ack_from = client.next_sequence();
        let first = drive(
            &mut client,
            10_000_000_000,
            &mut acknowledged,
            ack_from,
            Some(&mut || true),
        );
        let Some(first) = first else {
            return Err(format!(
                "kill {kill}: nothing acknowledged within 10 s of killing leader {leader} of {n}"
            ));
        };
        let gap = first - killed_at;
        h.record(gap.max(1)).expect("in range");
        eprint!(
            "\r  kill {}/{}: leader {leader}, interruption {:.1} ms   ",
            kill + 1,
            args.kills,
            gap as f64 / 1e6
        );
        members.restart(leader)?;
    }
    eprintln!();
    if let Members::Local(cluster) = members {
        for n in cluster.nodes.into_iter().flatten() {
            n.stop();
        }
        remove_run_dir(&args.dir);
    }
    let lost = in_flight.len();
    let l = Latency::of(&h);
    // Kill: detection takes the heartbeat timeout, then 50 ms for the election and the first
    // commit. Transfer: 5 ms.
    let target_p99_ms = if args.transfer {
        5.0
    } else {
        setting.heartbeat_timeout_ms as f64 + 50.0
    };
    let ok = l.p99_us / 1000.0 < target_p99_ms;
    let request_latency = Latency::of(&requests);
    println!(
        "\nleader failover: {} {}s, heartbeat timeout {} ms, election timeout {} ms, durability {}",
        args.kills,
        if args.transfer { "transfer" } else { "kill" },
        setting.heartbeat_timeout_ms,
        setting.election_timeout_ms,
        setting.durability
    );
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "interruption (ms)", "p50", "p90", "p99", "max", "count"
    );
    println!(
        "{:<30} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
        if args.transfer {
            "transfer -> first commit"
        } else {
            "kill -> first commit"
        },
        l.p50_us / 1000.0,
        l.p90_us / 1000.0,
        l.p99_us / 1000.0,
        l.max_us / 1000.0,
        l.count
    );
    println!(
        "{:<30} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
        "each request, from intended",
        request_latency.p50_us / 1000.0,
        request_latency.p90_us / 1000.0,
        request_latency.p99_us / 1000.0,
        request_latency.max_us / 1000.0,
        request_latency.count
    );
    println!("requests offered and not acknowledged by the end (the last in flight): {lost}");
    println!(
        "target p99 < {target_p99_ms} ms: {}",
        if ok { "met" } else { "MISSED" }
    );
    println!(
        "machine: {machine}; threading {}, idle {}; {acknowledged} messages acknowledged",
        setting.threading, setting.idle
    );
    let summary = Summary {
        kills: args.kills,
        event: if args.transfer { "transfer" } else { "kill" },
        interruption: l,
        requests: request_latency,
        heartbeat_timeout_ms: setting.heartbeat_timeout_ms,
        election_timeout_ms: setting.election_timeout_ms,
        acknowledged,
        target_p99_ms,
        ok,
        durability: setting.durability.clone(),
        threading_mode: setting.threading.clone(),
        idle_strategy: setting.idle.clone(),
        machine,
    };
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let mut csv = String::from("intended_s,latency_ms\n");
        for (t, l) in &timeline {
            csv.push_str(&format!("{:.6},{:.3}\n", *t as f64 / 1e9, *l as f64 / 1e6));
        }
        let path = out.join("failover-timeline.csv");
        std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
        let points: Vec<(f64, f64)> = timeline
            .iter()
            .map(|&(t, l)| (t as f64 / 1e9, l as f64 / 1e6))
            .collect();
        let marks: Vec<f64> = kills_at.iter().map(|&t| t as f64 / 1e9).collect();
        crate::plot::timeline(
            &out.join("failover-timeline.svg"),
            &format!(
                "latency over time, {} msg/s, {} leader {}s (red), durability {}",
                args.rate,
                args.kills,
                if args.transfer { "transfer" } else { "kill" },
                setting.durability
            ),
            &points,
            &marks,
        )?;
        let path = out.join("requests.hgrm");
        std::fs::write(&path, crate::latency::percentile_distribution(&requests))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        write_json(&out.join("failover.json").display().to_string(), &summary)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(true)
}
