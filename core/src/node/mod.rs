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

#![forbid(unsafe_code)]

mod clients;
#[cfg(test)]
mod door_tests;
mod identity;
mod in_flight;
pub use clients::SessionLimits;

use crate::access::Access;
use crate::codec::message::{
    AppendDataHeader, ClientEvent, ClientEventKind, CloseReason, NewLeadershipTermEvent,
    SessionClose, SessionMessageHeader, SessionOpen, TimerEvent,
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

/// How a node hands committed frames to its service: applied right here on the node's thread
/// ([`Applier`], shared threading and the simulator), or fed over a ring to a service thread
/// (dedicated threading, `runtime`). Everything the service sees still comes from the log in
/// order; only where it runs differs.
pub trait ApplyStage {
    /// End of the frames handed over (and, for a local applier, applied).
    fn fed_position(&self) -> u64;
    /// End of the frames the service has applied.
    fn applied_position(&self) -> u64;
    /// Whether a frame of `len` bytes can be handed over now (a full ring says no).
    fn can_take(&mut self, _len: usize) -> bool {
        true
    }
    /// Hands over the frame at `position`, which occupies `encoded` bytes of the log; egress
    /// produced right away goes to `egress`.
    fn apply(
        &mut self,
        position: u64,
        encoded: &[u8],
        frame: &codec::Frame<'_>,
        egress: &mut Vec<Egress>,
    );
    /// Makes what `apply` handed over visible (one store per duty cycle).
    fn flush(&mut self) {}
    /// Egress produced since the last call by a service on another thread; returns how many.
    fn poll_egress(&mut self, _egress: &mut Vec<Egress>) -> usize {
        0
    }
    /// Up to `max` timers due at `now_ns`, earliest first (the leader appends their events).
    fn due_timers(&self, now_ns: u64, max: usize, out: &mut Vec<u64>);
    fn on_role_change(&mut self, role: Role);
    fn terminate(&mut self);
    /// The service's state digest and the client messages applied (for counters).
    fn digest(&self) -> u64;
    fn applied_messages(&self) -> u64;
    /// A snapshot taken since the last call, for the writer (`None` when the service runs
    /// elsewhere and writes its own).
    fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        None
    }
    fn snapshots_taken(&self) -> u64;
    fn digest_mismatches(&self) -> u64;
    /// Replaces the service's and the engine's state with the snapshot file `bytes` taken at
    /// `position` (a follower that fell behind the leader's purged log); applying resumes
    /// after `position`.
    fn install(&mut self, position: u64, bytes: &[u8]) -> Result<(), String>;
    /// The sessions open when the stage was made or last installed (the node follows later
    /// opens and closes through the egress).
    fn open_sessions(&self, out: &mut Vec<u64>);
}

impl<S: Service> ApplyStage for Applier<S> {
    fn fed_position(&self) -> u64 {
        Applier::applied_position(self)
    }
    fn applied_position(&self) -> u64 {
        Applier::applied_position(self)
    }
    fn apply(
        &mut self,
        position: u64,
        encoded: &[u8],
        frame: &codec::Frame<'_>,
        egress: &mut Vec<Egress>,
    ) {
        Applier::apply(self, position, encoded, frame, egress)
    }
    fn due_timers(&self, now_ns: u64, max: usize, out: &mut Vec<u64>) {
        out.extend(Applier::due_timers(self, now_ns).take(max));
    }
    fn on_role_change(&mut self, role: Role) {
        self.service_mut().on_role_change(role);
    }
    fn terminate(&mut self) {
        self.service_mut().on_terminate();
    }
    fn digest(&self) -> u64 {
        self.service().digest()
    }
    fn applied_messages(&self) -> u64 {
        Applier::applied_messages(self)
    }
    fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        Applier::take_snapshot(self)
    }
    fn snapshots_taken(&self) -> u64 {
        Applier::snapshots_taken(self)
    }
    fn digest_mismatches(&self) -> u64 {
        Applier::digest_mismatches(self)
    }
    fn install(&mut self, _position: u64, bytes: &[u8]) -> Result<(), String> {
        Applier::install(self, bytes).map_err(|e| e.to_string())
    }
    fn open_sessions(&self, out: &mut Vec<u64>) {
        out.extend(Applier::open_sessions(self));
    }
}
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

