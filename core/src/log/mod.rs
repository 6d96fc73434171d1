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

mod promise;
mod reach;
mod term_index;

pub use promise::{Damage, Promise, PROMISE_FILE};
pub use reach::REACH_FILE;
pub use term_index::{TermEntry, TermIndex, TERM_INDEX_FILE};

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

/// What [`Log::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub start_position: u64,
    /// The end of the valid log; everything before it was verified frame by frame in the last
    /// segment and taken as written in earlier ones.
    pub recovered_position: u64,
    /// Bytes after the recovered position that were written but never made durable, or torn.
    pub discarded_bytes: u64,
    pub segments: usize,
    pub writer: String,
    /// Corruption found at or below what the log had reported durable (not a torn tail): the
    /// log was cut there and the promise recorded. See [`Log::promise`].
    pub damage: Option<Damage>,
    /// The term index was missing or damaged (why) and was rebuilt from the log's frames.
    pub terms_rebuilt: Option<String>,
    /// The reach record (see `reach`) was unreadable (why) and was rewritten from the files.
    pub reach_rebuilt: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    /// Offset of the round's end within the segment.
    end_offset: u64,
}

/// A valid slot and its raw bytes (tail block first).
type SlotCopy = (Slot, Vec<u8>);

#[derive(Debug)]
enum Phase {
    Writing,
    Syncing,
}

#[derive(Debug)]
struct Round {
    file: FileId,
    segment_base: u64,
    /// First position the round's data-area write covers (block-aligned).
    start: u64,
    end: u64,
    /// The staging buffer the round reads.
    buf: BufId,
    writes_pending: u32,
    needs_fsync: bool,
    phase: Phase,
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

fn encode_slot(out: &mut [u8], seq: u64, end_offset: u64, tail: &[u8]) {
    debug_assert!(
        tail.len() < BLOCK_LEN || (tail.len() == BLOCK_LEN && end_offset % BLOCK_LEN as u64 == 0)
    );
    out[..SLOT_LEN].fill(0);
    out[..tail.len()].copy_from_slice(tail);
    let h = &mut out[BLOCK_LEN..];
    h[0..8].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&end_offset.to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[..BLOCK_LEN]),
        &out[BLOCK_LEN..BLOCK_LEN + 24],
    );
    out[BLOCK_LEN + 24..BLOCK_LEN + 28].copy_from_slice(&crc.to_le_bytes());
}

fn decode_slot(bytes: &[u8], segment_bytes: u64) -> Option<Slot> {
    let h = &bytes[BLOCK_LEN..];
    let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    if word(0) != SLOT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
    if crc32c::crc32c_append(crc32c::crc32c(&bytes[..BLOCK_LEN]), &h[..24]) != crc {
        return None;
    }
    let slot = Slot {
        seq: word(8),
        end_offset: word(16),
    };
    (slot.end_offset <= segment_bytes && slot.end_offset % FRAME_ALIGNMENT as u64 == 0)
        .then_some(slot)
}

