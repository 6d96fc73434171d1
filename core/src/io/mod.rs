//! The IO seams: narrow traits shaped like the real completion APIs.
//!
//! [`Disk`] is how the log talks to storage. Data-plane operations (write, fsync) are
//! *submitted* with a `user_data` tag and *reaped* later as [`Completion`]s, exactly like
//! io_uring; the Linux implementation is `sys::disk::LinuxDisk`, the simulated one (latency,
//! torn writes, lost unsynced data on crash) is `sim::disk::SimDisk`. Control-plane operations
//! (open, rename, zero-fill, atomic small files) are synchronous and durable when they return:
//! they happen at start-up, at segment roll and on truncation, never per append.
//!
//! The disk owns the IO buffers. A buffer cannot be borrowed mutably while an operation that
//! reads it is in flight, so the kernel never reads bytes the log is still changing.

mod aligned;
pub mod errno;
pub mod record;

pub use aligned::{AlignedBuf, BLOCK_LEN};

/// Index of an open file in a [`Disk`].
pub type FileId = u32;
/// Index of a buffer owned by a [`Disk`].
pub type BufId = u32;

/// One data-plane operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// Write `len` bytes of buffer `buf` starting at `buf_offset` to `file` at `offset`.
    /// Offsets and length are multiples of [`BLOCK_LEN`]. With `dsync` the write is durable
    /// when it completes (RWF_DSYNC), without it only after a later `Fsync` of the file.
    Write {
        file: FileId,
        offset: u64,
        buf: BufId,
        buf_offset: usize,
        len: usize,
        dsync: bool,
    },
    /// fdatasync: every write to `file` that completed before this was submitted is durable
    /// when it completes.
    Fsync { file: FileId },
}

/// The outcome of a submitted operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub user_data: u64,
    pub result: Result<(), DiskError>,
}

/// An IO error with the operation and the OS error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {} (errno {errno}){}", strerror(*errno), hint(*errno))]
pub struct DiskError {
    pub op: &'static str,
    pub errno: i32,
}

impl DiskError {
    pub fn new(op: &'static str, errno: i32) -> Self {
        Self { op, errno }
    }

    pub fn from_io(op: &'static str, e: &std::io::Error) -> Self {
        Self {
            op,
            errno: e.raw_os_error().unwrap_or(errno::EIO),
        }
    }

    /// The bytes were read but failed their checksum (EBADMSG): damage, not a device error.
    pub fn is_corrupt(&self) -> bool {
        self.errno == errno::EBADMSG
    }

    pub fn is_no_space(&self) -> bool {
        self.errno == errno::ENOSPC || self.errno == errno::EDQUOT
    }
}

fn strerror(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

fn hint(errno: i32) -> &'static str {
    match errno {
        errno::ENOSPC | errno::EDQUOT => "; free space in the log directory or purge old segments",
        errno::EIO => "; the device reported an IO error: check dmesg and the disk",
        errno::EBADMSG => "; the bytes read back are damaged (a checksum failed): the file is corrupt, not unreadable",
        errno::EINVAL => "; the filesystem may not support O_DIRECT with this alignment",
        errno::EPERM | errno::ENOSYS => {
            "; io_uring may be disabled (kernel.io_uring_disabled, seccomp)"
        }
        _ => "",
    }
}

/// The whole-file operations on one directory: listing it, and small files read, replaced
/// and removed whole, each durable when it returns. What snapshots, records and the log's
/// housekeeping need; a [`Disk`] has them too, and a thread that only writes snapshots can
/// have them alone (`sys::files::DirFiles`).
pub trait Files {
    /// Names of the files in the directory, in no particular order.
    fn list(&mut self) -> Result<Vec<String>, DiskError>;
    /// Replaces the small file `name` with `bytes` atomically and durably
    /// (write a temporary, fsync, rename, fsync the directory).
    fn write_file_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// Reads the whole small file `name`, or `None` if it does not exist.
    fn read_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError>;
    /// Removes `name` durably (the directory is synced); a file already gone is no error.
    fn remove(&mut self, name: &str) -> Result<(), DiskError>;
}

