//! Session lifecycle with real nodes: a client that keeps polling stays open (keep-alives), a
//! client that goes silent is closed by the leader after the session timeout, a client may
//! close its session, and the service may close one. Every replica sees each close once, with
//! its reason, and the client is told.

mod common;
use common::free_ports;

use std::time::{Duration, Instant};

use raftline::client::{ClientConfig, ClientError, ClientEvent, ClusterClient};
use raftline::codec::message::CloseReason;
use raftline::config::Config;
use raftline::runtime::counters::{Counter, CountersReader};
use raftline::runtime::{monotonic_ns, IdleStrategy, RunningNode};
use raftline::service::{Context, Service};

/// Records closes; closes the session of any message that says "close me".
#[derive(Default)]
struct Sessions {
    closes: Vec<(u64, CloseReason)>,
    messages: u64,
}

impl Service for Sessions {
    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        self.messages += 1;
        if payload == b"close me" {
            ctx.close_session(session_id);
        }
        ctx.send(session_id, payload);
    }
    fn on_session_close(&mut self, _ctx: &mut Context, session_id: u64, reason: CloseReason) {
        self.closes.push((session_id, reason));
    }
    fn digest(&self) -> u64 {
        self.closes.len() as u64 * 1_000_000 + self.messages
    }
}

fn client(members: &[String]) -> ClusterClient {
    let mut cc = ClientConfig::new(members.iter().map(|m| m.parse().unwrap()).collect(), 45);
    cc.resend_timeout_ns = 20_000_000;
    cc.keepalive_interval_ns = 30_000_000;
    ClusterClient::connect(cc, monotonic_ns).unwrap()
}

/// Polls `c` until `done` says so (bounded), handing it each event.
fn poll_until(c: &mut ClusterClient, mut done: impl FnMut(&ClientEvent<'_>) -> bool) {
    let start = Instant::now();
    let mut finished = false;
    while !finished {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out");
        c.poll(monotonic_ns(), |e| finished |= done(&e));
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn keep_alive_timeout_client_close_and_service_close() {
    let dir = tempfile::tempdir().unwrap();
    let members = free_ports(3);
    let nodes: Vec<RunningNode<Sessions>> = (0..3u32)
        .map(|id| {
            let c = Config::builder(id, members.clone(), dir.path().join(format!("node-{id}")))
                .cluster_id(45)
                .segment_mib(1)
                .session_timeout_ms(300)
                .timeouts_ms(20, 400, 100)
                .idle(IdleStrategy::parse("block").unwrap())
                .build()
                .unwrap();
            RunningNode::start(&c, Sessions::default()).unwrap()
        })
        .collect();
    let (mut alive, mut silent, mut leaving, mut closed_by_service) = (
        client(&members),
        client(&members),
        client(&members),
        client(&members),
    );
    for c in [
        &mut alive,
        &mut silent,
        &mut leaving,
        &mut closed_by_service,
    ] {
        c.offer(monotonic_ns(), b"hello").unwrap();
        poll_until(c, |e| matches!(e, ClientEvent::Applied { .. }));
    }

    // `leaving` closes its session; `closed_by_service` asks the service to close it.
    leaving.close();
    poll_until(&mut leaving, |e| {
        matches!(
            e,
            ClientEvent::SessionClosed {
                reason: CloseReason::ClientAction
            }
        )
    });
    closed_by_service
        .offer(monotonic_ns(), b"close me")
        .unwrap();
    poll_until(&mut closed_by_service, |e| {
        matches!(
            e,
            ClientEvent::SessionClosed {
                reason: CloseReason::ServiceAction
            }
        )
    });
    assert!(matches!(
        closed_by_service.offer(monotonic_ns(), b"more"),
        Err(ClientError::SessionClosed {
            reason: CloseReason::ServiceAction
        })
    ));

    // `silent` stops polling (no keep-alives); `alive` only polls. After well over the
    // timeout, `silent` hears it was closed and `alive` is still open.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        alive.poll(monotonic_ns(), |e| {
            assert!(!matches!(e, ClientEvent::SessionClosed { .. }), "{e:?}")
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    poll_until(&mut silent, |e| {
        matches!(
            e,
            ClientEvent::SessionClosed {
                reason: CloseReason::Timeout
            }
        )
    });
    alive.offer(monotonic_ns(), b"still here").unwrap();
    poll_until(&mut alive, |e| matches!(e, ClientEvent::Applied { .. }));

    // Every replica applied the same closes, once each, with their reasons.
    let expected = vec![
        (leaving.session_id(), CloseReason::ClientAction),
        (closed_by_service.session_id(), CloseReason::ServiceAction),
        (silent.session_id(), CloseReason::Timeout),
    ];
    // Followers apply the last frames when the commit reaches them: wait until every replica
    // has applied all six messages ("still here", the last, comes after every close).
    let wait = Instant::now();
    loop {
        let applied: Vec<u64> = (0..3)
            .map(|id| {
                CountersReader::open(&dir.path().join(format!("node-{id}")))
                    .unwrap()
                    .get(Counter::AppliedMessages)
            })
            .collect();
        if applied.iter().all(|&n| n == 6) {
            break;
        }
        assert!(wait.elapsed() < Duration::from_secs(10), "{applied:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let services: Vec<Sessions> = nodes
        .into_iter()
        .map(|n| n.stop().unwrap().service)
        .collect();
    for s in &services {
        assert_eq!(s.closes, expected);
        assert_eq!(s.messages, 6);
    }
}
