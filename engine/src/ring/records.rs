//! A ring of variable-length records (frames) with one producer and one or more readers,
//! after Agrona's `OneToOneRingBuffer` and Aeron's log buffer.
//!
//! ```text
//!  word 0            word 1..                      (8-byte words)
//! ┌────────┬────────┬──────────────────────┬─────┐
//! │ length │ type   │ payload (length - 8) │ pad │  record, 8-byte aligned
//! └────────┴────────┴──────────────────────┴─────┘
//!  length: u32 (header + payload), type: u32; a record that would cross the end of the buffer
//!  is preceded by a PADDING record that fills the rest, and starts again at offset 0.
//! ```
//!
//! Counters and caching follow the fixed-size ring (`spsc`): `tail` and each reader's `head`
//! count bytes, each side caches the other's counter, and a consumed batch is released with
//! one store. Every reader sees every record; the producer never overwrites bytes that some
//! reader has not passed (it waits for the slowest). [`record_channel`] is the one-reader case,
//! [`record_broadcast`] the log buffer with several readers.
//!
//! The buffer is made of `AtomicU64` words accessed with Relaxed loads and stores (plain moves
//! on x86-64 and ARM64); the Release store of `tail` and the Acquire load that observes it
//! order them. The memory is either on the heap ([`HeapMemory`], checked by loom) or a
//! memory-mapped file shared between processes (`MappedMemory`, the IPC transport); the ring's
//! code is the same for both.

use super::sync::{fence, Arc, AtomicU64, AtomicUsize, Ordering};
use super::CachePadded;

const HEADER: usize = 8;
/// Type of the record that fills the end of the buffer before a wrap.
pub const PADDING_TYPE: u32 = u32::MAX;

/// Where a record ring's counters and words live.
pub trait RingMemory: Send + Sync {
    /// Bytes published by the producer.
    fn tail(&self) -> &AtomicUsize;
    /// Bytes passed by reader `reader`.
    fn head(&self, reader: usize) -> &AtomicUsize;
    fn readers(&self) -> usize;
    /// A word the transports use to avoid ringing a doorbell twice (see `ring_bell`).
    fn bell(&self) -> &AtomicUsize;
    /// The buffer; its length in bytes is a power of two.
    fn words(&self) -> &[AtomicU64];
}

/// Ring memory on the heap, for rings between threads of one process.
pub struct HeapMemory {
    tail: CachePadded<AtomicUsize>,
    bell: CachePadded<AtomicUsize>,
    heads: Box<[CachePadded<AtomicUsize>]>,
    words: Box<[AtomicU64]>,
}

