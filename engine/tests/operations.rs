//! Operator commands over the admin channel, against a real 3-node cluster under a steady
//! stream of client messages: describe, snapshot, transfer-leader, step-down, shutdown. No
//! message is lost or applied twice through the handovers, and the cluster shuts down in
//! order (every replica snapshots at the same position and stops).

mod common;
use common::free_ports;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftline::client::admin::{AdminClient, MemberState};
use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::codec::message::AdminCommand;
use raftline::config::Config;
use raftline::consensus::Role;
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::echo::EchoService;
use raftline::service::snapshot;
use raftline::sys::files::DirFiles;

/// What the streaming client saw: each acknowledged sequence, and the acknowledgement times.
#[derive(Default)]
struct Seen {
    acked: Vec<u64>,
    ack_times: Vec<u64>,
}

fn leader_of(states: &[Option<MemberState>]) -> Option<u32> {
    let leaders: Vec<u32> = states
        .iter()
        .flatten()
        .filter(|s| s.role == Role::Leader)
        .map(|s| s.member_id)
        .collect();
    (leaders.len() == 1).then(|| leaders[0])
}

/// Waits until the streaming client has had `more` further messages acknowledged (the stream
/// goes on under whoever leads now).
fn stream_progress(seen: &Mutex<Seen>, more: usize) {
    let target = seen.lock().unwrap().acked.len() + more;
    let start = Instant::now();
    while seen.lock().unwrap().acked.len() < target {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the stream stalled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until every member answers and agrees that `want(leader)` holds.
fn wait_leader(admin: &mut AdminClient, want: impl Fn(u32) -> bool) -> u32 {
    let start = Instant::now();
    loop {
        let states = admin.describe(Duration::from_millis(300)).unwrap();
        if let Some(l) = leader_of(&states) {
            let agreed = states
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.leader == Some(l)));
            if agreed && want(l) {
                return l;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no agreed leader: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn describe_snapshot_transfer_step_down_and_shutdown_over_the_admin_channel() {
    let dir = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let configs: Vec<Config> = (0..3u32)
        .map(|id| {
            Config::builder(id, members.clone(), dir.path().join(format!("node-{id}")))
                .cluster_id(44)
                .segment_mib(1)
                .snapshot_interval_kib(0)
                .timeouts_ms(20, 400, 100)
                .idle(IdleStrategy::parse("block").unwrap())
                .max_datagram_bytes(65_000)
                .build()
                .unwrap()
        })
        .collect();
    let nodes: Vec<RunningNode<EchoService>> = configs
        .iter()
        .map(|c| RunningNode::start(c, EchoService::default()).unwrap())
        .collect();
    let addrs: Vec<std::net::SocketAddr> = members.iter().map(|m| m.parse().unwrap()).collect();
    let mut admin = AdminClient::connect(addrs.clone(), 44).unwrap();
    let first = wait_leader(&mut admin, |_| true);

    // The operator's command line: `raftline cluster describe` with a member's config.
    let path = dir.path().join("node-0.toml");
    std::fs::write(&path, configs[0].to_toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftline"))
        .args(["cluster", "describe", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("Leader").count(), 1, "{text}");
    assert_eq!(text.matches("Follower").count(), 2, "{text}");

    // A client streams a message every 500 µs in the background.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let streamer = {
        let (stop, seen, addrs) = (stop.clone(), seen.clone(), addrs.clone());
        std::thread::spawn(move || {
            let mut cc = ClientConfig::new(addrs, 44);
            cc.resend_timeout_ns = 20_000_000;
            let mut client = ClusterClient::connect(cc, monotonic_ns).unwrap();
            let mut next = 0u64;
            let mut offered = 0u64;
            while !stop.load(Ordering::Relaxed) || client.outstanding() > 0 {
                if !stop.load(Ordering::Relaxed) && client.outstanding() < 64 {
                    client.offer(monotonic_ns(), &next.to_le_bytes()).unwrap();
                    next += 1;
                    offered += 1;
                }
                client.poll(monotonic_ns(), |e| {
                    if let ClientEvent::Applied { sequence } = e {
                        let mut s = seen.lock().unwrap();
                        s.acked.push(sequence);
                        s.ack_times.push(monotonic_ns());
                    }
                });
                std::thread::sleep(Duration::from_micros(500));
            }
            offered
        })
    };
    stream_progress(&seen, 100);

    // Snapshot: every replica takes one at the action's position.
    let (leader, position) = admin
        .on_leader(AdminCommand::Snapshot, 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!(leader.member_id, first);
    let start = Instant::now();
    while (0..3).any(|id| {
        snapshot::list(&mut DirFiles::new(dir.path().join(format!("node-{id}"))))
            .unwrap()
            .is_empty()
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no snapshot files"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let taken: Vec<u64> = (0..3)
        .map(|id| {
            snapshot::list(&mut DirFiles::new(dir.path().join(format!("node-{id}")))).unwrap()[0]
        })
        .collect();
    assert!(
        taken.iter().all(|&p| p == taken[0] && p > position),
        "{taken:?} after {position}"
    );

    // Transfer to a named follower, then step down (to whichever follower is most caught up).
    let target = (first + 1) % 3;
    let (_, to) = admin
        .on_leader(AdminCommand::TransferLeader, target, Duration::from_secs(5))
        .unwrap();
    assert_eq!(to, target as u64);
    let second = wait_leader(&mut admin, |l| l == target);
    stream_progress(&seen, 100);
    let (_, to) = admin
        .on_leader(AdminCommand::StepDown, 0, Duration::from_secs(5))
        .unwrap();
    let third = wait_leader(&mut admin, |l| l != second);
    assert_eq!(third as u64, to);
    // A transfer to a member that does not exist is refused, naming the leader.
    let refused = admin.on_leader(AdminCommand::TransferLeader, 9, Duration::from_secs(5));
    assert!(refused.is_err(), "{refused:?}");
    stream_progress(&seen, 100);

    // Every message offered was applied exactly once, in order, through both handovers.
    stop.store(true, Ordering::Relaxed);
    let offered = streamer.join().unwrap();
    let seen = seen.lock().unwrap();
    let mut acked = seen.acked.clone();
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=offered).collect::<Vec<u64>>(),
        "every sequence acknowledged"
    );
    let longest_gap = seen
        .ack_times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0);
    eprintln!(
        "{offered} messages; longest gap between acknowledgements across two handovers: {:.2} ms",
        longest_gap as f64 / 1e6
    );

    // Shutdown: every replica snapshots at the shutdown position and its threads end.
    let (_, at) = admin
        .on_leader(AdminCommand::Shutdown, 0, Duration::from_secs(5))
        .unwrap();
    let start = Instant::now();
    while !nodes.iter().all(|n| n.has_stopped()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not every node stopped after the shutdown action at {at}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let digests: Vec<u64> = nodes
        .into_iter()
        .map(|n| {
            let stopped = n.stop().unwrap();
            assert_eq!(stopped.failure, None, "a shutdown is not a failure");
            // Applied once each on every replica: no loss, no duplicate through the handovers.
            assert_eq!(stopped.service.messages(), offered);
            raftline::service::Service::digest(&stopped.service)
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    let last: Vec<u64> = (0..3)
        .map(|id| {
            snapshot::list(&mut DirFiles::new(dir.path().join(format!("node-{id}")))).unwrap()[0]
        })
        .collect();
    assert!(
        last.iter().all(|&p| p == last[0] && p > at),
        "{last:?} after {at}"
    );
}
