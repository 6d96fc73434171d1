//! Counters in a memory-mapped file per node, readable live by `raftline stat <dir>` (like
//! AeronStat) while the node runs.
//!
//! ```text
//! file "counters", 4 KiB: [ magic u64 | version u64 | pid u64 | counter[0] u64 | counter[1] ... ]
//! ```
//!
//! The node stores each counter with a Relaxed atomic store once per duty cycle; a reader
//! loads them with Relaxed loads. Values are individually consistent, not a snapshot.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::node::stages::{Stage, STAGES, STAGE_BUCKETS};

const MAGIC: u64 = u64::from_le_bytes(*b"RLNCNTR1");
const FILE_LEN: usize = 4096;
const HEADER_WORDS: usize = 3;

/// Every counter, in file order. Appending is compatible; reordering is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// 0 follower, 1 candidate, 2 leader.
    Role,
    Term,
    Leader,
    AppendedPosition,
    DurablePosition,
    CommitPosition,
    AppliedPosition,
    ServiceDigest,
    ElectionsStarted,
    Leaderships,
    Truncations,
    FramesMalformed,
    MessagesDropped,
    DatagramsReceived,
    DatagramsSent,
    ForeignDatagramsDropped,
    ClientRequests,
    ClientRedirects,
    ClientBackPressure,
    DutyCycles,
    MaxCycleNs,
    StallCycles,
    AppliedMessages,
    LogRounds,
    ReplicatedAppendsRefused,
    ReplicationResends,
    RingRecordsSent,
    RingRecordsReceived,
    RingFullDropped,
    SnapshotsTaken,
    DigestMismatches,
    LogStartPosition,
    SnapshotsSent,
    SnapshotsInstalled,
    MemberSealsRefused,
    MemberReplaysRefused,
    ImpossibleMessagesRefused,
    VotesAbstained,
    LogDamageFound,
    OversizedDatagramsDropped,
    CommitInsideFrame,
    MessagesTooLarge,
    ConnectsUnauthenticated,
    SessionsRefused,
    SessionFramesUnbound,
    AdminRefused,
    InstallsRefused,
    ClientAddressesRefused,
    ClientAddressesEvicted,
    SendErrors,
    MemberSettingsDiffer,
    MemberFramesUnagreed,
    ResendsInFlight,
    /// The cost of the node's threads (see `sys::cost`).
    CpuNs,
    VoluntarySwitches,
    InvoluntarySwitches,
    SyscallsReceive,
    SyscallsSend,
    SyscallsWait,
    SyscallsDisk,
    SyscallsSignal,
    /// This node's member id.
    MemberId,
}

pub const ALL: [Counter; 62] = [
    Counter::Role,
    Counter::Term,
    Counter::Leader,
    Counter::AppendedPosition,
    Counter::DurablePosition,
    Counter::CommitPosition,
    Counter::AppliedPosition,
    Counter::ServiceDigest,
    Counter::ElectionsStarted,
    Counter::Leaderships,
    Counter::Truncations,
    Counter::FramesMalformed,
    Counter::MessagesDropped,
    Counter::DatagramsReceived,
    Counter::DatagramsSent,
    Counter::ForeignDatagramsDropped,
    Counter::ClientRequests,
    Counter::ClientRedirects,
    Counter::ClientBackPressure,
    Counter::DutyCycles,
    Counter::MaxCycleNs,
    Counter::StallCycles,
    Counter::AppliedMessages,
    Counter::LogRounds,
    Counter::ReplicatedAppendsRefused,
    Counter::ReplicationResends,
    Counter::RingRecordsSent,
    Counter::RingRecordsReceived,
    Counter::RingFullDropped,
    Counter::SnapshotsTaken,
    Counter::DigestMismatches,
    Counter::LogStartPosition,
    Counter::SnapshotsSent,
    Counter::SnapshotsInstalled,
    Counter::MemberSealsRefused,
    Counter::MemberReplaysRefused,
    Counter::ImpossibleMessagesRefused,
    Counter::VotesAbstained,
    Counter::LogDamageFound,
    Counter::OversizedDatagramsDropped,
    Counter::CommitInsideFrame,
    Counter::MessagesTooLarge,
    Counter::ConnectsUnauthenticated,
    Counter::SessionsRefused,
    Counter::SessionFramesUnbound,
    Counter::AdminRefused,
    Counter::InstallsRefused,
    Counter::ClientAddressesRefused,
    Counter::ClientAddressesEvicted,
    Counter::SendErrors,
    Counter::MemberSettingsDiffer,
    Counter::MemberFramesUnagreed,
    Counter::ResendsInFlight,
    Counter::CpuNs,
    Counter::VoluntarySwitches,
    Counter::InvoluntarySwitches,
    Counter::SyscallsReceive,
    Counter::SyscallsSend,
    Counter::SyscallsWait,
    Counter::SyscallsDisk,
    Counter::SyscallsSignal,
    Counter::MemberId,
];

