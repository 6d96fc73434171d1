//! The simulator in the test suite: fixed seeds, each run twice with equal digests, and
//! proof that the checkers catch deliberately broken rules.

use super::cluster::{run_seed, run_seed_twice, SimConfig};
use crate::client::BrokenClientRule;
use crate::consensus::BrokenRule;

fn seeds(range: std::ops::Range<u64>) {
    for seed in range {
        if let Err(v) = run_seed_twice(&SimConfig::new(seed)) {
            panic!(
                "{v}\nreplay: cargo run --release -p raftline --features sim --bin raftline-sim -- --seed {seed} --trace"
            );
        }
    }
}

#[test]
fn simulator_seeds_0_to_125() {
    seeds(0..125);
}

#[test]
fn simulator_seeds_125_to_250() {
    seeds(125..250);
}

#[test]
fn simulator_seeds_250_to_375() {
    seeds(250..375);
}

#[test]
fn simulator_seeds_375_to_500() {
    seeds(375..500);
}

/// Seeds that once failed, kept as regressions: 24 (a snapshot install gave the follower only
/// the last term before the leader's log start, so a later reconciliation cut below its applied
/// position), 2596 (the checker anchored a retired log's hashes on a prefix that was never
/// applied), 9688 (a truncation after an install, with the applier ahead of the log), 28320 (a
/// follower that missed a term between two of its own kept bytes of its term where the leader
/// had the missed term: reconciliation matched its last term to one it never had); with the
/// hostile and storage faults: 452 (a forged AppendData left a follower reconciling with a
/// member that never led), 11964 (a forged durable report put the commit position inside a
/// frame), 32 (recovery could not vouch for a completed round whose successor's slot write a
/// crash interrupted), 97 (a damaged member's refusal vetoed the only electable candidate),
/// 6243 (a damaged member held the best surviving log; a rule that released its promise on
/// others' canvass reports was later dropped as unsafe with stale reports: 2624), 233 (a second
/// damage before the first was repaired), 806 and 864 (a lost term index on a log just after
/// a snapshot install), 56 and 80 (a windowed send after a snapshot install), 46 (a leader
/// whose history starts later matched a term this log has only before its start), 2624 (a
/// member whose snapshot was ahead of its cut log led: the snapshot position is promised too),
/// 932 and 5206 (reconciliation asked a member to cut bytes its service had applied from a
/// snapshot, at start and after an install).
#[test]
fn simulator_regression_seeds() {
    for seed in [
        24, 32, 46, 56, 80, 97, 233, 452, 806, 864, 932, 2596, 5206, 2624, 6243, 9688, 11964, 28320,
    ] {
        seeds(seed..seed + 1);
    }
}

/// Seeds that once failed with the shipped client protocol and no member on the dedicated-mode
/// apply path: 1918 (a leader whose session open was cut by a truncation took the client's
/// connects as an open under way for ever), 20228 (a follower whose whole log was committed met
/// a leader whose term history started after it, refused the cut its answer implied, and waited
/// for ever), 12688 (the same refusal on a member that knew no term of its bytes: its term
/// index, lost, was rebuilt from a log whose term events lay before its start). And 2996 with
/// both paths drawn (a member split after its applier's start never
/// fired timers restored from its snapshot).
#[test]
fn simulator_regression_seeds_of_the_shipped_paths() {
    for (seed, client_core, remote_apply) in [
        (1918, Some(true), Some(false)),
        (20228, Some(true), Some(false)),
        (12688, None, None),
        (2996, None, None),
        // A snapshot ahead of a corruption-cut log replaced a longer promise.
        (53990, None, None),
    ] {
        let config = SimConfig {
            client_core,
            remote_apply,
            ..SimConfig::new(seed)
        };
        run_seed_twice(&config).unwrap_or_else(|v| panic!("{v}"));
    }
}

/// The first seed below `limit` on which the simulator reports a violation.
fn first_violation(rule: BrokenRule, limit: u64) -> Option<String> {
    (0..limit).find_map(|seed| {
        let config = SimConfig {
            broken_rule: Some(rule),
            ..SimConfig::new(seed)
        };
        run_seed(&config).err().map(|v| v.to_string())
    })
}

#[test]
fn checkers_have_teeth_commit_without_quorum() {
    let found = first_violation(BrokenRule::CommitWithoutQuorum, 200);
    assert!(
        found.is_some(),
        "committing without a quorum went unnoticed for 200 seeds"
    );
}

#[test]
fn checkers_have_teeth_ignore_logs_in_election() {
    let found = first_violation(BrokenRule::IgnoreLogsInElection, 200);
    assert!(
        found.is_some(),
        "electing stale logs went unnoticed for 200 seeds"
    );
}

#[test]
fn checkers_have_teeth_trust_peer_positions() {
    let found = first_violation(BrokenRule::TrustPeerPositions, 200);
    assert!(
        found.is_some(),
        "a leader believing forged follower positions went unnoticed for 200 seeds"
    );
}

