//! The leadership-term index: for every term, the log position at which it began.
//!
//! Stored as one small file, replaced atomically (write a temporary, fsync, rename, fsync the
//! directory) on every change, so a reader sees the old index or the new one, never a mix.
//!
//! ```text
//! magic u64 | count u64 | count × (term u64, start_position u64) | crc32c u32 over all before it
//! ```

use crate::io::Disk;

use super::LogError;

pub const TERM_INDEX_FILE: &str = "term-index";
const MAGIC: u64 = 0x7261_6674_7465_726d; // "raftterm"

pub use crate::consensus::TermEntry;

/// In-memory copy of the durable index.
/// Invariant: terms strictly increase and start positions never decrease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TermIndex {
    entries: Vec<TermEntry>,
}

impl TermIndex {
    pub fn load(disk: &mut impl Disk) -> Result<Self, LogError> {
        let Some(bytes) = disk
            .load_record(TERM_INDEX_FILE)
            .map_err(|source| LogError::Io {
                file: TERM_INDEX_FILE.into(),
                position: 0,
                source,
            })?
        else {
            return Ok(Self::default());
        };
        Self::decode(&bytes).ok_or_else(|| LogError::Corrupt {
            file: TERM_INDEX_FILE.into(),
            reason: "bad magic, length or checksum".into(),
        })
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        if word(0)? != MAGIC {
            return None;
        }
        let count = usize::try_from(word(8)?).ok()?;
        let body_len = count.checked_mul(16)?.checked_add(16)?;
        if bytes.len() != body_len + 4 {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[body_len..].try_into().ok()?);
        if crc32c::crc32c(&bytes[..body_len]) != crc {
            return None;
        }
        let entries = (0..count)
            .map(|i| {
                Some(TermEntry {
                    term: word(16 + i * 16)?,
                    start_position: word(24 + i * 16)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let index = Self { entries };
        index.is_ordered().then_some(index)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.entries.len() * 16);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.term.to_le_bytes());
            out.extend_from_slice(&e.start_position.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn is_ordered(&self) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].term < w[1].term && w[0].start_position <= w[1].start_position)
    }

    fn store(&self, disk: &mut impl Disk) -> Result<(), LogError> {
        disk.store_record(TERM_INDEX_FILE, &self.encode())
            .map_err(|source| LogError::Io {
                file: TERM_INDEX_FILE.into(),
                position: 0,
                source,
            })
    }

    pub fn entries(&self) -> &[TermEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<TermEntry> {
        self.entries.last().copied()
    }

    /// The term that wrote `position`: the last term that began at or before it.
    pub fn term_at(&self, position: u64) -> Option<u64> {
        let i = self
            .entries
            .partition_point(|e| e.start_position <= position);
        i.checked_sub(1).map(|i| self.entries[i].term)
    }

    /// Where `term` began, if it is in the index.
    pub fn start_of(&self, term: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.term == term)
            .map(|e| e.start_position)
    }

    /// Records that `term` begins at `start_position`, durably, before the caller acts in it.
    /// Replaces the whole index (a follower whose log restarts after a snapshot install).
    pub fn replace(
        &mut self,
        disk: &mut impl Disk,
        entries: Vec<TermEntry>,
    ) -> Result<(), LogError> {
        self.entries = entries;
        assert!(self.is_ordered(), "term index out of order");
        self.store(disk)
    }

    /// Panics if the term does not follow the last one (a consensus bug).
    pub fn append(
        &mut self,
        disk: &mut impl Disk,
        term: u64,
        start_position: u64,
    ) -> Result<(), LogError> {
        if let Some(last) = self.last() {
            assert!(
                term > last.term,
                "term {term} does not follow {}",
                last.term
            );
            assert!(
                start_position >= last.start_position,
                "term {term} starts before term {}",
                last.term
            );
        }
        self.entries.push(TermEntry {
            term,
            start_position,
        });
        self.store(disk)
    }

    /// Drops the terms that begin at or after `position`: after the log is cut there they
    /// hold no bytes. Every term in the index describes bytes in the log.
    pub fn truncate_from(&mut self, disk: &mut impl Disk, position: u64) -> Result<(), LogError> {
        let keep = self
            .entries
            .partition_point(|e| e.start_position < position);
        self.keep_first(disk, keep)
    }

    /// Drops the terms above `term`.
    pub fn truncate_terms_after(
        &mut self,
        disk: &mut impl Disk,
        term: u64,
    ) -> Result<(), LogError> {
        let keep = self.entries.partition_point(|e| e.term <= term);
        self.keep_first(disk, keep)
    }

    fn keep_first(&mut self, disk: &mut impl Disk, keep: usize) -> Result<(), LogError> {
        if keep == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(keep);
        self.store(disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::disk::{SimDisk, SimDiskConfig};

    #[test]
    fn survives_reload_and_rejects_damage() {
        let mut disk = SimDisk::new(1, SimDiskConfig::default());
        let mut index = TermIndex::load(&mut disk).unwrap();
        index.append(&mut disk, 1, 0).unwrap();
        index.append(&mut disk, 3, 4096).unwrap();
        index.append(&mut disk, 4, 9000).unwrap();
        assert_eq!(TermIndex::load(&mut disk).unwrap(), index);
        assert_eq!(index.term_at(0), Some(1));
        assert_eq!(index.term_at(4095), Some(1));
        assert_eq!(index.term_at(4096), Some(3));
        assert_eq!(index.term_at(1 << 40), Some(4));
        assert_eq!(index.start_of(3), Some(4096));

        index.truncate_from(&mut disk, 5000).unwrap();
        assert_eq!(TermIndex::load(&mut disk).unwrap().entries().len(), 2);
        index.truncate_from(&mut disk, 4096).unwrap();
        assert_eq!(
            TermIndex::load(&mut disk).unwrap().entries().len(),
            1,
            "a term starting at the cut holds no bytes"
        );
        index.append(&mut disk, 5, 4096).unwrap();
        index.truncate_terms_after(&mut disk, 4).unwrap();
        assert_eq!(TermIndex::load(&mut disk).unwrap().entries().len(), 1);

        let mut bytes = disk.load_record(TERM_INDEX_FILE).unwrap().unwrap();
        bytes[20] ^= 1;
        disk.store_record(TERM_INDEX_FILE, &bytes).unwrap();
        assert!(matches!(
            TermIndex::load(&mut disk),
            Err(LogError::Corrupt { .. })
        ));
    }
}
