//! Snapshots with real nodes: every replica snapshots at the same log positions, a restarted
//! node starts from its newest good snapshot and replays only the log after it, and replicas
//! whose service state differs at a snapshot position say so.

mod common;
use common::free_ports;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::config::{Config, ThreadingMode};
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::echo::EchoService;
use raftline::service::snapshot;
use raftline::service::{fnv1a, Context, Service, FNV_OFFSET};
use raftline::sys::files::DirFiles;

fn config(id: u32, members: &[String], dir: &Path, mode: ThreadingMode, kib: u64) -> Config {
    Config::builder(id, members.to_vec(), dir.join(format!("node-{id}")))
        .cluster_id(43)
        .threading(mode)
        .segment_mib(1)
        .snapshot_interval_kib(kib)
        .timeouts_ms(20, 400, 100)
        .idle(IdleStrategy::parse("block").unwrap())
        .max_datagram_bytes(65_000)
        .build()
        .unwrap()
}

fn client(members: &[String]) -> ClusterClient {
    let mut cc = ClientConfig::new(members.iter().map(|m| m.parse().unwrap()).collect(), 43);
    cc.max_datagram_bytes = 65_000;
    cc.resend_timeout_ns = 100_000_000;
    ClusterClient::connect(cc, monotonic_ns).unwrap()
}

/// Offers `count` messages (numbered from `first`) and waits until every one is applied.
fn send(client: &mut ClusterClient, first: u64, count: u64) {
    let (mut next, mut applied) = (first, 0);
    let start = Instant::now();
    while applied < count {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stalled at {applied} of {count} applied"
        );
        while next < first + count && client.outstanding() < 16 {
            client.offer(monotonic_ns(), &next.to_le_bytes()).unwrap();
            next += 1;
        }
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { .. } = e {
                applied += 1;
            }
        });
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn counters(dir: &Path, id: u32) -> CountersReader {
    CountersReader::open(&dir.join(format!("node-{id}"))).unwrap()
}

