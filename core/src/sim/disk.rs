//! A simulated [`Disk`]: in memory, seeded, with latency, injected errors, and the crash
//! semantics of a real disk with a volatile write cache.
//!
//! Each file keeps two images: `current` (what reads see) and `durable` (what survives a
//! crash). A completed write changes `current` and marks its blocks dirty; an fsync makes the
//! blocks that were dirty *when it was submitted* durable; a `dsync` write is durable when it
//! completes. [`SimDisk::crash`] decides the fate of every dirty block and every write still in
//! flight: kept, lost, or torn (each 512-byte sector old or new, sometimes one sector of
//! garbage), damaging only the blocks being written, as the fault model says.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::io::record;
use crate::io::{
    BufId, BufferTable, Completion, Disk, DiskError, DiskOp, FileId, Files, BLOCK_LEN,
};
use crate::rng::Rng;

const SECTOR_LEN: usize = 512;

/// Fault and latency settings of a [`SimDisk`].
#[derive(Clone, Debug)]
pub struct SimDiskConfig {
    pub latency_min_ns: u64,
    pub latency_max_ns: u64,
    /// Total bytes of all files; creating beyond it fails with ENOSPC.
    pub capacity_bytes: u64,
    /// On a crash, the chance that a dirty or in-flight block is torn rather than kept or lost.
    pub torn_probability: f64,
    /// Deliberately broken (for the checkers' teeth test): a record's damaged slot is passed
    /// over and the other slot's value loaded.
    pub pass_over_damaged_slots: bool,
}

