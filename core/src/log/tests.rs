//! Log tests against a model: layout, padding, truncation, recovery, and crashes at every step
//! of a write sequence on the simulated disk.

use super::*;
use crate::codec::{Frames, HEADER_LEN};
use crate::rng::Rng;
use crate::sim::disk::{SimDisk, SimDiskConfig};
use proptest::prelude::*;

const SEGMENT: u64 = 64 << 10;

fn small_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT,
        write_bytes_max: 16 << 10,
        durability,
    }
}

fn meta(i: u64) -> FrameMeta {
    FrameMeta {
        frame_type: FrameType::SessionMessage as u16,
        flags: 0,
        term: 1,
        session_id: i,
        timestamp_ns: i * 10,
    }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// A frame as the model knows it.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    position: u64,
    session_id: u64,
    payload: Vec<u8>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{}@{}({}B)",
            self.session_id,
            self.position,
            self.payload.len()
        )
    }
}

/// Non-padding frames in the log, with their positions; panics if the log holds a bad frame.
fn frames_of(log: &mut Log<SimDisk>) -> Vec<Entry> {
    let start = log.start_position();
    let mut bytes = vec![0u8; (log.appended_position() - start) as usize];
    log.read(start, &mut bytes).unwrap();
    let mut out = Vec::new();
    let mut end = 0;
    for item in Frames::new(&bytes) {
        let (at, frame) = item.expect("log holds only valid frames");
        end = at + frame.encoded_len();
        if frame.meta.frame_type != FrameType::Padding as u16 {
            out.push(Entry {
                position: start + at as u64,
                session_id: frame.meta.session_id,
                payload: frame.payload.to_vec(),
            });
        }
    }
    assert_eq!(
        start + end as u64,
        log.appended_position(),
        "frames end exactly at the appended position"
    );
    out
}

fn append_retrying(log: &mut Log<SimDisk>, i: u64, len: usize) -> u64 {
    let data = payload(i, len);
    for _ in 0..10_000 {
        match log.append(&meta(i), &data) {
            Ok(p) => return p,
            Err(LogError::Full { .. }) => {
                log.do_work().unwrap();
                log.disk_mut().wait().unwrap();
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
    panic!("append never found room: the writer is stuck");
}

fn flush_all(log: &mut Log<SimDisk>) {
    let end = log.appended_position();
    log.flush_to(end).unwrap();
    assert_eq!(log.durable_position(), end);
}

fn reopen(log: Log<SimDisk>, config: &LogConfig) -> (Log<SimDisk>, RecoveryReport) {
    let mut disk = log.into_disk();
    disk.crash(); // with everything flushed, a crash loses nothing
    Log::open(disk, config.clone()).unwrap()
}

#[test]
fn empty_log_opens_at_zero_and_reopens_empty() {
    let config = small_config(Durability::Fdatasync);
    let (log, report) =
        Log::open(SimDisk::new(1, SimDiskConfig::default()), config.clone()).unwrap();
    assert_eq!(report.recovered_position, 0);
    let (mut log, report) = reopen(log, &config);
    assert_eq!(report.recovered_position, 0);
    assert!(frames_of(&mut log).is_empty());
}

#[test]
fn appended_frames_read_back_and_survive_reopen() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(2, SimDiskConfig::default()), config.clone()).unwrap();
    let mut model = Vec::new();
    for i in 0..500u64 {
        let len = (i as usize * 37) % 900;
        let position = append_retrying(&mut log, i, len);
        assert_eq!(position % FRAME_ALIGNMENT as u64, 0);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, len),
        });
        if i % 7 == 0 {
            log.do_work().unwrap();
        }
    }
    assert_eq!(frames_of(&mut log), model, "read before durable");
    flush_all(&mut log);
    assert!(
        log.appended_position() > 3 * SEGMENT,
        "the test crosses segments"
    );
    assert_eq!(frames_of(&mut log), model);
    let (mut log, report) = reopen(log, &config);
    let last = model.last().unwrap();
    assert_eq!(
        report.recovered_position,
        last.position + codec::encoded_len(last.payload.len()) as u64
    );
    assert_eq!(frames_of(&mut log), model);
}

