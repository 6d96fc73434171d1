//! A single-producer single-consumer ring of variable-length records (frames), after
//! Agrona's `OneToOneRingBuffer`.
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
//! Counters and caching follow the fixed-size ring (`spsc`): `tail` and `head` count bytes,
//! each side caches the other's counter, and a consumed batch is released with one store.
//! The buffer is made of `AtomicU64` words accessed with Relaxed loads and stores (plain moves
//! on x86-64 and ARM64); the Release store of `tail` and the Acquire load that observes it
//! order them. No unsafe code, and loom can check it.

use super::sync::{Arc, AtomicU64, AtomicUsize, Ordering};
use super::CachePadded;

const HEADER: usize = 8;
/// Type of the record that fills the end of the buffer before a wrap.
pub const PADDING_TYPE: u32 = u32::MAX;

struct Shared {
    tail: CachePadded<AtomicUsize>,
    head: CachePadded<AtomicUsize>,
    /// Bytes of buffer; a power of two.
    capacity: usize,
    words: Box<[AtomicU64]>,
}

/// Writes records.
pub struct RecordProducer {
    shared: Arc<Shared>,
    /// Published end. Invariant: `tail <= staged`.
    tail: usize,
    /// End of what is written, published or not.
    staged: usize,
    cached_head: usize,
}

/// Reads records.
pub struct RecordConsumer {
    shared: Arc<Shared>,
    head: usize,
    cached_tail: usize,
    scratch: Vec<u8>,
}

/// Makes a record ring of `capacity` bytes (rounded up to a power of two, at least 64).
pub fn record_channel(capacity: usize) -> (RecordProducer, RecordConsumer) {
    let capacity = capacity.max(64).next_power_of_two();
    let words = (0..capacity / 8).map(|_| AtomicU64::new(0)).collect();
    let shared = Arc::new(Shared {
        tail: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        capacity,
        words,
    });
    (
        RecordProducer {
            shared: shared.clone(),
            tail: 0,
            staged: 0,
            cached_head: 0,
        },
        RecordConsumer {
            shared,
            head: 0,
            cached_tail: 0,
            scratch: Vec::new(),
        },
    )
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn header(length: usize, kind: u32) -> u64 {
    length as u64 | (kind as u64) << 32
}

impl RecordProducer {
    /// The largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.shared.capacity / 2 - HEADER
    }

    /// Writes one record and publishes it; returns false (nothing written) when there is no
    /// room yet. Panics if the payload exceeds [`RecordProducer::max_payload`] or `kind` is
    /// PADDING_TYPE.
    pub fn try_write(&mut self, kind: u32, payload: &[u8]) -> bool {
        let written = self.stage(kind, payload);
        self.publish();
        written
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
        let capacity = self.shared.capacity;
        let aligned = align8(HEADER + payload.len());
        let index = self.staged & (capacity - 1);
        let to_end = capacity - index;
        let padding = if aligned > to_end { to_end } else { 0 };
        let required = aligned + padding;
        if capacity - self.staged.wrapping_sub(self.cached_head) < required {
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
            if capacity - self.staged.wrapping_sub(self.cached_head) < required {
                return false;
            }
        }
        let words = &self.shared.words;
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

    /// Makes every staged record visible to the consumer (one Release store).
    pub fn publish(&mut self) {
        if self.staged != self.tail {
            self.tail = self.staged;
            self.shared.tail.0.store(self.tail, Ordering::Release);
        }
    }
}

impl RecordConsumer {
    /// Hands up to `max` records to `f` as (type, payload), then releases their space with
    /// one store. Returns how many records were read.
    pub fn read(&mut self, max: usize, mut f: impl FnMut(u32, &[u8])) -> usize {
        // One Acquire load per batch: take everything published so far.
        self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        let capacity = self.shared.capacity;
        let words = &self.shared.words;
        let mut head = self.head;
        let mut count = 0;
        while count < max && head != self.cached_tail {
            let index = head & (capacity - 1);
            let word = words[index / 8].load(Ordering::Relaxed);
            let length = (word & 0xffff_ffff) as usize;
            let kind = (word >> 32) as u32;
            debug_assert!(
                length >= HEADER && index + align8(length) <= capacity,
                "corrupt record header"
            );
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
            self.shared.head.0.store(head, Ordering::Release);
        }
        count
    }
}
