//! Injecting one fault into the running cluster and putting it right again after its hold:
//! kills (of the leader, or any node), pauses, partitions, a full disk, and damage to a
//! stopped member's files. It says what it did; it never judges the history (that is
//! `check`'s) and never leaves a fault in place when it returns.

use std::time::Duration;

use raftline::rng::Rng;
use raftline::runtime::counters::Counter;
use raftline::runtime::monotonic_ns;

use super::{corrupt, fill_disk, leader, refused_vote, wait_repaired, Fault, Network, Node};

/// The cluster under test and what the faults found.
pub(super) struct Injector<'a> {
    pub rng: Rng,
    pub network: &'a Network,
    pub nodes: &'a mut [Node],
    /// The node whose disk the full-disk fault fills (its log is on a small tmpfs).
    pub disk_node: usize,
    /// Leader kills: when, and when a leader of a later term first committed (if within the
    /// hold).
    pub kills_of_leader: Vec<(u64, Option<u64>)>,
    /// Corrupted members that stopped, or did not hold the committed log again within 20 s.
    pub unrepaired: Vec<String>,
}

impl Injector<'_> {
    /// Injects `fault` for `hold`, heals it, and says what it did.
    pub fn inject(&mut self, fault: Fault, hold: Duration) -> Result<String, String> {
        match fault {
            Fault::KillLeader | Fault::Kill => self.kill(fault, hold),
            Fault::Pause => self.pause(hold),
            Fault::Partition => self.partition(hold),
            Fault::Disk => self.fill_disk(hold),
            Fault::Corrupt => self.corrupt(hold),
        }
    }

    /// SIGKILL (the leader, or any node), restart after the hold; for a leader, also when a
    /// leader of a later term first committed.
    fn kill(&mut self, fault: Fault, hold: Duration) -> Result<String, String> {
        let target = match (fault, leader(self.nodes)) {
            (Fault::KillLeader, Some(l)) => l,
            _ => self.rng.below(self.nodes.len() as u64) as usize,
        };
        let was_leader = leader(self.nodes) == Some(target);
        let term = self.nodes[target]
            .counters()
            .map_or(0, |c| c.get(Counter::Term));
        self.nodes[target].kill();
        let killed_at = monotonic_ns();
        if was_leader {
            // Watch the others' counters (published every millisecond) for the first
            // commit by a leader of a later term.
            let mut commit_at = None;
            let base: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| n.counters().map_or(0, |c| c.get(Counter::CommitPosition)))
                .collect();
            while monotonic_ns() - killed_at < hold.as_nanos() as u64 {
                let new_commit = self.nodes.iter().enumerate().any(|(i, n)| {
                    i != target
                        && n.counters().is_some_and(|c| {
                            c.get(Counter::Role) == 2
                                && c.get(Counter::Term) > term
                                && c.get(Counter::CommitPosition) > base[i]
                        })
                });
                if new_commit {
                    commit_at = Some(monotonic_ns());
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            self.kills_of_leader.push((killed_at, commit_at));
        }
        let left = hold.saturating_sub(Duration::from_nanos(monotonic_ns() - killed_at));
        std::thread::sleep(left);
        self.nodes[target].start()?;
        Ok(format!(
            "SIGKILL node {target}{}, restarted after {} ms",
            if was_leader { " (leader)" } else { "" },
            hold.as_millis()
        ))
    }

    /// SIGSTOP (the leader or any node) for the hold, then SIGCONT.
    fn pause(&mut self, hold: Duration) -> Result<String, String> {
        let target = match self.rng.below(2) {
            0 => leader(self.nodes).unwrap_or(0),
            _ => self.rng.below(self.nodes.len() as u64) as usize,
        };
        self.nodes[target].signal(libc::SIGSTOP);
        self.nodes[target].paused = true;
        std::thread::sleep(hold);
        self.nodes[target].signal(libc::SIGCONT);
        self.nodes[target].paused = false;
        Ok(format!("SIGSTOP node {target} for {} ms", hold.as_millis()))
    }

    /// Isolate a node, cut one direction, or leave the leader deaf, for the hold.
    fn partition(&mut self, hold: Duration) -> Result<String, String> {
        let n = self.nodes.len();
        let a = self.rng.below(n as u64) as usize;
        let what = match self.rng.below(3) {
            0 => {
                for b in (0..n).filter(|&b| b != a) {
                    self.network.cut(a, b)?;
                    self.network.cut(b, a)?;
                }
                format!("isolate node {a}")
            }
            1 => {
                let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
                self.network.cut(a, b)?;
                format!("cut {a} -> {b} (one way)")
            }
            _ => {
                // The leader can send but not hear: the asymmetric case that keeps a
                // stale leader's heartbeats flowing.
                let l = leader(self.nodes).unwrap_or(a);
                for b in (0..n).filter(|&b| b != l) {
                    self.network.cut(b, l)?;
                }
                format!("leader {l} hears nobody (one way)")
            }
        };
        std::thread::sleep(hold);
        self.network.heal();
        Ok(format!("{what} for {} ms", hold.as_millis()))
    }

    /// Fill the disk node's log directory for twice the hold, then free it (restarting the
    /// node if it stopped).
    fn fill_disk(&mut self, hold: Duration) -> Result<String, String> {
        let disk_node = self.disk_node;
        let ballast = fill_disk(&self.nodes[disk_node].dir)?;
        // Long enough for the log to need a new segment file while it is full.
        std::thread::sleep(hold * 2);
        let _ = std::fs::remove_file(&ballast);
        let stopped = self.nodes[disk_node].exit_status();
        if stopped.is_some() {
            self.nodes[disk_node].kill();
            self.nodes[disk_node].start()?;
        }
        Ok(format!(
            "node {disk_node}'s disk full for {} ms{}",
            2 * hold.as_millis(),
            stopped.map_or(String::new(), |s| format!(", it stopped ({s}); restarted"))
        ))
    }

    /// Stop a node, damage one of its files, restart it (with `--recover-vote` if it refuses
    /// without its vote), and wait until it holds the committed log again.
    fn corrupt(&mut self, hold: Duration) -> Result<String, String> {
        let target = self.rng.below(self.nodes.len() as u64) as usize;
        let leader_commit = self
            .nodes
            .iter()
            .filter_map(|n| n.counters())
            .map(|c| c.get(Counter::CommitPosition))
            .max()
            .unwrap_or(0);
        self.nodes[target].kill();
        let damage = corrupt::corrupt(&self.nodes[target].dir, &mut self.rng)?;
        std::thread::sleep(hold);
        self.nodes[target].start()?;
        let mut recovered_vote = "";
        if refused_vote(&mut self.nodes[target]) {
            // What an operator does after reading the refusal.
            self.nodes[target].start_with(&["--recover-vote"])?;
            recovered_vote =
                ", it refused to start without its vote record and was started with --recover-vote";
        }
        // One damaged member at a time: the next fault waits for this one to hold
        // again everything the cluster had committed when it stopped.
        let repaired = wait_repaired(&mut self.nodes[target], leader_commit);
        if !repaired.starts_with("durable past") {
            self.unrepaired.push(format!("node {target}: {repaired}"));
        }
        let damage = damage.map_or("nothing to damage".into(), |d| d.to_string());
        Ok(format!(
            "node {target} stopped, {damage}, restarted after {} ms{recovered_vote}; {repaired}",
            hold.as_millis()
        ))
    }
}
