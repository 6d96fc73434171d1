//! Where a message's time goes inside one node: how long log bytes take from appended to
//! locally durable, from appended to committed (on a leader, the quorum; on a follower, until
//! it hears of the commit), and from committed to applied by the service. Measured on the
//! node's own clock at duty-cycle granularity (a position reached inside the cycle it was
//! appended in counts as 0), into fixed geometric buckets that only ever grow, so a reader can
//! take two readings and get the percentiles of the time between them.

use std::collections::VecDeque;

/// Buckets per stage: bucket `i` (from 1) holds times in [2^((i-1)/4), 2^(i/4)) µs (about 19 %
/// wide), bucket 0 everything under 1 µs, the last everything from about 0.9 s.
pub const STAGE_BUCKETS: usize = 81;

/// The stages, in export order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    AppendedToDurable = 0,
    AppendedToCommitted = 1,
    CommittedToApplied = 2,
}

pub const STAGES: [Stage; 3] = [
    Stage::AppendedToDurable,
    Stage::AppendedToCommitted,
    Stage::CommittedToApplied,
];

impl Stage {
    /// The stable name (`stages.<name>` in the bench's JSON).
    pub fn name(self) -> &'static str {
        match self {
            Stage::AppendedToDurable => "appended_to_durable",
            Stage::AppendedToCommitted => "appended_to_committed",
            Stage::CommittedToApplied => "committed_to_applied",
        }
    }
}

/// The bucket of a time of `ns`.
pub fn bucket_of(ns: u64) -> usize {
    let us = ns as f64 / 1000.0;
    if us < 1.0 {
        return 0;
    }
    ((us.log2() * 4.0) as usize + 1).min(STAGE_BUCKETS - 1)
}

/// The upper edge of bucket `i`, in µs (what a percentile falling in it reports).
pub fn bucket_upper_us(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

/// The `q` quantile (0..=1) of bucket counts, as the upper edge of its bucket; `None` if empty.
pub fn quantile_us(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper_us(i));
        }
    }
    Some(bucket_upper_us(buckets.len() - 1))
}

/// Positions waiting to be reached, with when they started; bounded so a stalled stage
/// cannot grow it (the marks past the bound are not measured).
#[derive(Clone, Debug, Default)]
struct Pending {
    marks: VecDeque<(u64, u64)>,
}

const PENDING_MAX: usize = 4096;

impl Pending {
    fn start(&mut self, position: u64, now: u64) {
        if self.marks.len() < PENDING_MAX && self.marks.back().is_none_or(|&(p, _)| p < position) {
            self.marks.push_back((position, now));
        }
    }

    /// Records every mark `position` reached; returns the nanoseconds they waited in all.
    fn reach(&mut self, position: u64, now: u64, buckets: &mut [u64; STAGE_BUCKETS]) -> u64 {
        let mut waited = 0u64;
        while let Some(&(p, t)) = self.marks.front() {
            if p > position {
                break;
            }
            let ns = now.saturating_sub(t);
            buckets[bucket_of(ns)] += 1;
            waited = waited.saturating_add(ns);
            self.marks.pop_front();
        }
        waited
    }
}

/// One node's stage times (see the module docs).
#[derive(Clone, Debug)]
pub struct StageTimes {
    pending: [Pending; 3],
    buckets: [[u64; STAGE_BUCKETS]; 3],
    sums_ns: [u64; 3],
    appended: u64,
    committed: u64,
}

impl Default for StageTimes {
    fn default() -> Self {
        Self {
            pending: Default::default(),
            buckets: [[0; STAGE_BUCKETS]; 3],
            sums_ns: [0; 3],
            appended: 0,
            committed: 0,
        }
    }
}

