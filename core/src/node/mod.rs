//! `Node<Disk, Datagrams, Service>`: feeds inputs to consensus and carries out its actions in
//! order. The same glue runs on real threads (the runtime) and in the simulator.
//!
//! One call of [`Node::tick`] is one duty cycle: drive the log writer (durable position →
//! consensus), drain received datagrams (each frame → consensus, actions carried out right
//! away, so an `AppendReceived` still has its message's bytes), let time pass in consensus,
//! and apply committed frames to the service.
//!
//! Ordering rules carried out here: a vote or term is durable (`PersistVote`, synchronous)
//! before any later action runs; a new term is in the durable term index before its first
//! frame is appended; a follower's term index gets each term before that term's first frame.
//!
//! This file holds the node's state, its duty cycle, datagram intake and the carrying out of
//! consensus actions. Each other job has a file: `open` (start and what it refuses),
//! `replication` (log traffic between members), `offers` (what enters the log on the leader,
//! egress routing), `apply_stage` (committed frames to the service), `snapshots` (taking,
//! retiring behind, sending and installing), `admin` (transfer, step-down, shutdown),
//! `clients` (client sessions at the door), `identity` (the settings check between members),
//! `in_flight` (resends not appended twice).

#![forbid(unsafe_code)]

mod admin;
mod apply_stage;
mod clients;
#[cfg(test)]
mod door_tests;
mod identity;
mod in_flight;
mod offers;
mod open;
pub mod remote;
mod replication;
mod snapshots;
pub mod stages;
pub use apply_stage::ApplyStage;
pub use clients::SessionLimits;
#[cfg(any(test, feature = "sim"))]
pub(crate) use open::decode_vote;
pub(crate) use open::encode_vote;
use replication::Partial;
use snapshots::InstallSource;

use crate::access::Access;
use crate::codec::message::{
    AppendDataHeader, ClientEventKind, CloseReason, NewLeadershipTermEvent, SessionClose,
    SessionMessageHeader, SessionOpen, TimerEvent,
};
use crate::codec::message::{
    ClusterAction, ClusterActionKind, InstallAck, InstallSnapshotHeader, MemberSettings,
};
use crate::codec::{self, Decoded, FrameMeta, FrameType, Frames, Message};
use crate::consensus::{
    Action, ConfigError, Consensus, ConsensusConfig, LogState, MemberId, Role, VoteState,
};
use crate::io::{Datagrams, Disk, DiskError, CLIENT_ENDPOINT_BASE};
use crate::log::{Log, LogConfig, LogError, TermEntry};
use crate::service::snapshot;
use crate::service::snapshot::TakenSnapshot;
use crate::service::{Applier, Egress, Service};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::collections::HashMap;

/// The file holding the persisted term and vote.
pub const VOTE_FILE: &str = "vote-state";
/// Datagrams handled per duty cycle before the node gives the rest of the cycle its turn.
pub const DATAGRAMS_PER_CYCLE_MAX: usize = 64;
/// Most log bytes carried by one `AppendData` datagram (a larger single frame goes alone).
pub const APPEND_CHUNK_BYTES: usize = 60 * 1024;

/// The most memory an install's first chunk reserves; the rest grows as chunks arrive.
const INSTALL_RESERVE_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub consensus: ConsensusConfig,
    pub log: LogConfig,
    /// The leader asks every replica for a snapshot each time the log has grown by this many
    /// bytes since the last one (0: only when asked, [`Node::request_snapshot`]).
    pub snapshot_interval_bytes: u64,
    /// The leader closes a session it has not heard from for this long (0: never).
    pub session_timeout_ns: u64,
    /// The operator confirmed that this member's vote record is lost (`raftline node
    /// --recover-vote`): start without it, taking the safe path of [`Consensus::recover_vote`].
    pub recover_vote: bool,
    pub sessions: SessionLimits,
    /// The largest snapshot file this member accepts from a leader; a larger install is
    /// refused before anything is reserved.
    pub max_install_bytes: u64,
}

