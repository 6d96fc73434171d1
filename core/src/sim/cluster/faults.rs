//! The faults a seed draws and injects: crashes and restarts, partitions, loss, delay, clock
//! steps, storage damage on stopped members and hostile datagrams; and the healing before the
//! liveness phase. It never damages a majority's storage, and never damages what no member could
//! repair.

use super::*;

/// Fault rates drawn from the seed.
#[derive(Clone, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplication: f64,
    pub delay_max_ms: u64,
    pub crash_per_step: f64,
    pub partition_per_step: f64,
    pub clock_step_per_step: f64,
    /// A planned leadership transfer (to a random other member) asked of the leader.
    pub transfer_per_step: f64,
}

impl Faults {
    pub(super) fn draw(rng: &mut Rng) -> Self {
        Self {
            loss: rng.below(31) as f64 / 100.0,
            duplication: rng.below(11) as f64 / 100.0,
            delay_max_ms: rng.range(1, 20),
            crash_per_step: [0.0, 1.0 / 3000.0, 1.0 / 1000.0, 1.0 / 300.0][rng.below(4) as usize],
            partition_per_step: [0.0, 1.0 / 2000.0, 1.0 / 500.0][rng.below(3) as usize],
            clock_step_per_step: [0.0, 1.0 / 2000.0][rng.below(2) as usize],
            transfer_per_step: [0.0, 1.0 / 1500.0, 1.0 / 400.0][rng.below(3) as usize],
        }
    }
}

impl Cluster {
    pub(super) fn crash_member(&mut self, id: usize) {
        let Some(node) = self.members[id].node.take() else {
            return;
        };
        self.members[id].host = None; // its thread dies with the process
        self.members[id].durable_before_crash = node.consensus().durable_position();
        self.members[id].vouched_before_crash = node.log().vouched_position();
        self.members[id].log_at_crash =
            (node.log().start_position(), node.log().vouched_position());
        let mut disk = node.into_disk();
        disk.crash();
        self.members[id].disk = Some(disk);
        self.members[id].restart_at_ns = self.now_ns + self.rng.range(10, 500) * MS;
        self.crashes += 1;
        self.trace(|| format!("member {id} CRASHED"));
    }

