//! The service on a thread of its own (dedicated threading): the node feeds committed frames
//! over a record channel to a [`ServiceHost`], which applies them (sessions, dedup, timers, the
//! service itself) and sends egress, timer changes and its applied position back over a second
//! channel. The node's side of that pair is [`RemoteApplier`], the node's `ApplyStage`. The
//! channels are seams ([`RecordSink`], [`RecordSource`]): lock-free rings between threads in
//! the runtime, queues the simulator delivers when it chooses.
//!
//! ```text
//!  node                                           service's host
//!  RemoteApplier ── feed: FRAME/ROLE/TERMINATE ──▶ ServiceHost { Applier<S> }
//!       ▲                                              │
//!       └── back: OPENED/APPLIED/MESSAGE/TIMER/POSITION ┘
//! ```
//!
//! Determinism does not depend on the hop: the applier (and its timer table, which decides
//! whether a timer event fires) lives with the service, and sees the log in order. The node
//! mirrors the timer table only to know when the leader should append a timer event; a late
//! mirror delays an event, and a duplicate event is ignored by the applier on every replica.
//! This module never decides anything the log does not: it only carries frames and reports.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::ApplyStage;
use crate::codec::{self, Decoded, Frame};
use crate::consensus::Role;
use crate::io::{Files, RecordSink, RecordSource};
use crate::service::snapshot::TakenSnapshot;
use crate::service::{Applier, Egress, Service, TimerChange};

// Feed records (node → service).
const FRAME: u32 = 1;
const ROLE: u32 = 2;
const TERMINATE: u32 = 3;
/// A snapshot to install, by position: the service thread reads the file itself.
const INSTALL: u32 = 4;
// Back records (service → node).
const OPENED: u32 = 1;
const APPLIED: u32 = 2;
const MESSAGE: u32 = 3;
const TIMER_SCHEDULED: u32 = 4;
const TIMER_REMOVED: u32 = 5;
const POSITION: u32 = 6;
const SNAPSHOT_TAKEN: u32 = 7;
const SHUTDOWN: u32 = 8;
const CLOSED: u32 = 9;

