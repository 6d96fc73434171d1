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

use std::collections::{BTreeMap, BTreeSet, HashSet};

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
    /// Sorted by invocation time.
    ops: &'a [Op],
    done: Vec<bool>,
    /// Indices of the operations with unknown outcomes, ascending.
    unknown: Vec<usize>,
    /// Ordered operations by index: known ones, and unknown ones (kept apart: few).
    done_known: BTreeSet<u32>,
    done_unknown: BTreeSet<u32>,
    /// (first known operation not yet ordered, operations ordered at or after it, unknown
    /// operations ordered before it, register value): states already explored.
    seen: HashSet<(usize, Vec<u32>, Vec<u32>, u64)>,
    longest: usize,
    steps: u64,
}

/// Explored states beyond which a key is reported as undecided rather than searched forever.
const MAX_STEPS: u64 = 20_000_000;

impl<'a> Search<'a> {
    fn new(ops: &'a [Op]) -> Self {
        Self {
            ops,
            done: vec![false; ops.len()],
            unknown: (0..ops.len())
                .filter(|&i| ops[i].complete_ns.is_none())
                .collect(),
            done_known: BTreeSet::new(),
            done_unknown: BTreeSet::new(),
            seen: HashSet::new(),
            longest: 0,
            steps: 0,
        }
    }

    fn run(&mut self) -> bool {
        // The search recurses once per ordered operation: give it a deep stack.
        let ops = self.ops;
        let (found, longest, steps) = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(2 << 30)
                .spawn_scoped(scope, || {
                    let mut inner = Search::new(ops);
                    let found = inner.dfs(0, 0, 0);
                    (found, inner.longest, inner.steps)
                })
                .expect("checker thread")
                .join()
                .expect("checker thread finished")
        });
        self.longest = longest;
        self.steps = steps;
        found
    }

    /// `p`: every known operation before it is ordered. Only operations invoked before the
    /// earliest completion among those not yet ordered can come next, so the candidates are a
    /// short window from `p` (plus unknown operations left behind, which may come any time).
    fn dfs(&mut self, value: u64, mut p: usize, count: usize) -> bool {
        self.longest = self.longest.max(count);
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return false;
        }
        let n = self.ops.len();
        while p < n && (self.done[p] || self.ops[p].complete_ns.is_none()) {
            p += 1;
        }
        if p == n {
            return true; // every known operation is ordered; the unknown rest may never have happened
        }
        let mut frontier = u64::MAX;
        let mut end = p;
        while end < n && self.ops[end].invoke_ns <= frontier {
            if !self.done[end] {
                if let Some(c) = self.ops[end].complete_ns {
                    frontier = frontier.min(c);
                }
            }
            end += 1;
        }
        // The state: which operations are ordered (all known ones before `p`, these known ones
        // after it, these unknown ones anywhere) and the value.
        let after: Vec<u32> = self.done_known.range(p as u32..).copied().collect();
        let unknown: Vec<u32> = self.done_unknown.iter().copied().collect();
        if !self.seen.insert((p, after, unknown, value)) {
            return false;
        }
        let behind = self.unknown_before(p);
        for i in behind.into_iter().chain(p..end) {
            let op = self.ops[i];
            if self.done[i] || op.invoke_ns > frontier {
                continue;
            }
            if let Some(next) = step(value, &op) {
                self.mark(i, true);
                let found = self.dfs(next, p, count + 1);
                self.mark(i, false);
                if found {
                    return true;
                }
            }
        }
        false
    }

    /// Unknown operations before `p` not yet ordered: they may still come next.
    fn unknown_before(&self, p: usize) -> Vec<usize> {
        self.unknown
            .iter()
            .copied()
            .take_while(|&i| i < p)
            .filter(|&i| !self.done[i])
            .collect()
    }

    fn mark(&mut self, i: usize, done: bool) {
        self.done[i] = done;
        let set = if self.ops[i].complete_ns.is_some() {
            &mut self.done_known
        } else {
            &mut self.done_unknown
        };
        if done {
            set.insert(i as u32);
        } else {
            set.remove(&(i as u32));
        }
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

    /// A long history of four overlapping clients, generated from a real register: the linear
    /// order is the order of the effect times, each inside its operation's interval.
    fn long_history(n: usize) -> Vec<Op> {
        let mut rng = raftline::rng::Rng::new(7);
        let mut value = 0u64;
        let mut next_free = [0u64; 4];
        let mut history = Vec::new();
        let mut now = 0u64;
        for i in 0..n {
            now += 1 + rng.below(5);
            let client = rng.below(4) as usize;
            let invoke = now.max(next_free[client]);
            let effect = invoke + rng.below(10);
            let complete = effect + rng.below(10);
            next_free[client] = complete + 1;
            now = effect;
            let op = match rng.below(3) {
                0 => r(),
                _ => w(i as u64 + 1),
            };
            let outcome = match op {
                KvOp::Write { value: v, .. } => {
                    value = v;
                    ok(v)
                }
                _ => ok(value),
            };
            history.push(op_at(client, op, invoke, complete, outcome));
        }
        history
    }

    fn op_at(client: usize, op: KvOp, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client,
            id: 0,
            op,
            invoke_ns: invoke,
            complete_ns: Some(complete),
            outcome,
        }
    }

    #[test]
    fn long_histories_check_quickly_and_one_bad_read_is_found() {
        let mut h = long_history(200_000);
        assert!(check(&h).is_empty());
        // A read, long after everything, of a value overwritten long before.
        let end = h.iter().map(|o| o.complete_ns.unwrap()).max().unwrap();
        h.push(op_at(0, r(), end + 10, end + 20, ok(1)));
        let anomalies = check(&h);
        assert_eq!(anomalies.len(), 1);
        assert!(!anomalies[0].gave_up);
    }
}
