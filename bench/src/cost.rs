//! What a committed message costs the cluster: CPU time, system calls, context switches and
//! datagrams, per node and summed, from the counters every node publishes (see
//! `raftline::sys::cost`). Read at the start and the end of the measured load, so warm-up and
//! start-up are not charged. The names are stable for CI pipelines:
//! `cost.cluster.cpu_us_per_message`, `cost.cluster.syscalls_per_message`,
//! `cost.cluster.context_switches_per_message`, `cost.cluster.datagrams_per_message`, and the
//! same under `cost.nodes[i]`.

use std::path::Path;

use std::collections::BTreeMap;

use raftline::node::stages::{quantile_us, STAGES, STAGE_BUCKETS};
use raftline::runtime::counters::{Counter, CountersReader};
use serde::Serialize;

type StageBuckets = [[u64; STAGE_BUCKETS]; STAGES.len()];

/// The counters a cost is computed from, in this order.
const READ: [Counter; 11] = [
    Counter::CpuNs,
    Counter::VoluntarySwitches,
    Counter::InvoluntarySwitches,
    Counter::SyscallsReceive,
    Counter::SyscallsSend,
    Counter::SyscallsWait,
    Counter::SyscallsDisk,
    Counter::SyscallsSignal,
    Counter::DatagramsSent,
    Counter::DatagramsReceived,
    Counter::RingRecordsSent,
];

/// One node's counters at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Sample([u64; READ.len()], StageBuckets, bool);

impl Default for Sample {
    fn default() -> Self {
        Self([0; READ.len()], [[0; STAGE_BUCKETS]; STAGES.len()], false)
    }
}

/// The counters of a cluster's nodes, opened once.
pub struct Readers(Vec<CountersReader>);

impl Readers {
    /// The counters files of `dirs` (one per node); `Err` names the one that is not there.
    pub fn open<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<Self, String> {
        dirs.into_iter()
            .map(|d| CountersReader::open(d).map_err(|e| format!("{}: {e}", d.display())))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn sample(&self) -> Vec<Sample> {
        self.0
            .iter()
            .map(|r| {
                let mut s = Sample::default();
                for (v, c) in s.0.iter_mut().zip(READ) {
                    *v = r.get(c);
                }
                for (b, stage) in s.1.iter_mut().zip(STAGES) {
                    *b = r.stage(stage);
                }
                s.2 = r.get(Counter::Role) == 2;
                s
            })
            .collect()
    }
}

/// What the nodes spent between two samples, summed over runs.
#[derive(Clone, Debug, Default)]
pub struct Spent {
    nodes: Vec<[u64; READ.len()]>,
    stages: Vec<StageBuckets>,
    /// The node that led at the end of the last window.
    leader: Option<usize>,
    messages: u64,
}

impl Spent {
    /// Adds what each node spent from `start` to `end` while `messages` were committed.
    pub fn add(&mut self, start: &[Sample], end: &[Sample], messages: u64) {
        if self.nodes.len() < start.len() {
            self.nodes.resize(start.len(), [0; READ.len()]);
            self.stages
                .resize(start.len(), [[0; STAGE_BUCKETS]; STAGES.len()]);
        }
        for (i, (a, b)) in start.iter().zip(end).enumerate() {
            for k in 0..READ.len() {
                self.nodes[i][k] += b.0[k].saturating_sub(a.0[k]);
            }
            for s in 0..STAGES.len() {
                for k in 0..STAGE_BUCKETS {
                    self.stages[i][s][k] += b.1[s][k].saturating_sub(a.1[s][k]);
                }
            }
        }
        self.leader = end.iter().position(|s| s.2).or(self.leader);
        self.messages += messages;
    }

    /// The stage percentiles of node `i` over the windows, by stage name.
    fn stages_of(&self, i: usize) -> BTreeMap<&'static str, StageTimes> {
        let mut out = BTreeMap::new();
        for (s, stage) in STAGES.iter().enumerate() {
            let b = &self.stages[i][s];
            if let (Some(p50_us), Some(p99_us), Some(p999_us)) = (
                quantile_us(b, 0.5),
                quantile_us(b, 0.99),
                quantile_us(b, 0.999),
            ) {
                let count = b.iter().sum();
                out.insert(
                    stage.name(),
                    StageTimes {
                        p50_us,
                        p99_us,
                        p999_us,
                        count,
                    },
                );
            }
        }
        out
    }

