//! The Linux [`Disk`]: io_uring with O_DIRECT and registered buffers, falling back to pwrite
//! and to buffered IO where the kernel or filesystem refuse, and saying so once at start.
//!
//! Each file has two descriptors: a writer (O_DIRECT when supported) and a buffered reader for
//! recovery and catch-up reads (Linux keeps the page cache coherent with direct writes).
//! `user_data` of every submission indexes a fixed table of operations in flight, which keeps
//! the buffer's in-flight count until the completion arrives, so a buffer cannot be changed or
//! freed while the kernel reads it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use io_uring::{opcode, types, IoUring};

use crate::io::{
    AlignedBuf, BufId, BufferTable, Completion, Disk, DiskError, DiskOp, FileId, Files, BLOCK_LEN,
};

const RING_ENTRIES: u32 = 64;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const ZERO_CHUNK: usize = 1 << 20;

/// What the writer may use; the disk takes the best the host allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxDiskOptions {
    pub io_uring: bool,
    pub direct: bool,
    /// For a log that promises no durability (`durability = none`): writes are copied into
    /// the page cache by `pwritev2` on the calling thread and complete when it returns; the
    /// kernel writes them back. No O_DIRECT and no ring, so a write never waits for the
    /// device (a direct write does, and inherited the disk's millisecond episodes) and never
    /// wakes an io_uring worker. `io_uring` and `direct` are then ignored.
    pub page_cache: bool,
}

impl Default for LinuxDiskOptions {
    fn default() -> Self {
        Self {
            io_uring: true,
            direct: true,
            page_cache: false,
        }
    }
}

/// What the writer ended up using.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterMode {
    pub io_uring: bool,
    pub direct: bool,
    pub registered_buffers: bool,
    pub filesystem_durable: bool,
    /// Writes go to the page cache and complete at once (see `LinuxDiskOptions::page_cache`).
    pub page_cache: bool,
    /// Why each fallback was taken, one line each.
    pub fallbacks: Vec<String>,
}

struct OpenFileEntry {
    name: String,
    writer: File,
    reader: File,
}

#[derive(Clone, Copy)]
struct InFlight {
    user_data: u64,
    buf: Option<BufId>,
    op: &'static str,
    len: u32,
}

/// See the module docs.
pub struct LinuxDisk {
    dir: PathBuf,
    /// The directory's whole-file operations (the `Files` half of the seam).
    files_of_dir: super::files::DirFiles,
    mode: WriterMode,
    ring: Option<IoUring>,
    files: Vec<Option<OpenFileEntry>>,
    buffers: BufferTable,
    registered_count: usize,
    /// Fixed table of operations in flight; the io_uring user_data is the index.
    table: Vec<Option<InFlight>>,
    free: Vec<usize>,
    in_flight: usize,
    /// Submissions pushed but not yet handed to the kernel.
    queued: usize,
    done: VecDeque<Completion>,
    zeros: AlignedBuf,
    /// Small records (vote, term index) in their slot files, opened on first use.
    records: std::collections::HashMap<String, super::record::Record>,
}

fn io_err(op: &'static str) -> impl Fn(std::io::Error) -> DiskError {
    move |e| DiskError::from_io(op, &e)
}

use super::files::fsync_dir;

