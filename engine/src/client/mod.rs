//! The cluster client: connect, find the leader, offer messages with sequence numbers, poll
//! egress, and resend across failover.
//!
//! Exactly-once: every message carries (session, sequence). The client keeps each message
//! until the cluster acknowledges it as applied and resends it (to the new leader after a
//! failover); the cluster drops duplicates at apply time from state derived from the log, so
//! a resent message is applied once on every replica. The number of unacknowledged messages is
//! bounded: a full window is back-pressure (`ClientError::BackPressure`), never unbounded
//! buffering.

pub mod admin;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::codec::message::{
    ClientConnect, ClientEvent as EventBody, ClientEventKind, CloseReason, SessionClose,
    SessionKeepAlive, SessionMessageHeader,
};
use crate::codec::{FrameMeta, Frames, Message};
use crate::io::Datagrams;
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

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cluster unreachable: no member opened session {session_id} within {waited_ms} ms; check the member addresses and that a majority is up")]
    Unreachable { session_id: u64, waited_ms: u64 },
    #[error("{outstanding} messages are not yet acknowledged (max_outstanding); poll and retry")]
    BackPressure { outstanding: usize },
    #[error("message of {len} bytes exceeds the largest the client sends ({max}); split it or raise max_datagram_bytes")]
    TooLarge { len: usize, max: usize },
    #[error("session closed by the cluster ({reason:?}); connect a new client to go on")]
    SessionClosed { reason: CloseReason },
    #[error("member {member} refused the client credential: set ClientConfig::credential to the cluster's client token ([access] client_token_file)")]
    Unauthenticated { member: u32 },
    #[error("member {member} refused a new session: the cluster holds as many as it allows (session.max_sessions, session.max_sessions_per_source)")]
    SessionLimit { member: u32 },
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// What `poll` hands the application.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    /// Message `sequence` was applied by the cluster (exactly once).
    Applied { sequence: u64 },
    /// A payload the service sent to this session.
    Message { payload: &'a [u8] },
    /// The client now talks to `leader`.
    LeaderChanged { leader: u32 },
    /// The session was closed: by this client, by the service, or because the cluster had not
    /// heard from it within the session timeout. Nothing more is applied for it.
    SessionClosed { reason: CloseReason },
    /// Message `sequence` is longer than the cluster's `session.max_message_bytes`: it was
    /// refused, is not in the log, and is not resent.
    TooLarge { sequence: u64 },
}

/// Most messages resent in one round.
const RESEND_BATCH: usize = 128;

struct Pending {
    payload: Vec<u8>,
    sent_ns: u64,
}

/// See the module docs.
pub struct ClusterClient {
    config: ClientConfig,
    transport: UdpTransport,
    session_id: u64,
    target: u32,
    opened: bool,
    next_sequence: u64,
    unacked: BTreeMap<u64, Pending>,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    redirects: u64,
    resends: u64,
    /// Last time the cluster acknowledged something.
    last_progress_ns: u64,
    /// Current resend interval: doubles (up to 2x) while resends go unanswered, so a long
    /// failover does not turn into a resend storm; back to the base on progress.
    resend_interval_ns: u64,
    /// When the client last sent anything (keep-alives fill the silences).
    last_sent_ns: u64,
    closed: Option<CloseReason>,
    /// The cluster refused the credential or a new session: nothing more is sent.
    refused: Option<ClientError>,
    /// When the client last connected again because the leader said it was not bound.
    rebound_ns: u64,
    /// A re-bind is under way: what waits is resent once the leader confirms it.
    rebinding: bool,
}

/// Encodes one frame of the session and queues it for member `to`.
fn send_frame(
    transport: &mut UdpTransport,
    buf: &mut [u8],
    to: u32,
    session_id: u64,
    message: &Message<'_>,
) {
    let len = message.encode(
        FrameMeta {
            session_id,
            ..FrameMeta::default()
        },
        buf,
    );
    transport.send(to, &buf[..len]);
}