/// Records the service's host handles per duty cycle.
const RECORDS_PER_CYCLE_MAX: usize = 256;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Makes the two ends over a feed channel (node → service) and a back channel (service →
/// node): the node's apply stage and the service's host, which owns `applier` (started,
/// perhaps from a snapshot).
pub fn split<S, FeedIn, FeedOut, BackIn, BackOut>(
    mut applier: Applier<S>,
    (feed_in, feed_out): (FeedIn, FeedOut),
    (back_in, back_out): (BackIn, BackOut),
    name: String,
) -> (
    RemoteApplier<FeedIn, BackOut>,
    ServiceHost<S, FeedOut, BackIn>,
)
where
    S: Service,
    FeedIn: RecordSink,
    FeedOut: RecordSource,
    BackIn: RecordSink,
    BackOut: RecordSource,
{
    applier.record_timer_changes();
    let start = applier.applied_position();
    let remote = RemoteApplier {
        feed: feed_in,
        back: back_out,
        staged: false,
        fed: start,
        applied: start,
        digest: applier.service().digest(),
        applied_messages: applier.applied_messages(),
        snapshots_taken: 0,
        digest_mismatches: applier.digest_mismatches(),
        initial_sessions: applier.open_sessions().collect(),
        // The mirror starts as the table is now (timers restored from a snapshot before the
        // split included); later changes come back as records. Before, the mirror relied on the
        // caller recording timer changes before the applier's start (the runtime did); the
        // simulator split after the start, and its member, restarted from a snapshot holding
        // timers, led and never fired them (seed 2996).
        timers: applier.timers().collect(),
        by_deadline: applier
            .timers()
            .map(|(id, deadline)| (deadline, id))
            .collect(),
        scratch: Vec::new(),
        batch: Batch::default(),
    };
    let host = ServiceHost {
        name,
        applier,
        snapshots: VecDeque::new(),
        feed: feed_out,
        back: back_in,
        pending: VecDeque::new(),
        egress: Vec::new(),
        batch: Batch::default(),
    };
    (remote, host)
}

/// The node's end: hands committed frames to the service's host.
pub struct RemoteApplier<F, B> {
    feed: F,
    back: B,
    staged: bool,
    fed: u64,
    /// As last reported by the service's host.
    applied: u64,
    digest: u64,
    applied_messages: u64,
    snapshots_taken: u64,
    digest_mismatches: u64,
    /// The sessions open when the service's host took over (after a snapshot install there this
    /// is not refreshed; see `Node`'s session timeouts).
    initial_sessions: Vec<u64>,
    /// Mirror of the applier's timer table: correlation id → deadline, and by deadline.
    timers: BTreeMap<u64, u64>,
    by_deadline: BTreeSet<(u64, u64)>,
    scratch: Vec<u8>,
    batch: Batch,
}

impl<F: RecordSink, B: RecordSource> RemoteApplier<F, B> {
    /// The feed's sink (the runtime keeps its doorbell there).
    pub fn feed(&self) -> &F {
        &self.feed
    }

    fn stage(&mut self, kind: u32, payload: &[u8]) {
        // Callers checked room (`can_take`); control records are small and the ring is
        // drained continuously, so wait for room rather than lose one.
        while !self.feed.stage(kind, payload) {
            self.feed.publish();
            self.feed.wait_for_room();
        }
        self.staged = true;
    }

    fn on_back(&mut self, kind: u32, bytes: &[u8], egress: &mut Vec<Egress>) {
        let (a, b) = (u64_at(bytes, 0), u64_at(bytes, 8));
        match kind {
            OPENED => egress.push(Egress::SessionOpened {
                session_id: a,
                correlation_id: b,
            }),
            APPLIED => egress.push(Egress::Applied {
                session_id: a,
                sequence: b,
            }),
            MESSAGE => egress.push(Egress::Message {
                session_id: a,
                payload: bytes.get(8..).unwrap_or_default().to_vec(),
            }),
            TIMER_SCHEDULED => {
                if let Some(old) = self.timers.insert(a, b) {
                    self.by_deadline.remove(&(old, a));
                }
                self.by_deadline.insert((b, a));
            }
            TIMER_REMOVED => {
                if let Some(old) = self.timers.remove(&a) {
                    self.by_deadline.remove(&(old, a));
                }
            }
            POSITION => {
                self.applied = a;
                self.digest = b;
                self.applied_messages = u64_at(bytes, 16);
                self.snapshots_taken = u64_at(bytes, 24);
                self.digest_mismatches = u64_at(bytes, 32);
            }
            SNAPSHOT_TAKEN => egress.push(Egress::SnapshotTaken {
                position: a,
                digest: b,
            }),
            SHUTDOWN => egress.push(Egress::Shutdown { position: a }),
            CLOSED => egress.push(Egress::SessionClosed {
                session_id: a,
                reason: crate::codec::message::CloseReason::from_u8(b as u8)
                    .unwrap_or(crate::codec::message::CloseReason::ServiceAction),
            }),
            _ => {}
        }
    }
}

impl<F: RecordSink, B: RecordSource> ApplyStage for RemoteApplier<F, B> {
    fn fed_position(&self) -> u64 {
        self.fed
    }

    fn applied_position(&self) -> u64 {
        self.applied
    }

    fn can_take(&mut self, len: usize) -> bool {
        self.feed.has_room(8 + len)
    }

    fn apply(&mut self, position: u64, encoded: &[u8], _frame: &Frame<'_>, _: &mut Vec<Egress>) {
        let mut record = std::mem::take(&mut self.scratch);
        record.clear();
        record.extend_from_slice(&position.to_le_bytes());
        record.extend_from_slice(encoded);
        self.stage(FRAME, &record);
        self.scratch = record;
        self.fed = position + encoded.len() as u64;
    }

    fn flush(&mut self) {
        if self.staged {
            self.staged = false;
            self.feed.publish();
        }
    }

    fn poll_egress(&mut self, egress: &mut Vec<Egress>) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        let mut got = batch.read_from(&mut self.back);
        if got == 0 && !self.back.is_drained() {
            got = batch.read_from(&mut self.back);
        }
        for (kind, bytes) in batch.records() {
            self.on_back(kind, bytes, egress);
        }
        self.batch = batch;
        got
    }

    fn due_timers(&self, now_ns: u64, max: usize, out: &mut Vec<u64>) {
        out.extend(
            self.by_deadline
                .iter()
                .take_while(|(d, _)| *d <= now_ns)
                .map(|&(_, id)| id)
                .take(max),
        );
    }

    fn on_role_change(&mut self, role: Role) {
        self.stage(ROLE, &[role.code()]);
        self.flush();
    }

    fn terminate(&mut self) {
        self.stage(TERMINATE, &[]);
        self.flush();
    }

    fn digest(&self) -> u64 {
        self.digest
    }

    fn applied_messages(&self) -> u64 {
        self.applied_messages
    }

    fn snapshots_taken(&self) -> u64 {
        self.snapshots_taken
    }

    fn digest_mismatches(&self) -> u64 {
        self.digest_mismatches
    }

    fn open_sessions(&self, out: &mut Vec<u64>) {
        out.extend_from_slice(&self.initial_sessions);
    }

    fn install(&mut self, position: u64, _bytes: &[u8]) -> Result<(), String> {
        // The node wrote the file; the service thread reads it (a snapshot may not fit the
        // ring). Frames after it follow in ring order.
        self.stage(INSTALL, &position.to_le_bytes());
        self.flush();
        self.fed = position;
        self.applied = position;
        Ok(())
    }
}

