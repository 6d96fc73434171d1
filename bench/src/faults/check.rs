//! A linearizability checker for histories of read / write / compare-and-set operations on
//! registers, after Wing & Gong, with Lowe's memoization: search for an order of the
//! operations that respects real time (an operation that completed before another was invoked
//! comes first) and the register's semantics, remembering (set of linearized operations,
//! register value) pairs already explored. Keys are independent registers, so each key is
//! checked on its own (P-compositionality), which keeps every search small.
//!
//! An operation whose outcome is unknown (the client gave up waiting) may have taken effect at
//! any time after its invocation, or never: it has no completion time, and the search may
//! leave it out. An unknown read constrains nothing and is dropped.

use std::collections::{BTreeMap, HashSet};

use raftline::service::kv::KvOp;

/// What a completed operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The reply: for a read or a write, the value; for a cas, whether it took effect and the
    /// value it left or saw.
    Ok { ok: bool, value: u64 },
    /// No reply before the client gave up: it may or may not have taken effect.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    pub id: u64,
    pub op: KvOp,
    pub invoke_ns: u64,
    /// `None` for an unknown outcome.
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
}

/// A key whose history has no linearization.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub key: u64,
    /// The key's operations, in invocation order (the history slice to look at).
    pub ops: Vec<Op>,
    /// How many operations the deepest attempt managed to order.
    pub longest_prefix: usize,
    /// The search hit its bound before deciding (reported, never taken as a pass).
    pub gave_up: bool,
}

/// Checks every key; returns the keys that are not linearizable.
pub fn check(history: &[Op]) -> Vec<Anomaly> {
    let mut by_key: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    for op in history {
        let unknown_read = matches!(op.op, KvOp::Read { .. }) && op.outcome == Outcome::Unknown;
        if !unknown_read {
            by_key.entry(op.op.key()).or_default().push(*op);
        }
    }
    let mut anomalies = Vec::new();
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| o.invoke_ns);
        let mut search = Search::new(&ops);
        if !search.run() {
            let longest_prefix = search.longest;
            let gave_up = search.steps > MAX_STEPS;
            anomalies.push(Anomaly {
                key,
                ops,
                longest_prefix,
                gave_up,
            });
        }
    }
    anomalies
}

/// Applies `op` to a register holding `value`: the new value if the outcome is possible.
fn step(value: u64, op: &Op) -> Option<u64> {
    match (op.op, op.outcome) {
        (KvOp::Read { .. }, Outcome::Ok { value: read, .. }) => (read == value).then_some(value),
        (KvOp::Read { .. }, Outcome::Unknown) => Some(value),
        (KvOp::Write { value: v, .. }, _) => Some(v),
        (KvOp::Cas { expected, new, .. }, Outcome::Ok { ok: true, .. }) => {
            (value == expected).then_some(new)
        }
        (
            KvOp::Cas { expected, .. },
            Outcome::Ok {
                ok: false,
                value: seen,
            },
        ) => (value != expected && value == seen).then_some(value),
        // Unknown: if it took effect here, it did so as a successful cas would.
        (KvOp::Cas { expected, new, .. }, Outcome::Unknown) => (value == expected).then_some(new),
    }
}

struct Search<'a> {
    ops: &'a [Op],
    done: Vec<u64>,
    seen: HashSet<(Vec<u64>, u64)>,
    longest: usize,
    steps: u64,
}

/// Explored states beyond which a key is reported as unresolved rather than searched forever.
const MAX_STEPS: u64 = 20_000_000;

impl<'a> Search<'a> {
    fn new(ops: &'a [Op]) -> Self {
        Self {
            ops,
            done: vec![0; ops.len().div_ceil(64)],
            seen: HashSet::new(),
            longest: 0,
            steps: 0,
        }
    }

    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    fn run(&mut self) -> bool {
        self.dfs(0, 0)
    }