#[test]
fn no_frame_straddles_a_segment_and_no_gap_is_smaller_than_a_header() {
    let config = small_config(Durability::None);
    let (mut log, _) =
        Log::open(SimDisk::new(3, SimDiskConfig::default()), config.clone()).unwrap();
    let mut rng = Rng::new(3);
    for i in 0..2000u64 {
        let len = rng.below(2000) as usize;
        let p = append_retrying(&mut log, i, len);
        let end = p + codec::encoded_len(len) as u64;
        assert_eq!(
            p / SEGMENT,
            (end - 1) / SEGMENT,
            "frame at {p} straddles a segment"
        );
        let left = SEGMENT - end % SEGMENT;
        assert!(
            left == SEGMENT || left >= HEADER_LEN as u64,
            "gap of {left} bytes at {end}"
        );
    }
}

#[test]
fn oversized_frames_and_bad_config_are_refused_with_names() {
    let config = small_config(Durability::None);
    let (mut log, _) =
        Log::open(SimDisk::new(4, SimDiskConfig::default()), config.clone()).unwrap();
    let max = config.frame_len_max();
    let err = log.append(&meta(1), &vec![0; max]).unwrap_err();
    assert!(matches!(err, LogError::FrameTooLarge { .. }), "{err}");
    assert!(log.append(&meta(1), &vec![0; max - HEADER_LEN]).is_ok());

    let bad = LogConfig {
        segment_bytes: 100_000,
        ..config.clone()
    };
    let err = Log::open(SimDisk::new(4, SimDiskConfig::default()), bad)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("log.segment_bytes = 100000"),
        "{err}"
    );
    let bad = LogConfig {
        write_bytes_max: 1000,
        ..config
    };
    let err = bad.validate().unwrap_err();
    assert!(err.to_string().contains("log.write_bytes_max"), "{err}");
}

#[test]
fn full_staging_is_back_pressure_not_loss() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) = Log::open(SimDisk::new(5, SimDiskConfig::default()), config).unwrap();
    let mut accepted = 0u64;
    loop {
        match log.append(&meta(accepted), &payload(accepted, 500)) {
            Ok(_) => accepted += 1,
            Err(LogError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(accepted > 10);
    assert_eq!(log.stats().full_rejections, 1);
    flush_all(&mut log);
    assert_eq!(frames_of(&mut log).len() as u64, accepted);
    assert!(
        log.append(&meta(0), &[1]).is_ok(),
        "room again after the write"
    );
}

#[test]
fn truncate_drops_the_suffix_durably_and_appends_continue() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(6, SimDiskConfig::default()), config.clone()).unwrap();
    let mut model = Vec::new();
    for i in 0..400u64 {
        let len = 100 + (i as usize % 13) * 50;
        let position = append_retrying(&mut log, i, len);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, len),
        });
    }
    flush_all(&mut log);
    log.append_term(1, 0).unwrap();
    log.append_term(2, model[120].position).unwrap();
    log.append_term(3, model[150].position).unwrap();
    // Truncate into an earlier segment than the active one, mid-block.
    let cut = model[150].position;
    assert!(cut / SEGMENT < log.appended_position() / SEGMENT);
    log.truncate(cut).unwrap();
    model.truncate(150);
    assert_eq!(log.appended_position(), cut);
    assert_eq!(
        log.term_index().entries().len(),
        2,
        "term 3 began at the cut, so it holds no bytes and goes"
    );
    let cut = model[100].position;
    log.truncate(cut).unwrap();
    model.truncate(100);
    assert_eq!(frames_of(&mut log), model);
    assert_eq!(
        log.term_index().entries().len(),
        1,
        "term 2 began after the new cut"
    );
    for i in 1000..1100u64 {
        let position = append_retrying(&mut log, i, 300);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, 300),
        });
    }
    flush_all(&mut log);
    let (mut log, _) = reopen(log, &config);
    assert_eq!(frames_of(&mut log), model);
}

