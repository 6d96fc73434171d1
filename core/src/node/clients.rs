//! The node's door to clients and operators: session connects and their authentication, the
//! binding of each session to the source it connected from, the limits on sessions, message
//! length and what a stranger can make the node remember, and the admin channel.
//!
//! What the node remembers about clients is bounded: a session is remembered only once its
//! connect was accepted (authenticated, within the limits) and appended; keep-alives and
//! other frames for sessions that are not open, or from a source the session is not bound
//! to, are answered (`Unbound`, so a real client connects again) and forgotten.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{ApplyStage, Node, OfferError};
use crate::codec::message::{
    AdminCommand, AdminRequest, AdminResponse, AdminStatus, ClientConnect, ClientEvent,
    ClientEventKind, CloseReason,
};
use crate::codec::{self, FrameMeta, Message};
use crate::consensus::MemberId;
use crate::io::{Datagrams, Disk};

/// Limits on what clients can make a node hold. Every limit hit is a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// The longest message payload a client may offer, in bytes; a longer one is refused
    /// with `TooLarge` and never appended. Never above what one log frame holds.
    pub max_message_bytes: usize,
    /// Sessions open or being opened, in all.
    pub max_sessions: usize,
    /// Sessions bound to one client source (address and port).
    pub max_sessions_per_source: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: usize::MAX,
            max_sessions: 10_000,
            max_sessions_per_source: 64,
        }
    }
}

/// The sessions a node knows of, and which source each is bound to.
#[derive(Default)]
pub(super) struct Sessions {
    /// Open sessions (from the apply stage at start, then its egress): the same on every
    /// replica once it has applied the same log.
    pub open: BTreeSet<u64>,
    /// Leader: sessions whose open is appended and not yet applied, with its log position.
    pub opening: HashMap<u64, u64>,
    /// Leader: the source each session's client connected from (where its egress goes, and
    /// the only source its frames are taken from).
    pub bound: HashMap<u64, u32>,
    per_source: HashMap<u32, usize>,
    /// Leader: when each open session's client was last heard from.
    pub last_heard: HashMap<u64, u64>,
    /// Leader: sessions whose timeout close is in the log.
    pub closing: HashSet<u64>,
}

impl Sessions {
    /// Whether the session is open, or its open is in this leader's log.
    pub fn known(&self, session: u64) -> bool {
        self.open.contains(&session) || self.opening.contains_key(&session)
    }

    /// Whether the session's frames from `source` are taken.
    pub fn bound_to(&self, session: u64, source: u32) -> bool {
        self.known(session) && self.bound.get(&session) == Some(&source)
    }

    pub fn sessions_of(&self, source: u32) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    pub fn bind(&mut self, session: u64, source: u32) {
        if let Some(old) = self.bound.insert(session, source) {
            self.release(old);
        }
        *self.per_source.entry(source).or_insert(0) += 1;
    }

    fn release(&mut self, source: u32) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    pub fn opened(&mut self, session: u64, now: u64) {
        self.opening.remove(&session);
        self.open.insert(session);
        self.last_heard.entry(session).or_insert(now);
    }

    pub fn closed(&mut self, session: u64) {
        self.open.remove(&session);
        self.opening.remove(&session);
        self.last_heard.remove(&session);
        self.closing.remove(&session);
        if let Some(source) = self.bound.remove(&session) {
            self.release(source);
        }
    }

    /// Forgets opens that will never be applied (appended by this member as leader, then cut
    /// from its log when leadership moved on) and the bindings of sessions no longer known.
    pub fn prune(&mut self, applied: u64) {
        let open = &self.open;
        self.opening
            .retain(|s, position| *position >= applied && !open.contains(s));
        self.forget_unknown_bindings();
    }

