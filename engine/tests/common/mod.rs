//! Helpers shared by the integration tests that run real nodes.
#![allow(dead_code)]

pub mod members;
pub mod spoof;

use std::net::UdpSocket;

/// `n` free UDP ports on loopback, as "127.0.0.1:port" (bound, read, released).
pub fn free_ports(n: usize) -> Vec<String> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().to_string())
        .collect()
}

/// Member `id` of a cluster on `members`, its log in `dir/node-<id>`: shared threading, the
/// `block` idle strategy, 1 MiB segments, quick timeouts (20 ms heartbeat, 400 ms heartbeat
/// timeout, 100 ms election timeout).
pub fn shared_config(
    id: u32,
    members: &[String],
    dir: &std::path::Path,
    cluster_id: u32,
) -> raftline::config::Config {
    raftline::config::Config::builder(id, members.to_vec(), dir.join(format!("node-{id}")))
        .cluster_id(cluster_id)
        .threading(raftline::config::ThreadingMode::Shared)
        .segment_mib(1)
        .timeouts_ms(20, 400, 100)
        .idle(raftline::runtime::IdleStrategy::parse("block").unwrap())
        .build()
        .unwrap()
}
