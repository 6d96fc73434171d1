//! The service seam and the apply loop: sessions, exactly-once delivery, egress.
//!
//! Everything a [`Service`] sees comes from committed log frames, in log order, with the
//! leader's timestamp from the frame: the same log gives the same calls on every replica.
//! The [`Applier`] owns the engine's own state derived from the log (open sessions and the last
//! applied client sequence per session) and drops duplicates *at apply time*, so a client that
//! resends a message to a new leader after failover has it applied once, on every replica.

#![forbid(unsafe_code)]

pub mod echo;
pub mod kv;
pub mod snapshot;

use std::collections::BTreeMap;

use crate::codec::message::{CloseReason, ClusterActionKind, SessionMessageHeader};
use crate::codec::{Frame, FrameType, Message};
use snapshot::{Reader, SnapshotError, TakenSnapshot, Writer};

/// What a service gets to do while handling a frame.
#[derive(Debug, Default)]
pub struct Context {
    /// Log position of the frame being applied.
    pub position: u64,
    /// The leader's time stamped on the frame.
    pub timestamp_ns: u64,
    egress: Vec<(u64, Vec<u8>)>,
    timer_commands: Vec<TimerCommand>,
    closes: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerCommand {
    Schedule {
        correlation_id: u64,
        deadline_ns: u64,
    },
    Cancel {
        correlation_id: u64,
    },
}

impl Context {
    /// Sends `payload` to `session_id`. Only the leader's egress leaves the node; on
    /// followers it is discarded, so services need not know their role.
    pub fn send(&mut self, session_id: u64, payload: &[u8]) {
        self.egress.push((session_id, payload.to_vec()));
    }

    /// Asks for `on_timer(correlation_id)` once the leader's clock reaches `deadline_ns`.
    /// The leader appends the timer event to the log, so every replica fires it at the same
    /// position, once. Scheduling an id again moves its deadline; a deadline in the past fires
    /// at the leader's next duty cycle.
    pub fn schedule_timer(&mut self, correlation_id: u64, deadline_ns: u64) {
        self.timer_commands.push(TimerCommand::Schedule {
            correlation_id,
            deadline_ns,
        });
    }

    /// Cancels a scheduled timer; a timer already fired or unknown is ignored.
    pub fn cancel_timer(&mut self, correlation_id: u64) {
        self.timer_commands
            .push(TimerCommand::Cancel { correlation_id });
    }

    /// Closes `session_id` once the current callback returns (on every replica, at the same
    /// log position): the service then gets `on_session_close` with
    /// [`CloseReason::ServiceAction`] and the client is told. Unknown sessions are ignored.
    pub fn close_session(&mut self, session_id: u64) {
        self.closes.push(session_id);
    }
}

/// A deterministic, single-threaded state machine fed from the committed log.
///
/// Every callback but `on_role_change` and `on_terminate` comes from a committed log frame, in
/// log order, with the leader's timestamp in `ctx.timestamp_ns`: the same log gives the same
/// calls, and so the same state, on every replica. Use `ctx.timestamp_ns` as the clock, never
/// the machine's. What `ctx.send` sends leaves the node only on the leader; a follower's
/// egress is dropped, so a service need not know its role to be correct.
///
/// Snapshots: a service that writes its whole state in `on_take_snapshot` (and reads it back
/// in `on_start`) is restarted from its newest snapshot and replays only the log after it, and
/// a replica that fell behind the others' purged logs is sent one. Every replica snapshots at
/// the same log positions and compares `digest()` there with the leader's.
///
/// Misuse has defined behaviour: egress sent while applying on a follower is dropped; a timer
/// scheduled in the past fires at the leader's next duty cycle (through the log, once); a
/// cancelled or unknown timer is ignored; the machine's clock, randomness or thread-local
/// state make replicas diverge, which the digest check at the next snapshot reports.
///
/// The `raftline` crate's front page shows a whole service and the node that runs it.
pub trait Service {
    /// Called before the first frame, with the service's part of the snapshot recovery starts
    /// from (what [`Service::on_take_snapshot`] wrote), or `None` to start empty. Called again
    /// with a snapshot when a replica that fell behind the leader's purged log installs the
    /// leader's: the snapshot then replaces the whole state.
    /// An error refuses the snapshot and the node does not start. The default accepts only
    /// `None`: a service that takes no snapshots never gets one.
    fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
        match snapshot {
            None => Ok(()),
            Some(_) => Err("this service does not restore snapshots".into()),
        }
    }
    /// Writes the service's whole state into `out` for a snapshot at log `position` and
    /// returns true. Every replica is asked at the same position. The default returns false:
    /// the service keeps no snapshots, and recovery replays the log from the start.
    fn on_take_snapshot(&mut self, _position: u64, _out: &mut Vec<u8>) -> bool {
        false
    }
    fn on_session_open(&mut self, _ctx: &mut Context, _session_id: u64) {}
    fn on_session_close(&mut self, _ctx: &mut Context, _session_id: u64, _reason: CloseReason) {}
    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]);
    /// A timer scheduled with `Context::schedule_timer` fired (once, on every replica).
    fn on_timer(&mut self, _ctx: &mut Context, _correlation_id: u64) {}
    /// This replica became leader, follower or candidate. Not from the log: replicas see
    /// different roles; the service state must not depend on it.
    fn on_role_change(&mut self, _role: crate::consensus::Role) {}
    /// The node is stopping cleanly (after its last write is durable).
    fn on_terminate(&mut self) {}
    /// A digest of the service's state; replicas compare it at equal log positions.
    fn digest(&self) -> u64;
}