/// The writing end of a bounded channel of typed records between two stages of one node (the
/// node and its service's host): a lock-free ring between threads in the runtime, a queue in the
/// simulator. Records are staged, then made visible together by `publish`.
pub trait RecordSink {
    /// Whether a record with `len` payload bytes fits now.
    fn has_room(&mut self, len: usize) -> bool;
    /// Stages one record; false (nothing staged) when it does not fit now.
    fn stage(&mut self, kind: u32, payload: &[u8]) -> bool;
    /// Makes every staged record visible to the reader (and wakes it if it sleeps).
    fn publish(&mut self);
    /// Lets the reader make room: a record that must not be lost waits here (on a thread, a
    /// yield; the simulator's queue always has room).
    fn wait_for_room(&mut self);
}

/// The reading end of a [`RecordSink`]'s channel.
pub trait RecordSource {
    /// Hands up to `max` published records to `f` as (kind, payload); returns how many.
    fn read(&mut self, max: usize, f: impl FnMut(u32, &[u8])) -> usize;
    /// Whether everything published has been read (checked before the reader idles).
    fn is_drained(&self) -> bool;
}

/// A directory with nothing in it that takes nothing: for a stage that has no files (a service
/// host started without a snapshot directory). Writes fail with ENOSYS.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFiles;

impl Files for NoFiles {
    fn list(&mut self) -> Result<Vec<String>, DiskError> {
        Ok(Vec::new())
    }
    fn write_file_atomic(&mut self, _name: &str, _bytes: &[u8]) -> Result<(), DiskError> {
        Err(DiskError::new("write", errno::ENOSYS))
    }
    fn read_file(&mut self, _name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        Ok(None)
    }
    fn remove(&mut self, _name: &str) -> Result<(), DiskError> {
        Ok(())
    }
}

/// Storage shaped like io_uring. See the module docs.
pub trait Disk: Files {
    /// A one-line description of the writer in use, printed once at start.
    fn describe(&self) -> String;
    /// Whether a completed fsync makes data durable (false on tmpfs and similar).
    fn is_durable(&self) -> bool;

    /// Opens `name`. If it does not exist and `create_len` is given, creates it zero-filled to
    /// that length (durable, directory entry included) first.
    fn open(&mut self, name: &str, create_len: Option<u64>) -> Result<FileId, DiskError>;
    fn close(&mut self, file: FileId);
    fn file_len(&self, file: FileId) -> u64;
    /// Renames a closed file, durably (the directory is synced).
    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Reads `out.len()` bytes at `offset` (any alignment). Synchronous.
    fn read_at(&mut self, file: FileId, offset: u64, out: &mut [u8]) -> Result<(), DiskError>;
    /// Writes zeros over `[offset, offset + len)` (block-aligned) and makes them durable.
    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> Result<(), DiskError>;
    /// Replaces the small record `name` with `bytes` durably, as cheaply as the disk allows
    /// (on Linux: one `fdatasync`, see `sys::record`). What [`Disk::load_record`] reads.
    fn store_record(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.write_file_atomic(name, bytes)
    }
    /// The record `name` as last stored, or `None` if it never was.
    fn load_record(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.read_file(name)
    }

    /// Allocates a zeroed, block-aligned IO buffer of `len` bytes (a multiple of BLOCK_LEN).
    /// Done at start-up; buffers live as long as the disk.
    fn alloc_buffer(&mut self, len: usize) -> BufId;
    /// The disk's buffers.
    fn buffers(&self) -> &BufferTable;
    fn buffers_mut(&mut self) -> &mut BufferTable;
    fn buffer(&self, buf: BufId) -> &[u8] {
        self.buffers().get(buf)
    }
    /// Panics if an operation reading this buffer is in flight.
    fn buffer_mut(&mut self, buf: BufId) -> &mut [u8] {
        self.buffers_mut().get_mut(buf)
    }
    /// Copies `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`. `src` may be in
    /// flight (it is only read); `dst` must not be. Panics if `src == dst`.
    fn copy_buffer(
        &mut self,
        src: BufId,
        src_offset: usize,
        dst: BufId,
        dst_offset: usize,
        len: usize,
    ) {
        self.buffers_mut()
            .copy(src, src_offset, dst, dst_offset, len);
    }

    /// Queues an operation. Errors are returned here only when the operation could not be
    /// queued at all; IO errors arrive as completions.
    fn submit(&mut self, op: DiskOp, user_data: u64) -> Result<(), DiskError>;
    /// Hands queued operations to the kernel.
    fn flush(&mut self) -> Result<(), DiskError>;
    /// Appends finished operations to `out` without blocking; returns how many.
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize;
    /// Blocks until at least one operation completes (or none is in flight).
    fn wait(&mut self) -> Result<(), DiskError>;
}

