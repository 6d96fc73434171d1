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
