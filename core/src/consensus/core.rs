//! The consensus state machine. See the module docs of `consensus` for the protocol.

#[cfg(any(test, feature = "sim"))]
use super::BrokenRule;
use super::TermEntry;
use super::{
    Action, ConfigError, ConsensusConfig, Counters, LogState, MemberId, Reason, Role, State,
    VoteState, OUTBOX_CAPACITY,
};
use crate::codec::message::{
    AppendPosition, CanvassPosition, CommitPosition, ElectNow, NewLeadershipTerm, RequestVote, Vote,
};
use crate::codec::{Message, FRAME_ALIGNMENT};
use crate::rng::Rng;

/// `AppendPosition.flags`: the follower just reconciled; resume sending from its end.
pub const FLAG_RECONCILED: u8 = 1;
/// `AppendPosition.flags`: the follower saw a gap; resend from its end.
pub const FLAG_GAP: u8 = 2;
/// The largest term step a message may announce above this member's term. Real terms grow
/// by one per election; a message claiming a jump beyond this is a lie (or a bug), and
/// believing it could push the term to where `term + 1` overflows.
pub const TERM_JUMP_MAX: u64 = 1 << 32;

/// What this member knows of another.
#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    /// The peer's last reported log, and whether it reported in the current canvass.
    log_term: u64,
    log_position: u64,
    canvassed: bool,
    vote: Option<bool>,
    /// Leader's view. Invariant: `durable <= appended <= next_send` once reconciled.
    reconciled: bool,
    durable: u64,
    appended: u64,
    next_send: u64,
    /// Leader: the highest position this term has sent the peer or heard it hold; a peer
    /// cannot have appended bytes beyond it.
    sent_high: u64,
    last_contact_ns: u64,
    last_progress_ns: u64,
    /// Leader: the last gap report acted on (the follower's end, when): a repeat within a
    /// heartbeat interval is not acted on again, so one report, real or forged, costs at most
    /// one resend of the window per interval.
    last_gap: (u64, u64),
}

/// See the module docs.
pub struct Consensus {
    config: ConsensusConfig,
    rng: Rng,
    vote: VoteState,
    /// Invariant: `commit <= appended` and `durable <= appended`.
    appended: u64,
    durable: u64,
    commit: u64,
    /// Terms with bytes in the log (or, for a leader, its own term from its first frame).
    terms: Vec<TermEntry>,
    state: State,
    leader: Option<MemberId>,
    /// Deadline of the current state (canvass, nomination delay, ballot).
    deadline_ns: u64,
    next_heartbeat_ns: u64,
    leader_contact_ns: u64,
    /// Leader: where its term began.
    term_base: u64,
    startup: bool,
    peers: Vec<Peer>,
    outbox: Vec<Action>,
    counters: Counters,
    /// Leader: a planned handover to this member, abandoned at the deadline.
    transfer: Option<Transfer>,
    /// The longest log (last term, end) this member reported durable before its disk was
    /// found damaged: until its log is at least this again, it does not nominate itself and
    /// votes only for logs at least this long. (0, 0) when nothing was ever damaged.
    promised: (u64, u64),
    /// A member that lost its vote record (started with `--recover-vote`): which others it
    /// has heard from since. Until it has heard from all of them it neither votes nor
    /// nominates itself; after, it votes only in terms above every term they announced (a
    /// vote it cast and forgot was for a candidate whose term is at least that vote's).
    vote_recovery: Option<Vec<bool>>,
    /// Terms in which this member grants no vote (see `vote_recovery`).
    abstain_through: u64,
    /// Follower: the log end and time of the last resend request (see `on_append_data`).
    last_gap: Option<(u64, u64)>,
    /// Bytes before this are committed (the log's start, or what the service applied, which
    /// may be ahead of the log): never cut. Used as `min(log_start, appended)`.
    log_start: u64,
    last_refusal: Option<&'static str>,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    to: MemberId,
    deadline_ns: u64,
    /// When `ElectNow` was last sent (it is sent again each heartbeat interval until the
    /// target's election ends this leadership).
    sent_ns: Option<u64>,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader")]
    NotLeader,
    #[error("member {0} is not another member of this cluster")]
    NoSuchMember(MemberId),
    #[error("a transfer to member {0} is already under way")]
    InProgress(MemberId),
}