/// Where the stage-time buckets begin (after room for more named counters): for each stage
/// of `node::stages::STAGES` in order, `STAGE_BUCKETS` counts that only grow.
const STAGES_AT: usize = 128;
const STAGE_WORDS: usize = STAGES.len() * STAGE_BUCKETS;
/// Then one word per stage: the nanoseconds waited, summed.
const STAGE_SUMS_AT: usize = STAGES_AT + STAGE_WORDS;

const _: () = assert!(HEADER_WORDS + ALL.len() <= STAGES_AT);
const _: () = assert!((STAGE_SUMS_AT + STAGES.len()) * 8 <= FILE_LEN);

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::Role => "role (0 follower, 1 candidate, 2 leader)",
            Counter::Term => "term",
            Counter::Leader => "leader member id (max = none)",
            Counter::AppendedPosition => "appended position",
            Counter::DurablePosition => "durable position",
            Counter::CommitPosition => "commit position",
            Counter::AppliedPosition => "applied position",
            Counter::ServiceDigest => "service digest",
            Counter::ElectionsStarted => "elections started",
            Counter::Leaderships => "leaderships",
            Counter::Truncations => "log truncations",
            Counter::FramesMalformed => "frames malformed (dropped)",
            Counter::MessagesDropped => "consensus messages dropped",
            Counter::DatagramsReceived => "datagrams received",
            Counter::DatagramsSent => "datagrams sent",
            Counter::ForeignDatagramsDropped => "foreign datagrams dropped",
            Counter::ClientRequests => "client requests",
            Counter::ClientRedirects => "client redirects",
            Counter::ClientBackPressure => "client requests refused (back-pressure)",
            Counter::DutyCycles => "duty cycles",
            Counter::MaxCycleNs => "longest duty cycle (ns)",
            Counter::StallCycles => "duty cycles over 1 ms",
            Counter::AppliedMessages => "client messages applied",
            Counter::LogRounds => "log write rounds",
            Counter::ReplicatedAppendsRefused => "replicated bytes refused (resent later)",
            Counter::ReplicationResends => "replication go-back-N resends",
            Counter::RingRecordsSent => "member ring records sent (ipc)",
            Counter::RingRecordsReceived => "member ring records received (ipc)",
            Counter::RingFullDropped => "member ring sends dropped (ring full)",
            Counter::SnapshotsTaken => "snapshots taken",
            Counter::DigestMismatches => "DIGEST MISMATCHES (service not deterministic)",
            Counter::LogStartPosition => "log start position (segments before it retired)",
            Counter::SnapshotsSent => "snapshots sent to followers behind the log start",
            Counter::SnapshotsInstalled => "snapshots installed from the leader",
            Counter::MemberSealsRefused => {
                "member datagrams refused (no seal, bad tag, misaddressed)"
            }
            Counter::MemberReplaysRefused => "member datagrams refused (replayed)",
            Counter::ImpossibleMessagesRefused => {
                "consensus messages refused (numbers that cannot be true)"
            }
            Counter::VotesAbstained => {
                "votes abstained (log owed after corruption, or vote recovery)"
            }
            Counter::LogDamageFound => "log corruption found below the durable end at start",
            Counter::OversizedDatagramsDropped => "datagrams dropped (over max_datagram_bytes)",
            Counter::CommitInsideFrame => {
                "commit positions inside a frame (a false durable report)"
            }
            Counter::MessagesTooLarge => "client messages refused (over session.max_message_bytes)",
            Counter::ConnectsUnauthenticated => "client connects refused (credential)",
            Counter::SessionsRefused => "client connects refused (session limits)",
            Counter::SessionFramesUnbound => {
                "session frames refused (session not open, or source not bound)"
            }
            Counter::AdminRefused => "admin requests refused (admin credential)",
            Counter::InstallsRefused => "snapshot installs refused (over snapshot.max_install_mib)",
            Counter::ClientAddressesRefused => {
                "client datagrams dropped (address table full of active clients)"
            }
            Counter::ClientAddressesEvicted => "idle client addresses forgotten",
            Counter::SendErrors => "datagrams the kernel refused to send",
            Counter::MemberSettingsDiffer => {
                "member settings that differ from ours (cluster.members, log.segment_mib, ...)"
            }
            Counter::MemberFramesUnagreed => {
                "member frames dropped (its settings not heard, or differing)"
            }
            Counter::ResendsInFlight => "client resends of a message already in the log this term",
            Counter::CpuNs => "CPU time of the node's threads (ns)",
            Counter::VoluntarySwitches => "context switches, voluntary (waits that slept)",
            Counter::InvoluntarySwitches => "context switches, involuntary (preempted)",
            Counter::SyscallsReceive => "system calls: receive (recvmmsg)",
            Counter::SyscallsSend => "system calls: send (sendmmsg)",
            Counter::SyscallsWait => "system calls: idle waits (epoll, io_uring wait, park)",
            Counter::SyscallsDisk => {
                "system calls: disk (io_uring submit, pwrite, pread, fdatasync)"
            }
            Counter::SyscallsSignal => "system calls: doorbells (eventfd, FIFO)",
            Counter::MemberId => "member id",
        }
    }

    /// The stable machine name (`commit_position`, `datagrams_received`, ...): the variant's
    /// name in snake case, as `raftline stat --json` and the Prometheus metrics carry it.
    pub fn key(self) -> String {
        let mut out = String::new();
        for (i, ch) in format!("{self:?}").chars().enumerate() {
            if ch.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_lowercase());
            } else {
                out.push(ch);
            }
        }
        out
    }

    /// A value that goes up and down (a position, the role, a maximum), not a count of events.
    pub fn is_gauge(self) -> bool {
        matches!(
            self,
            Counter::Role
                | Counter::Term
                | Counter::Leader
                | Counter::AppendedPosition
                | Counter::DurablePosition
                | Counter::CommitPosition
                | Counter::AppliedPosition
                | Counter::ServiceDigest
                | Counter::MaxCycleNs
                | Counter::LogStartPosition
                | Counter::MemberId
        )
    }
}

