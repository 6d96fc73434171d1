//! Sans-IO Raft in the style of Aeron Cluster: election (canvass, nominate, ballot with veto),
//! replication by byte position, commit position, leadership-term reconciliation.
//!
//! Inputs are messages, log events (appended, durable, a term started) and time; outputs are
//! [`Action`]s in a bounded outbox that the node carries out *in order*. No clocks, sockets,
//! files, threads or unseeded randomness: the election jitter comes from a PRNG seeded by the
//! configuration, so the same inputs give the same actions.
//!
//! ```text
//!            ┌──────────────── timeout / veto ─────────────────┐
//!            ▼                                                 │
//! Init ─▶ Canvass ─▶ Nominate ─▶ CandidateBallot ─▶ LeaderLive ─┤ (lost quorum)
//!            │  ▲                                              │
//!            │  └──── FollowerBallot ◀── (granted a vote)       │
//!            └─▶ FollowerReconcile ─▶ FollowerLive ──(leader silent)─┘
//! ```
//!
//! Positions: a member's log is described by `(last_log_term, appended)`, where the last log
//! term is the term of the last byte in the log (from the term index, which holds only terms
//! that have bytes). Raft's "at least as up-to-date" compares these pairs.
//!
//! Commit: the leader's commit position is the quorum-th highest durable position among
//! itself and the followers reconciled in its term, and advances only past the start of its
//! own term (Raft §5.4.2: a leader commits earlier terms' entries only through its own).

#![forbid(unsafe_code)]

mod core;
#[cfg(test)]
mod tests;

pub use self::core::{Consensus, TransferError, FLAG_GAP, FLAG_RECONCILED, TERM_JUMP_MAX};

use crate::codec::Message;

/// One term and the log position where it began: an entry of the leadership-term index.
/// Consensus owns the index; the log stores it durably (`log::TermIndex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermEntry {
    pub term: u64,
    pub start_position: u64,
}

/// A member's index in the cluster, `0..member_count`.
pub type MemberId = u32;

/// Settings of the consensus module. Timeouts follow Aeron Cluster's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusConfig {
    pub member_id: MemberId,
    pub member_count: u32,
    /// How often a leader sends heartbeats (commit position, or the new term to followers
    /// that have not reconciled yet) and how often canvass positions go out.
    pub leader_heartbeat_interval_ns: u64,
    /// A follower that hears nothing from its leader for this long starts an election; a
    /// leader that hears from no quorum for this long steps down.
    pub leader_heartbeat_timeout_ns: u64,
    /// How long a canvass waits for a quorum, and how long a ballot lasts.
    pub election_timeout_ns: u64,
    /// How long the first canvass after start waits for every member before settling for a
    /// quorum.
    pub startup_canvass_timeout_ns: u64,
    /// Only this member may nominate itself (for benchmarks with a fixed leader).
    pub appointed_leader: Option<MemberId>,
    /// Bytes a leader sends a follower beyond the follower's acknowledged appended position
    /// before waiting for an acknowledgement.
    pub replication_window_bytes: u64,
    /// Seed of the election jitter.
    pub seed: u64,
    /// Deliberately broken rules, to prove the simulator's checkers have teeth.
    #[cfg(any(test, feature = "sim"))]
    pub broken_rule: Option<BrokenRule>,
}

/// Rules the teeth tests break on purpose.
#[cfg(any(test, feature = "sim"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenRule {
    /// The leader commits its own durable position without a quorum.
    CommitWithoutQuorum,
    /// Elections ignore logs: members nominate themselves and grant votes without comparing
    /// their log with the candidate's (a vote for a stale log).
    IgnoreLogsInElection,
    /// The leader believes every position a follower reports (no plausibility check).
    TrustPeerPositions,
    /// A member whose log corruption cut forgets what it had reported durable (the old
    /// "cut at the first bad frame" recovery): it votes and leads with the shorter log.
    ForgetDamage,
    /// Not a consensus rule: the simulated disk loads the other slot of a record whose
    /// newest slot is damaged (the old record loading), so a member may take an older vote.
    PassOverDamagedSlot,
}