    pub(super) fn inject_faults(&mut self) -> Result<(), Violation> {
        let n = self.members.len();
        let down = self.members.iter().filter(|m| m.node.is_none()).count();
        let minority = (n - 1) / 2;
        if down < minority && self.rng.chance(self.faults.crash_per_step) {
            let id = self.rng.below(n as u64) as usize;
            self.crash_member(id);
        }
        for id in 0..n {
            if self.members[id].node.is_none() && self.now_ns >= self.members[id].restart_at_ns {
                self.start_member(id)?;
                let damaged = self.members[id]
                    .node
                    .as_ref()
                    .is_some_and(|node| node.stats().log_damage_found > 0);
                if damaged && self.storage_rng.chance(0.5) {
                    // The worst moment: the member that holds the most of what the damaged
                    // one lost goes down too, so the cluster must not elect from the rest.
                    let down = self.members.iter().filter(|m| m.node.is_none()).count();
                    let longest = (0..n)
                        .filter(|&j| j != id)
                        .filter_map(|j| {
                            let node = self.members[j].node.as_ref()?;
                            Some((node.log().appended_position(), j))
                        })
                        .max();
                    if let (true, Some((_, j))) = (down < minority, longest) {
                        self.crash_member(j);
                    }
                }
            }
        }
        if !self.cut.is_empty() && self.now_ns >= self.heal_at_ns {
            self.cut.clear();
            self.trace(|| "partition healed".into());
        }
        if self.rng.chance(self.faults.transfer_per_step) {
            let to = self.rng.below(n as u64) as MemberId;
            let now = self.now_ns;
            let leader = self.members.iter().position(|m| {
                m.node
                    .as_ref()
                    .is_some_and(|node| node.consensus().role() == Role::Leader)
            });
            if let Some(id) = leader {
                let local = self.local_now(id);
                let node = self.members[id].node.as_mut().expect("running");
                if node.transfer_leadership(local, to).is_ok() {
                    self.trace(|| format!("at {now}: leader {id} hands over to {to}"));
                }
            }
        }
        if self.cut.is_empty() && self.rng.chance(self.faults.partition_per_step) {
            let victim = self.rng.below(n as u64) as MemberId;
            let kind = self.rng.below(3);
            for other in 0..n as MemberId {
                if other == victim {
                    continue;
                }
                match kind {
                    0 => {
                        self.cut.insert((victim, other));
                        self.cut.insert((other, victim));
                    }
                    1 => {
                        self.cut.insert((victim, other));
                    }
                    _ => {
                        self.cut.insert((other, victim));
                    }
                }
            }
            if self.rng.chance(0.3) {
                // Split into halves instead: the victim's side is everyone below it.
                self.cut.clear();
                for a in 0..n as MemberId {
                    for b in 0..n as MemberId {
                        if (a < victim) != (b < victim) {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            self.heal_at_ns = self.now_ns + self.rng.range(50, 1000) * MS;
            let cut = self.cut.clone();
            self.trace(|| format!("partition {cut:?}"));
        }
        if self.hostile.fire() {
            self.inject_hostile();
        }
        if self.corrupt_per_step > 0.0 && self.storage_rng.chance(self.corrupt_per_step) {
            self.corrupt_stopped_member();
        }
        if self.rng.chance(self.faults.clock_step_per_step) {
            let id = self.rng.below(n as u64) as usize;
            let step = self.rng.range(1, 500) as i64
                * MS as i64
                * if self.rng.chance(0.5) { 1 } else { -1 };
            self.members[id].clock_offset_ns += step;
            self.trace(|| format!("member {id} clock stepped by {} ms", step / MS as i64));
        }
        Ok(())
    }

    /// A damaged member owes a log that no other member holds: no leader can be elected
    /// without losing what it may have acknowledged.
    pub(super) fn promise_no_one_can_keep(&self) -> bool {
        // (member, its log, whether it owes, what it promised)
        type Owed = (usize, (u64, u64), bool, (u64, u64));
        let logs: Vec<Owed> = (0..self.members.len())
            .filter_map(|i| {
                let c = self.members[i].node.as_ref()?.consensus();
                Some((
                    i,
                    (c.last_log_term(), c.appended_position()),
                    c.owes_log(),
                    c.promised(),
                ))
            })
            .collect();
        logs.iter().any(|&(i, _, owes, promised)| {
            owes && logs.iter().all(|&(j, log, _, _)| j == i || log < promised)
        })
    }

    /// Seeds (one in eight) whose network carries only Ethernet-sized datagrams while clients
    /// send 6 KB messages: every frame is replicated in pieces.
    pub(super) fn small_datagrams(&self) -> bool {
        self.config.seed % 8 == 6
    }

    /// One forged or replayed datagram to a random running member (see `sim::hostile`).
    pub(super) fn inject_hostile(&mut self) {
        let up: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].node.is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        let id = up[self.rng.below(up.len() as u64) as usize];
        let node = self.members[id].node.as_ref().expect("running");
        let c = node.consensus();
        let target = Target {
            id: id as MemberId,
            members: self.config.members,
            term: c.term(),
            role: c.role(),
            leader: c.leader(),
            appended: c.appended_position(),
            commit: c.commit_position(),
        };
        let (from, bytes) = self.hostile.forge(target);
        self.trace(|| {
            let what = crate::codec::decode(&bytes)
                .ok()
                .and_then(|d| match d {
                    crate::codec::Decoded::Frame(f, _) => crate::codec::Message::decode(&f)
                        .ok()
                        .map(|m| format!("{m:?}")),
                    _ => None,
                })
                .unwrap_or_default();
            let what: String = what.chars().take(200).collect();
            format!("hostile datagram to member {id} \"from\" {from}: {what}")
        });
        let node = self.members[id].node.as_mut().expect("running");
        node.net_mut().deliver(from, bytes);
    }

    /// Flips a bit in a segment of a stopped member, below what its log can vouch for after
    /// the crash (the durable end before its last write round: above it, damage looks like a
    /// torn tail and is one the member never promised). Only while no other member is damaged: the fault model's
    /// minority.
    pub(super) fn corrupt_stopped_member(&mut self) {
        let down: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].node.is_none() && !self.damaged[i])
            .collect();
        if down.is_empty() || self.damaged.iter().any(|&d| d) {
            return;
        }
        let id = down[self.storage_rng.below(down.len() as u64) as usize];
        let seg = node_config(self.config.members, 0, 0, None, self.config.segment_bytes)
            .log
            .segment_bytes;
        let limit = self.members[id].vouched_before_crash;
        let (start, vouched) = self.members[id].log_at_crash;
        let disk = self.members[id]
            .disk
            .as_mut()
            .expect("a down member has its disk");
        let segments: Vec<(u64, String)> = disk
            .file_names()
            .into_iter()
            .filter_map(|n| Some((n.strip_suffix(".seg")?.parse::<u64>().ok()?, n)))
            .filter(|&(base, _)| base < limit)
            .collect();
        if segments.is_empty() {
            return;
        }
        if vouched > start && self.storage_rng.chance(0.15) {
            // The term index is lost: the log rebuilds it from its frames (a log with none,
            // just after a snapshot install, refuses to start: not injected).
            disk.remove_record(crate::log::TERM_INDEX_FILE);
            self.damaged[id] = true;
            self.corruptions += 1;
            self.trace(|| format!("member {id}: LOST its term index"));
            return;
        }
        if self.storage_rng.chance(0.25) {
            // The vote record is lost: the operator restarts the member with --recover-vote.
            disk.remove_record(crate::node::VOTE_FILE);
            self.members[id].lost_vote = true;
            self.damaged[id] = true;
            self.corruptions += 1;
            self.trace(|| format!("member {id}: LOST its vote record"));
            return;
        }
        if self.storage_rng.chance(0.1) {
            // The newest snapshot reads back wrong: the member starts from the one before
            // (segments are kept behind the second-newest) and replays the log after it.
            let mut snapshots: Vec<u64> = disk
                .file_names()
                .into_iter()
                .filter_map(|n| crate::service::snapshot::parse_file_name(&n))
                .collect();
            snapshots.sort_unstable();
            // Only where one before it still covers the log's start: a member whose sole such
            // snapshot is damaged (just after an install) cannot rebuild its state from its own
            // disk and refuses to start, for an operator (not injected: see README).
            let fallback = snapshots.len() >= 2 && snapshots[snapshots.len() - 2] >= start;
            if let Some(&position) = snapshots.last().filter(|_| fallback) {
                let name = crate::service::snapshot::file_name(position);
                let len = disk.durable_image(&name).map_or(0, |b| b.len() as u64);
                if len > 0 {
                    let offset = self.storage_rng.below(len);
                    let bit = self.storage_rng.below(8) as u8;
                    disk.corrupt(&name, offset, bit);
                    self.damaged[id] = true;
                    self.corruptions += 1;
                    self.trace(|| format!("member {id}: CORRUPTED {name} at byte {offset}"));
                    return;
                }
            }
        }
        if self.storage_rng.chance(0.1) {
            // The newest segment the member wrote into is lost as a file (and the prepared
            // ones after it, which would otherwise leave a gap the log refuses to open).
            let newest = limit.saturating_sub(1) - limit.saturating_sub(1) % seg;
            let lowest = segments.iter().map(|&(b, _)| b).min().unwrap_or(0);
            if newest > lowest && newest >= start {
                let lost: Vec<String> = disk
                    .file_names()
                    .into_iter()
                    .filter(|n| {
                        n.strip_suffix(".seg")
                            .and_then(|b| b.parse::<u64>().ok())
                            .is_some_and(|b| b >= newest)
                    })
                    .collect();
                for name in &lost {
                    disk.lose(name);
                }
                self.damaged[id] = true;
                self.corruptions += 1;
                self.trace(|| format!("member {id}: LOST segment files {lost:?}"));
                return;
            }
        }
        if self.storage_rng.chance(0.2) {
            // One slot of the vote record or of the term index reads back wrong.
            let vote = self.storage_rng.chance(0.5);
            if vote || vouched > start {
                let name = if vote {
                    crate::node::VOTE_FILE
                } else {
                    crate::log::TERM_INDEX_FILE
                };
                let slot = crate::io::record::slot_name(name, self.storage_rng.below(2));
                let len = disk.durable_image(&slot).map_or(0, |b| b.len() as u64);
                if len > 0 {
                    let offset = self.storage_rng.below(len);
                    let bit = self.storage_rng.below(8) as u8;
                    disk.corrupt(&slot, offset, bit);
                    if vote {
                        // The node refuses to start; the operator restarts it with
                        // --recover-vote.
                        self.members[id].lost_vote = true;
                        self.members[id].vote_slot_damaged = true;
                    }
                    self.damaged[id] = true;
                    self.corruptions += 1;
                    self.trace(|| format!("member {id}: CORRUPTED {slot} at byte {offset}"));
                    return;
                }
            }
        }
        let (base, name) = &segments[self.storage_rng.below(segments.len() as u64) as usize];
        let offset = self.storage_rng.below((limit - base).min(seg));
        let bit = self.storage_rng.below(8) as u8;
        if disk.corrupt(name, offset, bit) {
            self.damaged[id] = true;
            self.corruptions += 1;
            let position = base + offset;
            self.trace(|| format!("member {id}: CORRUPTED log byte at {position} ({name})"));
        }
    }

    pub(super) fn heal_all(&mut self) -> Result<(), Violation> {
        self.cut.clear();
        for id in 0..self.members.len() {
            if self.members[id].node.is_none() {
                self.start_member(id)?;
            }
        }
        self.trace(|| "HEALED: liveness phase".into());
        Ok(())
    }
}