#[test]
fn replicated_bytes_are_checked_before_they_are_accepted() {
    let config = small_config(Durability::None);
    let (mut leader, _) =
        Log::open(SimDisk::new(7, SimDiskConfig::default()), config.clone()).unwrap();
    let (mut follower, _) = Log::open(SimDisk::new(8, SimDiskConfig::default()), config).unwrap();
    for i in 0..300u64 {
        append_retrying(&mut leader, i, 333);
        flush_all(&mut leader);
    }
    let mut position = 0;
    let mut chunk = vec![0u8; 4000];
    while position < leader.appended_position() {
        // Send whole frames only: find the last frame boundary in the chunk.
        let n = leader.read(position, &mut chunk).unwrap();
        let mut whole = 0;
        for (at, f) in Frames::new(&chunk[..n]).map_while(Result::ok) {
            if at + f.encoded_len() <= n {
                whole = at + f.encoded_len();
            }
        }
        let mut damaged = chunk[..whole].to_vec();
        damaged[whole / 2] ^= 0x40;
        let err = follower.append_raw(position, &damaged).unwrap_err();
        assert!(matches!(err, LogError::BadReplicatedBytes { .. }), "{err}");
        assert!(matches!(
            follower.append_raw(position + 8, &chunk[..whole]),
            Err(LogError::NotAtEnd { .. })
        ));
        follower.append_raw(position, &chunk[..whole]).unwrap();
        follower.flush_to(position + whole as u64).unwrap();
        position += whole as u64;
    }
    assert_eq!(frames_of(&mut follower), frames_of(&mut leader));
}

#[test]
fn retire_and_reset_take_segments_out_and_the_log_reopens_where_it_restarted() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(11, SimDiskConfig::default()), config.clone()).unwrap();
    log.append_term(1, 0).unwrap();
    for i in 0..400u64 {
        append_retrying(&mut log, i, 400);
    }
    flush_all(&mut log);
    let retired = log.retire_before(2 * SEGMENT + 100).unwrap();
    assert_eq!(retired.len(), 2);
    assert!(retired.iter().all(|n| n.starts_with(RETIRED_PREFIX)));
    assert_eq!(log.start_position(), 2 * SEGMENT);
    // A follower far behind restarts its log at the leader's start, taking its term history.
    let terms = vec![
        TermEntry {
            term: 1,
            start_position: 0,
        },
        TermEntry {
            term: 3,
            start_position: 3 * SEGMENT + 64,
        },
    ];
    let retired = log.reset_to(5 * SEGMENT, terms.clone()).unwrap();
    assert!(!retired.is_empty());
    assert_eq!(
        (
            log.start_position(),
            log.appended_position(),
            log.durable_position()
        ),
        (5 * SEGMENT, 5 * SEGMENT, 5 * SEGMENT)
    );
    assert_eq!(log.term_index().entries(), &terms[..]);
    let mut model = Vec::new();
    for i in 0..100u64 {
        let position = append_retrying(&mut log, i, 300);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, 300),
        });
    }
    flush_all(&mut log);
    assert_eq!(model[0].position, 5 * SEGMENT);
    let (mut log, report) = reopen(log, &config);
    assert_eq!(report.start_position, 5 * SEGMENT);
    assert_eq!(frames_of(&mut log), model);
    assert_eq!(log.term_index().entries(), &terms[..]);
    // An empty restarted log keeps the terms of what came before it, across a restart too.
    log.reset_to(8 * SEGMENT, terms.clone()).unwrap();
    let (log, _) = reopen(log, &config);
    assert_eq!(log.appended_position(), 8 * SEGMENT);
    assert_eq!(log.term_index().entries(), &terms[..]);
}