impl ConsensusConfig {
    /// Defaults for `member_id` of `member_count`: heartbeat 200 ms, heartbeat timeout 10 s,
    /// election timeout 1 s, startup canvass 5 s, replication window 4 MiB.
    pub fn new(member_id: MemberId, member_count: u32) -> Self {
        Self {
            member_id,
            member_count,
            leader_heartbeat_interval_ns: 200_000_000,
            leader_heartbeat_timeout_ns: 10_000_000_000,
            election_timeout_ns: 1_000_000_000,
            startup_canvass_timeout_ns: 5_000_000_000,
            appointed_leader: None,
            replication_window_bytes: 4 << 20,
            seed: member_id as u64,
            #[cfg(any(test, feature = "sim"))]
            broken_rule: None,
        }
    }

    /// Checks every value; the error names the key, the value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &'static str, value: u64, allowed: &'static str| {
            Err(ConfigError {
                key,
                value,
                allowed,
            })
        };
        if !(1..=64).contains(&self.member_count) {
            return err("cluster.member_count", self.member_count as u64, "1..=64");
        }
        if self.member_id >= self.member_count {
            return err(
                "cluster.member_id",
                self.member_id as u64,
                "0..member_count",
            );
        }
        if self.leader_heartbeat_interval_ns == 0 {
            return err("consensus.leader_heartbeat_interval_ns", 0, "> 0");
        }
        if self.leader_heartbeat_timeout_ns <= self.leader_heartbeat_interval_ns {
            return err(
                "consensus.leader_heartbeat_timeout_ns",
                self.leader_heartbeat_timeout_ns,
                "> leader_heartbeat_interval_ns",
            );
        }
        if self.election_timeout_ns < 2 {
            return err(
                "consensus.election_timeout_ns",
                self.election_timeout_ns,
                ">= 2",
            );
        }
        if self.startup_canvass_timeout_ns < self.election_timeout_ns {
            return err(
                "consensus.startup_canvass_timeout_ns",
                self.startup_canvass_timeout_ns,
                ">= election_timeout_ns",
            );
        }
        if let Some(id) = self.appointed_leader.filter(|&id| id >= self.member_count) {
            return err("consensus.appointed_leader", id as u64, "0..member_count");
        }
        if self.replication_window_bytes < 4096 {
            return err(
                "consensus.replication_window_bytes",
                self.replication_window_bytes,
                ">= 4096",
            );
        }
        Ok(())
    }

    /// Members needed for a majority.
    pub fn quorum(&self) -> usize {
        self.member_count as usize / 2 + 1
    }
}

/// A configuration value out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad config {key} = {value}: allowed {allowed}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: u64,
    pub allowed: &'static str,
}

/// What a member persisted about elections: its current term and its vote in that term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoteState {
    pub term: u64,
    pub voted_for: Option<MemberId>,
}

/// The member's log as consensus needs to know it at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    pub appended: u64,
    pub durable: u64,
    /// Terms with bytes in the log, in order.
    pub terms: Vec<TermEntry>,
    /// (term, position) of the longest log this member reported durable before its disk was
    /// found damaged; (0, 0) if it never was. See `Log::promise`.
    pub promised: (u64, u64),
    /// Bytes before this position are committed (the log's start, behind a snapshot, or what
    /// the service already applied): reconciliation never cuts below it.
    pub start: u64,
}

/// The member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

impl Role {
    /// The role's number where it is written down: admin responses, the counters file, the
    /// service thread's feed. 0 follower, 1 candidate, 2 leader.
    pub fn code(self) -> u8 {
        match self {
            Role::Follower => 0,
            Role::Candidate => 1,
            Role::Leader => 2,
        }
    }

