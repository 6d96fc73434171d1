//! Scenario tests: each drives members by hand and asserts the exact actions produced. Names
//! follow the Raft paper sections (and Aeron's election states) they check.

use super::core::{FLAG_GAP, FLAG_RECONCILED};
use super::*;
use crate::codec::message::{
    AppendDataHeader, AppendPosition, CanvassPosition, NewLeadershipTerm, RequestVote, Vote,
};

const MS: u64 = 1_000_000;

fn config(id: MemberId, n: u32) -> ConsensusConfig {
    let mut c = ConsensusConfig::new(id, n);
    c.leader_heartbeat_interval_ns = 10 * MS;
    c.leader_heartbeat_timeout_ns = 100 * MS;
    c.election_timeout_ns = 50 * MS;
    c.startup_canvass_timeout_ns = 150 * MS;
    c
}

fn member(id: MemberId, n: u32, vote: VoteState, log: LogState) -> Consensus {
    let mut c = Consensus::new(config(id, n), vote, log).unwrap();
    c.start(0);
    c
}

fn actions(c: &mut Consensus) -> Vec<Action> {
    let mut out = Vec::new();
    c.take_actions(&mut out);
    out
}

fn log(appended: u64, terms: &[(u64, u64)]) -> LogState {
    LogState {
        appended,
        durable: appended,
        terms: terms
            .iter()
            .map(|&(term, start_position)| TermEntry {
                term,
                start_position,
            })
            .collect(),
        promised: (0, 0),
        start: 0,
    }
}

fn canvass(from: MemberId, log_term: u64, position: u64, term: u64) -> Message<'static> {
    Message::CanvassPosition(CanvassPosition {
        log_leadership_term_id: log_term,
        log_position: position,
        leadership_term_id: term,
        follower_member_id: from,
    })
}

fn vote(from: MemberId, candidate: MemberId, term: u64, granted: bool) -> Message<'static> {
    Message::Vote(Vote {
        candidate_term_id: term,
        log_leadership_term_id: 0,
        log_position: 0,
        candidate_member_id: candidate,
        follower_member_id: from,
        vote: granted,
    })
}

fn append_position(
    from: MemberId,
    term: u64,
    durable: u64,
    appended: u64,
    flags: u8,
) -> Message<'static> {
    Message::AppendPosition(AppendPosition {
        leadership_term_id: term,
        log_position: durable,
        appended_position: appended,
        follower_member_id: from,
        flags,
    })
}

fn transition(from: State, to: State, reason: Reason, term: u64) -> Action {
    Action::Transition {
        from,
        to,
        reason,
        term,
    }
}

/// Member 0 of 3 wins an election (at 60 ms) with equal logs everywhere.
fn elected_leader(appended: u64, terms: &[(u64, u64)]) -> Consensus {
    let last_term = terms.last().map_or(0, |t| t.0);
    let mut c = member(
        0,
        3,
        VoteState {
            term: last_term,
            voted_for: None,
        },
        log(appended, terms),
    );
    c.on_message(0, 1, &canvass(1, last_term, appended, 0));
    c.on_message(0, 2, &canvass(2, last_term, appended, 0));
    c.on_tick(0);
    c.on_tick(60 * MS);
    let term = c.term();
    c.on_message(60 * MS, 1, &vote(1, 0, term, true));
    assert_eq!(c.state(), State::LeaderLive);
    actions(&mut c);
    c
}

