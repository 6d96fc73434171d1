//! What a member promised before its disk was found damaged.
//!
//! A checksum failure at or below the position a log reported durable is corruption, not a
//! torn tail: the member told its leader it held those bytes, and the leader may have counted
//! it toward a commit. Cutting the log there and carrying on would let the member vote for
//! (or become) a leader that lacks acknowledged writes. So recovery first records, durably,
//! the longest log it had vouched for; consensus then keeps the member out of leadership, and
//! lets it vote only for logs at least that long, until replication has repaired the range.
//!
//! ```text
//! record: magic u64 | term u64 | position u64 | crc32c u32 over all before it
//! ```

use crate::io::Disk;

use super::LogError;

/// The record of the promise, beside the segments.
pub const PROMISE_FILE: &str = "log-promise";
const MAGIC: u64 = 0x7072_6f6d_6973_6521; // "promise!"
const LEN: usize = 28;

/// A log (term of its last byte, end) that this member once reported durable.
/// Ordered as Raft compares logs: by term, then position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Promise {
    pub term: u64,
    pub position: u64,
}

/// Corruption found by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file holding the first bad frame.
    pub file: String,
    /// The log position of the first bad frame; the log now ends here.
    pub position: u64,
    /// The end the log had vouched for, and the term of its last byte.
    pub promised: u64,
    pub term: u64,
}

impl Promise {
    pub(super) fn load(disk: &mut impl Disk) -> Result<Option<Self>, LogError> {
        let bytes = disk
            .load_record(PROMISE_FILE)
            .map_err(|source| LogError::Io {
                file: PROMISE_FILE.into(),
                position: 0,
                source,
            })?;
        let Some(bytes) = bytes else { return Ok(None) };
        Self::decode(&bytes)
            .map(Some)
            .ok_or_else(|| LogError::Corrupt {
                file: PROMISE_FILE.into(),
                reason: "bad magic, length or checksum: the position this member vouched for before an earlier repair is unknown; restore the file or replace the member".into(),
            })
    }

    pub(super) fn store(&self, disk: &mut impl Disk) -> Result<(), LogError> {
        disk.store_record(PROMISE_FILE, &self.encode())
            .map_err(|source| LogError::Io {
                file: PROMISE_FILE.into(),
                position: self.position,
                source,
            })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LEN {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
        (word(0) == MAGIC && crc32c::crc32c(&bytes[..24]) == crc).then(|| Self {
            term: word(8),
            position: word(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_never_panics(term: u64, position: u64, noise: Vec<u8>) {
            let p = Promise { term, position };
            prop_assert_eq!(Promise::decode(&p.encode()), Some(p));
            let _ = Promise::decode(&noise);
        }

        #[test]
        fn any_flipped_bit_is_refused(term: u64, position: u64, bit in 0usize..LEN * 8) {
            let mut bytes = Promise { term, position }.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(Promise::decode(&bytes), None);
        }
    }
}
