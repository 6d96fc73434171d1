//! `raftline-bench catch-up`: how fast a follower that was down catches up. Three nodes run in
//! this process on loopback UDP; one follower is stopped, the client writes `--mib` MiB through
//! the leader (closed loop, `--size` bytes per message), the follower is started again from its
//! log, and the time from its start to applying everything the leader committed gives the rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::config::Config;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::echo::EchoService;
use serde::Serialize;

use crate::report::{loopback_ports, remove_run_dir, write_json, Machine};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// MiB written while the follower is down.
    #[arg(long, default_value_t = 64)]
    pub mib: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 16_384)]
    pub size: usize,
    #[arg(long, default_value = "none")]
    pub durability: String,
    /// The leader's replication window (bytes in flight per follower), KiB; default: the
    /// config's.
    #[arg(long)]
    pub window_kib: Option<u64>,
    #[arg(long, default_value = "bench-out/catch-up")]
    pub dir: PathBuf,
    #[arg(long)]
    pub json: Option<String>,
}

#[derive(Serialize)]
struct Summary {
    behind_bytes: u64,
    catch_up_s: f64,
    catch_up_mb_per_s: f64,
    write_mb_per_s: f64,
    message_bytes: usize,
    durability: String,
    replication_window_kib: u64,
    machine: Machine,
}

fn applied(dir: &std::path::Path) -> u64 {
    CountersReader::open(dir).map_or(0, |c| c.get(Counter::AppliedPosition))
}

pub fn run(args: Args) -> Result<bool, String> {
    let durability = crate::report::durability(&args.durability)?;
    let machine = Machine::detect();
    crate::report::fresh_dir(&args.dir)?;
    let members = loopback_ports(3).map_err(|e| e.to_string())?;
    let configs: Vec<Config> = (0..3u32)
        .map(|id| {
            Config::builder(id, members.clone(), args.dir.join(format!("node-{id}")))
                .cluster_id(5)
                .durability(durability)
                .segment_mib(64)
                .idle(IdleStrategy::parse("block").expect("known"))
                .timeouts_ms(50, 1000, 300)
                .max_datagram_bytes(65_000)
                .appointed_leader(Some(0))
                .build()
                .map(|mut c| {
                    if let Some(kib) = args.window_kib {
                        c.consensus.replication_window_kib = kib;
                    }
                    c
                })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let window_kib = configs[0].consensus.replication_window_kib;
    let start =
        |c: &Config| RunningNode::start(c, EchoService::default()).map_err(|e| e.to_string());
    let mut nodes: Vec<Option<RunningNode<EchoService>>> =
        vec![Some(start(&configs[0])?), Some(start(&configs[1])?), None];
    let mut cc = ClientConfig::new(
        members
            .iter()
            .map(|m| m.parse().expect("address"))
            .collect(),
        5,
    );
    cc.max_datagram_bytes = 65_000;
    cc.resend_timeout_ns = 1_000_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).map_err(|e| e.to_string())?;
    eprintln!(
        "catch-up on {machine}: member 2 down, writing {} MiB in {} B messages (durability {durability}) ...",
        args.mib, args.size
    );
    let total = (args.mib << 20) / args.size as u64;
    let payload = vec![0x3cu8; args.size];
    let (mut sent, mut applied_msgs) = (0u64, 0u64);
    let write_start = Instant::now();
    while applied_msgs < total {
        if write_start.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "{applied_msgs} of {total} messages applied in 600 s"
            ));
        }
        while sent < total && client.outstanding() < 64 {
            if client.offer(monotonic_ns(), &payload).is_err() {
                break;
            }
            sent += 1;
        }
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { .. } = e {
                applied_msgs += 1;
            }
        });
        crate::host::wait_readable(client.raw_fd(), 200_000);
    }
    let write_s = write_start.elapsed().as_secs_f64();
    let target = applied(&configs[0].node.log_dir);
    eprintln!("  wrote {target} bytes of log in {write_s:.1} s; starting member 2 ...");
    let catch_start = Instant::now();
    nodes[2] = Some(start(&configs[2])?);
    while applied(&configs[2].node.log_dir) < target {
        if catch_start.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "member 2 applied {} of {target} bytes in 600 s",
                applied(&configs[2].node.log_dir)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let catch_s = catch_start.elapsed().as_secs_f64();
    for n in nodes.into_iter().flatten() {
        n.stop();
    }
    remove_run_dir(&args.dir);
    let summary = Summary {
        behind_bytes: target,
        catch_up_s: catch_s,
        catch_up_mb_per_s: target as f64 / 1e6 / catch_s,
        write_mb_per_s: target as f64 / 1e6 / write_s,
        message_bytes: args.size,
        durability: durability.to_string(),
        replication_window_kib: window_kib,
        machine,
    };
    println!(
        "follower catch-up: {:.1} MB behind, caught up in {:.2} s: {:.1} MB/s (the leader took the same bytes at {:.1} MB/s); replication window {} KiB, durability {}",
        target as f64 / 1e6,
        catch_s,
        summary.catch_up_mb_per_s,
        summary.write_mb_per_s,
        window_kib,
        summary.durability
    );
    println!("machine: {}", summary.machine);
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(true)
}