#[test]
fn election_5_2_unanimous_canvass_then_ballot_won_by_quorum() {
    let mut c = member(0, 3, VoteState::default(), log(0, &[]));
    assert_eq!(
        actions(&mut c),
        vec![transition(State::Init, State::Canvass, Reason::Start, 0)]
    );

    c.on_tick(0);
    assert_eq!(
        actions(&mut c),
        vec![
            Action::Send {
                to: 1,
                message: canvass(0, 0, 0, 0)
            },
            Action::Send {
                to: 2,
                message: canvass(0, 0, 0, 0)
            },
        ]
    );

    c.on_message(MS, 1, &canvass(1, 0, 0, 0));
    c.on_message(MS, 2, &canvass(2, 0, 0, 0));
    c.on_tick(MS);
    assert_eq!(
        actions(&mut c),
        vec![transition(
            State::Canvass,
            State::Nominate,
            Reason::CanvassUnanimous,
            0
        )]
    );

    // After the random nomination delay (at most half an election timeout).
    c.on_tick(30 * MS);
    let request = Message::RequestVote(RequestVote {
        log_leadership_term_id: 0,
        log_position: 0,
        candidate_term_id: 1,
        candidate_member_id: 0,
    });
    assert_eq!(
        actions(&mut c),
        vec![
            // The candidate term is durable before any vote request leaves.
            Action::PersistVote(VoteState {
                term: 1,
                voted_for: Some(0)
            }),
            transition(
                State::Nominate,
                State::CandidateBallot,
                Reason::NominationDelay,
                1
            ),
            Action::Send {
                to: 1,
                message: request
            },
            Action::Send {
                to: 2,
                message: request
            },
        ]
    );

    c.on_message(31 * MS, 2, &vote(2, 0, 1, true));
    let got = actions(&mut c);
    assert_eq!(
        got[0],
        transition(
            State::CandidateBallot,
            State::LeaderLive,
            Reason::BallotWon,
            1
        )
    );
    assert_eq!(
        got[1],
        Action::StartTerm {
            term: 1,
            position: 0,
            leader: 0
        }
    );
    assert!(matches!(
        got[2],
        Action::Send {
            to: 1,
            message: Message::NewLeadershipTerm(_)
        }
    ));
    assert!(matches!(
        got[3],
        Action::Send {
            to: 2,
            message: Message::NewLeadershipTerm(_)
        }
    ));
    assert_eq!(got.len(), 4);
    assert_eq!(c.leader_term(), Some(1));
}

#[test]
fn election_ballot_any_explicit_no_is_a_veto() {
    let mut c = member(0, 3, VoteState::default(), log(0, &[]));
    c.on_message(0, 1, &canvass(1, 0, 0, 0));
    c.on_message(0, 2, &canvass(2, 0, 0, 0));
    c.on_tick(0);
    c.on_tick(30 * MS);
    assert_eq!(c.state(), State::CandidateBallot);
    actions(&mut c);
    c.on_message(31 * MS, 1, &vote(1, 0, 1, false));
    assert_eq!(
        actions(&mut c),
        vec![transition(
            State::CandidateBallot,
            State::Canvass,
            Reason::BallotVetoed,
            1
        )]
    );
    // A yes arriving after the veto changes nothing.
    c.on_message(32 * MS, 2, &vote(2, 0, 1, true));
    assert_eq!(c.state(), State::Canvass);
}

#[test]
fn election_5_4_1_a_stale_candidate_is_refused_and_the_refusal_says_why() {
    // Voter 1 has term 2 bytes up to 500; the candidate only term 1 up to 900.
    let mut voter = member(
        1,
        3,
        VoteState {
            term: 2,
            voted_for: None,
        },
        log(500, &[(1, 0), (2, 300)]),
    );
    actions(&mut voter);
    let request = Message::RequestVote(RequestVote {
        log_leadership_term_id: 1,
        log_position: 900,
        candidate_term_id: 3,
        candidate_member_id: 0,
    });
    voter.on_message(MS, 0, &request);
    assert_eq!(
        actions(&mut voter),
        vec![
            // The higher term is adopted (and persisted) even though the vote is refused.
            Action::PersistVote(VoteState {
                term: 3,
                voted_for: None
            }),
            Action::Send {
                to: 0,
                message: Message::Vote(Vote {
                    candidate_term_id: 3,
                    log_leadership_term_id: 2,
                    log_position: 500,
                    candidate_member_id: 0,
                    follower_member_id: 1,
                    vote: false,
                }),
            },
        ]
    );
    assert_eq!(voter.counters().votes_refused, 1);
}

#[test]
fn election_5_2_a_vote_is_durable_before_it_is_sent_and_given_once_per_term() {
    let mut voter = member(
        1,
        3,
        VoteState {
            term: 1,
            voted_for: None,
        },
        log(100, &[(1, 0)]),
    );
    actions(&mut voter);
    let request = |candidate: MemberId| {
        Message::RequestVote(RequestVote {
            log_leadership_term_id: 1,
            log_position: 100,
            candidate_term_id: 2,
            candidate_member_id: candidate,
        })
    };
    voter.on_message(MS, 0, &request(0));
    assert_eq!(
        actions(&mut voter),
        vec![
            Action::PersistVote(VoteState {
                term: 2,
                voted_for: None
            }),
            Action::PersistVote(VoteState {
                term: 2,
                voted_for: Some(0)
            }),
            transition(
                State::Canvass,
                State::FollowerBallot,
                Reason::VoteGranted,
                2
            ),
            Action::Send {
                to: 0,
                message: Message::Vote(Vote {
                    candidate_term_id: 2,
                    log_leadership_term_id: 1,
                    log_position: 100,
                    candidate_member_id: 0,
                    follower_member_id: 1,
                    vote: true,
                }),
            },
        ]
    );
    // A second candidate in the same term is refused.
    voter.on_message(2 * MS, 2, &request(2));
    let got = actions(&mut voter);
    assert!(matches!(
        got.as_slice(),
        [Action::Send {
            to: 2,
            message: Message::Vote(Vote { vote: false, .. })
        }]
    ));
}

