//! Datagrams forged "from" a member's address through a raw socket, against real `raftline
//! node` processes: a follower's false positions (off a frame boundary, durable beyond what
//! was sent), a leader's forged log bytes and commit position, and vote requests with rising
//! terms. With member keys every one is refused by its missing seal, counted, and the cluster
//! commits on with nothing forged applied. Without keys, consensus's own checks still keep
//! every node up and commit only with a real quorum.
//!
//! Needs CAP_NET_RAW (the tests say so and pass without it: the check is the host's).

mod common;
use common::members::{client, cluster, leader, stream, wait_for, Member};
use common::spoof::{member_datagram, Spoofer};

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::time::Duration;

use raftline::client::ClientEvent;
use raftline::codec::message::{
    AppendDataHeader, AppendPosition, CommitPosition, RequestVote, SessionMessageHeader,
};
use raftline::codec::{FrameMeta, Message};
use raftline::runtime::counters::Counter;
use raftline::runtime::monotonic_ns;

const CLUSTER_ID: u32 = 9;

fn counter(m: &Member, c: Counter) -> u64 {
    m.counters().map_or(0, |r| r.get(c))
}

fn spoofer() -> Option<Spoofer> {
    match Spoofer::open() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipped: raw sockets are not allowed here ({e}); run as root to test");
            None
        }
    }
}

fn all_running(members: &mut [Member]) -> bool {
    members.iter_mut().all(|m| {
        m.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    })
}

/// What a follower's address can lie about to the leader: an appended position off every
/// frame boundary, and a durable position far beyond anything the leader sent.
fn false_positions(term: u64, follower: u32) -> [Vec<u8>; 2] {
    [
        member_datagram(
            CLUSTER_ID,
            term,
            &[Message::AppendPosition(AppendPosition {
                leadership_term_id: term,
                log_position: 0,
                appended_position: 12_345,
                follower_member_id: follower,
                flags: 0,
            })],
        ),
        member_datagram(
            CLUSTER_ID,
            term,
            &[Message::AppendPosition(AppendPosition {
                leadership_term_id: term,
                log_position: 1 << 40,
                appended_position: 1 << 40,
                follower_member_id: follower,
                flags: 0,
            })],
        ),
    ]
}

/// A session message the cluster never received, as log bytes.
fn forged_write() -> Vec<u8> {
    let m = Message::SessionMessage {
        header: SessionMessageHeader { sequence: 1 },
        payload: b"forged",
    };
    let mut frame = vec![0u8; m.encoded_len()];
    m.encode(
        FrameMeta {
            session_id: 1,
            ..FrameMeta::default()
        },
        &mut frame,
    );
    frame
}

fn addr(a: &str) -> SocketAddrV4 {
    a.parse().unwrap()
}

#[test]
fn with_member_keys_every_forged_member_datagram_is_refused_and_nothing_forged_is_applied() {
    let Some(spoof) = spoofer() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("member.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let extra = format!("[transport]\nmember_key_file = \"{}\"\n", key.display());
    let (mut members, addrs) = cluster(tmp.path(), &extra);
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 100);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    let term = counter(&members[l], Counter::Term);
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let refused_before: Vec<u64> = members
        .iter()
        .map(|m| counter(m, Counter::MemberSealsRefused))
        .collect();

    let forged = forged_write();
    let mut sent = [0u64; 3];
    for round in 0..20u64 {
        for &f in &followers {
            // The follower's address lies to the leader.
            for d in false_positions(term, f as u32) {
                spoof.send(addr(&addrs[f]), addr(&addrs[l]), &d);
                sent[l] += 1;
            }
            // The leader's address hands the follower a forged write, exactly at its end, and
            // commits it.
            let end = counter(&members[f], Counter::AppendedPosition);
            let d = member_datagram(
                CLUSTER_ID,
                term,
                &[
                    Message::AppendData {
                        header: AppendDataHeader {
                            leadership_term_id: term,
                            log_position: end,
                            leader_member_id: l as u32,
                        },
                        bytes: &forged,
                    },
                    Message::CommitPosition(CommitPosition {
                        leadership_term_id: term,
                        log_position: end + forged.len() as u64,
                        leader_member_id: l as u32,
                    }),
                ],
            );
            spoof.send(addr(&addrs[l]), addr(&addrs[f]), &d);
            sent[f] += 1;
        }
        // Everyone is asked to vote for a candidate in ever higher terms.
        for (to, to_addr) in addrs.iter().enumerate() {
            let from = (to + 1) % 3;
            let d = member_datagram(
                CLUSTER_ID,
                term + 1000 + round,
                &[Message::RequestVote(RequestVote {
                    log_leadership_term_id: term,
                    log_position: 1 << 40,
                    candidate_term_id: term + 1000 + round,
                    candidate_member_id: from as u32,
                })],
            );
            spoof.send(addr(&addrs[from]), addr(to_addr), &d);
            sent[to] += 1;
        }
    }
    for i in 0..3 {
        wait_for(
            "every forged datagram refused by its seal",
            Duration::from_secs(10),
            || {
                (counter(&members[i], Counter::MemberSealsRefused) - refused_before[i] >= sent[i])
                    .then_some(())
            },
        );
    }

    // The cluster commits on, in the term it had.
    stream(&mut client, &mut acked, 300);
    assert!(all_running(&mut members), "every node is up");
    for m in &members {
        assert!(
            counter(m, Counter::Term) < term + 1000,
            "no forged vote request moved a term"
        );
        assert_eq!(
            counter(m, Counter::ImpossibleMessagesRefused),
            0,
            "nothing forged reached consensus"
        );
    }
    wait_for(
        "every member to apply every acknowledged write",
        Duration::from_secs(20),
        || {
            members
                .iter()
                .all(|m| counter(m, Counter::AppliedMessages) == 300)
                .then_some(())
        },
    );
    let digests: Vec<u64> = members
        .iter()
        .map(|m| counter(m, Counter::ServiceDigest))
        .collect();
    assert!(
        digests.iter().all(|&d| d == digests[0]),
        "one state on every member, without the forged write: {digests:?}"
    );
    for m in &mut members {
        m.stop();
    }
}