    /// Drops the bindings of sessions neither open nor opening, and recounts per source.
    fn forget_unknown_bindings(&mut self) {
        let (open, opening) = (&self.open, &self.opening);
        self.bound
            .retain(|s, _| open.contains(s) || opening.contains_key(s));
        self.per_source.clear();
        for &source in self.bound.values() {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
    }

    /// Forgets the opens this member appended at or after `position`, which a truncation just
    /// cut from its log: they will never be applied, and a client waiting on one must be
    /// opened again (found by the simulator driving the shipped client: a leader that had
    /// appended an open, lost it to a truncation and led again took the client's connects as
    /// "open under way" for ever).
    pub fn forget_opens_from(&mut self, position: u64) {
        let before = self.opening.len();
        self.opening.retain(|_, p| *p < position);
        if self.opening.len() != before {
            self.forget_unknown_bindings();
        }
    }

    /// Sessions counted against the limit.
    pub fn count(&self) -> usize {
        self.open.len() + self.opening.len()
    }
}

/// Kinds of refusal, each printed at most once a second.
#[derive(Clone, Copy)]
pub(super) enum Refusal {
    Credential = 0,
    SessionLimit = 1,
    Admin = 2,
}

/// What a client frame gets back.
enum Answer {
    /// Taken (or answered already).
    Taken,
    /// This member does not lead; the leader it knows, if any.
    Redirect(Option<MemberId>),
    /// A refusal or an answer the client must act on.
    Event(ClientEventKind, u64),
    /// Dropped for now (back-pressure); the client resends.
    Dropped,
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// A frame from a client or an operator: requests go into the log on the leader; others
    /// redirect.
    pub(super) fn on_client_frame(&mut self, now: u64, from: u32, frame: &codec::Frame<'_>) {
        self.stats.client_requests += 1;
        let Ok(message) = Message::decode(frame) else {
            self.stats.frames_malformed += 1;
            return;
        };
        let mut session = frame.meta.session_id;
        let answer = match message {
            Message::AdminRequest {
                request,
                credential,
            } => {
                self.on_admin(now, from, request, credential);
                return;
            }
            Message::ClientConnect {
                connect,
                credential,
            } => {
                session = connect.session_id;
                self.on_connect(now, from, connect, credential)
            }
            Message::SessionMessage { header, payload } => {
                match self.bound_leader(session, from, now) {
                    Some(answer) => answer,
                    None => match self.offer(now, session, header.sequence, payload) {
                        Ok(_) => Answer::Taken,
                        Err(OfferError::TooLarge { .. }) => {
                            self.stats.messages_too_large += 1;
                            // The session's later messages are applied in sequence after
                            // this one: log an empty stand-in so the sequence moves on.
                            match self.offer_refused(now, session, header.sequence) {
                                Ok(_) => Answer::Event(ClientEventKind::TooLarge, header.sequence),
                                Err(e) => refused(e),
                            }
                        }
                        Err(e) => refused(e),
                    },
                }
            }
            Message::SessionKeepAlive(alive) => {
                session = alive.session_id;
                self.bound_leader(session, from, now)
                    .unwrap_or(Answer::Taken)
            }
            Message::SessionClose(_) => match self.bound_leader(session, from, now) {
                Some(answer) => answer,
                None => match self.close_session(now, session, CloseReason::ClientAction) {
                    Ok(_) => Answer::Taken,
                    Err(e) => refused(e),
                },
            },
            _ => {
                self.stats.frames_malformed += 1;
                return;
            }
        };
        let (kind, value) = match answer {
            Answer::Taken => return,
            Answer::Dropped => {
                self.stats.client_backpressure += 1;
                return;
            }
            Answer::Redirect(leader) => {
                self.stats.client_redirects += 1;
                (
                    ClientEventKind::Redirect,
                    leader.map_or(u64::MAX, u64::from),
                )
            }
            Answer::Event(kind, value) => (kind, value),
        };
        self.send_client_event(now, from, session, kind, value);
    }

    pub(super) fn send_client_event(
        &mut self,
        now: u64,
        to: u32,
        session_id: u64,
        kind: ClientEventKind,
        value: u64,
    ) {
        let event = Message::ClientEvent(ClientEvent {
            session_id,
            value,
            kind: kind as u8,
        });
        self.send_to_client(now, to, session_id, &event);
    }

    /// Encodes one frame of session `session_id`, stamped `now`, and sends it to the client's
    /// endpoint `to`: the one way anything reaches a client.
    pub(super) fn send_to_client(
        &mut self,
        now: u64,
        to: u32,
        session_id: u64,
        message: &Message<'_>,
    ) {
        let meta = FrameMeta {
            session_id,
            timestamp_ns: now,
            ..FrameMeta::default()
        };
        let len = message.encode(meta, &mut self.send_buf);
        self.net.send(to, &self.send_buf[..len]);
    }

    /// `None` when this member leads and `from` is the source the session is bound to (the
    /// frame is taken; the client was heard from); otherwise the answer: a redirect from a
    /// member that does not lead, `Unbound` from the leader.
    fn bound_leader(&mut self, session: u64, from: u32, now: u64) -> Option<Answer> {
        if self.consensus.leader_term().is_none() {
            return Some(Answer::Redirect(self.consensus.leader()));
        }
        if !self.sessions.bound_to(session, from) {
            self.stats.session_frames_unbound += 1;
            return Some(Answer::Event(ClientEventKind::Unbound, 0));
        }
        if self.session_timeout_ns != 0 {
            self.sessions.last_heard.insert(session, now);
        }
        None
    }