/// Something the apply loop tells the client side of the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Egress {
    /// The session is open (its `SessionOpen` frame committed and applied).
    SessionOpened {
        session_id: u64,
        correlation_id: u64,
    },
    /// Message `sequence` of `session_id` was applied (now, or before: a duplicate).
    Applied { session_id: u64, sequence: u64 },
    /// A payload the service sent.
    Message { session_id: u64, payload: Vec<u8> },
    /// The session closed (the client asked, it timed out, or the service closed it).
    SessionClosed {
        session_id: u64,
        reason: CloseReason,
    },
    /// This replica took a snapshot (or, for a service without snapshots, recorded its digest)
    /// at `position`. The leader appends the digest to the log for every replica to compare.
    SnapshotTaken { position: u64, digest: u64 },
    /// The cluster is shutting down at `position`: this replica took its snapshot and stops.
    Shutdown { position: u64 },
}

impl Egress {
    /// What the leader sends the session's client for this, if anything: (session, message).
    pub fn to_client(&self) -> Option<(u64, Message<'_>)> {
        use crate::codec::message::{ClientEvent, ClientEventKind};
        let event = |session_id: u64, kind: ClientEventKind, value: u64| {
            let body = ClientEvent {
                session_id,
                value,
                kind: kind as u8,
            };
            Some((session_id, Message::ClientEvent(body)))
        };
        match *self {
            Egress::SessionOpened {
                session_id,
                correlation_id,
            } => event(session_id, ClientEventKind::Opened, correlation_id),
            Egress::Applied {
                session_id,
                sequence,
            } => event(session_id, ClientEventKind::Applied, sequence),
            Egress::SessionClosed { session_id, reason } => {
                event(session_id, ClientEventKind::Closed, reason as u64)
            }
            Egress::Message {
                session_id,
                ref payload,
            } => Some((session_id, Message::EgressMessage { payload })),
            Egress::SnapshotTaken { .. } | Egress::Shutdown { .. } => None,
        }
    }
}

/// Applies committed frames to a service; see the module docs.
pub struct Applier<S> {
    service: S,
    /// Committed frames that did not decode as a message (a bug; see `apply`).
    undecodable_frames: u64,
    /// Open sessions and the last sequence applied for each.
    sessions: BTreeMap<u64, u64>,
    applied_position: u64,
    /// Chained hash of every applied frame (position and bytes): equal on every replica at
    /// equal positions, or the logs differ.
    log_hash: u64,
    applied_messages: u64,
    duplicates_dropped: u64,
    context: Context,
    /// Scheduled timers, derived from the log: correlation id -> deadline, and by deadline.
    timers: BTreeMap<u64, u64>,
    timers_by_deadline: std::collections::BTreeSet<(u64, u64)>,
    /// Changes to the timer table, kept only when a node on another thread mirrors the table
    /// to know when to fire (dedicated threading).
    timer_changes: Option<Vec<TimerChange>>,
    /// The service's replies to each session's last few messages, by sequence: a resend of one
    /// of them (its first reply was lost with a leader) gets them again, not only an
    /// acknowledgement. Derived from the log like everything else here.
    replies: BTreeMap<u64, std::collections::VecDeque<KeptReplies>>,
    /// The service's digest at recent snapshot positions, oldest first.
    digests_at: std::collections::VecDeque<(u64, u64)>,
    digest_mismatches: u64,
    snapshots_taken: u64,
    /// A snapshot taken and not yet handed to the writer.
    pending_snapshot: Option<TakenSnapshot>,
    started: bool,
}

/// Snapshot positions whose digests are kept for the leader's digest check.
const DIGESTS_KEPT: usize = 16;

/// A message's sequence and the payloads the service sent its session while applying it.
type KeptReplies = (u64, Vec<Vec<u8>>);

/// Messages per session whose replies are kept for resends.
pub const REPLIES_KEPT: usize = 8;

/// A change to the applier's timer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerChange {
    Scheduled {
        correlation_id: u64,
        deadline_ns: u64,
    },
    /// Fired or cancelled.
    Removed { correlation_id: u64 },
}

