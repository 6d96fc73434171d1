//! Appending and group commit: frames go into the active staging buffer; one write round at a
//! time carries what was appended to the data area and a tail slot, and reports the durable
//! position when all of its writes are durable. It never rewrites a block that held durable
//! bytes (see the module docs of `log`).

use super::*;

#[derive(Debug)]
pub(super) enum Phase {
    Writing,
    Syncing,
}

#[derive(Debug)]
pub(super) struct Round {
    file: FileId,
    segment_base: u64,
    /// First position the round's data-area write covers (block-aligned).
    pub(super) start: u64,
    end: u64,
    /// The staging buffer the round reads.
    pub(super) buf: BufId,
    writes_pending: u32,
    needs_fsync: bool,
    phase: Phase,
}

impl<D: Disk> Log<D> {
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
    pub(super) fn reserve(&mut self, len: usize) -> Result<(), LogError> {
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
        let mut work = self.reap()?;
        if self.round.is_none() {
            let started = self.start_round()?;
            if started > 0 {
                // A write that completes at once (the page cache) is durable in this call, not
                // the next; for a ring this only looks at its completion queue.
                work += started + self.reap()?;
            }
        }
        Ok(work)
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

    pub(super) fn fail(&mut self, error: LogError) -> LogError {
        if self.failed.is_none() {
            self.failed = Some(error.clone());
        }
        error
    }

    pub(super) fn reap(&mut self) -> Result<usize, LogError> {
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        let n = self.disk.reap(&mut completions);
        let outcome = self.apply_completions(&completions);
        self.completions = completions;
        outcome.map(|()| n)
    }

    pub(super) fn apply_completions(&mut self, completions: &[Completion]) -> Result<(), LogError> {
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
    pub(super) fn start_round(&mut self) -> Result<usize, LogError> {
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

    /// Writes `bytes` at `offset` through the slot buffer and waits until durable.
    /// Only called with no round in flight.
    pub(super) fn sync_write(
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

    pub(super) fn run_sync(&mut self, op: DiskOp, position: u64) -> Result<(), LogError> {
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

    pub(super) fn drain(&mut self) -> Result<(), LogError> {
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
}
