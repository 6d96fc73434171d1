//! Replication bookkeeping: a leader's heartbeats and sends by position, followers' reported
//! positions (checked for plausibility), the commit position as the quorum-th highest durable
//! position, and a follower's appends and commit. It never counts a position a member has not
//! plausibly reported, and never moves the commit position back.

use super::*;

impl Consensus {
    pub(super) fn tick_leader(&mut self, now: u64) {
        // Step down when no quorum has been heard from within the heartbeat timeout.
        let timeout = self.config.leader_heartbeat_timeout_ns;
        let alive = 1 + self
            .others()
            .filter(|&m| now.saturating_sub(self.peers[m as usize].last_contact_ns) < timeout)
            .count();
        if alive < self.config.quorum() {
            self.transition(now, State::Canvass, Reason::QuorumLost);
            return;
        }
        if now >= self.next_heartbeat_ns {
            self.next_heartbeat_ns = now.saturating_add(self.config.leader_heartbeat_interval_ns);
            for to in self.others().collect::<Vec<_>>() {
                let p = self.peers[to as usize];
                if !p.reconciled {
                    self.send_new_leadership_term(to);
                    continue;
                }
                self.send_commit(to);
                // Go-back-N: nothing acknowledged for a heartbeat interval while bytes are out.
                if p.appended < p.next_send
                    && now.saturating_sub(p.last_progress_ns)
                        >= self.config.leader_heartbeat_interval_ns
                {
                    self.peers[to as usize].next_send = p.appended;
                    self.peers[to as usize].last_progress_ns = now;
                    self.counters.resends += 1;
                }
            }
        }
        self.replicate();
        self.try_transfer(now);
    }

    pub(super) fn send_commit(&mut self, to: MemberId) {
        let message = Message::CommitPosition(CommitPosition {
            leadership_term_id: self.vote.term,
            log_position: self.commit,
            leader_member_id: self.config.member_id,
        });
        self.send(to, message);
    }

    /// Sends every reconciled follower the bytes it has not been sent, within its window.
    pub(super) fn replicate(&mut self) {
        let window = self.config.replication_window_bytes;
        for to in self.others().collect::<Vec<_>>() {
            let p = &mut self.peers[to as usize];
            if !p.reconciled || p.next_send >= self.appended || p.next_send - p.appended >= window {
                continue;
            }
            // At most a window beyond what the follower acknowledged (the end may fall inside
            // a frame: the next send carries on from there).
            let from = p.next_send;
            let to_position = self.appended.min(p.appended.saturating_add(window));
            p.next_send = to_position;
            p.sent_high = p.sent_high.max(to_position);
            let action = Action::SendLog {
                to,
                leadership_term_id: self.vote.term,
                from,
                to_position,
            };
            self.push(action);
        }
    }

    pub(super) fn tick_follower(&mut self, now: u64) {
        if now.saturating_sub(self.leader_contact_ns) > self.config.leader_heartbeat_timeout_ns {
            self.transition(now, State::Canvass, Reason::LeaderSilent);
            return;
        }
        if now < self.next_heartbeat_ns {
            return;
        }
        self.next_heartbeat_ns = now.saturating_add(self.config.leader_heartbeat_interval_ns);
        let Some(leader) = self.leader else { return };
        if self.state == State::FollowerLive {
            self.send_append_position(leader, 0);
        } else {
            self.send_canvass_to(leader);
        }
    }

    pub(super) fn send_append_position(&mut self, to: MemberId, flags: u8) {
        let message = Message::AppendPosition(AppendPosition {
            leadership_term_id: self.vote.term,
            log_position: self.durable,
            appended_position: self.appended,
            follower_member_id: self.config.member_id,
            flags,
        });
        self.send(to, message);
    }

    pub(super) fn follow_commit(&mut self, leader_commit: u64) {
        let commit = leader_commit.min(self.appended);
        if commit > self.commit {
            self.commit = commit;
            self.push(Action::Commit { position: commit });
        }
    }

