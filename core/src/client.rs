//! The client's protocol, sans IO: a session with the cluster, messages offered with sequence
//! numbers, acknowledgements, resends across failover and redirects, keep-alives. It owns no
//! socket and reads no clock: datagrams go through the [`Datagrams`] seam and time is the
//! caller's `now`, so the simulator drives exactly the code the OS-facing `ClusterClient` ships.
//!
//! Exactly-once: every message carries (session, sequence). The client keeps each message
//! until the cluster acknowledges it as applied and resends it (to the new leader after a
//! failover); the cluster drops duplicates at apply time from state derived from the log, so
//! a resent message is applied once on every replica. The number of unacknowledged messages is
//! bounded: a full window is back-pressure (`ClientError::BackPressure`), never unbounded
//! buffering. A resend always carries the sequence the message was first offered with.

use std::collections::BTreeMap;

use crate::codec::message::{
    ClientConnect, ClientEvent as EventBody, ClientEventKind, CloseReason, SessionClose,
    SessionKeepAlive, SessionMessageHeader,
};
use crate::codec::{FrameMeta, Frames, Message};
use crate::io::Datagrams;

/// The protocol's settings (the OS-facing client adds addresses and the connect deadline).
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Members of the cluster; datagram endpoints `0..member_count` of the seam.
    pub member_count: u32,
    /// Unacknowledged messages allowed before `offer` refuses.
    pub max_outstanding: usize,
    /// Resend what is not acknowledged after this long.
    pub resend_timeout_ns: u64,
    /// Until a session is open, ask the next member after this long without an answer.
    pub connect_retry_ns: u64,
    /// Send a keep-alive when nothing else was sent for this long.
    pub keepalive_interval_ns: u64,
    /// What the cluster's authenticator checks at connect (empty when it has none).
    pub credential: Vec<u8>,
}

impl ClientSettings {
    pub fn new(member_count: u32) -> Self {
        Self {
            member_count,
            max_outstanding: 1024,
            resend_timeout_ns: 200_000_000,
            connect_retry_ns: 100_000_000,
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

/// Deliberately broken client rules, to prove the simulator's checkers have teeth.
#[cfg(any(test, feature = "sim"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenClientRule {
    /// A resend goes out under a new sequence number (so the cluster cannot tell it from a new
    /// message and applies it twice).
    ResendWithNewSequence,
}

/// One client session over any [`Datagrams`]. See the module docs.
pub struct ClientCore<N: Datagrams> {
    settings: ClientSettings,
    net: N,
    session_id: u64,
    target: u32,
    opened: bool,
    /// When a connect was last sent while no session was open (`None`: never).
    last_connect_ns: Option<u64>,
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
    #[cfg(any(test, feature = "sim"))]
    broken_rule: Option<BrokenClientRule>,
}

impl<N: Datagrams> std::fmt::Debug for ClientCore<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCore")
            .field("session_id", &self.session_id)
            .field("target", &self.target)
            .field("opened", &self.opened)
            .field("next_sequence", &self.next_sequence)
            .field("outstanding", &self.unacked.keys().collect::<Vec<_>>())
            .field("closed", &self.closed)
            .field("refused", &self.refused)
            .field("last_connect_ns", &self.last_connect_ns)
            .finish()
    }
}

impl<N: Datagrams> ClientCore<N> {
    /// A client of session `session_id` (chosen by the caller, unique in the cluster) that
    /// talks through `net`. Nothing is sent until the first [`ClientCore::poll`].
    pub fn new(settings: ClientSettings, session_id: u64, net: N) -> Self {
        Self {
            net,
            session_id,
            target: 0,
            opened: false,
            last_connect_ns: None,
            next_sequence: 1,
            unacked: BTreeMap::new(),
            send_buf: vec![0u8; 70_000],
            recv_buf: vec![0u8; 70_000],
            redirects: 0,
            resends: 0,
            last_progress_ns: 0,
            resend_interval_ns: settings.resend_timeout_ns,
            last_sent_ns: 0,
            closed: None,
            refused: None,
            rebound_ns: 0,
            rebinding: false,
            #[cfg(any(test, feature = "sim"))]
            broken_rule: None,
            settings,
        }
    }

    /// Breaks a rule on purpose (teeth tests).
    #[cfg(any(test, feature = "sim"))]
    pub fn break_rule(&mut self, rule: BrokenClientRule) {
        self.broken_rule = Some(rule);
    }

