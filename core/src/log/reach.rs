//! How far the log has reached: the base of the newest segment it has written into.
//!
//! A segment file that vanishes (deleted by hand, lost by a damaged file system) takes its
//! frames with it and leaves no damaged bytes to find: without a record the log would recover
//! silently to the end of the segment before, below what this member reported durable. So the
//! log records, durably and before the first write into a segment, that it has reached it (one
//! small record write per segment, not per round). Recovery that finds segments up to `base`
//! missing treats it as corruption below the durable end: the member may have vouched for any
//! position up to the end of that segment.
//!
//! ```text
//! record: magic u64 | segment base u64 | crc32c u32 over all before it
//! ```

use crate::io::Disk;

use super::LogError;

/// The record, beside the segments.
pub const REACH_FILE: &str = "log-reach";
const MAGIC: u64 = 0x7265_6163_6865_6421; // "reached!"
const LEN: usize = 20;

pub(super) fn encode(base: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The base in `bytes`, if they are an intact record naming a segment boundary.
pub(super) fn decode(bytes: &[u8], segment_bytes: u64) -> Option<u64> {
    if bytes.len() != LEN {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let base = word(8);
    (word(0) == MAGIC && crc32c::crc32c(&bytes[..16]) == crc && base % segment_bytes == 0)
        .then_some(base)
}

pub(super) fn store(disk: &mut impl Disk, base: u64) -> Result<(), LogError> {
    disk.store_record(REACH_FILE, &encode(base))
        .map_err(|source| LogError::Io {
            file: REACH_FILE.into(),
            position: base,
            source,
        })
}

/// The recorded base: `Ok(None)` if there is none, `Err(why)` if the record is unreadable.
pub(super) fn load(disk: &mut impl Disk, segment_bytes: u64) -> Result<Option<u64>, String> {
    match disk.load_record(REACH_FILE) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => decode(&bytes, segment_bytes)
            .map(Some)
            .ok_or_else(|| "bad magic, length, checksum or segment base".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_flipped_bit_or_an_unaligned_base() {
        let seg = 1 << 20;
        assert_eq!(decode(&encode(3 << 20), seg), Some(3 << 20));
        let bytes = encode(3 << 20);
        for bit in 0..LEN * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&b, seg), None, "bit {bit}");
        }
        assert_eq!(decode(&encode(12345), seg), None);
    }
}
