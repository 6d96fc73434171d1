//! Storage faults on real `raftline node` processes: corruption below what a member reported
//! durable, on one of the two members holding acknowledged writes while the other is down.
//! Every acknowledged write survives, and the damaged member says what it found.

mod common;
use common::members::{client, cluster, leader, stream, wait_for};

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use raftline::runtime::counters::Counter;

/// Flips 4 bytes in the middle of the written part of a member's first segment.
fn corrupt_segment(dir: &Path) -> u64 {
    let path = dir.join("00000000000000000000.seg");
    let file = File::options().read(true).write(true).open(&path).unwrap();
    let mut data = vec![0u8; 1 << 20];
    file.read_exact_at(&mut data, 0).unwrap();
    let written = data
        .iter()
        .rposition(|&b| b != 0)
        .expect("the segment holds frames") as u64;
    let at = written / 2;
    let mut bytes = [0u8; 4];
    file.read_exact_at(&mut bytes, at).unwrap();
    for b in &mut bytes {
        *b ^= 0x5a;
    }
    file.write_all_at(&bytes, at).unwrap();
    file.sync_all().unwrap();
    at
}

#[test]
fn corruption_on_one_of_the_two_holders_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, addrs) = cluster(tmp.path(), "");
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 100);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    let (f1, f2) = ((l + 1) % 3, (l + 2) % 3);

    // F2 stops; 100 more writes are acknowledged, held by L and F1 only.
    members[f2].stop();
    stream(&mut client, &mut acked, 200);
    // F1 stops cleanly and its disk flips 4 bytes below what it reported durable; L stops.
    members[f1].stop();
    let at = corrupt_segment(&members[f1].dir);
    members[l].stop();

    // F1 and F2 come back without L: F1 reports the damage and must not help elect F2.
    members[f1].start();
    members[f2].start();
    let said = wait_for(
        "the damaged member's report",
        Duration::from_secs(10),
        || {
            let said = members[f1].said();
            said.contains("log corruption").then_some(said)
        },
    );
    assert!(
        said.contains("00000000000000000000.seg") && said.contains("not a torn tail"),
        "the report names the file and what it is: {said}"
    );
    assert!(said.contains(&format!("at position {}", at - at % 8)) || said.contains("position"));

    eprintln!("{said}");
    // L returns: every acknowledged write is applied on every replica, F1 repaired.
    members[l].start();
    let mut client = self::client(&addrs);
    let mut more = BTreeSet::new();
    stream(&mut client, &mut more, 10);
    wait_for(
        "every replica to apply all 210 messages",
        Duration::from_secs(30),
        || {
            let state: Vec<(u64, u64)> = members
                .iter()
                .map(|m| {
                    m.counters().map_or((0, 0), |c| {
                        (
                            c.get(Counter::AppliedMessages),
                            c.get(Counter::ServiceDigest),
                        )
                    })
                })
                .collect();
            let done = state.iter().all(|s| s.0 == 210) && state.windows(2).all(|w| w[0] == w[1]);
            assert!(state.iter().all(|s| s.0 <= 210), "applied twice: {state:?}");
            done.then_some(())
        },
    );
    for m in &mut members {
        m.stop();
    }
}

/// The slot of the vote record written last (the higher sequence), as `io::record` lays it out.
fn newest_vote_slot(dir: &Path) -> std::path::PathBuf {
    let sequence = |slot: u32| {
        let bytes = std::fs::read(dir.join(format!("vote-state.slot{slot}"))).unwrap_or_default();
        (bytes.get(..4) == Some(b"RLRC"))
            .then(|| u64::from_le_bytes(bytes[4..12].try_into().unwrap()))
    };
    let slot = if sequence(1) > sequence(0) { 1 } else { 0 };
    assert!(sequence(slot).is_some(), "the member has voted");
    dir.join(format!("vote-state.slot{slot}"))
}

#[test]
fn a_damaged_or_missing_vote_record_stops_the_start_and_recover_vote_rejoins_with_every_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, addrs) = cluster(tmp.path(), "");
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 50);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    let f = (l + 1) % 3;
    members[f].stop();

    // The newest vote slot reads back wrong: the other slot's older vote must not be taken.
    let slot = newest_vote_slot(&members[f].dir);
    let file = File::options().write(true).open(&slot).unwrap();
    file.write_all_at(b"\xff\xff", 13).unwrap();
    file.sync_all().unwrap();
    members[f].start();
    let status = wait_for("the refusal", Duration::from_secs(10), || {
        members[f].child.as_mut().unwrap().try_wait().unwrap()
    });
    assert!(!status.success(), "a damaged vote slot refuses the start");
    members[f].child = None;
    let said = members[f].said();
    assert!(
        said.contains("vote record")
            && said.contains("fails its checksum")
            && said.contains("--recover-vote"),
        "the refusal names the record, the damage and the way out:\n{said}"
    );

    // The operator's safe path: the member rejoins, votes in no election until it has heard
    // from the others, and applies every write.
    members[f].start_with(&["--recover-vote"]);
    stream(&mut client, &mut acked, 100);
    wait_for(
        "the member to apply all 100",
        Duration::from_secs(30),
        || {
            members[f]
                .counters()
                .is_some_and(|c| c.get(Counter::AppliedMessages) == 100)
                .then_some(())
        },
    );
    assert!(members[f].said().contains("recovering it"));

    // The vote record deleted outright: the same refusal, the same way out.
    members[f].stop();
    for slot in 0..2 {
        std::fs::remove_file(members[f].dir.join(format!("vote-state.slot{slot}"))).unwrap();
    }
    members[f].start();
    let status = wait_for("the refusal", Duration::from_secs(10), || {
        members[f].child.as_mut().unwrap().try_wait().unwrap()
    });
    assert!(!status.success(), "a missing vote record refuses the start");
    members[f].child = None;
    let said = members[f].said();
    let refusal = said
        .lines()
        .rev()
        .find(|l| l.contains("could not start"))
        .unwrap();
    assert!(
        refusal.contains("no record") && refusal.contains("--recover-vote"),
        "{refusal}"
    );
    members[f].start_with(&["--recover-vote"]);
    stream(&mut client, &mut acked, 150);
    wait_for(
        "the member to apply all 150",
        Duration::from_secs(30),
        || {
            members[f]
                .counters()
                .is_some_and(|c| c.get(Counter::AppliedMessages) == 150)
                .then_some(())
        },
    );
    for m in &mut members {
        m.stop();
    }
}
