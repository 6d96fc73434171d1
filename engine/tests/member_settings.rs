//! Members whose settings must agree but do not: one of three `raftline node` processes has
//! another `log.segment_mib`. Both sides say so once, naming the key and both values, count
//! every refused frame, and the two that agree commit on without it.

mod common;
use common::members::{client, cluster, leader, stream, wait_for};

use std::collections::BTreeSet;
use std::time::Duration;

use raftline::runtime::counters::Counter;

#[test]
fn a_member_with_another_segment_size_is_refused_loudly_and_the_others_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut members, addrs) = cluster(tmp.path(), "");
    let odd = &members[2].config;
    let text = std::fs::read_to_string(odd).unwrap();
    std::fs::write(odd, text.replace("segment_mib = 1", "segment_mib = 2")).unwrap();
    for m in &mut members {
        m.start();
    }

    let l = wait_for("a leader", Duration::from_secs(20), || leader(&members));
    assert_ne!(l, 2, "the odd member cannot lead: no one agrees with it");
    let mut c = client(&addrs);
    let mut acked = BTreeSet::new();
    stream(&mut c, &mut acked, 50);

    let refused = |i: usize| {
        members[i]
            .counters()
            .map_or(0, |r| r.get(Counter::MemberSettingsDiffer))
    };
    wait_for("the refusals counted", Duration::from_secs(10), || {
        (refused(0) > 0 && refused(1) > 0 && refused(2) > 0).then_some(())
    });
    let odd = members[2].counters().unwrap();
    assert_eq!(
        odd.get(Counter::AppliedMessages),
        0,
        "the odd member applied nothing"
    );
    assert!(odd.get(Counter::MemberFramesUnagreed) > 0);

    let said = members[2].said();
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("settings differ"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("log.segment_mib") && l.contains("has 1, this member 2")),
        "the odd member names the key and both values:\n{said}"
    );
    assert!(
        lines.len() <= 2,
        "said once per peer, not per datagram:\n{said}"
    );
    for (i, m) in members.iter().enumerate().take(2) {
        let said = m.said();
        assert!(
            said.lines()
                .any(|l| l.contains("settings differ") && l.contains("log.segment_mib")),
            "member {i} names the key:\n{said}"
        );
    }
}
