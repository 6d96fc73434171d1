//! Starting a node: opening its log and vote record, refusing what it cannot vouch for (a damaged
//! vote, a log that starts after the service's state), and handing consensus what recovery
//! found. It never starts a member that could vote twice in a term or lead with less than it
//! acknowledged.

use super::*;

pub(crate) fn encode_vote(v: VoteState) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&v.term.to_le_bytes());
    out.extend_from_slice(&v.voted_for.map_or(u64::MAX, u64::from).to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_vote(bytes: &[u8]) -> Option<VoteState> {
    if bytes.len() != 20
        || crc32c::crc32c(&bytes[..16]) != u32::from_le_bytes(bytes[16..].try_into().ok()?)
    {
        return None;
    }
    let term = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    let voted = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    // Intact is not true: a member id that fits no member is refused, not read as "no vote".
    let voted_for = match voted {
        u64::MAX => None,
        v => Some(u32::try_from(v).ok()?),
    };
    Some(VoteState { term, voted_for })
}

/// What a starting member owes before it may lead or vote for another log (see
/// `LogState::promised`), from the log's promise (term, end) and the position the service's
/// snapshot reached (`fed`), which may be ahead of a log that corruption cut.
///
/// A snapshot ahead of the log holds committed bytes whose last term is not known here; it is
/// owed as `(u64::MAX, fed)` (no vote, no candidacy until the log holds `fed` again). But only
/// if it reaches further than the log's promise: a promise `(t, p)` with `p >= fed` already
/// covers the snapshot (a log at least `(t, p)` holds the committed bytes up to `fed`), and it
/// also covers what this member acknowledged beyond the snapshot, which `(u64::MAX, fed)` does
/// not. Comparing the two as tuples would always pick the unknown term and forget the longer
/// promise (simulator seed 53990: a member that had acknowledged (34, 202736) and held a
/// snapshot at 126544 voted for a log of (34, 126544) that lacked committed bytes).
pub(crate) fn vouched_promise(promise: Option<(u64, u64)>, fed: u64, appended: u64) -> (u64, u64) {
    let promise = promise.unwrap_or((0, 0));
    if fed > appended && fed > promise.1 {
        (u64::MAX, fed)
    } else {
        promise
    }
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    /// Opens the log (recovering it), loads the vote, and starts the first election.
    pub fn open(
        config: NodeConfig,
        disk: D,
        net: N,
        applier: A,
        now: u64,
    ) -> Result<Self, NodeError> {
        let (mut log, report) = Log::open(disk, config.log.clone())?;
        let id = config.consensus.member_id;
        let mut recovery_notes = Vec::new();
        if let Some(why) = &report.terms_rebuilt {
            recovery_notes.push(format!(
                "raftline: member {id}: the term index was {why}; rebuilt from the log's frames ({} terms)",
                log.term_index().entries().len()
            ));
        }
        if let Some(why) = &report.reach_rebuilt {
            recovery_notes.push(format!(
                "raftline: member {id}: the log's reach record was unreadable ({why}); rewritten from the segment files (a segment deleted together with it would go unnoticed)"
            ));
        }
        if let Some(d) = &report.damage {
            recovery_notes.push(format!(
                "raftline: member {id}: log corruption in {} at position {}, below the end {} it had reported durable (term {}): not a torn tail. The log now ends at {}; this member will not lead, and votes only for a log of at least (term {}, {}), until a leader has replicated the range back",
                d.file, d.position, d.promised, d.term, report.recovered_position, d.term, d.promised
            ));
        } else if let Some(p) = log.promise().filter(|p| {
            let last_term = log.term_index().last().map_or(0, |t| t.term);
            (last_term, log.appended_position()) < (p.term, p.position)
        }) {
            recovery_notes.push(format!(
                "raftline: member {id}: still repairing an earlier log corruption: the log ends at {}, it had vouched for (term {}, {})",
                log.appended_position(), p.term, p.position
            ));
        }
        let loaded = match log.disk_mut().load_record(VOTE_FILE) {
            Ok(Some(bytes)) => match decode_vote(&bytes) {
                None => Err("bad length, checksum or member id".to_string()),
                Some(v)
                    if v.voted_for.is_some_and(|m| {
                        m >= config.consensus.member_count && m != VOTE_RECOVERING
                    }) =>
                {
                    Err(format!(
                        "a vote for member {}, but the cluster has {} members",
                        v.voted_for.unwrap_or_default(),
                        config.consensus.member_count
                    ))
                }
                Some(v) => Ok(v),
            },
            Ok(None) => Err("no record".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let last_term = log.term_index().last().map_or(0, |t| t.term);
        let log_empty = log.appended_position() == 0 && last_term == 0;
        let vote = match loaded {
            Ok(vote) => vote,
            Err(_) if log_empty => VoteState::default(),
            Err(why) if !config.recover_vote => {
                return Err(NodeError::VoteMissing {
                    why,
                    log_end: log.appended_position(),
                    last_term,
                })
            }
            Err(why) => {
                let vote = VoteState {
                    term: last_term,
                    voted_for: Some(VOTE_RECOVERING),
                };
                log.disk_mut()
                    .store_record(VOTE_FILE, &encode_vote(vote))
                    .map_err(NodeError::Vote)?;
                recovery_notes.push(format!(
                    "raftline: member {id}: vote record lost ({why}); recovering it: no vote in any election until every other member has been heard from, then only in terms above every term they announce"
                ));
                vote
            }
        };
        if log.start_position() > applier.fed_position() {
            // The bytes between the service's state and the log's first segment are nowhere:
            // an earlier segment file is gone (or every snapshot that covered it is damaged).
            return Err(NodeError::LogBehindSnapshot {
                start: log.start_position(),
                first: crate::log::segment_name(log.start_position()),
                service: applier.fed_position(),
            });
        }
        let state = LogState {
            appended: log.appended_position(),
            durable: log.durable_position(),
            terms: log.term_index().entries().to_vec(),
            promised: vouched_promise(
                log.promise().map(|p| (p.term, p.position)),
                applier.fed_position(),
                log.appended_position(),
            ),
            // Bytes the service has applied (from a snapshot, possibly ahead of the log) are
            // committed: no reconciliation may cut them.
            start: log.start_position().max(applier.fed_position()),
        };
        // A window smaller than the largest frame could never carry that frame whole.
        let mut consensus_config = config.consensus.clone();
        consensus_config.replication_window_bytes = consensus_config
            .replication_window_bytes
            .max(2 * log.config().frame_len_max() as u64);
        let mut consensus = Consensus::new(consensus_config, vote, state)?;
        if vote.voted_for == Some(VOTE_RECOVERING) {
            consensus.recover_vote();
        }
        let frame_max = log.config().frame_len_max();
        let frame_payload_max = frame_max - codec::HEADER_LEN - SessionMessageHeader::LEN;
        let service_base = applier.fed_position();
        let mut node = Self {
            id: config.consensus.member_id,
            in_flight: in_flight::InFlight::default(),
            identity: identity::Identity::new(
                config.consensus.member_id,
                config.consensus.member_count,
                log.config().segment_bytes,
                frame_max as u64,
                config.consensus.leader_heartbeat_interval_ns,
            ),
            log,
            consensus,
            net,
            applier,
            due: Vec::new(),
            actions: Vec::new(),
            send_buf: vec![0u8; frame_max.max(APPEND_CHUNK_BYTES) + 4096],
            recv_buf: vec![0u8; frame_max.max(APPEND_CHUNK_BYTES) + 4096],
            read_buf: Vec::new(),
            egress: Vec::new(),
            last_timestamp_ns: 0,
            commit: 0,
            failed: None,
            stats: NodeStats {
                log_damage_found: report.damage.is_some() as u64,
                ..NodeStats::default()
            },
            stages: Default::default(),
            collect_egress: false,
            log_transitions: false,
            timers_appended: HashMap::new(),
            snapshot_interval_bytes: config.snapshot_interval_bytes,
            last_snapshot_action: 0,
            digest_checks: Vec::new(),
            last_leader: None,
            shutdown: None,
            snapshot_durable: None,
            recovery_notes,
            snapshots_seen: (0, 0),
            retired: Vec::new(),
            install_source: None,
            installs: HashMap::new(),
            incoming: None,
            partial: None,
            service_base,
            sent_to: HashMap::new(),
            sessions: Default::default(),
            limits: SessionLimits {
                max_message_bytes: config.sessions.max_message_bytes.min(frame_payload_max),
                ..config.sessions
            },
            access: Access::open(),
            next_refusal_note_ns: [0; 3],
            max_install_bytes: config.max_install_bytes,
            session_timeout_ns: config.session_timeout_ns,
            next_session_check_ns: 0,
        };
        let mut open = Vec::new();
        node.applier.open_sessions(&mut open);
        for session in open {
            node.sessions.opened(session, now);
        }
        node.consensus.start(now);
        node.run_actions(now, None)?;
        Ok(node)
    }
}

#[cfg(test)]
mod vote_record_tests {
    use super::*;

    #[test]
    fn a_snapshot_ahead_of_a_cut_log_never_weakens_a_longer_promise() {
        // Seed 53990: promised (34, 202736), snapshot at 126544, log cut to 101984.
        assert_eq!(
            vouched_promise(Some((34, 202_736)), 126_544, 101_984),
            (34, 202_736)
        );
        // The snapshot reaches further than the promise: owed with its term unknown.
        assert_eq!(
            vouched_promise(Some((5, 89_856)), 126_544, 101_984),
            (u64::MAX, 126_544)
        );
        assert_eq!(vouched_promise(None, 126_544, 101_984), (u64::MAX, 126_544));
        // A log that holds the snapshot's bytes owes only its promise.
        assert_eq!(
            vouched_promise(Some((5, 89_856)), 126_544, 130_000),
            (5, 89_856)
        );
        assert_eq!(vouched_promise(None, 0, 0), (0, 0));
    }

    #[test]
    fn a_vote_record_round_trips_and_an_intact_record_naming_no_member_is_refused() {
        for v in [
            VoteState::default(),
            VoteState {
                term: 7,
                voted_for: Some(2),
            },
            VoteState {
                term: 9,
                voted_for: Some(VOTE_RECOVERING),
            },
        ] {
            assert_eq!(decode_vote(&encode_vote(v)), Some(v));
        }
        // Found by the records_and_snapshots fuzz target: a checksum-valid record whose member
        // id fits no u32 was read as "no vote in this term".
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_vote(&bytes), None);
    }
}