/// `voted_for` of a vote record written by `--recover-vote`: the recovery is under way
/// (survives a restart) and no vote is granted in the record's term.
pub const VOTE_RECOVERING: MemberId = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("persisting the vote in {VOTE_FILE}: {0}")]
    Vote(DiskError),
    #[error("{VOTE_FILE} is damaged (bad length or checksum)")]
    VoteCorrupt,
    #[error("the vote record ({VOTE_FILE}) is missing or unreadable ({why}), but the log holds bytes up to position {log_end} in terms up to {last_term}: this member may have voted in a term it no longer remembers, and voting again could elect two leaders in one term. Restore the file from a backup of this member, or start once with `raftline node --recover-vote`: the member then votes in no election until it has heard from every other member, and afterwards only in terms above every term they announce")]
    VoteMissing {
        why: String,
        log_end: u64,
        last_term: u64,
    },
    #[error("the log starts at position {start} (its first segment file is {first}) but the service's state (its newest readable snapshot, or none) covers only up to {service}: the log before {start} is missing, and this member cannot rebuild its state from its own disk. Restore the missing segment files or a snapshot at or after {start} from a backup of this member. Only if the other members hold every acknowledged write: move this log directory away and start the member with --recover-vote, so that it catches up from the leader as a replacement")]
    LogBehindSnapshot {
        start: u64,
        first: String,
        service: u64,
    },
    #[error("the node stopped after an earlier error: {0}")]
    Stopped(Box<NodeError>),
    #[error("installing the leader's snapshot at position {position}: {message}")]
    Install { position: u64, message: String },
}

/// Why a client request was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<MemberId> },
    #[error("the log is full; retry after the next duty cycle")]
    BackPressure,
    #[error("leadership is being handed to member {to}; retry there")]
    Transferring { to: MemberId },
    #[error(
        "message of {len} bytes exceeds the longest allowed ({max}, session.max_message_bytes)"
    )]
    TooLarge { len: usize, max: usize },
}

/// Counters of what the node dropped and why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub datagrams_received: u64,
    pub frames_malformed: u64,
    pub appends_refused: u64,
    pub frames_applied: u64,
    pub client_requests: u64,
    pub client_redirects: u64,
    pub client_backpressure: u64,
    /// Snapshots sent whole to a follower behind the leader's purged log, and installed here.
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    /// Follower reports of a log end that is not a frame boundary of this leader's log.
    pub peer_reports_refused: u64,
    /// Apply cycles that found the commit position inside a frame (a false durable report
    /// counted toward it); the frame waits.
    pub commit_inside_frame: u64,
    /// Corruption below the durable end found when the log was opened (0 or 1).
    pub log_damage_found: u64,
    /// Client messages longer than `max_message_bytes`, refused (`TooLarge`).
    pub messages_too_large: u64,
    /// Connects whose credential the authenticator refused.
    pub connects_unauthenticated: u64,
    /// Connects refused at a session limit.
    pub sessions_refused: u64,
    /// Session frames (messages, keep-alives, closes) for a session that is not open or from
    /// a source it is not bound to: answered `Unbound`, never appended or remembered.
    pub session_frames_unbound: u64,
    /// Admin requests without the admin credential.
    pub admin_refused: u64,
    /// Snapshot installs refused before any memory was reserved (too large a file).
    pub installs_refused: u64,
    /// Settings from a member that disagree with this member's (see `identity`).
    pub member_settings_differ: u64,
    /// Frames from a member dropped because its settings were not (yet) heard to agree.
    pub member_frames_unagreed: u64,
    /// Client resends of a message this leader appended in this term and has not committed:
    /// not appended again (see `in_flight`).
    pub resends_in_flight: u64,
}

