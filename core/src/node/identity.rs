//! The settings every member must agree on, checked before anything else a member says is
//! believed: the member count (quorum arithmetic), the order of the member list (each member's
//! id), the segment size and the largest log frame (what replication may send). A member whose
//! config differs would otherwise stall replication or count quorums wrong without a word.
//!
//! Each member sends its [`MemberSettings`] to every member it has not agreed with, once per
//! heartbeat interval, and answers a member that has not heard its settings yet. Frames from a
//! member are dropped (counted) until its settings arrive and agree; a disagreement is a
//! counter and a line naming the setting and both values. The state follows the latest
//! settings heard, so a member restarted with a fixed config is believed again.

#![forbid(unsafe_code)]

use crate::codec::message::MemberSettings;
use crate::consensus::MemberId;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Agreement {
    Unknown,
    Agreed,
    /// What differs, as a sentence.
    Differs(String),
}

#[derive(Debug)]
struct Peer {
    agreement: Agreement,
    next_send_ns: u64,
    /// Answers are rate-limited too: two members that disagree would otherwise answer each
    /// other forever.
    next_answer_ns: u64,
}

/// This member's settings and what it knows of every other member's.
#[derive(Debug)]
pub(super) struct Identity {
    me: MemberId,
    member_count: u32,
    segment_bytes: u64,
    frame_len_max: u64,
    interval_ns: u64,
    peers: Vec<Peer>,
}

/// What a received [`MemberSettings`] asks of this member.
pub(super) struct Heard {
    /// A disagreement newly found (or changed): say it.
    pub differs: Option<String>,
    /// The sender has not heard this member's settings: send them.
    pub answer: bool,
}

impl Identity {
    pub fn new(
        me: MemberId,
        member_count: u32,
        segment_bytes: u64,
        frame_len_max: u64,
        interval_ns: u64,
    ) -> Self {
        let peers = (0..member_count)
            .map(|m| Peer {
                agreement: if m == me {
                    Agreement::Agreed
                } else {
                    Agreement::Unknown
                },
                next_send_ns: 0,
                next_answer_ns: 0,
            })
            .collect();
        Self {
            me,
            member_count,
            segment_bytes,
            frame_len_max,
            interval_ns: interval_ns.max(1),
            peers,
        }
    }

    /// Whether frames from member `from` may be believed.
    pub fn agreed(&self, from: MemberId) -> bool {
        self.peers
            .get(from as usize)
            .is_some_and(|p| p.agreement == Agreement::Agreed)
    }

    /// This member's settings, addressed to `to`.
    pub fn settings_for(&self, to: MemberId) -> MemberSettings {
        MemberSettings {
            sender_member_id: self.me,
            receiver_member_id: to,
            member_count: self.member_count,
            segment_bytes: self.segment_bytes,
            frame_len_max: self.frame_len_max,
            // Only agreement counts as heard: after settings that differ (perhaps forged), the
            // member answers with its real ones.
            heard_yours: self.peers[to as usize].agreement == Agreement::Agreed,
        }
    }

    /// Members to send this member's settings to now (not agreed with, and not sent to within
    /// the interval).
    pub fn due(&mut self, now: u64, out: &mut Vec<MemberId>) {
        for (m, p) in self.peers.iter_mut().enumerate() {
            if p.agreement != Agreement::Agreed && now >= p.next_send_ns {
                p.next_send_ns = now + self.interval_ns;
                out.push(m as MemberId);
            }
        }
    }

    /// Settings received from member `from` (as the transport names the sender) at `now`.
    pub fn on_settings(&mut self, now: u64, from: MemberId, theirs: &MemberSettings) -> Heard {
        let verdict = self.compare(from, theirs);
        let Some(peer) = self.peers.get_mut(from as usize) else {
            return Heard {
                differs: None,
                answer: false,
            };
        };
        let agreement = match verdict {
            None => Agreement::Agreed,
            Some(why) => Agreement::Differs(why),
        };
        let differs = match &agreement {
            Agreement::Differs(why) if peer.agreement != agreement => Some(why.clone()),
            _ => None,
        };
        peer.agreement = agreement;
        let answer = !theirs.heard_yours && now >= peer.next_answer_ns;
        if answer {
            peer.next_answer_ns = now + self.interval_ns;
        }
        Heard { differs, answer }
    }