/// The service's end: applies what the node fed it.
pub struct ServiceHost<S: Service, F, B> {
    name: String,
    applier: Applier<S>,
    /// Snapshots the applier took, to be written by the caller.
    snapshots: VecDeque<TakenSnapshot>,
    feed: F,
    back: B,
    /// Back records waiting for room; while any wait, the feed is not read (the node's
    /// `can_take` then holds further frames back).
    pending: VecDeque<(u32, Vec<u8>)>,
    egress: Vec<Egress>,
    batch: Batch,
}

impl<S: Service, F: RecordSource, B: RecordSink> ServiceHost<S, F, B> {
    pub fn applier(&self) -> &Applier<S> {
        &self.applier
    }

    /// The back channel's sink (the runtime keeps its doorbell there).
    pub fn back(&self) -> &B {
        &self.back
    }

    pub fn into_service(self) -> S {
        self.applier.into_service()
    }

    /// The next snapshot the service took, to be written (off the service's thread, if the
    /// caller has one for it).
    pub fn take_snapshot(&mut self) -> Option<TakenSnapshot> {
        self.snapshots.pop_front()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One duty cycle: sends back what waited for room, then (if nothing waits) applies a
    /// batch of the feed, and publishes. `files` holds the snapshot files an install names.
    /// Returns the work done (0: idle).
    pub fn do_work(&mut self, files: &mut impl Files) -> usize {
        self.flush_pending();
        let work = if self.pending.is_empty() {
            self.apply_batch(files)
        } else {
            1
        };
        self.back.publish();
        work
    }

    /// Applies everything the node fed before it stopped (its last frames, `TERMINATE`).
    /// Back records that cannot fit are dropped: the node no longer drains them.
    pub fn close(&mut self, files: &mut impl Files) {
        loop {
            self.flush_pending();
            self.back.publish();
            if !self.pending.is_empty() {
                self.pending.clear();
            }
            if self.apply_batch(files) == 0 {
                break;
            }
        }
    }

    fn send_back(&mut self, kind: u32, payload: &[u8]) {
        if !self.pending.is_empty() || !self.back.stage(kind, payload) {
            self.pending.push_back((kind, payload.to_vec()));
        }
    }

    fn flush_pending(&mut self) {
        while let Some((kind, payload)) = self.pending.front() {
            if !self.back.stage(*kind, payload) {
                break;
            }
            self.pending.pop_front();
        }
    }

    fn on_feed(&mut self, kind: u32, bytes: &[u8], files: &mut impl Files) {
        match kind {
            FRAME => {
                let position = u64_at(bytes, 0);
                let encoded = &bytes[8.min(bytes.len())..];
                // The node validated the frame when it was appended; it decodes here.
                if let Ok(Decoded::Frame(frame, _)) = codec::decode(encoded) {
                    self.applier
                        .apply(position, encoded, &frame, &mut self.egress);
                }
            }
            ROLE => {
                let role = Role::from_code(bytes.first().copied().unwrap_or(0));
                self.applier.service_mut().on_role_change(role);
            }
            TERMINATE => self.applier.service_mut().on_terminate(),
            INSTALL => {
                let position = u64_at(bytes, 0);
                let name = crate::service::snapshot::file_name(position);
                let result = match files.read_file(&name) {
                    Ok(Some(b)) => self.applier.install(&b).map_err(|e| e.to_string()),
                    Ok(None) => Err("the file is missing".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    tracing::error!(
                        service = %self.name,
                        snapshot = %name,
                        error = %e,
                        "{}: installing snapshot {name} failed: {e}; this replica's service state is not the cluster's",
                        self.name
                    );
                }
            }
            _ => {}
        }
    }

    /// Reads up to a cycle's worth of feed records, applies them, and sends back what they
    /// produced; returns the records read.
    fn apply_batch(&mut self, files: &mut impl Files) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        let n = batch.read_from(&mut self.feed);
        if n == 0 {
            self.batch = batch;
            // Published meanwhile: not idle (the next cycle reads it).
            return usize::from(!self.feed.is_drained());
        }
        for (kind, bytes) in batch.records() {
            self.on_feed(kind, bytes, files);
        }
        self.batch = batch;
        for e in std::mem::take(&mut self.egress) {
            match e {
                Egress::SessionOpened {
                    session_id,
                    correlation_id,
                } => self.send_back(OPENED, &pair(session_id, correlation_id)),
                Egress::Applied {
                    session_id,
                    sequence,
                } => self.send_back(APPLIED, &pair(session_id, sequence)),
                Egress::Message {
                    session_id,
                    payload,
                } => {
                    let mut record = session_id.to_le_bytes().to_vec();
                    record.extend_from_slice(&payload);
                    self.send_back(MESSAGE, &record);
                }
                Egress::SnapshotTaken { position, digest } => {
                    self.send_back(SNAPSHOT_TAKEN, &pair(position, digest))
                }
                Egress::Shutdown { position } => self.send_back(SHUTDOWN, &position.to_le_bytes()),
                Egress::SessionClosed { session_id, reason } => {
                    self.send_back(CLOSED, &pair(session_id, reason as u64))
                }
            }
        }
        if let Some(snapshot) = self.applier.take_snapshot() {
            self.snapshots.push_back(snapshot);
        }
        let mut changes = Vec::new();
        self.applier.take_timer_changes(|c| changes.push(c));
        for change in changes {
            match change {
                TimerChange::Scheduled {
                    correlation_id,
                    deadline_ns,
                } => self.send_back(TIMER_SCHEDULED, &pair(correlation_id, deadline_ns)),
                TimerChange::Removed { correlation_id } => {
                    self.send_back(TIMER_REMOVED, &correlation_id.to_le_bytes())
                }
            }
        }
        let mut position = pair(
            self.applier.applied_position(),
            self.applier.service().digest(),
        )
        .to_vec();
        position.extend_from_slice(&self.applier.applied_messages().to_le_bytes());
        position.extend_from_slice(&self.applier.snapshots_taken().to_le_bytes());
        position.extend_from_slice(&self.applier.digest_mismatches().to_le_bytes());
        self.send_back(POSITION, &position);
        n
    }
}

/// One duty cycle's records, copied out of the channel into one buffer (no allocation once warm),
/// so they can be handled with the ring released.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    index: Vec<(u32, usize, usize)>,
}

impl Batch {
    fn read_from(&mut self, ring: &mut impl RecordSource) -> usize {
        self.bytes.clear();
        self.index.clear();
        let (bytes, index) = (&mut self.bytes, &mut self.index);
        ring.read(RECORDS_PER_CYCLE_MAX, |kind, payload| {
            index.push((kind, bytes.len(), payload.len()));
            bytes.extend_from_slice(payload);
        })
    }

    fn records(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.index
            .iter()
            .map(|&(kind, at, len)| (kind, &self.bytes[at..at + len]))
    }
}

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}