#[test]
fn log_5_3_follower_drops_terms_the_new_leader_does_not_have() {
    // Follower: term 1 in [0, 100), term 2 (a failed leader's) in [100, 200). Committed: 80.
    let mut f = member(
        1,
        3,
        VoteState {
            term: 2,
            voted_for: None,
        },
        log(200, &[(1, 0), (2, 100)]),
    );
    actions(&mut f);
    // The leader of term 3 never saw term 2; its term 1 ran to 150.
    let nlt = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 2,
        matched_term_id: 1,
        matched_term_start: 0,
        matched_term_end: 150,
        leadership_term_id: 3,
        term_base_log_position: 150,
        log_position: 190,
        commit_position: 80,
        leader_member_id: 0,
        is_startup: false,
    });
    f.on_message(MS, 0, &nlt);
    assert_eq!(
        actions(&mut f),
        vec![
            Action::PersistVote(VoteState {
                term: 3,
                voted_for: None
            }),
            transition(
                State::Canvass,
                State::FollowerReconcile,
                Reason::NewLeader,
                3
            ),
            Action::Truncate {
                position: 100,
                last_term_kept: 1
            },
            transition(
                State::FollowerReconcile,
                State::FollowerLive,
                Reason::Reconciled,
                3
            ),
            Action::Commit { position: 80 },
            Action::Send {
                to: 0,
                message: append_position(1, 3, 100, 100, FLAG_RECONCILED)
            },
        ]
    );
    assert_eq!(f.last_log_term(), 1);
}

#[test]
fn log_5_3_follower_cuts_a_shared_term_where_the_leader_ended_it() {
    let mut f = member(
        1,
        3,
        VoteState {
            term: 2,
            voted_for: None,
        },
        log(400, &[(1, 0), (2, 100)]),
    );
    actions(&mut f);
    let nlt = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 2,
        matched_term_id: 2,
        matched_term_start: 100,
        matched_term_end: 320,
        leadership_term_id: 4,
        term_base_log_position: 320,
        log_position: 400,
        commit_position: 0,
        leader_member_id: 2,
        is_startup: false,
    });
    f.on_message(MS, 2, &nlt);
    let got = actions(&mut f);
    assert!(
        got.contains(&Action::Truncate {
            position: 320,
            last_term_kept: 2
        }),
        "{got:?}"
    );
}

#[test]
fn log_a_new_leadership_term_never_cuts_the_leaders_current_term() {
    // A delayed answer computed when the leader's term 3 ended at 250 arrives after the
    // follower received more of term 3: nothing is cut.
    let mut f = member(
        1,
        3,
        VoteState {
            term: 3,
            voted_for: None,
        },
        log(400, &[(1, 0), (3, 200)]),
    );
    actions(&mut f);
    let nlt = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 3,
        matched_term_id: 3,
        matched_term_start: 200,
        matched_term_end: 250,
        leadership_term_id: 3,
        term_base_log_position: 200,
        log_position: 250,
        commit_position: 0,
        leader_member_id: 0,
        is_startup: false,
    });
    f.on_message(MS, 0, &nlt);
    let got = actions(&mut f);
    assert!(
        !got.iter().any(|a| matches!(a, Action::Truncate { .. })),
        "{got:?}"
    );
}

#[test]
fn log_an_answer_for_another_log_is_not_acted_on() {
    let mut f = member(
        1,
        3,
        VoteState {
            term: 2,
            voted_for: None,
        },
        log(400, &[(1, 0), (2, 100)]),
    );
    actions(&mut f);
    let nlt = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 1, // computed for a log ending in term 1: not ours
        matched_term_id: 1,
        matched_term_start: 0,
        matched_term_end: 50,
        leadership_term_id: 3,
        term_base_log_position: 300,
        log_position: 300,
        commit_position: 0,
        leader_member_id: 0,
        is_startup: false,
    });
    f.on_message(MS, 0, &nlt);
    let got = actions(&mut f);
    assert!(!got.iter().any(|a| matches!(a, Action::Truncate { .. })));
    assert_eq!(
        got.last(),
        Some(&Action::Send {
            to: 0,
            message: canvass(1, 2, 400, 3)
        })
    );
}

