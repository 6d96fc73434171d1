//! The durable, byte-position-indexed log, generic over the [`Disk`] seam.
//!
//! # Segments
//!
//! The log is a byte stream; position `p` lives in the segment whose base is
//! `p - p % segment_bytes`, in the file named by that base (`00000000000000000000.seg`), at
//! offset `p - base`. Frames never straddle two segments: [`Log::append`] fills the rest of a
//! segment with a padding frame when the next frame would not fit, and never leaves a gap
//! shorter than a frame header. Because every replica uses the same segment size
//! (cluster configuration) and followers receive the leader's padding frames, positions agree
//! on every replica. Segment files are created zero-filled (writing into unwritten extents costs
//! an extent conversion on every fdatasync) and recycled instead of deleted.
//!
//! ```text
//! segment file: [ data area: segment_bytes ][ slot 0: 8 KiB ][ slot 1: 8 KiB ]
//! slot:         [ tail block: 4 KiB        ][ header: magic, seq, end offset, crc32c ]
//! ```
//!
//! # Group commit and the torn tail
//!
//! One write round is in flight at a time. A round takes everything appended since the last one
//! (within one segment): the *full* 4 KiB blocks go to the data area at their position, each
//! block written exactly once; the partial tail block, zero-padded, goes to a *tail slot*
//! together with the round's end position. Slots alternate, so the slot being written never
//! holds the only copy of the last durable tail. A durable position is reported only when all
//! of a round's writes are durable (one RWF_DSYNC write, or writes then fdatasync).
//!
//! Why: rewriting a partial tail block in place could tear bytes that were already reported
//! durable. Here a write only ever lands on (a) data-area blocks that held nothing durable, or
//! (b) the older of the two slots. On recovery the newest valid slot gives the end of the
//! data and its tail block; if the previous slot (sequence one lower) describes an earlier
//! block, its prefix is laid over that block, repairing a data-area write torn by the crash. A
//! scan of checksummed frames from the start of the segment then finds the recovered end: the
//! first zero or damaged frame. Worked example with 4 KiB blocks:
//!
//! ```text
//! round 7: appended up to 5000  -> data block 0 [0,4096), slot A: block 1 prefix [4096,5000), end 5000
//! round 8: appended up to 9000  -> data block 1 [4096,8192), slot B: block 2 prefix [8192,9000), end 9000
//! crash during round 8, data block 1 torn, slot B complete:
//!   newest slot B: block 2 <- slot B; older slot A (seq 7 = 8-1, block 1 < 2): [4096,5000) <- slot A
//!   scan: frames up to 5000 are intact, the frame after it fails its checksum -> recovered 5000
//!   round 7's durable 5000 survives; round 8 was never reported durable.
//! ```
//!
//! # Where things are
//!
//! This file holds the settings, the errors, the [`Log`] itself and its reads and truncation.
//! `writer` appends and runs the write rounds; `slots` owns the tail slots' bytes; `recovery`
//! opens a log and tells a torn tail from damage; `segments` creates, prepares and retires
//! segment files; `term_index`, `promise` and `reach` are the small durable records beside them.

mod promise;
mod reach;
mod recovery;
mod segments;
mod slots;
mod term_index;
mod writer;

pub use promise::{Damage, Promise, PROMISE_FILE};
pub use recovery::RecoveryReport;

pub use reach::REACH_FILE;
use slots::{encode_slot, SlotCopy};
pub use term_index::{TermEntry, TermIndex, TERM_INDEX_FILE};
use writer::Round;

use std::collections::BTreeMap;

use crate::codec::{
    self, DecodeError, Decoded, FrameMeta, FrameType, Message, FRAME_ALIGNMENT, FRAME_LEN_MAX,
    HEADER_LEN,
};
use crate::io::{BufId, Completion, Disk, DiskError, DiskOp, FileId, BLOCK_LEN};

const SLOT_LEN: usize = 2 * BLOCK_LEN;
const SLOT_MAGIC: u64 = 0x746c_6961_746c_6672; // "rfltailt"
const SEGMENT_SUFFIX: &str = ".seg";
const SPARE_PREFIX: &str = "spare-";
/// Segments taken out of the log by [`Log::retire_before`], for the runtime to delete off the
/// node's thread (recovery ignores them; a restart deletes leftovers).
pub const RETIRED_PREFIX: &str = "retired-";