impl<D: Disk> Log<D> {
    /// Opens the log in the disk's directory, creating it if empty, and recovers its end.
    pub fn open(mut disk: D, config: LogConfig) -> Result<(Self, RecoveryReport), LogError> {
        config.validate()?;
        let io = |file: &str, position: u64| {
            let file = file.to_string();
            move |source| LogError::Io {
                file,
                position,
                source,
            }
        };
        let names = disk.list().map_err(io(".", 0))?;
        // Only a member whose disk was once found damaged has a promise (opening a record
        // creates its slot files).
        let promised = names.iter().any(|n| n.starts_with(PROMISE_FILE));
        let reach_recorded = names.iter().any(|n| n.starts_with(REACH_FILE));
        let mut bases = Vec::new();
        let mut spares = Vec::new();
        let mut spare_counter = 0;
        for name in names {
            if let Some(n) = name
                .strip_prefix(SPARE_PREFIX)
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            {
                spare_counter = spare_counter.max(n.parse::<u64>().unwrap_or(0) + 1);
                spares.push(name);
            } else if let Some(base) = name
                .strip_suffix(SEGMENT_SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            {
                if base % config.segment_bytes != 0 {
                    return Err(LogError::Corrupt {
                        file: name,
                        reason: format!(
                            "base is not a multiple of log.segment_bytes = {}",
                            config.segment_bytes
                        ),
                    });
                }
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let recorded_reach = if reach_recorded {
            reach::load(&mut disk, config.segment_bytes)
        } else {
            Ok(None)
        };
        // Segments after the last file that the log had written into: gone with their frames.
        // (No segment file at all is a log never started, or a crash inside `reset_to`.)
        let missing = match (&recorded_reach, bases.last()) {
            (Ok(Some(reached)), Some(&last)) if *reached > last => Some((last, *reached)),
            _ => None,
        };
        let file_len = config.segment_bytes + 2 * SLOT_LEN as u64;
        if bases.is_empty() {
            let name = segment_name(0);
            disk.open(&name, Some(file_len)).map_err(io(&name, 0))?;
            bases.push(0);
        }
        for w in bases.windows(2) {
            if w[1] != w[0] + config.segment_bytes {
                return Err(LogError::Corrupt {
                    file: segment_name(w[0] + config.segment_bytes),
                    reason: "missing: segment files must be contiguous".into(),
                });
            }
        }
        let mut segments = BTreeMap::new();
        for &base in &bases {
            let name = segment_name(base);
            let file = disk.open(&name, None).map_err(io(&name, base))?;
            if disk.file_len(file) != file_len {
                return Err(LogError::Corrupt {
                    file: name,
                    reason: format!(
                        "length {} does not match log.segment_bytes = {} (expected {file_len})",
                        disk.file_len(file),
                        config.segment_bytes
                    ),
                });
            }
            segments.insert(base, file);
        }

        let staging = [
            disk.alloc_buffer(config.write_bytes_max),
            disk.alloc_buffer(config.write_bytes_max),
        ];
        let slot_buf = disk.alloc_buffer(SLOT_LEN);
        // A damaged term index is rebuilt from the log's frames (below), not trusted and not
        // a reason to throw the log away.
        let (terms, terms_lost) = match TermIndex::load(&mut disk) {
            Ok(t) => (t, None),
            Err(LogError::Corrupt { reason, .. }) => (TermIndex::default(), Some(reason)),
            Err(LogError::Io { source, .. }) if source.is_corrupt() => {
                (TermIndex::default(), Some(source.to_string()))
            }
            Err(e) => return Err(e),
        };
        let promise = if promised {
            Promise::load(&mut disk)?
        } else {
            None
        };
        let start_position = bases[0];
        let mut log = Self {
            disk,
            config,
            segments,
            spares,
            spare_counter,
            start_position,
            appended: start_position,
            submitted_end: start_position,
            durable: start_position,
            stage_base: start_position,
            staging,
            active: 0,
            slot_buf,
            next_slot_seq: 1,
            round: None,
            completions: Vec::with_capacity(16),
            failed: None,
            terms,
            stats: LogStats::default(),
            promise,
            damage: None,
            reached: 0,
            vouched: start_position,
        };
        let terms_lost = terms_lost.or_else(|| {
            log.terms
                .entries()
                .is_empty()
                .then(|| "missing".to_string())
        });
        let mut report = log.recover()?;
        if let Some((last, reached)) = missing {
            // This member may have reported durable any position up to the end of the newest
            // segment it wrote into.
            let first_missing = last + log.config.segment_bytes;
            log.record_damage(first_missing, reached + log.config.segment_bytes)?;
            if let Some(d) = log.damage.as_mut() {
                d.file = if reached == first_missing {
                    format!("{} (the file is missing)", segment_name(reached))
                } else {
                    format!(
                        "{} to {} (the files are missing)",
                        segment_name(first_missing),
                        segment_name(reached)
                    )
                };
            }
            report.damage = log.damage.clone();
        }
        let last_base = *log.segments.keys().next_back().expect("a segment");
        // After missing segments the promise (durable above) carries what they held: the
        // record comes down to the files, so the next start does not find them again.
        log.reached = match (&recorded_reach, missing) {
            (Ok(Some(r)), None) => (*r).max(last_base),
            _ => last_base,
        };
        if let Err(why) = &recorded_reach {
            report.reach_rebuilt = Some(why.clone());
        }
        if recorded_reach.as_ref().ok().copied().flatten() != Some(log.reached)
            && log.config.durability != Durability::None
        {
            reach::store(&mut log.disk, log.reached)?;
        }
        if let Some(why) = terms_lost
            .as_ref()
            .filter(|_| log.appended == log.start_position)
        {
            if log.start_position > 0 {
                // The terms before a snapshot's position are not in the log to rebuild from.
                return Err(LogError::Corrupt {
                    file: TERM_INDEX_FILE.into(),
                    reason: format!("{why}, and the log (which starts at {} after a snapshot) holds no frame to rebuild it from: restore the file from a backup of this member", log.start_position),
                });
            }
        }
        if log.terms.entries().is_empty() && log.appended > log.start_position {
            let why = terms_lost.unwrap_or_else(|| "missing".into());
            let entries = log.terms_from_frames()?;
            log.terms.replace(&mut log.disk, entries)?;
            report.terms_rebuilt = Some(why);
        }
        // A term whose first frame did not survive the crash never acted: forget it.
        let end = log.appended;
        log.terms.truncate_from(&mut log.disk, end)?;
        Ok((log, report))
    }

    fn read_slots(&mut self, base: u64) -> Result<[Option<SlotCopy>; 2], LogError> {
        let mut out = [None, None];
        for (i, slot) in out.iter_mut().enumerate() {
            let bytes = self.slot_bytes(base, i as u64)?;
            *slot = decode_slot(&bytes, self.config.segment_bytes).map(|s| (s, bytes));
        }
        Ok(out)
    }

    /// The raw bytes of tail slot `index` of a segment.
    fn slot_bytes(&mut self, base: u64, index: u64) -> Result<Vec<u8>, LogError> {
        let file = self.segments[&base];
        let mut bytes = vec![0u8; SLOT_LEN];
        let offset = self.config.segment_bytes + index * SLOT_LEN as u64;
        self.disk
            .read_at(file, offset, &mut bytes)
            .map_err(|source| LogError::Io {
                file: segment_name(base),
                position: base,
                source,
            })?;
        Ok(bytes)
    }

    /// Whether slot `index` of a segment holds bytes that are not a valid slot (a slot write
    /// a crash interrupted), rather than nothing.
    fn slot_torn(&mut self, base: u64, index: u64) -> Result<bool, LogError> {
        let bytes = self.slot_bytes(base, index)?;
        Ok(!is_zero(&bytes) && decode_slot(&bytes, self.config.segment_bytes).is_none())
    }

    /// Finds the active segment and its end. See the module docs.
    fn recover(&mut self) -> Result<RecoveryReport, LogError> {
        let seg = self.config.segment_bytes;
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        let mut max_seq = 0;
        let mut active = None;
        for &base in bases.iter().rev() {
            let slots = self.read_slots(base)?;
            for (s, _) in slots.iter().flatten() {
                max_seq = max_seq.max(s.seq);
            }
            if active.is_none() && slots.iter().any(Option::is_some) {
                active = Some((base, slots));
            } else if active.is_none()
                && self.config.durability == Durability::Fdatasync
                && self.slot_torn(base, 0)?
                && self.slot_torn(base, 1)?
            {
                // With fdatasync a crash tears at most the one slot being written (the other
                // was synced before it); the other holds the round before, or zeros. Both
                // unreadable is damage, and with them went the only record of where this
                // segment's data ends: refuse rather than guess short. (Without fsync a power
                // loss may tear both, and nothing was promised durable.)
                return Err(LogError::Corrupt {
                    file: segment_name(base),
                    reason: "both tail slots fail their checksum, so where the log ends is unknown; restore this member's log directory or remove it and let the member catch up from the leader".into(),
                });
            }
        }
        self.next_slot_seq = max_seq + 1;

        let Some((base, slots)) = active else {
            // Nothing was ever durable: the log is empty at its first segment.
            let start = self.start_position;
            self.clean_after(start, 0, &[])?;
            return Ok(self.report(start, 0));
        };
        // Segments before the active one are full and were durable: every frame is checked.
        let mut damaged = None;
        for &b in bases.iter().filter(|&&b| b < base) {
            if let Some(offset) = self.verify_segment(b)? {
                damaged = Some(b + offset);
                break;
            }
        }
        let mut valid: Vec<SlotCopy> = slots.into_iter().flatten().collect();
        valid.sort_by_key(|(s, _)| s.seq);
        let (newest, newest_bytes) = valid.pop().expect("at least one valid slot");
        // The end the round before the newest one made durable: everything below it was
        // reported durable and no crash may have torn it. Bytes between it and the newest
        // slot's end may be a torn last round.
        // If instead the other slot holds a write that did not complete, that write was the
        // round after the newest one: the newest round had completed, all of it durable.
        let vouched_offset = match valid.last() {
            Some((older, _)) if older.seq + 1 == newest.seq => {
                older.end_offset.min(newest.end_offset)
            }
            Some(_) => 0,
            None if self.slot_torn(base, (newest.seq + 1) % 2)? => newest.end_offset,
            None => 0,
        };
        let newest_block = align_down(newest.end_offset);
        let mut image = vec![0u8; newest.end_offset as usize];
        let file = self.segments[&base];
        self.disk
            .read_at(file, 0, &mut image[..newest_block as usize])
            .map_err(|source| LogError::Io {
                file: segment_name(base),
                position: base,
                source,
            })?;
        image[newest_block as usize..]
            .copy_from_slice(&newest_bytes[..(newest.end_offset - newest_block) as usize]);
        let mut repaired_block = None;
        if let Some((older, older_bytes)) = valid.pop() {
            let older_block = align_down(older.end_offset);
            if older.seq + 1 == newest.seq && older_block < newest_block {
                let len = (older.end_offset - older_block) as usize;
                image[older_block as usize..older_block as usize + len]
                    .copy_from_slice(&older_bytes[..len]);
                repaired_block = Some(older_block);
            }
        }

        let end_offset = scan(&image);
        if end_offset < vouched_offset {
            damaged = damaged.or(Some(base + end_offset));
        }
        if let Some(position) = damaged {
            self.record_damage(position, base + newest.end_offset)?;
        }
        let end = base + end_offset;
        let discarded = newest.end_offset - end_offset;
        // The repaired block is below the new staging base: put it back in the data area.
        if let Some(block) =
            repaired_block.filter(|&b| b + BLOCK_LEN as u64 <= align_down(end_offset))
        {
            self.sync_write(
                file,
                block,
                &image[block as usize..block as usize + BLOCK_LEN],
                base + block,
            )?;
        }
        let tail = &image[align_down(end_offset) as usize..end_offset as usize];
        self.clean_after(base, end_offset, tail)?;
        if end_offset == seg {
            self.stage_base = end;
        } else {
            self.stage_base = base + align_down(end_offset);
            let buf = self.staging[self.active];
            self.disk.buffer_mut(buf)[..tail.len()].copy_from_slice(tail);
        }
        self.appended = end;
        self.submitted_end = end;
        self.durable = end;
        self.vouched = end;
        if let Some(position) = damaged.filter(|&p| p < end) {
            // Damage in an earlier segment: the log ends where the good frames end.
            self.truncate(position)?;
        }
        let recovered = self.appended;
        Ok(self.report(recovered, discarded))
    }

    /// The term index as the log's frames tell it: each term from its first frame (its
    /// `NewLeadershipTermEvent`; for the term of the log's first frame, the log's start).
    fn terms_from_frames(&mut self) -> Result<Vec<TermEntry>, LogError> {
        let mut entries: Vec<TermEntry> = Vec::new();
        let mut at = self.start_position;
        let mut buf = vec![0u8; (4usize << 20).max(self.config.frame_len_max())];
        while at < self.appended {
            let n = self.read(at, &mut buf)?;
            let mut used = 0;
            for (offset, frame) in codec::Frames::new(&buf[..n]).map_while(Result::ok) {
                let end = offset + frame.encoded_len();
                if end > n {
                    break;
                }
                let term = frame.meta.term;
                if frame.meta.frame_type != FrameType::Padding as u16
                    && entries.last().is_none_or(|e| e.term < term)
                {
                    entries.push(TermEntry {
                        term,
                        start_position: at + offset as u64,
                    });
                }
                used = end;
            }
            if used == 0 {
                return Err(LogError::Corrupt {
                    file: segment_name(self.segment_base(at)),
                    reason: format!(
                        "no whole frame at log position {at} while rebuilding the term index"
                    ),
                });
            }
            at += used as u64;
        }
        Ok(entries)
    }

    /// Checks every frame of a full segment (one before the active one); returns the offset
    /// of the first bad one.
    fn verify_segment(&mut self, base: u64) -> Result<Option<u64>, LogError> {
        let seg = self.config.segment_bytes;
        // A chunk holds the largest frame, so a frame that does not fit one is damaged.
        let chunk = (4usize << 20).max(self.config.frame_len_max() + BLOCK_LEN);
        let file = self.segments[&base];
        let mut buf = Vec::new();
        let mut offset = 0u64;
        while offset < seg {
            let want = (chunk as u64).min(seg - offset) as usize;
            buf.resize(want, 0);
            self.disk
                .read_at(file, offset, &mut buf)
                .map_err(|source| LogError::Io {
                    file: segment_name(base),
                    position: base + offset,
                    source,
                })?;
            let mut at = 0usize;
            while at < want {
                if let Some(used) = codec::stored_len(&buf[at..]) {
                    at += used;
                    continue;
                }
                match codec::decode(&buf[at..]) {
                    Err(DecodeError::Truncated { needed, .. })
                        if at > 0 && offset + (at + needed) as u64 <= seg =>
                    {
                        break
                    }
                    _ => return Ok(Some(offset + at as u64)),
                }
            }
            offset += at as u64;
        }
        Ok(None)
    }

    /// Corruption at `position`, below what the log may have reported durable (`claimed`):
    /// before anything is cut, make durable that this member once held `claimed`, so it never
    /// votes for or becomes a leader with less (see [`Log::promise`]).
    fn record_damage(&mut self, position: u64, claimed: u64) -> Result<(), LogError> {
        // Without a term index the term of the vouched end is unknown: promise the highest,
        // which only the release rule (enough others reporting their logs) brings down.
        let term = if self.terms.entries().is_empty() {
            u64::MAX
        } else {
            self.terms.term_at(claimed.saturating_sub(1)).unwrap_or(0)
        };
        // Kept with an earlier promise: at least both (the later damage may be in a shorter
        // log, if the earlier one was never repaired).
        let old = self.promise.unwrap_or(Promise {
            term: 0,
            position: 0,
        });
        let promise = Promise {
            term: term.max(old.term),
            position: claimed.max(old.position),
        };
        if self.promise != Some(promise) {
            promise.store(&mut self.disk)?;
            self.promise = Some(promise);
        }
        self.damage = Some(Damage {
            file: segment_name(self.segment_base(position)),
            position,
            promised: claimed,
            term,
        });
        Ok(())
    }

    /// The longest log (term of its last byte, end position) this member ever reported
    /// durable before corruption cut its log, if its disk was ever found damaged. Until the
    /// log again reaches it, the member must not lead, and may vote only for a candidate
    /// whose log is at least this: otherwise a write acknowledged with this member's help
    /// could be lost. Kept durably (a later crash does not forget it).
    pub fn promise(&self) -> Option<Promise> {
        self.promise
    }

    /// Below this position, a checksum failure after a crash is corruption, never a torn
    /// tail: the durable position before the last completed write round.
    pub fn vouched_position(&self) -> u64 {
        self.vouched.min(self.durable)
    }

    /// Makes the disk say exactly "the log ends at `base + end_offset`": both slots of the
    /// segment describe that end, and every block after it (in this segment and later ones)
    /// is zero, durably. Without this, bytes a crash left behind past the end (never durable,
    /// or discarded by this recovery) could be read as frames after a later crash.
    fn clean_after(&mut self, base: u64, end_offset: u64, tail: &[u8]) -> Result<(), LogError> {
        // What a crash left in the page cache (Durability::None) is made durable before the
        // slots vouch for it.
        let earlier: Vec<(u64, FileId)> = self
            .segments
            .range(..=base)
            .map(|(&b, &f)| (b, f))
            .collect();
        for (b, f) in earlier {
            self.run_sync(DiskOp::Fsync { file: f }, b)?;
        }
        let file = self.segments[&base];
        for _ in 0..2 {
            self.write_slot_sync(file, base, end_offset, tail)?;
        }
        let later: Vec<(u64, FileId)> = self
            .segments
            .range(base + 1..)
            .map(|(&b, &f)| (b, f))
            .collect();
        self.zero_dirty_blocks(
            base,
            file,
            align_down(end_offset),
            self.config.segment_bytes,
        )?;
        let file_len = self.config.segment_bytes + 2 * SLOT_LEN as u64;
        for (b, f) in later {
            self.zero_dirty_blocks(b, f, 0, file_len)?;
        }
        Ok(())
    }

    /// Zeroes, durably, the blocks in `[from, to)` of a file that are not already zero.
    fn zero_dirty_blocks(
        &mut self,
        base: u64,
        file: FileId,
        from: u64,
        to: u64,
    ) -> Result<(), LogError> {
        const CHUNK: u64 = 1 << 20;
        let io = |source| LogError::Io {
            file: segment_name(base),
            position: base + from,
            source,
        };
        let mut chunk = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
        let mut at = from;
        while at < to {
            let n = CHUNK.min(to - at);
            self.disk
                .read_at(file, at, &mut chunk[..n as usize])
                .map_err(io)?;
            let mut run: Option<u64> = None;
            for (i, block) in chunk[..n as usize].chunks(BLOCK_LEN).enumerate() {
                let offset = at + (i * BLOCK_LEN) as u64;
                let dirty = !is_zero(block);
                match (dirty, run) {
                    (true, None) => run = Some(offset),
                    (false, Some(start)) => {
                        self.disk
                            .zero_range(file, start, offset - start)
                            .map_err(io)?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = run {
                self.disk
                    .zero_range(file, start, at + n - start)
                    .map_err(io)?;
            }
            at += n;
        }
        Ok(())
    }

    fn report(&self, recovered: u64, discarded_bytes: u64) -> RecoveryReport {
        RecoveryReport {
            start_position: self.start_position,
            recovered_position: recovered,
            discarded_bytes,
            segments: self.segments.len(),
            writer: self.disk.describe(),
            damage: self.damage.clone(),
            terms_rebuilt: None,
            reach_rebuilt: None,
        }
    }

    /// Writes one slot synchronously and durably (recovery and truncation only).
    fn write_slot_sync(
        &mut self,
        file: FileId,
        base: u64,
        end_offset: u64,
        tail: &[u8],
    ) -> Result<(), LogError> {
        let seq = self.next_slot_seq;
        self.next_slot_seq += 1;
        let mut bytes = vec![0u8; SLOT_LEN];
        encode_slot(&mut bytes, seq, end_offset, tail);
        let offset = self.config.segment_bytes + (seq % 2) * SLOT_LEN as u64;
        self.sync_write(file, offset, &bytes, base + end_offset)
    }

    /// Writes `bytes` at `offset` through the slot buffer and waits until durable.
    /// Only called with no round in flight.
    fn sync_write(
        &mut self,
        file: FileId,
        offset: u64,
        bytes: &[u8],
        position: u64,
    ) -> Result<(), LogError> {
        assert!(self.round.is_none());
        assert!(bytes.len() <= SLOT_LEN && bytes.len() % BLOCK_LEN == 0);
        self.disk.buffer_mut(self.slot_buf)[..bytes.len()].copy_from_slice(bytes);
        let op = DiskOp::Write {
            file,
            offset,
            buf: self.slot_buf,
            buf_offset: 0,
            len: bytes.len(),
            dsync: false,
        };
        self.run_sync(op, position)?;
        self.run_sync(DiskOp::Fsync { file }, position)
    }

    fn run_sync(&mut self, op: DiskOp, position: u64) -> Result<(), LogError> {
        const TAG: u64 = u64::MAX;
        let file = match op {
            DiskOp::Write { file, .. } | DiskOp::Fsync { file } => file,
        };
        let err = |log: &Self, source| LogError::Io {
            file: log.file_name(file),
            position,
            source,
        };
        self.disk.submit(op, TAG).map_err(|e| err(self, e))?;
        self.disk.flush().map_err(|e| err(self, e))?;
        let mut done = Vec::new();
        loop {
            self.disk.reap(&mut done);
            if let Some(c) = done.iter().find(|c| c.user_data == TAG) {
                return c.result.map_err(|e| err(self, e));
            }
            self.disk.wait().map_err(|e| err(self, e))?;
        }
    }

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

    fn segment_base(&self, position: u64) -> u64 {
        position - position % self.config.segment_bytes
    }

    /// Bytes from `appended` to the end of its segment.
    fn segment_remaining(&self) -> u64 {
        self.config.segment_bytes - self.appended % self.config.segment_bytes
    }

    /// Appends one frame and returns its position. `meta.frame_type` should be a log frame type.
    /// Returns [`LogError::Full`] when unwritten bytes would exceed `write_bytes_max`: call
    /// [`Log::do_work`] and retry (back-pressure, nothing is dropped).
    pub fn append(&mut self, meta: &FrameMeta, payload: &[u8]) -> Result<u64, LogError> {
        self.append_with(meta, payload.len(), |dst| dst.copy_from_slice(payload))
    }

    /// Appends an encoded message; see [`Log::append`].
    pub fn append_message(
        &mut self,
        meta: FrameMeta,
        message: &Message<'_>,
    ) -> Result<u64, LogError> {
        let meta = FrameMeta {
            frame_type: message.frame_type() as u16,
            ..meta
        };
        let len = message.encoded_len();
        self.reserve(len)?;
        let position = self.appended;
        let at = (position - self.stage_base) as usize;
        let buf = self.staging[self.active];
        message.encode(meta, &mut self.disk.buffer_mut(buf)[at..at + len]);
        self.appended += len as u64;
        Ok(position)
    }

    /// Appends one frame whose payload `fill` writes in place.
    pub fn append_with(
        &mut self,
        meta: &FrameMeta,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, LogError> {
        let len = codec::encoded_len(payload_len);
        self.reserve(len)?;
        let position = self.appended;
        let at = (position - self.stage_base) as usize;
        let buf = self.staging[self.active];
        codec::encode_with(
            meta,
            payload_len,
            &mut self.disk.buffer_mut(buf)[at..at + len],
            fill,
        );
        self.appended += len as u64;
        Ok(position)
    }

    /// Makes room for a frame of `len` bytes at `appended`, inserting a padding frame first if
    /// it would not fit in the current segment.
    fn reserve(&mut self, len: usize) -> Result<(), LogError> {
        self.check_running()?;
        let max = self.config.frame_len_max();
        if len > max {
            return Err(LogError::FrameTooLarge { len, max });
        }
        let remaining = self.segment_remaining();
        let len = len as u64;
        // Never leave a gap too small for a padding frame's header.
        let pad = if len == remaining || len + HEADER_LEN as u64 <= remaining {
            0
        } else {
            remaining
        };
        let pending = self.appended + pad + len - self.stage_base;
        if pending > self.config.write_bytes_max as u64 {
            self.stats.full_rejections += 1;
            return Err(LogError::Full {
                pending: self.appended - self.stage_base,
            });
        }
        if pad > 0 {
            debug_assert!(pad >= HEADER_LEN as u64);
            let at = (self.appended - self.stage_base) as usize;
            let buf = self.staging[self.active];
            let meta = FrameMeta {
                frame_type: FrameType::Padding as u16,
                ..FrameMeta::default()
            };
            let payload = pad as usize - HEADER_LEN;
            codec::encode_with(
                &meta,
                payload,
                &mut self.disk.buffer_mut(buf)[at..at + pad as usize],
                |d| d.fill(0),
            );
            self.appended += pad;
        }
        Ok(())
    }

    /// Appends bytes replicated from the leader: whole frames starting at `position`, which
    /// must be the end of this log. The bytes are checked frame by frame (checksums, and that
    /// no frame straddles a segment) before any is accepted.
    pub fn append_raw(&mut self, position: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.check_running()?;
        if position != self.appended {
            return Err(LogError::NotAtEnd {
                expected: self.appended,
                got: position,
            });
        }
        let seg = self.config.segment_bytes;
        let reject = |reason: String| Err(LogError::BadReplicatedBytes { position, reason });
        let mut offset = 0usize;
        while offset < bytes.len() {
            let at = position + offset as u64;
            match codec::decode(&bytes[offset..]) {
                Ok(Decoded::Frame(frame, used)) => {
                    let len = codec::encoded_len(frame.payload.len()) as u64;
                    if used as u64 != len {
                        return reject(format!(
                            "frame at {at} is not padded to {FRAME_ALIGNMENT} bytes"
                        ));
                    }
                    let left = seg - at % seg;
                    if len > left || (len < left && len + HEADER_LEN as u64 > left) {
                        return reject(format!(
                            "frame at {at} of {len} bytes breaks the segment boundary"
                        ));
                    }
                    offset += used;
                }
                Ok(Decoded::End) => return reject(format!("zero frame length at {at}")),
                Err(e) => return reject(format!("frame at {at}: {e}")),
            }
        }
        let pending = self.appended + bytes.len() as u64 - self.stage_base;
        if pending > self.config.write_bytes_max as u64 {
            self.stats.full_rejections += 1;
            return Err(LogError::Full {
                pending: self.appended - self.stage_base,
            });
        }
        let at = (self.appended - self.stage_base) as usize;
        let buf = self.staging[self.active];
        self.disk.buffer_mut(buf)[at..at + bytes.len()].copy_from_slice(bytes);
        self.appended += bytes.len() as u64;
        Ok(())
    }

    /// Drives the writer: reaps completions, advances the durable position, and starts the next
    /// round if bytes are waiting. Returns the amount of work done (0 = idle).
    pub fn do_work(&mut self) -> Result<usize, LogError> {
        self.check_running()?;
        let work = self.reap()?;
        let started = if self.round.is_none() {
            self.start_round()?
        } else {
            0
        };
        Ok(work + started)
    }

    /// Blocks until the durable position reaches `position` (or the writer fails).
    pub fn flush_to(&mut self, position: u64) -> Result<(), LogError> {
        while self.durable < position.min(self.appended) {
            if self.do_work()? == 0 {
                self.disk.wait().map_err(|source| LogError::Io {
                    file: "-".into(),
                    position,
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn fail(&mut self, error: LogError) -> LogError {
        if self.failed.is_none() {
            self.failed = Some(error.clone());
        }
        error
    }

    fn reap(&mut self) -> Result<usize, LogError> {
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        let n = self.disk.reap(&mut completions);
        let outcome = self.apply_completions(&completions);
        self.completions = completions;
        outcome.map(|()| n)
    }

    fn apply_completions(&mut self, completions: &[Completion]) -> Result<(), LogError> {
        for c in completions {
            let Some(round) = self.round.as_mut() else {
                continue;
            };
            let (file, position, base) = (round.file, round.start, round.segment_base);
            if let Err(source) = c.result {
                return Err(self.fail(LogError::Io {
                    file: segment_name(base),
                    position,
                    source,
                }));
            }
            round.writes_pending -= 1;
            if round.writes_pending > 0 {
                continue;
            }
            if matches!(round.phase, Phase::Writing) && round.needs_fsync {
                round.phase = Phase::Syncing;
                round.writes_pending = 1;
                if let Err(source) = self
                    .disk
                    .submit(DiskOp::Fsync { file }, 0)
                    .and_then(|_| self.disk.flush())
                {
                    return Err(self.fail(LogError::Io {
                        file: segment_name(base),
                        position,
                        source,
                    }));
                }
            } else {
                let end = round.end;
                assert!(end >= self.durable, "durable position went back");
                self.vouched = self.durable;
                self.durable = end;
                self.round = None;
            }
        }
        Ok(())
    }

    /// Starts a round with everything appended since the last one, up to the segment end.
    fn start_round(&mut self) -> Result<usize, LogError> {
        if self.appended == self.submitted_end {
            return Ok(0);
        }
        let start = self.stage_base;
        let base = self.segment_base(start);
        let end = self.appended.min(base + self.config.segment_bytes);
        let full_end = align_down(end);
        let file = match self.segments.get(&base) {
            Some(&f) => f,
            None => self.create_segment(base)?,
        };
        if base > self.reached {
            // Before anything in this segment can be reported durable (see `reach`).
            if self.config.durability != Durability::None {
                if let Err(e) = reach::store(&mut self.disk, base) {
                    return Err(self.fail(e));
                }
            }
            self.reached = base;
        }
        let buf = self.staging[self.active];
        let mut writes = Vec::with_capacity(2);
        if full_end > start {
            writes.push((start - base, buf, 0, (full_end - start) as usize));
        }
        let seq = self.next_slot_seq;
        self.next_slot_seq += 1;
        let tail_len = (end - full_end) as usize;
        let tail_at = (full_end - start) as usize;
        let mut tail = [0u8; BLOCK_LEN];
        tail[..tail_len].copy_from_slice(&self.disk.buffer(buf)[tail_at..tail_at + tail_len]);
        encode_slot(
            self.disk.buffer_mut(self.slot_buf),
            seq,
            end - base,
            &tail[..tail_len],
        );
        let slot_offset = self.config.segment_bytes + (seq % 2) * SLOT_LEN as u64;
        writes.push((slot_offset, self.slot_buf, 0, SLOT_LEN));

        // One write: make it durable by itself (RWF_DSYNC). Several: write, then fdatasync.
        let fsync_mode = self.config.durability == Durability::Fdatasync;
        // Measured (BENCHMARKS.md): one RWF_DSYNC write matches pwrite + fdatasync at the
        // floor; for two writes, write-then-fdatasync and two RWF_DSYNC writes were within noise
        // of each other, and one flush for the pair is the cheaper use of the device.
        let dsync = fsync_mode && writes.len() == 1;
        let needs_fsync = fsync_mode && writes.len() > 1;
        for &(offset, wbuf, buf_offset, len) in &writes {
            let op = DiskOp::Write {
                file,
                offset,
                buf: wbuf,
                buf_offset,
                len,
                dsync,
            };
            if let Err(source) = self.disk.submit(op, 0) {
                return Err(self.fail(LogError::Io {
                    file: segment_name(base),
                    position: start,
                    source,
                }));
            }
            self.stats.bytes_written += len as u64;
        }
        if let Err(source) = self.disk.flush() {
            return Err(self.fail(LogError::Io {
                file: segment_name(base),
                position: start,
                source,
            }));
        }
        self.stats.rounds += 1;
        self.round = Some(Round {
            file,
            segment_base: base,
            start,
            end,
            buf,
            writes_pending: writes.len() as u32,
            needs_fsync,
            phase: Phase::Writing,
        });
        // Carry the partial block and anything past the segment end to the other buffer.
        let other = self.staging[1 - self.active];
        let carry = (self.appended - full_end) as usize;
        self.disk.copy_buffer(buf, tail_at, other, 0, carry);
        self.active = 1 - self.active;
        self.stage_base = full_end;
        self.submitted_end = end;
        Ok(1)
    }

    /// Makes the segment file for `base`: a recycled spare if there is one, else a new
    /// zero-filled file. Slow (a file creation); [`Log::prepare_segments`] does it ahead.
    fn create_segment(&mut self, base: u64) -> Result<FileId, LogError> {
        let name = segment_name(base);
        let len = self.config.segment_bytes + 2 * SLOT_LEN as u64;
        let io = |source| LogError::Io {
            file: segment_name(base),
            position: base,
            source,
        };
        if let Some(spare) = self.spares.pop() {
            self.disk.rename(&spare, &name).map_err(io)?;
            self.stats.segments_recycled += 1;
        } else {
            self.stats.segments_created += 1;
        }
        let file = self.disk.open(&name, Some(len)).map_err(io)?;
        self.segments.insert(base, file);
        Ok(file)
    }

    /// Makes sure the segment being appended to and the `ahead` segments after it exist, so
    /// that rolling over never waits for a file to be created (zero-filling a segment costs as
    /// much as writing it). Call it from housekeeping; returns how many segments it made.
    pub fn prepare_segments(&mut self, ahead: u64) -> Result<usize, LogError> {
        let first = self.segment_base(self.appended);
        let mut made = 0;
        for i in 0..=ahead {
            let base = first + i * self.config.segment_bytes;
            if !self.segments.contains_key(&base) {
                self.create_segment(base)?;
                made += 1;
            }
        }
        Ok(made)
    }

    /// How many of the segments `prepare_segments(ahead)` needs would have to be created from
    /// nothing, because no spare file is waiting.
    pub fn missing_segments(&self, ahead: u64) -> usize {
        let first = self.segment_base(self.appended);
        let missing = (0..=ahead)
            .filter(|i| {
                !self
                    .segments
                    .contains_key(&(first + i * self.config.segment_bytes))
            })
            .count();
        missing.saturating_sub(self.spares.len())
    }

    /// The length of a segment file (data area and tail slots).
    pub fn segment_file_len(&self) -> u64 {
        self.config.segment_bytes + 2 * SLOT_LEN as u64
    }

    /// Adopts a zero-filled file of `segment_file_len()` bytes in the log directory, made by
    /// another thread, as a spare: the next segment is then a rename, not a file creation.
    /// Spare names start with `spare-` and end with `.seg`.
    pub fn add_spare(&mut self, name: String) {
        assert!(
            name.starts_with(SPARE_PREFIX) && name.ends_with(SEGMENT_SUFFIX),
            "bad spare name {name}"
        );
        self.spares.push(name);
    }

    /// Like [`Log::prepare_segments`], but only by renaming spares: never creates a file on
    /// the calling thread. Returns how many segments it made.
    pub fn prepare_segments_from_spares(&mut self, ahead: u64) -> Result<usize, LogError> {
        let first = self.segment_base(self.appended);
        let mut made = 0;
        for i in 0..=ahead {
            let base = first + i * self.config.segment_bytes;
            if !self.segments.contains_key(&base) && !self.spares.is_empty() {
                self.create_segment(base)?;
                made += 1;
            }
        }
        Ok(made)
    }

    /// Waits for the round in flight, if any, to finish.
    /// An orderly stop: once everything appended is durable, writes the other tail slot with
    /// the same end, so that recovery vouches for the whole log (without it, damage inside the
    /// last write round is indistinguishable from a write a crash tore, and is cut as one).
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.check_running()?;
        self.flush_to(self.appended)?;
        self.drain()?;
        let end = self.durable;
        if end != self.appended || end == self.start_position {
            return Ok(());
        }
        let base = self.segment_base(end - 1);
        let file = self.segments[&base];
        let block = align_down(end);
        let mut tail = vec![0u8; (end - block) as usize];
        self.read(block, &mut tail)?;
        self.write_slot_sync(file, base, end - base, &tail)?;
        self.vouched = end;
        Ok(())
    }

    fn drain(&mut self) -> Result<(), LogError> {
        while self.round.is_some() {
            if self.reap()? == 0 && self.round.is_some() {
                self.disk.wait().map_err(|source| LogError::Io {
                    file: "-".into(),
                    position: self.durable,
                    source,
                })?;
            }
        }
        Ok(())
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

    /// Takes every segment that lies wholly before `position` (a durable snapshot position) out
    /// of the log without writing to it: each is renamed `retired-…` and its name returned,
    /// for the caller to delete elsewhere (zero-filling or deleting a large file here would
    /// stall the node's thread).
    pub fn retire_before(&mut self, position: u64) -> Result<Vec<String>, LogError> {
        let limit = self.segment_base(position.min(self.durable));
        let old: Vec<(u64, FileId)> = self
            .segments
            .range(..limit)
            .map(|(&b, &f)| (b, f))
            .collect();
        let mut names = Vec::new();
        for (base, file) in old {
            names.push(self.retire_segment(base, file)?);
            self.start_position = base + self.config.segment_bytes;
        }
        Ok(names)
    }

    /// Takes one segment out of the log: closed, renamed `retired-…`; returns the new name.
    fn retire_segment(&mut self, base: u64, file: FileId) -> Result<String, LogError> {
        self.disk.close(file);
        let retired = format!("{RETIRED_PREFIX}{}{SEGMENT_SUFFIX}", self.spare_counter);
        self.spare_counter += 1;
        self.disk
            .rename(&segment_name(base), &retired)
            .map_err(|source| LogError::Io {
                file: segment_name(base),
                position: base,
                source,
            })?;
        self.segments.remove(&base);
        Ok(retired)
    }

    /// Discards the whole log and starts it again, empty, at `start` (a segment boundary): a
    /// follower that fell behind the leader's purged log and installed a snapshot at or after
    /// `start`. `terms` is the leader's term index before `start` (it becomes this log's, so
    /// that reconciling with any later leader compares the same term history). Returns the
    /// retired segment names.
    pub fn reset_to(&mut self, start: u64, terms: Vec<TermEntry>) -> Result<Vec<String>, LogError> {
        self.check_running()?;
        assert!(
            start % self.config.segment_bytes == 0,
            "a log restarts at a segment boundary, not {start}"
        );
        self.drain()?;
        // The reach record never names a segment beyond the files a crash could leave: lowered
        // before the files go, raised once the new segment exists.
        let durable_reach = self.config.durability != Durability::None;
        if start < self.reached {
            if durable_reach {
                reach::store(&mut self.disk, start)?;
            }
            self.reached = start;
        }
        let all: Vec<(u64, FileId)> = self.segments.iter().map(|(&b, &f)| (b, f)).collect();
        let mut names = Vec::new();
        for (base, file) in all {
            names.push(self.retire_segment(base, file)?);
        }
        self.create_segment(start)?;
        if start > self.reached {
            if durable_reach {
                reach::store(&mut self.disk, start)?;
            }
            self.reached = start;
        }
        self.start_position = start;
        self.appended = start;
        self.submitted_end = start;
        self.durable = start;
        self.stage_base = start;
        self.active = 0;
        self.disk.buffer_mut(self.staging[0]).fill(0);
        assert!(
            terms.iter().all(|t| t.start_position < start),
            "the terms given describe bytes before the log start"
        );
        self.terms.replace(&mut self.disk, terms)?;
        Ok(names)
    }

    /// Recycles every segment that lies wholly before `position` (a snapshot position the whole
    /// cluster has passed): the files are zeroed and kept as spares instead of deleted, since
    /// deleting large files triggers discards.
    pub fn purge_before(&mut self, position: u64) -> Result<usize, LogError> {
        let limit = self.segment_base(position.min(self.durable));
        let old: Vec<(u64, FileId)> = self
            .segments
            .range(..limit)
            .map(|(&b, &f)| (b, f))
            .collect();
        let file_len = self.config.segment_bytes + 2 * SLOT_LEN as u64;
        for &(base, file) in &old {
            let io = |source| LogError::Io {
                file: segment_name(base),
                position: base,
                source,
            };
            self.disk.zero_range(file, 0, file_len).map_err(io)?;
            self.disk.close(file);
            let spare = format!("{SPARE_PREFIX}{}{SEGMENT_SUFFIX}", self.spare_counter);
            self.spare_counter += 1;
            self.disk.rename(&segment_name(base), &spare).map_err(io)?;
            self.segments.remove(&base);
            self.spares.push(spare);
            self.start_position = base + self.config.segment_bytes;
        }
        Ok(old.len())
    }
}

/// Offset of the end of the valid frames at the start of `image`.
fn scan(image: &[u8]) -> u64 {
    let mut offset = 0usize;
    while offset < image.len() {
        match codec::stored_len(&image[offset..]) {
            Some(used) => offset += used,
            None => break,
        }
    }
    offset as u64
}

#[cfg(test)]
mod tests;
