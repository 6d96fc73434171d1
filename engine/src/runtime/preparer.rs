//! The segment preparer: zero-filled segment files made on a thread of its own, ahead of the
//! writer, so the node's thread never waits for a file to be created. It never writes into a
//! file the log uses.

use super::*;

/// Makes zero-filled spare segment files on its own thread, so the node's thread never
/// stalls creating one (zero-filling costs as much as writing the segment: tens of ms).
pub(super) struct SegmentPreparer {
    requests: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<Result<String, String>>,
    pending: usize,
    /// Failures in a row (a full disk): reported once, retried at most every 100 ms.
    failures: u64,
    retry_at_ns: u64,
}

impl SegmentPreparer {
    pub(super) fn start(dir: std::path::PathBuf, len: u64, id: u32) -> std::io::Result<Self> {
        let (requests, rx) = std::sync::mpsc::channel::<()>();
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("raftline-prep-{id}"))
            .spawn(move || {
                let mut k = 0u64;
                while rx.recv().is_ok() {
                    k += 1;
                    let name = format!("spare-p{}x{k}.seg", std::process::id());
                    let result = crate::sys::files::zero_filled_file(&dir, &name, len)
                        .map(|()| name)
                        .map_err(|e| e.to_string());
                    if tx.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            requests,
            done,
            pending: 0,
            failures: 0,
            retry_at_ns: 0,
        })
    }

    /// Adopts finished spares and asks for more when the next segment would need one.
    pub(super) fn keep_ahead<D: crate::io::Disk>(
        &mut self,
        log: &mut crate::log::Log<D>,
    ) -> Result<(), crate::log::LogError> {
        while let Ok(result) = self.done.try_recv() {
            self.pending -= 1;
            match result {
                Ok(name) => {
                    if self.failures > 0 {
                        tracing::info!(
                            "preparing spare segments works again (after {} failed attempts)",
                            self.failures
                        );
                        self.failures = 0;
                    }
                    log.add_spare(name);
                }
                // The roll falls back to creating the file itself, and reports an error then.
                Err(e) => {
                    if self.failures == 0 {
                        tracing::warn!(
                            "preparing a spare segment failed: {e}; retrying every 100 ms"
                        );
                    }
                    self.failures += 1;
                    self.retry_at_ns = monotonic_ns() + 100_000_000;
                }
            }
        }
        if self.failures > 0 && monotonic_ns() < self.retry_at_ns {
            return log.prepare_segments_from_spares(0).map(|_| ());
        }
        // Zero-filling competes with the log for the disk: make the next segment only once the
        // current one is half full (a start-up with an empty log makes none).
        let segment = log.config().segment_bytes;
        let ahead = if log.appended_position() % segment >= segment / 2 {
            1
        } else {
            0
        };
        let missing = log.missing_segments(ahead);
        while self.pending < missing {
            if self.requests.send(()).is_err() {
                break;
            }
            self.pending += 1;
        }
        log.prepare_segments_from_spares(ahead).map(|_| ())
    }
}
