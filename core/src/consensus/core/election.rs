//! Elections, after Aeron Cluster's: the canvass of log positions (a pre-vote that changes no
//! term), nomination, the ballot with its veto for a stale log, becoming leader, and a follower
//! taking a new leader's term. It never grants a vote to a log less complete than its own, and
//! never votes twice in one term.

use super::*;

impl Consensus {
    pub(super) fn tick_canvass(&mut self, now: u64) {
        if now >= self.next_heartbeat_ns {
            self.next_heartbeat_ns = now.saturating_add(self.config.leader_heartbeat_interval_ns);
            let (log_term, log_position) = self.my_log();
            let message = Message::CanvassPosition(CanvassPosition {
                log_leadership_term_id: log_term,
                log_position,
                leadership_term_id: self.vote.term,
                follower_member_id: self.config.member_id,
            });
            for to in self.others().collect::<Vec<_>>() {
                self.send(to, message);
            }
        }
        if let Some(appointed) = self.config.appointed_leader {
            if appointed != self.config.member_id {
                return;
            }
        }
        if self.vote_recovery.is_some() {
            return;
        }
        if self.owes_log() {
            // Waits for a leader with the promised log to repair it.
            return;
        }
        let mine = self.my_log();
        let mut canvassed = 0;
        let mut no_better = 1; // this member
        for m in self.others() {
            let p = &self.peers[m as usize];
            if p.canvassed {
                canvassed += 1;
                let newer = log_is_newer((p.log_term, p.log_position), mine);
                #[cfg(any(test, feature = "sim"))]
                let newer = newer && !self.broken(BrokenRule::IgnoreLogsInElection);
                if !newer {
                    no_better += 1;
                }
            }
        }
        let all = self.config.member_count as usize;
        if canvassed + 1 == all && no_better == all {
            self.transition(now, State::Nominate, Reason::CanvassUnanimous);
        } else if no_better >= self.config.quorum()
            && (now >= self.deadline_ns
                || self.config.appointed_leader == Some(self.config.member_id))
        {
            self.transition(now, State::Nominate, Reason::CanvassQuorum);
        }
    }

    pub(super) fn nominate(&mut self, now: u64) {
        let term = self.vote.term + 1;
        self.vote = VoteState {
            term,
            voted_for: Some(self.config.member_id),
        };
        // The candidate term is durable before any vote request leaves.
        self.push(Action::PersistVote(self.vote));
        self.counters.elections_started += 1;
        self.transition(now, State::CandidateBallot, Reason::NominationDelay);
        for p in &mut self.peers {
            p.vote = None;
        }
        let (log_term, log_position) = self.my_log();
        let message = Message::RequestVote(RequestVote {
            log_leadership_term_id: log_term,
            log_position,
            candidate_term_id: term,
            candidate_member_id: self.config.member_id,
        });
        for to in self.others().collect::<Vec<_>>() {
            self.send(to, message);
        }
        self.count_votes(now);
    }

    pub(super) fn count_votes(&mut self, now: u64) {
        let yes = 1 + self.peers.iter().filter(|p| p.vote == Some(true)).count();
        if yes >= self.config.quorum() {
            self.become_leader(now, Reason::BallotWon);
        }
    }

    pub(super) fn become_leader(&mut self, now: u64, reason: Reason) {
        self.transition(now, State::LeaderLive, reason);
        self.counters.leaderships += 1;
        self.startup = false;
        self.leader = Some(self.config.member_id);
        self.term_base = self.appended;
        let term = self.vote.term;
        let appended = self.appended;
        for p in &mut self.peers {
            p.reconciled = false;
            p.durable = 0;
            p.appended = 0;
            p.next_send = appended;
            p.sent_high = 0;
            p.last_contact_ns = now;
            p.last_progress_ns = now;
        }
        if let Some(last) = self.terms.last() {
            assert!(last.term < term && last.start_position <= appended);
        }
        self.terms.push(TermEntry {
            term,
            start_position: appended,
        });
        self.push(Action::StartTerm {
            term,
            position: appended,
            leader: self.config.member_id,
        });
        for to in self.others().collect::<Vec<_>>() {
            self.send_new_leadership_term(to);
        }
        self.next_heartbeat_ns = now.saturating_add(self.config.leader_heartbeat_interval_ns);
        self.update_commit();
    }

