//! Member authentication on real `raftline node` processes: a process at a member's own
//! address without the cluster's key (an impostor, or a member with a wrong key) is believed
//! in nothing; the members with the key go on committing; with the key it joins.

mod common;
use common::members::{client, cluster, leader, stream, wait_for};

use std::collections::BTreeSet;
use std::time::Duration;

use raftline::runtime::counters::Counter;

#[test]
fn a_member_without_the_key_is_refused_and_the_keyed_members_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("member.key");
    let wrong = tmp.path().join("wrong.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::write(&wrong, "c3".repeat(32)).unwrap();
    let extra = format!("[transport]\nmember_key_file = \"{}\"\n", key.display());
    let (mut members, addrs) = cluster(tmp.path(), &extra);
    // Member 2 holds another key: everything it sends is refused, everything it hears too.
    let config = std::fs::read_to_string(&members[2].config).unwrap();
    std::fs::write(
        &members[2].config,
        config.replace(&key.display().to_string(), &wrong.display().to_string()),
    )
    .unwrap();
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 200);
    let l = wait_for("a leader", Duration::from_secs(10), || leader(&members));
    assert_ne!(l, 2, "the member without the key cannot lead");
    let refused = |m: &common::members::Member| {
        m.counters()
            .map_or(0, |c| c.get(Counter::MemberSealsRefused))
    };
    wait_for("refusals counted", Duration::from_secs(10), || {
        (refused(&members[0]) > 0 && refused(&members[1]) > 0 && refused(&members[2]) > 0)
            .then_some(())
    });
    let applied =
        |m: &common::members::Member| m.counters().map_or(0, |c| c.get(Counter::AppliedMessages));
    assert_eq!(
        applied(&members[2]),
        0,
        "nothing from the keyed members was believed"
    );

    // With the key, member 2 joins and catches up.
    members[2].stop();
    std::fs::write(&members[2].config, config).unwrap();
    members[2].start();
    stream(&mut client, &mut acked, 220);
    wait_for(
        "member 2 to apply everything",
        Duration::from_secs(20),
        || (applied(&members[2]) == 220).then_some(()),
    );
    for m in &mut members {
        m.stop();
    }
    for m in &members[..2] {
        assert!(
            !m.said().contains("not authenticated"),
            "keyed members do not warn"
        );
    }
}

#[test]
fn a_node_without_a_key_says_its_members_are_unauthenticated() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, addrs) = cluster(tmp.path(), "");
    for m in &mut members {
        m.start();
    }
    let mut client = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut client, &mut acked, 20);
    for m in &mut members {
        m.stop();
    }
    assert!(members[0].said().contains("members are not authenticated"));
}
