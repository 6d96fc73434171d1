//! Operator actions on a node: leadership transfer, step-down, orderly shutdown, and the
//! new-leader announcement to clients. Each goes through consensus or the log, never around them.

use super::*;

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// When leadership moves from this member to another (a transfer, or a step-down after a
    /// higher term), tells every client this member was serving, so they move at once instead
    /// of waiting for their resend timer.
    pub(super) fn announce_new_leader(&mut self, now: u64) {
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
}
