//! The node's agent: one duty cycle of the node (receive, consensus, log, apply or feed), the
//! counters it publishes each cycle, and the receiver agent of dedicated threading. It never
//! blocks in a cycle; waiting is the idle strategy's.

use super::*;

/// A node as an agent: one duty cycle is one `Node::tick`, plus housekeeping (segments made
/// ahead of need, counters published).
pub struct NodeAgent<A: ApplyStage + Send> {
    pub(super) name: String,
    /// Member addresses found (or changed) by the resolver thread.
    pub(super) addresses: Option<std::sync::mpsc::Receiver<(u32, SocketAddr)>>,
    /// Zero-fills spare segment files off this thread.
    pub(super) preparer: Option<SegmentPreparer>,
    pub(super) node: Node<LinuxDisk, Authenticated<NodeNet>, A>,
    pub(super) counters: Option<CountersFile>,
    pub(super) failure: Option<String>,
    pub(super) next_housekeeping_ns: u64,
    pub(super) stats: CycleStats,
    /// Writes the snapshots this node's applier takes (shared threading).
    pub(super) snapshots: Option<SnapshotWriter>,
    /// The log directory (retired segments are deleted from it off this thread).
    pub(super) dir: std::path::PathBuf,
    /// What this node's threads spend (each publishes its own share).
    pub(super) cost: CostBoard,
}

impl<A: ApplyStage + Send> NodeAgent<A> {
    pub fn node(&self) -> &Node<LinuxDisk, Authenticated<NodeNet>, A> {
        &self.node
    }

    fn publish_counters(&self) {
        let Some(c) = &self.counters else { return };
        let n = &self.node;
        let cons = n.consensus();
        c.set(Counter::Role, u64::from(cons.role().code()));
        c.set(Counter::Term, cons.term());
        c.set(Counter::Leader, cons.leader().map_or(u64::MAX, u64::from));
        c.set(Counter::AppendedPosition, n.log().appended_position());
        c.set(Counter::DurablePosition, n.log().durable_position());
        c.set(Counter::CommitPosition, n.commit_position());
        c.set(Counter::AppliedPosition, n.applier().applied_position());
        c.set(Counter::ServiceDigest, n.applier().digest());
        c.set(Counter::AppliedMessages, n.applier().applied_messages());
        c.set(Counter::SnapshotsTaken, n.applier().snapshots_taken());
        c.set(Counter::DigestMismatches, n.applier().digest_mismatches());
        c.set(Counter::LogStartPosition, n.log().start_position());
        let k = cons.counters();
        c.set(Counter::ElectionsStarted, k.elections_started);
        c.set(Counter::Leaderships, k.leaderships);
        c.set(Counter::Truncations, k.truncations);
        c.set(Counter::MessagesDropped, k.messages_dropped);
        let s = n.stats();
        c.set(Counter::FramesMalformed, s.frames_malformed);
        c.set(Counter::ClientRequests, s.client_requests);
        c.set(Counter::ClientRedirects, s.client_redirects);
        c.set(Counter::ClientBackPressure, s.client_backpressure);
        c.set(Counter::SnapshotsSent, s.snapshots_sent);
        c.set(Counter::SnapshotsInstalled, s.snapshots_installed);
        let u = n.transport().inner().udp().stats();
        let l = n
            .transport()
            .inner()
            .links()
            .map(|l| l.stats())
            .unwrap_or_default();
        c.set(Counter::DatagramsReceived, u.datagrams_received);
        c.set(Counter::DatagramsSent, u.datagrams_sent);
        c.set(Counter::ForeignDatagramsDropped, u.foreign_dropped);
        c.set(Counter::RingRecordsSent, l.records_sent);
        c.set(Counter::RingRecordsReceived, l.records_received);
        c.set(Counter::RingFullDropped, l.full_dropped);
        c.set(Counter::MemberId, n.id() as u64);
        c.set(Counter::DutyCycles, self.stats.cycles);
        c.set(Counter::MaxCycleNs, self.stats.max_cycle_ns);
        c.set(Counter::StallCycles, self.stats.stalls);
        c.set(Counter::LogRounds, n.log().stats().rounds);
        c.set(Counter::ReplicatedAppendsRefused, s.appends_refused);
        c.set(Counter::ReplicationResends, k.resends);
        let a = n.transport().stats().unwrap_or_default();
        c.set(
            Counter::MemberSealsRefused,
            a.unsealed_refused + a.bad_tag + a.misaddressed,
        );
        c.set(Counter::MemberReplaysRefused, a.replayed);
        c.set(
            Counter::ImpossibleMessagesRefused,
            k.messages_invalid + s.peer_reports_refused,
        );
        c.set(Counter::VotesAbstained, k.votes_abstained);
        c.set(Counter::LogDamageFound, s.log_damage_found);
        c.set(Counter::OversizedDatagramsDropped, u.oversized_dropped);
        c.set(Counter::CommitInsideFrame, s.commit_inside_frame);
        c.set(Counter::MessagesTooLarge, s.messages_too_large);
        c.set(Counter::ConnectsUnauthenticated, s.connects_unauthenticated);
        c.set(Counter::SessionsRefused, s.sessions_refused);
        c.set(Counter::SessionFramesUnbound, s.session_frames_unbound);
        c.set(Counter::AdminRefused, s.admin_refused);
        c.set(Counter::MemberSettingsDiffer, s.member_settings_differ);
        c.set(Counter::MemberFramesUnagreed, s.member_frames_unagreed);
        c.set(Counter::ResendsInFlight, s.resends_in_flight);
        c.set(Counter::InstallsRefused, s.installs_refused);
        c.set(Counter::ClientAddressesRefused, u.clients_rejected);
        c.set(Counter::ClientAddressesEvicted, u.clients_evicted);
        c.set(Counter::SendErrors, u.send_errors);
        for stage in crate::node::stages::STAGES {
            let times = n.stage_times();
            c.set_stage(stage, times.buckets(stage), times.sum_ns(stage));
        }
        let cost = self.cost.total();
        c.set(Counter::CpuNs, cost.cpu_ns);
        c.set(Counter::VoluntarySwitches, cost.voluntary_switches);
        c.set(Counter::InvoluntarySwitches, cost.involuntary_switches);
        use crate::sys::cost::Syscall;
        for (counter, kind) in [
            (Counter::SyscallsReceive, Syscall::Receive),
            (Counter::SyscallsSend, Syscall::Send),
            (Counter::SyscallsWait, Syscall::Wait),
            (Counter::SyscallsDisk, Syscall::Disk),
            (Counter::SyscallsSignal, Syscall::Signal),
        ] {
            c.set(counter, cost.syscalls[kind as usize]);
        }
    }
}

