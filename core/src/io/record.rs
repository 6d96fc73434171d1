//! The format of a small record kept in two alternately written slots (the vote and the term
//! index). `sys::record` stores it in files; this module owns the bytes, so the simulator and the
//! fuzz targets read and write the same format the node ships with.
//!
//! ```text
//! magic "RLRC" | sequence u64 | length u32 | bytes | crc32c u32 (of everything before it)
//! ```
//!
//! A write torn by a crash damages only the slot being written, whose value nobody has acted
//! on, and the other slot still holds the value before it. But a slot damaged later (a bad
//! sector, a stray write) looks the same, and may have held the newest value: a vote this
//! member acted on. Loading the older slot then would let the member vote twice in one term.
//! So a damaged slot is never passed over: loading reports it as corruption, and the caller
//! rebuilds the value from elsewhere (the term index from the log) or takes a safe path
//! (`--recover-vote`). A record is a few bytes in one sector, which devices write whole, so
//! a torn slot is rare; this costs an operator step then, never a second vote.

#![forbid(unsafe_code)]

use super::DiskError;

const MAGIC: &[u8; 4] = b"RLRC";
/// Bytes before a record's value.
pub const HEADER: usize = 4 + 8 + 4;
/// Bytes after a record's value (its checksum).
pub const TRAILER: usize = 4;

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    Empty,
    Valid(u64, Vec<u8>),
    Damaged,
}

/// The file name of slot `slot` (0 or 1) of record `name`, on the real disk and the simulated one.
pub fn slot_name(name: &str, slot: u64) -> String {
    format!("{name}.slot{slot}")
}

/// The bytes of slot value `bytes` written with `sequence`.
pub fn encode(sequence: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + bytes.len() + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What the bytes of one slot hold. Never panics on any input.
pub fn parse_slot(bytes: &[u8]) -> Slot {
    if bytes.iter().all(|&b| b == 0) {
        return Slot::Empty;
    }
    if bytes.len() < HEADER + TRAILER || &bytes[..4] != MAGIC {
        return Slot::Damaged;
    }
    let sequence = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    let n = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let Some(end) = HEADER.checked_add(n).filter(|e| e + TRAILER <= bytes.len()) else {
        return Slot::Damaged;
    };
    let stored = u32::from_le_bytes(bytes[end..end + TRAILER].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..end]) != stored {
        return Slot::Damaged;
    }
    Slot::Valid(sequence, bytes[HEADER..end].to_vec())
}

/// What two slots hold: the valid value with the higher sequence, and the first slot that
/// is damaged, if any.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Slots {
    pub newest: Option<(u64, Vec<u8>)>,
    pub damaged: Option<usize>,
}

/// Reads two slots (see the module docs for why a damaged one is kept apart).
pub fn read_slots(slots: [Slot; 2]) -> Slots {
    let mut out = Slots::default();
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Slot::Empty => {}
            Slot::Damaged => {
                out.damaged.get_or_insert(i);
            }
            Slot::Valid(sequence, bytes) => {
                if out.newest.as_ref().is_none_or(|b| sequence > b.0) {
                    out.newest = Some((sequence, bytes));
                }
            }
        }
    }
    out
}

/// The newest value of two slots: `None` if neither was ever written, an error if either is
/// damaged (it may have held the newest value).
pub fn newest(slots: [Slot; 2]) -> Result<Option<(u64, Vec<u8>)>, DiskError> {
    let read = read_slots(slots);
    if let Some(slot) = read.damaged {
        let op = match (slot, read.newest.is_some()) {
            (0, true) => "load record (slot 0 fails its checksum and may have held a newer value than slot 1)",
            (_, true) => "load record (slot 1 fails its checksum and may have held a newer value than slot 0)",
            (0, false) => "load record (no slot holds a valid value, slot 0 fails its checksum)",
            (_, false) => "load record (no slot holds a valid value, slot 1 fails its checksum)",
        };
        return Err(DiskError::new(op, crate::io::errno::EBADMSG));
    }
    Ok(read.newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_and_any_flipped_byte_is_damage() {
        let bytes = encode(7, b"term 3");
        assert_eq!(parse_slot(&bytes), Slot::Valid(7, b"term 3".to_vec()));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert_eq!(parse_slot(&b), Slot::Damaged, "byte {i}");
        }
    }

    #[test]
    fn the_higher_sequence_wins_and_two_damaged_slots_are_an_error() {
        let a = parse_slot(&encode(1, b"a"));
        let b = parse_slot(&encode(2, b"b"));
        assert_eq!(newest([a, b]).unwrap(), Some((2, b"b".to_vec())));
        assert_eq!(newest([Slot::Empty, Slot::Empty]).unwrap(), None);
        let e = newest([Slot::Damaged, Slot::Damaged]).unwrap_err();
        assert!(e.is_corrupt(), "{e}");
        // One damaged slot may have held the newest value: never passed over.
        let e = newest([parse_slot(&encode(1, b"a")), Slot::Damaged]).unwrap_err();
        assert!(e.is_corrupt() && e.to_string().contains("slot 1"), "{e}");
        let e = newest([Slot::Damaged, Slot::Empty]).unwrap_err();
        assert!(e.to_string().contains("no slot holds a valid value"), "{e}");
    }
}