/// The writer side, owned by the node's thread.
pub struct CountersFile {
    map: MmapMut,
}

fn words(map: &[u8]) -> &[AtomicU64] {
    assert!(map.len() >= FILE_LEN && map.as_ptr() as usize % 8 == 0);
    // SAFETY: the mapping is FILE_LEN bytes, page-aligned (so 8-aligned), lives as long as
    // the borrow of `map`, and AtomicU64 has the size and alignment of u64; every access to
    // the shared words goes through atomics, so concurrent readers in other processes see
    // whole values.
    unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<AtomicU64>(), FILE_LEN / 8) }
}

impl CountersFile {
    /// Creates (or takes over) `dir/counters`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("counters"))?;
        file.set_len(FILE_LEN as u64)?;
        // SAFETY: the file is ours; other processes only read it through `CountersReader`,
        // and all accesses to the mapped words are atomic.
        let map = unsafe { MmapMut::map_mut(&file)? };
        let counters = Self { map };
        let w = words(&counters.map);
        w[1].store(1, Ordering::Relaxed);
        w[2].store(std::process::id() as u64, Ordering::Relaxed);
        for c in ALL {
            w[HEADER_WORDS + c as usize].store(0, Ordering::Relaxed);
        }
        for word in &w[STAGES_AT..STAGE_SUMS_AT + STAGES.len()] {
            word.store(0, Ordering::Relaxed);
        }
        w[0].store(MAGIC, Ordering::Release);
        Ok(counters)
    }

    pub fn set(&self, counter: Counter, value: u64) {
        words(&self.map)[HEADER_WORDS + counter as usize].store(value, Ordering::Relaxed);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        words(&self.map)[HEADER_WORDS + counter as usize].load(Ordering::Relaxed)
    }

    /// Stores the bucket counts of one stage.
    pub fn set_stage(&self, stage: Stage, buckets: &[u64; STAGE_BUCKETS], sum_ns: u64) {
        let at = STAGES_AT + stage as usize * STAGE_BUCKETS;
        let w = words(&self.map);
        for (word, &n) in w[at..at + STAGE_BUCKETS].iter().zip(buckets) {
            word.store(n, Ordering::Relaxed);
        }
        w[STAGE_SUMS_AT + stage as usize].store(sum_ns, Ordering::Relaxed);
    }
}