    pub fn net(&self) -> &N {
        &self.net
    }
    pub fn net_mut(&mut self) -> &mut N {
        &mut self.net
    }
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }
    pub fn session_id(&self) -> u64 {
        self.session_id
    }
    /// Whether a member has opened the session.
    pub fn is_open(&self) -> bool {
        self.opened
    }
    /// Takes the refusal (credential or session limit) that ended the connect, if any.
    pub fn take_refusal(&mut self) -> Option<ClientError> {
        self.refused.take()
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

    /// Encodes one frame of the session and queues it for the target.
    fn send_frame(&mut self, message: &Message<'_>) {
        let meta = FrameMeta {
            session_id: self.session_id,
            ..FrameMeta::default()
        };
        let len = message.encode(meta, &mut self.send_buf);
        self.net.send(self.target, &self.send_buf[..len]);
    }

    /// Sends one control frame of this session to the target and flushes.
    fn send_control(&mut self, m: &Message<'_>) {
        self.send_frame(m);
        self.net.flush();
    }

    fn send_connect(&mut self) {
        let credential = std::mem::take(&mut self.settings.credential);
        self.send_control(&Message::ClientConnect {
            connect: ClientConnect {
                correlation_id: self.session_id,
                session_id: self.session_id,
            },
            credential: &credential,
        });
        self.settings.credential = credential;
    }

    fn send_message(&mut self, sequence: u64) {
        let Some(p) = self.unacked.get(&sequence) else {
            return;
        };
        let message = Message::SessionMessage {
            header: SessionMessageHeader { sequence },
            payload: &p.payload,
        };
        let meta = FrameMeta {
            session_id: self.session_id,
            ..FrameMeta::default()
        };
        let len = message.encode(meta, &mut self.send_buf);
        self.net.send(self.target, &self.send_buf[..len]);
    }

    /// The largest payload `offer` accepts.
    pub fn max_payload(&self) -> usize {
        self.net
            .max_payload()
            .saturating_sub(crate::codec::HEADER_LEN + SessionMessageHeader::LEN + 8)
    }

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

    /// Sends `payload` as the session's next message; returns its sequence number.
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
        if self.unacked.len() >= self.settings.max_outstanding {
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
        self.net.flush();
        Ok(sequence)
    }

    /// Resends the oldest unacknowledged messages, at most `RESEND_BATCH` of them: the cluster
    /// applies a session's messages in sequence, so anything past the first gap waits for it
    /// anyway, and resending everything after a long failover would flood the new leader.
    fn resend_all(&mut self, now: u64) {
        self.last_sent_ns = now;
        let sequences: Vec<u64> = self.unacked.keys().take(RESEND_BATCH).copied().collect();
        for s in sequences {
            #[cfg(any(test, feature = "sim"))]
            let s = self.renumber_for_broken_rule(s);
            self.send_message(s);
            if let Some(p) = self.unacked.get_mut(&s) {
                p.sent_ns = now;
            }
            self.resends += 1;
        }
    }

    /// The injected bug: the resend goes out, and waits, under the next new sequence number.
    #[cfg(any(test, feature = "sim"))]
    fn renumber_for_broken_rule(&mut self, sequence: u64) -> u64 {
        if self.broken_rule != Some(BrokenClientRule::ResendWithNewSequence) {
            return sequence;
        }
        let Some(p) = self.unacked.remove(&sequence) else {
            return sequence;
        };
        let renumbered = self.next_sequence;
        self.next_sequence += 1;
        self.unacked.insert(renumbered, p);
        renumbered
    }

    /// Until a session is open: (re)send the connect, to the next member each time one
    /// stays silent for `connect_retry_ns`.
    fn connect_step(&mut self, now: u64) {
        if self.opened || self.closed.is_some() || self.refused.is_some() {
            return;
        }
        match self.last_connect_ns {
            Some(t) if now.saturating_sub(t) < self.settings.connect_retry_ns => return,
            Some(_) => self.target = (self.target + 1) % self.settings.member_count,
            None => {}
        }
        self.last_connect_ns = Some(now);
        self.send_connect();
    }

    /// Receives what the cluster sent, hands it to `handler`, and resends what waited too
    /// long. Returns the number of events.
    pub fn poll(&mut self, now: u64, mut handler: impl FnMut(ClientEvent<'_>)) -> usize {
        self.connect_step(now);
        let mut events = 0;
        let mut recv_buf = std::mem::take(&mut self.recv_buf);
        while let Some((from, len)) = self.net.receive(&mut recv_buf) {
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
                                    > self.settings.resend_timeout_ns / 8 =>
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
                            let n = u64::from(self.settings.member_count);
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
            && now.saturating_sub(self.last_sent_ns) > self.settings.keepalive_interval_ns
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
                    (self.resend_interval_ns * 2).min(2 * self.settings.resend_timeout_ns);
                if now.saturating_sub(self.last_progress_ns) > 3 * self.settings.resend_timeout_ns {
                    self.target = (self.target + 1) % self.settings.member_count;
                    self.last_progress_ns = now;
                }
                // The session may have been opened on a leader that since lost its log tail.
                self.send_connect();
                if now.saturating_sub(self.last_progress_ns) > self.settings.resend_timeout_ns {
                    // Silence from the target (a dead leader?): ask every member. Followers
                    // that know the new leader redirect to it; the new leader answers itself.
                    let target = self.target;
                    for m in 0..self.settings.member_count {
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
        self.net.flush();
        events
    }
}
