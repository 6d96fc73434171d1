//! Dedicated threading's service thread: the node's thread feeds committed frames over a
//! record ring to a [`ServiceAgent`], which applies them (sessions, dedup, timers, the
//! service itself) and sends egress, timer changes and its applied position back over a
//! second ring. The node's side of that pair is [`RemoteApplier`], the node's `ApplyStage`.
//!
//! ```text
//!  node thread                                   service thread
//!  RemoteApplier ── feed: FRAME/ROLE/TERMINATE ──▶ ServiceAgent { Applier<S> }
//!       ▲                                              │
//!       └── back: OPENED/APPLIED/MESSAGE/TIMER/POSITION ┘
//! ```
//!
//! Determinism does not depend on the hop: the applier (and its timer table, which decides
//! whether a timer event fires) lives with the service, and sees the log in order. The node
//! mirrors the timer table only to know when the leader should append a timer event; a late
//! mirror delays an event, and a duplicate event is ignored by the applier on every replica.
//! Both rings wake a sleeping reader with the doorbell handshake of `sys::links`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::snapshot_files::SnapshotWriter;
use crate::codec::{self, Decoded, Frame};
use crate::consensus::Role;
use crate::node::ApplyStage;
use crate::ring::records::{record_channel, RecordConsumer, RecordProducer};
use crate::service::snapshot::TakenSnapshot;
use crate::service::{Applier, Egress, Service, TimerChange};
use crate::sys::links::{eventfd, publish_and_wake, set_reader_blocks};

use super::Agent;

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

/// Records the service thread handles per duty cycle.
const RECORDS_PER_CYCLE_MAX: usize = 256;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Makes the two ends: the node's apply stage and the service thread's agent, which owns
/// `applier` (started, perhaps from a snapshot; its timer changes recorded) and writes its
/// snapshots with `snapshots`. With `blocks`, both threads sleep on their doorbells when idle
/// (and each rings the other's).
pub fn split<S: Service>(
    mut applier: Applier<S>,
    snapshots: Option<SnapshotWriter>,
    ring_bytes: usize,
    name: String,
    blocks: bool,
) -> std::io::Result<(RemoteApplier, ServiceAgent<S>)> {
    let (feed_tx, feed_rx) = record_channel(ring_bytes);
    let (back_tx, back_rx) = record_channel(ring_bytes);
    set_reader_blocks(&feed_rx, blocks);
    set_reader_blocks(&back_rx, blocks);
    let node_bell = Arc::new(eventfd()?);
    let service_bell = Arc::new(eventfd()?);
    applier.record_timer_changes();
    let start = applier.applied_position();
    let remote = RemoteApplier {
        feed: feed_tx,
        feed_bell: service_bell.clone(),
        back: back_rx,
        bell: node_bell.clone(),
        staged: false,
        fed: start,
        applied: start,
        digest: applier.service().digest(),
        applied_messages: applier.applied_messages(),
        snapshots_taken: 0,
        digest_mismatches: applier.digest_mismatches(),
        initial_sessions: applier.open_sessions().collect(),
        timers: BTreeMap::new(),
        by_deadline: BTreeSet::new(),
        scratch: Vec::new(),
        batch: Batch::default(),
    };
    let agent = ServiceAgent {
        name,
        applier,
        snapshots,
        feed: feed_rx,
        bell: service_bell,
        back: back_tx,
        back_bell: node_bell,
        pending: VecDeque::new(),
        egress: Vec::new(),
        batch: Batch::default(),
    };
    Ok((remote, agent))
}

/// The node thread's end: hands committed frames to the service thread.
pub struct RemoteApplier {
    feed: RecordProducer,
    feed_bell: Arc<OwnedFd>,
    back: RecordConsumer,
    bell: Arc<OwnedFd>,
    staged: bool,
    fed: u64,
    /// As last reported by the service thread.
    applied: u64,
    digest: u64,
    applied_messages: u64,
    snapshots_taken: u64,
    digest_mismatches: u64,
    /// The sessions open when the service thread took over (after a snapshot install on that
    /// thread this is not refreshed; see `Node`'s session timeouts).
    initial_sessions: Vec<u64>,
    /// Mirror of the applier's timer table: correlation id → deadline, and by deadline.
    timers: BTreeMap<u64, u64>,
    by_deadline: BTreeSet<(u64, u64)>,
    scratch: Vec<u8>,
    batch: Batch,
}