/// Reads another process's counters.
pub struct CountersReader {
    map: memmap2::Mmap,
}

impl CountersReader {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(dir.join("counters"))?;
        if file.metadata()?.len() < FILE_LEN as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "counters file is too short",
            ));
        }
        // SAFETY: read-only mapping of a file whose words are only written atomically.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let reader = Self { map };
        if words(&reader.map)[0].load(Ordering::Acquire) != MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a raftline counters file",
            ));
        }
        Ok(reader)
    }

    pub fn pid(&self) -> u64 {
        words(&self.map)[2].load(Ordering::Relaxed)
    }

    pub fn get(&self, counter: Counter) -> u64 {
        words(&self.map)[HEADER_WORDS + counter as usize].load(Ordering::Relaxed)
    }

    /// The bucket counts of one stage (see `node::stages`).
    pub fn stage(&self, stage: Stage) -> [u64; STAGE_BUCKETS] {
        let at = STAGES_AT + stage as usize * STAGE_BUCKETS;
        let mut out = [0; STAGE_BUCKETS];
        for (n, word) in out
            .iter_mut()
            .zip(&words(&self.map)[at..at + STAGE_BUCKETS])
        {
            *n = word.load(Ordering::Relaxed);
        }
        out
    }

    /// The nanoseconds waited in one stage, summed.
    pub fn stage_sum_ns(&self, stage: Stage) -> u64 {
        words(&self.map)[STAGE_SUMS_AT + stage as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_what_the_writer_stores() {
        let dir = tempfile::tempdir().unwrap();
        let writer = CountersFile::create(dir.path()).unwrap();
        writer.set(Counter::CommitPosition, 4096);
        writer.set(Counter::LogRounds, 7);
        let reader = CountersReader::open(dir.path()).unwrap();
        assert_eq!(reader.get(Counter::CommitPosition), 4096);
        assert_eq!(reader.get(Counter::LogRounds), 7);
        assert_eq!(reader.pid(), std::process::id() as u64);
        writer.set(Counter::CommitPosition, 8192);
        assert_eq!(
            reader.get(Counter::CommitPosition),
            8192,
            "live, not a copy"
        );
        let mut buckets = [0u64; STAGE_BUCKETS];
        buckets[3] = 5;
        buckets[STAGE_BUCKETS - 1] = 1;
        writer.set_stage(Stage::CommittedToApplied, &buckets, 123_456);
        assert_eq!(reader.stage(Stage::CommittedToApplied), buckets);
        assert_eq!(reader.stage_sum_ns(Stage::CommittedToApplied), 123_456);
        assert_eq!(reader.stage(Stage::AppendedToDurable), [0; STAGE_BUCKETS]);
        assert_eq!(reader.stage_sum_ns(Stage::AppendedToDurable), 0);
        assert_eq!(
            reader.get(Counter::ResendsInFlight),
            0,
            "the stages do not overlap the named counters"
        );
        assert_eq!(Counter::CommitPosition.key(), "commit_position");
        assert_eq!(Counter::CpuNs.key(), "cpu_ns");
        let keys: std::collections::BTreeSet<String> = ALL.iter().map(|c| c.key()).collect();
        assert_eq!(keys.len(), ALL.len(), "every key names one counter");
        std::fs::write(dir.path().join("counters"), [0u8; 4096]).unwrap();
        assert!(CountersReader::open(dir.path()).is_err());
    }
}