/// Waits until every node has applied the same position with the same digest.
fn converge(dir: &Path) {
    let start = Instant::now();
    loop {
        let state: Vec<(u64, u64)> = (0..3)
            .map(|id| {
                let c = counters(dir, id);
                (
                    c.get(Counter::AppliedPosition),
                    c.get(Counter::ServiceDigest),
                )
            })
            .collect();
        if state.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "replicas did not converge: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Node `id`'s snapshot files, newest first: (position, path).
fn snapshot_files(dir: &Path, id: u32) -> Vec<(u64, PathBuf)> {
    let node_dir = dir.join(format!("node-{id}"));
    snapshot::list(&mut DirFiles::new(&node_dir))
        .unwrap()
        .into_iter()
        .map(|position| (position, node_dir.join(snapshot::file_name(position))))
        .collect()
}

#[test]
fn a_restarted_node_starts_from_its_snapshot_and_replays_only_the_rest() {
    restart_from_snapshot(ThreadingMode::Shared, false);
}

#[test]
fn with_dedicated_threading_and_a_damaged_newest_snapshot_the_one_before_is_used() {
    restart_from_snapshot(ThreadingMode::Dedicated, true);
}

fn restart_from_snapshot(mode: ThreadingMode, damage_newest: bool) {
    let dir = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let mut nodes: Vec<Option<RunningNode<EchoService>>> = (0..3)
        .map(|id| {
            let c = config(id, &members, dir.path(), mode, 16);
            Some(RunningNode::start(&c, EchoService::default()).unwrap())
        })
        .collect();
    let mut client = client(&members);
    send(&mut client, 0, 1500);
    converge(dir.path());

    // Every replica took its snapshots at the same positions (written off the node's thread,
    // so the files may appear a little after the state converged).
    let start = Instant::now();
    loop {
        let positions: Vec<Vec<u64>> = (0..3)
            .map(|id| {
                snapshot_files(dir.path(), id)
                    .into_iter()
                    .map(|f| f.0)
                    .collect()
            })
            .collect();
        if positions[0].len() >= 2 && positions.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "snapshot files differ or are missing: {positions:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let end = counters(dir.path(), 2).get(Counter::AppliedPosition);

    // Stop node 2 (whatever its role), perhaps damage its newest snapshot, start it again.
    let stopped = nodes[2].take().unwrap().stop().unwrap();
    assert_eq!(stopped.service.messages(), 1500);
    let files = snapshot_files(dir.path(), 2);
    let expected_start = if damage_newest {
        let mut bytes = std::fs::read(&files[0].1).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(&files[0].1, bytes).unwrap();
        files[1].0
    } else {
        files[0].0
    };
    let c = config(2, &members, dir.path(), mode, 16);
    nodes[2] = Some(RunningNode::start(&c, EchoService::default()).unwrap());
    send(&mut client, 1500, 300);
    converge(dir.path());
    for id in 0..3 {
        assert_eq!(counters(dir.path(), id).get(Counter::DigestMismatches), 0);
    }

    let services: Vec<EchoService> = nodes
        .into_iter()
        .map(|n| n.unwrap().stop().unwrap().service)
        .collect();
    assert!(services.iter().all(|s| s.messages() == 1800));
    let digests: Vec<u64> = services.iter().map(|s| s.digest()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    // The restarted node applied itself only what came after the snapshot it started from:
    // fewer than all 1800 messages, and exactly those after the snapshot's position.
    let restarted = &services[2];
    assert!(
        restarted.messages_since_start() < 1800,
        "replayed {} messages: it did not start from a snapshot",
        restarted.messages_since_start()
    );
    let at_snapshot = 1800 - restarted.messages_since_start();
    assert!(at_snapshot > 0);
    // Each message's frame is the same size, so the snapshot's position tells about how many
    // messages it held: the node started from `expected_start`, not from another file.
    let newest_held = 1500 * expected_start / end;
    assert!(
        at_snapshot.abs_diff(newest_held) < 40,
        "started from a snapshot holding {at_snapshot} messages; expected about {newest_held} (position {expected_start})"
    );
}

/// A service whose state depends on something other than the log: the member it runs on.
struct Drifting {
    salt: u64,
    digest: u64,
}

impl Service for Drifting {
    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        self.digest = fnv1a(self.digest, payload);
        self.digest = fnv1a(self.digest, &self.salt.to_le_bytes());
        ctx.send(session_id, payload);
    }
    fn digest(&self) -> u64 {
        self.digest
    }
}

#[test]
fn a_nondeterministic_service_is_caught_at_the_next_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    // Members 0 and 1 agree; member 2's service drifts.
    let salts = [0u64, 0, 7];
    let nodes: Vec<RunningNode<Drifting>> = (0..3u32)
        .map(|id| {
            let c = config(id, &members, dir.path(), ThreadingMode::Shared, 8);
            let service = Drifting {
                salt: salts[id as usize],
                digest: FNV_OFFSET,
            };
            RunningNode::start(&c, service).unwrap()
        })
        .collect();
    let mut client = client(&members);
    send(&mut client, 0, 600);
    let start = Instant::now();
    let mismatches = loop {
        let m: Vec<u64> = (0..3)
            .map(|id| counters(dir.path(), id).get(Counter::DigestMismatches))
            .collect();
        let leader = (0..3)
            .find(|&id| counters(dir.path(), id).get(Counter::Role) == 2)
            .expect("a leader");
        // The replicas whose salt differs from the leader's are the ones to report.
        let expect: Vec<bool> = (0..3)
            .map(|id| salts[id] != salts[leader as usize])
            .collect();
        let flagged: Vec<bool> = m.iter().map(|&n| n > 0).collect();
        if flagged == expect {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "mismatches {m:?}, leader {leader}, expected flagged {expect:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(mismatches.iter().sum::<u64>() > 0);
    for n in nodes {
        n.stop();
    }
}

/// Offers `count` messages of `size` bytes and waits until every one is applied.
fn send_sized(client: &mut ClusterClient, count: u64, size: usize) {
    let mut payload = vec![0x33u8; size];
    let (mut sent, mut applied) = (0, 0);
    let start = Instant::now();
    while applied < count {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stalled at {applied} of {count} applied"
        );
        while sent < count && client.outstanding() < 32 {
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            client.offer(monotonic_ns(), &payload).unwrap();
            sent += 1;
        }
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { .. } = e {
                applied += 1;
            }
        });
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn a_follower_behind_the_leaders_purged_log_is_sent_a_snapshot() {
    install_snapshot(ThreadingMode::Shared);
}

#[test]
fn a_snapshot_install_with_dedicated_threading() {
    install_snapshot(ThreadingMode::Dedicated);
}

fn install_snapshot(mode: ThreadingMode) {
    let dir = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let start = |id: u32| {
        let mut c = config(id, &members, dir.path(), mode, 256);
        // Small datagrams: the snapshot (about 8 KiB, mostly replies kept for resends) goes
        // over in several chunks.
        c.transport.max_datagram_bytes = 1472;
        RunningNode::start(&c, EchoService::default()).unwrap()
    };
    let mut nodes: Vec<Option<RunningNode<EchoService>>> =
        (0..3).map(|id| Some(start(id))).collect();
    let mut client = client(&members);
    send_sized(&mut client, 200, 1000);
    converge(dir.path());
    // Node 2 stops; 4 MiB more go into the log (1 MiB segments, a snapshot each 256 KiB).
    nodes[2].take().unwrap().stop().unwrap();
    send_sized(&mut client, 4000, 1000);
    let wait = Instant::now();
    let leader_start = loop {
        let starts: Vec<u64> = (0..2)
            .map(|id| counters(dir.path(), id).get(Counter::LogStartPosition))
            .collect();
        let behind = counters(dir.path(), 2).get(Counter::AppliedPosition);
        if starts.iter().all(|&s| s > behind + (1 << 20)) {
            break starts[0].min(starts[1]);
        }
        assert!(
            wait.elapsed() < Duration::from_secs(10),
            "the running nodes did not retire their old segments: starts {starts:?}, node 2 at {behind}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The old segment files are gone from the running nodes' directories.
    let first = dir.path().join("node-0").join("00000000000000000000.seg");
    let wait = Instant::now();
    while first.exists() {
        assert!(
            wait.elapsed() < Duration::from_secs(10),
            "{} not deleted",
            first.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Node 2 comes back behind the start of every other log: it is sent a snapshot, restarts
    // its log at the leader's start, and catches up from there.
    nodes[2] = Some(start(2));
    send_sized(&mut client, 100, 1000);
    converge(dir.path());
    let c2 = counters(dir.path(), 2);
    assert_eq!(c2.get(Counter::SnapshotsInstalled), 1);
    assert!(c2.get(Counter::LogStartPosition) >= leader_start.min(1 << 20));
    assert_eq!(c2.get(Counter::DigestMismatches), 0);
    let services: Vec<EchoService> = nodes
        .into_iter()
        .map(|n| n.unwrap().stop().unwrap().service)
        .collect();
    let digests: Vec<u64> = services.iter().map(|s| s.digest()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert!(services.iter().all(|s| s.messages() == 4300));
    // It did not replay what the snapshot held.
    assert!(services[2].messages_since_start() < 4300);
}