impl RemoteApplier {
    /// The doorbell the service thread rings when it sends something back (the idle strategy
    /// drains it).
    pub fn wake_fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    fn stage(&mut self, kind: u32, payload: &[u8]) {
        // Callers checked room (`can_take`); control records are small and the ring is
        // drained continuously, so wait for room rather than lose one.
        while !self.feed.stage(kind, payload) {
            self.feed.publish();
            std::thread::yield_now();
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

impl ApplyStage for RemoteApplier {
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
            publish_and_wake(&mut self.feed, &self.feed_bell);
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

/// The service thread's agent: applies what the node fed it.
pub struct ServiceAgent<S: Service> {
    name: String,
    applier: Applier<S>,
    /// Writes the snapshots the applier takes, off this thread.
    snapshots: Option<SnapshotWriter>,
    feed: RecordConsumer,
    bell: Arc<OwnedFd>,
    back: RecordProducer,
    back_bell: Arc<OwnedFd>,
    /// Back records waiting for room; while any wait, the feed is not read (the node's
    /// `can_take` then holds further frames back).
    pending: VecDeque<(u32, Vec<u8>)>,
    egress: Vec<Egress>,
    batch: Batch,
}

impl<S: Service> ServiceAgent<S> {
    /// The doorbell the node rings when it feeds something (the idle strategy drains it).
    pub fn wake_fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    pub fn applier(&self) -> &Applier<S> {
        &self.applier
    }

    pub fn into_service(self) -> S {
        self.applier.into_service()
    }

    fn submit_snapshot(&mut self, snapshot: TakenSnapshot) {
        if let Some(w) = &self.snapshots {
            w.submit(snapshot);
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

    fn on_feed(&mut self, kind: u32, bytes: &[u8]) {
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
                let result = match &self.snapshots {
                    Some(w) => std::fs::read(w.dir().join(&name)).map_err(|e| e.to_string()),
                    None => Err("no snapshot directory".into()),
                }
                .and_then(|b| self.applier.install(&b).map_err(|e| e.to_string()));
                if let Err(e) = result {
                    eprintln!(
                        "raftline: {}: installing snapshot {name} failed: {e}; this replica's service state is not the cluster's",
                        self.name
                    );
                }
            }
            _ => {}
        }
    }

    /// Reads up to a cycle's worth of feed records, applies them, and sends back what they
    /// produced; returns the records read.
    fn apply_batch(&mut self) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        let n = batch.read_from(&mut self.feed);
        if n == 0 {
            self.batch = batch;
            // Published meanwhile: not idle (the next cycle reads it).
            return usize::from(!self.feed.is_drained());
        }
        for (kind, bytes) in batch.records() {
            self.on_feed(kind, bytes);
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
            self.submit_snapshot(snapshot);
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

/// One duty cycle's records, copied out of a ring into one buffer (no allocation once warm),
/// so they can be handled with the ring released.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    index: Vec<(u32, usize, usize)>,
}

impl Batch {
    fn read_from(&mut self, ring: &mut RecordConsumer) -> usize {
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

impl<S: Service + Send> Agent for ServiceAgent<S> {
    fn do_work(&mut self, _now_ns: u64) -> usize {
        self.flush_pending();
        let mut work = 0;
        if self.pending.is_empty() {
            work += self.apply_batch();
        } else {
            work += 1;
        }
        publish_and_wake(&mut self.back, &self.back_bell);
        work
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// Applies everything the node fed before it stopped (its last frames, `TERMINATE`).
    fn on_close(&mut self) {
        loop {
            self.flush_pending();
            publish_and_wake(&mut self.back, &self.back_bell);
            if !self.pending.is_empty() {
                // The node has stopped and no longer drains egress: drop what cannot fit.
                self.pending.clear();
            }
            if self.apply_batch() == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::message::{SessionMessageHeader, SessionOpen, TimerEvent};
    use crate::codec::{FrameMeta, Message};
    use crate::service::Context;

    /// Echoes, and schedules a timer per message that fires `after` ns later.
    #[derive(Default)]
    struct Timed {
        fired: Vec<u64>,
        roles: Vec<Role>,
        terminated: bool,
        count: u64,
    }

    impl Service for Timed {
        fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
            self.count += 1;
            ctx.schedule_timer(self.count, ctx.timestamp_ns + 1_000);
            ctx.send(session_id, payload);
        }
        fn on_timer(&mut self, _ctx: &mut Context, id: u64) {
            self.fired.push(id);
        }
        fn on_role_change(&mut self, role: Role) {
            self.roles.push(role);
        }
        fn on_terminate(&mut self) {
            self.terminated = true;
        }
        fn digest(&self) -> u64 {
            self.count * 1000 + self.fired.len() as u64
        }
    }

    /// Feeds `message` as the next frame, if the feed has room.
    fn feed(remote: &mut RemoteApplier, session: u64, at_ns: u64, message: Message<'_>) -> bool {
        let mut buf = vec![0u8; message.encoded_len()];
        let meta = FrameMeta {
            session_id: session,
            timestamp_ns: at_ns,
            ..FrameMeta::default()
        };
        message.encode(meta, &mut buf);
        let Ok(Decoded::Frame(frame, _)) = codec::decode(&buf) else {
            panic!("encodes")
        };
        if !remote.can_take(buf.len()) {
            return false;
        }
        let at = remote.fed_position();
        remote.apply(at, &buf, &frame, &mut Vec::new());
        remote.flush();
        true
    }

    fn message(sequence: u64) -> Message<'static> {
        Message::SessionMessage {
            header: SessionMessageHeader { sequence },
            payload: b"order",
        }
    }

    #[test]
    fn the_service_thread_applies_in_order_and_the_node_mirrors_its_timers() {
        let (mut remote, mut agent) = split(
            Applier::new(Timed::default()),
            None,
            1 << 16,
            "svc".into(),
            false,
        )
        .unwrap();
        let open = Message::SessionOpen(SessionOpen {
            correlation_id: 5,
            client_id: 1,
        });
        assert!(feed(&mut remote, 9, 100, open));
        assert!(feed(&mut remote, 9, 200, message(1)));
        assert!(feed(&mut remote, 9, 300, message(1)), "a resend");
        remote.on_role_change(Role::Leader);
        assert!(agent.do_work(0) > 0);

        let mut egress = Vec::new();
        assert!(remote.poll_egress(&mut egress) > 0);
        assert_eq!(
            egress,
            vec![
                Egress::SessionOpened {
                    session_id: 9,
                    correlation_id: 5
                },
                Egress::Applied {
                    session_id: 9,
                    sequence: 1
                },
                Egress::Message {
                    session_id: 9,
                    payload: b"order".to_vec()
                },
                Egress::Applied {
                    session_id: 9,
                    sequence: 1
                },
                Egress::Message {
                    session_id: 9,
                    payload: b"order".to_vec()
                },
            ],
            "in the applier's order; the duplicate gets its reply again, is not applied"
        );
        assert_eq!(remote.applied_position(), remote.fed_position());
        assert_eq!(remote.applied_messages(), 1);
        assert_eq!(agent.applier().service().roles, vec![Role::Leader]);

        // The timer (deadline 1200) shows in the node's mirror once due.
        let mut due = Vec::new();
        remote.due_timers(1_199, 64, &mut due);
        assert!(due.is_empty());
        remote.due_timers(1_200, 64, &mut due);
        assert_eq!(due, vec![1]);

        // Its event fires it on the service thread and clears the mirror.
        let event = Message::TimerEvent(TimerEvent { correlation_id: 1 });
        assert!(feed(&mut remote, 0, 1_300, event));
        agent.do_work(0);
        remote.poll_egress(&mut egress);
        assert_eq!(agent.applier().service().fired, vec![1]);
        due.clear();
        remote.due_timers(u64::MAX, 64, &mut due);
        assert!(due.is_empty(), "fired timers leave the mirror");
        assert_eq!(remote.digest(), 1001);

        remote.terminate();
        agent.on_close();
        assert!(agent.into_service().terminated);
    }

    #[test]
    fn a_full_feed_holds_frames_back_until_the_service_thread_catches_up() {
        let (mut remote, mut agent) = split(
            Applier::new(Timed::default()),
            None,
            4096,
            "svc".into(),
            false,
        )
        .unwrap();
        let open = Message::SessionOpen(SessionOpen {
            correlation_id: 5,
            client_id: 1,
        });
        assert!(feed(&mut remote, 9, 100, open));
        let mut sequence = 1;
        while feed(&mut remote, 9, 100 + sequence, message(sequence)) {
            sequence += 1;
        }
        assert!(sequence > 10, "some fit before the ring filled");
        let fed = remote.fed_position();
        // The service thread drains; then the rest goes through, nothing lost.
        let mut egress = Vec::new();
        while remote.applied_position() < fed {
            agent.do_work(0);
            remote.poll_egress(&mut egress);
        }
        let last = sequence;
        while sequence < last + 20 {
            if feed(&mut remote, 9, 100 + sequence, message(sequence)) {
                sequence += 1;
            }
            agent.do_work(0);
            remote.poll_egress(&mut egress);
        }
        while remote.applied_position() < remote.fed_position() {
            agent.do_work(0);
            remote.poll_egress(&mut egress);
        }
        assert_eq!(remote.applied_messages(), sequence - 1);
        let applied: Vec<u64> = egress
            .iter()
            .filter_map(|e| match e {
                Egress::Applied { sequence, .. } => Some(*sequence),
                _ => None,
            })
            .collect();
        assert_eq!(applied, (1..sequence).collect::<Vec<_>>());
    }
}
