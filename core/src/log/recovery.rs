//! Opening a log: finding its segments, recovering each segment's end from its tail slots and a
//! frame scan, telling a torn tail from damage below what was reported durable, and rebuilding
//! the term index and the reach record. It never cuts below a promise it cannot keep: damage is
//! recorded (`promise`) and reported, for the node to repair from a peer.

use super::*;

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

/// Offset of the end of the valid frames at the start of `image`.
pub(super) fn scan(image: &[u8]) -> u64 {
    let mut offset = 0usize;
    while offset < image.len() {
        match codec::stored_len(&image[offset..]) {
            Some(used) => offset += used,
            None => break,
        }
    }
    offset as u64
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

    /// Finds the active segment and its end. See the module docs.
    pub(super) fn recover(&mut self) -> Result<RecoveryReport, LogError> {
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
    pub(super) fn terms_from_frames(&mut self) -> Result<Vec<TermEntry>, LogError> {
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
    pub(super) fn verify_segment(&mut self, base: u64) -> Result<Option<u64>, LogError> {
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
    pub(super) fn record_damage(&mut self, position: u64, claimed: u64) -> Result<(), LogError> {
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
    pub(super) fn clean_after(
        &mut self,
        base: u64,
        end_offset: u64,
        tail: &[u8],
    ) -> Result<(), LogError> {
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
    pub(super) fn zero_dirty_blocks(
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

    pub(super) fn report(&self, recovered: u64, discarded_bytes: u64) -> RecoveryReport {
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
}
