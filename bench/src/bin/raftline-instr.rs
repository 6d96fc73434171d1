//! raftline-instr: small deterministic workloads for instruction counting under callgrind.
//! Wall-clock time on a shared CI machine is noise; instructions retired by the same binary
//! on the same input are repeatable, so CI gates on them (`raftline-ci instructions`).
//!
//! raftline-instr codec | log-append | election

use raftline::codec::{decode, encode_into, encoded_len, Decoded, FrameMeta};
use raftline::consensus::{Action, Consensus, ConsensusConfig, LogState, VoteState};
use raftline::io::Disk;
use raftline::log::{Durability, Log, LogConfig, LogError};
use raftline::sim::disk::{SimDisk, SimDiskConfig};

/// Encode and decode 100 000 frames of 64 B payload.
fn codec() -> u64 {
    let payload = [7u8; 64];
    let mut buf = vec![0u8; encoded_len(64)];
    let mut sum = 0u64;
    for i in 0..100_000u64 {
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

/// Append 50 000 frames of 32 B to a log on the simulated disk, group-committed.
fn log_append() -> u64 {
    let config = LogConfig {
        segment_bytes: 4 << 20,
        write_bytes_max: 256 << 10,
        durability: Durability::Fdatasync,
    };
    let (mut log, _) = Log::open(SimDisk::new(1, SimDiskConfig::default()), config).expect("open");
    let payload = [1u8; 32];
    for i in 0..50_000u64 {
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

/// 2 000 rounds of a 3-member election and commit, messages passed by hand.
fn election() -> u64 {
    let mut total = 0u64;
    for round in 0..2_000u64 {
        let mut members: Vec<Consensus> = (0..3)
            .map(|id| {
                let mut c = ConsensusConfig::new(id, 3);
                c.seed = round;
                let mut m =
                    Consensus::new(c, VoteState::default(), LogState::default()).expect("config");
                m.start(0);
                m
            })
            .collect();
        let mut now = 0;
        let mut actions = Vec::new();
        let mut mail = Vec::new();
        for _ in 0..1_000 {
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
            if members.iter().any(|m| m.leader_term().is_some()) {
                total += now;
                break;
            }
        }
    }
    total
}

fn main() {
    let result = match std::env::args().nth(1).as_deref() {
        Some("codec") => codec(),
        Some("log-append") => log_append(),
        Some("election") => election(),
        _ => {
            eprintln!("usage: raftline-instr codec | log-append | election");
            std::process::exit(2);
        }
    };
    println!("{result}");
}