impl LinuxDisk {
    /// Opens (creating if needed) the log directory and probes what the host supports.
    pub fn open(dir: impl AsRef<Path>, options: LinuxDiskOptions) -> Result<Self, DiskError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err("create log directory"))?;
        let mut fallbacks = Vec::new();

        let filesystem_durable = !is_tmpfs(&dir);
        if !filesystem_durable {
            fallbacks.push(format!(
                "{} is on tmpfs: the log is NOT durable across a power loss or reboot",
                dir.display()
            ));
        }
        let direct = !options.page_cache && options.direct && probe_direct(&dir, &mut fallbacks);
        if !options.direct && !options.page_cache {
            fallbacks
                .push("O_DIRECT disabled by configuration: buffered writes + fdatasync".into());
        }
        let ring = if options.page_cache {
            None
        } else if options.io_uring {
            match IoUring::new(RING_ENTRIES) {
                Ok(r) => Some(r),
                Err(e) => {
                    fallbacks.push(format!(
                        "io_uring unavailable ({e}): using pwrite; check kernel.io_uring_disabled and the seccomp profile"
                    ));
                    None
                }
            }
        } else {
            fallbacks.push("io_uring disabled by configuration: using pwrite".into());
            None
        };
        let mode = WriterMode {
            io_uring: ring.is_some(),
            direct,
            registered_buffers: false,
            filesystem_durable,
            page_cache: options.page_cache,
            fallbacks,
        };
        for line in &mode.fallbacks {
            tracing::warn!("log writer: {line}");
        }
        // Leftovers of a creation interrupted by a crash.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".creating") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Self {
            files_of_dir: super::files::DirFiles::new(&dir),
            dir,
            mode,
            ring,
            files: Vec::new(),
            buffers: BufferTable::default(),
            registered_count: 0,
            table: (0..RING_ENTRIES as usize * 2).map(|_| None).collect(),
            free: (0..RING_ENTRIES as usize * 2).rev().collect(),
            in_flight: 0,
            queued: 0,
            done: VecDeque::new(),
            zeros: AlignedBuf::new(ZERO_CHUNK),
            records: std::collections::HashMap::new(),
        })
    }

    /// The io_uring fd, readable when completions wait (for an idle strategy to block on).
    pub fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        self.ring.as_ref().map(|r| r.as_raw_fd())
    }

    pub fn mode(&self) -> &WriterMode {
        &self.mode
    }

    fn entry(&self, file: FileId) -> &OpenFileEntry {
        self.files
            .get(file as usize)
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("file id {file} is not open"))
    }

    fn open_fds(&self, path: &Path) -> Result<(File, File), DiskError> {
        let mut opts = OpenOptions::new();
        opts.write(true);
        if self.mode.direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let writer = opts.open(path).map_err(io_err("open for writing"))?;
        let reader = File::open(path).map_err(io_err("open for reading"))?;
        Ok((writer, reader))
    }

    fn write_zeros(&self, writer: &File, offset: u64, len: u64) -> Result<(), DiskError> {
        assert!(offset % BLOCK_LEN as u64 == 0 && len % BLOCK_LEN as u64 == 0);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK as u64) as usize;
            crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
            writer
                .write_all_at(&self.zeros[..n], offset + done)
                .map_err(io_err("write zeros"))?;
            done += n as u64;
        }
        crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
        writer.sync_data().map_err(io_err("fdatasync"))
    }

    /// Registers every buffer with the ring (once buffers exist; repeated if more are added).
    fn register_buffers(&mut self) {
        let Some(ring) = &self.ring else { return };
        if self.registered_count == self.buffers.len() {
            return;
        }
        assert_eq!(
            self.in_flight, 0,
            "buffers are registered only while no IO is in flight"
        );
        if self.registered_count > 0 {
            let _ = ring.submitter().unregister_buffers();
        }
        let iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every iovec points into an AlignedBuf owned by self.buffers; those buffers are
        // never freed or moved before the ring is dropped (Drop waits for in-flight operations
        // and the ring is dropped with self), so the registered memory stays valid.
        let registered = unsafe { ring.submitter().register_buffers(&iovecs) };
        match registered {
            Ok(()) => {
                self.registered_count = self.buffers.len();
                self.mode.registered_buffers = true;
            }
            Err(e) => {
                self.registered_count = self.buffers.len();
                if self.mode.registered_buffers {
                    self.mode.registered_buffers = false;
                }
                tracing::warn!("log writer: buffer registration failed ({e}); using unregistered writes (check RLIMIT_MEMLOCK)");
            }
        }
    }

    fn take_slot(&mut self, entry: InFlight) -> Option<usize> {
        let slot = self.free.pop()?;
        self.table[slot] = Some(entry);
        self.in_flight += 1;
        Some(slot)
    }

    fn finish(&mut self, slot: usize, res: i32) {
        let entry = self.table[slot]
            .take()
            .expect("completion for an operation in flight");
        self.free.push(slot);
        self.in_flight -= 1;
        if let Some(buf) = entry.buf {
            self.buffers.end_read(buf);
        }
        let result = if res < 0 {
            Err(DiskError::new(entry.op, -res))
        } else if entry.buf.is_some() && res as u32 != entry.len {
            // A short direct write to a preallocated file: the device or filesystem ran out.
            Err(DiskError::new("write (short)", libc::ENOSPC))
        } else {
            Ok(())
        };
        self.done.push_back(Completion {
            user_data: entry.user_data,
            result,
        });
    }

    fn run_blocking(&mut self, op: DiskOp, user_data: u64) -> Result<(), DiskError> {
        let result = match op {
            DiskOp::Write {
                file,
                offset,
                buf,
                buf_offset,
                len,
                dsync,
            } => {
                let data = &self.buffers.get(buf)[buf_offset..buf_offset + len];
                let fd = self.entry(file).writer.as_raw_fd();
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                let iov = libc::iovec {
                    iov_base: data.as_ptr() as *mut _,
                    iov_len: len,
                };
                crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
                // SAFETY: iov points to `len` readable bytes of a buffer we own and do not
                // change during the call; fd is an open file descriptor.
                let n = unsafe { libc::pwritev2(fd, &iov, 1, offset as i64, flags) };
                if n < 0 {
                    Err(DiskError::from_io(
                        "pwritev2",
                        &std::io::Error::last_os_error(),
                    ))
                } else if n as usize != len {
                    Err(DiskError::new("write (short)", libc::ENOSPC))
                } else {
                    Ok(())
                }
            }
            DiskOp::Fsync { file } => {
                crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
                self.entry(file)
                    .writer
                    .sync_data()
                    .map_err(io_err("fdatasync"))
            }
        };
        self.done.push_back(Completion { user_data, result });
        Ok(())
    }

    fn drain_ring(&mut self) -> usize {
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        let mut finished = Vec::new();
        for cqe in ring.completion() {
            finished.push((cqe.user_data() as usize, cqe.result()));
        }
        let n = finished.len();
        for (slot, res) in finished {
            self.finish(slot, res);
        }
        n
    }
}

