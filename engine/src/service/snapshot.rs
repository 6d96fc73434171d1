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
//! log from its position. Files are written atomically: a temporary file, fsync, rename, fsync
//! of the directory.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

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

/// Snapshot files in `dir`, newest first, by the position in their names.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(position) = entry.file_name().to_str().and_then(parse_file_name) {
            found.push((position, entry.path()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found)
}

/// The newest snapshot file in `dir` that reads and passes its checksum, as (position, bytes).
/// Each one skipped is reported through `skipped` with the reason.
pub fn load_latest(
    dir: &Path,
    mut skipped: impl FnMut(&Path, String),
) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    for (position, path) in list(dir)? {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                skipped(&path, e.to_string());
                continue;
            }
        };
        match decode(&bytes) {
            Ok(view) if view.position == position => return Ok(Some((position, bytes))),
            Ok(view) => skipped(
                &path,
                SnapshotError::Position {
                    found: view.position,
                    expected: position,
                }
                .to_string(),
            ),
            Err(e) => skipped(&path, e.to_string()),
        }
    }
    Ok(None)
}

/// Writes `snapshot` into `dir` atomically (temporary file, fsync, rename, fsync of the
/// directory), then removes all but the newest [`SNAPSHOTS_KEPT`] snapshot files.
pub fn write(dir: &Path, snapshot: &TakenSnapshot) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let name = file_name(snapshot.position);
    let tmp = dir.join(format!("{name}.creating"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&snapshot.bytes)?;
    f.sync_all()?;
    drop(f);
    let path = dir.join(&name);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    for (_, old) in list(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// Writes snapshots on a thread of its own, so neither consensus nor the service waits for the
/// disk. A failed write is reported and the next snapshot is tried as usual: the log still
/// holds everything, so a missing snapshot costs only a longer replay.
pub struct SnapshotWriter {
    dir: PathBuf,
    tx: Option<std::sync::mpsc::Sender<TakenSnapshot>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The newest snapshot position written durably.
    durable: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SnapshotWriter {
    /// `durable` starts at the newest snapshot already in `dir` (0 if none).
    pub fn start(dir: PathBuf, name: String, durable: u64) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<TakenSnapshot>();
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(durable));
        let done = progress.clone();
        let thread_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-snap"))
            .spawn(move || {
                let dir = thread_dir;
                for snapshot in rx {
                    match write(&dir, &snapshot) {
                        Ok(_) => {
                            done.fetch_max(snapshot.position, std::sync::atomic::Ordering::AcqRel);
                        }
                        Err(e) => {
                        eprintln!(
                            "raftline: {name}: writing the snapshot at position {} in {} failed: {e}; the log keeps everything, recovery replays more",
                            snapshot.position,
                            dir.display()
                        );
                        }
                    }
                }
            })?;
        Ok(Self {
            dir,
            tx: Some(tx),
            thread: Some(thread),
            durable: progress,
        })
    }

    /// The directory the snapshots are written in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest snapshot position written durably, shared with the node (which retires the
    /// log behind it and sends it to followers that need it).
    pub fn progress(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.durable.clone()
    }

    pub fn submit(&self, snapshot: TakenSnapshot) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(snapshot);
        }
    }
}

impl Drop for SnapshotWriter {
    /// Waits for the snapshots already submitted to be written.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dir = tempfile::tempdir().unwrap();
        for position in [100u64, 200, 300] {
            let bytes = encode(position, 0, position, b"", b"");
            write(dir.path(), &TakenSnapshot { position, bytes }).unwrap();
        }
        // Damage the newest.
        let newest = dir.path().join(file_name(300));
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        let mut skipped = Vec::new();
        let (position, bytes) = load_latest(dir.path(), |p, why| {
            skipped.push((p.to_path_buf(), why));
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
        let dir = tempfile::tempdir().unwrap();
        for position in 1..=5u64 {
            let bytes = encode(position, 0, 0, b"", b"");
            write(dir.path(), &TakenSnapshot { position, bytes }).unwrap();
        }
        let left: Vec<u64> = list(dir.path()).unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(left, vec![5, 4, 3]);
    }
}