impl HeapMemory {
    fn new(capacity: usize, readers: usize) -> Self {
        Self {
            tail: CachePadded(AtomicUsize::new(0)),
            bell: CachePadded(AtomicUsize::new(0)),
            heads: (0..readers)
                .map(|_| CachePadded(AtomicUsize::new(0)))
                .collect(),
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RingMemory for HeapMemory {
    fn tail(&self) -> &AtomicUsize {
        &self.tail.0
    }
    fn head(&self, reader: usize) -> &AtomicUsize {
        &self.heads[reader].0
    }
    fn readers(&self) -> usize {
        self.heads.len()
    }
    fn bell(&self) -> &AtomicUsize {
        &self.bell.0
    }
    fn words(&self) -> &[AtomicU64] {
        &self.words
    }
}

/// Writes records.
pub struct RecordProducer<M: RingMemory = HeapMemory> {
    shared: Arc<M>,
    capacity: usize,
    /// Published end. Invariant: `tail <= staged`.
    tail: usize,
    /// End of what is written, published or not.
    staged: usize,
    /// The slowest reader's head, as last loaded.
    cached_head: usize,
}

/// Reads every record, at its own position.
pub struct RecordConsumer<M: RingMemory = HeapMemory> {
    shared: Arc<M>,
    reader: usize,
    capacity: usize,
    head: usize,
    cached_tail: usize,
    scratch: Vec<u8>,
    /// A record header was impossible (a shared file written by something else).
    corrupt: bool,
}

/// Makes a record ring of `capacity` bytes (rounded up to a power of two, at least 64) with
/// one reader.
pub fn record_channel(capacity: usize) -> (RecordProducer, RecordConsumer) {
    let (p, mut readers) = record_broadcast(capacity, 1);
    (p, readers.pop().expect("one reader"))
}

/// Makes a record ring of `capacity` bytes (rounded up to a power of two, at least 64) whose
/// every record is read by each of `readers` readers.
pub fn record_broadcast(capacity: usize, readers: usize) -> (RecordProducer, Vec<RecordConsumer>) {
    assert!(readers > 0, "a ring needs a reader");
    let capacity = capacity.max(64).next_power_of_two();
    let memory = Arc::new(HeapMemory::new(capacity, readers));
    let consumers = (0..readers)
        .map(|r| RecordConsumer::attach(memory.clone(), r))
        .collect();
    (RecordProducer::attach(memory), consumers)
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn header(length: usize, kind: u32) -> u64 {
    length as u64 | (kind as u64) << 32
}

impl<M: RingMemory> RecordProducer<M> {
    /// The producer of a ring in `memory`, continuing from its published tail (a process
    /// that reopens a shared ring picks up where the last producer stopped).
    pub fn attach(memory: Arc<M>) -> Self {
        let capacity = memory.words().len() * 8;
        debug_assert!(capacity.is_power_of_two());
        let tail = memory.tail().load(Ordering::Acquire);
        let mut p = Self {
            shared: memory,
            capacity,
            tail,
            staged: tail,
            cached_head: tail,
        };
        p.cached_head = p.slowest_head();
        p
    }

    /// The largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.capacity / 2 - HEADER
    }

    fn slowest_head(&self) -> usize {
        let readers = self.shared.readers();
        let mut slowest = self.shared.head(0).load(Ordering::Acquire);
        for r in 1..readers {
            let h = self.shared.head(r).load(Ordering::Acquire);
            // Counters wrap: the slowest is the one furthest behind the tail.
            if self.staged.wrapping_sub(h) > self.staged.wrapping_sub(slowest) {
                slowest = h;
            }
        }
        slowest
    }

    /// Writes one record and publishes it; returns false (nothing written) when there is no
    /// room yet. Panics if the payload exceeds [`RecordProducer::max_payload`] or `kind` is
    /// PADDING_TYPE.
    pub fn try_write(&mut self, kind: u32, payload: &[u8]) -> bool {
        let written = self.stage(kind, payload);
        self.publish();
        written
    }

    /// Whether a record with a payload of `payload_len` bytes fits now.
    pub fn has_room(&mut self, payload_len: usize) -> bool {
        let capacity = self.capacity;
        let aligned = align8(HEADER + payload_len);
        let to_end = capacity - (self.staged & (capacity - 1));
        let required = aligned + if aligned > to_end { to_end } else { 0 };
        if capacity - self.staged.wrapping_sub(self.cached_head) >= required {
            return true;
        }
        self.cached_head = self.slowest_head();
        capacity - self.staged.wrapping_sub(self.cached_head) >= required
    }

    /// Writes one record without making it visible; [`RecordProducer::publish`] makes every
    /// staged record visible with one store. Returns false when there is no room yet.
    pub fn stage(&mut self, kind: u32, payload: &[u8]) -> bool {
        assert!(
            payload.len() <= self.max_payload(),
            "record of {} bytes exceeds the ring's maximum",
            payload.len()
        );
        assert_ne!(kind, PADDING_TYPE, "PADDING_TYPE is reserved");
        let capacity = self.capacity;
        let aligned = align8(HEADER + payload.len());
        let index = self.staged & (capacity - 1);
        let to_end = capacity - index;
        let padding = if aligned > to_end { to_end } else { 0 };
        let required = aligned + padding;
        if capacity - self.staged.wrapping_sub(self.cached_head) < required {
            self.cached_head = self.slowest_head();
            if capacity - self.staged.wrapping_sub(self.cached_head) < required {
                return false;
            }
        }
        let words = self.shared.words();
        let mut at = index;
        if padding > 0 {
            words[at / 8].store(header(padding, PADDING_TYPE), Ordering::Relaxed);
            at = 0;
        }
        words[at / 8].store(header(HEADER + payload.len(), kind), Ordering::Relaxed);
        let mut chunks = payload.chunks_exact(8);
        let mut w = at / 8 + 1;
        for chunk in chunks.by_ref() {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            words[w].store(word, Ordering::Relaxed);
            w += 1;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            words[w].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.staged = self.staged.wrapping_add(required);
        true
    }

    /// Makes every staged record visible to the readers (one Release store).
    pub fn publish(&mut self) {
        if self.staged != self.tail {
            self.tail = self.staged;
            self.shared.tail().store(self.tail, Ordering::Release);
        }
    }

    /// Publishes, and tells whether a reader had read everything before this publish, so it
    /// may be asleep and should be woken (a doorbell). Pairs with
    /// [`RecordConsumer::is_drained`]: both sides store, fence, then load the other's
    /// counter, so at least one of them sees the other's store: either the producer sees the
    /// reader caught up and rings, or the reader sees the new tail and does not sleep.
    pub fn publish_needs_wake(&mut self) -> bool {
        let before = self.tail;
        if self.staged == before {
            return false;
        }
        self.publish();
        fence(Ordering::SeqCst);
        (0..self.shared.readers()).any(|r| self.shared.head(r).load(Ordering::Relaxed) == before)
    }

    /// The doorbell word of the ring's memory (see [`RingMemory::bell`]).
    pub fn bell(&self) -> &AtomicUsize {
        self.shared.bell()
    }
}

impl<M: RingMemory> RecordConsumer<M> {
    /// Reader `reader` of a ring in `memory`, continuing from its published head.
    pub fn attach(memory: Arc<M>, reader: usize) -> Self {
        assert!(reader < memory.readers(), "reader {reader} does not exist");
        let capacity = memory.words().len() * 8;
        let head = memory.head(reader).load(Ordering::Acquire);
        Self {
            shared: memory,
            reader,
            capacity,
            head,
            cached_tail: head,
            scratch: Vec::new(),
            corrupt: false,
        }
    }

    /// Hands up to `max` records to `f` as (type, payload), then releases their space with
    /// one store. Returns how many records were read.
    pub fn read(&mut self, max: usize, mut f: impl FnMut(u32, &[u8])) -> usize {
        // One Acquire load per batch: take everything published so far.
        self.cached_tail = self.shared.tail().load(Ordering::Acquire);
        let capacity = self.capacity;
        let words = self.shared.words();
        let mut head = self.head;
        let mut count = 0;
        while count < max && head != self.cached_tail {
            let index = head & (capacity - 1);
            let word = words[index / 8].load(Ordering::Relaxed);
            let length = (word & 0xffff_ffff) as usize;
            let kind = (word >> 32) as u32;
            if length < HEADER || index + align8(length) > capacity {
                // Only a foreign writer of a shared file can get here: stop reading this
                // ring rather than read out of bounds.
                self.corrupt = true;
                break;
            }
            if kind == PADDING_TYPE {
                head = head.wrapping_add(length);
                continue;
            }
            let payload_len = length - HEADER;
            let words_len = payload_len.div_ceil(8);
            self.scratch.resize(words_len * 8, 0);
            for (i, out) in self.scratch.chunks_exact_mut(8).enumerate() {
                let w = words[index / 8 + 1 + i].load(Ordering::Relaxed);
                out.copy_from_slice(&w.to_le_bytes());
            }
            f(kind, &self.scratch[..payload_len]);
            head = head.wrapping_add(align8(length));
            count += 1;
        }
        if head != self.head {
            self.head = head;
            self.shared.head(self.reader).store(head, Ordering::Release);
        }
        count
    }

    /// Whether everything published has been read, checked after a fence so that a producer
    /// publishing concurrently either sees this reader caught up (and wakes it) or is seen
    /// here (see [`RecordProducer::publish_needs_wake`]). Call before going to sleep.
    pub fn is_drained(&self) -> bool {
        fence(Ordering::SeqCst);
        self.shared.tail().load(Ordering::Acquire) == self.head
    }

    /// The doorbell word of the ring's memory (see [`RingMemory::bell`]).
    pub fn bell(&self) -> &AtomicUsize {
        self.shared.bell()
    }

    /// Whether reading stopped at an impossible record header (only a shared file written
    /// by something other than a raftline producer can hold one).
    pub fn is_corrupt(&self) -> bool {
        self.corrupt
    }
}
