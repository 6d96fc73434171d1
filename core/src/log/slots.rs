//! Tail slots: the two alternately written copies of a segment's partial tail block and its
//! round's end (see the module docs of `log`). This module owns their bytes and their reading and
//! writing; it never decides what recovery makes of them.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    pub(super) seq: u64,
    /// Offset of the round's end within the segment.
    pub(super) end_offset: u64,
}

/// A valid slot and its raw bytes (tail block first).
pub(super) type SlotCopy = (Slot, Vec<u8>);

pub(super) fn encode_slot(out: &mut [u8], seq: u64, end_offset: u64, tail: &[u8]) {
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

pub(super) fn decode_slot(bytes: &[u8], segment_bytes: u64) -> Option<Slot> {
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
    pub(super) fn read_slots(&mut self, base: u64) -> Result<[Option<SlotCopy>; 2], LogError> {
        let mut out = [None, None];
        for (i, slot) in out.iter_mut().enumerate() {
            let bytes = self.slot_bytes(base, i as u64)?;
            *slot = decode_slot(&bytes, self.config.segment_bytes).map(|s| (s, bytes));
        }
        Ok(out)
    }

    /// The raw bytes of tail slot `index` of a segment.
    pub(super) fn slot_bytes(&mut self, base: u64, index: u64) -> Result<Vec<u8>, LogError> {
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
    pub(super) fn slot_torn(&mut self, base: u64, index: u64) -> Result<bool, LogError> {
        let bytes = self.slot_bytes(base, index)?;
        Ok(!is_zero(&bytes) && decode_slot(&bytes, self.config.segment_bytes).is_none())
    }

    /// Writes one slot synchronously and durably (recovery and truncation only).
    pub(super) fn write_slot_sync(
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
}
