//! Segment files: creating and preparing them ahead of the writer (zero-filled, from spares),
//! retiring them behind a snapshot, and resetting the log to a snapshot's position. It never
//! retires a segment holding a position the log still needs.

use super::*;

impl<D: Disk> Log<D> {
    pub(super) fn segment_base(&self, position: u64) -> u64 {
        position - position % self.config.segment_bytes
    }

    /// Bytes from `appended` to the end of its segment.
    pub(super) fn segment_remaining(&self) -> u64 {
        self.config.segment_bytes - self.appended % self.config.segment_bytes
    }

    /// Makes the segment file for `base`: a recycled spare if there is one, else a new
    /// zero-filled file. Slow (a file creation); [`Log::prepare_segments`] does it ahead.
    pub(super) fn create_segment(&mut self, base: u64) -> Result<FileId, LogError> {
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
    pub(super) fn retire_segment(&mut self, base: u64, file: FileId) -> Result<String, LogError> {
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