    /// A connect: authenticated, within the limits, then bound to its source; a session not yet
    /// open is opened through the log.
    fn on_connect(
        &mut self,
        now: u64,
        from: u32,
        connect: ClientConnect,
        credential: &[u8],
    ) -> Answer {
        if self.consensus.leader_term().is_none() {
            return Answer::Redirect(self.consensus.leader());
        }
        let session = connect.session_id;
        if !self.access.clients.authenticate(session, credential) {
            self.stats.connects_unauthenticated += 1;
            self.note_refusal(
                now,
                Refusal::Credential,
                format_args!("refused a client connect from endpoint {from}: the credential did not authenticate"),
            );
            return Answer::Event(ClientEventKind::Unauthenticated, connect.correlation_id);
        }
        if !self.sessions.known(session) {
            let limits = self.limits;
            let over = |s: &Sessions| {
                s.count() >= limits.max_sessions
                    || s.sessions_of(from) >= limits.max_sessions_per_source
            };
            if over(&self.sessions) {
                self.sessions.prune(self.applier.applied_position());
            }
            if over(&self.sessions) {
                self.stats.sessions_refused += 1;
                self.note_refusal(
                    now,
                    Refusal::SessionLimit,
                    format_args!(
                        "refused a session from endpoint {from}: {} sessions open ({} from it; limits session.max_sessions = {}, session.max_sessions_per_source = {})",
                        self.sessions.count(),
                        self.sessions.sessions_of(from),
                        limits.max_sessions,
                        limits.max_sessions_per_source
                    ),
                );
                return Answer::Event(ClientEventKind::SessionLimit, connect.correlation_id);
            }
        } else if self.sessions.bound.get(&session) != Some(&from)
            && self.sessions.sessions_of(from) >= self.limits.max_sessions_per_source
        {
            self.stats.sessions_refused += 1;
            return Answer::Event(ClientEventKind::SessionLimit, connect.correlation_id);
        }
        if self.sessions.open.contains(&session) {
            // Open already (the client moved, or followed leadership here): bind it to this
            // source and say so without touching the log.
            self.sessions.bind(session, from);
            self.sessions.last_heard.insert(session, now);
            return Answer::Event(ClientEventKind::Opened, connect.correlation_id);
        }
        if !self.sessions.opening.contains_key(&session) {
            match self.open_session(now, session, connect.correlation_id) {
                Ok(position) => {
                    self.sessions.opening.insert(session, position);
                }
                Err(e) => return refused(e),
            }
        }
        self.sessions.bind(session, from);
        Answer::Taken
    }

    /// Prints a refusal of each kind at most once a second (a flood of them is in the
    /// counters).
    fn note_refusal(&mut self, now: u64, kind: Refusal, what: std::fmt::Arguments<'_>) {
        let next = &mut self.next_refusal_note_ns[kind as usize];
        if !self.log_transitions || now < *next {
            return;
        }
        *next = now + 1_000_000_000;
        tracing::warn!(
            member = self.id,
            "member {}: {what} (further refusals this second are only counted)",
            self.id
        );
    }

    /// Leader: appends a timeout close for every open session whose client it has not heard
    /// from within the session timeout (a new leader counts from its election).
    pub(super) fn close_silent_sessions(&mut self, now: u64) {
        if self.session_timeout_ns == 0 || now < self.next_session_check_ns {
            return;
        }
        self.next_session_check_ns = now + (self.session_timeout_ns / 10).max(1_000_000);
        if self.consensus.leader_term().is_none() {
            return;
        }
        let timeout = self.session_timeout_ns;
        let sessions = &mut self.sessions;
        let silent: Vec<u64> = sessions
            .open
            .iter()
            .copied()
            .filter(|s| !sessions.closing.contains(s))
            .filter(|s| {
                let heard = *sessions.last_heard.entry(*s).or_insert(now);
                now.saturating_sub(heard) > timeout
            })
            .collect();
        for session in silent {
            if self
                .close_session(now, session, CloseReason::Timeout)
                .is_ok()
            {
                self.sessions.closing.insert(session);
            }
        }
    }

