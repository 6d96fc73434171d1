//! Snapshots on a node: taking them at the positions the log names, retiring the log behind a
//! durable one, and sending and installing them for a follower that fell behind the leader's
//! retired log. It never retires a segment that no durable snapshot covers.

use super::*;

#[derive(Clone)]
pub(super) struct InstallSource {
    position: u64,
    log_start: u64,
    terms_len: u64,
    bytes: Arc<Vec<u8>>,
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// Lets the node see which snapshot is durable (the runtime's writer updates it).
    pub fn set_snapshot_progress(&mut self, durable: Arc<AtomicU64>) {
        self.snapshot_durable = Some(durable);
    }

    /// Segment files retired from the log since the last call, to delete off this thread.
    pub fn take_retired(&mut self) -> Vec<String> {
        std::mem::take(&mut self.retired)
    }

    pub(super) fn durable_snapshot(&self) -> u64 {
        self.snapshot_durable
            .as_ref()
            .map_or(0, |d| d.load(Ordering::Acquire))
    }

    /// Retires the segments wholly before the second-newest durable snapshot: every replica
    /// keeps its log from there, so that if the newest snapshot file is found damaged at a
    /// restart, the one before it and the log after it still rebuild the state. A follower
    /// that needs older bytes is sent the newest snapshot.
    pub(super) fn retire_behind_snapshot(&mut self) -> Result<(), NodeError> {
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
    pub(super) fn send_install_chunk(&mut self, now: u64, to: MemberId) {
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
                        tracing::warn!(
                            member = self.id,
                            peer = to,
                            position,
                            "member {}: snapshot {} is missing; member {to} cannot catch up",
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
    pub(super) fn on_install_ack(&mut self, now: u64, from: MemberId, ack: InstallAck) {
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
    pub(super) fn on_install_chunk(
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
                tracing::warn!(
                    member = self.id,
                    peer = from,
                    bytes = header.total_len,
                    limit = self.max_install_bytes,
                    "member {}: refused a snapshot install of {} bytes from member {from}: above snapshot.max_install_mib ({} bytes)",
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
            tracing::info!(
                member = self.id,
                peer = from,
                position,
                bytes = file.len(),
                log_start = header.log_start,
                "member {}: installed the leader's snapshot at log position {position} ({} bytes); the log restarts at {}",
                self.id,
                file.len(),
                header.log_start
            );
        }
        self.send(now, from, &ack);
        self.service_base = self.applier.fed_position();
        self.consensus
            .on_log_restarted(header.log_start, terms, self.applier.fed_position());
        self.run_actions(now, None)
    }

    /// Leader: appends the digest checks of snapshots this replica took, and a snapshot action
    /// when the log has grown by the snapshot interval.
    pub(super) fn snapshot_actions(&mut self, now: u64) -> usize {
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
}