#[test]
fn purge_recycles_whole_segments_before_a_position() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(9, SimDiskConfig::default()), config.clone()).unwrap();
    let mut model = Vec::new();
    for i in 0..600u64 {
        let position = append_retrying(&mut log, i, 400);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, 400),
        });
    }
    flush_all(&mut log);
    let purged = log.purge_before(2 * SEGMENT + 100).unwrap();
    assert_eq!(purged, 2);
    assert_eq!(log.start_position(), 2 * SEGMENT);
    model.retain(|e| e.position >= 2 * SEGMENT);
    assert_eq!(frames_of(&mut log), model);
    // Spares become the next segments.
    for i in 600..1200u64 {
        let position = append_retrying(&mut log, i, 400);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, 400),
        });
    }
    flush_all(&mut log);
    assert_eq!(log.stats().segments_recycled, 2);
    let (mut log, report) = reopen(log, &config);
    assert_eq!(report.start_position, 2 * SEGMENT);
    assert_eq!(frames_of(&mut log), model);
}

#[test]
fn a_write_error_stops_the_writer_naming_file_and_position_and_keeps_durable_bytes() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(10, SimDiskConfig::default()), config.clone()).unwrap();
    for i in 0..50u64 {
        append_retrying(&mut log, i, 200);
    }
    flush_all(&mut log);
    let durable = log.durable_position();
    let before = frames_of(&mut log);
    log.disk_mut().fail_writes_with(Some(crate::io::errno::EIO));
    append_retrying(&mut log, 99, 200);
    let err = log.flush_to(log.appended_position()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("00000000000000000000.seg") && text.contains("position"),
        "{text}"
    );
    assert!(text.contains("errno 5"), "{text}");
    assert_eq!(log.durable_position(), durable);
    assert!(matches!(
        log.append(&meta(1), &[1]),
        Err(LogError::Stopped(_))
    ));
    let mut disk = log.into_disk();
    disk.fail_writes_with(None);
    disk.crash();
    let (mut log, report) = Log::open(disk, config).unwrap();
    assert_eq!(report.recovered_position, durable);
    assert_eq!(frames_of(&mut log), before);
}

#[test]
fn a_full_disk_at_segment_creation_is_an_error_naming_the_segment() {
    let config = small_config(Durability::Fdatasync);
    let capacity = 2 * (SEGMENT + 4 * BLOCK_LEN as u64) + 100;
    let disk = SimDisk::new(
        11,
        SimDiskConfig {
            capacity_bytes: capacity,
            ..SimDiskConfig::default()
        },
    );
    let (mut log, _) = Log::open(disk, config).unwrap();
    let err = loop {
        match log.append(&meta(1), &[7; 1000]) {
            Ok(_) => {}
            Err(LogError::Full { .. }) => {}
            Err(e) => break e,
        }
        if let Err(e) = log.do_work() {
            break e;
        }
        log.disk_mut().wait().unwrap();
    };
    let text = err.to_string();
    assert!(
        text.contains("00000000000000131072.seg") && text.contains("No space left"),
        "{text}"
    );
    assert_eq!(
        log.durable_position(),
        2 * SEGMENT,
        "both segments filled and durable before the error"
    );
}

/// One seeded workload that crashes the disk after `crash_after` loop steps, recovers, checks,
/// and repeats for `cycles` crashes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CrashKind {
    PowerLoss,
    Process,
}