#[test]
fn without_member_keys_false_positions_are_refused_and_nothing_commits_without_a_quorum() {
    let Some(spoof) = spoofer() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, addrs) = cluster(tmp.path(), "");
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 100);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    let term = counter(&members[l], Counter::Term);
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();

    // False positions while the followers are up: refused, counted, no node falls over, and
    // the cluster commits on.
    let before = counter(&members[l], Counter::ImpossibleMessagesRefused);
    for _ in 0..20 {
        for &f in &followers {
            for d in false_positions(term, f as u32) {
                spoof.send(addr(&addrs[f]), addr(&addrs[l]), &d);
            }
        }
    }
    wait_for(
        "the false positions refused",
        Duration::from_secs(10),
        || (counter(&members[l], Counter::ImpossibleMessagesRefused) - before >= 80).then_some(()),
    );
    stream(&mut client, &mut acked, 200);
    assert!(all_running(&mut members), "every node is up");

    // Both followers down: a write is appended but cannot commit, and the followers'
    // addresses claiming it durable do not make it so.
    for &f in &followers {
        members[f].stop();
    }
    let commit = counter(&members[l], Counter::CommitPosition);
    client.offer(monotonic_ns(), b"order").unwrap();
    wait_for("the write appended", Duration::from_secs(10), || {
        (counter(&members[l], Counter::AppendedPosition) > commit).then_some(())
    });
    let before = counter(&members[l], Counter::ImpossibleMessagesRefused);
    for _ in 0..20 {
        for &f in &followers {
            for d in false_positions(term, f as u32) {
                spoof.send(addr(&addrs[f]), addr(&addrs[l]), &d);
            }
        }
    }
    wait_for(
        "the leader to refuse the false positions (or stop leading)",
        Duration::from_secs(10),
        || {
            (counter(&members[l], Counter::ImpossibleMessagesRefused) - before >= 80
                || counter(&members[l], Counter::Role) != 2)
                .then_some(())
        },
    );
    assert_eq!(
        counter(&members[l], Counter::CommitPosition),
        commit,
        "nothing commits without a quorum"
    );
    let mut early = Vec::new();
    client.poll(monotonic_ns(), |e| {
        if let ClientEvent::Applied { sequence } = e {
            early.push(sequence);
        }
    });
    assert!(early.is_empty(), "acknowledged without a quorum: {early:?}");

    // With the followers back, the write commits and every node holds the same state.
    for &f in &followers {
        members[f].start();
    }
    let mut applied = 0;
    wait_for("the write acknowledged", Duration::from_secs(30), || {
        client.poll(monotonic_ns(), |e| {
            if let ClientEvent::Applied { sequence } = e {
                assert!(acked.insert(sequence), "{sequence} acknowledged twice");
                applied += 1;
            }
        });
        (applied == 1).then_some(())
    });
    stream(&mut client, &mut acked, 250);
    wait_for(
        "every member to apply every acknowledged write",
        Duration::from_secs(20),
        || {
            members
                .iter()
                .all(|m| counter(m, Counter::AppliedMessages) == acked.len() as u64)
                .then_some(())
        },
    );
    assert!(all_running(&mut members), "every node is up");
    for m in &mut members {
        m.stop();
    }
}