    /// What differs between `theirs` and this member's settings, naming the config key.
    fn compare(&self, from: MemberId, theirs: &MemberSettings) -> Option<String> {
        let differs = |key: &str, theirs: String, mine: String| {
            Some(format!(
                "{key}: member {from} has {theirs}, this member {mine}"
            ))
        };
        if theirs.member_count != self.member_count {
            return differs(
                "cluster.members (count)",
                theirs.member_count.to_string(),
                self.member_count.to_string(),
            );
        }
        if theirs.sender_member_id != from || theirs.receiver_member_id != self.me {
            return differs(
                "cluster.members (order)",
                format!(
                    "itself as member {} and this member as {}",
                    theirs.sender_member_id, theirs.receiver_member_id
                ),
                format!("it as member {from} and itself as {}", self.me),
            );
        }
        if theirs.segment_bytes != self.segment_bytes {
            return differs(
                "log.segment_mib",
                mib(theirs.segment_bytes),
                mib(self.segment_bytes),
            );
        }
        if theirs.frame_len_max != self.frame_len_max {
            return differs(
                "the largest log frame (log.write_kib, log.segment_mib)",
                format!("{} bytes", theirs.frame_len_max),
                format!("{} bytes", self.frame_len_max),
            );
        }
        None
    }
}

fn mib(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(me: MemberId, segment_bytes: u64) -> Identity {
        Identity::new(me, 3, segment_bytes, 1 << 19, 100)
    }

    #[test]
    fn agreement_is_reached_in_one_exchange_and_a_difference_is_named() {
        let mut a = member(0, 1 << 20);
        let mut b = member(1, 1 << 20);
        assert!(!a.agreed(1) && !b.agreed(0) && a.agreed(0));
        let mut due = Vec::new();
        a.due(0, &mut due);
        assert_eq!(due, vec![1, 2]);
        due.clear();
        a.due(50, &mut due);
        assert!(due.is_empty(), "once per interval");

        let heard = b.on_settings(0, 0, &a.settings_for(1));
        assert!(heard.differs.is_none() && heard.answer && b.agreed(0));
        let heard = a.on_settings(0, 1, &b.settings_for(0));
        assert!(!heard.answer, "b had heard a's settings: no ping-pong");
        assert!(a.agreed(1));

        let mut c = member(2, 4 << 20);
        let heard = a.on_settings(0, 2, &c.settings_for(0));
        assert_eq!(
            heard.differs.as_deref(),
            Some("log.segment_mib: member 2 has 4, this member 1")
        );
        assert!(!a.agreed(2));
        let again = a.on_settings(0, 2, &c.settings_for(0));
        assert!(again.differs.is_none(), "said once, not on every exchange");
        // Restarted with the same settings: believed again.
        c.segment_bytes = 1 << 20;
        a.on_settings(0, 2, &c.settings_for(0));
        assert!(a.agreed(2));
    }

    #[test]
    fn forged_settings_are_undone_by_the_real_members_answer_and_answers_are_rate_limited() {
        let mut a = member(0, 1 << 20);
        let mut b = member(1, 1 << 20);
        b.on_settings(0, 0, &a.settings_for(1));
        a.on_settings(0, 1, &b.settings_for(0));
        assert!(a.agreed(1) && b.agreed(0));
        // A stranger at b's address sends settings that differ: a stops believing b, but b,
        // which still agrees with a, would never send again on its own.
        let forged = member(1, 4 << 20).settings_for(0);
        assert!(a.on_settings(200, 1, &forged).differs.is_some());
        let mut due = Vec::new();
        a.due(200, &mut due);
        assert_eq!(due, vec![1, 2]);
        let ask = a.settings_for(1);
        assert!(!ask.heard_yours, "a asks b for its real settings");
        assert!(b.on_settings(200, 0, &ask).answer);
        assert!(!b.on_settings(210, 0, &ask).answer, "once per interval");
        assert!(b.on_settings(300, 0, &ask).answer);
        a.on_settings(201, 1, &b.settings_for(0));
        assert!(a.agreed(1));
    }

    #[test]
    fn a_member_list_in_another_order_or_of_another_size_is_refused() {
        let mut a = member(0, 1 << 20);
        // Member 1's config lists the members in another order: it believes it is member 2.
        let mut wrong = member(2, 1 << 20).settings_for(0);
        let heard = a.on_settings(0, 1, &wrong);
        assert!(
            heard
                .differs
                .unwrap()
                .starts_with("cluster.members (order)"),
            "named"
        );
        wrong = Identity::new(1, 5, 1 << 20, 1 << 19, 100).settings_for(0);
        let heard = a.on_settings(0, 1, &wrong);
        assert_eq!(
            heard.differs.as_deref(),
            Some("cluster.members (count): member 1 has 5, this member 3")
        );
        // A sender outside the member list is ignored, not indexed.
        let heard = a.on_settings(0, 7, &wrong);
        assert!(heard.differs.is_none() && !heard.answer);
    }
}