    /// The answer to an operator's command. Without the admin credential (when one is
    /// configured) the request is refused and the answer says nothing of the member's state.
    pub(super) fn on_admin(
        &mut self,
        now: u64,
        from: u32,
        request: AdminRequest,
        credential: &[u8],
    ) {
        let Some(command) = AdminCommand::from_u8(request.command) else {
            return;
        };
        if !self.access.admits_operator(credential) {
            self.stats.admin_refused += 1;
            self.note_refusal(
                now,
                Refusal::Admin,
                format_args!(
                    "refused an admin request ({command:?}) from endpoint {from}: the admin credential did not match"
                ),
            );
            let response = Message::AdminResponse(AdminResponse {
                correlation_id: request.correlation_id,
                status: AdminStatus::Unauthorized as u8,
                member_id: self.id,
                role: 0,
                leader: u32::MAX,
                term: 0,
                appended: 0,
                commit: 0,
                applied: 0,
                snapshots: 0,
                digest_mismatches: 0,
                value: 0,
            });
            self.send_to_client(now, from, 0, &response);
            return;
        }
        let leader = self.consensus.leader_term().is_some();
        let mut value = 0;
        let status = match command {
            AdminCommand::Describe => AdminStatus::Done,
            _ if !leader => AdminStatus::NotLeader,
            AdminCommand::Snapshot => match self.request_snapshot(now) {
                Ok(position) => {
                    value = position;
                    AdminStatus::Done
                }
                Err(_) => AdminStatus::Refused,
            },
            AdminCommand::StepDown => match self.step_down(now) {
                Ok(to) => {
                    value = u64::from(to);
                    AdminStatus::Done
                }
                Err(_) => AdminStatus::Refused,
            },
            AdminCommand::TransferLeader => match self.transfer_leadership(now, request.target) {
                Ok(()) => {
                    value = u64::from(request.target);
                    AdminStatus::Done
                }
                Err(_) => AdminStatus::Refused,
            },
            AdminCommand::Shutdown => match self.request_shutdown(now) {
                Ok(position) => {
                    value = position;
                    AdminStatus::Done
                }
                Err(_) => AdminStatus::Refused,
            },
        };
        let response = Message::AdminResponse(AdminResponse {
            correlation_id: request.correlation_id,
            status: status as u8,
            member_id: self.id,
            role: self.consensus.role().code(),
            leader: self.consensus.leader().unwrap_or(u32::MAX),
            term: self.consensus.term(),
            appended: self.log.appended_position(),
            commit: self.commit,
            applied: self.applier.applied_position(),
            snapshots: self.applier.snapshots_taken(),
            digest_mismatches: self.applier.digest_mismatches(),
            value,
        });
        self.send_to_client(now, from, 0, &response);
    }
}

fn refused(e: OfferError) -> Answer {
    match e {
        OfferError::NotLeader { leader } => Answer::Redirect(leader),
        OfferError::TooLarge { .. }
        | OfferError::BackPressure
        | OfferError::Transferring { .. } => Answer::Dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_count_per_source_and_follow_a_moved_session() {
        let mut s = Sessions::default();
        s.opened(1, 0);
        s.opened(2, 0);
        s.bind(1, 70_000);
        s.bind(2, 70_000);
        assert_eq!(s.sessions_of(70_000), 2);
        assert!(s.bound_to(1, 70_000));
        assert!(!s.bound_to(1, 70_001));
        s.bind(1, 70_001);
        assert_eq!((s.sessions_of(70_000), s.sessions_of(70_001)), (1, 1));
        assert!(!s.bound_to(1, 70_000) && s.bound_to(1, 70_001));
        s.closed(2);
        assert_eq!(s.sessions_of(70_000), 0);
        assert!(!s.bound_to(2, 70_000));
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn a_binding_without_an_open_session_is_not_taken_and_is_pruned() {
        let mut s = Sessions::default();
        s.opening.insert(5, 100);
        s.bind(5, 70_000);
        assert!(s.bound_to(5, 70_000));
        // The open at 100 was cut: the applier is past it and never saw it.
        s.prune(200);
        assert!(!s.known(5));
        assert!(!s.bound_to(5, 70_000));
        assert_eq!(s.sessions_of(70_000), 0);
        assert!(s.bound.is_empty());
    }

    #[test]
    fn a_truncation_forgets_the_opens_it_cut_and_keeps_those_before_it() {
        let mut s = Sessions::default();
        s.opening.insert(5, 100);
        s.opening.insert(6, 300);
        s.bind(5, 70_000);
        s.bind(6, 70_001);
        s.forget_opens_from(200);
        assert!(s.known(5) && s.bound_to(5, 70_000));
        assert!(
            !s.known(6),
            "the open at 300 was cut: a connect must open it again"
        );
        assert_eq!(s.sessions_of(70_001), 0);
    }
}
