//! The invariants checked after every step and after the liveness phase: election safety,
//! leader append-only, log matching, leader completeness, commit only with a real quorum, state
//! machine safety, leader time, durability and client exactly-once. A checker only reads the
//! cluster; it never changes what a member does.

use super::*;

impl Cluster {
    pub(super) fn converged(&self) -> bool {
        if !self
            .clients
            .iter()
            .all(|c| c.acked.len() as u64 == self.config.messages_per_client)
        {
            return false;
        }
        if self.members.iter().any(|m| m.node.is_none()) {
            return false;
        }
        let leader = self
            .members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .find(|n| n.consensus().role() == Role::Leader);
        let Some(leader) = leader else { return false };
        let target = leader.log().appended_position();
        self.members.iter().all(|m| {
            m.service()
                .is_some_and(|a| a.applied_position() == target && a.scheduled_timers() == 0)
        })
    }

    /// Checks run after every step.
    pub(super) fn check_step(&mut self) -> Result<(), Violation> {
        for id in 0..self.members.len() {
            let Some(node) = self.members[id].node.as_ref() else {
                continue;
            };
            let c = node.consensus();
            let state = (c.role(), c.term());
            let leader_term = c.leader_term();
            let (durable_now, commit_now) = (c.durable_position(), c.commit_position());
            let invalid = c.counters().messages_invalid
                + node.stats().peer_reports_refused
                + node.stats().commit_inside_frame;
            let owes = c.owes_log() || c.recovering_vote();
            let appended = node.log().appended_position();
            let Some(applier) = self.members[id].service() else {
                continue;
            };
            let time_went_back = applier.service().time_went_back;
            let undecodable = applier.undecodable_frames();
            let (position, hash, digest) = (
                applier.applied_position(),
                applier.log_hash(),
                applier.service().digest(),
            );
            let log_view = (
                node.log().start_position(),
                node.stats().snapshots_installed,
                applier.snapshots_taken(),
                c.counters().truncations,
            );
            let (applied, commit) = (applier.applied_position(), node.commit_position());
            if state != self.members[id].last_state {
                self.members[id].last_state = state;
                self.trace(|| format!("member {id} is {:?} in term {}", state.0, state.1));
            }
            if log_view != self.members[id].last_log_view {
                self.members[id].last_log_view = log_view;
                self.trace(|| {
                    format!(
                        "member {id}: log starts at {}, {} snapshots installed, {} taken, {} truncations; appended {appended}, commit {commit}, applied {applied}",
                        log_view.0, log_view.1, log_view.2, log_view.3
                    )
                });
            }
            self.durable_ever[id] = self.durable_ever[id].max(durable_now);
            if self.damaged[id] && !owes {
                self.damaged[id] = false;
            }
            if invalid > 0 && !self.hostile.active() {
                return Err(self.violation(
                    "honest peers believed",
                    format!(
                        "member {id} refused {invalid} messages on an honest network ({:?}, {} false log ends, {} commits inside a frame)",
                        self.members[id].node.as_ref().map(|n| n.consensus().last_refusal()),
                        self.members[id].node.as_ref().map_or(0, |n| n.stats().peer_reports_refused),
                        self.members[id].node.as_ref().map_or(0, |n| n.stats().commit_inside_frame),
                    ),
                ));
            }
            if let Some(term) = leader_term {
                // Commit only with a real quorum: never past the quorum-th highest durable
                // position that members really reported.
                let mut durable = self.durable_ever.clone();
                durable.sort_unstable_by(|a, b| b.cmp(a));
                let quorum = durable[self.config.members as usize / 2];
                if commit_now > quorum {
                    return Err(self.violation(
                        "commit quorum",
                        format!(
                            "leader {id} of term {term} committed {} but only {quorum} is durable on a quorum",
                            commit_now
                        ),
                    ));
                }
                // Election safety: one leader per term.
                match self.leaders.get(&term) {
                    Some(&other) if other != id as MemberId => {
                        return Err(self.violation(
                            "election safety",
                            format!("members {other} and {id} both lead term {term}"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, id as MemberId);
                        self.check_leader_completeness(id)?;
                    }
                }
                // Leader append-only.
                let key = (id as MemberId, term);
                let before = self.leader_appended.insert(key, appended).unwrap_or(0);
                if appended < before {
                    return Err(self.violation(
                        "leader append-only",
                        format!("leader {id} of term {term} went from {before} back to {appended}"),
                    ));
                }
            }
            if undecodable > 0 {
                return Err(self.violation(
                    "committed frames decode",
                    format!("member {id} applied a committed frame that is no message"),
                ));
            }
            if let Some((before, after)) = time_went_back {
                return Err(self.violation(
                    "leader time",
                    format!(
                        "member {id} applied a frame stamped {after} after one stamped {before}"
                    ),
                ));
            }
            // State machine safety: equal applied positions, equal log hash and service digest.
            if position > 0 {
                if self.applied_hash.get(&position).is_some_and(|&h| h != hash) {
                    return Err(self.violation(
                        "state machine safety",
                        format!("member {id} applied different frames up to {position}"),
                    ));
                }
                if self
                    .applied_digest
                    .get(&position)
                    .is_some_and(|&d| d != digest)
                {
                    return Err(self.violation(
                        "state machine safety",
                        format!("member {id} service digest differs at {position}"),
                    ));
                }
                self.applied_hash.insert(position, hash);
                self.applied_digest.insert(position, digest);
            }
            self.check_applied_once(id)?;
        }
        Ok(())
    }

    /// Client exactly-once, as it happens: no member's service applies one client message twice
    /// (a message is its session and the number in its payload, whatever sequence it was sent
    /// under). The whole history is checked again after the liveness phase.
    fn check_applied_once(&mut self, id: usize) -> Result<(), Violation> {
        let member = &mut self.members[id];
        // The service's applier, borrowed apart from `applied_checked` (see `Member::service`).
        let applied = match (
            member.node.as_ref().map(|n| n.applier()),
            member.host.as_ref(),
        ) {
            (Some(SimApply::Local(a)), _) => &a.service().applied,
            (Some(SimApply::Remote(_)), Some(host)) => &host.applier().service().applied,
            _ => return Ok(()),
        };
        let checked = &mut member.applied_checked;
        if applied.len() < checked.0 {
            // An install or restart replaced the history: check it from its start.
            *checked = Default::default();
        }
        let twice = applied[checked.0..]
            .iter()
            .find(|&&message| !checked.1.insert(message))
            .copied();
        checked.0 = applied.len();
        match twice {
            Some((session, message)) => Err(self.violation(
                "client exactly-once",
                format!("member {id} applied message {message} of session {session} twice"),
            )),
            None => Ok(()),
        }
    }

    /// Frames of a member's log: (end position, frame term, chained hash up to the end). A log
    /// whose start was retired behind a snapshot chains on from the hash seen at its start
    /// (segment boundaries are recorded as logs pass them); `None` if none was seen.
    pub(super) fn log_summary(&mut self, id: usize) -> Option<Vec<(u64, u64, u64)>> {
        let node = self.members[id].node.as_mut().expect("member is up");
        let start = node.log().start_position();
        let end = node.log().appended_position();
        let mut hash = if start == 0 {
            FNV_OFFSET
        } else {
            *self.boundary_hash.get(&start)?
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        node.log_mut()
            .read(start, &mut bytes)
            .expect("log is readable");
        let segment = node.log().config().segment_bytes;
        // Only an applied (so committed) prefix is the cluster's: a log that has bytes no
        // leader will keep must not set the hash others chain from.
        let applied = node.applier().applied_position();
        let mut out = Vec::new();
        for (offset, frame) in Frames::new(&bytes).map_while(Result::ok) {
            let len = frame.encoded_len();
            let position = start + offset as u64;
            hash = fnv1a(
                fnv1a(hash, &position.to_le_bytes()),
                &bytes[offset..offset + len],
            );
            let frame_end = position + len as u64;
            if frame_end % segment == 0 && frame_end <= applied {
                self.boundary_hash.entry(frame_end).or_insert(hash);
            }
            if frame.meta.frame_type != FrameType::Padding as u16 {
                out.push((frame_end, frame.meta.term, hash));
            } else {
                out.push((frame_end, u64::MAX, hash));
            }
        }
        Some(out)
    }

    /// Leader completeness: a new leader's log holds everything applied anywhere.
    pub(super) fn check_leader_completeness(&mut self, id: usize) -> Result<(), Violation> {
        let Some((&position, &hash)) = self.applied_hash.iter().next_back() else {
            return Ok(());
        };
        let Some(summary) = self.log_summary(id) else {
            return Ok(());
        };
        let start = self.members[id]
            .node
            .as_ref()
            .map_or(0, |n| n.log().start_position());
        if position <= start {
            return Ok(()); // behind the new leader's snapshot: in it, not in its log
        }
        let found = summary
            .iter()
            .find(|(end, _, _)| *end == position)
            .map(|&(_, _, h)| h);
        if found != Some(hash) {
            let (appended, at) = self.members[id].node.as_ref().map_or((0, 0), |n| {
                (n.log().appended_position(), n.applier().applied_position())
            });
            return Err(self.violation(
                "leader completeness",
                format!(
                    "new leader {id} lacks the committed prefix up to {position} (its log {start}..{appended}, applied {at}, {})",
                    if found.is_some() { "a frame ends there with other bytes before it" } else { "no frame of its log ends there" }
                ),
            ));
        }
        Ok(())
    }

    /// Log matching: where two logs have a frame of the same term ending at the same
    /// position, the logs are equal up to there.
    pub(super) fn check_logs_match(&mut self) -> Result<(), Violation> {
        let up: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].node.is_some())
            .collect();
        let summaries: Vec<(usize, FramesByEnd)> = up
            .iter()
            .filter_map(|&i| {
                let summary = self.log_summary(i)?;
                Some((
                    i,
                    summary
                        .into_iter()
                        .map(|(end, term, hash)| (end, (term, hash)))
                        .collect(),
                ))
            })
            .collect();
        for a in 0..summaries.len() {
            for b in a + 1..summaries.len() {
                for (end, (term, hash)) in &summaries[a].1 {
                    if let Some((term_b, hash_b)) = summaries[b].1.get(end) {
                        if term == term_b && *term != u64::MAX && hash != hash_b {
                            return Err(self.violation(
                                "log matching",
                                format!(
                                    "members {} and {} have term {term} at {end} but different bytes before it",
                                    summaries[a].0, summaries[b].0
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every acknowledged message applied exactly once on every replica.
    pub(super) fn check_exactly_once(&self) -> Result<(), Violation> {
        for (id, m) in self.members.iter().enumerate() {
            let service = m
                .service()
                .expect("all members are up after healing")
                .service();
            let (applied, fired) = (&service.applied, &service.fired_timers);
            let unique_timers: BTreeSet<&u64> = fired.iter().collect();
            if unique_timers.len() != fired.len() {
                return Err(self.violation(
                    "timers fire once",
                    format!("member {id} fired a timer twice"),
                ));
            }
            let expected = applied.iter().filter(|(_, seq)| seq % 5 == 0).count();
            if fired.len() != expected {
                return Err(self.violation(
                    "timers fire once",
                    format!(
                        "member {id} fired {} timers, {expected} were scheduled",
                        fired.len()
                    ),
                ));
            }
            let unique: BTreeSet<&(u64, u64)> = applied.iter().collect();
            if unique.len() != applied.len() {
                return Err(self.violation(
                    "client exactly-once",
                    format!("member {id} applied a message twice"),
                ));
            }
            for c in &self.clients {
                for &sequence in &c.acked {
                    if !unique.contains(&(c.session, sequence)) {
                        return Err(self.violation(
                            "client exactly-once",
                            format!(
                                "member {id} lacks acknowledged message {sequence} of session {}",
                                c.session
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