fn random_session_id() -> u64 {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    x ^= (std::process::id() as u64) << 32;
    let mut rng = crate::rng::Rng::new(x);
    rng.next_u64() | 1
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
        let mut client = Self {
            transport,
            session_id: random_session_id(),
            target: 0,
            opened: false,
            next_sequence: 1,
            unacked: BTreeMap::new(),
            send_buf: vec![0u8; 70_000],
            recv_buf: vec![0u8; 70_000],
            redirects: 0,
            resends: 0,
            last_progress_ns: 0,
            resend_interval_ns: config.resend_timeout_ns,
            last_sent_ns: 0,
            closed: None,
            refused: None,
            rebound_ns: 0,
            rebinding: false,
            config,
        };
        let start = now();
        let mut last_try = 0u64;
        while !client.opened {
            if let Some(e) = client.refused.take() {
                return Err(e);
            }
            let t = now();
            if t.saturating_sub(start) > client.config.connect_timeout_ns {
                return Err(ClientError::Unreachable {
                    session_id: client.session_id,
                    waited_ms: (t - start) / 1_000_000,
                });
            }
            if last_try == 0 || t - last_try > 100_000_000 {
                if last_try != 0 {
                    client.target = (client.target + 1) % client.config.members.len() as u32;
                }
                last_try = t.max(1);
                client.send_connect();
            }
            client.poll(t, |_| {});
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(client)
    }

    /// The client's socket, to block on until replies arrive.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.transport.raw_fd()
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }
    pub fn leader(&self) -> u32 {
        self.target
    }
    /// The sequence the next `offer` will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }
    pub fn outstanding(&self) -> usize {
        self.unacked.len()
    }
    pub fn resends(&self) -> u64 {
        self.resends
    }
    pub fn redirects(&self) -> u64 {
        self.redirects
    }

    /// Sends one control frame of this session to the target and flushes.
    fn send_control(&mut self, m: &Message<'_>) {
        send_frame(
            &mut self.transport,
            &mut self.send_buf,
            self.target,
            self.session_id,
            m,
        );
        self.transport.flush();
    }

    fn send_connect(&mut self) {
        let credential = std::mem::take(&mut self.config.credential);
        self.send_control(&Message::ClientConnect {
            connect: ClientConnect {
                correlation_id: self.session_id,
                session_id: self.session_id,
            },
            credential: &credential,
        });
        self.config.credential = credential;
    }

    fn send_message(&mut self, sequence: u64) {
        let Some(p) = self.unacked.get(&sequence) else {
            return;
        };
        let m = Message::SessionMessage {
            header: SessionMessageHeader { sequence },
            payload: &p.payload,
        };
        send_frame(
            &mut self.transport,
            &mut self.send_buf,
            self.target,
            self.session_id,
            &m,
        );
    }

    /// The largest payload `offer` accepts.
    pub fn max_payload(&self) -> usize {
        self.transport.max_payload() - crate::codec::HEADER_LEN - SessionMessageHeader::LEN - 8
    }

    /// Sends `payload` as the session's next message; returns its sequence number.
    /// Asks the cluster to close the session (the service hears `ClientAction`); the client
    /// learns it is done from [`ClientEvent::SessionClosed`].
    pub fn close(&mut self) {
        self.send_control(&Message::SessionClose(SessionClose {
            reason: CloseReason::ClientAction as u8,
        }));
    }

    /// Why the session closed, once it has.
    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    pub fn offer(&mut self, now: u64, payload: &[u8]) -> Result<u64, ClientError> {
        if let Some(reason) = self.closed {
            return Err(ClientError::SessionClosed { reason });
        }
        match self.refused {
            Some(ClientError::Unauthenticated { member }) => {
                return Err(ClientError::Unauthenticated { member })
            }
            Some(ClientError::SessionLimit { member }) => {
                return Err(ClientError::SessionLimit { member })
            }
            _ => {}
        }
        if payload.len() > self.max_payload() {
            return Err(ClientError::TooLarge {
                len: payload.len(),
                max: self.max_payload(),
            });
        }
        if self.unacked.len() >= self.config.max_outstanding {
            return Err(ClientError::BackPressure {
                outstanding: self.unacked.len(),
            });
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.unacked.insert(
            sequence,
            Pending {
                payload: payload.to_vec(),
                sent_ns: now,
            },
        );
        self.send_message(sequence);
        self.last_sent_ns = now;
        self.transport.flush();
        Ok(sequence)
    }

    /// Resends the oldest unacknowledged messages, at most `RESEND_BATCH` of them: the cluster
    /// applies a session's messages in sequence, so anything past the first gap waits for it
    /// anyway, and resending everything after a long failover would flood the new leader.
    fn resend_all(&mut self, now: u64) {
        self.last_sent_ns = now;
        let sequences: Vec<u64> = self.unacked.keys().take(RESEND_BATCH).copied().collect();
        for s in sequences {
            self.send_message(s);
            if let Some(p) = self.unacked.get_mut(&s) {
                p.sent_ns = now;
            }
            self.resends += 1;
        }
    }

    /// Receives what the cluster sent, hands it to `handler`, and resends what waited too
    /// long. Returns the number of events.
    pub fn poll(&mut self, now: u64, mut handler: impl FnMut(ClientEvent<'_>)) -> usize {
        let mut events = 0;
        let mut recv_buf = std::mem::take(&mut self.recv_buf);
        while let Some((from, len)) = self.transport.receive(&mut recv_buf) {
            for (_, frame) in Frames::new(&recv_buf[..len]).map_while(Result::ok) {
                match Message::decode(&frame) {
                    Ok(Message::ClientEvent(EventBody {
                        session_id,
                        value,
                        kind,
                    })) if session_id == self.session_id => match ClientEventKind::from_u8(kind) {
                        Some(ClientEventKind::Opened) => {
                            let moved = self.opened && from != self.target;
                            let rebound = std::mem::take(&mut self.rebinding) && self.opened;
                            self.opened = true;
                            self.target = from;
                            self.last_progress_ns = now;
                            if moved {
                                // A new leader answered a probe: what waits goes there now.
                                events += 1;
                                handler(ClientEvent::LeaderChanged { leader: from });
                            }
                            if moved || rebound {
                                self.resend_all(now);
                            }
                        }
                        Some(ClientEventKind::TooLarge) => {
                            let waiting = self.unacked.remove(&value).is_some();
                            if waiting {
                                events += 1;
                                handler(ClientEvent::TooLarge { sequence: value });
                            }
                        }
                        Some(ClientEventKind::Unauthenticated) => {
                            self.refused = Some(ClientError::Unauthenticated { member: from });
                        }
                        // A refused new session; an open one is never refused a re-bind.
                        Some(ClientEventKind::SessionLimit) if !self.opened => {
                            self.refused = Some(ClientError::SessionLimit { member: from });
                        }
                        Some(ClientEventKind::SessionLimit) => {}
                        // The leader does not know this source for the session (it moved, or
                        // leadership did): connect again, at most once per interval however
                        // many messages were in flight.
                        Some(ClientEventKind::Unbound)
                            if from == self.target
                                && now.saturating_sub(self.rebound_ns)
                                    > self.config.resend_timeout_ns / 8 =>
                        {
                            self.rebound_ns = now;
                            self.rebinding = true;
                            self.send_connect();
                        }
                        Some(ClientEventKind::Unbound) => {}
                        Some(ClientEventKind::Applied) => {
                            self.last_progress_ns = now;
                            if self.unacked.remove(&value).is_some() {
                                events += 1;
                                handler(ClientEvent::Applied { sequence: value });
                            }
                        }
                        Some(ClientEventKind::Redirect) => {
                            self.redirects += 1;
                            // Only a named leader moves the client; "unknown" (an election in
                            // progress) is left to the resend timer, or every redirect of a
                            // batch would rotate the target and resend the batch again.
                            let n = self.config.members.len() as u64;
                            if value < n && value as u32 != self.target {
                                let leader = value as u32;
                                self.target = leader;
                                events += 1;
                                handler(ClientEvent::LeaderChanged { leader });
                                self.send_connect();
                                if self.opened {
                                    self.resend_all(now);
                                }
                            }
                        }
                        Some(ClientEventKind::Closed) => {
                            let reason = CloseReason::from_u8(value as u8)
                                .unwrap_or(CloseReason::ServiceAction);
                            if self.closed.is_none() {
                                self.closed = Some(reason);
                                // Nothing more will be applied: what waits is dropped.
                                self.unacked.clear();
                                events += 1;
                                handler(ClientEvent::SessionClosed { reason });
                            }
                        }
                        None => {}
                    },
                    Ok(Message::EgressMessage { payload })
                        if frame.meta.session_id == self.session_id =>
                    {
                        events += 1;
                        handler(ClientEvent::Message { payload });
                    }
                    _ => {}
                }
            }
        }
        self.recv_buf = recv_buf;
        // A quiet client tells the cluster it is alive.
        if self.opened
            && self.closed.is_none()
            && now.saturating_sub(self.last_sent_ns) > self.config.keepalive_interval_ns
        {
            self.last_sent_ns = now;
            self.send_control(&Message::SessionKeepAlive(SessionKeepAlive {
                session_id: self.session_id,
            }));
        }
        // Resend what waited too long; after repeated silence, try the next member.
        if let Some((_, oldest)) = self.unacked.iter().next() {
            if now.saturating_sub(oldest.sent_ns) > self.resend_interval_ns {
                self.resend_interval_ns =
                    (self.resend_interval_ns * 2).min(2 * self.config.resend_timeout_ns);
                if now.saturating_sub(self.last_progress_ns) > 3 * self.config.resend_timeout_ns {
                    self.target = (self.target + 1) % self.config.members.len() as u32;
                    self.last_progress_ns = now;
                }
                // The session may have been opened on a leader that since lost its log tail.
                self.send_connect();
                if now.saturating_sub(self.last_progress_ns) > self.config.resend_timeout_ns {
                    // Silence from the target (a dead leader?): ask every member. Followers
                    // that know the new leader redirect to it; the new leader answers itself.
                    let target = self.target;
                    for m in 0..self.config.members.len() as u32 {
                        if m != target {
                            self.target = m;
                            self.send_connect();
                        }
                    }
                    self.target = target;
                }
                self.resend_all(now);
            }
        }
        self.transport.flush();
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::message::{ClientEventKind, SessionMessageHeader};
    use crate::codec::FrameType;

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