impl StageTimes {
    /// Called once per duty cycle with the node's positions.
    pub fn observe(&mut self, now: u64, appended: u64, durable: u64, commit: u64, applied: u64) {
        if appended < self.appended {
            // The log was cut: the marks past the cut name bytes that are gone.
            for p in &mut self.pending[..2] {
                p.marks.retain(|&(position, _)| position <= appended);
            }
        }
        if appended > self.appended {
            self.pending[Stage::AppendedToDurable as usize].start(appended, now);
            self.pending[Stage::AppendedToCommitted as usize].start(appended, now);
        }
        self.appended = appended;
        if commit > self.committed {
            self.pending[Stage::CommittedToApplied as usize].start(commit, now);
            self.committed = commit;
        }
        for (stage, reached) in [(0, durable), (1, commit), (2, applied)] {
            let waited = self.pending[stage].reach(reached, now, &mut self.buckets[stage]);
            self.sums_ns[stage] = self.sums_ns[stage].saturating_add(waited);
        }
    }

    /// The bucket counts of `stage` since the node started.
    pub fn buckets(&self, stage: Stage) -> &[u64; STAGE_BUCKETS] {
        &self.buckets[stage as usize]
    }

    /// The nanoseconds every byte measured in `stage` waited, summed (with the bucket counts,
    /// a mean; a Prometheus histogram's `_sum`).
    pub fn sum_ns(&self, stage: Stage) -> u64 {
        self.sums_ns[stage as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    #[test]
    fn buckets_are_geometric_and_quantiles_report_their_upper_edge() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(999), 0);
        assert_eq!(bucket_of(US), 1);
        assert_eq!(bucket_of(2 * US), 5);
        assert_eq!(bucket_of(1_000 * US), 40); // 2^9.97 µs
        assert_eq!(bucket_of(u64::MAX), STAGE_BUCKETS - 1);
        let mut b = [0u64; STAGE_BUCKETS];
        b[bucket_of(100 * US)] = 99;
        b[bucket_of(5_000 * US)] = 1;
        let p50 = quantile_us(&b, 0.5).unwrap();
        assert!((100.0..=120.0).contains(&p50), "{p50}");
        let p999 = quantile_us(&b, 0.999).unwrap();
        assert!((5_000.0..=6_000.0).contains(&p999), "{p999}");
        assert_eq!(quantile_us(&[0; STAGE_BUCKETS], 0.5), None);
    }

    #[test]
    fn each_stage_times_a_position_from_where_it_starts_to_where_it_is_reached() {
        let mut s = StageTimes::default();
        // Appended 100 at t=0; durable at 50 µs; committed at 200 µs; applied at 210 µs.
        s.observe(0, 100, 0, 0, 0);
        s.observe(50 * US, 100, 100, 0, 0);
        s.observe(200 * US, 100, 100, 100, 0);
        s.observe(210 * US, 100, 100, 100, 100);
        let one = |stage| {
            let b = s.buckets(stage);
            assert_eq!(b.iter().sum::<u64>(), 1, "{stage:?} recorded once");
            quantile_us(b, 1.0).unwrap()
        };
        assert!((50.0..60.0).contains(&one(Stage::AppendedToDurable)));
        assert!((200.0..240.0).contains(&one(Stage::AppendedToCommitted)));
        assert!((10.0..12.0).contains(&one(Stage::CommittedToApplied)));
        assert_eq!(s.sum_ns(Stage::AppendedToDurable), 50 * US);
        assert_eq!(s.sum_ns(Stage::AppendedToCommitted), 200 * US);
        assert_eq!(s.sum_ns(Stage::CommittedToApplied), 10 * US);
    }

    #[test]
    fn marks_of_cut_bytes_are_forgotten() {
        let mut s = StageTimes::default();
        s.observe(0, 100, 100, 100, 100);
        s.observe(0, 200, 100, 100, 100);
        // Cut back to 150: the mark at 200 names bytes that are gone.
        s.observe(10 * US, 150, 150, 100, 100);
        // New bytes to 200 appended at 1 ms, durable at once: measured from 1 ms, not 0.
        s.observe(1_000 * US, 200, 100, 100, 100);
        s.observe(1_000 * US, 200, 200, 100, 100);
        let b = s.buckets(Stage::AppendedToDurable);
        assert_eq!(b.iter().sum::<u64>(), 2);
        assert_eq!(b[0], 2, "both reached in the cycle they were appended in");
    }
}
