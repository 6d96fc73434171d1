//! The hostile-network fault: well-formed consensus messages whose numbers are wrong, sent
//! to a member "from" another member that never sent them, and replays of real datagrams.
//!
//! This is the part of a stranger's power that a member can refuse without a key: reports
//! of positions it never sent or that are not frame boundaries, durable beyond appended,
//! term leaps, leader messages to the leader of that term, cuts below the commit position,
//! log bytes ahead of the log's end, and old messages again. What no check without a key can
//! tell from the truth (a plausible vote, log bytes at the end of the log, a commit position
//! within what the follower holds) is member authentication's job and is not injected here.
//!
//! The generator owns its own PRNG, so a seed's other faults are the same with it on or off.

use crate::codec::message::{
    AppendDataHeader, AppendPosition, CanvassPosition, CommitPosition, NewLeadershipTerm,
    RequestVote,
};
use crate::codec::{FrameMeta, Message, FRAME_ALIGNMENT};
use crate::consensus::{MemberId, Role, FLAG_GAP, FLAG_RECONCILED, TERM_JUMP_MAX};
use crate::rng::Rng;

/// What the generator needs to know of the member it attacks.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub id: MemberId,
    pub members: u32,
    pub term: u64,
    pub role: Role,
    pub leader: Option<MemberId>,
    pub appended: u64,
    pub commit: u64,
}

/// Real datagrams kept for replay.
const REPLAYS_KEPT: usize = 64;

/// See the module docs.
pub struct Hostile {
    rng: Rng,
    /// Injections per simulated millisecond (0: this seed's network is honest).
    pub per_step: f64,
    recent: Vec<(MemberId, Vec<u8>)>,
    pub injected: u64,
}

impl Hostile {
    /// Draws the rate from `seed`: half the seeds are honest.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x686f_7374_696c_6521);
        let per_step = [0.0, 0.0, 1.0 / 100.0, 1.0 / 20.0][rng.below(4) as usize];
        Self {
            rng,
            per_step,
            recent: Vec::new(),
            injected: 0,
        }
    }

    pub fn active(&self) -> bool {
        self.per_step > 0.0
    }

    /// Whether to inject this step.
    pub fn fire(&mut self) -> bool {
        self.active() && self.rng.chance(self.per_step)
    }

    /// Keeps a copy of a real datagram (sometimes) for a later replay.
    pub fn observe(&mut self, from: MemberId, bytes: &[u8]) {
        if !self.active() || !self.rng.chance(0.05) {
            return;
        }
        if self.recent.len() == REPLAYS_KEPT {
            let i = self.rng.below(REPLAYS_KEPT as u64) as usize;
            self.recent[i] = (from, bytes.to_vec());
        } else {
            self.recent.push((from, bytes.to_vec()));
        }
    }

    /// One forged datagram for `t`: (claimed sender, bytes).
    pub fn forge(&mut self, t: Target) -> (MemberId, Vec<u8>) {
        self.injected += 1;
        let mut from = self.rng.below(t.members as u64 - 1) as MemberId;
        if from >= t.id {
            from += 1;
        }
        let kind = self.rng.below(9);
        if kind == 8 && !self.recent.is_empty() {
            let i = self.rng.below(self.recent.len() as u64) as usize;
            return self.recent[i].clone();
        }
        let align = |x: u64| x - x % FRAME_ALIGNMENT as u64;
        let inside = align(self.rng.below(t.appended + 1));
        let term = t.term;
        let message = match kind {
            // Durable beyond appended.
            0 => Message::AppendPosition(AppendPosition {
                leadership_term_id: term,
                log_position: inside + 8 * self.rng.range(1, 1000),
                appended_position: inside,
                follower_member_id: from,
                flags: self.flags(),
            }),
            // Bytes the leader never had.
            1 => {
                let beyond = t.appended + 8 * self.rng.range(1, 1 << 20);
                Message::AppendPosition(AppendPosition {
                    leadership_term_id: term,
                    log_position: beyond,
                    appended_position: beyond,
                    follower_member_id: from,
                    flags: self.flags(),
                })
            }
            // Off a frame boundary.
            2 => Message::AppendPosition(AppendPosition {
                leadership_term_id: term,
                log_position: inside / 2 + 2 * self.rng.range(0, 1) + 1,
                appended_position: inside + self.rng.range(1, 7),
                follower_member_id: from,
                flags: self.flags(),
            }),
            // A reconciled log end inside the leader's log, most likely mid-frame; nothing
            // durable claimed.
            3 => Message::AppendPosition(AppendPosition {
                leadership_term_id: term,
                log_position: 0,
                appended_position: inside,
                follower_member_id: from,
                flags: FLAG_RECONCILED,
            }),
            // A term leap.
            4 => {
                let leap = term.saturating_add(TERM_JUMP_MAX + self.rng.range(1, 1 << 20));
                let leap = if self.rng.chance(0.3) { u64::MAX } else { leap };
                if self.rng.chance(0.5) {
                    Message::RequestVote(RequestVote {
                        log_leadership_term_id: leap,
                        log_position: t.appended,
                        candidate_term_id: leap,
                        candidate_member_id: from,
                    })
                } else {
                    Message::CommitPosition(CommitPosition {
                        leadership_term_id: leap,
                        log_position: u64::MAX,
                        leader_member_id: from,
                    })
                }
            }
            // A leader message to the leader of that term.
            5 if t.role == Role::Leader => Message::NewLeadershipTerm(NewLeadershipTerm {
                log_leadership_term_id: self.rng.below(term + 1),
                matched_term_id: self.rng.below(term + 1),
                matched_term_start: 0,
                matched_term_end: inside,
                leadership_term_id: term,
                term_base_log_position: inside,
                log_position: inside,
                commit_position: inside,
                leader_member_id: from,
                is_startup: false,
            }),
            // A canvass in a term above the current one: a member steps down to canvass
            // (liveness only). A forged canvass in the current term is a plausible lie about a
            // member's log, which a damaged member would believe: authentication's job.
            5 | 6 => Message::CanvassPosition(CanvassPosition {
                log_leadership_term_id: term + 1,
                log_position: inside,
                leadership_term_id: term + 1,
                follower_member_id: from,
            }),
            // Log bytes ahead of the follower's end, "from" its leader: a gap, never appended.
            _ => {
                let from = t.leader.filter(|&l| l != t.id).unwrap_or(from);
                let header = AppendDataHeader {
                    leadership_term_id: term,
                    log_position: t.appended + 8 * self.rng.range(1, 1 << 16),
                    leader_member_id: from,
                };
                let payload = [0xA5u8; 64];
                return (
                    from,
                    encode(&Message::AppendData {
                        header,
                        bytes: &payload,
                    }),
                );
            }
        };
        (from, encode(&message))
    }

    fn flags(&mut self) -> u8 {
        [0, 0, FLAG_RECONCILED, FLAG_GAP][self.rng.below(4) as usize]
    }
}

fn encode(message: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let len = message.encode(FrameMeta::default(), &mut out);
    out.truncate(len);
    out
}