impl<A: ApplyStage + Send> Agent for NodeAgent<A> {
    fn do_work(&mut self, now_ns: u64) -> usize {
        let work = match self.node.tick(now_ns) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("{}: stopped: {e}", self.name);
                self.failure = Some(e.to_string());
                return 0;
            }
        };
        if let Some(snapshot) = self.node.take_snapshot() {
            if let Some(w) = &self.snapshots {
                w.submit(snapshot);
            }
        }
        if now_ns >= self.next_housekeeping_ns {
            self.next_housekeeping_ns = now_ns + 1_000_000;
            let retired = self.node.take_retired();
            if !retired.is_empty() {
                let paths: Vec<_> = retired.iter().map(|n| self.dir.join(n)).collect();
                // Deleting a large file may take a while (discards): not on this thread.
                let _ = std::thread::Builder::new()
                    .name("raftline-retire".into())
                    .spawn(move || {
                        for p in paths {
                            let _ = std::fs::remove_file(p);
                        }
                    });
            }
            if let Some(rx) = &self.addresses {
                while let Ok((member, addr)) = rx.try_recv() {
                    self.node
                        .net_mut()
                        .inner_mut()
                        .udp_mut()
                        .set_member_address(member, addr);
                }
            }
            let prepared = match &mut self.preparer {
                Some(p) => p.keep_ahead(self.node.log_mut()),
                None => self.node.log_mut().prepare_segments(1).map(|_| ()),
            };
            if let Err(e) = prepared {
                tracing::error!("{}: stopped: {e}", self.name);
                self.failure = Some(e.to_string());
            }
            self.publish_counters();
        }
        // The cycle's own duration (not the idle time before it): where tail latency comes from.
        let cycle = monotonic_ns().saturating_sub(now_ns);
        self.stats.cycles += 1;
        self.stats.max_cycle_ns = self.stats.max_cycle_ns.max(cycle);
        if cycle > STALL_NS {
            self.stats.stalls += 1;
        }
        work
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }

    fn finished(&self, now_ns: u64) -> bool {
        let done = self.node.finished(now_ns);
        if done {
            tracing::info!(
                "{}: the cluster shut down at log position {}",
                self.name,
                self.node.applier().applied_position()
            );
        }
        done
    }

    fn on_close(&mut self) {
        // Finish the write in flight so a clean stop loses nothing it appended, and seal the
        // log so that recovery can tell damage anywhere in it from a torn write.
        if let Err(e) = self.node.log_mut().seal() {
            tracing::error!("{}: final flush failed: {e}", self.name);
        }
        self.node.terminate();
        self.publish_counters();
    }
}

/// The receiver of dedicated threading: drains the socket into the node thread's ring.
pub struct ReceiverAgent {
    pub(super) name: String,
    pub(super) receiver: crate::sys::udp::UdpReceiver,
}

impl Agent for ReceiverAgent {
    fn do_work(&mut self, _now_ns: u64) -> usize {
        self.receiver.receive_batch()
    }

    fn name(&self) -> &str {
        &self.name
    }
}
