//! Small records made durable with one data sync: the vote and the term index, written on
//! every election. Replacing a file atomically (temporary file, fsync, rename, fsync of the
//! directory) costs two journal commits; this costs one `fdatasync` of an overwritten block.
//!
//! A record lives in two preallocated, zero-filled slot files, `<name>.slot0` and
//! `<name>.slot1`, written alternately in the format of `io::record`. The caller acts on a value
//! only after `store` returns, so a torn write damages a value nobody acted on. Slots grow (a
//! rare metadata change, fsynced) when a record outgrows them.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::io::record::{encode, newest, parse_slot, Slot};
use crate::io::DiskError;

/// Initial slot size: room for the term index of about 4000 terms.
const SLOT_MIN: u64 = 64 * 1024;

fn slot_name(name: &str, slot: u64) -> String {
    format!("{name}.slot{slot}")
}

fn err(op: &'static str) -> impl Fn(std::io::Error) -> DiskError {
    move |e| DiskError::from_io(op, &e)
}

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
    /// newest valid value: `Ok(None)` if the record was never written; an error if a slot was
    /// written but none is valid.
    pub fn open(dir: &Path, name: &str) -> Result<(Self, Option<Vec<u8>>), DiskError> {
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
        let best = newest([read_slot(&files[0])?, read_slot(&files[1])?])?;
        let slot_len = files
            .iter()
            .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
            .min()
            .unwrap_or(0);
        let sequence = best.as_ref().map_or(0, |b| b.0);
        Ok((
            Self {
                files,
                sequence,
                slot_len,
            },
            best.map(|b| b.1),
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
        file.write_all_at(&out, 0).map_err(err("write record"))?;
        file.sync_data().map_err(err("fdatasync record"))?;
        self.sequence = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_value_survives_reopening_and_a_torn_write_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, v) = Record::open(dir.path(), "vote").unwrap();
        assert_eq!(v, None);
        r.store(b"term 1").unwrap();
        r.store(b"term 2").unwrap();
        r.store(b"term 3").unwrap();
        drop(r);
        let (mut r, v) = Record::open(dir.path(), "vote").unwrap();
        assert_eq!(v.as_deref(), Some(&b"term 3"[..]));
        // Sequence 4 goes to slot 0; tear it.
        r.store(b"term 4").unwrap();
        let slot0 = dir.path().join("vote.slot0");
        let f = OpenOptions::new().write(true).open(&slot0).unwrap();
        f.write_all_at(b"XX", 18).unwrap();
        let (_, v) = Record::open(dir.path(), "vote").unwrap();
        assert_eq!(v.as_deref(), Some(&b"term 3"[..]));
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
        assert_eq!(v.unwrap(), big);
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
        let e = Record::open(dir.path(), "vote").err().unwrap();
        assert!(e.to_string().contains("damaged"), "{e}");
    }
}