fn crash_run(seed: u64, crash_after: &[u64], durability: Durability, kind: CrashKind) {
    // Durability::None promises nothing across a power loss but a clean prefix.
    let durable_promised = durability == Durability::Fdatasync || kind == CrashKind::Process;
    let config = small_config(durability);
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new(
        seed,
        SimDiskConfig {
            torn_probability: 0.5,
            ..SimDiskConfig::default()
        },
    );
    let (mut log, _) = Log::open(disk, config.clone()).unwrap();
    let mut model: Vec<Entry> = Vec::new();
    let mut reported_durable = 0u64;
    let mut next_id = 0u64;
    for &steps in crash_after {
        for _ in 0..steps {
            let now = log.disk().now_ns();
            for _ in 0..rng.below(4) {
                let len = match rng.below(10) {
                    0 => rng.below(4000) as usize,
                    _ => rng.below(300) as usize,
                };
                match log.append(&meta(next_id), &payload(next_id, len)) {
                    Ok(position) => model.push(Entry {
                        position,
                        session_id: next_id,
                        payload: payload(next_id, len),
                    }),
                    Err(LogError::Full { .. }) => {}
                    Err(e) => panic!("seed {seed}: {e}"),
                }
                next_id += 1;
            }
            if rng.below(40) == 0 && !model.is_empty() {
                // A follower dropping an uncommitted suffix: never below what a real cluster
                // would have committed; here any frame boundary after the first half.
                let keep = model.len() / 2 + rng.below((model.len() / 2 + 1) as u64) as usize;
                if let Some(cut) = model.get(keep).map(|e| e.position) {
                    log.truncate(cut).unwrap();
                    model.truncate(keep);
                    reported_durable = reported_durable.min(cut);
                }
            }
            log.do_work().unwrap();
            reported_durable = reported_durable.max(log.durable_position());
            log.disk_mut().advance_to(now + rng.range(0, 150_000));
        }
        // Crash now, at whatever point the writer is in.
        let mut disk = log.into_disk();
        match kind {
            CrashKind::PowerLoss => disk.crash(),
            CrashKind::Process => disk.crash_process(),
        }
        let (recovered, report) = Log::open(disk, config.clone()).unwrap();
        log = recovered;
        let got = frames_of(&mut log);
        assert!(
            !durable_promised || report.recovered_position >= reported_durable,
            "seed {seed}: recovered {} < reported durable {reported_durable}",
            report.recovered_position
        );
        assert!(
            got.len() <= model.len(),
            "seed {seed}: recovered frames that were never appended"
        );
        assert_eq!(
            got[..],
            model[..got.len()],
            "seed {seed}: recovered log is not a prefix of the appended one"
        );
        model.truncate(got.len());
        reported_durable = log.durable_position();
    }
}

#[test]
fn crash_at_every_step_keeps_every_durable_position_and_accepts_nothing_torn() {
    for seed in 0..12 {
        for step in 0..120 {
            crash_run(
                seed * 1000 + step,
                &[step, 37, 11, 80],
                Durability::Fdatasync,
                CrashKind::PowerLoss,
            );
        }
    }
}

#[test]
fn a_process_crash_loses_nothing_that_was_written() {
    for seed in 0..300 {
        crash_run(
            seed,
            &[seed % 90, 50, 20, 33],
            Durability::None,
            CrashKind::Process,
        );
        crash_run(
            seed,
            &[seed % 90, 50, 20, 33],
            Durability::Fdatasync,
            CrashKind::Process,
        );
    }
}

#[test]
fn power_loss_without_fsync_still_recovers_a_clean_prefix() {
    for seed in 0..300 {
        crash_run(
            seed,
            &[seed % 90, 50, 20, 33],
            Durability::None,
            CrashKind::PowerLoss,
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model: any sequence of appends, writes, truncations and clean reopens leaves
    /// exactly the frames the model holds, at the positions the log returned.
    #[test]
    fn log_matches_model(ops in proptest::collection::vec((0u8..10, 0usize..3000), 1..300), seed in 0u64..1000) {
        let config = small_config(Durability::Fdatasync);
        let (mut log, _) = Log::open(SimDisk::new(seed, SimDiskConfig::default()), config.clone()).unwrap();
        let mut model: Vec<Entry> = Vec::new();
        for (i, (op, n)) in ops.into_iter().enumerate() {
            let i = i as u64;
            match op {
                0..=5 => {
                    let position = append_retrying(&mut log, i, n);
                    model.push(Entry { position, session_id: i, payload: payload(i, n) });
                }
                6 | 7 => { log.do_work().unwrap(); log.disk_mut().wait().unwrap(); }
                8 => {
                    if !model.is_empty() {
                        let keep = n % model.len();
                        log.truncate(model[keep].position).unwrap();
                        model.truncate(keep);
                    }
                }
                _ => {
                    flush_all(&mut log);
                    log = reopen(log, &config).0;
                }
            }
        }
        prop_assert_eq!(frames_of(&mut log), model);
    }
}

#[test]
fn spares_made_elsewhere_become_segments_without_creating_files() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(12, SimDiskConfig::default()), config.clone()).unwrap();
    assert_eq!(
        log.missing_segments(1),
        1,
        "the next segment does not exist yet"
    );
    assert_eq!(
        log.prepare_segments_from_spares(1).unwrap(),
        0,
        "nothing to rename: nothing made"
    );
    // Another thread made a zero-filled file of the right length.
    let len = log.segment_file_len();
    let f = log.disk_mut().open("spare-x1.seg", Some(len)).unwrap();
    log.disk_mut().close(f);
    log.add_spare("spare-x1.seg".into());
    assert_eq!(log.missing_segments(1), 0);
    assert_eq!(log.prepare_segments_from_spares(1).unwrap(), 1);
    let mut model = Vec::new();
    for i in 0..300u64 {
        let position = append_retrying(&mut log, i, 400);
        model.push(Entry {
            position,
            session_id: i,
            payload: payload(i, 400),
        });
    }
    flush_all(&mut log);
    assert!(
        log.appended_position() > SEGMENT,
        "rolled into the prepared segment"
    );
    assert_eq!(log.stats().segments_recycled, 1);
    let (mut log, _) = reopen(log, &config);
    assert_eq!(frames_of(&mut log), model);
}

