//! Small records made durable with one data sync: the vote and the term index, written on
//! every election. Replacing a file atomically (temporary file, fsync, rename, fsync of the
//! directory) costs two journal commits; this costs one `fdatasync` of an overwritten block.
//!
//! A record lives in two preallocated, zero-filled slot files, `<name>.slot0` and
//! `<name>.slot1`, written alternately in the format of `io::record`. The caller acts on a value
//! only after `store` returns. A damaged slot is reported, never passed over (`io::record`
//! says why). Slots grow (a rare metadata change, fsynced) when a record outgrows them.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::io::record::{encode, newest, parse_slot, read_slots, slot_name, Slot};
use crate::io::DiskError;

/// Initial slot size: room for the term index of about 4000 terms.
const SLOT_MIN: u64 = 64 * 1024;

fn err(op: &'static str) -> impl Fn(std::io::Error) -> DiskError {
    move |e| DiskError::from_io(op, &e)
}

/// What loading a record found: its value, none, or damage (see `io::record`).
pub type Loaded = Result<Option<Vec<u8>>, DiskError>;

/// One record's two open slot files and the sequence last written.
pub struct Record {
    files: [File; 2],
    sequence: u64,
    slot_len: u64,
}

fn read_slot(file: &File) -> Result<Slot, DiskError> {
    let len = file.metadata().map_err(err("stat record slot"))?.len();
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(err("read record slot"))?;
    Ok(parse_slot(&bytes))
}

fn zero_fill(file: &File, from: u64, to: u64) -> Result<(), DiskError> {
    let zeros = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(err("zero-fill record slot"))?;
        at += n as u64;
    }
    file.sync_all().map_err(err("fsync record slot"))
}

impl Record {
    /// Opens (creating and zero-filling if needed) the slots of `name` in `dir`, and loads the
    /// newest value: `Ok(None)` if the record was never written; an error if a slot is damaged
    /// (see `io::record`). The record can be stored to either way.
    pub fn open(dir: &Path, name: &str) -> Result<(Self, Loaded), DiskError> {
        let mut created = false;
        let mut open = |slot: u64| -> Result<File, DiskError> {
            let path = dir.join(slot_name(name, slot));
            let existed = path.exists();
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(err("open record slot"))?;
            if !existed {
                zero_fill(&f, 0, SLOT_MIN)?;
                created = true;
            }
            Ok(f)
        };
        let files = [open(0)?, open(1)?];
        if created {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err("fsync directory"))?;
        }
        let slots = [read_slot(&files[0])?, read_slot(&files[1])?];
        let read = read_slots(slots.clone());
        // Writing goes on after the newest valid sequence even when loading refuses a damaged
        // slot: a value rebuilt elsewhere (the term index) overwrites the damage.
        let sequence = read.newest.as_ref().map_or(0, |b| b.0);
        let best = newest(slots);
        let slot_len = files
            .iter()
            .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
            .min()
            .unwrap_or(0);
        Ok((
            Self {
                files,
                sequence,
                slot_len,
            },
            best.map(|b| b.map(|b| b.1)),
        ))
    }

    /// Writes `bytes` as the next value, durably (one `fdatasync`), into the older slot.
    pub fn store(&mut self, bytes: &[u8]) -> Result<(), DiskError> {
        let next = self.sequence + 1;
        let out = encode(next, bytes);
        if out.len() as u64 > self.slot_len {
            let len = (out.len() as u64).next_power_of_two().max(SLOT_MIN);
            for f in &self.files {
                zero_fill(f, self.slot_len, len)?;
            }
            self.slot_len = len;
        }
        let file = &self.files[(next % 2) as usize];
        crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
        file.write_all_at(&out, 0).map_err(err("write record"))?;
        crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
        file.sync_data().map_err(err("fdatasync record"))?;
        self.sequence = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_value_survives_reopening_and_a_damaged_slot_is_never_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, v) = Record::open(dir.path(), "vote").unwrap();
        assert_eq!(v.unwrap(), None);
        r.store(b"term 1").unwrap();
        r.store(b"term 2").unwrap();
        r.store(b"term 3").unwrap();
        drop(r);
        let (mut r, v) = Record::open(dir.path(), "vote").unwrap();
        assert_eq!(v.unwrap().as_deref(), Some(&b"term 3"[..]));
        // Sequence 4 goes to slot 0; tear it.
        r.store(b"term 4").unwrap();
        let slot0 = dir.path().join("vote.slot0");
        let f = OpenOptions::new().write(true).open(&slot0).unwrap();
        f.write_all_at(b"XX", 18).unwrap();
        // Torn or damaged later, it may have held the newest value: an error, not term 3.
        let (mut r, v) = Record::open(dir.path(), "vote").unwrap();
        let e = v.unwrap_err();
        assert!(e.is_corrupt() && e.to_string().contains("slot 0"), "{e}");
        // Storing still works (after sequence 3) and overwrites the damage.
        r.store(b"term 5").unwrap();
        let (_, v) = Record::open(dir.path(), "vote").unwrap();
        assert_eq!(v.unwrap().as_deref(), Some(&b"term 5"[..]));
    }

    #[test]
    fn a_record_larger_than_a_slot_grows_both_slots() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Record::open(dir.path(), "terms").unwrap();
        let big = vec![7u8; 100_000];
        r.store(&big).unwrap();
        r.store(b"small again").unwrap();
        r.store(&big).unwrap();
        let (_, v) = Record::open(dir.path(), "terms").unwrap();
        assert_eq!(v.unwrap().unwrap(), big);
    }

    #[test]
    fn two_damaged_slots_are_an_error_not_an_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _) = Record::open(dir.path(), "vote").unwrap();
        r.store(b"a").unwrap();
        r.store(b"b").unwrap();
        for slot in 0..2 {
            let f = OpenOptions::new()
                .write(true)
                .open(dir.path().join(slot_name("vote", slot)))
                .unwrap();
            f.write_all_at(b"garbage!", 0).unwrap();
        }
        let e = Record::open(dir.path(), "vote").unwrap().1.unwrap_err();
        assert!(e.to_string().contains("no slot holds a valid value"), "{e}");
    }
}
