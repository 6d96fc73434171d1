//! The consensus state machine. See the module docs of `consensus` for the protocol.

//!
//! This file holds the state, its accessors and invariants, role transitions, the tick and the
//! message dispatch; `election`, `replication` and `transfer` hold those protocols.

mod election;
mod replication;
mod transfer;

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
use transfer::Transfer;

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

    /// The longest log this member promised (see `LogState::promised`).
    pub fn promised(&self) -> (u64, u64) {
        self.promised
    }

    /// Whether this member's log is shorter than what it once reported durable (corruption
    /// cut it): then it must not lead, whatever its log looks like to others.
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
}
