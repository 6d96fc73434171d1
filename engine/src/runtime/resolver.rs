//! Resolving member names off the node's thread: a member whose name does not resolve yet is
//! retried in the background, and the node hears each address once it resolves. It never holds
//! up the start of a quorum.

use super::*;

pub(super) fn resolve(name: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    name.to_socket_addrs().ok().and_then(|mut a| a.next())
}

/// Resolves member names off the node's thread (a lookup can block for seconds): every second
/// while some are unknown, every ten seconds after, reporting new and changed addresses.
pub(super) fn spawn_resolver(
    names: Vec<String>,
    mut known: Vec<Option<SocketAddr>>,
    own: u32,
    tx: std::sync::mpsc::Sender<(u32, SocketAddr)>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("raftline-resolve-{own}"))
        .spawn(move || loop {
            let pause_ms = if known.iter().any(Option::is_none) {
                1_000
            } else {
                10_000
            };
            for _ in 0..pause_ms / 50 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            for (i, name) in names.iter().enumerate() {
                if i as u32 == own {
                    continue;
                }
                let Some(addr) = resolve(name) else { continue };
                if known[i] == Some(addr) {
                    continue;
                }
                if let Some(j) = known.iter().position(|k| *k == Some(addr)) {
                    // Taking it would make one address two members: keep the old one.
                    tracing::warn!(
                        "node {own}: member {i} ({name}) resolved to {addr}, the address of member {j} ({}): ignored; each member needs its own address",
                        names[j]
                    );
                    continue;
                }
                match known[i] {
                    None => {
                        tracing::info!("node {own}: member {i} ({name}) resolved to {addr}")
                    }
                    Some(old) => tracing::info!(
                        "node {own}: member {i} ({name}) moved from {old} to {addr}"
                    ),
                }
                known[i] = Some(addr);
                if tx.send((i as u32, addr)).is_err() {
                    return;
                }
            }
        })
}