/// A log of `n` frames of `len` bytes, all durable, sealed as an orderly stop does.
fn durable_log(seed: u64, n: u64, len: usize) -> (Log<SimDisk>, LogConfig) {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(seed, SimDiskConfig::default()), config.clone()).unwrap();
    log.append_term(1, 0).unwrap();
    for i in 0..n {
        append_retrying(&mut log, i, len);
    }
    log.seal().unwrap();
    (log, config)
}

fn flip(disk: &mut SimDisk, position: u64) {
    let base = position - position % SEGMENT;
    assert!(disk.corrupt(&segment_name(base), position - base, 3));
}

#[test]
fn corruption_below_the_durable_end_is_reported_and_promised_not_cut_silently() {
    let (log, config) = durable_log(31, 40, 500);
    let end = log.appended_position();
    let mut disk = log.into_disk();
    // In the active (last) segment, well below the end both slots vouch for.
    let at = end - 3000;
    flip(&mut disk, at);
    let (log, report) = Log::open(disk, config.clone()).unwrap();
    let damage = report
        .damage
        .expect("corruption below the durable end is reported");
    assert!(
        damage.position <= at && damage.position > at - 600,
        "{damage:?}"
    );
    assert_eq!(damage.promised, end);
    assert_eq!(damage.file, segment_name(end - end % SEGMENT));
    assert_eq!(report.recovered_position, damage.position);
    assert_eq!(
        log.promise(),
        Some(Promise {
            term: 1,
            position: end
        })
    );
    // The promise survives another restart (and a crash).
    let (log, report) = reopen(log, &config);
    assert!(report.damage.is_none(), "nothing new is damaged");
    assert_eq!(log.promise().map(|p| p.position), Some(end));
}

#[test]
fn corruption_in_an_earlier_segment_is_found_at_start_and_the_log_ends_before_it() {
    let (log, config) = durable_log(32, 300, 500);
    let end = log.appended_position();
    assert!(end > 2 * SEGMENT, "the log spans three segments");
    let mut disk = log.into_disk();
    flip(&mut disk, 1000);
    let (mut log, report) = Log::open(disk, config).unwrap();
    let damage = report
        .damage
        .expect("an earlier segment is verified at start");
    assert_eq!(damage.file, segment_name(0));
    assert!(damage.position <= 1000);
    assert_eq!(damage.promised, end);
    assert_eq!(log.appended_position(), damage.position);
    // What is left reads back as whole frames, and appends go on from there.
    let kept = frames_of(&mut log);
    assert!(kept.iter().all(|e| e.position < damage.position));
    append_retrying(&mut log, 999, 100);
    flush_all(&mut log);
}