/// See the module docs.
pub struct Node<D: Disk, N: Datagrams, A: ApplyStage> {
    id: MemberId,
    /// The settings the members must agree on, and whether each other member does.
    identity: identity::Identity,
    /// Client messages appended in this term and not yet committed (see `in_flight`).
    in_flight: in_flight::InFlight,
    log: Log<D>,
    consensus: Consensus,
    net: N,
    applier: A,
    due: Vec<u64>,
    actions: Vec<Action>,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    read_buf: Vec<u8>,
    egress: Vec<Egress>,
    /// Leader time stamps never go back, also across a failover.
    last_timestamp_ns: u64,
    commit: u64,
    failed: Option<NodeError>,
    stats: NodeStats,
    /// Where time goes inside this node (see `stages`).
    stages: stages::StageTimes,
    /// Keep egress for `take_egress` (the simulator's clients are not on the network).
    collect_egress: bool,
    /// Print every election state transition with its reason (operators want this; the
    /// simulator runs thousands of elections and does not).
    log_transitions: bool,
    /// Leader: timer events appended and not yet applied, by timer, with their positions
    /// (so a due timer's event is appended once).
    timers_appended: HashMap<u64, u64>,
    snapshot_interval_bytes: u64,
    /// The log position of the last snapshot action seen (appended as leader, or applied).
    last_snapshot_action: u64,
    /// Leader: digests at snapshot positions, to append for every replica to compare.
    digest_checks: Vec<(u64, u64)>,
    /// The leader as last seen, to tell clients when leadership moved away from this member.
    last_leader: Option<MemberId>,
    /// The cluster shuts down at this log position; when this replica applied it.
    shutdown: Option<(u64, Option<u64>)>,
    /// The newest snapshot position written durably (set by the runtime's snapshot writer):
    /// segments before it are retired, and followers behind the log's start get it.
    snapshot_durable: Option<Arc<AtomicU64>>,
    /// What recovery found that an operator must hear of (corruption below the durable end),
    /// for the runtime to print; the simulator reads the counters instead.
    recovery_notes: Vec<String>,
    /// (second-newest, newest) durable snapshot positions seen since start.
    snapshots_seen: (u64, u64),
    /// Segment files retired from the log, for the runtime to delete.
    retired: Vec<String>,
    /// Leader: what a follower behind the log start is sent (the term history before the
    /// start, then a snapshot file), for (snapshot position, log start); and how much each
    /// follower has acknowledged.
    install_source: Option<InstallSource>,
    installs: HashMap<MemberId, (u64, u64)>,
    /// Follower: a snapshot file being received.
    incoming: Option<Incoming>,
    /// Follower: the piece of a frame that the last `AppendData` ended in.
    partial: Option<Partial>,
    /// Where the service's state began: the snapshot it started from or last installed (it may
    /// be fed past the commit position this member knows only up to here).
    service_base: u64,
    /// Leader: where the last `SendLog` to each member ended (the next may start there,
    /// inside a frame).
    sent_to: HashMap<MemberId, u64>,
    /// Sessions open and being opened, and the client source each is bound to.
    sessions: clients::Sessions,
    limits: SessionLimits,
    access: Access,
    /// Refusals of each kind are printed at most once a second.
    next_refusal_note_ns: [u64; 3],
    session_timeout_ns: u64,
    next_session_check_ns: u64,
    max_install_bytes: u64,
}

