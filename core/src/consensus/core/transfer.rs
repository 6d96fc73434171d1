//! Leadership transfer: the leader picks (or is told) a caught-up follower, waits until it holds
//! everything, and tells it to elect itself now. It never hands over to a member behind the
//! commit position, and gives up at the deadline.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    to: MemberId,
    deadline_ns: u64,
    /// When `ElectNow` was last sent (it is sent again each heartbeat interval until the
    /// target's election ends this leadership).
    sent_ns: Option<u64>,
}

impl Consensus {
    /// Leader: hands leadership to `to`. From now the node must append nothing more (the
    /// runtime refuses client ingress); once `to` has every byte this leader appended, it is
    /// told to start an election, which it wins with the best log; this leader steps down when
    /// it sees the new term. If that has not happened within an election timeout the transfer
    /// is abandoned and this member goes on leading.
    pub fn transfer_leadership(&mut self, now: u64, to: MemberId) -> Result<(), TransferError> {
        if self.state != State::LeaderLive {
            return Err(TransferError::NotLeader);
        }
        if to >= self.config.member_count || to == self.config.member_id {
            return Err(TransferError::NoSuchMember(to));
        }
        if let Some(t) = self.transfer {
            return Err(TransferError::InProgress(t.to));
        }
        self.transfer = Some(Transfer {
            to,
            deadline_ns: now.saturating_add(
                self.config
                    .election_timeout_ns
                    .max(4 * self.config.leader_heartbeat_interval_ns),
            ),
            sent_ns: None,
        });
        self.try_transfer(now);
        Ok(())
    }

    /// The member a transfer under way hands leadership to.
    pub fn transferring_to(&self) -> Option<MemberId> {
        self.transfer.map(|t| t.to)
    }

    /// Leader: the reconciled follower with the most bytes appended (a step-down target).
    pub fn most_caught_up_follower(&self) -> Option<MemberId> {
        self.others()
            .filter(|&m| self.peers[m as usize].reconciled)
            .max_by_key(|&m| (self.peers[m as usize].appended, std::cmp::Reverse(m)))
    }

    /// Leader: whether every other member has made `position` durable.
    pub fn durable_everywhere(&self, position: u64) -> bool {
        self.state == State::LeaderLive
            && self
                .others()
                .all(|m| self.peers[m as usize].durable >= position)
    }

    pub(super) fn try_transfer(&mut self, now: u64) {
        let Some(t) = self.transfer else { return };
        if now >= t.deadline_ns {
            self.transfer = None;
            self.counters.transfers_abandoned += 1;
            return;
        }
        let p = self.peers[t.to as usize];
        let resend = t
            .sent_ns
            .is_none_or(|at| now.saturating_sub(at) >= self.config.leader_heartbeat_interval_ns);
        if p.reconciled && p.appended >= self.appended && resend {
            self.transfer = Some(Transfer {
                sent_ns: Some(now),
                ..t
            });
            let message = Message::ElectNow(ElectNow {
                leadership_term_id: self.vote.term,
                leader_member_id: self.config.member_id,
                candidate_member_id: t.to,
            });
            self.send(t.to, message);
        }
    }

    pub(super) fn on_elect_now(&mut self, now: u64, from: MemberId, m: ElectNow) {
        if m.candidate_member_id != self.config.member_id
            || m.leadership_term_id != self.vote.term
            || self.leader != Some(from)
            || self.state != State::FollowerLive
        {
            return;
        }
        // Our log holds everything the leader appended: start the election without the
        // canvass or the nomination delay.
        if self.owes_log() || self.vote_recovery.is_some() {
            return;
        }
        self.counters.transfers_received += 1;
        self.transition(now, State::Canvass, Reason::LeadershipTransfer);
        self.transition(now, State::Nominate, Reason::LeadershipTransfer);
        self.nominate(now);
    }
}