const _: () = assert!(BLOCK_LEN % FRAME_ALIGNMENT == 0);
const _: () = assert!(HEADER_LEN < BLOCK_LEN);

/// When a write is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every round is flushed to the device before its position is reported durable.
    Fdatasync,
    /// Positions are reported when the write completes; durability comes from replication.
    /// A process crash loses nothing reported (the page cache survives); a power loss may
    /// lose any suffix, but recovery still yields a clean prefix of what was appended.
    None,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Fdatasync => "fdatasync",
            Durability::None => "none",
        })
    }
}

/// Log settings. `segment_bytes` must match on every member of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Bytes of log per segment file. A multiple of 4 KiB, at least 64 KiB.
    pub segment_bytes: u64,
    /// Size of each of the two staging buffers: the most one write round can carry, and the
    /// bound on appended-but-unwritten bytes (appends beyond it get [`LogError::Full`]).
    pub write_bytes_max: usize,
    pub durability: Durability,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 << 20,
            write_bytes_max: 1 << 20,
            durability: Durability::Fdatasync,
        }
    }
}

impl LogConfig {
    pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
    pub const SEGMENT_BYTES_MAX: u64 = 1 << 40;
    pub const WRITE_BYTES_MIN: usize = 4 * BLOCK_LEN;
    pub const WRITE_BYTES_MAX: usize = 256 << 20;

    /// Checks every value; the error names the key, the value and the allowed range.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |key: &'static str, value: u64, allowed: String| {
            Err(LogError::Config {
                key,
                value,
                allowed,
            })
        };
        if !(Self::SEGMENT_BYTES_MIN..=Self::SEGMENT_BYTES_MAX).contains(&self.segment_bytes)
            || self.segment_bytes % BLOCK_LEN as u64 != 0
        {
            return bad(
                "log.segment_bytes",
                self.segment_bytes,
                format!(
                    "a multiple of {BLOCK_LEN} in {}..={}",
                    Self::SEGMENT_BYTES_MIN,
                    Self::SEGMENT_BYTES_MAX
                ),
            );
        }
        if !(Self::WRITE_BYTES_MIN..=Self::WRITE_BYTES_MAX).contains(&self.write_bytes_max)
            || self.write_bytes_max % BLOCK_LEN != 0
        {
            return bad(
                "log.write_bytes_max",
                self.write_bytes_max as u64,
                format!(
                    "a multiple of {BLOCK_LEN} in {}..={}",
                    Self::WRITE_BYTES_MIN,
                    Self::WRITE_BYTES_MAX
                ),
            );
        }
        Ok(())
    }

    /// The largest frame (header and payload, padding included) this log accepts.
    pub fn frame_len_max(&self) -> usize {
        // A frame, the padding that may precede it (shorter than the frame plus a header) and
        // a carried partial block must fit one staging buffer.
        let by_staging = (self.write_bytes_max - 2 * BLOCK_LEN) / 2;
        let by_segment = self.segment_bytes as usize / 2;
        by_staging.min(by_segment).min(FRAME_LEN_MAX) & !(FRAME_ALIGNMENT - 1)
    }
}

/// Why the log refused or stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("IO error on {file} at log position {position}: {source}")]
    Io {
        file: String,
        position: u64,
        source: DiskError,
    },
    #[error("the writer stopped after an earlier error: {0}")]
    Stopped(Box<LogError>),
    #[error(
        "log is full: {pending} bytes wait to be written (write_bytes_max); retry after do_work"
    )]
    Full { pending: u64 },
    #[error("frame of {len} bytes exceeds the largest this log accepts ({max})")]
    FrameTooLarge { len: usize, max: usize },
    #[error("append at position {got}, but the log ends at {expected}")]
    NotAtEnd { expected: u64, got: u64 },
    #[error("replicated bytes at position {position} rejected: {reason}")]
    BadReplicatedBytes { position: u64, reason: String },
    #[error("position {position} is outside the log [{start}, {end}]")]
    OutOfRange { position: u64, start: u64, end: u64 },
    #[error("log file {file} is damaged: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("bad config {key} = {value}: allowed {allowed}")]
    Config {
        key: &'static str,
        value: u64,
        allowed: String,
    },
}