/// The term a consensus message announces, if it carries one.
fn message_term(message: &Message<'_>) -> Option<u64> {
    Some(match message {
        Message::CanvassPosition(m) => m.leadership_term_id.max(m.log_leadership_term_id),
        Message::RequestVote(m) => m.candidate_term_id.max(m.log_leadership_term_id),
        Message::Vote(m) => m.candidate_term_id.max(m.log_leadership_term_id),
        Message::NewLeadershipTerm(m) => m.leadership_term_id,
        Message::AppendPosition(m) => m.leadership_term_id,
        Message::CommitPosition(m) => m.leadership_term_id,
        Message::ElectNow(m) => m.leadership_term_id,
        Message::AppendData { header, .. } => header.leadership_term_id,
        _ => return None,
    })
}

fn log_is_newer(a: (u64, u64), b: (u64, u64)) -> bool {
    a > b
}

impl Consensus {
    pub fn new(
        config: ConsensusConfig,
        vote: VoteState,
        log: LogState,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        assert!(
            log.durable <= log.appended,
            "durable {} beyond appended {}",
            log.durable,
            log.appended
        );
        assert!(log
            .terms
            .windows(2)
            .all(|w| w[0].term < w[1].term && w[0].start_position <= w[1].start_position));
        let peers = vec![Peer::default(); config.member_count as usize];
        Ok(Self {
            rng: Rng::new(config.seed),
            config,
            vote,
            appended: log.appended,
            durable: log.durable,
            commit: 0,
            terms: log.terms,
            state: State::Init,
            leader: None,
            deadline_ns: 0,
            next_heartbeat_ns: 0,
            leader_contact_ns: 0,
            term_base: 0,
            startup: true,
            peers,
            outbox: Vec::with_capacity(OUTBOX_CAPACITY),
            counters: Counters::default(),
            transfer: None,
            promised: log.promised,
            vote_recovery: None,
            abstain_through: 0,
            last_gap: None,
            last_refusal: None,
            log_start: log.start,
        })
    }

    /// Leader: hands leadership to `to`. From now the node must append nothing more (the
    /// runtime refuses client ingress); once `to` has every byte this leader appended, it is
    /// told to start an election, which it wins with the best log; this leader steps down when
    /// it sees the new term. If that has not happened within an election timeout the transfer
    /// is abandoned and this member goes on leading.
    pub fn transfer_leadership(&mut self, now: u64, to: MemberId) -> Result<(), TransferError> {
        if self.state != State::LeaderLive {
            return Err(TransferError::NotLeader);
        }
        if to >= self.config.member_count || to == self.config.member_id {
            return Err(TransferError::NoSuchMember(to));
        }
        if let Some(t) = self.transfer {
            return Err(TransferError::InProgress(t.to));
        }
        self.transfer = Some(Transfer {
            to,
            deadline_ns: now.saturating_add(
                self.config
                    .election_timeout_ns
                    .max(4 * self.config.leader_heartbeat_interval_ns),
            ),
            sent_ns: None,
        });
        self.try_transfer(now);
        Ok(())
    }

    /// Follower: the node installed a snapshot and restarted its log, empty, at `start` (the
    /// leader's first position), with the leader's term history before it. Everything before
    /// `start` is committed (the leader purged it after a snapshot). Tells the leader where to
    /// resume.
    /// `applied` is where the service now stands (the snapshot's position): committed too.
    pub fn on_log_restarted(&mut self, start: u64, terms: Vec<TermEntry>, applied: u64) {
        self.log_start = start.max(applied);
        self.appended = start;
        self.durable = start;
        self.terms = terms;
        if start > self.commit {
            self.commit = start;
            self.push(Action::Commit { position: start });
        }
        if let Some(leader) = self.leader {
            self.send_append_position(leader, FLAG_GAP);
        }
    }

    /// This member lost its vote record: it abstains from every election until it has heard
    /// from every other member, and then from every term they announced. See the field docs.
    pub fn recover_vote(&mut self) {
        let mut heard = vec![false; self.config.member_count as usize];
        heard[self.config.member_id as usize] = true;
        self.abstain_through = self.abstain_through.max(self.vote.term);
        self.vote_recovery = Some(heard);
    }

    /// Whether a vote recovery (see [`Consensus::recover_vote`]) is still under way.
    pub fn recovering_vote(&self) -> bool {
        self.vote_recovery.is_some()
    }

