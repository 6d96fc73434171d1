//! Record-ring memory in a memory-mapped file, shared by processes on one host (the IPC
//! transport). The ring code is the same as on the heap (`records`); only where the counters
//! and words live differs.
//!
//! ```text
//!  offset 0     magic "RLNRING1", capacity, readers       (written once, before the name exists)
//!  offset 128   tail                                       (each counter on its own 128 bytes)
//!  offset 256   bell
//!  offset 384   head of reader 0, 1, … (128 bytes apart, at most 28 readers)
//!  offset 4096  the buffer: `capacity` bytes, a power of two
//! ```
//!
//! Counters persist in the file: a process that restarts re-attaches where its side stopped,
//! so a restarted node reads what was sent to it while it was down (stale messages that the
//! protocol ignores), and a restarted sender continues after the last published record.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use memmap2::MmapMut;

use super::records::RingMemory;

const MAGIC: u64 = u64::from_le_bytes(*b"RLNRING1");
const TAIL_AT: usize = 128;
const BELL_AT: usize = 256;
const HEADS_AT: usize = 384;
const DATA_AT: usize = 4096;
/// The most readers the header has room for.
pub const MAX_READERS: usize = (DATA_AT - HEADS_AT) / 128;

/// A ring's memory in a shared file.
pub struct MappedMemory {
    map: MmapMut,
    capacity: usize,
    readers: usize,
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("ring file {}: {what}", path.display()),
    )
}

impl MappedMemory {
    /// Maps the ring file at `path`, creating it with `capacity` bytes (rounded up to a power
    /// of two) and `readers` readers if it does not exist. Two processes racing to create it
    /// end up with the same file (it is made under a temporary name and linked into place).
    /// An existing file with another shape is an error naming the difference.
    pub fn open_or_create(path: &Path, capacity: usize, readers: usize) -> io::Result<Self> {
        assert!(
            (1..=MAX_READERS).contains(&readers),
            "1..={MAX_READERS} readers"
        );
        let capacity = capacity.max(64).next_power_of_two();
        if !path.exists() {
            let tmp = path.with_extension(format!("creating-{}", std::process::id()));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.set_len((DATA_AT + capacity) as u64)?;
            // SAFETY: the file is ours alone until it is linked under its real name below.
            let mut map = unsafe { MmapMut::map_mut(&file)? };
            map[8..16].copy_from_slice(&(capacity as u64).to_le_bytes());
            map[16..24].copy_from_slice(&(readers as u64).to_le_bytes());
            map[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            drop(map);
            let linked = std::fs::hard_link(&tmp, path);
            std::fs::remove_file(&tmp)?;
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Self::open(path, capacity, readers)
    }

    fn open(path: &Path, capacity: usize, readers: usize) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < DATA_AT {
            return Err(invalid(
                path,
                format!("{len} bytes is shorter than its header"),
            ));
        }
        // SAFETY: the mapping is shared with other raftline processes, which change it only
        // through the atomic counters and words of the ring protocol; no `&[u8]` of the
        // mapping is held across those changes (the header is read once, below, before the
        // ring starts).
        let map = unsafe { MmapMut::map_mut(&file)? };
        let word = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().expect("8 bytes"));
        if word(0) != MAGIC {
            return Err(invalid(path, "not a raftline ring (bad magic)".into()));
        }
        let (have_capacity, have_readers) = (word(8) as usize, word(16) as usize);
        if have_capacity != capacity || have_readers != readers || len != DATA_AT + capacity {
            return Err(invalid(
                path,
                format!(
                    "made for {have_capacity} bytes and {have_readers} readers, \
                     opened for {capacity} bytes and {readers} readers; remove it or match \
                     the configuration"
                ),
            ));
        }
        Ok(Self {
            map,
            capacity,
            readers,
        })
    }

    fn counter(&self, at: usize) -> &AtomicUsize {
        debug_assert!(at % 8 == 0 && at + 8 <= DATA_AT);
        // SAFETY: `at` is 8-byte aligned inside the header page of a page-aligned mapping that
        // lives as long as `self`; AtomicUsize has the size and alignment of usize (8 bytes on
        // the 64-bit targets we build for), and every process touches this word only through
        // atomic operations.
        unsafe { &*(self.map.as_ptr().add(at) as *const AtomicUsize) }
    }
}

impl RingMemory for MappedMemory {
    fn tail(&self) -> &AtomicUsize {
        self.counter(TAIL_AT)
    }
    fn head(&self, reader: usize) -> &AtomicUsize {
        assert!(reader < self.readers);
        self.counter(HEADS_AT + 128 * reader)
    }
    fn readers(&self) -> usize {
        self.readers
    }
    fn bell(&self) -> &AtomicUsize {
        self.counter(BELL_AT)
    }
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the buffer is `capacity` bytes from DATA_AT (checked against the file length
        // in `open`), 8-byte aligned, inside a mapping that lives as long as `self`; AtomicU64
        // has the layout of u64 and every process accesses the words only atomically.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(DATA_AT) as *const AtomicU64,
                self.capacity / 8,
            )
        }
    }
}
