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

use std::path::PathBuf;
use std::time::Duration;

use raftline::client::admin::AdminClient;
use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::codec::message::AdminCommand;
use raftline::config::Config;
use raftline::log::Durability;
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
    threading_mode: &'static str,
    idle_strategy: &'static str,
    machine: Machine,
}

struct Cluster {
    configs: Vec<Config>,
    nodes: Vec<Option<RunningNode<EchoService>>>,
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

pub fn run(args: Args) -> Result<bool, String> {
    let durability = match args.durability.as_str() {
        "fdatasync" => Durability::Fdatasync,
        "none" => Durability::None,
        other => return Err(format!("--durability {other}: use fdatasync or none")),
    };
    let machine = Machine::detect();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
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
    let mut cluster = Cluster {
        nodes: Vec::new(),
        configs,
    };
    for c in &cluster.configs {
        cluster.nodes.push(Some(
            RunningNode::start(c, EchoService::default()).map_err(|e| e.to_string())?,
        ));
    }
    let mut cc = ClientConfig::new(
        members
            .iter()
            .map(|m| m.parse().expect("address"))
            .collect(),
        3,
    );
    cc.max_datagram_bytes = 65_000;
    cc.max_outstanding = 1 << 16;
    cc.resend_timeout_ns = args.client_resend_ms * 1_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).map_err(|e| e.to_string())?;
    eprintln!(
        "failover on {machine}: {} kills, heartbeat timeout {} ms, election timeout {} ms, {} msg/s, durability {durability}",
        args.kills, args.heartbeat_timeout_ms, args.election_timeout_ms, args.rate
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

    let mut admin = if args.transfer {
        let addrs = members
            .iter()
            .map(|m| m.parse().expect("address"))
            .collect();
        Some(AdminClient::connect(addrs, 3).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut kills_at = Vec::new();
    for kill in 0..args.kills {
        // Steady state: a leader, every member caught up.
        drive(&mut client, 300_000_000, &mut acknowledged, 0, None);
        let deadline = monotonic_ns() + 10_000_000_000;
        let target = (0..3).map(|i| cluster.applied(i)).max().unwrap_or(0);
        let leader = loop {
            if let Some(l) = cluster.leader() {
                // Every member has applied at least what the most advanced one had.
                if (0..3).all(|i| cluster.applied(i) >= target) {
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
        if let Some(admin) = admin.as_mut() {
            let to = ((leader + 1) % 3) as u32;
            admin.send(leader as u32, AdminCommand::TransferLeader, to);
        } else {
            let node = cluster.nodes[leader].take().expect("running");
            drop(node.stop());
        }
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
                "kill {kill}: nothing acknowledged within 10 s of killing leader {leader}"
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
        if cluster.nodes[leader].is_none() {
            cluster.nodes[leader] = Some(
                RunningNode::start(&cluster.configs[leader], EchoService::default())
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    eprintln!();
    for n in cluster.nodes.into_iter().flatten() {
        n.stop();
    }
    remove_run_dir(&args.dir);
    let lost = in_flight.len();
    let l = Latency::of(&h);
    // Kill: detection takes the heartbeat timeout. Transfer: the target, 5 ms.
    let target_p99_ms = if args.transfer { 5.0 } else { 150.0 };
    let ok = l.p99_us / 1000.0 < target_p99_ms;
    let request_latency = Latency::of(&requests);
    println!(
        "\nleader failover: {} {}s, heartbeat timeout {} ms, election timeout {} ms, durability {}",
        args.kills,
        if args.transfer { "transfer" } else { "kill" },
        args.heartbeat_timeout_ms,
        args.election_timeout_ms,
        args.durability
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
        "machine: {machine}; threading shared, idle block; {acknowledged} messages acknowledged"
    );
    let summary = Summary {
        kills: args.kills,
        event: if args.transfer { "transfer" } else { "kill" },
        interruption: l,
        requests: request_latency,
        heartbeat_timeout_ms: args.heartbeat_timeout_ms,
        election_timeout_ms: args.election_timeout_ms,
        acknowledged,
        target_p99_ms,
        ok,
        durability: args.durability.clone(),
        threading_mode: "shared",
        idle_strategy: "block",
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
                args.durability
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
