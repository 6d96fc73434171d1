//! What the fuzz targets (`fuzz/`, cargo-fuzz on nightly) run, shared with their proptest
//! twins in `cargo test`: the node's receive path, and every format the engine reads back
//! from disk. Each entry point takes arbitrary bytes and panics only on a finding: a panic
//! inside the engine, or a recovered state that contradicts what was reported durable.

use crate::codec::frame::{self, FRAME_LEN_MAX};
use crate::codec::{FrameMeta, Frames};
use crate::consensus::ConsensusConfig;
use crate::io::{Disk, CLIENT_ENDPOINT_BASE};
use crate::log::{Durability, Log, LogConfig, LogError, TermIndex};
use crate::node::{Node, NodeConfig};
use crate::service::echo::EchoService;
use crate::service::{snapshot, Applier};
use crate::sim::disk::{SimDisk, SimDiskConfig};
use crate::sim::net::SimEndpoint;

const MS: u64 = 1_000_000;

/// Reads the fuzz input front to back; past its end every read is zero.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.bytes.split_first().unwrap_or((&0, &[]));
        self.bytes = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A frame type the node knows (most of the time) or any number.
fn frame_type(b: u8) -> u16 {
    const KNOWN: [u16; 27] = [
        1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 32, 33, 34, 35, 36,
        37, 48, 99,
    ];
    KNOWN[b as usize % KNOWN.len()]
}

/// Member 0 of a three-member cluster, fed datagrams from the other two members and from
/// clients. Each datagram holds well-formed frames (valid length and checksum) whose types,
/// header fields and bodies come from the input, so the fuzzer works on what the node
/// believes, not on getting past the checksum; one in eight is raw bytes instead. The clock
/// moves as the input says. Any panic, or a node that stops, is a finding.
pub fn node_receive(data: &[u8]) {
    let mut input = Input { bytes: data };
    let mut consensus = ConsensusConfig::new(0, 3);
    consensus.leader_heartbeat_interval_ns = 10 * MS;
    consensus.leader_heartbeat_timeout_ns = 100 * MS;
    consensus.election_timeout_ns = 50 * MS;
    consensus.startup_canvass_timeout_ns = 50 * MS;
    consensus.replication_window_bytes = 64 << 10;
    consensus.seed = u64::from(input.u8());
    let config = NodeConfig {
        consensus,
        log: LogConfig {
            segment_bytes: 64 << 10,
            write_bytes_max: 64 << 10,
            durability: Durability::Fdatasync,
        },
        snapshot_interval_bytes: 16 << 10,
        session_timeout_ns: 200 * MS,
        recover_vote: false,
        sessions: Default::default(),
        max_install_bytes: 1 << 20,
    };
    let disk = SimDisk::new(u64::from(input.u8()), SimDiskConfig::default());
    let applier = Applier::new(EchoService::default());
    let mut node =
        Node::open(config, disk, SimEndpoint::default(), applier, 0).expect("a fresh node opens");
    let mut now = 0u64;
    let mut buf = vec![0u8; 70_000];
    while !input.is_empty() {
        let op = input.u8();
        if op % 4 == 0 {
            now += u64::from(input.u8()) * MS / 4 + 1;
        } else {
            let from = match input.u8() % 6 {
                0 | 1 => 1,
                2 | 3 => 2,
                4 => CLIENT_ENDPOINT_BASE,
                _ => CLIENT_ENDPOINT_BASE + u32::from(input.u8()),
            };
            let mut datagram = Vec::new();
            if op % 8 == 7 {
                let n = input.u16() as usize % 2048;
                datagram.extend_from_slice(input.take(n));
            } else {
                for _ in 0..1 + op as usize % 3 {
                    let meta = FrameMeta {
                        frame_type: frame_type(input.u8()),
                        flags: 0,
                        // Small terms mostly, so messages meet the node's own terms.
                        term: match input.u8() {
                            250..=255 => input.u64(),
                            t => u64::from(t % 8),
                        },
                        session_id: u64::from(input.u8() % 4),
                        timestamp_ns: now,
                    };
                    let len = (input.u16() as usize).min(FRAME_LEN_MAX - frame::HEADER_LEN);
                    let payload = input.take(len.min(4096));
                    let n = frame::encode_into(&meta, payload, &mut buf);
                    datagram.extend_from_slice(&buf[..n]);
                }
            }
            node.net_mut().deliver(from, datagram);
        }
        now += 100_000;
        node.log_mut().disk_mut().advance_to(now);
        node.tick(now)
            .unwrap_or_else(|e| panic!("the node stopped on network input: {e}"));
        node.net_mut().outgoing.clear();
        let commit = node.commit_position();
        let applied = node.applier().applied_position();
        assert!(
            applied <= commit.max(node.log().start_position()),
            "applied {applied} beyond the commit position {commit}"
        );
    }
}

/// The durable positions a log reported, the newest and the one before it.
#[derive(Default)]
struct Durables {
    newest: u64,
    before: u64,
}

impl Durables {
    fn note(&mut self, durable: u64) {
        if durable > self.newest {
            self.before = self.newest;
            self.newest = durable;
        }
    }
}

