//! What enters the log on the leader: client messages and session events (stamped with the
//! leader's time and term), timers that fell due, and where the service's egress goes. It never
//! appends on a node that is not leader, and never sends a follower's egress to a client.

use super::*;

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// Leader: sends applied egress to the clients' endpoints. Followers drop theirs.
    pub(super) fn route_egress(&mut self, now: u64) {
        if self.egress.is_empty() {
            return;
        }
        let leader = self.consensus.role() == Role::Leader;
        let egress = std::mem::take(&mut self.egress);
        let mut closed = Vec::new();
        for e in &egress {
            match *e {
                Egress::SnapshotTaken { position, digest } => {
                    self.last_snapshot_action = self.last_snapshot_action.max(position);
                    if leader {
                        self.digest_checks.push((position, digest));
                    }
                }
                Egress::Shutdown { position } => self.shutdown = Some((position, Some(now))),
                Egress::SessionOpened { session_id, .. } => self.sessions.opened(session_id, now),
                Egress::SessionClosed { session_id, .. } => {
                    // Told below (the binding is still needed to reach the client).
                    closed.push(session_id);
                }
                _ => {}
            }
        }
        if leader {
            for e in &egress {
                let Some((session_id, message)) = e.to_client() else {
                    continue;
                };
                if let Some(&endpoint) = self.sessions.bound.get(&session_id) {
                    self.send_to_client(now, endpoint, session_id, &message);
                }
            }
        }
        for session in closed {
            self.sessions.closed(session);
        }
        if self.collect_egress && leader {
            self.egress = egress;
        } else {
            self.egress = egress;
            self.egress.clear();
        }
    }

    pub(super) fn stamp(&mut self, now: u64, term: u64, session_id: u64) -> FrameMeta {
        self.last_timestamp_ns = self.last_timestamp_ns.max(now);
        FrameMeta {
            frame_type: 0,
            flags: 0,
            term,
            session_id,
            timestamp_ns: self.last_timestamp_ns,
        }
    }

    pub(super) fn append_leader(
        &mut self,
        meta: FrameMeta,
        message: &Message<'_>,
    ) -> Result<u64, LogError> {
        let position = self.log.append_message(meta, message)?;
        let end = self.log.appended_position();
        self.consensus.on_appended(meta.timestamp_ns, end);
        Ok(position)
    }

    pub(super) fn offer_message(
        &mut self,
        now: u64,
        session_id: u64,
        message: &Message<'_>,
    ) -> Result<u64, OfferError> {
        self.offer_flagged(now, session_id, message, 0)
    }

    /// Leader: appends `message` stamped with the leader's term and time and `flags`.
    pub(super) fn offer_flagged(
        &mut self,
        now: u64,
        session_id: u64,
        message: &Message<'_>,
        flags: u8,
    ) -> Result<u64, OfferError> {
        let Some(term) = self.consensus.leader_term() else {
            return Err(OfferError::NotLeader {
                leader: self.consensus.leader(),
            });
        };
        if let Some(to) = self.consensus.transferring_to() {
            // Nothing more goes into this leader's log: the target must hold all of it.
            return Err(OfferError::Transferring { to });
        }
        let max = self.log.config().frame_len_max();
        if message.encoded_len() > max {
            return Err(OfferError::TooLarge {
                len: message.encoded_len(),
                max,
            });
        }
        let meta = FrameMeta {
            flags,
            ..self.stamp(now, term, session_id)
        };
        let position = match self.append_leader(meta, message) {
            Ok(p) => p,
            Err(LogError::Full { .. }) => return Err(OfferError::BackPressure),
            Err(e) => {
                self.fail(e.into());
                return Err(OfferError::BackPressure);
            }
        };
        if let Err(e) = self.run_actions(now, None) {
            self.fail(e);
        }
        Ok(position)
    }

    /// Leader: appends a client message, stamped with the leader's term and time.
    pub fn offer(
        &mut self,
        now: u64,
        session_id: u64,
        sequence: u64,
        payload: &[u8],
    ) -> Result<u64, OfferError> {
        if payload.len() > self.limits.max_message_bytes {
            return Err(OfferError::TooLarge {
                len: payload.len(),
                max: self.limits.max_message_bytes,
            });
        }
        let term = self.consensus.leader_term();
        if let Some(term) = term {
            if let Some(position) = self
                .in_flight
                .appended(term, self.commit, session_id, sequence)
            {
                self.stats.resends_in_flight += 1;
                return Ok(position);
            }
        }
        let message = Message::SessionMessage {
            header: SessionMessageHeader { sequence },
            payload,
        };
        let position = self.offer_message(now, session_id, &message)?;
        if let Some(term) = term {
            let end = self.log.appended_position();
            self.in_flight
                .record(term, session_id, sequence, position, end);
        }
        Ok(position)
    }

    /// Leader: appends the empty stand-in of a refused message (see
    /// [`crate::codec::message::FLAG_REFUSED`]).
    pub(super) fn offer_refused(
        &mut self,
        now: u64,
        session_id: u64,
        sequence: u64,
    ) -> Result<u64, OfferError> {
        let message = Message::SessionMessage {
            header: SessionMessageHeader { sequence },
            payload: &[],
        };
        self.offer_flagged(
            now,
            session_id,
            &message,
            crate::codec::message::FLAG_REFUSED,
        )
    }

    /// Leader: appends a session-open frame; the session opens when it is applied.
    pub fn open_session(
        &mut self,
        now: u64,
        session_id: u64,
        correlation_id: u64,
    ) -> Result<u64, OfferError> {
        let message = Message::SessionOpen(SessionOpen {
            correlation_id,
            client_id: session_id,
        });
        self.offer_message(now, session_id, &message)
    }

    /// Leader: appends a session-close frame; the session closes when it is applied.
    pub fn close_session(
        &mut self,
        now: u64,
        session_id: u64,
        reason: CloseReason,
    ) -> Result<u64, OfferError> {
        let message = Message::SessionClose(SessionClose {
            reason: reason as u8,
        });
        self.offer_message(now, session_id, &message)
    }

    /// Leader: appends a timer event for every service timer that is due. An event is appended
    /// once per leadership; the applier ignores a second one for the same timer.
    pub(super) fn fire_due_timers(&mut self, now: u64) -> usize {
        if self.consensus.leader_term().is_none() {
            self.timers_appended.clear();
            return 0;
        }
        // Events already applied (fired, or ignored as stale) no longer hold their timer back.
        let applied = self.applier.applied_position();
        self.timers_appended
            .retain(|_, position| *position >= applied);
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.applier
            .due_timers(now, 64 + self.timers_appended.len(), &mut due);
        due.retain(|id| !self.timers_appended.contains_key(id));
        due.truncate(64);
        let mut fired = 0;
        for &id in &due {
            if let Ok(position) = self.fire_timer(now, id) {
                self.timers_appended.insert(id, position);
                fired += 1;
            }
        }
        self.due = due;
        fired
    }

    /// Leader: appends a timer event, so every replica sees the timer fire at the same
    /// position with the leader's time.
    pub fn fire_timer(&mut self, now: u64, correlation_id: u64) -> Result<u64, OfferError> {
        self.offer_message(now, 0, &Message::TimerEvent(TimerEvent { correlation_id }))
    }

    /// Egress kept since the last call (with [`Node::set_collect_egress`]). Only the
    /// leader's leaves the node.
    pub fn take_egress(&mut self, out: &mut Vec<Egress>) {
        out.clear();
        std::mem::swap(out, &mut self.egress);
    }
}