/// Counters an operator (or a benchmark) can read.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogStats {
    pub rounds: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
    pub segments_recycled: u64,
    pub full_rejections: u64,
}

/// The log. See the module docs.
pub struct Log<D: Disk> {
    disk: D,
    config: LogConfig,
    /// Every segment file of the log, by base position, open.
    segments: BTreeMap<u64, FileId>,
    /// Zero-filled files ready to become segments.
    spares: Vec<String>,
    spare_counter: u64,
    start_position: u64,
    /// Invariant: `durable <= submitted_end <= appended`.
    appended: u64,
    /// End of the last round handed to the disk.
    submitted_end: u64,
    durable: u64,
    /// Position of byte 0 of the active staging buffer. Invariant: block-aligned,
    /// `stage_base <= submitted_end`; the active buffer holds `[stage_base, appended)`.
    stage_base: u64,
    staging: [BufId; 2],
    active: usize,
    slot_buf: BufId,
    next_slot_seq: u64,
    round: Option<Round>,
    completions: Vec<Completion>,
    failed: Option<LogError>,
    terms: TermIndex,
    stats: LogStats,
    promise: Option<Promise>,
    damage: Option<Damage>,
    /// The newest segment base recorded as written into (see `reach`).
    reached: u64,
    /// The durable position before the last round completed: what recovery after a crash
    /// now can tell from a torn tail (the slot of the round before the newest vouches for it).
    vouched: u64,
}

pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

fn align_down(x: u64) -> u64 {
    x & !(BLOCK_LEN as u64 - 1)
}

/// Whether every byte is zero, a word at a time.
fn is_zero(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.split_at(bytes.len() - bytes.len() % 8);
    words
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && rest.iter().all(|&b| b == 0)
}

impl<D: Disk> Log<D> {
    fn file_name(&self, file: FileId) -> String {
        self.segments
            .iter()
            .find(|(_, &f)| f == file)
            .map(|(&b, _)| segment_name(b))
            .unwrap_or_else(|| format!("file #{file}"))
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }

    /// Gives the disk back (for crash tests: crash it, then open a new log on it).
    pub fn into_disk(self) -> D {
        self.disk
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    pub fn start_position(&self) -> u64 {
        self.start_position
    }

    /// End of the appended bytes (durable or not).
    pub fn appended_position(&self) -> u64 {
        self.appended
    }

    /// Every byte before this survives a crash (with `Durability::Fdatasync`).
    pub fn durable_position(&self) -> u64 {
        self.durable
    }

    pub fn term_index(&self) -> &TermIndex {
        &self.terms
    }

    /// Records, durably, that `term` begins at `start_position`. Call before acting in the term.
    pub fn append_term(&mut self, term: u64, start_position: u64) -> Result<(), LogError> {
        self.terms.append(&mut self.disk, term, start_position)
    }

    /// The first error the writer met, after which it accepts no more work.
    pub fn failure(&self) -> Option<&LogError> {
        self.failed.as_ref()
    }

    fn check_running(&self) -> Result<(), LogError> {
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(LogError::Stopped(Box::new(e.clone()))),
        }
    }

