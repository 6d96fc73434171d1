//! Snapshot files: the applier's own state (sessions, dedup, kept replies, timers) and the
//! service's state at one log position, checksummed.
//!
//! ```text
//! magic "RLSNAP01" | position u64 | log_hash u64 | digest u64 | engine_len u32 | service_len u32
//! | engine bytes | service bytes | crc32c u32 (of everything before it)
//! ```
//!
//! Every replica takes a snapshot at the same positions: the leader appends a `ClusterAction`
//! frame (on request, or each time the log has grown by the configured interval) and each
//! replica snapshots once it has applied that frame. Recovery loads the newest file that passes
//! its checksum (a damaged one is skipped for the one before, with a log line) and replays the
//! log from its position. This module owns the format only; the files are written and found by
//! `runtime::snapshot_files` (atomically: a temporary file, fsync, rename, fsync of the
//! directory) and, on a follower that installs one, through the `Disk` seam.

#![forbid(unsafe_code)]

use crate::io::{DiskError, Files};

pub const MAGIC: &[u8; 8] = b"RLSNAP01";
const HEADER_LEN: usize = 8 + 8 + 8 + 8 + 4 + 4;
/// Snapshot files kept in a node's directory; older ones are removed after a new one is safe.
pub const SNAPSHOTS_KEPT: usize = 3;

/// A snapshot the applier took, to be written to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenSnapshot {
    pub position: u64,
    /// The whole file.
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a snapshot file (bad magic)")]
    BadMagic,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot for position {found} where {expected} was expected")]
    Position { found: u64, expected: u64 },
    #[error("the service refused its snapshot: {0}")]
    Service(String),
    #[error("the service wrote no snapshot, but this file has service state")]
    Unsupported,
}

/// A checked snapshot file, borrowed.
#[derive(Debug)]
pub struct SnapshotView<'a> {
    pub position: u64,
    pub log_hash: u64,
    pub digest: u64,
    pub engine: &'a [u8],
    pub service: &'a [u8],
}

pub fn file_name(position: u64) -> String {
    format!("snapshot-{position:020}.snap")
}

/// The position in a snapshot file's name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

pub fn encode(position: u64, log_hash: u64, digest: u64, engine: &[u8], service: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + engine.len() + service.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&log_hash.to_le_bytes());
    out.extend_from_slice(&digest.to_le_bytes());
    out.extend_from_slice(&(engine.len() as u32).to_le_bytes());
    out.extend_from_slice(&(service.len() as u32).to_le_bytes());
    out.extend_from_slice(engine);
    out.extend_from_slice(service);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<SnapshotView<'_>, SnapshotError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(SnapshotError::Truncated("shorter than a header"));
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let (engine_len, service_len) = (u32_at(32) as usize, u32_at(36) as usize);
    if HEADER_LEN + engine_len + service_len != body.len() {
        return Err(SnapshotError::Truncated("section lengths do not add up"));
    }
    Ok(SnapshotView {
        position: u64_at(8),
        log_hash: u64_at(16),
        digest: u64_at(24),
        engine: &body[HEADER_LEN..HEADER_LEN + engine_len],
        service: &body[HEADER_LEN + engine_len..],
    })
}

/// Reads fields written by [`Writer`]; every read checks the length.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        let (head, rest) = self
            .bytes
            .split_at_checked(8)
            .ok_or(SnapshotError::Truncated("engine state"))?;
        self.bytes = rest;
        Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = self.u64()? as usize;
        let (head, rest) = self
            .bytes
            .split_at_checked(len)
            .ok_or(SnapshotError::Truncated("engine state"))?;
        self.bytes = rest;
        Ok(head)
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Appends little-endian fields and length-prefixed byte strings.
pub struct Writer<'a> {
    pub out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }
}

/// Snapshot files among `files`, newest first, by the position in their names.
pub fn list(files: &mut impl Files) -> Result<Vec<u64>, DiskError> {
    let mut found: Vec<u64> = files
        .list()?
        .iter()
        .filter_map(|n| parse_file_name(n))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    Ok(found)
}

/// The newest snapshot file that reads and passes its checksum, as (position, bytes). Each one
/// skipped is reported through `skipped` with its name and the reason.
pub fn load_latest(
    files: &mut impl Files,
    mut skipped: impl FnMut(&str, String),
) -> Result<Option<(u64, Vec<u8>)>, DiskError> {
    for position in list(files)? {
        let name = file_name(position);
        let bytes = match files.read_file(&name) {
            Ok(Some(b)) => b,
            Ok(None) => continue, // removed since it was listed
            Err(e) => {
                skipped(&name, e.to_string());
                continue;
            }
        };
        match decode(&bytes) {
            Ok(view) if view.position == position => return Ok(Some((position, bytes))),
            Ok(view) => skipped(
                &name,
                SnapshotError::Position {
                    found: view.position,
                    expected: position,
                }
                .to_string(),
            ),
            Err(e) => skipped(&name, e.to_string()),
        }
    }
    Ok(None)
}

/// Writes `snapshot` atomically and durably, then removes all but the newest
/// [`SNAPSHOTS_KEPT`] snapshot files. Returns the file's name.
pub fn store(files: &mut impl Files, snapshot: &TakenSnapshot) -> Result<String, DiskError> {
    let name = file_name(snapshot.position);
    files.write_file_atomic(&name, &snapshot.bytes)?;
    for old in list(files)?.into_iter().skip(SNAPSHOTS_KEPT) {
        files.remove(&file_name(old))?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::disk::{SimDisk, SimDiskConfig};

    #[test]
    fn a_file_round_trips_and_any_flipped_byte_is_caught() {
        let bytes = encode(4096, 7, 9, b"engine", b"service state");
        let v = decode(&bytes).unwrap();
        assert_eq!((v.position, v.log_hash, v.digest), (4096, 7, 9));
        assert_eq!(
            (v.engine, v.service),
            (&b"engine"[..], &b"service state"[..])
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_newest_good_file_is_loaded_and_damaged_ones_are_skipped_and_named() {
        let mut disk = SimDisk::new(1, SimDiskConfig::default());
        for position in [100u64, 200, 300] {
            let bytes = encode(position, 0, position, b"", b"");
            store(&mut disk, &TakenSnapshot { position, bytes }).unwrap();
        }
        // Damage the newest.
        let newest = file_name(300);
        let mut bytes = disk.read_file(&newest).unwrap().unwrap();
        bytes[20] ^= 1;
        disk.write_file_atomic(&newest, &bytes).unwrap();
        let mut skipped = Vec::new();
        let (position, bytes) = load_latest(&mut disk, |name, why| {
            skipped.push((name.to_string(), why));
        })
        .unwrap()
        .unwrap();
        assert_eq!(position, 200);
        assert_eq!(decode(&bytes).unwrap().digest, 200);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].0, newest);
        assert!(skipped[0].1.contains("checksum"), "{}", skipped[0].1);
    }

    #[test]
    fn only_the_newest_files_are_kept() {
        let mut disk = SimDisk::new(1, SimDiskConfig::default());
        for position in 1..=5u64 {
            let bytes = encode(position, 0, 0, b"", b"");
            store(&mut disk, &TakenSnapshot { position, bytes }).unwrap();
        }
        assert_eq!(list(&mut disk).unwrap(), vec![5, 4, 3]);
    }
}
