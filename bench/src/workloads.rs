//! Small deterministic workloads shared by the instruction-count gate (`raftline-instr`, run
//! under callgrind by `raftline-ci instructions`) and the criterion micro-benchmarks
//! (`cargo bench -p raftline-bench --bench micro`).

use raftline::codec::message::AppendPosition;
use raftline::codec::{decode, encode_into, encoded_len, Decoded, FrameMeta, Message};
use raftline::consensus::{Action, Consensus, ConsensusConfig, LogState, VoteState};
use raftline::io::Disk;
use raftline::log::{Durability, Log, LogConfig, LogError};
use raftline::sim::disk::{SimDisk, SimDiskConfig};

/// Encodes and decodes `n` frames of 64 B payload.
pub fn codec(n: u64) -> u64 {
    let payload = [7u8; 64];
    let mut buf = vec![0u8; encoded_len(64)];
    let mut sum = 0u64;
    for i in 0..n {
        let meta = FrameMeta {
            frame_type: 2,
            flags: 0,
            term: 1,
            session_id: i,
            timestamp_ns: i,
        };
        encode_into(&meta, &payload, &mut buf);
        if let Ok(Decoded::Frame(f, _)) = decode(&buf) {
            sum = sum.wrapping_add(f.meta.session_id);
        }
    }
    sum
}

/// Appends `n` frames of 32 B to a log on the simulated disk, group-committed.
pub fn log_append(n: u64) -> u64 {
    let config = LogConfig {
        segment_bytes: 4 << 20,
        write_bytes_max: 256 << 10,
        durability: Durability::Fdatasync,
    };
    let (mut log, _) = Log::open(SimDisk::new(1, SimDiskConfig::default()), config).expect("open");
    let payload = [1u8; 32];
    for i in 0..n {
        let meta = FrameMeta {
            frame_type: 2,
            flags: 0,
            term: 1,
            session_id: 1,
            timestamp_ns: i,
        };
        loop {
            match log.append(&meta, &payload) {
                Ok(_) => break,
                Err(LogError::Full { .. }) => {
                    log.do_work().expect("do_work");
                    log.disk_mut().wait().expect("wait");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let end = log.appended_position();
    log.flush_to(end).expect("flush");
    log.durable_position()
}

/// `rounds` 3-member elections, messages passed by hand; returns the sum of the times taken.
pub fn election(rounds: u64) -> u64 {
    (0..rounds).map(|round| run_election(round, 0).1).sum()
}

/// Three members after an election, messages passed by hand until a leader is live and its
/// followers have reported in; returns them with the leader's id and the time.
pub fn elected(seed: u64) -> (Vec<Consensus>, usize, u64) {
    let (members, now) = run_election(seed, 20);
    let leader = members
        .iter()
        .position(|m| m.leader_term().is_some())
        .expect("a leader");
    (members, leader, now)
}

/// Runs three members from start, passing every message by hand each simulated millisecond,
/// until one leads and then `settle` more milliseconds; returns them and the time a leader
/// first appeared (0 if none did within a second).
fn run_election(seed: u64, settle: u32) -> (Vec<Consensus>, u64) {
    let mut members: Vec<Consensus> = (0..3)
        .map(|id| {
            let mut c = ConsensusConfig::new(id, 3);
            c.seed = seed;
            let mut m =
                Consensus::new(c, VoteState::default(), LogState::default()).expect("config");
            m.start(0);
            m
        })
        .collect();
    let mut now = 0;
    let mut led_at = None;
    let mut actions = Vec::new();
    let mut mail = Vec::new();
    for _ in 0..1_000 + settle {
        now += 1_000_000;
        for (id, m) in members.iter_mut().enumerate() {
            m.on_tick(now);
            m.take_actions(&mut actions);
            for a in actions.drain(..) {
                if let Action::Send { to, message } = a {
                    mail.push((id as u32, to, message));
                }
            }
        }
        for (from, to, message) in std::mem::take(&mut mail) {
            let m = &mut members[to as usize];
            m.on_message(now, from, &message);
            m.take_actions(&mut actions);
            for a in actions.drain(..) {
                if let Action::Send { to: next, message } = a {
                    mail.push((to, next, message));
                }
            }
        }
        if led_at.is_none() && members.iter().any(|m| m.leader_term().is_some()) {
            led_at = Some(now);
        }
        if led_at.is_some_and(|t| now >= t + settle as u64 * 1_000_000) {
            break;
        }
    }
    (members, led_at.unwrap_or(0))
}

/// The leader's commit calculation: `n` rounds of appending 64 bytes, making them durable,
/// and both followers reporting them; returns the commit position.
pub fn commit(n: u64) -> u64 {
    let (mut members, l, now) = elected(1);
    let leader = &mut members[l];
    let term = leader.leader_term().expect("leader");
    let mut actions = Vec::new();
    let mut position = leader.commit_position().max(1 << 10);
    for _ in 0..n {
        position += 64;
        leader.on_appended(now, position);
        leader.on_durable(now, position);
        for f in (0..3u32).filter(|&f| f as usize != l) {
            let m = Message::AppendPosition(AppendPosition {
                leadership_term_id: term,
                log_position: position,
                appended_position: position,
                follower_member_id: f,
                flags: 0,
            });
            leader.on_message(now, f, &m);
        }
        leader.take_actions(&mut actions);
        actions.clear();
    }
    leader.commit_position()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workloads do what they say, so the benchmarks measure real work.
    #[test]
    fn the_commit_workload_commits_every_round_and_the_log_makes_everything_durable() {
        let (members, leader, _) = elected(1);
        let base = members[leader].commit_position().max(1 << 10);
        assert_eq!(commit(100), base + 100 * 64);
        assert_eq!(codec(10), 45);
        let durable = log_append(1_000);
        assert!(durable >= 1_000 * 72, "{durable}");
    }
}
