//! What a committed message costs the cluster: CPU time, system calls, context switches and
//! datagrams, per node and summed, from the counters every node publishes (see
//! `raftline::sys::cost`). Read at the start and the end of the measured load, so warm-up and
//! start-up are not charged. The names are stable for CI pipelines:
//! `cost.cluster.cpu_us_per_message`, `cost.cluster.syscalls_per_message`,
//! `cost.cluster.context_switches_per_message`, `cost.cluster.datagrams_per_message`, and the
//! same under `cost.nodes[i]`.

use std::path::Path;

use raftline::runtime::counters::{Counter, CountersReader};
use serde::Serialize;

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
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample([u64; READ.len()]);

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
                s
            })
            .collect()
    }
}

/// What the nodes spent between two samples, summed over runs.
#[derive(Clone, Debug, Default)]
pub struct Spent {
    nodes: Vec<[u64; READ.len()]>,
    messages: u64,
}

impl Spent {
    /// Adds what each node spent from `start` to `end` while `messages` were committed.
    pub fn add(&mut self, start: &[Sample], end: &[Sample], messages: u64) {
        if self.nodes.len() < start.len() {
            self.nodes.resize(start.len(), [0; READ.len()]);
        }
        for (i, (a, b)) in start.iter().zip(end).enumerate() {
            for k in 0..READ.len() {
                self.nodes[i][k] += b.0[k].saturating_sub(a.0[k]);
            }
        }
        self.messages += messages;
    }

    /// Adds what another run spent.
    pub fn merge(&mut self, other: &Spent) {
        if self.nodes.len() < other.nodes.len() {
            self.nodes.resize(other.nodes.len(), [0; READ.len()]);
        }
        for (mine, theirs) in self.nodes.iter_mut().zip(&other.nodes) {
            for k in 0..READ.len() {
                mine[k] += theirs[k];
            }
        }
        self.messages += other.messages;
    }

    pub fn cost(&self) -> Option<Cost> {
        if self.messages == 0 || self.nodes.is_empty() {
            return None;
        }
        let per = |v: u64| v as f64 / self.messages as f64;
        let of = |w: &[u64; READ.len()]| NodeCost {
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
            cluster: of(&sum),
            nodes: self.nodes.iter().map(of).collect(),
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

/// Per committed message, for one node or the whole cluster.
#[derive(Clone, Debug, Serialize)]
pub struct NodeCost {
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
        let mut spent = Spent::default();
        spent.add(&start, &end, 100);
        let cost = spent.cost().expect("messages were committed");
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
