//! The cluster client over UDP: binds a socket, opens a session (waiting for it), and hands
//! everything else to the sans-IO [`ClientCore`] (`raftline_core::client`), the code the
//! simulator drives under faults: offers with sequence numbers, acknowledgements, resends
//! across failover and redirects, keep-alives, and bounded outstanding messages.

pub mod admin;

use std::net::SocketAddr;

#[cfg(any(test, feature = "sim"))]
pub use raftline_core::client::BrokenClientRule;
pub use raftline_core::client::{ClientCore, ClientError, ClientEvent, ClientSettings};

use crate::sys::UdpTransport;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub members: Vec<SocketAddr>,
    pub cluster_id: u32,
    /// Unacknowledged messages allowed before `offer` refuses.
    pub max_outstanding: usize,
    /// Resend what is not acknowledged after this long.
    pub resend_timeout_ns: u64,
    /// Give up connecting after this long.
    pub connect_timeout_ns: u64,
    pub max_datagram_bytes: usize,
    /// Send a keep-alive when nothing else was sent for this long (keep it well under the
    /// cluster's `[session] timeout_ms`).
    pub keepalive_interval_ns: u64,
    /// What the cluster's authenticator checks at connect (the client token; empty when the
    /// cluster has none). Sent with every connect, so also when the client re-binds its
    /// session after moving or after a failover.
    pub credential: Vec<u8>,
}