    /// The leader's answer to a follower whose log ends in `peer.log_term`.
    pub(super) fn send_new_leadership_term(&mut self, to: MemberId) {
        let p = self.peers[to as usize];
        let i = self.terms.partition_point(|e| e.term <= p.log_term);
        let (matched_term_id, matched_term_start) = i.checked_sub(1).map_or((0, 0), |i| {
            let e = self.terms[i];
            (e.term, e.start_position)
        });
        let matched_term_end = self
            .terms
            .get(i)
            .map_or(self.appended, |e| e.start_position);
        let message = Message::NewLeadershipTerm(NewLeadershipTerm {
            log_leadership_term_id: p.log_term,
            matched_term_id,
            matched_term_start,
            matched_term_end,
            leadership_term_id: self.vote.term,
            term_base_log_position: self.term_base,
            log_position: self.appended,
            commit_position: self.commit,
            leader_member_id: self.config.member_id,
            is_startup: false,
        });
        self.send(to, message);
    }

    pub(super) fn send_canvass_to(&mut self, to: MemberId) {
        let (log_term, log_position) = self.my_log();
        let message = Message::CanvassPosition(CanvassPosition {
            log_leadership_term_id: log_term,
            log_position,
            leadership_term_id: self.vote.term,
            follower_member_id: self.config.member_id,
        });
        self.send(to, message);
    }

    pub(super) fn on_canvass(&mut self, now: u64, from: MemberId, m: CanvassPosition) {
        let p = &mut self.peers[from as usize];
        p.log_term = m.log_leadership_term_id;
        p.log_position = m.log_position;
        p.canvassed = true;
        p.last_contact_ns = now;
        self.observe_term(now, m.leadership_term_id);
        if self.state == State::LeaderLive {
            // A member that does not follow this term yet: tell it how to reconcile.
            self.peers[from as usize].reconciled = false;
            self.send_new_leadership_term(from);
        }
    }

    pub(super) fn on_request_vote(&mut self, now: u64, from: MemberId, m: RequestVote) {
        let p = &mut self.peers[from as usize];
        p.log_term = m.log_leadership_term_id;
        p.log_position = m.log_position;
        self.observe_term(now, m.candidate_term_id);
        let candidate_log = (m.log_leadership_term_id, m.log_position);
        if self.vote_recovery.is_some() || m.candidate_term_id <= self.abstain_through {
            // This member may have voted in that term before it lost its vote record.
            self.counters.votes_abstained += 1;
            return;
        }
        let stale_log = log_is_newer(self.my_log(), candidate_log);
        if !stale_log && log_is_newer(self.vouched_log(), candidate_log) {
            // Our log was cut by corruption and the candidate lacks what we had vouched for.
            // No vote, and no veto either (our own log is no better): a candidate the rest
            // of a quorum elects holds every committed byte without us.
            self.counters.votes_abstained += 1;
            return;
        }
        #[cfg(any(test, feature = "sim"))]
        let stale_log = stale_log && !self.broken(BrokenRule::IgnoreLogsInElection);
        let grant = m.candidate_term_id == self.vote.term
            && self.vote.voted_for.is_none_or(|v| v == from)
            && self.state != State::LeaderLive
            && !stale_log;
        let (log_term, log_position) = self.my_log();
        if grant {
            self.counters.votes_granted += 1;
            self.vote.voted_for = Some(from);
            // The vote is durable before it is sent.
            self.push(Action::PersistVote(self.vote));
            self.transition(now, State::FollowerBallot, Reason::VoteGranted);
        } else {
            self.counters.votes_refused += 1;
        }
        self.send(
            from,
            Message::Vote(Vote {
                candidate_term_id: m.candidate_term_id,
                log_leadership_term_id: log_term,
                log_position,
                candidate_member_id: from,
                follower_member_id: self.config.member_id,
                vote: grant,
            }),
        );
    }

    pub(super) fn on_vote(&mut self, now: u64, from: MemberId, m: Vote) {
        let p = &mut self.peers[from as usize];
        p.log_term = m.log_leadership_term_id;
        p.log_position = m.log_position;
        p.last_contact_ns = now;
        if m.candidate_term_id > self.vote.term {
            self.observe_term(now, m.candidate_term_id);
            return;
        }
        if self.state != State::CandidateBallot
            || m.candidate_term_id != self.vote.term
            || m.candidate_member_id != self.config.member_id
        {
            return;
        }
        self.peers[from as usize].vote = Some(m.vote);
        if !m.vote {
            // Any explicit "no" is a veto: someone has a better log or already voted.
            self.transition(now, State::Canvass, Reason::BallotVetoed);
            return;
        }
        self.count_votes(now);
    }

    /// Every message only a leader sends starts here: from a stale term it is answered with
    /// our term (so the stale leader steps down) and dropped; a higher term is adopted.
    pub(super) fn accept_leader_term(&mut self, now: u64, from: MemberId, term: u64) -> bool {
        if term < self.vote.term {
            self.send_canvass_to(from);
            return false;
        }
        self.observe_term(now, term);
        true
    }

