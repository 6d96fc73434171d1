//! Member-to-member log traffic: sending the log to followers in chunks by position, and a
//! follower receiving, checking and appending what its leader sent. It never appends bytes that
//! do not start and end on frames that consensus accepted at that position.

use super::*;

/// Follower: the first bytes of a frame larger than one datagram, from `start` (the end of
/// the log), waiting for the rest from the same leader in the same term.
pub(super) struct Partial {
    pub(super) leader: MemberId,
    pub(super) term: u64,
    pub(super) start: u64,
    pub(super) bytes: Vec<u8>,
}

impl<D: Disk, N: Datagrams, A: ApplyStage> Node<D, N, A> {
    pub(super) fn send(&mut self, now: u64, to: MemberId, message: &Message<'_>) {
        let meta = FrameMeta {
            term: self.consensus.term(),
            timestamp_ns: now,
            ..FrameMeta::default()
        };
        let len = message.encode(meta, &mut self.send_buf);
        self.net.send(to, &self.send_buf[..len]);
    }

    /// Sends log bytes `[from, to)` as `AppendData` datagrams of whole frames.
    /// Bytes of log or snapshot one datagram to a member carries after a body header of
    /// `header_len` bytes (frame header and body included, under the transport's limit).
    pub(super) fn chunk_bytes(&self, header_len: usize) -> usize {
        let overhead = codec::HEADER_LEN + header_len + 8;
        // A multiple of the frame alignment: a frame's pieces start on aligned positions.
        APPEND_CHUNK_BYTES
            .min(self.net.max_payload().saturating_sub(overhead))
            .max(256)
            & !(codec::FRAME_ALIGNMENT - 1)
    }

    pub(super) fn send_log(
        &mut self,
        now: u64,
        to: MemberId,
        term: u64,
        from: u64,
        end: u64,
    ) -> Result<(), NodeError> {
        if from < self.log.start_position() {
            // Purged here: the follower gets the snapshot, then the log from our start.
            // Consensus counts the range as sent; a send that follows on from its end is
            // not a follower's report (the follower answers it with where it really is).
            self.sent_to.insert(to, end);
            self.consensus
                .on_install_sent(to, self.log.start_position());
            self.send_install_chunk(now, to);
            return Ok(());
        }
        let mut at = from;
        let mut read_buf = std::mem::take(&mut self.read_buf);
        let continues = self.sent_to.insert(to, end) == Some(from);

        // Whole frames per datagram, under the transport's limit (header and body included).
        let chunk = self.chunk_bytes(AppendDataHeader::LEN);
        while at < end {
            let want = ((end - at) as usize).min(chunk);
            read_buf.resize(want, 0);
            let n = self.log.read(at, &mut read_buf)?;
            let mut whole = 0;
            for (offset, frame) in Frames::new(&read_buf[..n]).map_while(Result::ok) {
                let frame_end = offset + frame.encoded_len();
                if frame_end > n {
                    break;
                }
                whole = frame_end;
            }
            if whole == 0 {
                // A frame larger than a datagram's share: its bytes go in pieces of a chunk,
                // which the follower joins again. The range must start where a frame starts.
                if at == from && !continues && !self.frame_starts_at(at, &mut read_buf)? {
                    // No frame starts where the follower said its log ends: its report was
                    // false. It reconciles again and tells us where it really is.
                    self.stats.peer_reports_refused += 1;
                    self.consensus.on_bad_send_position(to);
                    break;
                }
                read_buf.resize(want, 0);
                whole = self.log.read(at, &mut read_buf)?;
            }
            let message = Message::AppendData {
                header: AppendDataHeader {
                    leadership_term_id: term,
                    log_position: at,
                    leader_member_id: self.id,
                },
                bytes: &read_buf[..whole],
            };
            self.send(now, to, &message);
            at += whole as u64;
        }
        self.read_buf = read_buf;
        Ok(())
    }

    /// Whether a whole, verified frame starts at `position` of the log.
    pub(super) fn frame_starts_at(
        &mut self,
        position: u64,
        buf: &mut Vec<u8>,
    ) -> Result<bool, NodeError> {
        buf.resize(codec::HEADER_LEN, 0);
        let n = self.log.read(position, buf)?;
        // The length the header claims (a padding frame may exceed the largest message).
        let len = match codec::decode(&buf[..n]) {
            Err(codec::DecodeError::Truncated { needed, .. }) => needed,
            Ok(Decoded::Frame(frame, _)) => frame.encoded_len(),
            _ => return Ok(false),
        };
        buf.resize(len, 0);
        let n = self.log.read(position, buf)?;
        Ok(matches!(codec::decode(&buf[..n]), Ok(Decoded::Frame(..))))
    }