impl ClientConfig {
    pub fn new(members: Vec<SocketAddr>, cluster_id: u32) -> Self {
        Self {
            members,
            cluster_id,
            max_outstanding: 1024,
            resend_timeout_ns: 200_000_000,
            connect_timeout_ns: 10_000_000_000,
            max_datagram_bytes: crate::sys::SAFE_MTU_DATAGRAM,
            keepalive_interval_ns: 1_000_000_000,
            credential: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// The protocol's part of these settings.
    pub fn settings(&self) -> ClientSettings {
        ClientSettings {
            member_count: self.members.len() as u32,
            max_outstanding: self.max_outstanding,
            resend_timeout_ns: self.resend_timeout_ns,
            connect_retry_ns: 100_000_000,
            keepalive_interval_ns: self.keepalive_interval_ns,
            credential: self.credential.clone(),
        }
    }
}

/// A session id no other client picked: the wall clock and the process id, mixed.
fn random_session_id() -> u64 {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    x ^= (std::process::id() as u64) << 32;
    let mut rng = crate::rng::Rng::new(x);
    rng.next_u64() | 1
}

/// See the module docs.
pub struct ClusterClient {
    core: ClientCore<UdpTransport>,
}

impl ClusterClient {
    /// Binds a local socket and opens a session, waiting up to `connect_timeout_ns`.
    /// `now` is the caller's monotonic clock in nanoseconds.
    pub fn connect(config: ClientConfig, now: impl Fn() -> u64) -> Result<Self, ClientError> {
        let bind: SocketAddr = if config.members.first().is_some_and(|a| a.is_ipv6()) {
            "[::]:0".parse().expect("valid")
        } else {
            "0.0.0.0:0".parse().expect("valid")
        };
        let transport = UdpTransport::bind(
            bind,
            config.members.clone(),
            config.cluster_id,
            config.max_datagram_bytes,
        )?;
        let mut core = ClientCore::new(config.settings(), random_session_id(), transport);
        let start = now();
        while !core.is_open() {
            if let Some(e) = core.take_refusal() {
                return Err(e);
            }
            let t = now();
            if t.saturating_sub(start) > config.connect_timeout_ns {
                return Err(ClientError::Unreachable {
                    session_id: core.session_id(),
                    waited_ms: (t - start) / 1_000_000,
                });
            }
            core.poll(t.max(1), |_| {});
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(Self { core })
    }

    /// The client's socket, to block on until replies arrive.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.core.net().raw_fd()
    }

    pub fn session_id(&self) -> u64 {
        self.core.session_id()
    }
    pub fn leader(&self) -> u32 {
        self.core.leader()
    }
    /// The sequence the next `offer` will carry.
    pub fn next_sequence(&self) -> u64 {
        self.core.next_sequence()
    }
    pub fn outstanding(&self) -> usize {
        self.core.outstanding()
    }
    pub fn resends(&self) -> u64 {
        self.core.resends()
    }
    pub fn redirects(&self) -> u64 {
        self.core.redirects()
    }
    /// The largest payload `offer` accepts.
    pub fn max_payload(&self) -> usize {
        self.core.max_payload()
    }
    /// Asks the cluster to close the session; see [`ClientCore::close`].
    pub fn close(&mut self) {
        self.core.close()
    }
    /// Why the session closed, once it has.
    pub fn closed(&self) -> Option<raftline_core::codec::CloseReason> {
        self.core.closed()
    }
    /// Sends `payload` as the session's next message; returns its sequence number.
    pub fn offer(&mut self, now: u64, payload: &[u8]) -> Result<u64, ClientError> {
        self.core.offer(now, payload)
    }
    /// Receives what the cluster sent, hands it to `handler`, and resends what waited too
    /// long. Returns the number of events.
    pub fn poll(&mut self, now: u64, handler: impl FnMut(ClientEvent<'_>)) -> usize {
        self.core.poll(now, handler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::message::{ClientEvent as EventBody, ClientEventKind, SessionMessageHeader};
    use crate::codec::{FrameMeta, FrameType, Frames, Message};
    use crate::io::Datagrams;

    /// A stand-in member: its transport, and what it received (message kinds by frame type).
    struct FakeMember {
        transport: UdpTransport,
        buf: Vec<u8>,
    }

    impl FakeMember {
        /// Frames received so far: (endpoint, frame type, session, sequence if a message).
        fn receive(&mut self) -> Vec<(u32, u16, u64, Option<u64>)> {
            let mut out = Vec::new();
            while let Some((from, len)) = self.transport.receive(&mut self.buf) {
                let bytes = self.buf[..len].to_vec();
                for (_, frame) in Frames::new(&bytes).map_while(Result::ok) {
                    let sequence = match Message::decode(&frame) {
                        Ok(Message::SessionMessage {
                            header: SessionMessageHeader { sequence },
                            ..
                        }) => Some(sequence),
                        _ => None,
                    };
                    out.push((from, frame.meta.frame_type, frame.meta.session_id, sequence));
                }
            }
            out
        }

        fn answer_opened(&mut self, to: u32, session_id: u64) {
            let event = Message::ClientEvent(EventBody {
                session_id,
                value: session_id,
                kind: ClientEventKind::Opened as u8,
            });
            let mut buf = vec![0u8; 256];
            let len = event.encode(
                FrameMeta {
                    session_id,
                    ..FrameMeta::default()
                },
                &mut buf,
            );
            self.transport.send(to, &buf[..len]);
            self.transport.flush();
        }
    }

    fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
        let start = std::time::Instant::now();
        loop {
            if let Some(t) = f() {
                return t;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "timed out"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_silent_leader_makes_the_client_ask_every_member_and_move_to_the_one_that_answers() {
        let sockets: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        drop(sockets);
        let mut members: Vec<FakeMember> = addrs
            .iter()
            .map(|&a| FakeMember {
                transport: UdpTransport::bind(a, addrs.clone(), 9, 1472).unwrap(),
                buf: vec![0u8; 70_000],
            })
            .collect();
        let mut config = ClientConfig::new(addrs.clone(), 9);
        config.resend_timeout_ns = 5_000_000;
        // Member 0 opens the session, then goes silent (it died).
        let opener = std::thread::spawn({
            let mut m0 = members.remove(0);
            move || {
                let (from, session) = wait_for(|| {
                    m0.receive()
                        .into_iter()
                        .find(|f| f.1 == FrameType::ClientConnect as u16)
                        .map(|f| (f.0, f.2))
                });
                m0.answer_opened(from, session);
                m0
            }
        });
        let mut client = ClusterClient::connect(config, crate::runtime::monotonic_ns).unwrap();
        let mut m0 = opener.join().unwrap();
        // The client's clock is the caller's: drive it by hand, so what happens after how long
        // is exact. One resend timeout of silence (not yet the three after which the client
        // would move on to the next member by itself): every other member is asked at once.
        let t = crate::runtime::monotonic_ns();
        let sequence = client.offer(t, b"order").unwrap();
        client.poll(t + 6_000_000, |_| {});
        assert_eq!(client.leader(), 0, "still aimed at member 0");
        let connect = FrameType::ClientConnect as u16;
        let probe = |m: &mut FakeMember| {
            wait_for(|| {
                m.receive()
                    .into_iter()
                    .find(|f| f.1 == connect)
                    .map(|f| (f.0, f.2))
            })
        };
        let (_, session_1) = probe(&mut members[0]);
        let (at_2, session_2) = probe(&mut members[1]);
        assert_eq!(
            (session_1, session_2),
            (client.session_id(), client.session_id())
        );
        // Member 2, the new leader, answers: the client moves there and resends at once.
        members[1].answer_opened(at_2, session_2);
        let mut moved = None;
        let resent = wait_for(|| {
            client.poll(t + 7_000_000, |e| {
                if let ClientEvent::LeaderChanged { leader } = e {
                    moved = Some(leader);
                }
            });
            members[1].receive().into_iter().find_map(|f| f.3)
        });
        assert_eq!(
            moved,
            Some(2),
            "the client moved to the member that answered"
        );
        assert_eq!(resent, sequence, "and resent what waited there");
        assert!(m0
            .receive()
            .iter()
            .all(|f| f.1 != FrameType::ClientEvent as u16));
    }
}
