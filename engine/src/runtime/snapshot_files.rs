//! Snapshot files written on a thread of their own, so neither consensus nor the service waits
//! for the disk. What is written, and how old files go, is `service::snapshot::store`, the code
//! the simulator runs against its disk; this module only owns the thread.

use std::path::{Path, PathBuf};

use crate::service::snapshot::{self, TakenSnapshot};
use crate::sys::files::DirFiles;

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
                let mut files = DirFiles::new(&thread_dir);
                for snapshot in rx {
                    match snapshot::store(&mut files, &snapshot) {
                        Ok(_) => {
                            done.fetch_max(snapshot.position, std::sync::atomic::Ordering::AcqRel);
                        }
                        Err(e) => {
                        tracing::error!(
                            "{name}: writing the snapshot at position {} in {} failed: {e}; the log keeps everything, recovery replays more",
                            snapshot.position,
                            thread_dir.display()
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