    /// The role a [`Role::code`] names; an unknown number reads as follower, the role that
    /// claims nothing.
    pub fn from_code(code: u8) -> Role {
        match code {
            2 => Role::Leader,
            1 => Role::Candidate,
            _ => Role::Follower,
        }
    }
}

/// Election and replication states, after Aeron Cluster's `ElectionState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Init,
    Canvass,
    Nominate,
    CandidateBallot,
    FollowerBallot,
    LeaderLive,
    FollowerReconcile,
    FollowerLive,
}

impl State {
    pub fn role(self) -> Role {
        match self {
            State::Nominate | State::CandidateBallot => Role::Candidate,
            State::LeaderLive => Role::Leader,
            _ => Role::Follower,
        }
    }
}

/// Why the state changed; logged with every transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Start,
    CanvassUnanimous,
    CanvassQuorum,
    NominationDelay,
    BallotWon,
    BallotVetoed,
    BallotTimeout,
    VoteGranted,
    VoteTimeout,
    NewLeader,
    Reconciled,
    HigherTerm,
    LeaderSilent,
    QuorumLost,
    AppointedLeader,
    /// The leader handed over: this member was told to start an election now.
    LeadershipTransfer,
}

/// Things the node must do, in the order given. Each one's ordering rule is on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make the term and vote durable. Every later action (in particular a `Send` of a vote
    /// or of anything in the new term) waits until this is durable.
    PersistVote(VoteState),
    /// Send a consensus message (no borrowed bytes) to a member.
    Send {
        to: MemberId,
        message: Message<'static>,
    },
    /// Send the log bytes `[from, to)` to a member as `AppendData` in the leader's term, in
    /// as many datagrams as needed. `from` is a frame boundary or where the previous
    /// `SendLog` to that member ended; `to` may fall inside a frame (the replication window
    /// ends there).
    SendLog {
        to: MemberId,
        leadership_term_id: u64,
        from: u64,
        to_position: u64,
    },
    /// Leader only: record (durably) that `term` starts at `position`, then append the
    /// term's `NewLeadershipTermEvent` frame there, then report the new end with
    /// `on_appended`.
    StartTerm {
        term: u64,
        position: u64,
        leader: MemberId,
    },
    /// Follower only: append the replicated bytes of the `AppendData` just passed to
    /// `on_message`, skipping the first `skip` bytes (already in the log), then report the
    /// new end with `on_appended` (and any `NewLeadershipTermEvent` with `on_term_started`).
    AppendReceived { skip: usize },
    /// Follower only: cut the log at `position` and drop terms above `last_term_kept` from
    /// the term index, durably. Never below the commit position (asserted).
    Truncate { position: u64, last_term_kept: u64 },
    /// The commit position advanced: the service may apply up to here.
    Commit { position: u64 },
    /// The role or election state changed.
    Transition {
        from: State,
        to: State,
        reason: Reason,
        term: u64,
    },
}

/// Counters an operator can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub transitions: u64,
    pub elections_started: u64,
    pub leaderships: u64,
    pub votes_granted: u64,
    pub votes_refused: u64,
    /// Vote requests not answered because this member's log is shorter than what it had
    /// vouched for before corruption cut it, and the candidate lacks that too.
    pub votes_abstained: u64,
    pub truncations: u64,
    pub messages_dropped: u64,
    /// Well-formed messages whose numbers cannot be true (a position beyond what this
    /// member sent or holds, off a frame boundary, a term leap, a cut below the commit
    /// position, a leader message to the leader of that term): dropped.
    pub messages_invalid: u64,
    pub resends: u64,
    /// Leadership transfers this member was asked to take (as the target).
    pub transfers_received: u64,
    /// Transfers this leader gave up (the target did not take over in time).
    pub transfers_abandoned: u64,
}

/// Outbox capacity: the most actions one input can produce is bounded by a few per member.
pub const OUTBOX_CAPACITY: usize = 8 + 8 * 64;