/// FNV-1a over `bytes`, continuing from `hash`. Deterministic across builds and hosts.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    let mut h = hash;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl<S: Service> Applier<S> {
    /// Committed frames that did not decode as a message: always 0 unless there is a bug.
    pub fn undecodable_frames(&self) -> u64 {
        self.undecodable_frames
    }

    pub fn new(service: S) -> Self {
        Self {
            undecodable_frames: 0,
            service,
            sessions: BTreeMap::new(),
            applied_position: 0,
            log_hash: FNV_OFFSET,
            applied_messages: 0,
            duplicates_dropped: 0,
            context: Context::default(),
            timers: BTreeMap::new(),
            timers_by_deadline: std::collections::BTreeSet::new(),
            timer_changes: None,
            replies: BTreeMap::new(),
            digests_at: std::collections::VecDeque::new(),
            digest_mismatches: 0,
            snapshots_taken: 0,
            pending_snapshot: None,
            started: false,
        }
    }

    /// Starts the service: empty, or from a snapshot file's bytes (checked, then the engine's
    /// state and the service's restored). Called before the first frame; [`Applier::apply`]
    /// starts an applier nobody started, empty.
    pub fn start(&mut self, snapshot: Option<&[u8]>) -> Result<(), SnapshotError> {
        assert!(!self.started, "an applier starts once");
        self.started = true;
        let Some(bytes) = snapshot else {
            return self.service.on_start(None).map_err(SnapshotError::Service);
        };
        let view = snapshot::decode(bytes)?;
        let mut r = Reader::new(view.engine);
        self.applied_messages = r.u64()?;
        self.duplicates_dropped = r.u64()?;
        for _ in 0..r.u64()? {
            let (id, last) = (r.u64()?, r.u64()?);
            self.sessions.insert(id, last);
        }
        for _ in 0..r.u64()? {
            let (id, deadline) = (r.u64()?, r.u64()?);
            self.timers.insert(id, deadline);
            self.timers_by_deadline.insert((deadline, id));
            self.timer_changed(TimerChange::Scheduled {
                correlation_id: id,
                deadline_ns: deadline,
            });
        }
        for _ in 0..r.u64()? {
            let session_id = r.u64()?;
            let kept = self.replies.entry(session_id).or_default();
            for _ in 0..r.u64()? {
                let sequence = r.u64()?;
                let mut payloads = Vec::new();
                for _ in 0..r.u64()? {
                    payloads.push(r.bytes()?.to_vec());
                }
                kept.push_back((sequence, payloads));
            }
        }
        if !r.is_empty() {
            return Err(SnapshotError::Truncated("engine state has trailing bytes"));
        }
        self.service
            .on_start(Some(view.service))
            .map_err(SnapshotError::Service)?;
        self.applied_position = view.position;
        self.log_hash = view.log_hash;
        self.digests_at.push_back((view.position, view.digest));
        let digest = self.service.digest();
        if digest != view.digest {
            self.digest_mismatches += 1;
            tracing::error!(
                position = view.position,
                recorded = view.digest,
                restored = digest,
                "DIGEST MISMATCH after restoring the snapshot at position {}: the snapshot recorded {:#018x}, the restored service reports {digest:#018x}; its snapshot and restore do not agree",
                view.position, view.digest
            );
        }
        Ok(())
    }

    /// Replaces everything with the snapshot file `bytes` (a follower that fell behind the
    /// leader's purged log): the engine's state is cleared (a node on another thread hears
    /// every timer removed, then the snapshot's scheduled) and restored, and the service's
    /// `on_start` replaces its whole state.
    pub fn install(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        snapshot::decode(bytes)?;
        let ids: Vec<u64> = self.timers.keys().copied().collect();
        for correlation_id in ids {
            self.timer_changed(TimerChange::Removed { correlation_id });
        }
        self.sessions.clear();
        self.timers.clear();
        self.timers_by_deadline.clear();
        self.replies.clear();
        self.digests_at.clear();
        self.pending_snapshot = None;
        self.started = false;
        self.start(Some(bytes))
    }

    /// A snapshot taken since the last call, for the writer.
    pub fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        self.pending_snapshot.take()
    }

    /// Digest checks that failed: this replica's service state differed from the leader's at
    /// a snapshot position (or from the snapshot it restored).
    pub fn digest_mismatches(&self) -> u64 {
        self.digest_mismatches
    }

    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots_taken
    }

    /// The snapshot position reached by the last applied frame: records the digest, and with a
    /// service that keeps snapshots, takes one.
    fn snapshot_here(&mut self, egress: &mut Vec<Egress>) {
        let position = self.applied_position;
        let digest = self.service.digest();
        if self.digests_at.len() == DIGESTS_KEPT {
            self.digests_at.pop_front();
        }
        self.digests_at.push_back((position, digest));
        egress.push(Egress::SnapshotTaken { position, digest });
        let mut service = Vec::new();
        if !self.service.on_take_snapshot(position, &mut service) {
            return;
        }
        let mut engine = Vec::new();
        let mut w = Writer { out: &mut engine };
        w.u64(self.applied_messages);
        w.u64(self.duplicates_dropped);
        w.u64(self.sessions.len() as u64);
        for (&id, &last) in &self.sessions {
            w.u64(id);
            w.u64(last);
        }
        w.u64(self.timers.len() as u64);
        for (&id, &deadline) in &self.timers {
            w.u64(id);
            w.u64(deadline);
        }
        w.u64(self.replies.len() as u64);
        for (&session_id, kept) in &self.replies {
            w.u64(session_id);
            w.u64(kept.len() as u64);
            for (sequence, payloads) in kept {
                w.u64(*sequence);
                w.u64(payloads.len() as u64);
                for p in payloads {
                    w.bytes(p);
                }
            }
        }
        self.snapshots_taken += 1;
        self.pending_snapshot = Some(TakenSnapshot {
            position,
            bytes: snapshot::encode(position, self.log_hash, digest, &engine, &service),
        });
    }

    /// The leader's digest at snapshot `position` was `leader`: compare ours, if we have it.
    fn check_digest(&mut self, position: u64, leader: u64) {
        let Some(&(_, own)) = self.digests_at.iter().find(|(p, _)| *p == position) else {
            return;
        };
        if own != leader {
            self.digest_mismatches += 1;
            tracing::error!(
                position,
                leader,
                own,
                "DIGEST MISMATCH at snapshot position {position}: the leader's service digest is {leader:#018x}, this replica's {own:#018x}; the service is not deterministic (it must depend only on what the log gives it)"
            );
        }
    }

    /// Keeps every change to the timer table for [`Applier::take_timer_changes`].
    pub fn record_timer_changes(&mut self) {
        self.timer_changes.get_or_insert_with(Vec::new);
    }

    /// Hands the recorded timer changes to `f`, oldest first.
    pub fn take_timer_changes(&mut self, f: impl FnMut(TimerChange)) {
        if let Some(changes) = &mut self.timer_changes {
            changes.drain(..).for_each(f);
        }
    }

    fn timer_changed(&mut self, change: TimerChange) {
        if let Some(changes) = &mut self.timer_changes {
            changes.push(change);
        }
    }

    pub fn into_service(self) -> S {
        self.service
    }

    pub fn service(&self) -> &S {
        &self.service
    }
    /// For callbacks that do not come from the log (role change, terminate).
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }
    pub fn applied_position(&self) -> u64 {
        self.applied_position
    }
    pub fn log_hash(&self) -> u64 {
        self.log_hash
    }
    pub fn applied_messages(&self) -> u64 {
        self.applied_messages
    }
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped
    }
    /// Timers whose deadline is at or before `now_ns`, earliest first (the leader appends
    /// their events).
    pub fn due_timers(&self, now_ns: u64) -> impl Iterator<Item = u64> + '_ {
        self.timers_by_deadline
            .iter()
            .take_while(move |(d, _)| *d <= now_ns)
            .map(|&(_, id)| id)
    }

    /// The timer table: (correlation id, deadline) of every timer scheduled and not yet fired.
    pub fn timers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.timers.iter().map(|(&id, &deadline)| (id, deadline))
    }

    /// Timers scheduled and not yet fired.
    pub fn scheduled_timers(&self) -> usize {
        self.timers.len()
    }

    pub fn is_open(&self, session_id: u64) -> bool {
        self.sessions.contains_key(&session_id)
    }
    /// The last sequence applied for a session.
    pub fn last_sequence(&self, session_id: u64) -> Option<u64> {
        self.sessions.get(&session_id).copied()
    }

    /// Applies the frame at `position`, which occupies `encoded` bytes of the log. Egress
    /// goes to `egress`.
    pub fn apply(
        &mut self,
        position: u64,
        encoded: &[u8],
        frame: &Frame<'_>,
        egress: &mut Vec<Egress>,
    ) {
        assert_eq!(
            position, self.applied_position,
            "frames are applied in log order without gaps"
        );
        if !self.started {
            self.started = true;
            // Without a snapshot to give, the default start cannot fail; a service that
            // refuses to start empty is the runtime's to report (it calls `start` itself).
            let _ = self.service.on_start(None);
        }
        self.applied_position = position + encoded.len() as u64;
        self.log_hash = fnv1a(fnv1a(self.log_hash, &position.to_le_bytes()), encoded);
        self.context.position = position;
        self.context.timestamp_ns = frame.meta.timestamp_ns;
        let session_id = frame.meta.session_id;
        // The log holds only frames the leader wrote and checked, so one that does not decode
        // is a bug: counted (the simulator fails the run on it) and skipped the same way on
        // every replica, never a panic that a forged frame could aim at.
        let Ok(message) = Message::decode(frame) else {
            self.undecodable_frames += 1;
            return;
        };
        match (FrameType::from_u16(frame.meta.frame_type), message) {
            (Some(FrameType::SessionOpen), Message::SessionOpen(open)) => {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    self.sessions.entry(session_id)
                {
                    e.insert(0);
                    self.service.on_session_open(&mut self.context, session_id);
                }
                egress.push(Egress::SessionOpened {
                    session_id,
                    correlation_id: open.correlation_id,
                });
            }
            (Some(FrameType::SessionClose), Message::SessionClose(close)) => {
                let reason =
                    CloseReason::from_u8(close.reason).unwrap_or(CloseReason::ServiceAction);
                self.close(session_id, reason, egress);
            }
            (Some(FrameType::SessionMessage), Message::SessionMessage { header, .. })
                if frame.meta.flags & crate::codec::message::FLAG_REFUSED != 0 =>
            {
                // A refused message's stand-in: the sequence is used up, nothing is applied.
                if let Some(last) = self.sessions.get_mut(&session_id) {
                    if header.sequence == *last + 1 {
                        *last = header.sequence;
                    }
                }
            }
            (Some(FrameType::SessionMessage), Message::SessionMessage { header, payload }) => {
                self.apply_message(session_id, header, payload, egress);
            }
            (Some(FrameType::ClusterAction), Message::ClusterAction(action)) => {
                match ClusterActionKind::from_u8(action.kind) {
                    Some(ClusterActionKind::Snapshot) => self.snapshot_here(egress),
                    Some(ClusterActionKind::Shutdown) => {
                        self.snapshot_here(egress);
                        egress.push(Egress::Shutdown {
                            position: self.applied_position,
                        });
                    }
                    Some(ClusterActionKind::DigestCheck) => {
                        self.check_digest(action.position, action.value)
                    }
                    None => {}
                }
            }
            (Some(FrameType::TimerEvent), Message::TimerEvent(timer)) => {
                // Fires once: a second event for the same timer (two leaders both saw it due)
                // finds it gone and is ignored, on every replica alike.
                // An event stamped before the timer's deadline is stale (the timer was moved
                // later after the event was appended) and is ignored.
                let id = timer.correlation_id;
                if let Some(&deadline) = self
                    .timers
                    .get(&id)
                    .filter(|&&d| frame.meta.timestamp_ns >= d)
                {
                    self.timers.remove(&id);
                    self.timers_by_deadline.remove(&(deadline, id));
                    self.timer_changed(TimerChange::Removed { correlation_id: id });
                    self.service.on_timer(&mut self.context, id);
                }
            }
            _ => {}
        }
        for command in std::mem::take(&mut self.context.timer_commands) {
            match command {
                TimerCommand::Schedule {
                    correlation_id,
                    deadline_ns,
                } => {
                    if let Some(old) = self.timers.insert(correlation_id, deadline_ns) {
                        self.timers_by_deadline.remove(&(old, correlation_id));
                    }
                    self.timers_by_deadline
                        .insert((deadline_ns, correlation_id));
                    self.timer_changed(TimerChange::Scheduled {
                        correlation_id,
                        deadline_ns,
                    });
                }
                TimerCommand::Cancel { correlation_id } => {
                    if let Some(old) = self.timers.remove(&correlation_id) {
                        self.timers_by_deadline.remove(&(old, correlation_id));
                        self.timer_changed(TimerChange::Removed { correlation_id });
                    }
                }
            }
        }
        // Sessions the service closed, after the callback (their own close callbacks may
        // close more).
        while let Some(session_id) = self.context.closes.pop() {
            self.close(session_id, CloseReason::ServiceAction, egress);
        }
        for (session_id, payload) in self.context.egress.drain(..) {
            egress.push(Egress::Message {
                session_id,
                payload,
            });
        }
    }

    /// Closes an open session: the engine forgets it, the service hears why, the client is
    /// told. Unknown or already closed sessions are ignored (a close is applied once).
    fn close(&mut self, session_id: u64, reason: CloseReason, egress: &mut Vec<Egress>) {
        if self.sessions.remove(&session_id).is_none() {
            return;
        }
        self.replies.remove(&session_id);
        self.service
            .on_session_close(&mut self.context, session_id, reason);
        egress.push(Egress::SessionClosed { session_id, reason });
    }

    /// Open sessions, in id order.
    pub fn open_sessions(&self) -> impl Iterator<Item = u64> + '_ {
        self.sessions.keys().copied()
    }

    fn apply_message(
        &mut self,
        session_id: u64,
        header: SessionMessageHeader,
        payload: &[u8],
        egress: &mut Vec<Egress>,
    ) {
        let Some(last) = self.sessions.get_mut(&session_id) else {
            return; // not open: never applied
        };
        if header.sequence <= *last {
            // A resend of something already applied: acknowledge again, with the replies it
            // got if they are still kept; apply never twice.
            self.duplicates_dropped += 1;
            egress.push(Egress::Applied {
                session_id,
                sequence: header.sequence,
            });
            let kept = self
                .replies
                .get(&session_id)
                .and_then(|r| r.iter().find(|(sequence, _)| *sequence == header.sequence));
            for payload in kept.map(|(_, p)| p.as_slice()).unwrap_or_default() {
                egress.push(Egress::Message {
                    session_id,
                    payload: payload.clone(),
                });
            }
            return;
        }
        if header.sequence != *last + 1 {
            return; // a gap: the client resends in order
        }
        *last = header.sequence;
        self.applied_messages += 1;
        let before = self.context.egress.len();
        self.service
            .on_message(&mut self.context, session_id, payload);
        // Once a session has REPLIES_KEPT entries, the oldest one's buffers are reused: a
        // steady stream of messages keeps its replies without allocating.
        let kept = self.replies.entry(session_id).or_default();
        let (_, mut replies) = if kept.len() >= REPLIES_KEPT {
            kept.pop_front().expect("not empty")
        } else {
            (0, Vec::new())
        };
        let sent = self.context.egress[before..]
            .iter()
            .filter(|(to, _)| *to == session_id);
        let mut count = 0;
        for (_, payload) in sent {
            match replies.get_mut(count) {
                Some(buffer) => {
                    buffer.clear();
                    buffer.extend_from_slice(payload);
                }
                None => replies.push(payload.clone()),
            }
            count += 1;
        }
        replies.truncate(count);
        kept.push_back((header.sequence, replies));
        egress.push(Egress::Applied {
            session_id,
            sequence: header.sequence,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::message::{SessionClose, SessionOpen, TimerEvent};
    use crate::codec::{Decoded, FrameMeta};

    #[derive(Default)]
    struct Echo {
        seen: Vec<(u64, Vec<u8>)>,
        closed: Vec<(u64, CloseReason)>,
    }

    impl Service for Echo {
        fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
            self.seen.push((session_id, payload.to_vec()));
            ctx.send(session_id, payload);
        }
        fn on_session_close(&mut self, _ctx: &mut Context, session_id: u64, reason: CloseReason) {
            self.closed.push((session_id, reason));
        }
        fn digest(&self) -> u64 {
            self.seen
                .iter()
                .fold(FNV_OFFSET, |h, (s, p)| fnv1a(fnv1a(h, &s.to_le_bytes()), p))
        }
        /// Each message seen: `[session u64 | len u64 | bytes]`.
        fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
            for (s, p) in &self.seen {
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&(p.len() as u64).to_le_bytes());
                out.extend_from_slice(p);
            }
            true
        }
        fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
            let mut r = snapshot::Reader::new(snapshot.unwrap_or_default());
            while !r.is_empty() {
                let session = r.u64().map_err(|e| e.to_string())?;
                let payload = r.bytes().map_err(|e| e.to_string())?;
                self.seen.push((session, payload.to_vec()));
            }
            Ok(())
        }
    }

    fn action(kind: ClusterActionKind, position: u64, value: u64) -> Message<'static> {
        Message::ClusterAction(crate::codec::message::ClusterAction {
            kind: kind as u8,
            position,
            value,
        })
    }

    #[test]
    fn a_snapshot_carries_sessions_dedup_and_kept_replies_to_a_new_replica() {
        let mut a = Applier::new(Echo::default());
        let open = Message::SessionOpen(SessionOpen {
            correlation_id: 3,
            client_id: 7,
        });
        apply(&mut a, 7, open);
        apply(&mut a, 7, msg(1, b"one"));
        apply(&mut a, 7, msg(2, b"two"));
        let egress = apply(&mut a, 0, action(ClusterActionKind::Snapshot, 0, 0));
        let position = a.applied_position();
        assert_eq!(
            egress,
            vec![Egress::SnapshotTaken {
                position,
                digest: a.service().digest()
            }]
        );
        let taken = a.take_snapshot().expect("the service keeps snapshots");
        assert_eq!(taken.position, position);
        assert!(a.take_snapshot().is_none(), "handed over once");

        let mut b = Applier::new(Echo::default());
        b.start(Some(&taken.bytes)).unwrap();
        assert_eq!(b.applied_position(), a.applied_position());
        assert_eq!(b.log_hash(), a.log_hash());
        assert_eq!(b.service().digest(), a.service().digest());
        assert_eq!(b.last_sequence(7), Some(2));
        assert_eq!(b.applied_messages(), 2);
        assert_eq!(b.digest_mismatches(), 0);
        // The same frames from here on give the same egress and state on both: a resend of
        // message 2 gets its kept reply and is not applied again; message 3 is applied.
        for m in [msg(2, b"two"), msg(3, b"three")] {
            assert_eq!(apply(&mut a, 7, m), apply(&mut b, 7, m));
        }
        assert_eq!(b.service().seen, a.service().seen);
        assert_eq!(b.log_hash(), a.log_hash());
        // A damaged file is refused with the reason.
        let mut bad = taken.bytes.clone();
        bad[50] ^= 1;
        let err = Applier::new(Echo::default()).start(Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn a_replica_whose_digest_differs_from_the_leaders_at_a_snapshot_reports_it() {
        let mut leader = Applier::new(Echo::default());
        let mut follower = Applier::new(Echo::default());
        for x in [&mut leader, &mut follower] {
            apply(
                x,
                7,
                Message::SessionOpen(SessionOpen {
                    correlation_id: 0,
                    client_id: 7,
                }),
            );
        }
        apply(&mut leader, 7, msg(1, b"x"));
        apply(&mut follower, 7, msg(1, b"x"));
        // Nondeterminism: the follower's service state drifts (not from the log).
        follower.service_mut().seen[0].1 = b"y".to_vec();
        for x in [&mut leader, &mut follower] {
            apply(x, 0, action(ClusterActionKind::Snapshot, 0, 0));
        }
        let position = leader.applied_position();
        let leader_digest = leader.service().digest();
        for x in [&mut leader, &mut follower] {
            apply(
                x,
                0,
                action(ClusterActionKind::DigestCheck, position, leader_digest),
            );
        }
        assert_eq!(leader.digest_mismatches(), 0);
        assert_eq!(follower.digest_mismatches(), 1);
        // A check for a position this replica has no digest for is not a mismatch.
        apply(
            &mut follower,
            0,
            action(ClusterActionKind::DigestCheck, 8, leader_digest),
        );
        assert_eq!(follower.digest_mismatches(), 1);
    }

    /// Applies `message` as the next frame; returns the egress.
    fn apply(a: &mut Applier<Echo>, session_id: u64, message: Message<'_>) -> Vec<Egress> {
        apply_frame(a, session_id, message, 77)
    }

    /// Applies `message` as the next frame of `session_id`, stamped `timestamp_ns`.
    fn apply_frame<S: Service>(
        a: &mut Applier<S>,
        session_id: u64,
        message: Message<'_>,
        timestamp_ns: u64,
    ) -> Vec<Egress> {
        let mut buf = vec![0u8; message.encoded_len()];
        let meta = FrameMeta {
            session_id,
            timestamp_ns,
            ..FrameMeta::default()
        };
        message.encode(meta, &mut buf);
        let Ok(Decoded::Frame(frame, _)) = crate::codec::decode(&buf) else {
            panic!()
        };
        let mut egress = Vec::new();
        a.apply(a.applied_position(), &buf, &frame, &mut egress);
        egress
    }

    fn msg(sequence: u64, payload: &[u8]) -> Message<'_> {
        Message::SessionMessage {
            header: SessionMessageHeader { sequence },
            payload,
        }
    }

    #[test]
    fn messages_apply_once_in_sequence_and_only_on_open_sessions() {
        let mut a = Applier::new(Echo::default());
        assert!(
            apply(&mut a, 7, msg(1, b"early")).is_empty(),
            "not open: not applied, not acknowledged"
        );
        let open = Message::SessionOpen(SessionOpen {
            correlation_id: 3,
            client_id: 7,
        });
        assert_eq!(
            apply(&mut a, 7, open),
            vec![Egress::SessionOpened {
                session_id: 7,
                correlation_id: 3
            }]
        );
        assert_eq!(
            apply(&mut a, 7, msg(1, b"a")),
            vec![
                Egress::Applied {
                    session_id: 7,
                    sequence: 1
                },
                Egress::Message {
                    session_id: 7,
                    payload: b"a".to_vec()
                }
            ]
        );
        // A resend after failover: acknowledged again with the reply it got (the first one
        // may have been lost with the leader), never applied twice.
        assert_eq!(
            apply(&mut a, 7, msg(1, b"a")),
            vec![
                Egress::Applied {
                    session_id: 7,
                    sequence: 1
                },
                Egress::Message {
                    session_id: 7,
                    payload: b"a".to_vec()
                }
            ]
        );
        // A gap: dropped until the missing one arrives.
        assert!(apply(&mut a, 7, msg(3, b"c")).is_empty());
        apply(&mut a, 7, msg(2, b"b"));
        apply(&mut a, 7, msg(3, b"c"));
        let seen: Vec<&[u8]> = a.service().seen.iter().map(|(_, p)| p.as_slice()).collect();
        assert_eq!(seen, vec![b"a".as_slice(), b"b", b"c"]);
        assert_eq!(a.duplicates_dropped(), 1);
        assert_eq!(a.last_sequence(7), Some(3));
        // Replies are kept for the last REPLIES_KEPT messages only: an older resend is
        // acknowledged without one.
        for sequence in 4..3 + REPLIES_KEPT as u64 {
            apply(&mut a, 7, msg(sequence, b"x"));
        }
        assert_eq!(
            apply(&mut a, 7, msg(3, b"c")).len(),
            1 + 1,
            "3 is still kept"
        );
        apply(&mut a, 7, msg(3 + REPLIES_KEPT as u64, b"x"));
        assert_eq!(
            apply(&mut a, 7, msg(3, b"c")).len(),
            1,
            "3 is no longer kept"
        );
        // The newest entry reused the evicted one's buffers and holds its own reply.
        assert_eq!(
            apply(&mut a, 7, msg(3 + REPLIES_KEPT as u64, b"x"))[1],
            Egress::Message {
                session_id: 7,
                payload: b"x".to_vec()
            }
        );
    }

    #[test]
    fn close_and_timers_reach_the_service_with_the_log_time() {
        let mut a = Applier::new(Echo::default());
        apply(
            &mut a,
            7,
            Message::SessionOpen(SessionOpen {
                correlation_id: 0,
                client_id: 7,
            }),
        );
        apply(
            &mut a,
            7,
            Message::SessionClose(SessionClose {
                reason: CloseReason::Timeout as u8,
            }),
        );
        apply(
            &mut a,
            7,
            Message::SessionClose(SessionClose {
                reason: CloseReason::Timeout as u8,
            }),
        );
        assert_eq!(
            a.service().closed,
            vec![(7, CloseReason::Timeout)],
            "a second close is a no-op"
        );
        assert!(!a.is_open(7));
    }

    /// Schedules timers from inside the service, as a service would.
    #[derive(Default)]
    struct Timers {
        fired: Vec<(u64, u64)>,
    }

    impl Service for Timers {
        fn on_message(&mut self, ctx: &mut Context, _session_id: u64, payload: &[u8]) {
            let id = payload[0] as u64;
            match payload[1] {
                b's' => ctx.schedule_timer(id, payload[2] as u64),
                _ => ctx.cancel_timer(id),
            }
        }
        fn on_timer(&mut self, ctx: &mut Context, correlation_id: u64) {
            self.fired.push((correlation_id, ctx.timestamp_ns));
        }
        fn digest(&self) -> u64 {
            self.fired.len() as u64
        }
        fn on_take_snapshot(&mut self, _position: u64, _out: &mut Vec<u8>) -> bool {
            true
        }
        fn on_start(&mut self, _snapshot: Option<&[u8]>) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn scheduled_timers_survive_a_snapshot_and_fire_from_the_restored_replica() {
        let mut a = Applier::new(Timers::default());
        apply_t(
            &mut a,
            Message::SessionOpen(SessionOpen {
                correlation_id: 0,
                client_id: 7,
            }),
            0,
        );
        apply_t(&mut a, msg(1, &[1, b's', 50]), 10);
        apply_t(&mut a, msg(2, &[2, b's', 60]), 10);
        apply_t(&mut a, action(ClusterActionKind::Snapshot, 0, 0), 20);
        let taken = a.take_snapshot().unwrap();
        let mut b = Applier::new(Timers::default());
        b.record_timer_changes();
        b.start(Some(&taken.bytes)).unwrap();
        assert_eq!(b.due_timers(100).collect::<Vec<_>>(), vec![1, 2]);
        // A node on another thread learns the restored timers as changes.
        let mut changes = Vec::new();
        b.take_timer_changes(|c| changes.push(c));
        assert_eq!(changes.len(), 2);
        apply_t(
            &mut b,
            Message::TimerEvent(TimerEvent { correlation_id: 2 }),
            65,
        );
        assert_eq!(b.service().fired, vec![(2, 65)]);
        assert_eq!(b.due_timers(100).collect::<Vec<_>>(), vec![1]);
    }

    fn apply_t(a: &mut Applier<Timers>, message: Message<'_>, timestamp_ns: u64) {
        apply_frame(a, 7, message, timestamp_ns);
    }

    #[test]
    fn timers_fire_once_from_the_log_and_stale_or_cancelled_events_are_ignored() {
        let mut a = Applier::new(Timers::default());
        let mut seq = 0;
        let mut send = |a: &mut Applier<Timers>, bytes: &[u8]| {
            seq += 1;
            apply_t(a, msg(seq, bytes), 10);
        };
        apply_t(
            &mut a,
            Message::SessionOpen(SessionOpen {
                correlation_id: 0,
                client_id: 7,
            }),
            0,
        );
        send(&mut a, &[1, b's', 50]);
        send(&mut a, &[2, b's', 60]);
        send(&mut a, &[3, b's', 70]);
        assert_eq!(a.due_timers(55).collect::<Vec<_>>(), vec![1]);
        assert_eq!(a.due_timers(100).collect::<Vec<_>>(), vec![1, 2, 3]);
        // Timer 1 fires at the event's (leader's) time; a second event for it is ignored.
        apply_t(
            &mut a,
            Message::TimerEvent(TimerEvent { correlation_id: 1 }),
            55,
        );
        apply_t(
            &mut a,
            Message::TimerEvent(TimerEvent { correlation_id: 1 }),
            56,
        );
        // Timer 2 moved later: an event stamped before the new deadline is stale.
        send(&mut a, &[2, b's', 90]);
        apply_t(
            &mut a,
            Message::TimerEvent(TimerEvent { correlation_id: 2 }),
            65,
        );
        // Timer 3 cancelled: its event is ignored.
        send(&mut a, &[3, b'c', 0]);
        apply_t(
            &mut a,
            Message::TimerEvent(TimerEvent { correlation_id: 3 }),
            75,
        );
        apply_t(
            &mut a,
            Message::TimerEvent(TimerEvent { correlation_id: 2 }),
            95,
        );
        assert_eq!(a.service().fired, vec![(1, 55), (2, 95)]);
        assert_eq!(a.scheduled_timers(), 0);
    }

    #[test]
    fn equal_frames_give_equal_log_hashes() {
        let mut a = Applier::new(Echo::default());
        let mut b = Applier::new(Echo::default());
        for x in [&mut a, &mut b] {
            apply(
                x,
                7,
                Message::SessionOpen(SessionOpen {
                    correlation_id: 0,
                    client_id: 7,
                }),
            );
            apply(x, 7, msg(1, b"same"));
        }
        assert_eq!(a.log_hash(), b.log_hash());
        apply(&mut a, 7, msg(2, b"x"));
        apply(&mut b, 7, msg(2, b"y"));
        assert_ne!(a.log_hash(), b.log_hash());
    }
}