pub(crate) fn encode_vote(v: VoteState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&v.term.to_le_bytes());
    out.extend_from_slice(&v.voted_for.map_or(u64::MAX, u64::from).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_vote(bytes: &[u8]) -> Option<VoteState> {
    if bytes.len() != 20
        || crc32c::crc32c(&bytes[..16]) != u32::from_le_bytes(bytes[16..].try_into().ok()?)
    {
        return None;
    }
    let term = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    let voted = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    // Intact is not true: a member id that fits no member is refused, not read as "no vote".
    let voted_for = match voted {
        u64::MAX => None,
        v => Some(u32::try_from(v).ok()?),
    };
    Some(VoteState { term, voted_for })
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

#[derive(Clone)]
struct InstallSource {
    position: u64,
    log_start: u64,
    terms_len: u64,
    bytes: Arc<Vec<u8>>,
}

/// Follower: the first bytes of a frame larger than one datagram, from `start` (the end of
/// the log), waiting for the rest from the same leader in the same term.
struct Partial {
    leader: MemberId,
    term: u64,
    start: u64,
    bytes: Vec<u8>,
}

/// A snapshot file arriving in chunks.
struct Incoming {
    header: InstallSnapshotHeader,
    bytes: Vec<u8>,
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// Opens the log (recovering it), loads the vote, and starts the first election.
    pub fn open(
        config: NodeConfig,
        disk: D,
        net: N,
        applier: A,
        now: u64,
    ) -> Result<Self, NodeError> {
        let (mut log, report) = Log::open(disk, config.log.clone())?;
        let id = config.consensus.member_id;
        let mut recovery_notes = Vec::new();
        if let Some(why) = &report.terms_rebuilt {
            recovery_notes.push(format!(
                "raftline: member {id}: the term index was {why}; rebuilt from the log's frames ({} terms)",
                log.term_index().entries().len()
            ));
        }
        if let Some(why) = &report.reach_rebuilt {
            recovery_notes.push(format!(
                "raftline: member {id}: the log's reach record was unreadable ({why}); rewritten from the segment files (a segment deleted together with it would go unnoticed)"
            ));
        }
        if let Some(d) = &report.damage {
            recovery_notes.push(format!(
                "raftline: member {id}: log corruption in {} at position {}, below the end {} it had reported durable (term {}): not a torn tail. The log now ends at {}; this member will not lead, and votes only for a log of at least (term {}, {}), until a leader has replicated the range back",
                d.file, d.position, d.promised, d.term, report.recovered_position, d.term, d.promised
            ));
        } else if let Some(p) = log.promise().filter(|p| {
            let last_term = log.term_index().last().map_or(0, |t| t.term);
            (last_term, log.appended_position()) < (p.term, p.position)
        }) {
            recovery_notes.push(format!(
                "raftline: member {id}: still repairing an earlier log corruption: the log ends at {}, it had vouched for (term {}, {})",
                log.appended_position(), p.term, p.position
            ));
        }
        let loaded = match log.disk_mut().load_record(VOTE_FILE) {
            Ok(Some(bytes)) => match decode_vote(&bytes) {
                None => Err("bad length, checksum or member id".to_string()),
                Some(v)
                    if v.voted_for.is_some_and(|m| {
                        m >= config.consensus.member_count && m != VOTE_RECOVERING
                    }) =>
                {
                    Err(format!(
                        "a vote for member {}, but the cluster has {} members",
                        v.voted_for.unwrap_or_default(),
                        config.consensus.member_count
                    ))
                }
                Some(v) => Ok(v),
            },
            Ok(None) => Err("no record".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let last_term = log.term_index().last().map_or(0, |t| t.term);
        let log_empty = log.appended_position() == 0 && last_term == 0;
        let vote = match loaded {
            Ok(vote) => vote,
            Err(_) if log_empty => VoteState::default(),
            Err(why) if !config.recover_vote => {
                return Err(NodeError::VoteMissing {
                    why,
                    log_end: log.appended_position(),
                    last_term,
                })
            }
            Err(why) => {
                let vote = VoteState {
                    term: last_term,
                    voted_for: Some(VOTE_RECOVERING),
                };
                log.disk_mut()
                    .store_record(VOTE_FILE, &encode_vote(vote))
                    .map_err(NodeError::Vote)?;
                recovery_notes.push(format!(
                    "raftline: member {id}: vote record lost ({why}); recovering it: no vote in any election until every other member has been heard from, then only in terms above every term they announce"
                ));
                vote
            }
        };
        if log.start_position() > applier.fed_position() {
            // The bytes between the service's state and the log's first segment are nowhere:
            // an earlier segment file is gone (or every snapshot that covered it is damaged).
            return Err(NodeError::LogBehindSnapshot {
                start: log.start_position(),
                first: crate::log::segment_name(log.start_position()),
                service: applier.fed_position(),
            });
        }
        let state = LogState {
            appended: log.appended_position(),
            durable: log.durable_position(),
            terms: log.term_index().entries().to_vec(),
            promised: {
                let promised = log.promise().map_or((0, 0), |p| (p.term, p.position));
                // A snapshot ahead of the log (the log was cut by corruption below it): the
                // bytes up to the snapshot were committed, so this member must not lead or
                // help elect a log without them. Their last term is not known here.
                if applier.fed_position() > log.appended_position() {
                    promised.max((u64::MAX, applier.fed_position()))
                } else {
                    promised
                }
            },
            // Bytes the service has applied (from a snapshot, possibly ahead of the log) are
            // committed: no reconciliation may cut them.
            start: log.start_position().max(applier.fed_position()),
        };
        // A window smaller than the largest frame could never carry that frame whole.
        let mut consensus_config = config.consensus.clone();
        consensus_config.replication_window_bytes = consensus_config
            .replication_window_bytes
            .max(2 * log.config().frame_len_max() as u64);
        let mut consensus = Consensus::new(consensus_config, vote, state)?;
        if vote.voted_for == Some(VOTE_RECOVERING) {
            consensus.recover_vote();
        }
        let frame_max = log.config().frame_len_max();
        let frame_payload_max = frame_max - codec::HEADER_LEN - SessionMessageHeader::LEN;
        let mut node = Self {
            id: config.consensus.member_id,
            in_flight: in_flight::InFlight::default(),
            identity: identity::Identity::new(
                config.consensus.member_id,
                config.consensus.member_count,
                log.config().segment_bytes,
                frame_max as u64,
                config.consensus.leader_heartbeat_interval_ns,
            ),
            log,
            consensus,
            net,
            applier,
            due: Vec::new(),
            actions: Vec::new(),
            send_buf: vec![0u8; frame_max.max(APPEND_CHUNK_BYTES) + 4096],
            recv_buf: vec![0u8; frame_max.max(APPEND_CHUNK_BYTES) + 4096],
            read_buf: Vec::new(),
            egress: Vec::new(),
            last_timestamp_ns: 0,
            commit: 0,
            failed: None,
            stats: NodeStats {
                log_damage_found: report.damage.is_some() as u64,
                ..NodeStats::default()
            },
            collect_egress: false,
            log_transitions: false,
            timers_appended: HashMap::new(),
            snapshot_interval_bytes: config.snapshot_interval_bytes,
            last_snapshot_action: 0,
            digest_checks: Vec::new(),
            last_leader: None,
            shutdown: None,
            snapshot_durable: None,
            recovery_notes,
            snapshots_seen: (0, 0),
            retired: Vec::new(),
            install_source: None,
            installs: HashMap::new(),
            incoming: None,
            partial: None,
            sent_to: HashMap::new(),
            sessions: Default::default(),
            limits: SessionLimits {
                max_message_bytes: config.sessions.max_message_bytes.min(frame_payload_max),
                ..config.sessions
            },
            access: Access::open(),
            next_refusal_note_ns: [0; 3],
            max_install_bytes: config.max_install_bytes,
            session_timeout_ns: config.session_timeout_ns,
            next_session_check_ns: 0,
        };
        let mut open = Vec::new();
        node.applier.open_sessions(&mut open);
        for session in open {
            node.sessions.opened(session, now);
        }
        node.consensus.start(now);
        node.run_actions(now, None)?;
        Ok(node)
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
        let mut work = self.log.do_work()?;
        let durable = self.log.durable_position();
        if durable > self.consensus.durable_position() {
            self.consensus.on_durable(now, durable);
            self.run_actions(now, None)?;
            work += 1;
        }
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
        self.net.flush();
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
                eprintln!(
                    "raftline: member {}: settings differ, {why}; its messages are refused until they agree",
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

    /// Leader: sends applied egress to the clients' endpoints. Followers drop theirs.
    fn route_egress(&mut self, now: u64) {
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
                let (session_id, message) = match e {
                    Egress::SnapshotTaken { .. } | Egress::Shutdown { .. } => continue,
                    Egress::SessionClosed { session_id, reason } => (
                        *session_id,
                        Message::ClientEvent(ClientEvent {
                            session_id: *session_id,
                            value: *reason as u64,
                            kind: ClientEventKind::Closed as u8,
                        }),
                    ),
                    Egress::SessionOpened {
                        session_id,
                        correlation_id,
                    } => (
                        *session_id,
                        Message::ClientEvent(ClientEvent {
                            session_id: *session_id,
                            value: *correlation_id,
                            kind: ClientEventKind::Opened as u8,
                        }),
                    ),
                    Egress::Applied {
                        session_id,
                        sequence,
                    } => (
                        *session_id,
                        Message::ClientEvent(ClientEvent {
                            session_id: *session_id,
                            value: *sequence,
                            kind: ClientEventKind::Applied as u8,
                        }),
                    ),
                    Egress::Message {
                        session_id,
                        payload,
                    } => (*session_id, Message::EgressMessage { payload }),
                };
                if let Some(&endpoint) = self.sessions.bound.get(&session_id) {
                    let meta = FrameMeta {
                        session_id,
                        timestamp_ns: now,
                        ..FrameMeta::default()
                    };
                    let len = message.encode(meta, &mut self.send_buf);
                    self.net.send(endpoint, &self.send_buf[..len]);
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
                    eprintln!(
                        "raftline: member {} at {:.3} ms: {from:?} -> {to:?} ({reason:?}), term {term}, log {} durable {} commit {}",
                        self.id,
                        now as f64 / 1e6,
                        self.log.appended_position(),
                        self.log.durable_position(),
                        self.commit
                    );
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, now: u64, to: MemberId, message: &Message<'_>) {
        let meta = FrameMeta {
            term: self.consensus.term(),
            timestamp_ns: now,
            ..FrameMeta::default()
        };
        let len = message.encode(meta, &mut self.send_buf);
        self.net.send(to, &self.send_buf[..len]);
    }

    /// Sends log bytes `[from, to)` as `AppendData` datagrams of whole frames.
    /// Bytes of log or snapshot one datagram to a member carries after a body header of
    /// `header_len` bytes (frame header and body included, under the transport's limit).
    fn chunk_bytes(&self, header_len: usize) -> usize {
        let overhead = codec::HEADER_LEN + header_len + 8;
        // A multiple of the frame alignment: a frame's pieces start on aligned positions.
        APPEND_CHUNK_BYTES
            .min(self.net.max_payload().saturating_sub(overhead))
            .max(256)
            & !(codec::FRAME_ALIGNMENT - 1)
    }

    fn send_log(
        &mut self,
        now: u64,
        to: MemberId,
        term: u64,
        from: u64,
        end: u64,
    ) -> Result<(), NodeError> {
        if from < self.log.start_position() {
            // Purged here: the follower gets the snapshot, then the log from our start.
            // Consensus counts the range as sent; a send that follows on from its end is
            // not a follower's report (the follower answers it with where it really is).
            self.sent_to.insert(to, end);
            self.consensus
                .on_install_sent(to, self.log.start_position());
            self.send_install_chunk(now, to);
            return Ok(());
        }
        let mut at = from;
        let mut read_buf = std::mem::take(&mut self.read_buf);
        let continues = self.sent_to.insert(to, end) == Some(from);

        // Whole frames per datagram, under the transport's limit (header and body included).
        let chunk = self.chunk_bytes(AppendDataHeader::LEN);
        while at < end {
            let want = ((end - at) as usize).min(chunk);
            read_buf.resize(want, 0);
            let n = self.log.read(at, &mut read_buf)?;
            let mut whole = 0;
            for (offset, frame) in Frames::new(&read_buf[..n]).map_while(Result::ok) {
                let frame_end = offset + frame.encoded_len();
                if frame_end > n {
                    break;
                }
                whole = frame_end;
            }
            if whole == 0 {
                // A frame larger than a datagram's share: its bytes go in pieces of a chunk,
                // which the follower joins again. The range must start where a frame starts.
                if at == from && !continues && !self.frame_starts_at(at, &mut read_buf)? {
                    // No frame starts where the follower said its log ends: its report was
                    // false. It reconciles again and tells us where it really is.
                    self.stats.peer_reports_refused += 1;
                    self.consensus.on_bad_send_position(to);
                    break;
                }
                read_buf.resize(want, 0);
                whole = self.log.read(at, &mut read_buf)?;
            }
            let message = Message::AppendData {
                header: AppendDataHeader {
                    leadership_term_id: term,
                    log_position: at,
                    leader_member_id: self.id,
                },
                bytes: &read_buf[..whole],
            };
            self.send(now, to, &message);
            at += whole as u64;
        }
        self.read_buf = read_buf;
        Ok(())
    }

    /// Whether a whole, verified frame starts at `position` of the log.
    fn frame_starts_at(&mut self, position: u64, buf: &mut Vec<u8>) -> Result<bool, NodeError> {
        buf.resize(codec::HEADER_LEN, 0);
        let n = self.log.read(position, buf)?;
        // The length the header claims (a padding frame may exceed the largest message).
        let len = match codec::decode(&buf[..n]) {
            Err(codec::DecodeError::Truncated { needed, .. }) => needed,
            Ok(Decoded::Frame(frame, _)) => frame.encoded_len(),
            _ => return Ok(false),
        };
        buf.resize(len, 0);
        let n = self.log.read(position, buf)?;
        Ok(matches!(codec::decode(&buf[..n]), Ok(Decoded::Frame(..))))
    }

    /// Follower: log bytes from the leader, which may end inside a frame (a frame larger than
    /// a datagram arrives in pieces). Whole frames go to consensus at once; the piece of a
    /// frame at the end waits in `partial` for the rest, which must follow it directly.
    fn on_append_data(
        &mut self,
        now: u64,
        from: MemberId,
        header: AppendDataHeader,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let log_end = self.log.appended_position();
        // A piece that starts inside or at the end of the waiting one extends it (the bytes
        // they share are the same: one leader, one term), so a resend after a loss carries the
        // frame on from where the last attempt broke off rather than from its start.
        let extends = self.partial.as_ref().is_some_and(|p| {
            p.leader == from
                && p.term == header.leadership_term_id
                && p.start == log_end
                && (p.start..=p.start + p.bytes.len() as u64).contains(&header.log_position)
        });
        if self
            .partial
            .as_ref()
            .is_some_and(|p| p.start != log_end || p.leader != from)
        {
            self.partial = None; // stale: the log moved, or another leader
        }
        let mut joined = if extends { self.partial.take() } else { None };
        if let Some(p) = &mut joined {
            // `extends` put the piece's start inside [p.start, p.start + p.bytes.len()].
            let end = p.start + p.bytes.len() as u64;
            let overlap = end.saturating_sub(header.log_position) as usize;
            if overlap < bytes.len() {
                p.bytes.extend_from_slice(&bytes[overlap..]);
            }
        }
        let position = joined.as_ref().map_or(header.log_position, |p| p.start);
        let (whole, piece) = {
            let data = joined.as_ref().map_or(bytes, |p| &p.bytes[..]);
            let mut whole = 0;
            for (offset, frame) in Frames::new(data).map_while(Result::ok) {
                let end = offset + frame.encoded_len();
                if end > data.len() {
                    break;
                }
                whole = end;
            }
            let piece = whole < data.len()
                && matches!(
                    codec::decode(&data[whole..]),
                    Err(codec::DecodeError::Truncated { needed, .. }) if needed <= codec::FRAME_LEN_MAX
                );
            (whole, piece)
        };
        // Still one unfinished frame: the joined bytes wait as they are (no copy).
        let rest = match joined {
            Some(p) if whole == 0 => Some(p.bytes),
            Some(p) => {
                let data = p.bytes;
                let rest = piece.then(|| data[whole..].to_vec());
                self.consume_whole(now, from, header, position, &data[..whole])?;
                rest
            }
            None => {
                let rest = piece.then(|| bytes[whole..].to_vec());
                self.consume_whole(now, from, header, position, &bytes[..whole])?;
                rest
            }
        };
        if whole == 0 {
            // Nothing whole yet: still news from the leader (its contact timer).
            self.consume_whole(now, from, header, position, &[])?;
        }
        let start = position + whole as u64;
        if let Some(bytes) = rest.filter(|_| {
            piece && start == self.log.appended_position() && self.consensus.leader() == Some(from)
        }) {
            self.partial = Some(Partial {
                leader: from,
                term: header.leadership_term_id,
                start,
                bytes,
            });
        }
        Ok(())
    }

    /// Hands whole frames of log bytes at `position` to consensus as one `AppendData`.
    fn consume_whole(
        &mut self,
        now: u64,
        from: MemberId,
        header: AppendDataHeader,
        position: u64,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let message = Message::AppendData {
            header: AppendDataHeader {
                log_position: position,
                ..header
            },
            bytes,
        };
        self.consensus.on_message(now, from, &message);
        self.run_actions(now, Some(&message))
    }

    fn append_received(&mut self, now: u64, position: u64, bytes: &[u8]) -> Result<(), NodeError> {
        // Terms enter the index before their first frame enters the log.
        for (offset, frame) in Frames::new(bytes).map_while(Result::ok) {
            self.last_timestamp_ns = self.last_timestamp_ns.max(frame.meta.timestamp_ns);
            if frame.meta.frame_type != FrameType::NewLeadershipTermEvent as u16 {
                continue;
            }
            let term = frame.meta.term;
            let start = position + offset as u64;
            if self.log.term_index().last().is_none_or(|t| t.term < term) {
                self.log.append_term(term, start)?;
                self.consensus.on_term_started(term, start);
            }
        }
        match self.log.append_raw(position, bytes) {
            Ok(()) => {}
            Err(
                LogError::Full { .. }
                | LogError::BadReplicatedBytes { .. }
                | LogError::NotAtEnd { .. },
            ) => {
                // Dropped: the leader resends from our reported position.
                self.stats.appends_refused += 1;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.consensus
            .on_appended(now, self.log.appended_position());
        Ok(())
    }

    fn stamp(&mut self, now: u64, term: u64, session_id: u64) -> FrameMeta {
        self.last_timestamp_ns = self.last_timestamp_ns.max(now);
        FrameMeta {
            frame_type: 0,
            flags: 0,
            term,
            session_id,
            timestamp_ns: self.last_timestamp_ns,
        }
    }

    fn append_leader(&mut self, meta: FrameMeta, message: &Message<'_>) -> Result<u64, LogError> {
        let position = self.log.append_message(meta, message)?;
        let end = self.log.appended_position();
        self.consensus.on_appended(meta.timestamp_ns, end);
        Ok(position)
    }

    fn offer_message(
        &mut self,
        now: u64,
        session_id: u64,
        message: &Message<'_>,
    ) -> Result<u64, OfferError> {
        self.offer_flagged(now, session_id, message, 0)
    }

    /// Leader: appends `message` stamped with the leader's term and time and `flags`.
    fn offer_flagged(
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
    fn offer_refused(
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
    fn fire_due_timers(&mut self, now: u64) -> usize {
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

    /// Lets the node see which snapshot is durable (the runtime's writer updates it).
    pub fn set_snapshot_progress(&mut self, durable: Arc<AtomicU64>) {
        self.snapshot_durable = Some(durable);
    }

    /// Segment files retired from the log since the last call, to delete off this thread.
    pub fn take_retired(&mut self) -> Vec<String> {
        std::mem::take(&mut self.retired)
    }

    fn durable_snapshot(&self) -> u64 {
        self.snapshot_durable
            .as_ref()
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// Retires the segments wholly before the second-newest durable snapshot: every replica
    /// keeps its log from there, so that if the newest snapshot file is found damaged at a
    /// restart, the one before it and the log after it still rebuild the state. A follower
    /// that needs older bytes is sent the newest snapshot.
    fn retire_behind_snapshot(&mut self) -> Result<(), NodeError> {
        let newest = self.durable_snapshot();
        if newest > self.snapshots_seen.1 {
            self.snapshots_seen = (self.snapshots_seen.1, newest);
        }
        let position = self.snapshots_seen.0;
        let start = self.log.start_position();
        if position < start + self.log.config().segment_bytes {
            return Ok(());
        }
        let names = self.log.retire_before(position)?;
        self.retired.extend(names);
        Ok(())
    }

    /// Leader: sends follower `to` the next chunk of the newest durable snapshot.
    fn send_install_chunk(&mut self, now: u64, to: MemberId) {
        let Some(term) = self.consensus.leader_term() else {
            return;
        };
        let position = self.durable_snapshot();
        if position < self.log.start_position() {
            return; // cannot happen: the log is retired only behind a durable snapshot
        }
        let start = self.log.start_position();
        if self
            .install_source
            .as_ref()
            .is_none_or(|s| s.position != position || s.log_start != start)
        {
            match self
                .log
                .disk_mut()
                .read_file(&snapshot::file_name(position))
            {
                Ok(Some(file)) => {
                    let mut bytes = Vec::new();
                    for e in self.log.term_index().entries() {
                        if e.start_position < start {
                            bytes.extend_from_slice(&e.term.to_le_bytes());
                            bytes.extend_from_slice(&e.start_position.to_le_bytes());
                        }
                    }
                    let terms_len = bytes.len() as u64;
                    bytes.extend_from_slice(&file);
                    self.install_source = Some(InstallSource {
                        position,
                        log_start: start,
                        terms_len,
                        bytes: Arc::new(bytes),
                    });
                }
                _ => {
                    if self.log_transitions {
                        eprintln!(
                            "raftline: member {}: snapshot {} is missing; member {to} cannot catch up",
                            self.id,
                            snapshot::file_name(position)
                        );
                    }
                    return;
                }
            }
        }
        let source = self.install_source.clone().expect("loaded");
        let acked = match self.installs.get(&to) {
            Some(&(p, acked)) if p == source.position => acked,
            _ => {
                self.stats.snapshots_sent += 1;
                0
            }
        };
        self.installs.insert(to, (source.position, acked));
        let chunk = self.chunk_bytes(InstallSnapshotHeader::LEN);
        let from = acked as usize;
        let end = (from + chunk).min(source.bytes.len());
        let message = Message::InstallSnapshot {
            header: InstallSnapshotHeader {
                leadership_term_id: term,
                snapshot_position: source.position,
                log_start: source.log_start,
                terms_len: source.terms_len,
                total_len: source.bytes.len() as u64,
                offset: acked,
                leader_member_id: self.id,
            },
            bytes: &source.bytes[from..end],
        };
        self.send(now, to, &message);
    }

    /// Leader: a follower acknowledged snapshot bytes; send the next chunk, or stop.
    fn on_install_ack(&mut self, now: u64, from: MemberId, ack: InstallAck) {
        if ack.follower_member_id != from
            || self.consensus.leader_term() != Some(ack.leadership_term_id)
        {
            return;
        }
        let Some(&(position, _)) = self.installs.get(&from) else {
            return;
        };
        if position != ack.snapshot_position {
            return;
        }
        let total = self
            .install_source
            .as_ref()
            .map_or(0, |s| s.bytes.len() as u64);
        if ack.received >= total {
            self.installs.remove(&from);
            return;
        }
        self.installs.insert(from, (position, ack.received));
        self.send_install_chunk(now, from);
    }

    /// Follower: a chunk of the leader's snapshot. The whole file is checked, written, and
    /// installed: the log restarts empty at the leader's start and the service takes the
    /// snapshot's state.
    fn on_install_chunk(
        &mut self,
        now: u64,
        from: MemberId,
        header: InstallSnapshotHeader,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        if header.leader_member_id != from
            || self.consensus.leader() != Some(from)
            || self.consensus.role() != Role::Follower
            || header.leadership_term_id != self.consensus.term()
            || self.log.appended_position() >= header.log_start
            || header.snapshot_position < header.log_start
            || header.log_start % self.log.config().segment_bytes != 0
        {
            return Ok(());
        }
        if header.total_len > self.max_install_bytes {
            self.stats.installs_refused += 1;
            if self.log_transitions && self.stats.installs_refused == 1 {
                eprintln!(
                    "raftline: member {}: refused a snapshot install of {} bytes from member {from}: above snapshot.max_install_mib ({} bytes)",
                    self.id, header.total_len, self.max_install_bytes
                );
            }
            return Ok(());
        }
        let restart = self.incoming.as_ref().is_none_or(|i| {
            i.header.snapshot_position != header.snapshot_position
                || i.header.total_len != header.total_len
        });
        if restart {
            // Memory follows the bytes that arrive, in order: a claimed length reserves little.
            self.incoming = Some(Incoming {
                header,
                bytes: Vec::with_capacity(header.total_len.min(INSTALL_RESERVE_BYTES) as usize),
            });
        }
        let incoming = self.incoming.as_mut().expect("set");
        if header.offset == incoming.bytes.len() as u64 {
            incoming.bytes.extend_from_slice(bytes);
        }
        let received = incoming.bytes.len() as u64;
        let ack = Message::InstallAck(InstallAck {
            leadership_term_id: header.leadership_term_id,
            snapshot_position: header.snapshot_position,
            received,
            follower_member_id: self.id,
        });
        if received < header.total_len {
            self.send(now, from, &ack);
            return Ok(());
        }
        let incoming = self.incoming.take().expect("set");
        let position = header.snapshot_position;
        let install_error = |message: String| NodeError::Install { position, message };
        let Some((term_bytes, file)) = (header.terms_len <= header.total_len
            && header.terms_len % 16 == 0)
            .then(|| incoming.bytes.split_at(header.terms_len as usize))
        else {
            return Ok(());
        };
        let terms: Vec<TermEntry> = term_bytes
            .chunks_exact(16)
            .map(|c| TermEntry {
                term: u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                start_position: u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
            })
            .collect();
        let ordered = terms
            .windows(2)
            .all(|w| w[0].term < w[1].term && w[0].start_position <= w[1].start_position);
        if !ordered || terms.iter().any(|t| t.start_position >= header.log_start) {
            return Ok(()); // damaged: start over
        }
        match snapshot::decode(file) {
            Ok(view) if view.position == position => {}
            Ok(view) => {
                return Err(install_error(format!(
                    "the file is for position {}",
                    view.position
                )))
            }
            // Damaged on the way: start over.
            Err(_) => return Ok(()),
        }
        self.log
            .disk_mut()
            .write_file_atomic(&snapshot::file_name(position), file)
            .map_err(|e| install_error(e.to_string()))?;
        let retired = self.log.reset_to(header.log_start, terms.clone())?;
        self.retired.extend(retired);
        self.applier
            .install(position, file)
            .map_err(install_error)?;
        self.stats.snapshots_installed += 1;
        self.last_snapshot_action = self.last_snapshot_action.max(position);
        if let Some(d) = &self.snapshot_durable {
            d.fetch_max(position, Ordering::AcqRel);
        }
        if self.log_transitions {
            eprintln!(
                "raftline: member {}: installed the leader's snapshot at log position {position} ({} bytes); the log restarts at {}",
                self.id,
                file.len(),
                header.log_start
            );
        }
        self.send(now, from, &ack);
        self.consensus
            .on_log_restarted(header.log_start, terms, self.applier.fed_position());
        self.run_actions(now, None)
    }

    /// When leadership moves from this member to another (a transfer, or a step-down after a
    /// higher term), tells every client this member was serving, so they move at once instead
    /// of waiting for their resend timer.
    fn announce_new_leader(&mut self, now: u64) {
        let leader = self.consensus.leader();
        if leader == self.last_leader {
            return;
        }
        let was_leader = self.last_leader == Some(self.id);
        self.last_leader = leader;
        if leader == Some(self.id) {
            // A new leader gives every session a full timeout from its election.
            let sessions = &mut self.sessions;
            for s in &sessions.open {
                sessions.last_heard.insert(*s, now);
            }
            sessions.closing.clear();
        }
        let Some(new) = leader.filter(|&l| l != self.id && was_leader) else {
            return;
        };
        let mut endpoints: Vec<(u64, u32)> =
            self.sessions.bound.iter().map(|(&s, &e)| (s, e)).collect();
        endpoints.sort_unstable();
        for (session_id, endpoint) in endpoints {
            self.send_client_event(
                now,
                endpoint,
                session_id,
                ClientEventKind::Redirect,
                u64::from(new),
            );
        }
    }

    /// Leader: hands leadership to `to`; see [`Consensus::transfer_leadership`].
    pub fn transfer_leadership(
        &mut self,
        now: u64,
        to: MemberId,
    ) -> Result<(), crate::consensus::TransferError> {
        self.consensus.transfer_leadership(now, to)?;
        self.run_actions(now, None).map_err(|e| {
            self.fail(e);
            crate::consensus::TransferError::NotLeader
        })
    }

    /// Leader: hands leadership to the most caught-up follower.
    pub fn step_down(&mut self, now: u64) -> Result<MemberId, crate::consensus::TransferError> {
        let to = self
            .consensus
            .most_caught_up_follower()
            .ok_or(crate::consensus::TransferError::NotLeader)?;
        self.transfer_leadership(now, to)?;
        Ok(to)
    }

    /// Leader: appends a shutdown action; every replica takes a snapshot and stops there.
    pub fn request_shutdown(&mut self, now: u64) -> Result<u64, OfferError> {
        let action = Message::ClusterAction(ClusterAction {
            kind: ClusterActionKind::Shutdown as u8,
            position: 0,
            value: 0,
        });
        self.offer_message(now, 0, &action)
    }

    /// Whether this replica is done: it applied the cluster's shutdown action, and (on the
    /// leader) every follower has it durable and has heard the commit, or a heartbeat timeout
    /// passed.
    pub fn finished(&self, now: u64) -> bool {
        let Some((position, Some(applied_at))) = self.shutdown else {
            return false;
        };
        if self.consensus.role() != Role::Leader {
            return true;
        }
        let heartbeat = self.consensus.config().leader_heartbeat_interval_ns;
        let timeout = self.consensus.config().leader_heartbeat_timeout_ns;
        (self.consensus.durable_everywhere(position)
            && now.saturating_sub(applied_at) >= 2 * heartbeat)
            || now.saturating_sub(applied_at) >= timeout
    }

    /// Leader: appends the digest checks of snapshots this replica took, and a snapshot action
    /// when the log has grown by the snapshot interval.
    fn snapshot_actions(&mut self, now: u64) -> usize {
        if self.consensus.leader_term().is_none() {
            self.digest_checks.clear();
            return 0;
        }
        let mut work = 0;
        for (position, digest) in std::mem::take(&mut self.digest_checks) {
            let check = Message::ClusterAction(ClusterAction {
                kind: ClusterActionKind::DigestCheck as u8,
                position,
                value: digest,
            });
            if self.offer_message(now, 0, &check).is_ok() {
                work += 1;
            }
        }
        let appended = self.log.appended_position();
        if self.snapshot_interval_bytes > 0
            && appended >= self.last_snapshot_action + self.snapshot_interval_bytes
            && self.request_snapshot(now).is_ok()
        {
            work += 1;
        }
        work
    }

    /// Leader: appends a snapshot action; every replica takes a snapshot once it applies it.
    /// Returns the action's log position.
    pub fn request_snapshot(&mut self, now: u64) -> Result<u64, OfferError> {
        let action = Message::ClusterAction(ClusterAction {
            kind: ClusterActionKind::Snapshot as u8,
            position: 0,
            value: 0,
        });
        let position = self.offer_message(now, 0, &action)?;
        self.last_snapshot_action = self.log.appended_position();
        Ok(position)
    }

    /// A snapshot the applier took since the last call, for the runtime's writer.
    pub fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        self.applier.take_snapshot()
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

    fn apply_committed(&mut self) -> Result<usize, NodeError> {
        let target = self.commit.min(self.log.appended_position());
        let mut applied = 0;
        let mut read_buf = std::mem::take(&mut self.read_buf);
        'chunks: while self.applier.fed_position() < target {
            let at = self.applier.fed_position();
            let want = ((target - at) as usize)
                .min(APPEND_CHUNK_BYTES.max(self.log.config().frame_len_max()));
            read_buf.resize(want, 0);
            let n = self.log.read(at, &mut read_buf)?;
            let mut progressed = false;
            for (offset, frame) in Frames::new(&read_buf[..n]).map_while(Result::ok) {
                let len = frame.encoded_len();
                if offset + len > n {
                    break;
                }
                if !self.applier.can_take(len) {
                    // The service thread is behind: the rest waits for a later cycle.
                    break 'chunks;
                }
                self.applier.apply(
                    at + offset as u64,
                    &read_buf[offset..offset + len],
                    &frame,
                    &mut self.egress,
                );
                self.stats.frames_applied += 1;
                applied += 1;
                progressed = true;
            }
            if !progressed {
                // The commit position falls inside the frame at `at`: a false durable report
                // counted toward it (only an unauthenticated peer can make one). The frame
                // waits for a commit position past its end; bytes that are no frame at all
                // are a damaged log.
                let whole = self.frame_starts_at(at, &mut read_buf)?;
                self.read_buf = read_buf;
                if whole {
                    self.stats.commit_inside_frame += 1;
                    return Ok(applied);
                }
                return Err(NodeError::Log(LogError::Corrupt {
                    file: format!("segment holding position {at}"),
                    reason: format!(
                        "committed bytes at {at} are not a frame (commit {}, log {}..{})",
                        self.commit,
                        self.log.start_position(),
                        self.log.appended_position()
                    ),
                }));
            }
        }
        self.read_buf = read_buf;
        self.applier.flush();
        Ok(applied)
    }
}

#[cfg(test)]
mod vote_record_tests {
    use super::*;

    #[test]
    fn a_vote_record_round_trips_and_an_intact_record_naming_no_member_is_refused() {
        for v in [
            VoteState::default(),
            VoteState {
                term: 7,
                voted_for: Some(2),
            },
            VoteState {
                term: 9,
                voted_for: Some(VOTE_RECOVERING),
            },
        ] {
            assert_eq!(decode_vote(&encode_vote(v)), Some(v));
        }
        // Found by the records_and_snapshots fuzz target: a checksum-valid record whose member
        // id fits no u32 was read as "no vote in this term".
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_vote(&bytes), None);
    }
}