    /// Reads log bytes starting at `position` into `out`; returns how many were read (fewer
    /// than asked at the end of the log). Bytes need not be durable yet.
    pub fn read(&mut self, position: u64, out: &mut [u8]) -> Result<usize, LogError> {
        if position < self.start_position || position > self.appended {
            return Err(LogError::OutOfRange {
                position,
                start: self.start_position,
                end: self.appended,
            });
        }
        let len = (out.len() as u64).min(self.appended - position) as usize;
        let mut done = 0;
        while done < len {
            let at = position + done as u64;
            let want = len - done;
            let n = if at >= self.stage_base {
                let from = (at - self.stage_base) as usize;
                out[done..len].copy_from_slice(
                    &self.disk.buffer(self.staging[self.active])[from..from + want],
                );
                want
            } else if let Some(round) = self.round.as_ref().filter(|r| at >= r.start) {
                let n = want.min((self.stage_base - at) as usize);
                let from = (at - round.start) as usize;
                out[done..done + n].copy_from_slice(&self.disk.buffer(round.buf)[from..from + n]);
                n
            } else {
                let base = self.segment_base(at);
                let limit = self.round.as_ref().map_or(self.stage_base, |r| r.start);
                let n = want
                    .min((limit - at) as usize)
                    .min((base + self.config.segment_bytes - at) as usize);
                let file = self.segments[&base];
                self.disk
                    .read_at(file, at - base, &mut out[done..done + n])
                    .map_err(|source| LogError::Io {
                        file: segment_name(base),
                        position: at,
                        source,
                    })?;
                n
            };
            done += n;
        }
        Ok(len)
    }

    /// The header of the last frame in the log (padding skipped), if any. Reads at most one
    /// segment; frames never straddle segments, so the scan starts on a frame boundary.
    pub fn last_frame_meta(&mut self) -> Result<Option<FrameMeta>, LogError> {
        let mut end = self.appended;
        while end > self.start_position {
            let base = self.segment_base(end - 1).max(self.start_position);
            let mut bytes = vec![0u8; (end - base) as usize];
            self.read(base, &mut bytes)?;
            let last = codec::Frames::new(&bytes)
                .map_while(Result::ok)
                .map(|(_, f)| f.meta)
                .filter(|m| m.frame_type != FrameType::Padding as u16)
                .last();
            if last.is_some() {
                return Ok(last);
            }
            end = base;
        }
        Ok(None)
    }

    /// Drops every byte at and after `position` (a follower discarding an uncommitted suffix).
    /// The caller guarantees the suffix is not committed and that `position` is a frame
    /// boundary. Durable before it returns; terms that began at or after `position` leave
    /// the term index.
    pub fn truncate(&mut self, position: u64) -> Result<(), LogError> {
        self.check_running()?;
        if position < self.start_position || position > self.appended {
            return Err(LogError::OutOfRange {
                position,
                start: self.start_position,
                end: self.appended,
            });
        }
        assert!(
            position % FRAME_ALIGNMENT as u64 == 0,
            "truncate to unaligned position {position}"
        );
        self.drain()?;
        if position >= self.submitted_end {
            self.appended = position;
        } else {
            let block = align_down(position);
            let mut tail = vec![0u8; (position - block) as usize];
            self.read(block, &mut tail)?;
            let base = self.segment_base(position);
            let io = |base: u64| {
                move |source| LogError::Io {
                    file: segment_name(base),
                    position,
                    source,
                }
            };
            // Later segments first: a crash part-way leaves a prefix of the old log, never a hole.
            let later: Vec<(u64, FileId)> = self
                .segments
                .range(base + 1..)
                .map(|(&b, &f)| (b, f))
                .rev()
                .collect();
            let file_len = self.config.segment_bytes + 2 * SLOT_LEN as u64;
            for (b, f) in later {
                self.disk.zero_range(f, 0, file_len).map_err(io(b))?;
            }
            let file = self.segments[&base];
            let end_offset = position - base;
            self.write_slot_sync(file, base, end_offset, &tail)?;
            self.write_slot_sync(file, base, end_offset, &tail)?;
            let from = block - base;
            self.disk
                .zero_range(file, from, self.config.segment_bytes - from)
                .map_err(io(base))?;
            // Staging restarts at the block holding `position`.
            self.active = 0;
            self.disk.buffer_mut(self.staging[0])[..tail.len()].copy_from_slice(&tail);
            self.stage_base = block;
            self.appended = position;
            self.submitted_end = position;
            self.durable = self.durable.min(position);
        }
        self.terms.truncate_from(&mut self.disk, position)
    }

    /// Drops terms above `term` from the term index (a follower dropping terms its leader does
    /// not have). The bytes are cut by [`Log::truncate`].
    pub fn truncate_terms_after(&mut self, term: u64) -> Result<(), LogError> {
        self.terms.truncate_terms_after(&mut self.disk, term)
    }
}

#[cfg(test)]
mod tests;