    /// Counts a message refused as impossible, and remembers why (for the operator's line).
    fn refuse(&mut self, why: &'static str) {
        self.counters.messages_invalid += 1;
        self.last_refusal = Some(why);
    }

    /// Why the last message refused as impossible was refused.
    pub fn last_refusal(&self) -> Option<&'static str> {
        self.last_refusal
    }

    /// The member a transfer under way hands leadership to.
    pub fn transferring_to(&self) -> Option<MemberId> {
        self.transfer.map(|t| t.to)
    }

    /// Leader: the reconciled follower with the most bytes appended (a step-down target).
    pub fn most_caught_up_follower(&self) -> Option<MemberId> {
        self.others()
            .filter(|&m| self.peers[m as usize].reconciled)
            .max_by_key(|&m| (self.peers[m as usize].appended, std::cmp::Reverse(m)))
    }

    /// Leader: whether every other member has made `position` durable.
    pub fn durable_everywhere(&self, position: u64) -> bool {
        self.state == State::LeaderLive
            && self
                .others()
                .all(|m| self.peers[m as usize].durable >= position)
    }

    fn try_transfer(&mut self, now: u64) {
        let Some(t) = self.transfer else { return };
        if now >= t.deadline_ns {
            self.transfer = None;
            self.counters.transfers_abandoned += 1;
            return;
        }
        let p = self.peers[t.to as usize];
        let resend = t
            .sent_ns
            .is_none_or(|at| now.saturating_sub(at) >= self.config.leader_heartbeat_interval_ns);
        if p.reconciled && p.appended >= self.appended && resend {
            self.transfer = Some(Transfer {
                sent_ns: Some(now),
                ..t
            });
            let message = Message::ElectNow(ElectNow {
                leadership_term_id: self.vote.term,
                leader_member_id: self.config.member_id,
                candidate_member_id: t.to,
            });
            self.send(t.to, message);
        }
    }

    fn on_elect_now(&mut self, now: u64, from: MemberId, m: ElectNow) {
        if m.candidate_member_id != self.config.member_id
            || m.leadership_term_id != self.vote.term
            || self.leader != Some(from)
            || self.state != State::FollowerLive
        {
            return;
        }
        // Our log holds everything the leader appended: start the election without the
        // canvass or the nomination delay.
        if self.owes_log() || self.vote_recovery.is_some() {
            return;
        }
        self.counters.transfers_received += 1;
        self.transition(now, State::Canvass, Reason::LeadershipTransfer);
        self.transition(now, State::Nominate, Reason::LeadershipTransfer);
        self.nominate(now);
    }

    // ---- accessors ------------------------------------------------------------------------

    /// Panics, naming the member and the rule, if the module's own state breaks a rule it
    /// keeps: positions ordered, the term index ordered and within the log, a leader's state
    /// consistent with its term and vote, a leader's view of each peer ordered. The simulator
    /// calls it after every step; it costs a walk over the peers and the term index.
    pub fn assert_invariants(&self) {
        let id = self.config.member_id;
        assert!(
            self.durable <= self.appended && self.commit <= self.appended,
            "member {id}: durable {} and commit {} must not pass appended {}",
            self.durable,
            self.commit,
            self.appended
        );
        for w in self.terms.windows(2) {
            assert!(
                w[0].term < w[1].term && w[0].start_position <= w[1].start_position,
                "member {id}: term index out of order: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
        if let Some(last) = self.terms.last() {
            assert!(
                last.term <= self.vote.term,
                "member {id}: term index holds term {} beyond its current term {}",
                last.term,
                self.vote.term
            );
        }
        if self.state == State::LeaderLive {
            assert_eq!(
                self.leader,
                Some(id),
                "member {id}: leads but names another leader"
            );
            assert_eq!(
                self.vote.voted_for,
                Some(id),
                "member {id}: leads term {} without its own vote",
                self.vote.term
            );
            assert!(
                self.terms.last().is_some_and(|t| t.term == self.vote.term),
                "member {id}: leads term {} that its term index does not hold",
                self.vote.term
            );
            for (peer, p) in self.peers.iter().enumerate() {
                if peer as MemberId == id || !p.reconciled {
                    continue;
                }
                assert!(
                    p.durable <= p.appended && p.appended <= p.sent_high,
                    "member {id}: its view of member {peer} is out of order (durable {}, appended {}, sent {})",
                    p.durable,
                    p.appended,
                    p.sent_high
                );
            }
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn role(&self) -> Role {
        self.state.role()
    }
    pub fn term(&self) -> u64 {
        self.vote.term
    }
    pub fn vote_state(&self) -> VoteState {
        self.vote
    }
    pub fn leader(&self) -> Option<MemberId> {
        self.leader
    }
    pub fn commit_position(&self) -> u64 {
        self.commit
    }
    pub fn appended_position(&self) -> u64 {
        self.appended
    }
    pub fn durable_position(&self) -> u64 {
        self.durable
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }
    pub fn config(&self) -> &ConsensusConfig {
        &self.config
    }
    pub fn terms(&self) -> &[TermEntry] {
        &self.terms
    }
    /// The term a leader stamps on frames it appends, or `None` when not leading.
    pub fn leader_term(&self) -> Option<u64> {
        (self.state == State::LeaderLive).then_some(self.vote.term)
    }

    /// The term of the last byte in the log (0 for an empty log).
    pub fn last_log_term(&self) -> u64 {
        let i = self
            .terms
            .partition_point(|e| e.start_position < self.appended);
        i.checked_sub(1).map_or(0, |i| self.terms[i].term)
    }

    /// Moves the actions produced so far into `out` (which is cleared first).
    pub fn take_actions(&mut self, out: &mut Vec<Action>) {
        out.clear();
        std::mem::swap(out, &mut self.outbox);
    }

    fn push(&mut self, action: Action) {
        assert!(
            self.outbox.len() < OUTBOX_CAPACITY,
            "consensus outbox overflow: the node did not drain it"
        );
        self.outbox.push(action);
    }

    fn send(&mut self, to: MemberId, message: Message<'static>) {
        self.push(Action::Send { to, message });
    }

    fn others(&self) -> impl Iterator<Item = MemberId> {
        let me = self.config.member_id;
        (0..self.config.member_count).filter(move |&m| m != me)
    }

    fn my_log(&self) -> (u64, u64) {
        (self.last_log_term(), self.appended)
    }

    /// Whether this member's log is shorter than what it once reported durable (corruption
    /// cut it): then it must not lead, whatever its log looks like to others.
    /// The longest log this member promised (see `LogState::promised`).
    pub fn promised(&self) -> (u64, u64) {
        self.promised
    }

    pub fn owes_log(&self) -> bool {
        #[cfg(any(test, feature = "sim"))]
        if self.broken(BrokenRule::ForgetDamage) {
            return false;
        }
        match self.promised {
            // A snapshot ahead of a cut log: its bytes were committed, but their last term is
            // unknown here. Owed until the log holds that position again (a real term never
            // reaches u64::MAX, so comparing logs would owe it for ever).
            (u64::MAX, position) => self.appended < position,
            promised => self.my_log() < promised,
        }
    }

    /// The log this member vouches for in elections: its own, or what it promised if more.
    fn vouched_log(&self) -> (u64, u64) {
        if self.owes_log() {
            self.promised
        } else {
            self.my_log()
        }
    }

    #[cfg(any(test, feature = "sim"))]
    fn broken(&self, rule: BrokenRule) -> bool {
        self.config.broken_rule == Some(rule)
    }

    // ---- the one transition function -------------------------------------------------------

    fn transition(&mut self, now: u64, to: State, reason: Reason) {
        let from = self.state;
        let legal = match to {
            State::Init => false,
            State::Canvass | State::FollowerBallot | State::FollowerReconcile => {
                from != State::Init || to == State::Canvass
            }
            State::Nominate => from == State::Canvass,
            State::CandidateBallot => from == State::Nominate,
            State::LeaderLive => matches!(
                from,
                State::CandidateBallot | State::Nominate | State::Canvass
            ),
            State::FollowerLive => from == State::FollowerReconcile,
        };
        assert!(
            legal,
            "illegal transition {from:?} -> {to:?} ({reason:?}) in term {}",
            self.vote.term
        );
        self.state = to;
        self.counters.transitions += 1;
        if to != State::LeaderLive {
            self.transfer = None;
        }
        self.push(Action::Transition {
            from,
            to,
            reason,
            term: self.vote.term,
        });
        match to {
            State::Canvass => {
                self.leader = None;
                let timeout = if self.startup {
                    self.config.startup_canvass_timeout_ns
                } else {
                    self.config.election_timeout_ns
                };
                self.deadline_ns = now.saturating_add(timeout);
                self.next_heartbeat_ns = now;
                for p in &mut self.peers {
                    p.canvassed = false;
                    p.vote = None;
                }
            }
            State::Nominate => {
                // Random delay, staggered by rank among members with an equal log: members
                // that detect a dead leader at the same heartbeat would otherwise often
                // nominate together and veto each other. The lowest id with the best log goes
                // first; the next waits at least half an election timeout more.
                let half = self.config.election_timeout_ns / 2;
                let mine = self.my_log();
                let me = self.config.member_id;
                let rank = self
                    .others()
                    .filter(|&m| {
                        let p = &self.peers[m as usize];
                        m < me && p.canvassed && (p.log_term, p.log_position) == mine
                    })
                    .count() as u64;
                let jitter = self.rng.below(half + 1);
                self.deadline_ns = now.saturating_add(jitter + rank * half);
            }
            State::CandidateBallot | State::FollowerBallot => {
                self.deadline_ns = now.saturating_add(self.config.election_timeout_ns);
            }
            State::FollowerReconcile => {
                self.leader_contact_ns = now;
                self.next_heartbeat_ns = now;
            }
            State::LeaderLive | State::FollowerLive | State::Init => {}
        }
    }

    /// Adopts a higher term: the vote in it is still free. Leaders and candidates step down.
    fn observe_term(&mut self, now: u64, term: u64) {
        if term <= self.vote.term {
            return;
        }
        self.vote = VoteState {
            term,
            voted_for: None,
        };
        self.push(Action::PersistVote(self.vote));
        if matches!(
            self.state,
            State::LeaderLive | State::Nominate | State::CandidateBallot | State::FollowerLive
        ) {
            self.transition(now, State::Canvass, Reason::HigherTerm);
        }
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// Starts the first election.
    pub fn start(&mut self, now: u64) {
        assert_eq!(self.state, State::Init);
        self.leader_contact_ns = now;
        self.transition(now, State::Canvass, Reason::Start);
    }

    /// Time passes. Call at least every heartbeat interval.
    pub fn on_tick(&mut self, now: u64) {
        match self.state {
            State::Init => {}
            State::Canvass => self.tick_canvass(now),
            State::Nominate => {
                if now >= self.deadline_ns {
                    self.nominate(now);
                }
            }
            State::CandidateBallot => {
                if now >= self.deadline_ns {
                    self.transition(now, State::Canvass, Reason::BallotTimeout);
                }
            }
            State::FollowerBallot => {
                if now >= self.deadline_ns {
                    self.transition(now, State::Canvass, Reason::VoteTimeout);
                }
            }
            State::FollowerReconcile | State::FollowerLive => self.tick_follower(now),
            State::LeaderLive => self.tick_leader(now),
        }
    }

    fn tick_canvass(&mut self, now: u64) {
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

    fn nominate(&mut self, now: u64) {
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

    fn count_votes(&mut self, now: u64) {
        let yes = 1 + self.peers.iter().filter(|p| p.vote == Some(true)).count();
        if yes >= self.config.quorum() {
            self.become_leader(now, Reason::BallotWon);
        }
    }

    fn become_leader(&mut self, now: u64, reason: Reason) {
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
    fn send_new_leadership_term(&mut self, to: MemberId) {
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

    fn tick_leader(&mut self, now: u64) {
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

    fn send_commit(&mut self, to: MemberId) {
        let message = Message::CommitPosition(CommitPosition {
            leadership_term_id: self.vote.term,
            log_position: self.commit,
            leader_member_id: self.config.member_id,
        });
        self.send(to, message);
    }

    /// Sends every reconciled follower the bytes it has not been sent, within its window.
    fn replicate(&mut self) {
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

    fn tick_follower(&mut self, now: u64) {
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

    fn send_canvass_to(&mut self, to: MemberId) {
        let (log_term, log_position) = self.my_log();
        let message = Message::CanvassPosition(CanvassPosition {
            log_leadership_term_id: log_term,
            log_position,
            leadership_term_id: self.vote.term,
            follower_member_id: self.config.member_id,
        });
        self.send(to, message);
    }

    fn send_append_position(&mut self, to: MemberId, flags: u8) {
        let message = Message::AppendPosition(AppendPosition {
            leadership_term_id: self.vote.term,
            log_position: self.durable,
            appended_position: self.appended,
            follower_member_id: self.config.member_id,
            flags,
        });
        self.send(to, message);
    }

    /// A message from member `from`. Messages from unknown members or claiming to be from
    /// someone else are counted and dropped.
    pub fn on_message(&mut self, now: u64, from: MemberId, message: &Message<'_>) {
        if from >= self.config.member_count
            || from == self.config.member_id
            || self.state == State::Init
        {
            self.counters.messages_dropped += 1;
            return;
        }
        if message_term(message).is_some_and(|t| t > self.vote.term.saturating_add(TERM_JUMP_MAX)) {
            self.refuse("a term beyond the jump limit");
            return;
        }
        if let Some(heard) = &mut self.vote_recovery {
            self.abstain_through = self.abstain_through.max(message_term(message).unwrap_or(0));
            heard[from as usize] = true;
            if heard.iter().all(|&h| h) {
                // Done: the recovered bound becomes an ordinary durable vote, for ourselves,
                // in the highest term announced (so no other vote is granted in it).
                self.vote_recovery = None;
                let through = self.abstain_through;
                self.observe_term(now, through);
                if self.vote.voted_for != Some(self.config.member_id) {
                    self.vote.voted_for = Some(self.config.member_id);
                    self.push(Action::PersistVote(self.vote));
                }
            }
        }
        match *message {
            Message::CanvassPosition(m) if m.follower_member_id == from => {
                self.on_canvass(now, from, m)
            }
            Message::RequestVote(m) if m.candidate_member_id == from => {
                self.on_request_vote(now, from, m)
            }
            Message::Vote(m) if m.follower_member_id == from => self.on_vote(now, from, m),
            Message::NewLeadershipTerm(m) if m.leader_member_id == from => {
                self.on_new_leadership_term(now, from, m)
            }
            Message::AppendPosition(m) if m.follower_member_id == from => {
                self.on_append_position(now, from, m)
            }
            Message::CommitPosition(m) if m.leader_member_id == from => {
                self.on_commit_position(now, from, m)
            }
            Message::ElectNow(m) if m.leader_member_id == from => self.on_elect_now(now, from, m),
            Message::AppendData { header, bytes } if header.leader_member_id == from => self
                .on_append_data(
                    now,
                    from,
                    header.leadership_term_id,
                    header.log_position,
                    bytes.len(),
                ),
            _ => self.counters.messages_dropped += 1,
        }
    }

    fn on_canvass(&mut self, now: u64, from: MemberId, m: CanvassPosition) {
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

    fn on_request_vote(&mut self, now: u64, from: MemberId, m: RequestVote) {
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

    fn on_vote(&mut self, now: u64, from: MemberId, m: Vote) {
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
    fn accept_leader_term(&mut self, now: u64, from: MemberId, term: u64) -> bool {
        if term < self.vote.term {
            self.send_canvass_to(from);
            return false;
        }
        self.observe_term(now, term);
        true
    }

    fn on_new_leadership_term(&mut self, now: u64, from: MemberId, m: NewLeadershipTerm) {
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
        let drops_terms = self
            .terms
            .iter()
            .any(|e| e.term > m.matched_term_id || e.start_position >= cut);
        if cut < self.commit {
            // Committed bytes are never cut: no real leader of a later term lacks them.
            self.refuse("a cut below the commit position");
            return;
        }
        if cut < self.appended || drops_terms {
            self.counters.truncations += 1;
            self.push(Action::Truncate {
                position: cut,
                last_term_kept: m.matched_term_id,
            });
            self.appended = cut;
            self.durable = self.durable.min(cut);
            let kept = m.matched_term_id;
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

    fn follow_commit(&mut self, leader_commit: u64) {
        let commit = leader_commit.min(self.appended);
        if commit > self.commit {
            self.commit = commit;
            self.push(Action::Commit { position: commit });
        }
    }

    fn on_append_position(&mut self, now: u64, from: MemberId, m: AppendPosition) {
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
    fn plausible(&self, from: MemberId, m: &AppendPosition) -> bool {
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

    fn on_commit_position(&mut self, now: u64, from: MemberId, m: CommitPosition) {
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

    fn on_append_data(&mut self, now: u64, from: MemberId, term: u64, position: u64, len: usize) {
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

    fn update_commit(&mut self) {
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