/// Whether `dir` is on tmpfs (fast, and gone at reboot: not durable).
pub fn is_tmpfs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; zeroed is a valid value for it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == TMPFS_MAGIC
}

/// Tries one aligned O_DIRECT write in `dir` (to a probe file, removed again).
pub fn direct_write_works(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".direct-probe.creating");
    let result = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .and_then(|f| f.write_all_at(&AlignedBuf::new(BLOCK_LEN), 0));
    let _ = std::fs::remove_file(&path);
    result
}

/// Whether O_DIRECT works in `dir`; if not, the reason joins `fallbacks`.
fn probe_direct(dir: &Path, fallbacks: &mut Vec<String>) -> bool {
    match direct_write_works(dir) {
        Ok(()) => true,
        Err(e) => {
            fallbacks.push(format!(
                "O_DIRECT refused by the filesystem ({e}): buffered writes + fdatasync"
            ));
            false
        }
    }
}

impl Files for LinuxDisk {
    fn list(&mut self) -> Result<Vec<String>, DiskError> {
        self.files_of_dir.list()
    }
    fn write_file_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.files_of_dir.write_file_atomic(name, bytes)
    }
    fn read_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.files_of_dir.read_file(name)
    }
    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.files_of_dir.remove(name)
    }
}

impl Disk for LinuxDisk {
    fn describe(&self) -> String {
        let m = &self.mode;
        format!(
            "{}{}{}{}",
            if m.page_cache {
                "page cache (pwritev2)"
            } else if m.io_uring {
                "io_uring"
            } else {
                "pwrite"
            },
            if m.page_cache {
                ""
            } else if m.direct {
                " O_DIRECT"
            } else {
                " buffered"
            },
            if m.registered_buffers {
                " registered-buffers"
            } else {
                ""
            },
            if m.filesystem_durable {
                ""
            } else {
                " (tmpfs: not durable)"
            },
        )
    }

    fn is_durable(&self) -> bool {
        self.mode.filesystem_durable
    }

    fn open(&mut self, name: &str, create_len: Option<u64>) -> Result<FileId, DiskError> {
        let path = self.dir.join(name);
        if !path.exists() {
            let Some(len) = create_len else {
                return Err(DiskError::new("open", libc::ENOENT));
            };
            let tmp = self.dir.join(format!("{name}.creating"));
            File::create(&tmp).map_err(io_err("create"))?;
            let (writer, _) = self.open_fds(&tmp)?;
            // Zero-fill: writing into unwritten extents costs an extent conversion per fdatasync.
            let filled = self.write_zeros(&writer, 0, len);
            if let Err(e) = filled {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &path).map_err(io_err("rename"))?;
            fsync_dir(&self.dir)?;
        }
        let (writer, reader) = self.open_fds(&path)?;
        self.files.push(Some(OpenFileEntry {
            name: name.to_string(),
            writer,
            reader,
        }));
        Ok(self.files.len() as FileId - 1)
    }

    fn close(&mut self, file: FileId) {
        if let Some(slot) = self.files.get_mut(file as usize) {
            *slot = None;
        }
    }

    fn file_len(&self, file: FileId) -> u64 {
        self.entry(file)
            .reader
            .metadata()
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        std::fs::rename(self.dir.join(from), self.dir.join(to)).map_err(io_err("rename"))?;
        for f in self.files.iter_mut().flatten() {
            if f.name == from {
                f.name = to.to_string();
            }
        }
        fsync_dir(&self.dir)
    }

    fn read_at(&mut self, file: FileId, offset: u64, out: &mut [u8]) -> Result<(), DiskError> {
        crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
        self.entry(file)
            .reader
            .read_exact_at(out, offset)
            .map_err(io_err("read"))
    }

    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> Result<(), DiskError> {
        let writer = self.entry(file).writer.try_clone().map_err(io_err("dup"))?;
        self.write_zeros(&writer, offset, len)
    }