    pub(super) fn on_new_leadership_term(
        &mut self,
        now: u64,
        from: MemberId,
        m: NewLeadershipTerm,
    ) {
        let term = m.leadership_term_id;
        if !self.accept_leader_term(now, from, term) {
            return;
        }
        if self.state == State::LeaderLive {
            // This member leads `term`: the sender lies about being its leader.
            self.refuse("a leader message to the leader of that term");
            return;
        }
        self.leader = Some(from);
        self.leader_contact_ns = now;
        if self.state != State::FollowerReconcile && self.state != State::FollowerLive {
            self.transition(now, State::FollowerReconcile, Reason::NewLeader);
        }
        if m.log_leadership_term_id != self.last_log_term() {
            // The leader answered for a log we no longer have: report ours and wait.
            self.send_canvass_to(from);
            return;
        }
        let last_term = self.last_log_term();
        // The leader's own term is still growing: what we have of it came from this leader
        // and matches. Earlier terms have a fixed end in the leader's log.
        let matched_end = if m.matched_term_id == term {
            u64::MAX
        } else {
            m.matched_term_end
        };
        let mut cut = self.appended.min(matched_end);
        if m.matched_term_id < last_term {
            // Every term above the matched one is missing on the leader: none of it is
            // committed, drop it all.
            if let Some(e) = self.terms.iter().find(|e| e.term > m.matched_term_id) {
                cut = cut.min(e.start_position);
            }
        }
        // The leader matched our last term to one we never had (it led a term we missed
        // between two of ours). Our bytes from where that term starts in the leader's log are
        // not the leader's; and whether our earlier terms end where the leader's do is known
        // only once the leader answers for the shorter log, so report it and wait.
        let lacks_matched =
            m.matched_term_id != 0 && !self.terms.iter().any(|e| e.term == m.matched_term_id);
        if lacks_matched {
            cut = cut.min(m.matched_term_start);
        }
        // A leader whose history starts later (its log was reset by a snapshot install) may
        // match a term this log has only before its start: the start is as far as it goes.
        cut = cut.max(self.log_start.min(self.appended));
        // A leader whose term history starts after position 0 (it installed a snapshot) and
        // knows none of our terms answers "term 0, ending where my history starts". What lies
        // below that start is in its snapshot, so committed, and our committed bytes are the
        // cluster's: keep them, cut only what we hold beyond our commit position, and let the
        // leader send its snapshot. Cutting to its answer would cut committed bytes, which is
        // refused, and the member would wait for ever (found by the simulator, seed 20228).
        // The same when this member knows no term of the bytes it holds (its term index was
        // lost and rebuilt from a log whose term events lie before its start): the leader can
        // match nothing, and the committed bytes need no match (seed 12688).
        let history_lacking = (m.matched_term_id == 0 && m.matched_term_end > 0)
            || (self.last_log_term() == 0 && self.appended > self.log_start);
        if history_lacking {
            let bound = if m.matched_term_end > 0 {
                m.matched_term_end
            } else {
                u64::MAX
            };
            cut = cut.max(self.commit.min(bound).min(self.appended));
        }
        if cut < self.commit {
            // Committed bytes are never cut: no real leader of a later term lacks them.
            self.refuse("a cut below the commit position");
            return;
        }
        // The terms kept: up to the matched one, or, when the leader lacks the history, ours
        // that begin below the cut.
        let kept = if history_lacking {
            self.terms
                .iter()
                .filter(|e| e.start_position < cut)
                .map(|e| e.term)
                .max()
                .unwrap_or(0)
        } else {
            m.matched_term_id
        };
        let drops_terms = self
            .terms
            .iter()
            .any(|e| e.term > kept || e.start_position >= cut);
        if cut < self.appended || drops_terms {
            self.counters.truncations += 1;
            self.push(Action::Truncate {
                position: cut,
                last_term_kept: kept,
            });
            self.appended = cut;
            self.durable = self.durable.min(cut);
            self.terms
                .retain(|e| e.term <= kept && e.start_position < cut);
        }
        if lacks_matched {
            self.send_canvass_to(from);
            return;
        }
        if self.state == State::FollowerReconcile {
            self.transition(now, State::FollowerLive, Reason::Reconciled);
            // The cluster has formed: later canvasses wait an election timeout, not the
            // startup canvass timeout.
            self.startup = false;
        }
        self.follow_commit(m.commit_position);
        self.send_append_position(from, FLAG_RECONCILED);
    }
}