#[test]
fn a_deleted_newest_segment_is_corruption_below_the_durable_end_not_a_shorter_log() {
    let (log, config) = durable_log(32, 300, 500);
    let end = log.appended_position();
    let newest = end - end % SEGMENT;
    assert!(newest >= 2 * SEGMENT, "the log spans three segments");
    let mut disk = log.into_disk();
    for name in disk.file_names() {
        if name.ends_with(".seg") && name >= segment_name(newest) {
            disk.lose(&name);
        }
    }
    let (log, report) = Log::open(disk, config.clone()).unwrap();
    let damage = report
        .damage
        .expect("a vanished segment is damage, not a torn tail");
    assert!(damage.file.contains(&segment_name(newest)) && damage.file.contains("missing"));
    assert_eq!(
        log.appended_position(),
        newest,
        "the log ends where the files end"
    );
    assert_eq!(
        damage.promised,
        newest + SEGMENT,
        "it may have vouched for all of it"
    );
    assert!(log.promise().is_some_and(|p| p.position >= end));

    // The promise is durable: a second start still owes it, and says so without a new damage.
    let (log, report) = Log::open(log.into_disk(), config).unwrap();
    assert!(report.damage.is_none());
    assert!(log.promise().is_some_and(|p| p.position >= end));
}

#[test]
fn a_torn_last_round_is_not_corruption() {
    // Rounds that crash before they complete tear only what was never reported durable.
    for seed in 0..40 {
        let config = small_config(Durability::Fdatasync);
        let (mut log, _) =
            Log::open(SimDisk::new(seed, SimDiskConfig::default()), config.clone()).unwrap();
        for i in 0..30 {
            append_retrying(&mut log, i, 700);
            log.do_work().unwrap();
        }
        let durable = log.durable_position();
        let mut disk = log.into_disk();
        disk.crash();
        let (_, report) = Log::open(disk, config).unwrap();
        assert!(report.damage.is_none(), "seed {seed}: {:?}", report.damage);
        assert!(report.recovered_position >= durable);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any bit flipped anywhere in any segment: recovery never panics, never ends the log
    /// below a vouched position without a promise covering what was durable, and what it keeps
    /// is whole frames.
    #[test]
    fn any_flip_is_recovered_without_loss_of_the_promise(
        seed in 0u64..1000, n in 1u64..200, at in 0u64..(3 * SEGMENT + 2 * 2 * 4096), bit in 0u8..8
    ) {
        let (log, config) = durable_log(seed, n, 400);
        let end = log.appended_position();
        let mut disk = log.into_disk();
        let base = at - at % (SEGMENT + 4 * 4096);
        let name = segment_name(base / (SEGMENT + 4 * 4096) * SEGMENT);
        disk.corrupt(&name, at - base, bit);
        match Log::open(disk, config) {
            Ok((mut log, report)) => {
                let recovered = report.recovered_position;
                let promised = log.promise().map_or(0, |p| p.position);
                prop_assert!(recovered >= end || promised >= end,
                    "recovered {} promised {} of {}", recovered, promised, end);
                frames_of(&mut log);
            }
            // A damaged slot may leave nothing to vouch with: refused, never a silent cut.
            Err(e) => prop_assert!(matches!(e, LogError::Corrupt { .. }), "{}", e),
        }
    }
}

#[test]
fn a_lost_term_index_is_rebuilt_from_the_log_not_the_log_discarded() {
    let config = small_config(Durability::Fdatasync);
    let (mut log, _) =
        Log::open(SimDisk::new(41, SimDiskConfig::default()), config.clone()).unwrap();
    for (term, n) in [(1u64, 20u64), (3, 30), (4, 10)] {
        let start = log.appended_position();
        log.append_term(term, start).unwrap();
        for i in 0..n {
            let meta = FrameMeta { term, ..meta(i) };
            log.append(&meta, &payload(i, 300)).unwrap();
            log.do_work().unwrap();
            log.disk_mut().wait().unwrap();
        }
    }
    log.seal().unwrap();
    let before = log.term_index().entries().to_vec();
    let end = log.appended_position();
    let mut disk = log.into_disk();
    disk.remove_record(TERM_INDEX_FILE);
    let (log, report) = Log::open(disk, config).unwrap();
    assert_eq!(report.recovered_position, end, "the log is kept");
    assert_eq!(report.terms_rebuilt.as_deref(), Some("missing"));
    assert_eq!(log.term_index().entries(), &before[..]);
}