impl Default for SimDiskConfig {
    fn default() -> Self {
        Self {
            latency_min_ns: 20_000,
            latency_max_ns: 200_000,
            capacity_bytes: u64::MAX,
            torn_probability: 0.3,
            pass_over_damaged_slots: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Blocks written since they were last made durable.
    dirty: BTreeSet<u64>,
}

#[derive(Debug)]
struct Pending {
    complete_at_ns: u64,
    user_data: u64,
    op: DiskOp,
    /// For Fsync: the dirty blocks at submission, the ones this fsync makes durable.
    sync_blocks: Vec<u64>,
}

/// See the module docs.
pub struct SimDisk {
    config: SimDiskConfig,
    rng: Rng,
    now_ns: u64,
    files: BTreeMap<String, SimFile>,
    open: Vec<Option<String>>,
    buffers: BufferTable,
    queued: Vec<(DiskOp, u64)>,
    pending: Vec<Pending>,
    done: VecDeque<Completion>,
    fail_writes_errno: Option<i32>,
    /// Operations completed so far; a crash test uses it to crash "at step k".
    completed_ops: u64,
}

impl SimDisk {
    pub fn new(seed: u64, config: SimDiskConfig) -> Self {
        Self {
            config,
            rng: Rng::new(seed),
            now_ns: 0,
            files: BTreeMap::new(),
            open: Vec::new(),
            buffers: BufferTable::default(),
            queued: Vec::new(),
            pending: Vec::new(),
            done: VecDeque::new(),
            fail_writes_errno: None,
            completed_ops: 0,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Moves simulated time forward; operations due by then complete on the next reap.
    pub fn advance_to(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// The time the next in-flight operation completes, if any.
    pub fn next_completion_ns(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.complete_at_ns).min()
    }

    pub fn completed_ops(&self) -> u64 {
        self.completed_ops
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.queued.len()
    }

    /// From now on every write completes with `errno` and changes nothing (None to stop).
    pub fn fail_writes_with(&mut self, errno: Option<i32>) {
        self.fail_writes_errno = errno;
    }

    /// The bytes a file would hold after a crash now, ignoring pending writes (for checkers).
    pub fn durable_image(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|f| f.durable.as_slice())
    }

    /// Names of every file on the disk.
    pub fn file_names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// Storage corruption on a stopped member: flips one bit of the byte at `offset` of
    /// `name`, in what reads see and in what survives (a latent sector error that reads back
    /// wrong, below anything the log layer wrote recently). Returns false if there is no
    /// such byte.
    pub fn corrupt(&mut self, name: &str, offset: u64, bit: u8) -> bool {
        let Some(file) = self.files.get_mut(name) else {
            return false;
        };
        let i = offset as usize;
        if i >= file.durable.len() {
            return false;
        }
        file.durable[i] ^= 1 << (bit % 8);
        file.current.clone_from(&file.durable);
        true
    }

    /// The process dies but the machine stays up: every completed write survives in the page
    /// cache; each write still in flight reached it or not.
    pub fn crash_process(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            if matches!(p.op, DiskOp::Write { .. }) && self.rng.chance(0.5) {
                self.apply_write(p.op);
            }
        }
        self.queued.clear();
        for file in self.files.values_mut() {
            file.dirty.clear();
            file.durable.clone_from(&file.current);
        }
        self.open.clear();
        self.buffers.clear();
        self.done.clear();
    }

    /// The machine loses power: open files, buffers and in-flight operations are gone; every
    /// block not yet durable is kept, lost or torn at random.
    pub fn crash(&mut self) {
        let mut in_flight_writes = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            if let DiskOp::Write { .. } = p.op {
                in_flight_writes.push(p.op);
            }
        }
        for (op, _) in std::mem::take(&mut self.queued) {
            if let DiskOp::Write { .. } = op {
                in_flight_writes.push(op);
            }
        }
        // An in-flight write reached the device cache or not; then the cache meets its fate.
        for op in in_flight_writes {
            if self.rng.chance(0.5) {
                self.apply_write(op);
            }
        }
        let torn_p = self.config.torn_probability;
        for file in self.files.values_mut() {
            for block in std::mem::take(&mut file.dirty) {
                let start = block as usize * BLOCK_LEN;
                let end = (start + BLOCK_LEN).min(file.current.len());
                if start >= end {
                    continue;
                }
                if self.rng.chance(torn_p) {
                    for sector in (start..end).step_by(SECTOR_LEN) {
                        let s_end = (sector + SECTOR_LEN).min(end);
                        if self.rng.chance(0.5) {
                            file.durable[sector..s_end]
                                .copy_from_slice(&file.current[sector..s_end]);
                        }
                    }
                    if self.rng.chance(0.3) {
                        let sector = start
                            + self.rng.below(((end - start) / SECTOR_LEN).max(1) as u64) as usize
                                * SECTOR_LEN;
                        let s_end = (sector + SECTOR_LEN).min(end);
                        self.rng.fill(&mut file.durable[sector..s_end]);
                    }
                } else if self.rng.chance(0.5) {
                    file.durable[start..end].copy_from_slice(&file.current[start..end]);
                }
            }
            file.current.clone_from(&file.durable);
        }
        self.open.clear();
        self.buffers.clear();
        self.done.clear();
    }

    fn latency(&mut self) -> u64 {
        self.rng
            .range(self.config.latency_min_ns, self.config.latency_max_ns)
    }

    fn name(&self, file: FileId) -> &str {
        self.open
            .get(file as usize)
            .and_then(|n| n.as_deref())
            .unwrap_or_else(|| panic!("file id {file} is not open"))
    }

    fn apply_write(&mut self, op: DiskOp) {
        let DiskOp::Write {
            file,
            offset,
            buf,
            buf_offset,
            len,
            dsync,
        } = op
        else {
            return;
        };
        let name = self.name(file).to_string();
        let data = &self.buffers.get(buf)[buf_offset..buf_offset + len];
        let f = self.files.get_mut(&name).expect("open file exists");
        let (start, end) = (offset as usize, offset as usize + len);
        if f.current.len() < end {
            f.current.resize(end, 0);
            f.durable.resize(end, 0);
        }
        f.current[start..end].copy_from_slice(data);
        for block in (start / BLOCK_LEN)..end.div_ceil(BLOCK_LEN) {
            if dsync {
                let (s, e) = (block * BLOCK_LEN, (block + 1) * BLOCK_LEN);
                f.durable[s..e].copy_from_slice(&f.current[s..e]);
                f.dirty.remove(&(block as u64));
            } else {
                f.dirty.insert(block as u64);
            }
        }
    }

    /// Deletes a file (the harness deletes retired segments and old snapshots, as the
    /// runtime does off the node's thread).
    /// The slots of record `name` as `load_record` parses them.
    fn record_slots(&self, name: &str) -> [record::Slot; 2] {
        [0, 1].map(|slot| {
            self.files
                .get(&record::slot_name(name, slot))
                .map_or(record::Slot::Empty, |f| record::parse_slot(&f.current))
        })
    }

    /// Forgets record `name` (both its slots): a lost file.
    pub fn remove_record(&mut self, name: &str) {
        for slot in 0..2 {
            self.lose(&record::slot_name(name, slot));
        }
    }

    /// Forgets file `name`, whatever it held: a lost file.
    pub fn lose(&mut self, name: &str) {
        self.files.remove(name);
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }
}

impl Files for SimDisk {
    fn list(&mut self) -> Result<Vec<String>, DiskError> {
        Ok(self.files.keys().cloned().collect())
    }
    fn write_file_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let f = SimFile {
            current: bytes.to_vec(),
            durable: bytes.to_vec(),
            dirty: BTreeSet::new(),
        };
        self.files.insert(name.to_string(), f);
        Ok(())
    }
    fn read_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        Ok(self.files.get(name).map(|f| f.current.clone()))
    }
    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.files.remove(name);
        Ok(())
    }
}