    pub(super) fn on_append_position(&mut self, now: u64, from: MemberId, m: AppendPosition) {
        self.peers[from as usize].last_contact_ns = now;
        if m.leadership_term_id > self.vote.term {
            self.observe_term(now, m.leadership_term_id);
            return;
        }
        if self.state != State::LeaderLive || m.leadership_term_id != self.vote.term {
            return;
        }
        if !self.plausible(from, &m) {
            self.refuse("an impossible follower position");
            return;
        }
        let interval = self.config.leader_heartbeat_interval_ns;
        let p = &mut self.peers[from as usize];
        let mut flags = m.flags;
        if flags == FLAG_GAP && p.reconciled {
            if p.last_gap.0 == m.appended_position && now < p.last_gap.1.saturating_add(interval) {
                flags = 0;
            } else {
                p.last_gap = (m.appended_position, now);
            }
        }
        if flags & (FLAG_RECONCILED | FLAG_GAP) != 0 {
            p.reconciled = true;
            p.sent_high = p.sent_high.max(m.appended_position);
            p.next_send = m.appended_position;
            p.appended = m.appended_position;
            p.durable = m.log_position;
            p.last_progress_ns = now;
        } else if p.reconciled {
            if m.appended_position > p.appended {
                p.last_progress_ns = now;
            }
            p.appended = m.appended_position;
            p.durable = m.log_position;
            p.next_send = p.next_send.max(p.appended);
        }
        self.update_commit();
        self.replicate();
        self.try_transfer(now);
    }

    /// Whether a follower's report can be true: positions on frame boundaries, durable within
    /// appended, nothing beyond this leader's log, and (outside reconciliation, where the
    /// follower reports what it kept from earlier terms) nothing beyond what was sent to it.
    pub(super) fn plausible(&self, from: MemberId, m: &AppendPosition) -> bool {
        #[cfg(any(test, feature = "sim"))]
        if self.broken(BrokenRule::TrustPeerPositions) {
            return true;
        }
        let aligned = |x: u64| x % FRAME_ALIGNMENT as u64 == 0;
        let p = &self.peers[from as usize];
        let reconciling = m.flags & (FLAG_RECONCILED | FLAG_GAP) != 0;
        aligned(m.log_position)
            && aligned(m.appended_position)
            && m.log_position <= m.appended_position
            && m.appended_position <= self.appended
            && (reconciling || !p.reconciled || m.appended_position <= p.sent_high)
    }

    /// Leader: the node sends `to` a snapshot and then the log from `position` (its log's
    /// start): the follower may report a log that ends there.
    pub fn on_install_sent(&mut self, to: MemberId, position: u64) {
        if let Some(p) = self.peers.get_mut(to as usize) {
            p.sent_high = p.sent_high.max(position);
        }
    }

    /// Leader: the node found that the position it was to send `to` from is not a frame
    /// boundary of its log (a false report): forget what the follower claimed and have it
    /// reconcile again.
    pub fn on_bad_send_position(&mut self, to: MemberId) {
        if let Some(p) = self.peers.get_mut(to as usize) {
            p.reconciled = false;
            p.durable = 0;
            p.appended = 0;
            p.next_send = self.appended;
            self.refuse("a log end that is not a frame boundary");
        }
    }

    pub(super) fn on_commit_position(&mut self, now: u64, from: MemberId, m: CommitPosition) {
        let term = m.leadership_term_id;
        if !self.accept_leader_term(now, from, term) {
            return;
        }
        match self.state {
            State::LeaderLive => {}
            State::FollowerLive | State::FollowerReconcile if self.leader != Some(from) => {
                // One leader per term: a second one is a liar.
                self.refuse("a commit from a second leader in the term");
            }
            State::FollowerLive => {
                self.leader_contact_ns = now;
                self.follow_commit(m.log_position);
            }
            State::FollowerReconcile => self.leader_contact_ns = now,
            _ => {
                self.leader_contact_ns = now;
                // A live leader in our term: follow it; it will tell us how to reconcile.
                self.leader = Some(from);
                self.transition(now, State::FollowerReconcile, Reason::NewLeader);
                self.send_canvass_to(from);
            }
        }
    }