    /// Follower: log bytes from the leader, which may end inside a frame (a frame larger than
    /// a datagram arrives in pieces). Whole frames go to consensus at once; the piece of a
    /// frame at the end waits in `partial` for the rest, which must follow it directly.
    pub(super) fn on_append_data(
        &mut self,
        now: u64,
        from: MemberId,
        header: AppendDataHeader,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let log_end = self.log.appended_position();
        // A piece that starts inside or at the end of the waiting one extends it (the bytes
        // they share are the same: one leader, one term), so a resend after a loss carries the
        // frame on from where the last attempt broke off rather than from its start.
        let extends = self.partial.as_ref().is_some_and(|p| {
            p.leader == from
                && p.term == header.leadership_term_id
                && p.start == log_end
                && (p.start..=p.start + p.bytes.len() as u64).contains(&header.log_position)
        });
        if self
            .partial
            .as_ref()
            .is_some_and(|p| p.start != log_end || p.leader != from)
        {
            self.partial = None; // stale: the log moved, or another leader
        }
        let mut joined = if extends { self.partial.take() } else { None };
        if let Some(p) = &mut joined {
            // `extends` put the piece's start inside [p.start, p.start + p.bytes.len()].
            let end = p.start + p.bytes.len() as u64;
            let overlap = end.saturating_sub(header.log_position) as usize;
            if overlap < bytes.len() {
                p.bytes.extend_from_slice(&bytes[overlap..]);
            }
        }
        let position = joined.as_ref().map_or(header.log_position, |p| p.start);
        let (whole, piece) = {
            let data = joined.as_ref().map_or(bytes, |p| &p.bytes[..]);
            let mut whole = 0;
            for (offset, frame) in Frames::new(data).map_while(Result::ok) {
                let end = offset + frame.encoded_len();
                if end > data.len() {
                    break;
                }
                whole = end;
            }
            let piece = whole < data.len()
                && matches!(
                    codec::decode(&data[whole..]),
                    Err(codec::DecodeError::Truncated { needed, .. }) if needed <= codec::FRAME_LEN_MAX
                );
            (whole, piece)
        };
        // Still one unfinished frame: the joined bytes wait as they are (no copy).
        let rest = match joined {
            Some(p) if whole == 0 => Some(p.bytes),
            Some(p) => {
                let data = p.bytes;
                let rest = piece.then(|| data[whole..].to_vec());
                self.consume_whole(now, from, header, position, &data[..whole])?;
                rest
            }
            None => {
                let rest = piece.then(|| bytes[whole..].to_vec());
                self.consume_whole(now, from, header, position, &bytes[..whole])?;
                rest
            }
        };
        if whole == 0 {
            // Nothing whole yet: still news from the leader (its contact timer).
            self.consume_whole(now, from, header, position, &[])?;
        }
        let start = position + whole as u64;
        if let Some(bytes) = rest.filter(|_| {
            piece && start == self.log.appended_position() && self.consensus.leader() == Some(from)
        }) {
            self.partial = Some(Partial {
                leader: from,
                term: header.leadership_term_id,
                start,
                bytes,
            });
        }
        Ok(())
    }

    /// Hands whole frames of log bytes at `position` to consensus as one `AppendData`.
    pub(super) fn consume_whole(
        &mut self,
        now: u64,
        from: MemberId,
        header: AppendDataHeader,
        position: u64,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        let message = Message::AppendData {
            header: AppendDataHeader {
                log_position: position,
                ..header
            },
            bytes,
        };
        self.consensus.on_message(now, from, &message);
        self.run_actions(now, Some(&message))
    }

    pub(super) fn append_received(
        &mut self,
        now: u64,
        position: u64,
        bytes: &[u8],
    ) -> Result<(), NodeError> {
        // Terms enter the index before their first frame enters the log.
        for (offset, frame) in Frames::new(bytes).map_while(Result::ok) {
            self.last_timestamp_ns = self.last_timestamp_ns.max(frame.meta.timestamp_ns);
            if frame.meta.frame_type != FrameType::NewLeadershipTermEvent as u16 {
                continue;
            }
            let term = frame.meta.term;
            let start = position + offset as u64;
            if self.log.term_index().last().is_none_or(|t| t.term < term) {
                self.log.append_term(term, start)?;
                self.consensus.on_term_started(term, start);
            }
        }
        match self.log.append_raw(position, bytes) {
            Ok(()) => {}
            Err(
                LogError::Full { .. }
                | LogError::BadReplicatedBytes { .. }
                | LogError::NotAtEnd { .. },
            ) => {
                // Dropped: the leader resends from our reported position.
                self.stats.appends_refused += 1;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.consensus
            .on_appended(now, self.log.appended_position());
        Ok(())
    }
}
