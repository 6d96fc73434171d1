//! The leader's record of client messages it appended in its current term and that are not
//! yet committed, so a client's resend of one of them is not appended a second time.
//!
//! Without it a client whose message takes longer to commit than its resend interval (a
//! 1 MiB message over 1472-byte datagrams on a lossy network) has the leader append the same
//! bytes again at every resend; each copy must be replicated before anything after it commits,
//! so the resends feed themselves. Exactly-once at apply keeps the service right either way;
//! this keeps the log and the network from carrying copies.
//!
//! Only the current term counts: a message appended by an earlier leader may have been cut
//! from the log by this one, so its resend must go in again. Within one term the leader never
//! cuts its own log, so a message it appended is either committed by it or outlived by a newer
//! leader, to whom the client's resend then goes.

use std::collections::{HashMap, VecDeque};

/// See the module docs.
#[derive(Default)]
pub struct InFlight {
    term: u64,
    /// (session, sequence) → log position of the frame.
    positions: HashMap<(u64, u64), u64>,
    /// (end position, session, sequence) in log order, to forget what has committed.
    order: VecDeque<(u64, u64, u64)>,
}

impl InFlight {
    /// The position of `session`'s message `sequence` if this leader appended it in `term` and
    /// it is not yet committed (`commit`).
    pub fn appended(&mut self, term: u64, commit: u64, session: u64, sequence: u64) -> Option<u64> {
        self.forget(term, commit);
        self.positions.get(&(session, sequence)).copied()
    }

    /// Notes that the frame at `position`..`end` in `term` holds `session`'s `sequence`.
    pub fn record(&mut self, term: u64, session: u64, sequence: u64, position: u64, end: u64) {
        if term != self.term {
            self.clear(term);
        }
        self.positions.insert((session, sequence), position);
        self.order.push_back((end, session, sequence));
    }

    /// Drops what committed and everything from another term.
    fn forget(&mut self, term: u64, commit: u64) {
        if term != self.term {
            self.clear(term);
            return;
        }
        while let Some(&(end, session, sequence)) = self.order.front() {
            if end > commit {
                break;
            }
            self.order.pop_front();
            self.positions.remove(&(session, sequence));
        }
    }

    fn clear(&mut self, term: u64) {
        self.term = term;
        self.positions.clear();
        self.order.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resend_in_the_same_term_finds_the_first_copy_until_it_commits() {
        let mut f = InFlight::default();
        f.record(3, 10, 1, 0, 64);
        f.record(3, 10, 2, 64, 128);
        assert_eq!(f.appended(3, 0, 10, 1), Some(0));
        assert_eq!(f.appended(3, 0, 10, 2), Some(64));
        assert_eq!(f.appended(3, 0, 11, 1), None, "another session");
        // The first commits: a resend of it now goes in (and is a duplicate at apply).
        assert_eq!(f.appended(3, 64, 10, 1), None);
        assert_eq!(f.appended(3, 64, 10, 2), Some(64));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_new_term_forgets_everything() {
        let mut f = InFlight::default();
        f.record(3, 10, 1, 0, 64);
        assert_eq!(f.appended(4, 0, 10, 1), None);
        assert_eq!(f.len(), 0);
        f.record(4, 10, 1, 64, 128);
        assert_eq!(f.appended(4, 0, 10, 1), Some(64));
    }
}