    pub(super) fn on_append_data(
        &mut self,
        now: u64,
        from: MemberId,
        term: u64,
        position: u64,
        len: usize,
    ) {
        if !self.accept_leader_term(now, from, term) {
            return;
        }
        let following = matches!(self.state, State::FollowerLive | State::FollowerReconcile);
        if following && self.leader != Some(from) {
            // One leader per term: a second one is a liar.
            self.refuse("log bytes from a second leader in the term");
            return;
        }
        self.leader_contact_ns = now;
        if self.state != State::FollowerLive {
            if self.state != State::FollowerReconcile {
                self.leader = Some(from);
                self.transition(now, State::FollowerReconcile, Reason::NewLeader);
                self.send_canvass_to(from);
            }
            return;
        }
        if position > self.appended {
            // Bytes ahead of our end: ask for a resend from it, once per heartbeat interval
            // for the same end. The pieces of a large frame and reordered datagrams arrive
            // out of order by the dozen, and each request makes the leader resend all it has
            // in flight: answering every one would multiply the traffic.
            let due = self.last_gap.is_none_or(|(end, at)| {
                end != self.appended
                    || now.saturating_sub(at) >= self.config.leader_heartbeat_interval_ns
            });
            if due {
                self.last_gap = Some((self.appended, now));
                self.send_append_position(from, FLAG_GAP);
            }
            return;
        }
        let end = position + len as u64;
        if end <= self.appended {
            return;
        }
        self.push(Action::AppendReceived {
            skip: (self.appended - position) as usize,
        });
    }

    /// The node appended bytes; the log now ends at `end`.
    pub fn on_appended(&mut self, _now: u64, end: u64) {
        assert!(
            end >= self.appended,
            "appended position went back from {} to {end}",
            self.appended
        );
        self.appended = end;
        if self.state == State::LeaderLive {
            self.replicate();
        }
    }

    /// The node appended a `NewLeadershipTermEvent` frame it received: `term` starts at
    /// `start`. Call before `on_appended` for the same bytes.
    pub fn on_term_started(&mut self, term: u64, start: u64) {
        if let Some(last) = self.terms.last() {
            if last.term >= term {
                return;
            }
            assert!(last.start_position <= start);
        }
        self.terms.push(TermEntry {
            term,
            start_position: start,
        });
    }

    /// The log is durable up to `position`.
    pub fn on_durable(&mut self, _now: u64, position: u64) {
        if position <= self.durable {
            return;
        }
        self.durable = position.min(self.appended);
        match self.state {
            State::LeaderLive => self.update_commit(),
            State::FollowerLive => {
                if let Some(leader) = self.leader {
                    self.send_append_position(leader, 0);
                }
            }
            _ => {}
        }
    }

    pub(super) fn update_commit(&mut self) {
        if self.state != State::LeaderLive {
            return;
        }
        let mut durable: Vec<u64> = vec![self.durable];
        for m in self.others() {
            let p = &self.peers[m as usize];
            if p.reconciled {
                durable.push(p.durable);
            }
        }
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = self.config.quorum();
        #[allow(unused_mut)]
        let mut candidate = durable.get(quorum - 1).copied();
        #[cfg(any(test, feature = "sim"))]
        if self.broken(BrokenRule::CommitWithoutQuorum) {
            candidate = Some(self.durable);
        }
        let Some(position) = candidate else { return };
        // Only through an entry of its own term (§5.4.2).
        if position > self.term_base && position > self.commit {
            self.commit = position;
            self.push(Action::Commit { position });
            for to in self.others().collect::<Vec<_>>() {
                if self.peers[to as usize].reconciled {
                    self.send_commit(to);
                }
            }
        }
    }
}