#[test]
fn commit_5_3_is_the_quorum_durable_position_and_never_more() {
    let mut c = elected_leader(0, &[]);
    c.on_appended(MS, 1000);
    c.on_durable(MS, 1000);
    assert_eq!(
        c.commit_position(),
        0,
        "the leader alone is not a quorum of 3"
    );
    c.on_message(2 * MS, 1, &append_position(1, 1, 304, 600, FLAG_RECONCILED));
    assert_eq!(c.commit_position(), 304);
    let got = actions(&mut c);
    assert!(got.contains(&Action::Commit { position: 304 }));
    // The slower follower does not hold commit back once a quorum is past it.
    c.on_message(3 * MS, 2, &append_position(2, 1, 100, 100, FLAG_RECONCILED));
    assert_eq!(c.commit_position(), 304);
    c.on_message(4 * MS, 1, &append_position(1, 1, 904, 1000, 0));
    assert_eq!(c.commit_position(), 904);
}

#[test]
fn commit_5_4_2_only_through_an_entry_of_the_leaders_own_term() {
    // Elected with 504 bytes of term 1: the new term starts at 504.
    let mut c = elected_leader(504, &[(1, 0)]);
    assert_eq!(c.term(), 2);
    c.on_message(MS, 1, &append_position(1, 2, 504, 504, FLAG_RECONCILED));
    assert_eq!(
        c.commit_position(),
        0,
        "504 is all term 1: not committed by counting replicas"
    );
    c.on_appended(2 * MS, 568);
    c.on_durable(2 * MS, 568);
    c.on_message(3 * MS, 1, &append_position(1, 2, 568, 568, 0));
    assert_eq!(c.commit_position(), 568);
}

#[test]
fn replication_catch_up_sends_the_lagging_follower_everything_then_goes_back_n() {
    let mut c = elected_leader(0, &[]);
    let t = 60 * MS; // the election
    c.on_appended(t + MS, 1000);
    actions(&mut c);
    c.on_message(t + 2 * MS, 1, &append_position(1, 1, 0, 0, FLAG_RECONCILED));
    assert_eq!(
        actions(&mut c),
        vec![Action::SendLog {
            to: 1,
            leadership_term_id: 1,
            from: 0,
            to_position: 1000
        }]
    );
    c.on_message(t + 3 * MS, 1, &append_position(1, 1, 400, 400, 0));
    assert!(actions(&mut c).is_empty(), "the rest is still in flight");
    // Nothing more acknowledged for a heartbeat interval: resend from the follower's end.
    c.on_tick(t + 14 * MS);
    let got = actions(&mut c);
    assert!(
        got.contains(&Action::SendLog {
            to: 1,
            leadership_term_id: 1,
            from: 400,
            to_position: 1000
        }),
        "{got:?}"
    );
    assert_eq!(c.counters().resends, 1);
}

#[test]
fn replication_window_bounds_bytes_in_flight_per_follower() {
    let mut c = elected_leader(0, &[]);
    c.on_message(MS, 1, &append_position(1, 1, 0, 0, FLAG_RECONCILED));
    let window = c.config().replication_window_bytes;
    c.on_appended(2 * MS, window + 8);
    let got = actions(&mut c);
    // No more than a window beyond what the follower holds, even if that ends in a frame.
    assert!(got.contains(&Action::SendLog {
        to: 1,
        leadership_term_id: 1,
        from: 0,
        to_position: window
    }));
    c.on_appended(3 * MS, window + 24);
    assert!(
        actions(&mut c)
            .iter()
            .all(|a| !matches!(a, Action::SendLog { to: 1, .. })),
        "window full"
    );
    c.on_message(4 * MS, 1, &append_position(1, 1, 104, 104, 0));
    let got = actions(&mut c);
    assert!(
        got.contains(&Action::SendLog {
            to: 1,
            leadership_term_id: 1,
            from: window,
            to_position: window + 24
        }),
        "{got:?}"
    );
}