impl Disk for SimDisk {
    fn describe(&self) -> String {
        "simulated disk".into()
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn open(&mut self, name: &str, create_len: Option<u64>) -> Result<FileId, DiskError> {
        if !self.files.contains_key(name) {
            let Some(len) = create_len else {
                return Err(DiskError::new("open", crate::io::errno::ENOENT));
            };
            if self.used_bytes().saturating_add(len) > self.config.capacity_bytes {
                return Err(DiskError::new("create", crate::io::errno::ENOSPC));
            }
            let zeros = vec![0u8; len as usize];
            self.files.insert(
                name.to_string(),
                SimFile {
                    current: zeros.clone(),
                    durable: zeros,
                    dirty: BTreeSet::new(),
                },
            );
        }
        self.open.push(Some(name.to_string()));
        Ok(self.open.len() as FileId - 1)
    }

    fn close(&mut self, file: FileId) {
        if let Some(slot) = self.open.get_mut(file as usize) {
            *slot = None;
        }
    }

    fn file_len(&self, file: FileId) -> u64 {
        self.files[self.name(file)].current.len() as u64
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        let Some(f) = self.files.remove(from) else {
            return Err(DiskError::new("rename", crate::io::errno::ENOENT));
        };
        self.files.insert(to.to_string(), f);
        Ok(())
    }

    fn read_at(&mut self, file: FileId, offset: u64, out: &mut [u8]) -> Result<(), DiskError> {
        let f = &self.files[self.name(file)];
        let start = offset as usize;
        let Some(src) = f.current.get(start..start + out.len()) else {
            return Err(DiskError::new("read", crate::io::errno::EINVAL));
        };
        out.copy_from_slice(src);
        Ok(())
    }

    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> Result<(), DiskError> {
        let name = self.name(file).to_string();
        let f = self.files.get_mut(&name).expect("open file exists");
        let (s, e) = (offset as usize, (offset + len) as usize);
        if e > f.current.len() {
            return Err(DiskError::new("zero_range", crate::io::errno::EINVAL));
        }
        f.current[s..e].fill(0);
        f.durable[s..e].fill(0);
        for block in (s / BLOCK_LEN)..e.div_ceil(BLOCK_LEN) {
            f.dirty.remove(&(block as u64));
        }
        Ok(())
    }

    /// As `sys::record` does: two slots in the shipped format, written alternately after the
    /// newest valid sequence, each write durable when it returns.
    fn store_record(&mut self, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let read = record::read_slots(self.record_slots(name));
        let next = read.newest.map_or(0, |(sequence, _)| sequence) + 1;
        self.write_file_atomic(
            &record::slot_name(name, next % 2),
            &record::encode(next, bytes),
        )
    }

    fn load_record(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let slots = self.record_slots(name);
        if self.config.pass_over_damaged_slots {
            let read = record::read_slots(slots);
            if read.newest.is_some() {
                return Ok(read.newest.map(|(_, bytes)| bytes));
            }
            return Ok(record::newest(self.record_slots(name))?.map(|(_, b)| b));
        }
        Ok(record::newest(slots)?.map(|(_, bytes)| bytes))
    }

    fn alloc_buffer(&mut self, len: usize) -> BufId {
        self.buffers.alloc(len)
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
            buf_offset,
            len,
            buf,
            ..
        } = op
        {
            assert!(
                offset as usize % BLOCK_LEN == 0
                    && buf_offset % BLOCK_LEN == 0
                    && len % BLOCK_LEN == 0
            );
            assert!(buf_offset + len <= self.buffers.get(buf).len());
            self.buffers.begin_read(buf);
        }
        self.queued.push((op, user_data));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        for (op, user_data) in std::mem::take(&mut self.queued) {
            let sync_blocks = match op {
                DiskOp::Fsync { file } => {
                    self.files[self.name(file)].dirty.iter().copied().collect()
                }
                DiskOp::Write { .. } => Vec::new(),
            };
            let complete_at_ns = self.now_ns + self.latency();
            self.pending.push(Pending {
                complete_at_ns,
                user_data,
                op,
                sync_blocks,
            });
        }
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        // Complete everything that is due, earliest first, in a deterministic order.
        self.pending
            .sort_by_key(|p| (p.complete_at_ns, p.user_data));
        let due = self
            .pending
            .iter()
            .take_while(|p| p.complete_at_ns <= self.now_ns)
            .count();
        for p in self.pending.drain(..due).collect::<Vec<_>>() {
            let mut result = Ok(());
            match p.op {
                DiskOp::Write { buf, .. } => {
                    self.buffers.end_read(buf);
                    if let Some(errno) = self.fail_writes_errno {
                        result = Err(DiskError::new("write", errno));
                    } else {
                        self.apply_write(p.op);
                    }
                }
                DiskOp::Fsync { file } => {
                    let name = self.name(file).to_string();
                    let f = self.files.get_mut(&name).expect("open file exists");
                    for block in p.sync_blocks {
                        if f.dirty.remove(&block) {
                            let s = block as usize * BLOCK_LEN;
                            let e = (s + BLOCK_LEN).min(f.current.len());
                            f.durable[s..e].copy_from_slice(&f.current[s..e]);
                        }
                    }
                }
            }
            self.completed_ops += 1;
            self.done.push_back(Completion {
                user_data: p.user_data,
                result,
            });
        }
        let n = self.done.len();
        out.extend(self.done.drain(..));
        n
    }

    fn wait(&mut self) -> Result<(), DiskError> {
        if let Some(t) = self.next_completion_ns() {
            self.advance_to(t);
        }
        Ok(())
    }
}