/// A snapshot file arriving in chunks.
struct Incoming {
    header: InstallSnapshotHeader,
    bytes: Vec<u8>,
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// Panics, naming the member and the rule, if the node's parts disagree in a way the code
    /// never allows: the log's positions out of order, consensus not knowing the log as it is,
    /// the apply stage fed past the commit position or past the log. Calls
    /// [`Consensus::assert_invariants`] too. The simulator calls it after every step.
    pub fn assert_invariants(&self) {
        self.consensus.assert_invariants();
        let id = self.id;
        let (start, durable, appended) = (
            self.log.start_position(),
            self.log.durable_position(),
            self.log.appended_position(),
        );
        assert!(
            durable <= appended,
            "member {id}: log durable {durable} passes appended {appended}"
        );
        assert!(
            start <= appended || self.applier.fed_position() >= start,
            "member {id}: log starts at {start} beyond its end {appended} and the service's state"
        );
        assert_eq!(
            self.consensus.appended_position(),
            appended,
            "member {id}: consensus and the log disagree on the appended position"
        );
        assert!(
            self.consensus.durable_position() <= durable,
            "member {id}: consensus holds durable {} beyond the log's {durable}",
            self.consensus.durable_position()
        );
        let fed = self.applier.fed_position();
        assert!(
            fed <= self.commit.max(self.service_base),
            "member {id}: the service was fed to {fed}, past the commit position {} and its snapshot at {}",
            self.commit,
            self.service_base
        );
    }