/// The hostile fault reaches the members and their checks refuse what it forges.
#[test]
fn hostile_network_is_injected_and_refused() {
    let (mut injected, mut refused) = (0, 0);
    for seed in 0..40 {
        let outcome = run_seed(&SimConfig::new(seed)).unwrap_or_else(|v| panic!("{v}"));
        injected += outcome.hostile_injected;
        refused += outcome.messages_refused;
    }
    assert!(
        injected > 100,
        "only {injected} hostile datagrams in 40 seeds"
    );
    assert!(
        refused > 20,
        "only {refused} of {injected} hostile datagrams refused"
    );
}

/// The old recovery (cut the log at the first bad frame and carry on as if nothing had
/// been promised) loses acknowledged writes under the storage fault.
#[test]
fn checkers_have_teeth_forget_damage() {
    let found = first_violation(BrokenRule::ForgetDamage, 300);
    assert!(
        found.is_some(),
        "a member forgetting what corruption cut went unnoticed for 300 seeds"
    );
}

/// The old record loading (a damaged slot passed over, the other slot's older value taken)
/// lets a member take back a vote it may have cast.
#[test]
fn checkers_have_teeth_pass_over_damaged_slot() {
    let found = first_violation(BrokenRule::PassOverDamagedSlot, 400);
    assert!(
        found.as_deref().is_some_and(|v| v.contains("vote")),
        "a member passing over a damaged vote slot went unnoticed for 400 seeds: {found:?}"
    );
}

/// A client that resends under a new sequence number makes the cluster apply one message twice
/// (it cannot tell the resend from a new message); the exactly-once checker sees it.
#[test]
fn checkers_have_teeth_resend_with_new_sequence() {
    let found = (0..50).find_map(|seed| {
        let config = SimConfig {
            broken_client_rule: Some(BrokenClientRule::ResendWithNewSequence),
            ..SimConfig::new(seed)
        };
        run_seed(&config)
            .err()
            .filter(|v| v.invariant == "client exactly-once")
    });
    assert!(
        found.is_some(),
        "a client resending under new sequence numbers went unnoticed by the exactly-once checker for 50 seeds"
    );
}

/// Both kinds of simulated client run: the shipped client protocol over datagrams through the
/// nodes' door in a share of the seeds, direct offers in the others, and both get every
/// message acknowledged.
#[test]
fn the_shipped_client_protocol_is_simulated() {
    let outcomes: Vec<_> = (0..12)
        .map(|seed| run_seed(&SimConfig::new(seed)).unwrap_or_else(|v| panic!("{v}")))
        .collect();
    let through_core = outcomes
        .iter()
        .filter(|o| o.client_core_acknowledged > 0)
        .count();
    assert!(
        (3..=9).contains(&through_core),
        "{through_core} of 12 seeds used the client protocol"
    );
    for o in &outcomes {
        assert_eq!(o.acknowledged, 3 * 60, "seed {}", o.seed);
    }
}

/// The dedicated-mode apply path (the node's `RemoteApplier` feeding a `ServiceHost`) runs in a
/// share of the seeds, installs and restarts included, and its services apply the messages.
#[test]
fn the_dedicated_mode_apply_path_is_simulated() {
    let remote: u64 = (0..30)
        .map(|seed| {
            run_seed(&SimConfig::new(seed))
                .unwrap_or_else(|v| panic!("{v}"))
                .remote_applied
        })
        .sum();
    assert!(
        remote > 1000,
        "only {remote} messages applied through the dedicated-mode path in 30 seeds"
    );
}

/// The storage fault reaches the disks and recovery finds it below the durable end.
#[test]
fn storage_corruption_is_injected() {
    let corruptions: u64 = (0..40)
        .map(|seed| {
            run_seed(&SimConfig::new(seed))
                .unwrap_or_else(|v| panic!("{v}"))
                .corruptions
        })
        .sum();
    assert!(
        corruptions > 20,
        "only {corruptions} corruptions in 40 seeds"
    );
}

/// A message far larger than a datagram: 1 MiB through 1472-byte datagrams, replicated in
/// pieces that the followers join again, with a little loss, duplication and reordering.
#[test]
fn a_one_mib_message_crosses_ethernet_sized_datagrams() {
    use super::cluster::Faults;
    let config = SimConfig {
        members: 3,
        clients: 1,
        messages_per_client: 3,
        message_bytes: 1 << 20,
        max_datagram: 1472,
        segment_bytes: 8 << 20,
        faults: Some(Faults {
            loss: 0.01,
            duplication: 0.01,
            delay_max_ms: 2,
            crash_per_step: 0.0,
            partition_per_step: 0.0,
            clock_step_per_step: 0.0,
            transfer_per_step: 0.0,
        }),
        ..SimConfig::new(7)
    };
    let outcome = run_seed(&config).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(outcome.acknowledged, 3);
    assert!(outcome.committed_position > 3 << 20, "{outcome:?}");
}