#[test]
fn follower_a_gap_asks_the_leader_to_resend_from_its_end() {
    let mut f = member(1, 3, VoteState::default(), log(0, &[]));
    let nlt = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 0,
        matched_term_id: 0,
        matched_term_start: 0,
        matched_term_end: 0,
        leadership_term_id: 1,
        term_base_log_position: 0,
        log_position: 0,
        commit_position: 0,
        leader_member_id: 0,
        is_startup: false,
    });
    f.on_message(MS, 0, &nlt);
    actions(&mut f);
    let data = [0u8; 64];
    let ahead = Message::AppendData {
        header: AppendDataHeader {
            leadership_term_id: 1,
            log_position: 128,
            leader_member_id: 0,
        },
        bytes: &data,
    };
    f.on_message(2 * MS, 0, &ahead);
    assert_eq!(
        actions(&mut f),
        vec![Action::Send {
            to: 0,
            message: append_position(1, 1, 0, 0, FLAG_GAP)
        }]
    );
    let overlapping = Message::AppendData {
        header: AppendDataHeader {
            leadership_term_id: 1,
            log_position: 0,
            leader_member_id: 0,
        },
        bytes: &data,
    };
    f.on_appended(3 * MS, 32);
    f.on_message(3 * MS, 0, &overlapping);
    assert_eq!(actions(&mut f), vec![Action::AppendReceived { skip: 32 }]);
}

#[test]
fn leader_steps_down_when_it_loses_contact_with_a_quorum() {
    let mut c = elected_leader(0, &[]);
    c.on_message(70 * MS, 1, &append_position(1, 1, 0, 0, FLAG_RECONCILED));
    c.on_tick(160 * MS);
    assert_eq!(c.state(), State::LeaderLive, "member 1 was heard 90 ms ago");
    actions(&mut c);
    c.on_tick(171 * MS);
    assert_eq!(
        actions(&mut c),
        vec![transition(
            State::LeaderLive,
            State::Canvass,
            Reason::QuorumLost,
            1
        )]
    );
    assert_eq!(c.leader_term(), None);
}

#[test]
fn partition_healed_a_stale_leader_learns_the_higher_term_and_steps_down() {
    let mut c = elected_leader(0, &[]);
    // The majority elected a leader of term 2 while member 0 was cut off.
    c.on_message(MS, 1, &append_position(1, 2, 0, 0, 0));
    assert_eq!(
        actions(&mut c),
        vec![
            Action::PersistVote(VoteState {
                term: 2,
                voted_for: None
            }),
            transition(State::LeaderLive, State::Canvass, Reason::HigherTerm, 2),
        ]
    );
    // And a stale leader's data is answered with our term, not accepted.
    let mut f = member(
        2,
        3,
        VoteState {
            term: 5,
            voted_for: None,
        },
        log(0, &[]),
    );
    actions(&mut f);
    let stale = Message::AppendData {
        header: AppendDataHeader {
            leadership_term_id: 4,
            log_position: 0,
            leader_member_id: 0,
        },
        bytes: &[0u8; 8],
    };
    f.on_message(MS, 0, &stale);
    assert_eq!(
        actions(&mut f),
        vec![Action::Send {
            to: 0,
            message: canvass(2, 0, 0, 5)
        }]
    );
}

#[test]
fn appointed_leader_is_the_only_member_that_nominates() {
    let mut cfg = config(1, 3);
    cfg.appointed_leader = Some(0);
    let mut c = Consensus::new(cfg, VoteState::default(), log(0, &[])).unwrap();
    c.start(0);
    c.on_message(0, 0, &canvass(0, 0, 0, 0));
    c.on_message(0, 2, &canvass(2, 0, 0, 0));
    c.on_tick(500 * MS);
    assert_eq!(c.state(), State::Canvass);
}

#[test]
fn bad_input_is_dropped_and_counted() {
    let mut c = member(0, 3, VoteState::default(), log(0, &[]));
    actions(&mut c);
    c.on_message(MS, 9, &canvass(9, 0, 0, 0));
    c.on_message(MS, 1, &canvass(2, 0, 0, 0)); // claims to be someone else
    c.on_message(MS, 0, &canvass(0, 0, 0, 0)); // from itself
    assert_eq!(c.counters().messages_dropped, 3);
    assert!(actions(&mut c).is_empty());
}

#[test]
fn config_errors_name_the_key_and_the_range() {
    let mut cfg = config(3, 3);
    assert_eq!(cfg.validate().unwrap_err().key, "cluster.member_id");
    cfg = config(0, 3);
    cfg.leader_heartbeat_timeout_ns = cfg.leader_heartbeat_interval_ns;
    let err = cfg.validate().unwrap_err();
    assert!(
        err.to_string()
            .contains("consensus.leader_heartbeat_timeout_ns"),
        "{err}"
    );
    cfg = config(0, 3);
    cfg.appointed_leader = Some(5);
    assert_eq!(
        cfg.validate().unwrap_err().key,
        "consensus.appointed_leader"
    );
}

