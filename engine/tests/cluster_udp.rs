//! A real 3-node cluster in one process: nodes on their own threads, the log on disk, a
//! client (over loopback UDP) that offers messages and gets every one applied and echoed.
//! Members talk over UDP, over in-process rings, or over the IPC rings in shared files.

mod common;
use common::free_ports;

use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::config::{Config, ThreadingMode};
use raftline::consensus::Role;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::echo::EchoService;
use raftline::service::Service;

/// What members talk over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Members {
    Udp,
    InProcess,
    Ipc,
}

fn config(
    id: u32,
    members: &[String],
    dir: &std::path::Path,
    mode: ThreadingMode,
    over: Members,
) -> Config {
    let builder = Config::builder(id, members.to_vec(), dir.join(format!("node-{id}")));
    let builder = if over == Members::Ipc {
        builder.ipc(dir.join("ipc"))
    } else {
        builder
    };
    builder
        .cluster_id(42)
        .threading(mode)
        .segment_mib(1)
        .timeouts_ms(20, 400, 100)
        .idle(IdleStrategy::parse("block").unwrap())
        .max_datagram_bytes(65_000)
        .build()
        .unwrap()
}

/// Waits (bounded) until `done` holds, failing with `what` and the state it saw.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match done() {
            Ok(()) => return,
            Err(state) if start.elapsed() > timeout => {
                panic!("timed out waiting for {what}: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[test]
fn three_nodes_on_loopback_apply_every_message_once_and_agree() {
    run_cluster(ThreadingMode::Shared, Members::Udp);
}

#[test]
fn dedicated_threading_receiver_thread_feeds_the_node_through_a_ring() {
    run_cluster(ThreadingMode::Dedicated, Members::Udp);
}

#[test]
fn members_over_in_process_rings() {
    run_cluster(ThreadingMode::Shared, Members::InProcess);
}

#[test]
fn members_over_ipc_rings_in_shared_files() {
    run_cluster(ThreadingMode::Shared, Members::Ipc);
}

#[test]
fn members_over_ipc_rings_with_dedicated_threading() {
    run_cluster(ThreadingMode::Dedicated, Members::Ipc);
}

fn run_cluster(mode: ThreadingMode, over: Members) {
    let dir = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let mut links = match over {
        Members::InProcess => raftline::sys::in_process_links(3, 1 << 20)
            .unwrap()
            .into_iter()
            .map(|l| Some(Box::new(l) as Box<dyn raftline::sys::Links>))
            .collect(),
        _ => vec![None, None, None],
    };
    let nodes: Vec<RunningNode<EchoService>> = (0..3)
        .map(|id| {
            let config = config(id, &members, dir.path(), mode, over);
            let service = EchoService::default();
            match links[id as usize].take() {
                Some(l) => RunningNode::start_with_links(&config, service, Some(l)),
                None => RunningNode::start(&config, service),
            }
            .unwrap()
        })
        .collect();
    let addrs = members.iter().map(|m| m.parse().unwrap()).collect();
    let mut cc = ClientConfig::new(addrs, 42);
    cc.max_datagram_bytes = 65_000;
    cc.resend_timeout_ns = 100_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).unwrap();

    const N: u64 = 300;
    let mut applied = 0u64;
    let mut echoed = 0u64;
    let mut next = 0u64;
    let start = Instant::now();
    while applied < N || echoed < N {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stalled at {applied} applied, {echoed} echoed"
        );
        while next < N && client.outstanding() < 16 {
            client.offer(monotonic_ns(), &next.to_le_bytes()).unwrap();
            next += 1;
        }
        client.poll(monotonic_ns(), |e| match e {
            ClientEvent::Applied { .. } => applied += 1,
            ClientEvent::Message { payload } => {
                assert_eq!(payload.len(), 8);
                echoed += 1;
            }
            ClientEvent::LeaderChanged { .. } => {}
            ClientEvent::SessionClosed { reason } => panic!("session closed: {reason:?}"),
            ClientEvent::TooLarge { sequence } => panic!("8-byte message {sequence} too large"),
        });
        std::thread::sleep(Duration::from_micros(100));
    }
    assert_eq!(client.outstanding(), 0);

    // Every replica applies the same log: equal applied positions and service digests.
    let dirs: Vec<_> = (0..3)
        .map(|id| dir.path().join(format!("node-{id}")))
        .collect();
    wait_for("replicas to converge", Duration::from_secs(10), || {
        let readers: Vec<CountersReader> = dirs
            .iter()
            .map(|d| CountersReader::open(d).unwrap())
            .collect();
        let state: Vec<(u64, u64, u64, u64)> = readers
            .iter()
            .map(|r| {
                (
                    r.get(Counter::AppliedPosition),
                    r.get(Counter::ServiceDigest),
                    r.get(Counter::AppliedMessages),
                    r.get(Counter::RingRecordsReceived),
                )
            })
            .collect();
        let all_equal = state
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1);
        // Member traffic went where it was configured to go.
        let rings_used = state.iter().all(|s| s.3 > 0);
        if all_equal && state[0].2 == N && rings_used == (over != Members::Udp) {
            Ok(())
        } else {
            Err(format!("{state:?}"))
        }
    });
    // The followers stop first and the leader last, so that no member elects a new leader (and
    // tells its service so) while the others stop.
    let leader_id = (0..3)
        .find(|&id| {
            CountersReader::open(&dirs[id])
                .is_ok_and(|r| r.get(Counter::Role) == u64::from(Role::Leader.code()))
        })
        .expect("a leader after convergence");
    let mut nodes: Vec<Option<RunningNode<EchoService>>> = nodes.into_iter().map(Some).collect();
    let order = (0..3).filter(|&id| id != leader_id).chain([leader_id]);
    let services: Vec<(u64, Option<raftline::consensus::Role>, bool)> = order
        .map(|id| {
            let stopped = nodes[id].take().unwrap().stop().unwrap();
            let s = &stopped.service;
            (s.digest(), s.role(), s.terminated())
        })
        .collect();
    let digests: Vec<u64> = services.iter().map(|s| s.0).collect();
    assert!(
        services.iter().all(|s| s.2),
        "every service was told it terminates"
    );
    let leaders = services
        .iter()
        .filter(|s| s.1 == Some(raftline::consensus::Role::Leader))
        .count();
    assert_eq!(
        leaders, 1,
        "exactly one service was told it leads: {services:?}"
    );
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

/// Containers and pods start before their DNS entries exist: a member whose name does not
/// resolve does not stop the others from starting and forming a quorum.
#[test]
fn an_unresolvable_member_does_not_stop_a_quorum_from_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = free_ports(2);
    members.push("member-2.invalid:20003".to_string());
    let nodes: Vec<RunningNode<EchoService>> = (0..2)
        .map(|id| {
            RunningNode::start(
                &config(
                    id,
                    &members,
                    dir.path(),
                    ThreadingMode::Shared,
                    Members::Udp,
                ),
                EchoService::default(),
            )
            .unwrap()
        })
        .collect();
    let addrs = members[..2].iter().map(|m| m.parse().unwrap()).collect();
    let mut cc = ClientConfig::new(addrs, 42);
    cc.max_datagram_bytes = 65_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).unwrap();
    client.offer(monotonic_ns(), b"hello").unwrap();
    let mut applied = false;
    wait_for("the message to apply", Duration::from_secs(10), || {
        client.poll(monotonic_ns(), |e| {
            applied |= matches!(e, ClientEvent::Applied { sequence: 1 })
        });
        if applied {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    for n in nodes {
        n.stop();
    }
}