/// A log written and made durable (sealed, or cut by a crash), then damaged as the input says:
/// bits flipped at any offset of any file (segments with their tail slots, the vote, the term
/// index, the promise), or whole files lost. Recovery may refuse (an error naming the
/// damage) but never panics; when it opens the log, the log's end or its promise covers every
/// byte that was durable, and what it holds reads back as whole frames.
pub fn log_recovery(data: &[u8]) {
    let mut input = Input { bytes: data };
    let config = LogConfig {
        segment_bytes: 64 << 10,
        write_bytes_max: 16 << 10,
        durability: Durability::Fdatasync,
    };
    let seed = u64::from(input.u8());
    // Up to about three 64 KiB segments.
    let frames = 1 + input.u8() as usize % 96;
    let len = 8 + input.u16() as usize % 2000;
    let crash = input.u8() % 2 == 0;
    let (mut log, _) = Log::open(SimDisk::new(seed, SimDiskConfig::default()), config.clone())
        .expect("a fresh log opens");
    log.append_term(1, 0).expect("term");
    let payload = vec![0x5au8; len];
    let mut durables = Durables::default();
    for i in 0..frames as u64 {
        let meta = FrameMeta {
            frame_type: crate::codec::FrameType::SessionMessage as u16,
            term: 1,
            session_id: i,
            ..FrameMeta::default()
        };
        loop {
            match log.append(&meta, &payload) {
                Ok(_) => break,
                Err(LogError::Full { .. }) => {
                    log.do_work().expect("writes");
                    log.disk_mut().wait().expect("completes");
                    log.do_work().expect("writes");
                    durables.note(log.durable_position());
                }
                Err(e) => panic!("append: {e}"),
            }
        }
        log.do_work().expect("writes");
        durables.note(log.durable_position());
    }
    let durable = if crash {
        log.disk_mut().wait().expect("completes");
        log.do_work().expect("writes");
        durables.note(log.durable_position());
        log.durable_position()
    } else {
        log.seal().expect("seals");
        log.appended_position()
    };
    let mut disk = log.into_disk();
    if crash {
        disk.crash();
    }
    let mut lost_files = false;
    let mut newest_slot_hit = false;
    while !input.is_empty() {
        let names = disk.file_names();
        if names.is_empty() {
            break;
        }
        let name = names[input.u8() as usize % names.len()].clone();
        match input.u8() {
            255 => {
                disk.lose(&name);
                lost_files = true;
            }
            bit => {
                let file_len = disk.durable_image(&name).map_or(0, |b| b.len() as u64);
                let offset = u64::from(input.u32()) % file_len.max(1);
                // Known gap: after a crash, the tail slot of the last round alone says where
                // the log ends, and a flip in it cannot be told from that write being torn by
                // the crash (both leave an invalid slot). Such a flip may still cost durable
                // bytes; the check below is skipped for it (see issue 13's note).
                // (That slot is in the newest segment file, or in the one before when the last
                // round ended exactly at a segment's end.)
                let mut segments: Vec<&String> =
                    names.iter().filter(|n| n.ends_with(".seg")).collect();
                segments.sort();
                let last_two = &segments[segments.len().saturating_sub(2)..];
                let base = name
                    .strip_suffix(".seg")
                    .and_then(|n| n.parse::<u64>().ok());
                if crash && last_two.contains(&&name) && offset >= config.segment_bytes {
                    newest_slot_hit = true;
                }
                // Likewise the data of that last round: a crash may tear it while its slot
                // lands, so damage there reads as a torn tail.
                if crash
                    && offset < config.segment_bytes
                    && base.is_some_and(|b| b + offset >= durables.before)
                {
                    newest_slot_hit = true;
                }
                disk.corrupt(&name, offset, bit);
            }
        }
    }
    match Log::open(disk, config) {
        Ok((mut log, report)) => {
            let recovered = report.recovered_position;
            let promised = log.promise().map_or(0, |p| p.position);
            if !lost_files && !newest_slot_hit {
                assert!(
                    recovered >= durable || promised >= durable,
                    "recovered {recovered}, promised {promised}, but {durable} was durable"
                );
            }
            let start = log.start_position();
            let mut bytes = vec![0u8; (log.appended_position() - start) as usize];
            log.read(start, &mut bytes)
                .expect("the recovered log reads");
            let mut end = 0;
            for item in Frames::new(&bytes) {
                let (at, frame) = item.expect("the recovered log holds only whole frames");
                end = at + frame.encoded_len();
            }
            assert_eq!(start + end as u64, log.appended_position());
        }
        Err(e) => assert!(
            matches!(e, LogError::Corrupt { .. } | LogError::Io { .. }),
            "recovery failed with {e}"
        ),
    }
}

/// The small records (vote, term index) through their two slots, and the snapshot file:
/// arbitrary bytes never panic the readers, and what they accept re-encodes to itself.
pub fn records_and_snapshots(data: &[u8]) {
    use crate::io::record::{newest, parse_slot};
    let mut input = Input { bytes: data };
    let split = input.u16() as usize;
    let rest = input.take(usize::MAX);
    let (a, b) = rest.split_at(split.min(rest.len()));
    if let Ok(Some((_, value))) = newest([parse_slot(a), parse_slot(b)]) {
        if let Some(vote) = crate::node::decode_vote(&value) {
            assert_eq!(crate::node::encode_vote(vote), value);
        }
        let _ = TermIndex::decode(&value);
    }
    for bytes in [a, b, rest] {
        if let Some(vote) = crate::node::decode_vote(bytes) {
            assert_eq!(crate::node::encode_vote(vote), bytes);
        }
        let _ = TermIndex::decode(bytes);
        if let Ok(view) = snapshot::decode(bytes) {
            assert_eq!(
                snapshot::encode(
                    view.position,
                    view.log_hash,
                    view.digest,
                    view.engine,
                    view.service
                ),
                bytes,
                "a snapshot that decodes re-encodes to the same bytes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn node_receive_twin(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::node_receive(&data);
        }

        #[test]
        fn log_recovery_twin(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            super::log_recovery(&data);
        }

        #[test]
        fn records_and_snapshots_twin(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::records_and_snapshots(&data);
        }
    }
}