    pub fn id(&self) -> MemberId {
        self.id
    }
    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }
    pub fn log(&self) -> &Log<D> {
        &self.log
    }
    pub fn log_mut(&mut self) -> &mut Log<D> {
        &mut self.log
    }
    pub fn applier(&self) -> &A {
        &self.applier
    }
    pub fn transport(&self) -> &N {
        &self.net
    }
    pub fn net_mut(&mut self) -> &mut N {
        &mut self.net
    }
    pub fn stats(&self) -> NodeStats {
        self.stats
    }
    pub fn stage_times(&self) -> &stages::StageTimes {
        &self.stages
    }
    pub fn commit_position(&self) -> u64 {
        self.commit
    }
    /// Print each election state transition (with its reason) to stderr.
    /// Lines about what the log's recovery found (corruption, repairs owed), to print once.
    pub fn recovery_notes(&self) -> &[String] {
        &self.recovery_notes
    }

    pub fn set_log_transitions(&mut self, on: bool) {
        self.log_transitions = on;
    }

    /// Who may open sessions and operate the cluster (default: everyone).
    pub fn set_access(&mut self, access: Access) {
        self.access = access;
    }

    /// The limits in force (`max_message_bytes` as clamped to what one log frame holds).
    pub fn session_limits(&self) -> SessionLimits {
        self.limits
    }

    /// Keep applied egress for [`Node::take_egress`] as well as routing it to clients.
    pub fn set_collect_egress(&mut self, collect: bool) {
        self.collect_egress = collect;
    }

    pub fn failure(&self) -> Option<&NodeError> {
        self.failed.as_ref()
    }
    /// Tells the service the node is stopping.
    pub fn terminate(&mut self) {
        self.applier.terminate();
    }

    /// Gives back the apply stage (and with it the service), after the node stopped.
    pub fn into_applier(self) -> A {
        self.applier
    }

    /// Gives back the disk (after a crash in the simulator).
    pub fn into_disk(self) -> D {
        self.log.into_disk()
    }

    fn check_running(&self) -> Result<(), NodeError> {
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(NodeError::Stopped(Box::new(e.clone()))),
        }
    }

    fn fail(&mut self, e: NodeError) -> NodeError {
        if self.failed.is_none() {
            self.failed = Some(e.clone());
        }
        e
    }

    /// One duty cycle; returns the amount of work done (0 = idle).
    pub fn tick(&mut self, now: u64) -> Result<usize, NodeError> {
        self.check_running()?;
        let result = self.tick_inner(now);
        result.map_err(|e| self.fail(e))
    }

    fn tick_inner(&mut self, now: u64) -> Result<usize, NodeError> {
        let mut work = self.drive_log(now)?;
        let mut recv_buf = std::mem::take(&mut self.recv_buf);
        // Capped per cycle, so timers, the log and apply keep their turn under a flood.
        let mut datagrams = 0;
        while datagrams < DATAGRAMS_PER_CYCLE_MAX {
            let Some((from, len)) = self.net.receive(&mut recv_buf) else {
                break;
            };
            datagrams += 1;
            self.stats.datagrams_received += 1;
            work += 1;
            let result = self.on_datagram(now, from, &recv_buf[..len]);
            if let Err(e) = result {
                self.recv_buf = recv_buf;
                return Err(e);
            }
        }
        self.recv_buf = recv_buf;
        self.consensus.on_tick(now);
        self.run_actions(now, None)?;
        work += self.apply_committed()?;
        work += self.applier.poll_egress(&mut self.egress);
        work += self.fire_due_timers(now);
        self.route_egress(now);
        work += self.snapshot_actions(now);
        self.announce_new_leader(now);
        self.retire_behind_snapshot()?;
        self.close_silent_sessions(now);
        self.send_member_settings(now);
        // Start the disk on what this cycle appended (client frames, entries from the leader)
        // now, not at the start of the next cycle: the write then overlaps whatever runs
        // before it (the other members' cycles in shared threading, the idle wait), and a
        // write that completes at once (the page cache) is acknowledged in this cycle's flush.
        work += self.drive_log(now)?;
        self.net.flush();
        self.stages.observe(
            now,
            self.log.appended_position(),
            self.log.durable_position(),
            self.commit,
            self.applier.applied_position(),
        );
        Ok(work)
    }

    /// Reaps the disk, starts its next write, and tells consensus what became durable.
    fn drive_log(&mut self, now: u64) -> Result<usize, NodeError> {
        let mut work = self.log.do_work()?;
        let durable = self.log.durable_position();
        if durable > self.consensus.durable_position() {
            self.consensus.on_durable(now, durable);
            self.run_actions(now, None)?;
            work += 1;
        }
        Ok(work)
    }

    /// Sends this member's settings to every member not yet agreed with (once per heartbeat
    /// interval each).
    fn send_member_settings(&mut self, now: u64) {
        let mut due = Vec::new();
        self.identity.due(now, &mut due);
        for to in due {
            let settings = self.identity.settings_for(to);
            self.send(now, to, &Message::MemberSettings(settings));
        }
    }

    fn on_member_settings(&mut self, now: u64, from: MemberId, theirs: &MemberSettings) {
        let heard = self.identity.on_settings(now, from, theirs);
        if let Some(why) = heard.differs {
            if self.log_transitions {
                tracing::warn!(
                    member = self.id,
                    peer = from,
                    reason = %why,
                    "member {}: settings differ, {why}; its messages are refused until they agree",
                    self.id
                );
            }
        }
        if !self.identity.agreed(from) {
            self.stats.member_settings_differ += 1;
        }
        if heard.answer {
            let settings = self.identity.settings_for(from);
            self.send(now, from, &Message::MemberSettings(settings));
        }
    }

    fn on_datagram(&mut self, now: u64, from: MemberId, bytes: &[u8]) -> Result<(), NodeError> {
        for item in Frames::new(bytes) {
            let frame = match item {
                Ok((_, frame)) => frame,
                Err(_) => {
                    self.stats.frames_malformed += 1;
                    return Ok(());
                }
            };
            if from >= CLIENT_ENDPOINT_BASE {
                self.on_client_frame(now, from, &frame);
                continue;
            }
            let message = match Message::decode(&frame) {
                Ok(m) => m,
                Err(_) => {
                    self.stats.frames_malformed += 1;
                    continue;
                }
            };
            if let Message::MemberSettings(theirs) = message {
                self.on_member_settings(now, from, &theirs);
                continue;
            }
            if !self.identity.agreed(from) {
                self.stats.member_frames_unagreed += 1;
                continue;
            }
            match message {
                Message::AppendData { header, bytes } => {
                    self.on_append_data(now, from, header, bytes)?;
                    continue;
                }
                Message::InstallSnapshot { header, bytes } => {
                    self.on_install_chunk(now, from, header, bytes)?;
                    continue;
                }
                Message::InstallAck(ack) => {
                    self.on_install_ack(now, from, ack);
                    continue;
                }
                _ => {}
            }
            self.consensus.on_message(now, from, &message);
            self.run_actions(now, Some(&message))?;
        }
        Ok(())
    }

    /// Carries out the consensus actions in order. `current` is the message being handled,
    /// whose bytes an `AppendReceived` refers to.
    fn run_actions(&mut self, now: u64, current: Option<&Message<'_>>) -> Result<(), NodeError> {
        loop {
            let mut actions = std::mem::take(&mut self.actions);
            self.consensus.take_actions(&mut actions);
            if actions.is_empty() {
                self.actions = actions;
                return Ok(());
            }
            for action in actions.drain(..) {
                self.run_action(now, action, current)?;
            }
            self.actions = actions;
        }
    }

    fn run_action(
        &mut self,
        now: u64,
        action: Action,
        current: Option<&Message<'_>>,
    ) -> Result<(), NodeError> {
        match action {
            Action::PersistVote(vote) => {
                self.log
                    .disk_mut()
                    .store_record(VOTE_FILE, &encode_vote(vote))
                    .map_err(NodeError::Vote)?;
            }
            Action::Send { to, message } => self.send(now, to, &message),
            Action::SendLog {
                to,
                leadership_term_id,
                from,
                to_position,
            } => {
                self.send_log(now, to, leadership_term_id, from, to_position)?;
            }
            Action::StartTerm {
                term,
                position,
                leader,
            } => {
                assert_eq!(
                    position,
                    self.log.appended_position(),
                    "a term starts at the end of the log"
                );
                self.log.append_term(term, position)?;
                if let Some(meta) = self.log.last_frame_meta()? {
                    self.last_timestamp_ns = self.last_timestamp_ns.max(meta.timestamp_ns);
                }
                let event = Message::NewLeadershipTermEvent(NewLeadershipTermEvent {
                    leadership_term_id: term,
                    term_base_log_position: position,
                    leader_member_id: leader,
                    member_count: self.consensus.config().member_count,
                });
                let meta = self.stamp(now, term, 0);
                self.append_leader(meta, &event)?;
            }
            Action::AppendReceived { skip } => {
                let Some(Message::AppendData { header, bytes }) = current else {
                    panic!("AppendReceived without the AppendData it refers to");
                };
                self.append_received(now, header.log_position + skip as u64, &bytes[skip..])?;
            }
            Action::Truncate {
                position,
                last_term_kept,
            } => {
                // After a snapshot install the applier may be ahead of the log (the snapshot
                // covers bytes the log has yet to receive): then no byte present may go.
                assert!(
                    position >= self.applier.fed_position().min(self.log.appended_position()),
                    "member {}: truncating to {position} would drop applied bytes (applied to {}, log {}..{}, last term kept {last_term_kept})",
                    self.id,
                    self.applier.fed_position(),
                    self.log.start_position(),
                    self.log.appended_position()
                );
                self.log.truncate(position)?;
                self.log.truncate_terms_after(last_term_kept)?;
                self.sessions.forget_opens_from(position);
            }
            Action::Commit { position } => {
                assert!(position >= self.commit, "commit position went back");
                self.commit = position;
            }
            Action::Transition {
                from,
                to,
                reason,
                term,
            } => {
                if from.role() != to.role() {
                    self.applier.on_role_change(to.role());
                }
                if self.log_transitions {
                    let (member, appended, durable, commit) = (
                        self.id,
                        self.log.appended_position(),
                        self.log.durable_position(),
                        self.commit,
                    );
                    tracing::info!(
                        member,
                        term,
                        from = ?from,
                        to = ?to,
                        reason = ?reason,
                        appended,
                        durable,
                        commit,
                        "member {member} at {:.3} ms: {from:?} -> {to:?} ({reason:?}), term {term}, log {appended} durable {durable} commit {commit}",
                        now as f64 / 1e6,
                    );
                }
            }
        }
        Ok(())
    }
}
