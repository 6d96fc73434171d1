//! Dedicated threading's service thread: a [`ServiceAgent`] runs the service's host
//! (`node::remote::ServiceHost`, the code the simulator drives too) on a thread of its own,
//! joined to the node's [`RemoteApplier`] by two record rings. This module owns only what
//! touches the OS: the rings' doorbells (the handshake of `sys::links`), the snapshot
//! writer's thread, and the directory an install reads its snapshot from.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::snapshot_files::SnapshotWriter;
use crate::io::{NoFiles, RecordSink, RecordSource};
use crate::node::remote::{self, ServiceHost};
use crate::ring::records::{record_channel, RecordConsumer, RecordProducer};
use crate::service::{Applier, Service};
use crate::sys::files::DirFiles;
use crate::sys::links::{eventfd, publish_and_wake, set_reader_blocks};

use super::Agent;

/// The node thread's end: its apply stage, feeding the service thread.
pub type RemoteApplier = remote::RemoteApplier<RingSink, RecordConsumer>;

/// A ring's writing end with the doorbell of its reader, and the writer's own doorbell (which
/// the other side rings, kept alive with this end).
pub struct RingSink {
    ring: RecordProducer,
    reader_bell: Arc<OwnedFd>,
    own_bell: Arc<OwnedFd>,
}

impl RingSink {
    /// The doorbell the other side rings when it sends something back (the idle strategy
    /// drains it).
    pub fn wake_fd(&self) -> RawFd {
        self.own_bell.as_raw_fd()
    }
}

impl RecordSink for RingSink {
    fn has_room(&mut self, len: usize) -> bool {
        self.ring.has_room(len)
    }
    fn stage(&mut self, kind: u32, payload: &[u8]) -> bool {
        self.ring.stage(kind, payload)
    }
    fn publish(&mut self) {
        publish_and_wake(&mut self.ring, &self.reader_bell);
    }
    fn wait_for_room(&mut self) {
        std::thread::yield_now();
    }
}

impl RecordSource for RecordConsumer {
    fn read(&mut self, max: usize, f: impl FnMut(u32, &[u8])) -> usize {
        RecordConsumer::read(self, max, f)
    }
    fn is_drained(&self) -> bool {
        RecordConsumer::is_drained(self)
    }
}

/// Makes the two ends: the node's apply stage and the service thread's agent, which owns
/// `applier` (started, perhaps from a snapshot) and writes its snapshots with `snapshots`. With
/// `blocks`, both threads sleep on their doorbells when idle (and each rings the other's).
pub fn split<S: Service>(
    applier: Applier<S>,
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
    let feed = RingSink {
        ring: feed_tx,
        reader_bell: service_bell.clone(),
        own_bell: node_bell.clone(),
    };
    let back = RingSink {
        ring: back_tx,
        reader_bell: node_bell,
        own_bell: service_bell,
    };
    let (remote, host) = remote::split(applier, (feed, feed_rx), (back, back_rx), name);
    let files = snapshots.as_ref().map(|w| DirFiles::new(w.dir()));
    Ok((
        remote,
        ServiceAgent {
            host,
            snapshots,
            files,
        },
    ))
}

/// The service thread's agent: the service's host, with the OS around it.
pub struct ServiceAgent<S: Service> {
    host: ServiceHost<S, RecordConsumer, RingSink>,
    /// Writes the snapshots the service takes, off this thread.
    snapshots: Option<SnapshotWriter>,
    /// Where an install's snapshot file is read (the log directory); none without snapshots.
    files: Option<DirFiles>,
}

impl<S: Service> ServiceAgent<S> {
    /// The doorbell the node rings when it feeds something (the idle strategy drains it).
    pub fn wake_fd(&self) -> RawFd {
        self.host.back().wake_fd()
    }

    pub fn applier(&self) -> &Applier<S> {
        self.host.applier()
    }

    pub fn into_service(self) -> S {
        self.host.into_service()
    }

    fn submit_snapshots(&mut self) {
        while let Some(snapshot) = self.host.take_snapshot() {
            if let Some(w) = &self.snapshots {
                w.submit(snapshot);
            }
        }
    }
}

impl<S: Service + Send> Agent for ServiceAgent<S> {
    fn do_work(&mut self, _now_ns: u64) -> usize {
        let work = match &mut self.files {
            Some(files) => self.host.do_work(files),
            None => self.host.do_work(&mut NoFiles),
        };
        self.submit_snapshots();
        work
    }

    fn name(&self) -> &str {
        self.host.name()
    }

    /// Applies everything the node fed before it stopped (its last frames, `TERMINATE`).
    fn on_close(&mut self) {
        match &mut self.files {
            Some(files) => self.host.close(files),
            None => self.host.close(&mut NoFiles),
        }
        self.submit_snapshots();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::message::{SessionMessageHeader, SessionOpen, TimerEvent};
    use crate::codec::{self, Decoded, FrameMeta, Message};
    use crate::consensus::Role;
    use crate::node::ApplyStage;
    use crate::service::{Context, Egress};

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