    fn store_record(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        if !self.records.contains_key(name) {
            let (record, _) = super::record::Record::open(&self.dir, name)?;
            self.records.insert(name.to_string(), record);
        }
        self.records.get_mut(name).expect("opened").store(bytes)
    }

    fn load_record(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let (record, value) = super::record::Record::open(&self.dir, name)?;
        self.records.insert(name.to_string(), record);
        match value? {
            Some(v) => Ok(Some(v)),
            // Written by an older version as a whole file.
            None => self.read_file(name),
        }
    }

    fn alloc_buffer(&mut self, len: usize) -> BufId {
        let id = self.buffers.alloc(len);
        // Buffers are allocated at start-up, before any IO: register them now.
        self.register_buffers();
        id
    }

    fn buffers(&self) -> &BufferTable {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut BufferTable {
        &mut self.buffers
    }

    fn submit(&mut self, op: DiskOp, user_data: u64) -> Result<(), DiskError> {
        if let DiskOp::Write {
            offset,
            buf,
            buf_offset,
            len,
            ..
        } = op
        {
            assert!(
                offset % BLOCK_LEN as u64 == 0
                    && buf_offset % BLOCK_LEN == 0
                    && len % BLOCK_LEN == 0,
                "misaligned write: offset {offset}, buffer offset {buf_offset}, length {len}"
            );
            assert!(buf_offset + len <= self.buffers.get(buf).len());
        }
        if self.ring.is_none() {
            return self.run_blocking(op, user_data);
        }
        let (sqe, entry) = match op {
            DiskOp::Write {
                file,
                offset,
                buf,
                buf_offset,
                len,
                dsync,
            } => {
                let fd = types::Fd(self.entry(file).writer.as_raw_fd());
                let ptr = self.buffers.get(buf)[buf_offset..].as_ptr();
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                let sqe = if self.mode.registered_buffers {
                    opcode::WriteFixed::new(fd, ptr, len as u32, buf as u16)
                        .offset(offset)
                        .rw_flags(flags)
                        .build()
                } else {
                    opcode::Write::new(fd, ptr, len as u32)
                        .offset(offset)
                        .rw_flags(flags)
                        .build()
                };
                (
                    sqe,
                    InFlight {
                        user_data,
                        buf: Some(buf),
                        op: "write",
                        len: len as u32,
                    },
                )
            }
            DiskOp::Fsync { file } => {
                let fd = types::Fd(self.entry(file).writer.as_raw_fd());
                let sqe = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                (
                    sqe,
                    InFlight {
                        user_data,
                        buf: None,
                        op: "fdatasync",
                        len: 0,
                    },
                )
            }
        };
        let slot = loop {
            if let Some(slot) = self.take_slot(entry) {
                break slot;
            }
            // Table full: wait for something to finish.
            self.wait()?;
            self.drain_ring();
        };
        if let Some(buf) = entry.buf {
            self.buffers.begin_read(buf);
        }
        let sqe = sqe.user_data(slot as u64);
        let ring = self.ring.as_mut().expect("ring checked above");
        loop {
            // SAFETY: the write's buffer is owned by self.buffers and its in-flight count was
            // raised above, so it is neither changed (buffer_mut asserts) nor freed (Drop waits)
            // until this operation's completion is reaped; the fd stays open as long as the
            // file entry, which outlives the operation (close happens only when idle).
            let pushed = unsafe { ring.submission().push(&sqe) };
            if pushed.is_ok() {
                self.queued += 1;
                break;
            }
            crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
            ring.submit().map_err(io_err("io_uring_enter"))?;
            self.queued = 0;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        // `submit` enters the kernel even with nothing queued: not once per duty cycle.
        if let Some(ring) = self.ring.as_ref().filter(|_| self.queued > 0) {
            crate::sys::cost::count(crate::sys::cost::Syscall::Disk);
            ring.submit().map_err(io_err("io_uring_enter"))?;
            self.queued = 0;
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        self.drain_ring();
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    fn wait(&mut self) -> Result<(), DiskError> {
        if let Some(ring) = &self.ring {
            if self.in_flight > 0 && self.done.is_empty() {
                crate::sys::cost::count(crate::sys::cost::Syscall::Wait);
                ring.submit_and_wait(1).map_err(io_err("io_uring_enter"))?;
                self.queued = 0;
            }
        }
        Ok(())
    }
}

impl Drop for LinuxDisk {
    fn drop(&mut self) {
        // The kernel may still read buffers we are about to free.
        while self.in_flight > 0 {
            if self.wait().is_err() {
                break;
            }
            self.drain_ring();
        }
    }
}
