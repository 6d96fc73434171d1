//! The matching engine as a 3-node cluster in one process: one client streams orders, the
//! leader is killed mid-stream (its threads stopped without a goodbye) and later restarted
//! from its snapshot and log, and at the end every replica's book is compared with a
//! reference book that applied the same orders once each, in order.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientEvent, ClusterClient};
use raftline::config::Config;
use raftline::rng::Rng;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::Service;

use crate::{Event, EventKind, MatchingEngine, OrderBook, Request, Side};

/// What a run saw.
#[derive(Debug)]
pub struct Report {
    pub orders: u64,
    pub fills: u64,
    pub resting: usize,
    pub killed_leader: u32,
    /// From the kill to the first order acknowledged by the new leader.
    pub interruption_ms: f64,
    /// Distinct fill events the client received (two per fill, one for each side), and the
    /// reference's.
    pub fill_events_seen: usize,
    pub fill_events_expected: usize,
}

/// A stream of orders for one trader: new orders around a mid price, cancels and replaces of
/// earlier ones (some of which will have traded: those are rejected, the same everywhere).
pub fn orders(count: u64, seed: u64) -> Vec<Request> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(count as usize);
    for id in 1..=count {
        let earlier = 1 + rng.below(id);
        out.push(match rng.below(10) {
            0..=6 => Request::New {
                id,
                side: if rng.chance(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                price: rng.range(95, 106),
                quantity: rng.range(1, 11),
            },
            7 | 8 => Request::Cancel { id: earlier },
            _ => Request::Replace {
                id: earlier,
                price: rng.range(95, 106),
                quantity: rng.range(1, 11),
            },
        });
    }
    out
}

fn free_ports(n: usize) -> Vec<String> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("a loopback port"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("bound").to_string())
        .collect()
}

fn role(dir: &Path, id: u32) -> Option<u64> {
    CountersReader::open(&dir.join(format!("node-{id}")))
        .ok()
        .map(|c| c.get(Counter::Role))
}

/// Runs the demo in `dir`: `count` orders, the leader killed after `count / 2`.
pub fn run(dir: &Path, count: u64, seed: u64) -> Result<Report, String> {
    let members = free_ports(3);
    let config = |id: u32| {
        Config::builder(id, members.clone(), dir.join(format!("node-{id}")))
            .cluster_id(77)
            .segment_mib(4)
            .snapshot_interval_kib(64)
            .timeouts_ms(10, 100, 10)
            .idle(IdleStrategy::parse("block").expect("known"))
            .max_datagram_bytes(65_000)
            .build()
            .map_err(|e| e.to_string())
    };
    let mut nodes: Vec<Option<RunningNode<MatchingEngine>>> = Vec::new();
    for id in 0..3 {
        let node = RunningNode::start(&config(id)?, MatchingEngine::default())
            .map_err(|e| format!("node {id}: {e}"))?;
        nodes.push(Some(node));
    }
    let mut cc = ClientConfig::new(
        members
            .iter()
            .map(|m| m.parse().expect("address"))
            .collect(),
        77,
    );
    cc.max_datagram_bytes = 65_000;
    cc.resend_timeout_ns = 10_000_000;
    let mut client = ClusterClient::connect(cc, monotonic_ns).map_err(|e| e.to_string())?;
    let stream = orders(count, seed);

    // The reference: the same orders, each applied once, in order, by this session.
    let mut reference = OrderBook::default();
    let mut reference_fills = BTreeSet::new();
    for (tag, r) in stream.iter().enumerate() {
        reference.handle(client.session_id(), *r, tag as u64, &mut |_, e| {
            if e.kind == EventKind::Fill {
                reference_fills.insert(e.encode());
            }
        });
    }

    let mut next = 0usize;
    let mut acked = 0u64;
    let mut seen_fills = BTreeSet::new();
    let mut killed: Option<(u32, u64)> = None;
    let mut first_after_kill: Option<u64> = None;
    let mut ack_from = u64::MAX;
    let start = Instant::now();
    while acked < count {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("stalled: {acked} of {count} orders acknowledged"));
        }
        // Few in flight, so the replies kept for resends cover every one (a resend after the
        // kill gets its fills again).
        while next < stream.len() && client.outstanding() < 4 {
            client
                .offer(monotonic_ns(), &stream[next].encode(next as u64))
                .map_err(|e| e.to_string())?;
            next += 1;
        }
        client.poll(monotonic_ns(), |e| match e {
            ClientEvent::Applied { sequence } => {
                acked += 1;
                if sequence >= ack_from && first_after_kill.is_none() {
                    first_after_kill = Some(monotonic_ns());
                }
            }
            ClientEvent::Message { payload } => {
                if let Some(ev) = Event::decode(payload) {
                    if ev.kind == EventKind::Fill {
                        seen_fills.insert(ev.encode());
                    }
                }
            }
            // Orders are a few dozen bytes, far under the cluster's message limit.
            ClientEvent::LeaderChanged { .. }
            | ClientEvent::SessionClosed { .. }
            | ClientEvent::TooLarge { .. } => {}
        });
        if killed.is_none() && acked >= count / 2 {
            let leader = (0..3u32).find(|&id| role(dir, id) == Some(2));
            if let Some(leader) = leader {
                let node = nodes[leader as usize].take().expect("running");
                killed = Some((leader, monotonic_ns()));
                drop(node.stop());
                ack_from = client.next_sequence();
            }
        }
        // Bring the old leader back once the new one serves: it recovers from its snapshot.
        if let Some((leader, _)) = killed {
            if first_after_kill.is_some() && nodes[leader as usize].is_none() {
                let node = RunningNode::start(&config(leader)?, MatchingEngine::default())
                    .map_err(|e| format!("restarting node {leader}: {e}"))?;
                nodes[leader as usize] = Some(node);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let (killed_leader, killed_at) = killed.ok_or("the leader was never killed")?;

    // Every replica converges on the same applied position.
    let converge = Instant::now();
    loop {
        let applied: Vec<u64> = (0..3)
            .filter_map(|id| CountersReader::open(&dir.join(format!("node-{id}"))).ok())
            .map(|c| c.get(Counter::AppliedPosition))
            .collect();
        if applied.len() == 3 && applied.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        if converge.elapsed() > Duration::from_secs(20) {
            return Err(format!("replicas did not converge: applied {applied:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (id, node) in nodes.into_iter().enumerate() {
        let stopped = node
            .ok_or(format!("node {id} not running"))?
            .stop()
            .ok_or(format!("node {id} did not stop cleanly"))?;
        let book = &stopped.service.book;
        if book.resting() != reference.resting() || stopped.service.digest() != reference.digest {
            return Err(format!(
                "node {id}: its book differs from the reference ({} resting orders against {}, {} fills against {})",
                book.resting().len(),
                reference.resting().len(),
                book.fills(),
                reference.fills()
            ));
        }
    }
    if let Some(missing) = reference_fills.difference(&seen_fills).next() {
        return Err(format!(
            "the client never received fill {:?}",
            Event::decode(missing)
        ));
    }
    if let Some(extra) = seen_fills.difference(&reference_fills).next() {
        return Err(format!(
            "the client received a fill the reference has not: {:?}",
            Event::decode(extra)
        ));
    }
    Ok(Report {
        orders: count,
        fills: reference.fills(),
        resting: reference.resting().len(),
        killed_leader,
        interruption_ms: first_after_kill
            .map_or(f64::NAN, |t| t.saturating_sub(killed_at) as f64 / 1e6),
        fill_events_seen: seen_fills.len(),
        fill_events_expected: reference_fills.len(),
    })
}