#[test]
fn single_member_cluster_elects_itself_and_commits_alone() {
    let mut c = member(0, 1, VoteState::default(), log(0, &[]));
    c.on_tick(0);
    c.on_tick(30 * MS);
    assert_eq!(c.state(), State::LeaderLive);
    c.on_appended(31 * MS, 64);
    c.on_durable(31 * MS, 64);
    assert_eq!(c.commit_position(), 64);
}

fn request_vote(candidate: MemberId, term: u64, log_term: u64, position: u64) -> Message<'static> {
    Message::RequestVote(RequestVote {
        log_leadership_term_id: log_term,
        log_position: position,
        candidate_term_id: term,
        candidate_member_id: candidate,
    })
}

fn granted(actions: &[Action]) -> Option<bool> {
    actions.iter().find_map(|a| match a {
        Action::Send {
            message: Message::Vote(v),
            ..
        } => Some(v.vote),
        _ => None,
    })
}

/// A member whose snapshot was ahead of its cut log owes the snapshot's position (term
/// unknown): it abstains until its log holds that position, and afterwards votes again (it
/// once owed for ever, so a cluster with one other member down could not elect).
#[test]
fn a_promise_of_unknown_term_is_owed_until_the_log_holds_its_position() {
    let owing = |appended: u64| {
        let mut state = log(appended, &[(1, 0), (3, 400)]);
        state.promised = (u64::MAX, 800);
        let mut c = member(
            1,
            3,
            VoteState {
                term: 3,
                voted_for: None,
            },
            state,
        );
        actions(&mut c);
        c
    };
    let mut cut = owing(500);
    assert!(cut.owes_log());
    cut.on_message(MS, 0, &request_vote(0, 4, 3, 2000));
    assert_eq!(
        granted(&actions(&mut cut)),
        None,
        "abstains: no vote, no veto"
    );

    let mut repaired = owing(1000);
    assert!(
        !repaired.owes_log(),
        "the log holds the snapshot's position again"
    );
    repaired.on_message(MS, 0, &request_vote(0, 4, 3, 2000));
    assert_eq!(granted(&actions(&mut repaired)), Some(true));
}

/// Found by the simulator (seed 20228): a follower whose whole log is committed meets a new
/// leader whose term history starts later (it installed a snapshot) and knows none of the
/// follower's terms. The leader's answer, read as a match, would cut committed bytes; the
/// follower refused it and waited for ever. It keeps its committed bytes and reports its end,
/// so the leader sends it the snapshot.
#[test]
fn log_a_leader_without_the_history_never_makes_a_follower_cut_committed_bytes() {
    let mut f = member(
        1,
        3,
        VoteState {
            term: 2,
            voted_for: None,
        },
        log(200, &[(1, 0), (2, 100)]),
    );
    // Leader 0 of term 2 reconciles it and commits everything it holds.
    let nlt2 = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 2,
        matched_term_id: 2,
        matched_term_start: 100,
        matched_term_end: 200,
        leadership_term_id: 2,
        term_base_log_position: 100,
        log_position: 200,
        commit_position: 200,
        leader_member_id: 0,
        is_startup: false,
    });
    f.on_message(MS, 0, &nlt2);
    assert_eq!(f.commit_position(), 200);
    actions(&mut f);
    // Leader 2 of term 5 restarted its log from a snapshot at 4096: it knows no term before.
    let nlt5 = Message::NewLeadershipTerm(NewLeadershipTerm {
        log_leadership_term_id: 2,
        matched_term_id: 0,
        matched_term_start: 0,
        matched_term_end: 4096,
        leadership_term_id: 5,
        term_base_log_position: 4096,
        log_position: 5000,
        commit_position: 5000,
        leader_member_id: 2,
        is_startup: false,
    });
    f.on_message(2 * MS, 2, &nlt5);
    let out = actions(&mut f);
    assert!(
        !out.iter().any(|a| matches!(a, Action::Truncate { .. })),
        "committed bytes kept: {out:?}"
    );
    assert!(
        out.contains(&Action::Send {
            to: 2,
            message: append_position(1, 5, 200, 200, FLAG_RECONCILED)
        }),
        "it reports its end to the leader, which sends its snapshot from there: {out:?}"
    );
    assert_eq!(f.state(), State::FollowerLive);
    assert_eq!(f.last_log_term(), 2);
}