/// The IO buffers a [`Disk`] owns, with the number of operations reading each, so that a
/// buffer is never changed while the kernel (or the simulator) reads it.
#[derive(Debug, Default)]
pub struct BufferTable {
    buffers: Vec<AlignedBuf>,
    /// Invariant: `in_flight[i]` counts submitted, not yet completed operations reading buffer i.
    in_flight: Vec<u32>,
}

impl BufferTable {
    pub fn alloc(&mut self, len: usize) -> BufId {
        self.buffers.push(AlignedBuf::new(len));
        self.in_flight.push(0);
        self.buffers.len() as BufId - 1
    }

    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    pub fn get(&self, buf: BufId) -> &AlignedBuf {
        &self.buffers[buf as usize]
    }

    /// Panics if an operation reading this buffer is in flight.
    pub fn get_mut(&mut self, buf: BufId) -> &mut [u8] {
        assert_eq!(self.in_flight[buf as usize], 0, "buffer {buf} is in flight");
        &mut self.buffers[buf as usize]
    }

    /// All buffers, for registering them with the kernel.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut AlignedBuf> {
        self.buffers.iter_mut()
    }

    /// An operation reading `buf` was submitted.
    pub fn begin_read(&mut self, buf: BufId) {
        self.in_flight[buf as usize] += 1;
    }

    /// An operation reading `buf` completed.
    pub fn end_read(&mut self, buf: BufId) {
        self.in_flight[buf as usize] -= 1;
    }

    /// Drops every buffer (a crashed process's memory).
    pub fn clear(&mut self) {
        self.buffers.clear();
        self.in_flight.clear();
    }

    /// The body of [`Disk::copy_buffer`]: `src` may be in flight, `dst` must not be.
    pub fn copy(
        &mut self,
        src: BufId,
        src_offset: usize,
        dst: BufId,
        dst_offset: usize,
        len: usize,
    ) {
        assert_ne!(src, dst, "copy_buffer within one buffer");
        assert_eq!(self.in_flight[dst as usize], 0, "buffer {dst} is in flight");
        let (src, dst) = (src as usize, dst as usize);
        let (from, to) = if src < dst {
            let (a, b) = self.buffers.split_at_mut(dst);
            (&a[src], &mut b[0])
        } else {
            let (a, b) = self.buffers.split_at_mut(src);
            (&b[0], &mut a[dst])
        };
        to[dst_offset..dst_offset + len].copy_from_slice(&from[src_offset..src_offset + len]);
    }
}

/// Datagrams between members, shaped like sendmmsg/recvmmsg: queue sends, drain receives.
/// Senders are identified by the transport (address → member), never by message contents.
pub trait Datagrams {
    /// Queues one datagram for member `to`. Returns false if it was dropped (queue full,
    /// peer unknown): the protocol resends, so a drop is never an error.
    fn send(&mut self, to: u32, bytes: &[u8]) -> bool;
    /// Copies the next received datagram into `buf` and returns its sender and length, or
    /// `None` when nothing is waiting. A datagram longer than `buf` is dropped. Callers
    /// receive in rounds, until `None`: an implementation may answer `None` once it knows
    /// the source was empty a moment ago, without asking the kernel again, and datagrams that
    /// arrived meanwhile come in the next round.
    fn receive(&mut self, buf: &mut [u8]) -> Option<(u32, usize)>;
    /// Sends whatever `send` queued (one duty cycle's worth, packed into datagrams).
    fn flush(&mut self) {}
    /// The most frame bytes one datagram carries; senders chunk larger payloads below it.
    fn max_payload(&self) -> usize {
        usize::MAX
    }
}

/// A datagram that fits a 1500-byte Ethernet MTU without fragmentation (the default for
/// real networks; loopback takes up to 65507 bytes).
pub const SAFE_MTU_DATAGRAM: usize = 1472;

/// Endpoints at and above this are clients; below it, cluster members.
pub const CLIENT_ENDPOINT_BASE: u32 = 1 << 16;

/// Client addresses a node's transport keeps by default, and how idle one must be (ns) before
/// it may be forgotten to make room for a new one.
pub const CLIENT_ADDRESSES_MAX: usize = 4096;
pub const CLIENT_IDLE_NS: u64 = 1_000_000_000;
