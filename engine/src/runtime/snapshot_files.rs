//! Snapshot files on disk: finding the newest good one at start, and writing new ones on a
//! thread of their own so neither consensus nor the service waits for the disk.
//!
//! The format is `service::snapshot`'s; this module only moves the bytes. It lives in the runtime
//! because it owns a thread.

use std::path::{Path, PathBuf};

use crate::service::snapshot::{
    decode, file_name, parse_file_name, SnapshotError, TakenSnapshot, SNAPSHOTS_KEPT,
};

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
    use crate::service::snapshot::encode;

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