    fn dfs(&mut self, value: u64, count: usize) -> bool {
        self.longest = self.longest.max(count);
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return false;
        }
        // The earliest completion among operations not yet ordered: only operations invoked
        // before it can come next (real-time order).
        let mut frontier = u64::MAX;
        let mut known_left = false;
        for (i, op) in self.ops.iter().enumerate() {
            if !self.is_done(i) {
                if let Some(c) = op.complete_ns {
                    frontier = frontier.min(c);
                    known_left = true;
                }
            }
        }
        if !known_left {
            return true; // what is left may never have happened
        }
        if !self.seen.insert((self.done.clone(), value)) {
            return false;
        }
        for i in 0..self.ops.len() {
            let op = self.ops[i];
            if op.invoke_ns > frontier {
                break; // sorted by invocation
            }
            if self.is_done(i) {
                continue;
            }
            if let Some(next) = step(value, &op) {
                self.flip(i);
                let found = self.dfs(next, count + 1);
                self.flip(i);
                if found {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, op: KvOp, invoke: u64, complete: Option<u64>, outcome: Outcome) -> Op {
        Op {
            client,
            id: invoke,
            op,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
        }
    }
    fn ok(value: u64) -> Outcome {
        Outcome::Ok { ok: true, value }
    }
    const K: u64 = 1;
    fn w(v: u64) -> KvOp {
        KvOp::Write { key: K, value: v }
    }
    fn r() -> KvOp {
        KvOp::Read { key: K }
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // Two overlapping writes and a read after both that sees either value.
        for seen in [1, 2] {
            let h = vec![
                op(0, w(1), 0, Some(10), ok(1)),
                op(1, w(2), 1, Some(11), ok(2)),
                op(2, r(), 20, Some(30), ok(seen)),
            ];
            assert!(check(&h).is_empty(), "read {seen}");
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_an_anomaly() {
        let h = vec![
            op(0, w(1), 0, Some(10), ok(1)),
            op(0, w(2), 20, Some(30), ok(2)),
            op(1, r(), 40, Some(50), ok(1)),
        ];
        let anomalies = check(&h);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].key, K);
        assert_eq!(anomalies[0].longest_prefix, 2);
    }

    #[test]
    fn a_write_applied_twice_shows_as_a_value_coming_back() {
        // w(1), then w(2), then a replayed w(1) would make this read see 1 again.
        let h = vec![
            op(0, w(1), 0, Some(10), ok(1)),
            op(1, w(2), 20, Some(30), ok(2)),
            op(2, r(), 40, Some(50), ok(1)),
        ];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn a_lost_acknowledged_write_is_an_anomaly() {
        let h = vec![
            op(0, w(5), 0, Some(10), ok(5)),
            op(1, r(), 20, Some(30), ok(0)),
        ];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn unknown_outcomes_may_have_happened_or_not() {
        // The unknown write may land after the first read...
        let h = vec![
            op(0, w(7), 0, None, Outcome::Unknown),
            op(1, r(), 5, Some(10), ok(0)),
            op(1, r(), 20, Some(30), ok(7)),
        ];
        assert!(check(&h).is_empty());
        // ...or never.
        let h = vec![
            op(0, w(7), 0, None, Outcome::Unknown),
            op(1, r(), 20, Some(30), ok(0)),
        ];
        assert!(check(&h).is_empty());
        // But not before it was invoked.
        let h = vec![
            op(1, r(), 0, Some(10), ok(7)),
            op(0, w(7), 20, None, Outcome::Unknown),
        ];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn compare_and_set_succeeds_only_on_the_expected_value() {
        let cas = |e, n| KvOp::Cas {
            key: K,
            expected: e,
            new: n,
        };
        let good = vec![
            op(0, w(1), 0, Some(10), ok(1)),
            op(0, cas(1, 2), 20, Some(30), ok(2)),
            op(
                1,
                cas(1, 3),
                40,
                Some(50),
                Outcome::Ok {
                    ok: false,
                    value: 2,
                },
            ),
        ];
        assert!(check(&good).is_empty());
        // Two cas from 1 cannot both succeed.
        let bad = vec![
            op(0, w(1), 0, Some(10), ok(1)),
            op(0, cas(1, 2), 20, Some(30), ok(2)),
            op(1, cas(1, 3), 40, Some(50), ok(3)),
        ];
        assert_eq!(check(&bad).len(), 1);
    }

    #[test]
    fn keys_are_checked_independently() {
        let other = KvOp::Write { key: 2, value: 9 };
        let h = vec![
            op(0, w(1), 0, Some(10), ok(1)),
            op(1, other, 0, Some(10), ok(9)),
            op(1, KvOp::Read { key: 2 }, 20, Some(30), ok(9)),
            op(0, r(), 20, Some(30), ok(1)),
        ];
        assert!(check(&h).is_empty());
    }
}