    /// Adds what another run spent.
    pub fn merge(&mut self, other: &Spent) {
        if self.nodes.len() < other.nodes.len() {
            self.nodes.resize(other.nodes.len(), [0; READ.len()]);
            self.stages
                .resize(other.nodes.len(), [[0; STAGE_BUCKETS]; STAGES.len()]);
        }
        for (mine, theirs) in self.nodes.iter_mut().zip(&other.nodes) {
            for k in 0..READ.len() {
                mine[k] += theirs[k];
            }
        }
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            for s in 0..STAGES.len() {
                for k in 0..STAGE_BUCKETS {
                    mine[s][k] += theirs[s][k];
                }
            }
        }
        self.leader = other.leader.or(self.leader);
        self.messages += other.messages;
    }

    pub fn cost(&self) -> Option<Cost> {
        if self.messages == 0 || self.nodes.is_empty() {
            return None;
        }
        let per = |v: u64| v as f64 / self.messages as f64;
        let of = |i: usize, w: &[u64; READ.len()]| NodeCost {
            stages: if i == usize::MAX {
                BTreeMap::new()
            } else {
                self.stages_of(i)
            },
            cpu_us_per_message: per(w[0]) / 1000.0,
            syscalls_per_message: per(w[3..8].iter().sum()),
            context_switches_per_message: per(w[1] + w[2]),
            datagrams_per_message: per(w[8] + w[10]),
            syscalls_by_kind: SyscallsByKind {
                receive: per(w[3]),
                send: per(w[4]),
                wait: per(w[5]),
                disk: per(w[6]),
                signal: per(w[7]),
            },
            voluntary_switches_per_message: per(w[1]),
            datagrams_received_per_message: per(w[9]),
        };
        let mut sum = [0u64; READ.len()];
        for w in &self.nodes {
            for k in 0..READ.len() {
                sum[k] += w[k];
            }
        }
        Some(Cost {
            messages: self.messages,
            cluster: of(usize::MAX, &sum),
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, w)| of(i, w))
                .collect(),
            leader: self.leader,
            stages: self.leader.map(|i| self.stages_of(i)).unwrap_or_default(),
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SyscallsByKind {
    pub receive: f64,
    pub send: f64,
    pub wait: f64,
    pub disk: f64,
    pub signal: f64,
}

/// One stage's percentiles over the measured load (bucket upper edges, about 19 % wide).
#[derive(Clone, Debug, Serialize)]
pub struct StageTimes {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub count: u64,
}

/// Per committed message, for one node or the whole cluster.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCost {
    /// This node's stage times (none for the cluster's sum).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<&'static str, StageTimes>,
    pub cpu_us_per_message: f64,
    pub syscalls_per_message: f64,
    /// Voluntary (a wait that slept, so a wake-up) and involuntary (preempted).
    pub context_switches_per_message: f64,
    /// Sent: datagrams over UDP plus records over ipc rings. Each one is received once, so
    /// the cluster's sum counts every hop once.
    pub datagrams_per_message: f64,
    pub syscalls_by_kind: SyscallsByKind,
    pub voluntary_switches_per_message: f64,
    pub datagrams_received_per_message: f64,
}

/// What a committed message cost (see the module docs).
#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub messages: u64,
    pub cluster: NodeCost,
    pub nodes: Vec<NodeCost>,
    /// The node that led at the end of the measured load.
    pub leader: Option<usize>,
    /// The leader's stage times (`stages.<stage>.p50_us`, ...).
    pub stages: BTreeMap<&'static str, StageTimes>,
}

impl Cost {
    pub fn print(&self) {
        println!(
            "{:<36} {:>9} {:>9} {:>9} {:>9}   (over {} messages)",
            "cost per committed message", "CPU µs", "syscalls", "ctx sw", "dgrams", self.messages
        );
        let row = |name: &str, c: &NodeCost| {
            println!(
                "{name:<36} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                c.cpu_us_per_message,
                c.syscalls_per_message,
                c.context_switches_per_message,
                c.datagrams_per_message
            )
        };
        for (i, n) in self.nodes.iter().enumerate() {
            row(&format!("node {i}"), n);
        }
        row("cluster", &self.cluster);
        let k = &self.cluster.syscalls_by_kind;
        println!(
            "cluster syscalls by kind: receive {:.1}, send {:.1}, wait {:.1}, disk {:.1}, doorbell {:.1}",
            k.receive, k.send, k.wait, k.disk, k.signal
        );
        for (i, node) in self.nodes.iter().enumerate() {
            let role = if Some(i) == self.leader {
                "leader"
            } else {
                "follower"
            };
            for (name, t) in &node.stages {
                println!(
                    "stage, node {i} ({role}) {name:<24} p50 {:>8.0} µs  p99 {:>8.0} µs  p99.9 {:>8.0} µs  ({} samples)",
                    t.p50_us, t.p99_us, t.p999_us, t.count
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_what_each_node_spent_in_the_window_divided_by_the_messages() {
        let mut start = vec![Sample::default(); 2];
        let mut end = vec![Sample::default(); 2];
        // Node 0: 3 ms of CPU, 10 receives, 2 sends, 4 voluntary switches, 6 datagrams sent.
        start[0].0[0] = 1_000_000;
        end[0].0[0] = 4_000_000;
        end[0].0[3] = 10;
        end[0].0[4] = 2;
        end[0].0[1] = 4;
        end[0].0[8] = 6;
        // Node 1: 1 ms of CPU, 4 disk calls.
        end[1].0[0] = 1_000_000;
        end[1].0[6] = 4;
        // Node 1 leads; 5 of its appends became durable within 10–12 µs in the window.
        start[1].1[0][10] = 3;
        end[1].1[0][10] = 3;
        end[1].1[0][14] = 5;
        end[1].2 = true;
        let mut spent = Spent::default();
        spent.add(&start, &end, 100);
        let cost = spent.cost().expect("messages were committed");
        assert_eq!(cost.leader, Some(1));
        let durable = &cost.stages["appended_to_durable"];
        assert_eq!(
            durable.count, 5,
            "what happened before the window is not counted"
        );
        assert!((10.0..12.0).contains(&durable.p99_us), "{}", durable.p99_us);
        assert!(cost.nodes[0].stages.is_empty());
        assert_eq!(cost.nodes[0].cpu_us_per_message, 30.0);
        assert_eq!(cost.nodes[0].syscalls_per_message, 0.12);
        assert_eq!(cost.nodes[1].syscalls_by_kind.disk, 0.04);
        assert_eq!(cost.cluster.cpu_us_per_message, 40.0);
        assert_eq!(cost.cluster.syscalls_per_message, 0.16);
        assert_eq!(cost.cluster.context_switches_per_message, 0.04);
        assert_eq!(cost.cluster.datagrams_per_message, 0.06);
        // A second run adds to both what was spent and the messages.
        spent.add(&start, &end, 100);
        assert_eq!(spent.cost().unwrap().cluster.cpu_us_per_message, 40.0);
        assert!(Spent::default().cost().is_none());
    }
}
